"""What a simulation forecasts of the issue-12 constructs, from the runs' histories: the
probability of each exit of each stage, of each target being met by its day, of each incident's
`detect:` triggering, and the distributions of segment sizes, per-channel values and staff
workload. The rules are program's (targets, incidents, counted); this module counts runs. Each
probability's interval is intervals.py's (wider when runs share a parameter draw).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..lang.model import Playbook
from ..program import incidents as pi
from ..program import targets as pt
from ..program.history import ArrayHistory
from ..program.lifecycle import exits_of
from .attributes import MemberModel
from .intervals import INDEPENDENT, Pairs, interval
from .percentiles import nan_percentiles
from .scenario import Scenario

QS = (5, 50, 95)


@dataclass(frozen=True)
class RunShare:
    """k of n runs, with the 95 % interval and the median day it happened (`deff`: the design
    effect of runs sharing a parameter draw, intervals.py)."""

    k: int
    n: int
    median_day: float | None = None
    deff: float = 1.0

    @property
    def p(self) -> float:
        """k / n (0 with no runs)."""
        return self.k / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        lo, hi = interval(self.k, self.n, self.deff)
        return {
            "p": round(self.p, 4),
            "interval95": [round(lo, 4), round(hi, 4)],
            "runs": self.k,
            "of": self.n,
            "median_day": self.median_day,
            "design_effect": round(self.deff, 4),  # 1: the runs counted as independent
        }


@dataclass(frozen=True)
class StageExits:
    """How the runs left a stage: by each exit (in order), or otherwise, or not at all."""

    stage: str
    entered: int
    runs: int
    exits: dict[str, RunShare]  # exit id -> runs that left by it (of all runs), median day
    goto: dict[str, str | None]  # exit id -> the stage it leads to (None: `after:` successors)
    other: dict[str, int]  # deadline / timeboxed / aborted / running / not entered -> runs
    # design effects (intervals.py): of each exit among the runs that entered, of each `other`
    entered_deff: dict[str, float] = field(default_factory=dict)
    other_deff: dict[str, float] = field(default_factory=dict)

    def if_entered(self, exit_id: str) -> RunShare:
        """The runs that left by `exit_id`, of those that entered the stage."""
        s = self.exits[exit_id]
        return RunShare(s.k, self.entered, s.median_day, self.entered_deff.get(exit_id, 1.0))

    def as_dict(self) -> dict[str, Any]:
        """Plain data: each exit's P over all runs and given the stage was entered."""
        out: dict[str, Any] = {
            "stage": self.stage,
            "entered": self.entered,
            "runs": self.runs,
            "exits": [],
            "other": self.other,
            "other_design_effect": {k: round(self.other_deff.get(k, 1.0), 4) for k in self.other},
        }
        for e, s in self.exits.items():
            entered = self.if_entered(e).as_dict() if self.entered else None
            out["exits"].append(
                {
                    "exit": e,
                    "goto": self.goto.get(e),
                    **s.as_dict(),
                    "if_entered": entered["p"] if entered else None,
                    "if_entered_interval95": entered["interval95"] if entered else None,
                    "if_entered_design_effect": entered["design_effect"] if entered else None,
                }
            )
        return out


def stage_exits(
    pb: Playbook,
    stage_ids: Sequence[str],
    entered: np.ndarray,
    passed: np.ndarray,
    outcomes: Sequence[Mapping[str, str]],
    took: Sequence[Mapping[str, str]],
    pairs: Pairs = INDEPENDENT,
) -> list[StageExits]:
    """For every stage with an exit: the runs that left it by each exit (dissolution is a
    forecast outcome), with Wilson intervals and median days."""
    out = []
    runs = len(outcomes)
    took = took if len(took) == runs else [{} for _ in range(runs)]
    for j, sid in enumerate(stage_ids):
        exits = exits_of(pb.stages[sid])
        if not exits:
            continue
        days: dict[str, list[int]] = {e.id: [] for e in exits}
        by: dict[str, np.ndarray] = {}  # exit id -> per run, whether it left by it
        other: dict[str, int] = {}
        ended: dict[str, np.ndarray] = {}  # other outcome -> per run, whether it ended so
        for r in range(runs):
            if entered[r, j] < 0:
                other["not entered"] = other.get("not entered", 0) + 1
                ended.setdefault("not entered", np.zeros(runs, bool))[r] = True
                continue
            outcome = outcomes[r].get(sid, "running")
            if outcome == "passed":
                e = took[r].get(sid, exits[0].id)
                days.setdefault(e, []).append(int(passed[r, j]))
                by.setdefault(e, np.zeros(runs, bool))[r] = True
            else:
                other[outcome] = other.get(outcome, 0) + 1
                ended.setdefault(outcome, np.zeros(runs, bool))[r] = True
        shares = {
            e: RunShare(
                len(d),
                runs,
                float(np.median(d)) if d else None,
                pairs.deff(by[e]) if e in by else 1.0,
            )
            for e, d in days.items()
        }
        inside = entered[:, j] >= 0
        out.append(
            StageExits(
                sid,
                int(inside.sum()),
                runs,
                shares,
                {e.id: e.goto for e in exits},
                other,
                {e: pairs.deff(hit, inside) for e, hit in by.items()},
                {k: pairs.deff(hit) for k, hit in ended.items()},
            )
        )
    return out


