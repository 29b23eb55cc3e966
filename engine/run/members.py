"""Member events at run time: what a platform reports, what it changes, and what it sets off.

Events arrive as plain data (`sop event`, `sop events import`, `sop serve`) and are checked
here (declared attributes against their types: engine/run/attributes.py); each new one updates
its member (joined, spoke, streak, violations, payments, attributes, team, points, application)
and fires the Program's compiled event rules (`Program.on_event`, the same rules the simulator
applies) for the triggers it causes: `member.joined`, `member.checkin_streak`,
`member.violation`, `member.applied` / `approved` / `rejected`, `member.redeemed` and
`member.milestone` (once per member and milestone action: the member record keeps the mark).
An action's `where:` is read on the member after the event. Time-derived triggers — silence
and anniversaries — are found by `derived_occurrences` when the runner's clock passes their
instant.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..lang.model import Action, Playbook
from ..program import Occurrence, Program
from ..program.admission import REVIEW_ACTION
from .attributes import KEEP_DAYS, check_attributes, member_values
from .errors import EventError
from .store.base import (
    ApplicationRecord,
    ApplicationState,
    EventRecord,
    Ingested,
    LedgerEntry,
    MemberRecord,
    MemberTime,
    NewOccurrence,
    NewTask,
    PointsKind,
    StateStore,
)

MAX_ID = 200
MAX_DATA_KEYS = 50
MAX_TEXT = 2000


class EventType(enum.StrEnum):
    """What a platform reports about a member (`member.` prefixed names are accepted too)."""

    JOINED = "joined"
    LEFT = "left"
    MESSAGE = "message"  # spoke in the group
    POST = "post"  # a user-generated post (counts as speaking too)
    CHECKIN = "checkin"
    ACTIVITY = "activity"  # took part in an activity (a live, a poll, a contest)
    VIOLATION = "violation"
    PAYMENT = "payment"
    INVITE = "invite"  # invited someone (their `joined` names the referrer)
    APPLY = "apply"  # applied to join (`admission:`), with the required attributes
    APPROVE = "approve"  # staff approved the member's application (`data.by`, `data.note`)
    REJECT = "reject"  # staff rejected it
    UPDATE = "update"  # declared attributes changed (`attributes`)
    REDEEM = "redeem"  # spent points on an item of `points.redeem` (`data.item`)


ATTRIBUTE_EVENTS = (EventType.JOINED, EventType.APPLY, EventType.UPDATE)  # may carry attributes


SPEAKING = (EventType.MESSAGE, EventType.POST)
TAKING_PART = (EventType.ACTIVITY, EventType.CHECKIN)


_CONTROL = re.compile(r"[\x00-\x1f]")
# the instants the stores keep (microseconds since 1970 fit; a year-9999 instant does not decode)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _utf8(value: str, field: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate: no store can keep it as text
        raise EventError(field, "contains an unpaired surrogate (\\ud800-\\udfff)") from None
    return value


def _text(value: object, field: str, limit: int = MAX_ID) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EventError(field, "must be a non-empty string")
    if len(value) > limit:
        raise EventError(field, f"at most {limit} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise EventError(field, "contains control characters")
    return _utf8(value, field)


def parse_instant(value: str, tz: ZoneInfo) -> datetime:
    """An ISO date-time (with an offset, or local to `tz`), or a date (its local midnight)."""
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=tz)
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date (YYYY-MM-DD) or an ISO date-time"
            " (YYYY-MM-DDTHH:MM[:SS][+08:00])"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=tz)


def parse_event(
    obj: object,
    tz: ZoneInfo,
    received: datetime,
    require_id: bool = True,
    pb: Playbook | None = None,
) -> EventRecord:
    """Check one event (`{"id", "type", "member", "at"?, "data"?, "attributes"?}`) and make it
    a record; with the playbook `pb`, what it says is checked against it too (declared
    attributes and their types, admission, points items)."""
    if not isinstance(obj, Mapping):
        raise EventError("event", "must be a JSON object")
    unknown = sorted(set(obj) - {"id", "type", "member", "at", "data", "attributes"})
    if unknown:
        raise EventError(
            unknown[0], "unknown field (known: id, type, member, at, data, attributes)"
        )
    raw_type = _text(obj.get("type"), "type", 40)
    name = raw_type.removeprefix("member.")
    try:
        kind = EventType(name)
    except ValueError:
        known = ", ".join(t.value for t in EventType)
        raise EventError("type", f"unknown event type {raw_type!r} (known: {known})") from None
    member = _text(obj.get("member"), "member")
    at_raw = obj.get("at")
    if at_raw is None:
        at = received
    else:
        if not isinstance(at_raw, str):
            raise EventError("at", "must be an ISO date-time string")
        try:
            at = parse_instant(at_raw, tz)
        except ValueError as e:
            raise EventError("at", str(e)) from None
        try:
            inside = EARLIEST <= at < LATEST
        except OverflowError:  # year 1 with a positive offset: before any instant we keep
            inside = False
        if not inside:
            raise EventError("at", f"must lie between {EARLIEST:%Y} and {LATEST:%Y}")
    data = obj.get("data", {})
    if not isinstance(data, Mapping):
        raise EventError("data", "must be an object of names to values")
    if len(data) > MAX_DATA_KEYS:
        raise EventError("data", f"at most {MAX_DATA_KEYS} entries")
    clean: dict[str, Any] = {}
    for k, v in data.items():
        key = _text(k, "data", 64)
        if isinstance(v, bool) or v is None:
            clean[key] = v
        elif isinstance(v, int | float):
            if not math.isfinite(v):
                raise EventError(f"data.{key}", "must be a finite number")
            clean[key] = v
        elif isinstance(v, str):
            if len(v) > MAX_TEXT:
                raise EventError(f"data.{key}", f"at most {MAX_TEXT} characters")
            clean[key] = _utf8(v, f"data.{key}")
        else:
            raise EventError(f"data.{key}", "must be a string, a number, true, false or null")
    if pb is not None:
        clean = _check_for(pb, kind, obj.get("attributes"), clean)
    elif obj.get("attributes") is not None:
        clean["attributes"] = dict(_mapping(obj.get("attributes"), "attributes"))
    raw_id = obj.get("id")
    if raw_id is None:
        if require_id:
            raise EventError("id", "required (events are deduplicated by id)")
        # the same command run twice is the same event: its id follows from what it says
        event_id = f"{kind}:{member}:{at.isoformat()}"
    else:
        event_id = _text(raw_id if isinstance(raw_id, str) else str(raw_id), "id")
    return EventRecord(event_id, str(kind), member, at, clean)


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise EventError(field, "must be an object of names to values")
    return value


def _check_for(
    pb: Playbook, kind: EventType, given: object, data: dict[str, Any]
) -> dict[str, Any]:
    """An event's data checked against the playbook; its attributes under `data.attributes`.

    Declared attributes and `source`/`referrer` may come in `attributes` or, for a `joined`
    event, in `data` too (what platforms send); values given as text read as the type says.
    """
    attrs: dict[str, Any] = {}
    if given is not None:
        if kind not in ATTRIBUTE_EVENTS:
            raise EventError("attributes", f"a {kind} event carries no attributes (only "
                             "joined, apply and update do)")  # fmt: skip
        attrs.update(check_attributes(pb, _mapping(given, "attributes")))
    if kind in ATTRIBUTE_EVENTS:
        from_data = {k: v for k, v in data.items() if k in pb.attributes or k == "source"}
        for k, v in check_attributes(pb, from_data, "data").items():
            attrs.setdefault(k, v)
            data.pop(k, None)
    if kind in (EventType.APPLY, EventType.APPROVE, EventType.REJECT) and pb.admission is None:
        raise EventError("type", f"{kind}: the playbook has no `admission:`")
    if kind is EventType.APPLY:
        assert pb.admission is not None
        for name in pb.admission.require:
            if attrs.get(name) in (None, ""):
                raise EventError(f"attributes.{name}", "required to apply (`admission.require`)")
    if kind is EventType.UPDATE and not attrs:
        raise EventError("attributes", "an update sets at least one attribute")
    if kind is EventType.REDEEM:
        if pb.points is None:
            raise EventError("type", "redeem: the playbook has no `points:`")
        item = data.get("item")
        if item not in pb.points.redeem:
            known = ", ".join(pb.points.redeem) or "none"
            raise EventError("data.item", f"{item!r} is not an item of points.redeem"
                             f" (items: {known})")  # fmt: skip
    if attrs:
        data["attributes"] = attrs
    return data


@dataclass(frozen=True)
class StageClock:
    """Which stages run at an instant: read from the run's lifecycle windows."""

    origin: datetime
    windows: Sequence[tuple[str | None, datetime, datetime | None]]

    def active(self, at: datetime) -> list[str | None] | None:
        """Stages (None: the routines) active at `at`; None before the start or after the end."""
        if at < self.origin:
            return None
        found = [s for s, start, end in self.windows if start <= at and (end is None or at < end)]
        return found if None in found else None  # the routines' window is the playbook's life


