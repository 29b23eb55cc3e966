"""The random streams of the chunks one vectorised step runs together.

A chunk of runs has its own seed (montecarlo.chunks spawns one per chunk from the root seed), so
its numbers never depend on how many workers there are. The kernel runs several chunks at once
(their runs stacked along the first axis of every member array) to spread NumPy's per-call cost
over more runs; `Streams` makes every draw per chunk, from that chunk's own generator, in the
order and shape the chunk would draw alone. A chunk's results are therefore bit for bit those it
gives alone, whichever chunks share its step (tests/test_sim_speed.py holds them equal).

The members' daily uniforms are not drawn here: the compiled day (fused.py) makes each from a
counter, mixed with SplitMix64's finaliser: the chunk's key, the run's place in its chunk, the
day, the draw (speaking, participation, interactions) and the member's slot. `day_keys` gives
each run's key for the day; the numbers depend on nothing else, so chunks run together draw
what they draw alone without a generator call or an array of uniforms per day. The draws made
once per run (or per item of a run) a day — joins, who referred, joiners' scores, metric noise
— work the same way: `draw_keys` gives each run a key per day and `Draw`, and samplers.py draws
under it, every run of the step in one call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any

import numpy as np


class Draw(IntEnum):
    """The draws made once per run, or per item of a run, each day: each under keys of its own
    (`Streams.draw_keys`), so no draw's numbers depend on which others were made."""

    ORGANIC = 1  # organic joins (Poisson)
    BASS = 2  # Bass adopters (binomial)
    REFERRAL = 3  # referral joins (Poisson)
    INVITATION = 4  # invitations sent (Poisson)
    INVITED = 5  # invitations that convert (binomial)
    ACTION = 6  # joins an action brings (Poisson)
    REFERRER = 7  # who referred each referral join (integers)
    SENDER = 8  # who sent each invitation (integers)
    JOINERS = 9  # joiners' normal scores (pairs)
    METRIC = 16  # a modelled metric's noise: METRIC + the metric's place


