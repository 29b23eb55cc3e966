"""`sop serve`: member events over HTTP — signed, bounded, deduplicated, stored before the 200.

`POST /events` takes one event object, `{"events": [...]}` or a JSON array of events (at most
`MAX_EVENTS`), checked by `members.parse_event`. A request is all or nothing: one bad event
rejects it with a 400 naming the event's index and field, and nothing of it is stored.

What is signed: the header `X-Sop-Signature: sha256=<hex>` carries HMAC-SHA256, keyed with the
shared secret (`$SOP_EVENTS_SECRET`), of the exact body bytes. A sender may add
`X-Sop-Timestamp: <unix seconds>`; the signed text is then `<timestamp>.<body>` (the header's
bytes, a dot, the body) and the timestamp must be within `TIMESTAMP_TOLERANCE` of the server's
clock, so a captured request cannot be replayed later (within the window a replay is a duplicate
by id anyway). `signature()` computes the header for senders and tests.

Answers are JSON. 200: `{"accepted": new, "duplicates": n, "results": [{"id", "new"}]}`.
Errors: `{"error", "field", "index"}` (field and index null unless about one event) with 400 (not
JSON, wrong shape, a bad event), 401 (signature), 404, 405, 408 (body too slow), 409 (no such
run), 413 (body over `max_body` bytes — declared or counted while reading — or over
`MAX_EVENTS` events), 415 (not `application/json`), 503 with Retry-After (store unavailable or
busy, writer queue full, shutting down: send again, repeated ids are ignored), 500 (a bug; the
answer says nothing more, the log has it).

Durability and throughput: requests hand their checked events to one writer thread
(`GroupCommit`), which commits everything queued in one `service.ingest` transaction and then
answers each request with its own new/duplicate flags; a 200 is only sent after its commit.
Concurrent senders share commits, so throughput is not capped by one fsync per event.

Starlette and uvicorn are imported here only; the CLI imports this module lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import queue
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..core.net import is_loopback
from ..program import Program
from . import service
from .clock import RealClock
from .members import EventError, parse_event
from .ports import Clock
from .runner import RunError
from .store.base import EventRecord, StateStore, StoreError

if TYPE_CHECKING:
    import uvicorn

SECRET_ENV = "SOP_EVENTS_SECRET"
SIGNATURE_HEADER = "X-Sop-Signature"
TIMESTAMP_HEADER = "X-Sop-Timestamp"
TIMESTAMP_TOLERANCE = 300.0  # seconds either side of the server's clock
DEFAULT_HOST = "127.0.0.1"
MAX_BODY = 1 << 20  # bytes
MAX_EVENTS = 1000  # per request
BODY_TIMEOUT = 30.0  # seconds to receive a whole body (a slow sender holds a connection)
COMMIT_TIMEOUT = 30.0  # seconds a request waits for its commit before a 503
MAX_PENDING = 20_000  # events queued for the writer; beyond it requests get a 503
RETRY_AFTER = "1"  # seconds, with every 503
# Instants the store keeps and the rules compute with (a year-1 or year-9999 `at` overflows
# date arithmetic); see the report to the lead: this belongs in `members.parse_event`.

log = logging.getLogger("sop.serve")


class ServeError(ValueError):
    """The server cannot start as asked (said to the operator)."""


class Rejected(Exception):
    """A request answered with a 4xx or 503: status, message, and what in the body is wrong."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        index: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.index = index
        self.headers = headers

    def response(self) -> Response:
        """The JSON answer: always `error`, `field` and `index` (null when not about one)."""
        body = {"error": self.message, "field": self.field, "index": self.index}
        return AsciiJSON(body, status_code=self.status, headers=self.headers)


