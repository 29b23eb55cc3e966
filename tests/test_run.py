"""`sop run`: the runner against the Program's own answers, on a virtual clock.

Run equals plan; gates decided on real metric values; DST; misfires; delivery outcomes (retry,
dead letter, uncertain, idempotent resend); member events; staff tasks.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sop.engine.core.schedule import local_midnight
from sop.engine.plan.timeline import PlanOptions, make_plan
from sop.engine.program import Program, run_lifecycle
from sop.engine.run.clock import VirtualClock
from sop.engine.run.ports import Capabilities, Delivery, SendResult, SendStatus
from sop.engine.run.runner import Coalesce, Runner, RunOptions
from sop.engine.run.service import ingest, parse_events, status
from sop.engine.run.sources import FileSource
from sop.engine.run.store import open_store
from sop.engine.run.store.base import OccurrenceState, Resolution, TaskState
from sop.engine.validate import load_playbook

from .conftest import PLAYBOOKS

SHIPPED = sorted(PLAYBOOKS.glob("*.yaml"))


class Sink:
    """A backend that records deliveries and answers what `answer` says."""

    def __init__(
        self,
        name: str = "sink",
        idempotent: bool = True,
        answer: Callable[[Delivery], SendResult] | None = None,
        rate: int | None = None,
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(idempotent=idempotent, rate_per_minute=rate)
        self.deliveries: list[Delivery] = []
        self.answer = answer or (lambda d: SendResult.ok())

    def send(self, delivery: Delivery) -> SendResult:
        self.deliveries.append(delivery)
        return self.answer(delivery)

    def close(self) -> None:
        pass

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.deliveries]


def program_of(path: Path | str) -> Program:
    res = load_playbook(str(path))
    assert res.playbook is not None, [d.message for d in res.diagnostics]
    return Program(res.playbook)


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def runner_for(program: Program, store_url: str, at: datetime, sink: Sink, **opts: object):
    store = open_store(store_url)
    backends = {b: sink for b in program.playbook.backends}
    options = RunOptions(seed=7, **opts)  # type: ignore[arg-type]
    return Runner(program, store, backends, VirtualClock(at), options=options)


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory:"
    return f"sqlite:///{tmp_path}/state.db?synchronous=NORMAL"


# -- run equals plan -------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_a_run_without_metrics_delivers_exactly_what_plan_lists(path: Path, store_url: str) -> None:
    program = program_of(path)
    tl = make_plan(program, PlanOptions(days=90, assume_gates="fail"))
    sink = Sink()
    runner = runner_for(program, store_url, tl.start, sink)
    runner.run(until=tl.end)
    planned = [o.key for o in tl.occurrences]
    # an occurrence that reaches a set of members read at its firing (a segment, a
    # leaderboard, `for_each`) is expanded into one per member: the planned key is in the books
    # as `expanded`, and its sends carry `key/member` (none here: the run has no members)
    states = [OccurrenceState.EXPANDED]
    expanded = {o.key for o in runner.store.occurrences(runner.run_id, states)}
    assert sorted([*sink.keys, *expanded]) == sorted(planned)
    assert len(set(sink.keys)) == len(sink.keys)  # nothing twice
    # each went out at its planned instant, with quiet hours applied the same way
    due = {o.key: o.at for o in tl.occurrences}
    for d in sink.deliveries:
        assert d.due_at == due[d.key]
    # and the stage timeline is the plan's
    stored = [(t.at, t.stage, t.event) for t in runner.store.transitions(runner.run_id)]
    assert stored == [(t.at, t.stage, t.event) for t in tl.transitions if t.at < tl.end]


def test_gates_pass_on_the_day_the_metrics_file_says(tmp_path: Path) -> None:
    """A metrics file meets each gate on a known day: the run's stages follow, with evidence."""
    path = PLAYBOOKS / "community-lifecycle.yaml"
    program = program_of(path)
    pb = program.playbook
    start = local_midnight(date(2026, 12, 1), program.tz)
    # survey_responses reaches 300 on Dec 10: prep's gate passes at the check after it
    csv = tmp_path / "m.csv"
    csv.write_text("date,survey_responses\n2026-12-05,120\n2026-12-10,320\n", encoding="utf-8")
    sink = Sink()
    store = open_store("memory:")
    runner = Runner(
        program,
        store,
        {b: sink for b in pb.backends},
        VirtualClock(start),
        [FileSource("m", str(csv), "csv")],
        RunOptions(seed=1),
    )
    until = start + timedelta(days=30)
    runner.run(until=until)
    passed = [t for t in store.transitions(runner.run_id) if t.event == "passed"]
    assert passed and passed[0].stage == "prep"
    # prep's minimum is 14 days; the value is there from Dec 11 00:00 on, so it passes at the
    # first check allowed: the lifecycle oracle with the same knowledge agrees
    known = local_midnight(date(2026, 12, 11), program.tz)

    def oracle(stage, st, now):  # type: ignore[no-untyped-def]
        return stage.id == "prep" and now >= known

    lc = run_lifecycle(program, start, 30, oracle)
    expected = [(t.at, t.stage, t.event) for t in lc.transitions if t.at < until]
    got = [(t.at, t.stage, t.event) for t in store.transitions(runner.run_id)]
    assert got == expected
    assert passed[0].evidence == {"survey_responses": 320.0}
    evals = store.gate_evaluations(runner.run_id)
    assert any(not e.holds and e.values.get("survey_responses") == 120.0 for e in evals)


