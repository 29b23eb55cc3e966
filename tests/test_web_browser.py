"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against a
real uvicorn server on 127.0.0.1 in front of a SQLite store seeded with a virtual run of the
reference playbook and a simulated forecast.

An operator signs in, reads the stage, the gates and the forecast chart, marks a task done and
postpones another by clicking, copies a task's prepared text, resolves an uncertain send and
switches the language; each change is checked in the store and its audit log. The machine has no
CJK fonts: Chinese must come from the dashboard's own web font. Screenshots of every page go to
the test's directory and to /tmp/sop-screens/.

Playwright never downloads a browser here: it launches /usr/bin/chromium (`apt-get install
chromium`). Without it the tests skip, unless SOP_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sop.engine.run.serve import bind, make_server
from sop.engine.run.store.base import TaskState
from sop.engine.web import DashboardSettings, create_dashboard_app

from tests.test_web import NOW, TOKEN, Seeded, seed_run

CHROMIUM = os.environ.get("SOP_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("SOP_REQUIRE_BROWSER") == "1"
SCREENS = Path("/tmp/sop-screens")
# Debian's Chromium, headless, as root, talking to nobody but our server
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_or_skip() -> Any:
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "Playwright is not installed (pip install playwright; no browser download needed)"
    else:
        if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
            why = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if why:
        if REQUIRED:
            pytest.fail(f"a browser is required here (SOP_REQUIRE_BROWSER=1): {why}")
        pytest.skip(why)
    return sync_playwright


@dataclass
class Server:
    url: str
    seeded: Seeded


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _browser_or_skip()
    tmp = tmp_path_factory.mktemp("browser")
    seeded = seed_run(
        f"sqlite:///{tmp}/state.db?synchronous=NORMAL", tmp, joins_per_day=30, simulate=True
    )
    app = create_dashboard_app(
        seeded.program,
        seeded.store,
        seeded.run_id,
        DashboardSettings(token=TOKEN, clock=seeded.clock),
    )
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    uv = make_server(app)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{port}", seeded)
    finally:
        uv.should_exit = True
        thread.join(15)
        sock.close()
        seeded.store.close()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh profile with a Chinese browser, signed in as 小王."""
    context = browser.new_context(
        locale="zh-CN", viewport={"width": 1280, "height": 900}, base_url=server.url
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("console", lambda m: errors.extend([m.text] if m.type == "error" else []))
    p.goto("/")
    assert "/login" in p.url  # no session: the sign-in form
    p.fill("input[name=name]", "小王")
    p.fill("input[name=token]", TOKEN)
    p.click("button[type=submit]")
    p.wait_for_url(server.url + "/")
    yield p
    context.close()
    assert not errors, errors  # no script error, no refused resource (CSP), no 404


def shot(p: Any, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot once the web fonts are in, here and in /tmp/sop-screens/."""
    p.wait_for_load_state("networkidle")
    p.evaluate("document.fonts.ready.then(() => true)")
    out = tmp_path / f"{name}.png"
    p.screenshot(path=str(out), full_page=True)
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(out, SCREENS / out.name)
    return out


def fonts_in(p: Any, text: str) -> bool:
    """Whether the page's own CJK font is loaded for every character of `text`."""
    return bool(
        p.evaluate(
            "(t) => document.fonts.ready"
            ".then(() => document.fonts.check('16px \"Noto Sans SC\"', t))",
            text,
        )
    )


def test_the_overview_shows_the_stage_and_gates_in_chinese_with_the_packaged_font(
    page: Any, tmp_path: Path
) -> None:
    p = page
    assert p.get_attribute("html", "lang") == "zh-CN"
    stage = p.locator("#stage [data-stage=cold-start]")
    assert stage.inner_text().startswith("启动期")
    gate = p.locator("#gates .gate[data-stage=cold-start]")
    assert "members >= 200 and avg(daily_speak_rate, 7d) >= 20%" in gate.inner_text()
    members = gate.locator("tr[data-metric=members]")
    assert members.locator("td.value").inner_text() == "300"
    assert members.locator("svg.spark polyline").count() == 1
    assert "1条发送结果不确定" in p.locator("#alerts").inner_text()
    shot(p, tmp_path, "zh-overview")
    # the machine has no CJK font: the glyphs come from the dashboard's Noto Sans SC slices
    assert fonts_in(p, "当前阶段启动期社群运营阶段门槛提醒")
    # and text set in it is as wide as Chinese, not a row of empty boxes of another font
    width = p.evaluate(
        "() => { const c = document.createElement('canvas').getContext('2d');"
        " c.font = '20px \"Noto Sans SC\"'; return c.measureText('当前阶段').width; }"
    )
    assert 75 <= width <= 85  # 4 full-width glyphs of 20 px


def test_the_forecast_chart_draws_the_band_the_median_the_actual_values_and_the_threshold(
    page: Any, tmp_path: Path
) -> None:
    p = page
    p.click("nav.pages a[href='/forecast']")
    chart = p.locator("#chart-members svg")
    chart.wait_for()
    for part in ("polygon.band", "polyline.median", "polyline.actual", "line.threshold"):
        assert chart.locator(part).count() >= 1, part
        box = chart.locator(part).first.bounding_box()
        assert box is not None and box["width"] > 50, part  # drawn across the chart
    verdict = p.locator("#chart-members .verdict").inner_text()
    assert "中位数" in verdict  # ahead of or behind the median, by how much
    shot(p, tmp_path, "zh-forecast")


def test_the_calendar_shows_planned_and_delivered_days(page: Any, tmp_path: Path) -> None:
    p = page
    p.click("nav.pages a[href='/calendar']")
    today = p.locator("section.day.today")
    assert today.get_attribute("data-day") == NOW.date().isoformat()
    assert today.locator(".item.state-planned").count() >= 1
    shot(p, tmp_path, "zh-calendar")
    p.click("nav.pager a >> nth=0")  # the week before
    assert p.locator("[data-day='2026-12-17'] .item.state-dead").count() == 1
    assert p.locator("[data-day='2026-12-18'] .item.state-uncertain").count() == 1


def test_a_task_is_marked_done_and_another_postponed_by_clicking(
    page: Any, server: Server, tmp_path: Path
) -> None:
    p, s = page, server.seeded
    p.click("nav.pages a[href='/tasks']")
    p.click("nav.tabs a[href='/tasks?role=members']")
    first = p.locator("#open li.task").first
    task_id = first.get_attribute("data-task")
    assert first.locator("pre.content").inner_text().startswith("24小时内一对一欢迎")
    # the prepared text, copied for pasting into WeChat
    first.locator("button.copy").click()
    p.wait_for_function("() => document.querySelector('button.copied') !== null")
    copied = p.evaluate("() => navigator.clipboard.readText()")
    assert copied == first.locator("pre.content").inner_text()
    first.locator("button.done-button").click()
    done_row = p.locator(f"li.task.done[data-task='{task_id}']")
    done_row.wait_for()
    assert "小王" in done_row.inner_text()
    assert "已标记完成" in p.locator("#flash").inner_text()
    [task] = [t for t in s.store.tasks(s.run_id, role="members") if t.id == task_id]
    assert task.state == TaskState.DONE and task.done_by == "小王"
    # postpone the next one by an hour
    second = p.locator("#open li.task:not(.done)").first
    other = second.get_attribute("data-task")
    second.locator("button[value=hour]").click()
    p.wait_for_function(
        "(id) => { const li = [...document.querySelectorAll('li.task')]"
        ".find(x => x.dataset.task === id); return li && !li.classList.contains('overdue'); }",
        arg=other,
    )
    [moved] = [t for t in s.store.tasks(s.run_id, role="members") if t.id == other]
    assert moved.state == TaskState.OPEN
    assert moved.due_at == (NOW + timedelta(hours=1)).replace(second=0, microsecond=0)
    log = [(e.actor, e.action, e.subject) for e in s.store.audit_log(s.run_id, limit=5)]
    assert ("小王", "task.done", task_id) in log and ("小王", "task.postponed", other) in log
    shot(p, tmp_path, "zh-tasks")


def test_an_uncertain_send_is_resolved_by_clicking(
    page: Any, server: Server, tmp_path: Path
) -> None:
    p, s = page, server.seeded
    p.click("nav.pages a[href='/deliveries']")
    item = p.locator(f"#uncertain li[data-key='{s.uncertain}']")
    assert "read timeout" in item.inner_text()
    shot(p, tmp_path, "zh-deliveries")
    item.locator("button.resolve-sent").click()
    p.locator(f"li.state-sent[data-key='{s.uncertain}']").wait_for()
    occurrence = s.store.get_occurrence(s.run_id, s.uncertain)
    assert occurrence is not None and occurrence.state == "sent"
    entry = s.store.audit_log(s.run_id)[-1]
    assert (entry.actor, entry.action, entry.subject) == ("小王", "resolve.sent", s.uncertain)


def test_members_and_tiers(page: Any, tmp_path: Path) -> None:
    p = page
    p.click("nav.pages a[href='/members']")
    assert p.locator("#tiers svg.chart polygon").count() >= 1
    assert "m004" in p.locator("#violations").inner_text()
    shot(p, tmp_path, "zh-members")


def test_the_language_switch_turns_every_page_english(page: Any, tmp_path: Path) -> None:
    p = page
    p.click(".langs a[hreflang=en]")
    p.wait_for_function("() => document.documentElement.lang === 'en'")
    assert p.locator("nav.pages a[aria-current=page]").inner_text() == "Overview"
    assert "Current stage" in p.locator("#stage").inner_text()
    shot(p, tmp_path, "en-overview")
    for name in ("forecast", "calendar", "tasks", "deliveries", "members"):
        p.click(f"nav.pages a[href='/{name}']")
        assert p.get_attribute("html", "lang") == "en"
        shot(p, tmp_path, f"en-{name}")
    p.click(".langs a[hreflang=zh-CN]")
    p.wait_for_function("() => document.documentElement.lang === 'zh-CN'")


def test_a_fresh_browser_without_the_token_sees_only_the_sign_in_form(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    context = browser.new_context(locale="en-US", base_url=server.url)
    p = context.new_page()
    p.goto("/tasks")
    assert p.url.startswith(server.url + "/login?next=")
    p.fill("input[name=name]", "eve")
    p.fill("input[name=token]", "not-the-token-0000")
    p.click("button[type=submit]")
    assert "That token is not the dashboard's." in p.locator("[role=alert]").inner_text()
    shot(p, tmp_path, "en-login")
    context.close()
