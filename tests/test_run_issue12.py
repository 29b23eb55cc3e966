"""`sop run` for issue 12: members with attributes, segments, `where:`, `for_each`, leaderboards,
teams, milestones, points, admission, incidents, exits with `for:` and windows, targets.

One inline playbook uses every construct; each test records member events, runs the runner on a
virtual clock and reads what the store holds. The rules themselves are engine/program's (the
simulator's): these tests hold the runtime to calling them at the right moments, durably.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sop.engine.core.schedule import local_midnight
from sop.engine.program import Program
from sop.engine.program import history as H
from sop.engine.program.lifecycle import exits_of
from sop.engine.run import incidents as I
from sop.engine.run.backends.tasks import create as tasks_backend
from sop.engine.run.clock import VirtualClock
from sop.engine.run.errors import EventError, RunError
from sop.engine.run.observed import stored_history
from sop.engine.run.ports import BackendConfig, Capabilities, Delivery, SendResult
from sop.engine.run.render import status_text
from sop.engine.run.runner import Runner, RunOptions
from sop.engine.run.service import (
    decide_application,
    member_view,
    parse_events,
    read_members_csv,
    record_events,
    status,
)
from sop.engine.run.store import open_store
from sop.engine.run.store.base import (
    ApplicationState,
    IncidentState,
    OccurrenceState,
    PointsKind,
    StateStore,
    TaskState,
)
from sop.engine.validate import load_playbook

PLAYBOOK = """\
playbook: t12
timezone: Asia/Shanghai
community: {type: conversion, platform: wecom-group, start: 2027-01-04}
roles: {ops: {headcount: 1}, lead: {headcount: 1}}
backends: {group: {type: console}, staff: {type: tasks}}
defaults: {backend: group, staff_backend: staff, owner: ops}
members:
  attributes:
    city: {type: string, title: 城市}
    grade: {type: enum, values: [小学, 初中], title: 年级}
    phone: {type: string, title: 手机, pii: true}
    score: {type: number, title: 分数}
    note: {type: string, title: 备注}
channels:
  store: {title: 门店}
  invite: {title: 邀请, referral: true}
segments:
  beijing: {title: 北京, when: city == "北京", size: 5}
admission:
  require: [note]
  approve: source == "store"
  review: {owner: lead, within: 24h}
points:
  earn: {checkin: 5, invite: 50}
  expire: 10d
  redeem:
    mug: {title: 杯子, cost: 20, stock: 1}
teams:
  names: [红, 蓝]
  assign: round-robin
  score: checkins
metrics:
  beijing_share: {unit: ratio, count: {members: city == "北京"}, per: {members: true}}
  weekly_checkins: {unit: count, count: {events: checkin, window: 7d}}
targets:
  members: {at_least: 4, by: 10d}
incidents:
  quiet:
    title: 安静
    owner: ops
    detect: "members >= 1 and avg(daily_speak_rate, 2d) < 50%"
    steps:
      - {do: post, text: 大家好}
      - {alert: ops, within: 30m}
      - {escalate: lead, after: 4h}
routines:
  welcome: {on: member.joined, do: message, to: member, text: hi}
  invitee-pack: {on: member.joined, where: source == "invite", do: message, to: member, text: pack}
  bj-meetup: {cron: "0 19 * * 5", do: post, to: "segment:beijing", text: meetup}
  care:
    {cron: "0 10 * * 3", do: task, owner: ops, for_each: "segment:beijing",
     text: "call {{ member.name }} at {{ member.phone }}"}
  top-inviters:
    {cron: "0 20 * * 6", do: reward, to: {top: 1, by: invites}, text: top,
     reward: {item: gift, points: 30}}
  team-win: {cron: "0 21 * * 6", do: reward, to: {top: 1, by: checkins, teams: true}, text: win}
  score-10: {on: member.milestone, counter: score, reaches: 10, do: message, to: member, text: ten}
  approved: {on: member.approved, do: message, to: member, text: ok}
  rejected: {on: member.rejected, do: message, to: member, text: no}
  mug-ship: {on: member.redeemed, item: mug, do: task, owner: ops, text: ship}
