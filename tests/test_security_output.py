"""Untrusted text cannot forge, hide or break anything in any output `sop validate` prints.

Each hostile playbook is run through the real command line in a subprocess, and the assertions are
on the bytes it writes: what a CI log, a terminal or a code-scanning dashboard would receive.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import jsonschema
import pytest
from sop.engine.core import textsafe

from tests.conftest import ROOT

FORMATS = ["text", "json", "github", "sarif", "junit"]

# YAML escapes keep this file readable; the playbook's strings hold the raw characters:
# a newline that would start a forged workflow command, a clear-screen sequence, an OSC 8
# hyperlink, a C1 CSI, rich markup, and a right-to-left override that reorders what follows.
PAYLOAD = r"\n::error::pwned\e[2J\e]8;;https://evil\e\\x\x9b2J[link=https://evil]x[/link]\u202e"
HOSTILE = f"""\
playbook: evil
timezone: Asia/Shanghai
roles: {{ops: {{headcount: 1}}}}
backends: {{group: {{type: console}}}}
defaults: {{backend: group, owner: ops}}
stages:
  "s1{PAYLOAD}":
    title: "{PAYLOAD}"
  s2:
    title: "{PAYLOAD}"
    actions:
      "a1\\n##[error]forged{PAYLOAD}": {{day: 1, do: post, text: hi}}
