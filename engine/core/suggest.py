""" "Did you mean": the one place that picks a close name for a misspelt one."""

from __future__ import annotations

from collections.abc import Iterable


def close_match(name: str, options: Iterable[object]) -> str | None:
    """The option closest to `name` (difflib's ratio of at least 0.6), or None."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(o) for o in options], 1)
    return close[0] if close else None


def did_you_mean(name: str, options: Iterable[object]) -> str | None:
    """ "did you mean `x`?" for the option closest to `name`, or None when none is close."""
    close = close_match(name, options)
    return f"did you mean `{close}`?" if close else None
