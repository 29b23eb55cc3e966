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
        self._churn_live = False
        self._day_pending = False

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
        self._churn_live = False
        self._day_pending = False

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

    def speak_lift(self, scheduled: Any, reach: np.ndarray | None, events: np.ndarray) -> Any:
        """All of today's speak lifts of each member, within ± the run's mean propensity."""
        lift = events + scheduled
        if reach is not None:
            lift[:, : reach.shape[1]] += reach
        cap = self.speak_cap
        return np.clip(lift, -cap, cap, out=lift)

    def take_day_effects(self, pop: Any, sl: Any) -> np.ndarray | None:
        """The event actions' one-day effects due at today's draws (DAY_KEYS by the last
        axis), cleared: later events of the day act on tomorrow's."""
        if not self._day_pending:  # no event set one off since the last draws: no pass over them
            return None
        self._day_pending = False
        col = pop["ev_day"][sl]
        out = col.copy()
        col[...] = 0
        return out

    def talks(
        self,
        part: np.ndarray,
        scheduled: Any,
        reach: np.ndarray | None,
        day: np.ndarray | None,
        rng: np.random.Generator,
    ) -> np.ndarray | None:
        """Members who speak because of `interactions` (messages a participant writes in an
        activity): a participant writes Poisson(n) of them, so speaks with 1 − e^(−n)."""
        n: Any = scheduled
        if reach is not None:
            n = np.broadcast_to(n, part.shape).copy()
            n[:, : reach.shape[1]] += reach
        if day is not None:
            n = n + day[..., 3]
        if not np.any(n):
            return None
        q = -np.expm1(-np.asarray(n, dtype=np.float32))
        # chunks run together draw only where each would alone (kernel.Streams.random_for)
        draws = rng.random_for(n, part.shape) if hasattr(rng, "random_for") else None
        if draws is None:
            draws = rng.random(part.shape, dtype=np.float32)
        talk: np.ndarray = part & (draws < q)
        return talk

    # -- retention -----------------------------------------------------------------------------

    def joiners(self, new: np.ndarray, rng: np.random.Generator) -> tuple[Any, Any, dict[str, Any]]:
        """(daily rate, speaking propensity, more columns) of the day's joiners, run by run."""
        assert self.law is not None
        run_of = np.repeat(np.arange(len(new)), new)
        j = rt.draw_joiners(self.law, run_of, rng)
        more: dict[str, Any] = {}
        if self.mixture:
            more["quit"] = j.quitter if j.quitter is not None else np.zeros(len(run_of), dtype=bool)
        return j.rate, j.speak, more

    def hazard(
        self,
        pop: Any,
        sl: Any,
        d: int,
        join_day: np.ndarray,
        scheduled: Any,
        reach: np.ndarray | None,
    ) -> np.ndarray:
        """Today's hazard of each member: the retention law's, times the effects' multiplier.

        `scheduled` is today's multiplier (1 + churn) of the scheduled actions per member (or a
        column), `reach` of the actions that reach members one by one; both start a window
        that fades by CHURN_DECAY a day, as event actions' do (`churn_effect`)."""
        assert self.law is not None
        quit = pop["quit"][sl] if self.mixture and self.law.quitters else None
        rate = pop["hazard"][sl]
        if self.delta is None and quit is None:
            base = rate
        else:
            base = rt.daily_hazard(self.law, rate, d - join_day.astype(np.int64), quit, self.delta)
        if not self.churn:
            return np.asarray(base)
        state = pop["churn_fx"][sl]
        # run by run (a run's numbers must not depend on the runs beside it: kernel.Streams)
        sched = np.broadcast_to(np.asarray(scheduled, dtype=np.float32), state.shape)
        on = (sched != 1).any(axis=1)
        if on.any():
            state[on] = fx.churn_multiplier(state[on], sched[on])
            self._churn_live = True
        if reach is not None:
            n0 = reach.shape[1]
            on = (reach != 1).any(axis=1)
            if on.any():
                state[on, :n0] = fx.churn_multiplier(state[on, :n0], reach[on])
                self._churn_live = True
        if not self._churn_live:
            return np.asarray(base)
        hz = base * (1 + state)
        state *= np.float32(fx.CHURN_DECAY)
        return np.asarray(hz, dtype=np.float32)

    def churn_effect(
        self, pop: Any, sl: Any, rows: np.ndarray, cols: np.ndarray, factor: Any
    ) -> None:
        """Members (rows, cols) reached by an event action: (1 + churn) starts its window."""
        if not self.churn:
            return
        view = pop["churn_fx"][sl]
        view[rows, cols] = fx.churn_multiplier(view[rows, cols], factor)
        self._churn_live = True

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
        sums = [self.total(acts) for acts in per_run]
        if self.event_day:
            day = np.array([s.day for s in sums], dtype=np.float32)
            if day.any():
                col = pop["ev_day"][sl]
                hit = day[rows]
                # one-day probabilities combine as independent chances; the rest add up
                col[rows, cols, 0] = 1 - (1 - col[rows, cols, 0]) * (1 - hit[:, 0])
                col[rows, cols, 1:] += hit[:, 1:]
                self._day_pending = True
        if self.event_acq:
            per = np.bincount(rows, minlength=len(sums)).astype(float)
            self.pending_invites += per * np.array([s.invites for s in sums])
            self.pending_joins += per * np.array([s.joins for s in sums])

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
        self, name: str, state: dict[str, np.ndarray], members: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Today's values of modelled metric `name` (runs,)."""
        m = self.sc.metrics[name]
        return walks.step(
            self.pb.metrics.get(name),
            state,
            name,
            self.value(f"metrics.{name}.per_day", m.per_day),
            self.value(f"metrics.{name}.noise", m.noise),
            self.value(f"metrics.{name}.per_member", m.per_member),
            members,
            rng,
        )
