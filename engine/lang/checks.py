"""Semantic checks on a built Playbook; each finding has a stable code (see diagnostics.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from functools import lru_cache

from ..core import expr as ex
from ..core.diagnostics import Collector, Span
from ..core.suggest import did_you_mean
from ..core.timeutil import format_duration
from .checkbase import (
    CHECKS,
    Check,
    check,
    member_conditions,
    run_checks,
    stage_end_bound,
)
from .checkbase import anchors as _anchors
from .checkbase import locate as _locate
from .checkbase import root_event as _root_event
from .checkbase import unknown as _unknown
from .model import (
    Action,
    Audience,
    Cron,
    DayOffset,
    Expression,
    OnEvent,
    Playbook,
    Relative,
)
from .schema_source import MAX_DURATION_DAYS
from .semantics import (
    blocked_by,
    quiet_window,
    reachable_stages,
    why_no_hand_over,
)

# -- references ------------------------------------------------------------------------------


@check
def stage_references(pb: Playbook, out: Collector) -> None:
    """`after` and `goto` name existing stages; roles in deadline alerts exist."""
    for s in pb.stages.values():
        for i, a in enumerate(s.after):
            if a not in pb.stages:
                _unknown(
                    out,
                    "SOP202",
                    "stage",
                    a,
                    pb.stages,
                    s.spans.get(f"after.{i}") or s.spans.get("after") or s.spans[""],
                )
        for e in s.exits or ():
            if e.goto and e.goto not in pb.stages:
                span = e.spans.get("goto") or e.spans[""]
                _unknown(out, "SOP202", "stage", e.goto, pb.stages, span)
        if not s.exits and s.goto and s.goto not in pb.stages:  # a Stage built without exits
            _unknown(out, "SOP202", "stage", s.goto, pb.stages, s.spans["exit.then.goto"])
        dl = s.deadline
        if dl:
            if dl.goto and dl.goto not in pb.stages:
                _unknown(out, "SOP202", "stage", dl.goto, pb.stages, dl.spans["then.goto"])
            if dl.alert and dl.alert not in pb.roles:
                _unknown(out, "SOP204", "role", dl.alert, pb.roles, dl.spans["then.alert"])


@check
def action_references(pb: Playbook, out: Collector) -> None:
    """Owners, backends, templates, tiers and anchors that actions name all exist."""
    tiers = {t.id: t for t in pb.tiers.levels} if pb.tiers else {}
    for a in pb.actions.values():
        sp = a.spans
        if a.owner and a.owner not in pb.roles:
            _unknown(out, "SOP204", "role", a.owner, pb.roles, sp.get("owner", sp[""]))
        if a.kind == "task" and not a.owner:
            out.add(
                "SOP204",
                sp.get("do", sp[""]),
                f"task `{a.id}` has no owner: nobody would be reminded",
                hint="Add `owner:` or `defaults.owner`.",
            )
        if (
            a.backend
            and a.backend not in pb.backends
            and ("backend" in sp or pb.spans.get("defaults"))
        ):
            _unknown(out, "SOP206", "backend", a.backend, pb.backends, sp.get("backend", sp[""]))
        if a.template and a.template not in pb.templates:
            _unknown(out, "SOP207", "template", a.template, pb.templates, sp["template"])
        tier = Audience.tier_of(a.audience)
        if tier is not None and tier not in tiers:
            _unknown(out, "SOP205", "tier", tier, tiers, sp.get("to", sp[""]))
        s = a.schedule
        if isinstance(s, Relative) and s.anchor not in pb.actions:
            key = "after" if "after" in sp else "before"
            _unknown(out, "SOP203", "action", s.anchor, pb.actions, sp[key])
        if isinstance(s, OnEvent):
            if s.tier and s.tier not in tiers:
                _unknown(out, "SOP205", "tier", s.tier, tiers, sp["tier"])
            need = {
                "member.silent": ("for", s.silent_for),
                "member.violation": ("count", s.count),
                "member.anniversary": ("at", s.at),
                "member.checkin_streak": ("streak", s.streak),
            }.get(s.event)
            if need and not need[1]:
                out.add("SOP101", sp["on"], f"`on: {s.event}` needs `{need[0]}`")
        if a.audience == Audience.MEMBER and _root_event(pb, a) is None:
            out.add(
                "SOP103",
                sp.get("to", sp[""]),
                f"action `{a.id}` is sent `to: member` but no member event triggers it",
                hint="Use `on: member.<event>` or send it to everyone or a tier.",
            )


# Each event option belongs to one event; on any other event it would be silently ignored.
EVENT_OPTIONS = {
    "for": "member.silent",
    "count": "member.violation",
    "at": "member.anniversary",
    "tier": "member.tier_changed",
    "streak": "member.checkin_streak",
}


@check
def event_options(pb: Playbook, out: Collector) -> None:
    """`for`, `count`, `at`, `tier` and `streak` appear only on the event they belong to."""
    for a in pb.actions.values():
        s = a.schedule
        if not isinstance(s, OnEvent):
            continue
        for key, event in EVENT_OPTIONS.items():
            if key in a.spans and s.event != event:
                out.add(
                    "SOP292",
                    a.spans[key],
                    f"action `{a.id}`: `{key}` has no meaning on `{s.event}` (it belongs to"
                    f" `{event}`) and would be ignored",
                )


@check
def member_data(pb: Playbook, out: Collector) -> None:
    """A text that reads `member` or `event` data is sent only where a member event triggers it."""
    from .templates import member_reads

    for a in pb.actions.values():
        if a.audience == Audience.MEMBER or _root_event(pb, a) is not None:
            continue  # `to: member` without an event is SOP103's finding
        if a.for_each is not None and a.kind == "task":
            continue  # one task per member: each has its member
        t = pb.templates.get(a.template) if a.template else a.text
        if t is None:
            continue
        reads = member_reads(t.text)
        if not reads:
            continue
        line_offset, name = reads[0]
        why = (
            f"action `{a.id}` is sent `to: {a.audience}` on a schedule, not on a member event,"
            f" so there is no `{name}` to fill in"
        )
        if a.text is not None:
            out.add("SOP291", _locate(t, line_offset, name), f"{why}: its text reads `{name}`")
        else:
            out.add(
                "SOP291",
                a.spans.get("template", a.spans[""]),
                f"{why}: template `{t.id}` reads `{name}` (line {t.line + line_offset})",
            )


@check
def other_references(pb: Playbook, out: Collector) -> None:
    """Tiers, moderation, incidents, backends and expectations refer to what exists."""
    if pb.tiers:
        ids = {t.id: t for t in pb.tiers.levels}
        for t in pb.tiers.levels:
            if t.demote_to and t.demote_to not in ids:
                _unknown(out, "SOP205", "tier", t.demote_to, ids, t.spans["demote.to"])
            if t.demote_message and t.demote_message not in pb.templates:
                _unknown(
                    out,
                    "SOP207",
                    "template",
                    t.demote_message,
                    pb.templates,
                    t.spans["demote.message"],
                )
    m = pb.moderation
    if m:
        for key, tid in (
            ("violations.warn", m.warn_template),
            ("violations.announce", m.announce_template),
        ):
            if tid and tid not in pb.templates:
                _unknown(out, "SOP207", "template", tid, pb.templates, m.spans[key])
        if m.warn_at and m.remove_at and m.warn_at >= m.remove_at:
            out.add(
                "SOP103",
                m.spans["violations.warn_at"],
                f"warn_at ({m.warn_at}) must be below remove_at ({m.remove_at})",
            )
    for inc in pb.incidents.values():
        if inc.owner not in pb.roles:
            _unknown(out, "SOP204", "role", inc.owner, pb.roles, inc.spans["owner"])
        for st in inc.steps:
            if st.kind in ("alert", "escalate") and st.target not in pb.roles:
                _unknown(out, "SOP204", "role", st.target, pb.roles, st.spans[st.kind])
            if st.template and st.template not in pb.templates:
                _unknown(out, "SOP207", "template", st.template, pb.templates, st.spans["template"])
    for b in pb.backends.values():
        if b.notify and b.notify not in pb.backends:
            _unknown(out, "SOP206", "backend", b.notify, pb.backends, b.spans["notify"])
    for e in pb.expect:
        if e.action and e.action not in pb.actions:
            _unknown(out, "SOP203", "action", e.action, pb.actions, e.spans["gets"])


_SECRET_QUERY = re.compile(r"[?&](key|token|secret|sign|access_token)=", re.I)
_ENV_REF = re.compile(r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*\}$")


# option names that hold credentials (`corp_secret`, `smtp_password`, `secret_key`, `auth_token`)
_SECRET_OPTION = re.compile(r"secret|password|token|(^|_)key$|api_key|credential")


@check
def secrets(pb: Playbook, out: Collector) -> None:
    """Keys, tokens and secret-bearing URLs come from the environment, never the file."""
    for b in pb.backends.values():
        for field_name, value in (("key", b.key), ("token", b.token), ("url", b.url)):
            if not value or _ENV_REF.match(value):
                continue
            if field_name == "url" and not (
                _SECRET_QUERY.search(value)
                or b.type in ("slack-webhook", "discord-webhook", "feishu-bot", "telegram-bot")
                or "@" in value.split("/")[2:3][0]
                if value.count("/") >= 2
                else False
            ):
                continue
            out.add(
                "SOP211",
                b.spans[field_name],
                f"backend `{b.id}`: `{field_name}` holds a literal secret; it would be"
                " committed and logged",
            )
        for name, value in b.options.items():
            if _SECRET_OPTION.search(name) and not _ENV_REF.match(value):
                out.add(
                    "SOP211",
                    b.spans.get("options") or b.spans[""],
                    f"backend `{b.id}`: option `{name}` holds a literal secret; write"
                    f" ${{env:NAME}} and set NAME in the environment",
                )


# -- graphs ----------------------------------------------------------------------------------


def _cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as a node path (first node repeated at the end), or None."""
    from graphlib import CycleError, TopologicalSorter

    try:
        TopologicalSorter({k: list(v) for k, v in edges.items()}).prepare()
    except CycleError:
        import networkx as nx  # only when there is a cycle to describe

        g = nx.DiGraph()
        for node, deps in edges.items():
            g.add_node(node)
            for d in deps:
                g.add_edge(d, node)
        cyc = nx.find_cycle(g)
        path = [u for u, _ in cyc]
        return [*path, path[0]]
    return None


