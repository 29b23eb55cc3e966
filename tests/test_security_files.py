"""Untrusted files: confined to a root, regular files only, bounded, and never disclosed."""

from __future__ import annotations

import json
import os
import resource
import secrets
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner
from sop.cli import main
from sop.engine.core.diagnostics import Diagnostic, Severity
from sop.engine.core.files import FileRefused, read_bytes
from sop.engine.report import RENDERERS
from sop.engine.sim.scenario import ScenarioError, load_scenario
from sop.engine.validate import FileResult, Options, validate_file, validate_paths

from tests.conftest import BASE, REFERENCE, ROOT, position

OUTSIDE_TOKEN = "TOKEN_OUTSIDE_ROOT_7f3a"  # written in a file outside the root: must never show
PASSWD = "root:x:0"
HAS_FIFO = hasattr(os, "mkfifo")

STAGE = BASE + "stages:\n  s1:\n    actions:\n      a1: {day: 0, do: post, text: hi}\n"

# Every include trick, as written in the playbook, and a word its refusal message holds.
TRICKS = [
    ("/proc/self/environ", "absolute"),
    ("../../proc/self/environ", "leaves the root"),
    ("../../../../../../../../etc/passwd", "leaves the root"),
    ("/etc/passwd", "absolute"),
    ("passwd.yaml", "symlink"),  # -> /etc/passwd
    ("environ.yaml", "symlink"),  # -> /proc/self/environ
    ("inner.yaml", "symlink"),  # -> ../outside/secret.yaml, a valid fragment outside the root
    ("etc/passwd", "symlink"),  # etc -> /etc, a symlinked folder
    ("out/secret.yaml", "symlink"),  # out -> ../outside, a symlinked folder
    ("/dev/zero", "absolute"),
    ("zero.yaml", "symlink"),  # -> /dev/zero
    ("pipe.yaml", "not a regular file"),  # a FIFO inside the root
    ("adir", "folder"),
    ('"nul\\0.yaml"', "NUL"),
    ("''", "empty"),
]


# On code without the guards these hang (a FIFO) or grow without bound (/dev/zero): they run only
# in a child process under resource limits, never in the test process.
DANGEROUS = {"/dev/zero", "zero.yaml", "pipe.yaml"}
SAFE_TRICKS = [t for t in TRICKS if t[0] not in DANGEROUS]


def _hostile_tree(tmp: Path, *, dangerous: bool = True) -> Path:
    """root/p.yaml includes every trick; outside/secret.yaml is a fragment holding a token."""
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text(
        f"fragment: f\nactions:\n  leak: {{day: 0, do: post, text: {OUTSIDE_TOKEN}}}\n",
        encoding="utf-8",
    )
    root = tmp / "root"
    root.mkdir()
    (root / "passwd.yaml").symlink_to("/etc/passwd")
    (root / "environ.yaml").symlink_to("/proc/self/environ")
    (root / "inner.yaml").symlink_to("../outside/secret.yaml")
    (root / "etc").symlink_to("/etc")
    (root / "out").symlink_to("../outside")
    if dangerous:
        (root / "zero.yaml").symlink_to("/dev/zero")
        if HAS_FIFO:
            os.mkfifo(root / "pipe.yaml")
    (root / "adir").mkdir()
    with open(root / "big.yaml", "wb") as fh:  # sparse: refused on its size, never read
        fh.truncate(11 * 2**20)
    tricks = TRICKS if dangerous else SAFE_TRICKS
    includes = "".join(f"      - {inc}\n" for inc, _ in tricks) + "      - big.yaml\n"
    (root / "p.yaml").write_text(
        STAGE + "    include:\n" + includes + "  s2:\n    include: inner.yaml\n",
        encoding="utf-8",
    )
    return root


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))


