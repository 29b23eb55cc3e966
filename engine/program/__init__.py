"""The Program layer: one compiled semantics that plan, simulate and run all read.

Modules, one job each: `occurrence` (an Occurrence and its idempotency key), `calendar` (the
start date), `anchors` (chains of `after:`/`before:`), `events` (compiled member-event rules),
`lifecycle` (the stage state machine), `program` (what is due when), `checks` (validate's
findings that need these rules).
"""

from __future__ import annotations

from .anchors import Anchored, ChainLink
from .calendar import DEFAULT_START, StartDateError, start_date
from .events import EventRule, Trigger
from .lifecycle import (
    GateOracle,
    Lifecycle,
    LifecycleState,
    StageState,
    StageWindow,
    Transition,
)
from .occurrence import Occurrence, occurrence_key
from .program import Firing, Program, assumed_gate, run_lifecycle

__all__ = [
    "DEFAULT_START",
    "Anchored",
    "ChainLink",
    "EventRule",
    "Firing",
    "GateOracle",
    "Lifecycle",
    "LifecycleState",
    "Occurrence",
    "Program",
    "StageState",
    "StageWindow",
    "StartDateError",
    "Transition",
    "Trigger",
    "assumed_gate",
    "occurrence_key",
    "run_lifecycle",
    "start_date",
]
