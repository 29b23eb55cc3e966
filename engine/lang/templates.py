"""Jinja2 templates, only ever in the sandbox: parsed (never evaluated) to check, bounded to render.

`validate` only parses a template and walks the tree itself: `jinja2.meta` would run Jinja's code
generator, whose constant folding evaluates `{{ 'a' * 10**9 }}` while collecting names. Rendering
happens in `sop.engine.lang.sandbox.BoundedSandbox`, whose limits are listed there.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from ..core.catalog import TEMPLATE_GLOBALS, TEMPLATE_MEMBER_ATTRS

if TYPE_CHECKING:
    from .model import Action, Playbook

Problem = tuple[str, int, str, str]  # code, line offset in the template, text to point at, message

# Names bound implicitly inside loops, macros and call blocks.
_IMPLICIT = {"For": {"loop"}, "Macro": {"caller", "varargs", "kwargs"}, "CallBlock": {"caller"}}


class RenderError(Exception):
    """A template could not be rendered; `line` is its 1-based line in the template, if known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@cache
def environment() -> Any:
    """The one sandboxed environment: undefined variables are errors, work and sizes are bounded."""
    from .sandbox import BoundedSandbox

    return BoundedSandbox()


# validate reads each text's tree three times (problems, member reads, whether it needs a member):
# parsed once, keyed by the text. The trees are only read here; rendering parses its own copy,
# which `bound_ast` rewrites in place.
@lru_cache(maxsize=256)
def _parse(text: str) -> Any:
    """The template's tree; raises TemplateSyntaxError, or RenderError when Jinja gives up."""
    from jinja2 import TemplateSyntaxError

    try:
        return environment().parse(text)
    except TemplateSyntaxError:
        raise
    except RecursionError:
        raise RenderError("the template nests too deeply") from None
    except (ValueError, OverflowError, MemoryError) as e:  # e.g. an integer of 5,000 digits
        raise RenderError(f"the template cannot be read: {str(e)[:120]}") from None


def _walk(ast: Any) -> Iterator[Any]:
    """Every node of a parsed template, without recursion (a deep tree cannot overflow)."""
    from jinja2 import nodes

    stack = [ast]
    while stack:
        node = stack.pop()
        yield node
        children = [c for c in node.iter_child_nodes() if isinstance(c, nodes.Node)]
        stack.extend(reversed(children))


def _declared(ast: Any) -> set[str]:
    """Names the template binds itself (set, for, macro, with, import, call-block arguments)."""
    from jinja2 import nodes

    out = set(environment().globals)
    for node in _walk(ast):
        if (isinstance(node, nodes.Name) and node.ctx in ("store", "param")) or isinstance(
            node, nodes.Macro
        ):
            out.add(node.name)
        elif isinstance(node, nodes.Import):
            out.add(node.target)
        elif isinstance(node, nodes.FromImport):
            out.update(n[1] if isinstance(n, tuple) else n for n in node.names)
        out |= _IMPLICIT.get(type(node).__name__, set())
    return out


def _unbound_reads(ast: Any) -> list[Any]:
    """Name nodes that read a variable the template does not bind, in source order."""
    from jinja2 import nodes

    declared = _declared(ast)
    return [
        n
        for n in _walk(ast)
        if isinstance(n, nodes.Name) and n.ctx == "load" and n.name not in declared
    ]


def is_plain(text: str) -> bool:
    """True when `text` holds no Jinja syntax (every tag starts with `{`): it renders as itself."""
    return "{" not in text


