"""The runtime's commands as library calls: what `sop run/tick/event/tasks/status/resolve/serve` do.

`cli.py` parses options and renders; everything it needs decided is decided here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from ..core import expr as ex
from ..core.schedule import local_midnight
from ..lang.model import Target
from ..program import Lifecycle, LifecycleState, Program
from ..program import gates as G
from ..program.gates import Comparison, comparisons
from ..program.history import DAYS_IN_STAGE
from ..program.lifecycle import exits_of
from .attributes import mask, pii_values
from .codec import decode_lifecycle
from .incidents import as_dict as incident_dict
from .members import deriver, parse_event
from .observed import stored_history
from .runner import RunError, stage_clock
from .store.base import (
    ApplicationRecord,
    ApplicationState,
    EventRecord,
    GateEvaluation,
    IncidentRecord,
    IncidentState,
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
APPLICATIONS_LIMIT = 50


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
    refusals: dict[str, str] | None = None,
) -> list[bool]:
    """Store new events (deduplicated by id) and what they set off; a `new` flag per event.

    `refusals` receives, by event id, why a new event changed nothing (a redemption the balance
    or the stock cannot cover, a decision on no pending application): it is recorded, refused.
    """
    run = require_run(store, run_id)
    lc = Lifecycle.restore(program, decode_lifecycle(dict(run.lifecycle)))
    horizon = max((e.at for e in events), default=run.checked_until) + timedelta(days=1)
    stages = stage_clock(lc, max(horizon, run.checked_until + timedelta(days=1)))
    return store.ingest(run_id, events, deriver(program, stages, refusals), actor)


@dataclass(frozen=True)
class Ingestion:
    """What recording some events did: how many were new, and the refused ones with why."""

    accepted: int
    duplicates: int
    refused: Mapping[str, str] = field(default_factory=dict)  # event id -> reason
    where: Mapping[str, str] = field(default_factory=dict)  # event id -> its line/row

    @property
    def exit_code(self) -> int:
        """1 when an event was refused (recorded, but it changed nothing), else 0."""
        return 1 if self.refused else 0

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (`refused` only when an event was)."""
        out: dict[str, Any] = {"accepted": self.accepted, "duplicates": self.duplicates}
        if self.refused:
            out["refused"] = [
                {"id": k, "at": self.where.get(k), "reason": v} for k, v in self.refused.items()
            ]
        return out


def record_events(
    program: Program,
    store: StateStore,
    run_id: str,
    events: Sequence[EventRecord],
    actor: str,
    where: Mapping[str, str] | None = None,
) -> Ingestion:
    """`ingest`, summed up for the operator (`where`: each event's line or row, for refusals)."""
    refusals: dict[str, str] = {}
    flags = ingest(program, store, run_id, events, actor, refusals)
    new = sum(flags)
    return Ingestion(new, len(flags) - new, refusals, dict(where or {}))


def parse_events(
    program: Program, items: Iterable[object], received: datetime, require_id: bool = True
) -> list[EventRecord]:
    """Check events given as plain data (EventError names the first bad one's field)."""
    return [parse_event(x, program.tz, received, require_id, program.playbook) for x in items]


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
    # each exit on the recorded history: does it fire, held days, today's clauses and, when it
    # does not fire, its weak links (the clauses that fall short, and by how much)
    exits: tuple[dict[str, Any], ...] = ()

    def shortfall(self, metric: str) -> float | None:
        """How far `metric` (a metric, or a window's label `avg(x, 7d)`) is from meeting its
        comparisons (+: it needs more, -: less); None when it meets them or cannot be compared."""
        value = self.values.get(metric)
        for c in self.terms:
            if c.label == metric and c.met(value) is False and c.direction:
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
            "exits": list(self.exits),
        }


