"""`sop serve`: signed member events over HTTP, deduplicated by id, stored before the answer.

Every test talks to a real uvicorn server on 127.0.0.1 (started in a thread, stopped after) in
front of a SQLite state store, as `sop serve` runs. Hostile bodies get a clear 4xx JSON answer,
nothing of them is stored, and the server stays healthy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sop.engine.program import Program
from sop.engine.run.clock import VirtualClock
from sop.engine.run.runner import RunError, Runner
from sop.engine.run.serve import (
    MAX_BODY,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Busy,
    GroupCommit,
    ServeError,
    bind,
    check_bind,
    create_app,
    is_loopback,
    make_server,
    signature,
)
from sop.engine.run.store import StoreError, open_store
from sop.engine.run.store.base import EventRecord, StateStore
from sop.engine.validate import load_playbook

from tests.conftest import REFERENCE

SECRET = b"serve-test-secret-5b1f0c"
START = datetime(2026, 12, 1, 1, tzinfo=UTC)  # the reference playbook's first day
AT = "2026-12-02T10:00:00+08:00"  # inside the run: member rules fire


@pytest.fixture(scope="module")
def program() -> Program:
    pb = load_playbook(str(REFERENCE)).playbook
    assert pb is not None
    return Program(pb)


class Counting:
    """ASGI middleware counting the body bytes the app pulled from the server."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@contextmanager
def running(app: Any) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port, in a thread; its base URL."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


