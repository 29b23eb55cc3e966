"""The playbook's markdown: parsed once for the chat dialects, and as plain text for the rest.

Templates are written in a small CommonMark subset. `parse` reads it into blocks and inline spans,
which each chat platform renders in its own dialect (slack.py, discord.py, telegram.py);
`strip_markup` is the same parse with the markup removed, for a chat told to send plain text.
`plain_text` is the dialect of the platforms that show no markup at all (e-mail, SMS): what a
plain-text reader reads best, keeping list markers and a lone `*` (which may be arithmetic).
Every function here is pure: the same text in, the same text out.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

# -- the playbook's markdown, parsed once for every chat dialect -------------------------------
#
# Templates are written in a small CommonMark subset: **bold** (or __bold__), *italic* (or
# _italic_), ~~strike~~, `code`, fenced code blocks, [label](url), <https://autolink>, # headings,
# > quotes and backslash escapes. Each platform renders the parsed form in its own dialect; what
# does not parse as a pair (a lone `*`, half of a pair cut by a split) is text, escaped so it
# shows as typed.


class Mark(enum.StrEnum):
    """What an inline span is."""

    TEXT = "text"
    CODE = "code"
    BOLD = "bold"
    ITALIC = "italic"
    STRIKE = "strike"
    LINK = "link"


@dataclass(frozen=True, slots=True)
class Span:
    """An inline span: literal `text` (TEXT, CODE), or marked `inner` spans (a LINK's target in
    `text`)."""

    mark: Mark
    text: str = ""
    inner: tuple[Span, ...] = ()


class Kind(enum.StrEnum):
    """What a line (or a fenced block) is."""

    LINE = "line"
    HEADING = "heading"
    QUOTE = "quote"
    ITEM = "item"  # a list item: its marker (`-`, `*`, `+`, `1.`) in `info`, its indent in `level`
    FENCE = "fence"


@dataclass(frozen=True, slots=True)
class Block:
    """One line of the text, or one fenced code block (`code`, its language in `info`)."""

    kind: Kind
    spans: tuple[Span, ...] = ()
    code: str = ""
    info: str = ""
    level: int = 0  # a heading's level (1 to 6), a list item's indent

    @property
    def bullet(self) -> bool:
        """A list item marked `-`, `*` or `+` (not numbered)."""
        return self.kind is Kind.ITEM and self.info in ("-", "*", "+")


_INLINE = re.compile(
    r"\\(?P<esc>[!-/:-@\[-`{-~])"
    r"|(?P<tick>`+)(?P<code>.+?)(?<!`)(?P=tick)(?!`)"
    r"|\*\*(?P<bold>[^\s*](?:.*?\S)?)\*\*"
    r"|(?<!\w)__(?P<bold2>[^\s_](?:.*?\S)?)__(?!\w)"
    r"|~~(?P<strike>[^\s~](?:.*?\S)?)~~"
    r"|\[(?P<label>[^\[\]\n]+)\]\((?P<url>(?:[^\s()<>]|\([^\s()<>]*\))+)\)"
    r"|<(?P<auto>https?://[^\s<>]+)>"
    r"|\*(?P<em>[^\s*](?:[^*]*?[^\s*])?)\*(?!\*)"
    r"|(?<!\w)_(?P<em2>[^\s_](?:[^_]*?[^\s_])?)_(?!\w)"
)
_FENCE = re.compile(r"(`{3,})[ \t]*([A-Za-z0-9_+#.-]{0,32})[ \t]*")
_HEADING = re.compile(r"(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*")
_QUOTE = re.compile(r">[ \t]?(.*)")
_ITEM = re.compile(r"([ \t]*)([*+-]|[0-9]{1,9}[.)])[ \t]+(.*)")


def parse_inline(text: str) -> tuple[Span, ...]:
    """The spans of one line."""
    spans: list[Span] = []
    literal: list[str] = []

    def flush() -> None:
        text = "".join(literal)
        if text:
            spans.append(Span(Mark.TEXT, text))
        literal.clear()

    pos = 0
    for m in _INLINE.finditer(text):
        literal.append(text[pos : m.start()])
        pos = m.end()
        if m.group("esc") is not None:
            literal.append(m.group("esc"))
            continue
        flush()
        if m.group("code") is not None:
            code = m.group("code")
            # CommonMark strips one space on each side of a code span that has both
            if len(code) > 2 and code[0] == code[-1] == " " and code.strip():
                code = code[1:-1]
            spans.append(Span(Mark.CODE, code))
        elif m.group("bold") is not None or m.group("bold2") is not None:
            spans.append(Span(Mark.BOLD, inner=parse_inline(m.group("bold") or m.group("bold2"))))
        elif m.group("strike") is not None:
            spans.append(Span(Mark.STRIKE, inner=parse_inline(m.group("strike"))))
        elif m.group("label") is not None:
            spans.append(Span(Mark.LINK, m.group("url"), parse_inline(m.group("label"))))
        elif m.group("auto") is not None:
            url = m.group("auto")
            spans.append(Span(Mark.LINK, url, (Span(Mark.TEXT, url),)))
        else:
            spans.append(Span(Mark.ITALIC, inner=parse_inline(m.group("em") or m.group("em2"))))
    literal.append(text[pos:])
    flush()
    return tuple(spans)


def parse(text: str) -> list[Block]:
    """The blocks of a text: one per line, a fenced code block as one (closed or not)."""
    blocks: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.fullmatch(line)
        if fence is not None:
            ticks, body = fence.group(1), []
            i += 1
            while i < len(lines) and not re.fullmatch(rf"{ticks}`*[ \t]*", lines[i]):
                body.append(lines[i])
                i += 1
            blocks.append(Block(Kind.FENCE, code="\n".join(body), info=fence.group(2)))
            i += 1  # the closing fence (or the end)
            continue
        heading = _HEADING.fullmatch(line)
        quote = _QUOTE.fullmatch(line)
        item = _ITEM.fullmatch(line)
        if heading is not None:
            level = len(heading.group(1))
            blocks.append(Block(Kind.HEADING, parse_inline(heading.group(2)), level=level))
        elif quote is not None:
            blocks.append(Block(Kind.QUOTE, parse_inline(quote.group(1))))
        elif item is not None:
            indent, marker = len(item.group(1).expandtabs(4)), item.group(2)
            blocks.append(Block(Kind.ITEM, parse_inline(item.group(3)), info=marker, level=indent))
        else:
            blocks.append(Block(Kind.LINE, parse_inline(line)))
        i += 1
    return blocks


def flatten(spans: Iterable[Span]) -> str:
    """The spans' words without markup (a link as `label (url)` unless they are the same)."""
    out: list[str] = []
    for s in spans:
        if s.mark in (Mark.TEXT, Mark.CODE):
            out.append(s.text)
        elif s.mark is Mark.LINK:
            label = flatten(s.inner)
            out.append(label if label == s.text else f"{label} ({s.text})")
        else:
            out.append(flatten(s.inner))
    return "".join(out)


