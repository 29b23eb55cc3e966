"""The Program layer of issue 12: exits with `for:` holds and windows, member conditions,
counted metrics, leaderboards, teams, points, milestones, targets and weak links, incidents.

Each rule has one home in engine/program; these tests state it on small inputs. The simulator
(arrays) and the runtime (scalars) reading the same rule is held in tests/test_one_semantics.py.
"""

from __future__ import annotations

import math
import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sop.engine.core import expr as ex
from sop.engine.core.schedule import local_midnight
from sop.engine.lang.model import Count, CountOf, Expression, Metric, Target, Teams
from sop.engine.lang.model import TeamAssignment as TA
from sop.engine.program import (
    Lifecycle,
    Program,
    Transition,
    assumed_exits,
    assumed_gate,
    counted,
    gates,
    incidents,
    members,
    milestones,
    points,
    ranking,
    run_lifecycle,
)
from sop.engine.program import history as H
from sop.engine.program import metrics as M
from sop.engine.program import targets as T
from sop.engine.program import teams as TM
from sop.engine.program.truth import holds, truth
from sop.engine.validate import load_playbook

from tests.conftest import BASE, ROOT

PB = (
    BASE
    + """\
members:
  attributes:
    city: {type: string, title: 城市}
    grade: {type: enum, values: [小学, 初中], title: 年级}
    score: {type: number, title: 分数}
    vip: {type: boolean, title: VIP}
segments:
  invited: {title: 裂变用户, when: source == "invite"}
  bj: {title: 北京, when: city == "北京" and points >= 100}
channels:
  invite: {title: 好友邀请, share: 30%, referral: true}
  wechat_mp: {title: 公众号, share: 20%}
points:
  earn: {checkin: 5, post: 10}
  expire: 30d
  redeem:
    mug: {title: 马克杯, cost: 200, stock: 2}
teams:
  names: [红队, 蓝队, 绿队]
  assign: round-robin
  score: checkins
admission:
  require: [city]
  review: {owner: ops, within: 24h}
incidents:
  quiet:
    title: 群活跃骤降
    owner: ops
    detect: "avg(daily_speak_rate, 3d) < 5%"
    steps:
      - {do: post, text: 大家好}
      - {alert: ops, within: 30m}
      - {escalate: ops, after: 4h}
stages:
  growth:
    exits:
      - {id: success, when: "members >= 5 and avg(daily_speak_rate, 3d) >= 20%", for: 3d}
      - {id: decline, when: members < 2, goto: dissolution}
    actions:
      a: {cron: "0 9 * * *", do: post, text: hi}
  deepening:
    after: growth
    actions:
      b: {cron: "0 9 * * *", do: post, text: hi}
  dissolution:
    rescue: true
    actions:
      c: {cron: "0 9 * * *", do: post, text: bye}
"""
)
TZ_START = date(2027, 1, 4)


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Program:
    p: Path = tmp_path_factory.mktemp("p12") / "p.yaml"
    p.write_text(textwrap.dedent(PB), encoding="utf-8")
    res = load_playbook(str(p))
    assert res.playbook is not None, [(d.code, d.message) for d in res.diagnostics]
    return Program(res.playbook)


def _cond(text: str) -> Expression:
    return Expression(text, ex.parse(text), None, True)  # type: ignore[arg-type]


# -- windows over a metric's history -----------------------------------------------------------


def test_a_window_is_undefined_until_its_days_have_closed_and_when_a_day_in_it_is():
    s = [0.1, 0.3, 0.2]
    assert math.isnan(H.window("avg", s[:2], 3))
    assert H.window("avg", s, 3) == pytest.approx(0.2)
    assert (H.window("min", s, 2), H.window("max", s, 3)) == (0.2, 0.3)
    assert math.isnan(H.window("min", [0.1, math.nan, 0.2], 3))
    assert H.window("max", [math.nan, 0.5, 0.2], 2) == 0.5  # the NaN day is outside the window


def test_a_window_over_runs_answers_each_run_as_its_own_list_does():
    runs = np.array([[0.1, 0.3, 0.2, 0.4], [0.2, math.nan, 0.1, 0.3], [0.5, 0.5, 0.5, 0.5]])
    got = H.window("avg", runs, 3)
    for r in range(3):
        one = H.window("avg", list(runs[r]), 3)
        assert (math.isnan(one) and math.isnan(got[r])) or one == got[r]