# -- DST ---------------------------------------------------------------------------------------

DST = """\
playbook: dst
timezone: {tz}
roles: {{ops: {{headcount: 1}}}}
backends: {{group: {{type: console}}}}
defaults: {{backend: group, owner: ops}}
stages:
  only:
    duration: {{max: 400d}}
    actions:
      daily: {{do: post, cron: "30 2 * * *", text: hi}}
      early: {{do: post, cron: "30 1 * * *", text: hi}}
"""


@pytest.mark.parametrize(
    ("tz", "spring", "fall"),
    [
        ("Europe/Berlin", date(2026, 3, 29), date(2026, 10, 25)),
        ("America/New_York", date(2026, 3, 8), date(2026, 11, 1)),
    ],
)
def test_a_daily_action_fires_once_a_day_over_both_switch_days(
    tmp_path: Path, tz: str, spring: date, fall: date
) -> None:
    program = program_of(write(tmp_path, DST.format(tz=tz)))
    zone = ZoneInfo(tz)
    for switch in (spring, fall):
        sink = Sink()
        start = local_midnight(switch - timedelta(days=2), zone)
        runner = runner_for(program, "memory:", start, sink, start=switch - timedelta(days=2))
        runner.run(until=local_midnight(switch + timedelta(days=3), zone))
        for action in ("daily", "early"):
            days = [d.due_at.astimezone(zone).date() for d in sink.deliveries if d.action == action]
            assert days == [switch + timedelta(days=i) for i in range(-2, 3)], (action, switch)


# -- misfires ----------------------------------------------------------------------------------

EVERY_HOUR = """\
playbook: hourly
timezone: Asia/Shanghai
roles: {ops: {headcount: 1}}
backends: {group: {type: console}}
defaults: {backend: group, owner: ops}
stages:
  only:
    duration: {max: 400d}
    actions:
      ping: {do: post, cron: "0 * * * *", text: ping}
"""


@pytest.mark.parametrize(
    ("policy", "late"),
    [(Coalesce.LATEST, 1), (Coalesce.ALL, 44), (Coalesce.SKIP, 0)],
)
def test_missed_firings_follow_the_coalesce_policy_and_are_recorded(
    tmp_path: Path, policy: Coalesce, late: int
) -> None:
    """A runner stopped for two days: firings within the grace go out, missed ones per policy."""
    program = program_of(write(tmp_path, EVERY_HOUR))
    start = local_midnight(date(2027, 1, 4), program.tz)
    sink = Sink()
    runner = runner_for(program, "memory:", start, sink, grace=timedelta(hours=3), coalesce=policy)
    runner.run(until=start + timedelta(hours=1))  # 00:00 sent
    assert sink.keys == [k for k in sink.keys if k.endswith("T16:00:00Z")]
    runner.clock.sleep_until(start + timedelta(days=2))  # the machine was off
    runner.tick()
    states = runner.store.count_occurrences(runner.run_id)
    skipped = runner.store.occurrences(runner.run_id, [OccurrenceState.SKIPPED])
    within_grace = 3  # 21:00, 22:00, 23:00 of the second day; then the 00:00 of now
    assert len(sink.deliveries) == 1 + within_grace + late + 1
    assert states.get(OccurrenceState.SKIPPED, 0) == 44 - late
    assert all("missed" in o.reason and str(policy) in o.reason for o in skipped)
    late_ones = [o for o in runner.store.occurrences(runner.run_id, [OccurrenceState.SENT])
                 if "sent late" in o.reason]  # fmt: skip
    assert len(late_ones) == late


