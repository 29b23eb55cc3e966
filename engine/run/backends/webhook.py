"""The `webhook` backend: each delivery as a signed JSON POST, the answer classified.

The body is the delivery as `jsonl` writes it (`_common.record`). Headers: `Idempotency-Key`,
`Content-Type: application/json`, `X-Sop-Signature: sha256=<hex HMAC of the exact body>` when a
secret is configured, `Authorization: Bearer <token>` when a token is. The classification table
is in docs/backends.md; its rule: `retry` only when the request certainly had no effect or the
receiver asked for it again, `uncertain` whenever it may have arrived.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

from ...core.textsafe import terminal
from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._common import (
    DETAIL_LIMIT,
    BackendError,
    Clock,
    capabilities,
    check_fits,
    check_options,
    encode,
    option_bool,
    option_str,
    record,
    resolve_secret,
    wall_clock,
)
from ._http import (
    RETRY_STATUSES,
    TIMEOUT_OPTIONS,
    Answer,
    HttpBackend,
    Transport,
    code,
    http_url,
    message_of,
    origin_of,
    retry_after,
    seconds,
    status_failure,
    timeouts,
)

DEFAULT_SECRET_ENV = "SOP_WEBHOOK_SECRET"
# Codes in an error body that mean "too fast, try later": WeCom 45009 (api freq out of limit),
# DingTalk 130101 (send too fast), Feishu 11232 (tenant message rate) and 230020 (per chat),
# and 429 itself, which some platforms repeat in the body.
RATE_LIMIT_CODES = frozenset({429, 45009, 130101, 11232, 230020})
REDIRECT = "the webhook redirects; configure the URL it redirects to"
# What an Idempotency-Key header keeps as it is; anything else (a member id with a newline or
# non-ASCII) is percent-encoded, the same way on every attempt.
_KEY_SAFE = "/:@-._~!$&'()*+,;="
_ID_FIELDS = ("id", "message_id", "msgid")


class _BodyError(NamedTuple):
    what: str  # e.g. "errcode 45009"
    retryable: bool


class WebhookBackend(HttpBackend):
    """POSTs deliveries; idempotent only when the operator says the receiver dedupes by key."""

    type_name = "webhook"

    def __init__(
        self,
        name: str,
        url: str,
        caps: Capabilities,
        transport: Transport,
        *,
        secret: str | None = None,
        token: str | None = None,
        clock: Clock = wall_clock,
    ) -> None:
        super().__init__(name, url, caps, transport)
        self._secret = secret.encode("utf-8") if secret else None
        self._token = token
        self._clock = clock

    def _shown(self) -> dict[str, object]:
        return {"idempotent": self.capabilities.idempotent}

    def send(self, delivery: Delivery) -> SendResult:
        """POST `delivery` and classify the answer (see the module's table)."""
        self._check_open()
        unfit = check_fits(delivery, self.capabilities)
        if unfit is not None:
            return unfit
        body = encode(record(delivery, self.name, self._clock()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": quote(delivery.key, safe=_KEY_SAFE),
        }
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Sop-Signature"] = f"sha256={digest}"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        answer = self._transport.request("POST", self._url, body=body, headers=headers)
        if isinstance(answer, SendResult):
            return answer
        return self._classify(answer)

    def _classify(self, answer: Answer) -> SendResult:
        status, body = answer.status, answer.body
        said = self._transport.said(message_of(answer))
        wait = retry_after(answer.headers, self._clock)
        if wait is None:
            wait = _body_wait(body)
        if 200 <= status < 300:
            if not answer.complete:
                return SendResult.uncertain(f"HTTP {status}, but the answer could not be read")
            error = _body_error(body)
            if error is None:
                return SendResult.ok(f"HTTP {status}", remote_id=_remote_id(body))
            text = f"HTTP {status} with {error.what}{said}"
            if error.retryable:
                return SendResult.retry(text, wait)
            return SendResult.permanent(text)
        if status == 409:  # the Idempotency-Key is always sent: the receiver has this one
            return SendResult.ok(f"HTTP 409: the receiver already has this key{said}")
        error = _body_error(body)
        if 400 <= status < 500 and status not in RETRY_STATUSES and error and error.retryable:
            # a rate-limit code in another 4xx (Feishu answers its rate limit with 400)
            return SendResult.retry(f"HTTP {status} with {error.what}{said}", wait)
        return status_failure(status, said, wait, redirect=REDIRECT)


def _body_wait(body: Any) -> float | None:
    """The JSON body's `retry_after` (top level, or Telegram's `parameters`)."""
    if not isinstance(body, dict):
        return None
    params = body.get("parameters")
    for value in (
        body.get("retry_after"),
        params.get("retry_after") if isinstance(params, dict) else None,
    ):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return seconds(value)
    return None


def _body_error(body: Any) -> _BodyError | None:
    """The error a platform reports inside a 2xx (or 4xx) JSON body, or None."""
    if not isinstance(body, dict):
        return None
    retryable = body.get("retryable") is True
    for field in ("errcode", "code"):
        found = code(body.get(field))
        # some receivers echo the HTTP status as `code`: 200 there is a success, not an error
        if found and not (field == "code" and 200 <= found < 300):
            return _BodyError(f"{field} {found}", retryable or found in RATE_LIMIT_CODES)
    if body.get("ok") is False:
        found = code(body.get("error_code"))  # Telegram's spelling
        what = f"error_code {found}" if found else '"ok": false'
        return _BodyError(what, retryable or found in RATE_LIMIT_CODES)
    if retryable:
        return _BodyError('"retryable": true', True)
    return None


def _remote_id(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for field in _ID_FIELDS:
        value = body.get(field)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return terminal(str(value))[:DETAIL_LIMIT]
    return None


# What it can do before options (`sop backends`)
CAPABILITIES = Capabilities(
    idempotent=False
)  # idempotent=true when the receiver dedupes by Idempotency-Key


def create(config: BackendConfig, env: Mapping[str, str]) -> WebhookBackend:
    """The `webhook` entry point: the target is the URL, a literal or `${env:NAME}`."""
    name = config.name
    check_options(config, ("idempotent", "secret_env", *TIMEOUT_OPTIONS))
    if not config.target:
        raise BackendError(
            f'backend "{name}" (webhook) needs a URL: url: "${{env:NAME}}" in the playbook or'
            f" --backend '{name}=webhook:URL'"
        )
    # the URL is never quoted in an error: it may be the secret
    url = http_url(name, "url", resolve_secret(config.target, env, what=f'backend "{name}": url'))
    caps = capabilities(config, idempotent=option_bool(config, "idempotent", False))
    secret = _signing_secret(config, env)
    token = (
        resolve_secret(str(config.options["token"]), env, what=f'backend "{name}": token')
        if config.options.get("token")
        else None
    )
    limits = timeouts(config)
    path, query = urlsplit(url).path, urlsplit(url).query
    # A webhook URL is a credential (Slack, Discord, WeCom carry the token in it), and an answer
    # may echo it: every part of it is scrubbed from details and urllib3's log. Keep-alive only
    # when the receiver dedupes: a pooled connection the server closed fails like a reset after
    # sending. Opened last, once nothing else can fail.
    hidden = (url, path if len(path) > 1 else "", query, secret or "", token or "")
    transport = Transport(origin_of(url), hidden, keep_alive=caps.idempotent, **limits)
    return WebhookBackend(name, url, caps, transport, secret=secret, token=token)


def _signing_secret(config: BackendConfig, env: Mapping[str, str]) -> str | None:
    """The HMAC secret: option `secret_env`, else the playbook's `key`, else SOP_WEBHOOK_SECRET."""
    var = option_str(config, "secret_env")
    if var is not None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            raise BackendError(f'backend "{config.name}": secret_env must name a variable')
        value = env.get(var)
        if not value:
            state = "is not set" if value is None else "is empty"
            raise BackendError(
                f'backend "{config.name}": secret_env: environment variable {var} {state}'
            )
        return value
    key = config.options.get("key")
    if key:
        return resolve_secret(str(key), env, what=f'backend "{config.name}": key')
    return env.get(DEFAULT_SECRET_ENV) or None
