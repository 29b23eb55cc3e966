"""Reading a condition (a gate's `exit.when`, an `if:`) over one day's metric values, once.

Every interpreter with metric values decides a condition here: the simulator on each run's
metrics, the runtime on recorded ones (plan has none: its assumed gates pass or fail without
reading any, `program.assumed_gate`). A metric without a
value (NaN: see engine/program/metrics.py) makes the comparisons that read it unknown; `and`,
`or` and `not` follow three-valued (Kleene) logic, so `members >= 10 or retention_d30 >= 0.6`
holds on a day of 12 members, while `retention_d30 >= 0.6` alone, or `not (retention_d30 < 0.6)`,
does not hold before day 29, and the verdict names the metric and why it has no value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core import expr as ex
from . import metrics
from .truth import truth

if TYPE_CHECKING:
    from ..lang.model import Exit, Stage
    from .history import History
    from .lifecycle import ExitOracle, StageState

Why = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a condition holds; when unknown, the undefined metrics that left it so."""

    holds: bool
    undefined: tuple[tuple[str, str], ...] = ()  # (metric, why it has no value)

    @property
    def decided(self) -> bool:
        """False when the condition could not be decided (it then does not hold)."""
        return not self.undefined

    @property
    def note(self) -> str:
        """`undefined: retention_d30 (no cohort is 30 days old)`, or "" when decided."""
        if not self.undefined:
            return ""
        return "undefined: " + ", ".join(f"{n} ({why})" for n, why in self.undefined)


PASSES = Verdict(True)
FAILS = Verdict(False)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One `metric OP threshold` comparison of a condition, the metric on the left."""

    metric: str
    op: str
    threshold: float | None  # None: the other side reads metrics too (no single threshold)
    window: tuple[str, int] | None = None  # `avg(metric, 7d)`: ("avg", 7); None: the metric

    @property
    def key(self) -> str:
        """The name its value has in a day's values (`expr.window_key` for a window)."""
        if self.window is None:
            return self.metric
        return ex.window_key(self.window[0], self.metric, self.window[1])

    @property
    def label(self) -> str:
        """How outputs name its left side: `members`, `avg(daily_speak_rate, 7d)`."""
        if self.window is None:
            return self.metric
        return window_label(self.window[0], self.metric, self.window[1])

    @property
    def direction(self) -> int:
        """+1 when more is better, -1 when less is, 0 for (in)equality."""
        return 1 if self.op in (">", ">=") else -1 if self.op in ("<", "<=") else 0

    def met(self, value: float | None) -> bool | None:
        """Whether `value` meets it (None: no value, or no single threshold)."""
        if value is None or self.threshold is None or math.isnan(value):
            return None
        return bool(ex.COMPARE[self.op](value, self.threshold))

    def distance(self, value: float | None) -> float | None:
        """Threshold minus value (None: no value, or no single threshold)."""
        if value is None or self.threshold is None or math.isnan(value):
            return None
        return self.threshold - value

    def shortfall(self, value: float | None) -> float | None:
        """How far `value` is from meeting it, in the metric's unit: 0 when it is met, None
        without a value or a single threshold (`>=`: threshold - value; `<=`: value - threshold;
        `==`: the distance either way)."""
        met = self.met(value)
        if met is None or value is None or self.threshold is None:
            return None
        if met:
            return 0.0
        if self.direction == 0:
            return abs(value - self.threshold)
        return (self.threshold - value) * self.direction


def comparisons(node: ex.Node | None) -> list[Comparison]:
    """The comparisons of a metric with a number in a condition, in reading order.

    `200 <= members` reads as `members >= 200`; a side that reads metrics too gives no
    threshold. What `sop status` measures distances with and the dashboard draws gates from.
    """
    out: list[Comparison] = []

    def constant(n: ex.Node) -> float | None:
        if ex.names(n):
            return None
        try:
            return float(ex.evaluate(n, {}))
        except (ArithmeticError, TypeError, ValueError):
            return None

    for n in _outermost(node, lambda n: n.kind == "cmp" and len(n.args) == 2):
        left, right = n.args
        if left.kind in ("name", "call"):
            out.append(_comparison(left, n.op, constant(right)))
        elif right.kind in ("name", "call"):
            out.append(_comparison(right, ex.FLIPPED[n.op], constant(left)))
    return out


