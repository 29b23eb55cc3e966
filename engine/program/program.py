"""The compiled Program: what is due when, and how stages follow each other.

`plan`, `simulate` and `run` all call `Program.due()` for scheduled actions, `Program.on_event()`
for member events, and drive stages with the same `Lifecycle`. Only the gate oracle differs:
an assumption (plan), simulated metrics (simulate) or live metrics (run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from zoneinfo import ZoneInfo

from ..core.catalog import MESSAGE_KINDS
from ..core.schedule import apply_quiet_hours, cron_between, local_midnight, quiet_move, to_instant
from ..core.timeutil import Window
from ..lang.model import Action, Cron, DayOffset, OnEvent, Playbook, Relative, Stage

DAY = timedelta(days=1)


def occurrence_key(
    playbook: str, action: str, scheduled: datetime, member: str | None = None
) -> str:
    """The idempotency key of one occurrence: the same in plan, simulate and run."""
    key = f"{playbook}/{action}/{_utc_text(scheduled)}"
    return f"{key}/{member}" if member else key


@lru_cache(maxsize=262144)
def _utc_text(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One due action: when it was scheduled, when it goes out, and who does it."""

    key: str
    action: str
    stage: str | None
    kind: str
    scheduled: datetime
    at: datetime
    owner: str | None
    audience: str
    backend: str | None
    reason: str = ""
    member: str | None = None


# (goes out at, action id, scheduled, action): one firing of a scheduled action, before it
# becomes an Occurrence; plan checks count these without building occurrences
Firing = tuple[datetime, str, datetime, Action]


def _firing_order(f: Firing) -> tuple[datetime, str]:
    return f[0], f[1]


def _over(w: StageWindow, at: datetime) -> bool:
    return w.end is not None and w.end <= at


@dataclass(slots=True)
class _Plan:
    """One scheduled action, its root and its stage's windows, while firings are produced."""

    action: Action
    base: Action
    offset: timedelta
    quiet: Window | None
    windows: list[StageWindow]
    ordered: bool  # windows sorted by start: stop at the first one that starts later
    first: int = 0  # windows before this one are over


@dataclass(frozen=True, slots=True)
class StageWindow:
    """A stage active from `start` until `end` (None = still active)."""

    stage: str | None  # None: the routines, active for the playbook's whole life
    start: datetime
    end: datetime | None


@dataclass(frozen=True, slots=True)
class Transition:
    """Something the lifecycle did at a daily check."""

    at: datetime
    stage: str
    event: str  # started | passed | timeboxed | extended | alert | goto | aborted
    detail: str = ""
    role: str | None = None


@dataclass
class StageState:
    """A stage's progress inside one lifecycle."""

    stage: str
    started: datetime
    deadline: datetime | None
    ended: datetime | None = None
    outcome: str = "running"
    extended: bool = False
    alerted: bool = False


GateOracle = Callable[[Stage, StageState, datetime], bool]


