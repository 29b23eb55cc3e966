"""Benchmark `sop serve`: signed member events per second through HTTP into a durable store.

    python bench/ingest.py [--seconds 5] [--clients 32] [--procs 2] [--batch 100] [--rounds 3]

The server is `serve()` as `sop serve` runs it — uvicorn, HMAC-checked bodies, group commit —
in its own process, on a fresh SQLite store in a temporary folder (synchronous=FULL, the
default: every 200 is durable). The load comes from other processes (`--procs`), each with
`--clients / --procs` threads holding one keep-alive connection each and posting signed events
back to back for `--seconds`:
- single: one event per request (the shape of a chat platform's webhook);
- batch: `--batch` events per request (an importer, a platform's bulk export).
Events are a realistic mix on the reference playbook: each member's first event is a join (which
inserts its welcome occurrences), the next nine are messages.

Baseline measured in the same run: the naive ingest a user would write first, one
`service.ingest` call (one durable transaction) per event in a loop, on its own fresh store.
Rounds alternate baseline, single, batch; figures are medians over rounds. Goal (issue #9):
>= 2,000 events/s through HTTP.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import math
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from sop.engine.program import Program
from sop.engine.run import service
from sop.engine.run.clock import VirtualClock
from sop.engine.run.members import parse_event
from sop.engine.run.runner import Runner
from sop.engine.run.store import open_store
from sop.engine.validate import load_playbook

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "playbooks" / "community-lifecycle.yaml"
SECRET = b"bench-secret-8c1d4e2f"
START = datetime(2026, 12, 1, 1, tzinfo=UTC)
AT = "2026-12-02T10:00:00+08:00"  # inside the run: joins fire their welcome rules


def program() -> Program:
    pb = load_playbook(str(PLAYBOOK)).playbook
    assert pb is not None
    return Program(pb)


def new_store(folder: str, name: str) -> tuple[str, str]:
    """A fresh SQLite store with the reference run in it: (URL, run id)."""
    url = f"sqlite:///{folder}/{name}.db"
    store = open_store(url)
    run = Runner(program(), store, {}, VirtualClock(START)).ensure_run()
    store.close()
    return url, run.id


def event(tag: str, n: int) -> dict[str, str]:
    """The n-th event of a sender: a join for every tenth, else a message of that member."""
    member = f"{tag}-m{n // 10}"
    kind = "joined" if n % 10 == 0 else "message"
    return {"id": f"{tag}-{n}", "type": kind, "member": member, "at": AT}


# -- the server process ----------------------------------------------------------------------


def run_server(url: str, run_id: str) -> None:
    """`sop serve` on the store, on a free port; prints the events URL."""
    from sop.engine.run.serve import serve

    store = open_store(url)
    serve(
        program(), store, run_id, "127.0.0.1", 0, os.environ["SOP_EVENTS_SECRET"].encode(),
        announce=lambda u: print(u, flush=True),
    )  # fmt: skip
    store.close()


def start_server(url: str, run_id: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "SOP_EVENTS_SECRET": SECRET.decode()}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--server", url, run_id],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    events_url = proc.stdout.readline().strip().removeprefix("events: ")
    if not events_url.startswith("http://"):
        proc.kill()
        raise SystemExit("the server did not start (its error is above)")
    return proc, events_url


# -- the load processes ----------------------------------------------------------------------


def client(
    events_url: str, tag: str, batch: int, until: float, out: list[tuple[int, list[float]]],
    errors: list[str],
) -> None:  # fmt: skip
    """Post signed bodies back to back on one keep-alive connection until `until`."""
    try:
        out.append(post_until(events_url, tag, batch, until))
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")


def post_until(events_url: str, tag: str, batch: int, until: float) -> tuple[int, list[float]]:
    parts = urlsplit(events_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    n, sent, latencies = 0, 0, []
    while time.perf_counter() < until:
        items = [event(tag, n + i) for i in range(batch)]
        n += batch
        body = json.dumps(items[0] if batch == 1 else {"events": items}).encode()
        digest = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Sop-Signature": f"sha256={digest}"}
        t0 = time.perf_counter()
        conn.request("POST", parts.path, body, headers)
        response = conn.getresponse()
        answer = response.read()
        latencies.append(time.perf_counter() - t0)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {answer[:200]!r}")
        sent += json.loads(answer)["accepted"]
    conn.close()
    return sent, latencies


def load_process(
    events_url: str, tag: str, threads: int, batch: int, start: float, seconds: float, q: mp.Queue
) -> None:
    """`threads` clients from one process; puts (accepted, latencies, errors) on `q`."""
    out: list[tuple[int, list[float]]] = []
    errors: list[str] = []
    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)
    until = time.perf_counter() + seconds
    workers = [
        threading.Thread(target=client, args=(events_url, f"{tag}-{t}", batch, until, out, errors))
        for t in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    q.put((sum(s for s, _ in out), [x for _, lat in out for x in lat], errors))


@dataclass(frozen=True)
class Phase:
    """One load phase: throughput, latency, and the server's CPU per event."""

    rate: float  # events/s accepted
    p50: float  # ms per request
    p99: float
    cpu_us: float  # server CPU µs per event while loaded (all its threads), nan if unknown


