"""Slack, Discord and Telegram backends: their dialects, their exact requests, their answers.

Every request goes to a real HTTP server on 127.0.0.1 (pytest-httpserver), which checks the
path, query, headers and JSON body a platform would receive; the answers replayed are the
platforms' documented ones (Slack's error strings, Discord's 429 and JSON error codes, the Bot
API's `ok: false` bodies). No HTTP layer is mocked.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from sop.engine.core.catalog import DEFAULT_RATES
from sop.engine.run.backends import BackendError, _chat, _http
from sop.engine.run.backends import discord as dc
from sop.engine.run.backends import slack as sl
from sop.engine.run.backends import telegram as tg
from sop.engine.run.backends._text import Policy, Unit, size
from sop.engine.run.ports import BackendConfig, Delivery, SendResult, SendStatus
from sop.engine.validate import Options, validate_file
from werkzeug import Request, Response

from tests.backend_logs import urllib3_debug

ROOT = Path(__file__).resolve().parent.parent
DUE = datetime(2027, 1, 4, 1, 0, tzinfo=UTC)

SLACK_PATH = "/services/T0SOP0001/B0SOP0002/Sl4ckS3cretT0kenValue"
DISCORD_ID = "112233445566778899"
DISCORD_TOKEN = "D1sc0rd-S3cret_Token.value"
DISCORD_PATH = f"/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"
TG_TOKEN = "123456789:AAH-TelegramS3cretTokenValue_0123"
TG_PATH = f"/bot{TG_TOKEN}/sendMessage"
SECRETS = ("Sl4ckS3cretT0kenValue", DISCORD_TOKEN, TG_TOKEN)


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    return ("127.0.0.1", 0)


def delivery(**changes: Any) -> Delivery:
    fields: dict[str, Any] = {
        "key": "dev/welcome/2027-01-04T01:00:00Z/m1",
        "run": "run-1",
        "playbook": "dev",
        "action": "welcome",
        "stage": "launch",
        "kind": "post",
        "audience": "everyone",
        "member": None,
        "owner": "devrel",
        "scheduled_at": DUE,
        "due_at": DUE + timedelta(minutes=1),
        "title": "Welcome",
        "text": "Welcome, **Ana**!",
        "attempt": 1,
    }
    fields.update(changes)
    return Delivery(**fields)


def to_member(**changes: Any) -> Delivery:
    return delivery(kind="message", audience="member", member="m1", **changes)


class Capture:
    """Keeps each request; answers with the next response of a list (the last one repeats)."""

    def __init__(self, *responses: Response) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, str], Any]] = []
        self.responses = list(responses) or [Response("ok", 200)]

    def __call__(self, request: Request) -> Response:
        self.requests.append(
            (request.path, dict(request.args), dict(request.headers), request.get_json())
        )
        i = min(len(self.requests), len(self.responses)) - 1
        return self.responses[i]

    @property
    def bodies(self) -> list[Any]:
        return [body for _, _, _, body in self.requests]


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(json.dumps(body), status, headers=headers, content_type="application/json")


class FakeTime:
    """A monotonic clock that `sleep` advances: waits are recorded, not spent."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# -- building each backend ----------------------------------------------------------------------


def slack(server: HTTPServer, **options: Any) -> sl.SlackWebhookBackend:
    env = {"SLACK_URL": f"https://hooks.slack.com{SLACK_PATH}"}
    config = BackendConfig(
        "group", "slack-webhook", "${env:SLACK_URL}", {"base_url": server.url_for("/"), **options}
    )
    backend = sl.create(config, env)
    backend._sleep = FakeTime().sleep
    return backend


def discord(
    server: HTTPServer, clock: FakeTime | None = None, **options: Any
) -> dc.DiscordWebhookBackend:
    env = {"DISCORD_URL": f"https://discord.com{DISCORD_PATH}"}
    config = BackendConfig(
        "discord",
        "discord-webhook",
        "${env:DISCORD_URL}",
        {"base_url": server.url_for("/"), **options},
    )
    backend = dc.create(config, env)
    clock = clock or FakeTime()
    backend._sleep, backend._monotonic = clock.sleep, clock.monotonic
    return backend


def telegram(server: HTTPServer, **options: Any) -> tg.TelegramBotBackend:
    settings: dict[str, Any] = {
        "token": "${env:TG_TOKEN}",
        "chat_id": "-1001234567890",
        "base_url": server.url_for("/").rstrip("/"),
        **options,
    }
    config = BackendConfig("tg", "telegram-bot", None, settings)
    backend = tg.create(config, {"TG_TOKEN": TG_TOKEN})
    backend._sleep = FakeTime().sleep
    return backend


TG_OK = {"ok": True, "result": {"message_id": 42, "chat": {"id": -1001234567890}}}


# -- the dialects: fixed inputs, fixed outputs --------------------------------------------------

SOURCE = "\n".join(
    [
        "# Welcome, **Ana**!",
        "Read the [rules](https://x.test/r?a=1&b=2) & say *hi* <3 __now__",
        "- one",
        "2. two ~~old~~",
        "> quoted _text_",
        "```",
        "a < b && `c` \\ d",
        "```",
        "5 * 3 = 15, snake_case, \\*literal\\*, <https://x.test>, 1.5!",
    ]
)


def test_slack_mrkdwn_converts_bold_links_and_escapes_control_characters() -> None:
    assert sl.to_mrkdwn(SOURCE).split("\n") == [
        "*Welcome, Ana!*",
        "Read the <https://x.test/r?a=1&amp;b=2|rules> &amp; say _hi_ &lt;3 *now*",
        "• one",
        "2. two ~old~",
        "> quoted _text_",
        "```",
        "a &lt; b &amp;&amp; `c` \\ d",
        "```",
        "5 * 3 = 15, snake_case, *literal*, <https://x.test|https://x.test>, 1.5!",
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*it* and _it_", "_it_ and _it_"),
        ("[a|b](https://x.test/?q=a|b)", "<https://x.test/?q=a%7Cb|a|b>"),
        ("**a *b* c**", "*a _b_ c*"),
        ("**a __b__ c**", "*a b c*"),  # a mark inside itself would close it early
        ("`<tag> & co`", "`&lt;tag&gt; &amp; co`"),
        ("**unclosed", "**unclosed"),
        ("a > b", "a &gt; b"),
    ],
)
def test_slack_mrkdwn_cases(source: str, expected: str) -> None:
    assert sl.to_mrkdwn(source) == expected


