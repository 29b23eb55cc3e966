"""One semantics: validate, plan and simulate read each rule from one home and agree on it.

The rules live in engine/lang/semantics.py (member messages, anchors, starting stages) and
engine/program/ (what is due, member-event rules, the lifecycle, the start date). These tests
hold the readers to them: hand-written cases for each defect the issue names, then differential
properties over generated playbooks (plan against the simulator's kernel, validate against plan).
"""

from __future__ import annotations

import itertools
import os
import textwrap
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sop.engine.core import expr as ex
from sop.engine.core.schedule import local_midnight
from sop.engine.lang.model import Expression
from sop.engine.lang.semantics import is_member_message
from sop.engine.plan.timeline import PlanOptions, make_plan
from sop.engine.program import Lifecycle, Program, Trigger, assumed_gate, run_lifecycle
from sop.engine.program import gates as G
from sop.engine.program import history as H
from sop.engine.program import members as PM
from sop.engine.program import milestones as MS
from sop.engine.program import points as PT
from sop.engine.program import ranking as RK
from sop.engine.program.lifecycle import ExitOracle
from sop.engine.program.truth import truth
from sop.engine.sim.kernel import Simulator
from sop.engine.sim.scenario import Scenario
from sop.engine.validate import Options, load_playbook, validate_file

from tests.conftest import BASE, REFERENCE, position

