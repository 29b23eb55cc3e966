"""Monte Carlo over chunks of runs: reproducible for any worker count, local or on Dask."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from ..core import expr as ex
from ..core.status import ExitCode
from ..lang.model import OnEvent, Playbook
from .intervals import Pairs
from .kernel import BYTES_PER_MEMBER, METRICS, ChunkResult, SimulationTooLarge, Simulator
from .outcomes import Forecasts
from .percentiles import nan_percentiles
from .scenario import Scenario
from .summary import (
    EXPECT_TOLERANCE,
    UNDECIDED,
    Bounded,
    ExpectSummary,
    GateDesign,
    GateOutcome,
    Share,
    Shortfall,
    deadline_days,
    expect_summary,
    gate_design,
    gate_outcomes,
    shortfalls,
)

CHUNK_RUNS = 8  # fixed: the seed of chunk i never depends on how many workers there are
# Chunks run together in one vectorised step (a group): NumPy's cost per call is spread over up
# to this many runs; each chunk keeps its own stream, so results do not change (streams.py).
GROUP_RUNS = 256
MEMORY_BUDGET_MIB = 1536  # default budget of each worker process and of the collected results
MIB = 1 << 20


@dataclass(frozen=True)
class SimOptions:
    """How to simulate."""

    runs: int = 200
    days: int = 180
    seed: int = 0
    workers: int = 1
    executor: str = "local"  # local | dask
    address: str | None = None
    memory_budget_mib: int = MEMORY_BUDGET_MIB


@dataclass(frozen=True)
class MemoryEstimate:
    """What a simulation will need, estimated before it starts."""

    members: int  # expected peak members of one run
    runs_in_flight: int  # runs one worker holds at once (a chunk)
    per_worker: int  # bytes of one worker's member arrays and metrics
    results: int  # bytes of the collected metrics in the main process
    member_bytes: int = BYTES_PER_MEMBER  # with the arrays of the constructs and dynamics

    def problem(self, budget_mib: int) -> str | None:
        """Why this does not fit in `budget_mib` MiB (per worker and for the results), or None."""
        budget = budget_mib * MIB
        if self.per_worker > budget:
            return (
                f"the simulation needs about {self.per_worker / MIB:,.0f} MiB per worker"
                f" (~{self.members:,} members a run x {self.runs_in_flight} runs in flight x"
                f" {self.member_bytes} bytes), more than the memory budget of {budget_mib:,} MiB;"
                " lower the scenario's population (seed_users, organic_per_day, market) or"
                " --days, or raise --max-memory-mib"
            )
        if self.results > budget:
            return (
                f"the collected metrics need about {self.results / MIB:,.0f} MiB, more than the"
                f" memory budget of {budget_mib:,} MiB; lower --runs or --days, or raise"
                " --max-memory-mib"
            )
        return None


def estimate_memory(playbook: Playbook, scenario: Scenario, options: SimOptions) -> MemoryEstimate:
    """Expected peak members a run x runs in flight x bytes a member, and the results' size.

    Joins a day (organic, and `effect.joins` of actions counted once a day) survive on the
    scenario's sBG curve; word of mouth brings the Bass curve's share of `market` (nobody
    leaves); the seed joins at once.
    Referral cascades are not foreseen here: the kernel stops a run that outgrows the budget.
    """
    from .kernel import bass_cdf, bytes_per_member, member_columns, sbg_survival

    a, ret = scenario.acquisition, scenario.retention
    days = options.days
    survival = float(sbg_survival(ret.alpha, ret.beta, np.arange(days) / ret.period_days).sum())
    daily = a.organic_per_day + sum(
        x.effect.joins for x in playbook.actions.values() if not isinstance(x.schedule, OnEvent)
    )
    daily += sum(c.per_day for c in a.channels.values())  # channels' own joins
    member_bytes = bytes_per_member(member_columns(playbook, scenario, days))
    # word of mouth: the Bass curve's adopters by the horizon (none start without innovators)
    bass = (
        float(a.market * bass_cdf(np.array(days / 365.0), a.bass_p, a.bass_q)) if a.bass_p else 0.0
    )
    members = a.seed_users + daily * survival + bass
    members = int(min(members, 1e18))
    in_flight = min(CHUNK_RUNS, options.runs)
    n_metrics = len(METRICS) + len(playbook.metrics)
    # what the member-level constructs add per run and day: their metrics, segment sizes, staff
    # workload per role, by_channel values
    n_metrics += len(playbook.builtin_metrics()) - len(METRICS) + len(playbook.segments)
    n_metrics += len(playbook.roles) + sum(m.by_channel for m in playbook.metrics.values()) * (
        len(playbook.channels) + 1
    )
    per_worker = in_flight * (max(members, 256) * member_bytes + days * n_metrics * 4)
    # chunks and their concatenation (float32) live together, and percentiles copy a metric
    results = options.runs * days * (n_metrics * 8 + 16)
    return MemoryEstimate(members, in_flight, per_worker, results, member_bytes)


def check_memory(playbook: Playbook, scenario: Scenario, options: SimOptions) -> None:
    """Raise SimulationTooLarge when the estimate exceeds the budget, before any work."""
    problem = estimate_memory(playbook, scenario, options).problem(options.memory_budget_mib)
    if problem:
        raise SimulationTooLarge(problem)


@dataclass(frozen=True)
class GateResult:
    """P(gate passes by its deadline) with a 95 % interval, the median passing day, and how
    every run ended the horizon (`summary.GateOutcome`): undecided runs are never read as 0 %."""

    stage: str
    gate: str
    deadline_days: int | None
    entered: int
    passed: int  # runs that passed by the deadline
    runs: int
    interval: tuple[float, float]  # of P(pass by the deadline), undecided runs included
    median_day: float | None
    # why the gate could not be decided at its last check, with the number of runs: a gate
    # that reads an undefined metric does not pass (e.g. "undefined: retention_d30 (no cohort
    # is 30 days old)"); runs in which it passed are not counted
    undefined: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)  # GateOutcome -> runs
    median_days_late: float | None = None  # of the late passes: days after the deadline
    shortfalls: tuple[Shortfall, ...] = ()  # in the runs that missed the deadline
    for_days: int | None = None  # the gate must hold on each of its last N days (`for:`)
    design: GateDesign = field(default_factory=GateDesign)  # intervals of runs sharing draws

    @property
    def probability(self) -> float:
        """P(pass by the deadline) over all runs; undecided runs count as not passing."""
        return self.passed / self.runs if self.runs else 0.0

    @property
    def undefined_runs(self) -> int:
        """Runs whose last check of this gate read an undefined metric."""
        return sum(self.undefined.values())

    def count(self, *kinds: GateOutcome) -> int:
        """Runs that ended the horizon in one of `kinds`."""
        return sum(self.outcomes.get(k, 0) for k in kinds)

    @property
    def undecided(self) -> int:
        """Runs in which the horizon came before the answer (open, or not reached yet)."""
        return self.count(*UNDECIDED)

    @property
    def by_deadline(self) -> Bounded:
        """P(pass by the deadline) over all runs, a range while runs are undecided."""
        return Bounded(self.passed, self.undecided, self.runs, *self.design.by_deadline)

    @property
    def if_entered(self) -> Bounded:
        """P(pass by the deadline | the stage was entered within the horizon)."""
        return Bounded(
            self.passed, self.count(GateOutcome.OPEN), self.entered, *self.design.if_entered
        )

    @property
    def late(self) -> Share:
        """Runs that passed after the deadline, of all runs."""
        return Share(self.count(GateOutcome.LATE), self.runs, self.design.late)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (the `gates` items of the JSON document)."""
        return {
            "stage": self.stage,
            "gate": self.gate,
            "deadline_days": self.deadline_days,
            "for_days": self.for_days,
            "p_pass": round(self.probability, 4),
            "interval95": [round(self.interval[0], 4), round(self.interval[1], 4)],
            "p_pass_max": self.by_deadline.as_dict()["p_max"],
            "decided": self.by_deadline.decided,
            "p_pass_if_entered": round(self.passed / self.entered, 4) if self.entered else None,
            "if_entered": self.if_entered.as_dict(),
            "entered": self.entered,
            "passed": self.passed,
            "runs": self.runs,
            "median_pass_day": self.median_day,
            "outcomes": {k.value: self.outcomes.get(k, 0) for k in GateOutcome},
            "late": {**self.late.as_dict(), "median_days_late": self.median_days_late},
            "shortfalls": [s.as_dict() for s in self.shortfalls],
            "undefined": [{"note": n, "runs": c} for n, c in self.undefined.items()],
        }


