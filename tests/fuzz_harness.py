"""The fuzz runner: generated cases through `sop` in long-lived, resource-limited worker processes.

Each worker imports the CLI once, caps its address space (RLIMIT_AS), and runs one case at a time
in-process (`cli.main(args, standalone_mode=True)`) inside a fresh folder holding the case's files,
with stdout and stderr captured at both the Python and the file-descriptor level. The parent sends
cases over a pipe, enforces a wall-clock timeout (kill and restart: a hang), restarts a worker that
died (a crash), and records for every case its verb, input kind, exit code, traceback, time, and
the worker's peak RSS. A case fails when it raised, hung, crashed, exited outside {0, 1, 2},
printed a secret (the token in the workers' environment, or a line of /etc/passwd), or tried to
change a file outside its folder. That last one is refused by an audit hook (and symlinks to
/etc/passwd point at a decoy copy): workers may run as root, and `-o` through a committed symlink
once overwrote the real /etc/passwd of the machine running this campaign. Failing cases are
written to a folder, one sub-folder per failure class, with a minimised copy for replay.

Shared by tests/test_fuzz.py (short CI run) and bench/fuzz.py (the long run).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import queue
import resource
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.strategies import SECRET_ENV, Case, FileKind, FileSpec, expand, spec_size

ROOT = Path(__file__).resolve().parent.parent
OK_EXITS = frozenset({0, 1, 2})
BIG_INPUT = 1 << 20  # inputs from 1 MB up are measured apart (the 500 MB goal is for smaller)
MAX_OUTPUT_SCAN = 8 << 20


# -- what one case did ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What running one case did."""

    index: int
    verb: str
    kind: str
    exit_code: int | None = None
    error_type: str | None = None  # exception other than SystemExit (MemoryError included)
    where: str = ""  # innermost frame in cli.py or engine/
    traceback: str = ""
    hang: bool = False
    crash: str = ""  # how the worker died (signal), if it did
    disclosure: str = ""  # what leaked, if anything
    escape: str = ""  # a change outside the case folder the harness refused (symlink followed)
    elapsed: float = 0.0
    maxrss_mb: float = 0.0  # the worker's high-water mark after the case
    growth_mb: float = 0.0  # how much this case raised it
    input_bytes: int = 0
    output: str = ""  # the first bytes of what it printed

    @property
    def failed(self) -> bool:
        """Traceback, hang, crash, disclosure, or an exit code outside {0, 1, 2}."""
        return bool(
            self.error_type
            or self.escape
            or self.hang
            or self.crash
            or self.disclosure
            or (self.exit_code is not None and self.exit_code not in OK_EXITS)
        )

    @property
    def signature(self) -> str:
        """The failure class: same kind of failure at the same place."""
        if self.disclosure:
            return f"disclosure:{self.verb}:{self.disclosure}"
        if self.escape:
            return f"escape:{self.verb}:{self.escape.split()[0]}"
        if self.hang:
            return f"hang:{self.verb}:{self.where or 'unknown'}"
        if self.crash:
            return f"crash:{self.verb}:{self.crash}"
        if self.error_type:
            return f"traceback:{self.error_type}:{self.where}"
        return f"exit:{self.verb}:{self.exit_code}"


# -- the worker process -----------------------------------------------------------------------


class _Hang(BaseException):
    """Raised in the worker by its own alarm so a hang reports where it was."""


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    os.write(fd, struct.pack("<I", len(data)))
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, n - got)
        if not b:
            raise EOFError
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _recv(fd: int) -> Any:
    (n,) = struct.unpack("<I", _read_exact(fd, 4))
    return pickle.loads(_read_exact(fd, n))


def materialize(case: Case, where: Path, decoys: Path | None = None) -> int:
    """Create the case's files under `where`; returns the bytes written.

    A symlink to "@name" points at `decoys/name` (a harmless copy of a system file), or stays
    dangling when there is no decoy folder (recorded cases, for reading).
    """
    total = 0
    for f in case.files:
        p = where / f.path
        p.parent.mkdir(parents=True, exist_ok=True)
        if f.kind is FileKind.TEXT:
            p.write_bytes(f.data)
        elif f.kind is FileKind.RECIPE:
            p.write_bytes(expand(f.recipe))
        elif f.kind is FileKind.SYMLINK:
            target = f.data.decode("utf-8", "surrogateescape")
            if target.startswith("@") and decoys is not None:
                target = str(decoys / target[1:])
            os.symlink(target, p)
        elif f.kind is FileKind.FIFO:
            os.mkfifo(p)
        elif f.kind is FileKind.DIR:
            p.mkdir(exist_ok=True)
        total += spec_size(f)
    return total


