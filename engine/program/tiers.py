"""Member tiers: demotion after silence, and the review's promotion and demotion, once.

The simulator applies these to arrays of simulated members and the runtime to arrays built from
its members' records; both call the functions here, so a member with the same history lands in
the same tier in a forecast and in the live community. Tiers are ranks (0 is the lowest).
What a rule reads per member is `catalog.MEMBER_ATTRIBUTES` (`tenure_days`,
`weekly_interactions`, ...), one array each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core import expr as ex
from ..lang.model import Tiers


def relax(node: ex.Node, factor: float) -> ex.Node:
    """The same condition with every `x >= number` threshold scaled by `factor` (hysteresis)."""
    if node.kind == "cmp" and node.op in (">=", ">") and node.args[1].kind == "num":
        num = node.args[1]
        scaled = ex.Node("num", num.start, num.end, value=float(num.value) * factor)
        return ex.Node("cmp", node.start, node.end, node.op, node.value, (node.args[0], scaled))
    if not node.args:
        return node
    return ex.Node(
        node.kind,
        node.start,
        node.end,
        node.op,
        node.value,
        tuple(relax(a, factor) for a in node.args),
    )


def _target(tiers: Tiers, demote_to: str | None, rank: int) -> int:
    to = next((x.rank for x in tiers.levels if x.id == demote_to), rank - 1)
    return max(to, 0)


def demotions(tiers: Tiers) -> list[tuple[int, float, int]]:
    """(rank, silent days, rank it falls to) of each tier with `demote.silent_for`, in the
    order they apply (ascending rank)."""
    return [
        (rank, t.demote_silent_for.total_seconds() / 86400, _target(tiers, t.demote_to, rank))
        for rank, t in enumerate(tiers.levels)
        if t.demote_silent_for is not None and rank > 0
    ]


def demote_silent(tiers: Tiers, tier: np.ndarray, silent_days: np.ndarray) -> np.ndarray:
    """Members silent for a tier's `demote.silent_for` fall (in place); who moved (daily)."""
    changed = np.zeros(tier.shape, dtype=bool)
    silent: dict[float, np.ndarray] = {}  # tiers often share a silence: compared once
    for rank, days, to in demotions(tiers):  # in rank order, each on the tiers the last left
        if days not in silent:
            silent[days] = silent_days >= days
        down = (tier == rank) & silent[days]
        if down.any():
            tier[down] = to
            changed |= down
    return changed


def review(tiers: Tiers, tier: np.ndarray, env: Mapping[str, Any]) -> np.ndarray:
    """The review (on `tiers.review` days): promotion, hysteresis, `demote.when` (in place).

    A member meeting a tier's `promote` rises to it; one in a tier who no longer meets its rule
    relaxed by the hysteresis falls one tier; then `demote.when`, read against the tiers as
    reviewed, moves a member down one rule (not a cascade). Returns who moved.
    """
    before = tier.copy()
    for rank, t in enumerate(tiers.levels):
        if t.promote is None or t.promote.node is None:
            continue
        ok = np.asarray(ex.evaluate(t.promote.node, env), dtype=bool)
        tier[(tier < rank) & ok] = rank
        if tiers.hysteresis < 1:
            keep = np.asarray(ex.evaluate(relax(t.promote.node, tiers.hysteresis), env), dtype=bool)
            tier[(tier == rank) & ~keep] = rank - 1
    reviewed = tier.copy()
    for rank, t in enumerate(tiers.levels):
        if rank == 0 or t.demote_when is None or t.demote_when.node is None:
            continue
        hit = np.asarray(ex.evaluate(t.demote_when.node, env), dtype=bool)
        down = (reviewed == rank) & hit
        if down.any():
            tier[down] = _target(tiers, t.demote_to, rank)
    changed: np.ndarray = tier != before
    return changed


def tier_rank(tiers: Tiers) -> dict[str, int]:
    """Each tier id's rank."""
    return {t.id: t.rank for t in tiers.levels}
