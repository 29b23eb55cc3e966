"""The `discord-webhook` backend: each delivery executed on a Discord webhook, mentions held back.

`POST /api/webhooks/{id}/{token}?wait=true` with `content` (at most 2,000 characters, split
beyond) and `allowed_mentions` that ping nobody unless told (the member a delivery addresses,
`@everyone` only with `mention_everyone=true`). `wait=true` makes Discord answer with the
message, whose id becomes `remote_id`. Rate limits are honoured both ways: a 429's
`retry_after`, and an exhausted bucket (`X-RateLimit-Remaining: 0`) waited out before the next
request is made, since Discord counts 429s against an IP address
(discord.com/developers/docs/topics/rate-limits). The table of answers is in
docs/backends/slack-discord-telegram.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._chat import (
    CHAT_OPTIONS,
    PART_WAIT,
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
    option_bool,
    option_str,
    resolve_secret,
)
from ._http import (
    Answer,
    HttpBackend,
    Transport,
    base_url_option,
    http_url,
    origin_of,
    retry_after,
    seconds,
    status_failure,
    timeouts,
    with_origin,
)
from ._markup import Block, Kind, Mark, Span, flatten, parse, strip_markup
from ._text import Policy, Unit, size

TYPE = "discord-webhook"
LIMIT = 2_000
# Discord's docs say characters; counting UTF-16 code units is the stricter reading (an emoji
# outside the BMP counts two), so a part never fails for one emoji too many.
UNIT = Unit.UTF16
_PATH = re.compile(r"/api(?:/v[0-9]{1,2})?/webhooks/([0-9]{1,20})/([A-Za-z0-9_.-]{1,200})/?")
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")
# Answers after which the webhook is not tried again: Discord restricts an IP that keeps using
# a webhook that answered 404 (the same docs), and a refused token does not heal by itself.
_GONE = frozenset({401, 404})
REDIRECT = "the webhook redirects; configure the URL it redirects to"


# -- Discord's markdown -------------------------------------------------------------------------
#
# Discord's markdown is close to CommonMark: the differences are `__x__` (underline, where the
# playbook means bold), `||x||` (a spoiler), `-# ` at a line's start (small text) and headings
# deeper than ###, which Discord shows as typed. Text is escaped with backslashes where Discord
# would read markup the playbook did not mean.

_TEXT_SPECIAL = re.compile(r"[\\*~`]|\|\||(?<!\w)_|_(?!\w)")


def discord_escape(text: str) -> str:
    """`text` shown as typed by Discord (its own markup characters escaped)."""
    return _TEXT_SPECIAL.sub(lambda m: "".join("\\" + c for c in m.group(0)), text)


def _spans(spans: Iterable[Span], active: frozenset[Mark] = frozenset()) -> str:
    out: list[str] = []
    for s in spans:
        if s.mark is Mark.TEXT:
            out.append(discord_escape(s.text))
        elif s.mark is Mark.CODE:
            fence = "``" if "`" in s.text else "`"
            pad = " " if fence == "``" else ""
            out.append(f"{fence}{pad}{s.text}{pad}{fence}")
        elif s.mark is Mark.LINK:
            label = flatten(s.inner)
            out.append(s.text if label == s.text else f"[{discord_escape(label)}]({s.text})")
        else:
            inner = _spans(s.inner, active | {s.mark})
            sign = _SIGNS[s.mark]
            out.append(inner if s.mark in active else f"{sign}{inner}{sign}")
    return "".join(out)


_SIGNS = {Mark.BOLD: "**", Mark.ITALIC: "*", Mark.STRIKE: "~~"}


def _line(b: Block) -> str:
    if b.kind is Kind.FENCE:  # a fence inside the code would end it: a zero-width space breaks it
        code = b.code.replace("```", "`\u200b``")
        return f"```{b.info}\n{code}\n```"
    if b.kind is Kind.HEADING:
        if b.level <= 3:
            return "#" * b.level + " " + _spans(b.spans)
        return f"**{_spans(b.spans, frozenset({Mark.BOLD}))}**"
    if b.kind is Kind.QUOTE:
        return "> " + _spans(b.spans)
    if b.kind is Kind.ITEM:
        return " " * b.level + ("-" if b.bullet else b.info) + " " + _spans(b.spans)
    text = _spans(b.spans)
    return "\\" + text if text.startswith("-# ") else text


def to_discord(text: str) -> str:
    """The playbook's markdown as Discord's: `__b__` → `**b**`, `#### h` → `**h**`, `||` and a
    leading `-# ` escaped, everything else as CommonMark writes it."""
    return "\n".join(_line(b) for b in parse(text))


_LINE_START = re.compile(r"^([ \t]*)(?:([>#+-])|([0-9]{1,9})([.)]))", re.MULTILINE)


def _unmark(m: re.Match[str]) -> str:
    if m.group(2) is not None:
        return f"{m.group(1)}\\{m.group(2)}"
    return f"{m.group(1)}{m.group(3)}\\{m.group(4)}"  # `1\.`: the number is not a list


def to_discord_plain(text: str) -> str:
    """Plain text for Discord (`markdown: none`): markup removed, and what Discord would still
    read as markup escaped."""
    return _LINE_START.sub(_unmark, discord_escape(strip_markup(text)))


# -- the backend --------------------------------------------------------------------------------

# What `sop backends` shows; `create` adjusts it to the options (max_length, markdown, rate).
CAPABILITIES = chat_capabilities(TYPE, max_length=LIMIT, unit=UNIT, mentions=True)


class DiscordWebhookBackend(HttpBackend):
    """Executes deliveries on one Discord webhook."""

    type_name = TYPE

    def __init__(
        self,
        name: str,
        url: str,
        caps: Capabilities,
        transport: Transport,
        *,
        overflow: Policy = Policy.SPLIT,
        username: str | None = None,
        mention_everyone: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, url, caps, transport)
        self._overflow = overflow
        self._username = username
        self._everyone = mention_everyone
        self._sleep = sleep
        self._monotonic = monotonic
        self._ready_at = 0.0  # monotonic time the webhook's bucket refills
        self._gone: str | None = None  # why the webhook is not tried again

    def send(self, delivery: Delivery) -> SendResult:
        """Execute the webhook with `delivery` (in parts beyond 2,000 characters)."""
        self._check_open()
        empty = "the text is empty: Discord posts no empty message"
        unfit = unsendable(delivery, self.capabilities, empty=empty)
        if unfit is not None:
            return unfit
        if self._gone is not None:
            return SendResult.permanent(
                f"not sent: the webhook answered {self._gone} earlier in this run; fix the URL"
                " and start again"
            )
        return send_parts(self.messages(delivery), lambda _i, m: self._execute(m), self._sleep)

    def messages(self, delivery: Delivery) -> list[dict[str, Any]]:
        """The request bodies for `delivery`: one, or one per part (the first mentions the
        member); only the member it addresses, and `@everyone` when allowed, can be pinged."""
        user = discord_user(delivery)
        mention = f"<@{user}> " if user else ""
        adapt = to_discord if self.capabilities.markdown else to_discord_plain
        limit = (self.capabilities.max_length or LIMIT) - size(mention, UNIT)
        parts = [a for _, a in fit_adapted(delivery.text, limit, UNIT, self._overflow, adapt)]
        parts[0] = mention + parts[0]
        allowed: dict[str, Any] = {"parse": ["everyone"] if self._everyone else []}
        if user:
            allowed["users"] = [user]
        bodies: list[dict[str, Any]] = []
        for content in parts:
            body: dict[str, Any] = {"content": content, "allowed_mentions": allowed}
            if self._username:
                body["username"] = self._username
            bodies.append(body)
        return bodies

    def cost(self, delivery: Delivery) -> int:
        """How many messages `delivery` becomes (one per part): the runner takes as many rate
        tokens."""
        return len(self.messages(delivery))

    def _execute(self, payload: Mapping[str, Any]) -> SendResult:
        wait = self._ready_at - self._monotonic()
        if 0 < wait <= PART_WAIT:  # the bucket refills soon: wait rather than spend an attempt
            self._sleep(wait)
        elif wait > 0:  # asking now would only earn a 429
            return SendResult.retry(
                f"not sent: the webhook's rate limit resets in {wait:.2f} s", round(wait, 3)
            )
        answer = self._transport.post_json(self._url, payload)
        if isinstance(answer, SendResult):
            return answer
        result, ready_in = classify_discord(answer, self._transport)
        if ready_in is not None:
            self._ready_at = self._monotonic() + ready_in
        if answer.status in _GONE:
            self._gone = f"HTTP {answer.status}"
        return result


def discord_user(delivery: Delivery) -> str | None:
    """The Discord user id of the member a delivery addresses, when their events gave one."""
    uid = delivery.attributes.get("discord_user_id")
    if isinstance(uid, int) and not isinstance(uid, bool):
        uid = str(uid)
    if addressed(delivery) and isinstance(uid, str) and _SNOWFLAKE.fullmatch(uid):
        return uid
    return None


def _first_error(errors: object, path: str = "") -> str | None:
    """The first `path: message` of a 400's nested `errors` object."""
    if isinstance(errors, dict):
        found = errors.get("_errors")
        if isinstance(found, list) and found and isinstance(found[0], dict):
            message = found[0].get("message")
            if isinstance(message, str):
                return f"{path or 'body'}: {message}"
        for key, value in errors.items():
            if key != "_errors":
                hit = _first_error(value, f"{path}.{key}" if path else str(key))
                if hit:
                    return hit
    return None