def test_slack_plain_removes_markup_and_still_escapes() -> None:
    assert sl.to_slack_plain("**Hi** [docs](https://x.test) <3") == (
        "Hi docs (https://x.test) &lt;3"
    )


def test_markdown_v2_escapes_every_reserved_character_outside_entities() -> None:
    assert tg.to_markdown_v2("_*[]()~`>#+-=|{}.!\\") == (
        "\\_\\*\\[\\]\\(\\)\\~\\`\\>\\#\\+\\-\\=\\|\\{\\}\\.\\!\\\\"
    )
    assert tg.to_markdown_v2(SOURCE).split("\n") == [
        "*Welcome, Ana\\!*",
        "Read the [rules](https://x.test/r?a=1&b=2) & say _hi_ <3 *now*",
        "• one",
        "2\\. two ~old~",
        ">quoted _text_",
        "```",
        "a < b && \\`c\\` \\\\ d",
        "```",
        "5 \\* 3 \\= 15, snake\\_case, \\*literal\\*, [https://x\\.test](https://x.test), 1\\.5\\!",
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("`a_b*c`", "`a_b*c`"),  # inside code only ` and \ are escaped
        ("`` a`b ``", "`a\\`b`"),
        ("[x](https://w.test/A_(b))", "[x](https://w.test/A_(b\\))"),  # ) and \ in a URL
        ("[**b** y](https://x.test)", "[*b* y](https://x.test)"),
        ("```python\nprint('x')\n```", "```python\nprint('x')\n```"),
        ("Ende.", "Ende\\."),
        ("*a*_b_", "_a_\r_b_"),  # not `__`, which Telegram reads as underline
    ],
)
def test_markdown_v2_cases(source: str, expected: str) -> None:
    assert tg.to_markdown_v2(source) == expected


def test_discord_markdown_keeps_commonmark_and_escapes_discord_only_syntax() -> None:
    assert dc.to_discord(SOURCE).split("\n") == [
        "# Welcome, **Ana**!",
        "Read the [rules](https://x.test/r?a=1&b=2) & say *hi* <3 **now**",
        "- one",
        "2. two ~~old~~",
        "> quoted *text*",
        "```",
        "a < b && `c` \\ d",
        "```",
        "5 \\* 3 = 15, snake_case, \\*literal\\*, https://x.test, 1.5!",
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("||spoiler||", "\\|\\|spoiler\\|\\|"),
        ("-# small print", "\\-# small print"),
        ("#### deep", "**deep**"),
        ("_private var_", "*private var*"),
        ("a_b_c", "a_b_c"),
        ("\\_x\\_", "\\_x\\_"),
    ],
)
def test_discord_markdown_cases(source: str, expected: str) -> None:
    assert dc.to_discord(source) == expected


def test_discord_plain_shows_the_words_as_typed() -> None:
    source = "> **Hi** *there*\n1. step\n# Title\n\\# not a heading\n- item"
    assert dc.to_discord_plain(source).split("\n") == [
        "\\> Hi there",
        "1\\. step",
        "Title",
        "\\# not a heading",
        "• item",
    ]


# A MarkdownV2 reader written from the Bot API's rules, to check what the backend sends parses.
_RESERVED = set("_*[]()~`>#+-=|{}.!")


def read_markdown_v2(text: str) -> str:
    """The visible text Telegram would show, or ValueError where it would answer
    `can't parse entities`."""
    out: list[str] = []
    open_marks: list[str] = []
    i, line_start = 0, True
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or not 1 <= ord(text[i + 1]) <= 126:
                raise ValueError(f"a backslash escapes nothing at {i}")
            out.append(text[i + 1])
            i, line_start = i + 2, False
            continue
        if c == "`":
            fence = text.startswith("```", i)
            j = i + (3 if fence else 1)
            if fence:
                while j < len(text) and text[j] != "\n":
                    j += 1
            while True:
                if j >= len(text):
                    raise ValueError(f"code opened at {i} is not closed")
                if text[j] == "\\":
                    out.append(text[j + 1 : j + 2])
                    j += 2
                    continue
                if fence and text.startswith("```", j):
                    j += 3
                    break
                if text[j] == "`":
                    if fence:
                        raise ValueError(f"an unescaped ` inside pre at {j}")
                    j += 1
                    break
                out.append(text[j])
                j += 1
            i, line_start = j, False
            continue
        if c == "[":
            open_marks.append("[")
            i += 1
            continue
        if c == "]":
            if not open_marks or open_marks[-1] != "[" or text[i + 1 : i + 2] != "(":
                raise ValueError(f"a ] that closes no link at {i}")
            open_marks.pop()
            j = i + 2
            while j < len(text) and text[j] != ")":
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                raise ValueError(f"a link's URL is not closed at {i}")
            i, line_start = j + 1, False
            continue
        if c in "*_~":
            mark = "__" if text.startswith("__", i) else c
            if open_marks and open_marks[-1] == mark:
                open_marks.pop()
            elif mark in open_marks:
                raise ValueError(f"entities overlap at {i}")
            else:
                open_marks.append(mark)
            i += len(mark)
            continue
        if c == "\r":  # "a character with code 13, which will be ignored"
            i += 1
            continue
        if c == ">" and line_start:
            i += 1
            continue
        if c in _RESERVED:
            raise ValueError(f"character '{c}' is reserved and must be escaped (at {i})")
        out.append(c)
        line_start = c == "\n"
        i += 1
    if open_marks:
        raise ValueError(f"entities left open: {open_marks}")
    return "".join(out)


def test_the_markdown_v2_reader_refuses_what_telegram_refuses() -> None:
    for bad in ("1.5", "a_b", "*open", "[x](y", "`code", "(", "a > b"):
        with pytest.raises(ValueError):
            read_markdown_v2(bad)
    assert read_markdown_v2("*b* _i_ `c\\`` [l](u) \\.") == "b i c` l ."


