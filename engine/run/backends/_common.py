"""What every backend shares: secrets, options, the fit check and the delivery as a JSON record.

Kept apart from the registry (`__init__.py`) so a backend module imports only this, and so the
JSON shape a file and a webhook receive has one home (`record`).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ...core.suggest import did_you_mean
from ...core.textsafe import dumps
from ..ports import BackendConfig, Capabilities, Delivery, SendResult


class BackendError(ValueError):
    """A backend cannot be built as configured; the message is for the operator, without secrets."""


# The same form `sop validate` accepts (SOP211): the whole value is one reference.
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")

# Names the playbook's declaration may carry into `options` (engine/lang/model.py BackendSpec);
# a backend that has no use for one ignores it, since the schema allows them on every type.
PLAYBOOK_OPTIONS = frozenset({"key", "token", "notify"})
# Options every built-in accepts: they make a file or the console imitate a platform's limits.
COMMON_OPTIONS = frozenset({"max_length", "markdown"})


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


def refuse_target(config: BackendConfig) -> None:
    """For a backend that sends nowhere: a target given anyway is a mistake worth saying."""
    if config.target:
        raise BackendError(
            f'backend "{config.name}" ({config.type}) takes no target; route it as'
            f" {config.name}={config.type}"
        )


# -- sending ------------------------------------------------------------------------------------


def check_fits(delivery: Delivery, caps: Capabilities) -> SendResult | None:
    """A permanent failure when the delivery exceeds what the backend declares, else None."""
    if caps.kinds is not None and delivery.kind not in caps.kinds:
        return SendResult.permanent(
            f"this backend does not send `{delivery.kind}` actions"
            f" (it sends {', '.join(sorted(caps.kinds))})"
        )
    if caps.max_length is not None and len(delivery.text) > caps.max_length:
        return SendResult.permanent(
            f"the text is {len(delivery.text)} characters; this backend takes at most"
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
