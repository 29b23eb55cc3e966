"""`sop backtest`: fit on the history up to a cutoff, forecast the rest, score the forecast.

The forecast is drawn from the fitted models directly (not by running the playbook simulator):
each run takes one draw of the retention forecast mixture (community_fit.forecast_mixture:
bootstrap draws of every model by its forecast weight, the rows `calibrate community
--bootstrap` writes as `retention.draws`), a Bass parameter draw and an activity propensity;
then it draws every member's future: the lifetime of each member still in at the cutoff,
conditional on the tenure reached (S(t) / S(e)) and on the cohort's frailty (which the scenario
does not carry), the joins of each later period (gamma-Poisson around the Bass curve) and their
lifetimes, and who speaks. Intervals therefore hold parameter uncertainty and
sampling noise; they do not hold what none of the models can express (a purge, a new channel).

Scored against what the export shows after the cutoff, per metric and horizon bucket: MAPE of
the forecast mean, and how often the actual falls inside the 80 % and 95 % intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from . import retention_models as rm
from .acquisition_fit import (
    BassFailed,
    BassFit,
    MarketProfile,
    bootstrap_bass,
    draw_counts,
    draw_params,
    expected_joins,
    fit_bass,
    profile_market,
)
from .activity_fit import ActivityFit, Coupling, coupling, fit_activity, posterior_propensity
from .calibrate import CalibrationError, check_period_days
from .community_data import (
    NO_DATE,
    ActivityLog,
    Members,
    PeriodActivity,
    activity_periods,
    daily_joins,
    day_text,
    lifetimes,
    period_activity,
    read_activity,
    read_members,
)
from .community_fit import (
    MIXTURE_MODEL,
    MODELS,
    RetentionChoice,
    fit_retention,
    retention_section,
    with_mixture,
)
from .coupling import CouplingFit, fit_coupling

MIN_AT_RISK = 20  # a retention point needs this many members whose tenure reached it by the end
QUANTILES = (0.025, 0.1, 0.5, 0.9, 0.975)
CANDIDATES = 32  # propensity draws a member's lifetime picks among (_coupled_propensity)


class Metric(StrEnum):
    """What the backtest forecasts and scores."""

    RETENTION = "retention"  # pooled share of the cutoff's cohorts still in after k periods
    COHORT_RETENTION = "cohort_retention"  # the same, each join cohort on its own
    RETAINED = "retained"  # members who joined by the cutoff still in, h periods after it
    MEMBERS = "members"  # all members at the end of period h after the cutoff
    JOINS = "joins"  # joins in period h after the cutoff
    ACTIVITY_RATE = "activity_rate"  # share of the period's members who were active in it


# which index a metric's horizon buckets count: periods of tenure, or periods after the cutoff
BY_TENURE = frozenset({Metric.RETENTION, Metric.COHORT_RETENTION})


@dataclass(frozen=True)
class BacktestOptions:
    """How to backtest."""

    period_days: float
    cutoff: int  # ordinal day: the history up to and including it is fitted
    end: int | None = None  # last day of the export (default: its latest date)
    runs: int = 200
    seed: int = 0
    holdout: int | None = None
    bucket: int = 12  # periods per horizon bucket
    draws: int = 200  # bootstrap draws of the retention mixture (runs use them in turn)
    bootstrap_kind: rm.BootstrapKind = rm.BootstrapKind.COHORTS
    models: tuple[rm.RetentionModel, ...] = MODELS
    joins: bool = True  # forecast later joins (Bass); False: only the members of the cutoff
    market: float | None = None  # the market size, if known (--market): m is not fitted


@dataclass(frozen=True)
class Point:
    """One forecast point and what happened."""

    metric: Metric
    index: int  # tenure period (retention) or period after the cutoff
    cohort: int | None
    actual: float
    mean: float
    q: tuple[float, ...]  # QUANTILES

    @property
    def ape(self) -> float | None:
        """Absolute percentage error of the mean (None when the actual is 0)."""
        return abs(self.mean - self.actual) / abs(self.actual) if self.actual else None

    def inside(self, level: int) -> bool:
        """The actual lies in the central `level` % interval."""
        lo, hi = (self.q[1], self.q[3]) if level == 80 else (self.q[0], self.q[4])
        return lo - 1e-12 <= self.actual <= hi + 1e-12

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "metric": str(self.metric),
            "index": self.index,
            "cohort": self.cohort,
            "actual": self.actual,
            "mean": self.mean,
            "p2_5": self.q[0],
            "p10": self.q[1],
            "p50": self.q[2],
            "p90": self.q[3],
            "p97_5": self.q[4],
        }


@dataclass(frozen=True)
class BucketScore:
    """MAPE and interval coverage of one metric over one horizon bucket."""

    metric: Metric
    first: int
    last: int
    points: int
    mape: float | None
    cover80: float
    cover95: float

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "metric": str(self.metric),
            "by": "tenure period" if self.metric in BY_TENURE else "period after cutoff",
            "first": self.first,
            "last": self.last,
            "points": self.points,
            "mape": self.mape,
            "cover80": self.cover80,
            "cover95": self.cover95,
        }


@dataclass(frozen=True)
class BacktestResult:
    """The fits at the cutoff, every scored point, and the scores per metric and bucket."""

    path: str
    options: BacktestOptions
    end: int
    retention: RetentionChoice
    acquisition: BassFit | None
    activity: ActivityFit | None
    points: tuple[Point, ...]
    scores: tuple[BucketScore, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    market: MarketProfile | None = None  # m's profile likelihood (no --market)
    coupling: float = 0.0  # the retention_coupling the activity forecast used
    curve_periods: int = 36  # periods of the forecast retention curve reported

    exit_code = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `--format json`."""
        o = self.options
        return {
            "members_file": self.path,
            "cutoff": day_text(o.cutoff),
            "end": day_text(self.end),
            "period_days": o.period_days,
            "runs": o.runs,
            "forecast": "drawn from the fitted models (closed forms and Monte Carlo), not the"
            " playbook simulator; intervals hold parameter uncertainty (bootstrap draws,"
            f" {o.bootstrap_kind}) and sampling noise",
            "retention": self.retention.as_dict()
            | {
                "draws": None,
                "forecast_curve": None
                if self.retention.mixture is None
                else self.retention.mixture.curve(self.curve_periods),
            },
            "acquisition": None
            if self.acquisition is None
            else self.acquisition.as_dict()
            | {
                "market_given": o.market,
                "market_profile": None if self.market is None else self.market.as_dict(),
            },
            "retention_coupling": self.coupling,
            "activity": None if self.activity is None else self.activity.as_dict(),
            "scores": [s.as_dict() for s in self.scores],
            "points": [p.as_dict() for p in self.points],
            "warnings": list(self.warnings),
        }

    def text(self) -> str:
        """The report a terminal shows."""
        o = self.options
        r = self.retention
        assert r.mixture is not None
        out = [
            f"backtest of {self.path}: fitted up to {day_text(o.cutoff)}, forecast to"
            f" {day_text(self.end)} in periods of {o.period_days:g} days, {o.runs} runs",
            f"retention: {r.mixture.label()} ({len(r.mixture.models)} bootstrap draws by the"
            " forecast weights: the retention.draws `sop calibrate community --as-of"
            f" {day_text(o.cutoff)} --bootstrap {len(r.mixture.models)} --seed {o.seed}`"
            + (" with the same --activity" if self.activity is not None else "")
            + " writes)",
        ]
        if self.acquisition is not None:
            y = self.acquisition.per_year()
            if o.market is not None:
                about = " (given by --market)"
            elif self.market is not None:
                lo, hi = self.market.ci95
                about = f" (95% profile {lo:,.0f}..{hi:,.0f}" + (
                    ")" if self.market.bounded else ": not bounded above)"
                )
            else:
                about = ""
            out.append(
                f"acquisition: Bass p={y['bass_p']:.3g}/yr q={y['bass_q']:.3g}/yr"
                f" m={y['market']:,.0f}{about}"
            )
        out.append("")
        out.append(
            f"{'metric':<18} {'horizon':<22} {'points':>6} {'MAPE':>7} {'in 80%':>7} {'in 95%':>7}"
        )
        for s in self.scores:
            unit = "tenure" if s.metric in BY_TENURE else "after cutoff"
            mape = f"{s.mape:.1%}" if s.mape is not None else "n/a"
            out.append(
                f"{s.metric!s:<18} {unit + f' {s.first}-{s.last}':<22} {s.points:>6} {mape:>7}"
                f" {s.cover80:>7.0%} {s.cover95:>7.0%}"
            )
        for w in self.warnings:
            out.append(f"warning: {w}")
        return "\n".join(out)


