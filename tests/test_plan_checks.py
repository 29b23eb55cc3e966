"""Workload, rate-budget and member-frequency warnings, each triggered on purpose."""

from __future__ import annotations

from tests.conftest import position

HEAD = """\
playbook: load
timezone: Asia/Shanghai
community: {start: 2027-03-01}
roles:
  ops: {headcount: 1, capacity: 2}
backends:
  bot: {type: wecom-robot, rate: 2}
  staff: {type: tasks}
defaults: {backend: bot, staff_backend: staff, owner: ops}
"""


def test_workload_above_headcount_times_capacity(check) -> None:
    text = (
        HEAD
        + """\
stages:
  s:
    actions:
      t1: {cron: "0 9 * * *", do: task, text: a}
      t2: {cron: "0 10 * * *", do: task, text: b}
      t3: {cron: "0 11 * * 1", do: task, text: c}
"""
    )
    res, text = check(text)
    (d,) = [d for d in res.diagnostics if d.code == "SOP301"]
    assert (d.line, d.column) == position(text, "1, capacity")
    assert "3 tasks" in d.message and "capacity 2" in d.message
    assert d.severity == "warning" and res.errors == 0


def test_workload_within_capacity_is_quiet(check) -> None:
    text = (
        HEAD
        + """\
stages:
  s:
    actions:
      t1: {cron: "0 9 * * *", do: task, text: a}
      t2: {cron: "0 10 * * *", do: task, text: b}
"""
    )
    res, _ = check(text)
    assert not [d for d in res.diagnostics if d.code == "SOP301"]


def test_rate_budget_reports_the_delay(check) -> None:
    posts = "\n".join(f'      p{i}: {{cron: "0 20 * * *", do: post, text: hi}}' for i in range(5))
    text = (
        HEAD.replace("capacity: 2", "capacity: 20") + "stages:\n  s:\n    actions:\n" + posts + "\n"
    )
    res, text = check(text)
    (d,) = [d for d in res.diagnostics if d.code == "SOP302"]
    assert (d.line, d.column) == position(text, "2}")
    assert "5 sends" in d.message and "2 min late" in d.message


def test_platform_default_rate_applies_without_a_declared_rate(check) -> None:
    posts = "\n".join(f'      p{i}: {{cron: "0 20 * * *", do: post, text: hi}}' for i in range(21))
    text = (
        HEAD.replace(", rate: 2", "").replace("capacity: 2", "capacity: 50")
        + "stages:\n  s:\n    actions:\n"
        + posts
        + "\n"
    )
    res, _ = check(text)
    assert [d for d in res.diagnostics if d.code == "SOP302"]  # WeCom robots: 20 a minute


def test_member_frequency_cap(check) -> None:
    text = (
        HEAD.replace("capacity: 2", "capacity: 20")
        + """\
limits: {member_messages_per_day: 2}
stages:
  s:
    actions:
      m1: {cron: "0 9 * * *", do: post, text: a}
      m2: {cron: "0 12 * * *", do: post, text: b}
      m3: {cron: "0 19 * * 5", do: poll, text: c}
"""
    )
    res, text = check(text)
    (d,) = [d for d in res.diagnostics if d.code == "SOP303"]
    assert (d.line, d.column) == position(text, "2}\nstages")
    assert "3 messages" in d.message and "2027-03-05" in d.message  # the first Friday


def test_tasks_do_not_count_as_member_messages(check) -> None:
    text = (
        HEAD.replace("capacity: 2", "capacity: 20")
        + """\
limits: {member_messages_per_day: 1}
stages:
  s:
    actions:
      m1: {cron: "0 9 * * *", do: post, text: a}
      t1: {cron: "0 12 * * *", do: task, text: b}
"""
    )
    res, _ = check(text)
    assert not [d for d in res.diagnostics if d.code == "SOP303"]


def test_reference_playbooks_have_no_plan_warnings(check) -> None:
    from sop.engine.validate import Options, validate_paths

    from tests.conftest import PLAYBOOKS

    results = validate_paths([str(PLAYBOOKS)], Options(plan_days=365))
    assert [d for r in results for d in r.diagnostics] == []
