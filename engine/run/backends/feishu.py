"""The `feishu-bot` backend (a Feishu/Lark custom group robot), and what custom robots share.

A custom robot is a webhook bound to one group: `POST {base_url}/open-apis/bot/v2/hook/<token>`
with a JSON body, signed (when the robot has a secret) by `timestamp` and `sign` in the body. The
answer's `code` says what happened; the table of codes and their classes is in
docs/backends/feishu-dingtalk.md, with the platform's documents it comes from.

`RobotBackend` is the part every custom group robot shares (dingtalk.py builds on it): the text
fitted into the platform's request-size limit with the one length policy (`_text.fit`), the parts
posted in order under one delivery, and the transport of `WebhookBackend` (timeouts, bounded reads,
no redirects, what a broken connection means, secrets scrubbed from details and from urllib3's
debug log, which prints the request line with the token in it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from requests import exceptions as rexc

from ...core.catalog import DEFAULT_RATES, MESSAGE_KINDS
from ...core.version import version
from ..ports import BackendConfig, Capabilities, Delivery, SendResult, SendStatus
from ._common import (
    BackendError,
    Clock,
    capabilities,
    check_fits,
    check_options,
    encode,
    option_seconds,
    option_str,
    redact,
    resolve_secret,
    wall_clock,
)
from ._text import Policy, Unit, fit
from .webhook import CONNECT_TIMEOUT, MAX_RETRY_AFTER, READ_TIMEOUT, WebhookBackend, _code, _json

TYPE = "feishu-bot"
DEFAULT_BASE_URL = "https://open.feishu.cn"
HOOK_PATH = "/open-apis/bot/v2/hook/"
# "发送消息时，请求体的数据大小不能超过 20 KB": taken as 20,000 bytes, the stricter reading.
BODY_LIMIT = 20_000
PART_INTERVAL = 0.2  # the robot takes 5 a second: parts of one delivery are paced at that
# A later part refused as "too fast" is tried once more after the wait the platform asked for
# (or PART_RETRY_WAIT), when that is at most PART_RETRY_LIMIT seconds.
PART_RETRY_WAIT = 1.0
PART_RETRY_LIMIT = 5.0
# Codes that mean "too fast, later": 11232 (the custom robot's own limit, documented on its page)
# and 99991400 (the Open Platform's frequency limit). 9499 is the gateway's code for an HTTP
# error, "too many request" as often as "Bad Request": see `_feishu_code_verdict`.
RETRY_CODES = frozenset({11232, 99991400})
SIGNATURE_FAILED = 19021
IP_NOT_ALLOWED = 19022
KEYWORD_MISSING = 19024
GATEWAY_ERROR = 9499
# What a group robot can carry: the message kinds, and staff reminders (`task`) to a staff group.
KINDS = frozenset(MESSAGE_KINDS | {"task"})
POLICIES = {"split": Policy.SPLIT, "truncate": Policy.TRUNCATE}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS = re.compile(r"[0-9]{1,10}")

Body = dict[str, Any]
Builder = Callable[[str], Body]  # the JSON body that carries one part of the text


# -- the text as Feishu rich text (`post`) -------------------------------------------------------

_INLINE = re.compile(
    r"\[(?P<label>[^\]\n]+)\]\((?P<href>https?://[^\s)]+)\)"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|__(?P<bold2>.+?)__"
    r"|~~(?P<strike>.+?)~~"
    r"|`(?P<code>[^`\n]+)`"
    r"|(?<![\w*])\*(?P<italic>[^*\s](?:[^*\n]*[^*\s])?)\*(?![\w*])"
    r"|(?P<url>https?://[^\s<>\"'，。；！？、）)]+)"
)
_HEADING = re.compile(r"#{1,6}\s+(.*)")
_BULLET = re.compile(r"(\s*)[-*+]\s+(.*)")
_URL_TAIL = ".,;:!?"


def feishu_post(text: str) -> list[list[Body]]:
    """The rendered text as the paragraphs of a Feishu `post`: one paragraph a line.

    Markdown-ish marks become what `post` can show: `**bold**`, `*italic*` and `~~struck~~` are
    styles, `[label](https://…)` and bare http(s) URLs are links, a `# heading` is a bold line, a
    `- item` starts with a bullet; code marks are dropped and a fenced block is kept as plain
    lines. Anything else stays as the text it is; a link to any other scheme stays text.
    """
    paragraphs: list[list[Body]] = []
    fenced = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            paragraphs.append([_element(line, ())] if line else [])
            continue
        heading = _HEADING.fullmatch(line)
        bullet = _BULLET.fullmatch(line)
        if heading:
            paragraphs.append(_inline(heading.group(1), ("bold",)))
        elif bullet:
            paragraphs.append(_inline(f"{bullet.group(1)}• {bullet.group(2)}", ()))
        else:
            paragraphs.append(_inline(line, ()))
    return paragraphs


def _inline(text: str, style: tuple[str, ...]) -> list[Body]:
    out: list[Body] = []
    pos = 0
    for m in _INLINE.finditer(text):
        _add_text(out, text[pos : m.start()], style)
        pos = m.end()
        kind = m.lastgroup
        if kind == "href":  # `lastgroup` names the last group that matched: the link's href
            out.append(_link(m.group("label"), m.group("href"), style))
        elif kind in ("bold", "bold2"):
            out.extend(_merge_into(out, _inline(m.group(kind), (*style, "bold"))))
        elif kind == "strike":
            out.extend(_merge_into(out, _inline(m.group(kind), (*style, "lineThrough"))))
        elif kind == "italic":
            out.extend(_merge_into(out, _inline(m.group(kind), (*style, "italic"))))
        elif kind == "code":
            _add_text(out, m.group(kind), style)
        else:  # a bare URL; the punctuation after it belongs to the sentence
            url = m.group("url")
            tail = len(url) - len(url.rstrip(_URL_TAIL))
            url, rest = (url[:-tail], url[-tail:]) if tail else (url, "")
            out.append(_link(url, url, style))
            _add_text(out, rest, style)
    _add_text(out, text[pos:], style)
    return out


def _element(text: str, style: tuple[str, ...]) -> Body:
    element: Body = {"tag": "text", "text": text}
    if style:
        element["style"] = list(dict.fromkeys(style))
    return element


def _link(label: str, href: str, style: tuple[str, ...]) -> Body:
    element: Body = {"tag": "a", "text": label, "href": href}
    if style:
        element["style"] = list(dict.fromkeys(style))
    return element


def _add_text(out: list[Body], text: str, style: tuple[str, ...]) -> None:
    if not text:
        return
    out.extend(_merge_into(out, [_element(text, style)]))


def _merge_into(out: list[Body], new: list[Body]) -> list[Body]:
    """`new` to append to `out`, its first text run merged into `out`'s last one when alike."""
    if new and out:
        last, first = out[-1], new[0]
        if last["tag"] == first["tag"] == "text" and last.get("style") == first.get("style"):
            last["text"] += first["text"]
            return new[1:]
    return new