def _sop(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, under 1 GiB of address space and a timeout."""
    return subprocess.run(
        [sys.executable, "-m", "sop.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=_limits,
    )


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    token = "SECRET_" + secrets.token_hex(16)
    env = {**os.environ, "SECRET": token, "NO_COLOR": "1", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("GITHUB_ACTIONS", None)
    return _hostile_tree(tmp_path), env, token


def _assert_nothing_leaks(r: subprocess.CompletedProcess[str], token: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Traceback" not in out
    assert token not in out and "SECRET=" not in out
    assert PASSWD not in out and OUTSIDE_TOKEN not in out


@pytest.mark.parametrize("fmt", ["text", "json", "github", "sarif", "junit"])
def test_every_include_trick_is_refused_and_nothing_leaks_in_any_format(hostile, fmt) -> None:
    root, env, token = hostile
    r = _sop("validate", "--format", fmt, str(root / "p.yaml"), env=env)
    _assert_nothing_leaks(r, token)
    assert r.stdout.count("SOP007") >= len(TRICKS) - (not HAS_FIFO)


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "{p}"],
        ["graph", "{p}"],
        ["simulate", "{p}", "--runs", "2", "--days", "5"],
        ["diff", "{p}", "{p}"],
        ["validate", "--root", "{root}", "{p}"],
        ["validate", "--format", "json", "{root}"],  # a folder: the files found are confined too
    ],
    ids=["plan", "graph", "simulate", "diff", "validate-root", "validate-folder"],
)
def test_every_verb_on_the_hostile_playbook_exits_cleanly_without_leaking(hostile, args) -> None:
    root, env, token = hostile
    r = _sop(*(a.format(p=root / "p.yaml", root=root) for a in args), env=env)
    _assert_nothing_leaks(r, token)


@pytest.mark.parametrize("name", ["environ.yaml", "passwd.yaml", "inner.yaml"])
@pytest.mark.parametrize("fmt", ["text", "json", "github", "sarif", "junit"])
def test_validating_a_symlink_to_a_secret_quotes_nothing(hostile, fmt, name) -> None:
    root, env, token = hostile
    r = _sop("validate", "--format", fmt, str(root / name), env=env)
    _assert_nothing_leaks(r, token)
    assert r.returncode == 2 and "SOP006" in r.stdout


@pytest.mark.parametrize(("include", "why"), SAFE_TRICKS)
def test_each_include_trick_is_a_located_sop007(tmp_path, include, why) -> None:
    root = _hostile_tree(tmp_path, dangerous=False)
    p = root / "one.yaml"
    text = STAGE + f"    include: {include}\n"
    p.write_text(text, encoding="utf-8")
    res = validate_file(str(p), Options(plan_checks=False))
    (d,) = res.diagnostics
    assert d.code == "SOP007" and why in d.message
    assert (d.line, d.column) == position(text, include)
    assert set(res.documents) == {str(p)}  # nothing outside the root was loaded
    assert OUTSIDE_TOKEN not in d.message and PASSWD not in d.message


@pytest.mark.parametrize(("include", "why"), [t for t in TRICKS if t[0] in DANGEROUS])
def test_a_device_or_fifo_include_is_refused_in_bounded_time_and_memory(
    tmp_path, include, why
) -> None:
    if include == "pipe.yaml" and not HAS_FIFO:
        pytest.skip("no FIFOs here")
    root = _hostile_tree(tmp_path)
    text = STAGE + f"    include: {include}\n"
    (root / "one.yaml").write_text(text, encoding="utf-8")
    r = _sop("validate", "--format", "json", str(root / "one.yaml"), env=dict(os.environ))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    (d,) = json.loads(r.stdout)["diagnostics"]
    assert d["code"] == "SOP007" and why in d["message"]
    assert (d["line"], d["column"]) == position(text, include)


def test_a_symlinked_file_found_in_a_folder_is_refused_without_quoting(tmp_path) -> None:
    root = _hostile_tree(tmp_path, dangerous=False)
    results = {Path(r.file).name: r for r in validate_paths([str(root)], Options())}
    for name in ("inner.yaml", "passwd.yaml", "environ.yaml"):
        (d,) = results[name].diagnostics
        assert d.code == "SOP006" and "outside its root" in d.message
        assert results[name].documents == {}
    text = _render("text", list(results.values()))
    assert OUTSIDE_TOKEN not in text and PASSWD not in text


def test_a_fifo_found_in_a_folder_is_refused(tmp_path) -> None:
    if not HAS_FIFO:
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.yaml")
    r = _sop("validate", str(tmp_path), env=dict(os.environ))
    assert r.returncode == 2 and "SOP006" in r.stdout and "not a regular file" in r.stdout


def test_a_diagnostic_never_reopens_its_file_to_quote_a_line(tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("PASSWORD=hunter2\n", encoding="utf-8")
    d = Diagnostic(str(secret), 1, 1, 1, 5, "SOP006", Severity.ERROR, "cannot read file", "")
    for fmt in RENDERERS:
        assert "hunter2" not in _render(fmt, [FileResult(str(secret), [d])])


def test_a_yaml_error_still_shows_the_line_it_was_read_within_limits(tmp_path) -> None:
    frag = tmp_path / "frag.yaml"
    frag.write_text("fragment: f\nfragment: again\n", encoding="utf-8")
    p = tmp_path / "p.yaml"
    p.write_text(STAGE + "    include: frag.yaml\n", encoding="utf-8")
    text = _render("text", [validate_file(str(p))])
    assert "SOP002" in text and "fragment: again" in text
    p.write_text("playbook: t\nplaybook: again\n", encoding="utf-8")
    assert "playbook: again" in _render("text", [validate_file(str(p))])


def test_a_nul_in_an_include_path_is_located(check) -> None:
    res, text = check(STAGE + '    include: "frag\\0.yaml"\n')
    (d,) = res.diagnostics
    assert d.code == "SOP007" and "NUL" in d.message
    assert (d.line, d.column) == position(text, '"frag')


def test_an_oversized_fragment_is_refused_without_reading_it(tmp_path) -> None:
    with open(tmp_path / "big.yaml", "wb") as fh:
        fh.truncate(64 * 2**20)
    p = tmp_path / "p.yaml"
    p.write_text(STAGE + "    include: big.yaml\n", encoding="utf-8")
    tracemalloc.start()
    res = validate_file(str(p))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [d.code for d in res.diagnostics] == ["SOP003"] and peak < 8 * 2**20


def test_read_bytes_refuses_devices_and_stops_at_the_limit(tmp_path) -> None:
    with pytest.raises(FileRefused, match="not a regular file"):
        read_bytes("/dev/zero", root="/dev")
    f = tmp_path / "f.yaml"
    f.write_bytes(b"x" * 100)
    assert read_bytes(str(f), limit=100) == b"x" * 100
    with pytest.raises(FileRefused) as info:
        read_bytes(str(f), limit=99)
    assert info.value.code == "SOP003"


# -- the root ----------------------------------------------------------------------------------

SHARED = "fragment: f\nactions:\n  x: {day: 0, do: post, text: shared}\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """repo/playbooks/p.yaml includes ../shared/f.yaml: outside its folder, inside the repo."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "f.yaml").write_text(SHARED, encoding="utf-8")
    (tmp_path / "playbooks").mkdir()
    text = STAGE + "    include: ../shared/f.yaml\n"
    (tmp_path / "playbooks" / "p.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def test_the_default_root_is_the_playbooks_folder(repo) -> None:
    res = validate_file(str(repo / "playbooks" / "p.yaml"))
    assert [d.code for d in res.diagnostics] == ["SOP007"]
    assert "leaves the root" in res.diagnostics[0].message


def test_root_widens_the_folder_includes_may_reach(repo) -> None:
    res = validate_file(str(repo / "playbooks" / "p.yaml"), Options(root=str(repo)))
    assert res.diagnostics == [] and "x" in res.playbook.actions
    code, out = _cli("validate", "--root", str(repo), str(repo / "playbooks" / "p.yaml"))
    assert code == 0, out
    code, out = _cli("plan", "--root", str(repo), str(repo / "playbooks" / "p.yaml"), "--days", "2")
    assert code == 0, out


def test_a_folder_argument_is_the_root_of_the_files_found_in_it(repo) -> None:
    code, out = _cli("validate", str(repo))
    assert code == 0, out
    code, out = _cli("validate", str(repo / "playbooks"))
    assert code == 1 and "SOP007" in out


def test_root_must_be_a_folder_holding_the_paths_named(repo) -> None:
    p = str(repo / "playbooks" / "p.yaml")
    code, out = _cli("validate", "--root", str(repo / "nope"), p)
    assert code == 2 and "sop: error: --root" in out
    code, out = _cli("graph", "--root", str(repo / "shared"), p)
    assert code == 2 and "outside --root" in out


def test_a_scenario_is_read_inside_its_root(tmp_path) -> None:
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "s.yaml"
    secret.write_text("scenario: outside\n", encoding="utf-8")
    (tmp_path / "root").mkdir()
    link = tmp_path / "root" / "s.yaml"
    link.symlink_to(secret)
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(link))
    assert [d.code for d in info.value.diagnostics] == ["SOP006"]
    assert load_scenario(str(link), root=str(tmp_path)).name == "outside"


def test_the_scenario_beside_a_playbook_may_not_lead_out_of_its_root(tmp_path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "p.yaml").write_text(f"scenario: {OUTSIDE_TOKEN}\n", encoding="utf-8")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "p.yaml").write_text(STAGE, encoding="utf-8")
    (tmp_path / "root" / "scenarios").symlink_to(tmp_path / "outside")
    code, out = _cli("simulate", str(tmp_path / "root" / "p.yaml"), "--runs", "1", "--days", "2")
    assert code == 2 and "SOP006" in out and OUTSIDE_TOKEN not in out


