"""Backends: the registry, `--backend` routes, secrets, and each built-in against real I/O.

The webhook is exercised against real loopback servers (pytest-httpserver on 127.0.0.1, and a
raw socket server for a reset), never a mocked HTTP layer: a classification that holds only
against a mock holds nowhere.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import socket
import stat
import struct
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pytest_httpserver import HTTPServer
from sop.engine.lang.model import BackendSpec
from sop.engine.run import backends as registry
from sop.engine.run.backends import (
    BackendError,
    Route,
    build_backends,
    close_all,
    configs_for,
    load_factory,
    parse_route,
    resolve_secret,
)
from sop.engine.run.backends._common import OperatorText, check_fits, check_kind
from sop.engine.run.backends._text import Unit, size
from sop.engine.run.backends.console import ConsoleBackend
from sop.engine.run.backends.jsonl import JsonlBackend
from sop.engine.run.backends.webhook import RATE_LIMIT_CODES, WebhookBackend
from sop.engine.run.ports import (
    Backend,
    BackendConfig,
    Capabilities,
    Delivery,
    SendResult,
    SendStatus,
)
from werkzeug import Request, Response

from tests.backend_logs import urllib3_debug

SHANGHAI = ZoneInfo("Asia/Shanghai")
DUE = datetime(2027, 1, 4, 9, 0, tzinfo=SHANGHAI)
SENT = datetime(2027, 1, 4, 1, 0, 5, 250000, tzinfo=UTC)  # 09:00:05.250 in Shanghai
BUILT_INS = ("console", "jsonl", "null", "tasks", "webhook")


def delivery(**changes: object) -> Delivery:
    """A member message due at 09:00 Shanghai time; fields overridable."""
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


def config(type_name: str, target: str | None = None, **options: object) -> BackendConfig:
    return BackendConfig(f"b-{type_name}", type_name, target, options)


def spec(bid: str, type_name: str, **fields: object) -> BackendSpec:
    """A backend as the playbook's loader builds it."""
    values: dict[str, object] = dict.fromkeys(
        ("rate_per_minute", "url", "key", "token", "notify", "path")
    )
    values.update(fields)
    return BackendSpec(id=bid, type=type_name, **values)


def build(cfg: BackendConfig, env: dict[str, str] | None = None) -> Backend:
    return build_backends({cfg.name: cfg}, env or {})[cfg.name]


# -- the registry ----------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", BUILT_INS)
def test_every_built_in_resolves_through_the_entry_point_group(type_name: str) -> None:
    import importlib

    module = importlib.import_module(f"sop.engine.run.backends.{type_name}")
    assert load_factory(type_name) is module.create
    assert type_name in registry.available_types()


def test_an_unknown_type_names_the_backend_the_types_and_the_way_around_it() -> None:
    with pytest.raises(BackendError) as e:
        load_factory("line-bot", "group")  # a platform no installed plug-in serves
    assert isinstance(e.value, ValueError)
    available = ", ".join(registry.available_types())
    assert str(e.value) == (
        f'backend "group" has type "line-bot", which this installation cannot send to'
        f" (available: {available}); route it with --backend group=jsonl:PATH or"
        " --backend '*=jsonl:PATH'"
    )
    assert set(BUILT_INS) <= set(available.split(", "))


def test_building_a_playbook_backend_of_an_unknown_type_fails_with_that_message() -> None:
    configs = configs_for({"group": spec("group", "line-bot", key="${env:K}")})
    with pytest.raises(BackendError, match=r'backend "group" has type "line-bot"'):
        build_backends(configs, {"K": "k"})


def test_routing_every_backend_to_a_file_gets_around_an_unknown_type(tmp_path: Path) -> None:
    declared = {
        "group": spec("group", "line-bot", key="${env:K}", rate_per_minute=20),
        "staff": spec("staff", "tasks", notify="group"),
    }
    out = str(tmp_path / "all.jsonl")
    configs = configs_for(declared, [parse_route(f"*=jsonl:{out}")])
    built = build_backends(configs, {})
    try:
        assert {n: type(b).__name__ for n, b in built.items()} == {
            "group": "JsonlBackend",
            "staff": "JsonlBackend",
        }
    finally:
        registry.close_all(built)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_a_failed_build_closes_what_it_had_built(tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    configs = {
        "a": BackendConfig("a", "jsonl", str(out)),
        "b": BackendConfig("b", "nope"),
    }
    opened_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(BackendError, match='backend "b" has type "nope"'):
        build_backends(configs, {})
    assert len(os.listdir("/proc/self/fd")) == opened_before  # the jsonl file was closed


def test_a_tasks_backend_must_notify_a_backend_of_the_playbook() -> None:
    configs = {"staff": BackendConfig("staff", "tasks", options={"notify": "consol"})}
    with pytest.raises(BackendError, match='notifies "consol", which is not a backend'):
        build_backends(configs, {})


# -- third-party backends ------------------------------------------------------------------

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "backends.md").read_text(encoding="utf-8")


