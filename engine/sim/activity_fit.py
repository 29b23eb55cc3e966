"""Speaking propensity fitted to who was active in which period, in the simulator's daily units.

The simulator's member speaks on a day with probability s·g(tenure), s ~ Beta(a, b),
g(τ) = f + (1 − f)·e^{−τ/τ_s} (docs/simulation.md, Activity). An export rarely has days: it says
who was active in a week or a month. With days independent, a member is active in a period of
P days with probability π = 1 − (1 − s·g)^P, so a weekly export where a member is active every
week says s is large, not that s = 1 (the old mapping read a period's rate as a day's and clamped
it). The likelihood integrates s over Beta(a, b) by quadrature on its quantiles; tenures are
binned to whole periods, so each evaluation is one matrix product.

It also estimates the engagement–retention coupling the data show: how much more likely a member
is to leave in a period after a silent period than after an active one, at the same tenure
(a Mantel–Haenszel risk ratio, stratified by tenure period).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .community_data import NO_DATE, Members, PeriodActivity

# The scenario's ranges (schemas/scenario.schema.json): Beta shapes 0.001 .. 1e6, decay days > 0.
SHAPE_RANGE = (0.001, 1_000_000.0)
DECAY_RANGE = (1.0, 36_500.0)
_BOUNDS = [
    (math.log(SHAPE_RANGE[0]), math.log(SHAPE_RANGE[1])),
    (math.log(SHAPE_RANGE[0]), math.log(SHAPE_RANGE[1])),
    (-9.0, 9.0),  # logit f
    (math.log(DECAY_RANGE[0]), math.log(DECAY_RANGE[1])),
]
NAMES = ("speak_alpha", "speak_beta", "decay_floor", "tenure_decay_days")
NODES = 40


@dataclass(frozen=True)
class ActivityFit:
    """Daily speaking propensity Beta(a, b) and tenure decay, fitted to period activity."""

    speak_alpha: float
    speak_beta: float
    decay_floor: float
    tenure_decay_days: float
    log_likelihood: float
    members: int
    member_periods: int
    active_share: float  # observed share of member-periods with activity
    period_days: float
    at_bound: tuple[str, ...]

    def fragment(self) -> dict[str, float]:
        """The scenario's activity section."""
        return {
            "speak_alpha": round(self.speak_alpha, 4),
            "speak_beta": round(self.speak_beta, 4),
            "tenure_decay_days": round(self.tenure_decay_days, 2),
            "decay_floor": round(self.decay_floor, 4),
        }

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        mean = self.speak_alpha / (self.speak_alpha + self.speak_beta)
        return {
            "model": "beta-propensity with tenure decay",
            "params": {n: getattr(self, n) for n in NAMES},
            "mean_daily_propensity": mean,
            "log_likelihood": self.log_likelihood,
            "members": self.members,
            "member_periods": self.member_periods,
            "active_share_per_period": self.active_share,
            "period_days": self.period_days,
            "at_bound": list(self.at_bound),
        }


