"""The PostgreSQL dialect (the `[postgres]` extra, psycopg 3): several runners on one database.

Claims select their rows `FOR UPDATE SKIP LOCKED`, so concurrent runners take disjoint batches
without waiting on each other; rows about to be updated from a read are locked `FOR UPDATE`.
psycopg is imported only when a PostgreSQL store is opened (it costs ~170 ms).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from .base import StoreError

MIGRATION_LOCK = 7_405_011  # pg_advisory_xact_lock key: one migrating process at a time
BULK_ROWS = 1_000  # a write inserting this many rows into a table may leave its statistics stale


@lru_cache(maxsize=256)
def _translate(statement: str) -> str:
    return statement.replace("?", "%s")


class PostgresDialect:
    """PostgreSQL: `%s` placeholders, row locks, `SKIP LOCKED` claims."""

    serial = "BIGSERIAL PRIMARY KEY"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    lock_rows = " FOR UPDATE"
    ordered_lock = " ORDER BY key FOR UPDATE"
    # Fencing tokens from a sequence: `nextval` takes no row lock, so concurrent runners' claims
    # no longer queue on the one counter row until each commits. The sequence starts after the
    # last token the counter row handed out (which it no longer counts on PostgreSQL).
    next_fence = "SELECT nextval('fences')"
    extra_migrations: Mapping[int, tuple[str, ...]] = MappingProxyType(
        {
            5: (
                "CREATE SEQUENCE fences",
                "SELECT setval('fences', GREATEST(value, 1), value > 0) FROM counters"
                " WHERE name = 'fence'",
            )
        }
    )

    def __init__(self, url: str) -> None:
        self.url = url

    def connect(self) -> Any:
        """An autocommit connection (transactions are begun explicitly)."""
        try:
            import psycopg
        except ImportError as e:
            raise StoreError(
                "a PostgreSQL state store needs psycopg: pip install 'sop[postgres]'"
            ) from e
        try:
            # prepare_threshold=None: statements with long `IN (...)` lists get a plan for their
            # values each time; a prepared generic plan filtered every row of the run (5x slower)
            if "connect_timeout" in self.url:  # the URL's own says how long to wait
                return psycopg.connect(self.url, autocommit=True, prepare_threshold=None)
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=10, prepare_threshold=None
            )
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to the state store: {_first_line(e)}") from e

    @contextmanager
    def write(self, conn: Any) -> Iterator[Any]:
        """One transaction; committed on success, rolled back on error."""
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def read(self, conn: Any) -> Iterator[Any]:
        """A repeatable-read snapshot is not needed for these reads: one statement each."""
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def sql(self, statement: str) -> str:
        """`?` placeholders as psycopg's `%s`."""
        return _translate(statement)

    def lock_migrations(self, cur: Any) -> None:
        """Serialise concurrent migrations with a transaction-scoped advisory lock."""
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def is_busy(self, error: BaseException) -> bool:
        """A lost connection or a serialisation failure."""
        try:
            import psycopg
        except ImportError:
            return False
        return isinstance(error, psycopg.OperationalError)

    def is_broken(self, conn: Any) -> bool:
        """A connection the server or the network dropped."""
        return bool(conn.closed or getattr(conn, "broken", False))

    # Batches travel as one array a column: a statement of 200 rows is then short and the same
    # each time, where `VALUES` with 1,400 placeholders made psycopg re-parse 20 kB of SQL in
    # Python on every call (a third of a dispatch's time: bench/run.py under py-spy).
    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column = ANY(?)`: the values as one text array."""
        return f"{column} = ANY(CAST(? AS TEXT[]))", [list(values)]

    def rows(self, types: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        """`SELECT * FROM unnest(?, ...)`: an array a column, in row order."""
        casts = ", ".join(f"CAST(? AS {t}[])" for t in types)
        columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in types]
        return f"SELECT * FROM unnest({casts})", columns

    def refresh_statistics(self, cur: Any, inserted: Mapping[str, int]) -> None:
        """`ANALYZE` a table that a bulk insert has made more than twice as big as its
        statistics say (or that has none yet).

        Without them the planner takes `run = ?` to match a handful of rows and answers a
        lookup of 200 keys by reading the whole run (15x slower claims and records right after
        a large import: bench/run.py); autovacuum would analyze it only up to a minute later.
        """
        for table, n in inserted.items():
            if n < BULK_ROWS:
                continue
            cur.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (table,))
            row = cur.fetchone()
            if row is not None and n > max(float(row[0]), 0.0):  # -1: never analyzed
                cur.execute(f"ANALYZE {table}")  # one of the store's own tables, by name


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
