"""The one source of the JSON Schemas in `schemas/`; `python -m sop.engine.lang.schema_source`.

Written in Python so every property carries a description and examples by construction; the
generated draft-07 files are what editors (yaml-language-server) and `sop schema` use, and a test
keeps them in sync with this module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..core.catalog import (
    ACTION_KINDS,
    AUDIENCES_FIXED,
    BACKEND_TYPES,
    COMMUNITY_TYPES,
    MEMBER_EVENTS,
    PLATFORMS,
)

J = dict[str, Any]
DRAFT = "http://json-schema.org/draft-07/schema#"
BASE = "https://sop.dev/schemas/"

# `$` alone also matches before a final newline in Python's `re.search` (which jsonschema and our
# validator use), so "ops\n" would pass as an id and put a newline into idempotency keys; END
# refuses that and means the same as `$` in the ECMA regexes editors use.
END = r"$(?!\n)"
ID_PATTERN = r"^[a-z][a-z0-9_-]{0,63}" + END
# Ids that become names in conditions (member attributes, channels: `<channel>_joins`): no `-`.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}" + END
# A fraction written as a percentage (`30%`); numbers are also accepted where it is.
PERCENT_PATTERN = r"^[0-9]{1,3}(\.[0-9]{1,4})?%" + END
_AUDIENCE_ID = r"[a-z][a-z0-9_-]{0,63}"
# A group of members: everyone, a tier or a segment (`for_each`, `top.among`).
GROUP_PATTERN = r"^(everyone|tier:" + _AUDIENCE_ID + r"|segment:" + _AUDIENCE_ID + r")" + END
PARAM_PATTERN = r"^[a-z_][a-z0-9_]{0,63}" + END
# Each number has a bounded count of digits so no duration overflows date arithmetic; `validate`
# also refuses any duration above MAX_DURATION_DAYS (checks.durations).
DURATION_PATTERN = r"^(?=\d)(\d{1,3}w)?(\d{1,4}d)?(\d{1,5}h)?(\d{1,6}m)?" + END
TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]" + END
WINDOW_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]" + END
# Years 1970-2199; that the day exists in its month is checked by `validate` (SOP250).
DATE_PATTERN = r"^(19[7-9][0-9]|2[01][0-9][0-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])" + END

# Ranges of the playbook language: generous for a real community, small enough that no value
# overflows date arithmetic or makes the simulator's work explode.
MAX_DURATION_DAYS = 3660  # 10 years: any duration, `day` offset, or chain of after/before
DURATION_BOUND = "At most 10 years (3660d); weeks, days, hours, minutes, e.g. 1w2d or 36h."
MAX_COUNT = 1000  # violations, strikes, messages or tasks a day
MAX_POINTS = 1_000_000
MAX_HEADCOUNT = 10_000  # staff in one role
MAX_GROUP = 1_000_000  # members of one group
MAX_RATE = 100_000  # messages a minute
MAX_JOINS = 10_000  # members one action brings
MAX_INVITES = 100  # invitations per reached member
MAX_INTERACTIONS = 1000  # extra interactions per participating member
MAX_METRIC = 1e15  # a metric target
MAX_TOP = 1000  # members (or teams) a leaderboard picks
MAX_TEAMS = 100
MAX_EXITS = 10  # exits of one stage
MAX_ITEMS = 200  # attributes, segments, channels, redemption items

# Scenario ranges (the simulator's memory budget is checked separately, before a run starts).
MAX_POPULATION = 5_000_000  # seed members of one community
MAX_MARKET = 100_000_000  # people who could ever join
MAX_DAYS = 36_500  # time constants, in days


def p(desc: str, examples: list[Any], **kw: Any) -> J:
    """A property: its description and examples are mandatory."""
    return {"description": desc, "examples": examples, **kw}


def obj(props: J, required: list[str] | None = None, **kw: Any) -> J:
    """A closed object: unknown keys are errors that name the key."""
    out: J = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    out.update(kw)
    return out


# Sizes a real community's SOP stays far below, and that keep every verb within seconds: the
# plan's work grows with days x actions (docs/security.md).
MAX_STAGES = 50
MAX_ACTIONS_PER_MAP = 200
MAX_ACTIONS = 1000  # in the whole playbook, fragments included (lang/checks.py, SOP254)


def id_map(value: J, desc: str, examples: list[Any], most: int | None = None) -> J:
    """A mapping keyed by id (`stages:`, `actions:`, `roles:`), with at most `most` entries."""
    bound = {} if most is None else {"maxProperties": most}
    return p(
        desc + (f" At most {most}." if most is not None else ""),
        examples,
        type="object",
        propertyNames={"pattern": ID_PATTERN},
        additionalProperties=value,
        **bound,
    )


def dur(desc: str, examples: list[Any] | None = None) -> J:
    """A duration such as `24h`, bounded (see DURATION_BOUND)."""
    return p(
        f"{desc} {DURATION_BOUND}", examples or ["24h"], type="string", pattern=DURATION_PATTERN
    )


def ident(desc: str, examples: list[Any]) -> J:
    return p(desc, examples, type="string", pattern=ID_PATTERN)


def expr(desc: str, examples: list[Any], *, windows: bool = False) -> J:
    """A community condition or metric definition: an expression over metrics."""
    more = (
        "; avg(m, 7d), min(m, 7d), max(m, 7d) over the metric's last days (a rolling window)"
        if windows
        else ""
    )
    return p(
        desc + " An expression: metric names, numbers (60% = 0.6), + - * /, comparisons,"
        f" and, or, not{more}. Never code.",
        examples,
        type="string",
        minLength=1,
    )


def member_expr(desc: str, examples: list[Any]) -> J:
    """A member condition: an expression over one member's attributes."""
    return p(
        desc + " A member condition: member attributes (tenure_days, payments, invites, source,"
        " referrer, points, tier, team ... and those under `members.attributes`), numbers,"
        ' strings ("invite"), lists (source in ["invite", "kol"]), comparisons, and, or, not.'
        " Never code.",
        examples,
        type="string",
        minLength=1,
    )


def fraction(desc: str, examples: list[Any], most: float = 1) -> J:
    """A number from 0 to `most`, or a percentage such as `30%`."""
    return p(
        f"{desc} A number (0.3) or a percentage (30%).",
        examples,
        anyOf=[
            {
                "description": f"A fraction from 0 to {most}.",
                "type": "number",
                "minimum": 0,
                "maximum": most,
            },
            {"type": "string", "pattern": PERCENT_PATTERN},
        ],
    )


def _target_values() -> list[J]:
    """The forms of a metric's goal value: a bounded number or a percentage (30% = 0.3)."""
    return [
        {
            "description": f"A number (at most {MAX_METRIC:.0e} either way).",
            "type": "number",
            "minimum": -MAX_METRIC,
            "maximum": MAX_METRIC,
        },
        {"type": "string", "pattern": PERCENT_PATTERN},
    ]


def target_value(desc: str, examples: list[Any]) -> J:
    """A metric's goal value: a number or a percentage (30% = 0.3)."""
    return p(desc, examples, anyOf=_target_values())


