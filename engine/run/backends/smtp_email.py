"""The `email` backend: each delivery as one plain-text e-mail over SMTP, encrypted by default.

The module is `smtp_email`, not `email`: a file named like the standard library's package would
shadow it for anything run with this folder on `sys.path`. Security: implicit TLS (`tls=true`,
port 465) or STARTTLS (`starttls=required`, the default; `optional`; `off`); a password goes only
over an encrypted connection, or in clear to a loopback relay. The recipient is the member's
`email` attribute for `member` actions and the `to` list for the others. The `Message-ID` is
derived from the idempotency key, so a resend carries the same one and is recognisable. The
classification table is in docs/backends/email-sms.md; its rule: `retry` for what certainly did
not deliver (no connection, a 4xx reply, a connection lost before the message's final `.`),
`uncertain` once the whole message has gone out and no reply came back.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr

from ...core.catalog import DEFAULT_RATES
from ...core.net import is_loopback as loopback
from ...core.textsafe import terminal
from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._common import (
    BackendError,
    Clock,
    check_fits,
    check_options,
    option_bool,
    option_int,
    option_needed,
    option_seconds,
    option_str,
    plain_capabilities,
    refuse_target,
    resolve_secret,
    said,
    wall_clock,
)
from ._markup import plain_text

TYPE = "email"
CONNECT_TIMEOUT = 5.0  # the TCP connection, the greeting and (tls=true) the TLS handshake
READ_TIMEOUT = 10.0  # every reply after that
SUBMISSION_PORT = 587  # STARTTLS (RFC 6409)
SMTPS_PORT = 465  # implicit TLS (RFC 8314)
OPTIONS = (
    "host",
    "port",
    "tls",
    "starttls",
    "user",
    "password",
    "from",
    "to",
    "subject_prefix",
    "message_id_domain",
    "helo",
    "ca_file",
    "connect_timeout",
    "read_timeout",
)
# A deliberately plain addr-spec (RFC 5321 dot-atom, ASCII): what can be put in a header and an
# SMTP command without quoting, so nothing from a member's attributes can inject a header.
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_MAX_ADDRESS = 254  # RFC 5321's path limit less the angle brackets


class StartTls(enum.StrEnum):
    """Whether a plain connection (port 587/25) is upgraded with STARTTLS."""

    REQUIRED = "required"  # upgrade, or send nothing
    OPTIONAL = "optional"  # upgrade when the server offers it
    OFF = "off"  # never (a trusted relay on a private network)


class _Step(enum.Enum):
    """How far a send got: what a broken connection means depends on it."""

    CONNECT = 0
    SESSION = 1  # EHLO, STARTTLS, AUTH
    ENVELOPE = 2  # MAIL FROM, RCPT TO, the DATA command
    SENDING = 3  # the message is going out: without its final "." nothing is delivered
    SENT = 4  # the message went out whole: a lost reply leaves it uncertain


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """One SMTP server and the envelope it is given (the password never in a repr)."""

    host: str
    port: int
    tls: bool  # implicit TLS from the first byte
    starttls: StartTls
    sender: Address
    to: tuple[str, ...] = ()
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    subject_prefix: str = ""
    message_id_domain: str = "localhost"
    helo: str = "localhost"
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT


# -- addresses and identifiers ----------------------------------------------------------------


def valid_address(text: str) -> bool:
    """Whether `text` is an address this backend puts in a header and an SMTP command."""
    return len(text) <= _MAX_ADDRESS and _ADDRESS.fullmatch(text) is not None


def mask_address(text: str) -> str:
    """An address as a detail may show it: the domain, and the local part's first character."""
    local, at, domain = text.rpartition("@")
    if not at or not local or not valid_address(text):
        return f"(not an e-mail address, {len(text)} characters)"
    return f"{local[0]}***@{domain}"


def message_id(key: str, domain: str) -> str:
    """The `Message-ID` of the delivery with idempotency `key`: the same on every attempt."""
    return f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}@{domain}>"


def _fold(text: str) -> str:
    """`text` on one line (a header's value)."""
    return " ".join(text.split())


