"""Uncertain scenario parameters: their distributions, and the values each run draws.

A scenario number may be a distribution instead (docs/simulation.md, "Parameter uncertainty"):
`{mean, sd}` normal (truncated to `min`/`max` and to the parameter's range), `{low, high}`
uniform, `{draws: [...]}` resampled; `retention.draws` holds joint rows of the retention model's
parameters (bootstrap or posterior draws, as `sop calibrate community --bootstrap` writes them).
Every run draws its parameters; two consecutive runs (2k, 2k+1) share one draw, so the spread
within pairs measures Monte Carlo error and the rest is parameter uncertainty (uncertainty.py).
Draws come from a stream derived from the chunk's own seed, so the same seed gives the same
result for any number of workers, and a scenario without distributions draws nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where it is used: `sop validate` reads scenarios too
    import numpy as np

# The scenario keys that may be distributions, by section. Channels, attributes, admission and
# points stay point values (docs/simulation.md says so); `retention.period_days` is a unit.
UNCERTAIN: Mapping[str, tuple[str, ...]] = {
    "acquisition": (
        "seed_users",
        "organic_per_day",
        "bass_p",
        "bass_q",
        "market",
        "invites_per_member_per_day",
        "invite_conversion",
        "invite_decay_days",
    ),
    "retention": ("alpha", "beta", "c", "early_quit_share"),
    "activity": (
        "speak_alpha",
        "speak_beta",
        "tenure_decay_days",
        "decay_floor",
        "ugc_per_speak",
        "violation_per_speak",
        "retention_coupling",
    ),
    "conversion": ("base_daily",),
}
METRIC_KEYS = ("start", "per_day", "noise", "per_member")  # `metrics.<name>.<key>`
# Each retention model's parameters in the order of its `retention.draws` rows: the fitter's
# `retention_models.SPECS` holds the same names (a test keeps them equal); they live here too
# because `sop validate` checks scenarios and must not import NumPy to read them.
RETENTION_PARAMETERS: Mapping[str, tuple[str, ...]] = {
    "sbg": ("alpha", "beta"),
    "sbg-mixture": ("alpha", "beta", "early_quit_share"),
    "bdw": ("alpha", "beta", "c"),
    "bdw-mixture": ("alpha", "beta", "c", "early_quit_share"),
}
MAX_DRAWS = 1000  # values of a `draws:` list, rows of `retention.draws`
# A second stream of each chunk's seed: the parameters' draws never take numbers from the
# members' stream, so a scenario without distributions simulates exactly as it did before.
PARAMETER_STREAM = 0x5C3A
REPLICATES = 2  # runs that share one parameter draw (a pair: its difference is Monte Carlo error)


class DistKind(StrEnum):
    """The shapes a scenario parameter's distribution can take."""

    NORMAL = "normal"
    UNIFORM = "uniform"
    DRAWS = "draws"