def _new(o: Occurrence) -> NewOccurrence:
    return NewOccurrence(
        o.key, o.action, o.stage, o.kind, o.member, o.audience, o.owner, o.backend,
        o.scheduled, o.at, reason=o.reason,
    )  # fmt: skip


def fire(
    program: Program,
    stages: StageClock,
    event: str,
    member: str,
    at: datetime,
    allow: Callable[[Action], bool] | None = None,
    **facts: object,
) -> list[NewOccurrence]:
    """The occurrences one trigger sets off (the Program's event rules), none outside the life;
    `allow` narrows the rules per member (`Program.on_event`)."""
    active = stages.active(at)
    if active is None:
        return []
    return [_new(o) for o in program.on_event(active, event, member, at, allow=allow, **facts)]


def _keep(days: tuple[date, ...], day: date) -> tuple[date, ...]:
    if day in days:
        return days
    return tuple(sorted((*days, day))[-KEEP_DAYS:])


class Batch:
    """What the events of one ingest read beyond their member: run-wide counts (joiners, team
    sizes, items redeemed), ledgers and applications as stored, plus this batch's changes."""

    def __init__(self, known: Mapping[str, MemberRecord]) -> None:
        self.known = known
        self._joined: int | None = None
        self._teams: dict[str, int] | None = None
        self._redeemed: dict[str, int] | None = None
        self._ledger: dict[str, list[LedgerEntry]] = {}
        self._applications: dict[str, ApplicationRecord | None] = {}

    def _ask(self, name: str, default: Any, *args: Any) -> Any:
        ask = getattr(self.known, name, None)  # a plain mapping (tests) knows nothing more
        return ask(*args) if ask is not None else default

    def next_joiner(self) -> int:
        """The index of the next joiner (0 first), counted once."""
        if self._joined is None:
            self._joined = int(self._ask("joined_count", 0))
        k = self._joined
        self._joined += 1
        return k

    def team_sizes(self) -> dict[str, int]:
        """Current members per team, this batch's joiners and leavers included."""
        if self._teams is None:
            self._teams = dict(self._ask("team_sizes", {}))
        return self._teams

    def redeemed(self) -> dict[str, int]:
        """Items redeemed so far, this batch's included."""
        if self._redeemed is None:
            self._redeemed = dict(self._ask("redeemed", {}))
        return self._redeemed

    def ledger(self, member: str) -> list[LedgerEntry]:
        """A member's ledger so far (stored, then this batch's), by time."""
        if member not in self._ledger:
            self._ledger[member] = list(self._ask("ledger", [], member))
        return self._ledger[member]

    def application(self, member: str) -> ApplicationRecord | None:
        """A member's application as it stands (this batch's decisions included)."""
        if member not in self._applications:
            self._applications[member] = self._ask("application", None, member)
        return self._applications[member]

    def set_application(self, a: ApplicationRecord) -> None:
        """Record this batch's change to a member's application."""
        self._applications[a.member] = a


