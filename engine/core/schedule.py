"""Wall-clock schedules to instants: cron days, DST rules and quiet hours.

Cron expressions are parsed by croniter and matched day by day in local wall-clock time; each local
time is then mapped to an instant with the documented DST rules (docs/time.md):
- a local time that does not exist (spring forward) fires once, at the first valid instant after
  it, i.e. the moment of the transition;
- a local time that occurs twice (fall back) fires once, at its first occurrence.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from zoneinfo import ZoneInfo

from .timeutil import Window


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed five-field cron: the local times of day and the days it fires on."""

    times: tuple[time, ...]
    minutes_hours: tuple[tuple[int, int], ...]
    doms: frozenset[int] | None  # None = every day of month
    last_dom: bool
    months: frozenset[int] | None
    dows: frozenset[int] | None  # cron numbering: 0 = Sunday
    nth: dict[int, frozenset[int | str]]  # weekday -> which of the month (1-5, or "l" = last)
    nearest: frozenset[int] = frozenset()  # `15W`: the weekday nearest the 15th

    @property
    def day_restricted(self) -> bool:
        """True when the day-of-month field is not `*`."""
        return self.doms is not None or self.last_dom or bool(self.nearest)

    def fires_on(self, d: date) -> bool:
        """True if the cron fires on local date `d` (Vixie cron: day-of-month OR day-of-week)."""
        if self.months is not None and d.month not in self.months:
            return False
        dom_ok = self._dom_ok(d)
        dow_ok = self._dow_ok(d)
        if self.day_restricted:
            if self.dows is not None:
                return dom_ok or dow_ok
            return dom_ok
        return dow_ok

    def _dom_ok(self, d: date) -> bool:
        if not self.day_restricted:
            return True
        if self.doms is not None and d.day in self.doms:
            return True
        if any(nearest_weekday(d.year, d.month, w) == d.day for w in self.nearest):
            return True
        return self.last_dom and d.day == month_days(d.year, d.month)

    def _dow_ok(self, d: date) -> bool:
        if self.dows is None:
            return True
        dow = (d.weekday() + 1) % 7
        if dow not in self.dows:
            return False
        nth = self.nth.get(dow)
        if nth is None:
            return True
        last = d.day + 7 > month_days(d.year, d.month)
        return (d.day - 1) // 7 + 1 in nth or ("l" in nth and last)


def month_days(year: int, month: int) -> int:
    """The number of days in a month (the module `calendar` would import `locale` for it)."""
    if month == 12:  # also in year 9999, which has no following January
        return 31
    return (date(year, month + 1, 1) - date(year, month, 1)).days


def nearest_weekday(year: int, month: int, day: int) -> int:
    """The day `W` fires: the weekday nearest `day`, never leaving the month (croniter's rule)."""
    last = month_days(year, month)
    day = min(day, last)
    wd = date(year, month, day).weekday()  # 0 = Monday
    if wd < 5:
        return day
    if wd == 5:  # Saturday: the Friday before, or the Monday after when that leaves the month
        return day - 1 if day > 1 else day + 2
    return day + 1 if day < last else day - 2  # Sunday: the Monday after, or the Friday before


# The cron fields (minute, hour, day of month, month, day of week) and their ranges.
_FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_SIMPLE_CRON = re.compile(r"[0-9*/,#\-]+")
_ALL: list[int | str] = ["*"]


def _simple_field(text: str, lo: int, hi: int, dow: bool) -> set[int] | None:
    """The values of a field made of numbers, `a-b` ranges, `*` and `/n` steps, or None for
    anything else: names, L, W, #, `a/n`, ranges that wrap or are written `a-a` (croniter reads
    those in ways of its own, so they are left to it)."""
    out: set[int] = set()
    for part in text.split(","):
        rng, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) >= 1):
            return None
        step = int(step_text) if slash else 1
        first, dash, last = rng.partition("-")
        if rng == "*" and (slash or text == "*"):  # croniter keeps a `*` listed with others
            a, b = lo, hi
        elif first.isdigit() and last.isdigit() and int(first) < int(last) <= hi:
            a, b = int(first), int(last)
        elif first.isdigit() and not dash and not slash:
            a = b = 0 if dow and first == "7" else int(first)  # Sunday is 0 and 7
        else:
            return None
        if not lo <= a <= b <= hi:
            return None
        out.update(range(a, b + 1, step))
    return out


def _nth_field(text: str) -> tuple[set[int], dict[int, set[int | str]]] | None:
    """A day-of-week field made only of `d#n` (the nth weekday d of the month), or None."""
    nth: dict[int, set[int | str]] = {}
    for part in text.split(","):
        day, _, n = part.partition("#")
        if not (day.isdigit() and n.isdigit() and int(day) <= 6 and 1 <= int(n) <= 5):
            return None
        nth.setdefault(int(day), set()).add(int(n))
    # every weekday named: croniter then writes the field as `*`; left to it
    return (set(nth), nth) if len(nth) < 7 else None


def _simple_cron(expr: str) -> tuple[list[list[int | str]], dict[int, set[int | str]]] | None:
    """croniter's `expanded` fields and nth weekdays for a plain five-field cron, or None: the
    common case parsed without importing croniter (a good part of a `sop validate`'s start-up)."""
    fields = expr.split()
    if len(fields) != 5 or not all(_SIMPLE_CRON.fullmatch(f) for f in fields):
        return None
    out: list[list[int | str]] = []
    nth: dict[int, set[int | str]] = {}
    for i, (text, (lo, hi)) in enumerate(zip(fields, _FIELDS, strict=True)):
        values: set[int] | None
        if i == 4 and "#" in text:
            found = _nth_field(text)
            if found is None:
                return None
            values, nth = found
        else:
            values = _simple_field(text, lo, hi, dow=i == 4)
        if values is None:
            return None
        # croniter writes a whole field as `*`, except a whole day of month (or of week) when
        # the other day field has no `*` in it
        keep = text != "*" and (
            (i == 2 and "*" not in fields[4]) or (i == 4 and "*" not in fields[2])
        )
        full = len(values) == hi - lo + 1
        out.append(_ALL if full and not keep else sorted(values))
    return out, nth


