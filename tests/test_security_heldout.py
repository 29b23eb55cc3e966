"""Hostile cases from a red-team pass outside the fuzz campaign (issue 7's held-out set, tried
before the real one): each failed on the code before its fix."""

from __future__ import annotations

import csv
import io
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from sop.cli import main
from sop.engine.core import expr
from sop.engine.core.textsafe import csv_cell

from tests.conftest import ROOT

PLAYBOOK = """\
playbook: mini
title: mini
timezone: Asia/Shanghai
community: {type: user-value, platform: wecom-group, capacity: 500}
roles:
  ops: {title: ops, headcount: HEADCOUNT}
backends:
  group: {type: console}
defaults: {backend: group, owner: ops}
stages:
  cold-start:
    title: start
    duration: {min: 30d, max: 60d}
    actions:
      morning-topic: {cron: "0 8 * * *", do: post, text: hello}
ACTIONS    exit:
      when: GATE
"""


def _playbook(
    tmp_path: Path, headcount: str = "1", gate: str = "members >= 200", actions: str = ""
) -> Path:
    text = PLAYBOOK.replace("HEADCOUNT", headcount).replace("GATE", gate)
    p = tmp_path / "p.yaml"
    p.write_text(text.replace("ACTIONS", actions), encoding="utf-8")
    return p


def _sop(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))


