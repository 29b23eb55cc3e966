"""Hypothesis strategies for the fuzz campaign: hostile inputs of every kind for every `sop` verb.

A `Case` is one command line plus the files it reads (playbooks, fragments, scenarios, CSVs, and
symlinks, FIFOs and folders where an attacker would put them). Values reach the extremes of every
field: numbers at and past their schema bounds, NaN-like and very long strings, control characters,
rich markup, CI workflow commands, template bombs, deep expressions, impossible dates, odd time
zones, every-minute crons and includes that try to leave the checkout. Big inputs are *recipes*
(a few bytes in the case, expanded when written) so that cases stay cheap to generate and to ship
to a worker. `tests/fuzz_harness.py` runs them; `tests/test_fuzz.py` and `bench/fuzz.py` share both.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"
SCHEMAS = ROOT / "schemas"
# Put into the workers' environment by the harness: a case whose output holds it leaked the env.
SECRET_ENV = "SOP_FUZZ_SECRET"
# Symlinks committed by an attacker point here; the harness makes it a copy of /etc/passwd outside
# the case folder. Never the real file: a command that follows a symlink to *write* (`-o`) would
# overwrite it, and workers may run as root.
DECOY_PASSWD = "@passwd"


class FileKind(StrEnum):
    """What a case file is on disk."""

    TEXT = "text"  # regular file with `data` as its bytes
    RECIPE = "recipe"  # regular file whose bytes `expand(recipe)` builds (big inputs)
    SYMLINK = "symlink"  # symlink to `data` (decoded; "@name" means the harness's decoy copy)
    FIFO = "fifo"  # named pipe: nobody ever writes to it
    DIR = "dir"  # empty folder


@dataclass(frozen=True)
class FileSpec:
    """One file a case creates in its working folder before the command runs."""

    path: str
    kind: FileKind = FileKind.TEXT
    data: bytes = b""
    recipe: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Case:
    """One `sop` invocation: verb, arguments, files written beforehand, extra environment."""

    verb: str
    args: tuple[str, ...]
    files: tuple[FileSpec, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    kind: str = ""  # input kind, e.g. "playbook:mutation", "csv:binary"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form, for recording failing cases."""
        return {
            "verb": self.verb,
            "args": list(self.args),
            "env": [list(kv) for kv in self.env],
            "kind": self.kind,
            "files": [
                {
                    "path": f.path,
                    "kind": str(f.kind),
                    "data": f.data.decode("utf-8", "surrogateescape"),
                    "recipe": list(f.recipe),
                }
                for f in self.files
            ],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Case:
        """Inverse of `as_dict`."""
        return Case(
            verb=d["verb"],
            args=tuple(d["args"]),
            env=tuple((k, v) for k, v in d.get("env", [])),
            kind=d.get("kind", ""),
            files=tuple(
                FileSpec(
                    f["path"],
                    FileKind(f["kind"]),
                    f.get("data", "").encode("utf-8", "surrogateescape"),
                    tuple(f.get("recipe", ())),
                )
                for f in d["files"]
            ),
        )


def text_file(path: str, text: str) -> FileSpec:
    """A regular file holding `text` (lone surrogates kept as bytes rather than failing)."""
    return FileSpec(path, FileKind.TEXT, text.encode("utf-8", "surrogatepass"))


# -- big inputs, built where they are written --------------------------------------------------


def expand(recipe: tuple[Any, ...]) -> bytes:
    """The bytes of a big generated file, from a small recipe."""
    kind, *rest = recipe
    if kind == "repeat":  # ("repeat", head, unit, count, tail)
        head, unit, count, tail = rest
        return head.encode() + unit.encode() * int(count) + tail.encode()
    if kind == "csv_rows":  # ("csv_rows", header, pattern, count): pattern formatted with i
        header, pattern, count = rest
        body = "".join(pattern.format(i=i, j=count - i) for i in range(int(count)))
        return (header + "\n" + body).encode()
    if kind == "bytes":  # ("bytes", seed, size): deterministic binary junk
        seed, size = rest
        x, out = int(seed) or 1, bytearray()
        while len(out) < size:  # xorshift: cheap, deterministic, covers every byte value
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            out += x.to_bytes(4, "little")
        return bytes(out[:size])
    raise ValueError(f"unknown recipe {kind!r}")


def spec_size(f: FileSpec) -> int:
    """Bytes the spec writes (symlink targets and FIFOs count as nothing)."""
    if f.kind is FileKind.TEXT:
        return len(f.data)
    if f.kind is FileKind.RECIPE:
        kind, *rest = f.recipe
        if kind == "repeat":
            return len(rest[0].encode()) + len(rest[1].encode()) * int(rest[2]) + len(rest[3])
        if kind == "csv_rows":  # estimate from two rows, exact enough for the 1 MB split
            return len(rest[0]) + 1 + int(rest[2]) * len(rest[1].format(i=rest[2], j=1).encode())
        if kind == "bytes":
            return int(rest[1])
    return 0


# -- YAML text with raw tokens ----------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A YAML token written as is (`.nan`, `2026-02-30`, `*alias`), never quoted."""

    token: str


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_ ./-]*")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}


def scalar(v: Any) -> str:
    """One YAML flow scalar for `v` (strings plain when unambiguous, else double-quoted)."""
    if isinstance(v, Raw):
        return v.token
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        return repr(v)
    s = str(v)
    if _PLAIN.fullmatch(s) and s.lower() not in _RESERVED and not s.endswith(" ") and len(s) < 80:
        return s
    return json.dumps(s, ensure_ascii=False)


def flow(v: Any) -> str:
    """`v` as one line of YAML flow style."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{scalar(k)}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    return scalar(v)


def block(v: Any, indent: int = 0) -> str:
    """`v` as block-style YAML (mappings and lists of mappings nested; leaves in flow style)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, dict) and x:
                lines.append(f"{pad}{scalar(k)}:")
                lines.append(block(x, indent + 2))
            elif isinstance(x, list) and x and all(isinstance(i, dict) and i for i in x):
                lines.append(f"{pad}{scalar(k)}:")
                lines.extend(f"{pad}  - {flow(i)}" for i in x)
            else:
                lines.append(f"{pad}{scalar(k)}: {flow(x)}")
        return "\n".join(lines)
    return pad + flow(v)


def dump(doc: Any) -> str:
    """A whole document: block style at the top, one trailing newline."""
    return block(doc) + "\n"


# -- extreme values ---------------------------------------------------------------------------

