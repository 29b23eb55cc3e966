"""The kernel's per-member day, compiled: one pass over each run's members does what a dozen
NumPy passes over (runs, members) arrays did, with no temporaries.

The laws are those of docs/simulation.md and of the modules that state them: speaking with the
tenure decay and the day's capped lifts (dynamics.speak_lift), participation, conversion and the
interactions a participant writes (dynamics.talks), the retention law's daily hazard
(retention.daily_hazard) times the fading, capped churn multiplier (effects.churn_multiplier).
tests/test_sim_fused.py holds these functions to the NumPy definitions.

The members' daily uniforms are made here, each from a counter under its run's day key
(`_unif`, streams.Streams.day_keys); the per-run draws are made by samplers.py under keys of the
same kind, so a chunk's results do not depend on the chunks beside it. numba compiles
these functions once per installation and keeps them in its on-disk cache (`cache=True`, beside
the module, or in the user's cache folder when the package folder is read-only); only
`sop simulate` imports this module.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numba import njit

from . import jit_cache  # noqa: F401  (numba's cache folder, set before anything compiles)
from .effects import EVENT_SPEAK_FADE

# bits of the day's per-member flags (`flags`)
SPEAK, UGC, VIOL, PART, PAYS, LEAVE = 1, 2, 4, 8, 16, 32
SILENT_NEVER = -30000
_FADE = np.float32(EVENT_SPEAK_FADE)
# no NaN or infinity reaches the day's arithmetic (every probability is clipped, every count
# finite): min/max and compares compile to plain instructions; no reassociation, so the
# arithmetic is NumPy's
_NO_NAN = {"nnan", "ninf", "nsz"}


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = np.float32(2.0**-24)


@njit(inline="always")
def _unif(key: Any, j: Any) -> Any:  # pragma: no cover - compiled
    """Member slot j's uniform in [0, 1) (float32, 24 bits) under a run's day key: SplitMix64
    at counter j (streams.Streams.day_keys makes the keys)."""
    z = key + (np.uint64(j) + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    z = z ^ (z >> np.uint64(31))
    return np.float32(z >> np.uint64(40)) * _TO_UNIT


@njit(cache=True, nogil=True)
def uniforms(keys: Any, width: int) -> Any:  # pragma: no cover - compiled
    """The uniforms `activity` draws, as arrays (3, runs, width): for tests and tools."""
    R = keys.shape[0]
    out = np.empty((3, R, width), dtype=np.float32)
    for s in range(3):
        for r in range(R):
            k = keys[r, s]
            for j in range(width):
                out[s, r, j] = _unif(k, j)
    return out


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_NO_NAN)
def churn_multiplier(state: Any, factor: Any, lo: Any, hi: Any) -> Any:  # pragma: no cover
    """effects.churn_multiplier of one member (float32)."""
    x = (np.float32(1) + state) * factor - np.float32(1)
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


@njit(inline="always", error_model="numpy", fastmath=_NO_NAN)
def _member(  # one member of `_segment`, inlined in each of its loops
    r: int,
    j: Any,
    sp: Any,
    sc: Any,
    alive: Any,
    events: Any,
    speak7: Any,
    part7: Any,
    silent: Any,
    ugc: Any,
    payments: Any,
    violations: Any,
    streak: Any,
    rate: Any,
    churn_fx: Any,
    flags: Any,
    k0: Any,
    k1: Any,
    k2: Any,
    talk: bool,
    p_talk: Any,
    chk: bool,
    remove_at: int,
    fx0: Any,
    fx1: Any,
    fx2: Any,
) -> Any:  # pragma: no cover - compiled
    one = np.float32(1)
    zero = np.float32(0)
    a = np.int64(alive[r, j])
    lift = min(max(events[r, j] + sc[5], -sc[0]), sc[0])
    events[r, j] = events[r, j] * _FADE
    p = min(max(sp + lift, zero), one) * np.float32(a)  # sp: propensity x tenure decay
    x = _unif(k0, j)
    spk = np.int64(x < p)
    posted = np.int64(x < p * sc[2])
    viol = spk & np.int64(x >= p * sc[3])
    part_p = sc[6]
    part_p = one - (one - part_p) * (one - fx0) if fx0 != zero else part_p
    ugc_p = sc[7] + fx1
    conv = sc[4] + sc[8] + fx2
    y = _unif(k1, j)
    pp = min(part_p * p * sc[1], one)
    took = np.int64(y >= one - pp)
    posted |= took & np.int64(y >= one - pp * ugc_p)
    if talk:  # a participant writes in the activity (dynamics.talks)
        spk |= took & np.int64(_unif(k2, j) < p_talk)
    ugc[r, j] += posted
    speak7[r, j] = ((speak7[r, j] << 1) & 0x7F) | spk
    part7[r, j] = ((part7[r, j] << 1) & 0x7F) | took
    silent[r, j] = (silent[r, j] + 1) * (1 - spk)
    old = streak[r, j]
    streak[r, j] = (old + 1) * took if chk else old
    s = churn_fx[r, j]
    moved = min(max((one + s) * sc[9] - one, sc[11]), sc[12])
    s = moved if sc[9] != one else s
    h = rate[r, j] * (one + s)
    churn_fx[r, j] = s * sc[10]
    stay = np.int64(y >= h)
    leave = (1 - stay) & a
    pays = stay & np.int64(y < h + conv) & a
    new_payer = pays & np.int64(payments[r, j] == 0)
    payments[r, j] += pays
    v = violations[r, j] + viol
    violations[r, j] = v
    leave |= np.int64(remove_at > 0) & np.int64(v >= remove_at) & a
    flags[r, j] = spk | (posted << 1) | (viol << 2) | (took << 3) | (pays << 4) | (leave << 5)
    return posted, new_payer


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_NO_NAN)
def _segment(
    r: int,
    j0: int,
    j1: int,
    seff: Any,
    sc: Any,
    alive: Any,
    events: Any,
    speak7: Any,
    part7: Any,
    silent: Any,
    ugc: Any,
    payments: Any,
    violations: Any,
    streak: Any,
    rate: Any,
    churn_fx: Any,
    flags: Any,
    k0: Any,
    k1: Any,
    k2: Any,
    talk: bool,
    p_talk: Any,
    chk: bool,
    remove_at: int,
) -> Any:  # pragma: no cover - compiled
    """`activity` for members j0 .. j1 of run r (`seff[j]`: member j's propensity times its
    tenure decay today) whose scheduled effects are the same in every tier (`sc`: cap, 1 / mean
    propensity, ugc per speak, 1 - violations per speak, base conversion, then the scheduled
    speak, participation, ugc, conversion and churn factor, churn decay, floor - 1, ceil - 1),
    with the plain hazard and churn state, the same chance `p_talk` for every participant to
    write in an activity (where `talk`) and no effects member by member (no one-day event
    effect pending): the same arithmetic without a gather, a call or a conditional store, so
    the compiler vectorises it. Returns (new payers, posts)."""
    paid = np.int64(0)
    posts = np.int64(0)
    zero = np.float32(0)
    # unsigned indices: no negative-index wraparound (a gather), so the loop vectorises
    for k in range(j1 - j0):
        j = np.uint64(j0 + k)
        got = _member(
            r, j, seff[j], sc, alive, events, speak7, part7, silent, ugc, payments, violations,
            streak, rate, churn_fx, flags, k0, k1, k2, talk, p_talk, chk, remove_at, zero, zero,
            zero,
        )  # fmt: skip
        posts += got[0]
        paid += got[1]
    return paid, posts


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_NO_NAN)
def activity(
    d: int,
    n: Any,
    alive: Any,
    join_day: Any,
    speak: Any,
    events: Any,
    speak7: Any,
    part7: Any,
    silent: Any,
    ugc: Any,
    payments: Any,
    violations: Any,
    streak: Any,
    tier: Any,
    rate: Any,
    churn_fx: Any,
    quit: Any,
    ev_day: Any,
    ev_on: Any,
    flags: Any,
    decay: Any,
    run_f: Any,
    tables: Any,
    reach: Any,
    n0: int,
    reach_on: Any,
    keys: Any,
    talk_on: Any,
    delta: Any,
    law: Any,
    options: Any,
    checkin: Any,
    ever_paid: Any,
    ugc_day: Any,
    by_day: Any,
) -> None:  # pragma: no cover - compiled; tests/test_sim_fused.py checks it against NumPy
    """One day of every living member of each run: speaking, posting, violations,
    participation, interactions, payments and leaving, drawn from each run's day keys
    `keys[r]` (three uniforms a member: speaking; participation, paying and leaving;
    interactions where `talk_on[r]`; see `_unif`); writes the day's `flags` (bits SPEAK ..
    LEAVE).

    run_f[r] = (speak cap, 1 / mean propensity, ugc per speak, violations per speak, base
    conversion); tables[k, r, tier] = scheduled (speak, participation, ugc, conversion,
    interactions, churn factor); reach[k, r, j] the same per member (j < n0) where reach_on[k];
    law = (mode 0 rate, 1 -expm1(-rate*delta), 2 -expm1(-rate/period); period); options =
    (ev_day pending, churn on, quitters on, remove_at, churn decay, hazard floor, hazard ceil);
    ev_day[r, j] holds member j's one-day event effects where ev_on[r, j] (read, then cleared);
    by_day[r, jd]: run r's slots of members who joined on day jd (slots are in join order).
    A run whose day needs none of the per-member extras goes through `_segment`.
    """
    R = n.shape[0]
    mode = int(law[0])
    period = np.float32(law[1])
    day_on = options[0] != 0
    churn_on = options[1] != 0
    quit_on = options[2] != 0
    remove_at = int(options[3])
    cdecay = np.float32(options[4])
    lo = np.float32(options[5] - 1)
    hi = np.float32(options[6] - 1)
    one = np.float32(1)
    zero = np.float32(0)
    K = delta.shape[1]
    DL = decay.shape[1]
    for r in range(R):
        cap = run_f[r, 0]
        inv_mean = run_f[r, 1]
        ugc_ps = run_f[r, 2]
        viol_keep = one - run_f[r, 3]
        base_conv = run_f[r, 4]
        dr = r if decay.shape[0] > 1 else 0
        lr = r if delta.shape[0] > 1 else 0
        talk_r = talk_on[r]
        chk = checkin[r]
        k0, k1, k2 = keys[r, 0], keys[r, 1], keys[r, 2]
        paid = np.int64(0)
        posts = np.int64(0)
        plain = (
            mode == 0
            and not quit_on
            and churn_on
            and not (n0 > 0 and reach_on.any())
            and by_day[r, : d + 1].sum() == n[r]
        )
        for k in range(6):
            for t in range(1, tables.shape[2]):
                if tables[k, r, t] != tables[k, r, 0]:
                    plain = False
        if plain:
            sc = np.empty(13, dtype=np.float32)
            sc[0], sc[1], sc[2], sc[3], sc[4] = cap, inv_mean, ugc_ps, viol_keep, base_conv
            for k in range(4):
                sc[5 + k] = tables[k, r, 0]
            sc[9], sc[10], sc[11], sc[12] = tables[5, r, 0], cdecay, lo, hi
            inter_r = tables[4, r, 0]
            p_talk = -np.expm1(-inter_r)
            # each member's propensity times its tenure decay today, by join day (the slots are
            # in join order), so one vectorised loop serves the whole run
            end = n[r]
            seff = np.empty(end, dtype=np.float32)
            j = 0
            for jd in range(d + 1):
                cnt = by_day[r, jd]
                dec = decay[dr, min(d - jd, DL - 1)]
                for q in range(j, j + cnt):
                    seff[q] = speak[r, q] * dec
                j += cnt
            # the members with a one-day event effect pending (ev_on) one by one, the
            # stretches between them in the vectorised loop
            m = 0
            while True:
                s0 = m
                if day_on:
                    while m < end and ev_on[r, m] == 0:
                        m += 1
                else:
                    m = end
                if m > s0:
                    got = _segment(
                        r, s0, m, seff, sc, alive, events, speak7, part7, silent, ugc, payments,
                        violations, streak, rate, churn_fx, flags, k0, k1, k2, talk_r, p_talk,
                        chk, remove_at,
                    )  # fmt: skip
                    paid += got[0]
                    posts += got[1]
                if m >= end:
                    break
                fx0, fx1, fx2 = ev_day[r, m, 0], ev_day[r, m, 1], ev_day[r, m, 2]
                fx3 = ev_day[r, m, 3]
                ev_day[r, m, :] = zero
                ev_on[r, m] = 0
                p_m = -np.expm1(-(inter_r + fx3)) if fx3 != zero else p_talk
                got = _member(
                    r, np.uint64(m), seff[m], sc, alive, events, speak7, part7, silent, ugc,
                    payments, violations, streak, rate, churn_fx, flags, k0, k1, k2, talk_r,
                    p_m, chk, remove_at, fx0, fx1, fx2,
                )  # fmt: skip
                posts += got[0]
                paid += got[1]
                m += 1
            ever_paid[r] += paid
            ugc_day[r] = posts
            continue
        for j in range(n[r]):
            # the departed draw nothing (p = 0) and neither leave nor pay: no branch on them
            a = np.int64(alive[r, j])
            t = tier[r, j]
            inr = j < n0
            # -- speaking: propensity x tenure decay + the day's lifts, capped
            age = min(max(d - join_day[r, j], 0), DL - 1)
            lift = events[r, j] + tables[0, r, t]
            if inr and reach_on[0]:
                lift += reach[0, r, j]
            lift = min(max(lift, -cap), cap)
            events[r, j] = events[r, j] * _FADE
            p = min(max(speak[r, j] * decay[dr, age] + lift, zero), one) * np.float32(a)
            x = _unif(k0, j)
            # booleans as 0/1 integers: the draws make every branch a coin toss (no branches)
            spk = np.int64(x < p)
            posted = np.int64(x < p * ugc_ps)
            viol = spk & np.int64(x >= p * viol_keep)
            # -- participation, one-day event effects, interactions
            part_p = tables[1, r, t]
            ugc_p = tables[2, r, t]
            conv = base_conv + tables[3, r, t]
            inter = tables[4, r, t]
            if inr:
                if reach_on[1]:
                    part_p = one - (one - part_p) * (one - reach[1, r, j])
                if reach_on[2]:
                    ugc_p += reach[2, r, j]
                if reach_on[3]:
                    conv += reach[3, r, j]
                if reach_on[4]:
                    inter += reach[4, r, j]
            if day_on and ev_on[r, j] != 0:
                ev_on[r, j] = 0
                fx0 = ev_day[r, j, 0]
                if fx0 != zero:
                    part_p = one - (one - part_p) * (one - fx0)
                ugc_p += ev_day[r, j, 1]
                conv += ev_day[r, j, 2]
                inter += ev_day[r, j, 3]
                ev_day[r, j, 0] = zero
                ev_day[r, j, 1] = zero
                ev_day[r, j, 2] = zero
                ev_day[r, j, 3] = zero
            y = _unif(k1, j)
            pp = min(part_p * p * inv_mean, one)
            took = np.int64(y >= one - pp)
            posted |= took & np.int64(y >= one - pp * ugc_p)
            if talk_r:
                spk |= took & np.int64(_unif(k2, j) < -np.expm1(-inter))
            posts += posted
            ugc[r, j] += posted
            speak7[r, j] = ((speak7[r, j] << 1) & 0x7F) | spk
            part7[r, j] = ((part7[r, j] << 1) & 0x7F) | took
            silent[r, j] = (silent[r, j] + 1) * (1 - spk)
            if chk:
                streak[r, j] = (streak[r, j] + 1) * took
            # -- the hazard: the retention law's, times the effects' fading multiplier
            lam = rate[r, j]
            if mode == 1:
                tt = age if age < K else K - 1
                h = -np.expm1(-lam * np.float32(delta[lr, tt]))
            elif mode == 2:
                h = -np.expm1(-lam * (one / period))
            else:
                h = lam
            if quit_on and quit[r, j]:
                left = period - np.float32(d - join_day[r, j])
                if left > zero:
                    h = min(one, one / max(left, np.float32(1e-6)))
            h = np.float32(h)
            if churn_on:
                s = churn_fx[r, j]
                factor = tables[5, r, t]
                if factor != one:
                    s = churn_multiplier(s, factor, lo, hi)
                if inr and reach_on[5]:
                    factor = reach[5, r, j]
                    if factor != one:
                        s = churn_multiplier(s, factor, lo, hi)
                h = h * (one + s)
                churn_fx[r, j] = s * cdecay
            leave = np.int64(y < h) & a
            pays = (1 - np.int64(y < h)) & np.int64(y < h + conv) & a
            paid += pays & np.int64(payments[r, j] == 0)
            payments[r, j] += pays
            violations[r, j] += viol
            if remove_at > 0:
                leave |= np.int64(violations[r, j] >= remove_at) & a
            flags[r, j] = (
                spk | (posted << 1) | (viol << 2) | (took << 3) | (pays << 4) | (leave << 5)
            )
        ever_paid[r] += paid
        ugc_day[r] = posts


@njit(cache=True, nogil=True, error_model="numpy")
def depart(
    n: Any, flags: Any, alive: Any, join_day: Any, silent: Any, hist: Any, left: Any
) -> None:  # pragma: no cover - compiled
    """The day's leavers (flag LEAVE) leave: their join day's count drops, they never "fall
    silent"; `left[r]` counts them."""
    for r in range(n.shape[0]):
        k = 0
        for j in range(n[r]):
            if flags[r, j] & 32:
                alive[r, j] = False
                hist[r, join_day[r, j]] -= 1
                silent[r, j] = SILENT_NEVER
                k += 1
        left[r] = k


