"""Stage and action graphs as Mermaid or Graphviz DOT text."""

from __future__ import annotations

import re

from .model import Playbook, Relative
from .timeutil import format_duration


def _id(*parts: str | None) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9]", "_", p or "routines") for p in parts)


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
        label = s.title + (f"<br/>gate: {s.gate.text}" if s.gate else "")
        label += " (optional)" if s.optional else " (rescue)" if s.rescue else ""
        label = label.replace('"', "'")
        if actions and s.actions:
            lines.append(f'  subgraph {_id(s.id)}["{label}"]')
            lines += [f'    {_id(s.id, a)}["{a}"]' for a in s.actions]
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
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(pb: Playbook, actions: bool = True) -> str:
    """A Graphviz digraph."""
    lines = [
        "digraph playbook {",
        "  rankdir=LR;",
        "  compound=true;",
        "  node [shape=box, style=rounded];",
    ]
    for s in pb.stages.values():
        label = s.title + (f"\\ngate: {s.gate.text}" if s.gate else "")
        if actions and s.actions:
            lines.append(f"  subgraph cluster_{_id(s.id)} {{")
            lines.append(f"    label={_q(label)};")
            lines.append(f"    {_id(s.id)} [shape=point, style=invis];")
            lines += [f"    {_id(s.id, a)} [label={_q(a)}];" for a in s.actions]
            lines.append("  }")
        else:
            lines.append(f"  {_id(s.id)} [label={_q(label)}];")
    for a, b, label, style in _edges(pb):
        lines.append(f"  {_id(a)} -> {_id(b)} [style={style}, label={_q(label)}];")
    if actions:
        for a, b, label in _action_edges(pb):
            sa, sb = pb.actions[a].stage, pb.actions[b].stage
            lines.append(f"  {_id(sa, a)} -> {_id(sb, b)} [label={_q(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
