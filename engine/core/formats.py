"""The output formats of each command, as closed sets (cheap to import: `sop --help` reads them)."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class ValidateFormat(enum.StrEnum):
    """Formats of `sop validate` (renderers in engine/report.py)."""

    TEXT = "text"
    JSON = "json"
    GITHUB = "github"
    SARIF = "sarif"
    JUNIT = "junit"


class PlanFormat(enum.StrEnum):
    """Formats of `sop plan`."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    ICS = "ics"
    MARKDOWN = "markdown"


class GraphFormat(enum.StrEnum):
    """Formats of `sop graph`."""

    MERMAID = "mermaid"
    DOT = "dot"
    JSON = "json"


class TextOrJson(enum.StrEnum):
    """Formats of `sop diff`, `sop simulate`, `sop rules`, `sop init`."""

    TEXT = "text"
    JSON = "json"


def default_validate_format(environ: Mapping[str, str]) -> ValidateFormat:
    """GitHub annotations inside a GitHub Actions job, plain text elsewhere."""
    return ValidateFormat.GITHUB if environ.get("GITHUB_ACTIONS") == "true" else ValidateFormat.TEXT


def choices(formats: type[enum.StrEnum]) -> list[str]:
    """The values of a format enum, in order, for an option's choices."""
    return [str(f) for f in formats]
