"""Property-based tests: random and mutated input never produces a traceback.

Every outcome is a list of located diagnostics and an exit code in {0, 1, 2}; and the fast schema
validator agrees with `jsonschema`'s Draft7Validator on mutated playbook data.
"""

from __future__ import annotations

import copy
import json
import os
import string
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sop.engine.core.status import validation_exit
from sop.engine.lang.loader import load_text
from sop.engine.lang.schema import load_schema, validator
from sop.engine.validate import Options, validate_file

from tests.conftest import PLAYBOOKS

REFERENCE_TEXTS = {p.name: p.read_text(encoding="utf-8") for p in PLAYBOOKS.glob("*.yaml")}
SETTINGS = settings(
    max_examples=int(os.environ.get("SOP_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "on",
            "yes",
            "12:30",
            "2026-12-01",
            "014",
            "0 8 * * *",
            "24h",
            "3d",
            "members >= 200",
            "${x}",
            "{{ member.name }}",
            "{% if %}",
            "*",
            "&a",
        ]
    ),
)
keys = st.one_of(
    st.sampled_from(
        [
            "playbook",
            "timezone",
            "stages",
            "actions",
            "cron",
            "do",
            "on",
            "after",
            "exit",
            "when",
            "roles",
            "headcount",
            "templates",
            "day",
            "time",
            "to",
        ]
    ),
    st.text(alphabet=string.ascii_lowercase + "-_", min_size=1, max_size=8),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)


def _outcome(path: Path) -> None:
    res = validate_file(str(path), Options(plan_days=14))
    for d in res.diagnostics:
        assert d.line >= 1 and d.column >= 1 and d.code.startswith("SOP") and d.message
        assert d.file
    unreadable = any(d.code in {"SOP003", "SOP004", "SOP006"} for d in res.diagnostics)
    code = validation_exit(res.errors, res.warnings, strict=False, unreadable=unreadable)
    assert code in (0, 1, 2)


@SETTINGS
@given(doc=documents)
def test_generated_documents(tmp_path: Path, doc: Any) -> None:
    p = tmp_path / "gen.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    _outcome(p)


@SETTINGS
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_arbitrary_text(tmp_path: Path, text: str) -> None:
    p = tmp_path / "text.yaml"
    p.write_text(text, encoding="utf-8")
    _outcome(p)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "bytes.yaml"
    p.write_bytes(data)
    _outcome(p)


mutation = st.tuples(
    st.sampled_from(["delete", "duplicate", "swap", "insert", "replace", "indent", "truncate"]),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.sampled_from(
        [
            "",
            ":",
            "- ",
            "  ",
            "{",
            "]",
            "'",
            '"',
            "&x",
            "*x",
            "!!str",
            "#",
            "on: yes",
            "cron: x",
            "after: prep",
            "when: members >",
            "{{",
            "${nope}",
            "day: -1",
            "do: post",
            "\t",
        ]
    ),
)


def _mutate(text: str, ops: list[tuple[str, int, int, str]]) -> str:
    lines = text.splitlines()
    for op, a, b, token in ops:
        if not lines:
            break
        i, j = a % len(lines), b % len(lines)
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert":
            col = b % (len(lines[i]) + 1)
            lines[i] = lines[i][:col] + token + lines[i][col:]
        elif op == "replace":
            head, sep, _ = lines[i].partition(": ")
            lines[i] = head + sep + token if sep else token
        elif op == "indent":
            lines[i] = "  " + lines[i]
        else:
            lines = lines[: i + 1]
    return "\n".join(lines) + "\n"


@SETTINGS
@given(
    name=st.sampled_from(sorted(REFERENCE_TEXTS)), ops=st.lists(mutation, min_size=1, max_size=4)
)
def test_mutated_reference_playbooks(tmp_path: Path, name: str, ops: list) -> None:
    frag_dir = tmp_path / "fragments"
    frag_dir.mkdir(exist_ok=True)
    for f in (PLAYBOOKS / "fragments").glob("*.yaml"):
        (frag_dir / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    p = tmp_path / name
    p.write_text(_mutate(REFERENCE_TEXTS[name], ops), encoding="utf-8")
    _outcome(p)


# -- the fast validator agrees with jsonschema --------------------------------------------

DATA = {n: load_text(t).data for n, t in REFERENCE_TEXTS.items()}
REFERENCE_JSONSCHEMA = jsonschema.Draft7Validator(load_schema())


def _paths(v: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*prefix, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*prefix, i))
    return out


data_mutation = st.tuples(
    st.sampled_from(["delete", "set", "add"]), st.integers(0, 10**6), scalars, keys
)


def _apply(doc: Any, ops: list) -> Any:
    doc = copy.deepcopy(doc)
    for op, n, value, key in ops:
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = paths[n % len(paths)]
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        last = path[-1]
        if op == "delete":
            del parent[last]
        elif op == "set":
            parent[last] = value
        elif isinstance(parent[last], dict):
            parent[last][key] = value
    return doc


@settings(max_examples=2 * int(os.environ.get("SOP_HYPOTHESIS_EXAMPLES", "150")), deadline=None)
@given(name=st.sampled_from(sorted(DATA)), ops=st.lists(data_mutation, min_size=1, max_size=3))
def test_fast_validator_agrees_with_jsonschema(name: str, ops: list) -> None:
    doc = json.loads(json.dumps(_apply(DATA[name], ops), default=str))
    ours = validator().is_valid(doc)
    theirs = REFERENCE_JSONSCHEMA.is_valid(doc)
    assert ours == theirs, (ops, list(REFERENCE_JSONSCHEMA.iter_errors(doc))[:2])


def test_reference_data_is_valid_for_both() -> None:
    for doc in DATA.values():
        assert validator().is_valid(doc) and REFERENCE_JSONSCHEMA.is_valid(doc)
