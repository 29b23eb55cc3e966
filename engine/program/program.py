"""The compiled Program: what is due when, and which member-event rules apply.

`plan`, `simulate` and `run` all call `Program.due()` (or `firings_by_day()`) for scheduled
actions, read `Program.event_table()` (or call `Program.on_event()`) for member events, and
drive stages with the same `Lifecycle`. Only the gate oracle differs: an assumption (plan),
simulated metrics (simulate) or live metrics (run).

Whether a scheduled action fires is decided with what is known at its own instant, as a runtime
decides it: its stage is active then, and its root (the cron or day it is chained to) falls in
that same stage window, at or after the window's start. A `before:` action does not wait to see
whether its anchor will still fire once the stage may have ended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from ..core.schedule import apply_quiet_hours, cron_between, local_midnight, quiet_move, to_instant
from ..core.timeutil import Window
from ..lang.model import Action, Cron, DayOffset, Exit, Playbook, Stage
from ..lang.semantics import Anchored, earliest_exit_day, quiet_window, resolve_anchors
from .anchors import chain_below, children_of
from .events import EventRule, active_rules, compile_event_rules
from .lifecycle import (
    ExitOracle,
    GateOracle,
    Lifecycle,
    StageState,
    StageWindow,
    exits_of,
)
from .occurrence import Occurrence, occurrence_key

DAY = timedelta(days=1)

# (goes out at, action id, scheduled, action): one firing of a scheduled action, before it
# becomes an Occurrence; plan checks count these without building occurrences
Firing = tuple[datetime, str, datetime, Action]


def _firing_order(f: Firing) -> tuple[datetime, str]:
    return f[0], f[1]


class _Cursor:
    """A scheduled action's firings in one stage window, in order; `at` is when the next one is
    due, None once there are no more."""

    __slots__ = ("_offset", "_roots", "at")

    def __init__(self, roots: Iterable[datetime], offset: timedelta) -> None:
        self._roots = iter(roots)
        self._offset = offset
        self.at: datetime | None = None
        self.advance()

    def advance(self) -> None:
        """Move on to the next firing."""
        root = next(self._roots, None)
        self.at = None if root is None else root + self._offset


@dataclass(slots=True)
class _Plan:
    """One scheduled action and its firings in each window of its stage, read day by day."""

    action: Action
    quiet: Window | None
    cursors: list[_Cursor]


class Program:
    """A compiled playbook."""

    def __init__(self, playbook: Playbook) -> None:
        self.playbook = playbook
        self.tz = ZoneInfo(playbook.timezone)
        by_stage: dict[str | None, list[Action]] = {}
        for a in playbook.actions.values():
            by_stage.setdefault(a.stage, []).append(a)
        self.actions_by_stage = {k: tuple(v) for k, v in by_stage.items()}
        self.children = children_of(playbook.actions)
        self._occurrences: dict[tuple[str, datetime], Occurrence] = {}
        # every action's root and offset (`lang.semantics`: validate reads the same)
        self.anchored: dict[str, Anchored] = resolve_anchors(playbook.actions)
        # every action with a time of its own (a cron or a day, directly or by its chain),
        # resolved to its root and offset; chains hanging off a member event are per member
        self.timed: dict[str, Anchored] = {
            k: v
            for k, v in self.anchored.items()
            if v.complete and isinstance(v.root.schedule, (Cron, DayOffset))
        }
        self.events: tuple[EventRule, ...] = compile_event_rules(playbook.actions, self.children)
        self._events_by_id = {r.action.id: r for r in self.events}

    # -- scheduled actions -----------------------------------------------------------------

    def due(self, windows: Sequence[StageWindow], t0: datetime, t1: datetime) -> list[Occurrence]:
        """Every scheduled occurrence going out in [t0, t1) while its stage is active."""
        return [o for day in self.iter_due(windows, t0, t1) for o in day]

    def iter_due(
        self,
        windows: Sequence[StageWindow],
        t0: datetime,
        t1: datetime,
        select: Callable[[Action], bool] | None = None,
    ) -> Iterator[list[Occurrence]]:
        """`due()` one local day at a time: each list sorted, the days in order."""
        for day in self.firings_by_day(windows, t0, t1, select):
            items = sorted(day, key=_firing_order)
            yield [self._occurrence(a, scheduled) for _, _, scheduled, a in items]

    def firings_by_day(
        self,
        windows: Sequence[StageWindow],
        t0: datetime,
        t1: datetime,
        select: Callable[[Action], bool] | None = None,
    ) -> Iterator[Iterator[Firing]]:
        """Scheduled firings going out in [t0, t1), grouped by the local day they go out on.

        A day's firings come unsorted and are computed as they are read, so a consumer that only
        counts never holds more than the sends quiet hours carry past midnight. Each day's iterator
        must be read (or is drained) before the next day is asked for.
        """
        pending: list[Firing] = []  # moved by quiet hours past the day being read
        bounds = [t0 - DAY, t0]  # the day before t0: sends that quiet hours move into [t0, t1)
        d = t0.astimezone(self.tz).date() + DAY
        while (m := local_midnight(d, self.tz)) < t1:
            if m > bounds[-1]:
                bounds.append(m)
            d += DAY
        bounds.append(t1)
        plans = self._plans(windows, select, bounds[0], t1)
        for i in range(len(bounds) - 1):
            day = self._firings_between(plans, bounds[i], bounds[i + 1], t0, pending)
            if i == 0:
                for _ in day:  # only feeds `pending`: nothing of it goes out before t0
                    pass
                continue
            yield day
            for _ in day:  # drain what the consumer left, so `pending` is complete
                pass

    def _plans(
        self,
        windows: Sequence[StageWindow],
        select: Callable[[Action], bool] | None,
        t0: datetime,
        t1: datetime,
    ) -> list[_Plan]:
        """Each scheduled action with a cursor over its firings in [t0, t1) in each window of its
        stage. The days `firings_by_day` walks are contiguous, so reading the cursors forward gives
        each day its firings: a cron's local dates are visited once, and a day asks each cursor
        one question."""
        by_stage: dict[str | None, list[StageWindow]] = {}
        for w in windows:
            by_stage.setdefault(w.stage, []).append(w)
        plans = []
        for stage, ws in by_stage.items():
            for a in self.actions_by_stage.get(stage, ()):
                anchored = self.timed.get(a.id)
                if anchored is None or (select is not None and not select(a)):
                    continue
                if anchored.root.stage != stage:
                    continue  # anchored on another stage's action: never due (SOP280)
                base, offset = anchored.root, anchored.offset
                cursors = []
                for w in ws:
                    start = max(t0, w.start)
                    end = t1 if w.end is None else min(t1, w.end)
                    if start < end:
                        roots = self._instants(base, w, start - offset, end - offset)
                        cursors.append(_Cursor(roots, offset))
                plans.append(_Plan(a, quiet_window(a), cursors))
        return plans

    def _firings_between(
        self,
        plans: list[_Plan],
        c0: datetime,
        c1: datetime,
        t0: datetime,
        pending: list[Firing],
    ) -> Iterator[Firing]:
        """Firings going out in [c0, c1): those carried over, then those whose own time is here
        (the cursors have been read up to c0)."""
        keep = [f for f in pending if f[0] >= c1]
        for f in pending:
            if f[0] < c1:
                yield f
        pending[:] = keep
        tz = self.tz
        for p in plans:
            a, quiet = p.action, p.quiet
            for cursor in p.cursors:
                while (at := cursor.at) is not None and at < c1:
                    cursor.advance()
                    moved = quiet_move(at, quiet, tz) if quiet else at
                    out = moved.astimezone(tz)
                    if out < c1:
                        if out >= t0:
                            yield (out, a.id, at, a)
                    else:
                        pending.append((out, a.id, at, a))

    def _instants(
        self, base: Action, w: StageWindow, start: datetime, end: datetime
    ) -> Iterable[datetime]:
        """Firings of a root action in [start, end) from its stage window's start on.

        The window's end is not applied to the root: whether an action fires is decided at its
        own instant (which the caller keeps inside the window), when a later end is not known.
        """
        s = base.schedule
        if isinstance(s, Cron):
            lo = max(start, w.start)
            return cron_between(s.expr, lo, end, self.tz) if lo < end else ()
        if isinstance(s, DayOffset):
            d: date = w.start.astimezone(self.tz).date() + timedelta(days=s.day)
            at = to_instant(d, s.at, self.tz)
            return (at,) if w.start <= at and start <= at < end else ()
        return ()

    def _occurrence(self, a: Action, scheduled: datetime, member: str | None = None) -> Occurrence:
        if member is None:
            # an occurrence depends only on its action and instant: plans of many communities
            # and the days of a simulation ask for the same ones again and again
            cached = self._occurrences.get((a.id, scheduled))
            if cached is None:
                if len(self._occurrences) > 500_000:
                    self._occurrences.clear()
                cached = self._occurrences[(a.id, scheduled)] = self._make(a, scheduled, None)
            return cached
        return self._make(a, scheduled, member)

    def _make(self, a: Action, scheduled: datetime, member: str | None) -> Occurrence:
        at, reason = apply_quiet_hours(scheduled, quiet_window(a), self.tz)
        return Occurrence(
            key=occurrence_key(self.playbook.id, a.id, scheduled, member),
            action=a.id,
            stage=a.stage,
            kind=a.kind,
            scheduled=scheduled.astimezone(self.tz),
            at=at.astimezone(self.tz),
            owner=a.owner,
            audience=a.audience,
            backend=a.backend,
            reason=reason,
            member=member,
        )

    # -- member events ---------------------------------------------------------------------

    def event_table(self, stages: Iterable[str | None]) -> list[EventRule]:
        """The compiled member-event rules active while these stages (and routines) run."""
        return active_rules(self.events, stages)

    def event_rules(self, stages: Iterable[str | None]) -> list[Action]:
        """The actions member events trigger while these stages (and routines) are active."""
        return [r.action for r in self.event_table(stages)]

    def on_event(
        self,
        stages: Iterable[str | None],
        event: str,
        member: str,
        at: datetime,
        allow: Callable[[Action], bool] | None = None,
        **facts: object,
    ) -> list[Occurrence]:
        """Occurrences a member event causes now (and the actions chained after them).

        `allow` (the runtime's per-member filter: the action's `where:` on the member) may
        refuse a rule's action; a refused rule sets off nothing, its chain neither.
        """
        out: list[Occurrence] = []
        for r in self.event_table(stages):
            if not r.matches(event, facts):
                continue
            if allow is not None and not allow(r.action):
                continue
            out.append(self._occurrence(r.action, at, member))
            out.extend(self._occurrence(c.action, at + c.offset, member) for c in r.chain)
        return out

    def chain(self, anchor: str) -> tuple[tuple[Action, timedelta], ...]:
        """Actions after/before `anchor`, depth first, each with its offset from `anchor`."""
        rule = self._events_by_id.get(anchor)
        links = rule.chain if rule is not None else chain_below(self.children, anchor)
        return tuple((c.action, c.offset) for c in links)

    # -- stages ----------------------------------------------------------------------------

    @cached_property
    def successors(self) -> dict[str, list[str]]:
        """Stages that follow each stage by `after` (rescue stages only come by goto)."""
        succ: dict[str, list[str]] = {s: [] for s in self.playbook.stages}
        for s in self.playbook.stages.values():
            if s.rescue:
                continue
            for a in s.after:
                succ.setdefault(a, []).append(s.id)
        return succ

    def natural_length(self, stage: Stage) -> timedelta:
        """The shortest a stage can sensibly last: its minimum, and its own day-offset work."""
        last = timedelta(0)
        for aid in stage.actions:
            anchored = self.timed.get(aid)
            if anchored and isinstance(anchored.root.schedule, DayOffset):
                last = max(last, timedelta(days=anchored.root.schedule.day) + anchored.offset + DAY)
        return max(stage.min_duration or DAY, last, DAY)


def assumed_exits(
    program: Program,
    mode: str = "pass",
    failing: frozenset[str] = frozenset(),
    taken: Mapping[str, str] | None = None,
    origin: datetime | None = None,
) -> ExitOracle:
    """Plan's exit oracle: with `pass`, each stage leaves by its first exit (or the exit `taken`
    names for it) as soon as the stage's work is done and that exit can first fire
    (`semantics.earliest_exit_day`: its `for:` run, its windows filled from `origin`, the day the
    history starts); with `fail`, and for the `failing` stages, no exit fires."""
    taken = taken or {}

    def fires(stage: Stage, st: StageState, now: datetime, exit: Exit) -> bool:
        if mode == "fail" or stage.id in failing:
            return False
        exits = exits_of(stage)
        if exit.id != taken.get(stage.id, exits[0].id if exits else None):
            return False
        before = max(0, (st.started - origin).days) if origin is not None else 0
        held = timedelta(days=earliest_exit_day(exit, before))
        return now - st.started >= max(program.natural_length(stage), held)

    return ExitOracle(fires)


def assumed_gate(program: Program, mode: str, failing: frozenset[str] = frozenset()) -> GateOracle:
    """Plan's gate oracle (each stage's first exit): `assumed_exits` without a choice of exit."""
    oracle = assumed_exits(program, mode, failing)

    def gate(stage: Stage, st: StageState, now: datetime) -> bool:
        exits = exits_of(stage)
        return bool(exits) and oracle.fires(stage, st, now, exits[0])

    return gate


def run_lifecycle(
    program: Program,
    start: datetime,
    days: int,
    gate: GateOracle | ExitOracle,
    include_optional: Iterable[str] = (),
) -> Lifecycle:
    """Start a lifecycle and step it through `days` local midnights."""
    lc = Lifecycle.start(program, start, include_optional)
    d0 = start.astimezone(program.tz).date()
    for i in range(1, days + 1):
        if lc.finished:
            break  # nothing changes any more
        lc.step(local_midnight(d0 + timedelta(days=i), program.tz), gate)
    return lc
