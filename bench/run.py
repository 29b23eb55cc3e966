"""Benchmark `sop run`: durable dispatches per second through the Runner, and firing lag.

    python bench/run.py [--n 20000] [--n1 2000] [--rounds 3] [--members 100000] [--window 120]
                        [--stores sqlite,postgres] [--skip-pg] [--skip-dispatch] [--skip-lag]
                        [--profile]

1. Dispatch rate. `--n` members join at one instant (ingested as `sop event` does, into a
   template database made once), so `--n` welcome occurrences are due together; each measured
   run is a fresh process on a fresh copy of that database (SQLite: a file copy; PostgreSQL: a
   database cloned from the template) and times one `Runner.tick()` that dispatches all of them
   to the `null` backend (idempotent, does nothing): rendering, member lookups, a claim and a
   record transaction per batch, everything the runner does. Batched (`--batch 200`, the
   default) against the baseline a runner without batching is, `--batch 1` (one claim and one
   record commit per dispatch), on `--n1` occurrences (the baseline is slow), and batched on the
   same `--n1` for a like-for-like ratio. Runs alternate A B B A, medians over `--rounds`.
   SQLite synchronous=FULL (the default); PostgreSQL with fsync on, started as the tests start
   theirs (tests/pgserver.py), when it is installed. Goals (issue #9): >= 5,000/s batched on
   SQLite, >= 4,000/s on PostgreSQL.

2. Firing lag. `--members` members join over one local day (Asia/Shanghai), ingested through
   `service.ingest` in batches of 1,000; each join sets off a welcome at once, a nudge after one
   hour of silence (a derived trigger) and a one-day anniversary. What was due before the
   measured window is put on the books as sent (set-up, not measured). Then a fresh process runs
   the Runner on a clock that advances with the wall clock (speed 1) for `--window` seconds
   around local midnight — so the daily gate check over all those members falls inside — and
   a recording backend notes the clock at each send: lag = that instant minus the due instant.
   Prints p50, p99 and max, and the slowest ticks; with `--profile`, runs the window again
   under cProfile and prints where the ticks' time goes. Goal: p99 < 1 s.

Prints figures; asserts nothing. Measured on whatever else the machine is doing: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests/pgserver.py

RUN_ID = "bench-run"
DAY = date(2027, 1, 4)
T_DUE = datetime(2027, 1, 4, 10, tzinfo=UTC)  # every welcome of part 1 is due then
ROUTE = "*=null"

PLAYBOOK = """\
playbook: bench-run
title: Runner benchmark
timezone: {tz}
community: {{type: other, platform: other, start: {day}}}
roles:
  ops: {{title: Ops, headcount: 1}}
backends:
  group: {{type: console}}
defaults: {{backend: group, owner: ops}}
stages:
  live:
    title: Live
    actions:
      yearly: {{cron: "0 9 1 6 *", do: post, text: yearly post}}
routines:
  welcome: {{on: member.joined, do: message, to: member, text: "欢迎 {{{{ member.name }}}}！"}}
  nudge: {{on: member.silent, for: 1h, do: message, to: member, text: "好久不见"}}
  anniversary: {{on: member.anniversary, at: [1d], do: message, to: member, text: "入群一天"}}
"""


def write_playbook(folder: Path, tz: str) -> Path:
    """The benchmark's playbook in `folder`."""
    path = folder / "bench-run.yaml"
    path.write_text(PLAYBOOK.format(tz=tz, day=DAY.isoformat()), encoding="utf-8")
    return path


def load_program(path: Path) -> Any:
    """The compiled playbook."""
    from sop.engine.program import Program
    from sop.engine.validate import load_playbook

    res = load_playbook(str(path))
    assert res.playbook is not None, [str(d) for d in res.diagnostics]
    return Program(res.playbook)


def join_events(members: int, at: Any) -> list[Any]:
    """`members` joined events; `at(i)` is member i's instant."""
    from sop.engine.run.store.base import EventRecord

    return [
        EventRecord(f"join-{i:06d}", "joined", f"m{i:06d}", at(i), {"name": f"成员{i}"})
        for i in range(members)
    ]


def create_run(program: Any, store: Any) -> None:
    """The run, started on DAY (as `sop run` would create it)."""
    from sop.engine.run.clock import VirtualClock
    from sop.engine.run.runner import Runner, RunOptions

    clock = VirtualClock(datetime(2027, 1, 4, tzinfo=UTC))
    Runner(program, store, {}, clock, options=RunOptions(start=DAY)).ensure_run()


