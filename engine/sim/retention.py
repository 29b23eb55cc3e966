"""Each simulated member's churn: the retention model's daily hazard, early quitters, and the
coupling of churn and speaking propensities.

The models are retention_models.py's (one definition each): a member draws θ ~ Beta(α, β) and
survives t periods with probability (1 − θ)^{t^c} (c = 1: sBG; c ≠ 1: beta-discrete-Weibull), so
on day τ of tenure (τ = 0 the join day) the daily hazard is

    h(τ) = 1 − (1 − θ)^{((τ + 1)/P)^c − (τ/P)^c} = 1 − exp(−λ·Δ(τ)),   λ = −ln(1 − θ),

which telescopes to S(t) = B(α, β + t^c) / B(α, β) at whole periods (retention_models.survival).
With `early_quit_share` π a member is an early quitter with probability π and leaves on a uniform
day of the first period (hazard 1/(P − τ) on day τ < P): S(t) = (1 − π)·S_model(t) for t ≥ 1.

Coupling (`activity.retention_coupling` ρ): a member's speaking propensity s ~ Beta(a, b) and
churn propensity come from one Gaussian copula, corr(z_speak, z_churn) = −ρ; the churn latent's
uniform u decides both "early quitter" (u > 1 − π) and θ = F⁻¹_Beta(u / (1 − π)) otherwise, so the
marginal retention curve is exactly the model's and the members who speak more stay longer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .retention_models import RetentionModel, survival
from .scenario import DEFAULT_COUPLING

_GRID = np.linspace(-6.0, 6.0, 481)  # normal scores on which a Beta's quantiles are tabulated
_NEAR_POINT = 1e4  # α + β beyond which a Beta is read by its normal approximation


@dataclass(frozen=True)
class Law:
    """The retention law of one chunk's runs; every parameter an array over the runs."""

    model: RetentionModel
    alpha: np.ndarray
    beta: np.ndarray
    c: np.ndarray
    quit: np.ndarray  # early_quit_share
    period: float
    rho: np.ndarray  # retention_coupling
    speak_a: np.ndarray
    speak_b: np.ndarray

    @property
    def weibull(self) -> bool:
        """Some run's hazard depends on tenure (c ≠ 1)."""
        return bool((self.c != 1).any())

    @property
    def quitters(self) -> bool:
        """Some run has early quitters."""
        return bool((self.quit > 0).any())

    @property
    def coupled(self) -> bool:
        """Some run couples churn and speaking."""
        return bool((self.rho != 0).any())


def law(
    sc: Any, values: Mapping[str, Any], runs: int, default_rho: float = DEFAULT_COUPLING
) -> Law:
    """The chunk's law from scenario `sc` and its per-run values (parameters.RunParameters)."""
    ret, act = sc.retention, sc.activity

    def arr(path: str, point: float) -> np.ndarray:
        v = values.get(path)
        return np.full(runs, float(point)) if v is None else np.asarray(v, dtype=float)

    model = RetentionModel(ret.model)
    weibull = model in (RetentionModel.BDW, RetentionModel.BDW_MIXTURE)
    mixture = model in (RetentionModel.SBG_MIXTURE, RetentionModel.BDW_MIXTURE)
    rho = getattr(act, "retention_coupling", default_rho)
    return Law(
        model,
        arr("retention.alpha", ret.alpha),
        arr("retention.beta", ret.beta),
        arr("retention.c", ret.c) if weibull else np.ones(runs),
        arr("retention.early_quit_share", ret.early_quit_share) if mixture else np.zeros(runs),
        float(ret.period_days),
        np.clip(arr("activity.retention_coupling", rho), -0.99, 0.99),
        arr("activity.speak_alpha", act.speak_alpha),
        arr("activity.speak_beta", act.speak_beta),
    )


