"""The condition language's strings, `in` lists and window functions (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sop.engine.core import expr as ex

KNOWN = {"source": "string", "city": "enum", "x": "count", "rate": "ratio", "ok": "boolean"}


def codes(src: str, windows: bool = False) -> list[tuple[str, int, int]]:
    return [(p.code, p.start, p.end) for p in ex.check(ex.parse(src), KNOWN, windows=windows)]


def test_strings_and_lists_parse_and_type_check() -> None:
    assert codes('source == "invite"') == []
    assert codes("source in ['invite', 'kol'] and x >= 2") == []
    assert codes('city not in ["上海"]') == []
    assert codes("ok and x > 1") == []
    # text compared with a number, ordered text, a mixed list: located SOP242
    assert codes("source == 3") == [("SOP242", 0, 11)]
    assert codes('source < "a"') == [("SOP242", 0, 12)]
    assert codes('source in ["a", 2]') == [("SOP242", 16, 17)]
    assert codes("x + source > 1")[0][0] == "SOP242"


def test_window_functions_only_in_community_conditions() -> None:
    src = "avg(rate, 7d) >= 20%"
    assert codes(src, windows=True) == []
    assert codes(src) == [("SOP240", 0, 13)]
    assert codes("max(nope, 3d) > 1", windows=True) == [("SOP241", 4, 8)]
    node = ex.parse("avg(rate, 7d) >= 20% and min(x, 14d) > 3 or x > 1")
    assert ex.windows(node) == [("avg", "rate", 7), ("min", "x", 14)]
    env = {ex.window_key("avg", "rate", 7): 0.3, ex.window_key("min", "x", 14): 2.0, "x": 0}
    assert ex.evaluate(node, env) is False
    env[ex.window_key("min", "x", 14)] = 4.0
    assert ex.evaluate(node, env) is True


@pytest.mark.parametrize(
    ("src", "start", "message"),
    [
        ("foo(x, 7d) > 1", 0, "unknown function"),
        ("avg(x, 7) > 1", 7, "whole number of days"),
        ("avg(x, 0d) > 1", 7, "1 to 366 days"),
        ("x in []", 6, "empty list"),
        ('source == "abc', 10, "not closed"),
        ("7d > 1", 0, "only allowed inside"),
        ("x in [y]", 6, "only strings and numbers"),
    ],
)
def test_mistakes_are_located(src: str, start: int, message: str) -> None:
    with pytest.raises(ex.ExprSyntaxError) as err:
        ex.parse(src)
    assert err.value.problem.code == "SOP240"
    assert err.value.problem.start == start
    assert message in err.value.problem.message


def test_string_comparisons_name_each_literal() -> None:
    node = ex.parse('city == "北京" or source in ["a", "b"] or "c" != city')
    got = [(n.value, lit.value, lit.start) for n, lit in ex.string_comparisons(node)]
    assert got == [("city", "北京", 8), ("source", "a", 27), ("source", "b", 32), ("city", "c", 40)]


VALUES = st.sampled_from(["invite", "kol", "organic", "上海"])


@given(st.lists(VALUES, min_size=1, max_size=20), st.lists(VALUES, min_size=1, max_size=3))
def test_arrays_and_scalars_agree(sources: list[str], wanted: list[str]) -> None:
    """One condition, one answer: a member at a time (runtime) or all at once (simulator)."""
    listed = ", ".join(f'"{w}"' for w in wanted)
    node = ex.parse(f'source in [{listed}] and not (source == "kol")')
    vector = ex.evaluate(node, {"source": np.array(sources)})
    scalar = [ex.evaluate(node, {"source": s}) for s in sources]
    assert list(vector) == scalar
