"""Benchmark `simulate`: member-days per second, against SimPy and a minimal NumPy kernel.

    python bench/simulate.py [--members 100000] [--runs 32] [--days 90] [--workers 2]
    python bench/simulate.py --full      # 1,000 runs x 100,000 members x 180 days, peak memory

In one run it measures:
- the full model on the reference playbook and scenario (stages, gates, actions, tiers, events),
  with 1 and with --workers processes;
- a SimPy implementation of a simple version of the model (one process per member: speak with a
  heterogeneous probability, churn with a heterogeneous hazard, daily) — the usual way such
  agent models are written in Python;
- a minimal NumPy kernel doing only "one uniform draw and a compare per member-day": the
  memory-bandwidth ceiling of this machine for the same amount of data.
Goals (issue #4): >= 25 million member-days/s on 2 cores, >= 50x SimPy; the full 1,000 x 100,000
x 180 configuration within 2 GiB.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "playbooks" / "community-lifecycle.yaml"
SCENARIO = ROOT / "playbooks" / "scenarios" / "community-lifecycle.yaml"


def full_model(members: int, runs: int, days: int, workers: int) -> tuple[float, int]:
    """Member-days/s of `sop simulate` on the reference playbook with `members` seed users."""
    from sop.engine.sim.montecarlo import SimOptions, simulate
    from sop.engine.sim.scenario import load_scenario
    from sop.engine.validate import load_playbook

    pb = load_playbook(str(PLAYBOOK)).playbook
    sc = load_scenario(
        str(SCENARIO),
        [f"acquisition.seed_users={members}", "retention.alpha=0.5", "retention.beta=20"],
    )
    t = time.perf_counter()
    res = simulate(pb, sc, SimOptions(runs=runs, days=days, seed=1, workers=workers))
    dt = time.perf_counter() - t
    return res.member_days / dt, res.member_days


def simpy_model(members: int, days: int) -> float:
    """Member-days/s of a SimPy version: a process per member, one step a day."""
    import random

    import simpy

    env = simpy.Environment()
    rnd = random.Random(1)
    counter = {"member_days": 0, "speakers": 0}

    def member(env: simpy.Environment, p_speak: float, hazard: float):  # type: ignore[no-untyped-def]
        while True:
            counter["member_days"] += 1
            if rnd.random() < p_speak:
                counter["speakers"] += 1
            if rnd.random() < hazard:
                return
            yield env.timeout(1)

    for _ in range(members):
        env.process(
            member(env, rnd.betavariate(1.2, 4.0), 1 - (1 - rnd.betavariate(1, 1.5)) ** (1 / 30))
        )
    t = time.perf_counter()
    env.run(until=days)
    return counter["member_days"] / (time.perf_counter() - t)


def numpy_ceiling(members: int, days: int) -> float:
    """Member-days/s of the least a vectorised model can do: draw, compare, count."""
    rng = np.random.default_rng(1)
    p = rng.beta(1.2, 4.0, members).astype(np.float32)
    u = np.empty(members, dtype=np.float32)
    t = time.perf_counter()
    total = 0
    for _ in range(days):
        rng.random(out=u, dtype=np.float32)
        total += int(np.count_nonzero(u < p))
    return members * days / (time.perf_counter() - t)


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=32)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--simpy-members", type=int, default=5_000)
    ap.add_argument(
        "--full",
        action="store_true",
        help="also run 1,000 runs x 100,000 members x 180 days (minutes)",
    )
    args = ap.parse_args()

    one, md1 = full_model(args.members, args.runs, args.days, 1)
    many, _ = full_model(args.members, args.runs, args.days, args.workers)
    sp = simpy_model(args.simpy_members, args.days)
    ceiling = numpy_ceiling(args.members * 8, args.days)
    print(
        f"full model, reference playbook, {args.runs} runs x {args.members:,} seed members x"
        f" {args.days} days ({md1:,} member-days)"
    )
    print(f"  1 worker : {one / 1e6:6.2f} M member-days/s")
    print(f"  {args.workers} workers: {many / 1e6:6.2f} M member-days/s")
    print(f"SimPy simple model ({args.simpy_members:,} members): {sp / 1e6:6.3f} M member-days/s")
    print(f"NumPy ceiling (draw + compare, 1 core): {ceiling / 1e6:6.1f} M member-days/s")
    print(
        f"ratios: full/SimPy {many / sp:,.0f}x (1 worker {one / sp:,.0f}x);"
        f" 1-worker full/ceiling {one / ceiling:.2f}"
    )
    print(
        f"goals: >= 25 M/s on 2 cores: {'met' if many >= 25e6 else 'NOT met'};"
        f" >= 50x SimPy: {'met' if many / sp >= 50 else 'NOT met'}"
    )
    if args.full:
        t = time.perf_counter()
        rate, md = full_model(100_000, 1000, 180, args.workers)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"full: 1,000 runs x 100,000 members x 180 days: {md:,} member-days in"
            f" {time.perf_counter() - t:.0f} s ({rate / 1e6:.1f} M/s); peak RSS parent"
            f" {peak:.0f} MiB, largest worker {child:.0f} MiB"
        )


if __name__ == "__main__":
    main()
