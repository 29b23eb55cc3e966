"""The `telegram-bot` backend: each delivery sent by a bot with `sendMessage`.

`POST {base_url}/bot<token>/sendMessage` (core.telegram.org/bots/api#sendmessage), plain text
unless `markdown: markdownv2` (then `parse_mode: MarkdownV2`, `to_markdown_v2`). A group post
goes to the option `chat_id`; a delivery to one member goes to their private chat, the
`telegram_chat_id` their events recorded (a bot can write to a person only once they have
started it). Text is at most 4,096 UTF-16 code units, split beyond. The token is in the URL, so
nothing this module says quotes the URL. When a group has become a supergroup, Telegram answers
with its new id: the message is sent there once, in the same send, and the detail says which id
to put in the playbook. The table of answers is in docs/backends/slack-discord-telegram.md.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from ...core.textsafe import terminal
from ..ports import BackendConfig, Capabilities, Delivery, SendResult, SendStatus
from ._chat import (
    CHAT_OPTIONS,
    addressed,
    chat_capabilities,
    configured,
    fit_adapted,
    overflow_policy,
    send_parts,
    unsendable,
)
from ._common import (
    BackendError,
    check_options,
    option_str,
    refuse_target,
    resolve_secret,
)
from ._http import (
    Answer,
    HttpBackend,
    Transport,
    base_url_option,
    origin_of,
    retry_after,
    seconds,
    status_failure,
    timeouts,
)
from ._markup import Block, Kind, Mark, Span, item_marker, parse, strip_markup
from ._text import Policy, Unit, truncate

TYPE = "telegram-bot"
DEFAULT_BASE = "https://api.telegram.org"
LIMIT = 4_096  # "1-4096 characters after entities parsing", counted in UTF-16 code units
UNIT = Unit.UTF16
DIALECT = "markdownv2"
_TOKEN = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{20,100}")
_CHAT = re.compile(r"-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31}")
_PARSE_ERROR = "can't parse entities"
REDIRECT = "base_url redirects; use the final URL"

log = logging.getLogger(__name__)


# -- MarkdownV2 (core.telegram.org/bots/api#markdownv2-style) -----------------------------------

_RESERVED = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")
_IN_CODE = re.compile(r"([`\\])")
_IN_URL = re.compile(r"([)\\])")


def tg_escape(text: str) -> str:
    """Text outside entities: every reserved character (and the backslash) escaped."""
    return _RESERVED.sub(r"\\\1", text)


def _spans(spans: Iterable[Span], active: frozenset[Mark] = frozenset()) -> str:
    out: list[str] = []
    for s in spans:
        if s.mark is Mark.TEXT:
            piece = tg_escape(s.text)
        elif s.mark is Mark.CODE:
            piece = "`" + _IN_CODE.sub(r"\\\1", s.text) + "`"
        elif s.mark is Mark.LINK:
            url = _IN_URL.sub(r"\\\1", s.text)
            piece = f"[{_spans(s.inner, active | {Mark.LINK})}]({url})"
        else:
            inner = _spans(s.inner, active | {s.mark})
            sign = _SIGNS[s.mark]
            piece = inner if s.mark in active else f"{sign}{inner}{sign}"
        if out and out[-1].endswith("_") and piece.startswith("_"):
            # `__` would read as underline: the Bot API's own advice is a \r between, which
            # Telegram ignores
            out.append("\r")
        out.append(piece)
    return "".join(out)


_SIGNS = {Mark.BOLD: "*", Mark.ITALIC: "_", Mark.STRIKE: "~"}


def _line(b: Block) -> str:
    if b.kind is Kind.FENCE:
        info = b.info if re.fullmatch(r"[A-Za-z0-9_]{1,32}", b.info) else ""
        return f"```{info}\n" + _IN_CODE.sub(r"\\\1", b.code) + "\n```"
    if b.kind is Kind.HEADING:
        return f"*{_spans(b.spans, frozenset({Mark.BOLD}))}*" if b.spans else ""
    if b.kind is Kind.QUOTE:
        return ">" + _spans(b.spans)
    if b.kind is Kind.ITEM:
        return tg_escape(item_marker(b, "•")) + _spans(b.spans)
    return _spans(b.spans)


def to_markdown_v2(text: str) -> str:
    """The playbook's markdown as Telegram's MarkdownV2: `**b**` → `*b*`, `*i*` → `_i_`,
    `~~s~~` → `~s~`, a heading as a bold line, `> q` as a block quote, a bullet as `•`; the
    reserved characters escaped outside entities, `` ` `` and `\\` inside code, `)` and `\\`
    inside a link's URL."""
    return "\n".join(_line(b) for b in parse(text))


# -- the backend --------------------------------------------------------------------------------

# What `sop backends` shows; `create` adjusts it to the options (max_length, markdown, rate).
CAPABILITIES = chat_capabilities(TYPE, max_length=LIMIT, unit=UNIT, mentions=False)


class TelegramBotBackend(HttpBackend):
    """Sends deliveries through one bot: to a group, or to members in their private chats."""

    type_name = TYPE

    def __init__(
        self,
        name: str,
        endpoint: str,
        caps: Capabilities,
        transport: Transport,
        *,
        chat_id: str | None = None,
        overflow: Policy = Policy.SPLIT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(name, endpoint, caps, transport)  # the endpoint holds the token
        self.chat_id = chat_id
        # chats that became supergroups during this run: old id -> new id. Later sends go
        # straight to the new id, and say so, until the playbook is updated.
        self.migrated: dict[str, str] = {}
        self._overflow = overflow
        self._sleep = sleep

    def _shown(self) -> dict[str, object]:
        return {"chat_id": self.chat_id}

    def send(self, delivery: Delivery) -> SendResult:
        """Send `delivery` to its chat (in parts beyond 4,096 UTF-16 code units)."""
        self._check_open()
        empty = "the text is empty: Telegram sends no empty message"
        unfit = unsendable(delivery, self.capabilities, empty=empty)
        if unfit is not None:
            return unfit
        chat = self._chat(delivery)
        if isinstance(chat, SendResult):
            return chat
        markdown = bool(self.capabilities.markdown)
        parts = self.messages(delivery)
        exchange = _Exchange(self, chat, markdown, self.capabilities.max_length or LIMIT)
        result = send_parts(
            [a for _, a in parts], lambda i, text: exchange.part(text, parts[i - 1][0]), self._sleep
        )
        notes = "; ".join(exchange.notes)
        return replace(result, detail=f"{result.detail} ({notes})") if notes else result

    def messages(self, delivery: Delivery) -> list[tuple[str, str]]:
        """The parts of `delivery`'s text: (the source part, the part as sent)."""
        adapt = to_markdown_v2 if self.capabilities.markdown else strip_markup
        limit = self.capabilities.max_length or LIMIT
        return fit_adapted(delivery.text, limit, UNIT, self._overflow, adapt)

    def cost(self, delivery: Delivery) -> int:
        """How many messages `delivery` becomes (one per part): the runner takes as many rate
        tokens."""
        return len(self.messages(delivery))

    def _chat(self, delivery: Delivery) -> str | SendResult:
        """The chat a delivery goes to: the member's private chat, or the group."""
        if addressed(delivery):
            value = delivery.attributes.get("telegram_chat_id")
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not _CHAT.fullmatch(value.strip()):
                why = "has none" if value is None else "has one that is not a chat id"
                return SendResult.permanent(
                    f"a message to member {terminal(delivery.member or '')} needs their"
                    f" telegram_chat_id attribute (from their events); the member {why}"
                )
            return value.strip()
        if self.chat_id is None:
            return SendResult.permanent(
                f"a {delivery.audience!r} delivery needs the group's chat_id: add"
                ' options: {chat_id: "-100…"} to the backend'
            )
        return self.chat_id

    def post(self, chat: str, text: str, markdown: bool) -> Answer | SendResult:
        """One sendMessage call."""
        payload: dict[str, Any] = {"chat_id": int(chat) if chat.lstrip("-").isdigit() else chat}
        payload["text"] = text
        if markdown:
            payload["parse_mode"] = "MarkdownV2"
        return self._transport.post_json(self._url, payload)

    def said(self, text: object) -> str:
        return self._transport.said(text)


class _Exchange:
    """One delivery's sendMessage calls: the chat (which may move), and what to tell the
    operator about it."""

    def __init__(self, backend: TelegramBotBackend, chat: str, markdown: bool, limit: int):
        self.backend = backend
        self.chat = backend.migrated.get(chat, chat)
        self.markdown = markdown
        self.limit = limit
        self.notes: list[str] = []
        if self.chat != chat:
            self.notes.append(_moved(chat, self.chat))
        self._hopped = False

    def part(self, text: str, source: str) -> SendResult:
        answer = self.backend.post(self.chat, text, self.markdown)
        if isinstance(answer, SendResult):
            return answer
        result, new_chat = classify_telegram(answer, self.backend)
        if new_chat is not None and not self._hopped:
            # the group is a supergroup now: send there, once, and say where
            self._hopped = True
            old, self.chat = self.chat, new_chat
            self.backend.migrated[old] = new_chat
            for stale, target in self.backend.migrated.items():  # an earlier hop to `old`
                if target == old:
                    self.backend.migrated[stale] = new_chat
            self.notes.append(_moved(old, new_chat))
            log.warning(
                "telegram-bot backend %r: chat %s became supergroup %s; set chat_id to %s",
                self.backend.name, old, new_chat, new_chat,
            )  # fmt: skip
            return self.part(text, source)
        if (
            self.markdown
            and result.status is SendStatus.PERMANENT
            and answer.status == 400
            and _PARSE_ERROR in result.detail
        ):
            # nothing was sent: the same words without formatting rather than nothing
            again = self.backend.post(
                self.chat, truncate(strip_markup(source), self.limit, UNIT), False
            )
            if isinstance(again, SendResult):
                return again
            retried, _ = classify_telegram(again, self.backend)
            if retried.status is SendStatus.OK:
                self.notes.append("sent without formatting: Telegram could not parse it")
            return retried
        return result


def _moved(old: str, new: str) -> str:
    return f'chat {old} is now supergroup {new}: set chat_id: "{new}" in the playbook'


def classify_telegram(answer: Answer, backend: TelegramBotBackend) -> tuple[SendResult, str | None]:
    """The Bot API's answer, classified, and the chat's new id when it migrated."""
    status = answer.status
    body: dict[str, Any] = answer.body if isinstance(answer.body, dict) else {}
    found = body.get("parameters")
    params: dict[str, Any] = found if isinstance(found, dict) else {}
    description = body.get("description")
    if not isinstance(description, str):  # not the Bot API answering (a proxy, a gateway)
        description = "" if answer.body is not None else answer.raw.decode("utf-8", "replace")
    said = backend.said(description)
    code = body.get("error_code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else status
    if 200 <= status < 300 and body.get("ok") is not False:
        sent = body.get("result")
        mid = sent.get("message_id") if isinstance(sent, dict) else None
        remote = str(mid) if isinstance(mid, int) and not isinstance(mid, bool) else None
        return SendResult.ok(f"HTTP {status}", remote), None
    what = f"HTTP {status}" if code == status else f"HTTP {status}, error_code {code}"
    new_chat = params.get("migrate_to_chat_id")
    if isinstance(new_chat, int) and not isinstance(new_chat, bool):
        return SendResult.permanent(f"{what}{said}: the group became a supergroup"), str(new_chat)
    wait = seconds(params.get("retry_after"))
    if wait is None:
        wait = retry_after(answer.headers)
    if code == 429 or status == 429:
        return SendResult.retry(f"{what}{said}", wait), None
    if 200 <= status < 300:  # "ok": false in a 2xx: an error all the same
        return SendResult.permanent(f"{what}{said}"), None
    result = status_failure(status, said, wait, redirect=REDIRECT, head=what)
    hint = _HINTS.get(status, "") if 400 <= status < 500 else ""
    return (replace(result, detail=f"{result.detail} ({hint})") if hint else result), None


_HINTS = {
    401: "the bot token was refused: check the variable that holds it",
    404: "no such bot: the token is malformed or base_url is wrong",
}


def create(config: BackendConfig, env: Mapping[str, str]) -> TelegramBotBackend:
    """The `telegram-bot` entry point: `token: "${env:NAME}"` and, for group posts, the option
    `chat_id`."""
    name = config.name
    check_options(config, (*CHAT_OPTIONS, "chat_id"))
    refuse_target(config)
    reference = config.options.get("token")
    if not isinstance(reference, str) or not reference:
        raise BackendError(
            f'backend "{name}" (telegram-bot) needs the bot token:'
            f' token: "${{env:TELEGRAM_BOT_TOKEN}}" in the playbook'
        )
    token = resolve_secret(reference, env, what=f'backend "{name}": token')
    if not _TOKEN.fullmatch(token):  # not quoted: it is the secret
        raise BackendError(
            f'backend "{name}": the token does not look like a bot token (digits:letters, as'
            " @BotFather gives it)"
        )
    chat = option_str(config, "chat_id")
    if chat is not None and not _CHAT.fullmatch(chat.strip()):
        raise BackendError(
            f'backend "{name}": chat_id must be a chat id (-100…) or a @channelusername'
        )
    base = base_url_option(config, env) or DEFAULT_BASE
    endpoint = f"{base}/bot{token}/sendMessage"
    caps = configured(CAPABILITIES, config, native=DIALECT, ceiling=LIMIT)
    overflow, limits = overflow_policy(config), timeouts(config)
    # the part after the colon is the secret proper; scrubbed alone too, in case an answer
    # quotes the token percent-encoded. Opened last, once nothing else can fail.
    secrets = (endpoint, token, token.partition(":")[2])
    transport = Transport(origin_of(base), secrets, **limits)
    return TelegramBotBackend(
        name,
        endpoint,
        caps,
        transport,
        chat_id=chat.strip() if chat else None,
        overflow=overflow,
    )
