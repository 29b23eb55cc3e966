"""The simulate report says where its intervals come from: with distributions in the scenario,
which part of each gate's and key metric's spread is parameter uncertainty and which Monte Carlo
error, which parameter moves each gate, and the drawn parameters summarised (never a raw list of
bootstrap rows); without them, that the intervals hold Monte Carlo error only and the parameters
are assumptions. And `sop validate` reads a scenario without importing NumPy."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sop.engine.sim.montecarlo import SimOptions, SimResult, simulate
from sop.engine.sim.parameters import RETENTION_PARAMETERS, parse, quantile
from sop.engine.sim.render import to_html, to_text
from sop.engine.sim.retention_models import SPECS
from sop.engine.sim.scenario import load_scenario
from sop.engine.validate import load_playbook

from tests.conftest import PLAYBOOKS, REFERENCE

SCENARIO = PLAYBOOKS / "scenarios" / "community-lifecycle.yaml"
ROOT = Path(__file__).resolve().parents[1]

PLAYBOOK = """\
    playbook: t
    timezone: UTC
    stages:
      only:
        exit: {when: members >= 900}
        deadline: {after: 39d, then: {abort: true}}
      later:
        after: only
        exit: {when: members >= 50000}
    """
ROWS = [[1.0, 2.0, 1.2], [1.4, 3.0, 0.9], [0.8, 2.5, 1.5], [1.1, 2.2, 1.1]]
UNCERTAIN = f"""\
scenario: u
acquisition:
  seed_users: 200
  organic_per_day: {{low: 5, high: 40}}
  bass_p: 0
  bass_q: 0
  invites_per_member_per_day: 0
retention:
  model: bdw
  draws: {ROWS}
activity:
  ugc_per_speak: {{draws: [0.01, 0.02, 0.03]}}
