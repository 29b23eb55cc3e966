"""Custom metrics the scenario models: random walks that stay in their unit's range.

A modelled metric moves each day by `per_day` + `noise`·Z + `per_member`·(change in members),
from `start`. Its unit bounds it: a `ratio` stays in [0, 1], a `count`, `currency`, `days` or
`factor` at 0 or more (the walk is reflected at a bound, so it neither leaves its range nor sticks
to the bound), a `score` is unbounded; a metric declared `cumulative: true` never decreases (a
day's negative change counts as none). Without a bound the walk is the trend
start + Σ(per_day + noise·Z) + per_member·members the model always had, with the same draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.catalog import MetricUnit
from ..lang.model import Metric

if TYPE_CHECKING:
    import numpy as np

# The range of each unit: (low, high).
RANGES: Mapping[str, tuple[float, float]] = {
    MetricUnit.RATIO: (0.0, 1.0),
    MetricUnit.COUNT: (0.0, math.inf),
    MetricUnit.FACTOR: (0.0, math.inf),
    MetricUnit.DAYS: (0.0, math.inf),
    MetricUnit.CURRENCY: (0.0, math.inf),
    MetricUnit.SCORE: (-math.inf, math.inf),
}
_MEMBERS = "\0members"  # the state key of a metric's members at the last step


def bounds(metric: Metric | None) -> tuple[float, float]:
    """The range a modelled metric keeps, from its declared unit (unbounded if unknown)."""
    if metric is None:
        return (-math.inf, math.inf)
    return RANGES.get(metric.unit, (-math.inf, math.inf))


def reflect(x: Any, low: float, high: float) -> Any:
    """`x` folded into [low, high] by reflection at the bounds (a triangle wave)."""
    import numpy as np

    if math.isfinite(low) and math.isfinite(high):
        width = high - low
        if width <= 0:
            return np.full_like(x, low)
        w = np.mod(x - low, 2 * width)
        return low + np.where(w > width, 2 * width - w, w)
    if math.isfinite(low):
        return low + np.abs(x - low)
    if math.isfinite(high):
        return high - np.abs(high - x)
    return x


def start_value(metric: Metric | None, start: Any) -> Any:
    """The metric's value before day 0, within its range."""
    low, high = bounds(metric)
    if isinstance(start, float | int):
        return min(max(float(start), low), high)
    import numpy as np

    return np.clip(start, low, high)


def start_states(names: Mapping[str, Any], runs: int) -> dict[str, np.ndarray]:
    """The walks' state: each metric's value before day 0 and the members then (none)."""
    import numpy as np

    out: dict[str, np.ndarray] = {}
    for name, start in names.items():
        out[name] = np.broadcast_to(np.asarray(start, dtype=float), (runs,)).copy()
        out[name + _MEMBERS] = np.zeros(runs)
    return out


def step(
    metric: Metric | None,
    state: dict[str, np.ndarray],
    name: str,
    per_day: Any,
    noise: Any,
    per_member: Any,
    members: np.ndarray,
    z: np.ndarray,
) -> np.ndarray:
    """Today's values of a modelled metric (runs,), its state moved on in place (`z`: a
    standard normal per run)."""
    change = per_day + noise * z + per_member * (members - state[name + _MEMBERS])
    state[name + _MEMBERS] = members.astype(float)
    if metric is not None and metric.cumulative:
        import numpy as np

        change = np.maximum(change, 0.0)
    low, high = bounds(metric)
    state[name] = reflect(state[name] + change, low, high)
    out: np.ndarray = state[name]
    return out
