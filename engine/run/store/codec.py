"""How the SQL stores write records: instants as UTC microseconds, values as JSON text."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .base import MemberRecord

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(t: datetime) -> int:
    """An aware instant as integer microseconds since the epoch (sortable, exact)."""
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: the store keeps aware instants only")
    d = t - EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def from_us(us: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=us)


def opt_us(t: datetime | None) -> int | None:
    """`to_us`, passing None through."""
    return None if t is None else to_us(t)


def opt_dt(us: int | None) -> datetime | None:
    """`from_us`, passing None through."""
    return None if us is None else from_us(us)


def metric_value(v: float | None) -> float | None:
    """A metric value as stored: a float, or None when undefined (NaN is undefined too)."""
    return None if v is None or math.isnan(v) else float(v)


def dumps(value: Any) -> str:
    """Compact JSON text (non-ASCII kept: Chinese names stay readable in the database)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def member_state(m: MemberRecord) -> str:
    """A member's fields that have no column of their own, as JSON."""
    return dumps(
        {
            "removed": m.removed,
            "spoke_days": [d.isoformat() for d in m.spoke_days],
            "active_days": [d.isoformat() for d in m.active_days],
            "violations": m.violations,
            "streak": m.streak,
            "last_checkin": m.last_checkin.isoformat() if m.last_checkin else None,
            "paid": m.paid,
            "posts": m.posts,
            "invites": m.invites,
            "referrer": m.referrer,
            "tier": m.tier,
            "checkins": m.checkins,
            "messages": m.messages,
            "approved": m.approved,
            "marks": list(m.marks),
        }
    )


def member_attributes(m: MemberRecord) -> str:
    """A member's attributes as stored in their own column (JSON)."""
    return dumps(dict(m.attributes))


def member_from(
    member_id: str,
    state: str,
    joined_at: int | None,
    left_at: int | None,
    last_active_at: int | None,
    attributes: str | None = None,
    source: str | None = None,
    team: str | None = None,
) -> MemberRecord:
    """A member back from its row (`attributes` NULL: a row from before schema 7, whose
    attributes are in `state`)."""
    s: Mapping[str, Any] = json.loads(state)
    attrs = json.loads(attributes) if attributes is not None else s.get("attributes")
    return MemberRecord(
        id=member_id,
        joined_at=opt_dt(joined_at),
        left_at=opt_dt(left_at),
        removed=bool(s.get("removed")),
        last_active_at=opt_dt(last_active_at),
        spoke_days=tuple(date.fromisoformat(d) for d in s.get("spoke_days", ())),
        active_days=tuple(date.fromisoformat(d) for d in s.get("active_days", ())),
        violations=int(s.get("violations", 0)),
        streak=int(s.get("streak", 0)),
        last_checkin=date.fromisoformat(s["last_checkin"]) if s.get("last_checkin") else None,
        paid=int(s.get("paid", 0)),
        posts=int(s.get("posts", 0)),
        invites=int(s.get("invites", 0)),
        referrer=s.get("referrer"),
        tier=s.get("tier"),
        attributes=dict(attrs or {}),
        source=source,
        team=team,
        checkins=int(s.get("checkins", 0)),
        messages=int(s.get("messages", 0)),
        approved=s.get("approved"),
        marks=tuple(s.get("marks") or ()),
    )
