"""Monte Carlo over chunks of runs: reproducible for any worker count, local or on Dask."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import expr as ex
from ..core.status import ExitCode
from ..lang.model import OnEvent, Playbook
from .kernel import BYTES_PER_MEMBER, METRICS, ChunkResult, SimulationTooLarge, Simulator, wilson
from .scenario import Scenario

CHUNK_RUNS = 8  # fixed: the seed of chunk i never depends on how many workers there are
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

    def problem(self, budget_mib: int) -> str | None:
        """Why this does not fit in `budget_mib` MiB (per worker and for the results), or None."""
        budget = budget_mib * MIB
        if self.per_worker > budget:
            return (
                f"the simulation needs about {self.per_worker / MIB:,.0f} MiB per worker"
                f" (~{self.members:,} members a run x {self.runs_in_flight} runs in flight x"
                f" {BYTES_PER_MEMBER} bytes), more than the memory budget of {budget_mib:,} MiB;"
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
    from .kernel import bass_cdf, sbg_survival

    a, ret = scenario.acquisition, scenario.retention
    days = options.days
    survival = float(sbg_survival(ret.alpha, ret.beta, np.arange(days) / ret.period_days).sum())
    daily = a.organic_per_day + sum(
        x.effect.joins for x in playbook.actions.values() if not isinstance(x.schedule, OnEvent)
    )
    # word of mouth: the Bass curve's adopters by the horizon (none start without innovators)
    bass = (
        float(a.market * bass_cdf(np.array(days / 365.0), a.bass_p, a.bass_q)) if a.bass_p else 0.0
    )
    members = a.seed_users + daily * survival + bass
    members = int(min(members, 1e18))
    in_flight = min(CHUNK_RUNS, options.runs)
    n_metrics = len(METRICS) + len(playbook.metrics)
    per_worker = in_flight * (max(members, 256) * BYTES_PER_MEMBER + days * n_metrics * 4)
    # chunks and their concatenation (float32) live together, and percentiles copy a metric
    results = options.runs * days * (n_metrics * 8 + 16)
    return MemoryEstimate(members, in_flight, per_worker, results)


def check_memory(playbook: Playbook, scenario: Scenario, options: SimOptions) -> None:
    """Raise SimulationTooLarge when the estimate exceeds the budget, before any work."""
    problem = estimate_memory(playbook, scenario, options).problem(options.memory_budget_mib)
    if problem:
        raise SimulationTooLarge(problem)


@dataclass
class GateResult:
    """P(gate passes by its deadline) with a 95 % interval and the median passing day."""

    stage: str
    gate: str
    deadline_days: int | None
    entered: int
    passed: int
    runs: int
    interval: tuple[float, float]
    median_day: float | None
    # why the gate could not be decided at its last check, with the number of runs: a gate
    # that reads an undefined metric does not pass (e.g. "undefined: retention_d30 (no cohort
    # is 30 days old)"); runs in which it passed are not counted
    undefined: dict[str, int] = field(default_factory=dict)

    @property
    def probability(self) -> float:
        """Unconditional probability over all runs."""
        return self.passed / self.runs if self.runs else 0.0

    @property
    def undefined_runs(self) -> int:
        """Runs whose last check of this gate read an undefined metric."""
        return sum(self.undefined.values())


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

    def percentiles(self, metric: str, qs: tuple[int, ...] = (5, 50, 95)) -> np.ndarray:
        """(len(qs), days) percentiles of a metric across the runs where it has a value.

        NaN on a day when it has none in any run (undefined: see engine/program/metrics.py).
        """
        import warnings

        i = self.metric_names.index(metric)
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-undefined day is NaN: fine
            return np.nanpercentile(self.metrics[:, :, i], qs, axis=0)

    def undefined_runs(self, metric: str) -> np.ndarray:
        """(days,) how many runs had no value of `metric` on each day."""
        i = self.metric_names.index(metric)
        return np.isnan(self.metrics[:, :, i]).sum(axis=0)

    def stage_timing(self) -> dict[str, dict[str, Any]]:
        """Per stage: how often it is entered and passed, and on which days."""
        out: dict[str, dict[str, Any]] = {}
        runs = self.metrics.shape[0]
        for j, sid in enumerate(self.stage_ids):
            ent = self.stage_entered[:, j]
            pas = self.stage_passed[:, j]
            e, p = ent[ent >= 0], pas[pas >= 0]
            out[sid] = {
                "entered": len(e),
                "passed": len(p),
                "runs": runs,
                "p_entered": len(e) / runs if runs else 0.0,
                "entered_day": _pcts(e),
                "passed_day": _pcts(p),
                "outcomes": _count(o.get(sid, "not reached") for o in self.outcomes),
            }
        return out

    def exit_code(self, min_probability: float | None = None) -> ExitCode:
        """1 when an `expect:` invariant failed or a gate's P(pass) is below `min_probability`."""
        low = min_probability is not None and any(
            g.probability < min_probability for g in self.gates
        )
        return ExitCode.FINDINGS if self.expect_failures or low else ExitCode.OK

    def as_dict(self, every: int = 1) -> dict[str, Any]:
        """The JSON document of a simulation (see `to_dict`)."""
        return self.to_dict(every)

    def forecast(self, playbook: Playbook) -> dict[str, Any]:
        """What the dashboard draws actual values over: the document, with its first day."""
        from ..program import start_date

        return {**self.to_dict(), "start": start_date(playbook).isoformat()}

    def to_dict(self, every: int = 1) -> dict[str, Any]:
        """The JSON document of a simulation (daily metric percentiles every `every` days)."""
        days = list(range(0, self.metrics.shape[1], every))
        return {
            "playbook": self.playbook,
            "scenario": self.scenario.as_dict(),
            "options": {
                "runs": self.options.runs,
                "days": self.options.days,
                "seed": self.options.seed,
                "workers": self.options.workers,
                "executor": self.options.executor,
            },
            "gates": [
                {
                    "stage": g.stage,
                    "gate": g.gate,
                    "deadline_days": g.deadline_days,
                    "p_pass": round(g.probability, 4),
                    "interval95": [round(g.interval[0], 4), round(g.interval[1], 4)],
                    "p_pass_if_entered": round(g.passed / g.entered, 4) if g.entered else None,
                    "entered": g.entered,
                    "passed": g.passed,
                    "runs": g.runs,
                    "median_pass_day": g.median_day,
                    "undefined": [{"note": n, "runs": c} for n, c in g.undefined.items()],
                }
                for g in self.gates
            ],
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
            "warnings": self.warnings,
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

    def exit_code(self, min_probability: float | None = None) -> ExitCode:
        """The worst exit code of its simulations."""
        return max((r.exit_code(min_probability) for _, r in self.rows), default=ExitCode.OK)

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


_SIMULATORS: dict[int, Simulator] = {}


def run_chunk(
    playbook: Playbook,
    scenario: Scenario,
    days: int,
    runs: int,
    seed: np.random.SeedSequence,
    first_run: int,
    memory_budget: int | None = None,
) -> ChunkResult:
    """One chunk, in whatever process or Dask worker it lands on (simulator cached per process)."""
    key = hash((id(playbook), id(scenario), days, memory_budget))
    sim = _SIMULATORS.get(key)
    if sim is None or sim.pb is not playbook:
        sim = Simulator(playbook, scenario, days, memory_budget)
        _SIMULATORS.clear()
        _SIMULATORS[key] = sim
    return sim.run_chunk(runs, seed, first_run)


def chunks(options: SimOptions) -> list[tuple[int, int, np.random.SeedSequence]]:
    """(first_run, runs, seed) per chunk; seeds spawned per chunk from the root seed."""
    n = math.ceil(options.runs / CHUNK_RUNS)
    seeds = np.random.SeedSequence(options.seed).spawn(n)
    return [
        (i * CHUNK_RUNS, min(CHUNK_RUNS, options.runs - i * CHUNK_RUNS), seeds[i]) for i in range(n)
    ]


def simulate(
    playbook: Playbook,
    scenario: Scenario,
    options: SimOptions,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    """Run the Monte Carlo and aggregate it."""
    check_memory(playbook, scenario, options)
    t0 = time.perf_counter()
    plan = chunks(options)
    budget = options.memory_budget_mib * MIB
    args = [(playbook, scenario, options.days, n, s, first, budget) for first, n, s in plan]
    if options.executor == "dask":
        results = _dask(args, options.address)
    elif options.workers > 1 and len(args) > 1:
        results = _processes(args, min(options.workers, len(args)), progress)
    else:
        results = []
        for a in args:
            results.append(run_chunk(*a))
            if progress:
                progress(a[3])
    seconds = time.perf_counter() - t0
    return aggregate(playbook, scenario, options, results, seconds)


def _processes(
    args: list[tuple[Any, ...]], workers: int, progress: Callable[[int], None] | None
) -> list[ChunkResult]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork") if hasattr(mp, "get_context") else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(run_chunk, *a) for a in args]
        out = []
        for f, a in zip(futures, args, strict=True):
            out.append(f.result())
            if progress:
                progress(a[3])
    return out


def _dask(args: list[tuple[Any, ...]], address: str | None) -> list[ChunkResult]:
    try:
        from distributed import Client
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise RuntimeError("the dask executor needs `pip install 'sop[dask]'`") from e
    if not address:
        raise RuntimeError("--executor dask needs --address tcp://HOST:PORT")
    with Client(address, timeout="10s") as client:
        futures = client.map(lambda a: run_chunk(*a), args, pure=False)
        return list(client.gather(futures))


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
    res.gates = gate_results(playbook, res)
    res.units = playbook.metric_units()
    res.warnings = unmodelled_warnings(playbook, scenario)
    return res


def unmodelled_warnings(playbook: Playbook, scenario: Scenario) -> list[str]:
    """What the simulation cannot know: custom metrics with no definition and no model, and
    the `if:` guards that read them (undefined: such a guard does not hold, nor such a gate)."""
    unknown = [
        m.id
        for m in playbook.metrics.values()
        if m.definition is None and m.id not in scenario.metrics
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


def gate_results(pb: Playbook, res: SimResult) -> list[GateResult]:
    """For every gate: P(it passes by its stage's deadline), its interval and median day."""
    from ..lang.semantics import deadline_of

    out = []
    runs = res.metrics.shape[0]
    for j, sid in enumerate(res.stage_ids):
        st = pb.stages[sid]
        if st.gate is None:
            continue
        dl = deadline_of(st)
        dl_days = int(dl.total_seconds() // 86400) if dl else None
        ent = res.stage_entered[:, j]
        pas = res.stage_passed[:, j]
        ok = (pas >= 0) & (ent >= 0)
        if dl_days is not None:
            ok &= (pas - ent) <= dl_days
        n_ok = int(ok.sum())
        med = float(np.median(pas[ok])) if n_ok else None
        undefined = _count(n[sid] for r, n in enumerate(res.gate_notes) if sid in n and not ok[r])
        out.append(
            GateResult(
                sid,
                st.gate.text,
                dl_days,
                int((ent >= 0).sum()),
                n_ok,
                runs,
                wilson(n_ok, runs),
                med,
                dict(sorted(undefined.items(), key=lambda x: -x[1])),
            )
        )
    return out
