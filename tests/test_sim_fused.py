"""The compiled day (engine/sim/fused.py) against the NumPy definitions of the laws it applies,
chunks with parameter draws sharing a step, and the memory estimate against the real arrays.

Timings are bench/simulate.py's business: nothing here measures time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sop.engine.sim import effects as fx
from sop.engine.sim import fused, jit_cache, samplers
from sop.engine.sim import montecarlo as mc
from sop.engine.sim import retention as rt
from sop.engine.sim.kernel import (
    DAY_BYTES,
    SLOT_SLACK,
    Simulator,
    _Pop,
    bytes_per_member,
    member_columns,
    slot_bytes,
)
from sop.engine.sim.scenario import load_scenario, scenario_beside
from sop.engine.validate import load_playbook

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"
REFERENCE = str(PLAYBOOKS / "community-lifecycle.yaml")

UNCERTAIN = """\
scenario: u
acquisition:
  seed_users: 150
  organic_per_day: {low: 5, high: 40}
  bass_p: 0
  bass_q: 0
retention:
  model: bdw-mixture
  alpha: 1.0
  beta: {mean: 1.5, sd: 0.4, min: 0.5}
  c: {low: 0.7, high: 1.3}
  early_quit_share: 0.2
activity:
  ugc_per_speak: {draws: [0.01, 0.02, 0.03]}
  decay_floor: {low: 0.3, high: 0.6}
