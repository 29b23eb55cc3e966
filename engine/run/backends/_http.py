"""The HTTP exchange every HTTP backend shares: one request, its failures and its status classified.

A `Transport` is one backend's connection pool to one origin: a request with bounded time and a
bounded answer (`ANSWER_LIMIT`, read within the read timeout), no redirects followed, a fresh
connection for a request that changes something (unless the receiver dedupes), failures before an
answer classified (`retry` when nothing was sent, `uncertain` when it may have arrived), the answer
parsed as JSON, and the backend's secrets kept out of what it says and out of urllib3's log.

`status_failure` is the one table for a status that is not a success; a platform's own table (the
codes in its answers) decides first. `retry_after` reads the wait a receiver asks for. The
`base_url` option's rule (the playbook may not send a token elsewhere) is `base_url_option`.

urllib3 logs every request line at DEBUG, path and query included, and tokens live there
(`?key=`, `?access_token=`, `/bot<token>/`, `/webhooks/<id>/<token>`, `/hook/<token>`): one filter,
`SCRUB`, sits on urllib3's loggers from the moment this module is imported, and every open
transport's secrets are held in it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple, TypedDict
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from requests import exceptions as rexc
from urllib3 import exceptions as u3exc

from ...core.net import is_loopback as loopback
from ...core.version import version
from ..ports import BackendConfig, Capabilities, SendResult
from ._common import (
    BackendError,
    Clock,
    OperatorText,
    encode,
    env_reference,
    option_seconds,
    option_str,
    redact,
    resolve_secret,
    said,
    wall_clock,
)

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
ANSWER_LIMIT = 64 * 1024  # what is read of an answer: enough for any error body, bounded memory
MAX_RETRY_AFTER = 86_400.0  # a longer wait than a day is the runner's retry policy to decide
# Statuses that say "not now, later": timeout, too early, too many, unavailable.
RETRY_STATUSES = frozenset({408, 425, 429, 503})


# -- urllib3's log ------------------------------------------------------------------------------


class LogScrub(logging.Filter):
    """Replaces the open transports' secrets by `***` in urllib3's log records.

    A logger's filters see only the records logged on that logger, so the filter sits on each
    urllib3 logger that quotes a URL. Secrets are counted (two backends may share one), held while
    a transport is open and released when it closes or is collected.
    """

    LOGGERS = (
        "urllib3.connectionpool",
        "urllib3.connection",
        "urllib3.poolmanager",
        "urllib3.util.retry",
        "urllib3.response",
    )

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[str, int] = {}  # secret -> how many open transports hold it
        self._lock = threading.Lock()
        # what `filter` reads: replaced whole, never changed in place, so a record logged by
        # another thread while a backend opens or closes sees one consistent set
        self._current: tuple[str, ...] = ()

    def install(self) -> None:
        """Attach to urllib3's loggers (twice is harmless)."""
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            if self not in logger.filters:
                logger.addFilter(self)

    @property
    def secrets(self) -> dict[str, int]:
        """A copy of what is held, with its count (for tests)."""
        with self._lock:
            return dict(self._held)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._current
        if secrets:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record is the logging module's to report, not ours
                return True
            clean = redact(message, secrets)
            if clean != message:
                record.msg, record.args = clean, None
        return True

    def hold(self, secrets: Iterable[str]) -> None:
        with self._lock:
            for s in secrets:
                self._held[s] = self._held.get(s, 0) + 1
            self._current = tuple(sorted(self._held, key=len, reverse=True))

    def release(self, secrets: Iterable[str]) -> None:
        with self._lock:
            for s in secrets:
                left = self._held.get(s, 0) - 1
                if left > 0:
                    self._held[s] = left
                else:
                    self._held.pop(s, None)
            self._current = tuple(sorted(self._held, key=len, reverse=True))


SCRUB = LogScrub()
SCRUB.install()


def variants(secrets: Iterable[str]) -> tuple[str, ...]:
    """Each secret as it may be quoted: as it is and percent-encoded (a URL in a log line or an
    answer carries the encoded form), longest first, no empty one."""
    found = {v for s in secrets if s for v in (s, quote(s, safe=""), quote(s))}
    return tuple(sorted(found, key=len, reverse=True))


# -- the exchange -------------------------------------------------------------------------------


