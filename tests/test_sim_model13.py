"""The simulator's model fixes and parameter uncertainty (issue 13): what each effect key means
(a duration or decay, a cap on what effects add up to, none applied twice), churn coupled to
speaking, custom metrics kept in their unit's range, and scenario parameters that are
distributions — each run's draws, the split of the spread into Monte Carlo and parameters, and
which parameter moves each gate."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sop.cli import main
from sop.engine.lang.model import Effect
from sop.engine.sim import retention_models as rm
from sop.engine.sim.kernel import Simulator
from sop.engine.sim.montecarlo import SimOptions, simulate
from sop.engine.sim.parameters import PARAMETER_STREAM, parameter_seed
from sop.engine.sim.retention import coupling_for_risk_ratio, silent_risk_ratio
from sop.engine.sim.scenario import (
    Acquisition,
    Activity,
    CustomMetric,
    Retention,
    Scenario,
    ScenarioError,
    load_scenario,
)
from sop.engine.sim.uncertainty import analyse, pairs_of, split
from sop.engine.validate import load_playbook

from tests.conftest import REFERENCE, position

BARE = """\
    playbook: t
    timezone: UTC
    stages:
      only: {}
    """
# nearly every member has the same churn: hazard ratios between runs are the effects' own
FLAT = Retention(alpha=3000.0, beta=7000.0, period_days=30)  # θ = 0.3 a month for everyone


def _quiet(seed: int = 0, **kw: Any) -> Acquisition:
    args: dict[str, Any] = dict(
        seed_users=seed, organic_per_day=0, bass_p=0, bass_q=0, invites_per_member_per_day=0
    )
    args.update(kw)
    return Acquisition(**args)


def _pb(tmp_path: Path, text: str, name: str = "p.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    res = load_playbook(str(p))
    assert res.playbook is not None, [(d.code, d.message) for d in res.diagnostics]
    return res.playbook


def _with_routines(routines: str) -> str:
    return BARE.replace(
        "    stages:", "    routines:\n" + textwrap.indent(routines, "      ") + "    stages:"
    )


def _with_actions(actions: str) -> str:
    return BARE.replace(
        "      only: {}\n",
        "      only:\n        actions:\n" + textwrap.indent(actions, "          "),
    )


def _metric(res: Any, name: str) -> np.ndarray:
    return res.metrics[:, :, res.metric_names.index(name)]


def _run(pb: Any, sc: Scenario, days: int, runs: int = 4, seed: int = 1):
    sim = Simulator(pb, sc, days)
    return sim.run_chunk(runs, np.random.SeedSequence(seed))


def _hazard_ratio(a: Any, b: Any, days: slice) -> float:
    """Leavers per member on `days` of chunk `a` over the same of chunk `b` (no joins)."""

    def rate(res: Any) -> float:
        members = _metric(res, "members")
        alive_before = np.concatenate([np.full((members.shape[0], 1), np.nan), members[:, :-1]], 1)
        left = alive_before - members
        return float(np.nansum(left[:, days]) / np.nansum(alive_before[:, days]))

    return rate(a) / rate(b)


# -- 1. what an effect means ------------------------------------------------------------------


def test_an_event_actions_churn_effect_fades_instead_of_lasting_for_good(tmp_path) -> None:
    """A welcome with churn -0.5 halves the hazard at first and is gone months later (it used to
    multiply the member's hazard by 0.5 for good)."""
    plain = _pb(tmp_path, _with_routines("hello: {on: member.joined, do: message, text: hi}\n"))
    welcome = _pb(
        tmp_path,
        _with_routines(
            "hello: {on: member.joined, do: message, text: hi, effect: {churn: -0.4}}\n"
        ),
        "w.yaml",
    )
    sc = Scenario(acquisition=_quiet(20_000), retention=FLAT)
    a, b = _run(welcome, sc, 180), _run(plain, sc, 180)
    assert _hazard_ratio(a, b, slice(1, 8)) < 0.7  # 1 - 0.4 on the first days
    assert 0.72 < _hazard_ratio(a, b, slice(25, 35)) < 0.92  # 1 - 0.4/e after a month
    assert _hazard_ratio(a, b, slice(120, 180)) > 0.9  # gone after four months


def test_a_scheduled_actions_churn_effect_lasts_beyond_its_day(tmp_path) -> None:
    """One meetup on day 0 lowers the hazard for weeks, as an event action's does."""
    plain = _pb(tmp_path, _with_actions("x: {day: 0, time: '10:00', do: post, text: hi}\n"))
    meetup = _pb(
        tmp_path,
        _with_actions("x: {day: 0, time: '10:00', do: post, text: hi, effect: {churn: -0.4}}\n"),
        "m.yaml",
    )
    sc = Scenario(acquisition=_quiet(20_000), retention=FLAT)
    a, b = _run(meetup, sc, 60), _run(plain, sc, 60)
    assert _hazard_ratio(a, b, slice(1, 10)) < 0.75


def test_repeated_effects_do_not_compound_beyond_the_cap(tmp_path) -> None:
    """A daily action with churn -0.3 keeps the hazard at half (the floor), never near zero;
    one with churn +0.5 at one and a half."""
    plain = _pb(tmp_path, _with_actions("x: {cron: '0 8 * * *', do: post, text: hi}\n"))
    sc = Scenario(acquisition=_quiet(20_000), retention=FLAT)
    b = _run(plain, sc, 60)
    for churn, bound in ((-0.3, 0.5), (0.5, 1.5)):  # docs/simulation.md: the cap
        pb = _pb(
            tmp_path,
            _with_actions(
                f"x: {{cron: '0 8 * * *', do: post, text: hi, effect: {{churn: {churn}}}}}\n"
            ),
            f"c{churn}.yaml",
        )
        ratio = _hazard_ratio(_run(pb, sc, 60), b, slice(20, 60))
        assert abs(ratio - bound) < 0.08, (churn, ratio)


def test_the_days_speak_lifts_together_are_capped(tmp_path) -> None:
    """Ten daily posts lifting speaking by 0.3 each add at most the mean propensity (0.23)."""
    posts = "".join(
        f"p{i}: {{cron: '0 8 * * *', do: post, text: hi, effect: {{speak: 0.3}}}}\n"
        for i in range(10)
    )
    pb = _pb(tmp_path, _with_actions(posts))
    sc = Scenario(
        acquisition=_quiet(5000),
        retention=FLAT,
        activity=Activity(decay_floor=1.0, retention_coupling=0.0),
    )
    rate = _metric(_run(pb, sc, 20), "daily_speak_rate")[:, 5:]
    mean = 1.2 / 5.2
    assert abs(rate.mean() - 2 * mean) < 0.02  # the propensity doubled, not 1.0


def test_effects_of_actions_the_history_already_ran_are_not_applied(tmp_path) -> None:
    text = _with_routines(
        "hello: {on: member.joined, do: message, text: hi, effect: {churn: -0.5, speak: 0.2}}\n"
    )
    pb = _pb(tmp_path, text)
    plain = _pb(
        tmp_path, _with_routines("hello: {on: member.joined, do: message, text: hi}\n"), "q.yaml"
    )
    sc = Scenario(acquisition=_quiet(3000, organic_per_day=20), retention=FLAT)
    included = dataclasses.replace(sc, history_includes=("hello",))
    a, b, c = _run(pb, included, 60), _run(plain, sc, 60), _run(pb, sc, 60)
    assert np.array_equal(a.metrics, b.metrics, equal_nan=True)  # as if it had no effect
    assert not np.array_equal(c.metrics, b.metrics, equal_nan=True)


def test_history_includes_must_name_the_playbooks_actions(tmp_path) -> None:
    pb = _pb(tmp_path, _with_routines("hello: {on: member.joined, do: message, text: hi}\n"))
    text = "scenario: s\nhistory_includes: [hello, helo]\n"
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioError) as e:
        load_scenario(str(f), playbook=pb)
    (d,) = e.value.diagnostics
    assert d.code == "SOP249" and (d.line, d.column) == position(text, "helo")
    assert "hello" in d.hint