def target_schema(desc: str) -> J:
    """A goal: `500` (at least, by the horizon) or `{at_least|at_most: v, by: 90d}`."""
    goal = obj(
        {
            "at_least": target_value(
                "The metric should reach at least this (members, core_members, rates to raise).",
                [500, "30%"],
            ),
            "at_most": target_value(
                "The metric should stay at or below this (churn_rate, costs).", ["10%"]
            ),
            "by": dur(
                "When, counted from the playbook start (default: the end of the plan or"
                " simulation horizon).",
                ["90d"],
            ),
        },
        oneOf=[{"required": ["at_least"]}, {"required": ["at_most"]}],
        description="A goal with its direction and date.",
        examples=[{"at_least": 500, "by": "90d"}, {"at_most": "10%"}],
    )
    return p(
        desc + " A number or percentage alone means `at_least` it, by the horizon.",
        [500, "30%", {"at_least": 500, "by": "90d"}, {"at_most": "10%"}],
        anyOf=[*_target_values(), goal],
    )


def count_schema(desc: str, examples: list[Any]) -> J:
    """One count of a counted metric (`count:` / `per:`)."""

    def cond(what: str, ex: list[Any]) -> J:
        return p(
            what + " A member condition over member attributes, or `true` for all.",
            ex,
            type=["string", "boolean"],
        )

    return obj(
        {
            "members": cond("Count the current members who satisfy this.", ["payments >= 2", True]),
            "ever": cond(
                "Count everyone who ever joined (those who left too) and satisfies this.",
                ['payments >= 1 and source == "wechat_mp"'],
            ),
            "joins": cond(
                "Count the joins (within `window`) of members who satisfy this.",
                ['source == "invite"'],
            ),
            "events": p(
                "Count member events of this type (within `window`): joined, message, post,"
                " checkin, activity, violation, payment, invite, apply, redeem ...",
                ["invite", "checkin"],
                type="string",
                pattern=NAME_PATTERN,
            ),
            "where": member_expr(
                "For `events`: count only the events of members who satisfy this.",
                ['tier == "vip"'],
            ),
            "window": dur(
                "For `joins` and `events`: the trailing window counted (default: since the start).",
                ["30d", "7d"],
            ),
        },
        oneOf=[{"required": [k]} for k in ("members", "ever", "joins", "events")],
        dependencies={"where": ["events"]},
        description=desc,
        examples=examples,
    )


def definitions() -> J:
    """Shapes shared by playbooks and fragments."""
    effect = obj(
        {
            "speak": p(
                "Absolute lift of each reached member's probability of speaking that day"
                " (-1 to 1).",
                [0.04],
                type="number",
                minimum=-1,
                maximum=1,
            ),
            "participation": p(
                "Share of reached members who take part in the activity (0 to 1).",
                [0.15],
                type="number",
                minimum=0,
                maximum=1,
            ),
            "churn": p(
                "Relative change of the reached member's churn hazard (-0.05 = 5 % less; -1 to 1).",
                [-0.05],
                type="number",
                minimum=-1,
                maximum=1,
            ),
            "interactions": p(
                f"Extra interactions per participating member (feed tier rules); at most"
                f" {MAX_INTERACTIONS}.",
                [1],
                type="number",
                minimum=0,
                maximum=MAX_INTERACTIONS,
            ),
            "ugc": p(
                "Probability that a participant writes a UGC post (0 to 1).",
                [0.02],
                type="number",
                minimum=0,
                maximum=1,
            ),
            "conversion": p(
                "Probability that a reached member pays (conversion funnel; 0 to 1).",
                [0.01],
                type="number",
                minimum=0,
                maximum=1,
            ),
            "invites": p(
                f"Invitations sent per reached member (referral, K-factor); at most {MAX_INVITES}.",
                [0.5],
                type="number",
                minimum=0,
                maximum=MAX_INVITES,
            ),
            "joins": p(
                "Members who join because of this action (a KOL post, a campaign burst); at"
                f" most {MAX_JOINS:,} each time it runs.",
                [50],
                type="number",
                minimum=0,
                maximum=MAX_JOINS,
            ),
        },
        description="What the simulator assumes this action does; see docs/simulation.md.",
        examples=[{"speak": 0.04, "churn": -0.05}],
    )
    action_props: J = {
        "title": p("Human title, any language.", ["早安话题"], type="string"),
        "description": p(
            "What the staff member does, for the handbook.", ["准备当日话题"], type="string"
        ),
        "do": p("The kind of action.", ["post", "task"], type="string", enum=sorted(ACTION_KINDS)),
        "owner": ident("Role responsible for the action (see `roles`).", ["ops"]),
        "to": p(
            "Audience: everyone, member (who triggered the event), staff, referrer, tier:<id>,"
            " segment:<id>, or a leaderboard {top: N, by: <member attribute>} (the first N"
            " members by it; `teams: true` ranks teams by their total).",
            ["everyone", "tier:core", "segment:invited", {"top": 3, "by": "invites"}],
            anyOf=[
                {
                    "type": "string",
                    "pattern": r"^("
                    + "|".join(AUDIENCES_FIXED)
                    + r"|tier:"
                    + _AUDIENCE_ID
                    + r"|segment:"
                    + _AUDIENCE_ID
                    + r")"
                    + END,
                },
                obj(
                    {
                        "top": p(
                            f"How many members (or teams) it picks (1 to {MAX_TOP}).",
                            [3],
                            type="integer",
                            minimum=1,
                            maximum=MAX_TOP,
                        ),
                        "by": p(
                            "The numeric member attribute ranked, highest first (invites,"
                            " points, checkins, payments ... or a declared number).",
                            ["invites"],
                            type="string",
                            pattern=NAME_PATTERN,
                        ),
                        "teams": p(
                            "Rank teams (`teams:`) by their members' total of `by`, and pick"
                            " every member of the first `top` teams.",
                            [True],
                            type="boolean",
                        ),
                        "among": p(
                            "Rank only this group: everyone, tier:<id> or segment:<id>.",
                            ["tier:core"],
                            type="string",
                            pattern=GROUP_PATTERN,
                        ),
                    },
                    required=["top", "by"],
                    description="A leaderboard: the first N members by a per-member measure.",
                    examples=[
                        {"top": 3, "by": "invites"},
                        {"top": 1, "by": "checkins", "teams": True},
                    ],
                ),
            ],
        ),
        "where": member_expr(
            "Only for members who satisfy this: an event-triggered action fires only for such a"
            " member; a message to a group reaches only such members.",
            ['source == "invite"', "payments >= 1"],
        ),
        "for_each": p(
            "For a `do: task`: one task per member of this group at the firing time"
            " (everyone, tier:<id> or segment:<id>); the workload counts each.",
            ["tier:vip", "segment:vip-care"],
            type="string",
            pattern=GROUP_PATTERN,
        ),
        "item": ident(
            "For `do: redeem`: the item of `points.redeem` handed out (its stock decreases);"
            " for `on: member.redeemed`: fire only for this item.",
            ["mug"],
        ),
        "template": ident("Id of a template under `templates:`.", ["welcome"]),
        "text": p(
            "Inline message or task text (a Jinja2 template, sandboxed).",
            ["明确建群目标"],
            type="string",
        ),
        "backend": ident("Backend that carries it (see `backends`).", ["group"]),
        "quiet_hours": p(
            "Local hours when it must not be sent; due times move to the end.",
            ["22:00-08:00"],
            type="string",
            pattern=WINDOW_PATTERN,
        ),
        "retries": p(
            "Delivery attempts after the first failure (0 to 20).",
            [3],
            type="integer",
            minimum=0,
            maximum=20,
        ),
        "if": expr(
            "Fire only when this condition holds at the due time.",
            ["members >= 100"],
            windows=True,
        ),
        "reward": obj(
            {
                "streak": p(
                    f"Check-in streak that earns it, in days (1 to {MAX_DURATION_DAYS}).",
                    [7],
                    type="integer",
                    minimum=1,
                    maximum=MAX_DURATION_DAYS,
                ),
                "item": p("What is given.", ["效率手册"], type="string"),
                "points": p(
                    f"Points awarded (0 to {MAX_POINTS:,}).",
                    [50],
                    type="integer",
                    minimum=0,
                    maximum=MAX_POINTS,
                ),
            },
            description="A reward attached to a check-in or contest.",
            examples=[{"streak": 7}],
        ),
        "effect": effect,
        # schedules: exactly one of cron / day / after / before / on
        "cron": p(
            "Recurring local time, five cron fields.", ["0 8 * * *", "0 20 * * 1,5"], type="string"
        ),
        "day": p(
            f"Offset from the stage start, in days (0 = first day; at most {MAX_DURATION_DAYS},"
            " 10 years).",
            [0, 7],
            type="integer",
            minimum=0,
            maximum=MAX_DURATION_DAYS,
        ),
        "time": p(
            "Local time of day for `day` (default 09:00).",
            ["10:00"],
            type="string",
            pattern=TIME_PATTERN,
        ),
        "after": ident("Run after this action, `delay` later.", ["live"]),
        "delay": dur("How long after the `after` action.", ["1d"]),
        "before": ident("Run before this action, `by` earlier.", ["live"]),
        "by": dur("How long before the `before` action.", ["3d"]),
        "on": p(
            "Member event that triggers it.",
            ["member.joined"],
            type="string",
            enum=sorted(MEMBER_EVENTS),
        ),
        "within": dur("Deadline after the event (a send window, checked by `expect`).", ["24h"]),
        "for": dur("For member.silent: how long the member has been silent.", ["72h"]),
        "count": p(
            f"For member.violation: which violation (3 = the third; at most {MAX_COUNT}).",
            [3],
            type="integer",
            minimum=1,
            maximum=MAX_COUNT,
        ),
        "at": p(
            "For member.anniversary: the tenures that trigger it (at most 100, each at most"
            " 10 years).",
            [["30d", "90d", "365d"]],
            type="array",
            minItems=1,
            maxItems=100,
            items={"type": "string", "pattern": DURATION_PATTERN},
        ),
        "tier": ident("For member.tier_changed: the new tier.", ["core"]),
        "streak": p(
            f"For member.checkin_streak: the streak length in days (1 to {MAX_DURATION_DAYS}).",
            [7],
            type="integer",
            minimum=1,
            maximum=MAX_DURATION_DAYS,
        ),
        "counter": p(
            "For member.milestone: the numeric member attribute watched (invites, points,"
            " checkins, payments ... or a declared number).",
            ["invites"],
            type="string",
            pattern=NAME_PATTERN,
        ),
        "reaches": p(
            f"For member.milestone: fires once per member when `counter` first reaches this"
            f" (at most {MAX_METRIC:.0e}).",
            [10],
            type="number",
            minimum=-MAX_METRIC,
            maximum=MAX_METRIC,
        ),
    }
    action = obj(
        action_props,
        required=["do"],
        oneOf=[{"required": [k]} for k in ("cron", "day", "after", "before", "on")],
        dependencies={
            "delay": ["after"],
            "by": ["before"],
            "time": ["day"],
            "within": ["on"],
            "for": ["on"],
            "count": ["on"],
            "at": ["on"],
            "tier": ["on"],
            "streak": ["on"],
            "counter": ["on"],
            "reaches": ["on"],
        },
        description="One thing to do, with exactly one schedule.",
    )
    template_map = p(
        "Message templates by id: Jinja2, rendered in a sandbox.",
        [{"welcome": "欢迎 {{ member.name }}！"}],
        type="object",
        propertyNames={"pattern": ID_PATTERN},
        additionalProperties={"type": "string"},
    )
    params = p(
        "Parameters with defaults; use them in any string as ${name}.",
        [{"invite_target": {"default": 3}}],
        type="object",
        propertyNames={"pattern": PARAM_PATTERN},
        additionalProperties=obj(
            {
                "default": p("Value used when no `with:` gives one.", [3]),
                "description": p("What the parameter means.", ["邀请人数"], type="string"),
            },
            required=["default"],
        ),
    )
    return {"action": action, "templates": template_map, "params": params}


