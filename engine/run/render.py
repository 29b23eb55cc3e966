"""`sop status` for a terminal (JSON is `Status.as_dict()`)."""

from __future__ import annotations

from typing import Any

from ..core.textsafe import terminal
from .service import Status


def _num(v: float | None) -> str:
    if v is None:
        return "undefined"
    return f"{v:.4g}" if v != int(v) else f"{int(v)}"


def status_text(st: Status) -> str:
    """The status as plain text, the most urgent first."""
    lines = [f"run {terminal(st.run)} (playbook {terminal(st.playbook)}), started "
             f"{st.origin:%Y-%m-%d}"]  # fmt: skip
    if st.finished:
        lines.append(f"  the playbook ended on {st.finished:%Y-%m-%d}")
    for s in st.stages:
        if s["ended"] is not None and s.get("exit"):
            lines.append(f"  stage {terminal(s['stage'])}: left by exit {terminal(s['exit'])}"
                         f" on {s['ended'][:10]}")  # fmt: skip
        if s["ended"] is None:
            deadline = f", deadline {s['deadline'][:10]}" if s["deadline"] else ""
            when = f"day {s['days'] + 1}" if s["days"] >= 0 else f"starts {s['started'][:10]}"
            lines.append(f"  stage {terminal(s['stage'])}: {when}{deadline}")
    for g in st.gates:
        verdict = {True: "passes", False: "not yet", None: "not read yet"}[g.holds]
        lines.append(f"  gate {terminal(g.stage)}: {terminal(g.condition)}  [{verdict}]")
        for name, v in g.values.items():
            gap = g.shortfall(name)
            more = "more" if gap is not None and gap > 0 else "less"
            extra = "" if gap is None else f" (needs {_num(abs(gap))} {more})"
            lines.append(f"      {name} = {_num(v)}{extra}")
        if g.note:
            lines.append(f"      {terminal(g.note)}")
        for x in g.exits:
            lines.append(_exit_line(x))
            for c in x["weak_links"]:
                lines.append(f"        falls short: {_clause(c)}")
    if st.targets:
        lines.append("  targets:")
        for t in st.targets:
            lines.append(_target_line(t.as_dict()))
    for i in st.incidents:
        by = "detected" if i.detected else f"by {terminal(i.opened_by)}"
        opened = i.opened_at.astimezone(st.now.tzinfo)
        lines.append(
            f"  incident open: {terminal(i.id)} ({by}, {opened:%Y-%m-%d %H:%M});"
            " close with: sop incident close ID"
        )
    if st.applications:
        lines.append(f"  applications waiting for review: {len(st.applications)}"
                     " (sop applications list)")  # fmt: skip
    counts = ", ".join(f"{n} {k}" for k, n in st.counts.items()) or "none yet"
    lines.append(f"  occurrences: {counts}")
    for title, name, rows in (("dead letters", "dead_letters", st.dead),
                              ("uncertain", "uncertain", st.uncertain),
                              ("retrying", "retrying", st.failures)):  # fmt: skip
        if rows:
            total = st.total(name)
            lines.append(f"  {title} ({total}):")
            for o in rows[:20]:
                lines.append(f"    {terminal(o.key)}  {terminal(o.reason)}")
            if total > 20:
                lines.append(f"    ... and {total - 20} more (sop status --format json)")
            if rows is not st.failures:
                lines.append("    decide with: sop resolve KEY --sent | --resend | --drop")
    if st.next:
        lines.append("  next:")
        for o in st.next[:5]:
            lines.append(f"    {o.due_at.astimezone(st.now.tzinfo):%Y-%m-%d %H:%M}  "
                         f"{terminal(o.action)}")  # fmt: skip
    if st.tasks:
        overdue = f" ({st.overdue} overdue)" if st.overdue else ""
        lines.append(f"  open tasks: {st.total('open_tasks')}{overdue}")
    return "\n".join(lines) + "\n"


def _exit_line(x: dict[str, Any]) -> str:
    held = f", held {x['held_days']} of {x['hold_days']} days" if x["hold_days"] > 1 else ""
    goto = f" -> {terminal(x['goto'])}" if x.get("goto") else ""
    verdict = "fires" if x["fires"] else "not yet"
    return f"    exit {terminal(x['exit'])}{goto}: {terminal(x['when'])}  [{verdict}{held}]"


def _clause(c: dict[str, Any]) -> str:
    text = terminal(c["text"] or c["metric"] or "?")
    if c["holds"] is None:
        return f"{text} (no value yet)"
    if c["shortfall"] is None:
        return text
    return f"{text} (now {_num(c['value'])}, short by {_num(c['shortfall'])})"


def _target_line(t: dict[str, Any]) -> str:
    due = f" ({t['due']})" if t["due"] else ""  # `target` says "by day N": its date
    if t["value"] is None:
        return f"    {terminal(t['metric'])} {t['target']}{due}: no value yet"
    state = "met" if t["met"] else f"short by {_num(t['shortfall'])}"
    done = f", {t['progress'] * 100:.0f}% of the way" if t["progress"] is not None else ""
    return f"    {terminal(t['metric'])} = {_num(t['value'])} ({t['target']}{due}): {state}{done}"