@njit(cache=True, nogil=True, error_model="numpy")
def counts(
    n: Any,
    flags: Any,
    alive: Any,
    speak7: Any,
    part7: Any,
    tier: Any,
    payments: Any,
    pop7: Any,
    core_tier: int,
    vip_tier: int,
    out: Any,
) -> None:  # pragma: no cover - compiled
    """Per run, of the members alive at the close of the day: (members, speakers, took part
    this week, core, vip, paying). With core_tier < 0, core and vip are by weekly
    interactions (>= 3, >= 5)."""
    for r in range(n.shape[0]):
        members = speakers = week = core = vip = paying = 0
        for j in range(n[r]):
            if not alive[r, j]:
                continue
            members += 1
            if flags[r, j] & 1:
                speakers += 1
            p7 = part7[r, j]
            if p7 > 0:
                week += 1
            if payments[r, j] > 0:
                paying += 1
            if core_tier >= 0:
                t = tier[r, j]
                if t >= core_tier:
                    core += 1
                if t >= vip_tier:
                    vip += 1
            else:
                w = pop7[speak7[r, j]] + pop7[p7]
                if w >= 3:
                    core += 1
                if w >= 5:
                    vip += 1
        out[r, 0] = members
        out[r, 1] = speakers
        out[r, 2] = week
        out[r, 3] = core
        out[r, 4] = vip
        out[r, 5] = paying


