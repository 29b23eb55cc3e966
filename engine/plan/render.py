"""Timeline renderers: table (rich), json, csv, ics (iCalendar), markdown (the SOP handbook).

Each format is written to a stream as it is produced, occurrence by occurrence, so no renderer
holds the whole document as one string. Playbook text is untrusted: the table escapes it for rich
and the terminal, markdown shows control characters escaped, ICS replaces the characters
iCalendar cannot carry, JSON is strict and CSV relies on its own quoting.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import chain
from typing import IO, Any

from ..core.textsafe import csv_cell, dumps, markup, terminal
from ..core.timeutil import format_duration
from ..lang.model import Action, Stage
from ..program import Occurrence
from ..program.lifecycle import exits_of
from ..program.targets import END_OF_HORIZON
from . import sections
from .timeline import Timeline, render_messages
from .words import audience_words, schedule_words

DURATIONS = {"task": 30, "live": 90, "meetup": 180}  # minutes on a calendar
# Formats slower per occurrence than the plan's own bound (a rich table row or an icalendar event
# costs about a millisecond): beyond these, csv and json carry the plan in seconds.
MAX_ROWS = {"table": 5_000, "ics": 10_000}


def too_large(tl: Timeline, fmt: str) -> str | None:
    """Why the plan is too large to render as `fmt`, or None."""
    limit = MAX_ROWS.get(fmt)
    if limit is None or len(tl.occurrences) <= limit:
        return None
    return (
        f"the plan has {len(tl.occurrences):,} occurrences; --format {fmt} shows at most"
        f" {limit:,} (plan fewer days, filter with --role/--stage, or use --format csv or json)"
    )


def _title(tl: Timeline, action: str) -> str:
    a = tl.playbook.actions[action]
    return a.title if a.title != a.id else a.id


def plan_dict(tl: Timeline) -> dict[str, Any]:
    """The JSON document of a plan."""
    msgs = render_messages(tl)
    doc = _head(tl)
    facts = _ActionFacts(tl)
    doc["occurrences"] = [_occurrence_dict(o, msgs, facts) for o in tl.occurrences]
    doc["event_rules"] = _event_rules(tl)
    return doc


class _ActionFacts(dict[str, dict[str, Any]]):
    """The audience details of each action (`sections.action_facts`), built once per action."""

    def __init__(self, tl: Timeline) -> None:
        super().__init__()
        self._pb = tl.playbook
        self._rules = {a.id: a for a in tl.event_rules}  # with admission's review task

    def __missing__(self, aid: str) -> dict[str, Any]:
        a = self._pb.actions.get(aid) or self._rules[aid]
        facts = {"to": audience_words(a, where=False), **sections.action_facts(self._pb, a)}
        self[aid] = facts
        return facts


def facts_dict(tl: Timeline) -> dict[str, Any]:
    """The playbook's standing facts in a plan: exits by stage, targets (due dates from the
    plan's start), channels, member attributes and segments, admission, points, teams and
    incidents."""
    pb = tl.playbook
    tz = tl.program.tz
    first = tl.start.astimezone(tz).date()
    succ = tl.program.successors
    return {
        "exits": {
            s.id: sections.exits(s, succ.get(s.id, ())) for s in pb.stages.values() if exits_of(s)
        },
        "targets": sections.targets(pb, first),
        "channels": sections.channels(pb),
        "attributes": sections.attributes(pb),
        "segments": sections.segments(pb),
        "admission": sections.admission(pb),
        "points": sections.points(pb),
        "teams": sections.teams(pb),
        "incidents": sections.incidents(pb),
    }


def _head(tl: Timeline) -> dict[str, Any]:
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
        "transitions": [t.as_dict() for t in tl.transitions],
        **facts_dict(tl),
    }


def _occurrence_dict(
    o: Occurrence, msgs: dict[str, str | None], facts: _ActionFacts
) -> dict[str, Any]:
    return {
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
        **facts[o.action],
    }


@dataclass(frozen=True)
class EventRule:
    """An action done per member event rather than on a date: a rule, or one chained after it."""

    action: Action
    trigger: str | None  # the event rule it is chained after (`after: welcome`), or None
    expected: dict[date, float]  # expected count per day, from --joins-per-day


def event_rules(tl: Timeline) -> list[EventRule]:
    """The plan's member-event rules, each followed by the actions chained after it."""
    chained: dict[str, list[tuple[Action, timedelta]]] = defaultdict(list)
    for c, root, off in tl.chained:
        chained[root.id].append((c, off))
    shown = {a.id for a in tl.event_rules}  # a rule filtered out (--role) keeps its chain
    out = []
    listed = set()
    for a in [*tl.event_rules, *(r for _, r, _ in tl.chained)]:
        if a.id in listed:
            continue
        listed.add(a.id)
        exp = tl.expected.get(a.id, {})
        if a.id in shown:
            out.append(EventRule(a, None, exp))
        for c, off in chained.get(a.id, ()):
            out.append(EventRule(c, a.id, _shifted(exp, off, tl)))
    return out