def balance(entries: Sequence[LedgerEntry]) -> int:
    """A member's points balance: the sum of their ledger (lapsed points are entries too)."""
    return int(sum(e.points for e in entries))


@dataclass
class _Change:
    """What applying one event does besides changing the member (gathered, then fired)."""

    triggers: list[tuple[str, dict[str, object]]]
    ledger: list[LedgerEntry]
    application: ApplicationRecord | None = None
    tasks: tuple[NewTask, ...] = ()
    done: tuple[str, ...] = ()
    refusal: str = ""


def _join(pb: Playbook, m: MemberRecord, e: EventRecord, batch: Batch) -> MemberRecord:
    """Member `m` joins at the event's instant: source, referrer and team settled."""
    attrs = dict(e.data.get("attributes") or {})
    platform = {k: v for k, v in e.data.items() if k != "attributes"}
    referrer = attrs.pop("referrer", None) or e.data.get("referrer") or m.referrer
    source = attrs.pop("source", None) if "source" in attrs else m.source
    if source is None and referrer:
        # a join by a member's invitation lands in the referral channel (`referral: true`)
        source = next((c.id for c in pb.channels.values() if c.referral), None)
    first = m.joined_at is None
    m = replace(
        m,
        joined_at=e.at,
        left_at=None,
        removed=False,
        last_active_at=e.at,
        referrer=str(referrer) if referrer else m.referrer,
        source=source,
        attributes={**m.attributes, **platform, **attrs},
    )
    if first and pb.teams is not None and not m.team:
        from ..program.teams import assign, team_names

        sizes = batch.team_sizes()
        by = m.attributes.get(pb.teams.by or "") if pb.teams.by else ""
        team = assign(pb.teams, batch.next_joiner(), [sizes.get(n, 0) for n in
                                                      team_names(pb)], by)  # fmt: skip
        if team:
            m = replace(m, team=team)
            sizes[team] = sizes.get(team, 0) + 1
    return m