# -- delivery outcomes -------------------------------------------------------------------------

ONE_POST = """\
playbook: one
timezone: Asia/Shanghai
roles: {ops: {headcount: 1}}
backends:
  group: {type: console}
  staff: {type: tasks}
defaults: {backend: group, staff_backend: staff, owner: ops, retries: 2}
stages:
  only:
    duration: {max: 30d}
    actions:
      hello: {do: post, day: 0, time: "10:00", text: 你好}
      review: {do: task, day: 0, time: "11:00", text: 复盘}
"""


def one_post(tmp_path: Path, sink: Sink, store_url: str = "memory:"):
    program = program_of(write(tmp_path, ONE_POST))
    start = local_midnight(date(2027, 1, 4), program.tz)
    store = open_store(store_url)
    from sop.engine.run.backends.tasks import create as tasks
    from sop.engine.run.ports import BackendConfig

    backends = {"group": sink, "staff": tasks(BackendConfig("staff", "tasks"), {})}
    runner = Runner(program, store, backends, VirtualClock(start), options=RunOptions(seed=3))
    return runner, start


def test_a_transient_failure_is_retried_with_backoff_then_sent(tmp_path: Path) -> None:
    answers = iter([SendResult.retry("HTTP 500"), SendResult.retry("429", retry_after=600)])
    sink = Sink(answer=lambda d: next(answers, SendResult.ok()))
    runner, start = one_post(tmp_path, sink)
    runner.run(until=start + timedelta(days=1))
    assert len(sink.deliveries) == 3
    assert [d.attempt for d in sink.deliveries] == [1, 2, 3]
    gap = sink.deliveries[2].key and None
    key = sink.deliveries[0].key
    attempts = runner.store.attempts(runner.run_id, key)
    assert [a.state for a in attempts] == ["retry", "retry", "sent"]
    assert (attempts[2].at - attempts[1].at).total_seconds() >= 600  # Retry-After honoured
    assert gap is None


def test_out_of_retries_is_a_dead_letter_with_a_task_for_the_owner(tmp_path: Path) -> None:
    sink = Sink(answer=lambda d: SendResult.retry("HTTP 503"))
    runner, start = one_post(tmp_path, sink)
    runner.run(until=start + timedelta(days=1))
    assert len(sink.deliveries) == 3  # the first try and 2 retries
    dead = runner.store.occurrences(runner.run_id, [OccurrenceState.DEAD])
    assert [o.action for o in dead] == ["hello"]
    assert "out of retries" in dead[0].reason
    alerts = [t for t in runner.store.tasks(runner.run_id) if t.id.startswith("dead-letter:")]
    assert alerts and alerts[0].role == "ops"
    st = status(runner.program, runner.store, runner.run_id, start + timedelta(days=1))
    assert st.attention and [o.key for o in st.dead] == [dead[0].key]
    # the operator fixes it and asks for a resend
    runner.store.resolve(runner.run_id, dead[0].key, Resolution.RESEND, runner.clock.now(), "me")
    sink.answer = lambda d: SendResult.ok()
    runner.tick()
    assert runner.store.get_occurrence(runner.run_id, dead[0].key).state == "sent"  # type: ignore[union-attr]


def test_a_permanent_failure_is_not_retried(tmp_path: Path) -> None:
    sink = Sink(answer=lambda d: SendResult.permanent("HTTP 400"))
    runner, start = one_post(tmp_path, sink)
    runner.run(until=start + timedelta(days=1))
    assert len(sink.deliveries) == 1
    assert runner.store.occurrences(runner.run_id, [OccurrenceState.DEAD])


def test_an_uncertain_send_is_held_unless_the_backend_is_idempotent(tmp_path: Path) -> None:
    sink = Sink(idempotent=False, answer=lambda d: SendResult.uncertain("read timeout"))
    runner, start = one_post(tmp_path, sink)
    runner.run(until=start + timedelta(days=1))
    assert len(sink.deliveries) == 1
    held = runner.store.occurrences(runner.run_id, [OccurrenceState.UNCERTAIN])
    assert [o.action for o in held] == ["hello"]
    calls = iter([SendResult.uncertain("read timeout")])
    sink2 = Sink(idempotent=True, answer=lambda d: next(calls, SendResult.ok()))
    runner2, start2 = one_post(tmp_path, sink2)
    runner2.run(until=start2 + timedelta(days=1))
    assert len(sink2.deliveries) == 2  # resent: the platform drops the repeat
    assert not runner2.store.occurrences(runner2.run_id, [OccurrenceState.UNCERTAIN])


