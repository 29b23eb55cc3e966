"""What a simulation's runs say about each gate and expectation, honestly.

A gate's run ends the horizon in one of seven outcomes (`GateOutcome`); two of them (`open`,
`pending`) leave "did it pass by its deadline?" undecided, so a probability over all runs is a
range (`Bounded`) rather than a number read as 0 %. Every share carries its 95 % interval
(intervals.py: Wilson's, on the runs' effective number when runs share a parameter draw; each
share's design effect `deff` is computed from its runs by `Pairs.deff`, 1 without distributions).
For the runs that miss a deadline, `shortfalls` says which comparison of the gate fell short at
the deadline's check, in how many runs, and by how much. `ExpectSummary` holds the share of runs
that broke an `expect:` invariant against the tolerance the exit code allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from ..lang.model import Playbook, Stage
from ..lang.semantics import deadline_of, hands_over
from .intervals import INDEPENDENT, Pairs, interval

# The share of runs in which an `expect:` invariant may break before `simulate` exits 1, judged
# on the lower end of its 95 % interval: a rare break in a few hundred runs is reported, not a
# verdict; one in every run is (docs/simulation.md, "Reading the report").
EXPECT_TOLERANCE = 0.01


class GateOutcome(StrEnum):
    """How a gate's stage ended the horizon in one run."""

    ON_TIME = "on_time"  # passed by its deadline (within the horizon when it has none)
    LATE = "late"  # passed after its deadline (an extension, an alert-only deadline)
    FAILED = "failed"  # ended without passing: deadline goto, abort, maximum duration, another exit
    OVERDUE = "overdue"  # past its deadline and still open at the horizon: can only be late
    OPEN = "open"  # still open at the horizon, its deadline not reached (or none): undecided
    PENDING = "pending"  # not entered yet, still reachable at the horizon: undecided
    NOT_TAKEN = "not_taken"  # never entered and no longer reachable (another path was taken)


UNDECIDED = frozenset({GateOutcome.OPEN, GateOutcome.PENDING})
WORDS: Mapping[GateOutcome, str] = {
    GateOutcome.ON_TIME: "passed by the deadline",
    GateOutcome.LATE: "passed late",
    GateOutcome.FAILED: "failed (deadline, abort or another exit)",
    GateOutcome.OVERDUE: "past the deadline, still open at the horizon",
    GateOutcome.OPEN: "still open at the horizon (undecided)",
    GateOutcome.PENDING: "not reached within the horizon (undecided)",
    GateOutcome.NOT_TAKEN: "never reached (another path was taken)",
}


@dataclass(frozen=True)
class Share:
    """`k` of `n` runs, with its 95 % interval (`deff`: the design effect of runs sharing draws)."""

    k: int
    n: int
    deff: float = 1.0

    @property
    def p(self) -> float | None:
        """k / n (None without runs)."""
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        """The 95 % Wilson score interval, on n / deff runs."""
        return interval(self.k, self.n, self.deff)

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        lo, hi = self.interval
        p = self.p
        return {
            "runs": self.k,
            "of": self.n,
            "p": None if p is None else round(p, 4),
            "interval95": [round(lo, 4), round(hi, 4)],
        }


@dataclass(frozen=True)
class Bounded:
    """A probability over `n` runs: `k` certainly count, `undecided` more might (`deff`,
    `deff_high`: the design effects of its low and high end)."""

    k: int
    undecided: int
    n: int
    deff: float = 1.0
    deff_high: float = 1.0

    @property
    def decided(self) -> bool:
        """Whether every run is decided (the probability is one number)."""
        return self.undecided == 0

    @property
    def low(self) -> float | None:
        """The share counting undecided runs as not passing (None without runs)."""
        return self.k / self.n if self.n else None

    @property
    def high(self) -> float | None:
        """The share counting undecided runs as passing."""
        return (self.k + self.undecided) / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        """95 % Wilson interval of the low end's lower bound to the high end's upper bound."""
        low = interval(self.k, self.n, self.deff)[0]
        return low, interval(self.k + self.undecided, self.n, self.deff_high)[1]

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        lo, hi = self.interval
        return {
            "p": None if self.low is None else round(self.low, 4),
            "p_max": None if self.high is None else round(self.high, 4),
            "undecided_runs": self.undecided,
            "runs": self.n,
            "interval95": [round(lo, 4), round(hi, 4)],
        }


