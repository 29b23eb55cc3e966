"""Nothing silently ignored: a value that nothing would read is a located diagnostic.

Each case writes its YAML inline and asserts the code at the line and column of a token.
Scenarios are checked against the playbook they belong to; folders skip YAML that is not ours.
"""

from __future__ import annotations

import io
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from sop.engine.core.status import ExitCode, UsageError
from sop.engine.sim.scenario import ScenarioError, load_scenario
from sop.engine.validate import (
    STDIN_NAME,
    ValidateOptions,
    load_playbook,
    validate_file,
    validate_report,
)

from tests.conftest import BASE, PLAYBOOKS, position

STAGE = (
    BASE
    + """\
stages:
  s1:
    actions:
      a1: {cron: "0 9 * * *", do: post, text: hi}
"""
)
FRAGMENT = (
    "fragment: f\nparams: {n: {default: 2}}\nactions:\n"
    "  x: {day: '${n}', do: post, text: 'n=${n} ${brand}'}\n"
)


def _at(res, code: str, text: str, token: str, nth: int = 1):
    found = [d for d in res.diagnostics if d.code == code]
    assert found, f"{code} not reported; got {[(d.code, d.message) for d in res.diagnostics]}"
    assert (found[0].line, found[0].column) == position(text, token, nth), found[0]
    return found[0]


# -- SOP290: `with:` names a parameter the fragment does not have ----------------------------


def test_a_with_value_for_a_parameter_the_fragment_lacks_is_reported_at_its_key(check) -> None:
    text = STAGE + "    include:\n      - {fragment: frag.yaml, with: {m: 5}}\n"
    res, text = check(text, plan_checks=False, **{"frag.yaml": FRAGMENT})
    d = _at(res, "SOP290", text, "m: 5")
    assert "`m`" in d.message and "n" in d.message and d.file.endswith("p.yaml")


def test_a_misspelt_with_key_suggests_the_declared_parameter(check) -> None:
    frag = FRAGMENT.replace("{n: {default: 2}}", "{invite_target: {default: 2}}")
    text = STAGE + "    include: frag.yaml\n    with: {invite_targt: 5}\n"
    res, text = check(text, plan_checks=False, **{"frag.yaml": frag})
    d = _at(res, "SOP290", text, "invite_targt")
    assert d.hint == "did you mean `invite_target`?"


def test_with_values_for_declared_or_used_parameters_are_clean(check) -> None:
    # `brand` is not declared by the fragment but read as ${brand}: the value is used
    text = STAGE + "    include:\n      - {fragment: frag.yaml, with: {n: 5, brand: X}}\n"
    res, _ = check(text, plan_checks=False, **{"frag.yaml": FRAGMENT})
    assert [d.code for d in res.diagnostics] == []
    assert res.playbook.actions["x"].text.text == "n=5 X"


# -- SOP291: member data where no member event triggers the action ---------------------------


def test_member_data_in_a_scheduled_post_to_everyone_is_reported_at_member(check) -> None:
    res, text = check(STAGE.replace("text: hi", 'text: "hello {{ member.name }}"'))
    d = _at(res, "SOP291", text, "member.name")
    assert "a1" in d.message and "everyone" in d.message


def test_member_data_in_a_template_of_a_scheduled_post_is_reported_at_the_reference(
    check,
) -> None:
    text = (
        STAGE.replace("text: hi", "template: greet") + "templates:\n  greet: hi {{ member.name }}\n"
    )
    res, text = check(text)
    d = _at(res, "SOP291", text, "greet")
    assert "template `greet`" in d.message


def test_member_data_after_a_member_event_is_clean(check) -> None:
    text = STAGE.replace(
        'a1: {cron: "0 9 * * *", do: post, text: hi}',
        'a1: {on: member.joined, do: post, text: "welcome {{ member.name }}"}\n'
        '      a2: {after: a1, delay: 1d, do: post, text: "{{ member.name }}, day two"}',
    )
    res, _ = check(text)
    assert "SOP291" not in [d.code for d in res.diagnostics]


# -- SOP292: an event option on an event it does not belong to -------------------------------


