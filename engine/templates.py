"""Jinja2 templates, only ever in the sandbox: static checks and rendering."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from .catalog import TEMPLATE_GLOBALS, TEMPLATE_MEMBER_ATTRS

Problem = tuple[str, int, str, str]  # code, line offset in the template, text to point at, message


@cache
def environment() -> Any:
    """The one sandboxed environment; undefined variables are errors, not empty strings."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


def template_problems(text: str, params: Mapping[str, object]) -> list[Problem]:
    """Syntax errors and reads of unknown variables, each with its line within the template."""
    from jinja2 import TemplateSyntaxError, meta, nodes

    env = environment()
    try:
        ast = env.parse(text)
    except TemplateSyntaxError as e:
        return [("SOP208", max((e.lineno or 1) - 1, 0), "", e.message or str(e))]
    problems: list[Problem] = []
    undeclared = meta.find_undeclared_variables(ast)
    for name_node in ast.find_all(nodes.Name):
        if (
            name_node.ctx == "load"
            and name_node.name in undeclared
            and (name_node.name not in TEMPLATE_GLOBALS)
        ):
            undeclared.discard(name_node.name)
            problems.append(
                (
                    "SOP209",
                    name_node.lineno - 1,
                    name_node.name,
                    f"unknown variable `{name_node.name}`",
                )
            )
    for ga in ast.find_all(nodes.Getattr):
        if isinstance(ga.node, nodes.Name):
            owner, attr = ga.node.name, ga.attr
            allowed: Any = {"member": TEMPLATE_MEMBER_ATTRS, "params": params}.get(owner)
            if allowed is not None and attr not in allowed:
                problems.append(
                    ("SOP209", ga.lineno - 1, attr, f"`{owner}` has no attribute `{attr}`")
                )
    return problems


def render(text: str, context: Mapping[str, Any]) -> str:
    """Render in the sandbox; raises jinja2 errors for missing data."""
    return str(environment().from_string(text).render(**context))


def needs_member(text: str) -> bool:
    """True when a template reads member or event data (rendered per member at run time)."""
    from jinja2 import meta

    names = meta.find_undeclared_variables(environment().parse(text))
    return bool(names & {"member", "event"})
