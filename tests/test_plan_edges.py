"""Everyday edges of `plan`, `graph` and `diff`: chained member-event actions in every format,
node ids that stay distinct, and a diff that says when it shortens its list."""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap
from pathlib import Path

from click.testing import CliRunner
from sop.cli import main

CHAINED = """\
playbook: chained
timezone: Asia/Shanghai
roles: {ops: {headcount: 1}, content: {headcount: 1}}
stages:
  s:
    actions:
      welcome: {on: member.joined, within: 24h, do: message, to: member, owner: ops, text: hi}
      follow-up: {after: welcome, delay: 1d, do: message, to: member, owner: content, text: ok?}
      nudge: {after: follow-up, delay: 2d, do: task, owner: ops, text: check}
      daily: {cron: "0 9 * * *", do: task, owner: ops, text: x}
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def sop(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout


# -- chained member-event actions ----------------------------------------------------------


def test_chained_actions_are_listed_after_their_event_rule_in_json(tmp_path):
    code, out = sop("plan", write(tmp_path, CHAINED), "--days", "5", "--format", "json")
    assert code == 0
    rules = json.loads(out)["event_rules"]
    assert [(r["action"], r["rule"], r["event_rule"]) for r in rules] == [
        ("welcome", "on member.joined, within 1d", None),
        ("follow-up", "1d after welcome", "welcome"),
        ("nudge", "2d after follow-up", "welcome"),
    ]


def test_chained_actions_expect_their_rules_counts_moved_by_their_delay(tmp_path):
    path = write(tmp_path, CHAINED)
    code, out = sop("plan", path, "--days", "4", "--format", "json", "--joins-per-day", "3")
    assert code == 0
    expected = {r["action"]: r["expected_per_day"] for r in json.loads(out)["event_rules"]}
    assert list(expected["welcome"]) == ["2027-01-04", "2027-01-05", "2027-01-06", "2027-01-07"]
    assert expected["follow-up"] == {"2027-01-05": 3.0, "2027-01-06": 3.0, "2027-01-07": 3.0}
    assert expected["nudge"] == {"2027-01-07": 3.0}  # 3 days after a join on the first day


def test_chained_actions_have_a_row_in_the_table(tmp_path):
    code, out = sop("plan", write(tmp_path, CHAINED), "--days", "2")
    assert code == 0
    rules = out[out.index("member-event rules") :]
    assert re.search(r"follow-up\s*│ s\s*│ 1d after welcome\s*│ content", rules), rules
    assert re.search(r"nudge\s*│ s\s*│ 2d after follow-up\s*│ ops", rules), rules


def test_csv_lists_event_rules_and_chained_actions_after_the_occurrences(tmp_path):
    code, out = sop("plan", write(tmp_path, CHAINED), "--days", "2", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["action"] for r in rows] == ["daily", "daily", "welcome", "follow-up", "nudge"]
    assert all(r["key"] and r["at"] and not r["rule"] for r in rows[:2])
    chained = rows[3]
    assert (chained["key"], chained["at"], chained["rule"]) == ("", "", "1d after welcome")
    assert (chained["owner"], chained["audience"]) == ("content", "member")


def test_a_role_filter_keeps_a_chained_action_whose_rule_belongs_to_another_role(tmp_path):
    path = write(tmp_path, CHAINED)
    code, out = sop("plan", path, "--days", "2", "--format", "json", "--role", "content")
    assert code == 0
    rules = json.loads(out)["event_rules"]
    assert [(r["action"], r["event_rule"]) for r in rules] == [("follow-up", "welcome")]


def test_markdown_table_and_json_list_the_same_event_driven_actions(tmp_path):
    path = write(tmp_path, CHAINED)
    _, md = sop("plan", path, "--days", "2", "--format", "markdown")
    _, js = sop("plan", path, "--days", "2", "--format", "json")
    in_markdown = set(re.findall(r"^\| (\S+) \| \w+ \| [^|]*\| \w+ \| — \|$", md, re.M))
    assert in_markdown == {r["action"] for r in json.loads(js)["event_rules"]}


# -- graph ids -----------------------------------------------------------------------------

TWINS = """\
playbook: twins
timezone: UTC
roles: {ops: {headcount: 1}}
defaults: {owner: ops}
stages:
  a-b:
    duration: {max: 5d}
    actions:
      x-y: {cron: "0 9 * * *", do: task, text: x}
      x_y: {after: x-y, delay: 1h, do: task, text: x}
  a_b:
    after: a-b
  end:
    after: a_b
"""


def test_ids_that_differ_only_in_dash_and_underscore_stay_distinct_nodes(tmp_path):
    path = write(tmp_path, TWINS)
    code, mmd = sop("graph", path)
    assert code == 0
    assert "s_a_2d_b --> s_a__b" in mmd and "s_a__b --> s_end" in mmd
    assert 'a_x_2d_y -->|"+1h"| a_x__y' in mmd
    code, gv = sop("graph", path, "--format", "dot")
    assert code == 0 and "s_a_2d_b -> s_a__b" in gv and "a_x_2d_y -> a_x__y" in gv
    # a keyword is never a node id on its own
    assert not re.search(r"^\s*end\[", mmd, re.M) and not re.search(r"^\s*end \[", gv, re.M)


# -- diff ----------------------------------------------------------------------------------


def test_diff_says_how_many_moved_occurrences_it_left_out(tmp_path):
    old = write(tmp_path, CHAINED, "old.yaml")
    new = write(tmp_path, CHAINED.replace("0 9 * * *", "0 10 * * *"), "new.yaml")
    code, out = sop("diff", old, new, "--days", "25")
    assert code == 1
    assert len(re.findall(r"^  ~ daily", out, re.M)) == 20
    assert out.rstrip().endswith("… and 5 more moved (the first 20 shown; all: --format json)")
    code, out = sop("diff", old, new, "--days", "20")
    assert code == 1 and "more moved" not in out
