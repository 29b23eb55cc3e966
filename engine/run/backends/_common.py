"""What every backend shares: secrets, options, the fit checks, details and the JSON record.

Kept apart from the registry (`__init__.py`) so a backend module imports only this, and so the
JSON shape a file and a webhook receive has one home (`record`). The HTTP exchange is `_http.py`;
what the chat backends share is `_chat.py`.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ...core.suggest import did_you_mean
from ...core.textsafe import dumps, terminal
from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._text import Unit, size


class BackendError(ValueError):
    """A backend cannot be built as configured; the message is for the operator, without secrets."""


# The same form `sop validate` accepts (SOP211): the whole value is one reference.
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")

# Names the playbook's declaration may carry into `options` (engine/lang/model.py BackendSpec);
# a backend that has no use for one ignores it, since the schema allows them on every type.
PLAYBOOK_OPTIONS = frozenset({"key", "token", "notify"})
# Options every built-in accepts: they make a file or the console imitate a platform's limits.
COMMON_OPTIONS = frozenset({"max_length", "markdown"})
DETAIL_LIMIT = 200  # characters of what a platform said that a detail quotes


class OperatorText(str):
    """An option value the operator gave on the command line (`--backend NAME=TYPE;OPTION=…`).

    The playbook is untrusted (whoever opened the pull request wrote it); a route is the
    operator's. `configs_for` marks a route's option values with this type, so a factory can
    accept from the operator what it refuses from the playbook (a `base_url` that is neither
    `${env:NAME}` nor a loopback address). A plain `str` is never trusted this way.
    """

    __slots__ = ()


def resolve_secret(value: str, env: Mapping[str, str], *, what: str = "value") -> str:
    """`value` with its `${env:NAME}` reference read from `env`; a literal is returned as it is.

    The error names the variable and `what` it was for, never a value.
    """
    m = _ENV_REF.fullmatch(value)
    if m is None:
        if "${env:" in value:
            raise BackendError(
                f"{what}: an environment reference must be the whole value, as ${{env:NAME}}"
            )
        return value
    name = m.group(1)
    resolved = env.get(name)
    if resolved is None:
        raise BackendError(f"{what}: environment variable {name} is not set")
    if not resolved:
        raise BackendError(f"{what}: environment variable {name} is empty")
    return resolved


def env_reference(value: str) -> str | None:
    """The variable name of a `${env:NAME}` value, or None for a literal."""
    m = _ENV_REF.fullmatch(value)
    return m.group(1) if m else None


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***` (what a platform echoes back can hold one)."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def one_line(text: str, secrets: Iterable[str] = ()) -> str:
    """What a platform said, as a detail quotes it: one line, secrets `***`, at most
    DETAIL_LIMIT characters, terminal-safe."""
    text = redact(" ".join(text.split()), secrets)
    if len(text) > DETAIL_LIMIT:
        text = text[: DETAIL_LIMIT - 1] + "…"
    return terminal(text)


def said(text: object, secrets: Iterable[str] = ()) -> str:
    """`: <what the platform said>` (`one_line`), or `` when it said nothing in text."""
    if not isinstance(text, str):
        return ""
    line = one_line(text, secrets)
    return f": {line}" if line else ""


# -- options ------------------------------------------------------------------------------------


def check_options(config: BackendConfig, accepted: Iterable[str]) -> None:
    """Refuse option names the backend does not know: a misspelt `idempotnet` must not pass."""
    known = set(accepted) | PLAYBOOK_OPTIONS | COMMON_OPTIONS
    for name in config.options:
        if name not in known:
            hint = did_you_mean(name, sorted(known - PLAYBOOK_OPTIONS))
            raise BackendError(
                f'backend "{config.name}" ({config.type}) has no option "{name}"'
                + (f"; {hint}" if hint else "")
            )


def option_str(config: BackendConfig, name: str) -> str | None:
    """A text option, or None when absent."""
    value = config.options.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BackendError(f'backend "{config.name}": option {name} must be non-empty text')
    return value


def option_needed(config: BackendConfig, name: str) -> str:
    """A text option the backend cannot work without."""
    value = option_str(config, name)
    if value is None:
        raise BackendError(f'backend "{config.name}" ({config.type}) needs the option {name}')
    return value


def option_bool(config: BackendConfig, name: str, default: bool) -> bool:
    """A yes/no option: a bool, or true/false/yes/no/1/0 as text (route options are text)."""
    value = config.options.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise BackendError(f'backend "{config.name}": option {name} must be true or false')


def option_seconds(config: BackendConfig, name: str, default: float) -> float:
    """A positive, finite number of seconds."""
    value = config.options.get(name)
    if value is None:
        return default
    seconds = math.nan
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):  # not a number: refused below
            seconds = float(value)
    if not (math.isfinite(seconds) and 0 < seconds <= 3600):
        raise BackendError(
            f'backend "{config.name}": option {name} must be a number of seconds in (0, 3600]'
        )
    return seconds


def option_int(config: BackendConfig, name: str) -> int | None:
    """A positive whole number, or None when absent."""
    value = config.options.get(name)
    if value is None:
        return None
    number = 0  # True is an int to Python, never a length to an operator
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value.strip()):
        number = int(value)
    if number < 1:
        raise BackendError(f'backend "{config.name}": option {name} must be a positive integer')
    return number


def capabilities(config: BackendConfig, *, idempotent: bool, **fixed: Any) -> Capabilities:
    """The capabilities a built-in declares: its fixed ones, then the common options and rate."""
    return Capabilities(
        max_length=option_int(config, "max_length"),
        markdown=option_str(config, "markdown"),
        idempotent=idempotent,
        rate_per_minute=config.rate_per_minute,
        **fixed,
    )


def plain_capabilities(config: BackendConfig, caps: Capabilities, what: str) -> Capabilities:
    """`caps` of a platform that shows no markup (e-mail, SMS) after the options: `max_length`
    refuses longer texts (the operator's limit: the platform's is not knowable here), `rate`
    replaces the catalog's, and `markdown` is refused, since `what` is sent as plain text."""
    if config.options.get("markdown") is not None:
        raise BackendError(
            f'backend "{config.name}": {what} sent as plain text; drop the markdown option'
        )
    return replace(
        caps,
        max_length=option_int(config, "max_length"),
        rate_per_minute=config.rate_per_minute or caps.rate_per_minute,
    )


