"""Feishu and DingTalk custom robots against a real loopback server: the exact requests they send
(path, query, headers, body, signatures from fixed test vectors computed here by hand), the
platforms' documented answers replayed and classified, the length policy, and no secret in sight.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pytest_httpserver import HTTPServer
from sop.engine.core.catalog import DEFAULT_RATES, MESSAGE_KINDS
from sop.engine.run.backends import BackendError, _chat, _robot
from sop.engine.run.backends import dingtalk as dt
from sop.engine.run.backends import feishu as fs
from sop.engine.run.backends._text import TRUNCATED
from sop.engine.run.ports import Backend, BackendConfig, Delivery, SendResult, SendStatus
from werkzeug import Request, Response

from tests.backend_logs import urllib3_debug

SHANGHAI = ZoneInfo("Asia/Shanghai")
DUE = datetime(2027, 1, 4, 9, 0, tzinfo=SHANGHAI)
NOW = datetime(2027, 1, 4, 1, 0, 5, 250000, tzinfo=UTC)  # the fixed clock of every signature
NOW_S, NOW_MS = 1799024405, 1799024405250  # NOW in seconds and milliseconds since 1970


def delivery(**changes: object) -> Delivery:
    fields: dict[str, object] = {
        "key": "lifecycle/welcome/2027-01-04T01:00:00Z/m1",
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
    }
    fields.update(changes)
    return Delivery(**fields)


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    return ("127.0.0.1", 0)


class Capture:
    """Keeps each request as the server saw it and answers with fixed responses in turn."""

    def __init__(self, *responses: Response) -> None:
        self.requests: list[Request] = []
        self.bodies: list[bytes] = []
        self.responses = list(responses) or [Response('{"code":0,"msg":"success","data":{}}')]

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        self.bodies.append(request.get_data())
        i = min(len(self.requests), len(self.responses)) - 1
        return self.responses[i]

    def json(self, i: int = 0) -> Any:
        return json.loads(self.bodies[i])


class Pauses(list[float]):
    """Records the waits between parts instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def build(
    module: Any,
    target: str | None = None,
    env: dict[str, str] | None = None,
    pauses: Callable[[float], None] | None = None,
    /,
    **options: object,
) -> Any:
    config = BackendConfig("group", module.TYPE, target, options)
    return module.create(
        config, env or {}, clock=lambda: NOW, pause=pauses if pauses is not None else Pauses()
    )


def base_of(httpserver: HTTPServer) -> str:
    return httpserver.url_for("").rstrip("/")


# -- signatures, computed by hand from the platforms' documents ---------------------------------


def feishu_signature(timestamp: int, secret: str) -> str:
    """`timestamp + "\\n" + secret` is the HMAC-SHA256 key; the message is empty; base64."""
    string_to_sign = f"{timestamp}\n{secret}"
    mac = hmac.new(string_to_sign.encode("utf-8"), digestmod=hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("utf-8")


def dingtalk_signature(timestamp: int, secret: str) -> str:
    """HMAC-SHA256 keyed with the secret over `timestamp + "\\n" + secret`, base64, URL-encoded
    (the documents' Python example uses `quote_plus`)."""
    string_to_sign = f"{timestamp}\n{secret}"
    mac = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256)
    return urllib.parse.quote_plus(base64.b64encode(mac.digest()))


def test_the_signature_vectors_hold_and_the_modules_agree_with_them() -> None:
    # pinned values: a change in either the helper above or the module is caught here
    assert feishu_signature(NOW_S, "fs-S3CRET-0") == "qIDBZuDh3KmjgWHCO7w/d6jVI6bPi053xQC7vnmKWWo="
    assert dingtalk_signature(NOW_MS, "SECd1ng3") == (
        "d2w%2B37qjF3326EfoRo5WIISBXU%2FzjY1lMpi41D7H%2B1I%3D"
    )
    assert fs.feishu_sign(NOW_S, "fs-S3CRET-0") == feishu_signature(NOW_S, "fs-S3CRET-0")
    assert dt.dingtalk_sign(NOW_MS, "SECd1ng3") == dingtalk_signature(NOW_MS, "SECd1ng3")
    assert (_robot.epoch_seconds(NOW), _robot.epoch_millis(NOW)) == (NOW_S, NOW_MS)


# -- feishu-bot: the request ---------------------------------------------------------------------


