"""The state store's contract: the records it keeps and the `StateStore` protocol.

Three stores implement it — memory (the reference), SQLite (the default) and PostgreSQL — and
one contract test suite (tests/test_store_contract.py) holds them to the same behaviour. Every
method is one transaction: it commits everything or nothing. Instants are aware datetimes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class OccurrenceState(enum.StrEnum):
    """Where an occurrence is in the delivery contract (docs/delivery.md)."""

    PENDING = "pending"  # inserted, waiting for its time
    CLAIMED = "claimed"  # a runner holds it under a lease and a fencing token
    RETRY = "retry"  # failed transiently; claimable again at `next_at`
    SENT = "sent"  # the backend accepted it
    DEAD = "dead"  # failed permanently or out of retries: a dead letter
    UNCERTAIN = "uncertain"  # may or may not have been sent: an operator decides
    SKIPPED = "skipped"  # deliberately not sent (missed its grace window, coalesced), with why
    DROPPED = "dropped"  # an operator dropped it
    # fanned out at its firing time into one occurrence per member (a segment, a leaderboard,
    # `for_each`, a group message with `where:`): its children (key + "/" + member) carry the sends
    EXPANDED = "expanded"


CLAIMABLE = (OccurrenceState.PENDING, OccurrenceState.RETRY)
OPEN_STATES = (*CLAIMABLE, OccurrenceState.CLAIMED, OccurrenceState.UNCERTAIN)


class TaskState(enum.StrEnum):
    """A staff task's state."""

    OPEN = "open"
    DONE = "done"


class Resolution(enum.StrEnum):
    """What an operator decided about an uncertain or dead occurrence (`sop resolve`)."""

    SENT = "sent"  # it did go out: record it as sent
    RESEND = "resend"  # send it again
    DROP = "drop"  # never send it


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One execution of a playbook in a store, with the lifecycle saved as a value."""

    id: str
    playbook: str
    version: str
    origin: datetime  # when the playbook started
    lifecycle: Mapping[str, Any]  # engine/run/lifecycle_codec.py's encoding of LifecycleState
    checked_until: datetime  # daily checks done for every local midnight up to here
    scheduled_until: datetime  # scheduled firings inserted for [origin, here)
    derived_until: datetime  # time-derived member events (silence, anniversaries) up to here
    rev: int = 0  # bumped on every save: a save with a stale rev is refused


@dataclass(frozen=True, slots=True)
class NewOccurrence:
    """An occurrence to insert (ignored when its key is already there)."""

    key: str
    action: str
    stage: str | None
    kind: str
    member: str | None
    audience: str
    owner: str | None
    backend: str | None
    scheduled_at: datetime
    due_at: datetime  # when it goes out (quiet hours applied)
    state: OccurrenceState = OccurrenceState.PENDING
    reason: str = ""  # why it is skipped, or why it was postponed


@dataclass(frozen=True, slots=True)
class OccurrenceRecord:
    """An occurrence as the store holds it."""

    key: str
    run: str
    action: str
    stage: str | None
    kind: str
    member: str | None
    audience: str
    owner: str | None
    backend: str | None
    scheduled_at: datetime
    due_at: datetime
    state: OccurrenceState
    attempts: int
    next_at: datetime  # when it may be claimed (due_at, or a retry's time)
    fence: int  # the fencing token of its latest claim (0: never claimed)
    lease_until: datetime | None
    worker: str | None
    reason: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewTask:
    """A staff task opened for an occurrence routed to a task list (its id is the key)."""

    id: str
    role: str | None
    action: str
    title: str
    text: str
    due_at: datetime
    member: str | None = None
    remote_id: str | None = None  # what the platform must confirm (a WeCom mass send's msgid)
    backend: str | None = None  # the backend that can tell whether it was confirmed


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A staff task as the store holds it."""

    id: str
    run: str
    role: str | None
    action: str
    title: str
    text: str
    due_at: datetime
    member: str | None
    state: TaskState
    created_at: datetime
    done_at: datetime | None
    done_by: str | None
    escalated_at: datetime | None
    remote_id: str | None = None
    backend: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one dispatch, recorded only if `fence` is still the occurrence's token."""

    key: str
    fence: int
    state: OccurrenceState  # SENT, RETRY, DEAD or UNCERTAIN
    at: datetime  # when the attempt ended
    detail: str = ""
    next_at: datetime | None = None  # for RETRY: when to try again
    task: NewTask | None = None  # opened in the same transaction (a task-list backend)
    attempted: bool = True  # False: put back unsent (a rate limit), not counted as an attempt
    # EXPANDED: the per-member occurrences it fans out into, inserted in the same transaction
    children: tuple[NewOccurrence, ...] = ()


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One delivery attempt and how it ended."""

    key: str
    attempt: int
    fence: int
    at: datetime
    state: OccurrenceState
    detail: str


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A member event as received: deduplicated by `id`."""

    id: str
    type: str
    member: str
    at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A member's state, derived from their events by engine/run/members.py."""

    id: str
    joined_at: datetime | None = None
    left_at: datetime | None = None
    removed: bool = False  # removed by moderation (left_at is when)
    last_active_at: datetime | None = None  # joined or spoke: silence counts from here
    spoke_days: tuple[date, ...] = ()  # local days spoken on, the latest 7 only
    active_days: tuple[date, ...] = ()  # local days of taking part in an activity, latest 7
    violations: int = 0
    streak: int = 0
    last_checkin: date | None = None
    paid: int = 0  # number of payments
    posts: int = 0  # user-generated posts ever
    invites: int = 0  # members this member referred
    referrer: str | None = None
    tier: str | None = None
    # the member's attributes: declared ones (`members.attributes`, checked against their types)
    # and what the platform says about them (name, phone, a platform user id ...)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None  # the acquisition channel they joined by (None: organic)
    team: str | None = None  # assigned at join (`teams:`), kept
    checkins: int = 0  # check-ins ever (one a day counts)
    messages: int = 0  # messages and posts ever
    approved: bool | None = None  # an application's outcome (None: never applied)
    marks: tuple[str, ...] = ()  # once-per-member firings done (`milestone:<action>`)


