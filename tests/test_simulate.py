"""`sop simulate` and `sop calibrate`: fidelity to the published models, reproducibility,
gates, expectations, scenarios, reports, sweeps and the Dask executor."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sop.cli import main
from sop.engine.sim.calibrate import (
    bgnbd_expected,
    fit_bgnbd,
    fit_sbg,
    simulate_bgnbd,
)
from sop.engine.sim.kernel import bass_cdf, bass_step, sbg_survival
from sop.engine.sim.montecarlo import SimOptions, simulate
from sop.engine.sim.scenario import Acquisition, Retention, Scenario
from sop.engine.validate import load_playbook

from tests.conftest import PLAYBOOKS, REFERENCE

SCENARIO = PLAYBOOKS / "scenarios" / "community-lifecycle.yaml"


def sop(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return r.exit_code, r.output


def sim(*args: str) -> tuple[int, str]:
    """`sop simulate` on the reference playbook and scenario."""
    return sop("simulate", str(REFERENCE), "--scenario", str(SCENARIO), *args)


# -- fidelity --------------------------------------------------------------------------------


def test_bass_agent_simulation_matches_the_closed_form() -> None:
    rng = np.random.default_rng(7)
    runs, m = 200, 10_000
    adopters = np.zeros(runs)
    yearly = []
    for day in range(1, 20 * 365 + 1):
        adopters += bass_step(adopters, m, 0.03, 0.38, rng)
        if day % 365 == 0:
            yearly.append(adopters.mean() / m)
    closed = bass_cdf(np.arange(1, 21), 0.03, 0.38)
    assert np.abs(np.array(yearly) - closed).max() < 0.002


# Fader & Hardie (2007), "How to project customer retention", Table 1: survivors of 1,000.
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491]
REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241]


@pytest.mark.parametrize(
    ("survivors", "alpha", "beta"), [(HIGH_END, 0.668, 3.806), (REGULAR, 0.704, 1.182)]
)
def test_sbg_calibration_recovers_the_published_estimates(survivors, alpha, beta) -> None:
    a, b, _ = fit_sbg(np.array(survivors, dtype=float))
    assert abs(a / alpha - 1) < 0.005 and abs(b / beta - 1) < 0.005


def test_simulated_beta_churn_matches_the_sbg_survival_curve() -> None:
    rng = np.random.default_rng(3)
    theta = rng.beta(0.704, 1.182, 400_000)
    lifetimes = rng.geometric(theta)  # periods until churn
    t = np.arange(1, 8)
    simulated = np.array([(lifetimes > k).mean() for k in t])
    assert np.abs(simulated - sbg_survival(0.704, 1.182, t)).max() < 0.003


def test_kernel_retention_follows_sbg(tmp_path) -> None:
    """The full model, no actions: cohort survival at day 30/60/90 is the sBG curve."""
    p = tmp_path / "bare.yaml"
    p.write_text("playbook: bare\ntimezone: UTC\nstages:\n  only: {}\n")
    pb = load_playbook(str(p)).playbook
    sc = Scenario(
        acquisition=Acquisition(
            seed_users=4000, organic_per_day=0, bass_p=0, bass_q=0, invites_per_member_per_day=0
        ),
        retention=Retention(alpha=1.0, beta=1.5, period_days=30),
    )
    res = simulate(pb, sc, SimOptions(runs=8, days=91, seed=5))
    members = res.percentiles("members", (50,))[0]
    for k in (30, 60, 90):
        assert abs(members[k] / 4000 - sbg_survival(1.0, 1.5, k / 30)) < 0.02


def test_bgnbd_simulation_matches_the_analytic_expectation() -> None:
    # CDNOW parameters (Fader, Hardie & Lee 2005): r, alpha, a, b
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    counts = simulate_bgnbd(300_000, 39.0, r, alpha, a, b, np.random.default_rng(11))
    se = counts.std() / np.sqrt(len(counts))
    assert abs(counts.mean() - bgnbd_expected(39.0, r, alpha, a, b)) < 4 * se


def test_bgnbd_fit_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(2)
    n, T = 20_000, 39.0
    r, alpha, a, b = 0.5, 4.0, 0.8, 2.5
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    x = np.zeros(n)
    tx = np.zeros(n)
    clock = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        i = np.flatnonzero(alive)
        clock[i] += rng.exponential(1 / lam[i])
        inside = clock[i] <= T
        x[i[inside]] += 1
        tx[i[inside]] = clock[i[inside]]
        alive[i[~inside]] = False
        still = i[inside]
        alive[still[rng.random(len(still)) < p[still]]] = False
    est, _ = fit_bgnbd(x, tx, np.full(n, T))
    assert np.allclose(est, [r, alpha, a, b], rtol=0.2)


# -- reproducibility ---------------------------------------------------------------------------


def _reference():
    return load_playbook(str(REFERENCE)).playbook


def _strip(d: dict) -> dict:
    d = dict(d)
    d.pop("performance")
    d["options"] = {k: v for k, v in d["options"].items() if k not in ("workers", "executor")}
    return d


def test_same_seed_same_result_for_1_and_2_workers() -> None:
    from sop.engine.sim.scenario import load_scenario

    sc = load_scenario(str(SCENARIO))
    one = simulate(_reference(), sc, SimOptions(runs=20, days=60, seed=42, workers=1))
    two = simulate(_reference(), sc, SimOptions(runs=20, days=60, seed=42, workers=2))
    assert np.array_equal(one.metrics, two.metrics, equal_nan=True)  # undefined is NaN
    assert _strip(one.to_dict()) == _strip(two.to_dict())
    other = simulate(_reference(), sc, SimOptions(runs=20, days=60, seed=43, workers=1))
    assert not np.array_equal(one.metrics, other.metrics, equal_nan=True)


# -- gates, stages, expectations ----------------------------------------------------------------

GATED = """\
    playbook: gated
    timezone: Asia/Shanghai
    roles: {ops: {headcount: 1}}
    defaults: {owner: ops}
    routines:
      welcome: {on: member.joined, within: 24h, do: message, to: member, text: hi}
    stages:
      open:
        duration: {min: 5d}
        exit: {when: members >= 50, deadline: {after: 20d, then: {alert: ops}}}
      never:
        after: open
        exit: {when: members >= 1000000, deadline: {after: 10d, then: {abort: true}}}
    expect:
      - {every: member.joined, gets: welcome, within: 24h}
    """


def _pb(tmp_path: Path, text: str):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    res = load_playbook(str(p))
    assert res.playbook is not None, res.diagnostics
    return res.playbook, p


def test_gate_probabilities_and_stage_walk(tmp_path) -> None:
    pb, _ = _pb(tmp_path, GATED)
    res = simulate(pb, Scenario(), SimOptions(runs=16, days=40, seed=1))
    by = {g.stage: g for g in res.gates}
    assert by["open"].probability == 1.0 and by["open"].median_day == 5
    assert by["never"].probability == 0.0 and by["never"].entered == 16
    timing = res.stage_timing()
    assert timing["never"]["outcomes"] == {"aborted": 16}
    assert res.expect_failures == []
    # after the abort nothing fires any more: no welcomes, no stage changes
    assert all(o["never"] == "aborted" for o in res.outcomes)


def test_expectation_failure_is_reported_with_run_and_day(tmp_path) -> None:
    text = GATED.replace("    routines:\n      welcome:", "    routines:\n      hello:").replace(
        "      open:\n",
        "      open:\n        actions:\n          welcome: {on: member.joined,"
        " within: 24h, do: message, to: member, text: hi}\n",
    )
    pb, _ = _pb(tmp_path, text)
    res = simulate(pb, Scenario(), SimOptions(runs=4, days=30, seed=1))
    assert res.expect_failures
    run, day, what = res.expect_failures[0]
    assert run == 0 and day == 5 and "welcome" in what and "never" in what
    # it says how many joined that day, not 1 for "some did"
    new = res.metrics[:, :, res.metric_names.index("new_members")]
    for run, day, what in res.expect_failures:
        assert what.startswith(f"{int(new[run, day])} joiner(s) not sent `welcome`")
    assert any(new[r, d] > 1 for r, d, _ in res.expect_failures)


def test_message_cap_expectation(tmp_path) -> None:
    text = GATED.replace(
        "      - {every: member.joined, gets: welcome, within: 24h}",
        "      - {max_messages_per_member_per_day: 1}",
    ).replace(
        "      open:\n",
        '      open:\n        actions:\n          a: {cron: "0 9 * * *", do:'
        ' post, text: a}\n          b: {cron: "0 19 * * 5", do: post, text: b}\n',
    )
    pb, _ = _pb(tmp_path, text)
    res = simulate(pb, Scenario(), SimOptions(runs=2, days=10, seed=1))
    days = sorted({d for _, d, _ in res.expect_failures})
    # day 0 is a Monday (simulated calendar); the joiners' welcome adds one on day 0 too
    assert days[0] == 0 and any("messages" in w for _, _, w in res.expect_failures)


# -- CLI -----------------------------------------------------------------------------------------


def test_simulate_json_carries_gates_stages_and_metric_percentiles() -> None:
    code, out = sim(
        "--runs",
        "12",
        "--days",
        "60",
        "--format",
        "json",
    )
    data = json.loads(out)
    assert code == 0
    gate = next(g for g in data["gates"] if g["stage"] == "cold-start")
    assert 0 <= gate["interval95"][0] <= gate["p_pass"] <= gate["interval95"][1] <= 1
    assert set(data["stages"]) == {
        "prep",
        "cold-start",
        "rescue",
        "growth",
        "deepening",
        "dissolution",
    }
    members = data["metrics"]["members"]
    assert (
        len(members["p50"]) == 60 and members["p5"][-1] <= members["p50"][-1] <= members["p95"][-1]
    )
    assert data["performance"]["member_days"] > 0


def test_simulate_text_and_html_report(tmp_path) -> None:
    report = tmp_path / "sim.html"
    code, out = sim(
        "--runs",
        "8",
        "--days",
        "90",
        "--seed",
        "3",
        "--report",
        str(report),
    )
    assert code == 0 and "gates: P(pass by the deadline)" in out
    page = report.read_text(encoding="utf-8")
    assert page.count("<svg") >= 5 and "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']https?:""", page)  # opens offline
    assert "seed <b>3</b>" in page and "seed-typical" in page
    assert "core_members" in page and "retention_d30" in page


