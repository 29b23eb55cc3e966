"""The lifecycle as plain data, for the store: `LifecycleState` to JSON-able values and back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..program.lifecycle import LifecycleState, StageState, Transition


def _t(x: datetime | None) -> str | None:
    return None if x is None else x.isoformat()


def _p(x: str | None) -> datetime | None:
    return None if x is None else datetime.fromisoformat(x)


def encode_lifecycle(state: LifecycleState) -> dict[str, Any]:
    """A lifecycle state as JSON-able data (instants as ISO-8601 with offset)."""
    return {
        "origin": state.origin.isoformat(),
        "include_optional": sorted(state.include_optional),
        "stages": [
            {
                "stage": s.stage,
                "started": s.started.isoformat(),
                "deadline": _t(s.deadline),
                "ended": _t(s.ended),
                "outcome": s.outcome,
                "extended": s.extended,
                "alerted": s.alerted,
                "exit": s.exit,
            }
            for s in state.stages
        ],
        "transitions": [t.as_dict() for t in state.transitions],
        "finished": _t(state.finished),
    }


def decode_lifecycle(data: dict[str, Any]) -> LifecycleState:
    """`encode_lifecycle`'s output back as a state."""
    origin = datetime.fromisoformat(data["origin"])
    return LifecycleState(
        origin=origin,
        include_optional=frozenset(data.get("include_optional", ())),
        stages=tuple(
            StageState(
                s["stage"],
                datetime.fromisoformat(s["started"]),
                _p(s["deadline"]),
                _p(s["ended"]),
                s["outcome"],
                bool(s["extended"]),
                bool(s["alerted"]),
                s.get("exit"),
            )
            for s in data.get("stages", ())
        ),
        transitions=tuple(Transition.from_dict(t) for t in data.get("transitions", ())),
        finished=_p(data.get("finished")),
    )
