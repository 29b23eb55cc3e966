"""`sop calibrate community`: acquisition, retention and activity fitted jointly from an export.

One export (members with join and leave dates, optionally their activity) gives every part of
a scenario: the inflow that was actually fitted (Bass on the daily joins, with the first day's
import as seed users, and nothing else on top), the retention family (sBG, sBG with early
quitters, BdW, BdW with early quitters: each fitted on the periods before the holdout and scored
on it) written as the forecast mixture `sop backtest` scores (with --bootstrap: bootstrap draws
of every model by its forecast weight, as bdw-mixture rows; without, the best model alone), and
the speaking propensity in daily units.
Every estimate carries its standard error; a parameter at its fitter's bound is a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import retention_models as rm
from .acquisition_fit import (
    BassFailed,
    BassFit,
    MarketProfile,
    fit_bass,
    profile_market,
    source_shares,
)
from .activity_fit import SHAPE_RANGE, ActivityFit, Coupling, coupling, fit_activity
from .calibrate import CalibrationError, check_period_days
from .community_data import (
    Members,
    activity_periods,
    daily_joins,
    day_text,
    describe,
    lifetimes,
    period_activity,
    read_activity,
    read_members,
    source_counts,
)
from .coupling import CouplingFit, fit_coupling

MAX_DRAWS = 1000  # bootstrap draws a scenario may carry
# a model with spread may replace a point-like best one when its holdout score is this close
# (pseudo-BMA weights about 1 : e^4 at worst; on 2 months of holdout, within noise)
SPREAD_NATS = 4.0
MAX_ACTIVITY_CELLS = 30_000_000  # members × periods of the activity matrix; beyond, a sample
MODELS = tuple(rm.RetentionModel)


@dataclass(frozen=True)
class CommunityOptions:
    """What `calibrate community` needs besides the files."""

    period_days: float
    as_of: int  # ordinal day
    holdout: int | None = None  # periods; None: the last 20 % (at least 2)
    bootstrap: int = 0
    bootstrap_kind: rm.BootstrapKind = rm.BootstrapKind.COHORTS
    already_running: tuple[str, ...] = ()
    seed: int = 0
    name: str = "calibrated"
    horizon: int = 36  # periods over which the equivalent sBG is matched
    market: float | None = None  # the market size, if known (--market): m is not fitted


@dataclass(frozen=True)
class RetentionChoice:
    """Every retention model fitted to all the data, scored on the holdout, and the choice."""

    chosen: rm.RetentionModel
    holdout_periods: int
    holdout_start: int  # ordinal day
    fits: dict[rm.RetentionModel, rm.RetentionFit]
    holdout_ll: dict[rm.RetentionModel, float]
    weights: dict[rm.RetentionModel, float]
    equivalent_sbg: tuple[float, float]
    draws: np.ndarray | None = None
    # what a forecast mixes the models by (forecast_weights): the holdout's, hedged
    forecast: dict[rm.RetentionModel, float] = field(default_factory=dict)
    # the forecast itself: bootstrap draws of every model by those weights (forecast_mixture)
    mixture: RetentionMixture | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "chosen": str(self.chosen),
            "chosen_by": "out-of-sample log-likelihood of the last"
            f" {self.holdout_periods} periods (from {day_text(self.holdout_start)}), each model"
            " fitted on the periods before; weights: pseudo-BMA+ (Bayesian bootstrap of the"
            " holdout's members)",
            "holdout_periods": self.holdout_periods,
            "forecast_weights_by": f"{1 - HEDGE:.0%} the holdout weight, {HEDGE:.0%} uniform over"
            " the models that generalise sbg (a holdout of a few periods cannot say which"
            " extrapolates best over years)",
            "models": [
                {
                    **self.fits[m].as_dict(),
                    "holdout_log_likelihood": self.holdout_ll[m],
                    "weight": self.weights[m],
                    "forecast_weight": self.forecast.get(m, self.weights[m]),
                }
                for m in self.fits
            ],
            "equivalent_sbg": {
                "alpha": self.equivalent_sbg[0],
                "beta": self.equivalent_sbg[1],
            },
            "draws": None if self.draws is None else self.draws.tolist(),
            "mixture": None if self.mixture is None else self.mixture.as_dict(),
        }


def holdout_periods(members: Members, as_of: int, period_days: float, asked: int | None) -> int:
    """The holdout's length in periods: as asked, else 20 % of the history (at least 2)."""
    total = math.floor((as_of - members.first_day) / period_days)
    k = asked if asked is not None else max(2, round(0.2 * total))
    if total - k < 2:
        raise CalibrationError(
            f"{members.path}: the history as of {day_text(as_of)} holds {total} whole period(s)"
            f" of {period_days:g} days; a holdout of {k} leaves fewer than 2 to fit on"
            + ("" if asked is None else "; give a smaller --holdout")
        )
    return k