MARKDOWNISH = st.lists(
    st.sampled_from([*"ab _*[]()~`>#+-=|{}.!\\\n&<:/", "**", "__", "~~", "```", "é", "😀", "# "]),
    max_size=60,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(MARKDOWNISH)
def test_whatever_the_template_says_telegram_can_parse_what_is_sent(text: str) -> None:
    read_markdown_v2(tg.to_markdown_v2(text))


@settings(max_examples=300, deadline=None)
@given(MARKDOWNISH)
def test_whatever_the_template_says_slack_gets_no_raw_control_character(text: str) -> None:
    sent = sl.to_mrkdwn(text)
    sent = re.sub(r"<[^<>|]+\|[^<>]*>", "", sent)  # our links
    sent = re.sub(r"^> ", "", sent, flags=re.MULTILINE)  # our quote markers
    assert "<" not in sent and ">" not in sent
    assert re.fullmatch(r"(?:[^&]|&(?:amp|lt|gt);)*", sent, flags=re.DOTALL)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from([*"ab .!-_*`[]()\n", "😀", "é"]), max_size=3000))
def test_every_split_part_fits_in_utf16_units_and_parses(text: str) -> None:
    if not text.strip():
        return
    parts = sl.fit_adapted(text, 300, Unit.UTF16, Policy.SPLIT, tg.to_markdown_v2)
    for _, sent in parts:
        assert size(sent, Unit.UTF16) <= 300
        read_markdown_v2(sent)


# -- what every backend declares and refuses ----------------------------------------------------

BUILDERS: dict[str, Callable[..., Any]] = {
    "slack-webhook": slack,
    "discord-webhook": discord,
    "telegram-bot": telegram,
}


MODULES = {"slack-webhook": sl, "discord-webhook": dc, "telegram-bot": tg}


@pytest.mark.parametrize(
    ("type_name", "limit", "unit", "markdown", "mentions"),
    [
        ("slack-webhook", 4000, "chars", "mrkdwn", True),
        ("discord-webhook", 2000, "utf16", "discord", True),
        ("telegram-bot", 4096, "utf16", "markdownv2", False),
    ],
)
def test_each_backend_declares_its_platform(
    httpserver: HTTPServer, type_name: str, limit: int, unit: str, markdown: str, mentions: bool
) -> None:
    backend = BUILDERS[type_name](httpserver)
    caps = backend.capabilities
    assert caps == MODULES[type_name].CAPABILITIES  # what `sop backends` shows
    assert (caps.max_length, caps.length_unit) == (limit, unit)
    assert caps.markdown is None  # plain text unless the dialect is asked for
    styled = BUILDERS[type_name](httpserver, markdown=markdown)
    assert styled.capabilities.markdown == markdown
    styled.close()
    assert caps.mentions is mentions
    assert caps.idempotent is False
    assert caps.rate_per_minute == DEFAULT_RATES[type_name]  # what `sop validate` budgets with
    assert caps.kinds is not None and "post" in caps.kinds and "remove" not in caps.kinds
    backend.close()
    backend.close()  # twice is harmless


@pytest.mark.parametrize("type_name", BUILDERS)
def test_a_declared_rate_beats_the_platform_default(httpserver: HTTPServer, type_name: str) -> None:
    backend = BUILDERS[type_name](httpserver)
    assert backend.capabilities.rate_per_minute == DEFAULT_RATES[type_name]
    config = BackendConfig("x", type_name, None, {}, rate_per_minute=7)
    assert _chat.rate(config, type_name) == 7


@pytest.mark.parametrize("type_name", BUILDERS)
def test_actions_a_chat_cannot_perform_and_empty_texts_are_refused_unsent(
    httpserver: HTTPServer, type_name: str
) -> None:
    backend = BUILDERS[type_name](httpserver)
    removed = backend.send(delivery(kind="remove"))
    assert removed.status is SendStatus.PERMANENT
    assert "does not send `remove` actions" in removed.detail
    empty = backend.send(delivery(text="  \n"))
    assert empty.status is SendStatus.PERMANENT and "empty" in empty.detail
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("type_name", "options", "message"),
    [
        ("slack-webhook", {"markdown": "html"}, "markdown must be mrkdwn or none"),
        ("slack-webhook", {"overflow": "drop"}, "overflow must be split or truncate"),
        ("slack-webhook", {"max_length": "50000"}, "max_length must be between 64 and 40000"),
        ("discord-webhook", {"max_length": "2001"}, "max_length must be between 64 and 2000"),
        ("discord-webhook", {"thread_id": "general"}, "thread_id must be a Discord id"),
        ("discord-webhook", {"mention_everone": "true"}, 'has no option "mention_everone"'),
        ("telegram-bot", {"chat_id": "my group"}, "chat_id must be a chat id"),
        ("telegram-bot", {"markdown": "html"}, "markdown must be markdownv2 or none"),
        ("telegram-bot", {"base_url": "ftp://127.0.0.1"}, "base_url must be an http"),
        ("telegram-bot", {"base_url": "https://evil.test"}, "base_url receives the token"),
        ("slack-webhook", {"base_url": "http://10.0.0.8:80"}, "base_url receives the token"),
        ("discord-webhook", {"base_url": "https://x.test/?a=1"}, "base_url receives the token"),
    ],
)
def test_a_bad_option_stops_the_build(
    httpserver: HTTPServer, type_name: str, options: dict[str, Any], message: str
) -> None:
    held = _http.SCRUB.secrets
    with pytest.raises(BackendError, match=re.escape(message)):
        BUILDERS[type_name](httpserver, **options)
    assert _http.SCRUB.secrets == held  # nothing opened, nothing left registered


