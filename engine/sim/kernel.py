"""The population model, vectorised over members and over the runs of a chunk.

Python loops over days (and over the few runs of a chunk for stage logic); every per-member step is
a NumPy array operation, but for the day's activity, hazard and departures, which one compiled
pass over each run's members does (fused.py, numba; imported by the simulation only). Each run
walks the same compiled Program as `plan` and `run`: the actions `Program.due()` returns for that
run's active stages fire, and a run leaves a stage by the first of its exits that holds on that
run's own metric history (`Lifecycle.step`, `history.exit_holds`). A playbook with member-level
constructs (channels, attributes, segments, admission, points, teams, counted metrics,
leaderboards, `where:`) adds their arrays and daily steps (constructs.py); one without them runs
the plain path unchanged. Equations: docs/simulation.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, ClassVar, cast

import numpy as np

from ..core import expr as ex
from ..core.catalog import BUILTIN_METRICS
from ..core.schedule import cron_instants, local_midnight
from ..core.timeutil import format_duration
from ..lang.model import Action, Exit, Expression, Playbook, Stage
from ..lang.semantics import guard_chain, is_member_message, quiet_window
from ..program import Lifecycle, Program, StageState, StageWindow, gates, start_date
from ..program import history as H
from ..program import metrics as defs
from ..program.events import EventRule, Trigger
from ..program.lifecycle import ExitOracle, exits_of
from ..program.tiers import demote_silent, review
from . import effects as fx
from .constructs import POP7, Apply, ChunkState, Cohort, Constructs, member_level
from .dynamics import COLUMNS as _DYNAMICS_COLUMNS
from .dynamics import Dynamics
from .effects import in_effect
from .scenario import Scenario
from .streams import Draw, Streams

METRICS: tuple[str, ...] = tuple(m for m in BUILTIN_METRICS if m != "days_in_stage")
_NONE: frozenset[str] = frozenset()  # no guard failed
SILENT_NEVER = -30000  # silence counter of empty slots and departed members
_POP7 = POP7
_EMPTY = {"join_day": -1, "silent": SILENT_NEVER}  # an empty slot's values (else 0)
# the scheduled effects the compiled day reads per tier, in its order (fused.activity: tables)
_TABLE_KEYS = ("speak", "participation", "ugc", "conversion")
_NO_F2 = np.zeros((1, 1), dtype=np.float32)  # stands for an absent member array
_NO_B2 = np.zeros((1, 1), dtype=np.bool_)
_NO_U2 = np.zeros((1, 1), dtype=np.uint8)
_NO_DAY = np.zeros((0, 4), dtype=np.float32)
_NO_F3 = np.zeros((1, 1, 4), dtype=np.float32)
JOINED = Trigger("member.joined")
APPROVED = Trigger("member.approved")
# Bytes one member costs during a simulated day beyond its own arrays (`slot_bytes`): the day's
# temporaries (two float32 uniforms, the interactions' uniforms, the flags, event message counts,
# the joiners' mask, the masks and indices of the event and tier passes, a tier review's
# columns) and, on the day the seed joins, the joiners' float64 draws. The compiled day
# (fused.py) makes no per-member temporaries of its own. tracemalloc measured a peak of 159
# bytes a member against 170 estimated (8 runs of 100,000 seed members, the reference playbook).
DAY_BYTES = 64
# Slots per member: a chunk starts with twice the seed's slots and grows by 1.6x when full
# (`_Pop.grow`), so up to half of them are spare.
SLOT_SLACK = 2.0
# Scheduled sends and tasks one simulator computes over all its days and run states (ten plans of
# `sop plan`'s limit): about a second of work and a few MB; only a cron that fires every few
# minutes in many actions comes near it.
MAX_FIRINGS = 1_000_000


class SimulationTooLarge(Exception):
    """A run outgrew the memory budget; the message says where and what to change."""


@dataclass
class Effects:
    """Today's aggregated effects of one run's scheduled actions, per tier (last axis)."""

    speak: np.ndarray
    participation: np.ndarray
    churn: np.ndarray  # multiplier on the hazard
    ugc: np.ndarray
    conversion: np.ndarray
    invites: np.ndarray
    messages: np.ndarray
    joins: float = 0.0
    checkin: bool = False  # a check-in is due today
    points: np.ndarray | None = None  # reward points per member of each tier
    members: tuple[Action, ...] = ()  # actions that reach members one by one (constructs.py)
    fired: tuple[Action, ...] = ()  # every action fired today whose `if:` holds (workload)
    interactions: np.ndarray | None = None  # messages a participant writes (effects.py)


@dataclass
class EventRules:
    """The Program's member-event rules active in one run today, aggregated per trigger."""

    speak: dict[Trigger, float]
    churn: dict[Trigger, float]  # (1 + churn): starts a fading window (effects.py)
    conversion: dict[Trigger, float]
    messages: dict[Trigger, int]
    actions: dict[Trigger, list[Action]]
    events: set[str] = field(default_factory=set)  # events some active rule listens for
    # what the rules without `where:` set off besides effects (tasks, points, redemptions)
    extra: dict[Trigger, Apply] = field(default_factory=dict)
    # rules with `where:`: per trigger, (the rule, what it sets off for a member it admits)
    filtered: dict[Trigger, list[tuple[EventRule, Apply]]] = field(default_factory=dict)

    def listens(self, trigger: Trigger) -> bool:
        """Whether some active rule fires on `trigger`."""
        return trigger in self.actions or trigger in self.filtered

    def triggers(self) -> set[Trigger]:
        """Every trigger some active rule fires on."""
        return {*self.actions, *self.filtered}


@dataclass
class GuardEnv:
    """What the `if:` guards of one run read on one day; each guard is evaluated once."""

    metrics: dict[str, float]
    lc: Lifecycle
    day: int
    sim: Simulator
    _seen: dict[str, bool] = field(default_factory=dict)
    history: Any = None  # the run's metric history up to yesterday (window functions)

    def holds(self, a: Action) -> bool:
        """Whether `a`'s own `if:` holds (True without one)."""
        hit = self._seen.get(a.id)
        if hit is None:
            guard: Expression | None = a.guard
            if guard is None or guard.node is None:
                hit = True
            else:
                env = {
                    **self.metrics,
                    "days_in_stage": self.sim._days_in_stage(self.lc, a.stage, self.day),
                }
                if self.history is not None and ex.windows(guard.node):
                    env.update(H.window_values(guard.node, self.history))
                hit = gates.judge(guard.node, env).holds  # undefined: it does not hold
            self._seen[a.id] = hit
        return hit


