"""The built-in metrics, defined once: meaning, unit, range, when undefined, and their arithmetic.

The simulator computes each metric with these functions today and the runtime will compute it
with the same functions from recorded events tomorrow, so a gate reads one number in both. Inputs
are plain counts and arrays (one value per run, or one per day and run); nothing here knows the
simulator. "Undefined" is NaN in arrays, `null` in JSON and "undefined" in text; a gate that
needs an undefined value does not pass (engine/program/gates.py), it never reads it as 0.

Days: day d is the d-th local day of the playbook (0 is the first); a metric of day d is taken at
its close. A member who joined on day j has been a member for K days at the close of day j+K-1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.catalog import BUILTIN_METRICS, MetricUnit
from ..core.expr import divide

INF = math.inf
UNDEFINED = math.nan
COHORT_DAYS = 7  # retention_dK pools the cohorts of 7 join days (one day's joiners are few)
WEEK = 7  # the window of churn_rate, ugc_posts and weekly_participation
RETENTION_DAYS = (1, 7, 30, 90)


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    """A built-in metric: what it measures, its unit and range, and when it has no value."""

    name: str
    unit: MetricUnit
    summary: str  # one line (from the catalog)
    measured: str  # how it is computed from members and events on day d
    low: float
    high: float  # INF when unbounded
    undefined: str  # when it has no value ("" when it always has one)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `sop metrics --format json` (an unbounded end is null)."""
        return {
            "name": self.name,
            "unit": str(self.unit),
            "summary": self.summary,
            "measured": self.measured,
            "range": [self.low, None if self.high == INF else self.high],
            "undefined": self.undefined or None,
        }

    @property
    def range_text(self) -> str:
        """The range as text: `0..1`, `0..∞`."""
        hi = "∞" if self.high == INF else f"{self.high:g}"
        return f"{self.low:g}..{hi}"


_NO_MEMBERS = "when the community has no members"


def _days_text(k: int) -> str:
    return f"{k} day{'s' * (k != 1)}"


def _retention_spec(k: int) -> tuple[str, tuple[float, float], str]:
    last = "d" if k == 1 else f"d-{k - 1}"
    close = "j" if k == 1 else f"j+{k - 1}"
    return (
        f"of the members who joined on days d-{k + 5}..{last} (7 join days), the share still"
        f" members after {_days_text(k)} of membership (joined on day j: at the close of day"
        f" {close})",
        (0, 1),
        f"before any cohort is {_days_text(k)} old, or when nobody joined on those 7 days",
    )


# name -> (how it is measured on day d, (low, high), when undefined)
_SPEC: dict[str, tuple[str, tuple[float, float], str]] = {
    "members": ("members at the close of the day", (0, INF), ""),
    "new_members": ("members who joined during the day", (0, INF), ""),
    "daily_speakers": ("members who spoke during the day (members at its close)", (0, INF), ""),
    "daily_speak_rate": ("daily_speakers ÷ members", (0, 1), _NO_MEMBERS),
    "weekly_participation": (
        "members who took part in an activity on one of the last 7 days (d-6..d) ÷ members",
        (0, 1),
        _NO_MEMBERS,
    ),
    **{f"retention_d{k}": _retention_spec(k) for k in RETENTION_DAYS},
    "core_members": (
        "members in any tier above the lowest; with fewer than 2 tiers: members whose days of"
        " speaking plus days of taking part in the last 7 days add up to 3 or more",
        (0, INF),
        "",
    ),
    "vip_members": (
        "members in the highest tier of a playbook with 3 or more tiers (0 with 2 tiers); with"
        " fewer than 2 tiers: as core_members, adding up to 5 or more",
        (0, INF),
        "",
    ),
    "paying_members": (
        "members (at the close of the day) who have paid at least once",
        (0, INF),
        "",
    ),
    "conversion_rate": (
        "members who ever paid, departed ones included ÷ members ever joined",
        (0, 1),
        "before anyone has joined",
    ),
    "fission_rate": (
        "joins by referral since the start ÷ all joins since the start",
        (0, 1),
        "before anyone has joined",
    ),
    "fission_multiplier": (
        "joins by referral since the start ÷ joins that were not referrals (the K-factor)",
        (0, INF),
        "before the first join that was not a referral",
    ),
    "churn_rate": (
        "members who left on days d-6..d ÷ (members + those who left); each departure counts"
        " once, on its day",
        (0, 1),
        "when the community has no members and nobody left in the last 7 days",
    ),
    "ugc_posts": ("user-generated posts on days d-6..d", (0, INF), ""),
    "groups": ("⌈members ÷ community.capacity⌉ (500 by default)", (0, INF), ""),
    "days_in_stage": (
        "days since the gate's (or guard's) stage started: at the check after day d, d+1 minus"
        " the stage's first day",
        (0, INF),
        "",
    ),
    "community_age": ("d: days since the playbook started (0 on its first day)", (0, INF), ""),
}

