"""Fitting a rendered text into a platform's length limit: one policy for every backend.

Platforms count differently (WeCom robots count UTF-8 bytes, Telegram and Discord characters);
a backend states its limit and unit, and its policy: `split` into several messages at line or
sentence boundaries (each part marked `(1/3)`), or `truncate` with a visible marker. Nothing is
cut silently: a part that cannot be split at a boundary is cut at a character boundary (never
inside a UTF-8 sequence or a surrogate pair).
"""

from __future__ import annotations

import enum


class Unit(enum.StrEnum):
    """How a platform counts a message's length."""

    BYTES = "bytes"  # UTF-8 bytes
    CHARS = "chars"  # Unicode code points
    UTF16 = "utf16"  # UTF-16 code units (Telegram counts these)


class Policy(enum.StrEnum):
    """What to do with a text longer than the limit."""

    SPLIT = "split"
    TRUNCATE = "truncate"


TRUNCATED = "…(truncated)"
MAX_PARTS = 10  # more parts than this is not a message any more: the rest is truncated


def size(text: str, unit: Unit) -> int:
    """The length of `text` as the platform counts it."""
    if unit is Unit.BYTES:
        return len(text.encode("utf-8"))
    if unit is Unit.UTF16:
        return len(text.encode("utf-16-le")) // 2
    return len(text)


def _cut(text: str, limit: int, unit: Unit) -> str:
    """The longest prefix of `text` that fits `limit` (at a code-point boundary)."""
    if size(text, unit) <= limit:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # binary search on code points: sizes are monotone in the prefix length
        mid = (lo + hi + 1) // 2
        if size(text[:mid], unit) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def _boundary(chunk: str) -> int:
    """Where to end a part inside `chunk`: after its last line break or sentence end."""
    for seps in (("\n\n",), ("\n",), ("。", "！", "？", ". ", "! ", "? "), ("，", ", ", " ")):
        best = max(chunk.rfind(s) + len(s) if chunk.rfind(s) >= 0 else -1 for s in seps)
        if best > len(chunk) // 3:  # not a tiny first part
            return best
    return len(chunk)


def truncate(text: str, limit: int, unit: Unit, marker: str = TRUNCATED) -> str:
    """`text` cut to `limit` with `marker` at the end (the marker counts)."""
    if size(text, unit) <= limit:
        return text
    room = max(0, limit - size(marker, unit))
    return _cut(text, room, unit).rstrip() + marker if room else _cut(marker, limit, unit)


def split(text: str, limit: int, unit: Unit) -> list[str]:
    """`text` as parts that each fit `limit`, numbered `(i/n)` when there is more than one."""
    if size(text, unit) <= limit:
        return [text]
    tag = f" ({MAX_PARTS}/{MAX_PARTS})"  # room for the widest numbering
    room = limit - size(tag, unit)
    if room < 16:
        return [truncate(text, limit, unit)]
    parts: list[str] = []
    rest = text
    while rest and len(parts) < MAX_PARTS:
        chunk = _cut(rest, room, unit)
        if chunk == rest:
            parts.append(rest)
            rest = ""
            break
        end = _boundary(chunk)
        parts.append(chunk[:end].rstrip())
        rest = rest[end:].lstrip()
    if rest:  # beyond MAX_PARTS: the last part says it was cut
        parts[-1] = truncate(parts[-1] + " " + rest, room, unit)
    n = len(parts)
    return [f"{p} ({i}/{n})" for i, p in enumerate(parts, 1)]


def fit(text: str, limit: int | None, unit: Unit, policy: Policy) -> list[str]:
    """The message(s) to send for `text` under a platform's limit."""
    if limit is None or size(text, unit) <= limit:
        return [text]
    return split(text, limit, unit) if policy is Policy.SPLIT else [truncate(text, limit, unit)]
