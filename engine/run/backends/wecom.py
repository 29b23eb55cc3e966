"""WeCom (企业微信) backends: the group robot (`wecom-robot`) and a self-built app (`wecom-app`).

`wecom-robot` posts to one group through its webhook key (text with @-mentions, or WeCom's
markdown subset). `wecom-app` reaches staff with application messages and customer groups with
mass sends, which WeCom delivers only after the owner confirms them in their client (the runner
polls `confirmation`). Both classify WeCom's `errcode` through one table (`ERROR_CODES`), fit the
text with the one length policy (`_text.fit`, UTF-8 bytes) and keep the key, the corp secret and
every access token out of details, errors, reprs and log records. docs/backends/wecom.md has the
setup, the options and the table with its sources.
"""

from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from ...core.textsafe import terminal
from ..ports import BackendConfig, Capabilities, Delivery, Quota, SendResult, SendStatus
from ._chat import chat_capabilities, configured, dialect, send_parts, unsendable
from ._common import (
    DETAIL_LIMIT,
    BackendError,
    Clock,
    check_options,
    option_bool,
    option_str,
    resolve_secret,
    wall_clock,
)
from ._http import (
    TIMEOUT_OPTIONS,
    Answer,
    HttpBackend,
    Transport,
    base_url_option,
    code,
    http_url,
    message_of,
    origin_of,
    retry_after,
    status_failure,
    timeouts,
)
from ._text import Policy, Unit, fit, size

ROBOT = "wecom-robot"
APP = "wecom-app"
DIALECT = "wecom"
DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com"
# Limits in UTF-8 bytes, from the API pages cited in docs/backends/wecom.md.
ROBOT_TEXT_BYTES = 2048
ROBOT_MARKDOWN_BYTES = 4096
APP_TEXT_BYTES = 2048  # WeCom truncates a longer text silently: we split before it can
APP_MARKDOWN_BYTES = 2048
MASS_SEND_BYTES = 4000  # externalcontact/add_msg_template `text.content`
RATE_LIMIT_WAIT = 60.0  # 45009: "the block lasts as long as the limit's window", a minute at least
TOKEN_MARGIN = 300.0  # an access token is renewed this long before WeCom's `expires_in`
CONFIRMATION_PAGES = 10  # get_groupmsg_task pages read at most (1,000 rows each)
BEIJING = ZoneInfo("Asia/Shanghai")  # WeCom's calendar (mass-send quotas count natural months)
MENTION_ALL = "@all"
EMPTY = "the text is empty; WeCom refuses it (errcode 44004)"
# WeCom's userid: 1-64 letters, digits, '-', '_' and '.' (global error 40003); a phone: digits,
# '+' and '-', at most 32 (error 60103). Anything else from an event is not put in a request.
_USERID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PHONE = re.compile(r"\+?[0-9][0-9-]{2,31}")
_CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


# -- errcode: one table for both backends ------------------------------------------------------


class Verdict(enum.StrEnum):
    """What an `errcode` means for the send that got it."""

    RETRY = "retry"  # WeCom did nothing and asks (or allows) to try again
    PERMANENT = "permanent"  # will fail the same way until an operator changes something
    TOKEN = "token"  # the access token is bad: fetch a new one and repeat the call once


class ErrorCode(NamedTuple):
    verdict: Verdict
    meaning: str
    wait: float | None = None  # seconds before a retry, when known


# WeCom answers HTTP 200 with an `errcode`; these are the codes a send can meet, from the global
# error code page (https://developer.work.weixin.qq.com/document/path/90313) and the robot page.
# A code not listed is permanent: WeCom's page says only system failures deserve a retry.
ERROR_CODES: Mapping[int, ErrorCode] = {
    -1: ErrorCode(Verdict.RETRY, "system busy"),
    6000: ErrorCode(Verdict.RETRY, "data version conflict"),
    45009: ErrorCode(Verdict.RETRY, "API call frequency out of limit", RATE_LIMIT_WAIT),
    45033: ErrorCode(Verdict.RETRY, "too many concurrent calls"),
    40014: ErrorCode(Verdict.TOKEN, "invalid access_token"),
    41001: ErrorCode(Verdict.TOKEN, "access_token missing"),
    42001: ErrorCode(Verdict.TOKEN, "access_token expired"),
    93000: ErrorCode(Verdict.PERMANENT, "invalid webhook URL, or the robot left the group"),
    93004: ErrorCode(Verdict.PERMANENT, "the robot is disabled"),
    93008: ErrorCode(Verdict.PERMANENT, "the robot is not in the group"),
    40001: ErrorCode(Verdict.PERMANENT, "invalid corp_secret"),
    40013: ErrorCode(Verdict.PERMANENT, "invalid corp_id"),
    40091: ErrorCode(Verdict.PERMANENT, "invalid corp_secret"),
    40003: ErrorCode(Verdict.PERMANENT, "invalid userid"),
    40056: ErrorCode(Verdict.PERMANENT, "invalid agent_id"),
    40058: ErrorCode(Verdict.PERMANENT, "invalid parameter"),
    44004: ErrorCode(Verdict.PERMANENT, "the text is empty"),
    45002: ErrorCode(Verdict.PERMANENT, "the text is too long"),
    48002: ErrorCode(Verdict.PERMANENT, "this app may not call this API"),
    50002: ErrorCode(Verdict.PERMANENT, "the member is outside the app's permission scope"),
    60011: ErrorCode(Verdict.PERMANENT, "no permission for that member, department or tag"),
    60020: ErrorCode(Verdict.PERMANENT, "this server's IP is not among the app's trusted IPs"),
    81013: ErrorCode(Verdict.PERMANENT, "every recipient is invalid or outside the app's scope"),
    82001: ErrorCode(Verdict.PERMANENT, "no recipient given"),
    41048: ErrorCode(Verdict.PERMANENT, "no customer group to send to"),
}
TOKEN_CODES = frozenset(c for c, e in ERROR_CODES.items() if e.verdict is Verdict.TOKEN)
PENDING_DISPATCH = 41063  # "the mass send is being dispatched, try later" (not yet confirmable)


