"""The CJK font the project ships (Noto Sans SC, SIL OFL 1.1), embedded in a self-contained page.

The dashboard serves the font's unicode-range slices from engine/web/static/fonts/noto-sans-sc/
and a browser fetches only those a page needs. A report file opened offline cannot fetch
anything, so `embedded_css` inlines them as `data:` URLs: only the slices holding the page's
characters, each cut down to exactly those characters when fontTools can read WOFF2 (it needs the
`brotli` module), else whole (25-40 KB a slice). A machine without CJK fonts then still draws
the Chinese text in Noto Sans SC instead of empty boxes.
"""

from __future__ import annotations

import base64
import functools
import importlib
import importlib.util
import io
import re
from dataclasses import dataclass
from pathlib import Path

FAMILY = "Noto Sans SC"
# package data of the dashboard, shipped in the wheel (pyproject: sop.engine.web package-data)
FONT_DIR = Path(__file__).resolve().parents[1] / "web" / "static" / "fonts" / "noto-sans-sc"
CJK_FIRST = 0x2E80  # the first code point a report embeds the font for
_FACE = re.compile(r"src:\s*url\(([^)]+)\).*?unicode-range:\s*([^;]+);", re.S)


@dataclass(frozen=True)
class Slice:
    """One WOFF2 file of the font and the code points it covers."""

    file: str
    ranges: tuple[tuple[int, int], ...]

    def covers(self, code: int) -> bool:
        """Whether the slice has a glyph for code point `code`."""
        return any(a <= code <= b for a, b in self.ranges)


@functools.cache
def slices() -> tuple[Slice, ...]:
    """The font's slices, read from the stylesheet beside them (empty when not installed)."""
    try:
        css = (FONT_DIR / "noto-sans-sc.css").read_text(encoding="utf-8")
    except OSError:
        return ()
    out = []
    for file, ranges in _FACE.findall(css):
        spans = []
        for part in ranges.split(","):
            lo, _, hi = part.strip().removeprefix("U+").partition("-")
            spans.append((int(lo, 16), int(hi or lo, 16)))
        out.append(Slice(file.strip("'\""), tuple(spans)))
    return tuple(out)


def can_subset() -> bool:
    """Whether slices can be cut to the characters used (fontTools with a brotli module)."""
    if importlib.util.find_spec("fontTools") is None:
        return False
    for name in ("brotli", "brotlicffi"):  # fontTools reads and writes WOFF2 with either
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "decompress"):
            return True
    return False


def embedded_css(text: str, subset: bool | None = None) -> str:
    """`@font-face` rules (family `FAMILY`) with inline fonts for the CJK characters of `text`.

    "" when `text` needs none. `subset`: cut each slice to the characters used (default: when
    `can_subset()`); else the slices are embedded whole.
    """
    # from CJK radicals on: Latin punctuation (· – ×) is in every font, not worth a slice
    codes = sorted({ord(c) for c in text if ord(c) >= CJK_FIRST})
    cut = can_subset() if subset is None else subset
    rules = []
    for s in slices():
        used = [c for c in codes if s.covers(c)]
        if not used:
            continue
        data = (FONT_DIR / s.file).read_bytes()
        if cut:
            data = _subset(data, used)
            ranges = _ranges(used)
        else:
            ranges = s.ranges
        rules.append(
            f"@font-face{{font-family:'{FAMILY}';font-style:normal;font-weight:400;"
            f"src:url(data:font/woff2;base64,{base64.b64encode(data).decode('ascii')})"
            f" format('woff2');unicode-range:{_css_ranges(ranges)}}}"
        )
    return "\n".join(rules)


def _subset(woff2: bytes, codes: list[int]) -> bytes:
    """The glyphs of `codes` only, as WOFF2 (fontTools; brotli reads and writes WOFF2)."""
    from fontTools import subset as ft_subset
    from fontTools.ttLib import TTFont

    font = TTFont(io.BytesIO(woff2))
    options = ft_subset.Options()
    options.flavor = "woff2"
    sub = ft_subset.Subsetter(options)
    sub.populate(unicodes=codes)
    sub.subset(font)
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


def _ranges(codes: list[int]) -> tuple[tuple[int, int], ...]:
    """Sorted code points as (first, last) runs."""
    out: list[tuple[int, int]] = []
    for c in codes:
        if out and c == out[-1][1] + 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return tuple(out)


def _css_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"U+{a:x}" if a == b else f"U+{a:x}-{b:x}" for a, b in ranges)
