"""The reference playbook run for 30 virtual days through `wecom-robot` against a loopback robot.

The robot never receives more than 20 messages in any minute (WeCom's limit per robot, the
runner's shared token bucket), nothing is lost, and every group post carries the text `sop plan`
shows for it.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta

from pytest_httpserver import HTTPServer
from sop.engine.plan.timeline import PlanOptions, make_plan, render_messages
from sop.engine.run.clock import VirtualClock
from sop.engine.run.runner import RunOptions
from sop.engine.run.service import close_runner, ingest, open_runner, parse_events
from sop.engine.run.store import open_store
from sop.engine.run.store.base import OccurrenceState
from werkzeug import Request, Response

from .conftest import REFERENCE
from .test_run import program_of

KEY = "robot-key-0d7c"


def test_thirty_days_through_the_robot_stay_within_its_limit_and_lose_nothing(
    httpserver: HTTPServer,
) -> None:
    program = program_of(REFERENCE)
    tl = make_plan(program, PlanOptions(days=30, assume_gates="fail"))
    planned_text = render_messages(tl)
    clock = VirtualClock(tl.start)
    received: list[tuple[object, dict[str, object]]] = []

    def robot(request: Request) -> Response:
        assert request.args.get("key") == KEY
        received.append((clock.now(), json.loads(request.get_data())))
        return Response(json.dumps({"errcode": 0, "errmsg": "ok"}), 200,
                        content_type="application/json")  # fmt: skip

    httpserver.expect_request("/cgi-bin/webhook/send", method="POST").respond_with_handler(robot)
    origin = httpserver.url_for("/").rstrip("/")
    store = open_store("memory:")
    runner = open_runner(
        program, store, clock, env={"WECOM_GROUP_KEY": KEY},
        routes=[f"group=wecom-robot;base_url={origin}", "console=null"],
        options=RunOptions(seed=5),
    )  # fmt: skip
    try:
        runner.ensure_run()
        # a burst: 60 members join within a minute on day 3; each welcome goes through the robot
        t = tl.start + timedelta(days=2, hours=10)
        joins = [
            {"id": f"j{i}", "type": "joined", "member": f"m{i}", "data": {"name": f"成员{i}"},
             "at": (t + timedelta(seconds=i)).isoformat()}
            for i in range(60)
        ]  # fmt: skip
        ingest(program, store, runner.run_id, parse_events(program, joins, t), "test")
        runner.run(until=tl.end)
    finally:
        close_runner(runner)

    # never more than 20 in any 60 s (virtual time, as the robot saw them)
    times = sorted(at for at, _ in received)
    for i, start in enumerate(times):
        within = [x for x in times[i:] if x - start < timedelta(seconds=60)]  # type: ignore[operator]
        assert len(within) <= 20, (start, len(within))
    # nothing lost: every occurrence on the robot was sent, once
    group = [o for o in store.occurrences(runner.run_id) if o.backend == "group"]
    assert group and all(o.state == OccurrenceState.SENT for o in group), {
        o.key: (o.state, o.reason) for o in group if o.state != OccurrenceState.SENT
    }
    assert len(received) == len(group)
    # the group posts are the plan's, with the plan's text
    planned = [o for o in tl.occurrences if o.backend == "group"]
    assert {o.key for o in planned} <= {o.key for o in group}
    texts = [body["text"]["content"] for _, body in received if body.get("msgtype") == "text"]  # type: ignore[index]
    for o in planned:
        expected = planned_text.get(o.action)
        if expected:  # a text without member data: the plan shows it, the robot got it
            assert expected in texts, o.action
    welcomes = [x for x in texts if "成员" in x]
    assert len(welcomes) >= 60  # each new member's welcome, with their name
    # the robot's key is in no output: status, audit log, attempts, the plan
    from sop.engine.plan import render as plan_render
    from sop.engine.run.service import status

    outputs = [json.dumps(status(program, store, runner.run_id, tl.end).as_dict())]
    outputs += [json.dumps(e.detail, ensure_ascii=False) for e in store.audit_log(runner.run_id)]
    outputs += [a.detail for o in group for a in store.attempts(runner.run_id, o.key)]
    outputs += [o.reason for o in store.occurrences(runner.run_id)]
    buffer = io.StringIO()
    plan_render.write_json(tl, buffer)
    outputs.append(buffer.getvalue())
    assert not [x for x in outputs if KEY in x]