@dataclass(frozen=True)
class TargetResult:
    """P(a metric meets its target by its day): on that day, and on some day up to it."""

    metric: str
    goal: str  # `>= 500 by day 90` (targets.describe)
    value: float
    at_most: bool
    due_day: int  # the day it is judged by (`by`, else the horizon)
    judged_day: int  # the day index read: the close of the due day, within the horizon
    beyond_horizon: bool  # `by` lies past the simulated days: judged at the horizon instead
    met: RunShare  # met on the judged day
    reached: RunShare  # met on some day up to it, with the median first day
    undefined: int  # runs without a value on the judged day
    shortfall: dict[str, float | None] = field(default_factory=dict)  # runs not met: p50...

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "metric": self.metric,
            "goal": self.goal,
            "value": self.value,
            "at_most": self.at_most,
            "due_day": self.due_day,
            "judged_day": self.judged_day,
            "beyond_horizon": self.beyond_horizon,
            "p_met": self.met.as_dict(),
            "p_reached": self.reached.as_dict(),
            "undefined_runs": self.undefined,
            "shortfall": self.shortfall,
        }


def target_results(
    pb: Playbook, metric_names: Sequence[str], metrics: np.ndarray, pairs: Pairs = INDEPENDENT
) -> tuple[list[TargetResult], list[str]]:
    """Every target of the playbook against the runs (and a warning per target the
    simulation has no values of)."""
    runs, days = metrics.shape[0], metrics.shape[1]
    out, notes = [], []
    for name, target in pt.targets(pb).items():
        if name not in metric_names or not days:
            notes.append(f"target `{name}`: the simulation has no values of this metric")
            continue
        series = metrics[:, :, metric_names.index(name)].astype(float)
        due = pt.due_day(target, days)
        judged = max(0, min(due, days) - 1)
        ok = np.asarray(pt.met(series[:, : judged + 1], target), dtype=bool)
        first = [int(np.argmax(row)) for row in ok if row.any()]
        on_day = ok[:, judged]
        gap = np.asarray(pt.shortfall(series[~on_day, judged], target), dtype=float)
        gap = gap[~np.isnan(gap)]
        out.append(
            TargetResult(
                name,
                pt.describe(target),
                target.value,
                target.at_most,
                due,
                judged,
                due > days,
                RunShare(int(on_day.sum()), runs, deff=pairs.deff(on_day)),
                RunShare(
                    len(first),
                    runs,
                    float(np.median(first)) if first else None,
                    pairs.deff(ok.any(axis=1)),
                ),
                int(np.isnan(series[:, judged]).sum()),
                _quantiles(gap),
            )
        )
    return out, notes


@dataclass(frozen=True)
class IncidentResult:
    """P(an incident's `detect:` triggers within the horizon), and its first day."""

    incident: str
    title: str
    owner: str
    detect: str
    triggered: RunShare  # runs in which it triggered at least once; median first day
    first_day: dict[str, float | None]  # p5/p50/p95 of the first day, among those runs
    days_triggered: dict[str, float | None]  # p5/p50/p95 of the days it held, over all runs

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "incident": self.incident,
            "title": self.title,
            "owner": self.owner,
            "detect": self.detect,
            "triggered": self.triggered.as_dict(),
            "first_day": self.first_day,
            "days_triggered": self.days_triggered,
        }