@dataclass(frozen=True)
class Joiners:
    """What a day's joiners draw: `rate` (the daily hazard for sBG without quitters, else
    λ = −ln(1 − θ)), speaking propensity, and who is an early quitter."""

    rate: np.ndarray
    speak: np.ndarray
    quitter: np.ndarray | None


def draw_joiners(
    lw: Law,
    run_of: np.ndarray,
    rng: np.random.Generator | None,
    parts: list[tuple[np.random.Generator, slice]] | None = None,
    scores: np.ndarray | None = None,
) -> Joiners:
    """Churn and speaking propensities of joiners (`run_of`: each joiner's run in the chunk).

    `scores`: (joiners, 2) standard normals for a coupled law (speaking, the rest of churn);
    without them each chunk draws them from its generator. `parts`: for chunks run together,
    (the chunk's generator, its joiners: a slice of `run_of`); each chunk draws its joiners'
    random numbers as it would alone, and the rest is computed once for all of them."""
    n = len(run_of)
    if parts is None:
        assert rng is not None
        parts = [(rng, slice(0, n))]
    quitter: np.ndarray | None = None
    if not lw.coupled and not lw.quitters:
        # independent draws, in the order the model always drew them (same seed, same members)
        theta, speak = np.empty(n), np.empty(n)
        for g, sl in parts:
            mine = run_of[sl]
            theta[sl] = g.beta(lw.alpha[mine], lw.beta[mine], len(mine))
            speak[sl] = g.beta(lw.speak_a[mine], lw.speak_b[mine], len(mine))
    else:
        from scipy.special import ndtr, ndtri

        rho = lw.rho[run_of]
        if scores is not None:
            z_speak, z_other = scores[:, 0], scores[:, 1]
        else:
            z_speak, z_other = np.empty(n), np.empty(n)
            for g, sl in parts:
                k = sl.stop - sl.start
                z_speak[sl] = g.standard_normal(k)
                z_other[sl] = g.standard_normal(k)
        z_churn = -rho * z_speak + np.sqrt(1 - rho * rho) * z_other
        speak = _quantiles(z_speak, lw.speak_a, lw.speak_b, run_of)
        share = lw.quit[run_of]
        if not share.any():  # nobody quits early: θ at the churn score itself
            theta = _quantiles(z_churn, lw.alpha, lw.beta, run_of)
        else:
            u = ndtr(z_churn)
            quits = u > 1 - share
            # θ from the rest of the uniform: Beta(α, β) among quitters and the others alike
            rest = np.where(
                quits,
                (u - (1 - share)) / np.maximum(share, 1e-300),
                u / np.maximum(1 - share, 1e-300),
            )
            z_rest = ndtri(np.clip(rest, 1e-16, 1 - 1e-16))
            theta = _quantiles(z_rest, lw.alpha, lw.beta, run_of)
            if lw.quitters:
                quitter = quits
        if lw.quitters and quitter is None:
            quitter = np.zeros(n, dtype=bool)
    theta = np.minimum(theta, 1 - 1e-7)
    lam = -np.log1p(-theta)
    plain = not lw.weibull and not lw.quitters
    rate = -np.expm1(-lam / lw.period) if plain else lam
    return Joiners(rate.astype(np.float32), speak.astype(np.float32), quitter)


def _quantiles(z: np.ndarray, a: np.ndarray, b: np.ndarray, run_of: np.ndarray) -> np.ndarray:
    """Beta(a_r, b_r) quantiles at normal scores z, per run, from a table over `_GRID`."""
    if not len(z):
        return np.empty(0)
    # one table per distinct (a, b), not per run: runs share them unless drawn
    if (a == a[0]).all() and (b == b[0]).all():
        return _on_grid(z, _beta_table(float(a[0]), float(b[0])))
    runs = np.unique(run_of)
    pairs, which = np.unique(np.stack([a[runs], b[runs]], axis=1), axis=0, return_inverse=True)
    tables = np.stack([_beta_table(float(ar), float(br)) for ar, br in pairs])
    if len(tables) == 1:
        return _on_grid(z, tables[0])
    group = np.zeros(int(runs.max()) + 1, dtype=np.int64)
    group[runs] = which.reshape(-1)
    return _on_grid(z, tables, group[run_of])


