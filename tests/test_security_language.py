"""Hostile playbooks meet the limits of the language: templates are parsed, never evaluated, at
validate time and rendered in a bounded sandbox; conditions have length and nesting limits; every
number and date that reaches date arithmetic has a range. Each limit gives a located diagnostic.

Inputs that would eat memory or time without the limits run in a subprocess under an address-space
limit and a timeout, so a regression fails the test instead of taking the machine down.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sop.engine.core import expr as ex
from sop.engine.lang.schema import load_schema, validator
from sop.engine.lang.templates import (
    RenderError,
    environment,
    needs_member,
    render,
    template_problems,
)

from tests.conftest import BASE, PLAYBOOKS, ROOT, position

STAGE = (
    BASE
    + """\
stages:
  s1:
    actions:
      a1: {cron: "0 9 * * *", do: post, text: hi}
"""
)
ONE_GIB = 1 << 30


def _codes_at(res, code: str) -> list[tuple[int, int]]:
    return [(d.line, d.column) for d in res.diagnostics if d.code == code]


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ONE_GIB, ONE_GIB))


def _run_limited(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        preexec_fn=_limited,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- bombs, in a subprocess under 1 GiB --------------------------------------------------------

TEMPLATE_BOMBS = {
    "repeat": "{{ 'a' * 10**9 }}",
    "power": "{{ 10**(10**9) }}",
    "nested-range": "{% for i in range(10000) %}{% for j in range(10000) %}{{ j }}"
    "{% endfor %}{% endfor %}",
    "join": "{{ range(10000)|map('string')|join('x' * 60000) }}",
    "doubling": "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "center": "{{ 'x'|center(10**9) }}",
    "format": "{{ '%0999999999d' % 1 }}",
    "replace": "{{ ('a' * 60000)|replace('a', 'a' * 60000) }}",
    "sum": "{{ ([[0] * 10000] * 10000)|sum(start=[])|length }}",
    "captured": "{% set x %}{% for i in range(10000) %}{{ 'a' * 60000 }}{% endfor %}{% endset %}"
    "{{ x|length }}",
    "tojson": "{{ range(10000)|list|tojson(indent=60000) }}",
    "str-of-list": "{% set x = ['a' * 60000] * 40000 %}{{ x }}",
    "mapped": "{{ range(10000)|map('center', 60000)|list|length }}",
    "macro-tree": "{% macro m(d) %}{% if d < 40 %}{{ m(d + 1) }}{{ m(d + 1) }}{% endif %}"
    "{% endmacro %}{{ m(0) }}",
}

BOMB_SCRIPT = r"""
import json, sys
from sop.engine.lang.templates import RenderError, render, template_problems
from sop.engine.validate import Options, validate_file
bombs = json.loads(sys.argv[1])
out = {"problems": {}, "render": {}}
for name, text in bombs.items():
    out["problems"][name] = template_problems(text, {})
    try:
        render(text, {})
        out["render"][name] = None
    except RenderError as e:
        out["render"][name] = e.message
