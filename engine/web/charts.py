"""Charts as inline SVG, drawn on the server: sparklines, forecast bands, stacked tier areas.

Every function returns `Markup` (safe to place in a template): numbers are formatted here and
every text is escaped. Colours are SVG presentation attributes, not `style`, so the page's
Content-Security-Policy can forbid inline styles. Undefined values (None) break a line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

Num = float | None

BAND = "#c7dcf5"
MEDIAN = "#2f6db5"
ACTUAL = "#d9480f"
THRESHOLD = "#2b8a3e"
GRID = "#e3e6ea"
AXIS = "#5c6670"


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _segments(points: Sequence[tuple[float, Num]]) -> list[list[tuple[float, float]]]:
    """Runs of defined points: an undefined value breaks the line."""
    out: list[list[tuple[float, float]]] = []
    run: list[tuple[float, float]] = []
    for x, y in points:
        if y is None or not math.isfinite(y):
            if run:
                out.append(run)
            run = []
        else:
            run.append((x, y))
    if run:
        out.append(run)
    return out


def _nice_range(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """A padded range with 3 to 6 round tick values."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    end = math.ceil(hi / step) * step
    ticks = []
    v = start
    while v <= end + step / 2:
        ticks.append(round(v, 10))
        v += step
    return start, end, ticks


@dataclass(frozen=True)
class Scale:
    """Data to pixels for one axis."""

    d0: float
    d1: float
    p0: float
    p1: float

    def __call__(self, v: float) -> float:
        span = self.d1 - self.d0 or 1.0
        return self.p0 + (v - self.d0) / span * (self.p1 - self.p0)


