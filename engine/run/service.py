"""The runtime's commands as library calls: what `sop run/tick/event/tasks/status/resolve/serve` do.

`cli.py` parses options and renders; everything it needs decided is decided here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from ..core.schedule import local_midnight
from ..program import Lifecycle, LifecycleState, Program
from ..program.gates import Comparison, comparisons
from .codec import decode_lifecycle
from .members import deriver, parse_event
from .runner import RunError, stage_clock
from .store.base import (
    EventRecord,
    GateEvaluation,
    OccurrenceRecord,
    OccurrenceState,
    StateStore,
    TaskRecord,
    TaskState,
)

EVALUATIONS_READ = 500  # the latest gate readings searched for each running stage's latest
# how many of each list `sop status` shows (the totals say how many there are)
NEXT_LIMIT = 10
RETRYING_LIMIT = 50
DEAD_LIMIT = 200
UNCERTAIN_LIMIT = 200
TASKS_LIMIT = 200


def require_run(store: StateStore, run_id: str) -> Any:
    """The run, or a RunError that says how to start it."""
    run = store.get_run(run_id)
    if run is None:
        raise RunError(
            f"the store {store.url} has no run {run_id!r}: start it with `sop run PLAYBOOK`"
            " (or `sop tick PLAYBOOK`) first"
        )
    return run


def ingest(
    program: Program,
    store: StateStore,
    run_id: str,
    events: Sequence[EventRecord],
    actor: str,
) -> list[bool]:
    """Store new events (deduplicated by id) and what they set off; a `new` flag per event."""
    run = require_run(store, run_id)
    lc = Lifecycle.restore(program, decode_lifecycle(dict(run.lifecycle)))
    horizon = max((e.at for e in events), default=run.checked_until) + timedelta(days=1)
    stages = stage_clock(lc, max(horizon, run.checked_until + timedelta(days=1)))
    return store.ingest(run_id, events, deriver(program, stages), actor)


def parse_events(
    program: Program, items: Iterable[object], received: datetime, require_id: bool = True
) -> list[EventRecord]:
    """Check events given as plain data (EventError names the first bad one's field)."""
    return [parse_event(x, program.tz, received, require_id) for x in items]


@dataclass(frozen=True)
class GateStatus:
    """A stage gate's latest reading: values, threshold and distance."""

    stage: str
    condition: str
    holds: bool | None
    at: datetime | None
    values: Mapping[str, float | None]
    distances: Mapping[str, float | None]  # threshold minus value, per compared metric
    note: str = ""
    terms: tuple[Comparison, ...] = ()  # the condition's comparisons (not in the JSON)

    def shortfall(self, metric: str) -> float | None:
        """How far `metric` is from meeting its comparisons (+: it needs more, -: less); None
        when it meets them or cannot be compared."""
        value = self.values.get(metric)
        for c in self.terms:
            if c.metric == metric and c.met(value) is False and c.direction:
                return c.distance(value)
        return None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "stage": self.stage,
            "condition": self.condition,
            "holds": self.holds,
            "at": self.at.isoformat() if self.at else None,
            "values": dict(self.values),
            "distances": dict(self.distances),
            "note": self.note or None,
        }


