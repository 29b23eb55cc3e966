"""`sop calibrate`: fit the simulator's models to exported history, print a scenario fragment.

- retention: shifted-beta-geometric by maximum likelihood, right-censored survivors included
  (Fader & Hardie 2007, "How to project customer retention");
- acquisition: Bass diffusion p, q, m by least squares on cumulative joins (Bass 1969);
- activity: BG/NBD r, alpha, a, b by maximum likelihood on per-member (x, t_x, T)
  (Fader, Hardie & Lee 2005, "Counting your customers the easy way").
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .exports import CSV_BYTES, MAX_ROWS, CalibrationError, quote, read_rows, read_text

__all__ = ["CSV_BYTES", "MAX_ROWS", "CalibrationError", "read_text"]


# Bounds of the numbers an export may hold (see exports.py for the file's own bounds).
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
    notes: tuple[str, ...] = ()  # what the user should know (units inferred, a mapping made)
    warnings: tuple[str, ...] = ()  # what may make the fit unreliable (a parameter at a bound)
    extra: dict[str, Any] | None = None  # more results for JSON (e.g. BG/NBD's dropout)

    def __post_init__(self) -> None:
        # plain Python numbers only: fragments are dumped as YAML and JSON
        object.__setattr__(self, "params", _plain(self.params))
        object.__setattr__(self, "fragment", _plain(self.fragment))
        if self.extra is not None:
            object.__setattr__(self, "extra", _plain(self.extra))


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
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


def read_csv(path: str, columns: tuple[str, ...], *, root: str | None = None) -> Table:
    """Numeric columns of a CSV with a header row; every error names the file and line."""
    rows = read_rows(path, columns, root=root)
    values = np.empty((len(rows.lines), len(columns)), dtype=np.float64)
    for i, line in enumerate(rows.lines.tolist()):  # row by row: the first bad line is named
        for j, c in enumerate(columns):
            field = rows.cells[c][i]
            try:
                v = float(field)
            except ValueError:
                raise CalibrationError(
                    f"{path}:{line}: `{c}` is not a number: {quote(field)}"
                ) from None
            if not math.isfinite(v):
                raise CalibrationError(f"{path}:{line}: `{c}` must be a finite number, not {v}")
            values[i, j] = v
    return Table(path, columns, values, rows.lines)


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


def require_period_days(path: str, period_days: float | None, what: str) -> float:
    """The period length given, or a usage error that says how to give it (no silent default)."""
    if period_days is None:
        raise CalibrationError(
            f"{path}: --period-days is required: the length in days of one period of the"
            f" {what} (e.g. 1 for daily rows, 7 for weekly, 30 for monthly)"
        )
    check_period_days(period_days)
    return period_days


MONTH_DAYS = 365.25 / 12


def infer_period_days(days: np.ndarray) -> tuple[float, str] | None:
    """The spacing of sorted, distinct dates (ordinals): equal steps, calendar months or years.

    Returns (period length in days, how it was read), or None when the spacing is irregular.
    """
    from datetime import date

    steps = np.diff(days)
    if len(steps) == 0:
        return None
    # calendar steps first: a year is 365.25 days on average whether or not a leap day falls in
    ds = [date.fromordinal(int(d)) for d in days]
    month_ends = all(date.fromordinal(d.toordinal() + 1).day == 1 for d in ds)
    if len({d.day for d in ds}) == 1 or month_ends:
        gaps = set(np.diff([d.year * 12 + d.month for d in ds]).tolist())
        if gaps == {1}:
            return MONTH_DAYS, "one row a calendar month"
        if gaps == {3}:
            return 3 * MONTH_DAYS, "one row a quarter"
        if gaps == {12}:
            return 365.25, "one row a year"
    if (steps == steps[0]).all():
        return float(steps[0]), f"every row {int(steps[0])} day(s) after the one before"
    return None


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


def read_series(
    path: str, value: str, period_days: float | None, *, root: str | None = None
) -> tuple[Table, float | None, tuple[str, ...]]:
    """`period,VALUE` rows, or `date,VALUE` rows read as consecutive periods.

    With dates and no --period-days, the period is the dates' spacing (equal steps, calendar
    months, quarters or years); irregular dates need --period-days. Returns the table (its
    `period` column numbered from 0), the period length if known, and notes for the user.
    """
    header = next(csv.reader(io.StringIO(read_text(path, root=root), newline="")), None) or []
    names = [h.strip().lower() for h in header]
    if "period" in [h.strip() for h in header] or "date" not in names:
        return read_csv(path, ("period", value), root=root), period_days, ()
    from .exports import parse_date, read_rows

    rows = read_rows(path, ("date", value), root=root)
    n = len(rows.lines)
    days = np.empty(n, dtype=np.int64)
    vals = np.empty(n)
    for i in range(n):
        d = parse_date(rows.cells["date"][i])
        if d is None:
            raise rows.fail(
                i, "date", f"`date` is not a date: {quote(rows.cells['date'][i])} (YYYY-MM-DD)"
            )
        days[i] = d
        try:
            v = float(rows.cells[value][i])
        except ValueError:
            raise rows.fail(
                i, value, f"`{value}` is not a number: {quote(rows.cells[value][i])}"
            ) from None
        if not math.isfinite(v):
            raise rows.fail(i, value, f"`{value}` must be a finite number, not {v}")
        vals[i] = v
    order = np.argsort(days, kind="stable")
    days, vals, lines = days[order], vals[order], rows.lines[order]
    dup = np.flatnonzero(days[1:] == days[:-1])
    if len(dup):
        i = int(dup[0]) + 1
        raise CalibrationError(
            f"{path}:{int(lines[i])}: date {date_text(days[i])} appears twice (also on line"
            f" {int(lines[i - 1])})"
        )
    notes: tuple[str, ...] = ()
    if period_days is None:
        found = infer_period_days(days)
        if found is None:
            raise CalibrationError(
                f"{path}: the dates are not evenly spaced (equal steps, months, quarters or"
                " years), so the period cannot be inferred: give --period-days"
            )
        period_days, how = found
        notes = (f"periods of {period_days:g} days, inferred from the dates of {path} ({how})",)
    check_period_days(period_days)
    period = np.round((days - days[0]) / period_days)
    table = Table(path, ("period", value), np.column_stack([period, vals]), lines)
    return table, period_days, notes


def date_text(ordinal: int) -> str:
    """An ordinal day as YYYY-MM-DD."""
    from datetime import date

    return date.fromordinal(int(ordinal)).isoformat()


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


def calibrate_retention(path: str, period_days: float | None, *, root: str | None = None) -> Fit:
    """Fit sBG to `period,survivors` (or `date,survivors`): one row per period, consecutive."""
    if period_days is not None:
        check_period_days(period_days)
    t, period_days, notes = read_series(path, "survivors", period_days, root=root)
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
    fit = _checked(
        path,
        Fit(
            "sBG",
            {"alpha": a, "beta": b},
            ll,
            None,
            {"retention": {"alpha": round(a, 4), "beta": round(b, 4), "period_days": 1.0}},
            len(s),
            notes,
        ),
    )
    # the fit needs no unit; the scenario does: no silent default (a year read as a day)
    period_days = require_period_days(path, period_days, "cohort table")
    fragment = {"retention": {**fit.fragment["retention"], "period_days": period_days}}
    at_bound = [
        f"sBG {name} sits at the fitter's bound ({v:.4g}): the churn probability is nearly the"
        " same for every member (a point, not a spread); the fit cannot tell how much members"
        " differ"
        for name, v in (("alpha", a), ("beta", b))
        if min(abs(math.log(v) - LOG_BOUNDS[0]), abs(math.log(v) - LOG_BOUNDS[1]))
        < 0.1  # e^0.1: 10 % off
    ]
    return dataclasses.replace(fit, fragment=fragment, warnings=(*fit.warnings, *at_bound))


# -- acquisition: Bass -------------------------------------------------------------------------


def bass_cumulative(t: np.ndarray, p: float, q: float, m: float) -> np.ndarray:
    """m F(t) in the units of t."""
    e = np.exp(-(p + q) * t)
    return m * (1 - e) / (1 + (q / p) * e)


def calibrate_acquisition(path: str, period_days: float | None, *, root: str | None = None) -> Fit:
    """Fit Bass p, q, m to `period,cumulative` or `date,cumulative` (p, q reported per year).

    The fragment is the whole inflow: organic joins, seed users and referrals are set to 0,
    since the cumulative joins fitted already hold them (the defaults on top simulated +33 %).
    """
    from scipy.optimize import curve_fit

    if period_days is not None:
        check_period_days(period_days)
    tab, period_days, notes = read_series(path, "cumulative", period_days, root=root)
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
    period_days = require_period_days(path, period_days, "joins table")
    per_year = 365.0 / period_days
    warnings = []
    if m >= y[-1] * 100 * (1 - 1e-6):
        warnings.append(
            f"the market size m sits at its upper bound ({y[-1] * 100:g}, 100× the joins seen):"
            " the joins show no saturation yet, so m is not identified"
        )
    elif m <= y[-1] * (1 + 1e-6):
        warnings.append("the market size m sits at its lower bound (the joins seen): saturated")
    for name, v, lo, hi in (("p", p, 1e-7, 1.0), ("q", q, 0.0, 5.0)):
        if v <= lo * (1 + 1e-6) + 1e-12 or v >= hi * (1 - 1e-6):
            warnings.append(f"Bass {name} sits at its bound ({v:g} per period)")
    return _checked(
        path,
        Fit(
            "Bass",
            {"p_per_period": p, "q_per_period": q, "m": m},
            None,
            rmse,
            {
                # the fitted joins are the whole inflow: nothing else on top of them
                "acquisition": {
                    "seed_users": 0,
                    "organic_per_day": 0,
                    "bass_p": round(p * per_year, 5),
                    "bass_q": round(q * per_year, 5),
                    "market": round(m),
                    "invites_per_member_per_day": 0,
                    "invite_conversion": 0,
                }
            },
            len(t),
            (
                *notes,
                "the fragment's inflow is this Bass curve alone: seed_users, organic_per_day and"
                " referral invitations are 0, since the joins fitted include them",
            ),
            tuple(warnings),
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


def bgnbd_survival(t: Any, r: float, alpha: float, a: float, b: float) -> np.ndarray:
    """P(still active at t) for a new BG/NBD customer: E[e^{−λ p t}] = E_p[(α / (α + p t))^r].

    Activities come at rate λ and each ends the customer's activity with probability p, so
    activity ends at rate λ·p; the expectation over p ~ Beta(a, b) is taken by quadrature.
    """
    from numpy.polynomial.legendre import leggauss
    from scipy.special import betaincinv

    u, w = leggauss(64)
    p = betaincinv(a, b, (u + 1) / 2)
    t = np.asarray(t, dtype=float)
    return np.asarray((w / 2) @ (alpha / (alpha + np.outer(p, t))) ** r, dtype=float)


def daily_speak_beta(r: float, alpha: float, period_days: float) -> tuple[float, float]:
    """Beta(a, b) matching the mean and variance of P(speaking on a day) = 1 − e^{−λ/P}.

    λ ~ Gamma(r, α) activities a period; within a day activities are Poisson, so a member with
    rate λ speaks on a day with probability 1 − e^{−λ/P}, which stays below 1 however active
    (the old mapping took a period's rate for a day's and clamped it).
    """

    def lap(k: float) -> float:  # E[e^{−kλ/P}]
        return float((alpha * period_days / (alpha * period_days + k)) ** r)

    m1 = 1 - lap(1)
    m2 = 1 - 2 * lap(1) + lap(2)
    var = max(m2 - m1 * m1, 1e-15)
    nu = m1 * (1 - m1) / var - 1
    return m1 * nu, (1 - m1) * nu


def calibrate_activity(path: str, period_days: float | None, *, root: str | None = None) -> Fit:
    """Fit BG/NBD to `member,frequency,recency,T` and map it onto the activity model.

    r, α give the daily speaking propensity; a, b (dropout after an activity) give the share
    still active after t periods, mapped to the closest sBG retention.
    """
    if period_days is not None:
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
    period_days = require_period_days(path, period_days, "activity table (recency and T)")
    sa, sb = daily_speak_beta(r, alpha, period_days)
    warnings = []
    lo, hi = 0.001, 1_000_000.0  # the scenario's range of Beta shapes
    if not (lo <= sa <= hi and lo <= sb <= hi):
        warnings.append(
            f"the daily speaking Beta({sa:.4g}, {sb:.4g}) is outside the scenario's range"
            f" ({lo:g} to {hi:g}): clamped, so the simulated spread of speaking differs"
        )
    sa, sb = min(max(sa, lo), hi), min(max(sb, lo), hi)
    # dropout: the share still active after t periods, as the sBG the simulator reads
    horizon = int(min(max(36, math.ceil(float(T.max()))), 520))
    curve = bgnbd_survival(np.arange(1, horizon + 1), r, alpha, a, b)
    from .retention_models import closest_sbg

    ra, rb = closest_sbg(curve)
    notes = (
        f"activity: BG/NBD's rate r/α = {r / alpha:.4g} activities a period of"
        f" {period_days:g} days, read as a daily speaking probability 1 − e^(−λ/{period_days:g})",
        f"retention: from BG/NBD's dropout (a={a:.4g}, b={b:.4g}): after each activity a member"
        f" stops for good with probability p ~ Beta(a, b); {curve[min(11, horizon - 1)]:.0%}"
        f" still active after {min(12, horizon)} periods; the simulator reads that as leaving",
    )
    return _checked(
        path,
        Fit(
            "BG/NBD",
            {"r": r, "alpha": alpha, "a": a, "b": b},
            ll,
            None,
            {
                "activity": {"speak_alpha": round(sa, 4), "speak_beta": round(sb, 4)},
                "retention": {
                    "alpha": round(ra, 4),
                    "beta": round(rb, 4),
                    "period_days": period_days,
                },
            },
            len(x),
            notes,
            tuple(warnings),
            {
                "dropout": {
                    "a": a,
                    "b": b,
                    "still_active": {
                        str(t): float(curve[t - 1]) for t in (1, 3, 6, 12, 24, 36) if t <= horizon
                    },
                    "as_retention": {"alpha": ra, "beta": rb, "period_days": period_days},
                }
            },
        ),
    )


CALIBRATORS = {
    "retention": calibrate_retention,
    "acquisition": calibrate_acquisition,
    "activity": calibrate_activity,
}
