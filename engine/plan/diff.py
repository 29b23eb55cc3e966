"""`diff`: what changed between two versions of a playbook, and what that does to the calendar."""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from ..core.status import ExitCode
from ..core.textsafe import terminal
from ..core.timeutil import format_duration
from ..lang.model import Action, Attribute, IncidentStep, Playbook
from ..program import Occurrence, Program
from ..program.lifecycle import exits_of
from ..program.targets import targets as all_targets
from .timeline import PlanOptions, make_plan
from .words import schedule_words


@dataclass
class Change:
    """One changed thing: what, and its fields old → new."""

    # stage | exit | action | template | role | backend | target | metric | incident | channel
    # | segment | attribute | points | redemption | teams | admission | playbook
    kind: str
    id: str
    change: str  # added | removed | changed
    fields: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class PlanDelta:
    """Effect on the calendar."""

    added: list[Occurrence]
    removed: list[Occurrence]
    moved: list[tuple[Occurrence, Occurrence]]
    unchanged: int


@dataclass
class Diff:
    """The semantic diff of two playbooks."""

    changes: list[Change]
    plan: PlanDelta
    days: int

    @property
    def empty(self) -> bool:
        """True when nothing differs."""
        return not self.changes and not (self.plan.added or self.plan.removed or self.plan.moved)

    @property
    def exit_code(self) -> ExitCode:
        """1 when anything differs (as `diff` does), else 0."""
        return ExitCode.OK if self.empty else ExitCode.FINDINGS

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of `sop diff --format json`."""
        return diff_dict(self)


def _show(v: Any) -> str:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        if hasattr(v, "text") and not hasattr(v, "kind"):  # an Expression or a Template
            return str(v.text)
        return str({f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.compare})
    if isinstance(v, tuple) and any(dataclasses.is_dataclass(x) for x in v):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, timedelta):
        return format_duration(v)
    return str(v)


def _plain(v: Any) -> Any:
    """A field value inside a shown dataclass: conditions by their text, durations spelled."""
    if isinstance(v, timedelta):
        return format_duration(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _show(v)
    return v


def _field_changes(old: Any, new: Any, skip: tuple[str, ...] = ()) -> dict[str, tuple[str, str]]:
    out = {}
    for f in dataclasses.fields(old):
        if not f.compare or f.name in skip:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a != b:
            out[f.name] = (_show(a), _show(b))
    if isinstance(old, Action) and "schedule" in out:
        out["schedule"] = (schedule_words(old), schedule_words(new))
    if isinstance(old, Attribute) and "default" in out and (old.pii or new.pii):
        out["default"] = (_HIDDEN, _HIDDEN)  # a PII attribute's value is never printed
    return out


_HIDDEN = "(hidden: personal data)"


def _compare(
    kind: str,
    old: dict[str, Any],
    new: dict[str, Any],
    out: list[Change],
    skip: tuple[str, ...] = (),
) -> None:
    for k in old.keys() - new.keys():
        out.append(Change(kind, k, "removed"))
    for k in new.keys() - old.keys():
        out.append(Change(kind, k, "added"))
    for k in old.keys() & new.keys():
        fields = _field_changes(old[k], new[k], skip)
        if fields:
            out.append(Change(kind, k, "changed", fields))


def _exits(pb: Playbook) -> dict[str, Any]:
    """Every stage's exits, keyed `stage.exit`."""
    return {f"{s.id}.{e.id}": e for s in pb.stages.values() for e in exits_of(s)}


def _compare_one(kind: str, old: Any, new: Any, out: list[Change]) -> None:
    """A section the playbook has at most once (`admission`, `teams`)."""
    _compare(
        kind,
        {kind: old} if old is not None else {},
        {kind: new} if new is not None else {},
        out,
    )


def _step_text(st: IncidentStep) -> str:
    delay = f" {'within' if st.kind == 'alert' else 'after'} {_show(st.delay)}" if st.delay else ""
    extra = f" template {st.template}" if st.template else ""
    extra += f" text {st.text}" if st.text else ""
    return f"{st.kind} {st.target}{delay}{extra}"


def _compare_steps(old: Playbook, new: Playbook, out: list[Change]) -> None:
    """An incident's steps, one field per step that differs (`step 2`), added or removed."""
    for iid in old.incidents.keys() & new.incidents.keys():
        a, b = old.incidents[iid].steps, new.incidents[iid].steps
        fields = {}
        for i in range(max(len(a), len(b))):
            x = _step_text(a[i]) if i < len(a) else ""
            y = _step_text(b[i]) if i < len(b) else ""
            if x != y:
                fields[f"step {i + 1}"] = (x, y)
        if not fields:
            continue
        found = next((c for c in out if (c.kind, c.id) == ("incident", iid)), None)
        if found is None:
            out.append(Change("incident", iid, "changed", fields))
        else:
            found.fields.update(fields)


def _compare_points(old: Playbook, new: Playbook, out: list[Change]) -> None:
    """Points: what events earn and the expiry (kind `points`), the catalogue (`redemption`)."""
    a, b = old.points, new.points
    if a is None or b is None:
        _compare_one("points", a, b, out)
        return
    earn = {f"earn.{k}": v for k, v in a.earn.items()}, {f"earn.{k}": v for k, v in b.earn.items()}
    for k in earn[0].keys() - earn[1].keys():
        out.append(Change("points", k, "removed", {"points": (str(earn[0][k]), "")}))
    for k in earn[1].keys() - earn[0].keys():
        out.append(Change("points", k, "added", {"points": ("", str(earn[1][k]))}))
    for k in earn[0].keys() & earn[1].keys():
        if earn[0][k] != earn[1][k]:
            out.append(
                Change("points", k, "changed", {"points": (str(earn[0][k]), str(earn[1][k]))})
            )
    if a.expire != b.expire:
        out.append(
            Change("points", "expire", "changed", {"expire": (_show(a.expire), _show(b.expire))})
        )
    _compare("redemption", dict(a.redeem), dict(b.redeem), out)