def fit_retention(
    members: Members,
    as_of: int,
    period_days: float,
    *,
    holdout: int | None = None,
    horizon: int = 36,
    models: tuple[rm.RetentionModel, ...] = MODELS,
) -> RetentionChoice:
    """Fit every model before the holdout, score it on the holdout, refit on everything."""
    k = holdout_periods(members, as_of, period_days, holdout)
    since = as_of - math.ceil(k * period_days)
    train = lifetimes(members, since, period_days)
    test = lifetimes(members, as_of, period_days, since=since)
    full = lifetimes(members, as_of, period_days)
    if full.events == 0:
        raise CalibrationError(
            f"{members.path}: no member left within a whole observed period: no churn to fit"
        )
    if train.events == 0:
        raise CalibrationError(
            f"{members.path}: no member left before the holdout ({day_text(since)}): give a"
            " smaller --holdout or a longer history"
        )
    hll: dict[rm.RetentionModel, float] = {}
    rows: dict[rm.RetentionModel, np.ndarray] = {}
    fits: dict[rm.RetentionModel, rm.RetentionFit] = {}
    for m in models:
        try:
            before = rm.fit(m, train, with_se=False)
            rows[m] = rm.row_log_likelihood(m, before.vector, test)
            hll[m] = float(test.weight @ rows[m])
            fits[m] = rm.fit(m, full)
        except rm.FitFailed as e:
            raise CalibrationError(f"{members.path}: {e}") from None
    best = max(hll, key=lambda m: hll[m] if math.isfinite(hll[m]) else -math.inf)
    weights = holdout_weights(rows, test.weight)
    eq = rm.equivalent_sbg(best, fits[best].vector, horizon)
    return RetentionChoice(best, k, since, fits, hll, weights, eq, None, forecast_weights(weights))


HEDGE = 0.5  # share of the forecast weights spread uniformly (forecast_weights)


def forecast_weights(weights: dict[rm.RetentionModel, float]) -> dict[rm.RetentionModel, float]:
    """The weights a forecast years ahead mixes the models by: HEDGE of them uniform over the
    models that generalise sBG (sBG is the special case each reaches, π = 0 or c = 1, when the
    data say so), the rest the holdout's pseudo-BMA+ weights.

    A holdout of the last few periods tells the models apart on those periods; which of two
    models equally good there extrapolates better over the next years it cannot say (early
    quitters or a falling hazard, heterogeneity or duration dependence, fit a year about
    equally and part after). On simulated three-year histories from each model and from
    processes outside the family (bench/backtest_accuracy.py, docs/simulation.md), the hedge
    lowered the error at tenures 13–36 modestly and brought the intervals' coverage nearer
    nominal; the holdout weights alone bet on one story too often.
    """
    general: list[rm.RetentionModel] = [m for m in weights if m != rm.RetentionModel.SBG]
    general = general or list(weights)
    out = {m: (1 - HEDGE) * w for m, w in weights.items()}
    for m in general:
        out[m] += HEDGE / len(general)
    return out


