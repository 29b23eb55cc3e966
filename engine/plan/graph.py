"""Stage and action graphs as Mermaid or Graphviz DOT text, and as a JSON document.

Titles and gates are playbook text: each format gets them escaped its own way (Mermaid entity
codes, DOT string escapes), after control characters and newlines are made visible.
"""

from __future__ import annotations

import re
from typing import Any

from ..core.textsafe import terminal
from ..core.timeutil import format_duration
from ..lang.model import Playbook, Relative


def _enc(name: str) -> str:
    """A playbook id as letters, digits and `_`, one-to-one: `_` doubled, others `_hex_`."""
    return "".join(
        c if c.isascii() and c.isalnum() else "__" if c == "_" else f"_{ord(c):x}_" for c in name
    )


def _sid(stage: str | None) -> str:
    """The node id of a stage (or of the routines, which belong to none): a valid id in both
    Mermaid and DOT, never a keyword (`end`, `graph`, `subgraph`...), and distinct for distinct
    stages (`a-b` and `a_b` are two nodes)."""
    return "routines" if stage is None else "s_" + _enc(stage)


def _aid(action: str) -> str:
    """The node id of an action (action ids are unique across a playbook)."""
    return "a_" + _enc(action)


# Characters that end a quoted Mermaid label or that it reads as an entity, HTML or markdown.
_MERMAID_SPECIAL = re.compile(r'["#&<>`]')


def _mtext(text: str) -> str:
    """Text inside a Mermaid `["..."]` label: specials as `#NN;` entity codes, on one line."""
    return _MERMAID_SPECIAL.sub(lambda m: f"#{ord(m.group(0))};", terminal(text))


def _dtext(text: str) -> str:
    """Text inside a DOT quoted string: one line, and backslashes shown, not read as escapes."""
    return terminal(text).replace("\\", "\\\\").replace('"', '\\"')


def graph_dict(pb: Playbook) -> dict[str, Any]:
    """The JSON document of the stage graph."""
    return {
        "stages": [
            {
                "id": s.id,
                "title": s.title,
                "after": list(s.after),
                "gate": s.gate.text if s.gate else None,
                "goto": s.goto,
                "deadline_goto": s.deadline.goto if s.deadline else None,
                "actions": list(s.actions),
            }
            for s in pb.stages.values()
        ],
    }


def _edges(pb: Playbook) -> list[tuple[str, str, str, str]]:
    """(from, to, label, style) for stage edges: after (solid), goto (dashed)."""
    out = []
    for s in pb.stages.values():
        for a in s.after:
            if not s.rescue:
                out.append((a, s.id, "", "solid"))
        if s.goto:
            out.append((s.id, s.goto, "gate passed", "dashed"))
        if s.deadline and s.deadline.goto:
            out.append(
                (s.id, s.deadline.goto, f"deadline {format_duration(s.deadline.after)}", "dashed")
            )
    return out


def _action_edges(pb: Playbook) -> list[tuple[str, str, str]]:
    out = []
    for a in pb.actions.values():
        if isinstance(a.schedule, Relative):
            off = a.schedule.offset
            label = (
                f"-{format_duration(-off)}"
                if off.total_seconds() < 0
                else f"+{format_duration(off)}"
            )
            out.append((a.schedule.anchor, a.id, label))
    return out


def mermaid(pb: Playbook, actions: bool = True) -> str:
    """A Mermaid flowchart."""
    lines = ["flowchart LR"]
    for s in pb.stages.values():
        label = _mtext(s.title) + (f"<br/>gate: {_mtext(s.gate.text)}" if s.gate else "")
        label += " (optional)" if s.optional else " (rescue)" if s.rescue else ""
        if actions and s.actions:
            lines.append(f'  subgraph {_sid(s.id)}["{label}"]')
            lines += [f'    {_aid(a)}["{_mtext(a)}"]' for a in s.actions]
            lines.append("  end")
        else:
            lines.append(f'  {_sid(s.id)}["{label}"]')
    routines = [a.id for a in pb.actions.values() if a.stage is None]
    if actions and routines:
        lines.append(f'  subgraph {_sid(None)}["routines"]')
        lines += [f'    {_aid(a)}["{_mtext(a)}"]' for a in routines]
        lines.append("  end")
    for a, b, label, style in _edges(pb):
        arrow = "-.->" if style == "dashed" else "-->"
        text = f'|"{label}"|' if label else ""
        lines.append(f"  {_sid(a)} {arrow}{text} {_sid(b)}")
    if actions:
        for a, b, label in _action_edges(pb):
            lines.append(f'  {_aid(a)} -->|"{label}"| {_aid(b)}')
    return "\n".join(lines) + "\n"


def _q(s: str) -> str:
    return f'"{_dtext(s)}"'


def dot(pb: Playbook, actions: bool = True) -> str:
    """A Graphviz digraph."""
    lines = [
        "digraph playbook {",
        "  rankdir=LR;",
        "  compound=true;",
        "  node [shape=box, style=rounded];",
    ]
    for s in pb.stages.values():
        # `\n` between the escaped parts: DOT's own line break
        label = _dtext(s.title) + (f"\\ngate: {_dtext(s.gate.text)}" if s.gate else "")
        label = (
            '"' + label + (" (optional)" if s.optional else " (rescue)" if s.rescue else "") + '"'
        )
        if actions and s.actions:
            lines.append(f"  subgraph cluster_{_sid(s.id)} {{")
            lines.append(f"    label={label};")
            lines.append(f"    {_sid(s.id)} [shape=point, style=invis];")
            lines += [f"    {_aid(a)} [label={_q(a)}];" for a in s.actions]
            lines.append("  }")
        else:
            lines.append(f"  {_sid(s.id)} [label={label}];")
    routines = [a.id for a in pb.actions.values() if a.stage is None]
    if actions and routines:
        lines.append(f"  subgraph cluster_{_sid(None)} {{")
        lines.append('    label="routines";')
        lines += [f"    {_aid(a)} [label={_q(a)}];" for a in routines]
        lines.append("  }")
    for a, b, label, style in _edges(pb):
        lines.append(f"  {_sid(a)} -> {_sid(b)} [style={style}, label={_q(label)}];")
    if actions:
        for a, b, label in _action_edges(pb):
            lines.append(f"  {_aid(a)} -> {_aid(b)} [label={_q(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