SETTINGS = settings(
    max_examples=int(os.environ.get("SOP_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def _program(tmp_path: Path, text: str) -> Program:
    res = load_playbook(str(_write(tmp_path, text)))
    assert res.playbook is not None, [(d.code, d.message) for d in res.diagnostics]
    return Program(res.playbook)


def _codes(tmp_path: Path, text: str, plan_checks: bool = True) -> list[tuple[str, int, int]]:
    res = validate_file(str(_write(tmp_path, text)), Options(plan_checks=plan_checks))
    return [(d.code, d.line, d.column) for d in res.diagnostics]


# -- message kinds: one rule for validate's quiet-hours warning and plan's postponing ------------

MUTE = (
    BASE
    + """\
stages:
  s:
    actions:
      night-mute: {cron: "0 23 * * *", do: mute, quiet_hours: "22:00-08:00"}
      night-post: {cron: "0 23 * * *", do: post, text: hi, quiet_hours: "22:00-08:00"}
"""
)


def test_a_mute_inside_quiet_hours_is_neither_warned_nor_postponed(tmp_path):
    codes = _codes(tmp_path, MUTE)
    line, col = position(MUTE, '"0 23', 2)  # the post's cron
    assert [c for c in codes if c[0] == "SOP232"] == [("SOP232", line, col)]
    tl = make_plan(_program(tmp_path, MUTE), PlanOptions(start=date(2027, 1, 4), days=2))
    mute = [o for o in tl.occurrences if o.action == "night-mute"]
    post = [o for o in tl.occurrences if o.action == "night-post"]
    assert mute and all(o.at == o.scheduled and o.at.hour == 23 for o in mute)
    assert post and all(o.at > o.scheduled and o.at.hour == 8 for o in post)


# -- starting stages -------------------------------------------------------------------------

OPTIONAL_ROOT = (
    BASE
    + """\
stages:
  main:
    actions:
      hello: {day: 0, time: "10:00", do: post, text: hi}
  side:
    optional: true
    duration: {max: 5d}
    actions:
      extra: {day: 1, time: "10:00", do: post, text: extra}
"""
)


def test_an_optional_stage_with_no_after_starts_with_the_playbook_when_included(tmp_path):
    assert _codes(tmp_path, OPTIONAL_ROOT) == []
    prog = _program(tmp_path, OPTIONAL_ROOT)
    opts = PlanOptions(start=date(2027, 1, 4), days=10)
    without = make_plan(prog, opts)
    assert "extra" not in {o.action for o in without.occurrences}
    with_it = make_plan(
        prog, PlanOptions(start=date(2027, 1, 4), days=10, include_optional=("side",))
    )
    assert [o.at.date() for o in with_it.occurrences if o.action == "extra"] == [date(2027, 1, 5)]
    assert ("side", "started") in [(t.stage, t.event) for t in with_it.transitions]


NEVER_HANDS_OVER = (
    BASE
    + """\
stages:
  forever:
    actions:
      a: {cron: "0 9 * * *", do: post, text: hi}
  next:
    after: forever
    actions:
      b: {cron: "0 9 * * *", do: post, text: hi}
"""
)


def test_a_stage_after_one_that_never_ends_is_reported_where_it_names_it(tmp_path):
    line, col = position(NEVER_HANDS_OVER, "forever", 2)
    assert ("SOP281", line, col) in _codes(tmp_path, NEVER_HANDS_OVER, plan_checks=False)
    tl = make_plan(_program(tmp_path, NEVER_HANDS_OVER), PlanOptions(days=200))
    assert "b" not in {o.action for o in tl.occurrences}  # and indeed it never starts


def test_a_stage_after_one_that_always_leaves_by_goto_is_reported(tmp_path):
    text = (
        BASE
        + """\
stages:
  a:
    exit: {when: members >= 10, then: {goto: c}}
    actions:
      x: {cron: "0 9 * * *", do: post, text: hi}
  b:
    after: a
  c:
    rescue: true
"""
    )
    found = [c for c in _codes(tmp_path, text, plan_checks=False) if c[0] == "SOP281"]
    line, col = position(text, "after: a")
    assert found == [("SOP281", line, col + len("after: "))]


# -- anchors ---------------------------------------------------------------------------------

CROSS_STAGE = (
    BASE
    + """\
stages:
  s1:
    actions:
      live: {cron: "0 20 * * 3", do: live, text: live}
  s2:
    after: s1
    duration: {max: 30d}
    actions:
      recap: {after: live, delay: 1d, do: post, text: recap}
"""
)


def test_an_action_chained_to_another_stages_action_is_an_error_at_its_anchor(tmp_path):
    line, col = position(CROSS_STAGE, "live", 4)  # `after: live`
    assert ("SOP280", line, col) in _codes(tmp_path, CROSS_STAGE, plan_checks=False)


def test_before_a_member_event_is_an_error(tmp_path):
    text = (
        BASE
        + """\
routines:
  welcome: {on: member.joined, do: message, to: member, text: hi}
  teaser: {before: welcome, by: 1h, do: message, to: member, text: soon}
stages:
  s:
    actions:
      a: {cron: "0 9 * * *", do: post, text: hi}
"""
    )
    line, col = position(text, "welcome", 2)
    assert ("SOP282", line, col) in _codes(tmp_path, text, plan_checks=False)


# -- the end of the lifecycle ----------------------------------------------------------------


def test_nothing_is_planned_after_dissolution_ends_the_community():
    prog = Program(load_playbook(str(REFERENCE)).playbook)
    opts = PlanOptions(start=date(2026, 12, 1), days=900, include_optional=("dissolution",))
    tl = make_plan(prog, opts)
    ended = [t.at for t in tl.transitions if t.stage == "dissolution" and t.event == "timeboxed"]
    assert ended, "dissolution ran its 30 days"
    assert max(o.at for o in tl.occurrences) < ended[0]
    assert tl.windows[0].stage is None and tl.windows[0].end == ended[0]  # the routines end too


def test_the_simulator_schedules_nothing_after_the_lifecycle_ends(tmp_path):
    text = (
        BASE
        + """\
routines:
  standup: {cron: "0 9 * * *", do: task, text: standup}
stages:
  only:
    duration: {max: 3d}
    actions:
      a: {cron: "0 10 * * *", do: post, text: hi}
"""
    )
    prog = _program(tmp_path, text)
    sim = Simulator(prog.playbook, Scenario(), days=8)
    sim.record = []
    sim.run_chunk(1, np.random.SeedSequence(1))
    fired = sim.record[0]
    assert [len(day) for day in fired] == [2, 2, 2, 0, 0, 0, 0, 0]


def test_a_restored_lifecycle_does_not_enter_its_starting_stages_again(tmp_path):
    prog = Program(load_playbook(str(REFERENCE)).playbook)
    start = local_midnight(date(2026, 12, 1), prog.tz)
    lc = run_lifecycle(prog, start, 40, assumed_gate(prog, "pass"))
    saved = lc.state()
    again = Lifecycle.restore(prog, saved)
    assert again.transitions == lc.transitions and [s.stage for s in again.active] == [
        s.stage for s in lc.active
    ]
    assert next(t for t in again.transitions if t.event == "started").stage == "prep"
    again.step(start + timedelta(days=41), assumed_gate(prog, "pass"))
    assert saved.stages == lc.state().stages  # the saved value did not move with it
    assert sum(1 for t in again.transitions if (t.stage, t.event) == ("prep", "started")) == 1


# -- the start date --------------------------------------------------------------------------


def test_simulate_starts_on_community_start_so_seasonal_crons_fall_as_in_plan(tmp_path):
    text = BASE.replace("timezone:", 'community: {start: "2027-02-25"}\ntimezone:') + (
        """\
stages:
  s:
    actions:
      spring: {cron: "0 9 1 3 *", do: post, text: spring}
      monday: {cron: "0 9 * * 1", do: post, text: week}
"""
    )
    prog = _program(tmp_path, text)
    sim = Simulator(prog.playbook, Scenario(), days=10)
    assert sim.start == date(2027, 2, 25)
    sim.record = []
    sim.run_chunk(1, np.random.SeedSequence(2))
    sim_days = {(a, d) for d, ids in enumerate(sim.record[0]) for a in ids}
    tl = make_plan(prog, PlanOptions(days=10))
    plan_days = {(o.action, (o.at.date() - date(2027, 2, 25)).days) for o in tl.occurrences}
    assert sim_days == plan_days and ("spring", 4) in plan_days and ("monday", 4) in plan_days


# -- member events: the kernel reads the Program's compiled rules -------------------------------

EVENTS = (
    BASE
    + """\
tiers:
  review: {cron: "0 0 * * 1"}
  levels:
    newbie: {title: newbie}
    core: {title: core, promote: weekly_interactions >= 3}
routines:
  first: {on: member.violation, count: 1, do: message, to: member, text: warn, effect: {churn: 0.5}}
  third: {on: member.violation, count: 3, do: remove, to: member, effect: {churn: 0.9}}
  up: {on: member.tier_changed, tier: core, do: message, to: member, text: up, effect: {speak: 0.1}}
  any-move: {on: member.tier_changed, do: tag, to: member}
  hi: {on: member.joined, do: message, to: member, text: hi}
  later: {after: hi, delay: 1d, do: message, to: member, text: again, effect: {speak: 0.2}}
stages:
  s:
    actions:
      a: {cron: "0 9 * * *", do: post, text: hi}
"""
)


def test_each_event_rule_applies_only_to_the_values_it_listens_for(tmp_path):
    prog = _program(tmp_path, EVENTS)
    sim = Simulator(prog.playbook, Scenario(), days=2)
    lc = Lifecycle.start(prog, sim.day_start(0))
    rules = sim.event_rules(lc)
    assert rules.churn[Trigger("member.violation", 1)] == pytest.approx(1.5)  # not × 1.9
    assert rules.churn[Trigger("member.violation", 3)] == pytest.approx(1.9)
    assert [a.id for a in rules.actions[Trigger("member.tier_changed", "core")]] == ["up"]
    assert rules.speak[Trigger("member.joined")] == pytest.approx(0.2)  # the chain counts


@pytest.mark.parametrize(
    ("event", "facts"),
    [
        ("member.violation", {"count": 1}),
        ("member.violation", {"count": 2}),
        ("member.violation", {"count": 3}),
        ("member.tier_changed", {"tier": "core"}),
        ("member.tier_changed", {"tier": "newbie"}),
        ("member.joined", {}),
    ],
)
def test_the_kernel_and_on_event_fire_the_same_actions(tmp_path, event, facts):
    prog = _program(tmp_path, EVENTS)
    sim = Simulator(prog.playbook, Scenario(), days=2)
    lc = Lifecycle.start(prog, sim.day_start(0))
    rules = sim.event_rules(lc)
    fired = [
        a.id for t, acts in rules.actions.items() if _kernel_match(t, event, facts) for a in acts
    ]
    at = datetime(2027, 1, 4, 12, tzinfo=prog.tz)
    expected = [o.action for o in prog.on_event(["s"], event, "m1", at, **facts)]
    assert sorted(fired) == sorted(expected)


def _kernel_match(t: Trigger, event: str, facts: dict[str, object]) -> bool:
    """How the kernel selects triggers: by event, then by the attribute value it compares."""
    if t.event != event:
        return False
    return t.value is None or t.value in facts.values()


# -- differential: the simulator fires what plan schedules, for the same stage timing ------------

ZONES = ["Asia/Shanghai", "America/New_York", "Europe/Berlin", "UTC"]
KINDS = ["post", "task", "checkin", "mute", "digest", "poll", "tag"]
CRONS = st.builds(
    lambda m, h, dow: f"{m} {h} * * {dow}",
    st.sampled_from(["0", "30"]),
    st.sampled_from(["9", "23", "2", "7,21", "0"]),
    st.sampled_from(["*", "1-5", "3", "0,6"]),
)


@st.composite
def playbooks(draw: st.DrawFn) -> str:
    """Small valid playbooks: stages with crons, day offsets, after/before chains, routines,
    quiet hours, gates or fixed durations, an optional last stage."""
    zone = draw(st.sampled_from(ZONES))
    quiet = draw(st.sampled_from(["22:00-08:00", "23:30-07:00", "00:00-06:00"]))
    lines = [
        "playbook: gen",
        f"timezone: {zone}",
        "roles: {ops: {headcount: 1, capacity: 3}}",
        f"limits: {{member_messages_per_day: {draw(st.integers(1, 4))}}}",
        f'defaults: {{owner: ops, quiet_hours: "{quiet}"}}',
    ]
    k = 0

    def actions(indent: str, roots_only: bool = False) -> list[str]:
        nonlocal k
        out, roots = [], []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(KINDS))
            if draw(st.booleans()):
                sched = f'cron: "{draw(CRONS)}"'
            else:
                sched = f'day: {draw(st.integers(0, 3))}, time: "{draw(st.integers(0, 23)):02d}:30"'
            to = (
                ""
                if kind in ("task", "mute", "tag")
                else f", to: {draw(st.sampled_from(['everyone', 'staff']))}"
            )
            out.append(f"{indent}a{k}: {{{sched}, do: {kind}{to}, text: x}}")
            roots.append(k)
            k += 1
        if not roots_only:
            for _ in range(draw(st.integers(0, 2))):
                anchor = draw(st.sampled_from(roots))
                rel = draw(st.sampled_from(["after", "before"]))
                amount = draw(st.sampled_from(["1h", "1d", "2d", "30m", "3h"]))
                word = "delay" if rel == "after" else "by"
                kind = draw(st.sampled_from(["post", "task"]))
                out.append(
                    f"{indent}a{k}: {{{rel}: a{anchor}, {word}: {amount}, do: {kind}, text: y}}"
                )
                k += 1
        return out

    if draw(st.booleans()):
        lines.append("routines:")
        lines += actions("  ", roots_only=draw(st.booleans()))
    lines.append("stages:")
    n = draw(st.integers(1, 3))
    for s in range(n):
        lines.append(f"  s{s}:")
        if s:
            lines.append(f"    after: s{s - 1}")
        if s == n - 1 and s and draw(st.booleans()):
            lines.append("    optional: true")
        if draw(st.booleans()):
            lines.append(f"    duration: {{min: {draw(st.integers(1, 6))}d}}")
            lines.append("    exit: {when: members >= 0}")
        else:
            lines.append(f"    duration: {{max: {draw(st.integers(2, 9))}d}}")
        lines.append("    actions:")
        lines += actions("      ")
    return "\n".join(lines) + "\n"


def _by_day(occurrences, start: date) -> dict[int, Counter[str]]:
    out: dict[int, Counter[str]] = defaultdict(Counter)
    for o in occurrences:
        out[(o.at.date() - start).days][o.action] += 1
    return out


def _kernel_by_day(sim: Simulator, lc_days: list[Lifecycle]) -> dict[int, Counter[str]]:
    out: dict[int, Counter[str]] = defaultdict(Counter)
    for d, lc in enumerate(lc_days):
        for aid in sim._due_today(lc, d):
            out[d][aid] += 1
    return out


@SETTINGS
@given(
    text=playbooks(),
    start=st.dates(date(2026, 1, 1), date(2027, 12, 31)),
    days=st.integers(1, 40),
    gates=st.sampled_from(["pass", "fail"]),
    include=st.booleans(),
)
def test_the_simulator_schedules_what_plan_schedules_for_the_same_stage_timing(
    tmp_path, text, start, days, gates, include
):
    prog = _program(tmp_path, text)
    optional = tuple(s.id for s in prog.playbook.stages.values() if s.optional and include)
    opts = PlanOptions(start=start, days=days, assume_gates=gates, include_optional=optional)
    tl = make_plan(prog, opts)
    # the kernel, day by day, with the lifecycle as it stands on each day (no look-ahead)
    sim = Simulator(prog.playbook, Scenario(), days)
    sim.start = start
    gate = assumed_gate(prog, gates)
    lc = Lifecycle.start(prog, sim.day_start(0), optional)
    states = []
    for d in range(days):
        states.append(Lifecycle.restore(prog, lc.state()))
        lc.step(sim.day_start(d + 1), gate)
    assert _kernel_by_day(sim, states) == _by_day(tl.occurrences, start)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=playbooks(), seed=st.integers(0, 2**16))
def test_a_whole_simulated_run_fires_what_plan_schedules_for_that_runs_timing(tmp_path, text, seed):
    prog = _program(tmp_path, text.replace("members >= 0", "members >= 30"))
    days = 20
    sim = Simulator(prog.playbook, Scenario(), days)
    sim.record = []
    res = sim.run_chunk(1, np.random.SeedSequence(seed))
    passed = {
        sid: int(res.stage_passed[0, j])
        for j, sid in enumerate(sim.stage_ids)
        if res.stage_passed[0, j] >= 0
    }

    def replay(stage, st_, now):  # the run's own gate outcomes, replayed
        return stage.id in passed and now == sim.day_start(passed[stage.id])

    start = sim.day_start(0)
    lc = run_lifecycle(prog, start, days, replay)
    end = sim.day_start(days)
    planned = _by_day(prog.due(lc.windows(end), start, end), sim.start)
    fired = {d: Counter(ids) for d, ids in enumerate(sim.record[0]) if ids}
    assert fired == planned


# -- differential: validate's verdicts agree with what plan does --------------------------------


@SETTINGS
@given(text=playbooks())
def test_validates_quiet_hours_frequency_and_workload_verdicts_agree_with_plan(tmp_path, text):
    prog = _program(tmp_path, text)
    pb = prog.playbook
    res = validate_file(str(_write(tmp_path, text)), Options(plan_days=90))
    assert res.errors == 0, [(d.code, d.message) for d in res.diagnostics]
    codes = {d.code for d in res.diagnostics}
    tl = make_plan(prog, PlanOptions(days=90))
    # quiet hours (SOP232): warned exactly for the member-message crons plan always postpones
    warned = {d.message.split("`")[3] for d in res.diagnostics if d.code == "SOP232"}
    for aid, a in pb.actions.items():
        occ = [o for o in tl.occurrences if o.action == aid]
        if "cron" in a.spans and occ:
            assert (aid in warned) == all(o.at > o.scheduled for o in occ), aid
        if not is_member_message(a):
            assert aid not in warned and all(o.at == o.scheduled for o in occ)
    # workload (SOP301) and member frequency (SOP303), counted from plan's own calendar
    tasks: Counter[date] = Counter()
    msgs: Counter[date] = Counter()
    for o in tl.occurrences:
        a = pb.actions[o.action]
        if a.owner == "ops":
            tasks[o.at.date()] += 1
        if is_member_message(a) and a.audience == "everyone":
            msgs[o.at.date()] += 1
    assert ("SOP301" in codes) == any(n > 3 for n in tasks.values())
    assert ("SOP303" in codes) == any(n > pb.member_messages_per_day for n in msgs.values())


# -- differential: issue 12's rules, the simulator's arrays against the runtime's scalars -------
# engine/program answers both from one function; these hold the array form (runs or members on
# the leading axes) to the scalar form (one community, one member) and to a plain reference.

NAN = float("nan")
METRIC_VALUES = st.sampled_from([NAN, 0.0, 0.1, 0.2, 0.5, 1.0, 3.0])
OPS = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])


