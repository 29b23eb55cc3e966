"""`sop calibrate`: fit the simulator's models to exported history, print a scenario fragment.

- retention: shifted-beta-geometric by maximum likelihood, right-censored survivors included
  (Fader & Hardie 2007, "How to project customer retention");
- acquisition: Bass diffusion p, q, m by least squares on cumulative joins (Bass 1969);
- activity: BG/NBD r, alpha, a, b by maximum likelihood on per-member (x, t_x, T)
  (Fader, Hardie & Lee 2005, "Counting your customers the easy way").
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np


class CalibrationError(Exception):
    """The input cannot be fitted; the message says why and where (`FILE:LINE: ...`)."""


# Bounds of what an export can hold. The CSV is untrusted: it is read through sop.engine.core.files
# (regular files only, at most CSV_BYTES), and every value must be finite and in range, so a fit
# never sees NaN, infinities or magnitudes that overflow its special functions.
CSV_BYTES = 48 * 1024 * 1024  # a million members of activity data is about 25 MB
MAX_ROWS = 2_000_000
MAX_COUNT = 1e12  # survivors, cumulative joins
MAX_PERIOD = 1e7  # periods, recency and T, in periods
MAX_PERIOD_DAYS = 3650.0


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


@dataclass(frozen=True)
class Table:
    """Numeric columns of a CSV, with the line each row came from (for located errors)."""

    path: str
    columns: tuple[str, ...]
    values: np.ndarray  # (rows, len(columns)) float64, all finite
    lines: np.ndarray  # (rows,) line numbers in the file

    def col(self, name: str) -> np.ndarray:
        """One column."""
        return self.values[:, self.columns.index(name)]

    def fail(self, row: int, message: str) -> CalibrationError:
        """An error located at the line of row `row`."""
        return CalibrationError(f"{self.path}:{int(self.lines[row])}: {message}")


def _quote(field: str) -> str:
    """A short, terminal-safe rendering of a CSV field for an error message."""
    from ..core.textsafe import terminal

    return repr(terminal(field[:40] + ("…" if len(field) > 40 else "")))


def read_csv(path: str, columns: tuple[str, ...], *, root: str | None = None) -> Table:
    """Numeric columns of a CSV with a header row; every error names the file and line."""
    from ..core.files import FileRefused, read_bytes

    try:
        raw = read_bytes(path, limit=CSV_BYTES, root=root)
    except FileRefused as e:
        raise CalibrationError(f"{path}: {e.message}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise CalibrationError(f"{path}:{line}: not UTF-8 text (a binary file?)") from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise CalibrationError(f"{path}:{line}: a NUL character: this is not a CSV file")
    import array

    reader = csv.reader(io.StringIO(text, newline=""))
    cells = [array.array("d") for _ in columns]
    lines = array.array("q")
    try:
        header = next(reader, None)
        if header is None:
            raise CalibrationError(f"{path}: the file is empty; expected a header row")
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise CalibrationError(
                f"{path}:1: missing column(s) {', '.join(missing)};"
                f" expected header {','.join(columns)}"
            )
        twice = [c for c in columns if header.count(c) > 1]
        if twice:  # which of the two is meant cannot be guessed: refuse rather than pick one
            raise CalibrationError(
                f"{path}:1: column {twice[0]} appears {header.count(twice[0])} times in the"
                f" header; keep one"
            )
        at = [header.index(c) for c in columns]
        need = max(at) + 1
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            line = reader.line_num
            if len(lines) >= MAX_ROWS:
                raise CalibrationError(f"{path}:{line}: more than {MAX_ROWS:,} data rows")
            if len(row) < need:
                raise CalibrationError(
                    f"{path}:{line}: {len(row)} field(s), expected {len(header)}"
                    f" ({','.join(header)})"
                )
            for c, i, out in zip(columns, at, cells, strict=True):
                field = row[i]
                try:
                    v = float(field)
                except ValueError:
                    raise CalibrationError(
                        f"{path}:{line}: `{c}` is not a number: {_quote(field)}"
                    ) from None
                if not math.isfinite(v):
                    raise CalibrationError(f"{path}:{line}: `{c}` must be a finite number, not {v}")
                out.append(v)
            lines.append(line)
    except csv.Error as e:  # a huge field, an unterminated quote
        raise CalibrationError(f"{path}:{reader.line_num}: not a valid CSV row: {e}") from None
    if not lines:
        raise CalibrationError(f"{path}:2: no data rows after the header")
    values = np.column_stack([np.frombuffer(c, dtype=np.float64) for c in cells])
    return Table(path, columns, values, np.frombuffer(lines, dtype=np.int64))


def _in_range(t: Table, name: str, lo: float, hi: float, what: str, whole: bool = False) -> None:
    """Every value of column `name` lies in [lo, hi] (and is whole, if asked)."""
    v = t.col(name)
    bad = (v < lo) | (v > hi)
    if whole:
        bad |= v != np.floor(v)
    if bad.any():
        i = int(np.argmax(bad))
        kind = "a whole number" if whole else "a number"
        raise t.fail(i, f"`{name}` is {v[i]:g}; {what} must be {kind} from {lo:g} to {hi:g}")


def _sorted_by(t: Table, name: str) -> Table:
    """Rows in the order of column `name`; a repeated value is an error at its second line."""
    order = np.argsort(t.col(name), kind="stable")
    s = Table(t.path, t.columns, t.values[order], t.lines[order])
    key = s.col(name)
    dup = np.flatnonzero(key[1:] == key[:-1])
    if len(dup):
        i = int(dup[0])
        raise s.fail(i + 1, f"{name} {key[i]:g} appears twice (also on line {int(s.lines[i])})")
    return s


def check_period_days(period_days: float) -> None:
    """A period is longer than 0 and at most ten years."""
    if not (0 < period_days <= MAX_PERIOD_DAYS):  # also refuses NaN
        raise CalibrationError(
            f"--period-days must be more than 0 and at most {MAX_PERIOD_DAYS:g}, not {period_days}"
        )


def _checked(path: str, fit: Fit) -> Fit:
    """The fit, if its parameters are finite and its fragment is a valid scenario."""
    from ..core.diagnostics import Collector
    from ..lang.loader import Document
    from ..lang.schema import validator

    bad = [k for k, v in fit.params.items() if not math.isfinite(v)]
    if bad:
        raise CalibrationError(
            f"{path}: the {fit.model} fit did not converge ({', '.join(bad)} not finite);"
            " the data may not follow the model"
        )
    out = Collector()
    doc = Document("calibrate", "", {"scenario": "calibrated", **fit.fragment})
    validator("scenario.schema.json").validate(doc, out)
    if out.items:
        raise CalibrationError(
            f"{path}: the {fit.model} fit gives a scenario value out of range:"
            f" {out.items[0].message}; the data may not follow the model"
        )
    return fit


# -- retention: sBG ----------------------------------------------------------------------------


def sbg_log_likelihood(alpha: float, beta: float, survivors: np.ndarray) -> float:
    """Log-likelihood of a cohort survival table; the last survivors are right-censored."""
    data = _SbgData(np.asarray(survivors, dtype=float))
    return -data.nll_grad(np.log([alpha, beta]))[0] * data.total


class _SbgData:
    """A survival table as the likelihood reads it: churn per period and the final survivors.

    ln P(T = t) follows from P(T = 1) = a / (a + b) and P(T = t) / P(T = t - 1) =
    (b + t - 2) / (a + b + t - 1), so one pass of logs and a cumulative sum gives every period
    (and its gradient) at once: a table of a million periods costs a few vector operations, not
    a million calls of the beta function. The value is per member, so tolerances mean the same
    whatever the cohort's size.
    """

    def __init__(self, survivors: np.ndarray) -> None:
        self.c = survivors[:-1] - survivors[1:]  # churned in period t = 1..n
        self.n = float(len(survivors) - 1)
        self.last = float(survivors[-1])
        self.total = float(survivors[0])
        self.j = np.arange(len(self.c), dtype=float)  # t - 1 = 0..n-1

    def nll_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative log-likelihood per member and its gradient in (log alpha, log beta)."""
        from scipy.special import betaln, digamma

        a, b = math.exp(x[0]), math.exp(x[1])
        j, c, n, last = self.j, self.c, self.n, self.last
        # ln P(T = t) = ln a - ln(a + b) + sum_{k=1}^{t-1} [ln(b + k - 1) - ln(a + b + k)]
        step_b, step_ab = b + j[:-1], a + b + j[1:]
        log_p = np.concatenate(([0.0], np.cumsum(np.log(step_b) - np.log(step_ab))))
        log_p += math.log(a) - math.log(a + b)
        inv_ab = np.concatenate(([0.0], np.cumsum(1.0 / step_ab)))
        inv_b = np.concatenate(([0.0], np.cumsum(1.0 / step_b)))
        dp_da = 1 / a - 1 / (a + b) - inv_ab
        dp_db = -1 / (a + b) + inv_b - inv_ab
        # ln S(n) = ln B(a, b + n) - ln B(a, b)
        log_s = betaln(a, b + n) - betaln(a, b)
        ds_da = digamma(a + b) - digamma(a + b + n)
        ds_db = digamma(b + n) - digamma(b) + ds_da
        ll = float(c @ log_p) + last * log_s
        ga = float(c @ dp_da) + last * ds_da
        gb = float(c @ dp_db) + last * ds_db
        return -ll / self.total, -np.array([ga * a, gb * b]) / self.total