def _innermost(tb: Any) -> str:
    """The innermost frame of the traceback that is our code (cli.py or engine/)."""
    where = ""
    for frame in traceback.extract_tb(tb):
        fn = frame.filename
        if "/engine/" in fn or fn.endswith("cli.py"):
            rel = fn[fn.rfind("/engine/") + 1 :] if "/engine/" in fn else "cli.py"
            where = f"{rel}:{frame.name}"
    return where


def _library_tail(frames: Any) -> str:
    """` > module:function` of the innermost frame when it is a library's, not ours."""
    if not frames:
        return ""
    last = frames[-1]
    fn = last.filename
    if "/engine/" in fn or fn.endswith("cli.py"):
        return ""
    mod = fn.rsplit("site-packages/", 1)[-1] if "site-packages/" in fn else fn.rsplit("/", 1)[-1]
    return f" > {mod}:{last.name}"


def _innermost_stack(frames: Iterable[Any]) -> str:
    where = ""
    for fr in frames:
        fn = fr.filename
        if "/engine/" in fn or fn.endswith("cli.py"):
            rel = fn[fn.rfind("/engine/") + 1 :] if "/engine/" in fn else "cli.py"
            where = f"{rel}:{fr.name}"
    return where


def _maxrss_mb() -> float:
    """Peak resident memory of this worker and its waited-for children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux keeps ru_maxrss across fork and exec: a worker started by a big test process would
    # report that process's peak as its own. VmHWM is this process image's own high-water mark.
    with contextlib.suppress(OSError, IndexError, ValueError), open("/proc/self/status") as f:
        own = int(f.read().split("VmHWM:")[1].split()[0])
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


# -- the worker's guard against writes outside its folder ---------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_ALLOWED_DEVICES = ("/dev/null", "/dev/full", "/dev/shm/")
# audit event -> positions of the path arguments it changes
_CHANGING = {
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
    "os.replace": (0, 1), "os.symlink": (1,), "os.link": (1,), "os.chmod": (0,),
    "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,), "shutil.rmtree": (0,),
    "shutil.copyfile": (1,), "shutil.move": (1,), "shutil.copytree": (1,),
}  # fmt: skip
_FOLLOWING = {"os.chmod", "os.chown", "os.truncate", "os.utime", "shutil.copyfile"}


class _Guard:
    """An audit hook: a case may change files only inside its folder (and library scratch space).

    Attacker-committed symlinks can make a command write where its user can (CI runs as root at
    times): such a write is refused with PermissionError and recorded as an escape.
    """

    def __init__(self, roots: list[Path]) -> None:
        self.roots = tuple(os.path.realpath(r) + os.sep for r in roots)
        self.armed = False
        self.escapes: list[str] = []

    def allowed(self, path: Any, follow: bool = True) -> bool:
        """Whether changing `path` stays inside the roots (`follow`: the last link is followed)."""
        if isinstance(path, int):  # a file descriptor: already opened, already checked
            return True
        p = os.fsdecode(path) if isinstance(path, bytes | os.PathLike) else str(path)
        if follow:
            real = os.path.realpath(p)
        else:  # rename, unlink, symlink: act on the link itself, not on what it points to
            head, tail = os.path.split(os.path.abspath(p))
            real = os.path.join(os.path.realpath(head), tail)
        return (real + os.sep).startswith(self.roots) or real.startswith(_ALLOWED_DEVICES)

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.armed:
            return
        if event == "open":
            path, mode, flags = (*args, None, None, None)[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if not writes or path is None:
                return
            paths: tuple[Any, ...] = (path,)
            follow = not (isinstance(flags, int) and flags & os.O_NOFOLLOW)
        elif event in _CHANGING:
            paths = tuple(args[i] for i in _CHANGING[event] if i < len(args))
            follow = event in _FOLLOWING
        else:
            return
        for p in paths:
            if p is not None and not self.allowed(p, follow):
                self.armed = False  # no recursion through realpath's own events
                try:
                    self.escapes.append(
                        f"{event} {os.fsdecode(p) if not isinstance(p, int) else p}"
                    )
                finally:
                    self.armed = True
                raise PermissionError(f"fuzz harness: {event} outside the case folder refused: {p}")


_GUARD: _Guard | None = None
_DECOYS: Path | None = None  # copies of system files, outside every folder a case can name


class _Stream(io.TextIOWrapper):
    """A captured stdout/stderr: UTF-8, strict like a CI runner's, never a terminal."""

    def isatty(self) -> bool:
        return False