def _conditions(names: list[str], windows: bool = False) -> st.SearchStrategy[str]:
    """Conditions over `names`: comparisons (with windows when asked), and/or/not, nested."""
    sides = [st.sampled_from(names)]
    if windows:
        sides.append(
            st.builds(
                lambda op, n, d: f"{op}({n}, {d}d)",
                st.sampled_from(["avg", "min", "max"]),
                st.sampled_from(names),
                st.integers(1, 4),
            )
        )
    leaf = st.builds(
        lambda a, op, v: f"{a} {op} {v}", st.one_of(sides), OPS, st.sampled_from(["0", "0.2", "1"])
    )
    return st.recursive(
        leaf,
        lambda kids: st.one_of(
            st.builds(lambda a, b: f"({a}) and ({b})", kids, kids),
            st.builds(lambda a, b: f"({a}) or ({b})", kids, kids),
            st.builds(lambda a: f"not ({a})", kids),
        ),
        max_leaves=5,
    )


@SETTINGS
@given(
    text=_conditions(["x", "y", "z"]),
    rows=st.lists(st.tuples(METRIC_VALUES, METRIC_VALUES, METRIC_VALUES), min_size=1, max_size=6),
)
def test_a_condition_over_runs_gives_each_run_the_verdict_judge_gives_it(text, rows):
    node = ex.parse(text)
    arrays = {n: np.array([r[i] for r in rows]) for i, n in enumerate("xyz")}
    t, f = truth(node, arrays)
    for k, r in enumerate(rows):
        verdict = G.judge(node, dict(zip("xyz", r, strict=True)))
        assert bool(np.broadcast_to(t, (len(rows),))[k]) == verdict.holds
        decided = bool(np.broadcast_to(t | f, (len(rows),))[k])
        assert decided == verdict.decided


