"""`sop plan`, `graph` and `diff` show every construct of issue 12: targets with due dates,
channels, members (attributes, PII withheld; segments), admission, points, teams, incidents in
order, branching exits and `--assume-exit`, per-member tasks and their workload, leaderboards,
`where:` beside audiences, the new member events, and a diff of every new section."""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from sop.cli import main

from tests.conftest import position

PLAYBOOK = """\
playbook: issue12-plan
title: 家长社群
timezone: Asia/Shanghai
community: {start: 2027-03-01}
roles:
  ops: {headcount: 1, capacity: 20}
  sales: {headcount: 1, capacity: 12}
  content: {headcount: 1}
backends:
  group: {type: console}
  staff: {type: tasks, notify: console}
defaults: {backend: group, staff_backend: staff, owner: ops}
members:
  attributes:
    grade: {type: enum, title: 孩子年级, values: [小学, 初中]}
    phone: {type: string, title: 手机号, pii: true, default: "SECRET-PHONE-1390000"}
    referrer_note: {type: string, title: 推荐人信息}
    expectation: {type: string, title: 入群期待}
segments:
  invited: {title: 裂变用户, when: source == "invite"}
  hesitant: {title: 犹豫, when: payments == 0, size: 30}
channels:
  invite: {title: 好友邀请, share: 30%, referral: true}
  wechat_mp: {title: 公众号引流, share: 20%, opens: growth}
metrics:
  repeat_purchase_rate:
    {unit: ratio, count: {members: payments >= 2}, per: {members: payments >= 1}, target: 30%}
targets:
  core_members: {at_least: 500, by: 90d}
  churn_rate: {at_most: 10%}
admission:
  require: [referrer_note, expectation]
  approve: referrer != ""
  review: {owner: ops, within: 24h}
points:
  earn: {checkin: 5, invite: 50}
  expire: 365d
  redeem:
    mug: {title: 定制马克杯, cost: 200, stock: 100}
teams:
  names: [红队, 蓝队]
  assign: round-robin
  score: checkins
tiers:
  levels:
    member: {title: 成员}
    vip: {title: VIP, promote: payments >= 2, size: 5}
incidents:
  quiet-group:
    title: 群活跃骤降
    owner: ops
    detect: "avg(daily_speak_rate, 3d) < 5%"
    steps:
      - {do: post, text: 今晚8点有活动}
      - {alert: ops, within: 30m}
      - {escalate: content, after: 4h}
routines:
  invitee-pack:
    {on: member.joined, where: source == "invite", within: 24h, do: message, to: member, text: 包}
  helper-10:
    on: member.milestone
    counter: invites
    reaches: 10
    do: reward
    to: member
    text: 奖励
    reward: {item: 礼包}
  helper-10-ship: {after: helper-10, delay: 1d, do: task, owner: ops, text: 寄出礼包}
  approved-hi: {on: member.approved, do: message, to: member, text: 通过}
  rejected-bye: {on: member.rejected, do: message, to: member, text: 未通过}
  applied-ack: {on: member.applied, do: message, to: member, text: 已收到}
  mug-ship: {on: member.redeemed, item: mug, do: task, owner: ops, text: 寄出马克杯}
stages:
  growth:
    duration: {min: 10d}
    actions:
      vip-call: {cron: "0 10 * * 1", do: task, owner: sales, for_each: tier:vip, text: 1对1沟通}
      hesitant-call:
        {cron: "0 11 * * 2", do: task, owner: sales, for_each: segment:hesitant, text: 回访}
      invited-call:
        {cron: "0 11 * * 3", do: task, owner: sales, for_each: segment:invited, text: 回访裂变}
      top-inviters:
        cron: "0 20 * * 0"
        do: reward
        to: {top: 3, by: invites}
        text: 前三
        reward: {item: 免费续费1年}
      winning-team:
        {cron: "0 21 * * 0", do: reward, to: {top: 1, by: checkins, teams: true}, text: 冠军队}
      invited-post:
        {cron: "0 19 * * 5", do: post, to: segment:invited, where: grade == "小学", text: 小学}
    exits:
      - {id: success, when: "core_members >= 500 and avg(daily_speak_rate, 7d) >= 20%", for: 7d}
      - {id: decline, when: "avg(daily_speak_rate, 14d) < 5% and members < 100", goto: dissolution}
  deepening:
    after: growth
    duration: {max: 60d}
    actions:
      deep-post: {cron: "0 9 * * *", do: post, text: 深化}
  dissolution:
    rescue: true
    duration: {max: 30d}
    actions:
      farewell: {day: 0, time: "10:00", do: announce, text: 再见}
"""
SECRET = "SECRET-PHONE-1390000"