def holdout_weights(
    rows: dict[rm.RetentionModel, np.ndarray], weight: np.ndarray, draws: int = 400
) -> dict[rm.RetentionModel, float]:
    """Pseudo-BMA+ weights: exp(holdout log-likelihood), averaged over Bayesian-bootstrap
    reweightings of the holdout's members (Yao, Vehtari, Simpson & Gelman 2018).

    Plain exp(ℓ − max) turns a difference of 2 nats between two models — noise, on a holdout
    of a few months — into 88 % against 12 %; resampling the members who make up the holdout
    keeps close models close. Seeded: the same export gives the same weights.
    """
    models = list(rows)
    c = np.nan_to_num(np.array([rows[m] for m in models]), nan=-1e300, neginf=-1e300)
    rng = np.random.default_rng(0)
    # a row of n members gets Gamma(n, 1): the sum of their n Dirichlet(1, …, 1) weights
    g = rng.gamma(np.maximum(weight, 1e-12), size=(draws, len(weight)))
    g *= weight.sum() / g.sum(axis=1, keepdims=True)
    ll = g @ c.T  # (draws, models)
    w = np.exp(ll - ll.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    mean = w.mean(axis=0)
    return {m: float(v) for m, v in zip(models, mean, strict=True)}


# -- the forecast mixture -------------------------------------------------------------------

# every model of the family is a special case of bdw-mixture (sbg: c = 1 and no early
# quitters; sbg-mixture: c = 1; bdw: no early quitters), which the simulator reads draw by draw
MIXTURE_MODEL = rm.RetentionModel.BDW_MIXTURE
MIXTURE_NAMES = rm.SPECS[MIXTURE_MODEL].names  # alpha, beta, c, early_quit_share
MIXTURE_STREAM = 0x4D58  # the mixture's bootstrap stream: apart from a backtest's other draws


def as_mixture_row(model: rm.RetentionModel, params: Any) -> np.ndarray:
    """A model's parameters as bdw-mixture's (alpha, beta, c, early_quit_share)."""
    names = rm.SPECS[model].names
    p = dict(zip(names, np.asarray(params, dtype=float), strict=True))
    return np.array([p["alpha"], p["beta"], p.get("c", 1.0), p.get("early_quit_share", 0.0)])


@dataclass(frozen=True)
class RetentionMixture:
    """The retention forecast: bootstrap draws of each model, as many of them as its forecast
    weight, each written as bdw-mixture parameters. `sop backtest` forecasts with these rows
    and `sop calibrate community --bootstrap N` writes them as `retention.draws` (one home:
    forecast_mixture), so the backtest scores the scenario's own retention law."""

    rows: np.ndarray  # (draws, 4): alpha, beta, c, early_quit_share
    models: tuple[rm.RetentionModel, ...]  # the model each row was drawn from
    weights: dict[rm.RetentionModel, float]  # the forecast weights asked

    @property
    def shares(self) -> dict[rm.RetentionModel, float]:
        """Each model's share of the rows (the weights, rounded to whole draws), largest first."""
        n = len(self.models)
        counts = {m: sum(1 for x in self.models if x == m) / n for m in self.weights}
        return dict(sorted(((m, c) for m, c in counts.items() if c > 0), key=lambda x: -x[1]))

    @property
    def top(self) -> rm.RetentionModel:
        """The model with the highest forecast weight."""
        return max(self.weights, key=lambda m: self.weights[m])

    def label(self) -> str:
        """`mixture of bdw-mixture 41 %, sbg-mixture 30 %, …` (shares of the draws)."""
        parts = ", ".join(
            f"{m} {s * 100:.0f} %" if s >= 0.01 else f"{m} <1 %" for m, s in self.shares.items()
        )
        return f"mixture of {parts}"

    def survival(self, t: Any) -> np.ndarray:
        """S(t) of each row: (draws, len(t))."""
        return np.array([rm.survival(MIXTURE_MODEL, row, t) for row in self.rows])

    def curve(self, periods: int) -> dict[str, list[float]]:
        """The forecast retention curve S(1..periods): mean over the draws and 95 % interval."""
        s = self.survival(np.arange(1, periods + 1))
        lo, hi = np.quantile(s, [0.025, 0.975], axis=0)
        return {"mean": s.mean(axis=0).tolist(), "p2_5": lo.tolist(), "p97_5": hi.tolist()}

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "model": str(MIXTURE_MODEL),
            "parameters": list(MIXTURE_NAMES),
            "draws": len(self.models),
            "shares": {str(m): s for m, s in self.shares.items()},
            "forecast_weights": {str(m): w for m, w in self.weights.items()},
            "label": self.label(),
        }


def _allot(weights: dict[rm.RetentionModel, float], n: int) -> dict[rm.RetentionModel, int]:
    """n draws shared by the weights, to whole draws (largest remainders)."""
    total = sum(weights.values()) or 1.0
    exact = {m: n * w / total for m, w in weights.items()}
    out = {m: math.floor(x) for m, x in exact.items()}
    for m in sorted(exact, key=lambda m: out[m] - exact[m])[: n - sum(out.values())]:
        out[m] += 1
    return out


def _in_scenario_range(rows: np.ndarray) -> np.ndarray:
    """Rows clipped to the scenario's ranges of the four parameters (the fitters' bounds reach
    a little beyond them: α at e^-10, c at e^3, π at logit 12), to 7 significant digits as
    written: the rows a backtest draws are the rows the scenario holds."""
    from .scenario import value_range

    out = rows.copy()
    for i, name in enumerate(MIXTURE_NAMES):
        lo, hi = value_range(f"retention.{name}")
        out[:, i] = np.clip(out[:, i], lo, hi)
    return np.array([[float(f"{v:.7g}") for v in row] for row in out]).reshape(rows.shape)


def mixture_weights(choice: RetentionChoice) -> dict[rm.RetentionModel, float]:
    """The forecast weights the mixture draws by, normalised.

    They read the retention history only. A measured engagement–retention coupling says that
    members differ in how likely they are to leave, which a fit whose Beta collapsed to a point
    denies; it once moved such a model's weight to the others. It no longer does: the coupling
    is an association that does not say which aggregate curve extrapolates, and the move bet the
    forecast on one model (98 % bdw-mixture at 12 months of tests/data/calibrate), which on
    export-like histories with activity made retention at tenures 13–36 worse on average
    (bench/backtest_accuracy.py --activity). The coupling's ρ is solved on the rows that can
    carry it instead (coupling.py), where it acts; on a point-like row it has no effect."""
    weights = dict(choice.forecast or choice.weights)
    total = sum(weights.values()) or 1.0
    return {m: w / total for m, w in weights.items()}