@njit(cache=True, nogil=True, error_model="numpy")
def matching(
    attr: Any, values: Any, n: Any, alive: Any, flags: Any, bit: int, width: int
) -> Any:  # pragma: no cover - compiled
    """Members whose `attr` (runs, capacity) equals one of `values`, among the living (and,
    with `bit`, those whose day's `flags` have it): (flat positions in the (runs, width) day
    view, in row-major order as np.flatnonzero gives them; the index of the value each
    matched)."""
    R = n.shape[0]
    total = 0
    for r in range(R):
        total += n[r]
    pos = np.empty(total, dtype=np.int64)
    which = np.empty(total, dtype=np.int64)
    lo = values.min()
    span = np.uint64(values.max() - lo)
    # each value's index by its offset from the least (-1: no trigger's), so a member costs a
    # subtraction, a compare and, within the span, one lookup
    index = np.full(int(span) + 1, -1, dtype=np.int64)
    for i in range(values.shape[0] - 1, -1, -1):
        index[values[i] - lo] = i
    k = np.int64(0)
    for r in range(R):
        row = attr[r]
        for j in range(n[r]):
            off = np.uint64(np.int64(row[j]) - lo)
            if off > span:  # most members: outside every trigger's values
                continue
            i = index[off]
            ok = (i >= 0) & alive[r, j] & ((bit == 0) | ((flags[r, j] & bit) != 0))
            # written always, kept when it matched: no branch on a coin toss
            pos[k] = r * width + j
            which[k] = i
            k += np.int64(ok)
    return pos[:k].copy(), which[:k].copy()


