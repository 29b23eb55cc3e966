"""The SQLite dialect: the default store, one file, WAL, full durability by default.

Writers take the database lock at the start of their transaction (`BEGIN IMMEDIATE`), so two
runners on one file serialise their claims and never hand one occurrence to both; a busy
timeout makes the second wait instead of failing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .base import StoreError

BUSY_TIMEOUT_S = 30.0
MIN_SQLITE = (3, 35, 0)


def _journal_wal(conn: Any) -> None:
    """Switch to WAL. SQLite answers "locked" at once, without waiting on the busy timeout,
    while another process opening the same new file switches it too: try again, a while."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class SqliteDialect:
    """SQLite: `?` placeholders, `BEGIN IMMEDIATE`, no row locks (the database lock serialises)."""

    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
    skip_locked = ""
    lock_rows = ""
    ordered_lock = ""
    next_fence = "UPDATE counters SET value = value + 1 WHERE name = 'fence' RETURNING value"
    extra_migrations: Mapping[int, tuple[str, ...]] = MappingProxyType({})

    def __init__(self, path: str, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous

    def connect(self) -> Any:
        """A connection in autocommit mode (transactions are begun explicitly)."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:  # RETURNING, MATERIALIZED
            raise StoreError(
                f"the SQLite state store needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer;"
                f" this Python has {sqlite3.sqlite_version}: use a newer Python or PostgreSQL"
            )
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create {parent} for the state store: {e.strerror}") from e
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open the state store {self.path}: {e}") from e
        try:
            _journal_wal(conn)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"cannot open the state store {self.path}: {e}") from e
        return conn

    @contextmanager
    def write(self, conn: Any) -> Iterator[Any]:
        """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` on error."""
        cur = conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreError(f"the state store {self.path} is busy: {e}") from e
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    @contextmanager
    def read(self, conn: Any) -> Iterator[Any]:
        """A deferred transaction: one consistent snapshot of the WAL."""
        cur = conn.cursor()
        cur.execute("BEGIN")
        try:
            yield cur
        finally:
            conn.rollback()
            cur.close()

    def sql(self, statement: str) -> str:
        """SQLite takes `?` as written."""
        return statement

    def lock_migrations(self, cur: Any) -> None:
        """`BEGIN IMMEDIATE` already holds the write lock."""

    def is_busy(self, error: BaseException) -> bool:
        """A locked database."""
        return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)

    def is_broken(self, conn: Any) -> bool:
        """A file connection is never lost."""
        return False

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column IN (?, ...)`, a parameter a value."""
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    def rows(self, types: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        """`VALUES (?, ...), ...`, a parameter a value (SQLite keeps each value's own type)."""
        row = f"({', '.join('?' * len(types))})"
        return f"VALUES {', '.join([row] * len(rows))}", [x for r in rows for x in r]

    def refresh_statistics(self, cur: Any, inserted: Mapping[str, int]) -> None:
        """Nothing: without `ANALYZE` statistics SQLite takes every index to be selective,
        which is what the store's reads need."""
