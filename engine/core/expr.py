"""The condition language of gates, tier rules and `if:` guards.

A tiny Pratt parser to an allow-listed AST: numbers (`60%` is 0.6), metric names, true/false,
+ - * /, comparisons, and/or/not, parentheses. No calls, attributes, indexing or strings, and
nothing ever reaches `eval`. Every node keeps its character offsets so errors point at a column.
Length, tokens, nesting and tree depth are bounded (MAX_* below, SOP250) and checked before the
recursive parts run, so no condition reaches Python's recursion limit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

COMPARISONS = ("<=", ">=", "==", "!=", "<", ">")

# Limits of the language, checked before any recursion so no input reaches Python's recursion
# limit: a real gate or tier rule is a line or two; a metric definition may sum a few dozen names.
MAX_LENGTH = 2000  # characters of one expression
MAX_TOKENS = 400  # tokens of one expression
MAX_NESTING = 32  # parentheses, `not` and unary `-` inside each other
MAX_DEPTH = 64  # levels of the parsed tree (a chain `a + b + c ...` is one level per operator)
MAX_NUMBER = 1e15  # largest number literal: beyond it floats lose integer precision
LIMIT_CODE = "SOP250"


@dataclass(frozen=True, slots=True)
class Node:
    """An expression node; `start`/`end` are 0-based offsets into the source text."""

    kind: str  # num | bool | name | neg | not | arith | cmp | and | or
    start: int
    end: int
    op: str = ""
    value: float | bool | str = 0.0
    args: tuple[Node, ...] = ()


@dataclass(frozen=True, slots=True)
class ExprProblem:
    """A located problem in an expression."""

    code: str  # SOP240 syntax, SOP241 unknown name, SOP242 type, SOP243 ratio range, SOP250 limit
    message: str
    start: int
    end: int


class ExprSyntaxError(Exception):
    """Raised by `parse`; carries an ExprProblem."""

    def __init__(self, problem: ExprProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


_TOKEN = re.compile(
    r"\s*(?:(?P<num>[0-9]+(?:\.[0-9]+)?%?|\.[0-9]+%?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\))|(?P<bad>\S))"
)


@dataclass(frozen=True, slots=True)
class _Tok:
    """A token of a condition: its kind, text and offsets."""

    kind: str
    text: str
    start: int
    end: int


def _limit(msg: str, start: int, end: int) -> ExprSyntaxError:
    return ExprSyntaxError(ExprProblem(LIMIT_CODE, msg, start, max(end, start + 1)))


def _tokens(src: str) -> list[_Tok]:
    if len(src) > MAX_LENGTH:
        raise _limit(
            f"expression is longer than {MAX_LENGTH} characters; define parts of it as metrics",
            MAX_LENGTH,
            len(src),
        )
    out: list[_Tok] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        kind = m.lastgroup or "bad"
        text = m.group(kind)
        start = m.start(kind)
        if kind == "bad":
            hint = {
                "=": "use == to compare",
                "&": "use `and`",
                "|": "use `or`",
                "!": "use `not`",
                ".": "attributes are not allowed; use a metric name",
                "'": "strings are not allowed",
                '"': "strings are not allowed",
                "[": "indexing is not allowed",
                ",": "function calls are not allowed",
            }.get(text, "")
            msg = f"unexpected character {text!r}" + (f": {hint}" if hint else "")
            raise ExprSyntaxError(ExprProblem("SOP240", msg, start, start + 1))
        if len(out) >= MAX_TOKENS:
            raise _limit(
                f"expression has more than {MAX_TOKENS} tokens; define parts of it as metrics",
                start,
                len(src),
            )
        if kind == "num" and _number(text) > MAX_NUMBER:
            raise _limit(
                f"number {text if len(text) <= 24 else text[:20] + '...'} is too large"
                f" (at most {MAX_NUMBER:.0e})",
                start,
                start + len(text),
            )
        out.append(_Tok(kind, text, start, start + len(text)))
    out.append(_Tok("end", "", len(src), len(src)))
    return out


def _number(text: str) -> float:
    """The value of a number token: `60%` is 0.6."""
    if text.endswith("%"):
        return float(text[:-1]) / 100
    return float(text)


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = _tokens(src)
        self.i = 0
        self.nesting = 0  # parentheses, `not` and unary `-` open around the current token

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, msg: str, tok: _Tok) -> ExprSyntaxError:
        return ExprSyntaxError(ExprProblem("SOP240", msg, tok.start, max(tok.end, tok.start + 1)))

    def is_word(self, word: str) -> bool:
        t = self.peek()
        return t.kind == "name" and t.text == word

    def enter(self, tok: _Tok) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise _limit(
                f"expression nests more than {MAX_NESTING} deep (parentheses, `not`, `-`)",
                tok.start,
                tok.end,
            )

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.fail("empty expression", self.peek())
        node = self.or_()
        t = self.peek()
        if t.kind != "end":
            if t.text == "(":
                raise self.fail("function calls are not allowed", t)
            if t.text in COMPARISONS:
                raise self.fail("comparisons cannot be chained; join them with `and`", t)
            raise self.fail(f"unexpected {t.text!r}", t)
        return node

    def or_(self) -> Node:
        left = self.and_()
        while self.is_word("or"):
            self.take()
            right = self.and_()
            left = Node("or", left.start, right.end, args=(left, right))
        return left

    def and_(self) -> Node:
        left = self.not_()
        while self.is_word("and"):
            self.take()
            right = self.not_()
            left = Node("and", left.start, right.end, args=(left, right))
        return left

    def not_(self) -> Node:
        if self.is_word("not"):
            t = self.take()
            self.enter(t)
            operand = self.not_()
            self.nesting -= 1
            return Node("not", t.start, operand.end, args=(operand,))
        return self.cmp()

    def cmp(self) -> Node:
        left = self.sum_()
        t = self.peek()
        if t.kind == "op" and t.text in COMPARISONS:
            self.take()
            right = self.sum_()
            return Node("cmp", left.start, right.end, op=t.text, args=(left, right))
        return left

    def sum_(self) -> Node:
        left = self.term()
        while self.peek().text in ("+", "-") and self.peek().kind == "op":
            op = self.take().text
            right = self.term()
            left = Node("arith", left.start, right.end, op=op, args=(left, right))
        return left

    def term(self) -> Node:
        left = self.unary()
        while self.peek().text in ("*", "/") and self.peek().kind == "op":
            op = self.take().text
            right = self.unary()
            left = Node("arith", left.start, right.end, op=op, args=(left, right))
        return left

    def unary(self) -> Node:
        t = self.peek()
        if t.kind == "op" and t.text == "-":
            self.take()
            self.enter(t)
            operand = self.unary()
            self.nesting -= 1
            return Node("neg", t.start, operand.end, args=(operand,))
        return self.atom()

    def atom(self) -> Node:
        t = self.take()
        if t.kind == "num":
            return Node("num", t.start, t.end, value=_number(t.text))
        if t.kind == "name":
            if t.text in ("and", "or", "not"):
                raise self.fail(f"`{t.text}` needs a condition before it", t)
            if t.text in ("true", "false"):
                return Node("bool", t.start, t.end, value=t.text == "true")
            return Node("name", t.start, t.end, value=t.text)
        if t.text == "(":
            self.enter(t)
            inner = self.or_()
            self.nesting -= 1
            close = self.take()
            if close.text != ")":
                raise self.fail("missing `)`", close)
            return Node(inner.kind, t.start, close.end, inner.op, inner.value, inner.args)
        if t.kind == "end":
            raise self.fail("expression ends too early", t)
        raise self.fail(f"unexpected {t.text!r}", t)


def parse(src: str) -> Node:
    """Parse an expression; raises ExprSyntaxError with a located problem."""
    node = _Parser(src).parse()
    deep = _too_deep(node)
    if deep is not None:
        raise _limit(
            f"expression is more than {MAX_DEPTH} operators deep; define parts of it as metrics",
            deep.start,
            deep.end,
        )
    return node


def _too_deep(root: Node) -> Node | None:
    """The first node below MAX_DEPTH levels, found without recursion (None if none is)."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return node
        stack.extend((a, depth + 1) for a in reversed(node.args))  # leftmost first
    return None


