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
import json
import math
import re
import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import requests
from requests import exceptions as rexc
from urllib3 import exceptions as u3exc

from ...core.textsafe import terminal
from ...core.version import version
from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._common import (
    BackendError,
    Clock,
    capabilities,
    check_fits,
    check_options,
    encode,
    option_bool,
    option_seconds,
    option_str,
    record,
    redact,
    resolve_secret,
    wall_clock,
)

DEFAULT_SECRET_ENV = "SOP_WEBHOOK_SECRET"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# Codes in an error body that mean "too fast, try later": WeCom 45009 (api freq out of limit),
# DingTalk 130101 (send too fast), Feishu 11232 (tenant message rate) and 230020 (per chat),
# and 429 itself, which some platforms repeat in the body.
RATE_LIMIT_CODES = frozenset({429, 45009, 130101, 11232, 230020})
MAX_RETRY_AFTER = 86_400.0  # a longer wait than a day is the runner's retry policy to decide
BODY_LIMIT = 64 * 1024  # what is read of an answer: enough for any error body, bounded memory
DETAIL_LIMIT = 200
# What an Idempotency-Key header keeps as it is; anything else (a member id with a newline or
# non-ASCII) is percent-encoded, the same way on every attempt.
_KEY_SAFE = "/:@-._~!$&'()*+,;="
_MESSAGE_FIELDS = ("errmsg", "msg", "message", "description", "error")
_ID_FIELDS = ("id", "message_id", "msgid")


class _BodyError(NamedTuple):
    what: str  # e.g. "errcode 45009"
    retryable: bool


