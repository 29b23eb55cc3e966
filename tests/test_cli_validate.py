"""`sop validate`, `sop schema`, `sop init`, `sop rules` through the real command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from sop.cli import main

from tests.conftest import PLAYBOOKS, REFERENCE, ROOT

BROKEN = """\
playbook: broken
timezone: Mars/Olympus
roles: {ops: {headcount: 1}}
stages:
  s1:
    actions:
      a1: {cron: "61 * * * *", do: post, owner: nobody, text: "hi, 100% %0A"}
    exit: {when: members >= 10 and mystery > 2}
"""


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def broken(tmp_path: Path) -> str:
    p = tmp_path / "broken.yaml"
    p.write_text(BROKEN, encoding="utf-8")
    return str(p)


def test_reference_playbooks_validate_clean() -> None:
    code, out = run("validate", *sorted(str(p) for p in PLAYBOOKS.glob("*.yaml")))
    assert code == 0, out
    assert "file(s) ok" in out


def test_folder_means_every_playbook_in_it() -> None:
    code, out = run("validate", str(PLAYBOOKS), "--format", "json")
    data = json.loads(out)
    assert code == 0 and len(data["files"]) == len(list(PLAYBOOKS.rglob("*.yaml")))


def test_text_format_is_actionlint_like(broken: str) -> None:
    code, out = run("validate", broken)
    assert code == 1
    first = out.splitlines()[0]
    assert re.match(rf"{re.escape(broken)}:2:11: error SOP231 unknown time zone", first)
    assert "    2 | timezone: Mars/Olympus" in out
    assert "      |           ^~~~~~~~~~~~" in out


def test_json_format_has_the_documented_fields(broken: str) -> None:
    code, out = run("validate", broken, "--format", "json")
    data = json.loads(out)
    assert code == 1
    d = data["diagnostics"][0]
    assert set(d) == {
        "file",
        "line",
        "column",
        "end_line",
        "end_column",
        "code",
        "severity",
        "message",
        "hint",
        "json_path",
    }
    codes = {x["code"] for x in data["diagnostics"]}
    assert {"SOP230", "SOP231", "SOP204", "SOP241"} <= codes
    assert data["summary"]["errors"] == len(data["diagnostics"])


def test_sarif_is_valid_sarif_2_1_0(broken: str) -> None:
    code, out = run("validate", broken, str(REFERENCE), "--format", "sarif")
    log = json.loads(out)
    schema = json.loads((ROOT / "tests" / "data" / "sarif-schema-2.1.0.json").read_text())
    jsonschema.Draft4Validator(schema).validate(log)
    run0 = log["runs"][0]
    rule_ids = [r["id"] for r in run0["tool"]["driver"]["rules"]]
    assert len(rule_ids) == len(set(rule_ids))  # one rule per code
    for res in run0["results"]:
        assert rule_ids[res["ruleIndex"]] == res["ruleId"]
    assert code == 1


GH_LINE = re.compile(
    r"^::(error|warning|notice) file=[^,:]+,line=\d+,col=\d+,endLine=\d+,endColumn=\d+,"
    r"title=SOP\d{3}::[^\r\n]*$"
)


def test_github_lines_are_valid_workflow_commands(broken: str) -> None:
    code, out = run("validate", broken, "--format", "github")
    lines = out.splitlines()
    assert code == 1 and lines
    for line in lines:
        assert GH_LINE.match(line), line
    # data is escaped: the literal `%0A` in the playbook stays visible as text, not a newline
    assert all(
        "%" not in line.split("::", 2)[2].replace("%25", "").replace("%0A", "") for line in lines
    )


def test_github_format_is_automatic_on_actions(broken: str) -> None:
    _, out = run("validate", broken, env={"GITHUB_ACTIONS": "true"})
    assert out.startswith("::error ")


def test_junit_has_a_testsuite_per_file(broken: str) -> None:
    code, out = run("validate", broken, str(REFERENCE), "--format", "junit")
    assert code == 1
    root = ET.fromstring(out.split("?>", 1)[1])
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [broken, str(REFERENCE)]
    assert int(suites[0].get("failures")) >= 4 and suites[1].get("failures") == "0"


def test_strict_turns_warnings_into_failures(tmp_path: Path) -> None:
    p = tmp_path / "w.yaml"
    p.write_text("playbook: w\ntimezone: UTC\nstages:\n  s: {}\ntemplates: {unused: x}\n")
    assert run("validate", str(p))[0] == 0
    assert run("validate", str(p), "--strict")[0] == 1


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    assert run("validate", str(tmp_path / "missing.yaml"))[0] == 2
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\x00\xff\x00")
    assert run("validate", str(p))[0] == 2


def test_empty_folder_is_a_usage_error(tmp_path: Path) -> None:
    code, _ = run("validate", str(tmp_path))
    assert code == 2


def test_schema_command_prints_the_shipped_schema() -> None:
    code, out = run("schema")
    assert code == 0
    assert json.loads(out) == json.loads((ROOT / "schemas" / "playbook.schema.json").read_text())


def test_rules_lists_every_code() -> None:
    code, out = run("rules", "--format", "json")
    assert code == 0 and {r["code"] for r in json.loads(out)} >= {"SOP001", "SOP243", "SOP303"}


@pytest.mark.parametrize("template", ["minimal", "lifecycle", "brand", "paid", "developer"])
def test_init_scaffolds_a_valid_playbook(tmp_path: Path, template: str) -> None:
    code, out = run("init", "my-group", "--template", template, "--dir", str(tmp_path))
    assert code == 0, out
    path = tmp_path / "my-group.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=")
    assert "playbook: my-group" in text
    assert run("validate", str(path))[0] == 0
    assert run("init", "my-group", "--dir", str(tmp_path))[0] == 2  # no silent overwrite


def test_init_refuses_a_bad_name(tmp_path: Path) -> None:
    assert run("init", "My Group", "--dir", str(tmp_path))[0] == 2


def test_pre_commit_hook_definition() -> None:
    import yaml

    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "sop-validate")
    assert hook["entry"].startswith("sop validate") and hook["language"] == "python"
    assert re.search(hook["files"], "playbooks/community-lifecycle.yaml")


def test_console_script_runs_in_a_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "validate", str(REFERENCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