def write(tmp_path: Path, text: str = PLAYBOOK, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def sop(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def plan_json(path: str, *extra: str) -> dict:
    code, out, err = sop("plan", path, "--days", "60", "--format", "json", *extra)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return write(tmp_path)


# -- targets, channels, members, admission, points, teams ----------------------------------


def test_targets_are_due_on_dates_counted_from_the_start(path):
    doc = plan_json(path, "--start", "2027-04-01")
    targets = {t["metric"]: t for t in doc["targets"]}
    # `by: 90d` from the plan's start; no `by`: the end of the horizon, whatever --days says
    assert targets["core_members"]["by"] == "2027-06-30"
    assert targets["core_members"]["direction"] == "at_least"
    assert targets["churn_rate"] == {
        **targets["churn_rate"],
        "direction": "at_most",
        "value": 0.1,
        "goal": "≤ 10%",
        "by": "end of horizon",
    }
    # a metric's own `target:` is listed too
    assert targets["repeat_purchase_rate"]["goal"] == "≥ 30%"


def test_handbook_lists_targets_channels_members_admission_points_and_teams(path):
    code, md, _ = sop("plan", path, "--days", "30", "--format", "markdown")
    assert code == 0
    assert "| core_members | ≥ 500 | 2027-05-30 (90d from the start) |" in md
    assert "| churn_rate | ≤ 10% | end of horizon |" in md
    assert "| invite | 好友邀请 | 30% (referrals land here) | from the start |" in md
    assert "| wechat_mp | 公众号引流 | 20% | in stage `growth` |" in md
    assert "- **Opens channels**: `wechat_mp`" in md
    assert "| hesitant | 犹豫 | `payments == 0` | 30 |" in md
    assert '| invited | 裂变用户 | `source == "invite"` | — |' in md
    assert re.search(r"\| phone \| string \| 手机号 \| personal data \(PII\)", md)
    assert "- **An application must give**: `referrer_note`, `expectation`" in md
    assert '- **Approved at once when**: `referrer != ""`' in md
    assert "- **Otherwise reviewed by**: `ops` within 1d" in md
    assert "| checkin | 5 |" in md and "| invite | 50 |" in md
    assert "| mug | 定制马克杯 | 200 | 100 |" in md
    assert "- **Teams**: 红队, 蓝队" in md and "round-robin" in md


def test_json_carries_every_section(path):
    doc = plan_json(path)
    assert [c["id"] for c in doc["channels"]] == ["invite", "wechat_mp"]
    assert doc["channels"][0]["share"] == 0.3 and doc["channels"][0]["referral"] is True
    segs = {s["id"]: s for s in doc["segments"]}
    assert segs["hesitant"]["size"] == 30 and segs["invited"]["when"] == 'source == "invite"'
    assert doc["admission"] == {
        "require": ["referrer_note", "expectation"],
        "approve": 'referrer != ""',
        "review": {"owner": "ops", "within": "1d"},
    }
    assert doc["points"]["earn"] == {"checkin": 5, "invite": 50}
    assert doc["points"]["redeem"] == [
        {"id": "mug", "title": "定制马克杯", "cost": 200, "stock": 100}
    ]
    assert doc["teams"]["names"] == ["红队", "蓝队"] and doc["teams"]["score"] == "checkins"
    phone = next(a for a in doc["attributes"] if a["id"] == "phone")
    assert phone["pii"] is True and phone["default"] is None


@pytest.mark.parametrize("fmt", ["json", "csv", "markdown", "table", "ics"])
def test_a_pii_value_is_never_printed(path, fmt):
    code, out, err = sop("plan", path, "--days", "30", "--format", fmt)
    assert code == 0 and SECRET not in out and SECRET not in err
    assert "phone" in out or fmt in ("csv", "ics", "table")


def test_the_review_task_of_admission_is_an_event_rule_of_its_owner(path):
    # the plan names the task as the runtime records it (both import this one constant)
    from sop.engine.program.admission import REVIEW_ACTION

    rules = {r["action"]: r for r in plan_json(path)["event_rules"]}
    review = rules[REVIEW_ACTION]
    assert (review["kind"], review["owner"], review["rule"]) == (
        "task",
        "ops",
        "on member.applied, within 1d",
    )
    assert REVIEW_ACTION not in {
        r["action"] for r in plan_json(path, "--role", "sales")["event_rules"]
    }


# -- incidents -----------------------------------------------------------------------------


def test_incident_steps_in_order_with_their_offsets_from_opening(path):
    doc = plan_json(path)
    (inc,) = doc["incidents"]
    assert (inc["id"], inc["owner"], inc["detect"]) == (
        "quiet-group",
        "ops",
        "avg(daily_speak_rate, 3d) < 5%",
    )
    steps = [(s["step"], s["kind"], s["who"], s["at"], s["due"]) for s in inc["steps"]]
    # offsets count from the opening: the alert goes out at once and is due within 30m, the
    # escalation comes 4h after the opening, only while the incident is still open
    assert steps == [
        (1, "do", "ops", "0m", None),
        (2, "alert", "ops", "0m", "30m"),
        (3, "escalate", "content", "4h", None),
    ]
    assert [s["only_if_open"] for s in inc["steps"]] == [False, False, True]
    _, md, _ = sop("plan", path, "--days", "5", "--format", "markdown")
    assert "### 群活跃骤降 (`quiet-group`)" in md
    assert "- **Opened when**: `avg(daily_speak_rate, 3d) < 5%`" in md
    rows = [ln for ln in md.splitlines() if re.match(r"\| [123] \|", ln)]
    assert rows == [
        "| 1 | at opening | ops | post: 今晚8点有活动 |",
        "| 2 | at opening, answer within 30m | ops | alert ops |",
        "| 3 | +4h if still open | content | escalate to content |",
    ]


def test_incident_steps_are_rows_of_the_csv(path):
    _, out, _ = sop("plan", path, "--days", "5", "--format", "csv")
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r["incident"]]
    assert [(r["incident"], r["kind"], r["owner"], r["rule"]) for r in rows] == [
        ("quiet-group", "do", "ops", "step 1, at opening: post: 今晚8点有活动"),
        ("quiet-group", "alert", "ops", "step 2, at opening, answer within 30m: alert ops"),
        ("quiet-group", "escalate", "content", "step 3, +4h if still open: escalate to content"),
    ]
    assert all(not r["key"] and not r["at"] for r in rows)


# -- exits ---------------------------------------------------------------------------------


def test_handbook_and_json_list_each_exit_in_order(path):
    doc = plan_json(path)
    assert doc["exits"]["growth"] == [
        {
            "id": "success",
            "when": "core_members >= 500 and avg(daily_speak_rate, 7d) >= 20%",
            "for": "7d",
            "goto": None,
            "to": ["deepening"],
        },
        {
            "id": "decline",
            "when": "avg(daily_speak_rate, 14d) < 5% and members < 100",
            "for": None,
            "goto": "dissolution",
            "to": ["dissolution"],
        },
    ]
    _, md, _ = sop("plan", path, "--days", "30", "--format", "markdown")
    assert (
        "  1. `success`: `core_members >= 500 and avg(daily_speak_rate, 7d) >= 20%` for 7d"
        " → `deepening`" in md
    )
    assert (
        "  2. `decline`: `avg(daily_speak_rate, 14d) < 5% and members < 100` → `dissolution`" in md
    )


def test_plan_takes_the_first_exit_unless_told_which(path):
    def taken(doc: dict) -> list[tuple[str, str, str | None]]:
        return [(t["stage"], t["event"], t["exit"]) for t in doc["transitions"]]

    first = plan_json(path)
    # `success` reads avg(x, 7d) for 7d: filled on day 7, held to day 13 (past the 10-day minimum)
    assert ("growth", "passed", "success") in taken(first)
    passed = next(t for t in first["transitions"] if t["event"] == "passed")
    assert passed["at"] == "2027-03-14T00:00:00+08:00"
    assert ("deepening", "started", None) in taken(first)
    assert "dissolution" not in {t["stage"] for t in first["transitions"]}
    declined = plan_json(path, "--assume-exit", "growth=decline")
    assert ("growth", "passed", "decline") in taken(declined)
    assert ("growth", "goto", "decline") in taken(declined)
    assert ("dissolution", "started", None) in taken(declined)
    assert "deepening" not in {t["stage"] for t in declined["transitions"]}
    # and the calendar follows: the farewell of the rescue stage, no deepening posts
    actions = {o["action"] for o in declined["occurrences"]}
    assert "farewell" in actions and "deep-post" not in actions


def test_an_exit_held_longer_than_the_stage_work_passes_when_its_hold_is_over(tmp_path):
    text = PLAYBOOK.replace("duration: {min: 10d}", "duration: {min: 3d}")
    doc = plan_json(write(tmp_path, text))
    passed = next(t for t in doc["transitions"] if t["event"] == "passed")
    assert (passed["stage"], passed["exit"]) == ("growth", "success")
    assert passed["at"] == "2027-03-14T00:00:00+08:00"  # 7d window + 7d hold - 1 = day 13


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("growth=declin", "stage 'growth' has no exit 'declin'; did you mean `decline`?"),
        ("grwth=decline", "stage 'grwth' is not in the playbook; did you mean `growth`?"),
        ("growth", "write STAGE=EXIT_ID"),
        ("deepening=pass", "stage 'deepening' has no exit"),
    ],
)
def test_an_unknown_assumed_exit_is_a_usage_error(path, value, message):
    code, out, err = sop("plan", path, "--assume-exit", value)
    assert code == 2 and out == ""
    assert err.startswith("sop: error: --assume-exit") and message in err
    assert "Traceback" not in err