def _shifted(expected: dict[date, float], offset: timedelta, tl: Timeline) -> dict[date, float]:
    """Counts of a rule moved by a chained action's offset (whole days), kept inside the plan."""
    tz = tl.program.tz
    first, last = (
        tl.start.astimezone(tz).date(),
        (tl.end - timedelta(seconds=1)).astimezone(tz).date(),
    )
    out: dict[date, float] = defaultdict(float)
    for d, n in expected.items():
        # the rule's members arrive through the day: count them at noon, as expected_counts does
        day = (datetime.combine(d, time(12)) + offset).date()
        if first <= day <= last:
            out[day] += n
    return dict(out)


def _event_rules(tl: Timeline) -> list[dict[str, Any]]:
    facts = _ActionFacts(tl)
    return [
        {
            "action": r.action.id,
            "stage": r.action.stage,
            "kind": r.action.kind,
            "owner": r.action.owner,
            "audience": r.action.audience,
            "rule": schedule_words(r.action),
            "event_rule": r.trigger,
            "expected_per_day": {d.isoformat(): round(n, 2) for d, n in sorted(r.expected.items())},
            **facts[r.action.id],
        }
        for r in event_rules(tl)
    ]


def write_json(tl: Timeline, out: IO[str]) -> None:
    """Plan as strict JSON, the occurrences written one at a time (same text as plan_dict)."""
    msgs = render_messages(tl)
    facts = _ActionFacts(tl)
    head = dumps(_head(tl))
    out.write(head[: -len("\n}")] + ',\n  "occurrences": ')
    if not tl.occurrences:
        out.write("[]")
    for i, o in enumerate(tl.occurrences):
        # an item of a list inside the document: indented by two levels, as json.dumps would
        text = dumps(_occurrence_dict(o, msgs, facts)).replace("\n", "\n    ")
        out.write(("[\n    " if i == 0 else ",\n    ") + text)
    if tl.occurrences:
        out.write("\n  ]")
    rules = dumps(_event_rules(tl)).replace("\n", "\n  ")
    out.write(',\n  "event_rules": ' + rules + "\n}\n")


def to_json(tl: Timeline) -> str:
    """Plan as JSON."""
    return _text(write_json, tl)


def _text(writer: Callable[[Timeline, IO[str]], None], tl: Timeline) -> str:
    buf = io.StringIO()
    writer(tl, buf)
    return buf.getvalue()


def to_csv(tl: Timeline) -> str:
    """One row per occurrence."""
    return _text(write_csv, tl)


CSV_COLUMNS = ("key", "at", "stage", "action", "kind", "owner", "audience", "backend", "reason")
# after `rule`: a member condition, the staff tasks of one row (per-member tasks: the planned size
# of the group, empty when unknown), and the incident a step row belongs to
CSV_EXTRA = ("where", "tasks", "incident")