@dataclass
class Endpoint:
    url: str
    store: StateStore
    run_id: str
    client: httpx.Client
    counting: Counting

    def post(
        self,
        body: object,
        *,
        secret: bytes | None = SECRET,
        content_type: str | None = "application/json",
        headers: dict[str, str | bytes] | None = None,
    ) -> httpx.Response:
        """POST `body` (bytes as they are, anything else as JSON), signed with `secret`."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        h: dict[str, str | bytes] = {} if content_type is None else {"Content-Type": content_type}
        if secret is not None:
            h[SIGNATURE_HEADER] = signature(secret, raw)
        h.update(headers or {})
        as_bytes = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in h.items()}
        return self.client.post("/events", content=raw, headers=as_bytes)

    def stored(self) -> tuple[int, list[str], int]:
        """(events, member ids, occurrences) in the store."""
        events = len(self.store.events(self.run_id))
        members = sorted(m.id for m in self.store.iter_members(self.run_id))
        return events, members, sum(self.store.count_occurrences(self.run_id).values())

    def healthy(self) -> bool:
        r = self.client.get("/healthz")
        return r.status_code == 200 and r.json() == {"ok": True, "run": self.run_id}


def new_store(program: Program, tmp_path: Path) -> tuple[StateStore, str]:
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    run = Runner(program, store, {}, VirtualClock(START)).ensure_run()
    return store, run.id


@contextmanager
def endpoint_for(program: Program, tmp_path: Path, **options: Any) -> Iterator[Endpoint]:
    store, run_id = new_store(program, tmp_path)
    counting = Counting(
        create_app(program, store, run_id, options.pop("secret", SECRET), **options)
    )
    try:
        with running(counting) as url, httpx.Client(base_url=url, timeout=20) as client:
            yield Endpoint(url, store, run_id, client, counting)
    finally:
        store.close()


@pytest.fixture
def endpoint(program: Program, tmp_path: Path) -> Iterator[Endpoint]:
    with endpoint_for(program, tmp_path) as e:
        yield e


def joined(event_id: str, member: str, at: str = AT) -> dict[str, Any]:
    return {"id": event_id, "type": "joined", "member": member, "at": at}


# -- accepted ------------------------------------------------------------------------------


def test_a_signed_joined_event_is_stored_with_its_welcome(endpoint: Endpoint) -> None:
    r = endpoint.post(joined("e1", "alice"))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "duplicates": 0, "results": [{"id": "e1", "new": True}]}
    member = endpoint.store.get_members(endpoint.run_id, ["alice"])["alice"]
    assert member.joined_at == datetime.fromisoformat(AT)
    welcomes = [
        o for o in endpoint.store.occurrences(endpoint.run_id)
        if o.action == "welcome" and o.member == "alice"
    ]  # fmt: skip
    assert len(welcomes) == 1


def test_the_same_event_again_is_a_duplicate_and_nothing_is_stored_twice(
    endpoint: Endpoint,
) -> None:
    assert endpoint.post(joined("e1", "alice")).json()["accepted"] == 1
    before = endpoint.stored()
    r = endpoint.post(joined("e1", "alice"))
    assert r.status_code == 200
    assert r.json() == {"accepted": 0, "duplicates": 1, "results": [{"id": "e1", "new": False}]}
    assert endpoint.stored() == before == (1, ["alice"], before[2])


def test_a_batch_comes_as_an_events_object_or_an_array_and_is_answered_in_order(
    endpoint: Endpoint,
) -> None:
    r = endpoint.post({"events": [joined("a", "ann"), joined("b", "bob"), joined("a", "ann")]})
    assert r.json() == {
        "accepted": 2,
        "duplicates": 1,
        "results": [{"id": "a", "new": True}, {"id": "b", "new": True}, {"id": "a", "new": False}],
    }
    r = endpoint.post([joined("b", "bob"), joined("c", "cat")])
    assert [x["new"] for x in r.json()["results"]] == [False, True]
    assert endpoint.stored()[:2] == (3, ["ann", "bob", "cat"])


def test_an_event_of_an_unknown_member_creates_the_member(endpoint: Endpoint) -> None:
    r = endpoint.post({"id": "m1", "type": "message", "member": "stranger", "at": AT})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    stranger = endpoint.store.get_members(endpoint.run_id, ["stranger"])["stranger"]
    assert stranger.joined_at is None and stranger.spoke_days


def test_a_timestamped_signature_covers_the_timestamp_and_the_body(endpoint: Endpoint) -> None:
    body = json.dumps(joined("t1", "tim")).encode()
    now = str(int(time.time()))
    ok = {TIMESTAMP_HEADER: now, SIGNATURE_HEADER: signature(SECRET, body, now)}
    assert endpoint.post(body, secret=None, headers=ok).status_code == 200
    body = json.dumps(joined("t2", "tim")).encode()
    body_only = {TIMESTAMP_HEADER: now, SIGNATURE_HEADER: signature(SECRET, body)}
    assert endpoint.post(body, secret=None, headers=body_only).status_code == 401
    old = str(int(time.time()) - 3600)
    stale = {TIMESTAMP_HEADER: old, SIGNATURE_HEADER: signature(SECRET, body, old)}
    r = endpoint.post(body, secret=None, headers=stale)
    assert r.status_code == 401 and "clock" in r.json()["error"]
    assert endpoint.stored()[0] == 1


def test_unsigned_events_are_accepted_only_when_allowed_and_no_secret_is_set(
    program: Program, tmp_path: Path
) -> None:
    with endpoint_for(program, tmp_path / "a", secret=None, allow_unsigned=True) as e:
        assert e.post(joined("u1", "una"), secret=None).status_code == 200
    with endpoint_for(program, tmp_path / "b", secret=None) as e:
        assert e.post(joined("u1", "una"), secret=None).status_code == 401
        assert e.post(joined("u1", "una"), secret=b"anything").status_code == 401
        assert e.stored()[0] == 0
    with endpoint_for(program, tmp_path / "c", allow_unsigned=True) as e:  # a secret wins
        assert e.post(joined("u1", "una"), secret=None).status_code == 401


# -- refused -------------------------------------------------------------------------------

SIGNED_ELSEWHERE = signature(SECRET, b'{"id": "x", "type": "joined", "member": "x"}')
HOSTILE: list[tuple[str, bytes, dict[str, Any], int, str | None, int | None]] = [
    # (name, body, post options, status, field, index)
    ("malformed JSON", b'{"id": "e1", "type": ', {}, 400, None, None),
    ("a JSON string", b'"joined"', {}, 400, None, None),
    ("a JSON number", b"42", {}, 400, None, None),
    ("null", b"null", {}, 400, None, None),
    ("an empty body", b"", {}, 400, None, None),
    ("not UTF-8", b'{"id": "\xff\xfe"}', {}, 400, None, None),
    ("deep nesting", b"[" * 200_000 + b"]" * 200_000, {}, 400, None, None),
    ("a huge integer", b'{"id": ' + b"9" * 5000 + b"}", {}, 400, None, None),
    ("a missing id", b'{"type": "joined", "member": "m"}', {}, 400, "id", 0),
    ("an unknown type", b'{"id": "e", "type": "hacked", "member": "m"}', {}, 400, "type", 0),
    ("an unknown field", b'{"id": "e", "type": "joined", "member": "m", "x": 1}', {}, 400, "x", 0),
    ("a bad at", b'{"id": "e", "type": "joined", "member": "m", "at": "soon"}', {}, 400, "at", 0),
    ("at in year 9999", b'{"id": "e", "type": "joined", "member": "m", "at": "9999-12-31"}',
     {}, 400, "at", 0),
    ("at in year 1", b'{"id": "e", "type": "joined", "member": "m", "at": "0001-01-01"}',
     {}, 400, "at", 0),
    ("at at the first instant, 14 hours east",
     b'{"id": "e", "type": "joined", "member": "m", "at": "0001-01-01T00:00:00+14:00"}',
     {}, 400, "at", 0),
    ("an id with a control character", b'{"id": "e\\u0000", "type": "joined", "member": "m"}',
     {}, 400, "id", 0),
    ("a member with a newline", b'{"id": "e", "type": "joined", "member": "m\\nx"}',
     {}, 400, "member", 0),
    ("an unpaired surrogate", b'{"id": "e", "type": "joined", "member": "m\\ud800"}',
     {}, 400, "member", 0),
    ("an unknown field that is a surrogate", b'{"id": "e", "\\udfff": 1}', {}, 400, "\udfff", 0),
    ("a field named like a log line", b'{"id": "e", "x\\nERROR forged": 1}',
     {}, 400, "x\nERROR forged", 0),
    ("NaN in data", b'{"id": "e", "type": "joined", "member": "m", "data": {"n": NaN}}',
     {}, 400, None, None),
    ("Infinity in data", b'{"id": "e", "type": "joined", "member": "m", "data": {"n": -Infinity}}',
     {}, 400, None, None),
    ("an overflowing float", b'{"id": "e", "type": "joined", "member": "m", "data": {"n": 1e999}}',
     {}, 400, "data.n", 0),
    ("nested data", b'{"id": "e", "type": "joined", "member": "m", "data": {"n": [1]}}',
     {}, 400, "data.n", 0),
    ("one bad event in a batch",
     b'[{"id": "a", "type": "joined", "member": "m"}, {"id": "b", "type": "?", "member": "m"}]',
     {}, 400, "type", 1),
    ("events that are not an array", b'{"events": {"id": "a"}}', {}, 400, "events", None),
    ("a field next to events", b'{"events": [], "extra": 1}', {}, 400, "extra", None),
    ("1,001 events",
     json.dumps([joined(f"e{i}", "m") for i in range(1001)]).encode(), {}, 413, "events", None),
    ("a text content type", b"{}", {"content_type": "text/plain"}, 415, None, None),
    ("no content type", b"{}", {"content_type": None}, 415, None, None),
    ("a latin-1 charset", b"{}", {"content_type": "application/json; charset=latin-1"},
     415, None, None),
    ("a missing signature", b'{"id": "x", "type": "joined", "member": "x"}', {"secret": None},
     401, None, None),
    ("a wrong secret", b'{"id": "x", "type": "joined", "member": "x"}', {"secret": b"guess"},
     401, None, None),
    ("another body's signature", b'{"id": "y", "type": "joined", "member": "y"}',
     {"secret": None, "headers": {SIGNATURE_HEADER: SIGNED_ELSEWHERE}}, 401, None, None),
    ("a signature without its scheme", b'{"id": "x", "type": "joined", "member": "x"}',
     {"secret": None, "headers": {SIGNATURE_HEADER: SIGNED_ELSEWHERE.removeprefix("sha256=")}},
     401, None, None),
    ("a non-ASCII signature", b'{"id": "x", "type": "joined", "member": "x"}',
     {"secret": None, "headers": {SIGNATURE_HEADER: b"sha256=\xe9"}}, 401, None, None),
    ("a bad timestamp", b'{"id": "x", "type": "joined", "member": "x"}',
     {"headers": {TIMESTAMP_HEADER: "yesterday"}}, 401, None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "options", "status", "field", "index"),
    [pytest.param(*case[1:], id=case[0]) for case in HOSTILE],
)
def test_a_hostile_request_gets_a_clear_4xx_and_nothing_is_stored(
    endpoint: Endpoint,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    options: dict[str, Any],
    status: int,
    field: str | None,
    index: int | None,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sop.serve")
    before = endpoint.stored()
    r = endpoint.post(body, **options)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    answer = r.json()
    assert set(answer) == {"error", "field", "index"}
    assert answer["error"] and "Traceback" not in answer["error"]
    assert (answer["field"], answer["index"]) == (field, index)
    assert endpoint.stored() == before
    assert endpoint.healthy()
    logged = caplog.text
    assert SECRET.decode() not in logged
    assert "\nERROR forged" not in logged
    assert not body or len(body) < 8 or body.decode("latin-1") not in logged


def test_answers_on_a_kept_alive_connection_are_not_held_back_by_nagle(
    endpoint: Endpoint,
) -> None:
    # a listening socket made without proto=TCP leaves accepted ones without TCP_NODELAY,
    # and each answer then waits ~40 ms for a delayed ACK
    endpoint.healthy()
    t0 = time.perf_counter()
    for _ in range(20):
        assert endpoint.healthy()
    assert time.perf_counter() - t0 < 0.4


def test_a_negative_content_length_is_refused(endpoint: Endpoint) -> None:
    host, port = endpoint.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: -1\r\n\r\n{}"
        )
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    assert endpoint.healthy()


def test_a_body_that_does_not_arrive_in_time_is_a_408(program: Program, tmp_path: Path) -> None:
    with endpoint_for(program, tmp_path, body_timeout=0.5) as e:
        host, port = e.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(
                b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"X-Sop-Signature: sha256=00\r\nContent-Length: 100\r\n\r\n{"
            )
            assert s.recv(100).startswith(b"HTTP/1.1 408")
        assert e.healthy()


def test_an_unexpected_failure_is_a_500_without_internals(program: Program, tmp_path: Path) -> None:
    def broken(events: list[EventRecord]) -> list[bool]:
        raise RuntimeError("secret internals at /srv/state.db")

    writer = GroupCommit(broken)
    with endpoint_for(program, tmp_path, writer=writer) as e:
        r = e.post(joined("e1", "m"))
        assert r.status_code == 500
        assert r.json() == {"error": "internal error (see the server's log)", "field": None,
                            "index": None}  # fmt: skip
        assert e.healthy()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/events", 405), ("PUT", "/healthz", 405), ("POST", "/admin", 404),
     ("GET", "/", 404)],
)  # fmt: skip
def test_wrong_methods_and_paths_are_json_errors(
    endpoint: Endpoint, method: str, path: str, status: int
) -> None:
    r = endpoint.client.request(method, path)
    assert r.status_code == status
    assert r.json()["error"]
    if status == 405:
        assert r.headers["allow"]


def body_of(size: int) -> bytes:
    """A JSON array of `size` bytes (events that would each be valid)."""
    one = json.dumps(joined("x" * 50, "m")).encode()
    n = size // (len(one) + 1)
    return b"[" + b",".join([one] * n) + b"]"


def test_a_5mb_body_with_its_length_declared_is_refused_unread(endpoint: Endpoint) -> None:
    body = body_of(5 * MAX_BODY)
    r = endpoint.post(body)
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    assert endpoint.counting.received <= MAX_BODY
    assert endpoint.stored()[0] == 0 and endpoint.healthy()


def test_a_5mb_chunked_body_is_refused_before_it_is_all_read(endpoint: Endpoint) -> None:
    body = body_of(5 * MAX_BODY)
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for i in range(0, len(body), 16384):
            sent += 16384
            yield body[i : i + 16384]

    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(SECRET, body)}
    r = endpoint.client.post("/events", content=chunks(), headers=headers)
    assert r.status_code == 413
    # the app pulled at most the limit and one more piece, whatever the client pushed
    assert MAX_BODY < endpoint.counting.received < MAX_BODY + 300_000
    assert endpoint.stored()[0] == 0 and endpoint.healthy()


# -- the store and the writer --------------------------------------------------------------


def test_no_run_in_the_store_is_a_409(program: Program, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/empty.db")
    app = create_app(program, store, "nope", SECRET)
    with running(app) as url, httpx.Client(base_url=url) as client:
        raw = json.dumps(joined("e1", "m")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(SECRET, raw)}
        r = client.post("/events", content=raw, headers=headers)
    assert r.status_code == 409 and "sop run" in r.json()["error"]
    assert store.url not in r.text
    store.close()


class Unreachable:
    """A store that is down: every call fails as a store does."""

    url = "postgresql://user:hunter2@db/sop"

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise StoreError(f"cannot reach {self.url}")

        return fail


def test_an_unreachable_store_is_a_503_with_retry_after(program: Program) -> None:
    app = create_app(program, Unreachable(), "r", SECRET)
    with running(app) as url, httpx.Client(base_url=url) as client:
        raw = json.dumps(joined("e1", "m")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(SECRET, raw)}
        r = client.post("/events", content=raw, headers=headers)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "hunter2" not in r.text


def test_concurrent_senders_store_every_id_exactly_once(endpoint: Endpoint) -> None:
    threads, per_thread, step = 20, 50, 40  # thread t sends ids t*40 … t*40+49: 10 shared
    answers: list[list[dict[str, Any]]] = []

    def send(t: int) -> list[dict[str, Any]]:
        out = []
        with httpx.Client(base_url=endpoint.url, timeout=30) as client:
            for i in range(per_thread):
                n = t * step + i
                raw = json.dumps(joined(f"e{n}", f"m{n}")).encode()
                headers = {
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: signature(SECRET, raw),
                }
                r = client.post("/events", content=raw, headers=headers)
                assert r.status_code == 200, r.text
                out += r.json()["results"]
        return out

    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(send, range(threads)))
    results = [x for a in answers for x in a]
    unique = (threads - 1) * step + per_thread
    assert len(results) == threads * per_thread
    new_ids = [x["id"] for x in results if x["new"]]
    assert len(new_ids) == len(set(new_ids)) == unique
    events, members, occurrences = endpoint.stored()
    assert events == len(members) == unique
    # what each join set off was stored once, whatever commit it shared
    stored = endpoint.store.occurrences(endpoint.run_id)
    welcomes = [o for o in stored if o.action == "welcome"]
    assert sorted(o.member or "" for o in welcomes) == members
    per_member = sum(1 for o in stored if o.member == "m0")
    assert per_member >= 1 and occurrences == unique * per_member
    assert endpoint.healthy()


def test_the_writer_commits_queued_requests_together() -> None:
    calls: list[list[str]] = []
    gate = threading.Event()

    def commit(events: list[EventRecord]) -> list[bool]:
        calls.append([e.id for e in events])
        gate.wait(5)
        seen: set[str] = set()
        flags = []
        for e in events:
            flags.append(e.id not in seen)
            seen.add(e.id)
        return flags

    writer = GroupCommit(commit)

    async def main() -> tuple[list[bool], list[list[bool]]]:
        first = asyncio.ensure_future(writer.commit([record("a")]))
        while not calls:  # the writer holds "a" at the gate; the rest queue up behind it
            await asyncio.sleep(0.001)
        later = [asyncio.ensure_future(writer.commit([record(i), record("b")])) for i in "bcd"]
        await asyncio.sleep(0.05)
        gate.set()
        return await first, await asyncio.gather(*later)

    first, later = asyncio.run(main())
    assert first == [True]
    assert later == [[True, False], [True, False], [True, False]]
    assert calls == [["a"], ["b", "b", "c", "b", "d", "b"]]
    writer.stop()


def test_one_request_that_breaks_a_commit_does_not_fail_the_others() -> None:
    gate = threading.Event()

    def commit(events: list[EventRecord]) -> list[bool]:
        gate.wait(5)
        if any(e.id == "poison" for e in events):
            raise OverflowError("date value out of range")
        return [True] * len(events)

    writer = GroupCommit(commit)

    async def main() -> list[list[bool] | BaseException]:
        first = asyncio.ensure_future(writer.commit([record("a")]))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(writer.commit([record(i)])) for i in ("b", "poison", "c")]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    a, b, poison, c = asyncio.run(main())
    assert a == b == c == [True]
    assert isinstance(poison, OverflowError)
    assert writer.batches == 3  # "a"; then "b", "poison", "c" failed together; "b"; "c"
    writer.stop()


def test_a_store_error_fails_the_whole_batch_without_retrying_each_request() -> None:
    calls = 0

    def commit(events: list[EventRecord]) -> list[bool]:
        nonlocal calls
        calls += 1
        time.sleep(0.05)
        raise StoreError("busy")

    writer = GroupCommit(commit)

    async def main() -> list[list[bool] | BaseException]:
        return await asyncio.gather(
            *(writer.commit([record(i)]) for i in "abc"), return_exceptions=True
        )

    assert all(isinstance(x, StoreError) for x in asyncio.run(main()))
    assert calls <= 2
    writer.stop()


def test_stopping_the_writer_commits_what_is_queued_and_refuses_more() -> None:
    stored: list[str] = []

    def commit(events: list[EventRecord]) -> list[bool]:
        time.sleep(0.01)
        stored.extend(e.id for e in events)
        return [True] * len(events)

    writer = GroupCommit(commit)

    async def main() -> list[list[bool]]:
        waiting = [asyncio.ensure_future(writer.commit([record(str(i))])) for i in range(50)]
        await asyncio.sleep(0)  # all queued
        await asyncio.to_thread(writer.stop)
        with pytest.raises(Busy, match="shutting down"):
            await writer.commit([record("late")])
        return await asyncio.gather(*waiting)

    assert asyncio.run(main()) == [[True]] * 50
    assert sorted(stored, key=int) == [str(i) for i in range(50)]


def record(event_id: str) -> EventRecord:
    return EventRecord(event_id, "joined", "m", START)


# -- where it may listen -------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_without_a_secret_it_never_accepts_unsigned_events_beyond_loopback(host: str) -> None:
    with pytest.raises(ServeError, match="SOP_EVENTS_SECRET"):
        check_bind(host, None, allow_unsigned=True)
    with pytest.raises(ServeError):
        check_bind(host, b"", allow_unsigned=True)
    # without the flag it may listen (for the dashboard): every event is refused, and it says so
    note = check_bind(host, None)
    assert note is not None and "401" in note and "SOP_EVENTS_SECRET" in note
    assert check_bind(host, SECRET) is None


def test_on_loopback_unsigned_events_need_the_explicit_flag() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(host)
        note = check_bind(host, None)
        assert note is not None and "--insecure-no-signature" in note
        assert check_bind(host, None, allow_unsigned=True) is None
        assert check_bind(host, SECRET) is None


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_until_a_signal_and_keeps_what_it_accepted(
    program: Program, tmp_path: Path, stop: signal.Signals
) -> None:
    store, run_id = new_store(program, tmp_path)
    store.close()
    script = textwrap.dedent(f"""
        from sop.engine.program import Program
        from sop.engine.run.serve import serve
        from sop.engine.run.store import open_store
        from sop.engine.validate import load_playbook

        program = Program(load_playbook({str(REFERENCE)!r}).playbook)
        store = open_store({f"sqlite:///{tmp_path}/state.db"!r})
        serve(program, store, {run_id!r}, "127.0.0.1", 0, {SECRET!r},
              announce=lambda url: print(url, flush=True))
        print("returned", flush=True)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("events: http://127.0.0.1:") and line.endswith("/events"), line
        url = line.removeprefix("events: ")
        raw = json.dumps(joined("e1", "alice")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(SECRET, raw)}
        r = httpx.post(url, content=raw, headers=headers, timeout=10)
        assert r.status_code == 200 and r.json()["accepted"] == 1
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert out == "returned\n" and err == ""
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    assert [e.id for e in store.events(run_id)] == ["e1"]
    store.close()


def test_serve_refuses_an_unknown_run_before_listening(program: Program, tmp_path: Path) -> None:
    from sop.engine.run.serve import serve

    store = open_store(f"sqlite:///{tmp_path}/state.db")
    with pytest.raises(RunError, match="sop run"):
        serve(program, store, "nope", "127.0.0.1", 0, SECRET)
    store.close()
