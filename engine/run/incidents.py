"""Incidents at run time: opening one (by a person or by its `detect:` condition), its steps as
occurrences with deadlines, and closing it.

When each step is due is `program.incidents.schedule`'s (offsets from the opening; plan prints
the same). Each step is an occurrence keyed like any other (`playbook/incident:<name>:<i>/
<opened, UTC>`), inserted in the transaction that opens the incident, so a step is never done
twice nor lost: a `do:` step goes out through the playbook's default backend (a `do: task`, or a
`do: message` that has no member to address, becomes a task for the incident's owner); an
`alert:` opens a task for its role due within `within`; an `escalate:` opens one `after` the
opening, only if the incident is still open then. Closing an incident completes its open tasks;
steps not yet due are skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.diagnostics import Span
from ..lang.model import Action, Effect, Incident, OnEvent, Template
from ..program import Program
from ..program.incidents import ScheduledStep, schedule
from ..program.occurrence import occurrence_key
from .errors import RunError
from .store.base import (
    IncidentRecord,
    IncidentState,
    NewOccurrence,
    NewTask,
    StateStore,
)

PREFIX = "incident:"  # the `action` of an incident step's occurrence: incident:<name>:<index>
TASK_KINDS = ("task", "message")  # `do:` kinds that become a staff task (nobody to message)


def step_action(name: str, index: int) -> str:
    """The action id of step `index` of incident `name`."""
    return f"{PREFIX}{name}:{index}"


def parse_step(action: str) -> tuple[str, int] | None:
    """(incident, step index) of an incident step's action id, else None."""
    if not action.startswith(PREFIX):
        return None
    name, _, index = action[len(PREFIX) :].rpartition(":")
    return (name, int(index)) if index.isdigit() and name else None


def incident_id(name: str, opened: datetime) -> str:
    """An opened incident's id: `<name>/<opened, UTC>`."""
    key = occurrence_key("", name, opened)  # "/<name>/<UTC>": the keys' own instant text
    return key[1:]


def step_key(program: Program, name: str, index: int, opened: datetime) -> str:
    """The idempotency key of one step of one opened incident."""
    return occurrence_key(program.playbook.id, step_action(name, index), opened)


def _is_task(s: ScheduledStep) -> bool:
    return s.step.kind != "do" or s.step.target in TASK_KINDS


def step_occurrences(program: Program, name: str, opened: datetime) -> list[NewOccurrence]:
    """The occurrences of incident `name`'s steps, opened at `opened`."""
    pb = program.playbook
    inc = pb.incidents[name]
    out = []
    for s in schedule(inc):
        task = _is_task(s)
        out.append(
            NewOccurrence(
                step_key(program, name, s.index, opened),
                step_action(name, s.index),
                None,
                "task" if task else s.step.target,
                None,
                "staff" if task else "everyone",
                s.role,
                None if task else pb.default_backend,
                opened,
                opened + s.at,
            )
        )
    return out


def task_ids(program: Program, record: IncidentRecord) -> list[str]:
    """The ids of the tasks an incident's steps open (their occurrences' keys)."""
    inc = program.playbook.incidents.get(record.incident)
    if inc is None:
        return []
    return [
        step_key(program, record.incident, s.index, record.opened_at)
        for s in schedule(inc)
        if _is_task(s)
    ]


def new_record(
    name: str, opened: datetime, actor: str, note: str = "", detected: bool = False
) -> IncidentRecord:
    """The record of an incident opened now."""
    return IncidentRecord(
        incident_id(name, opened), name, IncidentState.OPEN, opened, actor, note, detected
    )


def unknown(program: Program, name: str) -> RunError:
    """The error for an incident the playbook does not have (with "did you mean")."""
    from ..core.suggest import did_you_mean

    known = list(program.playbook.incidents)
    hint = did_you_mean(name, known)
    listed = ", ".join(known) or "none"
    return RunError(
        f"the playbook has no incident {name!r}" + (f"; {hint}" if hint else "")
        + f" (incidents: {listed})"
    )  # fmt: skip


def open_incident(
    program: Program,
    store: StateStore,
    run_id: str,
    name: str,
    now: datetime,
    actor: str,
    note: str = "",
) -> IncidentRecord:
    """Start incident `name` now: its record and its steps' occurrences, in one transaction."""
    if name not in program.playbook.incidents:
        raise unknown(program, name)
    opened = now.replace(microsecond=0)
    record = new_record(name, opened, actor, note)
    if not store.open_incident(run_id, record, step_occurrences(program, name, opened), actor):
        raise RunError(f"incident {record.id} is already open (opened this second)")
    return record


