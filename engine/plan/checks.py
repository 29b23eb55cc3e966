"""Checks that need the calendar: staff workload, backend rate budgets, member frequency caps.

They count firings one local day at a time while the calendar is produced and never hold it, so
memory is one day's counts whatever the crons; a budget of firings bounds the time, and SOP260
says where the checks stopped when a playbook schedules more than that.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime

from ..core.catalog import DEFAULT_RATES
from ..core.diagnostics import Collector
from ..lang.model import Action, Playbook
from ..lang.semantics import is_member_message
from ..program import Firing, Program, StageWindow
from .sections import tasks_per_firing
from .timeline import PlanError, PlanOptions, lifecycle

# Firings examined at most: a 90-day plan of a busy real community holds a few thousand; this
# many take about a second to count.
CHECK_BUDGET = 500_000
LISTED = 20  # actions named in a SOP303 message; the rest are counted


@dataclass
class _Load:
    """What the checks have counted so far, one day at a time."""

    worst: dict[str, tuple[int, date]] = field(default_factory=dict)  # role -> (tasks, day)
    busy: Counter[str] = field(default_factory=Counter)  # role -> days over capacity
    late: dict[str, tuple[str, int]] = field(default_factory=dict)  # backend -> (minute, sends)
    crowded: date | None = None  # the first day a member gets more than the cap
    fired: Counter[str] = field(default_factory=Counter)  # action -> firings examined
    stopped: date | None = None  # the day the budget ran out


def run_plan_checks(
    pb: Playbook, out: Collector, *, days: int = 90, budget: int | None = None
) -> None:
    """Plan `days` days (gates assumed to pass) and check the load it creates."""
    budget = CHECK_BUDGET if budget is None else budget
    program = Program(pb)
    try:
        start, end, lc = lifecycle(program, PlanOptions(days=days))
    except PlanError:
        return  # a start date out of range is reported by validate's own checks
    windows = lc.windows(end)
    load = _count(pb, program, windows, start, end, budget)
    check_workload(pb, load, days, out)
    check_unknown_workload(pb, load, days, out)
    check_rate_budget(pb, load, out)
    if load.crowded is not None:
        check_member_frequency(pb, program, windows, load.crowded, out)
    if load.stopped is not None:
        _report_stop(pb, program, load, days, budget, out)


def _count(
    pb: Playbook,
    program: Program,
    windows: list[StageWindow],
    start: datetime,
    end: datetime,
    budget: int,
) -> _Load:
    load = _Load()
    caps = {
        rid: r.headcount * (r.capacity or pb.staff_tasks_per_day) for rid, r in pb.roles.items()
    }
    seen = 0
    for firings in program.firings_by_day(windows, start, end):
        # a day's firings all go out on one local date: count per action, and sends per minute
        fired: Counter[str] = Counter()
        sends: Counter[tuple[str, int]] = Counter()
        day: date | None = None
        for at, aid, _, a in firings:
            seen += 1
            if seen > budget:
                load.stopped = at.date()
                break
            fired[aid] += 1
            if a.backend and is_member_message(a):
                sends[(a.backend, at.hour * 60 + at.minute)] += 1
            if day is None:
                day = at.date()
        if day is not None:
            load.fired.update(fired)
            _tally_day(pb, load, caps, day, fired, sends)
        if load.stopped is not None:
            break
    return load


def _tally_day(
    pb: Playbook,
    load: _Load,
    caps: dict[str, int],
    day: date,
    fired: Counter[str],
    sends: Counter[tuple[str, int]],
) -> None:
    tasks: Counter[str] = Counter()
    everyone = 0
    groups: Counter[str] = Counter()
    for aid, n in fired.items():
        a = pb.actions[aid]
        if a.owner:
            # a per-member task is one task per member of its group (its planned size); without
            # a size it counts once here and SOP304 says the workload is unknown
            tasks[a.owner] += n * (tasks_per_firing(pb, a) or 1)
        if is_member_message(a):
            if a.audience == "everyone":
                everyone += n
            elif _group(a):
                groups[a.audience] += n
    for role, n in tasks.items():
        if role not in caps:
            continue
        if n > load.worst.get(role, (0, day))[0]:
            load.worst[role] = (n, day)
        if n > caps[role]:
            load.busy[role] += 1
    for (bid, minute), n in sorted(sends.items()):
        b = pb.backends.get(bid)
        if b is None or bid in load.late:
            continue
        rate = b.rate_per_minute or DEFAULT_RATES.get(b.type)
        if rate and n > rate:
            load.late[bid] = (f"{day:%Y-%m-%d} {minute // 60:02d}:{minute % 60:02d}", n)
    cap = pb.member_messages_per_day
    if cap and load.crowded is None and everyone + max(groups.values(), default=0) > cap:
        load.crowded = day


def _group(a: Action) -> bool:
    """A message to part of the members: a tier, a segment or a leaderboard's top N.

    A member may belong to several segments; the check counts the busiest one group (as for
    tiers), so what it reports is a lower bound for a member in several.
    """
    return a.audience == "top" or a.audience.startswith(("tier:", "segment:"))


def check_workload(pb: Playbook, load: _Load, days: int, out: Collector) -> None:
    """SOP301: a role's actions on one day exceed headcount × capacity."""
    for role, (n, day) in load.worst.items():
        r = pb.roles[role]
        cap = r.headcount * (r.capacity or pb.staff_tasks_per_day)
        if n > cap:
            out.add(
                "SOP301",
                r.spans.get("headcount", r.spans[""]),
                f"role `{role}` has {n} tasks on {day} but capacity {cap}"
                f" ({r.headcount} × {r.capacity or pb.staff_tasks_per_day}/day);"
                f" {load.busy[role]} day(s) over capacity in the {days}-day plan",
            )