stages:
  launch:
    title: 启动
    duration: {min: 2d, max: 40d}
    exits:
      - {id: success, when: "members >= 3 and avg(daily_speak_rate, 2d) >= 50%", for: 2d}
      - {id: decline, when: days_in_stage >= 20, goto: wind-down}
  grow:
    after: launch
    title: 成长
    duration: {max: 60d}
  wind-down:
    title: 收尾
    after: grow
    optional: true
    duration: {max: 10d}
"""


class Sink:
    """The group's backend: records every delivery."""

    name = "group"
    capabilities = Capabilities(idempotent=True)

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def send(self, d: Delivery) -> SendResult:
        self.deliveries.append(d)
        return SendResult.ok()

    def close(self) -> None:
        pass

    def of(self, action: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.action == action]


class Community:
    """A run of the playbook on a virtual clock, and member events recorded into it."""

    def __init__(self, tmp_path: Path, url: str = "memory:", text: str = PLAYBOOK) -> None:
        path = tmp_path / "p.yaml"
        path.write_text(text, encoding="utf-8")
        res = load_playbook(str(path))
        assert res.playbook is not None, [d.message for d in res.diagnostics]
        self.program = Program(res.playbook)
        self.url = url
        self.store: StateStore = open_store(url)
        self.sink = Sink()
        self.t0 = local_midnight(date(2027, 1, 4), self.program.tz)  # a Monday
        self.clock = VirtualClock(self.t0)
        self.runner = self.new_runner()
        self.runner.tick()
        self.n = 0

    def new_runner(self) -> Runner:
        backends = {"group": self.sink, "staff": tasks_backend(BackendConfig("staff", "tasks"), {})}
        return Runner(self.program, self.store, backends, self.clock, options=RunOptions(seed=1))

    def at(self, days: float, hours: float = 0) -> datetime:
        return self.t0 + timedelta(days=days, hours=hours)

    def ev(self, kind: str, member: str, days: float, hours: float = 9, **fields: Any) -> Any:
        """Record one event (`attributes=`, `data=`) at day `days`, hour `hours`."""
        self.n += 1
        obj = {"id": f"e{self.n}", "type": kind, "member": member,
               "at": self.at(days, hours).isoformat(), **fields}  # fmt: skip
        events = parse_events(self.program, [obj], self.at(days, hours))
        return record_events(self.program, self.store, "t12", events, "test")

    def run_until(self, days: float, hours: float = 0) -> None:
        self.runner.run(until=self.at(days, hours))

    def occurrences(self, action: str) -> list[Any]:
        return [o for o in self.store.occurrences("t12") if o.action == action]

    def members(self, *ids: str) -> dict[str, Any]:
        return self.store.get_members("t12", list(ids))


@pytest.fixture
def community(tmp_path: Path) -> Community:
    return Community(tmp_path)


# -- attributes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"type": "joined", "attributes": {"grade": "大学"}}, "attributes.grade"),
        ({"type": "update", "attributes": {"score": "many"}}, "attributes.score"),
        ({"type": "update", "attributes": {"height": 1}}, "attributes.height"),
        ({"type": "joined", "attributes": {"source": "tv"}}, "attributes.source"),
        ({"type": "joined", "attributes": {"points": 100}}, "attributes.points"),
        ({"type": "apply", "attributes": {"city": "北京"}}, "attributes.note"),
        ({"type": "message", "attributes": {"city": "北京"}}, "attributes"),
        ({"type": "redeem", "data": {"item": "car"}}, "data.item"),
    ],
)
def test_an_event_that_breaks_the_declared_attributes_is_refused_naming_the_field(
    community: Community, obj: dict[str, Any], field: str
) -> None:
    with pytest.raises(EventError) as e:
        parse_events(community.program, [{"member": "m1", **obj}], community.t0, False)
    assert e.value.field == field


