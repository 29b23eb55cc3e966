"""Member events at run time: what a platform reports, what it changes, and what it sets off.

Events arrive as plain data (`sop event`, `sop events import`, `sop serve`) and are checked
here; each new one updates its member (joined, spoke, streak, violations, payments) and fires
the Program's compiled event rules (`Program.on_event`, the same rules the simulator applies)
for the triggers it causes: `member.joined`, `member.checkin_streak`, `member.violation`.
Time-derived triggers — silence and anniversaries — are found by `derived_occurrences` when the
runner's clock passes their instant.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..program import Occurrence, Program
from .store.base import EventRecord, Ingested, MemberRecord, MemberTime, NewOccurrence, StateStore

MAX_ID = 200
MAX_DATA_KEYS = 50
MAX_TEXT = 2000
KEEP_DAYS = 7  # member days kept for weekly metrics (speaking, taking part)


class EventType(enum.StrEnum):
    """What a platform reports about a member (`member.` prefixed names are accepted too)."""

    JOINED = "joined"
    LEFT = "left"
    MESSAGE = "message"  # spoke in the group
    POST = "post"  # a user-generated post (counts as speaking too)
    CHECKIN = "checkin"
    ACTIVITY = "activity"  # took part in an activity (a live, a poll, a contest)
    VIOLATION = "violation"
    PAYMENT = "payment"
    INVITE = "invite"  # invited someone (their `joined` names the referrer)


SPEAKING = (EventType.MESSAGE, EventType.POST)
TAKING_PART = (EventType.ACTIVITY, EventType.CHECKIN)


class EventError(ValueError):
    """An event that cannot be accepted; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


_CONTROL = re.compile(r"[\x00-\x1f]")
# the instants the stores keep (microseconds since 1970 fit; a year-9999 instant does not decode)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _utf8(value: str, field: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate: no store can keep it as text
        raise EventError(field, "contains an unpaired surrogate (\\ud800-\\udfff)") from None
    return value


def _text(value: object, field: str, limit: int = MAX_ID) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EventError(field, "must be a non-empty string")
    if len(value) > limit:
        raise EventError(field, f"at most {limit} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise EventError(field, "contains control characters")
    return _utf8(value, field)


def parse_instant(value: str, tz: ZoneInfo) -> datetime:
    """An ISO date-time (with an offset, or local to `tz`), or a date (its local midnight)."""
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=tz)
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date (YYYY-MM-DD) or an ISO date-time"
            " (YYYY-MM-DDTHH:MM[:SS][+08:00])"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=tz)


def parse_event(
    obj: object, tz: ZoneInfo, received: datetime, require_id: bool = True
) -> EventRecord:
    """Check one event (`{"id", "type", "member", "at"?, "data"?}`) and make it a record."""
    if not isinstance(obj, Mapping):
        raise EventError("event", "must be a JSON object")
    unknown = sorted(set(obj) - {"id", "type", "member", "at", "data"})
    if unknown:
        raise EventError(unknown[0], "unknown field (known: id, type, member, at, data)")
    raw_type = _text(obj.get("type"), "type", 40)
    name = raw_type.removeprefix("member.")
    try:
        kind = EventType(name)
    except ValueError:
        known = ", ".join(t.value for t in EventType)
        raise EventError("type", f"unknown event type {raw_type!r} (known: {known})") from None
    member = _text(obj.get("member"), "member")
    at_raw = obj.get("at")
    if at_raw is None:
        at = received
    else:
        if not isinstance(at_raw, str):
            raise EventError("at", "must be an ISO date-time string")
        try:
            at = parse_instant(at_raw, tz)
        except ValueError as e:
            raise EventError("at", str(e)) from None
        try:
            inside = EARLIEST <= at < LATEST
        except OverflowError:  # year 1 with a positive offset: before any instant we keep
            inside = False
        if not inside:
            raise EventError("at", f"must lie between {EARLIEST:%Y} and {LATEST:%Y}")
    data = obj.get("data", {})
    if not isinstance(data, Mapping):
        raise EventError("data", "must be an object of names to values")
    if len(data) > MAX_DATA_KEYS:
        raise EventError("data", f"at most {MAX_DATA_KEYS} entries")
    clean: dict[str, Any] = {}
    for k, v in data.items():
        key = _text(k, "data", 64)
        if isinstance(v, bool) or v is None:
            clean[key] = v
        elif isinstance(v, int | float):
            if not math.isfinite(v):
                raise EventError(f"data.{key}", "must be a finite number")
            clean[key] = v
        elif isinstance(v, str):
            if len(v) > MAX_TEXT:
                raise EventError(f"data.{key}", f"at most {MAX_TEXT} characters")
            clean[key] = _utf8(v, f"data.{key}")
        else:
            raise EventError(f"data.{key}", "must be a string, a number, true, false or null")
    raw_id = obj.get("id")
    if raw_id is None:
        if require_id:
            raise EventError("id", "required (events are deduplicated by id)")
        # the same command run twice is the same event: its id follows from what it says
        event_id = f"{kind}:{member}:{at.isoformat()}"
    else:
        event_id = _text(raw_id if isinstance(raw_id, str) else str(raw_id), "id")
    return EventRecord(event_id, str(kind), member, at, clean)