@dataclass(frozen=True)
class Dist:
    """One parameter's distribution, bounded to [lo, hi] (its `min`/`max` and its range)."""

    kind: DistKind
    mean: float = 0.0
    sd: float = 0.0
    low: float = -math.inf
    high: float = math.inf
    values: tuple[float, ...] = ()
    written: dict[str, Any] = field(default_factory=dict, compare=False)  # as the scenario has it

    @property
    def point(self) -> float:
        """The value a point forecast uses: the mean (of the draws), the uniform's middle."""
        if self.kind == DistKind.UNIFORM:
            return (self.low + self.high) / 2
        if self.kind == DistKind.DRAWS:
            return math.fsum(self.values) / len(self.values)
        return float(min(max(self.mean, self.low), self.high))

    @property
    def sd_equivalent(self) -> float:
        """Its standard deviation (for one-at-a-time sensitivity and the report)."""
        if self.kind == DistKind.UNIFORM:
            return (self.high - self.low) / math.sqrt(12)
        if self.kind == DistKind.DRAWS:
            m = self.point
            return math.sqrt(math.fsum((x - m) ** 2 for x in self.values) / len(self.values))
        return self.sd

    def quantile(self, q: float) -> float:
        """Its q-quantile (0 < q < 1): of the truncated normal, the uniform, or the draws."""
        if self.kind == DistKind.UNIFORM:
            return self.low + q * (self.high - self.low)
        if self.kind == DistKind.DRAWS:
            return quantile(self.values, q)
        if self.sd <= 0:
            return self.point
        from statistics import NormalDist

        unit = NormalDist()
        a = unit.cdf((self.low - self.mean) / self.sd) if math.isfinite(self.low) else 0.0
        b = unit.cdf((self.high - self.mean) / self.sd) if math.isfinite(self.high) else 1.0
        if b - a < 1e-12:
            return self.point
        u = min(max(a + q * (b - a), 1e-16), 1 - 1e-16)
        return min(max(self.mean + self.sd * unit.inv_cdf(u), self.low), self.high)

    def words(self) -> str:
        """As a reader reads it: `normal, mean 1.5, sd 0.4, at least 0.5 · 90%: 0.864–2.16`."""
        lo, hi = self.quantile(0.05), self.quantile(0.95)
        if self.kind == DistKind.UNIFORM:
            shape = f"uniform from {self.low:.3g} to {self.high:.3g}"
        elif self.kind == DistKind.DRAWS:
            shape = f"{len(self.values)} draws, mean {self.point:.3g}"
        else:
            shape = f"normal, mean {self.mean:.3g}, sd {self.sd:.3g}"
            if "min" in self.written or (not self.written and math.isfinite(self.low)):
                shape += f", at least {self.low:.3g}"
            if "max" in self.written or (not self.written and math.isfinite(self.high)):
                shape += f", at most {self.high:.3g}"  # the parameter's own range goes unsaid
        return f"{shape} · 90%: {lo:.3g}–{hi:.3g}"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n values: truncated normal by inversion, uniform, or draws resampled."""
        import numpy as np

        if self.kind == DistKind.UNIFORM:
            return rng.uniform(self.low, self.high, n)
        if self.kind == DistKind.DRAWS:
            return np.asarray(self.values, dtype=float)[rng.integers(0, len(self.values), n)]
        if self.sd <= 0:
            return np.full(n, self.point)
        from scipy.special import ndtr, ndtri

        a = ndtr((self.low - self.mean) / self.sd) if math.isfinite(self.low) else 0.0
        b = ndtr((self.high - self.mean) / self.sd) if math.isfinite(self.high) else 1.0
        if b - a < 1e-12:  # the range lies far in a tail: its nearer end
            return np.full(n, self.point)
        u = a + (b - a) * rng.random(n)
        x = self.mean + self.sd * ndtri(np.clip(u, 1e-16, 1 - 1e-16))
        return np.clip(x, self.low, self.high)

    def as_dict(self) -> dict[str, Any]:
        """As the scenario writes it."""
        if self.written:
            return dict(self.written)
        if self.kind == DistKind.UNIFORM:
            return {"low": self.low, "high": self.high}
        if self.kind == DistKind.DRAWS:
            return {"draws": list(self.values)}
        out: dict[str, Any] = {"mean": self.mean, "sd": self.sd}
        if math.isfinite(self.low):
            out["min"] = self.low
        if math.isfinite(self.high):
            out["max"] = self.high
        return out


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values`, interpolated between order statistics (NumPy's default)."""
    xs = sorted(values)
    if not xs:
        return math.nan
    at = q * (len(xs) - 1)
    i = min(int(at), len(xs) - 1)
    j = min(i + 1, len(xs) - 1)
    return xs[i] + (at - i) * (xs[j] - xs[i])


def is_distribution(value: Any) -> bool:
    """A scenario value written as a distribution (a mapping) rather than a number."""
    return isinstance(value, Mapping)


def parse(value: Mapping[str, Any], bounds: tuple[float, float] = (-math.inf, math.inf)) -> Dist:
    """A schema-valid distribution mapping, bounded to the parameter's range `bounds`."""
    lo, hi = bounds
    written = {k: (list(v) if isinstance(v, list | tuple) else v) for k, v in value.items()}
    if "low" in value:
        return Dist(
            DistKind.UNIFORM, low=float(value["low"]), high=float(value["high"]), written=written
        )
    if "draws" in value:
        return Dist(DistKind.DRAWS, values=tuple(float(x) for x in value["draws"]), written=written)
    low = max(lo, float(value["min"])) if "min" in value else lo
    high = min(hi, float(value["max"])) if "max" in value else hi
    mean, sd = float(value["mean"]), float(value.get("sd", 0.0))
    return Dist(DistKind.NORMAL, mean=mean, sd=sd, low=low, high=high, written=written)