def template_problems(
    text: str, params: Mapping[str, object], member_attrs: Collection[str] = ()
) -> list[Problem]:
    """Syntax errors and reads of unknown variables, each with its line within the template.

    `member_attrs` are the playbook's declared member attributes (`member.city`), readable
    besides the built-in ones.
    """
    if is_plain(text):
        return []
    from jinja2 import TemplateSyntaxError, nodes

    from .sandbox import GROWING_METHODS

    try:
        ast = _parse(text)
    except TemplateSyntaxError as e:
        return [("SOP208", max((e.lineno or 1) - 1, 0), "", e.message or str(e))]
    except RenderError as e:
        return [("SOP208", 0, "", e.message)]
    problems: list[Problem] = []
    reported: set[str] = set()
    for name_node in _unbound_reads(ast):
        name = name_node.name
        if name in TEMPLATE_GLOBALS or name in reported:
            continue
        reported.add(name)
        problems.append(("SOP209", name_node.lineno - 1, name, f"unknown variable `{name}`"))
    for node in _walk(ast):
        callee = node.node if isinstance(node, nodes.Call) else None
        on_params = isinstance(callee, nodes.Getattr) and (
            isinstance(callee.node, nodes.Name) and callee.node.name == "params"
        )
        if isinstance(callee, nodes.Getattr) and callee.attr in GROWING_METHODS and not on_params:
            problems.append(
                (
                    "SOP208",
                    callee.lineno - 1,
                    callee.attr,
                    f"`.{callee.attr}()` is not available in templates (it can grow text"
                    " without bound); use the filter of the same name or `format`",
                )
            )
    problems += _escapes(ast)
    for ga in _walk(ast):
        if isinstance(ga, nodes.Getattr) and isinstance(ga.node, nodes.Name):
            owner, attr = ga.node.name, ga.attr
            allowed: Any = {"member": TEMPLATE_MEMBER_ATTRS, "params": params}.get(owner)
            if owner == "member" and attr in member_attrs:
                continue
            if allowed is not None and attr not in allowed:
                problems.append(
                    ("SOP209", ga.lineno - 1, attr, f"`{owner}` has no attribute `{attr}`")
                )
    return problems


# Methods that turn a string into code-like access (`"{0.__class__}".format(x)`): the sandbox
# checks direct calls, and Jinja's own escapes (CVE-2024-56326, CVE-2025-27516) came through a
# stored reference or `|attr("format")`; a template has no business naming them at all.
_FORMATTERS = frozenset({"format", "format_map"})


def _private(name: object) -> bool:
    return isinstance(name, str) and (name.startswith("_") or name in _FORMATTERS)


def _escapes(ast: Any) -> list[Problem]:
    """Attempts to reach outside the sandbox, found in the syntax tree before anything runs."""
    from jinja2 import nodes

    found: list[Problem] = []
    calls = {id(n.node) for n in _walk(ast) if isinstance(n, nodes.Call)}
    for n in _walk(ast):
        name: object = None
        if isinstance(n, nodes.Getattr) and n.attr.startswith("_"):
            name = n.attr
        elif isinstance(n, nodes.Getattr) and n.attr in _FORMATTERS and id(n) not in calls:
            name = n.attr  # `.format` kept as a value: the CVE-2024-56326 pattern
        elif isinstance(n, nodes.Getitem) and isinstance(n.arg, nodes.Const):
            name = n.arg.value if _private(n.arg.value) and str(n.arg.value)[:1] == "_" else None
        elif isinstance(n, nodes.Filter) and n.name == "attr" and n.args:
            arg = n.args[0]
            if not isinstance(arg, nodes.Const) or _private(arg.value):
                name = arg.value if isinstance(arg, nodes.Const) else "a computed name"
        if name is not None:
            found.append(
                (
                    "SOP255",
                    n.lineno - 1,
                    "attr" if name == "a computed name" else str(name),
                    f"reaches outside the sandbox through `{name}`",
                )
            )
    return found


def needs_member(text: str) -> bool:
    """True when a template reads member or event data (rendered per member at run time)."""
    if is_plain(text):
        return False
    try:
        ast = _parse(text)
    except Exception:
        return True  # not renderable without a member either; the caller skips it
    return any(n.name in ("member", "event") for n in _unbound_reads(ast))


