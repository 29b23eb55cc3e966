"""Durations (`30m`, `24h`, `3d`, `2w`), local clock times and quiet-hour windows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache

_DURATION = re.compile(r"^(?=\d)(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")

MAX_HORIZON_DAYS = 3660  # ten years: the longest horizon any verb plans or checks


@lru_cache(maxsize=4096)
def parse_duration(text: str) -> timedelta:
    """`1w2d3h4m` -> timedelta; raises ValueError on anything else, or one too long to hold."""
    m = _DURATION.fullmatch(text)
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    if len(text) > 32:  # the schema allows far fewer digits; this keeps int() and timedelta safe
        raise ValueError(f"duration too long: {text[:32]!r}...")
    w, d, h, mi = (int(g) if g else 0 for g in m.groups())
    try:
        return timedelta(weeks=w, days=d, hours=h, minutes=mi)
    except OverflowError:
        raise ValueError(f"duration too long: {text!r}") from None


def format_duration(td: timedelta) -> str:
    """The shortest spelling of a duration: 72h -> `3d`, 90m -> `1h30m`."""
    total = int(td.total_seconds() // 60)
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rem = divmod(total, 1440)
    hours, minutes = divmod(rem, 60)
    out = "".join(f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m")) if v)
    return sign + (out or "0m")


@lru_cache(maxsize=1024)
def _parse_window(text: str) -> Window:
    a, b = text.split("-")
    return Window(parse_clock(a), parse_clock(b))


@lru_cache(maxsize=4096)
def parse_clock(text: str) -> time:
    """`HH:MM` -> time."""
    h, m = text.split(":")
    return time(int(h), int(m))


@dataclass(frozen=True, slots=True)
class Window:
    """A daily local window such as quiet hours `22:00-08:00` (may wrap past midnight)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        """`22:00-08:00` -> Window."""
        return _parse_window(text)

    def contains(self, t: time) -> bool:
        """True if local time-of-day `t` lies inside the window (start inclusive, end exclusive)."""
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def next_opening(self, local: datetime) -> datetime:
        """The first local instant at or after `local` that is outside the window."""
        if not self.contains(local.time().replace(second=0, microsecond=0)):
            return local
        day = local.date()
        if self.start > self.end and local.time() >= self.start:
            day = day + timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=local.tzinfo)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"