class Program:
    """A compiled playbook."""

    def __init__(self, playbook: Playbook) -> None:
        self.playbook = playbook
        self.tz = ZoneInfo(playbook.timezone)
        by_stage: dict[str | None, list[Action]] = {}
        children: dict[str, list[Action]] = {}
        for a in playbook.actions.values():
            by_stage.setdefault(a.stage, []).append(a)
            if isinstance(a.schedule, Relative):
                children.setdefault(a.schedule.anchor, []).append(a)
        self.actions_by_stage = {k: tuple(v) for k, v in by_stage.items()}
        self.children = {k: tuple(v) for k, v in children.items()}
        self._occurrences: dict[tuple[str, datetime], Occurrence] = {}
        self._chains: dict[str, tuple[tuple[Action, timedelta], ...]] = {}
        # every scheduled action resolved to (root action, total offset from the root)
        self.roots: dict[str, tuple[Action, timedelta]] = {
            k: v for k, v in self._resolve_roots().items() if v is not None
        }

    def _resolve_roots(self) -> dict[str, tuple[Action, timedelta] | None]:
        """Each action's root and offset, walking every chain once (long chains stay linear)."""
        actions = self.playbook.actions
        memo: dict[str, tuple[Action, timedelta] | None] = {}
        for a in actions.values():
            path: list[Action] = []
            on_path: set[str] = set()
            cur = a
            while True:
                if cur.id in memo:
                    result = memo[cur.id]
                    break
                s = cur.schedule
                if not isinstance(s, Relative):
                    # relative to a member event: scheduled per member by on_event()
                    result = None if isinstance(s, OnEvent) else (cur, timedelta(0))
                    memo[cur.id] = result
                    break
                if cur.id in on_path or s.anchor not in actions:
                    result = None  # a cycle or a dangling anchor (validate reports both)
                    break
                on_path.add(cur.id)
                path.append(cur)
                cur = actions[s.anchor]
            for node in reversed(path):
                assert isinstance(node.schedule, Relative)
                if result is not None:
                    result = (result[0], result[1] + node.schedule.offset)
                memo[node.id] = result
        return memo

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
        plans = self._plans(windows, select)
        pending: list[Firing] = []  # moved by quiet hours past the day being read
        bounds = [t0 - DAY, t0]  # the day before t0: sends that quiet hours move into [t0, t1)
        d = t0.astimezone(self.tz).date() + DAY
        while (m := local_midnight(d, self.tz)) < t1:
            if m > bounds[-1]:
                bounds.append(m)
            d += DAY
        bounds.append(t1)
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
        self, windows: Sequence[StageWindow], select: Callable[[Action], bool] | None
    ) -> list[_Plan]:
        by_stage: dict[str | None, list[StageWindow]] = {}
        for w in windows:
            by_stage.setdefault(w.stage, []).append(w)
        plans = []
        for stage, ws in by_stage.items():
            ordered = all(ws[i].start <= ws[i + 1].start for i in range(len(ws) - 1))
            for a in self.actions_by_stage.get(stage, ()):
                root = self.roots.get(a.id)
                if root is None or (select is not None and not select(a)):
                    continue
                base, offset = root
                if base.stage != stage:
                    continue  # anchors live in the same stage (checked by validate)
                quiet = a.quiet_hours if a.kind in MESSAGE_KINDS else None
                plans.append(_Plan(a, base, offset, quiet, ws, ordered))
        return plans

    def _firings_between(
        self,
        plans: list[_Plan],
        c0: datetime,
        c1: datetime,
        t0: datetime,
        pending: list[Firing],
    ) -> Iterator[Firing]:
        """Firings going out in [c0, c1): those carried over, then those whose own time is here."""
        keep = [f for f in pending if f[0] >= c1]
        for f in pending:
            if f[0] < c1:
                yield f
        pending[:] = keep
        tz = self.tz
        for p in plans:
            a, offset, quiet, ws = p.action, p.offset, p.quiet, p.windows
            while p.first < len(ws) and _over(ws[p.first], c0):
                p.first += 1  # windows over before this day never fire again
            for i in range(p.first, len(ws)):
                w = ws[i]
                if w.start >= c1:
                    if p.ordered:
                        break
                    continue
                start = max(c0, w.start)
                end = c1 if w.end is None else min(c1, w.end)
                if start >= end:
                    continue
                for sched in self._instants(p.base, w, start - offset, end - offset):
                    at = sched + offset
                    if not (start <= at < end):
                        continue
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
        """Firings of a root action in [start, end), inside its own stage window."""
        own = w
        s = base.schedule
        if isinstance(s, Cron):
            lo = max(start, own.start)
            hi = end if own.end is None else min(end, own.end)
            return cron_between(s.expr, lo, hi, self.tz) if lo < hi else ()
        if isinstance(s, DayOffset):
            d: date = own.start.astimezone(self.tz).date() + timedelta(days=s.day)
            at = to_instant(d, s.at, self.tz)
            inside = own.start <= at and (own.end is None or at < own.end)
            return (at,) if inside and start <= at < end else ()
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
        window = a.quiet_hours if a.kind in MESSAGE_KINDS else None
        at, reason = apply_quiet_hours(scheduled, window, self.tz)
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

    def event_rules(self, stages: Iterable[str | None]) -> list[Action]:
        """Actions triggered by member events while these stages (and routines) are active."""
        active = {None, *stages}
        return [
            a
            for a in self.playbook.actions.values()
            if isinstance(a.schedule, OnEvent) and a.stage in active
        ]

    def on_event(
        self, stages: Iterable[str | None], event: str, member: str, at: datetime, **facts: object
    ) -> list[Occurrence]:
        """Occurrences a member event causes now (and the actions chained after them)."""
        out: list[Occurrence] = []
        for a in self.event_rules(stages):
            s = a.schedule
            assert isinstance(s, OnEvent)
            if s.event != event or not _event_matches(s, facts):
                continue
            out.append(self._occurrence(a, at, member))
            out.extend(self._occurrence(c, at + off, member) for c, off in self.chain(a.id))
        return out

    def chain(self, anchor: str) -> tuple[tuple[Action, timedelta], ...]:
        """Actions after/before `anchor`, depth first, each with its offset from `anchor`.

        Iterative with a path guard: a long (or, unvalidated, cyclic) chain can neither exhaust
        the recursion limit nor loop.
        """
        cached = self._chains.get(anchor)
        if cached is not None:
            return cached
        out: list[tuple[Action, timedelta]] = []
        path = [anchor]
        stack = [(iter(self.children.get(anchor, ())), timedelta(0))]
        while stack:
            it, base = stack[-1]
            a = next(it, None)
            if a is None:
                stack.pop()
                path.pop()
                continue
            if a.id in path:
                continue
            assert isinstance(a.schedule, Relative)
            off = base + a.schedule.offset
            out.append((a, off))
            path.append(a.id)
            stack.append((iter(self.children.get(a.id, ())), off))
        result = self._chains[anchor] = tuple(out)
        return result

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

    def roots_of_graph(self) -> list[str]:
        """Stages with no `after`: where a playbook starts."""
        return [
            s.id
            for s in self.playbook.stages.values()
            if not s.after and not s.rescue and not s.optional
        ]

    def natural_length(self, stage: Stage) -> timedelta:
        """The shortest a stage can sensibly last: its minimum, and its own day-offset work."""
        last = timedelta(0)
        for aid in stage.actions:
            root = self.roots.get(aid)
            if root and isinstance(root[0].schedule, DayOffset):
                last = max(last, timedelta(days=root[0].schedule.day) + root[1] + DAY)
        return max(stage.min_duration or DAY, last, DAY)