class MemberTime(enum.StrEnum):
    """The member instants time-derived events count from (indexed in the SQL stores)."""

    JOINED = "joined_at"  # anniversaries
    LAST_ACTIVE = "last_active_at"  # silence


@dataclass(frozen=True, slots=True)
class MemberFacts:
    """What the daily metrics read of a member (the rest of its state stays undecoded)."""

    id: str
    joined_at: datetime | None
    left_at: datetime | None
    referrer: str | None
    tier: str | None
    source: str | None = None
    team: str | None = None


class PointsKind(enum.StrEnum):
    """Why a member's points balance moved (one ledger entry each)."""

    EARN = "earn"  # an event the playbook pays for (`points.earn`)
    REWARD = "reward"  # a reward action's `reward.points`
    REDEEM = "redeem"  # spent on an item (`points.redeem`), negative
    EXPIRE = "expire"  # lapsed after `points.expire`, negative


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One movement of a member's points; `key` makes it happen once (its cause's id)."""

    key: str  # earn:<event id>, reward:<occurrence key>, redeem:<event id>, expire:<...>
    member: str
    at: datetime
    points: int  # positive when earned, negative when spent or lapsed
    kind: PointsKind
    item: str | None = None  # REDEEM: the item
    detail: str = ""


class ApplicationState(enum.StrEnum):
    """Where an application to join stands (`admission:`)."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ApplicationRecord:
    """One member's application: applied, then approved or rejected (by a rule or by staff)."""

    member: str
    state: ApplicationState
    applied_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    note: str = ""
    task: str | None = None  # the review task's id (None: decided by the approve rule)


class IncidentState(enum.StrEnum):
    """An incident is open until someone closes it."""

    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """One started emergency plan (`incidents.<name>`): who opened it, when, and its close."""

    id: str  # <name>/<opened, UTC>
    incident: str  # the playbook's incident id
    state: IncidentState
    opened_at: datetime
    opened_by: str
    note: str = ""
    detected: bool = False  # opened by its `detect:` condition, not by a person
    closed_at: datetime | None = None
    closed_by: str | None = None
    close_note: str = ""


