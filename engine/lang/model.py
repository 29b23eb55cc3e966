"""The immutable Playbook model; only `build` creates it, nothing else parses YAML."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta

from ..core.diagnostics import Span
from ..core.expr import Node
from ..core.timeutil import Window

Spans = Mapping[str, Span]  # field name -> span of its value; "" -> span of the object's key


class Audience(enum.StrEnum):
    """Who an action's message goes to (`to:`); a tier is `tier:<id>`, see `tier_of`."""

    EVERYONE = "everyone"
    MEMBER = "member"  # the member whose event triggered the action
    STAFF = "staff"
    REFERRER = "referrer"  # who invited the member whose event triggered the action

    @staticmethod
    def tier_of(audience: str) -> str | None:
        """The tier id of a `tier:<id>` audience, else None."""
        return audience[5:] if audience.startswith("tier:") else None


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
    """Fires on a member event (`member.joined`, `member.silent` ...)."""

    event: str
    within: timedelta | None = None
    silent_for: timedelta | None = None
    count: int | None = None
    at: tuple[timedelta, ...] = ()
    tier: str | None = None
    streak: int | None = None


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
class Action:
    """One thing to do, with exactly one schedule."""

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
    gate: Expression | None
    goto: str | None
    deadline: Deadline | None
    spans: Spans = field(default_factory=dict, compare=False, repr=False)


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
    """A custom metric."""

    id: str
    unit: str
    description: str
    definition: Expression | None
    target: float | None


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

    def metric_units(self) -> dict[str, str]:
        """Every metric name a gate may read, with its unit."""
        from ..core.catalog import BUILTIN_METRICS

        units: dict[str, str] = {m.name: m.unit for m in BUILTIN_METRICS.values()}
        units.update({m.id: m.unit for m in self.metrics.values()})
        return units