"""


def _text(res: SimResult, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    to_text(res, console)
    return console.export_text()


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("drawn")
    (d / "p.yaml").write_text(textwrap.dedent(PLAYBOOK), encoding="utf-8")
    (d / "s.yaml").write_text(UNCERTAIN, encoding="utf-8")
    pb = load_playbook(str(d / "p.yaml")).playbook
    assert pb is not None
    res = simulate(pb, load_scenario(str(d / "s.yaml")), SimOptions(runs=120, days=40, seed=5))
    return pb, res, to_html(res, pb), _text(res)


@pytest.fixture(scope="module")
def point():
    pb = load_playbook(str(REFERENCE)).playbook
    res = simulate(pb, load_scenario(str(SCENARIO)), SimOptions(runs=12, days=40, seed=5))
    return pb, res, to_html(res, pb), _text(res)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _interval(lo: float, hi: float) -> str:
    return f"[{100 * lo:.1f}–{100 * hi:.1f}]"


def test_without_distributions_the_intervals_say_monte_carlo_only(point) -> None:
    _, res, page, text = point
    assert res.to_dict()["uncertainty"]["gates"] == []
    assert "uncertainty: every scenario parameter is a point value" in text
    assert "intervals hold Monte Carlo error only" in " ".join(text.split())
    how = page[page.index("<h2>How sure") :]
    assert "Monte Carlo error only" in how[: how.index("</p>")]
    assert "cover the randomness of the simulated runs only" in page
    assert "Sensitivity" not in page


def test_the_text_splits_each_gate_and_key_metric_by_source(drawn) -> None:
    _, res, _, text = drawn
    u = res.to_dict()["uncertainty"]
    assert "uncertainty: 60 draws of the parameters below, each shared by 2 runs" in text
    g, later = u["gates"]
    # `later` is still open at the horizon in the runs where `only` passed: not a 0 % there
    n = sum(k.value in ("open", "pending") for k in res.kinds["later"])
    assert later["stage"] == "later" and later["undecided_runs"] == n > 0
    assert any(x.startswith("later* ") for x in text.splitlines())
    assert f"counted here as not passing: later ({n})" in text
    row = next(
        line
        for line in text[text.index("by source of uncertainty") :].splitlines()
        if line.startswith("only ")
    )
    assert row.split() == [
        "only",
        _pct(g["p_pass"]),
        _interval(*g["monte_carlo_interval95"]),
        _interval(*g["parameter_range90"]),
        f"{g['parameter_share']:.0%}",
    ]
    members = u["metrics"]["split"]["members"]
    line = next(x for x in text.splitlines() if x.startswith("members") and "%" in x)
    sd_par = np.sqrt(members["variance"]["parameters"])
    assert f"{sd_par:,.0f}" in line and line.rstrip().endswith(f"{members['parameter_share']:.0%}")
    assert members["parameter_share"] > 0.8  # the inflow's range dwarfs the runs' noise


def test_the_text_section_keeps_to_80_columns(drawn) -> None:
    text = _text(drawn[1], width=80)
    part = text[text.index("uncertainty:") : text.index("`--sensitivity` says")]
    assert max(len(line.rstrip()) for line in part.splitlines()) <= 80


def test_the_html_report_has_the_split_how_to_read_it_and_the_sensitivity(drawn) -> None:
    _, res, page, _ = drawn
    doc = res.to_dict()
    g, _ = doc["uncertainty"]["gates"]
    how = page[page.index("<h2>How sure") : page.index("<h2>", page.index("<h2>How sure") + 1)]
    assert "Read a row as" in how and "Monte Carlo error" in how
    row = re.search(r"<tr><td><b>only</b></td>(.*?)</tr>", how, re.S)
    assert row is not None
    assert _interval(*g["monte_carlo_interval95"]) in row.group(1)
    assert _interval(*g["parameter_range90"]) in row.group(1)
    # which parameter moves the gate: the sensitivity's strongest first
    sens, _ = doc["sensitivity"]["gates"]
    n = doc["uncertainty"]["gates"][1]["undecided_runs"]
    assert f"{n} undecided run(s) counted as not passing" in how
    top = sens["parameters"][0]
    assert top["parameter"] == "acquisition.organic_per_day"
    table = how[how.index("Sensitivity") :]
    first = re.search(r"<tr><td><b>only</b></td><td><code>(.*?)</code></td>", table)
    assert first is not None and first.group(1) == top["parameter"]
    assert f"{top['rank_correlation']:+.2f}" in table
    assert "uncertainty of the 3 parameter(s) given as distributions" in page


def test_retention_draws_are_summarised_not_listed(drawn) -> None:
    _, _, page, text = drawn
    rows = np.array(ROWS)
    cell = re.search(r"<code>draws</code></td><td><code>(.*?)</code>", page)
    assert cell is not None and cell.group(1).startswith("4 joint draws · ")
    for i, name in enumerate(("alpha", "beta", "c")):
        m = re.search(rf"{name} mean ([\d.]+) \(90%: ([\d.]+)–([\d.]+)\)", cell.group(1))
        assert m is not None, cell.group(1)
        col = rows[:, i]
        expected = (col.mean(), np.quantile(col, 0.05), np.quantile(col, 0.95))
        assert [float(x) for x in m.groups()] == pytest.approx(expected, rel=6e-3)
    assert f"retention.draws: {cell.group(1)}" in " ".join(text.split())
    assert "[[" not in page and "(1.0, 2.0, 1.2)" not in page
    # the point values `draws` replaces are not shown as if they were used
    assert "<code>alpha</code></td><td><code>drawn from retention.draws (below)" in page
    assert "<code>early_quit_share</code>" not in page  # bdw has none
    assert (
        "<code>organic_per_day</code></td><td><code>uniform from 5 to 40 · 90%: 6.75–38.2" in page
    )


def test_a_distributions_range_is_its_quantiles() -> None:
    from scipy.stats import truncnorm

    d = parse({"mean": 1.5, "sd": 0.4, "min": 0.5}, (0.0, 1e6))
    a, b = (0.5 - 1.5) / 0.4, (1e6 - 1.5) / 0.4
    for q in (0.05, 0.5, 0.95):
        assert d.quantile(q) == pytest.approx(truncnorm.ppf(q, a, b, 1.5, 0.4), rel=1e-9)
    assert "at most" not in d.words() and "at least 0.5" in d.words()
    xs = [3.0, 1.0, 2.0, 10.0, 4.0]
    for q in (0.05, 0.3, 0.95):
        assert quantile(xs, q) == pytest.approx(float(np.quantile(xs, q)))


def test_the_retention_models_parameters_are_the_fitters() -> None:
    assert {str(m): spec.names for m, spec in SPECS.items()} == dict(RETENTION_PARAMETERS)


@pytest.mark.parametrize("entry", ["__main__", "cli"])
def test_sop_validate_reads_a_scenario_without_numpy(tmp_path, entry) -> None:
    """Both entry points (the quick one and click's) check scenarios, with distributions and
    joint draws, without importing NumPy (the probe prints whether it was, last on stderr)."""
    (tmp_path / "u.yaml").write_text(UNCERTAIN, encoding="utf-8")
    bad = UNCERTAIN.replace("[1.0, 2.0, 1.2]", "[1.0, 2.0]")
    (tmp_path / "bad.yaml").write_text(bad, encoding="utf-8")
    probe = (
        "import sys, os, atexit; _exit = os._exit;"
        " say = lambda: print('numpy' in sys.modules, file=sys.stderr);"
        " os._exit = lambda c: (say(), _exit(c)); atexit.register(say);"
    )
    for name, code in (("u.yaml", 0), ("bad.yaml", 1), (str(SCENARIO), 0)):
        res = subprocess.run(
            [sys.executable, "-c", f"{probe} sys.argv[0] = 'sop'; from sop.{entry} import main;"
             " main()", "validate", str(tmp_path / name)],
            capture_output=True, text=True, timeout=60, env=dict(os.environ), cwd=ROOT,
            check=False,
        )  # fmt: skip
        assert res.returncode == code, res.stdout + res.stderr
        assert res.stderr.splitlines()[-1] == "False", res.stderr
        if code:
            assert "SOP287" in res.stdout and "takes 3" in res.stdout