def incident_results(
    pb: Playbook, metric_names: Sequence[str], metrics: np.ndarray, pairs: Pairs = INDEPENDENT
) -> list[IncidentResult]:
    """For every incident with `detect:`: on how many runs it triggers (program/incidents.py's
    rule on each closed day), and when first."""
    runs, days = metrics.shape[0], metrics.shape[1]
    index = {m: i for i, m in enumerate(metric_names)}
    out = []
    for inc in pb.incidents.values():
        if inc.detect is None or inc.detect.node is None:
            continue
        held = np.zeros((runs, days), dtype=bool)
        for d in range(days):
            history = ArrayHistory(metrics[:, : d + 1, :], index)
            held[:, d] = np.asarray(pi.detects(inc, history), dtype=bool)
        first = np.array([int(np.argmax(row)) for row in held if row.any()], dtype=float)
        out.append(
            IncidentResult(
                inc.id,
                inc.title,
                inc.owner,
                inc.detect.text,
                RunShare(
                    len(first),
                    runs,
                    float(np.median(first)) if len(first) else None,
                    pairs.deff(held.any(axis=1)),
                ),
                _quantiles(first),
                _quantiles(held.sum(axis=1).astype(float)),
            )
        )
    return out


def daily_percentiles(values: np.ndarray, every: int = 1) -> dict[str, Any]:
    """p5/p50/p95 over the runs of a (runs, days) array, every `every` days (JSON)."""
    days = list(range(0, values.shape[1], every))
    qs = nan_percentiles(values, QS) if values.shape[0] else None
    out: dict[str, Any] = {"days": days}
    for i, q in enumerate(QS):
        out[f"p{q}"] = [None if qs is None else _round(qs[i, d]) for d in days]
    return out


def workload_summary(
    pb: Playbook,
    roles: Sequence[str],
    workload: np.ndarray | None,
    every: int = 1,
    pairs: Pairs = INDEPENDENT,
) -> dict[str, Any]:
    """Per role: tasks a day (p5/p50/p95 over the runs), its capacity (headcount × tasks a
    person a day), P(some day above it) with its interval, and the tasks a day and the days
    above capacity over every day of every run."""
    if workload is None or not len(roles):
        return {}
    out = {}
    runs = workload.shape[0]
    for i, role in enumerate(roles):
        r = pb.roles[role]
        cap = r.headcount * (r.capacity or pb.staff_tasks_per_day)
        w = workload[:, :, i]
        over = (w > cap).any(axis=1) if w.size else np.zeros(runs, bool)
        first = [int(np.argmax(row > cap)) for row in w if (row > cap).any()]
        above = w > cap
        out[role] = {
            "capacity": cap,
            # over every day of every run: how many tasks a day, and how often above capacity
            "tasks_per_day": _quantiles(w.ravel()),
            "share_of_days_over": round(float(above.mean()), 4) if w.size else None,
            "days_over": _quantiles(above.sum(axis=1)),  # per run, p5/p50/p95
            "daily": daily_percentiles(w, every),
            "peak": _quantiles(w.max(axis=1) if w.size else np.zeros(0)),
            "total": _quantiles(w.sum(axis=1)),
            "over_capacity": RunShare(
                int(over.sum()), runs, float(np.median(first)) if first else None, pairs.deff(over)
            ).as_dict(),
        }
    return out


def segment_summary(
    segments: Sequence[str], sizes: np.ndarray | None, every: int = 1
) -> dict[str, Any]:
    """Per segment: members at the close of each day (p5/p50/p95 over the runs)."""
    if sizes is None:
        return {}
    return {s: daily_percentiles(sizes[:, :, j], every) for j, s in enumerate(segments)}