def test_the_window_ending_on_each_recent_day_reads_that_days_history():
    roll = H.rolling("max", [1.0, 5.0, 2.0, 3.0], 2, last=3)
    assert list(roll) == [5.0, 5.0, 3.0]
    assert math.isnan(H.rolling("avg", [1.0, 2.0], 2, last=2)[0])  # day 0 has no day before


# -- `for:` holds ------------------------------------------------------------------------------


def test_an_exit_with_for_fires_only_after_its_condition_held_on_each_of_the_last_days():
    node = ex.parse("members >= 5")
    hold = timedelta(days=3)
    assert not H.exit_holds(node, hold, {"members": [6, 6]}, 2)  # two days only
    assert H.exit_holds(node, hold, {"members": [6, 6, 6]}, 3)
    assert not H.exit_holds(node, hold, {"members": [6, 4, 6, 6]}, 4)  # a dip resets it
    assert H.held_for(node, {"members": [6, 4, 6, 6]}, 4, 7) == 2


def test_days_before_the_stage_started_do_not_count_towards_its_hold():
    node = ex.parse("members >= 5")
    # five good days in the history, but the stage has run for two of them
    assert not H.exit_holds(node, timedelta(days=3), {"members": [9] * 5}, 2)
    assert H.exit_holds(node, timedelta(days=3), {"members": [9] * 5}, 3)


def test_an_undefined_day_in_the_hold_breaks_it():
    node = ex.parse("daily_speak_rate >= 0.2")
    h = {"daily_speak_rate": [0.3, math.nan, 0.3, 0.3]}
    assert H.held_for(node, h, 10, 4) == 2


def test_a_hold_reads_the_window_as_it_was_on_each_past_day():
    node = ex.parse("avg(x, 2d) >= 1")
    # windows: day1 (0+2)/2=1, day2 (2+0)/2=1, day3 (0+0)/2=0
    assert list(H.daily_truth(node, {"x": [0.0, 2.0, 0.0, 0.0]}, 9, 3)) == [True, True, False]


def test_a_hold_over_runs_gives_each_run_its_own_answer():
    node = ex.parse("members >= 5")
    runs = H.ArrayHistory(np.array([[[6], [6], [6]], [[6], [1], [6]]], dtype=float), {"members": 0})
    got = H.exit_holds(node, timedelta(days=2), runs, np.array([3, 3]))
    assert got.tolist() == [True, False]
    got = H.exit_holds(node, timedelta(days=2), runs, np.array([1, 3]))
    assert got.tolist() == [False, False]  # run 0's stage is one day old


# -- three-valued conditions on scalars and arrays ---------------------------------------------


def test_an_undefined_side_makes_a_comparison_unknown_and_not_of_unknown_stays_unknown():
    assert truth(ex.parse("not (x < 1)"), {"x": math.nan}) == (False, False)
    assert holds(ex.parse("x >= 1 or y > 2"), {"x": math.nan, "y": 3.0})
    mask = holds(ex.parse("x >= 1 or y > 2"), {"x": np.array([math.nan, 0, 2]), "y": 0.0})
    assert mask.tolist() == [False, False, True]


def test_judge_names_an_undefined_window_and_why():
    node = ex.parse("avg(daily_speak_rate, 7d) >= 20%")
    h = {"daily_speak_rate": [0.3, 0.3]}
    exit_ = _exit("e", "avg(daily_speak_rate, 7d) >= 20%")
    v = gates.exit_verdict(exit_, h, 2)
    assert not v.holds and v.undefined == (
        ("avg(daily_speak_rate, 7d)", "2 of the 7 days it reads have closed"),
    )
    assert gates.judge(node, H.condition_env(node, {"daily_speak_rate": [0.3] * 7})).holds


def _exit(eid: str, text: str, hold: int | None = None, goto: str | None = None):
    from sop.engine.lang.model import Exit

    return Exit(eid, _cond(text), timedelta(days=hold) if hold else None, goto)


# -- the lifecycle's exits -----------------------------------------------------------------


