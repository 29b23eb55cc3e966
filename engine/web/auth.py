"""Who may use the dashboard, and proof that a change was asked for by its own page.

- The token comes from `SOP_TOKEN`. A request carries it as `Authorization: Bearer <token>`, or
  signs in through the login form, which sets a session cookie: HMAC-signed, HttpOnly,
  SameSite=Strict, Secure over HTTPS. The session holds the name given at sign-in (the actor in
  the audit log) and a random CSRF token.
- Without a token the dashboard only listens on loopback (`check_access`) and answers only
  requests addressed to a loopback host name (a DNS-rebinding page cannot reach it); the actor
  is `local`.
- Every state-changing request must come from the dashboard's own origin (`Origin`, else
  `Referer`, and `Sec-Fetch-Site` when sent) and, with a session, carry its CSRF token (header
  `X-CSRF-Token` or form field `csrf`). A Bearer request carries no ambient credential, so it
  needs no CSRF token; its actor is `token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..core.net import is_loopback

TOKEN_ENV = "SOP_TOKEN"
COOKIE = "sop_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SESSION_SECONDS = 14 * 86_400
MIN_TOKEN = 16  # characters: a token anyone on the network may guess at must be long
MAX_NAME = 40
BEARER_ACTOR = "token"
LOCAL_ACTOR = "local"


class AccessError(ValueError):
    """The dashboard cannot be served as asked (said to the operator)."""


def host_is_loopback(host: str) -> bool:
    """Whether a `Host` header (a port allowed) names this machine only."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1] or [::1]:8750
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:  # 127.0.0.1:8750, localhost:8750
        name = name.partition(":")[0]
    return is_loopback(name)


def check_access(host: str, token: str | None) -> None:
    """Refuse (AccessError) to serve the dashboard beyond loopback without a long enough token."""
    if token is not None and len(token) < MIN_TOKEN and not is_loopback(host):
        raise AccessError(
            f"{TOKEN_ENV} is {len(token)} characters: use at least {MIN_TOKEN} when listening"
            f" on {host!r} (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
        )
    if not token and not is_loopback(host):
        raise AccessError(
            f"refusing to serve the dashboard on {host!r} without a token: anyone who can reach"
            f" it could mark tasks done and resolve deliveries; set {TOKEN_ENV} or listen on"
            " 127.0.0.1"
        )


def token_matches(token: str | None, given: str) -> bool:
    """Constant-time comparison with the configured token (False when there is none)."""
    if not token:
        return False
    return hmac.compare_digest(token.encode("utf-8"), given.encode("utf-8", "replace"))


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def clean_name(name: str) -> str | None:
    """A sign-in name fit for the audit log, or None (empty, too long, control characters)."""
    name = " ".join(name.split())
    if not 1 <= len(name) <= MAX_NAME or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name):
        return None
    return name


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in (or, without a token, a local) browser: who, and its CSRF token."""

    name: str
    csrf: str
    issued: int  # unix seconds

    @classmethod
    def new(cls, name: str, now: float | None = None) -> Session:
        return cls(name, secrets.token_urlsafe(24), int(time.time() if now is None else now))


class SessionCodec:
    """Session cookies signed with HMAC-SHA256 (the key derives from the token, or is random)."""

    def __init__(self, token: str | None, max_age: int = SESSION_SECONDS) -> None:
        # from the token: sessions survive a restart and end when the token is changed
        base = token.encode("utf-8") if token else os.urandom(32)
        self._key = hmac.new(base, b"sop-dashboard-session-v1", hashlib.sha256).digest()
        self.max_age = max_age

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, payload, hashlib.sha256).digest())[
            :43
        ].decode("ascii")

    def dumps(self, s: Session) -> str:
        """The cookie value."""
        body = json.dumps({"n": s.name, "c": s.csrf, "i": s.issued}, separators=(",", ":"))
        payload = base64.urlsafe_b64encode(body.encode("utf-8")).rstrip(b"=")
        return payload.decode("ascii") + "." + self._sign(payload)

    def loads(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds, or None (absent, forged, malformed or expired)."""
        if not value or len(value) > 1024 or "." not in value:
            return None
        payload, _, sig = value.rpartition(".")
        raw = payload.encode("ascii", "replace")
        if not hmac.compare_digest(self._sign(raw), sig):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4)))
            s = Session(str(data["n"]), str(data["c"]), int(data["i"]))
        except (ValueError, KeyError, TypeError):
            return None
        age = (time.time() if now is None else now) - s.issued
        return s if age + 60 >= 0 and age <= self.max_age else None


def same_origin(headers: Mapping[str, str], scheme: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether a request says it comes from one of our own origins (Origin, else Referer).

    The page's own origin is the request's scheme and `Host`; `allowed_hosts` adds the names a
    reverse proxy serves it under. `Sec-Fetch-Site`, when a browser sends it, must be
    `same-origin`. Without Origin and Referer (some privacy tools strip both) the CSRF token
    alone decides.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    host = (headers.get("host") or "").lower()
    ours = {f"{scheme}://{host}"} | {
        f"{p}://{h.lower()}" for h in allowed_hosts for p in ("http", "https")
    }
    origin = headers.get("origin")
    if origin is not None:
        return origin.lower() in ours
    referer = headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() in ours
    return True


def csrf_ok(session: Session, given: str | None) -> bool:
    """Whether the CSRF token sent with a request is the session's."""
    return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())


class Throttle:
    """Failed sign-ins per client address: after `limit` in `window` seconds, refuse a while."""

    def __init__(self, limit: int = 10, window: float = 600.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, list[float]] = {}

    def blocked(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        recent = [t for t in self._failures.get(client, ()) if now - t < self.window]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return len(recent) >= self.limit

    def failed(self, client: str, now: float | None = None) -> None:
        if len(self._failures) > 10_000:  # many addresses: forget the oldest half
            for k in list(self._failures)[:5_000]:
                del self._failures[k]
        self._failures.setdefault(client, []).append(time.monotonic() if now is None else now)
