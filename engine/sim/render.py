"""Simulation output: a terminal summary (rich) and a self-contained HTML report (inline SVG).

Both say the same things (engine/sim/summary.py decides them): per gate, P(pass by its deadline)
with its 95 % interval — a range while runs are undecided at the horizon, never a 0 % that only
means "not reached" — the same given the stage was entered, the late passes, and which
comparison fell short; per expectation, the share of runs that broke it against the exit code's
tolerance; which part of each interval's spread is parameter uncertainty and which Monte Carlo
error (uncertainty.py), or that the intervals hold Monte Carlo error only. The HTML report adds
calendar dates, charts, the sensitivity of each gate to the drawn parameters and the scenario's
assumptions.
"""

from __future__ import annotations

import html
import io
import itertools
import math
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Any

from ..core.language import HTML_LANG, text_language
from ..core.textsafe import markup
from ..lang.model import Playbook
from ..program import DEFAULT_START  # day 0 of a result built without its start (tests)
from ..program.gates import comparisons
from .montecarlo import GateResult, SimResult
from .parameters import RETENTION_PARAMETERS
from .summary import EXPECT_TOLERANCE, WORDS, Bounded, GateOutcome, Share

KEY_METRICS = ("members", "daily_speak_rate", "retention_d30", "core_members")
# how each outcome is drawn in the report's outcome bars, decided first to undecided last
COLOURS = {
    GateOutcome.ON_TIME: "#16a34a",
    GateOutcome.LATE: "#f59e0b",
    GateOutcome.FAILED: "#dc2626",
    GateOutcome.OVERDUE: "#9a3412",
    GateOutcome.OPEN: "#94a3b8",
    GateOutcome.PENDING: "#cbd5e1",
    GateOutcome.NOT_TAKEN: "#e5e7eb",
}
_OPS = {">=": "≥", "<=": "≤", "!=": "≠", "==": "=", ">": ">", "<": "<"}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _interval(lo: float, hi: float) -> str:
    return f"[{100 * lo:.1f}–{100 * hi:.1f}]"


def bounded(b: Bounded, sep: str = " ") -> str:
    """`76.8% [72.4–80.6]`; a range `10.0–55.0% [...]` while runs are undecided; or `undecided`."""
    if b.n == 0:
        return "not entered"
    if b.k == 0 and b.undecided == b.n:
        return "undecided"
    lo, hi = b.interval
    if b.decided:
        return f"{_pct(b.low)}{sep}{_interval(lo, hi)}"
    return f"{100 * (b.low or 0):.1f}–{_pct(b.high)}{sep}{_interval(lo, hi)}"


def share(s: Share) -> str:
    """`93 of 400 (23.3% [19.4–27.6])`."""
    if not s.n:
        return "—"
    return f"{s.k} of {s.n} ({_pct(s.p)} {_interval(*s.interval)})"


def start_of(res: SimResult) -> date:
    """The date of simulated day 0."""
    return res.start or DEFAULT_START


def day_date(res: SimResult, day: float | None) -> str:
    """`2027-01-12` for a simulated day (rounded), or `—`."""
    if day is None or math.isnan(day):
        return "—"
    return (start_of(res) + timedelta(days=round(day))).isoformat()


def _fmt(x: float, unit: str = "ratio") -> str:
    if math.isnan(x):
        return "undefined"  # in every run that day (engine/program/metrics.py)
    if unit == "ratio":
        return f"{x:.3f}"
    return f"{x:,.0f}" if abs(x) >= 10 or float(x).is_integer() else f"{x:.1f}"


def _value(x: float, unit: str) -> str:
    """A threshold or a shortfall as a reader writes it: ratios in percent."""
    if unit == "ratio":
        return f"{100 * x:.3g}%"
    return f"{x:,.4g}"


# -- text -----------------------------------------------------------------------------------------


def to_text(
    res: SimResult,
    console: Any,
    checkpoints: tuple[int, ...] = (30, 60, 90, 180),
    *,
    min_probability: float | None = None,
    expect_tolerance: float = EXPECT_TOLERANCE,
) -> None:
    """Gate outcomes and probabilities, stage timing, metric percentiles, expectations, verdict."""
    o = res.options
    first = start_of(res)
    # every string from the playbook or scenario goes through `markup`: literal, on one line
    console.print(
        f"[bold]{markup(res.playbook)}[/] · scenario [bold]{markup(res.scenario.name)}[/]"
        f" · {o.runs} runs × {o.days} days from {first} · seed {o.seed}"
    )
    t = _table("gates: P(pass by the deadline)")
    t.add_column("stage", overflow="fold")
    t.add_column("deadline")
    for col in ("P\n[95%]", "if entered\n[95%]"):  # an interval is never cut
        t.add_column(col, no_wrap=True, min_width=12)
    t.add_column("runs late ·\nmissed · undecided")
    t.add_column("median\nday")
    for g in res.gates:
        missed = g.count(GateOutcome.FAILED, GateOutcome.OVERDUE)
        t.add_row(
            markup(g.stage),
            f"{g.deadline_days}d" if g.deadline_days is not None else "—",
            bounded(g.by_deadline, "\n"),
            bounded(g.if_entered, "\n"),
            f"{g.late.k} · {missed} · {g.undecided}",
            f"{g.median_day:.0f}" if g.median_day is not None else "—",
        )
    console.print(t)
    console.print(
        "  (missed: failed at the deadline, or past it and still open; a range while runs are"
        " undecided at the horizon: its low end counts them as missing the deadline, its high"
        " end as passing; [95%] is the Wilson interval around both ends)"
    )
    for g in res.gates:
        for line in gate_lines(res, g):
            console.print(f"  {markup(line)}")
    t = _table("stages")
    for col in (
        "stage",
        "entered [95%]",
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
            f"{_pct(s['p_entered'])}\n{_interval(*s['p_entered_interval95'])}",
            "/".join("—" if e[k] is None else f"{e[k]:.0f}" for k in ("p5", "p50", "p95")),
            str(s["passed"]),
            "—" if p["p50"] is None else f"{p['p50']:.0f}",
            markup(stage_outcomes(s)),
        )
    console.print(t)
    exits_text(res, console)
    days = [d for d in checkpoints if d <= o.days] or [o.days]  # a short horizon: its last day
    t = _table("metrics p50 [p5–p95]")
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
    uncertainty_text(res, console)
    forecasts_text(res, console, checkpoints)
    ex = res.expectations(expect_tolerance)
    if res.expect_failures:
        colour = "bold red" if ex.exceeds else "yellow"
        console.print(f"[{colour}]expectations: {expect_words(res, expect_tolerance)}[/]")
        for r, d, w in res.expect_failures[:10]:
            console.print(f"  run {r}, day {d} ({day_date(res, d)}): {markup(w)}")
    else:
        console.print(f"expectations: {expect_words(res, expect_tolerance)}")
    for w in res.warnings:
        console.print(f"[yellow]warning:[/] {markup(w)}")
    rate = res.member_days / max(res.seconds, 1e-9)
    console.print(f"{res.member_days:,} member-days in {res.seconds:.2f} s ({rate:,.0f}/s)")
    reasons = res.verdict(min_probability, expect_tolerance)
    if reasons:
        console.print("[bold red]exit 1:[/] " + markup("; ".join(reasons)))


# -- parameter uncertainty against Monte Carlo error (uncertainty.py) ------------------------------

POINT_VALUES = (
    "every scenario parameter is a point value, an assumption rather than a measurement: the"
    " intervals hold Monte Carlo error only (the randomness of the runs), not what a wrong"
    " parameter would change. Give distributions (`retention.beta: {mean: 1.5, sd: 0.3}`) or"
    " `retention.draws` from `sop calibrate community --bootstrap` to include it"
)


def drawn_parameters(res: SimResult) -> list[tuple[str, str]]:
    """(path, its distribution in words) of each parameter the runs draw."""
    sc = res.scenario
    out = [(path, d.words()) for path, d in sorted(sc.uncertain.items())]
    joint = sc.joint_draws()
    if joint is not None:
        out.append(("retention.draws", joint.words()))
    return out


def uncertainty_metrics(res: SimResult, split: dict[str, Any]) -> list[str]:
    """The metrics the uncertainty section shows: the key ones, else the first few."""
    shown = [m for m in KEY_METRICS if m in split]
    return shown or list(split)[:4]


def _sd(variance: float | None) -> float:
    return math.sqrt(variance) if variance is not None and variance > 0 else 0.0


