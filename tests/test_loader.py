"""The safe loader: positions, YAML 1.1 traps, duplicate keys, and hostile input."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import tracemalloc

import pytest
from sop.engine.lang import loader
from sop.engine.lang.loader import LoadError, load_file, load_text


def _error(text: str | bytes, tmp_path) -> LoadError:
    p = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    with pytest.raises(LoadError) as info:
        load_file(str(p))
    return info.value


def test_values_keep_file_line_and_column() -> None:
    doc = load_text("a:\n  b: [x, 'y']\n", "f.yaml")
    s = doc.span(("a", "b", 1))
    assert (s.file, s.line, s.column, s.end_column) == ("f.yaml", 2, 10, 13)
    assert doc.key_span(("a", "b")).column == 3


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("on", "on"),
        ("yes", "yes"),
        ("no", "no"),
        ("off", "off"),
        ("y", "y"),
        ("12:30", "12:30"),
        ("2026-12-01", "2026-12-01"),
        ("014", "014"),
        ("0x1F", "0x1F"),
        ("1_000", "1_000"),
        (".inf", ".inf"),
        ("true", True),
        ("false", False),
        ("42", 42),
        ("-3", -3),
        ("0.5", 0.5),
        ("1e3", 1000.0),
        ("~", None),
        ("null", None),
        ("'true'", "true"),
    ],
)
def test_yaml_11_traps_are_handled_on_purpose(text: str, value: object) -> None:
    got = load_text(f"k: {text}\n").data["k"]
    assert got == value and type(got) is type(value)


def test_on_as_a_key_stays_a_string() -> None:
    assert load_text("on: member.joined\n").data == {"on": "member.joined"}


def test_duplicate_key_is_reported_at_the_second_key() -> None:
    with pytest.raises(LoadError) as info:
        load_text("a: 1\nb: 2\na: 3\n", "f.yaml")
    d = info.value.diagnostic
    assert (d.code, d.line, d.column) == ("SOP002", 3, 1)
    assert "line 1" in d.message


def test_merge_keys_work_and_explicit_keys_win() -> None:
    doc = load_text("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n")
    assert doc.data["c"] == {"x": 1, "y": 3}


def test_alias_bomb_is_stopped_quickly_with_little_memory(tmp_path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    tracemalloc.start()
    t = time.perf_counter()
    err = _error("\n".join(lines) + "\n", tmp_path)
    elapsed = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    d = err.diagnostic
    assert d.code == "SOP003" and "alias" in d.message
    assert (d.line, d.column) == (7, 10)  # the first `*a5`: where the expansion passes the limit
    assert elapsed < 1.0 and peak < 50 * 2**20


def test_ten_thousand_deep_nesting(tmp_path) -> None:
    t = time.perf_counter()
    tracemalloc.start()
    err = _error("a: " + "[" * 10_000 + "]" * 10_000 + "\n", tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    d = err.diagnostic
    assert d.code == "SOP003" and "nesting" in d.message
    assert (d.line, d.column) == (1, 4 + loader.MAX_DEPTH - 1)  # the bracket that is one too deep
    assert peak < 10 * 2**20
    assert time.perf_counter() - t < 1.0


def test_deep_block_mappings(tmp_path) -> None:
    text = "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v\n"
    assert _error(text, tmp_path).diagnostic.code == "SOP003"


def test_fifty_megabyte_file_is_refused_without_reading_it(tmp_path) -> None:
    p = tmp_path / "big.yaml"
    with open(p, "wb") as fh:
        fh.truncate(50 * 2**20)
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(LoadError) as info:
        load_file(str(p))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    d = info.value.diagnostic
    assert d.code == "SOP003" and "MiB" in d.message and (d.line, d.column) == (1, 1)
    assert time.perf_counter() - t < 1.0 and peak < 5 * 2**20


def test_binary_bytes(tmp_path) -> None:
    err = _error(b"playbook: t\nab\x00\x01\x02\xff", tmp_path)
    d = err.diagnostic
    assert d.code == "SOP004" and (d.line, d.column) == (2, 3)


def test_invalid_utf8_is_located(tmp_path) -> None:
    err = _error(b"playbook: t\ntitle: ok\n" + b"x: \xc3\x28\n", tmp_path)
    d = err.diagnostic
    assert (d.code, d.line, d.column) == ("SOP004", 3, 4)


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [("a: b\x01c\n", 1, 5), ("x: 1\ny: \x07\n", 2, 4), ("名字: 值\x01\n", 1, 6)],
)
def test_control_characters_are_located(text: str, line: int, col: int) -> None:
    with pytest.raises(LoadError) as info:
        load_text(text)
    d = info.value.diagnostic
    assert (d.code, d.line, d.column) == ("SOP004", line, col) and "U+00" in d.message


def test_utf8_bom_is_accepted(tmp_path) -> None:
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbfk: v\n")
    assert load_file(str(p)).data == {"k": "v"}


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "---\n...\n"])
def test_empty_documents(text: str, tmp_path) -> None:
    assert _error(text, tmp_path).diagnostic.code == "SOP005"


@pytest.mark.parametrize("text", ["- a\n", "just text\n", "42\n"])
def test_non_mapping_root(text: str, tmp_path) -> None:
    d = _error(text, tmp_path).diagnostic
    assert d.code == "SOP005" and "not a mapping" in d.message


def test_second_document_is_an_error(tmp_path) -> None:
    d = _error("a: 1\n---\nb: 2\n", tmp_path).diagnostic
    assert d.code == "SOP001" and d.line == 2


def test_missing_file(tmp_path) -> None:
    with pytest.raises(LoadError) as info:
        load_file(str(tmp_path / "nope.yaml"))
    d = info.value.diagnostic
    assert d.code == "SOP006" and (d.line, d.column) == (1, 1) and "nope.yaml" in d.file


def test_unsupported_tags_are_refused() -> None:
    with pytest.raises(LoadError) as info:
        load_text("a: !!python/name:os.system ''\n")
    assert info.value.diagnostic.code == "SOP009"


def test_limits_are_module_constants() -> None:
    assert loader.MAX_DEPTH >= 32 and loader.MAX_BYTES >= 2**20


def test_the_pattern_primed_for_pyyaml_matches_exactly_the_same_code_points() -> None:
    from sop.engine.lang import pyyaml

    ours = re.compile(pyyaml.NON_PRINTABLE)
    # re.UNICODE, the default for text, only keys re's cache apart from the primed entry
    theirs = re.compile(pyyaml.PYYAML_NON_PRINTABLE, re.UNICODE)
    assert theirs.pattern != ours.pattern
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    assert [m.start() for m in ours.finditer(every)] == [m.start() for m in theirs.finditer(every)]


def test_pyyaml_reads_through_the_primed_pattern_and_still_refuses_control_characters() -> None:
    code = """if True:
        from sop.engine.lang import pyyaml
        import yaml
        print(yaml.reader.Reader.NON_PRINTABLE.pattern == pyyaml.NON_PRINTABLE)
        try:
            yaml.load("a: b\\x07", Loader=yaml.SafeLoader)  # PyYAML's pure-Python reader
        except yaml.reader.ReaderError as e:
            print(hex(e.character), e.position)
    """
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout == "True\n0x7 4\n", res.stderr