class AsciiJSON(JSONResponse):
    """JSON escaped to ASCII: an unpaired surrogate echoed from a body cannot break the answer."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _unavailable(message: str) -> Rejected:
    return Rejected(503, message, headers={"Retry-After": RETRY_AFTER})


# -- who may listen where ------------------------------------------------------------------


def check_bind(host: str, secret: bytes | None, allow_unsigned: bool = False) -> str | None:
    """Refuse (ServeError) unsigned events beyond loopback; say when events will be refused.

    Without a secret (and without `allow_unsigned`) the server still starts — the dashboard
    needs no events secret — and `/events` answers 401 to everything: the returned note says so.
    """
    if secret:
        return None
    if not allow_unsigned:
        return (
            f"no {SECRET_ENV}: /events refuses every event (401); set it (senders sign each body"
            " with it), or pass --insecure-no-signature on a loopback address"
        )
    if not is_loopback(host):
        raise ServeError(
            f"refusing to accept unsigned events on {host!r}: anyone who can reach it could post"
            f" events; set {SECRET_ENV} (senders sign each body with it) or listen on"
            f" {DEFAULT_HOST}"
        )
    return None


# -- signatures ----------------------------------------------------------------------------


def signature(secret: bytes, body: bytes, timestamp: str | None = None) -> str:
    """The `X-Sop-Signature` value for `body` (and `X-Sop-Timestamp`, when one is sent)."""
    signed = body if timestamp is None else timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()


def verify(
    secret: bytes, body: bytes, given: str | None, timestamp: str | None, now: float
) -> str | None:
    """Why a signature is not accepted, or None when it is (`now`: unix seconds)."""
    if given is None:
        return f"missing {SIGNATURE_HEADER} header (sha256=<hex HMAC-SHA256 of the body>)"
    if timestamp is not None:
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            return f"{TIMESTAMP_HEADER} must be unix seconds"
        if abs(now - int(timestamp)) > TIMESTAMP_TOLERANCE:
            return (
                f"{TIMESTAMP_HEADER} is more than {TIMESTAMP_TOLERANCE:.0f} s away from the"
                " server's clock"
            )
    expected = signature(secret, body, timestamp).encode("ascii")
    # header values arrive as latin-1 text; compare bytes (compare_digest refuses non-ASCII str)
    if not hmac.compare_digest(expected, given.strip().lower().encode("latin-1")):
        return f"{SIGNATURE_HEADER} does not match the body"
    return None


# -- the writer: group commit ----------------------------------------------------------------

Outcome = list[bool] | BaseException


@dataclass(frozen=True, slots=True)
class _Job:
    events: Sequence[EventRecord]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[bool]]


class Busy(Exception):
    """The writer has too much queued, or is stopped: the request should be retried later."""


def _settle(done: list[tuple[asyncio.Future[list[bool]], Outcome]]) -> None:
    """On the event loop: hand each waiting request its outcome (one wake-up per batch)."""
    for future, outcome in done:
        if future.done():  # its request gave up waiting (a timeout)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class GroupCommit:
    """One thread that commits queued requests' events together: one transaction per batch.

    `commit(events)` stores events and returns a `new` flag per position (the store keeps the
    first of repeated ids); each request gets its own slice of the flags. A batch takes
    everything queued when the writer is free, whole requests only, until `max_events`. When a
    batch fails with anything but a `shared` error (the store or the run, the same for every
    request), its requests are committed one by one, so one request cannot fail the others.
    """

    def __init__(
        self,
        commit: Callable[[list[EventRecord]], list[bool]],
        *,
        max_events: int = 2000,
        max_pending: int = MAX_PENDING,
        linger: float = 0.0,
        shared: tuple[type[BaseException], ...] = (StoreError, RunError),
    ) -> None:
        self._commit_fn = commit
        self.max_events = max_events
        self.max_pending = max_pending
        self.linger = linger  # seconds to wait for more requests once one is taken
        self._shared = shared
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0  # events queued or being committed
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # commits done (tests and benchmarks read it)

    def start(self) -> None:
        """Start the thread (again is harmless)."""
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="sop-serve-writer")
                self._thread.daemon = True
                self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then end the thread; later commits are refused (Busy)."""
        with self._lock:
            thread = self._thread
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    async def commit(self, events: Sequence[EventRecord]) -> list[bool]:
        """Store `events` with the next batch; their new flags, once durable. Busy when full."""
        self.start()
        loop = asyncio.get_running_loop()
        job = _Job(events, loop, loop.create_future())
        with self._lock:
            if self._closed:
                raise Busy("the server is shutting down")
            if self._pending and self._pending + len(events) > self.max_pending:
                raise Busy(f"{self._pending} events are waiting to be stored")
            self._pending += len(events)
            self._queue.put(job)
        return await job.future

    def _run(self) -> None:
        stop = False
        while not stop:
            job = self._queue.get()
            if job is None:
                return
            jobs, size = [job], len(job.events)
            deadline = time.monotonic() + self.linger
            while size < self.max_events:
                wait = deadline - time.monotonic()
                try:
                    more = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
                size += len(more.events)
            try:
                live = [j for j in jobs if not j.future.cancelled()]
                self._deliver(self._commit(live) if live else [])
            finally:
                with self._lock:
                    self._pending -= size

    def _commit(self, jobs: list[_Job]) -> list[tuple[_Job, Outcome]]:
        try:
            flags = self._commit_fn([e for j in jobs for e in j.events])
            self.batches += 1
        except Exception as e:
            if len(jobs) > 1 and not isinstance(e, self._shared):
                return [done for j in jobs for done in self._commit([j])]
            return [(j, e) for j in jobs]
        out: list[tuple[_Job, Outcome]] = []
        start = 0
        for j in jobs:
            out.append((j, flags[start : start + len(j.events)]))
            start += len(j.events)
        return out

    @staticmethod
    def _deliver(outcomes: list[tuple[_Job, Outcome]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[bool]], Outcome]]]
        by_loop = {}
        for job, outcome in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, outcome))
        for loop, done in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, done)


