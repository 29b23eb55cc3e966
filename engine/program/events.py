"""Member-event rules, compiled once: what each rule listens for, and what it sets off.

`Program.on_event` matches one event of one member against them (the runtime); the simulator
reads the same table and applies it over arrays of members. Neither derives the rules again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..lang.model import Action, OnEvent
from .anchors import ChainLink, chain_below

# The fact of an event a rule may filter on, by event. A rule for one of the first four events
# without its value (SOP101) never fires; `member.tier_changed` without `tier` fires on any change,
# `member.redeemed` without `item` on any redemption; `member.milestone` fires for the milestone
# `(counter, reaches)` the caller reports crossed (`milestones.crossed`).
FACT_OF = {
    "member.silent": "silent_for",  # timedelta
    "member.violation": "count",  # int
    "member.anniversary": "tenure",  # timedelta
    "member.checkin_streak": "streak",  # int
    "member.tier_changed": "tier",  # tier id
    "member.milestone": "milestone",  # (counter, reaches): the milestone the member crossed
    "member.redeemed": "item",  # the `points.redeem` item
}
_NEEDS_VALUE = frozenset(FACT_OF) - {"member.tier_changed", "member.redeemed"}

Value = int | str | timedelta | tuple[str, float] | None


@dataclass(frozen=True, slots=True)
class Trigger:
    """One thing a rule listens for: an event and, for some events, the value of its fact."""

    event: str
    value: Value = None  # None: any occurrence of the event


@dataclass(frozen=True, slots=True)
class EventRule:
    """A member-event action: its triggers and the actions chained behind it."""

    action: Action
    triggers: tuple[Trigger, ...]
    chain: tuple[ChainLink, ...]

    @property
    def stage(self) -> str | None:
        """The stage it belongs to (None: a routine, active while the playbook runs)."""
        return self.action.stage

    def matches(self, event: str, facts: Mapping[str, object]) -> bool:
        """Whether an `event` with these facts triggers this rule."""
        fact = FACT_OF.get(event)
        for t in self.triggers:
            if t.event != event:
                continue
            if t.value is None or (fact is not None and facts.get(fact) == t.value):
                return True
        return False

    def admits(self, member: Mapping[str, Any]) -> Any:
        """Whether the action's `where:` holds for the member (one member's attributes: a bool;
        the simulator's arrays: a mask); True without one. See engine/program/members.py."""
        from .members import matches

        return matches(self.action.where, member)


def triggers_of(s: OnEvent) -> tuple[Trigger, ...]:
    """What an `on:` schedule listens for (none when it lacks its required value)."""
    values: Sequence[Value]
    if s.event == "member.silent":
        values = [s.silent_for] if s.silent_for is not None else []
    elif s.event == "member.violation":
        values = [s.count] if s.count is not None else []
    elif s.event == "member.anniversary":
        values = list(s.at)
    elif s.event == "member.checkin_streak":
        values = [s.streak] if s.streak else []
    elif s.event == "member.tier_changed":
        values = [s.tier or None]
    elif s.event == "member.milestone":
        # the caller reports a crossing (engine/program/milestones.py) as milestone=(counter,
        # reaches); a milestone without both never fires (validate flags it)
        ok = s.counter is not None and s.reaches is not None
        values = [(str(s.counter), float(s.reaches or 0))] if ok else []
    elif s.event == "member.redeemed":
        values = [s.item or None]
    else:
        values = [None]
    if s.event in _NEEDS_VALUE:
        values = [v for v in values if v is not None]
    return tuple(Trigger(s.event, v) for v in dict.fromkeys(values))


def compile_event_rules(
    actions: Mapping[str, Action], children: Mapping[str, Sequence[Action]]
) -> tuple[EventRule, ...]:
    """Every member-event rule of a playbook, in declaration order."""
    return tuple(
        EventRule(a, triggers_of(a.schedule), chain_below(children, a.id))
        for a in actions.values()
        if isinstance(a.schedule, OnEvent)
    )


def active_rules(rules: Iterable[EventRule], stages: Iterable[str | None]) -> list[EventRule]:
    """The rules of these stages and the routines."""
    active = {None, *stages}
    return [r for r in rules if r.stage in active]