def forecast_mixture(
    choice: RetentionChoice,
    table: rm.SurvivalTable,
    draws: int,
    seed: int,
    kind: rm.BootstrapKind = rm.BootstrapKind.COHORTS,
) -> RetentionMixture:
    """`draws` bootstrap draws of the family by its forecast weights (mixture_weights), as
    bdw-mixture rows in a seeded random order (a prefix of them is a sample of the mixture)."""
    weights = mixture_weights(choice)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(MIXTURE_STREAM,)))
    rows: list[np.ndarray] = []
    models: list[rm.RetentionModel] = []
    for m, k in _allot(weights, draws).items():
        if k:
            for row in rm.bootstrap(choice.fits[m], table, k, rng, kind):
                rows.append(as_mixture_row(m, row))
                models.append(m)
    order = rng.permutation(len(rows))
    table_ = _in_scenario_range(np.array(rows))[order]
    return RetentionMixture(table_, tuple(models[i] for i in order), dict(weights))


def with_mixture(
    choice: RetentionChoice,
    table: rm.SurvivalTable,
    draws: int,
    seed: int,
    kind: rm.BootstrapKind = rm.BootstrapKind.COHORTS,
) -> RetentionChoice:
    """The choice with its forecast mixture (and the mixture's rows as its draws): what
    calibrate writes and backtest forecasts with."""
    mix = forecast_mixture(choice, table, min(draws, MAX_DRAWS), seed, kind)
    return replace(choice, mixture=mix, draws=mix.rows)


# -- the whole export ------------------------------------------------------------------------


