"""The `slack-webhook` backend: each delivery posted to a Slack incoming webhook.

Slack answers `200 ok` when the message is posted and a status with a short error string
otherwise (docs.slack.dev/messaging/sending-messages-using-incoming-webhooks); the table of how
each answer is classified is in docs/backends/slack-discord-telegram.md. Plain text unless
`markdown: mrkdwn` (then the playbook's markdown as Slack's mrkdwn, `to_mrkdwn`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from ..ports import BackendConfig, Capabilities, Delivery, SendResult
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
from ._common import BackendError, check_options, resolve_secret
from ._http import (
    Answer,
    HttpBackend,
    Transport,
    base_url_option,
    http_url,
    origin_of,
    retry_after,
    status_failure,
    timeouts,
    with_origin,
)
from ._markup import Kind, Mark, Span, flatten, item_marker, parse, strip_markup
from ._text import Policy, Unit, size

TYPE = "slack-webhook"
LIMIT = 4_000  # characters a message should keep to; Slack truncates beyond 40,000
HARD_LIMIT = 40_000
UNIT = Unit.CHARS
DIALECT = "mrkdwn"
_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,20}")
REDIRECT = "the webhook redirects; configure the URL it redirects to"

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
    return slack_escape(strip_markup(text))


# -- the backend --------------------------------------------------------------------------------

# What `sop backends` shows; `create` adjusts it to the options (max_length, markdown, rate).
CAPABILITIES = chat_capabilities(TYPE, max_length=LIMIT, unit=UNIT, mentions=True)


class SlackWebhookBackend(HttpBackend):
    """Posts deliveries to one Slack channel through its incoming webhook."""

    type_name = TYPE

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
        super().__init__(name, url, caps, transport)
        self._overflow = overflow
        self._sleep = sleep

    def send(self, delivery: Delivery) -> SendResult:
        """Post `delivery` (in parts when it is longer than the limit) and classify the answer."""
        self._check_open()
        empty = "the text is empty: Slack posts no empty message"
        unfit = unsendable(delivery, self.capabilities, empty=empty)
        if unfit is not None:
            return unfit
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
        """How many messages `delivery` becomes (one per part): the runner takes as many rate
        tokens."""
        return len(self.messages(delivery))

    def _post(self, text: str) -> SendResult:
        payload: dict[str, Any] = {"text": text}
        if not self.capabilities.markdown:
            payload["mrkdwn"] = False
        answer = self._transport.post_json(self._url, payload)
        if isinstance(answer, SendResult):
            return answer
        return classify_slack(answer, self._transport)


def slack_mention(delivery: Delivery) -> str:
    """`<@U…> ` for a delivery to a member whose `slack_user_id` is known, else ``."""
    uid = delivery.attributes.get("slack_user_id")
    if addressed(delivery) and isinstance(uid, str) and _SLACK_USER.fullmatch(uid):
        return f"<@{uid}> "
    return ""


def classify_slack(answer: Answer, transport: Transport) -> SendResult:
    """Slack's answer to an incoming-webhook POST, classified (the module's table)."""
    status = answer.status
    error = " ".join(answer.text.split())
    said = transport.said(error)
    wait = retry_after(answer.headers)
    if status == 200:
        return SendResult.ok("HTTP 200")
    if status == 429:
        return SendResult.retry(f"HTTP 429: rate limited by Slack{said}", wait)
    if 200 <= status < 300:
        return SendResult.uncertain(
            f"HTTP {status}: Slack answers 200 when it posts; the message may have been posted"
        )
    result = status_failure(status, said, wait, redirect=REDIRECT)
    hint = _SLACK_HINTS.get(error) if 400 <= status < 500 else None
    return replace(result, detail=f"{result.detail} ({hint})") if hint else result


def create(config: BackendConfig, env: Mapping[str, str]) -> SlackWebhookBackend:
    """The `slack-webhook` entry point: the target is the webhook URL, as `${env:NAME}`."""
    name = config.name
    check_options(config, CHAT_OPTIONS)
    if not config.target:
        raise BackendError(
            f'backend "{name}" (slack-webhook) needs the webhook URL:'
            f' url: "${{env:SLACK_WEBHOOK_URL}}" in the playbook'
        )
    url = http_url(name, "url", resolve_secret(config.target, env, what=f'backend "{name}": url'))
    target = with_origin(url, base_url_option(config, env))
    caps = configured(CAPABILITIES, config, native=DIALECT, ceiling=HARD_LIMIT)
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
