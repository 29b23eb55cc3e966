"""The Program layer: one compiled semantics that plan, simulate and run all read.

Modules, one job each: `occurrence` (an Occurrence and its idempotency key), `calendar` (the
start date), `anchors` (chains of `after:`/`before:`), `events` (compiled member-event rules),
`lifecycle` (the stage state machine and its exits), `program` (what is due when), `truth` (a
condition's three-valued reading, scalars or arrays), `history` (window functions and `for:`
holds), `gates` (verdicts, exit oracles, weak links), `metrics` (built-in metric definitions),
`counted` (counted metrics), `members` (attributes, segments, member conditions), `targets`,
`ranking` (leaderboards), `teams`, `points`, `milestones`, `tiers`. The modules that need NumPy
import it inside their functions, so importing this package stays light.
"""

from __future__ import annotations

from .anchors import Anchored, ChainLink
from .calendar import DEFAULT_START, StartDateError, start_date
from .events import EventRule, Trigger
from .lifecycle import (
    ExitOracle,
    GateOracle,
    Lifecycle,
    LifecycleState,
    StageState,
    StageWindow,
    Transition,
    exits_of,
    hold_days,
)
from .occurrence import Occurrence, occurrence_key
from .program import Firing, Program, assumed_exits, assumed_gate, run_lifecycle

__all__ = [
    "DEFAULT_START",
    "Anchored",
    "ChainLink",
    "EventRule",
    "ExitOracle",
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
    "assumed_exits",
    "assumed_gate",
    "exits_of",
    "hold_days",
    "occurrence_key",
    "run_lifecycle",
    "start_date",
]
