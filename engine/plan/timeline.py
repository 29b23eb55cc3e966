"""`plan`: the concrete calendar of a playbook — occurrences, stage timeline, event rules."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from ..core.schedule import local_midnight
from ..core.status import UsageError
from ..core.suggest import did_you_mean
from ..core.timeutil import MAX_HORIZON_DAYS
from ..lang.model import Action, OnEvent, Playbook
from ..program import (
    Lifecycle,
    Occurrence,
    Program,
    StageWindow,
    StartDateError,
    Transition,
    run_lifecycle,
)
from ..program import start_date as _program_start
from ..program.lifecycle import exits_of
from ..program.program import assumed_exits
from .sections import review_action

MAX_DAYS = MAX_HORIZON_DAYS
# The most occurrences one plan holds: far above a real community's year (about a thousand), low
# enough that planning, rendering and diffing stay within seconds and a few hundred MB.
MAX_OCCURRENCES = 100_000
MAX_JOINS_PER_DAY = 1_000_000


class PlanError(ValueError):
    """A plan that cannot be made as asked: a start out of range, or one too large to hold."""


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
    # (stage, exit id): the exit each of these stages takes, as soon as it can (`--assume-exit`)
    exits: tuple[tuple[str, str], ...] = ()


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
    # why an action's text could not be rendered (missing data, a sandbox limit), by action id
    message_errors: dict[str, str] = field(default_factory=dict)
    # actions chained after an event rule (`after: welcome`): (action, its event rule, offset)
    chained: list[tuple[Action, Action, timedelta]] = field(default_factory=list)

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


def parse_assumed_exits(
    pb: Playbook,
    values: Iterable[str],
    *,
    assume_gates: str = "pass",
    failing: Iterable[str] = (),
) -> tuple[tuple[str, str], ...]:
    """`--assume-exit STAGE=EXIT_ID` values, checked against the playbook and the other gate
    assumptions (UsageError, exit 2); the (stage, exit id) pairs of `PlanOptions.exits`."""
    out: dict[str, str] = {}
    values = list(values)
    if values and assume_gates == "fail":
        raise UsageError(
            "--assume-exit picks the exit a stage takes when gates pass; with --assume-gates fail"
            " no exit fires (use --fail STAGE for the stages whose gates should stay closed)"
        )
    failing = set(failing)
    for v in values:
        sid, sep, eid = v.partition("=")
        sid, eid = sid.strip(), eid.strip()
        if not sep or not sid or not eid:
            raise UsageError(f"--assume-exit {v!r}: write STAGE=EXIT_ID, e.g. growth=decline")
        stage = pb.stages.get(sid)
        if stage is None:
            raise UsageError(f"--assume-exit {v!r}: {_unknown('stage', sid, pb.stages)}")
        ids = [e.id for e in exits_of(stage)]
        if not ids:
            raise UsageError(
                f"--assume-exit {v!r}: stage {sid!r} has no exit (it ends at its maximum"
                " duration or by its deadline policy)"
            )
        if eid not in ids:
            hint = did_you_mean(eid, ids)
            raise UsageError(
                f"--assume-exit {v!r}: stage {sid!r} has no exit {eid!r}"
                + (f"; {hint}" if hint else "")
                + f" (its exits: {', '.join(ids)})"
            )
        if sid in failing:
            raise UsageError(
                f"--assume-exit {v!r}: --fail {sid} says no exit of stage {sid!r} fires"
            )
        if out.get(sid, eid) != eid:
            raise UsageError(
                f"--assume-exit {v!r}: stage {sid!r} is already assumed to take exit {out[sid]!r}"
            )
        out[sid] = eid
    return tuple(out.items())


def _unknown(what: str, value: str, known: Iterable[str]) -> str:
    names = list(known)
    hint = did_you_mean(value, names)
    return (
        f"{what} {value!r} is not in the playbook"
        + (f"; {hint}" if hint else "")
        + f" (known: {', '.join(names) or 'none'})"
    )


def start_date(pb: Playbook, start: date | None) -> date:
    """The planning start (the Program's rule: explicit, else community.start, else a Monday)."""
    try:
        return _program_start(pb, start)
    except StartDateError as e:
        raise PlanError(str(e)) from None


def lifecycle(program: Program, options: PlanOptions) -> tuple[datetime, datetime, Lifecycle]:
    """The plan's first and end instants and its stage lifecycle (gates as assumed)."""
    if not 1 <= options.days <= MAX_DAYS:
        raise PlanError(f"a plan covers 1 to {MAX_DAYS} days, not {options.days}")
    d0 = start_date(program.playbook, options.start)
    start = local_midnight(d0, program.tz)
    end = local_midnight(d0 + timedelta(days=options.days), program.tz)
    gate = assumed_exits(
        program, options.assume_gates, frozenset(options.failing), dict(options.exits), start
    )
    # what fires on a day depends only on the stages as they stand that day (a runtime knows no
    # more), so the lifecycle is stepped to the horizon and no further
    lc = run_lifecycle(program, start, options.days, gate, options.include_optional)
    return start, end, lc


def _as_of(windows: list[StageWindow], end: datetime) -> list[StageWindow]:
    """Windows as the plan shows them: one that ends after the horizon is still running."""
    return [w if w.end is None or w.end <= end else replace(w, end=None) for w in windows]


def make_plan(program: Program, options: PlanOptions) -> Timeline:
    """Plan `options.days` days from the start date (PlanError beyond MAX_OCCURRENCES)."""
    jpd = options.joins_per_day
    if jpd is not None and not (math.isfinite(jpd) and 0 <= jpd <= MAX_JOINS_PER_DAY):
        raise PlanError(f"joins per day must be between 0 and {MAX_JOINS_PER_DAY:,}, not {jpd}")
    start, end, lc = lifecycle(program, options)
    windows = lc.windows(end)

    def wanted(a: Action) -> bool:
        return (not options.role or a.owner == options.role) and (
            not options.stage or a.stage == options.stage
        )

    # count first (cheap: no occurrences built), so a plan too large is refused quickly
    n = 0
    for firings in program.firings_by_day(windows, start, end, wanted):
        n += sum(1 for _ in firings)
        if n > MAX_OCCURRENCES:
            raise PlanError(
                f"the plan has more than {MAX_OCCURRENCES:,} occurrences in {options.days} days;"
                " plan fewer days or filter with --role/--stage"
            )
    occ = [o for day in program.iter_due(windows, start, end, wanted) for o in day]
    stages = [w.stage for w in windows if w.stage]
    rules = program.event_rules(stages)
    if options.role:
        rules = [a for a in rules if a.owner == options.role]
    if options.stage:
        rules = [a for a in rules if a.stage in (options.stage, None)]
    review = review_action(program.playbook)  # admission's review task, one per application
    if review is not None and (not options.role or review.owner == options.role):
        rules.append(review)
    transitions = [t for t in lc.transitions if t.at < end]
    tl = Timeline(program, start, end, occ, transitions, _as_of(windows, end), rules)
    tl.chained = [
        (c, a, off)
        for a in program.event_rules(stages)
        for c, off in program.chain(a.id)
        if (not options.role or c.owner == options.role)
        and (not options.stage or c.stage in (options.stage, None))
    ]
    if jpd is not None:
        if len(rules) * options.days > MAX_OCCURRENCES:
            raise PlanError(
                f"{len(rules)} event rules × {options.days} days of expected counts exceed"
                f" {MAX_OCCURRENCES:,}; plan fewer days"
            )
        tl.expected = expected_counts(tl, jpd)
    return tl


def expected_counts(tl: Timeline, joins_per_day: float) -> dict[str, dict[date, float]]:
    """Expected daily counts of event-triggered actions, from joins alone (no churn model)."""
    out: dict[str, dict[date, float]] = {}
    tz = tl.program.tz
    d0 = tl.start.astimezone(tz).date()
    days = (tl.end - tl.start).days
    noons = [local_midnight(d0 + timedelta(days=i), tz) + timedelta(hours=12) for i in range(days)]
    # the days each stage is active at noon, found once per window (not per rule and day)
    active: dict[str, set[int]] = defaultdict(set)
    for w in tl.windows:
        if w.stage:
            i = bisect_left(noons, w.start)
            while i < days and (w.end is None or noons[i] < w.end):
                active[w.stage].add(i)
                i += 1
    for a in tl.event_rules:
        s = a.schedule
        assert isinstance(s, OnEvent)
        counts: dict[date, float] = defaultdict(float)
        for i in range(days):
            day = d0 + timedelta(days=i)
            if a.stage is not None and i not in active[a.stage]:
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
    from ..lang.templates import (
        RenderError,
        action_context,
        action_text,
        needs_member,
        render,
        shared_budget,
    )

    pb = tl.playbook
    cache: dict[str, str | None] = {}
    with shared_budget():  # all templates of a plan share one work budget (engine/lang/sandbox.py)
        for o in tl.occurrences:
            if o.action in cache:
                continue
            a = pb.actions[o.action]
            text = action_text(pb, a)
            if text is None or needs_member(text):
                cache[o.action] = None
                continue
            try:
                cache[o.action] = render(text, action_context(pb, a))
            except RenderError as e:  # missing data or a sandbox limit: no text, and why
                cache[o.action] = None
                where = f" (template line {e.line})" if e.line else ""
                tl.message_errors[o.action] = f"{e.message}{where}"
    tl.messages = cache
    return cache