@cache
def parse_cron(expr: str) -> CronSpec:
    """Parse as croniter does; raises ValueError for anything croniter rejects."""
    simple = _simple_cron(expr)
    if simple is not None:
        (minutes, hours, doms, months, dows), nth_of_month = simple
        it = None
    else:
        from croniter import croniter

        it = croniter(expr)
        minutes, hours, doms, months, dows = it.expanded[:5]
        nth_of_month = getattr(it, "nth_weekday_of_month", {}) or {}
    all_ = ["*"]
    ms = list(range(60)) if minutes == all_ else [int(m) for m in minutes]
    hs = list(range(24)) if hours == all_ else [int(h) for h in hours]
    last = "l" in doms
    # croniter keeps `15W` as 15 in the expanded field and the W day apart: fire only on the W day
    nearest = frozenset(int(x) for x in getattr(it, "nearest_weekday", None) or ())
    dom_set = None if doms == all_ else frozenset(int(x) for x in doms if x != "l")
    if dom_set is not None and nearest:
        dom_set = dom_set - nearest or None
    if last and dom_set is not None and not dom_set:
        dom_set = None
    dow_set = None if dows == all_ else frozenset(int(x) % 7 for x in dows)
    nth = {int(k) % 7: frozenset(v) for k, v in nth_of_month.items()}
    pairs = tuple(sorted((h, m) for h in hs for m in ms))
    return CronSpec(
        times=tuple(time(h, m) for h, m in pairs),
        minutes_hours=pairs,
        doms=dom_set,
        last_dom=last,
        months=None if months == all_ else frozenset(int(x) for x in months),
        dows=dow_set,
        nth=nth,
        nearest=nearest,
    )


@lru_cache(maxsize=65536)
def to_instant(d: date, t: time, tz: ZoneInfo) -> datetime:
    """The instant of local wall time `d t` in `tz`, with the DST rules above (aware, in tz)."""
    naive = datetime.combine(d, t)
    first = naive.replace(tzinfo=tz, fold=0)
    utc = first.astimezone(UTC)
    back = utc.astimezone(tz)
    if back.replace(tzinfo=None) == naive:
        return back  # exists; for an ambiguous time fold=0 is the first occurrence
    # Nonexistent: the transition instant lies between the two readings; find the first instant
    # whose wall time is past `naive` (at most a few hours apart, minute resolution).
    lo = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = utc
    if lo > hi:
        lo, hi = hi, lo
    while hi - lo > timedelta(minutes=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    hi = hi.replace(second=0, microsecond=0)
    while hi.astimezone(tz).replace(tzinfo=None) < naive:
        hi += timedelta(minutes=1)
    return hi.astimezone(tz)


def local_dates(start: datetime, end: datetime, tz: ZoneInfo) -> list[date]:
    """Local dates touched by [start, end)."""
    first = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date() + timedelta(days=1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def cron_instants(expr: str, start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """Every firing of a cron in [start, end), as aware datetimes in `tz`."""
    return list(cron_between(expr, start, end, tz))


def cron_between(expr: str, start: datetime, end: datetime, tz: ZoneInfo) -> Iterator[datetime]:
    """The firings of a cron in [start, end) in order, one day's slice at a time (no list)."""
    if not start < end:
        return
    prev: datetime | None = None
    for d in local_dates(start, end, tz):
        day = cron_day(expr, d, tz)
        # bisect with the same comparisons as `start <= at < end`
        for i in range(bisect_left(day, start), bisect_left(day, end)):
            at = day[i]
            if prev is None or at != prev:  # a skipped time and the next valid one: fire once
                yield at
            prev = at


# Up to 1,440 instants per entry: the bound keeps an every-minute cron over a long plan from
# holding every day it ever visited (plans walk forward; a run revisits a few recent days).
@lru_cache(maxsize=512)
def cron_day(expr: str, d: date, tz: ZoneInfo) -> tuple[datetime, ...]:
    """The firings of a cron on one local date, in order and without repeats."""
    spec = parse_cron(expr)
    if not spec.fires_on(d):
        return ()
    out: list[datetime] = []
    for t in spec.times:
        at = to_instant(d, t, tz)
        if not out or at != out[-1]:  # skipped times all move to the transition: fire once
            out.append(at)
    return tuple(out)


def local_midnight(d: date, tz: ZoneInfo) -> datetime:
    """The first instant of local date `d`."""
    return to_instant(d, time(0, 0), tz)


def apply_quiet_hours(at: datetime, window: Window | None, tz: ZoneInfo) -> tuple[datetime, str]:
    """Move an instant inside quiet hours to the window's next opening; returns (at, reason)."""
    if window is None:
        return at, ""
    opened = quiet_move(at, window, tz)
    if opened is at:
        return at, ""
    local = at.astimezone(tz)
    return opened, f"quiet hours {window}: moved from {local:%H:%M} to {opened:%H:%M}"


def quiet_move(at: datetime, window: Window, tz: ZoneInfo) -> datetime:
    """`at` itself when outside quiet hours, else the window's next opening (no reason text)."""
    local = at.astimezone(tz)
    if not window.contains(time(local.hour, local.minute)):
        return at
    opened = window.next_opening(local.replace(tzinfo=None).replace(tzinfo=tz))
    return to_instant(opened.date(), opened.time(), tz)