def test_a_claim_whose_runner_died_becomes_uncertain_and_an_operator_decides(
    tmp_path: Path, store_url: str
) -> None:
    sink = Sink(idempotent=False)
    runner, start = one_post(tmp_path, sink, store_url)
    wall = [datetime(2030, 1, 1, tzinfo=ZoneInfo("UTC"))]
    runner.lease_clock = lambda: wall[0]  # leases run on the wall clock: a fake one here
    runner.clock.sleep_until(start + timedelta(hours=10, minutes=1))
    runner.store.add_occurrences(runner.run_id, [])  # the store is open
    from sop.engine.run.runner import TickReport

    runner._advance(runner.clock.now(), TickReport(start))  # inserted, not yet sent
    now = runner.clock.now()
    claimed = runner.store.claim(runner.run_id, now, 10, wall[0] + timedelta(minutes=5), "dead")
    assert [o.action for o in claimed] == ["hello"]
    # the runner holding it is gone (kill -9); another one starts after the lease ran out
    report = runner.tick()
    assert report.uncertain == 0 and sink.deliveries == []  # the lease still holds
    wall[0] += timedelta(minutes=6)
    report = runner.tick()
    assert report.uncertain == 1 and sink.deliveries == []
    key = claimed[0].key
    assert runner.store.get_occurrence(runner.run_id, key).state == "uncertain"  # type: ignore[union-attr]
    # the late runner's outcome is refused: its fencing token is stale
    from sop.engine.run.store.base import Outcome

    stale = runner.store.record(
        runner.run_id, [Outcome(key, claimed[0].fence, OccurrenceState.SENT, now)], "dead"
    )
    assert stale == [key]
    runner.store.resolve(runner.run_id, key, Resolution.SENT, runner.clock.now(), "ops-lead")
    assert runner.store.get_occurrence(runner.run_id, key).state == "sent"  # type: ignore[union-attr]
    assert any(
        e.action == "resolve.sent" and e.actor == "ops-lead"
        for e in runner.store.audit_log(runner.run_id)
    )


def test_a_rate_limited_backend_defers_without_spending_retries(tmp_path: Path) -> None:
    text = ONE_POST.replace(
        'hello: {do: post, day: 0, time: "10:00", text: 你好}',
        "\n      ".join(f'h{i}: {{do: post, day: 0, time: "10:00", text: x}}' for i in range(5)),
    )
    program = program_of(write(tmp_path, text))
    start = local_midnight(date(2027, 1, 4), program.tz)
    sink = Sink(rate=2)
    runner = Runner(program, open_store("memory:"), {"group": sink, "staff": Sink("staff")},
                    VirtualClock(start), options=RunOptions(seed=1))  # fmt: skip
    runner.run(until=start + timedelta(days=1))
    assert len(sink.deliveries) == 5
    assert all(d.attempt == 1 for d in sink.deliveries)
    times = sorted(d.due_at for d in sink.deliveries)
    assert times[0] == times[-1]  # all due at 10:00 ...
    sent = sorted(a.at for k in sink.keys for a in runner.store.attempts(runner.run_id, k))
    assert (sent[-1] - sent[0]).total_seconds() >= 30  # ... but 2 a minute went out


def test_staff_tasks_open_and_can_be_done_postponed_and_escalated(tmp_path: Path) -> None:
    sink = Sink()
    runner, start = one_post(tmp_path, sink)
    runner.run(until=start + timedelta(hours=11, minutes=30))
    [task] = runner.store.tasks(runner.run_id)
    assert task.action == "review" and task.role == "ops" and task.text == "复盘"
    assert task.state == TaskState.OPEN and task.escalated_at is None
    later = start + timedelta(hours=13)
    assert runner.store.postpone_task(runner.run_id, task.id, later, "me")
    runner.run(until=start + timedelta(hours=14, minutes=30))
    [task] = runner.store.tasks(runner.run_id)
    assert task.escalated_at is None  # not yet: 2 hours after its new time
    runner.run(until=start + timedelta(hours=16))
    [task] = runner.store.tasks(runner.run_id)
    assert task.escalated_at is not None  # overdue: escalated once
    assert runner.store.complete_task(runner.run_id, task.id, runner.clock.now(), "me")
    assert not runner.store.complete_task(runner.run_id, task.id, runner.clock.now(), "me")


