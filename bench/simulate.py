"""Benchmark `simulate`: against the commit before issue 13, member-days per second, against SimPy
and a minimal NumPy kernel.

    python bench/simulate.py [--members 100000] [--runs 32] [--days 90] [--workers 2]
    python bench/simulate.py --base 68a73ad --pairs 3   # the before/after part (default)
    python bench/simulate.py --no-base                  # skip it
    python bench/simulate.py --full      # 1,000 runs x 100,000 members x 180 days, peak memory

In one run it measures:
- the default `sop simulate playbooks/community-lifecycle.yaml --runs 400 --days 180 --workers 2`
  as a whole process, cold, in this tree and at commit --base (a git worktree in the temp folder,
  its package installed beside it with `pip install --no-deps --target`; each tree simulates its
  own reference playbook), in pairs whose order alternates; the medians of wall and CPU time
  (the process and its workers) and their ratios. Goal (issue #13): <= 0.25x the time;
- the full model on the reference playbook and scenario (stages, gates, actions, tiers, events),
  with 1 and with --workers processes, with its CPU time (the machine may be shared: wall time
  alone would measure the neighbours); goal (issue #13): >= 100 M member-days/s on 2 workers;
- a SimPy implementation of a simple version of the model (one process per member: speak with a
  heterogeneous probability, churn with a heterogeneous hazard, daily) — the usual way such
  agent models are written in Python;
- a minimal NumPy kernel doing only "one uniform draw and a compare per member-day": the
  memory-bandwidth ceiling of this machine for the same amount of data.
Goals (issue #4): >= 25 million member-days/s on 2 cores, >= 50x SimPy; the full 1,000 x 100,000
x 180 configuration within 2 GiB.

The compiled day (engine/sim/fused.py, numba) is compiled once per installation and kept in
numba's on-disk cache, which every `sop simulate` after the first one shares. The timed runs
use that warm cache (the bench fills it first); the cost of compiling it, paid by the first
simulate after an install or an upgrade, is printed on its own line: a small simulate with an
empty cache folder (NUMBA_CACHE_DIR) against the same with that folder filled.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "playbooks" / "community-lifecycle.yaml"
SCENARIO = ROOT / "playbooks" / "scenarios" / "community-lifecycle.yaml"


def _cpu() -> float:
    """CPU seconds of this process and of its waited-for children (the workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def base_tree(commit: str) -> tuple[Path, Path]:
    """(work tree, folder to put on PYTHONPATH) of `commit`: a git worktree and its package
    installed beside it (made once, kept in the temp folder)."""
    tmp = Path(tempfile.gettempdir())
    tree, site = tmp / f"sop-bench-{commit}", tmp / f"sop-bench-{commit}-site"
    if not (tree / "pyproject.toml").is_file():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit],
            check=True,
            capture_output=True,
        )
    if not (site / "sop" / "engine").is_dir():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(site),
                str(tree),
            ],
            check=True,
        )
    return tree, site


def this_tree() -> Path:
    """A folder whose `sop` is this work tree, whatever the environment has installed."""
    link = Path(tempfile.mkdtemp(prefix="sop-bench-here-"))
    (link / "sop").symlink_to(ROOT, target_is_directory=True)
    return link