@dataclass(frozen=True)
class Status:
    """`sop status`: where a run stands."""

    run: str
    playbook: str
    origin: datetime
    now: datetime
    stages: list[dict[str, Any]]
    finished: datetime | None
    gates: list[GateStatus]
    counts: Mapping[str, int]
    next: list[OccurrenceRecord]
    failures: list[OccurrenceRecord]  # retrying
    dead: list[OccurrenceRecord]
    uncertain: list[OccurrenceRecord]
    tasks: list[TaskRecord]  # open ones, earliest due first
    transitions: list[dict[str, Any]] = field(default_factory=list)
    # how many each list holds in all (they show the first few): retrying, dead_letters,
    # uncertain, open_tasks; a list missing here is whole
    totals: Mapping[str, int] = field(default_factory=dict)
    overdue: int = 0  # open tasks due before `now`

    @property
    def attention(self) -> bool:
        """Whether something needs an operator: dead letters or uncertain deliveries."""
        return bool(self.dead or self.uncertain)

    def total(self, name: str) -> int:
        """How many the list `name` (a JSON key: retrying, dead_letters ...) holds in all."""
        shown: dict[str, Sequence[object]] = {
            "retrying": self.failures,
            "dead_letters": self.dead,
            "uncertain": self.uncertain,
            "open_tasks": self.tasks,
        }
        return self.totals.get(name, len(shown[name]))

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `--format json` (instants in the playbook's zone); each cut list
        with `<name>_total`, how many it holds in all."""
        tz = self.now.tzinfo
        return {
            "run": self.run,
            "playbook": self.playbook,
            "origin": self.origin.isoformat(),
            "now": self.now.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None,
            "stages": self.stages,
            "gates": [g.as_dict() for g in self.gates],
            "occurrences": dict(self.counts),
            "next": [occurrence_dict(o, tz) for o in self.next],
            "retrying": [occurrence_dict(o, tz) for o in self.failures],
            "retrying_total": self.total("retrying"),
            "dead_letters": [occurrence_dict(o, tz) for o in self.dead],
            "dead_letters_total": self.total("dead_letters"),
            "uncertain": [occurrence_dict(o, tz) for o in self.uncertain],
            "uncertain_total": self.total("uncertain"),
            "open_tasks": [task_dict(t, tz) for t in self.tasks],
            "open_tasks_total": self.total("open_tasks"),
            "overdue_tasks": self.overdue,
            "transitions": self.transitions,
        }


def occurrence_dict(o: OccurrenceRecord, tz: Any = None) -> dict[str, Any]:
    """An occurrence as plain data (instants in `tz`, the playbook's zone, when given)."""
    if tz is not None:
        o = replace(
            o,
            scheduled_at=o.scheduled_at.astimezone(tz),
            due_at=o.due_at.astimezone(tz),
            next_at=o.next_at.astimezone(tz),
        )
    return {
        "key": o.key,
        "action": o.action,
        "stage": o.stage,
        "member": o.member,
        "backend": o.backend,
        "scheduled_at": o.scheduled_at.isoformat(),
        "due_at": o.due_at.isoformat(),
        "state": str(o.state),
        "attempts": o.attempts,
        "next_at": o.next_at.isoformat(),
        "reason": o.reason or None,
    }


def task_dict(t: TaskRecord, tz: Any = None) -> dict[str, Any]:
    """A staff task as plain data (instants in `tz`, the playbook's zone, when given)."""
    if tz is not None:
        t = replace(
            t,
            due_at=t.due_at.astimezone(tz),
            done_at=t.done_at.astimezone(tz) if t.done_at else None,
        )
    return {
        "id": t.id,
        "role": t.role,
        "action": t.action,
        "title": t.title,
        "text": t.text,
        "due_at": t.due_at.isoformat(),
        "member": t.member,
        "state": str(t.state),
        "done_at": t.done_at.isoformat() if t.done_at else None,
        "done_by": t.done_by,
        "overdue": t.escalated_at is not None and t.state == TaskState.OPEN,
    }


def stage_rows(program: Program, state: LifecycleState, now: datetime) -> list[dict[str, Any]]:
    """Every stage the run entered, as `sop status` and the dashboard show it: title, start,
    end, outcome, deadline (instants in the playbook's zone) and days in it at `now`."""
    tz = program.tz
    stages = program.playbook.stages
    return [
        {
            "stage": s.stage,
            "title": stages[s.stage].title if s.stage in stages else s.stage,
            "started": s.started.astimezone(tz).isoformat(),
            "ended": s.ended.astimezone(tz).isoformat() if s.ended else None,
            "outcome": s.outcome,
            "deadline": s.deadline.astimezone(tz).isoformat() if s.deadline else None,
            "days": (now - s.started).days if s.ended is None else (s.ended - s.started).days,
        }
        for s in state.stages
    ]


def gate_statuses(
    program: Program, store: StateStore, run_id: str, state: LifecycleState, now: datetime
) -> list[GateStatus]:
    """The gates of the running stages with their latest reading: the values it read and, per
    `metric OP number` comparison, the distance (threshold minus value). One bounded read."""
    tz = program.tz
    latest: dict[str, GateEvaluation] = {}
    for e in store.gate_evaluations(run_id, limit=EVALUATIONS_READ):
        latest[e.stage] = e
    first_check = local_midnight(now.astimezone(tz).date() + timedelta(days=1), tz)
    out = []
    for s in state.stages:
        stage = program.playbook.stages.get(s.stage)
        if s.ended is not None or stage is None or stage.gate is None:
            continue
        ev = latest.get(s.stage)
        values = dict(ev.values) if ev else {}
        terms = tuple(comparisons(stage.gate.node))
        distances = {c.metric: c.distance(values.get(c.metric)) for c in terms}
        unread = f"not read yet (the first check is at {first_check:%Y-%m-%d %H:%M})"
        note = ev.note if ev else unread
        out.append(
            GateStatus(
                s.stage, stage.gate.text, ev.holds if ev else None,
                ev.at.astimezone(tz) if ev else None, values, distances, note, terms,
            )
        )  # fmt: skip
    return out


def status(program: Program, store: StateStore, run_id: str, now: datetime) -> Status:
    """Where the run stands at `now`: bounded reads only (counts by state, the first few of each
    list with its total), so it costs the same with a million deliveries as with ten."""
    run = require_run(store, run_id)
    state = decode_lifecycle(dict(run.lifecycle))
    tz = program.tz
    retrying = store.occurrences_in_state(run_id, OccurrenceState.RETRY, RETRYING_LIMIT)
    dead = store.occurrences_in_state(run_id, OccurrenceState.DEAD, DEAD_LIMIT)
    uncertain = store.occurrences_in_state(run_id, OccurrenceState.UNCERTAIN, UNCERTAIN_LIMIT)
    open_counts = store.open_task_counts(run_id)
    counts = {str(k): v for k, v in sorted(store.count_occurrences(run_id).items())}
    return Status(
        run=run.id,
        playbook=run.playbook,
        origin=run.origin.astimezone(tz),
        now=now.astimezone(tz),
        stages=stage_rows(program, state, now),
        finished=state.finished.astimezone(tz) if state.finished else None,
        gates=gate_statuses(program, store, run_id, state, now),
        counts=counts,
        next=store.occurrences(run_id, [OccurrenceState.PENDING], since=now, limit=NEXT_LIMIT),
        failures=retrying.items,
        dead=dead.items,
        uncertain=uncertain.items,
        tasks=store.open_tasks(run_id, TASKS_LIMIT),
        transitions=[
            {
                "at": t.at.astimezone(tz).isoformat(),
                "stage": t.stage,
                "event": t.event,
                "detail": t.detail or None,
                "evidence": dict(t.evidence),
            }
            for t in store.transitions(run_id)[-20:]
        ],
        totals={
            "retrying": retrying.total or 0,
            "dead_letters": dead.total or 0,
            "uncertain": uncertain.total or 0,
            "open_tasks": sum(open_counts.values()),
        },
        overdue=store.overdue_task_count(run_id, now),
    )


def open_runner(
    program: Program,
    store: StateStore,
    clock: Any,
    *,
    routes: Sequence[str] = (),
    metric_sources: Sequence[str] = (),
    options: Any = None,
    env: Mapping[str, str] | None = None,
    root: str | None = None,
) -> Any:
    """A Runner with the playbook's backends (after `--backend` routes) and metric sources.

    Raises ValueError (BackendError, a bad source) with a message for the operator.
    """
    import os

    from .backends import build_backends, configs_for, parse_route
    from .runner import Runner
    from .sources import open_source

    env = os.environ if env is None else env
    parsed = [parse_route(r) for r in routes]
    configs = configs_for(program.playbook.backends, parsed, root=root)
    backends = build_backends(configs, env)
    sources = [open_source(s, env) for s in metric_sources]
    return Runner(program, store, backends, clock, sources, options)


def close_runner(runner: Any) -> None:
    """Close a runner's backends and store."""
    from .backends import close_all

    try:
        close_all(runner.backends)
    finally:
        runner.store.close()


@dataclass(frozen=True)
class TestSend:
    """What `sop send-test` sent and how the platform answered."""

    backend: str
    delivery: Any  # ports.Delivery
    result: Any  # ports.SendResult

    @property
    def ok(self) -> bool:
        """Whether the platform accepted it."""
        return str(self.result.status) == "ok"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (the delivery as a backend's record, and the result)."""
        d = self.delivery
        return {
            "backend": self.backend,
            "key": d.key,
            "action": d.action,
            "member": d.member,
            "text": d.text,
            "status": str(self.result.status),
            "detail": self.result.detail or None,
            "retry_after": self.result.retry_after,
            "remote_id": self.result.remote_id,
        }


def send_test(
    program: Program,
    action_id: str,
    backends: Mapping[str, Any],
    *,
    backend: str | None = None,
    member: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    now: datetime,
) -> TestSend:
    """Render one action (for `member`, with `attributes`) and send it once through a backend.

    The key is `send-test/...`, never a real occurrence's, and nothing is stored. ValueError
    (with "did you mean") for an unknown action or backend; RenderError when the text fails.
    """
    from ..core.suggest import did_you_mean
    from ..program.occurrence import occurrence_key
    from .delivery import compose

    pb = program.playbook
    a = pb.actions.get(action_id)
    if a is None:
        hint = did_you_mean(action_id, list(pb.actions))
        raise ValueError(
            f"the playbook has no action {action_id!r}" + (f"; {hint}" if hint else "")
        )
    name = backend or a.backend
    if name is None or name not in backends:
        hint = did_you_mean(name or "", list(backends))
        raise ValueError(
            f"no backend {name!r} to send through"
            + (f"; {hint}" if hint else "")
            + f" (the playbook's: {', '.join(sorted(backends))})"
        )
    at = now.astimezone(program.tz)
    d = compose(
        pb, a, key="send-test/" + occurrence_key(pb.id, a.id, at, member), run="send-test",
        stage=a.stage, kind=a.kind, audience=a.audience, member=member, owner=a.owner,
        scheduled_at=at, due_at=at, attempt=1, attributes=dict(attributes or {}),
    )  # fmt: skip
    return TestSend(name, d, backends[name].send(d))
