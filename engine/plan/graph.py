"""Stage and action graphs as Mermaid or Graphviz DOT text, and as a JSON document.

Titles, gates and exit conditions are playbook text: each format gets them escaped its own way
(Mermaid entity codes, DOT string escapes), after control characters and newlines are made
visible. A stage with one exit shows its gate on the stage and hands over along its `after:`
edges (a `goto` is a dashed "gate passed" edge); a stage with several exits draws one labelled
edge per exit and target (`id: condition for 7d`), and an exit that leads nowhere ends at the
`finish` node.
"""

from __future__ import annotations

import re
from typing import Any

from ..core.textsafe import terminal
from ..core.timeutil import format_duration
from ..lang.model import Exit, Playbook, Relative, Stage
from ..program import Program
from ..program.lifecycle import exits_of
from .sections import exit_destinations, exit_words


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


# Characters that end a quoted Mermaid label or that it reads as an entity, HTML or markdown;
# `|` also ends an edge label (`-->|"..."|`).
_MERMAID_SPECIAL = re.compile(r'["#&<>`|]')
_FINISH = "finish"  # the node an exit leading nowhere ends at (stage ids are `s_...`)


def _mtext(text: str) -> str:
    """Text inside a Mermaid `["..."]` label: specials as `#NN;` entity codes, on one line."""
    return _MERMAID_SPECIAL.sub(lambda m: f"#{ord(m.group(0))};", terminal(text))


def _branching(s: Stage) -> bool:
    """Whether a stage's exits are drawn as labelled edges (several exits, or one named other
    than `pass`), rather than as a gate on the stage."""
    exits = exits_of(s)
    return len(exits) > 1 or (len(exits) == 1 and exits[0].id != "pass")


def _gate_line(s: Stage) -> str | None:
    """The gate shown on a stage with a single `pass` exit: its condition and hold."""
    exits = exits_of(s)
    if _branching(s) or not exits:
        return None
    return exit_words(exits[0])


def exit_label(e: Exit) -> str:
    """The label of an exit edge: `success: core_members >= 500 for 7d`."""
    return f"{e.id}: {exit_words(e)}"


def _dtext(text: str) -> str:
    """Text inside a DOT quoted string: one line, and backslashes shown, not read as escapes."""
    return terminal(text).replace("\\", "\\\\").replace('"', '\\"')


def graph_dict(pb: Playbook) -> dict[str, Any]:
    """The JSON document of the stage graph; `exits` lists every exit with where it leads."""
    succ = Program(pb).successors
    return {
        "stages": [
            {
                "id": s.id,
                "title": s.title,
                "after": list(s.after),
                "gate": s.gate.text if s.gate else None,
                "goto": s.goto,
                "exits": [
                    {
                        "id": e.id,
                        "when": e.when.text,
                        "for": format_duration(e.hold) if e.hold else None,
                        "goto": e.goto,
                        "to": exit_destinations(e, succ.get(s.id, ())),
                    }
                    for e in exits_of(s)
                ],
                "deadline_goto": s.deadline.goto if s.deadline else None,
                "actions": list(s.actions),
            }
            for s in pb.stages.values()
        ],
    }


def _edges(pb: Playbook) -> list[tuple[str, str | None, str, str]]:
    """(from, to, label, style) for stage edges: after (solid), goto (dashed), and for a
    branching stage one labelled edge per exit and target (to None: the playbook ends)."""
    succ = Program(pb).successors
    out: list[tuple[str, str | None, str, str]] = []
    drawn: set[tuple[str, str]] = set()  # after-edges an exit edge already stands for
    for s in pb.stages.values():
        if not _branching(s):
            continue
        for e in exits_of(s):
            targets: list[str | None] = [*exit_destinations(e, succ.get(s.id, ()))]
            style = "dashed" if e.goto else "solid"
            for t in targets or [None]:
                out.append((s.id, t, exit_label(e), style))
                if t is not None and not e.goto:
                    drawn.add((s.id, t))
    for s in pb.stages.values():
        for a in s.after:
            if not s.rescue and (a, s.id) not in drawn:
                out.append((a, s.id, "", "solid"))
        if s.goto and not _branching(s):
            out.append((s.id, s.goto, "gate passed", "dashed"))
        if s.deadline and s.deadline.goto:
            out.append(
                (s.id, s.deadline.goto, f"deadline {format_duration(s.deadline.after)}", "dashed")
            )
    return out


def _node(stage: str | None) -> str:
    """The node id of an edge's end: a stage, or `finish` when the playbook ends there."""
    return _sid(stage) if stage is not None else _FINISH


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
    edges = _edges(pb)
    for s in pb.stages.values():
        gate = _gate_line(s)
        label = _mtext(s.title) + (f"<br/>gate: {_mtext(gate)}" if gate else "")
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
    if any(b is None for _, b, _, _ in edges):
        lines.append(f'  {_FINISH}(["end of the playbook"])')
    for a, b, label, style in edges:
        arrow = "-.->" if style == "dashed" else "-->"
        text = f'|"{_mtext(label)}"|' if label else ""
        lines.append(f"  {_sid(a)} {arrow}{text} {_node(b)}")
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
    edges = _edges(pb)
    for s in pb.stages.values():
        gate = _gate_line(s)
        # `\n` between the escaped parts: DOT's own line break
        label = _dtext(s.title) + (f"\\ngate: {_dtext(gate)}" if gate else "")
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
    if any(b is None for _, b, _, _ in edges):
        lines.append(f'  {_FINISH} [label="end of the playbook", shape=oval];')
    for a, b, label, style in edges:
        lines.append(f"  {_sid(a)} -> {_node(b)} [style={style}, label={_q(label)}];")
    if actions:
        for a, b, label in _action_edges(pb):
            lines.append(f"  {_aid(a)} -> {_aid(b)} [label={_q(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