@njit(cache=True, nogil=True, error_model="numpy")
def joined_on(days: Any, n: Any, by_day: Any, alive: Any, width: int) -> Any:  # pragma: no cover
    """The living members who joined on one of `days` (ascending; -1 or less: none), found
    by the runs' slots in join order (`by_day[r, jd]` of run r's slots joined on day jd, the
    slots of each day after those of earlier days): (flat positions in the (runs, width) day
    view in row-major order; the index in `days` of each one's join day). Runs whose slots
    are not in join order (by_day does not add up to n) are not served: (positions, which,
    served runs)."""
    R = n.shape[0]
    D = by_day.shape[1]
    total = 0
    served = np.zeros(R, dtype=np.bool_)
    for r in range(R):
        s = 0
        for jd in range(D):
            s += by_day[r, jd]
        served[r] = s == n[r]
        if served[r]:
            for i in range(days.shape[0]):
                if 0 <= days[i] < D:
                    total += by_day[r, days[i]]
    pos = np.empty(total, dtype=np.int64)
    which = np.empty(total, dtype=np.int64)
    k = 0
    for r in range(R):
        if not served[r]:
            continue
        start = 0
        at = 0
        for jd in range(D):
            while at < days.shape[0] and days[at] < jd:
                at += 1
            cnt = by_day[r, jd]
            if at < days.shape[0] and days[at] == jd:
                for j in range(start, start + cnt):
                    if alive[r, j]:
                        pos[k] = r * width + j
                        which[k] = at
                        k += 1
            start += cnt
    return pos[:k].copy(), which[:k].copy(), served