@check
def stage_graph(pb: Playbook, out: Collector) -> None:
    """The stage DAG has no cycle and every stage can be reached."""
    edges = {s.id: [a for a in s.after if a in pb.stages] for s in pb.stages.values()}
    cyc = _cycle(edges)
    if cyc:
        s = pb.stages[cyc[0]]
        out.add("SOP220", s.spans.get("after", s.spans[""]), "stage cycle: " + " → ".join(cyc))
        return
    reachable = reachable_stages(pb)  # the Lifecycle's own rule (lang/semantics.py)
    for s in pb.stages.values():
        if s.id in reachable:
            continue
        blocker = None if s.rescue else blocked_by(pb, s, reachable)
        if blocker is not None:
            i = s.after.index(blocker)
            out.add(
                "SOP281",
                s.spans.get(f"after.{i}") or s.spans.get("after") or s.spans[""],
                f"stage `{s.id}` never starts: it comes after `{blocker}`, and"
                f" {why_no_hand_over(pb.stages[blocker])}",
            )
            continue
        why = (
            "a rescue stage that no `goto` names"
            if s.rescue
            else "it comes after a stage that can never finish or be reached"
        )
        out.add("SOP222", s.spans[""], f"stage `{s.id}` can never be reached: {why}")


@check
def anchor_stages(pb: Playbook, out: Collector) -> None:
    """A chained action shares its anchor's stage, and never goes out before a member event."""
    for aid, found in _anchors(pb).items():
        a = pb.actions[aid]
        s = a.schedule
        if not isinstance(s, Relative) or not found.complete:
            continue  # unknown anchors and cycles are SOP203 and SOP221
        key = "after" if "after" in a.spans else "before"
        anchor = pb.actions[s.anchor]
        if found.event is None and anchor.stage != a.stage:
            # the Program schedules a chain inside its root's stage window only (docs/time.md)
            out.add(
                "SOP280",
                a.spans[key],
                f"action `{a.id}` ({_home(a.stage)}) is `{key}` `{anchor.id}`"
                f" ({_home(anchor.stage)}): it would never go out",
            )
        elif found.event is not None and s.offset < timedelta(0) and found.offset < timedelta(0):
            out.add(
                "SOP282",
                a.spans[key],
                f"action `{a.id}` would go out {format_duration(-found.offset)} before"
                f" `{found.root.id}`, which `{found.event.event}` triggers: an event is not"
                " known before it happens",
            )


