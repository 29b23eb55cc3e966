"""Built-in metrics: one definition (engine/program/metrics.py) that the simulator computes, that
docs/metrics.md and `sop metrics` print, and that gates read with "undefined" never taken for 0."""

from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sop.cli import main
from sop.engine.core import expr as ex
from sop.engine.program import metrics
from sop.engine.program.gates import judge
from sop.engine.sim.kernel import sbg_survival
from sop.engine.sim.montecarlo import SimOptions, SimResult, simulate
from sop.engine.sim.scenario import (
    Acquisition,
    Activity,
    Conversion,
    Retention,
    Scenario,
    load_scenario,
    scenario_beside,
)
from sop.engine.validate import load_playbook

from tests.conftest import BASE, PLAYBOOKS, ROOT

NAN = math.nan
BARE = "playbook: bare\ntimezone: UTC\nstages:\n  only: {}\n"
# nobody arrives after the seed: every departure shows in `members`
SEED_ONLY = dict(organic_per_day=0, bass_p=0, bass_q=0, invites_per_member_per_day=0)
NO_CHURN = Retention(alpha=0.001, beta=1000.0, period_days=30)


def _playbook(tmp_path: Path, text: str):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    res = load_playbook(str(p))
    assert res.playbook is not None, res.diagnostics
    return res.playbook


def _metric(res: SimResult, name: str) -> np.ndarray:
    """(runs, days) values of one metric."""
    return res.metrics[:, :, res.metric_names.index(name)].astype(float)


# -- retention_dK: each cohort at exactly K days ------------------------------------------------


def test_retention_d30_reads_each_cohort_after_exactly_30_days_and_is_undefined_before(
    tmp_path,
) -> None:
    seed = 4000
    sc = Scenario(
        acquisition=Acquisition(seed_users=seed, **SEED_ONLY),
        retention=Retention(alpha=1.0, beta=1.5, period_days=30),
    )
    res = simulate(_playbook(tmp_path, BARE), sc, SimOptions(runs=8, days=45, seed=5))
    r30, members = _metric(res, "retention_d30"), _metric(res, "members")
    # no cohort has been a member for 30 days before the close of day 29: undefined, not 0
    assert np.isnan(r30[:, :29]).all()
    # the seed cohort (joined on day 0) after 30 days: the survivors at the close of day 29,
    # read on every day while it is in the 7-day window (days 29..35), not its later survival
    for d in range(29, 36):
        assert np.allclose(r30[:, d], members[:, 29] / seed)
    assert abs(r30[:, 29].mean() - sbg_survival(1.0, 1.5, 1.0)) < 0.02
    assert (members[:, 35] < members[:, 29]).all()  # members kept leaving: old code followed them
    # from day 36 the window holds no joiners: undefined again
    assert np.isnan(r30[:, 36:]).all()


def test_retention_cohort_window_and_arithmetic_are_pure_functions() -> None:
    assert metrics.cohort_days(28, 30) is None
    assert metrics.cohort_days(29, 30) == (0, 0)
    assert metrics.cohort_days(40, 30) == (5, 11)
    assert metrics.cohort_days(0, 1) == (0, 0)
    joined = np.array([[10.0, 0, 0, 0]])
    survivors = np.array([[6.0, 0, 0, 0]])
    assert metrics.retention(joined, survivors, 2, 3) == pytest.approx([0.6])
    assert np.isnan(metrics.retention(joined, survivors, 1, 3)).all()  # no cohort 3 days old


# -- removal for violations: counted once ----------------------------------------------------


REMOVING = """\
    playbook: strict
    timezone: UTC
    moderation: {violations: {remove_at: 1}}
    stages:
      only: {}
    """


def test_members_removed_for_violations_leave_once_not_every_day_until_compaction(
    tmp_path,
) -> None:
    seed = 2000
    sc = Scenario(
        acquisition=Acquisition(seed_users=seed, **SEED_ONLY),
        retention=NO_CHURN,
        activity=Activity(violation_per_speak=0.02),
    )
    res = simulate(_playbook(tmp_path, REMOVING), sc, SimOptions(runs=8, days=120, seed=3))
    members, churn = _metric(res, "members"), _metric(res, "churn_rate")
    assert members[:, -1].mean() < 0.8 * seed  # removals happened
    # seed only, no other churn: the departures of days d-6..d are members[d-7] - members[d]
    for d in range(7, 120):
        left = members[:, d - 7] - members[:, d]
        expected = np.where(left > 0, left / np.maximum(members[:, d] + left, 1), 0)
        assert np.allclose(churn[:, d], expected, atol=1e-6), d
    retention = _metric(res, "retention_d1")
    assert np.nanmin(retention) >= 0


