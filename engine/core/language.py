"""Which language a text is written in, and the `lang` tag of a page made from it.

The dashboard negotiates its language with the browser (engine/web/i18n.py); a report made from a
playbook takes the language of the playbook's own words. Both tag their pages from `HTML_LANG`.
"""

from __future__ import annotations

from collections.abc import Iterable

LANGS = ("zh", "en")
HTML_LANG = {"zh": "zh-CN", "en": "en"}  # zh-CN selects Simplified Chinese glyph forms
# A Han character carries about as much as a short Latin word: a text is Chinese when it has at
# least one Han character for every HAN_RATIO Latin letters.
HAN_RATIO = 4


def is_han(c: str) -> bool:
    """Whether `c` is a CJK ideograph (the unified blocks, their extensions, compatibility)."""
    o = ord(c)
    return (
        0x3400 <= o <= 0x4DBF
        or 0x4E00 <= o <= 0x9FFF
        or 0xF900 <= o <= 0xFAFF
        or 0x20000 <= o <= 0x3FFFF
    )


def text_language(texts: Iterable[str]) -> str:
    """`zh` when the texts are mostly Chinese (Han characters against Latin letters), else `en`."""
    han = latin = 0
    for text in texts:
        for c in text:
            if is_han(c):
                han += 1
            elif c.isascii() and c.isalpha():
                latin += 1
    return "zh" if han and han * HAN_RATIO >= latin else "en"