def test_assume_exit_contradicting_fail_is_refused(path):
    code, _, err = sop("plan", path, "--assume-exit", "growth=decline", "--fail", "growth")
    assert code == 2 and "--fail growth" in err
    code, _, err = sop("plan", path, "--assume-exit", "growth=decline", "--assume-gates", "fail")
    assert code == 2 and "--assume-gates fail" in err


# -- per-member tasks and the workload -----------------------------------------------------


def test_a_per_member_task_is_one_row_per_firing_with_the_planned_count(path):
    doc = plan_json(path)
    calls = [o for o in doc["occurrences"] if o["action"] == "hesitant-call"]
    assert calls and all(o["tasks"] == 30 and o["for_each"] == "segment:hesitant" for o in calls)
    # one row per firing: one a week on Tuesdays while growth runs
    assert len({o["at"][:10] for o in calls}) == len(calls)
    vip = [o for o in doc["occurrences"] if o["action"] == "vip-call"]
    assert vip and all(o["tasks"] == 5 for o in vip)
    unknown = [o for o in doc["occurrences"] if o["action"] == "invited-call"]
    assert unknown and all(o["tasks"] is None for o in unknown)
    _, out, _ = sop("plan", path, "--days", "60", "--format", "csv")
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r["action"] == "hesitant-call"]
    assert len(rows) == len(calls) and {r["tasks"] for r in rows} == {"30"}
    _, md, _ = sop("plan", path, "--days", "60", "--format", "markdown")
    assert f"| {len(calls)} × 30 = {len(calls) * 30} tasks |" in md
    assert "× ? tasks (no planned size of segment:invited)" in md