# a playbook where every effect key of one action can show: members join daily, take part in a
# daily activity, and the action reaches them either on joining or as a daily post
BUSY = """\
    playbook: t
    timezone: UTC
    routines:
      act: {cron: '0 9 * * *', do: checkin, text: go, effect: {participation: 0.3}}
    """


@pytest.mark.parametrize("how", ["event", "scheduled"])
@pytest.mark.parametrize("key", [f.name for f in dataclasses.fields(Effect)])
def test_every_effect_key_changes_the_forecast(tmp_path, key, how) -> None:
    """No key of `effect:` is accepted and ignored, for event and scheduled actions alike."""
    # joins and invites stay well below one new member per joiner: no referral explosion
    value = {"churn": -0.5, "interactions": 3.0, "participation": 0.8}.get(key, 0.3)
    if how == "scheduled" and key == "joins":
        value = 10.0  # a burst a day
    if how == "event":
        action = "x: {on: member.joined, do: message, text: hi, effect: {%s: %s}}\n"
    else:
        action = "x: {cron: '0 8 * * *', do: post, text: hi, effect: {%s: %s}}\n"
    head = BUSY.rstrip(" ") + "      "
    with_key = head + action % (key, value) + "    stages:\n      only: {}\n"
    without = head + action % (key, 0) + "    stages:\n      only: {}\n"
    sc = Scenario(
        acquisition=_quiet(200, organic_per_day=80, invite_conversion=0.5),
        activity=Activity(retention_coupling=0.0),
    )
    a = _run(_pb(tmp_path, with_key, "a.yaml"), sc, 40)
    b = _run(_pb(tmp_path, without, "b.yaml"), sc, 40)
    watch = {
        "speak": "daily_speakers",
        "participation": "weekly_participation",
        "churn": "members",
        "interactions": "daily_speakers",
        "ugc": "ugc_posts",
        "conversion": "paying_members",
        "invites": "new_members",
        "joins": "new_members",
    }[key]
    more, base = _metric(a, watch)[:, 10:].mean(), _metric(b, watch)[:, 10:].mean()
    assert more > base * 1.03, (key, how, more, base)


