"""The compiled Program: what is due when, and how stages follow each other.

`plan`, `simulate` and `run` all call `Program.due()` for scheduled actions, `Program.on_event()`
for member events, and drive stages with the same `Lifecycle`. Only the gate oracle differs:
an assumption (plan), simulated metrics (simulate) or live metrics (run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from zoneinfo import ZoneInfo

from .catalog import MESSAGE_KINDS
from .model import Action, Cron, DayOffset, OnEvent, Playbook, Relative, Stage
from .schedule import apply_quiet_hours, cron_instants, local_midnight, to_instant

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
        for a in playbook.actions.values():
            by_stage.setdefault(a.stage, []).append(a)
        self.actions_by_stage = {k: tuple(v) for k, v in by_stage.items()}
        self._occurrences: dict[tuple[str, datetime], Occurrence] = {}
        # every scheduled action resolved to (root action, total offset from the root)
        self.roots: dict[str, tuple[Action, timedelta]] = {}
        for a in playbook.actions.values():
            root = self._root(a)
            if root is not None:
                self.roots[a.id] = root

    def _root(self, a: Action) -> tuple[Action, timedelta] | None:
        offset = timedelta(0)
        seen = set()
        while isinstance(a.schedule, Relative):
            if a.id in seen or a.schedule.anchor not in self.playbook.actions:
                return None
            seen.add(a.id)
            offset += a.schedule.offset
            a = self.playbook.actions[a.schedule.anchor]
        if isinstance(a.schedule, OnEvent):
            return None  # relative to a member event: scheduled per member by on_event()
        return a, offset

    # -- scheduled actions -----------------------------------------------------------------

    def due(self, windows: Sequence[StageWindow], t0: datetime, t1: datetime) -> list[Occurrence]:
        """Every scheduled occurrence going out in [t0, t1) while its stage is active."""
        by_stage: dict[str | None, list[StageWindow]] = {}
        for w in windows:
            by_stage.setdefault(w.stage, []).append(w)
        out: list[Occurrence] = []
        lo = t0 - DAY  # quiet hours move a send by less than a day
        for stage, ws in by_stage.items():
            for a in self.actions_by_stage.get(stage, ()):
                root = self.roots.get(a.id)
                if root is None:
                    continue
                base, offset = root
                for w in ws:
                    start = max(lo, w.start)
                    end = t1 if w.end is None else min(t1, w.end)
                    if start >= end:
                        continue
                    for sched in self._instants(base, w, start - offset, end - offset):
                        at = sched + offset
                        if not (start <= at < end):
                            continue
                        occ = self._occurrence(a, at)
                        if t0 <= occ.at < t1:
                            out.append(occ)
        out.sort(key=lambda o: (o.at, o.action))
        return out

    def _instants(
        self, base: Action, w: StageWindow, start: datetime, end: datetime
    ) -> list[datetime]:
        """Firings of a root action in [start, end), inside its own stage window."""
        own = w
        if base.stage != w.stage:
            return []  # anchors live in the same stage (checked by validate)
        s = base.schedule
        if isinstance(s, Cron):
            lo = max(start, own.start)
            hi = end if own.end is None else min(end, own.end)
            return cron_instants(s.expr, lo, hi, self.tz) if lo < hi else []
        if isinstance(s, DayOffset):
            d: date = own.start.astimezone(self.tz).date() + timedelta(days=s.day)
            at = to_instant(d, s.at, self.tz)
            inside = own.start <= at and (own.end is None or at < own.end)
            return [at] if inside and start <= at < end else []
        return []

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
            out.extend(self._chained(a, at, member))
        return out

    def _chained(self, anchor: Action, at: datetime, member: str) -> list[Occurrence]:
        out = []
        for a in self.playbook.actions.values():
            if isinstance(a.schedule, Relative) and a.schedule.anchor == anchor.id:
                when = at + a.schedule.offset
                out.append(self._occurrence(a, when, member))
                out.extend(self._chained(a, when, member))
        return out

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
