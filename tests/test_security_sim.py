"""`simulate` and `calibrate` on hostile or mistaken input: results that are right, not silently
wrong; bounded values, memory and time; located errors instead of tracebacks; safe output."""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sop.cli import main
from sop.engine.sim.montecarlo import SimOptions, simulate
from sop.engine.sim.scenario import Acquisition, Scenario
from sop.engine.validate import load_playbook

from tests.conftest import REFERENCE, ROOT, position

# No one joins by themselves: every member in these runs comes from the playbook's actions.
QUIET = Scenario(
    acquisition=Acquisition(
        seed_users=0, organic_per_day=0, bass_p=0, bass_q=0, invites_per_member_per_day=0
    )
)


def _pb(tmp_path: Path, text: str):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    res = load_playbook(str(p))
    assert res.playbook is not None, res.diagnostics
    return res.playbook


def _sop(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31))


def _child(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, under 2 GiB of address space and a timeout."""
    return subprocess.run(
        [sys.executable, "-m", "sop.cli", *args],
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1", "OPENBLAS_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limits,
    )


# -- `if:` guards and `demote.when` are obeyed ---------------------------------------------------

BURST = """\
    playbook: burst
    timezone: UTC
    roles: {ops: {headcount: 1}}
    defaults: {owner: ops}
    routines:
      kol-post: {cron: "0 9 * * *", do: post, text: hi, effect: {joins: 50}GUARD}
    stages:
      only: {}
    """


def _members(tmp_path: Path, guard: str, days: int = 10) -> np.ndarray:
    pb = _pb(tmp_path, BURST.replace("GUARD", guard))
    res = simulate(pb, QUIET, SimOptions(runs=2, days=days, seed=1, workers=1))
    return res.percentiles("new_members", (50,))[0]


def test_an_action_whose_if_never_holds_has_no_effect(tmp_path) -> None:
    assert _members(tmp_path, "").sum() > 0  # the same action without a guard brings members
    assert _members(tmp_path, ", if: members >= 1000000").sum() == 0


def test_an_if_on_days_in_stage_holds_from_that_day_on(tmp_path) -> None:
    joins = _members(tmp_path, ", if: days_in_stage >= 5")
    assert (joins[:5] == 0).all() and (joins[5:] > 0).all()


def test_an_if_on_a_member_event_action_stops_its_messages(tmp_path) -> None:
    text = """\
        playbook: welcome
        timezone: UTC
        roles: {ops: {headcount: 1}}
        defaults: {owner: ops}
        routines:
          hello: {on: member.joined, do: message, to: member, text: hi}
          hello-again: {on: member.joined, do: message, to: member, text: hi GUARD}
        stages:
          only: {}
        expect:
          - {max_messages_per_member_per_day: 1}
        """
    unguarded = _pb(tmp_path, text.replace("GUARD", ""))
    guarded = _pb(tmp_path, text.replace(" GUARD", ", if: members >= 1000000"))
    opts = SimOptions(runs=2, days=5, seed=1, workers=1)
    assert simulate(unguarded, Scenario(), opts).expect_failures
    assert simulate(guarded, Scenario(), opts).expect_failures == []


def test_an_if_reading_an_unmodelled_metric_is_a_simulation_warning(tmp_path) -> None:
    text = BURST.replace("GUARD", ", if: survey_responses >= 10").replace(
        "    routines:", "    metrics: {survey_responses: {unit: count}}\n    routines:"
    )
    res = simulate(_pb(tmp_path, text), QUIET, SimOptions(runs=1, days=3, seed=1))
    assert any("`if:` of action `kol-post`" in w and "survey_responses" in w for w in res.warnings)


def test_demote_when_demotes_at_the_tier_review(tmp_path) -> None:
    text = """\
        playbook: tiers
        timezone: UTC
        tiers:
          review: {cron: "0 1 * * *"}
          levels:
            normal: {}
            core: {promote: tenure_days >= 0DEMOTE}
        stages:
          only: {}
        """
    opts = SimOptions(runs=2, days=10, seed=1, workers=1)
    kept = simulate(_pb(tmp_path, text.replace("DEMOTE", "")), Scenario(), opts)
    assert kept.percentiles("core_members", (50,))[0][-1] > 0
    # nobody invites anyone in the default scenario's tiers, so `invites == 0` holds for all
    demoted = _pb(tmp_path, text.replace("DEMOTE", ", demote: {when: invites == 0}"))
    sc = Scenario(acquisition=Acquisition(invites_per_member_per_day=0))
    assert simulate(demoted, sc, opts).percentiles("core_members", (50,))[0].max() == 0


def test_a_cap_of_100_messages_is_broken_by_300_messages() -> None:
    # a per-member count that wrapped at 256 once read 300 messages as 44
    def actions(prefix: str, indent: str) -> str:  # 150 each: a map holds at most 200
        return "".join(
            f"{indent}{prefix}{i}: {{on: member.joined, do: message, to: member, text: hi}}\n"
            for i in range(150)
        )

    text = (
        "playbook: flood\ntimezone: UTC\nroles: {ops: {headcount: 1}}\n"
        "defaults: {owner: ops}\nroutines:\n"
        + actions("r", "  ")
        + "stages:\n  only:\n    actions:\n"
        + actions("m", "      ")
        + "expect:\n  - {max_messages_per_member_per_day: 100}\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        pb = _pb(Path(d), text)
    res = simulate(pb, Scenario(), SimOptions(runs=1, days=2, seed=1, workers=1))
    assert any("received 300 messages (cap 100)" in w for _, _, w in res.expect_failures)


def test_a_custom_metric_named_like_a_built_in_is_refused_at_its_key(check) -> None:
    text = """\
        playbook: m
        timezone: UTC
        metrics:
          members: {unit: count}
        stages:
          only:
            exit: {when: members >= 10}
        """
    res, src = check(text)
    (d,) = [d for d in res.diagnostics if d.code == "SOP270"]
    assert (d.line, d.column) == position(src, "members:") and d.severity == "error"


# -- bounds: scenario values, memory, CLI options -------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("acquisition", "seed_users", "1e9"),
        ("acquisition", "organic_per_day", "1e7"),
        ("acquisition", "invites_per_member_per_day", "1e300"),
        ("acquisition", "market", "1e400"),
        ("retention", "period_days", "1e12"),
        ("activity", "speak_alpha", "1e300"),
    ],
)
def test_an_out_of_range_scenario_value_is_a_located_error(tmp_path, section, key, value) -> None:
    sc = tmp_path / "s.yaml"
    text = f"scenario: big\n{section}:\n  {key}: {value}\n"
    sc.write_text(text, encoding="utf-8")
    code, out = _sop("simulate", str(REFERENCE), "--scenario", str(sc), "--runs", "1")
    line, col = position(text, value)
    assert code == 2 and f"s.yaml:{line}:{col}: error SOP103" in out and "Traceback" not in out


def test_a_population_beyond_the_memory_budget_stops_before_simulating() -> None:
    code, out = _sop(
        "simulate", str(REFERENCE), "--set", "acquisition.seed_users=5000000", "--runs", "8"
    )
    assert code == 2 and "sop: error:" in out and "memory budget of 1,536 MiB" in out


def test_runs_times_days_beyond_the_memory_budget_stop_before_simulating() -> None:
    code, out = _sop("simulate", str(REFERENCE), "--runs", "1000000", "--days", "3650")
    assert code == 2 and "collected metrics need about" in out and "--runs" in out


def test_the_memory_budget_can_be_raised_and_lowered_from_the_environment() -> None:
    r = CliRunner().invoke(
        main,
        ["simulate", str(REFERENCE), "--runs", "2", "--days", "5"],
        env={"SOP_MAX_MEMORY_MIB": "64"},
    )
    assert r.exit_code == 0  # the reference community fits in 64 MiB
    r = CliRunner().invoke(
        main,
        ["simulate", str(REFERENCE), "--set", "acquisition.seed_users=500000"],
        env={"SOP_MAX_MEMORY_MIB": "64"},
    )
    assert r.exit_code == 2 and "memory budget of 64 MiB" in r.output


def test_a_referral_explosion_stops_at_the_budget_in_bounded_memory() -> None:
    """Referrals are not foreseen by the estimate: the kernel stops the run that outgrows it."""
    r = _child(
        "simulate",
        str(REFERENCE),
        "--set",
        "acquisition.invites_per_member_per_day=100",
        "--set",
        "acquisition.invite_conversion=1",
        "--max-memory-mib",
        "64",
        "--runs",
        "8",
        "--days",
        "90",
        "--workers",
        "1",
    )
    assert r.returncode == 2 and "memory budget allows" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("seed", ["-1", str(2**63), "x"])
def test_a_seed_outside_0_to_2_63_is_a_usage_error(seed) -> None:
    code, out = _sop("simulate", str(REFERENCE), "--seed", seed)
    assert code == 2 and "--seed" in out


@pytest.mark.parametrize(
    "address", ["tcp://x", "http://127.0.0.1:8786", "tcp://127.0.0.1:99999", "127.0.0.1:8786", ""]
)
def test_a_malformed_dask_address_is_a_usage_error_before_anything_runs(address) -> None:
    code, out = _sop("simulate", "missing.yaml", "--executor", "dask", "--address", address)
    assert code == 2 and "--address" in out and "missing.yaml" not in out


def test_a_report_into_a_missing_folder_fails_before_the_simulation(tmp_path) -> None:
    report = tmp_path / "no" / "such" / "r.html"
    # a simulation this size would take hours (and break the budget): the path is checked first
    code, out = _sop(
        "simulate", str(REFERENCE), "--runs", "1000000", "--days", "3650", "--report", str(report)
    )
    assert code == 2 and "--report" in out and "does not exist" in out


# -- calibrate on hostile CSVs -------------------------------------------------------------------

HOSTILE_CSV = [
    ("retention", "period,survivors\n0,100\n1,nan\n", 3, "finite"),
    ("retention", "period,survivors\n0,100\n1,inf\n", 3, "finite"),
    ("retention", "period,survivors\n0,100\n1,-5\n2,1\n", 3, "from 0"),
    ("retention", "period,survivors\n0,100\n1,60\n2,70\n", 4, "can only fall"),
    ("retention", "period,survivors\n0,0\n1,0\n2,0\n", 2, "nothing to fit"),
    ("retention", "period,survivors\n0,100\n1,100\n2,100\n", 4, "no churn"),
    ("retention", "period,survivors\n0,100\n2,50\n3,40\n", 3, "follows period 0"),
    ("retention", "period,survivors\n0,100\n1,50\n1,40\n", 4, "appears twice"),
    ("retention", "period,survivors\n0,100\n1,1e400\n", 3, "finite"),
    ("retention", "period,survivors\n0,100\n1,abc\n", 3, "not a number: 'abc'"),
    ("retention", "period,survivers\n0,100\n", 1, "missing column"),
    ("retention", "period,survivors\n0,100\n1,\x00\n", 3, "NUL"),
    ("retention", "period,survivors\n0," + "9" * 200_000 + "\n", 2, "field limit"),
    ("acquisition", "period,cumulative\n0,0\n1,0\n2,0\n3,0\n", 5, "nothing to fit"),
    ("acquisition", "period,cumulative\n0,5\n1,9\n2,7\n3,12\n", 4, "can only rise"),
    ("activity", "frequency,recency,T\n0,0,10\n0,0,10\n", 2, "nothing to fit"),
    ("activity", "frequency,recency,T\n1,12,10\n", 2, "after T"),
    ("activity", "frequency,recency,T\n1.5,2,10\n", 2, "whole number"),
]


@pytest.mark.parametrize(("model", "text", "line", "why"), HOSTILE_CSV)
def test_a_hostile_csv_is_a_located_error(tmp_path, model, text, line, why) -> None:
    f = tmp_path / "x.csv"
    f.write_text(text, encoding="utf-8")
    code, out = _sop("calibrate", model, str(f))
    assert code == 2 and f"sop: error: {f}:{line}: " in out and why in out, out


def test_a_binary_csv_is_a_located_error(tmp_path) -> None:
    f = tmp_path / "x.csv"
    f.write_bytes(b"period,survivors\n0,100\n\xff\xfe\x00\x81garbage")
    code, out = _sop("calibrate", "retention", str(f))
    assert code == 2 and f"sop: error: {f}:3: not UTF-8" in out


def test_calibrate_refuses_a_fifo_instead_of_hanging(tmp_path) -> None:
    fifo = tmp_path / "x.csv"
    os.mkfifo(fifo)
    r = _child("calibrate", "retention", str(fifo), timeout=30)
    assert r.returncode == 2 and "not a regular file" in r.stderr


@pytest.mark.parametrize("days", ["0", "-1", "inf", "nan", "4000"])
def test_period_days_outside_0_to_3650_is_an_error(days) -> None:
    csv = str(ROOT / "playbooks" / "data" / "retention-cohort.csv")
    code, out = _sop("calibrate", "retention", csv, "--period-days", days)
    assert code == 2 and "--period-days" in out


def test_a_long_table_the_model_cannot_fit_ends_quickly_with_a_clear_error(tmp_path) -> None:
    """50,000 periods losing one member each: the old fit crawled for minutes (10^4 took 28 s)."""
    n = 50_000
    f = tmp_path / "long.csv"
    f.write_text("period,survivors\n" + "".join(f"{i},{2 * n - i}\n" for i in range(n)))
    r = _child("calibrate", "retention", str(f), "--period-days", "30", timeout=30)
    # one member a period of 100,000: every member churns alike, Beta is nearly a point; the fit
    # ends quickly and says its parameters sit at the fitter's bound
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "sits at the fitter's bound" in r.stdout + r.stderr


def test_identical_activity_rows_are_fitted_once_with_their_weight() -> None:
    from sop.engine.sim.calibrate import _BgnbdData, fit_bgnbd, simulate_bgnbd

    rng = np.random.default_rng(5)
    x = simulate_bgnbd(300, 39.0, 0.5, 4.0, 0.8, 2.5, rng).astype(float)
    tx = np.where(x > 0, rng.integers(1, 40, len(x)), 0).astype(float)
    tx = np.minimum(tx, 39.0)
    T = np.full(len(x), 39.0)
    many = 200  # 60,000 members, as many distinct rows as 300
    big = _BgnbdData(np.repeat(x, many), np.repeat(tx, many), np.repeat(T, many))
    assert len(big.w) == len(_BgnbdData(x, tx, T).w) and big.total == len(x) * many
    few, ll_few = fit_bgnbd(x, tx, T)
    lots, ll_lots = fit_bgnbd(np.repeat(x, many), np.repeat(tx, many), np.repeat(T, many))
    assert np.allclose(few, lots, rtol=1e-3) and abs(ll_lots / (ll_few * many) - 1) < 1e-6


# -- output ------------------------------------------------------------------------------------


def test_text_output_prints_user_text_literally_on_one_line(tmp_path) -> None:
    from rich.console import Console
    from sop.engine.sim.render import to_text

    pb = _pb(tmp_path, BURST.replace("GUARD", ""))
    res = simulate(pb, QUIET, SimOptions(runs=1, days=3, seed=1))
    res.playbook = "[red]pwn[/red]\x1b[2J\nforged"
    res.warnings = ["[link=https://evil.example]click[/link]"]
    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    to_text(res, console)
    text = console.export_text()
    assert "[red]pwn[/red]\\e[2J\\nforged" in text and "\x1b" not in text
    assert "[link=https://evil.example]click[/link]" in text


def test_html_report_escapes_titles(tmp_path) -> None:
    from sop.engine.sim.render import to_html

    text = BURST.replace("GUARD", "").replace(
        "timezone: UTC", 'timezone: UTC\n    title: "<script>alert(1)</script>"'
    )
    pb = _pb(tmp_path, text)
    page = to_html(simulate(pb, QUIET, SimOptions(runs=1, days=3, seed=1)), pb)
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_simulation_json_has_no_bare_nan(tmp_path) -> None:
    from sop.engine.core.textsafe import dumps

    pb = _pb(tmp_path, BURST.replace("GUARD", ""))
    res = simulate(pb, QUIET, SimOptions(runs=1, days=3, seed=1))
    res.metrics[:, :, 0] = np.nan  # whatever a metric becomes, the JSON stays strict
    text = dumps(res.to_dict())

    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token} in JSON")

    assert json.loads(text, parse_constant=refuse)["metrics"]["members"]["p50"][0] is None


def test_simulate_json_from_the_cli_is_strict(tmp_path) -> None:
    # a defined metric that overflows a float (1e12 ** 27) is infinite; JSON has no token for it
    product = " * ".join(["big"] * 27)
    text = BURST.replace("GUARD", "").replace(
        "    routines:",
        "    metrics:\n      big: {unit: count}\n"
        f"      huge: {{unit: count, definition: {product}}}\n    routines:",
    )
    pb = tmp_path / "p.yaml"
    pb.write_text(textwrap.dedent(text), encoding="utf-8")
    sc = tmp_path / "s.yaml"
    sc.write_text("scenario: big\nmetrics: {big: {start: 1000000000000}}\n", encoding="utf-8")
    args = ["simulate", str(pb), "--scenario", str(sc), "--runs", "2", "--days", "3"]
    r = CliRunner().invoke(main, [*args, "--format", "json"])

    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token} in JSON")

    data = json.loads(r.stdout, parse_constant=refuse)
    assert r.exit_code == 0 and data["metrics"]["huge"]["p50"][0] is None