def docs_block(language: str, first_line: str) -> str:
    """The fenced block of docs/backends.md in `language` whose text starts with `first_line`."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```", DOCS, re.S | re.M)
    [block] = [b for b in blocks if b.startswith(first_line)]
    return str(block)


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Installs a distribution (a dist-info folder on sys.path) registering `sop.backends`."""
    modules: list[str] = []

    def run(entry_points: str, **sources: str) -> None:
        for module, source in sources.items():
            (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
            modules.append(module)
        info = tmp_path / "sop_plugin_test-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: sop-plugin-test\nVersion: 1.0\n"
        )
        (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
        monkeypatch.syspath_prepend(str(tmp_path))

    yield run
    for module in modules:
        sys.modules.pop(module, None)


def test_the_documented_third_party_backend_registers_and_sends_like_a_built_in(
    install: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    declared = tomllib.loads(docs_block("toml", '[project.entry-points."sop.backends"]'))
    group = declared["project"]["entry-points"]["sop.backends"]
    install(
        "[sop.backends]\n" + "".join(f"{k} = {v}\n" for k, v in group.items()),
        my_backends=docs_block("python", "# my_backends.py"),
    )
    assert "logger" in registry.available_types()
    configs = configs_for(PLAYBOOK, [parse_route("group=logger:community.deliveries")])
    built = build_backends({"group": configs["group"]}, {})
    with caplog.at_level("INFO", logger="community.deliveries"):
        result = built["group"].send(delivery(text="hi\nthere"))
        too_long = built["group"].send(delivery(text="x" * 4097))
    registry.close_all(built)
    assert result == SendResult.ok()
    assert caplog.messages == [f"{delivery().key} welcome 'hi\\nthere'"]
    assert too_long.status == SendStatus.PERMANENT
    with pytest.raises(BackendError, match="needs a logger name"):
        build_backends(configs_for(PLAYBOOK, [parse_route("group=logger")]), {})


def test_a_type_two_packages_register_is_refused_not_guessed(
    install: Callable[..., None],
) -> None:
    install("[sop.backends]\nconsole = sop_shadow:create\n", sop_shadow="create = None\n")
    with pytest.raises(BackendError, match="registered by more than one package"):
        load_factory("console")


def test_a_broken_plug_in_is_named_in_the_error(install: Callable[..., None]) -> None:
    install(
        "[sop.backends]\nbroken = sop_missing_module:create\njunk = sop_junk:create\n",
        sop_junk="def create(config, env):\n    return object()\n",
    )
    with pytest.raises(BackendError, match=r"could not be loaded \(sop_missing_module:create\)"):
        load_factory("broken")
    with pytest.raises(BackendError, match="built something that is not a Backend"):
        build_backends({"g": BackendConfig("g", "junk")}, {})


def test_the_docs_list_every_built_in_and_rate_limit_code() -> None:
    rows = re.findall(r"^\| `([a-z]+)` \| (?:—|a file|an http)", DOCS, re.M)
    assert sorted(rows) == sorted(BUILT_INS)
    for code in RATE_LIMIT_CODES:
        assert str(code) in DOCS.split("Rate-limit codes in a body:")[1].split("The wait")[0]


# -- routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("group=console", Route("group", "console")),
        ("*=null", Route("*", "null")),
        ("*=jsonl:out.jsonl", Route("*", "jsonl", "out.jsonl")),
        (
            "crm=webhook:http://127.0.0.1:8080/hook",
            Route("crm", "webhook", "http://127.0.0.1:8080/hook"),
        ),
        ("crm=webhook:${env:CRM_URL}", Route("crm", "webhook", "${env:CRM_URL}")),
        (
            "crm=webhook:http://h/x?a=1&b=2;idempotent=true;rate=20",
            Route("crm", "webhook", "http://h/x?a=1&b=2", {"idempotent": "true"}, 20),
        ),
        ("crm=webhook;idempotent=yes", Route("crm", "webhook", None, {"idempotent": "yes"})),
        (" group=console ", Route("group", "console")),
        ("g2_x-y=my.plugin-type", Route("g2_x-y", "my.plugin-type")),
    ],
)
def test_a_route_names_a_backend_a_type_and_optionally_a_target_and_options(
    text: str, route: Route
) -> None:
    assert parse_route(text) == route


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected NAME=TYPE"),
        ("group", "expected NAME=TYPE"),
        ("=console", "expected NAME=TYPE"),
        ("Group=console", '"Group" is not a backend name'),
        ("a b=console", "is not a backend name"),
        ("group=", "the type is missing"),
        ("group=:out.jsonl", "the type is missing"),
        ("group=JSONL:out", '"JSONL" is not a backend type'),
        ("group=jsonl:", "give a target after ':'"),
        ("crm=webhook:http://h/x;idempotent", "options are ;NAME=VALUE"),
        ("crm=webhook:http://h/x;=1", "options are ;NAME=VALUE"),
        ("crm=webhook:http://h/x;a=", "options are ;NAME=VALUE"),
        ("crm=webhook:http://h/x;a=1;a=2", "option a is given twice"),
        ("crm=null;rate=0", "rate must be messages a minute"),
        ("crm=null;rate=100001", "rate must be messages a minute"),
        ("crm=null;rate=fast", "rate must be messages a minute"),
    ],
)
def test_a_malformed_route_is_a_clear_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_route(text)


def test_a_malformed_route_never_quotes_its_target() -> None:
    with pytest.raises(BackendError) as e:
        parse_route("crm=webhook:https://h/hook?key=S3CRET-token;oops")
    assert "S3CRET" not in str(e.value)
    assert "S3CRET" not in repr(parse_route("crm=webhook:https://h/hook?key=S3CRET"))


PLAYBOOK = {
    "group": spec("group", "wecom-robot", key="${env:GROUP_KEY}", rate_per_minute=20),
    "crm": spec("crm", "webhook", url="${env:CRM_URL}", token="${env:CRM_TOKEN}"),
    "staff": spec("staff", "tasks", notify="console"),
    "console": spec("console", "console"),
}


def test_without_routes_each_backend_is_configured_as_declared_with_secrets_unresolved() -> None:
    configs = configs_for(PLAYBOOK)
    assert configs["group"] == BackendConfig(
        "group", "wecom-robot", None, {"key": "${env:GROUP_KEY}"}, 20
    )
    assert configs["crm"] == BackendConfig(
        "crm", "webhook", "${env:CRM_URL}", {"token": "${env:CRM_TOKEN}"}
    )
    assert configs["staff"] == BackendConfig("staff", "tasks", None, {"notify": "console"})


def test_a_named_route_beats_the_star_route() -> None:
    routes = [parse_route("*=null"), parse_route("console=console")]
    configs = configs_for(PLAYBOOK, routes)
    assert {n: c.type for n, c in configs.items()} == {
        "group": "null",
        "crm": "null",
        "staff": "null",
        "console": "console",
    }
    # order does not matter
    assert configs_for(PLAYBOOK, routes[::-1]) == configs


