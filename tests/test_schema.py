"""The shipped JSON Schemas: generated from one source, documented, and usable by editors."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from sop.engine.lang.schema import SUPPORTED, load_schema
from sop.engine.lang.schema_source import SCHEMAS, render

from tests.conftest import PLAYBOOKS, ROOT


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_is_generated_from_the_source(name: str) -> None:
    assert (ROOT / "schemas" / name).read_text(encoding="utf-8") == render(name)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_draft_07(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)


def _properties(node: Any, path: str = "$") -> list[tuple[str, dict]]:
    out = []
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            out.append((f"{path}.{key}", sub))
        for k, v in node.items():
            out += _properties(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _properties(v, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_property_has_a_description_and_examples(name: str) -> None:
    missing = [
        p
        for p, sub in _properties(load_schema(name))
        if "$ref" not in sub and not (sub.get("description") and sub.get("examples"))
    ]
    assert missing == []


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_uses_only_keywords_the_fast_validator_knows(name: str) -> None:
    used: set[str] = set()

    def walk(node: Any, in_props: bool = False) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not in_props:
                    used.add(k)
                    if k in ("examples", "enum", "default", "dependencies"):
                        continue  # values, not schemas
                walk(v, in_props=(k in ("properties", "definitions") and not in_props))
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(load_schema(name))
    assert used <= SUPPORTED


def test_reference_playbooks_carry_the_modeline() -> None:
    for p in PLAYBOOKS.rglob("*.yaml"):
        first = p.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=")
        target = (p.parent / first.split("=", 1)[1]).resolve()
        assert target.is_file(), p
        json.loads(target.read_text())
