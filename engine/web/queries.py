"""Bounded reads the pages need beyond the `StateStore` protocol's methods (read-only).

The protocol answers "every open task", "every member", "every occurrence in a window"; with
100,000 members and a million deliveries a page cannot load those. Each function here returns
at most `limit` records plus a count, with one SQL statement on the SQL stores (SQLite and
PostgreSQL share the schema of engine/run/store/sql.py) and the same answer from the protocol's
methods on any other store (the memory store, the reference). tests/test_web.py holds the two
paths to one answer. They are candidates for the protocol itself.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from ..run.store.base import (
    EventRecord,
    MemberRecord,
    MemberTime,
    OccurrenceRecord,
    OccurrenceState,
    StateStore,
    TaskRecord,
    TaskState,
)
from ..run.store.codec import from_us, member_from, to_us

T = TypeVar("T")
COUNT_CAP = 10_000  # member counts stop here (beyond it a page says "10,000+")
# the states an operator looks at: everything but the many `sent`
ATTENTION = (
    OccurrenceState.PENDING,
    OccurrenceState.CLAIMED,
    OccurrenceState.RETRY,
    OccurrenceState.UNCERTAIN,
    OccurrenceState.DEAD,
    OccurrenceState.SKIPPED,
    OccurrenceState.DROPPED,
)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """At most `limit` records of a selection, and how many it holds in all."""

    items: list[T]
    total: int | None  # None: more than `items`, not counted
    capped: bool = False  # `total` is a floor: counting stopped there

    @property
    def more(self) -> int:
        """How many were left out (0 when not counted)."""
        return max(0, (self.total or 0) - len(self.items))


def _sql(store: StateStore) -> Any:
    """The SQL store's read transaction factory, or None for a store without SQL."""
    from ..run.store.sql import SqlStore

    return store._read if isinstance(store, SqlStore) else None


def _occ(store: StateStore, row: Sequence[Any]) -> OccurrenceRecord:
    from ..run.store.sql import SqlStore

    return SqlStore._occ(row)


_OCC = (
    "key, run, action, stage, kind, member, audience, owner, backend, scheduled_at, due_at,"
    " state, attempts, next_at, fence, lease_until, worker, reason, updated_at"
)


def occurrences_by_key(
    store: StateStore, run_id: str, keys: Sequence[str]
) -> dict[str, OccurrenceRecord]:
    """The stored occurrences among `keys` (primary-key lookups)."""
    read = _sql(store)
    if read is None:
        found = (store.get_occurrence(run_id, k) for k in keys)
        return {o.key: o for o in found if o is not None}
    out: dict[str, OccurrenceRecord] = {}
    with read() as cur:
        for i in range(0, len(keys), 400):
            chunk = keys[i : i + 400]
            cur.execute(
                f"SELECT {_OCC} FROM occurrences WHERE run = ?"
                f" AND key IN ({', '.join('?' * len(chunk))})",
                (run_id, *chunk),
            )
            out.update((o.key, o) for o in (_occ(store, r) for r in cur.fetchall()))
    return out


def member_states_between(
    store: StateStore,
    run_id: str,
    since: datetime,
    until: datetime,
    states: Sequence[OccurrenceState] = ATTENTION,
) -> dict[str, int]:
    """How many occurrences for one member each (welcome messages …) in `states` were (or will
    be) tried in [since, until), by state: one range of the (run, state, next_at) index each."""
    read = _sql(store)
    if read is None:
        rows = [o for o in store.occurrences(run_id, list(states)) if o.member is not None]
        return dict(Counter(str(o.state) for o in rows if since <= o.next_at < until))
    out = {}
    with read() as cur:
        for state in states:
            cur.execute(
                "SELECT COUNT(*) FROM occurrences WHERE run = ? AND state = ? AND next_at >= ?"
                " AND next_at < ? AND member IS NOT NULL",
                (run_id, str(state), to_us(since), to_us(until)),
            )
            n = int(cur.fetchone()[0])
            if n:
                out[str(state)] = n
    return out


