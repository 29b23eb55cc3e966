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
from typing import Any

# C0 and C1 controls, DEL, and the Unicode line/paragraph separators and bidi overrides that
# terminals and log viewers act on; tab is kept (it is harmless and common in messages).
_CONTROL = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\x1b": "\\e"}


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    named = _NAMED.get(c)
    if named is not None:
        return named
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def terminal(text: str) -> str:
    """One line of plain text: control characters and newlines shown as visible escapes."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_char, text)


def markup(text: str) -> str:
    """Terminal-safe text that rich prints literally (no `[bold]`, no `[link=…]`)."""
    from rich.markup import escape

    return escape(terminal(text))


# XML 1.0 forbids most C0 controls, surrogates and U+FFFE/U+FFFF even as character references.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


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


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259): no NaN or Infinity tokens; non-finite numbers become null."""
    return json.dumps(finite(value), ensure_ascii=False, indent=indent, allow_nan=False)
