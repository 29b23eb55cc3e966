"""Exit codes, and which findings mean "could not read the input": decided in one place."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """0 ok, 1 findings or failed gates, 2 usage or unreadable input."""

    OK = 0
    FINDINGS = 1
    USAGE = 2


# Diagnostics that mean "could not read the input" (too large, not UTF-8, not a readable regular
# file) rather than "the playbook is wrong": the input itself is the problem, like a bad option.
UNREADABLE = frozenset({"SOP003", "SOP004", "SOP006"})


class UsageError(Exception):
    """Options or input a command cannot use; shown as `sop: error: <message>`, exit 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    exit_code = ExitCode.USAGE


def validation_exit(errors: int, warnings: int, *, strict: bool, unreadable: bool) -> ExitCode:
    """The exit code of `sop validate`."""
    if unreadable:
        return ExitCode.USAGE
    if errors or (strict and warnings):
        return ExitCode.FINDINGS
    return ExitCode.OK
