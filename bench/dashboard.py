"""Benchmark the dashboard's pages on a big store: 100,000 members and 1,000,000 deliveries.

    python bench/dashboard.py [--members 100000] [--deliveries 1000000] [--repeat 30]
                              [--stores sqlite,postgres] [--explain]

A virtual run of the reference playbook (tests/test_web.py's `seed_run`, 20 days) gets, in bulk
through the store's own schema (engine/run/store/sql.py): `--members` members who joined over
those days, `--deliveries` member messages (97% sent, the rest skipped, retrying, dead or
uncertain), one welcome-call task per member (2% still open), and five events per member (2,000
violations). Then every page is asked for `--repeat` times after one warm-up, each request timed
from the first byte sent to the last byte received through the ASGI app in this process (the
server's handling: routing, auth, store reads, rendering; no network), and `sop status`'s
`service.status()` as many times. Reported: p50 and p95 per page, in milliseconds; the goal is
p95 < 200 ms. SQLite is a file on this disk (WAL,
synchronous=FULL); PostgreSQL a throwaway local server (tests/pgserver.py) when one can be
started. With `--explain`, every distinct statement a page sent to the store is printed with its
plan (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN (ANALYZE, BUFFERS), plan nodes only), so
the indexes each page reads by can be checked. Prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/

from sop.engine.run.store.codec import to_us  # noqa: E402
from sop.engine.web import DashboardSettings, create_dashboard_app  # noqa: E402

from tests.test_web import NOW, TOKEN, Seeded, seed_run  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # StarletteDeprecationWarning, a UserWarning
    from starlette.testclient import TestClient

PAGES = [
    "/",
    "/forecast",
    "/calendar",
    "/calendar?from=2026-12-13",  # the week before: ~50,000 member messages a day to count
    "/tasks",
    "/tasks?role=members",
    "/deliveries",
    "/members",
]
CHUNK = 20_000


def rows(seeded: Seeded, members: int, deliveries: int) -> dict[str, Iterator[tuple[Any, ...]]]:
    """The bulk rows per table, generated lazily (deterministic)."""
    rng = random.Random(11)
    run = seeded.run_id
    start = NOW - timedelta(days=19, hours=10, minutes=30)  # Dec 1, 00:00 local
    span = int((NOW - start).total_seconds())
    joined = [to_us(start + timedelta(seconds=rng.randrange(span))) for _ in range(members)]
    active = [j + rng.randrange(0, to_us(NOW) - j + 1) for j in joined]
    empty_state = json.dumps({"tier": None, "violations": 0}, separators=(",", ":"))

    def member_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(members):
            yield (run, f"b{i:06d}", empty_state, joined[i], None, active[i])

    def occurrence_rows() -> Iterator[tuple[Any, ...]]:
        states = (
            ["sent"] * 970 + ["skipped"] * 10 + ["retry"] * 5 + ["dead"] * 10 + ["uncertain"] * 5
        )
        for i in range(deliveries):
            m = i % members
            due = joined[m] + (i // members) * 3_600_000_000 + 600_000_000
            state = states[rng.randrange(1000)]
            reason = {"dead": "HTTP 400", "uncertain": "read timeout", "skipped": "missed"}.get(
                state, ""
            )
            yield (
                f"community-lifecycle/bulk-{i // members}/{m}/b{m:06d}",
                run,
                "welcome",
                None,
                "message",
                f"b{m:06d}",
                "member",
                "ops",
                "group",
                due,
                due,
                state,
                1,
                due,
                0,
                None,
                None,
                reason,
                due,
            )

    def task_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(members):
            due = joined[i] + 600_000_000
            done = rng.random() < 0.98
            yield (
                f"bulk-welcome-call/b{i:06d}",
                run,
                "members",
                "welcome-call",
                "welcome-call",
                f"24小时内一对一欢迎 b{i:06d}",
                due,
                f"b{i:06d}",
                "done" if done else "open",
                due,
                due + 3_600_000_000 if done else None,
                "bench" if done else None,
                None,
                None,
                None,
            )

    def event_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(members * 5):
            m = i % members
            kind = "joined" if i < members else "message"
            if i % 250 == 7:
                kind = "violation"
            at = joined[m] if kind == "joined" else joined[m] + rng.randrange(0, 10**11)
            yield (run, f"bulk-e{i}", kind, f"b{m:06d}", min(at, to_us(NOW)), "{}", at)

    return {
        "members (run, id, state, joined_at, left_at, last_active_at)": member_rows(),
        "occurrences (key, run, action, stage, kind, member, audience, owner, backend,"
        " scheduled_at, due_at, state, attempts, next_at, fence, lease_until, worker, reason,"
        " updated_at)": occurrence_rows(),
        "tasks (id, run, role, action, title, text, due_at, member, state, created_at, done_at,"
        " done_by, escalated_at, remote_id, backend)": task_rows(),
        "events (run, id, type, member, at, data, received_at)": event_rows(),
    }


def _chunks(it: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in it:
        batch.append(row)
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def fill_sqlite(path: Path, seeded: Seeded, members: int, deliveries: int) -> None:
    import sqlite3

    with sqlite3.connect(path) as c:
        for table, it in rows(seeded, members, deliveries).items():
            n = table.count(",") + 1
            sql = f"INSERT INTO {table} VALUES ({', '.join('?' * n)})"
            for batch in _chunks(it):
                c.executemany(sql, batch)
        c.execute("ANALYZE")


def fill_postgres(url: str, seeded: Seeded, members: int, deliveries: int) -> None:
    import psycopg

    with psycopg.connect(url) as c, c.cursor() as cur:
        for table, it in rows(seeded, members, deliveries).items():
            with cur.copy(f"COPY {table} FROM STDIN") as copy:
                for row in it:
                    copy.write_row(row)
        c.commit()
    # what autovacuum does to a store in use: visibility map set, statistics fresh
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("VACUUM ANALYZE")


def statements(seeded: Seeded) -> dict[str, list[tuple[str, Any]]]:
    """The distinct statements (with their first parameters) each page sends to the store."""
    from sop.engine.run.store import sql

    app = create_dashboard_app(
        seeded.program,
        seeded.store,
        seeded.run_id,
        DashboardSettings(token=TOKEN, clock=seeded.clock),
    )
    client = TestClient(
        app, base_url="http://127.0.0.1:8750", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    seen: list[tuple[str, Any]] = []
    execute = sql._Cursor.execute

    def record(self: Any, statement: str, params: Any = ()) -> None:
        seen.append((statement, params))
        execute(self, statement, params)

    out = {}
    sql._Cursor.execute = record
    try:
        for page in PAGES:
            seen.clear()
            client.get(page)
            out[page] = list({s: (s, p) for s, p in seen}.values())
    finally:
        sql._Cursor.execute = execute
    return out


def explain(kind: str, where: str, pages: dict[str, list[tuple[str, Any]]]) -> None:
    """Print each statement's plan (SQLite: `where` is the file; PostgreSQL: the URL)."""
    if kind == "sqlite":
        import sqlite3

        conn: Any = sqlite3.connect(where)

        def plan(statement: str, params: Any) -> list[str]:
            rows = conn.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
            return [r[3] for r in rows]
    else:
        import psycopg
        from sop.engine.run.store.postgres import PostgresDialect

        conn = psycopg.connect(where, autocommit=True)
        dialect = PostgresDialect(where)

        def plan(statement: str, params: Any) -> list[str]:
            q = "EXPLAIN (ANALYZE, BUFFERS) " + dialect.sql(statement)
            rows = [r[0] for r in conn.execute(q, params, prepare=False).fetchall()]
            keep = ("->", "Execution Time")
            return [r.strip() for i, r in enumerate(rows) if i == 0 or r.strip().startswith(keep)]

    for page, found in pages.items():
        print(f"\n  {page}")
        for statement, params in found:
            if statement.startswith(("SELECT MAX(version)", "SELECT COALESCE")):
                continue
            print(f"    {' '.join(statement.split())[:150]}")
            for line in plan(statement, params):
                print(f"        {line[:150]}")
    conn.close()