def _reference_window(op: str, values: list[float], end: int, days: int) -> float:
    """The window ending on day `end`, written plainly: NaN when short or a day is NaN."""
    lo = end - days + 1
    if lo < 0:
        return NAN
    w = values[lo : end + 1]
    if any(v != v for v in w):
        return NAN
    total = w[0]
    if op == "avg":
        for v in w[1:]:
            total += v
        return total / days
    return min(w) if op == "min" else max(w)


def _reference_holds(node: ex.Node, hist: dict[str, list[float]], dis: int, n: int) -> bool:
    """`for:` written plainly: each of the last n closed days, inside the stage, holds."""
    t = len(next(iter(hist.values())))
    if dis < n or t < n:
        return False
    for back in range(n):
        day = t - 1 - back
        env: dict[str, float] = {k: v[day] for k, v in hist.items()}
        for op, m, d in ex.windows(node):
            env[ex.window_key(op, m, d)] = _reference_window(op, hist[m], day, d)
        env["days_in_stage"] = float(dis - back)
        if not G.judge(node, env).holds:
            return False
    return True


@SETTINGS
@given(
    text=_conditions(["x", "y"], windows=True),
    runs=st.lists(
        st.lists(st.tuples(METRIC_VALUES, METRIC_VALUES), min_size=1, max_size=9),
        min_size=1,
        max_size=4,
    ).filter(lambda rs: len({len(r) for r in rs}) == 1),
    hold=st.integers(1, 4),
    dis=st.lists(st.integers(0, 10), min_size=4, max_size=4),
)
def test_an_exit_fires_on_the_simulators_runs_as_on_each_communitys_own_history(
    text, runs, hold, dis
):
    node = ex.parse(text)
    arr = np.array(runs, dtype=float)  # (runs, days, [x, y])
    r_n = len(runs)
    stage_days = np.array(dis[:r_n])
    history = H.ArrayHistory(arr, {"x": 0, "y": 1})
    together = H.exit_holds(node, timedelta(days=hold), history, stage_days)
    # the simulator's one reading: the same verdict, and today's unknown as truth says it
    fires, unknown = H.exit_state(node, timedelta(days=hold), history, stage_days)
    t, f = truth(node, H.condition_env(node, history, stage_days))
    assert fires.tolist() == np.asarray(together).tolist()
    assert unknown.tolist() == np.broadcast_to(~np.asarray(t) & ~np.asarray(f), (r_n,)).tolist()
    for r in range(r_n):
        one = {"x": [float(v) for v in arr[r, :, 0]], "y": [float(v) for v in arr[r, :, 1]]}
        alone = H.exit_holds(node, timedelta(days=hold), one, int(stage_days[r]))
        assert bool(together[r]) == alone == _reference_holds(node, one, int(stage_days[r]), hold)
        for op in ("avg", "min", "max"):
            a = H.window(op, arr[:, :, 0], 3)[r]
            b = H.window(op, one["x"], 3)
            assert (a != a and b != b) or a == b  # bit for bit, NaN for NaN


