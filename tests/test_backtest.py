"""`sop backtest`: forecasts of simulated histories whose true model is known cover the actuals
as often as their intervals say, with small errors; the command on a realistic export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sop.cli import main
from sop.engine.sim import retention_models as rm
from sop.engine.sim.backtest import BacktestOptions, Metric, run_backtest
from sop.engine.sim.community_data import NO_DATE, Members, day_text, parse_date

DATA = Path(__file__).resolve().parent / "data" / "calibrate"
P = 30
START = parse_date("2023-01-02")


def simulated_members(
    model: rm.RetentionModel,
    params: list[float],
    rng: np.random.Generator,
    *,
    per_period: float = 150,
    periods: int = 36,
    period_days: int = P,
) -> tuple[Members, int]:
    """Joins at a steady rate (Poisson a period, days uniform), lifetimes drawn by the model's
    own story, each leaving on a uniform day of its last period; seen on the last day."""
    joined, left = [], []
    for c in range(periods):
        n = rng.poisson(per_period)
        j = START + c * period_days + rng.integers(0, period_days, n)
        t = rm.simulate_individuals(model, params, n, rng)
        day = (t - 1) * period_days + rng.integers(0, period_days, n)
        joined.append(j)
        left.append(j + np.minimum(day, 10**7))
    j, lft = np.concatenate(joined), np.concatenate(left)
    end = START + periods * period_days - 1
    lft = np.where(lft <= end, lft, NO_DATE)
    ids = tuple(f"m{i}" for i in range(len(j)))
    return Members("sim.csv", ids, j, lft, None, np.arange(len(j)) + 2), end


def write_members(path: Path, m: Members) -> None:
    rows = ["member_id,joined,left"]
    for i, j, lft in zip(m.ids, m.joined, m.left, strict=True):
        rows.append(f"{i},{day_text(j)},{day_text(lft) if lft != NO_DATE else ''}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def sop(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return r.exit_code, r.output


@pytest.mark.parametrize(
    ("model", "truth"),
    [
        (rm.RetentionModel.BDW, [1.0, 12.0, 1.3]),  # rising individual hazards
        (rm.RetentionModel.SBG_MIXTURE, [1.2, 6.0, 0.25]),  # early quitters
    ],
)
def test_forecast_intervals_cover_at_their_nominal_rate(model, truth):
    """24 simulated 3-year histories, fitted on the first 12 months with the true model:
    the 80 % and 95 % intervals of retention at tenures 13–36 hold the actual about 80 % and
    95 % of the time. Points of one history share its parameter draw, so the histories, not
    the points, are the unit: with 24 of them the coverage's standard error is about 0.06,
    and a forecast without parameter uncertainty covers these tenures far less (about 0.4)."""
    rng = np.random.default_rng(20250301)
    cover80, cover95, mape = [], [], []
    for rep in range(24):
        m, end = simulated_members(model, truth, rng)
        o = BacktestOptions(
            period_days=P, cutoff=m.first_day + 12 * P - 1, end=end, runs=100, seed=rep,
            draws=40, bootstrap_kind=rm.BootstrapKind.PARAMETRIC, models=(model,), joins=False,
        )  # fmt: skip
        res = run_backtest(m, o)
        pts = [p for p in res.points if p.metric == Metric.RETENTION and p.index > 12]
        assert len(pts) >= 20
        cover80.append(np.mean([p.inside(80) for p in pts]))
        cover95.append(np.mean([p.inside(95) for p in pts]))
        mape.append(np.mean([p.ape for p in pts if p.ape is not None and p.index <= 24]))
    assert 0.68 <= np.mean(cover80) <= 0.92, np.mean(cover80)
    assert 0.85 <= np.mean(cover95) <= 1.0, np.mean(cover95)
    # tenures 13-24: the forecast mean within a few percent (the actuals carry sampling noise)
    assert np.median(mape) < 0.08, np.median(mape)


def test_without_parameter_uncertainty_the_intervals_are_too_narrow(monkeypatch):
    """The check above can fail: the same forecasts with every run on the point estimate."""
    rng = np.random.default_rng(20250301)
    model, truth = rm.RetentionModel.BDW, [1.0, 12.0, 1.3]

    def point_only(fitted, table, draws, rng, kind=None):
        return np.tile(fitted.vector, (draws, 1))

    monkeypatch.setattr(rm, "bootstrap", point_only)
    cover80 = []
    for rep in range(8):
        m, end = simulated_members(model, truth, rng)
        o = BacktestOptions(period_days=P, cutoff=m.first_day + 12 * P - 1, end=end, runs=100,
                            seed=rep, draws=40, models=(model,), joins=False)  # fmt: skip
        pts = [p for p in run_backtest(m, o).points if p.metric == Metric.RETENTION]
        cover80.append(np.mean([p.inside(80) for p in pts if p.index > 12]))
    assert np.mean(cover80) < 0.6


def test_member_and_join_counts_are_forecast_and_scored():
    rng = np.random.default_rng(8)
    m, end = simulated_members(rm.RetentionModel.SBG, [1.0, 4.0], rng, per_period=200)
    o = BacktestOptions(period_days=P, cutoff=m.first_day + 12 * P - 1, end=end, runs=60)
    res = run_backtest(m, o)
    metrics = {s.metric for s in res.scores}
    assert {Metric.RETENTION, Metric.COHORT_RETENTION, Metric.RETAINED, Metric.MEMBERS} <= metrics
    retained = [p for p in res.points if p.metric == Metric.RETAINED]
    assert len(retained) == 24 and all(p.q[0] <= p.mean <= p.q[4] for p in retained)
    # steady joins and a known sBG: the base kept from before the cutoff is forecast closely
    score = next(s for s in res.scores if s.metric == Metric.RETAINED and s.first == 1)
    assert score.mape is not None and score.mape < 0.1


def test_backtest_command_on_the_realistic_export():
    code, out = sop(
        "backtest", str(DATA / "members.csv"), "--cutoff", "2023-02-28", "--period-days", "30",
        "--runs", "60", "--bootstrap", "20",
    )  # fmt: skip
    assert code == 0, out
    assert "retention" in out and "tenure 13-24" in out and "in 95%" in out
    code, out = sop(
        "backtest", str(DATA / "members.csv"), "--cutoff", "2023-02-28", "--period-days", "30",
        "--runs", "40", "--bootstrap", "10", "--format", "json",
        "--activity", str(DATA / "activity.csv"),
    )  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["cutoff"] == "2023-02-28" and data["end"] == "2025-02-28"
    scored = {(s["metric"], s["first"]) for s in data["scores"]}
    assert {("retention", 13), ("retention", 25), ("activity_rate", 1)} <= scored
    assert len(data["retention"]["models"]) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cutoff", "2023-02-28"], "--period-days is required"),
        (["--period-days", "30"], "--cutoff is required"),
        (["--period-days", "30", "--cutoff", "2031-01-01"], "before the end of the export"),
        (["--period-days", "30", "--cutoff", "28/02/2023"], "--cutoff must be a date"),
    ],
)
def test_backtest_usage_errors_exit_2(args, message):
    code, out = sop("backtest", str(DATA / "members.csv"), *args)
    assert code == 2 and message in out, out


def test_make_export_rebuilds_the_committed_files(tmp_path, monkeypatch):
    """The realistic export is the seeded script's output, byte for byte."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_export", DATA / "make_export.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "HERE", tmp_path)
    mod.main()
    for name in ("members.csv", "activity.csv"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes()


# -- joins before the peak: an honest interval on the market size -----------------------------


def _bass_members(days: int, p: float, q: float, m: float, rng: np.random.Generator) -> Members:
    from sop.engine.sim.acquisition_fit import expected_joins

    n = rng.poisson(expected_joins(p, q, m, 0, days))
    j = START + np.repeat(np.arange(days), n)
    left = np.full(len(j), NO_DATE)
    gone = rng.random(len(j)) < 0.3
    left[gone] = j[gone] + rng.integers(1, 200, int(gone.sum()))
    left = np.where(left <= START + days - 1, left, NO_DATE)
    return Members("m.csv", tuple(f"m{i}" for i in range(len(j))), j, left, None, np.arange(len(j)))


def test_a_market_the_joins_do_not_bound_is_a_warning_and_a_wide_interval():
    """Joins cut off well before the Bass peak: the profile likelihood of m is not bounded above,
    the backtest says so, and the joins forecast's interval holds the actual (which the curvature
    SE at the optimum would not)."""
    rng = np.random.default_rng(3)
    m = _bass_members(720, 0.0005, 0.012, 6000, rng)
    cutoff = START + 150
    o = BacktestOptions(period_days=P, cutoff=cutoff, end=START + 719, runs=200, draws=40)
    res = run_backtest(m, o)
    assert res.market is not None and not res.market.bounded
    assert any("do not bound the market size" in w for w in res.warnings)
    joins = [p for p in res.points if p.metric == Metric.JOINS]
    assert np.mean([p.inside(95) for p in joins]) >= 0.75
    assert "not bounded above" in res.text()


def test_a_given_market_fixes_m_and_one_below_the_joins_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    m = _bass_members(720, 0.0005, 0.012, 6000, rng)
    o = BacktestOptions(
        period_days=P, cutoff=START + 150, end=START + 719, runs=60, draws=20, market=6000
    )
    res = run_backtest(m, o)
    assert res.acquisition is not None and abs(res.acquisition.m - 6000) < 1e-6
    assert res.market is None and "given by --market" in res.text()
    f = tmp_path / "m.csv"
    write_members(f, m)
    code, out = sop(
        "backtest", str(f), "--cutoff", day_text(START + 150), "--period-days", "30",
        "--market", "5", "--runs", "20",
    )  # fmt: skip
    assert code == 2 and "--market" in out and "below" in out and "Traceback" not in out


# -- activity after the cutoff: survivors speak more -------------------------------------------


def test_propensities_given_lifetimes_follow_the_simulators_copula():
    """Members drawn by the copula (s, then θ given s, then T): among those still in after 12
    periods the mean propensity is higher. Picking s among prior candidates given T alone
    (_coupled_propensity) gives the same conditional means; with ρ = 0 it gives the prior's."""
    from scipy.special import betaincinv, ndtr
    from sop.engine.sim.activity_fit import ActivityFit
    from sop.engine.sim.backtest import _coupled_propensity

    rng = np.random.default_rng(5)
    act = ActivityFit(0.9, 4.0, 0.5, 90.0, 0.0, 0, 0, 0.0, 30.0, ())
    params = np.array([1.0, 8.0])
    rho, n = 0.6, 60_000
    zs = rng.standard_normal(n)
    s = betaincinv(act.speak_alpha, act.speak_beta, ndtr(zs))
    theta = betaincinv(
        params[0], params[1], ndtr(-rho * zs + np.sqrt(1 - rho**2) * rng.standard_normal(n))
    )
    # P(T > t | θ) = (1 − θ)^t: T is the first whole t with t >= ln u / ln(1 − θ)
    t = np.ceil(np.log(rng.random(n)) / np.log1p(-theta)).astype(np.int64)
    t = np.maximum(t, 1)
    horizon = 36
    cand = rng.beta(act.speak_alpha, act.speak_beta, (n, 32))
    picked = _coupled_propensity(
        rm.RetentionModel.SBG, params, np.minimum(t, horizon + 1), cand, act, rho, rng, horizon
    )
    for sel in (t > 12, t <= 2):
        assert abs(picked[sel].mean() - s[sel].mean()) < 0.01, (picked[sel].mean(), s[sel].mean())
    assert s[t > 12].mean() > s[t <= 2].mean() + 0.03
    flat = _coupled_propensity(
        rm.RetentionModel.SBG, params, np.minimum(t, horizon + 1), cand, act, 0.0, rng, horizon
    )
    assert abs(flat[t > 12].mean() - cand[:, 0].mean()) < 0.01