def error_code(code: int) -> ErrorCode:
    """How a WeCom `errcode` classifies (an unknown code is permanent)."""
    return ERROR_CODES.get(code, ErrorCode(Verdict.PERMANENT, ""))


# -- the markdown dialect ----------------------------------------------------------------------

# Placeholders for text the inline rules must not touch: private-use characters.
_SLOT = "\ue000{}\ue001"
_SLOT_RE = re.compile("\ue000([0-9]+)\ue001")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_RULE = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*")
_BULLET = re.compile(r"([ \t]*)[*+]([ \t]+)")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_CODE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^<>\s]+)>")
_MENTION = re.compile(r"<@[A-Za-z0-9_.-]{1,64}>")
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(([^()\s]+)(?:\s+\"[^\"\n]*\")?\)")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^()\s]+)(?:\s+\"[^\"\n]*\")?\)")
_BR = re.compile(r"<br\s*/?>", re.I)
_FONT = re.compile(r"<font(\s[^<>]*)?>|</font\s*>", re.I)
_FONT_OK = re.compile(r"\s+color\s*=\s*([\"']?)(info|comment|warning)\1\s*", re.I)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_EMPHASIS = (
    (re.compile(r"\*\*\*(?!\s)(.+?)(?<!\s)\*\*\*"), r"**\1**"),
    (re.compile(r"(?<![\w_])___(?!\s)(.+?)(?<!\s)___(?![\w_])"), r"**\1**"),
    (re.compile(r"(?<![\w_])__(?!\s)(.+?)(?<!\s)__(?![\w_])"), r"**\1**"),
    (re.compile(r"~~(?!\s)(.+?)(?<!\s)~~"), r"\1"),
    (re.compile(r"(?<!\*)\*(?![\s*])([^*]*?[^\s*])\*(?!\*)"), r"\1"),
    (re.compile(r"(?<![\w_])_(?![\s_])([^_]*?[^\s_])_(?![\w_])"), r"\1"),
)


def wecom_markdown(text: str) -> str:
    """CommonMark-style `text` in WeCom's markdown subset, whose syntax is the supported part.

    WeCom renders headings (`# ` to `###### `), `**bold**`, `[links](url)`, one-line `` `code` ``,
    `> quotes`, `<font color="info|comment|warning">` and `<@userid>` mentions, and shows the
    rest as typed. Kept: those. Converted: `__bold__`, `***x***` and setext headings to their
    WeCom form, images to links, `* item` to `- item`, `<br>` to a line break, each line of a code
    block to inline code. Stripped, keeping their text: italics, strikethrough, other HTML tags
    and font colours, backslash escapes. Pure: the same text in, the same text out.
    """
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is not None:
            closing = m is not None and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence)
            if closing and not line.strip().strip(fence[0]):
                fence = None
                continue
            out.append(f"`{line}`" if line.strip() and "`" not in line else line)
            continue
        if m:
            fence = m.group(1)
            continue
        setext = _SETEXT.fullmatch(line)
        if setext and out and out[-1].strip() and not _is_block(out[-1]):
            level = "#" if setext.group(1)[0] == "=" else "##"
            out[-1] = f"{level} {out[-1].strip()}"
            continue
        if _RULE.fullmatch(line):
            out.append("---")
            continue
        heading = _ATX.fullmatch(line)
        if heading:
            line = f"{heading.group(1)} {heading.group(2) or ''}".rstrip()
        else:
            line = _BULLET.sub(r"\1-\2", line, count=1) if _BULLET.match(line) else line
        out.append(_inline(line))
    return "\n".join(out)


def _is_block(line: str) -> bool:
    """A line a setext underline cannot turn into a heading (a heading, quote, list, rule)."""
    return bool(re.match(r" {0,3}(#|>|[-*+] |[0-9]+[.)] |---)", line))


