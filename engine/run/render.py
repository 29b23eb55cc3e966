"""`sop status` for a terminal (JSON is `Status.as_dict()`)."""

from __future__ import annotations

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