@SETTINGS
@given(
    seq=st.lists(
        st.fixed_dictionaries(
            {"members": st.sampled_from([0.0, 1.0, 5.0, 9.0]), "daily_speak_rate": METRIC_VALUES}
        ),
        min_size=1,
        max_size=25,
    ),
    hold=st.integers(1, 4),
    window=st.integers(1, 4),
)
def test_a_lifecycle_takes_the_same_exit_on_the_same_day_vectorised_or_one_community_at_a_time(
    tmp_path, seq, hold, window
):
    """The simulator may decide every run's exits at once over its metric array; the runtime
    decides one community's from its own history; both step the same Lifecycle."""
    text = (
        BASE
        + f"""\
stages:
  growth:
    exits:
      - {{id: success, when: "members >= 5 and avg(daily_speak_rate, {window}d) >= 20%",
          for: {hold}d}}
      - {{id: decline, when: "max(members, 3d) < 2", goto: gone}}
    actions:
      a: {{cron: "0 9 * * *", do: post, text: hi}}
  next:
    after: growth
    actions:
      b: {{cron: "0 9 * * *", do: post, text: hi}}
  gone:
    rescue: true
    duration: {{max: 3d}}
"""
    )
    prog = _program(tmp_path, text)
    tz = prog.tz
    start = date(2027, 1, 4)
    names = {"members": 0, "daily_speak_rate": 1}
    # the same history twice, as two runs of one array (the simulator's shape)
    arr = np.array([[[d["members"], d["daily_speak_rate"]] for d in seq]] * 2)

    def days_in(st_, now):
        return (now.astimezone(tz).date() - st_.started.astimezone(tz).date()).days

    runtime = Lifecycle.start(prog, local_midnight(start, tz))
    sim = Lifecycle.start(prog, local_midnight(start, tz))
    for d in range(len(seq)):
        now = local_midnight(start + timedelta(days=d + 1), tz)
        closed = H.from_days(seq[: d + 1])
        runtime.step(now, G.history_exits(lambda s, st_, t, h=closed: (h, days_in(st_, t))))
        runs = H.ArrayHistory(arr[:, : d + 1], names)
        table = {
            (s.stage, e.id): H.exit_holds(e.when.node, e.hold, runs, np.full(2, days_in(s, now)))
            for s in sim.active
            for e in prog.playbook.stages[s.stage].exits
        }
        sim.step(now, ExitOracle(lambda s, st_, t, e, tb=table: bool(tb[st_.stage, e.id][1])))
    assert sim.transitions == runtime.transitions
    event(f"exit: {[t.exit for t in runtime.transitions if t.event == 'passed'] or 'none'}")


