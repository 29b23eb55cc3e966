"""Incidents (emergency plans): when each step is due once an incident opens, and whether a
`detect:` condition opens it, once for plan, simulate and run.

Offsets count from the opening, not from the previous step: a `do:` step goes out at the
opening (owned by the incident's owner); `alert: ROLE, within: 30m` alerts the role at the
opening and must be answered within 30 minutes; `escalate: ROLE, after: 4h` hands the incident
to the role 4 hours after the opening if it is still open then. `detect:` is a community
condition (windows allowed) read on the day just closed, as a gate is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..lang.model import Incident, IncidentStep
from .history import History, condition_env
from .truth import holds

ZERO = timedelta(0)


@dataclass(frozen=True, slots=True)
class ScheduledStep:
    """One step of an opened incident: when it starts and when it is due, from the opening."""

    index: int  # its position in `steps`
    step: IncidentStep
    role: str  # who does it: the owner for `do`, the named role for alert and escalate
    at: timedelta  # from the opening
    due: timedelta | None  # the answer's deadline from the opening (alert `within`), else None
    only_if_open: bool  # escalations happen only while the incident is still open

    def as_dict(self) -> dict[str, Any]:
        """Plain data (durations in seconds) for plan's JSON and the runtime's task records."""
        return {
            "index": self.index,
            "kind": self.step.kind,
            "target": self.step.target,
            "role": self.role,
            "at_seconds": int(self.at.total_seconds()),
            "due_seconds": None if self.due is None else int(self.due.total_seconds()),
            "only_if_open": self.only_if_open,
        }


def schedule(incident: Incident) -> tuple[ScheduledStep, ...]:
    """Every step of `incident` with its start and deadline from the opening, in step order."""
    out = []
    for i, s in enumerate(incident.steps):
        if s.kind == "alert":
            out.append(ScheduledStep(i, s, s.target, ZERO, s.delay, False))
        elif s.kind == "escalate":
            out.append(ScheduledStep(i, s, s.target, s.delay or ZERO, None, True))
        else:  # do: an action of kind `target`, sent at the opening
            out.append(ScheduledStep(i, s, incident.owner, ZERO, None, False))
    return tuple(out)


def detects(incident: Incident, history: History) -> Any:
    """Whether `detect:` holds on the day just closed (a bool; a mask over the simulator's
    runs). No `detect:` (opened only by people): never."""
    node = incident.detect.node if incident.detect is not None else None
    if node is None:
        return False
    return holds(node, condition_env(node, history))
