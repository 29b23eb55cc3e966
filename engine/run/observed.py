"""Built-in metrics counted from recorded member events, with the simulator's definitions.

The arithmetic (ratios undefined on an empty denominator, retention cohorts, churn) is
engine/program/metrics.py's, the module the simulator uses; this module only counts members and
events of a local day d from the store and hands the counts to it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..core.catalog import ORGANIC
from ..core.schedule import local_midnight
from ..lang.model import Playbook
from ..program import Program
from ..program import metrics as M
from .members import SPEAKING, TAKING_PART, EventType
from .population import Population
from .store.base import ApplicationState, LedgerEntry, MemberFacts, PointsKind, StateStore

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


# -- metrics the playbook's constructs add, and counted metrics ------------------------------

DAILY = "#"  # a counted metric's daily count is kept as `<metric>#count` / `<metric>#per`
DAILY_SOURCE = "daily"  # the `source` its values are recorded under


def construct_values(
    program: Program,
    store: StateStore,
    run_id: str,
    day: date,
    pop: Population,
    ledger: Sequence[LedgerEntry] | None = None,
) -> dict[str, float]:
    """The metrics channels, points, teams and admission add (`<channel>_joins`, ...), of local
    day `day`, with program/metrics.py's arithmetic; `pop`: the members at its close; `ledger`:
    the points ledger when the caller has read it already."""
    pb = program.playbook
    tz = program.tz
    close = local_midnight(day + timedelta(days=1), tz)
    week_start = local_midnight(day - timedelta(days=M.CHANNEL_WINDOW - 1), tz)
    out: dict[str, float] = {}
    if pb.channels:
        joined = [
            (f.source, f.joined_at)
            for f in store.member_facts(run_id)
            if f.joined_at is not None and f.joined_at < close
        ]
        for c in pb.channels:
            via = [at for source, at in joined if source == c]
            out[f"{c}_joins"] = float(sum(1 for at in via if at >= week_start))
            out[f"{c}_share"] = float(M.channel_share(len(via), len(joined)))
    if pb.points is not None:
        entries = [e for e in (store.ledger(run_id) if ledger is None else ledger) if e.at < close]
        current = {m.id for m in pop.members}
        out["points_issued"] = float(
            sum(e.points for e in entries if e.kind in (PointsKind.EARN, PointsKind.REWARD))
        )
        out["points_redeemed"] = float(
            -sum(e.points for e in entries if e.kind == PointsKind.REDEEM)
        )
        out["points_outstanding"] = float(sum(e.points for e in entries if e.member in current))
    if pb.teams is not None:
        scores = list(pop.team_scores().values())
        top, bottom = M.team_extremes(scores)
        out["team_score_top"] = float(top)
        out["team_score_bottom"] = float(bottom)
        out["team_score_spread"] = float(M.team_spread(top, bottom))
    if pb.admission is not None:
        apps = store.applications(run_id)
        days = M.APPLICATIONS_WINDOW
        start = local_midnight(day - timedelta(days=days - 1), tz)
        out["applications"] = float(sum(1 for a in apps if start <= a.applied_at < close))
        since = local_midnight(day - timedelta(days=M.APPROVAL_WINDOW - 1), tz)
        decided = [a for a in apps if a.decided_at is not None and since <= a.decided_at < close]
        approved = sum(1 for a in decided if a.state == ApplicationState.APPROVED)
        out["approval_rate"] = float(M.approval_rate(approved, len(decided)))
    return out


def counted_keys(pb: Playbook) -> list[str]:
    """The value names counted metrics report: each metric, and `metric[channel]` for a
    `by_channel` one (each declared channel and `organic`)."""
    from ..program import counted as C

    out = []
    for mid, metric in C.counted_metrics(pb.metrics).items():
        out.append(mid)
        if metric.by_channel:
            out += [C.channel_key(mid, ch) for ch in (*pb.channels, ORGANIC)]
    return out


def counted_values(
    program: Program, store: StateStore, run_id: str, day: date, pop: Population
) -> dict[str, float]:
    """Counted metrics (`count:` / `per:`) of local day `day` with program/counted.py's rules,
    and the daily counts their windows sum (`<metric>#count`, recorded with them: a window
    sums what was counted at the close of each of its days, as the simulator does)."""
    from ..lang.model import CountOf
    from ..program import counted as C

    pb = program.playbook
    metrics = C.counted_metrics(pb.metrics)
    if not metrics:
        return {}
    tz = program.tz
    day_start, close = local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
    keys = counted_keys(pb)
    series_names = [f"{k}{DAILY}{part}" for k in keys for part in ("count", "per")]
    stored: dict[str, dict[date, float]] = {}
    for mv in store.metric_values(run_id, [*keys, *series_names]):
        if mv.day < day and mv.value is not None:
            stored.setdefault(mv.name, {})[mv.day] = mv.value
    envs = {m.id: e for m, e in zip([*pop.members, *pop.past], [*pop.envs, *pop.past_envs],
                                    strict=True)}  # fmt: skip
    joined_today = [
        m.id for m in [*pop.members, *pop.past] if m.joined_at and day_start <= m.joined_at < close
    ]
    events: dict[str, list[str]] = {}
    out: dict[str, float] = {}
    origin_day = min(stored.get(series_names[0], {day: 0.0}), default=day)

    def count_of(count: Any, key: str, part: str, channel: str | None) -> Any:
        def chosen(env: Mapping[str, Any]) -> bool:
            if channel is not None and env.get("source") != channel:
                return False
            return count.where is None or bool(C.selects(count, env))  # no `where`: everyone

        if count.of == CountOf.MEMBERS:
            return float(sum(1 for env in pop.envs if chosen(env)))
        if count.of == CountOf.EVER:
            return float(sum(1 for env in [*pop.envs, *pop.past_envs] if chosen(env)))
        if count.of == CountOf.JOINS:
            today = sum(1 for mid in joined_today if chosen(envs[mid]))
        else:
            if count.event not in events:
                facts = store.event_facts(run_id, day_start, close, [str(count.event)])
                events[str(count.event)] = [m for m, _, _ in facts]
            today = sum(1 for mid in events[str(count.event)] if mid in envs and chosen(envs[mid]))
        name = f"{key}{DAILY}{part}"
        out[name] = float(today)
        before = stored.get(name, {})
        first = min([origin_day, *before], default=day)
        n = (day - first).days
        daily = [before.get(first + timedelta(days=i), 0.0) for i in range(n)] + [float(today)]
        return C.count_value(count, daily=daily)

    for mid, metric in metrics.items():
        assert metric.count is not None
        variants: list[tuple[str, str | None]] = [(mid, None)]
        if metric.by_channel:
            variants += [(C.channel_key(mid, ch), ch) for ch in (*pb.channels, ORGANIC)]
        for key, channel in variants:
            count = count_of(metric.count, key, "count", channel)
            per = count_of(metric.per, key, "per", channel) if metric.per is not None else None
            value = float(C.value(metric, count, per))
            if metric.cumulative:
                previous = stored.get(key, {}).get(day - timedelta(days=1), math.nan)
                value = float(C.keep_cumulative(previous, value))
            out[key] = value
    return out


def stored_history(
    store: StateStore,
    run_id: str,
    names: Sequence[str],
    first: date,
    day: date,
    today: Mapping[str, float] | None = None,
) -> dict[str, list[float]]:
    """The daily history of `names` (program/history.py's form) from day `first` to `day`, as
    recorded; with `today`, `day`'s values are those (a check not saved yet) instead."""
    by_day: dict[date, dict[str, float]] = {}
    if names and day >= first:
        for mv in store.metric_values(run_id, list(names), since=first):
            if mv.day > day or (today is not None and mv.day == day):
                continue
            row = by_day.setdefault(mv.day, {})
            if mv.value is not None or mv.name not in row:  # a defined value wins
                row[mv.name] = math.nan if mv.value is None else mv.value
    if today is not None:
        by_day[day] = {n: today.get(n, math.nan) for n in names}
    days = [by_day.get(first + timedelta(days=i), {}) for i in range((day - first).days + 1)]
    return {n: [d.get(n, math.nan) for d in days] for n in names}