def channel_summary(
    pb: Playbook,
    channels: Sequence[str],
    joins: np.ndarray | None,
    by_channel: np.ndarray | None,
    by_channel_names: Sequence[str],
    every: int = 1,
) -> dict[str, Any]:
    """Per channel: joins via it over the horizon and its share of all joins (p5/p50/p95
    over the runs), against the playbook's planned share; `by_channel` metrics per day."""
    if joins is None:
        return {}
    total = joins.sum(axis=1)
    out: dict[str, Any] = {"channels": {}, "metrics": {}}
    for c, name in enumerate(channels):
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total > 0, joins[:, c] / np.maximum(total, 1), np.nan)
        planned = pb.channels[name].share if name in pb.channels else None
        out["channels"][name] = {
            "declared": name in pb.channels,
            "planned_share": planned,
            "joins": _quantiles(joins[:, c]),
            "share": _quantiles(share),
        }
    if by_channel is not None:
        for k, name in enumerate(by_channel_names):
            out["metrics"][name] = daily_percentiles(by_channel[:, :, k], every)
    return out


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return {f"p{q}": None for q in QS}
    return {f"p{q}": _round(x) for q, x in zip(QS, np.percentile(v, QS), strict=True)}


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)


@dataclass
class Forecasts:
    """The forecasts of a simulation beyond metrics and gates (issue 12), with the arrays
    they come from: segments (runs, days, segments), workload (runs, days, roles), joins per
    channel (runs, channels) and `by_channel` metric values (runs, days, metric x channel)."""

    exits: list[StageExits] = field(default_factory=list)
    targets: list[TargetResult] = field(default_factory=list)
    incidents: list[IncidentResult] = field(default_factory=list)
    segment_ids: list[str] = field(default_factory=list)
    segment_sizes: np.ndarray | None = None
    roles: list[str] = field(default_factory=list)
    workload: np.ndarray | None = None
    channel_ids: list[str] = field(default_factory=list)
    channel_joins: np.ndarray | None = None
    by_channel_names: list[str] = field(default_factory=list)
    by_channel: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    playbook: Playbook | None = None
    pairs: Pairs = INDEPENDENT  # the runs that share a parameter draw (intervals.py)

    def as_dict(self, every: int = 1) -> dict[str, Any]:
        """The keys these forecasts add to the simulation's JSON document."""
        pb = self.playbook
        assert pb is not None
        return {
            "exits": [x.as_dict() for x in self.exits],
            "targets": [t.as_dict() for t in self.targets],
            "incidents": [i.as_dict() for i in self.incidents],
            "segments": segment_summary(self.segment_ids, self.segment_sizes, every),
            "channels": channel_summary(
                pb,
                self.channel_ids,
                self.channel_joins,
                self.by_channel,
                self.by_channel_names,
                every,
            ),
            "workload": workload_summary(pb, self.roles, self.workload, every, self.pairs),
        }


def forecasts(
    pb: Playbook,
    sc: Scenario,
    chunks: Sequence[Any],
    metric_names: Sequence[str],
    metrics: np.ndarray,
    stage_ids: Sequence[str],
    entered: np.ndarray,
    passed: np.ndarray,
    outcomes: Sequence[Mapping[str, str]],
    took: Sequence[Mapping[str, str]],
) -> Forecasts:
    """The forecasts of the chunks (`kernel.ChunkResult`, in run order)."""
    from ..core.catalog import ORGANIC

    def cat(name: str) -> np.ndarray | None:
        parts = [getattr(c, name) for c in chunks]
        return None if any(p is None for p in parts) or not parts else np.concatenate(parts)

    drawn = [c.parameters for c in chunks if getattr(c, "parameters", None) is not None]
    pairs = Pairs.of(np.concatenate(drawn)) if drawn and len(drawn) == len(chunks) else INDEPENDENT
    targets, notes = target_results(pb, metric_names, metrics, pairs)
    out = Forecasts(
        exits=stage_exits(pb, stage_ids, entered, passed, outcomes, took, pairs),
        targets=targets,
        incidents=incident_results(pb, metric_names, metrics, pairs),
        segment_ids=list(pb.segments),
        segment_sizes=cat("segments"),
        roles=list(pb.roles),
        workload=cat("workload"),
        channel_ids=[ORGANIC, *(c for c in pb.channels if c != ORGANIC)],
        channel_joins=cat("channel_joins"),
        by_channel_names=list(chunks[0].by_channel_names) if chunks else [],
        by_channel=cat("by_channel"),
        warnings=notes,
        playbook=pb,
        pairs=pairs,
    )
    for name in MemberModel(pb, sc).unmodelled():
        out.warnings.append(
            f"member attribute `{name}` has no distribution in the scenario: every simulated"
            " member has it unset, so segments and conditions on it see no one (add it under"
            " `attributes:` in the scenario)"
        )
    return out
