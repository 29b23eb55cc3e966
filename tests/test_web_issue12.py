"""The dashboard for issue 12: exits and their weak links, targets, applications to decide,
incidents to open and close — every change through the engine's functions, with the actor, and
PII attributes never on a page.

The run is tests/test_run_issue12.py's playbook on a virtual clock.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from sop.engine.run.store.base import ApplicationState, IncidentState
from sop.engine.web import DashboardSettings, create_dashboard_app

from tests.test_run_issue12 import PLAYBOOK, Community

with warnings.catch_warnings():  # starlette 1.x asks for httpx2; httpx is what the project has
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "web12-token-8c1d2e"
BASE = "http://127.0.0.1:8750"
SAME = {"Origin": BASE}
PHONE = "13700004444"


@pytest.fixture
def community(tmp_path: Path) -> Community:
    c = Community(tmp_path)
    for m in ("a", "b", "c"):
        c.ev("joined", m, 0, attributes={"city": "北京", "phone": PHONE if m == "a" else "1"})
    c.ev("message", "a", 0)
    c.ev("message", "a", 1)
    c.ev("apply", "i1", 1, attributes={"note": "朋友推荐", "source": "invite", "phone": PHONE})
    c.ev("apply", "i2", 1, attributes={"note": "想学", "source": "invite"})
    c.run_until(3, 11)  # Wednesday's one task per Beijing member has run
    return c


def client(c: Community, token: str | None = TOKEN) -> TestClient:
    app = create_dashboard_app(
        c.program, c.store, "t12", DashboardSettings(token=token, clock=c.clock)
    )
    return TestClient(app, base_url=BASE, follow_redirects=False)


def signed_in(c: Community, name: str = "小李") -> TestClient:
    t = client(c)
    r = t.post("/login", data={"name": name, "token": TOKEN, "next": "/"}, headers=SAME)
    assert r.status_code == 303
    return t


def csrf_of(t: TestClient, path: str) -> str:
    page = t.get(path)
    assert page.status_code == 200, page.text
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m
    return m.group(1)


@pytest.mark.parametrize("path", ["/applications", "/incidents"])
@pytest.mark.parametrize(("lang", "word"), [("zh-CN", "入群申请"), ("en", "Applications")])
def test_the_new_pages_render_in_both_languages(
    community: Community, path: str, lang: str, word: str
) -> None:
    r = client(community, None).get(path, headers={"Accept-Language": lang})
    assert r.status_code == 200
    assert word in r.text  # the nav names the applications page on every page


def test_the_overview_shows_targets_exits_and_the_weak_links(community: Community) -> None:
    text = client(community, None).get("/").text
    row = re.search(r'<tr class="unmet" data-target="members">.*?</tr>', text, re.S)
    assert row and "75%" in row.group(0)  # 3 of the 4 members the target asks for
    exit_ = re.search(r'<li class="exit closed" data-exit="success">.*?</li>\s*</ul>', text, re.S)
    assert exit_ and "avg(daily_speak_rate, 2d) &gt;= 50%" in exit_.group(0)
    assert 'class="weak-link"' in exit_.group(0)
    assert "held 0 of 2 days" in exit_.group(0)
    assert "Applications waiting for review: 2" in text


def test_applications_are_decided_from_the_page_by_who_is_signed_in(
    community: Community,
) -> None:
    t = signed_in(community)
    page = t.get("/applications").text
    assert 'data-member="i1"' in page and "朋友推荐" in page
    assert PHONE not in page
    token = csrf_of(t, "/applications")
    r = t.post(
        "/applications/decide",
        data={"csrf": token, "member": "i1", "decision": "approve", "note": "ok"},
        headers=SAME,
    )
    assert r.status_code == 303 and r.headers["location"] == "/applications"
    app = community.store.get_application("t12", "i1")
    assert app is not None and app.state is ApplicationState.APPROVED and app.decided_by == "小李"
    assert community.members("i1")["i1"].joined_at is not None
    again = t.post(
        "/applications/decide",
        data={"csrf": token, "member": "i1", "decision": "reject"},
        headers=SAME,
    )
    assert again.status_code == 409  # nothing pending any more: said, not done


def test_a_decision_without_the_pages_csrf_token_or_from_another_site_changes_nothing(
    community: Community,
) -> None:
    t = signed_in(community)
    token = csrf_of(t, "/applications")
    forged = {"member": "i2", "decision": "reject"}
    assert t.post("/applications/decide", data=forged, headers=SAME).status_code == 403
    cross = {"Origin": "https://evil.example"}
    r = t.post("/applications/decide", data={**forged, "csrf": token}, headers=cross)
    assert r.status_code == 403
    app = community.store.get_application("t12", "i2")
    assert app is not None and app.state is ApplicationState.PENDING


def test_an_incident_is_opened_and_closed_from_the_page(community: Community) -> None:
    t = signed_in(community)
    page = t.get("/incidents").text
    assert 'data-plan="quiet"' in page and "4" in page  # its steps, escalation after 240 min
    # a `do` step reads as the action's name and its text, not the raw kind
    assert "<li>post by" in page and "「大家好」" in page  # kind.post reads "post" in English
    zh = t.get("/incidents", headers={"Accept-Language": "zh-CN"}).text
    assert "立即执行：发帖" in zh and "：post" not in zh  # the action's name, not the raw kind
    token = csrf_of(t, "/incidents")
    before = {i.id for i in community.store.incidents("t12")}
    r = t.post(
        "/incidents/open", data={"csrf": token, "name": "quiet", "note": "群里安静"}, headers=SAME
    )
    assert r.status_code == 303
    opened = [i for i in community.store.incidents("t12") if i.id not in before]
    assert len(opened) == 1 and opened[0].opened_by == "小李" and opened[0].note == "群里安静"
    assert f'data-incident="{opened[0].id}"' in t.get("/incidents").text
    r = t.post("/incidents/close", data={"csrf": token, "id": opened[0].id}, headers=SAME)
    assert r.status_code == 303
    closed = community.store.get_incident("t12", opened[0].id)
    assert closed is not None and closed.state is IncidentState.CLOSED
    assert (
        t.post("/incidents/open", data={"csrf": token, "name": "nope"}, headers=SAME).status_code
        == 400
    )


def test_pii_never_reaches_a_page(community: Community) -> None:
    tasks = [t for t in community.store.tasks("t12") if t.action == "care"]
    assert any(PHONE in t.text for t in tasks)  # the staff task itself has it
    c = client(community, None)
    for path in ("/", "/tasks", "/members", "/applications", "/incidents"):
        assert PHONE not in c.get(path).text, path


def test_the_pages_of_constructs_a_playbook_lacks_are_not_in_its_nav(tmp_path: Path) -> None:
    # the playbook up to its admission, then its stages: no admission, no incidents
    bare = PLAYBOOK.split("admission:")[0] + "stages:" + PLAYBOOK.split("\nstages:")[1]
    c = Community(tmp_path, text=bare)
    assert c.program.playbook.admission is None and not c.program.playbook.incidents
    text = client(c, None).get("/").text
    assert 'href="/members"' in text
    assert 'href="/applications"' not in text and 'href="/incidents"' not in text
