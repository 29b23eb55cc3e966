"""The `dingtalk-bot` backend: a DingTalk custom group robot (自定义机器人).

`POST {base_url}/robot/send?access_token=<token>` with a JSON body; when the robot signs
(加签), `timestamp` (milliseconds) and `sign` (URL-encoded base64 of HMAC-SHA256 keyed with the
secret, of `timestamp\\nsecret`) join the query. A member's message @-mentions them by the phone
in their attributes. The answer's `errcode` says what happened; the table of codes and classes
is in docs/backends/feishu-dingtalk.md. Fitting, parts and transport are `RobotBackend`'s
(`_robot.py`), shared with `feishu-bot`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._chat import CHAT_OPTIONS, chat_capabilities, configured
from ._common import Clock, check_options, option_bool, wall_clock
from ._http import Answer, Transport, code
from ._robot import (
    Body,
    Builder,
    RobotBackend,
    epoch_millis,
    robot_address,
    robot_settings,
    robot_transport,
    status_decides,
)
from ._text import Unit

TYPE = "dingtalk-bot"
DIALECT = "dingtalk"
DEFAULT_BASE_URL = "https://oapi.dingtalk.com"
SEND_PATH = "/robot/send?access_token="
# errcode 460101: "message too long, exceed 20000 bytes" / "请保持大小在 20000bytes 以内"
BODY_LIMIT = 20_000
SEND_TOO_FAST = 130101  # "send too fast, exceed 20 times per minute": the robot is throttled
THROTTLE_SECONDS = 600.0  # "如果超过20条，会限流10分钟"
SECURITY_REFUSED = 310000  # keywords not in content / sign not match / ip not in whitelist
TOKEN_INVALID = 300001  # "token is not exist"
TOO_LONG = 460101
BUSY = -1  # the platform's global "系统繁忙": try again later
# The attribute that holds a member's phone, and what DingTalk takes as one.
PHONE_ATTRIBUTE = "phone"
_PHONE = re.compile(r"\+?[0-9]{5,20}")


def dingtalk_sign(timestamp: int, secret: str) -> str:
    """DingTalk's signature, URL-encoded: HMAC-SHA256 keyed with the secret of `ts\\nsecret`."""
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return quote(base64.b64encode(digest).decode("ascii"), safe="")


# -- the text in DingTalk's markdown subset ------------------------------------------------------

_STRIKE = re.compile(r"~~(.+?)~~")
_CODE = re.compile(r"`([^`\n]+)`")


def dingtalk_markdown(text: str) -> str:
    """The rendered text in the markdown DingTalk's robots render.

    DingTalk shows headings, bold, italic, links, images, lists and quotes, but shows a single
    line break as nothing: every line becomes its own paragraph (blank lines collapse, as they
    would anyway). It has no strikethrough and no code: their marks are dropped, the text kept,
    and a fenced block's lines are kept as plain lines.
    """
    lines: list[str] = []
    fenced = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            line = _CODE.sub(r"\1", _STRIKE.sub(r"\1", line))
        if line.strip():
            lines.append(line.rstrip())
    return "\n\n".join(lines)


def phone(attributes: Mapping[str, object]) -> str | None:
    """The member's phone as DingTalk takes it in `atMobiles` (spaces and dashes removed), or
    None when there is none that looks like a number."""
    value = attributes.get(PHONE_ATTRIBUTE)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    number = re.sub(r"[\s-]", "", str(value))
    return number if _PHONE.fullmatch(number) else None


