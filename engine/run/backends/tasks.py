"""The `tasks` backend: the staff task list, which sends nothing outward.

The runner opens the staff task in its store when a backend says `opens_tasks` (the store write
is the runner's, so the task and the occurrence's state commit together); this backend only
accepts the delivery and names the backend that reminds staff (`notify`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._common import capabilities, check_fits, check_options, option_str, refuse_target


class TaskListBackend:
    """Accepts staff tasks for the runner to open; idempotent, since the store keys tasks."""

    opens_tasks: ClassVar[bool] = True  # read by the runner: open a staff task for each send

    def __init__(self, name: str, caps: Capabilities, notify: str | None = None) -> None:
        self.name = name
        self.capabilities = caps
        self.notify = notify  # the backend id that reminds staff of new tasks, if any

    def send(self, delivery: Delivery) -> SendResult:
        """Accept the task (the runner records it)."""
        return check_fits(delivery, self.capabilities) or SendResult.ok("task opened")

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"TaskListBackend(name={self.name!r}, notify={self.notify!r})"


# What it can do before options (`sop backends`):
CAPABILITIES = Capabilities(idempotent=True)


def create(config: BackendConfig, env: Mapping[str, str]) -> TaskListBackend:
    """The `tasks` entry point."""
    check_options(config, ())
    refuse_target(config)
    caps = capabilities(config, idempotent=True)
    return TaskListBackend(config.name, caps, option_str(config, "notify"))