def _outermost(node: ex.Node | None, pick: Callable[[ex.Node], bool]) -> Iterator[ex.Node]:
    """The nodes of a condition that `pick` takes, in reading order, none inside another."""
    if node is None:
        return
    if pick(node):
        yield node
        return
    for a in node.args:
        yield from _outermost(a, pick)


def _comparison(side: ex.Node, op: str, threshold: float | None) -> Comparison:
    if side.kind == "call":
        w_op, metric, days = ex.windows(side)[0]
        return Comparison(metric, op, threshold, (w_op, days))
    return Comparison(str(side.value), op, threshold)


@dataclass(frozen=True, slots=True)
class Clause:
    """One comparison of a condition on a day: whether it holds and how far it falls short.

    The weak links of a failing gate are its clauses that do not hold (004: "分析哪个环节出了问题").
    """

    text: str  # the clause as written
    holds: bool | None  # None: it read an undefined value
    metric: str | None  # what it measures (`avg(daily_speak_rate, 7d)`), None: no single one
    value: float | None  # its value that day (None: undefined)
    threshold: float | None
    shortfall: float | None  # 0 when it holds; None: undefined or no single threshold

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON outputs."""
        return {
            "text": self.text,
            "holds": self.holds,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "shortfall": self.shortfall,
        }


def clauses(node: ex.Node | None, values: Mapping[str, Any], text: str = "") -> list[Clause]:
    """Every comparison (and `in`) of condition `node` on `values`, in reading order.

    `text` is the condition's source (`Expression.text`), for each clause's own text.
    """
    out: list[Clause] = []
    for n in _outermost(node, lambda n: n.kind in ("cmp", "in")):
        t, f = truth(n, values)
        holds = True if t else False if f else None
        source = text[n.start : n.end] if text else ""
        cmp = comparisons(n) if n.kind == "cmp" else []
        if cmp:
            c = cmp[0]
            raw = values.get(c.key)
            value = None if raw is None or _nan(raw) else float(raw)
            out.append(Clause(source, holds, c.label, value, c.threshold, c.shortfall(value)))
        else:
            out.append(Clause(source, holds, None, None, None, 0.0 if holds else None))
    return out


def weak_links(node: ex.Node | None, values: Mapping[str, Any], text: str = "") -> list[Clause]:
    """The clauses of a condition that do not hold (none when the condition holds)."""
    if node is None or truth(node, values)[0]:
        return []
    return [c for c in clauses(node, values, text) if c.holds is not True]


def judge(node: ex.Node, values: Mapping[str, Any], why: Why | None = None) -> Verdict:
    """Decide condition `node` on `values` (name -> number, NaN when undefined).

    The decision is `truth.truth`'s (the same the simulator's arrays get); when it is unknown,
    the verdict names the undefined metrics (or windows) it depends on and why.
    """
    t, f = truth(node, values)
    if t:
        return PASSES
    if f:
        return FAILS
    explain = why or (lambda n: metrics.why_undefined(n, values))
    found = tuple((n, explain(n)) for n in dict.fromkeys(_blame(node, values)))
    return Verdict(False, found or (("value", "the expression has no value (∞ − ∞)"),))


def _blame(node: ex.Node, values: Mapping[str, Any]) -> list[str]:
    """The undefined names (and windows) an unknown condition depends on, in reading order."""
    if node.kind in ("and", "or", "not"):
        out: list[str] = []
        for a in node.args:
            t, f = truth(a, values)
            if not t and not f:
                out += _blame(a, values)
        return out
    return _undefined_names(node, values)


def history_exits(
    read: Callable[[Stage, StageState, datetime], tuple[History, Any]],
    why: Callable[[str, Mapping[str, float]], str] | None = None,
    notes: MutableMapping[str, str] | None = None,
) -> ExitOracle:
    """The exit oracle of an interpreter with metric histories (the simulator; the runtime).

    `read(stage, st, now)` gives the history of every metric up to the day just closed (name ->
    values by day, engine/program/history.py) and the stage's `days_in_stage` at this check. An
    exit fires when its condition held on each of its last `for:` days in the stage (windows
    read through the history). `notes` keeps, per stage, why its latest check of each exit was
    undecided (an undefined metric or window).
    """
    from . import history as H
    from .lifecycle import ExitOracle, exits_of

    def fires(stage: Stage, st: StageState, now: datetime, exit: Exit) -> bool:
        exits = exits_of(stage)
        if notes is not None and exits and exit.id == exits[0].id:
            notes.pop(stage.id, None)  # a new check: notes of the previous one are stale
        node = exit.when.node
        if node is None:
            return False
        history, days_in_stage = read(stage, st, now)
        if H.exit_holds(node, exit.hold, history, days_in_stage):
            return True
        if notes is not None:
            note_undecided(notes, stage.id, len(exits), exit.id,
                           exit_verdict(exit, history, days_in_stage, why))  # fmt: skip
        return False

    return ExitOracle(fires)


def note_undecided(
    notes: MutableMapping[str, str], stage: str, exits: int, exit: str, verdict: Verdict
) -> None:
    """Add why an exit's check was undecided to `notes[stage]` (one home of the note's form:
    `undefined: ...`, prefixed `exit ID: ` when the stage has several exits, joined by `; `)."""
    if verdict.decided:
        return
    note = verdict.note if exits == 1 else f"exit {exit}: {verdict.note}"
    old = notes.get(stage)
    notes[stage] = note if not old else f"{old}; {note}"


def exit_verdict(
    exit: Exit,
    history: History,
    days_in_stage: Any,
    why: Callable[[str, Mapping[str, float]], str] | None = None,
) -> Verdict:
    """Today's verdict of an exit's condition on one community's history (not its `for:`)."""
    from . import history as H

    node = exit.when.node
    if node is None:
        return FAILS
    env = H.condition_env(node, history, days_in_stage)
    labels = {window_label(*w): w for w in ex.windows(node)}

    def explain(name: str) -> str:
        if name in labels:
            op, metric, days = labels[name]
            return H.why_window(op, metric, days, history)
        return why(name, env) if why else metrics.why_undefined(name, env)

    return judge(node, env, explain)


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """One exit of a stage at a check: does it fire, how long has it held, which clauses fail."""

    exit: str
    fires: bool
    held_days: int  # days in a row (ending today, within the stage) its condition has held
    hold_days: int  # days its `for:` asks for (1 without one)
    clauses: tuple[Clause, ...]  # today's
    note: str = ""  # why today's check was undecided ("" when decided)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON outputs."""
        return {
            "exit": self.exit,
            "fires": self.fires,
            "held_days": self.held_days,
            "hold_days": self.hold_days,
            "clauses": [c.as_dict() for c in self.clauses],
            "note": self.note or None,
        }