def stage_schema() -> J:
    """The schema of one stage."""
    policy = obj(
        {
            "extend": dur("Give the stage more time.", ["30d"]),
            "goto": ident("Move to this (rescue) stage.", ["rescue"]),
            "alert": ident("Alert this role.", ["ops"]),
            "abort": p("Stop the playbook.", [True], type="boolean"),
        },
        minProperties=1,
        description="What happens when the gate is still closed at the deadline.",
        examples=[{"goto": "rescue"}],
    )
    deadline = obj(
        {
            "after": dur("Time from the stage start.", ["60d"]),
            "then": policy,
        },
        required=["then"],
        description="When no exit has been taken in time (under `exit:` or beside `exits:`).",
        examples=[{"after": "60d", "then": {"goto": "rescue"}}],
    )
    include_item = p(
        "A fragment file with its parameters.",
        [{"fragment": "fragments/fission.yaml"}],
        anyOf=[
            {"type": "string"},
            obj(
                {
                    "fragment": p(
                        "Path relative to this file.", ["fragments/fission.yaml"], type="string"
                    ),
                    "with": p("Parameter values.", [{"invite_target": 3}], type="object"),
                },
                required=["fragment"],
            ),
        ],
    )
    return obj(
        {
            "title": p("Stage title, any language.", ["启动期"], type="string"),
            "description": p("What the stage is for.", ["招募种子用户"], type="string"),
            "after": p(
                "Stage(s) that must finish first (the stage DAG).",
                ["prep", ["growth"]],
                anyOf=[
                    {"type": "string", "pattern": ID_PATTERN},
                    {
                        "type": "array",
                        "items": {"type": "string", "pattern": ID_PATTERN},
                        "minItems": 1,
                    },
                ],
            ),
            "rescue": p(
                "Entered only through a `goto` (deadline policy or exit).", [True], type="boolean"
            ),
            "optional": p(
                "Entered only when an operator asks for it (e.g. dissolution).",
                [True],
                type="boolean",
            ),
            "duration": obj(
                {
                    "min": dur("The stage lasts at least this long.", ["30d"]),
                    "max": dur("The default deadline.", ["60d"]),
                },
                description="Minimum and maximum duration.",
                examples=[{"min": "30d", "max": "60d"}],
            ),
            "actions": id_map(
                {"$ref": "#/definitions/action"},
                "The stage's actions by id.",
                [{"welcome": {"on": "member.joined", "do": "message"}}],
                most=MAX_ACTIONS_PER_MAP,
            ),
            "include": p(
                "Fragments whose actions and templates join this stage.",
                ["fragments/fission.yaml"],
                anyOf=[{"type": "string"}, {"type": "array", "items": include_item}],
            ),
            "with": p(
                "Parameter values for a single string `include`.",
                [{"invite_target": 3}],
                type="object",
            ),
            "exit": obj(
                {
                    "when": expr(
                        "The gate: the stage is done when this holds (after `duration.min`).",
                        [
                            "members >= 200 and daily_speak_rate >= 20%",
                            "avg(daily_speak_rate, 7d) >= 20%",
                        ],
                        windows=True,
                    ),
                    "for": dur(
                        "The gate must have held on each of the last days of this length"
                        " (a steady state, not one lucky day).",
                        ["7d"],
                    ),
                    "then": obj(
                        {
                            "goto": ident(
                                "Next stage instead of the `after` successors.", ["growth"]
                            )
                        },
                        required=["goto"],
                        description="Where to go when the gate passes.",
                        examples=[{"goto": "growth"}],
                    ),
                    "deadline": deadline,
                },
                description="Exit gate and deadline policy (one exit, named `pass`).",
                examples=[{"when": "members >= 200"}, {"when": "members >= 200", "for": "7d"}],
            ),
            "exits": p(
                "Several ways out, tried in order; the first whose condition holds (for its"
                f" `for`) wins. Instead of `exit:`. At most {MAX_EXITS}.",
                [
                    [
                        {"id": "success", "when": "core_members >= 500", "for": "7d"},
                        {
                            "id": "decline",
                            "when": "avg(daily_speak_rate, 14d) < 5%",
                            "goto": "dissolution",
                        },
                    ]
                ],
                type="array",
                minItems=1,
                maxItems=MAX_EXITS,
                items=obj(
                    {
                        "id": ident(
                            "The outcome's name in every output (plan, simulate, status).",
                            ["success", "decline"],
                        ),
                        "when": expr(
                            "This exit is taken when this holds.",
                            ["core_members >= 500 and avg(daily_speak_rate, 7d) >= 20%"],
                            windows=True,
                        ),
                        "for": dur(
                            "The condition must have held on each of the last days of this length.",
                            ["7d"],
                        ),
                        "goto": ident(
                            "The stage it leads to (default: the stages `after` this one).",
                            ["dissolution"],
                        ),
                    },
                    required=["id", "when"],
                    description="One exit of a stage.",
                    examples=[{"id": "success", "when": "members >= 500", "for": "7d"}],
                ),
            ),
            "deadline": deadline,
        },
        description="A lifecycle stage.",
        required=[],
    )