def strip_markup(text: str) -> str:
    """The text with its markup removed (a bullet as `•`, a link as `label (url)`), for a chat
    platform told to send plain text."""
    lines: list[str] = []
    for b in parse(text):
        if b.kind is Kind.FENCE:
            lines.append(b.code)
        elif b.kind is Kind.QUOTE:
            lines.append("> " + flatten(b.spans))
        elif b.kind is Kind.ITEM:
            lines.append(item_marker(b, "•") + flatten(b.spans))
        else:
            lines.append(flatten(b.spans))
    return "\n".join(lines)


def item_marker(b: Block, bullet: str) -> str:
    """A list item's indent and marker: `bullet` for `-`/`*`/`+`, the number as written."""
    return " " * b.level + (bullet if b.bullet else b.info) + " "


# -- the plain-text dialect (e-mail, SMS) -------------------------------------------------------

_P_HEADING = re.compile(r"(?m)^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_P_LINK = re.compile(r"!?\[([^\]\n]*)\]\(\s*<?([^\s()<>]+)>?(?:\s+\"[^\"\n]*\")?\s*\)")
_P_AUTOLINK = re.compile(r"<((?:https?|mailto):[^\s<>]+)>")
# `__` only at word edges, as CommonMark: `snake__case` and a URL's `a__b__c` stay as written
_P_STRONG = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)")
_P_CODE = re.compile(r"`([^`\n]+)`")
_P_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>|~])")


def plain_text(text: str) -> str:
    """Markdown as a plain-text reader reads it best: `[label](url)` as `label (url)`, `<url>`
    as the URL, `**strong**`, `__strong__`, `` `code` `` and heading marks dropped, backslash
    escapes resolved; line breaks, lists and single `*` (which may be arithmetic) kept.

    The dialect of every plain-text platform here (e-mail, SMS).
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _P_HEADING.sub(r"\1", text)
    text = _P_LINK.sub(_link, text)
    text = _P_AUTOLINK.sub(r"\1", text)
    text = _P_CODE.sub(r"\1", text)
    text = _P_STRONG.sub(lambda m: m.group(1) or m.group(2), text)
    return _P_ESCAPED.sub(r"\1", text)


def _link(m: re.Match[str]) -> str:
    label, url = m.group(1).strip(), m.group(2)
    return url if not label or label == url else f"{label} ({url})"