def ingest_all(program: Any, store: Any, events: list[Any], batch: int = 1000) -> float:
    """Ingest in batches as `sop events import` does; seconds taken."""
    from sop.engine.run.service import ingest

    t = time.perf_counter()
    for i in range(0, len(events), batch):
        ingest(program, store, RUN_ID, events[i : i + batch], "bench")
    return time.perf_counter() - t


# -- 1. dispatch rate ------------------------------------------------------------------------


def one_dispatch(pb: str, url: str, batch: int) -> dict[str, Any]:
    """In a fresh process: one tick at T_DUE dispatching everything due; what it did, how fast."""
    from sop.engine.run.clock import VirtualClock
    from sop.engine.run.runner import RunOptions
    from sop.engine.run.service import close_runner, open_runner
    from sop.engine.run.store import open_store

    program = load_program(Path(pb))
    clock = VirtualClock(T_DUE)
    runner = open_runner(
        program, open_store(url), clock, routes=[ROUTE], options=RunOptions(start=DAY, batch=batch)
    )
    try:
        t = time.perf_counter()
        report = runner.tick()
        seconds = time.perf_counter() - t
    finally:
        close_runner(runner)
    return {"sent": report.sent, "seconds": seconds, "skipped": report.skipped, "dead": report.dead}


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench child failed: {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@dataclass
class Template:
    """A database holding a run whose `n` welcomes are all due at T_DUE, and how to copy it."""

    name: str
    n: int
    copy: Any  # () -> url of a fresh copy

    def measure(self, pb: Path, batch: int) -> float:
        """Dispatches per second of one cold run."""
        url = self.copy()
        got = _child("--one", str(pb), url, str(batch))
        if got["sent"] != self.n:
            raise RuntimeError(f"{self.name}: sent {got['sent']} of {self.n}: {got}")
        return float(got["sent"] / got["seconds"])


def sqlite_template(work: Path, program: Any, n: int, tag: str) -> Template:
    """A SQLite (synchronous=FULL) template with `n` due welcomes, copied per run."""
    from sop.engine.run.store import open_store

    path = work / f"template-{tag}.db"
    store = open_store(f"sqlite:///{path}")
    create_run(program, store)
    ingest_all(program, store, join_events(n, lambda i: T_DUE))
    store.close()
    copies = iter(range(1_000_000))

    def copy() -> str:
        target = work / f"copy-{tag}-{next(copies)}.db"
        shutil.copyfile(path, target)  # closed cleanly: the WAL is checkpointed into the file
        return f"sqlite:///{target}"

    return Template(f"SQLite FULL ({n:,})", n, copy)


def postgres_template(server: Any, program: Any, n: int, tag: str) -> Template:
    """A PostgreSQL template database with `n` due welcomes, cloned per run."""
    from sop.engine.run.store import open_store

    url = server.create_database()
    store = open_store(url)
    create_run(program, store)
    ingest_all(program, store, join_events(n, lambda i: T_DUE))
    store.close()
    source = url.rsplit("/", 1)[1]
    copies = iter(range(1_000_000))

    def copy() -> str:
        name = f"{source}_{tag}_{next(copies)}"
        server._admin.execute(f"CREATE DATABASE {name} TEMPLATE {source} STRATEGY WAL_LOG")
        return str(server.url(name))

    return Template(f"PostgreSQL ({n:,})", n, copy)


def dispatch_rates(args: argparse.Namespace, work: Path) -> None:
    """Part 1: print batched and unbatched rates, with same-run ratios."""
    pb = write_playbook(work, "UTC")
    program = load_program(pb)
    wanted = args.stores.split(",")
    stores: list[tuple[str, Any]] = [("sqlite", None)] if "sqlite" in wanted else []
    server = None
    if not args.skip_pg and "postgres" in wanted:
        try:
            from tests.pgserver import PgUnavailable, start_server

            server = start_server()
            stores.append(("postgres", server))
        except (ImportError, PgUnavailable) as e:
            print(f"PostgreSQL skipped: {e}")
    try:
        print(
            f"\n1. Durable dispatches per second, Runner.tick() to the null backend "
            f"(median of {args.rounds}, cold process and fresh database copy per run)"
        )
        for kind, srv in stores:
            t = time.perf_counter()
            if kind == "sqlite":
                big = sqlite_template(work, program, args.n, "big")
                small = sqlite_template(work, program, args.n1, "small")
            else:
                big = postgres_template(srv, program, args.n, "big")
                small = postgres_template(srv, program, args.n1, "small")
            print(f"   ({kind}: templates made in {time.perf_counter() - t:.1f} s)")
            rates: dict[str, list[float]] = {"big200": [], "small200": [], "small1": []}
            for r in range(args.rounds):
                order = ["small1", "small200", "big200"]
                for which in order if r % 2 == 0 else order[::-1]:
                    tpl = big if which == "big200" else small
                    batch = 1 if which == "small1" else 200
                    rates[which].append(tpl.measure(pb, batch))
            med = {k: statistics.median(v) for k, v in rates.items()}
            goal = 5000 if kind == "sqlite" else 4000
            print(
                f"   {big.name}: batch 200: {med['big200']:,.0f}/s  (goal >= {goal:,}/s;"
                f" runs {', '.join(f'{x:,.0f}' for x in rates['big200'])})"
            )
            print(
                f"   {small.name}: batch 200: {med['small200']:,.0f}/s, batch 1 (baseline):"
                f" {med['small1']:,.0f}/s, ratio {med['small200'] / med['small1']:.1f}x"
            )
    finally:
        if server is not None:
            server.stop()


# -- 2. firing lag ---------------------------------------------------------------------------


class WallClock:
    """A clock at `t0` when the wall clock read `w0`, advancing with it (speed 1)."""

    jumps = False

    def __init__(self, t0: datetime, w0: float) -> None:
        self.t0, self.w0 = t0, w0

    def now(self) -> datetime:
        """The instant now."""
        return self.t0 + timedelta(seconds=time.time() - self.w0)

    def sleep_until(self, t: datetime) -> None:
        """Sleep until `t`."""
        delay = (t - self.now()).total_seconds()
        if delay > 0:
            time.sleep(delay)


class Recorder:
    """An idempotent backend that notes, at each send, the clock and the due instant."""

    def __init__(self, name: str, clock: WallClock) -> None:
        from sop.engine.run.ports import Capabilities

        self.name = name
        self.capabilities = Capabilities(idempotent=True)
        self.clock = clock
        self.sends: list[tuple[str, float]] = []  # (action, lag in seconds)

    def send(self, delivery: Any) -> Any:
        """Note the lag; accept."""
        from sop.engine.run.ports import SendResult

        lag = (self.clock.now() - delivery.due_at).total_seconds()
        self.sends.append((delivery.action, lag))
        return SendResult.ok()

    def close(self) -> None:
        """Nothing to release."""


def lag_setup(
    work: Path, members: int, window: float, tag: str = "lag"
) -> tuple[Path, str, datetime, float]:
    """The lag store: members over the day, everything due before the window on the books."""
    from sop.engine.program import Lifecycle
    from sop.engine.run.codec import decode_lifecycle
    from sop.engine.run.members import derived_occurrences
    from sop.engine.run.runner import stage_clock
    from sop.engine.run.store import open_store
    from sop.engine.run.store.base import OccurrenceState

    pb = write_playbook(work, "Asia/Shanghai")
    program = load_program(pb)
    tz = program.tz
    day0 = datetime(DAY.year, DAY.month, DAY.day, tzinfo=tz)
    midnight = day0 + timedelta(days=1)
    start = midnight - timedelta(seconds=window / 2)
    path = work / f"{tag}.db"
    url = f"sqlite:///{path}"
    store = open_store(url)
    create_run(program, store)
    spacing = 86400 / members
    took = ingest_all(
        program, store, join_events(members, lambda i: day0 + timedelta(seconds=i * spacing))
    )
    run = store.get_run(RUN_ID)
    assert run is not None
    # the run as a runner that kept up would have left it at `start`: everything due before
    # is sent (nudges for silences before it inserted as sent), nothing after is touched
    lc = Lifecycle.restore(program, decode_lifecycle(dict(run.lifecycle)))
    stages = stage_clock(lc, midnight + timedelta(days=1))
    past = derived_occurrences(program, stages, store, RUN_ID, run.derived_until, start)
    saved = store.save_run(
        replace(run, scheduled_until=start, derived_until=start), occurrences=past
    )
    assert saved is not None
    store.close()
    import sqlite3

    db = sqlite3.connect(path)
    with db:
        us = int(start.timestamp() * 1_000_000)
        db.execute(
            "UPDATE occurrences SET state = ?, attempts = 1 WHERE due_at < ?",
            (str(OccurrenceState.SENT), us),
        )
    counts = dict(db.execute("SELECT state, COUNT(*) FROM occurrences GROUP BY state").fetchall())
    db.close()
    print(
        f"   set-up: {members:,} joins ingested in {took:.1f} s ({members / took:,.0f}/s);"
        f" occurrences {counts}"
    )
    return pb, url, start, window


def one_lag(pb: str, url: str, start_iso: str, window: float) -> dict[str, Any]:
    """In a fresh process: run on a wall-speed clock from `start` for `window` s; the lags."""
    from sop.engine.run.runner import Runner, RunOptions
    from sop.engine.run.store import open_store

    program = load_program(Path(pb))
    start = datetime.fromisoformat(start_iso)
    clock = WallClock(start, time.time())
    backend = Recorder("group", clock)
    store = open_store(url)
    runner = Runner(program, store, {"group": backend}, clock, options=RunOptions(start=DAY))
    ticks: list[tuple[float, str, int]] = []  # (seconds the tick took, its local time, sent)
    tick = runner.tick

    def timed() -> Any:
        t = time.perf_counter()
        r = tick()
        ticks.append(
            (time.perf_counter() - t, r.at.astimezone(program.tz).time().isoformat(), r.sent)
        )
        return r

    runner.tick = timed  # Runner.run calls self.tick()
    runner.run(start + timedelta(seconds=window))
    store.close()
    slow = sorted(ticks, reverse=True)[:5]
    return {"lags": backend.sends, "ticks": len(ticks), "slowest": slow}


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def firing_lag(args: argparse.Namespace, work: Path) -> None:
    """Part 2: print lag percentiles per action and overall."""
    print(
        f"\n2. Firing lag: {args.members:,} members, SQLite FULL, a clock at wall speed,"
        f" {args.window:.0f} s around local midnight"
    )
    pb, url, start, window = lag_setup(work, args.members, args.window)
    got = _child("--lag", str(pb), url, start.isoformat(), str(window))
    lags = [lag for _, lag in got["lags"]]
    if not lags:
        print("   nothing was dispatched in the window")
        return
    by: dict[str, list[float]] = {}
    for action, lag in got["lags"]:
        by.setdefault(action, []).append(lag)
    print(
        f"   {len(lags)} dispatches in {got['ticks']} ticks: lag p50 {_pct(lags, 0.5):.3f} s,"
        f" p99 {_pct(lags, 0.99):.3f} s, max {max(lags):.3f} s  (goal p99 < 1 s)"
    )
    for action, xs in sorted(by.items()):
        print(
            f"     {action:<12} {len(xs):>5}: p50 {_pct(xs, 0.5):.3f} s, p99"
            f" {_pct(xs, 0.99):.3f} s, max {max(xs):.3f} s"
        )
    slow = ", ".join(f"{s:.2f} s at {at} ({n} sent)" for s, at, n in got["slowest"])
    print(f"   slowest ticks: {slow}")
    if args.profile:
        import pstats

        pb, url, start, window = lag_setup(work, args.members, args.window, "profiled")
        stats = work / "lag.prof"
        _child("--lag", str(pb), url, start.isoformat(), str(window), str(stats))
        print("   where the ticks' time goes (cProfile, the same window again):")
        pstats.Stats(str(stats), stream=sys.stdout).sort_stats("cumulative").print_stats(
            r"engine/run", 14
        )


# -- the command -----------------------------------------------------------------------------


def main() -> None:
    """Parse options and measure (or be one measured child)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(one_dispatch(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--lag":
        profile = sys.argv[6] if len(sys.argv) > 6 else ""
        if profile:  # the same run under cProfile (slower), its stats to that file
            import cProfile

            prof = cProfile.Profile()
            got = prof.runcall(one_lag, sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
            prof.dump_stats(profile)
        else:
            got = one_lag(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
        print(json.dumps(got))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--n1", type=int, default=2_000, help="occurrences for the batch-1 baseline")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--window", type=float, default=120.0, help="seconds of real time measured")
    ap.add_argument("--stores", default="sqlite,postgres", help="which stores part 1 measures")
    ap.add_argument("--skip-pg", action="store_true", help="as --stores sqlite")
    ap.add_argument("--skip-lag", action="store_true")
    ap.add_argument("--skip-dispatch", action="store_true")
    ap.add_argument("--profile", action="store_true", help="run the lag part under cProfile too")
    args = ap.parse_args()
    print(f"bench/run.py on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="sop-bench-run-"))
    try:
        if not args.skip_dispatch:
            dispatch_rates(args, work)
        if not args.skip_lag:
            firing_lag(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
