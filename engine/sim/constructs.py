"""The member-level constructs in the kernel: channels and admission at joining, teams, audiences
of single members (segments, leaderboards, `where:`), counters, points, milestones, counted
metrics, segment sizes and staff workload — compiled once per simulator (`Constructs`), with
one chunk's state and its daily steps (`ChunkState`).

Every rule is program's (members, counted, ranking, teams, points, milestones, metrics); this
module applies them to the kernel's (runs, members) arrays. Equations and assumptions:
docs/simulation.md, "Members, channels and segments" onwards.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..lang.model import Action, Audience, CountOf, OnEvent, Playbook, TeamAssignment
from ..lang.semantics import is_member_message
from ..program import counted as pc
from ..program import metrics as defs
from ..program import points as pp
from ..program import ranking, teams
from ..program.events import Trigger
from ..program.lifecycle import Lifecycle
from ..program.milestones import crossed, milestones
from .attributes import MemberEnv, MemberModel
from .scenario import Scenario
from .streams import Streams

POP7 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)  # days in a 7-day mask


class _Pop(Protocol):
    """The kernel's member arrays of a chunk (`kernel._Pop`): (runs, capacity) each."""

    arrays: dict[str, np.ndarray]
    n: np.ndarray

    def __getitem__(self, k: str) -> np.ndarray:
        """One member array."""
        ...


LOT_BUCKETS = 12  # points ledger: lots in day buckets, expire / 12 days wide (+1 being filled)
EMPTY = 1 << 40  # the due day of an empty bucket: it never lapses, and sorts last
EVENTS_NEEDING_MEMBERS = frozenset(
    {"member.milestone", "member.redeemed", "member.applied", "member.approved", "member.rejected"}
)


def member_level(a: Action) -> bool:
    """Whether a scheduled action reaches members one by one: a segment, a leaderboard, or a
    group message narrowed by `where:` (the kernel's tier-level effects cannot express it)."""
    if a.audience in (Audience.STAFF, Audience.MEMBER, Audience.REFERRER):
        return False
    return (
        a.audience == Audience.TOP
        or Audience.segment_of(a.audience) is not None
        or a.where is not None
        or a.redeem_item is not None
    )


def needed(pb: Playbook) -> bool:
    """Whether the playbook uses any member-level construct (else the kernel's plain path)."""
    if pb.attributes or pb.segments or pb.channels or pb.admission or pb.points or pb.teams:
        return True
    if any(m.count is not None for m in pb.metrics.values()):
        return True
    for a in pb.actions.values():
        if a.where is not None or a.for_each is not None or a.top is not None:
            return True
        if a.redeem_item is not None or member_level(a):
            return True
        if isinstance(a.schedule, OnEvent) and a.schedule.event in EVENTS_NEEDING_MEMBERS:
            return True
    return False


@dataclass
class Cohort:
    """People arriving on one day, flat over the runs of a chunk (sorted by run)."""

    run: np.ndarray
    source: np.ndarray
    referred: np.ndarray
    attrs: dict[str, np.ndarray]
    approved: np.ndarray

    def take(self, mask: np.ndarray) -> Cohort:
        """The people where `mask` holds."""
        return Cohort(
            self.run[mask],
            self.source[mask],
            self.referred[mask],
            {k: v[mask] for k, v in self.attrs.items()},
            self.approved[mask],
        )

    def counts(self, runs: int) -> np.ndarray:
        """People per run."""
        return np.bincount(self.run, minlength=runs).astype(np.int64)

    @staticmethod
    def join(parts: Sequence[Cohort]) -> Cohort:
        """One cohort of several, sorted by run (stable: earlier parts first within a run)."""
        run = np.concatenate([p.run for p in parts])
        order = np.argsort(run, kind="stable")
        keys = parts[0].attrs.keys()
        return Cohort(
            run[order],
            np.concatenate([p.source for p in parts])[order],
            np.concatenate([p.referred for p in parts])[order],
            {k: np.concatenate([p.attrs[k] for p in parts])[order] for k in keys},
            np.concatenate([p.approved for p in parts])[order],
        )


@dataclass
class Apply:
    """What a member event sets off for each member it reaches (one rule group, aggregated)."""

    speak: float = 0.0
    churn: float = 1.0  # (1 + churn) on the member's hazard: a fading window (effects.py)
    messages: int = 0
    tasks: Counter[str] = field(default_factory=Counter)
    points: float = 0.0
    redeem: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()  # the chain, for its other effects (dynamics.py)

    def add(self, a: Action, first: bool) -> None:
        """Add one action of the rule's chain (`first`: the event's own action)."""
        self.actions = (*self.actions, a)
        self.speak += a.effect.speak
        self.churn *= 1 + a.effect.churn
        if first:  # the event's own action goes out now; the chain behind it on later days
            self.messages += int(is_member_message(a))
        if a.kind == "task" and a.owner:
            self.tasks[a.owner] += 1
        if a.reward_points:
            self.points += a.reward_points
        if a.redeem_item:
            self.redeem = (*self.redeem, a.redeem_item)