def test_feishu_posts_a_text_message_to_the_hook_of_its_token(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request("/open-apis/bot/v2/hook/tok-123", method="POST").respond_with_handler(
        capture
    )
    backend = build(
        fs, None, {"FS_TOKEN": "tok-123"}, token="${env:FS_TOKEN}", base_url=base_of(httpserver)
    )
    result = backend.send(delivery())
    backend.close()
    assert result == SendResult.ok("HTTP 200")
    [request] = capture.requests
    assert request.query_string == b""
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.headers["Connection"] == "close"
    assert request.headers["User-Agent"].startswith("sop/")
    assert "Idempotency-Key" not in request.headers and "Authorization" not in request.headers
    assert capture.json() == {"msg_type": "text", "content": {"text": "Welcome aboard, Ana!"}}


def test_feishu_signs_in_the_body_with_seconds_and_an_hmac_of_nothing(
    httpserver: HTTPServer,
) -> None:
    capture = Capture()
    httpserver.expect_request("/open-apis/bot/v2/hook/tok").respond_with_handler(capture)
    env = {"FS_TOKEN": "tok", "FS_SECRET": "fs-S3CRET-0"}
    backend = build(
        fs, None, env, token="${env:FS_TOKEN}", key="${env:FS_SECRET}", base_url=base_of(httpserver)
    )
    assert backend.send(delivery()).status is SendStatus.OK
    assert capture.json() == {
        "timestamp": "1799024405",
        "sign": feishu_signature(NOW_S, "fs-S3CRET-0"),
        "msg_type": "text",
        "content": {"text": "Welcome aboard, Ana!"},
    }


def test_feishu_takes_a_whole_hook_address_from_the_environment(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request("/open-apis/bot/v2/hook/abc-def").respond_with_handler(capture)
    url = httpserver.url_for("/open-apis/bot/v2/hook/abc-def")
    backend = build(fs, "${env:FS_HOOK}", {"FS_HOOK": url})
    assert backend.send(delivery()) == SendResult.ok("HTTP 200")
    assert len(capture.requests) == 1


def test_feishu_markdown_sends_rich_text_with_links_and_bold(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request("/open-apis/bot/v2/hook/tok-t").respond_with_handler(capture)
    backend = build(
        fs, None, {"T": "tok-t"}, token="${env:T}", base_url=base_of(httpserver), markdown="feishu"
    )
    assert backend.capabilities.markdown == "feishu"
    text = "# Week 1\nHi **Ana**, read [the guide](https://ex.io/g).\n\n- day one"
    assert backend.send(delivery(text=text)).status is SendStatus.OK
    assert capture.json() == {
        "msg_type": "post",
        "content": {
            "post": {
                "zh_cn": {
                    "title": "Welcome",
                    "content": [
                        [{"tag": "text", "text": "Week 1", "style": ["bold"]}],
                        [
                            {"tag": "text", "text": "Hi "},
                            {"tag": "text", "text": "Ana", "style": ["bold"]},
                            {"tag": "text", "text": ", read "},
                            {"tag": "a", "text": "the guide", "href": "https://ex.io/g"},
                            {"tag": "text", "text": "."},
                        ],
                        [],
                        [{"tag": "text", "text": "• day one"}],
                    ],
                }
            }
        },
    }


@pytest.mark.parametrize(
    ("text", "paragraphs"),
    [
        ("plain", [[{"tag": "text", "text": "plain"}]]),
        ("", [[]]),
        ("a\r\nb", [[{"tag": "text", "text": "a"}], [{"tag": "text", "text": "b"}]]),
        (
            "see https://ex.io/a?b=1, then",
            [
                [
                    {"tag": "text", "text": "see "},
                    {"tag": "a", "text": "https://ex.io/a?b=1", "href": "https://ex.io/a?b=1"},
                    {"tag": "text", "text": ", then"},
                ]
            ],
        ),
        (
            "**bold [link](https://l.io) end**",
            [
                [
                    {"tag": "text", "text": "bold ", "style": ["bold"]},
                    {"tag": "a", "text": "link", "href": "https://l.io", "style": ["bold"]},
                    {"tag": "text", "text": " end", "style": ["bold"]},
                ]
            ],
        ),
        (
            "*it* and ~~gone~~ and `code`",
            [
                [
                    {"tag": "text", "text": "it", "style": ["italic"]},
                    {"tag": "text", "text": " and "},
                    {"tag": "text", "text": "gone", "style": ["lineThrough"]},
                    {"tag": "text", "text": " and code"},
                ]
            ],
        ),
        ("[x](javascript:alert(1))", [[{"tag": "text", "text": "[x](javascript:alert(1))"}]]),
        (
            "2 * 3 * 4 and snake_case_name",
            [[{"tag": "text", "text": "2 * 3 * 4 and snake_case_name"}]],
        ),
        (
            "```\n**not bold**\n\n```\nafter",
            [
                [{"tag": "text", "text": "**not bold**"}],
                [],
                [{"tag": "text", "text": "after"}],
            ],
        ),
        ("## 第二周 **加油**", [[{"tag": "text", "text": "第二周 加油", "style": ["bold"]}]]),
        ("  * nested", [[{"tag": "text", "text": "  • nested"}]]),
    ],
)
def test_the_feishu_post_dialect(text: str, paragraphs: list[list[dict[str, object]]]) -> None:
    assert fs.feishu_post(text) == paragraphs


# -- feishu-bot: classification ------------------------------------------------------------------


def feishu_answer(httpserver: HTTPServer, response: Response, **options: object) -> SendResult:
    httpserver.expect_oneshot_request("/open-apis/bot/v2/hook/tok-t").respond_with_response(
        response
    )
    backend = build(
        fs, None, {"T": "tok-t"}, token="${env:T}", base_url=base_of(httpserver), **options
    )
    try:
        return backend.send(delivery())
    finally:
        backend.close()


SIGNATURE = (
    "the signature was refused: check the robot's secret in `key` and this machine's clock"
    " (Feishu takes a timestamp within an hour of its own)"
)
FS_RATE = "Feishu's rate limit (a robot takes 100 a minute, 5 a second)"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, '{"code":0,"data":{},"msg":"success"}', SendResult.ok("HTTP 200")),
        (  # the robot's older answer
            200,
            '{"Extra":null,"StatusCode":0,"StatusMessage":"success"}',
            SendResult.ok("HTTP 200"),
        ),
        (
            200,
            '{"code":19021,"data":{},"msg":"sign match fail or timestamp is not within one hour'
            ' from current time"}',
            SendResult.permanent(
                "HTTP 200 with code 19021: sign match fail or timestamp is not within one hour"
                f" from current time ({SIGNATURE})"
            ),
        ),
        (
            200,
            '{"code":19024,"data":{},"msg":"Key Words Not Found"}',
            SendResult.permanent(
                "HTTP 200 with code 19024: Key Words Not Found (the text has none of the robot's"
                " keywords (its security settings): every message, every part of a split one"
                " included, must contain one)"
            ),
        ),
        (
            200,
            '{"code":19022,"data":{},"msg":"Ip Not Allowed"}',
            SendResult.permanent(
                "HTTP 200 with code 19022: Ip Not Allowed (this machine's address is not on the"
                " robot's IP allow-list)"
            ),
        ),
        (
            200,
            '{"code":19001,"data":{},"msg":"param invalid: incoming webhook access token invalid"}',
            SendResult.permanent(
                "HTTP 200 with code 19001: param invalid: incoming webhook access token invalid"
                " (Feishu refused the message)"
            ),
        ),
        (
            200,
            '{"code":11232,"data":{},'
            '"msg":"frequency limited psm[lark.oapi.app_platform_runtime]"}',
            SendResult.retry(
                "HTTP 200 with code 11232: frequency limited psm[lark.oapi.app_platform_runtime]"
                f" ({FS_RATE})"
            ),
        ),
        (
            400,
            '{"code":9499,"msg":"too many request","data":{}}',
            SendResult.retry(f"HTTP 400 with code 9499: too many request ({FS_RATE})"),
        ),
        (
            400,
            '{"code":9499,"msg":"Bad Request","data":{}}',
            SendResult.permanent(
                "HTTP 400 with code 9499: Bad Request (Feishu could not read the request)"
            ),
        ),
        (500, "internal error", SendResult.retry("HTTP 500: internal error")),
        (
            500,
            '{"code":1500,"msg":"internal error"}',
            SendResult.retry("HTTP 500 with code 1500: internal error"),
        ),
        (502, "", SendResult.retry("HTTP 502")),
        (
            429,
            '{"code":1234,"msg":"slow down"}',
            SendResult.retry("HTTP 429 with code 1234: slow down"),
        ),
        (504, "", SendResult.uncertain("HTTP 504: the gateway timed out")),
        (404, "404 page not found", SendResult.permanent("HTTP 404: 404 page not found")),
        (
            200,
            "<html>portal</html>",
            SendResult.uncertain(
                "HTTP 200, but the answer is not the platform's (it may have been posted):"
                " <html>portal</html>"
            ),
        ),
        (
            302,
            "",
            SendResult.permanent(
                "HTTP 302: the robot's address redirects; configure the address it redirects to"
            ),
        ),
    ],
)
def test_feishu_answers_are_classified(
    httpserver: HTTPServer, status: int, body: str, expected: SendResult
) -> None:
    headers = {"Location": "http://127.0.0.1:9/elsewhere"} if status == 302 else {}
    assert feishu_answer(httpserver, Response(body, status, headers=headers)) == expected


