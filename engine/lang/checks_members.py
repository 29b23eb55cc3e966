"""Semantic checks of the member model: attributes, segments, channels, counted metrics,
targets, exits, leaderboards, milestones, per-member tasks, points, teams and admission."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from ..core import expr as ex
from ..core.catalog import EVENT_TYPES, MEMBER_ATTRIBUTE_UNITS, ORGANIC
from ..core.diagnostics import Collector, Span
from ..core.timeutil import format_duration
from .checkbase import check, locate, member_conditions, root_event, stage_end_bound, unknown
from .model import (
    Action,
    AttributeType,
    Audience,
    CountOf,
    Expression,
    OnEvent,
    Playbook,
    TeamAssignment,
)
from .semantics import earliest_exit_day, exits_of, hold_days, starting_stages

MAX_CHANNELS_OPENING = 3  # 004: do not open too many channels at once


def _numeric(units: Mapping[str, str], name: str) -> bool:
    return units.get(name) not in ("string", "boolean")


def _attribute(
    pb: Playbook, out: Collector, name: str, span: Span, *, numeric: str | None = None
) -> None:
    """`name` is a member attribute (SOP212) and, when `numeric` says what for, a number
    (SOP283)."""
    units = pb.attribute_units()
    if name not in units:
        unknown(out, "SOP212", "member attribute", name, units, span)
    elif numeric and not _numeric(units, name):
        out.add(
            "SOP283",
            span,
            f"{numeric} needs a number, but `{name}` is {units[name]}",
        )


def _group(pb: Playbook, out: Collector, audience: str, span: Span) -> None:
    """A `tier:<id>` or `segment:<id>` group exists (SOP205 / SOP213)."""
    tiers = {t.id: t for t in pb.tiers.levels} if pb.tiers else {}
    tier = Audience.tier_of(audience)
    if tier is not None and tier not in tiers:
        unknown(out, "SOP205", "tier", tier, tiers, span)
    seg = Audience.segment_of(audience)
    if seg is not None and seg not in pb.segments:
        unknown(out, "SOP213", "segment", seg, pb.segments, span)


# -- attributes and member conditions ---------------------------------------------------------


@check
def attributes(pb: Playbook, out: Collector) -> None:
    """Declared attributes do not shadow built-ins, and an enum lists its values."""
    for a in pb.attributes.values():
        if a.id in MEMBER_ATTRIBUTE_UNITS:
            out.add(
                "SOP271",
                a.spans[""],
                f"`{a.id}` is a built-in member attribute; it cannot be declared under"
                " `members.attributes`",
            )
        if a.type == AttributeType.ENUM and not a.values:
            out.add(
                "SOP101",
                a.spans.get("type", a.spans[""]),
                f"attribute `{a.id}` is an enum: list its `values`",
            )
        seen: set[str] = set()
        for v in a.values:
            if v in seen:
                out.add(
                    "SOP103",
                    a.spans.get("values", a.spans[""]),
                    f"attribute `{a.id}` lists the value `{v}` twice",
                )
            seen.add(v)
        if a.default is not None:
            try:
                a.coerce(a.default)  # the same rule events and imports go through
            except ValueError as err:
                out.add("SOP103", a.spans.get("default", a.spans[""]), f"`default`: {err}")


def _known_values(pb: Playbook) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The closed sets of string attributes: name -> (code when a literal is not in it, values)."""
    sets: dict[str, tuple[str, tuple[str, ...]]] = {
        a.id: ("SOP215", a.values)
        for a in pb.attributes.values()
        if a.type == AttributeType.ENUM and a.values
    }
    sets["source"] = ("SOP214", (*pb.channels, ORGANIC))
    # without `tiers:` / `teams:` every member's tier / team is "" (program/members.py)
    sets["tier"] = ("SOP205", (*(t.id for t in pb.tiers.levels), "") if pb.tiers else ("",))
    if pb.teams is None:
        sets["team"] = ("SOP215", ("",))
    elif pb.teams.assign != TeamAssignment.ATTRIBUTE:
        sets["team"] = ("SOP215", (*pb.teams.names, ""))
    return sets


