"""The short fuzz run of CI: a few hundred generated hostile cases through every verb.

Same strategies (tests/strategies.py) and runner (tests/fuzz_harness.py) as `bench/fuzz.py`, with
a fixed seed so a failure reproduces. Each case runs in a worker process with a 1 GiB address-space
limit and a 10 s timeout; the run must show no traceback, no hang, no crash, no disclosure of the
environment or of /etc/passwd, no write outside the case's folder (through a committed symlink),
no exit code outside {0, 1, 2}, and a peak RSS under 500 MB
(for inputs under 1 MB: the goal of issue #7).
Failing cases are written under the pytest tmp folder for `python bench/fuzz.py --replay DIR`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import click
import pytest

from tests.fuzz_harness import (
    Campaign,
    Limits,
    Outcome,
    Summary,
    case_markdown,
    describe,
    generate,
)
from tests.strategies import MIX, SECRET_ENV, Case, FileKind, FileSpec

CASES = int(os.environ.get("SOP_FUZZ_CASES", "600"))
SEED = int(os.environ.get("SOP_FUZZ_SEED", "20261201"))
# The long run's mix with more of the rarer verbs, so a short run still reaches each of them.
CI_MIX = {**MIX, "simulate": (4, MIX["simulate"][1]), "calibrate": (8, MIX["calibrate"][1])}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Campaign, Summary, Path]:
    """One short campaign shared by the assertions below."""
    out = tmp_path_factory.mktemp("fuzz-failures")
    camp = Campaign(workers=2, out_dir=str(out))
    summary = camp.run(generate(CASES, SEED, CI_MIX))
    print(describe(summary, camp))
    return camp, summary, out


def _explain(camp: Campaign, summary: Summary, out: Path, prefix: str) -> str:
    """The failing classes with a prefix, each with its first reproducer."""
    lines = [f"recorded under {out}"]
    for sig, outs in summary.failures.items():
        if sig.startswith(prefix):
            case = camp.cases.get(outs[0].index)
            lines.append(f"{len(outs)} x {sig}")
            if case is not None:
                lines.append(case_markdown(case, outs[0], max_file=400))
    return "\n".join(lines)


def test_the_campaign_ran_every_verb(campaign: tuple[Campaign, Summary, Path]) -> None:
    _, summary, _ = campaign
    assert summary.cases == CASES
    assert {"validate", "plan", "graph", "diff", "simulate", "calibrate", "init"} <= set(
        summary.per_verb
    )


def test_no_generated_input_makes_sop_print_a_traceback(campaign) -> None:
    camp, summary, out = campaign
    tracebacks = summary.tracebacks
    assert tracebacks == 0, _explain(camp, summary, out, "traceback:")


def test_no_generated_input_makes_sop_hang_or_crash(campaign) -> None:
    camp, summary, out = campaign
    hangs = summary.hangs
    assert hangs == 0, _explain(camp, summary, out, "hang:")
    crashes = summary.crashes
    assert crashes == 0, _explain(camp, summary, out, "crash:")


def test_no_generated_input_makes_sop_disclose_the_environment_or_etc_passwd(campaign) -> None:
    camp, summary, out = campaign
    disclosures = summary.disclosures
    assert disclosures == 0, _explain(camp, summary, out, "disclosure:")


def test_no_generated_input_makes_sop_write_outside_its_folder(campaign) -> None:
    # e.g. `-o report.sarif` where the pull request committed report.sarif -> /etc/passwd
    camp, summary, out = campaign
    escapes = summary.escapes
    assert escapes == 0, _explain(camp, summary, out, "escape:")


def test_every_exit_code_is_0_1_or_2(campaign) -> None:
    camp, summary, out = campaign
    bad_exits = summary.bad_exits
    assert bad_exits == 0, _explain(camp, summary, out, "exit:")


def test_peak_memory_stays_under_500_mb_for_inputs_under_1_mb(campaign) -> None:
    _, summary, _ = campaign
    peak = summary.peak_rss_small_mb
    assert peak < 500, describe(summary)


# -- the harness itself: each failure class is caught (a fake `sop` that fails on purpose) ------


@click.group()
def fake_sop() -> None:
    """A stand-in for `sop` whose verbs fail in each way the campaign must notice."""


@fake_sop.command()
@click.argument("path")
def cat(path: str) -> None:
    """Print a file, as an unconfined include would."""
    click.echo(open(path, encoding="utf-8", errors="replace").read())  # noqa: SIM115


@fake_sop.command()
@click.argument("path")
def write(path: str) -> None:
    """Write to a path, as `-o` does."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("x")