class Constructs:
    """A playbook's member-level constructs, compiled once for a simulator."""

    def __init__(self, pb: Playbook, sc: Scenario) -> None:
        self.pb = pb
        self.sc = sc
        self.active = needed(pb)
        self.mm = MemberModel(pb, sc)
        self.channels = self.mm.channels
        self.counted = pc.counted_metrics(pb.metrics)
        self.segments = list(pb.segments)
        self.roles = list(pb.roles)
        self.role_index = {r: i for i, r in enumerate(self.roles)}
        self.capacity = {
            r.id: r.headcount * (r.capacity or pb.staff_tasks_per_day) for r in pb.roles.values()
        }
        self.milestones = milestones(pb.actions)
        self.counters = sorted({m.counter for m in self.milestones})
        self.items = (
            sorted(pb.points.redeem.values(), key=lambda x: (x.cost, x.id)) if pb.points else []
        )
        self.item_index = {it.id: i for i, it in enumerate(self.items)}
        self.team_names: tuple[str, ...] = ()
        if pb.teams is not None:
            self.team_names = teams.team_names(pb) or self.mm.vocabs.get(pb.teams.by or "", ())[1:]
            self.mm.vocabs["team"] = ("", *self.team_names)
        expire = pp.expire_days(pb.points) if pb.points else None
        self.expire = expire
        # lots in buckets `width` days wide: a bucket's points lapse together, at most
        # width - 1 days after their due day (never before it)
        self.width = max(1, math.ceil(expire / LOT_BUCKETS)) if expire else 1 << 30
        self.lots = LOT_BUCKETS + 1 if expire else 1
        self.review_days = 0
        if pb.admission is not None:
            days = sc.admission.review_days
            if days is None:
                days = math.ceil(pb.admission.review_within.total_seconds() / 86400)
            self.review_days = max(0, math.ceil(days))
        self.events = sorted({ev for c in self._counts() for ev in [c.event] if ev})
        self.earn = dict(pb.points.earn) if pb.points else {}
        # invitations are drawn per run; who sent them is drawn only when something reads it
        self.invites_by_member = bool(self.earn.get("invite")) or any(
            c.event == "invite" and (c.where is not None or m.by_channel)
            for m in self.counted.values()
            for c in (m.count, m.per)
            if c is not None
        )

    def _counts(self) -> list[Any]:
        return [c for m in self.counted.values() for c in (m.count, m.per) if c is not None]

    def columns(self) -> dict[str, Any]:
        """The member arrays the constructs add: name -> dtype, or (dtype, width)."""
        if not self.active:
            return {}
        out: dict[str, Any] = {
            "source": np.int8,
            "checkins": np.int32,
            "messages": np.int32,
            **self.mm.columns(),
        }
        if self.pb.admission is not None:
            out["approved"] = np.bool_
        if self.pb.teams is not None:
            out["team"] = np.int16
        if self.pb.points is not None:
            out["points"] = np.float32
            out["lots"] = (np.float32, self.lots)
        for c in self.counters:
            out["ms_prev:" + c] = np.float32
        for m in self.milestones:
            out["ms_fired:" + m.action] = np.bool_
        return out

    def trigger_of(self, m: Any) -> Trigger:
        """The event-rule trigger of a milestone (program/events.py's value)."""
        return Trigger("member.milestone", (m.counter, float(m.reaches)))