def _home(stage: str | None) -> str:
    return f"stage `{stage}`" if stage else "a routine"


@check
def action_graph(pb: Playbook, out: Collector) -> None:
    """`after`/`before` dependencies between actions form no cycle."""
    edges = {
        a.id: [a.schedule.anchor]
        if isinstance(a.schedule, Relative) and a.schedule.anchor in pb.actions
        else []
        for a in pb.actions.values()
    }
    cyc = _cycle(edges)
    if cyc:
        a = pb.actions[cyc[0]]
        key = "after" if "after" in a.spans else "before"
        out.add(
            "SOP221",
            a.spans.get(key, a.spans[""]),
            "action dependency cycle: " + " → ".join(reversed(cyc)),
        )


# -- time ------------------------------------------------------------------------------------

_CRON_ALIASES = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}


@lru_cache(maxsize=4096)
def cron_problem(expr_text: str) -> str | None:
    """Why a cron expression is invalid, or None."""
    fields = expr_text.split()
    if not (len(fields) == 5 or (len(fields) == 1 and fields[0] in _CRON_ALIASES)):
        return f"cron needs 5 fields (minute hour day month weekday), got {len(fields)}"
    from ..core.schedule import parse_cron  # croniter's reading, imported only when needed

    try:
        spec = parse_cron(expr_text)
    except (ValueError, KeyError, TypeError) as e:
        return f"invalid cron `{expr_text}`: {e}"
    if spec.nth and (spec.doms is not None or spec.last_dom):
        # cron implementations disagree on what this means; refuse rather than guess
        return f"`{expr_text}` combines a day of month with an nth weekday (`#`); use one of them"
    if spec.nearest and spec.dows is not None:
        # likewise for W: cron implementations disagree on whether W with a weekday is OR or AND
        return f"`{expr_text}` combines a nearest weekday (`W`) with a day of week; use one of them"
    return None


