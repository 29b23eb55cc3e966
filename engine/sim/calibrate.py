"""`sop calibrate`: fit the simulator's models to exported history, print a scenario fragment.

- retention: shifted-beta-geometric by maximum likelihood, right-censored survivors included
  (Fader & Hardie 2007, "How to project customer retention");
- acquisition: Bass diffusion p, q, m by least squares on cumulative joins (Bass 1969);
- activity: BG/NBD r, alpha, a, b by maximum likelihood on per-member (x, t_x, T)
  (Fader, Hardie & Lee 2005, "Counting your customers the easy way").
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from typing import Any

import numpy as np


class CalibrationError(Exception):
    """The input cannot be fitted; the message says why and where."""


@dataclass(frozen=True)
class Fit:
    """Fitted parameters, the fit quality, and the scenario fragment they imply."""

    model: str
    params: dict[str, float]
    log_likelihood: float | None
    rmse: float | None
    fragment: dict[str, Any]
    n: int

    def __post_init__(self) -> None:
        # plain Python numbers only: fragments are dumped as YAML and JSON
        object.__setattr__(self, "params", _plain(self.params))
        object.__setattr__(self, "fragment", _plain(self.fragment))


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_csv(path: str, columns: tuple[str, ...]) -> np.ndarray:
    """Numeric columns of a CSV with a header row; errors name the line."""
    try:
        fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
    except OSError as e:
        raise CalibrationError(f"{path}: cannot read: {e.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise CalibrationError(
                f"{path}:1: missing column(s) {', '.join(missing)};"
                f" expected header {','.join(columns)}"
            )
        rows = []
        for i, row in enumerate(reader, start=2):
            try:
                rows.append([float(row[c]) for c in columns])
            except (TypeError, ValueError):
                raise CalibrationError(f"{path}:{i}: not a number in {row}") from None
    if not rows:
        raise CalibrationError(f"{path}: no data rows")
    return np.array(rows)


# -- retention: sBG ----------------------------------------------------------------------------


def sbg_log_likelihood(alpha: float, beta: float, survivors: np.ndarray) -> float:
    """Log-likelihood of a cohort survival table; the last survivors are right-censored."""
    from scipy.special import betaln

    n = len(survivors) - 1
    t = np.arange(1, n + 1)
    churned = survivors[:-1] - survivors[1:]
    log_p = betaln(alpha + 1, beta + t - 1) - betaln(alpha, beta)  # P(T = t)
    log_s = betaln(alpha, beta + n) - betaln(alpha, beta)  # S(n)
    return float((churned * log_p).sum() + survivors[-1] * log_s)


def fit_sbg(survivors: np.ndarray) -> tuple[float, float, float]:
    """(alpha, beta, log-likelihood) by maximum likelihood."""
    from scipy.optimize import minimize

    s = np.asarray(survivors, dtype=float)
    if len(s) < 3 or np.any(np.diff(s) > 0) or s[0] <= 0:
        raise CalibrationError("retention needs >= 3 periods of non-increasing survivors")

    def nll(x: np.ndarray) -> float:
        return -sbg_log_likelihood(math.exp(x[0]), math.exp(x[1]), s)

    best = min(
        (
            minimize(
                nll,
                x0,
                method="Nelder-Mead",
                options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 20000},
            )
            for x0 in ([0.0, 0.0], [-1.0, 1.0], [1.0, 2.0])
        ),
        key=lambda r: r.fun,
    )
    a, b = math.exp(best.x[0]), math.exp(best.x[1])
    return a, b, -float(best.fun)


def calibrate_retention(path: str, period_days: float) -> Fit:
    """Fit sBG to `period,survivors`."""
    data = read_csv(path, ("period", "survivors"))
    data = data[np.argsort(data[:, 0])]
    a, b, ll = fit_sbg(data[:, 1])
    return Fit(
        "sBG",
        {"alpha": a, "beta": b},
        ll,
        None,
        {"retention": {"alpha": round(a, 4), "beta": round(b, 4), "period_days": period_days}},
        len(data),
    )


# -- acquisition: Bass -------------------------------------------------------------------------


def bass_cumulative(t: np.ndarray, p: float, q: float, m: float) -> np.ndarray:
    """m F(t) in the units of t."""
    e = np.exp(-(p + q) * t)
    return m * (1 - e) / (1 + (q / p) * e)


def calibrate_acquisition(path: str, period_days: float) -> Fit:
    """Fit Bass p, q, m to `period,cumulative` (p, q reported per year)."""
    from scipy.optimize import curve_fit

    data = read_csv(path, ("period", "cumulative"))
    data = data[np.argsort(data[:, 0])]
    t, y = data[:, 0], data[:, 1]
    if len(t) < 4:
        raise CalibrationError("acquisition needs >= 4 periods")
    m0 = max(y[-1] * 1.5, 1.0)
    try:
        (p, q, m), _ = curve_fit(
            bass_cumulative,
            t,
            y,
            p0=(0.01, 0.1, m0),
            bounds=([1e-7, 0.0, y[-1]], [1.0, 5.0, y[-1] * 100]),
            maxfev=20000,
        )
    except RuntimeError as e:
        raise CalibrationError(f"Bass fit did not converge: {e}") from None
    rmse = float(np.sqrt(np.mean((bass_cumulative(t, p, q, m) - y) ** 2)))
    per_year = 365.0 / period_days
    return Fit(
        "Bass",
        {"p_per_period": p, "q_per_period": q, "m": m},
        None,
        rmse,
        {
            "acquisition": {
                "bass_p": round(p * per_year, 5),
                "bass_q": round(q * per_year, 5),
                "market": round(m),
            }
        },
        len(t),
    )


# -- activity: BG/NBD --------------------------------------------------------------------------


def bgnbd_log_likelihood(params: np.ndarray, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> float:
    """BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6)."""
    from scipy.special import gammaln

    r, alpha, a, b = params
    ln_a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    ln_a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    ln_a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore"):
        ln_a4 = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + tx),
            -np.inf,
        )
    return float((ln_a1 + ln_a2 + np.logaddexp(ln_a3, ln_a4)).sum())


def fit_bgnbd(x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, float]:
    """(r, alpha, a, b) and the log-likelihood."""
    from scipy.optimize import minimize

    def nll(logp: np.ndarray) -> float:
        return -bgnbd_log_likelihood(np.exp(logp), x, tx, T)

    res = minimize(
        nll,
        np.log([0.5, 5.0, 0.5, 2.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 40000},
    )
    return np.exp(res.x), -float(res.fun)


def bgnbd_expected(t: float, r: float, alpha: float, a: float, b: float) -> float:
    """E[X(t)]: expected transactions in (0, t] for a new customer (FHL 2005, eq. 7)."""
    from scipy.special import hyp2f1

    z = t / (alpha + t)
    return float(
        (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, z))
    )


def simulate_bgnbd(
    n: int, t: float, r: float, alpha: float, a: float, b: float, rng: np.random.Generator
) -> np.ndarray:
    """Transactions of n simulated customers in (0, t]: Poisson purchasing, dropout after each."""
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    count = np.zeros(n, dtype=np.int64)
    clock = np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        clock[idx] += rng.exponential(1 / np.maximum(lam[idx], 1e-300))
        inside = clock[idx] <= t
        count[idx[inside]] += 1
        active[idx[~inside]] = False
        still = idx[inside]
        active[still[rng.random(len(still)) < p[still]]] = False  # dropout after a purchase
    return count


def calibrate_activity(path: str, period_days: float) -> Fit:
    """Fit BG/NBD to `member,frequency,recency,T` and map it onto the activity model."""
    data = read_csv(path, ("frequency", "recency", "T"))
    x, tx, T = data[:, 0], data[:, 1], data[:, 2]
    if np.any(tx > T) or np.any(x < 0):
        raise CalibrationError("activity rows need 0 <= recency <= T and frequency >= 0")
    (r, alpha, a, b), ll = fit_bgnbd(x, tx, T)
    daily_rate = r / alpha / period_days
    # Beta(r, k) with mean equal to the Gamma mean r/alpha per day approximates the daily rate
    k = max(r / max(daily_rate, 1e-9) - r, 1e-3)
    return Fit(
        "BG/NBD",
        {"r": r, "alpha": alpha, "a": a, "b": b},
        ll,
        None,
        {"activity": {"speak_alpha": round(r, 4), "speak_beta": round(k, 4)}},
        len(x),
    )


CALIBRATORS = {
    "retention": calibrate_retention,
    "acquisition": calibrate_acquisition,
    "activity": calibrate_activity,
}