def fit_sbg(survivors: np.ndarray) -> tuple[float, float, float]:
    """(alpha, beta, log-likelihood) by maximum likelihood (L-BFGS on log parameters)."""
    s = np.asarray(survivors, dtype=float)
    if len(s) < 3 or np.any(np.diff(s) > 0) or s[0] <= 0:
        raise CalibrationError("retention needs >= 3 periods of non-increasing survivors")
    data = _SbgData(s)
    x, fun = _minimize(data.nll_grad, ([0.0, 0.0], [-1.0, 1.0], [1.0, 2.0]))
    return math.exp(x[0]), math.exp(x[1]), -fun * data.total


# Log parameters stay within e^-10 .. e^17 (4.5e-5 .. 2.4e7), a little wider than the scenario's
# ranges: data that do not follow the model run into this box quickly instead of crawling along
# a ridge towards infinity, and the fragment check then says the fit left the range.
LOG_BOUNDS = (-10.0, 17.0)


# Rows times likelihood evaluations one fit may spend (a few seconds of vector work): an export
# of a million distinct rows must end with a result or a clear error, not run for minutes.
FIT_WORK = 8_000_000


class _OverBudget(Exception):
    """The fit spent its FIT_WORK."""


def _minimize(fn: Any, starts: tuple[list[float], ...], rows: int = 1) -> tuple[np.ndarray, float]:
    """The best L-BFGS-B minimum of `fn` (value and gradient) over `starts`, in log space.

    A start that converges ends the search; the others are tried only when it does not. All
    starts share one budget of FIT_WORK row-evaluations (`rows` distinct rows per evaluation),
    counted at each evaluation: the optimiser's own `maxfun` is only checked between iterations.
    """
    from scipy.optimize import minimize

    left = [max(FIT_WORK // max(rows, 1), 1)]

    def bounded(p: np.ndarray) -> Any:
        if left[0] <= 0:
            raise _OverBudget
        left[0] -= 1
        return fn(p)

    best = None
    try:
        for x0 in starts:
            with np.errstate(all="ignore"):
                r = minimize(
                    bounded,
                    np.array(x0),
                    jac=True,
                    method="L-BFGS-B",
                    bounds=[LOG_BOUNDS] * len(x0),
                    options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 300},
                )
            if np.isfinite(r.fun) and (best is None or r.fun < best.fun):
                best = r
            if best is not None and best.success:
                break
    except _OverBudget:
        raise CalibrationError(
            f"the fit did not converge within its work budget ({rows:,} distinct rows);"
            " calibrate on a sample of the export"
        ) from None
    if best is None:
        raise CalibrationError("the fit found no finite likelihood")
    return best.x, float(best.fun)


def calibrate_retention(path: str, period_days: float, *, root: str | None = None) -> Fit:
    """Fit sBG to `period,survivors`: one row per period, periods consecutive."""
    check_period_days(period_days)
    t = read_csv(path, ("period", "survivors"), root=root)
    _in_range(t, "period", 0, MAX_PERIOD, "a period", whole=True)
    _in_range(t, "survivors", 0, MAX_COUNT, "survivors")
    t = _sorted_by(t, "period")
    period, s = t.col("period"), t.col("survivors")
    gap = np.flatnonzero(np.diff(period) != 1)
    if len(gap):
        i = int(gap[0])
        raise t.fail(
            i + 1,
            f"period {period[i + 1]:g} follows period {period[i]:g}: give every period, one row"
            " each",
        )
    if len(s) < 3:
        raise t.fail(len(s) - 1, "retention needs at least 3 periods")
    if s[0] <= 0:
        raise t.fail(0, "the cohort has no members in its first period: nothing to fit")
    rise = np.flatnonzero(np.diff(s) > 0)
    if len(rise):
        i = int(rise[0])
        raise t.fail(
            i + 1,
            f"survivors rise from {s[i]:g} to {s[i + 1]:g}: a cohort's survivors can only fall",
        )
    if s[-1] == s[0]:
        raise t.fail(len(s) - 1, "no one ever left the cohort: there is no churn to fit")
    a, b, ll = fit_sbg(s)
    return _checked(
        path,
        Fit(
            "sBG",
            {"alpha": a, "beta": b},
            ll,
            None,
            {"retention": {"alpha": round(a, 4), "beta": round(b, 4), "period_days": period_days}},
            len(s),
        ),
    )


# -- acquisition: Bass -------------------------------------------------------------------------


def bass_cumulative(t: np.ndarray, p: float, q: float, m: float) -> np.ndarray:
    """m F(t) in the units of t."""
    e = np.exp(-(p + q) * t)
    return m * (1 - e) / (1 + (q / p) * e)


def calibrate_acquisition(path: str, period_days: float, *, root: str | None = None) -> Fit:
    """Fit Bass p, q, m to `period,cumulative` (p, q reported per year)."""
    from scipy.optimize import curve_fit

    check_period_days(period_days)
    tab = read_csv(path, ("period", "cumulative"), root=root)
    _in_range(tab, "period", 0, MAX_PERIOD, "a period")
    _in_range(tab, "cumulative", 0, MAX_COUNT, "cumulative joins")
    tab = _sorted_by(tab, "period")
    t, y = tab.col("period"), tab.col("cumulative")
    if len(t) < 4:
        raise tab.fail(len(t) - 1, "acquisition needs at least 4 periods")
    fall = np.flatnonzero(np.diff(y) < 0)
    if len(fall):
        i = int(fall[0])
        raise tab.fail(
            i + 1,
            f"cumulative joins fall from {y[i]:g} to {y[i + 1]:g}: a cumulative count can"
            " only rise",
        )
    if y[-1] <= 0:
        raise tab.fail(
            len(y) - 1, "no one ever joined (cumulative joins are all 0): nothing to fit"
        )
    m0 = max(y[-1] * 1.5, 1.0)
    try:
        with np.errstate(all="ignore"):
            (p, q, m), _ = curve_fit(
                bass_cumulative,
                t,
                y,
                p0=(0.01, 0.1, m0),
                bounds=([1e-7, 0.0, y[-1]], [1.0, 5.0, y[-1] * 100]),
                maxfev=20000,
            )
    except (RuntimeError, ValueError) as e:
        raise CalibrationError(f"{path}: the Bass fit did not converge: {e}") from None
    rmse = float(np.sqrt(np.mean((bass_cumulative(t, p, q, m) - y) ** 2)))
    per_year = 365.0 / period_days
    return _checked(
        path,
        Fit(
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
        ),
    )


# -- activity: BG/NBD --------------------------------------------------------------------------


def bgnbd_log_likelihood(params: np.ndarray, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> float:
    """BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6)."""
    data = _BgnbdData(np.asarray(x, float), np.asarray(tx, float), np.asarray(T, float))
    return -data.nll_grad(np.log(np.asarray(params, dtype=float)))[0] * data.total


class _BgnbdData:
    """Members as the likelihood reads them: identical (x, t_x, T) rows merged with a weight,
    and the special functions of x evaluated once per distinct frequency, so a million members
    cost a few vector operations per evaluation. The value is per member."""

    def __init__(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> None:
        rows, w = np.unique(np.column_stack([x, tx, T]), axis=0, return_counts=True)
        self.w = w.astype(float)
        self.total = float(w.sum())
        self.xu, self.xi = np.unique(rows[:, 0], return_inverse=True)
        self.x, self.tx, self.T = rows[:, 0], rows[:, 1], rows[:, 2]
        self.pos = self.x > 0

    def nll_grad(self, logp: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative log-likelihood per member and its gradient in log (r, alpha, a, b)."""
        from scipy.special import digamma, gammaln

        r, al, a, b = np.exp(logp)
        xu, xi, x, tx, T, w, pos = self.xu, self.xi, self.x, self.tx, self.T, self.w, self.pos
        # terms of x alone, once per distinct frequency
        g = (
            gammaln(r + xu)
            - gammaln(r)
            + gammaln(a + b)
            + gammaln(b + xu)
            - gammaln(b)
            - gammaln(a + b + xu)
        )[xi]
        dr_x = (digamma(r + xu) - digamma(r))[xi]
        dab_x = (digamma(a + b) - digamma(a + b + xu))[xi]
        db_x = (digamma(b + xu) - digamma(b))[xi]
        rx = r + x
        log_at, log_atx = np.log(al + T), np.log(al + tx)
        l3 = -rx * log_at
        bx1 = np.where(pos, b + x - 1, 1.0)
        l4 = np.where(pos, math.log(a) - np.log(bx1) - rx * log_atx, -np.inf)
        top = np.logaddexp(l3, l4)
        w3, w4 = np.exp(l3 - top), np.exp(l4 - top)  # shares of the two terms
        ll = float(w @ (g + r * math.log(al) + top))
        gr = w @ (dr_x + math.log(al) - w3 * log_at - w4 * log_atx)
        gal = w @ (r / al - w3 * rx / (al + T) - w4 * rx / (al + tx))
        ga = w @ (dab_x + w4 / a)
        gb = w @ (dab_x + db_x - w4 / bx1)
        grad = np.array([gr * r, gal * al, ga * a, gb * b])
        return -ll / self.total, -grad / self.total


def fit_bgnbd(x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, float]:
    """(r, alpha, a, b) and the log-likelihood, by L-BFGS on log parameters."""
    data = _BgnbdData(np.asarray(x, float), np.asarray(tx, float), np.asarray(T, float))
    best, fun = _minimize(
        data.nll_grad,
        (
            list(np.log([0.5, 5.0, 0.5, 2.0])),
            list(np.log([1.0, 1.0, 1.0, 1.0])),
            list(np.log([0.2, 20.0, 2.0, 5.0])),
        ),
        rows=len(data.x),
    )
    return np.exp(best), -fun * data.total


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


def calibrate_activity(path: str, period_days: float, *, root: str | None = None) -> Fit:
    """Fit BG/NBD to `member,frequency,recency,T` and map it onto the activity model."""
    check_period_days(period_days)
    tab = read_csv(path, ("frequency", "recency", "T"), root=root)
    _in_range(tab, "frequency", 0, MAX_COUNT, "a frequency (repeat activities)", whole=True)
    _in_range(tab, "T", 0, MAX_PERIOD, "T (periods observed)")
    _in_range(tab, "recency", 0, MAX_PERIOD, "recency (period of the last activity)")
    x, tx, T = tab.col("frequency"), tab.col("recency"), tab.col("T")
    late = np.flatnonzero(tx > T)
    if len(late):
        i = int(late[0])
        raise tab.fail(i, f"recency {tx[i]:g} is after T {T[i]:g}: need 0 <= recency <= T")
    if not (x > 0).any():
        raise tab.fail(0, "no member was ever active again (every frequency is 0): nothing to fit")
    if not (T > 0).any():
        raise tab.fail(0, "every T is 0: no member was observed for any time")
    (r, alpha, a, b), ll = fit_bgnbd(x, tx, T)
    daily_rate = r / alpha / period_days
    # Beta(r, k) with mean equal to the Gamma mean r/alpha per day approximates the daily rate
    k = max(r / max(daily_rate, 1e-9) - r, 1e-3)
    return _checked(
        path,
        Fit(
            "BG/NBD",
            {"r": r, "alpha": alpha, "a": a, "b": b},
            ll,
            None,
            {"activity": {"speak_alpha": round(r, 4), "speak_beta": round(k, 4)}},
            len(x),
        ),
    )


CALIBRATORS = {
    "retention": calibrate_retention,
    "acquisition": calibrate_acquisition,
    "activity": calibrate_activity,
}