def member_attribute_reads(text: str) -> list[tuple[int, str]]:
    """The member attributes a template reads (`member.phone`, `member["phone"]`): (line
    offset, attribute), in order; for the personal-data check (SOP219)."""
    if is_plain(text):
        return []
    from jinja2 import nodes

    try:
        ast = _parse(text)
    except Exception:
        return []  # SOP208's finding
    found: list[tuple[int, str]] = []
    for n in _walk(ast):
        if isinstance(n, nodes.Getattr) and isinstance(n.node, nodes.Name):
            if n.node.name == "member":
                found.append((n.lineno - 1, n.attr))
        elif (
            isinstance(n, nodes.Getitem)
            and isinstance(n.node, nodes.Name)
            and n.node.name == "member"
            and isinstance(n.arg, nodes.Const)
            and isinstance(n.arg.value, str)
        ):
            found.append((n.lineno - 1, n.arg.value))
    return found


def member_reads(text: str) -> list[tuple[int, str]]:
    """Where a template reads member or event data: (line offset, `member`/`event`), in order."""
    if is_plain(text):
        return []
    try:
        ast = _parse(text)
    except Exception:
        return []  # a template that does not parse is SOP208's finding, not this one's
    return [(n.lineno - 1, n.name) for n in _unbound_reads(ast) if n.name in ("member", "event")]


@contextmanager
def shared_budget() -> Iterator[None]:
    """Renders inside this block share one work budget (a plan renders many templates)."""
    from .sandbox import end_budget, start_budget

    token = start_budget()
    try:
        yield
    finally:
        end_budget(token)


@lru_cache(maxsize=256)
def _compiled(text: str) -> Any:
    from .sandbox import bound_ast

    env = environment()
    return env.from_string(bound_ast(env.parse(text)))


def render(text: str, context: Mapping[str, Any]) -> str:
    """Render in the bounded sandbox; raises RenderError (missing data, a limit, a bad template)."""
    if is_plain(text):
        from .sandbox import MAX_TEXT

        if len(text) > MAX_TEXT:
            raise RenderError(f"the rendered text is longer than {MAX_TEXT} characters")
        return text
    from jinja2 import TemplateError

    from .sandbox import MAX_TEXT, TemplateLimitError, end_budget, start_budget

    token = start_budget()
    try:
        out: list[str] = []
        size = 0
        for chunk in _compiled(text).generate(**context):
            size += len(chunk)
            if size > MAX_TEXT:
                raise TemplateLimitError(f"the rendered text is longer than {MAX_TEXT} characters")
            out.append(chunk)
        return "".join(out)
    except RenderError:
        raise
    except (TemplateError, TemplateLimitError) as e:
        raise RenderError(_describe(e), _template_line(e)) from None
    except RecursionError:
        raise RenderError("the template recurses too deeply") from None
    except MemoryError:
        raise RenderError("the template needs too much memory") from None
    except Exception as e:  # any Python error a template can provoke (1/0, int('x') ...)
        raise RenderError(_describe(e), _template_line(e)) from None
    finally:
        end_budget(token)


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _template_line(e: BaseException) -> int | None:
    """The template line the error happened on: Jinja rewrites tracebacks to template lines."""
    lineno = getattr(e, "lineno", None)
    if isinstance(lineno, int):
        return lineno
    line = None
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def action_text(pb: Playbook, a: Action) -> str | None:
    """An action's message text: its named template's, else its inline `text`, else None."""
    if a.template:
        t = pb.templates.get(a.template)
        return t.text if t is not None else None
    return a.text.text if a.text else None


def action_context(pb: Playbook, a: Action, **extra: Any) -> dict[str, Any]:
    """The template context every interpreter uses for an action."""
    stage = pb.stages.get(a.stage) if a.stage else None
    return {
        "playbook": {"id": pb.id, "title": pb.title, "version": pb.version},
        "community": {
            "type": pb.community.type,
            "platform": pb.community.platform,
            "title": pb.title,
        },
        "stage": {"id": stage.id, "title": stage.title} if stage else {"id": "", "title": ""},
        "action": {"id": a.id, "title": a.title, "kind": a.kind},
        "params": dict(pb.params),
        "reward": {"item": a.reward_item, "streak": a.reward_streak, "points": a.reward_points},
        **extra,
    }
