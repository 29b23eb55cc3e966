"""Benchmark `plan`: 180 days of the reference playbook for 100 communities, in-process.

    python bench/plan.py [--communities 100] [--days 180]

Each community starts one day after the previous one, so schedules are not simply repeated, and
each is planned as one `sop plan` process plans it: a fresh Program and every engine cache
(parsed crons, instants, durations, keys) emptied first, so no community rides on the work done
for the one before. Baseline measured in the same run: plain croniter iteration of the playbook's
cron actions over the same windows, with no stages, delays, quiet hours or keys. Goal
(issue #3): under 1 s in total.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from croniter import croniter
from sop.engine.lang.model import Cron
from sop.engine.plan.timeline import PlanOptions, make_plan
from sop.engine.program import Program
from sop.engine.validate import load_playbook

REFERENCE = Path(__file__).resolve().parent.parent / "playbooks" / "community-lifecycle.yaml"


def clear_caches() -> None:
    """Empty every functools cache in the engine, as a new process starts with them empty."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("sop.engine") or module is None:
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--communities", type=int, default=100)
    ap.add_argument("--days", type=int, default=180)
    args = ap.parse_args()
    t0 = time.perf_counter()
    pb = load_playbook(str(REFERENCE)).playbook
    assert pb is not None
    program = Program(pb)
    t_compile = time.perf_counter() - t0

    first = date(2026, 12, 1)
    total = 0
    t_plan = 0.0
    for i in range(args.communities):
        clear_caches()
        t = time.perf_counter()
        tl = make_plan(Program(pb), PlanOptions(start=first + timedelta(days=i), days=args.days))
        t_plan += time.perf_counter() - t
        total += len(tl.occurrences)

    # the former measure, for comparison: one Program, caches warm from the communities before
    program = Program(pb)
    t = time.perf_counter()
    for i in range(args.communities):
        make_plan(program, PlanOptions(start=first + timedelta(days=i), days=args.days))
    t_warm = time.perf_counter() - t

    crons = [a.schedule.expr for a in pb.actions.values() if isinstance(a.schedule, Cron)]
    t = time.perf_counter()
    base_total = 0
    for i in range(args.communities):
        start = datetime.combine(first + timedelta(days=i), datetime.min.time(), program.tz)
        end = start + timedelta(days=args.days)
        for expr in crons:
            it = croniter(expr, start)
            while it.get_next(datetime) < end:
                base_total += 1
    t_base = time.perf_counter() - t

    print(f"load + compile: {t_compile * 1000:.1f} ms")
    print(
        f"plan: {args.communities} communities x {args.days} days = {total:,} occurrences in"
        f" {t_plan * 1000:.1f} ms, each with a fresh Program and cold caches"
        f" ({t_plan / args.communities * 1000:.2f} ms per community,"
        f" {total / t_plan:,.0f} occurrences/s)"
    )
    print(
        f"the same with one Program and warm caches (not what a `sop plan` process sees):"
        f" {t_warm * 1000:.1f} ms ({t_warm / args.communities * 1000:.2f} ms per community)"
    )
    print(
        f"baseline (croniter over the {len(crons)} cron actions only, every day of every"
        f" community): {base_total:,} firings in {t_base * 1000:.1f} ms"
    )
    print(
        f"ratio plan / baseline: {t_plan / t_base:.2f}x; goal < 1 s in total (issue #3, set for"
        f" warm caches): cold {'met' if t_plan < 1 else 'NOT met'},"
        f" warm {'met' if t_warm < 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