@pytest.mark.parametrize(
    ("type_name", "path", "field", "plain"),
    [
        ("slack-webhook", SLACK_PATH, "text", "Hi Ana &lt;3"),
        ("discord-webhook", DISCORD_PATH, "content", "Hi Ana <3"),
        ("telegram-bot", TG_PATH, "text", "Hi Ana <3"),
    ],
)
def test_without_the_markdown_option_a_chat_sends_plain_text(
    httpserver: HTTPServer, type_name: str, path: str, field: str, plain: str
) -> None:
    capture = Capture(json_response(TG_OK if type_name == "telegram-bot" else MESSAGE))
    httpserver.expect_request(path).respond_with_handler(capture)
    backend = BUILDERS[type_name](httpserver)
    assert backend.capabilities.markdown is None
    assert backend.send(delivery(text="Hi **Ana** <3")).status is SendStatus.OK
    [body] = capture.bodies
    assert body[field] == plain  # the markup removed, nothing formatted
    assert "parse_mode" not in body and body.get("mrkdwn") in (None, False)
    backend.close()


@pytest.mark.parametrize("type_name", BUILDERS)
def test_a_markdown_option_that_names_none_is_plain_text_too(
    httpserver: HTTPServer, type_name: str
) -> None:
    backend = BUILDERS[type_name](httpserver, markdown="none")
    assert backend.capabilities == BUILDERS[type_name](httpserver).capabilities
    backend.close()


# -- Slack: the request -------------------------------------------------------------------------


def test_slack_posts_mrkdwn_text_to_the_webhook_path(httpserver: HTTPServer) -> None:
    capture = Capture(Response("ok", 200, content_type="text/html"))
    httpserver.expect_request(SLACK_PATH, method="POST").respond_with_handler(capture)
    backend = slack(httpserver, markdown="mrkdwn")
    result = backend.send(delivery(text="Hi **Ana** & <team>: [docs](https://x.test)"))
    assert result == SendResult.ok("HTTP 200")
    [(path, query, headers, body)] = capture.requests
    assert (path, query) == (SLACK_PATH, {})
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["Connection"] == "close"
    assert headers["User-Agent"].startswith("sop/")
    assert body == {"text": "Hi *Ana* &amp; &lt;team&gt;: <https://x.test|docs>"}