def _drive(program: Program, days: list[dict[str, float]]) -> Lifecycle:
    """Step a lifecycle through `days` (one dict of metrics per closed day) with the history
    oracle the simulator and the runtime use."""
    tz = program.tz
    start = local_midnight(TZ_START, tz)
    lc = Lifecycle.start(program, start)
    closed: list[dict[str, float]] = []

    def read(stage, st, now):
        dis = (now.astimezone(tz).date() - st.started.astimezone(tz).date()).days
        return H.from_days(closed), dis

    notes: dict[str, str] = {}
    oracle = gates.history_exits(read, notes=notes)
    for i, values in enumerate(days):
        closed.append(values)
        lc.step(local_midnight(TZ_START + timedelta(days=i + 1), tz), oracle)
    return lc


def test_a_stage_leaves_by_the_first_exit_that_fires_and_the_transition_names_it(program):
    good = {"members": 10.0, "daily_speak_rate": 0.3}
    lc = _drive(program, [good] * 6)
    passed = [t for t in lc.transitions if t.event == "passed"]
    # windows of 3 days close on day 2 (the 3rd), then `for: 3d` needs days 2, 3, 4
    assert [(t.stage, t.exit, t.at.date()) for t in passed] == [
        ("growth", "success", TZ_START + timedelta(days=5))
    ]
    assert ("deepening", "started") in [(t.stage, t.event) for t in lc.transitions]
    growth = next(s for s in lc.states if s.stage == "growth")
    assert (growth.outcome, growth.exit) == ("passed", "success")


def test_a_decline_exit_goes_to_its_stage_and_says_which_exit_it_was(program):
    lc = _drive(program, [{"members": 1.0, "daily_speak_rate": 0.5}] * 3)
    got = [(t.stage, t.event, t.detail, t.exit) for t in lc.transitions if t.stage == "growth"]
    assert ("growth", "passed", "", "decline") in got
    assert ("growth", "goto", "dissolution", "decline") in got
    assert "deepening" not in {s.stage for s in lc.states}


def test_a_plain_gate_oracle_still_answers_for_the_first_exit(program):
    lc = Lifecycle.start(program, local_midnight(TZ_START, program.tz))
    lc.step(local_midnight(TZ_START + timedelta(days=1), program.tz), lambda s, st, now: True)
    first = next(t for t in lc.transitions if t.event == "passed")
    assert (first.stage, first.exit) == ("growth", "success")


def test_a_transition_round_trips_through_plain_data_with_its_exit():
    t = Transition(datetime(2027, 1, 5, tzinfo=UTC), "s", "passed", exit="decline")
    d = t.as_dict()
    assert d["exit"] == "decline" and Transition.from_dict(d) == t
    old = {k: v for k, v in d.items() if k != "exit"}  # saved before exits had ids
    assert Transition.from_dict(old).exit is None


def test_plan_can_assume_any_exit_and_a_hold_delays_the_assumed_pass(program):
    start = local_midnight(TZ_START, program.tz)
    lc = run_lifecycle(program, start, 10, assumed_exits(program, taken={"growth": "decline"}))
    assert [t.exit for t in lc.transitions if t.event == "passed"] == ["decline"]
    assert "dissolution" in {s.stage for s in lc.states}
    lc = run_lifecycle(program, start, 10, assumed_gate(program, "pass"))
    passed = next(t for t in lc.transitions if t.event == "passed")
    # the first exit holds `for: 3d` on `avg(x, 3d)`, and the stage starts with the history: the
    # window has its 3 days on day 3, then it holds 3 days in a row: day 5 at the earliest
    assert (passed.exit, passed.at.date()) == ("success", TZ_START + timedelta(days=5))


# -- member attributes and conditions ----------------------------------------------------------


def test_unset_attributes_have_their_documented_values(program):
    d = members.defaults(program.playbook)
    assert (d["source"], d["referrer"], d["team"], d["approved"], d["points"]) == (
        "organic", "", "", False, 0.0
    )  # fmt: skip
    assert d["city"] == "" and d["vip"] is False and math.isnan(d["score"])


