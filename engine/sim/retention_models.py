"""Retention models of lifetimes in whole periods: sBG, sBG with early quitters, and BdW.

Pure functions of (model, natural parameters, periods), maximum-likelihood fits on a table of
lifetimes from any number of cohorts (right-censored, and left-truncated for a holdout), standard
errors from the observed information, and bootstrap draws of the parameters.

- `sbg`: each member's churn probability per period θ ~ Beta(α, β), P(T = t | θ) = θ(1 − θ)^{t−1},
  so S(t) = B(α, β + t) / B(α, β) (Fader & Hardie 2007, "How to project customer retention");
- `sbg-mixture`: a share π quits in period 1 for sure, the others follow sBG:
  S(t) = (1 − π)·B(α, β + t) / B(α, β) for t ≥ 1;
- `bdw`: beta-discrete-Weibull, S(t | θ) = (1 − θ)^{t^c}, so S(t) = B(α, β + t^c) / B(α, β)
  (Fader, Hardie, Liu, Davin & Steenburgh 2018, "How to project customer retention revisited");
  c > 1: each member's hazard rises with tenure, c < 1: it falls, c = 1: sBG.

A period is `period_days` days of a member's own tenure: T = t means the member left during their
t-th period; S(t) = P(T > t) is the share still a member after t whole periods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class RetentionModel(StrEnum):
    """The retention models a scenario can name."""

    SBG = "sbg"
    SBG_MIXTURE = "sbg-mixture"
    BDW = "bdw"
    BDW_MIXTURE = "bdw-mixture"


class Scale(StrEnum):
    """How a parameter is transformed for the optimiser (and for its normal approximation)."""

    LOG = "log"
    LOGIT = "logit"


@dataclass(frozen=True)
class ModelSpec:
    """A model's parameters: names, scales, bounds on the transformed scale, and fit starts."""

    model: RetentionModel
    names: tuple[str, ...]
    scales: tuple[Scale, ...]
    bounds: tuple[tuple[float, float], ...]
    starts: tuple[tuple[float, ...], ...]  # natural scale


# log α and log β within e^-10 .. e^17 (as the sBG calibrator); c within e^-4 .. e^3 (0.018 to
# 20: beyond, a period is all-or-nothing); π within logit ±12 (6e-6 .. 0.999994).
_AB = ((-10.0, 17.0), (-10.0, 17.0))
_AB_STARTS = ((1.0, 1.0), (0.5, 2.0), (2.0, 10.0), (0.2, 0.5))
SPECS: dict[RetentionModel, ModelSpec] = {
    RetentionModel.SBG: ModelSpec(
        RetentionModel.SBG, ("alpha", "beta"), (Scale.LOG, Scale.LOG), _AB, _AB_STARTS
    ),
    RetentionModel.SBG_MIXTURE: ModelSpec(
        RetentionModel.SBG_MIXTURE,
        ("alpha", "beta", "early_quit_share"),
        (Scale.LOG, Scale.LOG, Scale.LOGIT),
        (*_AB, (-12.0, 12.0)),
        tuple((a, b, pi) for a, b in _AB_STARTS for pi in (0.1, 0.4)),
    ),
    RetentionModel.BDW: ModelSpec(
        RetentionModel.BDW,
        ("alpha", "beta", "c"),
        (Scale.LOG, Scale.LOG, Scale.LOG),
        (*_AB, (-4.0, 3.0)),
        tuple((a, b, c) for a, b in _AB_STARTS for c in (0.7, 1.5)),
    ),
    RetentionModel.BDW_MIXTURE: ModelSpec(
        RetentionModel.BDW_MIXTURE,
        ("alpha", "beta", "c", "early_quit_share"),
        (Scale.LOG, Scale.LOG, Scale.LOG, Scale.LOGIT),
        (*_AB, (-4.0, 3.0), (-12.0, 12.0)),
        tuple((a, b, c, pi) for a, b in _AB_STARTS[:2] for c in (0.7, 1.5) for pi in (0.1, 0.3)),
    ),
}


def _weibull(model: RetentionModel) -> bool:
    """The model has a duration-dependence shape c (its third parameter)."""
    return model in (RetentionModel.BDW, RetentionModel.BDW_MIXTURE)


