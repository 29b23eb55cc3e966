"""What each dashboard page shows, as data: read from the Program and the state store.

No HTML here (templates render these values; charts.py draws the SVG they carry) and no text in
a language: words are catalog keys with arguments (i18n.py), so one page model serves both
languages. Every read is bounded (the store's `Page` reads, service.py's status parts) so a
page costs the same with a million deliveries as with ten.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from markupsafe import Markup

from ..core import expr as ex
from ..core.catalog import BUILTIN_METRICS
from ..core.schedule import local_midnight
from ..lang.model import OnEvent, Playbook
from ..program import Lifecycle, Program
from ..program.gates import Comparison, comparisons
from ..run import service
from ..run.codec import decode_lifecycle
from ..run.store.base import (
    NO_ROLE,
    ApplicationRecord,
    ApplicationState,
    EventRecord,
    IncidentRecord,
    IncidentState,
    MemberRecord,
    MetricValue,
    OccurrenceRecord,
    OccurrenceState,
    Page,
    RunRecord,
    StateStore,
    TaskRecord,
)
from . import charts

DAY = timedelta(days=1)
Words = tuple[str, Mapping[str, Any]]  # a catalog key and its arguments

LIST_LIMIT = 50  # rows of one list on a page
TASK_LIMIT = 30
SILENCE_DEFAULT = timedelta(hours=72)
# the states an operator looks at: everything but the many `sent` (counting those reads them all)
ATTENTION = (
    OccurrenceState.PENDING,
    OccurrenceState.CLAIMED,
    OccurrenceState.RETRY,
    OccurrenceState.UNCERTAIN,
    OccurrenceState.DEAD,
    OccurrenceState.SKIPPED,
    OccurrenceState.DROPPED,
)
TIER_COLORS = ("#a5b4c4", "#4c8bd6", "#e8a33d", "#7b5ea7", "#2b8a3e")


@dataclass(frozen=True)
class Reader:
    """One page's view of a run: the Program, the store and the instant it is drawn at."""

    program: Program
    store: StateStore
    run_id: str
    now: datetime

    @property
    def pb(self) -> Playbook:
        return self.program.playbook

    @property
    def today(self) -> date:
        return self.now.astimezone(self.program.tz).date()

    def midnight(self, d: date) -> datetime:
        return local_midnight(d, self.program.tz)

    def run(self) -> RunRecord:
        run: RunRecord = service.require_run(self.store, self.run_id)
        return run

    def lifecycle(self, run: RunRecord) -> Lifecycle:
        return Lifecycle.restore(self.program, decode_lifecycle(dict(run.lifecycle)))


# -- metrics and gates ----------------------------------------------------------------------


def metric_unit(pb: Playbook, name: str) -> str:
    """A metric's unit: the playbook's own metric, else the built-in catalog's (count)."""
    if name in pb.metrics:
        return str(pb.metrics[name].unit)
    info = BUILTIN_METRICS.get(name)
    return str(info.unit) if info is not None else "count"


def format_value(pb: Playbook, name: str, v: float | None) -> str:
    """A metric value as an operator reads it: 23.4% for ratios, 1,234 for counts."""
    if v is None or not math.isfinite(v):
        return "—"
    unit = metric_unit(pb, name)
    if unit == "ratio":
        return f"{v * 100:.1f}%"
    if unit == "factor":
        return f"{v:.2f}×"
    if abs(v - round(v)) < 1e-9 or abs(v) >= 100:
        return f"{round(v):,}"
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"


def format_delta(pb: Playbook, name: str, d: float) -> str:
    """A difference of a metric (percentage points for ratios)."""
    if metric_unit(pb, name) == "ratio":
        return f"{abs(d) * 100:.1f} pp"
    return format_value(pb, name, abs(d))


def metric_series(
    values: Sequence[MetricValue],
) -> dict[str, dict[date, float | None]]:
    """name -> day -> value; where several sources report a day, a defined value wins."""
    out: dict[str, dict[date, float | None]] = {}
    for mv in values:
        days = out.setdefault(mv.name, {})
        if mv.value is not None or mv.day not in days:
            days[mv.day] = mv.value
    return out


def latest(series: Mapping[date, float | None]) -> tuple[date, float] | None:
    """The last day with a defined value."""
    for d in sorted(series, reverse=True):
        v = series[d]
        if v is not None and math.isfinite(v):
            return d, v
    return None