NUMBERS = [
    0, -1, 1, 2, -(2**31), 2**31, 2**53 + 1, 2**63, -(2**63), 2**64, 10**18, 10**30, 10**100,
    1e308, -1e308, 5e-324, 1e-308, -0.0, 0.5, 1.0000001, 0.9999999, 1e9, 1e7, 1e300,
    float("inf"), float("-inf"), float("nan"),
]  # fmt: skip
RAW_NUMBERS = [
    "1e308", "1.0e+308", "1.0e+309", "-1.0e+309", "1e999", ".NaN", ".Inf", "-.inf", "0x10",
    "0o777", "010", "1_000", "12:30:00", "999999999999999999999999999999999999", "+1", "-0",
    "1e3", "0.", "-.5", "1__0",
]  # fmt: skip
SECRET_REFS = ["${env:SOP_FUZZ_SECRET}", "${env:HOME}", "${env:PATH}", "${env:X}", "${secret}"]
NASTY_STRINGS = [
    "", " ", "NaN", "nan", "inf", "-Infinity", "null", "~", "true", "yes", "on", "no",
    "\x00", "a\x00b", "\x1b[2J\x1b[H", "\x1b[31mred\x1b[0m", "\x1b]8;;https://evil.example\x07link\x1b]8;;\x07",
    "\r\n", "line1\nline2", "\n::error::pwned", "::error file=x::pwned", "\n::add-mask::x",
    "%0A::error::x", "\u202eevil", "\ufeffbom", "\u2028sep", "\x7f\x85\xa0", "\x0c\x0b\x08",
    "[/bold]", "[bold red]x", "[link=https://evil.example]click[/link]", "[/]", "[", "]",
    "<script>alert(1)</script>", "]]>", "&#0;", '"quoted"', "'", "\\", "%s%n%x", "{}", "{0}",
    "职场成长营", "职" * 5000, "😀" * 100, "a" * 100_000, "\U0010ffff", "\ud800",
    *SECRET_REFS, "${", "${env:}", "{{", "{%", "}}", "#", "&a", "*a", "!!binary", "- x", ": x",
    "x" * 70 + ".yaml", "file:///etc/passwd", "javascript:alert(1)",
]  # fmt: skip
DATES = [
    "2026-02-30", "2026-13-01", "2026-00-10", "0000-01-01", "0001-01-01", "9999-12-31",
    "9999-12-25", "10000-01-01", "2026-2-3", "2024-02-29", "2026-02-29", "1970-01-01",
    "-0001-01-01", "2026-12-01T00:00:00", "2026-12-01 25:00", "2026-12-01", "１２３４-01-01",
]  # fmt: skip
TIMES = ["24:00", "23:59", "25:61", "00:00", "-1:00", "9:5", "12:30:00", "12:30", "99:99"]
DURATIONS = [
    "0d", "0m", "-1d", "1d", "1m", "30m", "1h", "1w", "999999999d", "99999999999999999999d",
    "1e308d", "1.5d", "1y", "", "d", "3 d", "P1D", "10000w", "5000000h", "1w1d1h1m", "0w0d0h0m",
    "2147483648m", "3650d", "3651d", "36500d",
]  # fmt: skip
TIMEZONES = [
    "UTC", "Asia/Shanghai", "Europe/Berlin", "Pacific/Kiritimati", "Pacific/Pago_Pago",
    "America/St_Johns", "Asia/Kathmandu", "Etc/GMT+12", "Etc/GMT-14", "EST5EDT", "Factory",
    "posixrules", "localtime", "", "Local", "+08:00", "UTC+8", "utc", "/etc/passwd",
    "../../../../etc/passwd", "../../../../proc/self/environ", "Asia/Shanghai\n", "\x00",
    "/".join(["a"] * 300), "A" * 5000, "Europe/Nowhere", "America/Argentina/ComodRivadavia",
]  # fmt: skip
CRONS = [
    "* * * * *", "*/1 * * * *", "0-59 * * * *", "0 0 30 2 *", "0 0 31 2 *", "0 0 31 * *",
    "0 0 29 2 *", "0 0 15W * *", "0 0 L * *", "0 0 * * 5L", "0 0 * * 1#5", "0 0 * * 6#6",
    "0 0 * * 7", "* * * * * *", "@yearly", "@reboot", "@every_minute", "", "60 24 32 13 8",
    "*/0 * * * *", "-1 * * * *", "0 0 * * 1-5/0", ",".join(str(i) for i in range(60)) + " * * * *",
    "H * * * *", "0 0 ? * *", "0 0 1-31/2 * 0-6", "0 0 1 1 * 2099", "0 0 1 1 * 1970",
    "0 0 29 2 1", "59 23 31 12 *", "* * * * * * *", "0 0 * * MON-FRI", "0 0 * JAN-DEC *",
    "9999999999 * * * *", "0 0 0 0 0", "0 0 * * 8", "* " * 200,
]  # fmt: skip
EXPRESSIONS = [
    "(" * 130 + "members" + ")" * 130 + " >= 1",
    "(" * 1000 + "members" + ")" * 1000 + " >= 1",
    "(" * 20000 + "1",
    "members" + " + members" * 1000 + " >= 1",
    "members" + " * 2" * 5000 + " > 0",
    "not " * 2000 + "members >= 1",
    "- " * 3000 + "1 > 0",
    " and ".join(["members >= 1"] * 2000),
    "members >= 1e308", "members >= 1e309", "members / 0 > 1", "members % 0 > 1",
    "members ** 999999999 > 1", "10 ** 10 ** 10 > 1", "members >= 20%%", "members >= %",
    "members >= -%", "members >= 200 and", "__import__('os').system('id')", "members.__class__",
    "members >= nan", "members >= inf", "x" * 10000 + " > 1", "成员 >= 1", "members >= 1\n",
    "members >= 200 and daily_speak_rate >= 20%", "true", "1", "", "members >= 1 or" * 100,
    "members >= '1'", "[1] > 0", "members[0] > 1", "f(members) > 1", "members >= 9" * 50,
]  # fmt: skip
TEMPLATES = [
    "{{ 'a' * 10**9 }}", "{{ 'a' * 1000000000 }}", "{{ 10**(10**9) }}", "{{ 9**9**9 }}",
    "{{ 2**1000000 }}", "{{ [1] * 10**9 }}", "{{ (1,) * 10**9 }}", "{{ range(10**9)|list }}",
    "{{ range(10**9)|sum }}", "{{ range(10**9)|join }}", "{{ ''.join(['a'] * 10**8) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% for i in range(10**9) %}x{% endfor %}", "{{ 'a'|center(10**9) }}",
    "{{ 'a'|indent(10**9) }}", "{{ '%999999999s' % 'a' }}", "{{ '{:>999999999}'.format(1) }}",
    "{{ lipsum(10**6) }}", "{{ 'x'|wordwrap(1) }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% set x = 'a' %}{% for i in range(40) %}{% set x = x ~ x %}{% endfor %}{{ x }}",
    "{{ ().__class__.__base__.__subclasses__() }}", "{{ self.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.environ }}", "{{ lipsum.__globals__['os'].environ }}",
    "{{ config }}", "{{ request }}", "{{ namespace.__init__.__globals__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ environ }}", "{{ env }}",
    "{% include '/etc/passwd' %}", "{% include '/proc/self/environ' %}",
    "{% import '/proc/self/environ' as x %}", "{% extends '../../etc/passwd' %}",
    "{{ member.name * 10**9 }}", "{{ params.group_name * 10**8 }}",
    "{{ " + "(" * 500 + "1" + ")" * 500 + " }}", "{{ " + " + ".join(["1"] * 5000) + " }}",
    "{{", "{% if %}", "{% endfor %}", "{{ undefined_var }}",
    "{{ member.name }}", "{{ member.name|e }}", "{{ 1/0 }}", "{{ 'a' ~ 'b' }}",
    "{{ [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]] }}", "{{ {}.update({}) }}",
    "{{ 10**300 * 10**300 }}",
    "{{ 1e308 * 10 }}", "{{ '\\x1b[2J' }}", "{{ '\n::error::x' }}", "{{ '[/bold]' }}",
    "{% raw %}{{ x }}{% endraw %}", "{#", "{# comment #}" * 1000,
]  # fmt: skip
INCLUDES = [
    "/proc/self/environ", "../../proc/self/environ", "../" * 20 + "proc/self/environ",
    "/etc/passwd", "../../etc/passwd", "../" * 20 + "etc/passwd", "/dev/zero", "/dev/urandom",
    "/dev/stdin", "/proc/self/fd/0", "/proc/self/cmdline", "/proc/self/maps", "fifo.yaml",
    "dir.yaml", "leak-env.yaml", "leak-passwd.yaml", "leak-zero.yaml", "up/fragments/x.yaml",
    "fragments/../../../../etc/passwd", "x\x00y.yaml", "", ".", "fragments/", "missing.yaml",
    "p.yaml", "big.yaml", "a" * 5000 + ".yaml", "~/.bashrc", "file:///etc/passwd",
    "\\\\server\\share\\x.yaml", "%2e%2e/%2e%2e/etc/passwd", "fragments/fission.yaml",
    "frag.yaml", "frag.yaml\n", " frag.yaml", "FRAG.YAML", "frag.yaml/", "./frag.yaml",
    "fragments/ok.yaml", "/".join([".."] * 100) + "/etc/passwd",
]  # fmt: skip
IDENTS = [
    "a", "ops", "x" * 300, "a-b_c", "-a", "A", "a\n", "a b", "0a", "职", "[/bold]",
    "a\x00", "a\x1b[2J", "__proto__", "constructor", "prep", "cold-start", "growth",
]  # fmt: skip