def sparkline(
    values: Sequence[Num],
    threshold: float | None = None,
    *,
    width: int = 140,
    height: int = 32,
    label: str = "",
) -> Markup:
    """A small line of the last values with the threshold dashed; the latest value dotted."""
    defined = [v for v in values if v is not None and math.isfinite(v)]
    if not defined:
        return Markup(
            f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}"'
            f' height="{height}" role="img" aria-label="{escape(label)}"></svg>'
        )
    lo = min([*defined, *([threshold] if threshold is not None else [])])
    hi = max([*defined, *([threshold] if threshold is not None else [])])
    if hi - lo < 1e-12:
        lo, hi = lo - 1, hi + 1
    x = Scale(0, max(1, len(values) - 1), 2, width - 4)
    y = Scale(lo, hi, height - 3, 3)
    parts = [
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' role="img" aria-label="{escape(label)}">'
    ]
    if threshold is not None:
        ty = _f(y(threshold))
        parts.append(
            f'<line x1="0" x2="{width}" y1="{ty}" y2="{ty}" stroke="{THRESHOLD}"'
            ' stroke-width="1" stroke-dasharray="3 2"/>'
        )
    for seg in _segments(list(enumerate(values))):
        pts = " ".join(f"{_f(x(i))},{_f(y(v))}" for i, v in seg)
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{MEDIAN}" stroke-width="1.5"'
            ' stroke-linejoin="round"/>'
        )
    last = max(i for i, v in enumerate(values) if v is not None and math.isfinite(v))
    lv = values[last]
    assert lv is not None
    parts.append(f'<circle cx="{_f(x(last))}" cy="{_f(y(lv))}" r="2.5" fill="{ACTUAL}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def forecast_chart(
    days: Sequence[int],
    p5: Sequence[Num],
    p50: Sequence[Num],
    p95: Sequence[Num],
    actual: Sequence[tuple[int, float]],
    *,
    threshold: float | None,
    day_label: Callable[[int], str],
    fmt: Callable[[float], str],
    label: str,
    legend: Sequence[str] = (),
    width: int = 720,
    height: int = 260,
) -> Markup:
    """The forecast band (p5–p95), its median, the actual values and the gate threshold.

    `days` are the forecast's day numbers (0: the first day); `actual` holds (day, value).
    `legend` names band, median, actual and threshold, in that order.
    """
    left, right, top, bottom = 58, 28, 12, 44
    xs = [float(d) for d in days] + [float(d) for d, _ in actual]
    if not xs:
        xs = [0.0, 1.0]
    x = Scale(min(xs), max(max(xs), min(xs) + 1), left, width - right)
    ys = [v for seq in (p5, p50, p95) for v in seq if v is not None and math.isfinite(v)]
    ys += [v for _, v in actual if math.isfinite(v)]
    if threshold is not None:
        ys.append(threshold)
    lo, hi, ticks = _nice_range(min(ys, default=0.0), max(ys, default=1.0))
    y = Scale(lo, hi, height - bottom, top)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(label)}</title>",
    ]
    for t in ticks:
        ty = _f(y(t))
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{ty}" y2="{ty}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{ty}" dy="0.32em" text-anchor="end" font-size="11"'
            f' fill="{AXIS}">{escape(fmt(t))}</text>'
        )
    d0, d1 = int(x.d0), int(x.d1)
    step = max(1, round((d1 - d0) / 6 / 7) * 7) if d1 - d0 > 14 else max(1, (d1 - d0) // 6 or 1)
    for d in range(d0, d1 + 1, step):
        tx = _f(x(d))
        out.append(
            f'<line x1="{tx}" x2="{tx}" y1="{height - bottom}" y2="{height - bottom + 4}"'
            f' stroke="{AXIS}"/><text x="{tx}" y="{height - bottom + 16}" text-anchor="middle"'
            f' font-size="11" fill="{AXIS}">{escape(day_label(d))}</text>'
        )
    # the band: one polygon per run of days where both ends are defined
    runs: list[list[tuple[float, tuple[float, float]]]] = []
    run: list[tuple[float, tuple[float, float]]] = []
    for day, lo_v, hi_v in zip(days, p5, p95, strict=False):
        if lo_v is None or hi_v is None or not (math.isfinite(lo_v) and math.isfinite(hi_v)):
            if run:
                runs.append(run)
            run = []
            continue
        run.append((float(day), (lo_v, hi_v)))
    if run:
        runs.append(run)
    for r in runs:
        upper = " ".join(f"{_f(x(d))},{_f(y(h))}" for d, (_, h) in r)
        lower = " ".join(f"{_f(x(d))},{_f(y(lo_))}" for d, (lo_, _) in reversed(r))
        out.append(f'<polygon class="band" points="{upper} {lower}" fill="{BAND}"/>')
    for seg in _segments(list(zip([float(d) for d in days], p50, strict=False))):
        pts = " ".join(f"{_f(x(d))},{_f(y(v))}" for d, v in seg)
        out.append(
            f'<polyline class="median" points="{pts}" fill="none" stroke="{MEDIAN}"'
            ' stroke-width="2"/>'
        )
    if threshold is not None:
        ty = _f(y(threshold))
        out.append(
            f'<line class="threshold" x1="{left}" x2="{width - right}" y1="{ty}" y2="{ty}"'
            f' stroke="{THRESHOLD}" stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
    if actual:
        pts = " ".join(f"{_f(x(d))},{_f(y(v))}" for d, v in actual)
        out.append(
            f'<polyline class="actual" points="{pts}" fill="none" stroke="{ACTUAL}"'
            ' stroke-width="2"/>'
        )
        for d, v in actual[-60:]:
            out.append(
                f'<circle cx="{_f(x(d))}" cy="{_f(y(v))}" r="2.2" fill="{ACTUAL}">'
                f"<title>{escape(day_label(d))}: {escape(fmt(v))}</title></circle>"
            )
        now_x = _f(x(actual[-1][0]))
        out.append(
            f'<line x1="{now_x}" x2="{now_x}" y1="{top}" y2="{height - bottom}" stroke="{ACTUAL}"'
            ' stroke-width="0.8" stroke-dasharray="2 3"/>'
        )
    # legend along the bottom
    if legend:
        colors = [(BAND, "rect"), (MEDIAN, "line"), (ACTUAL, "line"), (THRESHOLD, "dash")]
        lx = float(left)
        ly = height - 10
        for (color, shape), text in zip(colors, legend, strict=False):
            if shape == "rect":
                out.append(
                    f'<rect x="{_f(lx)}" y="{ly - 8}" width="16" height="10" fill="{color}"/>'
                )
            else:
                dash = ' stroke-dasharray="4 3"' if shape == "dash" else ""
                out.append(
                    f'<line x1="{_f(lx)}" x2="{_f(lx + 16)}" y1="{ly - 3}" y2="{ly - 3}"'
                    f' stroke="{color}" stroke-width="2"{dash}/>'
                )
            out.append(
                f'<text x="{_f(lx + 21)}" y="{ly}" font-size="11" fill="{AXIS}">'
                f"{escape(text)}</text>"
            )
            lx += 30 + 6.5 * _width(text)
    out.append("</svg>")
    return Markup("".join(out))


def _width(text: str) -> float:
    """Rough advance of a text in units of a Latin character (CJK counts double)."""
    return sum(2.0 if ord(c) > 0x2E80 else 1.0 for c in text)


def stacked_area(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    label: str,
    width: int = 720,
    height: int = 240,
) -> Markup:
    """Areas stacked bottom-up (name, values per label, colour), with a legend."""
    left, right, top, bottom = 58, 28, 12, 44
    n = len(labels)
    totals = [sum(s[1][i] for s in series) for i in range(n)]
    lo, hi, ticks = _nice_range(0.0, max(totals, default=1.0) or 1.0)
    x = Scale(0, max(1, n - 1), left, width - right)
    y = Scale(lo, hi, height - bottom, top)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}"><title>{escape(label)}</title>'
    ]
    for t in ticks:
        ty = _f(y(t))
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{ty}" y2="{ty}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{ty}" dy="0.32em" text-anchor="end" font-size="11"'
            f' fill="{AXIS}">{escape(_count(t))}</text>'
        )
    step = max(1, math.ceil(n / 7))
    for i in range(0, n, step):
        tx = _f(x(i))
        out.append(
            f'<text x="{tx}" y="{height - bottom + 16}" text-anchor="middle" font-size="11"'
            f' fill="{AXIS}">{escape(labels[i])}</text>'
        )
    base = [0.0] * n
    for name, values, color in series:
        top_line = [base[i] + values[i] for i in range(n)]
        if n == 1:
            xs = [x(0) - 4, x(0) + 4]
            up = [top_line[0]] * 2
            down = [base[0]] * 2
        else:
            xs = [x(i) for i in range(n)]
            up, down = top_line, base
        upper = " ".join(f"{_f(a)},{_f(y(b))}" for a, b in zip(xs, up, strict=True))
        lower = " ".join(
            f"{_f(a)},{_f(y(b))}" for a, b in reversed(list(zip(xs, down, strict=True)))
        )
        out.append(
            f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.85">'
            f"<title>{escape(name)}</title></polygon>"
        )
        base = top_line
    lx = float(left)
    for name, _, color in series:
        out.append(
            f'<rect x="{_f(lx)}" y="{height - 18}" width="12" height="10" fill="{color}"/>'
            f'<text x="{_f(lx + 17)}" y="{height - 9}" font-size="11" fill="{AXIS}">'
            f"{escape(name)}</text>"
        )
        lx += 30 + 6.5 * _width(name)
    out.append("</svg>")
    return Markup("".join(out))


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    label: str,
    width: int = 720,
    height: int = 110,
) -> Markup:
    """Bars, one per day (new members per day), on the same margins as `stacked_area`."""
    left, right, top, bottom = 58, 28, 8, 24
    n = len(values)
    lo, hi, ticks = _nice_range(0.0, max(values, default=0.0) or 1.0)
    y = Scale(lo, hi, height - bottom, top)
    slot = (width - left - right) / max(1, n)
    out = [
        f'<svg class="bars" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}"><title>{escape(label)}</title>'
    ]
    for t in (ticks[0], ticks[-1]):
        ty = _f(y(t))
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{ty}" y2="{ty}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{ty}" dy="0.32em" text-anchor="end" font-size="11"'
            f' fill="{AXIS}">{escape(_count(t))}</text>'
        )
    step = max(1, math.ceil(n / 7))
    for i, v in enumerate(values):
        x0 = left + i * slot
        h = y(0) - y(v)
        out.append(
            f'<rect x="{_f(x0 + slot * 0.15)}" y="{_f(y(v))}" width="{_f(max(1.0, slot * 0.7))}"'
            f' height="{_f(h)}" fill="{MEDIAN}"><title>{escape(labels[i])}: {_count(v)}</title>'
            "</rect>"
        )
        if i % step == 0:
            out.append(
                f'<text x="{_f(x0 + slot / 2)}" y="{height - 8}" text-anchor="middle"'
                f' font-size="11" fill="{AXIS}">{escape(labels[i])}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))


def _count(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1 or v == 0 else f"{v:g}"
