"""The playbook's standing facts as a plan shows them: targets, channels, members, admission,
points, teams, incidents and each stage's exits — plain data built once, rendered by every format.

Nothing here decides a rule: when an exit leads, how long an incident step may take, how big a
per-member task is come from the Program and the model; this module only lays them out. PII
attributes are listed by name, type and title; no value of theirs (not even a default) is shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from ..core.timeutil import format_duration
from ..lang.model import (
    Action,
    Audience,
    Effect,
    Exit,
    Incident,
    OnEvent,
    Playbook,
    Stage,
)
from ..program.admission import REVIEW_ACTION
from ..program.incidents import schedule
from ..program.lifecycle import exits_of
from ..program.targets import END_OF_HORIZON, due_day
from ..program.targets import targets as all_targets


def duration_text(td: timedelta | None) -> str | None:
    """A duration as the playbook spells it (`7d`, `1h30m`), None for none."""
    return None if td is None else format_duration(td)


def value_text(unit: str, v: float) -> str:
    """A metric value as a reader writes it: `30%` for ratios, `1,000` for counts."""
    if not math.isfinite(v):
        return str(v)
    if unit == "ratio":
        pct = v * 100
        return f"{pct:.0f}%" if abs(pct - round(pct)) < 1e-9 else f"{pct:.1f}%"
    if abs(v - round(v)) < 1e-9:
        return f"{round(v):,}"
    return f"{v:,.2f}".rstrip("0")


# -- targets -----------------------------------------------------------------------------------


def targets(pb: Playbook, start: date) -> list[dict[str, Any]]:
    """Each target with its direction and the date it is due: `by` days from the start
    (`program.targets.due_day`); without `by`, "end of horizon" (the end of whichever plan,
    simulation or run judges it, so it is no date of its own)."""
    units = pb.metric_units()
    rows = []
    for t in all_targets(pb).values():
        unit = units.get(t.metric, "count")
        rows.append(
            {
                "metric": t.metric,
                "unit": unit,
                "direction": "at_most" if t.at_most else "at_least",
                "value": t.value,
                "goal": ("≤ " if t.at_most else "≥ ") + value_text(unit, t.value),
                "within": duration_text(t.by),
                "by": (
                    (start + timedelta(days=due_day(t, 0))).isoformat()
                    if t.by is not None
                    else END_OF_HORIZON
                ),
            }
        )
    return rows


# -- members -----------------------------------------------------------------------------------


def attributes(pb: Playbook) -> list[dict[str, Any]]:
    """Declared member attributes; a PII attribute's default is withheld like its values."""
    return [
        {
            "id": a.id,
            "type": str(a.type),
            "title": a.title,
            "values": list(a.values),
            "pii": a.pii,
            "default": None if a.pii else a.default,
        }
        for a in pb.attributes.values()
    ]


def segments(pb: Playbook) -> list[dict[str, Any]]:
    """Segments with their conditions and planned sizes."""
    return [
        {"id": s.id, "title": s.title, "when": s.when.text, "size": s.size}
        for s in pb.segments.values()
    ]


def channels(pb: Playbook) -> list[dict[str, Any]]:
    """Acquisition channels with their planned shares."""
    return [
        {
            "id": c.id,
            "title": c.title,
            "share": c.share,
            "referral": c.referral,
            "opens": c.opens,
        }
        for c in pb.channels.values()
    ]


def admission(pb: Playbook) -> dict[str, Any] | None:
    """The entry threshold: what an application needs, who reviews it and how soon."""
    a = pb.admission
    if a is None:
        return None
    return {
        "require": list(a.require),
        "approve": a.approve.text if a.approve else None,
        "review": {"owner": a.review_owner, "within": duration_text(a.review_within)},
    }


def review_action(pb: Playbook) -> Action | None:
    """The review task `admission:` makes for each application not approved at once, as an
    action done on `member.applied` by the review owner, due within `review.within`."""
    a = pb.admission
    if a is None:
        return None
    return Action(
        id=REVIEW_ACTION,
        stage=None,
        kind="task",
        schedule=OnEvent("member.applied", within=a.review_within),
        owner=a.review_owner,
        audience=Audience.STAFF.value,
        backend=None,
        template=None,
        text=None,
        quiet_hours=None,
        retries=0,
        effect=Effect(),
        guard=None,
        reward_item=None,
        reward_streak=None,
        reward_points=None,
        title="Review the application"
        + (f" (unless {a.approve.text} approves it at once)" if a.approve else ""),
    )