class Answer(NamedTuple):
    """A platform's HTTP answer, read bounded."""

    status: int
    headers: Mapping[str, str]
    raw: bytes
    complete: bool  # the body was read whole (or up to ANSWER_LIMIT) without error
    body: Any  # the body as JSON, or None

    @property
    def text(self) -> str:
        """The body as text (for platforms that answer in plain text)."""
        return self.raw.decode("utf-8", "replace")


class Transport:
    """One backend's requests to one origin (see the module's docstring)."""

    def __init__(
        self,
        origin: str,
        secrets: Iterable[str],
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        keep_alive: bool = False,
    ) -> None:
        self.origin = origin  # scheme://host[:port]: what details name
        self.timeout = (connect_timeout, read_timeout)
        # A pooled connection the server already closed fails like a reset after sending, which
        # would make a certainly-undelivered request "uncertain": a request with an effect goes
        # on a fresh connection, unless the receiver dedupes (then a resend is harmless).
        self._keep_alive = keep_alive
        self._hidden: list[str] = []  # shared with the finalizer: released even if never closed
        self._release = weakref.finalize(self, SCRUB.release, self._hidden)
        self._session: requests.Session | None = requests.Session()
        self.hide(*secrets)

    def __repr__(self) -> str:
        return f"Transport(origin={self.origin!r})"

    @property
    def closed(self) -> bool:
        return self._session is None

    @property
    def hidden(self) -> tuple[str, ...]:
        """The secrets (and their quoted forms) scrubbed from what this transport says."""
        return tuple(self._hidden)

    def hide(self, *secrets: str) -> None:
        """Scrub `secrets` too, from now on (an access token fetched later)."""
        new = [v for v in variants(secrets) if v not in self._hidden]
        self._hidden.extend(new)
        self._hidden.sort(key=len, reverse=True)
        if self._session is not None:  # once closed, the log filter holds none of them
            SCRUB.hold(new)

    def forget(self, *secrets: str) -> None:
        """Stop scrubbing `secrets` (an access token long replaced)."""
        gone = [v for v in variants(secrets) if v in self._hidden]
        for v in gone:
            self._hidden.remove(v)
        if self._session is not None:
            SCRUB.release(gone)

    def close(self) -> None:
        """Close the connection pool and release the secrets from the log filter (twice is
        harmless; the secrets still redact what `said` quotes)."""
        session, self._session = self._session, None
        if session is not None:
            session.close()
            self._release()

    def said(self, text: object) -> str:
        """`: <what the platform said>`, one line, bounded, terminal-safe, without secrets."""
        return said(text, self._hidden)

    def post_json(
        self, url: str, payload: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> Answer | SendResult:
        """POST `payload` as JSON (`_common.encode`) to `url`."""
        merged = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return self.request("POST", url, body=encode(payload), headers=merged)

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        effect: bool = True,
    ) -> Answer | SendResult:
        """One request: the answer, or how the attempt failed before one. `effect`: whether the
        call changes anything at the receiver (a send does; a token or status read does not, so
        a timeout after sending it is `retry`, not `uncertain`)."""
        if self._session is None:
            raise RuntimeError(f"the connection to {self.origin} is closed")
        sent = {"User-Agent": f"sop/{version()}"}
        if effect and not self._keep_alive:
            sent["Connection"] = "close"
        sent.update(headers or {})
        try:
            response = self._session.request(
                method,
                url,
                params=params,
                data=body,
                headers=sent,
                timeout=self.timeout,
                allow_redirects=False,  # requests would turn a redirected POST into a GET
                stream=True,  # the answer is read bounded, below
            )
        except rexc.RequestException as e:
            return self._failed(e, effect)
        try:
            raw, complete = self._read(response)
        finally:
            response.close()
        return Answer(response.status_code, response.headers, raw, complete, parse_json(raw))

    def _failed(self, e: rexc.RequestException, effect: bool) -> SendResult:
        where = self.origin
        connect, read = self.timeout
        unsure = SendResult.uncertain if effect else SendResult.retry
        if isinstance(e, rexc.ConnectTimeout):  # before the ConnectionError it also is
            return SendResult.retry(f"could not connect to {where} within {connect:g} s")
        if isinstance(e, rexc.ReadTimeout):
            after = " after the request was sent" if effect else ""
            return unsure(f"no answer from {where} within {read:g} s{after}")
        if isinstance(e, rexc.SSLError):  # the handshake precedes the request
            return SendResult.retry(f"TLS with {where} failed (certificate or protocol)")
        if isinstance(e, rexc.ConnectionError):
            why = not_connected(e)
            if why is not None:
                return SendResult.retry(f"could not connect to {where}: {why}")
            return unsure(f"the connection to {where} broke after the request was sent")
        if isinstance(e, rexc.InvalidURL | rexc.MissingSchema | rexc.InvalidSchema):
            return SendResult.permanent(f"the URL for {where} is not usable")
        if isinstance(e, rexc.InvalidHeader):
            return SendResult.permanent("a header could not be sent (the token holds a newline?)")
        # str(e) is never shown: requests quotes the URL, token and all, in its messages
        return unsure(f"{type(e).__name__} while sending to {where}")

    def _read(self, response: requests.Response) -> tuple[bytes, bool]:
        """At most ANSWER_LIMIT bytes of the answer, and whether it was read without error."""
        chunks: list[bytes] = []
        total = 0
        deadline = time.monotonic() + self.timeout[1]  # a body dripped slowly is bounded too
        try:
            for chunk in response.iter_content(8192):
                chunks.append(chunk)
                total += len(chunk)
                if total >= ANSWER_LIMIT:
                    break
                if time.monotonic() > deadline:
                    return b"".join(chunks), False
        except (rexc.RequestException, u3exc.HTTPError, OSError):
            return b"".join(chunks), False
        return b"".join(chunks)[:ANSWER_LIMIT], True


