"""The built distribution: one top-level name (`sop`), data inside it, and it works installed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The wheel built from this tree, unpacked into a folder of its own (no editable finder)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("sop-*.whl")
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(target)
    return target, names


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -I: isolated, so neither the source tree nor the editable install can be imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *_dependencies()])}
    code = "import sys; from sop.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def _dependencies() -> list[str]:
    import click
    import yaml

    return sorted({str(Path(m.__file__).resolve().parents[1]) for m in (click, yaml)})


def test_the_distribution_claims_no_generic_top_level_name(installed) -> None:
    _, names = installed
    assert {n.split("/")[0] for n in names} == {"sop", "sop-0.1.0.dist-info"}
    assert "sop/cli.py" in names and "sop/engine/__init__.py" in names
    assert not any(n.startswith(("sop/tests/", "sop/bench/")) for n in names)


def test_the_installed_package_reads_its_schemas_and_playbooks(installed, tmp_path) -> None:
    site, _ = installed
    res = _run(site, tmp_path, "init", "g", "--template", "lifecycle")
    assert res.returncode == 0, res.stderr
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for p in tmp_path.iterdir():
        if p != moved:
            p.rename(moved / p.name)
    res = _run(site, moved, "validate", "g.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sop" in _run(site, tmp_path, "schema").stdout