@dataclass(frozen=True, slots=True)
class Ingested:
    """What ingesting one new event changed: the member, the occurrences it caused, and the
    points, application and tasks it moved — all saved in the event's transaction."""

    member: MemberRecord
    occurrences: tuple[NewOccurrence, ...] = ()
    ledger: tuple[LedgerEntry, ...] = ()
    application: ApplicationRecord | None = None  # saved over the member's earlier one
    tasks: tuple[NewTask, ...] = ()  # opened (an application's review task)
    done_tasks: tuple[str, ...] = ()  # completed (the review task of a decided application)
    refusal: str = ""  # the event was recorded but changed nothing, for this reason


class IngestContext(Mapping[str, MemberRecord]):
    """What a deriver reads inside the ingest transaction: the events' members as stored (a
    mapping by id), and, asked for only when needed, run-wide facts the rules depend on."""

    def __init__(
        self,
        members: Mapping[str, MemberRecord],
        ledger: Callable[[str], list[LedgerEntry]] | None = None,
        team_sizes: Callable[[], dict[str, int]] | None = None,
        joined_count: Callable[[], int] | None = None,
        redeemed: Callable[[], dict[str, int]] | None = None,
        application: Callable[[str], ApplicationRecord | None] | None = None,
    ) -> None:
        self._members = dict(members)
        self._ledger = ledger or (lambda member: [])
        self._team_sizes = team_sizes or dict
        self._joined_count = joined_count or (lambda: 0)
        self._redeemed = redeemed or dict
        self._application = application or (lambda member: None)

    def __getitem__(self, key: str) -> MemberRecord:
        return self._members[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def ledger(self, member: str) -> list[LedgerEntry]:
        """A member's points ledger so far, by time."""
        return self._ledger(member)

    def team_sizes(self) -> dict[str, int]:
        """Current members per team (members who left are not counted)."""
        return self._team_sizes()

    def joined_count(self) -> int:
        """How many members ever joined (the next joiner is number this + 1)."""
        return self._joined_count()

    def redeemed(self) -> dict[str, int]:
        """How many of each item have been redeemed."""
        return self._redeemed()

    def application(self, member: str) -> ApplicationRecord | None:
        """A member's application as stored."""
        return self._application(member)


# (new events, their members as stored before them — an `IngestContext`) -> one Ingested per
# new event, in order
Deriver = Callable[[Sequence[EventRecord], Mapping[str, MemberRecord]], Sequence[Ingested]]


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """A lifecycle transition with the metric values that justified it."""

    at: datetime
    stage: str
    event: str
    detail: str = ""
    role: str | None = None
    evidence: Mapping[str, float | None] = field(default_factory=dict)
    exit: str | None = None  # which of the stage's exits fired (`pass`, `success` ...)


@dataclass(frozen=True, slots=True)
class GateEvaluation:
    """One reading of a stage's gate: the values it read and the verdict."""

    stage: str
    at: datetime
    holds: bool
    values: Mapping[str, float | None]
    note: str = ""
    exit: str | None = None  # the exit that held (None: none did)


@dataclass(frozen=True, slots=True)
class MetricValue:
    """A metric's value for a local day (None: undefined that day)."""

    name: str
    day: date
    value: float | None
    source: str  # "events" for built-ins counted from events, else the metric source's name


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the append-only audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ForecastRecord:
    """A saved `sop simulate` forecast of a playbook (its JSON document, with `start`)."""

    playbook: str
    created_at: datetime
    data: Mapping[str, Any]


NO_ROLE = ""  # a role filter that selects the tasks without a role (no role id is empty)
MEMBER_COUNT_CAP = 10_000  # member counts stop here: `Page.capped` says the total is a floor


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """At most `limit` records of a selection, and how many the selection holds in all."""

    items: list[T]
    total: int | None  # None: more than `items`, not counted
    capped: bool = False  # `total` is a floor: counting stopped there

    @property
    def more(self) -> int:
        """How many were left out (0 when not counted)."""
        return max(0, (self.total or 0) - len(self.items))


class StoreError(Exception):
    """The store cannot be used (unreachable, a newer schema, a bad URL): said to the operator."""


class StateStore(Protocol):
    """Durable state of runs. Every method is atomic; `close()` releases the connection.

    Contract highlights (docs/delivery.md): `add_occurrences` ignores keys already present;
    `claim` hands each claimable occurrence to one caller only, under a new fencing token;
    `record` applies an outcome only when its fence is still the occurrence's token and the
    occurrence is still claimed; `expire_leases` turns claims whose lease ran out into UNCERTAIN.

    Reads that return lists either read what one caller needs (a run's claims, a member's
    events) or are bounded: a `limit` and a `Page` with the count, answered from an index
    (`occurrences_in_state`, `open_tasks`, `recent_joins` ...), so a dashboard or `sop status`
    costs the same with a million deliveries as with ten.
    """

    url: str

    def close(self) -> None:
        """Release the connection."""
        ...

    def schema_version(self) -> int:
        """The schema version the store is at."""
        ...

    # -- runs
    def create_run(self, run: RunRecord) -> bool:
        """Insert a run; False when one with its id exists (nothing changed)."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None:
        """A run by id."""
        ...

    def runs(self) -> list[RunRecord]:
        """Every run."""
        ...

    def save_run(
        self,
        run: RunRecord,
        transitions: Sequence[TransitionRecord] = (),
        evaluations: Sequence[GateEvaluation] = (),
        metrics: Sequence[MetricValue] = (),
        occurrences: Sequence[NewOccurrence] = (),
        incidents: Sequence[IncidentRecord] = (),
    ) -> RunRecord | None:
        """Save a run if its rev is still current, with what happened (incidents its `detect:`
        conditions opened: ignored when their id exists); the saved run or None."""
        ...

    # -- occurrences
    def add_occurrences(self, run_id: str, items: Sequence[NewOccurrence]) -> int:
        """Insert occurrences, ignoring keys present; how many were new."""
        ...

    def claim(
        self, run_id: str, now: datetime, limit: int, lease_until: datetime, worker: str
    ) -> list[OccurrenceRecord]:
        """Claim up to `limit` claimable occurrences due by `now`, oldest first."""
        ...

    def record(self, run_id: str, outcomes: Sequence[Outcome], actor: str) -> list[str]:
        """Apply outcomes; the keys whose fence was stale (nothing recorded for them)."""
        ...

    def expire_leases(
        self, run_id: str, now: datetime, resend: Collection[str] = ()
    ) -> list[OccurrenceRecord]:
        """Claims whose lease ended before `now`: UNCERTAIN, or PENDING again at once on the
        backends named in `resend` (idempotent ones), in one transaction; those occurrences."""
        ...

    def resolve(
        self, run_id: str, key: str, resolution: Resolution, now: datetime, actor: str
    ) -> OccurrenceRecord | None:
        """An operator's decision on an UNCERTAIN or DEAD occurrence; None when not found."""
        ...

    def get_occurrence(self, run_id: str, key: str) -> OccurrenceRecord | None:
        """One occurrence."""
        ...

    def occurrences(
        self,
        run_id: str,
        states: Sequence[OccurrenceState] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[OccurrenceRecord]:
        """Occurrences by due time (optionally by state and [since, until)), earliest first."""
        ...

    def count_occurrences(
        self, run_id: str, states: Sequence[OccurrenceState] | None = None
    ) -> dict[OccurrenceState, int]:
        """How many occurrences are in each state (of `states` only, when given: one index
        range each, so leaving out the many `sent` ones costs nothing); states with none are
        left out."""
        ...

    def occurrences_by_key(self, run_id: str, keys: Sequence[str]) -> dict[str, OccurrenceRecord]:
        """The stored occurrences among `keys` (absent keys are missing), by key."""
        ...

    def occurrences_in_state(
        self,
        run_id: str,
        state: OccurrenceState,
        limit: int,
        since: datetime | None = None,
    ) -> Page[OccurrenceRecord]:
        """The first `limit` occurrences in `state` by due time (then key), due at or after
        `since` when given, and the exact number of them."""
        ...

    def member_occurrence_counts(
        self,
        run_id: str,
        since: datetime,
        until: datetime,
        states: Sequence[OccurrenceState],
    ) -> dict[OccurrenceState, int]:
        """How many occurrences for one member each (welcomes, nudges ...) are due in
        [since, until), per state of `states` (states with none are left out)."""
        ...

    def next_due(self, run_id: str) -> datetime | None:
        """The earliest `next_at` of a claimable occurrence."""
        ...

    def attempts(self, run_id: str, key: str) -> list[AttemptRecord]:
        """Every attempt of one occurrence, in order."""
        ...

    # -- members and events
    def ingest(
        self, run_id: str, events: Sequence[EventRecord], derive: Deriver, actor: str
    ) -> list[bool]:
        """Insert events not yet seen (by id); for those, save what `derive` says. New flags."""
        ...

    def get_members(self, run_id: str, ids: Sequence[str]) -> dict[str, MemberRecord]:
        """Members by id (absent ones are missing)."""
        ...

    def put_members(self, run_id: str, members: Sequence[MemberRecord]) -> None:
        """Save members (tier changes, derived updates)."""
        ...

    def iter_members(self, run_id: str) -> Iterator[MemberRecord]:
        """Every member of a run."""
        ...

    def members_due(
        self, run_id: str, field: MemberTime, since: datetime, until: datetime
    ) -> list[MemberRecord]:
        """Current members (not left) whose `field` instant lies in [since, until), by id."""
        ...

    def member_facts(self, run_id: str) -> list[MemberFacts]:
        """What daily metrics read of every member, without the rest of its state."""
        ...

    def earliest_member_time(
        self, run_id: str, field: MemberTime, since: datetime, until: datetime
    ) -> datetime | None:
        """The earliest `field` instant in [since, until) of a current member, or None."""
        ...

    def event_facts(
        self, run_id: str, since: datetime, until: datetime, types: Sequence[str]
    ) -> list[tuple[str, str, datetime]]:
        """(member, type, at) of the events of `types` in [since, until), without their data."""
        ...

    def events(
        self,
        run_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Sequence[str] | None = None,
    ) -> list[EventRecord]:
        """Events with `at` in [since, until), by time."""
        ...

    def latest_events(
        self, run_id: str, types: Sequence[str], since: datetime, limit: int
    ) -> Page[EventRecord]:
        """The latest `limit` events of `types` at or after `since`, latest first (then by id,
        descending); `total` is exact when there are no more than `limit`, else None (counting
        them would read every event in the window)."""
        ...

    def recent_joins(
        self, run_id: str, since: datetime, until: datetime, limit: int
    ) -> Page[MemberRecord]:
        """Current members (not left) who joined in [since, until), the latest first (then by
        id, descending); the count stops at MEMBER_COUNT_CAP."""
        ...

    def silent_members(self, run_id: str, before: datetime, limit: int) -> Page[MemberRecord]:
        """Current members last active before `before`, the most recently active first (then
        by id, descending); the count stops at MEMBER_COUNT_CAP."""
        ...

    # -- metrics, gates, transitions
    def metric_values(
        self, run_id: str, names: Sequence[str] | None = None, since: date | None = None
    ) -> list[MetricValue]:
        """Recorded metric values by day (the daily history; from day `since` on when given)."""
        ...

    def gate_evaluations(self, run_id: str, limit: int | None = None) -> list[GateEvaluation]:
        """Gate readings, latest last."""
        ...

    def transitions(self, run_id: str) -> list[TransitionRecord]:
        """Every transition, in order."""
        ...

    # -- staff tasks
    def tasks(
        self, run_id: str, role: str | None = None, states: Sequence[TaskState] | None = None
    ) -> list[TaskRecord]:
        """Staff tasks by due time."""
        ...

    def get_task(self, run_id: str, task_id: str) -> TaskRecord | None:
        """One task by id."""
        ...

    def open_task_counts(self, run_id: str) -> dict[str | None, int]:
        """How many tasks are open per role (None: tasks without a role); roles with none are
        left out."""
        ...

    def overdue_task_count(self, run_id: str, now: datetime) -> int:
        """How many open tasks were due before `now`."""
        ...

    def open_tasks(self, run_id: str, limit: int, role: str | None = None) -> list[TaskRecord]:
        """The `limit` earliest-due open tasks (then by id): of every role (`role` None), of one
        role, or (`role` NO_ROLE) of none."""
        ...

    def done_tasks(self, run_id: str, limit: int, role: str | None = None) -> list[TaskRecord]:
        """The `limit` tasks done most recently (then by id, descending), latest first; `role`
        as in `open_tasks`."""
        ...

    def next_escalation(self, run_id: str) -> datetime | None:
        """The earliest due time of an open task not yet escalated (the runner's wake-up)."""
        ...

    def awaiting_confirmation(self, run_id: str, limit: int) -> list[TaskRecord]:
        """Open tasks tracking a platform send (`remote_id`), earliest due first."""
        ...

    def complete_task(self, run_id: str, task_id: str, now: datetime, actor: str) -> bool:
        """Mark a task done; False when there is no open task with that id."""
        ...

    def postpone_task(self, run_id: str, task_id: str, to: datetime, actor: str) -> bool:
        """Move an open task's due time; False when there is no open task with that id."""
        ...

    def escalate_tasks(
        self, run_id: str, due_before: datetime, now: datetime, actor: str
    ) -> list[TaskRecord]:
        """Open tasks due before `due_before`, not yet escalated: escalated at `now`; them."""
        ...

    # -- points, applications, incidents, teams
    def add_ledger(self, run_id: str, entries: Sequence[LedgerEntry]) -> int:
        """Record points movements, ignoring keys present; how many were new."""
        ...

    def ledger(self, run_id: str, member: str | None = None) -> list[LedgerEntry]:
        """Points movements (of one member, when given) by time, then key."""
        ...

    def points_balances(self, run_id: str) -> dict[str, int]:
        """Every member's points balance (members with no entry are left out)."""
        ...

    def points_totals(self, run_id: str) -> dict[PointsKind, int]:
        """The sum of the ledger's points per kind (kinds with no entry are left out)."""
        ...

    def redeemed_counts(self, run_id: str) -> dict[str, int]:
        """How many of each item were redeemed."""
        ...

    def applications(
        self,
        run_id: str,
        states: Sequence[ApplicationState] | None = None,
        limit: int | None = None,
    ) -> list[ApplicationRecord]:
        """Applications (in `states` when given), the earliest applied first."""
        ...

    def get_application(self, run_id: str, member: str) -> ApplicationRecord | None:
        """A member's application."""
        ...

    def open_incident(
        self,
        run_id: str,
        incident: IncidentRecord,
        occurrences: Sequence[NewOccurrence],
        actor: str,
    ) -> bool:
        """Start an incident with its steps' occurrences; False (nothing changed) when one with
        its id exists."""
        ...

    def close_incident(
        self,
        run_id: str,
        incident_id: str,
        now: datetime,
        actor: str,
        note: str = "",
        tasks: Sequence[str] = (),
    ) -> IncidentRecord | None:
        """Close an open incident and complete its open `tasks`; the closed record, or None when
        there is no open incident with that id."""
        ...

    def incidents(
        self,
        run_id: str,
        states: Sequence[IncidentState] | None = None,
        limit: int | None = None,
    ) -> list[IncidentRecord]:
        """Incidents (in `states` when given), the latest opened first."""
        ...

    def get_incident(self, run_id: str, incident_id: str) -> IncidentRecord | None:
        """One incident by id."""
        ...

    def team_sizes(self, run_id: str) -> dict[str, int]:
        """Current members per team (teams with none are left out)."""
        ...

    # -- forecasts
    def save_forecast(self, playbook: str, created_at: datetime, data: Mapping[str, Any]) -> None:
        """Keep a forecast (`sop simulate --save-forecast`) for the dashboard."""
        ...

    def latest_forecast(self, playbook: str) -> ForecastRecord | None:
        """The newest forecast saved for a playbook."""
        ...

    # -- rate limits and audit
    def take_tokens(
        self, target: str, now: datetime, per_minute: int, want: int, at_least: int = 1
    ) -> tuple[int, float]:
        """Take up to `want` of a target's sends for the minute ending at `now`, none unless
        `at_least` are free; (granted, seconds until `at_least` are). A sliding window: no
        60 s ever holds more than `per_minute` grants."""
        ...

    def use_quota(self, target: str, limit: int, now: datetime) -> bool:
        """Count one use of a per-period allowance (`target` names it and its period); False,
        counting nothing, when `limit` uses are already counted."""
        ...

    def audit(self, run_id: str, actor: str, action: str, subject: str, detail: Any) -> None:
        """Append one entry to the audit log."""
        ...

    def audit_log(self, run_id: str, limit: int | None = None) -> list[AuditEntry]:
        """The audit log, oldest first (the latest `limit` entries)."""
        ...
