"""Built-in metrics counted from recorded member events, with the simulator's definitions.

The arithmetic (ratios undefined on an empty denominator, retention cohorts, churn) is
engine/program/metrics.py's, the module the simulator uses; this module only counts members and
events of a local day d from the store and hands the counts to it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

from ..core.schedule import local_midnight
from ..program import Program
from ..program import metrics as M
from .members import SPEAKING, TAKING_PART, EventType
from .store.base import MemberFacts, StateStore

DEFAULT_CAPACITY = 500
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_index(program: Program, origin: datetime, day: date) -> int:
    """Day d of the playbook (0 is the local day it started on)."""
    return (day - origin.astimezone(program.tz).date()).days


def built_in_values(
    program: Program, store: StateStore, run_id: str, origin: datetime, day: date
) -> dict[str, float]:
    """Every built-in metric of local day `day` (NaN where undefined), `days_in_stage` aside."""
    tz = program.tz
    d = day_index(program, origin, day)
    close = local_midnight(day + timedelta(days=1), tz)
    day_start = local_midnight(day, tz)
    week_start = local_midnight(day - timedelta(days=M.WEEK - 1), tz)
    members = store.member_facts(run_id)  # no member's whole state is decoded

    def member_at(m: MemberFacts, t: datetime) -> bool:
        return m.joined_at is not None and m.joined_at < t and (m.left_at is None or m.left_at >= t)

    current = [m for m in members if member_at(m, close)]
    ids = {m.id for m in current}
    n = float(len(current))
    joined = [m for m in members if m.joined_at is not None and m.joined_at < close]
    new = sum(1 for m in joined if m.joined_at is not None and m.joined_at >= day_start)

    week = store.event_facts(run_id, week_start, close, [*SPEAKING, *TAKING_PART])
    spoke_today: set[str] = set()
    days_by_member: dict[str, set[tuple[str, date]]] = defaultdict(set)
    took_part: set[str] = set()
    ugc = 0
    for member, kind_text, at in week:
        kind = EventType(kind_text)
        local = at.astimezone(tz).date()
        if kind in SPEAKING:
            days_by_member[member].add(("speak", local))
            if at >= day_start:
                spoke_today.add(member)
        if kind in TAKING_PART:
            days_by_member[member].add(("part", local))
            took_part.add(member)
        if kind is EventType.POST:
            ugc += 1
    speakers = float(len(spoke_today & ids))
    participants = float(len(took_part & ids))

    paid_ever = {m for m, _, _ in store.event_facts(run_id, EPOCH, close, [EventType.PAYMENT])}
    left_week = sum(1 for m in members if m.left_at is not None and week_start <= m.left_at < close)
    referred = sum(1 for m in joined if m.referrer)
    values: dict[str, float] = {
        "members": n,
        "new_members": float(new),
        "daily_speakers": speakers,
        "daily_speak_rate": float(M.share_of_members(speakers, n)),
        "weekly_participation": float(M.share_of_members(participants, n)),
        "paying_members": float(sum(1 for m in current if m.id in paid_ever)),
        "conversion_rate": float(M.conversion_rate(len(paid_ever & {m.id for m in joined}),
                                                   len(joined))),
        "fission_rate": float(M.fission_rate(referred, len(joined))),
        "fission_multiplier": float(M.fission_multiplier(referred, len(joined))),
        "churn_rate": float(M.churn_rate(left_week, n)),
        "ugc_posts": float(ugc),
        "groups": float(M.groups(n, program.playbook.community.capacity or DEFAULT_CAPACITY)),
        "community_age": float(d),
    }  # fmt: skip
    values.update(_retention(program, members, origin, d))
    values.update(_core(program, current, days_by_member))
    return values


def _retention(
    program: Program, members: list[MemberFacts], origin: datetime, d: int
) -> dict[str, float]:
    tz = program.tz
    d0 = origin.astimezone(tz).date()
    out: dict[str, float] = {}
    for k in M.RETENTION_DAYS:
        window = M.cohort_days(d, k)
        if window is None:
            out[f"retention_d{k}"] = M.UNDEFINED
            continue
        lo, hi = window
        joined = [0.0] * (hi + 1)
        survivors = [0.0] * (hi + 1)
        for m in members:
            if m.joined_at is None:
                continue
            j = (m.joined_at.astimezone(tz).date() - d0).days
            if not lo <= j <= hi:
                continue
            joined[j] += 1
            # still a member at the close of day j+k-1
            end = local_midnight(d0 + timedelta(days=j + k), tz)
            if m.left_at is None or m.left_at >= end:
                survivors[j] += 1
        out[f"retention_d{k}"] = float(M.retention([joined], [survivors], d, k)[0])
    return out


def _core(
    program: Program, current: list[MemberFacts], days: Mapping[str, set[tuple[str, date]]]
) -> dict[str, float]:
    tiers = program.playbook.tiers
    if tiers is not None and len(tiers.levels) >= 2:
        rank = {t.id: i for i, t in enumerate(tiers.levels)}
        ranks = [rank.get(m.tier or "", 0) for m in current]
        top = len(tiers.levels) - 1
        core = sum(1 for r in ranks if r > 0)
        vip = sum(1 for r in ranks if r == top) if len(tiers.levels) >= 3 else 0
        return {"core_members": float(core), "vip_members": float(vip)}
    score = [len(days.get(m.id, ())) for m in current]
    return {
        "core_members": float(sum(1 for s in score if s >= 3)),
        "vip_members": float(sum(1 for s in score if s >= 5)),
    }


def as_evidence(values: Mapping[str, float]) -> dict[str, float | None]:
    """Values for the record: NaN (undefined) as None."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}