class _Data:
    """Per member: periods present and active in each tenure bin; identical members merged."""

    def __init__(self, pa: PeriodActivity) -> None:
        P = pa.period_days
        k = np.floor(np.maximum(pa.tenure, 0) / P).astype(np.int64)
        kmax = int(k[pa.present].max()) + 1 if pa.present.any() else 1
        self.tenure_days = (np.arange(kmax) + 0.5) * P
        rows = np.flatnonzero(pa.present.any(axis=1))
        act = np.zeros((len(rows), kmax))
        idle = np.zeros((len(rows), kmax))
        for r, i in enumerate(rows):
            pres = pa.present[i]
            np.add.at(act[r], k[i][pres & pa.active[i]], 1.0)
            np.add.at(idle[r], k[i][pres & ~pa.active[i]], 1.0)
        both = np.hstack([act, idle])
        uniq, self.w = np.unique(both, axis=0, return_counts=True)
        self.act, self.idle = uniq[:, :kmax], uniq[:, kmax:]
        self.w = self.w.astype(float)
        self.members = len(rows)
        self.member_periods = int(pa.present.sum())
        self.active_share = float((pa.present & pa.active).sum() / max(self.member_periods, 1))
        self.P = P
        from numpy.polynomial.legendre import leggauss

        u, wq = leggauss(NODES)
        self.u = (u + 1) / 2
        self.wq = wq / 2

    def node_loglik(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log L(member | s_j) for the quadrature nodes s_j, and ln of the node weights."""
        from scipy.special import betaincinv

        a, b = math.exp(x[0]), math.exp(x[1])
        f = 1 / (1 + math.exp(-x[2]))
        tau = math.exp(x[3])
        s = np.clip(betaincinv(a, b, self.u), 1e-12, 1 - 1e-12)
        g = f + (1 - f) * np.exp(-self.tenure_days / tau)
        day = np.clip(np.outer(g, s), 0.0, 1 - 1e-12)  # (bins, nodes)
        log_idle = self.P * np.log1p(-day)  # ln P(no activity in a period)
        log_act = np.log(-np.expm1(np.minimum(log_idle, -1e-300)))
        # einsum, not @: a small product that a multi-threaded BLAS makes slower on a busy host
        ll = np.einsum("mk,kj->mj", self.act, log_act) + np.einsum("mk,kj->mj", self.idle, log_idle)
        return ll, np.log(self.wq)

    def nll(self, x: np.ndarray) -> float:
        """−ln L per member (s integrated out by the quadrature)."""
        with np.errstate(all="ignore"):
            ll, lw = self.node_loglik(x)
            z = ll + lw[None, :]
            top = z.max(axis=1)
            v = -float(self.w @ (top + np.log(np.exp(z - top[:, None]).sum(axis=1))))
        return v / max(self.members, 1) if math.isfinite(v) else 1e300


def fit_activity(pa: PeriodActivity) -> ActivityFit | None:
    """The fit, or None when no member was present for a whole period."""
    from scipy.optimize import minimize

    if not pa.present.any():
        return None
    data = _Data(pa)
    best: Any = None
    share = min(max(data.active_share, 1e-3), 1 - 1e-3)
    daily = 1 - (1 - share) ** (1 / data.P)  # the mean daily rate if nobody decayed
    for conc, f0, tau0 in ((2.0, 0.5, 90.0), (5.0, 0.9, 365.0)):
        m0 = min(max(daily / (f0 + (1 - f0) * 0.5), 1e-3), 0.9)
        x0 = np.array([math.log(m0 * conc), math.log((1 - m0) * conc),
                       math.log(f0 / (1 - f0)), math.log(tau0)])  # fmt: skip
        r = minimize(data.nll, x0, method="SLSQP", jac="2-point", bounds=_BOUNDS,
                     options={"ftol": 1e-12, "maxiter": 300})  # fmt: skip
        if best is None or r.fun < best.fun:
            best = r
    x = best.x
    at_bound = tuple(
        n
        for n, xi, (lo, hi) in zip(NAMES, x, _BOUNDS, strict=True)
        if xi - lo < 1e-3 or hi - xi < 1e-3
    )
    return ActivityFit(
        math.exp(x[0]), math.exp(x[1]), 1 / (1 + math.exp(-x[2])), math.exp(x[3]),
        -best.fun * data.members, data.members, data.member_periods, data.active_share, data.P,
        at_bound,
    )  # fmt: skip


def posterior_propensity(
    fit: ActivityFit, pa: PeriodActivity, rows: np.ndarray, rng: np.random.Generator, n: int
) -> np.ndarray:
    """n draws of s for each member in `rows` given their own periods: (n, len(rows))."""
    from numpy.polynomial.legendre import leggauss
    from scipy.special import betaincinv

    u, wq = leggauss(NODES)
    u, wq = (u + 1) / 2, wq / 2
    s = np.clip(betaincinv(fit.speak_alpha, fit.speak_beta, u), 1e-12, 1 - 1e-12)
    P = pa.period_days
    f, tau = fit.decay_floor, fit.tenure_decay_days
    g = f + (1 - f) * np.exp(-np.maximum(pa.tenure[rows], 0) / tau)  # (rows, periods)
    out = np.empty((n, len(rows)))
    for r_i, i in enumerate(rows):
        pres = pa.present[i]
        day = np.clip(np.outer(g[r_i][pres], s), 0, 1 - 1e-12)
        log_idle = P * np.log1p(-day)
        log_act = np.log(-np.expm1(np.minimum(log_idle, -1e-300)))
        a = pa.active[i][pres]
        ll = (log_act[a].sum(axis=0) + log_idle[~a].sum(axis=0)) + np.log(wq)
        w = np.exp(ll - ll.max())
        out[:, r_i] = s[rng.choice(len(s), size=n, p=w / w.sum())]
    return out


# -- coupling ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coupling:
    """Risk of leaving after a silent period relative to after an active one (same tenure)."""

    silent_hazard_ratio: float
    ci95: tuple[float, float]
    at_risk_silent: int
    at_risk_active: int
    left_after_silent: int
    left_after_active: int

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "silent_hazard_ratio": self.silent_hazard_ratio,
            "ci95": list(self.ci95),
            "at_risk": {"after_silent": self.at_risk_silent, "after_active": self.at_risk_active},
            "left": {
                "after_silent": self.left_after_silent,
                "after_active": self.left_after_active,
            },
            "meaning": "per-period risk of leaving after a silent period ÷ after an active one,"
            " stratified by tenure period (Mantel–Haenszel); an association, which includes"
            " that less engaged members are also less attached",
        }


@dataclass(frozen=True)
class SilentRisk:
    """The Mantel–Haenszel sums of the risk ratio of leaving after a silent vs an active period,
    over the tenure strata that hold both kinds of period (the one definition of the statistic:
    the export's, the copula's calibration and retention.silent_risk_ratio all read it)."""

    num: float  # Σ a·n0/N
    den: float  # Σ b·n1/N
    var_sum: float  # Greenland–Robins: Σ (n1·n0·(a + b) − a·b·N) / N²
    at_risk_silent: int
    at_risk_active: int
    left_after_silent: int
    left_after_active: int

    @property
    def ratio(self) -> float:
        """The risk ratio (NaN when no active period was followed by a leaving)."""
        return self.num / self.den if self.den > 0 else math.nan


def silent_period_risk(
    stratum: np.ndarray, silent: np.ndarray, active: np.ndarray, gone: np.ndarray
) -> SilentRisk:
    """The statistic's sums from per member-period masks: at risk after a silent (`silent`) or
    an active (`active`) whole period, left in the period at risk (`gone`), tenure `stratum`."""
    ks = int(stratum.max()) + 1 if stratum.size else 1

    def by(mask: np.ndarray) -> np.ndarray:
        return np.bincount(stratum[mask], minlength=ks).astype(float)

    n1, n0 = by(silent), by(active)
    a, b = by(silent & gone), by(active & gone)
    ok = (n1 > 0) & (n0 > 0)  # a stratum with one kind of period only says nothing
    n1, n0, a, b = n1[ok], n0[ok], a[ok], b[ok]
    N = n1 + n0
    return SilentRisk(
        float((a * n0 / N).sum()),
        float((b * n1 / N).sum()),
        float(((n1 * n0 * (a + b) - a * b * N) / N**2).sum()),
        int(n1.sum()),
        int(n0.sum()),
        int(a.sum()),
        int(b.sum()),
    )


def coupling(members: Members, pa: PeriodActivity) -> Coupling | None:
    """The Mantel–Haenszel risk ratio of leaving after a silent vs an active whole period."""
    if pa.present.shape[1] < 2:
        return None
    P = pa.period_days
    start = pa.starts[1:-1]
    end = pa.starts[2:] - 1
    prev_present = pa.present[:, :-1]
    prev_active = pa.active[:, :-1]
    left = members.left[:, None]
    at_start = prev_present & ((left == NO_DATE) | (left >= start[None, :]))
    # every column of `pa` is a period that ended by as_of: staying through it is known
    gone = (left != NO_DATE) & (left <= end[None, :]) & at_start
    stratum = np.floor(np.maximum(pa.tenure[:, 1:], 0) / P).astype(np.int64)
    r = silent_period_risk(stratum, at_start & ~prev_active, at_start & prev_active, gone)
    if r.num <= 0 or r.den <= 0:
        return None
    rr = r.ratio
    sd = math.sqrt(max(r.var_sum / (r.num * r.den), 0.0))
    return Coupling(
        rr,
        (rr * math.exp(-1.96 * sd), rr * math.exp(1.96 * sd)),
        r.at_risk_silent,
        r.at_risk_active,
        r.left_after_silent,
        r.left_after_active,
    )
