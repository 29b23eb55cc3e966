"""Member attributes at run time: checked as they arrive, read as member conditions read them.

Declared attributes (`members.attributes`) arrive on `joined`, `apply` and `update` events and
from `sop members import`; each value is checked against its declared type and, for an enum,
its values, and an error names the field (`attributes.grade`). Two built-ins may be given too:
`source` (a declared channel id, or `organic`) and `referrer` (a member id); the others
(points, team, checkins ...) follow from events and are refused.

`member_values` is what a member condition (a segment's `when`, `where:`, a counted metric's
`where`, `admission.approve`, a leaderboard's `by`) reads of one stored member: the built-in
attributes counted from its record, the declared ones with their defaults. The decision itself
is `program.truth.holds` (the one reading of a condition, the simulator's too).

PII attributes (`pii: true`) are never shown: `mask` hides their values in what status, the
dashboard and `sop members` print.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from ..core.catalog import ORGANIC
from ..lang.model import Attribute, AttributeType, Playbook
from ..program.members import coerce
from ..program.members import member_values as program_member_values
from .errors import EventError
from .store.base import MemberRecord

KEEP_DAYS = 7  # member days kept for weekly metrics (speaking, taking part)

MASK = "•••"
SETTABLE_BUILT_INS = ("source", "referrer")  # the built-ins an event or an import may give


def check_value(attr: Attribute, value: object, field: str) -> Any:
    """`value` as attribute `attr` keeps it (`program.members.coerce`, the one reading of a
    declared type), or EventError naming `field`; a PII attribute's value is never quoted."""
    if value is None:
        return None  # unset: the attribute reads its default again
    if isinstance(value, dict | list):
        raise EventError(field, f"{attr.id} takes one value, not a list or an object")
    if attr.type is AttributeType.DATE and isinstance(value, str) and value:
        try:
            date.fromisoformat(value)
        except ValueError:
            raise EventError(field, f"{attr.id} is a date (YYYY-MM-DD)") from None
    try:
        return coerce(attr, value)
    except ValueError as e:
        if attr.pii:
            raise EventError(field, f"{attr.id} is not a valid {attr.type.value}") from None
        raise EventError(field, str(e)) from None


def check_attributes(
    pb: Playbook, values: Mapping[str, object], prefix: str = "attributes"
) -> dict[str, Any]:
    """Attribute values given on an event or an import row, checked (EventError names the
    first bad one as `<prefix>.<id>`); keys are declared attributes, `source` or `referrer`."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        field = f"{prefix}.{key}"
        attr = pb.attributes.get(key)
        if attr is not None:
            out[key] = check_value(attr, value, field)
            continue
        if key == "source":
            out[key] = check_source(pb, value, field)
        elif key == "referrer":
            if value is not None and (not isinstance(value, str) or len(value) > 200):
                raise EventError(field, "the referrer is a member id (a string)")
            out[key] = value or None
        elif key in pb.attribute_units():
            raise EventError(field, f"{key} follows from the member's events; it cannot be set")
        else:
            declared = ", ".join(pb.attributes) or "none"
            raise EventError(field, f"unknown attribute {key!r} (declared: {declared})")
    return out


def check_source(pb: Playbook, value: object, field: str = "source") -> str | None:
    """A member's channel: a declared channel id or `organic` (anything when none is declared)."""
    if value is None or value == ORGANIC:
        return None
    if not isinstance(value, str) or not value:
        raise EventError(field, "a channel id (a string)")
    if pb.channels and value not in pb.channels:
        known = ", ".join([*pb.channels, ORGANIC])
        raise EventError(field, f"unknown channel {value!r} (channels: {known})")
    return value


def _days(d: date, t: datetime | None, tz: Any) -> float:
    return math.nan if t is None else float((d - t.astimezone(tz).date()).days)


def member_values(
    pb: Playbook, m: MemberRecord, day: date, tz: Any, points: int = 0
) -> dict[str, Any]:
    """What a member condition reads of member `m` on local `day` (the day being decided).

    The built-ins are counted here from the stored record (`points`: the ledger balance,
    given); what an unset attribute reads is `program.members.member_values`'s convention.
    """
    week = {day - timedelta(days=i) for i in range(KEEP_DAYS)}
    raw: dict[str, Any] = {
        **{k: v for k, v in m.attributes.items() if k in pb.attributes},
        "tenure_days": _days(day, m.joined_at, tz),
        "weekly_interactions": len(week & set(m.spoke_days)) + len(week & set(m.active_days)),
        "ugc_posts": m.posts,
        "payments": m.paid,
        "invites": m.invites,
        "checkin_streak": m.streak,
        "violations": m.violations,
        "silent_days": _days(day, m.last_active_at, tz),
        "source": m.source or ORGANIC,
        "referrer": m.referrer or "",
        "points": points,
        "checkins": m.checkins,
        "messages": m.messages,
        "team": m.team or "",
        "approved": bool(m.approved) if m.approved is not None else pb.admission is None,
    }
    if m.tier:
        raw["tier"] = m.tier
    return program_member_values(pb, raw)


def pii_values(pb: Playbook, m: MemberRecord | None) -> list[str]:
    """The text of member `m`'s PII attributes (what `mask` hides), longest first."""
    if m is None:
        return []
    found = {
        str(m.attributes[a.id]) for a in pb.attributes.values() if a.pii and a.id in m.attributes
    }
    return sorted((v for v in found if v.strip()), key=len, reverse=True)


def mask(text: str, secrets: list[str]) -> str:
    """`text` with each of `secrets` replaced by a mask."""
    for s in secrets:
        text = text.replace(s, MASK)
    return text


def shown_attributes(pb: Playbook, m: MemberRecord) -> dict[str, Any]:
    """A member's attributes as people may see them: PII ones masked."""
    return {
        k: (MASK if (a := pb.attributes.get(k)) is not None and a.pii else v)
        for k, v in sorted(m.attributes.items())
    }