def uncertainty_text(res: SimResult, console: Any) -> None:
    """Which part of each gate's and key metric's spread is parameter uncertainty, which Monte
    Carlo error; or that the intervals hold Monte Carlo error only."""
    u = res.uncertainty or {}
    drawn = drawn_parameters(res)
    if not drawn:
        console.print(f"uncertainty: {markup(POINT_VALUES)}")
        return
    console.print(
        f"uncertainty: {u.get('draws', 0)} draws of the parameters below, each shared by"
        f" {u.get('runs_per_draw', 2)} runs:"
    )
    for path, words in drawn:
        console.print(f"  {markup(path)}: {markup(words)}")
    if u.get("note"):
        console.print(f"  ({markup(u['note'])})")
        return
    t = _table("gates: P(pass by the deadline) by source of uncertainty")
    t.add_column("stage", overflow="fold")
    for col in (
        "P",
        "95% interval\n(Monte Carlo)",
        "P over the\ndraws, 90%",
        "variance from\nparameters",
    ):
        t.add_column(col, no_wrap=True)
    undecided = []
    for g in u.get("gates", []):
        share = g.get("parameter_share")
        if g.get("undecided_runs"):
            undecided.append(f"{g['stage']} ({g['undecided_runs']})")
        if g.get("undecided_runs", 0) >= res.options.runs:
            t.add_row(markup(g["stage"]), "undecided", "—", "—", "—")
            continue
        t.add_row(
            markup(g["stage"]) + ("*" if g.get("undecided_runs") else ""),
            _pct(g["p_pass"]),
            _interval(*g["monte_carlo_interval95"]),
            _interval(*g["parameter_range90"]),
            "—" if share is None else f"{share:.0%}",
        )
    console.print(t)
    if undecided:
        console.print(
            "  * runs undecided at the horizon, counted here as not passing: "
            + markup(", ".join(undecided))
        )
    metrics = u.get("metrics", {})
    split = metrics.get("split", {})
    if split:
        day = metrics.get("day", res.options.days - 1)
        t = _table(f"metrics at the horizon (day {day}): run-to-run spread by source")
        t.add_column("metric")
        for col in (
            "mean",
            "sd from\nparameters",
            "sd from\nMonte Carlo",
            "variance from\nparameters",
        ):
            t.add_column(col, no_wrap=True)
        for name in uncertainty_metrics(res, split):
            m = split[name]
            unit = res.units.get(name, "count")
            v = m["variance"]
            share = m.get("parameter_share")
            t.add_row(
                markup(name),
                _fmt(m["mean"], unit),
                _fmt(_sd(v["parameters"]), unit),
                _fmt(_sd(v["monte_carlo"]), unit),
                "—" if share is None else f"{share:.0%}",
            )
        console.print(t)
    console.print(
        "  (P is the probability averaged over the drawn parameters; the 95% interval is its"
        " Monte Carlo error, how far another seed could move it, which more --runs narrow"
        " (wider than if the runs were independent: the runs of a pair share a draw)."
        ' "P over the draws" is where the probability lies for 90% of the'
        " parameter draws: how much the uncertain parameters move it. A wide range beside a"
        " narrow interval: more runs will not help, better knowledge of the parameters will;"
        " `--sensitivity` says which parameter matters)"
    )


def condition(g: GateResult) -> str:
    """The gate as written, with its `for:` days: `core_members >= 500 (for 7d)`."""
    return g.gate if g.for_days is None else f"{g.gate} (for {g.for_days}d)"


def _table(title: str) -> Any:
    """A compact table: 80 columns hold a gate's row without cutting an interval."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    # escaped: rich would read `[p5–p95]` as a style and drop it
    return Table(
        title=escape(title),
        title_justify="left",
        box=box.SIMPLE,
        padding=(0, 1, 0, 0),
        show_edge=False,
    )


def gate_lines(res: SimResult, g: GateResult) -> list[str]:
    """What a gate's row cannot hold: its condition, undecided runs, late passes, shortfalls,
    undefined notes."""
    deadline = "no deadline" if g.deadline_days is None else f"deadline {g.deadline_days}d"
    out = [f"gate of {g.stage}: {condition(g)}, {deadline}"]
    units = res.units
    if g.undecided:
        open_, pending = g.count(GateOutcome.OPEN), g.count(GateOutcome.PENDING)
        parts = [f"{n} {w}" for n, w in ((open_, "still open"), (pending, "not reached")) if n]
        out.append(
            f"gate of {g.stage}: undecided in {g.undecided} of {g.runs} runs at the horizon"
            f" (day {res.options.days}: {', '.join(parts)}); simulate more --days to decide"
        )
    if g.late.k:
        out.append(
            f"gate of {g.stage}: passed late in {share(g.late)} runs, a median of"
            f" {g.median_days_late:.0f} days after the deadline (extended or alert-only)"
        )
    for s in g.shortfalls:
        if not (s.false or s.undefined):
            continue
        by = "" if s.median_shortfall is None else f", by a median of {_gap(s, units)}"
        und = f"; no value in {s.undefined}" if s.undefined else ""
        out.append(
            f"gate of {g.stage}: `{s.clause}` fell short"
            f" in {share(s.share)} runs that missed the deadline or are open"
            f" at the horizon{by}{und}"
        )
    for note, runs in g.undefined.items():
        out.append(f"gate of {g.stage}: undecided at its last check in {runs} run(s): {note}")
    return out


def stage_outcomes(s: dict[str, Any]) -> str:
    """`passed 400`, `not reached 400 (path not taken)`, `not reached 12 (within the horizon)`."""
    parts = []
    nr = s.get("not_reached", {})
    for k, v in s["outcomes"].items():
        if k != "not reached":
            parts.append(f"{k} {v}")
    if nr.get("within_horizon"):
        parts.append(f"not reached yet {nr['within_horizon']}")
    if nr.get("path_not_taken"):
        parts.append(f"path not taken {nr['path_not_taken']}")
    if "not reached" in s["outcomes"] and not nr:
        parts.append(f"not reached {s['outcomes']['not reached']}")
    return ", ".join(parts)


def expect_words(res: SimResult, tolerance: float) -> str:
    """`held on every run`, or `broken in 1 of 400 runs (0.3% [0.0–1.4]) ...`."""
    ex = res.expectations(tolerance)
    if not ex.broken.k:
        return "all held on every run"
    verdict = (
        "more than the tolerance: exit 1"
        if ex.exceeds
        else "within the tolerance: reported, exit 0"
    )
    return (
        f"broken in {share(ex.broken)} runs; tolerance {tolerance:.1%} of runs,"
        f" judged on the interval's lower end ({verdict})"
    )


# -- the forecasts of issue 12: exits, targets, incidents, segments, channels, workload ------------

# how a run that left a stage by none of its exits ended the horizon (engine/program/lifecycle.py)
OTHER_WORDS = {
    "running": "still in the stage at the horizon",
    "not entered": "never entered",
    "deadline": "ended at its deadline",
    "aborted": "aborted",
    "timeboxed": "ended at its maximum duration",
}


def forecast_doc(res: SimResult) -> dict[str, Any]:
    """The forecasts' keys of the JSON document (`exits` … `workload`), the numbers both
    outputs show; empty for a result without them."""
    f = res.forecasts
    if f is None or f.playbook is None:
        return {}
    return f.as_dict()


def run_share(d: dict[str, Any], sep: str = " ") -> str:
    """`99.0% [94.5–99.8]` of a share's plain data (`RunShare.as_dict`)."""
    return f"{_pct(d['p'])}{sep}{_interval(*d['interval95'])}"


def spread(q: dict[str, Any], unit: str = "count") -> str:
    """`24 [18–31]`: the p50 and [p5–p95] of a distribution, or `—` without values."""
    if q.get("p50") is None:
        return "—"
    if unit == "ratio":
        return f"{_pct(q['p50'])} [{100 * q['p5']:.1f}–{100 * q['p95']:.1f}]"
    return f"{_fmt(q['p50'], unit)} [{_fmt(q['p5'], unit)}–{_fmt(q['p95'], unit)}]"


def _day(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f}"


def checkpoint_days(res: SimResult, checkpoints: Sequence[int]) -> list[int]:
    """The checkpoints within the horizon, and the horizon itself."""
    days = [d for d in checkpoints if 0 < d <= res.options.days]
    return days if res.options.days in days else [*days, res.options.days]


def at_day(series: dict[str, Any], day: int) -> dict[str, Any]:
    """p5/p50/p95 of a daily series (`daily_percentiles`) at the close of `day` (1-based, as
    the metrics table reads it: day 30 is the 30th day)."""
    i = series["days"].index(day - 1) if day - 1 in series["days"] else None
    return {q: None if i is None else series[q][i] for q in ("p5", "p50", "p95")}