def playbook_schema() -> J:
    """The schema of a playbook file."""
    step = obj(
        {
            "do": p("Action kind to perform.", ["mute"], type="string", enum=sorted(ACTION_KINDS)),
            "text": p("Text for the step.", ["暂时禁言，清理广告"], type="string"),
            "template": ident("Template to send.", ["incident-notice"]),
            "alert": ident("Role alerted.", ["ops"]),
            "within": dur("Alert must be acknowledged within.", ["10m"]),
            "escalate": ident("Role escalated to.", ["members"]),
            "after": dur("Escalate if unresolved after.", ["1h"]),
        },
        oneOf=[{"required": ["do"]}, {"required": ["alert"]}, {"required": ["escalate"]}],
        description="One step: an action, an alert or an escalation.",
    )
    schema: J = {
        "$schema": DRAFT,
        "$id": BASE + "playbook.schema.json",
        "title": "sop playbook",
        "description": (
            "A community-operations SOP as code: stages, timed actions and metric gates."
        ),
        "type": "object",
        "additionalProperties": False,
        "required": ["playbook", "timezone", "stages"],
        "properties": {
            "playbook": ident(
                "Playbook id: a lower-case slug, used in idempotency keys.", ["working-moms"]
            ),
            "title": p("Title in any language.", ["职场妈妈技能提升社群"], type="string"),
            "description": p(
                "What the community is for.", ["帮助1000名职场妈妈掌握时间管理"], type="string"
            ),
            "version": p("Playbook version.", [3, "2.1"], type=["integer", "string"]),
            "owner": p("Person or team accountable.", ["growth-team"], type="string"),
            "timezone": p(
                "IANA time zone of every local time in the playbook.",
                ["Asia/Shanghai"],
                type="string",
            ),
            "params": {"$ref": "#/definitions/params"},
            "community": obj(
                {
                    "type": p(
                        "Community type.", ["user-value"], type="string", enum=COMMUNITY_TYPES
                    ),
                    "platform": p(
                        "Where it lives.", ["wecom-group"], type="string", enum=PLATFORMS
                    ),
                    "capacity": p(
                        f"Members per group (1 to {MAX_GROUP:,}); a full group opens a new one.",
                        [500],
                        type="integer",
                        minimum=1,
                        maximum=MAX_GROUP,
                    ),
                    "start": p(
                        "Launch date (YYYY-MM-DD, a real date from 1970 to 2199);"
                        " `sop plan --start` overrides.",
                        ["2026-12-01"],
                        type="string",
                        pattern=DATE_PATTERN,
                        format="date",
                    ),
                },
                description="The community.",
                examples=[{"type": "brand", "platform": "wecom"}],
            ),
            "roles": id_map(
                obj(
                    {
                        "title": p("Role title.", ["社群运营"], type="string"),
                        "headcount": p(
                            f"People in the role (1 to {MAX_HEADCOUNT:,}).",
                            [2],
                            type="integer",
                            minimum=1,
                            maximum=MAX_HEADCOUNT,
                        ),
                        "capacity": p(
                            f"Tasks one person can do in a day (default 8, at most {MAX_COUNT}).",
                            [8],
                            type="integer",
                            minimum=1,
                            maximum=MAX_COUNT,
                        ),
                    },
                    required=["headcount"],
                ),
                "Staff roles that own actions.",
                [{"ops": {"title": "社群运营", "headcount": 2}}],
            ),
            "backends": id_map(
                obj(
                    {
                        "type": p(
                            "Backend type.", ["wecom-robot"], type="string", enum=BACKEND_TYPES
                        ),
                        "url": p(
                            "Endpoint; secrets only as ${env:NAME}.",
                            ["${env:GROUP_WEBHOOK}"],
                            type="string",
                        ),
                        "key": p(
                            "Secret key, only as ${env:NAME}.", ["${env:WECOM_KEY}"], type="string"
                        ),
                        "token": p(
                            "Secret token, only as ${env:NAME}.",
                            ["${env:BOT_TOKEN}"],
                            type="string",
                        ),
                        "rate": p(
                            f"Messages a minute the platform accepts (1 to {MAX_RATE:,}).",
                            [20],
                            type="integer",
                            minimum=1,
                            maximum=MAX_RATE,
                        ),
                        "notify": ident("For tasks: the backend that reminds staff.", ["console"]),
                        "path": p("For jsonl: output file.", ["out/messages.jsonl"], type="string"),
                        "options": p(
                            "Platform settings (docs/backends.md lists each type's); any value"
                            " that is a secret only as ${env:NAME}.",
                            [{"corp_id": "${env:WECOM_CORP_ID}", "agent_id": "1000002"}],
                            type="object",
                            maxProperties=30,
                            propertyNames={"pattern": "^[a-z][a-z0-9_]{0,39}$"},
                            additionalProperties={"type": "string"},
                        ),
                    },
                    required=["type"],
                ),
                "Where actions go.",
                [{"group": {"type": "wecom-robot"}}],
            ),
            "defaults": obj(
                {
                    "backend": ident("Default backend of member-facing actions.", ["group"]),
                    "staff_backend": ident(
                        "Default backend of `do: task` (staff reminders).", ["staff"]
                    ),
                    "owner": ident("Default owner role.", ["ops"]),
                    "quiet_hours": p(
                        "Default quiet hours.",
                        ["22:00-08:00"],
                        type="string",
                        pattern=WINDOW_PATTERN,
                    ),
                    "retries": p(
                        "Default retries (0 to 20).", [3], type="integer", minimum=0, maximum=20
                    ),
                    "to": p("Default audience.", ["everyone"], type="string"),
                },
                description="Defaults for every action.",
                examples=[{"backend": "group"}],
            ),
            "limits": obj(
                {
                    "member_messages_per_day": p(
                        f"Most messages one member should get a day (1 to {MAX_COUNT}).",
                        [3],
                        type="integer",
                        minimum=1,
                        maximum=MAX_COUNT,
                    ),
                    "staff_tasks_per_day": p(
                        f"Default tasks one person can do a day (1 to {MAX_COUNT}).",
                        [8],
                        type="integer",
                        minimum=1,
                        maximum=MAX_COUNT,
                    ),
                },
                description="Budgets the plan checks.",
                examples=[{"member_messages_per_day": 3}],
            ),
            "metrics": id_map(
                obj(
                    {
                        "description": p("What it measures.", ["需求问卷回收份数"], type="string"),
                        "unit": p(
                            "Unit.",
                            ["count"],
                            type="string",
                            enum=["count", "ratio", "currency", "days", "score"],
                        ),
                        "definition": expr(
                            "Computed from other metrics.", ["paying_members / members"]
                        ),
                        "target": target_schema(
                            "The goal the team aims for (shorthand of `targets.<metric>`;"
                            f" at most {MAX_METRIC:.0e} either way)."
                        ),
                        "count": count_schema(
                            "A counted metric: how many members, joins or events match"
                            " (divided by `per` when given).",
                            [{"members": "payments >= 2"}, {"events": "invite", "window": "30d"}],
                        ),
                        "per": count_schema(
                            "The denominator of a counted ratio: count / per (undefined while"
                            " per is 0).",
                            [{"members": "payments >= 1"}],
                        ),
                        "by_channel": p(
                            "Also report it per acquisition channel (`channels:`).",
                            [True],
                            type="boolean",
                        ),
                        "cumulative": p(
                            "A count that never decreases (totals since the start).",
                            [True],
                            type="boolean",
                        ),
                    },
                    dependencies={"per": ["count"]},
                ),
                "Custom metrics; built-ins need no entry.",
                [
                    {"survey_responses": {"unit": "count"}},
                    {
                        "repeat_purchase_rate": {
                            "unit": "ratio",
                            "count": {"members": "payments >= 2"},
                            "per": {"members": "payments >= 1"},
                            "target": "30%",
                        }
                    },
                ],
            ),
            "targets": p(
                "Goals by metric (built-in or custom): plan lists them, simulate reports the"
                " chance of reaching each, status shows progress.",
                [
                    {
                        "core_members": {"at_least": 500, "by": "90d"},
                        "churn_rate": {"at_most": "10%"},
                    }
                ],
                type="object",
                propertyNames={"pattern": ID_PATTERN},
                additionalProperties=target_schema("The goal of this metric."),
            ),
            "members": obj(
                {
                    "attributes": p(
                        "Member attributes the playbook declares, set by events (`update`,"
                        " `apply`) and imports, read by member conditions; ids are names"
                        f" (a-z, 0-9, _). At most {MAX_ITEMS}.",
                        [{"city": {"type": "string", "title": "城市"}}],
                        type="object",
                        maxProperties=MAX_ITEMS,
                        propertyNames={"pattern": NAME_PATTERN},
                        additionalProperties=obj(
                            {
                                "type": p(
                                    "Its type; enum values are listed in `values`.",
                                    ["string", "enum"],
                                    type="string",
                                    enum=["string", "number", "integer", "boolean", "enum", "date"],
                                ),
                                "title": p("Title, any language.", ["孩子年级"], type="string"),
                                "description": p("What it records.", ["报名时填写"], type="string"),
                                "values": p(
                                    "For `type: enum`: the allowed values.",
                                    [["小学", "初中", "高中"]],
                                    type="array",
                                    minItems=1,
                                    maxItems=MAX_ITEMS,
                                    items={"type": "string", "minLength": 1},
                                ),
                                "pii": p(
                                    "Personal data (phone, address): never written to logs,"
                                    " plan output or the dashboard, nor sent to a group.",
                                    [True],
                                    type="boolean",
                                ),
                                "default": p(
                                    "The value of a member it was never set for.",
                                    ["", 0],
                                    type=["string", "number", "boolean"],
                                ),
                            },
                            required=["type"],
                        ),
                    ),
                },
                description="What the playbook knows about each member.",
                examples=[{"attributes": {"city": {"type": "string"}}}],
            ),
            "segments": id_map(
                obj(
                    {
                        "title": p("Segment title.", ["裂变用户"], type="string"),
                        "description": p("Who they are.", ["好友邀请入群的成员"], type="string"),
                        "when": member_expr(
                            "The members in the segment.", ['source == "invite"', 'tier == "vip"']
                        ),
                        "size": p(
                            "The planner's estimate of its members (for the workload of"
                            f" per-member tasks; at most {MAX_GROUP:,}); simulate forecasts it.",
                            [30],
                            type="integer",
                            minimum=0,
                            maximum=MAX_GROUP,
                        ),
                    },
                    required=["when"],
                ),
                "Named groups of members by their attributes; audiences `segment:<id>`.",
                [{"invited": {"title": "裂变用户", "when": 'source == "invite"'}}],
                most=MAX_ITEMS,
            ),
            "channels": p(
                "Acquisition channels: where members come from (their `source`). Each adds"
                " the metrics `<id>_joins` and `<id>_share`; ids are names (a-z, 0-9, _)."
                f" At most {MAX_ITEMS}.",
                [{"invite": {"title": "好友邀请", "share": "30%", "referral": True}}],
                type="object",
                maxProperties=MAX_ITEMS,
                propertyNames={"pattern": NAME_PATTERN},
                additionalProperties=obj(
                    {
                        "title": p("Channel title.", ["公众号引流"], type="string"),
                        "description": p("How it brings members.", ["公众号文章"], type="string"),
                        "share": fraction(
                            "The planned share of all joins (a target of `<id>_share`).",
                            ["30%", 0.2],
                        ),
                        "referral": p(
                            "Joins by a member's invitation land in this channel (at most one).",
                            [True],
                            type="boolean",
                        ),
                        "opens": ident(
                            "The stage in which it starts bringing members (default: from the"
                            " start).",
                            ["cold-start"],
                        ),
                    }
                ),
            ),
            "admission": obj(
                {
                    "require": p(
                        "Attributes an application must carry (declared under"
                        " `members.attributes`).",
                        [["referrer_note", "expectation"]],
                        type="array",
                        maxItems=MAX_ITEMS,
                        items={"type": "string", "pattern": NAME_PATTERN},
                    ),
                    "approve": member_expr(
                        "Approve at once when the applicant satisfies this; otherwise staff"
                        " review.",
                        ['referrer != ""'],
                    ),
                    "review": obj(
                        {
                            "owner": ident("The role that reviews applications.", ["members"]),
                            "within": dur("How soon a review is due (default 24h).", ["24h"]),
                        },
                        required=["owner"],
                        description="The review task of each application not approved at once.",
                        examples=[{"owner": "members", "within": "24h"}],
                    ),
                },
                required=["review"],
                description="An entry threshold: people apply, staff review; `member.applied`,"
                " `member.approved` and `member.rejected` trigger actions.",
                examples=[{"require": ["referrer_note"], "review": {"owner": "ops"}}],
            ),
            "points": obj(
                {
                    "earn": p(
                        "Points one member event earns, by event type (checkin, post, invite,"
                        f" payment, message ...; 0 to {MAX_POINTS:,}).",
                        [{"checkin": 5, "post": 10, "invite": 50}],
                        type="object",
                        propertyNames={"pattern": NAME_PATTERN},
                        additionalProperties={
                            "description": f"Points per event (0 to {MAX_POINTS:,}).",
                            "type": "integer",
                            "minimum": 0,
                            "maximum": MAX_POINTS,
                        },
                    ),
                    "expire": dur("Points lapse this long after they were earned.", ["365d"]),
                    "redeem": id_map(
                        obj(
                            {
                                "title": p("Item title.", ["定制马克杯"], type="string"),
                                "cost": p(
                                    f"Points it costs (1 to {MAX_POINTS:,}).",
                                    [200],
                                    type="integer",
                                    minimum=1,
                                    maximum=MAX_POINTS,
                                ),
                                "stock": p(
                                    f"How many there are (default: unlimited; at most"
                                    f" {MAX_POINTS:,}).",
                                    [100],
                                    type="integer",
                                    minimum=0,
                                    maximum=MAX_POINTS,
                                ),
                            },
                            required=["cost"],
                        ),
                        "Items members can buy with points.",
                        [{"mug": {"title": "定制马克杯", "cost": 200, "stock": 100}}],
                        most=MAX_ITEMS,
                    ),
                },
                description="A points ledger per member: earned by events and rewards, spent on"
                " items; the balance is the member attribute `points`.",
                examples=[{"earn": {"checkin": 5}, "redeem": {"mug": {"cost": 200}}}],
            ),
            "teams": obj(
                {
                    "names": p(
                        f"The teams' names (2 to {MAX_TEAMS}); not with `assign: attribute`.",
                        [["红队", "蓝队", "绿队"]],
                        type="array",
                        minItems=2,
                        maxItems=MAX_TEAMS,
                        items={"type": "string", "minLength": 1},
                    ),
                    "assign": p(
                        "How members are split: round-robin (in order of joining), balanced"
                        " (to the smallest team), attribute (one team per value of `by`).",
                        ["round-robin"],
                        type="string",
                        enum=["round-robin", "balanced", "attribute"],
                    ),
                    "by": p(
                        "For `assign: attribute`: the member attribute whose values name the"
                        " teams.",
                        ["city"],
                        type="string",
                        pattern=NAME_PATTERN,
                    ),
                    "score": p(
                        "The numeric member attribute a team's score sums over its members.",
                        ["checkins", "points"],
                        type="string",
                        pattern=NAME_PATTERN,
                    ),
                },
                required=["score"],
                description="Teams for PK contests; the member attribute `team` holds each"
                " member's team.",
                examples=[{"names": ["红队", "蓝队"], "score": "checkins"}],
            ),
            "tiers": obj(
                {
                    "review": obj(
                        {"cron": p("When tiers are reviewed.", ["0 10 1 * *"], type="string")},
                        required=["cron"],
                        description="Review schedule.",
                        examples=[{"cron": "0 10 1 * *"}],
                    ),
                    "hysteresis": p(
                        "Demote only below this fraction of a promotion threshold (above 0, at"
                        " most 1).",
                        [0.9],
                        type="number",
                        exclusiveMinimum=0,
                        maximum=1,
                    ),
                    "levels": id_map(
                        obj(
                            {
                                "title": p("Tier title.", ["核心成员"], type="string"),
                                "promote": expr(
                                    "Members meeting this rise to the tier at review.",
                                    ["tenure_days >= 90 and weekly_interactions >= 3"],
                                ),
                                "demote": obj(
                                    {
                                        "silent_for": dur(
                                            "Demote after this much silence.", ["14d"]
                                        ),
                                        "when": expr(
                                            "Or when this holds.", ["weekly_interactions < 1"]
                                        ),
                                        "to": ident(
                                            "Tier to fall to (default: the tier below).", ["normal"]
                                        ),
                                        "message": ident(
                                            "Template sent on demotion.", ["come-back"]
                                        ),
                                    },
                                    description="Demotion rule.",
                                    examples=[{"silent_for": "14d"}],
                                ),
                                "size": p(
                                    "The planner's estimate of members in the tier (for the"
                                    f" workload of per-member tasks; at most {MAX_GROUP:,}).",
                                    [30],
                                    type="integer",
                                    minimum=0,
                                    maximum=MAX_GROUP,
                                ),
                                "perks": p(
                                    "What the tier gets.",
                                    [["1:1 咨询"]],
                                    type="array",
                                    items={"type": "string"},
                                ),
                            }
                        ),
                        "Tiers from lowest to highest.",
                        [{"normal": {}, "core": {}}],
                    ),
                },
                required=["levels"],
                description="Member tiers.",
                examples=[{"levels": {"normal": {}}}],
            ),
            "moderation": obj(
                {
                    "rules": p(
                        "Group rules, shown to newcomers.",
                        [["禁止广告"]],
                        type="array",
                        items={"type": "string"},
                    ),
                    "report_channel": p("Where members report.", ["@群管理员"], type="string"),
                    "violations": obj(
                        {
                            "warn_at": p(
                                f"Violation count that triggers a warning (1 to {MAX_COUNT}).",
                                [1],
                                type="integer",
                                minimum=1,
                                maximum=MAX_COUNT,
                            ),
                            "remove_at": p(
                                f"Violation count that removes the member (1 to {MAX_COUNT}).",
                                [3],
                                type="integer",
                                minimum=1,
                                maximum=MAX_COUNT,
                            ),
                            "window": dur("Violations older than this are forgotten.", ["90d"]),
                            "warn": ident("Warning template.", ["warning"]),
                            "announce": ident("Removal announcement template.", ["removal-notice"]),
                        },
                        required=["remove_at"],
                        description="Strikes.",
                        examples=[{"remove_at": 3}],
                    ),
                },
                description="Rules and moderation.",
                examples=[{"rules": ["禁止广告"]}],
            ),
            "incidents": id_map(
                obj(
                    {
                        "title": p("Incident title.", ["广告刷屏"], type="string"),
                        "detect": expr(
                            "Raised automatically when this holds.",
                            ["churn_rate > 10%", "avg(daily_speak_rate, 3d) < 5%"],
                            windows=True,
                        ),
                        "owner": ident("Role in charge.", ["ops"]),
                        "steps": p(
                            "Ordered steps: actions, alerts, escalations.",
                            [[{"do": "mute"}, {"alert": "ops", "within": "10m"}]],
                            type="array",
                            minItems=1,
                            items=step,
                        ),
                    },
                    required=["owner", "steps"],
                ),
                "Emergency plans.",
                [{"spam-flood": {"owner": "ops", "steps": [{"do": "mute"}]}}],
            ),
            "routines": id_map(
                {"$ref": "#/definitions/action"},
                "Actions active in every stage (team cadence, member events);"
                " `day` counts from the playbook start.",
                [{"standup": {"cron": "0 9 * * 1-5", "do": "task"}}],
                most=MAX_ACTIONS_PER_MAP,
            ),
            "stages": id_map(
                {"$ref": "#/definitions/stage"},
                "Lifecycle stages by id.",
                [{"prep": {"title": "前期筹备"}}],
                most=MAX_STAGES,
            ),
            "templates": {"$ref": "#/definitions/templates"},
            "expect": p(
                "Invariants checked on every simulated run.",
                [[{"every": "member.joined", "gets": "welcome", "within": "24h"}]],
                type="array",
                items={
                    "anyOf": [
                        obj(
                            {
                                "every": p(
                                    "Member event.",
                                    ["member.joined"],
                                    type="string",
                                    enum=sorted(MEMBER_EVENTS),
                                ),
                                "gets": ident("Action that must follow.", ["welcome"]),
                                "within": dur("How soon.", ["24h"]),
                            },
                            required=["every", "gets", "within"],
                        ),
                        obj(
                            {
                                "max_messages_per_member_per_day": p(
                                    f"Cap on messages one member receives a day (1 to"
                                    f" {MAX_COUNT}).",
                                    [3],
                                    type="integer",
                                    minimum=1,
                                    maximum=MAX_COUNT,
                                )
                            },
                            required=["max_messages_per_member_per_day"],
                        ),
                    ]
                },
            ),
        },
        "definitions": {**definitions(), "stage": stage_schema()},
    }
    return schema