def test_feishu_429_waits_as_long_as_the_gateway_says(httpserver: HTTPServer) -> None:
    limited = '{"code":99991400,"msg":"request trigger frequency limit"}'
    headers = {"x-ogw-ratelimit-limit": "100", "x-ogw-ratelimit-reset": "52"}
    result = feishu_answer(httpserver, Response(limited, 429, headers=headers))
    assert result == SendResult.retry(
        f"HTTP 429 with code 99991400: request trigger frequency limit ({FS_RATE})", 52.0
    )
    plain = feishu_answer(httpserver, Response("", 429, headers={"Retry-After": "7"}))
    assert plain == SendResult.retry("HTTP 429", 7.0)
    huge = feishu_answer(httpserver, Response("", 429, headers={"x-ogw-ratelimit-reset": "9" * 9}))
    assert huge.retry_after == 86_400


def test_a_read_timeout_after_the_request_went_is_uncertain(httpserver: HTTPServer) -> None:
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(5)
        return Response('{"code":0}')

    httpserver.expect_request("/open-apis/bot/v2/hook/tok-t").respond_with_handler(slow)
    backend = build(
        fs, None, {"T": "tok-t"}, token="${env:T}", base_url=base_of(httpserver), read_timeout="0.3"
    )
    try:
        result = backend.send(delivery())
    finally:
        release.set()
        backend.close()
    assert result.status is SendStatus.UNCERTAIN
    assert "after the request was sent" in result.detail


# -- the length policy and parts -----------------------------------------------------------------


def long_text(lines: int = 600) -> str:
    return "\n".join(
        f"第{i}行：欢迎加入社群，请阅读群规 https://ex.io/rules/{i} 。" for i in range(lines)
    )


@pytest.mark.parametrize("markdown", [None, "feishu"])
def test_a_feishu_text_over_20000_bytes_goes_in_paced_numbered_parts(
    httpserver: HTTPServer, markdown: str | None
) -> None:
    capture = Capture()
    httpserver.expect_request("/open-apis/bot/v2/hook/tok-t").respond_with_handler(capture)
    pauses = Pauses()
    options = {"markdown": markdown} if markdown else {}
    env = {"T": "tok-t", "K": "k"}
    backend = build(
        fs,
        None,
        env,
        pauses,
        token="${env:T}",
        key="${env:K}",
        base_url=base_of(httpserver),
        **options,
    )
    text = long_text()
    assert len(text.encode()) > 2 * fs.BODY_LIMIT
    result = backend.send(delivery(text=text))
    n = len(capture.bodies)
    assert result == SendResult.ok(f"HTTP 200, in {n} parts")
    assert n >= 3
    assert all(len(body) <= fs.BODY_LIMIT for body in capture.bodies)
    assert pauses == [fs.PART_INTERVAL] * (n - 1)  # 5 a second
    sent = []
    for i in range(n):
        body = capture.json(i)
        assert body["sign"] == feishu_signature(NOW_S, "k")  # every part is signed
        if markdown:
            paragraphs = body["content"]["post"]["zh_cn"]["content"]
            sent.append("\n".join("".join(e["text"] for e in p) for p in paragraphs))
        else:
            sent.append(body["content"]["text"])
    assert all(part.endswith(f"({i}/{n})") for i, part in enumerate(sent, 1))
    # nothing lost: the parts, their numbering removed, are the lines in order
    joined = "\n".join(part.rsplit(" (", 1)[0] for part in sent)
    assert [ln.split("：")[0] for ln in joined.split("\n")] == [f"第{i}行" for i in range(600)]