def write_csv(tl: Timeline, out: IO[str]) -> None:
    """One row per occurrence, written as it goes (the csv module quotes every field); then one
    row per member-event rule and chained action, with no key or time and its rule in words;
    then one row per incident step, its offset from the incident's opening in `rule`.

    Ids cannot start a formula today (they start with a letter); every cell still goes through
    `csv_cell`, so a field added later cannot carry `=cmd|...` into a spreadsheet.
    """
    pb = tl.playbook
    facts = _ActionFacts(tl)
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*CSV_COLUMNS, "rule", *CSV_EXTRA])

    def extra(aid: str) -> list[str]:
        f = facts[aid]
        return [f["where"] or "", "" if f["tasks"] is None else str(f["tasks"]), ""]

    for o in tl.occurrences:
        w.writerow(
            csv_cell(c)
            for c in [
                o.key,
                o.at.isoformat(),
                o.stage or "",
                o.action,
                o.kind,
                o.owner or "",
                facts[o.action]["to"],
                o.backend or "",
                o.reason,
                "",
                *extra(o.action),
            ]
        )
    for r in event_rules(tl):
        a = r.action
        w.writerow(
            csv_cell(c)
            for c in [
                "",
                "",
                a.stage or "",
                a.id,
                a.kind,
                a.owner or "",
                facts[a.id]["to"],
                a.backend or "",
                "",
                schedule_words(a),
                *extra(a.id),
            ]
        )
    for inc in pb.incidents.values():
        for st in sections.incident_steps(inc):
            when = sections.offset_words(st)
            w.writerow(
                csv_cell(c)
                for c in [
                    "",
                    "",
                    "",
                    "",
                    st["kind"],
                    st["who"],
                    "",
                    "",
                    "",
                    f"step {st['step']}, {when}: {sections.step_words(st)}",
                    "",
                    "",
                    inc.id,
                ]
            )


def uid(key: str) -> str:
    """A stable iCalendar UID for an occurrence key: re-imports update, never duplicate."""
    return hashlib.sha1(key.encode()).hexdigest()[:32] + "@sop"


# iCalendar TEXT cannot carry control characters (RFC 5545 §3.3.11); icalendar escapes newlines,
# commas, semicolons and backslashes itself but passes these through.
_ICS_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _ics_text(text: str) -> str:
    """Multi-line text for iCalendar: newlines kept, other control characters replaced."""
    return _ICS_CONTROL.sub("\ufffd", text.replace("\r\n", "\n"))


def to_ics(tl: Timeline) -> bytes:
    """iCalendar with VTIMEZONE, one VEVENT per occurrence (owner role as category), then one
    VTODO per target due inside the plan."""
    buf = io.BytesIO()
    write_ics(tl, buf)
    return buf.getvalue()


def write_ics(tl: Timeline, out: IO[bytes]) -> None:
    """iCalendar written event by event: the calendar's head (with the VTIMEZONE its events
    need), then each VEVENT, then its end — the same bytes as one Calendar.to_ical()."""
    from icalendar import Calendar

    pb = tl.playbook
    msgs = render_messages(tl)
    cal = Calendar()
    cal.add("prodid", "-//sop//playbook plan//EN")
    cal.add("version", "2.0")
    cal.add("x-wr-calname", terminal(f"{pb.title} ({pb.id})"))
    cal.add("x-wr-timezone", pb.timezone)
    stamp = tl.start.astimezone(UTC)  # deterministic: re-exports are byte-identical
    facts = _ActionFacts(tl)
    # the targets are to-dos due on their dates, after the events (one VEVENT per occurrence)
    events = chain(
        (_event(tl, o, msgs, stamp, facts) for o in tl.occurrences), _target_todos(tl, stamp)
    )
    first = next(events, None)
    if first is not None:
        cal.add_component(first)
        cal.add_missing_timezones()  # every event has the playbook's zone: the first tells
    end = b"END:VCALENDAR\r\n"
    head = bytes(cal.to_ical())
    assert head.endswith(end)
    out.write(head[: -len(end)])
    for ev in events:
        out.write(bytes(ev.to_ical()))
    out.write(end)


