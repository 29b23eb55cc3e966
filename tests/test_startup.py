"""The `sop` entry point: `--help` from stored text that never drifts from click's, quick exits
that lose no output and keep every exit code, and `python -m sop`.

When a command or its help changes, `python -m tests.test_startup` rewrites the stored text.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st
from sop.__main__ import HELP, HELP_WIDTH
from sop.engine.core.schedule import _simple_cron, month_days, parse_cron

ROOT = Path(__file__).resolve().parents[1]


def click_help(width: int) -> str:
    """What click itself prints for `sop --help` in a terminal `width` columns wide (a process
    of its own: click's test runner forces a width of its own)."""
    code = "import sys; sys.argv[0] = 'sop'; from sop.cli import main; main()"
    res = subprocess.run(
        [sys.executable, "-c", code, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": str(width)},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def run(
    *args: str, env: dict[str, str] | None = None, code: str = ""
) -> subprocess.CompletedProcess[str]:
    """`sop ARGS` in a fresh interpreter, started the way the console script starts it."""
    prog = code + "import sys; sys.argv[0] = 'sop'; from sop.__main__ import main; main()"
    return subprocess.run(
        [sys.executable, "-c", prog, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_the_stored_help_is_what_click_renders():
    assert click_help(HELP_WIDTH) == HELP, "run `python -m tests.test_startup` to rewrite it"
    assert click_help(500) == HELP  # click never wraps help wider than 80 columns


def test_help_is_printed_without_importing_click():
    probe = (
        "import atexit, os; _exit = os._exit;"
        " os._exit = lambda c: (print('click' in sys.modules, file=sys.stderr), _exit(c));"
    )
    for flag in ("--help", "-h"):
        res = run(flag, env={"COLUMNS": "100"}, code="import sys; " + probe)
        assert (res.returncode, res.stdout, res.stderr) == (0, HELP, "False\n")


def test_a_narrow_terminal_gets_clicks_own_wrapping():
    res = run("--help", env={"COLUMNS": "60"})
    assert res.returncode == 0 and res.stdout == click_help(60) != HELP


def test_a_quick_exit_keeps_the_exit_code_and_every_line_of_output(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            playbook: bad
            timezone: Mars/Olympus
            stages: {}
            """
        ),
        encoding="utf-8",
    )
    res = run("validate", str(bad), "--format", "json")
    assert res.returncode == 1, res.stderr
    assert res.stdout.rstrip().endswith(("}", "]"))  # the whole document, flushed
    assert run("validate", str(tmp_path / "missing.yaml")).returncode == 2
    assert run("rules").stdout.count("\n") > 20


def test_a_simulation_ends_by_a_quick_exit_with_its_output_and_files_whole(tmp_path):
    # interpreter teardown after numba took about 0.3 s; the exit skips it once all is written
    probe = (
        "import os, sys; _exit = os._exit;"
        " os._exit = lambda c: (print('quick', file=sys.stderr), _exit(c));"
    )
    report = tmp_path / "sim.html"
    playbooks = Path(__file__).resolve().parent.parent / "playbooks"
    playbook = str(playbooks / "community-lifecycle.yaml")
    args = ("simulate", playbook, "--runs", "16", "--days", "30")
    res = run(*args, "--workers", "2", "--format", "json", "--report", str(report), code=probe)
    assert res.returncode == 0, res.stderr
    assert res.stderr.endswith("quick\n")
    assert json.loads(res.stdout)["options"]["runs"] == 16  # the whole document
    assert report.read_text(encoding="utf-8").rstrip().endswith("</html>")
    # a gate below --min-probability: exit 1, kept
    low = run(*args, "--min-probability", "1", code=probe)
    assert low.returncode == 1 and low.stderr.endswith("quick\n") and "exit 1" in low.stdout


def test_a_reader_that_goes_away_ends_a_quick_exit_verb_cleanly():
    cmd = [
        sys.executable,
        "-c",
        "import sys; sys.argv[0] = 'sop'; from sop.__main__ import main; main()",
        "rules",
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # before anything is read
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 1
    assert b"Traceback" not in err and b"Exception ignored" not in err


def test_python_dash_m_sop_runs_the_same_command():
    res = subprocess.run(
        [sys.executable, "-m", "sop", "--version"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and res.stdout.startswith("sop, version ")


# -- `sop validate` without click ----------------------------------------------------------

BROKEN = """\
playbook: broken
timezone: Mars/Olympus
roles: {ops: {headcount: 1}}
stages:
  s1:
    actions:
      a1: {cron: "61 * * * *", do: post, owner: nobody, text: "hi"}
"""
WARNS = "playbook: w\ntimezone: UTC\nstages:\n  s: {}\ntemplates: {unused: x}\n"
# The entry point's os._exit, patched to say on stderr (a last line) whether click was imported
CLICK_PROBE = (
    "import sys, os; _exit = os._exit;"
    " os._exit = lambda c: (print('click' in sys.modules, file=sys.stderr), _exit(c));"
)
Outcome = tuple[int, str, str]  # exit code, stdout, stderr


def _sop_validate(prog: str, args: list[str], stdin: str, env: dict[str, str]) -> Outcome:
    probe = CLICK_PROBE if prog == "__main__" else ""
    res = subprocess.run(
        [sys.executable, "-c", f"{probe}import sys; sys.argv[0] = 'sop'; from sop.{prog} import"
         " main; main()", "validate", *args],
        input=stdin, capture_output=True, text=True, timeout=60, env={**os.environ, **env},
        check=False,
    )  # fmt: skip
    return res.returncode, res.stdout, res.stderr


def _both_ways(
    cases: list[tuple[list[str], str, dict[str, str]]],
) -> list[tuple[bool, Outcome, Outcome]]:
    """`sop validate ARGS` through the entry point and through click's own command: for each
    case, whether the entry point imported click, and each side's outcome."""
    with ThreadPoolExecutor(4) as pool:
        entry = list(pool.map(lambda c: _sop_validate("__main__", *c), cases))
        click = list(pool.map(lambda c: _sop_validate("cli", *c), cases))
    out = []
    for (code, stdout, stderr), via_click in zip(entry, click, strict=True):
        *said, probe = stderr.splitlines(keepends=True)
        out.append((probe == "True\n", (code, stdout, "".join(said)), via_click))
    return out


def test_plain_validate_command_lines_skip_click_and_say_what_click_says(tmp_path):
    broken, warns = tmp_path / "broken.yaml", tmp_path / "warns.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    warns.write_text(WARNS, encoding="utf-8")
    mixed = tmp_path / "mixed"
    (mixed / ".github").mkdir(parents=True)
    (mixed / "compose.yaml").write_text("services: {}\n", encoding="utf-8")
    (mixed / "p.yaml").write_text(WARNS, encoding="utf-8")
    (tmp_path / "empty").mkdir()
    (tmp_path / "空的").mkdir()
    reference = str(ROOT / "playbooks" / "community-lifecycle.yaml")
    cases: list[tuple[list[str], str, dict[str, str]]] = [
        ([reference], "", {}),
        ([reference, "--format", "json"], "", {}),
        ([str(broken)], "", {}),
        ([str(broken), "--format=github"], "", {}),
        (["--format", "sarif", str(broken), reference], "", {}),
        (["--format", "junit", str(broken)], "", {}),
        ([str(warns)], "", {}),
        ([str(warns), "--strict"], "", {}),
        (["--strict", "--no-plan-checks", str(warns)], "", {}),
        ([str(tmp_path / "missing.yaml")], "", {}),
        ([str(mixed)], "", {}),
        ([str(tmp_path / "empty")], "", {}),
        ([str(tmp_path / "空的")], "", {"PYTHONIOENCODING": "utf-8"}),
        (["-"], BROKEN, {}),
        (["-", "-"], "", {}),
        ([str(broken)], "", {"GITHUB_ACTIONS": "true"}),
    ]
    for (args, _, _), (used_click, entry, via_click) in zip(cases, _both_ways(cases), strict=True):
        assert not used_click, args
        assert entry == via_click, args
        assert entry[1] or entry[2], args  # every case says something


def test_other_validate_command_lines_go_to_click(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    (tmp_path / "空的").mkdir()
    cases: list[tuple[list[str], str, dict[str, str]]] = [
        ([str(broken), "--days", "30"], "", {}),
        ([str(broken), "--format", "xml"], "", {}),
        ([str(broken), "--format", "json", "--format", "text"], "", {}),
        ([str(broken), "--"], "", {}),
        (["--help"], "", {}),
        ([], "", {}),
        ([f"{tmp_path}/\x1b[31mred.yaml"], "", {}),  # click.echo strips escape sequences
        ([str(tmp_path / "空的")], "", {"PYTHONIOENCODING": "ascii"}),  # and writes UTF-8
        ([str(broken), "--root", str(tmp_path)], "", {}),
        (
            [str(broken)],
            "",
            {"_SOP_COMPLETE": "bash_complete", "COMP_WORDS": "sop va", "COMP_CWORD": "1"},
        ),
    ]
    for (args, _, _), (used_click, entry, via_click) in zip(cases, _both_ways(cases), strict=True):
        assert used_click, args
        assert entry == via_click, args


def test_a_reader_that_goes_away_ends_a_plain_validate_as_click_ends_it():
    reference = str(ROOT / "playbooks" / "community-lifecycle.yaml")
    outcomes = []
    for prog in ("__main__", "cli"):
        code = f"import sys; sys.argv[0] = 'sop'; from sop.{prog} import main; main()"
        cmd = [sys.executable, "-c", code, "validate", reference, "--format", "json"]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()  # before anything is read
            outcomes.append((proc.wait(timeout=60), proc.stderr.read()))
    assert outcomes[0] == outcomes[1] == (1, b"")


# -- dataclass methods compiled once -------------------------------------------------------

DATACLASSES = """\
from __future__ import annotations
import dataclasses
from dataclasses import dataclass, field

@dataclass(frozen=True, slots=True)
class Span:
    \"\"\"A region.\"\"\"
    file: str
    line: int = 1
    tags: tuple[str, ...] = ()

@dataclass
class Load:
    \"\"\"Counts.\"\"\"
    worst: dict[str, int] = field(default_factory=dict)
    total: int = 0

@dataclass(frozen=True, order=True)
class Key:
    \"\"\"Ordered.\"\"\"
    a: int
    b: str = "x"
"""


def _define(exec_hook: object | None) -> dict[str, Any]:
    """The classes above, defined with dataclasses' own exec or with `exec_hook` in its place."""
    import dataclasses

    saved = dataclasses.__dict__.get("exec")
    if exec_hook is not None:
        dataclasses.exec = exec_hook
    module = types.ModuleType("dc_probe")  # dataclasses looks a class's module up
    sys.modules["dc_probe"] = module
    try:
        exec(DATACLASSES, module.__dict__)  # the test's own text, run as a module runs
        return module.__dict__
    finally:
        del sys.modules["dc_probe"]
        if saved is None:
            dataclasses.__dict__.pop("exec", None)
        else:
            dataclasses.exec = saved


def test_dataclass_methods_compiled_once_are_the_methods_dataclasses_compiles(monkeypatch):
    import dataclasses
    import inspect

    import sop.__main__ as entry

    monkeypatch.setattr(entry, "_METHODS", {})
    monkeypatch.setattr(entry, "_FRESH", [])
    plain, cold = _define(None), _define(entry._exec_once)
    compiled = len(entry._FRESH)
    warm = _define(entry._exec_once)
    assert compiled >= 10 and len(entry._FRESH) == compiled  # the second time, nothing compiled
    for name in ("Span", "Load", "Key"):
        ours, theirs = cold[name], plain[name]
        for method in ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__lt__"):
            a, b = getattr(ours, method), getattr(theirs, method)
            if a is b or not hasattr(a, "__code__"):
                continue
            assert a.__code__.co_code == b.__code__.co_code, (name, method)
            assert a.__code__.co_consts == b.__code__.co_consts, (name, method)
            assert a.__qualname__ == b.__qualname__
            assert str(inspect.signature(a)) == str(inspect.signature(b))
        assert list(ours.__dataclass_fields__) == list(theirs.__dataclass_fields__)
    for ns in (cold, warm):
        span = ns["Span"]("a.yaml", 3)
        assert repr(span) == "Span(file='a.yaml', line=3, tags=())"
        assert span == ns["Span"]("a.yaml", 3) and hash(span) == hash(ns["Span"]("a.yaml", 3))
        with pytest.raises(dataclasses.FrozenInstanceError):
            span.line = 4
        assert ns["Load"]().worst == {} and ns["Key"](1) < ns["Key"](2)


def test_a_validate_reads_the_methods_an_earlier_run_compiled_and_says_the_same(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)  # as on a user's machine
    env = {"PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")}  # bytecode and methods go there
    reference = str(ROOT / "playbooks" / "community-lifecycle.yaml")
    cases = [([reference, "--format", "json"], "", env), ([reference], "", env)]

    def methods() -> list[Path]:
        return list((tmp_path / "pycache").rglob("dataclass-methods.*.marshal"))

    # every module's bytecode first, by imports alone (only a command reads or writes methods)
    modules = (
        "sop.__main__, sop.cli, sop.engine.report, sop.engine.lang.checks,"
        " sop.engine.plan.checks, sop.engine.lang.sandbox"
    )
    warm = subprocess.run(
        [sys.executable, "-c", f"import {modules}"],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert warm.returncode == 0 and not methods(), warm.stderr
    first = _both_ways(cases)
    (written,) = methods()
    stamp = written.stat().st_mtime_ns
    second = _both_ways(cases)
    assert written.stat().st_mtime_ns == stamp  # nothing new to keep
    written.write_bytes(b"not marshal data")
    third = _both_ways(cases)
    for runs in (first, second, third):
        for used_click, entry, via_click in runs:
            assert not used_click and entry == via_click and entry[0] == 0
    assert [r[1] for r in first] == [r[1] for r in second] == [r[1] for r in third]
    assert written.read_bytes() != b"not marshal data"  # a broken file is compiled anew


def test_month_days_is_calendars_count() -> None:
    assert [month_days(y, m) for y in (1, 1900, 2000, 2024, 2026, 9999) for m in range(1, 13)] == [
        calendar.monthrange(y, m)[1]
        for y in (1, 1900, 2000, 2024, 2026, 9999)
        for m in range(1, 13)
    ]


# -- cron without croniter -----------------------------------------------------------------


@st.composite
def cron_part(draw: st.DrawFn, lo: int, hi: int) -> str:
    """One comma-separated part of a cron field: mostly in range, sometimes not, or malformed."""
    n = st.integers(lo, hi) | st.integers(lo - 1, hi + 2)
    kind = draw(st.sampled_from(["*", "*/", "a", "a", "a-b", "a-b", "a-b/", "a/", "#", "junk"]))
    a, b, step = draw(n), draw(n), draw(st.integers(1, hi) | st.integers(0, hi + 2))
    return {
        "*": "*",
        "*/": f"*/{step}",
        "a": f"{a}",
        "a-b": f"{min(a, b)}-{max(a, b)}" if draw(st.booleans()) else f"{a}-{b}",
        "a-b/": f"{a}-{b}/{step}",
        "a/": f"{a}/{step}",
        "#": f"{draw(st.integers(0, 7))}#{draw(st.integers(0, 6))}",
        "junk": draw(st.sampled_from(["", "-", "*-1", "1-", "/2", "0" + str(a), "1#1#1"])),
    }[kind]


@st.composite
def plain_cron(draw: st.DrawFn) -> str:
    fields = []
    for lo, hi in ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7)):
        if draw(st.integers(0, 2)) == 0:
            fields.append("*")
            continue
        parts = draw(st.lists(cron_part(lo, hi), min_size=1, max_size=3))
        fields.append(",".join(parts))
    return " ".join(fields)


@settings(max_examples=200, deadline=None)
@given(plain_cron())
def test_plain_crons_are_read_exactly_as_croniter_reads_them(expr: str) -> None:
    ours = _simple_cron(expr)
    try:
        it = croniter(expr)
    except (ValueError, KeyError, TypeError):
        assert ours is None  # left to croniter, which says why it is invalid
        return
    if ours is not None:
        assert ours == (it.expanded[:5], it.nth_weekday_of_month)


def test_crons_beyond_the_plain_form_still_go_to_croniter() -> None:
    every_first = ",".join(f"{d}#1" for d in range(7))  # croniter writes this field as `*`
    for expr in (
        "0 9 L * *",
        "0 9 15W * *",
        f"0 9 * * {every_first}",
        "0 9 * * mon",
        "0 22-2 * * *",
    ):
        assert _simple_cron(expr) is None
        assert parse_cron(expr) is not None


def _regenerate() -> None:
    """Rewrite HELP in __main__.py from click's current rendering."""
    path = ROOT / "__main__.py"
    text = path.read_text(encoding="utf-8")
    new = 'HELP = """\\\n' + click_help(HELP_WIDTH).replace("\\", "\\\\") + '"""\n'
    text, n = re.subn(r'HELP = """\\\n.*?"""\n', lambda _: new, text, count=1, flags=re.S)
    assert n == 1, "HELP not found in __main__.py"
    path.write_text(text, encoding="utf-8")
    print(f"rewrote HELP in {path}")


if __name__ == "__main__":
    _regenerate()