def _scan(text: str, secret: str, passwd: list[str]) -> str:
    """What of the secrets `text` holds: the token, or a line of /etc/passwd."""
    if secret in text:
        return "env-secret"
    for line in passwd:
        if line in text:
            return "passwd-line"
    return ""


def _entry(spec: str) -> Any:
    """The click command `module:attribute` (the harness's own tests swap in a fake `sop`)."""
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _run_one(
    case: Case,
    base: Path,
    secret: str,
    passwd: list[str],
    timeout: float,
    entry: str = "sop.cli:main",
) -> dict[str, Any]:
    """Run one case in this process; a dict of Outcome fields."""
    import gc

    main = _entry(entry)

    work = base / "case"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    size = materialize(case, work, _DECOYS)
    inputs = {str(work / f.path) for f in case.files}
    old_env = {k: os.environ.get(k) for k, _ in case.env}
    os.environ.update(dict(case.env))
    out_buf, err_buf = io.BytesIO(), io.BytesIO()
    fd_file = base / "fd-output"
    saved = (sys.stdout, sys.stderr)
    fd_out = os.open(fd_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd_out, 1)
    os.dup2(fd_out, 2)
    os.close(fd_out)
    cap_out = _Stream(out_buf, encoding="utf-8", write_through=True)
    cap_err = _Stream(err_buf, encoding="utf-8", write_through=True)
    sys.stdout, sys.stderr = cap_out, cap_err
    os.chdir(work)
    before = _maxrss_mb()
    result: dict[str, Any] = {"input_bytes": size}

    def on_alarm(signum: int, frame: Any) -> None:
        stack = traceback.extract_stack(frame)
        result["where"] = _innermost_stack(stack) + _library_tail(stack)
        result["traceback"] = "".join(traceback.format_list(stack[-12:]))
        raise _Hang

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    if _GUARD is not None:
        _GUARD.escapes.clear()
        _GUARD.armed = True
    t0 = time.perf_counter()
    try:
        try:
            main(list(case.args), prog_name="sop", standalone_mode=True)
            result["exit_code"] = 0
        except SystemExit as e:
            code = e.code
            result["exit_code"] = 0 if code is None else code if isinstance(code, int) else 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Hang:
        result["hang"] = True
    except BaseException as e:
        result["error_type"] = type(e).__name__
        result["where"] = _innermost(e.__traceback__) + _library_tail(
            traceback.extract_tb(e.__traceback__)
        )
        result["traceback"] = traceback.format_exc(limit=30)[-6000:]
    result["elapsed"] = time.perf_counter() - t0
    if _GUARD is not None:
        _GUARD.armed = False
        if _GUARD.escapes:
            result["escape"] = _GUARD.escapes[0]
    sys.stdout, sys.stderr = saved
    for cap in (cap_out, cap_err):
        with contextlib.suppress(Exception):
            cap.flush()
        with contextlib.suppress(Exception):
            cap.detach()  # else closing the wrapper (when collected) closes the buffer
    os.chdir(base)
    for k, v in old_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    gc.set_threshold(700, 10, 10)  # `validate` raises it for its own short life
    text = out_buf.getvalue().decode("utf-8", "replace") + err_buf.getvalue().decode(
        "utf-8", "replace"
    )
    with open(fd_file, "rb") as fh:
        text += fh.read(MAX_OUTPUT_SCAN).decode("utf-8", "replace")
    # what the command wrote to files (-o, --report, init) is output too
    for dirpath, _, names in os.walk(work):
        for name in names:
            p = os.path.join(dirpath, name)
            if p not in inputs and os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    text += fh.read(MAX_OUTPUT_SCAN).decode("utf-8", "replace")
    result["disclosure"] = _scan(text, secret, passwd)
    result["output"] = text[:3000]
    after = _maxrss_mb()
    result["maxrss_mb"] = after
    result["growth_mb"] = after - before
    return result