# -- member events -----------------------------------------------------------------------------


def test_member_events_fire_the_programs_rules(tmp_path: Path, store_url: str) -> None:
    program = program_of(PLAYBOOKS / "community-lifecycle.yaml")
    start = local_midnight(date(2026, 12, 1), program.tz)
    sink = Sink()
    runner = runner_for(program, store_url, start, sink)
    runner.ensure_run()
    t = start + timedelta(days=2, hours=10)
    events = parse_events(
        program,
        [
            {"id": "e1", "type": "joined", "member": "m1", "at": t.isoformat(),
             "data": {"name": "小王"}},
            {"id": "e1", "type": "joined", "member": "m1", "at": t.isoformat()},
            {"id": "e2", "type": "member.joined", "member": "m2", "at": t.isoformat()},
            {"id": "e3", "type": "message", "member": "m2",
             "at": (t + timedelta(hours=30)).isoformat()},
        ],
        t,
    )  # fmt: skip
    flags = ingest(program, runner.store, runner.run_id, events, "test")
    assert flags == [True, False, True, True]
    runner.run(until=start + timedelta(days=10))
    by_member: dict[str | None, list[str]] = {}
    for d in sink.deliveries:
        by_member.setdefault(d.member, []).append(d.action)
    from sop.engine.run.runner import stage_clock

    active = stage_clock(runner.lifecycle(runner.ensure_run()), t).active(t)
    assert active is not None
    expected = program.on_event(active, "member.joined", "m1", t)  # the Program's answer
    assert {o.action for o in expected} <= set(by_member["m1"])
    # silence counts from the last time a member spoke (or joined): m2 spoke 30 h later
    [rule] = [r for r in program.events if r.triggers[0].event == "member.silent"]
    span = rule.triggers[0].value
    assert isinstance(span, timedelta)
    nudges = {d.member: d.scheduled_at for d in sink.deliveries if d.action == rule.action.id}
    assert nudges == {"m1": t + span, "m2": t + timedelta(hours=30) + span}
    texts = [d.text for d in sink.deliveries if d.member == "m1"]
    assert any("小王" in x for x in texts)  # the member's name from the event's data


def test_a_member_who_left_gets_nothing_more(tmp_path: Path) -> None:
    program = program_of(PLAYBOOKS / "community-lifecycle.yaml")
    start = local_midnight(date(2026, 12, 1), program.tz)
    sink = Sink()
    runner = runner_for(program, "memory:", start, sink)
    runner.ensure_run()
    t = start + timedelta(days=1, hours=23)  # joined at 23:00: quiet hours hold the welcome
    ev = parse_events(program, [
        {"id": "j", "type": "joined", "member": "m9", "at": t.isoformat()},
        {"id": "l", "type": "left", "member": "m9", "at": (t + timedelta(hours=1)).isoformat()},
    ], t)  # fmt: skip
    ingest(program, runner.store, runner.run_id, ev, "test")
    runner.run(until=start + timedelta(days=6))
    left = t + timedelta(hours=1)
    # the staff's welcome call went out at 23:00; nothing after the member left at 00:00
    assert all(d.due_at < left for d in sink.deliveries if d.member == "m9")
    skipped = runner.store.occurrences(runner.run_id, [OccurrenceState.SKIPPED])
    assert "welcome" in {o.action for o in skipped}  # held by quiet hours until 08:00
    assert all(o.reason == "the member has left" for o in skipped)


