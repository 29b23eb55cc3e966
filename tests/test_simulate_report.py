"""`sop simulate` says honestly what its runs show: undecided gates as undecided, late passes,
intervals on every share, which comparison falls short, calendar dates, labels that do not
overlap, the scenario as assumptions, the playbook's language and its Chinese in any browser,
and an exit code that a rare break in a few hundred runs does not flip.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import shlex
import textwrap
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console
from sop.cli import main
from sop.engine.core.fonts import FAMILY, can_subset, embedded_css, slices
from sop.engine.core.language import HTML_LANG, is_han, text_language
from sop.engine.core.status import ExitCode
from sop.engine.sim.montecarlo import GateResult, SimOptions, SimResult, simulate
from sop.engine.sim.render import fan_figure, to_html, to_text
from sop.engine.sim.scenario import Scenario, load_scenario
from sop.engine.sim.summary import GateOutcome, expect_summary
from sop.engine.validate import load_playbook

from tests.conftest import PLAYBOOKS, REFERENCE

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = PLAYBOOKS / "scenarios" / "community-lifecycle.yaml"


def _pb(tmp_path: Path, text: str):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    res = load_playbook(str(p))
    assert res.playbook is not None, res.diagnostics
    return res.playbook, p


def _wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval, written out here independently of the engine."""
    z = 1.96  # the engine's z, as published intervals round it
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _text(res: SimResult, **kw) -> str:
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    to_text(res, console, **kw)
    return console.export_text()


# `days_in_stage` gates are deterministic: every run passes on the same day
TIMED = """\
    playbook: timed
    timezone: Asia/Shanghai
    community: {start: 2026-03-02}
    roles: {ops: {headcount: 1}}
    defaults: {owner: ops}
    stages:
      quick:
        exit: {when: days_in_stage >= 3, deadline: {after: 10d, then: {alert: ops}}}
      slow:
        after: quick
        exit: {when: days_in_stage >= 12, deadline: {after: 5d, then: {extend: 20d}}}
      long:
        after: slow
        exit: {when: days_in_stage >= 30, deadline: {after: 40d, then: {abort: true}}}
      last:
        after: long
        exit: {when: members >= 1}
    """


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory):
    pb, _ = _pb(tmp_path_factory.mktemp("timed"), TIMED)
    return pb, simulate(pb, Scenario(), SimOptions(runs=6, days=30, seed=1))


def test_a_gate_the_horizon_cuts_short_is_undecided_never_zero(timed) -> None:
    pb, res = timed
    by = {g.stage: g for g in res.gates}
    # quick passes on day 3, slow late on day 15 (its deadline was day 8), long opens on day 15
    # and needs 30 days: the 30-day horizon ends it open, and `last` is not reached yet
    long, last = by["long"], by["last"]
    assert long.outcomes == {GateOutcome.OPEN: 6} and long.undecided == 6
    assert last.outcomes == {GateOutcome.PENDING: 6} and last.entered == 0
    assert long.by_deadline.low == 0.0 and long.by_deadline.high == 1.0
    doc = res.as_dict()
    gate = next(g for g in doc["gates"] if g["stage"] == "long")
    assert gate["decided"] is False and gate["p_pass_max"] == 1.0
    assert gate["outcomes"]["open"] == 6 and gate["interval95"] == [0.0, 1.0]
    assert doc["stages"]["last"]["not_reached"] == {"within_horizon": 6, "path_not_taken": 0}
    text = _text(res)
    row = next(line for line in text.splitlines() if line.startswith("long"))
    assert "undecided" in row and "0.0%" not in row
    assert "gate of long: undecided in 6 of 6 runs at the horizon" in text
    page = to_html(res, pb)
    cells = re.search(r'<tr data-stage="long">(.*?)</tr>', page, re.S)
    assert cells is not None
    p_cells = re.findall(r'<td class="p">(.*?)</td>', cells.group(1))
    assert p_cells[:2] == ["undecided", "undecided"]  # P, and P if entered


