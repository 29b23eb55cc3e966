"""An Occurrence — one due action — and its idempotency key, the same in plan, simulate and run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache


def occurrence_key(
    playbook: str, action: str, scheduled: datetime, member: str | None = None
) -> str:
    """The idempotency key of one occurrence: the same in plan, simulate and run."""
    key = f"{playbook}/{action}/{_utc_text(scheduled)}"
    return f"{key}/{member}" if member else key


@lru_cache(maxsize=262144)
def _utc_text(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One due action: when it was scheduled, when it goes out, and who does it."""

    key: str
    action: str
    stage: str | None
    kind: str
    scheduled: datetime
    at: datetime
    owner: str | None
    audience: str
    backend: str | None
    reason: str = ""
    member: str | None = None
