"""The simulator's models of the member-level constructs (issue 12): channels, declared attribute
distributions, segments, admission, counted metrics, points, milestones, leaderboards, teams,
per-member tasks, exits with `for:` and windows, targets and incidents — each held to the rule
its program module defines, and to the built-in metrics where the two must agree."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sop.engine.program import teams as program_teams
from sop.engine.sim.constructs import ChunkState, Constructs
from sop.engine.sim.kernel import Simulator, _Pop, bytes_per_member
from sop.engine.sim.montecarlo import SimOptions, simulate
from sop.engine.sim.scenario import (
    Acquisition,
    AdmissionModel,
    AttributeModel,
    ChannelInflow,
    Distribution,
    PointsModel,
    Retention,
    Scenario,
    ScenarioError,
    load_scenario,
)
from sop.engine.validate import load_playbook, validate_file

from tests.conftest import PLAYBOOKS, position

BASE = """\
    playbook: t
    timezone: Asia/Shanghai
    roles: {ops: {headcount: 1}, care: {headcount: 1}}
    defaults: {owner: ops}
    members:
      attributes:
        city: {type: string, title: 城市}
        grade: {type: enum, title: 年级, values: [一年级, 二年级, 三年级]}
        budget: {type: number, title: 预算}
        vip: {type: boolean, title: VIP}
    channels:
      store: {title: 门店}
      kol: {title: KOL}
      invite: {title: 邀请, referral: true}
    segments:
      shanghai: {title: 上海, when: city == "上海"}
      low: {title: 低年级, when: 'grade in ["一年级", "二年级"]'}
      rich: {title: 预算高, when: budget >= 500}
      vips: {title: VIP, when: vip}
      kol-fans: {title: KOL, when: source == "kol"}
    stages:
      only: {}
    """

# nobody leaves, nobody joins by word of mouth: counts are exact
STILL = Retention(alpha=1.0, beta=1e6, period_days=30)


def _quiet(seed: int = 0, **kw: object) -> Acquisition:
    args: dict[str, object] = dict(
        seed_users=seed, organic_per_day=0, bass_p=0, bass_q=0, invites_per_member_per_day=0
    )
    args.update(kw)
    return Acquisition(**args)  # type: ignore[arg-type]


def _pb(tmp_path: Path, text: str, name: str = "p.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    res = load_playbook(str(p))
    assert res.playbook is not None, [(d.code, d.message) for d in res.diagnostics]
    return res.playbook


def _with(text: str, section: str) -> str:
    """BASE with `section` (dedented YAML) added before `stages:`."""
    return text.replace(
        "    stages:", textwrap.indent(textwrap.dedent(section), "    ") + "    stages:"
    )


def _chunk(pb, sc: Scenario, days: int, runs: int = 4, seed: int = 1):
    sim = Simulator(pb, sc, days)
    return sim, sim.run_chunk(runs, np.random.SeedSequence(seed))


def _metric(res, name: str) -> np.ndarray:
    return res.metrics[:, :, res.metric_names.index(name)].astype(float)


# -- the scenario format ---------------------------------------------------------------------

SCENARIO = """\
scenario: s
acquisition:
  default_channel: store
  channels:
    kol: {per_day: 5, from_day: 3}
    store: {share: 0.5}
attributes:
  city: {values: {上海: 0.3, 北京: 0.2}, by_channel: {kol: {values: {上海: 0.9}}}}
  budget: {mean: 500, sd: 100, min: 0}
  vip: {p: 0.25}