@dataclass
class SimResult:
    """Everything a simulation produced."""

    playbook: str
    scenario: Scenario
    options: SimOptions
    metric_names: list[str]
    metrics: np.ndarray  # (runs, days, metrics)
    stage_ids: list[str]
    stage_entered: np.ndarray
    stage_passed: np.ndarray
    outcomes: list[dict[str, str]]
    expect_failures: list[tuple[int, int, str]]
    member_days: int
    seconds: float
    gates: list[GateResult] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    gate_notes: list[dict[str, str]] = field(default_factory=list)  # per run (ChunkResult)
    start: date | None = None  # the local date of simulated day 0 (`program.start_date`)
    # per stage, how each run ended the horizon (summary.gate_outcomes)
    kinds: dict[str, list[GateOutcome]] = field(default_factory=dict)
    stage_exits: list[dict[str, str]] = field(default_factory=list)  # per run (ChunkResult)
    # exits, targets, incidents, segments, channels, workload (outcomes.py)
    forecasts: Forecasts | None = None
    # each run's draws of the uncertain parameters (runs, names), and what they explain
    # (uncertainty.py: JSON `uncertainty` and `sensitivity`)
    parameter_names: list[str] = field(default_factory=list)
    parameters: np.ndarray | None = None
    uncertainty: dict[str, Any] = field(default_factory=dict)
    sensitivity: dict[str, Any] = field(default_factory=dict)

    def percentiles(self, metric: str, qs: tuple[int, ...] = (5, 50, 95)) -> np.ndarray:
        """(len(qs), days) percentiles of a metric across the runs where it has a value.

        NaN on a day when it has none in any run (undefined: see engine/program/metrics.py).
        """
        i = self.metric_names.index(metric)
        return nan_percentiles(self.metrics[:, :, i], qs)

    def undefined_runs(self, metric: str) -> np.ndarray:
        """(days,) how many runs had no value of `metric` on each day."""
        i = self.metric_names.index(metric)
        return np.isnan(self.metrics[:, :, i]).sum(axis=0)

    @property
    def pairs(self) -> Pairs:
        """The runs that share one parameter draw (intervals.py); none without distributions."""
        return Pairs.of(self.parameters)

    def stage_timing(self) -> dict[str, dict[str, Any]]:
        """Per stage: how often it is entered and passed, and on which days."""
        out: dict[str, dict[str, Any]] = {}
        runs = self.metrics.shape[0]
        pairs = self.pairs
        for j, sid in enumerate(self.stage_ids):
            ent = self.stage_entered[:, j]
            pas = self.stage_passed[:, j]
            e, p = ent[ent >= 0], pas[pas >= 0]
            kinds = self.kinds.get(sid, [])
            lo, hi = pairs.interval(ent >= 0)
            out[sid] = {
                "entered": len(e),
                "passed": len(p),
                "runs": runs,
                "p_entered": len(e) / runs if runs else 0.0,
                "p_entered_interval95": [round(lo, 4), round(hi, 4)],
                "entered_day": _pcts(e),
                "passed_day": _pcts(p),
                "outcomes": _count(o.get(sid, "not reached") for o in self.outcomes),
                # of the runs that never entered it: not yet (undecided) or never will
                "not_reached": {
                    "within_horizon": kinds.count(GateOutcome.PENDING),
                    "path_not_taken": kinds.count(GateOutcome.NOT_TAKEN),
                },
            }
        return out

    def expectations(self, tolerance: float = EXPECT_TOLERANCE) -> ExpectSummary:
        """The runs that broke an `expect:` invariant, against `tolerance`."""
        return expect_summary(self.expect_failures, self.metrics.shape[0], tolerance, self.pairs)

    def verdict(
        self, min_probability: float | None = None, expect_tolerance: float = EXPECT_TOLERANCE
    ) -> list[str]:
        """Why `sop simulate` exits 1: every reason in words (empty: it exits 0).

        A gate whose P(pass by its deadline) is below `min_probability` (undecided runs count as
        not passing: a horizon too short to decide is no pass); `expect:` invariants broken, at
        95 % confidence, in more than `expect_tolerance` of the runs.
        """
        out = []
        if min_probability is not None:
            for g in self.gates:
                if g.probability < min_probability:
                    why = f" ({g.undecided} run(s) undecided at the horizon)" if g.undecided else ""
                    out.append(
                        f"gate of `{g.stage}`: P(pass by the deadline) {g.probability:.1%} is"
                        f" below --min-probability {min_probability:g}{why}"
                    )
        ex_ = self.expectations(expect_tolerance)
        if ex_.exceeds:
            lo, hi = ex_.broken.interval
            out.append(
                f"expect: broken in {ex_.broken.k} of {ex_.broken.n} runs (95 % interval"
                f" {lo:.1%}–{hi:.1%}), more than --expect-tolerance {expect_tolerance:g}"
            )
        return out

    def exit_code(
        self, min_probability: float | None = None, expect_tolerance: float = EXPECT_TOLERANCE
    ) -> ExitCode:
        """1 when `verdict` has a reason, else 0."""
        return ExitCode.FINDINGS if self.verdict(min_probability, expect_tolerance) else ExitCode.OK

    def as_dict(
        self,
        every: int = 1,
        *,
        min_probability: float | None = None,
        expect_tolerance: float = EXPECT_TOLERANCE,
    ) -> dict[str, Any]:
        """The JSON document of a simulation (see `to_dict`)."""
        return self.to_dict(
            every, min_probability=min_probability, expect_tolerance=expect_tolerance
        )

    def forecast(self, playbook: Playbook) -> dict[str, Any]:
        """What the dashboard draws actual values over: the document, with its first day."""
        from ..program import start_date

        return {**self.to_dict(), "start": start_date(playbook).isoformat()}

    def to_dict(
        self,
        every: int = 1,
        *,
        min_probability: float | None = None,
        expect_tolerance: float = EXPECT_TOLERANCE,
    ) -> dict[str, Any]:
        """The JSON document of a simulation (daily metric percentiles every `every` days), with
        the verdict its exit code follows."""
        days = list(range(0, self.metrics.shape[1], every))
        reasons = self.verdict(min_probability, expect_tolerance)
        return {
            "playbook": self.playbook,
            "start": None if self.start is None else self.start.isoformat(),
            "scenario": self.scenario.as_dict(),
            "options": {
                "runs": self.options.runs,
                "days": self.options.days,
                "seed": self.options.seed,
                "workers": self.options.workers,
                "executor": self.options.executor,
            },
            "gates": [g.as_dict() for g in self.gates],
            "stages": self.stage_timing(),
            "metrics": {
                name: {
                    "days": days,
                    **{
                        f"p{q}": [_number(x) for x in row[days]]
                        for q, row in zip((5, 50, 95), self.percentiles(name), strict=True)
                    },
                    # runs without a value that day (their percentiles leave them out)
                    "undefined_runs": [int(x) for x in self.undefined_runs(name)[days]],
                }
                for name in self.metric_names
            },
            "expect": [{"run": r, "day": d, "failure": w} for r, d, w in self.expect_failures],
            "expect_summary": self.expectations(expect_tolerance).as_dict(),
            "verdict": {
                "exit_code": int(ExitCode.FINDINGS if reasons else ExitCode.OK),
                "min_probability": min_probability,
                "expect_tolerance": expect_tolerance,
                "reasons": reasons,
            },
            "warnings": self.warnings,
            **(self.forecasts.as_dict(every) if self.forecasts is not None else {}),
            "uncertainty": self.uncertainty,
            "sensitivity": self.sensitivity,
            "performance": {
                "member_days": self.member_days,
                "seconds": round(self.seconds, 3),
                "member_days_per_second": round(self.member_days / max(self.seconds, 1e-9)),
            },
        }