def _set_attributes(m: MemberRecord, e: EventRecord) -> MemberRecord:
    attrs = dict(e.data.get("attributes") or {})
    referrer = attrs.pop("referrer", m.referrer)
    source = attrs.pop("source", m.source)
    merged = {**m.attributes, **attrs}
    for k in [k for k, v in attrs.items() if v is None]:
        merged.pop(k, None)  # null unsets: the attribute reads its default again
    return replace(m, attributes=merged, referrer=referrer, source=source)


def _admit(
    program: Program, m: MemberRecord, e: EventRecord, batch: Batch, change: _Change
) -> MemberRecord:
    """An application (`apply`): pending, approved at once by `admission.approve`, or a review
    task for the review owner, due within `review.within`."""
    pb = program.playbook
    adm = pb.admission
    assert adm is not None
    current = batch.application(m.id)
    if current is not None and current.state is ApplicationState.APPROVED:
        change.refusal = f"{m.id} was approved on {current.decided_at:%Y-%m-%d}: no new application"
        return m
    m = _set_attributes(m, e)
    if current is not None and current.state is ApplicationState.PENDING:
        return m  # a pending application is updated; its review task stays
    change.triggers.append(("member.applied", {}))
    app = ApplicationRecord(m.id, ApplicationState.PENDING, e.at)
    day = e.at.astimezone(program.tz).date()
    env = member_values(pb, m, day, program.tz, balance(batch.ledger(m.id)))
    from ..program.members import matches

    if adm.approve is not None and matches(adm.approve, env):
        app = replace(app, state=ApplicationState.APPROVED, decided_at=e.at,
                      decided_by="admission.approve")  # fmt: skip
        batch.set_application(app)
        change.application = app
        return _approved(pb, m, e, batch, change)
    task = NewTask(
        f"review:{m.id}:{e.id}", adm.review_owner, REVIEW_ACTION,
        f"Review the application of {m.id}",
        "\n".join(f"{k}: {m.attributes.get(k, '')}" for k in adm.require),
        e.at + adm.review_within, m.id,
    )  # fmt: skip
    app = replace(app, task=task.id)
    batch.set_application(app)
    change.application = app
    change.tasks = (task,)
    return m


def _approved(
    pb: Playbook, m: MemberRecord, e: EventRecord, batch: Batch, change: _Change
) -> MemberRecord:
    m = replace(m, approved=True)
    change.triggers.append(("member.approved", {}))
    if m.joined_at is None or m.left_at is not None:
        m = _join(pb, m, replace(e, data={}), batch)  # approval is the join
        change.triggers.append(("member.joined", {}))
    return m


