"""The immutable Playbook model; only `build` creates it, nothing else parses YAML."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import TYPE_CHECKING, Any

from ..core.diagnostics import Span
from ..core.expr import Node
from ..core.timeutil import Window

if TYPE_CHECKING:
    from ..core.catalog import MetricInfo

Spans = Mapping[str, Span]  # field name -> span of its value; "" -> span of the object's key


class Audience(enum.StrEnum):
    """Who an action's message goes to (`to:`).

    Besides these fixed values an audience is `tier:<id>` (see `tier_of`) or `segment:<id>`
    (see `segment_of`); `top` means the action's `Leaderboard` picks the recipients.
    """

    EVERYONE = "everyone"
    MEMBER = "member"  # the member whose event triggered the action
    STAFF = "staff"
    REFERRER = "referrer"  # who invited the member whose event triggered the action
    TOP = "top"  # the first N members (or the members of the first N teams) of `Action.top`

    @staticmethod
    def tier_of(audience: str) -> str | None:
        """The tier id of a `tier:<id>` audience, else None."""
        return audience[5:] if audience.startswith("tier:") else None

    @staticmethod
    def segment_of(audience: str) -> str | None:
        """The segment id of a `segment:<id>` audience, else None."""
        return audience[8:] if audience.startswith("segment:") else None


class AttributeType(enum.StrEnum):
    """The type of a declared member attribute (`members.attributes.<id>.type`)."""

    STRING = "string"
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    ENUM = "enum"  # one of `values`
    DATE = "date"  # an ISO date; compared as days since it (`days_since_<id>` is not derived)


@dataclass(frozen=True, slots=True)
class Attribute:
    """A member attribute the playbook declares: set by events and imports, read by segments.

    `pii` attributes (phone numbers, addresses) are never written to logs, plan output or the
    dashboard; `default` is the value of a member the attribute was never set for.
    """

    id: str
    type: AttributeType
    title: str
    values: tuple[str, ...] = ()  # the allowed values of an ENUM
    pii: bool = False
    default: str | float | bool | None = None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)
    description: str = ""

    @property
    def unit(self) -> str:
        """Its unit in a member condition: `count`, `string` or `boolean`."""
        if self.type in (AttributeType.NUMBER, AttributeType.INTEGER):
            return "count"
        if self.type == AttributeType.BOOLEAN:
            return "boolean"
        return "string"

    def coerce(self, raw: Any) -> Any:
        """A value of this attribute from an event, an import or its `default`; ValueError says
        what is wrong."""
        if self.type in (AttributeType.NUMBER, AttributeType.INTEGER):
            if isinstance(raw, bool):
                raise ValueError(f"`{self.id}` is a number, not {str(raw).lower()}")
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"`{self.id}` is a number; {raw!r} is not one") from None
            if self.type == AttributeType.INTEGER and value != int(value):
                raise ValueError(f"`{self.id}` is a whole number; {raw!r} is not one")
            return value
        if self.type == AttributeType.BOOLEAN:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "yes", "1"):
                return True
            if text in ("false", "no", "0", ""):
                return False
            raise ValueError(f"`{self.id}` is true or false; {raw!r} is neither")
        text = "" if raw is None else str(raw)
        if self.type == AttributeType.ENUM and text and text not in self.values:
            raise ValueError(f"`{self.id}` is one of {', '.join(self.values)}; {text!r} is not")
        return text


@dataclass(frozen=True, slots=True)
class Segment:
    """A named set of members: those whose attributes satisfy `when` (evaluated when read).

    `size` is the planner's estimate of how many members match (for `sop plan`'s workload of
    per-member tasks); the simulator forecasts the real size instead.
    """

    id: str
    title: str
    when: Expression
    size: int | None = None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Channel:
    """An acquisition channel: where members come from (their `source` attribute).

    `share` is the planned share of all joins (a target, checked against `<id>_share`);
    `referral` marks the channel that joins by a member's invitation land in (at most one);
    `opens` is the stage in which the channel starts bringing members (None: from the start).
    """

    id: str
    title: str
    share: float | None = None
    referral: bool = False
    opens: str | None = None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


class CountOf(enum.StrEnum):
    """What a counted metric counts (`count:` / `per:`)."""

    MEMBERS = "members"  # current members matching `where`
    EVER = "ever"  # everyone who ever joined (members and those who left) matching `where`
    JOINS = "joins"  # joins within `window` whose member matches `where`
    EVENTS = "events"  # events of type `event` within `window` by members matching `where`


@dataclass(frozen=True, slots=True)
class Count:
    """One count of a counted metric: `{members: <where>}`, `{events: payment, where: ...}` ..."""

    of: CountOf
    where: Expression | None = None  # a member condition (attributes); None: all
    event: str | None = None  # EVENTS only: a member event type (see catalog.EVENT_TYPES)
    window: timedelta | None = None  # JOINS/EVENTS: the trailing window; None: since the start
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Target:
    """A metric's goal: `value` reached (`>=`, or `<=` for `at_most`) by `by` after the start."""

    metric: str
    value: float
    at_most: bool = False  # True: the goal is to stay at or below `value` (churn_rate)
    by: timedelta | None = None  # None: by the end of the horizon / the plan
    spans: Spans = field(default_factory=dict, compare=False, repr=False)
    percent: bool = field(default=False, compare=False)  # written as `30%` (hints say so)


