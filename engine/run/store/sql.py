"""The SQL state store, shared by SQLite and PostgreSQL: one schema, one set of statements.

A dialect (engine/run/store/sqlite.py, postgres.py) supplies the connection, how a write
transaction begins (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: row locks with `SKIP LOCKED`), the
placeholder style, a few type names, and how a batch of values travels: `any_of` and `rows`
(SQLite: `IN (?, ...)` and `VALUES`; PostgreSQL: one array parameter a column, so a batch of 200
is a short statement of a few parameters). Statements are written with `?` placeholders.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from .base import (
    CLAIMABLE,
    MEMBER_COUNT_CAP,
    NO_ROLE,
    ApplicationRecord,
    ApplicationState,
    AttemptRecord,
    AuditEntry,
    Deriver,
    EventRecord,
    ForecastRecord,
    GateEvaluation,
    IncidentRecord,
    IncidentState,
    IngestContext,
    LedgerEntry,
    MemberFacts,
    MemberRecord,
    MemberTime,
    MetricValue,
    NewOccurrence,
    OccurrenceRecord,
    OccurrenceState,
    Outcome,
    Page,
    PointsKind,
    Resolution,
    RunRecord,
    StoreError,
    TaskRecord,
    TaskState,
    TransitionRecord,
)
from .codec import (
    dumps,
    from_us,
    member_attributes,
    member_from,
    member_state,
    metric_value,
    opt_dt,
    opt_us,
    to_us,
)

WINDOW_US = 60_000_000  # a rate is per minute: the window is the last 60 s
CHUNK = 400  # rows per multi-row statement (SQLite allows 32,766 parameters)
# the claimable states as SQL: written out, not bound, so the partial index on them is usable
CLAIMABLE_SQL = "(" + ", ".join(f"'{s}'" for s in CLAIMABLE) + ")"

# Numbered migrations: a store at version N has applied 1..N. Never edit a released one; add.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY, playbook TEXT NOT NULL, version TEXT NOT NULL,
            origin BIGINT NOT NULL, lifecycle TEXT NOT NULL, checked_until BIGINT NOT NULL,
            scheduled_until BIGINT NOT NULL, derived_until BIGINT NOT NULL, rev BIGINT NOT NULL)""",
        """CREATE TABLE occurrences (
            run TEXT NOT NULL, key TEXT NOT NULL, action TEXT NOT NULL, stage TEXT,
            kind TEXT NOT NULL, member TEXT, audience TEXT NOT NULL, owner TEXT, backend TEXT,
            scheduled_at BIGINT NOT NULL, due_at BIGINT NOT NULL, state TEXT NOT NULL,
            attempts INTEGER NOT NULL, next_at BIGINT NOT NULL, fence BIGINT NOT NULL,
            lease_until BIGINT, worker TEXT, reason TEXT NOT NULL, updated_at BIGINT NOT NULL,
            PRIMARY KEY (run, key))""",
        "CREATE INDEX occurrences_claimable ON occurrences (run, state, next_at)",
        "CREATE INDEX occurrences_due ON occurrences (run, due_at)",
        """CREATE TABLE attempts (
            run TEXT NOT NULL, key TEXT NOT NULL, fence BIGINT NOT NULL, attempt INTEGER NOT NULL,
            at BIGINT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL,
            PRIMARY KEY (run, key, fence))""",
        """CREATE TABLE events (
            run TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, member TEXT NOT NULL,
            at BIGINT NOT NULL, data TEXT NOT NULL, received_at BIGINT NOT NULL,
            PRIMARY KEY (run, id))""",
        "CREATE INDEX events_at ON events (run, at)",
        """CREATE TABLE members (
            run TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, joined_at BIGINT,
            left_at BIGINT, last_active_at BIGINT, PRIMARY KEY (run, id))""",
        "CREATE INDEX members_joined ON members (run, joined_at)",
        "CREATE INDEX members_active ON members (run, last_active_at)",
        """CREATE TABLE metric_values (
            run TEXT NOT NULL, name TEXT NOT NULL, day TEXT NOT NULL, value DOUBLE PRECISION,
            source TEXT NOT NULL, PRIMARY KEY (run, name, day, source))""",
        """CREATE TABLE gate_evaluations (
            seq {serial}, run TEXT NOT NULL, stage TEXT NOT NULL, at BIGINT NOT NULL,
            holds INTEGER NOT NULL, vals TEXT NOT NULL, note TEXT NOT NULL)""",
        """CREATE TABLE transitions (
            seq {serial}, run TEXT NOT NULL, at BIGINT NOT NULL, stage TEXT NOT NULL,
            event TEXT NOT NULL, detail TEXT NOT NULL, role TEXT, evidence TEXT NOT NULL)""",
        """CREATE TABLE tasks (
            run TEXT NOT NULL, id TEXT NOT NULL, role TEXT, action TEXT NOT NULL,
            title TEXT NOT NULL, text TEXT NOT NULL, due_at BIGINT NOT NULL, member TEXT,
            state TEXT NOT NULL, created_at BIGINT NOT NULL, done_at BIGINT, done_by TEXT,
            escalated_at BIGINT, PRIMARY KEY (run, id))""",
        """CREATE TABLE audit (
            seq {serial}, run TEXT NOT NULL, at BIGINT NOT NULL, actor TEXT NOT NULL,
            action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL)""",
        "CREATE INDEX audit_run ON audit (run, seq)",
        """CREATE TABLE rate_limits (
            target TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL,
            updated_at BIGINT NOT NULL)""",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO counters (name, value) VALUES ('fence', 0)",
    ),
    (
        # tasks that complete when a platform confirms a send (WeCom customer-group mass sends)
        "ALTER TABLE tasks ADD COLUMN remote_id TEXT",
        "ALTER TABLE tasks ADD COLUMN backend TEXT",
    ),
    (
        # `sop simulate --save-forecast`: the forecast the dashboard draws the actual values over
        """CREATE TABLE forecasts (
            playbook TEXT NOT NULL, created_at BIGINT NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (playbook, created_at))""",
    ),
    (
        # expired leases are found by index, not by a scan of the run's history
        "CREATE INDEX occurrences_leases ON occurrences (run, state, lease_until)",
        # what the daily metrics read of every member, without decoding its state
        "ALTER TABLE members ADD COLUMN referrer TEXT",
        "ALTER TABLE members ADD COLUMN tier TEXT",
    ),
    (
        # bounded reads by index (the dashboard, `sop status`): per state, by due time; `member`
        # in it answers "messages to members due that day, per state" from the index alone
        "CREATE INDEX occurrences_state_due ON occurrences (run, state, due_at, member)",
        # claims walk the claimable ones in claim order and stop at the batch, nothing sorted;
        # partial indexes hold only the rows in those states, so most updates skip them
        "CREATE INDEX occurrences_claimable_at ON occurrences (run, next_at, key)"
        f" WHERE state IN {CLAIMABLE_SQL}",
        "CREATE INDEX occurrences_claimed ON occurrences (run, lease_until)"
        " WHERE state = 'claimed'",
        "DROP INDEX occurrences_claimable",  # (run, state, next_at): the three above serve it
        "DROP INDEX occurrences_leases",
        "CREATE INDEX tasks_due ON tasks (run, state, due_at)",
        "CREATE INDEX tasks_done ON tasks (run, state, done_at)",
        "CREATE INDEX events_type ON events (run, type, at)",
        # silence counts among current members only: `left_at IS NULL` is the index's predicate
        "CREATE INDEX members_current_active ON members (run, last_active_at)"
        " WHERE left_at IS NULL",
        "DROP INDEX members_active",  # every read of last_active_at is of current members
    ),
    (
        # rate limits as a sliding window: what was granted in the last minute, per target, so
        # no minute ever holds more than the platform's limit (a token bucket allows twice it)
        "CREATE TABLE rate_sends (target TEXT NOT NULL, at BIGINT NOT NULL, n INTEGER NOT NULL)",
        "CREATE INDEX rate_sends_target ON rate_sends (target, at)",
    ),
    (
        # issue 12: members with attributes, channels and teams; points; applications;
        # incidents; which exit a stage took; the daily metric history read by window
        "ALTER TABLE members ADD COLUMN attributes TEXT",  # JSON; NULL: kept in `state` (older)
        "ALTER TABLE members ADD COLUMN source TEXT",
        "ALTER TABLE members ADD COLUMN team TEXT",
        "CREATE INDEX members_team ON members (run, team) WHERE left_at IS NULL",
        "ALTER TABLE transitions ADD COLUMN exit TEXT",
        "ALTER TABLE gate_evaluations ADD COLUMN exit TEXT",
        """CREATE TABLE points_ledger (
            run TEXT NOT NULL, key TEXT NOT NULL, member TEXT NOT NULL, at BIGINT NOT NULL,
            points BIGINT NOT NULL, kind TEXT NOT NULL, item TEXT, detail TEXT NOT NULL,
            PRIMARY KEY (run, key))""",
        "CREATE INDEX points_member ON points_ledger (run, member, at)",
        """CREATE TABLE applications (
            run TEXT NOT NULL, member TEXT NOT NULL, state TEXT NOT NULL,
            applied_at BIGINT NOT NULL, decided_at BIGINT, decided_by TEXT, note TEXT NOT NULL,
            task TEXT, PRIMARY KEY (run, member))""",
        "CREATE INDEX applications_state ON applications (run, state, applied_at)",
        """CREATE TABLE incidents (
            run TEXT NOT NULL, id TEXT NOT NULL, incident TEXT NOT NULL, state TEXT NOT NULL,
            opened_at BIGINT NOT NULL, opened_by TEXT NOT NULL, note TEXT NOT NULL,
            detected INTEGER NOT NULL, closed_at BIGINT, closed_by TEXT,
            close_note TEXT NOT NULL, PRIMARY KEY (run, id))""",
        "CREATE INDEX incidents_opened ON incidents (run, state, opened_at)",
        # window functions (avg/min/max over N days) read every metric of the last days
        "CREATE INDEX metric_values_day ON metric_values (run, day)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_OCC_COLUMNS = (
    "key, run, action, stage, kind, member, audience, owner, backend, scheduled_at, due_at,"
    " state, attempts, next_at, fence, lease_until, worker, reason, updated_at"
)
_OCC_TYPES = (
    *("TEXT",) * 9, "BIGINT", "BIGINT", "TEXT", "INTEGER", "BIGINT", "BIGINT", "BIGINT", "TEXT",
    "TEXT", "BIGINT",
)  # fmt: skip
_TASK_COLUMNS = (
    "id, run, role, action, title, text, due_at, member, state, created_at, done_at, done_by,"
    " escalated_at, remote_id, backend"
)
_MEMBER_COLUMNS = "id, state, joined_at, left_at, last_active_at, attributes, source, team"
_INCIDENT_COLUMNS = (
    "id, incident, state, opened_at, opened_by, note, detected, closed_at, closed_by, close_note"
)
_APPLICATION_COLUMNS = "member, state, applied_at, decided_at, decided_by, note, task"
_LEDGER_COLUMNS = "key, member, at, points, kind, item, detail"