def _decide(
    program: Program, m: MemberRecord, e: EventRecord, batch: Batch, change: _Change
) -> MemberRecord:
    """A staff decision (`approve`/`reject`) on the member's pending application."""
    current = batch.application(m.id)
    if current is None or current.state is not ApplicationState.PENDING:
        state = "no application" if current is None else f"the application is {current.state}"
        change.refusal = f"{e.type}: {m.id} has no pending application ({state})"
        return m
    approve = e.type == EventType.APPROVE
    by = e.data.get("by")
    note = e.data.get("note")
    app = replace(
        current,
        state=ApplicationState.APPROVED if approve else ApplicationState.REJECTED,
        decided_at=e.at,
        decided_by=str(by) if by else "staff",
        note=str(note) if note else "",
    )
    batch.set_application(app)
    change.application = app
    change.done = (current.task,) if current.task else ()
    if approve:
        return _approved(program.playbook, m, e, batch, change)
    change.triggers.append(("member.rejected", {}))
    return replace(m, approved=False)


def _redeem(
    program: Program, m: MemberRecord, e: EventRecord, batch: Batch, change: _Change
) -> None:
    from ..program.points import check_redeem

    pb = program.playbook
    assert pb.points is not None
    item = str(e.data.get("item"))
    redeemed = batch.redeemed()
    have = balance(batch.ledger(m.id))
    check = check_redeem(pb.points.redeem, item, have, redeemed.get(item, 0))
    if not check.ok:
        change.refusal = f"redeem refused for {m.id}: {check.message}"
        return
    cost = pb.points.redeem[item].cost
    change.ledger.append(
        LedgerEntry(f"redeem:{e.id}", m.id, e.at, -int(cost), PointsKind.REDEEM, item)
    )
    redeemed[item] = redeemed.get(item, 0) + 1
    change.triggers.append(("member.redeemed", {"item": item}))


def apply_event(
    program: Program,
    stages: StageClock,
    m: MemberRecord,
    e: EventRecord,
    batch: Batch | None = None,
) -> Ingested:
    """One new event applied to its member: the member after it, and what it sets off."""
    pb = program.playbook
    batch = batch or Batch({})
    tz = program.tz
    day = e.at.astimezone(tz).date()
    kind = EventType(e.type)
    before = m
    points_before = balance(batch.ledger(m.id)) if pb.points is not None else 0
    change = _Change([], [])
    if kind is EventType.JOINED:
        current = m.left_at is None and m.joined_at is not None
        m = _join(pb, m, e, batch)
        if not current:
            change.triggers.append(("member.joined", {}))
    elif kind is EventType.LEFT:
        if m.team and m.left_at is None and m.joined_at is not None:
            sizes = batch.team_sizes()
            sizes[m.team] = max(0, sizes.get(m.team, 0) - 1)
        m = replace(m, left_at=e.at)
    elif kind in SPEAKING:
        later = m.last_active_at is None or e.at > m.last_active_at
        m = replace(
            m,
            last_active_at=e.at if later else m.last_active_at,
            spoke_days=_keep(m.spoke_days, day),
            posts=m.posts + (kind is EventType.POST),
            messages=m.messages + 1,
        )
    elif kind is EventType.CHECKIN:
        if m.last_checkin == day:
            pass  # one check-in a day counts
        else:
            streak = m.streak + 1 if m.last_checkin == day - timedelta(days=1) else 1
            m = replace(
                m, streak=streak, last_checkin=day, active_days=_keep(m.active_days, day),
                checkins=m.checkins + 1,
            )  # fmt: skip
            change.triggers.append(("member.checkin_streak", {"streak": streak}))
    elif kind is EventType.ACTIVITY:
        m = replace(m, active_days=_keep(m.active_days, day))
    elif kind is EventType.VIOLATION:
        count = m.violations + 1
        m = replace(m, violations=count)
        change.triggers.append(("member.violation", {"count": count}))
        mod = pb.moderation
        if mod is not None and mod.remove_at is not None and count >= mod.remove_at:
            m = replace(m, left_at=m.left_at or e.at, removed=True)
    elif kind is EventType.PAYMENT:
        m = replace(m, paid=m.paid + 1)
    elif kind is EventType.INVITE:
        m = replace(m, invites=m.invites + 1)
    elif kind is EventType.UPDATE:
        m = _set_attributes(m, e)
    elif kind is EventType.APPLY:
        m = _admit(program, m, e, batch, change)
    elif kind in (EventType.APPROVE, EventType.REJECT):
        m = _decide(program, m, e, batch, change)
    elif kind is EventType.REDEEM:
        _redeem(program, m, e, batch, change)
    if change.refusal:
        return Ingested(before, refusal=change.refusal)
    if pb.points is not None:
        from ..program.points import earned

        pts = earned(pb.points, str(kind))
        if pts:
            change.ledger.append(LedgerEntry(f"earn:{e.id}", m.id, e.at, pts, PointsKind.EARN))
    batch.ledger(m.id).extend(change.ledger)
    points_after = points_before + sum(x.points for x in change.ledger)
    m, occurrences = _set_off(
        program, stages, before, m, e.at, change.triggers, (points_before, points_after)
    )
    return Ingested(
        m, tuple(occurrences), tuple(change.ledger), change.application, change.tasks,
        change.done,
    )  # fmt: skip