@check
def member_values(pb: Playbook, out: Collector) -> None:
    """A string a member condition compares an enum, `source`, `tier` or `team` with is one of
    its values: `source == "invte"` would silently match nobody."""
    sets = _known_values(pb)
    what = {"SOP214": "channel", "SOP205": "tier", "SOP215": "value"}
    for e, where in member_conditions(pb):
        if e is None or e.node is None:
            continue
        for name, lit in ex.string_comparisons(e.node):
            known = sets.get(str(name.value))
            if known is None or str(lit.value) in known[1]:
                continue
            code, values = known
            shown = ", ".join(f'"{v}"' for v in values if v) or "none"
            out.add(
                code,
                e.span_of(lit.start, lit.end),
                f'{where}: `{name.value}` is never "{lit.value}" (its {what[code]}s: {shown})',
            )


# -- segments, audiences, per-member tasks, leaderboards ---------------------------------------


def _member_group(audience: str) -> bool:
    """Whether an audience is a group of members (not one member, not staff)."""
    return audience in (Audience.EVERYONE, Audience.TOP) or (
        Audience.tier_of(audience) is not None or Audience.segment_of(audience) is not None
    )


@check
def audiences(pb: Playbook, out: Collector) -> None:
    """Segments, `for_each`, `where:` and leaderboards name what exists and mean something."""
    for a in pb.actions.values():
        sp = a.spans
        to_span = sp.get("to", sp[""])
        if Audience.segment_of(a.audience) is not None:
            _group(pb, out, a.audience, to_span)
        if a.for_each is not None:
            _group(pb, out, a.for_each, sp["for_each"])
            if a.kind != "task":
                out.add(
                    "SOP298",
                    sp["for_each"],
                    f"action `{a.id}` is `do: {a.kind}`: `for_each` makes one staff task per"
                    " member and would be ignored",
                )
            elif root_event(pb, a) is not None:
                out.add(
                    "SOP305",
                    sp["for_each"],
                    f"action `{a.id}` makes one task per member of `{a.for_each}` each time a"
                    " member event fires it: with many events that is a flood of staff tasks",
                )
        if (
            a.where is not None
            and a.audience == Audience.STAFF
            and a.for_each is None
            and root_event(pb, a) is None
        ):
            out.add(
                "SOP297",
                sp["where"],
                f"action `{a.id}` goes to staff on a schedule: no member is there for `where:`"
                " to filter, so it would be ignored",
            )
        if a.top is not None:
            _leaderboard(pb, a, out)


def _leaderboard(pb: Playbook, a: Action, out: Collector) -> None:
    top = a.top
    assert top is not None
    sp = top.spans
    _attribute(pb, out, top.by, sp.get("by", sp[""]), numeric="a leaderboard's `by`")
    if top.among is not None:
        _group(pb, out, top.among, sp["among"])
    if top.teams and pb.teams is None:
        out.add(
            "SOP279",
            sp.get("teams", sp[""]),
            f"action `{a.id}` ranks teams, but the playbook declares no `teams:`",
        )
    if root_event(pb, a) is not None:
        out.add(
            "SOP284",
            a.spans.get("to", a.spans[""]),
            f"action `{a.id}` picks a leaderboard each time a member event fires: a ranking"
            " is periodic (give it a cron), and the member of the event is `to: member`",
        )


# -- member events: milestones, redemptions ----------------------------------------------------


def _milestone_reaches(
    pb: Playbook, out: Collector, counter: str | None, reaches: float, span: Span
) -> None:
    """Counters start at 0 and a milestone fires when one first reaches `reaches` from below:
    it must be above 0, and a whole number when the counter counts (invites, payments)."""
    declared = pb.attributes.get(counter or "")
    counts = (declared is None and MEMBER_ATTRIBUTE_UNITS.get(counter or "") == "count") or (
        declared is not None and declared.type == AttributeType.INTEGER
    )
    if reaches <= 0:
        out.add("SOP103", span, f"`reaches: {reaches:g}`: counters start at 0; use more than 0")
    elif counts and reaches != int(reaches):
        what = f"`{counter}` counts in whole numbers; `reaches: {reaches:g}` is not one"
        out.add("SOP103", span, what)