def cron_times_of_day(expr_text: str) -> tuple[tuple[int, int], ...]:
    """Every (hour, minute) at which a valid cron can fire."""
    from ..core.schedule import parse_cron

    return parse_cron(expr_text).minutes_hours


# The shape of every IANA name (`UTC`, `Asia/Shanghai`, `America/Argentina/Buenos_Aires`,
# `Etc/GMT+8`): anything else is refused before ZoneInfo sees it, since ZoneInfo raises OSError,
# RecursionError and more on long or odd names instead of ZoneInfoNotFoundError.
_TZ_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,30}(/[A-Za-z0-9_+-]{1,30}){0,3}")


def timezone_problem(name: object) -> bool:
    """True when `name` is not a time zone this machine knows."""
    from zoneinfo import ZoneInfo

    if not isinstance(name, str) or not _TZ_NAME.fullmatch(name):
        return True
    try:
        ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError, OSError, ...: all mean "unknown"
        return True
    return False


@check
def times(pb: Playbook, out: Collector) -> None:
    """Time zone, cron syntax, and crons that fire only inside quiet hours."""
    if timezone_problem(pb.timezone):
        from zoneinfo import available_timezones

        shown = pb.timezone if len(pb.timezone) <= 40 else pb.timezone[:37] + "..."
        out.add(
            "SOP231",
            pb.spans["timezone"],
            f"unknown time zone `{shown}`",
            hint=did_you_mean(pb.timezone, available_timezones())
            if len(pb.timezone) <= 64
            else None,
        )
    crons: list[tuple[str, Span, Action | None]] = [
        (a.schedule.expr, a.spans["cron"], a)
        for a in pb.actions.values()
        if isinstance(a.schedule, Cron)
    ]
    if pb.tiers and pb.tiers.review_cron:
        crons.append((pb.tiers.review_cron, pb.tiers.spans["review.cron"], None))
    for text, span, action in crons:
        problem = cron_problem(text)
        if problem:
            out.add("SOP230", span, problem)
            continue
        quiet = quiet_window(action) if action else None  # the rule plan applies
        if action and quiet:
            tod = cron_times_of_day(text)
            from datetime import time

            if all(quiet.contains(time(h, m)) for h, m in tod):
                out.add(
                    "SOP232",
                    span,
                    f"`{text}` fires only inside quiet hours {quiet}: every"
                    f" message of `{action.id}` would be postponed to {quiet.end:%H:%M}",
                )