def test_late_passes_are_counted_with_how_late(timed) -> None:
    _, res = timed
    slow = next(g for g in res.gates if g.stage == "slow")
    # entered day 3, passed at the check of day 15 (12 days in), deadline 5 days: 7 days late
    assert slow.outcomes == {GateOutcome.LATE: 6} and slow.passed == 0
    assert slow.median_days_late == 7.0
    assert slow.late.k == 6 and slow.late.interval == pytest.approx(_wilson(6, 6))
    gate = next(g for g in res.as_dict()["gates"] if g["stage"] == "slow")
    assert gate["late"]["runs"] == 6 and gate["late"]["median_days_late"] == 7.0
    assert "gate of slow: passed late in 6 of 6" in _text(res)
    assert "passed late 6" in to_html(res, timed[0])


def test_a_path_not_taken_is_decided_and_apart_from_not_yet(tmp_path) -> None:
    text = """\
        playbook: paths
        timezone: UTC
        roles: {ops: {headcount: 1}}
        defaults: {owner: ops}
        stages:
          open:
            exit: {when: days_in_stage >= 2, deadline: {after: 5d, then: {goto: rescue}}}
          rescue:
            rescue: true
            exit: {when: members >= 1, then: {goto: next}}
          next:
            after: open
            exit: {when: members >= 100000000, deadline: {after: 4d, then: {abort: true}}}
        """
    pb, _ = _pb(tmp_path, text)
    res = simulate(pb, Scenario(), SimOptions(runs=4, days=20, seed=1))
    by = {g.stage: g for g in res.gates}
    assert by["rescue"].outcomes == {GateOutcome.NOT_TAKEN: 4} and by["rescue"].undecided == 0
    assert by["next"].outcomes == {GateOutcome.FAILED: 4}
    assert res.stage_timing()["rescue"]["not_reached"] == {
        "within_horizon": 0,
        "path_not_taken": 4,
    }
    assert "path not taken 4" in _text(res)


def test_the_conditional_probability_has_its_wilson_interval() -> None:
    pb = load_playbook(str(REFERENCE)).playbook
    res = simulate(pb, load_scenario(str(SCENARIO)), SimOptions(runs=16, days=140, seed=3))
    growth = next(g for g in res.gates if g.stage == "growth")
    k, n = growth.passed, growth.entered
    assert 0 < k < n  # some runs pass by the deadline, some do not: the case worth an interval
    assert growth.if_entered.interval == pytest.approx(_wilson(k, n))
    doc = next(g for g in res.as_dict()["gates"] if g["stage"] == "growth")
    lo, hi = doc["if_entered"]["interval95"]
    assert lo <= k / n <= hi and (lo, hi) == pytest.approx(_wilson(k, n), abs=1e-4)
    stage = res.stage_timing()["deepening"]
    e = stage["entered"]
    assert stage["p_entered_interval95"] == pytest.approx(_wilson(e, 16), abs=1e-4)
    row = next(line for line in _text(res).splitlines() if line.startswith("growth"))
    assert f"{100 * k / n:.1f}%" in row


def test_which_comparison_falls_short_at_the_deadline(tmp_path) -> None:
    text = """\
        playbook: short
        timezone: UTC
        roles: {ops: {headcount: 1}}
        defaults: {owner: ops}
        stages:
          grow:
            exit:
              when: members >= 1000000 and days_in_stage >= 2 and avg(members, 3d) >= 1000000
              deadline: {after: 10d, then: {abort: true}}
        """
    pb, _ = _pb(tmp_path, text)
    res = simulate(pb, Scenario(), SimOptions(runs=5, days=20, seed=2))
    (gate,) = res.gates
    assert gate.outcomes == {GateOutcome.FAILED: 5}
    members, days_in, window = gate.shortfalls
    assert (members.metric, members.checked, members.false) == ("members", 5, 5)
    # read at the deadline's check: midnight of day 10, so the metrics of day 9
    series = res.metrics[:, :, res.metric_names.index("members")]
    assert members.median_shortfall == pytest.approx(float(np.median(1_000_000 - series[:, 9])))
    assert (days_in.metric, days_in.false) == ("days_in_stage", 0)  # that clause held
    # a window reads the history up to that day: the mean of days 7, 8 and 9
    assert (window.metric, window.false) == ("avg(members, 3d)", 5)
    mean3 = series[:, 7:10].mean(axis=1)
    assert window.median_shortfall == pytest.approx(float(np.median(1_000_000 - mean3)))
    page = to_html(res, pb)
    assert '<h3 data-stage="grow">' in page and "<code>members &gt;= 1000000</code>" in page
    assert "fell short in 5 of 5 (100.0%" in _text(res)


