"""Schedules in words, for tables and the handbook: `0 20 * * 1,5` -> "Mon, Fri at 20:00"."""

from __future__ import annotations

from ..core.schedule import parse_cron
from ..core.timeutil import format_duration
from ..lang.model import Action, Audience, Cron, DayOffset, OnEvent, Relative

_DOW = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
_MON = ["", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def cron_words(expr: str) -> str:
    """A cron expression in plain words."""
    try:
        spec = parse_cron(expr)
    except (ValueError, KeyError):
        return expr
    times = spec.minutes_hours
    if len(times) <= 3:
        at = ", ".join(f"{h:02d}:{m:02d}" for h, m in times)
    else:
        at = f"{len(times)} times a day"
    parts = []
    if spec.months is not None:
        parts.append("in " + ", ".join(_MON[m] for m in sorted(spec.months)))
    if spec.doms is not None or spec.last_dom:
        days = [str(d) for d in sorted(spec.doms or [])] + (["last"] if spec.last_dom else [])
        parts.append("on day " + ", ".join(days) + " of the month")
    if spec.dows is not None:
        if spec.dows == frozenset(range(1, 6)):
            parts.append("Mon–Fri")
        else:
            names = [_DOW[d] for d in sorted(spec.dows)]
            if spec.nth:
                names = [f"{_DOW[d]} #{','.join(map(str, sorted(n)))}" for d, n in spec.nth.items()]
            parts.append(", ".join(names))
    if not parts:
        parts.append("every day")
    return " ".join(parts) + f" at {at}"


def schedule_words(a: Action) -> str:
    """Any action schedule in plain words."""
    s = a.schedule
    if isinstance(s, Cron):
        return cron_words(s.expr)
    if isinstance(s, DayOffset):
        return f"day {s.day} at {s.at:%H:%M}"
    if isinstance(s, Relative):
        if s.offset < s.offset * 0:
            return f"{format_duration(-s.offset)} before {s.anchor}"
        return f"{format_duration(s.offset)} after {s.anchor}"
    assert isinstance(s, OnEvent)
    extra = ""
    if s.silent_for:
        extra = f" for {format_duration(s.silent_for)}"
    elif s.count:
        extra = f" #{s.count}"
    elif s.at:
        extra = " at " + ", ".join(format_duration(t) for t in s.at)
    elif s.streak:
        extra = f" of {s.streak} days"
    elif s.tier:
        extra = f" to {s.tier}"
    elif s.counter is not None and s.reaches is not None:
        extra = f" {s.counter} reaches {_number(s.reaches)}"
    elif s.item:
        extra = f" {s.item}"
    within = f", within {format_duration(s.within)}" if s.within else ""
    return f"on {s.event}{extra}{within}"


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def audience_words(a: Action, *, where: bool = True) -> str:
    """Who an action reaches, in words: `top 3 by invites`, `each member of tier:vip`, with its
    `where:` condition when asked."""
    top = a.top
    if a.audience == Audience.TOP and top is not None:
        who = (
            f"members of the top {top.n} team{'s' * (top.n > 1)} by {top.by}"
            if top.teams
            else f"top {top.n} by {top.by}"
        )
        if top.among:
            who += f" among {top.among}"
    else:
        who = a.audience
    if a.for_each:
        each = f"one task per member of {a.for_each}"
        who = each if a.audience == Audience.STAFF else f"{who}, {each}"
    if where and a.where is not None:
        who += f" where {a.where.text}"
    return who