_STEP = float(_GRID[1] - _GRID[0])


def _on_grid(z: np.ndarray, table: np.ndarray, row: np.ndarray | None = None) -> np.ndarray:
    """np.interp(z, _GRID, table) on the evenly spaced grid: the cell found by arithmetic, not
    a search (clamped to the table's ends, as np.interp does); with `row`, each z reads its own
    row of a 2-D `table`."""
    x = np.clip((z - _GRID[0]) / _STEP, 0.0, len(_GRID) - 1.0)
    i = np.minimum(x.astype(np.int64), len(_GRID) - 2)
    if row is None:
        lo, hi = table[i], table[i + 1]
    else:
        lo, hi = table[row, i], table[row, i + 1]
    return lo + (x - i) * (hi - lo)


_TABLES: dict[tuple[float, float], np.ndarray] = {}


def _beta_table(a: float, b: float) -> np.ndarray:
    """Beta(a, b)'s quantiles at the normal scores of `_GRID` (cached per process)."""
    hit = _TABLES.get((a, b))
    if hit is not None:
        return hit
    from scipy.special import betaincinv, ndtr

    if a + b > _NEAR_POINT:  # almost a point: its normal approximation, clipped to (0, 1)
        m = a / (a + b)
        sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        table = np.clip(m + sd * _GRID, 0.0, 1.0)
    else:
        table = betaincinv(a, b, ndtr(_GRID))
    if len(_TABLES) > 4096:  # per-run draws of a long simulation: keep memory bounded
        _TABLES.clear()
    _TABLES[(a, b)] = table
    return table


def tenure_table(lw: Law, days: int) -> np.ndarray | None:
    """Δ(τ) = ((τ + 1)/P)^c − (τ/P)^c per run and tenure day τ = 0..days+1 (None: c = 1)."""
    if not lw.weibull:
        return None
    tau = np.arange(days + 3, dtype=float) / lw.period
    return np.diff(tau[None, :] ** lw.c[:, None], axis=1)


def daily_hazard(
    lw: Law,
    rate: np.ndarray,
    tenure: np.ndarray,
    quitter: np.ndarray | None,
    delta: np.ndarray | None,
) -> np.ndarray:
    """(runs, members) hazards today from each member's `rate` and tenure in days."""
    if delta is None and quitter is None:
        return rate
    t = np.clip(tenure, 0, (delta.shape[1] - 1) if delta is not None else None)
    if delta is not None:
        runs = np.arange(rate.shape[0])[:, None] * delta.shape[1]
        steps = delta.ravel()[t + runs].astype(np.float32)
    else:
        steps = np.float32(1 / lw.period)
    h = -np.expm1(-rate * steps)
    if quitter is not None:
        # an early quitter leaves on a uniform day of the first period: 1/(P − τ) on day τ
        left = np.float32(lw.period) - tenure.astype(np.float32)
        first = quitter & (left > 0)
        h = np.where(first, np.minimum(1.0, 1.0 / np.maximum(left, 1e-6)), h).astype(np.float32)
    return np.asarray(h, dtype=np.float32)


def expected_survival(lw: Law, run: int, t_periods: Any) -> np.ndarray:
    """The model's S(t) for run `run` (retention_models.survival)."""
    params = [lw.alpha[run], lw.beta[run]]
    if lw.model in (RetentionModel.BDW, RetentionModel.BDW_MIXTURE):
        params.append(lw.c[run])
    if lw.model in (RetentionModel.SBG_MIXTURE, RetentionModel.BDW_MIXTURE):
        params.append(lw.quit[run])
    return survival(lw.model, params, t_periods)


# -- calibrating the coupling --------------------------------------------------------------------