def _target_todos(tl: Timeline, stamp: Any) -> Iterator[Any]:
    """One VTODO per target due inside the plan, due on its date."""
    from icalendar import Todo

    pb = tl.playbook
    tz = tl.program.tz
    first = tl.start.astimezone(tz).date()
    last = tl.end.astimezone(tz).date()
    for t in sections.targets(pb, first):
        # a target without `by` is due at the end of the plan: its last day here
        due = last if t["by"] == END_OF_HORIZON else date.fromisoformat(t["by"])
        if not first <= due <= last:
            continue  # due after the plan
        ev = Todo()
        ev.add("uid", uid(f"{pb.id}/target/{t['metric']}/{t['by']}"))
        ev.add("dtstamp", stamp)
        ev.add("due", due)
        ev.add("summary", terminal(f"target: {t['metric']} {t['goal']}"))
        ev.add("description", _ics_text(f"metric: {t['metric']}\ngoal: {t['goal']} by {due}"))
        yield ev


def _event(
    tl: Timeline, o: Occurrence, msgs: dict[str, str | None], stamp: Any, facts: _ActionFacts
) -> Any:
    from icalendar import Event

    pb = tl.playbook
    ev = Event()
    ev.add("uid", uid(o.key))
    ev.add("dtstamp", stamp)
    ev.add("dtstart", o.at)
    ev.add("dtend", o.at + timedelta(minutes=DURATIONS.get(o.kind, 15)))
    stage = pb.stages[o.stage].title if o.stage else "routine"
    ev.add("summary", terminal(f"[{stage}] {_title(tl, o.action)}"))
    f = facts[o.action]
    desc = [
        f"action: {o.action} ({o.kind})",
        f"audience: {f['to']}",
        f"backend: {o.backend or '-'}",
        f"key: {o.key}",
    ]
    if f["where"]:
        desc.append(f"where: {f['where']}")
    if f["for_each"]:
        n = f["tasks"]
        desc.append(f"tasks: {n if n is not None else 'unknown (no planned size)'}")
    if o.reason:
        desc.append(o.reason)
    if msgs.get(o.action):
        desc += ["", str(msgs[o.action])]
    ev.add("description", _ics_text("\n".join(desc)))
    if o.owner:
        ev.add("categories", [terminal(o.owner)])
    return ev


def _cell(text: str) -> str:
    """User text in a markdown table cell: one line, and a `|` cannot open another cell."""
    return terminal(text).replace("|", "\\|")


def to_markdown(tl: Timeline) -> str:
    """The printable SOP handbook: per stage, per role, what to do and when."""
    return _text(write_markdown, tl)