@dataclass(frozen=True, slots=True)
class Expression:
    """A condition with its source text; `node` is None when it did not parse."""

    text: str
    node: Node | None = field(compare=False)
    span: Span = field(compare=False)
    exact: bool = field(
        compare=False
    )  # True when span.column is the column of text[0], so offsets map to columns

    def span_of(self, start: int, end: int) -> Span:
        """Source span of characters start..end of the expression."""
        if self.exact:
            return self.span.at_offset(start, end)
        return self.span


@dataclass(frozen=True, slots=True)
class Cron:
    """Fires on a cron expression in the playbook's time zone."""

    expr: str


@dataclass(frozen=True, slots=True)
class DayOffset:
    """Fires once, `day` days after the stage starts, at a local time."""

    day: int
    at: time


@dataclass(frozen=True, slots=True)
class Relative:
    """Fires at a fixed offset (negative for `before`) from each occurrence of another action."""

    anchor: str
    offset: timedelta


@dataclass(frozen=True, slots=True)
class OnEvent:
    """Fires on a member event (`member.joined`, `member.silent` ...).

    `member.milestone` fires once per member when the numeric member attribute `counter`
    (invites, points, payments, checkins ... or a declared number) first reaches `reaches`;
    `member.redeemed` may be narrowed to one `item` of `points.redeem`.
    """

    event: str
    within: timedelta | None = None
    silent_for: timedelta | None = None
    count: int | None = None
    at: tuple[timedelta, ...] = ()
    tier: str | None = None
    streak: int | None = None
    counter: str | None = None
    reaches: float | None = None
    item: str | None = None


Schedule = Cron | DayOffset | Relative | OnEvent


@dataclass(frozen=True, slots=True)
class Effect:
    """What the simulator assumes the action does (see docs/simulation.md)."""

    speak: float = 0.0
    participation: float = 0.0
    churn: float = 0.0
    interactions: float = 0.0
    ugc: float = 0.0
    conversion: float = 0.0
    invites: float = 0.0
    joins: float = 0.0


@dataclass(frozen=True, slots=True)
class Leaderboard:
    """`to: {top: N, by: <member attribute>}`: the first N members by a per-member measure.

    With `teams: true` it picks the members of the first N teams by the team's total of `by`.
    `among` narrows the ranking to an audience (`tier:<id>` / `segment:<id>`). Ties: see
    engine/program/ranking.py (the one home of the order).
    """

    n: int
    by: str
    teams: bool = False
    among: str | None = None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Action:
    """One thing to do, with exactly one schedule.

    `where` is a per-member condition over member attributes: an event-triggered action fires
    only for a member who satisfies it; a message to a group audience reaches only the members
    who satisfy it. `for_each` (an audience: `tier:<id>`, `segment:<id>`, `everyone`) makes a
    staff task one task per matching member at the firing time. `top` ranks the recipients.
    """

    id: str
    stage: str | None  # None for a routine: active in every stage
    kind: str
    schedule: Schedule
    owner: str | None
    audience: str
    backend: str | None
    template: str | None
    text: Template | None
    quiet_hours: Window | None
    retries: int
    effect: Effect
    guard: Expression | None
    reward_item: str | None
    reward_streak: int | None
    reward_points: int | None
    title: str
    spans: Spans = field(default_factory=dict, compare=False, repr=False)
    where: Expression | None = None
    for_each: str | None = None
    top: Leaderboard | None = None
    redeem_item: str | None = None  # `do: redeem`: the `points.redeem` item it hands out


