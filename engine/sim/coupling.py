"""The engagement–retention coupling a measured silent-period risk ratio implies.

`sop calibrate community` measures, on the export, how much more likely a member is to leave in
a period after a silent period than after an active one (activity_fit.coupling: a
Mantel–Haenszel risk ratio stratified by tenure). The simulator couples speaking and churn by a
Gaussian copula with parameter ρ = `activity.retention_coupling` (retention.py). The two are
different quantities: the ratio also depends on the retention model, the speaking propensity,
its tenure decay and the export's periods. So ρ is found the only way that keeps one definition
of each: members are simulated with the simulator's own law (retention.law, draw_joiners,
daily_hazard) on the export's join days and activity periods, the same statistic is computed on
them by the same function, and ρ is solved so that it equals the measured ratio (common random
numbers across ρ: the simulated ratio is a smooth, increasing function of ρ). Its standard
error carries the measured ratio's (and the simulation's own, far smaller) by the delta method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .activity_fit import Coupling, coupling
from .community_data import NO_DATE, ActivityLog, Members, PeriodActivity, period_activity

RHO_RANGE = (-0.9, 0.9)  # within the scenario's ±0.95
SIM_MEMBERS = 30_000  # simulated members: the export's join days repeated up to this many
_STEP = 0.1  # for the slope d ln(ratio) / dρ
MIN_SPAN = 0.1  # ln ratio must move this much from ρ = −0.9 to 0.9 for ρ to be identified


@dataclass(frozen=True)
class CouplingFit:
    """ρ whose simulated risk ratio is the measured one, with its standard error."""

    rho: float
    se: float
    measured: float  # the export's risk ratio
    measured_se_log: float  # SE of its logarithm
    simulated: float  # the simulated ratio at ρ
    simulated_se_log: float
    at_bound: bool  # the measured ratio lies beyond what ρ in RHO_RANGE reproduces
    members: int  # simulated members

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "retention_coupling": self.rho,
            "se": self.se if math.isfinite(self.se) else None,
            "measured_risk_ratio": self.measured,
            "simulated_risk_ratio": self.simulated,
            "simulated_members": self.members,
            "at_bound": self.at_bound,
            "meaning": "the simulator's Gaussian-copula correlation of speaking and staying whose"
            " simulated silent-period risk ratio (same statistic, same periods, same join days)"
            " equals the measured one",
        }


def _se_log(c: Coupling) -> float:
    lo, hi = c.ci95
    return (math.log(hi) - math.log(lo)) / (2 * 1.96) if lo > 0 and hi > 0 else math.inf


MIXTURE_ROWS = 40  # draws of a scenario's `retention.draws` the simulated members spread over


def _law_rows(sc: Any, rho: float) -> tuple[Any, int]:
    """The simulator's law for the simulated members: one run of the scenario's point values,
    or, when the scenario carries `retention.draws` (the forecast mixture calibrate writes),
    MIXTURE_ROWS of its rows that can carry a coupling, evenly spaced (calibrate writes them in
    a random order), each a run of its own.

    A row whose Beta is nearly a point (retention._NEAR_POINT) has members who differ in churn
    only as early quitters or not, which the statistic does not see (it starts after a whole
    period): ρ does nothing there. Solved on every row, ρ would be pushed towards its bound for
    the other rows to make up for those; solved on the rows it moves, it is theirs (and any ρ
    is as good as another for a point-like row). Only when every row is point-like are all of
    them used (and fit_coupling finds that ρ does not move the statistic)."""
    from . import retention as rt

    joint = sc.joint_draws() if hasattr(sc, "joint_draws") else None
    if joint is None:
        return rt.law(sc, {"activity.retention_coupling": np.array([rho])}, 1), 1
    table = np.asarray(joint.rows, dtype=float)
    names = list(joint.names)
    spread = table[:, names.index("alpha")] + table[:, names.index("beta")] <= rt._NEAR_POINT
    if spread.any():
        table = table[spread]
    runs = min(len(table), MIXTURE_ROWS)
    pick = np.linspace(0, len(table) - 1, runs).round().astype(np.int64)
    values: dict[str, np.ndarray] = {
        f"retention.{name}": table[pick, i] for i, name in enumerate(joint.names)
    }
    values["activity.retention_coupling"] = np.full(runs, rho)
    return rt.law(sc, values, runs), runs


def simulated_history(
    sc: Any,
    joined: np.ndarray,
    as_of: int,
    starts: np.ndarray,
    granularity: str,
    rho: float,
    seed: int = 0,
) -> tuple[Members, PeriodActivity]:
    """Members joining on days `joined`, simulated to `as_of` by the simulator's retention law
    and speaking propensity with coupling ρ; their period activity on the export's periods.

    With the scenario's `retention.draws` the members are shared among rows of the draws (each
    row a run of the simulator's law, on every R-th of the join days)."""
    from . import retention as rt

    rng = np.random.default_rng(seed)
    lw, runs = _law_rows(sc, rho)
    j = np.sort(np.asarray(joined, dtype=np.int64))[::runs]
    n = len(j)
    who = rt.draw_joiners(lw, np.repeat(np.arange(runs), n), rng)
    first = int(j[0])
    days = as_of - first + 1
    delta = rt.tenure_table(lw, days)
    act = sc.activity
    decay = act.decay_floor + (1 - act.decay_floor) * np.exp(
        -np.arange(days + 1) / act.tenure_decay_days
    )
    alive = np.ones((runs, n), dtype=bool)
    left = np.full((runs, n), NO_DATE, dtype=np.int64)
    # one activity row per member and period is all the statistic reads: mark, do not list days
    period_first = starts[:-1]
    active = np.zeros((runs, n, len(period_first)), dtype=bool)
    speak = who.speak.astype(float).reshape(runs, n)
    rate = who.rate.reshape(runs, n)
    quit = None if who.quitter is None else who.quitter.reshape(runs, n)
    # the same stream order for every ρ (common random numbers): only the copula's draws differ
    for d in range(first, as_of + 1):
        k = int(np.searchsorted(j, d, side="right"))  # members joined by day d
        if not k:
            continue
        tenure = d - j[:k]
        u = rng.random((runs, k))
        on = alive[:, :k] & (u < speak[:, :k] * decay[tenure][None, :])
        col = int(np.searchsorted(period_first, d, side="right")) - 1
        if 0 <= col < active.shape[2]:
            active[:, :k, col] |= on
        h = rt.daily_hazard(
            lw, rate[:, :k], tenure[None, :], None if quit is None else quit[:, :k], delta
        )
        gone = alive[:, :k] & (rng.random((runs, k)) < h)
        left[:, :k][gone] = d
        alive[:, :k] &= ~gone
    total = runs * n
    ids = tuple(f"s{i}" for i in range(total))
    jj = np.tile(j, runs)
    members = Members("simulated", ids, jj, left.ravel(), None, np.zeros(total, dtype=np.int64))
    mi, ci = np.nonzero(active.reshape(total, -1))
    log = ActivityLog("simulated", mi, period_first[ci], np.ones(len(mi)), 0, None, 0)
    return members, period_activity(members, log, as_of, starts, granularity)


