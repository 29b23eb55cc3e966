"""What the chat backends share: the kinds a chat carries, their common options, a message in parts.

The chat backends (`slack-webhook`, `discord-webhook`, `telegram-bot`, `feishu-bot`,
`dingtalk-bot`, `wecom-robot`, `wecom-app`) split a text longer than one message rather than
refuse it. So each checks the kind only (`_common.check_kind`), says how many messages a delivery
becomes (`cost(delivery)`, which the runner takes as rate tokens), and posts the parts with
`send_parts`. Their options read the same way everywhere: `markdown` (plain text unless the
platform's dialect is named), `max_length` (one message's limit, which the text is split to),
`overflow` (`split` or `truncate`) and `rate` (the catalog's unless declared).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from ...core.catalog import DEFAULT_RATES, MESSAGE_KINDS
from ..ports import BackendConfig, Capabilities, Delivery, SendResult, SendStatus
from ._common import BackendError, check_kind, option_int, option_str
from ._text import Policy, Unit, fit, size, truncate

# What a chat can carry: every kind that puts a message in front of members, and staff reminders.
# `tag`, `remove` and `mute` are actions on members that a message would only describe.
CHAT_KINDS = frozenset(MESSAGE_KINDS | {"task"})
# A later part refused with `retry` is sent once more after the wait it names (PART_RETRY_WAIT
# when it names none), if that is at most PART_WAIT: giving up would leave the message half
# posted (`uncertain`).
PART_WAIT = 10.0
PART_RETRY_WAIT = 1.0
MIN_MESSAGE = 64  # the smallest `max_length`: room for a part's "(10/10)" and some text
# What every chat backend over HTTP takes besides `markdown`, `max_length` and `rate`.
CHAT_OPTIONS = ("base_url", "overflow", "connect_timeout", "read_timeout")


def addressed(delivery: Delivery) -> bool:
    """Whether a delivery speaks to its member (not a staff task, or a post, about one)."""
    return delivery.audience == "member" and bool(delivery.member) and delivery.kind != "task"


def unsendable(
    delivery: Delivery, caps: Capabilities, *, empty: str, text: str | None = None
) -> SendResult | None:
    """Why a chat backend sends nothing for `delivery`, or None: a kind it does not carry
    (`check_kind`; a long text is split, never refused), or a text (`text`, when the backend
    cleans it first) of nothing but white space, `permanent` with `empty` as the detail."""
    unfit = check_kind(delivery, caps)
    if unfit is not None:
        return unfit
    if not (delivery.text if text is None else text).strip():
        return SendResult.permanent(empty)
    return None


# -- capabilities and options -------------------------------------------------------------------


def chat_capabilities(
    type_name: str, *, max_length: int | None, unit: Unit, mentions: bool
) -> Capabilities:
    """What a chat backend declares before options (its module's `CAPABILITIES`, which `sop
    backends` shows): the chat kinds, one message's limit in `unit`, plain text, not idempotent
    (no chat platform drops a repeated message), the catalog's rate."""
    return Capabilities(
        kinds=CHAT_KINDS,
        max_length=max_length,
        length_unit=unit.value,
        mentions=mentions,
        markdown=None,
        idempotent=False,
        rate_per_minute=DEFAULT_RATES[type_name],
    )


def configured(
    caps: Capabilities, config: BackendConfig, *, native: str, ceiling: int
) -> Capabilities:
    """`caps` after the options every chat backend reads: `max_length` (`message_limit`, up to
    `ceiling`), `markdown` (`dialect`: `native` or plain text) and `rate`."""
    return replace(
        caps,
        max_length=message_limit(config, caps.max_length, ceiling),
        markdown=dialect(config, native),
        rate_per_minute=rate(config, config.type),
    )


def dialect(config: BackendConfig, native: str) -> str | None:
    """The `markdown` option: the platform's dialect when it names it, else plain text (None),
    which is also what `markdown: none` says."""
    value = option_str(config, "markdown")
    if value is None or value.lower() == "none":
        return None
    if value.lower() == native:
        return native
    raise BackendError(
        f'backend "{config.name}": markdown must be {native} or none (plain text, the default)'
    )


def message_limit(config: BackendConfig, default: int | None, ceiling: int) -> int | None:
    """The `max_length` option: one message's limit, MIN_MESSAGE to the platform's `ceiling`,
    else `default`. A longer text is split (or truncated) to it, never refused."""
    chosen = option_int(config, "max_length")
    if chosen is None:
        return default
    if not MIN_MESSAGE <= chosen <= ceiling:
        raise BackendError(
            f'backend "{config.name}": max_length must be between {MIN_MESSAGE} and {ceiling}'
        )
    return chosen


def overflow_policy(config: BackendConfig) -> Policy:
    """The `overflow` option: `split` (the default) or `truncate`."""
    value = option_str(config, "overflow") or Policy.SPLIT.value
    try:
        return Policy(value)
    except ValueError:
        raise BackendError(f'backend "{config.name}": overflow must be split or truncate') from None


def rate(config: BackendConfig, type_name: str) -> int:
    """The configured rate, else the platform's (core.catalog.DEFAULT_RATES, as `sop validate`
    reads it)."""
    return config.rate_per_minute or DEFAULT_RATES[type_name]


# -- the length policy after a dialect ----------------------------------------------------------


def fit_adapted(
    text: str, limit: int, unit: Unit, policy: Policy, adapt: Callable[[str], str]
) -> list[tuple[str, str]]:
    """`text` split (or truncated) so that each part, once adapted to a dialect, fits `limit`.

    The source is cut, not the adapted text, so a cut never falls inside an escape or an
    entity; since escaping lengthens a part, the budget shrinks until every part fits. Returns
    (source part, adapted part) pairs.
    """
    budget = limit
    for _ in range(8):
        parts = [(p, adapt(p)) for p in fit(text, budget, unit, policy)]
        worst = max(size(a, unit) for _, a in parts)
        if worst <= limit:
            return parts
        budget = min(budget - 1, budget * limit // worst)
        if budget < MIN_MESSAGE:
            break
    # escaping that more than multiplies the text by eight: keep what fits, marked as cut
    return [(p, truncate(a, limit, unit)) for p, a in parts]


# -- a message in parts -------------------------------------------------------------------------

P = TypeVar("P")  # one part as a backend sends it (a text, a request body)


def send_parts(
    parts: Sequence[P],
    send_one: Callable[[int, P], SendResult],
    sleep: Callable[[float], None],
    *,
    interval: float = 0.0,
) -> SendResult:
    """Send `parts` (numbered from 1) in order under one delivery, `interval` seconds apart.

    The first part's failure is the delivery's (nothing went out), named `part 1/n` when there
    are more. A later part refused with `retry` certainly did not go out: it is sent once more
    after the wait it names (PART_RETRY_WAIT when none), if that is at most PART_WAIT. Any other
    failure of a later part is `uncertain`, naming it: the earlier parts were posted, so the
    message is never resent whole. Success says how many parts went, with every `remote_id`.
    """
    n = len(parts)
    ids: list[str] = []
    last = SendResult.permanent("nothing to send")
    for i, part in enumerate(parts, 1):
        if i > 1 and interval:
            sleep(interval)
        result = send_one(i, part)
        if i > 1 and result.status is SendStatus.RETRY:
            wait = PART_RETRY_WAIT if result.retry_after is None else result.retry_after
            if wait <= PART_WAIT:
                sleep(wait)
                result = send_one(i, part)
        if result.status is not SendStatus.OK:
            if i == 1:
                return result if n == 1 else replace(result, detail=f"part 1/{n}: {result.detail}")
            return SendResult.uncertain(
                f"part {i}/{n} failed after {i - 1} of {n} parts were posted (not resent:"
                f" resolve by hand): {result.detail}"
            )
        if result.remote_id:
            ids.append(result.remote_id)
        last = result
    if n == 1:
        return last
    return SendResult.ok(f"{last.detail}, in {n} parts", ",".join(ids) or None)