def _quit_index(model: RetentionModel) -> int | None:
    """Where the early-quitter share sits among the model's parameters, if it has one."""
    names = SPECS[model].names
    return names.index("early_quit_share") if "early_quit_share" in names else None


def to_x(model: RetentionModel, params: Any) -> np.ndarray:
    """Natural parameters -> the optimiser's scale."""
    p = np.asarray(params, dtype=float)
    out = np.empty_like(p)
    for i, s in enumerate(SPECS[model].scales):
        out[i] = math.log(p[i]) if s == Scale.LOG else math.log(p[i] / (1 - p[i]))
    return out


def from_x(model: RetentionModel, x: Any) -> np.ndarray:
    """The optimiser's scale -> natural parameters."""
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    for i, s in enumerate(SPECS[model].scales):
        out[i] = math.exp(x[i]) if s == Scale.LOG else 1 / (1 + math.exp(-x[i]))
    return out


# -- curves ------------------------------------------------------------------------------------


def log_survival(model: RetentionModel, params: Any, t: Any) -> np.ndarray:
    """ln S(t) = ln P(T > t) at periods t >= 0 (whole or not)."""
    from scipy.special import betaln

    p = np.asarray(params, dtype=float)
    t = np.asarray(t, dtype=float)
    a, b = p[0], p[1]
    tt = t ** p[2] if _weibull(model) else t
    ls = betaln(a, b + tt) - betaln(a, b)
    q = _quit_index(model)
    if q is not None:
        ls = np.where(t >= 1, ls + math.log1p(-p[q]), 0.0)
    return np.asarray(ls, dtype=float)


def survival(model: RetentionModel, params: Any, t: Any) -> np.ndarray:
    """S(t): the share of a cohort still members after t periods."""
    return np.exp(log_survival(model, params, t))


def log_pmf(model: RetentionModel, params: Any, t: Any) -> np.ndarray:
    """ln P(T = t) for whole periods t >= 1: ln(S(t − 1) − S(t)), computed without cancellation."""
    t = np.asarray(t, dtype=float)
    prev, now = log_survival(model, params, t - 1), log_survival(model, params, t)
    with np.errstate(divide="ignore"):
        return np.asarray(prev + np.log(-np.expm1(now - prev)), dtype=float)


def hazard(model: RetentionModel, params: Any, t: Any) -> np.ndarray:
    """h(t) = P(T = t | T >= t): the share of period t's starters who leave in it."""
    t = np.asarray(t, dtype=float)
    return np.asarray(
        -np.expm1(log_survival(model, params, t) - log_survival(model, params, t - 1)),
        dtype=float,
    )