def test_attributes_arrive_typed_and_a_pii_value_is_never_shown(community: Community) -> None:
    community.ev("joined", "m1", 0, attributes={"city": "北京", "phone": "13800001111"},
                 data={"name": "Lin", "score": "7"})  # fmt: skip
    m = community.members("m1")["m1"]
    assert m.attributes["city"] == "北京" and m.attributes["score"] == 7.0  # text read as a number
    assert m.attributes["name"] == "Lin"  # what the platform says is kept as it was
    shown = json.dumps(
        member_view(community.program, community.store, "t12", "m1"), ensure_ascii=False
    )
    assert "13800001111" not in shown and "•••" in shown


def test_a_members_csv_is_all_or_nothing_with_each_bad_cell_located(community: Community) -> None:
    bad = "member_id,city,grade,score\nm1,北京,小学,3\nm2,上海,大学,x\nm3,,,\n"
    events, problems = read_members_csv(community.program, bad, community.t0, "f1")
    assert {(p.line, p.column) for p in problems} == {(3, 3), (3, 4)}
    good = "member_id,city,grade\nm1,北京,小学\nm2,上海,初中\n"
    events, problems = read_members_csv(community.program, good, community.t0, "f2")
    assert problems == []
    assert record_events(community.program, community.store, "t12", events, "t").accepted == 2
    assert record_events(community.program, community.store, "t12", events, "t").duplicates == 2
    got = community.members("m1", "m2")
    assert got["m1"].attributes["grade"] == "小学" and got["m2"].attributes["city"] == "上海"
    assert got["m1"].joined_at is None  # known now, not a member until they join


# -- who an action reaches -------------------------------------------------------------------------


def test_where_on_an_event_action_reads_the_member_after_the_event(community: Community) -> None:
    community.ev("joined", "a", 0, attributes={"source": "invite"})
    community.ev("joined", "b", 0, data={"referrer": "a"})  # the referral channel, by a referrer
    community.ev("joined", "c", 0, attributes={"source": "store"})
    assert {o.member for o in community.occurrences("welcome")} == {"a", "b", "c"}
    assert {o.member for o in community.occurrences("invitee-pack")} == {"a", "b"}
    assert community.members("b")["b"].source == "invite"


def test_a_segment_is_read_on_current_attributes_when_the_action_fires(
    community: Community,
) -> None:
    community.ev("joined", "a", 0, attributes={"city": "北京", "phone": "13900002222"})
    community.ev("joined", "b", 0, attributes={"city": "上海"})
    community.run_until(3)  # Wednesday's one-task-per-member: only a is in Beijing then
    care = community.store.tasks("t12")
    care = [t for t in care if t.action == "care"]
    assert [t.member for t in care] == ["a"]
    parent = [o for o in community.occurrences("care") if o.member is None]
    assert len(parent) == 1 and parent[0].state is OccurrenceState.EXPANDED
    assert care[0].id == f"{parent[0].key}/a"  # the member id is part of the task's key
    community.ev("update", "b", 3, 12, attributes={"city": "北京"})
    community.run_until(5)  # Friday evening's post to the segment
    sent = community.sink.of("bj-meetup")
    assert sorted(d.member for d in sent) == ["a", "b"]
    assert {d.audience for d in sent} == {"member"}  # each addressed to its member
    assert len({d.key for d in sent}) == 2
    # the staff task's text names the phone, the status never shows it
    st = status(community.program, community.store, "t12", community.at(5))
    assert "13900002222" not in json.dumps(st.as_dict(), ensure_ascii=False)
    assert "13900002222" in care[0].text  # the task itself has it: staff must call


