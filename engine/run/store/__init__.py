"""State stores chosen by URL: `memory:`, `sqlite:///path` (the default), `postgresql://...`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from .base import StateStore, StoreError

DEFAULT_URL = "sqlite:///.sop/state.db"


def default_url(env: Mapping[str, str] | None = None) -> str:
    """`SOP_STATE` from the environment, else the SQLite file `.sop/state.db`."""
    env = os.environ if env is None else env
    return env.get("SOP_STATE") or DEFAULT_URL


def open_store(url: str) -> StateStore:
    """The store a URL names (schema migrated to this version); `StoreError` when it cannot."""
    if url in ("memory:", "memory://"):
        from .memory import MemoryStore

        return MemoryStore()
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///relative/path, sqlite:////absolute/path, sqlite:///:memory:
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not path:
            raise StoreError(f"{url}: a SQLite URL names a file, e.g. {DEFAULT_URL}")
        from .sql import SqlStore
        from .sqlite import SqliteDialect

        sync = "FULL"
        for item in parts.query.split("&") if parts.query else ():
            name, _, value = item.partition("=")
            if name == "synchronous" and value.upper() in ("FULL", "NORMAL", "EXTRA"):
                sync = value.upper()
            else:
                raise StoreError(f"{url}: unknown option {item!r} (known: synchronous=FULL|NORMAL)")
        store = SqlStore(url, SqliteDialect(path, sync))
        return store
    if parts.scheme in ("postgresql", "postgres"):
        from .postgres import PostgresDialect
        from .sql import SqlStore

        return SqlStore(url, PostgresDialect(url))
    raise StoreError(
        f"{url!r} is not a state store URL: use sqlite:///PATH (the default is {DEFAULT_URL}),"
        " postgresql://USER@HOST:PORT/DB or memory:"
    )


__all__ = ["DEFAULT_URL", "StateStore", "StoreError", "default_url", "open_store"]