admission: {applications_per_join: 0.9, approve_rate: 0.7, review_days: 2}
points: {redeem_per_day: 0.1}
"""


def test_scenario_channels_attributes_admission_and_points_load(tmp_path) -> None:
    pb = _pb(tmp_path, BASE)
    (tmp_path / "s.yaml").write_text(SCENARIO, encoding="utf-8")
    sc = load_scenario(str(tmp_path / "s.yaml"))
    assert sc.acquisition.default_channel == "store"
    assert sc.acquisition.channels == {
        "kol": ChannelInflow(per_day=5, from_day=3),
        "store": ChannelInflow(share=0.5),
    }
    city = sc.attributes["city"]
    assert city.base.values == {"上海": 0.3, "北京": 0.2}
    assert city.by_channel["kol"].values == {"上海": 0.9}
    assert sc.attributes["budget"].base == Distribution(mean=500, sd=100, low=0)
    assert sc.attributes["vip"].base.p == 0.25
    assert sc.admission == AdmissionModel(0.9, 0.7, 2)
    assert sc.points == PointsModel(0.1)
    assert sc.as_dict()["acquisition"]["channels"]["kol"]["per_day"] == 5
    # the playbook of BASE has no admission or points: modelling them is an error (SOP288)
    with pytest.raises(ScenarioError) as e:
        load_scenario(str(tmp_path / "s.yaml"), playbook=pb)
    assert sorted(d.code for d in e.value.diagnostics) == ["SOP288", "SOP288"]


def _repo(tmp_path: Path, scenario: str) -> tuple[Path, Path]:
    pb = tmp_path / "p.yaml"
    pb.write_text(textwrap.dedent(BASE), encoding="utf-8")
    (tmp_path / "scenarios").mkdir()
    sc = tmp_path / "scenarios" / "p.yaml"
    sc.write_text(scenario, encoding="utf-8")
    return pb, sc


def test_a_scenario_channel_or_attribute_the_playbook_lacks_is_located(tmp_path) -> None:
    text = (
        "scenario: x\n"
        "acquisition:\n  channels:\n    koll: {per_day: 1}\n"
        "attributes:\n  cty: {values: {a: 0.5}}\n"
    )
    _, sc = _repo(tmp_path, text)
    found = [(d.code, d.line, d.column, d.hint) for d in validate_file(str(sc)).diagnostics]
    assert ("SOP288", *position(text, "koll"), "did you mean `kol`?") in found
    assert ("SOP288", *position(text, "cty"), "did you mean `city`?") in found


def test_a_distribution_that_does_not_fit_its_attribute_is_located(tmp_path) -> None:
    text = (
        "scenario: x\n"
        "attributes:\n"
        "  grade: {values: {四年级: 0.5}}\n"
        "  budget: {values: {high: 0.5}}\n"
        "  city: {values: {a: 0.7, b: 0.6}}\n"
    )
    _, sc = _repo(tmp_path, text)
    found = [(d.code, d.line, d.column) for d in validate_file(str(sc)).diagnostics]
    assert ("SOP289", *position(text, "四年级")) in found  # not a value of the enum
    assert ("SOP289", *position(text, "values", 2)) in found  # a number takes mean/sd
    assert ("SOP289", 5, position(text, "{a: 0.7")[1]) in found  # adds up to 1.3


# -- channels and attributes -------------------------------------------------------------------


def test_joins_split_by_channel_and_each_draws_its_own_attributes(tmp_path) -> None:
    pb = _pb(tmp_path, BASE)
    sc = Scenario(
        acquisition=_quiet(
            organic_per_day=60,
            default_channel="store",
            channels={"kol": ChannelInflow(per_day=40, from_day=10), "store": ChannelInflow()},
        ),
        retention=STILL,
        attributes={
            "city": AttributeModel(
                Distribution(values={"上海": 0.2}), {"kol": Distribution(values={"上海": 0.8})}
            ),
            "budget": AttributeModel(Distribution(mean=500, sd=50)),
            "vip": AttributeModel(Distribution(p=0.3)),
        },
    )
    sim, res = _chunk(pb, sc, 40)
    joins = res.channel_joins  # (runs, channels): organic, store, kol, invite
    channels = list(sim.cx.channels)
    assert channels == ["organic", "store", "kol", "invite"]
    assert joins[:, channels.index("organic")].sum() == 0  # the default channel is `store`
    kol = joins[:, channels.index("kol")]
    assert np.allclose(kol / 30, 40, rtol=0.1)  # from day 10: 30 days of Poisson(40)
    assert np.allclose(joins[:, channels.index("store")] / 40, 60, rtol=0.1)
    segs = {s: res.segments[:, -1, j] for j, s in enumerate(sim.cx.segments)}
    members = res.metrics[:, -1, res.metric_names.index("members")]
    assert np.array_equal(segs["kol-fans"], kol)  # `source` is the channel
    expected = (0.2 * (members - kol) + 0.8 * kol) / members
    assert np.allclose(segs["shanghai"] / members, expected, atol=0.03)
    assert np.allclose(segs["rich"] / members, 0.5, atol=0.04)  # Normal(500, 50) >= 500
    assert np.allclose(segs["vips"] / members, 0.3, atol=0.04)
    assert (segs["low"] == 0).all()  # no distribution: unset, in no enum segment
    # the built-in channel metrics read the same joins
    share = _metric(res, "kol_share")[:, -1]
    assert np.allclose(share, kol / joins.sum(axis=1))
    week = _metric(res, "kol_joins")[:, -1]
    assert (week > 0).all() and (week < kol).all()


def test_referral_joins_land_in_the_referral_channel_once_it_opens(tmp_path) -> None:
    text = BASE.replace(
        "      invite: {title: 邀请, referral: true}",
        "      invite: {title: 邀请, referral: true, opens: later}",
    ).replace(
        "    stages:\n      only: {}",
        "    stages:\n      only:\n        exit: {when: community_age >= 9}\n"
        "      later: {after: only}",
    )
    pb = _pb(tmp_path, text)
    sc = Scenario(
        acquisition=_quiet(300, invites_per_member_per_day=0.05, invite_conversion=0.5),
        retention=STILL,
    )
    _, res = _chunk(pb, sc, 30)
    fission = _metric(res, "fission_rate")
    invite_share = _metric(res, "invite_share")
    assert (fission[:, :9] == 0).all()  # no invitations before the referral channel opens
    assert (fission[:, -1] > 0.05).all()
    assert np.allclose(invite_share, fission, equal_nan=True)  # referred joins are `invite`


# -- admission ------------------------------------------------------------------------------

ADMISSION = """\
admission:
  require: [city]
  approve: source != "invite"
  review: {owner: care, within: 48h}