# -- signing -------------------------------------------------------------------------------------


def feishu_sign(timestamp: int, secret: str) -> str:
    """Feishu's signature: base64 of HMAC-SHA256 keyed with `timestamp\\nsecret`, of nothing."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


def epoch_seconds(when: datetime) -> int:
    """Whole seconds since 1970 (exact: no float on the way)."""
    return (when - _EPOCH) // timedelta(seconds=1)


def epoch_millis(when: datetime) -> int:
    """Whole milliseconds since 1970 (exact)."""
    return (when - _EPOCH) // timedelta(milliseconds=1)


# -- what custom robots share --------------------------------------------------------------------


class _Unfit(Exception):
    """The text cannot be fitted into the request-size limit."""


class _LogScrub(logging.Filter):
    """Removes the live robots' secrets from urllib3's log records.

    urllib3 logs the request line (`POST /robot/send?access_token=… HTTP/1.1`) at DEBUG; a robot's
    token is in that line. A logger's filters see only the records of that logger, so the filter
    sits on each urllib3 logger that prints a URL.
    """

    LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager")

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[int, tuple[str, ...]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        hidden = [s for group in list(self.secrets.values()) for s in group]
        if hidden:
            message = record.getMessage()
            clean = redact(message, hidden)
            if clean != message:
                record.msg, record.args = clean, ()
        return True


_SCRUB = _LogScrub()


def _watch(owner: object, secrets: Sequence[str]) -> None:
    for name in _LogScrub.LOGGERS:
        logger = logging.getLogger(name)
        if _SCRUB not in logger.filters:
            logger.addFilter(_SCRUB)
    variants = {v for s in secrets if s for v in (s, quote(s, safe=""), quote(s))}
    _SCRUB.secrets[id(owner)] = tuple(variants)


class RobotBackend(WebhookBackend):
    """A custom group robot: each delivery fitted into the request limit and posted in parts.

    Subclasses say how a part becomes a request (`_prepare`) and what the answer means
    (`_answer`); the transport, the timeouts and the scrubbing of details are `WebhookBackend`'s,
    the scrubbing of urllib3's log is here. Not idempotent: no custom robot drops a repeated
    message.
    """

    type_name = "robot"  # shown in errors

    def __init__(
        self,
        name: str,
        url: str,
        caps: Capabilities,
        *,
        secret: str | None,
        token: str | None,
        policy: Policy,
        limit: int,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        clock: Clock = wall_clock,
        pause: Callable[[float], None] = time.sleep,
        interval: float = 0.0,
    ) -> None:
        super().__init__(
            name,
            url,
            caps,
            secret=secret,
            token=token,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            clock=clock,
        )
        self.policy = policy
        self.limit = limit
        self._signing = secret
        self._pause = pause
        self._interval = interval
        _watch(self, self._hidden)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, origin={self.origin!r},"
            f" signed={self._signing is not None}, policy={self.policy.value!r})"
        )

    def close(self) -> None:
        """Close the connection pool; the log filter forgets this robot's secrets."""
        _SCRUB.secrets.pop(id(self), None)
        super().close()

    # -- what a subclass says ----------------------------------------------------------------

    def _prepare(self, delivery: Delivery) -> tuple[str, Builder]:
        """The URL to post to and how a part of the text becomes the JSON body (signed)."""
        raise NotImplementedError

    def _answer(
        self, status: int, headers: Mapping[str, str], raw: bytes, complete: bool
    ) -> SendResult:
        """What the platform's answer to one part means."""
        raise NotImplementedError

    # -- sending -------------------------------------------------------------------------------

    def send(self, delivery: Delivery) -> SendResult:
        """Post `delivery` in as many parts as the limit needs, in order, and classify."""
        if self._session is None:
            raise RuntimeError(f"{self.type_name} backend {self.name!r} is closed")
        unfit = check_fits(delivery, self.capabilities)
        if unfit is not None:
            return unfit
        if not delivery.text.strip():
            return SendResult.permanent("the rendered text is empty: there is nothing to post")
        url, build = self._prepare(delivery)
        try:
            bodies = self._fit(delivery.text, build)
        except _Unfit:
            return SendResult.permanent(
                f"the message cannot be made to fit the platform's {self.limit}-byte request"
                " limit (the title or mentions alone are too long)"
            )
        n = len(bodies)
        for i, body in enumerate(bodies, 1):
            if i > 1 and self._interval:
                self._pause(self._interval)
            result = self._post(url, body)
            if i > 1 and result.status is SendStatus.RETRY:
                # this part certainly did not go out, but the earlier ones did: a short wait
                # and one more try beats leaving the delivery half-posted
                wait = PART_RETRY_WAIT if result.retry_after is None else result.retry_after
                if wait <= PART_RETRY_LIMIT:
                    self._pause(wait)
                    result = self._post(url, body)
            if result.status is SendStatus.OK:
                continue
            if i == 1:
                return result if n == 1 else _with_part(result, 1, n)
            # earlier parts are in the group: resending the whole would post them twice
            return SendResult.uncertain(
                f"part {i} of {n} failed after parts 1 to {i - 1} were posted: {result.detail}"
            )
        return SendResult.ok("HTTP 200" if n == 1 else f"HTTP 200, in {n} parts")

    def _fit(self, text: str, build: Builder) -> list[bytes]:
        """The bodies for `text` under the limit: fitted in bytes of text, then checked whole.

        The text's share is the limit less the rest of the body; JSON escapes and the rich-text
        structure make a part's body larger than its text (a `post` of short linked lines can be
        twice its text), so a part that still overflows shrinks the share in proportion and the
        text is fitted again.
        """
        budget = self.limit - len(encode(build("")))
        for _ in range(12):
            if budget < 64:
                raise _Unfit
            parts = fit(text, budget, Unit.BYTES, self.policy)
            bodies = [encode(build(p)) for p in parts]
            worst = max(len(b) for b in bodies)
            if worst <= self.limit:
                return bodies
            budget = math.floor(budget * self.limit / worst) - 1  # overhead grows with the text
        raise _Unfit

    def _post(self, url: str, body: bytes) -> SendResult:
        assert self._session is not None
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"sop/{version()}",
            # a pooled connection the server closed fails like a reset after sending, which
            # would turn a certainly-undelivered part into an uncertain one
            "Connection": "close",
        }
        try:
            response = self._session.post(
                url,
                data=body,
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
        return self._answer(response.status_code, response.headers, raw, complete)

    # -- the answer: what every robot shares ---------------------------------------------------

    def _wait(self, headers: Mapping[str, str], body: Any) -> float | None:
        """`x-ogw-ratelimit-reset` (Feishu's gateway, seconds), else `Retry-After` or a JSON
        `retry_after` as the webhook reads them."""
        reset = (headers.get("x-ogw-ratelimit-reset") or "").strip()
        if _SECONDS.fullmatch(reset):
            return min(float(reset), MAX_RETRY_AFTER)
        return self._retry_after(headers, body)

    def _by_status(self, status: int, said: str, wait: float | None) -> SendResult:
        """An answer that carries no platform code: the HTTP status decides (the webhook's
        table, except that a 2xx the platform did not explain may or may not have posted)."""
        if 200 <= status < 300:
            return SendResult.uncertain(
                f"HTTP {status}, but the answer is not the platform's (it may have been"
                f" posted){said}"
            )
        if status in (408, 425, 429, 503):
            return SendResult.retry(f"HTTP {status}{said}", wait)
        if status == 504:
            return SendResult.uncertain(f"HTTP 504: the gateway timed out{said}")
        if 500 <= status < 600:
            return SendResult.retry(f"HTTP {status}{said}", wait)
        if 300 <= status < 400:
            return SendResult.permanent(
                f"HTTP {status}: the robot's address redirects; configure the address it"
                " redirects to"
            )
        return SendResult.permanent(f"HTTP {status}{said}")


def status_decides(status: int) -> bool:
    """A timeout, "too many" or a server error: the status says more than a code beside it."""
    return status in (408, 425, 429) or status >= 500


def _with_part(result: SendResult, i: int, n: int) -> SendResult:
    return replace(result, detail=f"part {i} of {n}: {result.detail}")


# -- Feishu --------------------------------------------------------------------------------------


def _feishu_code(body: Any) -> int | None:
    """The answer's code: `code`, or `StatusCode` in the robot's older answers."""
    if not isinstance(body, dict):
        return None
    for field in ("code", "StatusCode"):
        code = _code(body.get(field))
        if code is not None:
            return code
    return None


def _feishu_code_verdict(code: int, message: str) -> tuple[SendStatus, str]:
    """What a nonzero code means: (retry or permanent, what to tell the operator)."""
    if code in RETRY_CODES:
        return SendStatus.RETRY, "Feishu's rate limit (a robot takes 100 a minute, 5 a second)"
    if code == GATEWAY_ERROR:
        # the gateway's code for an HTTP error: "too many request" is the robot's rate limit;
        # "Bad Request" is a body Feishu cannot read, which sending again will not change
        if "bad request" in message.lower():
            return SendStatus.PERMANENT, "Feishu could not read the request"
        return SendStatus.RETRY, "Feishu's rate limit (a robot takes 100 a minute, 5 a second)"
    if code == SIGNATURE_FAILED:
        return SendStatus.PERMANENT, (
            "the signature was refused: check the robot's secret in `key` and this machine's"
            " clock (Feishu takes a timestamp within an hour of its own)"
        )
    if code == IP_NOT_ALLOWED:
        return SendStatus.PERMANENT, "this machine's address is not on the robot's IP allow-list"
    if code == KEYWORD_MISSING:
        return SendStatus.PERMANENT, (
            "the text has none of the robot's keywords (its security settings): every message,"
            " every part of a split one included, must contain one"
        )
    return SendStatus.PERMANENT, "Feishu refused the message"


class FeishuBackend(RobotBackend):
    """A Feishu custom robot: `text` messages, or rich text (`post`) with `markdown=feishu`."""

    type_name = TYPE

    def __init__(self, name: str, url: str, caps: Capabilities, *, post: bool, **kw: Any) -> None:
        super().__init__(name, url, caps, limit=BODY_LIMIT, interval=PART_INTERVAL, **kw)
        self.post = post

    def _prepare(self, delivery: Delivery) -> tuple[str, Builder]:
        signed: Body = {}
        if self._signing is not None:
            stamp = epoch_seconds(self._clock())
            # the documents' example sends the timestamp as a string
            signed = {"timestamp": str(stamp), "sign": feishu_sign(stamp, self._signing)}
        title = delivery.title

        def build(part: str) -> Body:
            if self.post:
                post = {"zh_cn": {"title": title, "content": feishu_post(part)}}
                return {**signed, "msg_type": "post", "content": {"post": post}}
            return {**signed, "msg_type": "text", "content": {"text": part}}

        return self._url, build

    def _answer(
        self, status: int, headers: Mapping[str, str], raw: bytes, complete: bool
    ) -> SendResult:
        body = _json(raw)
        said = self._said(raw, body)
        wait = self._wait(headers, body)
        code = _feishu_code(body)
        if code is None:
            return self._by_status(status, said, wait)
        if code == 0 and 200 <= status < 300:
            return SendResult.ok(f"HTTP {status}")
        message = body.get("msg") or body.get("StatusMessage") or ""
        verdict, why = _feishu_code_verdict(code, str(message))
        text = f"HTTP {status} with code {code}{said} ({why})"
        if verdict is SendStatus.RETRY:
            return SendResult.retry(text, wait)
        if status_decides(status):
            return self._by_status(status, f" with code {code}{said}", wait)
        return SendResult.permanent(text)


# -- building ------------------------------------------------------------------------------------


def http_url(name: str, what: str, value: str) -> str:
    """`value` when it is an http(s) URL with a host; the error never quotes it (it may be a
    secret)."""
    try:
        parts = urlsplit(value)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 — raises ValueError for a port that is not a number
    except ValueError:
        usable = False
    if not usable:
        raise BackendError(f'backend "{name}": {what} must be an http:// or https:// URL')
    return value


def robot_address(
    config: BackendConfig, env: Mapping[str, str], *, default_base: str, join: Callable[[str], str]
) -> tuple[str, str | None]:
    """The robot's URL and its token: the whole `url`, or `token` joined to `base_url`.

    Either may be `${env:NAME}`; both given is a mistake, as is `base_url` beside a whole URL.
    """
    name, type_name = config.name, config.type
    token_ref = config.options.get("token")
    base = option_str(config, "base_url")
    if config.target and token_ref:
        raise BackendError(f'backend "{name}" ({type_name}): give url or token, not both')
    if config.target:
        if base is not None:
            raise BackendError(
                f'backend "{name}" ({type_name}): base_url goes with token; url is the whole'
                " address"
            )
        url = resolve_secret(config.target, env, what=f'backend "{name}": url')
        return http_url(name, "url", url), None
    if not token_ref:
        raise BackendError(
            f'backend "{name}" ({type_name}) needs the robot: url: "${{env:NAME}}" (its whole'
            ' address) or token: "${env:NAME}" in the playbook'
        )
    token = resolve_secret(str(token_ref), env, what=f'backend "{name}": token')
    if "://" in token or "/" in token or "?" in token or any(c.isspace() for c in token):
        raise BackendError(
            f'backend "{name}": token must be the robot\'s token alone, not an address (put a'
            " whole address in url)"
        )
    base_url = http_url(name, "base_url", base or default_base)
    if urlsplit(base_url).query:
        raise BackendError(f'backend "{name}": base_url takes no query')
    return join(base_url.rstrip("/")) + quote(token, safe=""), token


def robot_settings(config: BackendConfig, env: Mapping[str, str]) -> dict[str, Any]:
    """What every robot reads the same way: the secret (`key`), the policy, the timeouts."""
    key = config.options.get("key")
    policy = option_str(config, "overflow") or "split"
    if policy not in POLICIES:
        raise BackendError(f'backend "{config.name}": overflow must be split or truncate')
    return {
        "secret": (
            resolve_secret(str(key), env, what=f'backend "{config.name}": key') if key else None
        ),
        "policy": POLICIES[policy],
        "connect_timeout": option_seconds(config, "connect_timeout", CONNECT_TIMEOUT),
        "read_timeout": option_seconds(config, "read_timeout", READ_TIMEOUT),
    }


def robot_dialect(config: BackendConfig, native: str) -> str | None:
    """The `markdown` option: the platform's dialect, or plain text (the default, or `none`)."""
    value = option_str(config, "markdown")
    if value in (None, "none"):
        return None
    if value != native:
        raise BackendError(
            f'backend "{config.name}": {config.type} renders markdown={native} or, without the'
            " option (or with markdown=none), plain text"
        )
    return native


def robot_capabilities(
    config: BackendConfig, type_name: str, *, mentions: bool, markdown: str | None
) -> Capabilities:
    """Kinds a group robot carries, not idempotent, its dialect, the rate `DEFAULT_RATES`
    documents unless the playbook or the route sets one (so `sop validate` and the runtime read
    one number)."""
    caps = capabilities(config, idempotent=False, kinds=KINDS, mentions=mentions)
    rate = config.rate_per_minute or DEFAULT_RATES[type_name]
    return replace(caps, markdown=markdown, rate_per_minute=rate)


ROBOT_OPTIONS = ("base_url", "overflow", "connect_timeout", "read_timeout")


def create(
    config: BackendConfig,
    env: Mapping[str, str],
    *,
    clock: Clock = wall_clock,
    pause: Callable[[float], None] = time.sleep,
) -> FeishuBackend:
    """The `feishu-bot` entry point: url or token, `key` to sign, `markdown=feishu` for `post`."""
    check_options(config, ROBOT_OPTIONS)
    markdown = robot_dialect(config, "feishu")
    url, token = robot_address(
        config, env, default_base=DEFAULT_BASE_URL, join=lambda base: base + HOOK_PATH
    )
    if token is None:  # a whole address: its last segment is the token (scrubbed from details)
        token = urlsplit(url).path.rstrip("/").rpartition("/")[2] or None
    return FeishuBackend(
        config.name,
        url,
        robot_capabilities(config, TYPE, mentions=False, markdown=markdown),
        post=markdown == "feishu",
        token=token,
        clock=clock,
        pause=pause,
        **robot_settings(config, env),
    )
