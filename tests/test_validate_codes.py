"""Every diagnostic code, triggered by a small playbook, at the expected line and column.

Each case is (code, YAML, token): the diagnostic must start where `token` first appears
(`token@2` = its second occurrence). The YAML sits inline so input and finding read together.
"""

from __future__ import annotations

import pytest
from sop.engine.core.diagnostics import all_rules

from tests.conftest import BASE, position
from tests.test_lang_issue12 import CASES as ISSUE_12_CASES

STAGE = (
    BASE
    + """\
stages:
  s1:
    actions:
      a1: {cron: "0 9 * * *", do: post, text: hi}
"""
)

CASES: list[tuple[str, str, str]] = [
    ("SOP001", "playbook: t\nstages: [1, 2\n", ""),
    ("SOP002", "playbook: t\ntimezone: UTC\nplaybook: u\nstages: {}\n", "playbook@2"),
    ("SOP005", "- just\n- a list\n", "- just"),
    ("SOP008", BASE + "title: ${nope}\nstages: {}\n", "${nope}"),
    ("SOP009", "playbook: !!python/object:os.system x\n", "!!python"),
    ("SOP100", STAGE.replace("do: post", "do: post, colour: red"), "colour"),
    ("SOP101", BASE + "roles2: 1\n", "roles2"),  # placeholder replaced below
    ("SOP102", BASE.replace("headcount: 1", "headcount: two") + "stages: {}\n", "two"),
    ("SOP103", STAGE.replace("do: post", "do: pots"), "pots"),
    ("SOP104", STAGE.replace('cron: "0 9 * * *", ', 'cron: "0 9 * * *", day: 3, '), "day"),
    (
        "SOP201",
        STAGE + "  s2:\n    after: s1\n    actions:\n      a1: {day: 0, do: task}\n",
        "a1@2",
    ),
    ("SOP202", STAGE + "  s2:\n    after: s9\n", "s9"),
    ("SOP203", STAGE.replace("a1: {", "a2: {after: a9, do: post, text: x}\n      a1: {"), "a9"),
    ("SOP204", STAGE.replace("do: post", "do: post, owner: boss"), "boss"),
    ("SOP205", STAGE.replace("do: post", 'do: post, to: "tier:gold"'), '"tier:gold"'),
    ("SOP206", STAGE.replace("do: post", "do: post, backend: slack"), "slack"),
    ("SOP207", STAGE.replace("text: hi", "template: nope"), "nope"),
    ("SOP208", STAGE.replace("text: hi", 'text: "{{ member.name "'), "{{ member"),
    (
        "SOP209",
        STAGE.replace("text: hi", 'on: member.joined, to: member, text: "hi {{ usr }}"').replace(
            'cron: "0 9 * * *", ', ""
        ),
        "usr",
    ),
    ("SOP210", STAGE + "templates:\n  orphan: hello\n", "hello"),
    (
        "SOP211",
        BASE.replace(
            "backends: {group: {type: console}}",
            "backends:\n  group: {type: console}\n"
            "  hook: {type: webhook, url: 'https://x.test/send?key=abc'}",
        )
        + "stages: {}\n",
        "'https",
    ),
    (
        "SOP211",
        BASE.replace(
            "backends: {group: {type: console}}",
            "backends:\n  group: {type: console}\n"
            "  app: {type: wecom-app, options: {corp_id: ww1, corp_secret: s3cr3t}}",
        )
        + "stages: {}\n",
        "{corp_id",
    ),
    ("SOP255", STAGE.replace("text: hi", "text: '{{ action.__class__ }}'"), "__class__"),
    ("SOP220", STAGE.replace("  s1:\n", "  s1:\n    after: s2\n") + "  s2:\n    after: s1\n", "s2"),
    (
        "SOP221",
        STAGE.replace(
            "a1: {",
            "a2: {after: a3, do: post, text: x}\n"
            "      a3: {after: a2, do: post, text: y}\n      a1: {",
        ),
        "a3",
    ),
    ("SOP222", STAGE + "  lost:\n    rescue: true\n", "lost"),
    ("SOP230", STAGE.replace("0 9 * * *", "0 25 * * *"), '"0 25'),
    ("SOP231", STAGE.replace("Asia/Shanghai", "Asia/Beijing"), "Asia/Beijing"),
    (
        "SOP232",
        STAGE.replace("do: post", 'do: post, quiet_hours: "22:00-08:00"').replace(
            "0 9 * * *", "30 23 * * *"
        ),
        '"30 23',
    ),
    (
        "SOP233",
        STAGE.replace("  s1:\n", "  s1:\n    duration: {max: 7d}\n").replace(
            'cron: "0 9 * * *"', "day: 9"
        ),
        "9, do",
    ),
    (
        "SOP234",
        STAGE + "    duration: {min: 30d}\n    exit:\n      when: members >= 10\n"
        "      deadline: {after: 20d, then: {alert: ops}}\n",
        "20d",
    ),
    ("SOP235", STAGE + "    duration: {min: 30d, max: 20d}\n", "30d"),
    ("SOP240", STAGE + "    exit: {when: members >= = 10}\n", "= 10"),
    ("SOP241", STAGE + "    exit: {when: members >= 10 and speak_rate > 0.2}\n", "speak_rate"),
    ("SOP242", STAGE + "    exit: {when: members + (core_members > 3) > 1}\n", "(core_members"),
    ("SOP243", STAGE + "    exit: {when: retention_d30 >= 60}\n", "60"),
    (
        "SOP280",
        STAGE
        + "    duration: {max: 3d}\n  s2:\n    after: s1\n    actions:\n"
        + "      a2: {after: a1, delay: 1h, do: post, text: x}\n",
        "a1@2",
    ),
    ("SOP281", STAGE + "  s2:\n    after: s1\n", "s1@2"),
    (
        "SOP282",
        STAGE
        + "routines:\n  greet: {on: member.joined, do: message, to: member, text: hi}\n"
        + "  tease: {before: greet, by: 1h, do: message, to: member, text: x}\n",
        "greet@2",
    ),
]


