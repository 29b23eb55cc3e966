"""Demotion after silence: each tier's rule in rank order, on the tiers the last one left, in
place (a view of wider arrays too)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sop.engine.lang.model import Tier, Tiers
from sop.engine.program.tiers import demote_silent


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
    # a tier demoted to a higher one is read again by that tier's rule the same day
    up = Tiers(
        (
            Tier("a", 0, "", None, None, None, None, None),
            Tier("b", 1, "", None, timedelta(days=1), None, "c", None),
            Tier("c", 2, "", None, timedelta(days=5), None, "a", None),
        ),
        None,
        1.0,
    )
    t = np.array([[1, 1]], dtype=np.int8)
    assert demote_silent(up, t, np.array([[6, 2]], dtype=np.int16)).tolist() == [[True, True]]
    assert t.tolist() == [[0, 2]]