def _child(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process under 1 GiB of address space and a timeout."""
    return subprocess.run(
        [sys.executable, "-m", "sop.cli", *args],
        cwd=cwd,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "NO_COLOR": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "SOP_MAX_MEMORY_MIB": "1048576",  # the budget raised past what the limit gives
        },
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limits,
    )


def test_an_integer_longer_than_python_converts_is_a_located_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    p = _playbook(tmp_path, headcount="1" + "0" * 5000)
    for verb in (["validate"], ["plan"], ["graph"]):
        code, out = _sop(*verb, str(p))
        assert code in (1, 2), out
        assert "Traceback" not in out
    code, out = _sop("validate", str(p))
    assert "p.yaml:6:" in out and "SOP102" in out


@pytest.mark.parametrize("number", ["١٢", "１２", "𝟏", "߁"])
def test_a_condition_with_digits_that_are_not_ascii_is_a_syntax_error(number: str) -> None:
    with pytest.raises(expr.ExprSyntaxError) as e:
        expr.parse(f"members >= {number}")
    assert e.value.problem.code == "SOP240"
    assert e.value.problem.start == len("members >= ")


def test_a_gate_with_arabic_indic_digits_is_refused_by_validate(tmp_path: Path) -> None:
    code, out = _sop("validate", str(_playbook(tmp_path, gate="members >= ١٢")))
    assert code == 1 and "SOP240" in out and "p.yaml:17:24:" in out


def test_a_simulation_of_many_every_minute_crons_stops_with_an_error_in_seconds(
    tmp_path: Path,
) -> None:
    # 199 actions firing every minute (the most one stage may hold): 286,560 firings a day.
    # Before: minutes of work, 600 MB.
    dense = "".join(f'      m{i}: {{cron: "* * * * *", do: task, text: x}}\n' for i in range(199))
    _playbook(tmp_path, actions=dense)
    r = _child("simulate", "p.yaml", "--runs", "2", "--days", "180", "--workers", "1", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "more than 1,000,000 sends and tasks" in r.stderr


def test_a_sweep_of_ten_thousand_values_is_refused_before_any_simulation(tmp_path: Path) -> None:
    p = _playbook(tmp_path)
    values = ",".join(str(i) for i in range(10_000))
    code, out = _sop("simulate", str(p), "--sweep", f"acquisition.seed_users={values}")
    assert code == 2
    assert "10,000 simulations; at most 100" in out
    two = ",".join(str(i) for i in range(11))
    code, out = _sop(
        "simulate", str(p), "--sweep", f"acquisition.seed_users={two}",
        "--sweep", f"acquisition.organic_per_day={two}",
    )  # fmt: skip
    assert code == 2 and "121 simulations" in out


def test_a_simulation_that_runs_out_of_memory_under_a_raised_budget_is_an_error(
    tmp_path: Path,
) -> None:
    _playbook(tmp_path)
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "p.yaml").write_text(
        textwrap.dedent(
            """\
            scenario: huge
            acquisition: {seed_users: 5000000, organic_per_day: 100000}
            """
        ),
        encoding="utf-8",
    )
    r = _child(
        "simulate", "p.yaml", "--runs", "2", "--days", "3650", "--workers", "1", cwd=tmp_path
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "out of memory while simulating" in r.stderr


def test_a_calibration_csv_with_a_required_column_twice_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    # which `survivors` is meant cannot be guessed; before, the first was used silently
    p.write_text("period,survivors,survivors\n0,1000,1000\n1,631,900\n2,468,850\n")
    code, out = _sop("calibrate", "retention", str(p))
    assert code == 2
    assert "r.csv:1: column survivors appears 2 times in the header" in out


@pytest.mark.parametrize("cell", ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_a_csv_cell_that_would_start_a_spreadsheet_formula_is_quoted(cell: str) -> None:
    assert csv_cell(cell) == "'" + cell
    assert csv_cell("cold-start") == "cold-start"


def test_no_cell_of_a_plan_csv_starts_a_spreadsheet_formula(tmp_path: Path) -> None:
    p = _playbook(tmp_path)
    code, out = _sop("plan", str(p), "--days", "10", "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert len(rows) > 10
    assert all(not c.startswith(("=", "+", "-", "@")) for row in rows for c in row)


def test_a_stage_with_more_actions_than_allowed_is_refused_at_the_first_extra_one(
    tmp_path,
) -> None:
    extra = "".join(f'      a{i}: {{cron: "0 9 * * *", do: post, text: hi}}\n' for i in range(200))
    p = _playbook(tmp_path, actions=extra)
    code, out = _sop("validate", str(p), "--no-plan-checks")
    assert code == 1
    # the 201st entry of `actions:` (morning-topic is the first), on its own line
    line = (
        p.read_text(encoding="utf-8")
        .splitlines()
        .index('      a199: {cron: "0 9 * * *", do: post, text: hi}')
    )
    assert f"p.yaml:{line + 1}:7: error SOP103" in out and "at most 200" in out


def test_a_playbook_with_more_than_a_thousand_actions_in_all_is_sop254(tmp_path) -> None:
    stages = "".join(
        f"  s{s}:\n    title: s{s}\n    actions:\n"
        + "".join(
            f"      a{s}x{i}: {{day: 1, time: '09:00', do: post, text: hi}}\n" for i in range(150)
        )
        for s in range(7)
    )
    p = tmp_path / "big.yaml"
    head = PLAYBOOK.split("stages:")[0].replace("HEADCOUNT", "1")
    p.write_text(head + "stages:\n" + stages, encoding="utf-8")
    code, out = _sop("validate", str(p), "--no-plan-checks")
    lines = p.read_text(encoding="utf-8").splitlines()
    line = lines.index("      a6x100: {day: 1, time: '09:00', do: post, text: hi}") + 1
    assert code == 1 and f"big.yaml:{line}:7: error SOP254" in out
    assert "1050 actions" in out


def test_a_plain_text_is_its_own_rendering_without_jinja() -> None:
    from sop.engine.lang.templates import needs_member, render, template_problems

    assert render("no tags here: 100% {not a tag", {}) != ""
    assert render("plain 早安", {}) == "plain 早安"
    assert template_problems("plain", {}) == [] and not needs_member("plain")


def test_a_fit_that_cannot_converge_within_its_work_budget_is_an_error(monkeypatch) -> None:
    # a million distinct activity rows once took 20 s of likelihood evaluations; the budget
    # scales with distinct rows, so a small budget on a small export shows the same stop
    import numpy as np
    from sop.engine.sim import calibrate

    monkeypatch.setattr(calibrate, "FIT_WORK", 3 * 1000)
    x = np.arange(1000, 0, -1, dtype=float)
    with pytest.raises(calibrate.CalibrationError, match="work budget"):
        calibrate.fit_bgnbd(x, np.full_like(x, 1.5), np.full_like(x, 13.0))
    monkeypatch.setattr(calibrate, "FIT_WORK", 8_000_000)
    params, _ = calibrate.fit_bgnbd(x, np.full_like(x, 1.5), np.full_like(x, 13.0))
    assert np.all(np.isfinite(params))
