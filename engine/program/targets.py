"""Targets (`targets:`, `metrics.<id>.target`): whether a metric meets its goal, how far along it
is, and by which day it is judged, once for plan, simulate, status and the dashboard.

`at_least` (the default): met when value >= goal; `at_most`: met when value <= goal. An
undefined value (NaN) meets nothing and has no progress. Values may be floats or arrays.
"""

from __future__ import annotations

import math
from typing import Any

from ..lang.model import Playbook, Target

# What a target without `by` is due at, in words: the last day of whichever plan, simulation or
# run judges it (`due_day(t, horizon_days)`), so it has no date of its own.
END_OF_HORIZON = "end of horizon"


def targets(pb: Playbook) -> dict[str, Target]:
    """Every target of a playbook by metric (`metrics.*.target` is merged in by the builder)."""
    return dict(pb.targets)


def due_day(target: Target, horizon_days: int) -> int:
    """The day (since the start) by which the target is judged: `by`, else the horizon."""
    if target.by is None:
        return horizon_days
    return max(0, math.ceil(target.by.total_seconds() / 86400))


def met(value: Any, target: Target) -> Any:
    """Whether `value` meets the target (NaN: no)."""
    import numpy as np

    v = np.asarray(value, dtype=float)
    ok = (v <= target.value) if target.at_most else (v >= target.value)
    return bool(ok) if np.ndim(ok) == 0 else ok


def shortfall(value: Any, target: Target) -> Any:
    """How far `value` is from the goal, in the metric's unit (0 when met, NaN undefined)."""
    import numpy as np

    v = np.asarray(value, dtype=float)
    gap = (v - target.value) if target.at_most else (target.value - v)
    out = np.where(np.isnan(gap), np.nan, np.maximum(gap, 0.0))
    return float(out) if np.ndim(out) == 0 else out


def progress(value: Any, target: Target) -> Any:
    """The fraction of the way to the goal, 0..1 (NaN undefined).

    `at_least`: value / goal (a goal of 0 or less: 1 once met); `at_most`: 1 when met, else
    goal / value (twice the allowed churn is half-way).
    """
    import numpy as np

    v = np.asarray(value, dtype=float)
    g = float(target.value)
    with np.errstate(divide="ignore", invalid="ignore"):
        if target.at_most:
            frac = np.where(v <= g, 1.0, g / np.where(v > 0, v, np.nan))
        elif g <= 0:
            frac = np.where(v >= g, 1.0, 0.0)
        else:
            frac = v / g
    out = np.where(np.isnan(v), np.nan, np.clip(frac, 0.0, 1.0))
    return float(out) if np.ndim(out) == 0 else out


def describe(target: Target) -> str:
    """The target as text, a percentage as written: `>= 500 by day 90`, `<= 10%`."""
    op = "<=" if target.at_most else ">="
    by = f" by day {due_day(target, 0)}" if target.by is not None else ""
    value = f"{target.value * 100:g}%" if target.percent else f"{target.value:g}"  # as written
    return f"{op} {value}{by}"