def action_offset(pb: Playbook, a: Action) -> timedelta | None:
    """Offset of an action from its stage start when it is fixed (day offsets and their chains)."""
    found = _anchors(pb)[a.id]
    root = found.root.schedule
    if found.complete and isinstance(root, DayOffset):
        t = root.at
        return found.offset + timedelta(days=root.day, hours=t.hour, minutes=t.minute)
    return None


@check
def stage_windows(pb: Playbook, out: Collector) -> None:
    """Durations are consistent and fixed-offset actions fall inside their stage."""
    for s in pb.stages.values():
        if s.min_duration and s.max_duration and s.min_duration > s.max_duration:
            out.add(
                "SOP235",
                s.spans["duration.min"],
                f"stage `{s.id}`: min {format_duration(s.min_duration)} exceeds max"
                f" {format_duration(s.max_duration)}",
            )
        if s.deadline and s.min_duration and s.deadline.after < s.min_duration:
            span = s.deadline.spans.get("after", s.deadline.spans[""])
            out.add(
                "SOP234",
                span,
                f"stage `{s.id}`: deadline {format_duration(s.deadline.after)} comes before"
                f" the minimum duration {format_duration(s.min_duration)}: the gate can"
                " never be checked in time",
            )
    for a in pb.actions.values():
        off = action_offset(pb, a)
        if off is None or a.stage is None:
            continue
        s = pb.stages[a.stage]
        end = stage_end_bound(s)
        key = next((k for k in ("day", "after", "before") if k in a.spans), "")
        if off < timedelta(0):
            out.add(
                "SOP233",
                a.spans[key],
                f"action `{a.id}` falls {format_duration(-off)} before stage `{s.id}` starts",
            )
        elif end is not None and off >= end:
            out.add(
                "SOP233",
                a.spans[key],
                f"action `{a.id}` falls at {format_duration(off)}, after stage `{s.id}` ends"
                f" (at most {format_duration(end)})",
            )


# -- bounds ----------------------------------------------------------------------------------

MAX_DURATION = timedelta(days=MAX_DURATION_DAYS)
MAX_CHAIN = 32  # actions chained by `after`/`before` behind one another


def _durations(pb: Playbook) -> Iterable[tuple[timedelta | None, Span | None, str]]:
    """Every duration of the playbook with the span of its value and a name for it."""
    for s in pb.stages.values():
        yield s.min_duration, s.spans.get("duration.min"), f"stage `{s.id}`: `duration.min`"
        yield s.max_duration, s.spans.get("duration.max"), f"stage `{s.id}`: `duration.max`"
        dl = s.deadline
        if dl:
            yield dl.after, dl.spans.get("after"), f"stage `{s.id}`: deadline `after`"
            yield dl.extend, dl.spans.get("then.extend"), f"stage `{s.id}`: deadline `extend`"
    for a in pb.actions.values():
        sch = a.schedule  # `delay`/`by` are measured with their chain (action_chains)
        if isinstance(sch, OnEvent):
            yield sch.within, a.spans.get("within"), f"action `{a.id}`: `within`"
            yield sch.silent_for, a.spans.get("for"), f"action `{a.id}`: `for`"
            for tenure in sch.at:
                yield tenure, a.spans.get("at"), f"action `{a.id}`: `at`"
    if pb.tiers:
        for t in pb.tiers.levels:
            span = t.spans.get("demote.silent_for")
            yield t.demote_silent_for, span, f"tier `{t.id}`: `demote.silent_for`"
    if pb.moderation:
        span = pb.moderation.spans.get("violations.window")
        yield pb.moderation.window, span, "moderation: `violations.window`"
    for inc in pb.incidents.values():
        for i, st in enumerate(inc.steps):
            key = "within" if st.kind == "alert" else "after"
            yield st.delay, st.spans.get(key), f"incident `{inc.id}`, step {i + 1}: `{key}`"
    for e in pb.expect:
        yield e.within, e.spans.get("within"), "expect: `within`"
    yield from checks_members.new_durations(pb)


