"""The `feishu-bot` backend: a Feishu/Lark custom group robot.

A custom robot is a webhook bound to one group: `POST {base_url}/open-apis/bot/v2/hook/<token>`
with a JSON body, signed (when the robot has a secret) by `timestamp` and `sign` in the body. The
answer's `code` says what happened; the table of codes and their classes is in
docs/backends/feishu-dingtalk.md, with the platform's documents it comes from. Fitting, parts and
transport are `RobotBackend`'s (`_robot.py`), shared with `dingtalk-bot`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from ..ports import BackendConfig, Capabilities, Delivery, SendResult, SendStatus
from ._chat import CHAT_OPTIONS, chat_capabilities, configured
from ._common import Clock, check_options, wall_clock
from ._http import Answer, Transport, code
from ._robot import (
    Body,
    Builder,
    RobotBackend,
    epoch_seconds,
    robot_address,
    robot_settings,
    robot_transport,
    status_decides,
)
from ._text import Unit

TYPE = "feishu-bot"
DIALECT = "feishu"
DEFAULT_BASE_URL = "https://open.feishu.cn"
HOOK_PATH = "/open-apis/bot/v2/hook/"
# "发送消息时，请求体的数据大小不能超过 20 KB": taken as 20,000 bytes, the stricter reading.
BODY_LIMIT = 20_000
PART_INTERVAL = 0.2  # the robot takes 5 a second: parts of one delivery are paced at that
# Codes that mean "too fast, later": 11232 (the custom robot's own limit, documented on its page)
# and 99991400 (the Open Platform's frequency limit). 9499 is the gateway's code for an HTTP
# error, "too many request" as often as "Bad Request": see `_feishu_code_verdict`.
RETRY_CODES = frozenset({11232, 99991400})
SIGNATURE_FAILED = 19021
IP_NOT_ALLOWED = 19022
KEYWORD_MISSING = 19024
GATEWAY_ERROR = 9499


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


# -- Feishu --------------------------------------------------------------------------------------


def _feishu_code(body: Any) -> int | None:
    """The answer's code: `code`, or `StatusCode` in the robot's older answers."""
    if not isinstance(body, dict):
        return None
    for field in ("code", "StatusCode"):
        found = code(body.get(field))
        if found is not None:
            return found
    return None


def _feishu_code_verdict(found: int, message: str) -> tuple[SendStatus, str]:
    """What a nonzero code means: (retry or permanent, what to tell the operator)."""
    if found in RETRY_CODES:
        return SendStatus.RETRY, "Feishu's rate limit (a robot takes 100 a minute, 5 a second)"
    if found == GATEWAY_ERROR:
        # the gateway's code for an HTTP error: "too many request" is the robot's rate limit;
        # "Bad Request" is a body Feishu cannot read, which sending again will not change
        if "bad request" in message.lower():
            return SendStatus.PERMANENT, "Feishu could not read the request"
        return SendStatus.RETRY, "Feishu's rate limit (a robot takes 100 a minute, 5 a second)"
    if found == SIGNATURE_FAILED:
        return SendStatus.PERMANENT, (
            "the signature was refused: check the robot's secret in `key` and this machine's"
            " clock (Feishu takes a timestamp within an hour of its own)"
        )
    if found == IP_NOT_ALLOWED:
        return SendStatus.PERMANENT, "this machine's address is not on the robot's IP allow-list"
    if found == KEYWORD_MISSING:
        return SendStatus.PERMANENT, (
            "the text has none of the robot's keywords (its security settings): every message,"
            " every part of a split one included, must contain one"
        )
    return SendStatus.PERMANENT, "Feishu refused the message"


class FeishuBackend(RobotBackend):
    """A Feishu custom robot: `text` messages, or rich text (`post`) with `markdown=feishu`."""

    type_name = TYPE

    def __init__(
        self,
        name: str,
        url: str,
        caps: Capabilities,
        transport: Transport,
        *,
        post: bool,
        **kw: Any,
    ) -> None:
        super().__init__(name, url, caps, transport, limit=BODY_LIMIT, interval=PART_INTERVAL, **kw)
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

    def _answer(self, answer: Answer) -> SendResult:
        status, body = answer.status, answer.body
        said, wait = self._said(answer), self._wait(answer)
        found = _feishu_code(body)
        if found is None:
            return self._by_status(status, said, wait)
        if found == 0 and 200 <= status < 300:
            return SendResult.ok(f"HTTP {status}")
        message = body.get("msg") or body.get("StatusMessage") or ""
        verdict, why = _feishu_code_verdict(found, str(message))
        text = f"HTTP {status} with code {found}{said} ({why})"
        if verdict is SendStatus.RETRY:
            return SendResult.retry(text, wait)
        if status_decides(status):
            return self._by_status(status, f" with code {found}{said}", wait)
        return SendResult.permanent(text)


# -- building ------------------------------------------------------------------------------------


# What `sop backends` shows; `create` adjusts it to the options (max_length, markdown, rate).
CAPABILITIES = chat_capabilities(TYPE, max_length=None, unit=Unit.BYTES, mentions=False)


def create(
    config: BackendConfig,
    env: Mapping[str, str],
    *,
    clock: Clock = wall_clock,
    pause: Callable[[float], None] = time.sleep,
) -> FeishuBackend:
    """The `feishu-bot` entry point: url or token, `key` to sign, `markdown=feishu` for `post`."""
    check_options(config, CHAT_OPTIONS)
    caps = configured(CAPABILITIES, config, native=DIALECT, ceiling=BODY_LIMIT)
    url, token = robot_address(
        config, env, default_base=DEFAULT_BASE_URL, join=lambda base: base + HOOK_PATH
    )
    if token is None:  # a whole address: its last segment is the token (scrubbed from details)
        token = urlsplit(url).path.rstrip("/").rpartition("/")[2] or None
    settings = robot_settings(config, env)
    return FeishuBackend(
        config.name,
        url,
        caps,
        robot_transport(config, url, token, settings["secret"]),
        post=caps.markdown == DIALECT,
        clock=clock,
        pause=pause,
        **settings,
    )