@pytest.mark.parametrize("module", [fs, dt])
def test_cost_is_the_number_of_messages_a_delivery_becomes(
    httpserver: HTTPServer, module: Any
) -> None:
    capture = Capture(Response('{"code":0,"errcode":0,"msg":"ok"}'))
    httpserver.expect_request(re.compile(".*")).respond_with_handler(capture)
    backend = build(module, None, {"T": "tok-t"}, token="${env:T}", base_url=base_of(httpserver))
    short, long = delivery(), delivery(text=long_text())
    assert backend.cost(short) == 1
    cost = backend.cost(long)
    assert backend.send(long).status is SendStatus.OK
    assert cost == len(capture.bodies) >= 3  # what the runner takes as rate tokens
    backend.close()


@pytest.mark.parametrize("module", [fs, dt])
def test_max_length_is_one_message_s_text_in_bytes_and_splits_rather_than_refuses(
    httpserver: HTTPServer, module: Any
) -> None:
    capture = Capture(Response('{"code":0,"errcode":0,"msg":"ok"}'))
    httpserver.expect_request(re.compile(".*")).respond_with_handler(capture)
    env = {"T": "tok-t"}
    backend = build(
        module, None, env, token="${env:T}", base_url=base_of(httpserver), max_length="100"
    )
    assert (backend.capabilities.max_length, backend.capabilities.length_unit) == (100, "bytes")
    result = backend.send(delivery(text="欢迎加入社群，请阅读群规。" * 10))  # 390 bytes
    texts = [
        capture.json(i)["text"]["content"] if module is dt else capture.json(i)["content"]["text"]
        for i in range(len(capture.bodies))
    ]
    assert result == SendResult.ok(f"HTTP 200, in {len(texts)} parts") and len(texts) >= 4
    assert all(len(t.encode()) <= 100 and t.endswith(f"/{len(texts)})") for t in texts)
    for too in ("63", str(module.BODY_LIMIT + 1)):
        with pytest.raises(BackendError, match="max_length must be between 64 and"):
            build(module, None, env, token="${env:T}", max_length=too)
    backend.close()


def test_the_truncate_policy_sends_one_message_that_says_it_was_cut(
    httpserver: HTTPServer,
) -> None:
    capture = Capture()
    httpserver.expect_request("/open-apis/bot/v2/hook/tok-t").respond_with_handler(capture)
    backend = build(
        fs,
        None,
        {"T": "tok-t"},
        token="${env:T}",
        base_url=base_of(httpserver),
        overflow="truncate",
    )
    assert backend.send(delivery(text=long_text())) == SendResult.ok("HTTP 200")
    [body] = capture.bodies
    assert len(body) <= fs.BODY_LIMIT
    assert json.loads(body)["content"]["text"].endswith(TRUNCATED)


OK = Response('{"code":0,"msg":"success"}')
LIMITED = Response('{"code":11232,"msg":"frequency limited"}')
FORBIDDEN = Response('{"code":19024,"msg":"Key Words Not Found"}')


