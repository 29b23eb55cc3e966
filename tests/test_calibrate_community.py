"""`sop calibrate community` and the calibrators' units: a messy export read, a wrong one refused
at its row and column, every part fitted with its uncertainty, and a scenario out whose inflow is
the fitted one and that records what the history already included."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sop.cli import main
from sop.engine.sim import retention_models as rm
from sop.engine.sim.activity_fit import coupling, fit_activity
from sop.engine.sim.calibrate import CalibrationError
from sop.engine.sim.community_data import (
    NO_DATE,
    ActivityLog,
    Members,
    activity_periods,
    parse_date,
    period_activity,
    read_members,
)
from sop.engine.sim.community_fit import CommunityOptions, calibrate_community, loads

from tests.test_backtest import START, simulated_members, write_members


def sop(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return r.exit_code, r.output


# -- reading a members export --------------------------------------------------------------


def test_a_messy_export_is_read(tmp_path):
    f = tmp_path / "m.csv"
    f.write_bytes(
        "\ufeffMember_ID , JOINED,Left,Source\r\n"
        "a1 ,2024-01-05,2024/02/01 ,wechat\r\n"
        "a2,2024/01/06 09:30:00,,\r\n"
        "\r\n"
        "a3,2024-1-7,2024-01-07T18:00:00,poster\r\n".encode()
    )
    m = read_members(str(f))
    assert m.ids == ("a1", "a2", "a3")
    assert list(m.joined) == [parse_date(d) for d in ("2024-01-05", "2024-01-06", "2024-01-07")]
    assert m.left[0] == parse_date("2024-02-01") and m.left[1] == NO_DATE
    assert m.left[2] == m.joined[2]  # left on the day they joined
    assert m.source == ("wechat", "unknown", "poster")


@pytest.mark.parametrize(
    ("rows", "where", "why"),
    [
        (
            "a1,2024-03-01,2024-02-01\n",
            ":2:3: ",
            "left on 2024-02-01, before joining on 2024-03-01",
        ),
        (
            "a1,2024-03-01,\nb,2024-03-02,\na1,2024-03-03,\n",
            ":4:1: ",
            "appears twice (also on line 2)",
        ),
        ("a1,01/03/2024,\n", ":2:2: ", "`joined` is not a date: '01/03/2024'"),
        ("a1,2024-02-30,\n", ":2:2: ", "not a date"),
        ("a1,,\n", ":2:2: ", "`joined` is empty"),
        (",2024-03-01,\n", ":2:1: ", "`member_id` is empty"),
    ],
)
def test_a_wrong_export_is_refused_at_its_row_and_column(tmp_path, rows, where, why):
    f = tmp_path / "m.csv"
    f.write_text("member_id,joined,left\n" + rows, encoding="utf-8")
    with pytest.raises(CalibrationError) as e:
        read_members(str(f))
    assert f"{f}{where}" in str(e.value) and why in str(e.value)


def test_missing_columns_are_named_with_the_expected_header(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("id,joined\nx,2024-01-01\n", encoding="utf-8")
    code, out = sop(
        "calibrate", "community", str(f), "--period-days", "30", "--as-of", "2024-06-01"
    )
    assert code == 2 and "missing column(s) member_id, left" in out and "[source]" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as-of", "2025-01-01"], "--period-days is required"),
        (["--period-days", "30"], "--as-of is required"),
        (["--period-days", "30", "--as-of", "soon"], "--as-of must be a date"),
        (["--period-days", "30", "--as-of", "2025-01-01", "--already-running", "Welcome!"],
         "is not an action id"),
        (["--period-days", "30", "--as-of", "2020-01-01"], "before the first join"),
    ],
)  # fmt: skip
def test_community_usage_errors_exit_2(tmp_path, args, message):
    f = tmp_path / "m.csv"
    f.write_text("member_id,joined,left\na,2024-01-01,\n", encoding="utf-8")
    code, out = sop("calibrate", "community", str(f), *args)
    assert code == 2 and message in out, out


# -- the joint fit --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, Members, int]:
    """Three years of a community whose members follow BdW with rising hazards."""
    m, end = simulated_members(
        rm.RetentionModel.BDW, [1.0, 12.0, 1.4], np.random.default_rng(12), per_period=250
    )
    path = tmp_path_factory.mktemp("export") / "members.csv"
    write_members(path, m)
    return path, m, end


def test_community_fits_every_part_and_writes_a_scenario_that_loads(export, tmp_path):
    path, _, end = export
    out_file = tmp_path / "scenarios" / "calibrated.yaml"
    out_file.parent.mkdir()
    code, out = sop(
        "calibrate", "community", str(path), "--period-days", "30",
        "--as-of", str(date.fromordinal(end)),
        "--already-running", "welcome,nudge-silent", "--bootstrap", "8", "-o", str(out_file),
        "--format", "json",
    )  # fmt: skip
    assert code == 0, out
    data = json.loads(out)
    models = {m["model"]: m for m in data["retention"]["models"]}
    assert set(models) == {"sbg", "sbg-mixture", "bdw", "bdw-mixture"}
    for m in models.values():
        assert {"log_likelihood", "aic", "holdout_log_likelihood", "params", "se"} <= set(m)
        assert all(math.isfinite(v) for v in m["se"].values()) or m["at_bound"]
    best = max(models, key=lambda k: models[k]["holdout_log_likelihood"])
    assert data["retention"]["chosen"] == best
    assert len(data["retention"]["draws"]) == 8
    # the fitted inflow is the whole inflow: nothing on top of it
    acq = data["scenario"]["acquisition"]
    assert acq["organic_per_day"] == 0 and acq["invites_per_member_per_day"] == 0
    assert acq["invite_conversion"] == 0 and acq["seed_users"] == 0
    assert data["history_includes"] == ["welcome", "nudge-silent"]
    assert "welcome, nudge-silent" in data["assumptions"][0]
    full = data["scenario_full"]
    # with --bootstrap the forecast mixture is written, as bdw-mixture draws of every model
    assert full["retention"]["model"] == "bdw-mixture" and len(full["retention"]["draws"]) == 8
    assert full["history_includes"] == data["history_includes"]
    if data["pending_keys"]:  # the simulator does not read the full format yet
        assert (
            "retention.model" in data["pending_keys"]
            and "model" not in data["scenario"]["retention"]
        )
    assert loads(data["scenario"])
    text = out_file.read_text(encoding="utf-8")
    assert "# assumption:" in text and "holdout LL" in text
    assert sop("validate", str(out_file))[0] == 0


def test_community_recovers_rising_hazards(export):
    path, _, end = export
    res = calibrate_community(str(path), CommunityOptions(period_days=30, as_of=end))
    f = res.retention.fits[rm.RetentionModel.BDW]
    for name, truth in zip(f.params, (1.0, 12.0, 1.4), strict=True):
        assert abs(f.params[name] - truth) < 4 * f.se[name], (name, f.params[name], f.se[name])
    assert res.retention.chosen in (rm.RetentionModel.BDW, rm.RetentionModel.BDW_MIXTURE)


def test_members_who_joined_after_as_of_are_left_out(export):
    path, m, _ = export
    as_of = int(m.joined.min()) + 400
    res = calibrate_community(str(path), CommunityOptions(period_days=30, as_of=as_of))
    assert res.counts["members"] == int((m.joined <= as_of).sum())
    assert any("joined after --as-of" in n for n in res.notes)


def test_the_market_at_its_bound_is_a_warning(tmp_path):
    """Joins still growing exponentially: the data cannot tell the market size."""
    rng = np.random.default_rng(1)
    rows = ["member_id,joined,left"]
    k = 0
    for d in range(200):
        for _ in range(rng.poisson(2 * math.exp(d / 60))):
            rows.append(f"m{k},{date.fromordinal(START + d)},")
            k += 1
    rows += [
        f"q{i},{date.fromordinal(START)},{date.fromordinal(START + 20 + i)}" for i in range(40)
    ]
    f = tmp_path / "m.csv"
    f.write_text("\n".join(rows) + "\n", encoding="utf-8")
    res = calibrate_community(str(f), CommunityOptions(period_days=7, as_of=START + 199))
    assert any("market size m sits at its bound" in w for w in res.warnings), res.warnings


def test_a_first_day_import_becomes_seed_users(tmp_path):
    rng = np.random.default_rng(2)
    rows = ["member_id,joined,left"] + [f"s{i},{date.fromordinal(START)}," for i in range(300)]
    k = 0
    for d in range(1, 200):
        for _ in range(rng.poisson(5)):
            gone = rng.random() < 0.5
            lft = date.fromordinal(START + d + int(rng.integers(0, 60))) if gone else ""
            rows.append(f"m{k},{date.fromordinal(START + d)},{lft}")
            k += 1
    f = tmp_path / "m.csv"
    f.write_text("\n".join(rows) + "\n", encoding="utf-8")
    res = calibrate_community(str(f), CommunityOptions(period_days=7, as_of=START + 199))
    assert res.scenario["acquisition"]["seed_users"] == 300
    assert any("taken as seed users" in n for n in res.notes)


# -- activity: daily units and coupling ------------------------------------------------------


def _weekly_activity(rng, n=1500, a=0.8, b=3.0, weeks=30):
    """Members present all along who speak on a day with probability s ~ Beta(a, b), exported
    as one row per active week (dated Monday)."""
    monday = START - date.fromordinal(START).weekday()
    joined = np.full(n, monday)
    s = rng.beta(a, b, n)
    member, day, count = [], [], []
    for w in range(weeks):
        spoke = rng.random((n, 7)) < s[:, None]
        active = spoke.sum(axis=1)
        for i in np.flatnonzero(active):
            member.append(i)
            day.append(monday + 7 * w)
            count.append(int(active[i]))
    members = Members("m.csv", tuple(f"m{i}" for i in range(n)), joined, np.full(n, NO_DATE),
                      None, np.arange(n) + 2)  # fmt: skip
    log = ActivityLog("a.csv", np.array(member), np.array(day), np.array(count, float), 0, None, 0)
    return members, log, monday + 7 * weeks - 1


def test_a_weekly_export_gives_the_daily_propensity_not_every_day():
    members, log, as_of = _weekly_activity(np.random.default_rng(3))
    starts, gran = activity_periods(log, members.first_day, as_of, 30.0, by_period=False)
    assert gran == "weekly"
    fit = fit_activity(period_activity(members, log, as_of, starts, gran))
    assert fit is not None
    mean = (
        fit.speak_alpha
        / (fit.speak_alpha + fit.speak_beta)
        * (fit.decay_floor + (1 - fit.decay_floor) * math.exp(-90 / fit.tenure_decay_days))
    )
    assert abs(mean - 0.8 / 3.8) < 0.03, fit  # the truth: 0.21 a day
    assert fit.active_share > 0.6  # most members are active in most weeks, yet speak on 1 day in 5


def test_coupling_measures_how_much_more_members_leave_after_a_silent_month():
    rng = np.random.default_rng(4)
    n, months = 4000, 18
    first = START
    starts = first + np.round(np.arange(months + 1) * 30.4375).astype(np.int64)
    s = rng.beta(1.0, 1.0, n)
    joined = np.full(n, first - 1)
    left = np.full(n, NO_DATE)
    member, day = [], []
    for j in range(months):
        alive = left == NO_DATE
        active = alive & (rng.random(n) < s)
        member += list(np.flatnonzero(active))
        day += [int(starts[j])] * int(active.sum())
        if j + 1 < months:
            risk = np.where(active, 0.05, 0.10)  # twice the risk after a silent month
            go = alive & (rng.random(n) < risk)
            left[go] = starts[j + 1] + rng.integers(0, 28, int(go.sum()))
    m = Members("m.csv", tuple(f"m{i}" for i in range(n)), joined, left, None, np.arange(n) + 2)
    log = ActivityLog("a.csv", np.array(member), np.array(day), np.ones(len(member)), 0, None, 0)
    as_of = int(starts[-1]) - 1
    pa = period_activity(m, log, as_of, starts, "monthly")
    c = coupling(m, pa)
    assert c is not None and c.ci95[0] < 2.0 < c.ci95[1] and 1.7 < c.silent_hazard_ratio < 2.3


def test_community_with_activity_reports_daily_propensity_and_coupling():
    data = Path(__file__).resolve().parent / "data" / "calibrate"
    res = calibrate_community(
        str(data / "members.csv"),
        CommunityOptions(period_days=30, as_of=parse_date("2024-02-29")),
        activity_path=str(data / "activity.csv"),
    )
    assert res.activity is not None and res.activity_granularity == "monthly"
    # make_export.py: s ~ Beta(0.9, 4), decaying to 45 % (75 days)
    assert abs(res.activity.speak_alpha / (res.activity.speak_alpha + res.activity.speak_beta)
               - 0.9 / 4.9) < 0.04  # fmt: skip
    assert res.coupling is not None and res.coupling.silent_hazard_ratio > 1.2
    assert res.scenario["activity"]["speak_alpha"] == round(res.activity.speak_alpha, 4)


# -- the single-model calibrators: units required or inferred, never defaulted ----------------


def test_retention_without_period_days_is_an_error_not_a_default(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("period,survivors\n0,1000\n1,631\n2,468\n3,382\n", encoding="utf-8")
    code, out = sop("calibrate", "retention", str(f))
    assert code == 2 and "--period-days is required" in out


def test_retention_infers_weekly_periods_from_a_date_column(tmp_path):
    f = tmp_path / "r.csv"
    days = [date(2024, 1, 1) + timedelta(weeks=i) for i in range(8)]
    surv = [1000, 631, 468, 382, 326, 289, 262, 241]
    f.write_text(
        "date,survivors\n" + "".join(f"{d},{s}\n" for d, s in zip(days, surv, strict=True))
    )
    code, out = sop("calibrate", "retention", str(f))
    assert code == 0, out
    assert "periods of 7 days, inferred from the dates" in out and "period_days: 7" in out
    assert "alpha: 0.704" in out  # the same table, the same fit


def test_irregular_dates_need_period_days(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("date,survivors\n2024-01-01,100\n2024-01-08,80\n2024-01-20,70\n")
    code, out = sop("calibrate", "retention", str(f))
    assert code == 2 and "not evenly spaced" in out and "--period-days" in out


def test_acquisition_fragment_is_the_whole_inflow(tmp_path):
    f = tmp_path / "j.csv"
    t = np.arange(0, 60)
    y = 5000 * (1 - np.exp(-0.05 * t)) / (1 + 8 * np.exp(-0.05 * t))
    f.write_text(
        "period,cumulative\n" + "".join(f"{a},{b:.2f}\n" for a, b in zip(t, y, strict=True))
    )
    code, out = sop("calibrate", "acquisition", str(f), "--period-days", "7", "--format", "json")
    acq = json.loads(out)["scenario"]["acquisition"]
    assert code == 0 and acq["organic_per_day"] == 0 and acq["seed_users"] == 0
    assert acq["invites_per_member_per_day"] == 0 and acq["invite_conversion"] == 0


def test_community_options_are_refused_for_other_models(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("period,survivors\n0,1000\n1,631\n2,468\n")
    code, out = sop(
        "calibrate", "retention", str(f), "--period-days", "30", "--as-of", "2024-01-01"
    )
    assert code == 2 and "--as-of applies to `calibrate community`" in out


# -- the simulator's coupling, calibrated to the measured risk ratio ------------------------------


def test_the_emitted_coupling_reproduces_the_measured_risk_ratio_in_the_simulator(tmp_path):
    """calibrate writes `activity.retention_coupling` as ρ ± SE; the simulator loads it, and
    members simulated with the simulator's law at that ρ (another seed) show the measured risk
    ratio within its standard error, while the default coupling would not."""
    import yaml
    from sop.engine.sim.community_data import read_activity
    from sop.engine.sim.coupling import implied_risk_ratio, repeated
    from sop.engine.sim.kernel import Simulator
    from sop.engine.sim.scenario import from_data
    from sop.engine.validate import load_playbook

    data = Path(__file__).resolve().parent / "data" / "calibrate"
    as_of = parse_date("2025-02-28")
    res = calibrate_community(
        str(data / "members.csv"),
        CommunityOptions(period_days=30, as_of=as_of),
        activity_path=str(data / "activity.csv"),
    )
    assert res.coupling is not None and res.coupling_fit is not None
    cf = res.coupling_fit
    written = yaml.safe_load(res.yaml_text())["activity"]["retention_coupling"]
    assert written["mean"] == round(cf.rho, 4) and written["sd"] == round(cf.se, 4)
    assert 0 < cf.rho < 0.95 and 0 < cf.se < 0.2 and not cf.at_bound
    sc = from_data(yaml.safe_load(res.yaml_text()))
    assert sc.activity.retention_coupling == written["mean"]  # the point value the runs centre on
    # the statistic on the export's own calendar months and join days
    members = read_members(str(data / "members.csv"))
    act = read_activity(str(data / "activity.csv"), members, 30)
    starts, gran = activity_periods(act, members.first_day, as_of, 30, by_period=False)
    joins = repeated(members.joined)
    sim = implied_risk_ratio(sc, cf.rho, joins, as_of, starts, gran, seed=987)
    assert sim is not None
    measured = res.coupling.silent_hazard_ratio
    assert abs(math.log(sim.silent_hazard_ratio / measured)) < cf.measured_se_log * 1.96, (
        sim.silent_hazard_ratio,
        measured,
    )
    # the check can fail: the simulator's default coupling (0.5) gives a clearly smaller ratio
    default = implied_risk_ratio(sc, 0.5, joins, as_of, starts, gran, seed=987)
    assert default is not None
    assert math.log(measured / default.silent_hazard_ratio) > 2 * cf.measured_se_log
    # and the Simulator's runs draw their coupling from the written ρ ± SE
    pb = tmp_path / "p.yaml"
    pb.write_text("playbook: t\ntimezone: UTC\nstages:\n  only: {}\n", encoding="utf-8")
    loaded = load_playbook(str(pb)).playbook
    assert loaded is not None
    sim = Simulator(loaded, sc, 3)
    sim.run_chunk(8, np.random.SeedSequence(1))
    assert sim.dyn.law is not None
    rho = sim.dyn.law.rho
    assert len(rho) == 8 and (abs(rho - cf.rho) < 5 * cf.se).all() and np.ptp(rho) > 0


def test_a_measured_coupling_writes_a_retention_model_that_can_carry_it():
    """At 12 months the best holdout model is a Beta collapsed to a point (no member differs
    in churn), which the measured 1.9x risk ratio contradicts and through which the simulator's
    coupling cannot act: a model with spread, as close on the holdout, is written instead."""
    data = Path(__file__).resolve().parent / "data" / "calibrate"
    res = calibrate_community(
        str(data / "members.csv"),
        CommunityOptions(period_days=30, as_of=parse_date("2023-02-28")),
        activity_path=str(data / "activity.csv"),
    )
    r = res.retention
    assert res.coupling is not None and res.coupling.ci95[0] > 1
    best = max(r.holdout_ll, key=lambda m: r.holdout_ll[m])
    chosen = r.fits[r.chosen].params
    assert chosen["alpha"] + chosen["beta"] < 1e4
    assert r.holdout_ll[r.chosen] >= r.holdout_ll[best] - 4
    assert res.coupling_fit is not None and res.coupling_fit.rho > 0.3
    assert "retention_coupling" in res.scenario["activity"]


def test_the_market_size_gets_its_profile_interval_or_the_value_given():
    """Six months in, the joins do not bound m: the profile interval runs to the fitter's limit
    and calibrate warns; with --market the scenario carries the market given, p and q refitted."""
    data = Path(__file__).resolve().parent / "data" / "calibrate"
    code, out = sop(
        "calibrate", "community", str(data / "members.csv"), "--as-of", "2022-08-31",
        "--period-days", "30", "--format", "json",
    )  # fmt: skip
    d = json.loads(out)
    prof = d["acquisition"]["market_profile"]
    assert code == 0 and prof["bounded_above"] is False
    assert prof["market_ci95"][1] >= 99 * d["acquisition"]["joins"]
    assert any("do not bound the market size" in w for w in d["warnings"])
    code, out = sop(
        "calibrate", "community", str(data / "members.csv"), "--as-of", "2022-08-31",
        "--period-days", "30", "--format", "json", "--market", "3500",
    )  # fmt: skip
    d = json.loads(out)
    assert code == 0 and d["scenario"]["acquisition"]["market"] == 3500
    assert d["acquisition"]["market_given"] == 3500 and d["acquisition"]["market_profile"] is None
    code, out = sop(
        "calibrate", "community", str(data / "members.csv"), "--as-of", "2022-08-31",
        "--period-days", "30", "--market", "10",
    )  # fmt: skip
    assert code == 2 and "--market" in out and "below" in out


def test_forecast_weights_hedge_the_holdout_weights():
    from sop.engine.sim.community_fit import HEDGE, forecast_weights

    M = rm.RetentionModel
    w = forecast_weights({M.SBG: 0.0, M.SBG_MIXTURE: 1.0, M.BDW: 0.0, M.BDW_MIXTURE: 0.0})
    assert math.isclose(sum(w.values()), 1.0)
    assert w[M.SBG] == 0.0 and math.isclose(w[M.BDW], HEDGE / 3)
    assert math.isclose(w[M.SBG_MIXTURE], 1 - HEDGE + HEDGE / 3)
    assert forecast_weights({M.BDW: 1.0}) == {M.BDW: 1.0}  # one model: nothing to hedge
