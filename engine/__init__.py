"""sop: community-operations playbooks as code.

The public API, imported lazily so that `sop --help` and `sop validate` stay fast:

    from engine import validate_paths, load_playbook, Program, make_plan, PlanOptions
    from engine import simulate, SimOptions, load_scenario
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Diagnostic": "engine.diagnostics",
    "Severity": "engine.diagnostics",
    "Options": "engine.validate",
    "validate_file": "engine.validate",
    "validate_paths": "engine.validate",
    "load_playbook": "engine.validate",
    "Playbook": "engine.model",
    "Program": "engine.program",
    "Occurrence": "engine.program",
    "Lifecycle": "engine.program",
    "PlanOptions": "engine.plan",
    "Timeline": "engine.plan",
    "make_plan": "engine.plan",
    "Scenario": "engine.sim.scenario",
    "load_scenario": "engine.sim.scenario",
    "SimOptions": "engine.sim.montecarlo",
    "SimResult": "engine.sim.montecarlo",
    "simulate": "engine.sim.montecarlo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
