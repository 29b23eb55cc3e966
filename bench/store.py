"""Benchmark the state store's dispatch loop: claim a batch, record it sent, until none is left.

    python bench/store.py [--rounds 3] [--occurrences 2000]

One runner, one connection, the loop `sop run` turns: `claim(limit=batch)` then `record()` of the
whole batch as SENT, each a committed transaction. Stores: SQLite (WAL, synchronous=FULL, the
default) on a file on this disk, and PostgreSQL on a throwaway local server with fsync on,
started as the tests start theirs (tests/pgserver.py). Every measurement starts from a fresh
database holding the occurrences, all due; rounds alternate the store order (A B, B A) and the
median is reported, in occurrences per second. Prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/pgserver.py

from sop.engine.run.store import open_store  # noqa: E402
from sop.engine.run.store.base import (  # noqa: E402
    NewOccurrence,
    OccurrenceState,
    Outcome,
    RunRecord,
)

from tests.pgserver import start_server  # noqa: E402

BATCHES = (1, 10, 50, 200)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
RUN = "bench"


def fill(url: str, n: int) -> None:
    """A new run with `n` occurrences, all due at T0."""
    store = open_store(url)
    store.create_run(RunRecord(RUN, "bench", "1", T0, {}, T0, T0, T0))
    items = [
        NewOccurrence(
            f"o{i:06d}", "welcome", "s", "member", f"m{i}", "member", "ops", "group", T0, T0
        )
        for i in range(n)
    ]
    assert store.add_occurrences(RUN, items) == n
    store.close()


def dispatch(url: str, batch: int) -> tuple[int, float]:
    """Claim and record until nothing is left; (occurrences, seconds)."""
    store = open_store(url)
    now, lease = T0 + timedelta(minutes=1), T0 + timedelta(hours=1)
    done = 0
    started = time.perf_counter()
    while claimed := store.claim(RUN, now, batch, lease, "bench"):
        outcomes = [Outcome(o.key, o.fence, OccurrenceState.SENT, now) for o in claimed]
        assert store.record(RUN, outcomes, "bench") == []
        done += len(claimed)
    elapsed = time.perf_counter() - started
    store.close()
    return done, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--occurrences", type=int, default=2000, help="per measurement (batch>1)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sop-bench-store-"))
    server = start_server()
    try:
        files = iter(range(1_000_000))
        stores: dict[str, Callable[[], str]] = {
            "SQLite FULL": lambda: f"sqlite:///{work / f'state{next(files)}.db'}",
            "PostgreSQL": server.create_database,
        }
        print(f"occurrences/s, median of {args.rounds} rounds (claim + record per batch)")
        print(f"{'batch':>6} | " + " | ".join(f"{name:>12}" for name in stores))
        for batch in BATCHES:
            n = min(args.occurrences, 300) if batch == 1 else args.occurrences
            rates: dict[str, list[float]] = {name: [] for name in stores}
            for r in range(args.rounds):
                order = list(stores) if r % 2 == 0 else list(stores)[::-1]
                for name in order:
                    url = stores[name]()
                    fill(url, n)
                    done, seconds = dispatch(url, batch)
                    assert done == n
                    rates[name].append(done / seconds)
            cells = " | ".join(f"{statistics.median(rates[name]):>12,.0f}" for name in stores)
            print(f"{batch:>6} | {cells}", flush=True)
    finally:
        server.stop()
        for f in work.iterdir():
            f.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