@njit(cache=True, nogil=True, error_model="numpy")
def living_counts(alive: Any, n: Any, runs: Any) -> Any:  # pragma: no cover - compiled
    """How many of run r's members are alive, for each r in `runs`."""
    out = np.zeros(runs.shape[0], dtype=np.int64)
    for i in range(runs.shape[0]):
        r = runs[i]
        c = 0
        for j in range(n[r]):
            c += alive[r, j]
        out[i] = c
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def living_at(alive: Any, n: Any, runs: Any, size: Any, idx: Any) -> Any:  # pragma: no cover
    """The flat positions (r * capacity + slot) of the living members numbered `idx` (among
    their run's living, in slot order): `size[i]` of them in turn for each run runs[i]."""
    cap = alive.shape[1]
    out = np.empty(idx.shape[0], dtype=np.int64)
    k = 0
    for i in range(runs.shape[0]):
        if size[i] == 0:
            continue
        r = runs[i]
        slots = np.empty(n[r], dtype=np.int64)
        m = np.int64(0)
        for j in range(n[r]):
            slots[m] = j  # written always, kept when alive: no branch on a coin toss
            m += np.int64(alive[r, j])
        for _ in range(size[i]):
            out[k] = r * cap + slots[idx[k]]
            k += 1
    return out


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_NO_NAN)
def reached(
    flat: Any,
    width: int,
    churn_on: bool,
    churn_fx: Any,
    mult: Any,
    lo: Any,
    hi: Any,
    events: Any,
    lift: Any,
    ev_msgs: Any,
    msgs: Any,
    ev_day: Any,
    ev_on: Any,
    day: Any,
) -> None:  # pragma: no cover - compiled; tests/test_sim_fused.py checks it against NumPy
    """What an event's plain rules do to the members it reached (`flat`: positions in the
    (runs, width) day view): the churn multiplier moved by `mult[r]` (effects.churn_multiplier;
    without `churn_on`, no churn state), `lift[r]` added to the speaking lift, `msgs[r]`
    messages counted, the one-day effects `day[r]` combined into `ev_day` (the first as
    independent chances, the rest added; an empty `day`: none) and the member marked in
    `ev_on` (activity reads `ev_day` of marked members only)."""
    one = np.float32(1)
    day_on = day.shape[0] > 0
    for i in range(flat.shape[0]):
        f = flat[i]
        r = f // width
        j = f - r * width
        m = mult[r]
        if churn_on and m != one:
            x = (one + churn_fx[r, j]) * m - one
            churn_fx[r, j] = lo if x < lo else (hi if x > hi else x)
        if lift[r] != 0:
            events[r, j] += lift[r]
        ev_msgs[r, j] += msgs[r]
        if day_on:
            ev_on[r, j] = 1
            ev_day[r, j, 0] = one - (one - ev_day[r, j, 0]) * (one - day[r, 0])
            for k in range(1, 4):
                ev_day[r, j, k] += day[r, k]