def _inline(line: str) -> str:
    slots: list[str] = []

    def keep(text: str) -> str:
        slots.append(text)
        return _SLOT.format(len(slots) - 1)

    line = _ESCAPE.sub(lambda m: keep(m.group(1)), line)
    line = _CODE.sub(
        lambda m: keep(f"`{m.group(2).strip()}`" if "`" not in m.group(2) else m.group(2)), line
    )
    line = _AUTOLINK.sub(lambda m: keep(m.group(1)), line)
    line = _MENTION.sub(lambda m: keep(m.group(0)), line)
    line = _IMAGE.sub(lambda m: keep(f"[{m.group(1) or m.group(2)}]({m.group(2)})"), line)
    line = _LINK.sub(lambda m: keep(f"[{_emphasis(m.group(1))}]({m.group(2)})"), line)
    line = _BR.sub("\n", line)
    line = _fonts(line, keep)
    line = _TAG.sub("", line)
    line = _emphasis(line)
    while _SLOT_RE.search(line):  # a kept link may hold a kept escape
        line = _SLOT_RE.sub(lambda m: slots[int(m.group(1))], line)
    return line


def _emphasis(text: str) -> str:
    for pattern, repl in _EMPHASIS:
        text = pattern.sub(repl, text)
    return text


def _fonts(line: str, keep: Callable[[str], str]) -> str:
    """`<font color=...>` kept for WeCom's three colours, dropped (with its `</font>`) otherwise."""
    stack: list[bool] = []

    def one(m: re.Match[str]) -> str:
        if not m.group(0).startswith("</"):
            colour = _FONT_OK.fullmatch(m.group(1) or "")
            stack.append(colour is not None)
            return keep(f'<font color="{colour.group(2).lower()}">') if colour else ""
        return keep("</font>") if stack and stack.pop() else ""

    return _FONT.sub(one, line)


_PLAIN = (
    (re.compile(r"^#{1,6} ", re.M), ""),
    (re.compile(r"^> ?", re.M), ""),
    (re.compile(r"\*\*(.+?)\*\*"), r"\1"),
    (re.compile(r"<font color=\"[a-z]+\">|</font>"), ""),
)


def wecom_plain(text: str) -> str:
    """Markdown `text` as readable plain text, for a message WeCom shows without markdown (a
    customer-group mass send): `wecom_markdown`, then its headings, quotes, bold, colours and
    code marks dropped and links as `text (url)`."""
    text = wecom_markdown(text)
    for pattern, repl in _PLAIN:
        text = pattern.sub(repl, text)
    text = _LINK.sub(lambda m: m.group(2) if m.group(1) == m.group(2) else f"{m[1]} ({m[2]})", text)
    return re.sub(r"`([^`\n]+)`", r"\1", text)


def _clean(text: str) -> str:
    """`text` as WeCom accepts it: no C0 control but tab and newline (a `\\u0001` escape in the
    JSON is refused, errcode 40033), no lone surrogate (not UTF-8)."""
    text = text.replace("\r\n", "\n").encode("utf-8", "replace").decode("utf-8")
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)


def _encode(payload: Mapping[str, Any]) -> bytes:
    """JSON as WeCom wants it: UTF-8 as is, never `\\uXXXX` escapes (errcode 40033)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- WeCom's API, shared by both backends -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one request came to: WeCom's JSON on success, else the classified failure."""

    body: Mapping[str, Any] = field(default_factory=dict)
    failure: SendResult | None = None
    errcode: int | None = None  # WeCom's code when it answered with one