# -- conversion_rate: departed payers stay in the numerator ------------------------------------


def test_conversion_rate_does_not_drop_when_departed_members_are_compacted(tmp_path) -> None:
    sc = Scenario(
        acquisition=Acquisition(seed_users=3000, **SEED_ONLY),
        retention=Retention(alpha=4.0, beta=1.0, period_days=30),  # most leave within weeks
        conversion=Conversion(base_daily=0.01),
    )
    res = simulate(_playbook(tmp_path, BARE), sc, SimOptions(runs=8, days=60, seed=2))
    conv, members = _metric(res, "conversion_rate"), _metric(res, "members")
    assert (members[:, -1] < 0.3 * 3000).all()  # the member arrays were compacted on the way
    # nobody joins after day 0, so members ever paying / members ever joined never falls
    assert (np.diff(conv, axis=1) >= 0).all()
    assert conv.max() <= 1


# -- undefined metrics: gates, guards, definitions ---------------------------------------------


def test_judge_reads_undefined_with_three_valued_logic() -> None:
    def verdict(text: str, **values: float):
        return judge(ex.parse(text), {"community_age": 5.0, **values})

    v = verdict("retention_d30 >= 0%", retention_d30=NAN)
    assert not v.holds and v.note == "undefined: retention_d30 (no cohort is 30 days old)"
    assert not verdict("not (retention_d30 < 0.6)", retention_d30=NAN).holds
    assert verdict("members >= 10 or retention_d30 >= 0.6", members=12, retention_d30=NAN).holds
    decided = verdict("members >= 10 and retention_d30 >= 0.6", members=2, retention_d30=NAN)
    assert not decided.holds and decided.decided  # false whatever retention is
    v = verdict("members >= 10 and daily_speak_rate >= 0.2", members=12, daily_speak_rate=NAN)
    assert v.note == "undefined: daily_speak_rate (when the community has no members)"
    assert verdict("retention_d30 >= 0.6", retention_d30=0.61).holds


UNDEFINED_GATE = """\
    playbook: early
    timezone: UTC
    roles: {ops: {headcount: 1}}
    defaults: {owner: ops}
    stages:
      early:
        exit: {when: retention_d30 >= 0%, deadline: {after: 10d, then: {alert: ops}}}
    """