@dataclass
class Sweep:
    """Simulations of one playbook over swept scenario values (`--sweep name=v1,v2`)."""

    rows: list[tuple[dict[str, str], SimResult]]

    def exit_code(
        self, min_probability: float | None = None, expect_tolerance: float = EXPECT_TOLERANCE
    ) -> ExitCode:
        """The worst exit code of its simulations."""
        return max(
            (r.exit_code(min_probability, expect_tolerance) for _, r in self.rows),
            default=ExitCode.OK,
        )

    def as_dict(self) -> list[dict[str, Any]]:
        """The JSON document of a sweep: the swept values and the gates of each simulation."""
        return [{"values": v, "gates": r.to_dict()["gates"]} for v, r in self.rows]


def _number(x: float) -> float | None:
    """A percentile for JSON: rounded, and null when undefined."""
    return None if math.isnan(x) else round(float(x), 4)


def _pcts(a: np.ndarray) -> dict[str, float | None]:
    if not len(a):
        return {"p5": None, "p50": None, "p95": None}
    p5, p50, p95 = np.percentile(a, [5, 50, 95])
    return {"p5": float(p5), "p50": float(p50), "p95": float(p95)}


def _count(items: Iterator[str] | Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


_SIMULATORS: dict[str, Simulator] = {}


def content_key(playbook: Playbook, scenario: Scenario, days: int, budget: int | None) -> str:
    """What a simulator is built from, as a digest: equal for equal contents, whichever process
    unpickled them (object ids are not: every task's arguments arrive as new objects)."""
    import hashlib
    import pickle

    blob = pickle.dumps((playbook, scenario, days, budget), protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha256(blob).hexdigest()


def _simulator(
    playbook: Playbook, scenario: Scenario, days: int, budget: int | None, key: str | None
) -> Simulator:
    """This process's simulator for these contents (built once, then reused by every task)."""
    key = key or content_key(playbook, scenario, days, budget)
    sim = _SIMULATORS.get(key)
    if sim is None:
        sim = Simulator(playbook, scenario, days, budget)
        _SIMULATORS.clear()
        _SIMULATORS[key] = sim
    return sim


def run_chunk(
    playbook: Playbook,
    scenario: Scenario,
    days: int,
    runs: int,
    seed: np.random.SeedSequence,
    first_run: int,
    memory_budget: int | None = None,
    key: str | None = None,
) -> ChunkResult:
    """One chunk, in whatever process or Dask worker it lands on (simulator cached per process)."""
    return _simulator(playbook, scenario, days, memory_budget, key).run_chunk(runs, seed, first_run)


def run_group(
    playbook: Playbook,
    scenario: Scenario,
    days: int,
    specs: list[tuple[int, np.random.SeedSequence, int]],
    memory_budget: int | None = None,
    key: str | None = None,
) -> list[ChunkResult]:
    """Chunks `(runs, seed, first_run)` run together in one vectorised step, wherever they land
    (simulator cached per process): each chunk's result is the one it gives alone."""
    sim = _simulator(playbook, scenario, days, memory_budget, key)
    sim.on_day = _PROGRESS.add if _PROGRESS is not None else None
    return sim.run_chunks(specs)


class _Progress:
    """Whole runs simulated, from the run-days the kernel counts as it ends each day, in this
    process or in workers forked from it (a shared counter)."""

    def __init__(self, days: int, runs: int, report: Callable[[int], None], shared: bool):
        import multiprocessing as mp

        self.days, self.runs, self.report, self.told = days, runs, report, 0
        self.shared = mp.get_context("fork").Value("q", 0) if shared else None
        self.local = 0

    def add(self, runs: int) -> None:
        """A day of `runs` runs is done (called where they are simulated)."""
        if self.shared is None:
            self.local += runs
            self.poll()
            return
        with self.shared.get_lock():
            self.shared.value += runs

    def poll(self) -> None:
        """Report the runs done since the last report (called in the parent)."""
        done = self.local if self.shared is None else self.shared.value
        # a group outgrowing its memory runs again chunk by chunk: never past the total
        done = min(done // max(self.days, 1), self.runs)
        if done > self.told:
            self.report(done - self.told)
            self.told = done

    def finish(self) -> None:
        """Report what is left: every run is done."""
        if self.runs > self.told:
            self.report(self.runs - self.told)
            self.told = self.runs


_PROGRESS: _Progress | None = None  # set while simulate() reports progress


def chunks(options: SimOptions) -> list[tuple[int, int, np.random.SeedSequence]]:
    """(first_run, runs, seed) per chunk; seeds spawned per chunk from the root seed."""
    n = math.ceil(options.runs / CHUNK_RUNS)
    seeds = np.random.SeedSequence(options.seed).spawn(n)
    return [
        (i * CHUNK_RUNS, min(CHUNK_RUNS, options.runs - i * CHUNK_RUNS), seeds[i]) for i in range(n)
    ]


def groups(
    plan: list[tuple[int, int, np.random.SeedSequence]], workers: int, chunk_bytes: int, budget: int
) -> list[list[tuple[int, int, np.random.SeedSequence]]]:
    """Consecutive chunks run together: at most GROUP_RUNS runs and half the memory budget of a
    worker (`chunk_bytes`: the estimate of one chunk) a group, in as few groups as that allows,
    their number a multiple of the workers and their sizes within a chunk of each other (so the
    workers finish together; each group has a fixed cost a day, and progress is counted by day,
    not by group)."""
    if not plan:
        return []
    by_memory = max(1, (budget // 2) // max(chunk_bytes, 1))
    cap = max(1, min(GROUP_RUNS // CHUNK_RUNS, by_memory))
    n = math.ceil(len(plan) / cap)
    if workers > 1:
        n = min(len(plan), math.ceil(n / workers) * workers)
    size, extra = divmod(len(plan), n)
    out, i = [], 0
    for g in range(n):
        k = size + (g < extra)
        out.append(plan[i : i + k])
        i += k
    return out


def simulate(
    playbook: Playbook,
    scenario: Scenario,
    options: SimOptions,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    """Run the Monte Carlo and aggregate it."""
    estimate = estimate_memory(playbook, scenario, options)
    problem = estimate.problem(options.memory_budget_mib)
    if problem:
        raise SimulationTooLarge(problem)
    t0 = time.perf_counter()
    plan = chunks(options)
    budget = options.memory_budget_mib * MIB
    workers = 1 if options.executor != "dask" and options.workers <= 1 else options.workers
    chunk_bytes = estimate.per_worker // max(estimate.runs_in_flight, 1) * CHUNK_RUNS
    key = content_key(playbook, scenario, options.days, budget)
    args = [
        (playbook, scenario, options.days, [(n, s, first) for first, n, s in g], budget, key)
        for g in groups(plan, workers, chunk_bytes, budget)
    ]
    if options.executor != "dask":
        # numba imported and every compiled function loaded (or compiled, the first time) here,
        # once, before any worker forks from this process (each would otherwise do it itself)
        from . import fused

        fused.warm()
    if options.executor == "dask":
        results = _dask(args, options.address)
        if progress:
            progress(options.runs)
    else:
        global _PROGRESS
        parallel = options.workers > 1 and len(args) > 1
        if progress:
            _PROGRESS = _Progress(options.days, options.runs, progress, parallel)
        try:
            if parallel:
                results = _processes(args, min(options.workers, len(args)))
            else:
                results = [r for a in args for r in run_group(*a)]
            if _PROGRESS is not None:
                _PROGRESS.finish()
        finally:
            _PROGRESS = None
    seconds = time.perf_counter() - t0
    return aggregate(playbook, scenario, options, results, seconds)


def _processes(args: list[tuple[Any, ...]], workers: int) -> list[ChunkResult]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, wait

    ctx = mp.get_context("fork") if hasattr(mp, "get_context") else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(run_group, *a) for a in args]
        if _PROGRESS is not None:
            while wait(futures, timeout=0.2).not_done:
                _PROGRESS.poll()
        return [r for f in futures for r in f.result()]


def _dask(args: list[tuple[Any, ...]], address: str | None) -> list[ChunkResult]:
    try:
        from distributed import Client
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise RuntimeError("the dask executor needs `pip install 'sop[dask]'`") from e
    if not address:
        raise RuntimeError("--executor dask needs --address tcp://HOST:PORT")
    with Client(address, timeout="10s") as client:
        futures = client.map(lambda a: run_group(*a), args, pure=False)
        return [r for group in client.gather(futures) for r in group]


def aggregate(
    playbook: Playbook,
    scenario: Scenario,
    options: SimOptions,
    results: list[ChunkResult],
    seconds: float,
) -> SimResult:
    """Concatenate chunks in run order and compute gate statistics."""
    results = sorted(results, key=lambda r: r.first_run)
    metrics = np.concatenate([r.metrics for r in results], axis=0)
    entered = np.concatenate([r.stage_entered for r in results], axis=0)
    passed = np.concatenate([r.stage_passed for r in results], axis=0)
    res = SimResult(
        playbook=playbook.id,
        scenario=scenario,
        options=options,
        metric_names=results[0].metric_names,
        metrics=metrics,
        stage_ids=list(playbook.stages),
        stage_entered=entered,
        stage_passed=passed,
        outcomes=[o for r in results for o in r.stage_outcome],
        expect_failures=sorted(f for r in results for f in r.expect_failures),
        member_days=sum(r.member_days for r in results),
        seconds=seconds,
        gate_notes=[n for r in results for n in r.gate_notes],
    )
    from ..program import start_date

    res.start = start_date(playbook)
    res.stage_exits = [x for r in results for x in getattr(r, "stage_exits", [])]
    res.kinds = gate_outcomes(
        playbook, res.stage_ids, entered, passed, res.outcomes, options.days, res.stage_exits
    )
    names = results[0].parameter_names if results else []
    if names:  # before the gates: their intervals count runs that share a draw (intervals.py)
        res.parameter_names = names
        res.parameters = np.concatenate([r.parameters for r in results if r.parameters is not None])
    res.gates = gate_results(playbook, res)
    res.units = playbook.metric_units()
    res.warnings = unmodelled_warnings(playbook, scenario)
    res.forecasts = _forecasts(playbook, scenario, results, res)
    res.warnings += res.forecasts.warnings
    _uncertainty(playbook, scenario, results, res)
    return res


def _uncertainty(
    playbook: Playbook, scenario: Scenario, results: list[ChunkResult], res: SimResult
) -> None:
    """The runs' parameter draws, and how much of each gate's and metric's spread they explain
    (uncertainty.py); notes on the retention model's coupling (retention.py)."""
    from .retention import coupling_notes
    from .uncertainty import analyse

    res.warnings += coupling_notes(scenario)
    draws = {p: d.as_dict() for p, d in scenario.uncertain.items()}
    if scenario.retention.draws:
        draws["retention.draws"] = {"rows": len(scenario.retention.draws)}
    gated = [g.stage for g in res.gates]
    res.uncertainty, res.sensitivity = analyse(
        res.parameter_names, res.parameters, res.kinds, gated, res.metrics, res.metric_names, draws
    )


def _forecasts(
    playbook: Playbook, scenario: Scenario, results: list[ChunkResult], res: SimResult
) -> Forecasts:
    """Exits, targets, incidents, segments, channels and workload of the runs."""
    from .outcomes import forecasts

    return forecasts(
        playbook,
        scenario,
        results,
        res.metric_names,
        res.metrics,
        res.stage_ids,
        res.stage_entered,
        res.stage_passed,
        res.outcomes,
        res.stage_exits,
    )


def unmodelled_warnings(playbook: Playbook, scenario: Scenario) -> list[str]:
    """What the simulation cannot know: custom metrics with no definition and no model, and
    the `if:` guards that read them (undefined: such a guard does not hold, nor such a gate)."""
    unknown = [
        m.id
        for m in playbook.metrics.values()
        if m.definition is None and m.count is None and m.id not in scenario.metrics
    ]
    out = [
        f"metric `{m}` has neither a definition nor a model in scenario `{scenario.name}`:"
        " it is undefined, so a gate or `if:` that needs it does not pass (add it under"
        " `metrics:` in the scenario)"
        for m in unknown
    ]
    for a in playbook.actions.values():
        if a.guard is None or a.guard.node is None:
            continue
        read = sorted({str(n.value) for n in ex.names(a.guard.node)} & set(unknown))
        if read:
            out.append(
                f"the `if:` of action `{a.id}` reads {', '.join(f'`{m}`' for m in read)}, which"
                " the simulation does not model: it does not hold while it needs that value"
            )
    return out


def _hold_days(stage: Any) -> int | None:
    """The `for:` days of a stage's gate (its first exit), None without one."""
    hold = stage.exits[0].hold if stage.exits else None
    return hold.days if hold else None


def gate_results(pb: Playbook, res: SimResult) -> list[GateResult]:
    """For every gate: P(it passes by its stage's deadline), its interval, the median day, how
    each run ended the horizon, late passes, and which comparison fell short in the others."""
    out = []
    runs = res.metrics.shape[0]
    kinds_of = res.kinds or gate_outcomes(
        pb,
        res.stage_ids,
        res.stage_entered,
        res.stage_passed,
        res.outcomes,
        res.options.days,
        res.stage_exits,
    )
    pairs = res.pairs
    for j, sid in enumerate(res.stage_ids):
        st = pb.stages[sid]
        if st.gate is None:
            continue
        kinds = kinds_of[sid]
        dl_days = deadline_days(st)
        ent = res.stage_entered[:, j]
        pas = res.stage_passed[:, j]
        ok = np.array([k is GateOutcome.ON_TIME for k in kinds], dtype=bool)
        late = np.array([k is GateOutcome.LATE for k in kinds], dtype=bool)
        n_ok = int(ok.sum())
        med = float(np.median(pas[ok])) if n_ok else None
        late_by = (pas[late] - ent[late] - (dl_days or 0)) if late.any() else None
        undefined = _count(n[sid] for r, n in enumerate(res.gate_notes) if sid in n and not ok[r])
        outcomes = _count(kinds)
        entered = int((ent >= 0).sum())
        design = gate_design(kinds, ent >= 0, pairs)
        bounded = Bounded(
            n_ok, sum(outcomes.get(k, 0) for k in UNDECIDED), runs, *design.by_deadline
        )
        out.append(
            GateResult(
                sid,
                st.gate.text,
                dl_days,
                entered,
                n_ok,
                runs,
                bounded.interval,
                med,
                dict(sorted(undefined.items(), key=lambda x: -x[1])),
                {GateOutcome(k): v for k, v in outcomes.items()},
                None if late_by is None else float(np.median(late_by)),
                shortfalls(st, j, kinds, res.stage_entered, res.metrics, res.metric_names, pairs),
                _hold_days(st),
                design,
            )
        )
    return out
