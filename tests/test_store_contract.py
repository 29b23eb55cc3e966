"""The state store contract (engine/run/store/base.py) on every store: memory, SQLite, PostgreSQL.

One suite, no mocks: the `store` fixture is parametrized over the three stores, PostgreSQL on a
real server (tests/pgserver.py). Each test writes out the records it expects, so the stores agree
with each other too; a differential test replays one seeded sequence of calls on the memory store
and on each SQL store and compares every answer. Times go in as Asia/Shanghai instants and come
back as equal aware datetimes.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sop.engine.run.store import StateStore, StoreError, open_store
from sop.engine.run.store import memory as memory_store
from sop.engine.run.store import sql as sql_store
from sop.engine.run.store.base import (
    NO_ROLE,
    EventRecord,
    GateEvaluation,
    Ingested,
    MemberRecord,
    MemberTime,
    MetricValue,
    NewOccurrence,
    NewTask,
    OccurrenceRecord,
    OccurrenceState,
    Outcome,
    Page,
    Resolution,
    RunRecord,
    TaskRecord,
    TaskState,
    TransitionRecord,
)
from sop.engine.run.store.memory import MemoryStore
from sop.engine.run.store.sql import MIGRATIONS, SCHEMA_VERSION, redact

S = OccurrenceState
TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=TZ)
RUN = "community-2026"
KINDS = ["memory", "sqlite", "postgresql"]


def at(minutes: float) -> datetime:
    """T0 plus some minutes."""
    return T0 + timedelta(minutes=minutes)


def a_run(run_id: str = RUN, **changes: Any) -> RunRecord:
    run = RunRecord(
        id=run_id,
        playbook="community-lifecycle",
        version="1.2",
        origin=T0,
        lifecycle={"stage": "launch", "entered": {"launch": T0.isoformat()}, "备注": "新社区"},
        checked_until=T0,
        scheduled_until=T0,
        derived_until=T0,
    )
    return replace(run, **changes)


def occ(key: str, due: float, **changes: Any) -> NewOccurrence:
    """An occurrence due `due` minutes after T0."""
    o = NewOccurrence(
        key=key,
        action="welcome",
        stage="launch",
        kind="member",
        member="m1",
        audience="member",
        owner="ops",
        backend="group",
        scheduled_at=at(due),
        due_at=at(due),
    )
    return replace(o, **changes)


def record_of(o: NewOccurrence, **changes: Any) -> OccurrenceRecord:
    """The record a freshly inserted occurrence reads back as (updated_at masked: wall clock)."""
    r = OccurrenceRecord(
        o.key, RUN, o.action, o.stage, o.kind, o.member, o.audience, o.owner, o.backend,
        o.scheduled_at, o.due_at, o.state, 0, o.due_at, 0, None, None, o.reason, T0,
    )  # fmt: skip
    return replace(r, **changes)


def masked(records: Sequence[OccurrenceRecord]) -> list[OccurrenceRecord]:
    """Records with the insertion time (the wall clock) of never-claimed ones replaced by T0."""
    out = []
    for r in records:
        assert r.updated_at.tzinfo is not None
        out.append(replace(r, updated_at=T0) if r.fence == 0 else r)
    return out


def sent(o: OccurrenceRecord, minutes: float, detail: str = "ok", **kw: Any) -> Outcome:
    return Outcome(o.key, o.fence, S.SENT, at(minutes), detail, **kw)


# -- the stores -----------------------------------------------------------------------------------


class Place:
    """Where a store lives: opens store objects on one database (memory: the same object)."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self._opened: list[StateStore] = []

    def open(self) -> StateStore:
        if self.kind == "memory" and self._opened:
            return self._opened[0]
        store = open_store(self.url)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for s in self._opened:
            s.close()


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory:"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=KINDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    p = Place(request.param, _url(request.param, request, tmp_path))
    yield p
    p.close()


@pytest.fixture
def store(place: Place) -> StateStore:
    """A store holding one run, RUN."""
    s = place.open()
    assert s.create_run(a_run())
    return s


# -- runs -----------------------------------------------------------------------------------------


def test_a_run_is_created_once_and_reads_back_equal(store: StateStore) -> None:
    run = a_run("r2", rev=7)
    assert store.create_run(run) is True
    assert store.create_run(replace(run, playbook="another")) is False
    got = store.get_run("r2")
    assert got == replace(run, rev=0)
    assert got is not None and got.origin.tzinfo is not None
    assert store.get_run("absent") is None
    assert [r.id for r in store.runs()] == [RUN, "r2"]
    created = [e for e in store.audit_log("r2") if e.action == "run.created"]
    assert [(e.actor, e.subject) for e in created] == [("runner", "r2")]


def test_saving_a_run_bumps_its_rev_and_a_stale_rev_is_refused(store: StateStore) -> None:
    run = store.get_run(RUN)
    assert run is not None and run.rev == 0
    moved = replace(run, lifecycle={"stage": "grow"}, checked_until=at(60), derived_until=at(30))
    saved = store.save_run(moved)
    assert saved == replace(moved, rev=1)
    assert store.get_run(RUN) == saved
    assert store.save_run(replace(run, lifecycle={"stage": "stale"})) is None
    assert store.get_run(RUN) == saved
    assert store.save_run(replace(saved, scheduled_until=at(90))) == replace(
        saved, scheduled_until=at(90), rev=2
    )
    assert store.save_run(a_run("absent")) is None


def test_a_save_stores_what_happened_with_the_run_and_a_stale_save_stores_nothing(
    store: StateStore,
) -> None:
    run = store.get_run(RUN)
    assert run is not None
    transitions = [
        TransitionRecord(at(10), "launch", "exit", "gate held", "ops", {"members": 120.0}),
        TransitionRecord(at(10), "grow", "enter", evidence={"retention": None}),
    ]
    evaluations = [GateEvaluation("launch", at(10), True, {"members": 120.0, "x": None}, "held")]
    metrics = [
        MetricValue("members", date(2026, 3, 1), 120.0, "events"),
        MetricValue("nps", date(2026, 3, 1), None, "survey"),
    ]
    saved = store.save_run(
        replace(run, lifecycle={"stage": "grow"}),
        transitions=transitions,
        evaluations=evaluations,
        metrics=metrics,
        occurrences=[occ("grow:kickoff", 20)],
    )
    assert saved is not None and saved.rev == 1
    assert store.transitions(RUN) == transitions
    assert store.gate_evaluations(RUN) == evaluations
    assert store.metric_values(RUN) == [metrics[0], metrics[1]]
    assert masked(store.occurrences(RUN)) == [record_of(occ("grow:kickoff", 20))]
    assert [e.action for e in store.audit_log(RUN)][-2:] == ["stage.exit", "stage.enter"]

    assert (
        store.save_run(
            run,  # rev 0: stale
            transitions=[TransitionRecord(at(11), "x", "enter")],
            evaluations=[GateEvaluation("x", at(11), False, {})],
            metrics=[MetricValue("members", date(2026, 3, 2), 1.0, "events")],
            occurrences=[occ("x:1", 30)],
        )
        is None
    )
    assert store.transitions(RUN) == transitions
    assert store.gate_evaluations(RUN) == evaluations
    assert store.metric_values(RUN) == [metrics[0], metrics[1]]
    assert [o.key for o in store.occurrences(RUN)] == ["grow:kickoff"]


# -- occurrences ----------------------------------------------------------------------------------


def test_inserting_ignores_keys_present_and_counts_the_new_ones(store: StateStore) -> None:
    assert store.add_occurrences(RUN, []) == 0
    assert store.add_occurrences(RUN, [occ("a", 1), occ("b", 2)]) == 2
    assert store.add_occurrences(RUN, [occ("b", 99, action="other"), occ("c", 3)]) == 1
    assert store.add_occurrences(RUN, [occ("d", 4), occ("d", 5)]) == 1
    assert masked(store.occurrences(RUN)) == [
        record_of(occ("a", 1)),
        record_of(occ("b", 2)),
        record_of(occ("c", 3)),
        record_of(occ("d", 4)),
    ]
    assert store.get_occurrence(RUN, "b") is not None
    assert store.get_occurrence(RUN, "absent") is None
    assert store.get_occurrence("another-run", "b") is None


def test_every_field_of_an_occurrence_round_trips(store: StateStore) -> None:
    o = NewOccurrence(
        key="remind:张三:2026-03-01",
        action="remind",
        stage=None,
        kind="staff",
        member=None,
        audience="staff",
        owner=None,
        backend=None,
        scheduled_at=at(0),
        due_at=at(90),  # quiet hours moved it
        state=S.SKIPPED,
        reason="missed its grace window (欢迎)",
    )
    store.add_occurrences(RUN, [o])
    got = store.get_occurrence(RUN, o.key)
    assert got is not None
    assert masked([got]) == [record_of(o)]
    assert got.due_at.tzinfo is not None and got.next_at == at(90)