routines:
  hi: {on: member.approved, do: reward, to: member, text: 通过, reward: {points: 1}}
  sorry: {on: member.rejected, do: task, owner: ops, text: 回复被拒的申请人}
points:
  earn: {}
"""


def test_applications_are_approved_at_once_or_reviewed_and_decided_later(tmp_path) -> None:
    pb = _pb(tmp_path, _with(BASE, ADMISSION))
    sc = Scenario(
        acquisition=_quiet(
            invites_per_member_per_day=0,
            channels={"store": ChannelInflow(per_day=20), "invite": ChannelInflow(per_day=10)},
        ),
        retention=STILL,
        admission=AdmissionModel(applications_per_join=1.0, approve_rate=0.5),
    )
    sim, res = _chunk(pb, sc, 30)
    joins = res.channel_joins
    store, invite = joins[:, 1], joins[:, 3]
    assert np.allclose(store / 30, 20, rtol=0.1)  # approved at once
    # `invite` applicants are reviewed: half are approved, two days (48h) later
    assert np.allclose(invite / 28, 5, rtol=0.2)
    apps = _metric(res, "applications")
    assert np.allclose(apps[:, -1] / 7, 30, rtol=0.15)  # applications in the last 7 days
    rate = _metric(res, "approval_rate")[:, -1]
    assert np.allclose(rate, (20 + 5) / 30, atol=0.06)
    # every joiner was approved (member.approved: 1 point each)
    assert np.array_equal(_metric(res, "points_issued")[:, -1], joins.sum(axis=1))
    roles = list(sim.cx.roles)
    care, ops = res.workload[:, :, roles.index("care")], res.workload[:, :, roles.index("ops")]
    # one review task per reviewed application, the day it is filed
    assert np.allclose(care.sum(axis=1) / 30, 10, rtol=0.15)
    # one task per rejection, on the day of the decision (none in the first two days)
    assert (ops[:, :2] == 0).all() and np.allclose(ops.sum(axis=1) / 28, 5, rtol=0.25)


# -- counted metrics ------------------------------------------------------------------------

COUNTED = """\
metrics:
  payers: {unit: count, count: {members: payments >= 1}}
  ever_joined: {unit: count, count: {ever: true}}
  week_joins: {unit: count, count: {joins: true, window: 7d}}
  speakers_ratio: {unit: ratio, count: {events: message, window: 1d}, per: {members: true}}
  kol_payers: {unit: count, count: {members: payments >= 1}, by_channel: true}
  shanghai_joins: {unit: count, count: {joins: city == "上海"}, cumulative: true}
