"""The `sms` backend: one SMS to a member through Tencent Cloud SMS (`SendSms`, API 2021-01-11).

In mainland China an SMS goes out only as an approved template filled with parameters, so the
rendered text *is* the parameters: split on `|` (option `param_separator`), each made plain text
on one line, in the order of the template's `{1}`, `{2}` ... The number is the member's `phone`
attribute, E.164, or an 11-digit mainland mobile number which gets `+86`. Requests are signed
with TC3-HMAC-SHA256 as Tencent Cloud documents it (`tc3_authorization`). The classification
table is in docs/backends/email-sms.md: `retry` for a rate limit with its window (30 s, an hour)
and the platform's internal errors, `permanent` for a daily limit, a refused key or template,
`uncertain` when the answer was lost.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from ...core.catalog import DEFAULT_RATES
from ...core.textsafe import terminal
from ..ports import BackendConfig, Capabilities, Delivery, SendResult, SendStatus
from ._common import (
    BackendError,
    Clock,
    check_fits,
    check_options,
    one_line,
    option_needed,
    option_str,
    plain_capabilities,
    refuse_target,
    resolve_secret,
    wall_clock,
)
from ._http import (
    TIMEOUT_OPTIONS,
    HttpBackend,
    Transport,
    base_url_option,
    retry_after,
    status_failure,
    timeouts,
)
from ._markup import plain_text

TYPE = "sms"
ENDPOINT = "https://sms.tencentcloudapi.com"
SERVICE = "sms"  # the credential scope's service: the product, whatever base_url says
ACTION = "SendSms"
VERSION = "2021-01-11"
DEFAULT_REGION = "ap-guangzhou"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
PARAM_SEPARATOR = "|"
BEIJING = ZoneInfo("Asia/Shanghai")
# Tencent Cloud's per-number windows (docs/backends/email-sms.md): retried once they have passed
THIRTY_SECONDS = 30.0
ONE_HOUR = 3600.0
MARKETING_HOURS = (8, 22)  # marketing SMS go out from 08:00 to 22:00 Beijing time
OPTIONS = (
    "secret_id",
    "secret_key",
    "sdk_app_id",
    "sign_name",
    "template_id",
    "region",
    "base_url",
    "param_separator",
    "param_count",
    *TIMEOUT_OPTIONS,
)


# -- TC3-HMAC-SHA256 --------------------------------------------------------------------------


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def canonical_request(
    headers: Mapping[str, str], payload: bytes, *, method: str = "POST", query: str = ""
) -> tuple[str, str]:
    """The canonical request and its signed-header list: every header in `headers` is signed,
    names and values lowercased and trimmed, sorted by name; the URI is always `/`."""
    pairs = sorted((k.strip().lower(), v.strip().lower()) for k, v in headers.items())
    lines = "".join(f"{k}:{v}\n" for k, v in pairs)
    signed = ";".join(k for k, _ in pairs)
    return f"{method}\n/\n{query}\n{lines}\n{signed}\n{_sha256_hex(payload)}", signed


def credential_scope(timestamp: int, service: str) -> str:
    """`date/service/tc3_request`, the date in UTC (never the local date)."""
    day = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    return f"{day}/{service}/tc3_request"


def string_to_sign(timestamp: int, service: str, canonical: str) -> str:
    """`TC3-HMAC-SHA256`, the timestamp, the credential scope, the canonical request's hash."""
    scope = credential_scope(timestamp, service)
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{_sha256_hex(canonical.encode('utf-8'))}"