def test_claim_takes_due_claimable_occurrences_by_next_at_then_key_up_to_the_limit(
    store: StateStore,
) -> None:
    store.add_occurrences(
        RUN,
        [
            occ("c", 5),
            occ("a", 5),
            occ("b", 1),
            occ("later", 60),
            occ("skipped", 0, state=S.SKIPPED),
            occ("dead-on-arrival", 0, state=S.DEAD),
        ],
    )
    claimed = store.claim(RUN, at(5), 2, at(10), "w1")
    assert [o.key for o in claimed] == ["b", "a"]
    fence = claimed[0].fence
    assert fence > 0
    for o in claimed:
        assert o == replace(
            record_of(occ(o.key, 1 if o.key == "b" else 5)),
            state=S.CLAIMED,
            fence=fence,
            lease_until=at(10),
            worker="w1",
            updated_at=at(5),
        )
        assert store.get_occurrence(RUN, o.key) == o
    again = store.claim(RUN, at(5), 10, at(10), "w2")
    assert [o.key for o in again] == ["c"]
    assert again[0].fence > fence
    assert store.claim(RUN, at(5), 10, at(10), "w2") == []
    assert store.claim(RUN, at(59), 10, at(70), "w2") == []
    assert [o.key for o in store.claim(RUN, at(60), 10, at(70), "w2")] == ["later"]
    assert store.claim(RUN, at(600), 0, at(700), "w2") == []
    assert store.claim("another-run", at(600), 10, at(700), "w2") == []


def test_each_claim_has_a_new_higher_fence(store: StateStore) -> None:
    store.add_occurrences(RUN, [occ(f"k{i}", i) for i in range(3)])
    fences = [store.claim(RUN, at(10), 1, at(20), "w")[0].fence for _ in range(3)]
    assert fences == sorted(set(fences))


def test_an_outcome_is_recorded_with_the_current_fence_only(store: StateStore) -> None:
    store.add_occurrences(RUN, [occ("a", 0), occ("b", 0)])
    a, b = store.claim(RUN, at(1), 10, at(11), "w1")
    stale = store.record(
        RUN,
        [
            sent(a, 2, "message 42"),
            Outcome(b.key, b.fence + 1, S.SENT, at(2)),  # not its fence
            Outcome("absent", a.fence, S.SENT, at(2)),
        ],
        "w1",
    )
    assert stale == ["b", "absent"]
    assert store.get_occurrence(RUN, "a") == replace(
        a, state=S.SENT, attempts=1, lease_until=None, reason="message 42", updated_at=at(2)
    )
    assert store.get_occurrence(RUN, "b") == b
    assert [(x.attempt, x.fence, x.at, x.state, x.detail) for x in store.attempts(RUN, "a")] == [
        (1, a.fence, at(2), S.SENT, "message 42")
    ]
    assert store.attempts(RUN, "b") == []
    entry = store.audit_log(RUN)[-1]
    assert (entry.actor, entry.action, entry.subject, entry.detail) == (
        "w1",
        "record.stale",
        "2 outcomes",
        ["b", "absent"],
    )
    # recorded once: the same outcome again is stale (the occurrence is no longer claimed)
    assert store.record(RUN, [sent(a, 3)], "w1") == ["a"]
    assert store.attempts(RUN, "a")[-1].at == at(2)
    assert store.record(RUN, [], "w1") == []


def test_the_same_outcome_twice_in_one_call_is_recorded_once(store: StateStore) -> None:
    store.add_occurrences(RUN, [occ("a", 0)])
    (a,) = store.claim(RUN, at(1), 10, at(11), "w1")
    assert store.record(RUN, [sent(a, 2, "first"), sent(a, 3, "second")], "w1") == ["a"]
    got = store.get_occurrence(RUN, "a")
    assert got is not None and (got.attempts, got.reason) == (1, "first")
    assert len(store.attempts(RUN, "a")) == 1


def test_a_retry_is_claimable_again_at_its_next_at_under_a_new_fence(store: StateStore) -> None:
    store.add_occurrences(RUN, [occ("a", 0)])
    (first,) = store.claim(RUN, at(0), 10, at(5), "w1")
    retry = Outcome("a", first.fence, S.RETRY, at(1), "HTTP 503", next_at=at(30))
    assert store.record(RUN, [retry], "w1") == []
    got = store.get_occurrence(RUN, "a")
    assert got is not None
    assert (got.state, got.attempts, got.next_at, got.due_at) == (S.RETRY, 1, at(30), at(0))
    assert store.next_due(RUN) == at(30)
    assert store.claim(RUN, at(29), 10, at(40), "w2") == []
    (second,) = store.claim(RUN, at(30), 10, at(40), "w2")
    assert second.fence > first.fence and second.attempts == 1
    assert store.record(RUN, [Outcome("a", first.fence, S.SENT, at(31))], "w1") == ["a"]
    dead = Outcome("a", second.fence, S.DEAD, at(31), "HTTP 400: bad channel")
    assert store.record(RUN, [dead], "w2") == []
    assert [(x.attempt, x.fence, x.state, x.detail) for x in store.attempts(RUN, "a")] == [
        (1, first.fence, S.RETRY, "HTTP 503"),
        (2, second.fence, S.DEAD, "HTTP 400: bad channel"),
    ]
    assert store.claim(RUN, at(1000), 10, at(1010), "w3") == []
    assert store.next_due(RUN) is None


def test_an_outcome_put_back_unattempted_is_no_attempt(store: StateStore) -> None:
    store.add_occurrences(RUN, [occ("a", 0)])
    (first,) = store.claim(RUN, at(0), 10, at(5), "w1")
    back = Outcome("a", first.fence, S.RETRY, at(1), "rate limited", at(2), attempted=False)
    assert store.record(RUN, [back], "w1") == []
    got = store.get_occurrence(RUN, "a")
    assert got is not None
    assert (got.state, got.attempts, got.next_at, got.reason) == (S.RETRY, 0, at(2), "rate limited")
    assert store.attempts(RUN, "a") == []
    (second,) = store.claim(RUN, at(2), 10, at(7), "w1")
    assert store.record(RUN, [sent(second, 3)], "w1") == []
    assert [(x.attempt, x.fence) for x in store.attempts(RUN, "a")] == [(1, second.fence)]


def test_sent_dead_and_uncertain_occurrences_are_never_claimed(store: StateStore) -> None:
    store.add_occurrences(RUN, [occ(k, 0) for k in ("sent", "dead", "uncertain")])
    claimed = {o.key: o for o in store.claim(RUN, at(0), 10, at(1), "w")}
    states = {"sent": S.SENT, "dead": S.DEAD, "uncertain": S.UNCERTAIN}
    outcomes = [Outcome(k, claimed[k].fence, s, at(0)) for k, s in states.items()]
    assert store.record(RUN, outcomes, "w") == []
    assert store.claim(RUN, at(10_000), 10, at(10_001), "w") == []
    assert store.count_occurrences(RUN) == {S.SENT: 1, S.DEAD: 1, S.UNCERTAIN: 1}


def test_an_expired_lease_makes_the_claim_uncertain_with_an_attempt(store: StateStore) -> None:
    store.add_occurrences(RUN, [occ("a", 0), occ("b", 0), occ("c", 0)])
    a, b = store.claim(RUN, at(0), 2, at(5), "w1")
    (c,) = store.claim(RUN, at(0), 2, at(50), "w2")
    assert store.expire_leases(RUN, at(5)) == []  # a lease is good up to and including its end
    expired = store.expire_leases(RUN, at(5) + timedelta(microseconds=1))
    reason = "the runner holding it stopped before recording the outcome"
    now = at(5) + timedelta(microseconds=1)
    assert expired == [
        replace(o, state=S.UNCERTAIN, attempts=1, reason=reason, lease_until=None, updated_at=now)
        for o in (a, b)
    ]
    assert store.get_occurrence(RUN, "a") == expired[0]
    assert [(x.attempt, x.fence, x.at, x.state) for x in store.attempts(RUN, "a")] == [
        (1, a.fence, now, S.UNCERTAIN)
    ]
    assert store.record(RUN, [sent(a, 6)], "w1") == ["a"]  # too late: an operator decides
    assert store.get_occurrence(RUN, "c") == c
    assert store.expire_leases(RUN, at(6)) == []
    entry = [e for e in store.audit_log(RUN) if e.action == "lease.expired"]
    assert [(e.actor, e.subject, e.detail) for e in entry] == [
        ("runner", "2 occurrences", {"uncertain": ["a", "b"], "resent": []})
    ]


