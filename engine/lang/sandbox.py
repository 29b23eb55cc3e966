"""The bounded Jinja2 sandbox: templates from strangers render in bounded time and memory.

Jinja2's `ImmutableSandboxedEnvironment` stops escapes (attribute and call checks) but not
resource exhaustion: `'a' * 10**9`, `10**(10**9)`, nested loops over `range`, `join` of a
huge list. This subclass adds limits a message template never needs to reach:

- arithmetic on large operands is refused (the sandbox's operator interception, which also
  stops Jinja2 from folding those operations while it compiles);
- every string or list a template builds (measured by the text it holds, before `str()`), and
  the rendered text, is at most MAX_TEXT long, and all text made on the way (by filters, `*`,
  `~`, and output, macro output and `{% set %}` blocks included) at most MAX_PRODUCED;
- loop iterations, calls and items made by `range` and filters share one budget per render;
- str methods that grow text (`center`, `replace`, `format` ...) are unavailable; the filters of
  the same name are available and bounded.

Imported only when a template is rendered or parsed (jinja2 is a heavy import).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeGuard

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEXT = 65_536  # characters of rendered text, and of any string or list built on the way
MAX_STEPS = 50_000  # loop iterations + calls + items made by range and filters, per render
MAX_PRODUCED = 1_048_576  # characters of text made in one render (by filters, `*`, `~`, output)
MAX_RANGE = 10_000  # items of one `range(...)`
MAX_INT_BITS = 256  # the largest integer arithmetic may produce (about 77 digits)
MAX_WIDTH = 1_000  # widths and precisions in `%` formats and `format`

LOOP_FILTER = "sop:loop"  # the colon keeps template authors from naming these filters
CONCAT_FILTER = "sop:concat"
OUT_FILTER = "sop:out"

# str (and bytes) methods whose output can be much longer than their input.
GROWING_METHODS = frozenset(
    {
        "center",
        "ljust",
        "rjust",
        "zfill",
        "expandtabs",
        "replace",
        "join",
        "format",
        "format_map",
        "translate",
    }
)
_PERCENT_SPEC = re.compile(
    r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])"
)


class TemplateLimitError(Exception):
    """A template went beyond a limit of the sandbox (the message says which)."""


@dataclass
class _Budget:
    """The work and text a render (or renders sharing a budget) has used so far."""

    steps: int = 0
    chars: int = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("sop_template_budget", default=None)


def charge(n: int, what: str) -> None:
    """Count `n` steps of work against the current render's budget."""
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.steps += n
    if budget.steps > MAX_STEPS:
        raise TemplateLimitError(f"the template does more than {MAX_STEPS} steps of work ({what})")


def start_budget() -> Any:
    """Start a budget unless one is running (renders inside it share it); token for `end_budget`."""
    if _BUDGET.get() is not None:
        return None
    return _BUDGET.set(_Budget())


def end_budget(token: Any) -> None:
    """End the budget started by `start_budget` (None: it was shared, nothing to end)."""
    if token is not None:
        _BUDGET.reset(token)


def made(n: int) -> None:
    """Count `n` characters of text (or list items) made against the render's budget."""
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.chars += n
    if budget.chars > MAX_PRODUCED:
        raise TemplateLimitError(f"the template makes more than {MAX_PRODUCED} characters of text")


def _check_len(n: int, what: str) -> None:
    if n > MAX_TEXT:
        raise TemplateLimitError(f"{what} would be {n} long; at most {MAX_TEXT} is allowed")


def _size(value: Any, limit: int = MAX_PRODUCED) -> int:
    """Characters of text a value holds, lists and dicts included; counting stops past `limit`.

    `str()` of a list of 40,000 strings of 60,000 characters is 2.4 GB: sizes are measured
    before anything is turned into text.
    """
    total = 0
    stack = [value]
    while stack and total <= limit:
        v = stack.pop()
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += len(v) + 1
            stack.extend(v)
        elif isinstance(v, dict):
            total += len(v) + 1
            stack.extend(v.keys())
            stack.extend(v.values())
        else:
            total += 1
    return total


def _is_seq(v: Any) -> bool:
    return isinstance(v, (str, bytes, list, tuple))


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_percent(fmt: str, args: Any) -> None:
    """`%`-formatting: small widths and precisions, never `*`, and a bounded result."""
    specs = widest = 0
    for m in _PERCENT_SPEC.finditer(fmt):
        specs += 1
        for part in (m.group(1), m.group(2)):
            if part == "*":
                raise TemplateLimitError("`*` widths are not allowed in `%` formats")
            if part and (len(part) > 4 or int(part) > MAX_WIDTH):
                shown = fmt if len(fmt) <= 40 else fmt[:37] + "..."
                raise TemplateLimitError(f"a width or precision above {MAX_WIDTH} in `{shown}`")
            widest = max(widest, int(part or 0))
    if isinstance(args, dict):  # `%(name)s` may insert one value many times
        values = list(args.values())
    else:
        values = list(args) if isinstance(args, tuple) else [args]
    longest = max((_size(v) for v in values), default=0)
    # each spec prints at most the longest value, padded or with digits up to `widest`, and a
    # float's integer part (up to 309 digits)
    _check_len(len(fmt) + specs * (longest + widest + 320), "the formatted text")