@dataclass(frozen=True)
class Shortfall:
    """One clause of a gate at the checks its stage missed: how often and by how much."""

    clause: str  # as written: `members >= 200`, `avg(daily_speak_rate, 7d) >= 20%`
    metric: str  # what it measures: `members`, `avg(daily_speak_rate, 7d)`
    threshold: float
    checked: int  # runs examined (missed the deadline, or open at the horizon)
    false: int  # runs in which the clause did not hold
    undefined: int  # runs in which it read a value that was undefined
    median_shortfall: float | None  # how far from the threshold, in the metric's unit
    deff: float = 1.0  # of `false` among `checked` (runs sharing parameter draws)

    @property
    def share(self) -> Share:
        """The runs in which the clause did not hold, of those checked."""
        return Share(self.false, self.checked, self.deff)

    @property
    def base(self) -> str:
        """The metric under a window function (`daily_speak_rate`), for its unit."""
        m = self.metric
        return m[m.index("(") + 1 : m.index(",")].strip() if "(" in m and "," in m else m

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        share = self.share.as_dict()
        return {
            "clause": self.clause,
            "metric": self.metric,
            "threshold": self.threshold,
            "runs_checked": self.checked,
            "runs_false": self.false,
            "p_false": share["p"],
            "interval95": share["interval95"],
            "runs_undefined": self.undefined,
            "median_shortfall": (
                None if self.median_shortfall is None else round(self.median_shortfall, 4)
            ),
        }


@dataclass(frozen=True)
class ExpectSummary:
    """The runs in which some `expect:` invariant broke, against the exit code's tolerance."""

    broken: Share
    tolerance: float

    @property
    def exceeds(self) -> bool:
        """Whether the breaks are, at 95 % confidence, more than `tolerance` of the runs."""
        return self.broken.k > 0 and self.broken.interval[0] > self.tolerance

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {**self.broken.as_dict(), "tolerance": self.tolerance, "exceeds": self.exceeds}


def expect_summary(
    failures: Sequence[tuple[int, int, str]],
    runs: int,
    tolerance: float = EXPECT_TOLERANCE,
    pairs: Pairs = INDEPENDENT,
) -> ExpectSummary:
    """How many runs broke an `expect:` invariant (any of them, on any day)."""
    broken = {r for r, _, _ in failures}
    deff = pairs.deff([r in broken for r in range(runs)]) if broken else 1.0
    return ExpectSummary(Share(len(broken), runs, deff), tolerance)


@dataclass(frozen=True)
class GateDesign:
    """The design effects of a gate's shares (intervals.py): P(pass by the deadline) over all
    runs and if entered, each (low end, high end), and the late passes."""

    by_deadline: tuple[float, float] = (1.0, 1.0)
    if_entered: tuple[float, float] = (1.0, 1.0)
    late: float = 1.0


def gate_design(
    kinds: Sequence[GateOutcome], entered: Sequence[bool] | np.ndarray, pairs: Pairs
) -> GateDesign:
    """The design effects of a gate's shares from its runs' outcomes (`entered`: per run,
    whether it entered the stage); all 1 when every run has its own parameter draw."""
    if pairs.independent:
        return GateDesign()
    on_time = np.array([k is GateOutcome.ON_TIME for k in kinds], dtype=bool)
    maybe = on_time | np.array([k in UNDECIDED for k in kinds], dtype=bool)
    could = on_time | np.array([k is GateOutcome.OPEN for k in kinds], dtype=bool)
    late = np.array([k is GateOutcome.LATE for k in kinds], dtype=bool)
    ent = np.asarray(entered, dtype=bool)
    return GateDesign(
        (pairs.deff(on_time), pairs.deff(maybe)),
        (pairs.deff(on_time, ent), pairs.deff(could, ent)),
        pairs.deff(late),
    )


