"""A runner killed with SIGKILL mid-delivery loses nothing and, where it cannot know, says so.

The short form of `bench/crash.py` (which kills 50 times): a real runner process delivering to a
real loopback webhook receiver (tests/sinks.py) is killed a few times at seeded random moments
and restarted on the same SQLite store, then run once more to a fixed instant. With a receiver
that dedupes by key every due occurrence arrives and is `sent` in the books; with one that does
not, nothing arrives twice and every due occurrence is `sent` (and arrived once) or `uncertain`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _load_drill():
    """bench/crash.py, the drill shared with the long run (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("sop_bench_crash", ROOT / "bench" / "crash.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


crash = _load_drill()

KILLS = 4


def run_drill(tmp_path: Path, idempotent: bool, seed: int) -> Any:
    cfg = crash.DrillConfig(tmp_path, idempotent, kills=KILLS, seed=seed, speed=240.0)
    result = crash.drill(cfg)
    print("\n".join(result.lines()))  # the counts, shown with -s or on failure
    return result


def test_killed_runner_with_an_idempotent_receiver_delivers_every_due_occurrence(tmp_path):
    r = run_drill(tmp_path, idempotent=True, seed=11)
    assert r.kills == KILLS  # (whether one lands mid-batch is timing: it does most runs)
    assert r.due > 100
    assert r.problems == []
    assert r.uncertain == 0
    assert r.delivered >= r.due  # every due key arrived (later ones may have too)


def test_killed_runner_with_a_plain_receiver_never_sends_twice_and_holds_the_doubtful(tmp_path):
    r = run_drill(tmp_path, idempotent=False, seed=12)
    assert r.problems == []
    assert r.kills == KILLS
    assert r.due > 100
    assert r.deliveries == r.delivered  # no key arrived twice
    assert r.repeats == 0


class _Idempotent:
    """An idempotent backend that keeps what it was sent."""

    name = "hook"

    def __init__(self) -> None:
        from sop.engine.run.ports import Capabilities

        self.capabilities = Capabilities(idempotent=True)
        self.sent: list[str] = []

    def send(self, delivery: Any) -> Any:
        from sop.engine.run.ports import SendResult

        self.sent.append(delivery.key)
        return SendResult.ok()

    def close(self) -> None:
        pass


def test_a_runner_killed_while_recovering_leaves_nothing_uncertain(tmp_path):
    """Recovery is one transaction: expired claims on an idempotent backend go back to pending
    in the same commit that expires them, so no runner can die between the two."""
    from datetime import timedelta

    from sop.engine.program import Program
    from sop.engine.run.clock import VirtualClock
    from sop.engine.run.runner import Runner, RunOptions
    from sop.engine.run.store import open_store
    from sop.engine.run.store.base import NewOccurrence, OccurrenceState
    from sop.engine.validate import load_playbook

    path = tmp_path / "drill.yaml"
    path.write_text(crash.playbook_text(1), encoding="utf-8")
    pb = load_playbook(str(path)).playbook
    assert pb is not None
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    now = crash.ORIGIN + timedelta(minutes=5, seconds=30)
    wall = [now]  # the lease clock, moved by hand
    backend = _Idempotent()
    runner = Runner(Program(pb), store, {"hook": backend}, VirtualClock(now),
                    options=RunOptions(start=crash.START), lease_clock=lambda: wall[0])  # fmt: skip
    runner.ensure_run()
    keys = [f"crash-drill/tick-0/2027-01-04T00:0{m}:00Z" for m in range(5)]
    due = [crash.ORIGIN + timedelta(minutes=m) for m in range(5)]
    store.add_occurrences(crash.RUN_ID, [
        NewOccurrence(k, "tick-0", "live", "post", None, "everyone", "ops", "hook", t, t)
        for k, t in zip(keys, due, strict=True)
    ])  # fmt: skip
    # runner 1 claims them and is killed before recording anything
    assert len(store.claim(crash.RUN_ID, now, 10, wall[0] + timedelta(seconds=2), "one")) == 5
    # runner 2 recovers them in one commit (resend: the backend is idempotent) and is killed
    wall[0] += timedelta(seconds=5)
    recovered = store.expire_leases(crash.RUN_ID, wall[0], resend=["hook"])
    assert {o.state for o in recovered} == {OccurrenceState.PENDING}
    # runner 3 finds them pending, not uncertain, and sends each once
    wall[0] += timedelta(seconds=5)
    runner.tick()
    states = {k: store.get_occurrence(crash.RUN_ID, k).state for k in keys}
    store.close()
    assert states == dict.fromkeys(keys, OccurrenceState.SENT)
    assert all(backend.sent.count(k) == 1 for k in keys)


def test_the_drill_sees_a_lost_delivery(tmp_path, monkeypatch):
    """The checks are not vacuous: an occurrence dropped from the books is reported missing."""
    real_check = crash._check

    def drop_one(program, pb, state, *rest):
        import sqlite3

        db = sqlite3.connect(state.removeprefix("sqlite:///"))
        with db:
            db.execute(
                "DELETE FROM occurrences WHERE key ="
                " (SELECT key FROM occurrences WHERE action = 'welcome' ORDER BY due_at LIMIT 1)"
            )
        db.close()
        real_check(program, pb, state, *rest)

    monkeypatch.setattr(crash, "_check", drop_one)
    cfg = crash.DrillConfig(tmp_path, False, kills=1, seed=3, speed=240.0)
    r = crash.drill(cfg)
    assert any(": not in the store" in p for p in r.problems)
    assert any("arrived, but the store does not know it" in p for p in r.problems)