def occurrences_in_state(
    store: StateStore,
    run_id: str,
    state: OccurrenceState,
    limit: int,
    since: datetime | None = None,
) -> Page[OccurrenceRecord]:
    """The first `limit` occurrences in a state by the time they were (or will be) tried
    (`next_at`, since `since`), and how many there are: one range of the (run, state, next_at)
    index."""
    read = _sql(store)
    if read is None:
        rows = store.occurrences(run_id, [state])
        rows = [o for o in rows if since is None or o.next_at >= since]
        rows.sort(key=lambda o: (o.next_at, o.key))
        return Page(rows[:limit], len(rows))
    where = "run = ? AND state = ?"
    params: list[Any] = [run_id, str(state)]
    if since is not None:
        where += " AND next_at >= ?"
        params.append(to_us(since))
    with read() as cur:
        cur.execute(
            f"SELECT {_OCC} FROM occurrences WHERE {where} ORDER BY next_at, key"
            f" LIMIT {int(limit)}",
            params,
        )
        rows = [_occ(store, r) for r in cur.fetchall()]
        if len(rows) < limit:
            return Page(rows, len(rows))
        cur.execute(f"SELECT COUNT(*) FROM occurrences WHERE {where}", params)
        return Page(rows, int(cur.fetchone()[0]))


def state_counts(
    store: StateStore, run_id: str, states: Sequence[OccurrenceState] = ATTENTION
) -> dict[str, int]:
    """How many occurrences are in each of `states` (those with any): one index range each.

    `sent` is left out by default: counting every delivery ever made scans the whole table.
    """
    read = _sql(store)
    if read is None:
        counts = store.count_occurrences(run_id)
        return {str(k): counts[k] for k in states if counts.get(k)}
    out = {}
    with read() as cur:
        for state in states:
            cur.execute(
                "SELECT COUNT(*) FROM occurrences WHERE run = ? AND state = ?", (run_id, str(state))
            )
            n = int(cur.fetchone()[0])
            if n:
                out[str(state)] = n
    return out


def open_task_counts(store: StateStore, run_id: str) -> dict[str | None, int]:
    """How many tasks are open, per role (None: tasks without a role)."""
    read = _sql(store)
    if read is None:
        return dict(Counter(t.role for t in store.tasks(run_id, states=[TaskState.OPEN])))
    with read() as cur:
        cur.execute(
            "SELECT role, COUNT(*) FROM tasks WHERE run = ? AND state = 'open' GROUP BY role",
            (run_id,),
        )
        return {r: int(n) for r, n in cur.fetchall()}


def overdue_tasks(store: StateStore, run_id: str, now: datetime) -> int:
    """How many open tasks were due before `now`."""
    read = _sql(store)
    if read is None:
        return sum(1 for t in store.tasks(run_id, states=[TaskState.OPEN]) if t.due_at < now)
    with read() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM tasks WHERE run = ? AND state = 'open' AND due_at < ?",
            (run_id, to_us(now)),
        )
        return int(cur.fetchone()[0])


def open_tasks(
    store: StateStore, run_id: str, limit: int, role: str | None = None, every: bool = True
) -> list[TaskRecord]:
    """The earliest-due open tasks: of every role, or (`every=False`) of `role` only."""
    read = _sql(store)
    if read is None:
        rows = store.tasks(run_id, states=[TaskState.OPEN])
        return [t for t in rows if every or t.role == role][:limit]
    from ..run.store.sql import _TASK_COLUMNS, SqlStore

    where, params = "run = ? AND state = 'open'", [run_id]
    if not every:
        if role is None:
            where += " AND role IS NULL"
        else:
            where += " AND role = ?"
            params.append(role)
    with read() as cur:
        cur.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {where} ORDER BY due_at, id"
            f" LIMIT {int(limit)}",
            params,
        )
        return [SqlStore._task(r) for r in cur.fetchall()]


def task(store: StateStore, run_id: str, task_id: str) -> TaskRecord | None:
    """One task by id."""
    read = _sql(store)
    if read is None:
        return next((t for t in store.tasks(run_id) if t.id == task_id), None)
    from ..run.store.sql import _TASK_COLUMNS, SqlStore

    with read() as cur:
        cur.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run = ? AND id = ?", (run_id, task_id)
        )
        row = cur.fetchone()
        return SqlStore._task(row) if row else None