def test_leaderboards_and_team_rankings_are_read_at_firing_time(community: Community) -> None:
    for m in ("a", "b", "c"):
        community.ev("joined", m, 0)
    teams = {k: v.team for k, v in community.members("a", "b", "c").items()}
    assert teams == {"a": "红", "b": "蓝", "c": "红"}  # round-robin in order of joining
    community.ev("invite", "b", 1)
    community.ev("invite", "b", 1, 10)
    community.ev("invite", "c", 1)
    for day in (1, 2, 3, 4):
        community.ev("checkin", "b", day)
    community.ev("checkin", "a", 2)
    community.ev("checkin", "c", 3)
    community.run_until(6)  # Saturday 20:00 and 21:00
    assert [d.member for d in community.sink.of("top-inviters")] == ["b"]
    assert [d.member for d in community.sink.of("team-win")] == ["b"]  # 蓝 4 > 红 2
    rewards = [e for e in community.store.ledger("t12", "b") if e.kind == PointsKind.REWARD]
    assert [e.points for e in rewards] == [30]


def test_a_milestone_fires_once_per_member_even_across_a_restart(tmp_path: Path) -> None:
    c = Community(tmp_path, f"sqlite:///{tmp_path}/state.db?synchronous=NORMAL")
    c.ev("joined", "a", 0)
    c.ev("update", "a", 0, 10, attributes={"score": 12})
    c.ev("update", "a", 0, 11, attributes={"score": 5})
    c.store.close()
    c.store = open_store(c.url)  # a new process on the same store
    c.runner = c.new_runner()
    c.ev("update", "a", 0, 12, attributes={"score": 15})
    fired = c.occurrences("score-10")
    assert len(fired) == 1 and fired[0].member == "a"
    assert "milestone:score-10" in c.members("a")["a"].marks


# -- points ---------------------------------------------------------------------------------------


def test_points_are_earned_spent_refused_when_short_and_lapse(community: Community) -> None:
    for m in ("a", "b", "c"):
        community.ev("joined", m, 0)
    for day in range(5):
        community.ev("checkin", "a", day)
        community.ev("checkin", "b", day)
    community.ev("checkin", "c", 0)
    too_poor = community.ev("redeem", "c", 4, 11, data={"item": "mug"})
    assert "balance" in next(iter(too_poor.refused.values()))
    ok = community.ev("redeem", "a", 4, 12, data={"item": "mug"})
    assert ok.refused == {} and community.store.points_balances("t12")["a"] == 5
    assert [o.member for o in community.occurrences("mug-ship")] == ["a"]
    out_of_stock = community.ev("redeem", "b", 4, 13, data={"item": "mug"})
    assert "stock" in next(iter(out_of_stock.refused.values()))
    assert out_of_stock.exit_code == 1
    assert community.store.redeemed_counts("t12") == {"mug": 1}
    community.run_until(16)  # points earned on days 0-4 lapse 10 days later
    balances = community.store.points_balances("t12")
    assert balances == {"a": 0, "b": 0, "c": 0}
    lapsed = [e for e in community.store.ledger("t12") if e.kind == PointsKind.EXPIRE]
    assert sum(e.points for e in lapsed) == -(5 + 25 + 5)
    assert len({e.key for e in lapsed}) == len(lapsed)


# -- admission ------------------------------------------------------------------------------------