def _set_off(
    program: Program,
    stages: StageClock,
    before: MemberRecord,
    m: MemberRecord,
    at: datetime,
    triggers: Sequence[tuple[str, Mapping[str, object]]],
    points: tuple[int, int],
) -> tuple[MemberRecord, list[NewOccurrence]]:
    """Fire the event's triggers and the milestones it crossed (`program.milestones.crossed`),
    each rule narrowed to this member by its `where:`; the member with its new marks."""
    from ..program.members import matches
    from ..program.milestones import crossed

    pb = program.playbook
    found, filtered = _member_rules(program)
    if not (triggers or found):
        return m, []
    day = at.astimezone(program.tz).date()
    env = member_values(pb, m, day, program.tz, points[1]) if found or filtered else {}

    def allow(a: Action) -> bool:
        return a.where is None or bool(matches(a.where, env))

    out: list[NewOccurrence] = []
    for event, facts in triggers:
        out += fire(program, stages, event, m.id, at, allow if filtered else None, **facts)
    if found and stages.active(at) is not None:
        old = member_values(pb, before, day, program.tz, points[0])
        marks = list(m.marks)
        for ms in found:
            mark = f"milestone:{ms.action}"
            if not crossed(old.get(ms.counter, math.nan), env.get(ms.counter, math.nan),
                           ms.reaches, mark in marks):  # fmt: skip
                continue
            fired = fire(
                program, stages, "member.milestone", m.id, at, allow,
                milestone=(ms.counter, ms.reaches),
            )  # fmt: skip
            # kept with the member, fired or not (an inactive stage, a `where:` that fails):
            # the crossing happened once, and a restart never fires it again
            marks.append(mark)
            out += fired  # two milestones on one (counter, reaches) fire together: keys dedup
        m = replace(m, marks=tuple(marks))
    return m, out


_RULES: dict[int, tuple[Program, list[Any], bool]] = {}


def _member_rules(program: Program) -> tuple[list[Any], bool]:
    """The playbook's milestones, and whether any action has a `where:` (read once a Program)."""
    from ..program.milestones import milestones

    cached = _RULES.get(id(program))
    if cached is None or cached[0] is not program:
        acts = program.playbook.actions
        cached = (program, milestones(acts), any(a.where is not None for a in acts.values()))
        if len(_RULES) > 64:
            _RULES.clear()
        _RULES[id(program)] = cached
    return cached[1], cached[2]


def deriver(
    program: Program, stages: StageClock, refusals: dict[str, str] | None = None
) -> Callable[[Sequence[EventRecord], Mapping[str, MemberRecord]], list[Ingested]]:
    """The store's `Deriver` for these rules: applies new events in time order (`refusals`
    collects, by event id, why an event changed nothing)."""

    def derive(
        events: Sequence[EventRecord], members: Mapping[str, MemberRecord]
    ) -> list[Ingested]:
        current = dict(members)
        batch = Batch(members)
        out = []
        for e in sorted(events, key=lambda e: (e.at, e.id)):
            m = current.get(e.member) or MemberRecord(e.member)
            result = apply_event(program, stages, m, e, batch)
            current[e.member] = result.member
            if result.refusal and refusals is not None:
                refusals[e.id] = result.refusal
            out.append(result)
        return out

    return derive


