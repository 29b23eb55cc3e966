"""What custom group robots (`feishu-bot`, `dingtalk-bot`) share: the address, the settings, and a
delivery fitted into the platform's request-size limit and posted in parts.

A custom robot is a webhook bound to one group that takes a JSON body of at most `limit` bytes,
signature and structure included. `RobotBackend` fits the text with the one length policy
(`_text.fit`, UTF-8 bytes) until every part's whole body fits, posts the parts with
`_chat.send_parts`, and leaves to its subclass how a part becomes a body (`_prepare`) and what
the platform's answer means (`_answer`). The transport is `_http.Transport`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._chat import overflow_policy, send_parts, unsendable
from ._common import (
    BackendError,
    Clock,
    encode,
    resolve_secret,
    wall_clock,
)
from ._http import (
    MAX_RETRY_AFTER,
    Answer,
    HttpBackend,
    Transport,
    base_url_option,
    http_url,
    message_of,
    origin_of,
    retry_after,
    seconds,
    status_failure,
    timeouts,
)
from ._text import Policy, Unit, fit

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS = re.compile(r"[0-9]{1,10}")
REDIRECT = "the robot's address redirects; configure the address it redirects to"

Body = dict[str, Any]
Builder = Callable[[str], Body]  # the JSON body that carries one part of the text


def epoch_seconds(when: datetime) -> int:
    """Whole seconds since 1970 (exact: no float on the way)."""
    return (when - _EPOCH) // timedelta(seconds=1)


def epoch_millis(when: datetime) -> int:
    """Whole milliseconds since 1970 (exact)."""
    return (when - _EPOCH) // timedelta(milliseconds=1)


class _Unfit(Exception):
    """The text cannot be fitted into the request-size limit."""


class RobotBackend(HttpBackend):
    """A custom group robot: each delivery fitted into the request limit and posted in parts.

    Not idempotent: no custom robot drops a repeated message.
    """

    type_name = "robot"

    def __init__(
        self,
        name: str,
        url: str,
        caps: Capabilities,
        transport: Transport,
        *,
        secret: str | None,
        policy: Policy,
        limit: int,
        clock: Clock = wall_clock,
        pause: Callable[[float], None] = time.sleep,
        interval: float = 0.0,
    ) -> None:
        super().__init__(name, url, caps, transport)
        self.policy = policy
        self.limit = limit  # bytes of one request body
        self._signing = secret
        self._clock = clock
        self._pause = pause
        self._interval = interval

    def _shown(self) -> dict[str, object]:
        return {"signed": self._signing is not None, "policy": self.policy.value}

    # -- what a subclass says ----------------------------------------------------------------

    def _prepare(self, delivery: Delivery) -> tuple[str, Builder]:
        """The URL to post to and how a part of the text becomes the JSON body (signed)."""
        raise NotImplementedError

    def _answer(self, answer: Answer) -> SendResult:
        """What the platform's answer to one part means."""
        raise NotImplementedError

    # -- sending -------------------------------------------------------------------------------

    def send(self, delivery: Delivery) -> SendResult:
        """Post `delivery` in as many parts as the limit needs, in order, and classify."""
        self._check_open()
        empty = "the rendered text is empty: there is nothing to post"
        unfit = unsendable(delivery, self.capabilities, empty=empty)
        if unfit is not None:
            return unfit
        url, build = self._prepare(delivery)
        try:
            bodies = self._fit(delivery.text, build)
        except _Unfit:
            return SendResult.permanent(
                f"the message cannot be made to fit the platform's {self.limit}-byte request"
                " limit (the title or mentions alone are too long)"
            )
        return send_parts(
            bodies, lambda _i, body: self._post(url, body), self._pause, interval=self._interval
        )

    def cost(self, delivery: Delivery) -> int:
        """How many messages `delivery` becomes (one per part): the runner takes as many rate
        tokens."""
        try:
            return len(self._fit(delivery.text, self._prepare(delivery)[1]))
        except _Unfit:
            return 1  # refused when sent; one token is what the refusal costs

    def _fit(self, text: str, build: Builder) -> list[bytes]:
        """The bodies for `text` under the limit: fitted in bytes of text, then checked whole.

        The text's share is the limit less the rest of the body (and at most `max_length`); JSON
        escapes and the rich-text structure make a part's body larger than its text (a `post` of
        short linked lines can be twice its text), so a part that still overflows shrinks the
        share in proportion and the text is fitted again.
        """
        budget = self.limit - len(encode(build("")))
        if self.capabilities.max_length is not None:
            budget = min(budget, self.capabilities.max_length)
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
        headers = {"Content-Type": "application/json; charset=utf-8"}
        answer = self._transport.request("POST", url, body=body, headers=headers)
        if isinstance(answer, SendResult):
            return answer
        return self._answer(answer)

    # -- the answer: what every robot shares ---------------------------------------------------

    def _said(self, answer: Answer) -> str:
        """`: <what the platform said>` (its message field, or the body when not JSON)."""
        return self._transport.said(message_of(answer))

    def _wait(self, answer: Answer) -> float | None:
        """`x-ogw-ratelimit-reset` (Feishu's gateway, seconds), else `Retry-After`, else a JSON
        `retry_after`."""
        reset = (answer.headers.get("x-ogw-ratelimit-reset") or "").strip()
        if _SECONDS.fullmatch(reset):
            return min(float(reset), MAX_RETRY_AFTER)
        wait = retry_after(answer.headers, self._clock)
        if wait is None and isinstance(answer.body, dict):
            wait = seconds(answer.body.get("retry_after"))
        return wait

    def _by_status(self, status: int, said: str, wait: float | None) -> SendResult:
        """An answer that carries no platform code: the HTTP status decides (`status_failure`,
        except that a 2xx the platform did not explain may or may not have posted)."""
        if 200 <= status < 300:
            return SendResult.uncertain(
                f"HTTP {status}, but the answer is not the platform's (it may have been"
                f" posted){said}"
            )
        return status_failure(status, said, wait, redirect=REDIRECT)


def status_decides(status: int) -> bool:
    """A timeout, "too many" or a server error: the status says more than a code beside it."""
    return status in (408, 425, 429) or status >= 500


# -- building ------------------------------------------------------------------------------------


def robot_address(
    config: BackendConfig, env: Mapping[str, str], *, default_base: str, join: Callable[[str], str]
) -> tuple[str, str | None]:
    """The robot's URL and its token: the whole `url`, or `token` joined to `base_url`.

    Either may be `${env:NAME}`; both given is a mistake, as is `base_url` beside a whole URL.
    `base_url` follows `_http.base_url_option` (the token goes there).
    """
    name, type_name = config.name, config.type
    token_ref = config.options.get("token")
    if config.target and token_ref:
        raise BackendError(f'backend "{name}" ({type_name}): give url or token, not both')
    if config.target:
        if config.options.get("base_url") is not None:
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
    base = base_url_option(config, env) or default_base
    return join(base) + quote(token, safe=""), token


def robot_settings(config: BackendConfig, env: Mapping[str, str]) -> dict[str, Any]:
    """What every robot reads the same way: the secret (`key`) and the policy."""
    key = config.options.get("key")
    return {
        "secret": (
            resolve_secret(str(key), env, what=f'backend "{config.name}": key') if key else None
        ),
        "policy": overflow_policy(config),
    }


def robot_transport(
    config: BackendConfig, url: str, token: str | None, secret: str | None
) -> Transport:
    """The robot's transport: the URL, the token and the secret scrubbed from what it says and
    from urllib3's log. Opened last, once nothing else can fail."""
    return Transport(origin_of(url), (url, token or "", secret or ""), **timeouts(config))