"""
RAW_PAYLOAD = (
    "\n::error::pwned\x1b[2J\x1b]8;;https://evil\x1b\\x\x9b2J[link=https://evil]x[/link]\u202e"
)
# Bytes no output may carry raw: ESC, C1 CSI (U+009B), RLO (U+202E), line/paragraph separators.
FORBIDDEN = [b"\x1b", "\u009b".encode(), "\u202e".encode(), "\u2028".encode(), "\u2029".encode()]


def sop(*args: str, cwd: Path | None = None, encoding: str = "utf-8") -> tuple[int, bytes, bytes]:
    """Run the real CLI; stdout is strict UTF-8, as on a CI runner with a UTF-8 locale."""
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    env["PYTHONIOENCODING"] = f"{encoding}:strict"
    env.pop("NO_COLOR", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    p = tmp_path / "hostile.yaml"
    p.write_text(HOSTILE, encoding="utf-8")
    return p


def _no_forged_lines(out: bytes) -> None:
    for line in out.split(b"\n"):
        assert not line.startswith((b"::", b"##[")), line


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "junit"])
def test_no_format_writes_a_raw_control_newline_or_bidi_character(hostile: Path, fmt: str) -> None:
    code, out, _ = sop("validate", str(hostile), "--format", fmt)
    assert code == 1
    out.decode("utf-8")  # strict
    for raw in FORBIDDEN:
        assert raw not in out, (raw, out)
    _no_forged_lines(out)


def test_text_format_shows_user_text_escaped_on_its_own_line(hostile: Path) -> None:
    code, out, _ = sop("validate", str(hostile))
    text = out.decode("utf-8")
    assert code == 1
    shapes = re.compile(
        r"^(\S.*:\d+:\d+: (error|warning|note) SOP\d{3} .*"  # head
        r"|[ \d]{5} \| .*"  # source line
        r"|      \| *\^~*"  # caret
        r"|      = hint: .*"  # hint
        r"|\d+ error\(s\), \d+ warning\(s\) in \d+ file\(s\))$"
    )
    lines = text.splitlines()
    for line in lines:
        assert shapes.match(line), line
    heads = [line for line in lines if " error SOP" in line]
    assert len(heads) == 2
    # the id is quoted with visible escapes, rich markup stays literal text
    assert "`s1\\n::error::pwned\\e[2J\\e]8;;https://evil\\e\\x\\x9b2J" in heads[0]
    assert "[link=https://evil]x[/link]\\u202e`" in heads[0]
    assert "`a1\\n##[error]forged\\n::error::pwned" in heads[1]


def test_github_annotations_cannot_be_broken_out_of(hostile: Path) -> None:
    code, out, _ = sop("validate", str(hostile), "--format", "github")
    _, js, _ = sop("validate", str(hostile), "--format", "json")
    annotation = re.compile(
        rb"^::error file=[^,:\r\n]+,line=\d+,col=\d+,endLine=\d+,endColumn=\d+,"
        rb"title=SOP\d{3}::[^\r\n]*$"
    )
    lines = out.split(b"\n")
    assert code == 1 and lines[-1] == b""
    assert len(lines[:-1]) == len(json.loads(js)["diagnostics"]) == 2
    for line in lines[:-1]:
        assert annotation.match(line), line
    # the runner decodes %0A back into the message: the forged command stays inside it
    assert b"`s1%0A::error::pwned" in lines[0]
    assert b"`a1%0A##[error]forged%0A::error::pwned" in lines[1]


def test_json_keeps_the_exact_strings_and_is_strict(hostile: Path) -> None:
    code, out, _ = sop("validate", str(hostile), "--format", "json")

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON token {name}")

    data = json.loads(out.decode("utf-8"), parse_constant=no_constants)
    messages = [d["message"] for d in data["diagnostics"]]
    assert code == 1
    assert f"`s1{RAW_PAYLOAD}`" in messages[0]  # escaped on the wire, exact once parsed
    assert f"`a1\n##[error]forged{RAW_PAYLOAD}`" in messages[1]


def test_junit_parses_whatever_the_message_holds(hostile: Path) -> None:
    code, out, _ = sop("validate", str(hostile), "--format", "junit")
    root = ET.fromstring(out)  # bytes: the XML declaration's encoding is honoured
    failures = root.findall("./testsuite/testcase/failure")
    assert code == 1 and len(failures) == 2
    assert "`s1\\n::error::pwned\\e[2J" in (failures[0].get("message") or "")
    assert "\n" not in (failures[0].get("message") or "")


def test_junit_replaces_characters_xml_cannot_carry(tmp_path: Path) -> None:
    from sop.engine.core.diagnostics import Diagnostic, Severity
    from sop.engine.report import render_junit
    from sop.engine.validate import FileResult

    message = "bad \x01 \x1b[2J \ufffe \uffff \ud800 end"
    d = Diagnostic("p\x02.yaml", 1, 1, 1, 2, "SOP103", Severity.ERROR, message, "hint \x0b")
    buf = __import__("io").StringIO()
    render_junit([FileResult("p\x02.yaml", [d])], buf, False)
    root = ET.fromstring(buf.getvalue().encode("utf-8"))
    failure = root.find("./testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == "bad \\x01 \\e[2J \ufffd \ufffd \\ud800 end"
    assert root.find("testsuite").get("name") == "p\\x02.yaml"  # type: ignore[union-attr]


def _cells(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_caret_stays_under_the_token_after_escaping_wide_and_hidden_characters(
    tmp_path: Path, encoding: str
) -> None:
    # raw (not YAML-escaped) CJK, a right-to-left override and a tab before the wrong owner
    p = tmp_path / "p.yaml"
    p.write_text(
        "playbook: t\ntimezone: Asia/Shanghai\nroles: {ops: {headcount: 1}}\n"
        "backends: {group: {type: console}}\ndefaults: {backend: group, owner: ops}\n"
        "stages:\n  s1:\n    actions:\n"
        '      a1: {title: "清单\u202e\t[b]x", day: 1, do: post, owner: nobody, text: hi}\n',
        encoding="utf-8",
    )
    code, out, _ = sop("validate", str(p), encoding=encoding)
    lines = out.decode(encoding).splitlines()
    assert code == 1 and "unknown role `nobody`" in lines[0]
    source, caret = lines[1], lines[2]
    # the override visible, the tab as four spaces; CJK as escapes on a stream without it
    shown = "清单" if encoding == "utf-8" else "\\u6e05\\u5355"
    assert f"{shown}\\u202e    [b]x" in source
    assert _cells(source[: source.index("nobody")]) == _cells(caret[: caret.index("^")])
    assert caret.endswith("^~~~~~")


def test_a_huge_one_line_playbook_is_quoted_as_a_window_around_the_caret(tmp_path: Path) -> None:
    filler = "x" * 200_000
    p = tmp_path / "p.yaml"
    p.write_text(
        "{playbook: t, timezone: Asia/Shanghai, roles: {ops: {headcount: 1}},"
        " backends: {group: {type: console}}, defaults: {backend: group, owner: ops},"
        f' stages: {{s1: {{title: "{filler}", actions: {{a1: {{day: 1, do: post,'
        f' owner: nobody, text: "{filler}"}}}}}}}}}}\n',
        encoding="utf-8",
    )
    code, out, _ = sop("validate", str(p))
    lines = out.decode("utf-8").splitlines()
    assert code == 1 and "unknown role `nobody`" in lines[0]
    assert len(out) < 2_000
    source, caret = lines[1], lines[2]
    assert source.startswith("    1 | ...xxx") and source.endswith("...")
    assert source.index("nobody") == caret.index("^") and caret.endswith("^~~~~~")


@pytest.fixture
def undecodable(tmp_path: Path) -> Path:
    """A folder holding a playbook whose file name is not UTF-8 (git allows it)."""
    folder = tmp_path / "pr"
    folder.mkdir()
    try:
        fd = os.open(os.path.join(os.fsencode(folder), b"\xff bad.yaml"), os.O_WRONLY | os.O_CREAT)
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    os.write(fd, b"playbook: x\n")
    os.close(fd)
    return folder


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_name_that_is_not_utf8_is_reported_not_a_crash(
    undecodable: Path, fmt: str, tmp_path: Path
) -> None:
    code, out, _ = sop("validate", str(undecodable), "--format", fmt)
    text = out.decode("utf-8")
    assert code == 1
    if fmt == "sarif":
        assert "%FF%20bad.yaml" in text
    else:
        assert "\\xff bad.yaml" in text
    # the same through -o, a file opened as strict UTF-8
    target = tmp_path / f"out.{fmt}"
    code, _, _ = sop("validate", str(undecodable), "--format", fmt, "-o", str(target))
    assert code == 1 and target.read_bytes().decode("utf-8")


# RFC 3986 URI-reference characters with no query or fragment: unreserved, sub-delims, ':', '@',
# '/', and percent-encodings.
URI = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-F]{2})+$")


def _sarif(*args: str, cwd: Path) -> dict:
    code, out, _ = sop("validate", *args, "--format", "sarif", cwd=cwd)
    log = json.loads(out)
    schema = json.loads((ROOT / "tests" / "data" / "sarif-schema-2.1.0.json").read_text())
    jsonschema.Draft4Validator(schema).validate(log)
    assert code == 1
    return log


def test_sarif_uris_are_percent_encoded_and_relative_to_the_working_directory(
    tmp_path: Path,
) -> None:
    names = ["a #?%.yaml", "清单.yaml", "c:d.yaml"]
    for name in names:
        (tmp_path / name).write_text("playbook: x\n", encoding="utf-8")
    log = _sarif(*names, f"./{names[0]}", cwd=tmp_path)
    run = log["runs"][0]
    uris = [a["location"]["uri"] for a in run["artifacts"]]
    assert sorted(uris) == sorted(["a%20%23%3F%25.yaml", "%E6%B8%85%E5%8D%95.yaml", "c%3Ad.yaml"])
    assert all(a["location"]["uriBaseId"] == "%SRCROOT%" for a in run["artifacts"])
    for res in run["results"]:
        loc = res["locations"][0]["physicalLocation"]["artifactLocation"]
        assert URI.match(loc["uri"]) and unquote(loc["uri"]) in names
        assert uris[loc["index"]] == loc["uri"]


def test_sarif_uri_outside_the_working_directory_is_an_absolute_file_uri(tmp_path: Path) -> None:
    inside, outside = tmp_path / "repo", tmp_path / "other dir"
    inside.mkdir()
    outside.mkdir()
    (outside / "p #1.yaml").write_text("playbook: x\n", encoding="utf-8")
    log = _sarif(str(outside / "p #1.yaml"), cwd=inside)
    (artifact,) = log["runs"][0]["artifacts"]
    uri = artifact["location"]["uri"]
    assert uri == (outside / "p #1.yaml").as_uri() and uri.endswith("/other%20dir/p%20%231.yaml")
    assert "uriBaseId" not in artifact["location"]


def test_json_on_a_stream_that_is_not_utf8_escapes_what_it_cannot_carry(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("playbook: t\ntimezone: 清单/Shanghai\nstages: {s: {}}\n", encoding="utf-8")
    for fmt in ("json", "sarif"):
        code, out, _ = sop("validate", str(p), "--format", fmt, encoding="latin-1")
        assert (
            code == 1
            and out.isascii()
            and "清单" in json.dumps(json.loads(out), ensure_ascii=False)
        )
    code, out, _ = sop("validate", str(p), "--format", "junit", encoding="ascii")
    assert code == 1 and ET.fromstring(out) is not None


def test_rules_and_init_print_strict_utf8_json(tmp_path: Path) -> None:
    code, out, _ = sop("rules", "--format", "json")
    assert code == 0 and {r["code"] for r in json.loads(out.decode("utf-8"))} >= {"SOP001"}
    folder = os.path.join(os.fsencode(tmp_path), b"\xff")
    try:
        os.mkdir(folder)
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    code, out, _ = sop(
        "init", "h", "--template", "minimal", "--dir", os.fsdecode(folder), "--format", "json"
    )
    assert code == 0
    data = json.loads(out.decode("utf-8"))
    assert out.count(b"\n") == 1 and data["path"].endswith("\\xff/h.yaml")
    assert b"\\ud" not in out.lower()  # no lone-surrogate escape a strict parser would refuse


def test_dumps_is_strict_and_terminal_safe() -> None:
    text = textsafe.dumps({"n": float("nan"), "i": [float("inf")], "s": "a\u202e\x9b\udcffz"})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "n": None,
        "i": [None],
        "s": "a\u202e\x9b\\xffz",
    }
    assert text.isascii()


def test_terminal_escapes_arabic_letter_mark_and_lone_surrogates() -> None:
    assert textsafe.terminal("a\u061cb\udcffc\ud800") == "a\\u061cb\\xffc\\ud800"
    assert textsafe.utf8("a\udcffb") == "a\\xffb"
