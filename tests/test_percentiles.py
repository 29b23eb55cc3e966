"""The vectorised NaN-skipping percentiles give np.nanpercentile's numbers."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sop.engine.sim.percentiles import nan_percentiles

QS = (5, 25, 50, 75, 95)


def _numpy(x: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column
        return np.nanpercentile(x, qs, axis=0)


@settings(max_examples=300, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 40), st.integers(1, 6)),
        elements=st.one_of(
            st.floats(-1e6, 1e6, allow_nan=False), st.just(np.nan), st.sampled_from([0.0, 1.0])
        ),
    ),
    st.lists(st.floats(0, 100), min_size=1, max_size=5),
)
def test_equal_to_numpy_nanpercentile(x: np.ndarray, qs: list[float]) -> None:
    got = nan_percentiles(x, qs)
    want = _numpy(x, tuple(qs))
    assert got.shape == want.shape
    assert np.array_equal(got, want, equal_nan=True)


def test_a_forecast_shaped_array_with_undefined_days() -> None:
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 10.0, size=(400, 180))
    x[rng.random(x.shape) < 0.2] = np.nan  # undefined in some runs
    x[:, :3] = np.nan  # undefined everywhere: NaN, as numpy gives
    x[:, 5] = 7.0  # constant
    x[:399, 9] = np.nan  # one run defined
    got = nan_percentiles(x, QS)
    assert np.array_equal(got, _numpy(x, QS), equal_nan=True)
    assert np.isnan(got[:, :3]).all() and (got[:, 5] == 7.0).all()
    assert (got[:, 9] == x[399, 9]).all()


def test_three_dimensional_values_take_percentiles_per_column() -> None:
    x = np.arange(60, dtype=float).reshape(5, 3, 4)
    x[0, 1, 2] = np.nan
    assert np.array_equal(nan_percentiles(x, QS), _numpy(x, QS), equal_nan=True)