# -- overview -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageView:
    id: str
    title: str
    started: datetime
    ended: datetime | None
    outcome: str
    deadline: datetime | None
    days: int
    policy: list[Words]
    exit: str | None = None  # the exit it left by


@dataclass(frozen=True)
class ClauseView:
    text: str
    holds: bool | None
    value: str
    shortfall: str


@dataclass(frozen=True)
class ExitView:
    id: str
    when: str
    goto: str | None
    fires: bool
    held_days: int
    hold_days: int
    weak: list[ClauseView]  # the clauses that fall short (its weak links)


@dataclass(frozen=True)
class TargetView:
    metric: str
    target: str
    value: str
    met: bool | None
    progress: float | None  # 0..1
    shortfall: str
    due: date | None


@dataclass(frozen=True)
class GateRow:
    metric: str
    op: str
    value: str
    threshold: str
    distance: str
    met: bool | None
    spark: Markup


@dataclass(frozen=True)
class GateView:
    stage: str
    title: str
    condition: str
    holds: bool | None
    at: datetime | None
    min_days: int | None  # the stage's minimum duration, when the gate is not read yet
    rows: list[GateRow]
    exits: list[ExitView] = field(default_factory=list)


@dataclass(frozen=True)
class Alert:
    level: str  # bad | warn
    words: Words
    href: str


@dataclass(frozen=True)
class NextItem:
    at: datetime
    action: str
    kind: str
    owner: str | None
    stage: str | None


@dataclass(frozen=True)
class Overview:
    playbook_title: str
    origin: datetime
    finished: datetime | None
    current: list[StageView]
    stages: list[StageView]
    gates: list[GateView]
    alerts: list[Alert]
    next: list[NextItem]
    counts: dict[str, int]
    transitions: list[tuple[datetime, str, str]]  # at, stage title, event
    targets: list[TargetView] = field(default_factory=list)
    incidents: list[IncidentRecord] = field(default_factory=list)  # open ones
    applications: int = 0  # waiting for review


def _policy(r: Reader, stage_id: str) -> list[Words]:
    stage = r.pb.stages.get(stage_id)
    if stage is None:
        return []
    dl = stage.deadline
    if dl is None:
        return [("policy.stop", {})] if stage.max_duration else []
    out: list[Words] = []
    if dl.alert:
        role = r.pb.roles.get(dl.alert)
        out.append(("policy.alert", {"role": role.title if role else dl.alert}))
    if dl.extend:
        out.append(("policy.extend", {"days": dl.extend.days}))
    if dl.goto:
        target = r.pb.stages.get(dl.goto)
        out.append(("policy.goto", {"stage": target.title if target else dl.goto}))
    if dl.abort:
        out.append(("policy.abort", {}))
    return out


def _stage_views(r: Reader, stages: Sequence[Mapping[str, Any]]) -> list[StageView]:
    out = []
    for s in stages:
        out.append(
            StageView(
                id=s["stage"],
                title=s["title"],
                started=datetime.fromisoformat(s["started"]),
                ended=datetime.fromisoformat(s["ended"]) if s["ended"] else None,
                outcome=s["outcome"],
                deadline=datetime.fromisoformat(s["deadline"]) if s["deadline"] else None,
                days=int(s["days"]),
                policy=_policy(r, s["stage"]),
                exit=s.get("exit"),
            )
        )
    return out


def _gate_views(r: Reader, statuses: Sequence[service.GateStatus]) -> list[GateView]:
    names = sorted({t.metric for g in statuses for t in g.terms})
    series = metric_series(r.store.metric_values(r.run_id, names)) if names else {}
    series.update(_window_series(r, statuses, series))
    days = [r.today - timedelta(days=i) for i in range(30, 0, -1)]
    out = []
    for g in statuses:
        stage = r.pb.stages[g.stage]
        rows = []
        for term in g.terms:
            known = latest(series.get(term.label, {}))
            value = g.values.get(term.label) if g.at is not None else None
            if value is None and known is not None:
                value = known[1]
            met = term.met(value)
            gap = None if met else term.distance(value)
            distance = "" if gap is None else format_delta(r.pb, term.metric, gap)
            rows.append(
                GateRow(
                    metric=term.label,
                    op=term.op,
                    value=format_value(r.pb, term.metric, value),
                    threshold=format_value(r.pb, term.metric, term.threshold),
                    distance=distance,
                    met=met,
                    spark=charts.sparkline(
                        [series.get(term.label, {}).get(d) for d in days],
                        term.threshold,
                        label=term.label,
                    ),
                )
            )
        unread = g.at is None and stage.min_duration is not None
        out.append(
            GateView(
                stage=g.stage,
                title=stage.title,
                condition=g.condition,
                holds=g.holds,
                at=g.at,
                min_days=stage.min_duration.days if unread and stage.min_duration else None,
                rows=rows,
                exits=[_exit_view(r, x) for x in g.exits],
            )
        )
    return out