def test_interactions_make_participants_speak(tmp_path) -> None:
    """`interactions: n` = messages a participant writes: it speaks with 1 - e^(-n)."""

    def pb(n: float, name: str):
        return _pb(
            tmp_path,
            _with_actions(
                "x: {cron: '0 9 * * *', do: poll, text: hi,"
                f" effect: {{participation: 0.5, interactions: {n}}}}}\n"
            ),
            name,
        )

    sc = Scenario(acquisition=_quiet(5000), retention=FLAT, activity=Activity(retention_coupling=0))
    quiet = _metric(_run(pb(0, "a.yaml"), sc, 20), "daily_speak_rate")[:, 3:].mean()
    busy = _metric(_run(pb(5, "b.yaml"), sc, 20), "daily_speak_rate")[:, 3:].mean()
    assert busy - quiet > 0.05


# -- 2. engagement and retention --------------------------------------------------------------


def _ends(tmp_path: Path, sc: Scenario, days: int):
    """A bare playbook's chunk and its member arrays at the end."""
    pb = _pb(tmp_path, BARE)
    sim = Simulator(pb, sc, days)
    kept: list[Any] = []
    original = sim._finish

    def keep(*a: Any, **k: Any) -> Any:
        kept.append(sim._pop)
        return original(*a, **k)

    sim._finish = keep  # type: ignore[method-assign]
    res = sim.run_chunk(4, np.random.SeedSequence(2))
    return res, kept[0]


def test_with_coupling_survivors_speak_more_than_leavers(tmp_path) -> None:
    def gap(rho: float) -> float:
        sc = Scenario(
            acquisition=_quiet(5000),
            retention=Retention(alpha=1.0, beta=1.5, period_days=30),
            activity=Activity(retention_coupling=rho),
        )
        _, pop = _ends(tmp_path, sc, 120)
        n = int(pop.n.max())
        alive, speak = pop["alive"][:, :n], pop["speak"][:, :n]
        used = pop["join_day"][:, :n] >= 0
        return float(speak[alive & used].mean() - speak[~alive & used].mean())

    assert gap(0.6) > 0.04
    assert abs(gap(0.0)) < 0.01


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("sbg", {"alpha": 1.0, "beta": 1.5}),
        ("sbg-mixture", {"alpha": 1.2, "beta": 6.0, "early_quit_share": 0.2}),
        ("bdw", {"alpha": 1.3, "beta": 21.0, "c": 1.4}),
        ("bdw-mixture", {"alpha": 1.28, "beta": 21.4, "c": 1.39, "early_quit_share": 0.2}),
    ],
)
def test_the_marginal_retention_curve_is_the_calibrated_one_with_coupling_on(
    tmp_path, model, params
) -> None:
    sc = Scenario(
        acquisition=_quiet(20_000),
        retention=Retention(model=model, period_days=30, **params),
        activity=Activity(retention_coupling=0.8),
    )
    res, _ = _ends(tmp_path, sc, 181)
    members = _metric(res, "members").mean(axis=0)
    order = ("alpha", "beta", "c", "early_quit_share")
    curve = rm.survival(
        rm.RetentionModel(model), [params[k] for k in order if k in params], range(7)
    )
    for t in range(1, 7):  # day 30t - 1 closes the t-th period of the seed cohort
        assert abs(members[30 * t - 1] / 20_000 - curve[t]) < 0.015, (t, model)