def write_markdown(tl: Timeline, out: IO[str]) -> None:
    """The SOP handbook, section by section; user text on one line, control characters escaped."""
    pb = tl.playbook
    t = terminal
    counts: dict[str, int] = defaultdict(int)
    for o in tl.occurrences:
        counts[o.action] += 1
    lines = [
        f"# {t(pb.title)}",
        "",
        f"SOP handbook for `{pb.id}` v{t(pb.version)}, time zone"
        f" {pb.timezone}. Plan from {tl.start:%Y-%m-%d} to {tl.end:%Y-%m-%d}.",
        "",
    ]
    if pb.roles:
        lines += ["## Team", "", "| role | title | headcount |", "|---|---|---|"]
        lines += [f"| {r.id} | {_cell(r.title)} | {r.headcount} |" for r in pb.roles.values()]
        lines.append("")
    facts = facts_dict(tl)
    lines += _md_targets(facts["targets"])
    lines += _md_channels(facts["channels"])
    lines += _md_members(facts["attributes"], facts["segments"])
    lines += _md_admission(facts["admission"])
    lines += _md_points(facts["points"])
    lines += _md_teams(facts["teams"])
    timeline = {w.stage: w for w in tl.windows if w.stage}
    written = ""
    sections: list[tuple[str, str | None]] = [("Routines (every stage)", None)]
    sections += [(f"Stage: {t(s.title)} (`{s.id}`)", s.id) for s in pb.stages.values()]
    for heading, sid in sections:
        actions = [a for a in pb.actions.values() if a.stage == sid]
        if not actions and sid is None:
            continue  # a stage is listed even without actions: its timing and exits
        lines += [f"## {heading}", ""]
        if sid:
            lines += [*_stage_facts(tl, sid, timeline.get(sid)), ""]
        by_role: dict[str, list[Action]] = defaultdict(list)
        for a in actions:
            by_role[a.owner or "(unassigned)"].append(a)
        for role, acts in sorted(by_role.items()):
            title = pb.roles[role].title if role in pb.roles else role
            lines += [
                f"### {t(title)} (`{role}`)",
                "",
                "| action | kind | when | to | times |",
                "|---|---|---|---|---|",
            ]
            for a in acts:
                lines.append(
                    f"| {_cell(_title(tl, a.id))} | {a.kind} | {_cell(schedule_words(a))} |"
                    f" {_cell(audience_words(a))} | {_times(tl, a, counts.get(a.id))} |"
                )
            lines.append("")
            for a in acts:
                text = (
                    pb.templates[a.template].text if a.template else (a.text.text if a.text else "")
                )
                if text:
                    quoted = "\n".join("> " + t(ln) for ln in text.strip().splitlines())
                    lines += [f"**{t(_title(tl, a.id))}**", "", quoted, ""]
        # a section goes out once the next one starts; the last one ends with one newline
        out.write(written)
        written, lines = "\n".join(lines) + "\n", []
    incidents = _md_incidents(facts["incidents"])
    if incidents:
        lines = [*(lines or [""]), *incidents]
    out.write((written + "\n".join(lines)).rstrip() + "\n")


def _code(text: str) -> str:
    """User text as markdown inline code on one line (a backtick inside widens the fence)."""
    text = terminal(text)
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def _times(tl: Timeline, a: Action, n: int | None) -> str:
    """How often an action is done in the plan; a per-member task says how many tasks that is."""
    if n is None:
        return "—"
    if a.for_each is None:
        return str(n)
    size = sections.tasks_per_firing(tl.playbook, a)
    if size is None:
        return f"{n} × ? tasks (no planned size of {_cell(a.for_each)})"
    return f"{n} × {size} = {n * size} tasks"