def test_slack_mentions_the_member_by_their_slack_user_id(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request(SLACK_PATH).respond_with_handler(capture)
    backend = slack(httpserver)
    backend.send(to_member(text="welcome", attributes={"slack_user_id": "U024BE7LH"}))
    backend.send(to_member(text="welcome", attributes={"slack_user_id": "<!here>"}))
    # a staff task about the member is not the member's business
    about = {"kind": "task", "audience": "member", "member": "m1", "text": "call them"}
    backend.send(delivery(**about, attributes={"slack_user_id": "U024BE7LH"}))
    assert capture.bodies == [
        {"text": "<@U024BE7LH> welcome", "mrkdwn": False},
        {"text": "welcome", "mrkdwn": False},
        {"text": "call them", "mrkdwn": False},
    ]


def test_slack_plain_text_turns_mrkdwn_off(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request(SLACK_PATH).respond_with_handler(capture)
    slack(httpserver, markdown="none").send(delivery(text="**Hi** <3"))
    assert capture.bodies == [{"text": "Hi &lt;3", "mrkdwn": False}]


def test_slack_splits_a_long_text_into_numbered_parts_in_order(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request(SLACK_PATH).respond_with_handler(capture)
    paragraph = "Lorem ipsum & dolor sit amet. " * 60  # 1,800 characters, 2,400 escaped
    result = slack(httpserver).send(delivery(text="\n\n".join([paragraph] * 5)))
    texts = [b["text"] for b in capture.bodies]
    assert result.status is SendStatus.OK
    assert result.detail == f"HTTP 200, in {len(texts)} parts"
    assert slack(httpserver).cost(delivery(text="\n\n".join([paragraph] * 5))) == len(texts)
    assert len(texts) >= 3
    assert all(len(t) <= 4000 for t in texts)
    assert all(t.endswith(f" ({i}/{len(texts)})") for i, t in enumerate(texts, 1))
    assert all("&amp;" in t and " & " not in t for t in texts)


def test_a_part_that_fails_after_earlier_parts_went_out_is_uncertain(
    httpserver: HTTPServer,
) -> None:
    capture = Capture(Response("ok", 200), Response("invalid_payload", 400))
    httpserver.expect_request(SLACK_PATH).respond_with_handler(capture)
    result = slack(httpserver, max_length="100").send(delivery(text="word " * 40))
    assert result.status is SendStatus.UNCERTAIN
    assert result.detail.startswith("part 2/3 failed after 1 of 3 parts were posted")
    assert "HTTP 400: invalid_payload" in result.detail
    assert len(capture.requests) == 2  # the rest is not sent, the first is not resent


def test_a_first_part_that_fails_is_the_deliverys_failure(httpserver: HTTPServer) -> None:
    capture = Capture(Response("", 503, headers={"Retry-After": "4"}))
    httpserver.expect_request(SLACK_PATH).respond_with_handler(capture)
    result = slack(httpserver, max_length="100").send(delivery(text="word " * 40))
    assert result == SendResult.retry("part 1/3: HTTP 503", 4.0)
    assert len(capture.requests) == 1


def test_a_later_part_rate_limited_briefly_is_waited_for_and_sent_again(
    httpserver: HTTPServer,
) -> None:
    capture = Capture(
        Response("ok", 200),
        Response("rate_limited", 429, headers={"Retry-After": "2"}),
        Response("ok", 200),
    )
    httpserver.expect_request(SLACK_PATH).respond_with_handler(capture)
    backend = slack(httpserver, max_length="100")
    clock = FakeTime()
    backend._sleep = clock.sleep
    result = backend.send(delivery(text="word " * 30))
    assert result.status is SendStatus.OK
    assert clock.slept == [2.0]
    assert [b["text"][-5:] for b in capture.bodies] == ["(1/2)", "(2/2)", "(2/2)"]


def test_truncate_overflow_sends_one_marked_message(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request(SLACK_PATH).respond_with_handler(capture)
    slack(httpserver, max_length="100", overflow="truncate").send(delivery(text="word " * 40))
    [body] = capture.bodies
    assert len(body["text"]) <= 100 and body["text"].endswith("…(truncated)")


# -- Slack: the answers (docs.slack.dev, incoming webhooks: handling errors) ---------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (200, "ok", {}, SendResult.ok("HTTP 200")),
        (429, "", {"Retry-After": "30"}, SendResult.retry("HTTP 429: rate limited by Slack", 30)),
        (
            400,
            "invalid_payload",
            {},
            SendResult.permanent("HTTP 400: invalid_payload (Slack could not read the message)"),
        ),
        (400, "no_text", {}, SendResult.permanent("HTTP 400: no_text (the message has no text)")),
        (
            403,
            "action_prohibited",
            {},
            SendResult.permanent(
                "HTTP 403: action_prohibited (a workspace admin restricts posting through this"
                " webhook)"
            ),
        ),
        (
            403,
            "invalid_token",
            {},
            SendResult.permanent(
                "HTTP 403: invalid_token (the webhook was revoked: create a new one)"
            ),
        ),
        (
            404,
            "channel_not_found",
            {},
            SendResult.permanent(
                "HTTP 404: channel_not_found (the webhook's channel no longer exists: create a new"
                " webhook)"
            ),
        ),
        (
            404,
            "no_service",
            {},
            SendResult.permanent(
                "HTTP 404: no_service (the webhook was removed or disabled: create a new one)"
            ),
        ),
        (
            410,
            "channel_is_archived",
            {},
            SendResult.permanent(
                "HTTP 410: channel_is_archived (the channel is archived: unarchive it or create"
                " a new webhook)"
            ),
        ),
        (500, "rollup_error", {}, SendResult.retry("HTTP 500: rollup_error")),
        (503, "", {"Retry-After": "5"}, SendResult.retry("HTTP 503", 5)),
        (504, "", {}, SendResult.uncertain("HTTP 504: the gateway timed out")),
        (
            302,
            "",
            {"Location": "/elsewhere"},
            SendResult.permanent(
                "HTTP 302: the webhook redirects; configure the URL it redirects to"
            ),
        ),
        (
            201,
            "",
            {},
            SendResult.uncertain(
                "HTTP 201: Slack answers 200 when it posts; the message may have been posted"
            ),
        ),
    ],
)
def test_slack_answers_are_classified(
    httpserver: HTTPServer,
    status: int,
    body: str,
    headers: dict[str, str],
    expected: SendResult,
) -> None:
    response = Response(body, status, headers=headers, content_type="text/html")
    httpserver.expect_oneshot_request(SLACK_PATH).respond_with_response(response)
    assert slack(httpserver).send(delivery()) == expected


# -- Discord: the request -----------------------------------------------------------------------

MESSAGE = {"id": "1180000000000000001", "channel_id": "1170000000000000001", "content": "x"}


def test_discord_executes_the_webhook_waiting_for_the_message(httpserver: HTTPServer) -> None:
    capture = Capture(json_response(MESSAGE))
    httpserver.expect_request(DISCORD_PATH, method="POST").respond_with_handler(capture)
    result = discord(httpserver, markdown="discord").send(
        delivery(text="Hi **Ana** @everyone ||x||")
    )
    assert result == SendResult.ok("HTTP 200", remote_id="1180000000000000001")
    [(path, query, headers, body)] = capture.requests
    assert (path, query) == (DISCORD_PATH, {"wait": "true"})
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert body == {
        "content": "Hi **Ana** @everyone \\|\\|x\\|\\|",
        "allowed_mentions": {"parse": []},  # @everyone shows, pings nobody
    }


def test_discord_pings_the_member_it_addresses_and_everyone_only_when_told(
    httpserver: HTTPServer,
) -> None:
    capture = Capture(json_response(MESSAGE))
    httpserver.expect_request(DISCORD_PATH).respond_with_handler(capture)
    member = to_member(text="welcome", attributes={"discord_user_id": "80351110224678912"})
    discord(httpserver).send(member)
    discord(httpserver, mention_everyone="true", username="Acme Bot", thread_id="42").send(
        delivery(text="@everyone release!")
    )
    first, second = capture.requests
    assert first[3] == {
        "content": "<@80351110224678912> welcome",
        "allowed_mentions": {"parse": [], "users": ["80351110224678912"]},
    }
    assert second[1] == {"wait": "true", "thread_id": "42"}
    assert second[3] == {
        "content": "@everyone release!",
        "allowed_mentions": {"parse": ["everyone"]},
        "username": "Acme Bot",
    }


def test_discord_splits_at_2000_utf16_units(httpserver: HTTPServer) -> None:
    capture = Capture(json_response(MESSAGE))
    httpserver.expect_request(DISCORD_PATH).respond_with_handler(capture)
    text = "\n".join(["😀 party " * 20] * 30)  # emoji count two units each
    result = discord(httpserver).send(delivery(text=text))
    contents = [b["content"] for b in capture.bodies]
    assert result.status is SendStatus.OK and len(contents) > 1
    assert all(size(c, Unit.UTF16) <= 2000 for c in contents)
    assert result.remote_id == ",".join([MESSAGE["id"]] * len(contents))


def test_an_exhausted_bucket_is_waited_out_without_asking_discord(httpserver: HTTPServer) -> None:
    empty = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "42.5"}
    capture = Capture(json_response(MESSAGE, headers=empty))
    httpserver.expect_request(DISCORD_PATH).respond_with_handler(capture)
    clock = FakeTime()
    backend = discord(httpserver, clock)
    assert backend.send(delivery()).status is SendStatus.OK
    held = backend.send(delivery())
    assert held == SendResult.retry("not sent: the webhook's rate limit resets in 42.50 s", 42.5)
    assert len(capture.requests) == 1  # no request that could only earn a 429
    clock.now += 42.5
    assert backend.send(delivery()).status is SendStatus.OK
    assert len(capture.requests) == 2


def test_a_bucket_that_refills_within_seconds_is_slept_through(httpserver: HTTPServer) -> None:
    empty = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "1.25"}
    capture = Capture(json_response(MESSAGE, headers=empty), json_response(MESSAGE))
    httpserver.expect_request(DISCORD_PATH).respond_with_handler(capture)
    clock = FakeTime()
    backend = discord(httpserver, clock)
    assert backend.send(delivery()).status is SendStatus.OK
    assert backend.send(delivery()).status is SendStatus.OK  # not a retry: no attempt spent
    assert clock.slept == [1.25]
    assert len(capture.requests) == 2