def latest_date(m: Members) -> int:
    """The export's last date: its latest join or leave."""
    return int(max(m.joined.max(), m.left.max()))


def backtest(
    members_path: str,
    options: BacktestOptions,
    *,
    activity_path: str | None = None,
    root: str | None = None,
) -> BacktestResult:
    """Read the export, fit up to the cutoff, forecast and score the rest."""
    check_period_days(options.period_days)
    members = read_members(members_path, root=root)
    log = None
    if activity_path is not None:
        log = read_activity(activity_path, members, options.period_days, root=root)
    return run_backtest(members, options, log)


def run_backtest(
    members: Members, options: BacktestOptions, log: ActivityLog | None = None
) -> BacktestResult:
    """The backtest of members already read (tests call this with simulated histories)."""
    o = options
    P = o.period_days
    end = o.end if o.end is not None else latest_date(members)
    if not members.first_day < o.cutoff < end:
        raise CalibrationError(
            f"--cutoff {day_text(o.cutoff)} must lie after the first join"
            f" ({day_text(members.first_day)}) and before the end of the export ({day_text(end)})"
        )
    horizon_periods = math.floor((end - o.cutoff) / P)
    if horizon_periods < 1:
        raise CalibrationError(
            f"the export ends {day_text(end)}: less than one period of {P:g} days after the"
            f" cutoff {day_text(o.cutoff)} to score"
        )
    warnings: list[str] = []
    seen = members.before(o.cutoff)
    choice = fit_retention(seen, o.cutoff, P, holdout=o.holdout, models=o.models)
    rng = np.random.default_rng(o.seed)
    table = lifetimes(seen, o.cutoff, P)
    act = None
    pa_seen: PeriodActivity | None = None
    starts = None
    measured = None
    if log is not None:
        starts, gran = activity_periods(log, members.first_day, end, P, by_period=False)
        pa_seen = period_activity(seen, _log_before(log, members, o.cutoff), o.cutoff, starts, gran)
        act = fit_activity(pa_seen)
        if act is not None:
            measured = coupling(seen, pa_seen)
    # the retention forecast: the mixture calibrate writes at this date (one home)
    choice = with_mixture(choice, table, o.draws, o.seed, o.bootstrap_kind)
    draws = _retention_draws(choice, o.runs)
    frailty = {m: rm.cohort_frailty(m, choice.fits[m].vector, table) for m in {m for m, _ in draws}}
    bass: BassFit | None = None
    bass_draws = None
    profile: MarketProfile | None = None
    try:
        if o.joins:
            daily = daily_joins(seen, seen.first_day, o.cutoff)
            bass = fit_bass(daily, market=o.market)
            if o.market is not None:  # m given: the draws refit p and q only
                bass_draws = bootstrap_bass(bass, daily, min(o.draws, o.runs), rng, market=o.market)
            else:
                # m from its profile likelihood: the curvature at the optimum understates how
                # little the joins before the peak say about m (acquisition_fit.MarketProfile)
                profile = profile_market(bass, daily)
                bass_draws = profile.draws(o.runs, rng)
    except BassFailed as e:
        if o.market is not None:
            raise CalibrationError(f"--market: {e}") from None
        warnings.append(f"acquisition not fitted, joins not forecast: {e}")
    if profile is not None and not profile.bounded:
        warnings.append(
            f"acquisition: the joins up to the cutoff do not bound the market size from above"
            f" (95 % profile interval {profile.ci95[0]:,.0f} to {profile.ci95[1]:,.0f}, the"
            " fitter's limit: no saturation seen yet): the joins and members forecast draw m"
            " over that whole range, so their intervals are wide; give --market N if the"
            " market size is known"
        )
    rho = 0.0
    if act is not None and pa_seen is not None and starts is not None and measured is not None:
        cf = _coupling_at_cutoff(seen, choice, act, measured, pa_seen, o, starts)
        if cf is not None:
            rho = cf.rho
            warnings.append(
                f"activity: speaking and staying coupled with retention_coupling {cf.rho:.2f}"
                f" (the measured silent-period risk ratio {cf.measured:.2f} by the simulator's"
                " copula): survivors speak more"
            )
    sim = _Simulation(
        members, o, end, draws, frailty, bass, bass_draws, act, pa_seen, starts, rng, rho
    )
    points = sim.points(log)
    scores = _scores(points, o.bucket)
    return BacktestResult(
        members.path, o, end, choice, bass, act, tuple(points), tuple(scores), tuple(warnings),
        profile, rho, max(36, sim.K),
    )  # fmt: skip