def compose(
    delivery: Delivery, recipients: Sequence[str], settings: SmtpSettings, now: datetime
) -> bytes:
    """The message as it goes on the wire: CRLF lines, ASCII only (RFC 2047 encoded words in
    headers, base64 for a body that is not short-lined ASCII), `Date` from `now`."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = settings.sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = _fold(settings.subject_prefix + delivery.title) or "(no subject)"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id(delivery.key, settings.message_id_domain)
    body = plain_text(delivery.text).rstrip("\n") + "\n"
    short_ascii = body.isascii() and max(len(line) for line in body.split("\n")) <= 998
    msg.set_content(body, charset="utf-8", cte="7bit" if short_ascii else "base64")
    return msg.as_bytes()


def _dot_stuffed(message: bytes) -> bytes:
    """The DATA payload: lines starting with `.` doubled, ended by `.` on a line (RFC 5321)."""
    data = re.sub(rb"(?m)^\.", b"..", message)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


# -- the backend ------------------------------------------------------------------------------


class EmailBackend:
    """Sends each delivery as one e-mail, on a fresh SMTP connection (not idempotent)."""

    def __init__(
        self,
        name: str,
        settings: SmtpSettings,
        caps: Capabilities,
        *,
        tls_context: ssl.SSLContext | None = None,
        clock: Clock = wall_clock,
    ) -> None:
        self.name = name
        self.capabilities = caps
        self._settings = settings
        self._context = tls_context or ssl.create_default_context()
        self._clock = clock
        self._hidden = tuple(s for s in (settings.password,) if s)
        self._closed = False

    @property
    def server(self) -> str:
        """`host:port`, for messages."""
        return f"{self._settings.host}:{self._settings.port}"

    def __repr__(self) -> str:
        s = self._settings
        security = "tls" if s.tls else f"starttls={s.starttls}"
        return (
            f"EmailBackend(name={self.name!r}, server={self.server!r}, {security},"
            f" from={s.sender.addr_spec!r})"
        )

    def close(self) -> None:
        """Nothing is held between sends; later sends are refused (twice is harmless)."""
        self._closed = True

    def send(self, delivery: Delivery) -> SendResult:
        """Send `delivery` as one e-mail and classify what the server answered."""
        if self._closed:
            raise RuntimeError(f"email backend {self.name!r} is closed")
        unfit = check_fits(delivery, self.capabilities)
        if unfit is not None:
            return unfit
        recipients = self._recipients(delivery)
        if isinstance(recipients, SendResult):
            return recipients
        message = compose(delivery, recipients, self._settings, self._clock())
        mid = message_id(delivery.key, self._settings.message_id_domain)
        return self._transmit(message, recipients, mid)

    def _recipients(self, delivery: Delivery) -> list[str] | SendResult:
        """The member's `email` for a `member` action, the `to` list for the others."""
        if delivery.audience == "member":
            value = delivery.attributes.get("email")
            if not isinstance(value, str) or not value.strip():
                return SendResult.permanent(
                    f"member {terminal(delivery.member or '?')} has no `email` attribute"
                )
            address = value.strip()
            if not valid_address(address):
                return SendResult.permanent(
                    f"member {terminal(delivery.member or '?')}'s email {mask_address(address)}"
                    " is not an address this backend sends to (ASCII user@domain.tld)"
                )
            return [address]
        if delivery.audience == "referrer":
            return SendResult.permanent(
                "the email backend cannot address a member's referrer (no such attribute);"
                " route this action to another backend"
            )
        if not self._settings.to:
            return SendResult.permanent(
                f"audience `{terminal(delivery.audience)}` needs the `to` option (the staff or"
                " list addresses)"
            )
        return list(self._settings.to)

    # -- the SMTP exchange --------------------------------------------------------------------

    def _transmit(self, message: bytes, recipients: list[str], mid: str) -> SendResult:
        s = self._settings
        step, what = _Step.CONNECT, "the greeting"
        smtp: smtplib.SMTP | None = None
        try:
            smtp = self._open()
            step, what = _Step.SESSION, "EHLO"
            smtp.ehlo_or_helo_if_needed()
            secure = s.tls
            if not s.tls and s.starttls is not StartTls.OFF:
                if smtp.has_extn("starttls"):
                    what = "STARTTLS"
                    smtp.starttls(context=self._context)
                    smtp.ehlo()
                    secure = True
                elif s.starttls is StartTls.REQUIRED:
                    return SendResult.permanent(
                        f"{self.server} does not offer STARTTLS and starttls=required; use"
                        " tls=true (port 465), or starttls=optional only on a trusted network"
                    )
            if s.user is not None and s.password is not None:
                if not secure and not loopback(s.host):
                    return SendResult.permanent(
                        f"{self.server} offered no encryption: the password is not sent in clear"
                    )
                what = "AUTH"
                smtp.login(s.user, s.password)
            step, what = _Step.ENVELOPE, "MAIL FROM"
            code, reply = smtp.mail(s.sender.addr_spec)
            if code != 250:
                return self._answer(code, reply, what, recipients)
            what = "RCPT TO"
            refused: dict[str, tuple[int, bytes]] = {}
            for r in recipients:
                code, reply = smtp.rcpt(r)
                if code not in (250, 251):
                    refused[r] = (code, reply)
            if len(refused) == len(recipients):
                return self._refused(refused, recipients)
            what = "DATA"
            code, reply = smtp.docmd("DATA")
            if code != 354:
                return self._answer(code, reply, what, recipients)
            step, what = _Step.SENDING, "the message"
            smtp.send(_dot_stuffed(message))
            step = _Step.SENT
            code, reply = smtp.getreply()
            if code != 250:
                return self._answer(code, reply, what, recipients)
            said = self._said(reply, recipients)
            if refused:
                masked = ", ".join(
                    f"{mask_address(r)} ({c})" for r, (c, _) in sorted(refused.items())
                )
                said += f"; refused, not resent: {masked}"
            return SendResult.ok(f"SMTP {code} from {self.server}{said}", remote_id=mid)
        except smtplib.SMTPResponseException as e:  # a coded reply, smtplib raised it for us
            return self._answer(e.smtp_code, e.smtp_error, what, recipients)
        except (smtplib.SMTPException, OSError) as e:
            return self._broken(e, step, what)
        finally:
            if smtp is not None:
                _quit(smtp)

    def _open(self) -> smtplib.SMTP:
        """Connected and greeted (SMTPConnectError for a greeting other than 220)."""
        s = self._settings
        smtp: smtplib.SMTP
        if s.tls:
            smtp = smtplib.SMTP_SSL(
                s.host,
                s.port,
                local_hostname=s.helo,
                timeout=s.connect_timeout,
                context=self._context,
            )
        else:
            smtp = smtplib.SMTP(s.host, s.port, local_hostname=s.helo, timeout=s.connect_timeout)
        smtp.timeout = s.read_timeout
        if smtp.sock is not None:
            smtp.sock.settimeout(s.read_timeout)
        return smtp

    def _answer(
        self, code: int, reply: bytes | str, what: str, recipients: Sequence[str]
    ) -> SendResult:
        """A coded reply: 4xx (421, 450, 451, 452 ...) transient, 5xx permanent (RFC 5321)."""
        text = f"SMTP {code} to {what} from {self.server}{self._said(reply, recipients)}"
        if 400 <= code < 500:
            return SendResult.retry(text)
        if 500 <= code < 600:
            hint = " (check user and password)" if what == "AUTH" else ""
            return SendResult.permanent(text + hint)
        return SendResult.permanent(f"{text}: not an answer this backend understands")

    def _refused(
        self, refused: Mapping[str, tuple[int, bytes]], recipients: Sequence[str]
    ) -> SendResult:
        """Every recipient refused: nothing was sent."""
        parts = [
            f"{c} for {mask_address(r)}{self._said(reply, recipients)}"
            for r, (c, reply) in sorted(refused.items())
        ]
        text = f"{self.server} refused every recipient ({'; '.join(parts)})"
        if all(400 <= c < 500 for c, _ in refused.values()):
            return SendResult.retry(text)
        return SendResult.permanent(text)

    def _broken(self, e: BaseException, step: _Step, what: str) -> SendResult:
        """No coded reply: what a lost connection means depends on how far the send got."""
        where = self.server
        s = self._settings
        if step is _Step.SENT:
            return SendResult.uncertain(
                f"the connection to {where} broke or timed out ({s.read_timeout:g} s) after the"
                " message was sent, before the server confirmed it"
            )
        if step is _Step.SENDING:  # RFC 5321 4.1.1.4: an unfinished message is not delivered
            return SendResult.retry(
                f"the connection to {where} broke while the message was being sent, before its"
                " end: nothing was delivered"
            )
        if isinstance(e, ssl.SSLError):  # certificate verification included
            return SendResult.retry(f"TLS with {where} failed (certificate or protocol)")
        if step is _Step.CONNECT:
            if isinstance(e, socket.gaierror):
                return SendResult.retry(f"could not connect to {where}: the host does not resolve")
            if isinstance(e, TimeoutError):
                return SendResult.retry(
                    f"could not connect to {where} within {s.connect_timeout:g} s"
                )
            if isinstance(e, ConnectionRefusedError):
                return SendResult.retry(f"could not connect to {where}: connection refused")
            return SendResult.retry(f"no SMTP session with {where} ({type(e).__name__})")
        # (every SMTPException is an OSError too: smtplib's own refusals are told apart here)
        if isinstance(e, smtplib.SMTPServerDisconnected) or not isinstance(
            e, smtplib.SMTPException
        ):
            return SendResult.retry(
                f"the connection to {where} broke at {what}, before the message was sent"
            )
        # smtplib's own refusals (AUTH not offered, no common mechanism): settings to fix; its
        # messages hold no secret, and are said
        return SendResult.permanent(f"{where} at {what}{self._said(str(e), ())}")

    def _said(self, reply: bytes | str, recipients: Sequence[str]) -> str:
        """`: <what the server said>`, one line, bounded, addresses masked, no password."""
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
        for r in recipients:
            text = text.replace(r, mask_address(r))
        return said(text, self._hidden)