# -- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SurvivalTable:
    """Lifetimes in periods, identical rows merged with a weight.

    A row: members observed from `entry` whole periods survived (0: from joining) to `exit`,
    which is the period they left in (`event`) or the last whole period they were seen to
    complete (censored). `cluster` is the row's cohort, for a bootstrap that resamples cohorts.
    """

    entry: np.ndarray
    exit: np.ndarray
    event: np.ndarray
    weight: np.ndarray
    cluster: np.ndarray

    @staticmethod
    def from_members(
        entry: Any, exit: Any, event: Any, cluster: Any = None, weight: Any = None
    ) -> SurvivalTable:
        """Merge per-member rows; rows that carry no information (exit == entry, censored) stay."""
        e = np.asarray(entry, dtype=np.int64)
        x = np.asarray(exit, dtype=np.int64)
        ev = np.asarray(event, dtype=bool)
        cl = np.zeros_like(e) if cluster is None else np.asarray(cluster, dtype=np.int64)
        w = np.ones(len(e)) if weight is None else np.asarray(weight, dtype=float)
        if len(e) and ((x < e).any() or (ev & (x <= e)).any() or (e < 0).any()):
            raise ValueError("each row needs 0 <= entry <= exit, and entry < exit for an event")
        if not len(e):
            z = np.zeros(0, dtype=np.int64)
            return SurvivalTable(z, z, np.zeros(0, dtype=bool), np.zeros(0), z)
        keys = np.column_stack([cl, e, x, ev.astype(np.int64)])
        rows, inv = np.unique(keys, axis=0, return_inverse=True)
        ws = np.bincount(inv.ravel(), weights=w, minlength=len(rows))
        keep = ws > 0
        rows, ws = rows[keep], ws[keep]
        return SurvivalTable(rows[:, 1], rows[:, 2], rows[:, 3].astype(bool), ws, rows[:, 0])

    @staticmethod
    def from_survivors(survivors: Any) -> SurvivalTable:
        """One cohort's survivors at the start of each period (the last ones right-censored)."""
        s = np.asarray(survivors, dtype=float)
        lost = s[:-1] - s[1:]
        n = len(lost)
        t = np.arange(1, n + 1)
        return SurvivalTable.from_members(
            np.zeros(n + 1, dtype=np.int64),
            np.concatenate([t, [n]]),
            np.concatenate([np.ones(n, dtype=bool), [False]]),
            weight=np.concatenate([lost, [s[-1]]]),
        )

    @property
    def n(self) -> float:
        """Members (total weight)."""
        return float(self.weight.sum())

    @property
    def horizon(self) -> int:
        """The longest exit period."""
        return int(self.exit.max()) if len(self.exit) else 0

    @property
    def events(self) -> float:
        """Members seen to leave."""
        return float(self.weight[self.event].sum())

    def reweighted(self, weight: np.ndarray) -> SurvivalTable:
        """The same rows with other weights (zero-weight rows dropped)."""
        keep = weight > 0
        return SurvivalTable(
            self.entry[keep], self.exit[keep], self.event[keep], weight[keep], self.cluster[keep]
        )


def log_likelihood(model: RetentionModel, params: Any, table: SurvivalTable) -> float:
    """Σ w·[ln P(T = exit) if left, else ln S(exit)] − Σ w·ln S(entry)."""
    return float(table.weight @ row_log_likelihood(model, params, table))