def test_a_declared_attribute_is_coerced_or_refused_with_a_reason(program):
    attrs = program.playbook.attributes
    assert members.coerce(attrs["score"], "12.5") == 12.5
    assert members.coerce(attrs["vip"], "yes") is True
    with pytest.raises(ValueError, match="one of 小学, 初中"):
        members.coerce(attrs["grade"], "大学")
    with pytest.raises(ValueError, match="is a number"):
        members.coerce(attrs["score"], "lots")


def test_a_segment_reads_one_member_and_many_members_alike(program):
    pb = program.playbook
    one = members.member_values(pb, {"source": "invite", "city": "北京", "points": 120})
    assert members.segment_mask(pb, "invited", one) is True
    assert members.segment_mask(pb, "bj", one) is True
    env = members.member_arrays(
        pb,
        {"source": np.array(["invite", "organic", "invite"], dtype=object),
         "city": np.array(["北京", "北京", "上海"], dtype=object),
         "points": np.array([120.0, 300.0, 500.0])},
        (3,),
    )  # fmt: skip
    assert members.segment_mask(pb, "invited", env).tolist() == [True, False, True]
    assert members.segment_mask(pb, "bj", env).tolist() == [True, True, False]


def test_a_condition_on_an_unset_number_does_not_hold(program):
    pb = program.playbook
    env = members.member_values(pb, {})
    assert members.matches(_cond("score >= 0"), env) is False
    assert members.matches(_cond("not (score < 0)"), env) is False
    assert members.matches(None, env) is True


def test_a_tier_audience_reads_the_members_tier_id(program):
    env = {"tier": np.array(["vip", "base"], dtype=object)}
    assert members.audience_mask(program.playbook, "tier:vip", env).tolist() == [True, False]


# -- counted metrics ---------------------------------------------------------------------------


def _metric(count: Count, per: Count | None = None) -> Metric:
    return Metric("m", "ratio" if per else "count", "", None, None, count, per)


def test_a_ratio_with_an_empty_denominator_is_undefined_not_zero():
    m = _metric(Count(CountOf.MEMBERS), Count(CountOf.MEMBERS))
    assert math.isnan(counted.value(m, 0.0, 0.0))
    assert counted.value(m, 3.0, 4.0) == 0.75
    assert counted.value(m, np.array([1.0, 0.0]), np.array([2.0, 0.0]))[0] == 0.5


def test_a_windowed_count_sums_the_trailing_days_today_included():
    c = Count(CountOf.JOINS, window=timedelta(days=3))
    assert counted.count_value(c, daily=[5, 1, 2, 3]) == 6
    assert counted.count_value(Count(CountOf.EVENTS, event="invite"), daily=[5, 1, 2, 3]) == 11
    assert counted.count_value(Count(CountOf.EVER), current=7) == 7
    runs = np.array([[5, 1, 2, 3], [0, 0, 0, 1]])
    assert counted.count_value(c, daily=runs).tolist() == [6, 1]


def test_a_cumulative_count_never_falls():
    assert counted.keep_cumulative(5.0, 3.0) == 5.0
    assert counted.keep_cumulative(math.nan, 3.0) == 3.0
    assert counted.keep_cumulative(np.array([5.0, 1.0]), np.array([3.0, 2.0])).tolist() == [5, 2]


# -- leaderboards, teams -----------------------------------------------------------------------


def test_ties_on_a_leaderboard_go_to_the_earlier_joiner_then_the_smaller_id():
    measure = [3, 5, 5, 3, 0]
    joined = [1, 2, 1, 1, 0]
    ids = ["d", "b", "c", "a", "e"]
    assert list(ranking.order(measure, joined, ids)[:4]) == [2, 1, 3, 0]
    top = ranking.top_members(measure, joined, ids, 3)
    assert top.tolist() == [False, True, True, True, False]
    # nobody tops a board with a measure of 0
    assert ranking.top_members([0, 0], [0, 1], ["a", "b"], 1).tolist() == [False, False]


def test_a_leaderboard_over_runs_ranks_each_run_on_its_own():
    measure = np.array([[1, 2, 3], [3, 2, 1]])
    got = ranking.top_members(measure, [0, 1, 2], [0, 1, 2], 1)
    assert got.tolist() == [[False, False, True], [True, False, False]]


