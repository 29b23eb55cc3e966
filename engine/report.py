"""Diagnostic renderers, chosen by name: text, json, github, sarif, junit."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TextIO

from .diagnostics import Diagnostic, Severity, all_rules
from .validate import FileResult

Renderer = Callable[[list[FileResult], TextIO, bool], None]
RENDERERS: dict[str, Renderer] = {}
VERSION = "0.1.0"


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    """Register a renderer under `name`."""

    def deco(fn: Renderer) -> Renderer:
        RENDERERS[name] = fn
        return fn

    return deco


def _all(results: list[FileResult]) -> list[Diagnostic]:
    return [d for r in results for d in r.diagnostics]


def _source_line(result: FileResult, d: Diagnostic) -> str:
    doc = result.documents.get(d.file)
    if doc is not None:
        return doc.line(d.line)
    try:
        with open(d.file, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if i == d.line:
                    return line.rstrip("\n")
    except (OSError, UnicodeDecodeError):
        pass
    return ""


def _width(s: str) -> int:
    """Display width: CJK characters take two terminal cells."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


@renderer("text")
def render_text(results: list[FileResult], out: TextIO, color: bool) -> None:
    """actionlint-style: `file:line:col: error SOP101 message`, the line, a caret, the hint."""

    def paint(s: str, code: str) -> str:
        return f"\x1b[{code}m{s}\x1b[0m" if color else s

    sev_color = {Severity.ERROR: "1;31", Severity.WARNING: "1;33", Severity.NOTE: "1;36"}
    for r in results:
        for d in r.diagnostics:
            head = f"{d.file}:{d.line}:{d.column}:"
            out.write(
                f"{paint(head, '1')} {paint(str(d.severity), sev_color[d.severity])}"
                f" {paint(d.code, '2')} {d.message}\n"
            )
            src = _source_line(r, d)
            if src:
                gutter = f"{d.line:>5} | "
                out.write(f"{paint(gutter, '2')}{src}\n")
                pad = _width(src[: max(d.column - 1, 0)])
                span_len = (d.end_column - d.column) if d.end_line == d.line else 1
                width = max(_width(src[d.column - 1 : d.column - 1 + max(span_len, 1)]), 1)
                out.write(
                    f"{paint(' ' * 6 + '| ', '2')}{' ' * pad}"
                    f"{paint('^' + '~' * (width - 1), sev_color[d.severity])}\n"
                )
            if d.hint:
                out.write(f"      = hint: {d.hint}\n")
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
    doc = {
        "version": 1,
        "files": [r.file for r in results],
        "diagnostics": [d.as_dict() for d in _all(results)],
        "summary": {
            "errors": sum(r.errors for r in results),
            "warnings": sum(r.warnings for r in results),
            "files": len(results),
        },
    }
    json.dump(doc, out, ensure_ascii=False, indent=2)
    out.write("\n")


def _gh_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


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
    files = sorted({d.file for d in _all(results)} | {r.file for r in results})
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "sop",
                        "version": VERSION,
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
                "artifacts": [{"location": {"uri": _uri(f)}} for f in files],
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
                                        "uri": _uri(d.file),
                                        "index": files.index(d.file),
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
    p = path.replace(os.sep, "/")
    return p[2:] if p.startswith("./") else p


@renderer("sarif")
def render_sarif(results: list[FileResult], out: TextIO, color: bool) -> None:
    """SARIF 2.1.0 for code-scanning dashboards."""
    json.dump(sarif(results), out, ensure_ascii=False, indent=2)
    out.write("\n")


@renderer("junit")
def render_junit(results: list[FileResult], out: TextIO, color: bool) -> None:
    """JUnit XML: a testsuite per file, a failing testcase per error, a passing one when clean."""
    import xml.etree.ElementTree as ET

    suites = ET.Element("testsuites", name="sop validate")
    total = failures = 0
    for r in results:
        suite = ET.SubElement(suites, "testsuite", name=r.file)
        fails = 0
        for d in r.diagnostics:
            case = ET.SubElement(
                suite, "testcase", classname=r.file, name=f"{d.code} {d.line}:{d.column}"
            )
            tag = "failure" if d.severity == Severity.ERROR else "system-out"
            if tag == "failure":
                fails += 1
                el = ET.SubElement(case, "failure", message=d.message, type=d.code)
            else:
                el = ET.SubElement(case, "system-out")
            el.text = f"{d.file}:{d.line}:{d.column}: {d.severity} {d.code} {d.message}" + (
                f"\nhint: {d.hint}" if d.hint else ""
            )
        cases = len(r.diagnostics) or 1
        if not r.diagnostics:
            ET.SubElement(suite, "testcase", classname=r.file, name="valid")
        suite.set("tests", str(cases))
        suite.set("failures", str(fails))
        suite.set("errors", "0")
        total += cases
        failures += fails
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    out.write(ET.tostring(suites, encoding="unicode", xml_declaration=True))
    out.write("\n")
