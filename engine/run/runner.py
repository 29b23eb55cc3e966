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
from functools import cached_property

from ..core import expr as ex
from ..core.schedule import cron_between, local_midnight
from ..lang.model import Action, OnEvent, Stage
from ..lang.semantics import guard_chain
from ..lang.templates import RenderError
from ..program import Lifecycle, Program
from ..program import gates as G
from ..program import history as H
from ..program.lifecycle import StageState, StageWindow, exits_of
from . import incidents as I
from .attributes import member_values
from .codec import decode_lifecycle, encode_lifecycle
from .delivery import compose
from .errors import RunError
from .members import (
    StageClock,
    balance,
    derived_occurrences,
    fire,
    next_derived,
    tier_changes,
)
from .observed import (
    DAILY,
    DAILY_SOURCE,
    as_evidence,
    built_in_values,
    construct_values,
    counted_keys,
    counted_values,
    stored_history,
)
from .population import Population, expands
from .ports import Backend, Clock, Delivery, MetricSource, MetricSourceError, SendResult, SendStatus
from .store.base import (
    GateEvaluation,
    IncidentRecord,
    IncidentState,
    LedgerEntry,
    MemberRecord,
    MetricValue,
    NewOccurrence,
    NewTask,
    OccurrenceRecord,
    OccurrenceState,
    Outcome,
    PointsKind,
    Resolution,
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
    expanded: int = 0  # occurrences fanned out into one per member (segments, leaderboards)
    incidents: list[str] = field(default_factory=list)  # incidents `detect:` opened
    source_errors: list[str] = field(default_factory=list)
    next_wake: datetime | None = None

    def add(self, other: TickReport) -> None:
        """Sum another tick's counts into this one."""
        for name in ("inserted", "skipped", "sent", "retried", "dead", "uncertain", "resent",
                     "stale", "escalated", "deferred", "confirmed", "expanded"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.transitions += other.transitions
        self.incidents += other.incidents
        self.source_errors += [e for e in other.source_errors if e not in self.source_errors]
        self.at = other.at
        self.next_wake = other.next_wake


@dataclass
class _DayWork:
    """What the daily checks of one save collect besides transitions and metrics."""

    episodes: dict[str, bool]  # incident id -> its `detect:` held at the last check
    incidents: list[IncidentRecord] = field(default_factory=list)  # opened by `detect:`
    lapsed: list[LedgerEntry] = field(default_factory=list)  # points past `points.expire`


def _always(a: Action) -> bool:
    return True


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
        self._history: dict[str, list[float]] | None = None  # up to the last closed day
        self._windows: list[StageWindow] = []
        self._origin: datetime | None = None
        self._expanded = False
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
            day = _DayWork(dict(run.lifecycle.get("episodes") or {}))
            checked = run.checked_until
            m = self._next_midnight(checked)
            while m <= now and not lc.finished:
                self._daily_check(
                    run, lc, m, transitions, evaluations, metrics, report, tiered, items, day
                )
                checked = m
                m = self._next_midnight(m)
            if lc.finished and checked < now:
                checked = max(checked, min(now, self._next_midnight(checked)))
            horizon = self._next_midnight(now)
            windows = lc.windows(horizon)
            self._windows = windows
            self._origin = run.origin
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
                    self.program, stages, self.store, self.run_id, derived_until, now,
                    self._where_for,
                )  # fmt: skip
                derived_until = now
            saved = self.store.save_run(
                replace(
                    run,
                    lifecycle={**encode_lifecycle(lc.state()), "episodes": day.episodes},
                    checked_until=checked,
                    scheduled_until=scheduled_until,
                    derived_until=derived_until,
                ),
                transitions,
                evaluations,
                metrics,
                items,
                day.incidents,
            )
            if saved is not None:
                # after the run is saved: a redo (another runner saved first) finds them again,
                # and the tier-change occurrences already stored keep their keys; lapsed points
                # are keyed by member and day, so a redo records them once
                if tiered:
                    self.store.put_members(self.run_id, list(tiered.values()))
                if day.lapsed:
                    self.store.add_ledger(self.run_id, day.lapsed)
                report.transitions += transitions
                report.inserted += len(items)
                report.incidents += [i.id for i in day.incidents]
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
        work: _DayWork,
    ) -> None:
        """The check at local midnight `midnight`: the day before closed; exits read its
        metrics and their daily history (`for:`, avg/min/max windows)."""
        day = (midnight - timedelta(hours=12)).astimezone(self.tz).date()
        pb = self.program.playbook
        ledger = self.store.ledger(self.run_id) if pb.points is not None else []
        values = self.day_values(run, day, midnight, report, ledger=ledger)
        built_in = self._built_in
        for name, v in values.items():
            if name == H.DAYS_IN_STAGE:
                continue
            source = DAILY_SOURCE if DAILY in name else "events" if name in built_in else "sources"
            metrics.append(MetricValue(name, day, None if math.isnan(v) else v, source))
        self._last_values = values
        history = self._history_until(run, day, values)
        self._history = history
        notes: dict[str, str] = {}
        read: dict[str, float] = {}

        def read_history(stage: Stage, st: StageState, now: datetime) -> tuple[H.History, float]:
            read[stage.id] = float(self._days_in_stage(st.started, now))
            return history, read[stage.id]

        self._tier_review(run, lc, day, midnight, tiered, occurrences)
        before = len(lc.transitions)
        lc.step(midnight, G.history_exits(read_history, notes=notes))
        new = lc.transitions[before:]
        fired = {t.stage: t.exit for t in new if t.event == "passed"}
        stages = self.program.playbook.stages
        for sid, dis in read.items():
            evaluations.append(
                GateEvaluation(
                    sid, midnight, sid in fired, self._evidence(stages[sid], history, dis),
                    notes.get(sid, ""), fired.get(sid),
                )
            )  # fmt: skip
        for t in new:
            read_at = read.get(t.stage)
            evidence = (
                self._evidence(stages[t.stage], history, read_at) if read_at is not None else {}
            )
            transitions.append(
                TransitionRecord(t.at, t.stage, t.event, t.detail, t.role, evidence, t.exit)
            )
        self._detect(midnight, history, work, occurrences)
        self._lapse(run, day, midnight, work, ledger)

    def _history_until(
        self, run: RunRecord, day: date, today: Mapping[str, float]
    ) -> dict[str, list[float]]:
        """Each metric a condition reads, by day from the start to `day` (today's `today`)."""
        first = run.origin.astimezone(self.tz).date()
        names = sorted(self._history_names)
        return stored_history(self.store, self.run_id, names, first, day, today)

    @cached_property
    def _history_names(self) -> frozenset[str]:
        """The metrics whose daily history conditions read: exits, `detect:`, `if:` guards."""
        pb = self.program.playbook
        nodes = [e.when.node for s in pb.stages.values() for e in exits_of(s)]
        nodes += [i.detect.node for i in pb.incidents.values() if i.detect is not None]
        nodes += [a.guard.node for a in pb.actions.values() if a.guard is not None]
        out: set[str] = set()
        for n in nodes:
            if n is None:
                continue
            out |= {str(x.value) for x in ex.names(n)}
            out |= {m for _, m, _ in ex.windows(n)}
        out.discard(H.DAYS_IN_STAGE)
        return frozenset(out)

    def _evidence(
        self, stage: Stage, history: H.History, days_in_stage: float
    ) -> dict[str, float | None]:
        """What a stage's exits read at a check: each metric and window (`avg(x, 7d)`)."""
        out: dict[str, float] = {}
        for e in exits_of(stage):
            node = e.when.node
            if node is None:
                continue
            env = H.condition_env(node, history, days_in_stage)
            for x in ex.names(node):
                out[str(x.value)] = float(env.get(str(x.value), math.nan))
            for op, metric, days in ex.windows(node):
                out[G.window_label(op, metric, days)] = float(env[ex.window_key(op, metric, days)])
        return as_evidence(out)

    def _detect(
        self,
        midnight: datetime,
        history: H.History,
        work: _DayWork,
        occurrences: list[NewOccurrence],
    ) -> None:
        """Incidents whose `detect:` holds on the day just closed: opened once per episode (a
        stretch of days it holds), never while one of that name is open; closing is manual."""
        from ..program.incidents import detects

        pb = self.program.playbook
        watched = [i for i in pb.incidents.values() if i.detect is not None]
        if not watched:
            return
        open_now = {i.incident for i in self.store.incidents(self.run_id, [IncidentState.OPEN])}
        open_now |= {r.incident for r in work.incidents}
        for inc in watched:
            if not detects(inc, history):
                work.episodes[inc.id] = False
                continue
            if work.episodes.get(inc.id):
                continue  # the same episode: opened (or already open) when it began
            work.episodes[inc.id] = True
            if inc.id in open_now:
                continue
            assert inc.detect is not None
            record = I.new_record(inc.id, midnight, "detect", f"detect: {inc.detect.text}", True)
            work.incidents.append(record)
            occurrences += I.step_occurrences(self.program, inc.id, midnight)

    def _lapse(
        self,
        run: RunRecord,
        day: date,
        midnight: datetime,
        work: _DayWork,
        ledger: Sequence[LedgerEntry],
    ) -> None:
        """Points older than `points.expire` lapse at this check (program/points.py: lots spent
        oldest first; a lot earned on day e lapses once today - e >= expire)."""
        from ..program.points import expire_days, lapse, spend

        pts = self.program.playbook.points
        days = expire_days(pts) if pts is not None else None
        if days is None:
            return
        first = run.origin.astimezone(self.tz).date()
        today = (day - first).days
        by_member: dict[str, list[LedgerEntry]] = {}
        for e in [*ledger, *work.lapsed]:
            if e.at < midnight:
                by_member.setdefault(e.member, []).append(e)
        for member, entries in sorted(by_member.items()):
            lots: list[float] = []
            lot_days: list[int] = []
            for e in sorted(entries, key=lambda e: (e.at, e.key)):
                if e.points > 0:
                    lots.append(float(e.points))
                    lot_days.append((e.at.astimezone(self.tz).date() - first).days)
                elif lots:
                    lots = [float(x) for x in spend(lots, -e.points)]
            if not lots:
                continue
            _, gone = lapse(lots, lot_days, today, days)
            if float(gone) > 0:
                work.lapsed.append(
                    LedgerEntry(f"expire:{member}:{day.isoformat()}", member, midnight,
                                -round(float(gone)), PointsKind.EXPIRE)
                )  # fmt: skip

    @cached_property
    def _built_in(self) -> frozenset[str]:
        """Metrics counted from recorded events (the playbook's built-ins and counted ones)."""
        from ..program.metrics import definitions

        pb = self.program.playbook
        return frozenset([*definitions(pb), *counted_keys(pb)])

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
                self.program, stages, "member.tier_changed", m.id, midnight,
                self._where_for(m, midnight), tier=m.tier,
            )  # fmt: skip

    def _where_for(self, m: MemberRecord, at: datetime) -> Callable[[Action], bool]:
        """The per-member filter of the event rules (`where:`) for member `m` at `at`."""
        from ..program.members import matches

        pb = self.program.playbook
        if not any(a.where is not None for a in pb.actions.values()):
            return _always
        points = balance(self.store.ledger(self.run_id, m.id)) if pb.points is not None else 0
        env = member_values(pb, m, at.astimezone(self.tz).date(), self.tz, points)
        return lambda a: a.where is None or bool(matches(a.where, env))

    def day_values(
        self,
        run: RunRecord,
        day: date,
        at: datetime,
        report: TickReport | None = None,
        pop: Population | None = None,
        ledger: Sequence[LedgerEntry] | None = None,
    ) -> dict[str, float]:
        """Every metric of local day `day` as known at `at` (NaN: unknown), custom ones too."""
        values = built_in_values(self.program, self.store, self.run_id, run.origin, day)
        pb = self.program.playbook
        if pb.channels or pb.points or pb.teams or pb.admission or counted_keys(pb):
            pop = pop or Population.load(self.program, self.store, self.run_id, at, day)
            values.update(construct_values(self.program, self.store, self.run_id, day, pop, ledger))
            values.update(counted_values(self.program, self.store, self.run_id, day, pop))
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
        actions = self.program.playbook.actions
        for o in self.store.expire_leases(self.run_id, self.lease_clock(), resend):
            a = actions.get(o.action)
            if o.state == OccurrenceState.UNCERTAIN and o.member is None and a and expands(a):
                # an expansion sends nothing itself: its runner died before fanning it out, so
                # nothing went out and it goes back to be expanded (its members' keys dedup)
                again = self.store.resolve(self.run_id, o.key, Resolution.RESEND, now,
                                           self.options.worker)  # fmt: skip
                if again is not None:
                    report.resent += 1
                    continue
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
            self._expanded = False
            outcomes = self._send_all(claimed, now, report)
            stale = self.store.record(self.run_id, outcomes, self.options.worker)
            report.stale += len(stale)
            # an expansion inserted its members' occurrences, due now: claim them next
            if len(claimed) < self.options.batch and not self._expanded:
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
            if a is None and I.parse_step(o.action) is not None:
                step = I.plan_step(self.program, self.store, self.run_id, o.key, o.action,
                                   o.scheduled_at, o.due_at)  # fmt: skip
                if step.skip or step.task is not None:
                    state = OccurrenceState.SKIPPED if step.skip else OccurrenceState.SENT
                    outcomes.append(Outcome(o.key, o.fence, state, now, step.skip or "task opened",
                                            task=step.task))  # fmt: skip
                    report.skipped += bool(step.skip)
                    report.sent += not step.skip
                    continue
                a = step.action
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
            if o.member is None and expands(a):
                outcomes.append(self._expand(o, a, now))
                report.expanded += 1
                self._expanded = True
                continue
            if o.member is not None:
                refused = self._points_for(o, a, members.get(o.member))
                if refused:
                    outcomes.append(self._done(o, OccurrenceState.SKIPPED, now, refused))
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

    def _expand(self, o: OccurrenceRecord, a: Action, now: datetime) -> Outcome:
        """Fan an occurrence out into one per member it reaches now (a segment on current
        attributes, a leaderboard at firing time, `for_each`, a `where:`), in one transaction
        with its outcome. A message to each goes out as a `to: member` one does on that
        backend: @-mentioning them in the group where the platform can, else privately."""
        pop = Population.load(self.program, self.store, self.run_id, now)
        chosen = pop.recipients(a)
        task = a.kind == "task"
        audience = o.audience if task else "member"
        children = tuple(
            NewOccurrence(
                f"{o.key}/{member}",
                o.action,
                o.stage,
                o.kind,
                member,
                audience,
                o.owner,
                o.backend,
                o.scheduled_at,
                o.due_at,
            )
            for member in chosen
        )
        what = a.for_each or (f"top {a.top.n} by {a.top.by}" if a.top else a.audience)
        detail = f"to {len(children)} member{'s' * (len(children) != 1)} ({what})"
        return Outcome(o.key, o.fence, OccurrenceState.EXPANDED, now, detail, children=children)

    def _points_for(self, o: OccurrenceRecord, a: Action, m: object) -> str:
        """A member's points moved by the action about to go out (a reward's `points`, a
        `do: redeem`'s cost), once per occurrence (the entry's key is the occurrence's); why
        it must not go out ("" when it may)."""
        pb = self.program.playbook
        member = o.member
        if pb.points is None or member is None:
            return ""
        gain = a.reward_points or 0
        item = a.redeem_item if a.kind == "redeem" else None
        if not gain and item is None:
            return ""
        entries = self.store.ledger(self.run_id, member)
        key = f"reward:{o.key}" if gain else f"redeem:{o.key}"
        if any(e.key == key for e in entries):
            return ""  # moved on an earlier attempt
        before = balance(entries)
        if item is not None:
            from ..program.points import check_redeem

            redeemed = self.store.redeemed_counts(self.run_id).get(item, 0)
            check = check_redeem(pb.points.redeem, item, before, redeemed)
            if not check.ok:
                return f"redeem refused: {check.message}"
            cost = pb.points.redeem[item].cost
            entry = LedgerEntry(key, member, o.due_at, -int(cost), PointsKind.REDEEM, item)
        else:
            entry = LedgerEntry(key, member, o.due_at, int(gain), PointsKind.REWARD)
        self.store.add_ledger(self.run_id, [entry])
        self._set_off(o, entry, before, m if isinstance(m, MemberRecord) else None)
        return ""

    def _set_off(
        self, o: OccurrenceRecord, entry: LedgerEntry, before: int, m: MemberRecord | None
    ) -> None:
        """What a points movement by an action sets off: `member.redeemed`, and a milestone on
        `points` it crossed (marked on the member: once)."""
        from ..program.milestones import crossed, milestones

        if m is None or self._origin is None:
            return
        stages = StageClock(self._origin, [(w.stage, w.start, w.end) for w in self._windows])
        allow = self._where_for(m, o.due_at)
        out: list[NewOccurrence] = []
        if entry.kind == PointsKind.REDEEM:
            out += fire(self.program, stages, "member.redeemed", m.id, o.due_at, allow,
                        item=entry.item)  # fmt: skip
        marks = list(m.marks)
        for ms in milestones(self.program.playbook.actions):
            mark = f"milestone:{ms.action}"
            if ms.counter != "points":
                continue
            if crossed(before, before + entry.points, ms.reaches, mark in marks):
                out += fire(self.program, stages, "member.milestone", m.id, o.due_at, allow,
                            milestone=(ms.counter, ms.reaches))  # fmt: skip
                marks.append(mark)
        # the occurrences first (their keys are the due instant's: a retry adds none twice),
        # then the marks
        self.store.add_occurrences(self.run_id, out)
        if len(marks) != len(m.marks):
            self.store.put_members(self.run_id, [replace(m, marks=tuple(marks))])

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
            if ex.windows(g.node) and self._history is not None:
                env.update(H.window_values(g.node, self._history))
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
                self._history = self._history_until(run, day, self._last_values)
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