def done_tasks(
    store: StateStore, run_id: str, limit: int, role: str | None = None, every: bool = True
) -> list[TaskRecord]:
    """The `limit` tasks done most recently (of every role, or of `role`), latest first."""
    read = _sql(store)
    if read is None:
        rows = [t for t in store.tasks(run_id, states=[TaskState.DONE]) if every or t.role == role]
        return heapq.nlargest(limit, rows, key=lambda t: (t.done_at or t.due_at, t.id))
    from ..run.store.sql import _TASK_COLUMNS, SqlStore

    where, params = "run = ? AND state = 'done'", [run_id]
    if not every:
        if role is None:
            where += " AND role IS NULL"
        else:
            where += " AND role = ?"
            params.append(role)
    with read() as cur:
        cur.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {where}"
            f" ORDER BY done_at DESC, id DESC LIMIT {int(limit)}",
            params,
        )
        return [SqlStore._task(r) for r in cur.fetchall()]


_MEMBER = "id, state, joined_at, left_at, last_active_at"


def recent_joins(
    store: StateStore, run_id: str, since: datetime, until: datetime, limit: int
) -> Page[MemberRecord]:
    """Current members who joined in [since, until), latest first."""
    read = _sql(store)
    if read is None:
        rows = store.members_due(run_id, MemberTime.JOINED, since, until)
        rows.sort(key=lambda m: (m.joined_at, m.id), reverse=True)
        return Page(rows[:limit], len(rows))
    where = "run = ? AND left_at IS NULL AND joined_at >= ? AND joined_at < ?"
    params = (run_id, to_us(since), to_us(until))
    with read() as cur:
        cur.execute(
            f"SELECT {_MEMBER} FROM members WHERE {where}"
            f" ORDER BY joined_at DESC, id DESC LIMIT {int(limit)}",
            params,
        )
        rows = [member_from(*r) for r in cur.fetchall()]
        cur.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM members WHERE {where} LIMIT {COUNT_CAP}) AS m",
            params,
        )
        n = int(cur.fetchone()[0])
        return Page(rows, n, capped=n >= COUNT_CAP)


def silent_members(
    store: StateStore, run_id: str, before: datetime, limit: int
) -> Page[MemberRecord]:
    """Current members last active before `before`, the most recently silent first."""
    read = _sql(store)
    if read is None:
        epoch = datetime.fromtimestamp(0, before.tzinfo)
        rows = store.members_due(run_id, MemberTime.LAST_ACTIVE, epoch, before)
        rows.sort(key=lambda m: (m.last_active_at, m.id), reverse=True)
        return Page(rows[:limit], len(rows))
    where = "run = ? AND left_at IS NULL AND last_active_at < ?"
    params = (run_id, to_us(before))
    with read() as cur:
        cur.execute(
            f"SELECT {_MEMBER} FROM members WHERE {where}"
            f" ORDER BY last_active_at DESC, id DESC LIMIT {int(limit)}",
            params,
        )
        rows = [member_from(*r) for r in cur.fetchall()]
        cur.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM members WHERE {where} LIMIT {COUNT_CAP}) AS m",
            params,
        )
        n = int(cur.fetchone()[0])
        return Page(rows, n, capped=n >= COUNT_CAP)


def events_of_type(
    store: StateStore, run_id: str, kinds: Sequence[str], since: datetime, limit: int
) -> Page[EventRecord]:
    """The latest `limit` events of some types since `since`; `total` is exact only when there
    are no more than `limit` (else None: counting them would read every event in the window)."""
    read = _sql(store)
    if read is None:
        rows = store.events(run_id, since=since, types=list(kinds))[::-1]
        return Page(rows[:limit], len(rows) if len(rows) <= limit else None)
    marks = ", ".join("?" * len(kinds))
    with read() as cur:
        cur.execute(
            f"SELECT id, type, member, at, data FROM events WHERE run = ? AND at >= ?"
            f" AND type IN ({marks}) ORDER BY at DESC, id DESC LIMIT {int(limit) + 1}",
            (run_id, to_us(since), *kinds),
        )
        rows = [
            EventRecord(i, t, m, from_us(at), json.loads(data))
            for i, t, m, at, data in cur.fetchall()
        ]
    return Page(rows[:limit], len(rows) if len(rows) <= limit else None)