def test_the_verdict_tolerates_a_rare_break_but_not_a_systematic_one() -> None:
    rare = [(331, 49, "a member received 7 messages (cap 6)")]
    assert not expect_summary(rare, 400).exceeds  # one run in 400: 0.04–1.4 %
    assert expect_summary(rare, 400, tolerance=0.0).exceeds
    many = [(r, 3, "x") for r in range(12)]
    assert expect_summary(many, 400).exceeds  # 3 % of runs: the interval is above 1 %
    # one run that breaks twice counts once
    assert expect_summary([(0, 1, "a"), (0, 2, "b")], 10).broken.k == 1

    def result(failures: list[tuple[int, int, str]], runs: int) -> SimResult:
        gate = GateResult("s", "members >= 1", None, runs, runs, runs, (0.9, 1.0), None)
        return SimResult(
            playbook="t",
            scenario=Scenario(),
            options=SimOptions(runs=runs, days=1),
            metric_names=[],
            metrics=np.zeros((runs, 1, 0)),
            stage_ids=["s"],
            stage_entered=np.zeros((runs, 1)),
            stage_passed=np.zeros((runs, 1)),
            outcomes=[],
            expect_failures=failures,
            member_days=0,
            seconds=0.0,
            gates=[gate],
        )

    assert result(rare, 400).exit_code() == ExitCode.OK
    assert result(rare, 400).as_dict()["verdict"]["exit_code"] == 0
    assert result(rare, 400).exit_code(expect_tolerance=0.0) == ExitCode.FINDINGS
    assert result(many, 400).exit_code() == ExitCode.FINDINGS
    reasons = result(many, 400).verdict()
    assert len(reasons) == 1 and "12 of 400 runs" in reasons[0]


def test_the_cli_exit_code_follows_the_tolerance_and_says_why(tmp_path) -> None:
    text = """\
        playbook: capped
        timezone: UTC
        roles: {ops: {headcount: 1}}
        defaults: {owner: ops}
        stages:
          open:
            actions:
              a: {cron: "0 9 * * *", do: post, text: a}
              b: {cron: "0 19 * * *", do: post, text: b}
            exit: {when: members >= 100000000}
        expect:
          - {max_messages_per_member_per_day: 1}
        """
    _, path = _pb(tmp_path, text)
    run = CliRunner().invoke
    args = ["simulate", str(path), "--runs", "4", "--days", "5", "--workers", "1"]
    broken = run(main, args)
    assert broken.exit_code == 1, broken.output
    assert "exit 1:" in broken.output and "broken in 4 of 4 runs" in broken.output
    assert run(main, [*args, "--expect-tolerance", "1"]).exit_code == 0
    doc = json.loads(run(main, [*args, "--format", "json"]).stdout)
    assert doc["verdict"]["exit_code"] == 1 and doc["expect_summary"]["runs"] == 4
    # --min-probability on a gate the horizon leaves undecided: no pass, and it says so
    low = run(main, [*args, "--expect-tolerance", "1", "--min-probability", "0.5"])
    assert low.exit_code == 1 and "undecided at the horizon" in low.output


def test_simulate_help_documents_the_exit_codes() -> None:
    out = CliRunner().invoke(main, ["simulate", "--help"]).output
    assert "Exit codes:" in out and "--expect-tolerance" in out
    for code in ("0  ", "1  ", "2  "):
        assert f"\n    {code}" in out


def test_the_readme_simulate_example_exits_0(tmp_path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("## Simulate") :]
    block = block[block.index("```bash") + 7 : block.index("```", block.index("```bash") + 7)]
    commands = block.replace("\\\n", " ").strip().splitlines()
    argv = shlex.split(commands[0])
    assert argv[:2] == ["sop", "simulate"] and "--seed" in argv and "--runs" in argv
    argv[argv.index("--report") + 1] = str(tmp_path / "sim.html")
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        r = CliRunner().invoke(main, argv[1:])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.output
    assert "exit 1" not in r.output and (tmp_path / "sim.html").stat().st_size > 0


# -- the HTML report ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    pb = load_playbook(str(REFERENCE)).playbook
    res = simulate(pb, load_scenario(str(SCENARIO)), SimOptions(runs=12, days=150, seed=5))
    page = to_html(res, pb)
    out = tmp_path_factory.mktemp("report") / "report.html"
    out.write_text(page, encoding="utf-8")
    return pb, res, page, out


