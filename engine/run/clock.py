"""Clocks: the real one, and a virtual one that jumps to the next due instant (tests, dry runs)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class RealClock:
    """Wall-clock time; `sleep_until` waits, and returns early when `wake()` is called."""

    jumps = False

    def __init__(self) -> None:
        self._wake = threading.Event()

    def now(self) -> datetime:
        """The current instant, in UTC."""
        return datetime.now(UTC)

    def sleep_until(self, t: datetime) -> None:
        """Wait until `t` (or a wake-up)."""
        delay = (t - self.now()).total_seconds()
        if delay > 0:
            self._wake.wait(delay)
        self._wake.clear()

    def wake(self) -> None:
        """End a wait early: there may be new work (an event arrived)."""
        self._wake.set()


class VirtualClock:
    """Time that moves only when the runner sleeps: each sleep jumps straight to its end."""

    jumps = True  # the runner need not poll: nothing happens between its sleeps

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a clock keeps aware instants")
        self._now = start

    def now(self) -> datetime:
        """The current virtual instant."""
        return self._now

    def sleep_until(self, t: datetime) -> None:
        """Jump to `t` (never backwards)."""
        if t > self._now:
            self._now = t

    def advance(self, seconds: float) -> None:
        """Move on by `seconds` (tests)."""
        from datetime import timedelta

        self._now += timedelta(seconds=seconds)


def monotonic_ms() -> float:
    """Milliseconds on a monotonic clock (for measuring, never for scheduling)."""
    return time.monotonic() * 1000.0


__all__ = ["UTC", "RealClock", "VirtualClock", "monotonic_ms"]
