"""Reading untrusted files: confined to a root folder, regular files only, bounded in size.

Every file whose *content* `sop` does not trust (playbooks, fragments, scenarios, CSV exports) is
read through this module, so the guarantees of docs/security.md hold in one place:
- the resolved path (symlinks followed) stays inside the root, so `../../proc/self/environ`, an
  absolute path or a symlink out of a checkout are refused before a byte is read;
- only regular files are read: the type is checked with `fstat` on the opened handle, opened
  non-blocking, so a FIFO, a device (`/dev/zero`) or a directory is refused instead of hanging;
- reads are bounded: at most `limit + 1` bytes are ever read, whatever `st_size` says (it is 0 for
  `/proc` files), so an oversized or growing file costs `limit` bytes of memory at most.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

MAX_BYTES = 10 * 1024 * 1024
_CHUNK = 1 << 20


class FileRefused(Exception):
    """A file `sop` will not read; `code` is the diagnostic code (SOP003 too large, else SOP006)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _real(path: str) -> str:
    return os.path.realpath(path)


def is_inside(path: str, root: str) -> bool:
    """True when `path`, with every symlink resolved, lies inside `root` (also resolved)."""
    real, base = _real(path), _real(root)
    try:
        return os.path.commonpath([real, base]) == base
    except ValueError:  # different drives (Windows) or mixed absolute/relative
        return False


def default_root(path: str) -> str:
    """The root of a file named on its own: the folder that holds it (symlinks not resolved)."""
    return os.path.dirname(os.path.abspath(path))


def is_inside_by_name(path: str, root: str) -> bool:
    """True when `path` lies inside `root` by its spelling alone (symlinks not followed)."""
    name, base = os.path.abspath(path), os.path.abspath(root)
    try:
        return os.path.commonpath([name, base]) == base
    except ValueError:  # different drives (Windows)
        return False


def resolve_include(base_dir: str, relative: str, root: str) -> str:
    """The path of `relative` seen from `base_dir`, refused unless it stays inside `root`."""
    _check_name(relative)
    if os.path.isabs(relative):
        raise FileRefused(
            "SOP006", "absolute paths are not allowed; give a path relative to the including file"
        )
    target = os.path.normpath(os.path.join(base_dir, relative))
    if not is_inside(target, root):
        if is_inside_by_name(target, root):
            raise FileRefused(
                "SOP006",
                f"a symlink on the path leads outside the root folder {root!r}; widen it with"
                " --root if this is intended",
            )
        raise FileRefused(
            "SOP006",
            f"the path leaves the root folder {root!r}; widen it with --root if this is intended",
        )
    return target


def _check_name(path: str) -> None:
    if "\x00" in path:
        raise FileRefused("SOP006", "the path contains a NUL character")
    if not path:
        raise FileRefused("SOP006", "the path is empty")


def read_bytes(path: str, *, limit: int = MAX_BYTES, root: str | None = None) -> bytes:
    """At most `limit` bytes of the regular file `path`, which must resolve inside `root`.

    `root` defaults to the folder that holds `path` (so a symlink may not lead out of it).
    Raises FileRefused with a message that never quotes the file's content.
    """
    _check_name(path)
    if root is None:
        root = default_root(path)
    if not is_inside(path, root):
        raise FileRefused(
            "SOP006",
            "the file resolves outside its root folder (a symlink?); widen it with --root if"
            " this is intended",
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise FileRefused("SOP006", f"cannot read file: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileRefused("SOP006", "this is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused("SOP006", "not a regular file (a device, FIFO or socket)")
        if st.st_size > limit:
            raise FileRefused("SOP003", _too_large(st.st_size, limit))
        # Blocking reads from here on: a regular file never blocks indefinitely.
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            try:
                chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            except OSError as e:
                raise FileRefused("SOP006", f"cannot read file: {e.strerror or e}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise FileRefused("SOP003", _too_large(None, limit))
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_stream(stream: Any, *, limit: int = MAX_BYTES) -> bytes:
    """At most `limit` bytes of a binary stream (standard input): FileRefused SOP003 beyond it.

    Reads `limit + 1` bytes at most, whatever is piped in, so `yes | sop validate -` stops.
    """
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        try:
            chunk = stream.read(min(_CHUNK, limit + 1 - total))
        except OSError as e:
            raise FileRefused("SOP006", f"cannot read: {e.strerror or e}") from None
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise FileRefused("SOP003", _too_large(None, limit).replace("file is", "input is"))
    return b"".join(chunks)


def _too_large(size: int | None, limit: int) -> str:
    mib = f"{limit / 1048576:g} MiB"
    if size is None:
        return f"file is larger than {mib}, the limit for input files"
    return f"file is {size / 1048576:.1f} MiB; input files are limited to {mib}"


def open_output(path: str, *, binary: bool = False) -> Any:
    """`path` opened for writing, refusing what would write elsewhere or block.

    A symlink is refused (a checkout can carry `report.sarif -> ~/.bashrc`; following it would
    overwrite the target), and so is a FIFO or socket (it would block, or feed another process);
    a regular file or a character device such as /dev/null is fine. Raises OSError.
    """
    _check_output_name(path)
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, "is a symlink; sop does not write through symlinks") from None
        raise
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    if stat.S_ISREG(st.st_mode):
        os.ftruncate(fd, 0)  # only now: a refused target is never truncated
    os.set_blocking(fd, True)
    return os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")


def _check_output_name(path: str) -> None:
    if "\x00" in path:
        raise OSError(errno.EINVAL, "the path contains a NUL character")
    if os.path.islink(path):
        raise OSError(errno.ELOOP, "is a symlink; sop does not write through symlinks")


def output_problem(path: str) -> str | None:
    """Why `path` cannot be written as an output file, or None: checked before work starts."""
    folder = os.path.dirname(os.path.abspath(path))
    if "\x00" in path:
        return "the path contains a NUL character"
    if os.path.islink(path):
        return "is a symlink; sop does not write through symlinks"
    if os.path.isdir(path):
        return "is a folder; give a file name"
    if not os.path.isdir(folder):
        return f"the folder {folder!r} does not exist"
    if os.path.exists(path):
        st = os.stat(path)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            return "not a regular file"
        if not os.access(path, os.W_OK):
            return "is not writable"
    elif not os.access(folder, os.W_OK):
        return "is not writable"
    return None