def _preimport() -> None:
    """Import what cases import lazily, so a case's time is its own work."""
    import jinja2.sandbox  # noqa: F401
    import rich.console
    import rich.table  # noqa: F401
    import scipy.optimize
    import scipy.special  # noqa: F401
    import sop.cli
    import sop.engine.lang.scaffold
    import sop.engine.plan.diff
    import sop.engine.plan.graph
    import sop.engine.plan.render
    import sop.engine.plan.timeline
    import sop.engine.report
    import sop.engine.sim.calibrate
    import sop.engine.sim.montecarlo
    import sop.engine.sim.render
    import sop.engine.validate  # noqa: F401
    from sop.engine.sim import fused

    fused.warm()  # numba's compiled day, loaded (or compiled into its cache) before any case


def worker_main() -> None:
    """Entry point of a worker: read cases from stdin, answer on the original stdout."""
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    log = os.dup(2)  # the harness's own errors; cases write to a capture file instead
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # a case reading stdin (/dev/stdin includes) sees end-of-file, not the pipe
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails with EFBIG instead
    global _GUARD, _DECOYS
    source = os.environ.get("SOP_FUZZ_SOURCE")
    if source:  # another checkout of `sop` to fuzz (an old commit, to compare), before ours
        sys.path.insert(0, source)
    config = _recv(proto_in)
    base = Path(config["base"])
    os.chdir(base)
    _DECOYS = Path(config["decoys"])
    # the case's folder, and the temp, config and home folders libraries may write to
    _GUARD = _Guard([base / "case", base / "tmp", base / "mpl", base / "home"])
    sys.addaudithook(_GUARD)
    passwd = config["passwd"]
    secret = os.environ[SECRET_ENV]
    mem = config["mem_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    fsize = config["fsize_bytes"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    try:
        if config["entry"] == "sop.cli:main":
            _preimport()
        _entry(config["entry"])
    except BaseException:
        _send(proto_out, {"ready": False, "error": traceback.format_exc()})
        return
    _send(proto_out, {"ready": True, "maxrss_mb": _maxrss_mb()})
    while True:
        try:
            msg = _recv(proto_in)
        except EOFError:
            return
        case = Case.from_dict(msg["case"])
        try:
            res = _run_one(case, base, secret, passwd, config["timeout"], config["entry"])
        except BaseException:
            os.write(log, traceback.format_exc().encode("utf-8", "replace"))
            raise
        _send(proto_out, res)


# -- the parent side --------------------------------------------------------------------------


def _passwd_lines() -> list[str]:
    try:
        text = Path("/etc/passwd").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if len(ln) >= 12 and ln.count(":") >= 6]


@dataclass(frozen=True)
class Limits:
    """Per-worker limits: address space, wall time per case, written-file size; and what to run."""

    mem_mb: int = 1024
    timeout: float = 10.0
    fsize_mb: int = 256
    recycle_every: int = 500
    entry: str = "sop.cli:main"  # the click command under test


_NUMBA_CACHE: str | None = None


def _numba_cache() -> str:
    """A folder holding the simulator's numba functions, compiled once per campaign in a process
    of its own (workers copy it into their home folder: numba must be able to write where its
    cache is, and the guard lets a worker write only in its own folders; compiling inside a
    worker would hold LLVM's memory as the worker's baseline)."""
    global _NUMBA_CACHE
    if _NUMBA_CACHE is None:
        folder = tempfile.mkdtemp(prefix="sop-fuzz-numba-")
        code = "from sop.engine.sim import fused; fused.warm()"
        env = {**os.environ, "NUMBA_CACHE_DIR": folder}
        subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
        _NUMBA_CACHE = folder
    return _NUMBA_CACHE