@check
def member_event_options(pb: Playbook, out: Collector) -> None:
    """Milestones watch a numeric attribute; redemptions name an item of `points.redeem`."""
    items = pb.points.redeem if pb.points else {}
    for a in pb.actions.values():
        sp = a.spans
        s = a.schedule
        if isinstance(s, OnEvent) and s.event == "member.milestone":
            missing = [k for k, v in (("counter", s.counter), ("reaches", s.reaches)) if v is None]
            if missing:
                out.add(
                    "SOP101",
                    sp["on"],
                    f"`on: member.milestone` needs `{'` and `'.join(missing)}`",
                )
            if s.counter is not None:
                _attribute(pb, out, s.counter, sp["counter"], numeric="a milestone's `counter`")
            if s.reaches is not None:
                _milestone_reaches(pb, out, s.counter, s.reaches, sp["reaches"])
        if isinstance(s, OnEvent) and s.item is not None and s.item not in items:
            unknown(out, "SOP216", "item", s.item, items, sp["item"])
        if a.kind == "redeem":
            if a.redeem_item is None:
                out.add("SOP101", sp["do"], f"action `{a.id}`: `do: redeem` needs `item`")
            elif a.redeem_item not in items:
                unknown(out, "SOP216", "item", a.redeem_item, items, sp["item"])
        if (
            "item" in sp
            and a.kind != "redeem"
            and not (isinstance(s, OnEvent) and s.event == "member.redeemed")
        ):
            out.add(
                "SOP292",
                sp["item"],
                f"action `{a.id}`: `item` belongs to `do: redeem` or `on: member.redeemed`"
                " and would be ignored",
            )
        if isinstance(s, OnEvent) and s.event != "member.milestone":
            for key in ("counter", "reaches"):
                if key in sp:
                    out.add(
                        "SOP292",
                        sp[key],
                        f"action `{a.id}`: `{key}` has no meaning on `{s.event}` (it belongs"
                        " to `member.milestone`) and would be ignored",
                    )


# -- exits --------------------------------------------------------------------------------------