def test_charts_run_on_calendar_dates_from_the_playbooks_start(timed) -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    pb, res = timed
    assert res.start == date(2026, 3, 2) and res.as_dict()["start"] == "2026-03-02"
    fig = fan_figure(res, "members", pb)
    try:
        ax = fig.axes[0]
        lo, hi = (mdates.num2date(x).date() for x in ax.get_xlim())
        assert (lo, hi) == (date(2026, 3, 2), date(2026, 3, 2) + timedelta(days=29))
        fig.canvas.draw()
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        # dates, not day numbers: days of the month under a `2026-Mar` offset
        assert "08" in ticks and "Mar" in ax.xaxis.get_offset_text().get_text()
        # a dotted line and a label at each stage's median entry date
        labels = {t.get_text(): t for t in ax.texts if (t.get_gid() or "").startswith("stage-")}
        assert set(labels) == {"quick", "slow", "long"}
        entries = {
            np.datetime64(line.get_xdata()[0], "D").item()
            for line in ax.lines
            if line.get_linestyle() == ":"
        }
        assert {date(2026, 3, 2), date(2026, 3, 5), date(2026, 3, 17)} <= entries
    finally:
        plt.close(fig)
    assert "2026-03-02 to 2026-03-31" in to_html(res, pb)


CROWDED = """\
    playbook: crowded
    timezone: UTC
    roles: {ops: {headcount: 1}}
    defaults: {owner: ops}
    stages:
      a1: {exit: {when: members >= 200 or days_in_stage >= 1}}
      a2: {after: a1, exit: {when: members >= 200 or days_in_stage >= 1}}
      a3: {after: a2, exit: {when: members >= 203 or days_in_stage >= 1}}
      a4: {after: a3, exit: {when: members >= 206 or days_in_stage >= 1}}
      a5: {after: a4, exit: {when: members >= 209 or days_in_stage >= 1}}
      a6: {after: a5, exit: {when: members >= 212 or days_in_stage >= 1}}
      a7: {after: a6, exit: {when: members >= 5000}}
    """


def test_threshold_and_stage_labels_never_overlap(tmp_path) -> None:
    import matplotlib.pyplot as plt

    pb, _ = _pb(tmp_path, CROWDED)
    res = simulate(pb, Scenario(), SimOptions(runs=3, days=40, seed=1))
    fig = fan_figure(res, "members", pb)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        placed = [t for t in ax.texts if (t.get_gid() or "").startswith(("threshold-", "stage-"))]
        thresholds = [t.get_text() for t in placed if t.get_gid().startswith("threshold-")]
        # one label per value: the two stages that share 200 share a label
        assert thresholds[0] == "a1, a2 ≥ 200" and len(thresholds) == 6
        assert sum(t.get_gid().startswith("stage-") for t in placed) == 7
        boxes = [t.get_window_extent(renderer) for t in placed]
        for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
            assert not a.overlaps(b), (placed[i].get_text(), placed[j].get_text())
        # the test has teeth: at their own values the labels 3 members apart would overlap
        height = boxes[0].height
        y200, y203 = (ax.transData.transform((0, v))[1] for v in (200, 203))
        assert y203 - y200 < height
        # and nothing sits on the axis' tick labels
        ticks = [t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_text()]
        assert not any(a.overlaps(b) for a in boxes for b in ticks)
    finally:
        plt.close(fig)


def test_the_report_shows_outcomes_shortfalls_and_the_scenario_as_assumptions(reference) -> None:
    page = reference[2]
    assert "<script" not in page.lower() and not re.search(r"""(src|href)=["']https?:""", page)
    # every gate row: both probabilities with intervals and the outcome bar with its counts
    growth = re.search(r'<tr data-stage="growth">(.*?)</tr>', page, re.S)
    assert growth is not None and 'class="bar"' in growth.group(1)
    assert re.search(r"\d+\.\d% \[\d+\.\d–\d+\.\d\]", growth.group(1))
    assert "passed by the deadline" in growth.group(1)
    deepening = re.search(r'<tr data-stage="deepening">(.*?)</tr>', page, re.S)
    assert deepening is not None and "undecided" in deepening.group(1)
    assert "Where the gates fall short" in page and '<h3 data-stage="deepening">' in page
    # the scenario, value by value with what it means, and what it is: an assumption
    assert "<code>organic_per_day</code></td><td><code>22</code></td>" in page
    assert "Mean organic joins a day (Poisson)." in page
    assert "assumptions, not measurements" in page
    assert page.count("<svg") >= 5