def test_between_parts_an_exhausted_bucket_is_slept_through(httpserver: HTTPServer) -> None:
    capture = Capture(
        json_response(
            MESSAGE, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "0.75"}
        ),
        json_response(MESSAGE),
    )
    httpserver.expect_request(DISCORD_PATH).respond_with_handler(capture)
    clock = FakeTime()
    result = discord(httpserver, clock, max_length="100").send(delivery(text="word " * 30))
    assert result.status is SendStatus.OK
    assert clock.slept == [0.75]
    assert len(capture.requests) == 2


# -- Discord: the answers (discord.com/developers/docs/topics/rate-limits, opcodes-and-status-codes)

UNKNOWN_WEBHOOK = {"message": "Unknown Webhook", "code": 10015}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            json_response(
                {"message": "You are being rate limited.", "retry_after": 64.57, "global": False},
                429,
                {"Retry-After": "65", "X-RateLimit-Scope": "user"},
            ),
            SendResult.retry("HTTP 429: You are being rate limited. [rate limited (user)]", 64.57),
        ),
        (
            json_response(
                {"message": "You are being rate limited.", "retry_after": 1.5, "global": True},
                429,
                {"Retry-After": "2", "X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"},
            ),
            SendResult.retry("HTTP 429: You are being rate limited. [rate limited (global)]", 1.5),
        ),
        (
            json_response(
                {"message": "The resource is being rate limited.", "retry_after": 1336.57},
                429,
                {"X-RateLimit-Scope": "shared"},
            ),
            SendResult.retry(
                "HTTP 429: The resource is being rate limited. [rate limited (shared)]", 1336.57
            ),
        ),
        (
            json_response(
                {"message": "You are being rate limited.", "retry_after": 1500, "global": False},
                429,
                {"Retry-After": "2"},
            ),
            SendResult.retry("HTTP 429: You are being rate limited.", 2),  # milliseconds, once
        ),
        (
            json_response(
                {
                    "code": 50035,
                    "message": "Invalid Form Body",
                    "errors": {
                        "content": {
                            "_errors": [
                                {
                                    "code": "BASE_TYPE_MAX_LENGTH",
                                    "message": "Must be 2000 or fewer in length.",
                                }
                            ]
                        }
                    },
                },
                400,
            ),
            SendResult.permanent(
                "HTTP 400, code 50035: Invalid Form Body (content: Must be 2000 or fewer in"
                " length.)"
            ),
        ),
        (
            json_response({"message": "Cannot send an empty message", "code": 50006}, 400),
            SendResult.permanent("HTTP 400, code 50006: Cannot send an empty message"),
        ),
        (
            json_response({"message": "Invalid Webhook Token", "code": 50027}, 401),
            SendResult.permanent("HTTP 401, code 50027: Invalid Webhook Token"),
        ),
        (
            json_response({"message": "Missing Permissions", "code": 50013}, 403),
            SendResult.permanent("HTTP 403, code 50013: Missing Permissions"),
        ),
        (
            json_response(UNKNOWN_WEBHOOK, 404),
            SendResult.permanent("HTTP 404, code 10015: Unknown Webhook"),
        ),
        (
            json_response({"message": "500: Internal Server Error", "code": 0}, 500),
            SendResult.retry("HTTP 500: 500: Internal Server Error"),
        ),
        (Response("upstream", 502), SendResult.retry("HTTP 502: upstream")),
        (Response("", 504), SendResult.uncertain("HTTP 504: the gateway timed out")),
        (Response("", 204), SendResult.ok("HTTP 204")),
    ],
)
def test_discord_answers_are_classified(
    httpserver: HTTPServer, response: Response, expected: SendResult
) -> None:
    httpserver.expect_oneshot_request(DISCORD_PATH).respond_with_response(response)
    assert discord(httpserver).send(delivery()) == expected


def test_a_deleted_webhook_is_not_tried_again(httpserver: HTTPServer) -> None:
    capture = Capture(json_response(UNKNOWN_WEBHOOK, 404))
    httpserver.expect_request(DISCORD_PATH).respond_with_handler(capture)
    backend = discord(httpserver)
    assert backend.send(delivery()).status is SendStatus.PERMANENT
    again = backend.send(delivery())
    assert again == SendResult.permanent(
        "not sent: the webhook answered HTTP 404 earlier in this run; fix the URL and start again"
    )
    assert len(capture.requests) == 1


def test_a_discord_url_that_is_not_a_webhook_is_refused_without_quoting_it() -> None:
    config = BackendConfig("d", "discord-webhook", "${env:U}", {})
    with pytest.raises(BackendError) as e:
        dc.create(config, {"U": f"https://discord.com/channels/{DISCORD_TOKEN}"})
    assert DISCORD_TOKEN not in str(e.value)
    assert "must be a Discord webhook URL" in str(e.value)


# -- Telegram: the request ----------------------------------------------------------------------


def test_telegram_sends_markdown_v2_to_the_group(httpserver: HTTPServer) -> None:
    capture = Capture(json_response(TG_OK))
    httpserver.expect_request(TG_PATH, method="POST").respond_with_handler(capture)
    result = telegram(httpserver, markdown="markdownv2").send(
        delivery(text="Hi **Ana**, v1.2 is out!")
    )
    assert result == SendResult.ok("HTTP 200", remote_id="42")
    [(path, query, headers, body)] = capture.requests
    assert (path, query) == (TG_PATH, {})
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert body == {
        "chat_id": -1001234567890,
        "text": "Hi *Ana*, v1\\.2 is out\\!",
        "parse_mode": "MarkdownV2",
    }


def test_telegram_writes_to_a_member_in_their_private_chat(httpserver: HTTPServer) -> None:
    capture = Capture(json_response(TG_OK))
    httpserver.expect_request(TG_PATH).respond_with_handler(capture)
    backend = telegram(httpserver)
    backend.send(to_member(text="hello", attributes={"telegram_chat_id": 5550001}))
    missing = backend.send(to_member(text="hello"))
    task = backend.send(delivery(kind="task", audience="member", member="m1", text="call m1"))
    assert task.status is SendStatus.OK  # staff work about a member goes to the group
    assert [b["chat_id"] for b in capture.bodies] == [5550001, -1001234567890]
    assert missing.status is SendStatus.PERMANENT
    assert "member m1 needs their telegram_chat_id attribute" in missing.detail