@dataclass(frozen=True)
class CommunityCalibration:
    """The joint fit of an export, the scenario it implies, and what to know about it."""

    path: str
    options: CommunityOptions
    counts: dict[str, Any]
    acquisition: BassFit | None
    sources: list[dict[str, Any]]
    retention: RetentionChoice
    activity: ActivityFit | None
    coupling: Coupling | None
    activity_granularity: str | None
    scenario: dict[str, Any]  # what loads in the simulator today
    scenario_full: dict[str, Any]  # the full format (docs/simulation.md)
    frailty: rm.CohortFrailty | None  # cohorts that differ, for the chosen model
    pending: tuple[str, ...]  # keys of the full format the simulator does not accept yet
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    assumptions: tuple[str, ...] = field(default_factory=tuple)
    coupling_fit: CouplingFit | None = None  # the simulator's ρ that reproduces `coupling`
    market: MarketProfile | None = None  # m's profile likelihood (no --market)

    exit_code = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `--format json`."""
        o = self.options
        return {
            "members_file": self.path,
            "as_of": day_text(o.as_of),
            "period_days": o.period_days,
            "counts": self.counts,
            "acquisition": None
            if self.acquisition is None
            else {
                **self.acquisition.as_dict(),
                "sources": self.sources,
                "market_given": o.market,
                "market_profile": None if self.market is None else self.market.as_dict(),
            },
            "retention": self.retention.as_dict()
            | {
                "cohort_frailty": None
                if self.frailty is None
                else {
                    "sigma": self.frailty.sigma,
                    "log_likelihood_gain": self.frailty.log_likelihood
                    - self.frailty.log_likelihood_0,
                    "meaning": "cohort c's survival is S(t)^exp(u_c), u_c ~ Normal(0, sigma^2)",
                }
            },
            "activity": None
            if self.activity is None
            else {**self.activity.as_dict(), "granularity": self.activity_granularity},
            "coupling": None
            if self.coupling is None
            else self.coupling.as_dict()
            | {"simulator": None if self.coupling_fit is None else self.coupling_fit.as_dict()},
            "history_includes": list(o.already_running),
            "assumptions": list(self.assumptions),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "scenario": self.scenario,
            "scenario_full": self.scenario_full,
            "pending_keys": list(self.pending),
        }

    def yaml_text(self) -> str:
        """The scenario file: a commented summary of the fit, then the scenario."""
        return scenario_text(self)


def calibrate_community(
    members_path: str,
    options: CommunityOptions,
    *,
    activity_path: str | None = None,
    root: str | None = None,
) -> CommunityCalibration:
    """Fit acquisition, retention and activity from the export; build the scenario."""
    o = options
    check_period_days(o.period_days)
    members = read_members(members_path, root=root)
    if o.as_of < members.first_day:
        raise CalibrationError(
            f"--as-of {day_text(o.as_of)} is before the first join ({day_text(members.first_day)})"
        )
    warnings: list[str] = []
    notes: list[str] = []
    counts = describe(members, o.as_of)
    if counts["joined_after_as_of"]:
        notes.append(
            f"{counts['joined_after_as_of']} member(s) joined after --as-of"
            f" {day_text(o.as_of)}: not used"
        )
    seen = members.before(o.as_of)
    # -- acquisition
    bass: BassFit | None = None
    profile: MarketProfile | None = None
    try:
        daily = daily_joins(seen, seen.first_day, o.as_of)
        bass = fit_bass(daily, market=o.market)
        if o.market is None:
            profile = profile_market(bass, daily)
    except BassFailed as e:
        if o.market is not None:
            raise CalibrationError(f"--market: {e}") from None
        warnings.append(f"acquisition not fitted: {e}")
    if (
        profile is not None
        and not profile.bounded
        and "market" not in (bass.at_bound if bass else ())
    ):
        warnings.append(
            f"acquisition: the joins do not bound the market size m from above (95 % profile"
            f" interval {profile.ci95[0]:,.0f} to {profile.ci95[1]:,.0f}, the fitter's limit):"
            " no saturation seen yet, so m is not identified and the joins after the history"
            " are a guess; give --market N if the market size is known"
        )
    if bass is not None:
        for name in bass.at_bound:
            what = {
                "market": "the market size m sits at its bound (100× the joins seen): the"
                " joins do not show saturation yet, so m is not identified; treat the"
                " forecast's later joins as a guess",
                "p": "Bass p sits at its bound",
                "q": "Bass q sits at its bound (no word of mouth detected)",
            }[name]
            warnings.append(f"acquisition: {what}")
        if bass.cov_x is None:
            warnings.append("acquisition: the Bass fit's information matrix is singular: no SEs")
        if bass.seed_users:
            notes.append(
                f"{bass.seed_users} members joined on the first day"
                f" ({day_text(seen.first_day)}), far above the days after: taken as seed users"
                " (an import), not as diffusion"
            )
    sources = source_shares(source_counts(seen, o.as_of))
    # -- retention
    choice = fit_retention(seen, o.as_of, o.period_days, holdout=o.holdout, horizon=o.horizon)
    # -- activity
    act: ActivityFit | None = None
    coup: Coupling | None = None
    granularity: str | None = None
    starts: np.ndarray | None = None
    rows: np.ndarray | None = None
    if activity_path is not None:
        log = read_activity(activity_path, seen, o.period_days, root=root)
        if log.unknown:
            warnings.append(
                f"activity: {log.unknown} row(s) name members not in {members_path} (first:"
                f" {log.first_unknown}): not used"
            )
        if log.outside:
            notes.append(f"activity: {log.outside} row(s) dated outside a membership: not used")
        starts, granularity = activity_periods(
            log, seen.first_day, o.as_of, o.period_days, by_period=False
        )
        rows = _activity_sample(len(seen.ids), len(starts), o.seed)
        if rows is not None:
            notes.append(
                f"activity: fitted on a random {len(rows):,} of {len(seen.ids):,} members"
                " (the activity matrix would be too large)"
            )
        pa = period_activity(seen, log, o.as_of, starts, granularity, rows)
        notes.append(
            f"activity: {granularity} periods (from the dates of {activity_path}); a member is"
            " active in a period with any positive count, days taken as independent"
        )
        act = fit_activity(pa)
        if act is None:
            warnings.append("activity: no member was present for a whole period: not fitted")
        else:
            for name in act.at_bound:
                warnings.append(
                    f"activity: {name} clamped at the scenario's range"
                    f" ({SHAPE_RANGE[0]:g}..{SHAPE_RANGE[1]:g} for Beta shapes)"
                )
            sub = seen if rows is None else _subset(seen, rows)
            coup = coupling(sub, pa)
    if coup is not None and coup.ci95[0] > 1 and not o.bootstrap:
        # (with --bootstrap the mixture is written, whose models with spread carry the coupling)
        choice = with_spread(choice, o.horizon, notes)
    for m, f in choice.fits.items():
        if f.at_bound:
            warnings.append(
                f"retention: {m}: {', '.join(f.at_bound)} at the fitter's bound"
                + (
                    " (the model's best fit degenerates: see its holdout score)"
                    if m != choice.chosen
                    else ""
                )
            )
        if f.cov_x is None:
            warnings.append(f"retention: {m}: information matrix singular: no standard errors")
    table = lifetimes(seen, o.as_of, o.period_days)
    frailty = rm.cohort_frailty(choice.chosen, choice.fits[choice.chosen].vector, table)
    if o.bootstrap:  # the forecast mixture, as `sop backtest` forecasts at this date
        choice = with_mixture(choice, table, o.bootstrap, o.seed, o.bootstrap_kind)
        mix = choice.mixture
        assert mix is not None
        point_like = [str(m) for m in mix.shares if not _spread(choice.fits[m])]
        if coup is not None and coup.ci95[0] > 1 and point_like:
            notes.append(
                f"retention: {', '.join(point_like)} in the mixture cannot carry the coupling"
                " (their fits are Betas collapsed to a point): retention_coupling is solved on"
                " the mixture's other rows, and in runs that draw theirs it has no effect"
            )
    assumptions = _assumptions(o)
    full, loadable, pending = build_scenario(o, bass, choice, act)
    cfit: CouplingFit | None = None
    if coup is not None and act is not None and starts is not None and granularity is not None:
        from .scenario import from_data

        sub = seen if rows is None else _subset(seen, rows)
        cfit = fit_coupling(
            from_data(loadable), coup, sub.joined, o.as_of, starts, granularity, seed=o.seed
        )
        if cfit is None:
            warnings.append(
                "coupling: the simulator's retention_coupling does not move the measured"
                " statistic with this retention fit (no spread of churn propensities):"
                " retention_coupling not written (the simulator's default applies)"
            )
        else:
            if cfit.at_bound:
                warnings.append(
                    f"coupling: the measured risk ratio {cfit.measured:.2f} lies beyond what"
                    f" retention_coupling reproduces; written at its bound {cfit.rho:g}"
                )
            full, loadable = _with_coupling(full, cfit), _with_coupling(loadable, cfit)
            if not loads(loadable):
                raise CalibrationError(
                    "the calibrated scenario does not validate; please report this"
                )
    return CommunityCalibration(
        members_path, o, counts, bass, sources, choice, act, coup, granularity, loadable, full,
        frailty, pending, tuple(warnings), tuple(notes), assumptions, cfit, profile,
    )  # fmt: skip


def _with_coupling(scenario: dict[str, Any], cf: CouplingFit) -> dict[str, Any]:
    """The scenario with `activity.retention_coupling`: normal around ρ with its SE."""
    value: Any = round(cf.rho, 4)
    if math.isfinite(cf.se) and cf.se > 0:
        value = {"mean": value, "sd": round(cf.se, 4), "min": -0.95, "max": 0.95}
    return {**scenario, "activity": {**scenario["activity"], "retention_coupling": value}}


def _spread(f: rm.RetentionFit) -> bool:
    """The fit's churn propensities differ between members (its Beta is not almost a point)."""
    from .retention import _NEAR_POINT  # the simulator's own threshold (one home)

    return f.params["alpha"] + f.params["beta"] <= _NEAR_POINT