@check
def durations(pb: Playbook, out: Collector) -> None:
    """No duration is longer than 10 years: date arithmetic stays far from its limits."""
    for td, span, what in _durations(pb):
        if td is not None and td > MAX_DURATION and span is not None:
            out.add(
                "SOP251",
                span,
                f"{what} is {format_duration(td)}; at most {MAX_DURATION_DAYS}d (10 years)",
            )


@check
def action_chains(pb: Playbook, out: Collector) -> None:
    """Chains of `after`/`before` are at most MAX_CHAIN long and span at most 10 years."""
    # each chain measured once, a cycle (SOP221) as if it ended where it closes
    for aid, found in _anchors(pb).items():
        b = pb.actions[aid]
        if not isinstance(b.schedule, Relative):
            continue
        key = "after" if "after" in b.spans else "before"
        if found.depth == MAX_CHAIN + 1:
            out.add(
                "SOP252",
                b.spans[key],
                f"action `{b.id}` makes a chain of {found.depth} actions, each `after` or"
                f" `before` the next; at most {MAX_CHAIN} are allowed",
            )
        elif abs(found.offset) > MAX_DURATION >= abs(found.offset - b.schedule.offset):
            out.add(
                "SOP251",
                b.spans.get("delay" if key == "after" else "by", b.spans[key]),
                f"action `{b.id}` falls {format_duration(abs(found.offset))}"
                f" {'after' if found.offset > timedelta(0) else 'before'} the start of its"
                f" chain; at most {MAX_DURATION_DAYS}d (10 years)",
            )


# -- expressions -----------------------------------------------------------------------------


def _check_expr(
    e: Expression | None,
    known: Mapping[str, str],
    out: Collector,
    what: str,
    catalogue_hint: str,
    *,
    windows: bool = False,
    other: Mapping[str, str] | None = None,
) -> None:
    """Type-check one condition; a name of the `other` vocabulary (metrics in a member
    condition, member attributes in a community condition) is SOP244, not SOP241."""
    if e is None or e.node is None:
        return
    for pr in ex.check(e.node, known, windows=windows):
        hint = None
        code, message = pr.code, pr.message
        if pr.code == "SOP241":
            name = e.text[pr.start : pr.end]
            if other is not None and name in other:
                code = "SOP244"
                message = (
                    f"`{name}` is a member attribute; a community condition reads metrics"
                    if windows
                    else f"`{name}` is a metric; a member condition reads member attributes"
                )
            else:
                hint = did_you_mean(name, known) or catalogue_hint
        out.add(code, e.span_of(pr.start, pr.end), f"{what}: {message}", hint=hint)


METRIC_HINT = "Built-in metrics: members, daily_speak_rate, retention_d30, core_members, ..."


