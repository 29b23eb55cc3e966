"""The README and docs/language.md teach the language: their YAML examples must validate."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from sop.engine.validate import Options, validate_file

from tests.conftest import PLAYBOOKS, ROOT

LANGUAGE = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", LANGUAGE, re.S)
HEADER, SNIPPETS = BLOCKS[0], BLOCKS[1:]


def _top_level_blocks(text: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    key = None
    for line in text.splitlines(keepends=True):
        m = re.match(r"^([a-z_]+):", line)
        if m:
            key = m.group(1)
            blocks[key] = ""
        if key:
            blocks[key] += line
    return blocks


def _complete(snippet: str) -> str:
    header = _top_level_blocks(HEADER)
    mine = _top_level_blocks(snippet)
    text = "".join(v for k, v in header.items() if k not in mine) + snippet
    if "stages" not in mine:
        text += "stages:\n  only: {}\n"
    return text


@pytest.mark.parametrize(
    "snippet", SNIPPETS, ids=[f"example-{i + 1}" for i in range(len(SNIPPETS))]
)
def test_language_examples_validate(tmp_path: Path, snippet: str) -> None:
    shutil.copytree(PLAYBOOKS / "fragments", tmp_path / "playbooks" / "fragments")
    (tmp_path / "docs").mkdir()
    path = tmp_path / "docs" / "example.yaml"
    path.write_text(_complete(snippet), encoding="utf-8")
    # the examples include ../playbooks/fragments: validated as `sop validate --root .` would
    res = validate_file(str(path), Options(plan_checks=False, root=str(tmp_path)))
    assert [(d.code, d.message) for d in res.diagnostics if d.code != "SOP210"] == []


def test_readme_tour_validates(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tour = re.findall(r"```yaml\n(.*?)```", readme, re.S)[0]
    path = tmp_path / "tour.yaml"
    path.write_text(tour, encoding="utf-8")
    res = validate_file(str(path))
    assert res.diagnostics == []


def test_readme_member_language_validates(tmp_path: Path) -> None:
    """The README's brief of the member-level language, on top of the tour's header."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tour, members = re.findall(r"```yaml\n(.*?)```", readme, re.S)[:2]
    header = _top_level_blocks(tour)
    mine = _top_level_blocks(members)
    text = "".join(v for k, v in header.items() if k not in mine) + members
    path = tmp_path / "members.yaml"
    path.write_text(text, encoding="utf-8")
    res = validate_file(str(path), Options(plan_checks=False))
    assert [(d.code, d.message) for d in res.diagnostics] == []


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(.*?)```", readme, re.S)[:2]
    assert "sop validate playbooks/" in commands[0] and "sop plan" in commands[0]
    assert "pip install -e '.[test]'" in commands[1] and "pytest" in commands[1]
    assert commands[1].strip() in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
