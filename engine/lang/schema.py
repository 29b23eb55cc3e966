"""Schema validation with located, author-friendly diagnostics.

The schemas are draft-07 JSON Schema files (for editors and other tools). Validation here compiles
the subset of keywords those files use into closures: it starts in microseconds where `jsonschema`
costs ~140 ms of imports on every `sop validate`, and it reports unknown keys at the key, missing
keys at their parent's key, and "exactly one schedule" in words. A differential test checks that it
accepts exactly what `jsonschema.Draft7Validator` accepts, with one deliberate difference: a NaN
(`.nan` in YAML) fails every range here, where JSON Schema lets it pass every comparison.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path as PathLib
from typing import Any

from ..core.diagnostics import Collector
from ..core.suggest import did_you_mean
from .loader import FLOW_CONDITION_HINT, Document, KeyPath
from .schema_source import (
    DATE_PATTERN,
    DURATION_PATTERN,
    GROUP_PATTERN,
    ID_PATTERN,
    NAME_PATTERN,
    PARAM_PATTERN,
    PERCENT_PATTERN,
    TIME_PATTERN,
    WINDOW_PATTERN,
)

SUPPORTED = frozenset(
    {
        "$schema",
        "$id",
        "$ref",
        "title",
        "description",
        "examples",
        "default",
        "definitions",
        "type",
        "properties",
        "additionalProperties",
        "propertyNames",
        "required",
        "enum",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "items",
        "oneOf",
        "anyOf",
        "allOf",
        "dependencies",
    }
)

Check = Callable[[Any, KeyPath, "_Ctx"], None]

_PATTERN_NAMES = {
    DURATION_PATTERN: "a duration such as 30m, 24h, 3d or 2w, of at most 10 years",
    TIME_PATTERN: 'a local time such as "08:00"',
    WINDOW_PATTERN: 'a window such as "22:00-08:00"',
    ID_PATTERN: "an id: up to 64 lower-case letters, digits, - and _, starting with a letter",
    PARAM_PATTERN: "a parameter name: up to 64 lower-case letters, digits and _",
    DATE_PATTERN: "a date such as 2026-12-01 (years 1970 to 2199)",
    NAME_PATTERN: "a name: up to 64 lower-case letters, digits and _, starting with a letter",
    PERCENT_PATTERN: "a percentage such as 30% (or write a number such as 0.3)",
    GROUP_PATTERN: "a group of members: everyone, tier:<id> or segment:<id>",
}


class _Ctx:
    """Where diagnostics go; a `trial` (an anyOf branch tried silently) only asks whether any
    would, so it skips the "did you mean" hints nobody reads (and difflib's import)."""

    __slots__ = ("doc", "out", "trial")

    def __init__(self, doc: Document, out: Collector, trial: bool = False) -> None:
        self.doc = doc
        self.out = out
        self.trial = trial


# The tail of a condition a `,` cut off inside `{ }`: `7d) >= 20%`, `x > 3`.
_CONDITION_TAIL = re.compile(r"[)%]|[<>]=?|[=!]=")


def _condition_tail(key: str) -> bool:
    """Whether an unknown key looks like the rest of an unquoted condition, not a misspelling."""
    return bool(_CONDITION_TAIL.search(key))


def json_path(path: KeyPath) -> str:
    """`$.stages["cold-start"].actions.welcome` for a value path."""
    parts = ["$"]
    for k in path:
        if isinstance(k, int):
            parts.append(f"[{k}]")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            parts.append(f".{k}")
        else:
            parts.append(f"[{json.dumps(k, ensure_ascii=False)}]")
    return "".join(parts)


def describe(path: KeyPath) -> str:
    """Human name of the thing at `path`: "action `welcome`", "stage `prep`", "`timezone`"."""
    names = {
        "stages": "stage",
        "actions": "action",
        "roles": "role",
        "backends": "backend",
        "metrics": "metric",
        "levels": "tier",
        "incidents": "incident",
        "templates": "template",
    }
    if len(path) >= 2 and isinstance(path[-2], str) and path[-2] in names:
        return f"{names[path[-2]]} `{path[-1]}`"
    if not path:
        return "the document"
    if isinstance(path[-1], int):
        return f"item {path[-1] + 1} of `{path[-2]}`" if len(path) > 1 else f"item {path[-1] + 1}"
    return f"`{path[-1]}`"


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    return "mapping"


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "empty",
}