def with_spread(choice: RetentionChoice, horizon: int, notes: list[str]) -> RetentionChoice:
    """A measured coupling says members differ in how likely they are to leave, which a Beta
    collapsed to a point denies (and through which the simulator's coupling cannot act): among
    the models within SPREAD_NATS of the best holdout score, the best one with spread."""
    if _spread(choice.fits[choice.chosen]):
        return choice
    top = choice.holdout_ll[choice.chosen]
    alt = [
        m
        for m, f in choice.fits.items()
        if _spread(f) and choice.holdout_ll[m] >= top - SPREAD_NATS
    ]
    if not alt:
        return choice
    best = max(alt, key=lambda m: choice.holdout_ll[m])
    notes.append(
        f"retention: {best} written, not {choice.chosen} (holdout log-likelihood"
        f" {choice.holdout_ll[best]:.1f} vs {top:.1f}): the activity shows members who differ in"
        f" how likely they are to leave (the coupling), which {choice.chosen}'s fit, a Beta"
        " collapsed to a point, denies"
    )
    eq = rm.equivalent_sbg(best, choice.fits[best].vector, horizon)
    return replace(choice, chosen=best, equivalent_sbg=eq)


def _activity_sample(n_members: int, n_periods: int, seed: int) -> np.ndarray | None:
    if n_members * n_periods <= MAX_ACTIVITY_CELLS:
        return None
    k = max(1, MAX_ACTIVITY_CELLS // max(n_periods, 1))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_members, size=k, replace=False))


def _subset(m: Members, rows: np.ndarray) -> Members:
    return Members(
        m.path,
        tuple(m.ids[i] for i in rows),
        m.joined[rows],
        m.left[rows],
        None if m.source is None else tuple(m.source[i] for i in rows),
        m.lines[rows],
    )


def _assumptions(o: CommunityOptions) -> tuple[str, ...]:
    if o.already_running:
        ran = ", ".join(o.already_running)
        return (
            f"retention and activity were measured while the community already ran {ran}:"
            " their effects are part of the fitted parameters, and the scenario lists them"
            " under history_includes so the simulator does not apply them a second time",
        )
    return (
        "retention and activity were measured with whatever actions the community already ran"
        " (welcomes, nudges, events): if the playbook repeats them, list their ids with"
        " --already-running so their effects are not counted twice",
    )


# -- the scenario ----------------------------------------------------------------------------


def retention_section(choice: RetentionChoice, period_days: float, *, full: bool) -> dict[str, Any]:
    """The scenario's retention: the forecast mixture's draws (with --bootstrap), else the
    chosen model (full), or its equivalent sBG (loadable)."""
    if not full:
        a, b = choice.equivalent_sbg
        return {"alpha": round(a, 4), "beta": round(b, 4), "period_days": period_days}
    mix = choice.mixture
    out: dict[str, Any]
    if mix is not None:
        # the point values are the highest-weight model's, for readers: every run draws a row
        point = as_mixture_row(mix.top, choice.fits[mix.top].vector)
        point = _in_scenario_range(point[None, :])[0]
        out = {"model": str(MIXTURE_MODEL)}
        out.update({k: float(v) for k, v in zip(MIXTURE_NAMES, point, strict=True)})
        out["period_days"] = period_days
        out["draws"] = [[float(v) for v in row] for row in mix.rows]
        return out
    f = choice.fits[choice.chosen]
    out = {"model": str(choice.chosen)}
    out.update({k: round(v, 6) for k, v in f.params.items()})
    out["period_days"] = period_days
    if choice.draws is not None:
        out["draws"] = [[round(float(v), 6) for v in row] for row in choice.draws]
    return out


def build_scenario(
    o: CommunityOptions,
    bass: BassFit | None,
    choice: RetentionChoice,
    act: ActivityFit | None,
) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
    """(full scenario, the scenario the simulator loads today, keys only the full one has)."""
    base: dict[str, Any] = {"scenario": o.name}
    if bass is not None:
        y = bass.per_year()
        # the fitted inflow is the whole inflow: no organic joins or referrals on top
        base["acquisition"] = {
            "seed_users": bass.seed_users,
            "organic_per_day": 0,
            "bass_p": round(y["bass_p"], 6),
            "bass_q": round(y["bass_q"], 6),
            "market": round(y["market"]),
            "invites_per_member_per_day": 0,
            "invite_conversion": 0,
        }
    if act is not None:
        base["activity"] = act.fragment()
    full = {**base, "retention": retention_section(choice, o.period_days, full=True)}
    if o.already_running:
        full["history_includes"] = list(o.already_running)
    if loads(full):
        return full, full, ()
    loadable = {**base, "retention": retention_section(choice, o.period_days, full=False)}
    pending = [f"retention.{k}" for k in full["retention"] if k not in loadable["retention"]]
    if "history_includes" in full:
        pending.append("history_includes")
    if not loads(loadable):  # the fits stay within the schema's ranges; a bug if not
        raise CalibrationError("the calibrated scenario does not validate; please report this")
    return full, loadable, tuple(pending)


def loads(data: dict[str, Any]) -> bool:
    """The scenario passes the schema and builds a Scenario (what `sop simulate` does)."""
    from ..core.diagnostics import Collector, Severity
    from ..lang.loader import Document
    from ..lang.schema import validator
    from .scenario import from_data

    out = Collector()
    validator("scenario.schema.json").validate(Document("calibrate", "", data), out)
    if any(d.severity == Severity.ERROR for d in out.items):
        return False
    try:
        from_data(data)
    except (TypeError, ValueError):
        return False
    return True


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else "n/a"


def _market_text(c: CommunityCalibration) -> str:
    """How m is known: given, or its profile interval (and its curvature SE)."""
    if c.options.market is not None:
        return "given by --market"
    assert c.acquisition is not None
    se = f"SE {_fmt(c.acquisition.se['m'])}"
    if c.market is None:
        return se
    lo, hi = c.market.ci95
    return f"{se}; 95% profile {lo:,.0f}..{hi:,.0f}" + ("" if c.market.bounded else ", unbounded")


def scenario_text(c: CommunityCalibration) -> str:
    """The commented scenario file."""
    import yaml

    o = c.options
    n = c.counts
    lines = [
        f"# Calibrated by `sop calibrate community` from {c.path} as of {day_text(o.as_of)},"
        f" periods of {o.period_days:g} days.",
        f"# {n['members']} members ({n['left']} left, {n['still_members']} still in), first"
        f" join {n['first_join']}.",
    ]
    if c.acquisition is not None:
        a = c.acquisition
        y = a.per_year()
        lines.append(
            f"# acquisition: Bass p={_fmt(y['bass_p'])}/year (SE {_fmt(a.se['p'] * 365)}),"
            f" q={_fmt(y['bass_q'])}/year (SE {_fmt(a.se['q'] * 365)}), market"
            f" m={y['market']:,.0f} ({_market_text(c)}); quasi-Poisson dispersion"
            f" {a.dispersion:.3g}; seed users {a.seed_users}."
        )
        lines.append(
            "#   The inflow is this Bass curve alone: organic_per_day and referrals are 0 (the"
            " fitted joins already include them)."
        )
    for s in c.sources:
        lines.append(f"#   source {s['source']}: {s['share']:.1%} ± {s['se']:.1%} of joins")
    r = c.retention
    best = max(r.holdout_ll, key=lambda m: r.holdout_ll[m])
    asked = r.forecast or r.weights if r.mixture is None else r.mixture.weights
    weights = ", ".join(f"{m} {w:.0%}" for m, w in asked.items())
    if r.mixture is not None:
        mix = r.mixture
        lines += [
            f"# retention: the forecast `sop backtest` scores, {len(mix.models)} bootstrap"
            f" draws ({o.bootstrap_kind}), a {mix.label()}, by the forecast weights"
            f" ({weights}: half each model's weight on the last {r.holdout_periods} periods,"
            " models fitted on the periods before, half spread over the models that generalise"
            " sbg).",
            "#   Every draw is written as bdw-mixture parameters (alpha, beta, c,"
            " early_quit_share; sbg: c = 1, early_quit_share = 0; sbg-mixture: c = 1; bdw:"
            " early_quit_share = 0) and each run draws one; the point values below are"
            f" {mix.top}'s fit (the highest weight), for readers. The models:",
        ]
    else:
        lines.append(
            f"# retention: {r.chosen}, chosen by the log-likelihood of the last"
            f" {r.holdout_periods} periods (models fitted on the periods before)"
            + ("" if best == r.chosen else f", the best with spread ({best} scores best)")
            + f"; the forecast `sop backtest` scores mixes the models ({weights}): give"
            " --bootstrap N to write that mixture:"
        )
    lines.append(f"#   {'model':<12} {'LL':>11} {'AIC':>10} {'holdout LL':>11}  parameters (SE)")
    for m, f in r.fits.items():
        ps = ", ".join(
            f"{k}={_fmt(v)} ({_fmt(f.se.get(k, math.nan))})" for k, v in f.params.items()
        )
        lines.append(
            f"#   {m!s:<12} {f.log_likelihood:>11.1f} {f.aic:>10.1f} {r.holdout_ll[m]:>11.1f}  {ps}"
        )
    if c.frailty is not None and c.frailty.sigma > 0:
        lines.append(
            f"#   cohorts differ: survival S(t)^exp(u), u ~ Normal(0, {c.frailty.sigma:.3g}²)"
            f" (log-likelihood +{c.frailty.log_likelihood - c.frailty.log_likelihood_0:.1f})"
        )
    if c.activity is not None:
        ac = c.activity
        lines.append(
            f"# activity: daily speaking propensity ~ Beta({_fmt(ac.speak_alpha)},"
            f" {_fmt(ac.speak_beta)}) decaying to {ac.decay_floor:.0%} with tenure"
            f" ({_fmt(ac.tenure_decay_days)} days), from {c.activity_granularity} activity"
            f" ({ac.active_share:.0%} of member-periods active)."
        )
    if c.coupling is not None:
        cp = c.coupling
        lines.append(
            f"# coupling: after a silent period a member is {cp.silent_hazard_ratio:.2f}×"
            f" (95% {cp.ci95[0]:.2f}..{cp.ci95[1]:.2f}) as likely to leave in the next as after"
            " an active one (same tenure)."
        )
    if c.coupling_fit is not None:
        cf = c.coupling_fit
        lines.append(
            f"#   the simulator reproduces it with activity.retention_coupling {cf.rho:.3f}"
            f" (SE {_fmt(cf.se)}; simulated ratio {cf.simulated:.2f} on {cf.members:,} members"
            " joining on the export's days)."
        )
    for w in c.warnings:
        lines.append(f"# WARNING: {w}")
    for n_ in c.notes:
        if n_.startswith("retention: "):  # why the model written is not the best-scoring one
            lines.append(f"# note: {n_}")
    for a_ in c.assumptions:
        lines.append(f"# assumption: {a_}")
    lines.append("# not calibrated (defaults): ugc_per_speak, violation_per_speak, conversion.")
    if c.pending:
        lines.append(
            "# The simulator does not read these keys yet: "
            + ", ".join(c.pending)
            + "; retention below is the sBG closest to the chosen model. The full section:"
        )
        full_r = dict(c.scenario_full["retention"])
        draws = full_r.pop("draws", None)
        flow = yaml.safe_dump(full_r, default_flow_style=True, sort_keys=False, width=10**6)
        lines.append("#   retention: " + flow.strip())
        if draws is not None:
            lines.append(f"#   (and {len(draws)} bootstrap draws: see --format json)")
        if "history_includes" in c.scenario_full:
            lines.append(f"#   history_includes: {c.scenario_full['history_includes']}")
    body = yaml.safe_dump(c.scenario, sort_keys=False, allow_unicode=True, default_flow_style=None)
    return "\n".join(_safe_comment(x) for x in lines) + "\n" + body


def _safe_comment(line: str) -> str:
    from ..core.textsafe import terminal

    return terminal(line)
