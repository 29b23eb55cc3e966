"""How much of a forecast's spread is parameter uncertainty, and which parameter moves each gate.

Runs 2k and 2k+1 share one draw of the scenario's uncertain parameters (parameters.py). For an
outcome Y of a run (a gate passed by its deadline: 1 or 0; a metric at the horizon), the law of
total variance splits Var(Y) = E[Var(Y | θ)] + Var(E[Y | θ]): within a pair the difference
measures the first (Monte Carlo), (Y₁ − Y₂)²/2 having exactly that mean, and the rest of Var(Y)
is the second (parameters). A gate's P(pass) is the mean over all runs, with the interval every
share of runs gets (intervals.py: Wilson's on the runs' effective number, as runs within a pair
are not independent: the same interval as the gate's own when it is decided), and a range
for P(pass | θ) over the parameter draws: a Beta with P's mean and the between-draw variance,
its 5th and 95th percentiles. Sensitivity: per gate and parameter, Spearman's rank correlation
between the parameter's draw and the pair's share of passes, and P(pass) among the pairs in the
parameter's lowest and highest third.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .intervals import Pairs, interval
from .summary import UNDECIDED, GateOutcome

MIN_PAIRS = 10  # fewer pairs say nothing useful about either part


@dataclass(frozen=True)
class Split:
    """One outcome's variance over the runs, split into Monte Carlo and parameter parts."""

    mean: float
    total: float
    monte_carlo: float
    parameters: float
    pairs: int

    @property
    def parameter_share(self) -> float | None:
        """The share of the variance that parameter uncertainty explains."""
        return self.parameters / self.total if self.total > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        share = self.parameter_share
        return {
            "mean": _r(self.mean),
            "variance": {
                "total": _r(self.total),
                "monte_carlo": _r(self.monte_carlo),
                "parameters": _r(self.parameters),
            },
            "parameter_share": None if share is None else round(share, 4),
            "pairs": self.pairs,
        }


def pairs_of(params: np.ndarray) -> np.ndarray:
    """(pairs, 2) indices of the runs (2k, 2k+1) that share their parameter draw."""
    p = Pairs.of(params)
    return np.column_stack([np.asarray(p.first, int), np.asarray(p.second, int)])


def split(y: np.ndarray, pairs: np.ndarray) -> Split | None:
    """The variance decomposition of `y` over the pairs where both runs have a value."""
    a, b = y[pairs[:, 0]], y[pairs[:, 1]]
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < MIN_PAIRS:
        return None
    both = np.concatenate([a, b])
    total = float(both.var(ddof=1))
    within = float(np.mean((a - b) ** 2) / 2)
    return Split(float(both.mean()), total, within, max(total - within, 0.0), len(a))


def _beta_range(mean: float, var: float) -> tuple[float, float]:
    """5th and 95th percentiles of the Beta with this mean and variance (P(pass | θ))."""
    if var <= 0 or mean <= 0 or mean >= 1:
        return (mean, mean)
    k = mean * (1 - mean) / var - 1
    if k <= 0:  # as spread as a proportion can be: 1 for a share `mean` of the draws, else 0
        return (0.0 if mean < 0.95 else 1.0, 1.0 if mean > 0.05 else 0.0)
    from scipy.special import betaincinv

    lo, hi = betaincinv(mean * k, (1 - mean) * k, [0.05, 0.95])
    return (float(lo), float(hi))


def passes(kinds: list[GateOutcome]) -> np.ndarray:
    """1.0 where a run passed the gate by its deadline, else 0.0 (undecided: not passing)."""
    return np.array([k is GateOutcome.ON_TIME for k in kinds], dtype=float)