def close_incident(
    program: Program,
    store: StateStore,
    run_id: str,
    ref: str,
    now: datetime,
    actor: str,
    note: str = "",
) -> IncidentRecord:
    """Close an open incident (`ref`: its id, or its name when one of that name is open)."""
    record = find(store, run_id, ref)
    if record is None:
        open_ = store.incidents(run_id, [IncidentState.OPEN])
        listed = ", ".join(i.id for i in open_) or "none"
        raise RunError(f"no open incident {ref!r} (open: {listed})")
    done = store.close_incident(run_id, record.id, now, actor, note, task_ids(program, record))
    if done is None:
        raise RunError(f"incident {record.id} is not open")
    return done


def find(store: StateStore, run_id: str, ref: str) -> IncidentRecord | None:
    """The open incident `ref` names: its id, or the only open one of that name."""
    got = store.get_incident(run_id, ref)
    if got is not None:
        return got if got.state == IncidentState.OPEN else None
    same = [i for i in store.incidents(run_id, [IncidentState.OPEN]) if i.incident == ref]
    if len(same) > 1:
        ids = ", ".join(i.id for i in same)
        raise RunError(f"{len(same)} incidents {ref!r} are open: name one by id ({ids})")
    return same[0] if same else None


# -- dispatching a step -------------------------------------------------------------------


@dataclass(frozen=True)
class StepPlan:
    """What to do with one claimed step occurrence."""

    skip: str = ""  # why it is skipped ("" when it goes ahead)
    task: NewTask | None = None  # a staff task to open (alerts, escalations, `do: task`)
    action: Action | None = None  # a `do:` step to send through its backend


def plan_step(
    program: Program, store: StateStore, run_id: str, key: str, action: str,
    scheduled: datetime, due: datetime,
) -> StepPlan:  # fmt: skip
    """Decide a claimed incident step: skipped (closed, gone), a task, or a send."""
    parsed = parse_step(action)
    inc = program.playbook.incidents.get(parsed[0]) if parsed else None
    if parsed is None or inc is None or parsed[1] >= len(inc.steps):
        return StepPlan(skip="the playbook no longer has this incident step")
    name, index = parsed
    record = store.get_incident(run_id, incident_id(name, scheduled))
    if record is None:
        return StepPlan(skip="no such incident was opened")
    if record.state != IncidentState.OPEN:
        return StepPlan(skip=f"the incident was closed ({record.closed_at:%Y-%m-%d %H:%M})")
    s = schedule(inc)[index]
    note = f"\n{record.note}" if record.note else ""
    if _is_task(s):
        verb = {"alert": "Alert", "escalate": "Escalated"}.get(s.step.kind, "Do")
        deadline = scheduled + s.due if s.due is not None else due
        text = (s.step.text or _template_text(program, s) or inc.title) + note
        return StepPlan(task=NewTask(key, s.role, action, f"{verb}: {inc.title}", text, deadline))
    return StepPlan(action=step_as_action(program, inc, s))


def _template_text(program: Program, s: ScheduledStep) -> str:
    t = program.playbook.templates.get(s.step.template or "")
    return t.text if t is not None else ""


def step_as_action(program: Program, inc: Incident, s: ScheduledStep) -> Action:
    """A `do:` step as the action a delivery is composed from (its text or template)."""
    text = None
    if s.step.text is not None:
        span = s.step.spans.get("text") or Span(program.playbook.file, 1, 1, 1, 1)
        text = Template(f"{inc.id}.{s.index}", s.step.text, span, span.line, span.column)
    return Action(
        id=step_action(inc.id, s.index), stage=None, kind=s.step.target,
        schedule=OnEvent("incident"), owner=s.role, audience="everyone",
        backend=program.playbook.default_backend, template=s.step.template, text=text,
        quiet_hours=None, retries=3, effect=Effect(), guard=None, reward_item=None,
        reward_streak=None, reward_points=None, title=inc.title,
    )  # fmt: skip


def as_dict(record: IncidentRecord, tz: Any = None) -> dict[str, Any]:
    """An incident as plain data (instants in `tz` when given)."""

    def t(x: datetime | None) -> str | None:
        if x is None:
            return None
        return (x.astimezone(tz) if tz is not None else x).isoformat()

    return {
        "id": record.id,
        "incident": record.incident,
        "state": str(record.state),
        "opened_at": t(record.opened_at),
        "opened_by": record.opened_by,
        "detected": record.detected,
        "note": record.note or None,
        "closed_at": t(record.closed_at),
        "closed_by": record.closed_by,
        "close_note": record.close_note or None,
    }
