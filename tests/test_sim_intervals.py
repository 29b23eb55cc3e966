"""Intervals of a share of runs (engine/sim/intervals.py): Wilson's when every run has its own
parameter draw, wider by the design effect of pairs when runs 2k and 2k+1 share one — and then
near their nominal 95 % coverage of the true probability, where the independent Wilson interval
falls short."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from sop.engine.sim.intervals import INDEPENDENT, Pairs, interval, wilson
from sop.engine.sim.kernel import wilson as kernel_wilson
from sop.engine.sim.montecarlo import GateResult, SimOptions, simulate
from sop.engine.sim.scenario import load_scenario
from sop.engine.sim.summary import Bounded, Share, expect_summary
from sop.engine.validate import load_playbook


def paired_outcomes(
    rng: np.random.Generator, pairs: int, a: float, b: float
) -> tuple[np.ndarray, np.ndarray]:
    """Runs whose pass probability θ ~ Beta(a, b) is drawn once per pair: (outcomes, params)."""
    theta = np.repeat(rng.beta(a, b, pairs), 2)
    return rng.random(2 * pairs) < theta, theta[:, None]


def coverage(reps: int, pairs: int, a: float, b: float, seed: int) -> tuple[float, float, float]:
    """(coverage of the pair-aware interval, of the independent Wilson one, mean width ratio)
    of the true P = a / (a + b), over `reps` simulated sets of runs."""
    rng = np.random.default_rng(seed)
    truth = a / (a + b)
    ours = independent = 0
    ratio = []
    for _ in range(reps):
        y, params = paired_outcomes(rng, pairs, a, b)
        lo, hi = Pairs.of(params).interval(y)
        wlo, whi = wilson(int(y.sum()), len(y))
        ours += lo <= truth <= hi
        independent += wlo <= truth <= whi
        ratio.append((hi - lo) / (whi - wlo))
    return ours / reps, independent / reps, float(np.mean(ratio))


def test_without_distributions_the_interval_is_wilsons_unchanged() -> None:
    for n in (1, 2, 7, 40, 401):
        for k in range(0, n + 1, max(1, n // 9)):
            assert interval(k, n) == kernel_wilson(k, n)
            assert Share(k, n).interval == kernel_wilson(k, n)
    y = np.arange(50) % 3 == 0
    assert INDEPENDENT.deff(y) == 1.0
    assert INDEPENDENT.interval(y) == kernel_wilson(int(y.sum()), 50)
    assert Pairs.of(None).independent and Pairs.of(np.zeros((8, 0))).independent
    # every run its own draw: no two consecutive rows alike, so no pairs
    assert Pairs.of(np.arange(8.0)[:, None]).independent


def test_runs_that_share_a_draw_count_as_fewer_runs() -> None:
    rng = np.random.default_rng(1)
    y, params = paired_outcomes(rng, 500, 0.5, 0.5)  # ICC = 1 / (a + b + 1) = 0.5
    pairs = Pairs.of(params)
    assert len(pairs.first) == 500
    deff = pairs.deff(y)
    assert 1.35 < deff < 1.65
    lo, hi = pairs.interval(y)
    wlo, whi = kernel_wilson(int(y.sum()), 1000)
    assert lo < wlo and hi > whi
    # a pair is at most one run's worth: the design effect of two runs per draw never passes 2
    same = np.repeat(rng.random(500) < 0.5, 2)
    assert pairs.deff(same) == pytest.approx(2.0)
    # outcomes that ignore the draw: pairs are as good as independent runs
    noise = rng.random(1000) < 0.3
    assert pairs.deff(noise) < 1.1


def test_a_share_of_some_runs_counts_pairs_with_one_run_among_them_as_single_runs() -> None:
    rng = np.random.default_rng(2)
    y, params = paired_outcomes(rng, 400, 0.5, 0.5)
    pairs = Pairs.of(params)
    among = np.ones(800, bool)
    among[1::2] = False  # one run of each pair: independent runs again
    assert pairs.deff(y, among) == 1.0
    among[1::4] = True  # half the pairs whole: m̄ = 600 / 400 = 1.5
    assert 1.0 < pairs.deff(y, among) <= 1.5


def test_with_large_parameter_uncertainty_the_interval_covers_near_nominal() -> None:
    """A statistical test: 2,000 sets of 200 runs (100 draws) whose pass probability varies
    with the draw as Beta(0.5, 0.5) (ICC 0.5). The independent Wilson interval covers the true
    probability in about 89 % of them; ours near 95 %."""
    ours, independent, ratio = coverage(2000, 100, 0.5, 0.5, seed=13)
    assert 0.935 <= ours <= 0.965, (ours, independent)
    assert independent < 0.92, (ours, independent)
    assert 1.15 < ratio < 1.3


def test_with_no_parameter_effect_coverage_stays_nominal() -> None:
    """A draw that barely moves the outcome (Beta(50, 50): ICC 0.01): still near 95 %, and
    hardly wider than Wilson's."""
    ours, independent, ratio = coverage(2000, 100, 50.0, 50.0, seed=14)
    assert 0.935 <= ours <= 0.975 and 0.93 <= independent <= 0.97
    assert ratio < 1.06