def test_the_workload_check_counts_each_member_and_warns_when_the_size_is_unknown(check):
    res, text = check(PLAYBOOK)
    (d,) = [d for d in res.diagnostics if d.code == "SOP301" and "`sales`" in d.message]
    # Tuesday's hesitant-call is 30 tasks for one person with capacity 12
    assert "has 30 tasks" in d.message and "capacity 12" in d.message
    (w,) = [d for d in res.diagnostics if d.code == "SOP304"]
    assert (w.line, w.column) == position(text, "segment:invited, text")
    assert "invited-call" in w.message and "no planned `size`" in w.message
    assert w.severity == "warning"


def test_a_declared_size_silences_the_unknown_workload_warning(check):
    res, _ = check(
        PLAYBOOK.replace('when: source == "invite"}', 'when: source == "invite", size: 3}')
    )
    assert not [d for d in res.diagnostics if d.code == "SOP304"]


def test_sop304_is_in_the_rules_catalogue():
    _, out, _ = sop("rules", "--format", "json")
    rules = {r["code"]: r for r in json.loads(out)}
    assert rules["SOP304"]["severity"] == "warning"


# -- audiences: leaderboards, where -----------------------------------------------------------


def test_leaderboards_show_top_n_by_a_measure_as_the_audience(path):
    doc = plan_json(path)
    top = next(o for o in doc["occurrences"] if o["action"] == "top-inviters")
    assert top["audience"] == "top" and top["to"] == "top 3 by invites"
    assert top["top"] == {"n": 3, "by": "invites", "teams": False, "among": None}
    team = next(o for o in doc["occurrences"] if o["action"] == "winning-team")
    assert team["to"] == "members of the top 1 team by checkins"
    _, out, _ = sop("plan", path, "--days", "30", "--format", "csv")
    rows = {r["action"]: r for r in csv.DictReader(io.StringIO(out)) if r["key"]}
    assert rows["top-inviters"]["audience"] == "top 3 by invites"
    _, md, _ = sop("plan", path, "--days", "30", "--format", "markdown")
    assert "| top 3 by invites |" in md