class WebhookBackend:
    """POSTs deliveries; idempotent only when the operator says the receiver dedupes by key."""

    def __init__(
        self,
        name: str,
        url: str,
        caps: Capabilities,
        *,
        secret: str | None = None,
        token: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        clock: Clock = wall_clock,
    ) -> None:
        self.name = name
        self.capabilities = caps
        self._url = url
        parts = urlsplit(url)
        self.origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # no credentials
        self._secret = secret.encode("utf-8") if secret else None
        self._token = token
        self._timeout = (connect_timeout, read_timeout)
        self._clock = clock
        # A webhook URL is a credential (Slack, Discord, WeCom carry the token in it), and an
        # answer may echo it: every part of it is scrubbed from what `send` returns.
        self._hidden = tuple(
            s
            for s in (url, parts.path if len(parts.path) > 1 else "", parts.query, secret, token)
            if s
        )
        self._session: requests.Session | None = requests.Session()

    def __repr__(self) -> str:
        return (
            f"WebhookBackend(name={self.name!r}, origin={self.origin!r},"
            f" idempotent={self.capabilities.idempotent})"
        )

    def close(self) -> None:
        """Close the connection pool (twice is harmless)."""
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def send(self, delivery: Delivery) -> SendResult:
        """POST `delivery` and classify the answer (see the module's table)."""
        if self._session is None:
            raise RuntimeError(f"webhook backend {self.name!r} is closed")
        unfit = check_fits(delivery, self.capabilities)
        if unfit is not None:
            return unfit
        body = encode(record(delivery, self.name, self._clock()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": quote(delivery.key, safe=_KEY_SAFE),
            "User-Agent": f"sop/{version()}",
        }
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Sop-Signature"] = f"sha256={digest}"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        if not self.capabilities.idempotent:
            # A pooled connection the server already closed fails like a reset after sending,
            # which would make a certainly-undelivered request "uncertain": use a fresh one.
            headers["Connection"] = "close"
        try:
            response = self._session.post(
                self._url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,  # requests would turn a redirected POST into a GET
                stream=True,  # the answer is read bounded, below
            )
        except rexc.RequestException as e:
            return self._failed(e)
        try:
            raw, complete = self._read(response)
        finally:
            response.close()
        return self._classify(response.status_code, response.headers, raw, complete)

    # -- failures before an answer --------------------------------------------------------------

    def _failed(self, e: rexc.RequestException) -> SendResult:
        where = self.origin
        connect, read = self._timeout
        if isinstance(e, rexc.ConnectTimeout):  # before the ConnectionError it also is
            return SendResult.retry(f"could not connect to {where} within {connect:g} s")
        if isinstance(e, rexc.ReadTimeout):
            return SendResult.uncertain(
                f"no answer from {where} within {read:g} s after the request was sent"
            )
        if isinstance(e, rexc.SSLError):  # the handshake precedes the request
            return SendResult.retry(f"TLS with {where} failed (certificate or protocol)")
        if isinstance(e, rexc.ConnectionError):
            why = _not_connected(e)
            if why is not None:
                return SendResult.retry(f"could not connect to {where}: {why}")
            return SendResult.uncertain(
                f"the connection to {where} broke after the request was sent"
            )
        if isinstance(e, rexc.InvalidURL | rexc.MissingSchema | rexc.InvalidSchema):
            return SendResult.permanent(f"the webhook URL for {where} is not usable")
        if isinstance(e, rexc.InvalidHeader):
            return SendResult.permanent("a header could not be sent (the token holds a newline?)")
        # str(e) is not shown: requests quotes the URL, token and all, in its messages
        return SendResult.uncertain(f"{type(e).__name__} while sending to {where}")

    # -- the answer -----------------------------------------------------------------------------

    def _read(self, response: requests.Response) -> tuple[bytes, bool]:
        """At most BODY_LIMIT bytes of the answer, and whether it was read without error."""
        chunks: list[bytes] = []
        total = 0
        deadline = time.monotonic() + self._timeout[1]  # a body dripped slowly is bounded too
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

    def _classify(
        self, status: int, headers: Mapping[str, str], raw: bytes, complete: bool
    ) -> SendResult:
        body = _json(raw)
        said = self._said(raw, body)
        wait = self._retry_after(headers, body)
        if 200 <= status < 300:
            if not complete:
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
        if status in (408, 425, 429, 503):  # timeout, too early, too many, unavailable
            return SendResult.retry(f"HTTP {status}{said}", wait)
        if status == 504:  # a gateway gave up waiting; the receiver behind it may have acted
            return SendResult.uncertain(f"HTTP 504: the gateway timed out{said}")
        if 500 <= status < 600:
            return SendResult.retry(f"HTTP {status}{said}", wait)
        if 400 <= status < 500:
            error = _body_error(body)
            if error is not None and error.retryable:  # Feishu answers its rate limit with 400
                return SendResult.retry(f"HTTP {status} with {error.what}{said}", wait)
            return SendResult.permanent(f"HTTP {status}{said}")
        if 300 <= status < 400:
            return SendResult.permanent(
                f"HTTP {status}: the webhook redirects; configure the URL it redirects to"
            )
        return SendResult.permanent(f"HTTP {status}: not an answer this backend understands")

    def _said(self, raw: bytes, body: Any) -> str:
        """`: <what the receiver said>`, short, one line, terminal-safe, without secrets."""
        text = ""
        if isinstance(body, dict):
            text = next((body[f] for f in _MESSAGE_FIELDS if isinstance(body.get(f), str)), "")
        if not text and body is None:
            text = raw.decode("utf-8", "replace")
        text = redact(" ".join(text.split()), self._hidden)
        if len(text) > DETAIL_LIMIT:
            text = text[: DETAIL_LIMIT - 1] + "…"
        return f": {terminal(text)}" if text else ""

    def _retry_after(self, headers: Mapping[str, str], body: Any) -> float | None:
        """The wait the receiver asked for: `Retry-After` (seconds or an HTTP date), else the
        JSON body's `retry_after` (top level, or Telegram's `parameters`)."""
        wait: float | None = None
        header = headers.get("Retry-After")
        if header:
            header = header.strip()
            if re.fullmatch(r"[0-9]{1,10}(\.[0-9]+)?", header):
                wait = float(header)
            else:
                wait = self._until(header, headers.get("Date"))
        if wait is None and isinstance(body, dict):
            params = body.get("parameters")
            for value in (
                body.get("retry_after"),
                params.get("retry_after") if isinstance(params, dict) else None,
            ):
                if isinstance(value, int | float) and not isinstance(value, bool):
                    wait = float(value)
                    break
        if wait is None or not math.isfinite(wait):
            return None
        return min(max(wait, 0.0), MAX_RETRY_AFTER)

    def _until(self, date_text: str, server_date: str | None) -> float | None:
        """Seconds until an HTTP date, measured against the answer's own `Date` when it has
        one (so a skewed clock on either side does not stretch or cut the wait)."""
        when = _http_date(date_text)
        if when is None:
            return None
        now = _http_date(server_date) if server_date else None
        return (when - (now or self._clock())).total_seconds()


def _http_date(text: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else None  # "-0000": no zone, not an HTTP date


def _not_connected(e: rexc.ConnectionError) -> str | None:
    """Why no connection was made (so nothing was sent), or None when it broke after sending."""
    reason: Any = e.args[0] if e.args else None
    if isinstance(reason, u3exc.MaxRetryError):
        reason = reason.reason
    if isinstance(reason, u3exc.NameResolutionError):
        return "the host name does not resolve"
    if isinstance(reason, u3exc.NewConnectionError):
        return "connection refused or unreachable"
    if isinstance(reason, u3exc.ProxyError | u3exc.ConnectTimeoutError):
        return "no connection (proxy or timeout)"
    return None


def _json(raw: bytes) -> Any:
    if not raw.lstrip().startswith((b"{", b"[")):
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,12}", value.strip()):
        return int(value)
    return None


def _body_error(body: Any) -> _BodyError | None:
    """The error a platform reports inside a 2xx (or 4xx) JSON body, or None."""
    if not isinstance(body, dict):
        return None
    retryable = body.get("retryable") is True
    for field in ("errcode", "code"):
        code = _code(body.get(field))
        # some receivers echo the HTTP status as `code`: 200 there is a success, not an error
        if code and not (field == "code" and 200 <= code < 300):
            return _BodyError(f"{field} {code}", retryable or code in RATE_LIMIT_CODES)
    if body.get("ok") is False:
        code = _code(body.get("error_code"))  # Telegram's spelling
        what = f"error_code {code}" if code else '"ok": false'
        return _BodyError(what, retryable or code in RATE_LIMIT_CODES)
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
    check_options(config, ("idempotent", "secret_env", "connect_timeout", "read_timeout"))
    if not config.target:
        raise BackendError(
            f'backend "{name}" (webhook) needs a URL: url: "${{env:NAME}}" in the playbook or'
            f" --backend '{name}=webhook:URL'"
        )
    url = resolve_secret(config.target, env, what=f'backend "{name}": url')
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 — raises ValueError for a port that is not a number
    except ValueError:
        usable = False
    if not usable:  # the URL is not quoted: it may be the secret
        raise BackendError(f'backend "{name}": url must be an http:// or https:// URL')
    return WebhookBackend(
        name,
        url,
        capabilities(config, idempotent=option_bool(config, "idempotent", False)),
        secret=_signing_secret(config, env),
        token=(
            resolve_secret(str(config.options["token"]), env, what=f'backend "{name}": token')
            if config.options.get("token")
            else None
        ),
        connect_timeout=option_seconds(config, "connect_timeout", CONNECT_TIMEOUT),
        read_timeout=option_seconds(config, "read_timeout", READ_TIMEOUT),
    )


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