def test_for_on_member_joined_is_reported_at_its_value(check) -> None:
    text = STAGE.replace('cron: "0 9 * * *"', "on: member.joined, for: 3d")
    res, text = check(text)
    d = _at(res, "SOP292", text, "3d")
    assert "`for`" in d.message and "member.silent" in d.message


def test_for_on_member_silent_is_clean(check) -> None:
    res, _ = check(STAGE.replace('cron: "0 9 * * *"', "on: member.silent, for: 3d"))
    assert "SOP292" not in [d.code for d in res.diagnostics]


# -- SOP293-295: a scenario checked against its playbook -------------------------------------

PLAYBOOK = STAGE + (
    "    duration: {max: 7d}\n  s2:\n    after: s1\n"
    "metrics:\n  nps: {unit: count}\n  twice: {definition: members * 2}\n"
)


def _repo(tmp_path: Path, scenario: str) -> tuple[Path, Path]:
    (tmp_path / "scenarios").mkdir()
    pb = tmp_path / "p.yaml"
    pb.write_text(PLAYBOOK, encoding="utf-8")
    sc = tmp_path / "scenarios" / "p.yaml"
    sc.write_text(scenario, encoding="utf-8")
    return pb, sc


def test_a_scenario_start_stage_that_is_no_stage_is_reported_where_it_is_written(
    tmp_path,
) -> None:
    text = "scenario: x\nacquisition:\n  start_stage: s3\n"
    _, sc = _repo(tmp_path, text)
    res = validate_file(str(sc))
    d = _at(res, "SOP293", text, "s3")
    assert d.file == str(sc) and "never open" in d.message
    # folder validation checks it too, and the verdict fails
    report = validate_report([str(tmp_path)])
    assert "SOP293" in [d.code for r in report.results for d in r.diagnostics]
    assert report.exit_code == ExitCode.FINDINGS


def test_simulate_refuses_a_start_stage_the_playbook_lacks(tmp_path) -> None:
    pb_path, sc = _repo(tmp_path, "scenario: x\nacquisition: {start_stage: s3}\n")
    pb = load_playbook(str(pb_path)).playbook
    with pytest.raises(ScenarioError) as e:
        load_scenario(str(sc), playbook=pb)
    assert [d.code for d in e.value.diagnostics] == ["SOP293"]
    with pytest.raises(ScenarioError) as e:  # through --set, located there
        load_scenario(None, ["acquisition.start_stage=s9"], playbook=pb)
    (d,) = e.value.diagnostics
    assert (d.code, d.file) == ("SOP293", "--set")
    assert load_scenario(None, ["acquisition.start_stage=s2"], playbook=pb)


def test_a_scenario_metric_the_playbook_does_not_declare_is_reported_at_its_key(
    tmp_path,
) -> None:
    text = "scenario: x\nmetrics:\n  nsp: {start: 1}\n  members: {start: 1}\n  nps: {start: 2}\n"
    _, sc = _repo(tmp_path, text)
    res = validate_file(str(sc))
    found = [(d.code, d.line, d.column) for d in res.diagnostics]
    assert ("SOP294", *position(text, "nsp")) in found
    assert ("SOP294", *position(text, "members")) in found
    assert [d.hint for d in res.diagnostics if "nsp" in d.message] == ["did you mean `nps`?"]
    assert not any("`nps`" in d.message for d in res.diagnostics)


def test_a_scenario_model_of_a_defined_metric_is_a_warning(tmp_path) -> None:
    text = "scenario: x\nmetrics:\n  twice: {start: 1}\n"
    pb_path, sc = _repo(tmp_path, text)
    d = _at(validate_file(str(sc)), "SOP295", text, "twice")
    assert d.severity == "warning"
    warnings: list = []
    load_scenario(str(sc), playbook=load_playbook(str(pb_path)).playbook, warnings=warnings)
    assert [w.code for w in warnings] == ["SOP295"]


def test_the_shipped_scenarios_match_their_playbooks() -> None:
    report = validate_report([str(PLAYBOOKS)], ValidateOptions(plan_checks=False))
    assert [d for r in report.results for d in r.diagnostics] == []


# -- plan options against the playbook -------------------------------------------------------


