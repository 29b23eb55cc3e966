"""Where numba keeps the simulator's compiled functions (fused.py, samplers.py): set on import,
before any of them is decorated, since numba reads the folder then."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from numba.core import config as _config

_numba_config: Any = _config  # CACHE_DIR is set on it at run time


def cache_folder(candidates: list[str] | None = None) -> str | None:
    """Where numba keeps the compiled functions: beside these modules, else in the user's cache
    folder (numba's own choice, None here); when neither is writable (a read-only install and
    home), a folder of this user in the temp folder, set as numba's CACHE_DIR, since numba
    refuses `cache=True` without one."""
    if _numba_config.CACHE_DIR:
        return str(_numba_config.CACHE_DIR)
    if candidates is None:
        from numba.misc.appdirs import AppDirs

        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
        candidates = [here, AppDirs(appname="numba", appauthor=False).user_cache_dir]
    for folder in candidates:
        try:
            os.makedirs(folder, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                return None
        except OSError:
            continue
    uid = getattr(os, "getuid", lambda: 0)()
    _numba_config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"sop-numba-{uid}")
    return str(_numba_config.CACHE_DIR)


cache_folder()