def _fix_sop101() -> None:
    # a role without its required headcount: the finding sits on the role's key
    text = BASE.replace("ops: {headcount: 1}", "ops: {title: 运营}") + "stages: {}\n"
    CASES[CASES.index(next(c for c in CASES if c[0] == "SOP101"))] = ("SOP101", text, "ops:")


_fix_sop101()


@pytest.mark.parametrize(("code", "text", "token"), CASES, ids=[c[0] for c in CASES])
def test_code_is_reported_at_token(check, code: str, text: str, token: str) -> None:
    res, text = check(text, plan_checks=False)
    found = [d for d in res.diagnostics if d.code == code]
    assert found, f"{code} not reported; got {[(d.code, d.message) for d in res.diagnostics]}"
    if token:
        needle, _, nth = token.partition("@")
        line, col = position(text, needle, int(nth or 1))
        assert (found[0].line, found[0].column) == (line, col), found[0]
    assert found[0].message and found[0].hint is not None


def test_syntax_error_position(check) -> None:
    res, _ = check("playbook: t\nstages:\n  a: [1, 2\n  b: 3\n")
    (d,) = res.diagnostics
    assert d.code == "SOP001" and d.line == 4


def test_schema_unknown_key_points_at_key_not_parent(check) -> None:
    res, text = check(STAGE.replace("do: post", "do: post, colour: red"))
    (d,) = res.diagnostics
    assert (d.line, d.column) == position(text, "colour")
    assert d.json_path == "$.stages.s1.actions.a1.colour"


def test_unknown_key_suggests_a_close_name(check) -> None:
    res, _ = check(STAGE.replace("do: post", "do: post, ownr: ops"))
    assert res.diagnostics[0].hint == "did you mean `owner`?"


def test_missing_schedule_is_one_schedule_code(check) -> None:
    res, text = check(STAGE.replace('cron: "0 9 * * *", ', ""))
    (d,) = res.diagnostics
    assert d.code == "SOP104" and (d.line, d.column) == position(text, "a1")


