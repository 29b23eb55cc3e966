"""Teams for PK contests (`teams:`): which team a joiner is put in, and the teams' names.

`round-robin`: the k-th joiner (0 first, counted over everyone ever put in a team) goes to team
k mod n; `balanced`: each joiner goes to the team with the fewest current members, ties to the
team named first; `attribute`: the team is the member's value of attribute `by` ("" when unset:
no team). A member keeps their team. The simulator and the runtime both call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..lang.model import AttributeType, Playbook, TeamAssignment, Teams


def team_names(pb: Playbook) -> tuple[str, ...]:
    """The teams in order (ties go to the first): `names`, else an enum attribute's values."""
    t = pb.teams
    if t is None:
        return ()
    if t.names:
        return t.names
    a = pb.attributes.get(t.by or "")
    if a is not None and a.type == AttributeType.ENUM:
        return a.values
    return ()  # attribute teams without a closed set: named by the values members carry


def round_robin(k: Any, teams: int) -> Any:
    """The team index of the k-th joiner (an int, or an array of them)."""
    return k % teams


def balanced(sizes: Any) -> Any:
    """The team index a joiner goes to: the fewest current members, ties to the first.

    `sizes`: current members per team (..., teams); the caller adds the joiner before the next.
    """
    import numpy as np

    return np.argmin(np.asarray(sizes), axis=-1)  # argmin returns the first of equal minima


def assign(teams: Teams, k: int, sizes: Sequence[int], value: Any = "") -> str:
    """The team of one joiner (the runtime): the k-th joiner, teams' current sizes (in
    `names` order), and for `attribute` the member's value of `by`."""
    if teams.assign == TeamAssignment.ATTRIBUTE:
        return "" if value is None else str(value)
    if not teams.names:
        return ""
    if teams.assign == TeamAssignment.ROUND_ROBIN:
        return teams.names[int(round_robin(k, len(teams.names)))]
    return teams.names[int(balanced(list(sizes)))]