def points(pb: Playbook) -> dict[str, Any] | None:
    """The points ledger: what earns points, what they buy, when they lapse."""
    p = pb.points
    if p is None:
        return None
    return {
        "earn": dict(p.earn),
        "expire": duration_text(p.expire),
        "redeem": [
            {"id": r.id, "title": r.title, "cost": r.cost, "stock": r.stock}
            for r in p.redeem.values()
        ],
    }


def teams(pb: Playbook) -> dict[str, Any] | None:
    """Teams for PK contests: their names, how members are split, what a team scores."""
    t = pb.teams
    if t is None:
        return None
    return {"names": list(t.names), "assign": str(t.assign), "by": t.by, "score": t.score}


# -- incidents ---------------------------------------------------------------------------------


def incident_steps(inc: Incident) -> list[dict[str, Any]]:
    """An incident's steps in time order: who does what, when after the opening it starts and by
    when it must be answered (the Program's `incidents.schedule`, which run follows too)."""
    return [
        {
            "step": st.index + 1,
            "kind": st.step.kind,
            "target": st.step.target,
            "who": st.role,
            "at": format_duration(st.at),
            "due": duration_text(st.due),
            "only_if_open": st.only_if_open,
            "template": st.step.template,
            "text": st.step.text,
        }
        # in time order (each time counts from the opening), keeping the written step numbers
        for st in sorted(schedule(inc), key=lambda st: st.at)
    ]


def incidents(pb: Playbook) -> list[dict[str, Any]]:
    """Every incident: title, owner, what detects it, and its ordered steps."""
    return [
        {
            "id": inc.id,
            "title": inc.title,
            "owner": inc.owner,
            "detect": inc.detect.text if inc.detect else None,
            "steps": incident_steps(inc),
        }
        for inc in pb.incidents.values()
    ]


def offset_words(step: Mapping[str, Any]) -> str:
    """When a step is due after the incident opens: `at opening, answer within 30m`, `+4h if
    still open`."""
    words = "at opening" if step["at"] == "0m" else f"+{step['at']}"
    if step["due"]:
        words += f", answer within {step['due']}"
    if step["only_if_open"]:
        words += " if still open"
    return words


def step_words(step: Mapping[str, Any]) -> str:
    """One incident step in words: `alert ops`, `escalate to content`, `post (template revive)`."""
    if step["kind"] == "alert":
        what = f"alert {step['target']}"
    elif step["kind"] == "escalate":
        what = f"escalate to {step['target']}"
    else:
        what = str(step["target"])
        if step["template"]:
            what += f" (template {step['template']})"
    if step["text"]:
        what += f": {step['text']}"
    return what


# -- exits -------------------------------------------------------------------------------------


def exit_destinations(e: Exit, successors: Sequence[str]) -> list[str]:
    """Where an exit leads: its `goto`, else the stage's `after:` successors (none: the end)."""
    return [e.goto] if e.goto else list(successors)


def exit_words(e: Exit) -> str:
    """An exit's condition with its hold: `core_members >= 500 for 7d`."""
    hold = f" for {format_duration(e.hold)}" if e.hold else ""
    return e.when.text + hold


def exits(stage: Stage, successors: Sequence[str]) -> list[dict[str, Any]]:
    """A stage's exits in the order they are tried."""
    return [
        {
            "id": e.id,
            "when": e.when.text,
            "for": duration_text(e.hold),
            "goto": e.goto,
            "to": exit_destinations(e, successors),
        }
        for e in exits_of(stage)
    ]


# -- per-action facts --------------------------------------------------------------------------


def group_size(pb: Playbook, audience: str) -> int | None:
    """The planned size of a `tier:` / `segment:` audience (Tier.size, Segment.size), else None."""
    tid = Audience.tier_of(audience)
    if tid is not None and pb.tiers is not None:
        return next((t.size for t in pb.tiers.levels if t.id == tid), None)
    sid = Audience.segment_of(audience)
    if sid is not None and sid in pb.segments:
        return pb.segments[sid].size
    return None


def tasks_per_firing(pb: Playbook, a: Action) -> int | None:
    """Staff tasks one firing makes: 1, or for `for_each` the planned size (None: unknown)."""
    if a.for_each is None:
        return 1
    return group_size(pb, a.for_each)


def action_facts(pb: Playbook, a: Action) -> dict[str, Any]:
    """The audience details of an action for JSON: `where`, `for_each` with its size, `top`."""
    top = a.top
    return {
        "where": a.where.text if a.where else None,
        "for_each": a.for_each,
        "tasks": tasks_per_firing(pb, a),
        "top": (
            {"n": top.n, "by": top.by, "teams": top.teams, "among": top.among}
            if top is not None
            else None
        ),
    }