def test_a_route_to_another_type_replaces_the_declaration_rate_and_secrets_included() -> None:
    configs = configs_for(PLAYBOOK, [parse_route("group=jsonl:/tmp/g.jsonl")])
    assert configs["group"] == BackendConfig("group", "jsonl", "/tmp/g.jsonl", {}, None)


def test_a_route_to_the_declared_type_keeps_the_declaration_and_overrides_what_it_names() -> None:
    routes = [
        parse_route("*=jsonl:/tmp/all.jsonl"),
        parse_route("staff=tasks"),
        parse_route("crm=webhook;idempotent=true;rate=5"),
    ]
    configs = configs_for(PLAYBOOK, routes)
    assert configs["staff"] == BackendConfig("staff", "tasks", None, {"notify": "console"})
    assert configs["crm"] == BackendConfig(
        "crm",
        "webhook",
        "${env:CRM_URL}",
        {"token": "${env:CRM_TOKEN}", "idempotent": "true"},
        5,
    )


def test_a_route_for_a_backend_the_playbook_lacks_is_refused_with_a_suggestion() -> None:
    with pytest.raises(BackendError, match=r'has no backend "grop"; did you mean `group`\?'):
        configs_for(PLAYBOOK, [parse_route("grop=console")])
    with pytest.raises(BackendError, match=r"\(it declares: console, crm, group, staff\)"):
        configs_for(PLAYBOOK, [parse_route("zzz=console")])


@pytest.mark.parametrize("routes", [["*=null", "*=console"], ["crm=null", "crm=console"]])
def test_a_route_given_twice_is_refused(routes: list[str]) -> None:
    with pytest.raises(BackendError, match="given twice"):
        configs_for(PLAYBOOK, [parse_route(r) for r in routes])