def test_sweep_gives_a_row_per_value() -> None:
    code, out = sim(
        "--runs",
        "8",
        "--days",
        "60",
        "--sweep",
        "acquisition.organic_per_day=0,20",
        "--format",
        "json",
    )
    rows = json.loads(out)
    assert code == 0 and [r["values"] for r in rows] == [
        {"acquisition.organic_per_day": "0"},
        {"acquisition.organic_per_day": "20"},
    ]
    cold = [next(g for g in r["gates"] if g["stage"] == "cold-start")["p_pass"] for r in rows]
    assert cold[0] <= cold[1]


def test_scenario_errors_are_located(tmp_path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("scenario: x\nretention: {alpha: -1, betta: 2}\n")
    r = CliRunner().invoke(main, ["simulate", str(REFERENCE), "--scenario", str(bad)])
    assert r.exit_code == 2
    assert f"{bad}:2:20: error SOP103" in r.output or f"{bad}:2:20" in r.stderr
    r = CliRunner().invoke(main, ["simulate", str(REFERENCE), "--set", "retention.gamma=1"])
    assert r.exit_code == 2 and "unknown key `gamma`" in r.output


def test_unmodelled_custom_metric_is_a_warning(tmp_path) -> None:
    import shutil

    shutil.copy(REFERENCE, tmp_path / REFERENCE.name)
    shutil.copytree(PLAYBOOKS / "fragments", tmp_path / "fragments")
    lone = str(tmp_path / REFERENCE.name)  # no scenarios/ beside it
    code, out = sop("simulate", lone, "--runs", "2", "--days", "10", "--format", "json")
    warnings = json.loads(out)["warnings"]
    assert code == 0 and any("survey_responses" in w for w in warnings)


def test_scenario_beside_the_playbook_is_used_by_default() -> None:
    r = CliRunner().invoke(
        main, ["simulate", str(REFERENCE), "--runs", "2", "--days", "10", "--format", "json"]
    )
    data = json.loads(r.stdout)
    assert r.exit_code == 0 and data["scenario"]["name"] == "seed-typical"
    assert data["warnings"] == [] and "using scenario" in r.stderr


def test_scenarios_validate_with_the_playbooks() -> None:
    code, out = sop("validate", str(SCENARIO))
    assert code == 0, out


def test_calibrate_retention_from_csv(tmp_path) -> None:
    f = tmp_path / "cohort.csv"
    f.write_text("period,survivors\n" + "".join(f"{i},{v}\n" for i, v in enumerate(REGULAR)))
    code, out = sop("calibrate", "retention", str(f), "--period-days", "365")
    assert code == 0 and "alpha: 0.704" in out and "beta: 1.182" in out
    assert "period_days: 365" in out


def test_calibrate_acquisition_recovers_bass(tmp_path) -> None:
    t = np.arange(0, 200)
    from sop.engine.sim.calibrate import bass_cumulative

    y = bass_cumulative(t.astype(float), 0.002, 0.04, 5000)
    f = tmp_path / "joins.csv"
    f.write_text(
        "period,cumulative\n" + "".join(f"{a},{b:.3f}\n" for a, b in zip(t, y, strict=True))
    )
    code, out = sop("calibrate", "acquisition", str(f), "--format", "json", "--period-days", "1")
    fit = json.loads(out)
    assert code == 0
    assert abs(fit["params"]["p_per_period"] / 0.002 - 1) < 0.01
    assert abs(fit["params"]["m"] / 5000 - 1) < 0.01
    assert abs(fit["scenario"]["acquisition"]["bass_q"] - 0.04 * 365) < 0.1


@pytest.mark.parametrize(
    ("model", "csv_name", "extra"),
    [
        ("retention", "retention-cohort.csv", ["--period-days", "365"]),
        ("acquisition", "acquisition-joins.csv", ["--period-days", "1"]),
        ("activity", "activity-members.csv", ["--period-days", "7"]),
    ],
)
def test_calibrated_fragments_make_valid_scenarios(tmp_path, model, csv_name, extra) -> None:
    code, out = sop("calibrate", model, str(PLAYBOOKS / "data" / csv_name), *extra)
    assert code == 0 and out.startswith("# ")
    scenario = tmp_path / "s.yaml"
    scenario.write_text("scenario: calibrated\n" + out, encoding="utf-8")
    assert sop("validate", str(scenario))[0] == 0
    code, _ = sop(
        "simulate", str(REFERENCE), "--scenario", str(scenario), "--runs", "2", "--days", "20"
    )
    assert code == 0


def test_calibrate_rejects_bad_csv_with_the_line(tmp_path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("period,survivors\n0,1000\n1,abc\n")
    r = CliRunner().invoke(main, ["calibrate", "retention", str(f)])
    assert r.exit_code == 2 and "bad.csv:3" in r.output


# -- Dask --------------------------------------------------------------------------------------


def test_dask_executor_on_a_real_local_cluster() -> None:
    distributed = pytest.importorskip("distributed")
    from sop.engine.sim.scenario import load_scenario

    sc = load_scenario(str(SCENARIO))
    local = simulate(_reference(), sc, SimOptions(runs=16, days=30, seed=9))
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        code, out = sim(
            "--runs",
            "16",
            "--days",
            "30",
            "--seed",
            "9",
            "--executor",
            "dask",
            "--address",
            cluster.scheduler_address,
            "--format",
            "json",
        )
    assert code == 0
    remote = json.loads(out)
    assert _strip(remote) == _strip(json.loads(json.dumps(local.to_dict())))


def test_dask_executor_needs_an_address() -> None:
    code, _ = sop("simulate", str(REFERENCE), "--executor", "dask")
    assert code == 2


STREAK = """\
    playbook: streak
    timezone: UTC
    roles: {ops: {headcount: 1}}
    defaults: {owner: ops}
    routines:
      checkin: {cron: "0 21 * * *", do: checkin, text: 打卡, effect: {participation: 1.0}}
    stages:
      only: {}
    """


def test_checkin_streak_rewards_fire(tmp_path) -> None:
    """A 7-day streak reward with `churn: -1` keeps visibly more members than none (the
    hazard at the floor of the cap, half, for a fading month: docs/simulation.md)."""
    reward = STREAK.replace(
        "    stages:",
        "      reward: {on: member.checkin_streak, streak: 7, do: reward, to: member, text: 奖励,"
        " effect: {churn: -1.0}}\n    stages:",
    )
    sc = Scenario(
        acquisition=Acquisition(
            seed_users=3000, organic_per_day=0, bass_p=0, bass_q=0, invites_per_member_per_day=0
        ),
        retention=Retention(alpha=1.0, beta=1.0, period_days=30),
    )
    plain, _ = _pb(tmp_path, STREAK)
    with_reward, _ = _pb(tmp_path, reward)
    a = simulate(plain, sc, SimOptions(runs=2, days=60, seed=4)).percentiles("members", (50,))
    b = simulate(with_reward, sc, SimOptions(runs=2, days=60, seed=4)).percentiles("members", (50,))
    assert b[0][-1] > a[0][-1] * 1.06


def test_referrals_credit_inviters_for_tier_rules(tmp_path) -> None:
    text = STREAK.replace(
        "    stages:",
        '    tiers:\n      review: {cron: "0 1 * * *"}\n'
        "      levels: {fan: {}, advocate: {promote: invites >= 1}}\n"
        "    stages:",
    )
    pb, _ = _pb(tmp_path, text)
    sc = Scenario(
        acquisition=Acquisition(
            seed_users=200,
            organic_per_day=0,
            bass_p=0,
            bass_q=0,
            invites_per_member_per_day=0.5,
            invite_conversion=0.5,
        )
    )
    res = simulate(pb, sc, SimOptions(runs=2, days=20, seed=1))
    core = res.percentiles("core_members", (50,))[0]
    assert core[0] == 0 and core[-1] > 20