def test_the_coupling_can_be_calibrated_from_a_silent_period_risk_ratio() -> None:
    sc = Scenario()
    assert abs(silent_risk_ratio(sc, 0.0, members=50_000) - 1) < 0.1
    assert silent_risk_ratio(sc, 0.6, members=50_000) > 1.4
    rho = coupling_for_risk_ratio(sc, 1.5)
    assert abs(silent_risk_ratio(sc, rho) - 1.5) < 0.08


def test_a_coupling_a_point_like_beta_cannot_carry_is_a_warning(tmp_path) -> None:
    pb = _pb(tmp_path, BARE)
    sc = Scenario(acquisition=_quiet(100), retention=Retention(alpha=2e6, beta=2e7))
    res = simulate(pb, sc, SimOptions(runs=2, days=5))
    assert any("retention_coupling" in w for w in res.warnings)


# -- 3. custom metrics stay in their unit's range -----------------------------------------------

METRICS = """\
    playbook: t
    timezone: UTC
    metrics:
      share: {unit: ratio}
      tickets: {unit: count}
      total: {unit: count, cumulative: true}
      mood: {unit: score}
    stages:
      only: {}
    """


def test_a_modelled_ratio_stays_in_0_1_and_counts_stay_in_range(tmp_path) -> None:
    pb = _pb(tmp_path, METRICS)
    sc = Scenario(
        acquisition=_quiet(10),
        metrics={
            "share": CustomMetric(start=0.25, per_day=0.004, noise=0.05),  # would reach 1.7
            "tickets": CustomMetric(start=5, per_day=-0.5, noise=3),  # would fall below 0
            "total": CustomMetric(start=0, per_day=1, noise=5),  # noisy, must never fall
            "mood": CustomMetric(start=0, per_day=-0.5, noise=1),  # unbounded
        },
    )
    res = _run(pb, sc, 365, runs=8)
    share, tickets = _metric(res, "share"), _metric(res, "tickets")
    assert share.min() >= 0 and share.max() <= 1 and share.max() > 0.9
    assert tickets.min() >= 0
    total = _metric(res, "total")
    assert (np.diff(total, axis=1) >= 0).all() and total[:, -1].min() > 300
    assert _metric(res, "mood")[:, -1].max() < -100  # a score may go anywhere


def test_the_reference_scenarios_ratio_stays_below_1_over_a_year() -> None:
    """`company_account_rate` (a ratio, +0.2 points a day) reached 1.30 at p95 in a year."""
    from sop.engine.sim.scenario import scenario_beside

    pb = load_playbook(str(REFERENCE)).playbook
    sc = load_scenario(scenario_beside(str(REFERENCE)), playbook=pb)
    res = simulate(pb, sc, SimOptions(runs=8, days=365, seed=1))
    x = _metric(res, "company_account_rate")
    assert np.nanmax(x) <= 1 and np.nanmax(x) > 0.9


# -- 4. parameter uncertainty ---------------------------------------------------------------------

UNCERTAIN = """\
scenario: u
acquisition:
  seed_users: 200
  organic_per_day: {low: 5, high: 40}
  bass_p: 0
  bass_q: 0
  invites_per_member_per_day: 0
retention:
  alpha: 1.0
  beta: {mean: 1.5, sd: 0.4, min: 0.5}
activity:
  ugc_per_speak: {draws: [0.01, 0.02, 0.03]}
"""


def _scenario(tmp_path: Path, text: str, pb: Any = None) -> Scenario:
    f = tmp_path / "s.yaml"
    f.write_text(text)
    return load_scenario(str(f), playbook=pb)


def test_a_parameter_may_be_a_distribution_and_stands_as_its_point(tmp_path) -> None:
    sc = _scenario(tmp_path, UNCERTAIN)
    assert sc.acquisition.organic_per_day == 22.5 and sc.retention.beta == 1.5
    assert set(sc.uncertain) == {
        "acquisition.organic_per_day",
        "retention.beta",
        "activity.ugc_per_speak",
    }
    assert sc.as_dict()["retention"]["beta"] == {"mean": 1.5, "sd": 0.4, "min": 0.5}


