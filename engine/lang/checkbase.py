"""What every semantic check shares: the registry, "unknown X" findings, action anchors,
the member conditions of a playbook, and where a template's text sits in its file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta

from ..core.diagnostics import Collector, Span
from ..core.suggest import did_you_mean
from .model import Action, Expression, OnEvent, Playbook, Stage, Template
from .semantics import Anchored, resolve_anchors, stage_open_bound

Check = Callable[[Playbook, Collector], None]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    """Register a check."""
    CHECKS.append(fn)
    return fn


def run_checks(pb: Playbook, out: Collector) -> None:
    """Run every registered check."""
    for fn in CHECKS:
        fn(pb, out)


def unknown(
    out: Collector, code: str, what: str, name: str, options: Mapping[str, object], span: Span
) -> None:
    """A located "unknown <what> `name`" finding, with "did you mean" or the known names."""
    known = ", ".join(sorted(options)) or "none"
    hint = did_you_mean(name, options) or f"known {what}s: {known}"
    out.add(code, span, f"unknown {what} `{name}`", hint=hint)


def root_event(pb: Playbook, a: Action) -> OnEvent | None:
    """The member event an action's chain hangs off, if any."""
    return anchors(pb)[a.id].event


def anchors(pb: Playbook) -> dict[str, Anchored]:
    """Every action's root and offset (one walk per playbook; `semantics.resolve_anchors`)."""
    cached = _ANCHORS.get(id(pb))
    if cached is None or cached[0] is not pb:
        _ANCHORS.clear()  # one playbook is checked at a time
        cached = _ANCHORS[id(pb)] = (pb, resolve_anchors(pb.actions))
    return cached[1]


_ANCHORS: dict[int, tuple[Playbook, dict[str, Anchored]]] = {}


def stage_end_bound(s: Stage) -> timedelta | None:
    """The latest a stage can last (None: it may run on), `semantics.stage_open_bound`."""
    return stage_open_bound(s)


def member_conditions(pb: Playbook) -> list[tuple[Expression | None, str]]:
    """Every member condition of a playbook with a name for it (segments, `where:`, counts,
    `admission.approve`, tier rules): each reads member attributes, never metrics."""
    found: list[tuple[Expression | None, str]] = []
    for g in pb.segments.values():
        found.append((g.when, f"segment `{g.id}`"))
    for a in pb.actions.values():
        found.append((a.where, f"`where` of action `{a.id}`"))
    for m in pb.metrics.values():
        for key, c in (("count", m.count), ("per", m.per)):
            if c is not None:
                found.append((c.where, f"`{key}` of metric `{m.id}`"))
    if pb.admission is not None:
        found.append((pb.admission.approve, "`admission.approve`"))
    if pb.tiers:
        for t in pb.tiers.levels:
            found.append((t.promote, f"promotion of tier `{t.id}`"))
            found.append((t.demote_when, f"demotion of tier `{t.id}`"))
    return found


def locate(t: Template, line_offset: int, needle: str) -> Span:
    """File position of `needle` on line `line_offset` of a template."""
    lines = t.text.splitlines() or [""]
    if line_offset >= len(lines):
        return t.span
    col = lines[line_offset].find(needle) if needle else 0
    col = max(col, 0)
    line = t.line + line_offset
    return Span(t.span.file, line, t.column + col, line, t.column + col + max(len(needle), 1))
