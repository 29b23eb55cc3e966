"""One retention forecast: the mixture `sop backtest` scores is the one `sop calibrate community
--bootstrap` writes, so a backtest says whether to trust the calibrated scenario. Every model of
the family is written as bdw-mixture parameters; the simulator's law, reading the written draws,
gives the backtest's retention curve, and `sop simulate` of the scenario lands inside the
backtest's interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from sop.engine.sim import retention_models as rm
from sop.engine.sim.backtest import BacktestOptions, run_backtest
from sop.engine.sim.community_fit import (
    CommunityOptions,
    as_mixture_row,
    calibrate_community,
    forecast_weights,
)

from tests.test_backtest import P, simulated_members, write_members

M = rm.RetentionModel
DRAWS = 60
SEED = 3


@pytest.mark.parametrize(
    ("model", "params"),
    [
        (M.SBG, [0.8, 4.0]),
        (M.SBG_MIXTURE, [1.2, 6.0, 0.25]),
        (M.BDW, [1.0, 12.0, 1.4]),
        (M.BDW_MIXTURE, [1.0, 15.0, 0.7, 0.2]),
    ],
)
def test_every_model_is_bdw_mixture_with_its_own_survival(model, params):
    t = np.arange(0, 40)
    row = as_mixture_row(model, params)
    assert len(row) == 4
    assert np.allclose(rm.survival(M.BDW_MIXTURE, row, t), rm.survival(model, params, t))


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """A 3-year history with early quitters; calibrate and backtest at month 12, same seed."""
    m, end = simulated_members(
        M.SBG_MIXTURE, [1.2, 6.0, 0.25], np.random.default_rng(77), per_period=150
    )
    path = tmp_path_factory.mktemp("mix") / "members.csv"
    write_members(path, m)
    cutoff = m.first_day + 12 * P - 1
    cal = calibrate_community(
        str(path), CommunityOptions(period_days=P, as_of=cutoff, bootstrap=DRAWS, seed=SEED)
    )
    bt = run_backtest(
        m,
        BacktestOptions(
            period_days=P, cutoff=cutoff, end=end, runs=40, seed=SEED, draws=DRAWS, joins=False
        ),
    )
    return cal, bt


def test_calibrate_writes_the_mixture_backtest_forecasts_with(both):
    cal, bt = both
    mix = bt.retention.mixture
    assert mix is not None and cal.retention.mixture is not None
    written = yaml.safe_load(cal.yaml_text())["retention"]
    assert written["model"] == "bdw-mixture" and len(written["draws"]) == DRAWS
    # the same rows, to the digits written
    assert np.array_equal(np.array(written["draws"]), mix.rows)
    # in proportion to the forecast weights (to whole draws)
    w = forecast_weights(bt.retention.weights)
    for m_, share in mix.shares.items():
        assert abs(share - w[m_]) <= 1 / DRAWS + 1e-9
    # the point values are the highest-weight model's fit, for readers
    top = max(w, key=lambda k: w[k])
    point = as_mixture_row(top, cal.retention.fits[top].vector)
    assert np.allclose([written[k] for k in ("alpha", "beta", "c", "early_quit_share")], point)
    text = cal.yaml_text()
    assert mix.label() in text and "bdw-mixture parameters" in text
    assert mix.label() in bt.text()


def test_the_scenarios_law_gives_the_backtests_retention_curve(both):
    """Runs of the simulator draw rows of `retention.draws` (parameters.draw); the survival
    their law implies, averaged over the runs, is the backtest's forecast curve within the
    Monte Carlo error of the rows drawn."""
    from sop.engine.sim.parameters import draw
    from sop.engine.sim.retention import expected_survival, law
    from sop.engine.sim.scenario import from_data

    cal, bt = both
    sc = from_data(yaml.safe_load(cal.yaml_text()))
    runs = 4000
    values = draw(sc.uncertain, sc.joint_draws(), runs, np.random.SeedSequence(11))
    lw = law(sc, values.values, runs)
    ks = np.arange(1, 37)
    s = np.array([expected_survival(lw, r, ks) for r in range(runs)])
    curve = bt.as_dict()["retention"]["forecast_curve"]
    mean = np.array(curve["mean"][:36])
    # runs share a draw in pairs: runs / 2 independent rows
    se = s.std(axis=0) / math.sqrt(runs / 2)
    assert (np.abs(s.mean(axis=0) - mean) < 4 * se + 1e-9).all()
    # and the check can fail: the single best model's curve is not the mixture's
    other = rm.survival(M.SBG, bt.retention.fits[M.SBG].vector, ks)
    assert (np.abs(other - mean) > 4 * se).any()


def test_simulate_with_the_written_scenario_lands_in_the_backtests_interval(both, tmp_path):
    from sop.engine.sim.montecarlo import SimOptions, simulate
    from sop.engine.sim.scenario import from_data
    from sop.engine.validate import load_playbook

    cal, bt = both
    pb = tmp_path / "p.yaml"
    pb.write_text("playbook: t\ntimezone: UTC\nstages:\n  only: {}\n", encoding="utf-8")
    loaded = load_playbook(str(pb)).playbook
    assert loaded is not None
    sc = from_data(yaml.safe_load(cal.yaml_text()))
    res = simulate(loaded, sc, SimOptions(runs=40, days=75, seed=2))
    d30 = res.metrics[:, -1, res.metric_names.index("retention_d30")]
    curve = bt.as_dict()["retention"]["forecast_curve"]
    lo, hi = curve["p2_5"][0], curve["p97_5"][0]
    assert lo < float(np.nanmean(d30)) < hi, (float(np.nanmean(d30)), lo, hi)


def test_with_activity_both_commands_mix_the_same_models_and_the_coupling_acts_through_them():
    """At 12 months of the realistic export the activity shows members who differ in churn
    (a silent-period risk ratio well above 1). The mixture is the one the retention history
    alone gives, in both commands: models whose fit is a Beta collapsed to a point stay in it
    (a note says they cannot carry the coupling), and the ρ calibrate writes, solved on the
    mixture's rows that can carry it, reproduces the measured ratio in members simulated from
    those rows of the written scenario (another seed)."""
    from pathlib import Path

    from sop.engine.sim.community_data import (
        activity_periods,
        parse_date,
        read_activity,
        read_members,
    )
    from sop.engine.sim.community_fit import _spread
    from sop.engine.sim.coupling import implied_risk_ratio, repeated
    from sop.engine.sim.scenario import from_data

    data = Path(__file__).resolve().parent / "data" / "calibrate"
    cut = parse_date("2023-02-28")
    cal = calibrate_community(
        str(data / "members.csv"),
        CommunityOptions(period_days=P, as_of=cut, bootstrap=40),
        activity_path=str(data / "activity.csv"),
    )
    members = read_members(str(data / "members.csv"))
    log = read_activity(str(data / "activity.csv"), members, P)
    bt = run_backtest(
        members, BacktestOptions(period_days=P, cutoff=cut, runs=20, draws=40, joins=False), log
    )
    mix, bmix = cal.retention.mixture, bt.retention.mixture
    assert mix is not None and bmix is not None
    assert np.array_equal(mix.rows, bmix.rows) and mix.models == bmix.models
    assert cal.coupling is not None and cal.coupling.ci95[0] > 1
    point_like = [m for m, f in cal.retention.fits.items() if not _spread(f)]
    assert point_like  # the check can fail: some model's fit is a point at 12 months
    # the coupling does not move the retention forecast: the same rows as without activity
    alone = calibrate_community(
        str(data / "members.csv"), CommunityOptions(period_days=P, as_of=cut, bootstrap=40)
    )
    assert alone.retention.mixture is not None
    assert np.array_equal(alone.retention.mixture.rows, mix.rows)
    kept = set(point_like) & set(mix.shares)
    assert kept  # the check can fail: a point-like fit has forecast weight at 12 months
    assert any("cannot carry the coupling" in n and str(min(kept)) in n for n in cal.notes)
    cf = cal.coupling_fit
    assert cf is not None and not cf.at_bound
    sc = from_data(yaml.safe_load(cal.yaml_text()))
    assert sc.joint_draws() is not None
    seen = members.before(cut)
    starts, gran = activity_periods(log, seen.first_day, cut, P, by_period=False)
    sim = implied_risk_ratio(sc, cf.rho, repeated(seen.joined), cut, starts, gran, seed=987)
    assert sim is not None
    measured = cal.coupling.silent_hazard_ratio
    assert abs(math.log(sim.silent_hazard_ratio / measured)) < 1.96 * cf.measured_se_log


def test_without_bootstrap_the_best_model_is_written_and_the_header_asks_for_draws():
    from pathlib import Path

    from sop.engine.sim.community_data import parse_date

    data = Path(__file__).resolve().parent / "data" / "calibrate"
    cal = calibrate_community(
        str(data / "members.csv"), CommunityOptions(period_days=P, as_of=parse_date("2024-02-29"))
    )
    assert cal.retention.mixture is None
    written = yaml.safe_load(cal.yaml_text())["retention"]
    assert written["model"] == str(cal.retention.chosen) and "draws" not in written
    assert "give --bootstrap N to write that mixture" in cal.yaml_text()
