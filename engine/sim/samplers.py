"""Counter-based draws of one value per run (Poisson, binomial, normal) and per item of a run
(normal pairs, integers), compiled: every run's numbers come from its own key, so the runs of
every chunk in a vectorised step are drawn in one call, and a chunk draws what it draws alone.

A run's key for a draw (streams.Streams.draw_keys) mixes its chunk's key, its place in the
chunk, the day and the draw's id; the i-th uniform under a key is SplitMix64's finaliser at
counter i, its top 53 bits as a double in [0, 1). A sampler takes as many uniforms as it needs,
in turn. The laws are the textbook ones, each as numpy implements it where numpy does:

- Poisson: the multiplication method below a mean of 10, else Hörmann's transformed rejection
  with squeeze (PTRS, 1993), as numpy's `random_poisson`;
- binomial: inversion while n·min(p, 1−p) < 30 (numpy's `random_binomial_inversion`), else
  Hörmann's BTRS (1993; numpy uses BTPE there, an equally exact method);
- normal: Box–Muller (two uniforms, two independent normals);
- integers in [0, high): the uniform times `high`, floored (bias below high / 2**53).

tests/test_samplers.py checks each law against scipy's distribution (chi-square and moments)
and the keys' independence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from . import jit_cache  # noqa: F401  (numba's cache folder, set before anything compiles)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ITEM = np.uint64(0xD1B54A32D192ED03)  # an item's counter step, apart from the uniforms'
_TO_DOUBLE = 2.0**-53


@njit(inline="always")
def _mix(z: Any) -> Any:  # pragma: no cover - compiled
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _u(key: Any, i: Any) -> float:  # pragma: no cover - compiled
    """The i-th uniform in [0, 1) under `key`."""
    return float(_mix(key + (np.uint64(i) + np.uint64(1)) * _GOLDEN) >> np.uint64(11)) * (
        _TO_DOUBLE
    )


@njit(inline="always")
def _item_key(key: Any, j: Any) -> Any:  # pragma: no cover - compiled
    return _mix(key + (np.uint64(j) + np.uint64(1)) * _ITEM)


@njit(cache=True, nogil=True, error_model="numpy")
def _poisson_one(key: Any, lam: float) -> int:  # pragma: no cover - compiled
    if not lam > 0.0:
        return 0
    i = 0
    if lam < 10.0:  # multiplication: the product of uniforms falls below e^-lam
        limit = math.exp(-lam)
        x = 0
        prod = _u(key, i)
        i += 1
        while prod > limit:
            x += 1
            prod *= _u(key, i)
            i += 1
        return x
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = _u(key, i) - 0.5
        v = _u(key, i + 1)
        i += 2
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return int(k)
        if k < 0 or (us < 0.013 and v > us):
            continue
        # log(v) + log(invalpha) - log(a / us^2 + b) <= -lam + k log(lam) - log(k!)
        if (math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b)) <= (
            -lam + k * loglam - math.lgamma(k + 1)
        ):
            return int(k)


@njit(cache=True, nogil=True, error_model="numpy")
def _binomial_low(key: Any, n: int, p: float) -> int:  # pragma: no cover - compiled
    """Binomial(n, p) for p <= 1/2."""
    if n <= 0 or not p > 0.0:
        return 0
    q = 1.0 - p
    i = 0
    if n * p < 30.0:  # inversion, from 0 up
        qn = math.exp(n * math.log(q))
        mean = n * p
        bound = min(float(n), mean + 10.0 * math.sqrt(mean * q + 1))
        x = 0
        px = qn
        u = _u(key, i)
        i += 1
        while u > px:
            x += 1
            if x > bound:
                x = 0
                px = qn
                u = _u(key, i)
                i += 1
            else:
                u -= px
                px = ((n - x + 1) * p * px) / (x * q)
        return x
    spq = math.sqrt(n * p * q)
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    vr = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    lpq = math.log(p / q)
    m = math.floor((n + 1) * p)
    h = math.lgamma(m + 1) + math.lgamma(n - m + 1)
    while True:
        u = _u(key, i) - 0.5
        v = _u(key, i + 1)
        i += 2
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + c)
        if k < 0 or k > n:
            continue
        if us >= 0.07 and v <= vr:
            return int(k)
        v = math.log(v * alpha / (a / (us * us) + b))
        if v <= h - math.lgamma(k + 1) - math.lgamma(n - k + 1) + (k - m) * lpq:
            return int(k)


@njit(cache=True, nogil=True, error_model="numpy")
def poisson(keys: Any, lam: Any) -> Any:  # pragma: no cover - compiled
    """One Poisson(lam[r]) per run under keys[r] (a mean of 0 or less, or NaN: 0)."""
    out = np.zeros(keys.shape[0], dtype=np.int64)
    for r in range(keys.shape[0]):
        out[r] = _poisson_one(keys[r], lam[r])
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def binomial(keys: Any, n: Any, p: Any) -> Any:  # pragma: no cover - compiled
    """One Binomial(n[r], p[r]) per run under keys[r] (p clipped to [0, 1])."""
    out = np.zeros(keys.shape[0], dtype=np.int64)
    for r in range(keys.shape[0]):
        pr = min(max(p[r], 0.0), 1.0)
        nr = int(n[r])
        if pr <= 0.5:
            out[r] = _binomial_low(keys[r], nr, pr)
        else:
            out[r] = nr - _binomial_low(keys[r], nr, 1.0 - pr)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def normal(keys: Any) -> Any:  # pragma: no cover - compiled
    """One standard normal per run under keys[r] (Box–Muller's first)."""
    out = np.empty(keys.shape[0], dtype=np.float64)
    for r in range(keys.shape[0]):
        u1 = 1.0 - _u(keys[r], 0)  # in (0, 1]: its log is finite
        out[r] = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * _u(keys[r], 1))
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def normal_pairs(keys: Any, run: Any, place: Any) -> Any:  # pragma: no cover - compiled
    """(items, 2) independent standard normals: item i is number place[i] of run run[i]'s
    items, under that run's key (Box–Muller's pair)."""
    out = np.empty((run.shape[0], 2), dtype=np.float64)
    for i in range(run.shape[0]):
        k = _item_key(keys[run[i]], place[i])
        radius = math.sqrt(-2.0 * math.log(1.0 - _u(k, 0)))
        angle = 2.0 * math.pi * _u(k, 1)
        out[i, 0] = radius * math.cos(angle)
        out[i, 1] = radius * math.sin(angle)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def integers(keys: Any, run: Any, place: Any, high: Any) -> Any:  # pragma: no cover - compiled
    """One integer in [0, high[i]) per item i (number place[i] of run run[i]'s items)."""
    out = np.empty(run.shape[0], dtype=np.int64)
    for i in range(run.shape[0]):
        u = _u(_item_key(keys[run[i]], place[i]), 0)
        out[i] = min(int(u * high[i]), high[i] - 1)
    return out


KERNEL = (poisson, binomial, normal, normal_pairs, integers)  # what the simulator calls


def warm() -> None:
    """Load (or compile) every sampler with the argument types the kernel passes."""
    keys = np.zeros(1, np.uint64)
    i1 = np.zeros(1, np.int64)
    poisson(keys, np.zeros(1))
    binomial(keys, i1, np.zeros(1))
    normal(keys)
    normal_pairs(keys, i1, i1)
    integers(keys, i1, i1, np.ones(1, np.int64))