def test_the_pages_language_follows_the_playbook(reference, timed) -> None:
    assert text_language(["职场成长社群 · 全生命周期 SOP"]) == "zh"
    assert text_language(["Weekly growth review", "欢迎"]) == "en"
    assert text_language(["SOP"]) == "en" and is_han("群") and not is_han("a")
    assert reference[2].startswith('<!doctype html>\n<html lang="zh-CN">')
    assert to_html(timed[1], timed[0]).startswith('<!doctype html>\n<html lang="en">')
    from sop.engine.web import i18n

    assert i18n.HTML_LANG is HTML_LANG  # the dashboard tags its pages from the same table


def test_the_reports_chinese_comes_with_its_own_font(reference) -> None:
    _, _, page, _ = reference
    style = page[: page.index("</style>")]
    body = page[page.index("<body>") :]
    han = {ord(c) for c in body if is_han(c)}
    assert len(han) > 20
    faces = re.findall(r"@font-face\{(.*?)\}", style)
    assert faces and all(
        f"font-family:'{FAMILY}'" in f and "data:font/woff2;base64," in f for f in faces
    )
    covered = set()
    for face in faces:
        for part in re.search(r"unicode-range:([^;}]+)", face).group(1).split(","):
            lo, _, hi = part.removeprefix("U+").partition("-")
            covered |= set(range(int(lo, 16), int(hi or lo, 16) + 1))
    assert han <= covered
    # charts are outlines with ids, numbers and dates: no text element, no Chinese at all
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        assert "<text" not in svg and not any(is_han(c) for c in svg)


def test_the_font_is_cut_to_the_characters_used_or_embedded_by_slice() -> None:
    text = "职场成长社群"
    whole = embedded_css(text, subset=False)
    used = [s for s in slices() if any(s.covers(ord(c)) for c in text)]
    assert whole.count("@font-face") == len(used) >= 1
    assert embedded_css("only latin text") == ""
    if not can_subset():
        pytest.skip("fontTools cannot read WOFF2 here (no brotli module): slices are embedded")
    cut = embedded_css(text, subset=True)
    assert len(cut) * 4 < len(whole)  # a few glyphs, not whole slices
    ranges = re.findall(r"unicode-range:([^;}]+)", cut)
    assert {c for r in ranges for c in r.split(",")} == {f"U+{ord(c):x}" for c in text}


def test_the_report_renders_its_chinese_in_a_browser_without_cjk_fonts(reference) -> None:
    from tests.test_web_browser import ARGS, CHROMIUM, SCREENS, _browser_or_skip

    sync_playwright = _browser_or_skip()
    pb, _, _, path = reference
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.extend([m.text] if m.type == "error" else []))
            page.on("requestfailed", lambda r: errors.append(r.url))
            page.goto(path.as_uri())
            assert page.get_attribute("html", "lang") == "zh-CN"
            title = page.locator("h1").inner_text()
            assert title == pb.title
            han = "".join(c for c in title if is_han(c))
            loaded = page.evaluate(
                "(t) => document.fonts.ready"
                f".then(() => document.fonts.check('16px \"{FAMILY}\"', t))",
                han,
            )
            assert loaded
            # drawn in the embedded face, as wide as Chinese: no row of empty boxes
            width = page.evaluate(
                "(t) => { const c = document.createElement('canvas').getContext('2d');"
                f" c.font = '20px \"{FAMILY}\"'; return c.measureText(t).width; }}",
                han[:4],
            )
            assert 75 <= width <= 85
            SCREENS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENS / "report-zh.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors


# -- the forecasts of issue 12: exits, targets, incidents, segments, channels, workload ----------


def _p(d: dict) -> str:
    """A share as both outputs print it, written out from the JSON document's numbers."""
    lo, hi = d["interval95"]
    return f"{100 * d['p']:.1f}% [{100 * lo:.1f}–{100 * hi:.1f}]"


@pytest.fixture(scope="module")
def parents():
    pb = load_playbook(str(PLAYBOOKS / "parent-community.yaml")).playbook
    sc = load_scenario(str(PLAYBOOKS / "scenarios" / "parent-community.yaml"))
    res = simulate(pb, sc, SimOptions(runs=6, days=90, seed=4))
    return pb, res, res.to_dict()