def _window_series(
    r: Reader, statuses: Sequence[service.GateStatus], series: Mapping[str, Any]
) -> dict[str, dict[date, float | None]]:
    """A window's (`avg(x, 7d)`) value on each recorded day, from its metric's days."""
    from ..program.history import window

    out: dict[str, dict[date, float | None]] = {}
    for g in statuses:
        for t in g.terms:
            if t.window is None or t.label in out:
                continue
            by_day = series.get(t.metric, {})
            days = sorted(by_day)
            op, n = t.window
            values = [math.nan if by_day[d] is None else float(by_day[d]) for d in days]
            row: dict[date, float | None] = {}
            for i, d in enumerate(days):
                v = window(op, values[: i + 1], n)
                row[d] = None if math.isnan(v) else v
            out[t.label] = row
    return out


def _metric_of(label: str) -> str:
    """The metric a clause's label measures (`avg(x, 7d)` -> x)."""
    if "(" in label and label.endswith(")"):
        return label[label.index("(") + 1 :].split(",")[0].strip()
    return label


def _exit_view(r: Reader, x: Mapping[str, Any]) -> ExitView:
    def clause(c: Mapping[str, Any]) -> ClauseView:
        metric = _metric_of(c.get("metric") or "")
        short = c.get("shortfall")
        return ClauseView(
            c.get("text") or c.get("metric") or "",
            c.get("holds"),
            format_value(r.pb, metric, c.get("value")),
            "" if short is None else format_delta(r.pb, metric, float(short)),
        )

    return ExitView(
        x["exit"], x.get("when") or "", x.get("goto"), bool(x["fires"]), int(x["held_days"]),
        int(x["hold_days"]), [clause(c) for c in x.get("weak_links") or ()],
    )  # fmt: skip


def _targets(r: Reader) -> list[TargetView]:
    out = []
    for t in service.target_statuses(r.program, r.store, r.run_id):
        d = t.as_dict()
        short = d["shortfall"]
        out.append(
            TargetView(
                t.metric,
                d["target"],
                format_value(r.pb, t.metric, t.value),
                t.met,
                d["progress"],
                "" if not short else format_delta(r.pb, t.metric, short),
                t.due,
            )
        )
    return out


def _node(r: Reader, stage_id: str) -> ex.Node | None:
    stage = r.pb.stages.get(stage_id)
    return stage.gate.node if stage is not None and stage.gate is not None else None


def _counts(r: Reader) -> dict[str, int]:
    """How many occurrences are in each state an operator looks at (not `sent`)."""
    return {str(k): n for k, n in r.store.count_occurrences(r.run_id, ATTENTION).items()}


