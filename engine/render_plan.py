"""Timeline renderers: table (rich), json, csv, ics (iCalendar), markdown (the SOP handbook)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from datetime import UTC, timedelta
from typing import Any

from .model import Action
from .plan import Timeline, render_messages
from .timeutil import format_duration
from .words import schedule_words

DURATIONS = {"task": 30, "live": 90, "meetup": 180}  # minutes on a calendar


def _title(tl: Timeline, action: str) -> str:
    a = tl.playbook.actions[action]
    return a.title if a.title != a.id else a.id


def plan_dict(tl: Timeline) -> dict[str, Any]:
    """The JSON document of a plan."""
    msgs = render_messages(tl)
    pb = tl.playbook
    return {
        "playbook": pb.id,
        "version": pb.version,
        "timezone": pb.timezone,
        "start": tl.start.isoformat(),
        "end": tl.end.isoformat(),
        "stages": [
            {
                "stage": w.stage,
                "start": w.start.isoformat(),
                "end": w.end.isoformat() if w.end else None,
            }
            for w in tl.windows
            if w.stage
        ],
        "transitions": [
            {
                "at": t.at.isoformat(),
                "stage": t.stage,
                "event": t.event,
                "detail": t.detail,
                "role": t.role,
            }
            for t in tl.transitions
        ],
        "occurrences": [
            {
                "key": o.key,
                "action": o.action,
                "stage": o.stage,
                "kind": o.kind,
                "at": o.at.isoformat(),
                "scheduled": o.scheduled.isoformat(),
                "owner": o.owner,
                "audience": o.audience,
                "backend": o.backend,
                "reason": o.reason or None,
                "message": msgs.get(o.action),
            }
            for o in tl.occurrences
        ],
        "event_rules": [
            {
                "action": a.id,
                "stage": a.stage,
                "kind": a.kind,
                "owner": a.owner,
                "rule": schedule_words(a),
                "expected_per_day": {
                    d.isoformat(): round(n, 2) for d, n in sorted(tl.expected.get(a.id, {}).items())
                },
            }
            for a in tl.event_rules
        ],
    }


def to_json(tl: Timeline) -> str:
    """Plan as JSON."""
    return json.dumps(plan_dict(tl), ensure_ascii=False, indent=2) + "\n"


def to_csv(tl: Timeline) -> str:
    """One row per occurrence."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "at", "stage", "action", "kind", "owner", "audience", "backend", "reason"])
    for o in tl.occurrences:
        w.writerow(
            [
                o.key,
                o.at.isoformat(),
                o.stage or "",
                o.action,
                o.kind,
                o.owner or "",
                o.audience,
                o.backend or "",
                o.reason,
            ]
        )
    return buf.getvalue()


def uid(key: str) -> str:
    """A stable iCalendar UID for an occurrence key: re-imports update, never duplicate."""
    return hashlib.sha1(key.encode()).hexdigest()[:32] + "@sop"


def to_ics(tl: Timeline) -> bytes:
    """iCalendar with VTIMEZONE, one VEVENT per occurrence, owner role as category."""
    from icalendar import Calendar, Event

    pb = tl.playbook
    msgs = render_messages(tl)
    cal = Calendar()
    cal.add("prodid", "-//sop//playbook plan//EN")
    cal.add("version", "2.0")
    cal.add("x-wr-calname", f"{pb.title} ({pb.id})")
    cal.add("x-wr-timezone", pb.timezone)
    stamp = tl.start.astimezone(UTC)  # deterministic: re-exports are byte-identical
    for o in tl.occurrences:
        ev = Event()
        ev.add("uid", uid(o.key))
        ev.add("dtstamp", stamp)
        ev.add("dtstart", o.at)
        ev.add("dtend", o.at + timedelta(minutes=DURATIONS.get(o.kind, 15)))
        stage = pb.stages[o.stage].title if o.stage else "routine"
        ev.add("summary", f"[{stage}] {_title(tl, o.action)}")
        desc = [
            f"action: {o.action} ({o.kind})",
            f"audience: {o.audience}",
            f"backend: {o.backend or '-'}",
            f"key: {o.key}",
        ]
        if o.reason:
            desc.append(o.reason)
        if msgs.get(o.action):
            desc += ["", str(msgs[o.action])]
        ev.add("description", "\n".join(desc))
        if o.owner:
            ev.add("categories", [o.owner])
        cal.add_component(ev)
    cal.add_missing_timezones()
    return bytes(cal.to_ical())