def row_log_likelihood(model: RetentionModel, params: Any, table: SurvivalTable) -> np.ndarray:
    """Each row's log-likelihood for one of its members (weights not applied)."""
    h = table.horizon
    ls = log_survival(model, params, np.arange(h + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.concatenate(([-np.inf], ls[:-1] + np.log(-np.expm1(ls[1:] - ls[:-1]))))
    return np.asarray(
        np.where(table.event, lp[table.exit], ls[table.exit]) - ls[table.entry], dtype=float
    )


def _log_survival_grad(
    model: RetentionModel, p: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ln S(t) and its gradient in the natural parameters, shape (len(t), k)."""
    from scipy.special import betaln, digamma

    a, b = p[0], p[1]
    if _weibull(model):
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = t ** p[2]
            dtau = np.where(t > 0, tau * np.log(np.where(t > 0, t, 1.0)), 0.0)
    else:
        tau = t
    ls = betaln(a, b + tau) - betaln(a, b)
    d_ab = digamma(a + b) - digamma(a + b + tau)
    d_tau = digamma(b + tau) - digamma(a + b + tau)
    g = np.zeros((len(t), len(p)))
    g[:, 0] = d_ab
    g[:, 1] = d_tau - digamma(b) + digamma(a + b)
    if _weibull(model):
        g[:, 2] = d_tau * dtau
    q = _quit_index(model)
    if q is not None:
        later = t >= 1
        ls = np.where(later, ls + math.log1p(-p[q]), 0.0)
        g *= later[:, None]
        g[:, q] = np.where(later, -1 / (1 - p[q]), 0.0)
    return ls, g


def log_likelihood_grad(
    model: RetentionModel, params: Any, table: SurvivalTable
) -> tuple[float, np.ndarray]:
    """The log-likelihood and its gradient in the natural parameters."""
    p = np.asarray(params, dtype=float)
    h = table.horizon
    ls, g = _log_survival_grad(model, p, np.arange(h + 1, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = np.exp(ls[1:] - ls[:-1])  # S(t) / S(t − 1)
        lp = np.concatenate(([-np.inf], ls[:-1] + np.log(-np.expm1(ls[1:] - ls[:-1]))))
        # d ln(S(t−1) − S(t)) = (d ln S(t−1) − r·d ln S(t)) / (1 − r)
        gp = (g[:-1] - r[:, None] * g[1:]) / (1 - r)[:, None]
    gp = np.concatenate([np.zeros((1, len(p))), gp])
    ev = table.event
    contrib = np.where(ev, lp[table.exit], ls[table.exit]) - ls[table.entry]
    gc = np.where(ev[:, None], gp[table.exit], g[table.exit]) - g[table.entry]
    w = table.weight
    return float(w @ contrib), w @ gc


# -- fits --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionFit:
    """A model fitted by maximum likelihood, with standard errors from the observed information."""

    model: RetentionModel
    params: dict[str, float]
    log_likelihood: float
    n: float
    x: tuple[float, ...]  # the estimate on the optimiser's scale
    cov_x: tuple[tuple[float, ...], ...] | None  # its covariance (None: information singular)
    at_bound: tuple[str, ...] = ()
    se: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Number of parameters."""
        return len(self.params)

    @property
    def aic(self) -> float:
        """Akaike's information criterion, 2k − 2 ln L."""
        return 2 * self.k - 2 * self.log_likelihood

    @property
    def vector(self) -> np.ndarray:
        """The natural parameters in the model's order."""
        return np.array(list(self.params.values()))

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "model": str(self.model),
            "params": dict(self.params),
            "se": dict(self.se),
            "ci95": {k: list(v) for k, v in self.ci95.items()},
            "log_likelihood": self.log_likelihood,
            "aic": self.aic,
            "n": self.n,
            "at_bound": list(self.at_bound),
        }


class FitFailed(Exception):
    """No start of the optimiser reached a finite likelihood."""


def _chain(model: RetentionModel, x: np.ndarray) -> np.ndarray:
    """d(natural)/d(x): θ for a log parameter, π(1 − π) for a logit one."""
    nat = from_x(model, x)
    return np.array(
        [
            v if s == Scale.LOG else v * (1 - v)
            for v, s in zip(nat, SPECS[model].scales, strict=True)
        ]
    )


def _objective(model: RetentionModel, table: SurvivalTable) -> Any:
    """−ln L per member and its gradient on the optimiser's scale."""
    n = max(table.n, 1e-300)

    def nll(x: np.ndarray) -> tuple[float, np.ndarray]:
        with np.errstate(all="ignore"):
            ll, g = log_likelihood_grad(model, from_x(model, x), table)
            gx = -g * _chain(model, x) / n
        if not (math.isfinite(ll) and np.isfinite(gx).all()):
            return 1e6, np.zeros(len(x))
        return -ll / n, gx

    return nll


def fit(
    model: RetentionModel,
    table: SurvivalTable,
    *,
    starts: tuple[tuple[float, ...], ...] | None = None,
    with_se: bool = True,
) -> RetentionFit:
    """Maximum likelihood from several starts (SLSQP, exact gradients, log/logit scale)."""
    from scipy.optimize import minimize

    spec = SPECS[model]
    nll = _objective(model, table)
    if starts is None:
        starts = spec.starts
        if model != RetentionModel.SBG:  # nested: start where sBG is best, so LL >= sBG's
            base = fit(RetentionModel.SBG, table, with_se=False).vector
            extra = {
                RetentionModel.SBG_MIXTURE: (0.05,),
                RetentionModel.BDW: (1.0,),
                RetentionModel.BDW_MIXTURE: (1.0, 0.05),
            }[model]
            starts = ((*base, *extra), *starts)
    lo = np.array([b[0] for b in spec.bounds])
    hi = np.array([b[1] for b in spec.bounds])
    best: Any = None
    agree = 0
    for s in starts:
        # SLSQP, not L-BFGS-B: the same optima here, and L-BFGS-B's small BLAS calls cost
        # milliseconds each on a busy multi-threaded OpenBLAS (a bootstrap ran 20× slower)
        r = minimize(
            nll,
            np.clip(to_x(model, s), lo, hi),
            jac=True,
            method="SLSQP",
            bounds=spec.bounds,
            options={"ftol": 1e-15, "maxiter": 500},
        )
        if not math.isfinite(r.fun):
            continue
        tol = 1e-10 * max(1.0, abs(r.fun))
        if best is None or r.fun < best.fun - tol:
            best, agree = r, 0
        elif r.fun <= best.fun + tol:
            agree += 1
            best = r if r.fun < best.fun else best
            if agree >= 2:  # three starts found the same maximum: the rest would too
                break
    if best is None or best.fun >= 1e6:
        raise FitFailed(f"the {model} fit found no finite likelihood")
    x = np.clip(best.x, lo, hi)
    return _finish(model, table, x, with_se)


def _finish(
    model: RetentionModel, table: SurvivalTable, x: np.ndarray, with_se: bool
) -> RetentionFit:
    spec = SPECS[model]
    nat = from_x(model, x)
    ll = log_likelihood(model, nat, table)
    at_bound = tuple(
        name
        for name, xi, (lo, hi) in zip(spec.names, x, spec.bounds, strict=True)
        if xi - lo < 1e-3 or hi - xi < 1e-3
    )
    cov = None
    se: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    if with_se:
        cov = observed_covariance(model, table, x)
        for i, name in enumerate(spec.names):
            sd = math.sqrt(cov[i, i]) if cov is not None and cov[i, i] >= 0 else math.nan
            lo = _back(spec.scales[i], x[i] - 1.96 * sd)
            hi = _back(spec.scales[i], x[i] + 1.96 * sd)
            # delta method: the natural-scale SE of a log (logit) parameter is θ·sd (π(1 − π)·sd)
            d = nat[i] if spec.scales[i] == Scale.LOG else nat[i] * (1 - nat[i])
            se[name] = float(d * sd)
            ci[name] = (lo, hi)
    return RetentionFit(
        model,
        {n: float(v) for n, v in zip(spec.names, nat, strict=True)},
        ll,
        table.n,
        tuple(float(v) for v in x),
        None if cov is None else tuple(tuple(float(v) for v in row) for row in cov),
        at_bound,
        se,
        ci,
    )


def _back(scale: Scale, x: float) -> float:
    if not math.isfinite(x):
        return math.nan
    # a flat likelihood gives an SD of thousands: clamp before exp (an interval of (0, 1))
    x = min(max(x, -700.0), 700.0)
    return math.exp(x) if scale == Scale.LOG else 1 / (1 + math.exp(-x))


def observed_covariance(
    model: RetentionModel, table: SurvivalTable, x: np.ndarray
) -> np.ndarray | None:
    """The inverse of the observed information (numerical Hessian of −ln L) on the fit's scale."""
    k = len(x)
    n = table.n

    def grad(z: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            _, g = log_likelihood_grad(model, from_x(model, z), table)
        return np.asarray(-g * _chain(model, z))

    # central differences of the exact gradient, symmetrised
    h = 1e-5 * np.maximum(1.0, np.abs(x))
    hess = np.empty((k, k))
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = h[i]
        hess[i] = (grad(x + ei) - grad(x - ei)) / (2 * h[i])
    hess = (hess + hess.T) / 2
    if not np.isfinite(hess).all() or n <= 0:
        return None
    try:
        np.linalg.cholesky(hess)
    except np.linalg.LinAlgError:
        return None  # not a proper maximum (a ridge, or a parameter at its bound)
    return np.asarray(np.linalg.inv(hess))


class BootstrapKind(StrEnum):
    """How bootstrap draws are made."""

    MEMBERS = "members"  # resample members: a refit per draw
    COHORTS = "cohorts"  # resample whole cohorts: between-cohort differences count too
    PARAMETRIC = "parametric"  # normal on the fit's scale with the observed-information covariance


def bootstrap(
    fitted: RetentionFit,
    table: SurvivalTable,
    draws: int,
    rng: np.random.Generator,
    kind: BootstrapKind = BootstrapKind.MEMBERS,
) -> np.ndarray:
    """`draws` parameter vectors (natural scale), one per row."""
    model = fitted.model
    spec = SPECS[model]
    lo = np.array([b[0] for b in spec.bounds])
    hi = np.array([b[1] for b in spec.bounds])
    x0 = np.array(fitted.x)
    if kind == BootstrapKind.PARAMETRIC:
        if fitted.cov_x is None:
            return np.tile(fitted.vector, (draws, 1))
        xs = rng.multivariate_normal(x0, np.array(fitted.cov_x), size=draws)
        xs = np.clip(xs, lo, hi)
        return np.array([from_x(model, x) for x in xs])
    out = []
    total = round(table.n)
    clusters = np.unique(table.cluster)
    for _ in range(draws):
        if kind == BootstrapKind.COHORTS and len(clusters) > 1:
            picks = rng.multinomial(len(clusters), np.full(len(clusters), 1 / len(clusters)))
            mult = np.zeros(int(clusters.max()) + 1)
            mult[clusters] = picks
            w = table.weight * mult[table.cluster]
        else:
            w = rng.multinomial(total, table.weight / table.weight.sum()).astype(float)
        t = table.reweighted(w)
        try:
            start = (tuple(fitted.vector),)
            out.append(fit(model, t, starts=start, with_se=False).vector)
        except FitFailed:
            out.append(fitted.vector)
    return np.array(out)


# -- simulation ------------------------------------------------------------------------------


def sample_lifetimes(
    model: RetentionModel,
    params: Any,
    entry: Any,
    rng: np.random.Generator,
    horizon: int,
    scale: Any = None,
) -> np.ndarray:
    """Whole-period lifetimes T of members known to have survived `entry` periods.

    Given the population's parameters members are independent, so a member seen in after
    e periods has P(T > t) = S(t) / S(e). A fractional e (a period partly lived) reads S between
    whole periods log-linearly: a constant hazard within a period. `scale`: each member's
    cohort frailty e^u (survival S^{e^u}). A lifetime beyond `horizon` is horizon + 1.
    """
    e = np.minimum(np.asarray(entry, dtype=float), horizon)
    ls = log_survival(model, params, np.arange(horizon + 2))
    lo = np.floor(e).astype(np.int64)
    frac = e - lo
    k = np.ones(len(e)) if scale is None else np.asarray(scale, dtype=float)
    ls_e = ls[lo] + frac * (ls[lo + 1] - ls[lo])
    u = rng.random(len(e))
    with np.errstate(divide="ignore"):
        # with a cohort's scale k, S_k = S^k: the first t with k·ln S(t) < ln u + k·ln S(e)
        target = np.log(u) / k + ls_e
    t = np.searchsorted(-ls[: horizon + 1], -target, side="right")
    return np.maximum(t, lo + 1)


def simulate_individuals(
    model: RetentionModel, params: Any, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Lifetimes of n members drawn by the model's own story: θ_i ~ Beta, then per member."""
    p = np.asarray(params, dtype=float)
    theta = np.clip(rng.beta(p[0], p[1], n), 1e-300, 1 - 1e-16)
    u = rng.random(n)
    c = p[2] if _weibull(model) else 1.0
    # P(T > t | θ) = (1 − θ)^{t^c}: T is the first whole t with t^c >= ln u / ln(1 − θ)
    z = np.log(u) / np.log1p(-theta)
    t = np.maximum(np.ceil(np.power(z, 1 / c) - 1e-12), 1)
    q = _quit_index(model)
    if q is not None:
        t = np.where(rng.random(n) < p[q], 1, t)
    return np.minimum(t, 2**62).astype(np.int64)


def equivalent_sbg(model: RetentionModel, params: Any, horizon: int) -> tuple[float, float]:
    """The sBG (α, β) closest to the model's curve over `horizon` periods (Kullback–Leibler)."""
    if model == RetentionModel.SBG:
        p = np.asarray(params, dtype=float)
        return float(p[0]), float(p[1])
    return closest_sbg(survival(model, params, np.arange(1, horizon + 1)))


def closest_sbg(curve: Any) -> tuple[float, float]:
    """The sBG (α, β) closest to a survival curve S(1), …, S(H) (Kullback–Leibler).

    The curve is read as a cohort (leavings S(t − 1) − S(t), the rest censored at H), and sBG
    is fitted to it by maximum likelihood: the projection that keeps each period's leavers.
    """
    s = np.concatenate([[1.0], np.minimum.accumulate(np.clip(np.asarray(curve, float), 0, 1))])
    h = len(s) - 1
    t = np.arange(1, h + 1)
    table = SurvivalTable.from_members(
        np.zeros(h + 1, dtype=np.int64),
        np.concatenate([t, [h]]),
        np.concatenate([np.ones(h, dtype=bool), [False]]),
        weight=np.concatenate([s[:-1] - s[1:], [s[-1]]]) * 10_000,
    )
    f = fit(RetentionModel.SBG, table, with_se=False)
    return f.params["alpha"], f.params["beta"]


# -- cohort frailty ------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortFrailty:
    """Cohorts that differ: cohort c's survival is S(t)^{e^{u_c}}, u_c ~ Normal(0, σ²).

    A cohort brought by a campaign may leave faster than one that came by word of mouth; the
    share a model fitted to all cohorts cannot tell. With the model's parameters fixed, σ is
    the maximum of the marginal likelihood (u integrated by Gauss–Hermite quadrature), and each
    cohort's own history gives its posterior over u (on the quadrature nodes): a cohort that has
    kept its members so far is forecast to keep more of them.
    """

    sigma: float
    log_likelihood: float  # marginal, at σ
    log_likelihood_0: float  # at σ = 0 (no frailty)
    nodes: tuple[float, ...]  # standard normal nodes z_j (u = σ·z)
    weights: tuple[float, ...]  # their prior weights
    posterior: dict[int, tuple[float, ...]]  # cohort -> posterior weights of the nodes

    def draw(self, cohorts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """u for each cohort id in `cohorts`: from its posterior if seen, else from the prior."""
        z = np.array(self.nodes)
        prior = np.array(self.weights)
        out = np.empty(len(cohorts))
        for i, c in enumerate(cohorts):
            w = np.array(self.posterior[int(c)]) if int(c) in self.posterior else prior
            out[i] = self.sigma * z[rng.choice(len(z), p=w / w.sum())]
        return out


def _cohort_node_ll(
    model: RetentionModel, params: Any, table: SurvivalTable, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(cohort ids, log-likelihood of each cohort at each scale e^u): shape (cohorts, nodes)."""
    h = table.horizon
    ls = log_survival(model, params, np.arange(h + 1))
    scaled = np.exp(u)[:, None] * ls[None, :]  # (nodes, h + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = scaled[:, :-1] + np.log(-np.expm1(scaled[:, 1:] - scaled[:, :-1]))
    lp = np.concatenate([np.full((len(u), 1), -np.inf), lp], axis=1)
    contrib = np.where(table.event[None, :], lp[:, table.exit], scaled[:, table.exit])
    contrib = (contrib - scaled[:, table.entry]) * table.weight[None, :]
    ids, inv = np.unique(table.cluster, return_inverse=True)
    per = np.zeros((len(ids), len(u)))
    np.add.at(per, inv.ravel(), contrib.T)
    return ids, per


def cohort_frailty(
    model: RetentionModel, params: Any, table: SurvivalTable, nodes: int = 21
) -> CohortFrailty:
    """σ of the cohort frailty by maximum marginal likelihood, and each cohort's posterior."""
    from numpy.polynomial.hermite_e import hermegauss
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    z, w = hermegauss(nodes)
    w = w / w.sum()
    lw = np.log(w)

    def marginal(sigma: float) -> tuple[float, np.ndarray, np.ndarray]:
        ids, per = _cohort_node_ll(model, params, table, sigma * z)
        return float(logsumexp(per + lw[None, :], axis=1).sum()), ids, per

    ll0 = marginal(0.0)[0]
    r = minimize_scalar(
        lambda ls: -marginal(math.exp(ls))[0], bounds=(math.log(1e-3), math.log(3.0)),
        method="bounded", options={"xatol": 1e-4},
    )  # fmt: skip
    sigma = math.exp(r.x)
    ll, ids, per = marginal(sigma)
    if ll < ll0:
        sigma, ll = 0.0, ll0
        ids, per = _cohort_node_ll(model, params, table, 0.0 * z)
    post = per + lw[None, :]
    post = np.exp(post - post.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    return CohortFrailty(
        sigma,
        ll,
        ll0,
        tuple(float(v) for v in z),
        tuple(float(v) for v in w),
        {int(c): tuple(float(v) for v in row) for c, row in zip(ids, post, strict=True)},
    )