def fragment_schema() -> J:
    """The schema of a fragment file included by stages."""
    return {
        "$schema": DRAFT,
        "$id": BASE + "fragment.schema.json",
        "title": "sop fragment",
        "description": "Reusable actions and templates that stages include.",
        "type": "object",
        "additionalProperties": False,
        "required": ["fragment", "actions"],
        "properties": {
            "fragment": ident("Fragment id.", ["fission"]),
            "title": p("Title.", ["裂变活动"], type="string"),
            "description": p("What it adds.", ["邀请3人得工具包"], type="string"),
            "params": {"$ref": "#/definitions/params"},
            "actions": id_map(
                {"$ref": "#/definitions/action"},
                "Actions added to the stage.",
                [{"invite": {"day": 0, "do": "post"}}],
                most=MAX_ACTIONS_PER_MAP,
            ),
            "templates": {"$ref": "#/definitions/templates"},
        },
        "definitions": definitions(),
    }


def scenario_schema() -> J:
    """The schema of a simulation scenario file."""

    def fixed(desc: str, ex: float, **kw: Any) -> J:
        return p(desc, [ex], type="number", **kw)

    def num(desc: str, ex: float, **kw: Any) -> J:
        """A parameter that may be a distribution (engine/sim/parameters.py)."""
        return p(
            desc,
            [ex],
            anyOf=[
                {"type": "number", **kw},
                {"type": "object", "$ref": "#/definitions/distribution"},
            ],
        )

    # Ranges a real community can need; every number is bounded, so no value is infinite and
    # the simulator's arrays stay within reach (`simulate` also checks its memory budget).
    SHAPE = {"minimum": 0.001, "maximum": 1_000_000}  # Beta shape parameters
    # retention's Beta may be nearly a point: `sop calibrate` fits ln alpha, ln beta up to 17
    RET_SHAPE = {"minimum": 0.001, "maximum": 100_000_000}
    METRIC_VALUE = {"minimum": -1e12, "maximum": 1e12}

    return {
        "$schema": DRAFT,
        "$id": BASE + "scenario.schema.json",
        "title": "sop scenario",
        "description": "Parameters of `sop simulate`; see docs/simulation.md for the equations.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "scenario": ident("Scenario id.", ["launch-q1"]),
            "description": p("What the scenario assumes.", ["保守估计"], type="string"),
            "acquisition": obj(
                {
                    "seed_users": num(
                        "Members who join when acquisition opens.",
                        80,
                        minimum=0,
                        maximum=MAX_POPULATION,
                    ),
                    "start_stage": ident(
                        "Acquisition opens when this stage starts (default: at"
                        " once); earlier stages are preparation.",
                        ["cold-start"],
                    ),
                    "organic_per_day": num(
                        "Mean organic joins a day (Poisson).", 4, minimum=0, maximum=100_000
                    ),
                    "bass_p": num(
                        "Bass innovation coefficient, per year.", 0.03, minimum=0, maximum=2000
                    ),
                    "bass_q": num(
                        "Bass imitation coefficient, per year.", 0.38, minimum=0, maximum=2000
                    ),
                    "market": num(
                        "Bass market potential m (people who could ever join).",
                        5000,
                        minimum=0,
                        maximum=MAX_MARKET,
                    ),
                    "invites_per_member_per_day": num(
                        "Baseline invitations a member sends a day.", 0.01, minimum=0, maximum=100
                    ),
                    "invite_conversion": num(
                        "Share of invitations that join (K = invites x this).",
                        0.15,
                        minimum=0,
                        maximum=1,
                    ),
                    "invite_decay_days": num(
                        "Invitation activity decays with tenure (e-folding).",
                        30,
                        exclusiveMinimum=0,
                        maximum=MAX_DAYS,
                    ),
                    **_scenario_channels(fixed),
                },
                description="Where members come from.",
                examples=[{"seed_users": 80}],
            ),
            "retention": obj(
                {
                    "model": p(
                        "Retention model: sbg, sbg-mixture (early quitters), bdw"
                        " (beta-discrete-Weibull: hazards that rise or fall with tenure),"
                        " bdw-mixture.",
                        ["sbg"],
                        type="string",
                        enum=["sbg", "sbg-mixture", "bdw", "bdw-mixture"],
                    ),
                    "alpha": num(
                        "Churn probability per period ~ Beta(alpha, beta).",
                        1.0,
                        **RET_SHAPE,
                    ),
                    "beta": num("Beta beta of the churn probability.", 4.0, **RET_SHAPE),
                    "c": num(
                        "bdw: survival (1 - theta)^(t^c); c > 1 hazards rise with tenure.",
                        1.2,
                        minimum=0.018,
                        maximum=20,
                    ),
                    "early_quit_share": num(
                        "sbg-mixture, bdw-mixture: share of joiners who leave in the first period.",
                        0.2,
                        minimum=0,
                        maximum=0.999,
                    ),
                    "period_days": fixed(
                        "Length of the retention period in days.",
                        30,
                        exclusiveMinimum=0,
                        maximum=MAX_DAYS,
                    ),
                    "draws": p(
                        "Joint draws of the model's parameters (alpha, beta, [c],"
                        " [early_quit_share]): each run resamples one row.",
                        [[[1.1, 21.9], [1.2, 23.0]]],
                        type="array",
                        minItems=1,
                        maxItems=1000,
                        items={
                            "type": "array",
                            "minItems": 2,
                            "maxItems": 4,
                            "items": {"type": "number", "minimum": 0, **_upper(RET_SHAPE)},
                        },
                    ),
                },
                description="Heterogeneous churn (shifted-beta-geometric and its relatives).",
                examples=[{"alpha": 1.0, "beta": 4.0}],
            ),
            "activity": obj(
                {
                    "speak_alpha": num("Daily speaking probability ~ Beta(a, b): a.", 1.2, **SHAPE),
                    "speak_beta": num("Beta b.", 4.0, **SHAPE),
                    "tenure_decay_days": num(
                        "Speaking decays with tenure (e-folding days).",
                        120,
                        exclusiveMinimum=0,
                        maximum=MAX_DAYS,
                    ),
                    "decay_floor": num(
                        "Share of the initial propensity kept for good.", 0.4, minimum=0, maximum=1
                    ),
                    "ugc_per_speak": num(
                        "Chance that a speaking day includes a UGC post.",
                        0.02,
                        minimum=0,
                        maximum=1,
                    ),
                    "violation_per_speak": num(
                        "Chance that a speaking day breaks a rule.", 0.002, minimum=0, maximum=1
                    ),
                    "retention_coupling": num(
                        "Correlation of speaking and staying propensities (Gaussian copula);"
                        " 0: independent.",
                        0.35,
                        minimum=-0.95,
                        maximum=0.95,
                    ),
                },
                description="Who speaks, how often.",
                examples=[{"speak_alpha": 1.2}],
            ),
            "conversion": obj(
                {
                    "base_daily": num(
                        "Daily chance that a member pays without any action.",
                        0.0005,
                        minimum=0,
                        maximum=1,
                    ),
                },
                description="The funnel.",
                examples=[{"base_daily": 0.0005}],
            ),
            "metrics": p(
                "Custom metrics without a definition: value on day 0 and growth a day.",
                [{"survey_responses": {"start": 0, "per_day": 40}}],
                type="object",
                propertyNames={"pattern": ID_PATTERN},
                additionalProperties=obj(
                    {
                        "start": num("Value on day 0.", 0, **METRIC_VALUE),
                        "per_day": num("Mean change a day.", 40, **METRIC_VALUE),
                        "noise": num(
                            "Standard deviation of the daily change.",
                            5,
                            minimum=0,
                            maximum=METRIC_VALUE["maximum"],
                        ),
                        "per_member": num(
                            "Added per current member (e.g. a rate).", 0.0, **METRIC_VALUE
                        ),
                    }
                ),
            ),
            "history_includes": p(
                "Actions the calibrated history already ran: their effects are in the"
                " parameters, so the simulation does not apply them again.",
                [["welcome", "nudge-silent"]],
                type="array",
                maxItems=MAX_ACTIONS,
                items={"type": "string", "pattern": ID_PATTERN},
            ),
            **_scenario_members(fixed),
        },
        "definitions": {"distribution": _distribution()},
    }


