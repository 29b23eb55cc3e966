"""Sandbox escapes in templates: refused by `sop validate` at their place, and at render time.

The payloads are those of Jinja2's own sandbox escapes (CVE-2024-56326: a stored `.format`;
CVE-2025-27516: `|attr("format")`) and the classic attribute walks to `__globals__`.
"""

from __future__ import annotations

import pytest
from sop.engine.lang.templates import RenderError, render

from .conftest import BASE, position

PAYLOADS = [
    ('{% set x = "{0.__class__.__init__.__globals__}".format %}{{ x(action) }}', ".format %}"),
    ('{{ "{0.__class__}"|attr("format") }}', '"format"'),
    ('{{ ("{0.__class__.__mro__}"|attr("format"))(action) }}', '"format"'),
    ("{{ action.__class__.__mro__ }}", "__class__"),
    ("{{ cycler.__init__.__globals__.os }}", "__init__"),
    ('{{ member["__class__"] }}', '"__class__"'),
    ("{{ member|attr(params.x) }}", "attr"),
]


@pytest.mark.parametrize(("payload", "at"), PAYLOADS)
def test_an_escape_attempt_is_an_error_at_its_place(payload: str, at: str, check) -> None:  # type: ignore[no-untyped-def]
    text = BASE + (
        "params: {x: {default: y}}\nstages:\n  s1:\n    actions:\n"
        f"      a1: {{on: member.joined, to: member, do: message, text: '{payload}'}}\n"
    )
    res, text = check(text)
    found = [d for d in res.diagnostics if d.code == "SOP255"]
    assert found, [(d.code, d.message) for d in res.diagnostics]
    line, col = position(text, at)
    needle = at.lstrip(".").strip('"').split(" ")[0]
    if needle != "attr":
        line, col = position(text, needle)
    assert (found[0].line, found[0].column) == (line, col)
    assert res.errors


@pytest.mark.parametrize(("payload", "at"), PAYLOADS[:5])
def test_the_sandbox_refuses_them_at_render_time_too(payload: str, at: str) -> None:
    """Even a playbook that skipped validation cannot escape when the runtime renders it."""
    context = {"action": {"id": "a1"}, "member": {"name": "x"}, "params": {"x": "y"}}
    with pytest.raises(RenderError):
        render(payload, context)