def names(node: Node) -> list[Node]:
    """Every name node, left to right."""
    if node.kind == "name":
        return [node]
    return [n for a in node.args for n in names(a)]


def check(node: Node, known: Mapping[str, str]) -> list[ExprProblem]:
    """Type-check against `known` (name -> unit); a gate must be a condition (boolean)."""
    problems: list[ExprProblem] = []
    kind = _typeof(node, known, problems)
    if kind == "number" and not problems:
        problems.append(
            ExprProblem(
                "SOP242",
                "this is a number, not a condition: compare it, e.g. `members >= 200`",
                node.start,
                node.end,
            )
        )
    return problems


def _typeof(node: Node, known: Mapping[str, str], out: list[ExprProblem]) -> str:
    k = node.kind
    if k == "num":
        return "number"
    if k == "bool":
        return "bool"
    if k == "name":
        if node.value not in known:
            out.append(ExprProblem("SOP241", f"unknown name `{node.value}`", node.start, node.end))
            return "unknown"
        return "number"
    if k in ("neg", "arith"):
        for a in node.args:
            if _typeof(a, known, out) == "bool":
                out.append(ExprProblem("SOP242", "arithmetic on a condition", a.start, a.end))
        return "number"
    if k == "cmp":
        left, right = node.args
        for a in node.args:
            if _typeof(a, known, out) == "bool":
                out.append(
                    ExprProblem(
                        "SOP242", f"`{node.op}` compares numbers, not conditions", a.start, a.end
                    )
                )
        for a, b in ((left, right), (right, left)):
            if (
                a.kind == "name"
                and known.get(str(a.value)) == "ratio"
                and b.kind == "num"
                and isinstance(b.value, float)
                and b.value > 1
            ):
                out.append(
                    ExprProblem(
                        "SOP243",
                        f"`{a.value}` is a ratio between 0 and 1; {b.value:g} can never be"
                        f" reached (did you mean {b.value / 100:g}?)",
                        b.start,
                        b.end,
                    )
                )
        return "bool"
    # not / and / or
    for a in node.args:
        if _typeof(a, known, out) == "number":
            out.append(
                ExprProblem("SOP242", f"`{k}` needs a condition, not a number", a.start, a.end)
            )
    return "bool"


