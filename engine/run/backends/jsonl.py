"""The `jsonl` backend: one JSON object a line, appended to a file and synced before `ok`.

The runner records "sent" right after `send` returns, so a line is flushed and fsync'd first:
after a crash the file holds every delivery the store calls sent (and possibly one more, which
the store will resend; readers dedupe by `key`). The file is opened once, for appending
(`core.files.open_output` truncates, which would erase the log of earlier runs), with the same
refusals: never through a symlink, never a FIFO or socket.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping

from ...core.textsafe import terminal
from ..ports import BackendConfig, Capabilities, Delivery, SendResult
from ._common import (
    BackendError,
    Clock,
    capabilities,
    check_fits,
    check_options,
    encode,
    record,
    wall_clock,
)


def open_append(path: str) -> int:
    """A descriptor appending to `path` (created 0600: it holds members' ids and messages).

    Refuses a symlink, a folder, a FIFO or socket; a character device such as /dev/null is fine.
    Raises OSError with a message for the operator.
    """
    if "\x00" in path:
        raise OSError(errno.EINVAL, "the path contains a NUL character")
    if os.path.islink(path):  # where O_NOFOLLOW does not exist; the flag covers the race
        raise OSError(errno.ELOOP, "is a symlink; sop does not write through symlinks")
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    for name in ("O_NOFOLLOW", "O_CLOEXEC", "O_NONBLOCK", "O_NOCTTY"):
        flags |= getattr(os, name, 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, "is a symlink; sop does not write through symlinks") from None
        if e.errno == errno.ENOENT:
            folder = os.path.dirname(os.path.abspath(path))
            raise OSError(e.errno, f"the folder {folder!r} does not exist") from None
        if e.errno == errno.ENXIO:  # a FIFO nobody reads
            raise OSError(e.errno, "not a regular file") from None
        raise OSError(e.errno, e.strerror or "cannot open") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    os.set_blocking(fd, True)
    return fd


class JsonlBackend:
    """Appends deliveries to a file; not idempotent (a file keeps a repeated key twice)."""

    def __init__(self, name: str, path: str, caps: Capabilities, clock: Clock = wall_clock) -> None:
        self.name = name
        self.capabilities = caps
        self.path = path
        self._clock = clock
        try:
            self._fd: int | None = open_append(path)
        except OSError as e:
            raise BackendError(
                f'backend "{name}": cannot write {terminal(path)!r}: {e.strerror or e}'
            ) from None
        # fsync is what makes "sent" true after a power loss; a device has nothing to sync
        self._sync = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._torn = False  # the last line was written in part: the next starts a fresh line

    def send(self, delivery: Delivery) -> SendResult:
        """Append one line for `delivery`, then fsync it."""
        if self._fd is None:
            raise RuntimeError(f"jsonl backend {self.name!r} is closed")
        unfit = check_fits(delivery, self.capabilities)
        if unfit is not None:
            return unfit
        data = encode(record(delivery, self.name, self._clock())) + b"\n"
        if self._torn:
            data = b"\n" + data
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as e:
            # A part of a line is no record (readers skip lines that do not parse), so nothing
            # was delivered: retry, and start the next write on a line of its own.
            self._torn = self._torn or written > 0
            return SendResult.retry(f"cannot append to {terminal(self.path)!r}: {e.strerror}")
        self._torn = False
        if self._sync:
            try:
                os.fsync(self._fd)
            except OSError as e:
                # the line is written but may not survive a power loss: neither sent nor not
                return SendResult.uncertain(
                    f"appended to {terminal(self.path)!r} but fsync failed: {e.strerror}"
                )
        return SendResult.ok()

    def close(self) -> None:
        """Close the file (twice is harmless)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"JsonlBackend(name={self.name!r}, path={self.path!r})"


# What it can do before options (`sop backends`):
CAPABILITIES = Capabilities(idempotent=False)


def create(config: BackendConfig, env: Mapping[str, str]) -> JsonlBackend:
    """The `jsonl` entry point: the target is the file (relative to the current folder)."""
    check_options(config, ())
    if not config.target:
        raise BackendError(
            f'backend "{config.name}" (jsonl) needs a file: path: in the playbook or'
            f" --backend {config.name}=jsonl:PATH"
        )
    return JsonlBackend(config.name, config.target, capabilities(config, idempotent=False))
