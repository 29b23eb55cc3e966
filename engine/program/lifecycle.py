"""The stage state machine that plan, simulate and run step once per local day.

`Lifecycle.start` begins a playbook (its starting stages are entered); `Lifecycle.restore`
picks up a saved `LifecycleState` without entering anything again, as a runtime restarted from
its store must. The lifecycle has ended once a stage has run and none is running any more (the
last stage finished, or an abort): nothing is due after that, not even the routines.

A stage leaves by one of its exits (`Stage.exits`; a single `exit:` is one exit named `pass`),
tried in order at each daily check once the stage's minimum duration is over: the first that
fires wins, and the transition names it. Whether an exit fires is the gate oracle's answer: an
`ExitOracle` is asked per exit (the simulator and the runtime, reading metric histories through
`gates.history_exits`), while a plain `GateOracle` (a bool per stage, as plan's assumed gates)
answers for the first exit only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from ..lang.model import Exit, Playbook, Stage
from ..lang.semantics import deadline_of, exits_of, starting_stages
from ..lang.semantics import hold_days as hold_days  # one home in lang; read here by program

DAY = timedelta(days=1)


class StageGraph(Protocol):
    """What the lifecycle reads of a compiled playbook (a `Program`)."""

    @property
    def playbook(self) -> Playbook:
        """The playbook."""
        ...

    @property
    def successors(self) -> Mapping[str, Sequence[str]]:
        """Stages that follow each stage by `after`."""
        ...


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
    event: str  # started | passed | timeboxed | extended | alert | goto | aborted | deadline
    detail: str = ""
    role: str | None = None
    exit: str | None = None  # `passed` (and its `goto`): the id of the exit that fired

    def as_dict(self) -> dict[str, str | None]:
        """Plain data: the plan's JSON and the store's saved lifecycle write it alike."""
        return {
            "at": self.at.isoformat(),
            "stage": self.stage,
            "event": self.event,
            "detail": self.detail,
            "role": self.role,
            "exit": self.exit,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, str | None]) -> Transition:
        """`as_dict`'s output back (data saved before exits had ids reads `exit` as None)."""
        return cls(
            datetime.fromisoformat(str(data["at"])),
            str(data["stage"]),
            str(data["event"]),
            data.get("detail") or "",
            data.get("role"),
            data.get("exit"),
        )


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
    exit: str | None = None  # the exit it left by (outcome `passed`)


# Plan's assumed gates and the first form of every oracle: does the stage's (first) exit fire?
GateOracle = Callable[[Stage, StageState, datetime], bool]


@dataclass(frozen=True, slots=True)
class ExitOracle:
    """Whether one exit of a stage fires at a daily check (its condition held for its `for:`).

    `Lifecycle.step` asks it for each exit in order and takes the first that fires.
    """

    fires: Callable[[Stage, StageState, datetime, Exit], bool]


def first_exit(
    stage: Stage, st: StageState, now: datetime, gate: GateOracle | ExitOracle
) -> Exit | None:
    """The exit that fires at this check: the first in order whose oracle answer is yes."""
    exits = exits_of(stage)
    if not exits:
        return None
    if isinstance(gate, ExitOracle):
        return next((e for e in exits if gate.fires(stage, st, now, e)), None)
    return exits[0] if gate(stage, st, now) else None


@dataclass(frozen=True)
class LifecycleState:
    """A lifecycle as a value: what a store saves and `Lifecycle.restore` reads back."""

    origin: datetime
    include_optional: frozenset[str]
    stages: tuple[StageState, ...]
    transitions: tuple[Transition, ...]
    finished: datetime | None


@dataclass
class Lifecycle:
    """The stage state machine, stepped once per local day by plan, simulate and run."""

    program: StageGraph
    origin: datetime  # when the playbook started: the routines run from here
    include_optional: frozenset[str] = frozenset()
    states: list[StageState] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    finished: datetime | None = None

    @classmethod
    def start(
        cls, program: StageGraph, at: datetime, include_optional: Iterable[str] = ()
    ) -> Lifecycle:
        """Begin the playbook at `at`: its starting stages are entered."""
        lc = cls(program, at, frozenset(include_optional))
        for sid in starting_stages(program.playbook, lc.include_optional):
            lc._enter(sid, at)
        return lc

    @classmethod
    def restore(cls, program: StageGraph, state: LifecycleState) -> Lifecycle:
        """Carry on from a saved state; no stage is entered again."""
        return cls(
            program,
            state.origin,
            state.include_optional,
            [replace(s) for s in state.stages],
            list(state.transitions),
            state.finished,
        )

    def state(self) -> LifecycleState:
        """The lifecycle as a value (stage states copied: stepping on does not change it)."""
        return LifecycleState(
            self.origin,
            self.include_optional,
            tuple(replace(s) for s in self.states),
            tuple(self.transitions),
            self.finished,
        )

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
        """Stage `sid` was left so that its `after:` successors start: timeboxed, or by an exit
        without `goto` (an exit that jumps elsewhere, e.g. `decline`, is not a pass for a join;
        its outcome still reads "passed" so counts of exits taken stay as they are)."""
        return any(s.stage == sid and self._joins(s) for s in self.states)

    def _joins(self, st: StageState) -> bool:
        if st.outcome == "timeboxed":
            return True
        if st.outcome != "passed":
            return False
        stage = self.program.playbook.stages[st.stage]
        return not any(e.id == st.exit and e.goto for e in exits_of(stage))

    def _finish(
        self, st: StageState, at: datetime, outcome: str, goto: str | None, exit: str | None = None
    ) -> None:
        st.ended, st.outcome, st.exit = at, outcome, exit
        self.transitions.append(Transition(at, st.stage, outcome, exit=exit))
        pb = self.program.playbook
        if goto:
            self.transitions.append(Transition(at, st.stage, "goto", goto, exit=exit))
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

    def step(self, now: datetime, gate: GateOracle | ExitOracle) -> None:
        """The daily check at local midnight `now`: exits (in order), deadlines, policies."""
        if self.finished:
            return
        pb = self.program.playbook
        for st in list(self.active):
            stage = pb.stages[st.stage]
            age = now - st.started
            ready = age >= (stage.min_duration or DAY)
            fired = first_exit(stage, st, now, gate) if ready else None
            if fired is not None:
                # an exit without `goto` starts the `after:` successors, as a plain pass
                self._finish(st, now, "passed", fired.goto, fired.id)
                continue
            if st.deadline is None or now < st.deadline:
                continue
            if not exits_of(stage) or stage.deadline is None:
                self._finish(st, now, "timeboxed", None)  # max duration reached
                continue
            self._apply_policy(st, stage, now)
            if self.finished:
                return
        if self.states and not self.active:
            self.finished = now  # the last stage is over and none follows: the playbook ended

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

    def windows(self, until: datetime, since: datetime | None = None) -> list[StageWindow]:
        """Stage windows begun before `until` (and not over by `since`), routines included.

        The routines' window ends when the lifecycle ends.
        """
        spans: list[tuple[str | None, datetime, datetime | None]] = [
            (None, self.origin, self.finished)
        ]
        spans += [(s.stage, s.started, s.ended) for s in self.states]
        return [
            StageWindow(stage, start, end)
            for stage, start, end in spans
            if start < until and (since is None or end is None or end > since)
        ]