def _upper(bounds: J) -> J:
    """The upper bound of a range."""
    return {"maximum": bounds["maximum"]} if "maximum" in bounds else {}


def _distribution() -> J:
    """A parameter's distribution: normal, uniform or resampled draws (each value within the
    parameter's own range: `simulate` checks it, SOP287)."""
    number = {"type": "number", "minimum": -1e12, "maximum": 1e12}
    spread = {"type": "number", "minimum": 0, "maximum": 1e12}
    return obj(
        {
            "mean": p("Normal: the mean.", [1.0], **number),
            "sd": p("Normal: the standard deviation.", [0.1], **spread),
            "min": p("Normal: truncated below.", [0.5], **number),
            "max": p("Normal: truncated above.", [1.5], **number),
            "low": p("Uniform: the lower end.", [0.5], **number),
            "high": p("Uniform: the upper end.", [1.5], **number),
            "draws": p(
                "Values resampled with equal weight.",
                [[0.9, 1.0, 1.2]],
                type="array",
                minItems=1,
                maxItems=1000,
                items=number,
            ),
        },
        oneOf=[{"required": ["mean"]}, {"required": ["low"]}, {"required": ["draws"]}],
        dependencies={
            "sd": ["mean"],
            "min": ["mean"],
            "max": ["mean"],
            "low": ["high"],
            "high": ["low"],
        },
        description="A distribution: {mean, sd} (normal), {low, high} (uniform) or {draws}.",
        examples=[{"mean": 1.0, "sd": 0.1}],
    )


