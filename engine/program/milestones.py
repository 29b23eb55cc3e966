"""Milestones (`on: member.milestone, counter: invites, reaches: 10`): when one fires.

A milestone fires for a member when the counter goes from below `reaches` to `reaches` or more,
once per member and milestone action: never again, even if the counter drops and rises. The
caller keeps who has had it (`fired`); the simulator passes arrays of members, the runtime one
member's counter before and after an event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..lang.model import Action, OnEvent


@dataclass(frozen=True, slots=True)
class Milestone:
    """A milestone action: the counter (a numeric member attribute) and the value it reaches."""

    action: str
    counter: str
    reaches: float


def milestones(actions: Mapping[str, Action]) -> list[Milestone]:
    """Every milestone action of a playbook (those missing counter or reaches never fire)."""
    out = []
    for a in actions.values():
        s = a.schedule
        if (
            isinstance(s, OnEvent)
            and s.event == "member.milestone"
            and s.counter is not None
            and s.reaches is not None
        ):
            out.append(Milestone(a.id, s.counter, float(s.reaches)))
    return out


def crossed(before: Any, after: Any, reaches: float, fired: Any = False) -> Any:
    """Whether the milestone fires now: before < reaches <= after, not fired before.

    An undefined counter (NaN, a declared number never set) has not reached anything: it
    crosses when it is set to `reaches` or more. A bool for one member, a mask for arrays.
    """
    import numpy as np

    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    hit = (a >= reaches) & ~(b >= reaches) & ~np.asarray(fired, dtype=bool)
    return bool(hit) if np.ndim(hit) == 0 else hit