def _row(page: str, attr: str, value: str) -> str:
    m = re.search(rf'<tr [^>]*data-{attr}="{re.escape(value)}"[^>]*>(.*?)</tr>', page, re.S)
    assert m is not None, (attr, value)
    return m.group(1)


def test_the_report_shows_exits_targets_and_incidents_from_the_document(parents) -> None:
    pb, res, doc = parents
    page, text = to_html(res, pb), _text(res, checkpoints=(30, 60))
    growth = next(x for x in doc["exits"] if x["stage"] == "growth")
    assert len(growth["exits"]) == 2  # success -> deepening, decline -> dissolution
    for ex in growth["exits"]:
        cells = _row(page, "exit", ex["exit"])
        assert _p(ex) in cells and f"→ <b>{ex['goto'] or 'deepening'}</b>" in cells
    assert "decline → dissolution" in text and "exits: P(a stage is left by each exit)" in text
    assert doc["targets"] and doc["incidents"]
    for t in doc["targets"]:
        cells = _row(page, "target", t["metric"])
        assert _p(t["p_met"]) in cells and _p(t["p_reached"]) in cells
        judged = date.fromisoformat(doc["start"]) + timedelta(days=t["judged_day"])
        assert judged.isoformat() in cells and f"day {t['due_day']}" in cells
    block = text[text.index("targets: P(met") :]
    for t in doc["targets"]:
        assert f"{100 * t['p_met']['p']:.1f}%" in block
    for i in doc["incidents"]:
        assert _p(i["triggered"]) in _row(page, "incident", i["incident"])
        assert i["incident"] in text[text.index("incidents: P(detect") :]


def test_the_report_shows_segments_channels_and_workload_from_the_document(parents) -> None:
    pb, res, doc = parents
    page, text = to_html(res, pb), _text(res, checkpoints=(30, 60))

    def spread(q: dict) -> str:
        return f"{q['p50']:,.0f} [{q['p5']:,.0f}–{q['p95']:,.0f}]"

    assert doc["segments"]
    for name, series in doc["segments"].items():
        i = series["days"].index(29)  # day 30: the close of the 30th day
        q = {k: series[k][i] for k in ("p5", "p50", "p95")}
        if all(float(v).is_integer() or v >= 10 for v in q.values()):
            assert spread(q) in _row(page, "segment", name)
    for name, c in doc["channels"]["channels"].items():
        if not c["declared"]:
            continue
        cells = _row(page, "channel", name)
        assert f"{100 * c['planned_share']:.1f}%" in cells
        gap = 100 * (c["share"]["p50"] - c["planned_share"])
        assert f"{gap:+.1f} pp" in cells
        assert f"{100 * c['share']['p50']:.1f}%" in cells
    for role, w in doc["workload"].items():
        cells = _row(page, "role", role)
        assert f"<td>{w['capacity']:g}</td>" in cells and _p(w["over_capacity"]) in cells
        assert {"tasks_per_day", "share_of_days_over", "days_over"} <= set(w)
        assert f"{100 * w['over_capacity']['p']:.1f}%" in text[text.index("staff workload") :]
    for title in ("segments:", "channels:", "metrics by channel", "staff workload"):
        assert title in text


def test_forecast_sections_keep_to_80_columns(parents) -> None:
    _, res, _ = parents
    console = Console(file=io.StringIO(), width=80, record=True, color_system=None)
    to_text(res, console)
    text = console.export_text()
    new = text[text.index("exits: P(") : text.index("metrics p50")]
    new += text[text.index("targets: P(") :]
    assert max(len(line.rstrip()) for line in new.splitlines()) <= 80
    assert "p50 [p5–p95]" in text  # a title's brackets are not read as a style


def test_forecast_sections_are_absent_without_their_constructs(timed) -> None:
    pb, res = timed
    doc = res.to_dict()
    assert not (doc["targets"] or doc["incidents"] or doc["segments"] or doc["channels"])
    page, text = to_html(res, pb), _text(res)
    for h2 in ("Exits", "Targets", "Incidents", "Segments", "Channels"):
        assert f"<h2>{h2}</h2>" not in page
    for title in ("exits:", "targets:", "incidents:", "segments:", "channels:"):
        assert title not in text
    assert "<h2>Staff workload</h2>" in page and "staff workload" in text  # roles: ops