def check_unknown_workload(pb: Playbook, load: _Load, days: int, out: Collector) -> None:
    """SOP304: a per-member task (`for_each`) whose group has no planned size fires in the plan,
    so its workload cannot be counted."""
    for aid, n in sorted(load.fired.items()):
        a = pb.actions[aid]
        if a.for_each is None or tasks_per_firing(pb, a) is not None:
            continue
        out.add(
            "SOP304",
            a.spans.get("for_each", a.spans[""]),
            f"action `{aid}` makes one task per member of `{a.for_each}` but that group has no"
            f" planned `size`; its {n} firing(s) in the {days}-day plan are counted as one task"
            f" each, so the workload of `{a.owner or 'its owner'}` is unknown",
        )


def check_rate_budget(pb: Playbook, load: _Load, out: Collector) -> None:
    """SOP302: sends due in one minute exceed the backend's declared rate."""
    for bid, (minute, n) in sorted(load.late.items()):
        b = pb.backends[bid]
        rate = b.rate_per_minute or DEFAULT_RATES[b.type]
        delay = math.ceil(n / rate) - 1
        out.add(
            "SOP302",
            b.spans.get("rate", b.spans[""]),
            f"backend `{bid}` gets {n} sends at {minute} but allows {rate}/min;"
            f" the last would go out {delay} min late",
        )


def check_member_frequency(
    pb: Playbook, program: Program, windows: list[StageWindow], day: date, out: Collector
) -> None:
    """SOP303: one member would receive more than the daily cap (on the first such day)."""
    from datetime import timedelta

    from ..core.schedule import local_midnight

    t0 = local_midnight(day, program.tz)
    t1 = local_midnight(day + timedelta(days=1), program.tz)
    # the one crowded day again, in calendar order, to name its messages
    firings: list[Firing] = sorted(
        (f for fs in program.firings_by_day(windows, t0, t1) for f in fs),
        key=lambda f: (f[0], f[1]),
    )
    everyone: list[str] = []
    groups: dict[str, list[str]] = {}
    for _, aid, _, a in firings:
        if not is_member_message(a):
            continue
        if a.audience == "everyone":
            everyone.append(aid)
        elif _group(a):
            groups.setdefault(a.audience, []).append(aid)
    received = everyone + max(groups.values(), key=len, default=[])
    names = ", ".join(received[:LISTED])
    if len(received) > LISTED:
        names += f", … ({len(received) - LISTED} more)"
    out.add(
        "SOP303",
        pb.spans.get("limits.member_messages_per_day", pb.spans[""]),
        f"on {day} a member would receive {len(received)} messages"
        f" (cap {pb.member_messages_per_day}): {names}",
    )


def _report_stop(
    pb: Playbook, program: Program, load: _Load, days: int, budget: int, out: Collector
) -> None:
    """SOP260: the checks stopped early; point at the schedule that fires the most."""
    by_root: Counter[str] = Counter()
    for aid, n in load.fired.items():
        by_root[program.timed[aid].root.id] += n
    busiest, n = by_root.most_common(1)[0]
    root: Action = pb.actions[busiest]
    key = next((k for k in ("cron", "day") if k in root.spans), "")
    out.add(
        "SOP260",
        root.spans[key],
        f"the plan-based checks stopped on {load.stopped} of the {days}-day plan after"
        f" {budget:,} scheduled sends and tasks, {n:,} of them from `{busiest}` and the actions"
        " after it; workload, rate and frequency are checked only up to that day",
    )
