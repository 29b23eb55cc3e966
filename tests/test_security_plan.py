"""Untrusted playbooks on the plan side: bounded checks and plans, right keys, safe output."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import resource
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sop.cli import main
from sop.engine.core.catalog import MESSAGE_KINDS
from sop.engine.core.schedule import cron_instants
from sop.engine.plan import render as render_plan
from sop.engine.plan.diff import diff, diff_text
from sop.engine.plan.timeline import PlanError, PlanOptions, lifecycle, make_plan
from sop.engine.program import Occurrence, Program, StageWindow
from sop.engine.validate import Options, load_playbook, validate_file

from tests.conftest import REFERENCE, ROOT, position
from tests.test_plan_properties import playbooks

RUN_CLI = "import sys; from sop.cli import main; main(sys.argv[1:])"
CLEAN_ENV = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def program(tmp_path: Path, text: str) -> Program:
    res = load_playbook(str(write(tmp_path, text)))
    assert res.playbook is not None, [(d.code, d.message) for d in res.diagnostics]
    return Program(res.playbook)


def sop(*args: str) -> tuple[int, str]:
    r = CliRunner(env={"COLUMNS": "240"}).invoke(main, list(args), catch_exceptions=False)
    return r.exit_code, r.output


def firings(expr: str, days: int = 800) -> list[datetime]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return cron_instants(expr, start, start + timedelta(days=days), ZoneInfo("UTC"))


# -- cron: W, L and the combinations cron implementations disagree on -------------------------


def test_15W_fires_on_the_weekday_nearest_the_15th_not_on_the_15th():
    days = [t.date() for t in firings("0 9 15W * *", days=365)]
    assert date(2026, 8, 15) not in days  # a Saturday
    assert date(2026, 8, 14) in days  # the Friday before
    assert date(2026, 2, 16) in days and date(2026, 2, 15) not in days  # Sunday → Monday


def test_W_never_leaves_the_month():
    days = [t.date() for t in firings("0 9 1W * *", days=365)]
    assert date(2026, 8, 3) in days  # Saturday the 1st → Monday the 3rd, not Friday July 31st
    days = [t.date() for t in firings("0 9 31W * *", days=365)]
    assert date(2026, 5, 29) in days  # Sunday the 31st → Friday the 29th
    assert date(2026, 2, 27) in days  # no 31st: the last day (Saturday 28th) → Friday 27th


def test_last_weekday_of_the_month_fires():
    days = [t.date() for t in firings("0 9 * * L5", days=365)]
    assert len(days) == 12 and all(
        d.weekday() == 4 and (d + timedelta(7)).month != d.month for d in days
    )


@pytest.mark.parametrize(
    "expr",
    [
        "0 9 15W * *",
        "30 8 1W */2 *",
        "0 9 31W * *",
        "0 9 * * L5",
        "0 9 * * L0,L3",
        "0 9 * * L5,1#1",
        "0 9 * * 1#5",
        "0 9 ? * 1",
        "0 9 L,15 * *",
        "*/30 7 29W 2 *",
    ],
)
def test_cron_matcher_agrees_with_croniter_on_W_L_and_question_mark(expr: str):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=800)
    it = croniter(expr, start - timedelta(seconds=1))
    theirs = []
    while (t := it.get_next(datetime)) < end:
        theirs.append(t)
    assert firings(expr) == theirs


@pytest.mark.parametrize("cron", ["0 9 15W * 1", "0 9 1W * mon-fri"])
def test_W_with_a_day_of_week_is_refused_at_its_cron(check, cron: str):
    res, text = check(
        f"""\
        playbook: w
        timezone: UTC
        roles: {{ops: {{headcount: 1}}}}
        stages:
          s:
            actions:
              pay: {{cron: "{cron}", do: task, owner: ops, text: x}}
        """
    )
    (d,) = [d for d in res.diagnostics if d.code == "SOP230"]
    assert (d.line, d.column) == position(text, f'"{cron}"')
    assert "`W`" in d.message


# -- goto into a running stage ------------------------------------------------------------------

GOTO_RUNNING = """\
    playbook: g
    timezone: UTC
    roles: {ops: {headcount: 1}}
    backends: {group: {type: console}}
    defaults: {backend: group, owner: ops}
    stages:
      a:
        duration: {min: 5d}
        exit: {when: members >= 0}
        actions:
          tick: {cron: "0 9 * * *", do: post, text: x}
          kickoff: {day: 0, time: "10:00", do: post, text: k}
      b:
        duration: {min: 2d}
        exit: {when: members >= 0, then: {goto: a}}
        actions:
          tock: {cron: "0 10 * * *", do: post, text: y}
    """


def test_a_goto_into_a_running_stage_joins_it_and_keys_stay_unique(tmp_path):
    tl = make_plan(program(tmp_path, GOTO_RUNNING), PlanOptions(start=date(2027, 1, 4), days=8))
    keys = [o.key for o in tl.occurrences]
    assert len(keys) == len(set(keys))
    assert [w for w in tl.windows if w.stage == "a"] == [
        StageWindow("a", tl.start, tl.start + timedelta(days=5))
    ]
    assert ("b", "goto", "a") in [(t.stage, t.event, t.detail) for t in tl.transitions]
    assert [t.event for t in tl.transitions if t.stage == "a"] == ["started", "passed"]
    assert sum(o.action == "kickoff" for o in tl.occurrences) == 1


def test_a_goto_into_a_finished_stage_enters_it_again_with_new_keys(tmp_path):
    text = GOTO_RUNNING.replace("min: 5d", "min: 1d")
    tl = make_plan(program(tmp_path, text), PlanOptions(start=date(2027, 1, 4), days=8))
    kickoffs = [o for o in tl.occurrences if o.action == "kickoff"]
    assert len(kickoffs) == 2 and kickoffs[0].key != kickoffs[1].key


def test_a_before_action_near_the_horizon_waits_for_its_stage_to_really_run(tmp_path):
    # the stage ends on day 21: its cron on day 22 never fires, so the action 2 days before it
    # must not appear in a 20-day plan either (it did: the short plan thought the stage ran on)
    prog = program(
        tmp_path,
        """\
        playbook: gen
        timezone: Asia/Shanghai
        roles: {ops: {headcount: 3}}
        defaults: {owner: ops}
        stages:
          s0:
            duration: {min: 16d}
            exit: {when: members >= 0}
            actions:
              a0: {day: 0, time: "00:00", do: post, text: x}
          s1:
            after: s0
            duration: {min: 5d}
            exit: {when: members >= 0}
            actions:
              a3: {cron: "0 1 * * *", do: post, text: x}
              a5: {before: a3, by: 2d, do: post, text: y}
        """,
    )
    short = make_plan(prog, PlanOptions(start=date(2026, 1, 1), days=20))
    long = make_plan(prog, PlanOptions(start=date(2026, 1, 1), days=40))
    assert [o.key for o in short.occurrences] == [
        o.key for o in long.occurrences if o.at < short.end
    ]
    assert [w.end for w in short.windows if w.stage == "s1"] == [None]  # still running at the end


# -- event chains -------------------------------------------------------------------------------


def _chain_playbook(n: int) -> str:
    lines = [
        "playbook: chain",
        "timezone: UTC",
        "roles: {ops: {headcount: 1}}",
        "stages: {s: {actions: {go: {day: 0, time: '09:00', do: task, owner: ops, text: go}}}}",
        "routines:",
        "  a0: {on: member.joined, do: message, to: member, owner: ops, text: hi}",
    ]
    lines += [
        f"  a{i}: {{after: a{i - 1}, delay: 1m, do: message, to: member, owner: ops, text: x}}"
        for i in range(1, n)
    ]
    return "\n".join(lines) + "\n"


def test_a_chain_longer_than_the_recursion_limit_is_walked_without_recursion(tmp_path):
    # validate refuses such a chain (SOP252); the Program must still not fall over on it. A
    # playbook holds at most 200 actions a map, so the recursion limit is lowered instead.
    n = 190
    pb = validate_file(str(write(tmp_path, _chain_playbook(n))), Options(plan_checks=False))
    assert pb.playbook is not None
    import inspect

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 120)  # below n frames of a recursive walk
    try:
        prog = Program(pb.playbook)
        at = datetime(2027, 1, 4, 9, tzinfo=prog.tz)
        occ = prog.on_event([], "member.joined", "m1", at)
    finally:
        sys.setrecursionlimit(limit)
    assert len(occ) == n and occ[-1].scheduled == at + timedelta(minutes=n - 1)
    assert list(prog.timed) == ["go"]  # the chain hangs off an event: none of it is timed


def test_a_cyclic_chain_ends(tmp_path):
    text = _chain_playbook(3).replace("a0: {on: member.joined", "a0: {after: a2, delay: 1m")
    pb = validate_file(str(write(tmp_path, text)), Options(plan_checks=False)).playbook
    assert pb is not None
    prog = Program(pb)
    assert list(prog.timed) == ["go"]
    assert [a.id for a, _ in prog.chain("a1")] == ["a2", "a0"]


# -- plan-based checks: bounded whatever the cron ------------------------------------------------


def _dense(actions: int) -> str:
    lines = [
        "playbook: dense",
        "timezone: Europe/Berlin",
        "roles: {ops: {headcount: 1}}",
        "backends: {group: {type: console}}",
        'defaults: {backend: group, owner: ops, quiet_hours: "22:00-08:00"}',
        "stages:",
        "  s:",
        "    actions:",
        '      tick: {cron: "* * * * *", do: post, text: x}',
    ]
    lines += [
        f"      a{i}: {{after: tick, delay: {i + 1}m, do: post, text: y}}" for i in range(actions)
    ]
    return "\n".join(lines) + "\n"


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (700 * 2**20, 700 * 2**20))


def test_plan_checks_of_an_every_minute_cron_stay_in_bounded_memory(tmp_path):
    # 31 actions a minute for 90 days are 4 million occurrences: materialised, far beyond 700 MB
    path = write(tmp_path, _dense(30))
    code = (
        "import sys, sop.engine.plan.checks as pc; pc.CHECK_BUDGET = 20_000;"
        " from sop.cli import main; main(['validate', sys.argv[1], '--format', 'json'])"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=ROOT,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    codes = {d["code"] for d in json.loads(r.stdout)["diagnostics"]}
    assert {"SOP260", "SOP301"} <= codes
    assert "Traceback" not in r.stderr


def test_SOP260_points_at_the_cron_that_fires_too_often(check, monkeypatch):
    import sop.engine.plan.checks as pc

    monkeypatch.setattr(pc, "CHECK_BUDGET", 2_000)
    res, text = check(_dense(3))
    (d,) = [d for d in res.diagnostics if d.code == "SOP260"]
    assert (d.line, d.column) == position(text, '"* * * * *"')
    assert d.severity == "warning" and "`tick`" in d.message and "2,000" in d.message
    assert "SOP260" in sop("rules")[1]


def test_the_first_crowded_day_names_its_first_messages_and_counts_the_rest(tmp_path):
    text = (
        _dense(0).replace('"* * * * *"', '"*/20 8-20 * * *"')
        + "limits: {member_messages_per_day: 30}\n"
    )
    res = validate_file(str(write(tmp_path, text)))
    (d,) = [d for d in res.diagnostics if d.code == "SOP303"]
    assert "39 messages (cap 30)" in d.message and "(19 more)" in d.message


def test_validate_days_is_bounded():
    for days in ("0", "-5", "3661"):
        code, out = sop("validate", str(REFERENCE), "--days", days)
        assert code == 2 and "3660" in out, (days, out)
    assert "1 to 3660" in sop("validate", "--help")[1]


# -- plan: ordinary mistakes are errors, and plans are bounded ----------------------------------


@pytest.mark.parametrize("start", ["9999-12-25", "0001-01-01", "2200-01-01"])
def test_a_start_date_out_of_range_is_a_clear_error(start: str):
    for verb in (["plan", str(REFERENCE)], ["diff", str(REFERENCE), str(REFERENCE)]):
        code, out = sop(*verb, "--start", start)
        assert code == 2 and out.startswith("sop: error: the plan must start between"), out


@pytest.mark.parametrize("joins", ["nan", "inf", "-1", "1e300"])
def test_joins_per_day_must_be_a_finite_count(joins: str):
    code, out = sop("plan", str(REFERENCE), "--joins-per-day", joins, "--format", "json")
    assert code == 2 and out.startswith("sop: error: --joins-per-day must be a number from 0")


def test_an_invalid_community_start_is_a_plan_error_not_a_traceback(tmp_path):
    pb = program(tmp_path, GOTO_RUNNING).playbook
    bad = dataclasses.replace(pb, community=dataclasses.replace(pb.community, start="2026-02-30"))
    with pytest.raises(PlanError, match=r"community\.start '2026-02-30' is not a real date"):
        make_plan(Program(bad), PlanOptions(days=3))


def test_a_plan_beyond_the_occurrence_bound_is_refused_before_output(tmp_path, monkeypatch):
    from sop.engine.plan import timeline

    monkeypatch.setattr(timeline, "MAX_OCCURRENCES", 500)
    path = write(tmp_path, _dense(0))
    out = tmp_path / "plan.json"
    code, text = sop("plan", str(path), "--days", "30", "--format", "json", "-o", str(out))
    assert code == 2 and "more than 500 occurrences" in text and not out.exists()


def test_slow_formats_have_a_lower_bound_than_the_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(render_plan, "MAX_ROWS", {"table": 100, "ics": 100})
    path = write(tmp_path, _dense(0))
    for fmt in ("table", "ics"):
        code, text = sop("plan", str(path), "--days", "1", "--format", fmt)
        assert code == 2 and f"--format {fmt} shows at most 100" in text
    assert sop("plan", str(path), "--days", "1", "--format", "csv")[0] == 0


class _Writes(io.StringIO):
    """A stream that remembers the size of its largest write."""

    largest = 0

    def write(self, s: str) -> int:
        self.largest = max(self.largest, len(s))
        return super().write(s)


def test_json_is_written_occurrence_by_occurrence_and_reads_as_the_whole_document():
    tl = make_plan(
        Program(load_playbook(str(REFERENCE)).playbook),
        PlanOptions(start=date(2026, 12, 1), days=120),
    )
    out = _Writes()
    render_plan.write_json(tl, out)
    text = out.getvalue()
    assert text == json.dumps(render_plan.plan_dict(tl), ensure_ascii=False, indent=2) + "\n"
    assert out.largest < len(text) / 10  # no single write of (nearly) everything


def _reference_due(prog: Program, windows: list[StageWindow], t0: datetime, t1: datetime):
    """The materialising algorithm `due()` replaced: every window, every instant, then sort."""
    out: list[Occurrence] = []
    for w in windows:
        for a in prog.actions_by_stage.get(w.stage, ()):
            root = prog.timed.get(a.id)
            if root is None or root.root.stage != w.stage:
                continue
            base, offset = root.root, root.offset
            start, end = (
                max(t0 - timedelta(days=1), w.start),
                t1 if w.end is None else min(t1, w.end),
            )
            if start >= end:
                continue
            s = base.schedule
            if hasattr(s, "expr"):
                # the root is not clipped at the window's end: an action fires on what is
                # known at its own instant (engine/program/program.py)
                lo, hi = max(start - offset, w.start), end - offset
                scheds = cron_instants(s.expr, lo, hi, prog.tz) if lo < hi else []
            else:
                scheds = prog._instants(base, w, start - offset, end - offset)
            for sched in scheds:
                at = sched + offset
                if start <= at < end:
                    occ = prog._make(a, at, None)
                    if t0 <= occ.at < t1:
                        out.append(occ)
    return sorted(out, key=lambda o: (o.at, o.action))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=playbooks(), start=st.dates(date(2026, 1, 1), date(2027, 12, 31)), days=st.integers(1, 45)
)
def test_day_by_day_occurrences_equal_the_materialised_plan(tmp_path, text, start, days):
    prog = program(tmp_path, text)
    opts = PlanOptions(start=start, days=days)
    t0, t1, lc = lifecycle(prog, opts)
    occ = make_plan(prog, opts).occurrences
    assert occ == _reference_due(prog, lc.windows(t1), t0, t1)
    assert all(o.kind not in MESSAGE_KINDS or not o.reason or o.at > o.scheduled for o in occ)


# -- safe output --------------------------------------------------------------------------------

HOSTILE = r"""
playbook: h
title: "Evil [/bold] [link=https://e.x]click[/link] \e[2J\n::error::forged"
version: "1\n::warning::v"
timezone: UTC
roles: {ops: {headcount: 1, title: "[red]ops\r\n::error::x | y"}}
backends: {group: {type: console}}
defaults: {backend: group, owner: ops}
stages:
  s:
    title: "[/bold] [link=https://e.x]click[/link]\n::error::forged \"q\" \\ ] # <b>x</b> `"
    exit: {when: members >= 0}
    actions:
      t:
        cron: "0 9 * * *"
        do: post
        title: "[/bold]\r\n::warning::x \e[31mred | cell"
        text: "hi\a\u0000there\nline two"
  end:
    after: s
    title: "end"
    actions:
      u: {cron: "0 10 * * *", do: post, text: "bye"}