@pytest.mark.parametrize(
    ("text", "at", "says"),
    [
        ("retention: {beta: {low: 3, high: 2}}\n", "{low: 3, high: 2}", "`low` 3 is above"),
        ("retention: {model: sbg, c: 1.2}\n", "c: 1.2", "has no `c`"),
        ("retention: {model: bdw, draws: [[1, 2]]}\n", "[1, 2]", "takes 3"),
        ("retention: {alpha: {draws: [0, 1]}}\n", "{draws: [0, 1]}", "outside the range"),
        ("retention: {model: bdw, draws: [[1, 2, 50]]}\n", "[1, 2, 50]", "outside the range"),
        ("activity: {decay_floor: {mean: 2, sd: 1}}\n", "{mean: 2, sd: 1}", "outside the range"),
    ],
)
def test_a_parameter_that_does_not_fit_its_model_is_a_located_error(
    tmp_path, text, at, says
) -> None:
    with pytest.raises(ScenarioError) as e:
        _scenario(tmp_path, "scenario: s\n" + text)
    (d,) = e.value.diagnostics
    assert d.code == "SOP287" and says in d.message
    assert (d.line, d.column) == position("scenario: s\n" + text, at)


def test_a_distribution_needs_one_shape(tmp_path) -> None:
    with pytest.raises(ScenarioError) as e:
        _scenario(tmp_path, "scenario: s\nretention: {beta: {mean: 1, low: 0.5, high: 2}}\n")
    assert e.value.diagnostics[0].code == "SOP101"


def test_each_run_draws_its_parameters_and_pairs_share_theirs(tmp_path) -> None:
    sc = _scenario(tmp_path, UNCERTAIN)
    pb = _pb(tmp_path, BARE)
    res = simulate(pb, sc, SimOptions(runs=64, days=30, seed=3))
    names, draws = res.parameter_names, res.parameters
    assert names == sorted(sc.uncertain) and draws is not None and draws.shape == (64, 3)
    assert (draws[0::2] == draws[1::2]).all()  # runs 2k and 2k+1 share a draw
    organic = draws[:, names.index("acquisition.organic_per_day")]
    assert organic.min() >= 5 and organic.max() <= 40 and len(set(organic)) == 32
    assert set(draws[:, names.index("activity.ugc_per_speak")]) <= {0.01, 0.02, 0.03}
    joins = _metric(res, "new_members")[:, 1:].mean(axis=1)  # follows each run's own draw
    assert np.corrcoef(joins, organic)[0, 1] > 0.95


def test_joint_retention_draws_keep_their_rows_together(tmp_path) -> None:
    rows = [[1.0, 2.0, 1.2], [3.0, 30.0, 0.8], [0.5, 9.0, 1.5]]
    sc = _scenario(tmp_path, f"scenario: s\nretention: {{model: bdw, draws: {rows}}}\n")
    res = simulate(_pb(tmp_path, BARE), sc, SimOptions(runs=16, days=3, seed=1))
    got = {tuple(r) for r in res.parameters.tolist()}
    names = res.parameter_names
    assert names == ["retention.alpha", "retention.beta", "retention.c"]
    assert got <= {tuple(r) for r in rows} and len(got) > 1


def test_same_seed_same_draws_for_any_worker_count(tmp_path) -> None:
    sc = _scenario(tmp_path, UNCERTAIN)
    pb = _pb(tmp_path, BARE)
    one = simulate(pb, sc, SimOptions(runs=24, days=20, seed=9, workers=1))
    two = simulate(pb, sc, SimOptions(runs=24, days=20, seed=9, workers=2))
    assert np.array_equal(one.parameters, two.parameters)
    assert np.array_equal(one.metrics, two.metrics, equal_nan=True)


def test_parameter_draws_take_no_numbers_from_the_members_stream(tmp_path) -> None:
    """A distribution that can only draw the point value simulates exactly as the point."""
    pb = _pb(tmp_path, BARE)
    point = _scenario(
        tmp_path, UNCERTAIN.split("acquisition:")[0] + "acquisition: {seed_users: 200}\n"
    )
    pinned = _scenario(
        tmp_path,
        UNCERTAIN.split("acquisition:")[0] + "acquisition: {seed_users: {draws: [200]}}\n",
    )
    a = simulate(pb, point, SimOptions(runs=8, days=30, seed=4))
    b = simulate(pb, pinned, SimOptions(runs=8, days=30, seed=4))
    assert np.array_equal(a.metrics, b.metrics, equal_nan=True)
    seed = np.random.SeedSequence(4)
    assert parameter_seed(seed).spawn_key == (PARAMETER_STREAM,)


