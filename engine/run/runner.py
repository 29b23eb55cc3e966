"""The runner: durable execution of a compiled Program against a state store and backends.

One `tick()` does, at the clock's instant: the daily checks (gates on metrics counted from
events and read from metric sources, deadline policies: the shared `Lifecycle`), the day's
scheduled firings inserted with their keys (the Program's `due`, as `sop plan` lists them),
silence and anniversary triggers (the Program's event rules), then claims and dispatches what
is due in batches under a lease and a fencing token, and records the outcomes. The contract it
keeps is docs/delivery.md's. `run()` repeats ticks until `until`, sleeping on the clock.
"""

from __future__ import annotations

import enum
import math
import os
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from ..core.schedule import cron_between, local_midnight
from ..lang.model import Action, OnEvent, Stage
from ..lang.semantics import guard_chain
from ..lang.templates import RenderError
from ..program import Lifecycle, Program
from ..program import gates as G
from ..program.lifecycle import StageState, StageWindow
from .codec import decode_lifecycle, encode_lifecycle
from .delivery import compose
from .members import StageClock, derived_occurrences, fire, next_derived, tier_changes
from .observed import as_evidence, built_in_values
from .ports import Backend, Clock, Delivery, MetricSource, MetricSourceError, SendResult, SendStatus
from .store.base import (
    GateEvaluation,
    MemberRecord,
    MetricValue,
    NewOccurrence,
    NewTask,
    OccurrenceRecord,
    OccurrenceState,
    Outcome,
    RunRecord,
    StateStore,
    TransitionRecord,
)

DAY = timedelta(days=1)
EPSILON = timedelta(microseconds=1)  # [t0, now + EPSILON) includes what is due at `now`
CONFIRMATIONS_PER_TICK = 200  # platform sends asked about per tick (each is one API call)


class Coalesce(enum.StrEnum):
    """What to do with scheduled firings missed by more than the grace window (a stopped runner)."""

    LATEST = "latest"  # send the latest missed firing of each action late, skip the others
    ALL = "all"  # send every missed firing late
    SKIP = "skip"  # send none of them


@dataclass(frozen=True)
class RunOptions:
    """How a runner runs: misfire policy, batch sizes, lease, retries, who it is."""

    run_id: str | None = None  # default: the playbook id
    start: date | None = None  # a new run's first day (default: community.start, else today)
    include_optional: tuple[str, ...] = ()
    grace: timedelta = timedelta(hours=6)  # a firing later than this is missed (see Coalesce)
    coalesce: Coalesce = Coalesce.LATEST
    batch: int = 200  # occurrences claimed and recorded per transaction
    lease: timedelta = timedelta(minutes=5)
    backoff: timedelta = timedelta(seconds=30)  # the first retry's delay; doubles per attempt
    max_backoff: timedelta = timedelta(hours=1)
    task_grace: timedelta = timedelta(hours=2)
    confirm_poll: timedelta = timedelta(
        minutes=5
    )  # how often to ask about awaited sends  # a staff task is overdue this long after its time
    poll: timedelta = timedelta(seconds=1)  # a real clock's longest sleep (other processes write)
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    seed: int | None = None  # jitter's random seed (tests)


