"""PyYAML for the loader, imported without building a pattern the C parser never uses.

Importing `yaml` compiles `Reader.NON_PRINTABLE`, used only by PyYAML's pure-Python reader (the
loader reads through libyaml when it is there). Python 3.11's `re` builds that class one code
point at a time, U+00A0 to U+FFFD: about 5 ms (57 M instructions), more than half of importing
PyYAML. The same set written as the few code points it holds compiles in a tenth of that; it goes
into `re`'s cache under PyYAML's pattern, so PyYAML gets a pattern that matches exactly the same
characters (tests/test_loader.py checks every code point). Should `re` keep its cache elsewhere
or PyYAML change the pattern, the entry is never read and nothing else changes. Nothing is kept
between processes.
"""

from __future__ import annotations

import re
import sys

# yaml/reader.py, Reader.NON_PRINTABLE, as PyYAML 5.1 to 6.0 write it
PYYAML_NON_PRINTABLE = "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
# The same code points: C0 controls but tab and line ends, DEL and C1 controls but NEL,
# surrogates, and U+FFFE and U+FFFF.
NON_PRINTABLE = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]"


def _prime_re_cache() -> None:
    cache = getattr(re, "_cache", None)  # the pattern cache re.compile reads first (3.11-3.13)
    if "yaml" not in sys.modules and isinstance(cache, dict):
        cache.setdefault((str, PYYAML_NON_PRINTABLE, 0), re.compile(NON_PRINTABLE))


_prime_re_cache()

import yaml  # noqa: E402  (after the cache holds the pattern)

__all__ = ["yaml"]