def _int_result_bits(op: str, a: int, b: int) -> int:
    if op == "*":
        return a.bit_length() + b.bit_length()
    if op == "**":
        if b < 0 or abs(a) <= 1:
            return 1
        return a.bit_length() * b
    return max(a.bit_length(), b.bit_length()) + 1


def _counted(items: Iterable[Any], what: str) -> Iterator[Any]:
    for item in items:
        charge(1, what)
        made(_size(item))
        yield item


def _bounded_range(*args: int) -> range:
    rng = range(*args)
    try:
        size = len(rng)
    except OverflowError:  # more items than a C integer holds
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise TemplateLimitError(f"range of {size} items or more; at most {MAX_RANGE} are allowed")
    charge(size, "range")
    return rng


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    from jinja2.utils import generate_lorem_ipsum

    if not (0 <= n <= 20 and 0 <= min <= max <= 200):
        raise TemplateLimitError("lipsum() is limited to 20 paragraphs of at most 200 words")
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


def _materialize(value: Any, what: str) -> list[Any]:
    """The items of an iterable, each counted; refused beyond MAX_TEXT items."""
    if isinstance(value, (str, bytes)):
        return list(value)
    out = []
    for item in value:
        charge(1, what)
        out.append(item)
        _check_len(len(out), f"the list given to `{what}`")
    return out


def _str_total(items: Iterable[Any], extra: int, what: str) -> None:
    total = extra
    for x in items:
        total += _size(x)
        _check_len(total, what)