def _quit(smtp: smtplib.SMTP) -> None:
    """End the session politely when it still stands; a failure here changes nothing."""
    with contextlib.suppress(smtplib.SMTPException, OSError):
        if smtp.sock is not None:
            smtp.quit()
    smtp.close()


# -- building ---------------------------------------------------------------------------------

# What `sop backends` shows, and what `create` builds before the options: plain text, every
# kind, not idempotent, the catalog's rate.
CAPABILITIES = Capabilities(idempotent=False, rate_per_minute=DEFAULT_RATES[TYPE])


def create(
    config: BackendConfig, env: Mapping[str, str], *, clock: Clock = wall_clock
) -> EmailBackend:
    """The `email` entry point: SMTP settings from the options (see the module's docstring)."""
    name = config.name
    check_options(config, OPTIONS)
    refuse_target(config)
    host = option_needed(config, "host").strip()
    if not re.fullmatch(r"[A-Za-z0-9._:\[\]-]{1,253}", host):
        raise BackendError(f'backend "{name}": host must be a host name or an IP address')
    tls = option_bool(config, "tls", False)
    starttls_text = option_str(config, "starttls")
    if tls and starttls_text is not None:
        raise BackendError(
            f'backend "{name}": tls=true encrypts from the first byte; drop the starttls option'
        )
    try:
        starttls = StartTls(starttls_text or StartTls.REQUIRED)
    except ValueError:
        raise BackendError(
            f'backend "{name}": starttls must be required, optional or off'
        ) from None
    port = option_int(config, "port") or (SMTPS_PORT if tls else SUBMISSION_PORT)
    if port > 65535:
        raise BackendError(f'backend "{name}": port must be 1 to 65535')
    sender = _sender(name, option_needed(config, "from"))
    to = tuple(_addresses(name, option_str(config, "to") or ""))
    user = option_str(config, "user")
    password_ref = option_str(config, "password")
    if (user is None) != (password_ref is None):
        raise BackendError(f'backend "{name}": give both user and password, or neither')
    password = (
        resolve_secret(password_ref, env, what=f'backend "{name}": password')
        if password_ref is not None
        else None
    )
    for what, value in (("user", user), ("password", password)):
        if value is not None and not (value.isascii() and value.isprintable()):
            raise BackendError(f'backend "{name}": the SMTP {what} must be printable ASCII')
    if password is not None and not tls and starttls is StartTls.OFF and not loopback(host):
        raise BackendError(
            f'backend "{name}": starttls=off would send the password in clear to {host}; use'
            " starttls=required or tls=true"
        )
    domain = option_str(config, "message_id_domain") or sender.domain
    helo = option_str(config, "helo") or _host_name()
    for what, value in (("message_id_domain", domain), ("helo", helo)):
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", value):
            raise BackendError(f'backend "{name}": {what} must be a domain name')
    settings = SmtpSettings(
        host=host,
        port=port,
        tls=tls,
        starttls=starttls,
        sender=sender,
        to=to,
        user=user,
        password=password,
        subject_prefix=option_str(config, "subject_prefix") or "",
        message_id_domain=domain,
        helo=helo,
        connect_timeout=option_seconds(config, "connect_timeout", CONNECT_TIMEOUT),
        read_timeout=option_seconds(config, "read_timeout", READ_TIMEOUT),
    )
    caps = plain_capabilities(config, CAPABILITIES, "e-mail is")
    return EmailBackend(name, settings, caps, tls_context=_context(name, config), clock=clock)


def _host_name() -> str:
    """This machine's name for EHLO, without a DNS lookup (smtplib's getfqdn can hang)."""
    name = socket.gethostname()
    return name if re.fullmatch(r"[A-Za-z0-9.-]{1,253}", name) else "localhost"


def _sender(name: str, text: str) -> Address:
    display, addr = parseaddr(text)
    if not valid_address(addr):
        raise BackendError(
            f'backend "{name}": from must be an address, e.g. ops@example.org or'
            ' "Ops <ops@example.org>"'
        )
    local, _, domain = addr.rpartition("@")
    return Address(display_name=_fold(display), username=local, domain=domain)


def _addresses(name: str, text: str) -> list[str]:
    found = [a.strip() for a in text.split(",") if a.strip()]
    for a in found:
        if not valid_address(a):
            raise BackendError(
                f'backend "{name}": to holds {mask_address(a)}; give addresses separated by ","'
            )
    return found


def _context(name: str, config: BackendConfig) -> ssl.SSLContext:
    """Certificates verified against the system's CAs, or `ca_file` (a private CA)."""
    ca_file = option_str(config, "ca_file")
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError):
        raise BackendError(
            f'backend "{name}": ca_file cannot be read as PEM certificates'
        ) from None