def analyse(
    names: list[str],
    params: np.ndarray | None,
    kinds: dict[str, list[GateOutcome]],
    gated: list[str],
    metrics: np.ndarray,
    metric_names: list[str],
    distributions: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`uncertainty`, `sensitivity`) of a simulation's JSON document."""
    if params is None or not names or params.shape[0] < 2 * MIN_PAIRS:
        note = (
            "every scenario parameter is a point value: intervals hold Monte Carlo error only"
            if not names
            else f"fewer than {2 * MIN_PAIRS} runs: no decomposition"
        )
        return (
            {"parameters": distributions, "note": note, "gates": [], "metrics": {}},
            {"parameters": names, "gates": []},
        )
    design = Pairs.of(params)
    pairs = pairs_of(params)
    gates = []
    sens = []
    for stage in gated:
        y = passes(kinds[stage])
        s = split(y, pairs)
        if s is None:
            continue
        pair_mean = (y[pairs[:, 0]] + y[pairs[:, 1]]) / 2
        deff = design.deff(y)
        mc_lo, mc_hi = interval(int(y.sum()), len(y), deff)
        lo, hi = _beta_range(s.mean, s.parameters)
        gates.append(
            {
                "stage": stage,
                "p_pass": round(s.mean, 4),
                "monte_carlo_interval95": [round(mc_lo, 4), round(mc_hi, 4)],
                "design_effect": round(deff, 4),
                # undecided at the horizon: counted as not passing, so P is the range's low end
                "undecided_runs": sum(k in UNDECIDED for k in kinds[stage]),
                "parameter_range90": [round(lo, 4), round(hi, 4)],
                **{k: v for k, v in s.as_dict().items() if k != "mean"},
            }
        )
        sens.append(
            {
                "stage": stage,
                "p_pass": round(s.mean, 4),
                "undecided_runs": gates[-1]["undecided_runs"],
                "parameters": _ranked(names, params, pairs, pair_mean),
            }
        )
    horizon = {}
    for i, name in enumerate(metric_names):
        s = split(metrics[:, -1, i].astype(float), pairs)
        if s is not None:
            horizon[name] = s.as_dict()
    return (
        {
            "parameters": distributions,
            "draws": len(pairs),
            "runs_per_draw": 2,
            "gates": gates,
            "metrics": {"day": int(metrics.shape[1] - 1), "split": horizon},
        },
        {"parameters": names, "gates": sens},
    )


def _ranked(
    names: list[str], params: np.ndarray, pairs: np.ndarray, y: np.ndarray
) -> list[dict[str, Any]]:
    """Each parameter's rank correlation with `y` (per pair) and P(pass) in its outer thirds,
    strongest first."""
    from scipy.stats import rankdata

    out: list[dict[str, Any]] = []
    ry = rankdata(y)
    for j, name in enumerate(names):
        x = params[pairs[:, 0], j]
        rx = rankdata(x)
        rho = _pearson(rx, ry)
        lo, hi = np.quantile(x, [1 / 3, 2 / 3])
        low, high = y[x <= lo], y[x >= hi]
        out.append(
            {
                "parameter": name,
                "rank_correlation": None if rho is None else round(rho, 3),
                "p_pass_low_third": round(float(low.mean()), 4) if len(low) else None,
                "p_pass_high_third": round(float(high.mean()), 4) if len(high) else None,
            }
        )
    out.sort(key=lambda r: -abs(r["rank_correlation"] or 0.0))
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return None
    return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb))


def _r(x: float) -> float:
    return float(f"{x:.6g}")


def sensitivity_table(sensitivity: dict[str, Any], top: int = 5) -> str:
    """`sop simulate --sensitivity`: per gate, the parameters that move it most."""
    gates = sensitivity.get("gates") or []
    if not sensitivity.get("parameters"):
        return (
            "sensitivity: every scenario parameter is a point value; give distributions"
            " (e.g. `retention.beta: {mean: 1.5, sd: 0.3}`) to see which moves each gate\n"
        )
    lines = ["sensitivity: rank correlation of each drawn parameter with passing by the deadline"]
    lines.append(f"{'gate':<16} {'parameter':<38} {'rank corr':>9}  P(pass) low→high third")
    alike = []
    for g in gates:
        if all(p["rank_correlation"] is None for p in g["parameters"]):
            alike.append(f"{g['stage']} ({_p_words(g)})")
            continue
        for i, p in enumerate(g["parameters"][:top]):
            rho = p["rank_correlation"]
            lo, hi = p["p_pass_low_third"], p["p_pass_high_third"]
            lines.append(
                f"{g['stage'] if i == 0 else '':<16} {p['parameter']:<38}"
                f" {'—' if rho is None else f'{rho:+.2f}':>9}"
                f"  {_pct(lo)} → {_pct(hi)}"
            )
    if alike:
        lines.append(f"the same in every run, whatever the draws: {', '.join(alike)}")
    if not gates:
        lines.append("(no gate was decided in enough runs)")
    return "\n".join(lines) + "\n"


def _p_words(g: dict[str, Any]) -> str:
    """`45%`, or `0%, 198 runs undecided` while the horizon leaves runs undecided."""
    n = g.get("undecided_runs") or 0
    return f"{g['p_pass']:.0%}" + (f", {n} runs undecided" if n else "")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"