def diff(old: Playbook, new: Playbook, start: date | None = None, days: int = 30) -> Diff:
    """Compare two playbooks and their next `days` days of occurrences."""
    changes: list[Change] = []
    # a stage's gate and goto are its first exit's: exits are compared on their own
    skip = ("actions", "gate", "goto", "exits")
    _compare("stage", dict(old.stages), dict(new.stages), changes, skip=skip)
    _compare("exit", _exits(old), _exits(new), changes)
    _compare("action", dict(old.actions), dict(new.actions), changes)
    _compare("template", dict(old.templates), dict(new.templates), changes)
    _compare("role", dict(old.roles), dict(new.roles), changes)
    _compare("backend", dict(old.backends), dict(new.backends), changes)
    targets = all_targets(old), all_targets(new)
    _compare("target", *targets, changes)
    # a metric's own `target:` is reported as a target, above
    _compare("metric", dict(old.metrics), dict(new.metrics), changes, skip=("target",))
    _compare("incident", dict(old.incidents), dict(new.incidents), changes, skip=("steps",))
    _compare_steps(old, new, changes)
    _compare("channel", dict(old.channels), dict(new.channels), changes)
    _compare("segment", dict(old.segments), dict(new.segments), changes)
    _compare("attribute", dict(old.attributes), dict(new.attributes), changes)
    _compare_points(old, new, changes)
    _compare_one("teams", old.teams, new.teams, changes)
    _compare_one("admission", old.admission, new.admission, changes)
    for f in ("id", "title", "timezone", "community", "tiers", "moderation"):
        a, b = getattr(old, f), getattr(new, f)
        if a != b:
            changes.append(Change("playbook", f, "changed", {f: (_show(a), _show(b))}))
    order = {"removed": 0, "changed": 1, "added": 2}
    changes.sort(key=lambda c: (c.kind, order[c.change], c.id))
    opts = PlanOptions(start=start, days=days)
    a = make_plan(Program(old), opts).occurrences
    b = make_plan(Program(new), opts).occurrences
    return Diff(changes, plan_delta(a, b), days)


def plan_delta(old: list[Occurrence], new: list[Occurrence]) -> PlanDelta:
    """Occurrences added, removed, and moved (same action, different time), by key."""
    ok = {o.key: o for o in old}
    nk = {o.key: o for o in new}
    removed = [o for k, o in ok.items() if k not in nk]
    added = [o for k, o in nk.items() if k not in ok]
    moved = []
    by_action: dict[str, deque[Occurrence]] = {}  # a deque: pairing many stays linear
    for o in added:
        by_action.setdefault(o.action, deque()).append(o)
    still_removed = []
    for o in removed:
        cands = by_action.get(o.action)
        if cands:
            moved.append((o, cands.popleft()))
        else:
            still_removed.append(o)
    moved_new = {id(n) for _, n in moved}
    still_added = [o for o in added if id(o) not in moved_new]
    return PlanDelta(still_added, still_removed, moved, len(ok.keys() & nk.keys()))


def diff_dict(d: Diff) -> dict[str, Any]:
    """The JSON document of a diff."""

    def occ(o: Occurrence) -> dict[str, Any]:
        return {"key": o.key, "action": o.action, "at": o.at.isoformat()}

    return {
        "changes": [
            {
                "kind": c.kind,
                "id": c.id,
                "change": c.change,
                "fields": {k: {"old": a, "new": b} for k, (a, b) in c.fields.items()},
            }
            for c in d.changes
        ],
        "plan": {
            "days": d.days,
            "added": [occ(o) for o in d.plan.added],
            "removed": [occ(o) for o in d.plan.removed],
            "moved": [{"from": occ(a), "to": occ(b)} for a, b in d.plan.moved],
            "unchanged": d.plan.unchanged,
        },
    }


SHOWN = 20  # occurrences listed per kind of change in the text report


def diff_text(d: Diff) -> str:
    """A readable report; playbook text on one line each, control characters shown escaped."""
    sign = {"added": "+", "removed": "-", "changed": "~"}
    t = terminal
    lines = []
    for c in d.changes:
        lines.append(f"{sign[c.change]} {c.kind} {t(c.id)} {c.change}")
        for k, (a, b) in c.fields.items():
            lines.append(f"    {k}: {t(a)} → {t(b)}")
    p = d.plan
    lines.append(
        f"next {d.days} days: {len(p.added)} added, {len(p.removed)} removed,"
        f" {len(p.moved)} moved, {p.unchanged} unchanged occurrences"
    )
    lines += [f"  + {o.at:%Y-%m-%d %H:%M} {t(o.action)}" for o in p.added[:SHOWN]]
    lines += _more(len(p.added), "added")
    lines += [f"  - {o.at:%Y-%m-%d %H:%M} {t(o.action)}" for o in p.removed[:SHOWN]]
    lines += _more(len(p.removed), "removed")
    lines += [
        f"  ~ {t(before.action)}: {before.at:%Y-%m-%d %H:%M} → {after.at:%Y-%m-%d %H:%M}"
        for before, after in p.moved[:SHOWN]
    ]
    lines += _more(len(p.moved), "moved")
    return "\n".join(lines) + "\n"


def _more(n: int, what: str) -> list[str]:
    """The line that says a list was cut, and where the whole of it is."""
    if n <= SHOWN:
        return []
    return [f"  … and {n - SHOWN:,} more {what} (the first {SHOWN} shown; all: --format json)"]