def test_team_scores_and_the_top_team_ties_to_the_team_named_first():
    scores = ranking.team_scores([0, 1, 1, 2, 0], [3, 1, 2, 3, math.nan], 3)
    assert scores.tolist() == [3, 3, 3]
    assert ranking.top_teams(scores, 2).tolist() == [0, 1]


def test_teams_round_robin_balanced_and_by_attribute():
    names = ("红", "蓝", "绿")
    rr = Teams(names, TA.ROUND_ROBIN, "checkins")
    assert [TM.assign(rr, k, [0, 0, 0]) for k in range(4)] == ["红", "蓝", "绿", "红"]
    bal = Teams(names, TA.BALANCED, "checkins")
    assert TM.assign(bal, 9, [4, 2, 2]) == "蓝"
    by = Teams((), TA.ATTRIBUTE, "checkins", by="city")
    assert (TM.assign(by, 0, [], "北京"), TM.assign(by, 0, [], None)) == ("北京", "")


# -- points and milestones -----------------------------------------------------------------


def test_points_are_spent_oldest_first_and_lapse_after_expire():
    lots = points.spend([50.0, 30.0, 20.0], 60)
    assert lots.tolist() == [0.0, 20.0, 20.0]
    kept, gone = points.lapse([50.0, 30.0, 20.0], [0, 10, 20], 30, 30)
    assert kept.tolist() == [0.0, 30.0, 20.0] and gone == 50.0
    many = points.spend(np.array([[50.0, 30.0], [10.0, 90.0]]), np.array([10.0, 50.0]))
    assert many.tolist() == [[40.0, 30.0], [0.0, 50.0]]


def test_a_redemption_is_refused_with_its_reason(program):
    items = program.playbook.points.redeem
    assert points.check_redeem(items, "mug", 250).ok
    short = points.check_redeem(items, "mug", 150)
    assert short.refusal == points.Refusal.BALANCE and "costs 200" in short.message
    assert points.check_redeem(items, "mug", 900, redeemed=2).refusal == points.Refusal.STOCK
    assert points.check_redeem(items, "car", 900).refusal == points.Refusal.UNKNOWN_ITEM
    assert points.earned(program.playbook.points, "post") == 10


def test_a_milestone_fires_once_when_the_counter_crosses_it():
    assert milestones.crossed(9, 10, 10)
    assert not milestones.crossed(10, 11, 10)  # already there
    assert not milestones.crossed(9, 10, 10, fired=True)  # it dropped and rose again
    got = milestones.crossed(np.array([0, 9, 12]), np.array([12, 9, 13]), 10)
    assert got.tolist() == [True, False, False]


def test_milestone_and_redeemed_event_rules_match_their_facts(tmp_path):
    text = (
        BASE
        + """\
points:
  earn: {checkin: 5}
  redeem:
    mug: {title: 杯, cost: 200}
    pen: {title: 笔, cost: 50}
stages:
  s:
    actions:
      ten: {on: member.milestone, counter: invites, reaches: 10, do: message, to: member, text: hi}
      mug-ship: {on: member.redeemed, item: mug, do: task, owner: ops, text: ship}
      any-redeem: {on: member.redeemed, do: message, to: member, text: thanks}
"""
    )
    p = tmp_path / "p.yaml"
    p.write_text(text, encoding="utf-8")
    prog = Program(load_playbook(str(p)).playbook)
    at = local_midnight(TZ_START, prog.tz)
    fired = prog.on_event(["s"], "member.milestone", "m1", at, milestone=("invites", 10))
    assert [o.action for o in fired] == ["ten"]
    assert prog.on_event(["s"], "member.milestone", "m1", at, milestone=("invites", 5)) == []
    got = prog.on_event(["s"], "member.redeemed", "m1", at, item="mug")
    assert [o.action for o in got] == ["mug-ship", "any-redeem"]
    got = prog.on_event(["s"], "member.redeemed", "m1", at, item="pen")
    assert [o.action for o in got] == ["any-redeem"]
    assert [m.action for m in milestones.milestones(prog.playbook.actions)] == ["ten"]


# -- targets and weak links --------------------------------------------------------------------