@dataclass(frozen=True)
class StageClock:
    """Which stages run at an instant: read from the run's lifecycle windows."""

    origin: datetime
    windows: Sequence[tuple[str | None, datetime, datetime | None]]

    def active(self, at: datetime) -> list[str | None] | None:
        """Stages (None: the routines) active at `at`; None before the start or after the end."""
        if at < self.origin:
            return None
        found = [s for s, start, end in self.windows if start <= at and (end is None or at < end)]
        return found if None in found else None  # the routines' window is the playbook's life


def _new(o: Occurrence) -> NewOccurrence:
    return NewOccurrence(
        o.key, o.action, o.stage, o.kind, o.member, o.audience, o.owner, o.backend,
        o.scheduled, o.at, reason=o.reason,
    )  # fmt: skip


def fire(
    program: Program, stages: StageClock, event: str, member: str, at: datetime, **facts: object
) -> list[NewOccurrence]:
    """The occurrences one trigger sets off (the Program's event rules), none outside the life."""
    active = stages.active(at)
    if active is None:
        return []
    return [_new(o) for o in program.on_event(active, event, member, at, **facts)]


def _keep(days: tuple[date, ...], day: date) -> tuple[date, ...]:
    if day in days:
        return days
    return tuple(sorted((*days, day))[-KEEP_DAYS:])


def apply_event(program: Program, stages: StageClock, m: MemberRecord, e: EventRecord) -> Ingested:
    """One new event applied to its member: the member after it, and what it sets off."""
    tz = program.tz
    day = e.at.astimezone(tz).date()
    kind = EventType(e.type)
    occurrences: list[NewOccurrence] = []
    if kind is EventType.JOINED:
        referrer = e.data.get("referrer")
        m = replace(
            m,
            joined_at=e.at,
            left_at=None,
            removed=False,
            last_active_at=e.at,
            referrer=str(referrer) if referrer is not None else m.referrer,
            attributes={**m.attributes, **e.data},
        )
        occurrences += fire(program, stages, "member.joined", m.id, e.at)
    elif kind is EventType.LEFT:
        m = replace(m, left_at=e.at)
    elif kind in SPEAKING:
        later = m.last_active_at is None or e.at > m.last_active_at
        m = replace(
            m,
            last_active_at=e.at if later else m.last_active_at,
            spoke_days=_keep(m.spoke_days, day),
            posts=m.posts + (kind is EventType.POST),
        )
    elif kind is EventType.CHECKIN:
        if m.last_checkin == day:
            pass  # one check-in a day counts
        else:
            streak = m.streak + 1 if m.last_checkin == day - timedelta(days=1) else 1
            m = replace(m, streak=streak, last_checkin=day, active_days=_keep(m.active_days, day))
            occurrences += fire(program, stages, "member.checkin_streak", m.id, e.at, streak=streak)
    elif kind is EventType.ACTIVITY:
        m = replace(m, active_days=_keep(m.active_days, day))
    elif kind is EventType.VIOLATION:
        count = m.violations + 1
        m = replace(m, violations=count)
        occurrences += fire(program, stages, "member.violation", m.id, e.at, count=count)
        mod = program.playbook.moderation
        if mod is not None and mod.remove_at is not None and count >= mod.remove_at:
            m = replace(m, left_at=m.left_at or e.at, removed=True)
    elif kind is EventType.PAYMENT:
        m = replace(m, paid=m.paid + 1)
    elif kind is EventType.INVITE:
        m = replace(m, invites=m.invites + 1)
    return Ingested(m, tuple(occurrences))


