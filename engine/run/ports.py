"""The runtime's ports: what a backend, a metric source and a clock must do for the runner.

Each protocol documents its contract; the runner (engine/run/runner.py) relies on nothing else.
The state store has its own module (engine/run/store/base.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


class SendStatus(enum.StrEnum):
    """How a send ended, as the backend classifies it."""

    OK = "ok"  # the platform accepted it
    RETRY = "retry"  # a transient failure: try again (after `retry_after` when given)
    PERMANENT = "permanent"  # will never succeed as it is: dead-letter it
    UNCERTAIN = "uncertain"  # it may have reached the platform (a timeout after the request went)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a backend says about one send."""

    status: SendStatus
    detail: str = ""  # what the platform said, without secrets
    retry_after: float | None = None  # seconds, when the platform said how long to wait
    remote_id: str | None = None  # the platform's id of what was sent, when it gives one
    # accepted, but it goes out only once a staff member confirms it on the platform (WeCom's
    # customer-group mass sends): the runner opens a staff task that tracks `remote_id`
    awaiting_confirmation: bool = False

    @classmethod
    def ok(cls, detail: str = "", remote_id: str | None = None) -> SendResult:
        """Accepted."""
        return cls(SendStatus.OK, detail, None, remote_id)

    @classmethod
    def retry(cls, detail: str, retry_after: float | None = None) -> SendResult:
        """A transient failure."""
        return cls(SendStatus.RETRY, detail, retry_after)

    @classmethod
    def permanent(cls, detail: str) -> SendResult:
        """A failure that retrying will not fix."""
        return cls(SendStatus.PERMANENT, detail)

    @classmethod
    def uncertain(cls, detail: str) -> SendResult:
        """The request may have arrived: resent only by an idempotent backend."""
        return cls(SendStatus.UNCERTAIN, detail)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can send, and whether sending twice with one key is harmless."""

    kinds: frozenset[str] | None = None  # action kinds it accepts; None: every kind
    max_length: int | None = None  # of one message, in `length_unit`s
    length_unit: str = "chars"  # chars | bytes (UTF-8) | utf16 (engine/run/backends/_text.py)
    mentions: bool = False
    markdown: str | None = None  # the dialect, e.g. "commonmark", "wecom"
    idempotent: bool = False  # True: the platform drops a repeat of one idempotency key
    rate_per_minute: int | None = None  # the platform's documented limit per target


@dataclass(frozen=True, slots=True)
class Delivery:
    """One occurrence as a backend receives it: rendered, with its idempotency key."""

    key: str  # the idempotency key: the same on every attempt
    run: str
    playbook: str
    action: str
    stage: str | None
    kind: str
    audience: str
    member: str | None
    owner: str | None
    scheduled_at: datetime
    due_at: datetime
    title: str
    text: str
    attempt: int  # 1 for the first send
    # the member's attributes from their events (name, phone, platform user id ...), for
    # backends that address a member (SMS to a phone, a mention); empty for group posts
    attributes: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Quota:
    """A platform's allowance per period (WeCom: mass sends per customer group a month)."""

    target: str  # what is counted (a group id)
    period: str  # which period (e.g. "2027-01"): a new period starts a new count
    limit: int


@runtime_checkable
class Backend(Protocol):
    """Sends deliveries to one target (a group robot, a webhook, a file, a task list).

    Optional: `quotas(delivery, now) -> Sequence[Quota]` — allowances the platform counts per
    period; the runner counts them durably in the store and skips (with the reason) a delivery
    the platform would drop for being over one.

    Contract: `send` is called from one thread at a time, with the delivery's idempotency key;
    it returns a classified result and raises only for programming errors (a raised exception is
    recorded as a retryable failure). It must not log or return secrets. A backend that declares
    `idempotent` guarantees that a second send with the same key has no second effect, which is
    what lets the runner resend an occurrence left uncertain by a crash.

    Optional: `cost(delivery) -> int`, how many platform messages `delivery` becomes once split
    (a chat backend posts a text longer than one message's `max_length` in parts). The runner
    takes that many tokens from the backend's rate bucket before `send` (at least 1; a backend
    without `cost` costs 1 a delivery), so a long message cannot overrun the platform's limit.
    It must be pure: no request, the same answer for the same delivery.
    """

    name: str
    capabilities: Capabilities

    def send(self, delivery: Delivery) -> SendResult:
        """Send one delivery."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """How to build one backend: the playbook's declaration, or `--backend NAME=TYPE:TARGET`."""

    name: str  # the playbook's backend id
    type: str  # a registered backend type (entry point name in `sop.backends`)
    target: str | None = field(default=None, repr=False)  # a URL or path (may hold a token)
    options: Mapping[str, object] = field(default_factory=dict)
    rate_per_minute: int | None = None


class BackendFactory(Protocol):
    """An entry point of the `sop.backends` group: builds a backend from its configuration.

    `env` is the process environment (secrets are read from it, never from the playbook).
    Raises `ValueError` with a message for the operator when the configuration cannot work.
    """

    def __call__(self, config: BackendConfig, env: Mapping[str, str]) -> Backend: ...


@runtime_checkable
class MetricSource(Protocol):
    """Values of metrics the runtime cannot count from member events (custom metrics).

    Contract: `read(at)` returns each metric's latest value known at or before `at` (a float;
    missing names are simply absent, never 0). It may do I/O; it raises `MetricSourceError` with a
    message for the operator when the source cannot be read, which leaves its metrics unknown.
    """

    name: str

    def read(self, at: datetime) -> Mapping[str, float]:
        """The latest value of each metric at or before `at`."""
        ...


class MetricSourceError(Exception):
    """A metric source could not be read (its metrics stay unknown)."""


class MetricSourceFactory(Protocol):
    """An entry point of the `sop.metric_sources` group: builds a source from `TYPE:SPEC`."""

    def __call__(self, spec: str, env: Mapping[str, str]) -> MetricSource: ...


class Clock(Protocol):
    """Where the runner reads the time and waits.

    Contract: `now()` is aware and never goes backwards; `sleep_until(t)` returns at `t` or
    earlier (a wake-up: the runner then looks for work again), never raises for a past `t`.
    """

    def now(self) -> datetime:
        """The current instant (aware)."""
        ...

    def sleep_until(self, t: datetime) -> None:
        """Wait until `t`, or less when woken."""
        ...