def test_admission_approves_by_rule_or_opens_a_review_task(community: Community) -> None:
    community.ev("apply", "s1", 0, attributes={"note": "门店", "source": "store"})
    community.ev("apply", "i1", 0, attributes={"note": "朋友", "source": "invite"})
    community.ev("apply", "i2", 0, attributes={"note": "朋友", "source": "invite"})
    auto = community.store.get_application("t12", "s1")
    assert auto is not None and auto.state is ApplicationState.APPROVED
    assert community.members("s1")["s1"].joined_at == community.at(0, 9)  # approval is the join
    review = [t for t in community.store.tasks("t12") if t.member == "i1"]
    assert len(review) == 1 and review[0].role == "lead"
    assert review[0].due_at == community.at(0, 9) + timedelta(hours=24)
    assert community.members("i1")["i1"].joined_at is None
    now = community.at(0, 15)
    decide_application(community.program, community.store, "t12", "i1", True, now, "ann", "ok")
    decide_application(community.program, community.store, "t12", "i2", False, now, "ann")
    assert community.members("i1")["i1"].joined_at == now
    assert community.store.get_task("t12", review[0].id).state is TaskState.DONE  # type: ignore[union-attr]
    assert {o.member for o in community.occurrences("approved")} == {"s1", "i1"}
    assert {o.member for o in community.occurrences("rejected")} == {"i2"}
    with pytest.raises(RunError):  # decided already
        decide_application(community.program, community.store, "t12", "i1", False, now, "ann")


# -- incidents ------------------------------------------------------------------------------------


def test_an_opened_incident_becomes_tasks_with_deadlines_and_closing_it_ends_them(
    community: Community,
) -> None:
    opened = community.at(1, 10)
    rec = I.open_incident(community.program, community.store, "t12", "quiet", opened, "ann")
    community.clock = community.runner.clock = VirtualClock(opened)  # type: ignore[misc]
    community.runner.tick()
    assert [d.text for d in community.sink.of(I.step_action("quiet", 0))] == ["大家好"]
    alert = community.store.get_task("t12", I.step_key(community.program, "quiet", 1, opened))
    assert alert is not None and alert.role == "ops"
    assert alert.due_at == opened + timedelta(minutes=30)
    I.close_incident(
        community.program, community.store, "t12", "quiet", opened + timedelta(hours=1), "ann"
    )
    assert community.store.get_task("t12", alert.id).state is TaskState.DONE  # type: ignore[union-attr]
    community.run_until(1, 16)
    escalation = community.store.get_occurrence(
        "t12", I.step_key(community.program, "quiet", 2, opened)
    )
    assert escalation is not None and escalation.state is OccurrenceState.SKIPPED
    assert "closed" in escalation.reason
    assert community.store.get_incident("t12", rec.id).state is IncidentState.CLOSED  # type: ignore[union-attr]


def test_detect_opens_an_incident_once_per_episode(community: Community) -> None:
    community.ev("joined", "a", 0)
    community.run_until(5)  # silent: from the check after day 1, two days are below 50%
    opened = community.store.incidents("t12")
    assert len(opened) == 1 and opened[0].detected
    I.close_incident(community.program, community.store, "t12", opened[0].id, community.at(5), "x")
    community.run_until(7)  # still silent: the same episode, not opened again
    assert len(community.store.incidents("t12")) == 1
    for day in (7, 8):
        community.ev("message", "a", day)
    community.run_until(10)  # two days of speaking end the episode; silence starts a new one
    community.run_until(12)
    again = community.store.incidents("t12")
    assert len(again) == 2 and all(i.detected for i in again)


# -- exits, targets, weak links -------------------------------------------------------------------


def test_an_exit_with_for_and_a_window_fires_on_its_history_and_is_recorded(
    community: Community,
) -> None:
    for m in ("a", "b", "c"):
        community.ev("joined", m, 0)
    for day in range(8):
        for m in ("a", "b", "c"):
            community.ev("message", m, day)
    community.run_until(8)
    passed = [t for t in community.store.transitions("t12") if t.event == "passed"]
    assert [(t.stage, t.exit) for t in passed] == [("launch", "success")]
    # the check it passed at is the first at which the program's rule holds on what was stored
    program = community.program
    stage = program.playbook.stages["launch"]
    success = exits_of(stage)[0]
    assert success.when.node is not None
    first = community.t0.date()
    held_at = []
    for d in range(8):
        day = first + timedelta(days=d)
        history = stored_history(
            community.store, "t12", ["members", "daily_speak_rate"], first, day
        )
        if d + 1 >= 2 and H.exit_holds(success.when.node, success.hold, history, float(d + 1)):
            held_at.append(local_midnight(day + timedelta(days=1), program.tz))
    assert passed[0].at == held_at[0]
    st = status(community.program, community.store, "t12", community.at(8))
    data = st.as_dict()
    assert [s["exit"] for s in data["stages"] if s["stage"] == "launch"] == ["success"]
    assert any(t["exit"] == "success" for t in data["transitions"])