def test_targets_at_least_and_at_most():
    core = Target("core_members", 500, by=timedelta(days=90))
    churn = Target("churn_rate", 0.1, at_most=True)
    assert T.met(500, core) and not T.met(math.nan, core)
    assert (T.progress(250, core), T.shortfall(250, core)) == (0.5, 250)
    assert (T.progress(0.2, churn), T.shortfall(0.05, churn)) == (0.5, 0)
    assert T.due_day(core, 365) == 90 and T.due_day(churn, 365) == 365
    assert T.met(np.array([400, 600]), core).tolist() == [False, True]
    assert T.describe(core) == ">= 500 by day 90"


def test_weak_links_name_each_failing_clause_and_by_how_much():
    text = "core_members >= 500 and avg(daily_speak_rate, 7d) >= 20% and churn_rate <= 10%"
    node = ex.parse(text)
    h = {"core_members": [420.0] * 7, "daily_speak_rate": [0.15] * 7, "churn_rate": [0.05] * 7}
    env = H.condition_env(node, h, 7)
    links = gates.weak_links(node, env, text)
    assert [(c.text, c.metric, c.holds) for c in links] == [
        ("core_members >= 500", "core_members", False),
        ("avg(daily_speak_rate, 7d) >= 20%", "avg(daily_speak_rate, 7d)", False),
    ]
    assert links[0].shortfall == 80 and links[1].shortfall == pytest.approx(0.05)
    every = gates.clauses(node, env, text)
    assert every[2].holds is True and every[2].shortfall == 0


def test_an_exits_status_counts_the_days_it_has_held():
    e = _exit("success", "members >= 5", hold=7)
    st = gates.exit_status(e, {"members": [1, 6, 6, 6]}, 4)
    assert (st.fires, st.held_days, st.hold_days) == (False, 3, 7)
    assert st.as_dict()["clauses"][0]["holds"] is True


# -- metrics a construct adds --------------------------------------------------------------


def test_a_playbooks_construct_metrics_have_definitions(program):
    defs = M.definitions(program.playbook)
    for name in ("invite_joins", "wechat_mp_share", "points_outstanding", "team_score_spread",
                 "approval_rate"):  # fmt: skip
        assert name in defs and defs[name].requires, name
    assert set(defs) == set(program.playbook.builtin_metrics())
    assert math.isnan(M.before_start(program.playbook)["invite_share"])
    assert M.why_undefined("approval_rate", {}, program.playbook).startswith("when no application")
    top, bottom = M.team_extremes(np.array([[4.0, 1.0], [0.0, 0.0]]))
    spread = M.team_spread(top, bottom)
    assert spread[0] == 0.75 and math.isnan(spread[1])


def test_docs_metrics_md_lists_the_construct_metrics():
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert M.markdown_table() in doc and "`<channel>_share`" in doc


# -- incidents -----------------------------------------------------------------------------


def test_incident_steps_are_timed_from_the_opening(program):
    inc = program.playbook.incidents["quiet"]
    steps = incidents.schedule(inc)
    assert [(s.step.kind, s.role, s.at, s.due, s.only_if_open) for s in steps] == [
        ("do", "ops", timedelta(0), None, False),
        ("alert", "ops", timedelta(0), timedelta(minutes=30), False),
        ("escalate", "ops", timedelta(hours=4), None, True),
    ]
    assert incidents.detects(inc, {"daily_speak_rate": [0.01, 0.02, 0.03]})
    assert not incidents.detects(inc, {"daily_speak_rate": [0.01, 0.02]})  # window not closed
    runs = np.array([[0.01, 0.02, 0.03], [0.3, 0.2, 0.1]])
    assert incidents.detects(inc, {"daily_speak_rate": runs}).tolist() == [True, False]


def test_an_undecided_exit_check_is_noted_per_stage_with_the_exit_it_concerns(program):
    notes: dict[str, str] = {}
    oracle = gates.history_exits(lambda s, st, now: ({"members": [9.0]}, 1), notes=notes)
    lc = Lifecycle.start(program, local_midnight(TZ_START, program.tz))
    lc.step(local_midnight(TZ_START + timedelta(days=1), program.tz), oracle)
    assert notes == {
        "growth": "exit success: undefined: avg(daily_speak_rate, 3d)"
        " (0 of the 3 days it reads have closed)"
    }