def _raw(tokens: list[str]) -> st.SearchStrategy[Any]:
    return _raw_cached(tuple(tokens))


@functools.cache
def _raw_cached(tokens: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from([Raw(t) for t in tokens])


# Strategy factories are cached: building and validating a strategy costs far more than a draw.
@functools.cache
def generated_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Arbitrary short text: any code point, control characters and CJK included."""
    return st.text(
        st.characters(codec="utf-8") | st.sampled_from("\x00\x1b\n\r\t\x7f[]{}:%$#职"),
        max_size=max_size,
    )


@functools.cache
def extreme_scalars() -> st.SearchStrategy[Any]:
    """A value at an edge: numbers, NaN-likes, nasty strings, dates, durations, crons..."""
    return st.one_of(
        st.sampled_from(NUMBERS),
        _raw(RAW_NUMBERS),
        st.sampled_from(NASTY_STRINGS),
        _raw(DATES),
        st.sampled_from(DATES),
        st.sampled_from(TIMES),
        st.sampled_from(DURATIONS),
        st.sampled_from(TIMEZONES),
        st.sampled_from(CRONS),
        st.sampled_from(EXPRESSIONS),
        st.sampled_from(TEMPLATES),
        st.sampled_from(INCLUDES),
        st.sampled_from(IDENTS),
        st.integers(),
        st.floats(),
        generated_text(),
        st.booleans(),
        st.none(),
    )


@functools.cache
def extreme_values() -> st.SearchStrategy[Any]:
    """An extreme scalar, or a small container of them (wrong types where scalars belong)."""
    leaf = extreme_scalars()
    return st.one_of(
        leaf,
        leaf,
        leaf,
        st.lists(leaf, max_size=3),
        st.dictionaries(st.sampled_from(IDENTS) | generated_text(8), leaf, max_size=3),
        _raw(["[]", "{}", "[[[[[[[[[[]]]]]]]]]]", "*nope", "!!binary aGk=", "!!set {a, b}"]),
    )


# -- shipped inputs and text-level mutation -------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """Where a YAML node sits in a text: offsets of its value, and what it is."""

    start: int
    end: int
    kind: str  # "scalar", "map", "seq"
    flow: bool
    column: int
    path: str


def _offsets(text: str) -> list[int]:
    starts, pos = [0], 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def slots(text: str) -> tuple[Slot, ...]:
    """Every node of a YAML text with its character span (composed once per shipped file)."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    line_starts = _offsets(text)

    def off(mark: Any) -> int:
        return line_starts[mark.line] + mark.column

    out: list[Slot] = []

    def walk(n: Any, path: str) -> None:
        kind = {yaml.ScalarNode: "scalar", yaml.MappingNode: "map", yaml.SequenceNode: "seq"}
        k = kind[type(n)]
        is_flow = bool(getattr(n, "flow_style", False))
        out.append(Slot(off(n.start_mark), off(n.end_mark), k, is_flow, n.start_mark.column, path))
        if isinstance(n, yaml.MappingNode):
            for key, val in n.value:
                walk(val, f"{path}.{key.value}")
        elif isinstance(n, yaml.SequenceNode):
            for i, val in enumerate(n.value):
                walk(val, f"{path}[{i}]")

    if node is not None:
        walk(node, "")
    return tuple(s for s in out if s.path)  # never the root itself


@functools.cache
def shipped() -> dict[str, tuple[str, tuple[Slot, ...]]]:
    """Shipped playbooks, fragments and scenarios: name -> (text, slots)."""
    out = {}
    for p in sorted(PLAYBOOKS.rglob("*.yaml")):
        text = p.read_text(encoding="utf-8")
        out[str(p.relative_to(PLAYBOOKS))] = (text, slots(text))
    return out


def _names(prefix: str) -> list[str]:
    return [n for n in shipped() if n.startswith(prefix)]


PLAYBOOK_NAMES = [n for n in sorted(Path(PLAYBOOKS).glob("*.yaml"))]


@functools.cache
def index(n: int) -> st.SearchStrategy[int]:
    """A cached `integers(0, n - 1)`."""
    return st.integers(0, n - 1)


@st.composite
def mutated(draw: Any, name: str, max_mutations: int = 3) -> str:
    """A shipped YAML text with one to three nodes replaced by, or given, an extreme value."""
    text, spots = shipped()[name]
    n = draw(index(max_mutations)) + 1
    chosen = sorted({draw(index(len(spots))) for _ in range(n)}, key=lambda i: -spots[i].start)
    taken_end = len(text) + 1
    for i in chosen:
        s = spots[i]
        if s.end > taken_end:  # overlapping an edit already made (nested node): skip
            continue
        how = choose(draw, ["replace", "replace", "replace", "add-key", "delete"])
        value = flow(draw(extreme_values()))
        if how == "add-key" and s.kind == "map":
            key = scalar(draw(st.sampled_from(IDENTS) | generated_text(10)))
            if s.flow:
                text = text[: s.start + 1] + f"{key}: {value}, " + text[s.start + 1 :]
            else:
                text = text[: s.start] + f"{key}: {value}\n" + " " * s.column + text[s.start :]
        elif how == "delete":
            text = text[: s.start] + "null" + text[s.end :]
        else:
            text = text[: s.start] + value + text[s.end :]
        taken_end = s.start
    return text


# -- documents from the JSON schemas ----------------------------------------------------------


@functools.cache
def schema(name: str) -> dict[str, Any]:
    """A JSON schema of schemas/ (read each run: other work may widen or narrow its ranges)."""
    return dict(json.loads((SCHEMAS / name).read_text(encoding="utf-8")))


def _edges(node: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in node:
            b = node[key]
            out += [b, b - 1, b + 1, b * 10, -b]
            if isinstance(b, float) or node.get("type") == "number":
                out += [b - 1e-9, b + 1e-9]
    return out


def from_schema(node: dict[str, Any], root: dict[str, Any], depth: int = 0) -> Any:
    """A strategy for documents of `node`: mostly in shape, values at and past the bounds."""
    if "$ref" in node:
        ref = node["$ref"].split("/")[-1]
        return st.deferred(lambda: from_schema(root["definitions"][ref], root, depth + 1))
    for key in ("anyOf", "oneOf"):
        if key in node:
            return st.one_of([from_schema(n, root, depth + 1) for n in node[key]])
    if "enum" in node:
        return st.sampled_from(node["enum"]) | (extreme_scalars() if depth < 99 else st.nothing())
    typ = node.get("type", "object")
    if isinstance(typ, list):
        return st.one_of([from_schema({**node, "type": t}, root, depth) for t in typ])
    wild = extreme_scalars()
    if typ in ("integer", "number"):
        edges = _edges(node)
        base = st.integers(-5, 400) if typ == "integer" else st.floats(-1, 2)
        return st.one_of(
            base, st.sampled_from(edges) if edges else base, st.sampled_from(NUMBERS), wild
        )
    if typ == "string":
        pattern = node.get("pattern")
        examples = node.get("examples") or ["x"]
        base = st.sampled_from(examples)
        if pattern:
            base = base | st.from_regex(pattern, fullmatch=True).filter(lambda s: len(s) < 60)
        return st.one_of(base, base, wild)
    if typ == "boolean":
        return st.booleans() | wild
    if typ == "array":
        item = node.get("items", {})
        if depth > 6:
            return st.just([])
        return st.lists(from_schema(item, root, depth + 1), max_size=3) | wild
    if typ == "object":
        if depth > 6:
            return st.just({})
        props = node.get("properties", {})
        required = node.get("required", [])
        extra = node.get("additionalProperties")
        fixed = {k: from_schema(v, root, depth + 1) for k, v in props.items() if k in required}
        optional = {
            k: from_schema(v, root, depth + 1) for k, v in props.items() if k not in required
        }
        parts: list[Any] = [st.fixed_dictionaries(fixed, optional=optional)]
        if isinstance(extra, dict):
            parts.append(
                st.dictionaries(
                    st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
                    | st.sampled_from(IDENTS),
                    from_schema(extra, root, depth + 1),
                    max_size=3,
                )
            )

        def merge(ds: list[dict[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for d in reversed(ds):
                out.update(d)
            return out

        return st.tuples(*parts).map(lambda t: merge(list(t))) | (wild if depth else st.nothing())
    return wild


@functools.cache
def schema_document(name: str) -> st.SearchStrategy[str]:
    """A YAML text generated from schemas/<name> with extreme values."""
    root = schema(name)
    return from_schema(root, root).map(lambda d: dump(d) if isinstance(d, dict) else flow(d) + "\n")


# -- structurally valid playbooks with knobs at their extremes --------------------------------


_PERCENT = st.integers(0, 99)


def one(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """A cached `sampled_from` (strategies are costly to build, cheap to draw from)."""
    try:
        return _one(options)
    except TypeError:  # unhashable options (dicts): built each time
        return st.sampled_from(options)


@functools.cache
def _one(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


def choose(draw: Any, options: Any) -> Any:
    """One of `options` (a list or tuple), through a cached strategy."""
    return draw(one(tuple(options)))


_PERMILLE = st.integers(0, 999)


def chance(draw: Any, p: float) -> bool:
    """True with probability about `p` (a window mid-range: hypothesis favours the bounds)."""
    return bool(317 <= draw(_PERMILLE) < 317 + p * 1000)


# Scales every `pick`'s chance of an extreme value: structural playbooks set it for "calm" cases.
_WILDNESS = [1.0]


def pick(draw: Any, options: tuple[Any, ...], p_wild: float = 0.15) -> Any:
    """One of `options`, or with probability about `p_wild` an extreme value instead."""
    if chance(draw, p_wild * _WILDNESS[-1]):
        return draw(extreme_values())
    return draw(one(options))


_CRON_OK = ("0 8 * * *", "30 20 * * *", "0 9 * * 1-5", "0 0 1 * *", "*/5 * * * *", *CRONS[:12])
_ACTION_SHAPES = ("cron", "cron", "day", "after", "before", "on")
_EVENTS = ("member.joined", "member.silent", "member.anniversary", "member.checkin_streak")
_EFFECTS = ("joins", "churn", "speak", "invites", "conversion", "participation", "ugc")


def _action(draw: Any, k: int, templates: tuple[str, ...]) -> dict[str, Any]:
    how = draw(one(_ACTION_SHAPES))
    a: dict[str, Any] = {"do": draw(one(("post", "task", "message", "announce")))}
    if how == "cron":
        a["cron"] = pick(draw, _CRON_OK if _WILDNESS[-1] else _CRON_OK[:5])
    elif how == "day":
        a["day"] = pick(draw, (0, 1, 7, 30, 60))
        a["time"] = pick(draw, ("10:00", "00:00", "23:59"))
    elif how in ("after", "before") and k > 0:
        a[how] = f"a{k - 1}"
        a["delay" if how == "after" else "by"] = pick(draw, ("1d", "0m", "1h", "7d"))
    else:
        a["on"] = draw(one(_EVENTS))
        a["to"] = "member"
        if a["on"] == "member.silent":
            a["for"] = pick(draw, ("72h", "1m"))
        elif a["on"] == "member.anniversary":
            a["at"] = pick(draw, (("30d",), ("1m", "0d"), ("30d", "90d", "365d")))
        elif a["on"] == "member.checkin_streak":
            a["streak"] = pick(draw, (7, 1))
    if draw(st.booleans()):
        a["template"] = draw(one(templates))
    else:
        a["text"] = pick(draw, ("do it", "{{ member.name }}", "{{ params.group_name }}"), 0.3)
    if chance(draw, 0.25):
        a["if"] = pick(draw, ("members >= 10", "true", "days_in_stage >= 2"), 0.5)
    if draw(st.booleans()):
        wild = _WILDNESS[-1] >= 1.0
        values = (0.1, 0.5, 1, -0.1, 5) if wild else (0.1, 0.05, 0.5)
        a["effect"] = {draw(one(_EFFECTS)): pick(draw, values, 0.4)}
    return a


@st.composite
def structural_playbook(draw: Any, calm: bool = False) -> str:
    """A playbook that is valid in shape (so it reaches plan and simulate), knobs at the edges
    (calm: none, so that they go all the way through plan and simulate)."""
    _WILDNESS.append(0.0 if calm else 1.0)
    try:
        return _structural(draw)
    finally:
        _WILDNESS.pop()


def _structural(draw: Any) -> str:
    wild = _WILDNESS[-1] >= 1.0
    n_stages = draw(st.integers(1, 4))
    # a few distinct actions, cloned up to a size: big playbooks without thousands of draws
    n_distinct = draw(st.integers(1, 5))
    n_actions = draw(one((1, 2, 3, 5, 8, 12, 40) * 5 + (300,)))  # big ones cost: rare
    templates: dict[str, Any] = {"t": pick(draw, ("hi {{ member.name }}", "plain"), 0.2)}
    if wild and draw(st.booleans()):
        templates["bomb"] = draw(one(tuple(TEMPLATES)))
    names = tuple(sorted(templates))
    distinct = [_action(draw, k, names) for k in range(n_distinct)]
    ids = [f"s{i}" for i in range(n_stages)]
    stages: dict[str, Any] = {sid: {"actions": {}} for sid in ids}
    for k in range(max(n_actions, n_distinct)):
        a = dict(distinct[k % n_distinct])
        for rel in ("after", "before"):
            if rel in a:
                a[rel] = f"a{k - 1}" if k else None
                if a[rel] is None:
                    del a[rel]
                    a["day"] = 0
        stages[ids[min(k * n_stages // max(n_actions, n_distinct), n_stages - 1)]]["actions"][
            f"a{k}"
        ] = a
    for si, sid in enumerate(ids):
        stage = stages[sid]
        stage["title"] = pick(draw, (f"Stage {si}", "阶段"), 0.3)
        if si:
            stage["after"] = ids[si - 1]
        stage["duration"] = {draw(one(("min", "max"))): pick(draw, ("1d", "30d", "0m"), 0.3)}
        if draw(st.booleans()):
            stage["exit"] = {
                "when": pick(draw, ("members >= 10", "days_in_stage >= 3", "leads >= 5"), 0.4)
            }
            if draw(st.booleans()):
                then = draw(
                    one(({"extend": "1d"}, {"goto": ids[0]}, {"abort": True}, {"alert": "ops"}))
                )
                stage["exit"]["deadline"] = {"after": pick(draw, ("90d",)), "then": then}
        if chance(draw, 0.2) and (wild or not any("include" in x for x in stages.values())):
            stage["include"] = [
                {
                    "fragment": draw(one(tuple(INCLUDES) if wild else ("frag.yaml",))),
                    "with": {"invite_target": pick(draw, (3,))},
                }
            ]
        if not stage["actions"]:
            stage["actions"] = {f"x{si}": {"day": 0, "do": "task", "text": "x"}}
    doc: dict[str, Any] = {
        "playbook": pick(draw, ("fuzz",), 0.05),
        "title": pick(draw, ("Fuzz", "职场"), 0.3),
        "timezone": pick(draw, ("UTC", "Asia/Shanghai", "America/St_Johns"), 0.2),
        "community": {
            "start": draw(one(tuple(Raw(d) for d in DATES)))
            if wild and chance(draw, 0.25)
            else draw(one((Raw("2026-12-01"), Raw("2027-01-04"), Raw("2026-03-29")))),
            "capacity": pick(draw, (1, 500), 0.2),
        },
        "params": {"group_name": {"default": pick(draw, ("G",), 0.3)}},
        "roles": {
            "ops": {"headcount": pick(draw, (1, 5), 0.2)},
            "events": {"headcount": 1},
            "members": {"headcount": 1},
            "content": {"headcount": 1},
        },
        "backends": {"group": {"type": "console"}, "staff": {"type": "tasks"}},
        "defaults": {"backend": "group", "owner": "ops", "staff_backend": "staff"},
        "limits": {"member_messages_per_day": pick(draw, (1, 10), 0.2)},
        "metrics": {"leads": {"unit": "count", "description": "leads"}},
        "stages": stages,
        "templates": templates,
    }
    if chance(draw, 0.3):
        doc["tiers"] = {
            "review": {"cron": pick(draw, ("0 10 1 * *",), 0.4)},
            "hysteresis": pick(draw, (0.9,), 0.4),
            "levels": {
                "normal": {"title": "n"},
                "core": {
                    "promote": pick(draw, ("tenure_days >= 3",), 0.4),
                    "demote": {"silent_for": pick(draw, ("14d",)), "to": "normal"},
                },
            },
        }
    if chance(draw, 0.3):
        doc["expect"] = [{"max_messages_per_member_per_day": pick(draw, (6,))}]
    return dump(doc)


# -- YAML-level hostility -----------------------------------------------------------------------

_ALIAS_BOMB = "\n".join(
    ["playbook: bomb", "timezone: UTC", "a0: &a0 [" + ",".join(['"lol"'] * 9) + "]"]
    + [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    + ["stages: {s: {actions: {x: {day: 0, do: post, text: *a9}}}}", ""]
)  # fmt: skip
RAW_YAML = [
    "", "\n", "# only a comment\n", "---\n", "--- \n...\n--- \n", "[]\n", "42\n", "null\n",
    "a: 1\na: 2\n", "\ufeffplaybook: x\n", "playbook: x\x00\n", "playbook: x\r\ntimezone: UTC\r\n",
    "playbook: x\rtimezone: UTC\r", "\tplaybook: x\n", "playbook: !!python/object:os.system x\n",
    "playbook: !!binary aGk=\n", "playbook: !custom x\n", "<<: *nope\n", "a: &a {b: *a}\n",
    "[" * 10000 + "]" * 10000 + "\n", "{" * 5000 + "\n", "- " * 5000 + "x\n",
    "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 400)), _ALIAS_BOMB,
    "a: " + "x" * 1_000_000 + "\n", "playbook: \udcff\n", "playbook: '\x85'\n",
    "? [a, b]\n: c\n", "? {a: 1}\n: c\n", "1: x\n2: y\n", "true: 1\nnull: 2\n",
    "playbook: x\ntimezone: UTC\nstages: {}\n---\nplaybook: y\n", "%YAML 1.3\n---\na: 1\n",
    "%TAG ! tag:evil,2000:\n---\na: !x 1\n", "a: |\n  x\n b\n", "a: >-\n" + "  x\n" * 1000,
]  # fmt: skip


@st.composite
def encoded(draw: Any, text: str, calm: bool = False) -> bytes:
    """`text` as bytes, now and then in a hostile encoding or with junk bytes spliced in."""
    how = draw(_PERCENT) // 5
    data = text.encode("utf-8", "surrogatepass")
    if calm:
        return data
    if how == 19:
        return text.encode("utf-16", "surrogatepass")
    if how == 18 and data:
        at = draw(st.integers(0, len(data)))
        junk = choose(draw, [b"\xff\xfe", b"\x00", b"\xc3", b"\xed\xa0\x80", b"\x80"])
        return data[:at] + junk + data[at:]
    if how == 17:
        return data.replace(b"\n", b"\r\n")
    return data


# -- playbook-ish files of every kind --------------------------------------------------------

_HOSTILE_LINKS = {  # symlinks an attacker can commit into a pull request
    "leak-env.yaml": "/proc/self/environ",
    "leak-passwd.yaml": DECOY_PASSWD,
    "leak-zero.yaml": "/dev/zero",
    "up": "..",
}


def prune(files: list[FileSpec], args: tuple[str, ...]) -> tuple[FileSpec, ...]:
    """The files a case can reach: the first, and those named in a text file or an argument
    (creating unused FIFOs and links costs more than most cases' work)."""
    if "." in args or ".." in args:  # a folder is validated: every file in it counts
        return tuple(files)
    blob = "\n".join(args).encode() + b"\n".join(f.data for f in files if f.kind is FileKind.TEXT)
    keep = [f for i, f in enumerate(files) if i == 0 or f.path.split("/")[0].encode() in blob]
    return tuple(keep)


def support_files(text: str = "", include_dir: str = "") -> list[FileSpec]:
    """The targets INCLUDES point at: a fragment, a FIFO, a folder, hostile links (and a file over
    the 10 MB limit when `text` names it: big inputs are measured apart, so only when needed)."""
    frag = shipped()["fragments/fission.yaml"][0]
    pre = include_dir
    out = [
        text_file(pre + "frag.yaml", frag),
        text_file(pre + "fragments/fission.yaml", frag),
        text_file(pre + "fragments/ok.yaml", frag),
        FileSpec(pre + "fifo.yaml", FileKind.FIFO),
        FileSpec(pre + "dir.yaml", FileKind.DIR),
    ]
    if "big.yaml" in text:
        out.append(
            FileSpec(
                pre + "big.yaml",
                FileKind.RECIPE,
                recipe=("repeat", "fragment: x\n", "#" * 99 + "\n", 120_000, ""),
            )
        )
    out += [FileSpec(pre + k, FileKind.SYMLINK, v.encode()) for k, v in _HOSTILE_LINKS.items()]
    return out


@st.composite
def playbook_text(draw: Any, calm: bool = False) -> tuple[str, str]:
    """(kind, YAML text) of a playbook-like document, from every generator."""
    if calm:  # valid in shape, so plan, graph and simulate go all the way
        if chance(draw, 0.25):
            return "shipped", shipped()[choose(draw, [p.name for p in PLAYBOOK_NAMES])][0]
        return "structural-calm", draw(structural_playbook(calm=True))
    kind = draw(
        st.sampled_from(
            ["mutation"] * 6 + ["structural"] * 3 + ["schema"] * 2 + ["raw-yaml", "shipped"]
        )
    )
    if kind == "mutation":
        name = choose(draw, [p.name for p in PLAYBOOK_NAMES])
        return kind, draw(mutated(name))
    if kind == "structural":
        return kind, draw(structural_playbook())
    if kind == "schema":
        return kind, draw(schema_document("playbook.schema.json"))
    if kind == "raw-yaml":
        return kind, choose(draw, RAW_YAML)
    return kind, shipped()[choose(draw, [p.name for p in PLAYBOOK_NAMES])][0]


@st.composite
def fragment_text(draw: Any) -> tuple[str, str]:
    """(kind, text) of a fragment: mutated shipped fission, or from the fragment schema."""
    if draw(st.booleans()):
        return "fragment:mutation", draw(mutated("fragments/fission.yaml"))
    return "fragment:schema", draw(schema_document("fragment.schema.json"))


@st.composite
def playbook_files(
    draw: Any, main: str = "p.yaml", calm: bool = False
) -> tuple[str, list[FileSpec]]:
    """(kind, files) for one playbook under test, with the files its includes may name."""
    kind, text = draw(playbook_text(calm))
    files = [FileSpec(main, FileKind.TEXT, draw(encoded(text, calm)))]
    files += support_files(text)
    if not calm and chance(draw, 1 / 4):  # the included fragment is itself hostile
        fkind, ftext = draw(fragment_text())
        files = [f for f in files if f.path != "frag.yaml"]
        files.append(text_file("frag.yaml", ftext))
        files.append(text_file("fragments/fission.yaml", ftext))
        kind = f"{kind}+{fkind}"
    return "playbook:" + kind, files


# -- scenarios and CSV exports ----------------------------------------------------------------


@st.composite
def scenario_text(draw: Any) -> tuple[str, str]:
    """(kind, text) of a scenario file."""
    how = choose(draw, ["mutation", "mutation", "schema", "raw-yaml", "shipped"])
    if how == "mutation":
        return how, draw(mutated("scenarios/community-lifecycle.yaml"))
    if how == "schema":
        return how, draw(schema_document("scenario.schema.json"))
    if how == "raw-yaml":
        return how, choose(draw, RAW_YAML)
    return how, shipped()["scenarios/community-lifecycle.yaml"][0]


SCENARIO_KEYS = [
    "acquisition.seed_users", "acquisition.organic_per_day", "acquisition.bass_p",
    "acquisition.bass_q", "acquisition.market", "acquisition.invites_per_member_per_day",
    "acquisition.invite_conversion", "acquisition.invite_decay_days", "acquisition.start_stage",
    "retention.alpha", "retention.beta", "retention.period_days", "activity.speak_alpha",
    "activity.speak_beta", "activity.tenure_decay_days", "activity.decay_floor",
    "activity.ugc_per_speak", "activity.violation_per_speak", "conversion.base_daily",
    "metrics.leads.start", "metrics.leads.per_day", "metrics.leads.noise",
    "metrics.survey_responses.per_member", "nope.x", "acquisition", "a.b.c.d", "", "metrics.x",
]  # fmt: skip
SET_VALUES = [
    "1e9", "1e300", "1e308", "1e309", "-1", "0", "1", "0.5", "nan", ".nan", ".inf", "-.inf", "inf",
    "1e-300", "10000000", "abc", "", "[1, 2]", "{a: 1}", "${env:SOP_FUZZ_SECRET}", "prep",
    "x" * 1000,
]  # fmt: skip

CSV_COLUMNS = {
    "retention": ("period", "survivors"),
    "acquisition": ("period", "cumulative"),
    "activity": ("member", "frequency", "recency", "T"),
}
BIG_CSV_KINDS = {"huge-field", "rows-1e5", "rows-1e6", "binary-big"}


@st.composite
def csv_file(draw: Any, model: str) -> tuple[str, FileSpec]:
    """(kind, file) of a CSV export for `sop calibrate MODEL`: mostly small, now and then big."""
    cols = CSV_COLUMNS[model]
    header = ",".join(cols)
    weights = (
        ["valid"] * 6 + ["wild-values"] * 8 + ["shape"] * 4 + ["binary"] * 2 + ["empty"]
        + ["link"] * 2
    )  # fmt: skip
    kind = choose(draw, weights)
    if chance(draw, 0.02):  # big inputs: slow, so a few dozen per 100,000 cases
        kind = choose(draw, ["rows-1e4", "huge-field", "rows-1e5"])
    if chance(draw, 1 / 500):  # rare: the slowest inputs, kept to a few per campaign
        kind = choose(draw, ["rows-1e6", "binary-big"])

    def row(i: int, vals: list[Any]) -> str:
        return ",".join(str(v) for v in vals)

    def sane(i: int, n: int) -> list[Any]:
        if model == "retention":
            return [i, max(0, 1000 - 120 * i)]
        if model == "acquisition":
            return [i, 5 * i * i + 1]
        return [f"m{i}", i % 7, float(i % 5), 13.0]

    if kind == "valid":
        n = draw(st.integers(1, 40))
        body = "\n".join(row(i, sane(i, n)) for i in range(n))
        return "csv:valid", text_file("data.csv", header + "\n" + body + "\n")
    if kind == "wild-values":
        n = draw(st.integers(1, 12))
        wild = st.sampled_from(
            ["nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e309", "-1", "0", "-0", "1e-320",
             "", " ", "0x10", "1_000", "１２", "a", "\x00", "9" * 400, "1e999999"]
        )  # fmt: skip
        lines = []
        for i in range(n):
            vals = sane(i, n)
            for j in range(len(vals)):
                if chance(draw, 1 / 3):
                    vals[j] = draw(wild)
            lines.append(row(i, vals))
        if draw(st.booleans()):  # all zero, or decreasing/increasing in the wrong direction
            lines = [
                row(i, [i, choose(draw, [0, n - i, i * 1000, -i])] + ["13"] * (len(cols) - 2))
                for i in range(n)
            ]
        return "csv:wild-values", text_file("data.csv", header + "\n" + "\n".join(lines) + "\n")
    if kind == "shape":
        text = draw(
            st.sampled_from(
                [
                    header + "\n",
                    header,
                    ",".join(reversed(cols)) + "\n1,2\n",
                    header + "," + header + "\n1,2,3,4,5,6,7,8\n",
                    "\ufeff" + header + "\n0,1\n",
                    header + '\n"1,2\n',
                    header + "\n1\n",
                    header + "\n" + "1," * 50 + "\n",
                    "period;survivors\n0;100\n",
                    header.upper() + "\n0,1\n",
                    header + "\r\n0,10\r\n1,5\r\n",
                    header + "\n0,1000\n1,1000\n2,1000\n",
                    header + "\n0,0\n1,0\n",
                    "\n\n\n" + header + "\n0,1\n",
                    header + "\n" + "\n" * 1000,
                ]
            )
        )
        return "csv:shape", text_file("data.csv", text)
    if kind == "binary":
        size = draw(st.integers(1, 4096))
        return "csv:binary", FileSpec(
            "data.csv", FileKind.RECIPE, recipe=("bytes", draw(st.integers(1, 2**31)), size)
        )
    if kind == "empty":
        return "csv:empty", text_file("data.csv", "")
    if kind == "link":
        target = choose(draw, ["/proc/self/environ", DECOY_PASSWD, "/dev/zero", "fifo"])
        if target == "fifo":
            return "csv:fifo", FileSpec("data.csv", FileKind.FIFO)
        return "csv:link", FileSpec("data.csv", FileKind.SYMLINK, target.encode())
    if kind == "huge-field":
        return "csv:huge-field", FileSpec(
            "data.csv", FileKind.RECIPE, recipe=("repeat", header + "\n0,", "9", 5_000_000, "\n")
        )
    if kind == "binary-big":
        return "csv:binary-big", FileSpec(
            "data.csv", FileKind.RECIPE, recipe=("bytes", 7, 20_000_000)
        )
    n = {"rows-1e4": 10_000, "rows-1e5": 100_000, "rows-1e6": 1_000_000}[kind]
    pattern = {
        "retention": "{i},{j}\n",
        "acquisition": "{i},{i}\n",
        "activity": "m{i},{j},1.5,13\n",
    }[model]
    return f"csv:{kind}", FileSpec(
        "data.csv", FileKind.RECIPE, recipe=("csv_rows", header, pattern, n)
    )


# -- command-line options ---------------------------------------------------------------------

_DATES_OPT = [
    "2026-02-30",
    "9999-12-25",
    "9999-12-31",
    "0001-01-01",
    "1970-01-01",
    "",
    "today",
    "2026-12-01T10:00",
    "20261201",
    "-1",
    "x" * 1000,
]
_OUTPUTS = [
    "missing/dir/out.txt",
    ".",
    "p.yaml/x",
    "/dev/null",
    "/dev/full",
    "dir.yaml",
    "leak-passwd.yaml",
    "",
    "o" * 300,
] * 4 + ["fifo.yaml"]  # fmt: skip (a FIFO hangs: rare)
_ADDRESSES = [
    "garbage",
    "tcp://",
    "tcp://127.0.0.1:1",
    "tcp://127.0.0.1:99999",
    "tcp://[::1",
    "127.0.0.1",
    "tcp://127.0.0.1:-1",
    "inproc://x",
    "ucx://127.0.0.1:1",
    "",
    "tcp://" + "a" * 300,
]


def _pair(sane: Any, edge: Any) -> tuple[Any, Any]:
    return sane, edge


def mostly(sane: st.SearchStrategy[Any], edge: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`sane` four times in five, else `edge`: options mostly valid, so cases get past parsing."""
    return st.one_of(sane, sane, sane, sane, edge)


def _int_values(
    lo: int | None, hi: int | None, sane: tuple[int, int]
) -> tuple[st.SearchStrategy[str], st.SearchStrategy[str]]:
    edges = [0, -1, 1, 2**31, 2**63, -(2**63), 10**30]
    for b in (lo, hi):
        if b is not None:
            edges += [b - 1, b, b + 1]
    return (
        st.integers(*sane).map(str),
        st.sampled_from(edges).map(str)
        | st.sampled_from(["abc", "", "1.5", "1e3", "٣", " 7", "0x10", "nan"]),
    )


_FLOATS = (
    st.floats(0, 1000).map(str) | st.sampled_from(["0", "1", "0.5", "30", "7"]),
    st.sampled_from(
        ["-1", "nan", "inf", "-inf", "1e308", "1e-308", "1e309", "-0", "abc", "", "1e9"]
    ),
)


@functools.cache
def option_values(verb: str, name: str, calm: bool = False) -> st.SearchStrategy[str]:
    """Values for one option of one verb: sane most of the time, the edges often (never if calm)."""
    sane, edge = _option_pair(verb, name)
    return sane if calm else mostly(sane, edge)


def _option_pair(verb: str, name: str) -> tuple[st.SearchStrategy[str], st.SearchStrategy[str]]:
    """(sane values, edge values) of one option."""
    import click

    t = next(p for n, _, _, _, p in verb_options(verb) if n == name).type
    cheap_sim = verb == "simulate"
    ids = st.sampled_from(IDENTS)
    if name == "start":
        return _pair(
            st.sampled_from(["2026-12-01", "2027-01-04", "2026-02-28"]), st.sampled_from(_DATES_OPT)
        )
    if name in ("output", "report"):
        return _pair(st.sampled_from(["out.txt", "report.out"]), st.sampled_from(_OUTPUTS))
    if name == "address":
        return st.just("tcp://127.0.0.1:1"), st.sampled_from(_ADDRESSES)
    if name in ("role", "stage", "failing", "include_optional"):
        return _pair(
            st.sampled_from(["ops", "prep", "cold-start", "s0", "s1", "growth", "dissolution"]), ids
        )
    if name == "sets":
        return _pair(
            st.builds(
                lambda k, v: f"{k}={v}", st.sampled_from(SCENARIO_KEYS), st.sampled_from(SET_VALUES)
            ),
            st.sampled_from(["=", "x", "a=b=c"]),
        )  # fmt: skip
    if name == "sweeps":
        return _pair(
            st.builds(
                lambda k, vs: f"{k}={','.join(vs)}",
                st.sampled_from(SCENARIO_KEYS[:10]),
                st.lists(st.sampled_from(SET_VALUES[:12]), min_size=0, max_size=4),
            ),
            st.sampled_from(["=", "x", "a=", "=1,2"]),
        )
    if name == "template":
        return _pair(
            st.sampled_from(["lifecycle", "brand", "paid", "developer", "minimal"]),
            st.sampled_from(["", "../x", "nope"]),
        )
    if name == "directory":
        return _pair(
            st.sampled_from([".", "sub", "sub/deeper"]),
            st.sampled_from(
                ["p.yaml", "p.yaml/sub", "dir.yaml", "fifo.yaml", "", "x" * 300, "sub/demo.yaml"]
            ),
        )
    if name == "root":  # never "/": a root widened to everything may read /etc/passwd by design
        return st.just("."), st.sampled_from(["..", "sub", "missing", "p.yaml", "", "fifo.yaml"])
    if cheap_sim and name == "runs":
        return _pair(
            st.integers(1, 6).map(str),
            st.sampled_from(["0", "-1", "1000001", "50", "abc", str(2**64)]),
        )
    if cheap_sim and name == "days":
        return _pair(
            st.integers(1, 60).map(str),
            st.sampled_from(["0", "-1", "3651", "4000000", "400", "abc"]),
        )
    if cheap_sim and name == "workers":
        return _pair(st.just("1"), st.sampled_from(["0", "-1", "257", "abc"]))
    if isinstance(t, click.Choice):
        return _pair(st.sampled_from(list(t.choices)), st.sampled_from(["", "TEXT", "nope"]))
    if isinstance(t, click.types.IntRange):
        sane = (max(t.min or 0, 1), min(t.max or 400, 400))
        return _int_values(t.min, t.max, sane)
    if isinstance(t, click.types.FloatRange):
        return st.floats(t.min or 0, t.max or 1).map(str), _FLOATS[1] | st.sampled_from(
            [str(t.min), str(t.max), "1.0000001", "-0.0000001"]
        )
    if t is click.INT:
        if name == "days":
            sane_days, edge_days = _int_values(None, None, (1, 400))
            return sane_days, edge_days | st.sampled_from(["3660", "3661", "4000000", "100000"])
        return _int_values(None, None, (0, 100))
    if t is click.FLOAT:
        return _FLOATS
    return _pair(ids, st.sampled_from([x for x in NASTY_STRINGS[:40] if "\x00" not in x]))


@functools.cache
def verb_options(verb: str) -> tuple[tuple[str, str, bool, bool, Any], ...]:
    """(name, flag, is_flag, multiple, param) of each option of `sop VERB`, read from the CLI."""
    import click
    import sop.cli as cli

    out = []
    for p in cli.main.commands[verb].params:
        if isinstance(p, click.Option) and p.opts and p.name != "help":
            flag = max(p.opts, key=len)
            out.append((str(p.name), flag, bool(p.is_flag), bool(p.multiple), p))
    return tuple(out)


@st.composite
def options(draw: Any, verb: str, p_each: float = 0.3, calm: bool = False) -> list[str]:
    """A random subset of the options of `sop VERB` with edge values (none if calm)."""
    args: list[str] = []
    for name, flag, is_flag, multiple, _ in verb_options(verb):
        if name in ("executor", "address") and (calm or not chance(draw, 0.1)):  # slow imports
            continue
        if not chance(draw, p_each):
            continue
        if is_flag:
            args.append(flag)
            continue
        n = draw(st.integers(1, 3)) if multiple else 1
        for _ in range(n):
            args += [flag, draw(option_values(verb, name, calm)).replace("\x00", "")]
    return args


# -- cases, verb by verb ----------------------------------------------------------------------


def _secret_env(draw: Any) -> tuple[tuple[str, str], ...]:
    """Now and then the environment of a CI job: GitHub Actions on, colours off, narrow terminal."""
    if not chance(draw, 0.2):
        return ()
    return tuple(
        draw(
            st.lists(
                st.sampled_from(
                    [("GITHUB_ACTIONS", "true"), ("NO_COLOR", "1"), ("COLUMNS", "1"),
                     ("COLUMNS", "100000"),
                     ("TERM", "dumb"), ("TZ", "Pacific/Kiritimati"), ("TZ", "garbage")]
                ),
                max_size=2,
                unique_by=lambda kv: kv[0],
            )
        )
    )  # fmt: skip


@st.composite
def validate_case(draw: Any) -> Case:
    """`sop validate` on a playbook (or a folder, or several paths) with random options."""
    calm = chance(draw, 0.2)
    kind, files = draw(playbook_files(calm=calm))
    target = choose(
        draw, ["p.yaml"] * 8 + [".", "missing.yaml", "fifo.yaml", "leak-env.yaml", "leak-zero.yaml"]
    )
    paths = [target] + (["frag.yaml"] if chance(draw, 1 / 6) else [])
    if calm:
        paths = ["p.yaml"]
    args = ["validate", *draw(options("validate", calm=calm)), *paths]
    return Case("validate", tuple(args), prune(files, tuple(args)), _secret_env(draw), kind)


@st.composite
def plan_case(draw: Any) -> Case:
    """`sop plan` of a playbook in every format with random filters and dates."""
    calm = chance(draw, 0.4)
    kind, files = draw(playbook_files(calm=calm))
    opts = draw(options("plan", 0.25, calm))
    if "--format" not in opts and not chance(draw, 0.25):  # the rich table is slow: cap it
        opts += ["--format", choose(draw, ["json", "csv", "ics", "markdown"])]
    return Case(
        "plan",
        ("plan", *opts, "p.yaml"),
        prune(files, ("plan", *opts, "p.yaml")),
        _secret_env(draw),
        kind,
    )


@st.composite
def graph_case(draw: Any) -> Case:
    """`sop graph` in every format."""
    calm = chance(draw, 0.4)
    kind, files = draw(playbook_files(calm=calm))
    opts = draw(options("graph", 0.5, calm))
    return Case(
        "graph", ("graph", *opts, "p.yaml"), prune(files, ("graph", *opts, "p.yaml")), (), kind
    )


@st.composite
def diff_case(draw: Any) -> Case:
    """`sop diff` of two versions: a shipped playbook and a mutation of it, or two random ones."""
    name = choose(draw, [p.name for p in PLAYBOOK_NAMES])
    old = shipped()[name][0]
    if draw(st.booleans()):
        new, kind = draw(mutated(name)), "playbook:mutation"
    else:
        kind, new = draw(playbook_text())
        kind = "playbook:" + kind
    if draw(st.booleans()):
        old, new = new, old
    files = [text_file("old.yaml", old), text_file("p.yaml", new), *support_files(old + new)]
    opts = draw(options("diff", 0.3))
    return Case(
        "diff",
        ("diff", *opts, "old.yaml", "p.yaml"),
        prune(files, ("diff", *opts, "old.yaml", "p.yaml")),
        (),
        kind,
    )


@st.composite
def simulate_case(draw: Any) -> Case:
    """`sop simulate` kept small (few runs, short horizon, one worker) with edge options."""
    if not chance(draw, 0.33):
        name = choose(draw, [p.name for p in PLAYBOOK_NAMES])
        text = shipped()[name][0] if draw(st.booleans()) else draw(mutated(name, 1))
        pkind, files = (
            "playbook:shipped-or-mutation",
            [text_file("p.yaml", text), *support_files(text)],
        )
        if "fragments/fission.yaml" in text:
            files.append(
                text_file("fragments/fission.yaml", shipped()["fragments/fission.yaml"][0])
            )
    else:
        pkind, files = draw(playbook_files(calm=chance(draw, 0.5)))
    opts = draw(options("simulate", 0.2, chance(draw, 0.3)))
    for flag, val in (
        ("--runs", str(draw(st.integers(1, 4)))),
        ("--days", str(draw(st.integers(1, 45)))),
        ("--workers", "1"),
    ):
        if flag not in opts:
            opts += [flag, val]
    kind = pkind
    if draw(st.booleans()):
        skind, stext = draw(scenario_text())
        files.append(FileSpec("scenario.yaml", FileKind.TEXT, draw(encoded(stext))))
        opts += ["--scenario", "scenario.yaml"]
        kind = "scenario:" + skind
    elif chance(draw, 1 / 6):
        opts += [
            "--scenario",
            choose(
                draw,
                [
                    "leak-env.yaml",
                    "leak-passwd.yaml",
                    "fifo.yaml",
                    "leak-zero.yaml",
                    "dir.yaml",
                    "missing.yaml",
                ],
            ),
        ]
        kind = "scenario:hostile-file"
    elif "--set" in opts or "--sweep" in opts:
        kind = "scenario:set"
    return Case(
        "simulate",
        ("simulate", *opts, "p.yaml"),
        prune(files, ("simulate", *opts, "p.yaml")),
        (),
        kind,
    )


@st.composite
def calibrate_case(draw: Any) -> Case:
    """`sop calibrate MODEL data.csv` on CSVs from sane to binary, huge and infinite."""
    model = choose(draw, sorted(CSV_COLUMNS))
    # a CSV for another model now and then: wrong columns
    kind, f = draw(csv_file(choose(draw, [model] * 5 + sorted(CSV_COLUMNS))))
    opts = draw(options("calibrate", 0.35))
    if chance(draw, 1 / 31):
        model = choose(draw, ["", "nope", "RETENTION"])
    return Case("calibrate", ("calibrate", *opts, model, "data.csv"), (f,), (), kind)


@st.composite
def init_case(draw: Any) -> Case:
    """`sop init NAME` onto files, folders and FIFOs in the way, or under a file."""
    name = choose(draw, ["demo", "p", "dir", "fifo", "x" * 300, "Bad", "a\n", "../x", "-x", ""])
    files = [
        text_file("p.yaml", "playbook: p\n"),
        FileSpec("dir.yaml", FileKind.DIR),
        FileSpec("fifo.yaml", FileKind.FIFO),
        FileSpec("demo.yaml", FileKind.DIR) if draw(st.booleans()) else text_file("other", ""),
        FileSpec("sub/demo.yaml", FileKind.SYMLINK, b"/proc/self/environ"),
    ]
    opts = draw(options("init", 0.4))
    return Case("init", ("init", *opts, "--", name), tuple(files), (), "init")


@st.composite
def misc_case(draw: Any) -> Case:
    """The verbs without input files, help texts and nonsense command lines."""
    args = draw(
        st.sampled_from(
            [["schema"], ["schema", "--kind", "scenario"], ["schema", "--kind", "nope"], ["rules"],
             ["rules", "--format", "json"], ["--help"], ["--version"], ["nope"], [], ["validate"],
             ["plan", "--help"], ["simulate", "--runs"], ["validate", "--days"], ["calibrate", "x"]]
        )
    )  # fmt: skip
    return Case("misc", tuple(args), (), (), "cli")


# The share of each verb in a campaign: cheap verbs dominate so 100,000 cases fit in minutes.
MIX: dict[str, tuple[int, Any]] = {
    "validate": (56, validate_case),
    "plan": (17, plan_case),
    "graph": (11, graph_case),
    "diff": (6, diff_case),
    "calibrate": (4, calibrate_case),
    "simulate": (1, simulate_case),
    "init": (3, init_case),
    "misc": (2, misc_case),
}


def cases(mix: dict[str, tuple[int, Any]] | None = None) -> st.SearchStrategy[Case]:
    """Any case, verbs weighted by `mix`."""
    table = mix or MIX
    verbs = [v for v, (w, _) in table.items() for _ in range(w)]
    return st.sampled_from(verbs).flatmap(lambda v: table[v][1]())