@check
def exits(pb: Playbook, out: Collector) -> None:
    """Exit ids are unique, every exit can be taken, one form of exit and deadline per stage,
    and no exit must hold longer than the stage can last."""
    starting = set(starting_stages(pb, pb.stages))
    for s in pb.stages.values():
        sp = s.spans
        if "key.exit" in sp and "key.exits" in sp:
            out.add(
                "SOP286",
                sp["key.exits"],
                f"stage `{s.id}` has both `exit:` and `exits:`; `exit:` would be ignored",
            )
        if "key.deadline" in sp and not exits_of(s):
            out.add(
                "SOP237",
                sp["key.deadline"],
                f"stage `{s.id}` has a `deadline:` but no exits: the deadline would be ignored",
            )
        gotos = [(e.goto, e.spans.get("goto", e.spans[""])) for e in s.exits]
        if s.deadline is not None and s.deadline.goto:
            gotos.append((s.deadline.goto, s.deadline.spans.get("then.goto", sp[""])))
        for goto, span in gotos:
            if goto == s.id:
                out.add("SOP238", span, f"stage `{s.id}`: `goto: {goto}` leads back to itself")
        if "key.exit.deadline" in sp and "key.deadline" in sp:
            out.add(
                "SOP286",
                sp["key.deadline"],
                f"stage `{s.id}` has two deadlines (`exit.deadline` and `deadline`)",
            )
        seen: dict[str, int] = {}
        always: str | None = None
        for e in s.exits:
            if e.id in seen:
                out.add(
                    "SOP201",
                    e.spans.get("id", e.spans[""]),
                    f"stage `{s.id}`: exit id `{e.id}` is already used by exit {seen[e.id] + 1}",
                    hint="Exit ids are unique within a stage.",
                )
            seen.setdefault(e.id, len(seen))
            if always is not None:
                out.add(
                    "SOP285",
                    e.spans.get("id", e.spans[""]),
                    f"stage `{s.id}`: exit `{e.id}` can never be taken: exit `{always}` before"
                    " it always holds",
                )
            elif _always(e.when) and e.hold is None:
                always = e.id
            if e.hold is not None and e.hold <= timedelta(0):
                # hold_days reads it as 1 day (today's check): say so rather than run on silently
                out.add(
                    "SOP103",
                    e.spans.get("for", e.spans[""]),
                    f"stage `{s.id}`: exit `{e.id}`: `for: {format_duration(e.hold)}` holds on no"
                    " day; leave `for:` out for today's check, or give at least 1d",
                )
            end = stage_end_bound(s)
            # a starting stage starts with the history; a later one may find years of it
            before = 0 if s.id in starting else 10**6
            first = earliest_exit_day(e, before)
            if end is not None and first > end.days:
                why = f"hold for {format_duration(e.hold)}" if e.hold else "wait"
                if first > hold_days(e.hold):
                    why += " after its longest window has its days"
                out.add(
                    "SOP236",
                    e.spans.get("for", e.spans["when"] if "when" in e.spans else e.spans[""]),
                    f"stage `{s.id}`: exit `{e.id}` can fire on day {first} at the earliest (it"
                    f" must {why}), but the stage ends after {format_duration(end)}",
                )


def _always(e: Expression) -> bool:
    return e.node is not None and e.node.kind == "bool" and e.node.value is True


# -- counted metrics and targets ---------------------------------------------------------------


@check
def counted_metrics(pb: Playbook, out: Collector) -> None:
    """A metric is a definition or a count; counts name known events and windows only where
    they mean something; a ratio of counts stays within 0..1."""
    for m in pb.metrics.values():
        if m.definition is not None and m.count is not None:
            out.add(
                "SOP272",
                m.spans.get("count", m.spans[""]),
                f"metric `{m.id}` has a `definition` and a `count`: keep one",
            )
        for c in (m.count, m.per):
            if c is None:
                continue
            if c.window is not None and c.of in (CountOf.MEMBERS, CountOf.EVER):
                out.add(
                    "SOP296",
                    c.spans["window"],
                    f"metric `{m.id}`: a count of `{c.of}` is taken now, over no window;"
                    " `window` would be ignored",
                )
            elif c.window is not None and c.window < timedelta(days=1):
                # counts are taken once a day: a shorter window counts nothing
                out.add(
                    "SOP103",
                    c.spans["window"],
                    f"metric `{m.id}`: a count's `window` is at least 1d, not"
                    f" {format_duration(c.window)}",
                )
            if c.event is not None and c.event not in EVENT_TYPES:
                unknown(out, "SOP217", "event type", c.event, EVENT_TYPES, c.spans["events"])
        if (
            m.unit == "ratio"
            and m.count is not None
            and m.per is not None
            and m.count.of != m.per.of
            and m.count.of in (CountOf.MEMBERS, CountOf.EVER)
        ):
            out.add(
                "SOP275",
                m.spans.get("per", m.spans[""]),
                f"metric `{m.id}` divides a count of `{m.count.of}` by a count of"
                f" `{m.per.of}`: it can exceed 1, which a ratio cannot",
            )