@pytest.mark.parametrize(
    ("responses", "requests", "waits"),
    [
        ((OK, LIMITED), 3, [fs.PART_INTERVAL, _chat.PART_RETRY_WAIT]),  # tried once more, no more
        ((OK, FORBIDDEN), 2, [fs.PART_INTERVAL]),  # a refusal is not tried again
        (  # a wait longer than PART_WAIT is not waited for
            (OK, Response("", 429, headers={"x-ogw-ratelimit-reset": "30"})),
            2,
            [fs.PART_INTERVAL],
        ),
    ],
)
def test_a_part_failing_after_earlier_ones_were_posted_is_uncertain(
    httpserver: HTTPServer, responses: tuple[Response, ...], requests: int, waits: list[float]
) -> None:
    capture = Capture(*responses)
    httpserver.expect_request("/open-apis/bot/v2/hook/tok-t").respond_with_handler(capture)
    pauses = Pauses()
    backend = build(
        fs, None, {"T": "tok-t"}, pauses, token="${env:T}", base_url=base_of(httpserver)
    )
    result = backend.send(delivery(text=long_text()))
    n = -(-len(long_text().encode()) // fs.BODY_LIMIT)  # at least this many parts
    assert len(capture.bodies) == requests  # it stopped at the failed part
    assert capture.bodies[1] == capture.bodies[-1]  # the same part 2
    assert pauses == waits
    assert result.status is SendStatus.UNCERTAIN
    assert result.detail.startswith("part 2/")
    assert int(result.detail.split()[1].split("/")[1]) >= n
    assert "failed after 1 of " in result.detail
    assert "parts were posted (not resent: resolve by hand): HTTP " in result.detail


def test_a_later_part_rate_limited_briefly_is_sent_after_the_wait(httpserver: HTTPServer) -> None:
    limited = Response(
        '{"code":99991400,"msg":"limit"}', 429, headers={"x-ogw-ratelimit-reset": "2"}
    )
    capture = Capture(OK, limited, OK)
    httpserver.expect_request("/open-apis/bot/v2/hook/tok-t").respond_with_handler(capture)
    pauses = Pauses()
    backend = build(
        fs, None, {"T": "tok-t"}, pauses, token="${env:T}", base_url=base_of(httpserver)
    )
    result = backend.send(delivery(text=long_text()))
    n = len(capture.bodies) - 1  # part 2 went twice
    assert result == SendResult.ok(f"HTTP 200, in {n} parts")
    assert capture.bodies[1] == capture.bodies[2]
    assert pauses == [fs.PART_INTERVAL, 2.0] + [fs.PART_INTERVAL] * (n - 2)


def test_a_first_part_failing_keeps_its_class_and_names_the_part(httpserver: HTTPServer) -> None:
    capture = Capture(Response('{"code":11232,"msg":"frequency limited"}'))
    httpserver.expect_request("/open-apis/bot/v2/hook/tok-t").respond_with_handler(capture)
    backend = build(fs, None, {"T": "tok-t"}, token="${env:T}", base_url=base_of(httpserver))
    result = backend.send(delivery(text=long_text()))
    assert len(capture.bodies) == 1
    assert result.status is SendStatus.RETRY
    assert result.detail.startswith("part 1/")


def test_an_empty_text_is_refused_before_anything_is_sent(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request("/open-apis/bot/v2/hook/tok-t").respond_with_handler(capture)
    backend = build(fs, None, {"T": "tok-t"}, token="${env:T}", base_url=base_of(httpserver))
    assert backend.send(delivery(text=" \n ")) == SendResult.permanent(
        "the rendered text is empty: there is nothing to post"
    )
    assert capture.requests == []


def test_a_title_too_long_for_any_part_is_permanent(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request("/open-apis/bot/v2/hook/tok-t").respond_with_handler(capture)
    backend = build(
        fs, None, {"T": "tok-t"}, token="${env:T}", base_url=base_of(httpserver), markdown="feishu"
    )
    result = backend.send(delivery(title="x" * fs.BODY_LIMIT))
    assert result.status is SendStatus.PERMANENT and "20000-byte" in result.detail
    assert capture.requests == []


# -- dingtalk-bot: the request -------------------------------------------------------------------


def test_dingtalk_posts_a_text_message_with_its_access_token(httpserver: HTTPServer) -> None:
    capture = Capture(Response('{"errcode":0,"errmsg":"ok"}'))
    httpserver.expect_request("/robot/send", method="POST").respond_with_handler(capture)
    backend = build(dt, None, {"DT": "a1b2"}, token="${env:DT}", base_url=base_of(httpserver))
    assert backend.send(delivery(audience="everyone", member=None)) == SendResult.ok("HTTP 200")
    [request] = capture.requests
    assert request.query_string == b"access_token=a1b2"
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert capture.json() == {"msgtype": "text", "text": {"content": "Welcome aboard, Ana!"}}


def test_dingtalk_signs_in_the_query_with_milliseconds_and_an_url_encoded_hmac(
    httpserver: HTTPServer,
) -> None:
    capture = Capture(Response('{"errcode":0,"errmsg":"ok"}'))
    httpserver.expect_request("/robot/send").respond_with_handler(capture)
    env = {"DT": "a1b2", "DT_SECRET": "SECd1ng3"}
    backend = build(
        dt, None, env, token="${env:DT}", key="${env:DT_SECRET}", base_url=base_of(httpserver)
    )
    assert backend.send(delivery(audience="everyone", member=None)).status is SendStatus.OK
    sign = dingtalk_signature(NOW_MS, "SECd1ng3")
    assert "%2B" in sign and "%2F" in sign  # the vector exercises the encoding of + and /
    assert capture.requests[0].query_string.decode() == (
        f"access_token=a1b2&timestamp={NOW_MS}&sign={sign}"
    )
    assert capture.requests[0].args["sign"] == urllib.parse.unquote_plus(sign)


def test_dingtalk_takes_a_whole_address_and_appends_the_signature(httpserver: HTTPServer) -> None:
    capture = Capture(Response('{"errcode":0,"errmsg":"ok"}'))
    httpserver.expect_request("/robot/send").respond_with_handler(capture)
    url = httpserver.url_for("/robot/send") + "?access_token=zz9"
    backend = build(dt, "${env:DT_URL}", {"DT_URL": url, "S": "SECd1ng3"}, key="${env:S}")
    assert backend.send(delivery()).status is SendStatus.OK
    assert capture.requests[0].query_string.decode() == (
        f"access_token=zz9&timestamp={NOW_MS}&sign={dingtalk_signature(NOW_MS, 'SECd1ng3')}"
    )


@pytest.mark.parametrize(
    ("changes", "options", "at"),
    [
        ({"attributes": {"phone": "138 0013-8000"}}, {}, {"atMobiles": ["13800138000"]}),
        ({"attributes": {"phone": 13800138000}}, {}, {"atMobiles": ["13800138000"]}),
        ({"attributes": {"phone": "+8613800138000"}}, {}, {"atMobiles": ["+8613800138000"]}),
        ({"attributes": {"phone": "call me"}}, {}, None),
        ({"attributes": {}}, {}, None),
        (
            {"attributes": {"phone": "13800138000"}},
            {"at_all": "true"},
            {"atMobiles": ["13800138000"]},
        ),
        ({"audience": "everyone", "member": None}, {"at_all": "true"}, {"isAtAll": True}),
        ({"audience": "everyone", "member": None}, {}, None),
        ({"audience": "staff", "member": None, "attributes": {"phone": "13800138000"}}, {}, None),
    ],
)
def test_dingtalk_mentions_a_member_by_phone_and_everyone_only_when_asked(
    httpserver: HTTPServer,
    changes: dict[str, object],
    options: dict[str, object],
    at: dict[str, object] | None,
) -> None:
    capture = Capture(Response('{"errcode":0,"errmsg":"ok"}'))
    httpserver.expect_request("/robot/send").respond_with_handler(capture)
    backend = build(
        dt, None, {"DT": "tok-d"}, token="${env:DT}", base_url=base_of(httpserver), **options
    )
    assert backend.capabilities.mentions
    assert backend.send(delivery(**changes)).status is SendStatus.OK
    expected: dict[str, object] = {"msgtype": "text", "text": {"content": "Welcome aboard, Ana!"}}
    if at is not None:
        expected["at"] = at
    assert capture.json() == expected  # the phone never goes into the text


def test_dingtalk_markdown_sends_a_title_and_its_dialect(httpserver: HTTPServer) -> None:
    capture = Capture(Response('{"errcode":0,"errmsg":"ok"}'))
    httpserver.expect_request("/robot/send").respond_with_handler(capture)
    backend = build(
        dt,
        None,
        {"DT": "tok-d"},
        token="${env:DT}",
        base_url=base_of(httpserver),
        markdown="dingtalk",
    )
    text = "### 第一周\n欢迎 **Ana**\n- 阅读[群规](https://ex.io/r)"
    result = backend.send(delivery(text=text, attributes={"phone": "13800138000"}))
    assert result.status is SendStatus.OK
    assert capture.json() == {
        "msgtype": "markdown",
        "markdown": {
            "title": "Welcome",
            "text": "### 第一周\n\n欢迎 **Ana**\n\n- 阅读[群规](https://ex.io/r)",
        },
        "at": {"atMobiles": ["13800138000"]},
    }


@pytest.mark.parametrize(
    ("text", "markdown"),
    [
        ("one\ntwo", "one\n\ntwo"),
        ("one\n\n\n\ntwo  ", "one\n\ntwo"),
        ("a\r\nb", "a\n\nb"),
        ("~~old~~ and `code` stay **bold**", "old and code stay **bold**"),
        ("```\nx = 1\n  y = ~~2~~\n```", "x = 1\n\n  y = ~~2~~"),
        ("> quote\n1. first", "> quote\n\n1. first"),
    ],
)
def test_the_dingtalk_markdown_dialect(text: str, markdown: str) -> None:
    assert dt.dingtalk_markdown(text) == markdown


def test_a_dingtalk_text_over_20000_bytes_goes_in_parts_without_pacing(
    httpserver: HTTPServer,
) -> None:
    capture = Capture(Response('{"errcode":0,"errmsg":"ok"}'))
    httpserver.expect_request("/robot/send").respond_with_handler(capture)
    pauses = Pauses()
    backend = build(
        dt, None, {"DT": "tok-d"}, pauses, token="${env:DT}", base_url=base_of(httpserver)
    )
    result = backend.send(delivery(text=long_text(), attributes={"phone": "13800138000"}))
    n = len(capture.bodies)
    assert n >= 3 and result == SendResult.ok(f"HTTP 200, in {n} parts")
    assert all(len(body) <= dt.BODY_LIMIT for body in capture.bodies)
    assert pauses == []  # DingTalk's limit is a minute's count, not a second's
    assert all(capture.json(i)["at"] == {"atMobiles": ["13800138000"]} for i in range(n))


@pytest.mark.parametrize(
    ("second", "status", "waits"),
    [
        ('{"errcode":-1,"errmsg":"系统繁忙"}', SendStatus.OK, [1.0]),
        ('{"errcode":130101,"errmsg":"send too fast"}', SendStatus.UNCERTAIN, []),
    ],
)
def test_a_later_dingtalk_part_is_tried_again_only_when_the_wait_is_short(
    httpserver: HTTPServer, second: str, status: SendStatus, waits: list[float]
) -> None:
    ok = Response('{"errcode":0,"errmsg":"ok"}')
    capture = Capture(ok, Response(second), ok)
    httpserver.expect_request("/robot/send").respond_with_handler(capture)
    pauses = Pauses()
    backend = build(
        dt, None, {"DT": "tok-d"}, pauses, token="${env:DT}", base_url=base_of(httpserver)
    )
    result = backend.send(delivery(text=long_text()))
    assert result.status is status
    assert pauses == waits
    if status is SendStatus.UNCERTAIN:
        assert len(capture.bodies) == 2
        assert "send too fast" in result.detail and result.detail.startswith("part 2/")


# -- dingtalk-bot: classification ----------------------------------------------------------------


def dingtalk_answer(httpserver: HTTPServer, response: Response, **options: object) -> SendResult:
    httpserver.expect_oneshot_request("/robot/send").respond_with_response(response)
    backend = build(
        dt, None, {"DT": "tok-d"}, token="${env:DT}", base_url=base_of(httpserver), **options
    )
    try:
        return backend.send(delivery())
    finally:
        backend.close()


SECURITY = (
    "the robot's security settings refused it: the text must contain one of its keywords (every"
    " part of a split message too), the secret in `key` must be the robot's SEC… secret and this"
    " machine's clock right, and this machine's address on its IP list"
)
THROTTLED = "DingTalk throttles a robot for 10 minutes after 20 a minute"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, '{"errcode":0,"errmsg":"ok"}', SendResult.ok("HTTP 200")),
        (
            200,
            '{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}',
            SendResult.retry(
                "HTTP 200 with errcode 130101: send too fast, exceed 20 times per minute"
                f" ({THROTTLED})",
                600.0,
            ),
        ),
        (
            200,
            '{"status":1111,"wait":5,"source":"x5","punish":"deny","errcode":130101,'
            '"errmsg":"send too fast, exceed 20 times per minute"}',
            SendResult.retry(
                "HTTP 200 with errcode 130101: send too fast, exceed 20 times per minute"
                f" ({THROTTLED})",
                600.0,
            ),
        ),
        (
            200,
            '{"errcode":310000,"errmsg":"keywords not in content"}',
            SendResult.permanent(
                f"HTTP 200 with errcode 310000: keywords not in content ({SECURITY})"
            ),
        ),
        (
            200,
            '{"errcode":310000,"errmsg":"sign not match"}',
            SendResult.permanent(f"HTTP 200 with errcode 310000: sign not match ({SECURITY})"),
        ),
        (
            200,
            '{"errcode":310000,"errmsg":"ip X.X.X.X not in whitelist"}',
            SendResult.permanent(
                f"HTTP 200 with errcode 310000: ip X.X.X.X not in whitelist ({SECURITY})"
            ),
        ),
        (
            200,
            '{"errcode":300001,"errmsg":"token is not exist"}',
            SendResult.permanent(
                "HTTP 200 with errcode 300001: token is not exist (the access token is not a"
                " robot's: the robot was removed or the token is wrong)"
            ),
        ),
        (
            200,
            '{"errcode":460101,"errmsg":"message too long, exceed 20000 bytes"}',
            SendResult.permanent(
                "HTTP 200 with errcode 460101: message too long, exceed 20000 bytes (the message"
                " is over DingTalk's 20,000-byte limit)"
            ),
        ),
        (
            200,
            '{"errcode":-1,"errmsg":"系统繁忙"}',
            SendResult.retry("HTTP 200 with errcode -1: 系统繁忙 (DingTalk is busy)"),
        ),
        (
            200,
            '{"errcode":40035,"errmsg":"缺少参数 json"}',
            SendResult.permanent(
                "HTTP 200 with errcode 40035: 缺少参数 json (DingTalk refused the message)"
            ),
        ),
        (500, "", SendResult.retry("HTTP 500")),
        (
            429,
            '{"errcode":2,"errmsg":"too many"}',
            SendResult.retry("HTTP 429 with errcode 2: too many"),
        ),
        (
            503,
            '{"errcode":1,"errmsg":"unavailable"}',
            SendResult.retry("HTTP 503 with errcode 1: unavailable"),
        ),
        (
            200,
            "",
            SendResult.uncertain(
                "HTTP 200, but the answer is not the platform's (it may have been posted)"
            ),
        ),
        (403, "forbidden", SendResult.permanent("HTTP 403: forbidden")),
    ],
)
def test_dingtalk_answers_are_classified(
    httpserver: HTTPServer, status: int, body: str, expected: SendResult
) -> None:
    assert dingtalk_answer(httpserver, Response(body, status)) == expected


