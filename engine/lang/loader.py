"""The safe YAML loader: plain values plus the source position of every key and value.

Built on PyYAML's event stream (the C parser when present) instead of its constructor, so that:
duplicate keys fail at the second key; only `true`/`false` are booleans and `on`, `yes`, `12:30`,
`2026-12-01` and `014` stay strings; aliases, nesting depth and file size are bounded; and deep
documents never hit Python's recursion limit.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass, field
from typing import Any

from ..core.diagnostics import Diagnostic, Severity, Span, rule
from ..core.files import MAX_BYTES as _FILE_LIMIT
from ..core.files import FileRefused, read_bytes, read_stream
from .pyyaml import yaml

try:  # the C parser is ~10x faster; PyYAML without libyaml falls back to pure Python
    from yaml import CSafeLoader as _Parser

    _C_PARSER = True
except ImportError:  # pragma: no cover - depends on the wheel
    from yaml import SafeLoader as _Parser  # type: ignore[assignment]

    _C_PARSER = False

MAX_BYTES = _FILE_LIMIT  # one limit for every input file, kept in engine/core/files.py
MAX_DEPTH = 64
MAX_NODES = 1_000_000  # after alias expansion: stops "billion laughs"
MAX_ALIASES = 10_000

# The keys and indexes that lead to a value inside a document (not a file path).
KeyPath = tuple[str | int, ...]
_MERGE = "\x00<<"  # sentinel key for YAML merge keys; NUL never survives decode()

_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_STD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


class LoadError(Exception):
    """The file cannot be turned into a document; carries one located diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic
        # the text read within limits, when there was one (set by load_file)
        self.document: Document | None = None


@dataclass
class Document:
    """A loaded YAML file: plain data and where each piece came from."""

    file: str
    text: str
    data: Any
    # raw (line, column, end_line, end_column) tuples: Span objects are made only when asked for
    spans: dict[KeyPath, tuple[int, int, int, int]] = field(default_factory=dict)
    key_spans: dict[KeyPath, tuple[int, int, int, int]] = field(default_factory=dict)
    styles: dict[KeyPath, str] = field(default_factory=dict)  # non-plain scalars only
    _lines: list[str] | None = field(default=None, repr=False, compare=False)

    def span(self, path: KeyPath) -> Span:
        """The span of the value at `path`, or of its nearest located ancestor."""
        p = tuple(path)
        while p:
            s = self.spans.get(p)
            if s is not None:
                return Span(self.file, *s)
            p = p[:-1]
        root = self.spans.get(())
        return Span(self.file, *root) if root else Span(self.file, 1, 1, 1, 1)

    def key_span(self, path: KeyPath) -> Span:
        """The span of the key that introduces `path` (the value's span for list items)."""
        k = self.key_spans.get(tuple(path))
        return Span(self.file, *k) if k else self.span(path)

    def line(self, n: int) -> str:
        """Source line `n` (1-based), '' when out of range."""
        lines = self._lines
        if lines is None:
            lines = self._lines = self.text.splitlines()
        return lines[n - 1] if 0 < n <= len(lines) else ""


# A condition written unquoted inside `{ }`: YAML reads its `,` and `[` as the mapping's own.
FLOW_CONDITION_HINT = (
    'inside { } a comma ends the value: quote the condition, e.g. when: "avg(x, 7d) >= 20%"'
)


def _fail(code: str, file: str, line: int, col: int, message: str, hint: str = "") -> LoadError:
    r = rule(code)
    return LoadError(
        Diagnostic(file, line, col, line, col + 1, code, Severity.ERROR, message, hint or r.hint)
    )


def _fail_at(code: str, file: str, mark: Any, message: str) -> LoadError:
    return _fail(code, file, mark.line + 1, mark.column + 1, message)


def _duplicate(
    file: str, key: str, span: tuple[int, int, int, int], first: tuple[int, int, int, int]
) -> LoadError:
    return _fail(
        "SOP002",
        file,
        span[0],
        span[1],
        f"duplicate key {key!r} (first defined at line {first[0]}, column {first[1]})",
    )


def read_text(path: str, *, root: str | None = None) -> str:
    """Read a file as UTF-8 through engine/core/files.py: confined, bounded, regular files only.

    `root` defaults to the folder holding `path`, so a symlink cannot lead out of it.
    """
    try:
        raw = read_bytes(path, limit=MAX_BYTES, root=root)
    except FileRefused as e:
        raise _fail(e.code, path, 1, 1, e.message) from None
    return decode(raw, path)


