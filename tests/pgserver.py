"""A real PostgreSQL server for tests and benchmarks, started and stopped by the caller.

Debian's server binaries (`pg_config --bindir`, else /usr/lib/postgresql/*/bin) run a throwaway
cluster in a temporary directory on a free loopback port, fsync on. `initdb` refuses root, so as
root the cluster belongs to the `postgres` user and its commands run under `runuser`. Each test
gets a fresh empty database from `create_database()` (about 30 ms once the server is up).

Where the binaries are missing, `start_or_skip()` skips with the reason, unless
SOP_REQUIRE_POSTGRES=1 (CI sets it), where it fails: CI never passes without PostgreSQL.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REQUIRED = os.environ.get("SOP_REQUIRE_POSTGRES") == "1"
HINT = "install it with `apt-get install -y postgresql` (Debian), or put initdb on PATH"


class PgUnavailable(Exception):
    """No PostgreSQL server can be started here (the message says why)."""


def find_bindir() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`, or None."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)

    def version(p: str) -> tuple[int, ...]:
        part = Path(p).parent.name
        return tuple(int(x) for x in part.split(".") if x.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)][
        ::-1
    ]
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One throwaway PostgreSQL cluster (see the module docstring)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = 0
        self.dir: Path | None = None
        self._as_postgres = os.geteuid() == 0
        self._admin: Any = None
        self._names = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self._log_tail()
            raise PgUnavailable(
                f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}"
            )

    def _log_tail(self) -> str:
        if self.dir is None or not (self.dir / "log").exists():
            return ""
        lines = (self.dir / "log").read_text(errors="replace").splitlines()[-20:]
        return "\nserver log:\n" + "\n".join(lines)

    def start(self) -> PgServer:
        """initdb a cluster in a new temporary directory and start it on a free port."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> PgServer:
        self.dir = Path(tempfile.mkdtemp(prefix="sop-pg-"))
        if self._as_postgres:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as e:
                raise PgUnavailable(
                    "running as root, the server needs the `postgres` user (initdb refuses root)"
                ) from e
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        data = self.dir / "data"
        self._run(
            "initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        for attempt in range(3):  # a free port can be taken between choosing and binding it
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
                " -c max_connections=50"
            )
            try:
                self._run(
                    "pg_ctl", "-D", str(data), "-l", str(self.dir / "log"), "-w", "-t", "60",
                    "-o", options, "start",
                )  # fmt: skip
                break
            except PgUnavailable:
                if attempt == 2:
                    raise
        import psycopg

        self._admin = psycopg.connect(self.url("postgres"), autocommit=True)
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory; safe to call twice."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.dir is None:
            return
        if (self.dir / "data" / "postmaster.pid").exists():
            with contextlib.suppress(PgUnavailable, subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------

    def url(self, database: str) -> str:
        """A libpq URL for one database of this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t{next(self._names)}"
        # FILE_COPY checkpoints (slow with fsync on); WAL_LOG copies the small template through WAL
        self._admin.execute(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY WAL_LOG")
        return self.url(name)

    def terminate_connections(self, url: str) -> None:
        """End every session on a database, as a server restart would."""
        name = url.rsplit("/", 1)[1]
        self._admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )

    def drop_database(self, url: str) -> None:
        """Drop a database made by `create_database` (its connections are ended first)."""
        name = url.rsplit("/", 1)[1]
        self._admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_server() -> PgServer:
    """A started server; `PgUnavailable` when none can be started here."""
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        raise PgUnavailable("psycopg is not installed: pip install -e '.[test]'") from e
    bindir = find_bindir()
    if bindir is None:
        raise PgUnavailable(f"no PostgreSQL server binaries (initdb, pg_ctl) found: {HINT}")
    return PgServer(bindir).start()


def start_or_skip() -> PgServer:
    """`start_server()`, or a skip with the reason (a failure when SOP_REQUIRE_POSTGRES=1)."""
    import pytest

    try:
        return start_server()
    except PgUnavailable as e:
        if REQUIRED:
            pytest.fail(f"PostgreSQL is required here (SOP_REQUIRE_POSTGRES=1): {e}")
        pytest.skip(f"PostgreSQL is not available: {e}")