def evaluate(node: Node, env: Mapping[str, Any], empty: float = 0.0) -> Any:
    """Evaluate with values from `env`; works on floats and on NumPy arrays alike.

    `empty` is what x / 0 gives: 0 in a condition, NaN (undefined) in a metric's definition.
    """
    k = node.kind
    if k in ("num", "bool"):
        return node.value
    if k == "name":
        return env[str(node.value)]
    if k == "neg":
        return -evaluate(node.args[0], env, empty)
    if k == "arith":
        a, b = (evaluate(x, env, empty) for x in node.args)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        return divide(a, b, empty)
    if k == "cmp":
        a, b = (evaluate(x, env, empty) for x in node.args)
        op = node.op
        if op == "<":
            return a < b
        if op == "<=":
            return a <= b
        if op == ">":
            return a > b
        if op == ">=":
            return a >= b
        if op == "==":
            return a == b
        return a != b
    if k == "not":
        v = evaluate(node.args[0], env, empty)
        return ~v if hasattr(v, "dtype") else not v
    a, b = (evaluate(x, env, empty) for x in node.args)
    if hasattr(a, "dtype") or hasattr(b, "dtype"):
        return (a & b) if k == "and" else (a | b)
    return (a and b) if k == "and" else (a or b)


def divide(a: Any, b: Any, empty: float = 0.0) -> Any:
    """a / b, and `empty` where b is 0: the one home of zero-safe division.

    Expressions divide with `empty=0` (docs/language.md: x / 0 is 0); a built-in metric's ratio
    passes NaN, its "undefined" (engine/program/metrics.py). Floats or NumPy arrays alike.
    """
    if hasattr(a, "dtype") or hasattr(b, "dtype"):
        import numpy as np

        a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        out = np.full(np.broadcast(a_arr, b_arr).shape, empty)
        return np.divide(a_arr, b_arr, out=out, where=b_arr != 0)
    return a / b if b else empty


def thresholds(node: Node) -> list[tuple[str, str, float]]:
    """`(metric, op, number)` for each plain comparison of a metric with a number (for charts)."""
    out: list[tuple[str, str, float]] = []
    if node.kind == "cmp":
        left, right = node.args
        if left.kind == "name" and right.kind == "num":
            out.append((str(left.value), node.op, float(right.value)))
    for a in node.args:
        out.extend(thresholds(a))
    return out