# -- reading a request ---------------------------------------------------------------------


def _check_media_type(request: Request) -> None:
    media, *params = request.headers.get("content-type", "").lower().split(";")
    if media.strip() != "application/json":
        raise Rejected(415, "the body must be JSON (Content-Type: application/json)")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') != "utf-8":
            raise Rejected(415, "JSON bodies are UTF-8 (RFC 8259): charset=utf-8 or none")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is longer than `limit` (declared or counted)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise Rejected(400, "Content-Length must be a number of bytes")
        if int(declared) > limit:
            raise Rejected(413, f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Rejected(413, f"the body is larger than {limit} bytes")
    return bytes(body)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _decode(body: bytes) -> object:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "the body is not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise Rejected(400, "the body is not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, NaN/Infinity, integers of thousands of digits
        raise Rejected(400, f"the body is not valid JSON: {e}") from None


def _items(payload: object) -> list[object]:
    """The events a body holds: one object, `{"events": [...]}` or an array."""
    if isinstance(payload, dict) and "events" in payload:
        extra = sorted(set(payload) - {"events"})
        if extra:
            raise Rejected(400, "unknown field next to events (known: events)", field=extra[0])
        payload = payload["events"]
        if not isinstance(payload, list):
            raise Rejected(400, "must be an array of event objects", field="events")
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list):
        raise Rejected(
            400, 'the body must be an event object, {"events": [...]} or an array of events'
        )
    if len(payload) > MAX_EVENTS:
        raise Rejected(
            413, f"at most {MAX_EVENTS} events per request, got {len(payload)}", field="events"
        )
    return payload


def _events(program: Program, items: list[object], received: datetime) -> list[EventRecord]:
    out = []
    for i, obj in enumerate(items):
        try:
            e = parse_event(obj, program.tz, received, require_id=True, pb=program.playbook)
        except EventError as err:
            raise Rejected(400, str(err), field=err.field, index=i) from None
        out.append(e)
    return out


# -- the app -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    program: Program
    run_id: str
    secret: bytes | None
    allow_unsigned: bool
    max_body: int
    body_timeout: float
    clock: Clock


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _accept(
    request: Request, s: _Settings, writer: GroupCommit, refused: dict[str, str] | None = None
) -> Response:
    _check_media_type(request)
    given = request.headers.get(SIGNATURE_HEADER)
    signed = s.secret is not None or not s.allow_unsigned
    if signed and given is None:
        raise Rejected(401, f"missing {SIGNATURE_HEADER} header (sha256=<hex HMAC of the body>)")
    try:
        async with asyncio.timeout(s.body_timeout):  # cheaper than wait_for: no extra task
            body = await _read_body(request, s.max_body)
    except TimeoutError:
        raise Rejected(408, f"the body did not arrive within {s.body_timeout:g} s") from None
    received = s.clock.now()
    if signed:
        if s.secret is None:
            raise Rejected(401, "the server has no shared secret to check signatures with")
        stamp = request.headers.get(TIMESTAMP_HEADER)
        why = verify(s.secret, body, given, stamp, received.timestamp())
        if why is not None:
            raise Rejected(401, why)
    events = _events(s.program, _items(_decode(body)), received)
    flags: list[bool] = []
    if events:
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT):
                flags = await writer.commit(events)
        except Busy as e:
            raise _unavailable(f"{e}; try again") from None
        except TimeoutError:
            log.warning("a commit took longer than %.0f s", COMMIT_TIMEOUT)
            raise _unavailable(
                "the state store is slow: the events may or may not be stored; send them"
                " again (repeated ids are ignored)"
            ) from None
    new = sum(flags)
    results: list[dict[str, Any]] = []
    for ev, f in zip(events, flags, strict=True):
        row: dict[str, Any] = {"id": ev.id, "new": f}
        why = refused.pop(ev.id, None) if refused is not None and f else None
        if why:  # recorded, but it changed nothing (a redemption the balance cannot cover)
            row["refused"] = why
        results.append(row)
    return AsciiJSON({
        "accepted": new,
        "duplicates": len(flags) - new,
        "results": results,
    })  # fmt: skip


