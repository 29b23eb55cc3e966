"""Diagnostic renderers, chosen by name: text, json, github, sarif, junit."""

from __future__ import annotations

import codecs
import functools
import io
import os
from collections.abc import Callable
from typing import TextIO

from .core.diagnostics import Diagnostic, Severity, all_rules
from .core.textsafe import dumps, terminal, utf8, xml_text
from .core.version import version
from .validate import FileResult, results_dict

Renderer = Callable[[list[FileResult], TextIO, bool], None]
RENDERERS: dict[str, Renderer] = {}


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    """Register a renderer under `name`; it writes to any stream, whatever its encoding."""

    def deco(fn: Renderer) -> Renderer:
        @functools.wraps(fn)
        def render(results: list[FileResult], out: TextIO, color: bool) -> None:
            encoding = getattr(out, "encoding", None) or "utf-8"
            if codecs.lookup(encoding).name == "utf-8":
                fn(results, out, color)
                return
            # A stream that cannot carry every character (PYTHONIOENCODING=ascii, a Latin-1
            # locale) gets `\uXXXX` escapes instead of a traceback; in JSON they are the same text.
            buf = _Buffer(encoding)
            fn(results, buf, color)
            out.write(buf.getvalue().encode(encoding, "backslashreplace").decode(encoding))

        RENDERERS[name] = render
        return render

    return deco


