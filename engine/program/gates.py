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
import operator
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..core import expr as ex
from . import metrics

if TYPE_CHECKING:
    from ..lang.model import Stage
    from .lifecycle import GateOracle, StageState

Why = Callable[[str], str]
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


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
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True, slots=True)
class Comparison:
    """One `metric OP threshold` comparison of a condition, the metric on the left."""

    metric: str
    op: str
    threshold: float | None  # None: the other side reads metrics too (no single threshold)

    @property
    def direction(self) -> int:
        """+1 when more is better, -1 when less is, 0 for (in)equality."""
        return 1 if self.op in (">", ">=") else -1 if self.op in ("<", "<=") else 0

    def met(self, value: float | None) -> bool | None:
        """Whether `value` meets it (None: no value, or no single threshold)."""
        if value is None or self.threshold is None or math.isnan(value):
            return None
        return _COMPARE[self.op](value, self.threshold)

    def distance(self, value: float | None) -> float | None:
        """Threshold minus value (None: no value, or no single threshold)."""
        if value is None or self.threshold is None or math.isnan(value):
            return None
        return self.threshold - value


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

    def walk(n: ex.Node) -> None:
        if n.kind == "cmp" and len(n.args) == 2:
            left, right = n.args
            if left.kind == "name":
                out.append(Comparison(str(left.value), n.op, constant(right)))
            elif right.kind == "name":
                out.append(Comparison(str(right.value), _FLIP[n.op], constant(left)))
            return
        for a in n.args:
            walk(a)

    if node is not None:
        walk(node)
    return out


def judge(node: ex.Node, values: Mapping[str, float], why: Why | None = None) -> Verdict:
    """Decide condition `node` on `values` (name -> number, NaN when undefined)."""
    state, names = _truth(node, values)
    if state is not None:
        return PASSES if state else FAILS
    explain = why or (lambda n: metrics.why_undefined(n, values))
    found = tuple((n, explain(n)) for n in dict.fromkeys(names))
    return Verdict(False, found or (("value", "the expression has no value (∞ − ∞)"),))


def metric_gate(
    values: Callable[[Stage, StageState, datetime], Mapping[str, float]],
    why: Callable[[str, Mapping[str, float]], str] | None = None,
    notes: MutableMapping[str, str] | None = None,
) -> GateOracle:
    """The gate oracle of an interpreter with metric values (the simulator; the runtime).

    `values` gives the metrics a stage's gate reads at a check (`days_in_stage` included);
    `notes` keeps, per stage, why its latest check was undecided (cleared by a decided one).
    Plan has no values: its assumed gates (`assumed_gate`) pass or fail without reading any.
    """

    def gate(stage: Stage, st: StageState, now: datetime) -> bool:
        if stage.gate is None or stage.gate.node is None:
            return False
        v = values(stage, st, now)
        verdict = judge(stage.gate.node, v, (lambda n: why(n, v)) if why else None)
        if notes is not None:
            if verdict.decided:
                notes.pop(stage.id, None)
            else:
                notes[stage.id] = verdict.note
        return verdict.holds

    return gate


def _undefined_names(node: ex.Node, values: Mapping[str, float]) -> list[str]:
    return [str(n.value) for n in ex.names(node) if _nan(values[str(n.value)])]


def _nan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _truth(node: ex.Node, values: Mapping[str, float]) -> tuple[bool | None, list[str]]:
    """True, False, or None (unknown) with the undefined names it depends on."""
    k = node.kind
    if k == "bool":
        return bool(node.value), []
    if k == "not":
        state, names = _truth(node.args[0], values)
        return (None if state is None else not state), names
    if k in ("and", "or"):
        decisive = k == "or"  # True decides an `or`, False an `and`
        unknown: list[str] | None = None
        for a in node.args:
            state, names = _truth(a, values)
            if state is decisive:
                return decisive, []
            if state is None:
                unknown = [*(unknown or []), *names]
        return (None, unknown) if unknown is not None else (not decisive, [])
    if k == "cmp":
        left, right = (float(ex.evaluate(a, values)) for a in node.args)
        if math.isnan(left) or math.isnan(right):
            return None, _undefined_names(node, values)
        return _COMPARE[node.op](left, right), []
    # a bare number (the type check refuses it in a gate): unknown when it has no value
    value = float(ex.evaluate(node, values))
    if math.isnan(value):
        return None, _undefined_names(node, values)
    return bool(value), []
