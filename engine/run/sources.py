"""Metric sources: values of metrics that member events cannot count (leads, survey answers, GMV).

Built-ins, registered in the `sop.metric_sources` entry-point group like a third party's:
`csv:PATH`, `json:PATH`, `sql:URL;QUERY` (sqlite3, or PostgreSQL with the extra) and
`http:URL`/`https:URL` (JSON). Every source yields rows (when, metric, value): a row dated with
a day is known from that day's close (local midnight after it), one with a date-time from that
instant. `read(at)` gives each metric's latest row known at `at` (in `at`'s time zone).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, tzinfo
from importlib.metadata import entry_points
from typing import Any

from .ports import MetricSource, MetricSourceError

MAX_BYTES = 16 * 1024 * 1024
Row = tuple[str, str, float]  # (date or date-time text, metric, value)
GROUP = "sop.metric_sources"


def _known_at(when: str, tz: tzinfo) -> datetime:
    try:
        if len(when) == 10:
            d = date.fromisoformat(when) + timedelta(days=1)
            return datetime(d.year, d.month, d.day, tzinfo=tz)
        t = datetime.fromisoformat(when)
    except ValueError:
        raise MetricSourceError(f"{when!r} is not a date or an ISO date-time") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=tz)


def _number(value: object, where: str) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MetricSourceError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise MetricSourceError(f"{where}: {value!r} is not a finite number")
    return x


def latest(rows: Iterable[Row], at: datetime) -> dict[str, float]:
    """Each metric's value from its latest row known at `at`."""
    tz = at.tzinfo
    assert tz is not None
    best: dict[str, tuple[datetime, float]] = {}
    for when, metric, value in rows:
        t = _known_at(when, tz)
        if t <= at and (metric not in best or t >= best[metric][0]):
            best[metric] = (t, value)
    return {m: v for m, (_, v) in best.items()}


def rows_from_records(records: object, where: str) -> list[Row]:
    """Rows from JSON-like records: long `{date, metric, value}` or wide `{date, m1: v, ...}`."""
    if isinstance(records, Mapping):
        records = records.get("values", records.get("rows"))
    if not isinstance(records, list):
        raise MetricSourceError(f"{where}: expected a list of records (or {{'values': [...]}})")
    rows: list[Row] = []
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise MetricSourceError(f"{where}: record {i + 1} is not an object")
        when = r.get("date", r.get("at"))
        if not isinstance(when, str):
            raise MetricSourceError(f"{where}: record {i + 1} has no `date` (or `at`) text")
        if "metric" in r:
            rows.append(
                (when, str(r["metric"]), _number(r.get("value"), f"{where}: record {i + 1}"))
            )
            continue
        for k, v in r.items():
            if k not in ("date", "at") and v is not None and v != "":
                rows.append((when, str(k), _number(v, f"{where}: record {i + 1}, {k}")))
    return rows


def rows_from_csv(text: str, where: str) -> list[Row]:
    """Rows from CSV: long `date,metric,value` or wide `date,m1,m2,...` (empty cells skipped)."""
    reader = csv.DictReader(io.StringIO(text))
    return rows_from_records(list(reader), where)