def test_a_throttled_robot_waits_the_ten_minutes_or_longer_when_told(
    httpserver: HTTPServer,
) -> None:
    body = '{"errcode":130101,"errmsg":"send too fast"}'
    longer = dingtalk_answer(httpserver, Response(body, 200, headers={"Retry-After": "900"}))
    assert (longer.status, longer.retry_after) == (SendStatus.RETRY, 900.0)
    shorter = dingtalk_answer(httpserver, Response(body, 200, headers={"Retry-After": "5"}))
    assert shorter.retry_after == 600.0


def test_a_refused_connection_is_a_retry_with_nothing_sent() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = build(
        dt, None, {"DT": "tok-d"}, token="${env:DT}", base_url=f"http://127.0.0.1:{port}"
    )
    assert backend.send(delivery()) == SendResult.retry(
        f"could not connect to http://127.0.0.1:{port}: connection refused or unreachable"
    )


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [fs, dt])
def test_each_robot_declares_its_capabilities_and_the_documented_rate(module: Any) -> None:
    backend = build(module, None, {"T": "tok-t"}, token="${env:T}")
    assert isinstance(backend, Backend)
    caps = backend.capabilities
    assert caps.rate_per_minute == DEFAULT_RATES[module.TYPE]
    assert (caps.idempotent, caps.max_length, caps.markdown) == (False, None, None)
    assert caps.kinds == MESSAGE_KINDS | {"task"}
    assert caps.mentions is (module is dt)
    rated = module.create(BackendConfig("g", module.TYPE, None, {"token": "tok-t"}, 7), {})
    assert rated.capabilities.rate_per_minute == 7
    assert module.DEFAULT_BASE_URL.startswith("https://")
    default = module.create(BackendConfig("g", module.TYPE, None, {"token": "tok-t"}), {})
    assert default._url.startswith(module.DEFAULT_BASE_URL + "/")
    plain = build(module, None, {"T": "t"}, token="${env:T}", markdown="none")
    assert plain.capabilities.markdown is None


