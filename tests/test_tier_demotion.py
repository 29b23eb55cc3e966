"""Demotion after silence reads only members above the lowest tier that can fall, and moves the
same members as the rule read on every member (one tier rule after another, in rank order)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sop.engine.lang.model import Tier, Tiers
from sop.engine.program.tiers import demote_silent, demotions


def _dense(tiers: Tiers, tier: np.ndarray, silent: np.ndarray) -> np.ndarray:
    """The rule over every member: each tier's silent members fall, in rank order."""
    changed = np.zeros(tier.shape, dtype=bool)
    for rank, days, to in demotions(tiers):
        down = (tier == rank) & (silent >= days)
        tier[down] = to
        changed |= down
    return changed


@st.composite
def _case(draw: st.DrawFn) -> tuple[Tiers, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 5))
    levels = []
    for rank in range(n):
        days = draw(st.one_of(st.none(), st.integers(0, 20)))
        to = draw(st.one_of(st.none(), st.integers(0, n - 1)))
        levels.append(
            Tier(
                id=f"t{rank}",
                rank=rank,
                title="",
                promote=None,
                demote_silent_for=None if days is None else timedelta(days=days),
                demote_when=None,
                demote_to=None if to is None else f"t{to}",
                demote_message=None,
            )
        )
    shape = (draw(st.integers(1, 4)), draw(st.integers(0, 30)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    tier = rng.integers(0, n, size=shape).astype(np.int8)
    silent = rng.integers(-5, 25, size=shape).astype(np.int16)
    return Tiers(tuple(levels), None, 1.0), tier, silent


@settings(max_examples=300, deadline=None)
@given(_case())
def test_demote_silent_moves_who_the_rule_over_every_member_moves(
    case: tuple[Tiers, np.ndarray, np.ndarray],
) -> None:
    tiers, tier, silent = case
    want_tier = tier.copy()
    want = _dense(tiers, want_tier, silent)
    got = demote_silent(tiers, tier, silent)
    assert np.array_equal(got, want)
    assert np.array_equal(tier, want_tier)


def test_a_view_of_wider_arrays_is_changed_in_place() -> None:
    levels = tuple(
        Tier(f"t{r}", r, "", None, timedelta(days=14) if r else None, None, None, None)
        for r in range(3)
    )
    tiers = Tiers(levels, None, 1.0)
    tier = np.array([[0, 1, 2, 2, 9], [2, 1, 0, 1, 9]], dtype=np.int8)
    silent = np.array([[30, 14, 13, 14, 0], [20, 3, 40, 15, 0]], dtype=np.int16)
    view = tier[:, :4]
    changed = demote_silent(tiers, view, silent[:, :4])
    # rank 1's rule runs before rank 2's: a member falls one rule a day
    assert tier.tolist() == [[0, 0, 2, 1, 9], [1, 1, 0, 0, 9]]
    assert changed.tolist() == [[False, True, False, True], [True, False, False, True]]
