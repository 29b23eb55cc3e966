"""The version of `sop`: read once from the installed package's metadata, written nowhere else."""

from __future__ import annotations

from functools import cache


@cache
def version() -> str:
    """The installed distribution's version (pyproject.toml), or `0+unknown` when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("sop")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
