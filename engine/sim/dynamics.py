"""How each member changes from day to day beyond the kernel's plain draws: the retention law
(retention.py), the meaning of effects (effects.py), bounded custom metrics (walks.py) and the
parameters each run draws (parameters.py) — the one object the kernel asks.

A Dynamics is built once per simulator; `start` prepares a chunk (its runs' parameter draws),
after which every method works on that chunk's (runs, members) arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..lang.model import Action, Playbook
from . import effects as fx
from . import retention as rt
from . import walks
from .parameters import RunParameters, draw_chunks
from .retention_models import RetentionModel
from .scenario import Scenario

# the member arrays Dynamics may add (`Dynamics.columns`)
COLUMNS = ("churn_fx", "quit", "ev_day", "ev_on")


class Dynamics:
    """The per-member dynamics of one playbook and scenario."""

    def __init__(self, pb: Playbook, sc: Scenario, days: int) -> None:
        self.pb = pb
        self.sc = sc
        self.days = days
        self.churn = fx.has_churn(pb)
        self.event_day, self.event_acq = fx.event_keys(pb)
        model = RetentionModel(sc.retention.model)
        self.mixture = model in (RetentionModel.SBG_MIXTURE, RetentionModel.BDW_MIXTURE)
        self.modelled = {
            m: sc.metrics[m]
            for m in pb.metrics
            if m in sc.metrics and pb.metrics[m].definition is None and pb.metrics[m].count is None
        }
        self._sums: dict[tuple[str, ...], fx.Sum] = {}
        self._by_list: dict[int, tuple[Sequence[Action], fx.Sum]] = {}
        self.rp = RunParameters()
        self.law: rt.Law | None = None
        self.delta: np.ndarray | None = None
        self.speak_cap: Any = 1.0
        self.pending_invites = np.zeros(0)
        self.pending_joins = np.zeros(0)
        self._day_pending = False
        self._talk = np.zeros(0, dtype=bool)

    # -- a chunk -------------------------------------------------------------------------------

    def columns(self) -> dict[str, Any]:
        """The member arrays these dynamics add to the kernel's (name -> dtype or (dtype, n))."""
        out: dict[str, Any] = {}
        if self.churn:
            out["churn_fx"] = np.float32  # the hazard multiplier of effects, minus 1
        if self.mixture:
            out["quit"] = np.bool_  # an early quitter
        if self.event_day:
            out["ev_day"] = (np.float32, len(fx.DAY_KEYS))  # event effects on the next draw
            out["ev_on"] = np.uint8  # 1 where ev_day holds effects (the day reads only those)
        return out

    def start(self, runs: int, seed: np.random.SeedSequence) -> None:
        """Draw the chunk's parameters (a stream of its own: the members' draws are unchanged)."""
        self.start_chunks([(runs, seed)])

    def start_chunks(self, specs: list[tuple[int, np.random.SeedSequence]]) -> None:
        """`start` for chunks `(runs, seed)` run together: each draws from its own seed."""
        self.rp = draw_chunks(self.sc.uncertain, self.sc.joint_draws(), specs)
        runs = sum(n for n, _ in specs)
        self.law = rt.law(self.sc, self.rp.values, runs)
        self.delta = rt.tenure_table(self.law, self.days)
        a, b = self.law.speak_a, self.law.speak_b
        self.speak_cap = (a / (a + b)).astype(np.float32)[:, None]
        self.pending_invites = np.zeros(runs)
        self.pending_joins = np.zeros(runs)
        self._day_pending = False
        self._talk = np.zeros(runs, dtype=bool)

    def value(self, path: str, point: float) -> Any:
        """A parameter for each run (runs,), or the scenario's point value."""
        return self.rp.get(path, point)

    def column(self, path: str, point: float) -> Any:
        """As `value`, shaped (runs, 1) to broadcast over members."""
        return self.rp.column(path, point)

    def seed_users(self) -> Any:
        """Members who join when acquisition opens, per run."""
        return np.rint(self.value("acquisition.seed_users", self.sc.acquisition.seed_users)).astype(
            np.int64
        )

    # -- activity ------------------------------------------------------------------------------

    def inv_mean_speak(self) -> Any:
        """1 / E[speaking propensity] (scalar, or per run (runs, 1))."""
        act = self.sc.activity
        a = self.column("activity.speak_alpha", act.speak_alpha)
        b = self.column("activity.speak_beta", act.speak_beta)
        return (
            np.float32((act.speak_alpha + act.speak_beta) / act.speak_alpha)
            if np.isscalar(a) and np.isscalar(b)
            else ((a + b) / a).astype(np.float32)
        )

    def decay_table(self, days: int) -> np.ndarray:
        """The tenure decay f + (1 − f)·e^(−age/τ) by age 0..days+1: (days+2,) or per run."""
        act = self.sc.activity
        floor = self.column("activity.decay_floor", act.decay_floor)
        tau = self.column("activity.tenure_decay_days", act.tenure_decay_days)
        ages = np.arange(days + 2, dtype=np.float32)
        return np.asarray(floor + (1 - floor) * np.exp(-ages / tau), dtype=np.float32)

    # -- retention -----------------------------------------------------------------------------

    def joiners(
        self,
        new: np.ndarray,
        rng: np.random.Generator | None,
        chunks: list[tuple[np.random.Generator, slice]] | None = None,
        scores: np.ndarray | None = None,
    ) -> tuple[Any, Any, dict[str, Any]]:
        """(daily rate, speaking propensity, more columns) of the day's joiners, run by run;
        `scores`: each joiner's two normal scores, for a coupled law; with `chunks`
        ((generator, rows) of chunks run together), each chunk's joiners draw the rest from
        its own generator (retention.draw_joiners)."""
        assert self.law is not None
        run_of = np.repeat(np.arange(len(new)), new)
        parts = None
        if chunks is not None:
            cuts = np.searchsorted(run_of, [rows.start for _, rows in chunks] + [len(new)])
            parts = [
                (g, slice(int(a), int(b)))
                for (g, _), a, b in zip(chunks, cuts[:-1], cuts[1:], strict=True)
            ]
        j = rt.draw_joiners(self.law, run_of, rng, parts, scores)
        more: dict[str, Any] = {}
        if self.mixture:
            more["quit"] = j.quitter if j.quitter is not None else np.zeros(len(run_of), dtype=bool)
        return j.rate, j.speak, more

    def law_arrays(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """What fused.activity reads of the retention law (retention.daily_hazard is its NumPy
        definition): the tenure table Δ (runs, tenure) as float32, (mode, period) with mode 0 the
        joiner's rate is the daily hazard, 1 −expm1(−rate·Δ), 2 −expm1(−rate/period), and
        whether early quitters leave in their first period."""
        assert self.law is not None
        quit = self.mixture and self.law.quitters
        if self.delta is not None:
            mode, delta = 1, self.delta.astype(np.float32)
        else:
            mode, delta = (2 if quit else 0), np.zeros((1, 1), dtype=np.float32)
        return delta, np.array([mode, self.law.period], dtype=np.float64), quit

    def take_day_pending(self) -> bool:
        """Whether an event set off a one-day effect (`ev_day`) since the last draws; the
        compiled day reads and clears them."""
        out, self._day_pending = self._day_pending, False
        return out

    def talk_runs(self) -> np.ndarray:
        """Runs where an event set off `interactions` for today's draws (cleared: read once)."""
        out, self._talk = self._talk, np.zeros_like(self._talk)
        return out

    def churn_effect(
        self, pop: Any, sl: Any, rows: np.ndarray, cols: np.ndarray, factor: Any
    ) -> None:
        """Members (rows, cols) reached by an event action: (1 + churn) starts its window."""
        if not self.churn:
            return
        view = pop["churn_fx"][sl]
        view[rows, cols] = fx.churn_multiplier(view[rows, cols], factor)

    # -- event actions ---------------------------------------------------------------------

    def total(self, actions: Sequence[Action]) -> fx.Sum:
        """The combined effect of an event's actions (cached per list: the event rules keep
        theirs while they hold)."""
        hit = self._by_list.get(id(actions))
        if hit is not None and hit[0] is actions:
            return hit[1]
        key = tuple(a.id for a in actions)
        found = self._sums.get(key)
        if found is None:
            found = self._sums[key] = fx.total(actions)
        if len(self._by_list) > 65536:
            self._by_list.clear()
        self._by_list[id(actions)] = (actions, found)
        return found

    def event_effects(
        self,
        pop: Any,
        sl: Any,
        rows: np.ndarray,
        cols: np.ndarray,
        per_run: Sequence[Sequence[Action]],
    ) -> None:
        """An event's one-day effects (DAY_KEYS) for the members it reached, and the invitations
        and joins it brings (Poisson, with tomorrow's acquisition)."""
        if not (self.event_day or self.event_acq) or not len(rows):
            return
        day = self.event_day_effects(rows, *self.event_sums(per_run))
        if day is not None:
            col = pop["ev_day"][sl]
            hit = day[rows]
            # one-day probabilities combine as independent chances; the rest add up
            col[rows, cols, 0] = 1 - (1 - col[rows, cols, 0]) * (1 - hit[:, 0])
            col[rows, cols, 1:] += hit[:, 1:]
            pop["ev_on"][sl][rows, cols] = 1

    def event_sums(
        self, per_run: Sequence[Sequence[Action]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per run, of an event's actions: the one-day effects (runs, DAY_KEYS), invitations
        and joins each member reached brings."""
        sums = [self.total(acts) for acts in per_run]
        return (
            np.array([s.day for s in sums], dtype=np.float32).reshape(len(sums), -1),
            np.array([s.invites for s in sums], dtype=np.float64),
            np.array([s.joins for s in sums], dtype=np.float64),
        )

    def event_day_effects(
        self, rows: np.ndarray, day: np.ndarray, invites: np.ndarray, joins: np.ndarray
    ) -> np.ndarray | None:
        """The one-day effects `day` (runs, DAY_KEYS) of an event's actions, or None when
        there are none, for the members it reached in runs `rows` (fused.reached or
        event_effects adds them to `ev_day`); books the invitations and joins (per member
        reached, per run) they bring."""
        if not (self.event_day or self.event_acq) or not len(rows):
            return None
        out: np.ndarray | None = None
        if self.event_day and day.any():
            self._day_pending = True
            self._talk[rows[day[rows, 3] != 0]] = True
            out = day
        if self.event_acq:
            per = np.bincount(rows, minlength=len(day)).astype(float)
            self.pending_invites += per * invites
            self.pending_joins += per * joins
        return out

    def take_invites(self) -> np.ndarray:
        """Invitations members sent because of event actions since the last acquisition."""
        out, self.pending_invites = self.pending_invites, np.zeros_like(self.pending_invites)
        return out

    def take_joins(self) -> np.ndarray:
        """Mean joins event actions brought since the last acquisition (a Poisson burst)."""
        out, self.pending_joins = self.pending_joins, np.zeros_like(self.pending_joins)
        return out

    # -- custom metrics ------------------------------------------------------------------------

    def metric_states(self, runs: int) -> dict[str, np.ndarray]:
        """The bounded walks' state of the scenario's modelled metrics."""
        starts = {
            name: walks.start_value(
                self.pb.metrics.get(name), self.value(f"metrics.{name}.start", m.start)
            )
            for name, m in self.sc.metrics.items()
        }
        return walks.start_states(starts, runs)

    def metric_start(self, name: str) -> float:
        """What a guard reads of a modelled metric on day 0 (its start, within its range)."""
        value: float = walks.start_value(self.pb.metrics.get(name), self.sc.metrics[name].start)
        return value

    def metric_step(
        self, name: str, state: dict[str, np.ndarray], members: np.ndarray, z: np.ndarray
    ) -> np.ndarray:
        """Today's values of modelled metric `name` (runs,); `z`: today's standard normals."""
        m = self.sc.metrics[name]
        return walks.step(
            self.pb.metrics.get(name),
            state,
            name,
            self.value(f"metrics.{name}.per_day", m.per_day),
            self.value(f"metrics.{name}.noise", m.noise),
            self.value(f"metrics.{name}.per_member", m.per_member),
            members,
            z,
        )
