"""The CLI is wiring: it parses, calls the engine, renders, and exits with the result's code.

Exit codes, "unreadable", option checks, JSON shapes, the sweep and verdicts live in the engine;
these tests hold the command line to what the engine decides.
"""

from __future__ import annotations

import ast
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sop.cli import main
from sop.engine.core.formats import ValidateFormat
from sop.engine.core.status import ExitCode, UsageError
from sop.engine.report import RENDERERS
from sop.engine.sim.montecarlo import GateResult, SimOptions, SimResult, Sweep
from sop.engine.sim.scenario import Scenario, scenario_beside, sweep_values

from tests.conftest import BASE, REFERENCE, ROOT

CLEAN = (
    BASE
    + """\
stages:
  s1:
    actions:
      a1: {cron: "0 9 * * *", do: post, text: hi}
    duration: {max: 7d}
  extra:
    after: s1
    optional: true
"""
)


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args), input=stdin, env={}, catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_version_comes_from_the_package_metadata() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out == f"sop, version {version('sop')}\n"
    assert '"0.1.0"' not in (ROOT / "cli.py").read_text(encoding="utf-8")


def test_cli_decides_no_exit_code_itself() -> None:
    """No `SystemExit(<number>)` and no set of unreadable codes in cli.py: ExitCode decides."""
    tree = ast.parse((ROOT / "cli.py").read_text(encoding="utf-8"))
    literal_exits = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and getattr(n.func, "id", None) == "SystemExit"
        and any(isinstance(a, ast.Constant) for a in n.args)
    ]
    assert literal_exits == []
    assert "SOP003" not in (ROOT / "cli.py").read_text(encoding="utf-8")


def test_every_validate_format_has_a_renderer() -> None:
    assert set(RENDERERS) == {str(f) for f in ValidateFormat}


def test_validate_dot_in_a_repository_with_other_yaml_exits_0(tmp_path, monkeypatch) -> None:
    files = {
        ".github/workflows/ci.yml": "name: ci\non: [push]\njobs: {t: {runs-on: ubuntu-latest}}\n",
        "docker-compose.yml": "services:\n  web: {image: nginx, ports: ['80:80']}\n",
        ".pre-commit-config.yaml": "repos:\n  - repo: local\n    hooks: []\n",
        "k8s/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        "playbooks/p.yaml": CLEAN,
        "playbooks/q.yml": CLEAN.replace("playbook: t", "playbook: q"),
    }
    for rel, body in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, err = run("validate", ".")
    assert code == 0, out + err
    assert out == "2 file(s) ok\n"
    assert err == "sop: note: skipped 3 YAML files that are not a playbook, fragment or scenario\n"
    code, out, _ = run("validate", ".", "--format", "json")
    assert code == 0 and json.loads(out)["summary"] == {"errors": 0, "warnings": 0, "files": 2}


def test_validate_dash_reads_standard_input() -> None:
    code, out, _ = run("validate", "-", stdin=CLEAN.replace("0 9 * * *", "0 25 * * *"))
    assert code == 1 and out.startswith("<stdin>:9:") and "SOP230" in out
    assert run("validate", "-", stdin=CLEAN)[0] == 0


def test_validate_dash_twice_is_a_usage_error() -> None:
    code, _, err = run("validate", "-", "-", stdin=CLEAN)
    assert code == 2 and err.startswith("sop: error: standard input (-)")


def test_an_unreadable_input_exits_2_by_the_engine_verdict(tmp_path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("playbook: caf\xe9\n".encode("latin-1"))
    assert run("validate", str(p))[0] == ExitCode.USAGE


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--include-optional", "s1"), "--include-optional 's1': stage 's1' is not optional"),
        (("--include-optional", "extr"), "did you mean `extra`?"),
        (("--fail", "s9"), "--fail 's9' is not in the playbook"),
        (("--stage", "s2"), "--stage 's2' is not in the playbook"),
    ],
)
def test_plan_rejects_options_naming_unknown_or_wrong_stages(tmp_path, args, message) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(CLEAN, encoding="utf-8")
    code, out, err = run("plan", str(p), "--format", "json", *args)
    assert code == 2 and out == ""
    assert err.startswith("sop: error: ") and message in err and "Traceback" not in err


def test_plan_accepts_an_optional_stage(tmp_path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(CLEAN, encoding="utf-8")
    assert run("plan", str(p), "--format", "json", "--include-optional", "extra")[0] == 0


def test_simulate_refuses_a_scenario_whose_start_stage_is_no_stage(tmp_path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(CLEAN, encoding="utf-8")
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "p.yaml").write_text(
        "scenario: x\nacquisition:\n  start_stage: s3\n", encoding="utf-8"
    )
    code, out, err = run("simulate", str(p), "--runs", "1", "--days", "2", "--workers", "1")
    assert code == 2 and out == ""
    assert ":3:16: error SOP293" in err


def test_the_scenario_beside_a_playbook_is_found_by_the_engine() -> None:
    assert scenario_beside(str(REFERENCE)) == str(REFERENCE.parent / "scenarios" / REFERENCE.name)
    assert scenario_beside(str(REFERENCE.parent / "brand-community.yaml")) is None


def test_sweep_values_are_combined_in_the_engine() -> None:
    assert sweep_values(["a=1,2", "b=x"]) == [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]
    with pytest.raises(UsageError, match="one or two"):
        sweep_values(["a=1", "b=2", "c=3"])
    with pytest.raises(UsageError, match="expected name=v1"):
        sweep_values(["a"])


def _result(p_pass: float, expect_failures: int = 0) -> SimResult:
    gate = GateResult("s1", "members >= 1", None, 10, int(p_pass * 10), 10, (0.0, 1.0), None)
    return SimResult(
        playbook="t",
        scenario=Scenario(),
        options=SimOptions(runs=10, days=1),
        metric_names=[],
        metrics=np.zeros((10, 1, 0)),
        stage_ids=["s1"],
        stage_entered=np.zeros((10, 1)),
        stage_passed=np.zeros((10, 1)),
        outcomes=[],
        expect_failures=[(0, 0, "x")] * expect_failures,
        member_days=0,
        seconds=0.0,
        gates=[gate],
    )


def test_min_probability_is_a_verdict_of_the_result() -> None:
    assert _result(0.5).exit_code() == ExitCode.OK
    assert _result(0.5).exit_code(0.6) == ExitCode.FINDINGS
    assert _result(0.7).exit_code(0.6) == ExitCode.OK
    assert _result(0.7, expect_failures=1).exit_code() == ExitCode.FINDINGS
    # a sweep fails when any of its simulations does (it used to exit 0 whatever --min-probability)
    sweep = Sweep([({"a": "1"}, _result(0.7)), ({"a": "2"}, _result(0.5))])
    assert sweep.exit_code(0.6) == ExitCode.FINDINGS and sweep.exit_code() == ExitCode.OK
    assert [row["values"] for row in sweep.as_dict()] == [{"a": "1"}, {"a": "2"}]


def test_results_have_json_shapes_of_their_own(check) -> None:
    res, _ = check(CLEAN.replace("0 9 * * *", "0 25 * * *"), plan_checks=False)
    doc = res.as_dict()
    assert doc["errors"] == 1 and doc["diagnostics"][0]["code"] == "SOP230"
    assert Path(str(doc["file"])).name == "p.yaml"