class Worker:
    """One worker process, restarted on demand."""

    def __init__(self, limits: Limits, secret: str, passwd: list[str], decoys: str) -> None:
        self.decoys = decoys
        self.limits = limits
        self.secret = secret
        self.passwd = passwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.base: str | None = None
        self.served = 0
        self.start_rss = 0.0

    def start(self) -> None:
        """Start (or restart) the process and wait until it has imported everything."""
        self.stop()
        numba_cache = _numba_cache()
        self.base = tempfile.mkdtemp(prefix="sop-fuzz-")
        # the secret first: /proc/self/environ then starts with it
        env = {SECRET_ENV: self.secret}
        env.update({k: v for k, v in os.environ.items() if k != SECRET_ENV})
        env.update(
            PYTHONPATH=str(ROOT),
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            LC_ALL="C.UTF-8",
            PYTHONHASHSEED="0",
            PYTHONDONTWRITEBYTECODE="1",  # imports write nothing outside the worker's folder
            TMPDIR=os.path.join(self.base, "tmp"),
            MPLCONFIGDIR=os.path.join(self.base, "mpl"),
            HOME=os.path.join(self.base, "home"),
            NUMBA_CACHE_DIR=os.path.join(self.base, "home", "numba"),
        )
        for sub in ("tmp", "mpl", "home"):
            os.mkdir(os.path.join(self.base, sub))
        shutil.copytree(numba_cache, env["NUMBA_CACHE_DIR"])
        for k in ("GITHUB_ACTIONS", "NO_COLOR", "COLUMNS", "FORCE_COLOR", "TZ"):
            env.pop(k, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.fuzz_harness import worker_main; worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(os.environ.get("SOP_FUZZ_WORKER_LOG", os.devnull), "ab"),  # noqa: SIM115
            cwd=self.base,
            env=env,
            start_new_session=True,  # a kill takes any children (simulate pools) with it
        )
        assert self.proc.stdin and self.proc.stdout
        _send(
            self.proc.stdin.fileno(),
            {
                "base": self.base,
                "passwd": self.passwd,
                "mem_bytes": self.limits.mem_mb << 20,
                "fsize_bytes": self.limits.fsize_mb << 20,
                "timeout": self.limits.timeout,
                "entry": self.limits.entry,
                "decoys": self.decoys,
            },
        )
        ready = self._wait(120.0)
        if not ready or not ready.get("ready"):
            self.stop()
            raise RuntimeError(f"fuzz worker failed to start: {ready}")
        self.start_rss = float(ready["maxrss_mb"])
        self.served = 0

    def _wait(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        try:
            return dict(_recv(fd))
        except (EOFError, pickle.UnpicklingError, struct.error):
            return None

    def stop(self) -> None:
        """Kill the process (and its session) and remove its folder."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.proc.wait(5)
            for s in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(Exception):
                    s.close()  # type: ignore[union-attr]
            self.proc = None
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def run(self, index: int, case: Case) -> Outcome:
        """Run one case; restart the worker after a hang, a crash or a heavy case."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc and self.proc.stdin
        base = Outcome(index, case.verb, case.kind, input_bytes=sum(map(spec_size, case.files)))
        t0 = time.perf_counter()
        try:
            _send(self.proc.stdin.fileno(), {"case": case.as_dict()})
        except (BrokenPipeError, OSError):
            self.start()
            assert self.proc.stdin
            _send(self.proc.stdin.fileno(), {"case": case.as_dict()})
        res = self._wait(self.limits.timeout + 5.0)
        self.served += 1
        if res is None:
            elapsed = time.perf_counter() - t0
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2.0)  # a worker that closed the pipe is exiting: let it finish
            died = self.proc.poll()
            self.stop()
            if died is None:  # still running: stuck in C code the alarm cannot interrupt
                return replace(base, hang=True, elapsed=elapsed)
            how = f"signal {-died}" if died < 0 else f"exit {died}"
            if died < 0 and -died == signal.SIGKILL:
                how = "killed (SIGKILL: out of memory?)"
            return replace(base, crash=how, elapsed=elapsed)
        out = replace(base, **{k: v for k, v in res.items() if k in Outcome.__dataclass_fields__})
        if (
            out.hang
            or out.error_type in ("MemoryError", "RecursionError")
            or out.input_bytes >= BIG_INPUT
            or self.served >= self.limits.recycle_every
            or "--executor" in case.args
        ):
            self.stop()  # a fresh process: no half-built state, and honest RSS for small inputs
        return out


