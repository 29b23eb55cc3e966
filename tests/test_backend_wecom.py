"""WeCom backends against a real loopback server: the exact requests, WeCom's documented answers.

`wecom-robot` and `wecom-app` talk to pytest-httpserver on 127.0.0.1 (base_url), never to a mocked
HTTP layer. Each test plants fixed secrets and checks the request WeCom would receive byte for
byte; error bodies are the ones WeCom documents (docs/backends/wecom.md cites each).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pytest_httpserver import HTTPServer
from sop.engine.core.catalog import DEFAULT_RATES, MESSAGE_KINDS
from sop.engine.core.version import version
from sop.engine.lang.model import BackendSpec
from sop.engine.run.backends import BackendError, _http, configs_for
from sop.engine.run.backends._text import Unit, size
from sop.engine.run.backends.wecom import (
    CAPABILITIES,
    ERROR_CODES,
    GroupQuota,
    Verdict,
    WeComAppBackend,
    create_app,
    create_robot,
    quota_window,
    wecom_markdown,
    wecom_plain,
)
from sop.engine.run.ports import Backend, BackendConfig, Delivery, SendResult, SendStatus
from sop.engine.validate import Options, validate_file
from werkzeug import Request, Response

from tests.backend_logs import urllib3_debug

SHANGHAI = ZoneInfo("Asia/Shanghai")
DUE = datetime(2027, 2, 8, 9, 0, tzinfo=SHANGHAI)
KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"  # the robot key WeCom's own example shows
SECRET = "corp-S3CRET-value"
TOKEN1 = "accesstoken000001-T0KEN"
TOKEN2 = "accesstoken000002-T0KEN"
OK = {"errcode": 0, "errmsg": "ok"}
JSON_TYPE = "application/json; charset=utf-8"


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    return ("127.0.0.1", 0)


def delivery(**changes: object) -> Delivery:
    """A welcome message to member m1, due 09:00 Shanghai time; fields overridable."""
    fields: dict[str, object] = {
        "key": "lifecycle/welcome/2027-02-08T01:00:00Z/m1",
        "run": "run-1",
        "playbook": "lifecycle",
        "action": "welcome",
        "stage": "onboarding",
        "kind": "message",
        "audience": "member",
        "member": "m1",
        "owner": "ops",
        "scheduled_at": DUE,
        "due_at": DUE + timedelta(minutes=1),
        "title": "Welcome",
        "text": "Welcome aboard, Ana!",
        "attempt": 1,
        "attributes": {"name": "Ana", "wecom_userid": "ana01", "phone": "13800001111"},
    }
    fields.update(changes)
    return Delivery(**fields)


@dataclass
class Call:
    method: str
    path: str
    args: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeWeCom:
    """A handler for every path: records each request, answers from per-path queues (or OK)."""

    answers: dict[str, list[Response | dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def answer(self, path: str, *responses: Response | dict[str, Any]) -> None:
        self.answers.setdefault(path, []).extend(responses)

    def __call__(self, request: Request) -> Response:
        self.calls.append(
            Call(request.method, request.path, dict(request.args), dict(request.headers),
                 request.get_data())
        )  # fmt: skip
        queue = self.answers.get(request.path, [])
        reply = queue.pop(0) if queue else _default(request.path)
        if isinstance(reply, Response):
            return reply
        return Response(json.dumps(reply, ensure_ascii=False), 200, content_type="application/json")

    def on(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]


def _default(path: str) -> dict[str, Any]:
    if path == "/cgi-bin/gettoken":
        return {"errcode": 0, "errmsg": "ok", "access_token": TOKEN1, "expires_in": 7200}
    return OK


@pytest.fixture
def wecom(httpserver: HTTPServer) -> FakeWeCom:
    fake = FakeWeCom()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(fake)
    return fake


def robot(httpserver: HTTPServer, env: dict[str, str] | None = None, **options: object) -> Any:
    options.setdefault("key", "${env:WECOM_KEY}")
    options.setdefault("base_url", httpserver.url_for("/"))
    config = BackendConfig("group", "wecom-robot", None, options)
    return create_robot(config, {"WECOM_KEY": KEY, **(env or {})})


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def app(httpserver: HTTPServer, *, ticker: Ticker | None = None, **options: Any) -> WeComAppBackend:
    defaults: dict[str, object] = {
        "corp_id": "ww1234567890abcdef",
        "corp_secret": "${env:WECOM_SECRET}",
        "agent_id": "1000002",
        "to_user": "zhangsan|lisi",
        "sender": "owner01",
        "base_url": httpserver.url_for("/"),
    }
    config = BackendConfig("crm", "wecom-app", None, {**defaults, **options})
    built = create_app(config, {"WECOM_SECRET": SECRET})
    built._clock = lambda: datetime(2027, 2, 8, 1, 0, tzinfo=UTC)  # 09:00 in Beijing
    if ticker is not None:
        built._monotonic = ticker
    return built


# -- the markdown dialect ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain 文本", "plain 文本"),
        ("**bold** and __strong__ and ***both***", "**bold** and **strong** and **both**"),
        ("*italic* _also_ ~~struck~~", "italic also struck"),
        ("snake_case_name and 2 * 3 * 4", "snake_case_name and 2 * 3 * 4"),
        ("# Title\n## Sub ##\n#hashtag", "# Title\n## Sub\n#hashtag"),
        ("Title\n=====\nSub\n---", "# Title\n## Sub"),
        ("above\n\n***\n___", "above\n\n---\n---"),
        ("* one\n+ two\n- three\n  * nested", "- one\n- two\n- three\n  - nested"),
        ("> quoted **bold**", "> quoted **bold**"),
        ("`code_x *y*` and ``a`b``", "`code_x *y*` and a`b"),
        ("```py\nprint(1)\n\nx = `y`\n```\nafter", "`print(1)`\n\nx = `y`\nafter"),
        ("![logo](https://x.cn/a_b.png) ![](https://x.cn/c.png)",
         "[logo](https://x.cn/a_b.png) [https://x.cn/c.png](https://x.cn/c.png)"),
        ('[docs *v2*](https://x.cn/a_b "title")', "[docs v2](https://x.cn/a_b)"),
        ("<https://x.cn/a_b_c>", "https://x.cn/a_b_c"),
        ('<font color="info">ok</font> <font color="red">red</font>',
         '<font color="info">ok</font> red'),
        ("<font color='WARNING'>w</font><b>b</b><br/>next",
         '<font color="warning">w</font>b\nnext'),
        ("hi <@zhangsan>, a < b", "hi <@zhangsan>, a < b"),
        (r"\*not italic\* \_x\_", "*not italic* _x_"),
    ],
)  # fmt: skip
def test_markdown_becomes_wecom_s_subset(text: str, expected: str) -> None:
    assert wecom_markdown(text) == expected


def test_wecom_plain_drops_the_markup_wecom_would_show_literally() -> None:
    text = '# 通知\n**周三** 直播 [报名](https://x.cn/r) <font color="info">免费</font>\n> 引用'
    assert wecom_plain(text) == "通知\n周三 直播 报名 (https://x.cn/r) 免费\n引用"
    assert wecom_plain("<https://x.cn>") == "https://x.cn"


# -- wecom-robot: the request -------------------------------------------------------------------


def test_a_member_message_posts_text_mentioning_the_member_by_userid(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    backend = robot(httpserver)
    result = backend.send(delivery())
    backend.close()
    assert result == SendResult.ok("posted")
    [call] = wecom.calls
    assert (call.method, call.path, call.args) == ("POST", "/cgi-bin/webhook/send", {"key": KEY})
    assert call.headers["Content-Type"] == JSON_TYPE
    assert call.headers["User-Agent"] == f"sop/{version()}"
    assert call.body == (
        b'{"msgtype":"text","text":{"content":"Welcome aboard, Ana!","mentioned_list":["ana01"]}}'
    )


@pytest.mark.parametrize(
    ("attributes", "mention", "note"),
    [
        ({"phone": "138 0000 1111"}, {"mentioned_mobile_list": ["13800001111"]}, ""),
        ({"wecom_userid": "x y", "phone": "13800001111"}, {},
         "no mention: wecom_userid is not a WeCom userid"),
        ({"phone": "call me"}, {}, "no mention: phone is not a phone number"),
        ({}, {}, "no mention: the member has no wecom_userid or phone"),
    ],
)  # fmt: skip
def test_a_member_without_a_usable_userid_is_mentioned_by_phone_or_not_at_all(
    httpserver: HTTPServer,
    wecom: FakeWeCom,
    attributes: dict[str, object],
    mention: dict[str, object],
    note: str,
) -> None:
    backend = robot(httpserver)
    result = backend.send(delivery(attributes=attributes))
    backend.close()
    assert result == SendResult.ok("; ".join(filter(None, ["posted", note])))
    assert wecom.calls[0].json() == {
        "msgtype": "text",
        "text": {"content": "Welcome aboard, Ana!", **mention},
    }


def test_mention_all_pings_everyone_only_on_posts_to_everyone_and_tasks_ping_no_one(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    backend = robot(httpserver, mention_all="true")
    backend.send(delivery(audience="everyone", member=None, attributes={}, text="直播开始"))
    backend.send(delivery())
    backend.send(delivery(audience="tier:core", member=None, attributes={}, text="core"))
    backend.send(delivery(kind="task", text="Call Ana"))  # about the member, for staff
    backend.close()
    assert [c.json()["text"] for c in wecom.calls] == [
        {"content": "直播开始", "mentioned_list": ["@all"]},
        {"content": "Welcome aboard, Ana!", "mentioned_list": ["ana01"]},
        {"content": "core"},
        {"content": "Call Ana"},
    ]


def test_markdown_wecom_posts_the_converted_text_and_mentions_in_the_content(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    backend = robot(httpserver, markdown="wecom")
    text = "# 欢迎\n*Ana*, read the **rules**"
    assert backend.send(delivery(text=text)) == SendResult.ok("posted")
    phone_only = backend.send(delivery(text="hi", attributes={"phone": "13800001111"}))
    backend.close()
    assert (
        wecom.calls[0].body
        == (
            '{"msgtype":"markdown","markdown":{"content":"# 欢迎\\nAna, read the **rules**'
            '\\n<@ana01>"}}'
        ).encode()
    )
    assert phone_only == SendResult.ok("posted; no mention: WeCom markdown mentions by userid only")
    assert wecom.calls[1].json() == {"msgtype": "markdown", "markdown": {"content": "hi"}}


def test_the_body_is_raw_utf8_without_escapes_or_control_characters(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    backend = robot(httpserver)
    backend.send(delivery(text="欢迎\x07 \u202eAna\r\n第二行\t!", attributes={}))
    backend.close()
    body = wecom.calls[0].body
    assert b"\\u" not in body  # WeCom refuses \uXXXX escapes (errcode 40033)
    assert json.loads(body)["text"]["content"] == "欢迎 \u202eAna\n第二行\t!"


def test_a_long_text_goes_in_numbered_parts_that_each_fit_2048_bytes(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    backend = robot(httpserver)
    text = "。".join(["社区公告第一段内容" * 12] * 15)  # 3 bytes a character: 4,902 bytes
    result = backend.send(delivery(text=text))
    backend.close()
    assert result == SendResult.ok("posted, in 3 parts")
    bodies = [c.json()["text"] for c in wecom.calls]
    assert [size(b["content"], Unit.BYTES) <= 2048 for b in bodies] == [True] * 3
    assert [b["content"][-6:] for b in bodies] == [" (1/3)", " (2/3)", " (3/3)"]
    assert [b.get("mentioned_list") for b in bodies] == [["ana01"], None, None]
    assert (backend.cost(delivery(text=text)), backend.cost(delivery())) == (3, 1)


def test_markdown_parts_fit_4096_bytes_with_the_mention(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    backend = robot(httpserver, markdown="wecom")
    result = backend.send(delivery(text="\n\n".join(["**要点** 内容" * 80] * 4)))  # 5,446 bytes
    backend.close()
    assert result == SendResult.ok("posted, in 2 parts")
    contents = [c.json()["markdown"]["content"] for c in wecom.calls]
    assert all(len(c.encode()) <= 4096 for c in contents)
    assert contents[0].endswith("(1/2)\n<@ana01>") and contents[1].endswith("(2/2)")


def test_a_later_part_failing_is_uncertain_never_a_resend_of_the_whole(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    wecom.answer("/cgi-bin/webhook/send", OK, {"errcode": 45009, "errmsg": "api freq out of limit"})
    backend = robot(httpserver)
    result = backend.send(delivery(text="段落。" * 300))  # 2,700 bytes
    backend.close()
    assert result == SendResult.uncertain(
        "part 2/2 failed after 1 of 2 parts were posted (not resent: resolve by hand): errcode"
        " 45009 (API call frequency out of limit): api freq out of limit"
    )


def test_the_first_part_failing_is_that_failure_as_it_is(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    wecom.answer("/cgi-bin/webhook/send", {"errcode": 45009, "errmsg": "api freq out of limit"})
    backend = robot(httpserver)
    result = backend.send(delivery(text="段落。" * 800))
    backend.close()
    assert result.status is SendStatus.RETRY and result.retry_after == 60.0
    assert len(wecom.calls) == 1


def test_an_empty_text_and_a_kind_a_message_cannot_do_are_refused_unsent(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    backend = robot(httpserver)
    empty = backend.send(delivery(text=" \n\x00"))
    remove = backend.send(delivery(kind="remove"))
    backend.close()
    assert empty == SendResult.permanent("the text is empty; WeCom refuses it (errcode 44004)")
    assert remove.status is SendStatus.PERMANENT
    assert remove.detail.startswith("this backend does not send `remove` actions")
    assert wecom.calls == []


def test_the_robot_declares_its_capabilities(httpserver: HTTPServer) -> None:
    text, markdown = robot(httpserver), robot(httpserver, markdown="wecom")
    rated = create_robot(
        BackendConfig("g", "wecom-robot", None, {"key": "k"}, rate_per_minute=12), {}
    )
    for b in (text, markdown, rated):
        b.close()
    caps = text.capabilities
    assert caps.kinds == MESSAGE_KINDS | {"task"} and "mute" not in caps.kinds
    assert (caps.mentions, caps.idempotent, caps.markdown) == (True, False, None)
    assert caps.rate_per_minute == DEFAULT_RATES["wecom-robot"] == 20
    assert rated.capabilities.rate_per_minute == 12
    assert (text.limit, markdown.limit) == ((2048, "bytes"), (4096, "bytes"))
    assert (caps.max_length, caps.length_unit) == (2048, "bytes")
    assert markdown.capabilities.markdown == "wecom"
    assert markdown.capabilities.max_length == 4096
    assert caps == CAPABILITIES["wecom-robot"]  # what `sop backends` shows is what is built
    assert isinstance(text, Backend)


def test_max_length_lowers_the_bytes_of_one_message_and_splits_rather_than_refuses(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    backend = robot(httpserver, max_length="100")
    result = backend.send(delivery(text="一二三四五六七八九十。" * 8, audience="everyone"))
    backend.close()
    assert backend.capabilities.max_length == 100 and backend.limit == (100, "bytes")
    assert result == SendResult.ok("posted, in 4 parts")  # 264 bytes, 100 less " (n/n)" a part
    assert all(len(c.json()["text"]["content"].encode()) <= 100 for c in wecom.calls)
    with pytest.raises(BackendError, match="max_length must be between 64 and 2048"):
        robot(httpserver, max_length="9000")  # WeCom's limit is never raised
    with pytest.raises(BackendError, match="max_length must be between 64 and 2048"):
        robot(httpserver, max_length="10")


def test_the_whole_webhook_url_works_as_the_target(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    url = httpserver.url_for(f"/cgi-bin/webhook/send?key={KEY}")
    backend = create_robot(BackendConfig("g", "wecom-robot", "${env:HOOK}"), {"HOOK": url})
    result = backend.send(delivery(attributes={}))
    assert repr(backend) == (
        f"WeComRobotBackend(name='g', origin='{origin(httpserver)}', msgtype='text')"
    )
    backend.close()
    assert result.status is SendStatus.OK
    assert (wecom.calls[0].path, wecom.calls[0].args) == ("/cgi-bin/webhook/send", {"key": KEY})


@pytest.mark.parametrize(
    ("target", "options", "message"),
    [
        (None, {}, 'needs the robot\'s key: key: "${env:NAME}" in the playbook'),
        (None, {"key": "k", "markdown": "commonmark"}, "markdown must be wecom"),
        (None, {"key": "k", "markdown": "wecom", "mention_all": "yes"},
         "mention_all needs text messages"),
        (None, {"key": "k", "base_url": "ftp://x"}, "base_url must be an http:// or https:// URL"),
        (None, {"key": "k", "mention_al": "true"}, 'has no option "mention_al"'),
        (f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?k={KEY}", {},
         "the webhook URL must end in ?key=..."),
        (f"qyapi.weixin.qq.com/send?key={KEY}", {}, "url must be an http:// or https:// URL"),
        (f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY}", {"base_url": "http://x"},
         "base_url goes with key:, not with a webhook URL"),
    ],
)  # fmt: skip
def test_a_robot_that_cannot_work_is_refused_without_quoting_the_key(
    target: str | None, options: dict[str, object], message: str
) -> None:
    with pytest.raises(BackendError, match=re.escape(message)) as e:
        create_robot(BackendConfig("g", "wecom-robot", target, options), {})
    assert KEY not in str(e.value)


# -- wecom-robot: WeCom's answers ---------------------------------------------------------------


def _json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (_json_response({"errcode": 45009, "errmsg": "api freq out of limit"}),
         SendResult.retry("errcode 45009 (API call frequency out of limit): api freq out of"
                          " limit", 60.0)),
        (_json_response({"errcode": -1, "errmsg": "system error"}),
         SendResult.retry("errcode -1 (system busy): system error")),
        (_json_response({"errcode": 93000, "errmsg": "invalid webhook url, hint: [1653710655]"}),
         SendResult.permanent("errcode 93000 (invalid webhook URL, or the robot left the group):"
                              " invalid webhook url, hint: [1653710655]")),
        (_json_response({"errcode": 93004, "errmsg": "robot is disabled"}),
         SendResult.permanent("errcode 93004 (the robot is disabled): robot is disabled")),
        (_json_response({"errcode": 93008, "errmsg": "not in chat"}),
         SendResult.permanent("errcode 93008 (the robot is not in the group): not in chat")),
        (_json_response({"errcode": 40008, "errmsg": "invalid message type"}),
         SendResult.permanent("errcode 40008: invalid message type")),
        (Response("upstream boom", 500), SendResult.retry("HTTP 500: upstream boom")),
        (Response("bad gateway", 502), SendResult.retry("HTTP 502: bad gateway")),
        (Response("", 504), SendResult.uncertain("HTTP 504: the gateway timed out")),
        (Response("slow down", 429, headers={"Retry-After": "7"}),
         SendResult.retry("HTTP 429: slow down", 7.0)),
        (Response("<html>ok</html>", 200),
         SendResult.uncertain("HTTP 200 without an errcode: <html>ok</html>")),
        (_json_response({"ok": True}), SendResult.uncertain("HTTP 200 without an errcode")),
        (Response("", 302, headers={"Location": "https://elsewhere"}),
         SendResult.permanent("HTTP 302: {origin} redirects")),
        (Response("nope", 404), SendResult.permanent("HTTP 404: nope")),
    ],
)  # fmt: skip
def test_each_documented_answer_classifies(
    httpserver: HTTPServer, wecom: FakeWeCom, reply: Response, expected: SendResult
) -> None:
    wecom.answer("/cgi-bin/webhook/send", reply)
    backend = robot(httpserver)
    result = backend.send(delivery())
    backend.close()
    assert result == SendResult(
        expected.status,
        expected.detail.replace("{origin}", origin(httpserver)),
        expected.retry_after,
    )


def origin(httpserver: HTTPServer) -> str:
    """The test server's origin as details name it (its host is the session's first choice)."""
    return httpserver.url_for("").rstrip("/")


def test_the_table_classifies_the_codes_the_brief_and_the_docs_name() -> None:
    verdicts = {code: e.verdict for code, e in ERROR_CODES.items()}
    assert {c for c, v in verdicts.items() if v is Verdict.RETRY} == {-1, 6000, 45009, 45033}
    assert {c for c, v in verdicts.items() if v is Verdict.TOKEN} == {40014, 41001, 42001}
    assert {93000, 93004, 93008, 60020, 81013} <= {
        c for c, v in verdicts.items() if v is Verdict.PERMANENT
    }


def test_a_read_timeout_after_posting_is_uncertain(httpserver: HTTPServer) -> None:
    release = threading.Event()
    arrived: list[bytes] = []

    def slow(request: Request) -> Response:
        arrived.append(request.get_data())
        release.wait(5)
        return Response(json.dumps(OK), 200)

    httpserver.expect_request("/cgi-bin/webhook/send").respond_with_handler(slow)
    backend = robot(httpserver, read_timeout="0.3")
    started = time.monotonic()
    try:
        result = backend.send(delivery())
    finally:
        release.set()
        backend.close()
    assert time.monotonic() - started < 3
    assert result == SendResult.uncertain(
        f"no answer from {origin(httpserver)} within 0.3 s after the request was sent"
    )
    assert len(arrived) == 1


def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    config = BackendConfig(
        "g", "wecom-robot", None, {"key": "k", "base_url": f"http://127.0.0.1:{port}"}
    )
    backend = create_robot(config, {})
    result = backend.send(delivery())
    backend.close()
    assert result == SendResult.retry(
        f"could not connect to http://127.0.0.1:{port}: connection refused or unreachable"
    )


def test_the_robot_key_is_in_no_detail_error_repr_or_log_record(
    httpserver: HTTPServer, wecom: FakeWeCom, caplog: pytest.LogCaptureFixture
) -> None:
    echo = {"errcode": 93000, "errmsg": f"invalid webhook url {KEY}, key={KEY}"}
    wecom.answer("/cgi-bin/webhook/send", echo, Response(f"error for {KEY}", 500))
    with urllib3_debug(caplog):
        backend = robot(httpserver)
        results = [backend.send(delivery()), backend.send(delivery()), backend.send(delivery())]
        text = repr(backend)
        backend.close()
        backend.close()
        with pytest.raises(RuntimeError) as e:
            backend.send(delivery())
    assert results[0].detail == (
        "errcode 93000 (invalid webhook URL, or the robot left the group): invalid webhook url"
        " ***, key=***"
    )
    assert results[1] == SendResult.retry("HTTP 500: error for ***")
    assert results[2].status is SendStatus.OK
    assert any("/cgi-bin/webhook/send?key=***" in r.getMessage() for r in caplog.records)
    logged = [r.getMessage() for r in caplog.records if r.name != "werkzeug"]  # the test server's
    seen = [*(r.detail for r in results), text, str(e.value), *logged]
    assert not [s for s in seen if KEY in s]


def test_closing_the_robot_releases_its_secrets_from_the_log_filter(httpserver: HTTPServer) -> None:
    pool = logging.getLogger("urllib3.connectionpool")
    assert _http.SCRUB in pool.filters  # one filter for every backend, there from the start
    before = _http.SCRUB.secrets.get(KEY, 0)
    backend = robot(httpserver)
    assert _http.SCRUB.secrets[KEY] == before + 1
    backend.close()
    assert _http.SCRUB.secrets.get(KEY, 0) == before
    assert pool.filters.count(_http.SCRUB) == 1


# -- wecom-app: the access token -----------------------------------------------------------------


def staff_task(**changes: object) -> Delivery:
    fields: dict[str, object] = {
        "kind": "task",
        "audience": "staff",
        "action": "call-new-members",
        "text": "Call the 3 members who joined today",
        "attributes": {"wecom_userid": "ana01"},  # the member's: a staff task never goes there
    }
    return delivery(**{**fields, **changes})


def test_a_staff_task_is_an_application_message_with_a_fetched_token(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    wecom.answer("/cgi-bin/message/send", {**OK, "invaliduser": "", "msgid": "msgid-1"})
    backend = app(httpserver)
    result = backend.send(staff_task())
    backend.close()
    assert result == SendResult.ok("application message sent", remote_id="msgid-1")
    token_call, send_call = wecom.calls
    assert (token_call.method, token_call.path, token_call.args) == (
        "GET",
        "/cgi-bin/gettoken",
        {"corpid": "ww1234567890abcdef", "corpsecret": SECRET},
    )
    assert (send_call.method, send_call.path, send_call.args) == (
        "POST",
        "/cgi-bin/message/send",
        {"access_token": TOKEN1},
    )
    assert send_call.headers["Content-Type"] == JSON_TYPE
    assert send_call.body == (
        b'{"touser":"zhangsan|lisi","msgtype":"text","agentid":1000002,'
        b'"text":{"content":"Call the 3 members who joined today"}}'
    )


def test_the_token_is_reused_until_its_expiry_less_a_margin(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    ticker = Ticker()
    backend = app(httpserver, ticker=ticker)
    backend.send(staff_task())
    ticker.now += 7200 - 300 - 1
    backend.send(staff_task())
    ticker.now += 2
    wecom.answer("/cgi-bin/gettoken", {**OK, "access_token": TOKEN2, "expires_in": 7200})
    backend.send(staff_task())
    backend.close()
    assert [c.path for c in wecom.calls] == [
        "/cgi-bin/gettoken",
        "/cgi-bin/message/send",
        "/cgi-bin/message/send",
        "/cgi-bin/gettoken",
        "/cgi-bin/message/send",
    ]
    assert [c.args["access_token"] for c in wecom.on("/cgi-bin/message/send")] == [
        TOKEN1, TOKEN1, TOKEN2,
    ]  # fmt: skip


@pytest.mark.parametrize("code", [40014, 42001, 41001])
def test_a_refused_token_is_renewed_and_the_call_repeated_once(
    httpserver: HTTPServer, wecom: FakeWeCom, code: int
) -> None:
    wecom.answer("/cgi-bin/message/send", {"errcode": code, "errmsg": "access_token expired"})
    wecom.answer("/cgi-bin/gettoken", _default("/cgi-bin/gettoken"), {**OK, "access_token": TOKEN2})
    backend = app(httpserver)
    result = backend.send(staff_task())
    backend.close()
    assert result.status is SendStatus.OK
    assert [c.args.get("access_token") for c in wecom.calls] == [None, TOKEN1, None, TOKEN2]


def test_a_token_refused_twice_is_retried_later_not_looped(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    refused = {"errcode": 40014, "errmsg": "invalid access_token"}
    wecom.answer("/cgi-bin/message/send", refused, refused)
    backend = app(httpserver)
    result = backend.send(staff_task())
    backend.close()
    assert result == SendResult.retry(
        "errcode 40014 (invalid access_token): invalid access_token; refused again with a fresh"
        " access token"
    )
    assert len(wecom.calls) == 4


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"errcode": 40001, "errmsg": "invalid credential"},
         SendResult.permanent("getting an access token: errcode 40001 (invalid corp_secret):"
                              " invalid credential")),
        ({"errcode": 40013, "errmsg": "invalid corpid"},
         SendResult.permanent("getting an access token: errcode 40013 (invalid corp_id):"
                              " invalid corpid")),
        ({"errcode": 60020, "errmsg": "not allow to access from your ip, from ip: 1.2.3.4"},
         SendResult.permanent("getting an access token: errcode 60020 (this server's IP is not"
                              " among the app's trusted IPs): not allow to access from your ip,"
                              " from ip: 1.2.3.4")),
        ({"errcode": -1, "errmsg": "system busy"},
         SendResult.retry("getting an access token: errcode -1 (system busy): system busy")),
        ({"errcode": 0, "errmsg": "ok"},
         SendResult.retry("gettoken answered without an access_token")),
    ],
)  # fmt: skip
def test_a_token_wecom_will_not_give_classifies_and_nothing_is_sent(
    httpserver: HTTPServer, wecom: FakeWeCom, reply: dict[str, Any], expected: SendResult
) -> None:
    wecom.answer("/cgi-bin/gettoken", reply)
    backend = app(httpserver)
    result = backend.send(staff_task())
    backend.close()
    assert result == expected
    assert wecom.on("/cgi-bin/message/send") == []


def test_a_slow_token_answer_is_retried_since_asking_changes_nothing(
    httpserver: HTTPServer,
) -> None:
    release = threading.Event()
    httpserver.expect_request("/cgi-bin/gettoken").respond_with_handler(
        lambda r: (release.wait(5), Response("{}", 200))[1]
    )
    backend = app(httpserver, read_timeout="0.3")
    try:
        result = backend.send(staff_task())
    finally:
        release.set()
        backend.close()
    assert result == SendResult.retry(
        f"getting an access token: no answer from {origin(httpserver)} within 0.3 s"
    )


# -- wecom-app: where each delivery goes -------------------------------------------------------


def test_a_member_message_goes_to_the_member_s_userid(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    backend = app(httpserver, markdown="wecom")
    result = backend.send(delivery(text="**欢迎** *Ana*"))
    missing = backend.send(delivery(attributes={"phone": "13800001111"}))
    wrong = backend.send(delivery(attributes={"wecom_userid": "a|b"}))
    backend.close()
    assert result.status is SendStatus.OK
    assert wecom.on("/cgi-bin/message/send")[0].json() == {
        "touser": "ana01",
        "msgtype": "markdown",
        "agentid": 1000002,
        "markdown": {"content": "**欢迎** Ana"},
    }
    assert missing == SendResult.permanent(
        "the member has no wecom_userid: WeCom cannot address them"
    )
    assert wrong == SendResult.permanent(
        "the member has a wecom_userid that is not one: WeCom cannot address them"
    )


def test_staff_recipients_come_from_the_options(httpserver: HTTPServer, wecom: FakeWeCom) -> None:
    backend = app(httpserver, to_user="zhangsan", to_party="2, 3", to_tag="7")
    backend.send(staff_task(kind="post"))
    backend.close()
    body = wecom.on("/cgi-bin/message/send")[0].json()
    assert {k: body[k] for k in ("touser", "toparty", "totag")} == {
        "touser": "zhangsan",
        "toparty": "2|3",
        "totag": "7",
    }
    everyone_visible = app(httpserver, to_user="@all")
    everyone_visible.send(staff_task())
    everyone_visible.close()
    assert wecom.on("/cgi-bin/message/send")[1].json()["touser"] == "@all"


@pytest.mark.parametrize(
    ("options", "sent", "expected"),
    [
        ({"to_user": None}, staff_task(),
         "staff deliveries need option to_user, to_party or to_tag"),
        ({"sender": None}, delivery(audience="everyone", member=None),
         "posts to everyone go out as customer-group mass sends: set option sender"),
        ({}, delivery(audience="tier:core", member=None),
         "WeCom has no way to address `tier:core` from an app (a customer-group mass send"
         " reaches whole groups)"),
        ({}, delivery(audience="referrer"),
         "WeCom has no way to address `referrer` from an app (a customer-group mass send"
         " reaches whole groups)"),
        ({"agent_id": None}, staff_task(), "application messages need option agent_id"),
    ],
)  # fmt: skip
def test_a_delivery_the_app_cannot_address_is_permanent_and_unsent(
    httpserver: HTTPServer,
    wecom: FakeWeCom,
    options: dict[str, Any],
    sent: Delivery,
    expected: str,
) -> None:
    backend = app(httpserver, **options)
    result = backend.send(sent)
    backend.close()
    assert result == SendResult.permanent(expected)
    assert wecom.calls == []


def test_recipients_wecom_skipped_are_named_in_the_detail(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    wecom.answer(
        "/cgi-bin/message/send",
        {**OK, "invaliduser": "lisi", "invalidparty": "", "msgid": "m1"},
    )
    backend = app(httpserver)
    result = backend.send(staff_task())
    backend.close()
    assert result == SendResult.ok(
        "application message sent; WeCom skipped invaliduser lisi", remote_id="m1"
    )


def test_a_long_application_message_is_split_and_every_msgid_kept(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    wecom.answer("/cgi-bin/message/send", {**OK, "msgid": "m1"}, {**OK, "msgid": "m2"})
    backend = app(httpserver)
    result = backend.send(staff_task(text="待办事项。" * 200))  # 3,000 bytes
    backend.close()
    assert result == SendResult.ok("application message sent, in 2 parts", remote_id="m1,m2")
    assert backend.cost(staff_task(text="待办事项。" * 200)) == 2
    assert backend.cost(everyone(text="公告。" * 1000)) == 1
    contents = [c.json()["text"]["content"] for c in wecom.on("/cgi-bin/message/send")]
    assert all(len(c.encode()) <= 2048 for c in contents)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"errcode": 81013, "errmsg": "user & party & tag all invalid"},
         SendResult.permanent("errcode 81013 (every recipient is invalid or outside the app's"
                              " scope): user & party & tag all invalid")),
        ({"errcode": 45009, "errmsg": "api freq out of limit"},
         SendResult.retry("errcode 45009 (API call frequency out of limit): api freq out of"
                          " limit", 60.0)),
        ({"errcode": 45033, "errmsg": "api concurrent out of limit"},
         SendResult.retry("errcode 45033 (too many concurrent calls): api concurrent out of"
                          " limit")),
        ({"errcode": 60020, "errmsg": "not allow to access from your ip"},
         SendResult.permanent("errcode 60020 (this server's IP is not among the app's trusted"
                              " IPs): not allow to access from your ip")),
        ({"errcode": 48002, "errmsg": "api forbidden"},
         SendResult.permanent("errcode 48002 (this app may not call this API): api forbidden")),
        ({"errcode": 301002, "errmsg": "not allow operate another agent"},
         SendResult.permanent("errcode 301002: not allow operate another agent")),
    ],
)  # fmt: skip
def test_application_message_errors_classify(
    httpserver: HTTPServer, wecom: FakeWeCom, reply: dict[str, Any], expected: SendResult
) -> None:
    wecom.answer("/cgi-bin/message/send", reply)
    backend = app(httpserver)
    result = backend.send(staff_task())
    backend.close()
    assert result == expected


# -- wecom-app: customer-group mass sends ----------------------------------------------------------


def everyone(**changes: object) -> Delivery:
    return delivery(
        **{"kind": "post", "audience": "everyone", "member": None, "attributes": {}, **changes}
    )


def test_a_post_to_everyone_is_a_mass_send_awaiting_the_sender_s_confirmation(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    wecom.answer(
        "/cgi-bin/externalcontact/add_msg_template",
        {**OK, "fail_list": [], "msgid": "msgGCAAAXtWyujaWJHDDGi0mAAAA"},
    )
    backend = app(
        httpserver, chat_ids="wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA|wrOgQhDgAAcwMTB7YmDkbeBsAAAA"
    )
    result = backend.send(everyone(text="周三晚 8 点直播"))
    backend.close()
    assert result == SendResult(
        SendStatus.OK,
        "customer-group mass send msgGCAAAXtWyujaWJHDDGi0mAAAA created for 2 customer group(s);"
        " WeCom sends it once owner01 confirms it in their client. Quota: a group receives at"
        " most 28 mass sends from 2027-02-01 to 2027-02-28 (group_quota=month)",
        remote_id="msgGCAAAXtWyujaWJHDDGi0mAAAA",
        awaiting_confirmation=True,
    )
    [call] = wecom.on("/cgi-bin/externalcontact/add_msg_template")
    assert call.args == {"access_token": TOKEN1}
    assert (
        call.body
        == (
            '{"chat_type":"group","sender":"owner01","chat_id_list":'
            '["wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA","wrOgQhDgAAcwMTB7YmDkbeBsAAAA"],'
            '"text":{"content":"周三晚 8 点直播"}}'
        ).encode()
    )


def test_without_chat_ids_the_sender_picks_the_groups_and_markdown_becomes_plain(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    wecom.answer(
        "/cgi-bin/externalcontact/add_msg_template",
        {**OK, "fail_list": ["wrX"], "msgid": "msg1"},
    )
    backend = app(httpserver, markdown="wecom", group_quota="week")
    result = backend.send(everyone(text="## 直播\n**周三** [报名](https://x.cn/r)"))
    backend.close()
    assert result.detail == (
        "customer-group mass send msg1 created for the customer groups owner01 picks; WeCom"
        " sends it once owner01 confirms it in their client. Quota: a group receives at most 7"
        " mass sends from 2027-02-08 to 2027-02-14 (group_quota=week); WeCom could not include"
        " 1 of them (fail_list)"
    )
    assert wecom.on("/cgi-bin/externalcontact/add_msg_template")[0].json() == {
        "chat_type": "group",
        "sender": "owner01",
        "text": {"content": "直播\n周三 报名 (https://x.cn/r)"},
    }


def test_a_mass_send_over_4000_bytes_is_refused_never_split(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    backend = app(httpserver)
    result = backend.send(everyone(text="公告" * 700))  # 4,200 bytes
    backend.close()
    assert result == SendResult.permanent(
        "the text is 4,200 bytes; a customer-group mass send takes 4,000 (and is never split:"
        " each part would count against every group's quota): shorten the template"
    )
    assert wecom.calls == []


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"errcode": 41048, "errmsg": "no valid external user"},
         SendResult.permanent("errcode 41048 (no customer group to send to): no valid external"
                              " user")),
        ({"errcode": 48002, "errmsg": "api forbidden"},
         SendResult.permanent("errcode 48002 (this app may not call this API): api forbidden")),
        ({"errcode": 0, "errmsg": "ok"},
         SendResult.uncertain("the mass send was accepted without a msgid to track")),
    ],
)  # fmt: skip
def test_mass_send_answers_classify(
    httpserver: HTTPServer, wecom: FakeWeCom, reply: dict[str, Any], expected: SendResult
) -> None:
    wecom.answer("/cgi-bin/externalcontact/add_msg_template", reply)
    backend = app(httpserver)
    result = backend.send(everyone())
    backend.close()
    assert result == expected


@pytest.mark.parametrize(
    ("replies", "expected", "detail"),
    [
        ([{**OK, "task_list": [{"userid": "owner01", "status": 0}]}], False,
         "owner01 has not confirmed it yet"),
        ([{**OK, "task_list": [{"userid": "Owner01", "status": 2, "send_time": 1801000000}]}],
         True, "owner01 sent it"),
        ([{"errcode": 41063, "errmsg": "msg is being sent"}], False,
         "WeCom is still dispatching the mass send"),
        ([{**OK, "task_list": []}], False, "WeCom lists no task for owner01 yet"),
        ([{**OK, "task_list": [{"userid": "other", "status": 2}], "next_cursor": "c2"},
          {**OK, "task_list": [{"userid": "owner01", "status": 2}]}], True, "owner01 sent it"),
        ([{**OK, "task_list": [{"userid": "owner01", "status": 9}]}], None,
         "WeCom reports status 9"),
        ([{"errcode": 60020, "errmsg": "not allow to access from your ip"}], None,
         "errcode 60020 (this server's IP is not among the app's trusted IPs): not allow to"
         " access from your ip"),
    ],
)  # fmt: skip
def test_confirmation_reads_the_sender_s_task(
    httpserver: HTTPServer,
    wecom: FakeWeCom,
    replies: list[dict[str, Any]],
    expected: bool | None,
    detail: str,
) -> None:
    wecom.answer("/cgi-bin/externalcontact/get_groupmsg_task", *replies)
    backend = app(httpserver)
    status = backend.confirmation_status("msg1")
    backend.close()
    assert status == (expected, detail)
    calls = wecom.on("/cgi-bin/externalcontact/get_groupmsg_task")
    assert calls[0].json() == {"msgid": "msg1", "limit": 1000}
    assert calls[0].args == {"access_token": TOKEN1}
    if len(replies) > 1:
        assert calls[1].json() == {"msgid": "msg1", "limit": 1000, "cursor": "c2"}


def test_confirmation_is_the_bool_the_runner_polls(
    httpserver: HTTPServer, wecom: FakeWeCom
) -> None:
    wecom.answer(
        "/cgi-bin/externalcontact/get_groupmsg_task",
        {**OK, "task_list": [{"userid": "owner01", "status": 0}]},
        {**OK, "task_list": [{"userid": "owner01", "status": 2}]},
        {"errcode": -1, "errmsg": "system busy"},
    )
    backend = app(httpserver)
    polled = [backend.confirmation("msg1") for _ in range(3)]
    no_sender = app(httpserver, sender=None)
    assert no_sender.confirmation("msg1") is None
    backend.close()
    no_sender.close()
    assert polled == [False, True, None]


@pytest.mark.parametrize(
    ("rule", "at", "window"),
    [
        (GroupQuota.MONTH, datetime(2027, 2, 8, 1, tzinfo=UTC), ("2027-02-01", "2027-03-01", 28)),
        (GroupQuota.MONTH, datetime(2028, 2, 29, 15, 59, tzinfo=UTC),
         ("2028-02-01", "2028-03-01", 29)),
        (GroupQuota.MONTH, datetime(2027, 1, 31, 16, tzinfo=UTC), ("2027-02-01", "2027-03-01", 28)),
        (GroupQuota.MONTH, datetime(2027, 12, 31, 1, tzinfo=UTC), ("2027-12-01", "2028-01-01", 31)),
        (GroupQuota.WEEK, datetime(2027, 2, 14, 15, tzinfo=UTC), ("2027-02-08", "2027-02-15", 7)),
        (GroupQuota.DAY, datetime(2027, 2, 8, 16, tzinfo=UTC), ("2027-02-09", "2027-02-10", 1)),
    ],
)  # fmt: skip
def test_the_quota_window_follows_beijing_s_calendar(
    rule: GroupQuota, at: datetime, window: tuple[str, str, int]
) -> None:
    got = quota_window(rule, at)
    assert (got.start.date().isoformat(), got.end.date().isoformat(), got.limit) == window
    assert got.start.utcoffset() == timedelta(hours=8) and got.start.hour == 0


def test_the_app_exposes_its_quota_and_capabilities(httpserver: HTTPServer) -> None:
    with_sender, staff_only = app(httpserver, group_quota="day"), app(httpserver, sender=None)
    with_sender.close()
    staff_only.close()
    assert with_sender.group_quota is GroupQuota.DAY and staff_only.group_quota is None
    caps = with_sender.capabilities
    assert caps == CAPABILITIES["wecom-app"]
    assert caps.rate_per_minute == DEFAULT_RATES["wecom-app"]
    assert (caps.max_length, caps.length_unit) == (2048, "bytes")
    assert (caps.idempotent, caps.mentions, caps.kinds) == (False, False, MESSAGE_KINDS | {"task"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"corp_id": None}, "needs option corp_id"),
        ({"corp_secret": None}, 'needs option corp_secret as "${env:NAME}"'),
        ({"corp_secret": "${env:MISSING}"}, "corp_secret: environment variable MISSING is not set"),
        ({"agent_id": "app-1"}, "agent_id must be the app's AgentId (a number)"),
        ({"agent_id": None, "sender": None}, "needs agent_id (application messages) or sender"),
        ({"group_quota": "monthly"}, "group_quota must be month, week or day"),
        ({"sender": None, "chat_ids": "wrA"}, "chat_ids need a sender"),
        ({"to_party": "sales"}, "to_party must list ids separated by | or , (numbers)"),
        ({"sender": "张三"}, "sender must be a WeCom userid"),
        ({"markdown": "slack"}, "markdown must be wecom"),
        ({"secret": "x"}, 'has no option "secret"'),
    ],
)  # fmt: skip
def test_an_app_that_cannot_work_is_refused(
    httpserver: HTTPServer, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(BackendError, match=re.escape(message)) as e:
        app(httpserver, **{k: v for k, v in options.items()})
    assert SECRET not in str(e.value)


def test_an_app_takes_no_url() -> None:
    config = BackendConfig("crm", "wecom-app", "https://x", {"corp_id": "c", "corp_secret": "s"})
    with pytest.raises(BackendError, match="takes no url"):
        create_app(config, {})


def test_the_corp_secret_and_tokens_are_in_no_detail_repr_or_log_record(
    httpserver: HTTPServer, wecom: FakeWeCom, caplog: pytest.LogCaptureFixture
) -> None:
    echo = {"errcode": 40058, "errmsg": f"bad request {TOKEN1} {SECRET}"}
    wecom.answer("/cgi-bin/message/send", echo)
    wecom.answer("/cgi-bin/externalcontact/get_groupmsg_task", {"errcode": 1, "errmsg": TOKEN1})
    with urllib3_debug(caplog):
        backend = app(httpserver)
        result = backend.send(staff_task())
        status = backend.confirmation_status("msg1")
        text = repr(backend)
        backend.close()
        with pytest.raises(RuntimeError) as e:
            backend.confirmation("msg1")
    assert result == SendResult.permanent("errcode 40058 (invalid parameter): bad request *** ***")
    assert status == (None, "errcode 1: ***")
    assert (
        text
        == "WeComAppBackend(name='crm', origin='{}', agent_id=1000002, sender='owner01')".format(
            httpserver.url_for("/").rstrip("/")
        )
    )
    assert any("corpsecret=***" in r.getMessage() for r in caplog.records)
    logged = [r.getMessage() for r in caplog.records if r.name != "werkzeug"]  # the test server's
    seen = [result.detail, status.detail, text, str(e.value), *logged]
    assert not [s for s in seen if SECRET in s or TOKEN1 in s]


# -- the docs ------------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "backends" / "wecom.md"


@pytest.mark.parametrize("block", re.findall(r"```yaml\n(.*?)```", DOCS.read_text("utf-8"), re.S))
def test_the_docs_playbook_examples_validate_and_build(tmp_path: Path, block: str) -> None:
    first = re.search(r"^  ([a-z][a-z0-9_-]*):", block, re.M)
    assert first is not None
    path = tmp_path / "p.yaml"
    path.write_text(
        "playbook: t\ntimezone: Asia/Shanghai\nroles: {ops: {headcount: 1}}\n"
        + block
        + f"defaults: {{backend: {first.group(1)}, owner: ops}}\nstages:\n  only: {{}}\n",
        encoding="utf-8",
    )
    result = validate_file(str(path), Options(plan_checks=False))
    assert [(d.code, d.message) for d in result.diagnostics] == []
    assert result.playbook is not None
    env = {
        n: "x" for n in ("WECOM_GROUP_KEY", "WECOM_NEWS_KEY", "WECOM_CORP_ID", "WECOM_APP_SECRET")
    }
    factories = {"wecom-robot": create_robot, "wecom-app": create_app}
    specs: dict[str, BackendSpec] = dict(result.playbook.backends)
    built = [c.name for c in configs_for(specs).values() if c.type in factories]
    assert built == re.findall(r"^  ([a-z][a-z0-9_-]*):", block, re.M)
    for config in configs_for(specs).values():
        if config.type in factories:
            factories[config.type](config, env).close()


def test_mass_sends_count_against_each_groups_allowance_for_the_period(
    httpserver: HTTPServer,
) -> None:
    """The runner counts these durably (tests/test_run.py): one per group and WeCom's period."""
    at = datetime(2027, 2, 8, 1, 0, tzinfo=UTC)  # Monday 09:00 in Beijing
    monthly = app(
        httpserver, chat_ids="wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA|wrOgQhDgAAcwMTB7YmDkbeBsgT_AAAA"
    )
    quotas = monthly.quotas(everyone(), at)
    assert [(q.target[-4:], q.period, q.limit) for q in quotas] == [
        ("AAAA", "2027-02-01/month", 28), ("AAAA", "2027-02-01/month", 28)
    ]  # fmt: skip
    weekly = app(httpserver, group_quota="week").quotas(everyone(), at)
    assert [(q.target, q.period, q.limit) for q in weekly] == [
        ("groups-of-owner01", "2027-02-08/week", 7)
    ]
    assert monthly.quotas(staff_task(), at) == []  # application messages have no such allowance
