"""The run's members as member conditions read them at one instant: who an action reaches.

A segment, a `where:`, a `for_each` audience and a leaderboard are decided when the action
fires, on the members' current attributes (engine/run/attributes.py counts the built-ins from
each stored member; `program.members` reads the conditions, `program.ranking` orders the
boards, `program.teams` names the teams): the simulator calls the same functions over its
arrays of members. `expands(action)` says which occurrences fan out into one per member.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ..lang.model import Action, Audience, Leaderboard, Playbook
from ..program import Program
from ..program import members as PM
from .attributes import member_values
from .store.base import MemberRecord, StateStore

# audiences that name one person: an event's member, or who invited them
_ONE = (Audience.MEMBER.value, Audience.REFERRER.value, Audience.STAFF.value)


def expands(a: Action) -> bool:
    """Whether an occurrence of `a` without a member fans out into one per member at its
    firing: a segment audience, a leaderboard, `for_each`, or a group message with `where:`."""
    if a.top is not None or a.for_each is not None:
        return True
    if Audience.segment_of(a.audience) is not None:
        return True
    return a.where is not None and a.audience not in _ONE


def is_current(m: MemberRecord, at: datetime) -> bool:
    """Whether `m` is a member at `at` (joined before it, not left by it)."""
    return m.joined_at is not None and m.joined_at <= at and (m.left_at is None or m.left_at > at)


@dataclass(frozen=True)
class Population:
    """The current members at an instant, each with what member conditions read of them
    (`past`: those who joined before it and left, for counts over everyone ever joined)."""

    pb: Playbook
    members: list[MemberRecord]  # current members, by id
    envs: list[dict[str, Any]]
    past: list[MemberRecord]
    past_envs: list[dict[str, Any]]

    @classmethod
    def load(
        cls,
        program: Program,
        store: StateStore,
        run_id: str,
        at: datetime,
        day: date | None = None,
    ) -> Population:
        """Every member of the run at `at`, read on local `day` (default: `at`'s)."""
        tz = program.tz
        pb = program.playbook
        day = day or at.astimezone(tz).date()
        balances = store.points_balances(run_id) if pb.points is not None else {}
        current: list[MemberRecord] = []
        past: list[MemberRecord] = []
        for m in store.iter_members(run_id):
            if is_current(m, at):
                current.append(m)
            elif m.joined_at is not None and m.joined_at <= at:
                past.append(m)

        def env(m: MemberRecord) -> dict[str, Any]:
            return member_values(pb, m, day, tz, balances.get(m.id, 0))

        return cls(pb, current, [env(m) for m in current], past, [env(m) for m in past])

    def mask(self, audience: str, where: Any = None) -> list[bool]:
        """Who belongs to a group audience (`everyone`, `tier:<id>`, `segment:<id>`) and
        satisfies `where` (an Expression, or None)."""
        return [
            bool(PM.audience_mask(self.pb, audience, env))
            and (where is None or bool(PM.matches(where, env)))  # no `where`: everyone
            for env in self.envs
        ]

    def recipients(self, a: Action) -> list[str]:
        """The members an occurrence of `a` reaches now, in order (a leaderboard: its order)."""
        if a.top is not None:
            return self.top(a.top, a.where)
        audience = a.for_each or a.audience
        if audience in _ONE:  # a `where:` beside a one-person audience: nobody to expand to
            return []
        chosen = self.mask(audience, a.where)
        return [m.id for m, ok in zip(self.members, chosen, strict=True) if ok]

    def _column(self, name: str) -> list[float]:
        out = []
        for env in self.envs:
            v = env.get(name, math.nan)
            out.append(float(v) if isinstance(v, int | float) else math.nan)
        return out

    def top(self, board: Leaderboard, where: Any = None) -> list[str]:
        """The members of a leaderboard: the first N by `by` (ties: earlier joiner, then id),
        or every member of the first N teams by their total of `by`."""
        import numpy as np

        from ..program import ranking

        if not self.members:
            return []
        among = self.mask(board.among or Audience.EVERYONE.value, where)
        if board.teams:
            return self._top_teams(board, among)
        joined = [m.joined_at.timestamp() if m.joined_at else math.inf for m in self.members]
        ids = np.asarray([m.id for m in self.members], dtype=object)
        chosen = ranking.top_members(self._column(board.by), joined, ids, board.n, among)
        pos = ranking.order(np.where(among, self._column(board.by), np.nan), joined, ids)
        return [self.members[i].id for i in pos if chosen[i]]

    def team_scores(self, score: str | None = None) -> dict[str, float]:
        """Each team's score: the sum of `score` (default `teams.score`) over its current
        members, in `teams.names` order (teams named only by members' values: as found)."""
        from ..program import ranking
        from ..program.teams import team_names

        teams = self.pb.teams
        if teams is None:
            return {}
        names = list(team_names(self.pb))
        for env in self.envs:
            t = str(env.get("team") or "")
            if t and t not in names:
                names.append(t)
        index = {n: i for i, n in enumerate(names)}
        team = [index.get(str(env.get("team") or ""), -1) for env in self.envs]
        scores = ranking.team_scores(team, self._column(score or teams.score), len(names))
        return {n: float(scores[i]) for i, n in enumerate(names)}

    def _top_teams(self, board: Leaderboard, among: Sequence[bool]) -> list[str]:
        from ..program import ranking

        scores = self.team_scores(board.by)
        if not scores:
            return []
        names = list(scores)
        best = {names[int(i)] for i in ranking.top_teams(list(scores.values()), board.n)}
        return [
            m.id
            for m, env, ok in zip(self.members, self.envs, among, strict=True)
            if ok and env.get("team") in best
        ]

    def balances(self) -> Mapping[str, float]:
        """Each member's points balance (as conditions read it)."""
        return {m.id: float(env.get("points", 0.0)) for m, env in zip(self.members, self.envs,
                                                                    strict=True)}  # fmt: skip