def _coupling_at_cutoff(
    seen: Members,
    choice: RetentionChoice,
    act: ActivityFit,
    measured: Coupling,
    pa: PeriodActivity,
    o: BacktestOptions,
    starts: np.ndarray,
) -> CouplingFit | None:
    """The simulator's ρ reproducing the risk ratio measured up to the cutoff, under the
    retention the scenario would hold (the mixture), as calibrate fits it."""
    from .scenario import from_data

    data = {
        "retention": retention_section(choice, o.period_days, full=True),
        "activity": act.fragment(),
    }
    try:
        sc = from_data(data)
    except (TypeError, ValueError):
        return None
    return fit_coupling(sc, measured, seen.joined, o.cutoff, starts, pa.granularity, seed=o.seed)


def _coupled_propensity(
    model: rm.RetentionModel,
    params: np.ndarray,
    t: np.ndarray,
    s: np.ndarray,
    act: ActivityFit,
    rho: float,
    rng: np.random.Generator,
    horizon: int,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """Each member's speaking propensity given their whole-period lifetime T = t (t > horizon:
    still in), chosen among candidates s (members × k: draws from what their activity says, or
    from the prior) by the simulator's copula (retention.py).

    Under the copula the churn latent is N(−ρ·z_s, 1 − ρ²) given the speaking one; its uniform
    picks an early quitter (u > 1 − π) and θ = F⁻¹_Beta(u / (1 − π)) otherwise. Each candidate
    draws θ so, and is kept with weight P(T = t | θ) (importance sampling of s given t): the
    members who stay are the ones who speak more, and the lifetimes, drawn from the retention
    forecast as without coupling, keep their distribution.
    """
    from scipy.special import betainc, betaincinv, ndtr, ndtri

    p = np.asarray(params, dtype=float)
    weibull = model in (rm.RetentionModel.BDW, rm.RetentionModel.BDW_MIXTURE)
    c = float(p[2]) if weibull else 1.0
    names = rm.SPECS[model].names
    pi = float(p[names.index("early_quit_share")]) if "early_quit_share" in names else 0.0
    n = len(t)
    if not n:  # no members (no joins forecast): nothing to choose
        return np.zeros(0)
    s = np.asarray(s, dtype=float).reshape(n, -1)
    k = s.shape[1]
    if k == 1 or not n:
        return s[:, 0].copy()
    z_s = ndtri(np.clip(betainc(act.speak_alpha, act.speak_beta, s), 1e-12, 1 - 1e-12))
    u = ndtr(-rho * z_s + math.sqrt(1 - rho * rho) * rng.standard_normal((n, k)))
    quits = u > 1 - pi
    rest = np.where(quits, (u - (1 - pi)) / max(pi, 1e-300), u / max(1 - pi, 1e-300))
    # θ's quantiles tabulated on normal scores (as the simulator does), not one inversion each
    grid = np.linspace(-8.0, 8.0, 641)
    theta = np.interp(
        ndtri(np.clip(rest, 1e-16, 1 - 1e-16)), grid, betaincinv(p[0], p[1], ndtr(grid))
    )
    lam = -np.log1p(-np.minimum(theta, 1 - 1e-12))
    if scale is not None:
        lam = lam * np.asarray(scale, dtype=float)[:, None]
    tt = np.asarray(t, dtype=float)[:, None]
    still = tt > horizon
    tt = np.minimum(tt, horizon)
    # ln P(T = t | θ) = ln(e^{−λ(t−1)^c} − e^{−λ t^c}); still in: ln P(T > horizon | θ)
    a_ = -lam * (tt - 1) ** c
    b_ = -lam * tt**c
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lw = np.where(still, b_, a_ + np.log(-np.expm1(b_ - a_)))
    lw = np.where(quits, np.where((tt == 1) & ~still, 0.0, -np.inf), lw)
    lw = np.nan_to_num(lw, nan=-np.inf)
    top = lw.max(axis=1, keepdims=True)
    w = np.exp(lw - np.where(np.isfinite(top), top, 0.0))
    w_sum = w.sum(axis=1, keepdims=True)
    w = np.where(w_sum > 0, w / np.where(w_sum > 0, w_sum, 1.0), 1.0 / k)
    pick = np.minimum((rng.random(n)[:, None] > np.cumsum(w, axis=1)).sum(axis=1), k - 1)
    return s[np.arange(n), pick]


def _log_before(log: ActivityLog, members: Members, cutoff: int) -> ActivityLog:
    """The activity rows known at the cutoff, numbered as in `members.before(cutoff)`."""
    keep = members.joined <= cutoff
    renum = np.full(len(members.ids), -1, dtype=np.int64)
    renum[keep] = np.arange(int(keep.sum()))
    rows = (renum[log.member] >= 0) & (log.day <= cutoff)
    return ActivityLog(
        log.path, renum[log.member[rows]], log.day[rows], log.count[rows], 0, None, 0
    )


def _retention_draws(
    choice: RetentionChoice, runs: int
) -> list[tuple[rm.RetentionModel, np.ndarray]]:
    """(model drawn from, bdw-mixture parameters) for each run: the mixture's rows in turn."""
    mix = choice.mixture
    assert mix is not None
    n = len(mix.models)
    return [(mix.models[r % n], mix.rows[r % n]) for r in range(runs)]


class _Simulation:
    """Draws the futures of one backtest and reads each metric off them."""

    def __init__(
        self,
        members: Members,
        o: BacktestOptions,
        end: int,
        draws: list[tuple[rm.RetentionModel, np.ndarray]],
        frailty: dict[rm.RetentionModel, rm.CohortFrailty],
        bass: BassFit | None,
        bass_draws: np.ndarray | None,
        act: ActivityFit | None,
        pa_seen: PeriodActivity | None,
        starts: np.ndarray | None,
        rng: np.random.Generator,
        rho: float = 0.0,
    ) -> None:
        self.m, self.o, self.end = members, o, end
        self.rho = rho  # the simulator's coupling of speaking and staying (coupling.py)
        self.P = o.period_days
        self.draws, self.frailty = draws, frailty
        self.bass, self.bass_draws, self.act = bass, bass_draws, act
        self.rng = rng
        self.pa_seen, self.starts = pa_seen, starts
        P = self.P
        pre = members.joined <= o.cutoff
        self.pre = np.flatnonzero(pre)
        j = members.joined[self.pre]
        left_true = members.left[self.pre]
        known_gone = (left_true != NO_DATE) & (left_true <= o.cutoff)
        self.pre_joined = j
        self.known_left = np.where(known_gone, left_true, NO_DATE)
        self.alive = ~known_gone
        self.entry = (o.cutoff - j[self.alive]) / P  # tenure at the cutoff, in periods
        self.H = math.floor((end - o.cutoff) / P)  # whole periods after the cutoff
        self.max_t = math.floor((end - members.first_day) / P) + 2
        self.cohort = np.floor((j - members.first_day) / P).astype(np.int64)
        # period h after the cutoff ends on this day (its members counted then)
        self.h_end = o.cutoff + np.round(np.arange(1, self.H + 1) * P).astype(np.int64)
        self.h_start = o.cutoff + 1 + np.round(np.arange(0, self.H) * P).astype(np.int64)
        self.K = math.floor((end - int(j.min())) / P)  # the longest tenure seen by the end

    # -- one future ------------------------------------------------------------------------

    def _leave_day(self, joined: np.ndarray, t: np.ndarray, after: int | None) -> np.ndarray:
        """A day in each member's t-th period of tenure (after `after`); NO_DATE beyond it all."""
        P = self.P
        lo = joined + np.ceil((t - 1) * P).astype(np.int64)
        hi = joined + np.ceil(t * P).astype(np.int64) - 1
        if after is not None:
            lo = np.maximum(lo, after + 1)
        hi = np.maximum(hi, lo)
        day = lo + np.floor(self.rng.random(len(t)) * (hi - lo + 1)).astype(np.int64)
        return np.where(t > self.max_t, NO_DATE, day)

    def future(self, run: int, s_pre: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One run: the pre-cutoff members' lifetimes and leave days, the later joiners'.

        With draws of the pre-cutoff members' speaking propensities `s_pre` (members ×
        candidates, from their own activity) and a coupling, each member keeps the propensity
        their lifetime makes likely by the simulator's copula (`_coupled_propensity`), in
        `s_pre` of the result; new joiners' are `s_new`."""
        source, params = self.draws[run]
        model = MIXTURE_MODEL  # every row is bdw-mixture's parameters (community_fit)
        coupled = s_pre is not None and self.act is not None and self.rho != 0
        fr = self.frailty.get(source)  # the cohort frailty of the model the row was drawn from
        scale_pre = scale_new = None
        n_cohorts = self.max_t + 2
        if fr is not None and fr.sigma > 0:
            u = np.exp(fr.draw(np.arange(n_cohorts), self.rng))  # each cohort's own e^u
            scale_pre = u[self.cohort[self.alive]]
        t_alive = rm.sample_lifetimes(model, params, self.entry, self.rng, self.max_t, scale_pre)
        s_kept = None if s_pre is None else s_pre[:, 0].copy()
        if coupled:
            assert s_pre is not None and s_kept is not None and self.act is not None
            s_kept[self.alive] = _coupled_propensity(
                model, params, t_alive, s_pre[self.alive], self.act, self.rho, self.rng,
                self.max_t, scale_pre,
            )  # fmt: skip
        left = self.known_left.copy()
        T = np.zeros(len(self.pre), dtype=np.int64)
        gone = ~self.alive
        T[gone] = np.floor((left[gone] - self.pre_joined[gone]) / self.P).astype(np.int64) + 1
        T[self.alive] = t_alive
        left[self.alive] = self._leave_day(self.pre_joined[self.alive], t_alive, self.o.cutoff)
        out = {"T": T, "left": left}
        if s_kept is not None:
            out["s_pre"] = s_kept
        new_join = np.zeros(0, dtype=np.int64)
        if self.bass is not None:
            if self.bass_draws is not None:
                p, q, m = self.bass_draws[run % len(self.bass_draws)]
            else:
                p, q, m = draw_params(self.bass, 1, self.rng)[0]
            first = self.m.first_day
            mu = expected_joins(p, q, m, self.o.cutoff + 1 - first, self.end - self.o.cutoff)
            per = np.add.reduceat(mu, self.h_start - self.o.cutoff - 1) if self.H else mu[:0]
            n = draw_counts(per, self.bass.dispersion, self.rng).astype(np.int64)
            span = self.h_end - self.h_start + 1
            off = np.repeat(self.h_start, n)
            new_join = off + np.floor(self.rng.random(int(n.sum())) * np.repeat(span, n)).astype(
                np.int64
            )
        if fr is not None and fr.sigma > 0:
            c_new = np.floor((new_join - self.m.first_day) / self.P).astype(np.int64)
            scale_new = u[np.minimum(c_new, n_cohorts - 1)]
        t_new = rm.sample_lifetimes(
            model, params, np.zeros(len(new_join)), self.rng, self.max_t, scale_new
        )
        if self.act is not None:
            k = CANDIDATES if coupled else 1
            s_new = self.rng.beta(self.act.speak_alpha, self.act.speak_beta, (len(new_join), k))
            out["s_new"] = _coupled_propensity(
                model, params, t_new, s_new, self.act, self.rho, self.rng, self.max_t, scale_new
            )
        out["new_joined"] = new_join
        out["new_left"] = self._leave_day(new_join, t_new, None)
        return out

    # -- actuals and forecasts ---------------------------------------------------------------

    def points(self, log: ActivityLog | None) -> list[Point]:
        """Every scored point: forecast draws from the runs, the actual from the export."""
        m, o, P = self.m, self.o, self.P
        j = self.pre_joined
        # actual lifetimes of the pre-cutoff members, seen at the end of the export
        left_end = np.where((m.left[self.pre] != NO_DATE) & (m.left[self.pre] <= self.end),
                            m.left[self.pre], NO_DATE)  # fmt: skip
        T_true = np.where(left_end != NO_DATE, np.floor((left_end - j) / P).astype(np.int64) + 1,
                          2**62)  # fmt: skip
        n_obs = np.floor((self.end - j) / P).astype(np.int64)
        ks = np.arange(1, self.K + 1)
        observed = n_obs[:, None] >= ks[None, :]  # the k-th period's end is within the export
        # points whose value was not fully known at the cutoff
        known_at_cut = np.floor((o.cutoff - j) / P).astype(np.int64)
        specs: list[tuple[Metric, int, int | None, np.ndarray]] = []
        for k in ks:
            obs = observed[:, k - 1]
            if obs.sum() >= MIN_AT_RISK:
                specs.append((Metric.RETENTION, int(k), None, obs))
        for c in np.unique(self.cohort):
            in_c = self.cohort == c
            for k in ks:
                obs = in_c & observed[:, k - 1]
                if obs.sum() >= MIN_AT_RISK and (known_at_cut[obs] < k).any():
                    specs.append((Metric.COHORT_RETENTION, int(k), int(c), obs))
        pa_all = None
        act_cols = np.zeros(0, dtype=np.int64)  # activity periods that start after the cutoff
        if log is not None and self.act is not None and self.starts is not None:
            pa_all = period_activity(m, log, self.end, self.starts, "")
            act_cols = np.flatnonzero(pa_all.starts[:-1] > o.cutoff)
        R = o.runs
        n_ret = len(specs)
        H = self.H
        sims = {
            "ret": np.zeros((R, n_ret)),
            Metric.RETAINED: np.zeros((R, H)),
            Metric.MEMBERS: np.zeros((R, H)),
            Metric.JOINS: np.zeros((R, H)),
            Metric.ACTIVITY_RATE: np.zeros((R, len(act_cols))),
        }
        obs_mat = np.array([s[3] for s in specs]).T if specs else np.zeros((len(j), 0), bool)
        denom = obs_mat.sum(axis=0)
        thresholds = np.array([s[1] for s in specs])
        prop = self._propensity_draws(R, pa_all) if pa_all is not None else None
        for r in range(R):
            # candidates of each member's propensity: this run's draw and the next runs'
            cand = None if prop is None else prop[(r + np.arange(CANDIDATES)) % R].T
            f = self.future(r, cand)
            surv = f["T"][:, None] > thresholds[None, :]
            sims["ret"][r] = (surv & obs_mat).sum(axis=0) / np.maximum(denom, 1)
            pre_in = _in_at(np.zeros(len(f["left"]), dtype=np.int64), f["left"], self.h_end)
            new_in = _in_at(f["new_joined"], f["new_left"], self.h_end)
            sims[Metric.RETAINED][r] = pre_in
            sims[Metric.MEMBERS][r] = pre_in + new_in
            sims[Metric.JOINS][r] = _joins_in(f["new_joined"], self.h_start, self.h_end)
            if pa_all is not None and prop is not None:
                sims[Metric.ACTIVITY_RATE][r] = self._activity_rates(
                    f, pa_all, f["s_pre"], act_cols
                )
        # actual calendar metrics
        all_left = np.where((m.left != NO_DATE) & (m.left <= self.end), m.left, NO_DATE)
        actual: dict[Metric, np.ndarray] = {}
        pre_mask = m.joined <= o.cutoff
        actual[Metric.RETAINED] = _in_at(m.joined[pre_mask], all_left[pre_mask], self.h_end)
        actual[Metric.MEMBERS] = _in_at(m.joined, all_left, self.h_end)
        actual[Metric.JOINS] = _joins_in(m.joined, self.h_start, self.h_end)
        out: list[Point] = []
        for i, (metric, tenure, c, obs) in enumerate(specs):
            a = float((T_true[obs] > tenure).mean())
            out.append(_point(metric, tenure, c, a, sims["ret"][:, i]))
        for metric in (Metric.RETAINED, Metric.MEMBERS, Metric.JOINS):
            if metric != Metric.RETAINED and self.bass is None:
                continue  # without a joins forecast, members and joins are not forecast
            for h in range(H):
                out.append(_point(metric, h + 1, None, actual[metric][h], sims[metric][:, h]))
        if pa_all is not None:
            for i, col in enumerate(act_cols):
                pres = pa_all.present[:, col]
                if pres.sum() < MIN_AT_RISK:
                    continue
                a = float(pa_all.active[pres, col].mean())
                mid = (pa_all.starts[col] + pa_all.starts[col + 1] - 1) / 2
                h = math.floor((mid - o.cutoff) / P) + 1
                out.append(
                    _point(Metric.ACTIVITY_RATE, h, None, a, sims[Metric.ACTIVITY_RATE][:, i])
                )
        return out

    def _propensity_draws(self, R: int, pa_all: PeriodActivity) -> np.ndarray:
        """Speaking propensity per run for the pre-cutoff members (their own history) and a pool
        from the prior for later joiners: (R, pre members + pool)."""
        assert self.act is not None and self.pa_seen is not None
        rows = np.flatnonzero(self.pa_seen.present.any(axis=1))
        s_pre = self.rng.beta(self.act.speak_alpha, self.act.speak_beta, (R, len(self.pre)))
        if len(rows):
            s_pre[:, rows] = posterior_propensity(self.act, self.pa_seen, rows, self.rng, R)
        return s_pre

    def _activity_rates(
        self, f: dict[str, np.ndarray], pa: PeriodActivity, s_pre: np.ndarray, cols: np.ndarray
    ) -> np.ndarray:
        assert self.act is not None
        a = self.act
        out = np.zeros(len(cols))
        new_j, new_l = f["new_joined"], f["new_left"]
        s_new = f["s_new"]
        joined = np.concatenate([self.pre_joined, new_j])
        left = np.concatenate([f["left"], new_l])
        s = np.concatenate([s_pre, s_new])
        for i, col in enumerate(cols):
            first, last = pa.starts[col], pa.starts[col + 1] - 1
            pres = (joined <= first) & ((left == NO_DATE) | (left > last))
            if not pres.any():
                continue
            tenure = (first + last) / 2 - joined[pres]
            g = a.decay_floor + (1 - a.decay_floor) * np.exp(-tenure / a.tenure_decay_days)
            p_act = -np.expm1((last - first + 1) * np.log1p(-np.clip(s[pres] * g, 0, 1 - 1e-12)))
            out[i] = (self.rng.random(int(pres.sum())) < p_act).mean()
        return out


def _in_at(joined: np.ndarray, left: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Members in at the end of each day of `days` (joined by it, not left by it)."""
    j = np.sort(joined)
    gone = np.sort(left[left != NO_DATE])
    n_in = np.searchsorted(j, days, side="right") - np.searchsorted(gone, days, side="right")
    return n_in.astype(float)


def _joins_in(joined: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Joins in each period first[h] .. last[h]."""
    j = np.sort(joined)
    return (np.searchsorted(j, last, side="right") - np.searchsorted(j, first, side="left")).astype(
        float
    )


def _point(
    metric: Metric, index: int, cohort: int | None, actual: float, draws: np.ndarray
) -> Point:
    q = tuple(float(v) for v in np.quantile(draws, QUANTILES))
    return Point(metric, index, cohort, float(actual), float(draws.mean()), q)


def _scores(points: list[Point], bucket: int) -> list[BucketScore]:
    out = []
    for metric in Metric:
        ps = [p for p in points if p.metric == metric]
        if not ps:
            continue
        top = max(p.index for p in ps)
        for b in range(0, top, bucket):
            sel = [p for p in ps if b < p.index <= b + bucket]
            if not sel:
                continue
            apes = [p.ape for p in sel if p.ape is not None]
            out.append(
                BucketScore(
                    metric,
                    b + 1,
                    b + bucket,
                    len(sel),
                    float(np.mean(apes)) if apes else None,
                    float(np.mean([p.inside(80) for p in sel])),
                    float(np.mean([p.inside(95) for p in sel])),
                )
            )
    return out