@fake_sop.command()
@click.argument("path")
def replace(path: str) -> None:
    """Write a file next to `path` and rename it over `path` (replaces a link, never its target)."""
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write("x")
    os.replace(path + ".tmp", path)


@fake_sop.command()
def env() -> None:
    """Print the environment variable the harness plants."""
    click.echo(os.environ[SECRET_ENV], err=True)


@fake_sop.command()
def boom() -> None:
    """Raise."""
    raise ValueError("boom")


@fake_sop.command()
def hog() -> None:
    """Allocate past the address-space limit."""
    click.echo(len(bytearray(4 << 30)))


@fake_sop.command()
def hang() -> None:
    """Never finish."""
    time.sleep(3600)


@fake_sop.command()
def crash() -> None:
    """Die of a signal."""
    os.kill(os.getpid(), signal.SIGSEGV)


@fake_sop.command()
def exit3() -> None:
    """Exit with a code outside 0/1/2."""
    raise SystemExit(3)


@fake_sop.command()
@click.argument("path")
def ok(path: str) -> None:
    """Read the case's file and succeed."""
    click.echo(open(path, encoding="utf-8").read().upper())  # noqa: SIM115


def test_the_harness_tells_each_kind_of_failure_apart() -> None:
    camp = Campaign(workers=1, limits=Limits(timeout=0.5, entry="tests.test_fuzz:fake_sop"))
    link = (FileSpec("pw", FileKind.SYMLINK, b"@passwd"),)
    cases = {
        "ok": Case("ok", ("ok", "a.txt"), (FileSpec("a.txt", FileKind.TEXT, b"fine"),)),
        "environ": Case(
            "cat", ("cat", "leak"), (FileSpec("leak", FileKind.SYMLINK, b"/proc/self/environ"),)
        ),
        "passwd": Case("cat", ("cat", "/etc/passwd")),
        "decoy": Case("cat", ("cat", "pw"), link),
        "escape": Case("write", ("write", "pw"), link),
        "inside": Case("write", ("write", "out.txt")),
        "rename": Case("replace", ("replace", "pw"), link),
        "env": Case("env", ("env",)),
        "boom": Case("boom", ("boom",)),
        "hog": Case("hog", ("hog",)),
        "hang": Case("hang", ("hang",)),
        "crash": Case("crash", ("crash",)),
        "exit3": Case("exit3", ("exit3",)),
        "usage": Case("ok", ("ok",)),
    }  # fmt: skip
    names = list(cases)
    got: dict[str, Outcome] = {}
    camp.run(cases.values(), lambda o, _: got.__setitem__(names[o.index], o))
    assert not got["ok"].failed and got["ok"].output.startswith("FINE")
    assert got["environ"].disclosure == "env-secret"
    assert got["passwd"].disclosure == "passwd-line" or not Path("/etc/passwd").exists()
    assert got["decoy"].disclosure == "passwd-line" or not Path("/etc/passwd").exists()
    assert (
        got["escape"].escape.startswith("open ") and got["escape"].error_type == "PermissionError"
    )
    assert not got["inside"].failed
    assert not got["rename"].failed
    assert got["env"].disclosure == "env-secret"
    assert got["boom"].signature == "traceback:ValueError: > test_fuzz.py:boom"
    assert got["hog"].error_type == "MemoryError"
    assert got["hang"].hang
    assert got["crash"].crash == f"signal {int(signal.SIGSEGV)}"
    assert got["exit3"].signature == "exit:exit3:3"
    assert got["usage"].exit_code == 2 and not got["usage"].failed
