"""The in-memory store: the reference implementation of the contract, for tests and dry runs.

Plain dictionaries behind one lock; nothing survives the process. The SQL stores must behave
exactly like this one (tests/test_store_contract.py).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any

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
    TaskRecord,
    TaskState,
    TransitionRecord,
)
from .codec import dumps, metric_value
from .sql import SCHEMA_VERSION  # the schema this store mirrors (one number, the SQL stores')


class MemoryStore:
    """A state store in memory (see the module docstring)."""

    url = "memory:"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._occ: dict[tuple[str, str], OccurrenceRecord] = {}
        self._attempts: dict[tuple[str, str], list[AttemptRecord]] = {}
        self._events: dict[tuple[str, str], EventRecord] = {}
        self._members: dict[tuple[str, str], MemberRecord] = {}
        self._metrics: dict[tuple[str, str, str, str], MetricValue] = {}
        self._evals: dict[str, list[GateEvaluation]] = {}
        self._transitions: dict[str, list[TransitionRecord]] = {}
        self._tasks: dict[tuple[str, str], TaskRecord] = {}
        self._audit: dict[str, list[AuditEntry]] = {}
        self._sends: dict[str, list[tuple[int, int]]] = {}
        self._quotas: dict[
            str, int
        ] = {}  # allowance and period -> uses counted  # target -> (at µs, sends) of a minute
        self._fence = 0
        self._forecasts: dict[str, dict[datetime, Any]] = {}
        self._seq = itertools.count(1)
        self._ledger: dict[tuple[str, str], LedgerEntry] = {}
        self._applications: dict[tuple[str, str], ApplicationRecord] = {}
        self._incidents: dict[tuple[str, str], IncidentRecord] = {}

    def close(self) -> None:
        """Nothing to release."""

    def schema_version(self) -> int:
        """The schema version this store mirrors."""
        return SCHEMA_VERSION

    def _log(self, run_id: str, actor: str, action: str, subject: str, detail: Any) -> None:
        import json

        entry = AuditEntry(
            next(self._seq),
            datetime.now().astimezone(),
            actor,
            action,
            subject,
            json.loads(dumps(detail)),
        )
        self._audit.setdefault(run_id, []).append(entry)

    # -- runs
    def create_run(self, run: RunRecord) -> bool:
        """Insert a run; False when one with its id exists (nothing changed)."""
        with self._lock:
            if run.id in self._runs:
                return False
            self._runs[run.id] = replace(run, rev=0)
            self._log(run.id, "runner", "run.created", run.id, {"origin": str(run.origin)})
            return True

    def get_run(self, run_id: str) -> RunRecord | None:
        """A run by id."""
        with self._lock:
            return self._runs.get(run_id)

    def runs(self) -> list[RunRecord]:
        """Every run."""
        with self._lock:
            return [self._runs[k] for k in sorted(self._runs)]

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
        with self._lock:
            cur = self._runs.get(run.id)
            if cur is None or cur.rev != run.rev:
                return None
            saved = replace(run, rev=run.rev + 1)
            self._runs[run.id] = saved
            self._transitions.setdefault(run.id, []).extend(transitions)
            for t in transitions:
                self._log(run.id, "runner", f"stage.{t.event}", t.stage, dict(t.evidence))
            self._evals.setdefault(run.id, []).extend(evaluations)
            for m in metrics:
                value = metric_value(m.value)
                self._metrics[(run.id, m.name, m.day.isoformat(), m.source)] = replace(
                    m, value=value
                )
            self._insert(run.id, occurrences)
            for i in incidents:
                if (run.id, i.id) not in self._incidents:
                    self._incidents[(run.id, i.id)] = i
                    self._log(run.id, i.opened_by, "incident.opened", i.id, {"detected": True})
            return saved

    # -- occurrences
    def _insert(self, run_id: str, items: Sequence[NewOccurrence]) -> int:
        now = datetime.now().astimezone()
        new = 0
        for o in items:
            k = (run_id, o.key)
            if k in self._occ:
                continue
            self._occ[k] = OccurrenceRecord(
                o.key, run_id, o.action, o.stage, o.kind, o.member, o.audience, o.owner,
                o.backend, o.scheduled_at, o.due_at, o.state, 0, o.due_at, 0, None, None,
                o.reason, now,
            )  # fmt: skip
            new += 1
        return new

    def add_occurrences(self, run_id: str, items: Sequence[NewOccurrence]) -> int:
        """Insert occurrences, ignoring keys present; how many were new."""
        with self._lock:
            return self._insert(run_id, items)

    def claim(
        self, run_id: str, now: datetime, limit: int, lease_until: datetime, worker: str
    ) -> list[OccurrenceRecord]:
        """Claim up to `limit` claimable occurrences due by `now`, oldest first."""
        with self._lock:
            self._fence += 1
            due = sorted(
                (
                    o
                    for (r, _), o in self._occ.items()
                    if r == run_id and o.state in CLAIMABLE and o.next_at <= now
                ),
                key=lambda o: (o.next_at, o.key),
            )[:limit]
            out = []
            for o in due:
                c = replace(
                    o,
                    state=OccurrenceState.CLAIMED,
                    fence=self._fence,
                    lease_until=lease_until,
                    worker=worker,
                    updated_at=now,
                )
                self._occ[(run_id, o.key)] = c
                out.append(c)
            return out

    def record(self, run_id: str, outcomes: Sequence[Outcome], actor: str) -> list[str]:
        """Apply outcomes; the keys whose fence was stale (nothing recorded for them)."""
        stale = []
        with self._lock:
            for o in outcomes:
                cur = self._occ.get((run_id, o.key))
                if cur is None or cur.fence != o.fence or cur.state != OccurrenceState.CLAIMED:
                    stale.append(o.key)
                    continue
                attempt = cur.attempts + (1 if o.attempted else 0)
                self._occ[(run_id, o.key)] = replace(
                    cur,
                    state=o.state,
                    attempts=attempt,
                    next_at=o.next_at if o.next_at is not None else cur.next_at,
                    lease_until=None,
                    reason=o.detail or cur.reason,  # an empty detail keeps why it was late
                    updated_at=o.at,
                )
                if o.attempted:
                    self._attempts.setdefault((run_id, o.key), []).append(
                        AttemptRecord(o.key, attempt, o.fence, o.at, o.state, o.detail)
                    )
                if o.task is not None:
                    self._open_task(run_id, o.task, o.at)
                self._insert(run_id, o.children)
            if stale:
                self._log(run_id, actor, "record.stale", f"{len(stale)} outcomes", stale)
        return stale

    def _open_task(self, run_id: str, t: Any, at: datetime) -> None:
        if (run_id, t.id) not in self._tasks:
            self._tasks[(run_id, t.id)] = TaskRecord(
                t.id, run_id, t.role, t.action, t.title, t.text, t.due_at, t.member,
                TaskState.OPEN, at, None, None, None, t.remote_id, t.backend,
            )  # fmt: skip

    def expire_leases(
        self, run_id: str, now: datetime, resend: Collection[str] = ()
    ) -> list[OccurrenceRecord]:
        """Claims whose lease ended before `now`: UNCERTAIN, or PENDING again at once on the
        backends named in `resend` (idempotent ones), in one transaction; those occurrences."""
        out = []
        again = set(resend)
        with self._lock:
            for (r, k), o in list(self._occ.items()):
                if r != run_id or o.state != OccurrenceState.CLAIMED:
                    continue
                if o.lease_until is None or o.lease_until >= now:
                    continue
                state = OccurrenceState.PENDING if o.backend in again else OccurrenceState.UNCERTAIN
                u = replace(
                    o,
                    state=state,
                    attempts=o.attempts + 1,  # next_at stays: it was due when it was claimed
                    reason="the runner holding it stopped before recording the outcome",
                    lease_until=None,
                    updated_at=now,
                )
                self._occ[(r, k)] = u
                self._attempts.setdefault((r, k), []).append(
                    AttemptRecord(k, u.attempts, u.fence, now, OccurrenceState.UNCERTAIN, u.reason)
                )
                out.append(u)
            if out:
                self._log(
                    run_id, "runner", "lease.expired", f"{len(out)} occurrences",
                    {
                        "uncertain": [o.key for o in out if o.state == OccurrenceState.UNCERTAIN],
                        "resent": [o.key for o in out if o.state == OccurrenceState.PENDING],
                    },
                )  # fmt: skip
        return sorted(out, key=lambda o: (o.next_at, o.key))

    def resolve(
        self, run_id: str, key: str, resolution: Resolution, now: datetime, actor: str
    ) -> OccurrenceRecord | None:
        """An operator's decision on an UNCERTAIN or DEAD occurrence; None when not found."""
        state = {
            Resolution.SENT: OccurrenceState.SENT,
            Resolution.RESEND: OccurrenceState.PENDING,
            Resolution.DROP: OccurrenceState.DROPPED,
        }[resolution]
        with self._lock:
            cur = self._occ.get((run_id, key))
            if cur is None or cur.state not in (OccurrenceState.UNCERTAIN, OccurrenceState.DEAD):
                return None
            new = replace(
                cur,
                state=state,
                next_at=now,
                reason=f"resolved by {actor}: {resolution}",
                updated_at=now,
            )
            self._occ[(run_id, key)] = new
            self._log(run_id, actor, f"resolve.{resolution}", key, {})
            return new

    def get_occurrence(self, run_id: str, key: str) -> OccurrenceRecord | None:
        """One occurrence."""
        with self._lock:
            return self._occ.get((run_id, key))

    def occurrences(
        self,
        run_id: str,
        states: Sequence[OccurrenceState] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[OccurrenceRecord]:
        """Occurrences by due time (optionally by state and [since, until)), earliest first."""
        with self._lock:
            rows = sorted(
                (
                    o
                    for (r, _), o in self._occ.items()
                    if r == run_id
                    and (not states or o.state in states)
                    and (since is None or o.due_at >= since)
                    and (until is None or o.due_at < until)
                ),
                key=lambda o: (o.due_at, o.key),
            )
        return rows if limit is None else rows[:limit]

    def count_occurrences(
        self, run_id: str, states: Sequence[OccurrenceState] | None = None
    ) -> dict[OccurrenceState, int]:
        """How many occurrences are in each state (of `states` only, when given)."""
        counts: dict[OccurrenceState, int] = {}
        with self._lock:
            for (r, _), o in self._occ.items():
                if r == run_id and (states is None or o.state in states):
                    counts[o.state] = counts.get(o.state, 0) + 1
        return counts

    def occurrences_by_key(self, run_id: str, keys: Sequence[str]) -> dict[str, OccurrenceRecord]:
        """The stored occurrences among `keys`, by key."""
        with self._lock:
            return {k: self._occ[(run_id, k)] for k in keys if (run_id, k) in self._occ}

    def occurrences_in_state(
        self,
        run_id: str,
        state: OccurrenceState,
        limit: int,
        since: datetime | None = None,
    ) -> Page[OccurrenceRecord]:
        """The first `limit` occurrences in `state` by due time, and how many there are."""
        rows = self.occurrences(run_id, [state], since=since)
        return Page(rows[:limit], len(rows))

    def member_occurrence_counts(
        self,
        run_id: str,
        since: datetime,
        until: datetime,
        states: Sequence[OccurrenceState],
    ) -> dict[OccurrenceState, int]:
        """Occurrences for one member each due in [since, until), per state of `states`."""
        rows = self.occurrences(run_id, list(states), since=since, until=until) if states else []
        return dict(Counter(o.state for o in rows if o.member is not None))

    def next_due(self, run_id: str) -> datetime | None:
        """The earliest `next_at` of a claimable occurrence."""
        with self._lock:
            times = [
                o.next_at for (r, _), o in self._occ.items() if r == run_id and o.state in CLAIMABLE
            ]
        return min(times) if times else None

    def attempts(self, run_id: str, key: str) -> list[AttemptRecord]:
        """Every attempt of one occurrence, in order."""
        with self._lock:
            return sorted(self._attempts.get((run_id, key), []), key=lambda a: (a.attempt, a.fence))

    # -- members and events
    def ingest(
        self, run_id: str, events: Sequence[EventRecord], derive: Deriver, actor: str
    ) -> list[bool]:
        """Insert events not yet seen (by id); for those, save what `derive` says. New flags."""
        with self._lock:
            flags, new, seen = [], [], set()
            for e in events:
                fresh = (run_id, e.id) not in self._events and e.id not in seen
                seen.add(e.id)
                flags.append(fresh)
                if fresh:
                    new.append(e)
            if new:
                members = {
                    m: self._members[(run_id, m)]
                    for m in {e.member for e in new}
                    if (run_id, m) in self._members
                }
                context = IngestContext(
                    members,
                    ledger=lambda member: self.ledger(run_id, member),
                    team_sizes=lambda: self.team_sizes(run_id),
                    joined_count=lambda: sum(
                        1
                        for (r, _), m in self._members.items()
                        if r == run_id and m.joined_at is not None
                    ),
                    redeemed=lambda: self.redeemed_counts(run_id),
                    application=lambda member: self._applications.get((run_id, member)),
                )
                results = list(derive(new, context))  # before any change: if it fails, none
                for e in new:
                    self._events[(run_id, e.id)] = e
                now = datetime.now().astimezone()
                for r in results:
                    self._members[(run_id, r.member.id)] = r.member
                    self._insert(run_id, r.occurrences)
                    self._add_ledger(run_id, r.ledger)
                    if r.application is not None:
                        self._applications[(run_id, r.member.id)] = r.application
                    for t in r.tasks:
                        self._open_task(run_id, t, now)
                    for task_id in r.done_tasks:
                        self._done(run_id, task_id, now, actor)
                    if r.refusal:
                        self._log(run_id, actor, "event.refused", r.member.id,
                                  {"reason": r.refusal})  # fmt: skip
                self._log(
                    run_id, actor, "events.ingested", f"{len(new)} events",
                    {"new": len(new), "duplicates": len(events) - len(new)},
                )  # fmt: skip
            return flags

    def get_members(self, run_id: str, ids: Sequence[str]) -> dict[str, MemberRecord]:
        """Members by id (absent ones are missing)."""
        with self._lock:
            return {i: self._members[(run_id, i)] for i in ids if (run_id, i) in self._members}

    def put_members(self, run_id: str, members: Sequence[MemberRecord]) -> None:
        """Save members (tier changes, derived updates)."""
        with self._lock:
            for m in members:
                self._members[(run_id, m.id)] = m

    def iter_members(self, run_id: str) -> Iterator[MemberRecord]:
        """Every member of a run."""
        with self._lock:
            rows = sorted((m for (r, _), m in self._members.items() if r == run_id), key=_by_id)
        yield from rows

    def member_facts(self, run_id: str) -> list[MemberFacts]:
        """What daily metrics read of every member, without the rest of its state."""
        with self._lock:
            return [
                MemberFacts(m.id, m.joined_at, m.left_at, m.referrer, m.tier, m.source, m.team)
                for (r, _), m in self._members.items()
                if r == run_id
            ]

    def earliest_member_time(
        self, run_id: str, field: MemberTime, since: datetime, until: datetime
    ) -> datetime | None:
        """The earliest `field` instant in [since, until) of a current member, or None."""
        found = [getattr(m, MemberTime(field).value) for m in self.members_due(
            run_id, field, since, until)]  # fmt: skip
        return min(found, default=None)

    def event_facts(
        self, run_id: str, since: datetime, until: datetime, types: Sequence[str]
    ) -> list[tuple[str, str, datetime]]:
        """(member, type, at) of the events of `types` in [since, until), without their data."""
        return [(e.member, e.type, e.at) for e in self.events(run_id, since, until, types)]

    def members_due(
        self, run_id: str, field: MemberTime, since: datetime, until: datetime
    ) -> list[MemberRecord]:
        """Current members (not left) whose `field` instant lies in [since, until), by id."""
        name = MemberTime(field).value
        with self._lock:
            rows = [
                m
                for (r, _), m in self._members.items()
                if r == run_id
                and m.left_at is None
                and (t := getattr(m, name)) is not None
                and since <= t < until
            ]
        return sorted(rows, key=_by_id)

    def events(
        self,
        run_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Sequence[str] | None = None,
    ) -> list[EventRecord]:
        """Events with `at` in [since, until), by time."""
        with self._lock:
            return sorted(
                (
                    e
                    for (r, _), e in self._events.items()
                    if r == run_id
                    and (since is None or e.at >= since)
                    and (until is None or e.at < until)
                    and (not types or e.type in types)
                ),
                key=lambda e: (e.at, e.id),
            )

    def latest_events(
        self, run_id: str, types: Sequence[str], since: datetime, limit: int
    ) -> Page[EventRecord]:
        """The latest `limit` events of `types` since `since`, latest first."""
        rows = self.events(run_id, since=since, types=types)[::-1] if types else []
        return Page(rows[:limit], len(rows) if len(rows) <= limit else None)

    def recent_joins(
        self, run_id: str, since: datetime, until: datetime, limit: int
    ) -> Page[MemberRecord]:
        """Current members who joined in [since, until), the latest first."""
        rows = self.members_due(run_id, MemberTime.JOINED, since, until)
        rows.sort(key=lambda m: (m.joined_at, m.id), reverse=True)
        return _capped(rows, limit)

    def silent_members(self, run_id: str, before: datetime, limit: int) -> Page[MemberRecord]:
        """Current members last active before `before`, the most recently active first."""
        with self._lock:
            rows = [
                m
                for (r, _), m in self._members.items()
                if r == run_id
                and m.left_at is None
                and m.last_active_at is not None
                and m.last_active_at < before
            ]
        rows.sort(key=lambda m: (m.last_active_at, m.id), reverse=True)
        return _capped(rows, limit)

    # -- metrics, gates, transitions
    def metric_values(
        self, run_id: str, names: Sequence[str] | None = None, since: date | None = None
    ) -> list[MetricValue]:
        """Recorded metric values by day (from day `since` on when given)."""
        with self._lock:
            rows = [
                m
                for (r, n, _, _), m in self._metrics.items()
                if r == run_id and (not names or n in names) and (since is None or m.day >= since)
            ]
        return sorted(rows, key=lambda m: (m.day, m.name, m.source))

    def gate_evaluations(self, run_id: str, limit: int | None = None) -> list[GateEvaluation]:
        """Gate readings, latest last."""
        with self._lock:
            rows = list(self._evals.get(run_id, []))
        return rows if limit is None else rows[-limit:] if limit else []

    def transitions(self, run_id: str) -> list[TransitionRecord]:
        """Every transition, in order."""
        with self._lock:
            return list(self._transitions.get(run_id, []))

    # -- staff tasks
    def tasks(
        self, run_id: str, role: str | None = None, states: Sequence[TaskState] | None = None
    ) -> list[TaskRecord]:
        """Staff tasks by due time."""
        with self._lock:
            return sorted(
                (
                    t
                    for (r, _), t in self._tasks.items()
                    if r == run_id
                    and (role is None or t.role == role)
                    and (not states or t.state in states)
                ),
                key=lambda t: (t.due_at, t.id),
            )

    def get_task(self, run_id: str, task_id: str) -> TaskRecord | None:
        """One task by id."""
        with self._lock:
            return self._tasks.get((run_id, task_id))

    def open_task_counts(self, run_id: str) -> dict[str | None, int]:
        """How many tasks are open per role (None: without a role)."""
        return dict(Counter(t.role for t in self.tasks(run_id, states=[TaskState.OPEN])))

    def overdue_task_count(self, run_id: str, now: datetime) -> int:
        """How many open tasks were due before `now`."""
        return sum(1 for t in self.tasks(run_id, states=[TaskState.OPEN]) if t.due_at < now)

    def open_tasks(self, run_id: str, limit: int, role: str | None = None) -> list[TaskRecord]:
        """The `limit` earliest-due open tasks (of every role, one role, or NO_ROLE: none)."""
        rows = self.tasks(run_id, states=[TaskState.OPEN])
        return [t for t in rows if _role_matches(t, role)][:limit]

    def done_tasks(self, run_id: str, limit: int, role: str | None = None) -> list[TaskRecord]:
        """The `limit` tasks done most recently, latest first."""
        rows = [t for t in self.tasks(run_id, states=[TaskState.DONE]) if _role_matches(t, role)]
        return heapq.nlargest(limit, rows, key=lambda t: (t.done_at or t.due_at, t.id))

    def next_escalation(self, run_id: str) -> datetime | None:
        """The earliest due time of an open task not yet escalated (the runner's wake-up)."""
        due = [
            t.due_at for t in self.tasks(run_id, states=[TaskState.OPEN]) if t.escalated_at is None
        ]
        return min(due, default=None)

    def awaiting_confirmation(self, run_id: str, limit: int) -> list[TaskRecord]:
        """Open tasks tracking a platform send (`remote_id`), earliest due first."""
        return [t for t in self.tasks(run_id, states=[TaskState.OPEN]) if t.remote_id][:limit]

    def complete_task(self, run_id: str, task_id: str, now: datetime, actor: str) -> bool:
        """Mark a task done; False when there is no open task with that id."""
        with self._lock:
            return self._done(run_id, task_id, now, actor)

    def _done(self, run_id: str, task_id: str, now: datetime, actor: str) -> bool:
        t = self._tasks.get((run_id, task_id))
        if t is None or t.state != TaskState.OPEN:
            return False
        self._tasks[(run_id, task_id)] = replace(
            t, state=TaskState.DONE, done_at=now, done_by=actor
        )
        self._log(run_id, actor, "task.done", task_id, {})
        return True

    def postpone_task(self, run_id: str, task_id: str, to: datetime, actor: str) -> bool:
        """Move an open task's due time; False when there is no open task with that id."""
        with self._lock:
            t = self._tasks.get((run_id, task_id))
            if t is None or t.state != TaskState.OPEN:
                return False
            self._tasks[(run_id, task_id)] = replace(t, due_at=to, escalated_at=None)
            self._log(run_id, actor, "task.postponed", task_id, {"to": to.isoformat()})
            return True

    def escalate_tasks(
        self, run_id: str, due_before: datetime, now: datetime, actor: str
    ) -> list[TaskRecord]:
        """Open tasks due before `due_before`, not yet escalated: escalated at `now`; them."""
        out = []
        with self._lock:
            for (r, k), t in list(self._tasks.items()):
                overdue = r == run_id and t.state == TaskState.OPEN and t.due_at < due_before
                if overdue and t.escalated_at is None:
                    u = replace(t, escalated_at=now)
                    self._tasks[(r, k)] = u
                    out.append(u)
                    self._log(run_id, actor, "task.overdue", t.id, {"role": t.role})
        return sorted(out, key=lambda t: (t.due_at, t.id))

    # -- points, applications, incidents, teams
    def _add_ledger(self, run_id: str, entries: Sequence[LedgerEntry]) -> int:
        new = 0
        for e in entries:
            if (run_id, e.key) not in self._ledger:
                self._ledger[(run_id, e.key)] = e
                new += 1
        return new

    def add_ledger(self, run_id: str, entries: Sequence[LedgerEntry]) -> int:
        """Record points movements, ignoring keys present; how many were new."""
        with self._lock:
            return self._add_ledger(run_id, entries)

    def ledger(self, run_id: str, member: str | None = None) -> list[LedgerEntry]:
        """Points movements (of one member, when given) by time, then key."""
        with self._lock:
            rows = [
                e
                for (r, _), e in self._ledger.items()
                if r == run_id and (member is None or e.member == member)
            ]
        return sorted(rows, key=lambda e: (e.at, e.key))

    def points_balances(self, run_id: str) -> dict[str, int]:
        """Every member's points balance (members with no entry are left out)."""
        out: Counter[str] = Counter()
        for e in self.ledger(run_id):
            out[e.member] += e.points
        return {m: out[m] for m in sorted(out)}

    def points_totals(self, run_id: str) -> dict[PointsKind, int]:
        """The sum of the ledger's points per kind (kinds with no entry are left out)."""
        out: dict[PointsKind, int] = {}
        for e in self.ledger(run_id):
            out[e.kind] = out.get(e.kind, 0) + e.points
        return out

    def redeemed_counts(self, run_id: str) -> dict[str, int]:
        """How many of each item were redeemed."""
        return dict(
            Counter(e.item or "" for e in self.ledger(run_id) if e.kind == PointsKind.REDEEM)
        )

    def applications(
        self,
        run_id: str,
        states: Sequence[ApplicationState] | None = None,
        limit: int | None = None,
    ) -> list[ApplicationRecord]:
        """Applications (in `states` when given), the earliest applied first."""
        with self._lock:
            rows = sorted(
                (
                    a
                    for (r, _), a in self._applications.items()
                    if r == run_id and (not states or a.state in states)
                ),
                key=lambda a: (a.applied_at, a.member),
            )
        return rows if limit is None else rows[:limit]

    def get_application(self, run_id: str, member: str) -> ApplicationRecord | None:
        """A member's application."""
        with self._lock:
            return self._applications.get((run_id, member))

    def open_incident(
        self,
        run_id: str,
        incident: IncidentRecord,
        occurrences: Sequence[NewOccurrence],
        actor: str,
    ) -> bool:
        """Start an incident with its steps' occurrences; False when its id exists."""
        with self._lock:
            if (run_id, incident.id) in self._incidents:
                return False
            self._incidents[(run_id, incident.id)] = incident
            self._insert(run_id, occurrences)
            self._log(run_id, actor, "incident.opened", incident.id,
                      {"detected": incident.detected})  # fmt: skip
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
        with self._lock:
            cur = self._incidents.get((run_id, incident_id))
            if cur is None or cur.state != IncidentState.OPEN:
                return None
            done = replace(
                cur, state=IncidentState.CLOSED, closed_at=now, closed_by=actor, close_note=note
            )
            self._incidents[(run_id, incident_id)] = done
            for task_id in tasks:
                self._done(run_id, task_id, now, actor)
            self._log(run_id, actor, "incident.closed", incident_id, {"note": note})
            return done

    def incidents(
        self,
        run_id: str,
        states: Sequence[IncidentState] | None = None,
        limit: int | None = None,
    ) -> list[IncidentRecord]:
        """Incidents (in `states` when given), the latest opened first."""
        with self._lock:
            rows = sorted(
                (
                    i
                    for (r, _), i in self._incidents.items()
                    if r == run_id and (not states or i.state in states)
                ),
                key=lambda i: (i.opened_at, i.id),
                reverse=True,
            )
        return rows if limit is None else rows[:limit]

    def get_incident(self, run_id: str, incident_id: str) -> IncidentRecord | None:
        """One incident by id."""
        with self._lock:
            return self._incidents.get((run_id, incident_id))

    def team_sizes(self, run_id: str) -> dict[str, int]:
        """Current members per team (teams with none are left out)."""
        with self._lock:
            return dict(
                Counter(
                    m.team
                    for (r, _), m in self._members.items()
                    if r == run_id and m.team and m.left_at is None and m.joined_at is not None
                )
            )

    # -- forecasts
    def save_forecast(self, playbook: str, created_at: datetime, data: Mapping[str, Any]) -> None:
        """Keep a forecast (`sop simulate --save-forecast`) for the dashboard."""
        import json

        with self._lock:
            self._forecasts.setdefault(playbook, {})[created_at] = json.loads(dumps(dict(data)))

    def latest_forecast(self, playbook: str) -> ForecastRecord | None:
        """The newest forecast saved for a playbook."""
        with self._lock:
            saved = self._forecasts.get(playbook)
            if not saved:
                return None
            at = max(saved)
            return ForecastRecord(playbook, at, saved[at])

    # -- rate limits and audit
    def take_tokens(
        self, target: str, now: datetime, per_minute: int, want: int, at_least: int = 1
    ) -> tuple[int, float]:
        """Take up to `want` of a target's sends for the minute ending at `now`, none unless
        `at_least` are free; (granted, seconds until `at_least` are)."""
        from .codec import to_us
        from .sql import WINDOW_US, window_take

        t = to_us(now)
        with self._lock:
            window = [(a, n) for a, n in self._sends.get(target, []) if a > t - WINDOW_US]
            granted, wait = window_take(window, t, per_minute, want, at_least)
            if granted:
                window.append((t, granted))
            self._sends[target] = window
        return granted, wait

    def use_quota(self, target: str, limit: int, now: datetime) -> bool:
        """Count one use of a per-period allowance (`target` names it and its period); False,
        counting nothing, when `limit` uses are already counted."""
        with self._lock:
            used = self._quotas.get(target, 0)
            if used >= limit:
                return False
            self._quotas[target] = used + 1
            return True

    def audit(self, run_id: str, actor: str, action: str, subject: str, detail: Any) -> None:
        """Append one entry to the audit log."""
        with self._lock:
            self._log(run_id, actor, action, subject, detail)

    def audit_log(self, run_id: str, limit: int | None = None) -> list[AuditEntry]:
        """The audit log, oldest first (the latest `limit` entries)."""
        with self._lock:
            rows = list(self._audit.get(run_id, []))
        return rows if limit is None else rows[-limit:] if limit else []


def _by_id(m: MemberRecord) -> str:
    return m.id


def _role_matches(t: TaskRecord, role: str | None) -> bool:
    if role is None:
        return True
    return t.role is None if role == NO_ROLE else t.role == role


def _capped(rows: list[MemberRecord], limit: int) -> Page[MemberRecord]:
    n = min(len(rows), MEMBER_COUNT_CAP)
    return Page(rows[:limit], n, capped=n >= MEMBER_COUNT_CAP)