def _md_targets(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = ["## Targets", "", "| metric | goal | by |", "|---|---|---|"]
    for r in rows:
        within = f" ({r['within']} from the start)" if r["within"] else ""
        out.append(f"| {_cell(r['metric'])} | {_cell(r['goal'])} | {r['by']}{within} |")
    return [*out, ""]


def _md_channels(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = [
        "## Acquisition channels",
        "",
        "| channel | title | planned share | opens |",
        "|---|---|---|---|",
    ]
    for c in rows:
        share = "—" if c["share"] is None else sections.value_text("ratio", c["share"])
        if c["referral"]:
            share += " (referrals land here)"
        opens = f"in stage `{c['opens']}`" if c["opens"] else "from the start"
        out.append(f"| {c['id']} | {_cell(c['title'])} | {share} | {_cell(opens)} |")
    return [*out, ""]


def _md_members(attrs: list[dict[str, Any]], segs: list[dict[str, Any]]) -> list[str]:
    if not attrs and not segs:
        return []
    out = ["## Members", ""]
    if attrs:
        out += [
            "### Attributes",
            "",
            "| attribute | type | title | values |",
            "|---|---|---|---|",
        ]
        for a in attrs:
            values = ", ".join(a["values"]) or "—"
            if a["pii"]:
                values = "personal data (PII): never shown in plans, logs or the dashboard"
            out.append(f"| {a['id']} | {a['type']} | {_cell(a['title'])} | {_cell(values)} |")
        out.append("")
    if segs:
        out += [
            "### Segments",
            "",
            "| segment | title | condition | planned size |",
            "|---|---|---|---|",
        ]
        for g in segs:
            size = "—" if g["size"] is None else f"{g['size']:,}"
            out.append(f"| {g['id']} | {_cell(g['title'])} | {_cell(_code(g['when']))} | {size} |")
        out.append("")
    return out


def _md_admission(adm: dict[str, Any] | None) -> list[str]:
    if adm is None:
        return []
    out = ["## Admission", ""]
    req = ", ".join(f"`{r}`" for r in adm["require"]) or "nothing"
    out.append(f"- **An application must give**: {req}")
    if adm["approve"]:
        out.append(f"- **Approved at once when**: {_code(adm['approve'])}")
    review = adm["review"]
    out.append(f"- **Otherwise reviewed by**: `{review['owner']}` within {review['within']}")
    return [*out, ""]


def _md_points(p: dict[str, Any] | None) -> list[str]:
    if p is None:
        return []
    out = ["## Points", "", "| earned by | points |", "|---|---|"]
    out += [f"| {_cell(ev)} | {n:,} |" for ev, n in p["earn"].items()]
    out.append("")
    if p["expire"]:
        out += [f"Points lapse {p['expire']} after they are earned.", ""]
    if p["redeem"]:
        out += ["| item | title | cost | stock |", "|---|---|---|---|"]
        for r in p["redeem"]:
            stock = "unlimited" if r["stock"] is None else f"{r['stock']:,}"
            out.append(f"| {r['id']} | {_cell(r['title'])} | {r['cost']:,} | {stock} |")
        out.append("")
    return out


def _md_teams(tm: dict[str, Any] | None) -> list[str]:
    if tm is None:
        return []
    assign = tm["assign"] + (f" by `{tm['by']}`" if tm["by"] else "")
    names = ", ".join(_cell(n) for n in tm["names"]) or "one per value of the attribute"
    return [
        "## Teams",
        "",
        f"- **Teams**: {names}",
        f"- **Members are assigned**: {assign}",
        f"- **A team scores**: the sum of its members' `{tm['score']}`",
        "",
    ]


def _md_incidents(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = ["## Incidents", ""]
    for inc in rows:
        out += [f"### {terminal(inc['title'])} (`{inc['id']}`)", ""]
        out.append(f"- **Owner**: `{inc['owner']}`")
        if inc["detect"]:
            out.append(f"- **Opened when**: {_code(inc['detect'])}")
        else:
            out.append("- **Opened by**: staff (`sop incident open`)")
        out += ["", "| step | due | who | what |", "|---|---|---|---|"]
        for st in inc["steps"]:
            out.append(
                f"| {st['step']} | {sections.offset_words(st)} | {_cell(st['who'])} |"
                f" {_cell(sections.step_words(st))} |"
            )
        out.append("")
    return out


def _stage_facts(tl: Timeline, sid: str, w: Any) -> list[str]:
    s = tl.playbook.stages[sid]
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
    opening = [c.id for c in tl.playbook.channels.values() if c.opens == sid]
    if opening:
        facts.append("- **Opens channels**: " + ", ".join(f"`{c}`" for c in opening))
    succ = tl.program.successors.get(sid, [])
    exits = exits_of(s)
    if len(exits) == 1 and exits[0].id == "pass":
        e = exits[0]
        hold = f" for {format_duration(e.hold)}" if e.hold else ""
        facts.append(f"- **Exit gate**: {_code(e.when.text)}{hold} → {_leads(tl, e, succ)}")
    elif exits:
        facts.append("- **Exits** (tried in order; the first that holds wins):")
        for i, e in enumerate(exits, start=1):
            hold = f" for {format_duration(e.hold)}" if e.hold else ""
            facts.append(f"  {i}. `{e.id}`: {_code(e.when.text)}{hold} → {_leads(tl, e, succ)}")
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
    return facts


def _task_count(tl: Timeline, aid: str) -> str:
    """` (30 tasks)` after a per-member task (`(? tasks)` without a planned size)."""
    a = tl.playbook.actions[aid]
    if a.for_each is None:
        return ""
    n = sections.tasks_per_firing(tl.playbook, a)
    return f" ({'?' if n is None else n} tasks)"


def _table_facts(tl: Timeline, console: Any) -> None:
    """After the calendar: the targets and the incident steps (the handbook has the rest)."""
    from rich.table import Table

    m = markup
    facts = facts_dict(tl)
    if facts["targets"]:
        table = Table(title="targets", title_justify="left")
        for col in ("metric", "goal", "by"):
            table.add_column(col)
        for r in facts["targets"]:
            table.add_row(m(r["metric"]), m(r["goal"]), r["by"])
        console.print(table)
    for inc in facts["incidents"]:
        table = Table(title=f"incident {m(inc['id'])}: {m(inc['title'])}", title_justify="left")
        for col in ("step", "due", "who", "what"):
            table.add_column(col)
        for st in inc["steps"]:
            table.add_row(
                str(st["step"]),
                sections.offset_words(st),
                m(st["who"]),
                m(sections.step_words(st)),
            )
        console.print(table)


def _leads(tl: Timeline, e: Any, successors: list[str]) -> str:
    """Where an exit leads, in words; an optional successor starts only when it is included."""
    stages = tl.playbook.stages
    to = [
        f"`{x}`" + (" (optional)" if stages[x].optional and not e.goto else "")
        for x in sections.exit_destinations(e, successors)
    ]
    return ", ".join(to) if to else "the playbook ends"


def _exit_goto(stage: Stage, exit_id: str | None) -> str | None:
    """The stage the exit `exit_id` of `stage` jumps to, None when it is a plain pass."""
    return next((e.goto for e in exits_of(stage) if e.id == exit_id), None)


def to_table(tl: Timeline, console: Any) -> None:
    """A rich table per day: time, stage, action, owner, audience, backend (user text escaped)."""
    from rich.table import Table

    pb = tl.playbook
    tz = tl.program.tz
    m = markup
    audiences = {aid: audience_words(a) for aid, a in pb.actions.items()}
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
            who = f" → {m(t.role)}" if t.role else ""
            # the single `exit:` is `pass`: "passed" says it already
            by = (
                f" by exit {m(t.exit)}"
                if t.exit not in (None, "pass") and t.event != "goto"
                else ""
            )
            what = f"[bold]stage {t.event}[/]{by}"
            goto = _exit_goto(pb.stages[t.stage], t.exit) if t.event == "passed" else None
            if goto:  # a jump (e.g. decline → dissolution) is no pass: `after:` joins wait
                what = f"[bold]stage left[/] by exit {m(t.exit or '')} → {m(goto)}"
            table.add_row(
                f"{t.at.astimezone(tz):%H:%M}",
                m(pb.stages[t.stage].title),
                f"{what} {m(t.detail)}{who}",
                "",
                "",
                "",
                "",
            )
        for o in by_day.pop(day, []):
            note = " ⏰" if o.reason else ""
            table.add_row(
                f"{o.at.astimezone(tz):%H:%M}{note}",
                m(pb.stages[o.stage].title) if o.stage else "routine",
                m(_title(tl, o.action)) + _task_count(tl, o.action),
                o.kind,
                m(o.owner or ""),
                m(audiences[o.action]),
                m(o.backend or ""),
            )
        console.print(table)
    rules = event_rules(tl)
    if rules:
        table = Table(title="member-event rules", title_justify="left")
        for col in ("action", "stage", "rule", "owner", "expected/day"):
            table.add_column(col)
        for r in rules:
            a, exp = r.action, r.expected
            avg = f"{sum(exp.values()) / max(len(exp), 1):.1f}" if exp else "—"
            rule = schedule_words(a)
            if a.where is not None or a.audience not in ("member", "staff"):
                rule += f" → {audiences[a.id]}"
            table.add_row(a.id, a.stage or "routine", m(rule), m(a.owner or ""), avg)
        console.print(table)
    _table_facts(tl, console)
    console.print(
        f"{len(tl.occurrences)} occurrences from {tl.start:%Y-%m-%d} to {tl.end:%Y-%m-%d}"
    )
