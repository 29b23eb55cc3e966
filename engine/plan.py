"""`plan`: the concrete calendar of a playbook — occurrences, stage timeline, event rules."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from .model import Action, OnEvent, Playbook
from .program import (
    Occurrence,
    Program,
    StageWindow,
    Transition,
    assumed_gate,
    run_lifecycle,
)
from .schedule import local_midnight

DEFAULT_START = date(2027, 1, 4)  # a Monday; used when neither --start nor community.start is set


@dataclass(frozen=True)
class PlanOptions:
    """What to plan: a start date, a horizon, an assumption about gates, and filters."""

    start: date | None = None
    days: int = 30
    assume_gates: str = "pass"  # pass | fail
    role: str | None = None
    stage: str | None = None
    joins_per_day: float | None = None
    include_optional: tuple[str, ...] = ()
    failing: tuple[str, ...] = ()  # with assume_gates=pass: these stages' gates never pass


@dataclass
class Timeline:
    """The result of planning: everything that happens in [start, end)."""

    program: Program
    start: datetime
    end: datetime
    occurrences: list[Occurrence]
    transitions: list[Transition]
    windows: list[StageWindow]
    event_rules: list[Action]
    expected: dict[str, dict[date, float]] = field(default_factory=dict)
    messages: dict[str, str | None] = field(default_factory=dict)

    @property
    def playbook(self) -> Playbook:
        """The planned playbook."""
        return self.program.playbook

    def stage_of(self, at: datetime) -> list[str]:
        """Stages active at an instant."""
        return [
            w.stage
            for w in self.windows
            if w.stage and w.start <= at and (w.end is None or at < w.end)
        ]


def start_date(pb: Playbook, start: date | None) -> date:
    """The planning start: explicit, else community.start, else a fixed Monday."""
    if start is not None:
        return start
    if pb.community.start:
        return date.fromisoformat(pb.community.start)
    return DEFAULT_START


def make_plan(program: Program, options: PlanOptions) -> Timeline:
    """Plan `options.days` days from the start date."""
    pb = program.playbook
    d0 = start_date(pb, options.start)
    start = local_midnight(d0, program.tz)
    end = local_midnight(d0 + timedelta(days=options.days), program.tz)
    gate = assumed_gate(program, options.assume_gates, frozenset(options.failing))
    lc = run_lifecycle(program, start, options.days, gate, options.include_optional)
    windows = lc.windows(end)
    occ = program.due(windows, start, end)
    if options.role:
        occ = [o for o in occ if o.owner == options.role]
    if options.stage:
        occ = [o for o in occ if o.stage == options.stage]
    stages = [w.stage for w in windows if w.stage]
    rules = program.event_rules(stages)
    if options.role:
        rules = [a for a in rules if a.owner == options.role]
    if options.stage:
        rules = [a for a in rules if a.stage in (options.stage, None)]
    tl = Timeline(
        program, start, end, occ, [t for t in lc.transitions if t.at < end], windows, rules
    )
    if options.joins_per_day is not None:
        tl.expected = expected_counts(tl, options.joins_per_day)
    return tl


def expected_counts(tl: Timeline, joins_per_day: float) -> dict[str, dict[date, float]]:
    """Expected daily counts of event-triggered actions, from joins alone (no churn model)."""
    out: dict[str, dict[date, float]] = {}
    tz = tl.program.tz
    d0 = tl.start.astimezone(tz).date()
    days = (tl.end - tl.start).days
    for a in tl.event_rules:
        s = a.schedule
        assert isinstance(s, OnEvent)
        counts: dict[date, float] = defaultdict(float)
        for i in range(days):
            day = d0 + timedelta(days=i)
            noon = local_midnight(day, tz) + timedelta(hours=12)
            if a.stage is not None and a.stage not in tl.stage_of(noon):
                continue
            if s.event == "member.joined":
                counts[day] += joins_per_day
            elif s.event == "member.anniversary":
                due = sum(1 for t in s.at if timedelta(days=i) >= t)
                if due:
                    counts[day] += joins_per_day * due
        if counts:
            out[a.id] = dict(counts)
    return out


def render_messages(tl: Timeline) -> dict[str, str | None]:
    """The text of each action whose template needs no member data (None otherwise)."""
    from .templates import needs_member, render

    pb = tl.playbook
    cache: dict[str, str | None] = {}
    for o in tl.occurrences:
        if o.action in cache:
            continue
        a = pb.actions[o.action]
        text = pb.templates[a.template].text if a.template else (a.text.text if a.text else None)
        if text is None or needs_member(text):
            cache[o.action] = None
            continue
        try:
            cache[o.action] = render(text, context(pb, a))
        except Exception:
            cache[o.action] = None
    tl.messages = cache
    return cache


def context(pb: Playbook, a: Action, **extra: Any) -> dict[str, Any]:
    """The template context every interpreter uses for an action."""
    stage = pb.stages.get(a.stage) if a.stage else None
    return {
        "playbook": {"id": pb.id, "title": pb.title, "version": pb.version},
        "community": {
            "type": pb.community.type,
            "platform": pb.community.platform,
            "title": pb.title,
        },
        "stage": {"id": stage.id, "title": stage.title} if stage else {"id": "", "title": ""},
        "action": {"id": a.id, "title": a.title, "kind": a.kind},
        "params": dict(pb.params),
        "reward": {"item": a.reward_item, "streak": a.reward_streak, "points": a.reward_points},
        **extra,
    }
