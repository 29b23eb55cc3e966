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

# Words a Mermaid flowchart reads as syntax when they stand alone as a node id.
_MERMAID_WORDS = {"end", "graph", "flowchart", "subgraph", "click", "style", "class", "classdef"}


def _id(*parts: str | None) -> str:
    out = "_".join(re.sub(r"[^A-Za-z0-9]", "_", p or "routines") for p in parts)
    return out + "_" if out.lower() in _MERMAID_WORDS else out


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
            lines.append(f'  subgraph {_id(s.id)}["{label}"]')
            lines += [f'    {_id(s.id, a)}["{_mtext(a)}"]' for a in s.actions]
            lines.append("  end")
        else:
            lines.append(f'  {_id(s.id)}["{label}"]')
    for a, b, label, style in _edges(pb):
        arrow = "-.->" if style == "dashed" else "-->"
        lines.append(f"  {_id(a)} {arrow}{'|' + label + '|' if label else ''} {_id(b)}")
    if actions:
        for a, b, label in _action_edges(pb):
            sa, sb = pb.actions[a].stage, pb.actions[b].stage
            lines.append(f"  {_id(sa, a)} -->|{label}| {_id(sb, b)}")
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
        label = '"' + _dtext(s.title) + (f"\\ngate: {_dtext(s.gate.text)}" if s.gate else "") + '"'
        if actions and s.actions:
            lines.append(f"  subgraph cluster_{_id(s.id)} {{")
            lines.append(f"    label={label};")
            lines.append(f"    {_id(s.id)} [shape=point, style=invis];")
            lines += [f"    {_id(s.id, a)} [label={_q(a)}];" for a in s.actions]
            lines.append("  }")
        else:
            lines.append(f"  {_id(s.id)} [label={label}];")
    for a, b, label, style in _edges(pb):
        lines.append(f"  {_id(a)} -> {_id(b)} [style={style}, label={_q(label)}];")
    if actions:
        for a, b, label in _action_edges(pb):
            sa, sb = pb.actions[a].stage, pb.actions[b].stage
            lines.append(f"  {_id(sa, a)} -> {_id(sb, b)} [label={_q(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