# -- output paths, checked before any work ----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["validate", str(REFERENCE), "-o", "{tmp}/missing/out.txt"],
        ["validate", str(REFERENCE), "-o", "{tmp}"],
        ["plan", str(REFERENCE), "--format", "csv", "-o", "{tmp}/missing/plan.csv"],
        ["plan", str(REFERENCE), "-o", "{tmp}"],
        ["simulate", str(REFERENCE), "--runs", "5", "--report", "{tmp}/missing/r.html"],
        ["simulate", str(REFERENCE), "--runs", "5", "--report", "{tmp}"],
    ],
    ids=[
        "validate-missing",
        "validate-folder",
        "plan-missing",
        "plan-folder",
        "sim-missing",
        "sim-folder",
    ],
)
def test_an_unwritable_output_fails_before_any_work(tmp_path, args) -> None:
    result = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2  # an exception would be 1
    assert result.stdout == ""  # nothing validated, planned or simulated first
    assert result.stderr.startswith("sop: error: ")


@pytest.mark.parametrize(
    "args",
    [
        ["validate", str(REFERENCE), "-o", "{out}"],
        ["validate", str(REFERENCE), "--format", "sarif", "-o", "{out}"],
        ["plan", str(REFERENCE), "--format", "csv", "-o", "{out}"],
        ["simulate", str(REFERENCE), "--runs", "5", "--days", "5", "--report", "{out}"],
    ],
    ids=["validate", "validate-sarif", "plan", "simulate-report"],
)
def test_an_output_that_is_a_symlink_is_refused_and_its_target_kept(tmp_path, args) -> None:
    # a checkout can carry `report.sarif -> ~/.bashrc`: following it would overwrite the target
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious", encoding="utf-8")
    link = tmp_path / "report.out"
    link.symlink_to(target)
    result = CliRunner().invoke(main, [a.format(out=link) for a in args])
    assert result.exit_code == 2 and "symlink" in result.stderr
    assert target.read_text(encoding="utf-8") == "precious"