def implied_risk_ratio(
    sc: Any,
    rho: float,
    joined: np.ndarray,
    as_of: int,
    starts: np.ndarray,
    granularity: str,
    seed: int = 0,
) -> Coupling | None:
    """The silent-period risk ratio (activity_fit.coupling) of members simulated with ρ."""
    m, pa = simulated_history(sc, joined, as_of, starts, granularity, rho, seed)
    return coupling(m, pa)


def repeated(joined: np.ndarray, target: int = SIM_MEMBERS) -> np.ndarray:
    """The export's join days repeated (whole times) to about `target` members."""
    j = np.asarray(joined, dtype=np.int64)
    return np.tile(j, max(1, math.ceil(target / max(len(j), 1))))


def fit_coupling(
    sc: Any,
    measured: Coupling,
    joined: np.ndarray,
    as_of: int,
    starts: np.ndarray,
    granularity: str,
    *,
    seed: int = 0,
    members: int = SIM_MEMBERS,
) -> CouplingFit | None:
    """ρ reproducing `measured` on simulated members (the export's join days and periods)."""
    days = repeated(joined, members)

    def log_rr(rho: float) -> tuple[float, float]:
        c = implied_risk_ratio(sc, rho, days, as_of, starts, granularity, seed)
        if c is None:
            return math.nan, math.inf
        return math.log(c.silent_hazard_ratio), _se_log(c)

    target = math.log(measured.silent_hazard_ratio)
    lo, hi = RHO_RANGE
    f_lo, f_hi = log_rr(lo)[0], log_rr(hi)[0]
    if not (math.isfinite(f_lo) and math.isfinite(f_hi)) or f_hi - f_lo < MIN_SPAN:
        return None  # ρ does not move the statistic (e.g. a retention Beta that is a point)
    at_bound = not f_lo <= target <= f_hi
    if target <= f_lo:
        rho = lo
    elif target >= f_hi:
        rho = hi
    else:
        # regula falsi (Illinois) on ln ratio: a handful of simulations
        a, b, fa, fb = lo, hi, f_lo - target, f_hi - target
        side = 0
        rho = 0.0
        for _ in range(8):
            rho = (a * fb - b * fa) / (fb - fa)
            fr = log_rr(rho)[0] - target
            if abs(fr) < 1e-3 or b - a < 1e-3:
                break
            if fr * fb > 0:
                b, fb = rho, fr
                if side == -1:
                    fa /= 2
                side = -1
            else:
                a, fa = rho, fr
                if side == 1:
                    fb /= 2
                side = 1
    f_rho, se_sim = log_rr(rho)
    r1, r2 = max(lo, rho - _STEP), min(hi, rho + _STEP)
    slope = (log_rr(r2)[0] - log_rr(r1)[0]) / (r2 - r1)
    se_meas = _se_log(measured)
    se = math.sqrt(se_meas**2 + se_sim**2) / slope if slope > 0 else math.inf
    return CouplingFit(
        round(rho, 4), se, measured.silent_hazard_ratio, se_meas, math.exp(f_rho), se_sim,
        at_bound, len(days),
    )  # fmt: skip