def deadline_of(stage: Stage) -> timedelta | None:
    """When the gate is late: the deadline, else the maximum duration."""
    if stage.deadline:
        return stage.deadline.after
    return stage.max_duration


def _event_matches(s: OnEvent, facts: dict[str, object]) -> bool:
    if s.event == "member.silent" and s.silent_for is not None:
        return facts.get("silent_for") == s.silent_for or "silent_for" not in facts
    if s.event == "member.violation" and s.count is not None:
        return facts.get("count") == s.count
    if s.event == "member.anniversary":
        return facts.get("tenure") in s.at
    if s.event == "member.tier_changed" and s.tier:
        return facts.get("tier") == s.tier
    if s.event == "member.checkin_streak" and s.streak:
        return facts.get("streak") == s.streak
    return True


@dataclass
class Lifecycle:
    """The stage state machine, stepped once per local day by plan, simulate and run."""

    program: Program
    start: datetime
    include_optional: frozenset[str] = frozenset()
    states: list[StageState] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    finished: datetime | None = None

    def __post_init__(self) -> None:
        for sid in self.program.roots_of_graph():
            self._enter(sid, self.start)

    @property
    def active(self) -> list[StageState]:
        """Stages running now."""
        return [s for s in self.states if s.ended is None]

    def _enter(self, sid: str, at: datetime) -> None:
        stage = self.program.playbook.stages[sid]
        dl = deadline_of(stage)
        self.states.append(StageState(sid, at, at + dl if dl else None))
        self.transitions.append(Transition(at, sid, "started"))

    def _passed(self, sid: str) -> bool:
        return any(s.stage == sid and s.outcome in ("passed", "timeboxed") for s in self.states)

    def _finish(self, st: StageState, at: datetime, outcome: str, goto: str | None) -> None:
        st.ended, st.outcome = at, outcome
        self.transitions.append(Transition(at, st.stage, outcome))
        pb = self.program.playbook
        if goto:
            self.transitions.append(Transition(at, st.stage, "goto", goto))
            # a goto into a stage that is running joins it: one window per stage at a time, so
            # an occurrence's key (action + scheduled instant) never repeats (docs/time.md)
            if not any(x.stage == goto and x.ended is None for x in self.states):
                self._enter(goto, at)
            return
        for nxt in self.program.successors.get(st.stage, []):
            s = pb.stages[nxt]
            if s.optional and nxt not in self.include_optional:
                continue
            running = any(x.stage == nxt and x.ended is None for x in self.states)
            if not running and all(self._passed(a) for a in s.after):
                self._enter(nxt, at)

    def step(self, now: datetime, gate: GateOracle) -> None:
        """The daily check at local midnight `now`: gates, deadlines, policies."""
        if self.finished:
            return
        pb = self.program.playbook
        for st in list(self.active):
            stage = pb.stages[st.stage]
            age = now - st.started
            ready = age >= (stage.min_duration or DAY)
            if stage.gate is not None and ready and gate(stage, st, now):
                self._finish(st, now, "passed", stage.goto)
                continue
            if st.deadline is None or now < st.deadline:
                continue
            if stage.gate is None or stage.deadline is None:
                self._finish(st, now, "timeboxed", None)  # max duration reached
                continue
            self._apply_policy(st, stage, now)
            if self.finished:
                return

    def _apply_policy(self, st: StageState, stage: Stage, now: datetime) -> None:
        dl = stage.deadline
        assert dl is not None
        if dl.alert and not st.alerted:
            st.alerted = True
            self.transitions.append(
                Transition(now, st.stage, "alert", "gate still closed at the deadline", dl.alert)
            )
        if dl.extend and not st.extended:
            st.extended = True
            st.deadline = now + dl.extend
            self.transitions.append(Transition(now, st.stage, "extended", str(dl.extend.days)))
            return
        if dl.goto:
            self._finish(st, now, "deadline", dl.goto)
            return
        if dl.abort:
            st.ended, st.outcome = now, "aborted"
            self.transitions.append(Transition(now, st.stage, "aborted"))
            for other in self.active:
                other.ended, other.outcome = now, "aborted"
            self.finished = now
            return
        st.deadline = None  # alert only: the stage carries on until its gate passes

    def windows(self, until: datetime) -> list[StageWindow]:
        """Stage windows so far, routines included."""
        end = self.finished
        out = [StageWindow(None, self.start, end)]
        out += [StageWindow(s.stage, s.started, s.ended) for s in self.states]
        return [w for w in out if w.start < until]


def assumed_gate(program: Program, mode: str, failing: frozenset[str] = frozenset()) -> GateOracle:
    """Plan's gate oracle: `pass` opens each gate as soon as the stage's work is done."""
    if mode == "fail":
        return lambda stage, st, now: False

    def oracle(stage: Stage, st: StageState, now: datetime) -> bool:
        if stage.id in failing:
            return False
        return now - st.started >= program.natural_length(stage)

    return oracle


def run_lifecycle(
    program: Program,
    start: datetime,
    days: int,
    gate: GateOracle,
    include_optional: Iterable[str] = (),
) -> Lifecycle:
    """Step a lifecycle through `days` local midnights."""
    lc = Lifecycle(program, start, frozenset(include_optional))
    d0 = start.astimezone(program.tz).date()
    for i in range(1, days + 1):
        lc.step(local_midnight(d0 + timedelta(days=i), program.tz), gate)
    return lc