@dataclass
class TickReport:
    """What one tick did."""

    at: datetime
    transitions: list[TransitionRecord] = field(default_factory=list)
    inserted: int = 0
    skipped: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    uncertain: int = 0
    resent: int = 0
    stale: int = 0
    escalated: int = 0
    deferred: int = 0
    confirmed: int = 0  # sends a staff member confirmed on the platform
    source_errors: list[str] = field(default_factory=list)
    next_wake: datetime | None = None

    def add(self, other: TickReport) -> None:
        """Sum another tick's counts into this one."""
        for name in ("inserted", "skipped", "sent", "retried", "dead", "uncertain", "resent",
                     "stale", "escalated", "deferred", "confirmed"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.transitions += other.transitions
        self.source_errors += [e for e in other.source_errors if e not in self.source_errors]
        self.at = other.at
        self.next_wake = other.next_wake


class RunError(Exception):
    """The run cannot go on as asked (said to the operator)."""


def stage_clock(lc: Lifecycle, until: datetime) -> StageClock:
    """The run's stage windows as a `StageClock` (which stages run at an instant)."""
    return StageClock(lc.origin, [(w.stage, w.start, w.end) for w in lc.windows(until)])


class Runner:
    """Runs one playbook in one store (see the module docstring)."""

    def __init__(
        self,
        program: Program,
        store: StateStore,
        backends: Mapping[str, Backend],
        clock: Clock,
        sources: Sequence[MetricSource] = (),
        options: RunOptions | None = None,
        lease_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.program = program
        # Leases measure whether a runner process is alive: wall-clock time, even when the
        # schedule runs on a virtual clock (two virtual clocks on one store disagree by days).
        self.lease_clock = lease_clock or _wall
        self.store = store
        self.backends = dict(backends)
        self.clock = clock
        self.sources = list(sources)
        self.options = options or RunOptions()
        self.run_id = self.options.run_id or program.playbook.id
        self.tz = program.tz
        self._rng = random.Random(self.options.seed)
        self._last_values: dict[str, float] = {}
        self._windows: list[StageWindow] = []
        self._polled: dict[str, datetime] = {}
        self._batch_stages: dict[str, StageState] | None = (
            None  # active stages, per batch  # task id -> when its platform was last asked
        )

    # -- the run record --------------------------------------------------------------------

    def origin_for(self, now: datetime) -> datetime:
        """Where a new run starts: its start day's local midnight."""
        from ..program import start_date

        pb = self.program.playbook
        start = self.options.start
        if start is None and not pb.community.start:
            start = now.astimezone(self.tz).date()
        return local_midnight(start_date(pb, start), self.tz)

    def ensure_run(self) -> RunRecord:
        """The run in the store, created (its starting stages entered) when it is new."""
        run = self.store.get_run(self.run_id)
        if run is not None:
            if run.playbook != self.program.playbook.id:
                raise RunError(
                    f"the store's run {self.run_id!r} runs playbook {run.playbook!r}, not"
                    f" {self.program.playbook.id!r}: use another --state or run id"
                )
            return run
        origin = self.origin_for(self.clock.now())
        lc = Lifecycle.start(self.program, origin, self.options.include_optional)
        pb = self.program.playbook
        run = RunRecord(
            self.run_id, pb.id, pb.version, origin, encode_lifecycle(lc.state()), origin,
            origin, origin,
        )  # fmt: skip
        if self.store.create_run(run):
            # the starting stages were entered: on the record like every later transition
            stored = self.store.get_run(self.run_id)
            assert stored is not None
            started = [TransitionRecord(t.at, t.stage, t.event, t.detail, t.role)
                       for t in lc.transitions]  # fmt: skip
            self.store.save_run(stored, started)
        created = self.store.get_run(self.run_id)
        assert created is not None
        return created

    def lifecycle(self, run: RunRecord) -> Lifecycle:
        """The run's lifecycle, restored (no stage entered again)."""
        return Lifecycle.restore(self.program, decode_lifecycle(dict(run.lifecycle)))

    # -- one tick --------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Do everything due at the clock's instant; what was done."""
        now = self.clock.now()
        report = TickReport(now)
        self._recover(now, report)
        # what was already due goes out first: the daily check at midnight (metrics over every
        # member) must not hold up a welcome that was due before it
        self._dispatch(now, report)
        run = self._advance(now, report)
        self._dispatch(now, report)
        overdue = now - self.options.task_grace
        for t in self.store.escalate_tasks(self.run_id, overdue, now, self.options.worker):
            report.escalated += 1
            self.store.audit(
                self.run_id, self.options.worker, "task.escalated", t.id,
                {"role": t.role, "due": t.due_at.isoformat()},
            )  # fmt: skip
        self._confirmations(now, report)
        report.next_wake = self.next_wake(run, now)
        return report

    def _confirmations(self, now: datetime, report: TickReport) -> None:
        """Ask the platform about sends awaiting a staff member's confirmation (polled)."""
        wall = self.lease_clock()
        for t in self.store.awaiting_confirmation(self.run_id, CONFIRMATIONS_PER_TICK):
            if not t.remote_id or not t.backend:
                continue
            backend = self.backends.get(t.backend)
            ask = getattr(backend, "confirmation", None)
            last = self._polled.get(t.id)
            if ask is None or (last is not None and wall - last < self.options.confirm_poll):
                continue
            self._polled[t.id] = wall
            try:
                confirmed = ask(t.remote_id)
            except Exception:  # the platform could not say: asked again at the next poll
                confirmed = None
            if confirmed:
                actor = f"platform:{t.backend}"
                if self.store.complete_task(self.run_id, t.id, now, actor):
                    report.confirmed += 1
                self._polled.pop(t.id, None)

    def _advance(self, now: datetime, report: TickReport) -> RunRecord:
        """Daily checks, scheduled firings and derived triggers up to `now`, saved atomically."""
        for _ in range(100):  # another runner saved first: read its state and redo
            run = self.ensure_run()
            lc = self.lifecycle(run)
            transitions: list[TransitionRecord] = []
            evaluations: list[GateEvaluation] = []
            metrics: list[MetricValue] = []
            items: list[NewOccurrence] = []  # tier changes, scheduled firings, derived events
            tiered: dict[str, MemberRecord] = {}  # members whose tier moved
            checked = run.checked_until
            m = self._next_midnight(checked)
            while m <= now and not lc.finished:
                self._daily_check(
                    run, lc, m, transitions, evaluations, metrics, report, tiered, items
                )
                checked = m
                m = self._next_midnight(m)
            if lc.finished and checked < now:
                checked = max(checked, min(now, self._next_midnight(checked)))
            horizon = self._next_midnight(now)
            windows = lc.windows(horizon)
            self._windows = windows
            # inserted once due, not ahead: a firing missed while no runner ran is known as
            # missed when it is inserted, and the coalesce policy decides it there
            scheduled_until = run.scheduled_until
            due_now = now + EPSILON
            if scheduled_until < due_now:
                items += self._scheduled(windows, scheduled_until, due_now, now, report)
                scheduled_until = due_now
            derived_until = run.derived_until
            if derived_until < now:
                stages = stage_clock(lc, horizon)
                items += derived_occurrences(
                    self.program, stages, self.store, self.run_id, derived_until, now
                )
                derived_until = now
            saved = self.store.save_run(
                replace(
                    run,
                    lifecycle=encode_lifecycle(lc.state()),
                    checked_until=checked,
                    scheduled_until=scheduled_until,
                    derived_until=derived_until,
                ),
                transitions,
                evaluations,
                metrics,
                items,
            )
            if saved is not None:
                # after the run is saved: a redo (another runner saved first) finds them again,
                # and the tier-change occurrences already stored keep their keys
                if tiered:
                    self.store.put_members(self.run_id, list(tiered.values()))
                report.transitions += transitions
                report.inserted += len(items)
                return saved
        raise RunError("the run's state keeps changing under this runner (100 attempts)")

    def _next_midnight(self, t: datetime) -> datetime:
        d = t.astimezone(self.tz).date() + DAY
        m = local_midnight(d, self.tz)
        while m <= t:  # a day of 25 hours, or t just before a midnight
            d += DAY
            m = local_midnight(d, self.tz)
        return m

    def _daily_check(
        self,
        run: RunRecord,
        lc: Lifecycle,
        midnight: datetime,
        transitions: list[TransitionRecord],
        evaluations: list[GateEvaluation],
        metrics: list[MetricValue],
        report: TickReport,
        tiered: dict[str, MemberRecord],
        occurrences: list[NewOccurrence],
    ) -> None:
        """The check at local midnight `midnight`: the day before closed; gates read it."""
        day = (midnight - timedelta(hours=12)).astimezone(self.tz).date()
        values = self.day_values(run, day, midnight, report)
        for name, v in values.items():
            metrics.append(
                MetricValue(
                    name,
                    day,
                    None if math.isnan(v) else v,
                    "events" if name in self._built_in else "sources",
                )
            )
        self._last_values = values
        read: dict[str, dict[str, float]] = {}
        notes: dict[str, str] = {}

        def stage_values(stage: Stage, st: StageState, now: datetime) -> dict[str, float]:
            v = dict(values)
            v["days_in_stage"] = float(self._days_in_stage(st.started, now))
            read[stage.id] = v
            return v

        oracle = G.metric_gate(stage_values, notes=notes)

        def gate(stage: Stage, st: StageState, now: datetime) -> bool:
            holds = oracle(stage, st, now)
            if stage.gate is not None and stage.id in read:
                evaluations.append(
                    GateEvaluation(
                        stage.id, now, holds, self._gate_evidence(stage, read[stage.id]),
                        notes.get(stage.id, ""),
                    )
                )  # fmt: skip
            return holds

        self._tier_review(run, lc, day, midnight, tiered, occurrences)
        before = len(lc.transitions)
        lc.step(midnight, gate)
        for t in lc.transitions[before:]:
            evidence = self._gate_evidence(self.program.playbook.stages[t.stage], read.get(t.stage))
            transitions.append(TransitionRecord(t.at, t.stage, t.event, t.detail, t.role, evidence))

    @property
    def _built_in(self) -> frozenset[str]:
        from ..program.metrics import DEFINITIONS

        return frozenset(DEFINITIONS)

    def _days_in_stage(self, started: datetime, now: datetime) -> int:
        return (now.astimezone(self.tz).date() - started.astimezone(self.tz).date()).days

    def _tier_review(
        self,
        run: RunRecord,
        lc: Lifecycle,
        day: date,
        midnight: datetime,
        tiered: dict[str, MemberRecord],
        occurrences: list[NewOccurrence],
    ) -> None:
        """Tier moves at this check (daily silence demotion; the review on its cron's days)."""
        tiers = self.program.playbook.tiers
        if tiers is None:
            return
        review_day = bool(tiers.review_cron) and any(
            True
            for _ in cron_between(
                tiers.review_cron or "", local_midnight(day, self.tz), midnight, self.tz
            )
        )
        members = [
            tiered.get(m.id, m)
            for m in self.store.iter_members(self.run_id)
            if m.joined_at is not None and m.joined_at < midnight and m.left_at is None
        ]
        stages = stage_clock(lc, midnight + DAY)
        for m in tier_changes(self.program, members, day, review_day):
            tiered[m.id] = m
            occurrences += fire(
                self.program, stages, "member.tier_changed", m.id, midnight, tier=m.tier
            )

    def _gate_evidence(
        self, stage: Stage, values: Mapping[str, float] | None
    ) -> dict[str, float | None]:
        if values is None or stage.gate is None or stage.gate.node is None:
            return {}
        from ..core import expr as ex

        names = {str(n.value) for n in ex.names(stage.gate.node)}
        return as_evidence({k: v for k, v in values.items() if k in names})

    def day_values(
        self, run: RunRecord, day: date, at: datetime, report: TickReport | None = None
    ) -> dict[str, float]:
        """Every metric of local day `day` as known at `at` (NaN: unknown), custom ones too."""
        values = built_in_values(self.program, self.store, self.run_id, run.origin, day)
        local = at.astimezone(self.tz)
        for name in self.program.playbook.metrics:
            values.setdefault(name, math.nan)
        for source in self.sources:
            try:
                got = source.read(local)
            except MetricSourceError as e:
                if report is not None:
                    report.source_errors.append(f"{source.name}: {e}")
                self.store.audit(self.run_id, self.options.worker, "source.failed", source.name,
                                 {"error": str(e)})  # fmt: skip
                continue
            for name, v in got.items():
                if name in self.program.playbook.metrics or name in values:
                    values[name] = float(v)
        values["days_in_stage"] = math.nan  # per stage: set where a gate or guard reads it
        return values

    def _scheduled(
        self,
        windows: Sequence[object],
        t0: datetime,
        t1: datetime,
        now: datetime,
        report: TickReport,
    ) -> list[NewOccurrence]:
        """The scheduled firings going out in [t0, t1), missed ones per the coalesce policy."""
        due = self.program.due(windows, t0, t1)  # type: ignore[arg-type]
        cutoff = now - self.options.grace
        missed = [o for o in due if o.at < cutoff]
        keep_latest: set[str] = set()
        if self.options.coalesce is Coalesce.LATEST:
            latest: dict[str, str] = {}
            for o in missed:
                latest[o.action] = o.key  # `due` is sorted: the last one wins
            keep_latest = set(latest.values())
        out = []
        for o in due:
            state, reason = OccurrenceState.PENDING, o.reason
            if o.at < cutoff:
                late = f"missed: due {o.at.isoformat()}, more than {_span(self.options.grace)} ago"
                if self.options.coalesce is Coalesce.SKIP or (
                    self.options.coalesce is Coalesce.LATEST and o.key not in keep_latest
                ):
                    state, reason = (
                        OccurrenceState.SKIPPED,
                        f"{late} (coalesce: {self.options.coalesce})",
                    )
                    report.skipped += 1
                else:
                    reason = f"{late}; sent late (coalesce: {self.options.coalesce})"
            out.append(
                NewOccurrence(
                    o.key, o.action, o.stage, o.kind, o.member, o.audience, o.owner, o.backend,
                    o.scheduled, o.at, state, reason,
                )
            )  # fmt: skip
        return out

    # -- recovery and dispatch -------------------------------------------------------------

    def _recover(self, now: datetime, report: TickReport) -> None:
        """Claims whose runner died: resent at once on idempotent backends, else uncertain.

        One store transaction decides them all, so a runner killed while recovering leaves
        nothing half done (the next one finds the rest still expired).
        """
        resend = [n for n, b in self.backends.items() if b.capabilities.idempotent]
        for o in self.store.expire_leases(self.run_id, self.lease_clock(), resend):
            if o.state == OccurrenceState.PENDING:
                report.resent += 1
            else:
                report.uncertain += 1

    def _dispatch(self, now: datetime, report: TickReport) -> None:
        """Claim, send and record everything due now, a batch at a time."""
        lease = self.lease_clock() + self.options.lease
        while True:
            claimed = self.store.claim(
                self.run_id, now, self.options.batch, lease, self.options.worker
            )
            if not claimed:
                return
            outcomes = self._send_all(claimed, now, report)
            stale = self.store.record(self.run_id, outcomes, self.options.worker)
            report.stale += len(stale)
            if len(claimed) < self.options.batch:
                return

    def _send_all(
        self, claimed: list[OccurrenceRecord], now: datetime, report: TickReport
    ) -> list[Outcome]:
        pb = self.program.playbook
        outcomes: list[Outcome] = []
        granted: dict[str, int] = {}
        self._batch_stages = None
        members = self.store.get_members(
            self.run_id, sorted({o.member for o in claimed if o.member})
        )
        for i, o in enumerate(claimed):
            a = pb.actions.get(o.action)
            if a is None:
                outcomes.append(self._done(o, OccurrenceState.SKIPPED, now,
                                           "the playbook no longer has this action"))  # fmt: skip
                report.skipped += 1
                continue
            why_not = self._why_not(o, a, members, now)
            if why_not:
                outcomes.append(self._done(o, OccurrenceState.SKIPPED, now, why_not))
                report.skipped += 1
                continue
            backend = self.backends.get(o.backend or "")
            if backend is None:
                outcomes.append(self._done(o, OccurrenceState.DEAD, now,
                                           f"no backend {o.backend!r} is configured"))  # fmt: skip
                report.dead += 1
                continue
            member = members.get(o.member or "")
            try:
                delivery = compose(
                    pb, a, key=o.key, run=self.run_id, stage=o.stage, kind=o.kind,
                    audience=o.audience, member=o.member, owner=o.owner,
                    scheduled_at=o.scheduled_at.astimezone(self.tz),
                    due_at=o.due_at.astimezone(self.tz), attempt=o.attempts + 1,
                    attributes=dict(getattr(member, "attributes", {}) or {}),
                )  # fmt: skip
            except RenderError as e:
                report.dead += 1
                outcomes.append(self._done(o, OccurrenceState.DEAD, now,
                                           f"the text cannot be rendered: {e}"))  # fmt: skip
                continue
            over = self._over_quota(o, backend, delivery, now)
            if over:
                outcomes.append(self._done(o, OccurrenceState.SKIPPED, now, over))
                report.skipped += 1
                continue
            rate = backend.capabilities.rate_per_minute
            if rate:
                name = o.backend or ""
                # a long text may go out as several platform messages: each takes a token
                cost = max(1, int(getattr(backend, "cost", lambda d: 1)(delivery)))
                if granted.get(name, 0) < cost:
                    # tokens for what is left of this batch on this backend, no more: a token
                    # taken and not used is a message the platform would have accepted
                    later = sum(1 for x in claimed[i + 1 :] if x.backend == o.backend)
                    need = cost - granted.get(name, 0)
                    got, wait = self.store.take_tokens(
                        f"{self.run_id}/{name}", now, rate, need + later, at_least=need
                    )
                    granted[name] = granted.get(name, 0) + got
                    if granted[name] < cost:
                        outcomes.append(
                            Outcome(o.key, o.fence, OccurrenceState.RETRY, now,
                                    f"deferred: {name} accepts {rate} a minute",
                                    now + timedelta(seconds=max(wait, 1.0)), attempted=False)
                        )  # fmt: skip
                        report.deferred += 1
                        continue
                granted[name] -= cost
            outcome = self._send(o, a, backend, delivery, now, report)
            if backend.capabilities.idempotent:
                outcomes.append(outcome)
            else:
                # recorded at once: a crash then leaves only the send in flight uncertain, not
                # the rest of the batch (one commit a send, small next to a platform's round trip)
                report.stale += len(self.store.record(self.run_id, [outcome], self.options.worker))
        return outcomes

    def _why_not(
        self, o: OccurrenceRecord, a: Action, members: Mapping[str, object], now: datetime
    ) -> str:
        """Why an occurrence must not go out now ("" when it may)."""
        if o.member:
            m = members.get(o.member)
            left = getattr(m, "left_at", None)
            if left is not None and left <= now:
                return "the member has left"
            # a member's occurrence is late news after its window (`within:`, else the grace)
            window = _within(a) or self.options.grace
            if now > o.due_at + window:
                return f"missed: due {o.due_at.isoformat()}, window {_span(window)}"
        for x in guard_chain(self.program.playbook.actions, a):
            g = x.guard
            assert g is not None and g.node is not None
            env = dict(self._guard_values(now))
            st = self._stage_state(x.stage)
            env["days_in_stage"] = (
                float(self._days_in_stage(st.started, now)) if st is not None else math.nan
            )
            verdict = G.judge(g.node, env)
            if not verdict.holds:
                note = f" ({verdict.note})" if verdict.note else ""
                return f"if: {g.text} does not hold{note}"
        return ""

    def _guard_values(self, now: datetime) -> dict[str, float]:
        """What an `if:` reads: the metrics of the last closed day (as the simulator's guards)."""
        if not self._last_values:  # a runner (re)started today: count the last closed day again
            run = self.store.get_run(self.run_id)
            if run is not None:
                day = (run.checked_until - timedelta(hours=12)).astimezone(self.tz).date()
                self._last_values = self.day_values(run, day, run.checked_until)
        names = self.program.playbook.metric_units()
        return {**dict.fromkeys(names, math.nan), **self._last_values}

    def _stage_state(self, stage: str | None) -> StageState | None:
        if stage is None:
            return None
        if self._batch_stages is None:  # read once a batch, for the guards that need it
            run = self.store.get_run(self.run_id)
            active = self.lifecycle(run).active if run is not None else []
            self._batch_stages = {s.stage: s for s in active}
        return self._batch_stages.get(stage)

    def _done(
        self, o: OccurrenceRecord, state: OccurrenceState, now: datetime, detail: str
    ) -> Outcome:
        return Outcome(o.key, o.fence, state, now, detail)

    def _over_quota(
        self, o: OccurrenceRecord, backend: Backend, delivery: Delivery, now: datetime
    ) -> str:
        """Why the platform would drop this for an exhausted allowance ("" when it would not)."""
        quotas = getattr(backend, "quotas", None)
        if quotas is None:
            return ""
        for q in quotas(delivery, now):
            name = f"{self.run_id}/{o.backend}/{q.target}/{q.period}"
            if not self.store.use_quota(name, q.limit, now):
                return (
                    f"over the platform's allowance: {q.limit} sends to {q.target} in {q.period}"
                    " (it would drop this one)"
                )
        return ""

    def _send(
        self,
        o: OccurrenceRecord,
        a: Action,
        backend: Backend,
        delivery: Delivery,
        now: datetime,
        report: TickReport,
    ) -> Outcome:
        try:
            result = backend.send(delivery)
        except Exception as e:  # a backend's bug must not stop the run: retried, and said
            result = SendResult.retry(f"the backend raised {type(e).__name__}")
        return self._outcome(o, a, backend, delivery, result, now, report)

    def _outcome(
        self,
        o: OccurrenceRecord,
        a: Action,
        backend: Backend,
        d: Delivery,
        result: SendResult,
        now: datetime,
        report: TickReport,
    ) -> Outcome:
        if result.status is SendStatus.OK:
            report.sent += 1
            task = None
            if getattr(backend, "opens_tasks", False):
                task = NewTask(o.key, o.owner, o.action, a.title, d.text, o.due_at, o.member)
            elif result.awaiting_confirmation:
                # the platform holds it until a staff member confirms (WeCom mass sends): a
                # task tracks it, completed when the backend reports the send confirmed
                task = NewTask(
                    o.key, o.owner, o.action, f"Confirm the send: {a.title}", d.text, o.due_at,
                    o.member, result.remote_id, o.backend,
                )  # fmt: skip
            return Outcome(o.key, o.fence, OccurrenceState.SENT, now, result.detail, task=task)
        if result.status is SendStatus.UNCERTAIN and not backend.capabilities.idempotent:
            report.uncertain += 1
            return self._done(o, OccurrenceState.UNCERTAIN, now, result.detail)
        if result.status is SendStatus.PERMANENT:
            report.dead += 1
            return self._dead(o, a, now, result.detail)
        attempt = o.attempts + 1
        if attempt > a.retries:
            report.dead += 1
            return self._dead(o, a, now, f"out of retries ({a.retries}): {result.detail}")
        report.retried += 1
        delay = min(
            self.options.backoff.total_seconds() * 2 ** (attempt - 1),
            self.options.max_backoff.total_seconds(),
        )
        delay *= 0.5 + self._rng.random()  # jitter: runners retrying together spread out
        if result.retry_after is not None:
            delay = max(delay, result.retry_after)
        return Outcome(
            o.key, o.fence, OccurrenceState.RETRY, now, result.detail,
            now + timedelta(seconds=delay),
        )  # fmt: skip

    def _dead(self, o: OccurrenceRecord, a: Action, now: datetime, detail: str) -> Outcome:
        """A dead letter, with a task for the action's owner role to look at it."""
        alert = NewTask(
            f"dead-letter:{o.key}",
            o.owner,
            o.action,
            f"Delivery failed: {a.title}",
            f"{o.key} could not be delivered: {detail}. Fix it, then `sop resolve {o.key}"
            " --resend` (or --sent, --drop).",
            now,
            o.member,
        )
        return Outcome(o.key, o.fence, OccurrenceState.DEAD, now, detail, task=alert)

    # -- waking up -------------------------------------------------------------------------

    def next_wake(self, run: RunRecord, now: datetime) -> datetime:
        """The next instant there is something to do (at the latest, the next local midnight)."""
        wake = self._next_midnight(now)
        for day in self.program.iter_due(self._windows, now + EPSILON, wake):
            if day:
                wake = min(wake, day[0].at)
                break
        due = self.store.next_due(self.run_id)
        if due is not None and due < wake:
            wake = max(due, now)
        first = self.store.next_escalation(self.run_id)
        if first is not None:
            at = first + self.options.task_grace + EPSILON  # escalated once strictly past
            if now < at < wake:
                wake = at
        derived = next_derived(self.program, self.store, self.run_id, now, wake)
        if derived is not None and derived < wake:
            wake = max(derived, now)
        return wake

    def run(
        self,
        until: datetime | None = None,
        on_tick: Callable[[TickReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TickReport:
        """Tick until the clock reaches `until` (exclusive) or `should_stop()`; the totals."""
        total = TickReport(self.clock.now())
        while True:
            now = self.clock.now()
            if until is not None and now >= until:
                return total
            if should_stop is not None and should_stop():
                return total
            report = self.tick()
            total.add(report)
            if on_tick is not None:
                on_tick(report)
            wake = report.next_wake or now + self.options.poll
            if until is not None:
                wake = min(wake, until)
            if not _virtual(self.clock):
                wake = min(wake, self.clock.now() + self.options.poll)
            if wake <= now and _virtual(self.clock):
                wake = now + timedelta(seconds=1)  # a retry due now, already tried: move on
            self.clock.sleep_until(wake)


def _wall() -> datetime:
    return datetime.now(UTC)


def _virtual(clock: Clock) -> bool:
    return bool(getattr(clock, "jumps", False))


def _within(a: Action) -> timedelta | None:
    s = a.schedule
    return s.within if isinstance(s, OnEvent) else None


def _span(t: timedelta) -> str:
    seconds = int(t.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"
