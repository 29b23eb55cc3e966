"""Bass diffusion fitted to a community's daily joins, with its uncertainty and its forecast.

Joins on day d (d = 0 is the first join) are Poisson with mean m·(F(d + 1) − F(d)),
F(t) = (1 − e^{−(p+q)t}) / (1 + (q/p)·e^{−(p+q)t}) (Bass 1969), p and q per day. Real joins come
in bursts (campaigns, weekdays), so the fit is quasi-Poisson: the same estimates, standard errors
scaled by the dispersion φ (Pearson χ² / degrees of freedom, of weekly sums when larger), and
forecast counts drawn gamma-Poisson with variance φ·mean. A first day far above the days after it
(a migration, an import) is taken as seed users, not as diffusion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Bounds on the log scale: p and q from 1e-7 to 1 (5 for q) a day; m from the joins seen to 100×
# them (beyond, the data cannot tell the market size: the fit says so rather than inventing one).
P_BOUNDS = (math.log(1e-7), 0.0)
Q_BOUNDS = (math.log(1e-7), math.log(5.0))
MARKET_FACTOR = 100.0
SEED_FACTOR = 5.0  # a first day above 5× the mean of the next 30 days (and above 10) is a seed


def bass_cdf(t: Any, p: float, q: float) -> np.ndarray:
    """F(t) with p, q per unit of t."""
    t = np.asarray(t, dtype=float)
    e = np.exp(-(p + q) * t)
    return np.asarray((1 - e) / (1 + (q / p) * e), dtype=float)


def expected_joins(p: float, q: float, m: float, first: int, days: int) -> np.ndarray:
    """Mean joins on days first .. first + days − 1 (day 0: when diffusion starts)."""
    t = np.arange(first, first + days + 1, dtype=float)
    return np.asarray(m * np.diff(bass_cdf(t, p, q)), dtype=float)


@dataclass(frozen=True)
class BassFit:
    """Bass p, q (per day) and m with quasi-Poisson standard errors."""

    p: float
    q: float
    m: float
    seed_users: int  # joins of the first day when it was an outlier, else 0
    days: int  # days fitted
    joins: float  # joins fitted (without the seed)
    dispersion: float
    x: tuple[float, float, float]  # (ln p, ln q, ln m)
    cov_x: tuple[tuple[float, ...], ...] | None
    at_bound: tuple[str, ...]
    se: dict[str, float] = field(default_factory=dict)
    rmse_cumulative: float = 0.0

    def per_year(self) -> dict[str, float]:
        """p and q per year (the scenario's unit: the simulator's day is 1/365 year)."""
        return {"bass_p": self.p * 365.0, "bass_q": self.q * 365.0, "market": self.m}

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "model": "bass",
            "params_per_day": {"p": self.p, "q": self.q, "m": self.m},
            "se_per_day": dict(self.se),
            "per_year": self.per_year(),
            "seed_users": self.seed_users,
            "days": self.days,
            "joins": self.joins,
            "dispersion": self.dispersion,
            "at_bound": list(self.at_bound),
            "rmse_cumulative": self.rmse_cumulative,
        }


class BassFailed(Exception):
    """The joins cannot be fitted (too few days or joins)."""


def _nll_grad(y: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray]:
    """−ln L (Poisson, constants dropped) and its gradient in (ln p, ln q, ln m)."""
    p, q, m = np.exp(x)
    t = np.arange(len(y) + 1, dtype=float)
    with np.errstate(all="ignore"):
        e = np.exp(-(p + q) * t)
        r = q / p
        den = 1 + r * e
        f = (1 - e) / den
        # dF/dp and dF/dq (e = e^{−(p+q)t}, r = q/p)
        dfp = (t * e * den - (1 - e) * (-q / p**2 * e - r * t * e)) / den**2
        dfq = (t * e * den - (1 - e) * (e / p - r * t * e)) / den**2
        mu = np.maximum(m * np.diff(f), 1e-300)
        k = 1 - y / mu
        v = -float(y @ np.log(mu) - mu.sum())
        g = np.array([
            float(k @ (m * np.diff(dfp))) * p,
            float(k @ (m * np.diff(dfq))) * q,
            float(k @ mu),
        ])  # fmt: skip
    if not (math.isfinite(v) and np.isfinite(g).all()):
        return 1e300, np.zeros(3)
    return v, g


def _nll(y: np.ndarray, x: np.ndarray) -> float:
    p, q, m = np.exp(x)
    with np.errstate(all="ignore"):
        mu = np.maximum(expected_joins(p, q, m, 0, len(y)), 1e-300)
        v = -float(y @ np.log(mu) - mu.sum())
    return v if math.isfinite(v) else 1e300


def fit_bass(
    daily: np.ndarray, *, start: np.ndarray | None = None, market: float | None = None
) -> BassFit:
    """Fit Bass to daily joins (day 0 = the first join); `start`: one start (ln p, ln q, ln m);
    `market`: m given (a prior the user knows, or a point of the profile likelihood), not fitted."""
    from scipy.optimize import minimize

    y = np.asarray(daily, dtype=float)
    if len(y) < 14 or y.sum() < 10:
        raise BassFailed(
            f"acquisition needs at least 14 days and 10 joins (have {len(y)} days,"
            f" {y.sum():g} joins)"
        )
    seed = 0
    after = y[1:31]
    if y[0] > max(10.0, SEED_FACTOR * float(after.mean())):
        seed, y = int(y[0]), np.concatenate(([0.0], y[1:]))
    total = float(y.sum())
    m_bounds = (math.log(max(total, 1.0)), math.log(max(total, 1.0) * MARKET_FACTOR))
    if market is not None:
        if not market >= total:
            raise BassFailed(
                f"the market size {market:,.0f} is below the {total:,.0f} joins already seen"
            )
        m_bounds = (math.log(market), math.log(market))
    bounds = [P_BOUNDS, Q_BOUNDS, m_bounds]
    scale = max(total, 1.0)

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = _nll_grad(y, x)
        return v / scale, g / scale

    best: Any = None
    days = len(y)
    starts = []
    for m0, q0 in ((1.5, 1e-2), (5.0, 3e-3), (1.1, 5e-2), (30.0, 1e-3)):
        m_start = total * m0 if market is None else market
        starts.append(np.log([max(total / days / m_start, 1e-6), q0, m_start]))
    for x0 in [start] if start is not None else starts:
        x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
        r = minimize(f, x0, method="SLSQP", jac=True, bounds=bounds,
                     options={"ftol": 1e-13, "maxiter": 1000})  # fmt: skip
        if best is None or r.fun < best.fun:
            best = r
    x = np.array(best.x)
    p, q, m = (float(v) for v in np.exp(x))
    mu = np.maximum(expected_joins(p, q, m, 0, days), 1e-12)
    phi_day = float(((y - mu) ** 2 / mu).sum() / max(days - 3, 1))
    weeks = days // 7
    phi_week = 0.0
    if weeks >= 4:
        yw = y[: weeks * 7].reshape(weeks, 7).sum(axis=1)
        mw = mu[: weeks * 7].reshape(weeks, 7).sum(axis=1)
        phi_week = float(((yw - mw) ** 2 / mw).sum() / max(weeks - 3, 1))
    phi = max(1.0, phi_day, phi_week)
    cov = _covariance(y, x, phi, fixed_m=market is not None)
    names = ("p", "q", "market")
    at_bound = tuple(
        n
        for n, xi, (lo, hi) in zip(names, x, bounds, strict=True)
        if (xi - lo < 1e-3 or hi - xi < 1e-3) and not (n == "market" and market is not None)
    )
    se: dict[str, float] = {}
    for i, n in enumerate(("p", "q", "m")):
        sd = math.sqrt(cov[i][i]) if cov is not None else math.nan
        se[n] = float(np.exp(x[i]) * sd)
    rmse = float(np.sqrt(np.mean((np.cumsum(mu) - np.cumsum(y)) ** 2)))
    return BassFit(
        p, q, m, seed, days, total, phi, (float(x[0]), float(x[1]), float(x[2])),
        None if cov is None else tuple(tuple(float(v) for v in row) for row in cov),
        at_bound, se, rmse,
    )  # fmt: skip


def _covariance(
    y: np.ndarray, x: np.ndarray, phi: float, fixed_m: bool = False
) -> np.ndarray | None:
    """φ × the inverse observed information of the Poisson likelihood, on the log scale (m
    given: p and q only, m's variance 0)."""
    if fixed_m:

        def sub(z: np.ndarray) -> float:
            return _nll(y, np.array([z[0], z[1], x[2]]))

        inner = _hessian_cov(sub, x[:2], phi)
        if inner is None:
            return None
        out = np.zeros((3, 3))
        out[:2, :2] = inner
        return out
    return _hessian_cov(lambda z: _nll(y, z), x, phi)


def _hessian_cov(nll: Any, x: np.ndarray, phi: float) -> np.ndarray | None:
    """φ × the inverse of `nll`'s numerical Hessian at x (None: not positive definite)."""
    k = len(x)
    h = 1e-4
    hess = np.empty((k, k))
    f0 = nll(x)
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = h
        hess[i, i] = (nll(x + ei) - 2 * f0 + nll(x - ei)) / h**2
        for j in range(i):
            ej = np.zeros(k)
            ej[j] = h
            hess[i, j] = hess[j, i] = (
                nll(x + ei + ej) - nll(x + ei - ej) - nll(x - ei + ej)
                + nll(x - ei - ej)
            ) / (4 * h * h)  # fmt: skip
    try:
        np.linalg.cholesky(hess)
    except np.linalg.LinAlgError:
        return None
    return np.asarray(phi * np.linalg.inv(hess))


def bootstrap_bass(
    fit: BassFit,
    daily: np.ndarray,
    draws: int,
    rng: np.random.Generator,
    block: int = 28,
    market: float | None = None,
) -> np.ndarray:
    """(p, q, m) refitted to joins rebuilt from the fit and resampled blocks of its residuals.

    Joins deviate from the curve for weeks at a time (a campaign, a holiday), which is what
    makes a Bass extrapolation uncertain; day-by-day noise would hide it. Each draw multiplies
    the fitted daily means by the ratios (joins / mean) of randomly chosen 4-week blocks.
    """
    y = np.asarray(daily, dtype=float).copy()
    if fit.seed_users:
        y[0] = 0.0
    mu = np.maximum(expected_joins(fit.p, fit.q, fit.m, 0, len(y)), 1e-9)
    ratio = y / mu
    n = len(y)
    b = min(block, n)
    out = []
    for _ in range(draws):
        idx = (rng.integers(0, n, size=-(-n // b))[:, None] + np.arange(b)[None, :]).ravel()[:n]
        yb = mu * ratio[idx % n]
        try:
            f = fit_bass(yb, start=np.array(fit.x), market=market)
            out.append((f.p, f.q, f.m))
        except BassFailed:
            out.append((fit.p, fit.q, fit.m))
    return np.array(out)


@dataclass(frozen=True)
class MarketProfile:
    """The profile likelihood of the market size m: at each m of a grid, p and q refitted.

    Before the peak of the joins the Poisson likelihood barely changes as m grows (any larger
    market fits the early curve about as well), so m's standard error from the curvature at the
    optimum is far too small and the optimum itself too low. The profile says it as it is: the
    95 % interval holds every m whose quasi-likelihood ratio (÷ φ) stays within 1.92 of the
    best, and an interval that runs into the grid's top (MARKET_FACTOR × the joins seen) means
    the joins do not bound m from above.
    """

    m: tuple[float, ...]
    p: tuple[float, ...]
    q: tuple[float, ...]
    drop: tuple[float, ...]  # (ln L_max − ln L(m)) / φ
    ci95: tuple[float, float]
    bounded: bool  # the 95 % interval ends below the grid's top

    def draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n (p, q, m) from the profile read as a posterior (flat prior on ln m over the
        grid), m spread uniformly on ln m within its grid cell."""
        w = np.exp(-np.array(self.drop))
        w /= w.sum()
        i = rng.choice(len(w), size=n, p=w)
        lm = np.log(np.array(self.m))
        step = float(lm[1] - lm[0]) if len(lm) > 1 else 0.0
        jitter = (rng.random(n) - 0.5) * step
        m = np.exp(np.clip(lm[i] + jitter, lm[0], lm[-1]))
        return np.column_stack([np.array(self.p)[i], np.array(self.q)[i], m])

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "market_ci95": list(self.ci95),
            "bounded_above": self.bounded,
            "meaning": "profile likelihood of m (p, q refitted at each m; quasi-likelihood"
            " ratio ÷ dispersion); unbounded above: the joins do not show saturation yet",
        }


def profile_market(fit: BassFit, daily: np.ndarray, points: int = 65) -> MarketProfile:
    """The profile likelihood of m from the joins seen to MARKET_FACTOR × them."""
    y = np.asarray(daily, dtype=float).copy()
    if fit.seed_users:
        y[0] = 0.0
    total = max(fit.joins, 1.0)
    grid = np.exp(np.linspace(math.log(total), math.log(total * MARKET_FACTOR), points))
    grid = np.unique(np.sort(np.append(grid, fit.m)))
    ps, qs, nll = [], [], []
    start = np.array(fit.x)
    for m in grid:
        try:
            f = fit_bass(y, start=np.array([start[0], start[1], math.log(m)]), market=float(m))
        except BassFailed:
            ps.append(fit.p)
            qs.append(fit.q)
            nll.append(math.inf)
            continue
        ps.append(f.p)
        qs.append(f.q)
        nll.append(_nll(y, np.array(f.x)))
    v = np.array(nll)
    drop = (v - v.min()) / fit.dispersion
    inside = grid[drop <= 1.92]
    ci = (float(inside.min()), float(inside.max())) if len(inside) else (fit.m, fit.m)
    return MarketProfile(
        tuple(float(m) for m in grid), tuple(ps), tuple(qs),
        tuple(float(d) if math.isfinite(d) else 1e9 for d in drop), ci,
        bool(drop[-1] > 1.92),
    )  # fmt: skip


def draw_params(fit: BassFit, n: int, rng: np.random.Generator) -> np.ndarray:
    """n parameter vectors (p, q, m) from the normal approximation on the log scale.

    A weakly identified fit (no covariance) keeps its point estimate: its forecast intervals
    then hold only the counts' noise, and the fit's warning says so.
    """
    x = np.array(fit.x)
    if fit.cov_x is None:
        return np.tile(np.exp(x), (n, 1))
    xs = rng.multivariate_normal(x, np.array(fit.cov_x), size=n)
    lo = np.array([P_BOUNDS[0], Q_BOUNDS[0], math.log(max(fit.joins, 1.0))])
    hi = np.array([P_BOUNDS[1], Q_BOUNDS[1], math.log(max(fit.joins, 1.0) * MARKET_FACTOR)])
    return np.asarray(np.exp(np.clip(xs, lo, hi)))


def draw_counts(mean: np.ndarray, dispersion: float, rng: np.random.Generator) -> np.ndarray:
    """Counts with the given means and variance φ·mean (gamma-Poisson; Poisson when φ = 1)."""
    mean = np.maximum(np.asarray(mean, dtype=float), 0.0)
    if dispersion <= 1.0 + 1e-9:
        return rng.poisson(mean).astype(float)
    k = dispersion - 1.0
    lam = rng.gamma(np.maximum(mean / k, 1e-12), k)
    return rng.poisson(lam).astype(float)


def source_shares(counts: dict[str, int]) -> list[dict[str, Any]]:
    """Each source's share of joins with its binomial standard error."""
    total = sum(counts.values())
    out = []
    for name, c in counts.items():
        s = c / total if total else 0.0
        out.append(
            {
                "source": name,
                "joins": c,
                "share": s,
                "se": math.sqrt(s * (1 - s) / total) if total else 0.0,
            }
        )
    return out