def classify_discord(answer: Answer, transport: Transport) -> tuple[SendResult, float | None]:
    """Discord's answer to an execute-webhook POST, classified, and when its bucket refills
    (seconds from now) if the answer says it is empty."""
    status, headers = answer.status, answer.headers
    body: dict[str, Any] = answer.body if isinstance(answer.body, dict) else {}
    ready_in: float | None = None
    if headers.get("X-RateLimit-Remaining", "").strip() == "0":
        ready_in = seconds(headers.get("X-RateLimit-Reset-After"))
    if 200 <= status < 300:
        mid = body.get("id")
        remote = str(mid) if isinstance(mid, str | int) and _SNOWFLAKE.fullmatch(str(mid)) else None
        return SendResult.ok(f"HTTP {status}", remote), ready_in
    code = body.get("code")
    message = body.get("message") if isinstance(body.get("message"), str) else None
    said = transport.said(message if message is not None else answer.text)
    what = f"HTTP {status}" + (f", code {code}" if isinstance(code, int) and code else "")
    if status == 429:
        wait = seconds(body.get("retry_after"))  # seconds, with the most precision
        header = retry_after(headers)
        if wait is None or (header is not None and wait > header + 1):
            # older API versions gave milliseconds here (discord-api-docs#4722); the header,
            # whole seconds, is the bound
            wait = header
        if wait is None:
            wait = seconds(headers.get("X-RateLimit-Reset-After"))
        scope = headers.get("X-RateLimit-Scope", "").strip()
        if body.get("global") is True or headers.get("X-RateLimit-Global", "") == "true":
            scope = "global"
        limited = f"rate limited ({scope})" if scope in ("user", "global", "shared") else ""
        return SendResult.retry(f"{what}{said}" + (f" [{limited}]" if limited else ""), wait), wait
    result = status_failure(status, said, retry_after(headers), redirect=REDIRECT, head=what)
    detail = _first_error(body.get("errors")) if 400 <= status < 500 else None
    return (replace(result, detail=f"{result.detail} ({detail})") if detail else result), ready_in