def test_where_conditions_are_shown_beside_audiences(path):
    doc = plan_json(path)
    post = next(o for o in doc["occurrences"] if o["action"] == "invited-post")
    assert post["where"] == 'grade == "小学"' and post["audience"] == "segment:invited"
    rule = next(r for r in doc["event_rules"] if r["action"] == "invitee-pack")
    assert rule["where"] == 'source == "invite"'
    _, md, _ = sop("plan", path, "--days", "30", "--format", "markdown")
    assert '| segment:invited where grade == "小学" |' in md
    assert '| member where source == "invite" |' in md


def test_new_member_events_are_event_rules_with_their_chained_actions(path):
    doc = plan_json(path)
    rules = [(r["action"], r["rule"], r["event_rule"]) for r in doc["event_rules"]]
    assert ("helper-10", "on member.milestone invites reaches 10", None) in rules
    # the action chained after the milestone reward follows it
    i = rules.index(("helper-10", "on member.milestone invites reaches 10", None))
    assert rules[i + 1] == ("helper-10-ship", "1d after helper-10", "helper-10")
    assert ("mug-ship", "on member.redeemed mug", None) in rules
    for event in ("approved", "rejected", "applied"):
        assert any(r[1] == f"on member.{event}" for r in rules), event


# -- graph ---------------------------------------------------------------------------------


def test_graph_json_lists_exits_with_their_targets(path):
    _, out, _ = sop("graph", path, "--format", "json")
    stages = {s["id"]: s for s in json.loads(out)["stages"]}
    assert [(e["id"], e["to"], e["for"]) for e in stages["growth"]["exits"]] == [
        ("success", ["deepening"], "7d"),
        ("decline", ["dissolution"], None),
    ]