@dataclass(frozen=True)
class TargetStatus:
    """A target (`targets:`) at the last check: the value, met or not, progress, shortfall."""

    metric: str
    target: Target
    value: float | None
    day: date | None  # the day the value is of
    due: date | None  # the day it is judged on (`by`); None: the end of the run

    @property
    def met(self) -> bool | None:
        """Whether the value meets the target (None: no value yet)."""
        from ..program.targets import met

        return None if self.value is None else bool(met(self.value, self.target))

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        from ..program.targets import describe, progress, shortfall

        v = math.nan if self.value is None else self.value
        prog, short = float(progress(v, self.target)), float(shortfall(v, self.target))
        return {
            "metric": self.metric,
            "target": describe(self.target),
            "goal": self.target.value,
            "at_most": self.target.at_most,
            "due": self.due.isoformat() if self.due else None,
            "value": self.value,
            "day": self.day.isoformat() if self.day else None,
            "met": self.met,
            "progress": None if math.isnan(prog) else prog,
            "shortfall": None if math.isnan(short) else short,
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
    targets: list[TargetStatus] = field(default_factory=list)
    incidents: list[IncidentRecord] = field(default_factory=list)  # open ones
    applications: list[ApplicationRecord] = field(default_factory=list)  # pending ones

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
            "targets": [t.as_dict() for t in self.targets],
            "open_incidents": [incident_dict(i, tz) for i in self.incidents],
            "pending_applications": [application_dict(a, tz) for a in self.applications],
        }


def application_dict(a: ApplicationRecord, tz: Any = None) -> dict[str, Any]:
    """An application as plain data (instants in `tz` when given)."""

    def t(x: datetime | None) -> str | None:
        return None if x is None else (x.astimezone(tz) if tz is not None else x).isoformat()

    return {
        "member": a.member,
        "state": str(a.state),
        "applied_at": t(a.applied_at),
        "decided_at": t(a.decided_at),
        "decided_by": a.decided_by,
        "note": a.note or None,
        "task": a.task,
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
            "exit": s.exit,
        }
        for s in state.stages
    ]


def condition_names(nodes: Sequence[ex.Node | None]) -> list[str]:
    """The metrics conditions read, directly or through a window (days_in_stage aside)."""
    out: set[str] = set()
    for n in nodes:
        if n is None:
            continue
        out |= {str(x.value) for x in ex.names(n)}
        out |= {m for _, m, _ in ex.windows(n)}
    out.discard(DAYS_IN_STAGE)
    return sorted(out)


def last_closed_day(program: Program, checked_until: datetime) -> date:
    """The local day the latest daily check read (the day before its midnight)."""
    return (checked_until - timedelta(hours=12)).astimezone(program.tz).date()


def gate_statuses(
    program: Program, store: StateStore, run_id: str, state: LifecycleState, now: datetime
) -> list[GateStatus]:
    """The exits of the running stages with their latest reading: the values it read and, per
    `metric OP number` comparison, the distance (threshold minus value); per exit, on the
    recorded daily history, whether it fires, how many days it has held, and its weak links."""
    tz = program.tz
    latest: dict[str, GateEvaluation] = {}
    for e in store.gate_evaluations(run_id, limit=EVALUATIONS_READ):
        latest[e.stage] = e
    first_check = local_midnight(now.astimezone(tz).date() + timedelta(days=1), tz)
    running = [
        (s, program.playbook.stages[s.stage])
        for s in state.stages
        if s.ended is None and s.stage in program.playbook.stages
    ]
    running = [(s, st) for s, st in running if exits_of(st)]
    run = store.get_run(run_id)
    history: dict[str, list[float]] = {}
    if running and run is not None and run.checked_until > run.origin:
        nodes = [e.when.node for _, st in running for e in exits_of(st)]
        first = run.origin.astimezone(tz).date()
        day = last_closed_day(program, run.checked_until)
        history = stored_history(store, run_id, condition_names(nodes), first, day)
    out = []
    for s, stage in running:
        exits = exits_of(stage)
        ev = latest.get(s.stage)
        values = dict(ev.values) if ev else {}
        terms = tuple(c for e in exits for c in comparisons(e.when.node))
        distances = {c.label: c.distance(values.get(c.label)) for c in terms}
        unread = f"not read yet (the first check is at {first_check:%Y-%m-%d %H:%M})"
        note = ev.note if ev else unread
        views: list[dict[str, Any]] = []
        if history and run is not None:
            dis = float(
                (run.checked_until.astimezone(tz).date() - s.started.astimezone(tz).date()).days
            )
            for x in exits:
                st = G.exit_status(x, history, dis)
                row = st.as_dict()
                row["when"] = x.when.text
                row["goto"] = x.goto
                row["weak_links"] = (
                    [] if st.fires else [c.as_dict() for c in st.clauses if c.holds is not True]
                )
                views.append(row)
        out.append(
            GateStatus(
                s.stage, exits[0].when.text if len(exits) == 1 else "; ".join(
                    f"{e.id}: {e.when.text}" for e in exits),
                ev.holds if ev else None, ev.at.astimezone(tz) if ev else None, values,
                distances, note, terms, tuple(views),
            )
        )  # fmt: skip
    return out


