"""Counted metrics (`metrics.<id>.count` / `per`): their value from the counts an interpreter
keeps, defined once for the simulator and the runtime.

The four counts (model.CountOf):
- `members`: current members matching `where`, at the close of the day;
- `ever`: everyone who ever joined (departed members too) matching `where`;
- `joins`: joins in the trailing `window` (days, today included; none: since the start) whose
  member matched `where` at the close of the join's day;
- `events`: events of type `event` in the trailing window by members who matched `where` at the
  close of the event's day.
The interpreter counts members (`selects` decides who matches, `members.matches` underneath)
and keeps daily counts of joins and events (..., days: day 0 first, today last); `count_value`
turns them into the count, and `value` divides by `per`: a ratio whose `per` is 0 is undefined
(NaN), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..lang.model import Count, CountOf, Metric
from . import metrics
from .members import matches

DAILY = (CountOf.JOINS, CountOf.EVENTS)  # counted from daily counts over a window


def window_days(count: Count) -> int | None:
    """The trailing window of a `joins`/`events` count in days (None: since the start)."""
    if count.window is None or count.of not in DAILY:
        return None
    return max(1, math.ceil(count.window.total_seconds() / 86400))


def selects(count: Count, env: Mapping[str, Any]) -> Any:
    """Which members a count counts: its `where` over their attributes (a bool or a mask)."""
    return matches(count.where, env)


def counts_event(count: Count, event: str) -> bool:
    """Whether an event of type `event` is one an `events:` count counts."""
    return count.of == CountOf.EVENTS and count.event == event


def trailing(daily: Any, days: int | None) -> Any:
    """The sum of the last `days` daily counts (all of them with None): a float or an array.

    Fewer days than the window have closed: the sum of those there are (a count is never
    undefined; it is small).
    """
    import numpy as np

    arr = np.asarray(daily, dtype=float)
    if days is not None:
        arr = arr[..., max(0, arr.shape[-1] - days) :]
    out = arr.sum(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def count_value(count: Count, current: Any = None, daily: Any = None) -> Any:
    """A count's value today: `current` for members/ever, the window of `daily` for the others."""
    if count.of in DAILY:
        if daily is None:
            raise ValueError(f"a `{count.of}` count needs its daily counts")
        return trailing(daily, window_days(count))
    if current is None:
        raise ValueError(f"a `{count.of}` count needs its current count")
    return current


def value(metric: Metric, count: Any, per: Any = None) -> Any:
    """A counted metric's value: `count`, or `count / per` (undefined where per is 0)."""
    if metric.per is None:
        return count
    if per is None:
        raise ValueError(f"`{metric.id}` is a ratio: it needs its `per` count")
    return metrics.ratio(count, per)


def keep_cumulative(previous: Any, current: Any) -> Any:
    """A `cumulative: true` count: it never falls below its previous value (NaN: none yet)."""
    import numpy as np

    if np.ndim(previous) == 0 and np.ndim(current) == 0:
        p, c = float(previous), float(current)
        return c if math.isnan(p) else p if math.isnan(c) else max(p, c)
    return np.fmax(previous, current)  # fmax: a NaN side gives the other


def channel_key(metric: str, channel: str) -> str:
    """How a `by_channel: true` metric's value for one channel is reported: `metric[channel]`."""
    return f"{metric}[{channel}]"


def counted_metrics(metrics_: Mapping[str, Metric]) -> dict[str, Metric]:
    """The counted metrics of a playbook (those with `count`), in declaration order."""
    return {k: m for k, m in metrics_.items() if m.count is not None}
