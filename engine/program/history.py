"""A metric's daily history, and what a community condition reads of it: window functions
(`avg(x, 7d)`, `min`, `max`) and `for:` holds (a condition true on each of the last N days).

A history maps a metric name to its values of closed days, day 0 first and the day just closed
last, on the last axis: one community's list of floats (the runtime) or an array of runs by days
(the simulator, `ArrayHistory` over its metric array without copying). Every function takes
either and answers in the same shape less the day axis, with the same arithmetic: a window's
values are combined left to right, one day at a time, so a forecast and a live check of the
same history agree to the last bit.

Undefined (NaN) rules: a window is undefined while fewer than its days have closed, or when any
value in it is undefined, so a gate cannot pass on a partial window; a condition that reads an
undefined value does not hold on that day (engine/program/truth.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..core import expr as ex
from .lifecycle import hold_days
from .truth import truth

if TYPE_CHECKING:
    import numpy as np

History = Mapping[str, Any]  # metric -> values by day (last axis), the latest closed day last
DAYS_IN_STAGE = "days_in_stage"  # per stage, not per community: passed beside the history


class ArrayHistory(Mapping[str, Any]):
    """A history over an array (..., days, metrics) and the metrics' column index; no copy."""

    def __init__(self, values: Any, index: Mapping[str, int]) -> None:
        self.array = values
        self.index = index

    def __getitem__(self, name: str) -> Any:
        return self.array[..., self.index[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


def from_days(days: Sequence[Mapping[str, float]]) -> dict[str, list[float]]:
    """A history from one mapping of metric values per closed day (day 0 first)."""
    names = dict.fromkeys(n for d in days for n in d)
    return {n: [float(d.get(n, math.nan)) for d in days] for n in names}


def _series(history: History, name: str, tail: int | None = None) -> np.ndarray:
    """A metric's values by day (the last `tail` days only: a check reads a few of them, and
    converting a whole history every day costs as much as the history is long)."""
    import numpy as np

    values = history.get(name)
    if values is None:
        return np.full(0, np.nan)  # unknown to this history: no day has a value
    if tail is not None and tail >= 1:
        values = values[..., -tail:] if hasattr(values, "shape") else list(values)[-tail:]
    return np.asarray(values, dtype=float)


def _padded(arr: np.ndarray, days: int) -> np.ndarray:
    """The last `days` values on the last axis, NaN in front where history is shorter."""
    import numpy as np

    have = arr.shape[-1]
    if have >= days:
        return arr[..., have - days :]
    pad = np.full((*arr.shape[:-1], days - have), np.nan)
    return np.concatenate([pad, arr], axis=-1)


def rolling(op: str, series: Any, days: int, last: int = 1) -> Any:
    """`op` (avg|min|max) over the `days` days ending on each of the `last` latest days.

    Shape (..., last); the window ending on a day with fewer than `days` days of history, or
    with an undefined value in it, is undefined (NaN).
    """
    import numpy as np

    arr = np.asarray(series, dtype=float)
    p = _padded(arr, last + days - 1)
    acc = p[..., 0:last]
    for k in range(1, days):  # left to right, one day at a time: the same sum in every shape
        nxt = p[..., k : k + last]
        if op == "avg":
            acc = acc + nxt
        elif op == "min":
            acc = np.minimum(acc, nxt)  # NaN propagates: an undefined day undefines the window
        elif op == "max":
            acc = np.maximum(acc, nxt)
        else:
            raise ValueError(f"unknown window function {op!r}")
    return acc / days if op == "avg" else acc


def window(op: str, series: Any, days: int) -> Any:
    """`op` over the last `days` values of `series`: a float for one community's list, an
    array (one per run) for the simulator's (runs, days)."""
    out = rolling(op, series, days)[..., 0]
    return float(out) if out.ndim == 0 else out


def window_values(node: ex.Node, history: History) -> dict[str, Any]:
    """Today's value of every window function `node` reads, under its `expr.window_key`."""
    return {
        ex.window_key(op, m, d): window(op, _series(history, m, d), d)
        for op, m, d in ex.windows(node)
    }


def today(history: History, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The latest closed day's value of each metric (NaN for one without any day yet)."""
    import numpy as np

    out: dict[str, Any] = {}
    for n in history if names is None else names:
        arr = _series(history, n, 1)
        v = arr[..., -1] if arr.shape[-1] else np.full(arr.shape[:-1], np.nan)
        out[n] = float(v) if np.ndim(v) == 0 else v
    return out


def condition_env(node: ex.Node, history: History, days_in_stage: Any = math.nan) -> dict[str, Any]:
    """What a community condition reads today: its metrics, its windows, days_in_stage."""
    names = [str(n.value) for n in ex.names(node) if n.value != DAYS_IN_STAGE]
    # community_age lets an undefined metric say why precisely (metrics.why_undefined)
    env = today(history, [*names, "community_age"])
    env.update(window_values(node, history))
    env[DAYS_IN_STAGE] = days_in_stage
    return env


def _truths(node: ex.Node, history: History, days_in_stage: Any, last: int) -> Any:
    """(held, failed, stage day) of `node` on each of the `last` latest closed days of the
    stage, (..., last): truth's two answers, each day reading that day's values and windows."""
    import numpy as np

    dis = np.asarray(days_in_stage, dtype=float)
    back = np.arange(last - 1, -1, -1, dtype=float)  # oldest first, today (0 back) last
    env: dict[str, Any] = {}
    for n in ex.names(node):
        name = str(n.value)
        if name != DAYS_IN_STAGE and name not in env:
            env[name] = _padded(_series(history, name, last), last)
    for op, m, d in ex.windows(node):
        env[ex.window_key(op, m, d)] = rolling(op, _series(history, m, last + d - 1), d, last)
    stage_day = dis[..., None] - back
    env[DAYS_IN_STAGE] = stage_day
    shape = np.broadcast_shapes(stage_day.shape, *(np.shape(v) for v in env.values()))
    env = {k: np.broadcast_to(v, shape) for k, v in env.items()}
    held, failed = truth(node, env)
    return np.asarray(held, dtype=bool), np.asarray(failed, dtype=bool), stage_day


def daily_truth(node: ex.Node, history: History, days_in_stage: Any, last: int) -> Any:
    """Whether `node` held on each of the `last` latest closed days of the stage: (..., last).

    Day j back from today reads that day's values and windows, and days_in_stage - j; a day
    before the stage started (days_in_stage - j < 1) or before the history does not count.
    """
    held, _, stage_day = _truths(node, history, days_in_stage, last)
    return held & (stage_day >= 1)


def _trailing(truths: Any) -> Any:
    """The run of True at the end of the last axis (0 when the last is False)."""
    import numpy as np

    return np.cumprod(truths[..., ::-1], axis=-1).sum(axis=-1)


def held_for(node: ex.Node, history: History, days_in_stage: Any, limit: int) -> Any:
    """For how many days in a row, up to `limit` and ending today, `node` has held in the stage
    (0 when it does not hold today): an int, or an array of one per run."""
    import numpy as np

    run = _trailing(daily_truth(node, history, days_in_stage, limit))
    return int(run) if np.ndim(run) == 0 else run


def exit_state(node: ex.Node, hold: timedelta | None, history: History, days_in_stage: Any) -> Any:
    """(whether the exit fires: `node` held on each of the last `for:` days of the stage;
    whether today's verdict is unknown: neither true nor false), from one reading of the
    history: per run for the simulator's arrays."""
    n = hold_days(hold)
    held, failed, stage_day = _truths(node, history, days_in_stage, n)
    return _trailing(held & (stage_day >= 1)) >= n, ~held[..., -1] & ~failed[..., -1]


def exit_holds(node: ex.Node, hold: timedelta | None, history: History, days_in_stage: Any) -> Any:
    """Whether an exit fires (exit_state's first answer).

    One community's history gives a bool, the simulator's (runs, days) arrays a mask per run.
    """
    import numpy as np

    fires = exit_state(node, hold, history, days_in_stage)[0]
    return bool(fires) if np.ndim(fires) == 0 else fires


def why_window(op: str, metric: str, days: int, history: History) -> str:
    """Why window `op(metric, days)` has no value today (one community's history)."""
    import numpy as np

    arr = _series(history, metric)
    have = arr.shape[-1]
    if have < days:
        return f"{have} of the {days} days it reads have closed"
    if np.isnan(arr[..., have - days :]).any():
        return f"`{metric}` is undefined on a day of the last {days}"
    return "no value"