"""


def _law(model: str, c: float, quit: float, runs: int = 3) -> rt.Law:
    class Ret:
        alpha, beta, period_days, early_quit_share, draws = 1.0, 2.0, 30.0, quit, ()

    Ret.model, Ret.c = model, c

    class Act:
        speak_alpha, speak_beta, retention_coupling = 1.2, 4.0, 0.3

    class Sc:
        retention, activity = Ret, Act

    return rt.law(Sc, {}, runs)


@pytest.mark.parametrize(
    ("model", "c", "quit"),
    [("sbg", 1.0, 0.0), ("bdw", 1.4, 0.0), ("sbg-mixture", 1.0, 0.3), ("bdw-mixture", 0.7, 0.3)],
)
def test_the_compiled_hazard_is_the_retention_law(model: str, c: float, quit: float) -> None:
    lw = _law(model, c, quit)
    rng = np.random.default_rng(4)
    joined = rt.draw_joiners(lw, np.repeat(np.arange(3), 400), rng)
    rate = joined.rate.reshape(3, 400)
    days = 120
    join_day = rng.integers(0, 100, (3, 400)).astype(np.int16)
    quitter = None if joined.quitter is None else joined.quitter.reshape(3, 400)
    delta = rt.tenure_table(lw, days)
    d = 100
    want = rt.daily_hazard(lw, rate, d - join_day.astype(np.int64), quitter, delta)
    mode = 1 if delta is not None else (2 if quitter is not None else 0)
    got = fused.hazard(
        d,
        rate,
        join_day,
        np.zeros((1, 1), bool) if quitter is None else quitter,
        np.zeros((1, 1), np.float32) if delta is None else delta.astype(np.float32),
        mode,
        lw.period,
    )
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9)
    assert (got > 0).any() and (got < 1).any()


def test_the_compiled_churn_multiplier_is_the_effects_rule() -> None:
    rng = np.random.default_rng(2)
    state = rng.uniform(-0.5, 0.5, 200).astype(np.float32)
    factor = rng.uniform(0.3, 1.8, 200).astype(np.float32)
    want = fx.churn_multiplier(state, factor)
    lo, hi = np.float32(fx.HAZARD_FLOOR - 1), np.float32(fx.HAZARD_CEIL - 1)
    got = np.array(
        [fused.churn_multiplier(s, f, lo, hi) for s, f in zip(state, factor, strict=True)]
    )
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert (got == lo).any() and (got == hi).any()  # the caps are reached both ways


def _uncertain(tmp_path: Path) -> tuple[object, object]:
    pb = load_playbook(REFERENCE).playbook
    f = tmp_path / "u.yaml"
    f.write_text(UNCERTAIN)
    return pb, load_scenario(str(f), playbook=pb)


def test_chunks_with_parameter_draws_share_a_step_and_give_what_each_gives_alone(
    tmp_path,
) -> None:
    pb, sc = _uncertain(tmp_path)
    assert sc.uncertain
    seeds = np.random.SeedSequence(8).spawn(3)
    specs = [(8, seeds[0], 0), (8, seeds[1], 8), (3, seeds[2], 16)]
    together = Simulator(pb, sc, 50, 1 << 30).run_chunks(specs)
    alone = [Simulator(pb, sc, 50, 1 << 30).run_chunk(*s) for s in specs]
    for a, b in zip(together, alone, strict=True):
        assert a.metrics.tobytes() == b.metrics.tobytes()
        assert a.parameters is not None and a.parameters.tobytes() == b.parameters.tobytes()
        assert a.stage_outcome == b.stage_outcome and a.member_days == b.member_days
    # the draws differ between runs: the chunks really drew their own parameters
    drawn = np.concatenate([r.parameters for r in together])
    assert len(np.unique(drawn[:, 0])) >= 8  # runs come in pairs that share their draws


def test_a_scenario_with_distributions_gives_the_same_for_any_workers(
    tmp_path, monkeypatch
) -> None:
    pb, sc = _uncertain(tmp_path)

    def doc(workers: int, group_runs: int) -> dict:
        monkeypatch.setattr(mc, "GROUP_RUNS", group_runs)
        opts = mc.SimOptions(runs=20, days=40, seed=3, workers=workers)
        d = mc.simulate(pb, sc, opts).to_dict()
        d.pop("performance")
        d["options"].pop("workers")
        return d

    alone = doc(1, mc.CHUNK_RUNS)
    assert doc(1, 128) == alone
    assert doc(2, 128) == alone


@pytest.mark.parametrize("name", ["community-lifecycle", "parent-community"])
def test_the_memory_estimate_counts_every_member_array(name: str) -> None:
    path = str(PLAYBOOKS / f"{name}.yaml")
    pb = load_playbook(path).playbook
    sc = load_scenario(scenario_beside(path), [], playbook=pb)
    sim = Simulator(pb, sc, 30)
    extra = {**sim.cx.columns(), **sim.dyn.columns()}
    assert member_columns(pb, sc, 30) == extra  # what the estimate counts is what is allocated
    pop = _Pop(4, 1000, extra=extra, days=30)
    real = sum(a.nbytes for a in pop.arrays.values())
    assert slot_bytes(extra) * 4 * 1000 == real
    est = mc.estimate_memory(pb, sc, mc.SimOptions(runs=8, days=30))
    assert est.member_bytes == bytes_per_member(extra)
    assert est.member_bytes >= SLOT_SLACK * real / 4000 + DAY_BYTES


def test_the_reference_playbook_has_the_dynamics_columns_in_its_estimate() -> None:
    pb = load_playbook(REFERENCE).playbook
    sc = load_scenario(scenario_beside(REFERENCE), [], playbook=pb)
    cols = member_columns(pb, sc, 30)
    assert {"churn_fx", "ev_day"} <= set(cols)
    assert bytes_per_member(cols) > bytes_per_member({}) + SLOT_SLACK * (4 + 16) - 1


def test_without_a_writable_cache_folder_numba_caches_in_the_temp_folder(monkeypatch) -> None:
    """A read-only install and home: numba would refuse `cache=True` at import; the temp
    folder is used instead (and an explicit NUMBA_CACHE_DIR is left alone)."""
    config = jit_cache._numba_config
    monkeypatch.setattr(config, "CACHE_DIR", "")
    blocked = Path(__file__)  # a file: no folder can be made under it, even by root
    got = jit_cache.cache_folder([str(blocked / "a"), str(blocked / "b")])
    assert got is not None and got.startswith(str(Path(jit_cache.tempfile.gettempdir())))
    assert got == config.CACHE_DIR
    monkeypatch.setattr(config, "CACHE_DIR", "/somewhere/else")
    assert jit_cache.cache_folder([str(blocked / "a")]) == "/somewhere/else"
    monkeypatch.setattr(config, "CACHE_DIR", "")
    assert jit_cache.cache_folder([str(Path(__file__).parent)]) is None  # writable: numba's choice


def _numpy_day(d, s, tables, reach, n0, u, u2, tu, talk_on, delta, quit_on, period, remove_at):
    """One day of fused.activity written as the NumPy passes of the kernel before it (the
    laws of dynamics.py, retention.py and effects.py), on copies of the state `s`."""
    s = {k: v.copy() for k, v in s.items()}
    R, W = s["alive"].shape
    alive = s["alive"]
    tier = s["tier"].astype(np.intp)
    g = lambda k: np.take_along_axis(tables[k], tier, axis=1)  # noqa: E731
    padded = np.zeros((6, R, W), np.float32)
    padded[5] = 1
    padded[:, :, :n0] = reach
    age = np.clip(d - s["join_day"].astype(np.int64), 0, s["decay"].shape[1] - 1)
    lift = np.clip(s["events"] + g(0) + padded[0], -s["cap"][:, None], s["cap"][:, None])
    s["events"] *= np.float32(fx.EVENT_SPEAK_FADE)
    p = np.clip(s["speak"] * s["decay"][0, age] + lift, 0, 1) * alive
    speak = u < p
    ugc = u < p * s["ugc_ps"][:, None]
    viol = (u >= p * (1 - s["viol_ps"][:, None])) & speak
    part_p = 1 - (1 - g(1)) * (1 - padded[1])
    ugc_p = g(2) + padded[2]
    conv = s["base"][:, None] + g(3) + padded[3]
    inter = g(4) + padded[4]
    fx0 = s["ev_day"][..., 0]
    part_p = np.where(fx0 != 0, 1 - (1 - part_p) * (1 - fx0), part_p)
    ugc_p = ugc_p + s["ev_day"][..., 1]
    conv = conv + s["ev_day"][..., 2]
    inter = inter + s["ev_day"][..., 3]
    s["ev_day"][:] = 0
    pp = np.minimum(part_p * p * s["inv_mean"][:, None], 1)
    part = u2 >= 1 - pp
    ugc |= part & (u2 >= 1 - pp * ugc_p)
    talk = part & talk_on[:, None] & (tu < -np.expm1(-inter))
    speak |= talk
    s["ugc"] += ugc
    s["speak7"] = ((s["speak7"] << 1) | speak) & 0x7F
    s["part7"] = ((s["part7"] << 1) | part) & 0x7F
    s["silent"] = np.where(speak, 0, s["silent"] + 1).astype(np.int16)
    s["streak"] = np.where(part, s["streak"] + 1, 0).astype(np.int16)
    quitter = s["quit"] if quit_on else None
    lw = type("L", (), {"period": period})
    h = rt.daily_hazard(lw, s["rate"], d - s["join_day"].astype(np.int64), quitter, delta)
    state = s["churn_fx"]
    state = np.where(g(5) != 1, fx.churn_multiplier(state, g(5)), state)
    state = np.where(padded[5] != 1, fx.churn_multiplier(state, padded[5]), state)
    h = h * (1 + state)
    s["churn_fx"] = (state * np.float32(fx.CHURN_DECAY)).astype(np.float32)
    leave = (u2 < h) & alive
    pays = (u2 >= h) & (u2 < h + conv) & alive
    s["paid"] = (pays & (s["payments"] == 0)).sum(axis=1)
    s["payments"] += pays
    s["violations"] += viol
    leave |= (s["violations"] >= remove_at) & alive
    s["flags"] = speak * 1 | ugc * 2 | viol * 4 | part * 8 | pays * 16 | leave * 32
    return s


@pytest.mark.parametrize("plain", [False, True])
def test_the_compiled_day_is_the_numpy_day(plain: bool) -> None:
    """Every law of the day at once (tiers, reach, one-day event effects, interactions, the
    bdw-mixture hazard with quitters, churn effects, moderation, a check-in) on random state:
    the compiled pass writes what the NumPy passes write. `plain`: the same effects in every
    tier, the sBG hazard, no reach (the vectorised path, fused._segment, with the members
    whose one-day effects are pending taken one by one)."""
    rng = np.random.default_rng(12)
    R, W, T, d = 3, 500, 3, 40
    n0 = 0 if plain else 300
    lw = _law("sbg" if plain else "bdw-mixture", 1.0 if plain else 1.3, 0.0 if plain else 0.3, R)
    delta = rt.tenure_table(lw, 60)
    s = {
        "alive": rng.random((R, W)) < 0.85,
        "join_day": np.sort(rng.integers(0, d + 1, (R, W)), axis=1).astype(np.int16),
        "speak": rng.beta(1.2, 4, (R, W)).astype(np.float32),
        "events": rng.uniform(0, 0.2, (R, W)).astype(np.float32),
        "speak7": rng.integers(0, 128, (R, W)).astype(np.uint8),
        "part7": rng.integers(0, 128, (R, W)).astype(np.uint8),
        "silent": rng.integers(0, 20, (R, W)).astype(np.int16),
        "ugc": rng.integers(0, 5, (R, W)).astype(np.int16),
        "payments": rng.integers(0, 2, (R, W)).astype(np.int16),
        "violations": rng.integers(0, 3, (R, W)).astype(np.int16),
        "streak": rng.integers(0, 9, (R, W)).astype(np.int16),
        "tier": rng.integers(0, T, (R, W)).astype(np.int8),
        "rate": rng.uniform(0, 0.3, (R, W)).astype(np.float32),
        "churn_fx": rng.uniform(-0.3, 0.3, (R, W)).astype(np.float32),
        "quit": rng.random((R, W)) < 0.2,
        "ev_day": (rng.random((R, W, 4)) * (rng.random((R, W, 1)) < 0.3)).astype(np.float32),
        "decay": np.exp(-np.arange(62, dtype=np.float32) / 20)[None, :].astype(np.float32),
        "cap": np.full(R, 0.25, np.float32),
        "inv_mean": np.full(R, 4.3, np.float32),
        "ugc_ps": np.array([0.1, 0.2, 0.3], np.float32),
        "viol_ps": np.full(R, 0.05, np.float32),
        "base": np.full(R, 0.002, np.float32),
    }
    tables = rng.uniform(0, 0.2, (6, R, T)).astype(np.float32)
    tables[5] = rng.choice([1.0, 0.8, 1.3], (R, T))
    reach = rng.uniform(0, 0.1, (6, R, n0)).astype(np.float32)
    reach[5] = rng.choice([1.0, 0.9], (R, n0))
    keys = rng.integers(0, 2**64, (R, 3), dtype=np.uint64)
    u, u2, tu = fused.uniforms(keys, W)  # what the compiled day draws under these keys
    talk_on = np.array([True, False, True])
    by_day = np.zeros((R, d + 1), np.int64)  # no run's slots by join day: the general path
    if plain:  # every tier the same (runs 0 and 2 also with a churn effect), by join day
        tables[:] = tables[:, :, :1]
        tables[4, 1:] = 0  # run 0 talks by the schedule, run 2 only where an event says so
        tables[5, 1] = 1
        s["rate"] *= 0.2  # a daily hazard
        talk_on[1] = False
        by_day = np.stack([np.bincount(j, minlength=d + 1) for j in s["join_day"]])
    # the members with one-day effects are marked (fused.reached marks them as it adds them)
    s["ev_on"] = (s["ev_day"] != 0).any(axis=2).astype(np.uint8)
    quit_on = not plain
    want = _numpy_day(d, s, tables, reach, n0, u, u2, tu, talk_on, delta, quit_on, lw.period, 3)
    got = {k: v.copy() for k, v in s.items()}
    flags = np.zeros((R, W), np.uint8)
    run_f = np.stack([s["cap"], s["inv_mean"], s["ugc_ps"], s["viol_ps"], s["base"]], axis=1)
    ever, posts = np.zeros(R), np.zeros(R, np.int64)
    fused.activity(
        d, np.full(R, W, np.int64), got["alive"], got["join_day"], got["speak"],
        got["events"], got["speak7"], got["part7"], got["silent"], got["ugc"], got["payments"],
        got["violations"], got["streak"], got["tier"], got["rate"], got["churn_fx"],
        got["quit"], got["ev_day"], got["ev_on"], flags, got["decay"],
        np.ascontiguousarray(run_f), tables,
        reach, n0, np.array([not plain] * 6), keys, talk_on,
        np.zeros((1, 1), np.float32) if delta is None else delta.astype(np.float32),
        np.array([0 if plain else 1, lw.period]),
        np.array([1, 1, quit_on, 3, fx.CHURN_DECAY, 0.5, 1.5]),
        np.ones(R, np.bool_), ever, posts, by_day,
    )  # fmt: skip
    alive = s["alive"]
    assert ((flags != 0) <= alive).all()  # the departed do nothing
    np.testing.assert_array_equal(flags, want["flags"])
    for k in ("speak7", "part7", "ugc", "payments", "violations", "ev_day"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert s["ev_on"].any() and not got["ev_on"].any()  # read once, then cleared
    for k in ("silent", "streak"):  # the departed's values are read by no one
        np.testing.assert_array_equal(got[k][alive], want[k][alive], err_msg=k)
    np.testing.assert_allclose(got["events"], want["events"], rtol=1e-6)
    np.testing.assert_allclose(got["churn_fx"], want["churn_fx"], rtol=1e-5, atol=1e-7)
    assert ever.tolist() == want["paid"].tolist()
    assert posts.tolist() == ((want["flags"] & 2) != 0).sum(axis=1).tolist()
    for bit in (1, 2, 4, 8, 16, 32):  # every outcome happens somewhere
        assert (flags & bit).any(), bit


def test_after_warm_a_simulation_compiles_nothing_more() -> None:
    """`fused.warm` loads every specialisation the kernel calls (the fuzz harness relies on
    it: a case must not write numba's cache), with and without constructs and dynamics."""
    fused.warm()
    funcs = (
        fused.activity,
        fused.depart,
        fused.counts,
        fused.matching,
        fused.reached,
        fused.joined_on,
        fused.living_counts,
        fused.living_at,
        *samplers.KERNEL,
    )
    before = [len(f.signatures) for f in funcs]
    for name in ("community-lifecycle", "parent-community"):
        path = str(PLAYBOOKS / f"{name}.yaml")
        pb = load_playbook(path).playbook
        sc = load_scenario(scenario_beside(path), [], playbook=pb)
        seeds = np.random.SeedSequence(2).spawn(2)
        Simulator(pb, sc, 8).run_chunks([(2, seeds[0], 0), (2, seeds[1], 2)])
    assert [len(f.signatures) for f in funcs] == before == [1] * len(funcs)


def test_the_day_uniforms_are_uniform_and_independent() -> None:
    """The counter-based uniforms (streams.Streams.day_keys, fused._unif): flat over [0, 1)
    (chi-square over 256 bins), uncorrelated between neighbouring slots, the three draws of a
    member, consecutive days and neighbouring runs, and the same for a chunk alone or run
    beside another."""
    from scipy import stats
    from sop.engine.sim.streams import Streams

    seeds = np.random.SeedSequence(7).spawn(2)
    both = Streams.seeded(seeds, [3, 4])
    alone = Streams.seeded(seeds[1:], [4])
    for d in (0, 1, 179):
        np.testing.assert_array_equal(both.day_keys(d)[3:], alone.day_keys(d))
    W = 20_000
    days = np.stack([fused.uniforms(both.day_keys(d), W) for d in range(4)])  # (day, s, r, j)
    flat = days.reshape(-1)
    assert flat.min() >= 0.0 and flat.max() < 1.0
    counts = np.bincount((flat * 256).astype(np.int64), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    limit = 5 / np.sqrt(W)  # five standard errors of a correlation of W pairs

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    x = days[0, 0, 0]
    assert abs(corr(x[:-1], x[1:])) < limit  # neighbouring slots
    assert abs(corr(days[0, 0, 0], days[0, 1, 0])) < limit  # a member's draws
    assert abs(corr(days[0, 1, 0], days[0, 2, 0])) < limit
    assert abs(corr(days[0, 0, 0], days[1, 0, 0])) < limit  # consecutive days
    assert abs(corr(days[0, 0, 0], days[0, 0, 1])) < limit  # neighbouring runs
    assert abs(corr(days[0, 0, 2], days[0, 0, 3])) < limit  # runs of different chunks
    assert len(np.unique(flat)) > 0.99 * min(len(flat), 2**24) * (1 - len(flat) / 2**25)


def test_an_events_reach_compiled_is_the_numpy_laws() -> None:
    """fused.reached moves the churn multiplier as effects.churn_multiplier does (capped),
    adds the speaking lift and messages, and combines the one-day effects as
    dynamics.event_effects does (the first as independent chances, the rest added)."""
    rng = np.random.default_rng(5)
    R, cap, W = 4, 300, 250
    churn = rng.uniform(-0.5, 0.5, (R, cap)).astype(np.float32)
    events = rng.uniform(0, 0.1, (R, cap)).astype(np.float32)
    ev_msgs = rng.integers(0, 3, (R, W)).astype(np.int32)
    ev_day = rng.uniform(0, 0.3, (R, cap, 4)).astype(np.float32)
    mult = np.array([1.0, 0.7, 1.4, 0.9], np.float32)
    lift = np.array([0.0, 0.05, 0.1, 0.02], np.float32)
    msgs = np.array([1, 0, 2, 1], np.int32)
    day = rng.uniform(0, 0.2, (R, 4)).astype(np.float32)
    flat = np.sort(rng.choice(R * W, 300, replace=False))
    rows, cols = np.divmod(flat, W)
    want_churn, want_events, want_msgs, want_day = (
        churn.copy(), events.copy(), ev_msgs.copy(), ev_day.copy()
    )  # fmt: skip
    before_churn = churn.copy()
    moved = mult[rows] != 1
    want_churn[rows[moved], cols[moved]] = fx.churn_multiplier(
        churn[rows[moved], cols[moved]], mult[rows[moved]]
    )
    want_events[rows, cols] += lift[rows]
    want_msgs[rows, cols] += msgs[rows]
    want_day[rows, cols, 0] = 1 - (1 - ev_day[rows, cols, 0]) * (1 - day[rows, 0])
    want_day[rows, cols, 1:] += day[rows, 1:]
    lo, hi = np.float32(fx.HAZARD_FLOOR - 1), np.float32(fx.HAZARD_CEIL - 1)
    ev_on = np.zeros((R, cap), np.uint8)
    fused.reached(
        flat, W, True, churn, mult, lo, hi, events, lift, ev_msgs, msgs, ev_day, ev_on, day
    )
    marked = np.zeros((R, cap), bool)
    marked[rows, cols] = True
    np.testing.assert_array_equal(ev_on != 0, marked)
    np.testing.assert_array_equal(churn, want_churn)
    assert (np.abs(churn) <= 0.5).all() and (churn != before_churn).any()
    np.testing.assert_array_equal(events, want_events)
    np.testing.assert_array_equal(ev_msgs, want_msgs)
    np.testing.assert_array_equal(ev_day, want_day)
    # without churn state or one-day effects only the lift and messages move
    before = churn.copy()
    fused.reached(
        flat, W, False, np.zeros((1, 1), np.float32), mult, lo, hi, events, lift, ev_msgs,
        msgs, np.zeros((1, 1, 4), np.float32), np.zeros((1, 1), np.uint8),
        np.zeros((0, 4), np.float32),
    )  # fmt: skip
    np.testing.assert_array_equal(churn, before)
    np.testing.assert_array_equal(ev_msgs[rows, cols], want_msgs[rows, cols] + msgs[rows])


def test_members_who_joined_on_days_found_by_join_order() -> None:
    """fused.joined_on (anniversaries, from the slots' join order) finds what fused.matching
    finds by reading every member's join day; a run whose slots are not in join order is
    left to the reading."""
    rng = np.random.default_rng(3)
    R, cap, W, D = 5, 400, 380, 60
    n = rng.integers(200, W + 1, R).astype(np.int64)
    join_day = np.full((R, cap), -1, np.int16)
    by_day = np.zeros((R, D + 1), np.int64)
    for r in range(R):
        join_day[r, : n[r]] = np.sort(rng.integers(0, D + 1, n[r]))
        by_day[r] = np.bincount(join_day[r, : n[r]], minlength=D + 1)
    alive = (rng.random((R, cap)) < 0.7) & (join_day >= 0)
    for days in ([10], [-5, 3, 40], [2, 17, 59, 60], [70]):
        values = np.array(days, np.int64)
        want, want_which = fused.matching(
            join_day, values, n, alive, np.zeros((1, 1), np.uint8), 0, W
        )
        got, which, served = fused.joined_on(values, n, by_day, alive, W)
        assert served.all()
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(which, want_which)
        if days == [10]:
            assert len(got) > 0
    by_day[2, 0] += 1  # run 2's slots no longer add up
    *_, served = fused.joined_on(np.array([10]), n, by_day, alive, W)
    assert served.tolist() == [True, True, False, True, True]


def test_the_living_numbered_as_numpy_numbers_them() -> None:
    """fused.living_counts and fused.living_at (referrers and invitation senders drawn among
    the living) give what counting and np.flatnonzero over each run's slots give."""
    rng = np.random.default_rng(4)
    R, cap = 6, 200
    n = rng.integers(0, cap + 1, R).astype(np.int64)
    alive = rng.random((R, cap)) < 0.6
    for r in range(R):
        alive[r, n[r] :] = False
    alive[3, :] = False  # a run with nobody living
    runs = np.array([0, 2, 3, 5], np.int64)
    living = fused.living_counts(alive, n, runs)
    assert living.tolist() == [int(alive[r, : n[r]].sum()) for r in runs]
    size = np.where(living > 0, [3, 0, 4, 5], 0).astype(np.int64)
    idx = np.concatenate([rng.integers(0, max(c, 1), s) for c, s in zip(living, size, strict=True)])
    got = fused.living_at(alive, n, runs, size, idx.astype(np.int64))
    want = []
    k = 0
    for r, s in zip(runs, size, strict=True):
        slots = np.flatnonzero(alive[r, : n[r]])
        for _ in range(s):
            want.append(r * cap + slots[idx[k]])
            k += 1
    assert got.tolist() == want and len(want) == 8
    assert alive.reshape(-1)[got].all()
