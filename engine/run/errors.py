"""The runtime's errors for the operator: a bad event (or import row), a run that cannot go on."""

from __future__ import annotations


class EventError(ValueError):
    """An event that cannot be accepted; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class RunError(Exception):
    """The run cannot go on as asked (said to the operator)."""