def test_graph_draws_labelled_exit_edges(path):
    code, out, _ = sop("graph", path, "--format", "dot", "--no-actions")
    assert code == 0
    assert (
        's_growth -> s_deepening [style=solid, label="success: core_members >= 500 and'
        ' avg(daily_speak_rate, 7d) >= 20% for 7d"];' in out
    )
    assert 's_growth -> s_dissolution [style=dashed, label="decline: ' in out
    _, out, _ = sop("graph", path, "--format", "mermaid", "--no-actions")
    assert (
        's_growth -.->|"decline: avg(daily_speak_rate, 14d) #60; 5% and members #60; 100"|' in out
    )


# -- diff ----------------------------------------------------------------------------------


def test_diff_reports_changes_in_every_new_section(tmp_path):
    old = write(tmp_path, PLAYBOOK, "old.yaml")
    new_text = (
        PLAYBOOK.replace(
            "core_members: {at_least: 500, by: 90d}", "core_members: {at_least: 600, by: 90d}"
        )
        .replace("goto: dissolution}", "goto: dissolution, for: 3d}")
        .replace("share: 20%,", "share: 25%,")
        .replace("payments == 0, size: 30}", "payments == 0, size: 40}")
        .replace("earn: {checkin: 5, invite: 50}", "earn: {checkin: 5, invite: 80}")
        .replace("cost: 200, stock: 100}", "cost: 300, stock: 100}")
        .replace("assign: round-robin", "assign: balanced")
        .replace("within: 24h}", "within: 12h}")
        .replace('default: "SECRET-PHONE-1390000"', 'default: "SECRET-PHONE-1390001"')
        .replace("after: 4h}", "after: 2h}")
    )
    new = write(tmp_path, new_text, "new.yaml")
    code, out, _ = sop("diff", old, new, "--format", "json")
    assert code == 1
    changes = {(c["kind"], c["id"]): c["fields"] for c in json.loads(out)["changes"]}
    assert changes[("target", "core_members")]["value"] == {"old": "500.0", "new": "600.0"}
    assert changes[("exit", "growth.decline")]["hold"] == {"old": "None", "new": "3d"}
    assert changes[("channel", "wechat_mp")]["share"] == {"old": "0.2", "new": "0.25"}
    assert changes[("segment", "hesitant")]["size"] == {"old": "30", "new": "40"}
    assert changes[("points", "earn.invite")]["points"] == {"old": "50", "new": "80"}
    assert changes[("redemption", "mug")]["cost"] == {"old": "200", "new": "300"}
    assert changes[("teams", "teams")]["assign"] == {"old": "round-robin", "new": "balanced"}
    assert changes[("admission", "admission")]["review_within"] == {"old": "1d", "new": "12h"}
    assert changes[("incident", "quiet-group")] == {
        "step 3": {"old": "escalate content after 4h", "new": "escalate content after 2h"}
    }
    # a PII attribute's changed default is reported without its values
    assert ("attribute", "phone") in changes and "SECRET" not in out
    _, text, _ = sop("diff", old, new)
    assert "~ exit growth.decline changed" in text and "SECRET" not in text


def test_diff_reports_an_exit_added_and_removed(tmp_path):
    old = write(tmp_path, PLAYBOOK, "old.yaml")
    new_text = PLAYBOOK.replace("id: decline,", "id: collapse,")
    _, out, _ = sop("diff", old, write(tmp_path, new_text, "new.yaml"), "--format", "json")
    kinds = {(c["kind"], c["id"], c["change"]) for c in json.loads(out)["changes"]}
    assert {("exit", "growth.decline", "removed"), ("exit", "growth.collapse", "added")} <= kinds