def overview(r: Reader) -> Overview:
    """The Overview page: stage, gates with values and sparklines, alerts, what comes next."""
    run = r.run()
    saved = decode_lifecycle(dict(run.lifecycle))
    stages = _stage_views(r, service.stage_rows(r.program, saved, r.now))
    current = [s for s in stages if s.ended is None]
    gates = _gate_views(r, service.gate_statuses(r.program, r.store, r.run_id, saved, r.now))
    alerts: list[Alert] = []
    counts = _counts(r)
    for state, level, key, href in (
        ("dead", "bad", "alert.dead", "/deliveries#dead"),
        ("uncertain", "bad", "alert.uncertain", "/deliveries#uncertain"),
        ("retry", "warn", "alert.retrying", "/deliveries#retrying"),
    ):
        if counts.get(state):
            alerts.append(Alert(level, (key, {"n": counts[state]}), href))
    overdue = r.store.overdue_task_count(r.run_id, r.now)
    if overdue:
        alerts.append(Alert("warn", ("alert.overdue", {"n": overdue}), "/tasks"))
    for s, g in ((s, g) for s in current for g in gates if g.stage == s.id):
        if s.deadline is not None and not g.holds:
            left = (s.deadline - r.now).days
            if left <= 7:
                alerts.append(
                    Alert("warn", ("alert.deadline", {"stage": s.title, "n": max(0, left)}), "/")
                )
    titles = {k: v.title for k, v in r.pb.stages.items()}
    history = r.store.transitions(r.run_id)
    for t in history:
        if t.at >= r.now - 7 * DAY and t.event in ("alert", "deadline", "aborted", "extended"):
            words = {"stage": titles.get(t.stage, t.stage), "event": "event." + t.event, "at": t.at}
            alerts.append(Alert("warn", ("alert.transition", words), "/"))
    lc = Lifecycle.restore(r.program, saved)
    horizon = r.now + 2 * DAY
    upcoming = r.program.due(lc.windows(horizon), r.now, horizon)
    nxt = [NextItem(o.at, o.action, o.kind, o.owner, o.stage) for o in upcoming[:8]]
    transitions = [(t.at, titles.get(t.stage, t.stage), t.event) for t in history[-8:]][::-1]
    open_incidents = r.store.incidents(r.run_id, [IncidentState.OPEN])
    for i in open_incidents:
        inc = r.pb.incidents.get(i.incident)
        words = {"title": inc.title if inc else i.incident, "at": i.opened_at}
        alerts.insert(0, Alert("bad", ("alert.incident", words), "/incidents"))
    waiting = len(r.store.applications(r.run_id, [ApplicationState.PENDING]))
    if waiting:
        alerts.append(Alert("warn", ("alert.applications", {"n": waiting}), "/applications"))
    return Overview(
        playbook_title=r.pb.title or r.pb.id,
        origin=run.origin,
        finished=lc.finished,
        current=current,
        stages=stages,
        gates=gates,
        alerts=alerts,
        next=nxt,
        counts=counts,
        transitions=transitions,
        targets=_targets(r),
        incidents=open_incidents,
        applications=waiting,
    )


# -- forecast vs actual ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChartView:
    metric: str
    description: str
    svg: Markup
    position: Words | None  # inside the band, above it, below it
    versus: Words | None  # ahead of / behind the median
    detail: Words | None
    p_pass: Words | None


@dataclass(frozen=True)
class ForecastView:
    exists: bool
    created: datetime | None = None
    runs: int = 0
    days: int = 0
    charts: list[ChartView] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    start_note: Words | None = None


def _gate_metric_order(r: Reader, current: Sequence[str]) -> list[tuple[str, Comparison, str]]:
    """(metric, term, stage) for every gate comparison: running stages first."""
    order = [*current, *(s for s in r.pb.stages if s not in current)]
    out = []
    for sid in order:
        for t in comparisons(_node(r, sid)):
            out.append((t.metric, t, sid))
    return out


def _at(days: Sequence[int], values: Sequence[float | None], d: int) -> float | None:
    """A percentile series' value on day `d` (the latest sampled day at or before it)."""
    best = None
    for day, v in zip(days, values, strict=False):
        if day > d:
            break
        best = v
    return best


