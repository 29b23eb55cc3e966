"""What an action's `effect:` means in the simulation: one duration or decay for each key, caps
on what several effects add up to, and the actions whose effects the scenario already holds.

docs/simulation.md, "What an action's effect means", states each key; this module holds the
numbers and the pure rules, dynamics.py applies them to the member arrays.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..lang.model import Action, Effect, OnEvent, Playbook

# A `churn` effect multiplies the hazard of each member it reaches by (1 + churn) on the day it
# reaches them, and by 1 + churn·e^(−k/τ) k days later: τ = 30 days, about one retention period
# (a welcome or a nudge is remembered for weeks, not for good). Effects on one member combine
# multiplicatively and the combination stays within [HAZARD_FLOOR, HAZARD_CEIL]: no stack of
# routine actions more than halves a member's risk of leaving or raises it by more than half.
# Controlled experiments on newcomer support in online communities (e.g. Morgan & Halfaker 2018,
# Wikipedia's Teahouse) report retention gains well inside that band.
CHURN_TAU_DAYS = 30.0
CHURN_DECAY = math.exp(-1 / CHURN_TAU_DAYS)
HAZARD_FLOOR = 0.5
HAZARD_CEIL = 1.5
# An event action's `speak` lift starts at its value and fades by 10 % a day (half-life about a
# week); a scheduled action's lasts the day it fires. All of a member's lifts together stay
# within ± the run's mean speaking propensity: today's actions at most double an average
# member's chance to speak.
EVENT_SPEAK_FADE = 0.9
# The keys of an event action that act on the member's next draw of the day's activity (the
# event day for member.joined / member.approved, which happen as the day starts; the next day
# for events seen during or at the close of a day), in the column order of `ev_day`.
DAY_KEYS = ("participation", "ugc", "conversion", "interactions")
NO_EFFECT = Effect()


def in_effect(pb: Playbook, history_includes: Iterable[str]) -> Playbook:
    """The playbook as the simulation applies it: the actions the calibrated history already ran
    (`history_includes`) keep their schedules, tasks and messages, but no effect."""
    included = set(history_includes) & set(pb.actions)
    if not included:
        return pb
    actions = {
        aid: dataclasses.replace(a, effect=NO_EFFECT) if aid in included else a
        for aid, a in pb.actions.items()
    }
    return dataclasses.replace(pb, actions=actions)


@dataclass(frozen=True)
class Sum:
    """What several actions reaching one member on one occasion add up to."""

    speak: float = 0.0
    churn: float = 1.0  # multiplier on the hazard
    participation: float = 0.0  # P(takes part in at least one)
    ugc: float = 0.0
    conversion: float = 0.0
    interactions: float = 0.0  # messages a participant writes
    invites: float = 0.0
    joins: float = 0.0

    @property
    def day(self) -> tuple[float, float, float, float]:
        """The values of DAY_KEYS."""
        return (self.participation, self.ugc, self.conversion, self.interactions)


def total(actions: Iterable[Action]) -> Sum:
    """The combined effect of `actions` reaching one member at once."""
    speak = conv = ugc = inter = invites = joins = 0.0
    churn = 1.0
    miss = 1.0
    for a in actions:
        e = a.effect
        speak += e.speak
        churn *= 1 + e.churn
        miss *= 1 - e.participation
        ugc += e.ugc
        conv += e.conversion
        inter += e.interactions
        invites += e.invites
        joins += e.joins
    return Sum(speak, churn, 1 - miss, ugc, conv, inter, invites, joins)


def churn_multiplier(state: Any, factor: Any) -> Any:
    """A member's hazard multiplier after one more effect `factor` (1 + churn), within the cap.

    `state` is the multiplier minus 1 (0: no effect); it decays by CHURN_DECAY a day."""
    import numpy as np

    return np.clip((1 + state) * factor - 1, HAZARD_FLOOR - 1, HAZARD_CEIL - 1)


def event_keys(pb: Playbook) -> tuple[bool, bool]:
    """(some event action has a one-day effect (DAY_KEYS), some has invites or joins)."""
    day = acq = False
    for a in pb.actions.values():
        if not _by_event(pb, a):
            continue
        e = a.effect
        day |= any(getattr(e, k) for k in DAY_KEYS)
        acq |= bool(e.invites or e.joins)
    return day, acq


def _by_event(pb: Playbook, a: Action) -> bool:
    """`a` reaches a member because of a member event (directly or chained after one)."""
    seen: set[str] = set()
    while a.id not in seen:
        seen.add(a.id)
        if isinstance(a.schedule, OnEvent):
            return True
        anchor = getattr(a.schedule, "anchor", None)
        if not isinstance(anchor, str) or anchor not in pb.actions:
            return False
        a = pb.actions[anchor]
    return False


def has_churn(pb: Playbook) -> bool:
    """Some action has a `churn` effect (the member arrays then carry its state)."""
    return any(a.effect.churn for a in pb.actions.values())