class _Api:
    """WeCom's calls over one transport: a body as WeCom reads it, the answer judged by its
    `errcode` (`ERROR_CODES`), then by its HTTP status (`_http.status_failure`)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.origin = transport.origin

    def call(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
        effect: bool = True,
    ) -> _Answer:
        """One request and its classified answer. `effect`: whether the call changes anything
        on WeCom (a send does, a token or status read does not, so its timeouts are retried)."""
        headers = {"Content-Type": "application/json; charset=utf-8"} if payload else None
        body = _encode(payload) if payload is not None else None
        answer = self.transport.request(
            method, url, params=params, body=body, headers=headers, effect=effect
        )
        if isinstance(answer, SendResult):
            return _Answer(failure=answer)
        return self._judge(answer, effect)

    def _judge(self, answer: Answer, effect: bool) -> _Answer:
        status, body = answer.status, answer.body
        unsure = SendResult.uncertain if effect else SendResult.retry
        said = self._said(answer)
        if 200 <= status < 300:
            if not answer.complete:
                return _Answer(failure=unsure(f"HTTP {status}, but the answer could not be read"))
            errcode = code(body.get("errcode")) if isinstance(body, dict) else None
            if not isinstance(body, dict) or errcode is None:
                return _Answer(failure=unsure(f"HTTP {status} without an errcode{said}"))
            if errcode == 0:
                return _Answer(body=body, errcode=0)
            return _Answer(
                failure=self.errcode_failure(errcode, body.get("errmsg")), errcode=errcode
            )
        redirect = f"{self.origin} redirects"
        wait = retry_after(answer.headers)
        return _Answer(failure=status_failure(status, said, wait, redirect=redirect, effect=effect))

    def errcode_failure(self, errcode: int, errmsg: object) -> SendResult:
        known = error_code(errcode)
        meaning = f" ({known.meaning})" if known.meaning else ""
        detail = f"errcode {errcode}{meaning}{self.transport.said(errmsg)}"
        if known.verdict is Verdict.PERMANENT:
            return SendResult.permanent(detail)
        if known.verdict is Verdict.TOKEN:  # still refused after a fresh token
            return SendResult.retry(detail + "; refused again with a fresh access token")
        return SendResult.retry(detail, known.wait)

    def _said(self, answer: Answer) -> str:
        return self.transport.said(message_of(answer))


def _remote(value: object) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
        return terminal(str(value))[:DETAIL_LIMIT]
    return None


def _noted(result: SendResult, notes: Sequence[str]) -> SendResult:
    """`result` with what WeCom skipped or whom it did not mention added to an `ok` detail."""
    if result.status is not SendStatus.OK or not notes:
        return result
    return replace(result, detail="; ".join([result.detail, *notes]))


# -- wecom-robot -------------------------------------------------------------------------------


class Mentions(NamedTuple):
    userids: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    note: str = ""  # why someone was not mentioned, for the detail


class WeComRobotBackend(HttpBackend):
    """Posts to one WeCom group through its robot; not idempotent (a repeat posts twice)."""

    type_name = ROBOT

    def __init__(
        self,
        name: str,
        url: str,
        caps: Capabilities,
        transport: Transport,
        *,
        params: Mapping[str, str] | None = None,
        mention_all: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(name, url, caps, transport)
        self._params = dict(params or {})
        self._markdown = caps.markdown == DIALECT
        self._mention_all = mention_all
        self._sleep = sleep
        self.limit = (caps.max_length or ROBOT_TEXT_BYTES, Unit.BYTES)  # of one message
        self._http = _Api(transport)

    def _shown(self) -> dict[str, object]:
        return {"msgtype": "markdown" if self._markdown else "text"}

    def send(self, delivery: Delivery) -> SendResult:
        """Post `delivery` as text (with mentions) or WeCom markdown, in parts when too long."""
        self._check_open()
        text = _clean(delivery.text)
        unfit = unsendable(delivery, self.capabilities, empty=EMPTY, text=text)
        if unfit is not None:
            return unfit
        who = self.mentions(delivery)
        result = send_parts(self.messages(text, who), lambda _i, m: self._post(m), self._sleep)
        return _noted(result, [who.note] if who.note else [])

    def _post(self, message: Mapping[str, Any]) -> SendResult:
        answer = self._http.call("POST", self._url, params=self._params, payload=message)
        return answer.failure or SendResult.ok("posted")

    def cost(self, delivery: Delivery) -> int:
        """How many of the robot's messages a minute `delivery` uses (one per part): the runner
        takes as many rate tokens."""
        return len(self.messages(_clean(delivery.text), self.mentions(delivery)))

    def messages(self, text: str, who: Mentions) -> list[dict[str, Any]]:
        """The request bodies for `text`: one, or the parts `fit` splits it into (the first one
        carries the mentions)."""
        limit, unit = self.limit
        if self._markdown:
            tail = "".join(f"\n<@{u}>" for u in who.userids)
            parts = fit(wecom_markdown(text), limit - size(tail, unit), unit, Policy.SPLIT)
            return [
                {"msgtype": "markdown", "markdown": {"content": p + (tail if i == 0 else "")}}
                for i, p in enumerate(parts)
            ]
        messages: list[dict[str, Any]] = []
        for i, part in enumerate(fit(text, limit, unit, Policy.SPLIT)):
            body: dict[str, Any] = {"content": part}
            if i == 0 and who.userids:
                body["mentioned_list"] = list(who.userids)
            if i == 0 and who.phones:
                body["mentioned_mobile_list"] = list(who.phones)
            messages.append({"msgtype": "text", "text": body})
        return messages

    def mentions(self, delivery: Delivery) -> Mentions:
        """Whom the post @-mentions: the member (by `wecom_userid`, else `phone`) of a member
        delivery; everyone (`@all`, text only) for a post to everyone with `mention_all`. A staff
        task about a member mentions no one: it is for staff, not for the member."""
        if delivery.audience == "everyone" and self._mention_all:
            return Mentions((MENTION_ALL,))
        if delivery.audience != "member" or delivery.kind == "task":
            return Mentions()
        userid = delivery.attributes.get("wecom_userid")
        phone = delivery.attributes.get("phone")
        if isinstance(userid, str) and _USERID.fullmatch(userid):
            return Mentions((userid,))
        if userid is not None:
            return Mentions(note="no mention: wecom_userid is not a WeCom userid")
        if isinstance(phone, str) and _PHONE.fullmatch(phone.replace(" ", "")):
            if self._markdown:
                return Mentions(note="no mention: WeCom markdown mentions by userid only")
            return Mentions(phones=(phone.replace(" ", ""),))
        if phone is not None:
            return Mentions(note="no mention: phone is not a phone number")
        return Mentions(note="no mention: the member has no wecom_userid or phone")


def create_robot(config: BackendConfig, env: Mapping[str, str]) -> WeComRobotBackend:
    """The `wecom-robot` entry point: `key: ${env:NAME}`, or the whole webhook URL as target."""
    name = config.name
    check_options(config, ("base_url", "mention_all", *TIMEOUT_OPTIONS))
    markdown = dialect(config, DIALECT)
    mention_all = option_bool(config, "mention_all", False)
    if mention_all and markdown:
        raise BackendError(
            f'backend "{name}": mention_all needs text messages (WeCom markdown cannot @all);'
            " drop markdown=wecom or mention_all"
        )
    key_ref = config.options.get("key")
    if config.target:
        if config.options.get("base_url") is not None:
            raise BackendError(f'backend "{name}": base_url goes with key:, not with a webhook URL')
        url = http_url(
            name, "url", resolve_secret(config.target, env, what=f'backend "{name}": url')
        )
        keys = parse_qs(urlsplit(url).query).get("key", [])
        if len(keys) != 1 or not keys[0]:  # the URL is not quoted: it is the secret
            raise BackendError(
                f'backend "{name}": the webhook URL must end in ?key=... as WeCom shows it'
            )
        key, params = keys[0], None
    elif key_ref:
        key = resolve_secret(str(key_ref), env, what=f'backend "{name}": key')
        url = (base_url_option(config, env) or DEFAULT_BASE_URL) + "/cgi-bin/webhook/send"
        params = {"key": key}
    else:
        raise BackendError(
            f'backend "{name}" (wecom-robot) needs the robot\'s key: key: "${{env:NAME}}" in the'
            f" playbook, or --backend '{name}=wecom-robot:WEBHOOK_URL'"
        )
    limit = ROBOT_MARKDOWN_BYTES if markdown else ROBOT_TEXT_BYTES
    # one message's limit in UTF-8 bytes: option `max_length` may lower WeCom's, never raise it
    caps = configured(
        replace(ROBOT_CAPABILITIES, max_length=limit), config, native=DIALECT, ceiling=limit
    )
    # opened last, once nothing else can fail: the URL, its query and the key are scrubbed
    transport = Transport(origin_of(url), (url, urlsplit(url).query, key), **timeouts(config))
    return WeComRobotBackend(name, url, caps, transport, params=params, mention_all=mention_all)


# -- wecom-app: quotas of customer mass sends ---------------------------------------------------


class GroupQuota(enum.StrEnum):
    """How many mass sends WeCom lets each customer group receive (set by the admin in 群发助手 →
    群发规则); beyond it the group is skipped (get_groupmsg_send_result status 3)."""

    MONTH = "month"  # WeCom's default: as many a month as the month has days
    WEEK = "week"  # seven a week
    DAY = "day"  # one a day


class QuotaWindow(NamedTuple):
    start: datetime  # Beijing time, inclusive
    end: datetime  # exclusive
    limit: int  # mass sends one group may receive in [start, end)


def quota_window(rule: GroupQuota, at: datetime) -> QuotaWindow:
    """The window of WeCom's per-group mass-send quota holding `at`, and its limit.

    The counter itself must be durable, so it is not kept here: the runner's store counts sends
    per group and window (docs/backends/wecom.md). Weeks run Monday to Sunday (an assumption:
    WeCom's page does not say).
    """
    local = at.astimezone(BEIJING)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if rule is GroupQuota.DAY:
        return QuotaWindow(day, day + timedelta(days=1), 1)
    if rule is GroupQuota.WEEK:
        start = day - timedelta(days=local.weekday())
        return QuotaWindow(start, start + timedelta(days=7), 7)
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return QuotaWindow(start, end, (end - start).days)


# -- wecom-app ---------------------------------------------------------------------------------


class Reach(enum.StrEnum):
    """How a `wecom-app` delivery reaches people."""

    STAFF = "staff"  # an application message to the configured staff (to_user/to_party/to_tag)
    MEMBER = "member"  # an application message to the member's wecom_userid
    GROUPS = "groups"  # a customer-group mass send, confirmed by its sender


class Confirmation(NamedTuple):
    confirmed: bool | None  # True: sent; False: not yet; None: unknown (see detail)
    detail: str


class WeComAppBackend(HttpBackend):
    """A WeCom self-built app: application messages to staff and members, customer-group mass
    sends for posts to everyone. Not idempotent (WeCom's duplicate check is off: it drops any
    identical request within its interval, distinct deliveries included)."""

    type_name = APP

    def __init__(
        self,
        name: str,
        base_url: str,
        caps: Capabilities,
        transport: Transport,
        *,
        corp_id: str,
        corp_secret: str,
        agent_id: int | None = None,
        staff: Mapping[str, str] | None = None,
        sender: str | None = None,
        chat_ids: Sequence[str] = (),
        group_quota: GroupQuota = GroupQuota.MONTH,
        clock: Clock = wall_clock,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(name, base_url, caps, transport)
        self._base = base_url
        self._corp_id = corp_id
        self._secret = corp_secret
        self.agent_id = agent_id
        self._staff = dict(staff or {})  # touser / toparty / totag
        self.sender = sender
        self.chat_ids = tuple(chat_ids)
        self.group_quota = group_quota if sender else None
        self._markdown = caps.markdown == DIALECT
        self.limit = (caps.max_length or APP_TEXT_BYTES, Unit.BYTES)  # of one message
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._token: tuple[str, float] | None = None  # (access token, renew after)
        self._seen_tokens: list[str] = []  # the last tokens this backend held, all hidden
        self._http = _Api(transport)  # it hides the corp secret, and each token once fetched

    def _shown(self) -> dict[str, object]:
        return {"agent_id": self.agent_id, "sender": self.sender}

    # -- routing --------------------------------------------------------------------------------

    def reach(self, delivery: Delivery) -> Reach | str:
        """Where `delivery` goes, or why it cannot go anywhere."""
        if delivery.kind == "task" or delivery.audience == "staff":
            if not self._staff:
                return "staff deliveries need option to_user, to_party or to_tag"
            return Reach.STAFF
        if delivery.audience == "member":
            return Reach.MEMBER
        if delivery.audience == "everyone":
            if self.sender is None:
                return "posts to everyone go out as customer-group mass sends: set option sender"
            return Reach.GROUPS
        return (
            f"WeCom has no way to address `{terminal(delivery.audience)}` from an app (a"
            " customer-group mass send reaches whole groups)"
        )

    def send(self, delivery: Delivery) -> SendResult:
        """Send `delivery` the way `reach` says."""
        self._check_open()
        text = _clean(delivery.text)
        unfit = unsendable(delivery, self.capabilities, empty=EMPTY, text=text)
        if unfit is not None:
            return unfit
        way = self.reach(delivery)
        if not isinstance(way, Reach):
            return SendResult.permanent(way)
        if way is Reach.GROUPS:
            return self._mass_send(wecom_plain(text) if self._markdown else text)
        if self.agent_id is None:
            return SendResult.permanent("application messages need option agent_id")
        if way is Reach.STAFF:
            return self._message(dict(self._staff), text)
        userid = delivery.attributes.get("wecom_userid")
        if not (isinstance(userid, str) and _USERID.fullmatch(userid)):
            why = "has no wecom_userid" if userid is None else "has a wecom_userid that is not one"
            return SendResult.permanent(f"the member {why}: WeCom cannot address them")
        return self._message({"touser": userid}, text)

    def _parts(self, text: str) -> list[str]:
        """An application message's texts: one, or the parts `fit` splits it into."""
        limit, unit = self.limit
        return fit(wecom_markdown(text) if self._markdown else text, limit, unit, Policy.SPLIT)

    def quotas(self, delivery: Delivery, now: datetime) -> list[Quota]:
        """A mass send counts against each of its groups' allowance for the period (or, without
        chat_ids, against the sender's groups as one): the runner counts them durably."""
        if self.reach(delivery) is not Reach.GROUPS:
            return []
        rule = self.group_quota or GroupQuota.MONTH
        window = quota_window(rule, now)
        period = f"{window.start:%Y-%m-%d}/{rule}"
        targets = self.chat_ids or (f"groups-of-{self.sender}",)
        return [Quota(t, period, window.limit) for t in targets]

    def cost(self, delivery: Delivery) -> int:
        """How many messages `delivery` becomes (one per part; a mass send is one): the runner
        takes as many rate tokens."""
        if self.reach(delivery) is Reach.GROUPS:
            return 1
        return len(self._parts(_clean(delivery.text)))

    def _message(self, to: Mapping[str, str], text: str) -> SendResult:
        """message/send, in parts when the text is longer than WeCom takes."""
        msgtype = "markdown" if self._markdown else "text"
        notes: list[str] = []

        def one(i: int, part: str) -> SendResult:
            payload = {
                **to,
                "msgtype": msgtype,
                "agentid": self.agent_id,
                msgtype: {"content": part},
            }
            answer = self._api("/cgi-bin/message/send", payload)
            if answer.failure is not None:
                return answer.failure
            if i == 1:
                notes.extend(self._skipped(answer.body))
            msgid = _remote(answer.body.get("msgid"))
            return SendResult.ok("application message sent", remote_id=msgid)

        return _noted(send_parts(self._parts(text), one, self._sleep), notes)

    def _skipped(self, body: Mapping[str, Any]) -> list[str]:
        """Recipients WeCom skipped (the send goes on for the others)."""
        notes = []
        for field_name in ("invaliduser", "invalidparty", "invalidtag", "unlicenseduser"):
            value = body.get(field_name)
            if isinstance(value, str) and value.strip():
                notes.append(f"WeCom skipped {field_name} {terminal(value.strip())[:DETAIL_LIMIT]}")
        return notes

    def _mass_send(self, text: str) -> SendResult:
        """externalcontact/add_msg_template to customer groups: one task, for `sender` to confirm.

        Never split: each part would be a mass send of its own, each counted against every
        group's quota and each confirmed by hand.
        """
        if size(text, Unit.BYTES) > MASS_SEND_BYTES:
            return SendResult.permanent(
                f"the text is {size(text, Unit.BYTES):,} bytes; a customer-group mass send takes"
                f" {MASS_SEND_BYTES:,} (and is never split: each part would count against every"
                " group's quota): shorten the template"
            )
        payload: dict[str, Any] = {"chat_type": "group", "sender": self.sender}
        if self.chat_ids:
            payload["chat_id_list"] = list(self.chat_ids)
        payload["text"] = {"content": text}
        answer = self._api("/cgi-bin/externalcontact/add_msg_template", payload)
        if answer.failure is not None:
            return answer.failure
        msgid = _remote(answer.body.get("msgid"))
        if msgid is None:  # created (errcode 0) but unnamed: nothing to track, say so
            return SendResult.uncertain("the mass send was accepted without a msgid to track")
        rule = self.group_quota or GroupQuota.MONTH
        window = quota_window(rule, self._clock())
        groups = (
            f"{len(self.chat_ids)} customer group(s)"
            if self.chat_ids
            else f"the customer groups {self.sender} picks"
        )
        detail = (
            f"customer-group mass send {msgid} created for {groups}; WeCom sends it once"
            f" {self.sender} confirms it in their client. Quota: a group receives at most"
            f" {window.limit} mass sends from {window.start:%Y-%m-%d} to"
            f" {window.end - timedelta(days=1):%Y-%m-%d} (group_quota={rule})"
        )
        failed = answer.body.get("fail_list")
        if isinstance(failed, list) and failed:
            detail += f"; WeCom could not include {len(failed)} of them (fail_list)"
        return SendResult(SendStatus.OK, detail, remote_id=msgid, awaiting_confirmation=True)

    # -- confirmation ---------------------------------------------------------------------------

    def confirmation(self, remote_id: str) -> bool | None:
        """Whether the mass send `remote_id` went out: True sent (the sender confirmed it), False
        not yet, None unknown or failed (`confirmation_status` says why)."""
        return self.confirmation_status(remote_id).confirmed

    def confirmation_status(self, remote_id: str) -> Confirmation:
        """`confirmation` with the reason, for the runner's task detail."""
        self._check_open()
        if self.sender is None:
            return Confirmation(None, "this backend has no sender: it made no mass sends")
        cursor = ""
        for _ in range(CONFIRMATION_PAGES):
            payload = {"msgid": remote_id, "limit": 1000, **({"cursor": cursor} if cursor else {})}
            answer = self._api("/cgi-bin/externalcontact/get_groupmsg_task", payload, effect=False)
            if answer.errcode == PENDING_DISPATCH:
                return Confirmation(False, "WeCom is still dispatching the mass send")
            if answer.failure is not None:
                return Confirmation(None, answer.failure.detail)
            tasks = answer.body.get("task_list")
            for task in tasks if isinstance(tasks, list) else []:
                if isinstance(task, dict) and str(task.get("userid", "")).casefold() == (
                    self.sender.casefold()
                ):
                    status = task.get("status")
                    if status == 2:
                        return Confirmation(True, f"{self.sender} sent it")
                    if status == 0:
                        return Confirmation(False, f"{self.sender} has not confirmed it yet")
                    return Confirmation(None, f"WeCom reports status {terminal(str(status))}")
            cursor = str(answer.body.get("next_cursor") or "")
            if not cursor:
                break
        return Confirmation(False, f"WeCom lists no task for {self.sender} yet")

    # -- the access token -----------------------------------------------------------------------

    def _api(self, path: str, payload: Mapping[str, Any], *, effect: bool = True) -> _Answer:
        """POST to an API with the access token; a token WeCom rejects is renewed, once."""
        for attempt in (1, 2):
            token = self._access_token()
            if isinstance(token, _Answer):
                return token
            url, params = self._base + path, {"access_token": token}
            answer = self._http.call("POST", url, params=params, payload=payload, effect=effect)
            if answer.errcode in TOKEN_CODES and attempt == 1:
                self._token = None  # the refused call did nothing: repeating it is safe
                continue
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _access_token(self) -> str | _Answer:
        """The cached token, or a new one from gettoken (cached until `expires_in` - margin)."""
        now = self._monotonic()
        if self._token is not None and now < self._token[1]:
            return self._token[0]
        answer = self._http.call(
            "GET",
            self._base + "/cgi-bin/gettoken",
            params={"corpid": self._corp_id, "corpsecret": self._secret},
            effect=False,
        )
        if answer.failure is not None:
            failure = answer.failure
            what = "getting an access token: "
            return _Answer(failure=replace(failure, detail=what + failure.detail))
        token = answer.body.get("access_token")
        expires = answer.body.get("expires_in")
        if not isinstance(token, str) or not token:
            return _Answer(failure=SendResult.retry("gettoken answered without an access_token"))
        self._http.transport.hide(token)
        self._seen_tokens.append(token)
        if len(self._seen_tokens) > 8:  # a token replaced long ago no longer needs hiding
            self._http.transport.forget(self._seen_tokens.pop(0))
        life = float(expires) if isinstance(expires, int | float) and expires > 0 else 7200.0
        self._token = (token, now + max(life - TOKEN_MARGIN, life / 2))
        return token


APP_OPTIONS = (
    *("corp_id", "corp_secret", "agent_id", "to_user", "to_party", "to_tag", "sender"),
    *("chat_ids", "group_quota", "base_url", *TIMEOUT_OPTIONS),
)


def create_app(config: BackendConfig, env: Mapping[str, str]) -> WeComAppBackend:
    """The `wecom-app` entry point: options corp_id, corp_secret, and agent_id or sender."""
    name = config.name
    check_options(config, APP_OPTIONS)
    if config.target:
        raise BackendError(
            f'backend "{name}" (wecom-app) takes no url: its settings are options (corp_id,'
            " corp_secret, agent_id, sender)"
        )
    secrets: dict[str, str] = {}
    for option in ("corp_id", "corp_secret"):
        value = option_str(config, option)
        if value is None:
            raise BackendError(
                f'backend "{name}" (wecom-app) needs option {option}'
                + (' as "${env:NAME}"' if option == "corp_secret" else "")
            )
        secrets[option] = resolve_secret(value, env, what=f'backend "{name}": {option}')
    agent = option_str(config, "agent_id")
    if agent is not None and not re.fullmatch(r"[0-9]{1,10}", agent.strip()):
        raise BackendError(f'backend "{name}": agent_id must be the app\'s AgentId (a number)')
    sender = option_str(config, "sender")
    if agent is None and sender is None:
        raise BackendError(
            f'backend "{name}" (wecom-app) needs agent_id (application messages) or sender'
            " (customer-group mass sends), or both"
        )
    staff = {
        field_name: "|".join(_ids(config, option, _USERID if option == "to_user" else None))
        for option, field_name in (
            ("to_user", "touser"),
            ("to_party", "toparty"),
            ("to_tag", "totag"),
        )
        if config.options.get(option) is not None
    }
    if sender is not None and not _USERID.fullmatch(sender):
        raise BackendError(f'backend "{name}": sender must be a WeCom userid')
    chat_ids = _ids(config, "chat_ids", _CHAT_ID) if config.options.get("chat_ids") else []
    if chat_ids and sender is None:
        raise BackendError(f'backend "{name}": chat_ids need a sender (the groups\' owner)')
    rule = option_str(config, "group_quota") or GroupQuota.MONTH.value
    if rule not in set(GroupQuota):
        raise BackendError(
            f'backend "{name}": group_quota must be month, week or day (WeCom\'s 群发规则)'
        )
    caps = configured(APP_CAPABILITIES, config, native=DIALECT, ceiling=APP_TEXT_BYTES)
    base = base_url_option(config, env) or DEFAULT_BASE_URL
    # opened last, once nothing else can fail: the corp secret is scrubbed (tokens as they come)
    transport = Transport(base, (secrets["corp_secret"],), **timeouts(config))
    return WeComAppBackend(
        name,
        base,
        caps,
        transport,
        corp_id=secrets["corp_id"],
        corp_secret=secrets["corp_secret"],
        agent_id=int(agent) if agent is not None else None,
        staff=staff,
        sender=sender,
        chat_ids=chat_ids,
        group_quota=GroupQuota(rule),
    )


# -- what each type can do before options (`sop backends`) -------------------------------------

ROBOT_CAPABILITIES = chat_capabilities(
    ROBOT, max_length=ROBOT_TEXT_BYTES, unit=Unit.BYTES, mentions=True
)
APP_CAPABILITIES = chat_capabilities(
    APP, max_length=APP_TEXT_BYTES, unit=Unit.BYTES, mentions=False
)
# One module, two types: keyed by type (`describe_types` reads a bare `Capabilities` today).
CAPABILITIES: Mapping[str, Capabilities] = {ROBOT: ROBOT_CAPABILITIES, APP: APP_CAPABILITIES}


# -- configuration helpers ---------------------------------------------------------------------


def _ids(config: BackendConfig, option: str, pattern: re.Pattern[str] | None) -> list[str]:
    """A list option: ids separated by `|` or `,` (WeCom writes `|`)."""
    raw = str(config.options.get(option) or "")
    if option == "to_user" and raw.strip() == MENTION_ALL:  # every member the app can see
        return [MENTION_ALL]
    ids = [i.strip() for i in re.split(r"[|,]", raw) if i.strip()]
    usable = pattern or re.compile(r"[0-9]{1,10}")  # departments and tags are numbers
    if not ids or any(not usable.fullmatch(i) for i in ids):
        raise BackendError(
            f'backend "{config.name}": {option} must list ids separated by | or ,'
            + (" (numbers)" if pattern is None else "")
        )
    return ids