def test_the_lifecycle_differential_sees_both_exits():
    """The generated histories above reach both exits (the property is not vacuous)."""
    text = "members >= 5 and avg(daily_speak_rate, 2d) >= 20%"
    node = ex.parse(text)
    good = {"members": [9.0] * 3, "daily_speak_rate": [0.5] * 3}
    assert H.exit_holds(node, timedelta(days=2), good, 3)
    assert H.exit_holds(ex.parse("max(members, 3d) < 2"), None, {"members": [0.0] * 3}, 1)


MEMBER = st.fixed_dictionaries(
    {
        "source": st.sampled_from(["organic", "invite", "kol"]),
        "points": st.sampled_from([NAN, 0.0, 50.0, 200.0]),
        "vip": st.booleans(),
        "city": st.sampled_from(["", "北京", "上海"]),
    }
)
MEMBER_CONDITIONS = st.recursive(
    st.one_of(
        st.builds(lambda v: f'source == "{v}"', st.sampled_from(["invite", "kol", "x"])),
        st.just('source in ["invite", "kol"]'),
        st.just('city != ""'),
        st.builds(lambda op, v: f"points {op} {v}", OPS, st.sampled_from(["0", "100"])),
        st.just("vip"),
    ),
    lambda kids: st.one_of(
        st.builds(lambda a, b: f"({a}) and ({b})", kids, kids),
        st.builds(lambda a, b: f"({a}) or ({b})", kids, kids),
        st.builds(lambda a: f"not ({a})", kids),
    ),
    max_leaves=4,
)