@dataclass(frozen=True, slots=True)
class Exit:
    """One way out of a stage: when `when` has held on each of the last `hold` days, go on.

    `goto` names the next stage (None: the stage's `after:` successors start, as a plain pass).
    `id` names the outcome in every output (`pass` for the single `exit:`; `exits:` items name
    theirs, e.g. `success`, `decline`). Exits are tried in order; the first that holds wins.
    """

    id: str
    when: Expression
    hold: timedelta | None = None
    goto: str | None = None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a stage's gate is late, and what happens then."""

    after: timedelta
    extend: timedelta | None
    goto: str | None
    alert: str | None
    abort: bool
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Stage:
    """A lifecycle stage: a node of the stage DAG."""

    id: str
    title: str
    after: tuple[str, ...]
    rescue: bool
    optional: bool
    min_duration: timedelta | None
    max_duration: timedelta | None
    actions: tuple[str, ...]
    gate: Expression | None  # exits[0].when (kept for readers of the single-exit form)
    goto: str | None  # exits[0].goto
    deadline: Deadline | None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)
    exits: tuple[Exit, ...] = ()  # every exit in order; `exit:` builds one named `pass`


@dataclass(frozen=True, slots=True)
class Role:
    """A staff role."""

    id: str
    title: str
    headcount: int
    capacity: int | None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A backend as the playbook declares it (where actions go), not the code that sends.

    Secrets are `${env:NAME}` references resolved only at run time.
    """

    id: str
    type: str
    rate_per_minute: int | None
    url: str | None
    key: str | None
    token: str | None
    notify: str | None
    path: str | None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)
    options: Mapping[str, str] = field(default_factory=dict)  # platform settings


@dataclass(frozen=True, slots=True)
class Metric:
    """A custom metric: an expression over other metrics (`definition`), a counted metric
    (`count`, optionally divided by `per`), or neither (a number fed from data sources)."""

    id: str
    unit: str
    description: str
    definition: Expression | None
    target: Target | None
    count: Count | None = None
    per: Count | None = None
    by_channel: bool = False  # also reported per acquisition channel
    cumulative: bool = False  # a count that never decreases (the simulator keeps it so)
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Tier:
    """A member tier with its promotion and demotion rules."""

    id: str
    rank: int
    title: str
    promote: Expression | None
    demote_silent_for: timedelta | None
    demote_when: Expression | None
    demote_to: str | None
    demote_message: str | None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)
    size: int | None = None  # the planner's estimate of members in the tier (per-member tasks)


@dataclass(frozen=True, slots=True)
class Tiers:
    """Tier levels (lowest first), review schedule and hysteresis."""

    levels: tuple[Tier, ...]
    review_cron: str | None
    hysteresis: float
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Moderation:
    """Strikes: warn at N violations, remove at M."""

    rules: tuple[str, ...]
    warn_at: int | None
    remove_at: int | None
    window: timedelta | None
    warn_template: str | None
    announce_template: str | None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Admission:
    """An entry threshold: people apply, staff review, the outcome triggers actions.

    An application (`member.applied`) must carry the attributes in `require`; when `approve`
    holds over them the application is approved at once, otherwise a review task goes to
    `review_owner`, due within `review_within`. Approval or rejection is an event
    (`member.approved` / `member.rejected`) that actions listen to; only approved applicants
    join (a `member.joined` follows approval).
    """

    require: tuple[str, ...]
    review_owner: str
    review_within: timedelta
    approve: Expression | None = None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Redemption:
    """An item members can buy with points (`points.redeem.<id>`)."""

    id: str
    title: str
    cost: int
    stock: int | None = None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Points:
    """A per-member points ledger: earned per event and by rewards, spent on redemptions.

    `earn` maps a member event type (`checkin`, `post`, `invite`, `payment`, `message` ...) to
    the points one such event earns; `reward.points` of actions adds to it; points older than
    `expire` lapse. The balance is the member attribute `points`.
    """

    earn: Mapping[str, int]
    redeem: Mapping[str, Redemption]
    expire: timedelta | None = None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


class TeamAssignment(enum.StrEnum):
    """How members are split into teams (`teams.assign`)."""

    ROUND_ROBIN = "round-robin"  # in order of joining: 1st to team 1, 2nd to team 2 ...
    BALANCED = "balanced"  # each joiner to the smallest team (ties: the first)
    ATTRIBUTE = "attribute"  # one team per value of member attribute `by`


@dataclass(frozen=True, slots=True)
class Teams:
    """Members split into teams for PK contests; a team's score sums `score` over its members.

    `names` are the team names (their number is the team count) unless `assign` is
    ATTRIBUTE. The member attribute `team` holds a member's team.
    """

    names: tuple[str, ...]
    assign: TeamAssignment
    score: str  # a numeric member attribute summed per team
    by: str | None = None  # ATTRIBUTE: the attribute whose values name the teams
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class IncidentStep:
    """An incident step: an action, an alert or an escalation."""

    kind: str  # do | alert | escalate
    target: str  # action kind or role id
    delay: timedelta | None
    template: str | None
    text: str | None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Incident:
    """An emergency plan."""

    id: str
    title: str
    owner: str
    detect: Expression | None
    steps: tuple[IncidentStep, ...]
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Template:
    """A Jinja2 template; its text starts at (`line`, `column`) of `span.file`."""

    id: str
    text: str
    span: Span = field(compare=False)
    line: int = field(compare=False)
    column: int = field(compare=False)


@dataclass(frozen=True, slots=True)
class Expectation:
    """An invariant checked on simulated runs."""

    event: str | None = None
    action: str | None = None
    within: timedelta | None = None
    max_messages_per_member_per_day: int | None = None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Community:
    """The community's type, platform and group capacity."""

    type: str | None
    platform: str | None
    capacity: int | None
    start: str | None


