"""Checks that need the calendar: staff workload, backend rate budgets, member frequency caps."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import date

from .catalog import DEFAULT_RATES, MESSAGE_KINDS
from .diagnostics import Collector
from .model import Playbook
from .plan import PlanOptions, Timeline, make_plan
from .program import Program


def run_plan_checks(pb: Playbook, out: Collector, *, days: int = 90) -> None:
    """Plan `days` days (gates assumed to pass) and check the load it creates."""
    tl = make_plan(Program(pb), PlanOptions(days=days))
    check_workload(tl, out)
    check_rate_budget(tl, out)
    check_member_frequency(tl, out)


def check_workload(tl: Timeline, out: Collector) -> None:
    """SOP301: a role's actions on one day exceed headcount × capacity."""
    pb = tl.playbook
    tz = tl.program.tz
    per_day: dict[tuple[str, date], int] = Counter()
    for o in tl.occurrences:
        if o.owner:
            per_day[(o.owner, o.at.astimezone(tz).date())] += 1
    worst: dict[str, tuple[int, date]] = {}
    for (role, day), n in sorted(per_day.items(), key=lambda kv: kv[0][1]):
        if role in pb.roles and n > worst.get(role, (0, day))[0]:
            worst[role] = (n, day)
    for role, (n, day) in worst.items():
        r = pb.roles[role]
        cap = r.headcount * (r.capacity or pb.staff_tasks_per_day)
        if n > cap:
            busy = sum(1 for (rr, _), c in per_day.items() if rr == role and c > cap)
            out.add(
                "SOP301",
                r.spans.get("headcount", r.spans[""]),
                f"role `{role}` has {n} tasks on {day} but capacity {cap}"
                f" ({r.headcount} × {r.capacity or pb.staff_tasks_per_day}/day);"
                f" {busy} day(s) over capacity in the"
                f" {(tl.end - tl.start).days}-day plan",
            )


def check_rate_budget(tl: Timeline, out: Collector) -> None:
    """SOP302: sends due in one minute exceed the backend's declared rate."""
    pb = tl.playbook
    per_minute: dict[tuple[str, str], list[str]] = defaultdict(list)
    for o in tl.occurrences:
        if o.backend and o.kind in MESSAGE_KINDS:
            per_minute[(o.backend, o.at.strftime("%Y-%m-%d %H:%M"))].append(o.action)
    reported: set[str] = set()
    for (bid, minute), actions in sorted(per_minute.items()):
        b = pb.backends.get(bid)
        if b is None or bid in reported:
            continue
        rate = b.rate_per_minute or DEFAULT_RATES.get(b.type)
        if rate and len(actions) > rate:
            reported.add(bid)
            delay = math.ceil(len(actions) / rate) - 1
            out.add(
                "SOP302",
                b.spans.get("rate", b.spans[""]),
                f"backend `{bid}` gets {len(actions)} sends at {minute} but allows {rate}/min;"
                f" the last would go out {delay} min late",
            )


def check_member_frequency(tl: Timeline, out: Collector) -> None:
    """SOP303: one member would receive more than the daily cap."""
    pb = tl.playbook
    cap = pb.member_messages_per_day
    if not cap:
        return
    tz = tl.program.tz
    everyone: dict[date, list[str]] = defaultdict(list)
    tiers: dict[tuple[date, str], list[str]] = defaultdict(list)
    for o in tl.occurrences:
        if o.kind not in MESSAGE_KINDS:
            continue
        day = o.at.astimezone(tz).date()
        if o.audience == "everyone":
            everyone[day].append(o.action)
        elif o.audience.startswith("tier:"):
            tiers[(day, o.audience)].append(o.action)
    days = sorted(set(everyone) | {d for d, _ in tiers})
    for day in days:
        tier_max = max((v for (d, _), v in tiers.items() if d == day), key=len, default=[])
        received = everyone.get(day, []) + tier_max
        if len(received) > cap:
            span = pb.spans.get("limits.member_messages_per_day", pb.spans[""])
            out.add(
                "SOP303",
                span,
                f"on {day} a member would receive {len(received)} messages (cap {cap}): "
                + ", ".join(received),
            )
            return