def test_a_declining_stage_takes_its_goto_exit(community: Community) -> None:
    community.ev("joined", "a", 0)
    community.run_until(22)
    moved = [(t.stage, t.event, t.exit) for t in community.store.transitions("t12")]
    assert ("launch", "passed", "decline") in moved
    assert ("wind-down", "started", None) in moved


def test_status_shows_target_progress_and_the_weak_links_of_a_failing_exit(
    community: Community,
) -> None:
    for m in ("a", "b", "c"):
        community.ev("joined", m, 0)
    community.ev("message", "a", 0)
    community.ev("message", "a", 1)
    community.run_until(3)
    st = status(community.program, community.store, "t12", community.at(3))
    data = st.as_dict()
    target = next(t for t in data["targets"] if t["metric"] == "members")
    assert target["value"] == 3 and target["met"] is False
    assert target["progress"] == pytest.approx(0.75) and target["shortfall"] == 1
    assert target["due"] == (community.t0.date() + timedelta(days=10)).isoformat()
    gate = next(g for g in data["gates"] if g["stage"] == "launch")
    success = next(x for x in gate["exits"] if x["exit"] == "success")
    weak = {c["metric"]: c for c in success["weak_links"]}
    assert set(weak) == {"avg(daily_speak_rate, 2d)"}  # members >= 3 holds; speaking falls short
    rate = weak["avg(daily_speak_rate, 2d)"]
    assert rate["shortfall"] == pytest.approx(0.5 - rate["value"])
    text = status_text(st)
    assert "falls short: avg(daily_speak_rate, 2d) >= 50%" in text
    assert "members = 3" in text


def test_counted_metrics_are_recorded_each_day_with_their_daily_counts(
    community: Community,
) -> None:
    community.ev("joined", "a", 0, attributes={"city": "北京"})
    community.ev("joined", "b", 0, attributes={"city": "上海"})
    community.ev("checkin", "a", 0)
    community.ev("checkin", "a", 1)
    community.ev("checkin", "b", 1)
    community.run_until(2, 1)
    values = {(m.name, m.day): m.value for m in community.store.metric_values("t12")}
    d0, d1 = community.t0.date(), community.t0.date() + timedelta(days=1)
    assert values[("beijing_share", d1)] == pytest.approx(0.5)
    assert values[("weekly_checkins#count", d0)] == 1 and values[("weekly_checkins#count", d1)] == 2
    assert values[("weekly_checkins", d1)] == 3
    assert values[("store_share", d1)] == 0 and values[("points_issued", d1)] == 15
    assert values[("team_score_top", d1)] == 2


# -- the commands ---------------------------------------------------------------------------------


def sop(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sop.cli", *args], capture_output=True, text=True, env=env,
        input=stdin, timeout=120,
    )  # fmt: skip


