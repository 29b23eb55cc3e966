"""The `slack-webhook` backend: each delivery posted to a Slack incoming webhook as mrkdwn.

Slack answers `200 ok` when the message is posted and a status with a short error string
otherwise (docs.slack.dev/messaging/sending-messages-using-incoming-webhooks); the table of how
each answer is classified is in docs/backends/slack-discord-telegram.md.

This module is also the home, until they move to a module of their own, of what the three chat
backends (`slack-webhook`, `discord-webhook`, `telegram-bot`) share: the playbook's markdown
parsed once (`parse`), the length policy applied after a dialect's escaping (`fit_adapted`),
a multi-part send (`send_parts`) and the HTTP exchange (`Transport`).
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from requests import exceptions as rexc
from urllib3 import exceptions as u3exc

from ...core.catalog import DEFAULT_RATES, MESSAGE_KINDS
from ...core.textsafe import terminal
from ...core.version import version
from ..ports import BackendConfig, Capabilities, Delivery, SendResult, SendStatus
from ._common import (
    BackendError,
    check_fits,
    check_options,
    encode,
    env_reference,
    option_int,
    option_seconds,
    option_str,
    redact,
    resolve_secret,
)
from ._text import Policy, Unit, fit, size, truncate
from .webhook import (
    BODY_LIMIT,
    CONNECT_TIMEOUT,
    DETAIL_LIMIT,
    MAX_RETRY_AFTER,
    READ_TIMEOUT,
    _json,
    _not_connected,
)

TYPE = "slack-webhook"
LIMIT = 4_000  # characters a message should keep to; Slack truncates beyond 40,000
HARD_LIMIT = 40_000
UNIT = Unit.CHARS
# What a chat channel can carry: every kind that puts a message in front of members, and staff
# reminders. `tag`, `remove` and `mute` are actions on members a webhook cannot perform.
CHAT_KINDS = frozenset(MESSAGE_KINDS | {"task"})
# A later part of a split message that is rate limited is waited for, up to this, inside the
# send: giving up would leave the message half posted (`uncertain`).
PART_WAIT = 10.0
_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,20}")

# What Slack's error strings mean for the operator (the string itself is always shown).
_SLACK_HINTS = {
    "invalid_payload": "Slack could not read the message",
    "no_text": "the message has no text",
    "too_many_attachments": "the message has too many attachments",
    "user_not_found": "the webhook's user no longer exists",
    "channel_not_found": "the webhook's channel no longer exists: create a new webhook",
    "channel_is_archived": "the channel is archived: unarchive it or create a new webhook",
    "action_prohibited": "a workspace admin restricts posting through this webhook",
    "posting_to_general_channel_denied": "only admins may post to this channel",
    "invalid_token": "the webhook was revoked: create a new one",
    "no_service": "the webhook was removed or disabled: create a new one",
    "no_service_id": "the webhook URL is incomplete",
    "no_active_hooks": "the webhook was disabled: create a new one",
    "no_team": "the workspace no longer exists",
    "team_disabled": "the workspace is disabled",
}


# -- the playbook's markdown, parsed once for every dialect ------------------------------------
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


def plain(text: str) -> str:
    """The text with its markup removed, for a platform told to send plain text."""
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


# -- Slack's mrkdwn -----------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """`&`, `<` and `>` as the entities Slack requires (they are its control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn_spans(spans: Iterable[Span], active: frozenset[Mark] = frozenset()) -> str:
    out: list[str] = []
    for s in spans:
        if s.mark is Mark.TEXT:
            out.append(slack_escape(s.text))
        elif s.mark is Mark.CODE:
            out.append(f"`{slack_escape(s.text)}`")
        elif s.mark is Mark.LINK:  # <url|label>; a `|` in the URL would end it early
            url = slack_escape(s.text).replace("|", "%7C")
            out.append(f"<{url}|{slack_escape(flatten(s.inner))}>")
        else:
            inner = _mrkdwn_spans(s.inner, active | {s.mark})
            sign = _MRKDWN[s.mark]
            # the same mark inside itself would close it early: the inner one goes unmarked
            out.append(inner if s.mark in active else f"{sign}{inner}{sign}")
    return "".join(out)


_MRKDWN = {Mark.BOLD: "*", Mark.ITALIC: "_", Mark.STRIKE: "~"}


def to_mrkdwn(text: str) -> str:
    """The playbook's markdown as Slack mrkdwn: `**b**` → `*b*`, `*i*` → `_i_`, `~~s~~` → `~s~`,
    `[t](u)` → `<u|t>`, a heading as a bold line, a bullet as `•`, and `&`, `<`, `>` escaped
    everywhere else."""
    lines: list[str] = []
    for b in parse(text):
        if b.kind is Kind.FENCE:
            lines.append(f"```\n{slack_escape(b.code)}\n```")
        elif b.kind is Kind.HEADING:
            lines.append(f"*{_mrkdwn_spans(b.spans, frozenset({Mark.BOLD}))}*" if b.spans else "")
        elif b.kind is Kind.QUOTE:
            lines.append("> " + _mrkdwn_spans(b.spans))  # the marker itself is mrkdwn
        elif b.kind is Kind.ITEM:
            lines.append(item_marker(b, "•") + _mrkdwn_spans(b.spans))
        else:
            lines.append(_mrkdwn_spans(b.spans))
    return "\n".join(lines)


def to_slack_plain(text: str) -> str:
    """Plain text for Slack (`markdown: none`, sent with `"mrkdwn": false`): markup removed,
    the control characters still escaped."""
    return slack_escape(plain(text))


# -- the length policy after escaping -----------------------------------------------------------


def fit_adapted(
    text: str, limit: int, unit: Unit, policy: Policy, adapt: Callable[[str], str]
) -> list[tuple[str, str]]:
    """`text` split (or truncated) so that each part, once adapted to a dialect, fits `limit`.

    The source is cut, not the adapted text, so a cut never falls inside an escape or an
    entity; since escaping lengthens a part, the budget shrinks until every part fits. Returns
    (source part, adapted part) pairs.
    """
    budget = limit
    for _ in range(8):
        parts = [(p, adapt(p)) for p in fit(text, budget, unit, policy)]
        worst = max(size(a, unit) for _, a in parts)
        if worst <= limit:
            return parts
        budget = min(budget - 1, budget * limit // worst)
        if budget < 64:
            break
    # escaping that more than multiplies the text by eight: keep what fits, marked as cut
    return [(p, truncate(a, limit, unit)) for p, a in parts]


def overflow_policy(config: BackendConfig) -> Policy:
    """The `overflow` option: `split` (the default) or `truncate`."""
    value = option_str(config, "overflow") or Policy.SPLIT.value
    try:
        return Policy(value)
    except ValueError:
        raise BackendError(f'backend "{config.name}": overflow must be split or truncate') from None


def message_limit(config: BackendConfig, default: int, ceiling: int) -> int:
    """The longest message to send: the `max_length` option (64 to the platform's `ceiling`),
    else `default`; a longer text is split (or truncated) to it."""
    chosen = option_int(config, "max_length")
    if chosen is None:
        return default
    if not 64 <= chosen <= ceiling:
        raise BackendError(f'backend "{config.name}": max_length must be between 64 and {ceiling}')
    return chosen


def dialect(config: BackendConfig, native: str) -> str | None:
    """The `markdown` option: the platform's dialect (the default) or `none` (plain text)."""
    value = option_str(config, "markdown") or native
    if value.lower() == native:
        return native
    if value.lower() == "none":
        return None
    raise BackendError(f'backend "{config.name}": markdown must be {native} or none')


def rate(config: BackendConfig, type_name: str) -> int:
    """The configured rate, else the platform's (core.catalog.DEFAULT_RATES, as `sop validate`
    reads it)."""
    return config.rate_per_minute or DEFAULT_RATES[type_name]


def kinds_only(caps: Capabilities) -> Capabilities:
    """What `check_fits` should enforce before a split: the kinds (`max_length` is one message's
    limit, which these backends split to, not a refusal)."""
    return Capabilities(kinds=caps.kinds)


# -- a message in parts -------------------------------------------------------------------------

P = TypeVar("P")  # one part as a backend sends it (a text, a request body)


def send_parts(
    parts: Sequence[P],
    send_one: Callable[[int, P], SendResult],
    sleep: Callable[[float], None],
) -> SendResult:
    """Send `parts` in order under one delivery.

    The first part's failure is the delivery's (nothing went out). A later part that is rate
    limited for at most PART_WAIT seconds is waited for and sent again once; any other failure
    of a later part is `uncertain`, naming the part, since the earlier ones were posted.
    """
    n = len(parts)
    ids: list[str] = []
    last = SendResult.permanent("nothing to send")
    for i, part in enumerate(parts, 1):
        result = send_one(i, part)
        if (
            i > 1
            and result.status is SendStatus.RETRY
            and result.retry_after is not None
            and result.retry_after <= PART_WAIT
        ):
            sleep(result.retry_after)
            result = send_one(i, part)
        if result.status is not SendStatus.OK:
            if i == 1:
                return result if n == 1 else _named(result, f"part 1/{n}: ")
            return SendResult.uncertain(
                f"part {i}/{n} failed after {i - 1} of {n} parts were posted (not resent:"
                f" resolve by hand): {result.detail}"
            )
        if result.remote_id:
            ids.append(result.remote_id)
        last = result
    if n == 1:
        return last
    return SendResult.ok(f"{n} messages posted; {last.detail}", ",".join(ids) or None)


def _named(result: SendResult, prefix: str) -> SendResult:
    return replace(result, detail=prefix + result.detail)


# -- the HTTP exchange --------------------------------------------------------------------------


class _Scrub(logging.Filter):
    """Secrets out of urllib3's own log lines: at DEBUG it logs each request's path, and a
    webhook's or a bot's token is in the path. Filters on a logger see only that logger's
    records, so it is attached to each urllib3 logger that quotes a URL."""

    LOGGERS = (
        "urllib3.connectionpool",
        "urllib3.poolmanager",
        "urllib3.util.retry",
        "urllib3.connection",
        "urllib3.response",
    )

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, int] = {}  # secret -> how many open transports use it
        # what `filter` reads: replaced whole, never changed in place, so a record logged by
        # another thread while a backend opens or closes sees one consistent set
        self._current: tuple[str, ...] = ()
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._current
        if secrets:
            message = record.getMessage()
            clean = redact(message, secrets)
            if clean != message:
                record.msg, record.args = clean, None
        return True

    def hold(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            self.secrets[s] = self.secrets.get(s, 0) + 1
        self._current = tuple(self.secrets)

    def release(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            left = self.secrets.get(s, 0) - 1
            if left > 0:
                self.secrets[s] = left
            else:
                self.secrets.pop(s, None)
        self._current = tuple(self.secrets)


_SCRUB = _Scrub()


class Answer(NamedTuple):
    """A platform's HTTP answer, read bounded."""

    status: int
    headers: Mapping[str, str]
    raw: bytes
    complete: bool  # the body was read without error
    body: Any  # the body as JSON, or None


class Transport:
    """One platform's HTTP exchange: a JSON POST with bounded time and body, no redirects, a
    fresh connection each time, failures before an answer classified, secrets kept out of what
    it says (and out of urllib3's log).

    The classification of failures is webhook.py's: `retry` when nothing was sent (refused,
    unresolvable, connect timeout, TLS), `uncertain` when the request may have arrived (read
    timeout, a connection broken after sending).
    """

    def __init__(
        self,
        origin: str,
        secrets: Iterable[str],
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.origin = origin  # scheme://host[:port]: what details name
        self._hidden = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        self._timeout = (connect_timeout, read_timeout)
        self._session: requests.Session | None = requests.Session()
        _SCRUB.hold(self._hidden)

    def __repr__(self) -> str:
        return f"Transport(origin={self.origin!r})"

    @property
    def closed(self) -> bool:
        return self._session is None

    def close(self) -> None:
        """Close the connection pool (twice is harmless)."""
        session, self._session = self._session, None
        if session is not None:
            session.close()
            _SCRUB.release(self._hidden)

    def post(self, url: str, payload: Mapping[str, Any]) -> Answer | SendResult:
        """POST `payload` as JSON to `url`: the answer, or how the attempt failed."""
        if self._session is None:
            raise RuntimeError(f"the connection to {self.origin} is closed")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"sop/{version()}",
            # None of these platforms dedupes: a pooled connection the server already closed
            # fails like a reset after sending, which would make a certain failure uncertain.
            "Connection": "close",
        }
        try:
            response = self._session.post(
                url,
                data=encode(payload),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
        except rexc.RequestException as e:
            return self._failed(e)
        try:
            raw, complete = self._read(response)
        finally:
            response.close()
        return Answer(response.status_code, response.headers, raw, complete, _json(raw))

    def said(self, text: object) -> str:
        """`: <what the platform said>`, one line, at most DETAIL_LIMIT, without secrets."""
        if not isinstance(text, str):
            return ""
        text = redact(" ".join(text.split()), self._hidden)
        if len(text) > DETAIL_LIMIT:
            text = text[: DETAIL_LIMIT - 1] + "…"
        return f": {terminal(text)}" if text else ""

    def text(self, answer: Answer) -> str:
        """The answer's body as text (for platforms that answer in plain text)."""
        return answer.raw.decode("utf-8", "replace")

    def _failed(self, e: rexc.RequestException) -> SendResult:
        where = self.origin
        connect, read = self._timeout
        if isinstance(e, rexc.ConnectTimeout):  # before the ConnectionError it also is
            return SendResult.retry(f"could not connect to {where} within {connect:g} s")
        if isinstance(e, rexc.ReadTimeout):
            return SendResult.uncertain(
                f"no answer from {where} within {read:g} s after the request was sent"
            )
        if isinstance(e, rexc.SSLError):
            return SendResult.retry(f"TLS with {where} failed (certificate or protocol)")
        if isinstance(e, rexc.ConnectionError):
            why = _not_connected(e)
            if why is not None:
                return SendResult.retry(f"could not connect to {where}: {why}")
            return SendResult.uncertain(
                f"the connection to {where} broke after the request was sent"
            )
        if isinstance(e, rexc.InvalidURL | rexc.MissingSchema | rexc.InvalidSchema):
            return SendResult.permanent(f"the URL for {where} is not usable")
        # str(e) is not shown: requests quotes the URL, token and all, in its messages
        return SendResult.uncertain(f"{type(e).__name__} while sending to {where}")

    def _read(self, response: requests.Response) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        total = 0
        deadline = time.monotonic() + self._timeout[1]
        try:
            for chunk in response.iter_content(8192):
                chunks.append(chunk)
                total += len(chunk)
                if total >= BODY_LIMIT:
                    break
                if time.monotonic() > deadline:
                    return b"".join(chunks), False
        except (rexc.RequestException, u3exc.HTTPError, OSError):
            return b"".join(chunks), False
        return b"".join(chunks)[:BODY_LIMIT], True


def seconds(value: object) -> float | None:
    """A wait in seconds from a header or a JSON field (a number, or a number as text), clamped
    to [0, MAX_RETRY_AFTER]; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not re.fullmatch(r"\s*[0-9]{1,10}(\.[0-9]{1,9})?\s*", value):
            return None
        value = float(value)
    if not isinstance(value, int | float) or value != value:  # NaN
        return None
    return min(max(float(value), 0.0), MAX_RETRY_AFTER)


def with_origin(url: str, base_url: str | None) -> str:
    """`url` sent to `base_url`'s scheme and host instead of its own (tests, proxies)."""
    if not base_url:
        return url
    base, parts = urlsplit(base_url), urlsplit(url)
    path = base.path.rstrip("/") + parts.path
    return urlunsplit((base.scheme, base.netloc, path, parts.query, ""))


def http_url(config: BackendConfig, value: str, what: str) -> str:
    """`value` checked to be an http(s) URL with a host (the message never quotes it)."""
    try:
        parts = urlsplit(value)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 — raises ValueError for a port that is not a number
    except ValueError:
        usable = False
    if not usable:
        raise BackendError(f'backend "{config.name}": {what} must be an http:// or https:// URL')
    return value


def base_url(config: BackendConfig, env: Mapping[str, str]) -> str | None:
    """The `base_url` option: where requests go instead of the platform (tests, a proxy, a
    self-hosted Bot API server).

    The requests carry the token, and a playbook is written by whoever opened the pull request:
    a base URL from the playbook could send the token to any host. So it is taken only from
    the environment (`base_url: "${env:NAME}"`, the operator's choice), or as a loopback
    address (tests, a local proxy).
    """
    raw = option_str(config, "base_url")
    if raw is None:
        return None
    value = http_url(config, resolve_secret(raw, env, what=f'backend "{config.name}": base_url'),
                     "base_url")  # fmt: skip
    if env_reference(raw) is None and not _loopback(value):
        raise BackendError(
            f'backend "{config.name}": base_url receives the token, so it comes from the'
            ' environment (base_url: "${env:NAME}") unless it is a loopback address'
        )
    if urlsplit(value).query:
        raise BackendError(f'backend "{config.name}": base_url takes no query')
    return value


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> str:
    """scheme://host[:port] of `url`, without credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def timeouts(config: BackendConfig) -> dict[str, float]:
    """The `connect_timeout` and `read_timeout` options, as Transport's keywords."""
    return {
        "connect_timeout": option_seconds(config, "connect_timeout", CONNECT_TIMEOUT),
        "read_timeout": option_seconds(config, "read_timeout", READ_TIMEOUT),
    }


COMMON_CHAT_OPTIONS = ("base_url", "overflow", "connect_timeout", "read_timeout")


# -- the backend --------------------------------------------------------------------------------

# What `sop backends` shows; `create` adjusts it to the options (max_length, markdown, rate).
CAPABILITIES = Capabilities(
    kinds=CHAT_KINDS,
    max_length=LIMIT,
    length_unit=UNIT.value,
    mentions=True,
    markdown="mrkdwn",
    idempotent=False,
    rate_per_minute=DEFAULT_RATES[TYPE],
)


class SlackWebhookBackend:
    """Posts deliveries to one Slack channel through its incoming webhook."""

    def __init__(
        self,
        name: str,
        url: str,
        caps: Capabilities,
        transport: Transport,
        *,
        overflow: Policy = Policy.SPLIT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.capabilities = caps
        self._url = url
        self._transport = transport
        self._overflow = overflow
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"SlackWebhookBackend(name={self.name!r}, origin={self._transport.origin!r})"

    def close(self) -> None:
        """Close the connection pool (twice is harmless)."""
        self._transport.close()

    def send(self, delivery: Delivery) -> SendResult:
        """Post `delivery` (in parts when it is longer than the limit) and classify the answer."""
        if self._transport.closed:
            raise RuntimeError(f"slack-webhook backend {self.name!r} is closed")
        unfit = check_fits(delivery, kinds_only(self.capabilities))
        if unfit is not None:
            return unfit
        if not delivery.text.strip():
            return SendResult.permanent("the text is empty: Slack posts no empty message")
        return send_parts(self.messages(delivery), lambda _i, t: self._post(t), self._sleep)

    def messages(self, delivery: Delivery) -> list[str]:
        """The texts `delivery` is posted as: one, or its parts (the first carries the mention)."""
        mention = slack_mention(delivery)
        adapt = to_mrkdwn if self.capabilities.markdown else to_slack_plain
        limit = (self.capabilities.max_length or LIMIT) - size(mention, UNIT)
        parts = [a for _, a in fit_adapted(delivery.text, limit, UNIT, self._overflow, adapt)]
        parts[0] = mention + parts[0]
        return parts

    def cost(self, delivery: Delivery) -> int:
        """How many messages `delivery` makes (one per part), for a rate limiter that counts
        messages rather than deliveries."""
        return len(self.messages(delivery))

    def _post(self, text: str) -> SendResult:
        payload: dict[str, Any] = {"text": text}
        if not self.capabilities.markdown:
            payload["mrkdwn"] = False
        answer = self._transport.post(self._url, payload)
        if isinstance(answer, SendResult):
            return answer
        return classify_slack(answer, self._transport)


def addressed(delivery: Delivery) -> bool:
    """Whether a delivery speaks to its member (not a staff task, or a post, about one)."""
    return delivery.audience == "member" and bool(delivery.member) and delivery.kind != "task"


def slack_mention(delivery: Delivery) -> str:
    """`<@U…> ` for a delivery to a member whose `slack_user_id` is known, else ``."""
    uid = delivery.attributes.get("slack_user_id")
    if addressed(delivery) and isinstance(uid, str) and _SLACK_USER.fullmatch(uid):
        return f"<@{uid}> "
    return ""


def classify_slack(answer: Answer, transport: Transport) -> SendResult:
    """Slack's answer to an incoming-webhook POST, classified (the module's table)."""
    status = answer.status
    error = " ".join(transport.text(answer).split())
    said = transport.said(error)
    wait = seconds(answer.headers.get("Retry-After"))
    if status == 200:
        return SendResult.ok("HTTP 200")
    if status == 429:
        return SendResult.retry(f"HTTP 429: rate limited by Slack{said}", wait)
    if status == 504:  # a gateway gave up waiting; Slack behind it may have posted
        return SendResult.uncertain(f"HTTP 504: the gateway timed out{said}")
    if 500 <= status < 600:
        return SendResult.retry(f"HTTP {status}{said}", wait)
    if 200 <= status < 300:
        return SendResult.uncertain(
            f"HTTP {status}: Slack answers 200 when it posts; the message may have been posted"
        )
    if 300 <= status < 400:
        return SendResult.permanent(
            f"HTTP {status}: the webhook redirects; configure the URL it redirects to"
        )
    hint = _SLACK_HINTS.get(error)
    return SendResult.permanent(f"HTTP {status}{said}" + (f" ({hint})" if hint else ""))


def create(config: BackendConfig, env: Mapping[str, str]) -> SlackWebhookBackend:
    """The `slack-webhook` entry point: the target is the webhook URL, as `${env:NAME}`."""
    name = config.name
    check_options(config, COMMON_CHAT_OPTIONS)
    if not config.target:
        raise BackendError(
            f'backend "{name}" (slack-webhook) needs the webhook URL:'
            f' url: "${{env:SLACK_WEBHOOK_URL}}" in the playbook'
        )
    url = http_url(config, resolve_secret(config.target, env, what=f'backend "{name}": url'), "url")
    target = with_origin(url, base_url(config, env))
    caps = replace(
        CAPABILITIES,
        max_length=message_limit(config, LIMIT, HARD_LIMIT),
        markdown=dialect(config, "mrkdwn"),
        rate_per_minute=rate(config, TYPE),
    )
    overflow, limits = overflow_policy(config), timeouts(config)
    parts = urlsplit(url)
    # opened last, once nothing else can fail: it holds a session and registers the secrets
    transport = Transport(
        origin_of(target),
        # the URL's last segment is the webhook's token: scrubbed even when quoted alone
        (url, target, parts.path if len(parts.path) > 1 else "", parts.path.rpartition("/")[2]),
        **limits,
    )
    return SlackWebhookBackend(name, target, caps, transport, overflow=overflow)
