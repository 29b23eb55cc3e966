"""Reading exported CSVs: the one place that turns untrusted export text into located cells.

Every calibrator and the backtest read their CSVs here: a regular file of at most CSV_BYTES,
UTF-8 (a BOM is fine), header names trimmed (and, for `read_rows`, matched without case), and
every error located as `FILE:LINE:` or `FILE:LINE:COLUMN:` in a CalibrationError.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date

import numpy as np


class CalibrationError(Exception):
    """The input cannot be fitted; the message says why and where (`FILE:LINE: ...`)."""


# Bounds of what an export can hold. The CSV is untrusted: it is read through sop.engine.core.files
# (regular files only, at most CSV_BYTES), and every value must be finite and in range, so a fit
# never sees NaN, infinities or magnitudes that overflow its special functions.
CSV_BYTES = 48 * 1024 * 1024  # a million members of activity data is about 25 MB
MAX_ROWS = 2_000_000
NO_DATE = -1  # an empty date cell (in `left`: a member who has not left)


def read_text(path: str, *, root: str | None = None) -> str:
    """The text of an exported CSV: a regular file of at most CSV_BYTES, UTF-8 (a BOM is fine)."""
    from ..core.files import FileRefused, read_bytes

    try:
        raw = read_bytes(path, limit=CSV_BYTES, root=root)
    except FileRefused as e:
        raise CalibrationError(f"{path}: {e.message}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise CalibrationError(f"{path}:{line}: not UTF-8 text (a binary file?)") from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise CalibrationError(f"{path}:{line}: a NUL character: this is not a CSV file")
    return text


_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T ][0-9:.,+\-Z ]*)?")
MIN_YEAR, MAX_YEAR = 1970, 2199


def parse_date(text: str) -> int | None:
    """A date as YYYY-MM-DD, YYYY/MM/DD (a time after it is ignored) -> its ordinal; else None."""
    m = _DATE.fullmatch(text.strip())
    if m is None:
        return None
    y, mo, d = (int(g) for g in m.groups())
    if not MIN_YEAR <= y <= MAX_YEAR:
        return None
    try:
        return date(y, mo, d).toordinal()
    except ValueError:
        return None


def day_text(ordinal: int) -> str:
    """An ordinal day as YYYY-MM-DD."""
    return date.fromordinal(int(ordinal)).isoformat()


def quote(field: str) -> str:
    from ..core.textsafe import terminal

    return repr(terminal(field[:40] + ("…" if len(field) > 40 else "")))


@dataclass(frozen=True)
class Rows:
    """String cells of the columns asked for, with the line of each row (for located errors)."""

    path: str
    columns: dict[str, int]  # name -> 1-based column number in the file
    cells: dict[str, list[str]]
    lines: np.ndarray

    def fail(self, row: int, column: str, message: str) -> CalibrationError:
        """An error located at the row's line and the column."""
        return CalibrationError(
            f"{self.path}:{int(self.lines[row])}:{self.columns[column]}: {message}"
        )


def read_rows(
    path: str,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    *,
    alternatives: tuple[tuple[str, ...], ...] = (),
    root: str | None = None,
) -> Rows:
    """The named columns of a CSV (header names matched case-insensitively, trimmed; `cells`
    keys are the names as asked).

    `alternatives`: groups of which exactly one column must be present (e.g. date or period).
    """
    text = read_text(path, root=root)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise CalibrationError(f"{path}: the file is empty; expected a header row")
        names = [h.strip().lower() for h in header]
        missing = [c for c in required if c.lower() not in names]
        for group in alternatives:
            if not any(c.lower() in names for c in group):
                missing.append(" or ".join(group))
        if missing:
            expected = ",".join(
                [*required, *("|".join(g) for g in alternatives), *(f"[{o}]" for o in optional)]
            )
            raise CalibrationError(
                f"{path}:1: missing column(s) {', '.join(missing)}; expected header {expected}"
                f" (found {','.join(h.strip() for h in header)})"
            )
        wanted = [*required, *optional, *(c for g in alternatives for c in g)]
        for c in wanted:
            twice = names.count(c.lower())
            if twice > 1:  # which of the two is meant cannot be guessed
                raise CalibrationError(
                    f"{path}:1: column {c} appears {twice} times in the header; keep one"
                )
        for group in alternatives:
            present = [c for c in group if c.lower() in names]
            if len(present) > 1:
                raise CalibrationError(
                    f"{path}:1: columns {' and '.join(present)} are both given; keep one"
                )
        at = {c: names.index(c.lower()) for c in wanted if c.lower() in names}
        cells: dict[str, list[str]] = {c: [] for c in at}
        lines: list[int] = []
        need = max(at.values()) + 1
        for row in reader:
            if not row or all(not f.strip() for f in row):
                continue  # blank line
            line = reader.line_num
            if len(lines) >= MAX_ROWS:
                raise CalibrationError(f"{path}:{line}: more than {MAX_ROWS:,} data rows")
            if len(row) < need:
                raise CalibrationError(
                    f"{path}:{line}: {len(row)} field(s), expected {len(header)}"
                    f" ({','.join(h.strip() for h in header)})"
                )
            for c, i in at.items():
                cells[c].append(row[i].strip())
            lines.append(line)
    except csv.Error as e:  # a huge field, an unterminated quote
        raise CalibrationError(f"{path}:{reader.line_num}: not a valid CSV row: {e}") from None
    if not lines:
        raise CalibrationError(f"{path}:2: no data rows after the header")
    return Rows(path, {c: i + 1 for c, i in at.items()}, cells, np.array(lines, dtype=np.int64))


def dates(rows: Rows, column: str, *, empty_ok: bool) -> np.ndarray:
    out = np.empty(len(rows.lines), dtype=np.int64)
    for i, v in enumerate(rows.cells[column]):
        if not v:
            if not empty_ok:
                raise rows.fail(i, column, f"`{column}` is empty; give a date such as 2024-03-01")
            out[i] = NO_DATE
            continue
        d = parse_date(v)
        if d is None:
            raise rows.fail(
                i,
                column,
                f"`{column}` is not a date: {quote(v)} (expected YYYY-MM-DD or YYYY/MM/DD,"
                f" years {MIN_YEAR} to {MAX_YEAR})",
            )
        out[i] = d
    return out