def branching(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages with a choice of exits (one exit is its gate, in the gates table)."""
    return [x for x in doc.get("exits", []) if len(x["exits"]) > 1]


def leads_to(res: SimResult, stage: str, goto: str | None) -> str:
    """Where an exit leads: its `goto`, else the stages `after:` this one (or the end)."""
    if goto is not None:
        return goto
    pb = res.forecasts.playbook if res.forecasts is not None else None
    nxt = (
        [t.id for t in pb.stages.values() if stage in t.after and not t.rescue and not t.optional]
        if pb is not None
        else []
    )
    return ", ".join(nxt) if nxt else "the end"


def exit_rows(res: SimResult, x: dict[str, Any]) -> list[tuple[str, str, Share, Share | None]]:
    """(exit, where it leads, runs that left by it of all runs, of the runs that entered) of a
    stage's exits, then the runs that left by none, by how they ended (no `if entered`)."""
    rows: list[tuple[str, str, Share, Share | None]] = []
    for e in x["exits"]:
        deff = e.get("if_entered_design_effect") or 1.0
        entered = Share(e["runs"], x["entered"], deff) if x["entered"] else None
        of_all = Share(e["runs"], e["of"], e.get("design_effect", 1.0))
        rows.append((e["exit"], leads_to(res, x["stage"], e["goto"]), of_all, entered))
    deffs = x.get("other_design_effect", {})
    for k, v in x["other"].items():
        rows.append(("", OTHER_WORDS.get(k, k), Share(v, x["runs"], deffs.get(k, 1.0)), None))
    return rows


def _share_cell(s: Share | None, sep: str = " ") -> str:
    return "—" if s is None or not s.n else f"{_pct(s.p)}{sep}{_interval(*s.interval)}"


def _shortfall(t: dict[str, Any], units: dict[str, str]) -> str:
    """The median shortfall of the runs that missed a target: a count or percentage points."""
    gap = t["shortfall"].get("p50")
    if gap is None:
        return "—"
    if units.get(t["metric"], "count") == "ratio":
        return f"{100 * gap:.2g} pp"
    return f"{gap:,.4g}"


def target_text(t: dict[str, Any], units: dict[str, str]) -> str:
    """`members >= 400 by day 120`, `trial_rate >= 30%`."""
    op = "<=" if t["at_most"] else ">="
    by = f" by day {t['due_day']}" if " by " in t["goal"] else ""
    return f"{t['metric']} {op} {_value(t['value'], units.get(t['metric'], 'count'))}{by}"


def judged_on(res: SimResult, t: dict[str, Any]) -> str:
    """The calendar day at whose close a target is judged (the horizon's when `by` lies past)."""
    when = day_date(res, t["judged_day"])
    return f"{when} (horizon)" if t["beyond_horizon"] else when


def workload_cells(w: dict[str, Any]) -> tuple[str, str, str, str]:
    """(tasks a day p50 · p95, peak day, share of days above capacity, its days per run)."""
    per = w.get("tasks_per_day", {})
    tasks = (
        "—"
        if per.get("p50") is None
        else f"{_fmt(per['p50'], 'count')} · {_fmt(per['p95'], 'count')}"
    )
    share_over = w.get("share_of_days_over")
    days = w.get("days_over", {})
    return (
        tasks,
        spread(w["peak"]),
        _pct_small(share_over),
        spread(days),
    )


def forecasts_text(res: SimResult, console: Any, checkpoints: Sequence[int]) -> None:
    """The forecasts' tables, each only when the playbook has what it forecasts."""
    from rich.markup import escape

    doc = forecast_doc(res)
    if not doc:
        return
    units = res.units
    days = checkpoint_days(res, checkpoints)
    if doc["targets"]:
        t = _table("targets: P(met on the day it is judged)")
        t.add_column("target", overflow="fold")
        t.add_column("judged at\nthe close of")
        for col in ("met that\nday [95%]", "met on some\nday by then"):
            t.add_column(col, no_wrap=True, min_width=12)
        t.add_column("first\nday p50")
        t.add_column("short\nby p50")
        for x in doc["targets"]:
            t.add_row(
                markup(target_text(x, units)),
                judged_on(res, x).replace(" ", "\n"),
                run_share(x["p_met"], "\n"),
                run_share(x["p_reached"], "\n"),
                _day(x["p_reached"]["median_day"]),
                _shortfall(x, units),
            )
        console.print(t)
        console.print(
            "  (short by: the median shortfall of the runs that missed it that day; first day:"
            " the median first day it was met, among the runs that met it)"
        )
        for x in doc["targets"]:
            if x["undefined_runs"]:
                console.print(
                    f"  target {markup(target_text(x, units))}: no value in"
                    f" {x['undefined_runs']} runs on that day (counted as not met)"
                )
    if doc["incidents"]:
        t = _table("incidents: P(detect: holds on some day within the horizon)")
        t.add_column("incident", overflow="fold")
        t.add_column("detect", overflow="fold", ratio=1)
        t.add_column("P [95%]", no_wrap=True, min_width=12)
        t.add_column(escape("first day\np50 [p5–p95]"))
        t.add_column("days it\nheld p50")
        for x in doc["incidents"]:
            t.add_row(
                markup(x["incident"]),
                markup(x["detect"]),
                run_share(x["triggered"], "\n"),
                spread(x["first_day"]),
                _day(x["days_triggered"]["p50"]),
            )
        console.print(t)
    if doc["segments"]:
        t = _table("segments: members p50 [p5–p95]")
        t.add_column("segment", overflow="fold")
        for d in days:
            t.add_column(f"day {d}")
        for name, series in doc["segments"].items():
            t.add_row(markup(name), *(spread(at_day(series, d)) for d in days))
        console.print(t)
    channels = _shown_channels(doc)
    if channels:
        t = _table(f"channels: joins over the {res.options.days} days, p50 [p5–p95]")
        t.add_column("channel", overflow="fold")
        t.add_column("joins")
        t.add_column("share of joins")
        t.add_column("planned\nshare")
        t.add_column("p50 vs\nplanned")
        for name, c in channels.items():
            t.add_row(markup(name), spread(c["joins"]), spread(c["share"], "ratio"), *_plan(c))
        console.print(t)
    by_channel = doc["channels"].get("metrics", {}) if doc["channels"] else {}
    if by_channel:
        t = _table("metrics by channel p50 [p5–p95]")
        t.add_column("metric · channel", overflow="fold")
        for d in days:
            t.add_column(f"day {d}")
        for metric, rows in _by_channel(by_channel, channels):
            t.add_row(markup(metric), *("" for _ in days))
            u = units.get(metric, "count")
            for channel, series in rows:
                t.add_row(f"  {markup(channel)}", *(spread(at_day(series, d), u) for d in days))
        console.print(t)
    if doc["workload"]:
        t = _table("staff workload: tasks a day per role")
        t.add_column("role", overflow="fold")
        t.add_column("capacity\na day")
        t.add_column("tasks a\nday p50 · p95")
        t.add_column(escape("busiest day\np50 [p5–p95]"))
        t.add_column("share of\ndays over")
        t.add_column("runs with a day\nover [95%]", no_wrap=True, min_width=12)
        for role, w in doc["workload"].items():
            tasks, peak, share_over, _ = workload_cells(w)
            t.add_row(
                markup(role),
                f"{w['capacity']:g}",
                tasks,
                peak,
                share_over,
                run_share(w["over_capacity"], "\n"),
            )
        console.print(t)
        console.print(
            "  (tasks a day and days over capacity: over every day of every run; capacity:"
            " headcount × tasks a person a day)"
        )


def _shown_channels(doc: dict[str, Any]) -> dict[str, Any]:
    """The channels worth a row: declared ones, and `organic` when some run had joins by it."""
    chans = doc["channels"].get("channels", {}) if doc.get("channels") else {}
    return {n: c for n, c in chans.items() if c["declared"] or (c["joins"].get("p95") or 0) > 0}


def _by_channel(
    metrics: dict[str, Any], shown: dict[str, Any]
) -> list[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """`metric[channel]` series grouped by metric, for the channels shown."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, series in metrics.items():
        metric, _, channel = name.partition("[")
        channel = channel.removesuffix("]")
        if channel in shown:
            out.setdefault(metric, []).append((channel, series))
    return list(out.items())


def _plan(c: dict[str, Any]) -> tuple[str, str]:
    """(the planned share, the simulated p50's distance from it in percentage points)."""
    planned, p50 = c["planned_share"], c["share"].get("p50")
    if planned is None:
        return "—", "—"
    gap = "—" if p50 is None else f"{100 * (p50 - planned):+.1f} pp"
    return _pct(planned), gap


def exits_text(res: SimResult, console: Any) -> None:
    """Per stage with a choice of exits: P(leaving by each), and how the other runs ended."""
    stages = branching(forecast_doc(res))
    if not stages:
        return
    t = _table("exits: P(a stage is left by each exit)")
    t.add_column("stage", overflow="fold")
    t.add_column("exit → to", overflow="fold")
    for col in ("P\n[95%]", "if entered\n[95%]"):
        t.add_column(col, no_wrap=True, min_width=12)
    t.add_column("median\nday")
    for x in stages:
        medians = {e["exit"]: e["median_day"] for e in x["exits"]}
        for i, (exit_, to, of_all, if_entered) in enumerate(exit_rows(res, x)):
            t.add_row(
                markup(x["stage"]) if i == 0 else "",
                f"{markup(exit_)} → {markup(to)}" if exit_ else f"[italic]{markup(to)}[/]",
                _share_cell(of_all, "\n"),
                _share_cell(if_entered, "\n"),
                _day(medians.get(exit_)) if exit_ else "",
            )
    console.print(t)


# -- charts ---------------------------------------------------------------------------------------


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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # text as glyph outlines: the SVG needs no font (chart text is ids, numbers and dates)
    plt.rcParams["svg.fonttype"] = "path"
    plt.rcParams["svg.hashsalt"] = "sop"  # stable element ids: the same input, the same file
    return plt


def _dates(res: SimResult, days: Iterable[float]) -> Any:
    import numpy as np

    return np.datetime64(start_of(res)) + np.array([round(d) for d in days], dtype="timedelta64[D]")


def _date_axis(ax: Any, res: SimResult) -> None:
    import matplotlib.dates as mdates

    first = _dates(res, [0])[0]
    last = _dates(res, [max(res.options.days - 1, 1)])[0]
    ax.set_xlim(first, last)
    loc = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def stage_markers(res: SimResult) -> list[tuple[str, float, float]]:
    """(stage, median entry day, share of runs entering it) of each stage entered in some run."""
    out = []
    for sid, s in res.stage_timing().items():
        if s["entered_day"]["p50"] is not None:
            out.append((sid, float(s["entered_day"]["p50"]), float(s["p_entered"])))
    return out


def threshold_lines(res: SimResult, metric: str, pb: Playbook) -> list[tuple[str, float, str]]:
    """(op, value, stages) per distinct threshold the gates set on `metric` (a stage whose gate
    reads a window of it says so: `cold-start (avg 7d)`)."""
    found: dict[tuple[str, float], list[str]] = {}
    for s in pb.stages.values():
        if s.gate is None or s.gate.node is None:
            continue
        for c in comparisons(s.gate.node):
            if c.metric == metric and c.threshold is not None:
                stages = found.setdefault((c.op, c.threshold), [])
                who = s.id if c.window is None else f"{s.id} ({c.window[0]} {c.window[1]}d)"
                if who not in stages:
                    stages.append(who)
    return [(op, v, ", ".join(stages)) for (op, v), stages in sorted(found.items(), key=_by_value)]


def _by_value(item: tuple[tuple[str, float], list[str]]) -> float:
    return item[0][1]


def fan_figure(res: SimResult, metric: str, pb: Playbook) -> Any:
    """The fan chart of `metric` as a matplotlib Figure: p5–p95 and p25–p75 bands, the median,
    gate thresholds labelled in the right margin, and the median day each stage starts.

    Labels are placed so that none overlaps another (`place_column`, `place_rows`); their Text
    artists carry gids `threshold-N` and `stage-N`.
    """
    plt = _pyplot()
    import numpy as np
    from matplotlib.ticker import PercentFormatter

    q = res.percentiles(metric, (5, 25, 50, 75, 95))
    x = _dates(res, range(q.shape[1]))
    unit = res.units.get(metric, "count")
    fig = plt.figure(figsize=(6.4, 3.0))
    ax = fig.add_axes((0.1, 0.12, 0.66, 0.66))
    ax.fill_between(x, q[0], q[4], alpha=0.18, color="#2563eb", lw=0)
    ax.fill_between(x, q[1], q[3], alpha=0.35, color="#2563eb", lw=0)
    ax.plot(x, q[2], color="#1e3a8a", lw=1.6)
    lines = threshold_lines(res, metric, pb)
    for _, value, _ in lines:
        ax.axhline(value, color="#dc2626", ls="--", lw=1)
    markers = stage_markers(res)
    for _, day, _ in markers:
        ax.axvline(_dates(res, [day])[0], color="#475569", ls=":", lw=1)
    _date_axis(ax, res)
    if unit == "ratio":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if np.isnan(q).all():
        ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    fig.canvas.draw()  # the limits and the renderer the labels are measured with
    renderer = fig.canvas.get_renderer()
    lo, hi = ax.get_ylim()
    texts = [
        ax.text(
            1.02,
            0.0,
            f"{stages} {_OPS.get(op, op)} {_value(value, unit)}",
            transform=ax.transAxes,
            fontsize=8,
            color="#dc2626",
            va="center",
            ha="left",
            gid=f"threshold-{i}",
        )
        for i, (op, value, stages) in enumerate(lines)
    ]
    place_column(ax, texts, [(v - lo) / (hi - lo) if hi > lo else 0.5 for _, v, _ in lines])
    x0, x1 = (float(v) for v in ax.get_xlim())
    stage_texts = [
        ax.text(
            0.0,
            1.02,
            sid if p >= 0.995 else f"{sid} ({100 * p:.0f}%)",
            transform=ax.transAxes,
            fontsize=8,
            color="#334155",
            va="bottom",
            ha="left",
            gid=f"stage-{i}",
        )
        for i, (sid, _, p) in enumerate(markers)
    ]
    xs = [
        (float(_num(_dates(res, [day])[0])) - x0) / (x1 - x0) if x1 > x0 else 0.0
        for _, day, _ in markers
    ]
    place_rows(ax, stage_texts, xs)
    del renderer
    return fig


def _num(d: Any) -> float:
    import matplotlib.dates as mdates

    return float(mdates.date2num(d))


PAD = 0.01  # axes fraction between two labels


def place_column(ax: Any, texts: Sequence[Any], ys: Sequence[float]) -> None:
    """Put labels at `ys` (axes fraction, their centres), moved apart just enough not to overlap.

    Measured with the figure's renderer; kept inside the axes' height when they fit.
    """
    if not texts:
        return
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    heights = [t.get_window_extent(renderer).height / box.height for t in texts]
    order = sorted(range(len(texts)), key=lambda i: ys[i])
    centre = {i: min(max(ys[i], 0.0), 1.0) for i in order}
    # push up from the bottom, then pull down from the top if the column overflows
    for a, b in itertools.pairwise(order):
        need = centre[a] + (heights[a] + heights[b]) / 2 + PAD
        centre[b] = max(centre[b], need)
    top = order[-1]
    over = centre[top] + heights[top] / 2 - 1.0
    if over > 0:
        centre[top] -= over
        for a, b in itertools.pairwise(order[::-1]):
            need = centre[a] - (heights[a] + heights[b]) / 2 - PAD
            centre[b] = min(centre[b], need)
    for i, t in enumerate(texts):
        t.set_position((t.get_position()[0], centre[i]))


def place_rows(ax: Any, texts: Sequence[Any], xs: Sequence[float]) -> None:
    """Put labels at `xs` (axes fraction, their left edges) above the axes, in as many rows as
    it takes for none to overlap another (a label goes to the first row where it fits)."""
    if not texts:
        return
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    widths = [t.get_window_extent(renderer).width / box.width for t in texts]
    height = max(t.get_window_extent(renderer).height for t in texts) / box.height
    ends: list[float] = []  # right edge of the last label in each row
    for i in sorted(range(len(texts)), key=lambda i: xs[i]):
        x = min(max(xs[i], 0.0), 1.0)
        row = next((r for r, end in enumerate(ends) if x >= end + PAD), len(ends))
        if row == len(ends):
            ends.append(0.0)
        ends[row] = x + widths[i]
        texts[i].set_position((x, 1.02 + row * (height + PAD)))


def fan_chart(res: SimResult, metric: str, pb: Playbook) -> str:
    """The fan chart of `metric` as inline SVG."""
    plt = _pyplot()
    fig = fan_figure(res, metric, pb)
    svg = _svg(fig)
    plt.close(fig)
    return svg


def timeline_figure(res: SimResult, pb: Playbook | None = None) -> Any:
    """Stage rows on a calendar: median entry to median pass (or the horizon), p5–p95 whiskers
    of the entry and pass days, and the median deadline."""
    plt = _pyplot()
    from .summary import deadline_days

    timing = res.stage_timing()
    rows = list(timing.items())
    height = 0.36 * len(rows) + 0.7  # inches: a row per stage and the date axis
    fig = plt.figure(figsize=(8.0, height))
    ax = fig.add_axes((0.2, 0.6 / height, 0.76, 0.36 * len(rows) / height))
    _date_axis(ax, res)  # date units first: the bars below are placed in date numbers
    labels = []
    for i, (sid, s) in enumerate(rows):
        y = len(rows) - 1 - i
        e, p = s["entered_day"], s["passed_day"]
        labels.append(f"{sid} · {_pct(s['p_entered'])}")
        if e["p50"] is None:
            continue
        end = p["p50"] if p["p50"] is not None and s["passed"] * 2 >= s["entered"] else None
        start_d = _num(_dates(res, [e["p50"]])[0])
        stop_d = _num(_dates(res, [end if end is not None else res.options.days - 1])[0])
        ax.barh(
            y,
            max(stop_d - start_d, 0.5),
            left=start_d,
            height=0.55,
            color="#93c5fd" if end is not None else "#e2e8f0",
            edgecolor="#1e3a8a",
            lw=0.8,
        )
        ax.plot(_dates(res, [e["p5"], e["p95"]]), [y, y], color="#1e3a8a", lw=2.2)
        if p["p5"] is not None:
            ax.plot(_dates(res, [p["p5"], p["p95"]]), [y, y], color="#16a34a", lw=2.2)
        dl = deadline_days(pb.stages[sid]) if pb is not None and sid in pb.stages else None
        if dl is not None and e["p50"] + dl < res.options.days:
            ax.plot(_dates(res, [e["p50"] + dl]), [y], marker="|", ms=12, color="#dc2626")
    ax.set_yticks(range(len(rows)), labels[::-1], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


def timeline_chart(res: SimResult, pb: Playbook | None = None) -> str:
    """The stage timeline as inline SVG."""
    plt = _pyplot()
    fig = timeline_figure(res, pb)
    svg = _svg(fig)
    plt.close(fig)
    return svg


# -- HTML -----------------------------------------------------------------------------------------


def playbook_words(pb: Playbook) -> list[str]:
    """The words a reader of the playbook reads: its title, stage titles, templates, texts."""
    words = [pb.title, *(s.title for s in pb.stages.values())]
    words += [t.text for t in pb.templates.values()]
    words += [a.text.text for a in pb.actions.values() if a.text is not None]
    words += [m.description for m in pb.metrics.values() if m.description]
    return [w for w in words if w]


def scenario_rows(res: SimResult) -> list[tuple[str, str, str, str]]:
    """(section, parameter, value, what it means) of every value the scenario sets or defaults
    (none left unset), meanings from the scenario schema's descriptions; a distribution and
    `retention.draws` in words (their shape, mean and 90 % range), not as raw numbers."""
    from ..lang.schema import load_schema

    root = load_schema("scenario.schema.json")
    out = []
    sc = res.scenario
    words = {tuple(p.split(".")): d.words() for p, d in sc.uncertain.items()}
    joint = sc.joint_draws()
    if joint is not None:
        words[("retention", "draws")] = joint.words()
    doc = {k: v for k, v in sc.as_dict().items() if k != "name"}  # in the heading
    takes = RETENTION_PARAMETERS.get(sc.retention.model, ())
    for name in ("c", "early_quit_share"):  # a model without them never reads them
        if name not in takes:
            doc.get("retention", {}).pop(name, None)
    for name in joint.names if joint is not None else ():  # `draws` gives them, not the point
        if ("retention", name) not in words:
            words[("retention", name)] = "drawn from retention.draws (below)"
    for path, value, spec in _flatten(doc, root, root, (), words):
        section, key = (path[0], ".".join(path[1:])) if len(path) > 1 else ("", path[0])
        shown = words.get(path, _plain(value))
        out.append((section, key, shown, str(spec.get("description", ""))))
    return out


def _flatten(
    value: Any,
    spec: dict[str, Any],
    root: dict[str, Any],
    path: tuple[str, ...],
    whole: Any = (),
) -> Iterable[tuple[tuple[str, ...], Any, dict[str, Any]]]:
    """(path, leaf value, its schema) of a nested scenario document; empty and unset skipped;
    the paths in `whole` (distributions) are leaves, however they are written."""
    if path in whole:
        yield path, value, spec
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, _child(spec, k, root), root, (*path, str(k)), whole)
    elif value is not None and value != [] and value != () and path:
        yield path, value, spec


def _child(spec: dict[str, Any], key: str, root: dict[str, Any]) -> dict[str, Any]:
    """The schema of `key` inside `spec` ($ref followed within the document)."""
    spec = _deref(spec, root)
    props = spec.get("properties")
    if isinstance(props, dict) and isinstance(props.get(key), dict):
        return _deref(props[key], root)
    more = spec.get("additionalProperties")
    return _deref(more, root) if isinstance(more, dict) else {}


def _deref(spec: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = spec.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return spec
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return (
        {**node, **{k: v for k, v in spec.items() if k != "$ref"}}
        if isinstance(node, dict)
        else spec
    )


def _plain(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "—"
    return str(v)


def outcome_bar(g: GateResult) -> str:
    """The runs of a gate by outcome: a stacked bar (widths in %) and the counts in words."""
    e = html.escape
    segments = "".join(
        f'<span class="seg" style="width:{100 * g.count(k) / g.runs:.2f}%;'
        f'background:{COLOURS[k]}" title="{e(WORDS[k])}: {g.count(k)}"></span>'
        for k in GateOutcome
        if g.count(k) and g.runs
    )
    words = " · ".join(
        f'<span class="key" style="--c:{COLOURS[k]}">{e(WORDS[k])} {g.count(k)}</span>'
        for k in GateOutcome
        if g.count(k)
    )
    return f'<div class="bar">{segments}</div><div class="small">{words}</div>'


def _gate_rows(res: SimResult, pb: Playbook) -> str:
    e = html.escape
    rows = []
    for g in res.gates:
        st = pb.stages.get(g.stage)
        title = f"<br><span class=small>{e(st.title)}</span>" if st and st.title else ""
        late = (
            f"{_pct(g.late.p)} {_interval(*g.late.interval)}<br><span class=small>{g.late.k} of"
            f" {g.late.n} runs, a median of {g.median_days_late:.0f} days late</span>"
            if g.late.k
            else "0"
        )
        med = (
            "—"
            if g.median_day is None
            else f"{day_date(res, g.median_day)}<br><span class=small>day {g.median_day:.0f}</span>"
        )
        rows.append(
            f'<tr data-stage="{e(g.stage)}"><td><b>{e(g.stage)}</b>{title}</td>'
            f"<td><code>{e(condition(g))}</code></td>"
            f"<td>{'—' if g.deadline_days is None else f'{g.deadline_days} days'}</td>"
            f'<td class="p">{e(bounded(g.by_deadline))}</td>'
            f'<td class="p">{e(bounded(g.if_entered))}</td>'
            f'<td class="p">{late}</td><td class="p">{med}</td>'
            f'<td class="outcomes">{outcome_bar(g)}</td></tr>'
        )
        notes = [line.split(": ", 1)[1] for line in gate_lines(res, g) if "undecided" in line]
        for note in notes:
            rows.append(f'<tr class="note"><td></td><td colspan=7>{e(note)}</td></tr>')
    return "".join(rows)


def _shortfall_tables(res: SimResult) -> str:
    e = html.escape
    out = []
    for g in res.gates:
        shown = [s for s in g.shortfalls if s.checked and (s.false or s.undefined)]
        if not shown:
            continue
        body = "".join(
            f"<tr><td><code>{e(s.clause)}</code></td>"
            f'<td class="p">{e(share(s.share))}</td>'
            f"<td>{e(_gap(s, res.units))}</td>"
            f"<td>{s.undefined}</td></tr>"
            for s in shown
        )
        out.append(
            f'<h3 data-stage="{e(g.stage)}">{e(g.stage)}: <code>{e(condition(g))}</code></h3>'
            f"<p>In the {shown[0].checked} runs that missed the deadline or are still open at the"
            " horizon, read at the deadline's check (or the horizon's last one)"
            + (
                f"; a run can miss with every comparison holding that day, since the gate must"
                f" hold for {g.for_days} days in a row"
                if g.for_days
                else ""
            )
            + ":</p>"
            "<table><tr><th>comparison</th><th>runs in which it fell short [95%]</th>"
            "<th>median shortfall</th><th>runs without a value</th></tr>"
            f"{body}</table>"
        )
    if not out:
        return "<p>Every gate passed by its deadline in every run that reached it.</p>"
    return "".join(out)


def _gap(s: Any, units: dict[str, str]) -> str:
    """A median shortfall: a count, or percentage points of a ratio."""
    if s.median_shortfall is None:
        return "—"
    if units.get(s.base, "count") == "ratio":
        return f"{100 * s.median_shortfall:.2g} percentage points"
    return f"{s.median_shortfall:,.4g}"


def _description(pb: Playbook, metric: str) -> str:
    m = pb.metrics.get(metric)
    return f" — {html.escape(m.description)}" if m is not None and m.description else ""


def _stage_rows(res: SimResult, pb: Playbook) -> str:
    e = html.escape
    rows = []
    for sid, s in res.stage_timing().items():
        st = pb.stages.get(sid)
        title = f"<br><span class=small>{e(st.title)}</span>" if st and st.title else ""
        d = s["entered_day"]
        when = (
            "—"
            if d["p50"] is None
            else f"{day_date(res, d['p50'])}<br><span class=small>p5–p95 {day_date(res, d['p5'])}"
            f" – {day_date(res, d['p95'])}</span>"
        )
        passed = day_date(res, s["passed_day"]["p50"])
        rows.append(
            f"<tr><td><b>{e(sid)}</b>{title}</td>"
            f'<td class="p">{_pct(s["p_entered"])} {_interval(*s["p_entered_interval95"])}</td>'
            f"<td>{when}</td><td>{s['passed']} · {passed}</td>"
            f"<td>{e(stage_outcomes(s))}</td></tr>"
        )
    return "".join(rows)


def _pct_small(x: float | None) -> str:
    """A share that is not zero never reads `0.0%`."""
    if x is not None and 0 < x < 0.0005:
        return "<0.1%"
    return _pct(x)


def _td_share(d: dict[str, Any]) -> str:
    return f'<td class="p">{html.escape(run_share(d))}</td>'


def _html_exits(res: SimResult, doc: dict[str, Any]) -> str:
    e = html.escape
    stages = branching(doc)
    if not stages:
        return ""
    rows = []
    for x in stages:
        medians = {ex["exit"]: ex["median_day"] for ex in x["exits"]}
        body = exit_rows(res, x)
        for i, (exit_, to, of_all, if_entered) in enumerate(body):
            head = (
                f'<td rowspan="{len(body)}"><b>{e(x["stage"])}</b><br><span class=small>'
                f"entered in {x['entered']} of {x['runs']} runs</span></td>"
                if i == 0
                else ""
            )
            what = f"<code>{e(exit_)}</code> → <b>{e(to)}</b>" if exit_ else f"<i>{e(to)}</i>"
            med = medians.get(exit_) if exit_ else None
            when = (
                "—"
                if med is None
                else f"{day_date(res, med)}<br><span class=small>day {med:.0f}</span>"
            )
            rows.append(
                f'<tr data-stage="{e(x["stage"])}" data-exit="{e(exit_)}">{head}<td>{what}</td>'
                f'<td class="p">{e(_share_cell(of_all))}</td>'
                f'<td class="p">{e(_share_cell(if_entered))}</td><td class="p">'
                f"{when if exit_ else ''}</td></tr>"
            )
    return _html_section(
        "Exits",
        "For each stage with a choice of exits, the runs that left it by each exit (of all runs,"
        " and of the runs that entered it), where the exit leads — so dissolution is a forecast"
        " outcome — and how the other runs ended the horizon.",
        ["stage", "exit → leads to", "P [95%]", "if entered [95%]", "median day"],
        rows,
    )


def _html_uncertainty(res: SimResult) -> str:
    """Parameter uncertainty against Monte Carlo error, per gate and key metric, with the drawn
    parameters and which of them moves each gate (or: Monte Carlo error only)."""
    e = html.escape
    drawn = drawn_parameters(res)
    title = "<h2>How sure: parameter uncertainty and Monte Carlo error</h2>"
    if not drawn:
        return (
            f'{title}<p class="caveat">Every scenario parameter is a point value: an assumption,'
            " not a measurement. The 95% intervals in this report hold Monte Carlo error only"
            " (the randomness of the simulated runs), not what a wrong parameter would change."
            " To include parameter uncertainty, give parameters as distributions (for example"
            " <code>retention.beta: {mean: 1.5, sd: 0.3}</code>) or add the"
            " <code>retention.draws</code> that <code>sop calibrate community --bootstrap</code>"
            " writes.</p>"
        )
    u = res.uncertainty or {}
    params = "".join(f"<tr><td><code>{e(p)}</code></td><td>{e(w)}</td></tr>" for p, w in drawn)
    out = [
        title,
        f"<p>Each pair of runs draws the {len(drawn)} uncertain parameter(s) below once"
        f" ({u.get('draws', 0)} draws × {u.get('runs_per_draw', 2)} runs), so every probability"
        " and band in this report is averaged over what the parameters may be. The spread of"
        " the runs has two sources: <b>Monte Carlo error</b> (the randomness of the runs, which"
        " more <code>--runs</code> shrink) and <b>parameter uncertainty</b> (which only better"
        " knowledge of the parameters shrinks). The two runs of a pair differ by Monte Carlo"
        " error alone; the rest is the parameters'.</p>",
        "<table><tr><th>drawn parameter</th><th>distribution · its 90% range</th></tr>"
        f"{params}</table>",
    ]
    if u.get("note"):
        return "".join(out) + f"<p>{e(u['note'])}.</p>"
    gates = "".join(_html_uncertain_gate(g, res.options.runs) for g in u.get("gates", []))
    out.append(
        "<h3>Gates</h3><p class=small>Read a row as: the gate passes by its deadline in P of"
        " the runs, P being the probability averaged over the drawn parameters;"
        " <b>95% interval</b>: the Monte Carlo error of P, how far another seed (other runs,"
        " other draws) could move it, which more <code>--runs</code> narrow (wider than the"
        " plain Wilson interval because the two runs of a pair are not independent);"
        " <b>P over the parameter draws</b>:"
        " where the probability of passing lies for 90% of the draws of the parameters; a"
        " wide range beside a narrow interval says more runs will not help, knowing the"
        " parameters better will. <b>From parameters</b>: the share of the run-to-run"
        " variance of passing that the parameters explain.</p>"
        "<table><tr><th>stage</th><th>P(pass by deadline)</th><th>95% interval (Monte"
        " Carlo)</th><th>P over the parameter draws, 90%</th><th>from parameters</th></tr>"
        f"{gates}</table>"
    )
    metrics = u.get("metrics", {})
    split = metrics.get("split", {})
    if split:
        rows = []
        for name in uncertainty_metrics(res, split):
            m = split[name]
            unit = res.units.get(name, "count")
            v = m["variance"]
            rows.append(
                f"<tr><td><b>{e(name)}</b></td><td class=p>{e(_fmt(m['mean'], unit))}</td>"
                f"<td class=p>± {e(_fmt(_sd(v['parameters']), unit))}</td>"
                f"<td class=p>± {e(_fmt(_sd(v['monte_carlo']), unit))}</td>"
                f"<td>{_share_bar(m.get('parameter_share'))}</td></tr>"
            )
        day = int(metrics.get("day", res.options.days - 1))
        out.append(
            f"<h3>Key metrics on {day_date(res, day)} (day {day}, the horizon)</h3><p"
            " class=small>The runs' standard deviation split by source: the parameters' part"
            " is how much the metric moves with the drawn parameters, the Monte Carlo part how"
            " much it varies between runs of the same draw.</p><table><tr><th>metric</th>"
            "<th>mean</th><th>sd from parameters</th><th>sd from Monte Carlo</th>"
            f"<th>variance from parameters</th></tr>{''.join(rows)}</table>"
        )
    out.append(_html_sensitivity(res))
    return "".join(out)


def _html_uncertain_gate(g: dict[str, Any], runs: int) -> str:
    """A gate's row of the uncertainty table; undecided runs said, never read as a 0 %."""
    e = html.escape
    n = g.get("undecided_runs", 0)
    head = f"<tr><td><b>{e(g['stage'])}</b></td>"
    if n >= runs:
        return head + '<td colspan=4 class="small">undecided in every run at the horizon</td></tr>'
    note = f"<br><span class=small>{n} undecided run(s) counted as not passing</span>" if n else ""
    return (
        f'{head}<td class="p">{_pct(g["p_pass"])}{note}</td>'
        f'<td class="p">{_interval(*g["monte_carlo_interval95"])}</td>'
        f'<td class="p">{_interval(*g["parameter_range90"])}</td>'
        f"<td>{_share_bar(g.get('parameter_share'))}</td></tr>"
    )


def _share_bar(share: float | None) -> str:
    """A share as a number and a small bar (parameters' part in blue)."""
    if share is None:
        return "—"
    return (
        f'<span class="share"><span style="width:{100 * share:.0f}%"></span></span>'
        f" {100 * share:.0f}%"
    )


def _html_sensitivity(res: SimResult, top: int = 3) -> str:
    """Per gate, the drawn parameters that move it most (`--sensitivity` in the terminal)."""
    e = html.escape
    rows = []
    alike = []
    for g in (res.sensitivity or {}).get("gates", []):
        ranked = [p for p in g["parameters"] if p["rank_correlation"] is not None][:top]
        if not ranked:
            n = g.get("undecided_runs") or 0
            alike.append(f"{g['stage']} ({_pct(g['p_pass'])}{f', {n} undecided' if n else ''})")
            continue
        for i, p in enumerate(ranked):
            rho = p["rank_correlation"]
            stage = f"<b>{e(g['stage'])}</b>" if i == 0 else ""
            rows.append(
                f"<tr><td>{stage}</td><td><code>{e(p['parameter'])}</code></td>"
                f'<td class="p">{rho:+.2f}</td><td class="p">'
                f"{_pct(p['p_pass_low_third'])} → {_pct(p['p_pass_high_third'])}</td></tr>"
            )
    if not rows and not alike:
        return ""
    same = (
        f"<p class=small>The same in every run, whatever the draws: {e(', '.join(alike))}.</p>"
        if alike
        else ""
    )
    table = (
        "<table><tr><th>gate</th><th>parameter</th><th>rank correlation</th><th>P(pass) in"
        " its lowest → highest third</th></tr>" + "".join(rows) + "</table>"
        if rows
        else ""
    )
    return (
        "<h3>Sensitivity: which parameter moves each gate</h3><p class=small>Per gate, the"
        " drawn parameters most related to passing by the deadline, strongest first:"
        " Spearman's rank correlation between a parameter's draw and its pair's share of"
        " passes (+: larger values help), and P(pass) among the draws in the parameter's"
        " lowest and highest third. A parameter that moves a gate a lot is the one to measure"
        f" (<code>sop calibrate</code>) before trusting the gate.</p>{table}{same}"
    )


def _html_section(title: str, note: str, heads: Sequence[str], rows: Sequence[str]) -> str:
    """A section of the HTML report: its heading, what it shows (HTML), its table."""
    th = "".join(f"<th>{h}</th>" for h in heads)
    return (
        f'<h2>{title}</h2><p class="small">{note}</p><table><tr>{th}</tr>'
        + "".join(rows)
        + "</table>"
    )


def _html_targets(res: SimResult, doc: dict[str, Any]) -> str:
    e = html.escape
    if not doc["targets"]:
        return ""
    rows = []
    for t in doc["targets"]:
        first = t["p_reached"]["median_day"]
        rows.append(
            f'<tr data-target="{e(t["metric"])}"><td class="nw">'
            f"<code>{e(target_text(t, res.units))}</code></td><td>{e(judged_on(res, t))}"
            f"<br><span class=small>day {t['due_day']}</span></td>"
            f"{_td_share(t['p_met'])}{_td_share(t['p_reached'])}"
            f"<td>{'—' if first is None else e(day_date(res, first))}</td>"
            f"<td>{e(_shortfall(t, res.units))}</td>"
            f"<td>{t['undefined_runs']}</td></tr>"
        )
    return _html_section(
        "Targets",
        "Each target is judged at the close of its day (<code>by</code>, else the horizon):"
        " P(met that day), and P(met on some day up to it) with the median first day among the"
        " runs that met it; the median shortfall is of the runs that missed it that day.",
        ["target", "judged at the close of", "P(met that day) [95%]",
         "P(met on some day by then) [95%]", "median first day met", "median shortfall",
         "runs without a value"],
        rows,
    )  # fmt: skip


def _html_incidents(res: SimResult, doc: dict[str, Any]) -> str:
    e = html.escape
    if not doc["incidents"]:
        return ""
    rows = []
    for x in doc["incidents"]:
        f = x["first_day"]
        first = (
            "—"
            if f["p50"] is None
            else f"{day_date(res, f['p50'])}<br><span class=small>p5–p95 {day_date(res, f['p5'])}"
            f" – {day_date(res, f['p95'])}</span>"
        )
        title = f"<br><span class=small>{e(x['title'])}</span>" if x["title"] else ""
        rows.append(
            f'<tr data-incident="{e(x["incident"])}"><td><b>{e(x["incident"])}</b>{title}</td>'
            f"<td><code>{e(x['detect'])}</code></td><td>{e(x['owner'])}</td>"
            f"{_td_share(x['triggered'])}<td>{first}</td>"
            f"<td>{e(spread(x['days_triggered']))}</td></tr>"
        )
    return _html_section(
        "Incidents",
        "P(the incident's <code>detect:</code> holds on some closed day within the horizon), the"
        " first such day among the runs where it did, and on how many days it held (p50"
        " [p5–p95] over all runs).",
        ["incident", "detect", "owner", "P(detected) [95%]", "first day (median)", "days it held"],
        rows,
    )


def _day_heads(res: SimResult, days: Sequence[int]) -> list[str]:
    return [f"day {d}<br><span class=small>{day_date(res, d - 1)}</span>" for d in days]


def _html_segments(res: SimResult, doc: dict[str, Any], days: Sequence[int]) -> str:
    e = html.escape
    if not doc["segments"]:
        return ""
    pb = res.forecasts.playbook if res.forecasts is not None else None
    rows = []
    for name, series in doc["segments"].items():
        seg = pb.segments.get(name) if pb is not None else None
        when = getattr(getattr(seg, "when", None), "text", None)
        cond = f"<br><code class=small>{e(when)}</code>" if when else ""
        cells = "".join(f'<td class="p">{e(spread(at_day(series, d)))}</td>' for d in days)
        rows.append(f'<tr data-segment="{e(name)}"><td><b>{e(name)}</b>{cond}</td>{cells}</tr>')
    return _html_section(
        "Segments",
        "Members in each segment at the close of the day: p50 [p5–p95] over the runs.",
        ["segment", *_day_heads(res, days)],
        rows,
    )


def _html_channels(res: SimResult, doc: dict[str, Any], days: Sequence[int]) -> str:
    e = html.escape
    shown = _shown_channels(doc)
    if not shown:
        return ""
    rows = [
        f'<tr data-channel="{e(n)}"><td><b>{e(n)}</b></td><td class="p">{e(spread(c["joins"]))}'
        f'</td><td class="p">{e(spread(c["share"], "ratio"))}</td>'
        + "".join(f'<td class="p">{e(v)}</td>' for v in _plan(c))
        + "</tr>"
        for n, c in shown.items()
    ]
    out = _html_section(
        "Channels",
        f"Joins by each channel over the {res.options.days} days and its share of all joins, p50"
        " [p5–p95] over the runs, against the share the playbook plans (the scenario's shares"
        " drive the simulation).",
        ["channel", "joins", "share of joins", "planned share", "p50 vs planned"],
        rows,
    )
    grouped = _by_channel(doc["channels"].get("metrics", {}), shown)
    if grouped:
        body = []
        for metric, series_rows in grouped:
            u = res.units.get(metric, "count")
            for i, (channel, series) in enumerate(series_rows):
                head = (
                    f'<td rowspan="{len(series_rows)}"><code>{e(metric)}</code></td>'
                    if i == 0
                    else ""
                )
                cells = "".join(
                    f'<td class="p">{e(spread(at_day(series, d), u))}</td>' for d in days
                )
                body.append(f"<tr>{head}<td>{e(channel)}</td>{cells}</tr>")
        out += (
            "<h3>Metrics by channel, p50 [p5–p95]</h3><table><tr><th>metric</th><th>channel</th>"
            + "".join(f"<th>{h}</th>" for h in _day_heads(res, days))
            + "</tr>"
            + "".join(body)
            + "</table>"
        )
    return out


def _html_workload(res: SimResult, doc: dict[str, Any]) -> str:
    e = html.escape
    if not doc["workload"]:
        return ""
    rows = []
    for role, w in doc["workload"].items():
        tasks, peak, share_over, per_run = workload_cells(w)
        first = w["over_capacity"]["median_day"]
        over = (
            ""
            if first is None
            else f"<br><span class=small>first, median: {e(day_date(res, first))}</span>"
        )
        rows.append(
            f'<tr data-role="{e(role)}"><td><b>{e(role)}</b></td><td>{w["capacity"]:g}</td>'
            f'<td class="p">{e(tasks)}</td><td class="p">{e(peak)}</td>'
            f'<td class="p">{e(share_over)}</td>'
            f'<td class="p">{e(per_run)}</td>'
            f'<td class="p">{e(run_share(w["over_capacity"]))}{over}</td></tr>'
        )
    return _html_section(
        "Staff workload",
        "Tasks a day per role — scheduled firings with an owner, one task per member for"
        " <code>for_each</code> and event-triggered tasks, reviews — against its capacity"
        " (headcount × tasks a person a day). Tasks a day and the share of days over capacity"
        " are over every day of every run.",
        ["role", "capacity a day", "tasks a day p50 · p95", "busiest day p50 [p5–p95]",
         "share of days over capacity", "days over capacity a run p50 [p5–p95]",
         "runs with a day over capacity [95%]"],
        rows,
    )  # fmt: skip


CSS = """
body{font-family:'Noto Sans SC',system-ui,-apple-system,'PingFang SC','Microsoft YaHei',
'Noto Sans CJK SC',sans-serif;margin:2rem;max-width:78rem;color:#111;line-height:1.45}
table{border-collapse:collapse;margin:.6rem 0 1.2rem}
td,th{border:1px solid #ddd;padding:.3rem .55rem;text-align:left;font-size:.88rem;
vertical-align:top}
th{background:#f8fafc} td.p{white-space:nowrap;font-variant-numeric:tabular-nums}
td.p .small{white-space:normal;display:inline-block;max-width:11rem}
tr.note td{border-top:none;color:#475569;font-size:.82rem}
figure{margin:.4rem 0} figcaption{font-size:.85rem;color:#334155} figure svg{height:auto}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(30rem,1fr));gap:.5rem 1.5rem}
.charts svg,.timeline svg{max-width:100%}
code{font-size:.84rem} .small{font-size:.8rem;color:#475569}
code{font-family:monospace,'Noto Sans SC'} td.nw{white-space:nowrap}
.bar{display:flex;width:14rem;height:.8rem;border:1px solid #cbd5e1;background:#fff}
.bar .seg{display:block;height:100%}
.key::before{content:"";display:inline-block;width:.65rem;height:.65rem;margin-right:.25rem;
background:var(--c);vertical-align:-.05rem}
.caveat{background:#fffbeb;border-left:4px solid #f59e0b;padding:.5rem .8rem;max-width:60rem}
.verdict{padding:.5rem .8rem;max-width:60rem;border-left:4px solid #16a34a;background:#f0fdf4}
.verdict.fail{border-color:#dc2626;background:#fef2f2}
.legend span{margin-right:1rem;white-space:nowrap}
.share{display:inline-block;width:5rem;height:.6rem;border:1px solid #cbd5e1;background:#fff;
vertical-align:middle} .share span{display:block;height:100%;background:#2563eb}
"""


def to_html(
    res: SimResult,
    pb: Playbook,
    *,
    min_probability: float | None = None,
    expect_tolerance: float = EXPECT_TOLERANCE,
) -> str:
    """One self-contained HTML file: no scripts, no network, charts as inline SVG, the CJK
    characters it uses in an embedded subset of the shipped Noto Sans SC."""
    from ..core.fonts import embedded_css

    e = html.escape
    metrics = [m for m in KEY_METRICS if m in res.metric_names]
    gated = {
        c.metric
        for s in pb.stages.values()
        if s.gate and s.gate.node
        for c in comparisons(s.gate.node)
    }
    metrics += [m for m in sorted(gated) if m not in metrics and m in res.metric_names]
    o = res.options
    first = start_of(res)
    last = first + timedelta(days=o.days - 1)
    reasons = res.verdict(min_probability, expect_tolerance)
    verdict = (
        f'<div class="verdict fail"><b>sop simulate exits 1:</b> {e("; ".join(reasons))}</div>'
        if reasons
        else '<div class="verdict"><b>sop simulate exits 0</b>: no expectation broken beyond'
        f" the tolerance ({100 * expect_tolerance:g}% of runs)"
        + (
            f" and every gate at or above --min-probability {min_probability:g}"
            if min_probability is not None
            else ""
        )
        + ".</div>"
    )
    fails = "".join(
        f"<li>run {r}, day {d} ({day_date(res, d)}): {e(w)}</li>"
        for r, d, w in res.expect_failures[:50]
    )
    ex = res.expectations(expect_tolerance)
    expect = (
        f"<p>{e(expect_words(res, expect_tolerance))}.</p><ul>{fails}</ul>"
        if ex.broken.k
        else "<p>All expectations held on every run.</p>"
    )
    scenario = "".join(
        f"<tr><td>{e(sec)}</td><td><code>{e(key)}</code></td><td><code>{e(val)}</code></td>"
        f"<td>{e(meaning)}</td></tr>"
        for sec, key, val, meaning in scenario_rows(res)
    )
    charts = "".join(
        f'<figure data-metric="{e(m)}">{fan_chart(res, m, pb)}<figcaption><b>{e(m)}</b>'
        f"{_description(pb, m)}"
        "</figcaption></figure>"
        for m in metrics
    )
    warnings = "".join(f"<li>{e(w)}</li>" for w in res.warnings)
    doc = forecast_doc(res)
    days = checkpoint_days(res, (30, 60, 90, 180))
    lang = text_language(playbook_words(pb))
    n_drawn = len(drawn_parameters(res))
    intervals_cover = (
        f"The 95% intervals cover the randomness of the simulated runs and the uncertainty of"
        f" the {n_drawn} parameter(s) given as distributions (see “How sure”), not a wrong"
        " assumption in the others."
        if n_drawn
        else "The 95% intervals cover the randomness of the simulated runs only (Monte Carlo"
        " error), not a wrong assumption."
    )
    body = f"""<h1>{e(pb.title)}</h1>
<p>Playbook <code>{e(pb.id)}</code> v{e(pb.version)} · scenario <b>{e(res.scenario.name)}</b> ·
{o.runs} runs × {o.days} days, {first.isoformat()} to {last.isoformat()} · seed <b>{o.seed}</b> ·
{res.member_days:,} member-days in {res.seconds:.1f} s</p>
<p class="caveat">These probabilities follow from the scenario's parameters (the table at the end),
which are <b>assumptions, not measurements</b>, unless they were fitted to this community's own
history with <code>sop calibrate</code>. {intervals_cover}</p>
{verdict}
{"<h2>Warnings</h2><ul>" + warnings + "</ul>" if warnings else ""}
<h2>Gates</h2>
<p class="small">P(pass by deadline) counts the runs in which a stage's gate passed by its deadline
(within the horizon when it has none), of all runs; "if entered", of the runs that entered the
stage. While runs are still undecided at the horizon (the stage open before its deadline, or not
reached yet) it is a range: its low end counts them as missing the deadline, its high end as
passing. [95%] is the Wilson interval around both ends. Late passes came after the deadline (an
extension or an alert-only deadline).</p>
<table><tr><th>stage</th><th>gate</th><th>deadline</th><th>P(pass by deadline) [95%]</th>
<th>if entered [95%]</th><th>passed late [95%]</th><th>median pass</th><th>runs by outcome</th>
</tr>{_gate_rows(res, pb)}</table>
<h2>Where the gates fall short</h2>{_shortfall_tables(res)}
<h2>Stages</h2>
<table><tr><th>stage</th><th>entered [95%]</th><th>median entry</th><th>passed · median day</th>
<th>outcomes at the horizon</th></tr>{_stage_rows(res, pb)}</table>
<figure class="timeline">{timeline_chart(res, pb)}<figcaption>Median entry to median pass of
each stage (grey: most runs had not passed by the horizon); blue whiskers: entry p5–p95, green:
pass p5–p95; red tick: the deadline from the median entry.</figcaption></figure>
{_html_exits(res, doc) if doc else ""}
<h2>Key metrics</h2>
<p class="legend small"><span style="color:#2563eb">■ p5–p95 of the runs</span>
<span style="color:#1e40af">■ p25–p75</span><span style="color:#1e3a8a">— median</span>
<span style="color:#dc2626">- - gate threshold (stages that set it)</span>
<span style="color:#475569">⋯ median day a stage starts</span></p>
<div class="charts">{charts}</div>
{_html_uncertainty(res)}
{_html_targets(res, doc) if doc else ""}
{_html_incidents(res, doc) if doc else ""}
{_html_segments(res, doc, days) if doc else ""}
{_html_channels(res, doc, days) if doc else ""}
{_html_workload(res, doc) if doc else ""}
<h2>Expectations</h2>
{expect}
<h2>Scenario <code>{e(res.scenario.name)}</code>: assumptions</h2>
<p class="caveat">Every value below is an input of the forecast, not a finding: unless it was
fitted with <code>sop calibrate</code> to the community's history (and checked with
<code>sop backtest</code>), treat it as a guess and try others with <code>--set</code> or
<code>--sweep</code>.</p>
<table><tr><th>section</th><th>parameter</th><th>value</th><th>what it means</th></tr>
{scenario}</table>
"""
    fonts = embedded_css(body)
    return f"""<!doctype html>
<html lang="{HTML_LANG[lang]}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sop simulate · {e(pb.title)}</title>
<style>
{fonts}
{CSS}
</style></head><body>
{body}</body></html>
"""


def sweep_table(rows: list[tuple[dict[str, Any], SimResult]], console: Any) -> None:
    """Gate probabilities per swept value (a range, or `undecided`, where the horizon is short)."""
    if not rows:
        return
    t = _table("sweep: P(gate passes by its deadline) [95%]")
    names = list(rows[0][0])
    for n in names:
        t.add_column(markup(n), overflow="fold")
    for g in rows[0][1].gates:
        t.add_column(markup(g.stage), no_wrap=True, min_width=12)
    for values, res in rows:
        t.add_row(
            *(markup(str(values[n])) for n in names),
            *(bounded(g.by_deadline, "\n") for g in res.gates),
        )
    console.print(t)