@dataclass
class Summary:
    """Counters over a campaign."""

    cases: int = 0
    per_verb: Counter[str] = field(default_factory=Counter)
    per_kind: Counter[str] = field(default_factory=Counter)
    seconds_per_verb: Counter[str] = field(default_factory=Counter)  # time inside `sop`
    exits: Counter[str] = field(default_factory=Counter)
    failures: dict[str, list[Outcome]] = field(default_factory=dict)
    tracebacks: int = 0
    hangs: int = 0
    crashes: int = 0
    disclosures: int = 0
    escapes: int = 0
    bad_exits: int = 0
    peak_rss_mb: float = 0.0
    peak_rss_small_mb: float = 0.0
    baseline_rss_mb: float = 0.0
    top_growth: list[Outcome] = field(default_factory=list)
    slowest: list[Outcome] = field(default_factory=list)
    wall: float = 0.0

    def add(self, o: Outcome) -> None:
        """Count one outcome."""
        self.cases += 1
        self.per_verb[o.verb] += 1
        self.per_kind[o.kind] += 1
        self.seconds_per_verb[o.verb] += o.elapsed  # type: ignore[assignment]
        if o.hang:
            self.exits["hang"] += 1
        elif o.crash:
            self.exits["crash"] += 1
        elif o.error_type:
            self.exits["traceback"] += 1
        else:
            self.exits[str(o.exit_code)] += 1
        self.tracebacks += bool(o.error_type)
        self.hangs += o.hang
        self.crashes += bool(o.crash)
        self.disclosures += bool(o.disclosure)
        self.escapes += bool(o.escape)
        self.bad_exits += o.exit_code is not None and o.exit_code not in OK_EXITS
        self.peak_rss_mb = max(self.peak_rss_mb, o.maxrss_mb)
        if o.input_bytes < BIG_INPUT:
            self.peak_rss_small_mb = max(self.peak_rss_small_mb, o.maxrss_mb)
        if o.failed:
            self.failures.setdefault(o.signature, []).append(o)
        self.top_growth = sorted([*self.top_growth, o], key=lambda x: -x.growth_mb)[:5]
        self.slowest = sorted([*self.slowest, o], key=lambda x: -x.elapsed)[:5]

    @property
    def failed(self) -> int:
        """Cases that failed."""
        return sum(len(v) for v in self.failures.values())


class Campaign:
    """A pool of workers that runs cases and keeps every failing one."""

    def __init__(
        self,
        workers: int = 2,
        limits: Limits | None = None,
        out_dir: str | None = None,
        keep_per_class: int = 3,
    ) -> None:
        self.limits = limits or Limits()
        self.secret = "sopfuzz" + secrets.token_hex(16)
        self.passwd = _passwd_lines()
        self.n_workers = workers
        self.out_dir = Path(out_dir) if out_dir else None
        self.keep_per_class = keep_per_class
        self.cases: dict[int, Case] = {}  # failing cases kept for minimisation
        self._lock = threading.Lock()
        self.pool: list[Worker] = []
        # not under a worker's folder: `--root ..` or `validate ..` must not reach the decoys
        self.decoys = tempfile.mkdtemp(prefix="sop-fuzz-decoys-")
        Path(self.decoys, "passwd").write_text("\n".join(self.passwd) + "\n", encoding="utf-8")

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "decoys", ""), ignore_errors=True)

    def _worker(self) -> Worker:
        return Worker(self.limits, self.secret, self.passwd, self.decoys)

    def run(
        self,
        source: Iterable[Case],
        on_outcome: Callable[[Outcome, Summary], None] | None = None,
    ) -> Summary:
        """Run every case of `source` on the pool; a summary of what happened."""
        summary = Summary()
        q: queue.Queue[tuple[int, Case] | None] = queue.Queue(maxsize=4 * self.n_workers)
        t0 = time.perf_counter()

        def loop(w: Worker) -> None:
            try:
                while True:
                    item = q.get()
                    if item is None:
                        return
                    i, case = item
                    o = w.run(i, case)
                    with self._lock:
                        summary.add(o)
                        try:
                            if o.failed:
                                self._keep(case, o, summary)
                            if on_outcome:
                                on_outcome(o, summary)
                        except Exception:
                            traceback.print_exc()
            finally:
                w.stop()

        self.pool = [self._worker() for _ in range(self.n_workers)]
        w0 = self.pool[0]
        w0.start()
        summary.baseline_rss_mb = w0.start_rss
        threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in self.pool]
        for t in threads:
            t.start()
        try:
            for i, case in enumerate(source):
                while True:  # never block forever behind a pool whose threads died
                    try:
                        q.put((i, case), timeout=1.0)
                        break
                    except queue.Full:
                        if not any(t.is_alive() for t in threads):
                            raise RuntimeError("every fuzz worker thread stopped") from None
        finally:
            for t in threads:
                while t.is_alive():
                    try:
                        q.put(None, timeout=1.0)
                        break
                    except queue.Full:
                        continue
            for t in threads:
                t.join()
        summary.wall = time.perf_counter() - t0
        return summary

    def _keep(self, case: Case, o: Outcome, summary: Summary) -> None:
        n = len(summary.failures[o.signature])
        if n == 1:
            self.cases[o.index] = case
        if self.out_dir and n <= self.keep_per_class:
            record(self.out_dir / _slug(o.signature) / f"case-{o.index}", case, o)

    def rerun(self, case: Case, timeout: float | None = None) -> Outcome:
        """One case on a fresh worker of its own (replay, minimisation)."""
        w = self._worker()
        if timeout is not None:
            w.limits = replace(self.limits, timeout=timeout)
        try:
            return w.run(0, case)
        finally:
            w.stop()


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)[:120]