@njit(cache=True, nogil=True, error_model="numpy")
def hazard(
    d: int, rate: Any, join_day: Any, quit: Any, delta: Any, mode: int, period: float
) -> Any:  # pragma: no cover - compiled
    """The retention law's hazard of members (runs, members) as `activity` computes it (for
    tests: retention.daily_hazard is the NumPy definition)."""
    R, W = rate.shape
    out = np.empty((R, W), dtype=np.float32)
    one = np.float32(1)
    per = np.float32(period)
    K = delta.shape[1]
    for r in range(R):
        lr = r if delta.shape[0] > 1 else 0
        for j in range(W):
            age = d - join_day[r, j]
            if age < 0:
                age = 0
            lam = rate[r, j]
            if mode == 1:
                tt = age if age < K else K - 1
                h = -np.expm1(-lam * np.float32(delta[lr, tt]))
            elif mode == 2:
                h = -np.expm1(-lam * (one / per))
            else:
                h = lam
            if quit.shape[1] > 1 and quit[r, j]:
                left = per - np.float32(d - join_day[r, j])
                if left > 0:
                    h = min(one, one / max(left, np.float32(1e-6)))
            out[r, j] = h
    return out


def f32(x: Any, shape: tuple[int, ...]) -> np.ndarray:
    """`x` (a scalar, a column or an array) as a C-contiguous float32 array of `shape`."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.float32), shape))


_NO_U8 = np.zeros((1, 1), np.uint8)


def compiled_before() -> bool:
    """Whether numba's cache holds the kernel's functions (else the next simulation compiles
    them first: several CPU seconds once per installation). True when it cannot tell."""
    try:
        funcs: tuple[Any, ...] = (
            activity,
            depart,
            counts,
            matching,
            reached,
            joined_on,
            living_counts,
            living_at,
        )
        from . import samplers

        funcs += samplers.KERNEL
        return all(os.path.exists(f._cache._cache_file._index_path) for f in funcs)
    except AttributeError:  # another numba's internals: assume compiled rather than alarm
        return True


def warm() -> None:
    """Load (or compile) every function the kernel calls, with the argument types it passes, so
    a simulation afterwards touches no cache file (the fuzz harness imports this way)."""
    R, W, T = 1, 2, 1
    f2 = np.zeros((R, W), np.float32)
    i16 = np.zeros((R, W), np.int16)
    u8 = np.zeros((R, W), np.uint8)
    b2 = np.zeros((R, W), np.bool_)
    n = np.zeros(R, np.int64)
    for extra in (False, True):  # without and with the dynamics' member arrays
        churn = f2 if extra else np.zeros((1, 1), np.float32)
        quit = b2 if extra else np.zeros((1, 1), np.bool_)
        ev_day = np.zeros((R, W, 4) if extra else (1, 1, 4), np.float32)
        activity(
            0, n, b2, i16, f2, f2, u8, u8, i16, i16, i16, i16, i16,
            np.zeros((R, W), np.int8), f2, churn, quit, ev_day, u8 if extra else _NO_U8, u8,
            np.zeros((1, 3), np.float32), np.zeros((R, 5), np.float32),
            np.zeros((6, R, T), np.float32), np.zeros((6, 1, 1), np.float32), 0,
            np.zeros(6, np.bool_), np.zeros((R, 3), np.uint64), np.zeros(R, np.bool_),
            np.zeros((1, 1), np.float32), np.zeros(2), np.zeros(7), np.zeros(R, np.bool_),
            np.zeros(R), np.zeros(R, np.int64), np.zeros((R, 3), np.int64),
        )  # fmt: skip
    depart(n, u8, b2, i16, i16, np.zeros((R, 3)), np.zeros(R, np.int64))
    matching(i16, np.zeros(1, np.int64), n, b2, u8, 0, W)
    joined_on(np.zeros(1, np.int64), n, np.zeros((R, 3), np.int64), b2, W)
    z1 = np.zeros(1, np.int64)
    living_counts(b2, n, z1)
    living_at(b2, n, z1, z1, z1)
    r1 = np.zeros(R, np.float32)
    reached(
        np.zeros(1, np.int64), W, True, f2, r1, np.float32(0), np.float32(0), f2, r1,
        np.zeros((R, W), np.int32), np.zeros(R, np.int32), np.zeros((R, W, 4), np.float32), u8,
        np.zeros((R, 4), np.float32),
    )  # fmt: skip
    pop7 = np.zeros(256, np.uint8)
    counts(
        n, u8, b2, u8, u8, np.zeros((R, W), np.int8), i16, pop7, -1, -1, np.zeros((R, 6), np.int64)
    )
    from . import samplers

    samplers.warm()