def _precheck(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Refuse filter calls whose output would outgrow the limits; returns the value to use."""
    for a in (*args, *kwargs.values()):
        if _is_int(a) and abs(a) > MAX_TEXT:
            raise TemplateLimitError(f"`{name}` argument {a} is above {MAX_TEXT}")
    if name == "replace" and len(args) >= 2:
        s, old, new = str(value), str(args[0]), str(args[1])
        count = s.count(old) if old else len(s) + 1
        if len(args) > 2 and _is_int(args[2]) and args[2] >= 0:
            count = min(count, args[2])
        _check_len(len(s) + count * max(len(new) - len(old), 0), "the text after `replace`")
    elif name == "join":
        value = _materialize(value, name)
        sep = str(args[0] if args else kwargs.get("d", ""))
        _str_total(value, len(sep) * len(value), "the joined text")
    elif name == "sum":
        value = _materialize(value, name)
        start = args[1] if len(args) > 1 else kwargs.get("start", 0)
        if _is_seq(start) or any(_is_seq(x) for x in value):
            total = len(start) if _is_seq(start) else 0
            _check_len(total + sum(_size(x) for x in value if _is_seq(x)), "the summed list")
    elif name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        w = len(width) if isinstance(width, str) else width if _is_int(width) else 0
        s = str(value)
        _check_len(len(s) + w * (s.count("\n") + 1), "the indented text")
    elif name == "wordwrap":
        wrap = args[3] if len(args) > 3 else kwargs.get("wrapstring")
        width = args[0] if args else kwargs.get("width", 79)
        s = str(value)
        lines = len(s) // max(width if _is_int(width) else 1, 1) + s.count("\n") + 1
        _check_len(len(s) + lines * len(str(wrap or "\n")), "the wrapped text")
    elif name == "tojson":
        indent = args[0] if args else kwargs.get("indent")
        if _is_int(indent) and indent > 16:
            raise TemplateLimitError("`tojson` indents by at most 16")
    elif name == "format":
        _check_percent(str(value), kwargs if kwargs else tuple(args))
    elif name in ("urlize", "center", "truncate", "batch", "slice"):
        for a in (*args, *kwargs.values()):
            if isinstance(a, str) and len(a) > MAX_WIDTH:
                raise TemplateLimitError(f"`{name}` argument longer than {MAX_WIDTH} characters")
    return value


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with the size checks of `_precheck` before and a length check after."""
    pass_arg = getattr(func, "jinja_pass_arg", None)
    first = 1 if pass_arg is not None else 0  # context / environment / eval context come first

    def bounded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > first:
            value = _precheck(name, args[first], args[first + 1 :], kwargs)
            args = (*args[:first], value, *args[first + 1 :])
        result = func(*args, **kwargs)
        if isinstance(result, (str, bytes, list, tuple)):
            _check_len(len(result), f"the result of `{name}`")
            if isinstance(result, (list, tuple)):
                charge(len(result), name)
            made(_size(result))
        elif isinstance(result, Iterator):
            result = _counted(result, name)
        return result

    if pass_arg is not None:
        bounded.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    bounded.__name__ = getattr(func, "__name__", name)
    bounded.__doc__ = func.__doc__
    return bounded


def _loop(iterable: Any) -> Iterator[Any]:
    """Every `{% for %}` iterates through this: each iteration is a step."""
    return _counted(iterable, "loop iterations")


@pass_context
def _out(context: Any, value: Any) -> str:
    """Every piece of output goes through here, captured (macros, `{% set %}`) or not."""
    made(_size(value))  # before str(), which could be far larger than the value's own size
    return str(value)


def _concat(parts: list[Any]) -> str:
    """The `~` operator, with the length checked before the text is built."""
    _check_len(sum(_size(p, MAX_TEXT) for p in parts), "the text built with `~`")
    text = "".join(str(p) for p in parts)
    made(len(text))
    return text


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with bounded arithmetic, loops, ranges, calls and text sizes."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.globals["range"] = _bounded_range
        self.globals["lipsum"] = _bounded_lipsum
        self.filters = {k: _bounded_filter(k, f) for k, f in self.filters.items()}
        self.filters[LOOP_FILTER] = _loop
        self.filters[CONCAT_FILTER] = _concat
        self.filters[OUT_FILTER] = _out

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        """Arithmetic and repetition with their result size checked before computing it."""
        if _is_int(left) and _is_int(right):
            bits = _int_result_bits(operator_, left, right)
            if bits > MAX_INT_BITS:
                raise TemplateLimitError(
                    f"`{operator_}` would make a number of about {bits} bits;"
                    f" at most {MAX_INT_BITS} are allowed"
                )
        elif operator_ == "*" and (_is_seq(left) or _is_seq(right)):
            seq, n = (left, right) if _is_seq(left) else (right, left)
            if _is_int(n):
                times = max(n, 0)
                _check_len(len(seq) * times, "the repeated text or list")
                _check_len(_size(seq, MAX_TEXT) * times, "the text in the repeated list")
                if not isinstance(seq, (str, bytes)):
                    charge(len(seq) * times, "list repetition")
                made(_size(seq, MAX_TEXT) * times)
        elif operator_ == "+" and _is_seq(left) and _is_seq(right):
            _check_len(len(left) + len(right), "the joined text or list")
            size = _size(left, MAX_TEXT) + _size(right, MAX_TEXT)
            _check_len(size, "the text in the joined lists")
            made(size)
        elif operator_ == "%" and isinstance(left, str):
            _check_percent(left, right)
        try:
            return self.binop_table[operator_](left, right)
        except OverflowError as e:
            raise TemplateLimitError(f"`{operator_}` overflows: {e}") from None

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Every call is a step; a recursive loop's `loop(...)` counts its iterations too."""
        charge(1, "calls")
        if isinstance(__obj, LoopContext) and args:
            args = (_loop(args[0]), *args[1:])
        return super().call(__context, __obj, *args, **kwargs)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """The sandbox's rule, and no str method that grows text (the filters are bounded)."""
        if isinstance(obj, (str, bytes)) and attr in GROWING_METHODS:
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        """Name the bounded filter when a text-growing str method is refused."""
        if isinstance(obj, (str, bytes)) and attribute in GROWING_METHODS:
            return self.undefined(
                f"`.{attribute}()` is not available in templates (it can grow text without"
                " bound); use a filter such as `center`, `replace`, `join` or `format`",
                name=attribute,
                obj=obj,
                exc=SecurityError,
            )
        return super().unsafe_undefined(obj, attribute)

    def wrap_str_format(self, value: Any) -> None:
        """`str.format` is refused by `is_safe_attribute` instead of wrapped."""
        return None


def bound_ast(ast: nodes.Template) -> nodes.Template:
    """Route every loop, `~` and output of a parsed template through bounded filters (in place)."""
    stack: list[nodes.Node] = [ast]
    while stack:
        node = stack.pop()
        for field in node.fields:
            child = getattr(node, field, None)
            if isinstance(child, nodes.Node):
                new = _rewrite(child)
                setattr(node, field, new)
                stack.append(new)
            elif isinstance(child, list):
                items = [_rewrite(c) if isinstance(c, nodes.Node) else c for c in child]
                setattr(node, field, items)
                stack.extend(c for c in items if isinstance(c, nodes.Node))
        if isinstance(node, nodes.For):
            node.iter = nodes.Filter(node.iter, LOOP_FILTER, [], [], None, None, lineno=node.lineno)
        elif isinstance(node, nodes.Output):
            node.nodes = [
                nodes.Filter(c, OUT_FILTER, [], [], None, None, lineno=c.lineno) for c in node.nodes
            ]
    return ast


def _rewrite(node: nodes.Node) -> nodes.Node:
    if isinstance(node, nodes.Concat):
        return nodes.Filter(
            nodes.List(node.nodes, lineno=node.lineno),
            CONCAT_FILTER,
            [],
            [],
            None,
            None,
            lineno=node.lineno,
        )
    return node
