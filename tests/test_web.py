"""The operator's dashboard (engine/web): pages over a seeded run, who may change what, and how.

A virtual run of the reference playbook (members joining, one uncertain send, one dead letter,
open staff tasks, a saved forecast) is read by every page in both languages; changes go through
the store's commands and land in the audit log with the actor; requests without the token, from
another site or without the page's CSRF token change nothing.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sop.engine.core.schedule import local_midnight
from sop.engine.program import Program
from sop.engine.run.backends.tasks import create as tasks_backend
from sop.engine.run.clock import VirtualClock
from sop.engine.run.ports import BackendConfig, Capabilities, Delivery, SendResult
from sop.engine.run.runner import Runner, RunOptions
from sop.engine.run.service import ingest, parse_events, status
from sop.engine.run.sources import FileSource
from sop.engine.run.store import open_store
from sop.engine.run.store.base import OccurrenceState, StateStore, TaskState
from sop.engine.validate import load_playbook
from sop.engine.web import (
    AccessError,
    DashboardSettings,
    check_access,
    create_dashboard_app,
    dashboard_routes,
    i18n,
)
from sop.engine.web.auth import COOKIE, Session, SessionCodec

from tests.conftest import REFERENCE

with warnings.catch_warnings():  # starlette 1.x asks for httpx2; httpx is what the project has
    warnings.simplefilter("ignore")  # StarletteDeprecationWarning, a UserWarning
    from starlette.testclient import TestClient

TOKEN = "web-test-token-3f9a1c77d2"
BASE = "http://127.0.0.1:8750"
SAME = {"Origin": BASE}
NOW = datetime.fromisoformat("2026-12-20T10:30:00+08:00")  # day 20 of the run


# -- a seeded run ---------------------------------------------------------------------------


@dataclass
class Seeded:
    program: Program
    store: StateStore
    run_id: str
    clock: VirtualClock
    uncertain: str  # the key of the uncertain send
    dead: str  # the key of the dead letter


class _Group:
    """The group's backend: one send times out (uncertain), one is refused for good."""

    name = "group"
    capabilities = Capabilities(idempotent=False)

    def __init__(self, program: Program) -> None:
        self.tz = program.tz

    def send(self, d: Delivery) -> SendResult:
        local = d.due_at.astimezone(self.tz)
        if d.action == "evening-chat" and local.day == 18:
            return SendResult.uncertain("read timeout after 10 s")
        if d.action == "morning-topic" and local.day == 17:
            return SendResult.permanent("HTTP 400: invalid webhook key")
        return SendResult.ok()

    def close(self) -> None:
        pass


def forecast_doc(days: int = 90) -> dict[str, Any]:
    """A `sop simulate` forecast with known numbers: members grow 20 a day (band ±5 a day)."""
    ds = list(range(days))
    return {
        "playbook": "community-lifecycle",
        "start": "2026-12-01",
        "options": {"runs": 200, "days": days, "seed": 1},
        "gates": [{"stage": "cold-start", "p_pass": 0.83, "median_pass_day": 41.0}],
        "metrics": {
            "members": {
                "days": ds,
                "p5": [15.0 * d for d in ds],
                "p50": [20.0 * d for d in ds],
                "p95": [25.0 * d for d in ds],
            },
            "daily_speak_rate": {
                "days": ds,
                "p5": [None] * 9 + [0.15] * (days - 9),
                "p50": [None] * 9 + [0.22] * (days - 9),
                "p95": [None] * 9 + [0.3] * (days - 9),
            },
            "churn_rate": {
                "days": ds,
                "p5": [0.0] * days,
                "p50": [0.01] * days,
                "p95": [0.02] * days,
            },
        },
    }