res = validate_file(sys.argv[2], Options(plan_days=14))
out["validate"] = [(d.code, d.line, d.column) for d in res.diagnostics]
print(json.dumps(out))
"""


def test_template_bombs_are_parsed_not_evaluated_and_refused_when_rendered(tmp_path) -> None:
    expr_bombs = STAGE + (
        '    exit: {when: "' + "(" * 130 + "members" + ")" * 130 + ' > 1"}\n'
        '  s2:\n    exit: {when: "members' + " + 1" * 1000 + ' > 1"}\n'
    )
    path = tmp_path / "p.yaml"
    path.write_text(expr_bombs, encoding="utf-8")
    proc = _run_limited(BOMB_SCRIPT, json.dumps(TEMPLATE_BOMBS), str(path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["problems"] == {name: [] for name in TEMPLATE_BOMBS}
    assert all(out["render"][name] for name in TEMPLATE_BOMBS), out["render"]
    assert [c for c, _, _ in out["validate"]] == ["SOP250", "SOP250"]


def test_plan_of_a_playbook_full_of_template_bombs_finishes_with_the_good_message(
    tmp_path,
) -> None:
    lines = [
        f'      b{i}: {{cron: "0 {9 + i} * * *", do: post, text: {json.dumps(t)}}}'
        for i, t in enumerate(TEMPLATE_BOMBS.values())
    ]
    text = STAGE.replace("text: hi", 'text: "hello {{ action.id }}"') + "\n".join(lines) + "\n"
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    script = (
        "import sys; from sop.cli import main;"
        " sys.argv = ['sop', 'plan', sys.argv[1], '--days', '1', '--format', 'json']; main()"
    )
    proc = _run_limited(script, str(path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    messages = {o["action"]: o["message"] for o in json.loads(proc.stdout)["occurrences"]}
    assert messages["a1"] == "hello a1"
    assert all(messages[f"b{i}"] is None for i in range(len(TEMPLATE_BOMBS)))


# -- templates: parsed, never evaluated ------------------------------------------------------


def test_sandbox_does_not_fold_intercepted_arithmetic_while_compiling() -> None:
    code = environment().compile("{{ 'a' * 10**9 }}", raw=True)
    assert "call_binop(context, '*', 'a', environment.call_binop(context, '**', 10, 9))" in code


def test_template_names_come_from_the_tree_with_bound_names_left_out() -> None:
    text = (
        "{% set greeting = 'hi' %}{% for x in range(2) %}{{ loop.index }}{{ x }}{% endfor %}"
        "{% macro m(who) %}{{ who }}{{ caller() if caller }}{% endmacro %}"
        "{{ greeting }} {{ member.name }} {{ usr }} {{ usr }}\n{{ member.nickname }}"
    )
    problems = template_problems(text, {})
    assert problems == [
        ("SOP209", 0, "usr", "unknown variable `usr`"),
        ("SOP209", 1, "nickname", "`member` has no attribute `nickname`"),
    ]


def test_text_growing_str_methods_are_refused_where_called(check) -> None:
    text = 'text: "{{ member.name.center(80) }} {{ params.replace }}"'
    res, src = check(STAGE.replace("text: hi", text))
    assert [(d.code, d.line, d.column) for d in res.diagnostics if d.code == "SOP208"] == [
        ("SOP208", *position(src, "center"))
    ]


def test_needs_member_reads_the_tree() -> None:
    assert needs_member("{% if true %}{{ member.name }}{% endif %}")
    assert needs_member("{{ event.kind }}")
    assert not needs_member("{% set member = 'x' %}{{ member }}")
    assert not needs_member("{{ params.n }} {{ range(3)|join }}")


def test_a_template_nested_too_deeply_for_jinja_is_a_located_syntax_error(check) -> None:
    text = "(" * 200 + "1" + ")" * 200
    res, src = check(STAGE.replace("text: hi", '"text": "x {{ ' + text + ' }}"'))
    assert [(d.code, d.line) for d in res.diagnostics] == [("SOP208", position(src, "x {{")[0])]
    assert "nests too deeply" in res.diagnostics[0].message


def test_an_integer_literal_python_cannot_read_is_a_syntax_error(check) -> None:
    res, _ = check(STAGE.replace("text: hi", 'text: "{{ ' + "9" * 5000 + ' }}"'))
    assert [d.code for d in res.diagnostics] == ["SOP208"]


# -- templates: bounded rendering (inputs just over each limit, harmless without it) --------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{{ 'ab' * 40000 }}", "at most 65536"),
        ("{{ [0] * 70000 }}", "at most 65536"),
        ("{{ 2 ** 300 }}", "bits"),
        ("{{ 3 * 2 ** 255 }}", "bits"),
        ("{{ range(20000)|list|length }}", "range of 20000 items"),
        ("{{ range(10 ** 30)|first }}", "range of"),
        ("{{ '%(a)s' * 100 % {'a': 'x' * 1000} }}", "formatted text"),
        ("{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}", "steps"),
        ("{{ 'x'|center(70000) }}", "above 65536"),
        ("{{ '%5000d' % 1 }}", "width"),
        ("{{ '%*d' % (5, 1) }}", "`*` widths"),
        ("{{ '%s'|format('a' * 60000 ~ 'b' * 10000) }}", "65536"),
        ("{{ 'x'.center(10) }}", "`.center()` is not available"),
        ("{{ '{:>10}'.format(1) }}", "not available"),
        ("{{ ('a' * 300)|replace('a', 'a' * 300) }}", "after `replace`"),
        ("{{ range(10000)|map('string')|join('-' * 10) }}", "joined text"),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(17) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "built with `~`",
        ),
        ("{% for i in range(100) %}{{ 'a' * 1000 }}{% endfor %}", "rendered text"),
        (
            "{% set x %}{% for i in range(20) %}{{ 'a' * 60000 }}{% endfor %}{% endset %}",
            "makes more than 1048576",
        ),
        ("{{ [1]|tojson(indent=100) }}", "tojson"),
        ("{{ ['a' * 600] * 200 }}", "text in the repeated list"),
        ("{{ ['a' * 600] * 100 + ['b' * 600] * 100 }}", "text in the joined lists"),
        ("{{ range(100)|map('center', 20000)|list|length }}", "makes more than"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "recurses"),
        ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "recurses"),
        ("{{ lipsum(50) }}", "lipsum"),
        ("{{ 'a' ~ nope }}", "undefined"),
        ("{{ 1 / 0 }}", "division"),
    ],
)
def test_render_refuses_work_beyond_the_limits(text: str, reason: str) -> None:
    with pytest.raises(RenderError) as err:
        render(text, {})
    assert reason in err.value.message


def test_parse_duration_refuses_what_timedelta_cannot_hold() -> None:
    from sop.engine.core.timeutil import parse_duration

    assert parse_duration("999w9999d99999h999999m").days == 21853
    for text in ("99999999999999w", "1" * 40 + "m", "3d\n"):
        with pytest.raises(ValueError):
            parse_duration(text)


def test_render_error_names_the_template_line() -> None:
    with pytest.raises(RenderError) as err:
        render("first line\nsecond {{ 2 ** 300 }}", {})
    assert err.value.line == 2


def test_ordinary_templates_render_as_before() -> None:
    text = (
        "{{ member.name }}: {% for i in range(3) %}{{ i }}{% endfor %} {{ 'ab' ~ 'cd' }}"
        " {{ [1, 2]|join('-') }} {{ 'a b'|replace(' ', '_')|upper }} {{ '%.1f' % 2.25 }}"
        " {{ 'x'|center(5) }}| {{ 2 ** 10 }} {{ 'ab' * 2 }} {{ [1] + [2] }}"
        " {{ '%s=%d'|format('n', 3) }} {{ ([1, 2], [3])|sum(start=[]) }}"
    )
    assert render(text, {"member": {"name": "Ann"}}) == (
        "Ann: 012 abcd 1-2 A_B 2.2   x  | 1024 abab [1, 2] n=3 [1, 2, 3]"
    )


# -- expressions -----------------------------------------------------------------------------


def test_130_nested_parentheses_are_refused_at_the_33rd(check) -> None:
    cond = "(" * 130 + "members" + ")" * 130 + " > 1"
    res, src = check(STAGE + f'    exit: {{when: "{cond}"}}\n')
    line, col = position(src, cond)
    assert _codes_at(res, "SOP250") == [(line, col + 32)]


def test_a_thousand_chained_operators_are_refused_without_recursion(check) -> None:
    cond = "members" + " + 1" * 1000 + " > 1"
    res, src = check(STAGE + f'    exit: {{when: "{cond}"}}\n')
    line, col = position(src, cond)
    assert _codes_at(res, "SOP250") == [(line, col + ex.MAX_LENGTH)]


def test_a_chain_deeper_than_the_tree_limit_points_at_its_start(check) -> None:
    cond = "members" + " + 1" * 100 + " > 1"
    res, src = check(STAGE + f'    exit: {{when: "{cond}"}}\n')
    assert _codes_at(res, "SOP250") == [position(src, cond)]


def test_stacked_not_and_minus_count_as_nesting(check) -> None:
    cond = "not " * 40 + "members > 1"
    res, src = check(STAGE + f"    exit: {{when: {cond}}}\n")
    line, col = position(src, cond)
    assert _codes_at(res, "SOP250") == [(line, col + 4 * 32)]
    with pytest.raises(ex.ExprSyntaxError):
        ex.parse("-" * 40 + "1 > 0")


def test_more_than_400_tokens_are_refused_at_the_401st() -> None:
    with pytest.raises(ex.ExprSyntaxError) as err:
        ex.parse("1+" * 250 + "1 > 0")
    assert (err.value.problem.code, err.value.problem.start) == ("SOP250", 400)


def test_huge_number_literals_are_refused(check) -> None:
    res, src = check(STAGE + "    exit: {when: members > " + "9" * 400 + "}\n")
    assert _codes_at(res, "SOP250") == [position(src, "9" * 400)]


def test_expressions_at_the_limits_still_parse_and_evaluate() -> None:
    nested = ex.parse("(" * 31 + "members" + ")" * 31 + " >= 1")
    chained = ex.parse("members" + " + 1" * 62 + " > 1")
    assert ex.evaluate(nested, {"members": 3}) is True
    assert ex.evaluate(chained, {"members": 3}) is True
    assert ex.parse("members > 1000000000000000").args[1].value == 1e15


EXAMPLES = settings(
    max_examples=int(os.environ.get("SOP_HYPOTHESIS_EXAMPLES", "150")), deadline=None
)
conditions = st.recursive(
    st.sampled_from(["members", "1", "60%", "true", "9" * 20, "x"]),
    lambda inner: st.one_of(
        st.builds(lambda a: f"({a})", inner),
        st.builds(lambda a: f"not {a}", inner),
        st.builds(lambda a: f"-{a}", inner),
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from("+-*/<>"), inner),
    ),
    max_leaves=60,
)


@EXAMPLES
@given(
    text=st.one_of(conditions, st.text(alphabet="()-+*/<>=! notandrmbe0123456789%.", max_size=3000))
)
def test_any_condition_parses_or_gives_a_located_problem(text: str) -> None:
    try:
        node = ex.parse(text)
    except ex.ExprSyntaxError as e:
        assert 0 <= e.problem.start < e.problem.end <= max(len(text), e.problem.start + 1)
        assert e.problem.code in ("SOP240", "SOP250")
        return
    if not ex.check(node, {"members": "count", "x": "ratio"}):
        ex.evaluate(node, {"members": 3.0, "x": 0.5})


TEMPLATE_PIECES = ["{{", "}}", "{%", "%}", "(", ")", "[", "]", " ", "x", "1", "*", "**", "~", "|"]
TEMPLATE_PIECES += ["join", "for ", " in ", "range", "endfor", "if ", "endif", "'a'", ".", ","]


@EXAMPLES
@given(text=st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=200).map("".join))
def test_any_template_text_is_checked_without_an_exception(text: str) -> None:
    template_problems(text, {})
    needs_member(text)
    try:
        render(text, {})
    except RenderError as e:
        assert e.message


# -- ranges: every number and date that reaches date arithmetic ------------------------------


@pytest.mark.parametrize(
    ("case", "text", "token"),
    [
        ("duration digits", STAGE + "    duration: {max: 99999999999999w}\n", "99999999999999w"),
        ("day offset", STAGE.replace('cron: "0 9 * * *"', "day: 3661"), "3661"),
        ("day offset as float", STAGE.replace('cron: "0 9 * * *"', "day: 1e300"), "1e300"),
        (
            "effect invites",
            STAGE.replace("text: hi", "text: hi, effect: {invites: 1e300}"),
            "1e300",
        ),
        ("effect joins", STAGE.replace("text: hi", "text: hi, effect: {joins: 1e9}"), "1e9"),
        (
            "effect interactions",
            STAGE.replace("text: hi", "text: hi, effect: {interactions: 1e6}"),
            "1e6",
        ),
        ("headcount", STAGE.replace("headcount: 1", "headcount: 1000000000"), "1000000000"),
        ("role capacity", STAGE.replace("headcount: 1", "headcount: 1, capacity: 99999"), "99999"),
        (
            "backend rate",
            STAGE.replace("{type: console}", "{type: console, rate: 10000000}"),
            "10000000",
        ),
        ("group capacity", STAGE + "community: {capacity: 1e12}\n", "1e12"),
        ("messages a day", STAGE + "limits: {member_messages_per_day: 5000}\n", "5000"),
        ("metric target", STAGE + "metrics: {x: {target: 1e300}}\n", "1e300"),
        (
            "violation count",
            STAGE.replace('cron: "0 9 * * *"', "on: member.violation, count: 1000000"),
            "1000000",
        ),
        (
            "streak",
            STAGE.replace('cron: "0 9 * * *"', "on: member.checkin_streak, streak: 100000"),
            "100000",
        ),
        (
            "strikes",
            STAGE + "moderation: {violations: {warn_at: 1, remove_at: 100000}}\n",
            "100000",
        ),
        (
            "reward points",
            STAGE.replace("text: hi", "text: hi, reward: {points: 1e10}"),
            "1e10",
        ),
        (
            "anniversaries",
            STAGE.replace(
                'cron: "0 9 * * *"', "on: member.anniversary, at: [" + "1d, " * 101 + "1d]"
            ),
            "[1d",
        ),
        ("invalid date", STAGE + "community: {start: 2026-02-30}\n", "2026-02-30"),
        ("far date", STAGE + "community: {start: 9999-12-31}\n", "9999-12-31"),
        ("id with newline", STAGE.replace("playbook: t", 'playbook: "t\\n"'), '"t'),
        ("action id with newline", STAGE.replace("a1: {", '"a1\\n": {'), '"a1'),
        ("id with a bell", STAGE.replace("playbook: t", 'playbook: "t\\a"'), '"t'),
        ("owner with newline", STAGE.replace("owner: ops}", 'owner: "ops\\n"}'), '"ops'),
        ("duration with newline", STAGE + '    duration: {max: "3d\\n"}\n', '"3d'),
    ],
)
def test_out_of_range_values_are_located_schema_errors(check, case: str, text: str, token: str):
    res, src = check(text, plan_checks=False)
    assert _codes_at(res, "SOP103") == [position(src, token)], (case, res.diagnostics)


@pytest.mark.parametrize(
    ("text", "token"),
    [
        (STAGE + "    duration: {min: 1d, max: 3661d}\n", "3661d"),
        (STAGE + "    duration: {max: 999w}\n", "999w"),
        (
            STAGE + "    exit: {when: members > 1, deadline: {after: 600w, then: {abort: true}}}\n",
            "600w",
        ),
        (
            STAGE + "    exit:\n      when: members > 1\n"
            "      deadline: {after: 1d, then: {extend: 9999d}}\n",
            "9999d",
        ),
        (
            STAGE.replace('cron: "0 9 * * *"', "on: member.joined, within: 99999h"),
            "99999h",
        ),
        (STAGE.replace('cron: "0 9 * * *"', "on: member.silent, for: 9999d"), "9999d"),
        (
            STAGE.replace("a1: {", "a0: {day: 0, do: post, text: x}\n      a1: {").replace(
                'cron: "0 9 * * *"', "after: a0, delay: 9999d"
            ),
            "9999d",
        ),
        (
            STAGE.replace("a1: {", "a0: {day: 0, do: post, text: x}\n      a1: {").replace(
                'cron: "0 9 * * *"', "before: a0, by: 9000d"
            ),
            "9000d",
        ),
        (STAGE + "moderation: {violations: {remove_at: 3, window: 5000d}}\n", "5000d"),
        (
            STAGE + "tiers: {levels: {normal: {}, core: {demote: {silent_for: 4000d}}}}\n",
            "4000d",
        ),
        (
            STAGE + "incidents:\n  spam: {owner: ops, steps: [{alert: ops, within: 4000d}]}\n",
            "4000d",
        ),
        (STAGE + "expect: [{every: member.joined, gets: a1, within: 4000d}]\n", "4000d"),
        (
            STAGE.replace('cron: "0 9 * * *"', "on: member.anniversary, at: [30d, 4000d]"),
            "[30d",
        ),
    ],
)
def test_durations_longer_than_ten_years_are_refused_where_written(check, text: str, token: str):
    res, src = check(text, plan_checks=False)
    assert _codes_at(res, "SOP251") == [position(src, token)], res.diagnostics


def test_chained_offsets_are_refused_where_they_pass_ten_years(check) -> None:
    text = STAGE.replace(
        "a1: {",
        "a0: {day: 0, do: post, text: x}\n"
        "      b1: {after: a0, delay: 2000d, do: post, text: x}\n"
        "      b2: {after: b1, delay: 2000d, do: post, text: x}\n"
        "      b3: {after: b2, delay: 2000d, do: post, text: x}\n"
        "      a1: {",
    )
    res, src = check(text, plan_checks=False)
    assert _codes_at(res, "SOP251") == [position(src, "2000d", 2)]


def test_a_chain_of_33_actions_is_refused_at_the_33rd(check) -> None:
    chain = "".join(
        f"      c{i}: {{after: c{i - 1}, delay: 1h, do: post, text: x}}\n" for i in range(1, 34)
    )
    text = STAGE.replace("a1: {", "c0: {day: 0, do: post, text: x}\n" + chain + "      a1: {")
    res, src = check(text, plan_checks=False)
    assert _codes_at(res, "SOP252") == [position(src, "c32, delay")]


def test_a_chain_of_32_actions_is_allowed(check) -> None:
    chain = "".join(
        f"      c{i}: {{after: c{i - 1}, delay: 1h, do: post, text: x}}\n" for i in range(1, 33)
    )
    text = STAGE.replace("a1: {", "c0: {day: 0, do: post, text: x}\n" + chain + "      a1: {")
    res, _ = check(text, plan_checks=False)
    assert res.errors == 0, res.diagnostics


@pytest.mark.parametrize(
    "zone",
    ["/".join(["a"] * 300), "../../etc/passwd", "Asia/" + "x" * 5000, "UTC\\u0000", "Asia//Tokyo"],
)
def test_garbage_time_zones_are_a_located_unknown_zone(check, zone: str) -> None:
    res, src = check(STAGE.replace("Asia/Shanghai", f'"{zone}"'), plan_checks=False)
    assert _codes_at(res, "SOP231") == [position(src, '"' + zone[:5])]


def test_nan_fails_every_range_in_our_validator() -> None:
    doc = {
        "playbook": "t",
        "timezone": "UTC",
        "stages": {"s": {"actions": {"a": {"day": 0, "do": "post", "effect": {}}}}},
    }
    doc["stages"]["s"]["actions"]["a"]["effect"]["speak"] = float("nan")
    assert not validator().is_valid(doc)


def test_our_validator_and_jsonschema_agree_on_the_new_ranges() -> None:
    reference = jsonschema.Draft7Validator(load_schema())
    base = {
        "playbook": "t",
        "timezone": "UTC",
        "stages": {"s": {"actions": {"a": {"day": 0, "do": "post"}}}},
    }
    variants = [
        {"playbook": "t\n"},
        {"playbook": "t" * 65},
        {"playbook": "t" * 64},
        {"stages": {"s": {"actions": {"a": {"day": 3661, "do": "post"}}}}},
        {"stages": {"s": {"actions": {"a": {"day": 3660, "do": "post"}}}}},
        {"stages": {"s": {"duration": {"max": "1000w"}}}},
        {"stages": {"s": {"duration": {"max": "999w9999d99999h999999m"}}}},
        {"roles": {"ops": {"headcount": 10_001}}},
        {"community": {"start": "2199-12-31"}},
        {"community": {"start": "2200-01-01"}},
    ]
    for change in variants:
        doc = {**base, **change}
        assert validator().is_valid(doc) == reference.is_valid(doc), change


def test_shipped_playbooks_and_fragments_stay_valid_under_the_ranges() -> None:
    from sop.engine.validate import validate_paths

    results = validate_paths([str(PLAYBOOKS)])
    assert results and all(r.errors == 0 for r in results), [
        (r.file, [(d.code, d.message) for d in r.diagnostics]) for r in results if r.errors
    ]


def test_every_range_is_documented_in_its_description() -> None:
    undocumented = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if "maximum" in node:
                top, desc = node["maximum"], node.get("description", "")
                if not any(f in desc for f in (str(top), f"{top:,}", f"{top:.0e}")):
                    undocumented.append(path)
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    for name in ("playbook.schema.json", "fragment.schema.json"):
        walk(load_schema(name), name)
    assert undocumented == []


def test_a_text_that_hits_a_sandbox_limit_is_a_located_warning_and_plan_says_why(
    check, tmp_path
) -> None:
    res, src = check(STAGE.replace("text: hi", "text: \"{{ 'a' * 100000 }}\""))
    line, col = position(src, "{{ 'a'")
    assert [(d.code, d.line, d.column) for d in res.diagnostics] == [("SOP253", line, col)]
    assert "at most 65536" in res.diagnostics[0].message
    proc = subprocess.run(
        [sys.executable, "-m", "sop.cli", "plan", str(tmp_path / "p.yaml"), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "sop: warning: a1: text not rendered:" in proc.stderr