def _read_file(path: str) -> str:
    from ..core.files import FileRefused, read_bytes

    try:
        data = read_bytes(path, limit=MAX_BYTES)
    except OSError as e:
        raise MetricSourceError(f"cannot read {path}: {e.strerror or e}") from None
    except FileRefused as e:
        raise MetricSourceError(f"{path}: {e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MetricSourceError(f"{path} is not UTF-8 text") from None


class FileSource:
    """A CSV or JSON file, read again at every `read` (it may be rewritten by an export job)."""

    def __init__(self, name: str, path: str, kind: str) -> None:
        self.name = name
        self.path = path
        self.kind = kind

    def read(self, at: datetime) -> Mapping[str, float]:
        """The latest value of each metric at or before `at`."""
        text = _read_file(self.path)
        if self.kind == "csv":
            rows = rows_from_csv(text, self.path)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise MetricSourceError(
                    f"{self.path}: not JSON ({e.msg} at line {e.lineno})"
                ) from None
            rows = rows_from_records(data, self.path)
        return latest(rows, at)


class SqlSource:
    """A read-only SQL query returning (date, metric, value) rows."""

    def __init__(self, name: str, url: str, query: str) -> None:
        self.name = name
        self.url = url
        self.query = query

    def read(self, at: datetime) -> Mapping[str, float]:
        """The latest value of each metric at or before `at`."""
        rows = [(str(w), str(m), _number(v, f"{self.name}: {m}")) for w, m, v in self._rows()]
        return latest(rows, at)

    def _rows(self) -> list[tuple[Any, Any, Any]]:
        if self.url.startswith("sqlite:///"):
            import sqlite3
            from pathlib import Path

            path = Path(self.url[len("sqlite:///") :]).resolve()
            try:
                conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
                try:
                    return [tuple(r) for r in conn.execute(self.query).fetchall()]
                finally:
                    conn.close()
            except sqlite3.Error as e:
                raise MetricSourceError(f"{self.name}: {e}") from None
        if self.url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError:
                raise MetricSourceError(
                    "a PostgreSQL source needs pip install 'sop[postgres]'"
                ) from None
            try:
                with psycopg.connect(self.url, connect_timeout=10) as pg:
                    pg.read_only = True
                    return [tuple(r) for r in pg.execute(self.query).fetchall()]
            except psycopg.Error as e:
                raise MetricSourceError(f"{self.name}: {str(e).splitlines()[0]}") from None
        raise MetricSourceError(f"{self.url}: a SQL source is sqlite:///PATH or postgresql://...")


class HttpSource:
    """A URL answering JSON records (GET, 10 s timeout)."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url

    def read(self, at: datetime) -> Mapping[str, float]:
        """The latest value of each metric at or before `at`."""
        import requests

        try:
            r = requests.get(self.url, timeout=(5, 10))
        except requests.RequestException as e:
            raise MetricSourceError(f"{self.url}: {type(e).__name__}") from None
        if r.status_code != 200:
            raise MetricSourceError(f"{self.url}: HTTP {r.status_code}")
        if len(r.content) > MAX_BYTES:
            raise MetricSourceError(f"{self.url}: more than {MAX_BYTES} bytes")
        try:
            data = r.json()
        except ValueError:
            raise MetricSourceError(f"{self.url}: the answer is not JSON") from None
        return latest(rows_from_records(data, self.url), at)


def csv_source(spec: str, env: Mapping[str, str]) -> MetricSource:
    """`csv:PATH`."""
    return FileSource(f"csv:{spec}", spec, "csv")


def json_source(spec: str, env: Mapping[str, str]) -> MetricSource:
    """`json:PATH`."""
    return FileSource(f"json:{spec}", spec, "json")


def sql_source(spec: str, env: Mapping[str, str]) -> MetricSource:
    """`sql:URL;QUERY` (the URL may be `${env:NAME}` to keep a password out of the command)."""
    url, sep, query = spec.partition(";")
    if not sep or not query.strip():
        raise ValueError("a SQL source is sql:URL;SELECT day, metric, value FROM ...")
    if url.startswith("${env:") and url.endswith("}"):
        name = url[6:-1]
        if name not in env:
            raise ValueError(f"environment variable {name} is not set")
        url = env[name]
    return SqlSource("sql", url, query.strip())


def http_source(spec: str, env: Mapping[str, str]) -> MetricSource:
    """`http:URL` or `https:URL` (the scheme is part of the URL)."""
    return HttpSource(spec, spec)


def open_source(text: str, env: Mapping[str, str]) -> MetricSource:
    """A metric source from `TYPE:SPEC` through the `sop.metric_sources` entry points."""
    kind, sep, spec = text.partition(":")
    if not sep or not spec:
        raise ValueError(f"{text!r}: a metric source is TYPE:SPEC, e.g. csv:metrics.csv")
    if kind in ("http", "https"):
        spec, kind = text, "http"
    found = {e.name: e for e in entry_points(group=GROUP)}
    if kind not in found:
        known = ", ".join(sorted(found)) or "none installed"
        raise ValueError(f"unknown metric source type {kind!r} (known: {known})")
    factory = found[kind].load()
    source: MetricSource = factory(spec, env)
    return source