def decode(raw: bytes, file: str) -> str:
    """Bytes to text: UTF-8 only, no NUL bytes, BOM dropped."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    nul = raw.find(b"\x00")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if 0 <= nul < e.start:
            line, col = _position(raw, nul)
            raise _fail(
                "SOP004", file, line, col, "NUL byte: this looks like a binary file"
            ) from None
        line, col = _position(raw, e.start)
        raise _fail(
            "SOP004", file, line, col, f"invalid UTF-8 byte 0x{raw[e.start]:02x}; not a text file?"
        ) from None
    if nul >= 0:
        line, col = _position(raw, nul)
        raise _fail("SOP004", file, line, col, "NUL byte: this looks like a binary file")
    return text


def _position(raw: bytes, offset: int) -> tuple[int, int]:
    line = raw.count(b"\n", 0, offset) + 1
    start = raw.rfind(b"\n", 0, offset) + 1
    return line, len(raw[start:offset].decode("utf-8", "replace")) + 1


def load_file(path: str, *, root: str | None = None) -> Document:
    """Load a playbook or fragment file confined to `root`; raises LoadError, located.

    When the text was read but does not parse, the LoadError carries it as `.document` (data
    None), so a report may quote the offending line without opening the file again.
    """
    text = read_text(path, root=root)
    try:
        return load_text(text, path)
    except LoadError as e:
        e.document = Document(file=path, text=text, data=None)
        raise


def load_stream(stream: Any, file: str = "<stdin>") -> Document:
    """Load a document from a binary stream (standard input), bounded as files are."""
    try:
        raw = read_stream(stream, limit=MAX_BYTES)
    except FileRefused as e:
        raise _fail(e.code, file, 1, 1, e.message) from None
    text = decode(raw, file)
    try:
        return load_text(text, file)
    except LoadError as e:
        e.document = Document(file=file, text=text, data=None)
        raise


def load_text(text: str, file: str = "<string>") -> Document:
    """Parse YAML text into a located Document; the root must be a mapping."""
    doc = Document(file=file, text=text, data=None)
    gc_was_on = gc.isenabled()
    gc.disable()  # the tree is acyclic and young: collections during the build are pure cost
    try:
        _build(doc)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = e.problem or str(e)
        if e.context:
            msg = f"{msg} ({e.context})"
        hint = ""
        lines = text.splitlines()
        near = lines[line - 1] if 0 < line <= len(lines) else ""
        if "flow mapping" in (e.context or "") and "[" in near:
            hint = FLOW_CONDITION_HINT
        raise _fail("SOP001", file, line, col, msg, hint) from None
    except yaml.reader.ReaderError as e:
        pos = max(int(e.position), 0)
        if _C_PARSER:  # libyaml counts bytes of the UTF-8 encoding
            pos = len(text.encode("utf-8")[:pos].decode("utf-8", "ignore"))
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = e.character if isinstance(e.character, str) else chr(e.character)
        raise _fail(
            "SOP004", file, line, col, f"control character U+{ord(char):04X} is not allowed in YAML"
        ) from None
    except yaml.YAMLError as e:
        raise _fail("SOP001", file, 1, 1, str(e)) from None
    finally:
        if gc_was_on:
            gc.enable()
    if doc.data is None:
        raise _fail("SOP005", file, 1, 1, "the document is empty")
    if not isinstance(doc.data, dict):
        s = doc.span(())
        raise _fail(
            "SOP005",
            file,
            s.line,
            s.column,
            f"the document root is a {_kind(doc.data)}, not a mapping",
        )
    return doc


def _kind(v: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(v), "value"
    )


def _span(ev: Any) -> tuple[int, int, int, int]:
    s, e = ev.start_mark, ev.end_mark
    return (s.line + 1, s.column + 1, e.line + 1, e.column + 1)


def _scalar(ev: Any, file: str) -> Any:
    v: str = ev.value
    tag = ev.tag
    if tag and tag != "!":
        if tag not in _STD_TAGS:
            raise _fail_at("SOP009", file, ev.start_mark, f"unsupported tag {tag}")
        kind = tag.rsplit(":", 1)[1]
        if kind == "str":
            return v
        resolved = _resolve_plain(v)
        ok = {
            "int": type(resolved) is int,
            "float": type(resolved) in (int, float),
            "bool": type(resolved) is bool,
            "null": resolved is None,
        }.get(kind, False)
        if not ok:
            raise _fail_at("SOP009", file, ev.start_mark, f"{v!r} is not a valid !!{kind}")
        return float(resolved) if kind == "float" else resolved
    if ev.style or tag == "!":
        return v
    return _resolve_plain(v)


def _resolve_plain(v: str) -> Any:
    c = v[:1]
    if c.isalpha() and c not in "tTfFnN":
        return v
    if v in _NULLS:
        return None
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    if c.isdigit() or c in "+-.":
        if _INT.match(v):
            try:
                return int(v)
            except ValueError:  # more digits than Python converts (4,300): out of every range
                return float(v)
        if _FLOAT.match(v) and not _leading_zero(v):
            return float(v)
    return v


def _leading_zero(v: str) -> bool:
    d = v.lstrip("+-")
    return len(d) > 1 and d[0] == "0" and d[1].isdigit()


class _Frame:
    __slots__ = (
        "anchor",
        "container",
        "key",
        "key_span",
        "merges",
        "nodes_at_start",
        "path",
        "seen",
        "span",
    )

    def __init__(
        self,
        container: Any,
        path: KeyPath,
        span: tuple[int, int, int, int],
        anchor: str | None,
        nodes: int,
    ):
        self.container = container
        self.path = path
        self.span = span
        self.anchor = anchor
        self.nodes_at_start = nodes
        self.key: str | None = None
        self.key_span: tuple[int, int, int, int] | None = None
        self.seen: dict[str, tuple[int, int, int, int]] = {}
        self.merges: list[tuple[Any, tuple[int, int, int, int]]] = []


def _build(doc: Document) -> None:
    """Turn the event stream into values, recording spans; non-recursive."""
    file = doc.file
    spans, key_spans, styles = doc.spans, doc.key_spans, doc.styles
    anchors: dict[str, tuple[Any, int]] = {}
    stack: list[_Frame] = []
    nodes = 0
    aliases = 0
    documents = 0
    root_set = False

    def place(value: Any, span: tuple[int, int, int, int], ev: Any) -> KeyPath | None:
        """Attach a finished value to its parent; returns its path (None for a key)."""
        nonlocal root_set
        if not stack:
            doc.data = value
            spans[()] = span
            root_set = True
            return ()
        top = stack[-1]
        if isinstance(top.container, list):
            path = (*top.path, len(top.container))
            top.container.append(value)
            spans[path] = span
            return path
        if top.key is None:  # this value is a key
            if isinstance(value, (dict, list)):
                raise _fail("SOP001", file, span[0], span[1], "a mapping key must be a scalar")
            key = ev.value
            if key == "<<" and not ev.style:
                top.key = _MERGE
                top.key_span = span
                return None
            _set_key(top, key, span, file)
            return None
        key = top.key
        top.key = None
        if key is _MERGE:
            top.merges.append((value, span))
            return None
        path = (*top.path, key)
        top.container[key] = value
        spans[path] = span
        key_spans[path] = top.key_span  # type: ignore[assignment]
        return path

    def child_path() -> KeyPath:
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.container, list):
            return (*top.path, len(top.container))
        return (*top.path, top.key if top.key is not None else "?")

    def count(ev: Any, n: int = 1) -> None:
        nonlocal nodes
        nodes += n
        if nodes > MAX_NODES:
            raise _fail_at(
                "SOP003",
                file,
                ev.start_mark,
                f"document expands to more than {MAX_NODES:,} values (alias bomb?)",
            )

    loader = _Parser(doc.text)
    scalar_event = yaml.ScalarEvent
    try:
        while True:
            ev: Any = loader.get_event()
            if ev is None:
                break
            et = type(ev)
            if et is scalar_event:
                nodes += 1
                top = stack[-1] if stack else None
                if (
                    top is not None
                    and top.key is None
                    and type(top.container) is dict
                    and not ev.tag
                    and not ev.anchor
                    and ev.value != "<<"
                ):
                    # hot path: a mapping key
                    key = ev.value
                    sm, em = ev.start_mark, ev.end_mark
                    kspan = (sm.line + 1, sm.column + 1, em.line + 1, em.column + 1)
                    _set_key(top, key, kspan, file)
                    continue
                if (
                    top is not None
                    and top.key is not None
                    and not ev.tag
                    and not ev.anchor
                    and top.key is not _MERGE
                    and type(top.container) is dict
                ):
                    # hot path: a plain or quoted scalar value in a mapping
                    style = ev.style
                    value = ev.value if style else _resolve_plain(ev.value)
                    vpath: KeyPath = (*top.path, top.key)
                    top.container[top.key] = value
                    sm, em = ev.start_mark, ev.end_mark
                    spans[vpath] = (sm.line + 1, sm.column + 1, em.line + 1, em.column + 1)
                    key_spans[vpath] = top.key_span  # type: ignore[assignment]
                    top.key = None
                    if style:
                        styles[vpath] = style
                    continue
                count(ev, 0)
                is_key = top is not None and isinstance(top.container, dict) and top.key is None
                value = ev.value if is_key else _scalar(ev, file)
                path = place(value, _span(ev), ev)
                if path is not None and ev.style:
                    styles[path] = ev.style
                if ev.anchor:
                    anchors[ev.anchor] = (value, 1)
            elif et is yaml.MappingStartEvent or et is yaml.SequenceStartEvent:
                count(ev)
                if len(stack) >= MAX_DEPTH:
                    raise _fail_at(
                        "SOP003", file, ev.start_mark, f"nesting deeper than {MAX_DEPTH} levels"
                    )
                if ev.tag and ev.tag not in _STD_TAGS and ev.tag != "!":
                    raise _fail_at("SOP009", file, ev.start_mark, f"unsupported tag {ev.tag}")
                if stack and isinstance(stack[-1].container, dict) and stack[-1].key is None:
                    raise _fail_at("SOP001", file, ev.start_mark, "a mapping key must be a scalar")
                container: Any = {} if et is yaml.MappingStartEvent else []
                stack.append(_Frame(container, child_path(), _span(ev), ev.anchor, nodes))
            elif et is yaml.MappingEndEvent or et is yaml.SequenceEndEvent:
                frame = stack.pop()
                if frame.merges:
                    _apply_merges(frame, file)
                e = ev.end_mark
                s = frame.span
                place(frame.container, (s[0], s[1], e.line + 1, e.column + 1), None)
                if frame.anchor:
                    anchors[frame.anchor] = (frame.container, nodes - frame.nodes_at_start)
            elif et is yaml.AliasEvent:
                aliases += 1
                sp = _span(ev)
                if aliases > MAX_ALIASES:
                    raise _fail("SOP003", file, sp[0], sp[1], f"more than {MAX_ALIASES} aliases")
                if ev.anchor not in anchors:
                    raise _fail("SOP001", file, sp[0], sp[1], f"unknown alias *{ev.anchor}")
                value, weight = anchors[ev.anchor]
                count(ev, weight)
                if stack and isinstance(stack[-1].container, dict) and stack[-1].key is None:
                    raise _fail("SOP001", file, sp[0], sp[1], "an alias cannot be a mapping key")
                place(value, sp, ev)
            elif et is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    sp = _span(ev)
                    raise _fail(
                        "SOP001",
                        file,
                        sp[0],
                        sp[1],
                        "a playbook file holds one YAML document; found a second `---`",
                    )
    finally:
        dispose = getattr(loader, "dispose", None)
        if dispose:
            dispose()
    if not root_set:
        doc.data = None


def _set_key(top: _Frame, key: str, span: tuple[int, int, int, int], file: str) -> None:
    """Record the next key of a mapping; a key seen before is an error at the second one."""
    first = top.seen.get(key)
    if first is not None:
        raise _duplicate(file, key, span, first)
    top.seen[key] = span
    top.key = key
    top.key_span = span


def _apply_merges(frame: _Frame, file: str) -> None:
    """YAML merge keys (`<<: *base`): explicit keys win over merged ones."""
    target = frame.container
    for value, span in frame.merges:
        sources = value if isinstance(value, list) else [value]
        for src in sources:
            if not isinstance(src, dict):
                raise _fail("SOP001", file, span[0], span[1], "`<<` merges mappings only")
            for k, v in src.items():
                target.setdefault(k, v)
