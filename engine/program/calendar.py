"""Where a playbook's calendar starts: the one rule for plan, simulate and run."""

from __future__ import annotations

from datetime import date

from ..lang.model import Playbook

# Used when neither `--start` nor `community.start` is given: a Monday, so weekly crons read
# naturally in examples and tests.
DEFAULT_START = date(2027, 1, 4)
# The dates a calendar may start on: those `community.start` accepts (schemas: 1970 to 2199).
FIRST_START, LAST_START = date(1970, 1, 1), date(2199, 12, 31)


class StartDateError(ValueError):
    """A start date that is not a real date, or lies outside FIRST_START..LAST_START."""


def start_date(pb: Playbook, start: date | None = None) -> date:
    """The first local day: `start` if given, else `community.start`, else DEFAULT_START."""
    if start is None and pb.community.start:
        try:
            start = date.fromisoformat(pb.community.start)
        except ValueError:
            raise StartDateError(
                f"community.start {pb.community.start!r} is not a real date (YYYY-MM-DD)"
            ) from None
    if start is None:
        return DEFAULT_START
    if not FIRST_START <= start <= LAST_START:
        raise StartDateError(
            f"the plan must start between {FIRST_START} and {LAST_START}, not {start}"
        )
    return start