def forecast(r: Reader, extra: Sequence[str] = (), labels: Any = None) -> ForecastView:
    """The Forecast vs actual page: each gate metric's band, median, actual values, threshold.

    `extra` adds charts of other metrics; `labels` is (band, median, actual, threshold) text.
    """
    run = r.run()
    fc = r.store.latest_forecast(run.playbook)
    if fc is None:
        return ForecastView(False)
    doc = fc.data
    metrics: Mapping[str, Any] = doc.get("metrics") or {}
    origin_day = run.origin.astimezone(r.program.tz).date()
    state = decode_lifecycle(dict(run.lifecycle))
    current = [s.stage for s in state.stages if s.ended is None]
    wanted: list[tuple[str, Comparison | None, str | None]] = []
    term: Comparison | None
    sid: str | None
    seen: set[str] = set()
    for metric, term, sid in _gate_metric_order(r, current):
        if metric in metrics and metric not in seen:
            wanted.append((metric, term, sid))
            seen.add(metric)
    for metric in ("members", *extra):
        if metric in metrics and metric not in seen:
            wanted.append((metric, None, None))
            seen.add(metric)
    series = metric_series(r.store.metric_values(r.run_id, [m for m, _, _ in wanted]))
    gates = {g.get("stage"): g for g in doc.get("gates") or ()}
    charts_out = []
    for metric, term, sid in wanted:
        m = metrics[metric]
        days = [int(d) for d in m.get("days") or ()]
        p5, p50, p95 = m.get("p5") or [], m.get("p50") or [], m.get("p95") or []
        actual = sorted(
            ((d - origin_day).days, v)
            for d, v in series.get(metric, {}).items()
            if v is not None and math.isfinite(v) and d >= origin_day
        )
        position: Words | None = None
        versus: Words | None = None
        detail: Words | None = None
        if actual:
            d, v = actual[-1]
            lo, mid, hi = _at(days, p5, d), _at(days, p50, d), _at(days, p95, d)
            direction = term.direction if term else 0
            if lo is not None and v < lo:
                position = ("forecast.outside_low_plain", {})
            elif hi is not None and v > hi:
                position = ("forecast.outside_high_plain", {})
            elif lo is not None and hi is not None:
                position = ("forecast.inside", {})
            if mid is not None:
                diff = v - mid
                pct = f"{diff / mid * 100:+.0f}%" if mid else "—"
                delta = format_delta(r.pb, metric, diff)
                if abs(diff) < 1e-9:
                    versus = ("forecast.on", {})
                elif direction:
                    good = diff * direction > 0
                    versus = (
                        "forecast.ahead" if good else "forecast.behind",
                        {"diff": delta, "pct": pct},
                    )
                else:
                    versus = ("forecast.above" if diff > 0 else "forecast.below", {"diff": delta})
            detail = (
                "forecast.on_day",
                {
                    "day": d,
                    "date": origin_day + timedelta(days=d),
                    "value": format_value(r.pb, metric, v),
                    "p50": format_value(r.pb, metric, mid),
                    "p5": format_value(r.pb, metric, lo),
                    "p95": format_value(r.pb, metric, hi),
                },
            )
        g = gates.get(sid) if sid else None
        p_pass = None
        if g is not None and g.get("p_pass") is not None:
            p_pass = (
                "forecast.p_pass",
                {
                    "p": f"{float(g['p_pass']) * 100:.0f}%",
                    "day": "—"
                    if g.get("median_pass_day") is None
                    else round(float(g["median_pass_day"])),
                },
            )

        def day_label(d: int) -> str:
            return (origin_day + timedelta(days=d)).strftime("%m-%d")

        def fmt(v: float, metric: str = metric) -> str:
            return format_value(r.pb, metric, v)

        # from day 0 to some weeks past the latest actual value: the band where it matters
        end = max(60, actual[-1][0] + 45) if actual else (days[-1] if days else 0)
        days = [day for day in days if day <= end]  # ascending
        p5, p50, p95 = p5[: len(days)], p50[: len(days)], p95[: len(days)]
        svg = charts.forecast_chart(
            days, p5, p50, p95, actual,
            threshold=term.threshold if term else None, day_label=day_label, fmt=fmt,
            label=metric, legend=labels or (),
        )  # fmt: skip
        desc = r.pb.metrics[metric].description if metric in r.pb.metrics else ""
        if not desc and metric in BUILTIN_METRICS:
            desc = BUILTIN_METRICS[metric].description
        charts_out.append(ChartView(metric, desc, svg, position, versus, detail, p_pass))
    start = doc.get("start")
    note = None
    if start and start != origin_day.isoformat():
        note = ("forecast.start_differs", {"fstart": start, "rstart": origin_day.isoformat()})
    options = doc.get("options") or {}
    return ForecastView(
        True,
        fc.created_at,
        int(options.get("runs") or 0),
        int(options.get("days") or 0),
        charts_out,
        sorted(k for k in metrics if k not in seen),
        note,
    )


# -- calendar -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalItem:
    at: datetime
    scheduled: datetime
    key: str
    action: str
    kind: str
    stage: str | None
    owner: str | None
    state: str  # an OccurrenceState, or planned | missing
    reason: str
    moved: bool  # quiet hours moved it
    in_plan: bool
    snippet: str