@dataclass
class Reach:
    """Today's effects of the actions that reach members one by one, per member."""

    speak: np.ndarray
    participation: np.ndarray
    churn: np.ndarray  # multiplier on the hazard
    ugc: np.ndarray
    conversion: np.ndarray
    messages: np.ndarray
    invites: np.ndarray  # per run: invitations the recipients send
    redeemed: list[tuple[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=list)
    any_part: bool = False
    interactions: np.ndarray | None = None  # messages a participant writes (effects.py)

    @classmethod
    def empty(cls, runs: int, n: int) -> Reach:
        """No effect on anyone yet."""

        def z() -> np.ndarray:
            return np.zeros((runs, n), dtype=np.float32)

        return cls(
            z(),
            z(),
            np.ones((runs, n), np.float32),
            z(),
            z(),
            np.zeros((runs, n), np.int32),
            np.zeros(runs),
        )


def _distinct(items: Sequence[Any]) -> tuple[list[Any], np.ndarray]:
    """The distinct objects of `items` (by identity, in order of first appearance), and each
    item's index among them."""
    seen: dict[int, int] = {}
    uniq: list[Any] = []
    idx = np.empty(len(items), dtype=np.intp)
    for i, x in enumerate(items):
        j = seen.get(id(x))
        if j is None:
            j = seen[id(x)] = len(uniq)
            uniq.append(x)
        idx[i] = j
    return uniq, idx


class RuleSet(Sequence[EventRules]):
    """Each run's event rules today; runs in the same state share one (cached) EventRules, so
    per-run values are computed once per distinct object and gathered."""

    def __init__(
        self, runs: list[EventRules], distinct: tuple[list[Any], np.ndarray] | None = None
    ) -> None:
        self.runs = runs
        self.uniq, self.idx = distinct or _distinct(runs)
        self._memo: dict[Any, Any] = {}

    def __getitem__(self, i: Any) -> Any:
        return self.runs[i]

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Any:
        return iter(self.runs)

    def listening(self, trigger: Trigger) -> tuple[bool, bool]:
        """(some run has a rule without `where:` on `trigger`, some run has one with it)."""
        key = ("listening", trigger)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = (
                any(trigger in u.actions for u in self.uniq),
                any(trigger in u.filtered for u in self.uniq),
            )
        return hit

    def triggers_of(self, event: str) -> set[Trigger]:
        """The triggers of `event` some run's rules fire on (built in run order, as a set)."""
        key = ("triggers", event)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = {t for u in self.uniq for t in u.triggers() if t.event == event}
        return hit

    def cached(self, key: Any, compute: Any) -> Any:
        """`compute()`, made once for these rules (today's)."""
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = compute()
        return hit

    def uniform(self, key: Any, value: Any, dtype: Any) -> Any:
        """`value(rules)` as one scalar when every run has the same, else per run."""
        memo = ("uniform", key)
        hit = self._memo.get(memo)
        if hit is None:
            values = np.array([value(u) for u in self.uniq], dtype=dtype)
            # every distinct rules object is some run's: equal values, one for all
            hit = values[0] if (values == values[0]).all() else values[self.idx]
            self._memo[memo] = hit
        return hit


class Today:
    """Each run's scheduled effects today, and the (few) distinct Effects objects they share."""

    def __init__(
        self, effs: list[Effects], distinct: tuple[list[Any], np.ndarray] | None = None
    ) -> None:
        self.effs = effs
        self.uniq, self.idx = distinct or _distinct(effs)
        self._cols: dict[str, np.ndarray] = {}

    def table(self, name: str) -> np.ndarray:
        """(runs, tiers) of an Effects field (speak, churn, messages, ...)."""
        hit = self._cols.get(name)
        if hit is None:
            hit = self._cols[name] = np.stack([getattr(e, name) for e in self.uniq])[self.idx]
        return hit

    def each(self, value: Any) -> np.ndarray:
        """(runs,) of `value(effects)`."""
        return np.array([value(e) for e in self.uniq])[self.idx]


class _Runs:
    """What the day reads of each run's lifecycle, as arrays over the runs: read again for a run
    only when its lifecycle changed (each change appends a transition) or, for its stage
    windows, when a closed window ages out."""

    def __init__(self, sim: Simulator, lcs: Sequence[Lifecycle]) -> None:
        R, stages = len(lcs), list(sim.pb.stages)
        self.sim, self.lcs = sim, lcs
        self.column = {sid: i for i, sid in enumerate(stages)}
        self.version = np.full(R, -1, dtype=np.int64)
        self.open = np.zeros(R, dtype=bool)  # acquisition has started
        self.finished = np.zeros(R, dtype=bool)
        self.start_day = np.full((R, len(stages)), np.nan)  # running stages' start days
        self.deadline = np.full(R, np.inf)  # the earliest deadline of a running stage (epoch s)
        self.windows = np.zeros(R, dtype=np.int64)  # id of the stage windows that can send today
        self.windows_until = np.full(R, -1, dtype=np.int64)  # the last day they stay the same
        self.refresh(range(R))

    def refresh(self, rows: Any) -> None:
        """Read again the runs in `rows` whose lifecycle changed."""
        sim = self.sim
        for r in rows:
            lc = self.lcs[r]
            v = len(lc.transitions)
            if self.version[r] == v:
                continue
            self.version[r] = v
            self.open[r] = sim._open(lc)
            self.finished[r] = lc.finished is not None
            row = self.start_day[r]
            row[:] = np.nan
            deadlines = [math.inf]
            for s in lc.active:
                row[self.column[s.stage]] = (s.started.astimezone(sim.tz).date() - sim.start).days
                if s.deadline is not None:
                    deadlines.append(s.deadline.timestamp())
            # a deadline dropped without a transition stays here: the run is then checked daily
            self.deadline[r] = min(deadlines)
            self.windows_until[r] = -1

    def running(self, stage: str) -> np.ndarray:
        """(runs,) whether `stage` is running."""
        return ~np.isnan(self.start_day[:, self.column[stage]])

    def running_stages(self) -> list[str]:
        """The stages running in some run, in the playbook's order."""
        some = ~np.isnan(self.start_day).all(axis=0)
        return [sid for sid, i in self.column.items() if some[i]]

    def window_ids(self, d: int) -> np.ndarray:
        """Each run's stage windows on day `d`, as ids (equal windows, equal ids)."""
        sim = self.sim
        for r in np.flatnonzero(self.windows_until < d).tolist():
            windows = sim._day_windows(self.lcs[r], d)
            wid = sim._windows_ids.setdefault(windows, len(sim._windows_ids))
            if wid == len(sim._windows_of):
                sim._windows_of.append(windows)
            self.windows[r] = wid
            self.windows_until[r] = sim._windows_last_day(windows, d)
        return self.windows


@dataclass
class ChunkResult:
    """What one chunk of runs produced."""

    metrics: np.ndarray  # (runs, days, len(metric_names))
    metric_names: list[str]
    stage_entered: np.ndarray  # (runs, stages) day index or -1
    stage_passed: np.ndarray  # (runs, stages) day index or -1
    stage_outcome: list[dict[str, str]]
    expect_failures: list[tuple[int, int, str]]  # (run, day, what)
    member_days: int = 0
    first_run: int = 0
    # per run: stage -> why its gate was undecided at its last check (an undefined metric)
    gate_notes: list[dict[str, str]] = field(default_factory=list)
    # per run: stage -> the id of the exit it left by (stages left by an exit only)
    stage_exits: list[dict[str, str]] = field(default_factory=list)
    segments: np.ndarray | None = None  # (runs, days, segments) members of each segment
    workload: np.ndarray | None = None  # (runs, days, roles) staff tasks a day
    by_channel: np.ndarray | None = None  # (runs, days, metric x channel) by_channel values
    by_channel_names: list[str] = field(default_factory=list)
    channel_joins: np.ndarray | None = None  # (runs, channels) joins via each channel
    # the runs' draws of the scenario's uncertain parameters (parameters.py): (runs, names)
    parameters: np.ndarray | None = None
    parameter_names: list[str] = field(default_factory=list)


@dataclass
class _Pop:
    """Member arrays of a chunk: shape (runs, capacity)."""

    runs: int
    cap: int
    max_cap: int = 1 << 62  # members a run may reach within the memory budget
    # the arrays the playbook's member-level constructs add: name -> dtype or (dtype, width)
    extra: dict[str, Any] = field(default_factory=dict)
    days: int = 0  # simulated days: join days are 0 .. days
    n: np.ndarray = field(init=False)
    arrays: dict[str, np.ndarray] = field(init=False)
    by_day: np.ndarray = field(init=False)  # (runs, days + 1) slots below n by join day

    SPEC: ClassVar[dict[str, Any]] = {
        "alive": np.bool_,
        "join_day": np.int16,
        "hazard": np.float32,
        "speak": np.float32,
        "speak7": np.uint8,
        "part7": np.uint8,
        "silent": np.int16,
        "ugc": np.int16,
        "payments": np.int16,
        "invites": np.int32,
        "violations": np.int16,
        "streak": np.int16,
        "tier": np.int8,
        "referred": np.bool_,
        "events": np.float32,
    }

    def __post_init__(self) -> None:
        self.cap = min(self.cap, self.max_cap)
        self.n = np.zeros(self.runs, dtype=np.int64)
        self.by_day = np.zeros((self.runs, self.days + 1), dtype=np.int64)
        self.shapes = {k: _shape(t) for k, t in {**self.SPEC, **self.extra}.items()}
        self.arrays = {
            k: np.zeros((self.runs, self.cap, *tail), dtype=t)
            for k, (t, tail) in self.shapes.items()
        }
        self.arrays["join_day"][:] = -1
        self.arrays["silent"][:] = SILENT_NEVER

    def __getitem__(self, k: str) -> np.ndarray:
        return self.arrays[k]

    def flat(self, k: str) -> np.ndarray:
        """Array `k` with runs and slots as one axis (a view): slot j of run r is r * cap + j."""
        a = self.arrays[k]
        return a.reshape(self.runs * self.cap, *a.shape[2:])

    def reset(self, flat: np.ndarray, keep: frozenset[str] | set[str] = frozenset()) -> None:
        """Every array but those in `keep` (the caller writes them next) back to its
        empty-slot value at the (flat) slots `flat`."""
        for k in self.arrays:
            if k not in keep:
                self.flat(k)[flat] = _EMPTY.get(k, 0)

    def grow(self, need: int) -> None:
        if need <= self.cap:
            return
        if need > self.max_cap:
            raise SimulationTooLarge(
                f"a run reached {need:,} members, more than the memory budget allows"
                f" ({self.max_cap:,} members a run)"
            )
        cap = min(max(need, int(self.cap * 1.6) + 64), self.max_cap)
        for k, a in self.arrays.items():
            b = np.zeros((self.runs, cap, *a.shape[2:]), dtype=a.dtype)
            if k == "join_day":
                b[:] = -1
            elif k == "silent":
                b[:] = SILENT_NEVER
            b[:, : self.cap] = a
            self.arrays[k] = b
        self.cap = cap

    def compact(self, rows: slice | None = None) -> None:
        """Drop departed members of runs `rows` (all) so daily work scales with the living."""
        alive = self.arrays["alive"]
        for r in range(self.runs)[rows or slice(None)]:
            n = int(self.n[r])
            keep = np.flatnonzero(alive[r, :n])
            m = len(keep)
            if m == n:
                continue
            for k, a in self.arrays.items():
                a[r, :m] = a[r, keep]
                a[r, m:n] = _EMPTY.get(k, 0)
            self.n[r] = m
            self.by_day[r] = np.bincount(self.arrays["join_day"][r, :m], minlength=self.days + 1)


class Simulator:
    """Runs chunks of the model for one playbook and scenario."""

    def __init__(
        self, playbook: Playbook, scenario: Scenario, days: int, memory_budget: int | None = None
    ) -> None:
        # the actions the calibrated history already ran keep no effect (effects.in_effect)
        playbook = in_effect(playbook, scenario.history_includes)
        self.pb = playbook
        self.sc = scenario
        self.days = days
        self.memory_budget = memory_budget
        self.program = Program(playbook)
        self.tz = self.program.tz
        # simulated day 0 is the playbook's start day, as in `sop plan` (community.start, else
        # the documented default): seasonal and weekly crons fall on the same dates
        self.start: date = start_date(playbook)
        # told the number of runs at the end of each simulated day (progress reports)
        self.on_day: Callable[[int], None] | None = None
        # set to a list to record each run's scheduled action ids per day (differential tests)
        self.record: list[list[tuple[str, ...]]] | None = None
        self._midnights: dict[tuple[date, int], Any] = {}
        self.tiers = [t.id for t in playbook.tiers.levels] if playbook.tiers else ["all"]
        # a built-in name keeps its built-in meaning (validate refuses redeclaring it: SOP270);
        # one column per name, so the report and the gates read the same number
        builtins = playbook.builtin_metrics()
        self.construct_metrics = [m for m in builtins if m not in BUILTIN_METRICS]
        self.custom = [m for m in playbook.metrics if m not in builtins]
        self.metric_names = [*METRICS, *self.construct_metrics, *self.custom]
        self.cx = Constructs(playbook, scenario)
        self.dyn = Dynamics(playbook, scenario, days)  # retention, effects, parameters per run
        self.stage_exits = {sid: exits_of(st) for sid, st in playbook.stages.items()}
        self.stage_ids = list(playbook.stages)
        self._due_cache: dict[tuple[Any, ...], tuple[str, ...]] = {}
        self._windows_read: dict[tuple[Any, ...], tuple[int, Any, list[Any]]] = {}
        self._rank = {t: i for i, t in enumerate(self.tiers)}
        self._firings = 0  # scheduled firings computed so far (held in _due_cache), <= MAX_FIRINGS
        self._effects_cache: dict[tuple[Any, ...], Effects] = {}
        self._event_cache: dict[tuple[Any, ...], EventRules] = {}
        self._event_base: dict[tuple[Any, ...], tuple[list[EventRule], tuple[Action, ...]]] = {}
        self._review_days = self._tier_review_days()
        self.capacity = playbook.community.capacity or 500
        # `if:` guards of each action and of the anchors it is chained after: a chained action
        # does not fire when its anchor did not
        self._guards: dict[str, tuple[Action, ...]] = {
            a.id: self._guard_chain(a) for a in playbook.actions.values()
        }
        self.has_guards = any(self._guards.values())
        # guards with window functions read the run's history (engine/program/history.py)
        self.window_guards = any(
            a.guard is not None and a.guard.node is not None and ex.windows(a.guard.node)
            for a in playbook.actions.values()
        )
        self._chunk: ChunkState | None = None  # the chunk being simulated (constructs.py)
        self._pop: _Pop | None = None
        self._day = 0
        self._depth = 0  # redemptions setting off redemptions
        self._runs: _Runs | None = None  # the runs of the chunks being simulated
        self._windows_ids: dict[tuple[StageWindow, ...], int] = {}
        self._windows_of: list[tuple[StageWindow, ...]] = []  # the windows of each id
        self._welcome_ok: dict[tuple[int, int], bool] = {}
        # (day, stage windows' id) -> (effects, event rules) without guards: shared by every chunk
        self._today_cache: dict[tuple[int, int], tuple[Effects, EventRules]] = {}

    # -- calendar --------------------------------------------------------------------------

    def day_start(self, d: int) -> Any:
        """The instant simulated day `d` starts."""
        hit = self._midnights.get((self.start, d))
        if hit is None:
            hit = self._midnights[(self.start, d)] = local_midnight(
                self.start + timedelta(days=d), self.tz
            )
        return hit

    def _tier_review_days(self) -> set[int]:
        t = self.pb.tiers
        if not t or not t.review_cron:
            return set()
        end = self.day_start(self.days)
        return {
            (x.astimezone(self.tz).date() - self.start).days
            for x in cron_instants(t.review_cron, self.day_start(0), end, self.tz)
        }

    # -- what fires today ------------------------------------------------------------------

    def _shared_today(self, lcs: Sequence[Lifecycle], d: int) -> tuple[Today, RuleSet]:
        """Each run's effects and event rules today, computed once per distinct set of stage
        windows (no `if:` guards: they depend on nothing else)."""
        memo = self._today_cache
        assert self._runs is not None
        ids = self._runs.window_ids(d)
        distinct, first, which = np.unique(ids, return_index=True, return_inverse=True)
        hits = []
        for w, r in zip(distinct.tolist(), first.tolist(), strict=True):
            hit = memo.get((d, w))
            if hit is None:
                eff = self.effects_today(lcs[r], d, windows=self._windows_of[w])
                hit = memo[(d, w)] = (eff, self.event_rules(lcs[r]))
            hits.append(hit)
        which = which.reshape(-1)
        runs = which.tolist()
        e_uniq, e_idx = _distinct([h[0] for h in hits])
        r_uniq, r_idx = _distinct([h[1] for h in hits])
        return (
            Today([hits[i][0] for i in runs], (e_uniq, e_idx[which])),
            RuleSet([hits[i][1] for i in runs], (r_uniq, r_idx[which])),
        )

    def _windows_last_day(self, windows: tuple[StageWindow, ...], d: int) -> int:
        """The last day from `d` on whose `_day_windows` are still `windows`, the lifecycle
        unchanged: closed windows drop out a day after their end."""
        ends = [w.end for w in windows if w.end is not None]
        if not ends:
            return self.days
        last = d
        while last + 1 < self.days and all(
            self.day_start(last + 1) - timedelta(days=1) < e for e in ends
        ):
            last += 1
        return last

    def _key(self, lc: Lifecycle) -> tuple[Any, ...]:
        return tuple(sorted((s.stage, s.started) for s in lc.active))

    # -- `if:` guards --------------------------------------------------------------------------

    def _guard_chain(self, a: Action) -> tuple[Action, ...]:
        return guard_chain(self.pb.actions, a)

    def guard_env(
        self, lc: Lifecycle, prev: dict[str, float], d: int, history: Any = None
    ) -> GuardEnv:
        """What an `if:` reads on day `d`: the run's metrics at the close of day d-1 (and its
        history up to then, for window functions)."""
        return GuardEnv(prev, lc, d, self, history=history)

    def _holds(self, a: Action, env: GuardEnv | None) -> bool:
        """Whether `a` and every guarded anchor before it pass their `if:` today."""
        chain = self._guards.get(a.id, ())
        if not chain or env is None:
            return True
        return all(env.holds(x) for x in chain)

    def _day_windows(self, lc: Lifecycle, d: int) -> tuple[StageWindow, ...]:
        """The stage windows that can send anything on day `d`: open ones, and those that
        closed within a day (quiet hours carry a send at most a day forward)."""
        since = self.day_start(d) - timedelta(days=1)
        return tuple(lc.windows(self.day_start(d + 1), since))

    def _due_today(
        self, lc: Lifecycle, d: int, windows: tuple[StageWindow, ...] | None = None
    ) -> tuple[str, ...]:
        """Ids of the scheduled actions due today in this run's state (with repeats).

        `Program.due` decides, from the stage windows as they stand today, exactly as `sop plan`
        decides for the same stage timing (tests/test_one_semantics.py holds them equal).
        """
        if windows is None:
            windows = self._day_windows(lc, d)
        key = (d, windows)
        hit = self._due_cache.get(key)
        if hit is not None:
            return hit
        # each window's firings come from its stage opened at its start, read once over the
        # simulated days (runs whose stages started on the same day share them); a window that
        # has closed keeps those scheduled before its end (a send quiet hours moved past the end
        # still goes out, as in Program.due)
        firings: list[tuple[datetime, str]] = []
        for w in windows:
            for out, aid, scheduled in self._window_firings(w.stage, w.start, d):
                if w.end is None or scheduled < w.end:
                    firings.append((out, aid))
        firings.sort()  # the order of Program.due(): time, then id
        hit = self._due_cache[key] = tuple(aid for _, aid in firings)
        return hit

    def _window_firings(
        self, stage: str | None, start: datetime, d: int
    ) -> list[tuple[datetime, str, datetime]]:
        """(out, action id, scheduled) of the firings going out on day `d` of `stage` opened
        at `start` and still open: Program.firings_by_day over the simulated days, read as far
        as asked, counted against MAX_FIRINGS as they are made."""
        key = (stage, start)
        known = self._windows_read.get(key)
        if known is None:
            # nothing is scheduled before the window opens: its days are read from its first
            first = min(max(0, (start.astimezone(self.tz).date() - self.start).days), self.days)
            window = (StageWindow(stage, start, None),)
            t0, t1 = self.day_start(first), self.day_start(self.days)
            known = self._windows_read[key] = (
                first,
                self.program.firings_by_day(window, t0, t1),
                [],
            )
        first, days, read = known
        if d < first:
            return []
        d -= first
        while len(read) <= d:
            today = next(days, None)
            got = [] if today is None else [(f[0], f[1], f[2]) for f in today]
            self._firings += len(got)
            if self._firings > MAX_FIRINGS:
                raise SimulationTooLarge(
                    f"day {first + len(read)}: the playbook schedules more than"
                    f" {MAX_FIRINGS:,} sends and tasks in the simulated days; simulate fewer"
                    " --days or make its densest cron fire less often (sop plan shows where)"
                )
            read.append(got)
        return read[d]

    def effects_today(
        self,
        lc: Lifecycle,
        d: int,
        env: GuardEnv | None = None,
        windows: tuple[StageWindow, ...] | None = None,
    ) -> Effects:
        """Aggregated effects of the scheduled actions due today whose `if:` holds (`windows`:
        the run's `_day_windows`, when known)."""
        if windows is None:
            windows = self._day_windows(lc, d)
        due = self._due_today(lc, d, windows)
        failed = _NONE
        if self.has_guards:
            guarded = {aid for aid in due if self._guards[aid]}
            failed = frozenset(a for a in guarded if not self._holds(self.pb.actions[a], env))
        key = (due, failed)  # what Effects is made of: runs with the same sends share it
        hit = self._effects_cache.get(key)
        if hit is not None:
            return hit
        T = len(self.tiers)
        z = [np.zeros(T, dtype=np.float32) for _ in range(7)]
        eff = Effects(z[0], z[1], z[2], z[3], z[4], z[5], z[6])
        eff.churn[:] = 1.0
        members: list[Action] = []
        fired: list[Action] = []
        for aid in due:
            if aid in failed:
                continue
            a = self.pb.actions[aid]
            fired.append(a)
            if self.cx.active and member_level(a):
                members.append(a)  # reaches members one by one: ChunkState.recipients
                eff.joins += a.effect.joins
                eff.checkin |= a.kind == "checkin"
                continue
            mask = self._audience(a.audience)
            if mask is not None and a.reward_points:
                if eff.points is None:
                    eff.points = np.zeros(T, dtype=np.float32)
                eff.points[mask] += a.reward_points
            if mask is not None:
                e = a.effect
                eff.speak[mask] += e.speak
                eff.participation[mask] = 1 - (1 - eff.participation[mask]) * (1 - e.participation)
                eff.churn[mask] *= 1 + e.churn
                eff.ugc[mask] += e.ugc
                eff.conversion[mask] += e.conversion
                eff.invites[mask] += e.invites
                if e.interactions:
                    if eff.interactions is None:
                        eff.interactions = np.zeros(T, dtype=np.float32)
                    eff.interactions[mask] += e.interactions
                if is_member_message(a):
                    eff.messages[mask] += 1
                eff.joins += e.joins
                eff.checkin |= a.kind == "checkin"
        eff.members, eff.fired = tuple(members), tuple(fired)
        self._effects_cache[key] = eff
        return eff

    def _audience(self, audience: str) -> np.ndarray | None:
        T = len(self.tiers)
        if audience == "everyone":
            return np.ones(T, dtype=bool)
        if audience.startswith("tier:") and audience[5:] in self.tiers:
            return np.array([t == audience[5:] for t in self.tiers])
        return None  # staff, member (events), referrer: no scheduled effect on members

    def event_rules(self, lc: Lifecycle, env: GuardEnv | None = None) -> EventRules:
        """The Program's member-event rules active in this run whose `if:` holds, per trigger."""
        base = (self._key(lc), lc.finished is None)
        known = self._event_base.get(base)
        if known is None:
            active = [s.stage for s in lc.active]
            table = self.program.event_table(active) if lc.finished is None else []
            guarded = tuple(
                x
                for r in table
                for x in (r.action, *(c.action for c in r.chain))
                if self._guards.get(x.id)
            )
            known = self._event_base[base] = (table, guarded)
        table, guarded = known
        failed = frozenset(x.id for x in guarded if not self._holds(x, env)) if guarded else _NONE
        key = (*base, failed)
        hit = self._event_cache.get(key)
        if hit is not None:
            return hit
        rules = EventRules({}, {}, {}, {}, {})
        for r in table:
            if r.action.id in failed:
                continue  # its `if:` does not hold today: neither it nor its chain fires
            chain = [r.action, *_fired_chain(r, failed)]
            if r.action.where is not None:  # reaches only the members it admits
                extra = Apply()
                for i, c in enumerate(chain):
                    extra.add(c, i == 0)
                for t in r.triggers:
                    rules.events.add(t.event)
                    rules.filtered.setdefault(t, []).append((r, extra))
                continue
            for t in r.triggers:
                rules.events.add(t.event)
                rules.actions.setdefault(t, []).extend(chain)
                if self.cx.active or any(c.kind == "task" for c in chain):
                    extra = rules.extra.setdefault(t, Apply())
                    for c in chain:  # effects and messages are aggregated below
                        if c.kind == "task" and c.owner:
                            extra.tasks[c.owner] += 1
                        extra.points += c.reward_points or 0
                        if c.redeem_item:
                            extra.redeem = (*extra.redeem, c.redeem_item)
                for c in chain:
                    rules.speak[t] = rules.speak.get(t, 0.0) + c.effect.speak
                    rules.churn[t] = rules.churn.get(t, 1.0) * (1 + c.effect.churn)
                    rules.conversion[t] = rules.conversion.get(t, 0.0) + c.effect.conversion
                # the event's own action goes out now; the chain behind it on later days
                rules.messages[t] = rules.messages.get(t, 0) + is_member_message(r.action)
        self._event_cache[key] = rules
        return rules

    def _days_in_stage(self, lc: Lifecycle, stage: str | None, d: int) -> int:
        """Days since `stage` started in this run (a routine: since the latest stage started)."""
        states = [s for s in lc.active if stage is None or s.stage == stage]
        if not states:
            return 0
        started = max(s.started for s in states)
        return d - (started.astimezone(self.tz).date() - self.start).days

    # -- one chunk ---------------------------------------------------------------------------

    def run_chunk(self, runs: int, seed: np.random.SeedSequence, first_run: int = 0) -> ChunkResult:
        """Simulate `runs` runs for `self.days` days."""
        return self.run_chunks([(runs, seed, first_run)])[0]

    def run_chunks(
        self, specs: Sequence[tuple[int, np.random.SeedSequence, int]]
    ) -> list[ChunkResult]:
        """Simulate chunks of runs `(runs, seed, first_run)` together, in one vectorised step;
        each chunk's results are those it gives alone (streams.py). When the chunks together
        outgrow the memory budget, each is run alone (so alone decides what is too large)."""
        if len(specs) > 1:
            try:
                return self._run(specs)
            except SimulationTooLarge:
                pass
            return [self._run([s])[0] for s in specs]
        return self._run(specs)

    def _run(self, specs: Sequence[tuple[int, np.random.SeedSequence, int]]) -> list[ChunkResult]:
        rng = Streams.seeded([s for _, s, _ in specs], [n for n, _, _ in specs])
        sc, act, cx = self.sc, self.sc.activity, self.cx
        D, R, T = self.days, rng.runs, len(self.tiers)
        dyn = self.dyn
        # the runs' parameter draws, each chunk's from a stream of its own (parameters.py)
        dyn.start_chunks([(n, s) for n, s, _ in specs])
        M = len(self.metric_names)
        mi = {m: i for i, m in enumerate(self.metric_names)}
        out = np.zeros((R, D, M), dtype=np.float64)  # float64: a gate reads 20 % as run reads it
        seed_users = dyn.seed_users()
        extra = {**cx.columns(), **dyn.columns()}
        max_cap = 1 << 62
        if self.memory_budget is not None:
            max_cap = max(1, self.memory_budget // (R * bytes_per_member(extra)))
        pop = _Pop(R, max(256, int(seed_users.max(initial=0)) * 2), max_cap, extra, D)
        lcs = [Lifecycle.start(self.program, self.day_start(0)) for _ in range(R)]
        if self.record is not None:
            self.record[:] = [[] for _ in range(R)]
        st = self._chunk = ChunkState(cx, R, D, rng)
        self._pop = pop  # for the chunk's length only (tests read the members at the end)
        self._depth = 0
        joined_by_day = np.zeros((R, D + 1), dtype=np.float64)
        left_by_day = np.zeros((R, D + 1), dtype=np.float64)
        ugc_by_day = np.zeros((R, D + 1), dtype=np.float64)
        bass_adopters = np.zeros(R)
        referral_joins = np.zeros(R)
        total_joins = np.zeros(R)
        ever_paid = np.zeros(R)  # departed payers too: compaction must not change a ratio
        # survivors[k][:, j]: of day j's joiners, those still members after k days (day j+k-1)
        survivors = {k: np.zeros((R, D + 1)) for k in defs.RETENTION_DAYS}
        gate_notes: list[dict[str, str]] = [{} for _ in range(R)]
        custom_state = dyn.metric_states(R)
        expect_fail: list[tuple[int, int, str]] = []
        failed_runs: set[tuple[int, int]] = set()
        member_days = np.zeros(R, dtype=np.int64)
        inv_tau = dyn.column("acquisition.invite_decay_days", sc.acquisition.invite_decay_days)
        cap_expect = [e for e in self.pb.expect if e.max_messages_per_member_per_day]
        welcome_expect = [e for e in self.pb.expect if e.event]
        hist = np.zeros((R, D + 1))
        n_alive_prev = np.zeros(R)
        opened = np.zeros(R, dtype=bool)
        inv_mean_speak = dyn.inv_mean_speak()
        decay_lut = dyn.decay_table(D)  # (D + 2,), or per run when its parameters are drawn
        ugc_per_speak = dyn.column("activity.ugc_per_speak", act.ugc_per_speak)
        violation_per_speak = dyn.column("activity.violation_per_speak", act.violation_per_speak)
        base_daily = dyn.column("conversion.base_daily", sc.conversion.base_daily)

        prev = [self._before_start() for _ in lcs] if self.has_guards else []
        runs = self._runs = _Runs(self, lcs)
        noted = np.zeros(R, dtype=bool)  # runs with an undecided exit noted at the last check
        # what the compiled day reads of the run's parameters and law (fused.activity)
        from . import fused

        decay_2d = np.atleast_2d(decay_lut).astype(np.float32)
        run_f = np.ascontiguousarray(
            np.stack(
                [
                    fused.f32(x, (R, 1))[:, 0]
                    for x in (
                        dyn.speak_cap,
                        inv_mean_speak,
                        ugc_per_speak,
                        violation_per_speak,
                        base_daily,
                    )
                ],
                axis=1,
            )
        )
        law_delta, law_f, law_quit = dyn.law_arrays()
        remove_at = (self.pb.moderation.remove_at or 0) if self.pb.moderation else 0
        churn_bounds = (fx.CHURN_DECAY, fx.HAZARD_FLOOR, fx.HAZARD_CEIL)
        if self.pb.tiers and T > 1:
            core_tier, vip_tier = 1, max(2, T - 1)
        else:
            core_tier, vip_tier = -1, -1
        day_counts = np.zeros((R, 6), dtype=np.int64)
        for d in range(D):
            self._day = d
            if self.has_guards:
                envs = [
                    self.guard_env(lc, prev[r], d, self._history(out, r, d, mi))
                    for r, lc in enumerate(lcs)
                ]
                today = Today([self.effects_today(lc, d, envs[r]) for r, lc in enumerate(lcs)])
                rules = RuleSet([self.event_rules(lc, envs[r]) for r, lc in enumerate(lcs)])
            else:
                today, rules = self._shared_today(lcs, d)
            effs = today.effs
            if self.record is not None:
                for r, lc in enumerate(lcs):
                    self.record[r].append(self._due_today(lc, d))
            # -- staff work and single-member audiences, on the members as the day starts ------
            n0 = int(pop.n.max()) if R else 0
            rng.set_widths(pop.n)
            sl0 = np.s_[:, :n0]
            alive0 = pop["alive"][sl0]
            st.scheduled_work(pop, sl0, d, [e.fired for e in today.uniq], alive0, today.idx)
            reach = self._reach(pop, st, sl0, d, effs, alive0) if cx.active else None
            # -- acquisition ----------------------------------------------------------------
            n_before = pop.n.copy()
            alive = pop["alive"]
            members = n_alive_prev
            a_cfg = sc.acquisition
            is_open = runs.open
            new = np.where(is_open & ~opened, seed_users, 0).astype(np.int64)
            opened |= is_open
            organic = dyn.value("acquisition.organic_per_day", a_cfg.organic_per_day)
            new += rng.poisson(organic, d, Draw.ORGANIC) * opened
            if a_cfg.market > 0 and (a_cfg.bass_p or a_cfg.bass_q):
                left, prob = bass_chances(
                    bass_adopters,
                    dyn.value("acquisition.market", a_cfg.market),
                    dyn.value("acquisition.bass_p", a_cfg.bass_p),
                    dyn.value("acquisition.bass_q", a_cfg.bass_q),
                )
                step = rng.binomial(left, prob, d, Draw.BASS).astype(float)
                step *= opened
                bass_adopters += step
                new += step.astype(np.int64)
            # referral: invitation activity decays with tenure (via the join-day histogram)
            ages = d - np.arange(D + 1)
            weights = np.where(ages >= 0, np.exp(-np.maximum(ages, 0) / inv_tau), 0.0)
            invites = (hist * weights).sum(axis=1) * dyn.value(
                "acquisition.invites_per_member_per_day", a_cfg.invites_per_member_per_day
            )
            invites += today.each(lambda e: float((e.invites * 1.0).mean())) * members
            if dyn.event_acq:
                invites += dyn.take_invites()  # sent because of event actions (effects.py)
            conversion = dyn.value("acquisition.invite_conversion", a_cfg.invite_conversion)
            cohort = None
            if cx.active:
                if reach is not None:
                    invites += reach.invites
                invites = invites * st.referral_open(lcs, d)
                # invitations are events of their own (`invite`): drawn, then each joins with
                # the conversion (Poisson thinning: the same law as the plain model's joins)
                sent = _poisson(rng, invites, pop.max_cap, d, Draw.INVITATION)
                st.invites_total = sent.astype(float)
                st.invites_today = self._invite_senders(pop, st, sent, n0, rng)
                ref = rng.binomial(sent, conversion, d, Draw.INVITED)
            else:
                ref = _poisson(rng, invites * conversion, pop.max_cap, d, Draw.REFERRAL)
            bursts = today.each(lambda e: e.joins)
            if dyn.event_acq:
                bursts = bursts + dyn.take_joins()  # brought by event actions (effects.py)
            burst = _poisson(rng, bursts, pop.max_cap, d, Draw.ACTION)
            burst *= opened
            if cx.active:
                cohort = st.arrivals(lcs, new + burst, ref, opened, d)
                new = cohort.counts(R)
                ref = np.bincount(cohort.run[cohort.referred], minlength=R).astype(np.int64)
            else:
                new += ref + burst
            referral_joins += ref
            total_joins += new
            self._credit_referrers(pop, ref, rng)
            self._add_members(pop, new, ref, d, rng, cohort)
            if cx.active:
                st.assign_teams(pop, n_before, new)
            joined_by_day[:, d] = new
            hist[:, d] += new
            # -- events on joining -----------------------------------------------------------
            alive = pop["alive"]
            n_max = int(pop.n.max()) if R else 0
            sl = np.s_[:, :n_max]
            rng.set_widths(pop.n)
            # today's joiners: each run's slots n_before .. n, as flat positions of the day view
            joined_flat = _slots_between(n_before, pop.n, n_max)
            # int32: a uint8 wrapped at 256, so 300 messages passed a cap of 100
            ev_msgs = np.zeros((R, n_max), dtype=np.int32)
            self._apply_event(pop, rules, JOINED, None, ev_msgs, sl, at=joined_flat)
            if self.pb.admission is not None:
                self._apply_event(pop, rules, APPROVED, None, ev_msgs, sl, at=joined_flat)
                self._outsiders(rules, st, d)
            if reach is not None:
                ev_msgs[:, :n0] += reach.messages
                for item, done in reach.redeemed:
                    self._redeemed(pop, rules, item, done, ev_msgs, sl)
            # -- activity, participation, conversion, churn: one compiled pass (fused.py) -------
            jd = pop["join_day"][sl]
            tier = pop["tier"][sl]
            inter = np.stack(
                [
                    np.zeros(T, np.float32) if e.interactions is None else e.interactions
                    for e in today.uniq
                ]
            )[today.idx]
            tables = np.stack([*(today.table(k) for k in _TABLE_KEYS), inter, today.table("churn")])
            reach_cols, reach_on, n_reach = _reach_columns(reach, R)
            # who may write in an activity today (each chunk decides as it would alone)
            talk_on = (inter != 0).any(axis=1) | dyn.talk_runs()
            if reach is not None and reach.interactions is not None:
                talk_on |= (reach.interactions != 0).any(axis=1)
            flags = np.zeros((R, n_max), dtype=np.uint8)
            ugc_today = np.zeros(R, dtype=np.int64)
            arr = pop.arrays
            fused.activity(
                d,
                pop.n,
                arr["alive"],
                arr["join_day"],
                arr["speak"],
                arr["events"],
                arr["speak7"],
                arr["part7"],
                arr["silent"],
                arr["ugc"],
                arr["payments"],
                arr["violations"],
                arr["streak"],
                arr["tier"],
                arr["hazard"],
                arr.get("churn_fx", _NO_F2),
                arr["quit"] if law_quit else _NO_B2,
                arr.get("ev_day", _NO_F3),
                arr.get("ev_on", _NO_U2),
                flags,
                decay_2d,
                run_f,
                tables,
                reach_cols,
                n_reach,
                reach_on,
                rng.day_keys(d),
                talk_on,
                law_delta,
                law_f,
                np.array(
                    [dyn.take_day_pending(), dyn.churn, law_quit, remove_at, *churn_bounds],
                    dtype=np.float64,
                ),
                today.each(lambda e: e.checkin).astype(np.bool_),
                ever_paid,
                ugc_today,
                pop.by_day,
            )
            # -- moderation, silence, streaks, anniversaries ---------------------------------------
            fire = functools.partial(self._fire_when, pop, rules, ev_msgs)
            if rules.triggers_of("member.violation"):
                fire("member.violation", "violations", flags, fused.VIOL)
            fire("member.silent", "silent")
            fire("member.checkin_streak", "streak")
            if any("member.anniversary" in rr.events for rr in rules.uniq):
                fire("member.anniversary", "join_day", from_day=d)  # tenure d - jd, from jd
            # -- counters, points, milestones, redemptions --------------------------------------
            events: dict[str, Any] = {}
            if cx.active:
                checkin = today.each(lambda e: e.checkin)[:, None]
                part = (flags & fused.PART) != 0
                joined_today = np.zeros((R, n_max), dtype=bool)
                joined_today.reshape(-1)[joined_flat] = True
                events = {
                    "joined": joined_today,
                    "message": (flags & fused.SPEAK) != 0,
                    "post": (flags & fused.UGC) != 0,
                    "checkin": part & checkin,
                    "activity": part,
                    "violation": (flags & fused.VIOL) != 0,
                    "payment": (flags & fused.PAYS) != 0,
                    "left": (flags & fused.LEAVE) != 0,
                }
                self._counters(pop, st, rules, sl, d, effs, events, tier, alive[sl], ev_msgs)
            # -- departures --------------------------------------------------------------------
            left_today = np.zeros(R, dtype=np.int64)
            fused.depart(
                pop.n, flags, arr["alive"], arr["join_day"], arr["silent"], hist, left_today
            )
            left_by_day[:, d] = left_today
            ugc_by_day[:, d] = ugc_today
            # -- tiers ---------------------------------------------------------------------------
            if self.pb.tiers:
                self._tiers(pop, rules, ev_msgs, sl, d, jd)
            # -- metrics -----------------------------------------------------------------------
            arr = pop.arrays
            alive_now = arr["alive"][sl]
            fused.counts(
                pop.n,
                flags,
                arr["alive"],
                arr["speak7"],
                arr["part7"],
                arr["tier"],
                arr["payments"],
                _POP7,
                core_tier,
                vip_tier,
                day_counts,
            )
            n_alive = day_counts[:, 0].astype(float)
            n_alive_prev = n_alive
            member_days += day_counts[:, 0]
            m = out[:, d, :]
            m[:, mi["members"]] = n_alive
            m[:, mi["new_members"]] = new
            speakers = day_counts[:, 1]
            m[:, mi["daily_speakers"]] = speakers
            m[:, mi["daily_speak_rate"]] = defs.share_of_members(speakers, n_alive)
            m[:, mi["weekly_participation"]] = defs.share_of_members(day_counts[:, 2], n_alive)
            for k, surv in survivors.items():
                if d - k + 1 >= 0:  # day d-k+1's joiners have been members k days tonight
                    surv[:, d - k + 1] = hist[:, d - k + 1]
                m[:, mi[f"retention_d{k}"]] = defs.retention(joined_by_day, surv, d, k)
            m[:, mi["core_members"]] = day_counts[:, 3]
            m[:, mi["vip_members"]] = day_counts[:, 4]
            m[:, mi["paying_members"]] = day_counts[:, 5]
            m[:, mi["conversion_rate"]] = defs.conversion_rate(ever_paid, total_joins)
            m[:, mi["fission_rate"]] = defs.fission_rate(referral_joins, total_joins)
            m[:, mi["fission_multiplier"]] = defs.fission_multiplier(referral_joins, total_joins)
            lo = max(0, d - 6)
            left_week = left_by_day[:, lo : d + 1].sum(axis=1)
            m[:, mi["churn_rate"]] = defs.churn_rate(left_week, n_alive)
            m[:, mi["ugc_posts"]] = ugc_by_day[:, lo : d + 1].sum(axis=1)
            m[:, mi["groups"]] = defs.groups(n_alive, self.capacity)
            m[:, mi["community_age"]] = d
            if cx.active:
                menv = st.env(pop, sl, d)  # the members at the close of the day
                measured = st.construct_metrics(pop, sl, d, alive_now, total_joins, menv)
                measured.update(
                    st.counted_metrics(
                        pop, sl, d, alive_now, events, (flags & fused.LEAVE) != 0, menv
                    )
                )
                for name, v in measured.items():
                    m[:, mi[name]] = v
                st.segment_sizes(d, alive_now, menv)
            self._custom_metrics(m, mi, custom_state, n_alive, rng)
            # -- expectations ----------------------------------------------------------------
            self._expectations(
                d,
                today,
                rules,
                ev_msgs,
                sl,
                tier,
                alive_now,
                pop.n - n_before,
                cap_expect,
                welcome_expect,
                expect_fail,
                failed_runs,
                lcs,
            )
            # -- stages: the daily check at the next midnight ------------------------------------
            t_next = self.day_start(d + 1)
            table = self._exit_table(out, mi, d, runs)
            if self.has_guards:  # what tomorrow's `if:` guards read
                for r in range(R):
                    prev[r] = {name: float(m[r, i]) for i, name in enumerate(self.metric_names)}
            # a run is stepped when its check can do anything: an exit fires or is undecided,
            # last check's notes go stale, or a deadline is due (Lifecycle.step does the rest)
            check = noted | (runs.deadline <= t_next.timestamp())
            for (sid, _), (fires, unknown, _) in table.items():
                check |= (fires | unknown) & runs.running(sid)
            stepped = np.flatnonzero(check & ~runs.finished)
            for r in stepped.tolist():
                lcs[r].step(t_next, self._exit_oracle(table, r, out, mi, d, gate_notes[r]))
                noted[r] = bool(gate_notes[r])
            runs.refresh(stepped.tolist())
            if self.on_day is not None:
                self.on_day(R)
            if d % 7 == 6:
                for chunk in rng.rows:  # each chunk decides as it would alone
                    n = pop.n[chunk].sum()
                    if n and alive[chunk].sum() < 0.5 * n:
                        pop.compact(chunk)
        results = []
        for (_, _, first_run), chunk in zip(specs, rng.rows, strict=True):
            lo, hi = chunk.start, chunk.stop
            part = [(r - lo, day, w) for r, day, w in expect_fail if lo <= r < hi]
            days = int(member_days[chunk].sum())
            res = self._finish(out[chunk], lcs[chunk], part, days, first_run)
            res.gate_notes = gate_notes[chunk]
            res.workload = st.workload[chunk]
            if cx.active:
                res.segments = st.segments[chunk]
                res.by_channel, res.by_channel_names = st.by_channel[chunk], st.by_channel_names
                res.channel_joins = st.channel_joins[chunk].sum(axis=1)
            names, drawn = dyn.rp.table()
            if names:
                res.parameter_names, res.parameters = names, drawn[chunk]
            results.append(res)
        self._chunk = self._pop = None
        return results

    # -- pieces ------------------------------------------------------------------------------

    def _history(self, out: np.ndarray, r: int, d: int, mi: dict[str, int]) -> Any:
        """Run `r`'s metric history of the closed days before day `d` (window guards only)."""
        return H.ArrayHistory(out[r, :d, :], mi) if self.window_guards else None

    def _reach(
        self,
        pop: _Pop,
        st: ChunkState,
        sl: Any,
        d: int,
        effs: Sequence[Effects],
        alive: np.ndarray,
    ) -> Reach | None:
        """Effects of today's actions that reach members one by one (segments, leaderboards,
        `where:`, redemptions), on the members as the day starts; rewards and redemptions are
        booked at once."""
        acts = {a.id: a for e in effs for a in e.members}
        if not acts:
            return None
        R, n = alive.shape
        reach = Reach.empty(R, n)
        for a in acts.values():
            k = np.array([sum(x.id == a.id for x in e.members) for e in effs], dtype=np.float32)
            who = st.recipients(pop, sl, d, a, alive) & (k > 0)[:, None]
            if not who.any():
                continue
            w = who * k[:, None]  # an action due twice today reaches its members twice
            e = a.effect
            reach.speak += e.speak * w
            reach.participation = 1 - (1 - reach.participation) * (1 - e.participation) ** w
            reach.churn *= (1 + e.churn) ** w
            reach.ugc += e.ugc * w
            reach.conversion += e.conversion * w
            reach.invites += e.invites * w.sum(axis=1)
            reach.any_part |= bool(e.participation or e.ugc)
            if e.interactions:
                more = e.interactions * w
                reach.interactions = (
                    more if reach.interactions is None else reach.interactions + more
                )
            if is_member_message(a):
                reach.messages += w.astype(np.int32)
            if a.reward_points:
                st.earn(pop, sl, d, a.reward_points * w)
            if a.redeem_item:
                rows, cols = _nonzero2d(who)
                reach.redeemed.append((a.redeem_item, st.redeem(pop, rows, cols, a.redeem_item)))
        return reach

    def _invite_senders(
        self, pop: _Pop, st: ChunkState, sent: np.ndarray, n: int, rng: Streams
    ) -> np.ndarray | None:
        """Who sent today's invitations (uniformly among the living), when points or a counted
        metric need it per member."""
        if not self.cx.invites_by_member or not sent.any():
            return None
        out = np.zeros((pop.runs, n), dtype=np.int32)
        flat = _pick_living(pop, sent, rng, self._day, Draw.SENDER)
        if flat is not None:
            rows, cols = np.divmod(flat, pop.cap)
            np.add.at(out.reshape(-1), rows * n + cols, 1)
        return out

    def _outsiders(self, rules: Sequence[EventRules], st: ChunkState, d: int) -> None:
        """Staff tasks set off by applicants, who are not members: `member.applied` (filed
        today) and `member.rejected` (decided today)."""
        for event, counts in (
            ("member.applied", st.applications[:, d]),
            ("member.rejected", st.rejected[:, d]),
        ):
            trig = Trigger(event)
            for r, rr in enumerate(rules):
                if not counts[r]:
                    continue
                applies = [rr.extra.get(trig), *(x for _, x in rr.filtered.get(trig, ()))]
                for x in applies:
                    if x is not None:
                        st.event_work_run(r, d, x.tasks, float(counts[r]))

    def _counters(
        self,
        pop: _Pop,
        st: ChunkState,
        rules: Sequence[EventRules],
        sl: Any,
        d: int,
        effs: Sequence[Effects],
        events: dict[str, Any],
        tier: np.ndarray,
        alive: np.ndarray,
        ev_msgs: np.ndarray,
    ) -> None:
        """The day's counters (messages, check-ins), points earned, milestones crossed,
        redemptions and lapsed points; `events` gains `invite` and `redeem`."""
        cx = self.cx
        R, n = alive.shape
        pop["messages"][sl] += events["message"]
        pop["checkins"][sl] += events["checkin"]
        if st.invites_today is not None:
            events["invite"] = _pad(st.invites_today, (R, n))
        if self.pb.points is not None:
            amount = np.zeros((R, n), dtype=np.float32)
            for ev, pts in cx.earn.items():
                mask = events.get(ev)
                if mask is not None and pts:
                    amount += np.float32(pts) * mask
            if any(e.points is not None for e in effs):
                table = np.stack(
                    [
                        np.zeros(len(self.tiers), np.float32) if e.points is None else e.points
                        for e in effs
                    ]
                )
                amount += _gather(table, tier) * alive
            st.earn(pop, sl, d, amount)
        if "redeem" in cx.events:
            st.redeemed_today = np.zeros((R, n), dtype=bool)
        for m, hit in st.milestone_hits(pop, sl, d, alive):
            trig = cx.trigger_of(m)
            hit &= np.array([rr.listens(trig) for rr in rules])[:, None]
            pop["ms_fired:" + m.action][sl] |= hit
            self._apply_event(pop, rules, trig, hit, ev_msgs, sl)
        for item, rows, cols in st.voluntary(pop, sl, alive):
            self._redeemed(pop, rules, item, (rows, cols), ev_msgs, sl)
        if st.redeemed_today is not None:
            events["redeem"] = st.redeemed_today
        st.lapse(pop, sl, d)

    def _open(self, lc: Lifecycle) -> bool:
        """Acquisition is open once the scenario's start stage has been entered."""
        first = self.sc.acquisition.start_stage
        return first is None or any(s.stage == first for s in lc.states)

    def _exit_table(
        self, out: np.ndarray, mi: dict[str, int], d: int, runs: _Runs
    ) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """For each exit of a running stage, over the runs: whether it fires at the check after
        day `d` (history.exit_holds: held on each of its `for:` days in the stage), whether
        today's verdict is unknown (an undefined metric), and the stage's days_in_stage."""
        table: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        history = None
        R = len(runs.lcs)
        for sid in runs.running_stages():
            exits = self.stage_exits.get(sid, ())
            if not exits:
                continue
            dis = d + 1 - runs.start_day[:, runs.column[sid]]
            if history is None:
                history = H.ArrayHistory(out[:, : d + 1, :], mi)
            for e in exits:
                node = e.when.node
                none = np.zeros(R, dtype=bool)
                if node is None:
                    table[(sid, e.id)] = (none, none, dis)
                    continue
                fires, unknown = H.exit_state(node, e.hold, history, dis)
                table[(sid, e.id)] = (fires, np.broadcast_to(unknown, (R,)), dis)
        return table

    def _exit_oracle(
        self,
        table: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]],
        r: int,
        out: np.ndarray,
        mi: dict[str, int],
        d: int,
        notes: dict[str, str],
    ) -> ExitOracle:
        """Run `r`'s exit oracle at the check after day `d`, read from `_exit_table`; why an
        exit was undecided is noted per stage, as `gates.history_exits` notes it."""

        def fires(stage: Stage, st: StageState, now: Any, e: Exit) -> bool:
            exits = self.stage_exits.get(stage.id, ())
            if exits and e.id == exits[0].id:
                notes.pop(stage.id, None)  # a new check: the notes of the last one are stale
            hit = table.get((stage.id, e.id))
            if hit is None:
                return False
            fired, unknown, dis = hit
            if fired[r]:
                return True
            if unknown[r]:
                history = H.ArrayHistory(out[r, : d + 1, :], mi)
                verdict = gates.exit_verdict(e, history, float(dis[r]), self._why)
                if not verdict.decided:
                    note = verdict.note if len(exits) == 1 else f"exit {e.id}: {verdict.note}"
                    old = notes.get(stage.id)
                    notes[stage.id] = note if not old else f"{old}; {note}"
            return False

        return ExitOracle(fires)

    def _why(self, name: str, values: Mapping[str, float]) -> str:
        """Why metric `name` has no value in this simulation."""
        if name in BUILTIN_METRICS or name in self.construct_metrics:
            return defs.why_undefined(name, values, self.pb)
        metric = self.pb.metrics.get(name)
        if metric is not None and metric.definition is not None:
            return "its definition has no value (it reads an undefined metric or divides by 0)"
        if metric is not None and metric.count is not None:
            return "its `per` count is 0"
        return f"not modelled: add it under `metrics:` in scenario `{self.sc.name}`"

    def _before_start(self) -> dict[str, float]:
        """What an `if:` reads on day 0: no day has closed, so every ratio is undefined."""
        values = {n: v for n, v in defs.before_start(self.pb).items() if n in self.metric_names}
        for name in self.custom:
            model = self.sc.metrics.get(name)
            values[name] = self.dyn.metric_start(name) if model is not None else defs.UNDEFINED
            counted = self.pb.metrics[name]
            if counted.count is not None:  # counts start at 0; a ratio of counts is undefined
                values[name] = defs.UNDEFINED if counted.per is not None else 0.0
        for name in self.custom:
            metric = self.pb.metrics[name]
            if metric.definition and metric.definition.node:
                values[name] = float(ex.evaluate(metric.definition.node, values, defs.UNDEFINED))
        return values

    def _credit_referrers(self, pop: _Pop, ref: np.ndarray, rng: Streams) -> None:
        """Each referral join counts as an invite of a current member (for tier rules)."""
        flat = _pick_living(pop, ref, rng, self._day, Draw.REFERRER)
        if flat is not None:
            np.add.at(pop.flat("invites"), flat, 1)

    def _add_members(
        self,
        pop: _Pop,
        new: np.ndarray,
        ref: np.ndarray,
        d: int,
        rng: Streams,
        cohort: Cohort | None = None,
    ) -> None:
        """Place the day's joiners (`cohort`: with their channel, attributes and approval,
        sorted by run; referred joiners last in each run)."""
        total = int(new.sum())
        if not total:
            return
        pop.grow(int((pop.n + new).max()))
        # churn and speaking propensities (retention.py: the model, early quitters, coupling)
        hazard, speak, more = self._joiners(new, rng)
        # joiners in run order (as drawn): run r's go to slots n[r] .. n[r] + new[r]
        new = np.asarray(new, dtype=np.int64)
        rows, offset = _places(new)  # each joiner's run, and its place among its run's
        flat = rows * pop.cap + pop.n[rows] + offset
        # a slot is a new member's: nothing of an earlier occupant carries over (the columns
        # written below are written whole)
        written = {"alive", "join_day", "silent", "hazard", "speak", "referred", *more}
        if cohort is not None:
            written |= {"source", "approved", *cohort.attrs}
        pop.reset(flat, written)
        pop.flat("alive")[flat] = True
        pop.flat("join_day")[flat] = d
        pop.flat("silent")[flat] = 0
        pop.flat("hazard")[flat] = hazard
        pop.flat("speak")[flat] = speak
        pop.flat("referred")[flat] = offset >= np.repeat(new - np.asarray(ref, np.int64), new)
        for col, values in more.items():
            pop.flat(col)[flat] = values
        if cohort is not None:
            pop.flat("source")[flat] = cohort.source
            if "approved" in pop.arrays:
                pop.flat("approved")[flat] = cohort.approved
            for col, values in cohort.attrs.items():
                pop.flat(col)[flat] = values
        pop.n += new
        pop.by_day[:, d] += new

    def _joiners(self, new: np.ndarray, rng: Streams) -> tuple[Any, Any, dict[str, Any]]:
        """Dynamics.joiners: each joiner's normal scores under its run's key (the j-th joiner
        of run r today: pair j of r's), else each chunk's joiners from its own stream."""
        run_of, place = _places(new)
        scores = rng.normal_pairs(run_of, place, self._day, Draw.JOINERS)
        if rng.single:
            return self.dyn.joiners(new, rng.gens[0], scores=scores)
        chunks = list(zip(rng.gens, rng.rows, strict=True))
        return self.dyn.joiners(new, None, chunks, scores=scores)

    def _apply_event(
        self,
        pop: _Pop,
        rules: Sequence[EventRules],
        trigger: Trigger,
        who: np.ndarray | None,
        ev_msgs: np.ndarray,
        sl: Any,
        at: np.ndarray | None = None,
        **_: Any,
    ) -> None:
        """Apply the actions a trigger sets off to the members in `who` (masked, in place), or
        at the flat positions `at` of today's (runs, members) arrays."""
        rules = rules if isinstance(rules, RuleSet) else RuleSet(list(rules))
        plain, filtered = rules.listening(trigger)
        n = ev_msgs.shape[1]
        if filtered:
            if who is None:
                assert at is not None
                who = np.zeros(ev_msgs.shape, dtype=bool)
                who.reshape(-1)[at] = True
            self._apply_filtered(pop, rules, trigger, who, ev_msgs, sl)
        if not plain:
            return
        f32 = np.float32
        mult = rules.uniform(("churn", trigger), lambda u: u.churn.get(trigger, 1.0), f32)
        lift = rules.uniform(("speak", trigger), lambda u: u.speak.get(trigger, 0.0), f32)
        msgs = rules.uniform(("messages", trigger), lambda u: u.messages.get(trigger, 0), f32)
        # events touch few members: update them sparsely, by flat position, in one compiled
        # pass (fused.reached: dynamics.churn_effect's and event_effects' laws)
        flat = np.flatnonzero(np.asarray(who)) if at is None else at
        if not len(flat):
            return
        rows = flat // n
        R = len(rules)
        day = self.dyn.event_day_effects(rows, *self._event_sums(rules, trigger))
        from . import fused

        churn_on = self.dyn.churn and bool((mult != 1).any())
        fused.reached(
            flat,
            n,
            churn_on,
            pop["churn_fx"] if churn_on else _NO_F2,
            _per_run(mult, R, np.float32),
            np.float32(fx.HAZARD_FLOOR - 1),
            np.float32(fx.HAZARD_CEIL - 1),
            pop["events"],
            _per_run(lift, R, np.float32),
            ev_msgs,
            _per_run(msgs, R, np.int32),
            pop["ev_day"] if day is not None else _NO_F3,
            pop["ev_on"] if day is not None else _NO_U2,
            day if day is not None else _NO_DAY,
        )
        if any(trigger in u.extra for u in rules.uniq):
            extras = [u.extra.get(trigger) for u in rules.uniq]
            self._apply_extra(pop, rules, (extras, rules.idx), rows, flat - rows * n, ev_msgs, sl)

    def _event_sums(
        self, rules: RuleSet, trigger: Trigger
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dynamics.event_sums of each run's actions on `trigger`, computed once per distinct
        rules object of the day."""

        def compute() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            day, invites, joins = self.dyn.event_sums(
                [u.actions.get(trigger, ()) for u in rules.uniq]
            )
            return day[rules.idx], invites[rules.idx], joins[rules.idx]

        return cast(
            tuple[np.ndarray, np.ndarray, np.ndarray], rules.cached(("sums", trigger), compute)
        )

    def _apply_filtered(
        self,
        pop: _Pop,
        rules: Sequence[EventRules],
        trigger: Trigger,
        who: np.ndarray,
        ev_msgs: np.ndarray,
        sl: Any,
    ) -> None:
        """The rules with `where:`: each reaches the members it admits (EventRule.admits'
        rule: members.matches over their attributes)."""
        st = self._chunk
        assert st is not None
        groups: dict[int, tuple[EventRule, Apply]] = {}
        for rr in rules:
            for rule, extra in rr.filtered.get(trigger, ()):
                groups.setdefault(id(rule), (rule, extra))
        for rule, extra in groups.values():
            runs = np.array(
                [any(x is rule for x, _ in rr.filtered.get(trigger, ())) for rr in rules]
            )
            hit = who & runs[:, None]
            if not hit.any():
                continue
            hit &= self.cx.mm.condition(rule.action.where).mask(st.env(pop, sl, self._day))
            rows, cols = _nonzero2d(hit)
            if not len(rows):
                continue
            if extra.churn != 1:
                self.dyn.churn_effect(pop, sl, rows, cols, np.float32(extra.churn))
            self.dyn.event_effects(pop, sl, rows, cols, [extra.actions] * len(rules))
            if extra.speak:
                pop["events"][sl][rows, cols] += np.float32(extra.speak)
            if extra.messages:
                ev_msgs[rows, cols] += extra.messages
            every = np.zeros(len(rules), dtype=np.intp)
            self._apply_extra(pop, rules, ([extra], every), rows, cols, ev_msgs, sl)

    def _apply_extra(
        self,
        pop: _Pop,
        rules: Sequence[EventRules],
        extras: tuple[Sequence[Apply | None], np.ndarray],
        rows: np.ndarray,
        cols: np.ndarray,
        ev_msgs: np.ndarray,
        sl: Any,
    ) -> None:
        """Staff tasks (one per member), reward points and redemptions an event sets off
        (`extras`: the distinct Apply objects, each run's index among them)."""
        st, d = self._chunk, self._day
        assert st is not None
        per_run = np.bincount(rows, minlength=len(rules))
        uniq, idx = extras
        for u, x in enumerate(uniq):
            if x is None or not x.tasks:
                continue
            runs = np.flatnonzero((idx == u) & (per_run > 0))
            for owner, n in x.tasks.items():
                role = self.cx.role_index.get(owner)
                if role is not None and len(runs):  # whole counts: any order adds the same
                    st.workload[runs, d, role] += n * per_run[runs]
        pts = np.array([0.0 if x is None else x.points for x in uniq], dtype=np.float32)[idx]
        if pts.any():
            st.earn_sparse(pop, d, rows, cols, pts[rows])
        items = {i for x in uniq if x is not None for i in x.redeem}
        for item in sorted(items):
            on = np.array([x is not None and item in x.redeem for x in uniq], dtype=bool)[idx]
            sel = on[rows]
            done = st.redeem(pop, rows[sel], cols[sel], item)
            self._redeemed(pop, rules, item, done, ev_msgs, sl)

    def _redeemed(
        self,
        pop: _Pop,
        rules: Sequence[EventRules],
        item: str,
        done: tuple[np.ndarray, np.ndarray],
        ev_msgs: np.ndarray,
        sl: Any,
    ) -> None:
        """`member.redeemed` for the members who redeemed `item` (a rule without `item:`
        hears every redemption)."""
        rows, cols = done
        if not len(rows) or self._depth > 2:  # a redemption that redeems again stops here
            return
        who = np.zeros(ev_msgs.shape, dtype=bool)
        who[rows, cols] = True
        self._depth += 1
        for trig in (Trigger("member.redeemed", item), Trigger("member.redeemed")):
            self._apply_event(pop, rules, trig, who, ev_msgs, sl)
        self._depth -= 1

    def _fire_when(
        self,
        pop: _Pop,
        rules: Sequence[EventRules],
        ev_msgs: np.ndarray,
        event: str,
        column: str,
        among: np.ndarray | None = None,
        bit: int = 0,
        from_day: int | None = None,
    ) -> None:
        """Fire `event` for living members whose `column` equals a value some trigger listens
        for (with `bit`: among those whose day's flags `among` have it).

        Durations (`for`, `at`) are compared in whole days, the attribute's unit. With
        `from_day`, the value compared is `from_day - attribute` (tenure from the join day).
        """
        if not isinstance(rules, RuleSet):
            rules = RuleSet(list(rules))
        triggers = sorted(rules.triggers_of(event), key=lambda t: _in_days(t.value))
        if not triggers:
            return
        values = [_in_days(t.value) for t in triggers]
        if from_day is not None:
            values = [from_day - v for v in values]
        from . import fused

        # one compiled pass finds every member some trigger fires for, and which trigger (no
        # trigger changes the attribute: a pass per trigger would read it again)
        width = ev_msgs.shape[1]
        found = None
        if column == "join_day" and among is None:
            # join days: the slots are in join order, so only those members are read
            order = np.argsort(values, kind="stable")
            days = np.asarray(values, dtype=np.int64)[order]
            flat, which, served = fused.joined_on(days, pop.n, pop.by_day, pop["alive"], width)
            if served.all():
                found = flat, order[which]
        if found is None:
            found = fused.matching(
                pop[column],
                np.asarray(values, dtype=np.int64),
                pop.n,
                pop["alive"],
                _NO_U2 if among is None else among,
                bit,
                width,
            )
        flat, which = found
        if not len(flat):
            return
        sl = np.s_[:, :width]
        for i, t in enumerate(triggers):
            mine = flat if len(triggers) == 1 else flat[which == i]
            self._apply_event(pop, rules, t, None, ev_msgs, sl, at=mine)

    def _tiers(
        self,
        pop: _Pop,
        rules: Sequence[EventRules],
        ev_msgs: np.ndarray,
        sl: Any,
        d: int,
        join_day: np.ndarray,
    ) -> None:
        tiers = self.pb.tiers
        assert tiers is not None
        tier = pop["tier"][sl]
        alive = pop["alive"][sl]
        silent = pop["silent"][sl]
        changed = demote_silent(tiers, tier, silent)
        review_today = d in self._review_days
        moved = (
            rules.triggers_of("member.tier_changed")
            if isinstance(rules, RuleSet)
            else {x for rr in rules for x in rr.triggers() if x.event == "member.tier_changed"}
        )
        if not review_today and not moved:
            return
        if review_today:
            env = {
                "tenure_days": d - join_day,
                "weekly_interactions": (_POP7[pop["speak7"][sl]] + _POP7[pop["part7"][sl]]).astype(
                    np.float32
                ),
                "ugc_posts": pop["ugc"][sl],
                "payments": pop["payments"][sl],
                "invites": pop["invites"][sl],
                "checkin_streak": pop["streak"][sl],
                "violations": pop["violations"][sl],
                "silent_days": silent,
            }
            changed |= review(tiers, tier, env)
        changed &= alive
        if changed.any():
            for trig in moved:
                # a rule with `tier:` fires only for members who moved into that tier
                into = None if trig.value is None else self._rank.get(str(trig.value))
                if trig.value is not None and into is None:
                    continue  # an unknown tier (validate: SOP205) is never reached
                hit = changed if into is None else changed & (tier == into)
                self._apply_event(pop, rules, trig, hit, ev_msgs, sl)

    def _custom_metrics(
        self,
        m: np.ndarray,
        mi: dict[str, int],
        state: dict[str, np.ndarray],
        members: np.ndarray,
        rng: Streams,
    ) -> None:
        for name in self.custom:
            if name in self.cx.counted:
                continue  # counted from the members (ChunkState.counted_metrics)
            model = self.sc.metrics.get(name)
            if model is not None:  # a walk bounded by the metric's unit (walks.py)
                z = rng.normal(self._day, Draw.METRIC + self.custom.index(name))
                m[:, mi[name]] = self.dyn.metric_step(name, state, members, z)
            else:  # neither modelled nor (yet) defined: the simulation does not know it
                m[:, mi[name]] = defs.UNDEFINED
        for name in self.custom:  # definitions read built-ins and modelled metrics
            metric = self.pb.metrics[name]
            if metric.definition and metric.definition.node:
                env = {k: m[:, i] for k, i in mi.items()}
                with np.errstate(all="ignore"):  # an absurd definition overflows to inf, quietly
                    m[:, mi[name]] = ex.evaluate(metric.definition.node, env, defs.UNDEFINED)

    def _welcome_sent(self, rr: EventRules, i: int, e: Any) -> bool:
        """Whether `rr`'s rules send expectation `e`'s action within its time to joiners
        (EventRules are cached: their ids stay)."""
        ok = self._welcome_ok.get((id(rr), i))
        if ok is None:
            ok = self._welcome_ok[(id(rr), i)] = any(
                a.id == e.action and self._delay_ok(a, e.within) for a in rr.actions.get(JOINED, [])
            )
        return ok

    def _expectations(
        self,
        d: int,
        today: Today,
        rules: Sequence[EventRules],
        ev_msgs: np.ndarray,
        sl: Any,
        tier: np.ndarray,
        alive: np.ndarray,
        joined: np.ndarray,  # (runs,): how many members joined today
        caps: list[Any],
        welcomes: list[Any],
        fails: list[tuple[int, int, str]],
        failed: set[tuple[int, int]],
        lcs: list[Lifecycle],
    ) -> None:
        for i, e in enumerate(caps):
            cap = e.max_messages_per_member_per_day
            sched = today.table("messages")
            if (sched == sched[:, :1]).all():  # every tier gets the same scheduled messages
                worst = sched[:, 0] + ev_msgs.max(axis=1, initial=0)
            else:  # events only reach the living, so no mask is needed here
                worst = (_gather(sched, tier) + ev_msgs).max(axis=1, initial=0)
            for r in (int(x) for x in np.flatnonzero(worst > cap)):
                if (r, 1000 + i) not in failed:
                    failed.add((r, 1000 + i))
                    fails.append((r, d, f"a member received {int(worst[r])} messages (cap {cap})"))
        anyone = joined > 0 if welcomes else None
        for i, e in enumerate(welcomes):
            if e.event != "member.joined":
                continue
            assert anyone is not None
            rs = rules if isinstance(rules, RuleSet) else RuleSet(list(rules))
            # whether each distinct rules object sends the welcome in time, gathered per run
            sends = np.array([self._welcome_sent(u, i, e) for u in rs.uniq], dtype=bool)
            # (a stopped playbook promises nothing any more)
            for r in np.flatnonzero(anyone & ~sends[rs.idx]).tolist():
                if (r, i) in failed or lcs[r].finished is not None:
                    continue
                failed.add((r, i))
                stages = ",".join(s.stage for s in lcs[r].active) or "none"
                within = format_duration(e.within) if e.within else "time"
                fails.append(
                    (
                        r,
                        d,
                        f"{int(joined[r])} joiner(s) not sent"
                        f" `{e.action}` within {within} (active stages: {stages})",
                    )
                )

    def _delay_ok(self, a: Action, within: timedelta | None) -> bool:
        # the Program's anchor resolution: cycle-guarded, the offset from the triggering event
        offset = self.program.anchored[a.id].offset
        q = quiet_window(a)
        if q is not None:
            start = q.start.hour * 60 + q.start.minute
            end = q.end.hour * 60 + q.end.minute
            offset += timedelta(minutes=(end - start) % 1440)
        return within is None or offset <= within

    def _finish(
        self,
        out: np.ndarray,
        lcs: list[Lifecycle],
        fails: list[tuple[int, int, str]],
        member_days: int,
        first_run: int,
    ) -> ChunkResult:
        S = len(self.stage_ids)
        entered = np.full((len(lcs), S), -1, dtype=np.int16)
        passed = np.full((len(lcs), S), -1, dtype=np.int16)
        outcomes = []
        exits: list[dict[str, str]] = []
        for r, lc in enumerate(lcs):
            res: dict[str, str] = {}
            took: dict[str, str] = {}
            for st in lc.states:
                j = self.stage_ids.index(st.stage)
                day = (st.started.astimezone(self.tz).date() - self.start).days
                if entered[r, j] < 0:
                    entered[r, j] = day
                if st.outcome == "passed" and st.ended is not None:
                    passed[r, j] = (st.ended.astimezone(self.tz).date() - self.start).days
                    if st.exit is not None:
                        took[st.stage] = st.exit
                res[st.stage] = st.outcome
            outcomes.append(res)
            exits.append(took)
        return ChunkResult(
            out,
            self.metric_names,
            entered,
            passed,
            outcomes,
            [(first_run + r, d, w) for r, d, w in fails],
            member_days,
            first_run,
            stage_exits=exits,
        )


def _reach_columns(reach: Reach | None, runs: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(the per-member effects of `reach` as fused.activity reads them: speak, participation,
    ugc, conversion, interactions, churn factor; which of them are present; their width)."""
    on = np.zeros(6, dtype=np.bool_)
    if reach is None:
        return np.zeros((6, 1, 1), dtype=np.float32), on, 0
    n0 = reach.speak.shape[1]
    cols = np.zeros((6, runs, n0), dtype=np.float32)
    cols[5] = 1
    parts = (
        reach.speak,
        reach.participation if reach.any_part else None,
        reach.ugc if reach.any_part else None,
        reach.conversion,
        reach.interactions,
        reach.churn,
    )
    for k, x in enumerate(parts):
        if x is not None:
            cols[k] = x
            on[k] = True
    return cols, on, n0


def _poisson(rng: Streams, lam: np.ndarray, limit: int, d: int, draw: Draw) -> Any:
    """Poisson joins per run, refused (not drawn) when their mean alone exceeds the members
    budget."""
    lam = np.maximum(np.nan_to_num(np.asarray(lam, dtype=float), nan=0.0, posinf=np.inf), 0)
    worst = float(lam.max(initial=0.0))
    if worst > limit:
        what = {Draw.INVITATION: "invitation", Draw.REFERRAL: "referral"}.get(draw, "action")
        raise SimulationTooLarge(
            f"day {d}: {worst:.3g} {what} joins expected in one day, more than the memory"
            f" budget allows ({limit:,} members a run)"
        )
    return rng.poisson(lam, d, draw)


def _pick_living(pop: _Pop, k: np.ndarray, rng: Streams, day: int, draw: Draw) -> np.ndarray | None:
    """`k[r]` members of each run r drawn uniformly (with replacement) among its living, by
    flat position in the (runs, capacity) arrays; None when nobody is drawn."""
    runs = np.flatnonzero(k)
    if not len(runs):
        return None
    from . import fused

    alive = pop["alive"]
    living = fused.living_counts(alive, pop.n, runs)
    size = np.where(living > 0, k[runs], 0)  # a run with nobody living draws nothing
    if not size.any():
        return None
    # each pick is an index among its run's living, the j-th pick of run r under r's key
    run_of, place = _places(size)
    idx = rng.integers(runs[run_of], place, living[run_of], day, draw)
    return cast(np.ndarray, fused.living_at(alive, pop.n, runs, size.astype(np.int64), idx))


def _widen(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A writable array of `shape` from a broadcastable one (a per-tier column)."""
    x = np.asarray(x, dtype=np.float32)
    return x.copy() if x.shape == shape else np.broadcast_to(x, shape).copy()


def _pad(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`x` (runs, members at the start of the day) padded with zeros to today's members."""
    if x.shape == shape:
        return x
    out = np.zeros(shape, dtype=x.dtype)
    out[:, : x.shape[1]] = x
    return out


def member_columns(playbook: Playbook, scenario: Scenario, days: int) -> dict[str, Any]:
    """The member arrays a simulation adds to _Pop.SPEC: the member-level constructs' and the
    dynamics' (what `Simulator` allocates)."""
    pb = in_effect(playbook, scenario.history_includes)
    return {**Constructs(pb, scenario).columns(), **Dynamics(pb, scenario, days).columns()}


def _shape(spec: Any) -> tuple[Any, tuple[int, ...]]:
    """(dtype, trailing shape) of a member array's spec: a dtype or (dtype, width)."""
    if isinstance(spec, tuple):
        return spec[0], (int(spec[1]),)
    return spec, ()


def slot_bytes(extra: dict[str, Any]) -> int:
    """Bytes of one slot of the member arrays: _Pop.SPEC and the `extra` columns (the
    member-level constructs' and the dynamics')."""
    total = 0
    for spec in {**_Pop.SPEC, **extra}.values():
        t, tail = _shape(spec)
        total += np.dtype(t).itemsize * int(np.prod(tail or (1,)))
    return total


def bytes_per_member(extra: dict[str, Any]) -> int:
    """Bytes one member costs during a simulated day: its slots' arrays with the growth slack,
    the day's temporaries, and the NumPy temporaries the member-level constructs build from
    their own arrays (once more their size)."""
    constructs = slot_bytes({k: v for k, v in extra.items() if k not in _DYNAMICS_COLUMNS})
    constructs -= slot_bytes({})
    return math.ceil(SLOT_SLACK * slot_bytes(extra)) + DAY_BYTES + constructs


BYTES_PER_MEMBER = bytes_per_member({})  # a playbook without constructs or dynamics columns


def _places(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For `counts[r]` items of each run r in run order: each item's run and its place (0, 1,
    ...) among its run's."""
    counts = np.asarray(counts, dtype=np.int64)
    rows = np.repeat(np.arange(len(counts)), counts)
    return rows, np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def _slots_between(lo: np.ndarray, hi: np.ndarray, width: int) -> np.ndarray:
    """Flat positions, in a (runs, width) view, of each run r's slots lo[r] .. hi[r]."""
    rows, offset = _places(hi - lo)
    return np.asarray(rows * width + lo[rows] + offset, dtype=np.int64)


def _per_run(x: Any, runs: int, dtype: Any) -> np.ndarray:
    """A scalar or per-run value as a new array of one value per run (writable, like every
    array the compiled functions take: numba compiles a read-only view apart)."""
    out = np.empty(runs, dtype=dtype)
    out[:] = x
    return out


def _nonzero2d(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.nonzero of a 2-D mask, several times faster via the flat index."""
    flat = np.flatnonzero(mask)
    return np.divmod(flat, mask.shape[1])


def _days(td: timedelta) -> int:
    return int(td.total_seconds() // 86400)


def _in_days(value: object) -> int:
    """A trigger's value in the unit of the member attribute it is compared with."""
    if isinstance(value, timedelta):
        return _days(value)
    return int(value) if isinstance(value, int) else 0


def _fired_chain(rule: EventRule, failed: frozenset[str]) -> list[Action]:
    """The actions chained behind a rule that fire: one whose `if:` fails skips its chain."""
    out: list[Action] = []
    skipped: set[str] = set()
    for link in rule.chain:
        if link.anchor in skipped or link.action.id in failed:
            skipped.add(link.action.id)
        else:
            out.append(link.action)
    return out


def _gather(table: np.ndarray, tier: np.ndarray) -> np.ndarray:
    """Per-member values of a (runs, tiers) table; a broadcastable column when tiers agree."""
    if table.shape[1] == 1 or (table == table[:, :1]).all():
        return table[:, :1]
    flat = table.ravel()
    return flat[tier.astype(np.intp) + (np.arange(table.shape[0]) * table.shape[1])[:, None]]


def bass_step(
    adopters: np.ndarray,
    m: float,
    p: float,
    q: float,
    rng: np.random.Generator,
    dt_days: float = 1.0,
) -> np.ndarray:
    """One day of Bass diffusion: each non-adopter adopts with 1 - exp(-(p + q F) dt)."""
    remaining, prob = bass_chances(adopters, m, p, q, dt_days)
    return rng.binomial(remaining, prob).astype(float)


def bass_chances(
    adopters: np.ndarray, m: float, p: float, q: float, dt_days: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(non-adopters, each one's chance to adopt today) of Bass diffusion (`bass_step`)."""
    remaining = np.maximum(m - adopters, 0)
    hazard = (p + q * adopters / m) * dt_days / 365.0
    prob = -np.expm1(-hazard)
    return remaining.astype(np.int64), np.clip(prob, 0, 1)


def bass_cdf(t_years: np.ndarray, p: float, q: float) -> np.ndarray:
    """Closed form F(t) = (1 - e^{-(p+q)t}) / (1 + (q/p) e^{-(p+q)t})."""
    e = np.exp(-(p + q) * t_years)
    return (1 - e) / (1 + (q / p) * e)


def sbg_survival(alpha: float, beta: float, t: np.ndarray) -> np.ndarray:
    """sBG survival S(t) = B(alpha, beta + t) / B(alpha, beta) (Fader & Hardie 2007)."""
    from scipy.special import betaln

    return np.exp(betaln(alpha, beta + np.asarray(t, dtype=float)) - betaln(alpha, beta))


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