def record(where: Path, case: Case, outcome: Outcome | None = None) -> None:
    """Write a case (and what it did) so `bench/fuzz.py --replay` can run it again."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "case.json").write_text(  # ASCII: lone surrogates of raw bytes survive as \\udcXX
        json.dumps(case.as_dict(), indent=1), encoding="utf-8"
    )
    files = where / "files"
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir()
    with contextlib.suppress(OSError, ValueError):
        materialize(case, files)  # for reading; replay rebuilds them from case.json
    if outcome is not None:
        d = asdict(outcome)
        (where / "outcome.json").write_text(json.dumps(d, indent=1, default=str), encoding="utf-8")
        (where / "replay.sh").write_text(
            "cd files && sop " + " ".join(_shell(a) for a in case.args) + "\n",
            encoding="utf-8",
            errors="backslashreplace",
        )


def _shell(a: str) -> str:
    import shlex

    return shlex.quote(a)


def load_recorded(where: Path) -> list[Case]:
    """Every case recorded under `where` (a case folder or a tree of them)."""
    paths = (
        [where / "case.json"]
        if (where / "case.json").is_file()
        else sorted(where.rglob("case.json"))
    )
    return [Case.from_dict(json.loads(p.read_text(encoding="utf-8"))) for p in paths]


# -- minimisation -----------------------------------------------------------------------------


def minimise(camp: Campaign, case: Case, signature: str, budget: int = 60) -> Case:
    """A smaller case with the same failure class: fewer options, fewer files, fewer lines."""
    tries = 0
    slow = signature.startswith(("hang:", "crash:"))
    timeout = min(camp.limits.timeout, 3.0) if slow else None  # a hang hangs for 3 s too

    def same(c: Case) -> bool:
        nonlocal tries
        tries += 1
        sig = camp.rerun(c, timeout).signature
        if slow:  # where a hang is caught varies with the timeout: same verb is the same class
            return sig.split(":")[:2] == signature.split(":")[:2]
        return sig == signature

    if slow:
        budget = min(budget, 16)
    # 1. drop options (an option and its value), from the end
    args = list(case.args)
    i = len(args) - 1
    while i >= 1 and tries < budget:
        for width in (2, 1):
            cand = args[:i] + args[i + width :]
            if i + width <= len(args) and cand and same(replace(case, args=tuple(cand))):
                args = cand
                break
        i -= 1
    case = replace(case, args=tuple(args))
    # 2. drop files
    files = list(case.files)
    for f in list(files):
        if tries >= budget:
            break
        cand_files = [g for g in files if g is not f]
        if same(replace(case, files=tuple(cand_files))):
            files = cand_files
    case = replace(case, files=tuple(files))
    # 3. drop chunks of lines of the text files (halving chunk sizes)
    for idx, f in enumerate(case.files):
        if f.kind is not FileKind.TEXT or tries >= budget:
            continue
        lines = f.data.split(b"\n")
        chunk = max(1, len(lines) // 2)
        while chunk >= 1 and tries < budget:
            j, changed = 0, False
            while j < len(lines) and tries < budget:
                cand_lines = lines[:j] + lines[j + chunk :]
                new = FileSpec(f.path, f.kind, b"\n".join(cand_lines))
                files2 = list(case.files)
                files2[idx] = new
                if cand_lines and same(replace(case, files=tuple(files2))):
                    lines, case, changed = cand_lines, replace(case, files=tuple(files2)), True
                else:
                    j += chunk
            if not changed:
                chunk //= 2
        f = case.files[idx]
    return case


# -- generating cases with hypothesis ---------------------------------------------------------


def generate(n: int, seed: int = 0, mix: dict[str, Any] | None = None) -> Iterator[Case]:
    """`n` distinct cases from the strategies, the same ones for the same seed.

    Draws straight from hypothesis's data source with one seeded `Random` per case: as fast as
    the strategies (a `@given` loop mutates its earlier examples, so half of what it yields
    repeats) and reproducible case by case. Falls back to `@given` batches if that internal
    interface moves.
    """
    import random

    from tests.strategies import cases

    strategy = cases(mix)
    seen: set[int] = set()
    try:
        from hypothesis.control import BuildContext
        from hypothesis.errors import StopTest
        from hypothesis.internal.conjecture.data import ConjectureData
    except ImportError:  # pragma: no cover - a hypothesis without that interface
        yield from _generate_given(n, seed, strategy)
        return
    produced, i = 0, 0
    while produced < n and i < 20 * n + 100:
        data = ConjectureData(random=random.Random(f"{seed}:{i}"), max_choices=20_000)
        i += 1
        try:
            with BuildContext(data, is_final=False, wrapped_test=generate):
                case = data.draw(strategy)
        except StopTest:  # ran out of choices: a too-big example, skip it
            continue
        h = hash(case)
        if h in seen:
            continue
        seen.add(h)
        produced += 1
        yield case


def _generate_given(n: int, seed: int, strategy: Any, batch: int = 500) -> Iterator[Case]:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    produced, b = 0, 0
    while produced < n:
        size = min(batch, n - produced)
        out: list[Case] = []

        @hseed(seed * 1_000_003 + b)
        @settings(
            max_examples=size,
            database=None,
            phases=[Phase.generate],
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def collect(case: Case, out: list[Case] = out) -> None:
            out.append(case)

        collect()
        b += 1
        if not out:
            return
        yield from out[:size]
        produced += min(size, len(out))


# -- reporting --------------------------------------------------------------------------------


def describe(s: Summary, camp: Campaign | None = None) -> str:
    """The campaign as text: counts, failures by class, memory and speed."""
    lines = [
        f"cases run: {s.cases} in {s.wall:.0f} s ({s.cases / max(s.wall, 1e-9):.1f} cases/s)",
        "per verb: " + ", ".join(f"{k} {v}" for k, v in s.per_verb.most_common()),
        "per input kind: " + ", ".join(f"{k} {v}" for k, v in s.per_kind.most_common()),
        "seconds in sop per verb: "
        + ", ".join(f"{k} {v:.0f}" for k, v in s.seconds_per_verb.most_common()),
        "exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(s.exits.items())),
        f"tracebacks: {s.tracebacks}",
        f"hangs over {camp.limits.timeout if camp else 10:.0f} s: {s.hangs}",
        f"crashes (worker died): {s.crashes}",
        f"disclosures: {s.disclosures}",
        f"writes outside the case folder (refused): {s.escapes}",
        f"exit codes outside 0/1/2: {s.bad_exits}",
        f"peak RSS: {s.peak_rss_mb:.0f} MB overall, {s.peak_rss_small_mb:.0f} MB for inputs under"
        f" 1 MB (worker baseline after imports {s.baseline_rss_mb:.0f} MB)",
        "largest RSS growth in one case: "
        + ", ".join(f"{o.growth_mb:.0f} MB ({o.verb} {o.kind})" for o in s.top_growth[:3]),
        "slowest cases: "
        + ", ".join(f"{o.elapsed:.1f} s ({o.verb} {o.kind})" for o in s.slowest[:3]),
        f"failure classes: {len(s.failures)} ({s.failed} failing cases)",
    ]
    for sig, outs in sorted(s.failures.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {len(outs):6d}  {sig}")
    return "\n".join(lines)


def case_markdown(case: Case, o: Outcome | None = None, max_file: int = 1500) -> str:
    """A reproducer as markdown: the command, the files, what happened."""
    out = [
        f"`sop {' '.join(_shell(a) for a in case.args)}`"
        + (f"  (env {dict(case.env)})" if case.env else "")
    ]
    for f in case.files:
        if f.kind is FileKind.TEXT:
            body = f.data.decode("utf-8", "backslashreplace")
            if len(body) > max_file:
                body = body[:max_file] + f"\n… ({len(f.data)} bytes)"
            out.append(f"- `{f.path}`:\n\n```yaml\n{body}\n```")
        elif f.kind is FileKind.RECIPE:
            out.append(
                f"- `{f.path}`: generated {f.recipe[0]} ({spec_size(f)} bytes): {f.recipe!r:.200}"
            )
        else:
            out.append(f"- `{f.path}`: {f.kind}" + (f" → `{f.data.decode()}`" if f.data else ""))
    if o is not None:
        if o.traceback:
            tail = "\n".join(o.traceback.strip().splitlines()[-8:])
            out.append(f"\n```\n{tail}\n```")
        elif o.output:
            out.append(f"\noutput (start): `{o.output[:300]!r}`")
    return "\n".join(out)