def _scenario_channels(num: Any) -> J:
    """The scenario's per-channel inflow (`acquisition.channels`, `default_channel`)."""
    return {
        "channels": p(
            "Per acquisition channel of the playbook: its own joins a day (Poisson, once the"
            " channel is open and from `from_day`) and its share of the organic, Bass, seed and"
            " action joins. Referral joins land in the playbook's `referral: true` channel.",
            [{"kol": {"per_day": 5, "from_day": 14}, "wechat_mp": {"share": 0.2}}],
            type="object",
            propertyNames={"pattern": ID_PATTERN},
            maxProperties=200,
            additionalProperties=obj(
                {
                    "per_day": num(
                        "Mean joins a day by this channel.", 5, minimum=0, maximum=100_000
                    ),
                    "from_day": num(
                        "First day (from the playbook start) it brings joins.",
                        14,
                        minimum=0,
                        maximum=MAX_DAYS,
                    ),
                    "share": num(
                        "Share of the organic, Bass, seed and action joins it brings.",
                        0.2,
                        minimum=0,
                        maximum=1,
                    ),
                }
            ),
        ),
        "default_channel": ident(
            "The channel joins no other channel claims land in (default: `organic`).",
            ["wechat_mp"],
        ),
    }


def _scenario_members(num: Any) -> J:
    """The scenario's member model: attribute distributions, admission, points."""
    dist = {
        "values": p(
            "String or enum attribute: each value's probability (the rest stays unset).",
            [{"上海": 0.3, "北京": 0.2}],
            type="object",
            propertyNames={"maxLength": 200},
            maxProperties=1000,
            additionalProperties={"type": "number", "minimum": 0, "maximum": 1},
        ),
        "mean": num(
            "Number attribute: mean of a normal distribution.", 500, minimum=-1e12, maximum=1e12
        ),
        "sd": num("Number attribute: standard deviation.", 200, minimum=0, maximum=1e12),
        "min": num(
            "Number attribute: values below are raised to it.", 0, minimum=-1e12, maximum=1e12
        ),
        "max": num(
            "Number attribute: values above are lowered to it.", 5000, minimum=-1e12, maximum=1e12
        ),
        "p": num("Boolean attribute: probability of true.", 0.3, minimum=0, maximum=1),
    }
    return {
        "attributes": p(
            "How each declared member attribute (`members.attributes`) is drawn for a joiner,"
            " optionally per acquisition channel; an attribute left out stays unset.",
            [{"city": {"values": {"上海": 0.3}, "by_channel": {"kol": {"values": {"上海": 0.6}}}}}],
            type="object",
            propertyNames={"pattern": ID_PATTERN},
            maxProperties=200,
            additionalProperties=obj(
                {
                    **dist,
                    "by_channel": p(
                        "Per channel: the distribution of members who came by it.",
                        [{"kol": {"values": {"上海": 0.6}}}],
                        type="object",
                        propertyNames={"pattern": ID_PATTERN},
                        maxProperties=200,
                        additionalProperties=obj(dist),
                    ),
                }
            ),
        ),
        "admission": obj(
            {
                "applications_per_join": num(
                    "Share of the acquisition model's arrivals who file an application.",
                    0.9,
                    minimum=0,
                    maximum=1,
                ),
                "approve_rate": num(
                    "Share of reviewed applications staff approve.", 0.8, minimum=0, maximum=1
                ),
                "review_days": num(
                    "Days from application to decision (default: the playbook's review"
                    " `within`, rounded up to days).",
                    1,
                    minimum=0,
                    maximum=365,
                ),
            },
            description="Applications under the playbook's `admission:`.",
            examples=[{"approve_rate": 0.8}],
        ),
        "points": obj(
            {
                "redeem_per_day": num(
                    "Daily chance that a member who can afford an item redeems one.",
                    0.02,
                    minimum=0,
                    maximum=1,
                ),
            },
            description="How members spend points (`points.redeem`).",
            examples=[{"redeem_per_day": 0.02}],
        ),
    }


SCHEMAS = {
    "playbook.schema.json": playbook_schema,
    "fragment.schema.json": fragment_schema,
    "scenario.schema.json": scenario_schema,
}


def render(name: str) -> str:
    """The committed text of a schema file."""
    return json.dumps(SCHEMAS[name](), ensure_ascii=False, indent=2) + "\n"


def main() -> None:
    """Write every schema into `schemas/`."""
    out = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "schemas"
    )
    for name in SCHEMAS:
        (out / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
