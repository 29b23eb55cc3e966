"""The condition language of gates, tier rules and `if:` guards.

A tiny Pratt parser to an allow-listed AST: numbers (`60%` is 0.6), metric names, true/false,
strings ("invite"), lists of literals with `in` / `not in`, + - * /, comparisons, and/or/not,
parentheses, and three window functions over a metric's daily history (`avg(x, 7d)`, `min`,
`max`). No other calls, no attributes or indexing, and nothing ever reaches `eval`. Every node
keeps its character offsets so errors point at a column.
Length, tokens, nesting and tree depth are bounded (MAX_* below, SOP250) and checked before the
recursive parts run, so no condition reaches Python's recursion limit.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
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

    kind: str  # num | bool | str | list | name | neg | not | arith | cmp | in | call | and | or
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
    r"\s*(?:(?P<dur>[0-9]+d\b)|(?P<num>[0-9]+(?:\.[0-9]+)?%?|\.[0-9]+%?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<str>\"[^\"\n]*\"|'[^'\n]*')"
    r"|(?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)|\[|\]|,)|(?P<bad>\S))"
)
WINDOW_FUNCTIONS = ("avg", "min", "max")  # over the last N days of a metric, today included
MAX_WINDOW_DAYS = 366


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
                "'": "this string is not closed on its line",
                '"': "this string is not closed on its line",
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
                raise self.fail("function calls are not allowed (only avg, min, max)", t)
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
        member = self.membership(left)
        if member is not None:
            return member
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

    def membership(self, left: Node) -> Node | None:
        """`left in [...]` or `left not in [...]`, else None (nothing taken)."""
        negate = False
        if self.is_word("not") and self.toks[self.i + 1].text == "in":
            negate = True
            self.take()
        if not self.is_word("in"):
            return None
        self.take()
        items = self.list_()
        node = Node("in", left.start, items.end, op="in", args=(left, items))
        return Node("not", left.start, items.end, args=(node,)) if negate else node

    def list_(self) -> Node:
        t = self.take()
        if t.text != "[":
            raise self.fail('`in` needs a list of values, e.g. `source in ["a", "b"]`', t)
        items: list[Node] = []
        while True:
            v = self.take()
            if v.text == "]" and not items:
                raise self.fail("an empty list: name at least one value", v)
            if v.kind == "str":
                items.append(Node("str", v.start, v.end, value=v.text[1:-1]))
            elif v.kind == "num":
                items.append(Node("num", v.start, v.end, value=_number(v.text)))
            else:
                raise self.fail("a list holds only strings and numbers", v)
            sep = self.take()
            if sep.text == "]":
                return Node("list", t.start, sep.end, args=tuple(items))
            if sep.text != ",":
                raise self.fail("missing `,` or `]` in the list", sep)

    def call(self, name: _Tok) -> Node:
        if name.text not in WINDOW_FUNCTIONS:
            raise self.fail(
                f"unknown function `{name.text}`: only avg, min and max over days,"
                " e.g. `avg(daily_speak_rate, 7d)`",
                name,
            )
        self.take()  # (
        metric = self.take()
        if metric.kind != "name" or metric.text in ("and", "or", "not", "true", "false"):
            raise self.fail(f"`{name.text}` takes a metric name first", metric)
        comma = self.take()
        if comma.text != ",":
            raise self.fail(f"`{name.text}(metric, 7d)`: missing `,` and a number of days", comma)
        days = self.take()
        if days.kind != "dur":
            raise self.fail("a window is a whole number of days, e.g. `7d`", days)
        n = int(days.text[:-1])
        if not 1 <= n <= MAX_WINDOW_DAYS:
            raise self.fail(f"a window is 1 to {MAX_WINDOW_DAYS} days", days)
        close = self.take()
        if close.text != ")":
            raise self.fail("missing `)`", close)
        return Node(
            "call",
            name.start,
            close.end,
            op=name.text,
            args=(
                Node("name", metric.start, metric.end, value=metric.text),
                Node("num", days.start, days.end, value=float(n)),
            ),
        )

    def atom(self) -> Node:
        t = self.take()
        if t.kind == "num":
            # `op` "%" keeps how it was written: 300% is 3, and a hint should not say 0.03
            return Node("num", t.start, t.end, "%" if t.text.endswith("%") else "", _number(t.text))
        if t.kind == "str":
            return Node("str", t.start, t.end, value=t.text[1:-1])
        if t.kind == "dur":
            raise self.fail("a number of days is only allowed inside avg/min/max", t)
        if t.kind == "name":
            if t.text in ("and", "or", "not", "in"):
                raise self.fail(f"`{t.text}` needs a condition before it", t)
            if t.text in ("true", "false"):
                return Node("bool", t.start, t.end, value=t.text == "true")
            if self.peek().text == "(":
                return self.call(t)
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


STRING_UNITS = frozenset({"string", "enum", "date", "text"})  # names of these units hold text
BOOL_UNITS = frozenset({"bool", "boolean"})


def check(node: Node, known: Mapping[str, str], *, windows: bool = False) -> list[ExprProblem]:
    """Type-check against `known` (name -> unit); a gate must be a condition (boolean).

    `windows` allows avg/min/max over a metric's history: community conditions only (gates,
    exits, `if:` guards, incident `detect:`), never member conditions.
    """
    problems: list[ExprProblem] = []
    kind = _typeof(node, known, problems, windows)
    if kind in ("number", "string") and not problems:
        problems.append(
            ExprProblem(
                "SOP242",
                f"this is a {kind}, not a condition: compare it, e.g. `members >= 200`",
                node.start,
                node.end,
            )
        )
    return problems


# `a OP b` read from b's side: `3 < x` is `x > 3`.
# `a op b` read from the other side (`200 <= members` is `members >= 200`)
FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def _typeof(node: Node, known: Mapping[str, str], out: list[ExprProblem], windows: bool) -> str:
    k = node.kind
    if k == "num":
        return "number"
    if k == "bool":
        return "bool"
    if k == "str":
        return "string"
    if k == "name":
        if node.value not in known:
            out.append(ExprProblem("SOP241", f"unknown name `{node.value}`", node.start, node.end))
            return "unknown"
        unit = known[str(node.value)]
        return "string" if unit in STRING_UNITS else "bool" if unit in BOOL_UNITS else "number"
    if k == "call":
        metric = node.args[0]
        if not windows:
            out.append(
                ExprProblem(
                    "SOP240",
                    f"`{node.op}(...)` reads a metric's history: only community conditions"
                    " (gates, exits, `if:`, `detect:`) may use it",
                    node.start,
                    node.end,
                )
            )
            return "number"
        if _typeof(metric, known, out, windows) not in ("number", "unknown"):
            out.append(
                ExprProblem(
                    "SOP242", f"`{node.op}` needs a numeric metric", metric.start, metric.end
                )
            )
        return "number"
    if k == "in":
        left, items = node.args
        lt = _typeof(left, known, out, windows)
        for item in items.args:
            it = "string" if item.kind == "str" else "number"
            if lt in ("number", "string") and it != lt:
                out.append(
                    ExprProblem(
                        "SOP242",
                        f"`{_text(left)}` is a {lt}; this value is a {it}",
                        item.start,
                        item.end,
                    )
                )
        if lt == "bool":
            out.append(
                ExprProblem("SOP242", "`in` needs a value, not a condition", left.start, left.end)
            )
        return "bool"
    if k in ("neg", "arith"):
        for a in node.args:
            t = _typeof(a, known, out, windows)
            if t == "bool":
                out.append(ExprProblem("SOP242", "arithmetic on a condition", a.start, a.end))
            elif t == "string":
                out.append(ExprProblem("SOP242", "arithmetic on text", a.start, a.end))
        return "number"
    if k == "cmp":
        left, right = node.args
        types = []
        for a in node.args:
            t = _typeof(a, known, out, windows)
            types.append(t)
            if t == "bool" and node.op not in ("==", "!="):
                out.append(
                    ExprProblem(
                        "SOP242", f"`{node.op}` compares numbers, not conditions", a.start, a.end
                    )
                )
        lt, rt = types
        if {lt, rt} == {"string", "number"}:
            out.append(
                ExprProblem("SOP242", "this compares text with a number", node.start, node.end)
            )
        elif "string" in (lt, rt) and node.op not in ("==", "!="):
            out.append(
                ExprProblem(
                    "SOP242",
                    f"text is compared with == or != (or `in`), not `{node.op}`",
                    node.start,
                    node.end,
                )
            )
        for a, b, op in ((left, right, node.op), (right, left, FLIPPED[node.op])):
            read = a.value if a.kind == "name" else a.args[0].value if a.kind == "call" else None
            if (
                read is not None
                and known.get(str(read)) == "ratio"  # a window of a ratio is a ratio too
                and b.kind == "num"
                and isinstance(b.value, float)
                and b.value > 1
            ):
                verdict = "always holds" if op in ("<", "<=", "!=") else "can never hold"
                shown = f"{b.value * 100:g}%" if b.op == "%" else f"{b.value:g}"
                mean = "" if b.op == "%" else f" (did you mean {b.value / 100:g}?)"
                out.append(
                    ExprProblem(
                        "SOP243",
                        f"`{read}` is a ratio between 0 and 1; compared `{op} {shown}` it"
                        f" {verdict}{mean}",
                        b.start,
                        b.end,
                    )
                )
        return "bool"
    # not / and / or
    for a in node.args:
        if _typeof(a, known, out, windows) in ("number", "string"):
            out.append(
                ExprProblem("SOP242", f"`{k}` needs a condition, not a value", a.start, a.end)
            )
    return "bool"


def _text(node: Node) -> str:
    return str(node.value) if node.kind in ("name", "str") else node.kind


def window_key(op: str, metric: str, days: int) -> str:
    """The env key under which `evaluate` reads `op(metric, days)`; the caller fills it."""
    return f"{op}({metric},{days}d)"


def windows(node: Node) -> list[tuple[str, str, int]]:
    """`(op, metric, days)` of every window function in the expression, left to right."""
    if node.kind == "call":
        return [(node.op, str(node.args[0].value), int(node.args[1].value))]
    return [w for a in node.args for w in windows(a)]


def string_comparisons(node: Node) -> list[tuple[Node, Node]]:
    """`(name, literal)` pairs where a name is compared with a string (== != in), for enums."""
    out: list[tuple[Node, Node]] = []
    if node.kind == "cmp" and node.op in ("==", "!="):
        a, b = node.args
        if a.kind == "name" and b.kind == "str":
            out.append((a, b))
        elif b.kind == "name" and a.kind == "str":
            out.append((b, a))
    elif node.kind == "in" and node.args[0].kind == "name":
        out.extend((node.args[0], item) for item in node.args[1].args if item.kind == "str")
    else:
        for a in node.args:
            out.extend(string_comparisons(a))
    return out


def evaluate(node: Node, env: Mapping[str, Any], empty: float = 0.0) -> Any:
    """Evaluate with values from `env`; works on floats and on NumPy arrays alike.

    `empty` is what x / 0 gives: 0 in a condition, NaN (undefined) in a metric's definition.
    """
    k = node.kind
    if k in ("num", "bool", "str"):
        return node.value
    if k == "name":
        return env[str(node.value)]
    if k == "call":
        return env[window_key(node.op, str(node.args[0].value), int(node.args[1].value))]
    if k == "list":
        return [a.value for a in node.args]
    if k == "in":
        left = evaluate(node.args[0], env, empty)
        values = evaluate(node.args[1], env, empty)
        if hasattr(left, "dtype"):
            import numpy as np

            return np.isin(left, values)
        return left in values
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
        return COMPARE[node.op](a, b)
    if k == "not":
        v = evaluate(node.args[0], env, empty)
        return ~v if hasattr(v, "dtype") else not v
    a, b = (evaluate(x, env, empty) for x in node.args)
    if hasattr(a, "dtype") or hasattr(b, "dtype"):
        return (a & b) if k == "and" else (a | b)
    return (a and b) if k == "and" else (a or b)


# The comparison operators: scalars or NumPy arrays (elementwise) alike.
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


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
