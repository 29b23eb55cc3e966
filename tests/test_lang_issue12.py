"""Issue 12's language: members, segments, channels, counted metrics, targets, exits,
leaderboards, milestones, per-member tasks, points, teams and admission.

First the builder (the model objects plan, simulate and run read), then every new diagnostic,
triggered by a small playbook at its line and column (`token@2` = the token's second
occurrence), with the YAML inline.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sop.engine.lang.model import Audience, CountOf, TeamAssignment

from tests.conftest import BASE, position

# A playbook that uses every construct and is valid: each case below breaks one thing.
B12 = (
    BASE
    + """\
members:
  attributes:
    city: {type: string, title: 城市}
    grade: {type: enum, values: [小学, 初中, 高中]}
    phone: {type: string, pii: true}
    note: {type: string}
segments:
  bj: {title: 北京, when: city == "北京"}
  invited: {when: source == "invite", size: 40}
channels:
  invite: {title: 好友邀请, share: 30%, referral: true}
  wechat_mp: {share: 20%}
  kol: {opens: s2}
metrics:
  repeat_rate:
    {unit: ratio, count: {members: payments >= 2}, per: {members: payments >= 1}, target: 30%}
  fission_conv:
    unit: ratio
    count: {joins: source == "invite", window: 30d}
    per: {events: invite, window: 30d}
  checkins_total: {unit: count, count: {events: checkin, where: grade == "小学"}, cumulative: true}
  all_ever: {unit: count, count: {ever: true}, by_channel: true}
targets:
  core_members: {at_least: 50, by: 90d}
  churn_rate: {at_most: 10%}
  members: 100
admission:
  require: [note]
  approve: referrer != ""
  review: {owner: ops, within: 12h}
points:
  earn: {checkin: 5, invite: 50}
  expire: 365d
  redeem:
    mug: {title: 马克杯, cost: 200, stock: 10}
teams:
  names: [红队, 蓝队]
  score: checkins
tiers:
  levels:
    normal: {}
    vip: {promote: payments >= 2, size: 30}
templates:
  t: 你好
stages:
  s1:
    exit: {when: members >= 10, for: 3d}
    actions:
      a1: {cron: "0 9 * * *", do: post, to: "segment:bj", template: t}
      pack: {on: member.joined, where: source == "invite", do: message, to: member, text: 欢迎}
      call: {cron: "0 10 1 * *", do: task, for_each: "tier:vip", text: 1对1}
      top3: {cron: "0 20 * * 0", do: reward, to: {top: 3, by: invites}, text: 恭喜}
      pk: {cron: "0 20 * * 0", do: reward, to: {top: 1, by: checkins, teams: true}, text: 赢}
  s2:
    after: s1
    duration: {max: 60d}
    exits:
      - {id: success, when: "core_members >= 50 and avg(daily_speak_rate, 7d) >= 20%", for: 7d}
      - {id: decline, when: "avg(daily_speak_rate, 14d) < 5%", goto: s3}
    deadline: {after: 60d, then: {extend: 30d}}
  s3:
    rescue: true
routines:
  ten: {on: member.milestone, counter: invites, reaches: 10, do: reward, to: member, text: 奖}
  give: {on: member.milestone, counter: points, reaches: 1000, do: redeem, item: mug, to: member}
  ship: {on: member.redeemed, item: mug, do: task, text: 寄出}
  hi: {on: member.approved, do: message, to: member, text: 通过}
  bye: {on: member.rejected, do: message, to: member, text: 抱歉}
  applied: {on: member.applied, do: task, text: 审核}
incidents:
  quiet:
    owner: ops
    detect: avg(daily_speak_rate, 3d) < 5%
    steps: [{alert: ops, within: 30m}]