class HttpBackend:
    """What every backend over one `Transport` shares: its name and capabilities, the URL it
    sends to (which may hold a token, so never shown), `close`, a refusal to send once closed,
    and a `repr` that names the origin and what `_shown` adds, never the URL."""

    type_name = "http"  # the backend type, in messages

    def __init__(self, name: str, url: str, caps: Capabilities, transport: Transport) -> None:
        self.name = name
        self.capabilities = caps
        self.origin = transport.origin
        self._url = url
        self._transport = transport

    def __repr__(self) -> str:
        shown = "".join(f", {k}={v!r}" for k, v in self._shown().items())
        return f"{type(self).__name__}(name={self.name!r}, origin={self.origin!r}{shown})"

    def _shown(self) -> dict[str, object]:
        """What the repr shows besides the name and the origin (never a secret)."""
        return {}

    def close(self) -> None:
        """Close the connection pool (twice is harmless)."""
        self._transport.close()

    def _check_open(self) -> None:
        """A send after `close` is a bug in the caller."""
        if self._transport.closed:
            raise RuntimeError(f"{self.type_name} backend {self.name!r} is closed")


def not_connected(e: rexc.ConnectionError) -> str | None:
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


# -- the answer ---------------------------------------------------------------------------------


def parse_json(raw: bytes) -> Any:
    """The answer's body as JSON, or None when it is not JSON."""
    if not raw.lstrip().startswith((b"{", b"[")):
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


# Where a platform's JSON answer says what went wrong, in the order they are read.
MESSAGE_FIELDS = ("errmsg", "msg", "message", "description", "error")


def message_of(answer: Answer) -> str:
    """What the receiver said: its JSON answer's message field, or the body when it is not JSON
    (quote it with `Transport.said`)."""
    body = answer.body
    if isinstance(body, dict):
        return next((body[f] for f in MESSAGE_FIELDS if isinstance(body.get(f), str)), "")
    return answer.text if body is None else ""


def code(value: Any) -> int | None:
    """A platform's numeric code (`errcode`, `code`): a whole number, or one as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,12}", value.strip()):
        return int(value)
    return None


def seconds(value: object) -> float | None:
    """A wait in seconds from a header or a JSON field (a number, or a number as text), clamped
    to [0, MAX_RETRY_AFTER]; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not re.fullmatch(r"\s*[0-9]{1,10}(\.[0-9]{1,9})?\s*", value):
            return None
        value = float(value)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(max(float(value), 0.0), MAX_RETRY_AFTER)


