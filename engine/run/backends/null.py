"""The `null` backend: accepts every delivery and does nothing (benchmarks, rehearsals)."""

from __future__ import annotations

from collections.abc import Mapping

from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._common import capabilities, check_fits, check_options, refuse_target


class NullBackend:
    """Sends nowhere; idempotent, since doing nothing twice is doing nothing."""

    def __init__(self, name: str, caps: Capabilities) -> None:
        self.name = name
        self.capabilities = caps

    def send(self, delivery: Delivery) -> SendResult:
        """Accept `delivery` (unless it exceeds the declared limits) and drop it."""
        return check_fits(delivery, self.capabilities) or SendResult.ok()

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"NullBackend(name={self.name!r})"


# What it can do before options (`sop backends`):
CAPABILITIES = Capabilities(idempotent=True)


def create(config: BackendConfig, env: Mapping[str, str]) -> NullBackend:
    """The `null` entry point."""
    check_options(config, ())
    refuse_target(config)
    return NullBackend(config.name, capabilities(config, idempotent=True))
