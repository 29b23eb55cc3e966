"""The `console` backend: one terminal-safe line per delivery on standard output."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TextIO

from ...core.textsafe import terminal
from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._common import capabilities, check_fits, check_options, refuse_target


def line(backend: str, delivery: Delivery) -> str:
    """`<due> [<backend>] <action> <member or audience>: <text>`, every part terminal-safe.

    Message text comes from templates filled with member data (names, events): a newline or an
    escape sequence in it must not forge a second line or drive the terminal.
    """
    who = f"@{delivery.member}" if delivery.member else delivery.audience
    head = " ".join(
        (
            delivery.scheduled_at.isoformat(timespec="minutes"),
            f"[{backend}]",
            delivery.action,
            who,
        )
    )
    return terminal(head) + ": " + terminal(delivery.text)


class ConsoleBackend:
    """Prints deliveries; not idempotent (a line printed twice is seen twice)."""

    def __init__(self, name: str, caps: Capabilities, stream: TextIO | None = None) -> None:
        self.name = name
        self.capabilities = caps
        self._stream = stream  # None: sys.stdout as it is at each send (redirections apply)

    def send(self, delivery: Delivery) -> SendResult:
        """Print one line for `delivery` and flush it."""
        unfit = check_fits(delivery, self.capabilities)
        if unfit is not None:
            return unfit
        stream = self._stream if self._stream is not None else sys.stdout
        text = line(self.name, delivery) + "\n"
        try:
            try:
                stream.write(text)
            except UnicodeEncodeError:  # a stream that is not UTF-8: escapes, not a crash
                encoding = getattr(stream, "encoding", None) or "ascii"
                stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            stream.flush()
        except OSError as e:  # a full disk or a closed pipe behind stdout
            return SendResult.retry(
                f"cannot write to the console: {e.strerror or type(e).__name__}"
            )
        return SendResult.ok()

    def close(self) -> None:
        """Nothing to release: standard output is not ours to close."""

    def __repr__(self) -> str:
        return f"ConsoleBackend(name={self.name!r})"


# What it can do before options (`sop backends`):
CAPABILITIES = Capabilities(idempotent=False)


def create(config: BackendConfig, env: Mapping[str, str]) -> ConsoleBackend:
    """The `console` entry point."""
    check_options(config, ())
    refuse_target(config)
    return ConsoleBackend(config.name, capabilities(config, idempotent=False))