@dataclass
class ChunkState:
    """One chunk's state of the member-level constructs, and its daily steps."""

    cx: Constructs
    runs: int
    days: int
    rng: Any  # np.random.Generator (one chunk) or Streams (chunks run together)
    workload: np.ndarray = field(init=False)
    segments: np.ndarray = field(init=False)
    by_channel: np.ndarray = field(init=False)
    channel_joins: np.ndarray = field(init=False)
    daily: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    ever: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    cumulative: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    pending: dict[int, list[Cohort]] = field(default_factory=dict)
    applications: np.ndarray = field(init=False)
    approved: np.ndarray = field(init=False)
    decided: np.ndarray = field(init=False)
    rejected: np.ndarray = field(init=False)
    app_events: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    issued: np.ndarray = field(init=False)
    spent: np.ndarray = field(init=False)
    stock: np.ndarray = field(init=False)
    team_joined: np.ndarray = field(init=False)
    lot_days: np.ndarray = field(init=False)
    redeemed_today: np.ndarray | None = None
    invites_today: np.ndarray | None = None  # per member: invitations sent today
    invites_total: np.ndarray = field(init=False)  # per run: invitations sent today

    def __post_init__(self) -> None:
        R, D, cx = self.runs, self.days, self.cx
        self.rng = Streams.of(self.rng, R)
        C = len(cx.channels)
        self.workload = np.zeros((R, D, len(cx.roles)), dtype=np.float32)
        self.segments = np.zeros((R, D, len(cx.segments)), dtype=np.float32)
        by = [m for m in cx.counted.values() if m.by_channel]
        self.by_channel_names = [pc.channel_key(m.id, c) for m in by for c in cx.channels]
        self.by_channel = np.zeros((R, D, len(self.by_channel_names)), dtype=np.float32)
        self.channel_joins = np.zeros((R, D + 1, C))
        for name in ("applications", "approved", "decided", "rejected"):
            setattr(self, name, np.zeros((R, D + 1 + cx.review_days)))
        self.issued = np.zeros(R)
        self.spent = np.zeros(R)
        self.stock = np.array(
            [[np.inf if it.stock is None else it.stock for it in cx.items]] * R, dtype=float
        ).reshape(R, len(cx.items))
        self.team_joined = np.zeros(R, dtype=np.int64)
        self.lot_days = np.full(cx.lots, EMPTY, dtype=np.int64)
        self.invites_total = np.zeros(R)

    # -- the member env ---------------------------------------------------------------------

    def env(self, pop: _Pop, sl: Any, d: int) -> MemberEnv:
        """Every member attribute over the chunk's (runs, members) arrays on day `d`."""
        cols: dict[str, Callable[[], Any]] = {
            # first: a view, so a reader that looks for the members' shape copies nothing
            "tier": lambda: pop["tier"][sl],
            "tenure_days": lambda: (d - pop["join_day"][sl]).astype(np.float32),
            "weekly_interactions": lambda: (
                POP7[pop["speak7"][sl]] + POP7[pop["part7"][sl]]
            ).astype(np.float32),
            "ugc_posts": lambda: pop["ugc"][sl],
            "payments": lambda: pop["payments"][sl],
            "invites": lambda: pop["invites"][sl],
            "checkin_streak": lambda: pop["streak"][sl],
            "violations": lambda: pop["violations"][sl],
            "silent_days": lambda: pop["silent"][sl],
            "source": lambda: pop["source"][sl],
            "referrer": lambda: pop["referred"][sl].view(np.int8),
            "checkins": lambda: pop["checkins"][sl],
            "messages": lambda: pop["messages"][sl],
        }
        shape = pop["alive"][sl].shape
        zeros = _Zeros(shape)
        cols["points"] = (lambda: pop["points"][sl]) if "points" in pop.arrays else zeros.number
        cols["team"] = (lambda: pop["team"][sl]) if "team" in pop.arrays else zeros.code
        cols["approved"] = (lambda: pop["approved"][sl]) if "approved" in pop.arrays else zeros.flag
        for d_ in self.cx.mm.declared.values():
            cols[d_.name] = _column(pop, d_.column, sl)
        return MemberEnv(cols, self.cx.mm.vocabs, shape)

    def cohort_env(self, c: Cohort) -> MemberEnv:
        """What an applicant's attributes are before joining: the declared ones, the channel."""
        n = len(c.run)
        zeros = _Zeros((n,))
        cols: dict[str, Callable[[], Any]] = {
            name: zeros.number
            for name in (
                "tenure_days",
                "weekly_interactions",
                "ugc_posts",
                "payments",
                "invites",
                "checkin_streak",
                "violations",
                "silent_days",
                "checkins",
                "messages",
                "points",
            )
        }
        cols.update(
            source=lambda: c.source,
            referrer=lambda: c.referred.view(np.int8),
            tier=zeros.code,
            team=zeros.code,
            approved=zeros.flag,
        )
        for d_ in self.cx.mm.declared.values():
            cols[d_.name] = _fixed(c.attrs[d_.column])
        return MemberEnv(cols, self.cx.mm.vocabs, (n,))

    # -- joining: channels, admission --------------------------------------------------------

    def arrivals(
        self,
        lcs: Sequence[Lifecycle],
        base: np.ndarray,
        ref: np.ndarray,
        opened: np.ndarray,
        d: int,
    ) -> Cohort:
        """Who joins today: arrivals split by channel (and applications decided under
        `admission:`), plus earlier applications approved today."""
        cx, R, rng = self.cx, self.runs, self.rng
        C = len(cx.channels)
        is_open = self._channels_open(lcs, opened, d)
        counts = np.zeros((R, C), dtype=np.int64)
        shares = np.zeros((R, C))
        for code, c in enumerate(cx.channels):
            model = cx.sc.acquisition.channels.get(c)
            if model is None:
                continue
            if model.per_day > 0:
                lam = model.per_day
                counts[:, code] += (
                    rng.split(lambda g, rows, lam=lam: g.poisson(lam, rows.stop - rows.start))
                    * is_open[:, code]
                )
            if model.share > 0:
                shares[:, code] = model.share * is_open[:, code]
        total = shares.sum(axis=1, keepdims=True)
        shares = np.where(total > 1, shares / np.maximum(total, 1e-12), shares)
        shares[:, cx.mm.default_channel] += 1 - shares.sum(axis=1)
        shares = np.clip(shares, 0, None)
        shares /= shares.sum(axis=1, keepdims=True)
        base = np.asarray(base, dtype=np.int64)
        counts += rng.split(lambda g, rows: g.multinomial(base[rows], shares[rows]))
        ref = np.asarray(ref, dtype=np.int64)
        adm = cx.pb.admission
        if adm is not None:
            rate = cx.sc.admission.applications_per_join
            counts = rng.split(lambda g, rows: g.binomial(counts[rows], rate))
            ref = rng.split(lambda g, rows: g.binomial(ref[rows], rate))
        people = self._cohort(counts, ref)
        if adm is not None:
            people = self._admit(people, d)
        later = self.pending.pop(d, [])
        joiners = Cohort.join([people, *later]) if later else people
        for code in range(C):
            self.channel_joins[:, d, code] = np.bincount(
                joiners.run[joiners.source == code], minlength=R
            )
        return joiners

    def referral_open(self, lcs: Sequence[Lifecycle], d: int) -> np.ndarray:
        """Per run, whether members send invitations: always, unless the playbook's
        `referral: true` channel has not opened yet (its `opens:` stage, its `from_day`)."""
        if self.cx.mm.referral_channel == self.cx.mm.default_channel and not any(
            c.referral for c in self.cx.pb.channels.values()
        ):
            return np.ones(self.runs, dtype=bool)
        return self._channels_open(lcs, np.ones(self.runs, bool), d)[:, self.cx.mm.referral_channel]

    def _channels_open(self, lcs: Sequence[Lifecycle], opened: np.ndarray, d: int) -> np.ndarray:
        cx = self.cx
        out = np.repeat(opened[:, None], len(cx.channels), axis=1)
        for code, c in enumerate(cx.channels):
            ch = cx.pb.channels.get(c)
            model = cx.sc.acquisition.channels.get(c)
            if model is not None and d < model.from_day:
                out[:, code] = False
            if ch is not None and ch.opens is not None:
                out[:, code] &= [any(s.stage == ch.opens for s in lc.states) for lc in lcs]
        return out

    def _cohort(self, counts: np.ndarray, ref: np.ndarray) -> Cohort:
        R, C = counts.shape
        flat = counts.ravel()
        run = np.concatenate(
            [np.repeat(np.repeat(np.arange(R), C), flat), np.repeat(np.arange(R), ref)]
        )
        source = np.concatenate(
            [
                np.repeat(np.tile(np.arange(C), R), flat),
                np.full(int(ref.sum()), self.cx.mm.referral_channel),
            ]
        ).astype(np.int8)
        referred = np.concatenate([np.zeros(int(flat.sum()), bool), np.ones(int(ref.sum()), bool)])
        order = np.argsort(run, kind="stable")
        run, source, referred = run[order], source[order], referred[order]
        attrs = self._draw(run, source)
        return Cohort(run, source, referred, attrs, np.zeros(len(run), dtype=bool))

    def _draw(self, run: np.ndarray, source: np.ndarray) -> dict[str, np.ndarray]:
        """Declared attributes of joiners (sorted by run), each chunk's from its own stream."""
        rng, mm = self.rng, self.cx.mm
        if rng.single:
            return mm.draw(source, rng.gens[0])
        cuts = np.searchsorted(run, [r.start for r in rng.rows] + [rng.runs], side="left")
        parts = [
            mm.draw(source[a:b], g) for g, a, b in zip(rng.gens, cuts[:-1], cuts[1:], strict=True)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in mm.columns()}

    def _admit(self, people: Cohort, d: int) -> Cohort:
        """Applications: approved at once when `approve` holds, else reviewed by staff and
        decided `review_days` later (approved with the scenario's rate)."""
        cx, R = self.cx, self.runs
        adm = cx.pb.admission
        assert adm is not None
        env = self.cohort_env(people)
        auto = (
            cx.mm.condition(adm.approve).mask(env)
            if adm.approve
            else np.zeros(len(people.run), bool)
        )
        self.applications[:, d] += people.counts(R)
        self._app_counts("apply", env, people, d, np.ones(len(people.run), bool))
        reviewed = ~auto
        draws = self.rng.split_items(people.run, lambda g, it: g.random(it.stop - it.start))
        ok = reviewed & (draws < cx.sc.admission.approve_rate)
        no = reviewed & ~ok
        later = d + cx.review_days
        role = cx.role_index.get(adm.review_owner)
        if role is not None:
            self.workload[:, d, role] += np.bincount(people.run[reviewed], minlength=R)
        self.decided[:, d] += np.bincount(people.run[auto], minlength=R)
        self.approved[:, d] += np.bincount(people.run[auto], minlength=R)
        self.decided[:, later] += np.bincount(people.run[reviewed], minlength=R)
        self.approved[:, later] += np.bincount(people.run[ok], minlength=R)
        self.rejected[:, later] += np.bincount(people.run[no], minlength=R)
        self._app_counts("approve", env, people, later, auto | ok)
        self._app_counts("reject", env, people, later, no)
        people.approved[:] = True
        now = people.take(auto)
        if cx.review_days == 0:
            return Cohort.join([now, people.take(ok)])
        self.pending.setdefault(later, []).append(people.take(ok))
        return now

    def _app_counts(self, event: str, env: MemberEnv, people: Cohort, day: int, who: Any) -> None:
        """Counted metrics' `events: apply|approve|reject` (applicants are not members yet)."""
        C = len(self.cx.channels)
        for m in self.cx.counted.values():
            for which, count in (("count", m.count), ("per", m.per)):
                if count is None or not pc.counts_event(count, event):
                    continue
                mask = who & self.cx.mm.condition(count.where).mask(env)
                K = 1 + C if m.by_channel else 1
                days = self.days + 1 + self.cx.review_days
                arr = self.app_events.setdefault((m.id, which), np.zeros((self.runs, K, days)))
                arr[:, 0, day] += np.bincount(people.run[mask], minlength=self.runs)
                if m.by_channel:
                    cell = people.run[mask] * C + people.source[mask]
                    per = np.bincount(cell, minlength=self.runs * C).reshape(self.runs, C)
                    arr[:, 1:, day] += per

    def _codes(self, m: Any) -> list[int]:
        return [-1, *range(len(self.cx.channels))] if m.by_channel else [-1]

    # -- teams -------------------------------------------------------------------------------

    def assign_teams(self, pop: _Pop, first: np.ndarray, new: np.ndarray) -> None:
        """Put the joiners of each run (slots first[r] .. first[r]+new[r]) in teams."""
        t = self.cx.pb.teams
        if t is None or not len(self.cx.team_names):
            return
        T = len(self.cx.team_names)
        team = pop["team"]
        if t.assign == TeamAssignment.ATTRIBUTE:
            d_ = self.cx.mm.declared.get(t.by or "")
            if d_ is None:
                return
            for r in np.flatnonzero(new):
                a, b = int(first[r]), int(first[r] + new[r])
                team[r, a:b] = pop[d_.column][r, a:b]
            return
        if t.assign == TeamAssignment.ROUND_ROBIN:
            for r in np.flatnonzero(new):
                a, b = int(first[r]), int(first[r] + new[r])
                k = self.team_joined[r] + np.arange(b - a)
                team[r, a:b] = teams.round_robin(k, T) + 1
                self.team_joined[r] += b - a
            return
        self._balanced(pop, first, new, T)

    def _balanced(self, pop: _Pop, first: np.ndarray, new: np.ndarray, T: int) -> None:
        """`balanced`, joiner by joiner while team sizes differ; once they are equal the rest
        go round and round from the first team, which is what `balanced` then picks."""
        team, alive = pop["team"], pop["alive"]
        n = int((first + new).max()) if len(first) else 0
        sizes = np.stack(
            [((team[:, :n] == k + 1) & alive[:, :n]).sum(axis=1) for k in range(T)], axis=1
        ).astype(np.int64)
        done = np.zeros(len(new), dtype=np.int64)
        while True:
            left = new - done
            uneven = (left > 0) & (sizes.max(axis=1) > sizes.min(axis=1))
            if not uneven.any():
                break
            rows = np.flatnonzero(uneven)  # one joiner in each of these runs, all at once
            pick = np.asarray(teams.balanced(sizes[rows]))
            team[rows, first[rows] + done[rows]] = pick + 1
            sizes[rows, pick] += 1
            done[rows] += 1
        for r in np.flatnonzero(new - done):
            a, b = int(first[r] + done[r]), int(first[r] + new[r])
            team[r, a:b] = teams.round_robin(np.arange(b - a), T) + 1

    # -- single-member audiences -------------------------------------------------------------

    def recipients(self, pop: _Pop, sl: Any, d: int, a: Action, alive: np.ndarray) -> np.ndarray:
        """Who a scheduled action reaches member by member: its group (or leaderboard) and
        `where:`, among the living."""
        env = self.env(pop, sl, d)
        mm = self.cx.mm
        if a.audience == Audience.TOP and a.top is not None:
            mask = self._top(pop, sl, env, a, alive)
        else:
            mask = self.group(env, a.audience) & alive
        if a.where is not None:
            mask &= mm.condition(a.where).mask(env)
        return mask

    def group(self, env: MemberEnv, audience: str) -> np.ndarray:
        """Members of a group audience: everyone, a tier, a segment (members.audience_mask's
        rule, on codes)."""
        tier = Audience.tier_of(audience)
        if tier is not None:
            vocab = self.cx.mm.vocabs["tier"]
            code = vocab.index(tier) if tier in vocab else -1
            return np.asarray(env["tier"] == code)
        seg = Audience.segment_of(audience)
        if seg is not None and seg in self.cx.pb.segments:
            return self.cx.mm.condition(self.cx.pb.segments[seg].when).mask(env)
        if seg is not None:
            return np.zeros(env.shape, dtype=bool)
        return np.ones(env.shape, dtype=bool)

    def _top(self, pop: _Pop, sl: Any, env: MemberEnv, a: Action, alive: np.ndarray) -> np.ndarray:
        top = a.top
        assert top is not None
        among = alive if top.among is None else alive & self.group(env, top.among)
        measure = np.asarray(env[top.by], dtype=float)
        if not top.teams:
            ids = np.arange(alive.shape[1])
            return np.asarray(ranking.top_members(measure, pop["join_day"][sl], ids, top.n, among))
        if "team" not in pop.arrays:
            return np.zeros(alive.shape, dtype=bool)
        T = len(self.cx.team_names)
        idx = pop["team"][sl].astype(np.int64) - 1
        scores = self._team_scores(idx, measure, T, among)
        best = ranking.top_teams(scores, top.n)  # (runs, n)
        return (idx[:, :, None] == best[:, None, :]).any(axis=2) & among

    def _team_scores(self, idx: np.ndarray, measure: np.ndarray, T: int, among: Any) -> Any:
        """ranking.team_scores per chunk (its sums over the members each chunk has alone)."""
        if self.rng.single:
            return ranking.team_scores(idx, measure, T, among)
        rows_w = zip(self.rng.rows, self.rng.widths, strict=True)
        return np.concatenate(
            [ranking.team_scores(idx[r, :w], measure[r, :w], T, among[r, :w]) for r, w in rows_w]
        )

    # -- workload ----------------------------------------------------------------------------

    def scheduled_work(
        self,
        pop: _Pop,
        sl: Any,
        d: int,
        due: Sequence[Sequence[Action]],
        alive: np.ndarray,
        idx: np.ndarray | None = None,
    ) -> None:
        """Staff work of the scheduled actions fired today: one per firing of an action with an
        owner (as `sop plan` counts it), one per member of the group for `for_each`. `due`:
        each run's fired actions, or with `idx` the distinct lists and each run's index."""
        runs_of = np.arange(len(due)) if idx is None else idx
        once = np.zeros((len(due), len(self.cx.roles)), dtype=np.float32)
        env = None
        for u, acts in enumerate(due):
            for a in acts:
                role = self.cx.role_index.get(a.owner or "")
                if role is None:
                    continue
                if a.for_each is None:
                    once[u, role] += 1
                    continue
                if env is None:
                    env = self.env(pop, sl, d)
                runs = np.flatnonzero(runs_of == u)
                members = self.group(env, a.for_each)[runs] & alive[runs]
                self.workload[runs, d, role] += members.sum(axis=1)
        if once.any():  # whole counts: the order they are added in does not matter
            self.workload[:, d, :] += once[runs_of]

    def event_work_run(self, r: int, d: int, tasks: Mapping[str, int], people: float) -> None:
        """Event-triggered staff tasks in run `r`: one per person the event happened to."""
        for owner, n in tasks.items():
            role = self.cx.role_index.get(owner)
            if role is not None:
                self.workload[r, d, role] += n * people

    # -- counters, points, milestones, redemptions -----------------------------------------------

    def slot(self, d: int) -> int:
        """The ledger bucket points earned on day `d` go to (its due day is set on first use)."""
        cx = self.cx
        if cx.expire is None:
            return 0
        b = (d // cx.width) % cx.lots
        self.lot_days[b] = (d // cx.width) * cx.width + cx.width - 1
        return b

    def earn(self, pop: _Pop, sl: Any, d: int, amount: np.ndarray) -> None:
        """Add `amount` points (per member, (runs, members)) to the ledger."""
        if "points" not in pop.arrays:
            return
        amount = np.asarray(amount, dtype=np.float32)
        if not amount.any():
            return
        pop["points"][sl] += amount
        pop["lots"][sl][..., self.slot(d)] += amount
        self.issued += self.rng.rowsums(amount)

    def earn_sparse(self, pop: _Pop, d: int, rows: np.ndarray, cols: np.ndarray, pts: Any) -> None:
        """Add points to the members at (rows, cols)."""
        if "points" not in pop.arrays or not len(rows):
            return
        pts = np.broadcast_to(np.asarray(pts, dtype=np.float32), rows.shape)
        np.add.at(pop["points"], (rows, cols), pts)
        np.add.at(pop["lots"][:, :, self.slot(d)], (rows, cols), pts)
        self.issued += np.bincount(rows, weights=pts, minlength=self.runs)

    def lapse(self, pop: _Pop, sl: Any, d: int) -> None:
        """Points whose bucket is `expire` days old lapse (program/points.py's rule)."""
        cx = self.cx
        if cx.expire is None or "lots" not in pop.arrays:
            return
        old = np.flatnonzero((d - self.lot_days) >= cx.expire)
        if not len(old):
            return
        lots = pop["lots"][sl]
        kept, gone = pp.lapse(lots[..., old], self.lot_days[old], d, cx.expire)
        lots[..., old] = kept
        pop["points"][sl] -= gone.astype(np.float32)
        self.lot_days[old] = EMPTY

    def redeem(
        self, pop: _Pop, rows: np.ndarray, cols: np.ndarray, item: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Members at (rows, cols) redeem `item`: those whose balance and the run's stock allow
        (earlier joiners first) spend its cost, oldest points first. Who did."""
        i = self.cx.item_index.get(item)
        if i is None or "points" not in pop.arrays or not len(rows):
            return rows[:0], cols[:0]
        it = self.cx.items[i]
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
        bal = pop["points"][rows, cols]
        affordable = pp.can_redeem(bal, it.cost)
        rows, cols = rows[affordable], cols[affordable]
        first = np.searchsorted(rows, rows, side="left")
        rank = np.arange(len(rows)) - first
        ok = pp.can_redeem(pop["points"][rows, cols], it.cost, self.stock[rows, i] - rank)
        rows, cols = rows[ok], cols[ok]
        if not len(rows):
            return rows, cols
        lots = pop["lots"][rows, cols]
        ring = self._oldest_first()
        lots[:, ring] = pp.spend(lots[:, ring], np.full(len(rows), float(it.cost)))
        pop["lots"][rows, cols] = lots
        pop["points"][rows, cols] -= np.float32(it.cost)
        per_run = np.bincount(rows, minlength=self.runs)
        self.stock[:, i] -= per_run
        self.spent += per_run * it.cost
        if self.redeemed_today is not None:
            self.redeemed_today[rows, cols] = True
        return rows, cols

    def _oldest_first(self) -> np.ndarray:
        return np.argsort(self.lot_days, kind="stable")

    def voluntary(
        self, pop: _Pop, sl: Any, alive: np.ndarray
    ) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Today's redemptions by members who can afford an item: each redeems with the
        scenario's daily chance, an item drawn uniformly among those they can afford."""
        cx = self.cx
        rate = cx.sc.points.redeem_per_day
        if not cx.items or rate <= 0 or "points" not in pop.arrays:
            return []
        bal = pop["points"][sl]
        rows, cols = np.nonzero(alive & (bal >= cx.items[0].cost))
        if not len(rows):
            return []
        go = self.rng.split_items(rows, lambda g, it: g.random(it.stop - it.start)) < rate
        rows, cols = rows[go], cols[go]
        costs = np.array([it.cost for it in cx.items], dtype=float)
        k = np.searchsorted(costs, bal[rows, cols], side="right")  # items it can afford
        draws = self.rng.split_items(rows, lambda g, it: g.random(it.stop - it.start))
        pick = np.minimum((draws * k).astype(np.int64), len(costs) - 1)
        out = []
        for i, it in enumerate(cx.items):
            sel = pick == i
            if sel.any():
                r, c = self.redeem(pop, rows[sel], cols[sel], it.id)
                out.append((it.id, r, c))
        return out

    def milestone_hits(
        self, pop: _Pop, sl: Any, d: int, alive: np.ndarray
    ) -> list[tuple[Any, np.ndarray]]:
        """Members whose counter crossed a milestone today (program/milestones.py's rule);
        every counter's value is kept for the next check."""
        if not self.cx.milestones:
            return []
        env = self.env(pop, sl, d)
        now = {c: np.asarray(env[c], dtype=np.float32) for c in self.cx.counters}
        out = []
        for m in self.cx.milestones:
            before = pop["ms_prev:" + m.counter][sl]
            fired = pop["ms_fired:" + m.action][sl]
            hit = np.asarray(crossed(before, now[m.counter], m.reaches, fired)) & alive
            out.append((m, hit))
        for c, v in now.items():
            pop["ms_prev:" + c][sl] = v
        return out

    # -- metrics -----------------------------------------------------------------------------

    def construct_metrics(
        self, pop: _Pop, sl: Any, d: int, alive: np.ndarray, joins: np.ndarray, env: MemberEnv
    ) -> dict[str, np.ndarray]:
        """The built-in metrics the playbook's channels, points, teams and admission add."""
        cx, out = self.cx, {}
        lo = max(0, d - defs.CHANNEL_WINDOW + 1)
        for code, c in enumerate(cx.channels):
            if c not in cx.pb.channels:
                continue
            out[f"{c}_joins"] = pc.trailing(
                self.channel_joins[:, : d + 1, code], defs.CHANNEL_WINDOW
            )
            out[f"{c}_share"] = defs.channel_share(
                self.channel_joins[:, : d + 1, code].sum(axis=1), joins
            )
        del lo
        if cx.pb.points is not None:
            out["points_issued"] = self.issued.copy()
            out["points_redeemed"] = self.spent.copy()
            out["points_outstanding"] = self.rng.rowsums(np.where(alive, pop["points"][sl], 0))
        if cx.pb.teams is not None:
            T = len(cx.team_names)
            if "team" in pop.arrays and T:
                idx = pop["team"][sl].astype(np.int64) - 1
                scores = self._team_scores(idx, np.asarray(env[cx.pb.teams.score], float), T, alive)
            else:
                scores = np.zeros((self.runs, 0))
            top, bottom = defs.team_extremes(scores)
            out["team_score_top"], out["team_score_bottom"] = top, bottom
            out["team_score_spread"] = defs.team_spread(top, bottom)
        if cx.pb.admission is not None:
            out["applications"] = pc.trailing(
                self.applications[:, : d + 1], defs.APPLICATIONS_WINDOW
            )
            out["approval_rate"] = defs.approval_rate(
                pc.trailing(self.approved[:, : d + 1], defs.APPROVAL_WINDOW),
                pc.trailing(self.decided[:, : d + 1], defs.APPROVAL_WINDOW),
            )
        return out

    def counted_metrics(
        self,
        pop: _Pop,
        sl: Any,
        d: int,
        alive: np.ndarray,
        events: Mapping[str, Any],
        left: np.ndarray,
        env: MemberEnv,
    ) -> dict[str, np.ndarray]:
        """Every counted metric's value today (program/counted.py), by channel where asked;
        by-channel values go to `by_channel`."""
        cx = self.cx
        if not cx.counted:
            return {}
        C = len(cx.channels)
        cell = None
        if any(m.by_channel for m in cx.counted.values()):
            cell = (np.arange(self.runs)[:, None] * C + pop["source"][sl]).ravel()
        out: dict[str, np.ndarray] = {}
        col = 0
        for m in cx.counted.values():
            by = cell if m.by_channel else None
            values = {
                which: self._count(count, (m.id, which), env, by, alive, events, left, d)
                for which, count in (("count", m.count), ("per", m.per))
                if count is not None
            }
            for k, code in enumerate(self._codes(m)):
                v = pc.value(
                    m, values["count"][:, k], values["per"][:, k] if "per" in values else None
                )
                if m.cumulative:
                    prev = self.cumulative.get((m.id, code))
                    v = v if prev is None else pc.keep_cumulative(prev, v)
                    self.cumulative[(m.id, code)] = np.asarray(v, dtype=float)
                if code < 0:
                    out[m.id] = v
                else:
                    self.by_channel[:, d, col] = v
                    col += 1
        return out

    def _tally(self, weights: np.ndarray, cell: np.ndarray | None) -> np.ndarray:
        """(runs, 1 + channels): the total of `weights` per run, then per channel."""
        if weights.dtype == bool:
            total = np.count_nonzero(weights, axis=1).astype(float)[:, None]
        else:
            total = weights.sum(axis=1, dtype=float)[:, None]
        if cell is None:
            return total
        C = len(self.cx.channels)
        per = np.bincount(cell, weights=weights.ravel(), minlength=self.runs * C)
        return np.concatenate([total, per.reshape(self.runs, C)], axis=1)

    def _count(
        self,
        count: Any,
        key: tuple[str, str],
        env: MemberEnv,
        cell: np.ndarray | None,
        alive: np.ndarray,
        events: Mapping[str, Any],
        left: np.ndarray,
        d: int,
    ) -> np.ndarray:
        """A count's value today, (runs, 1 + channels) with `cell` (by channel)."""
        who = self.cx.mm.condition(count.where).mask(env)
        K = 1 if cell is None else 1 + len(self.cx.channels)
        if count.of == CountOf.MEMBERS:
            return pc.count_value(count, current=self._tally(who & alive, cell))
        if count.of == CountOf.EVER:
            acc = self.ever.setdefault(key, np.zeros((self.runs, K)))
            acc += self._tally(who & left, cell)  # departed today: counted for good
            return pc.count_value(count, current=acc + self._tally(who & alive, cell))
        daily = self.daily.setdefault(key, np.zeros((self.runs, K, self.days + 1)))
        if count.of == CountOf.JOINS:
            daily[:, :, d] = self._tally(who & events["joined"], cell)
        elif count.event in ("apply", "approve", "reject"):
            arr = self.app_events.get(key)
            daily[:, :, d] = 0 if arr is None else arr[:, :, d]
        elif count.event == "invite" and "invite" not in events:
            daily[:, 0, d] = self.invites_total  # no one reads who sent them
        else:
            ev = events.get(count.event or "")
            if ev is not None:
                daily[:, :, d] = self._tally(np.where(who, ev, 0), cell)
        return np.asarray(pc.count_value(count, daily=daily[:, :, : d + 1]))

    def segment_sizes(self, d: int, alive: np.ndarray, env: MemberEnv) -> None:
        """Members of each segment at the close of day `d`."""
        if not self.cx.segments:
            return
        for j, s in enumerate(self.cx.segments):
            self.segments[:, d, j] = (self.group(env, f"segment:{s}") & alive).sum(axis=1)


class _Zeros:
    """Columns of a construct the playbook does not declare: zeros of the right kind."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def number(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=np.float32)

    def code(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=np.int8)

    def flag(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=bool)


def _column(pop: _Pop, name: str, sl: Any) -> Callable[[], Any]:
    return lambda: pop[name][sl]


def _fixed(values: np.ndarray) -> Callable[[], Any]:
    return lambda: values