def derived_occurrences(
    program: Program,
    stages: StageClock,
    store: StateStore,
    run_id: str,
    since: datetime,
    until: datetime,
    where: Callable[[MemberRecord, datetime], Callable[[Action], bool]] | None = None,
) -> list[NewOccurrence]:
    """Silence and anniversary triggers whose instant falls in [since, until), fired (`where`
    gives a member's filter of the rules at an instant: their `where:`)."""
    out: list[NewOccurrence] = []
    silences: set[timedelta] = set()
    tenures: set[timedelta] = set()
    for r in program.events:
        for t in r.triggers:
            if t.event == "member.silent" and isinstance(t.value, timedelta):
                silences.add(t.value)
            elif t.event == "member.anniversary" and isinstance(t.value, timedelta):
                tenures.add(t.value)
    for span in sorted(silences):
        for m in store.members_due(run_id, MemberTime.LAST_ACTIVE, since - span, until - span):
            assert m.last_active_at is not None
            at = m.last_active_at + span
            allow = where(m, at) if where is not None else None
            out += fire(program, stages, "member.silent", m.id, at, allow, silent_for=span)
    for span in sorted(tenures):
        for m in store.members_due(run_id, MemberTime.JOINED, since - span, until - span):
            assert m.joined_at is not None
            at = m.joined_at + span
            allow = where(m, at) if where is not None else None
            out += fire(program, stages, "member.anniversary", m.id, at, allow, tenure=span)
    return out


def next_derived(
    program: Program, store: StateStore, run_id: str, after: datetime, horizon: datetime
) -> datetime | None:
    """The earliest silence or anniversary instant in [after, horizon), to wake up for."""
    best: datetime | None = None
    for r in program.events:
        for t in r.triggers:
            if t.event not in ("member.silent", "member.anniversary"):
                continue
            if not isinstance(t.value, timedelta):
                continue
            field = MemberTime.LAST_ACTIVE if t.event == "member.silent" else MemberTime.JOINED
            base = store.earliest_member_time(run_id, field, after - t.value, horizon - t.value)
            if base is not None and (best is None or base + t.value < best):
                best = base + t.value
    return best


def tier_changes(
    program: Program, members: Sequence[MemberRecord], day: date, review_day: bool
) -> list[MemberRecord]:
    """Members whose tier moves at the check after local `day` (engine/program/tiers.py rules)."""
    tiers = program.playbook.tiers
    if tiers is None or not tiers.levels or not members:
        return []
    import numpy as np

    from ..program.tiers import demote_silent, review, tier_rank

    tz = program.tz
    rank = tier_rank(tiers)
    week = {day - timedelta(days=i) for i in range(KEEP_DAYS)}

    def local(t: datetime | None) -> date:
        return t.astimezone(tz).date() if t is not None else day

    tier = np.array([rank.get(m.tier or "", 0) for m in members], dtype=np.int16)
    silent = np.array([(day - local(m.last_active_at)).days for m in members], dtype=np.int32)
    changed = demote_silent(tiers, tier, silent)
    if review_day:
        env = {
            "tenure_days": np.array([(day - local(m.joined_at)).days for m in members]),
            "weekly_interactions": np.array(
                [len(week & set(m.spoke_days)) + len(week & set(m.active_days)) for m in members],
                dtype=np.float32,
            ),
            "ugc_posts": np.array([m.posts for m in members]),
            "payments": np.array([m.paid for m in members]),
            "invites": np.array([m.invites for m in members]),
            "checkin_streak": np.array([m.streak for m in members]),
            "violations": np.array([m.violations for m in members]),
            "silent_days": silent,
        }
        changed |= review(tiers, tier, env)
    ids = {t.rank: t.id for t in tiers.levels}
    return [
        replace(m, tier=ids[int(tier[i])])
        for i, m in enumerate(members)
        if changed[i] and ids[int(tier[i])] != (m.tier or ids[0])
    ]