def refuse_target(config: BackendConfig) -> None:
    """For a backend that sends nowhere: a target given anyway is a mistake worth saying."""
    if config.target:
        raise BackendError(
            f'backend "{config.name}" ({config.type}) takes no target; route it as'
            f" {config.name}={config.type}"
        )


# -- sending ------------------------------------------------------------------------------------


# The rule, one home: a backend that splits a long text into messages (the chat platforms) calls
# `check_kind` only, since its `max_length` is one message's limit, which it splits to; a backend
# that sends a delivery as one message or record (console, jsonl, webhook, null, tasks, email,
# sms) calls `check_fits`, which refuses a text over `max_length` before anything is sent.

_UNIT_WORDS = {Unit.CHARS: "characters", Unit.BYTES: "bytes (UTF-8)", Unit.UTF16: "UTF-16 units"}


def check_kind(delivery: Delivery, caps: Capabilities) -> SendResult | None:
    """A permanent failure when the backend does not send the delivery's kind, else None."""
    if caps.kinds is not None and delivery.kind not in caps.kinds:
        return SendResult.permanent(
            f"this backend does not send `{delivery.kind}` actions"
            f" (it sends {', '.join(sorted(caps.kinds))})"
        )
    return None


def check_fits(delivery: Delivery, caps: Capabilities) -> SendResult | None:
    """`check_kind`, and a permanent failure when the text is longer than `max_length`, counted
    in `length_unit` (`_text.size`); None when it fits. For backends that do not split."""
    unfit = check_kind(delivery, caps)
    if unfit is not None or caps.max_length is None:
        return unfit
    unit = Unit(caps.length_unit)
    length = size(delivery.text, unit)
    if length > caps.max_length:
        return SendResult.permanent(
            f"the text is {length} {_UNIT_WORDS[unit]}; this backend takes at most"
            f" {caps.max_length}: shorten the template"
        )
    return None


def wall_clock() -> datetime:
    """The current instant, aware (UTC)."""
    return datetime.now(UTC)


Clock = Callable[[], datetime]


def record(delivery: Delivery, backend: str, sent_at: datetime) -> dict[str, Any]:
    """The delivery as one JSON object: what a jsonl line holds and a webhook receives.

    `sent_at` is shown in the offset of `scheduled_at`, so both read in the playbook's zone.
    """
    tz = delivery.scheduled_at.tzinfo
    return {
        "key": delivery.key,
        "run": delivery.run,
        "playbook": delivery.playbook,
        "action": delivery.action,
        "stage": delivery.stage,
        "kind": delivery.kind,
        "audience": delivery.audience,
        "member": delivery.member,
        "owner": delivery.owner,
        "scheduled_at": delivery.scheduled_at.isoformat(),
        "due_at": delivery.due_at.isoformat(),
        "sent_at": sent_at.astimezone(tz).isoformat(timespec="milliseconds"),
        "attempt": delivery.attempt,
        "backend": backend,
        "title": delivery.title,
        "text": delivery.text,
    }


def encode(obj: Mapping[str, Any]) -> bytes:
    """One JSON object on one line, UTF-8: strict JSON, terminal-safe (`core.textsafe.dumps`)."""
    return dumps(dict(obj), indent=None).encode("utf-8")