def seed_run(
    url: str,
    tmp: Path,
    *,
    joins_per_day: int = 6,
    simulate: bool = False,
    until: datetime = NOW,
) -> Seeded:
    """The reference playbook run from Dec 1 to `until` on a virtual clock, with members."""
    pb = load_playbook(str(REFERENCE)).playbook
    assert pb is not None
    program = Program(pb)
    group = _Group(program)
    metrics = tmp / "survey.csv"  # prep's gate (survey_responses >= 300) passes on Dec 10
    metrics.write_text("date,survey_responses\n2026-12-03,80\n2026-12-06,190\n2026-12-09,320\n")
    store = open_store(url)
    backends = {
        "group": group,
        "console": group,
        "staff": tasks_backend(BackendConfig("staff", "tasks"), {}),
    }
    start = local_midnight(date(2026, 12, 1), program.tz)
    clock = VirtualClock(start)
    runner = Runner(
        program, store, backends, clock, [FileSource("m", str(metrics), "csv")], RunOptions(seed=1)
    )
    runner.run(until=start + timedelta(days=9))
    rng = random.Random(5)
    n = 0
    for day in range(9, 19):
        t0 = start + timedelta(days=day)
        events: list[dict[str, Any]] = []
        for _ in range(joins_per_day):
            n += 1
            at = t0 + timedelta(hours=9, minutes=rng.randrange(600))
            events.append(
                {"id": f"j{n}", "type": "joined", "member": f"m{n:03d}", "at": at.isoformat()}
            )
        for k in range(max(1, n // 6)):
            at = t0 + timedelta(hours=20, minutes=rng.randrange(200))
            events.append(
                {
                    "id": f"s{day}-{k}",
                    "type": "message",
                    "member": f"m{rng.randrange(1, n + 1):03d}",
                    "at": at.isoformat(),
                }
            )
        if day == 15:
            at = (t0 + timedelta(hours=13)).isoformat()
            events.append({"id": "v1", "type": "violation", "member": "m004", "at": at})
        ingest(program, store, runner.run_id, parse_events(program, events, t0), "test")
        runner.run(until=min(until, t0 + timedelta(days=1)))
    runner.run(until=until)
    if simulate:
        from sop.engine.sim.montecarlo import SimOptions
        from sop.engine.sim.montecarlo import simulate as run_sim
        from sop.engine.sim.scenario import load_scenario

        scenario = REFERENCE.parent / "scenarios" / REFERENCE.name
        sc = load_scenario(str(scenario), [], playbook=pb)
        res = run_sim(pb, sc, SimOptions(runs=40, days=120, seed=1, workers=1))
        store.save_forecast(pb.id, start, res.forecast(pb))
    else:
        store.save_forecast(pb.id, start, forecast_doc())
    [uncertain] = store.occurrences(runner.run_id, [OccurrenceState.UNCERTAIN])
    [dead] = store.occurrences(runner.run_id, [OccurrenceState.DEAD])
    return Seeded(program, store, runner.run_id, clock, uncertain.key, dead.key)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    tmp = tmp_path_factory.mktemp("web")
    s = seed_run(f"sqlite:///{tmp}/state.db?synchronous=NORMAL", tmp)
    yield s
    s.store.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Seeded]:
    """A run of its own, for tests that change it."""
    s = seed_run(f"sqlite:///{tmp_path}/state.db?synchronous=NORMAL", tmp_path, joins_per_day=2)
    yield s
    s.store.close()


def client(s: Seeded, token: str | None = TOKEN, **headers: str) -> TestClient:
    app = create_dashboard_app(
        s.program, s.store, s.run_id, DashboardSettings(token=token, clock=s.clock)
    )
    return TestClient(app, base_url=BASE, follow_redirects=False, headers=headers)


def signed_in(s: Seeded, name: str = "小王") -> TestClient:
    c = client(s)
    r = c.post("/login", data={"name": name, "token": TOKEN, "next": "/tasks"}, headers=SAME)
    assert r.status_code == 303 and r.headers["location"] == "/tasks"
    return c


def csrf_of(c: TestClient, path: str = "/tasks") -> str:
    page = c.get(path)
    assert page.status_code == 200, page.text
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, "the page carries the CSRF token in its forms"
    return m.group(1)


def open_task(s: Seeded, action: str = "standup") -> Any:
    return next(t for t in s.store.tasks(s.run_id, states=[TaskState.OPEN]) if t.action == action)


# -- pages ----------------------------------------------------------------------------------

PAGES = ["/", "/forecast", "/calendar", "/tasks", "/deliveries", "/members"]


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(("lang", "word"), [("zh-CN,zh;q=0.9", "总览"), ("en-US,en", "Overview")])
def test_every_page_renders_the_seeded_run_in_both_languages(
    seeded: Seeded, path: str, lang: str, word: str
) -> None:
    r = client(seeded, None, **{"Accept-Language": lang}).get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    html_lang = "zh-CN" if lang.startswith("zh") else "en"
    assert f'<html lang="{html_lang}">' in r.text
    assert word in r.text
    assert "Traceback" not in r.text and "{{" not in r.text


def test_overview_shows_the_stage_its_gate_with_values_and_thresholds_and_the_alerts(
    seeded: Seeded,
) -> None:
    text = client(seeded, None).get("/").text
    assert 'data-stage="cold-start"' in text  # the running stage, by id
    assert "members &gt;= 200 and avg(daily_speak_rate, 7d) &gt;= 20%" in text  # its gate
    # members: the latest daily value, its threshold, a sparkline
    row = re.search(r'data-metric="members">(.*?)</tr>', text, re.S)
    assert row and "&gt;= 200" in row.group(1) and "<svg" in row.group(1)
    assert "read from day 30 of the stage" in text  # cold-start's minimum duration
    assert "deadline 2027-02-08 00:00" in text and "go to 冷启动补救" in text  # policy
    assert "Dead letters: 1" in text and "Uncertain sends: 1" in text  # alerts
    assert "Overdue staff tasks" in text


def test_the_overview_and_sop_status_read_the_stages_and_gates_alike(seeded: Seeded) -> None:
    from sop.engine.web import views

    st = status(seeded.program, seeded.store, seeded.run_id, NOW)
    o = views.overview(views.Reader(seeded.program, seeded.store, seeded.run_id, NOW))
    assert [(s.id, s.days, s.outcome) for s in o.stages] == [
        (s["stage"], s["days"], s["outcome"]) for s in st.stages
    ]
    assert [(g.stage, g.condition, g.holds, g.at) for g in o.gates] == [
        (g.stage, g.condition, g.holds, g.at) for g in st.gates
    ]
    assert [[r.metric for r in g.rows] for g in o.gates] == [list(g.distances) for g in st.gates]
    assert o.counts == {k: n for k, n in st.counts.items() if k != "sent"}


def test_forecast_page_draws_band_median_actual_values_and_threshold(seeded: Seeded) -> None:
    text = client(seeded, None).get("/forecast").text
    chart = re.search(r'id="chart-members".*?</section>', text, re.S)
    assert chart, "a chart for the gate's metric"
    svg = chart.group(0)
    for part in ('class="band"', 'class="median"', 'class="actual"', 'class="threshold"'):
        assert part in svg
    # 60 members on day 18 against a median of 360: behind, below the 5th percentile (270)
    assert "behind the median by 300 (-83%)" in svg
    assert "below the 5th percentile" in svg
    assert "P(gate passes) 83% (median day 41)" in text
    assert 'id="chart-daily_speak_rate"' in text
    assert "churn_rate" in text  # offered among the other metrics
    extra = client(seeded, None).get("/forecast?m=churn_rate").text
    assert 'id="chart-churn_rate"' in extra


def test_calendar_joins_the_plan_with_what_was_delivered_by_idempotency_key(
    seeded: Seeded,
) -> None:
    text = client(seeded, None).get("/calendar?from=2026-12-14").text
    day = {d: s for d, s in re.findall(r'data-day="([\d-]+)">(.*?)</section>', text, re.S)}
    assert set(day) == {f"2026-12-{d}" for d in range(14, 21)}
    assert re.search(r'state-dead" data-key="community-lifecycle/morning-topic', day["2026-12-17"])
    assert "invalid webhook key" in day["2026-12-17"]  # why it failed
    assert re.search(r'state-uncertain" data-key="[^"]*evening-chat', day["2026-12-18"])
    assert re.search(r'state-sent" data-key="[^"]*morning-topic', day["2026-12-18"])
    # today: sent before 10:30, planned after
    assert re.search(r'state-sent" data-key="[^"]*morning-topic', day["2026-12-20"])
    assert re.search(r'state-planned" data-key="[^"]*evening-chat', day["2026-12-20"])
    ahead = client(seeded, None).get("/calendar").text  # from today on
    assert ahead.count('data-day="') == 7 and 'data-day="2026-12-26"' in ahead


def test_tasks_page_lists_open_tasks_per_role_with_overdue_ones_marked(seeded: Seeded) -> None:
    c = client(seeded, None)
    text = c.get("/tasks").text
    assert 'class="task overdue"' in text  # standups since Dec 1, never done
    assert "每日站会" in text  # the prepared content, ready to copy
    assert 'class="copy"' in text
    members = c.get("/tasks?role=members").text
    assert "welcome-call" in members and "standup" not in members
    counts = seeded.store.open_task_counts(seeded.run_id)
    assert f"用户运营 <b>{counts['members']}</b>" in text


def test_deliveries_page_offers_decisions_on_uncertain_sends_and_dead_letters(
    seeded: Seeded,
) -> None:
    text = client(seeded, None).get("/deliveries").text
    uncertain = re.search(r'id="uncertain">(.*?)</section>', text, re.S)
    dead = re.search(r'id="dead">(.*?)</section>', text, re.S)
    assert uncertain and seeded.uncertain in uncertain.group(1)
    assert "read timeout after 10 s" in uncertain.group(1)
    assert all(f'value="{d}"' in uncertain.group(1) for d in ("sent", "resend", "drop"))
    assert dead and seeded.dead in dead.group(1)


def test_members_page_counts_tiers_recent_joins_silent_members_and_violations(
    seeded: Seeded,
) -> None:
    text = client(seeded, None).get("/members").text
    assert "<b>60</b>" in text  # members, from the daily metrics
    assert "普通成员" in text and "核心成员" in text  # the tiers' titles, in the chart's legend
    joins = seeded.store.recent_joins(seeded.run_id, NOW - timedelta(days=7), NOW, 1)
    assert joins.total > 30 and f"Recent joins (last 7 days): {joins.total}<" in text
    assert re.search(r"Silent for 72 hours or more: \d+", text)
    assert "Violations (last 30 days): 1" in text and "m004" in text


def test_text_from_members_is_escaped(fresh: Seeded) -> None:
    evil = "<img src=x onerror=alert(1)>"
    event = {"id": "x1", "type": "joined", "member": evil, "at": "2026-12-20T09:00:00+08:00"}
    ingest(
        fresh.program, fresh.store, fresh.run_id, parse_events(fresh.program, [event], NOW), "test"
    )
    text = client(fresh, None).get("/members").text
    assert evil not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


# -- access ---------------------------------------------------------------------------------


def test_the_dashboard_refuses_to_listen_beyond_loopback_without_a_long_token() -> None:
    check_access("127.0.0.1", None)
    check_access("::1", None)
    check_access("0.0.0.0", TOKEN)
    with pytest.raises(AccessError, match="SOP_TOKEN"):
        check_access("0.0.0.0", None)
    with pytest.raises(AccessError, match="at least 16"):
        check_access("192.168.1.5", "short")


def test_without_the_token_pages_send_to_sign_in_and_changes_answer_401(fresh: Seeded) -> None:
    c = client(fresh)
    r = c.get("/tasks")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Ftasks"
    task = open_task(fresh)
    r = c.post("/tasks/done", data={"id": task.id}, headers=SAME)
    assert r.status_code == 401
    r = c.post("/tasks/done", data={"id": task.id}, headers={**SAME, "HX-Request": "true"})
    assert r.status_code == 401 and r.headers["HX-Redirect"].startswith("/login?next=")
    r = c.post(
        "/tasks/done",
        data={"id": task.id},
        headers={**SAME, "Authorization": "Bearer not-the-token-at-all"},
    )
    assert r.status_code == 401
    assert open_task(fresh).id == task.id  # still open
    assert not [e for e in fresh.store.audit_log(fresh.run_id) if e.action == "task.done"]


def test_a_bearer_token_reads_and_changes_and_the_audit_log_says_token(fresh: Seeded) -> None:
    c = client(fresh, Authorization=f"Bearer {TOKEN}")
    assert c.get("/").status_code == 200
    task = open_task(fresh)
    r = c.post("/tasks/done", data={"id": task.id, "back": "/tasks"})  # no cookie: no CSRF token
    assert r.status_code == 303 and r.headers["location"] == "/tasks"
    [done] = [t for t in fresh.store.tasks(fresh.run_id) if t.id == task.id]
    assert done.state == TaskState.DONE and done.done_by == "token"
    entry = fresh.store.audit_log(fresh.run_id)[-1]
    assert (entry.actor, entry.action, entry.subject) == ("token", "task.done", task.id)


def test_sign_in_sets_a_signed_httponly_strict_cookie_and_changes_carry_the_name(
    fresh: Seeded,
) -> None:
    c = client(fresh)
    r = c.post("/login", data={"name": "小王", "token": TOKEN, "next": "/tasks"}, headers=SAME)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    token = csrf_of(c)
    task = open_task(fresh)
    r = c.post(
        "/tasks/postpone",
        data={"id": task.id, "to": "2026-12-21T15:00"},
        headers={**SAME, "X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert r.status_code == 200, r.text
    assert json.loads(r.headers["HX-Trigger"])["sop-flash"].startswith("Postponed to 2026-12-21")
    assert f'data-task="{task.id}"' in r.text and "overdue" not in r.text.split(">")[0]
    moved = fresh.store.get_task(fresh.run_id, task.id)
    assert moved is not None and moved.due_at == datetime.fromisoformat("2026-12-21T15:00+08:00")
    entry = fresh.store.audit_log(fresh.run_id)[-1]
    assert (entry.actor, entry.action, entry.subject) == ("小王", "task.postponed", task.id)
    # signing out ends it
    r = c.post("/logout", data={"csrf": token}, headers=SAME)
    assert r.status_code == 303 and 'sop_session=""' in r.headers["set-cookie"]


def test_a_wrong_token_is_refused_and_repeated_failures_are_throttled(fresh: Seeded) -> None:
    c = client(fresh)
    for _ in range(10):
        r = c.post("/login", data={"name": "x", "token": "guess-guess-guess"}, headers=SAME)
        assert r.status_code == 401 and "set-cookie" not in r.headers
    r = c.post("/login", data={"name": "x", "token": TOKEN}, headers=SAME)
    assert r.status_code == 429  # even the right token, for a while, from this address


def test_a_tampered_or_foreign_session_cookie_is_not_accepted(fresh: Seeded) -> None:
    other = SessionCodec("some-other-token-0000000").dumps(Session.new("mallory"))
    c = client(fresh)
    c.cookies.set(COOKIE, other)
    assert c.get("/tasks").status_code == 303
    good = signed_in(fresh)
    value = good.cookies[COOKIE]
    payload, sig = value.rsplit(".", 1)
    c.cookies.set(COOKIE, payload[:-2] + "AA." + sig)
    assert c.get("/tasks").status_code == 303


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {"Origin": BASE, "Sec-Fetch-Site": "cross-site"},
    ],
    ids=["origin", "null-origin", "referer", "sec-fetch-site"],
)
def test_a_forged_cross_site_post_is_refused(fresh: Seeded, headers: dict[str, str]) -> None:
    c = signed_in(fresh)
    token = csrf_of(c)  # even with the session cookie and the right CSRF token
    task = open_task(fresh)
    before = len(fresh.store.audit_log(fresh.run_id))
    r = c.post("/tasks/done", data={"id": task.id, "csrf": token}, headers=headers)
    assert r.status_code == 403
    r = c.post(
        "/deliveries/resolve",
        data={"key": fresh.uncertain, "decision": "drop", "csrf": token},
        headers=headers,
    )
    assert r.status_code == 403
    assert open_task(fresh).id == task.id
    assert fresh.store.get_occurrence(fresh.run_id, fresh.uncertain).state == "uncertain"
    assert len(fresh.store.audit_log(fresh.run_id)) == before


def test_a_post_without_the_pages_csrf_token_is_refused(fresh: Seeded) -> None:
    c = signed_in(fresh)
    task = open_task(fresh)
    for data in ({"id": task.id}, {"id": task.id, "csrf": "not-the-token"}):
        r = c.post("/tasks/done", data=data, headers=SAME)
        assert r.status_code == 403
    assert open_task(fresh).id == task.id


def test_resolving_an_uncertain_send_records_the_decision_with_the_actor(fresh: Seeded) -> None:
    c = signed_in(fresh, "ops-lead")
    token = csrf_of(c, "/deliveries")
    r = c.post(
        "/deliveries/resolve",
        data={"key": fresh.uncertain, "decision": "sent"},
        headers={**SAME, "X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert r.status_code == 200 and "state-sent" in r.text and 'value="resend"' not in r.text
    assert fresh.store.get_occurrence(fresh.run_id, fresh.uncertain).state == "sent"
    entry = fresh.store.audit_log(fresh.run_id)[-1]
    assert (entry.actor, entry.action, entry.subject) == (
        "ops-lead",
        "resolve.sent",
        fresh.uncertain,
    )
    again = c.post(
        "/deliveries/resolve",
        data={"key": fresh.uncertain, "decision": "drop"},
        headers={**SAME, "X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert again.status_code == 409 and "Already decided (it is sent now)" in again.text
    # a dead letter sent again, without JavaScript: back to the page
    r = c.post(
        "/deliveries/resolve",
        data={"key": fresh.dead, "decision": "resend", "csrf": token, "back": "/deliveries"},
        headers=SAME,
    )
    assert r.status_code == 303 and r.headers["location"] == "/deliveries"
    assert fresh.store.get_occurrence(fresh.run_id, fresh.dead).state == "pending"


def test_a_postpone_to_the_past_or_of_a_closed_task_is_refused(fresh: Seeded) -> None:
    c = signed_in(fresh)
    token = csrf_of(c)
    task = open_task(fresh)
    hx = {**SAME, "X-CSRF-Token": token, "HX-Request": "true"}
    r = c.post("/tasks/postpone", data={"id": task.id, "to": "2026-12-01T09:00"}, headers=hx)
    assert r.status_code == 400 and "in the future" in r.text
    assert c.post("/tasks/done", data={"id": task.id}, headers=hx).status_code == 200
    r = c.post("/tasks/done", data={"id": task.id}, headers=hx)
    assert r.status_code == 409 and "no longer open" in r.text


def test_without_a_token_only_loopback_host_names_are_answered(fresh: Seeded) -> None:
    c = client(fresh, None)
    assert c.get("/", headers={"Host": "evil.example"}).status_code == 421  # DNS rebinding
    assert c.get("/", headers={"Host": "localhost:8750"}).status_code == 200
    assert COOKIE in c.cookies  # a local session, for its CSRF token
    page = c.get("/tasks")
    task = open_task(fresh)
    fresh_client = client(fresh, None)
    r = fresh_client.post("/tasks/done", data={"id": task.id}, headers=SAME)
    assert r.status_code == 403  # no session yet: no page of ours sent it
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m is not None
    r = c.post("/tasks/done", data={"id": task.id, "csrf": m.group(1)}, headers=SAME)
    assert r.status_code == 303
    assert fresh.store.audit_log(fresh.run_id)[-1].actor == "local"


def test_every_answer_carries_the_security_headers(seeded: Seeded) -> None:
    c = client(seeded)
    for r in (c.get("/login"), c.get("/"), c.get("/static/app.css"), c.get("/nope")):
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    for page in (c.get("/login"), client(seeded, None).get("/tasks")):
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)  # no inline script
        assert not re.search(r"\son[a-z]+=", page.text)  # no inline event handler
    assert c.get("/nope").status_code == 404


def test_static_files_are_served_from_the_package_no_cdn(seeded: Seeded) -> None:
    c = client(seeded, None)
    page = c.get("/").text
    for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        assert c.get(src).status_code == 200, src
    for link in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert link.startswith("/") and not link.startswith("//"), link  # nothing from elsewhere
    css = c.get("/static/fonts/noto-sans-sc/noto-sans-sc.css").text
    fonts = re.findall(r"url\(([^)]+\.woff2)\)", css)
    assert len(fonts) > 90
    assert c.get(f"/static/fonts/noto-sans-sc/{fonts[0]}").status_code == 200


def test_language_follows_accept_language_then_the_switch(seeded: Seeded) -> None:
    assert i18n.negotiate("zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert i18n.negotiate("en-GB,en;q=0.9,zh;q=0.8") == "en"
    assert i18n.negotiate("fr-FR,fr;q=0.9,zh-TW;q=0.5") == "zh"
    assert i18n.negotiate("de") == "en" and i18n.negotiate(None) == "en"
    assert i18n.negotiate("zh", "en") == "en"  # the switch wins
    c = client(seeded, None, **{"Accept-Language": "en"})
    r = c.get("/lang/zh?next=/tasks")
    assert r.status_code == 303 and r.headers["location"] == "/tasks"
    assert "sop_lang=zh" in r.headers["set-cookie"]
    assert "员工任务" in c.get("/tasks").text
    assert c.get("/lang/en?next=//evil.example/").headers["location"] == "/"


def test_the_two_catalogs_have_the_same_keys_and_placeholders() -> None:
    assert set(i18n.EN) == set(i18n.ZH)
    for key in i18n.EN:
        assert set(re.findall(r"{(\w+)}", i18n.EN[key])) == set(
            re.findall(r"{(\w+)}", i18n.ZH[key])
        ), key
    used = set()
    for path in (Path(i18n.__file__).parent).rglob("*"):
        if path.suffix in (".html", ".py"):
            used |= set(re.findall(r"""["']((?:[a-z_]+\.)+[a-z_0-9]+)["']""", path.read_text()))
    assert all("." in k for k in i18n.EN)
    named = ("state.", "event.", "outcome.", "kind.", "wd.", "policy.")  # built from data
    static_keys = {k for k in i18n.EN if not k.startswith(named)}
    legend = {f"forecast.legend_{k}" for k in ("band", "median", "actual", "threshold")}
    assert static_keys - used <= legend


def test_the_dashboard_mounts_after_the_events_endpoint(seeded: Seeded) -> None:
    from sop.engine.run.serve import create_app

    app = create_app(seeded.program, seeded.store, seeded.run_id, b"secret")
    app.router.routes.extend(
        dashboard_routes(
            seeded.program,
            seeded.store,
            seeded.run_id,
            DashboardSettings(token=TOKEN, clock=seeded.clock),
        )
    )
    c = TestClient(app, base_url=BASE, follow_redirects=False)
    assert c.get("/healthz").json() == {"ok": True, "run": seeded.run_id}
    assert (
        c.post("/events", content=b"{}", headers={"Content-Type": "application/json"}).status_code
        == 401
    )
    assert c.get("/").status_code == 303  # the dashboard, asking to sign in
    assert c.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_help_and_validate_never_import_the_dashboard() -> None:
    code = "import sys; sys.argv[0] = 'sop'; from sop.__main__ import main; main()"
    for args in (["--help"], ["validate", str(REFERENCE)]):
        res = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        imported = [
            line.rsplit("|", 1)[-1].strip()
            for line in res.stderr.splitlines()
            if line.startswith("import time:")
        ]
        assert "sop.engine.core" in imported or args == ["--help"], res.stderr[-2000:]
        assert not [m for m in imported if m.startswith(("sop.engine.web", "starlette"))], args


def test_a_run_ahead_of_the_dashboards_clock_never_counts_days_backwards(seeded: Seeded) -> None:
    """A virtual-clock run checked to day 20 seen from a clock 30 days earlier: the overview
    shows the run's own present (day >= 1) and says that the run is ahead."""
    early = VirtualClock(NOW - timedelta(days=30))
    app = create_dashboard_app(
        seeded.program, seeded.store, seeded.run_id, DashboardSettings(token=None, clock=early)
    )
    c = TestClient(app, base_url=BASE, follow_redirects=False, headers={"Accept-Language": "en"})
    text = c.get("/").text
    days = [int(n) for n in re.findall(r'class="badge">day (-?\d+)<', text)]
    assert days and min(days) >= 1, days
    assert "ahead of the wall clock" in text
    same = client(seeded, None, **{"Accept-Language": "en"}).get("/").text
    assert "ahead of the wall clock" not in same  # the run's own clock: no note