class Dialect(Protocol):
    """What differs between SQLite and PostgreSQL."""

    serial: str  # an auto-numbered integer primary key column type
    skip_locked: str  # appended to a claim's inner SELECT ("" when writers are serialised)
    lock_rows: str  # appended to a SELECT that is followed by updates of its rows
    ordered_lock: str  # " ORDER BY key FOR UPDATE" where rows are locked (SQLite: "", no scan)
    next_fence: str  # a statement whose one row and column is a new fencing token
    # statements this dialect runs after a version's shared ones (a migration number -> them)
    extra_migrations: Mapping[int, tuple[str, ...]]

    def connect(self) -> Any:
        """A new DB-API connection."""
        ...

    @contextmanager
    def write(self, conn: Any) -> Iterator[Any]:
        """A write transaction (committed on success, rolled back on error); a cursor."""
        ...

    @contextmanager
    def read(self, conn: Any) -> Iterator[Any]:
        """A read (a consistent snapshot where the database offers one); a cursor."""
        ...

    def sql(self, statement: str) -> str:
        """The statement in the driver's placeholder style."""
        ...

    def lock_migrations(self, cur: Any) -> None:
        """Serialise concurrent migrations (inside the migration transaction)."""
        ...

    def is_busy(self, error: BaseException) -> bool:
        """Whether an error means the database is locked or unreachable (said, not raised raw)."""
        ...

    def is_broken(self, conn: Any) -> bool:
        """Whether a connection was lost (the next transaction opens a new one)."""
        ...

    def refresh_statistics(self, cur: Any, inserted: Mapping[str, int]) -> None:
        """After a write that inserted rows (table -> how many): refresh the planner's
        statistics where a bulk insert leaves them misleading (inside a write transaction)."""
        ...

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """A condition that `column` is one of `values` (at least one), and its parameters."""
        ...

    def rows(self, types: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        """A query whose result is `rows` (columns of the SQL `types`: the body of a `WITH`, or
        a subquery), and its parameters."""
        ...


def redact(url: str) -> str:
    """A store URL fit for messages and logs: its password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _chunks(items: Sequence[Any], n: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class SqlStore:
    """A state store on a SQL database (see the module docstring)."""

    def __init__(self, url: str, dialect: Dialect) -> None:
        self.url = url
        self._d = dialect
        self._lock = threading.RLock()  # one connection, shared by a server's threads
        self._conn = dialect.connect()
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self._lock, self._said(), self._d.write(self._connection()) as cur:
            yield _Cursor(cur, self._d)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self._lock, self._said(), self._d.read(self._connection()) as cur:
            yield _Cursor(cur, self._d)

    def _connection(self) -> Any:
        """The connection, a new one when it was lost (a restarted server, a network cut)."""
        if self._d.is_broken(self._conn):
            self._conn.close()
            self._conn = self._d.connect()
        return self._conn

    @contextmanager
    def _said(self) -> Iterator[None]:
        """A locked or unreachable database as a `StoreError` (the transaction rolled back)."""
        try:
            yield
        except StoreError:
            raise
        except Exception as e:
            if not self._d.is_busy(e):
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise StoreError(f"the state store {redact(self.url)} is unavailable: {first}") from e

    def _migrate(self) -> None:
        with self._write() as cur:
            self._d.lock_migrations(cur.raw)
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
            )
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            current = int(cur.fetchone()[0])
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the store {redact(self.url)} is at schema version {current}; this sop knows"
                    f" {SCHEMA_VERSION}: upgrade sop"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    cur.execute(statement.replace("{serial}", self._d.serial))
                for statement in self._d.extra_migrations.get(version, ()):
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, to_us(datetime.now().astimezone())),
                )

    def close(self) -> None:
        """Release the connection."""
        with self._lock:
            self._conn.close()

    def schema_version(self) -> int:
        """The schema version the store is at."""
        with self._read() as cur:
            cur.execute("SELECT MAX(version) FROM schema_migrations")
            return int(cur.fetchone()[0])

    def _with(
        self, name: str, columns: str, types: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        """`WITH name (columns) AS (...)` holding `rows`, and its parameters."""
        body, params = self._d.rows(types, rows)
        return f"WITH {name} ({columns}) AS ({body})", params

    def _insert(
        self,
        cur: Any,
        table: str,
        columns: str,
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict: str,
    ) -> None:
        """Insert `rows` in one statement; `conflict` is its `ON CONFLICT` clause (a RETURNING
        clause may follow). It starts with INSERT, not WITH: Python's sqlite3 counts the rows
        of statements that do."""
        body, params = self._d.rows(types, rows)
        cur.execute(
            f"INSERT INTO {table} ({columns}) SELECT * FROM ({body}) AS v"
            f" WHERE true ON CONFLICT {conflict}",  # WHERE: how SQLite parses an upsert here
            params,
        )

    def _audit(self, cur: Any, run_id: str, actor: str, action: str, subject: str, detail: Any):
        cur.execute(
            "INSERT INTO audit (run, at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, to_us(datetime.now().astimezone()), actor, action, subject, dumps(detail)),
        )

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> bool:
        """Insert a run; False when one with its id exists (nothing changed)."""
        with self._write() as cur:
            cur.execute(
                "INSERT INTO runs (id, playbook, version, origin, lifecycle, checked_until,"
                " scheduled_until, derived_until, rev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    run.id,
                    run.playbook,
                    run.version,
                    to_us(run.origin),
                    dumps(run.lifecycle),
                    to_us(run.checked_until),
                    to_us(run.scheduled_until),
                    to_us(run.derived_until),
                ),
            )
            created = cur.rowcount == 1
            if created:
                self._audit(
                    cur, run.id, "runner", "run.created", run.id, {"origin": str(run.origin)}
                )
            return created

    @staticmethod
    def _run(row: Sequence[Any]) -> RunRecord:
        return RunRecord(
            id=row[0],
            playbook=row[1],
            version=row[2],
            origin=from_us(row[3]),
            lifecycle=json.loads(row[4]),
            checked_until=from_us(row[5]),
            scheduled_until=from_us(row[6]),
            derived_until=from_us(row[7]),
            rev=int(row[8]),
        )

    _RUN_COLUMNS = (
        "id, playbook, version, origin, lifecycle, checked_until, scheduled_until,"
        " derived_until, rev"
    )

    def get_run(self, run_id: str) -> RunRecord | None:
        """A run by id."""
        with self._read() as cur:
            cur.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
            row = cur.fetchone()
            return self._run(row) if row else None

    def runs(self) -> list[RunRecord]:
        """Every run."""
        with self._read() as cur:
            cur.execute(f"SELECT {self._RUN_COLUMNS} FROM runs ORDER BY id")
            return [self._run(r) for r in cur.fetchall()]

    def save_run(
        self,
        run: RunRecord,
        transitions: Sequence[TransitionRecord] = (),
        evaluations: Sequence[GateEvaluation] = (),
        metrics: Sequence[MetricValue] = (),
        occurrences: Sequence[NewOccurrence] = (),
        incidents: Sequence[IncidentRecord] = (),
    ) -> RunRecord | None:
        """Save a run if its rev is still current, with what happened; the saved run or None."""
        with self._write() as cur:
            cur.execute(
                "UPDATE runs SET lifecycle = ?, checked_until = ?, scheduled_until = ?,"
                " derived_until = ?, rev = rev + 1 WHERE id = ? AND rev = ?",
                (
                    dumps(run.lifecycle),
                    to_us(run.checked_until),
                    to_us(run.scheduled_until),
                    to_us(run.derived_until),
                    run.id,
                    run.rev,
                ),
            )
            if cur.rowcount != 1:
                return None
            cur.executemany(
                "INSERT INTO transitions (run, at, stage, event, detail, role, evidence, exit)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (run.id, to_us(t.at), t.stage, t.event, t.detail, t.role, dumps(t.evidence),
                     t.exit)
                    for t in transitions
                ],
            )  # fmt: skip
            for t in transitions:
                self._audit(cur, run.id, "runner", f"stage.{t.event}", t.stage, dict(t.evidence))
            cur.executemany(
                "INSERT INTO gate_evaluations (run, stage, at, holds, vals, note, exit)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (run.id, e.stage, to_us(e.at), int(e.holds), dumps(e.values), e.note, e.exit)
                    for e in evaluations
                ],
            )
            cur.executemany(
                "INSERT INTO metric_values (run, name, day, value, source) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (run, name, day, source) DO UPDATE SET value = excluded.value",
                [
                    (run.id, m.name, m.day.isoformat(), metric_value(m.value), m.source)
                    for m in metrics
                ],
            )
            new = self._insert_occurrences(cur, run.id, occurrences)
            for i in incidents:
                self._insert_incident(cur, run.id, i)
            self._d.refresh_statistics(cur.raw, {"occurrences": new})
        return RunRecord(
            run.id,
            run.playbook,
            run.version,
            run.origin,
            run.lifecycle,
            run.checked_until,
            run.scheduled_until,
            run.derived_until,
            run.rev + 1,
        )

    # -- occurrences -----------------------------------------------------------------------

    def _insert_occurrences(self, cur: Any, run_id: str, items: Sequence[NewOccurrence]) -> int:
        if not items:
            return 0
        now = to_us(datetime.now().astimezone())
        new = 0
        for chunk in _chunks(items, CHUNK // 2):
            rows: list[tuple[Any, ...]] = []
            for o in chunk:
                rows.append(
                    (
                        o.key,
                        run_id,
                        o.action,
                        o.stage,
                        o.kind,
                        o.member,
                        o.audience,
                        o.owner,
                        o.backend,
                        to_us(o.scheduled_at),
                        to_us(o.due_at),
                        str(o.state),
                        0,
                        to_us(o.due_at),
                        0,
                        None,
                        None,
                        o.reason,
                        now,
                    )
                )
            self._insert(
                cur, "occurrences", _OCC_COLUMNS, _OCC_TYPES, rows, "(run, key) DO NOTHING"
            )
            new += max(cur.rowcount, 0)
        return new

    def add_occurrences(self, run_id: str, items: Sequence[NewOccurrence]) -> int:
        """Insert occurrences, ignoring keys present; how many were new."""
        with self._write() as cur:
            new = self._insert_occurrences(cur, run_id, items)
            self._d.refresh_statistics(cur.raw, {"occurrences": new})
            return new

    @staticmethod
    def _occ(row: Sequence[Any]) -> OccurrenceRecord:
        return OccurrenceRecord(
            key=row[0],
            run=row[1],
            action=row[2],
            stage=row[3],
            kind=row[4],
            member=row[5],
            audience=row[6],
            owner=row[7],
            backend=row[8],
            scheduled_at=from_us(row[9]),
            due_at=from_us(row[10]),
            state=OccurrenceState(row[11]),
            attempts=int(row[12]),
            next_at=from_us(row[13]),
            fence=int(row[14]),
            lease_until=opt_dt(row[15]),
            worker=row[16],
            reason=row[17],
            updated_at=from_us(row[18]),
        )

    def claim(
        self, run_id: str, now: datetime, limit: int, lease_until: datetime, worker: str
    ) -> list[OccurrenceRecord]:
        """Claim up to `limit` claimable occurrences due by `now`, oldest first."""
        with self._write() as cur:
            cur.execute(self._d.next_fence)
            fence = int(cur.fetchone()[0])
            # Picked first, then updated by primary key: the pick walks the claimable index in
            # claim order and stops at `limit` (PostgreSQL: locking them, skipping rows another
            # runner holds), and the update is `limit` key lookups whatever the plan of a join
            # would have been on a small table.
            cur.execute(
                f"SELECT key FROM occurrences WHERE run = ? AND state IN {CLAIMABLE_SQL}"
                f" AND next_at <= ? ORDER BY next_at, key LIMIT ?{self._d.skip_locked}",
                (run_id, to_us(now), limit),
            )
            keys = [r[0] for r in cur.fetchall()]
            rows: list[OccurrenceRecord] = []
            for chunk in _chunks(keys):
                among, params = self._d.any_of("key", chunk)
                cur.execute(
                    "UPDATE occurrences SET state = ?, fence = ?, lease_until = ?, worker = ?,"
                    f" updated_at = ? WHERE run = ? AND {among} RETURNING {_OCC_COLUMNS}",
                    (
                        str(OccurrenceState.CLAIMED),
                        fence,
                        to_us(lease_until),
                        worker,
                        to_us(now),
                        run_id,
                        *params,
                    ),
                )
                rows.extend(self._occ(r) for r in cur.fetchall())
        rows.sort(key=lambda o: (o.next_at, o.key))
        return rows

    def record(self, run_id: str, outcomes: Sequence[Outcome], actor: str) -> list[str]:
        """Apply outcomes; the keys whose fence was stale (nothing recorded for them)."""
        if not outcomes:
            return []
        stale: list[str] = []
        with self._write() as cur:
            current: dict[str, tuple[int, str, int]] = {}
            keys = sorted({o.key for o in outcomes})  # locked in key order: no deadlocks
            for chunk in _chunks(keys):
                among, params = self._d.any_of("key", chunk)
                cur.execute(
                    f"SELECT key, fence, state, attempts FROM occurrences WHERE run = ? AND {among}"
                    f" ORDER BY key{self._d.lock_rows}",
                    (run_id, *params),
                )
                for key, fence, state, attempts in cur.fetchall():
                    current[key] = (int(fence), state, int(attempts))
            updates: list[tuple[Any, ...]] = []
            attempts_rows: list[tuple[Any, ...]] = []
            tasks: list[tuple[Any, ...]] = []
            for o in outcomes:
                cur_state = current.get(o.key)
                if cur_state is None or cur_state[0] != o.fence or cur_state[1] != "claimed":
                    stale.append(o.key)
                    continue
                attempt = cur_state[2] + (1 if o.attempted else 0)
                current[o.key] = (o.fence, str(o.state), attempt)  # a repeat in `outcomes` is stale
                next_at = to_us(o.next_at) if o.next_at is not None else None
                updates.append(
                    (o.key, o.fence, str(o.state), attempt, next_at, o.detail, to_us(o.at))
                )
                if o.attempted:
                    attempts_rows.append(
                        (run_id, o.key, o.fence, attempt, to_us(o.at), str(o.state), o.detail)
                    )
                if o.task is not None:
                    t = o.task
                    tasks.append(
                        (
                            run_id,
                            t.id,
                            t.role,
                            t.action,
                            t.title,
                            t.text,
                            to_us(t.due_at),
                            t.member,
                            str(TaskState.OPEN),
                            to_us(o.at),
                            t.remote_id,
                            t.backend,
                        )
                    )
            # one statement a chunk, not one a row: a batch of 200 is two statements
            columns = "key, fence, state, attempts, next_at, reason, updated_at"
            types = ("TEXT", "BIGINT", "TEXT", "INTEGER", "BIGINT", "TEXT", "BIGINT")
            for chunk in _chunks(updates, CHUNK // 2):
                head, params = self._with("v", columns, types, chunk)
                cur.execute(
                    f"{head} UPDATE occurrences SET state = v.state, attempts = v.attempts,"
                    " next_at = COALESCE(v.next_at, occurrences.next_at), lease_until = NULL,"
                    " reason = COALESCE(NULLIF(v.reason, ''), occurrences.reason),"
                    " updated_at = v.updated_at FROM v WHERE occurrences.run = ?"
                    " AND occurrences.key = v.key AND occurrences.fence = v.fence",
                    [*params, run_id],
                )
            columns = "run, key, fence, attempt, at, state, detail"
            types = ("TEXT", "TEXT", "BIGINT", "INTEGER", "BIGINT", "TEXT", "TEXT")
            for chunk in _chunks(attempts_rows, CHUNK // 2):
                self._insert(cur, "attempts", columns, types, chunk, "(run, key, fence) DO NOTHING")
            self._insert_tasks(cur, tasks)
            children = [c for o in outcomes if o.key not in stale for c in o.children]
            added = self._insert_occurrences(cur, run_id, children)
            if added:
                self._d.refresh_statistics(cur.raw, {"occurrences": added})
            if stale:
                self._audit(cur, run_id, actor, "record.stale", f"{len(stale)} outcomes", stale)
        return stale

    @staticmethod
    def _task_row(run_id: str, t: Any, created: datetime) -> tuple[Any, ...]:
        return (
            run_id, t.id, t.role, t.action, t.title, t.text, to_us(t.due_at), t.member,
            str(TaskState.OPEN), to_us(created), t.remote_id, t.backend,
        )  # fmt: skip

    @staticmethod
    def _insert_tasks(cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        cur.executemany(
            "INSERT INTO tasks (run, id, role, action, title, text, due_at, member, state,"
            " created_at, remote_id, backend) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (run, id) DO NOTHING",
            rows,
        )

    def expire_leases(
        self, run_id: str, now: datetime, resend: Collection[str] = ()
    ) -> list[OccurrenceRecord]:
        """Claims whose lease ended before `now`: UNCERTAIN, or PENDING again at once on the
        backends named in `resend` (idempotent ones), in one transaction; those occurrences."""
        again = sorted(set(resend))
        with self._write() as cur:
            cur.execute(
                "WITH expired AS MATERIALIZED (SELECT key FROM occurrences"
                " WHERE run = ? AND state = 'claimed' AND lease_until < ?"
                f"{self._d.ordered_lock})"  # PostgreSQL: locked in key order, as `record` does
                " UPDATE occurrences SET state = CASE WHEN backend IN"
                f" ({_marks(len(again)) or 'NULL'}) THEN 'pending' ELSE 'uncertain' END,"
                " attempts = attempts + 1,"  # next_at stays: it was due when it was claimed
                " reason = 'the runner holding it stopped before recording the outcome',"
                " lease_until = NULL, updated_at = ?"
                " WHERE run = ? AND key IN (SELECT key FROM expired)"
                f" RETURNING {_OCC_COLUMNS}",
                (run_id, to_us(now), *again, to_us(now), run_id),
            )
            rows = sorted((self._occ(r) for r in cur.fetchall()), key=lambda o: (o.next_at, o.key))
            cur.executemany(
                "INSERT INTO attempts (run, key, fence, attempt, at, state, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run, key, fence) DO NOTHING",
                [
                    (run_id, o.key, o.fence, o.attempts, to_us(now), "uncertain", o.reason)
                    for o in rows
                ],
            )
            if rows:
                self._audit(
                    cur,
                    run_id,
                    "runner",
                    "lease.expired",
                    f"{len(rows)} occurrences",
                    {
                        "uncertain": [o.key for o in rows if o.state == OccurrenceState.UNCERTAIN],
                        "resent": [o.key for o in rows if o.state == OccurrenceState.PENDING],
                    },
                )
        return rows

    def resolve(
        self, run_id: str, key: str, resolution: Resolution, now: datetime, actor: str
    ) -> OccurrenceRecord | None:
        """An operator's decision on an UNCERTAIN or DEAD occurrence; None when not found."""
        state = {
            Resolution.SENT: OccurrenceState.SENT,
            Resolution.RESEND: OccurrenceState.PENDING,
            Resolution.DROP: OccurrenceState.DROPPED,
        }[resolution]
        with self._write() as cur:
            cur.execute(
                "UPDATE occurrences SET state = ?, next_at = ?, reason = ?, updated_at = ?"
                " WHERE run = ? AND key = ? AND state IN ('uncertain', 'dead')"
                f" RETURNING {_OCC_COLUMNS}",
                (
                    str(state),
                    to_us(now),
                    f"resolved by {actor}: {resolution}",
                    to_us(now),
                    run_id,
                    key,
                ),
            )
            row = cur.fetchone()
            if row is None:
                return None
            self._audit(cur, run_id, actor, f"resolve.{resolution}", key, {})
            return self._occ(row)

    def get_occurrence(self, run_id: str, key: str) -> OccurrenceRecord | None:
        """One occurrence."""
        with self._read() as cur:
            cur.execute(
                f"SELECT {_OCC_COLUMNS} FROM occurrences WHERE run = ? AND key = ?", (run_id, key)
            )
            row = cur.fetchone()
            return self._occ(row) if row else None

    def occurrences(
        self,
        run_id: str,
        states: Sequence[OccurrenceState] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[OccurrenceRecord]:
        """Occurrences by due time (optionally by state and [since, until)), earliest first."""
        where = ["run = ?"]
        params: list[Any] = [run_id]
        if states:
            where.append(f"state IN ({_marks(len(states))})")
            params.extend(str(s) for s in states)
        if since is not None:
            where.append("due_at >= ?")
            params.append(to_us(since))
        if until is not None:
            where.append("due_at < ?")
            params.append(to_us(until))
        sql = f"SELECT {_OCC_COLUMNS} FROM occurrences WHERE {' AND '.join(where)}"
        sql += " ORDER BY due_at, key"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._read() as cur:
            cur.execute(sql, params)
            return [self._occ(r) for r in cur.fetchall()]

    def count_occurrences(
        self, run_id: str, states: Sequence[OccurrenceState] | None = None
    ) -> dict[OccurrenceState, int]:
        """How many occurrences are in each state (of `states` only, when given)."""
        where, params = "run = ?", [run_id]
        if states is not None:
            if not states:
                return {}
            where += f" AND state IN ({_marks(len(states))})"
            params += [str(s) for s in states]
        with self._read() as cur:
            cur.execute(
                f"SELECT state, COUNT(*) FROM occurrences WHERE {where} GROUP BY state", params
            )
            return {OccurrenceState(s): int(n) for s, n in cur.fetchall()}

    def occurrences_by_key(self, run_id: str, keys: Sequence[str]) -> dict[str, OccurrenceRecord]:
        """The stored occurrences among `keys`, by key (primary-key lookups)."""
        out: dict[str, OccurrenceRecord] = {}
        with self._read() as cur:
            for chunk in _chunks(keys):
                among, params = self._d.any_of("key", chunk)
                cur.execute(
                    f"SELECT {_OCC_COLUMNS} FROM occurrences WHERE run = ? AND {among}",
                    (run_id, *params),
                )
                out.update((o.key, o) for o in map(self._occ, cur.fetchall()))
        return out

    def occurrences_in_state(
        self,
        run_id: str,
        state: OccurrenceState,
        limit: int,
        since: datetime | None = None,
    ) -> Page[OccurrenceRecord]:
        """The first `limit` occurrences in `state` by due time, and how many there are: one
        range of the (run, state, due_at) index."""
        where = "run = ? AND state = ?"
        params: list[Any] = [run_id, str(state)]
        if since is not None:
            where += " AND due_at >= ?"
            params.append(to_us(since))
        with self._read() as cur:
            cur.execute(
                f"SELECT {_OCC_COLUMNS} FROM occurrences WHERE {where}"
                f" ORDER BY due_at, key LIMIT {int(limit)}",
                params,
            )
            rows = [self._occ(r) for r in cur.fetchall()]
            if len(rows) < limit:
                return Page(rows, len(rows))
            cur.execute(f"SELECT COUNT(*) FROM occurrences WHERE {where}", params)
            return Page(rows, int(cur.fetchone()[0]))

    def member_occurrence_counts(
        self,
        run_id: str,
        since: datetime,
        until: datetime,
        states: Sequence[OccurrenceState],
    ) -> dict[OccurrenceState, int]:
        """Occurrences for one member each due in [since, until), per state: one range of the
        (run, state, due_at, member) index per state, read from the index alone."""
        if not states:
            return {}
        with self._read() as cur:
            cur.execute(
                "SELECT state, COUNT(*) FROM occurrences WHERE run = ?"
                f" AND state IN ({_marks(len(states))}) AND due_at >= ? AND due_at < ?"
                " AND member IS NOT NULL GROUP BY state",
                (run_id, *(str(s) for s in states), to_us(since), to_us(until)),
            )
            return {OccurrenceState(s): int(n) for s, n in cur.fetchall()}

    def next_due(self, run_id: str) -> datetime | None:
        """The earliest `next_at` of a claimable occurrence."""
        with self._read() as cur:
            cur.execute(
                f"SELECT MIN(next_at) FROM occurrences WHERE run = ? AND state IN {CLAIMABLE_SQL}",
                (run_id,),
            )
            row = cur.fetchone()
            return opt_dt(row[0]) if row else None

    def attempts(self, run_id: str, key: str) -> list[AttemptRecord]:
        """Every attempt of one occurrence, in order."""
        with self._read() as cur:
            cur.execute(
                "SELECT key, attempt, fence, at, state, detail FROM attempts"
                " WHERE run = ? AND key = ? ORDER BY attempt, fence",
                (run_id, key),
            )
            return [
                AttemptRecord(k, int(a), int(f), from_us(at), OccurrenceState(s), d)
                for k, a, f, at, s, d in cur.fetchall()
            ]

    # -- members and events ----------------------------------------------------------------

    def ingest(
        self, run_id: str, events: Sequence[EventRecord], derive: Deriver, actor: str
    ) -> list[bool]:
        """Insert events not yet seen (by id); for those, save what `derive` says. New flags."""
        received = to_us(datetime.now().astimezone())
        with self._write() as cur:
            inserted: set[str] = set()
            firsts: dict[str, EventRecord] = {}
            for e in events:
                firsts.setdefault(e.id, e)  # a repeated id: its first copy is the new one
            unique = list(firsts.values())
            columns = "run, id, type, member, at, data, received_at"
            types = ("TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "BIGINT")
            for chunk in _chunks(unique, CHUNK // 2):
                rows = [
                    (run_id, e.id, e.type, e.member, to_us(e.at), dumps(dict(e.data)), received)
                    for e in chunk
                ]
                self._insert(
                    cur, "events", columns, types, rows, "(run, id) DO NOTHING RETURNING id"
                )
                inserted.update(r[0] for r in cur.fetchall())
            flags, new, seen = [], [], set()
            for e in events:
                fresh = e.id in inserted and e.id not in seen
                seen.add(e.id)
                flags.append(fresh)
                if fresh:
                    new.append(e)
            if new:
                members = self._members(cur, run_id, sorted({e.member for e in new}))
                results = derive(new, self._context(cur, run_id, members))
                final: dict[str, MemberRecord] = {}
                occurrences: list[NewOccurrence] = []
                ledger: list[LedgerEntry] = []
                applications: dict[str, ApplicationRecord] = {}
                tasks: list[tuple[Any, ...]] = []
                done: list[str] = []
                now = datetime.now().astimezone()
                for r in results:
                    final[r.member.id] = r.member
                    occurrences.extend(r.occurrences)
                    ledger.extend(r.ledger)
                    if r.application is not None:
                        applications[r.member.id] = r.application
                    tasks.extend(self._task_row(run_id, t, now) for t in r.tasks)
                    done.extend(r.done_tasks)
                    if r.refusal:
                        self._audit(cur, run_id, actor, "event.refused", r.member.id,
                                    {"reason": r.refusal})  # fmt: skip
                self._put_members(cur, run_id, list(final.values()))
                self._insert_ledger(cur, run_id, ledger)
                self._put_applications(cur, run_id, list(applications.values()))
                self._insert_tasks(cur, tasks)
                for task_id in done:
                    self._complete(cur, run_id, task_id, now, actor)
                added = self._insert_occurrences(cur, run_id, occurrences)
                self._d.refresh_statistics(
                    cur.raw, {"events": len(new), "members": len(final), "occurrences": added}
                )
                self._audit(
                    cur,
                    run_id,
                    actor,
                    "events.ingested",
                    f"{len(new)} events",
                    {"new": len(new), "duplicates": len(events) - len(new)},
                )
        return flags

    def _members(self, cur: Any, run_id: str, ids: Sequence[str]) -> dict[str, MemberRecord]:
        out: dict[str, MemberRecord] = {}
        for chunk in _chunks(ids):
            among, params = self._d.any_of("id", chunk)
            cur.execute(
                f"SELECT {_MEMBER_COLUMNS} FROM members WHERE run = ? AND {among}",
                (run_id, *params),
            )
            for row in cur.fetchall():
                out[row[0]] = member_from(*row)
        return out

    def _context(self, cur: Any, run_id: str, members: Mapping[str, MemberRecord]) -> IngestContext:
        """The deriver's view inside the ingest transaction (its reads on the same cursor)."""

        def joined() -> int:
            cur.execute(
                "SELECT COUNT(*) FROM members WHERE run = ? AND joined_at IS NOT NULL", (run_id,)
            )
            return int(cur.fetchone()[0])

        return IngestContext(
            members,
            ledger=lambda member: self._ledger(cur, run_id, member),
            team_sizes=lambda: self._team_sizes(cur, run_id),
            joined_count=joined,
            redeemed=lambda: self._redeemed(cur, run_id),
            application=lambda member: self._get_application(cur, run_id, member),
        )

    def _put_members(self, cur: Any, run_id: str, members: Sequence[MemberRecord]) -> None:
        cur.executemany(
            "INSERT INTO members (run, id, state, joined_at, left_at, last_active_at, referrer,"
            " tier, attributes, source, team) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (run, id) DO UPDATE SET"
            " state = excluded.state, joined_at = excluded.joined_at, left_at = excluded.left_at,"
            " last_active_at = excluded.last_active_at, referrer = excluded.referrer,"
            " tier = excluded.tier, attributes = excluded.attributes,"
            " source = excluded.source, team = excluded.team",
            [
                (
                    run_id,
                    m.id,
                    member_state(m),
                    opt_us(m.joined_at),
                    opt_us(m.left_at),
                    opt_us(m.last_active_at),
                    m.referrer,
                    m.tier,
                    member_attributes(m),
                    m.source,
                    m.team,
                )
                for m in members
            ],
        )

    def member_facts(self, run_id: str) -> list[MemberFacts]:
        """What daily metrics read of every member, without the rest of its state."""
        with self._read() as cur:
            cur.execute(
                "SELECT id, joined_at, left_at, referrer, tier, source, team FROM members"
                " WHERE run = ?",
                (run_id,),
            )
            return [
                MemberFacts(i, opt_dt(j), opt_dt(left), r, t, src, team)
                for i, j, left, r, t, src, team in cur.fetchall()
            ]

    def earliest_member_time(
        self, run_id: str, field: MemberTime, since: datetime, until: datetime
    ) -> datetime | None:
        """The earliest `field` instant in [since, until) of a current member, or None."""
        column = MemberTime(field).value  # a closed set: never text from outside
        with self._read() as cur:
            cur.execute(
                f"SELECT MIN({column}) FROM members WHERE run = ? AND left_at IS NULL"
                f" AND {column} >= ? AND {column} < ?",
                (run_id, to_us(since), to_us(until)),
            )
            row = cur.fetchone()
        return opt_dt(row[0]) if row else None

    def event_facts(
        self, run_id: str, since: datetime, until: datetime, types: Sequence[str]
    ) -> list[tuple[str, str, datetime]]:
        """(member, type, at) of the events of `types` in [since, until), without their data."""
        with self._read() as cur:
            cur.execute(
                "SELECT member, type, at FROM events WHERE run = ? AND at >= ? AND at < ?"
                f" AND type IN ({_marks(len(types))})",
                (run_id, to_us(since), to_us(until), *types),
            )
            return [(m, t, from_us(at)) for m, t, at in cur.fetchall()]

    def get_members(self, run_id: str, ids: Sequence[str]) -> dict[str, MemberRecord]:
        """Members by id (absent ones are missing)."""
        with self._read() as cur:
            return self._members(cur, run_id, ids)

    def put_members(self, run_id: str, members: Sequence[MemberRecord]) -> None:
        """Save members (tier changes, derived updates)."""
        with self._write() as cur:
            self._put_members(cur, run_id, members)

    def iter_members(self, run_id: str) -> Iterator[MemberRecord]:
        """Every member of a run."""
        with self._read() as cur:
            cur.execute(
                f"SELECT {_MEMBER_COLUMNS} FROM members WHERE run = ? ORDER BY id", (run_id,)
            )
            rows = cur.fetchall()
        for row in rows:
            yield member_from(*row)

    def members_due(
        self, run_id: str, field: MemberTime, since: datetime, until: datetime
    ) -> list[MemberRecord]:
        """Current members (not left) whose `field` instant lies in [since, until), by id."""
        column = MemberTime(field).value  # a closed set: never text from outside
        with self._read() as cur:
            cur.execute(
                f"SELECT {_MEMBER_COLUMNS} FROM members"
                f" WHERE run = ? AND left_at IS NULL AND {column} >= ? AND {column} < ?"
                " ORDER BY id",
                (run_id, to_us(since), to_us(until)),
            )
            return [member_from(*row) for row in cur.fetchall()]

    def events(
        self,
        run_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Sequence[str] | None = None,
    ) -> list[EventRecord]:
        """Events with `at` in [since, until), by time."""
        where = ["run = ?"]
        params: list[Any] = [run_id]
        if since is not None:
            where.append("at >= ?")
            params.append(to_us(since))
        if until is not None:
            where.append("at < ?")
            params.append(to_us(until))
        if types:
            where.append(f"type IN ({_marks(len(types))})")
            params.extend(types)
        with self._read() as cur:
            cur.execute(
                f"SELECT id, type, member, at, data FROM events WHERE {' AND '.join(where)}"
                " ORDER BY at, id",
                params,
            )
            return [
                EventRecord(i, t, m, from_us(at), json.loads(data))
                for i, t, m, at, data in cur.fetchall()
            ]

    def latest_events(
        self, run_id: str, types: Sequence[str], since: datetime, limit: int
    ) -> Page[EventRecord]:
        """The latest `limit` events of `types` since `since`: the (run, type, at) index read
        backwards; counted only when there are no more than `limit`."""
        if not types:
            return Page([], 0)
        with self._read() as cur:
            cur.execute(
                "SELECT id, type, member, at, data FROM events WHERE run = ?"
                f" AND type IN ({_marks(len(types))}) AND at >= ?"
                f" ORDER BY at DESC, id DESC LIMIT {int(limit) + 1}",
                (run_id, *types, to_us(since)),
            )
            rows = [
                EventRecord(i, t, m, from_us(at), json.loads(data))
                for i, t, m, at, data in cur.fetchall()
            ]
        return Page(rows[:limit], len(rows) if len(rows) <= limit else None)

    def _member_page(
        self, column: str, where: str, params: Sequence[Any], limit: int
    ) -> Page[MemberRecord]:
        """Current members matching `where`, latest `column` first, counted up to the cap."""
        with self._read() as cur:
            cur.execute(
                f"SELECT {_MEMBER_COLUMNS} FROM members WHERE {where}"
                f" ORDER BY {column} DESC, id DESC LIMIT {int(limit)}",
                params,
            )
            rows = [member_from(*r) for r in cur.fetchall()]
            cur.execute(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM members WHERE {where}"
                f" LIMIT {MEMBER_COUNT_CAP}) AS m",
                params,
            )
            n = int(cur.fetchone()[0])
        return Page(rows, n, capped=n >= MEMBER_COUNT_CAP)

    def recent_joins(
        self, run_id: str, since: datetime, until: datetime, limit: int
    ) -> Page[MemberRecord]:
        """Current members who joined in [since, until), the latest first."""
        where = "run = ? AND left_at IS NULL AND joined_at >= ? AND joined_at < ?"
        return self._member_page("joined_at", where, (run_id, to_us(since), to_us(until)), limit)

    def silent_members(self, run_id: str, before: datetime, limit: int) -> Page[MemberRecord]:
        """Current members last active before `before`, the most recently active first: the
        partial index on current members' last activity, read backwards."""
        where = "run = ? AND left_at IS NULL AND last_active_at < ?"
        return self._member_page("last_active_at", where, (run_id, to_us(before)), limit)

    # -- metrics, gates, transitions -------------------------------------------------------

    def metric_values(
        self, run_id: str, names: Sequence[str] | None = None, since: date | None = None
    ) -> list[MetricValue]:
        """Recorded metric values by day (from day `since` on when given)."""
        sql = "SELECT name, day, value, source FROM metric_values WHERE run = ?"
        params: list[Any] = [run_id]
        if since is not None:
            sql += " AND day >= ?"  # ISO dates sort as text
            params.append(since.isoformat())
        if names:
            sql += f" AND name IN ({_marks(len(names))})"
            params.extend(names)
        with self._read() as cur:
            cur.execute(sql + " ORDER BY day, name, source", params)
            return [
                MetricValue(n, date.fromisoformat(d), None if v is None else float(v), s)
                for n, d, v, s in cur.fetchall()
            ]

    def gate_evaluations(self, run_id: str, limit: int | None = None) -> list[GateEvaluation]:
        """Gate readings, latest last."""
        sql = "SELECT stage, at, holds, vals, note, exit FROM gate_evaluations WHERE run = ?"
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._read() as cur:
            cur.execute(sql, (run_id,))
            rows = cur.fetchall()
        return [
            GateEvaluation(s, from_us(at), bool(h), json.loads(v), n, x)
            for s, at, h, v, n, x in rows
        ][::-1]

    def transitions(self, run_id: str) -> list[TransitionRecord]:
        """Every transition, in order."""
        with self._read() as cur:
            cur.execute(
                "SELECT at, stage, event, detail, role, evidence, exit FROM transitions"
                " WHERE run = ? ORDER BY seq",
                (run_id,),
            )
            return [
                TransitionRecord(from_us(at), s, e, d, r, json.loads(ev), x)
                for at, s, e, d, r, ev, x in cur.fetchall()
            ]

    # -- staff tasks -----------------------------------------------------------------------

    @staticmethod
    def _task(row: Sequence[Any]) -> TaskRecord:
        return TaskRecord(
            id=row[0],
            run=row[1],
            role=row[2],
            action=row[3],
            title=row[4],
            text=row[5],
            due_at=from_us(row[6]),
            member=row[7],
            state=TaskState(row[8]),
            created_at=from_us(row[9]),
            done_at=opt_dt(row[10]),
            done_by=row[11],
            escalated_at=opt_dt(row[12]),
            remote_id=row[13],
            backend=row[14],
        )

    def tasks(
        self, run_id: str, role: str | None = None, states: Sequence[TaskState] | None = None
    ) -> list[TaskRecord]:
        """Staff tasks by due time."""
        where = ["run = ?"]
        params: list[Any] = [run_id]
        if role is not None:
            where.append("role = ?")
            params.append(role)
        if states:
            where.append(f"state IN ({_marks(len(states))})")
            params.extend(str(s) for s in states)
        with self._read() as cur:
            cur.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {' AND '.join(where)}"
                " ORDER BY due_at, id",
                params,
            )
            return [self._task(r) for r in cur.fetchall()]

    def get_task(self, run_id: str, task_id: str) -> TaskRecord | None:
        """One task by id."""
        with self._read() as cur:
            cur.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run = ? AND id = ?", (run_id, task_id)
            )
            row = cur.fetchone()
        return self._task(row) if row else None

    def open_task_counts(self, run_id: str) -> dict[str | None, int]:
        """How many tasks are open per role (None: without a role)."""
        with self._read() as cur:
            cur.execute(
                "SELECT role, COUNT(*) FROM tasks WHERE run = ? AND state = ? GROUP BY role",
                (run_id, str(TaskState.OPEN)),
            )
            return {r: int(n) for r, n in cur.fetchall()}

    def overdue_task_count(self, run_id: str, now: datetime) -> int:
        """How many open tasks were due before `now`: one range of (run, state, due_at)."""
        with self._read() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM tasks WHERE run = ? AND state = ? AND due_at < ?",
                (run_id, str(TaskState.OPEN), to_us(now)),
            )
            return int(cur.fetchone()[0])

    def next_escalation(self, run_id: str) -> datetime | None:
        """The earliest due time of an open task not yet escalated (the runner's wake-up)."""
        with self._read() as cur:
            cur.execute(
                "SELECT MIN(due_at) FROM tasks WHERE run = ? AND state = ?"
                " AND escalated_at IS NULL",
                (run_id, str(TaskState.OPEN)),
            )
            row = cur.fetchone()
        return opt_dt(row[0]) if row else None

    def awaiting_confirmation(self, run_id: str, limit: int) -> list[TaskRecord]:
        """Open tasks tracking a platform send (`remote_id`), earliest due first."""
        with self._read() as cur:
            cur.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run = ? AND state = ?"
                f" AND remote_id IS NOT NULL ORDER BY due_at, id LIMIT {int(limit)}",
                (run_id, str(TaskState.OPEN)),
            )
            return [self._task(r) for r in cur.fetchall()]

    def _task_page(
        self, run_id: str, state: TaskState, role: str | None, order: str, limit: int
    ) -> list[TaskRecord]:
        where, params = "run = ? AND state = ?", [run_id, str(state)]
        if role == NO_ROLE:
            where += " AND role IS NULL"
        elif role is not None:
            where += " AND role = ?"
            params.append(role)
        with self._read() as cur:
            cur.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {where} ORDER BY {order}"
                f" LIMIT {int(limit)}",
                params,
            )
            return [self._task(r) for r in cur.fetchall()]

    def open_tasks(self, run_id: str, limit: int, role: str | None = None) -> list[TaskRecord]:
        """The `limit` earliest-due open tasks: the (run, state, due_at) index in order."""
        return self._task_page(run_id, TaskState.OPEN, role, "due_at, id", limit)

    def done_tasks(self, run_id: str, limit: int, role: str | None = None) -> list[TaskRecord]:
        """The `limit` tasks done most recently: the (run, state, done_at) index backwards."""
        return self._task_page(run_id, TaskState.DONE, role, "done_at DESC, id DESC", limit)

    def complete_task(self, run_id: str, task_id: str, now: datetime, actor: str) -> bool:
        """Mark a task done; False when there is no open task with that id."""
        with self._write() as cur:
            return self._complete(cur, run_id, task_id, now, actor)

    def _complete(self, cur: Any, run_id: str, task_id: str, now: datetime, actor: str) -> bool:
        cur.execute(
            "UPDATE tasks SET state = 'done', done_at = ?, done_by = ?"
            " WHERE run = ? AND id = ? AND state = 'open'",
            (to_us(now), actor, run_id, task_id),
        )
        if cur.rowcount != 1:
            return False
        self._audit(cur, run_id, actor, "task.done", task_id, {})
        return True

    def postpone_task(self, run_id: str, task_id: str, to: datetime, actor: str) -> bool:
        """Move an open task's due time; False when there is no open task with that id."""
        with self._write() as cur:
            cur.execute(
                "UPDATE tasks SET due_at = ?, escalated_at = NULL"
                " WHERE run = ? AND id = ? AND state = 'open'",
                (to_us(to), run_id, task_id),
            )
            if cur.rowcount != 1:
                return False
            self._audit(cur, run_id, actor, "task.postponed", task_id, {"to": to.isoformat()})
            return True

    def escalate_tasks(
        self, run_id: str, due_before: datetime, now: datetime, actor: str
    ) -> list[TaskRecord]:
        """Open tasks due before `due_before`, not yet escalated: escalated at `now`; them."""
        with self._write() as cur:
            cur.execute(
                "UPDATE tasks SET escalated_at = ? WHERE run = ? AND state = 'open'"
                f" AND due_at < ? AND escalated_at IS NULL RETURNING {_TASK_COLUMNS}",
                (to_us(now), run_id, to_us(due_before)),
            )
            rows = [self._task(r) for r in cur.fetchall()]
            for t in rows:
                self._audit(cur, run_id, actor, "task.overdue", t.id, {"role": t.role})
        return sorted(rows, key=lambda t: (t.due_at, t.id))

    # -- points, applications, incidents, teams --------------------------------------------

    @staticmethod
    def _entry(row: Sequence[Any]) -> LedgerEntry:
        k, m, at, p, kind, item, detail = row
        return LedgerEntry(k, m, from_us(at), int(p), PointsKind(kind), item, detail)

    def _insert_ledger(self, cur: Any, run_id: str, entries: Sequence[LedgerEntry]) -> int:
        new = 0
        for e in entries:
            cur.execute(
                f"INSERT INTO points_ledger (run, {_LEDGER_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run, key) DO NOTHING",
                (run_id, e.key, e.member, to_us(e.at), int(e.points), str(e.kind), e.item,
                 e.detail),
            )  # fmt: skip
            new += max(cur.rowcount, 0)
        return new

    def add_ledger(self, run_id: str, entries: Sequence[LedgerEntry]) -> int:
        """Record points movements, ignoring keys present; how many were new."""
        with self._write() as cur:
            return self._insert_ledger(cur, run_id, entries)

    def _ledger(self, cur: Any, run_id: str, member: str | None) -> list[LedgerEntry]:
        sql = f"SELECT {_LEDGER_COLUMNS} FROM points_ledger WHERE run = ?"
        params: list[Any] = [run_id]
        if member is not None:
            sql += " AND member = ?"
            params.append(member)
        cur.execute(sql + " ORDER BY at, key", params)
        return [self._entry(r) for r in cur.fetchall()]

    def ledger(self, run_id: str, member: str | None = None) -> list[LedgerEntry]:
        """Points movements (of one member, when given) by time, then key."""
        with self._read() as cur:
            return self._ledger(cur, run_id, member)

    def points_balances(self, run_id: str) -> dict[str, int]:
        """Every member's points balance (members with no entry are left out)."""
        with self._read() as cur:
            cur.execute(
                "SELECT member, SUM(points) FROM points_ledger WHERE run = ? GROUP BY member"
                " ORDER BY member",
                (run_id,),
            )
            return {m: int(n) for m, n in cur.fetchall()}

    def points_totals(self, run_id: str) -> dict[PointsKind, int]:
        """The sum of the ledger's points per kind (kinds with no entry are left out)."""
        with self._read() as cur:
            cur.execute(
                "SELECT kind, SUM(points) FROM points_ledger WHERE run = ? GROUP BY kind",
                (run_id,),
            )
            return {PointsKind(k): int(n) for k, n in cur.fetchall()}

    @staticmethod
    def _redeemed(cur: Any, run_id: str) -> dict[str, int]:
        cur.execute(
            "SELECT item, COUNT(*) FROM points_ledger WHERE run = ? AND kind = ? GROUP BY item",
            (run_id, str(PointsKind.REDEEM)),
        )
        return {item or "": int(n) for item, n in cur.fetchall()}

    def redeemed_counts(self, run_id: str) -> dict[str, int]:
        """How many of each item were redeemed."""
        with self._read() as cur:
            return self._redeemed(cur, run_id)

    @staticmethod
    def _application(row: Sequence[Any]) -> ApplicationRecord:
        m, state, applied, decided, by, note, task = row
        return ApplicationRecord(
            m, ApplicationState(state), from_us(applied), opt_dt(decided), by, note, task
        )

    def _put_applications(
        self, cur: Any, run_id: str, applications: Sequence[ApplicationRecord]
    ) -> None:
        cur.executemany(
            f"INSERT INTO applications (run, {_APPLICATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?,"
            " ?) ON CONFLICT (run, member) DO UPDATE SET state = excluded.state,"
            " applied_at = excluded.applied_at, decided_at = excluded.decided_at,"
            " decided_by = excluded.decided_by, note = excluded.note, task = excluded.task",
            [
                (run_id, a.member, str(a.state), to_us(a.applied_at), opt_us(a.decided_at),
                 a.decided_by, a.note, a.task)
                for a in applications
            ],
        )  # fmt: skip

    def applications(
        self,
        run_id: str,
        states: Sequence[ApplicationState] | None = None,
        limit: int | None = None,
    ) -> list[ApplicationRecord]:
        """Applications (in `states` when given), the earliest applied first."""
        sql = f"SELECT {_APPLICATION_COLUMNS} FROM applications WHERE run = ?"
        params: list[Any] = [run_id]
        if states:
            sql += f" AND state IN ({_marks(len(states))})"
            params.extend(str(x) for x in states)
        sql += " ORDER BY applied_at, member"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._read() as cur:
            cur.execute(sql, params)
            return [self._application(r) for r in cur.fetchall()]

    def _get_application(self, cur: Any, run_id: str, member: str) -> ApplicationRecord | None:
        cur.execute(
            f"SELECT {_APPLICATION_COLUMNS} FROM applications WHERE run = ? AND member = ?",
            (run_id, member),
        )
        row = cur.fetchone()
        return self._application(row) if row else None

    def get_application(self, run_id: str, member: str) -> ApplicationRecord | None:
        """A member's application."""
        with self._read() as cur:
            return self._get_application(cur, run_id, member)

    @staticmethod
    def _incident(row: Sequence[Any]) -> IncidentRecord:
        i, name, state, opened, by, note, detected, closed, closed_by, close_note = row
        return IncidentRecord(
            i, name, IncidentState(state), from_us(opened), by, note, bool(detected),
            opt_dt(closed), closed_by, close_note,
        )  # fmt: skip

    def _insert_incident(self, cur: Any, run_id: str, i: IncidentRecord) -> bool:
        cur.execute(
            f"INSERT INTO incidents (run, {_INCIDENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?) ON CONFLICT (run, id) DO NOTHING",
            (run_id, i.id, i.incident, str(i.state), to_us(i.opened_at), i.opened_by, i.note,
             int(i.detected), opt_us(i.closed_at), i.closed_by, i.close_note),
        )  # fmt: skip
        if cur.rowcount != 1:
            return False
        self._audit(cur, run_id, i.opened_by, "incident.opened", i.id, {"detected": i.detected})
        return True

    def open_incident(
        self,
        run_id: str,
        incident: IncidentRecord,
        occurrences: Sequence[NewOccurrence],
        actor: str,
    ) -> bool:
        """Start an incident with its steps' occurrences; False when its id exists."""
        with self._write() as cur:
            if not self._insert_incident(cur, run_id, incident):
                return False
            self._insert_occurrences(cur, run_id, occurrences)
            return True

    def close_incident(
        self,
        run_id: str,
        incident_id: str,
        now: datetime,
        actor: str,
        note: str = "",
        tasks: Sequence[str] = (),
    ) -> IncidentRecord | None:
        """Close an open incident and complete its open `tasks`; the closed record or None."""
        with self._write() as cur:
            cur.execute(
                "UPDATE incidents SET state = ?, closed_at = ?, closed_by = ?, close_note = ?"
                f" WHERE run = ? AND id = ? AND state = ? RETURNING {_INCIDENT_COLUMNS}",
                (str(IncidentState.CLOSED), to_us(now), actor, note, run_id, incident_id,
                 str(IncidentState.OPEN)),
            )  # fmt: skip
            row = cur.fetchone()
            if row is None:
                return None
            for task_id in tasks:
                self._complete(cur, run_id, task_id, now, actor)
            self._audit(cur, run_id, actor, "incident.closed", incident_id, {"note": note})
            return self._incident(row)

    def incidents(
        self,
        run_id: str,
        states: Sequence[IncidentState] | None = None,
        limit: int | None = None,
    ) -> list[IncidentRecord]:
        """Incidents (in `states` when given), the latest opened first."""
        sql = f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE run = ?"
        params: list[Any] = [run_id]
        if states:
            sql += f" AND state IN ({_marks(len(states))})"
            params.extend(str(x) for x in states)
        sql += " ORDER BY opened_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._read() as cur:
            cur.execute(sql, params)
            return [self._incident(r) for r in cur.fetchall()]

    def get_incident(self, run_id: str, incident_id: str) -> IncidentRecord | None:
        """One incident by id."""
        with self._read() as cur:
            cur.execute(
                f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE run = ? AND id = ?",
                (run_id, incident_id),
            )
            row = cur.fetchone()
        return self._incident(row) if row else None

    @staticmethod
    def _team_sizes(cur: Any, run_id: str) -> dict[str, int]:
        cur.execute(
            "SELECT team, COUNT(*) FROM members WHERE run = ? AND left_at IS NULL"
            " AND joined_at IS NOT NULL AND team IS NOT NULL AND team <> '' GROUP BY team",
            (run_id,),
        )
        return {t: int(n) for t, n in cur.fetchall()}

    def team_sizes(self, run_id: str) -> dict[str, int]:
        """Current members per team (teams with none are left out)."""
        with self._read() as cur:
            return self._team_sizes(cur, run_id)

    # -- forecasts -------------------------------------------------------------------------

    def save_forecast(self, playbook: str, created_at: datetime, data: Mapping[str, Any]) -> None:
        """Keep a forecast (`sop simulate --save-forecast`) for the dashboard."""
        with self._write() as cur:
            cur.execute(
                "INSERT INTO forecasts (playbook, created_at, data) VALUES (?, ?, ?)"
                " ON CONFLICT (playbook, created_at) DO UPDATE SET data = excluded.data",
                (playbook, to_us(created_at), dumps(dict(data))),
            )

    def latest_forecast(self, playbook: str) -> ForecastRecord | None:
        """The newest forecast saved for a playbook."""
        with self._read() as cur:
            cur.execute(
                "SELECT created_at, data FROM forecasts WHERE playbook = ?"
                " ORDER BY created_at DESC LIMIT 1",
                (playbook,),
            )
            row = cur.fetchone()
        return ForecastRecord(playbook, from_us(row[0]), json.loads(row[1])) if row else None

    # -- rate limits and audit -------------------------------------------------------------

    def take_tokens(
        self, target: str, now: datetime, per_minute: int, want: int, at_least: int = 1
    ) -> tuple[int, float]:
        """Take up to `want` of a target's sends for the minute ending at `now`, none unless
        `at_least` are free; (granted, seconds until `at_least` are)."""
        t = to_us(now)
        start = t - WINDOW_US
        with self._write() as cur:
            # the target's row in rate_limits is the lock: two runners take in turn
            cur.execute(
                "INSERT INTO rate_limits (target, tokens, updated_at) VALUES (?, 0, ?)"
                " ON CONFLICT (target) DO NOTHING",
                (target, t),
            )
            cur.execute(
                f"SELECT updated_at FROM rate_limits WHERE target = ?{self._d.lock_rows}",
                (target,),
            )
            cur.execute("DELETE FROM rate_sends WHERE target = ? AND at <= ?", (target, start))
            cur.execute("SELECT at, n FROM rate_sends WHERE target = ? ORDER BY at", (target,))
            window = [(int(a), int(n)) for a, n in cur.fetchall()]
            granted, wait = window_take(window, t, per_minute, want, at_least)
            if granted:
                cur.execute(
                    "INSERT INTO rate_sends (target, at, n) VALUES (?, ?, ?)", (target, t, granted)
                )
        return granted, wait

    def use_quota(self, target: str, limit: int, now: datetime) -> bool:
        """Count one use of a per-period allowance (`target` names it and its period); False,
        counting nothing, when `limit` uses are already counted."""
        key = "quota:" + target  # beside the rate windows' lock rows, never one of them
        with self._write() as cur:
            cur.execute(
                "INSERT INTO rate_limits (target, tokens, updated_at) VALUES (?, 0, ?)"
                " ON CONFLICT (target) DO NOTHING",
                (key, to_us(now)),
            )
            cur.execute(
                "UPDATE rate_limits SET tokens = tokens + 1, updated_at = ?"
                " WHERE target = ? AND tokens < ? RETURNING tokens",
                (to_us(now), key, limit),
            )
            return cur.fetchone() is not None

    def audit(self, run_id: str, actor: str, action: str, subject: str, detail: Any) -> None:
        """Append one entry to the audit log."""
        with self._write() as cur:
            self._audit(cur, run_id, actor, action, subject, detail)

    def audit_log(self, run_id: str, limit: int | None = None) -> list[AuditEntry]:
        """The audit log, oldest first (the latest `limit` entries)."""
        sql = "SELECT seq, at, actor, action, subject, detail FROM audit WHERE run = ?"
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._read() as cur:
            cur.execute(sql, (run_id,))
            rows = cur.fetchall()
        return [
            AuditEntry(int(s), from_us(at), a, ac, su, json.loads(d))
            for s, at, a, ac, su, d in rows
        ][::-1]


class _Cursor:
    """A cursor that takes `?` statements and translates them for the driver."""

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw = raw
        self._d = dialect

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        self.raw.execute(self._d.sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.raw.executemany(self._d.sql(sql), rows)

    def fetchone(self) -> Any:
        return self.raw.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self.raw.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self.raw.rowcount)


def window_take(
    window: Sequence[tuple[int, int]], now_us: int, per_minute: int, want: int, at_least: int
) -> tuple[int, float]:
    """Sends to grant given those of the last minute ((at, n) by time); (granted, wait s)."""
    used = sum(n for _, n in window)
    free = max(0, per_minute - used)
    granted = min(want, free)
    if granted < at_least:  # all of a message's parts, or none
        granted = 0
    need = max(1, at_least)
    left = free - granted
    if left >= need:
        return granted, 0.0
    for at, n in window:  # the oldest sends leave the window first
        left += n
        if left >= need:
            return granted, max(0.0, (at + WINDOW_US - now_us) / 1e6)
    return granted, 60.0  # more than a minute's limit at once: never, but say a minute