def test_bounded_and_expect_shares_carry_their_design_effect() -> None:
    assert Bounded(30, 10, 100).interval == (kernel_wilson(30, 100)[0], kernel_wilson(40, 100)[1])
    wide = Bounded(30, 10, 100, 1.5, 1.5).interval
    assert wide[0] < kernel_wilson(30, 100)[0] and wide[1] > kernel_wilson(40, 100)[1]
    rng = np.random.default_rng(3)
    y, params = paired_outcomes(rng, 100, 0.3, 0.7)
    failures = [(r, 1, "broken") for r in np.flatnonzero(y)]
    ind = expect_summary(failures, 200)
    paired = expect_summary(failures, 200, pairs=Pairs.of(params))
    assert ind.broken.interval == kernel_wilson(int(y.sum()), 200)
    assert paired.broken.deff > 1.2 and paired.broken.interval[0] < ind.broken.interval[0]


# -- end to end: a simulation whose gate depends strongly on a drawn parameter ---------------------

PLAYBOOK = """\
    playbook: t
    timezone: UTC
    targets:
      members: {at_least: 60, by: 20d}
    stages:
      only:
        exit: {when: members >= 60}
        deadline: {after: 20d, then: {abort: true}}
    """
SCENARIO = """\
scenario: u
acquisition:
  seed_users: 20
  organic_per_day: {low: 0.5, high: 4.5}
  bass_p: 0
  bass_q: 0
  invites_per_member_per_day: 0
retention:
  alpha: 1.0
  beta: 3.0
"""


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory):
    d: Path = tmp_path_factory.mktemp("drawn")
    (d / "p.yaml").write_text(textwrap.dedent(PLAYBOOK), encoding="utf-8")
    (d / "s.yaml").write_text(SCENARIO, encoding="utf-8")
    pb = load_playbook(str(d / "p.yaml")).playbook
    assert pb is not None
    return pb, load_scenario(str(d / "s.yaml"), playbook=pb)


def test_a_target_over_runs_sharing_draws_gets_the_wider_interval(drawn) -> None:
    pb, sc = drawn
    res = simulate(pb, sc, SimOptions(runs=400, days=22, seed=2))
    (t,) = res.to_dict()["targets"]
    k, n = t["p_met"]["runs"], t["p_met"]["of"]
    lo, hi = t["p_met"]["interval95"]
    wlo, whi = kernel_wilson(k, n)
    assert 0.2 < k / n < 0.8
    assert lo < wlo - 0.005 and hi > whi + 0.005  # the inflow's draw decides most runs
    u = res.to_dict()["uncertainty"]["gates"][0]
    assert u["design_effect"] > 1.3


@pytest.mark.skipif(
    "design" not in GateResult.__dataclass_fields__,
    reason="montecarlo.py does not pass the runs' pairs to the gates yet",
)
def test_gate_intervals_over_runs_sharing_draws_cover_the_true_probability(drawn) -> None:
    """A statistical test on the simulator itself: 4,000 runs in 40 independent sets of 100
    (each its own chunks' seeds, as a separate simulation), the truth taken as the share over
    the other 39 sets. The gate's reported interval is wider than the independent Wilson one and
    covers the truth in most sets."""
    pb, sc = drawn
    res = simulate(pb, sc, SimOptions(runs=4000, days=22, seed=1))
    (g,) = res.gates
    wlo, whi = kernel_wilson(g.passed, g.runs)
    assert g.interval[0] < wlo and g.interval[1] > whi
    y = np.array([k.value == "on_time" for k in res.kinds["only"]])
    assert res.parameters is not None
    size, sets = 100, 40
    ours = independent = 0
    for b in range(sets):
        part = slice(b * size, (b + 1) * size)
        truth = (y.sum() - y[part].sum()) / (len(y) - size)
        lo, hi = Pairs.of(res.parameters[part]).interval(y[part])
        ilo, ihi = kernel_wilson(int(y[part].sum()), size)
        ours += lo <= truth <= hi
        independent += ilo <= truth <= ihi
    assert ours >= 36, (ours, independent)  # nominal: 38 of 40
    assert ours >= independent
