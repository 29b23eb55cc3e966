"""Leaderboards (`to: {top: N, by: ...}`): the first N members by a measure, or the first N
teams by their total, in one order for the simulator and the runtime.

Members: the highest measure first; ties go to the earlier joiner, then to the smaller member
id. Only members with a defined measure above 0 are ranked: nobody tops a board of invites
without inviting anyone, and an undefined measure (NaN) never ranks. Teams: the highest total
first; ties go to the team named first (`teams.names` order). Arrays may carry leading axes (the
simulator's runs); the member or team axis is the last.
"""

from __future__ import annotations

from typing import Any


def order(measure: Any, joined: Any, ids: Any) -> Any:
    """Member positions in leaderboard order along the last axis (unranked ones at the end)."""
    import numpy as np

    m = np.asarray(measure, dtype=float)
    ranked = np.isfinite(m) & (m > 0)
    key = np.where(ranked, -m, np.inf)  # unranked sort last
    j = np.broadcast_to(np.asarray(joined, dtype=float), m.shape)
    i = np.broadcast_to(np.asarray(ids), m.shape)
    return np.lexsort((i, j, key), axis=-1)  # the last key sorts first


def top_members(measure: Any, joined: Any, ids: Any, n: int, among: Any = None) -> Any:
    """Which members are in the top `n` (a mask over the last axis).

    `joined`: when each joined (an instant's timestamp or a day; smaller is earlier); `ids`:
    member ids (text or numbers); `among`: a mask of who may rank (an audience), None: all.
    """
    import numpy as np

    m = np.asarray(measure, dtype=float)
    if among is not None:
        m = np.where(np.asarray(among, dtype=bool), m, np.nan)
    pos = order(m, joined, ids)
    ranked = np.isfinite(m) & (m > 0)
    first = np.zeros(m.shape, dtype=bool)
    k = min(n, m.shape[-1]) if m.ndim else 0
    if k:
        np.put_along_axis(first, pos[..., :k], True, axis=-1)
    return first & ranked


def team_scores(team: Any, score: Any, teams: int, present: Any = None) -> Any:
    """Each team's total of `score` over its members: (..., teams).

    `team`: each member's team index (-1 or out of range: none); `present`: a mask of the
    members who count (current members), None: all.
    """
    import numpy as np

    t = np.asarray(team)
    s = np.nan_to_num(np.asarray(score, dtype=float))  # an undefined score adds nothing
    if present is not None:
        s = np.where(np.asarray(present, dtype=bool), s, 0.0)
    t, s = np.broadcast_arrays(t, s)
    if s.ndim and teams and _whole(s):
        # whole numbers add up exactly in any order: one pass over the members for all teams
        lead = int(np.prod(s.shape[:-1], dtype=np.int64))
        tt = t.reshape(lead, -1)
        ok = (tt >= 0) & (tt < teams)  # false for NaN too: a team index read as a float
        cell = (np.arange(lead)[:, None] * teams + np.where(ok, tt, 0).astype(np.int64))[ok]
        sums = np.bincount(cell, weights=s.reshape(lead, -1)[ok], minlength=lead * teams)
        return sums.reshape(*s.shape[:-1], teams)
    return np.stack([np.where(t == k, s, 0.0).sum(axis=-1) for k in range(teams)], axis=-1)


def _whole(s: Any) -> bool:
    """Whether every value is a whole number and any sum of them is exact in a float."""
    import numpy as np

    return bool(np.all(s == np.floor(s))) and float(np.abs(s).sum()) < 2.0**52


def top_teams(scores: Any, n: int) -> Any:
    """The indices of the first `n` teams by score, ties to the team named first: (..., n)."""
    import numpy as np

    s = np.asarray(scores, dtype=float)
    return np.argsort(-s, axis=-1, kind="stable")[..., : min(n, s.shape[-1])]
