"""Shared helpers: write a playbook, validate it, find where a token sits."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sop.engine.validate import FileResult, Options, validate_file

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"
REFERENCE = PLAYBOOKS / "community-lifecycle.yaml"

BASE = """\
playbook: t
timezone: Asia/Shanghai
roles: {ops: {headcount: 1}}
backends: {group: {type: console}}
defaults: {backend: group, owner: ops}
"""


def position(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the nth occurrence of `needle` in `text`."""
    idx = -1
    for _ in range(nth):
        idx = text.index(needle, idx + 1)
    line = text.count("\n", 0, idx) + 1
    col = idx - (text.rfind("\n", 0, idx) + 1) + 1
    return line, col


@pytest.fixture
def check(tmp_path: Path):
    """Validate YAML text (dedented) written to a temp file; returns (result, text)."""

    def run(
        text: str, name: str = "p.yaml", plan_checks: bool = True, **files: str
    ) -> tuple[FileResult, str]:
        text = textwrap.dedent(text)
        for rel, body in files.items():
            p = tmp_path / rel.replace("__", "/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(body), encoding="utf-8")
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return validate_file(str(path), Options(plan_checks=plan_checks)), text

    return run


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (tests/pgserver.py); skipped where there is
    none, failed instead when SOP_REQUIRE_POSTGRES=1."""
    from tests.pgserver import start_or_skip

    server = start_or_skip()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh empty database on the session's PostgreSQL server."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
