"""The PostgreSQL dialect (the `[postgres]` extra, psycopg 3): several runners on one database.

Claims select their rows `FOR UPDATE SKIP LOCKED`, so concurrent runners take disjoint batches
without waiting on each other; rows about to be updated from a read are locked `FOR UPDATE`.
psycopg is imported only when a PostgreSQL store is opened (it costs ~170 ms).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from .base import StoreError

MIGRATION_LOCK = 7_405_011  # pg_advisory_xact_lock key: one migrating process at a time


@lru_cache(maxsize=256)
def _translate(statement: str) -> str:
    return statement.replace("?", "%s")


class PostgresDialect:
    """PostgreSQL: `%s` placeholders, row locks, `SKIP LOCKED` claims."""

    serial = "BIGSERIAL PRIMARY KEY"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    lock_rows = " FOR UPDATE"
    ordered_lock = " ORDER BY key FOR UPDATE"

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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