@dataclass(frozen=True, slots=True)
class Playbook:
    """A whole playbook, fragments merged, parameters substituted."""

    id: str
    title: str
    version: str
    timezone: str
    community: Community
    roles: Mapping[str, Role]
    backends: Mapping[str, BackendSpec]
    default_backend: str | None
    default_owner: str | None
    default_quiet_hours: Window | None
    member_messages_per_day: int | None
    staff_tasks_per_day: int
    metrics: Mapping[str, Metric]
    tiers: Tiers | None
    moderation: Moderation | None
    incidents: Mapping[str, Incident]
    stages: Mapping[str, Stage]
    actions: Mapping[str, Action]
    templates: Mapping[str, Template]
    expect: tuple[Expectation, ...]
    params: Mapping[str, object]
    file: str
    spans: Spans = field(default_factory=dict, compare=False, repr=False)
    attributes: Mapping[str, Attribute] = field(default_factory=dict)  # declared, not built-in
    segments: Mapping[str, Segment] = field(default_factory=dict)
    channels: Mapping[str, Channel] = field(default_factory=dict)
    targets: Mapping[str, Target] = field(default_factory=dict)  # by metric, built-in or custom
    admission: Admission | None = None
    points: Points | None = None
    teams: Teams | None = None

    def builtin_metrics(self) -> dict[str, MetricInfo]:
        """The built-in metrics of this playbook: the catalogue's, plus those its channels,
        points, teams and admission add (`<channel>_joins`, `points_issued`, ...)."""
        from ..core import catalog

        infos = dict(catalog.BUILTIN_METRICS)
        extra = [m for c in self.channels for m in catalog.channel_metrics(c)]
        if self.points is not None:
            extra += catalog.POINTS_METRICS
        if self.teams is not None:
            extra += catalog.TEAM_METRICS
        if self.admission is not None:
            extra += catalog.ADMISSION_METRICS
        infos.update({m.name: m for m in extra})
        return infos

    def metric_units(self) -> dict[str, str]:
        """Every metric name a community condition may read, with its unit (the one vocabulary
        of gates, exits, `if:`, incident `detect:` and metric definitions)."""
        units: dict[str, str] = {m.name: m.unit for m in self.builtin_metrics().values()}
        units.update({m.id: m.unit for m in self.metrics.values()})
        return units

    def attribute_units(self) -> dict[str, str]:
        """Every member attribute a member condition may read, with its unit: the built-ins
        (catalog.MEMBER_ATTRIBUTE_UNITS) and the declared ones (`members.attributes`).

        Numbers are `count`, strings (also enum values and dates) `string`, booleans `boolean`.
        """
        from ..core.catalog import MEMBER_ATTRIBUTE_UNITS

        units = dict(MEMBER_ATTRIBUTE_UNITS)
        for a in self.attributes.values():
            units.setdefault(a.id, a.unit)  # a declared id equal to a built-in is an error
        return units