def test_cycle_message_prints_the_path(check) -> None:
    text = (
        STAGE.replace("  s1:\n", "  s1:\n    after: s3\n")
        + "  s2:\n    after: s1\n  s3:\n    after: s2\n"
    )
    res, _ = check(text)
    (d,) = [d for d in res.diagnostics if d.code == "SOP220"]
    assert "→" in d.message and {"s1", "s2", "s3"} <= set(d.message.replace("→", " ").split())


def test_expression_type_error_column(check) -> None:
    res, text = check(STAGE + "    exit: {when: members and 3}\n")
    found = [(d.line, d.column) for d in res.diagnostics if d.code == "SOP242"]
    assert found == [position(text, "members and"), position(text, "3}")]


def test_expression_in_block_scalar_is_located(check) -> None:
    res, text = check(STAGE + "    exit:\n      when: >-\n        members >= 10 and bogus > 1\n")
    (d,) = [d for d in res.diagnostics if d.code == "SOP241"]
    assert (d.line, d.column) == position(text, "bogus")


def test_tier_rules_read_member_attributes(check) -> None:
    text = STAGE + (
        "tiers:\n  levels:\n    normal: {}\n    core:\n"
        "      promote: tenure_days >= 90 and members > 3\n"
    )
    res, text = check(text)
    # `members` is a metric: a member condition cannot read it (SOP244, not "unknown")
    (d,) = [d for d in res.diagnostics if d.code in ("SOP241", "SOP244")]
    assert d.code == "SOP244" and (d.line, d.column) == position(text, "members > 3")


def test_member_audience_needs_an_event(check) -> None:
    res, _ = check(STAGE.replace("do: post", "do: post, to: member"))
    assert [d.code for d in res.diagnostics] == ["SOP103"]


def test_include_missing_fragment(check) -> None:
    res, text = check(STAGE + "    include: nowhere.yaml\n")
    (d,) = res.diagnostics
    assert d.code == "SOP007" and (d.line, d.column) == position(text, "nowhere.yaml")


def test_fragment_errors_point_into_the_fragment(check, tmp_path) -> None:
    frag = "fragment: f\nactions:\n  x: {day: 0, do: post, text: hi, colour: 1}\n"
    res, _ = check(STAGE + "    include: frag.yaml\n", **{"frag.yaml": frag})
    (d,) = res.diagnostics
    assert d.file.endswith("frag.yaml") and d.code == "SOP100" and d.line == 3


def test_fragment_parameters_substitute(check) -> None:
    frag = (
        "fragment: f\nparams: {n: {default: 2}}\nactions:\n"
        "  x: {day: '${n}', do: post, text: 'n=${n}'}\n"
    )
    res, _ = check(
        STAGE + "    include:\n      - {fragment: frag.yaml, with: {n: 5}}\n", **{"frag.yaml": frag}
    )
    assert not res.diagnostics
    a = res.playbook.actions["x"]
    assert a.schedule.day == 5 and a.text.text == "n=5"


def test_every_code_has_a_triggering_test() -> None:
    covered = {c[0] for c in CASES}
    covered |= {"SOP003", "SOP004", "SOP006", "SOP007"}  # test_loader.py, above
    covered |= {"SOP301", "SOP302", "SOP303"}  # test_plan_checks.py
    covered |= {"SOP304"}  # test_plan_issue12.py
    covered |= {"SOP270"}  # test_security_sim.py
    covered |= {"SOP250", "SOP251", "SOP252", "SOP253"}  # test_security_language.py
    covered |= {"SOP254"}  # test_security_heldout.py
    covered |= {"SOP260"}  # test_security_plan.py
    covered |= {"SOP290", "SOP291", "SOP292", "SOP293", "SOP294", "SOP295"}  # test_validate_ignored
    covered |= {"SOP288", "SOP289"}  # test_sim_issue12.py (scenario against its playbook)
    covered |= {"SOP249", "SOP287"}  # test_sim_model13.py (history_includes, parameters)
    covered |= {c[0] for c in ISSUE_12_CASES}  # test_lang_issue12.py
    assert covered == {r.code for r in all_rules()}