def test_a_group_post_without_chat_id_is_refused_unsent(httpserver: HTTPServer) -> None:
    config = BackendConfig(
        "tg", "telegram-bot", None, {"token": "${env:T}", "base_url": httpserver.url_for("/")}
    )
    backend = tg.create(config, {"T": TG_TOKEN})
    result = backend.send(delivery())
    assert result.status is SendStatus.PERMANENT and "needs the group's chat_id" in result.detail
    assert httpserver.log == []


def test_telegram_plain_text_sends_no_parse_mode(httpserver: HTTPServer) -> None:
    capture = Capture(json_response(TG_OK))
    httpserver.expect_request(TG_PATH).respond_with_handler(capture)
    telegram(httpserver, markdown="none").send(delivery(text="**Hi** v1.2!"))
    assert capture.bodies == [{"chat_id": -1001234567890, "text": "Hi v1.2!"}]


def test_telegram_counts_utf16_units_when_splitting(httpserver: HTTPServer) -> None:
    capture = Capture(json_response(TG_OK))
    httpserver.expect_request(TG_PATH).respond_with_handler(capture)
    text = "\n".join(["😀😀 ok " * 50] * 20)  # 6,000 code points, 8,000 UTF-16 units
    result = telegram(httpserver, markdown="markdownv2").send(delivery(text=text))
    texts = [b["text"] for b in capture.bodies]
    assert result.status is SendStatus.OK and len(texts) == 2
    assert all(size(t, Unit.UTF16) <= 4096 for t in texts)
    assert len(text) + 2 * len(" (1/2)") < 2 * 4096  # in code points it would fit in one
    assert all(t.endswith(f"\\({i}/2\\)") for i, t in enumerate(texts, 1))


MIGRATED = json_response(
    {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": -1009876543210},
    },
    400,
)


def test_a_group_that_became_a_supergroup_gets_the_message_once_at_its_new_id(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    capture = Capture(MIGRATED, json_response(TG_OK))
    httpserver.expect_request(TG_PATH).respond_with_handler(capture)
    backend = telegram(httpserver, chat_id="-123456")
    with caplog.at_level(logging.WARNING, logger="sop.engine.run.backends.telegram"):
        result = backend.send(delivery())
    note = 'chat -123456 is now supergroup -1009876543210: set chat_id: "-1009876543210" in the'
    assert result == SendResult.ok(f"HTTP 200 ({note} playbook)", remote_id="42")
    assert [b["chat_id"] for b in capture.bodies] == [-123456, -1009876543210]
    assert backend.migrated == {"-123456": "-1009876543210"}
    assert "set chat_id to -1009876543210" in caplog.text
    # the next delivery goes straight to the new id, and still says so
    later = backend.send(delivery())
    assert [b["chat_id"] for b in capture.bodies][2:] == [-1009876543210]
    assert note in later.detail


def test_a_chat_is_followed_to_its_new_id_only_once_per_send(httpserver: HTTPServer) -> None:
    capture = Capture(MIGRATED)
    httpserver.expect_request(TG_PATH).respond_with_handler(capture)
    result = telegram(httpserver, chat_id="-123456").send(delivery())
    assert result.status is SendStatus.PERMANENT
    assert "the group became a supergroup" in result.detail
    assert len(capture.requests) == 2


def test_markdown_telegram_cannot_parse_is_sent_again_as_plain_text(
    httpserver: HTTPServer,
) -> None:
    refused = json_response(
        {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: can't parse entities: Can't find end of the entity"
            " starting at byte offset 3",
        },
        400,
    )
    capture = Capture(refused, json_response(TG_OK))
    httpserver.expect_request(TG_PATH).respond_with_handler(capture)
    result = telegram(httpserver, markdown="markdownv2").send(delivery(text="Hi **Ana**"))
    assert result.status is SendStatus.OK
    assert result.detail == "HTTP 200 (sent without formatting: Telegram could not parse it)"
    assert capture.bodies[1] == {"chat_id": -1001234567890, "text": "Hi Ana"}


# -- Telegram: the answers (core.telegram.org/bots/api#making-requests, bots/faq) -----------------


def tg_error(status: int, description: str, **parameters: int) -> Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return json_response(body, status)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            tg_error(429, "Too Many Requests: retry after 7", retry_after=7),
            SendResult.retry("HTTP 429: Too Many Requests: retry after 7", 7),
        ),
        (
            tg_error(400, "Bad Request: chat not found"),
            SendResult.permanent("HTTP 400: Bad Request: chat not found"),
        ),
        (
            tg_error(403, "Forbidden: bot was blocked by the user"),
            SendResult.permanent("HTTP 403: Forbidden: bot was blocked by the user"),
        ),
        (
            tg_error(403, "Forbidden: bot was kicked from the supergroup chat"),
            SendResult.permanent("HTTP 403: Forbidden: bot was kicked from the supergroup chat"),
        ),
        (
            tg_error(401, "Unauthorized"),
            SendResult.permanent(
                "HTTP 401: Unauthorized (the bot token was refused: check the variable that"
                " holds it)"
            ),
        ),
        (
            tg_error(404, "Not Found"),
            SendResult.permanent(
                "HTTP 404: Not Found (no such bot: the token is malformed or base_url is wrong)"
            ),
        ),
        (
            tg_error(400, "Bad Request: message is too long"),
            SendResult.permanent("HTTP 400: Bad Request: message is too long"),
        ),
        (
            tg_error(500, "Internal Server Error"),
            SendResult.retry("HTTP 500: Internal Server Error"),
        ),
        (Response("Bad Gateway", 502), SendResult.retry("HTTP 502: Bad Gateway")),
        (Response("", 504), SendResult.uncertain("HTTP 504: the gateway timed out")),
        (
            json_response({"ok": False, "error_code": 400, "description": "Bad Request"}, 200),
            SendResult.permanent("HTTP 200, error_code 400: Bad Request"),
        ),
    ],
)
def test_telegram_answers_are_classified(
    httpserver: HTTPServer, response: Response, expected: SendResult
) -> None:
    httpserver.expect_oneshot_request(TG_PATH).respond_with_response(response)
    assert telegram(httpserver).send(delivery()) == expected