def create_app(
    program: Program,
    store: StateStore,
    run_id: str,
    secret: bytes | None,
    *,
    allow_unsigned: bool = False,
    max_body: int = MAX_BODY,
    body_timeout: float = BODY_TIMEOUT,
    actor: str = "serve",
    clock: Clock | None = None,
    writer: GroupCommit | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The events endpoint as a Starlette app (routes can be added: the dashboard's, later).

    Without a secret every event is refused (401) unless `allow_unsigned`; with one, only
    correctly signed bodies are accepted. `app.state.writer` is the group-commit writer, started
    and stopped (after committing what is queued) by the app's lifespan.
    """
    s = _Settings(
        program, run_id, secret or None, allow_unsigned, max_body, body_timeout,
        clock or RealClock(),
    )  # fmt: skip
    refused: dict[str, str] = {}  # event id -> why it changed nothing (filled by the writer)
    if writer is None:
        writer = GroupCommit(
            lambda events: service.ingest(program, store, run_id, events, actor, refused)
        )

    async def post_events(request: Request) -> Response:
        try:
            return await _accept(request, s, writer, refused)
        except Rejected as r:
            log.info(
                "refused %d from %s (field %.64r, index %s)",
                r.status, _client(request), r.field, r.index,
            )  # fmt: skip
            return r.response()
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening for it
        except RunError:
            log.warning("no run %r in the state store", run_id)
            return Rejected(
                409, f"the state store has no run {run_id!r}: start it with `sop run` first"
            ).response()
        except StoreError as e:
            log.warning("the state store is unavailable: %s", e)
            return _unavailable("the state store is unavailable; try again").response()
        except Exception as e:  # answered here: raised on, uvicorn would drop the connection
            return await internal_error(request, e)

    async def healthz(request: Request) -> Response:
        return AsciiJSON({"ok": True, "run": run_id})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "no such path", 405: "method not allowed"}.get(exc.status_code, exc.detail)
        return Rejected(exc.status_code, message, headers=exc.headers).response()

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return Rejected(500, "internal error (see the server's log)").response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
        try:
            yield
        finally:
            await asyncio.to_thread(writer.stop)

    app = Starlette(
        routes=[
            Route("/events", post_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            *extra_routes,  # the dashboard, mounted after the events endpoint
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.writer = writer
    return app


# -- running it ----------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port` (port 0: any free one); ServeError when it cannot."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and
        # without it every response waits ~40 ms for a delayed ACK (Nagle)
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def make_server(app: Starlette, **config: Any) -> uvicorn.Server:
    """A uvicorn server for `app` (quiet, lifespan on); run it with `.run(sockets=[bind(...)])`."""
    import uvicorn

    options: dict[str, Any] = {
        "log_level": "warning",
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "limit_concurrency": 1000,
        "timeout_graceful_shutdown": 10,
        **config,
    }
    return uvicorn.Server(uvicorn.Config(app, **options))


def serve(
    program: Program,
    store: StateStore,
    run_id: str,
    host: str = DEFAULT_HOST,
    port: int = 8750,
    secret: bytes | None = None,
    allow_unsigned: bool = False,
    *,
    max_body: int = MAX_BODY,
    actor: str = "serve",
    announce: Callable[[str], None] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> None:
    """Serve events until SIGINT or SIGTERM, then return once what was accepted is committed.

    Raises ServeError (unsafe or impossible address) or RunError (no such run) before listening.
    `announce` is told the events URL once the socket is bound (port 0 picks a free one).
    """
    note = check_bind(host, secret, allow_unsigned)
    service.require_run(store, run_id)
    sock = bind(host, port)
    app = create_app(
        program, store, run_id, secret, allow_unsigned=allow_unsigned, max_body=max_body,
        actor=actor, extra_routes=extra_routes,
    )  # fmt: skip
    if announce is not None:
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        announce(f"events: http://{shown}:{bound_port}/events")
        if extra_routes:
            announce(f"dashboard: http://{shown}:{bound_port}/")
        if note:
            announce(note)
    try:
        with _signals_end_serving():
            make_server(app).run(sockets=[sock])
    except _Stopped:
        pass  # uvicorn shut down gracefully, then re-raised the signal it caught
    finally:
        app.state.writer.stop()
        sock.close()


class _Stopped(Exception):
    """SIGINT or SIGTERM, after uvicorn's graceful shutdown: `serve` returns normally."""


@contextlib.contextmanager
def _signals_end_serving() -> Iterator[None]:
    """While serving, SIGINT and SIGTERM raise `_Stopped` (uvicorn re-raises them at its end)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stopped(signum: int, frame: object) -> None:
        raise _Stopped

    before = {sig: signal.signal(sig, stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


__all__ = [
    "MAX_BODY",
    "MAX_EVENTS",
    "SECRET_ENV",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "GroupCommit",
    "ServeError",
    "bind",
    "check_bind",
    "create_app",
    "is_loopback",
    "make_server",
    "serve",
    "signature",
    "verify",
]