class _Buffer(io.StringIO):
    """Collects a renderer's output for a stream whose encoding is not UTF-8 (and says which)."""

    def __init__(self, encoding: str) -> None:
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The encoding of the stream the text will go to."""
        return self._encoding


def _all(results: list[FileResult]) -> list[Diagnostic]:
    return [d for r in results for d in r.diagnostics]


def _source_line(result: FileResult, d: Diagnostic) -> str:
    """The line a diagnostic points at, only from a text already read within limits.

    Never opens `d.file` again: a file refused as too large, binary, outside the root or not a
    regular file (/proc/self/environ, /dev/zero, a FIFO) is not quoted, so nothing leaks.
    """
    doc = result.documents.get(d.file)
    return doc.line(d.line) if doc is not None else ""


def _width(s: str) -> int:
    """Display width: CJK characters take two terminal cells, combining marks none."""
    import unicodedata  # only for findings: a clean run never imports it

    def cells(c: str) -> int:
        if unicodedata.east_asian_width(c) in "WF":
            return 2
        # combining marks and invisible format characters (zero-width space, joiners) take none;
        # the soft hyphen is a format character that terminals draw
        return 0 if unicodedata.category(c) in ("Mn", "Me", "Cf") and c != "\u00ad" else 1

    return sum(cells(c) for c in s)


# A source line longer than _LINE_CELLS terminal cells is shown as a window around the caret:
# a minified 10 MiB one-line playbook must not be printed once per diagnostic.
_LINE_CELLS = 160
_BEFORE_CELLS = 80
_SPAN_CELLS = 60
_AFTER_CELLS = 20


def _shown(c: str, encoding: str | None) -> str:
    # a tab's width depends on where it falls: four spaces keep the caret line aligned
    e = "    " if c == "\t" else terminal(c)
    if encoding is not None:  # escaped here, not after, so the caret is placed by what is shown
        e = e.encode(encoding, "backslashreplace").decode(encoding)
    return e


def _head(src: str, i: int, j: int, cells: int, encoding: str | None) -> tuple[str, int, bool]:
    """`src[i:j]` escaped, its start fitting in `cells` (... when cut), its width, whether cut."""
    out: list[str] = []
    used = 0
    for k in range(i, j):  # indices, not a slice: the line may be megabytes long
        e = _shown(src[k], encoding)
        w = _width(e)
        if used + w > cells:
            return "".join(out) + "...", used + 3, True
        out.append(e)
        used += w
    return "".join(out), used, False


def _tail(src: str, i: int, j: int, cells: int, encoding: str | None) -> tuple[str, int]:
    """`src[i:j]` escaped, its end fitting in `cells` (... when cut), and its width."""
    out: list[str] = []
    used = 0
    for k in range(j - 1, i - 1, -1):
        e = _shown(src[k], encoding)
        w = _width(e)
        if used + w > cells:
            out.append("...")
            used += 3
            break
        out.append(e)
        used += w
    return "".join(reversed(out)), used


def _excerpt(src: str, column: int, span: int, encoding: str | None = None) -> tuple[str, int, int]:
    """A source line as shown: escaped, clipped (...), with the caret's pad and width.

    `encoding`: of a stream that is not UTF-8, whose missing characters are shown as escapes.
    """
    n = len(src)
    start = min(max(column - 1, 0), n)
    end = min(start + max(span, 1), n)
    whole, _, cut = _head(src, 0, n, _LINE_CELLS, encoding)
    if not cut:  # the common case: the whole line
        pad = _head(src, 0, start, _LINE_CELLS, encoding)[1]
        return whole, pad, max(_head(src, start, end, _LINE_CELLS, encoding)[1], 1)
    before, pad = _tail(src, 0, start, _BEFORE_CELLS, encoding)
    marked, width, _ = _head(src, start, end, _SPAN_CELLS, encoding)
    after = _head(src, end, n, _AFTER_CELLS, encoding)[0]
    return before + marked + after, pad, max(width, 1)


@renderer("text")
def render_text(results: list[FileResult], out: TextIO, color: bool) -> None:
    """actionlint-style: `file:line:col: error SOP101 message`, the line, a caret, the hint.

    User text (file names, messages, hints, source lines) is escaped with `textsafe.terminal`:
    one diagnostic cannot print a line of its own, move the cursor or reorder text.
    """

    def paint(s: str, code: str) -> str:
        return f"\x1b[{code}m{s}\x1b[0m" if color else s

    sev_color = {Severity.ERROR: "1;31", Severity.WARNING: "1;33", Severity.NOTE: "1;36"}
    encoding = out.encoding if isinstance(out, _Buffer) else None
    for r in results:
        for d in r.diagnostics:
            head = f"{terminal(d.file)}:{d.line}:{d.column}:"
            out.write(
                f"{paint(head, '1')} {paint(str(d.severity), sev_color[d.severity])}"
                f" {paint(d.code, '2')} {terminal(d.message)}\n"
            )
            src = _source_line(r, d).removesuffix("\r")
            if src:
                span_len = (d.end_column - d.column) if d.end_line == d.line else 1
                shown, pad, width = _excerpt(src, d.column, span_len, encoding)
                gutter = f"{d.line:>5} | "
                out.write(f"{paint(gutter, '2')}{shown}\n")
                out.write(
                    f"{paint(' ' * 6 + '| ', '2')}{' ' * pad}"
                    f"{paint('^' + '~' * (width - 1), sev_color[d.severity])}\n"
                )
            if d.hint:
                out.write(f"      = hint: {terminal(d.hint)}\n")
    errors = sum(r.errors for r in results)
    warnings = sum(r.warnings for r in results)
    files = len(results)
    if errors or warnings:
        out.write(f"{errors} error(s), {warnings} warning(s) in {files} file(s)\n")
    else:
        out.write(f"{files} file(s) ok\n")


@renderer("json")
def render_json(results: list[FileResult], out: TextIO, color: bool) -> None:
    """One JSON object: every diagnostic, and a summary."""
    out.write(dumps(results_dict(results)))
    out.write("\n")


def _gh_data(s: str) -> str:
    # The runner splits its input on \r and \n only and percent-decodes what it parsed, so these
    # three are all a message must escape; utf8() because the stream must encode.
    return utf8(s).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(s: str) -> str:
    return _gh_data(s).replace(":", "%3A").replace(",", "%2C")


@renderer("github")
def render_github(results: list[FileResult], out: TextIO, color: bool) -> None:
    """GitHub Actions workflow commands (`::error file=...::message`)."""
    level = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "notice"}
    for d in _all(results):
        props = {
            "file": d.file,
            "line": str(d.line),
            "col": str(d.column),
            "endLine": str(d.end_line),
            "endColumn": str(d.end_column),
            "title": d.code,
        }
        body = d.message + (f" (hint: {d.hint})" if d.hint else "")
        prop_text = ",".join(f"{k}={_gh_prop(v)}" for k, v in props.items())
        out.write(f"::{level[d.severity]} {prop_text}::{_gh_data(body)}\n")


def sarif(results: list[FileResult]) -> dict[str, object]:
    """The SARIF 2.1.0 log: one rule per code, one result per diagnostic."""
    rules = all_rules()
    index = {r.code: i for i, r in enumerate(rules)}
    level = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "note"}
    # artifacts are unique by URI: `a.yaml` and `./a.yaml` are one file
    uris = list(
        dict.fromkeys(
            _uri(f) for f in sorted({r.file for r in results} | {d.file for d in _all(results)})
        )
    )
    artifact = {u: i for i, u in enumerate(uris)}
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "sop",
                        "version": version(),
                        "informationUri": "https://github.com/sop-playbooks/sop",
                        "rules": [
                            {
                                "id": r.code,
                                "name": r.name,
                                "shortDescription": {"text": r.summary},
                                "fullDescription": {"text": f"{r.summary}. {r.hint}"},
                                "help": {"text": r.hint},
                                "defaultConfiguration": {"level": level[r.severity]},
                            }
                            for r in rules
                        ],
                    }
                },
                "artifacts": [{"location": _location(u)} for u in uris],
                "results": [
                    {
                        "ruleId": d.code,
                        "ruleIndex": index[d.code],
                        "level": level[d.severity],
                        "message": {"text": d.message + (f" Hint: {d.hint}" if d.hint else "")},
                        "locations": [
                            {
                                "physicalLocation": {
                                    "artifactLocation": {
                                        **_location(_uri(d.file)),
                                        "index": artifact[_uri(d.file)],
                                    },
                                    "region": {
                                        "startLine": d.line,
                                        "startColumn": d.column,
                                        "endLine": max(d.end_line, d.line),
                                        "endColumn": max(d.end_column, d.column + 1)
                                        if d.end_line <= d.line
                                        else d.end_column,
                                    },
                                },
                                "logicalLocations": [{"fullyQualifiedName": d.json_path}],
                            }
                        ],
                    }
                    for d in _all(results)
                ],
                "columnKind": "unicodeCodePoints",
            }
        ],
    }


def _uri(path: str) -> str:
    """An RFC 3986 URI reference for `path`: relative to the working directory when inside it."""
    from pathlib import Path
    from urllib.parse import quote_from_bytes

    try:
        absolute = os.path.abspath(path)
        rel = os.path.relpath(absolute, os.getcwd())
    except (OSError, ValueError):  # no working directory any more, or another drive
        if os.path.isabs(path):
            return Path(path).as_uri()
        return quote_from_bytes(os.fsencode(path.replace(os.sep, "/")), safe="/")
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return Path(absolute).as_uri()  # file:///…, percent-encoded
    # bytes, not str: a file name that is not UTF-8 is encoded as the bytes it really has
    return quote_from_bytes(os.fsencode(rel.replace(os.sep, "/")), safe="/")


def _location(uri: str) -> dict[str, str]:
    # a relative reference resolves against the checkout: SARIF's conventional %SRCROOT%
    return {"uri": uri} if uri.startswith("file:") else {"uri": uri, "uriBaseId": "%SRCROOT%"}


@renderer("sarif")
def render_sarif(results: list[FileResult], out: TextIO, color: bool) -> None:
    """SARIF 2.1.0 for code-scanning dashboards."""
    out.write(dumps(sarif(results)))
    out.write("\n")


def _xml(text: str) -> str:
    # shown as in the text format (visible escapes, one line), then what XML 1.0 cannot carry
    return xml_text(terminal(text))


@renderer("junit")
def render_junit(results: list[FileResult], out: TextIO, color: bool) -> None:
    """JUnit XML: a testsuite per file, a failing testcase per error, a passing one when clean."""
    import xml.etree.ElementTree as ET

    suites = ET.Element("testsuites", name="sop validate")
    total = failures = 0
    for r in results:
        file = _xml(r.file)
        suite = ET.SubElement(suites, "testsuite", name=file)
        fails = 0
        for d in r.diagnostics:
            case = ET.SubElement(
                suite, "testcase", classname=file, name=f"{d.code} {d.line}:{d.column}"
            )
            tag = "failure" if d.severity == Severity.ERROR else "system-out"
            if tag == "failure":
                fails += 1
                el = ET.SubElement(case, "failure", message=_xml(d.message), type=d.code)
            else:
                el = ET.SubElement(case, "system-out")
            el.text = (
                f"{_xml(d.file)}:{d.line}:{d.column}: {d.severity} {d.code} {_xml(d.message)}"
                + (f"\nhint: {_xml(d.hint)}" if d.hint else "")
            )
        cases = len(r.diagnostics) or 1
        if not r.diagnostics:
            ET.SubElement(suite, "testcase", classname=file, name="valid")
        suite.set("tests", str(cases))
        suite.set("failures", str(fails))
        suite.set("errors", "0")
        total += cases
        failures += fails
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    out.write(ET.tostring(suites, encoding="unicode", xml_declaration=True))
    out.write("\n")
