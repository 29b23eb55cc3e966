"""Simulation output: a terminal summary (rich) and a self-contained HTML report (inline SVG)."""

from __future__ import annotations

import html
import io
import math
from typing import Any

from ..core.expr import thresholds
from ..core.textsafe import markup
from ..lang.model import Playbook
from .montecarlo import SimResult

KEY_METRICS = ("members", "daily_speak_rate", "retention_d30", "core_members")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def to_text(res: SimResult, console: Any, checkpoints: tuple[int, ...] = (30, 60, 90, 180)) -> None:
    """Gate probabilities, stage timing, metric percentiles, expectations."""
    from rich.table import Table

    o = res.options
    # every string from the playbook or scenario goes through `markup`: literal, on one line
    console.print(
        f"[bold]{markup(res.playbook)}[/] · scenario [bold]{markup(res.scenario.name)}[/]"
        f" · {o.runs} runs × {o.days} days · seed {o.seed}"
    )
    t = Table(title="gates: P(pass by the deadline)", title_justify="left")
    for col in ("stage", "gate", "deadline", "P(pass)", "95% interval", "if entered", "median day"):
        t.add_column(col)
    for g in res.gates:
        t.add_row(
            markup(g.stage),
            markup(g.gate),
            f"{g.deadline_days}d" if g.deadline_days else "—",
            _pct(g.probability),
            f"{_pct(g.interval[0])}–{_pct(g.interval[1])}",
            _pct(g.passed / g.entered) if g.entered else "not entered",
            f"{g.median_day:.0f}" if g.median_day is not None else "—",
        )
    console.print(t)
    for g in res.gates:  # an undefined metric never reads as 0: say why a gate stayed shut
        for note, runs in g.undefined.items():
            console.print(
                f"  gate of [bold]{markup(g.stage)}[/] undecided at its last check in {runs}"
                f" run(s): {markup(note)}"
            )
    t = Table(title="stages", title_justify="left")
    for col in (
        "stage",
        "entered",
        "entered day p5/p50/p95",
        "passed",
        "passed day p50",
        "outcomes",
    ):
        t.add_column(col)
    for sid, s in res.stage_timing().items():
        e, p = s["entered_day"], s["passed_day"]
        t.add_row(
            markup(sid),
            _pct(s["p_entered"]),
            "/".join("—" if e[k] is None else f"{e[k]:.0f}" for k in ("p5", "p50", "p95")),
            str(s["passed"]),
            "—" if p["p50"] is None else f"{p['p50']:.0f}",
            markup(", ".join(f"{k} {v}" for k, v in s["outcomes"].items())),
        )
    console.print(t)
    days = [d for d in checkpoints if d <= o.days]
    t = Table(title="metrics p50 [p5–p95]", title_justify="left")
    t.add_column("metric")
    for d in days:
        t.add_column(f"day {d}")
    units = res.units
    for name in res.metric_names:
        q = res.percentiles(name)
        cells = []
        u = units.get(name, "count")
        for d in days:
            i = min(d, o.days) - 1
            cells.append(f"{_fmt(q[1][i], u)} [{_fmt(q[0][i], u)}–{_fmt(q[2][i], u)}]")
        t.add_row(markup(name), *cells)
    console.print(t)
    if res.expect_failures:
        console.print(f"[bold red]{len(res.expect_failures)} expectation failure(s)[/]")
        for r, d, w in res.expect_failures[:10]:
            console.print(f"  run {r}, day {d}: {markup(w)}")
    else:
        console.print("expectations: all held on every run")
    for w in res.warnings:
        console.print(f"[yellow]warning:[/] {markup(w)}")
    rate = res.member_days / max(res.seconds, 1e-9)
    console.print(f"{res.member_days:,} member-days in {res.seconds:.2f} s ({rate:,.0f}/s)")


def _fmt(x: float, unit: str = "ratio") -> str:
    if math.isnan(x):
        return "undefined"  # in every run that day (engine/program/metrics.py)
    if unit == "ratio":
        return f"{x:.3f}"
    return f"{x:,.0f}" if abs(x) >= 10 or float(x).is_integer() else f"{x:.1f}"


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(
        buf,
        format="svg",
        bbox_inches="tight",
        metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
    )
    text = buf.getvalue()
    return text[text.index("<svg") :]