@SETTINGS
@given(text=MEMBER_CONDITIONS, people=st.lists(MEMBER, min_size=1, max_size=6))
def test_a_member_condition_picks_the_same_members_from_arrays_as_one_by_one(text, people):
    cond = Expression(text, ex.parse(text), None, True)  # type: ignore[arg-type]
    arrays = {
        "source": np.array([p["source"] for p in people], dtype=object),
        "points": np.array([p["points"] for p in people]),
        "vip": np.array([p["vip"] for p in people]),
        "city": np.array([p["city"] for p in people], dtype=object),
    }
    mask = np.broadcast_to(PM.matches(cond, arrays), (len(people),))
    assert [bool(m) for m in mask] == [bool(PM.matches(cond, p)) for p in people]


@SETTINGS
@given(
    board=st.lists(
        st.tuples(st.sampled_from([NAN, 0.0, 1.0, 2.0, 5.0]), st.integers(0, 3)),
        min_size=1,
        max_size=8,
    ),
    n=st.integers(1, 4),
)
def test_a_leaderboard_over_runs_picks_each_runs_own_top_and_the_documented_order(board, n):
    measure = np.array([b[0] for b in board])
    joined = np.array([b[1] for b in board])
    ids = np.arange(len(board))
    two = RK.top_members(np.stack([measure, measure[::-1]]), joined, ids, n)
    assert two[0].tolist() == RK.top_members(measure, joined, ids, n).tolist()
    # the reference: ranked members (defined, above 0) by measure desc, join, id
    ranked = sorted(
        (i for i in range(len(board)) if measure[i] == measure[i] and measure[i] > 0),
        key=lambda i: (-measure[i], joined[i], ids[i]),
    )
    assert set(np.flatnonzero(two[0]).tolist()) == set(ranked[:n])


@SETTINGS
@given(
    ledgers=st.lists(
        st.tuples(st.lists(st.integers(0, 50), min_size=3, max_size=3), st.integers(0, 160)),
        min_size=1,
        max_size=5,
    )
)
def test_points_are_spent_oldest_first_over_members_as_for_one_member(ledgers):
    lots = np.array([lot for lot, _ in ledgers], dtype=float)
    spend = np.array([min(a, sum(lot)) for lot, a in ledgers], dtype=float)
    together = PT.spend(lots, spend)
    for k, (lot, _) in enumerate(ledgers):
        alone = PT.spend(np.array(lot, dtype=float), spend[k])
        left, ref = float(spend[k]), []
        for x in lot:  # FIFO, written plainly
            take = min(x, left)
            ref.append(x - take)
            left -= take
        assert together[k].tolist() == alone.tolist() == ref


@SETTINGS
@given(
    path=st.lists(st.sampled_from([NAN, 0.0, 5.0, 9.0, 10.0, 12.0]), min_size=2, max_size=8),
)
def test_a_milestone_fires_once_over_arrays_as_over_one_members_counter(path):
    reaches = 10.0
    fired_alone, events_alone = False, 0
    fired_arr = np.array([False, False])
    events_arr = np.array([0, 0])
    for before, after in itertools.pairwise(path):
        if MS.crossed(before, after, reaches, fired_alone):
            fired_alone, events_alone = True, events_alone + 1
        hit = MS.crossed(np.array([before] * 2), np.array([after] * 2), reaches, fired_arr)
        fired_arr |= hit
        events_arr += hit
    assert events_alone <= 1 and events_arr.tolist() == [events_alone] * 2
    # the reference: a crossing is a step from below (or unset) to at or above; once at most
    ups = [a >= reaches and not b >= reaches for b, a in itertools.pairwise(path)]
    assert events_alone == int(any(ups))


