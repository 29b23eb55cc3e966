"""sop: community-operations playbooks as code.

The public API, imported lazily so that `sop --help` and `sop validate` stay fast:

    from sop.engine import validate_paths, load_playbook, Program, make_plan, PlanOptions
    from sop.engine import simulate, SimOptions, load_scenario, diff, judge
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Diagnostic": "sop.engine.core.diagnostics",
    "Severity": "sop.engine.core.diagnostics",
    "ExitCode": "sop.engine.core.status",
    "UsageError": "sop.engine.core.status",
    "Options": "sop.engine.validate",
    "ValidateOptions": "sop.engine.validate",
    "ValidationReport": "sop.engine.validate",
    "FileResult": "sop.engine.validate",
    "validate_file": "sop.engine.validate",
    "validate_paths": "sop.engine.validate",
    "validate_report": "sop.engine.validate",
    "check_plan_options": "sop.engine.validate",
    "load_playbook": "sop.engine.validate",
    "BackendSpec": "sop.engine.lang.model",
    "Playbook": "sop.engine.lang.model",
    "Program": "sop.engine.program",
    "Occurrence": "sop.engine.program",
    "Lifecycle": "sop.engine.program",
    "LifecycleState": "sop.engine.program.lifecycle",
    "StageWindow": "sop.engine.program.lifecycle",
    "Transition": "sop.engine.program.lifecycle",
    "MetricDefinition": "sop.engine.program.metrics",
    "DEFINITIONS": "sop.engine.program.metrics",
    "Verdict": "sop.engine.program.gates",
    "judge": "sop.engine.program.gates",
    "Clause": "sop.engine.program.gates",
    "ExitStatus": "sop.engine.program.gates",
    "weak_links": "sop.engine.program.gates",
    "exit_status": "sop.engine.program.gates",
    "ExitOracle": "sop.engine.program.lifecycle",
    "Diff": "sop.engine.plan.diff",
    "PlanDelta": "sop.engine.plan.diff",
    "diff": "sop.engine.plan.diff",
    "PlanOptions": "sop.engine.plan.timeline",
    "Timeline": "sop.engine.plan.timeline",
    "make_plan": "sop.engine.plan.timeline",
    "Scenario": "sop.engine.sim.scenario",
    "load_scenario": "sop.engine.sim.scenario",
    "SimOptions": "sop.engine.sim.montecarlo",
    "SimResult": "sop.engine.sim.montecarlo",
    "Sweep": "sop.engine.sim.montecarlo",
    "ScenarioError": "sop.engine.sim.scenario",
    "simulate": "sop.engine.sim.montecarlo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sop.engine' has no attribute {name!r}")