def silent_risk_ratio(
    sc: Any,
    rho: float,
    members: int = 200_000,
    periods: int = 12,
    period_days: int = 30,
    seed: int = 0,
) -> float:
    """The Mantel–Haenszel risk ratio of leaving after a silent vs an active whole period, by
    tenure period, of the members scenario `sc` simulates with coupling ρ (no actions).

    The statistic `sop calibrate community` measures on an export (activity_fit.coupling; both
    compute it by activity_fit.silent_period_risk), so `coupling_for_risk_ratio` can turn a
    measured ratio into ρ.
    """
    from .activity_fit import silent_period_risk

    left, active = silent_period_cohort(sc, rho, members, periods, period_days, seed)
    # present at the start of each period 0..periods (a leaving on a period's first day counts)
    starts = np.arange(periods + 1) * period_days
    present = (left[:, None] < 0) | (left[:, None] >= starts[None, :])
    # at risk in period k+1 (k = 1..periods-1) after a whole period k
    at_risk = present[:, 1:periods] & present[:, : periods - 1]
    silent = at_risk & ~active[:, : periods - 1]
    busy = at_risk & active[:, : periods - 1]
    gone = at_risk & ~present[:, 2:]
    stratum = np.broadcast_to(np.arange(1, periods), at_risk.shape)
    return silent_period_risk(stratum, silent, busy, gone).ratio


def silent_period_cohort(
    sc: Any, rho: float, members: int, periods: int, period_days: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One cohort joining on day 0, simulated by the simulator's law with coupling ρ for
    `periods` periods: each member's day of leaving (−1: still in) and whether they spoke in
    each period, (members, periods)."""
    rng = np.random.default_rng(seed)
    act = sc.activity
    lw = law(sc, {"activity.retention_coupling": np.array([rho])}, 1)
    run_of = np.zeros(members, dtype=np.int64)
    j = draw_joiners(lw, run_of, rng)
    days = periods * period_days
    delta = tenure_table(lw, days)
    alive = np.ones(members, dtype=bool)
    left = np.full(members, -1, dtype=np.int64)
    active = np.zeros((members, periods), dtype=bool)
    tau_s = act.tenure_decay_days
    floor = act.decay_floor
    for day in range(days):
        k = day // period_days
        g = floor + (1 - floor) * math.exp(-day / tau_s)
        active[:, k] |= alive & (rng.random(members) < j.speak * g)
        tenure = np.full((1, members), day)
        h = daily_hazard(
            lw, j.rate[None, :], tenure, None if j.quitter is None else j.quitter[None, :], delta
        )[0]
        gone = alive & (rng.random(members) < h)
        left[gone] = day
        alive &= ~gone
    return left, active


def coupling_for_risk_ratio(sc: Any, ratio: float, tol: float = 0.02) -> float:
    """The ρ whose simulated silent-period risk ratio is `ratio` (bisection on [0, 0.95])."""
    lo, hi = 0.0, 0.95
    if ratio <= silent_risk_ratio(sc, lo):
        return 0.0
    if ratio >= silent_risk_ratio(sc, hi):
        return hi
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if silent_risk_ratio(sc, mid) < ratio:
            lo = mid
        else:
            hi = mid
    return round((lo + hi) / 2, 3)


def coupling_notes(sc: Any) -> list[str]:
    """Why the scenario's coupling may not do what it says: it acts through the spread of churn
    propensities, which a retention Beta collapsed to nearly a point does not have."""
    rho = sc.activity.retention_coupling
    a, b = sc.retention.alpha, sc.retention.beta
    if rho and a + b > _NEAR_POINT and not sc.retention.draws:
        return [
            f"activity.retention_coupling {rho:g} has almost no effect: the retention model's"
            f" Beta({a:.3g}, {b:.3g}) is nearly a point, so members differ in churn only as early"
            " quitters or not (a model with more spread, e.g. bdw-mixture, carries the coupling)"
        ]
    return []