def test_a_kind_a_robot_cannot_carry_is_refused_before_sending() -> None:
    backend = build(fs, None, {"T": "tok-t"}, token="${env:T}", base_url="http://127.0.0.1:9")
    result = backend.send(delivery(kind="remove"))
    assert result.status is SendStatus.PERMANENT and "does not send `remove`" in result.detail


@pytest.mark.parametrize(
    ("module", "target", "options", "message"),
    [
        (fs, None, {}, 'backend "group" (feishu-bot) needs the robot: url: "${env:NAME}"'),
        (fs, "${env:U}", {"token": "${env:T}"}, "give url or token, not both"),
        (dt, "${env:U}", {"base_url": "http://h"}, "base_url goes with token"),
        (fs, None, {"token": "${env:URLISH}"}, "token must be the robot's token alone"),
        (dt, None, {"token": "${env:T}", "base_url": "ftp://h"}, "base_url must be an http://"),
        (
            dt,
            None,
            {"token": "${env:T}", "base_url": "http://[::1]/?x=1"},
            "base_url takes no query",
        ),
        (fs, "${env:NOT_URL}", {}, "url must be an http:// or https:// URL"),
        (
            fs,
            None,
            {"token": "${env:T}", "markdown": "commonmark"},
            "markdown must be feishu or none",
        ),
        (
            dt,
            None,
            {"token": "${env:T}", "markdown": "feishu"},
            "markdown must be dingtalk or none",
        ),
        (fs, None, {"token": "${env:T}", "overflow": "drop"}, "overflow must be split or truncate"),
        (dt, None, {"token": "${env:T}", "at_all": "maybe"}, "at_all must be true or false"),
        (fs, None, {"token": "${env:T}", "at_all": "true"}, 'has no option "at_all"'),
        (dt, None, {"token": "${env:MISSING}"}, "environment variable MISSING is not set"),
        (fs, None, {"token": "${env:T}", "key": "${env:MISSING}"}, "MISSING is not set"),
    ],
)
def test_a_configuration_that_cannot_work_is_refused_with_a_reason(
    module: Any, target: str | None, options: dict[str, object], message: str
) -> None:
    env = {
        "U": "https://open.feishu.cn/open-apis/bot/v2/hook/SECRETTOKEN",
        "T": "SECRETTOKEN",
        "URLISH": "https://open.feishu.cn/open-apis/bot/v2/hook/SECRETTOKEN",
        "NOT_URL": "SECRETTOKEN",
    }
    with pytest.raises(BackendError) as e:
        module.create(BackendConfig("group", module.TYPE, target, options), env)
    assert message in str(e.value)
    assert "SECRETTOKEN" not in str(e.value)