"""


@pytest.fixture
def hostile(tmp_path) -> Path:
    return write(tmp_path, HOSTILE)


def _no_raw_controls(text: str) -> None:
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text and "\x00" not in text
    assert not any(line.lstrip("│ ").startswith("::") for line in text.splitlines()), text


def test_the_table_prints_titles_literally_never_as_rich_markup(hostile):
    code, out = sop("plan", str(hostile), "--days", "2")
    assert code == 0
    assert "[/bold]" in out and "[link=https://e.x]" in out
    _no_raw_controls(out)
    assert "\\e[31mred" in out and "\\r\\n::warning::x" in out


def test_the_table_written_to_a_file_is_plain_escaped_text(hostile, tmp_path):
    out = tmp_path / "t.txt"
    assert sop("plan", str(hostile), "--days", "2", "-o", str(out))[0] == 0
    text = out.read_text(encoding="utf-8")
    assert "[link=https://e.x]" in text
    _no_raw_controls(text)


def test_markdown_keeps_user_text_on_its_line_and_in_its_cell(hostile):
    code, md = sop("plan", str(hostile), "--days", "2", "--format", "markdown")
    assert code == 0
    _no_raw_controls(md)
    assert md.startswith("# Evil [/bold]") and "\\e[2J\\n::error::forged" in md.splitlines()[0]
    row = next(line for line in md.splitlines() if line.startswith("| [/bold]"))
    assert row.count(" | ") == 4 and "red \\| cell" in row  # five cells, the `|` escaped
    assert "> hi\\x07\\x00there" in md and "> line two" in md


def test_ics_replaces_control_characters_and_survives_a_newline_in_the_title(hostile):
    from icalendar import Calendar

    r = CliRunner().invoke(
        main, ["plan", str(hostile), "--days", "2", "--format", "ics"], catch_exceptions=False
    )
    assert r.exit_code == 0
    raw = r.stdout_bytes
    assert not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", raw)
    cal = Calendar.from_ical(raw)
    assert len(cal.events) == 2
    desc = str(cal.events[0]["DESCRIPTION"])
    assert "hi\ufffd\ufffdthere\nline two" in desc


def test_csv_and_json_quote_their_own_way(hostile):
    code, out = sop("plan", str(hostile), "--days", "2", "--format", "csv")
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out)))) == 2
    code, out = sop("plan", str(hostile), "--days", "2", "--format", "json", "--joins-per-day", "3")

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(out, parse_constant=no_constants)
    assert code == 0 and data["occurrences"][0]["message"].startswith("hi\x07")


def test_dot_labels_are_single_line_escaped_strings(hostile):
    code, out = sop("graph", str(hostile), "--format", "dot")
    assert code == 0
    _no_raw_controls(out)
    # every label is one DOT quoted string: quotes and backslashes inside it escaped
    assert out.count("label=") == len(re.findall(r'label="(?:[^"\\\n]|\\.)*"[;\],]', out))
    label = next(line for line in out.splitlines() if "click[/link]" in line)
    assert '\\"q\\" \\\\ ]' in label and "\\\\n::error::forged" in label  # shown, not a break
    assert "\\ngate: members >= 0" in label  # DOT's own line break before the gate


def test_mermaid_labels_cannot_close_their_quotes_or_carry_html(hostile):
    code, out = sop("graph", str(hostile), "--format", "mermaid")
    assert code == 0
    _no_raw_controls(out)
    label = next(line for line in out.splitlines() if "click[/link]" in line)
    inner = label[label.index('["') + 2 : label.rindex('"]')]
    assert '"' not in inner and "<b>" not in inner and "`" not in inner
    assert "#34;q#34;" in inner and "#60;b#62;x" in inner and "<br/>gate: members #62;= 0" in inner
    assert 'subgraph s_end["end"]' in out and "s_s --> s_end\n" in out  # `end` is Mermaid syntax


def test_graph_json_is_strict_and_keeps_the_text(hostile):
    code, out = sop("graph", str(hostile), "--format", "json")
    assert code == 0 and json.loads(out)["stages"][0]["title"].startswith("[/bold]")


def test_diff_text_shows_changed_user_text_on_one_line(tmp_path, hostile):
    old = load_playbook(str(hostile)).playbook
    new_text = HOSTILE.replace("hi\\a", "hey\\a")
    new = load_playbook(str(write(tmp_path, new_text, "new.yaml"))).playbook
    text = diff_text(diff(old, new, date(2027, 1, 4), 2))
    _no_raw_controls(text)
    (line,) = [ln for ln in text.splitlines() if ln.startswith("    text:")]
    assert "\\x07" in line and "\\nline two" in line


@pytest.mark.parametrize(
    "args",
    [
        ["plan", str(REFERENCE)],
        ["plan", str(REFERENCE), "--format", "json"],
        ["graph", str(REFERENCE)],
    ],
)
def test_a_full_stdout_is_a_clear_error_not_a_traceback(args):
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-c", RUN_CLI, *args],
            cwd=ROOT,
            env={**CLEAN_ENV, "COLUMNS": "120"},
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2 and r.stderr.startswith("sop: error: cannot write to stdout"), r.stderr


def test_a_fifo_as_output_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "plan.json"
    os.mkfifo(fifo)
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN_CLI,
            "plan",
            str(REFERENCE),
            "--format",
            "json",
            "-o",
            str(fifo),
        ],
        cwd=ROOT,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "not a regular file" in r.stderr, r.stderr