@dataclass(frozen=True)
class CalDay:
    day: date
    items: list[CalItem]
    members: dict[str, int]
    today: bool


@dataclass(frozen=True)
class CalendarView:
    start: date
    days: list[CalDay]
    prev: date
    next: date


def _snippet(pb: Playbook, action: str, limit: int = 48) -> str:
    a = pb.actions.get(action)
    if a is None:
        return ""
    text = a.text.text if a.text is not None else ""
    if not text and a.template and a.template in pb.templates:
        text = pb.templates[a.template].text
    return _clip(text, limit)


def _clip(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis when cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def calendar(r: Reader, start: date | None = None, days: int = 7) -> CalendarView:
    """The Calendar page: each day's planned occurrences joined with what the store holds."""
    run = r.run()
    first = start or r.today
    t0, t1 = r.midnight(first), r.midnight(first + timedelta(days=days))
    lc = r.lifecycle(run)
    planned = r.program.due(lc.windows(t1), t0, t1)
    stored = r.store.occurrences_by_key(r.run_id, [o.key for o in planned])
    items: list[CalItem] = []
    for o in planned:
        s = stored.pop(o.key, None)
        if s is not None:
            state, reason = str(s.state), s.reason
        else:
            state, reason = ("planned" if o.at > r.now else "missing"), o.reason
        items.append(
            CalItem(o.at, o.scheduled, o.key, o.action, o.kind, o.stage, o.owner, state, reason,
                    o.at != o.scheduled, True, _snippet(r.pb, o.action))
        )  # fmt: skip
    by_day: dict[date, list[CalItem]] = {}
    for it in items:
        by_day.setdefault(it.at.astimezone(r.program.tz).date(), []).append(it)
    out = []
    for i in range(days):
        d = first + timedelta(days=i)
        counts = r.store.member_occurrence_counts(
            r.run_id, r.midnight(d), r.midnight(d + DAY), ATTENTION
        )
        members = {str(k): n for k, n in counts.items()}
        out.append(
            CalDay(d, sorted(by_day.get(d, []), key=lambda x: (x.at, x.action)), members,
                   d == r.today)
        )  # fmt: skip
    return CalendarView(first, out, first - timedelta(days=days), first + timedelta(days=days))


# -- staff tasks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskView:
    id: str
    role: str | None
    role_title: str
    action: str
    text: str
    due: datetime
    member: str | None
    overdue: bool
    escalated: datetime | None
    done_at: datetime | None
    done_by: str | None

    @property
    def open(self) -> bool:
        return self.done_at is None


@dataclass(frozen=True)
class TasksView:
    roles: list[tuple[str, str, int]]  # id ("" for none), title, open count
    role: str | None  # the selected role id ("" for no role), None for all
    open: list[TaskView]
    more: int
    done: list[TaskView]


def task_view(r: Reader, t: TaskRecord) -> TaskView:
    t = service.masked_tasks(r.program, r.store, r.run_id, [t])[0]  # PII never on a page
    role = r.pb.roles.get(t.role or "")
    return TaskView(
        t.id, t.role, role.title if role else (t.role or ""), t.action, t.text, t.due_at,
        t.member, t.done_at is None and t.due_at < r.now, t.escalated_at, t.done_at, t.done_by,
    )  # fmt: skip


def tasks(
    r: Reader, role: str | None = None, every: bool = True, limit: int = TASK_LIMIT
) -> TasksView:
    """The Tasks page: open tasks (of one role, or of all), earliest due first; done lately.

    `role` None with `every=False` selects the tasks without a role.
    """
    r.run()
    counts = r.store.open_task_counts(r.run_id)
    roles = [(rid, ro.title, counts.get(rid, 0)) for rid, ro in r.pb.roles.items()]
    roles += [(k, k, n) for k, n in counts.items() if k and k not in r.pb.roles]
    if counts.get(None):
        roles.append(("", "", counts[None]))
    selected = None if every else (role or NO_ROLE)
    chosen = r.store.open_tasks(r.run_id, limit, selected)
    total = sum(counts.values()) if every else counts.get(role, 0)
    done = r.store.done_tasks(r.run_id, 20, selected)
    return TasksView(
        roles,
        None if every else (role or ""),
        [task_view(r, t) for t in chosen],
        max(0, total - len(chosen)),
        [task_view(r, t) for t in done],
    )


def parse_local(text: str, program: Program) -> datetime | None:
    """`YYYY-MM-DDTHH:MM` (an <input type=datetime-local>) or with a space, in the playbook's
    zone; None when it is not one."""
    text = text.strip().replace(" ", "T")
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=program.tz)


