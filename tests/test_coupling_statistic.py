"""The silent-period risk ratio has one definition: the export's (activity_fit.coupling, which
calibrate and backtest measure) and the simulator's (retention.silent_risk_ratio, which
coupling_for_risk_ratio solves ρ on) give the same number on the same members."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sop.engine.sim.activity_fit import coupling, silent_period_risk
from sop.engine.sim.community_data import NO_DATE, ActivityLog, Members, period_activity
from sop.engine.sim.retention import silent_period_cohort, silent_risk_ratio
from sop.engine.sim.scenario import Retention, Scenario

BASE = 738_000  # an ordinal day: the cohort's join day


def _as_export(left: np.ndarray, active: np.ndarray, period_days: int):
    """A simulated cohort written as an export: members, activity rows, period activity."""
    n, periods = active.shape
    ids = tuple(f"m{i}" for i in range(n))
    gone = np.where(left < 0, NO_DATE, BASE + left)
    m = Members("m.csv", ids, np.full(n, BASE), gone, None, np.arange(n) + 2)
    member, period = np.nonzero(active)
    log = ActivityLog(
        "a.csv", member, BASE + period * period_days, np.ones(len(member)), 0, None, 0
    )
    starts = BASE + np.arange(periods + 1) * period_days
    as_of = int(starts[-1]) - 1
    return m, period_activity(m, log, as_of, starts, f"{period_days}-day")


@pytest.mark.parametrize(
    "retention",
    [
        Retention(),
        Retention(
            model="bdw-mixture",
            period_days=30,
            alpha=1.28,
            beta=21.4,
            c=1.39,
            early_quit_share=0.2,
        ),
    ],
    ids=["sbg", "bdw-mixture"],
)
@pytest.mark.parametrize("rho", [0.0, 0.7])
def test_the_simulators_risk_ratio_is_the_one_an_export_of_its_members_shows(retention, rho):
    sc = Scenario(retention=retention)
    n, periods, days = 20_000, 8, 30
    left, active = silent_period_cohort(sc, rho, n, periods, days, seed=5)
    m, pa = _as_export(left, active, days)
    measured = coupling(m, pa)
    assert measured is not None
    simulated = silent_risk_ratio(sc, rho, members=n, periods=periods, period_days=days, seed=5)
    assert measured.silent_hazard_ratio == pytest.approx(simulated, rel=1e-12)
    if rho:  # and the members are the coupled ones, not an empty agreement
        assert simulated > 1.3


def test_the_statistic_is_the_mantel_haenszel_ratio_over_strata_with_both_kinds_of_period():
    # stratum 0: 10 after silence (4 leave), 30 after activity (3 leave);
    # stratum 1: 20 after silence (2 leave), 20 after activity (1 leaves);
    # stratum 2: only silent periods -> ignored
    rows = [(0, True, 10, 4), (0, False, 30, 3), (1, True, 20, 2), (1, False, 20, 1),
            (2, True, 5, 5)]  # fmt: skip
    stratum, silent, gone = [], [], []
    for k, is_silent, at_risk, leaving in rows:
        stratum += [k] * at_risk
        silent += [is_silent] * at_risk
        gone += [True] * leaving + [False] * (at_risk - leaving)
    s = np.array(silent)
    r = silent_period_risk(np.array(stratum), s, ~s, np.array(gone))
    num = 4 * 30 / 40 + 2 * 20 / 40
    den = 3 * 10 / 40 + 1 * 20 / 40
    assert r.ratio == pytest.approx(num / den)
    assert (r.at_risk_silent, r.at_risk_active) == (30, 50)
    assert (r.left_after_silent, r.left_after_active) == (6, 4)


def test_no_leaving_after_an_active_period_leaves_the_ratio_undefined():
    s = np.array([True, True, False, False])
    r = silent_period_risk(np.zeros(4, dtype=np.int64), s, ~s, np.array([True, False] * 2) & s)
    assert math.isnan(r.ratio)