def test_an_operator_resolves_only_uncertain_or_dead_occurrences(store: StateStore) -> None:
    store.add_occurrences(RUN, [occ(k, 0) for k in ("u1", "u2", "u3", "d", "z-pending")])
    claimed = {o.key: o for o in store.claim(RUN, at(0), 4, at(1), "w")}
    assert sorted(claimed) == ["d", "u1", "u2", "u3"]
    store.record(RUN, [Outcome("d", claimed["d"].fence, S.DEAD, at(0), "400")], "w")
    store.expire_leases(RUN, at(2))
    assert store.resolve(RUN, "z-pending", Resolution.SENT, at(3), "alice") is None
    assert store.resolve(RUN, "absent", Resolution.SENT, at(3), "alice") is None
    u1 = store.resolve(RUN, "u1", Resolution.SENT, at(3), "alice")
    assert u1 is not None and u1 == store.get_occurrence(RUN, "u1")
    assert (u1.state, u1.next_at, u1.reason, u1.updated_at) == (
        S.SENT,
        at(3),
        "resolved by alice: sent",
        at(3),
    )
    u2 = store.resolve(RUN, "u2", Resolution.DROP, at(3), "alice")
    assert u2 is not None and u2.state == S.DROPPED
    d = store.resolve(RUN, "d", Resolution.RESEND, at(4), "bob")
    assert d is not None and (d.state, d.next_at, d.attempts) == (S.PENDING, at(4), 1)
    assert store.resolve(RUN, "d", Resolution.RESEND, at(4), "bob") is None  # now pending
    assert store.resolve(RUN, "u1", Resolution.DROP, at(5), "bob") is None  # already sent
    (again,) = [o for o in store.claim(RUN, at(4), 10, at(9), "w") if o.key == "d"]
    assert again.fence > claimed["d"].fence
    store.record(RUN, [sent(again, 5)], "w")
    assert [(x.attempt, x.state) for x in store.attempts(RUN, "d")] == [(1, S.DEAD), (2, S.SENT)]
    resolved = [
        (e.actor, e.action, e.subject) for e in store.audit_log(RUN) if "resolve" in e.action
    ]
    assert resolved == [
        ("alice", "resolve.sent", "u1"),
        ("alice", "resolve.drop", "u2"),
        ("bob", "resolve.resend", "d"),
    ]


def test_counts_next_due_and_filters_read_the_occurrences(store: StateStore) -> None:
    assert store.count_occurrences(RUN) == {}
    assert store.next_due(RUN) is None
    store.add_occurrences(
        RUN,
        [occ("e", 40), occ("a", 10), occ("b", 10), occ("c", 20), occ("s", 5, state=S.SKIPPED)],
    )
    assert store.next_due(RUN) == at(10)
    store.claim(RUN, at(10), 1, at(11), "w")  # "a"
    assert store.next_due(RUN) == at(10)
    store.claim(RUN, at(10), 1, at(11), "w")  # "b"
    assert store.next_due(RUN) == at(20)
    assert store.count_occurrences(RUN) == {S.PENDING: 2, S.CLAIMED: 2, S.SKIPPED: 1}
    keys = lambda rs: [r.key for r in rs]  # noqa: E731
    assert keys(store.occurrences(RUN)) == ["s", "a", "b", "c", "e"]
    assert keys(store.occurrences(RUN, states=[S.PENDING, S.SKIPPED])) == ["s", "c", "e"]
    assert keys(store.occurrences(RUN, since=at(10), until=at(40))) == ["a", "b", "c"]
    assert keys(store.occurrences(RUN, since=at(10), limit=2)) == ["a", "b"]
    assert keys(store.occurrences(RUN, states=[S.CLAIMED], until=at(10))) == []
    assert store.occurrences("another-run") == []


def _states_fixture(store: StateStore) -> dict[str, NewOccurrence]:
    """Occurrences in most states: "p*" pending, "r" retrying, "d*" dead, "u" uncertain, "s"
    sent; "x" skipped; "team" is not for one member."""
    items = {
        "p1": occ("p1", 50),
        "p2": occ("p2", 30, member="m2"),
        "team": occ("team", 40, member=None, kind="post", audience="group"),
        "r": occ("r", 0),
        "d1": occ("d1", 0),
        "d2": occ("d2", 5),
        "d3": occ("d3", 5, member="m3"),
        "u": occ("u", 1),
        "s": occ("s", 2),
        "x": occ("x", 20, state=S.SKIPPED, reason="missed"),
    }
    store.add_occurrences(RUN, list(items.values()))
    want = {"r": S.RETRY, "d1": S.DEAD, "d2": S.DEAD, "d3": S.DEAD, "u": S.UNCERTAIN, "s": S.SENT}
    claimed = {o.key: o for o in store.claim(RUN, at(10), 10, at(11), "w")}
    outcomes = [
        Outcome(k, claimed[k].fence, state, at(10), f"{state}", at(70) if k == "r" else None)
        for k, state in want.items()
    ]
    assert store.record(RUN, outcomes, "w") == []
    return items


def test_counts_by_state_of_some_states_leave_the_others_and_empty_ones_out(
    store: StateStore,
) -> None:
    _states_fixture(store)
    assert store.count_occurrences(RUN) == {
        S.PENDING: 3, S.RETRY: 1, S.DEAD: 3, S.UNCERTAIN: 1, S.SENT: 1, S.SKIPPED: 1,
    }  # fmt: skip
    assert store.count_occurrences(RUN, [S.DEAD, S.SENT, S.CLAIMED]) == {S.DEAD: 3, S.SENT: 1}
    assert store.count_occurrences(RUN, []) == {}
    assert store.count_occurrences("another-run", [S.DEAD]) == {}


def test_occurrences_by_key_read_the_stored_ones_among_the_keys(store: StateStore) -> None:
    _states_fixture(store)
    got = store.occurrences_by_key(RUN, ["d2", "absent", "p1", "s"])
    assert sorted(got) == ["d2", "p1", "s"]
    assert got["d2"] == store.get_occurrence(RUN, "d2") and got["d2"].state == S.DEAD
    assert masked([got["p1"]]) == [record_of(occ("p1", 50))]
    many = [f"k{i:04d}" for i in range(900)]  # more keys than one statement takes
    store.add_occurrences(RUN, [occ(k, 0) for k in many[::2]])
    assert sorted(store.occurrences_by_key(RUN, many)) == many[::2]
    assert store.occurrences_by_key(RUN, []) == {} and store.occurrences_by_key("x", ["p1"]) == {}


def test_occurrences_in_a_state_come_by_due_time_then_key_with_their_total(
    store: StateStore,
) -> None:
    _states_fixture(store)
    keys = lambda p: ([o.key for o in p.items], p.total)  # noqa: E731
    assert keys(store.occurrences_in_state(RUN, S.DEAD, 10)) == (["d1", "d2", "d3"], 3)
    assert keys(store.occurrences_in_state(RUN, S.DEAD, 2)) == (["d1", "d2"], 3)  # cut: counted
    assert keys(store.occurrences_in_state(RUN, S.DEAD, 2, since=at(5))) == (["d2", "d3"], 2)
    assert keys(store.occurrences_in_state(RUN, S.PENDING, 1, since=at(35))) == (["team"], 2)
    assert keys(store.occurrences_in_state(RUN, S.DROPPED, 5)) == ([], 0)
    page = store.occurrences_in_state(RUN, S.RETRY, 5)
    assert page.items[0].next_at == at(70) and page.more == 0
    assert store.occurrences_in_state(RUN, S.DEAD, 1).more == 2


def test_member_occurrences_are_counted_per_state_by_their_due_day(store: StateStore) -> None:
    _states_fixture(store)
    everything = list(OccurrenceState)
    # "team" (pending) is for no one member: not counted
    assert store.member_occurrence_counts(RUN, at(0), at(60), everything) == {
        S.PENDING: 2, S.RETRY: 1, S.DEAD: 3, S.UNCERTAIN: 1, S.SENT: 1, S.SKIPPED: 1,
    }  # fmt: skip
    # by due time, not the retry's next attempt; [since, until)
    assert store.member_occurrence_counts(RUN, at(0), at(5), everything) == {
        S.RETRY: 1, S.DEAD: 1, S.UNCERTAIN: 1, S.SENT: 1,
    }  # fmt: skip
    assert store.member_occurrence_counts(RUN, at(5), at(51), [S.DEAD, S.PENDING]) == {
        S.DEAD: 2, S.PENDING: 2,
    }  # fmt: skip
    assert store.member_occurrence_counts(RUN, at(0), at(60), []) == {}


# -- ingest, members, events ----------------------------------------------------------------------


