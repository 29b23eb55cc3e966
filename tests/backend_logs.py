"""urllib3's DEBUG records, captured whatever logging state earlier tests left behind.

The log-scrub tests assert that urllib3 did log a request line (and that it is scrubbed). Whether
it logs depends on global state another module may have changed: a level set on a urllib3 logger,
a logger disabled by `logging.config` (`disable_existing_loggers`), `logging.disable`. So the
tests set that state explicitly for their duration and put it back after, rather than depend on
the order the modules run in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sop.engine.run.backends._http import LogScrub


@contextmanager
def urllib3_debug(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """urllib3's loggers at DEBUG, enabled and propagating to `caplog`, for the block."""
    loggers = [logging.getLogger(name) for name in ("urllib3", *LogScrub.LOGGERS)]
    saved = [(lg.level, lg.propagate, lg.disabled) for lg in loggers]
    disabled = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    try:
        for lg in loggers:
            lg.setLevel(logging.DEBUG)
            lg.propagate = True
            lg.disabled = False
        with caplog.at_level(logging.DEBUG):
            yield
    finally:
        for lg, (level, propagate, was_disabled) in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            lg.propagate = propagate
            lg.disabled = was_disabled
        logging.disable(disabled)