def test_a_gate_on_an_undefined_metric_does_not_pass_and_says_why(tmp_path) -> None:
    p = tmp_path / "early.yaml"
    p.write_text(textwrap.dedent(UNDEFINED_GATE), encoding="utf-8")
    r = CliRunner().invoke(
        main, ["simulate", str(p), "--runs", "8", "--days", "20", "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    gate = json.loads(r.stdout)["gates"][0]
    # retention_d30 >= 0 holds for any value it can have; read as 0 it passed on day 1
    assert gate["p_pass"] == 0.0
    assert gate["undefined"] == [
        {"note": "undefined: retention_d30 (no cohort is 30 days old)", "runs": 8}
    ]
    r = CliRunner().invoke(main, ["simulate", str(p), "--runs", "8", "--days", "20"])
    text = " ".join(r.stdout.split())  # the terminal wraps long lines
    assert "early: undecided at its last check in 8 run(s): undefined: retention_d30 (no" in text


def test_an_if_guard_on_an_undefined_metric_does_not_hold(tmp_path) -> None:
    pb = _playbook(
        tmp_path,
        """\
        playbook: guarded
        timezone: UTC
        roles: {ops: {headcount: 1}}
        defaults: {owner: ops}
        stages:
          only:
            actions:
              ads: {cron: "0 9 * * *", do: post, text: ads, effect: {joins: 50},
                    if: not (conversion_rate < 0)}
        """,
    )
    sc = Scenario(acquisition=Acquisition(seed_users=0, **SEED_ONLY))
    res = simulate(pb, sc, SimOptions(runs=8, days=10, seed=1))
    # nobody ever joined, so conversion_rate has no value and the ads never run (read as 0,
    # `not (0 < 0)` held and 50 a day joined)
    assert _metric(res, "members").max() == 0
    assert np.isnan(_metric(res, "conversion_rate")).all()


def test_custom_metrics_without_a_value_are_undefined_not_zero(tmp_path) -> None:
    pb = _playbook(
        tmp_path,
        """\
        playbook: custom
        timezone: UTC
        metrics:
          paid_share: {unit: ratio, definition: paying_members / members}
          unknown: {unit: count}
        stages:
          only: {}
        """,
    )
    empty = Scenario(acquisition=Acquisition(seed_users=0, **SEED_ONLY))
    res = simulate(pb, empty, SimOptions(runs=2, days=5))
    assert np.isnan(_metric(res, "paid_share")).all()  # 0 / 0 members: no share
    assert np.isnan(_metric(res, "unknown")).all()  # neither defined nor modelled
    assert any("`unknown`" in w and "undefined" in w for w in res.warnings)
    # in a condition, x / 0 stays 0 (docs/language.md)
    assert judge(ex.parse("members / members == 0"), {"members": 0.0}).holds


def test_percentiles_of_an_undefined_day_are_null_in_json(tmp_path) -> None:
    res = simulate(_playbook(tmp_path, BARE), Scenario(), SimOptions(runs=4, days=10, seed=1))
    data = json.loads(json.dumps(res.as_dict(), allow_nan=False))
    r90 = data["metrics"]["retention_d90"]
    assert r90["p50"] == [None] * 10 and r90["undefined_runs"] == [4] * 10
    assert data["metrics"]["members"]["undefined_runs"] == [0] * 10


# -- ranges over a year of every shipped playbook ---------------------------------------------


@pytest.mark.parametrize("path", sorted(PLAYBOOKS.glob("*.yaml")), ids=lambda p: p.stem)
def test_a_year_of_every_shipped_playbook_keeps_every_metric_in_its_documented_range(
    path,
) -> None:
    pb = load_playbook(str(path)).playbook
    beside = scenario_beside(str(path))
    sc = load_scenario(beside) if beside else Scenario()
    res = simulate(pb, sc, SimOptions(runs=8, days=365, seed=1))
    for name, d in metrics.DEFINITIONS.items():
        if name not in res.metric_names:
            continue  # days_in_stage is read at each gate, not recorded per day
        x = _metric(res, name)
        if not d.undefined:
            assert not np.isnan(x).any(), name
        v = x[~np.isnan(x)]
        assert len(v), name
        assert d.low <= v.min() and v.max() <= d.high, (name, v.min(), v.max())


# -- one table: code, `sop metrics`, docs --------------------------------------------------------


def test_every_built_in_metric_has_one_definition_with_unit_range_and_undefined_rule() -> None:
    from sop.engine.core.catalog import BUILTIN_METRICS

    assert list(metrics.DEFINITIONS) == list(BUILTIN_METRICS)
    for name, d in metrics.DEFINITIONS.items():
        assert d.unit == BUILTIN_METRICS[name].unit and d.measured, name
        if d.unit == "ratio":
            assert (d.low, d.high) == (0, 1), name
    before = metrics.before_start()
    assert before["members"] == 0 and math.isnan(before["daily_speak_rate"])


def test_sop_metrics_prints_the_table_as_text_and_json() -> None:
    r = CliRunner().invoke(main, ["metrics", "--format", "json"])
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    by = {row["name"]: row for row in rows}
    assert by["retention_d30"]["range"] == [0, 1]
    assert "30 days old" in by["retention_d30"]["undefined"]
    assert by["members"]["range"] == [0, None] and by["members"]["undefined"] is None
    assert by["fission_multiplier"]["unit"] == "factor"
    r = CliRunner().invoke(main, ["metrics"])
    assert r.exit_code == 0 and r.stdout == metrics.text_table()
    assert re.search(r"^conversion_rate  \(ratio, 0\.\.1\)", r.stdout, re.M)


def test_docs_metrics_md_carries_the_generated_table() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert metrics.markdown_table() in doc


def test_a_k_factor_above_1_is_not_flagged_as_an_unreachable_ratio(check) -> None:
    res, _ = check(
        BASE
        + "stages:\n  viral:\n    exit: {when: fission_multiplier >= 1.5}\n"
        + "  share:\n    after: viral\n    exit: {when: fission_rate >= 1.5}\n"
    )
    codes = [d.code for d in res.diagnostics]
    assert codes.count("SOP243") == 1  # fission_rate is a share; the K-factor may exceed 1


def test_zero_safe_division_has_one_home() -> None:
    assert math.isnan(metrics.ratio(1.0, 0.0)) and metrics.ratio(1.0, 4.0) == 0.25
    assert ex.divide(1.0, 0.0) == 0.0
    assert np.isnan(metrics.ratio(np.array([1.0, 2.0]), np.array([0.0, 4.0])))[0]
    engine = ROOT / "engine"
    hits = [
        p.relative_to(ROOT).as_posix()
        for p in engine.rglob("*.py")
        if re.search(r"np\.divide\(|where=\w+ [!>]= ?0", p.read_text(encoding="utf-8"))
    ]
    assert hits == ["engine/core/expr.py"]