def test_a_playbook_path_is_placed_under_the_root(tmp_path: Path) -> None:
    configs = configs_for({"log": spec("log", "jsonl", path="out/x.jsonl")}, root=str(tmp_path))
    assert configs["log"].target == str(tmp_path / "out" / "x.jsonl")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/cron.d/x", "must be relative"),
        ("~/.bashrc", "must be relative"),
        ("../outside.jsonl", "it goes outside"),
        ("out/../../outside.jsonl", "it goes outside"),
        ("link/x.jsonl", "a symlink on the path leads outside"),
    ],
)
def test_a_playbook_path_may_not_leave_the_root(tmp_path: Path, path: str, message: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    declared = {"log": spec("log", "jsonl", path=path)}
    with pytest.raises(BackendError, match=message):
        configs_for(declared, root=str(root))
    # the operator's route is trusted: it may name any file
    routed = configs_for(declared, [parse_route(f"log=jsonl:{tmp_path}/x.jsonl")], root=str(root))
    assert routed["log"].target == f"{tmp_path}/x.jsonl"


# -- secrets ---------------------------------------------------------------------------------


def test_a_secret_reference_is_read_from_the_environment() -> None:
    assert resolve_secret("${env:HOOK_KEY}", {"HOOK_KEY": "v4lue"}) == "v4lue"
    assert resolve_secret("http://127.0.0.1/hook", {}) == "http://127.0.0.1/hook"


@pytest.mark.parametrize(
    ("value", "env", "message"),
    [
        ("${env:HOOK_KEY}", {}, "key: environment variable HOOK_KEY is not set"),
        ("${env:HOOK_KEY}", {"HOOK_KEY": ""}, "key: environment variable HOOK_KEY is empty"),
        ("https://h/x?key=${env:HOOK_KEY}", {"HOOK_KEY": "v"}, "must be the whole value"),
    ],
)
def test_an_unusable_secret_reference_names_the_variable(
    value: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(BackendError, match=re.escape(message)):
        resolve_secret(value, env, what="key")


def test_a_webhook_whose_url_variable_is_unset_says_which_without_any_value() -> None:
    configs = configs_for(PLAYBOOK, [parse_route("*=null"), parse_route("crm=webhook")])
    env = {"CRM_TOKEN": "t0ken-SECRET"}
    with pytest.raises(BackendError) as e:
        build_backends(configs, env)
    assert str(e.value) == 'backend "crm": url: environment variable CRM_URL is not set'


def test_a_url_that_is_not_http_is_refused_without_quoting_it() -> None:
    cfg = config("webhook", "${env:U}")
    for url in ("ftp://h/SECRET", "SECRET", "http:///SECRET", "http://h:SECRET/x"):
        with pytest.raises(BackendError) as e:
            build(cfg, {"U": url})
        assert "SECRET" not in str(e.value)
        assert "must be an http:// or https:// URL" in str(e.value)


# -- options and capabilities ------------------------------------------------------------------


def test_a_misspelt_option_is_refused_with_a_suggestion() -> None:
    with pytest.raises(BackendError, match=r'no option "idempotnet"; did you mean `idempotent`'):
        build(config("webhook", "http://127.0.0.1:9/x", idempotnet="true"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_length": "0"}, "max_length must be a positive integer"),
        ({"max_length": True}, "max_length must be a positive integer"),
        ({"read_timeout": "-1"}, "read_timeout must be a number of seconds"),
        ({"read_timeout": "nan"}, "read_timeout must be a number of seconds"),
        ({"idempotent": "maybe"}, "idempotent must be true or false"),
        ({"secret_env": "1BAD"}, "secret_env must name a variable"),
        ({"secret_env": "SIGN"}, "secret_env: environment variable SIGN is not set"),
    ],
)
def test_a_bad_option_value_is_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(BackendError, match=re.escape(message)):
        build(config("webhook", "http://127.0.0.1:9/x", **options))


@pytest.mark.parametrize(
    ("type_name", "target", "idempotent"),
    [("console", None, False), ("null", None, True), ("tasks", None, True)],
)
def test_each_built_in_declares_its_capabilities(
    type_name: str, target: str | None, idempotent: bool
) -> None:
    cfg = BackendConfig("b", type_name, target, {"max_length": "12", "markdown": "wecom"}, 30)
    caps = build(cfg).capabilities
    assert caps == Capabilities(
        kinds=None, max_length=12, markdown="wecom", idempotent=idempotent, rate_per_minute=30
    )


@pytest.mark.parametrize("type_name", BUILT_INS)
def test_every_built_in_refuses_a_text_over_its_max_length_and_sends_nothing(
    type_name: str, tmp_path: Path, httpserver: HTTPServer
) -> None:
    target = {"jsonl": str(tmp_path / "o.jsonl"), "webhook": httpserver.url_for("/hook")}
    backend = build(BackendConfig("b", type_name, target.get(type_name), {"max_length": 10}))
    try:
        result = backend.send(delivery(text="x" * 11))
    finally:
        backend.close()
    assert result == SendResult.permanent(
        "the text is 11 characters; this backend takes at most 10: shorten the template"
    )
    assert httpserver.log == []
    if type_name == "jsonl":
        assert (tmp_path / "o.jsonl").read_text() == ""


@pytest.mark.parametrize(
    ("unit", "text", "fits"),
    [
        ("chars", "欢迎加入社群", True),  # 6 characters
        ("bytes", "欢迎加入社群", False),  # 18 bytes
        ("bytes", "welcome!", True),
        ("utf16", "😀😀😀😀", False),  # 4 characters, 8 UTF-16 units
        ("chars", "😀😀😀😀", True),
    ],
)
def test_check_fits_counts_in_the_declared_unit(unit: str, text: str, fits: bool) -> None:
    caps = Capabilities(max_length=6 if unit != "bytes" else 8, length_unit=unit)
    result = check_fits(delivery(text=text), caps)
    if fits:
        assert result is None
    else:
        assert result is not None and result.status is SendStatus.PERMANENT
        assert result.detail.startswith(f"the text is {size(text, Unit(unit))} ")
    assert check_kind(delivery(text=text * 100), caps) is None  # a backend that splits: kind only


CHAT_TYPES = (
    "slack-webhook",
    "discord-webhook",
    "telegram-bot",
    "feishu-bot",
    "dingtalk-bot",
    "wecom-robot",
    "wecom-app",
)


@pytest.mark.parametrize("type_name", CHAT_TYPES)
def test_every_chat_backend_splits_says_what_a_delivery_costs_and_defaults_to_plain_text(
    type_name: str,
) -> None:
    factory = load_factory(type_name)
    module = sys.modules[factory.__module__]
    caps = module.CAPABILITIES
    caps = caps[type_name] if isinstance(caps, dict) else caps
    assert caps.markdown is None  # plain text unless `markdown` names the dialect
    assert caps.kinds is not None and "remove" not in caps.kinds
    [config] = configs_for(declared(type_name, "http://127.0.0.1:9")).values()
    backend = build_backends({"b": config}, TOKEN_ENV)["b"]
    try:
        assert callable(getattr(backend, "cost", None))  # the runner takes as many rate tokens
        long = delivery(text="欢迎加入社群，请阅读群规。\n" * 2000)
        assert backend.cost(long) > 1
    finally:
        backend.close()


@pytest.mark.parametrize("type_name", ["console", "null", "tasks"])
def test_a_text_of_exactly_max_length_is_sent(type_name: str) -> None:
    backend = build(BackendConfig("b", type_name, None, {"max_length": "10"}))
    assert backend.send(delivery(text="x" * 10)).status == SendStatus.OK


@pytest.mark.parametrize("type_name", ["console", "null", "tasks"])
def test_a_backend_that_sends_nowhere_refuses_a_target(type_name: str) -> None:
    with pytest.raises(BackendError, match="takes no target"):
        build(config(type_name, "somewhere"))


# -- console, null, tasks --------------------------------------------------------------------


def test_console_prints_one_terminal_safe_line_per_delivery(
    capsys: pytest.CaptureFixture[str],
) -> None:
    backend = build(config("console"))
    hostile = "hi\x1b[2J\r\nFAKE LINE\u202e\x07"
    result = backend.send(delivery(text=hostile, member="m\x1b]8;;x\x07"))
    out = capsys.readouterr().out
    assert result == SendResult.ok()
    assert out.count("\n") == 1 and out.endswith("\n")
    assert not re.search("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202e]", out[:-1])
    assert out == (
        "2027-01-04T09:00+08:00 [b-console] welcome @m\\e]8;;x\\x07:"
        " hi\\e[2J\\r\\nFAKE LINE\\u202e\\x07\n"
    )


def test_console_shows_the_audience_when_there_is_no_member() -> None:
    stream = io.StringIO()
    backend = ConsoleBackend("group", Capabilities(), stream)
    backend.send(delivery(member=None, audience="all members", text="Live at 8"))
    assert stream.getvalue() == "2027-01-04T09:00+08:00 [group] welcome all members: Live at 8\n"


def test_null_accepts_everything_and_does_nothing() -> None:
    backend = build(config("null"))
    assert [backend.send(delivery(attempt=n)) for n in (1, 2)] == [SendResult.ok()] * 2


def test_tasks_opens_tasks_through_the_runner_and_names_its_notifier() -> None:
    built = build_backends(
        {
            "staff": BackendConfig("staff", "tasks", options={"notify": "console"}),
            "console": BackendConfig("console", "console"),
        },
        {},
    )
    staff = built["staff"]
    assert getattr(staff, "opens_tasks", False) is True
    assert getattr(staff, "notify", None) == "console"
    assert getattr(built["console"], "opens_tasks", False) is False
    assert staff.send(delivery(kind="task")) == SendResult.ok("task opened")


# -- jsonl -----------------------------------------------------------------------------------


def test_jsonl_appends_one_object_per_delivery_and_syncs_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"earlier": "run"}\n')  # a log of an earlier run is kept, not truncated
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    backend = JsonlBackend("log", str(out), Capabilities(), clock=lambda: SENT)
    first = backend.send(delivery())
    assert len(synced) == 1  # synced before `send` returned
    second = backend.send(delivery(attempt=2, member=None, stage=None, text="两行\n文字"))
    backend.close()
    backend.close()  # twice is harmless
    assert first == second == SendResult.ok()
    assert len(synced) == 2
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and json.loads(lines[0]) == {"earlier": "run"}
    assert json.loads(lines[1]) == {
        "key": "lifecycle/welcome/2027-01-04T01:00:00Z/m1",
        "run": "run-1",
        "playbook": "lifecycle",
        "action": "welcome",
        "stage": "onboarding",
        "kind": "message",
        "audience": "member",
        "member": "m1",
        "owner": "ops",
        "scheduled_at": "2027-01-04T09:00:00+08:00",
        "due_at": "2027-01-04T09:01:00+08:00",
        "sent_at": "2027-01-04T09:00:05.250+08:00",
        "attempt": 1,
        "backend": "log",
        "title": "Welcome",
        "text": "Welcome aboard, Ana!",
    }
    again = json.loads(lines[2])
    assert (again["attempt"], again["member"], again["stage"], again["text"]) == (
        2,
        None,
        None,
        "两行\n文字",
    )
    with pytest.raises(RuntimeError, match="closed"):
        backend.send(delivery())


def test_jsonl_stamps_sent_at_with_the_wall_clock(tmp_path: Path) -> None:
    out = tmp_path / "new.jsonl"
    backend = build(BackendConfig("log", "jsonl", str(out)))
    before = datetime.now(UTC)
    backend.send(delivery())
    backend.close()
    sent = datetime.fromisoformat(json.loads(out.read_text())["sent_at"])
    assert sent.utcoffset() == timedelta(hours=8)
    assert before - timedelta(seconds=1) <= sent <= datetime.now(UTC)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # members' ids and messages


def test_jsonl_refuses_a_symlink_and_leaves_its_target_alone(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(victim)
    with pytest.raises(BackendError, match="is a symlink; sop does not write through symlinks"):
        build(BackendConfig("log", "jsonl", str(link)))
    assert victim.read_text() == "precious\n"


def test_jsonl_refuses_a_fifo_a_folder_and_a_missing_folder(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    cases = {
        "fifo": "not a regular file",
        ".": "Is a directory",
        "missing/out.jsonl": "does not exist",
    }
    for name, message in cases.items():
        with pytest.raises(BackendError, match=message):
            build(BackendConfig("log", "jsonl", str(tmp_path / name)))


def test_jsonl_needs_a_file() -> None:
    with pytest.raises(BackendError, match=re.escape("--backend log=jsonl:PATH")):
        build(BackendConfig("log", "jsonl"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_jsonl_on_a_full_disk_is_a_retry_not_a_crash() -> None:
    backend = build(BackendConfig("log", "jsonl", "/dev/full"))
    result = backend.send(delivery())
    backend.close()
    assert result.status == SendStatus.RETRY
    assert "No space left on device" in result.detail


# -- webhook: the request --------------------------------------------------------------------


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    return ("127.0.0.1", 0)


class Capture:
    """A handler that keeps each request and answers with a fixed response."""

    def __init__(self, response: Response | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.response = response or Response('{"errcode": 0, "errmsg": "ok"}', 200)

    def __call__(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), request.get_data()))
        return self.response


def webhook(url: str, env: dict[str, str] | None = None, /, **options: object) -> WebhookBackend:
    backend = build(BackendConfig("crm", "webhook", url, options), env)
    assert isinstance(backend, WebhookBackend)
    return backend


def test_the_webhook_posts_the_record_signed_with_an_idempotency_key(
    httpserver: HTTPServer,
) -> None:
    capture = Capture(Response('{"errcode": 0, "msgid": "abc123"}', 200))
    httpserver.expect_request("/hook", method="POST").respond_with_handler(capture)
    backend = webhook(
        "${env:CRM_URL}",
        {"CRM_URL": httpserver.url_for("/hook"), "CRM_SIGN": "sign-S3CRET"},
        secret_env="CRM_SIGN",
    )
    result = backend.send(delivery())
    backend.close()
    assert result == SendResult.ok("HTTP 200", remote_id="abc123")
    [(headers, body)] = capture.requests
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "lifecycle/welcome/2027-01-04T01:00:00Z/m1"
    assert headers["User-Agent"].startswith("sop/")
    expected = hmac.new(b"sign-S3CRET", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Sop-Signature"], f"sha256={expected}")
    assert "Authorization" not in headers
    sent = json.loads(body)
    assert sent["key"] == "lifecycle/welcome/2027-01-04T01:00:00Z/m1"
    assert (sent["backend"], sent["text"], sent["attempt"]) == ("crm", "Welcome aboard, Ana!", 1)
    assert datetime.fromisoformat(sent["sent_at"]).utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize(
    ("options", "env", "secret"),
    [
        ({}, {"SOP_WEBHOOK_SECRET": "default-secret"}, b"default-secret"),
        (
            {"key": "${env:PB_KEY}"},
            {"PB_KEY": "pb-secret", "SOP_WEBHOOK_SECRET": "no"},
            b"pb-secret",
        ),
        ({"secret_env": "MINE", "key": "${env:PB_KEY}"}, {"MINE": "m", "PB_KEY": "no"}, b"m"),
        ({}, {}, None),
    ],
)
def test_the_signing_secret_comes_from_secret_env_then_key_then_the_default_variable(
    httpserver: HTTPServer, options: dict[str, object], env: dict[str, str], secret: bytes | None
) -> None:
    capture = Capture()
    httpserver.expect_request("/hook").respond_with_handler(capture)
    webhook(httpserver.url_for("/hook"), env, **options).send(delivery())
    [(headers, body)] = capture.requests
    if secret is None:
        assert "X-Sop-Signature" not in headers
    else:
        digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
        assert headers["X-Sop-Signature"] == f"sha256={digest}"


def test_the_webhook_sends_a_token_as_a_bearer(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request("/hook").respond_with_handler(capture)
    backend = webhook(httpserver.url_for("/hook"), {"TOK": "t0k"}, token="${env:TOK}")
    backend.send(delivery())
    assert capture.requests[0][0]["Authorization"] == "Bearer t0k"


def test_a_key_that_is_not_printable_ascii_is_percent_encoded_in_the_header(
    httpserver: HTTPServer,
) -> None:
    capture = Capture()
    httpserver.expect_request("/hook").respond_with_handler(capture)
    key = "pb/welcome/2027-01-04T01:00:00Z/安娜\r\nX-Evil: 1"
    result = webhook(httpserver.url_for("/hook")).send(delivery(key=key))
    assert result.status == SendStatus.OK
    [(headers, body)] = capture.requests
    assert headers["Idempotency-Key"] == (
        "pb/welcome/2027-01-04T01:00:00Z/%E5%AE%89%E5%A8%9C%0D%0AX-Evil:%201"
    )
    assert "X-Evil" not in headers
    assert json.loads(body)["key"] == key


def test_only_an_idempotent_webhook_reuses_connections(httpserver: HTTPServer) -> None:
    capture = Capture()
    httpserver.expect_request("/hook").respond_with_handler(capture)
    plain = webhook(httpserver.url_for("/hook"))
    dedup = webhook(httpserver.url_for("/hook"), idempotent="true")
    assert (plain.capabilities.idempotent, dedup.capabilities.idempotent) == (False, True)
    plain.send(delivery())
    dedup.send(delivery())
    assert capture.requests[0][0].get("Connection") == "close"
    assert capture.requests[1][0].get("Connection") != "close"


# -- webhook: classification -----------------------------------------------------------------


def answer(httpserver: HTTPServer, response: Response, **options: object) -> SendResult:
    httpserver.expect_oneshot_request("/hook").respond_with_response(response)
    backend = webhook(httpserver.url_for("/hook"), **options)
    try:
        return backend.send(delivery())
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, "", SendResult.ok("HTTP 200")),
        (204, "", SendResult.ok("HTTP 204")),
        (200, '{"ok": true, "id": 42}', SendResult.ok("HTTP 200", remote_id="42")),
        (500, "boom", SendResult.retry("HTTP 500: boom")),
        (502, "", SendResult.retry("HTTP 502")),
        (408, "", SendResult.retry("HTTP 408")),
        (425, "", SendResult.retry("HTTP 425")),
        (504, "", SendResult.uncertain("HTTP 504: the gateway timed out")),
        (400, '{"error": "bad payload"}', SendResult.permanent("HTTP 400: bad payload")),
        (401, "", SendResult.permanent("HTTP 401")),
        (404, "no such hook", SendResult.permanent("HTTP 404: no such hook")),
        (
            409,
            "duplicate",
            SendResult.ok("HTTP 409: the receiver already has this key: duplicate"),
        ),
        (
            200,
            '{"errcode": 45009, "errmsg": "api freq out of limit"}',
            SendResult.retry("HTTP 200 with errcode 45009: api freq out of limit"),
        ),
        (
            200,
            '{"errcode": 93000, "errmsg": "invalid webhook url"}',
            SendResult.permanent("HTTP 200 with errcode 93000: invalid webhook url"),
        ),
        (200, '{"ok": false}', SendResult.permanent('HTTP 200 with "ok": false')),
        (
            200,
            '{"ok": false, "error": "channel_not_found"}',
            SendResult.permanent('HTTP 200 with "ok": false: channel_not_found'),
        ),
        (
            200,
            '{"ok": false, "retryable": true, "retry_after": 3}',
            SendResult.retry('HTTP 200 with "ok": false', 3.0),
        ),
        (
            200,
            '{"code": "130101", "msg": "send too fast"}',  # a code written as text is a code
            SendResult.retry("HTTP 200 with code 130101: send too fast"),
        ),
        (
            400,
            '{"code": 11232, "msg": "frequency limited"}',
            SendResult.retry("HTTP 400 with code 11232: frequency limited"),
        ),
        (
            200,
            '{"code": 0, "msg": "success"}',
            SendResult.ok("HTTP 200"),
        ),
        (200, '{"code": 200, "msg": "success"}', SendResult.ok("HTTP 200")),
        (
            200,
            '{"errcode": 200, "errmsg": "odd"}',
            SendResult.permanent("HTTP 200 with errcode 200: odd"),
        ),
        (
            302,
            "",
            SendResult.permanent(
                "HTTP 302: the webhook redirects; configure the URL it redirects to"
            ),
        ),
    ],
)
def test_the_answer_is_classified(
    httpserver: HTTPServer, status: int, body: str, expected: SendResult
) -> None:
    headers = {"Location": "http://127.0.0.1:9/elsewhere"} if status == 302 else {}
    result = answer(httpserver, Response(body, status, headers=headers))
    assert result == expected


def test_429_honours_retry_after_in_seconds(httpserver: HTTPServer) -> None:
    result = answer(httpserver, Response("slow down", 429, headers={"Retry-After": "7"}))
    assert result == SendResult.retry("HTTP 429: slow down", 7.0)


def test_503_honours_retry_after_as_an_http_date(httpserver: HTTPServer) -> None:
    # the server adds its own Date; the wait is measured against it
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    result = answer(httpserver, Response("", 503, headers={"Retry-After": later}))
    assert result.status == SendStatus.RETRY
    assert result.retry_after is not None and 118 <= result.retry_after <= 121


def test_a_retry_after_in_the_past_means_now_and_one_absurdly_far_is_capped(
    httpserver: HTTPServer,
) -> None:
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert answer(httpserver, Response("", 503, headers={"Retry-After": past})).retry_after == 0
    far = Response("", 429, headers={"Retry-After": "99999999"})
    assert answer(httpserver, far).retry_after == 86_400
    junk = Response("", 429, headers={"Retry-After": "soon"})
    assert answer(httpserver, junk) == SendResult.retry("HTTP 429")


def test_a_json_retry_after_counts_when_there_is_no_header(httpserver: HTTPServer) -> None:
    telegram = '{"ok": false, "error_code": 429, "parameters": {"retry_after": 12}}'
    result = answer(httpserver, Response(telegram, 429))
    assert result == SendResult.retry("HTTP 429", 12.0)
    in_200 = answer(httpserver, Response(telegram, 200))
    assert in_200 == SendResult.retry("HTTP 200 with error_code 429", 12.0)


def test_a_huge_answer_is_read_bounded_and_summarised(httpserver: HTTPServer) -> None:
    result = answer(httpserver, Response("x" * 5_000_000, 500))
    assert result.status == SendStatus.RETRY
    assert len(result.detail) < 220 and result.detail.endswith("…")


def test_a_read_timeout_after_sending_is_uncertain(httpserver: HTTPServer) -> None:
    release = threading.Event()
    arrived: list[bytes] = []

    def slow(request: Request) -> Response:
        arrived.append(request.get_data())
        release.wait(5)
        return Response("late", 200)

    httpserver.expect_request("/hook").respond_with_handler(slow)
    backend = webhook(httpserver.url_for("/hook"), read_timeout="0.3")
    started = time.monotonic()
    try:
        result = backend.send(delivery())
    finally:
        release.set()
        backend.close()
    assert time.monotonic() - started < 3
    assert result.status == SendStatus.UNCERTAIN
    assert result.detail == (
        f"no answer from {httpserver.url_for('').rstrip('/')} within 0.3 s after the request was"
        " sent"
    )
    assert len(arrived) == 1  # it did arrive: resending could deliver it twice


@contextmanager
def resetting_server() -> Iterator[tuple[str, list[bytes]]]:
    """A server that reads a whole request, then resets the connection instead of answering."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"content-length: *(\d+)", head, re.I)
        while m and len(body) < int(m.group(1)):
            body += conn.recv(65536)
        received.append(body)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: an RST, not a FIN

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook", received
    finally:
        thread.join(5)
        listener.close()


def test_a_connection_reset_after_sending_is_uncertain() -> None:
    with resetting_server() as (url, received):
        result = webhook(url).send(delivery())
    assert result.status == SendStatus.UNCERTAIN
    assert result.detail.endswith("broke after the request was sent")
    assert json.loads(received[0])["key"] == delivery().key  # the whole request had arrived


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_is_a_retry() -> None:
    port = free_port()
    result = webhook(f"http://127.0.0.1:{port}/hook").send(delivery())
    assert result == SendResult.retry(
        f"could not connect to http://127.0.0.1:{port}: connection refused or unreachable"
    )


def test_a_host_that_does_not_resolve_is_a_retry() -> None:
    result = webhook("http://sop-test.invalid/hook", connect_timeout="2").send(delivery())
    assert result == SendResult.retry(
        "could not connect to http://sop-test.invalid: the host name does not resolve"
    )


# -- webhook: no secret in any output ----------------------------------------------------------

SECRETS = {
    "HOOK_URL_PATH": "pathS3CRET",
    "HOOK_QUERY": "queryS3CRET",
    "SIGN": "signS3CRET",
    "TOK": "tokenS3CRET",
}


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS.values() if s in text]


def test_no_secret_reaches_a_repr_a_detail_or_an_error(httpserver: HTTPServer) -> None:
    path = f"/hook/{SECRETS['HOOK_URL_PATH']}"
    url = httpserver.url_for(path) + f"?key={SECRETS['HOOK_QUERY']}"
    env = {"CRM_URL": url, "SIGN": SECRETS["SIGN"], "TOK": SECRETS["TOK"]}
    echo = f"cannot route {url} signed {SECRETS['SIGN']} by Bearer {SECRETS['TOK']}"
    httpserver.expect_request(path).respond_with_response(Response(echo, 500))
    cfg = BackendConfig(
        "crm", "webhook", "${env:CRM_URL}", {"secret_env": "SIGN", "token": "${env:TOK}"}
    )
    backend = build(cfg, env)
    results = [backend.send(delivery())]
    backend.close()
    assert results[0].status == SendStatus.RETRY and "***" in results[0].detail
    # the same URL with nothing listening, and behind a reset
    port = free_port()
    env_refused = {**env, "CRM_URL": url.replace(str(httpserver.port), str(port))}
    results.append(build(cfg, env_refused).send(delivery()))
    with resetting_server() as (reset_url, _):
        env_reset = {**env, "CRM_URL": reset_url + f"/{SECRETS['HOOK_URL_PATH']}"}
        results.append(build(cfg, env_reset).send(delivery()))
    assert [r.status for r in results] == [
        SendStatus.RETRY,
        SendStatus.RETRY,
        SendStatus.UNCERTAIN,
    ]
    for r in results:
        assert leaks(repr(r)) == [], r
    assert leaks(repr(backend)) == [] and leaks(repr(cfg)) == []
    assert leaks(repr(configs_for(PLAYBOOK))) == []
    # an error about the signing secret names its variable, not its value
    with pytest.raises(BackendError) as e:
        build(BackendConfig("crm", "webhook", url, {"key": "${env:SIGN}x"}), env)
    assert leaks(str(e.value)) == []


def test_the_webhook_url_is_scrubbed_from_urllib3_s_log(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    path = f"/hook/{SECRETS['HOOK_URL_PATH']}"
    url = httpserver.url_for(path) + f"?key={SECRETS['HOOK_QUERY']}"
    httpserver.expect_request(path).respond_with_data("", 204)
    cfg = BackendConfig("crm", "webhook", "${env:CRM_URL}", {"token": "${env:TOK}"})
    with urllib3_debug(caplog):
        backend = build(cfg, {"CRM_URL": url, "TOK": SECRETS["TOK"]})
        assert backend.send(delivery()).status is SendStatus.OK
        backend.close()
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any("POST ***" in m for m in ours), ours  # urllib3 logged the request line, scrubbed
    assert [m for m in ours if leaks(m)] == []


def test_the_documented_receiver_check_accepts_a_real_signature_and_nothing_else(
    httpserver: HTTPServer,
) -> None:
    namespace: dict[str, Any] = {}
    exec(docs_block("python", "import hashlib, hmac"), namespace)
    verify = namespace["verify"]
    capture = Capture()
    httpserver.expect_request("/hook").respond_with_handler(capture)
    webhook(httpserver.url_for("/hook"), {"SOP_WEBHOOK_SECRET": "s"}).send(delivery())
    [(headers, body)] = capture.requests
    assert verify(body, headers["X-Sop-Signature"], b"s")
    assert not verify(body + b" ", headers["X-Sop-Signature"], b"s")
    assert not verify(body, headers["X-Sop-Signature"], b"other")


# -- base_url: where requests go, every one carrying a token or a signature ---------------------

TOKEN_ENV = {
    "URL_SLACK": "https://hooks.slack.com/services/T0/B0/slackS3CRET",
    "URL_DISCORD": "https://discord.com/api/webhooks/1/discordS3CRET",
    "TOK": "123456789:AAH-TelegramS3cretTokenValue_0123",
    "KEY": "keyS3CRET",
    "SID": "AKIDsmsS3CRET",
    "PROXY": "https://proxy.example",
}
# a backend of each type that takes `base_url`, as the playbook declares it (url, then fields)
BASE_URL_TYPES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "slack-webhook": ("${env:URL_SLACK}", {}),
    "discord-webhook": ("${env:URL_DISCORD}", {}),
    "telegram-bot": (None, {"token": "${env:TOK}", "options": {"chat_id": "-1"}}),
    "feishu-bot": (None, {"token": "${env:KEY}"}),
    "dingtalk-bot": (None, {"token": "${env:KEY}"}),
    "wecom-robot": (None, {"key": "${env:KEY}"}),
    "wecom-app": (
        None,
        {"options": {"corp_id": "ww1", "corp_secret": "${env:KEY}", "agent_id": "1"}},
    ),
    "sms": (
        None,
        {
            "options": {
                "secret_id": "${env:SID}",
                "secret_key": "${env:KEY}",
                "sdk_app_id": "1400000000",
                "template_id": "1",
            }
        },
    ),
}


def declared(type_name: str, base_url: str | None) -> dict[str, BackendSpec]:
    url, fields = BASE_URL_TYPES[type_name]
    options = dict(fields.get("options", {}))
    if base_url is not None:
        options["base_url"] = base_url
    rest = {k: v for k, v in fields.items() if k != "options"}
    return {"b": spec("b", type_name, url=url, options=options, **rest)}


@pytest.mark.parametrize("type_name", BASE_URL_TYPES)
@pytest.mark.parametrize(
    "base_url", ["https://proxy.example", "http://10.0.0.8:8080", "https://127.0.0.1.example"]
)
def test_a_playbook_base_url_elsewhere_is_refused_since_the_token_would_go_there(
    type_name: str, base_url: str
) -> None:
    with pytest.raises(BackendError, match="base_url receives the token") as e:
        build_backends(configs_for(declared(type_name, base_url)), TOKEN_ENV)
    assert not [s for s in TOKEN_ENV.values() if s in str(e.value)]


@pytest.mark.parametrize("type_name", BASE_URL_TYPES)
@pytest.mark.parametrize("base_url", ["${env:PROXY}", "http://127.0.0.1:9", "http://[::1]:9"])
def test_a_playbook_base_url_from_the_environment_or_on_loopback_is_taken(
    type_name: str, base_url: str
) -> None:
    backends = build_backends(configs_for(declared(type_name, base_url)), TOKEN_ENV)
    try:
        where = "proxy.example" if base_url.startswith("$") else base_url.split("//")[1]
        assert where in repr(backends["b"])
    finally:
        close_all(backends)


@pytest.mark.parametrize("type_name", BASE_URL_TYPES)
def test_the_operator_s_base_url_on_the_command_line_is_taken_as_given(type_name: str) -> None:
    route = parse_route(f"b={type_name};base_url=https://proxy.example")
    backends = build_backends(configs_for(declared(type_name, None), [route]), TOKEN_ENV)
    try:
        assert "https://proxy.example" in repr(backends["b"])
    finally:
        close_all(backends)


def test_a_base_url_is_trusted_only_when_a_route_gave_it() -> None:
    route = parse_route("b=feishu-bot;overflow=truncate")
    [config] = configs_for(declared("feishu-bot", "https://proxy.example"), [route]).values()
    assert isinstance(config.options["overflow"], OperatorText)
    assert not isinstance(config.options["base_url"], OperatorText)  # still the playbook's


# -- one home for each shared rule ---------------------------------------------------------------

BACKENDS_DIR = Path(registry.__file__).parent
SPLITTING = ("slack", "discord", "telegram", "_robot", "feishu", "dingtalk", "wecom")


@pytest.mark.parametrize("path", sorted(BACKENDS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_http_and_urllib3_s_log_are_handled_in_one_module(path: Path) -> None:
    """Requests, redirects and the urllib3 log filter live in `_http.py`; every other backend
    module goes through its `Transport`, so one change reaches all of them."""
    if path.name == "_http.py":
        return
    text = path.read_text(encoding="utf-8")
    for own in (
        "import requests",
        "from requests",
        "urllib3 import",
        "logging.Filter",
        "allow_redirects",
    ):
        assert own not in text, f"{path.name}: {own}"


@pytest.mark.parametrize("module", SPLITTING)
def test_a_backend_that_splits_checks_the_kind_never_the_length(module: str) -> None:
    text = (BACKENDS_DIR / f"{module}.py").read_text(encoding="utf-8")
    assert "check_fits(" not in text  # its max_length is one message's limit: it splits to it