def tc3_signature(secret_key: str, timestamp: int, service: str, to_sign: str) -> str:
    """HMAC-SHA256 over `to_sign` with the key derived `TC3`+SecretKey → date → service →
    `tc3_request`, as lowercase hex."""
    day = credential_scope(timestamp, service).split("/", 1)[0]
    key = _hmac(f"TC3{secret_key}".encode(), day)
    key = _hmac(key, service)
    key = _hmac(key, "tc3_request")
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def tc3_authorization(
    secret_id: str,
    secret_key: str,
    *,
    service: str,
    timestamp: int,
    headers: Mapping[str, str],
    payload: bytes,
) -> str:
    """The `Authorization` header of a POST whose signed headers are `headers`."""
    canonical, signed = canonical_request(headers, payload)
    signature = tc3_signature(
        secret_key, timestamp, service, string_to_sign(timestamp, service, canonical)
    )
    return (
        f"{ALGORITHM} Credential={secret_id}/{credential_scope(timestamp, service)},"
        f" SignedHeaders={signed}, Signature={signature}"
    )


# -- numbers and parameters -------------------------------------------------------------------

_MAINLAND = re.compile(r"1[3-9][0-9]{9}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def e164(value: object) -> str | None:
    """The number to send to: E.164 as given, `+86` before an 11-digit mainland mobile number,
    spaces and hyphens dropped; None for anything else (a `+86` number must be a mobile one)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = re.sub(r"[\s-]", "", str(value))
    if _MAINLAND.fullmatch(text):
        return f"+86{text}"
    if not _E164.fullmatch(text):
        return None
    if text.startswith("+86") and not _MAINLAND.fullmatch(text[3:]):
        return None
    return text


def mask_phone(value: object) -> str:
    """A number as a detail may show it: its first three and last four characters."""
    text = terminal(str(value))
    if len(text) < 8:
        return "*" * len(text) or "(empty)"
    return text[:3] + "*" * (len(text) - 7) + text[-4:]


def template_params(text: str, separator: str = PARAM_SEPARATOR) -> list[str]:
    """The rendered text as the template's parameters: split on `separator`, each one plain
    text (`plain_text`) on one line, trimmed. The SMS dialect: pure."""
    return [" ".join(plain_text(part).split()) for part in text.split(separator)]


def session_context(key: str) -> str:
    """What Tencent Cloud echoes back with the send (and in its callbacks): the key's hash."""
    return f"sop:{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}"


# -- the classification -----------------------------------------------------------------------


class Verdict(NamedTuple):
    """How one Tencent Cloud error code is classified."""

    status: SendStatus
    retry_after: float | None = None
    hint: str = ""


_RETRY = SendStatus.RETRY
_PERMANENT = SendStatus.PERMANENT
_CODES: dict[str, Verdict] = {
    "LimitExceeded.PhoneNumberThirtySecondLimit": Verdict(
        _RETRY, THIRTY_SECONDS, "the number's 30-second limit; retried after it"
    ),
    "LimitExceeded.PhoneNumberOneHourLimit": Verdict(
        _RETRY, ONE_HOUR, "the number's one-hour limit; retried after it"
    ),
    "LimitExceeded.PhoneNumberDailyLimit": Verdict(
        _PERMANENT,
        None,
        "the number's daily limit; raise it in the SMS console or resend tomorrow",
    ),
    "LimitExceeded.PhoneNumberSameContentDailyLimit": Verdict(
        _PERMANENT, None, "the same text to this number too often today"
    ),
    "LimitExceeded.AppDailyLimit": Verdict(
        _PERMANENT, None, "the application's daily limit, set in the SMS console"
    ),
    "LimitExceeded.DailyLimit": Verdict(_PERMANENT, None, "the daily international limit"),
    "LimitExceeded.DeliveryFrequencyLimit": Verdict(
        _RETRY, None, "a frequency-limit policy of the SMS console"
    ),
    "FailedOperation.PhoneNumberInBlacklist": Verdict(
        _PERMANENT, None, "the member unsubscribed or a carrier blocks the number"
    ),
    "FailedOperation.PhoneNumberOnBlacklist": Verdict(
        _PERMANENT, None, "the member unsubscribed or a carrier blocks the number"
    ),
    "FailedOperation.InsufficientBalanceInSmsPackage": Verdict(
        _PERMANENT, None, "the SMS package is used up"
    ),
    "FailedOperation.TemplateIncorrectOrUnapproved": Verdict(
        _PERMANENT, None, "check template_id and the text's parameters"
    ),
    "FailedOperation.SignatureIncorrectOrUnapproved": Verdict(_PERMANENT, None, "check sign_name"),
    "AuthFailure.SignatureExpire": Verdict(
        _PERMANENT, None, "this machine's clock is more than 5 minutes off"
    ),
    "InternalError.RequestTimeException": Verdict(
        _PERMANENT, None, "this machine's clock is more than 10 minutes off"
    ),
    "InternalError.RestApiInterfaceNotExist": Verdict(_PERMANENT),
    "InternalError.JsonParseFail": Verdict(_PERMANENT),
}
_MARKETING = "FailedOperation.MarketingSendTimeConstraint"


def classify(code: str, now: datetime) -> Verdict:
    """The classification of Tencent Cloud error `code` (at `now`, for the marketing hours)."""
    if code in _CODES:
        return _CODES[code]
    if code == _MARKETING:
        return Verdict(_RETRY, _until_marketing_hours(now), "marketing SMS go out 08:00-22:00")
    family = code.split(".", 1)[0]
    if family == "AuthFailure":
        return Verdict(_PERMANENT, None, "check secret_id and secret_key")
    if family in ("RequestLimitExceeded", "InternalError"):
        return Verdict(_RETRY)
    return Verdict(_PERMANENT)  # FailedOperation, InvalidParameter*, Unauthorized ..., unknown


def _until_marketing_hours(now: datetime) -> float | None:
    """Seconds until marketing SMS may go out again (08:00 Beijing time), or None inside."""
    local = now.astimezone(BEIJING)
    start, end = MARKETING_HOURS
    if start <= local.hour < end:
        return None
    opens = local.replace(hour=start, minute=0, second=0, microsecond=0)
    if local.hour >= end:
        opens += timedelta(days=1)
    return (opens - local).total_seconds()


# -- the backend ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmsSettings:
    """What every SendSms request of one backend carries (the secrets kept apart)."""

    sdk_app_id: str
    template_id: str
    sign_name: str | None = None
    region: str = DEFAULT_REGION
    base_url: str = ENDPOINT
    param_separator: str = PARAM_SEPARATOR
    param_count: int | None = None


class SmsBackend(HttpBackend):
    """POSTs one SendSms per delivery; not idempotent (Tencent Cloud keeps no request key)."""

    type_name = TYPE

    def __init__(
        self,
        name: str,
        settings: SmsSettings,
        caps: Capabilities,
        transport: Transport,
        *,
        secret_id: str,
        secret_key: str,
        clock: Clock = wall_clock,
    ) -> None:
        parts = urlsplit(settings.base_url)
        # the transport hides secret_id and secret_key
        super().__init__(name, f"{parts.scheme}://{parts.netloc}/", caps, transport)
        self._settings = settings
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._clock = clock
        self._host = parts.netloc.lower()

    def _shown(self) -> dict[str, object]:
        s = self._settings
        return {"region": s.region, "sdk_app_id": s.sdk_app_id, "template_id": s.template_id}

    def send(self, delivery: Delivery) -> SendResult:
        """Send `delivery` as one templated SMS and classify Tencent Cloud's answer."""
        self._check_open()
        unfit = check_fits(delivery, self.capabilities)
        if unfit is not None:
            return unfit
        request = self._request(delivery)
        if isinstance(request, SendResult):
            return request
        phone, payload = request
        now = self._clock()
        timestamp = int(now.timestamp())
        signed = {"Content-Type": CONTENT_TYPE, "Host": self._host, "X-TC-Action": ACTION}
        headers = {
            **signed,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": VERSION,
            "X-TC-Region": self._settings.region,
            "Authorization": tc3_authorization(
                self._secret_id,
                self._secret_key,
                service=SERVICE,
                timestamp=timestamp,
                headers=signed,
                payload=payload,
            ),
        }
        answer = self._transport.request("POST", self._url, body=payload, headers=headers)
        if isinstance(answer, SendResult):
            return answer
        return self._classify(
            answer.status, answer.headers, answer.raw, answer.complete, phone, now
        )

    def _request(self, delivery: Delivery) -> tuple[str, bytes] | SendResult:
        """The number and the JSON body, or why there is nothing to send."""
        member = terminal(delivery.member or "?")
        if delivery.audience != "member" or delivery.member is None:
            return SendResult.permanent(
                f"the sms backend sends to one member (audience `member`), not to"
                f" `{terminal(delivery.audience)}`; route this action to another backend"
            )
        raw = delivery.attributes.get("phone")
        if raw is None or raw == "":
            return SendResult.permanent(f"member {member} has no `phone` attribute")
        phone = e164(raw)
        if phone is None:
            return SendResult.permanent(
                f"member {member}'s phone {mask_phone(raw)} is neither E.164 (+<country code>"
                "<number>) nor an 11-digit mainland mobile number"
            )
        s = self._settings
        params = [] if s.param_count == 0 else template_params(delivery.text, s.param_separator)
        if s.param_count is not None and len(params) != s.param_count:
            return SendResult.permanent(
                f"the text gives {len(params)} template parameters (separated by"
                f" {s.param_separator!r}); template {s.template_id} takes {s.param_count}"
            )
        body: dict[str, Any] = {
            "PhoneNumberSet": [phone],
            "SmsSdkAppId": s.sdk_app_id,
            "TemplateId": s.template_id,
            "TemplateParamSet": params,
            "SessionContext": session_context(delivery.key),
        }
        if s.sign_name is not None:
            body["SignName"] = s.sign_name
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return phone, payload

    # -- the answer ---------------------------------------------------------------------------

    def _classify(
        self,
        status: int,
        headers: Mapping[str, str],
        raw: bytes,
        complete: bool,
        phone: str,
        now: datetime,
    ) -> SendResult:
        where = self.origin
        if status != 200:  # the API answers its errors with 200; this is a gateway's answer
            return status_failure(
                status,
                "",
                retry_after(headers, self._clock),
                redirect=f"{where} redirects; base_url must be the API's origin",
                head=f"HTTP {status} from {where}",
            )
        if not complete:
            return SendResult.uncertain(f"HTTP 200 from {where}, but the answer could not be read")
        answer = _response(raw)
        if answer is None:
            return SendResult.uncertain(f"HTTP 200 from {where}, but not a Tencent Cloud answer")
        request_id = self._text(answer.get("RequestId"), phone)
        error = answer.get("Error")
        if isinstance(error, dict):  # the whole request failed: nothing was sent
            return self._by_code(error.get("Code"), error.get("Message"), request_id, phone, now)
        statuses = answer.get("SendStatusSet")
        mine = _status_for(statuses, phone)
        if mine is None:
            return SendResult.uncertain(
                f"Tencent Cloud SMS answered without a send status for {mask_phone(phone)}"
                f" [RequestId {request_id}]"
            )
        if mine.get("Code") == "Ok":
            fee = mine.get("Fee")
            billed = f", billed as {fee}" if isinstance(fee, int) and fee != 1 else ""
            serial = self._text(mine.get("SerialNo"), phone)
            return SendResult.ok(
                f"Ok from Tencent Cloud SMS{billed} [RequestId {request_id}]",
                remote_id=serial or None,
            )
        return self._by_code(mine.get("Code"), mine.get("Message"), request_id, phone, now)

    def _by_code(
        self, code: object, message: object, request_id: str, phone: str, now: datetime
    ) -> SendResult:
        name = self._text(code, phone) or "(no code)"
        verdict = classify(name, now)
        said = self._text(message, phone)
        detail = f"Tencent Cloud SMS {name} for {mask_phone(phone)}" + (f": {said}" if said else "")
        if verdict.hint:
            detail += f" ({verdict.hint})"
        detail += f" [RequestId {request_id}]"
        if verdict.status is SendStatus.RETRY:
            return SendResult.retry(detail, verdict.retry_after)
        return SendResult(verdict.status, detail)

    def _text(self, value: object, phone: str) -> str:
        """A field of the answer as a detail shows it: one line, bounded, number masked."""
        if not isinstance(value, str | int) or isinstance(value, bool):
            return ""
        text = str(value).replace(phone, mask_phone(phone))
        if phone.startswith("+86"):  # the national number alone, as a message may quote it
            text = text.replace(phone[3:], mask_phone(phone[3:]))
        return one_line(text, self._transport.hidden)


def _response(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    answer = body.get("Response") if isinstance(body, dict) else None
    return answer if isinstance(answer, dict) else None


def _status_for(statuses: object, phone: str) -> dict[str, Any] | None:
    """The send status of `phone` (the only number sent)."""
    if not isinstance(statuses, list):
        return None
    found = [s for s in statuses if isinstance(s, dict)]
    for s in found:
        if s.get("PhoneNumber") == phone:
            return s
    return found[0] if len(found) == 1 else None


# -- building ---------------------------------------------------------------------------------

# What `sop backends` shows, and what `create` builds before the options: plain text, every
# kind, not idempotent, the catalog's rate.
CAPABILITIES = Capabilities(idempotent=False, rate_per_minute=DEFAULT_RATES[TYPE])


def create(
    config: BackendConfig, env: Mapping[str, str], *, clock: Clock = wall_clock
) -> SmsBackend:
    """The `sms` entry point: Tencent Cloud SMS settings from the options."""
    name = config.name
    check_options(config, OPTIONS)
    refuse_target(config)
    secret_id = resolve_secret(
        option_needed(config, "secret_id"), env, what=f'backend "{name}": secret_id'
    )
    secret_key = resolve_secret(
        option_needed(config, "secret_key"), env, what=f'backend "{name}": secret_key'
    )
    for what, value in (("secret_id", secret_id), ("secret_key", secret_key)):
        if not re.fullmatch(r"[A-Za-z0-9+/=_-]{1,128}", value):  # no value in the message
            raise BackendError(f'backend "{name}": {what} is not a Tencent Cloud API key')
    sdk_app_id = option_needed(config, "sdk_app_id")
    template_id = option_needed(config, "template_id")
    for what, value in (("sdk_app_id", sdk_app_id), ("template_id", template_id)):
        if not re.fullmatch(r"[0-9]{1,20}", value):
            raise BackendError(f'backend "{name}": {what} must be the number the console shows')
    region = option_str(config, "region") or DEFAULT_REGION
    if not re.fullmatch(r"[a-z]{2}-[a-z]+(-[0-9])?", region):
        raise BackendError(f'backend "{name}": region must look like ap-guangzhou')
    settings = SmsSettings(
        sdk_app_id=sdk_app_id,
        template_id=template_id,
        sign_name=option_str(config, "sign_name"),
        region=region,
        base_url=_origin(name, base_url_option(config, env) or ENDPOINT),
        param_separator=option_str(config, "param_separator") or PARAM_SEPARATOR,
        param_count=_param_count(name, config.options.get("param_count")),
    )
    caps = plain_capabilities(config, CAPABILITIES, "an SMS is")
    parts = urlsplit(settings.base_url)
    # opened last, once nothing else can fail: both keys are scrubbed from what it says
    transport = Transport(
        f"{parts.scheme}://{parts.netloc.lower()}", (secret_id, secret_key), **timeouts(config)
    )
    return SmsBackend(
        name, settings, caps, transport, secret_id=secret_id, secret_key=secret_key, clock=clock
    )


def _origin(name: str, url: str) -> str:
    """`url` (an http(s) URL, `base_url_option` checked it) when it is an origin alone."""
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise BackendError(
            f'backend "{name}": base_url must be an http(s) origin such as {ENDPOINT}'
        )
    return url


def _param_count(name: str, value: object) -> int | None:
    """The template's number of parameters, 0 to 32, or None (not checked)."""
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,2}", text) or int(text) > 32:
        raise BackendError(f'backend "{name}": param_count must be a whole number, 0 to 32')
    return int(text)