"""


def test_counted_metrics_agree_with_the_built_ins_they_restate(tmp_path) -> None:
    pb = _pb(tmp_path, _with(BASE, COUNTED))
    sc = Scenario(
        acquisition=_quiet(100, organic_per_day=10, channels={"kol": ChannelInflow(per_day=5)}),
        retention=Retention(alpha=1.0, beta=3.0, period_days=30),
        attributes={"city": AttributeModel(Distribution(values={"上海": 0.5}))},
    )
    sc = Scenario(
        acquisition=sc.acquisition,
        retention=sc.retention,
        attributes=sc.attributes,
        conversion=type(sc.conversion)(base_daily=0.01),
    )
    sim, res = _chunk(pb, sc, 40)
    m = {n: _metric(res, n) for n in res.metric_names}
    assert np.array_equal(m["payers"], m["paying_members"])
    assert np.array_equal(m["ever_joined"], np.cumsum(m["new_members"], axis=1))
    week = np.stack([m["new_members"][:, max(0, d - 6) : d + 1].sum(axis=1) for d in range(40)], 1)
    assert np.array_equal(m["week_joins"], week)
    # events count members who left later that day too; the built-in counts those at the close
    ratio, rate = m["speakers_ratio"][:, 1:], m["daily_speak_rate"][:, 1:]
    assert (ratio >= rate).all() and np.allclose(ratio, rate, atol=0.03)
    assert (np.diff(m["shanghai_joins"], axis=1) >= 0).all()  # cumulative
    # by channel: one value per channel; together they make the whole
    names = res.by_channel_names
    parts = [res.by_channel[:, :, names.index(f"kol_payers[{c}]")] for c in sim.cx.channels]
    assert np.array_equal(np.sum(parts, axis=0), m["kol_payers"])


# -- points, milestones, leaderboards, redemptions -------------------------------------------

POINTS = """\
points:
  earn: {checkin: 5}
  redeem:
    mug: {title: 杯子, cost: 20, stock: 3}
routines:
  checkin: {cron: "0 20 * * *", do: checkin, text: 打卡, effect: {participation: 0.5}}
  ten:
    {on: member.milestone, counter: checkins, reaches: 10, do: reward, to: member, text: 10次,
     reward: {points: 100}}
"""


def test_points_earned_redeemed_and_outstanding_add_up(tmp_path) -> None:
    pb = _pb(tmp_path, _with(BASE, POINTS))
    sc = Scenario(acquisition=_quiet(200), retention=STILL, points=PointsModel(0.2))
    _, res = _chunk(pb, sc, 30)
    issued = _metric(res, "points_issued")
    redeemed = _metric(res, "points_redeemed")
    outstanding = _metric(res, "points_outstanding")
    assert np.allclose(issued, redeemed + outstanding)  # nobody left, nothing lapsed
    assert (redeemed[:, -1] == 3 * 20).all()  # the stock of 3 mugs went, no more
    assert (np.diff(issued, axis=1) >= 0).all() and (issued[:, -1] > 1000).all()


def test_a_milestone_fires_once_per_member_who_crosses_it(tmp_path) -> None:
    pb = _pb(tmp_path, _with(BASE, POINTS.replace("earn: {checkin: 5}", "earn: {}")))
    sc = Scenario(acquisition=_quiet(200), retention=STILL, points=PointsModel(0))
    sim = Simulator(pb, sc, 40)
    pops: list[_Pop] = []
    original = sim._finish

    def keep(out, lcs, *a, **k):  # the population at the end of the chunk
        assert sim._pop is not None
        pops.append(sim._pop)
        return original(out, lcs, *a, **k)

    sim._finish = keep  # type: ignore[method-assign]
    res = sim.run_chunk(2, np.random.SeedSequence(3))
    pop = pops[0]
    checkins = pop["checkins"][:, : int(pop.n.max())]
    reached = (checkins >= 10).sum(axis=1)
    assert (reached > 0).all()
    # 100 points to each member who reached 10 check-ins, once
    assert np.array_equal(_metric(res, "points_issued")[:, -1], 100 * reached)


def test_lapsed_points_leave_the_balance(tmp_path) -> None:
    text = _with(
        BASE, POINTS.replace("  earn: {checkin: 5}", "  earn: {checkin: 5}\n  expire: 12d")
    )
    pb = _pb(tmp_path, text)
    sc = Scenario(acquisition=_quiet(200), retention=STILL, points=PointsModel(0))
    sim, res = _chunk(pb, sc, 40)
    issued = _metric(res, "points_issued")
    outstanding = _metric(res, "points_outstanding")
    width = sim.cx.width
    # nothing lapses before the first bucket is `expire` days old; after that, points held
    # were earned within expire + width days
    assert np.allclose(outstanding[:, :12], issued[:, :12])
    held_max = issued[:, -1] - issued[:, -1 - 12 - width]
    assert (outstanding[:, -1] <= held_max).all() and (outstanding[:, -1] > 0).all()


LEADERS = """\
points:
  earn: {}