def test_a_base_url_elsewhere_than_loopback_comes_from_the_environment() -> None:
    options = {"token": "${env:T}", "chat_id": "-1", "base_url": "${env:TG_API}"}
    config = BackendConfig("tg", "telegram-bot", None, options)
    env = {"T": TG_TOKEN, "TG_API": "https://tg-proxy.internal.test/"}
    backend = tg.create(config, env)
    assert backend._url == f"https://tg-proxy.internal.test/bot{TG_TOKEN}/sendMessage"
    assert "tg-proxy" in repr(backend) and TG_TOKEN not in repr(backend)
    backend.close()


def test_a_token_that_is_not_a_bot_token_is_refused_without_quoting_it() -> None:
    config = BackendConfig("tg", "telegram-bot", None, {"token": "${env:T}", "chat_id": "-1"})
    with pytest.raises(BackendError) as e:
        tg.create(config, {"T": "not-a-token-S3CRET"})
    assert "S3CRET" not in str(e.value)
    with pytest.raises(BackendError, match="needs the bot token"):
        tg.create(BackendConfig("tg", "telegram-bot", None, {}), {})


# -- failures before an answer: one rule for the three ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("type_name", BUILDERS)
def test_a_refused_connection_is_a_retry(type_name: str) -> None:
    class Nowhere:
        def url_for(self, path: str) -> str:
            return f"http://127.0.0.1:{port}{path}"

    port = free_port()
    result = BUILDERS[type_name](Nowhere()).send(delivery())
    assert result.status is SendStatus.RETRY
    assert result.detail == (
        f"could not connect to http://127.0.0.1:{port}: connection refused or unreachable"
    )


@pytest.mark.parametrize("type_name", BUILDERS)
def test_no_answer_after_the_request_went_is_uncertain(
    httpserver: HTTPServer, type_name: str
) -> None:
    def slow(_request: Request) -> Response:
        time.sleep(1.0)
        return Response("ok", 200)

    httpserver.expect_request(re.compile(".*")).respond_with_handler(slow)
    backend = BUILDERS[type_name](httpserver, read_timeout="0.3")
    result = backend.send(delivery())
    assert result.status is SendStatus.UNCERTAIN
    assert result.detail.startswith(f"no answer from {httpserver.url_for('').rstrip('/')} ")


# -- secrets: never in a detail, an error, a repr or a log line ---------------------------------


def echo_everything(request: Request) -> Response:
    """A hostile platform: quotes the URL and the body back in its error."""
    return Response(f"bad {request.url} {request.get_data(as_text=True)}", 400)


@pytest.mark.parametrize("type_name", BUILDERS)
def test_no_secret_reaches_a_detail_a_repr_or_a_log_line(
    httpserver: HTTPServer, type_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request(re.compile(".*")).respond_with_handler(echo_everything)
    with urllib3_debug(caplog):
        backend = BUILDERS[type_name](httpserver)
        results = [backend.send(delivery()), backend.send(to_member(attributes={}))]
        text = repr(backend) + repr(backend._transport)
        backend.close()
    client_logs = [r for r in caplog.records if not r.name.startswith(("werkzeug", "pytest"))]
    # urllib3 logged the request line (path and all) at DEBUG; the filter scrubbed it
    assert any(r.name.startswith("urllib3") and "***" in r.getMessage() for r in client_logs)
    seen = text + "".join(r.detail for r in results) + "".join(r.getMessage() for r in client_logs)
    for secret in SECRETS:
        assert secret not in seen
    assert "bad" in results[0].detail  # the platform's words are kept, the secrets are not


def test_closing_a_backend_stops_scrubbing_its_secrets_only(httpserver: HTTPServer) -> None:
    before = _http.SCRUB.secrets.get(SLACK_PATH, 0)
    first, second = slack(httpserver), slack(httpserver)
    assert _http.SCRUB.secrets[SLACK_PATH] == before + 2
    first.close()
    assert _http.SCRUB.secrets[SLACK_PATH] == before + 1  # the second still holds the same URL
    second.close()
    assert _http.SCRUB.secrets.get(SLACK_PATH, 0) == before


# -- registration -------------------------------------------------------------------------------


def test_the_three_types_are_registered_in_the_entry_point_group() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    group = project["project"]["entry-points"]["sop.backends"]
    assert group["slack-webhook"] == "sop.engine.run.backends.slack:create"
    assert group["discord-webhook"] == "sop.engine.run.backends.discord:create"
    assert group["telegram-bot"] == "sop.engine.run.backends.telegram:create"


DOC = ROOT / "docs" / "backends" / "slack-discord-telegram.md"


@pytest.mark.parametrize(
    "snippet", re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
)
def test_the_docs_playbook_snippets_validate(tmp_path: Path, snippet: str) -> None:
    first = re.search(r"^  ([a-z][a-z0-9_-]*):", snippet, re.M)
    assert first is not None
    path = tmp_path / "p.yaml"
    path.write_text(
        "playbook: docs\ntimezone: UTC\nroles: {ops: {headcount: 1}}\n"
        f"{snippet}defaults: {{backend: {first.group(1)}, owner: ops}}\n"
        'stages:\n  s: {actions: {hello: {day: 0, time: "10:00", do: post, text: "**Hi**"}}}\n',
        encoding="utf-8",
    )
    result = validate_file(str(path), Options(plan_checks=False))
    assert [(d.code, d.message) for d in result.diagnostics] == []


def test_the_docs_list_every_error_class_the_code_implements() -> None:
    docs = DOC.read_text(encoding="utf-8")
    for error in sl._SLACK_HINTS:
        assert f"`{error}`" in docs, error
    for code in ("10015", "50027", "50035", "migrate_to_chat_id", "retry_after"):
        assert code in docs, code