def retry_after(headers: Mapping[str, str], clock: Clock = wall_clock) -> float | None:
    """The `Retry-After` header's wait: seconds, or an HTTP date measured against the answer's
    own `Date` (so a skewed clock on either side does not stretch or cut the wait), else against
    `clock`; a date in the past is 0. None without a usable header."""
    header = (headers.get("Retry-After") or "").strip()
    if not header:
        return None
    wait = seconds(header)
    if wait is not None:
        return wait
    when = _http_date(header)
    if when is None:
        return None
    server = headers.get("Date")
    now = (_http_date(server) if server else None) or clock()
    return seconds(max((when - now).total_seconds(), 0.0))


def _http_date(text: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else None  # "-0000": no zone, not an HTTP date


def status_failure(
    status: int,
    said: str,
    wait: float | None,
    *,
    redirect: str,
    effect: bool = True,
    head: str | None = None,
) -> SendResult:
    """An answer that is not a success, classified by its status alone.

    408, 425, 429, 503: `retry` after `wait`. 504: `uncertain` (a gateway gave up waiting; the
    receiver behind it may have acted), `retry` for a call without `effect`. Other 5xx: `retry`.
    3xx: `permanent`, since redirects are not followed (`redirect` says what to configure). 4xx
    and anything else: `permanent`. A platform whose own table says otherwise for a status (a
    rate-limit code in a 400, a 409 that means "already have it") decides before calling this.
    `head` starts the detail instead of `HTTP <status>` (to add the platform's code).
    """
    head = head or f"HTTP {status}"
    if status in RETRY_STATUSES:
        return SendResult.retry(f"{head}{said}", wait)
    if status == 504:
        unsure = SendResult.uncertain if effect else SendResult.retry
        return unsure(f"{head}: the gateway timed out{said}")
    if 500 <= status < 600:
        return SendResult.retry(f"{head}{said}", wait)
    if 300 <= status < 400:
        return SendResult.permanent(f"HTTP {status}: {redirect}")
    if 400 <= status < 500:
        return SendResult.permanent(f"{head}{said}")
    return SendResult.permanent(f"HTTP {status}: not an answer this backend understands")


# -- configuration ------------------------------------------------------------------------------


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


def base_url_option(config: BackendConfig, env: Mapping[str, str]) -> str | None:
    """The `base_url` option: where requests go instead of the platform (a proxy, a self-hosted
    server, Lark instead of Feishu, tests), without a trailing `/`; None when not given.

    Every request carries a token or a signature, and a playbook is written by whoever opened the
    pull request: a base URL from the playbook could send them to any host. So a playbook's is
    taken only from the environment (`base_url: "${env:NAME}"`) or as a loopback address; the
    operator's, on the command line (`--backend NAME=TYPE;base_url=URL`, an `OperatorText`), as
    it is.
    """
    raw = option_str(config, "base_url")
    if raw is None:
        return None
    name = config.name
    value = http_url(name, "base_url", resolve_secret(raw, env, what=f'backend "{name}": base_url'))
    trusted = isinstance(raw, OperatorText) or env_reference(raw) is not None
    if not trusted and not loopback(urlsplit(value).hostname or ""):
        raise BackendError(
            f'backend "{name}": base_url receives the token, so in a playbook it comes from the'
            ' environment (base_url: "${env:NAME}") unless it is a loopback address; the'
            f" operator may give any with --backend '{name}={config.type};base_url=URL'"
        )
    if urlsplit(value).query:
        raise BackendError(f'backend "{name}": base_url takes no query')
    return value.rstrip("/")


def with_origin(url: str, base_url: str | None) -> str:
    """`url` sent to `base_url`'s scheme and host instead of its own (a proxy, tests)."""
    if not base_url:
        return url
    base, parts = urlsplit(base_url), urlsplit(url)
    path = base.path.rstrip("/") + parts.path
    return urlunsplit((base.scheme, base.netloc, path, parts.query, ""))


def origin_of(url: str) -> str:
    """scheme://host[:port] of `url`, without credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


TIMEOUT_OPTIONS = ("connect_timeout", "read_timeout")


class Timeouts(TypedDict):
    """`Transport`'s timeout keywords."""

    connect_timeout: float
    read_timeout: float


def timeouts(config: BackendConfig) -> Timeouts:
    """The `connect_timeout` and `read_timeout` options, as `Transport`'s keywords."""
    return {
        "connect_timeout": option_seconds(config, "connect_timeout", CONNECT_TIMEOUT),
        "read_timeout": option_seconds(config, "read_timeout", READ_TIMEOUT),
    }