@check
def targets(pb: Playbook, out: Collector) -> None:
    """Targets name known metrics, once, and a ratio's target is at most 1."""
    units = pb.metric_units()
    for mid, t in pb.targets.items():
        if mid not in units:
            unknown(out, "SOP218", "metric", mid, units, t.spans[""])
            continue
        if t.by is not None and (t.by <= timedelta(0) or t.by % timedelta(days=1)):
            # a target is judged at a day's end: `36h` would be read one way by one reader
            out.add(
                "SOP103",
                t.spans.get("by", t.spans[""]),
                f"target of `{mid}`: `by` is a whole number of days, e.g. 90d"
                f" (not {format_duration(t.by)})",
            )
        if units[mid] == "ratio" and t.value > 1:
            shown = f"{t.value * 100:g}%" if t.percent else f"{t.value:g}"
            verdict = "is always met" if t.at_most else "can never be reached"
            mean = "" if t.percent else f" (did you mean {t.value / 100:g}?)"
            out.add(
                "SOP274",
                t.spans.get("value", t.spans[""]),
                f"`{mid}` is a ratio between 0 and 1; a target of {shown} {verdict}{mean}",
            )
    for m in pb.metrics.values():
        both = pb.targets.get(m.id)
        if m.target is not None and both is not None and both.spans[""] != m.target.spans[""]:
            out.add(
                "SOP273",
                both.spans[""],
                f"metric `{m.id}` has a target here and in `metrics.{m.id}.target`"
                f" (line {m.target.spans[''].line})",
            )


# -- channels ----------------------------------------------------------------------------------


@check
def channels(pb: Playbook, out: Collector) -> None:
    """Shares add up to at most 100%, one referral channel, few channels opening at once."""
    total = 0.0
    for c in pb.channels.values():
        if c.share is None:
            continue
        total += c.share
        if total > 1 + 1e-9:
            out.add(
                "SOP276",
                c.spans["share"],
                f"channel shares add up to {total:.0%} with `{c.id}`; at most 100%",
            )
            break
    referral = [c for c in pb.channels.values() if c.referral]
    for c in referral[1:]:
        out.add(
            "SOP278",
            c.spans["referral"],
            f"channels `{referral[0].id}` and `{c.id}` are both `referral: true`",
        )
    if ORGANIC in pb.channels:
        out.add(
            "SOP103",
            pb.channels[ORGANIC].spans[""],
            f"`{ORGANIC}` is the source of members who came by no channel; it cannot be a"
            " channel id",
        )
    # a channel without `opens` opens when the playbook starts: at its starting stage(s)
    starting: list[str | None] = [*starting_stages(pb)] or [None]
    opening: dict[str | None, list[str]] = {}
    for c in pb.channels.values():
        if c.opens is not None and c.opens not in pb.stages:
            unknown(out, "SOP202", "stage", c.opens, pb.stages, c.spans["opens"])
            continue
        for stage in [c.opens] if c.opens is not None else starting:
            opening.setdefault(stage, []).append(c.id)
    for stage, ids in opening.items():
        if len(ids) > MAX_CHANNELS_OPENING:
            c = pb.channels[ids[MAX_CHANNELS_OPENING]]
            when = f"in stage `{stage}`" if stage else "at the start"
            out.add(
                "SOP277",
                c.spans.get("opens", c.spans[""]),
                f"{len(ids)} channels open {when} ({', '.join(ids)}); open at most"
                f" {MAX_CHANNELS_OPENING} at once",
            )


# -- points, teams, admission ------------------------------------------------------------------


@check
def points(pb: Playbook, out: Collector) -> None:
    """`points.earn` names event types members produce."""
    if pb.points is None:
        return
    for event in pb.points.earn:
        if event not in EVENT_TYPES:
            span = pb.points.spans.get(f"earn.{event}", pb.points.spans[""])
            unknown(out, "SOP217", "event type", event, EVENT_TYPES, span)