routines:
  top: {cron: "0 20 * * *", do: reward, to: {top: 3, by: invites}, text: 前三, reward: {points: 7}}
"""


def test_a_leaderboard_reaches_its_top_n(tmp_path) -> None:
    pb = _pb(tmp_path, _with(BASE, LEADERS))
    sc = Scenario(
        acquisition=_quiet(300, invites_per_member_per_day=0.05, invite_conversion=0.5),
        retention=STILL,
    )
    _, res = _chunk(pb, sc, 20)
    issued = np.diff(_metric(res, "points_issued"), axis=1, prepend=0)
    # 7 points to each of the top 3 (fewer while fewer than three have invited anyone)
    assert set(np.unique(issued)) <= {0, 7, 14, 21}
    assert (issued[:, -5:] == 21).all()


BOARDS = """\
teams: {names: [红, 蓝], assign: round-robin, score: checkins}
routines:
  board: {cron: "0 20 * * *", do: reward, to: {top: 2, by: invites}, text: 前二}
  team-board: {cron: "0 20 * * *", do: reward, to: {top: 1, by: checkins, teams: true}, text: 冠军}
"""


def test_top_members_and_top_teams_follow_the_ranking_rule(tmp_path) -> None:
    pb = _pb(tmp_path, _with(BASE, BOARDS))
    cx = Constructs(pb, Scenario())
    pop = _Pop(2, 8, extra=cx.columns())
    pop.n[:] = 6
    pop["alive"][:, :6] = True
    pop["join_day"][:, :6] = [0, 0, 1, 1, 2, 2]
    pop["invites"][:, :6] = [[3, 5, 5, 0, 1, 2], [0, 0, 0, 0, 0, 4]]
    pop["checkins"][:, :6] = [[1, 9, 1, 9, 1, 9], [5, 0, 5, 0, 5, 0]]
    pop["team"][:, :6] = [1, 2, 1, 2, 1, 2]
    st = ChunkState(cx, 2, 5, np.random.default_rng(0))
    sl = np.s_[:, :6]
    alive = pop["alive"][sl]
    got = st.recipients(pop, sl, 3, pb.actions["board"], alive)
    # highest first; a tie goes to the earlier joiner; nobody ranks with 0
    assert got[0].tolist() == [False, True, True, False, False, False]
    assert got[1].tolist() == [False, False, False, False, False, True]
    got = st.recipients(pop, sl, 3, pb.actions["team-board"], alive)
    assert got[0].tolist() == [False, True, False, True, False, True]  # blue: 27
    assert got[1].tolist() == [True, False, True, False, True, False]  # red: 15


# -- teams ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes, joiners", [([3, 1, 2], 7), ([0, 0, 0], 5), ([5, 5, 1], 2), ([2, 4, 4], 9)]
)
def test_balanced_teams_match_the_rule_joiner_by_joiner(tmp_path, sizes, joiners) -> None:
    text = _with(BASE, "teams: {names: [a, b, c], assign: balanced, score: checkins}\n")
    pb = _pb(tmp_path, text)
    cx = Constructs(pb, Scenario())
    runs = [(sizes, joiners), (sizes[::-1], joiners + 1)]  # two runs, placed at once
    cap = max(sum(s) + j for s, j in runs)
    pop = _Pop(2, cap, extra=cx.columns())
    for r, (s, j) in enumerate(runs):
        pop["alive"][r, : sum(s) + j] = True
        pop["team"][r, : sum(s)] = np.repeat(np.arange(1, 4), s)
    st = ChunkState(cx, 2, 5, np.random.default_rng(0))
    first = np.array([sum(s) for s, _ in runs])
    st.assign_teams(pop, first, np.array([j for _, j in runs]))
    for r, (s, j) in enumerate(runs):
        expected, left = [], list(s)
        for _ in range(j):  # the program's rule, one joiner at a time
            k = int(program_teams.balanced(left))
            expected.append(k + 1)
            left[k] += 1
        assert pop["team"][r, first[r] : first[r] + j].tolist() == expected


def test_round_robin_teams_count_every_joiner(tmp_path) -> None:
    pb = _pb(
        tmp_path, _with(BASE, "teams: {names: [a, b, c], assign: round-robin, score: checkins}\n")
    )
    sc = Scenario(acquisition=_quiet(10, organic_per_day=3), retention=STILL)
    sim = Simulator(pb, sc, 10)
    res = sim.run_chunk(2, np.random.SeedSequence(1))
    top, bottom = _metric(res, "team_score_top"), _metric(res, "team_score_bottom")
    assert (top >= bottom).all()
    assert np.isnan(_metric(res, "team_score_spread")[:, 0]).all()  # nobody has checked in


# -- per-member tasks and workload --------------------------------------------------------------

FOR_EACH = """\
routines:
  call: {cron: "0 10 * * *", do: task, owner: care, for_each: segment:shanghai, text: 回访}
  welcome-call: {on: member.joined, do: task, owner: ops, text: 欢迎电话}