def deriver(
    program: Program, stages: StageClock
) -> Callable[[Sequence[EventRecord], Mapping[str, MemberRecord]], list[Ingested]]:
    """The store's `Deriver` for these rules: applies new events in time order."""

    def derive(
        events: Sequence[EventRecord], members: Mapping[str, MemberRecord]
    ) -> list[Ingested]:
        current = dict(members)
        out = []
        for e in sorted(events, key=lambda e: (e.at, e.id)):
            m = current.get(e.member) or MemberRecord(e.member)
            result = apply_event(program, stages, m, e)
            current[e.member] = result.member
            out.append(result)
        return out

    return derive


def derived_occurrences(
    program: Program,
    stages: StageClock,
    store: StateStore,
    run_id: str,
    since: datetime,
    until: datetime,
) -> list[NewOccurrence]:
    """Silence and anniversary triggers whose instant falls in [since, until), fired."""
    out: list[NewOccurrence] = []
    silences: set[timedelta] = set()
    tenures: set[timedelta] = set()
    for r in program.events:
        for t in r.triggers:
            if t.event == "member.silent" and isinstance(t.value, timedelta):
                silences.add(t.value)
            elif t.event == "member.anniversary" and isinstance(t.value, timedelta):
                tenures.add(t.value)
    for span in sorted(silences):
        for m in store.members_due(run_id, MemberTime.LAST_ACTIVE, since - span, until - span):
            assert m.last_active_at is not None
            out += fire(
                program, stages, "member.silent", m.id, m.last_active_at + span, silent_for=span
            )
    for span in sorted(tenures):
        for m in store.members_due(run_id, MemberTime.JOINED, since - span, until - span):
            assert m.joined_at is not None
            out += fire(
                program, stages, "member.anniversary", m.id, m.joined_at + span, tenure=span
            )
    return out


def next_derived(
    program: Program, store: StateStore, run_id: str, after: datetime, horizon: datetime
) -> datetime | None:
    """The earliest silence or anniversary instant in [after, horizon), to wake up for."""
    best: datetime | None = None
    for r in program.events:
        for t in r.triggers:
            if t.event not in ("member.silent", "member.anniversary"):
                continue
            if not isinstance(t.value, timedelta):
                continue
            field = MemberTime.LAST_ACTIVE if t.event == "member.silent" else MemberTime.JOINED
            base = store.earliest_member_time(run_id, field, after - t.value, horizon - t.value)
            if base is not None and (best is None or base + t.value < best):
                best = base + t.value
    return best


def tier_changes(
    program: Program, members: Sequence[MemberRecord], day: date, review_day: bool
) -> list[MemberRecord]:
    """Members whose tier moves at the check after local `day` (engine/program/tiers.py rules)."""
    tiers = program.playbook.tiers
    if tiers is None or not tiers.levels or not members:
        return []
    import numpy as np

    from ..program.tiers import demote_silent, review, tier_rank

    tz = program.tz
    rank = tier_rank(tiers)
    week = {day - timedelta(days=i) for i in range(KEEP_DAYS)}

    def local(t: datetime | None) -> date:
        return t.astimezone(tz).date() if t is not None else day

    tier = np.array([rank.get(m.tier or "", 0) for m in members], dtype=np.int16)
    silent = np.array([(day - local(m.last_active_at)).days for m in members], dtype=np.int32)
    changed = demote_silent(tiers, tier, silent)
    if review_day:
        env = {
            "tenure_days": np.array([(day - local(m.joined_at)).days for m in members]),
            "weekly_interactions": np.array(
                [len(week & set(m.spoke_days)) + len(week & set(m.active_days)) for m in members],
                dtype=np.float32,
            ),
            "ugc_posts": np.array([m.posts for m in members]),
            "payments": np.array([m.paid for m in members]),
            "invites": np.array([m.invites for m in members]),
            "checkin_streak": np.array([m.streak for m in members]),
            "violations": np.array([m.violations for m in members]),
            "silent_days": silent,
        }
        changed |= review(tiers, tier, env)
    ids = {t.rank: t.id for t in tiers.levels}
    return [
        replace(m, tier=ids[int(tier[i])])
        for i, m in enumerate(members)
        if changed[i] and ids[int(tier[i])] != (m.tier or ids[0])
    ]