def _show(v: Any) -> str:
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, (dict, list)) else _type_name(v)
    return s if len(s) <= 40 else s[:37] + "..."


class Validator:
    """A compiled schema; `validate(doc)` appends diagnostics to a collector."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._defs: dict[str, Check] = {}
        self._root = self._compile(schema)

    def validate(self, doc: Document, out: Collector) -> None:
        """Check `doc.data` against the schema."""
        self._root(doc.data, (), _Ctx(doc, out))

    def is_valid(self, data: Any) -> bool:
        """True when `data` has no schema errors (for tests and tools)."""
        from .loader import Document as _Doc

        out = Collector()
        self._root(data, (), _Ctx(_Doc("<data>", "", data), out))
        return not out.items

    # -- compilation -------------------------------------------------------------------------

    def _ref(self, ref: str) -> Check:
        name = ref.rsplit("/", 1)[-1]
        if name not in self._defs:
            self._defs[name] = lambda v, p, c: None  # placeholder for recursion
            target = self.schema["definitions"][name]
            self._defs[name] = self._compile(target)
        return lambda v, p, c: self._defs[name](v, p, c)

    def _compile(self, s: dict[str, Any]) -> Check:
        unknown = set(s) - SUPPORTED
        if unknown:
            raise ValueError(f"schema keywords not supported: {sorted(unknown)}")
        checks: list[Check] = []
        if "$ref" in s:
            return self._ref(s["$ref"])
        for sub in s.get("allOf", []):
            checks.append(self._compile(sub))
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            checks.append(self._type_check(types))
        if "enum" in s:
            checks.append(self._enum_check(s["enum"]))
        if "pattern" in s or "minLength" in s or "maxLength" in s:
            checks.append(
                self._string_check(s.get("pattern"), s.get("minLength"), s.get("maxLength"))
            )
        if s.get("format") == "date":
            checks.append(self._date_check())
        if {"minimum", "maximum", "exclusiveMinimum"} & set(s):
            checks.append(
                self._range_check(s.get("minimum"), s.get("maximum"), s.get("exclusiveMinimum"))
            )
        if {
            "properties",
            "additionalProperties",
            "required",
            "propertyNames",
            "dependencies",
            "minProperties",
            "maxProperties",
        } & set(s):
            checks.append(self._object_check(s))
        if {"items", "minItems", "maxItems"} & set(s):
            checks.append(self._array_check(s.get("items"), s.get("minItems"), s.get("maxItems")))
        if "oneOf" in s:
            checks.append(self._one_of(s["oneOf"]))
        if "anyOf" in s:
            checks.append(self._any_of(s["anyOf"]))
        if len(checks) == 1:
            return checks[0]

        def all_checks(v: Any, p: KeyPath, c: _Ctx) -> None:
            n = len(c.out.items)
            for ch in checks:
                ch(v, p, c)
                if len(c.out.items) > n:  # one finding per value: later ones are noise
                    return

        return all_checks

    def _type_check(self, types: list[str]) -> Check:
        preds = [_TYPES[t] for t in types]
        words = " or ".join(_TYPE_WORDS[t] for t in types)

        def check(v: Any, p: KeyPath, c: _Ctx) -> None:
            for pr in preds:
                if pr(v):
                    return
            hint = None
            if types == ["string"] and isinstance(v, (bool, int, float)) and not c.trial:
                # YAML read `true`, `yes` or `10` as a value of its own: quotes keep it text
                shown = str(v).lower() if isinstance(v, bool) else _show(v)
                hint = f'quote it to keep it as text, e.g. "{shown}"'
            c.out.add(
                "SOP102",
                c.doc.span(p),
                f"{describe(p)} must be {words}, not {_type_name(v)} ({_show(v)})",
                hint=hint,
                json_path=json_path(p),
            )

        return check

    def _enum_check(self, allowed: list[Any]) -> Check:
        allowed_set = set(allowed)

        def check(v: Any, p: KeyPath, c: _Ctx) -> None:
            if isinstance(v, (str, int, float)) and v in allowed_set:
                return
            hint = None if c.trial else did_you_mean(str(v), allowed)
            shown = ", ".join(str(a) for a in allowed)
            c.out.add(
                "SOP103",
                c.doc.span(p),
                f"{describe(p)}: {_show(v)} is not one of {shown}",
                hint=hint,
                json_path=json_path(p),
            )

        return check

    def _string_check(
        self, pattern: str | None, min_length: int | None, max_length: int | None = None
    ) -> Check:
        rx = re.compile(pattern) if pattern else None
        what = _PATTERN_NAMES.get(pattern or "", f"text matching {pattern}")

        def check(v: Any, p: KeyPath, c: _Ctx) -> None:
            if not isinstance(v, str):
                return
            if min_length is not None and len(v) < min_length:
                c.out.add(
                    "SOP103",
                    c.doc.span(p),
                    f"{describe(p)} must not be empty",
                    json_path=json_path(p),
                )
            elif max_length is not None and len(v) > max_length:
                c.out.add(
                    "SOP103",
                    c.doc.span(p),
                    f"{describe(p)} is longer than {max_length} characters",
                    json_path=json_path(p),
                )
            elif rx is not None and not rx.search(v):
                c.out.add(
                    "SOP103",
                    c.doc.span(p),
                    f"{describe(p)}: {_show(v)} is not {what}",
                    json_path=json_path(p),
                )

        return check

    def _date_check(self) -> Check:
        """`format: date`: the day exists (2026-02-30 does not); the pattern checks the shape."""
        from datetime import date

        def check(v: Any, p: KeyPath, c: _Ctx) -> None:
            if not isinstance(v, str):
                return
            try:
                date.fromisoformat(v)
            except ValueError as e:
                c.out.add(
                    "SOP103",
                    c.doc.span(p),
                    f"{describe(p)}: {_show(v)} is not a real date ({e})",
                    json_path=json_path(p),
                )

        return check

    def _range_check(self, lo: float | None, hi: float | None, xlo: float | None) -> Check:
        def check(v: Any, p: KeyPath, c: _Ctx) -> None:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return
            bad = None
            if v != v:  # NaN passes every comparison (and jsonschema): refuse it here
                bad = "a number"
            elif lo is not None and v < lo:
                bad = f"at least {lo}"
            elif xlo is not None and v <= xlo:
                bad = f"more than {xlo}"
            elif hi is not None and v > hi:
                bad = f"at most {hi}"
            if bad:
                c.out.add(
                    "SOP103",
                    c.doc.span(p),
                    f"{describe(p)} must be {bad}, not {v}",
                    json_path=json_path(p),
                )

        return check

    def _object_check(self, s: dict[str, Any]) -> Check:
        props = {k: self._compile(v) for k, v in s.get("properties", {}).items()}
        extra = s.get("additionalProperties", True)
        extra_check = self._compile(extra) if isinstance(extra, dict) else None
        closed = extra is False
        required = s.get("required", [])
        names = s.get("propertyNames") or {}
        name_rx = re.compile(names["pattern"]) if "pattern" in names else None
        name_what = _PATTERN_NAMES.get(names.get("pattern", ""), "")
        name_max = names.get("maxLength")
        deps: dict[str, list[str]] = s.get("dependencies", {})
        min_props = s.get("minProperties")
        max_props = s.get("maxProperties")
        prop_names = sorted(props)

        def check(v: Any, p: KeyPath, c: _Ctx) -> None:
            if not isinstance(v, dict):
                return
            doc = c.doc
            for key in required:
                if key not in v:
                    c.out.add(
                        "SOP101",
                        doc.key_span(p),
                        f"{describe(p)} is missing required key `{key}`",
                        json_path=json_path(p),
                    )
            if max_props is not None and len(v) > max_props:
                extra_key = list(v)[max_props]
                c.out.add(
                    "SOP103",
                    doc.key_span((*p, extra_key)),
                    f"{describe(p)} has {len(v)} entries; at most {max_props} are allowed",
                    json_path=json_path(p),
                )
            if min_props is not None and len(v) < min_props:
                c.out.add(
                    "SOP101",
                    doc.key_span(p),
                    f"{describe(p)} needs at least one of: {', '.join(prop_names)}",
                    json_path=json_path(p),
                )
            for key, val in v.items():
                kp = (*p, key)
                if name_rx is not None and not name_rx.search(key):
                    c.out.add(
                        "SOP103",
                        doc.key_span(kp),
                        f"`{key}` is not {name_what}",
                        json_path=json_path(kp),
                    )
                    continue
                if name_max is not None and len(key) > name_max:
                    c.out.add(
                        "SOP103",
                        doc.key_span(kp),
                        f"a key of {describe(p)} is longer than {name_max} characters",
                        json_path=json_path(kp),
                    )
                    continue
                sub = props.get(key)
                if sub is not None:
                    sub(val, kp, c)
                elif extra_check is not None:
                    extra_check(val, kp, c)
                elif closed:
                    hint = None
                    if not c.trial:
                        hint = (
                            did_you_mean(key, prop_names)
                            or f"allowed keys: {', '.join(prop_names)}"
                        )
                        if _condition_tail(key):
                            hint = FLOW_CONDITION_HINT
                    c.out.add(
                        "SOP100",
                        doc.key_span(kp),
                        f"unknown key `{key}` in {describe(p)}",
                        hint=hint,
                        json_path=json_path(kp),
                    )
                need = deps.get(key)
                if need:
                    missing = [n for n in need if n not in v]
                    if missing:
                        c.out.add(
                            "SOP101",
                            doc.key_span(kp),
                            f"`{key}` needs `{'`, `'.join(missing)}` in {describe(p)}",
                            json_path=json_path(kp),
                        )

        return check

    def _array_check(
        self, items: dict[str, Any] | None, min_items: int | None, max_items: int | None = None
    ) -> Check:
        item_check = self._compile(items) if items else None

        def check(v: Any, p: KeyPath, c: _Ctx) -> None:
            if not isinstance(v, list):
                return
            if min_items is not None and len(v) < min_items:
                c.out.add(
                    "SOP103",
                    c.doc.span(p),
                    f"{describe(p)} needs at least {min_items} item(s)",
                    json_path=json_path(p),
                )
            if max_items is not None and len(v) > max_items:
                c.out.add(
                    "SOP103",
                    c.doc.span(p),
                    f"{describe(p)} has {len(v)} items; at most {max_items} are allowed",
                    json_path=json_path(p),
                )
                return
            if item_check is not None:
                for i, item in enumerate(v):
                    item_check(item, (*p, i), c)

        return check

    def _one_of(self, branches: list[dict[str, Any]]) -> Check:
        keys = [b["required"][0] for b in branches if list(b) == ["required"]]
        if len(keys) != len(branches):
            raise ValueError("oneOf is supported only as a choice of required keys")
        listed = ", ".join(keys)

        def check(v: Any, p: KeyPath, c: _Ctx) -> None:
            if not isinstance(v, dict):
                return
            found = [k for k in keys if k in v]
            if len(found) == 1:
                return
            code = "SOP104" if "cron" in keys else "SOP101"
            if not found:
                c.out.add(
                    code,
                    c.doc.key_span(p),
                    f"{describe(p)} needs one of: {listed}",
                    json_path=json_path(p),
                )
            else:
                c.out.add(
                    code,
                    c.doc.key_span((*p, found[1])),
                    f"{describe(p)} has {' and '.join(f'`{k}`' for k in found)};"
                    f" give exactly one of {listed}",
                    json_path=json_path(p),
                )

        return check

    def _any_of(self, branches: list[dict[str, Any]]) -> Check:
        compiled = [(self._compile(b), b.get("type")) for b in branches]
        words = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for _, t in compiled)

        def check(v: Any, p: KeyPath, c: _Ctx) -> None:
            fitting = [ch for ch, t in compiled if t is None or _TYPES[t](v)]
            if not fitting:
                c.out.add(
                    "SOP102",
                    c.doc.span(p),
                    f"{describe(p)} must be {words}, not {_type_name(v)}",
                    json_path=json_path(p),
                )
                return
            # Report the errors of the branch whose type fits; try the others silently first.
            for ch in fitting[:-1]:
                trial = _Ctx(c.doc, Collector(), trial=True)
                ch(v, p, trial)
                if not trial.out.items:
                    return
            fitting[-1](v, p, c)

        return check


def schema_text(name: str = "playbook.schema.json") -> str:
    """The text of a shipped schema: from the source tree, else from the installed package."""
    here = PathLib(__file__).resolve().parents
    # the source tree keeps schemas/ at its top; an installed package has them as sop/engine/schemas
    for local in (here[2] / "schemas" / name, here[1] / "schemas" / name):
        if local.is_file():
            return local.read_text(encoding="utf-8")
    from importlib import resources  # a zipped install: slower to import, so only here

    return resources.files("sop.engine.schemas").joinpath(name).read_text(encoding="utf-8")


@cache
def load_schema(name: str = "playbook.schema.json") -> dict[str, Any]:
    """A shipped schema file as JSON."""
    data: dict[str, Any] = json.loads(schema_text(name))
    return data


@cache
def validator(name: str = "playbook.schema.json") -> Validator:
    """The compiled validator of a shipped schema."""
    return Validator(load_schema(name))