class Deriver:
    """Counts each member's events in `streak`; a join schedules that member's welcome."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, MemberRecord]]] = []

    def __call__(
        self, events: Sequence[EventRecord], members: Mapping[str, MemberRecord]
    ) -> list[Ingested]:
        self.calls.append(([e.id for e in events], dict(members)))
        current = dict(members)
        out = []
        for e in events:
            m = current.get(e.member) or MemberRecord(e.member)
            m = replace(m, streak=m.streak + 1, last_active_at=e.at)
            new: tuple[NewOccurrence, ...] = ()
            if e.type == "join":
                m = replace(m, joined_at=e.at)
                new = (occ(f"welcome:{e.member}", 0, member=e.member),)
            current[e.member] = m
            out.append(Ingested(m, new))
        return out


def event(id: str, member: str, minutes: float, type: str = "message", **data: Any) -> EventRecord:
    return EventRecord(id, type, member, at(minutes), data)


def test_ingest_stores_each_event_once_by_id(store: StateStore) -> None:
    derive = Deriver()
    first = [event("e1", "m1", 0, "join", channel="群"), event("e2", "m1", 1)]
    assert store.ingest(RUN, first, derive, "http") == [True, True]
    again = [event("e2", "m1", 1), event("e3", "m2", 2, "join"), event("e3", "m2", 9, "other")]
    assert store.ingest(RUN, again, derive, "http") == [False, True, False]
    assert store.ingest(RUN, [event("e1", "m1", 0, "join")], derive, "http") == [False]
    assert store.events(RUN) == [first[0], first[1], again[1]]  # the first copy of e3 is kept
    assert [c[0] for c in derive.calls] == [["e1", "e2"], ["e3"]]
    ingested = [e for e in store.audit_log(RUN) if e.action == "events.ingested"]
    assert [(e.actor, e.subject, e.detail) for e in ingested] == [
        ("http", "2 events", {"new": 2, "duplicates": 0}),
        ("http", "1 events", {"new": 1, "duplicates": 2}),
    ]


def test_derive_sees_the_new_events_with_their_members_as_stored(store: StateStore) -> None:
    derive = Deriver()
    store.ingest(RUN, [event("e1", "m1", 0, "join")], derive, "http")
    m1 = MemberRecord("m1", joined_at=at(0), last_active_at=at(0), streak=1)
    assert derive.calls[-1] == (["e1"], {})
    store.ingest(
        RUN, [event("e1", "m1", 0, "join"), event("e2", "m1", 5), event("e3", "m2", 6)], derive, "x"
    )
    assert derive.calls[-1] == (["e2", "e3"], {"m1": m1})
    assert store.get_members(RUN, ["m1", "m2", "m3"]) == {
        "m1": replace(m1, streak=2, last_active_at=at(5)),
        "m2": MemberRecord("m2", last_active_at=at(6), streak=1),
    }
    assert masked(store.occurrences(RUN)) == [record_of(occ("welcome:m1", 0, member="m1"))]
    assert store.ingest(RUN, [event("e4", "m3", 7, "join")], derive, "x") == [True]
    assert [o.key for o in store.occurrences(RUN)] == ["welcome:m1", "welcome:m3"]


def test_an_error_in_derive_stores_nothing(store: StateStore) -> None:
    def explode(events: Sequence[EventRecord], members: Mapping[str, MemberRecord]) -> Any:
        raise RuntimeError("derive failed")

    with pytest.raises(RuntimeError, match="derive failed"):
        store.ingest(RUN, [event("e1", "m1", 0, "join")], explode, "http")
    assert store.events(RUN) == []
    assert store.get_members(RUN, ["m1"]) == {}
    assert store.occurrences(RUN) == []
    assert [e.action for e in store.audit_log(RUN)] == ["run.created"]
    assert store.ingest(RUN, [event("e1", "m1", 0, "join")], Deriver(), "http") == [True]
    assert [o.key for o in store.occurrences(RUN)] == ["welcome:m1"]


def test_members_round_trip_with_every_field(store: StateStore) -> None:
    full = MemberRecord(
        id="张三",
        joined_at=at(0),
        left_at=at(600),
        removed=True,
        last_active_at=at(300),
        spoke_days=(date(2026, 3, 1), date(2026, 3, 2)),
        active_days=(date(2026, 3, 2),),
        violations=2,
        streak=3,
        last_checkin=date(2026, 3, 2),
        paid=1,
        referrer="李四",
        tier="金牌",
        attributes={"城市": "上海", "age": 31, "tags": ["志愿者", "vip"], "note": None},
    )
    bare = MemberRecord("m2")
    store.put_members(RUN, [bare, full])
    got = store.get_members(RUN, ["张三", "m2", "absent"])
    assert got == {"张三": full, "m2": bare}
    assert got["张三"].joined_at is not None and got["张三"].joined_at.tzinfo is not None
    assert list(store.iter_members(RUN)) == sorted([full, bare], key=lambda m: m.id)
    store.put_members(RUN, [replace(bare, tier="silver")])
    assert store.get_members(RUN, ["m2"]) == {"m2": replace(bare, tier="silver")}
    assert store.get_members(RUN, []) == {}
    assert list(store.iter_members("another-run")) == []


def test_members_due_by_their_join_or_activity_instant(store: StateStore) -> None:
    store.put_members(
        RUN,
        [
            MemberRecord("c", joined_at=at(10), last_active_at=at(50)),
            MemberRecord("a", joined_at=at(20), last_active_at=at(20)),
            MemberRecord("b", joined_at=at(30)),
            MemberRecord("left", joined_at=at(10), left_at=at(40), last_active_at=at(20)),
            MemberRecord("never"),
        ],
    )
    ids = lambda ms: [m.id for m in ms]  # noqa: E731
    assert ids(store.members_due(RUN, MemberTime.JOINED, at(10), at(30))) == ["a", "c"]
    assert ids(store.members_due(RUN, MemberTime.JOINED, at(30), at(31))) == ["b"]
    assert ids(store.members_due(RUN, MemberTime.LAST_ACTIVE, at(0), at(50))) == ["a"]
    assert store.members_due(RUN, MemberTime.LAST_ACTIVE, at(20), at(51)) == [
        MemberRecord("a", joined_at=at(20), last_active_at=at(20)),
        MemberRecord("c", joined_at=at(10), last_active_at=at(50)),
    ]
    assert store.members_due("another-run", MemberTime.JOINED, at(0), at(100)) == []


def test_events_read_by_time_range_and_type(store: StateStore) -> None:
    evs = [
        event("b", "m1", 10, "message", text="你好"),
        event("a", "m1", 10, "join"),
        event("c", "m2", 20, "message", nested={"k": [1, 2.5, None]}),
        event("d", "m2", 30, "leave"),
    ]
    store.ingest(RUN, evs, Deriver(), "http")
    ids = lambda es: [e.id for e in es]  # noqa: E731
    assert store.events(RUN) == [evs[1], evs[0], evs[2], evs[3]]
    assert ids(store.events(RUN, since=at(10), until=at(30))) == ["a", "b", "c"]
    assert ids(store.events(RUN, since=at(20))) == ["c", "d"]
    assert ids(store.events(RUN, types=["message", "leave"])) == ["b", "c", "d"]
    assert ids(store.events(RUN, until=at(20), types=["message"])) == ["b"]
    assert store.events("another-run") == []


def test_the_latest_events_of_some_types_come_latest_first_counted_when_all_are_shown(
    store: StateStore,
) -> None:
    evs = [
        event("v1", "m1", 0, "violation"),
        event("v2", "m2", 10, "violation", why="广告"),
        event("v3", "m1", 10, "violation"),
        event("w1", "m3", 20, "warning"),
        event("c1", "m1", 30, "message"),
    ]
    store.ingest(RUN, evs, Deriver(), "http")
    ids = lambda p: ([e.id for e in p.items], p.total)  # noqa: E731
    assert ids(store.latest_events(RUN, ["violation"], at(0), 5)) == (["v3", "v2", "v1"], 3)
    assert ids(store.latest_events(RUN, ["violation"], at(0), 3)) == (["v3", "v2", "v1"], 3)
    assert ids(store.latest_events(RUN, ["violation"], at(0), 2)) == (["v3", "v2"], None)
    assert ids(store.latest_events(RUN, ["violation"], at(5), 5)) == (["v3", "v2"], 2)
    assert ids(store.latest_events(RUN, ["warning", "violation"], at(5), 5)) == (
        ["w1", "v3", "v2"], 3,
    )  # fmt: skip
    assert store.latest_events(RUN, ["violation"], at(0), 5).items[1] == evs[1]  # with its data
    assert store.latest_events(RUN, [], at(0), 5) == Page([], 0)
    assert store.latest_events("another-run", ["violation"], at(0), 5) == Page([], 0)


def _members_fixture(store: StateStore) -> None:
    store.put_members(
        RUN,
        [
            MemberRecord("a", joined_at=at(10), last_active_at=at(100)),
            MemberRecord("b", joined_at=at(20), last_active_at=at(20)),
            MemberRecord("c", joined_at=at(20), last_active_at=at(20)),
            MemberRecord("d", joined_at=at(30), last_active_at=at(35)),
            MemberRecord("gone", joined_at=at(25), left_at=at(40), last_active_at=at(25)),
            MemberRecord("never"),
        ],
    )


def test_recent_joins_are_current_members_latest_first_with_a_count(store: StateStore) -> None:
    _members_fixture(store)
    ids = lambda p: ([m.id for m in p.items], p.total, p.capped)  # noqa: E731
    assert ids(store.recent_joins(RUN, at(10), at(30), 10)) == (["c", "b", "a"], 3, False)
    assert ids(store.recent_joins(RUN, at(0), at(100), 2)) == (["d", "c"], 4, False)
    assert ids(store.recent_joins(RUN, at(31), at(100), 2)) == ([], 0, False)
    assert store.recent_joins(RUN, at(30), at(31), 1).items == [
        MemberRecord("d", joined_at=at(30), last_active_at=at(35))
    ]


def test_silent_members_are_current_ones_last_active_before_an_instant(store: StateStore) -> None:
    _members_fixture(store)
    ids = lambda p: ([m.id for m in p.items], p.total, p.capped)  # noqa: E731
    assert ids(store.silent_members(RUN, at(50), 10)) == (["d", "c", "b"], 3, False)
    assert ids(store.silent_members(RUN, at(36), 1)) == (["d"], 3, False)
    assert ids(store.silent_members(RUN, at(20), 10)) == ([], 0, False)  # before, not at
    assert ids(store.silent_members(RUN, at(101), 10))[1] == 4  # never active: not silent


def test_member_counts_stop_at_the_cap(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (memory_store, sql_store):
        monkeypatch.setattr(module, "MEMBER_COUNT_CAP", 3)
    _members_fixture(store)
    page = store.recent_joins(RUN, at(0), at(100), 1)
    assert (len(page.items), page.total, page.capped) == (1, 3, True)
    page = store.silent_members(RUN, at(50), 5)
    assert ([m.id for m in page.items], page.total, page.capped) == (["d", "c", "b"], 3, True)


# -- metrics, gates, transitions ------------------------------------------------------------------


def test_metric_values_are_upserted_by_name_day_and_source(store: StateStore) -> None:
    run = store.get_run(RUN)
    assert run is not None
    d1, d2 = date(2026, 3, 1), date(2026, 3, 2)
    first = [
        MetricValue("members", d2, 10.0, "events"),
        MetricValue("members", d1, 8.0, "events"),
        MetricValue("nps", d1, None, "survey"),
        MetricValue("nps", d1, 40.0, "crm"),
    ]
    run = store.save_run(run, metrics=first)
    assert run is not None
    assert store.metric_values(RUN) == [first[1], first[3], first[2], first[0]]
    second = [MetricValue("members", d1, None, "events"), MetricValue("nps", d1, 42.5, "survey")]
    assert store.save_run(run, metrics=second) is not None
    assert store.metric_values(RUN) == [second[0], first[3], second[1], first[0]]
    assert store.metric_values(RUN, names=["nps"]) == [first[3], second[1]]
    assert store.metric_values(RUN, names=["absent"]) == []


def test_gate_evaluations_and_transitions_keep_their_order(store: StateStore) -> None:
    run = store.get_run(RUN)
    evals = [
        GateEvaluation("launch", at(i), i % 2 == 0, {"m": float(i)}, f"#{i}") for i in range(5)
    ]
    trans = [TransitionRecord(at(i), f"s{i}", "enter") for i in range(3)]
    for i in range(5):
        assert run is not None
        run = store.save_run(run, evaluations=[evals[i]], transitions=trans[i : i + 1])
    assert store.gate_evaluations(RUN) == evals
    assert store.gate_evaluations(RUN, limit=2) == evals[-2:]
    assert store.gate_evaluations(RUN, limit=0) == []
    assert store.transitions(RUN) == trans
    assert store.gate_evaluations("another-run") == [] and store.transitions("another-run") == []


# -- staff tasks ----------------------------------------------------------------------------------


def _open_tasks(store: StateStore) -> dict[str, NewTask]:
    tasks = {
        "t1": NewTask("t1", "ops", "call", "Call 张三", "今天回访", at(60), "张三"),
        "t2": NewTask("t2", "host", "review", "Review", "", at(30)),
        "t3": NewTask("t3", None, "audit", "Audit", "", at(90)),
    }
    store.add_occurrences(RUN, [occ(k, 0, kind="staff") for k in tasks])
    claimed = store.claim(RUN, at(0), 10, at(5), "w")
    outcomes = [
        Outcome(o.key, o.fence, S.SENT, at(1), "task opened", task=tasks[o.key]) for o in claimed
    ]
    assert store.record(RUN, outcomes, "w") == []
    return tasks


def test_a_recorded_outcome_opens_its_task_once(store: StateStore) -> None:
    tasks = _open_tasks(store)
    t1 = tasks["t1"]
    assert store.tasks(RUN) == [
        TaskRecord(t.id, RUN, t.role, t.action, t.title, t.text, t.due_at, t.member,
                   TaskState.OPEN, at(1), None, None, None)
        for t in (tasks["t2"], t1, tasks["t3"])
    ]  # fmt: skip
    store.add_occurrences(RUN, [occ("again", 0)])
    (o,) = store.claim(RUN, at(2), 10, at(5), "w")
    changed = replace(t1, title="changed")
    store.record(RUN, [Outcome(o.key, o.fence, S.SENT, at(3), task=changed)], "w")
    assert [t.title for t in store.tasks(RUN, role="ops")] == ["Call 张三"]
    store.add_occurrences(RUN, [occ("stale", 0)])
    (s,) = store.claim(RUN, at(2), 10, at(5), "w")
    stale_task = NewTask("t9", "ops", "x", "x", "", at(1))
    store.record(RUN, [Outcome(s.key, s.fence + 1, S.SENT, at(3), task=stale_task)], "w")
    assert [t.id for t in store.tasks(RUN)] == ["t2", "t1", "t3"]
    assert [t.id for t in store.tasks(RUN, role="host")] == ["t2"]
    assert store.tasks(RUN, role="nobody") == []


def test_a_task_is_completed_once_and_postponed_only_while_open(store: StateStore) -> None:
    _open_tasks(store)
    assert store.complete_task(RUN, "t1", at(10), "alice") is True
    assert store.complete_task(RUN, "t1", at(11), "bob") is False
    assert store.complete_task(RUN, "absent", at(11), "bob") is False
    (t1,) = store.tasks(RUN, role="ops")
    assert (t1.state, t1.done_at, t1.done_by) == (TaskState.DONE, at(10), "alice")
    assert store.postpone_task(RUN, "t1", at(500), "alice") is False
    assert store.postpone_task(RUN, "t2", at(500), "alice") is True
    assert [t.id for t in store.tasks(RUN, states=[TaskState.OPEN])] == ["t3", "t2"]
    assert [t.id for t in store.tasks(RUN, states=[TaskState.DONE])] == ["t1"]
    log = [(e.actor, e.action, e.subject) for e in store.audit_log(RUN) if "task" in e.action]
    assert log == [("alice", "task.done", "t1"), ("alice", "task.postponed", "t2")]


def test_overdue_tasks_are_escalated_once_until_postponed(store: StateStore) -> None:
    _open_tasks(store)
    store.complete_task(RUN, "t1", at(10), "alice")
    up = store.escalate_tasks(RUN, at(90), at(95), "runner")
    assert [(t.id, t.escalated_at) for t in up] == [("t2", at(95))]  # t1 done; t3 not yet due
    (t3,) = [t for t in store.tasks(RUN) if t.id == "t3"]
    assert store.escalate_tasks(RUN, at(91), at(96), "runner") == [replace(t3, escalated_at=at(96))]
    assert store.escalate_tasks(RUN, at(200), at(200), "runner") == []
    assert store.postpone_task(RUN, "t2", at(300), "bob")
    (t2,) = store.tasks(RUN, role="host")
    assert (t2.due_at, t2.escalated_at) == (at(300), None)
    assert [t.id for t in store.escalate_tasks(RUN, at(301), at(301), "runner")] == ["t2"]
    overdue = [e.subject for e in store.audit_log(RUN) if e.action == "task.overdue"]
    assert overdue == ["t2", "t3", "t2"]


def test_a_task_is_read_by_id(store: StateStore) -> None:
    tasks = _open_tasks(store)
    t1 = store.get_task(RUN, "t1")
    assert t1 is not None and (t1.title, t1.role, t1.state) == ("Call 张三", "ops", TaskState.OPEN)
    assert t1 == next(t for t in store.tasks(RUN) if t.id == "t1")
    assert t1.due_at == tasks["t1"].due_at
    assert store.get_task(RUN, "absent") is None and store.get_task("another-run", "t1") is None


def test_open_tasks_are_counted_per_role_and_overdue_before_an_instant(store: StateStore) -> None:
    _open_tasks(store)  # t1 ops due +60, t2 host due +30, t3 without a role due +90
    assert store.open_task_counts(RUN) == {"ops": 1, "host": 1, None: 1}
    assert store.overdue_task_count(RUN, at(60)) == 1  # t2; t1 is due at, not before
    assert store.overdue_task_count(RUN, at(61)) == 2
    store.complete_task(RUN, "t2", at(40), "alice")
    assert store.open_task_counts(RUN) == {"ops": 1, None: 1}
    assert store.overdue_task_count(RUN, at(61)) == 1
    assert store.open_task_counts("another-run") == {}


def test_open_tasks_come_earliest_due_first_of_every_role_one_role_or_none(
    store: StateStore,
) -> None:
    _open_tasks(store)
    store.add_occurrences(RUN, [occ("t4", 0, kind="staff")])
    (o,) = store.claim(RUN, at(0), 10, at(5), "w")
    t4 = NewTask("t4", "ops", "call", "Call 李四", "", at(60))  # due with t1: then by id
    store.record(RUN, [Outcome(o.key, o.fence, S.SENT, at(1), task=t4)], "w")
    ids = lambda ts: [t.id for t in ts]  # noqa: E731
    assert ids(store.open_tasks(RUN, 10)) == ["t2", "t1", "t4", "t3"]
    assert ids(store.open_tasks(RUN, 2)) == ["t2", "t1"]
    assert ids(store.open_tasks(RUN, 10, "ops")) == ["t1", "t4"]
    assert ids(store.open_tasks(RUN, 10, NO_ROLE)) == ["t3"]
    assert ids(store.open_tasks(RUN, 10, "nobody")) == []
    store.complete_task(RUN, "t1", at(5), "alice")
    assert ids(store.open_tasks(RUN, 10, "ops")) == ["t4"]
    assert store.open_tasks(RUN, 1) == [t for t in store.tasks(RUN) if t.id == "t2"]


def test_done_tasks_come_latest_done_first(store: StateStore) -> None:
    _open_tasks(store)
    assert store.done_tasks(RUN, 5) == []
    store.complete_task(RUN, "t3", at(10), "alice")
    store.complete_task(RUN, "t1", at(20), "bob")
    store.complete_task(RUN, "t2", at(20), "bob")  # done with t1: then by id, descending
    ids = lambda ts: [t.id for t in ts]  # noqa: E731
    assert ids(store.done_tasks(RUN, 5)) == ["t2", "t1", "t3"]
    assert ids(store.done_tasks(RUN, 1)) == ["t2"]
    assert ids(store.done_tasks(RUN, 5, "ops")) == ["t1"]
    assert ids(store.done_tasks(RUN, 5, NO_ROLE)) == ["t3"]
    (t1,) = store.done_tasks(RUN, 5, "ops")
    assert (t1.state, t1.done_at, t1.done_by) == (TaskState.DONE, at(20), "bob")


def test_batches_larger_than_one_statement_are_whole(store: StateStore) -> None:
    n = 1_000  # more rows and parameters than one multi-row statement takes
    assert store.add_occurrences(RUN, [occ(f"k{i:04d}", i % 7) for i in range(n)]) == n
    assert store.add_occurrences(RUN, [occ(f"k{i:04d}", 0) for i in range(n - 10, n + 10)]) == 10
    claimed = store.claim(RUN, at(10), 2 * n, at(20), "w")
    assert len(claimed) == n + 10
    assert store.record(RUN, [sent(o, 11) for o in claimed], "w") == []
    assert store.count_occurrences(RUN) == {S.SENT: n + 10}
    events = [event(f"e{i:04d}", f"m{i % 450}", i) for i in range(n)]
    assert store.ingest(RUN, events[:300], Deriver(), "http") == [True] * 300
    assert store.ingest(RUN, events, Deriver(), "http") == [False] * 300 + [True] * (n - 300)
    assert len(store.events(RUN)) == n
    members = store.get_members(RUN, [f"m{i}" for i in range(600)])
    assert len(members) == 450
    assert sum(m.streak for m in members.values()) == n


# -- rate limits and audit ------------------------------------------------------------------------


def test_rate_windows_hold_a_minute_and_are_shared_by_stores_on_one_database(
    place: Place,
) -> None:
    """No 60 s ever holds more than the limit; what a store grants, another store sees."""
    one, two = place.open(), place.open()
    now = T0
    assert one.take_tokens("group", now, 60, 50) == (50, 0.0)
    assert two.take_tokens("group", now, 60, 20) == (10, 60.0)  # free again when those leave
    assert one.take_tokens("group", now + timedelta(seconds=30), 60, 1) == (0, 30.0)
    assert two.take_tokens("other", now, 60, 1) == (1, 0.0)
    # 60 s after the first grants they leave the window, all at once
    assert one.take_tokens("group", now + timedelta(seconds=60), 60, 100) == (60, 60.0)
    later = now + timedelta(seconds=200)
    assert two.take_tokens("group", later, 60, 100) == (60, 60.0)
    assert two.take_tokens("slow", now, 1, 1) == (1, 60.0)


def test_the_audit_log_is_append_only_and_read_oldest_first(store: StateStore) -> None:
    store.create_run(a_run("other"))
    for i in range(4):
        store.audit(RUN, "alice", "note", f"#{i}", {"text": "备注", "i": i, "at": None})
    store.audit("other", "bob", "note", "x", ["list", 1])
    log = store.audit_log(RUN)
    assert [(e.actor, e.action, e.subject) for e in log] == [
        ("runner", "run.created", RUN),
        *[("alice", "note", f"#{i}") for i in range(4)],
    ]
    assert log[-1].detail == {"text": "备注", "i": 3, "at": None}
    assert [e.id for e in log] == sorted({e.id for e in log})
    assert all(e.at.tzinfo is not None for e in log)
    assert store.audit_log(RUN, limit=2) == log[-2:]
    assert store.audit_log(RUN, limit=0) == []
    assert [e.detail for e in store.audit_log("other")][-1] == ["list", 1]


# -- schema ---------------------------------------------------------------------------------------


def test_reopening_a_store_keeps_its_data_and_migrates_nothing(place: Place) -> None:
    first = place.open()
    assert first.schema_version() == SCHEMA_VERSION
    first.create_run(a_run())
    first.add_occurrences(RUN, [occ("a", 0)])
    second = place.open()
    assert second.schema_version() == SCHEMA_VERSION
    assert second.get_run(RUN) == a_run()
    assert [o.key for o in second.occurrences(RUN)] == ["a"]
    if place.kind != "memory":
        assert _sql(place, "SELECT COUNT(*) FROM schema_migrations") == SCHEMA_VERSION


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_store_migrated_from_an_older_schema_hands_out_higher_fences(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    place = Place(kind, _url(kind, request, tmp_path))
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT" if kind == "sqlite" else "BIGSERIAL PRIMARY KEY"
    _sql(place, "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT)")
    for version, statements in enumerate(MIGRATIONS[:4], start=1):  # a store of release 4
        for statement in statements:
            _sql(place, statement.replace("{serial}", serial))
        _sql(place, f"INSERT INTO schema_migrations VALUES ({version}, 0)")
    _sql(place, "UPDATE counters SET value = 41 WHERE name = 'fence'")  # 41 claims made
    store = place.open()
    assert store.schema_version() == SCHEMA_VERSION
    store.create_run(a_run())
    store.add_occurrences(RUN, [occ("a", 0), occ("b", 0)])
    assert [o.fence for o in store.claim(RUN, at(0), 1, at(5), "w")] == [42]
    assert [o.fence for o in place.open().claim(RUN, at(0), 1, at(5), "w")] == [43]
    place.close()


def _sql(place: Place, statement: str) -> Any:
    """Run one statement on the place's database directly; the first column of its first row."""
    if place.kind == "sqlite":
        conn = sqlite3.connect(place.url.removeprefix("sqlite:///"))
        try:
            with conn:
                row = conn.execute(statement).fetchone()
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(place.url, autocommit=True) as pg:
            cur = pg.execute(statement)
            row = cur.fetchone() if cur.description else None
    return row[0] if row else None


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_store_at_a_newer_schema_is_refused(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    place = Place(kind, _url(kind, request, tmp_path))
    place.open().close()
    _sql(
        place,
        f"INSERT INTO schema_migrations (version, applied_at) VALUES ({SCHEMA_VERSION + 1}, 0)",
    )
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade sop"):
        open_store(place.url)
    if kind == "postgresql":  # the refused store closed its connection: only this query's is left
        count = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
        deadline = time.monotonic() + 5  # a backend ends just after its client hangs up
        while _sql(place, count) != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _sql(place, count) == 1


def test_unknown_and_unreachable_stores_are_said_as_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a state store URL"):
        open_store("mysql://x")
    with pytest.raises(StoreError, match="unknown option"):
        open_store(f"sqlite:///{tmp_path / 's.db'}?journal=off")
    with pytest.raises(StoreError, match="cannot connect"):
        open_store("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")


def test_a_lost_postgresql_connection_is_said_and_the_next_call_reconnects(
    postgres_server: Any, postgres_url: str
) -> None:
    store = open_store(postgres_url)
    store.create_run(a_run())
    postgres_server.terminate_connections(postgres_url)
    with pytest.raises(StoreError, match="unavailable"):
        store.get_run(RUN)
    assert store.get_run(RUN) == a_run()
    store.close()


def test_a_bulk_insert_leaves_postgresql_statistics_to_plan_by(postgres_url: str) -> None:
    # without them `run = ?` looks like a handful of rows and key lookups read the whole run
    place = Place("postgresql", postgres_url)
    store = place.open()
    store.create_run(a_run())
    tuples = "SELECT reltuples FROM pg_class WHERE relname = 'occurrences'"
    store.add_occurrences(RUN, [occ(f"small{i}", 0) for i in range(10)])
    assert _sql(place, tuples) < 0  # never analyzed: a small write leaves it to autovacuum
    store.add_occurrences(RUN, [occ(f"k{i:05d}", 0) for i in range(1_500)])
    assert _sql(place, tuples) >= 1_500
    plan = _sql(
        place,
        "EXPLAIN SELECT fence FROM occurrences WHERE run = 'community-2026'"
        " AND key = ANY(ARRAY['k00001', 'k00002'])",
    )
    assert "occurrences_pkey" in plan
    place.close()


def test_store_errors_never_show_a_password() -> None:
    url = "postgresql://sop:s3cret@127.0.0.1:1/none?connect_timeout=2"
    with pytest.raises(StoreError) as caught:
        open_store(url)
    assert "s3cret" not in str(caught.value)
    assert redact(url) == "postgresql://sop:***@127.0.0.1:1/none?connect_timeout=2"
    assert redact("sqlite:///.sop/state.db") == "sqlite:///.sop/state.db"


def _open_and_close(url: str, barrier: Any) -> None:
    barrier.wait()
    open_store(url).close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_runners_opening_a_new_store_at_once_migrate_it_once(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    place = Place(kind, _url(kind, request, tmp_path))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open_and_close, args=(place.url, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    assert place.open().schema_version() == SCHEMA_VERSION
    assert _sql(place, "SELECT COUNT(*) FROM schema_migrations") == SCHEMA_VERSION
    place.close()


# -- the SQL stores answer like the reference -----------------------------------------------------


def _normal(value: Any) -> Any:
    if isinstance(value, OccurrenceRecord):
        return masked([value])[0]
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_sql_store_answers_a_random_sequence_of_calls_like_the_memory_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    rng = random.Random(20_260_301)
    place = Place(kind, _url(kind, request, tmp_path))
    stores = [MemoryStore(), place.open()]
    for s in stores:
        s.create_run(a_run())
    held: list[OccurrenceRecord] = []  # claims seen, outcomes are made from (some stale)
    clock = 0.0
    for step in range(400):
        clock += rng.choice([0, 0.5, 1, 3])
        now = at(clock)
        op = rng.choice(["add", "add", "claim", "claim", "record", "record", "expire", "resolve"])
        args: tuple[Any, ...]
        if op == "add":
            n = rng.randrange(1, 6)
            due = [clock + rng.choice([-5, 0, 2, 10]) for _ in range(n)]
            args = ([occ(f"k{rng.randrange(120)}", d) for d in due],)
            method = "add_occurrences"
        elif op == "claim":
            args = (now, rng.randrange(0, 6), at(clock + rng.choice([1, 5])), "w")
            method = "claim"
        elif op == "record":
            picked = rng.sample(held, min(len(held), rng.randrange(1, 4)))
            states = [S.SENT, S.RETRY, S.DEAD, S.UNCERTAIN]
            outcomes = [
                Outcome(
                    o.key, o.fence, rng.choice(states), now, "d", rng.choice([None, at(clock + 2)])
                )
                for o in picked
            ]
            args, method = (outcomes, "w"), "record"
        elif op == "expire":
            args, method = (now,), "expire_leases"
        else:
            args = (f"k{rng.randrange(120)}", rng.choice(list(Resolution)), now, "op")
            method = "resolve"
        ref, got = (_normal(getattr(s, method)(RUN, *args)) for s in stores)
        assert got == ref, (step, method)
        if method == "claim":
            held.extend(ref)
        for s in stores[1:]:
            assert _normal(s.occurrences(RUN)) == _normal(stores[0].occurrences(RUN)), step
    keys = [o.key for o in stores[0].occurrences(RUN)]
    for s in stores[1:]:
        assert s.count_occurrences(RUN) == stores[0].count_occurrences(RUN)
        assert s.next_due(RUN) == stores[0].next_due(RUN)
        assert [s.attempts(RUN, k) for k in keys] == [stores[0].attempts(RUN, k) for k in keys]
    assert len(stores[0].count_occurrences(RUN)) >= 4  # the sequence reached most states
    place.close()


# -- two runners never dispatch the same occurrence -----------------------------------------------

DUE = 2_000
NOW = at(10_000)


def _dispatch_all(url: str, worker: str, barrier: Any, out: str) -> None:
    """A runner: claim batches of 50 and record them sent until nothing is left."""
    store = open_store(url)
    got = _drain(store, worker, barrier)
    store.close()
    Path(out).write_text(json.dumps(got), encoding="utf-8")


def _drain(store: StateStore, worker: str, barrier: Any) -> list[str]:
    barrier.wait()
    got: list[str] = []
    while batch := store.claim(RUN, NOW, 50, NOW + timedelta(hours=1), worker):
        stale = store.record(RUN, [Outcome(o.key, o.fence, S.SENT, NOW) for o in batch], worker)
        assert stale == [], stale
        got.extend(o.key for o in batch)
    return got


@pytest.mark.parametrize("kind", KINDS)
def test_two_runners_on_one_store_never_dispatch_the_same_occurrence(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    place = Place(kind, _url(kind, request, tmp_path))
    store = place.open()
    store.create_run(a_run())
    keys = {f"o{i:05d}" for i in range(DUE)}
    assert store.add_occurrences(RUN, [occ(f"o{i:05d}", i % 97) for i in range(DUE)]) == DUE
    if kind == "memory":  # one process: two threads on the one store
        results: dict[str, list[str]] = {}
        tbarrier = threading.Barrier(2)

        def run(worker: str) -> None:
            results[worker] = _drain(store, worker, tbarrier)

        threads = [threading.Thread(target=run, args=(w,)) for w in ("w1", "w2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        got = [results["w1"], results["w2"]]
    else:  # two processes, each with its own connection
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(2)
        outs = [tmp_path / f"{w}.json" for w in ("w1", "w2")]
        procs = [
            ctx.Process(target=_dispatch_all, args=(place.url, w, barrier, str(out)))
            for w, out in zip(("w1", "w2"), outs, strict=True)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0]
        got = [json.loads(out.read_text(encoding="utf-8")) for out in outs]
    one, two = set(got[0]), set(got[1])
    assert len(one) == len(got[0]) and len(two) == len(got[1])
    assert one & two == set()
    assert one | two == keys
    assert store.count_occurrences(RUN) == {S.SENT: DUE}
    assert all(o.attempts == 1 for o in store.occurrences(RUN))
    attempts = [store.attempts(RUN, k) for k in sorted(keys)]
    assert all(len(a) == 1 and a[0].state == S.SENT for a in attempts)
    place.close()


def test_forecasts_keep_the_newest_per_playbook(store: StateStore) -> None:
    assert store.latest_forecast("pb") is None
    doc = {"start": "2026-03-01", "metrics": {"members": {"days": [0, 1], "p50": [1.0, None]}}}
    store.save_forecast("pb", T0, doc)
    store.save_forecast("pb", T0 + timedelta(hours=1), {**doc, "start": "2026-03-02"})
    store.save_forecast("other", T0 + timedelta(hours=2), {"start": "x"})
    latest = store.latest_forecast("pb")
    assert latest is not None
    assert latest.created_at == T0 + timedelta(hours=1)
    assert latest.data["start"] == "2026-03-02"
    assert latest.data["metrics"]["members"]["p50"] == [1.0, None]


def test_expired_claims_on_idempotent_backends_are_pending_again_in_the_same_commit(
    store: StateStore,
) -> None:
    items = [replace(occ("a", 0), backend="idem"), replace(occ("b", 0), backend="plain")]
    store.add_occurrences(RUN, items)
    store.claim(RUN, at(0), 10, at(5), "w1")
    later = at(6)
    expired = {o.key: o for o in store.expire_leases(RUN, later, resend=["idem"])}
    assert expired["a"].state == S.PENDING and expired["a"].next_at == at(0)  # due as before
    assert expired["b"].state == S.UNCERTAIN
    assert [o.key for o in store.claim(RUN, later, 10, at(20), "w2")] == ["a"]
    assert [a.state for a in store.attempts(RUN, "a")] == [S.UNCERTAIN]  # the lost attempt


def test_a_take_of_several_tokens_is_all_or_nothing(store: StateStore) -> None:
    assert store.take_tokens("t", T0, 6, 2)[0] == 2
    assert store.take_tokens("t", T0 + timedelta(seconds=10), 6, 3)[0] == 3  # 1 left
    granted, wait = store.take_tokens("t", T0 + timedelta(seconds=20), 6, 3, at_least=3)
    assert granted == 0 and wait == pytest.approx(40.0)  # when the first 2 leave the window
    assert store.take_tokens("t", T0 + timedelta(seconds=60), 6, 3, at_least=3)[0] == 3


def test_the_runner_reads_the_next_escalation_and_the_awaited_sends_by_index(
    store: StateStore,
) -> None:
    assert store.next_escalation(RUN) is None
    assert store.awaiting_confirmation(RUN, 10) == []
    store.add_occurrences(RUN, [occ("a", 0), occ("b", 0), occ("c", 0)])
    claimed = {o.key: o for o in store.claim(RUN, at(0), 10, at(5), "w")}
    tasks = {
        "a": NewTask("a", "ops", "welcome", "t", "x", at(30)),
        "b": NewTask("b", "ops", "welcome", "t", "x", at(20), None, "msg-1", "crm"),
        "c": NewTask("c", "ops", "welcome", "t", "x", at(10)),
    }
    store.record(
        RUN,
        [Outcome(k, claimed[k].fence, S.SENT, at(1), task=t) for k, t in tasks.items()],
        "w",
    )
    assert store.next_escalation(RUN) == at(10)
    store.escalate_tasks(RUN, at(15), at(15), "runner")  # c
    assert store.next_escalation(RUN) == at(20)
    assert [t.id for t in store.awaiting_confirmation(RUN, 10)] == ["b"]
    store.complete_task(RUN, "b", at(21), "platform:crm")
    assert store.awaiting_confirmation(RUN, 10) == []
    assert store.next_escalation(RUN) == at(30)


# -- issue 12: attributes, points, applications, incidents, exits, expansions ---------------------


def test_a_member_keeps_attributes_source_team_counts_and_marks(store: StateStore) -> None:
    m = MemberRecord(
        "李四", joined_at=at(0), attributes={"city": "北京", "score": 7.5, "vip": True},
        source="invite", team="红队", checkins=3, messages=9, approved=True,
        marks=("milestone:ten",),
    )  # fmt: skip
    store.put_members(RUN, [m, MemberRecord("m2", joined_at=at(1), team="蓝队")])
    assert store.get_members(RUN, ["李四"]) == {"李四": m}
    assert list(store.iter_members(RUN))[1] == m  # by id: "m2" < "李四"
    facts = {f.id: (f.source, f.team) for f in store.member_facts(RUN)}
    assert facts == {"李四": ("invite", "红队"), "m2": (None, "蓝队")}
    assert store.team_sizes(RUN) == {"红队": 1, "蓝队": 1}
    store.put_members(RUN, [replace(m, left_at=at(5))])
    assert store.team_sizes(RUN) == {"蓝队": 1}  # current members only


def test_the_points_ledger_records_each_key_once_and_sums(store: StateStore) -> None:
    from sop.engine.run.store.base import LedgerEntry, PointsKind

    entries = [
        LedgerEntry("earn:e1", "a", at(0), 5, PointsKind.EARN),
        LedgerEntry("reward:k1", "a", at(1), 30, PointsKind.REWARD, None, "top"),
        LedgerEntry("earn:e2", "b", at(2), 5, PointsKind.EARN),
        LedgerEntry("redeem:e3", "a", at(3), -20, PointsKind.REDEEM, "杯子"),
    ]
    assert store.add_ledger(RUN, entries) == 4
    assert store.add_ledger(RUN, [replace(entries[0], points=500), entries[1]]) == 0
    assert store.ledger(RUN, "a") == [entries[0], entries[1], entries[3]]
    assert store.ledger(RUN) == sorted(entries, key=lambda e: (e.at, e.key))
    assert store.points_balances(RUN) == {"a": 15, "b": 5}
    assert store.points_totals(RUN) == {
        PointsKind.EARN: 10, PointsKind.REWARD: 30, PointsKind.REDEEM: -20,
    }  # fmt: skip
    assert store.redeemed_counts(RUN) == {"杯子": 1}


def test_ingest_saves_ledger_applications_and_review_tasks_with_the_event(
    store: StateStore,
) -> None:
    from sop.engine.run.store.base import (
        ApplicationRecord,
        ApplicationState,
        IngestContext,
        LedgerEntry,
        PointsKind,
    )

    seen: list[dict[str, Any]] = []

    def derive(events: Sequence[EventRecord], members: Mapping[str, MemberRecord]) -> list[Any]:
        assert isinstance(members, IngestContext)
        seen.append({
            "joined": members.joined_count(), "teams": members.team_sizes(),
            "ledger": [x.key for x in members.ledger("a")], "redeemed": members.redeemed(),
            "application": members.application("a"),
        })  # fmt: skip
        out = []
        for e in events:
            if e.type == "apply":
                task = NewTask("review:a", "lead", "admission.review", "Review a", "", at(60), "a")
                app = ApplicationRecord("a", ApplicationState.PENDING, e.at, task="review:a")
                out.append(Ingested(MemberRecord("a"), tasks=(task,), application=app))
            elif e.type == "approve":
                app = ApplicationRecord("a", ApplicationState.APPROVED, at(0), e.at, "ann", "ok",
                                        "review:a")  # fmt: skip
                m = MemberRecord("a", joined_at=e.at, team="红")
                entry = LedgerEntry(f"earn:{e.id}", "a", e.at, 5, PointsKind.EARN)
                out.append(Ingested(m, application=app, done_tasks=("review:a",), ledger=(entry,)))
            else:
                out.append(Ingested(MemberRecord("a", joined_at=at(1), team="红"),
                                    refusal="no"))  # fmt: skip
        return out

    store.ingest(RUN, [event("e1", "a", 0, "apply")], derive, "http")
    assert store.get_task(RUN, "review:a").state is TaskState.OPEN  # type: ignore[union-attr]
    pending = store.get_application(RUN, "a")
    assert pending is not None and pending.state is ApplicationState.PENDING
    store.ingest(RUN, [event("e2", "a", 1, "approve")], derive, "ann")
    assert seen[-1]["application"] == pending  # the deriver reads it inside the transaction
    done = store.get_task(RUN, "review:a")
    assert done is not None and done.state is TaskState.DONE and done.done_by == "ann"
    assert [a.state for a in store.applications(RUN)] == [ApplicationState.APPROVED]
    assert store.applications(RUN, [ApplicationState.PENDING]) == []
    assert store.points_balances(RUN) == {"a": 5}
    store.ingest(RUN, [event("e3", "a", 2, "redeem")], derive, "http")
    assert seen[-1] == {
        "joined": 1, "teams": {"红": 1}, "ledger": ["earn:e2"], "redeemed": {},
        "application": store.get_application(RUN, "a"),
    }  # fmt: skip
    refused = [e for e in store.audit_log(RUN) if e.action == "event.refused"]
    assert [(e.subject, e.detail) for e in refused] == [("a", {"reason": "no"})]


def test_an_incident_opens_once_with_its_steps_and_closes_once(store: StateStore) -> None:
    from sop.engine.run.store.base import IncidentRecord, IncidentState

    rec = IncidentRecord("quiet/2026-03-01T01:00:00Z", "quiet", IncidentState.OPEN, at(0), "ann",
                         "静")  # fmt: skip
    steps = [occ("quiet-step-0", 0, member=None), occ("quiet-step-1", 60, member=None)]
    assert store.open_incident(RUN, rec, steps, "ann") is True
    assert store.open_incident(RUN, rec, [occ("other", 0)], "bob") is False
    assert [o.key for o in store.occurrences(RUN)] == ["quiet-step-0", "quiet-step-1"]
    store.add_occurrences(RUN, [occ("task-of-it", 0)])
    claimed = store.claim(RUN, at(0), 10, at(5), "w")
    task = NewTask("task-of-it", "ops", "incident:quiet:1", "Alert", "", at(30))
    store.record(RUN, [Outcome(o.key, o.fence, S.SENT, at(1), task=task if o.key ==
                                "task-of-it" else None) for o in claimed], "w")  # fmt: skip
    assert store.get_incident(RUN, rec.id) == rec
    assert store.incidents(RUN, [IncidentState.OPEN]) == [rec]
    closed = store.close_incident(RUN, rec.id, at(90), "bob", "好了", ["task-of-it", "none"])
    assert closed == replace(rec, state=IncidentState.CLOSED, closed_at=at(90), closed_by="bob",
                             close_note="好了")  # fmt: skip
    assert store.close_incident(RUN, rec.id, at(91), "bob") is None
    assert store.get_task(RUN, "task-of-it").state is TaskState.DONE  # type: ignore[union-attr]
    assert store.incidents(RUN, [IncidentState.OPEN]) == []
    later = replace(rec, id="quiet/2026-03-02T01:00:00Z", opened_at=at(1440), detected=True,
                    opened_by="detect")  # fmt: skip
    run = store.get_run(RUN)
    assert run is not None
    assert store.save_run(run, incidents=[later]) is not None  # opened by `detect:` with a save
    assert [i.id for i in store.incidents(RUN)] == [later.id, rec.id]  # the latest first
    assert [(e.action, e.subject) for e in store.audit_log(RUN) if "incident" in e.action] == [
        ("incident.opened", rec.id), ("incident.closed", rec.id), ("incident.opened", later.id),
    ]  # fmt: skip


def test_exits_and_the_daily_history_read_back(store: StateStore) -> None:
    run = store.get_run(RUN)
    assert run is not None
    d0 = date(2026, 3, 1)
    metrics = [
        MetricValue("members", d0 + timedelta(days=i), float(10 + i), "events") for i in range(5)
    ]
    t = TransitionRecord(at(10), "launch", "passed", "", None, {"avg(x, 7d)": 0.3}, "success")
    ev = GateEvaluation("launch", at(10), True, {"members": 14.0}, "", "success")
    assert store.save_run(run, [t], [ev], metrics) is not None
    assert store.transitions(RUN) == [t]
    assert store.gate_evaluations(RUN) == [ev]
    since = store.metric_values(RUN, ["members"], since=d0 + timedelta(days=3))
    assert [(m.day, m.value) for m in since] == [(d0 + timedelta(days=3), 13.0),
                                                 (d0 + timedelta(days=4), 14.0)]  # fmt: skip


def test_an_expanded_occurrence_inserts_its_members_with_its_outcome(store: StateStore) -> None:
    store.add_occurrences(RUN, [occ("post", 0, member=None, audience="segment:bj")])
    [o] = store.claim(RUN, at(0), 10, at(5), "w")
    children = (occ("post/a", 0, member="a"), occ("post/b", 0, member="b"))
    stale = store.record(
        RUN, [Outcome(o.key, o.fence, S.EXPANDED, at(0), "to 2", children=children)], "w"
    )
    assert stale == []
    got = {x.key: x.state for x in store.occurrences(RUN)}
    assert got == {"post": S.EXPANDED, "post/a": S.PENDING, "post/b": S.PENDING}
    # a stale outcome inserts nothing
    store.add_occurrences(RUN, [occ("post2", 0, member=None)])
    [o2] = [x for x in store.claim(RUN, at(0), 10, at(5), "w") if x.key == "post2"]
    store.record(RUN, [Outcome(o2.key, o2.fence - 1, S.EXPANDED, at(0), "",
                               children=(occ("post2/a", 0),))], "w")  # fmt: skip
    assert store.get_occurrence(RUN, "post2/a") is None