def create(config: BackendConfig, env: Mapping[str, str]) -> DiscordWebhookBackend:
    """The `discord-webhook` entry point: the target is the webhook URL, as `${env:NAME}`."""
    name = config.name
    check_options(config, (*CHAT_OPTIONS, "thread_id", "username", "mention_everyone"))
    if not config.target:
        raise BackendError(
            f'backend "{name}" (discord-webhook) needs the webhook URL:'
            f' url: "${{env:DISCORD_WEBHOOK_URL}}" in the playbook'
        )
    url = http_url(name, "url", resolve_secret(config.target, env, what=f'backend "{name}": url'))
    parts = urlsplit(url)
    match = _PATH.fullmatch(parts.path)
    if match is None:  # not quoted: it holds the token
        raise BackendError(
            f'backend "{name}": url must be a Discord webhook URL'
            " (https://discord.com/api/webhooks/ID/TOKEN)"
        )
    token = match.group(2)
    query = dict(parse_qsl(parts.query))
    query["wait"] = "true"  # so the answer carries the message, and a failure is reported
    thread = option_str(config, "thread_id")
    if thread is not None:
        if not _SNOWFLAKE.fullmatch(thread):
            raise BackendError(f'backend "{name}": thread_id must be a Discord id (digits)')
        query["thread_id"] = thread
    target = with_origin(
        urlunsplit(parts._replace(query=urlencode(query))), base_url_option(config, env)
    )
    username = option_str(config, "username")
    if username is not None and not 1 <= len(username) <= 80:
        raise BackendError(f'backend "{name}": username must be 1 to 80 characters')
    caps = configured(CAPABILITIES, config, native="discord", ceiling=LIMIT)
    overflow, limits = overflow_policy(config), timeouts(config)
    everyone = option_bool(config, "mention_everyone", False)
    # opened last, once nothing else can fail: it holds a session and registers the secrets
    transport = Transport(origin_of(target), (url, target, parts.path, token), **limits)
    return DiscordWebhookBackend(
        name,
        target,
        caps,
        transport,
        overflow=overflow,
        username=username,
        mention_everyone=everyone,
    )
