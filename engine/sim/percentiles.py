"""Percentiles over the runs of (runs, days) arrays whose undefined values are NaN.

`np.nanpercentile(x, qs, axis=0)` gives these numbers, but with NaNs present it computes each
column in a Python loop (np.apply_along_axis): a day of a 400-run forecast cost about 60 µs a
metric, a fifth of a second for one JSON forecast. Here every column is sorted at once (NaNs
last) and read at numpy's 'linear' positions, with numpy's own interpolation arithmetic, so
the results are the same numbers (tests/test_percentiles.py holds them equal).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def nan_percentiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """(len(qs), *values.shape[1:]) percentiles over axis 0 of the values that are not NaN,
    as np.nanpercentile's default method gives them; NaN where a column has none."""
    x = np.sort(np.asarray(values, dtype=float), axis=0)  # NaNs sort last
    n = x.shape[0] - np.isnan(x).sum(axis=0)  # the defined values of each column
    q = np.true_divide(np.asarray(qs, dtype=float), 100)[:, None]
    flat = n.reshape(1, -1)
    virtual = (flat - 1) * q  # numpy's virtual index for 'linear', in its arithmetic
    lo = np.floor(virtual)
    gamma = virtual - lo
    top = np.maximum(flat - 1, 0)
    i = np.clip(lo, 0, top).astype(np.intp)
    j = np.clip(lo + 1, 0, top).astype(np.intp)
    cols = x.reshape(x.shape[0], -1)
    k = np.arange(cols.shape[1])[None, :]
    a, b = cols[i, k], cols[j, k]
    with np.errstate(invalid="ignore"):
        diff = b - a
        out = a + diff * gamma
        upper = gamma >= 0.5  # numpy's _lerp: from the upper end when nearer it
        out[upper] = (b - diff * (1 - gamma))[upper]
    out[:, (flat == 0).reshape(-1)] = np.nan
    return out.reshape(len(q), *x.shape[1:])