# -- deliveries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveriesView:
    counts: dict[str, int]
    uncertain: Page[OccurrenceRecord]
    dead: Page[OccurrenceRecord]
    retrying: Page[OccurrenceRecord]
    skipped: Page[OccurrenceRecord]


def deliveries(r: Reader) -> DeliveriesView:
    """The Deliveries page: uncertain sends and dead letters to decide on; retries; skips."""
    r.run()

    def first(state: OccurrenceState, since: datetime | None = None) -> Page[OccurrenceRecord]:
        return r.store.occurrences_in_state(r.run_id, state, LIST_LIMIT, since)

    return DeliveriesView(
        _counts(r),
        first(OccurrenceState.UNCERTAIN),
        first(OccurrenceState.DEAD),
        first(OccurrenceState.RETRY),
        first(OccurrenceState.SKIPPED, since=r.now - 7 * DAY),
    )


# -- members and tiers ----------------------------------------------------------------------


@dataclass(frozen=True)
class MembersView:
    has_data: bool
    tier_chart: Markup
    current: list[tuple[str, int, str]]  # tier title, count, colour
    total: int
    new_chart: Markup
    recent: Page[MemberRecord]
    silent_hours: int
    silent: Page[MemberRecord]
    violations: Page[EventRecord]
    violators: dict[str, MemberRecord]


def silence(pb: Playbook) -> timedelta:
    """How long a member is silent before the playbook reacts (its `member.silent` rule)."""
    spans = [
        a.schedule.silent_for
        for a in pb.actions.values()
        if isinstance(a.schedule, OnEvent)
        and a.schedule.event == "member.silent"
        and a.schedule.silent_for
    ]
    return min(spans) if spans else SILENCE_DEFAULT


def tier_series(
    pb: Playbook, series: Mapping[str, Mapping[date, float | None]], days: Sequence[date]
) -> list[tuple[str, list[float]]]:
    """Members per tier on each day, from the daily members / core_members / vip_members.

    core_members counts every tier above the lowest and vip_members the highest (with 3 or more
    tiers), so the lowest is members - core_members, the middle ones (together)
    core_members - vip_members, the highest vip_members.
    """

    def get(name: str, d: date) -> float:
        v = series.get(name, {}).get(d)
        return float(v) if v is not None and math.isfinite(v) else 0.0

    total = [get("members", d) for d in days]
    levels = sorted(pb.tiers.levels, key=lambda t: t.rank) if pb.tiers else []
    if len(levels) < 2:
        return [("", total)]
    core = [get("core_members", d) for d in days]
    low = [max(0.0, a - b) for a, b in zip(total, core, strict=True)]
    if len(levels) == 2:
        return [(levels[0].title, low), (levels[1].title, core)]
    vip = [get("vip_members", d) for d in days]
    middle = [max(0.0, a - b) for a, b in zip(core, vip, strict=True)]
    mid_title = " / ".join(t.title for t in levels[1:-1])
    return [(levels[0].title, low), (mid_title, middle), (levels[-1].title, vip)]


