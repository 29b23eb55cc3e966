"""95 % intervals of a share of runs: Wilson's, on the runs' effective number when they share draws.

Every share of runs a simulation reports (a gate passed by its deadline, an exit taken, a target
met, an invariant broken) gets its interval here. When a scenario's parameters are
distributions, runs 2k and 2k+1 share one parameter draw (parameters.py), so their outcomes
correlate as much as the parameters move them and n runs carry less information than n
independent ones. The interval is then Wilson's on the effective number of runs
n_eff = n / deff, with the design effect of clusters deff = 1 + (m̄ − 1)·ICC (Kish): m̄ the mean
number of counted runs per draw (2 over all runs; fewer for a share of the runs that entered a
stage, where a pair may count one run), ICC the intraclass correlation of the outcome within
pairs, estimated from the pairs (Fisher's pairwise estimator, kept within [0, 1]: a negative
estimate is noise, pairs cannot be less alike than independent runs). With fewer than
`MIN_PAIRS` pairs the ICC is taken as 1 (the widest interval, as if each pair were one run).
Without distributions every run is its own draw: deff = 1, Wilson's interval unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

Z95 = 1.96  # as kernel.wilson
MIN_PAIRS = 10  # fewer pairs estimate no correlation: assume the worst


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (both may be fractional)."""
    if n <= 0:
        return (0.0, 1.0)
    phat = k / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(phat * (1 - phat), 0.0) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def interval(k: int, n: int, deff: float = 1.0) -> tuple[float, float]:
    """The 95 % interval of k of n runs, counting them as n / deff independent runs."""
    if deff <= 1.0:
        return wilson(k, n)
    return wilson(k / deff, n / deff)  # the same share, on fewer runs


@dataclass(frozen=True)
class Pairs:
    """Which runs share one parameter draw: (first, second) run indices; none: all independent."""

    first: tuple[int, ...] = ()
    second: tuple[int, ...] = ()
    runs: int = field(default=0, compare=False)

    @property
    def independent(self) -> bool:
        """Whether every run has its own draw (no distributions in the scenario)."""
        return not self.first

    @classmethod
    def of(cls, params: np.ndarray | None) -> Pairs:
        """The pairs (2k, 2k+1) whose rows of drawn parameters (runs × parameters) are equal."""
        import numpy as np

        if params is None or params.ndim != 2 or params.shape[1] == 0:
            return cls()
        n = params.shape[0] - params.shape[0] % 2
        a, b = np.arange(0, n, 2), np.arange(1, n, 2)
        same = (params[a] == params[b]).all(axis=1)
        return cls(
            tuple(int(x) for x in a[same]), tuple(int(x) for x in b[same]), int(params.shape[0])
        )

    def deff(self, hit: Any, among: Any = None) -> float:
        """The design effect of a share: `hit` per run (1/True: counted as a success), over the
        runs where `among` is true (default: all runs)."""
        import numpy as np

        if self.independent:
            return 1.0
        y = np.asarray(hit, dtype=float)
        use = np.ones(len(y), bool) if among is None else np.asarray(among, dtype=bool)
        n = int(use.sum())
        if n < 2:
            return 1.0
        a, b = np.asarray(self.first), np.asarray(self.second)
        keep = (a < len(y)) & (b < len(y))
        a, b = a[keep], b[keep]
        both = use[a] & use[b]
        complete = int(both.sum())
        clusters = n - complete  # a complete pair is one cluster of two runs
        m = n / clusters
        if m <= 1.0:
            return 1.0
        p = float(y[use].mean())
        var = p * (1 - p)
        if var <= 0:
            return 1.0  # every counted run alike: Wilson's interval at 0 or 1 needs no widening
        if complete < MIN_PAIRS:
            icc = 1.0
        else:
            ya, yb = y[a[both]], y[b[both]]
            icc = float(np.mean((ya - p) * (yb - p)) / var)
        return 1.0 + (m - 1.0) * min(max(icc, 0.0), 1.0)

    def interval(self, hit: Any, among: Any = None) -> tuple[float, float]:
        """The 95 % interval of the share of `hit` runs among the runs `among` (default: all)."""
        import numpy as np

        y = np.asarray(hit, dtype=bool)
        use = np.ones(len(y), bool) if among is None else np.asarray(among, dtype=bool)
        return interval(int((y & use).sum()), int(use.sum()), self.deff(y, use))


INDEPENDENT = Pairs()