def target_statuses(program: Program, store: StateStore, run_id: str) -> list[TargetStatus]:
    """Every target with the latest recorded value of its metric."""
    from ..program.targets import due_day, targets

    goals = targets(program.playbook)
    run = store.get_run(run_id)
    if not goals or run is None:
        return []
    latest: dict[str, tuple[date, float | None]] = {}
    for mv in store.metric_values(run_id, list(goals)):
        seen = latest.get(mv.name)
        if seen is None or mv.day > seen[0] or (mv.day == seen[0] and mv.value is not None):
            latest[mv.name] = (mv.day, mv.value)
    first = run.origin.astimezone(program.tz).date()
    out = []
    for metric, t in goals.items():
        day, value = latest.get(metric, (None, None))
        due = first + timedelta(days=due_day(t, 0)) if t.by is not None else None
        out.append(TargetStatus(metric, t, value, day, due))
    return out


def masked_tasks(
    program: Program, store: StateStore, run_id: str, tasks: list[TaskRecord]
) -> list[TaskRecord]:
    """Tasks as status and the dashboard show them: their members' PII attributes masked."""
    pb = program.playbook
    if not any(a.pii for a in pb.attributes.values()):
        return tasks
    members = store.get_members(run_id, sorted({t.member for t in tasks if t.member}))
    out = []
    for t in tasks:
        secrets = pii_values(pb, members.get(t.member or ""))
        out.append(
            replace(t, text=mask(t.text, secrets), title=mask(t.title, secrets)) if secrets else t
        )
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
        tasks=masked_tasks(program, store, run_id, store.open_tasks(run_id, TASKS_LIMIT)),
        transitions=[
            {
                "at": t.at.astimezone(tz).isoformat(),
                "stage": t.stage,
                "event": t.event,
                "exit": t.exit,
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
        targets=target_statuses(program, store, run_id),
        incidents=store.incidents(run_id, [IncidentState.OPEN]),
        applications=store.applications(run_id, [ApplicationState.PENDING], APPLICATIONS_LIMIT),
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


# -- applications, member imports --------------------------------------------------------------


def decide_application(
    program: Program,
    store: StateStore,
    run_id: str,
    member: str,
    approve: bool,
    now: datetime,
    actor: str,
    note: str = "",
) -> Ingestion:
    """A staff decision on a member's pending application, recorded as an `approve`/`reject`
    event (the deriver applies it: member.approved / member.rejected, and on approval the
    join). RunError when the member has no pending application."""
    if program.playbook.admission is None:
        raise RunError("the playbook has no `admission:`: there are no applications")
    require_run(store, run_id)
    current = store.get_application(run_id, member)
    if current is None or current.state is not ApplicationState.PENDING:
        state = "no application" if current is None else f"its application is {current.state}"
        raise RunError(f"{member!r} has no pending application ({state}; see"
                       " `sop applications list`)")  # fmt: skip
    kind = "approve" if approve else "reject"
    data: dict[str, Any] = {"by": actor}
    if note:
        data["note"] = note
    obj = {"type": kind, "member": member, "at": now.isoformat(), "data": data}
    events = parse_events(program, [obj], now, require_id=False)
    return record_events(program, store, run_id, events, actor)


@dataclass(frozen=True)
class ImportProblem:
    """One bad cell or row of an import, located (1-based line and column)."""

    line: int
    column: int
    message: str

    def text(self, file: str) -> str:
        """`file:line:column: message`."""
        return f"{file}:{self.line}:{self.column}: {self.message}"


MEMBER_ID_COLUMNS = ("member_id", "member", "id")


def read_members_csv(
    program: Program, text: str, now: datetime, source_id: str
) -> tuple[list[EventRecord], list[ImportProblem]]:
    """`sop members import`: a CSV of `member_id` and attribute columns (declared attributes,
    `source`, `referrer`) as one `update` event per row, or every bad cell located (then
    nothing is imported). Event ids are `import:<source_id>:<line>`: importing the same file
    again changes nothing. An empty cell leaves the attribute as it is."""
    import csv
    import io

    from .attributes import check_attributes
    from .errors import EventError

    pb = program.playbook
    rows = list(csv.reader(io.StringIO(text)))
    problems: list[ImportProblem] = []
    if not rows:
        return [], [ImportProblem(1, 1, "empty file: the first line names the columns")]
    header = [h.strip().lstrip("\ufeff") for h in rows[0]]
    id_col = next((i for i, h in enumerate(header) if h in MEMBER_ID_COLUMNS), None)
    if id_col is None:
        return [], [ImportProblem(1, 1, "no member_id column (the member's id on the platform)")]
    known = {*pb.attributes, "source", "referrer"}
    for i, h in enumerate(header):
        if i != id_col and h not in known:
            declared = ", ".join(pb.attributes) or "none"
            why = f"unknown attribute column {h!r} (declared: {declared}; also source, referrer)"
            problems.append(ImportProblem(1, i + 1, why))
    seen: dict[str, int] = {}
    events: list[EventRecord] = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append(ImportProblem(n, 1, f"{len(row)} cells, the header has {len(header)}"))
            continue
        member = row[id_col].strip()
        if not member:
            problems.append(ImportProblem(n, id_col + 1, "member_id is empty"))
            continue
        if member in seen:
            problems.append(ImportProblem(n, id_col + 1, f"member {member!r} is also on line"
                                          f" {seen[member]}"))  # fmt: skip
            continue
        seen[member] = n
        values = {h: row[i].strip() for i, h in enumerate(header) if i != id_col and h in known
                  and row[i].strip() != ""}  # fmt: skip
        bad = False
        for i, h in enumerate(header):
            if h not in values:
                continue
            try:
                check_attributes(pb, {h: values[h]}, "")
            except EventError as e:
                problems.append(ImportProblem(n, i + 1, f"{h}: {str(e).partition(': ')[2]}"))
                bad = True
        if bad or not values:
            continue
        obj = {
            "id": f"import:{source_id}:{n}",
            "type": "update",
            "member": member,
            "at": now.isoformat(),
            "attributes": values,
        }
        try:
            events.append(parse_event(obj, program.tz, now, True, pb))
        except EventError as e:
            problems.append(ImportProblem(n, id_col + 1, str(e)))
    return events, problems


def member_view(program: Program, store: StateStore, run_id: str, member: str) -> dict[str, Any]:
    """One member as `sop members show` prints it: PII attributes masked."""
    from .attributes import shown_attributes

    require_run(store, run_id)
    m = store.get_members(run_id, [member]).get(member)
    if m is None:
        raise RunError(f"no member {member!r} in run {run_id!r}")
    tz = program.tz
    points = sum(e.points for e in store.ledger(run_id, member))
    app = store.get_application(run_id, member)
    return {
        "member": m.id,
        "joined_at": m.joined_at.astimezone(tz).isoformat() if m.joined_at else None,
        "left_at": m.left_at.astimezone(tz).isoformat() if m.left_at else None,
        "source": m.source,
        "referrer": m.referrer,
        "team": m.team,
        "tier": m.tier,
        "points": points,
        "checkins": m.checkins,
        "messages": m.messages,
        "invites": m.invites,
        "payments": m.paid,
        "application": application_dict(app, tz) if app else None,
        "milestones": [x.removeprefix("milestone:") for x in m.marks],
        "attributes": shown_attributes(program.playbook, m),
    }