def fan_chart(res: SimResult, metric: str, pb: Playbook) -> str:
    """A fan chart (p5–p95, p25–p75, median) with gate thresholds on this metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    q = res.percentiles(metric, (5, 25, 50, 75, 95))
    x = np.arange(q.shape[1])
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    ax.fill_between(x, q[0], q[4], alpha=0.18, color="#2563eb", label="p5–p95")
    ax.fill_between(x, q[1], q[3], alpha=0.35, color="#2563eb", label="p25–p75")
    ax.plot(x, q[2], color="#1e3a8a", lw=1.6, label="median")
    for s in pb.stages.values():
        if s.gate and s.gate.node:
            for name, op, value in thresholds(s.gate.node):
                if name == metric:
                    ax.axhline(value, color="#dc2626", ls="--", lw=1)
                    ax.annotate(
                        f"{s.id}: {op} {value:g}",
                        (0, value),
                        fontsize=7,
                        color="#dc2626",
                        va="bottom",
                    )
    ax.set_title(metric, fontsize=10)
    ax.set_xlabel("day")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    svg = _svg(fig)
    plt.close(fig)
    return svg


def timeline_chart(res: SimResult) -> str:
    """Stage entry and pass days across runs (p5–p95 bars, median ticks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timing = res.stage_timing()
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(timing) + 0.8))
    for i, (sid, s) in enumerate(timing.items()):
        e, p = s["entered_day"], s["passed_day"]
        if e["p50"] is None:
            continue
        end = p["p50"] if p["p50"] is not None else res.options.days
        ax.barh(i, end - e["p50"], left=e["p50"], color="#93c5fd", edgecolor="#1e3a8a")
        ax.text(e["p50"], i, f" {sid} ({_pct(s['p_entered'])})", va="center", fontsize=7)
    ax.set_yticks([])
    ax.set_xlim(0, res.options.days)
    ax.set_xlabel("day (median entry → median pass)")
    svg = _svg(fig)
    plt.close(fig)
    return svg


def to_html(res: SimResult, pb: Playbook) -> str:
    """One self-contained HTML file: no scripts, no network, charts as inline SVG."""
    e = html.escape
    metrics = [m for m in KEY_METRICS if m in res.metric_names]
    gated = {
        n
        for s in pb.stages.values()
        if s.gate and s.gate.node
        for n, _, _ in thresholds(s.gate.node)
    }
    metrics += [m for m in sorted(gated) if m not in metrics and m in res.metric_names]
    rows = "".join(
        f"<tr><td>{e(g.stage)}</td><td><code>{e(g.gate)}</code></td>"
        f"<td>{g.deadline_days or '—'}</td><td><b>{_pct(g.probability)}</b></td>"
        f"<td>{_pct(g.interval[0])} – {_pct(g.interval[1])}</td>"
        f"<td>{'—' if g.median_day is None else f'{g.median_day:.0f}'}</td></tr>"
        + "".join(
            f"<tr><td></td><td colspan=5>undecided at its last check in {runs} run(s):"
            f" {e(note)}</td></tr>"
            for note, runs in g.undefined.items()
        )
        for g in res.gates
    )
    fails = "".join(f"<li>run {r}, day {d}: {e(w)}</li>" for r, d, w in res.expect_failures[:50])
    sc = res.scenario.as_dict()
    scenario = "".join(
        f"<tr><th>{e(k)}</th><td><code>{e(str(v))}</code></td></tr>" for k, v in sc.items()
    )
    charts = "".join(f"<figure>{fan_chart(res, m, pb)}</figure>" for m in metrics)
    o = res.options
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>sop simulate · {e(pb.title)}</title>
<style>
body{{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",
sans-serif;margin:2rem;max-width:70rem;color:#111}} table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;font-size:.9rem}}
figure{{display:inline-block;margin:.5rem}} code{{font-size:.85rem}}
</style></head><body>
<h1>{e(pb.title)}</h1>
<p>Playbook <code>{e(pb.id)}</code> v{e(pb.version)} · scenario <b>{e(res.scenario.name)}</b> ·
{o.runs} runs × {o.days} days · seed <b>{o.seed}</b> · {res.member_days:,} member-days in
{res.seconds:.1f} s</p>
<h2>Gates</h2>
<table><tr><th>stage</th><th>gate</th><th>deadline (days)</th><th>P(pass by deadline)</th>
<th>95% interval</th><th>median day</th></tr>{rows}</table>
<h2>Stage timeline</h2><figure>{timeline_chart(res)}</figure>
<h2>Key metrics</h2>{charts}
<h2>Expectations</h2>
{"<ul>" + fails + "</ul>" if fails else "<p>All expectations held on every run.</p>"}
<h2>Scenario</h2><table>{scenario}</table>
</body></html>
"""


def sweep_table(rows: list[tuple[dict[str, Any], SimResult]], console: Any) -> None:
    """Gate probabilities per swept value."""
    from rich.table import Table

    if not rows:
        return
    t = Table(title="sweep: P(gate passes by its deadline)", title_justify="left")
    names = list(rows[0][0])
    for n in names:
        t.add_column(markup(n))
    for g in rows[0][1].gates:
        t.add_column(markup(g.stage))
    for values, res in rows:
        t.add_row(
            *(markup(str(values[n])) for n in names),
            *(
                f"{_pct(g.probability)} [{_pct(g.interval[0])}–{_pct(g.interval[1])}]"
                for g in res.gates
            ),
        )
    console.print(t)
