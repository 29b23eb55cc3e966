"""A real loopback HTTP receiver for webhook deliveries: records what arrives, fails on request.

`Sink` runs a stdlib `ThreadingHTTPServer` on 127.0.0.1 in a thread of the process that starts
it, so it outlives any runner process that is killed while sending to it. Every request that
arrives whole is recorded (its `Idempotency-Key`, its JSON body and the answer given); one cut
short (the sender died while writing it) is only counted. Like a platform, it acts on a request
before answering it: a sender killed while waiting for the answer has still delivered.

- plain mode: every accepted request is a delivery, a repeated key too (so repeats show up);
- idempotent mode (`Sink(idempotent=True)`): a repeated key is answered 200 again and counted
  in `repeats`, but is not a second delivery — what a receiver that dedupes by key does.

Faults for other tests: `sink.fail(Fault(status=503), times=2)` answers the next two requests
so (not a delivery), `Fault(delay=…)` answers late, `Fault(hang_up=True)` reads the request and
closes the connection without an answer (the sender cannot know whether it arrived: a 2xx fault
with `hang_up` delivers, any other does not). `fail_key(key, …)` aims faults at one key.
`Sink(answer=Fault(delay=0.002))` answers every request without a fault of its own that way.
With `log=PATH` every recorded request is also appended to a JSON-lines file and flushed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Fault:
    """How to answer one request instead of `200 {"ok": true}`."""

    status: int = 200
    delay: float = 0.0  # seconds to wait before answering (or hanging up)
    body: bytes | None = None  # default: a small JSON body saying the status
    headers: tuple[tuple[str, str], ...] = ()
    hang_up: bool = False  # close the connection without answering

    @property
    def delivers(self) -> bool:
        """Whether the receiver acts on the request (a 2xx answer, given or not)."""
        return 200 <= self.status < 300


OK = Fault()


@dataclass(frozen=True)
class Request:
    """One request that arrived whole."""

    key: str | None  # the Idempotency-Key, percent-decoded
    body: Any  # the JSON body (None when it was not JSON)
    headers: dict[str, str]
    status: int  # the answer given (0: hung up)
    delivered: bool  # a new delivery (False: rejected, or a repeat absorbed by idempotency)
    repeat: bool  # the key had been delivered before
    at: float  # time.time() when it was recorded


@dataclass
class _State:
    requests: list[Request] = field(default_factory=list)
    deliveries: Counter[str] = field(default_factory=Counter)  # key -> deliveries (> 1: twice)
    repeats: Counter[str] = field(default_factory=Counter)  # key -> repeats answered, not acted on
    broken: int = 0  # requests cut short (the sender died or hung up while writing)


class Sink:
    """A loopback webhook receiver (see the module docstring). Use as a context manager."""

    def __init__(
        self, idempotent: bool = False, log: Path | str | None = None, answer: Fault = OK
    ) -> None:
        self.idempotent = idempotent
        self.answer = answer  # how requests without a fault of their own are answered
        self._lock = threading.Lock()
        self._state = _State()
        self._faults: deque[Fault] = deque()
        self._key_faults: dict[str, deque[Fault]] = {}
        self._log = open(log, "a", encoding="utf-8") if log is not None else None  # noqa: SIM115
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sink:
        """Listen on a free loopback port, serving from a daemon thread."""
        handler = type("Handler", (_Handler,), {"sink": self})
        server = _Server(("127.0.0.1", 0), handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the log (twice is harmless)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Where to POST: `http://127.0.0.1:PORT/hook`."""
        assert self._server is not None, "the sink is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    # -- faults ------------------------------------------------------------------------------

    def fail(self, fault: Fault, times: int = 1) -> None:
        """Answer the next `times` requests (any key) with `fault`."""
        with self._lock:
            self._faults.extend([fault] * times)

    def fail_key(self, key: str, fault: Fault, times: int = 1) -> None:
        """Answer the next `times` requests for `key` with `fault` (before any general fault)."""
        with self._lock:
            self._key_faults.setdefault(key, deque()).extend([fault] * times)

    def _next_fault(self, key: str | None) -> Fault:
        with self._lock:
            queue = self._key_faults.get(key or "")
            if queue:
                return queue.popleft()
            return self._faults.popleft() if self._faults else self.answer

    # -- what arrived ------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """Every request that arrived whole, in order."""
        with self._lock:
            return list(self._state.requests)

    @property
    def deliveries(self) -> Counter[str]:
        """Deliveries per key (in plain mode a repeated key counts again)."""
        with self._lock:
            return Counter(self._state.deliveries)

    @property
    def repeats(self) -> Counter[str]:
        """Repeats per key absorbed by idempotency (idempotent mode)."""
        with self._lock:
            return Counter(self._state.repeats)

    @property
    def broken(self) -> int:
        """Requests cut short before their body was whole."""
        with self._lock:
            return self._state.broken

    def count(self) -> int:
        """How many requests arrived whole (cheap: for polling)."""
        with self._lock:
            return len(self._state.requests)

    # -- the handler's side ------------------------------------------------------------------

    def _arrived(self, key: str | None, body: Any, headers: dict[str, str], fault: Fault) -> bool:
        """Record a whole request answered per `fault`; whether it was a new delivery."""
        with self._lock:
            st = self._state
            seen = key is not None and st.deliveries[key] > 0
            delivered = fault.delivers and key is not None
            repeat = delivered and seen
            if repeat and self.idempotent:
                assert key is not None
                st.repeats[key] += 1
                delivered = False
            if delivered:
                assert key is not None
                st.deliveries[key] += 1
            status = 0 if fault.hang_up else fault.status
            r = Request(key, body, headers, status, delivered, repeat, time.time())
            st.requests.append(r)
            if self._log is not None:
                line = {"key": key, "status": status, "delivered": delivered, "repeat": repeat}
                self._log.write(json.dumps({**line, "body": body}, ensure_ascii=False) + "\n")
                self._log.flush()
            return delivered

    def _cut_short(self) -> None:
        with self._lock:
            self._state.broken += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A sender that died mid-request resets its connection: expected here, not news."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the idempotent webhook's pooled session uses
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    sink: Sink

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        """Read the whole request, act on it, answer per the next fault."""
        try:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        except ValueError:
            length = 0
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:  # the sender died while writing: nothing arrived
            self.sink._cut_short()
            self.close_connection = True
            return
        raw_key = self.headers.get("Idempotency-Key")
        key = unquote(raw_key) if raw_key is not None else None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fault = self.sink._next_fault(key)
        self.sink._arrived(key, body, dict(self.headers.items()), fault)
        if fault.delay:
            time.sleep(fault.delay)
        if fault.hang_up:
            self.close_connection = True
            return
        payload = fault.body
        if payload is None:
            ok = fault.delivers
            payload = json.dumps({"ok": ok, "status": fault.status}).encode()
        try:
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:  # the sender said `Connection: close`: say so back
                self.send_header("Connection", "close")
            for name, value in fault.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the sender went away before the answer: it was still delivered
            self.close_connection = True


__all__ = ["OK", "Fault", "Request", "Sink"]