def test_metrics_from_events_use_the_shared_definitions(tmp_path: Path) -> None:
    program = program_of(PLAYBOOKS / "community-lifecycle.yaml")
    start = local_midnight(date(2026, 12, 1), program.tz)
    runner = runner_for(program, "memory:", start, Sink())
    runner.ensure_run()
    t = start + timedelta(hours=12)
    items = [{"id": f"j{i}", "type": "joined", "member": f"m{i}", "at": t.isoformat()}
             for i in range(10)]  # fmt: skip
    items += [{"id": f"s{i}", "type": "message", "member": f"m{i}",
               "at": (t + timedelta(hours=1)).isoformat()} for i in range(3)]  # fmt: skip
    items += [
        {"id": "l0", "type": "left", "member": "m9", "at": (t + timedelta(hours=2)).isoformat()}
    ]
    items += [{"id": "p0", "type": "payment", "member": "m9", "at": t.isoformat()}]
    ingest(program, runner.store, runner.run_id, parse_events(program, items, t), "test")
    run = runner.ensure_run()
    v = runner.day_values(run, date(2026, 12, 1), start + timedelta(days=1))
    assert v["members"] == 9 and v["new_members"] == 10 and v["daily_speakers"] == 3
    assert v["daily_speak_rate"] == pytest.approx(3 / 9)
    assert v["churn_rate"] == pytest.approx(1 / 10)
    assert v["conversion_rate"] == pytest.approx(1 / 10)  # departed payers count
    assert v["paying_members"] == 0
    import math

    assert math.isnan(v["retention_d7"])  # no cohort is 7 days old: undefined, never 0
    assert v["community_age"] == 0


def test_status_and_json_shapes(tmp_path: Path) -> None:
    sink = Sink()
    runner, start = one_post(tmp_path, sink)
    runner.run(until=start + timedelta(days=2))
    st = status(runner.program, runner.store, runner.run_id, runner.clock.now())
    data = json.loads(json.dumps(st.as_dict()))
    assert data["run"] == "one" and data["occurrences"]["sent"] == 2
    assert data["open_tasks"][0]["action"] == "review"
    assert data["stages"][0]["stage"] == "only"
    assert (data["open_tasks_total"], data["dead_letters_total"], data["uncertain_total"]) == (
        1, 0, 0,
    )  # fmt: skip


def test_status_shows_the_first_of_each_list_and_how_many_there_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sop.engine.run import render, service
    from sop.engine.run.store.base import NewOccurrence, Outcome

    runner, start = one_post(tmp_path, Sink())
    runner.ensure_run()
    store, rid = runner.store, runner.run_id
    items = [
        NewOccurrence(f"dead/{i}", "hello", "only", "post", None, "group", "ops", "group",
                      start + timedelta(minutes=i), start + timedelta(minutes=i))
        for i in range(5)
    ]  # fmt: skip
    store.add_occurrences(rid, items)
    claimed = store.claim(rid, start + timedelta(hours=1), 10, start + timedelta(hours=2), "w")
    dead = [Outcome(o.key, o.fence, OccurrenceState.DEAD, o.due_at, "HTTP 400") for o in claimed]
    store.record(rid, dead, "w")
    monkeypatch.setattr(service, "DEAD_LIMIT", 2)
    st = status(runner.program, store, rid, start + timedelta(hours=3))
    data = st.as_dict()
    assert [o["key"] for o in data["dead_letters"]] == ["dead/0", "dead/1"]  # the earliest due
    assert data["dead_letters_total"] == 5 and data["occurrences"] == {"dead": 5}
    assert st.attention
    assert "  dead letters (5):\n" in render.status_text(st)


def test_a_gate_reads_its_comparisons_whichever_side_the_metric_is_on() -> None:
    from sop.engine.core import expr as ex
    from sop.engine.program.gates import Comparison, comparisons
    from sop.engine.run.service import GateStatus

    node = ex.parse("200 <= members and churn_rate < 5% or members > paying_members")
    assert comparisons(node) == [
        Comparison("members", ">=", 200.0),
        Comparison("churn_rate", "<", 0.05),
        Comparison("members", ">", None),  # the other side reads a metric: no threshold
    ]
    terms = tuple(comparisons(node)[:2])
    g = GateStatus("s", "", False, None, {"members": 150.0, "churn_rate": 0.08}, {}, "", terms)
    assert g.shortfall("members") == 50.0  # needs 50 more
    assert g.shortfall("churn_rate") == pytest.approx(-0.03)  # needs 0.03 less
    met = GateStatus("s", "", True, None, {"members": 250.0, "churn_rate": 0.01}, {}, "", terms)
    assert met.shortfall("members") is None and met.shortfall("churn_rate") is None