class DingTalkBackend(RobotBackend):
    """A DingTalk custom robot: `text` messages, or `markdown` with `markdown=dingtalk`."""

    type_name = TYPE

    def __init__(
        self,
        name: str,
        url: str,
        caps: Capabilities,
        transport: Transport,
        *,
        markdown: bool,
        at_all: bool,
        **kw: Any,
    ) -> None:
        super().__init__(name, url, caps, transport, limit=BODY_LIMIT, **kw)
        self.markdown = markdown
        self.at_all = at_all

    def _prepare(self, delivery: Delivery) -> tuple[str, Builder]:
        url = self._url
        if self._signing is not None:
            stamp = epoch_millis(self._clock())
            sign = dingtalk_sign(stamp, self._signing)
            url = f"{url}{'&' if '?' in url else '?'}timestamp={stamp}&sign={sign}"
        at: Body = {}
        number = phone(delivery.attributes) if delivery.audience == "member" else None
        if number is not None:
            # the number is not written into the text: a member who left the group would have
            # their phone shown to everyone in it; DingTalk notifies by `atMobiles` alone
            at["atMobiles"] = [number]
        if self.at_all and delivery.audience == "everyone":
            at["isAtAll"] = True
        mention = {"at": at} if at else {}
        title = delivery.title

        def build(part: str) -> Body:
            if self.markdown:
                content = {"title": title or "sop", "text": dingtalk_markdown(part)}
                return {"msgtype": "markdown", "markdown": content, **mention}
            return {"msgtype": "text", "text": {"content": part}, **mention}

        return url, build

    def _answer(self, answer: Answer) -> SendResult:
        status, body = answer.status, answer.body
        said, wait = self._said(answer), self._wait(answer)
        errcode = code(body.get("errcode")) if isinstance(body, dict) else None
        if errcode is None:
            return self._by_status(status, said, wait)
        if errcode == 0 and 200 <= status < 300:
            return SendResult.ok(f"HTTP {status}")
        text = f"HTTP {status} with errcode {errcode}{said}"
        if errcode == SEND_TOO_FAST:
            return SendResult.retry(
                f"{text} (DingTalk throttles a robot for 10 minutes after 20 a minute)",
                max(wait or 0.0, THROTTLE_SECONDS),
            )
        if errcode == BUSY:
            return SendResult.retry(f"{text} (DingTalk is busy)", wait)
        if status_decides(status):
            return self._by_status(status, f" with errcode {errcode}{said}", wait)
        return SendResult.permanent(f"{text} ({_why(errcode)})")


def _why(code: int) -> str:
    if code == SECURITY_REFUSED:
        return (
            "the robot's security settings refused it: the text must contain one of its keywords"
            " (every part of a split message too), the secret in `key` must be the robot's SEC…"
            " secret and this machine's clock right, and this machine's address on its IP list"
        )
    if code == TOKEN_INVALID:
        return "the access token is not a robot's: the robot was removed or the token is wrong"
    if code == TOO_LONG:
        return "the message is over DingTalk's 20,000-byte limit"
    return "DingTalk refused the message"


# What `sop backends` shows; `create` adjusts it to the options (max_length, markdown, rate).
CAPABILITIES = chat_capabilities(TYPE, max_length=None, unit=Unit.BYTES, mentions=True)


def create(
    config: BackendConfig,
    env: Mapping[str, str],
    *,
    clock: Clock = wall_clock,
    pause: Callable[[float], None] = time.sleep,
) -> DingTalkBackend:
    """The `dingtalk-bot` entry point: url or token, `key` (SEC…) to sign, `markdown=dingtalk`,
    `at_all` to @ everyone on posts to the whole group."""
    check_options(config, (*CHAT_OPTIONS, "at_all"))
    caps = configured(CAPABILITIES, config, native=DIALECT, ceiling=BODY_LIMIT)
    at_all = option_bool(config, "at_all", False)
    url, token = robot_address(
        config, env, default_base=DEFAULT_BASE_URL, join=lambda base: base + SEND_PATH
    )
    if token is None:  # a whole address: the token is its access_token (scrubbed from details)
        token = next(iter(parse_qs(urlsplit(url).query).get("access_token", [])), None)
    settings = robot_settings(config, env)
    return DingTalkBackend(
        config.name,
        url,
        caps,
        robot_transport(config, url, token, settings["secret"]),
        markdown=caps.markdown == DIALECT,
        at_all=at_all,
        clock=clock,
        pause=pause,
        **settings,
    )