def test_a_segment_message_counts_towards_a_members_daily_cap(check):
    text = """\
playbook: cap
timezone: Asia/Shanghai
community: {start: 2027-03-01}
roles: {ops: {headcount: 1, capacity: 20}}
backends: {group: {type: console}}
defaults: {backend: group, owner: ops}
limits: {member_messages_per_day: 2}
segments:
  payers: {title: 付费, when: payments >= 1}
stages:
  s:
    actions:
      m1: {cron: "0 9 * * *", do: post, text: a}
      m2: {cron: "0 12 * * *", do: post, text: b}
      m3: {cron: "0 19 * * 5", do: post, to: segment:payers, text: c}
"""
    res, _ = check(text)
    (d,) = [d for d in res.diagnostics if d.code == "SOP303"]
    assert "3 messages" in d.message and "m3" in d.message and "2027-03-05" in d.message
    res, _ = check(text.replace("member_messages_per_day: 2", "member_messages_per_day: 3"))
    assert not [d for d in res.diagnostics if d.code == "SOP303"]


# -- the review of issue 12 -----------------------------------------------------------------

JOIN = """\
playbook: join
timezone: Asia/Shanghai
community: {start: 2027-03-01}
roles: {ops: {headcount: 1}}
backends: {group: {type: console}}
defaults: {backend: group, owner: ops}
stages:
  a:
    duration: {max: 30d}
    exits:
      - {id: success, when: members >= 10}
      - {id: decline, when: members < 5, goto: rescue}
  b:
    duration: {min: 20d, max: 20d}
  c:
    after: [a, b]
  rescue:
    rescue: true
"""


def test_a_goto_exit_is_not_a_pass_for_an_after_join(tmp_path):
    path = write(tmp_path, JOIN)
    started = lambda doc: {t["stage"] for t in doc["transitions"] if t["event"] == "started"}  # noqa: E731
    assert "c" in started(plan_json(path, "--assume-exit", "a=success"))
    declined = plan_json(path, "--assume-exit", "a=decline")
    assert ("a", "passed", "decline") in [
        (t["stage"], t["event"], t["exit"]) for t in declined["transitions"]
    ]
    assert "rescue" in started(declined) and "c" not in started(declined)
    args = ["plan", path, "--days", "60", "--assume-exit", "a=decline", "--format", "table"]
    res = CliRunner().invoke(main, args, env={"COLUMNS": "300"}, catch_exceptions=False)
    assert res.exit_code == 0 and "stage left by exit decline → rescue" in res.stdout
    assert "stage passed" not in res.stdout


def test_a_target_without_by_is_due_at_the_end_of_the_horizon_not_a_date(path):
    short, long = plan_json(path, "--days", "5"), plan_json(path, "--days", "200")
    by = lambda doc: {t["metric"]: t["by"] for t in doc["targets"]}  # noqa: E731
    assert by(short) == by(long)
    assert by(short)["churn_rate"] == "end of horizon"
    assert by(short)["core_members"] == "2027-05-30"  # by: 90d from 2027-03-01


def test_plan_assumes_an_exit_only_once_its_window_is_full_and_its_hold_run(tmp_path):
    text = JOIN.replace(
        "    exits:\n      - {id: success, when: members >= 10}\n",
        "    exits:\n      - {id: success, when: 'avg(members, 14d) >= 10', for: 20d}\n",
    ).replace("duration: {max: 30d}", "duration: {max: 40d}")
    doc = plan_json(write(tmp_path, text))
    passed = next(t for t in doc["transitions"] if t["stage"] == "a" and t["event"] == "passed")
    assert passed["at"] == "2027-04-03T00:00:00+08:00"  # day 33 = 14 + 20 - 1, not day 20


def test_incident_steps_are_listed_in_time_order_with_their_numbers(tmp_path):
    text = JOIN + textwrap.dedent(
        """\
        incidents:
          late:
            owner: ops
            steps:
              - {escalate: ops, after: 4h}
              - {alert: ops, within: 30m}
        """
    )
    doc = plan_json(write(tmp_path, text))
    (inc,) = doc["incidents"]
    assert [(s["step"], s["kind"]) for s in inc["steps"]] == [(2, "alert"), (1, "escalate")]