def to_markdown(tl: Timeline) -> str:
    """The printable SOP handbook: per stage, per role, what to do and when."""
    pb = tl.playbook
    counts: dict[str, int] = defaultdict(int)
    for o in tl.occurrences:
        counts[o.action] += 1
    lines = [
        f"# {pb.title}",
        "",
        f"SOP handbook for `{pb.id}` v{pb.version}, time zone"
        f" {pb.timezone}. Plan from {tl.start:%Y-%m-%d} to {tl.end:%Y-%m-%d}.",
        "",
    ]
    if pb.roles:
        lines += ["## Team", "", "| role | title | headcount |", "|---|---|---|"]
        lines += [f"| {r.id} | {r.title} | {r.headcount} |" for r in pb.roles.values()]
        lines.append("")
    timeline = {w.stage: w for w in tl.windows if w.stage}
    sections: list[tuple[str, str | None]] = [("Routines (every stage)", None)]
    sections += [(f"Stage: {s.title} (`{s.id}`)", s.id) for s in pb.stages.values()]
    for heading, sid in sections:
        actions = [a for a in pb.actions.values() if a.stage == sid]
        if not actions:
            continue
        lines += [f"## {heading}", ""]
        if sid:
            s = pb.stages[sid]
            w = timeline.get(sid)
            when = (
                f"{w.start:%Y-%m-%d} → {w.end:%Y-%m-%d}"
                if w and w.end
                else f"from {w.start:%Y-%m-%d}"
                if w
                else "not reached in this plan"
            )
            facts = [f"- **When**: {when}"]
            if s.after:
                facts.append(f"- **After**: {', '.join(s.after)}")
            if s.min_duration or s.max_duration:
                facts.append(
                    "- **Duration**: "
                    + ", ".join(
                        f"{k} {format_duration(v)}"
                        for k, v in (("min", s.min_duration), ("max", s.max_duration))
                        if v
                    )
                )
            if s.gate:
                facts.append(f"- **Exit gate**: `{s.gate.text}`")
            if s.deadline:
                d = s.deadline
                then = ", ".join(
                    x
                    for x in (
                        f"extend {format_duration(d.extend)}" if d.extend else "",
                        f"go to {d.goto}" if d.goto else "",
                        f"alert {d.alert}" if d.alert else "",
                        "abort" if d.abort else "",
                    )
                    if x
                )
                facts.append(f"- **Deadline**: {format_duration(d.after)} → {then}")
            lines += [*facts, ""]
        by_role: dict[str, list[Action]] = defaultdict(list)
        for a in actions:
            by_role[a.owner or "(unassigned)"].append(a)
        for role, acts in sorted(by_role.items()):
            title = pb.roles[role].title if role in pb.roles else role
            lines += [
                f"### {title} (`{role}`)",
                "",
                "| action | kind | when | to | times |",
                "|---|---|---|---|---|",
            ]
            for a in acts:
                lines.append(
                    f"| {_title(tl, a.id)} | {a.kind} | {schedule_words(a)} |"
                    f" {a.audience} | {counts.get(a.id, '—')} |"
                )
            lines.append("")
            for a in acts:
                text = (
                    pb.templates[a.template].text if a.template else (a.text.text if a.text else "")
                )
                if text:
                    quoted = "\n".join("> " + ln for ln in text.strip().splitlines())
                    lines += [f"**{_title(tl, a.id)}**", "", quoted, ""]
    return "\n".join(lines).rstrip() + "\n"


def to_table(tl: Timeline, console: Any) -> None:
    """A rich table per day: time, stage, action, owner, audience, backend."""
    from rich.table import Table

    pb = tl.playbook
    tz = tl.program.tz
    by_day: dict[Any, list[Any]] = defaultdict(list)
    for o in tl.occurrences:
        by_day[o.at.astimezone(tz).date()].append(o)
    trans: dict[Any, list[Any]] = defaultdict(list)
    for t in tl.transitions:
        trans[t.at.astimezone(tz).date()].append(t)
    for day in sorted(set(by_day) | set(trans)):
        table = Table(title=f"{day:%Y-%m-%d %a}", title_justify="left", expand=False)
        for col in ("time", "stage", "action", "kind", "owner", "audience", "backend"):
            table.add_column(col)
        for t in trans.get(day, []):
            who = f" → {t.role}" if t.role else ""
            table.add_row(
                f"{t.at.astimezone(tz):%H:%M}",
                pb.stages[t.stage].title,
                f"[bold]stage {t.event}[/] {t.detail}{who}",
                "",
                "",
                "",
                "",
            )
        for o in by_day.get(day, []):
            note = " ⏰" if o.reason else ""
            table.add_row(
                f"{o.at.astimezone(tz):%H:%M}{note}",
                pb.stages[o.stage].title if o.stage else "routine",
                _title(tl, o.action),
                o.kind,
                o.owner or "",
                o.audience,
                o.backend or "",
            )
        console.print(table)
    if tl.event_rules:
        table = Table(title="member-event rules", title_justify="left")
        for col in ("action", "stage", "rule", "owner", "expected/day"):
            table.add_column(col)
        for a in tl.event_rules:
            exp = tl.expected.get(a.id)
            avg = f"{sum(exp.values()) / max(len(exp), 1):.1f}" if exp else "—"
            table.add_row(a.id, a.stage or "routine", schedule_words(a), a.owner or "", avg)
        console.print(table)
    console.print(
        f"{len(tl.occurrences)} occurrences from {tl.start:%Y-%m-%d} to {tl.end:%Y-%m-%d}"
    )
