"""A community's exported history: members (joined, left, source) and activity, read and checked.

The exports are untrusted and often messy: a BOM, `YYYY/MM/DD` beside `YYYY-MM-DD`, timestamps
where dates were expected, trailing whitespace, header names in any case. Each of those is read;
what cannot be meant (a member who left before joining, one id on two rows, a date that is no
date) stops with `FILE:LINE:COLUMN: ...` (a CalibrationError). From the members this module
derives what the fits read: lifetimes in periods as of a date (right-censored, any number of
cohorts), daily joins, and who was active in which calendar period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from .exports import NO_DATE, CalibrationError, dates, day_text, parse_date, quote, read_rows
from .retention_models import SurvivalTable

# re-exported: callers read an export's dates and errors from here
__all__ = ["NO_DATE", "CalibrationError", "day_text", "parse_date"]


# -- members -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Members:
    """Every member of the export: when they joined, when they left (NO_DATE: still in), source."""

    path: str
    ids: tuple[str, ...]
    joined: np.ndarray  # ordinal days
    left: np.ndarray  # ordinal days or NO_DATE
    source: tuple[str, ...] | None
    lines: np.ndarray

    @property
    def first_day(self) -> int:
        """The first join date."""
        return int(self.joined.min())

    def before(self, day: int) -> Members:
        """The members who joined on or before `day`, as seen on `day` (later leaving unseen)."""
        keep = self.joined <= day
        left = np.where((self.left > day) | (self.left == NO_DATE), NO_DATE, self.left)
        return Members(
            self.path,
            tuple(i for i, k in zip(self.ids, keep, strict=True) if k),
            self.joined[keep],
            left[keep],
            None if self.source is None else tuple(np.array(self.source)[keep]),
            self.lines[keep],
        )


def read_members(path: str, *, root: str | None = None) -> Members:
    """member_id, joined, left (empty: still a member) and optional source; checked row by row."""
    rows = read_rows(path, ("member_id", "joined", "left"), ("source",), root=root)
    ids = rows.cells["member_id"]
    seen: dict[str, int] = {}
    for i, v in enumerate(ids):
        if not v:
            raise rows.fail(i, "member_id", "`member_id` is empty")
        first = seen.setdefault(v, i)
        if first != i:
            raise rows.fail(
                i,
                "member_id",
                f"member_id {quote(v)} appears twice (also on line {int(rows.lines[first])});"
                " one row per member",
            )
    joined = dates(rows, "joined", empty_ok=False)
    left = dates(rows, "left", empty_ok=True)
    early = np.flatnonzero((left != NO_DATE) & (left < joined))
    if len(early):
        i = int(early[0])
        raise rows.fail(
            i,
            "left",
            f"member {quote(ids[i])} left on {day_text(left[i])}, before joining on"
            f" {day_text(joined[i])}",
        )
    source = None
    if "source" in rows.cells:
        source = tuple(s or "unknown" for s in rows.cells["source"])
    return Members(path, tuple(ids), joined, left, source, rows.lines)


# -- lifetimes ---------------------------------------------------------------------------------


def lifetimes(
    m: Members, as_of: int, period_days: float, *, since: int | None = None
) -> SurvivalTable:
    """Lifetimes in whole periods of the members who joined by `as_of`, seen on `as_of`.

    A member who left d days after joining left in period t = ⌊d / P⌋ + 1; a member is observed
    for n = ⌊(as_of − joined) / P⌋ whole periods. Only a leaving within those n periods is an
    event; anyone else is right-censored at n (a leaving in a period not yet complete would make
    the censored members of that period look safer than they are). With `since` (a holdout's
    start), each member enters at the whole periods completed by then: the likelihood is
    conditional on having survived them (left-truncation). Clusters are join cohorts of P days.
    """
    keep = m.joined <= as_of
    joined = m.joined[keep]
    left = np.where((m.left[keep] == NO_DATE) | (m.left[keep] > as_of), NO_DATE, m.left[keep])
    n_obs = np.floor((as_of - joined) / period_days).astype(np.int64)
    gone = left != NO_DATE
    t = np.where(gone, np.floor((left - joined) / period_days).astype(np.int64) + 1, 0)
    event = gone & (t <= n_obs)
    exit_ = np.where(event, t, n_obs)
    entry = np.zeros_like(exit_)
    cohort = np.floor((joined - m.first_day) / period_days).astype(np.int64)
    if since is not None:
        # members who had left by `since` are known before the holdout: not part of it
        before = gone & (left <= since)
        seen = np.floor((since - joined) / period_days).astype(np.int64)
        entry = np.clip(seen, 0, None)
        # a leaving in a period incomplete at `since` happens after the entry point
        keep2 = ~(before & (t <= entry))
        keep2 &= exit_ > entry
        return SurvivalTable.from_members(entry[keep2], exit_[keep2], event[keep2], cohort[keep2])
    return SurvivalTable.from_members(entry, exit_, event, cohort)


def daily_joins(m: Members, start: int, end: int) -> np.ndarray:
    """Joins on each day from `start` to `end` inclusive."""
    j = m.joined[(m.joined >= start) & (m.joined <= end)] - start
    return np.bincount(j, minlength=end - start + 1).astype(float)


def source_counts(m: Members, end: int) -> dict[str, int]:
    """Joins by source up to `end`, most first (empty without a source column)."""
    if m.source is None:
        return {}
    src = np.array(m.source)[m.joined <= end]
    names, counts = np.unique(src, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {str(names[i]): int(counts[i]) for i in order}


# -- activity ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivityLog:
    """Activity rows matched to members: member index, day (ordinal) and count."""

    path: str
    member: np.ndarray
    day: np.ndarray
    count: np.ndarray
    unknown: int  # rows whose member is not in the members file
    first_unknown: str | None  # `FILE:LINE` of the first such row
    outside: int  # rows dated outside the member's membership


def read_activity(
    path: str, members: Members, period_days: float, *, root: str | None = None
) -> ActivityLog:
    """member_id, date (or period: whole periods since the first join), count.

    A row dated by `period` stands for the first day of that period. Rows of members not in the
    members file, or dated outside a membership, are counted (and reported), not fitted.
    """
    rows = read_rows(path, ("member_id", "count"), alternatives=(("date", "period"),), root=root)
    index = {mid: i for i, mid in enumerate(members.ids)}
    n = len(rows.lines)
    member = np.full(n, -1, dtype=np.int64)
    for i, v in enumerate(rows.cells["member_id"]):
        if not v:
            raise rows.fail(i, "member_id", "`member_id` is empty")
        member[i] = index.get(v, -1)
    if "date" in rows.cells:
        day = dates(rows, "date", empty_ok=False)
    else:
        day = np.empty(n, dtype=np.int64)
        for i, v in enumerate(rows.cells["period"]):
            try:
                k = float(v)
            except ValueError:
                k = math.nan
            if not (math.isfinite(k) and k == int(k) and 0 <= k <= 100_000):
                raise rows.fail(
                    i, "period", f"`period` is {quote(v)}; expected a whole number from 0"
                )
            day[i] = members.first_day + math.floor(k * period_days)
    count = np.empty(n)
    for i, v in enumerate(rows.cells["count"]):
        try:
            c = float(v) if v else math.nan
        except ValueError:
            c = math.nan
        if not (math.isfinite(c) and 0 <= c <= 1e12):
            raise rows.fail(i, "count", f"`count` is {quote(v)}; expected a number from 0")
        count[i] = c
    unknown = member < 0
    first_unknown = None
    if unknown.any():
        first_unknown = f"{path}:{int(rows.lines[int(np.argmax(unknown))])}"
    ok = ~unknown
    mi = member[ok]
    d = day[ok]
    lft = members.left[mi]
    inside = (d >= members.joined[mi]) & ((lft == NO_DATE) | (d <= lft))
    return ActivityLog(
        path,
        mi[inside],
        d[inside],
        count[ok][inside],
        int(unknown.sum()),
        first_unknown,
        int((~inside).sum()),
    )


@dataclass(frozen=True)
class PeriodActivity:
    """Who was active in which calendar period, for members present through the whole period.

    Period j is the days starts[j] .. starts[j + 1] − 1. `present[i, j]`: member i was a member
    for all of period j (joined before it began, had not left by its end, and it ended by
    `as_of`); `active[i, j]`: a row with a positive count fell in it; `tenure[i, j]`: days from
    joining to the middle of the period. `period_days` is the mean length of a period.
    """

    present: np.ndarray  # (members, periods) bool
    active: np.ndarray  # (members, periods) bool
    tenure: np.ndarray  # (members, periods) float, days
    starts: np.ndarray  # (periods + 1,) ordinal days: each period's first day, then the end
    period_days: float
    granularity: str  # "monthly", "weekly", or "N-day"


def activity_periods(
    log: ActivityLog, first_day: int, as_of: int, period_days: float, by_period: bool
) -> tuple[np.ndarray, str]:
    """Period boundaries that match the export's own granularity.

    Rows all dated on the 1st of a month: calendar months; all on one weekday: weeks starting
    that weekday; otherwise (daily rows, or a `period` column) periods of `period_days` from the
    first join. A weekly export is then read as weeks, whatever --period-days says.
    """
    dates = np.unique(log.day)
    if not by_period and len(dates) >= 2:
        ds = [date.fromordinal(int(d)) for d in dates[:2000]]
        if all(d.day == 1 for d in ds):
            first = date.fromordinal(first_day).replace(day=1)
            out = []
            y, mo = first.year, first.month
            while True:
                o = date(y, mo, 1).toordinal()
                out.append(o)
                if o > as_of + 1:
                    break
                y, mo = (y + 1, 1) if mo == 12 else (y, mo + 1)
            return np.array(out, dtype=np.int64), "monthly"
        if len({d.weekday() for d in ds}) == 1:
            wd = ds[0].weekday()
            week0 = first_day - ((date.fromordinal(first_day).weekday() - wd) % 7)
            return np.arange(week0, as_of + 9, 7, dtype=np.int64), "weekly"
    n = math.floor((as_of + 1 - first_day) / period_days) + 1
    starts = first_day + np.ceil(np.arange(n + 1) * period_days).astype(np.int64)
    return starts, f"{period_days:g}-day"


def period_activity(
    members: Members,
    log: ActivityLog,
    as_of: int,
    starts: np.ndarray,
    granularity: str,
    rows: np.ndarray | None = None,
) -> PeriodActivity:
    """The period activity matrix as of `as_of` (later rows ignored) for members `rows`."""
    idx = np.arange(len(members.ids)) if rows is None else rows
    complete = starts[1:] - 1 <= as_of
    first, last = starts[:-1][complete], starts[1:][complete] - 1
    joined = members.joined[idx][:, None]
    left = members.left[idx][:, None]
    present = (joined <= first[None, :]) & ((left == NO_DATE) | (left > last[None, :]))
    active = np.zeros_like(present)
    where = np.full(len(members.ids), -1, dtype=np.int64)
    where[idx] = np.arange(len(idx))
    keep = (log.count > 0) & (log.day <= as_of) & (where[log.member] >= 0)
    pj = np.searchsorted(first, log.day[keep], side="right") - 1
    ok = (pj >= 0) & (pj < len(first))
    active[where[log.member[keep]][ok], pj[ok]] = True
    active &= present
    mid = (first + last) / 2.0
    tenure = mid[None, :] - joined
    mean_len = float((last - first + 1).mean()) if len(first) else 1.0
    bounds = np.concatenate([first, last[-1:] + 1]) if len(first) else starts[:1]
    return PeriodActivity(present, active, tenure.astype(float), bounds, mean_len, granularity)


def describe(m: Members, as_of: int) -> dict[str, Any]:
    """Counts that say what the export holds as of `as_of`."""
    seen = m.joined <= as_of
    left = seen & (m.left != NO_DATE) & (m.left <= as_of)
    return {
        "members": int(seen.sum()),
        "left": int(left.sum()),
        "still_members": int(seen.sum() - left.sum()),
        "joined_after_as_of": int((~seen).sum()),
        "first_join": day_text(m.first_day),
        "last_join": day_text(int(m.joined[seen].max())) if seen.any() else None,
    }