"""


def test_a_task_for_each_member_of_a_segment_is_one_task_per_member(tmp_path) -> None:
    pb = _pb(tmp_path, _with(BASE, FOR_EACH))
    sc = Scenario(
        acquisition=_quiet(50, organic_per_day=5),
        attributes={"city": AttributeModel(Distribution(values={"上海": 0.5}))},
    )
    sim, res = _chunk(pb, sc, 20)
    roles = list(sim.cx.roles)
    care = res.workload[:, :, roles.index("care")]
    ops = res.workload[:, :, roles.index("ops")]
    shanghai = res.segments[:, :, sim.cx.segments.index("shanghai")]
    # tasks go out at the start of a day to the segment as the previous day closed
    assert np.array_equal(care[:, 1:], shanghai[:, :-1])
    assert np.array_equal(ops, _metric(res, "new_members"))  # one welcome call per joiner


# -- exits, `for:`, windows ---------------------------------------------------------------------

EXITS = """\
    playbook: exits
    timezone: Asia/Shanghai
    roles: {ops: {headcount: 1}}
    defaults: {owner: ops}
    stages:
      growth:
        exits:
          - {id: success, when: members >= 1000000}
          - id: decline
            when: avg(daily_speak_rate, 3d) >= 0 and community_age >= 5
            for: 4d
            goto: dissolution
      later: {after: growth}
      dissolution: {after: later, optional: true, duration: {max: 10d}}
    """


def test_each_exit_has_a_probability_and_dissolution_is_forecast(tmp_path) -> None:
    pb = _pb(tmp_path, EXITS)
    res = simulate(pb, Scenario(acquisition=_quiet(50)), SimOptions(runs=12, days=30, seed=2))
    assert res.forecasts is not None
    growth = next(x for x in res.forecasts.exits if x.stage == "growth")
    assert growth.exits["success"].k == 0
    assert growth.exits["decline"].k == 12
    # condition true from day 5 on; `for: 4d` asks days 5..8; the check after day 8 is day 9
    assert growth.exits["decline"].median_day == 9
    doc = res.to_dict()["exits"]
    decline = doc[0]["exits"][1]
    assert decline["exit"] == "decline" and decline["goto"] == "dissolution"
    assert decline["p"] == 1.0 and decline["interval95"][0] > 0.7
    assert res.stage_timing()["dissolution"]["entered"] == 12


def test_a_window_guard_reads_the_runs_history(tmp_path) -> None:
    text = """\
    playbook: g
    timezone: Asia/Shanghai
    roles: {ops: {headcount: 1}}
    defaults: {owner: ops}
    routines:
      late: {cron: "0 10 * * *", do: post, text: hi, if: "min(community_age, 3d) >= 4"}
    stages:
      only: {}
    """
    pb = _pb(tmp_path, text)
    sim = Simulator(pb, Scenario(acquisition=_quiet(5)), 12)
    sim.record = []
    fired = []
    orig = sim.effects_today

    def spy(lc, d, env=None):
        e = orig(lc, d, env)
        fired.append((d, tuple(a.id for a in e.fired)))
        return e

    sim.effects_today = spy  # type: ignore[method-assign]
    sim.run_chunk(1, np.random.SeedSequence(1))
    # on day d the guard reads days d-3..d-1: community_age >= 4 on all three from day 7
    assert [d for d, ids in fired if "late" in ids] == list(range(7, 12))


# -- targets and incidents ------------------------------------------------------------------------

TARGETS = """\
    playbook: tg
    timezone: Asia/Shanghai
    roles: {ops: {headcount: 1}}
    defaults: {owner: ops}
    targets:
      members: {at_least: 40, by: 10d}
      new_members: {at_least: 1000000}
      churn_rate: {at_most: 100%}
    incidents:
      always: {title: a, owner: ops, detect: "members >= 0", steps: [{alert: ops, within: 1h}]}
      late:
        title: b
        owner: ops
        detect: avg(community_age, 3d) >= 10
        steps: [{alert: ops, within: 1h}]
      never: {title: c, owner: ops, detect: "members < 0", steps: [{alert: ops, within: 1h}]}
    stages:
      only: {}
    """


def test_targets_and_incidents_are_forecast_with_intervals(tmp_path) -> None:
    pb = _pb(tmp_path, TARGETS)
    sc = Scenario(acquisition=_quiet(50), retention=STILL)
    res = simulate(pb, sc, SimOptions(runs=10, days=20, seed=1))
    assert res.forecasts is not None
    t = {x.metric: x for x in res.forecasts.targets}
    assert t["members"].judged_day == 9 and t["members"].met.p == 1.0
    assert t["new_members"].met.p == 0.0 and t["new_members"].judged_day == 19
    assert t["new_members"].shortfall["p50"] == pytest.approx(1_000_000, rel=1e-3)
    assert t["churn_rate"].reached.k == 10
    i = {x.incident: x for x in res.forecasts.incidents}
    assert i["always"].triggered.p == 1.0 and i["always"].triggered.median_day == 0
    assert i["late"].triggered.median_day == 11  # days 9, 10, 11 average 10
    assert i["never"].triggered.k == 0 and i["never"].triggered.as_dict()["interval95"][1] < 0.35
    doc = res.to_dict()
    assert doc["targets"][0]["p_met"]["p"] == 1.0
    assert doc["incidents"][1]["first_day"]["p50"] == 11


# -- reproducibility and memory ---------------------------------------------------------------


def test_the_parent_community_is_the_same_for_any_worker_count() -> None:
    path = PLAYBOOKS / "parent-community.yaml"
    pb = load_playbook(str(path)).playbook
    assert pb is not None
    sc = load_scenario(str(PLAYBOOKS / "scenarios" / "parent-community.yaml"), playbook=pb)
    one = simulate(pb, sc, SimOptions(runs=12, days=60, seed=5, workers=1))
    two = simulate(pb, sc, SimOptions(runs=12, days=60, seed=5, workers=2))
    assert np.array_equal(one.metrics, two.metrics, equal_nan=True)
    a, b = one.to_dict(), two.to_dict()
    for key in ("exits", "targets", "incidents", "segments", "channels", "workload"):
        assert a[key] == b[key], key
    assert json.loads(json.dumps(a, allow_nan=False))["exits"] == a["exits"]  # plain JSON


def test_the_constructs_arrays_count_in_the_memory_budget(tmp_path) -> None:
    pb = _pb(
        tmp_path, _with(BASE, POINTS.replace("earn: {checkin: 5}", "earn: {}\n  expire: 365d"))
    )
    extra = Constructs(pb, Scenario()).columns()
    assert bytes_per_member(extra) > bytes_per_member({}) + 2 * 13 * 4  # 13 ledger buckets


# -- single-member audiences: segments, `where:`, caps, redemption actions -----------------------

AUDIENCES = """\
points:
  earn: {}