def test_plan_options_naming_no_stage_or_a_stage_that_is_not_optional_are_usage_errors(
    check,
) -> None:
    from sop.engine.validate import check_plan_options

    text = STAGE + "    duration: {max: 7d}\n  extra:\n    optional: true\n    after: s1\n"
    res, _ = check(text, plan_checks=False)
    pb = res.playbook
    check_plan_options(pb, include_optional=["extra"], failing=["s1"], stage="s1", role="ops")
    with pytest.raises(UsageError, match="did you mean `extra`"):
        check_plan_options(pb, include_optional=["extr"])
    with pytest.raises(UsageError, match="not optional"):
        check_plan_options(pb, include_optional=["s1"])
    with pytest.raises(UsageError, match="--fail 's9'"):
        check_plan_options(pb, failing=["s9"])
    with pytest.raises(UsageError, match="--role"):
        check_plan_options(pb, role="boss")


# -- folders hold other YAML; standard input -------------------------------------------------

OTHER_YAML = {
    ".github/workflows/ci.yml": "name: ci\non: [push]\njobs:\n  t: {runs-on: ubuntu-latest}\n",
    "docker-compose.yml": "services:\n  db: {image: postgres}\n",
    ".pre-commit-config.yaml": "repos:\n  - repo: local\n    hooks: []\n",
    "deploy/k8s.yaml": "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: Pod\n",
    "chart/templates/svc.yaml": "metadata:\n  name: {{ .Release.Name }}\n  {{- if x }}\n",
    "ansible/site.yml": "- hosts: all\n  tasks: []\n",
    "empty.yaml": "",
}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, body in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body, encoding="utf-8")


def test_a_folder_skips_yaml_that_is_not_a_playbook_fragment_or_scenario(tmp_path) -> None:
    _write(tmp_path, {**OTHER_YAML, "playbooks/p.yaml": STAGE})
    report = validate_report([str(tmp_path)], ValidateOptions(plan_checks=False))
    assert [Path(r.file).name for r in report.results] == ["p.yaml"]
    assert report.exit_code == ExitCode.OK
    # the dot folder is not walked; the dot file at the top is read and skipped by its keys
    assert len(report.skipped) == len(OTHER_YAML) - 1
    assert report.skipped_note() == (
        f"skipped {len(OTHER_YAML) - 1} YAML files that are not a playbook, fragment or scenario"
    )


def test_a_broken_playbook_in_a_folder_is_still_reported(tmp_path) -> None:
    _write(tmp_path, {"docker-compose.yml": "services: {}\n", "p.yaml": "playbook: p\nstages: [\n"})
    report = validate_report([str(tmp_path)])
    assert [d.code for r in report.results for d in r.diagnostics] == ["SOP001"]
    assert report.skipped == [str(tmp_path / "docker-compose.yml")]


def test_a_named_file_is_validated_whatever_it_holds(tmp_path) -> None:
    _write(tmp_path, {"docker-compose.yml": "services: {}\n"})
    report = validate_report([str(tmp_path / "docker-compose.yml")])
    assert report.skipped == [] and report.exit_code == ExitCode.FINDINGS


def test_a_folder_with_only_other_yaml_is_a_usage_error_that_says_so(tmp_path) -> None:
    _write(tmp_path, {"docker-compose.yml": "services: {}\n"})
    with pytest.raises(UsageError, match="skipped 1 YAML file that is not"):
        validate_report([str(tmp_path)])


def test_standard_input_is_validated_as_stdin(tmp_path) -> None:
    text = STAGE.replace("0 9 * * *", "0 25 * * *")
    report = validate_report(["-"], stdin=io.BytesIO(text.encode()))
    (res,) = report.results
    assert res.file == STDIN_NAME
    _at(res, "SOP230", text, '"0 25')
    assert res.documents[STDIN_NAME].line(1) == "playbook: t"


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_endless_standard_input_is_refused_within_bounded_memory() -> None:
    with open("/dev/zero", "rb") as zero:
        r = subprocess.run(
            [sys.executable, "-m", "sop.cli", "validate", "--format", "json", "-"],
            stdin=zero,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_limit_memory,
        )
    assert r.returncode == 2, r.stderr
    assert '"SOP003"' in r.stdout and STDIN_NAME in r.stdout and "Traceback" not in r.stderr
