"""Exit codes, decided in one place."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """0 ok, 1 findings or failed gates, 2 usage or unreadable input."""

    OK = 0
    FINDINGS = 1
    USAGE = 2


def validation_exit(errors: int, warnings: int, *, strict: bool, unreadable: bool) -> ExitCode:
    """The exit code of `sop validate`."""
    if unreadable:
        return ExitCode.USAGE
    if errors or (strict and warnings):
        return ExitCode.FINDINGS
    return ExitCode.OK