class Streams:
    """One `np.random.Generator` per chunk; chunk `c` owns the runs `rows[c]` (a slice)."""

    def __init__(self, gens: Sequence[np.random.Generator], sizes: Sequence[int]) -> None:
        self.gens = list(gens)
        bounds = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))])
        self.rows = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        self.runs = int(bounds[-1])
        self.single = len(self.gens) == 1
        # the chunk of each run, and the views' width each chunk would have alone (set by the
        # kernel when it takes the day's views: `widths`)
        self.chunk_of = np.repeat(np.arange(len(self.gens)), np.diff(bounds))
        self.widths: list[int] = [0] * len(self.gens)
        # a 64-bit key per chunk for the counter-based uniforms (`day_keys`)
        self.keys = np.array([_chunk_key(g) for g in self.gens], dtype=np.uint64)
        self.place = np.concatenate(
            [np.arange(r.stop - r.start, dtype=np.uint64) for r in self.rows]
            or [np.zeros(0, np.uint64)]
        )
        self._base_day, self._base = -1, np.zeros(0, np.uint64)

    @classmethod
    def of(cls, rng: np.random.Generator | Streams, runs: int) -> Streams:
        """`rng` itself, or one stream for all `runs` of a single chunk."""
        return rng if isinstance(rng, Streams) else cls([rng], [runs])

    @classmethod
    def seeded(cls, seeds: Sequence[np.random.SeedSequence], sizes: Sequence[int]) -> Streams:
        """The streams of chunks with these seeds and numbers of runs."""
        return cls([np.random.default_rng(s) for s in seeds], sizes)

    def _day_base(self, day: int) -> np.ndarray:
        """(runs,) uint64: each run's key for `day`, that of every draw of the day is made from
        (kept for the day: a day asks for several)."""
        if self._base_day != day:
            counter = (np.uint64(day) << np.uint64(24)) + self.place  # a run's place: < 2**24
            self._base = self.keys[self.chunk_of] ^ mix64(counter + np.uint64(1))
            self._base_day = day
        return self._base

    def day_keys(self, day: int) -> np.ndarray:
        """(runs, 3) uint64: each run's keys on `day` for the compiled day's three member
        uniforms (speaking, participation and paying or leaving, interactions)."""
        draws = np.array([(k * _STEP_UNIFORM) & _MASK for k in (1, 2, 3)], dtype=np.uint64)
        return mix64(self._day_base(day)[:, None] + draws[None, :])  # arrays wrap silently

    def draw_keys(self, day: int, draw: int) -> np.ndarray:
        """(runs,) uint64: each run's key for `draw` on `day` (samplers.py draws under it)."""
        return mix64(self._day_base(day) + np.uint64((draw * _STEP_DRAW) & _MASK))

    def poisson(self, lam: Any, day: int, draw: Draw) -> np.ndarray:
        """One Poisson count per run of mean `lam` (per run, or one for all; 0 where not > 0)."""
        from . import samplers

        return samplers.poisson(self.draw_keys(day, draw), self._per_run(lam, np.float64))

    def binomial(self, n: Any, p: Any, day: int, draw: Draw) -> np.ndarray:
        """One binomial count per run of `n` trials with chance `p` (per run, or one for all)."""
        from . import samplers

        keys = self.draw_keys(day, draw)
        return samplers.binomial(keys, self._per_run(n, np.int64), self._per_run(p, np.float64))

    def _per_run(self, x: Any, dtype: Any) -> np.ndarray:
        """A per-run value (or one for all) as a new writable array: the one type the compiled
        samplers are loaded for (a read-only or broadcast view would compile another)."""
        return np.array(np.broadcast_to(np.asarray(x, dtype=dtype), (self.runs,)))

    def normal(self, day: int, draw: int) -> np.ndarray:
        """One standard normal per run."""
        from . import samplers

        return samplers.normal(self.draw_keys(day, draw))

    def normal_pairs(self, run: np.ndarray, place: np.ndarray, day: int, draw: Draw) -> Any:
        """(items, 2) standard normals, item i being number `place[i]` of run `run[i]`'s."""
        from . import samplers

        keys = self.draw_keys(day, draw)
        return samplers.normal_pairs(keys, _i64(run), _i64(place))

    def integers(
        self, run: np.ndarray, place: np.ndarray, high: np.ndarray, day: int, draw: Draw
    ) -> np.ndarray:
        """One integer in [0, high[i]) per item (number `place[i]` of run `run[i]`'s items)."""
        from . import samplers

        keys = self.draw_keys(day, draw)
        return samplers.integers(keys, _i64(run), _i64(place), _i64(high))

    def split(self, draw: Callable[[np.random.Generator, slice], Any]) -> Any:
        """`draw(generator, rows)` for each chunk, concatenated along the runs (one chunk: its
        draw as it is)."""
        if self.single:
            return draw(self.gens[0], self.rows[0])
        return np.concatenate(
            [np.asarray(draw(g, rows)) for g, rows in zip(self.gens, self.rows, strict=True)]
        )

    def split_items(
        self, run: np.ndarray, draw: Callable[[np.random.Generator, slice], Any]
    ) -> Any:
        """`draw(generator, items)` for each chunk over a flat array of items sorted by run
        (`run`: each item's run), concatenated."""
        if self.single:
            return draw(self.gens[0], slice(0, len(run)))
        cuts = np.searchsorted(run, [r.start for r in self.rows] + [self.runs], side="left")
        return np.concatenate(
            [
                np.asarray(draw(g, slice(int(a), int(b))))
                for g, a, b in zip(self.gens, cuts[:-1], cuts[1:], strict=True)
            ]
        )

    def set_widths(self, n: np.ndarray) -> list[int]:
        """Each chunk's widest run (`n`: members' slots per run): the width of its views."""
        self.widths = [int(n[rows].max()) if rows.stop > rows.start else 0 for rows in self.rows]
        return self.widths

    def rowsums(self, x: np.ndarray, how: Callable[[np.ndarray], np.ndarray] | None = None) -> Any:
        """`how(x)` (default: the sum over the last axis) of a (runs, members, ...) array, per
        chunk over the width it would have alone: a float sum's rounding depends on its length."""
        how = how or (lambda a: a.sum(axis=-1))
        if self.single:
            return how(x)
        return np.concatenate(
            [how(x[rows, :w]) for rows, w in zip(self.rows, self.widths, strict=True)]
        )


_MASK = (1 << 64) - 1
# a draw's offset from the day's key: the member uniforms' and the per-run draws' apart
_STEP_UNIFORM = 0x9E3779B97F4A7C15 * 0x10001
_STEP_DRAW = 0x9E3779B97F4A7C15 * 0x100000001


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of uint64 values (wrapping arithmetic, like fused._mix)."""
    with np.errstate(over="ignore"):
        z = np.asarray(z, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _i64(x: np.ndarray) -> np.ndarray:
    return np.require(x, dtype=np.int64, requirements=["C", "W"])


def _chunk_key(g: np.random.Generator) -> int:
    """The chunk's key, from its seed (a child of it: the generator's own stream is unmoved),
    else drawn from the generator."""
    seq = getattr(g.bit_generator, "seed_seq", None)
    if isinstance(seq, np.random.SeedSequence):
        child = np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, 0x5D0C))
        return int(child.generate_state(1, np.uint64)[0])
    return int(g.integers(0, 2**64, dtype=np.uint64))