def members(r: Reader, members_label: str = "members") -> MembersView:
    """The Members page: members per tier over time, recent joins, silent members, violations."""
    r.run()
    names = ["members", "core_members", "vip_members", "new_members"]
    series = metric_series(r.store.metric_values(r.run_id, names))
    recorded = sorted(series.get("members", {}))
    days = recorded[-90:]
    tiers = tier_series(r.pb, series, days)
    named = [(name or members_label, vals) for name, vals in tiers]
    colored = [(n, v, TIER_COLORS[i % len(TIER_COLORS)]) for i, (n, v) in enumerate(named)]
    labels = [d.strftime("%m-%d") for d in days]
    tier_chart = charts.stacked_area(labels, colored, label=members_label) if days else Markup("")
    current = [(n, round(v[-1]) if v else 0, c) for n, v, c in colored]
    recent_days = days[-60:]
    new = [series.get("new_members", {}).get(d) or 0.0 for d in recent_days]
    new_chart = (
        charts.bars([d.strftime("%m-%d") for d in recent_days], new, label="new_members")
        if days
        else Markup("")
    )
    quiet = silence(r.pb)
    recent = r.store.recent_joins(r.run_id, r.now - 7 * DAY, r.now, 20)
    silent = r.store.silent_members(r.run_id, r.now - quiet, 20)
    violations = r.store.latest_events(r.run_id, ["violation"], r.now - 30 * DAY, 20)
    violators = r.store.get_members(r.run_id, sorted({e.member for e in violations.items}))
    return MembersView(
        bool(days),
        tier_chart,
        current,
        sum(c for _, c, _ in current),
        new_chart,
        recent,
        int(quiet.total_seconds() // 3600),
        silent,
        violations,
        violators,
    )


# -- applications ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplicationView:
    member: str
    state: str
    applied: datetime
    decided: datetime | None
    decided_by: str | None
    note: str
    answers: list[tuple[str, str]]  # the required attributes (PII masked)


@dataclass(frozen=True)
class ApplicationsView:
    enabled: bool
    pending: list[ApplicationView]
    decided: list[ApplicationView]
    review_owner: str
    within_hours: int


def _application_view(r: Reader, a: ApplicationRecord, m: MemberRecord | None) -> ApplicationView:
    from ..run.attributes import shown_attributes

    adm = r.pb.admission
    shown = shown_attributes(r.pb, m) if m is not None else {}
    answers = [(k, str(shown.get(k, ""))) for k in (adm.require if adm else ())]
    return ApplicationView(
        a.member, str(a.state), a.applied_at, a.decided_at, a.decided_by, a.note, answers
    )


def applications(r: Reader) -> ApplicationsView:
    """The Applications page: who waits for review (approve or reject), decided lately."""
    r.run()
    adm = r.pb.admission
    if adm is None:
        return ApplicationsView(False, [], [], "", 0)
    pending = r.store.applications(r.run_id, [ApplicationState.PENDING], LIST_LIMIT)
    decided = r.store.applications(r.run_id, [ApplicationState.APPROVED, ApplicationState.REJECTED])
    decided = sorted(decided, key=lambda a: a.decided_at or a.applied_at, reverse=True)[:20]
    members = r.store.get_members(r.run_id, sorted({a.member for a in [*pending, *decided]}))
    role = r.pb.roles.get(adm.review_owner)
    return ApplicationsView(
        True,
        [_application_view(r, a, members.get(a.member)) for a in pending],
        [_application_view(r, a, members.get(a.member)) for a in decided],
        role.title if role else adm.review_owner,
        int(adm.review_within.total_seconds() // 3600),
    )


# -- incidents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanStep:
    kind: str
    target: str
    role: str
    at_minutes: int
    due_minutes: int | None
    only_if_open: bool
    text: str | None  # what a `do` step says (its text), shown beside it


@dataclass(frozen=True)
class IncidentPlan:
    id: str
    title: str
    owner: str
    detect: str | None
    steps: list[PlanStep]
    open: bool  # one of it is open now


@dataclass(frozen=True)
class IncidentsView:
    plans: list[IncidentPlan]
    open: list[IncidentRecord]
    closed: list[IncidentRecord]


def incidents(r: Reader) -> IncidentsView:
    """The Incidents page: the playbook's emergency plans (open one), open and closed ones."""
    from ..program.incidents import schedule

    r.run()
    rows = r.store.incidents(r.run_id, limit=LIST_LIMIT)
    opened = [i for i in rows if i.state == IncidentState.OPEN]
    plans = []
    for inc in r.pb.incidents.values():
        steps = [
            PlanStep(
                s.step.kind,
                s.step.target,
                s.role,
                int(s.at.total_seconds() // 60),
                None if s.due is None else int(s.due.total_seconds() // 60),
                s.only_if_open,
                _clip(s.step.text, 60) if s.step.text else None,
            )
            for s in schedule(inc)
        ]
        detect = inc.detect.text if inc.detect is not None else None
        busy = any(i.incident == inc.id for i in opened)
        plans.append(IncidentPlan(inc.id, inc.title, inc.owner, detect, steps, busy))
    return IncidentsView(plans, opened, [i for i in rows if i.state != IncidentState.OPEN][:20])