def test_tiers_move_at_the_review_and_after_silence_by_the_shared_rules(tmp_path: Path) -> None:
    """One post earns `core` at the monthly review (1st, 10:00); 14 silent days lose it again."""
    program = program_of(PLAYBOOKS / "community-lifecycle.yaml")
    start = local_midnight(date(2026, 12, 1), program.tz)
    sink = Sink()
    runner = runner_for(program, "memory:", start, sink)
    runner.ensure_run()
    t = start + timedelta(days=25, hours=10)  # Dec 26
    items = [
        {"id": "j1", "type": "joined", "member": "poster", "at": t.isoformat()},
        {
            "id": "p1",
            "type": "post",
            "member": "poster",
            "at": (t + timedelta(hours=1)).isoformat(),
        },
        {"id": "j2", "type": "joined", "member": "lurker", "at": t.isoformat()},
    ]
    ingest(program, runner.store, runner.run_id, parse_events(program, items, t), "test")
    runner.run(until=local_midnight(date(2027, 1, 2), program.tz) + timedelta(hours=1))
    members = runner.store.get_members(runner.run_id, ["poster", "lurker"])
    assert members["poster"].tier == "core"  # reviewed on Jan 1, checked at Jan 2 00:00
    assert members["lurker"].tier in (None, "normal")
    changes = runner.store.occurrences(runner.run_id)
    tier_rules = {
        r.action.id for r in program.events if r.triggers[0].event == "member.tier_changed"
    }
    fired = {o.action for o in changes if o.member == "poster"} & tier_rules
    assert fired == tier_rules or not tier_rules
    # silent since Dec 26 11:00: 14 days later the daily check demotes to normal
    runner.run(until=local_midnight(date(2027, 1, 10), program.tz) + timedelta(hours=1))
    assert runner.store.get_members(runner.run_id, ["poster"])["poster"].tier == "normal"


def test_a_send_awaiting_staff_confirmation_is_a_task_completed_by_the_platform(
    tmp_path: Path,
) -> None:
    """WeCom's customer-group mass sends go out once the owner confirms them in the client."""
    confirmed: dict[str, bool] = {}

    class MassSend(Sink):
        def send(self, delivery: Delivery) -> SendResult:
            self.deliveries.append(delivery)
            return SendResult(SendStatus.OK, "awaiting the owner", None, "msg-1", True)

        def confirmation(self, remote_id: str) -> bool | None:
            return confirmed.get(remote_id, False)

    sink = MassSend()
    runner, start = one_post(tmp_path, sink)
    from dataclasses import replace

    runner.options = replace(runner.options, confirm_poll=timedelta(0))  # ask at every tick
    runner.run(until=start + timedelta(hours=10, minutes=30))
    [task] = [t for t in runner.store.tasks(runner.run_id) if t.action == "hello"]
    assert task.remote_id == "msg-1" and task.backend == "group" and task.state == TaskState.OPEN
    confirmed["msg-1"] = True
    runner.run(until=start + timedelta(hours=11))
    [task] = [t for t in runner.store.tasks(runner.run_id) if t.action == "hello"]
    assert task.state == TaskState.DONE and task.done_by == "platform:group"


def test_an_older_store_is_migrated_forward(tmp_path: Path) -> None:
    import sqlite3

    from sop.engine.run.store.sql import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:  # a store written by the first release
        c.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT)")
        for statement in MIGRATIONS[0]:
            c.execute(statement.replace("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT"))
        c.execute("INSERT INTO schema_migrations VALUES (1, 0)")
    store = open_store(f"sqlite:///{path}")
    assert store.schema_version() == SCHEMA_VERSION >= 2
    with sqlite3.connect(path) as c:
        columns = {r[1] for r in c.execute("PRAGMA table_info(tasks)")}
    assert {"remote_id", "backend"} <= columns


def test_a_text_sent_as_several_messages_takes_a_rate_token_for_each(tmp_path: Path) -> None:
    text = ONE_POST.replace(
        'hello: {do: post, day: 0, time: "10:00", text: 你好}',
        "\n      ".join(f'h{i}: {{do: post, day: 0, time: "10:00", text: x}}' for i in range(4)),
    )
    program = program_of(write(tmp_path, text))
    start = local_midnight(date(2027, 1, 4), program.tz)

    class Split(Sink):
        def cost(self, delivery: Delivery) -> int:
            return 3  # each text goes out in three parts

    sink = Split(rate=6)  # six platform messages a minute: two deliveries
    runner = Runner(program, open_store("memory:"), {"group": sink, "staff": Sink("staff")},
                    VirtualClock(start), options=RunOptions(seed=1))  # fmt: skip
    runner.run(until=start + timedelta(days=1))
    sent = sorted(a.at for k in sink.keys for a in runner.store.attempts(runner.run_id, k))
    assert len(sent) == 4
    assert sent[1] == sent[0]  # the first two went at once (a full bucket: six tokens)
    assert (sent[2] - sent[1]).total_seconds() >= 29  # then one delivery each 30 s