@check
def expressions(pb: Playbook, out: Collector) -> None:
    """Community conditions read known metrics (windows allowed); member conditions read
    member attributes; metric definitions read other metrics."""
    units = pb.metric_units()
    attrs = pb.attribute_units()
    for s in pb.stages.values():
        for e in s.exits or ():
            what = f"gate of stage `{s.id}`" if e.id == "pass" else f"exit `{e.id}` of `{s.id}`"
            _check_expr(e.when, units, out, what, METRIC_HINT, windows=True, other=attrs)
        if not s.exits:  # a Stage built without exits (tools, tests)
            _check_expr(s.gate, units, out, f"gate of stage `{s.id}`", METRIC_HINT, windows=True)
    for a in pb.actions.values():
        what = f"`if` of action `{a.id}`"
        _check_expr(a.guard, units, out, what, METRIC_HINT, windows=True, other=attrs)
    for m in pb.metrics.values():
        others = {k: v for k, v in units.items() if k != m.id}
        if m.definition and m.definition.node:
            problems = ex.check(m.definition.node, others)
            for pr in problems:
                if pr.code == "SOP242" and "not a condition" in pr.message:
                    continue  # a definition is a number, not a condition
                out.add(
                    pr.code,
                    m.definition.span_of(pr.start, pr.end),
                    f"definition of `{m.id}`: {pr.message}",
                )
    for inc in pb.incidents.values():
        what = f"detect of incident `{inc.id}`"
        _check_expr(inc.detect, units, out, what, METRIC_HINT, windows=True, other=attrs)
    attr_hint = "Member attributes: " + ", ".join(attrs)
    for cond, what in member_conditions(pb):
        _check_expr(cond, attrs, out, what, attr_hint, other=units)


@check
def builtin_metric_names(pb: Playbook, out: Collector) -> None:
    """A custom metric may not reuse a built-in's name: it would mean two different numbers."""
    # the playbook's built-ins: channels, points, teams and admission add their own
    builtins = pb.builtin_metrics()
    for mid in pb.metrics:
        if mid in builtins:
            out.add(
                "SOP270",
                pb.spans.get(f"metrics.{mid}", pb.spans[""]),
                f"`{mid}` is a built-in metric ({builtins[mid].description});"
                " it cannot be declared under `metrics:`",
            )


@check
def playbook_size(pb: Playbook, out: Collector) -> None:
    """At most MAX_ACTIONS actions in all, fragments included: every verb's work grows with it."""
    from .schema_source import MAX_ACTIONS

    if len(pb.actions) > MAX_ACTIONS:
        extra = list(pb.actions.values())[MAX_ACTIONS]
        out.add(
            "SOP254",
            extra.spans[""],
            f"the playbook has {len(pb.actions)} actions, fragments included;"
            f" at most {MAX_ACTIONS} are allowed",
        )


# -- templates -------------------------------------------------------------------------------


@check
def templates(pb: Playbook, out: Collector) -> None:
    """Templates parse in the sandbox, read only known variables, and are used."""
    from .templates import template_problems

    used = {a.template for a in pb.actions.values()}
    if pb.tiers:
        used |= {t.demote_message for t in pb.tiers.levels}
    if pb.moderation:
        used |= {pb.moderation.warn_template, pb.moderation.announce_template}
    used |= {st.template for i in pb.incidents.values() for st in i.steps}
    sources = [(t, f"template `{t.id}`") for t in pb.templates.values()]
    sources += [(a.text, f"text of `{a.id}`") for a in pb.actions.values() if a.text]
    for t, what in sources:
        for code, line_offset, needle, message in template_problems(
            t.text, pb.params, pb.attributes
        ):
            out.add(code, _locate(t, line_offset, needle), f"{what}: {message}")
    for t in pb.templates.values():
        if t.id not in used:
            out.add("SOP210", t.span, f"template `{t.id}` is never used")
    if not any(d.code in ("SOP208", "SOP209", "SOP255") for d in out.items):
        _render_static_texts(pb, out)


def _render_static_texts(pb: Playbook, out: Collector) -> None:
    """Texts that need no member data render within the sandbox's limits, as plan will."""
    from .templates import RenderError, action_context, needs_member, render, shared_budget

    with shared_budget():  # the same budget plan shares across its messages
        for a in pb.actions.values():
            t = pb.templates.get(a.template) if a.template else a.text
            if t is None or needs_member(t.text):
                continue
            try:
                render(t.text, action_context(pb, a))
            except RenderError as e:
                span = _locate(t, (e.line or 1) - 1, "")
                out.add("SOP253", span, f"`{a.id}`: its text cannot be rendered: {e.message}")


# The checks of members, segments, channels, counted metrics, targets, exits, leaderboards,
# points, teams and admission register themselves with `check` (after the ones above).
from . import checks_members  # noqa: E402

__all__ = ["CHECKS", "Check", "check", "member_conditions", "run_checks", "stage_end_bound"]