def one_command(tree: Path, path: Path, args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of `python -m sop simulate ...` in `tree`, as a fresh process.

    Both trees keep their bytecode, as an installed `sop` does: a PYTHONDONTWRITEBYTECODE in
    the environment would have every run compile the modules changed since the last .pyc (the
    tree being worked on) but not the other's, installed with its bytecode."""
    env = {**os.environ, "PYTHONPATH": str(path)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [sys.executable, "-m", "sop", "simulate", "playbooks/community-lifecycle.yaml", *args]
    c0, t0 = _cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if done.returncode not in (0, 1):  # 1: a gate or expect: verdict, still a full forecast
        raise SystemExit(f"{' '.join(cmd)} in {tree} failed:\n{done.stderr[-2000:]}")
    return wall, cpu


def before_after(commit: str, pairs: int) -> None:
    """The default reference simulate, here and at `commit`: paired, alternating, medians."""
    args = ["--runs", "400", "--days", "180", "--workers", "2", "--format", "json"]
    tree, site = base_tree(commit)
    here = this_tree()
    base: list[tuple[float, float]] = []
    now: list[tuple[float, float]] = []
    for t, p in ((tree, site), (ROOT, here)):  # untimed: each tree's bytecode written, as installed
        one_command(t, p, ["--runs", "8", "--days", "10", "--workers", "1", "--format", "json"])
    for i in range(pairs):
        order = [("base", tree, site), ("now", ROOT, here)]
        for name, t, p in order if i % 2 == 0 else order[::-1]:
            (base if name == "base" else now).append(one_command(t, p, args))
    bw, bc = (statistics.median(x[k] for x in base) for k in (0, 1))
    nw, nc = (statistics.median(x[k] for x in now) for k in (0, 1))
    print(
        "sop simulate playbooks/community-lifecycle.yaml --runs 400 --days 180 --workers 2"
        f" (whole process, cold; {pairs} alternating pairs, medians)"
    )
    print(f"  at {commit} (before issue 13): wall {bw:6.2f} s   CPU {bc:6.2f} s")
    print(f"  this tree               : wall {nw:6.2f} s   CPU {nc:6.2f} s")
    print(
        f"  ratio now/before: wall {nw / bw:.2f}x, CPU {nc / bc:.2f}x"
        f" (goal <= 0.25x: {'met' if nw / bw <= 0.25 else 'NOT met'} on wall time,"
        f" {'met' if nc / bc <= 0.25 else 'NOT met'} on CPU time)"
    )
    print(
        "  pairs (wall s before/now): "
        + ", ".join(f"{b[0]:.1f}/{n[0]:.1f}" for b, n in zip(base, now, strict=True))
    )


def full_model(members: int, runs: int, days: int, workers: int) -> tuple[float, int, float]:
    """(member-days/s, member-days, CPU seconds) of `sop simulate` on the reference playbook
    with `members` seed users."""
    from sop.engine.sim.montecarlo import SimOptions, simulate
    from sop.engine.sim.scenario import load_scenario
    from sop.engine.validate import load_playbook

    pb = load_playbook(str(PLAYBOOK)).playbook
    sc = load_scenario(
        str(SCENARIO),
        [f"acquisition.seed_users={members}", "retention.alpha=0.5", "retention.beta=20"],
    )
    c, t = _cpu(), time.perf_counter()
    res = simulate(pb, sc, SimOptions(runs=runs, days=days, seed=1, workers=workers))
    dt = time.perf_counter() - t
    return res.member_days / dt, res.member_days, _cpu() - c


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


def cold_compile() -> None:
    """The first simulate's compile cost: a small simulate with an empty numba cache, then
    the same with the cache it filled (each a fresh process); also fills this tree's cache."""
    here = this_tree()
    args = ["--runs", "8", "--days", "10", "--workers", "1", "--format", "json"]
    one_command(ROOT, here, args)  # this tree's own cache, warm for the timed runs below
    with tempfile.TemporaryDirectory(prefix="sop-bench-numba-") as cache:
        os.environ["NUMBA_CACHE_DIR"] = cache
        try:
            cold = one_command(ROOT, here, args)
            warm = one_command(ROOT, here, args)
        finally:
            del os.environ["NUMBA_CACHE_DIR"]
    print(
        "numba cache: timed runs use the warm on-disk cache (as every simulate after the first);"
        f" first simulate after an install (8 runs x 10 days, empty cache): wall {cold[0]:.2f} s,"
        f" CPU {cold[1]:.2f} s; the same with the cache filled: wall {warm[0]:.2f} s, CPU"
        f" {warm[1]:.2f} s; compile cost about {cold[1] - warm[1]:.1f} CPU s"
    )


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=32)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--simpy-members", type=int, default=5_000)
    ap.add_argument("--base", default="68a73ad", help="the commit before issue 13")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--no-base", action="store_true", help="skip the before/after part")
    ap.add_argument(
        "--full",
        action="store_true",
        help="also run 1,000 runs x 100,000 members x 180 days (minutes)",
    )
    args = ap.parse_args()

    cold_compile()
    if not args.no_base:
        before_after(args.base, args.pairs)
    one, md1, cpu1 = full_model(args.members, args.runs, args.days, 1)
    many, _, cpun = full_model(args.members, args.runs, args.days, args.workers)
    sp = simpy_model(args.simpy_members, args.days)
    ceiling = numpy_ceiling(args.members * 8, args.days)
    print(
        f"full model, reference playbook, {args.runs} runs x {args.members:,} seed members x"
        f" {args.days} days ({md1:,} member-days)"
    )
    print(f"  1 worker : {one / 1e6:6.2f} M member-days/s ({md1 / cpu1 / 1e6:6.2f} M per CPU-s)")
    print(
        f"  {args.workers} workers: {many / 1e6:6.2f} M member-days/s"
        f" ({md1 / cpun / 1e6:6.2f} M per CPU-s; {args.workers} x that:"
        f" {args.workers * md1 / cpun / 1e6:6.1f} M/s on idle cores)"
    )
    print(f"SimPy simple model ({args.simpy_members:,} members): {sp / 1e6:6.3f} M member-days/s")
    print(f"NumPy ceiling (draw + compare, 1 core): {ceiling / 1e6:6.1f} M member-days/s")
    print(
        f"ratios: full/SimPy {many / sp:,.0f}x (1 worker {one / sp:,.0f}x);"
        f" 1-worker full/ceiling {one / ceiling:.2f}"
    )
    print(
        f"goals: >= 25 M/s on 2 cores: {'met' if many >= 25e6 else 'NOT met'};"
        f" >= 50x SimPy: {'met' if many / sp >= 50 else 'NOT met'};"
        f" >= 100 M/s on {args.workers} workers (issue #13):"
        f" {'met' if many >= 100e6 else 'NOT met'}"
        f" ({'met' if args.workers * md1 / cpun >= 100e6 else 'NOT met'} per CPU time)"
    )
    if args.full:
        t = time.perf_counter()
        rate, md, _ = full_model(100_000, 1000, 180, args.workers)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"full: 1,000 runs x 100,000 members x 180 days: {md:,} member-days in"
            f" {time.perf_counter() - t:.0f} s ({rate / 1e6:.1f} M/s); peak RSS parent"
            f" {peak:.0f} MiB, largest worker {child:.0f} MiB"
        )


if __name__ == "__main__":
    main()