def test_a_platform_allowance_is_counted_in_the_store_and_never_exceeded(tmp_path: Path) -> None:
    """WeCom lets a customer group receive so many mass sends a period; beyond it, skipped."""
    from sop.engine.run.ports import Quota

    text = ONE_POST.replace(
        'hello: {do: post, day: 0, time: "10:00", text: 你好}',
        'hello: {do: post, cron: "0 10,11 * * *", text: 你好}',
    )
    program = program_of(write(tmp_path, text))
    start = local_midnight(date(2027, 1, 4), program.tz)

    class Groups(Sink):
        def quotas(self, delivery: Delivery, now: datetime) -> list[Quota]:
            return [Quota("chat-1", f"{now.astimezone(program.tz):%Y-%m-%d}", 1)]  # 1 a day

    sink = Groups()
    runner = Runner(program, open_store("memory:"), {"group": sink, "staff": Sink("staff")},
                    VirtualClock(start), options=RunOptions(seed=1))  # fmt: skip
    runner.run(until=start + timedelta(days=2))
    assert [d.scheduled_at.hour for d in sink.deliveries] == [10, 10]  # one a day, the first
    skipped = runner.store.occurrences(runner.run_id, [OccurrenceState.SKIPPED])
    assert [o.scheduled_at.astimezone(program.tz).hour for o in skipped] == [11, 11]
    assert all("allowance" in o.reason and "chat-1" in o.reason for o in skipped)


def test_an_if_guard_reads_the_last_closed_days_metrics(tmp_path: Path) -> None:
    text = ONE_POST.replace(
        'hello: {do: post, day: 0, time: "10:00", text: 你好}',
        'hello: {do: post, cron: "0 10 * * *", text: 你好, if: "members >= 1"}',
    )
    program = program_of(write(tmp_path, text))
    start = local_midnight(date(2027, 1, 4), program.tz)
    sink = Sink()
    runner = runner_for(program, "memory:", start, sink)
    runner.ensure_run()
    t = start + timedelta(days=1, hours=12)  # a member joins on the second day
    ingest(program, runner.store, runner.run_id,
           parse_events(program, [{"id": "j", "type": "joined", "member": "m",
                                   "at": t.isoformat()}], t), "test")  # fmt: skip
    runner.run(until=start + timedelta(days=3, hours=11))
    sent = [
        d.scheduled_at.astimezone(program.tz).day for d in sink.deliveries if d.action == "hello"
    ]
    assert sent == [6, 7]  # from the third day: the check after the second counted the member
    skipped = [o for o in runner.store.occurrences(runner.run_id, [OccurrenceState.SKIPPED])]
    assert [o.scheduled_at.astimezone(program.tz).day for o in skipped] == [4, 5]
    assert all("if: members >= 1 does not hold" in o.reason for o in skipped)


def test_an_action_chained_after_a_guarded_one_obeys_its_guard_as_in_simulate(
    tmp_path: Path,
) -> None:
    """Both interpreters read `lang.semantics.guard_chain`: the follow-up of a post whose `if:`
    failed does not go out either."""
    from sop.engine.lang.semantics import guard_chain

    text = ONE_POST.replace(
        'hello: {do: post, day: 0, time: "10:00", text: 你好}',
        'hello: {do: post, day: 0, time: "10:00", text: 你好, if: "members >= 1"}\n'
        "      again: {do: post, after: hello, delay: 1h, text: 再见}",
    )
    program = program_of(write(tmp_path, text))
    actions = program.playbook.actions
    assert [x.id for x in guard_chain(actions, actions["again"])] == ["hello"]
    start = local_midnight(date(2027, 1, 4), program.tz)
    sink = Sink()
    runner = runner_for(program, "memory:", start, sink)
    runner.run(until=start + timedelta(days=1))
    assert [d.action for d in sink.deliveries if d.action in ("hello", "again")] == []
    skipped = {o.action for o in runner.store.occurrences(runner.run_id, [OccurrenceState.SKIPPED])}
    assert {"hello", "again"} <= skipped