@check
def teams(pb: Playbook, out: Collector) -> None:
    """Teams have names (or an attribute to split by) and a numeric score."""
    t = pb.teams
    if t is None:
        return
    sp = t.spans
    _attribute(pb, out, t.score, sp["score"], numeric="a team's `score`")
    if t.assign == TeamAssignment.ATTRIBUTE:
        if t.by is None:
            out.add("SOP101", sp.get("assign", sp[""]), "`assign: attribute` needs `by`")
        else:
            _attribute(pb, out, t.by, sp["by"])
        if t.names:
            out.add(
                "SOP299",
                sp["names"],
                "with `assign: attribute` the teams are the values of `by`; `names` would be"
                " ignored",
            )
        return
    if not t.names:
        out.add("SOP101", sp[""], f"`assign: {t.assign}` needs the teams' `names`")
    if t.by is not None:
        out.add(
            "SOP299",
            sp["by"],
            f"`by` is read only by `assign: attribute`; with `{t.assign}` it would be ignored",
        )


@check
def admission(pb: Playbook, out: Collector) -> None:
    """Required attributes are declared; the reviewing role exists."""
    adm = pb.admission
    if adm is None:
        return
    units = pb.attribute_units()
    for i, name in enumerate(adm.require):
        if name not in units:
            span = adm.spans.get(f"require.{i}", adm.spans[""])
            unknown(out, "SOP212", "member attribute", name, pb.attributes, span)
    if adm.review_owner not in pb.roles:
        span = adm.spans.get("review.owner", adm.spans[""])
        unknown(out, "SOP204", "role", adm.review_owner, pb.roles, span)


# -- personal data -----------------------------------------------------------------------------


@check
def personal_data(pb: Playbook, out: Collector) -> None:
    """A `pii: true` attribute is never written into a message to a group of members."""
    from .templates import member_attribute_reads

    pii = {a.id for a in pb.attributes.values() if a.pii}
    if not pii:
        return
    for a in pb.actions.values():
        if not _member_group(a.audience):
            continue
        t = pb.templates.get(a.template) if a.template else a.text
        if t is None:
            continue
        for line_offset, attr in member_attribute_reads(t.text):
            if attr not in pii:
                continue
            what = f"template `{t.id}`" if a.template else "its text"
            span = (
                locate(t, line_offset, attr)
                if a.text is not None
                else a.spans.get("template", a.spans[""])
            )
            out.add(
                "SOP219",
                span,
                f"action `{a.id}` goes to `{a.audience}`, and {what} shows `member.{attr}`,"
                " which is personal data (`pii: true`)",
            )
            break


# the durations of the new constructs are bounded like every other (checks.durations)
def new_durations(pb: Playbook) -> list[tuple[timedelta | None, Span | None, str]]:
    """Durations of exits, counts, points and admission, with their spans."""
    found: list[tuple[timedelta | None, Span | None, str]] = []
    for s in pb.stages.values():
        for e in s.exits:
            found.append((e.hold, e.spans.get("for"), f"exit `{e.id}` of `{s.id}`: `for`"))
    for m in pb.metrics.values():
        for c in (m.count, m.per):
            if c is not None:
                found.append((c.window, c.spans.get("window"), f"metric `{m.id}`: `window`"))
    if pb.points is not None:
        found.append((pb.points.expire, pb.points.spans.get("expire"), "`points.expire`"))
    if pb.admission is not None:
        span = pb.admission.spans.get("review.within")
        found.append((pb.admission.review_within, span, "`admission.review.within`"))
    return found


@check
def incident_steps(pb: Playbook, out: Collector) -> None:
    """Escalations are written in time order: each step's time counts from the opening, so a
    later escalation with a shorter `after` would fire before the one above it."""
    for inc in pb.incidents.values():
        latest: tuple[int, timedelta] | None = None
        for i, st in enumerate(inc.steps):
            if st.kind != "escalate":
                continue
            after = st.delay or timedelta(0)
            if latest is not None and after < latest[1]:
                out.add(
                    "SOP239",
                    st.spans.get("after", st.spans[""]),
                    f"incident `{inc.id}`, step {i + 1}: escalates {format_duration(after)} after"
                    f" the opening, before step {latest[0] + 1}"
                    f" ({format_duration(latest[1])}); step times count from the opening",
                )
            elif latest is None or after >= latest[1]:
                latest = (i, after)
