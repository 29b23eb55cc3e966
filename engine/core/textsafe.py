"""Making untrusted text safe for each output: terminals, rich, XML and strict JSON.

Playbook text (titles, ids, messages that quote values) is written by whoever opened the pull
request, and CI logs are public and parsed: a raw newline can forge a line that reads as a CI
workflow command, an escape sequence can clear the screen or hide text, rich markup can inject a
hyperlink. Every renderer passes user text through one of these functions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any


class _Pattern:
    """A character class compiled on first use: the four below take about 1.5 ms to compile, a
    cost every start-up paid although a valid playbook's report escapes nothing."""

    __slots__ = ("_compiled", "_source")

    def __init__(self, source: str) -> None:
        self._source = source
        self._compiled: re.Pattern[str] | None = None

    def _rx(self) -> re.Pattern[str]:
        if self._compiled is None:
            self._compiled = re.compile(self._source)
        return self._compiled

    def search(self, text: str) -> re.Match[str] | None:
        """As `re.Pattern.search`."""
        return self._rx().search(text)

    def sub(self, repl: str | Callable[[re.Match[str]], str], text: str) -> str:
        """As `re.Pattern.sub`."""
        return self._rx().sub(repl, text)


# C0 and C1 controls, DEL, and the Unicode line/paragraph separators and bidi controls that
# terminals and log viewers act on; tab is kept (it is harmless and common in messages). Lone
# surrogates too: they come from file names that are not UTF-8 (surrogateescape) and cannot be
# written to a UTF-8 stream at all.
_CONTROL = _Pattern(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\x1b": "\\e"}
_SURROGATE = _Pattern("[\ud800-\udfff]")


def _escape_surrogate(o: int) -> str:
    # U+DC80..U+DCFF is how Python spells an undecodable byte 0x80..0xFF of a file name
    return f"\\x{o - 0xDC00:02x}" if 0xDC80 <= o <= 0xDCFF else f"\\u{o:04x}"


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    named = _NAMED.get(c)
    if named is not None:
        return named
    o = ord(c)
    if 0xD800 <= o <= 0xDFFF:
        return _escape_surrogate(o)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def utf8(text: str) -> str:
    """`text` that encodes as UTF-8: a lone surrogate (an undecodable file-name byte) as `\\xNN`."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda m: _escape_surrogate(ord(m.group(0))), text)


def terminal(text: str) -> str:
    """One line of plain text: control characters and newlines shown as visible escapes."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_char, text)


def markup(text: str) -> str:
    """Terminal-safe text that rich prints literally (no `[bold]`, no `[link=…]`)."""
    from rich.markup import escape

    return escape(terminal(text))


# A cell a spreadsheet would run as a formula (OWASP "CSV injection"): = + - @, and tab or CR,
# which some spreadsheets skip before looking.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """A CSV cell that a spreadsheet shows as text: one that would start a formula gets a `'`."""
    return "'" + text if text.startswith(_FORMULA_START) else text


# XML 1.0 forbids most C0 controls, surrogates and U+FFFE/U+FFFF even as character references.
_XML_INVALID = _Pattern("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """Text with the characters XML 1.0 cannot carry replaced by U+FFFD (escape <&> separately)."""
    return _XML_INVALID.sub("\ufffd", text)


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float (also nested) turned into None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


# Characters json.dumps(ensure_ascii=False) writes raw although a terminal acts on them (DEL, C1
# controls, line separators, bidi controls), and lone surrogates, which UTF-8 cannot carry. They
# only ever occur inside JSON strings, so replacing them in the serialised text is safe.
_JSON_UNSAFE = _Pattern(
    "[\x7f-\x9f\u061c\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _json_char(m: re.Match[str]) -> str:
    o = ord(m.group(0))
    if 0xD800 <= o <= 0xDFFF:  # the JSON text of the string `\xNN`, as utf8() shows it
        return "\\" + _escape_surrogate(o)
    return f"\\u{o:04x}"  # the same character, written as a JSON escape


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259): no NaN or Infinity tokens; non-finite numbers become null.

    The text is valid UTF-8 and safe on a terminal: control and bidi characters are `\\uXXXX`
    escapes (the same string to a JSON reader), a lone surrogate is the string `\\xNN`.
    """
    text = json.dumps(finite(value), ensure_ascii=False, indent=indent, allow_nan=False)
    if _JSON_UNSAFE.search(text) is None:
        return text
    return _JSON_UNSAFE.sub(_json_char, text)
