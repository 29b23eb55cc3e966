"""The counter-based per-run draws (engine/sim/samplers.py) follow their laws, and a run's
numbers depend only on its chunk, its place, the day and the draw."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sop.engine.sim import samplers
from sop.engine.sim.streams import Draw, Streams, mix64

N = 200_000


def _keys(n: int = N, salt: int = 0) -> np.ndarray:
    return mix64(np.arange(n, dtype=np.uint64) + np.uint64(salt << 32))


def _fits(draws: np.ndarray, pmf: np.ndarray) -> float:
    """Chi-square p-value of integer draws against a pmf over 0..len(pmf)-1 (the tail beyond
    merged into the last cell; cells expecting fewer than 5 merged into their neighbours)."""
    observed = np.bincount(np.minimum(draws, len(pmf) - 1), minlength=len(pmf)).astype(float)
    expected = pmf.copy()
    expected[-1] += max(0.0, 1.0 - pmf.sum())
    expected *= len(draws)
    cells_o, cells_e, o, e = [], [], 0.0, 0.0
    for a, b in zip(observed, expected, strict=True):
        o, e = o + a, e + b
        if e >= 5:
            cells_o.append(o)
            cells_e.append(e)
            o, e = 0.0, 0.0
    cells_o[-1] += o
    cells_e[-1] += e
    return float(stats.chisquare(cells_o, np.array(cells_e) * sum(cells_o) / sum(cells_e)).pvalue)


@pytest.mark.parametrize("lam", [0.3, 3.0, 9.9, 10.0, 37.5, 1000.0])
def test_poisson_follows_its_law(lam: float) -> None:
    x = samplers.poisson(_keys(), np.full(N, lam))
    hi = int(stats.poisson.ppf(1 - 1e-9, lam)) + 1
    assert _fits(x, stats.poisson.pmf(np.arange(hi), lam)) > 1e-4
    assert abs(x.mean() - lam) < 5 * np.sqrt(lam / N)


def test_poisson_of_no_mean_is_zero() -> None:
    assert samplers.poisson(_keys(4), np.array([0.0, -1.0, np.nan, 0.0])).tolist() == [0] * 4


@pytest.mark.parametrize(
    ("n", "p"),
    [(10, 0.3), (40, 0.01), (100, 0.5), (200, 0.2), (1000, 0.9), (10**6, 0.2), (3, 0.999)],
)
def test_binomial_follows_its_law(n: int, p: float) -> None:
    x = samplers.binomial(_keys(), np.full(N, n), np.full(N, p))
    assert x.min() >= 0 and x.max() <= n
    lo = int(stats.binom.ppf(1e-9, n, p))
    hi = int(stats.binom.ppf(1 - 1e-9, n, p)) + 1
    # cells from lo: the mass below lo is negligible (1e-9)
    assert _fits(x - lo, stats.binom.pmf(np.arange(lo, hi), n, p)) > 1e-4
    assert abs(x.mean() - n * p) < 5 * np.sqrt(n * p * (1 - p) / N) + 1e-12


def test_binomial_edges() -> None:
    k = _keys(5)
    got = samplers.binomial(k, np.array([0, 7, 7, 7, 7]), np.array([0.5, 0.0, 1.0, -0.2, 1.3]))
    assert got.tolist() == [0, 0, 7, 0, 7]


def test_normals_are_standard_and_pairs_independent() -> None:
    z = samplers.normal(_keys())
    assert stats.kstest(z, "norm").pvalue > 1e-4
    run = np.repeat(np.arange(200), 200)
    place = np.tile(np.arange(200), 200)
    pairs = samplers.normal_pairs(_keys(200, 1), run, place)
    for col in (0, 1):
        assert stats.kstest(pairs[:, col], "norm").pvalue > 1e-4
    limit = 5 / np.sqrt(len(run))
    assert abs(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) < limit
    # neighbouring items of a run, and the same item of neighbouring runs, are unrelated
    grid = pairs[:, 0].reshape(200, 200)
    assert abs(np.corrcoef(grid[:, :-1].ravel(), grid[:, 1:].ravel())[0, 1]) < limit
    assert abs(np.corrcoef(grid[:-1].ravel(), grid[1:].ravel())[0, 1]) < limit


def test_integers_are_uniform_below_high() -> None:
    run = np.repeat(np.arange(100), 700)
    place = np.tile(np.arange(700), 100)
    x = samplers.integers(_keys(100, 2), run, place, np.full(len(run), 7))
    assert x.min() == 0 and x.max() == 6
    assert stats.chisquare(np.bincount(x, minlength=7)).pvalue > 1e-4
    one = samplers.integers(_keys(3), np.arange(3), np.zeros(3, np.int64), np.ones(3, np.int64))
    assert one.tolist() == [0, 0, 0]


def test_a_chunk_draws_the_same_alone_or_beside_another() -> None:
    seeds = np.random.SeedSequence(11).spawn(2)
    both = Streams.seeded(seeds, [3, 5])
    alone = Streams.seeded(seeds[1:], [5])
    lam = np.array([2.0, 2.0, 2.0, 4.0, 50.0, 0.5, 9.0, 12.0])
    for d in (0, 1, 90):
        assert both.poisson(lam, d, Draw.REFERRAL)[3:].tolist() == (
            alone.poisson(lam[3:], d, Draw.REFERRAL).tolist()
        )
        assert both.binomial(100, 0.3, d, Draw.BASS)[3:].tolist() == (
            alone.binomial(100, 0.3, d, Draw.BASS).tolist()
        )
        np.testing.assert_array_equal(both.normal(d, Draw.METRIC)[3:], alone.normal(d, Draw.METRIC))
        run, place = np.array([3, 3, 7]), np.array([0, 1, 0])
        np.testing.assert_array_equal(
            both.normal_pairs(run, place, d, Draw.JOINERS),
            alone.normal_pairs(run - 3, place, d, Draw.JOINERS),
        )
    # every draw and day has keys of its own
    keys = {
        (d, w): tuple(both.draw_keys(d, w).tolist())
        for d in range(3)
        for w in [*Draw, Draw.METRIC + 1]
    }
    assert len(set(keys.values())) == len(keys)
    assert not set(both.draw_keys(0, Draw.ORGANIC).tolist()) & set(
        both.day_keys(0).ravel().tolist()
    )