def measure(seeded: Seeded, repeat: int) -> dict[str, tuple[float, float]]:
    """p50 and p95 of each page's handling, in ms."""
    app = create_dashboard_app(
        seeded.program,
        seeded.store,
        seeded.run_id,
        DashboardSettings(token=TOKEN, clock=seeded.clock),
    )
    client = TestClient(
        app, base_url="http://127.0.0.1:8750", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    out = {}
    for page in PAGES:
        r = client.get(page)  # warm-up: templates compiled, caches filled
        assert r.status_code == 200, (page, r.status_code, r.text[:500])
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            client.get(page)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out[page] = (statistics.median(times), times[max(0, round(0.95 * len(times)) - 1)])
    # `sop status` on the same store: the stages, gates and lists the overview shares with it
    from sop.engine.run.service import status

    now = seeded.clock.now()
    status(seeded.program, seeded.store, seeded.run_id, now)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        status(seeded.program, seeded.store, seeded.run_id, now).as_dict()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    out["(sop status)"] = (statistics.median(times), times[max(0, round(0.95 * len(times)) - 1)])
    return out


def report(name: str, seconds: float, figures: dict[str, tuple[float, float]]) -> None:
    print(f"\n{name} (filled in {seconds:.0f} s)")
    print(f"  {'page':<28} {'p50 ms':>8} {'p95 ms':>8}")
    for page, (p50, p95) in figures.items():
        flag = "" if p95 < 200 else "  over the 200 ms goal"
        print(f"  {page:<28} {p50:8.1f} {p95:8.1f}{flag}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--deliveries", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--explain", action="store_true", help="print each page's statement plans")
    args = ap.parse_args()
    stores = args.stores.split(",")
    print(
        f"{args.members:,} members, {args.deliveries:,} deliveries, {args.repeat} requests a page"
    )
    with tempfile.TemporaryDirectory(prefix="sop-bench-dashboard-") as tmp:
        if "sqlite" in stores:
            path = Path(tmp) / "state.db"
            t = time.perf_counter()
            seeded = seed_run(f"sqlite:///{path}", Path(tmp))
            fill_sqlite(path, seeded, args.members, args.deliveries)
            seconds = time.perf_counter() - t
            report("SQLite", seconds, measure(seeded, args.repeat))
            if args.explain:
                explain("sqlite", str(path), statements(seeded))
            seeded.store.close()
        if "postgres" in stores:
            from tests.pgserver import PgUnavailable, start_server

            try:
                server = start_server()
            except PgUnavailable as e:
                print(f"\nPostgreSQL: not measured ({e})")
                return
            try:
                url = server.create_database()
                t = time.perf_counter()
                seeded = seed_run(url, Path(tmp))
                fill_postgres(url, seeded, args.members, args.deliveries)
                seconds = time.perf_counter() - t
                report("PostgreSQL", seconds, measure(seeded, args.repeat))
                if args.explain:
                    explain("postgres", url, statements(seeded))
                seeded.store.close()
            finally:
                server.stop()


if __name__ == "__main__":
    main()