def test_the_commands_say_what_happened_with_their_exit_codes(tmp_path: Path) -> None:
    import os

    pb = tmp_path / "p.yaml"
    pb.write_text(PLAYBOOK, encoding="utf-8")
    env = {**os.environ, "SOP_PLAYBOOK": str(pb), "SOP_STATE": f"sqlite:///{tmp_path}/s.db",
           "SOP_ACTOR": "tester"}  # fmt: skip
    assert (
        sop("tick", str(pb), "--at", "2027-01-04T08:00", "--backend", "*=null", env=env).returncode
        == 0
    )
    csv = tmp_path / "m.csv"
    csv.write_text("member_id,city,grade\nm1,北京,大学\n", encoding="utf-8")
    r = sop("members", "import", str(csv), env=env)
    assert r.returncode == 2 and f"{csv}:2:3: grade" in r.stderr
    r = sop("event", "apply", "--member", "m1", "--attr", "note=hi", "--attr", "source=invite",
            "--at", "2027-01-04T09:00", env=env)  # fmt: skip
    assert r.returncode == 0
    r = sop("applications", "--format", "json", env=env)
    assert [a["member"] for a in json.loads(r.stdout)] == ["m1"]
    assert sop("applications", "approve", "m1", "--note", "ok", env=env).returncode == 0
    assert sop("applications", "approve", "m1", env=env).returncode == 2  # nothing pending
    r = sop("event", "redeem", "--member", "m1", "--data", "item=mug", env=env)
    assert r.returncode == 1 and "refused" in r.stderr
    r = sop("incident", "--format", "json", "open", "quiet", "--note", "静", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "open"
    assert sop("incident", "open", "noisy", env=env).returncode == 2
    r = sop("incident", "--format", "json", "list", env=env)
    assert [i["incident"] for i in json.loads(r.stdout)] == ["quiet"]
    assert sop("incident", "close", "quiet", env=env).returncode == 0
    r = sop("status", "--format", "json", env=env)
    assert r.returncode == 0 and "targets" in json.loads(r.stdout)


def test_the_events_endpoint_checks_attributes_and_says_which_event_was_refused(
    community: Community, tmp_path: Path
) -> None:
    from tests.test_serve import SECRET, endpoint_for

    with endpoint_for(community.program, tmp_path) as ep:
        bad = ep.post({"id": "x1", "type": "joined", "member": "m1",
                       "attributes": {"grade": "大学"}})  # fmt: skip
        assert bad.status_code == 400 and bad.json()["field"] == "attributes.grade"
        good = [
            {"id": "j1", "type": "joined", "member": "m1", "at": "2027-01-04T09:00:00+08:00",
             "attributes": {"city": "北京", "grade": "小学"}},
            {"id": "r1", "type": "redeem", "member": "m1", "at": "2027-01-04T10:00:00+08:00",
             "data": {"item": "mug"}},
        ]  # fmt: skip
        r = ep.post(good, secret=SECRET)
        assert r.status_code == 200
        results = {x["id"]: x for x in r.json()["results"]}
        assert "refused" not in results["j1"] and "balance" in results["r1"]["refused"]
        m = ep.store.get_members(ep.run_id, ["m1"])["m1"]
        assert m.attributes["grade"] == "小学"


def test_an_expansion_whose_runner_died_is_expanded_again_not_left_uncertain(
    community: Community,
) -> None:
    from datetime import UTC

    from sop.engine.program.occurrence import occurrence_key
    from sop.engine.run.store.base import NewOccurrence

    community.ev("joined", "a", 0, attributes={"city": "北京"})
    community.run_until(4, 18)  # what was due before is done
    community.sink.capabilities = Capabilities(idempotent=False)  # a send may not be repeated
    friday = community.at(4, 19)
    key = occurrence_key("t12", "bj-meetup", friday)
    new = NewOccurrence(key, "bj-meetup", None, "post", None, "segment:beijing", "ops", "group",
                        friday, friday)  # fmt: skip
    community.store.add_occurrences("t12", [new])
    gone = datetime.now(UTC) - timedelta(minutes=1)  # the runner holding it died
    assert [o.key for o in community.store.claim("t12", friday, 10, gone, "dead")] == [key]
    community.run_until(4, 20)
    parent = community.store.get_occurrence("t12", key)
    assert parent is not None and parent.state is OccurrenceState.EXPANDED
    assert [d.key for d in community.sink.of("bj-meetup")] == [f"{key}/a"]