# -- no secret in sight --------------------------------------------------------------------------

TOKEN, SECRET = "tokS3CRETvalue", "SECsigningS3CRET"


@pytest.mark.parametrize("module", [fs, dt])
def test_no_secret_reaches_a_detail_a_repr_an_error_or_a_log_record(
    httpserver: HTTPServer, module: Any, caplog: pytest.LogCaptureFixture
) -> None:
    echo = f"bad token {TOKEN} for {SECRET} at /hook/{TOKEN}?access_token={TOKEN}"
    httpserver.expect_request("/open-apis/bot/v2/hook/" + TOKEN).respond_with_response(
        Response(json.dumps({"code": 19021, "msg": echo}), 200)
    )
    httpserver.expect_request("/robot/send").respond_with_response(
        Response(json.dumps({"errcode": 310000, "errmsg": echo}), 200)
    )
    env = {"T": TOKEN, "K": SECRET}
    whole_url = (
        httpserver.url_for(f"/open-apis/bot/v2/hook/{TOKEN}")
        if module is fs
        else httpserver.url_for("/robot/send") + f"?access_token={TOKEN}"
    )
    with urllib3_debug(caplog):
        backend = build(
            module, None, env, token="${env:T}", key="${env:K}", base_url=base_of(httpserver)
        )
        results = [backend.send(delivery()), backend.send(delivery(text=long_text()))]
        whole = build(module, "${env:U}", {"U": whole_url, "K": SECRET}, key="${env:K}")
        results.append(whole.send(delivery()))
        with socket_closed() as port:  # nothing listening: a connection error names no URL
            refused = build(
                module, None, env, token="${env:T}", base_url=f"http://127.0.0.1:{port}"
            )
            results.append(refused.send(delivery()))
    assert [r.status for r in results] == [
        SendStatus.PERMANENT,
        SendStatus.PERMANENT,
        SendStatus.PERMANENT,
        SendStatus.RETRY,
    ]
    assert all("***" in r.detail for r in results[:3])
    texts = [repr(r) for r in results] + [repr(backend), repr(whole), repr(refused)]
    with pytest.raises(BackendError) as e:
        build(module, "${env:U}", {"U": whole_url}, token="${env:T}")
    texts.append(str(e.value))
    # the loopback server's own access log (werkzeug) is the platform's side, not ours
    logged = [r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug")]
    assert any("POST" in m for m in logged), logged  # urllib3 did log the request lines
    for text in texts + logged:
        assert TOKEN not in text and SECRET not in text, text
    for b in (backend, whole, refused):
        b.close()


class socket_closed:
    """A port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


def test_closing_twice_is_harmless_and_a_closed_robot_refuses_to_send() -> None:
    backend = build(dt, None, {"T": "tok-t"}, token="${env:T}")
    backend.close()
    backend.close()
    with pytest.raises(RuntimeError, match="dingtalk-bot backend 'group' is closed"):
        backend.send(delivery())


def test_sending_takes_no_longer_than_its_parts(httpserver: HTTPServer) -> None:
    # the pacing is the injected pause, not a sleep: a five-part message is fast in tests
    capture = Capture()
    httpserver.expect_request("/open-apis/bot/v2/hook/tok-t").respond_with_handler(capture)
    backend = build(fs, None, {"T": "tok-t"}, token="${env:T}", base_url=base_of(httpserver))
    started = time.monotonic()
    backend.send(delivery(text=long_text()))
    assert time.monotonic() - started < 5


# -- the docs say what the code does -------------------------------------------------------------

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "backends" / "feishu-dingtalk.md").read_text(
    encoding="utf-8"
)


def test_the_documented_signing_snippets_compute_the_test_vectors() -> None:
    feishu_block, dingtalk_block = re.findall(r"```python\n(.*?)```", DOCS, re.S)
    ns: dict[str, Any] = {"timestamp": NOW_S, "secret": "fs-S3CRET-0"}
    exec(feishu_block, ns)
    assert ns["sign"].decode() == feishu_signature(NOW_S, "fs-S3CRET-0")
    assert ns["sign"].decode() in DOCS
    ns = {"timestamp": NOW_MS, "secret": "SECd1ng3"}
    exec(dingtalk_block, ns)
    assert ns["sign"] == dingtalk_signature(NOW_MS, "SECd1ng3")
    assert f"timestamp={NOW_MS}&sign={ns['sign']}" in DOCS


def test_the_docs_table_every_code_and_the_documented_rates() -> None:
    codes = [
        fs.SIGNATURE_FAILED,
        fs.IP_NOT_ALLOWED,
        fs.KEYWORD_MISSING,
        fs.GATEWAY_ERROR,
        *fs.RETRY_CODES,
        dt.SEND_TOO_FAST,
        dt.SECURITY_REFUSED,
        dt.TOKEN_INVALID,
        dt.TOO_LONG,
    ]
    for code in codes:
        assert re.search(rf"`(?:code|errcode)` {code}\b", DOCS), code
    assert "`errcode` -1" in DOCS
    for module in (fs, dt):
        assert f"| `rate` | `{DEFAULT_RATES[module.TYPE]}` |" in DOCS
        assert f"| `base_url` | `{module.DEFAULT_BASE_URL}` |" in DOCS
    assert f"{fs.BODY_LIMIT:,} bytes" in DOCS and f"{dt.BODY_LIMIT:,} bytes" in DOCS
    assert f"{fs.PART_INTERVAL:g} s apart" in DOCS
    assert f"after {dt.THROTTLE_SECONDS:g} s" in DOCS