routines:
  seg: {cron: "0 10 * * *", do: reward, to: segment:shanghai, text: x, reward: {points: 2}}
  narrowed: {cron: "0 11 * * *", do: reward, to: everyone, where: vip, text: y, reward: {points: 3}}
  kol-hi:
    {on: member.joined, where: source == "kol", do: reward, to: member, text: z,
     reward: {points: 5}}
"""


def test_segments_and_where_pick_who_an_action_reaches(tmp_path) -> None:
    pb = _pb(tmp_path, _with(BASE, AUDIENCES))
    sc = Scenario(
        acquisition=_quiet(100, organic_per_day=5, channels={"kol": ChannelInflow(per_day=5)}),
        retention=STILL,
        attributes={
            "city": AttributeModel(Distribution(values={"上海": 0.4})),
            "vip": AttributeModel(Distribution(p=0.2)),
        },
    )
    sim, res = _chunk(pb, sc, 15)
    issued = np.diff(_metric(res, "points_issued"), axis=1)
    seg = {s: res.segments[:, :, j] for j, s in enumerate(sim.cx.segments)}
    kol_today = np.diff(seg["kol-fans"], axis=1)  # nobody leaves: the day's kol joiners
    # scheduled sends reach the group as the day starts; the event reaches today's joiners
    expected = 2 * seg["shanghai"][:, :-1] + 3 * seg["vips"][:, :-1] + 5 * kol_today
    assert np.array_equal(issued, expected)


def test_messages_to_a_segment_count_toward_the_cap(tmp_path) -> None:
    text = _with(
        BASE,
        """\
        routines:
          a: {cron: "0 10 * * *", do: post, to: segment:shanghai, text: a}
          b: {cron: "0 12 * * *", do: post, to: segment:shanghai, text: b}
        expect:
          - {max_messages_per_member_per_day: 1}
        """,
    )
    pb = _pb(tmp_path, text)
    sc = Scenario(
        acquisition=_quiet(50),
        attributes={"city": AttributeModel(Distribution(values={"上海": 1.0}))},
    )
    res = simulate(pb, sc, SimOptions(runs=2, days=3, seed=1))
    assert res.expect_failures and "2 messages (cap 1)" in res.expect_failures[0][2]


REDEEM = """\
points:
  earn: {checkin: 10}
  redeem: {mug: {title: 杯子, cost: 30}}
routines:
  checkin: {cron: "0 20 * * *", do: checkin, text: 打卡, effect: {participation: 0.9}}
  auto:
    {on: member.milestone, counter: points, reaches: 30, do: redeem, item: mug, to: member,
     text: 兑换}
  ship: {on: member.redeemed, item: mug, do: task, owner: care, text: 寄出}
"""


def test_a_redemption_action_spends_points_and_sets_off_member_redeemed(tmp_path) -> None:
    pb = _pb(tmp_path, _with(BASE, REDEEM))
    sc = Scenario(acquisition=_quiet(100), retention=STILL, points=PointsModel(0))
    sim, res = _chunk(pb, sc, 20)
    redeemed = _metric(res, "points_redeemed")[:, -1]
    care = res.workload[:, :, list(sim.cx.roles).index("care")].sum(axis=1)
    assert (redeemed > 0).all()
    assert np.array_equal(care * 30, redeemed)  # one shipping task per mug
    # each member crosses 30 points once: at most one mug each
    assert (redeemed <= 30 * 100).all()
