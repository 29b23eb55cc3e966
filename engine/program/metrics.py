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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.catalog import BUILTIN_METRICS, MetricUnit
from ..core.expr import divide

if TYPE_CHECKING:
    from ..lang.model import Playbook

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
    requires: str = ""  # the construct that adds it (channels, points, teams, admission)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `sop metrics --format json` (an unbounded end is null)."""
        return {
            "name": self.name,
            "unit": str(self.unit),
            "summary": self.summary,
            "measured": self.measured,
            "range": [self.low, None if self.high == INF else self.high],
            "undefined": self.undefined or None,
            "requires": self.requires or None,
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


# -- metrics a construct adds (they exist only in a playbook that declares it) -----------------

CHANNEL = "<channel>"  # stands for each declared channel id in the generic names
CHANNEL_WINDOW = WEEK  # <channel>_joins: joins on days d-6..d
APPLICATIONS_WINDOW = WEEK  # applications: on days d-6..d
APPROVAL_WINDOW = 30  # approval_rate: decisions on days d-29..d

# generic name -> (requires, unit, (low, high), measured on day d, undefined)
_CONSTRUCT_SPEC: dict[str, tuple[str, MetricUnit, tuple[float, float], str, str]] = {
    f"{CHANNEL}_joins": (
        "channels",
        MetricUnit.COUNT,
        (0, INF),
        "joins via the channel (members whose `source` is its id) on days d-6..d",
        "",
    ),
    f"{CHANNEL}_share": (
        "channels",
        MetricUnit.RATIO,
        (0, 1),
        "joins via the channel since the start ÷ all joins since the start",
        "before anyone has joined",
    ),
    "points_issued": (
        "points",
        MetricUnit.COUNT,
        (0, INF),
        "points earned (by `points.earn` events and `reward.points`) since the start",
        "",
    ),
    "points_redeemed": (
        "points",
        MetricUnit.COUNT,
        (0, INF),
        "points spent on redemptions since the start",
        "",
    ),
    "points_outstanding": (
        "points",
        MetricUnit.COUNT,
        (0, INF),
        "the sum of the current members' balances at the close of the day (lapsed points gone)",
        "",
    ),
    "team_score_top": (
        "teams",
        MetricUnit.COUNT,
        (0, INF),
        "the highest team score: a team's score sums `teams.score` over its current members",
        "while there is no team (attribute teams before any member has a value)",
    ),
    "team_score_bottom": (
        "teams",
        MetricUnit.COUNT,
        (0, INF),
        "the lowest team score (a team without members scores 0)",
        "while there is no team (attribute teams before any member has a value)",
    ),
    "team_score_spread": (
        "teams",
        MetricUnit.RATIO,
        (0, 1),
        "(team_score_top - team_score_bottom) ÷ team_score_top",
        "while the top team's score is 0, or there is no team",
    ),
    "applications": (
        "admission",
        MetricUnit.COUNT,
        (0, INF),
        "applications to join (`member.applied`) on days d-6..d",
        "",
    ),
    "approval_rate": (
        "admission",
        MetricUnit.RATIO,
        (0, 1),
        "applications approved on days d-29..d ÷ applications decided (approved or rejected)"
        " on those days",
        "when no application was decided in the last 30 days",
    ),
}


def _construct(name: str, generic: str) -> MetricDefinition:
    requires, unit, (low, high), measured, undefined = _CONSTRUCT_SPEC[generic]
    channel = name[: -len(generic) + len(CHANNEL)] if generic.startswith(CHANNEL) else ""
    summary = measured.replace("the channel", f"channel `{channel}`") if channel else measured
    return MetricDefinition(name, unit, summary, measured, low, high, undefined, requires)


CONSTRUCT_DEFINITIONS: dict[str, MetricDefinition] = {
    g: MetricDefinition(g, spec[1], spec[3], spec[3], *spec[2], spec[4], spec[0])
    for g, spec in _CONSTRUCT_SPEC.items()
}


def _generic(name: str, pb: Playbook) -> str | None:
    """The generic name of a construct metric of `pb` (`invite_share` -> `<channel>_share`)."""
    if name in _CONSTRUCT_SPEC:
        return name
    for c in pb.channels:
        for suffix in ("_joins", "_share"):
            if name == c + suffix:
                return CHANNEL + suffix
    return None


def definitions(pb: Playbook) -> dict[str, MetricDefinition]:
    """Every built-in metric of a playbook: the catalogue's and those its constructs add."""
    out = dict(DEFINITIONS)
    for name in pb.builtin_metrics():
        if name not in out and name not in pb.metrics:
            generic = _generic(name, pb)
            if generic is not None:
                out[name] = _construct(name, generic)
    return out


def definition(name: str, pb: Playbook | None = None) -> MetricDefinition | None:
    """The definition of built-in `name` (with `pb`, a construct's metric too), else None."""
    d = DEFINITIONS.get(name)
    if d is not None or pb is None:
        return d
    return definitions(pb).get(name)


def may_be_undefined(name: str, pb: Playbook | None = None) -> bool:
    """Whether built-in `name` can be undefined (custom metrics: always)."""
    d = definition(name, pb)
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


def channel_share(via: Any, joins: Any) -> Any:
    """<channel>_share: joins via the channel ÷ all joins, since the start."""
    return ratio(via, joins)


def team_extremes(scores: Any) -> tuple[Any, Any]:
    """(team_score_top, team_score_bottom) from team scores (..., teams); NaN with no team."""
    import numpy as np

    s = np.asarray(scores, dtype=float)
    if s.shape[-1] == 0:
        none = np.full(s.shape[:-1], UNDEFINED)
        return (float(none), float(none)) if s.ndim == 1 else (none, none)
    top, bottom = s.max(axis=-1), s.min(axis=-1)
    if np.ndim(top) == 0:
        return float(top), float(bottom)
    return top, bottom


def team_spread(top: Any, bottom: Any) -> Any:
    """team_score_spread: (top - bottom) ÷ top, undefined when top is 0 (or undefined)."""
    import numpy as np

    return ratio(np.asarray(top, dtype=float) - bottom, top)


def approval_rate(approved: Any, decided: Any) -> Any:
    """approval_rate: approved ÷ decided applications (the last 30 days)."""
    return ratio(approved, decided)


def before_start(pb: Playbook | None = None) -> dict[str, float]:
    """The built-in metrics before the first day closes: counts 0, every ratio undefined
    (with `pb`, the metrics its constructs add too)."""
    defs = DEFINITIONS if pb is None else definitions(pb)
    return {n: UNDEFINED if d.undefined else 0.0 for n, d in defs.items()}


def why_undefined(name: str, values: Mapping[str, float], pb: Playbook | None = None) -> str:
    """Why built-in `name` has no value, as precisely as the day's other metrics tell (with
    `pb`, a construct's metric too)."""
    d = definition(name, pb)
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
    """Every built-in metric's definition as plain data, in catalogue order, then the metrics
    constructs add (`requires` names the construct; `<channel>` stands for a channel id)."""
    return [d.as_dict() for d in (*DEFINITIONS.values(), *CONSTRUCT_DEFINITIONS.values())]


def text_table() -> str:
    """The definitions for a terminal: one block a metric."""
    lines = []
    for d in (*DEFINITIONS.values(), *CONSTRUCT_DEFINITIONS.values()):
        need = f"  [with {d.requires}]" if d.requires else ""
        lines.append(f"{d.name}  ({d.unit}, {d.range_text})  {d.summary}{need}")
        lines.append(f"    measured:  {d.measured}")
        lines.append(f"    undefined: {d.undefined or 'never'}")
    return "\n".join(lines) + "\n"


def _markdown(defs: Iterable[MetricDefinition], head: str, cell: Callable[..., list[str]]) -> str:
    rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for d in defs:
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cell(d)) + " |")
    return "\n".join(rows) + "\n"


def markdown_table() -> str:
    """The definitions as the Markdown tables of docs/metrics.md (built-ins, then constructs)."""
    built_in = _markdown(
        DEFINITIONS.values(),
        "| metric | unit | range | measured on day d | undefined |",
        lambda d: [f"`{d.name}`", str(d.unit), d.range_text, d.measured, d.undefined or "never"],
    )
    constructs = _markdown(
        CONSTRUCT_DEFINITIONS.values(),
        "| metric | with | unit | range | measured on day d | undefined |",
        lambda d: [
            f"`{d.name}`",
            f"`{d.requires}:`",
            str(d.unit),
            d.range_text,
            d.measured,
            d.undefined or "never",
        ],
    )
    return (
        built_in
        + "\nMetrics a construct adds (only in a playbook that declares it):\n\n"
        + constructs
    )