# -- differential: simulate's and run's stage exits on the same metric history ------------------
# The simulator decides every run's exits at once over its metric array (sim/kernel.py), the
# runtime one community's from its recorded history (run/runner.py). Fed the same daily values
# of two custom metrics, both take the same exit on the same day. Values are exact in float32
# (the simulator's metric array): see the note on float32 rounding in the report.

EXACT = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 9.0])


class _Feed:
    """A metric source giving each closed day's values of `x` and `y` from a list."""

    name = "feed"

    def __init__(self, seq: list[tuple[float, float]], start: date, tz: object) -> None:
        self.seq, self.start, self.tz = seq, start, tz

    def read(self, at: datetime) -> dict[str, float]:
        k = (at.astimezone(self.tz).date() - self.start).days - 1  # type: ignore[arg-type]
        if 0 <= k < len(self.seq):
            return {"x": self.seq[k][0], "y": self.seq[k][1]}
        return {}


def _exits_playbook(hold: int, window: int, op: str) -> str:
    return (
        BASE
        + f"""\
community: {{start: "2027-01-04"}}
metrics:
  x: {{unit: count}}
  y: {{unit: count}}
stages:
  growth:
    duration: {{min: 2d}}
    exits:
      - {{id: success, when: "x >= 5 and {op}(y, {window}d) >= 0.5", for: {hold}d}}
      - {{id: decline, when: "max(x, 3d) < 1", goto: gone}}
    actions:
      a: {{cron: "0 9 * * *", do: post, text: hi}}
  next:
    after: growth
    exits:
      - {{id: done, when: "min(y, 2d) >= 1", for: 2d}}
    actions:
      b: {{cron: "0 9 * * *", do: post, text: hi}}
  gone:
    rescue: true
    duration: {{max: 3d}}
"""
    )


@SETTINGS
@given(
    seq=st.lists(st.tuples(EXACT, EXACT), min_size=3, max_size=18),
    hold=st.integers(1, 3),
    window=st.integers(1, 3),
    op=st.sampled_from(["avg", "min", "max"]),
)
def test_simulate_and_run_take_the_same_exits_on_the_same_days(tmp_path, seq, hold, window, op):
    from sop.engine.run.clock import VirtualClock
    from sop.engine.run.runner import Runner, RunOptions
    from sop.engine.run.store import open_store

    from tests.test_run import Sink

    prog = _program(tmp_path, _exits_playbook(hold, window, op))
    pb, start, days = prog.playbook, date(2027, 1, 4), len(seq)
    # the simulator, with the two metrics' daily values written where its model would write them
    sim = Simulator(pb, Scenario(), days)
    feed = iter(seq)

    def custom(m, mi, *_):
        x, y = next(feed)
        m[:, mi["x"]], m[:, mi["y"]] = x, y

    sim._custom_metrics = custom  # type: ignore[method-assign]
    res = sim.run_chunk(1, np.random.SeedSequence(0))
    simulated = {
        (sid, res.stage_exits[0].get(sid), int(res.stage_passed[0, j]))
        for j, sid in enumerate(sim.stage_ids)
        if res.stage_passed[0, j] >= 0
    }
    # the runtime, reading the same values from a metric source at each daily check
    t0 = local_midnight(start, prog.tz)
    sink = Sink()
    runner = Runner(prog, open_store("memory:"), {b: sink for b in pb.backends},
                    VirtualClock(t0), [_Feed(seq, start, prog.tz)], RunOptions(seed=1))  # fmt: skip
    runner.run(until=local_midnight(start + timedelta(days=days), prog.tz) + timedelta(hours=1))
    ran = {
        (t.stage, t.exit, (t.at.astimezone(prog.tz).date() - start).days)
        for t in runner.store.transitions(runner.run_id)
        if t.event == "passed"
    }
    assert simulated == ran
    event(f"exits: {sorted(e for _, e, _ in ran) or 'none'}")


def test_a_value_exactly_on_a_threshold_passes_in_simulate_as_in_run(tmp_path):
    """The simulator's metric history is float64: 20 % is 0.2 there as in run (float32 read it
    as 0.2000000030, so `<= 20%` never passed on exactly 20 %)."""
    text = (
        BASE
        + """\
metrics:
  y: {unit: ratio}
stages:
  s:
    exit: {when: "y <= 20%"}
    actions:
      a: {cron: "0 9 * * *", do: post, text: hi}
  t:
    after: s
"""
    )
    prog = _program(tmp_path, text)
    sim = Simulator(prog.playbook, Scenario(), 4)

    def custom(m, mi, *_):
        m[:, mi["y"]] = 0.2  # e.g. daily_speak_rate of 1 speaker in 5 members

    sim._custom_metrics = custom  # type: ignore[method-assign]
    res = sim.run_chunk(1, np.random.SeedSequence(0))
    assert G.judge(prog.playbook.stages["s"].gate.node, {"y": 0.2}).holds  # the runtime's
    assert res.stage_exits[0].get("s") == "pass"