def cpu_seconds(pid: int) -> float:
    """CPU seconds a process has used, all threads (Linux /proc; nan elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def through_http(
    folder: str, name: str, clients: int, procs: int, batch: int, seconds: float
) -> Phase:
    """One load phase against a fresh server and store."""
    url, run_id = new_store(folder, name)
    server, events_url = start_server(url, run_id)
    try:
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()
        start = time.time() + 1.0  # every load process is up before any sends
        jobs = [
            ctx.Process(
                target=load_process,
                args=(events_url, f"{name}-p{p}", clients // procs, batch, start, seconds, q),
            )
            for p in range(procs)
        ]
        for j in jobs:
            j.start()
        time.sleep(max(0.0, start - time.time()))
        cpu0 = cpu_seconds(server.pid)
        results = [q.get(timeout=seconds + 120) for _ in jobs]
        cpu = cpu_seconds(server.pid) - cpu0
        for j in jobs:
            j.join()
    finally:
        server.terminate()
        server.communicate(timeout=60)
    failed = [e for r in results for e in r[2]]
    if failed:
        raise SystemExit(f"{name}: {len(failed)} clients failed, e.g. {failed[0]}")
    accepted = sum(r[0] for r in results)
    latencies = sorted(x for r in results for x in r[1])
    store = open_store(url)
    stored = len(store.events(run_id))
    store.close()
    if stored != accepted:
        raise SystemExit(f"{name}: {accepted} accepted but {stored} stored")
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return Phase(accepted / seconds, p50, p99, cpu / max(accepted, 1) * 1e6)


def naive(folder: str, name: str, seconds: float) -> float:
    """Events/s of one `service.ingest` call (one durable transaction) per event."""
    url, run_id = new_store(folder, name)
    store = open_store(url)
    prog = program()
    received = datetime.now(UTC)
    n = 0
    until = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < until:
        e = parse_event(event(name, n), prog.tz, received)
        service.ingest(prog, store, run_id, [e], "bench")
        n += 1
    elapsed = time.perf_counter() - t0
    store.close()
    return n / elapsed


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--procs", type=int, default=2, help="load processes sharing the clients")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the stores go (default: a temp folder)")
    ap.add_argument("--server", nargs=2, metavar=("URL", "RUN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.server:
        run_server(*args.server)
        return
    print(
        f"{os.cpu_count()} CPUs; {args.clients} keep-alive clients in {args.procs} processes;"
        f" {args.seconds:g} s per phase; SQLite synchronous=FULL; uvicorn http={http_impl()}"
    )
    base: list[float] = []
    single: list[Phase] = []
    batch: list[Phase] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for r in range(args.rounds):
            base.append(naive(folder, f"naive{r}", min(args.seconds, 3.0)))
            single.append(
                through_http(folder, f"one{r}", args.clients, args.procs, 1, args.seconds)
            )
            batch.append(
                through_http(folder, f"bat{r}", args.clients, args.procs, args.batch, args.seconds)
            )
            print(
                f"round {r + 1}: naive {base[-1]:,.0f}/s  single {single[-1].rate:,.0f}/s"
                f"  batch {batch[-1].rate:,.0f}/s",
                flush=True,
            )
    b = statistics.median(base)
    print(f"\nmedians over {args.rounds} rounds")
    print(f"  naive, one transaction per event   {b:>7,.0f} events/s")
    for label, rows in (
        (" 1 event per request ", single),
        (f"{args.batch} events per request", batch),
    ):
        rate = statistics.median(p.rate for p in rows)
        cpu = statistics.median(p.cpu_us for p in rows)
        print(
            f"  HTTP, {label}    {rate:>7,.0f} events/s ({rate / b:.1f}x naive)"
            f"  p50 {statistics.median(p.p50 for p in rows):.1f} ms"
            f"  p99 {statistics.median(p.p99 for p in rows):.1f} ms"
            f"  server CPU {cpu:.0f} µs/event (~{1e6 / cpu:,.0f} events/s per server core)"
        )


def http_impl() -> str:
    """Which HTTP parser uvicorn picks here ("auto": httptools when installed, else h11)."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


if __name__ == "__main__":
    main()