"""
)


def test_the_reference_of_every_construct_is_valid(check) -> None:
    res, _ = check(B12, plan_checks=False)
    assert [(d.code, d.message) for d in res.diagnostics] == []


def test_the_builder_makes_the_model_of_every_construct(check) -> None:
    res, _ = check(B12, plan_checks=False)
    pb = res.playbook
    assert pb.attributes["grade"].values == ("小学", "初中", "高中")
    assert pb.attributes["phone"].pii and pb.attributes["city"].title == "城市"
    assert pb.segments["invited"].size == 40 and pb.segments["bj"].when.node is not None
    assert pb.channels["invite"].share == pytest.approx(0.3) and pb.channels["invite"].referral
    assert pb.channels["kol"].opens == "s2" and pb.channels["kol"].share is None
    rr = pb.metrics["repeat_rate"]
    assert rr.count is not None and rr.count.of == CountOf.MEMBERS
    assert rr.per is not None and rr.per.where is not None
    assert rr.per.where.text == "payments >= 1"
    fc = pb.metrics["fission_conv"]
    assert fc.count is not None and fc.count.of == CountOf.JOINS
    assert fc.count.window == timedelta(days=30)
    assert fc.per is not None and (fc.per.of, fc.per.event) == (CountOf.EVENTS, "invite")
    ck = pb.metrics["checkins_total"]
    assert ck.cumulative and ck.count is not None and ck.count.where is not None
    ever = pb.metrics["all_ever"]
    assert ever.by_channel and ever.count is not None and ever.count.where is None
    # targets: `targets:` and `metrics.*.target` in one mapping
    assert set(pb.targets) == {"repeat_rate", "core_members", "churn_rate", "members"}
    assert rr.target == pb.targets["repeat_rate"] and rr.target.value == pytest.approx(0.3)
    assert pb.targets["churn_rate"].at_most and pb.targets["churn_rate"].value == 0.1
    assert pb.targets["core_members"].by == timedelta(days=90)
    assert (pb.targets["members"].value, pb.targets["members"].at_most) == (100, False)
    adm = pb.admission
    assert adm is not None and adm.require == ("note",) and adm.review_owner == "ops"
    assert adm.review_within == timedelta(hours=12) and adm.approve is not None
    pts = pb.points
    assert pts is not None and pts.earn == {"checkin": 5, "invite": 50}
    assert pts.redeem["mug"].cost == 200 and pts.redeem["mug"].stock == 10
    assert pts.expire == timedelta(days=365)
    assert pb.teams is not None and pb.teams.names == ("红队", "蓝队")
    assert pb.teams.assign == TeamAssignment.ROUND_ROBIN and pb.teams.score == "checkins"
    assert pb.tiers is not None and pb.tiers.levels[1].size == 30


def test_exits_are_always_filled_and_the_single_exit_is_named_pass(check) -> None:
    res, _ = check(B12, plan_checks=False)
    s1, s2, s3 = (res.playbook.stages[k] for k in ("s1", "s2", "s3"))
    (only,) = s1.exits
    assert (only.id, only.hold, only.goto) == ("pass", timedelta(days=3), None)
    assert s1.gate == only.when and s1.goto is None
    assert [e.id for e in s2.exits] == ["success", "decline"]
    assert s2.exits[0].hold == timedelta(days=7) and s2.exits[1].goto == "s3"
    assert s2.gate == s2.exits[0].when  # old readers see the first exit
    assert s2.deadline is not None and s2.deadline.extend == timedelta(days=30)
    assert s3.exits == ()


def test_actions_carry_audiences_leaderboards_filters_and_milestones(check) -> None:
    res, _ = check(B12, plan_checks=False)
    acts = res.playbook.actions
    assert acts["a1"].audience == "segment:bj" and Audience.segment_of("segment:bj") == "bj"
    assert acts["pack"].where is not None and acts["pack"].where.text == 'source == "invite"'
    assert acts["call"].for_each == "tier:vip" and acts["call"].audience == Audience.STAFF
    top3, pk = acts["top3"], acts["pk"]
    assert top3.audience == Audience.TOP and top3.top is not None
    assert (top3.top.n, top3.top.by, top3.top.teams) == (3, "invites", False)
    assert pk.top is not None and pk.top.teams
    ten = acts["ten"].schedule
    assert (ten.event, ten.counter, ten.reaches) == ("member.milestone", "invites", 10)
    assert acts["give"].redeem_item == "mug" and acts["give"].schedule.item is None
    assert acts["ship"].schedule.item == "mug" and acts["ship"].redeem_item is None


def test_the_vocabularies_hold_every_construct(check) -> None:
    res, _ = check(B12, plan_checks=False)
    pb = res.playbook
    units = pb.metric_units()
    for name in ("invite_joins", "kol_joins", "points_issued", "points_outstanding"):
        assert units[name] == "count"
    for name in ("invite_share", "team_score_spread", "approval_rate", "repeat_rate"):
        assert units[name] == "ratio"
    assert "applications" in units and "team_score_top" in units
    attrs = pb.attribute_units()
    assert attrs["city"] == attrs["source"] == attrs["grade"] == "string"
    assert attrs["invites"] == attrs["points"] == "count" and attrs["approved"] == "boolean"


def test_constructs_add_metrics_only_when_declared(check) -> None:
    text = BASE + "stages:\n  s1: {}\n"
    res, _ = check(text, plan_checks=False)
    units = res.playbook.metric_units()
    assert not {"points_issued", "team_score_top", "applications"} & set(units)


def _with(old: str, new: str) -> str:
    assert old in B12, old
    return B12.replace(old, new, 1)


R = "routines:\n"
CASES: list[tuple[str, str, str]] = [
    ("SOP212", _with("by: invites}", "by: invitez}"), "invitez"),
    ("SOP213", _with('to: "segment:bj"', 'to: "segment:bk"'), '"segment:bk"'),
    ("SOP214", _with('source == "invite", size', 'source == "invte", size'), '"invte"'),
    ("SOP215", _with('grade == "小学"', 'grade == "大学"'), '"大学"'),
    ("SOP216", _with("item: mug, do: task", "item: cup, do: task"), "cup"),
    ("SOP217", _with("earn: {checkin: 5,", "earn: {chekin: 5,"), "chekin"),
    ("SOP218", _with("  members: 100\n", "  member_count: 100\n"), "member_count"),
    (
        "SOP219",
        _with(R, R + '  tell: {on: member.joined, do: post, text: "{{ member.phone }}"}\n'),
        "phone }}",
    ),
    (
        "SOP236",
        _with("for: 7d}", "for: 100d}").replace("{extend: 30d}", "{extend: 30d, goto: s3}"),
        "100d",
    ),
    (
        "SOP244",
        _with('bj: {title: 北京, when: city == "北京"}', "bj: {when: members > 3}"),
        "members > 3",
    ),
    ("SOP271", _with("    note: {type: string}\n", "    source: {type: string}\n"), "source:"),
    (
        "SOP272",
        _with("all_ever: {unit: count,", "all_ever: {unit: count, definition: members,"),
        "{ever: true}",
    ),
    ("SOP273", _with("  members: 100\n", "  members: 100\n  repeat_rate: 40%\n"), "repeat_rate@2"),
    ("SOP274", _with("churn_rate: {at_most: 10%}", "churn_rate: {at_most: 10}"), "10}"),
    (
        "SOP275",
        _with("per: {members: payments >= 1}", "per: {events: payment}"),
        "{events: payment}",
    ),
    ("SOP276", _with("wechat_mp: {share: 20%}", "wechat_mp: {share: 80%}"), "80%"),
    (
        "SOP277",
        _with("  kol: {opens: s2}\n", "  kol: {}\n  ads: {}\n"),
        "ads",
    ),
    (
        "SOP278",
        _with("wechat_mp: {share: 20%}", "wechat_mp: {referral: true, title: 公众号}"),
        "true, title",
    ),
    ("SOP279", _with("teams:\n  names: [红队, 蓝队]\n  score: checkins\n", ""), "true}, text: 赢"),
    ("SOP283", _with("by: invites}", "by: city}"), "city}"),
    (
        "SOP284",
        _with(R, R + "  hot: {on: member.joined, do: reward, to: {top: 3, by: points}, text: x}\n"),
        "{top: 3, by: points",
    ),
    (
        "SOP285",
        _with(
            '- {id: success, when: "core',
            '- {id: any, when: "true"}\n      - {id: success, when: "core',
        ),
        "success",
    ),
    (
        "SOP286",
        _with(
            "    exit: {when: members >= 10, for: 3d}\n",
            "    exit: {when: members >= 10}\n    exits: [{id: x, when: members > 1}]\n",
        ),
        "exits",
    ),
    ("SOP296", _with("count: {ever: true}", "count: {ever: true, window: 7d}"), "7d"),
    (
        "SOP297",
        _with(R, R + '  brief: {cron: "0 9 * * 1", do: task, where: city == "北京", text: x}\n'),
        'city == "北京", text',
    ),
    (
        "SOP298",
        _with(R, R + '  each: {cron: "0 9 * * 1", do: post, for_each: "tier:vip", text: x}\n'),
        '"tier:vip", text: x',
    ),
    (
        "SOP305",
        _with(R, R + '  each: {on: member.joined, do: task, for_each: "tier:vip", text: x}\n'),
        '"tier:vip", text: x',
    ),
    ("SOP299", _with("  score: checkins\n", "  score: checkins\n  by: city\n"), "city\n"),
    (
        "SOP237",
        _with(
            "  s3:\n    rescue: true\n",
            "  s3:\n    rescue: true\n    deadline: {then: {alert: ops}}\n",
        ),
        "deadline: {then",
    ),
    ("SOP238", _with("goto: s3}", "goto: s2}"), "s2}@2"),
    (
        "SOP239",
        _with(
            "steps: [{alert: ops, within: 30m}]",
            "steps: [{escalate: ops, after: 4h}, {escalate: ops, after: 1h}]",
        ),
        "1h",
    ),
    ("SOP238", _with("then: {extend: 30d}", "then: {goto: s2}"), "s2}@2"),
]


@pytest.mark.parametrize(("code", "text", "token"), CASES, ids=[c[0] for c in CASES])
def test_new_code_is_reported_at_token(check, code: str, text: str, token: str) -> None:
    res, text = check(text, plan_checks=False)
    found = [d for d in res.diagnostics if d.code == code]
    assert found, f"{code} not reported; got {[(d.code, d.message) for d in res.diagnostics]}"
    needle, _, nth = token.partition("@")
    assert (found[0].line, found[0].column) == position(text, needle, int(nth or 1)), found[0]
    assert found[0].message and found[0].hint


# Mistakes the issue lists that existing codes already name, located the same way.
OLD_CODES: list[tuple[str, str, str]] = [
    ("SOP201", _with("{id: decline,", "{id: success,"), "success@2"),
    ("SOP202", _with("goto: s3}", "goto: s9}"), "s9"),
    ("SOP204", _with("review: {owner: ops", "review: {owner: boss"), "boss"),
    ("SOP212", _with("require: [note]", "require: [notes]"), "notes"),
    ("SOP205", _with('for_each: "tier:vip"', 'for_each: "tier:gold"'), '"tier:gold"'),
    ("SOP101", _with("counter: invites, reaches: 10,", "counter: invites,"), "member.milestone"),
    ("SOP283", _with("counter: invites,", "counter: city,"), "city,"),
    (
        "SOP292",
        _with("hi: {on: member.approved,", "hi: {on: member.approved, reaches: 3,"),
        "3, do: message",
    ),
    ("SOP216", _with("do: redeem, item: mug", "do: redeem, item: cap"), "cap"),
    ("SOP217", _with("per: {events: invite,", "per: {events: invites,"), "invites"),
    ("SOP240", _with('where: source == "invite"', "where: 'avg(invites, 7d) > 1'"), "avg("),
    (
        "SOP244",
        _with("exit: {when: members >= 10", "exit: {when: payments >= 10"),
        "payments >= 10",
    ),
    ("SOP241", _with("when: members >= 10", "when: memberz >= 10"), "memberz"),
    ("SOP205", _with('when: source == "invite", size', 'when: tier == "gold", size'), '"gold"'),
    ("SOP215", _with("when: city ==", 'when: team == "黄队" or city =='), '"黄队"'),
]


@pytest.mark.parametrize(("code", "text", "token"), OLD_CODES, ids=[c[0] for c in OLD_CODES])
def test_issue_12_mistakes_with_existing_codes(check, code: str, text: str, token: str) -> None:
    test_new_code_is_reported_at_token(check, code, text, token)


def test_a_percent_outside_a_ratio_is_a_schema_error(check) -> None:
    res, text = check(_with("share: 30%", "share: 30 percent"), plan_checks=False)
    (d,) = [d for d in res.diagnostics if d.code in ("SOP102", "SOP103")]
    assert (d.line, d.column) == position(text, "30 percent")


def test_a_leaderboard_needs_top_and_by(check) -> None:
    res, _ = check(_with("{top: 3, by: invites}", "{top: 3}"), plan_checks=False)
    assert [d.code for d in res.diagnostics] == ["SOP101"]


def test_a_declared_attribute_may_be_read_in_a_template(check) -> None:
    res, _ = check(_with("text: 欢迎}", 'text: "欢迎 {{ member.city }}"}'), plan_checks=False)
    assert res.diagnostics == []


def test_pii_may_go_to_the_member_themself(check) -> None:
    res, _ = check(_with("text: 欢迎}", 'text: "{{ member.phone }}"}'), plan_checks=False)
    assert res.diagnostics == []


# The review of issue 12: each mistake below was accepted before and is now located.
W14 = "exit: {when: 'avg(members, 14d) >= 10', for: 20d}\n    duration: {max: 30d}"


def _attr(line: str) -> str:
    """B12 with one more declared attribute."""
    return _with("    note: {type: string}\n", f"    note: {{type: string}}\n    {line}\n")


REVIEW_CASES: list[tuple[str, str, str]] = [
    (
        "SOP103",
        _with(
            "    note: {type: string}\n",
            "    note: {type: string}\n    n: {type: integer, default: abc}\n",
        ),
        "abc",
    ),
    (
        "SOP103",
        _with(
            "    note: {type: string}\n",
            "    note: {type: string}\n    n: {type: integer, default: 2.5}\n",
        ),
        "2.5",
    ),
    (
        "SOP103",
        _with("values: [小学, 初中, 高中]}", "values: [小学, 初中], default: 大学}"),
        "大学",
    ),
    ("SOP103", _with("values: [小学, 初中, 高中]}", "values: [小学, 初中, 小学]}"), "[小学"),
    (
        "SOP270",
        _with("metrics:\n", "metrics:\n  invite_joins: {unit: count, count: {ever: true}}\n"),
        "invite_joins",
    ),
    (
        "SOP270",
        _with("metrics:\n", "metrics:\n  team_score_top: {unit: count, count: {ever: true}}\n"),
        "team_score_top",
    ),
    ("SOP103", _with("  kol: {opens: s2}\n", "  kol: {opens: s2}\n  organic: {}\n"), "organic: {}"),
    ("SOP277", _with("  kol: {opens: s2}\n", "  kol: {opens: s1}\n  ads: {}\n"), "ads"),
    ("SOP103", _with("{at_least: 50, by: 90d}", "{at_least: 50, by: 36h}"), "36h"),
    # a starting stage: avg(x, 14d) has its days on day 14, then holds 20 days: day 33 > 30
    ("SOP236", _with("exit: {when: members >= 10, for: 3d}", W14), "20d"),
    ("SOP103", _with("reaches: 10,", "reaches: 0,"), "0, do: reward"),
    (
        "SOP103",
        _with('source == "invite", window: 30d}', 'source == "invite", window: 12h}'),
        "12h",
    ),
    ("SOP103", _with("reaches: 10,", "reaches: 2.5,"), "2.5"),
    (
        "SOP205",
        _with(
            "tiers:\n  levels:\n    normal: {}\n    vip: {promote: payments >= 2, size: 30}\n", ""
        )
        .replace('for_each: "tier:vip"', 'where: tier == "vip"')
        .replace("do: task, where", "do: message, to: member, where"),
        '"vip"',
    ),
    (
        "SOP215",
        _with("teams:\n  names: [红队, 蓝队]\n  score: checkins\n", "")
        .replace(", teams: true}", "}")
        .replace('source == "invite", size', 'team == "红队", size'),
        '"红队"',
    ),
]


@pytest.mark.parametrize(
    ("code", "text", "token"), REVIEW_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(REVIEW_CASES)]
)
def test_review_mistakes_are_located(check, code: str, text: str, token: str) -> None:
    test_new_code_is_reported_at_token(check, code, text, token)


def test_a_valid_attribute_default_is_accepted(check) -> None:
    text = _with(
        "    note: {type: string}\n",
        "    note: {type: string}\n    n: {type: integer, default: 3}\n",
    )
    res, _ = check(text, plan_checks=False)
    assert [d.code for d in res.diagnostics] == []


def test_an_extend_only_deadline_lets_a_long_hold_fire(check) -> None:
    # the stage runs on after `extend`: the exit can still fire on day 20
    text = _with(
        "exit: {when: members >= 10, for: 3d}",
        "exit: {when: members >= 10, for: 20d}\n    deadline: {after: 5d, then: {extend: 3d}}",
    )
    res, _ = check(text, plan_checks=False)
    assert [d.code for d in res.diagnostics] == []


def test_a_hold_the_stage_outlasts_is_not_sop236(check) -> None:
    res, _ = check(_with("exit: {when: members >= 10, for: 3d}", W14.replace("30d", "33d")))
    assert "SOP236" not in [d.code for d in res.diagnostics]


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        (
            'when: "core_members >= 50 and avg(daily_speak_rate, 7d) >= 20%"',
            "when: core_members >= 50 and avg(daily_speak_rate, 7d) >= 20%",
            "SOP100",
        ),
        (
            'bj: {title: 北京, when: city == "北京"}',
            'bj: {title: 北京, when: city in ["北京", "上海"]}',
            "SOP001",
        ),
    ],
)
def test_an_unquoted_condition_in_a_flow_mapping_says_quote_it(check, old, new, code) -> None:
    res, _ = check(_with(old, new), plan_checks=False)
    found = [d for d in res.diagnostics if d.code == code]
    assert found and "quote the condition" in found[0].hint, res.diagnostics


@pytest.mark.parametrize(
    ("when", "token", "words"),
    [
        ("avg(daily_speak_rate, 7d) >= 20", "20", "can never hold (did you mean 0.2?)"),
        ("daily_speak_rate < 20", "20", "always holds (did you mean 0.2?)"),
        ("20 > daily_speak_rate", "20", "always holds (did you mean 0.2?)"),
        ("daily_speak_rate >= 300%", "300%", "`>= 300%` it can never hold"),
    ],
)
def test_sop243_on_windows_with_words_by_direction(check, when: str, token: str, words) -> None:
    text = _with("exit: {when: members >= 10, for: 3d}", f"exit: {{when: '{when}', for: 3d}}")
    res, text = check(text, plan_checks=False)
    (d,) = [d for d in res.diagnostics if d.code == "SOP243"]
    line, col = position(text, f"'{when}'")
    assert (d.line, d.column) == (line, col + 1 + when.index(token))
    assert d.message.endswith(words) and ("did you mean" in words) == ("did you mean" in d.message)


@pytest.mark.parametrize(
    ("target", "words"),
    [("{at_most: 300%}", "300% is always met"), ("{at_least: 30}", "reached (did you mean 0.3?)")],
)
def test_sop274_words_by_direction(check, target: str, words: str) -> None:
    res, _ = check(_with("churn_rate: {at_most: 10%}", f"churn_rate: {target}"), plan_checks=False)
    (d,) = [d for d in res.diagnostics if d.code == "SOP274"]
    assert d.message.endswith(words)


def test_a_hold_of_no_days_is_located(check) -> None:
    res, text = check(
        _with("members >= 10, for: 3d}", "members >= 10, for: 0d}"), plan_checks=False
    )
    (d,) = [d for d in res.diagnostics if d.code == "SOP103"]
    line, col = position(text, "for: 0d}")
    assert (d.line, d.column) == (line, col + len("for: "))


def test_an_unquoted_true_condition_hints_to_quote_it(check) -> None:
    res, _ = check(_with("members >= 10, for: 3d}", "true}"), plan_checks=False)
    (d,) = [d for d in res.diagnostics if d.code == "SOP102"]
    assert 'quote it to keep it as text, e.g. "true"' in d.hint