def test_the_split_of_the_variance_is_exact_on_known_outcomes() -> None:
    rng = np.random.default_rng(0)
    theta = np.repeat(rng.normal(0, 2, 500), 2)  # pairs share θ
    params = theta[:, None]
    noise = rng.normal(0, 1, 1000)
    s = split(theta + noise, pairs_of(params))
    assert s is not None and abs(s.parameters - 4) < 0.6 and abs(s.monte_carlo - 1) < 0.15
    only_noise = split(noise, pairs_of(params))
    assert only_noise is not None and (only_noise.parameter_share or 0) < 0.1


def test_the_report_separates_parameter_uncertainty_from_monte_carlo_error(tmp_path) -> None:
    pb = _pb(tmp_path, BARE.replace("      only: {}", "      only: {exit: {when: members >= 900}}"))
    sc = _scenario(tmp_path, UNCERTAIN)
    res = simulate(pb, sc, SimOptions(runs=200, days=40, seed=5))
    doc = json.loads(json.dumps(res.to_dict()))
    u = doc["uncertainty"]
    assert u["draws"] == 100 and u["runs_per_draw"] == 2
    members = u["metrics"]["split"]["members"]
    assert members["parameter_share"] > 0.8  # the inflow's range dwarfs the noise
    (gate,) = u["gates"]
    lo, hi = gate["parameter_range90"]
    assert lo < gate["p_pass"] < hi and hi - lo > 0.3
    mc_lo, mc_hi = gate["monte_carlo_interval95"]
    assert mc_hi - mc_lo < hi - lo
    (sens,) = doc["sensitivity"]["gates"]
    top = sens["parameters"][0]
    assert top["parameter"] == "acquisition.organic_per_day" and top["rank_correlation"] > 0.6
    assert top["p_pass_high_third"] > top["p_pass_low_third"]


def test_a_point_scenario_says_its_intervals_are_monte_carlo_only(tmp_path) -> None:
    res = simulate(
        _pb(tmp_path, BARE), Scenario(acquisition=_quiet(50)), SimOptions(runs=4, days=3)
    )
    assert "Monte Carlo error only" in res.to_dict()["uncertainty"]["note"]


def test_simulate_sensitivity_prints_which_parameter_moves_each_gate(tmp_path) -> None:
    pb = tmp_path / "p.yaml"
    pb.write_text(
        textwrap.dedent(BARE).replace("  only: {}", "  only: {exit: {when: members >= 900}}")
    )
    sc = tmp_path / "s.yaml"
    sc.write_text(UNCERTAIN)
    r = CliRunner().invoke(
        main,
        ["simulate", str(pb), "--scenario", str(sc), "--runs", "80", "--days", "40",
         "--sensitivity", "--workers", "1"],
        catch_exceptions=False,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    table = r.output[r.output.index("sensitivity:") :]
    first = table.splitlines()[2]
    assert first.split()[:2] == ["only", "acquisition.organic_per_day"]


def test_analyse_needs_enough_pairs() -> None:
    u, s = analyse(["x"], np.zeros((4, 1)), {}, [], np.zeros((4, 2, 1)), ["m"], {})
    assert "no decomposition" in u["note"] and s["gates"] == []


def test_the_docs_example_of_distributions_loads(tmp_path) -> None:
    docs = (REFERENCE.parents[1] / "docs" / "simulation.md").read_text(encoding="utf-8")
    section = docs[docs.index("## Parameter uncertainty") :]
    block = section[
        section.index("```yaml\n") + 8 : section.index("```\n", section.index("```yaml"))
    ]
    sc = _scenario(tmp_path, "scenario: docs\n" + block)
    assert set(sc.uncertain) == {
        "acquisition.organic_per_day",
        "retention.beta",
        "activity.retention_coupling",
    }


def test_chunks_run_together_draw_what_each_draws_alone(tmp_path) -> None:
    from sop.engine.sim.parameters import draw, draw_chunks

    sc = _scenario(tmp_path, UNCERTAIN)
    seeds = np.random.SeedSequence(7).spawn(3)
    alone = [draw(sc.uncertain, None, 8, s).values for s in seeds]
    together = draw_chunks(sc.uncertain, None, [(8, s) for s in seeds]).values
    for k, v in together.items():
        assert np.array_equal(v, np.concatenate([a[k] for a in alone]))