def deadline_days(stage: Stage) -> int | None:
    """Days from entering `stage` to the check at its deadline (None: it has none)."""
    dl = deadline_of(stage)
    return int(dl.total_seconds() // 86400) if dl else None


def gate_outcomes(
    pb: Playbook,
    stage_ids: Sequence[str],
    entered: np.ndarray,
    passed: np.ndarray,
    outcomes: Sequence[Mapping[str, str]],
    days: int,
    exits: Sequence[Mapping[str, str]] = (),
) -> dict[str, list[GateOutcome]]:
    """Per stage (in `stage_ids` order), each run's `GateOutcome` at the horizon.

    `entered`/`passed`: (runs, stages) first entry and last pass day, -1 for none; `outcomes`:
    per run, each entered stage's last lifecycle outcome (`running`, `passed`, ...); `exits`:
    per run, the exit each stage left by. The gate is the stage's first exit: leaving by another
    (`exits:` with a `decline`) is no pass of it.
    """
    reach: dict[frozenset[str], frozenset[str]] = {}
    out: dict[str, list[GateOutcome]] = {}
    took = exits if len(exits) == len(outcomes) else [{} for _ in outcomes]
    for j, sid in enumerate(stage_ids):
        stage = pb.stages[sid]
        dl = deadline_days(stage)
        first = stage.exits[0].id if stage.exits else None
        col: list[GateOutcome] = []
        for r, done in enumerate(outcomes):
            e, p = int(entered[r, j]), int(passed[r, j])
            if p >= 0 and first is not None and took[r].get(sid, first) != first:
                p = -1  # left by another exit: the gate itself never passed
            if e < 0:
                running = frozenset(s for s, o in done.items() if o == "running")
                if running not in reach:
                    reach[running] = _reachable(pb, running)
                pending = sid in reach[running]
                col.append(GateOutcome.PENDING if pending else GateOutcome.NOT_TAKEN)
            elif p >= 0:
                on_time = dl is None or p - e <= dl
                col.append(GateOutcome.ON_TIME if on_time else GateOutcome.LATE)
            elif done.get(sid) == "running":
                # the deadline's check is at midnight of day e + dl; the horizon's last is `days`
                overdue = dl is not None and e + dl <= days
                col.append(GateOutcome.OVERDUE if overdue else GateOutcome.OPEN)
            else:  # ended at the deadline, aborted, or left by another exit
                col.append(GateOutcome.FAILED)
        out[sid] = col
    return out


def _reachable(pb: Playbook, running: frozenset[str]) -> frozenset[str]:
    """Stages that can still start after the running ones (by `after` and `goto`).

    Generous on purpose: a stage `after` several is counted once any of them can hand over,
    so a run is called undecided rather than decided wrongly. Optional stages never start in a
    simulation (none is included).
    """
    stages = pb.stages
    seen = set(running)
    todo = list(running)
    while todo:
        s = stages[todo.pop()]
        nxt = [t for t in (s.goto, s.deadline.goto if s.deadline else None) if t in stages]
        nxt += [x.goto for x in s.exits if x.goto in stages]
        if hands_over(s):
            nxt += [
                t.id for t in stages.values() if s.id in t.after and not t.rescue and not t.optional
            ]
        for t in nxt:
            if t is not None and t not in seen:
                seen.add(t)
                todo.append(t)
    return frozenset(seen - running)


def shortfalls(
    stage: Stage,
    column: int,
    kinds: Sequence[GateOutcome],
    entered: np.ndarray,
    metrics: np.ndarray,
    metric_names: Sequence[str],
    pairs: Pairs = INDEPENDENT,
) -> tuple[Shortfall, ...]:
    """Which clause of the stage's gate fell short in the runs that missed its deadline.

    A run that passed late, failed or is overdue is read at its deadline's check (the history up
    to the day before that midnight, windows included); one still open at the horizon, at the
    horizon's last check. Each clause is judged as the gate's own weak links are
    (`program.gates.clauses`), with `days_in_stage` counted from the run's entry.
    """
    from ..program.gates import clauses
    from ..program.history import ArrayHistory, condition_env

    if stage.gate is None or stage.gate.node is None:
        return ()
    node, text = stage.gate.node, stage.gate.text
    days = metrics.shape[1]
    dl = deadline_days(stage)
    index = {m: i for i, m in enumerate(metric_names)}
    found: dict[int, tuple[str, str, float]] = {}  # clause -> text, metric, threshold
    false: dict[int, int] = {}
    undefined: dict[int, int] = {}
    gaps: dict[int, list[float]] = {}
    checked = 0
    looked = np.zeros(len(kinds), bool)  # the runs checked, and per clause those it was false in
    short: dict[int, np.ndarray] = {}
    for r, kind in enumerate(kinds):
        e = int(entered[r, column])
        if kind in (GateOutcome.LATE, GateOutcome.FAILED, GateOutcome.OVERDUE) and dl is not None:
            day = min(e + dl, days)
        elif kind is GateOutcome.OPEN:
            day = days
        else:
            continue
        checked += 1
        looked[r] = True
        env = condition_env(node, ArrayHistory(metrics[r, :day], index), float(day - e))
        for i, c in enumerate(clauses(node, env, text)):
            if c.threshold is None:
                continue  # metric against metric: no threshold to fall short of
            found.setdefault(i, (c.text, c.metric or "", float(c.threshold)))
            if c.holds is None:
                undefined[i] = undefined.get(i, 0) + 1
            elif not c.holds:
                false[i] = false.get(i, 0) + 1
                short.setdefault(i, np.zeros(len(kinds), bool))[r] = True
                if c.shortfall is not None:
                    gaps.setdefault(i, []).append(c.shortfall)
    return tuple(
        Shortfall(
            clause,
            metric,
            threshold,
            checked,
            false.get(i, 0),
            undefined.get(i, 0),
            float(np.median(gaps[i])) if gaps.get(i) else None,
            pairs.deff(short[i], looked) if i in short else 1.0,
        )
        for i, (clause, metric, threshold) in sorted(found.items())
    )