DEFINITIONS: dict[str, MetricDefinition] = {
    name: MetricDefinition(name, info.unit, info.description, spec[0], *spec[1], spec[2])
    for name, info in BUILTIN_METRICS.items()
    for spec in [_SPEC[name]]
}


def may_be_undefined(name: str) -> bool:
    """Whether built-in `name` can be undefined (custom metrics: always)."""
    d = DEFINITIONS.get(name)
    return d is None or bool(d.undefined)


# -- arithmetic (vectorised: a value per run, or plain floats) ---------------------------------


def ratio(num: Any, den: Any) -> Any:
    """num ÷ den, undefined (NaN) where den is 0: a metric's ratio has no value, not 0."""
    return divide(num, den, empty=UNDEFINED)


def share_of_members(count: Any, members: Any) -> Any:
    """daily_speak_rate, weekly_participation: count ÷ members."""
    return ratio(count, members)


def cohort_days(day: int, k: int) -> tuple[int, int] | None:
    """The join days (lo, hi) whose day-k retention retention_dk reads on `day`, or None."""
    hi = day - k + 1  # joined on day hi: k days of membership at the close of `day`
    if hi < 0:
        return None
    return max(0, hi - COHORT_DAYS + 1), hi


def retention(joined: Any, survivors: Any, day: int, k: int) -> Any:
    """retention_dk on `day` from per-join-day arrays (runs, days).

    `joined[:, j]`: members who joined on day j; `survivors[:, j]`: how many of them were still
    members at the close of day j+k-1 (recorded on that day).
    """
    import numpy as np

    joined = np.asarray(joined, dtype=float)
    window = cohort_days(day, k)
    if window is None:
        return np.full(joined.shape[:-1], UNDEFINED)
    lo, hi = window
    surv = np.asarray(survivors, dtype=float)[..., lo : hi + 1].sum(axis=-1)
    return ratio(surv, joined[..., lo : hi + 1].sum(axis=-1))


def conversion_rate(ever_paid: Any, ever_joined: Any) -> Any:
    """Members who ever paid (departed ones too) ÷ members ever joined."""
    return ratio(ever_paid, ever_joined)


def fission_rate(referred: Any, joins: Any) -> Any:
    """Joins by referral ÷ all joins, since the start."""
    return ratio(referred, joins)


def fission_multiplier(referred: Any, joins: Any) -> Any:
    """Joins by referral ÷ joins that were not referrals, since the start (the K-factor)."""
    import numpy as np

    return ratio(referred, np.asarray(joins, dtype=float) - referred)


def churn_rate(left_week: Any, members: Any) -> Any:
    """Departures in the last 7 days ÷ (members + those departures)."""
    import numpy as np

    return ratio(left_week, np.asarray(members, dtype=float) + left_week)


def groups(members: Any, capacity: int) -> Any:
    """Chat groups in use: a full group opens a new one."""
    import numpy as np

    return np.ceil(np.asarray(members, dtype=float) / capacity)


def before_start() -> dict[str, float]:
    """The built-in metrics before the first day closes: counts 0, every ratio undefined."""
    return {n: UNDEFINED if d.undefined else 0.0 for n, d in DEFINITIONS.items()}


def why_undefined(name: str, values: Mapping[str, float]) -> str:
    """Why built-in `name` has no value, as precisely as the day's other metrics tell."""
    d = DEFINITIONS.get(name)
    if d is None or not d.undefined:
        return "no value"
    if name.startswith("retention_d"):
        k = int(name[len("retention_d") :])
        age = values.get("community_age")
        if age is None or math.isnan(age):
            return d.undefined
        if age + 1 < k:
            return f"no cohort is {_days_text(k)} old"
        last = "d" if k == 1 else f"d-{k - 1}"
        return f"nobody joined on days d-{k + 5}..{last}, the 7 join days it reads"
    return d.undefined


# -- the table, as text, JSON and Markdown (docs/metrics.md holds the Markdown) -----------------


def table() -> list[dict[str, Any]]:
    """Every built-in metric's definition as plain data, in catalogue order."""
    return [d.as_dict() for d in DEFINITIONS.values()]


def text_table() -> str:
    """The definitions for a terminal: one block a metric."""
    lines = []
    for d in DEFINITIONS.values():
        lines.append(f"{d.name}  ({d.unit}, {d.range_text})  {d.summary}")
        lines.append(f"    measured:  {d.measured}")
        lines.append(f"    undefined: {d.undefined or 'never'}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The definitions as the Markdown table of docs/metrics.md."""
    rows = [
        "| metric | unit | range | measured on day d | undefined |",
        "|---|---|---|---|---|",
    ]
    for d in DEFINITIONS.values():
        cells = [f"`{d.name}`", str(d.unit), d.range_text, d.measured, d.undefined or "never"]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