def problems(value: Mapping[str, Any]) -> list[str]:
    """What makes a schema-valid distribution unusable (empty: nothing)."""
    out = []
    if "low" in value and float(value["low"]) > float(value["high"]):
        out.append(f"`low` {value['low']} is above `high` {value['high']}")
    lo, hi = value.get("min"), value.get("max")
    if lo is not None and hi is not None and float(lo) > float(hi):
        out.append(f"`min` {lo} is above `max` {hi}")
    mean = value.get("mean")
    if mean is not None and (
        (lo is not None and float(mean) < float(lo)) or (hi is not None and float(mean) > float(hi))
    ):
        out.append(f"`mean` {mean} lies outside [`min`, `max`]")
    return out


@dataclass(frozen=True)
class JointDraws:
    """`retention.draws`: rows of the retention model's parameters, resampled together."""

    names: tuple[str, ...]
    rows: tuple[tuple[float, ...], ...]

    def summary(self) -> list[tuple[str, float, float, float]]:
        """(parameter, mean, 5th, 95th percentile) of each column of the draws."""
        out = []
        for i, name in enumerate(self.names):
            col = [row[i] for row in self.rows if i < len(row)]
            if col:
                mean = math.fsum(col) / len(col)
                out.append((name, mean, quantile(col, 0.05), quantile(col, 0.95)))
        return out

    def words(self) -> str:
        """`200 joint draws · alpha mean 1.1 (90%: 0.8–1.5) · beta mean 4 (90%: 3–5.2)`."""
        cols = " · ".join(
            f"{n} mean {m:.3g} (90%: {lo:.3g}–{hi:.3g})" for n, m, lo, hi in self.summary()
        )
        return f"{len(self.rows)} joint draws · {cols}"

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """n rows, one per draw, as a column per parameter."""
        import numpy as np

        table = np.asarray(self.rows, dtype=float)
        picked = table[rng.integers(0, len(table), n)]
        return {f"retention.{name}": picked[:, i] for i, name in enumerate(self.names)}


@dataclass(frozen=True)
class RunParameters:
    """The parameter values of each run of a chunk: path -> (runs,) array (uncertain ones)."""

    values: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, path: str, default: float) -> Any:
        """The per-run values of `path`, else the scenario's point value `default`."""
        v = self.values.get(path)
        return default if v is None else v

    def column(self, path: str, default: float) -> Any:
        """As `get`, shaped (runs, 1) to broadcast over a run's members."""
        v = self.values.get(path)
        return default if v is None else v[:, None]

    def table(self) -> tuple[list[str], np.ndarray]:
        """(paths, runs x paths array) for the chunk's result."""
        import numpy as np

        names = sorted(self.values)
        if not names:
            return [], np.zeros((0, 0))
        return names, np.column_stack([self.values[n] for n in names])


def parameter_seed(seed: np.random.SeedSequence) -> np.random.SeedSequence:
    """The chunk's parameter stream: a fixed child key of the chunk's own seed."""
    import numpy as np

    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, PARAMETER_STREAM))


def draw(
    uncertain: Mapping[str, Dist],
    joint: JointDraws | None,
    runs: int,
    seed: np.random.SeedSequence,
    replicates: int = REPLICATES,
) -> RunParameters:
    """Every run's values of the uncertain parameters; runs 2k and 2k+1 share theirs."""
    import numpy as np

    if not uncertain and joint is None:
        return RunParameters()
    rng = np.random.default_rng(parameter_seed(seed))
    n = -(-runs // replicates)
    which = np.arange(runs) // replicates
    values: dict[str, np.ndarray] = {}
    for path in sorted(uncertain):  # a fixed order: the same draws whatever dict order
        values[path] = uncertain[path].sample(rng, n)[which]
    if joint is not None:
        for path, col in joint.sample(rng, n).items():
            values[path] = col[which]
    return RunParameters(values)


def draw_chunks(
    uncertain: Mapping[str, Dist],
    joint: JointDraws | None,
    specs: list[tuple[int, np.random.SeedSequence]],
) -> RunParameters:
    """`draw` for chunks `(runs, seed)` run together, stacked in order: each chunk's values are
    those it draws alone."""
    import numpy as np

    parts = [draw(uncertain, joint, runs, seed) for runs, seed in specs]
    if not parts or not parts[0].values:
        return RunParameters()
    return RunParameters({k: np.concatenate([p.values[k] for p in parts]) for k in parts[0].values})