def test_an_output_fifo_is_refused_without_waiting(tmp_path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "sop.cli", "validate", str(REFERENCE), "-o", str(fifo)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "not a regular file" in proc.stderr


# -- sop init ----------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_init_onto_an_existing_folder_is_refused(tmp_path, force) -> None:
    (tmp_path / "g.yaml").mkdir()
    code, out = _cli("init", "g", "--dir", str(tmp_path), *force)
    assert code == 2 and "is a folder" in out


def test_init_under_a_regular_file_is_refused(tmp_path) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    for d in ("file", "file/sub", "file/sub/deeper"):
        code, out = _cli("init", "g", "--dir", str(tmp_path / d))
        assert code == 2 and "sop: error:" in out and "file" in out


def test_init_into_a_missing_folder_is_refused_and_writes_nothing(tmp_path) -> None:
    code, out = _cli("init", "g", "--dir", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in out and not (tmp_path / "missing").exists()


def test_init_copies_the_fragments_it_includes_beside_the_playbook(tmp_path) -> None:
    code, _ = _cli("init", "g", "--template", "lifecycle", "--dir", str(tmp_path))
    assert code == 0 and (tmp_path / "fragments" / "fission.yaml").is_file()
    assert "fragment: fragments/fission.yaml" in (tmp_path / "g.yaml").read_text(encoding="utf-8")
    res = validate_file(str(tmp_path / "g.yaml"), Options(plan_checks=False))
    assert res.errors == 0


def test_init_keeps_a_changed_fragment_unless_forced(tmp_path) -> None:
    (tmp_path / "fragments").mkdir()
    (tmp_path / "fragments" / "fission.yaml").write_text("mine\n", encoding="utf-8")
    code, out = _cli("init", "g", "--template", "lifecycle", "--dir", str(tmp_path))
    assert code == 2 and "--force" in out and not (tmp_path / "g.yaml").exists()
    assert (tmp_path / "fragments" / "fission.yaml").read_text(encoding="utf-8") == "mine\n"


def test_init_replaces_a_symlink_instead_of_writing_through_it(tmp_path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n", encoding="utf-8")
    (tmp_path / "g.yaml").symlink_to(victim)
    code, _ = _cli("init", "g", "--template", "minimal", "--dir", str(tmp_path), "--force")
    assert code == 0 and victim.read_text(encoding="utf-8") == "keep\n"
    assert not (tmp_path / "g.yaml").is_symlink()


# -- helpers ------------------------------------------------------------------------------------


def _render(fmt: str, results: list[FileResult]) -> str:
    import io

    buf = io.StringIO()
    RENDERERS[fmt](results, buf, False)
    return buf.getvalue()


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_the_playbook_around_the_includes_is_valid(tmp_path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(STAGE, encoding="utf-8")
    assert validate_file(str(p)).diagnostics == []  # so every refusal above is the include's