def exit_status(
    exit: Exit,
    history: History,
    days_in_stage: float,
    why: Callable[[str, Mapping[str, float]], str] | None = None,
) -> ExitStatus:
    """An exit on one community's history at a check (`sop status`, the dashboard, reports)."""
    from . import history as H
    from .lifecycle import hold_days

    need = hold_days(exit.hold)
    node = exit.when.node
    if node is None:
        return ExitStatus(exit.id, False, 0, need, ())
    held = int(H.held_for(node, history, days_in_stage, need))
    env = H.condition_env(node, history, days_in_stage)
    verdict = exit_verdict(exit, history, days_in_stage, why)
    return ExitStatus(
        exit.id,
        held >= need,
        held,
        need,
        tuple(clauses(node, env, exit.when.text)),
        verdict.note,
    )


def window_label(op: str, metric: str, days: int) -> str:
    """How outputs name a window function: `avg(daily_speak_rate, 7d)`."""
    return f"{op}({metric}, {days}d)"


def _undefined_names(node: ex.Node, values: Mapping[str, Any]) -> list[str]:
    out: list[str] = []

    def walk(n: ex.Node) -> None:
        if n.kind == "call":
            op, metric, days = ex.windows(n)[0]
            if _nan(values.get(ex.window_key(op, metric, days))):
                out.append(window_label(op, metric, days))
            return
        if n.kind == "name":
            if _nan(values.get(str(n.value))):
                out.append(str(n.value))
            return
        for a in n.args:
            walk(a)

    walk(node)
    return out


def _nan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)
