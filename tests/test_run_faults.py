"""Faults end to end: the runner, the real webhook backend and a loopback HTTP server.

Each fault class is handled as docs/delivery.md says, nothing is lost, and dead letters and
uncertain deliveries are visible in `sop status`. Also: metric sources feeding gates.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from sop.engine.core.schedule import local_midnight
from sop.engine.run.clock import VirtualClock
from sop.engine.run.ports import MetricSourceError
from sop.engine.run.runner import RunOptions
from sop.engine.run.service import close_runner, open_runner, status
from sop.engine.run.sources import open_source
from sop.engine.run.store import open_store
from sop.engine.run.store.base import OccurrenceState
from werkzeug import Request, Response

from .test_run import program_of, write

PLAYBOOK = """\
playbook: faults
timezone: Asia/Shanghai
roles: {ops: {headcount: 1}}
backends:
  hook: {type: webhook, url: "${env:HOOK_URL}"}
  staff: {type: tasks}
defaults: {backend: hook, staff_backend: staff, owner: ops, retries: 2}
stages:
  only:
    duration: {max: 30d}
    actions:
"""
FAULTS = ["ok", "e500", "e429", "errcode", "bad-request", "slow"]  # slow last: one server thread


def playbook(tmp_path: Path) -> Path:
    lines = [
        f'      {f}: {{do: post, day: 0, time: "10:{i:02d}", text: "{f}"}}'
        for i, f in enumerate(FAULTS)
    ]
    return write(tmp_path, PLAYBOOK + "\n".join(lines) + "\n")


def test_each_fault_is_handled_by_its_class_and_shown_in_status(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    program = program_of(playbook(tmp_path))
    seen: dict[str, int] = {}

    def handler(request: Request) -> Response:
        body = json.loads(request.get_data())
        action = body["action"]
        seen[action] = seen.get(action, 0) + 1
        assert request.headers["Idempotency-Key"] == body["key"]
        n = seen[action]
        if action == "e500" and n == 1:
            return Response("oops", status=500)
        if action == "e429" and n == 1:
            return Response("slow down", status=429, headers={"Retry-After": "120"})
        if action == "errcode":
            return Response(json.dumps({"errcode": 93000, "errmsg": "invalid webhook"}), 200,
                            content_type="application/json")  # fmt: skip
        if action == "slow":
            time.sleep(1.5)
        if action == "bad-request":
            return Response("no", status=400)
        return Response("{}", 200, content_type="application/json")

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
    start = local_midnight(date(2027, 1, 4), program.tz)
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    env = {"HOOK_URL": httpserver.url_for("/hook")}
    runner = open_runner(
        program, store, VirtualClock(start), env=env, options=RunOptions(seed=1),
        routes=["hook=webhook;read_timeout=0.5"],
    )  # fmt: skip
    try:
        runner.run(until=start + timedelta(days=1))
    finally:
        close_runner(runner)
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    state = {o.action: o for o in store.occurrences("faults")}
    assert state["ok"].state == OccurrenceState.SENT
    assert state["e500"].state == OccurrenceState.SENT and seen["e500"] == 2  # retried
    assert state["e429"].state == OccurrenceState.SENT and seen["e429"] == 2
    tries = store.attempts("faults", state["e429"].key)
    assert (tries[1].at - tries[0].at).total_seconds() >= 120  # Retry-After honoured
    assert state["errcode"].state == OccurrenceState.DEAD and seen["errcode"] == 1
    assert state["bad-request"].state == OccurrenceState.DEAD
    assert state["slow"].state == OccurrenceState.UNCERTAIN  # the request arrived, answer lost
    st = status(program, store, "faults", start + timedelta(days=1))
    assert {o.action for o in st.dead} == {"errcode", "bad-request"}
    assert {o.action for o in st.uncertain} == {"slow"}
    assert st.attention
    # every dead letter opened a task for the owner role
    assert {t.action for t in st.tasks if t.id.startswith("dead-letter:")} == {
        "errcode",
        "bad-request",
    }
    store.close()


def test_a_refused_connection_is_retried_then_dead_lettered_nothing_lost(tmp_path: Path) -> None:
    program = program_of(playbook(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    start = local_midnight(date(2027, 1, 4), program.tz)
    store = open_store("memory:")
    runner = open_runner(
        program, store, VirtualClock(start), env={"HOOK_URL": f"http://127.0.0.1:{port}/hook"},
        options=RunOptions(seed=1),
    )  # fmt: skip
    try:
        runner.run(until=start + timedelta(days=1))
        counts = store.count_occurrences("faults")
        assert counts == {OccurrenceState.DEAD: len(FAULTS)}
        for o in store.occurrences("faults"):
            tries = store.attempts("faults", o.key)
            assert [a.state for a in tries] == ["retry", "retry", "dead"]
    finally:
        close_runner(runner)


# -- metric sources --------------------------------------------------------------------------


def test_metric_sources_give_the_latest_value_known_at_an_instant(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    tz = program_of(playbook(tmp_path)).tz
    at = datetime(2027, 1, 11, 0, 0, tzinfo=tz)  # the check after Jan 10
    rows = [
        {"date": "2027-01-09", "metric": "leads", "value": 10},
        {"date": "2027-01-10", "metric": "leads", "value": 12},
        {"date": "2027-01-11", "metric": "leads", "value": 99},  # not known yet
    ]
    (tmp_path / "m.json").write_text(json.dumps(rows), encoding="utf-8")
    (tmp_path / "m.csv").write_text("date,leads,gmv\n2027-01-10,12,\n2027-01-09,10,5.5\n")
    db = tmp_path / "kpi.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE kpi (day TEXT, metric TEXT, value REAL)")
        c.executemany("INSERT INTO kpi VALUES (?, ?, ?)", [(r["date"], r["metric"], r["value"])
                                                            for r in rows])  # fmt: skip
    httpserver.expect_request("/kpi").respond_with_json({"values": rows})
    specs = [
        f"json:{tmp_path / 'm.json'}",
        f"csv:{tmp_path / 'm.csv'}",
        f"sql:sqlite:///{db};SELECT day, metric, value FROM kpi",
        httpserver.url_for("/kpi"),
    ]
    for spec in specs:
        got = open_source(spec, {}).read(at)
        assert got["leads"] == 12, spec
    assert open_source(f"csv:{tmp_path / 'm.csv'}", {}).read(at) == {"leads": 12, "gmv": 5.5}
    (tmp_path / "bad.csv").write_text("date,leads\n2027-01-10,many\n")
    with pytest.raises(MetricSourceError, match="not a number"):
        open_source(f"csv:{tmp_path / 'bad.csv'}", {}).read(at)
    with pytest.raises(ValueError, match="unknown metric source type"):
        open_source("ftp:x", {})
    with pytest.raises(MetricSourceError):
        open_source(f"sql:sqlite:///{db};DELETE FROM kpi", {}).read(at)  # read-only
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM kpi").fetchone()[0] == 3
