"""The simulator's speed-ups keep its results: chunks run together in one vectorised step give,
bit for bit, what each gives alone; any worker count gives the same result; the per-process
simulator is found again by content; the program functions the kernel calls answer as before.

Timings are bench/simulate.py's business: nothing here measures time.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from sop.engine.core import expr as ex
from sop.engine.program import ranking
from sop.engine.program.truth import truth
from sop.engine.sim import montecarlo as mc
from sop.engine.sim.kernel import Simulator, bytes_per_member
from sop.engine.sim.scenario import load_scenario, scenario_beside
from sop.engine.sim.streams import Streams
from sop.engine.validate import load_playbook

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


def _load(name: str, sets: tuple[str, ...] = ()) -> tuple[object, object]:
    path = str(PLAYBOOKS / f"{name}.yaml")
    pb = load_playbook(path).playbook
    sc = load_scenario(scenario_beside(path), list(sets), playbook=pb)
    return pb, sc


def _same(a: object, b: object) -> None:
    """Two chunk results agree to the last bit."""
    for field in ("metrics", "stage_entered", "stage_passed", "workload", "segments"):
        x, y = getattr(a, field), getattr(b, field)
        if x is None or y is None:
            assert x is None and y is None, field
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, field
        assert x.tobytes() == y.tobytes(), field
    for field in ("stage_outcome", "expect_failures", "member_days", "first_run", "gate_notes"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.stage_exits == b.stage_exits


@pytest.mark.parametrize(
    ("name", "sets", "days"),
    [
        ("community-lifecycle", ("acquisition.seed_users=300",), 70),
        ("parent-community", (), 60),
    ],
)
def test_chunks_run_together_give_what_each_gives_alone(name: str, sets: tuple, days: int) -> None:
    pb, sc = _load(name, sets)
    seeds = np.random.SeedSequence(11).spawn(3)
    specs = [(8, seeds[0], 0), (8, seeds[1], 8), (5, seeds[2], 16)]  # a short last chunk too
    together = Simulator(pb, sc, days, 1 << 30).run_chunks(specs)
    alone = [Simulator(pb, sc, days, 1 << 30).run_chunk(*s) for s in specs]
    assert [r.first_run for r in together] == [0, 8, 16]
    assert together[0].member_days > 0
    for a, b in zip(together, alone, strict=True):
        _same(a, b)


def test_a_group_that_outgrows_the_budget_runs_its_chunks_one_by_one() -> None:
    """Together the runs are over the memory budget, each chunk alone is not: the same results
    as alone, and no SimulationTooLarge."""
    pb, sc = _load("community-lifecycle", ("acquisition.seed_users=2500",))
    probe = Simulator(pb, sc, 30, None)
    per_member = bytes_per_member({**probe.cx.columns(), **probe.dyn.columns()})
    # 4,000 members a run for one chunk of 8 runs, 2,000 for two chunks: ~3,300 are reached
    budget = per_member * 8 * 4000
    seeds = np.random.SeedSequence(3).spawn(2)
    specs = [(8, seeds[0], 0), (8, seeds[1], 8)]
    together = Simulator(pb, sc, 30, budget).run_chunks(specs)
    alone = [Simulator(pb, sc, 30, budget).run_chunk(*s) for s in specs]
    i = alone[0].metric_names.index("members")
    assert max(int(r.metrics[:, :, i].max()) for r in alone) > 2000  # past two chunks' cap
    for a, b in zip(together, alone, strict=True):
        _same(a, b)


def test_same_seed_same_result_any_worker_count_and_group_size(monkeypatch) -> None:
    pb, sc = _load("community-lifecycle", ("acquisition.seed_users=200",))
    opts = {"runs": 20, "days": 40, "seed": 5}

    def doc(workers: int, group_runs: int) -> dict:
        monkeypatch.setattr(mc, "GROUP_RUNS", group_runs)
        d = mc.simulate(pb, sc, mc.SimOptions(workers=workers, **opts)).to_dict()
        d.pop("performance")
        d["options"].pop("workers")
        return d

    one_by_one = doc(1, mc.CHUNK_RUNS)
    assert doc(1, 128) == one_by_one
    assert doc(2, 128) == one_by_one


def test_the_simulator_is_found_again_by_content_not_by_object() -> None:
    """Every task's arguments arrive unpickled, as new objects, with the content key the
    parent computed once: the process's simulator is found again; other contents build
    another."""
    pb, sc = _load("community-lifecycle")
    mc._SIMULATORS.clear()
    key = mc.content_key(pb, sc, 30, None)
    first = mc._simulator(pb, sc, 30, None, key)
    for _ in range(2):  # two tasks: two unpickled copies
        pb2, sc2 = pickle.loads(pickle.dumps((pb, sc)))
        assert pb2 is not pb
        assert mc._simulator(pb2, sc2, 30, None, key) is first
    other = mc._simulator(pb, sc, 31, None, mc.content_key(pb, sc, 31, None))
    assert other is not first and other.days == 31
    assert mc.content_key(pb, sc, 30, None) == key  # the same objects: the same key


def test_groups_respect_runs_memory_and_workers() -> None:
    plan = mc.chunks(mc.SimOptions(runs=400))
    assert len(plan) == 50
    cap = mc.GROUP_RUNS // mc.CHUNK_RUNS
    sizes = [len(g) for g in mc.groups(plan, 1, 1000, 1 << 30)]
    assert sum(sizes) == 50 and max(sizes) <= cap
    assert len(sizes) == -(-50 // cap) and max(sizes) - min(sizes) <= 1  # as few as fit, even
    # two workers: a multiple of two groups of even sizes, so both finish together
    two = [len(g) for g in mc.groups(plan, 2, 1000, 1 << 30)]
    assert len(two) % 2 == 0 and max(two) - min(two) <= 1 and max(two) <= cap
    three = [len(g) for g in mc.groups(mc.chunks(mc.SimOptions(runs=4000)), 3, 1000, 1 << 30)]
    assert len(three) % 3 == 0 and max(three) <= cap and sum(three) == 500
    # a chunk estimated at half the budget: one chunk a group
    assert {len(g) for g in mc.groups(plan, 1, 1 << 29, 1 << 30)} == {1}
    flat = [c for g in mc.groups(plan, 2, 1000, 1 << 30) for c in g]
    assert [c[0] for c in flat] == [c[0] for c in plan]  # every chunk once, in order


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_is_reported_by_day_and_adds_up_to_the_runs(workers: int) -> None:
    pb, sc = _load("community-lifecycle")
    told: list[int] = []
    opts = mc.SimOptions(runs=24, days=20, seed=1, workers=workers)
    res = mc.simulate(pb, sc, opts, progress=told.append)
    assert sum(told) == 24 and all(n > 0 for n in told)
    if workers == 1:  # one group of three chunks: reported as its days end, not once at the end
        assert len(told) > 1
    plain = mc.simulate(pb, sc, opts)
    assert np.array_equal(plain.metrics, res.metrics, equal_nan=True)  # counting changes nothing
    assert mc._PROGRESS is None


def test_one_stream_draws_as_the_generator_itself() -> None:
    g1, g2 = np.random.default_rng(4), np.random.default_rng(4)
    s = Streams([g1], [6])
    lam = np.arange(6.0)
    assert (s.split(lambda g, rows: g.poisson(lam[rows])) == g2.poisson(lam)).all()
    assert (s.split(lambda g, rows: g.standard_normal(6)) == g2.standard_normal(6)).all()


def test_chunk_streams_do_not_depend_on_their_neighbours() -> None:
    seeds = np.random.SeedSequence(8).spawn(2)
    both = Streams.seeded(seeds, [3, 2])
    lam = np.arange(1.0, 6.0)
    per_chunk = both.split(lambda g, rows: g.poisson(lam[rows]))
    alone = [np.random.default_rng(s) for s in seeds]
    assert per_chunk.tolist() == [*alone[0].poisson(lam[:3]), *alone[1].poisson(lam[3:])]
    # items by run: each chunk draws its own items in turn
    run = np.array([0, 0, 2, 3, 4, 4])
    both = Streams.seeded(seeds, [3, 2])
    got = both.split_items(run, lambda g, it: g.random(it.stop - it.start))
    alone = [np.random.default_rng(s) for s in seeds]
    assert got.tolist() == [*alone[0].random(3), *alone[1].random(3)]


def _team_scores_by_team(team, score, teams, present=None):
    """The per-team form team_scores had: one pass per team (the reference)."""
    t = np.asarray(team)
    s = np.nan_to_num(np.asarray(score, dtype=float))
    if present is not None:
        s = np.where(np.asarray(present, dtype=bool), s, 0.0)
    return np.stack([np.where(t == k, s, 0.0).sum(axis=-1) for k in range(teams)], axis=-1)


@pytest.mark.parametrize("whole", [True, False])
def test_team_scores_equal_the_per_team_sums(whole: bool) -> None:
    rng = np.random.default_rng(2)
    team = rng.integers(-1, 5, size=(3, 500))  # -1 and 4 are no team of 4
    score = rng.integers(0, 40, size=(3, 500)).astype(float)
    if not whole:
        score += rng.random((3, 500))
    score[0, 3] = np.nan  # an undefined score adds nothing
    present = rng.random((3, 500)) < 0.8
    got = ranking.team_scores(team, score, 4, present)
    want = _team_scores_by_team(team, score, 4, present)
    assert got.shape == (3, 4)
    assert got.tobytes() == want.tobytes()
    assert ranking.team_scores(team[0], score[0], 4).tobytes() == (
        _team_scores_by_team(team[0], score[0], 4).tobytes()
    )


def test_a_condition_on_whole_numbers_answers_as_element_by_element() -> None:
    node = ex.parse("ugc_posts >= 2 and (tier == 1 or approved)")
    rng = np.random.default_rng(0)
    env = {
        "ugc_posts": rng.integers(0, 4, 50).astype(np.int16),
        "tier": rng.integers(0, 3, 50).astype(np.int8),
        "approved": rng.random(50) < 0.5,
    }
    t, f = truth(node, env)
    for i in range(50):
        one = {k: v[i].item() for k, v in env.items()}
        ti, fi = truth(node, one)
        assert bool(np.broadcast_to(t, (50,))[i]) == ti
        assert bool(np.broadcast_to(f, (50,))[i]) == fi
