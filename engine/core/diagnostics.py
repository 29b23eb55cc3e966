"""One Diagnostic type for every finding, and the catalogue of stable codes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Severity(enum.StrEnum):
    """How bad a finding is; errors fail validation, warnings only with --strict."""

    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Span:
    """A 1-based region of a source file."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def at_offset(self, start: int, end: int) -> Span:
        """The sub-span of a one-line value, `start`/`end` being 0-based offsets into it."""
        return Span(self.file, self.line, self.column + start, self.line, self.column + end)


@dataclass(frozen=True, slots=True)
class Rule:
    """A check code: stable forever once released."""

    code: str
    name: str
    severity: Severity
    summary: str
    hint: str

    def as_dict(self) -> dict[str, str]:
        """The JSON shape of `sop rules --format json`."""
        return {
            "code": self.code,
            "name": self.name,
            "severity": str(self.severity),
            "summary": self.summary,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A located finding: what is wrong, where, and how to fix it."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    code: str
    severity: Severity
    message: str
    hint: str = ""
    json_path: str = "$"

    def as_dict(self) -> dict[str, object]:
        """The JSON shape documented for `--format json`."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "code": self.code,
            "severity": str(self.severity),
            "message": self.message,
            "hint": self.hint,
            "json_path": self.json_path,
        }


_RULES: dict[str, Rule] = {}


def _rule(code: str, name: str, severity: Severity, summary: str, hint: str) -> None:
    _RULES[code] = Rule(code, name, severity, summary, hint)


E, W = Severity.ERROR, Severity.WARNING
# Input: the file cannot be read as a YAML mapping.
_rule(
    "SOP001", "yaml-syntax", E, "YAML syntax error", "Fix the YAML syntax at the marked position."
)
_rule("SOP002", "duplicate-key", E, "Duplicate mapping key", "Remove or rename one of the keys.")
_rule(
    "SOP003",
    "input-limit",
    E,
    "Input exceeds a safety limit",
    "Split the file or remove deep nesting and alias chains.",
)
_rule("SOP004", "encoding", E, "File is not UTF-8 text", "Save the file as UTF-8 text.")
_rule(
    "SOP005",
    "not-a-playbook",
    E,
    "Document is empty or not a mapping",
    "A playbook is a YAML mapping with at least `playbook:` and `stages:`.",
)
_rule("SOP006", "unreadable", E, "File cannot be read", "Check the path and permissions.")
_rule(
    "SOP007",
    "include",
    E,
    "Fragment include failed",
    "Check the fragment path, relative to the including file.",
)
_rule(
    "SOP008",
    "parameter",
    E,
    "Unknown or invalid parameter",
    "Declare the parameter under `params:` or pass it in `with:`.",
)
_rule(
    "SOP009",
    "yaml-tag",
    E,
    "Unsupported YAML tag",
    "Remove the tag; only standard tags are allowed.",
)
# Schema: the shape of the playbook.
_rule("SOP100", "unknown-key", E, "Unknown key", "Check the spelling against the schema.")
_rule("SOP101", "missing-key", E, "Required key missing", "Add the key.")
_rule("SOP102", "wrong-type", E, "Value has the wrong type", "Use the type the schema asks for.")
_rule(
    "SOP103", "invalid-value", E, "Value not allowed", "Use one of the allowed values or formats."
)
_rule(
    "SOP104",
    "one-schedule",
    E,
    "An action needs exactly one schedule",
    "Give exactly one of cron, day, after, before or on.",
)
# References and identities.
_rule("SOP201", "duplicate-id", E, "Duplicate id", "Ids of actions are unique across the playbook.")
_rule("SOP202", "unknown-stage", E, "Unknown stage", "Refer to a stage defined under `stages:`.")
_rule(
    "SOP203", "unknown-action", E, "Unknown action", "Refer to an action defined in the playbook."
)
_rule("SOP204", "unknown-role", E, "Unknown role", "Declare the role under `roles:`.")
_rule("SOP205", "unknown-tier", E, "Unknown tier", "Declare the tier under `tiers.levels:`.")
_rule("SOP206", "unknown-backend", E, "Unknown backend", "Declare the backend under `backends:`.")
_rule(
    "SOP207", "unknown-template", E, "Unknown template", "Define the template under `templates:`."
)
_rule("SOP208", "template-syntax", E, "Template syntax error", "Fix the Jinja2 syntax.")
_rule(
    "SOP209",
    "template-variable",
    E,
    "Undefined template variable",
    "Use member, community, playbook, stage, action, event, params or metrics.",
)
_rule("SOP210", "unused-template", W, "Template never used", "Remove it or refer to it.")
_rule(
    "SOP211",
    "secret-literal",
    E,
    "Secret written into the playbook",
    'Reference it from the environment: "${env:NAME}".',
)
# Graphs.
_rule(
    "SOP220", "stage-cycle", E, "Cycle in the stage graph", "Remove one `after` edge of the cycle."
)
_rule(
    "SOP221",
    "action-cycle",
    E,
    "Cycle in action dependencies",
    "Anchor one action of the cycle on a cron, a day or an event.",
)
_rule(
    "SOP222",
    "unreachable-stage",
    E,
    "Stage can never be reached",
    "Give it an `after`, make it a `goto` target, or remove it.",
)
# Time.
_rule(
    "SOP230",
    "invalid-cron",
    E,
    "Invalid cron expression",
    "Use five fields: minute hour day-of-month month day-of-week.",
)
_rule(
    "SOP231", "invalid-timezone", E, "Unknown time zone", "Use an IANA name such as Asia/Shanghai."
)
_rule(
    "SOP232",
    "cron-in-quiet-hours",
    W,
    "Cron fires only inside quiet hours",
    "Move the cron time or the quiet hours; every firing would be postponed.",
)
_rule(
    "SOP233",
    "outside-stage-window",
    W,
    "Action scheduled outside its stage's window",
    "Move it within the stage's duration or into another stage.",
)
_rule(
    "SOP234",
    "deadline-before-min",
    E,
    "Deadline shorter than the minimum duration",
    "Make the deadline at least the stage's `duration.min`.",
)
_rule(
    "SOP235",
    "min-over-max",
    E,
    "Minimum duration exceeds the maximum",
    "Make `duration.min` at most `duration.max`.",
)
# Expressions.
_rule(
    "SOP240",
    "expr-syntax",
    E,
    "Expression syntax error",
    "Use metric names, numbers, + - * /, comparisons, and, or, not.",
)
_rule(
    "SOP241",
    "expr-unknown-name",
    E,
    "Unknown name in expression",
    "Use a built-in metric or declare it under `metrics:`.",
)
_rule(
    "SOP242",
    "expr-type",
    E,
    "Type error in expression",
    "Compare numbers with numbers; combine conditions with and/or.",
)
_rule(
    "SOP243",
    "ratio-out-of-range",
    W,
    "Ratio compared with a value above 1",
    "Ratios are fractions: write 0.6 or 60%, not 60.",
)
# Bounds of the language (engine/core/expr.py limits, checks.durations, checks.action_chains).
_rule(
    "SOP250",
    "expr-too-complex",
    E,
    "Expression beyond the language's limits",
    "At most 2000 characters, 400 tokens, 32 nested parentheses/not/-, 64 levels of operators,"
    " numbers up to 1e15; define parts as metrics under `metrics:`.",
)
_rule(
    "SOP251",
    "duration-too-long",
    E,
    "Duration or offset longer than 10 years",
    "Durations, delays and chains of `after`/`before` span at most 3660d (10 years).",
)
_rule(
    "SOP252",
    "action-chain-too-deep",
    E,
    "Too many actions chained by `after`/`before`",
    "Anchor actions on one common action instead of each on the one before it (at most 32).",
)
_rule(
    "SOP253",
    "template-render",
    W,
    "Text cannot be rendered",
    "Keep templates within the sandbox's limits (docs/security.md) and the data they read.",
)
_rule(
    "SOP255",
    "template-escape",
    E,
    "Template reaches outside the sandbox",
    "Templates read the documented variables only; private attributes (`_x`, `__class__`),"
    " `attr(...)` on them and stored `.format` methods are refused (docs/security.md).",
)
_rule(
    "SOP254",
    "playbook-too-large",
    E,
    "Too many actions",
    "Split the community's SOP into several playbooks, or share routines through fragments.",
)
# Bounds of the plan-based checks (engine/plan/checks.py).
_rule(
    "SOP260",
    "plan-too-dense",
    W,
    "Too many scheduled occurrences for the plan-based checks",
    "A cron every few minutes is rarely meant: fire less often, or check a shorter `--days`.",
)
# Metrics and the simulator.
_rule(
    "SOP270",
    "builtin-metric-redeclared",
    E,
    "A custom metric takes the name of a built-in metric",
    "Built-in metrics need no entry under `metrics:`; give a custom metric another name.",
)
# One semantics: what plan, simulate and run would never do, said at validate time.
_rule(
    "SOP280",
    "anchor-in-another-stage",
    E,
    "Action is chained to an action of another stage and would never go out",
    "Chain it to an action of its own stage (or move it there), or give it its own cron or day.",
)
_rule(
    "SOP281",
    "stage-never-starts",
    W,
    "Stage comes after a stage that never hands over to it",
    "Give the earlier stage a gate without `exit.then.goto`, or a `duration.max`, or start this"
    " stage by a `goto`.",
)
_rule(
    "SOP282",
    "before-member-event",
    E,
    "Action goes out `before` a member event, which cannot be known in advance",
    "Use `after:` with a `delay:`; a member event is only known once it happens.",
)
# Nothing silently ignored: a value the playbook or scenario gives that nothing would read.
_rule(
    "SOP290",
    "with-unknown-parameter",
    E,
    "`with:` names a parameter the fragment does not have",
    "Use a name declared under the fragment's `params:`; otherwise its default silently wins.",
)
_rule(
    "SOP291",
    "member-data-without-member",
    E,
    "Text reads member or event data, but no member event triggers the action",
    "Trigger it with `on: member.<event>` (or `after:` such an action), or remove the member data.",
)
_rule(
    "SOP292",
    "event-option-ignored",
    E,
    "Event option given on an event it does not belong to",
    "`for` is for member.silent, `count` member.violation, `at` member.anniversary, `tier`"
    " member.tier_changed, `streak` member.checkin_streak, `counter`/`reaches`"
    " member.milestone, `item` member.redeemed or `do: redeem`.",
)
_rule(
    "SOP293",
    "scenario-unknown-stage",
    E,
    "Scenario names a stage the playbook does not have",
    "Use a stage id of the playbook (see `sop graph`), or leave `start_stage` out.",
)
_rule(
    "SOP294",
    "scenario-unknown-metric",
    E,
    "Scenario models a metric the playbook does not declare",
    "Model only custom metrics declared under the playbook's `metrics:`; check the spelling.",
)
_rule(
    "SOP295",
    "scenario-metric-defined",
    W,
    "Scenario models a metric the playbook computes from its definition",
    "The playbook's `definition:` wins; remove the model from the scenario.",
)
_rule(
    "SOP288",
    "scenario-unknown-member-name",
    E,
    "Scenario models a channel, attribute, admission or points the playbook does not declare",
    "Use the ids under the playbook's `channels:` and `members.attributes:`; model `admission`"
    " and `points` only for a playbook that declares them.",
)
_rule(
    "SOP289",
    "scenario-distribution-mismatch",
    E,
    "Scenario's attribute distribution does not fit the attribute's type or values",
    "Strings and enums take `values` (an enum's own values, probabilities adding up to at most"
    " 1), numbers `mean`/`sd`/`min`/`max`, booleans `p`.",
)
_rule(
    "SOP287",
    "scenario-parameter-mismatch",
    E,
    "Scenario parameter does not fit its model",
    "Give the retention model the keys it takes (`c`: bdw, bdw-mixture; `early_quit_share`:"
    " sbg-mixture, bdw-mixture), draws rows with its parameters in order, and distributions"
    " with low <= high, min <= max and a mean between them.",
)
_rule(
    "SOP249",
    "scenario-unknown-action",
    E,
    "Scenario's `history_includes` names an action the playbook does not have",
    "List the ids of the playbook's actions that already ran in the calibrated history.",
)
# Plan-based checks (built on the compiled Program).
_rule(
    "SOP301",
    "staff-workload",
    W,
    "Staff workload above capacity",
    "Add headcount, raise `capacity`, or spread the tasks over more days.",
)
_rule(
    "SOP302",
    "rate-budget",
    W,
    "Backend rate budget exceeded",
    "Spread the sends or raise the backend's declared rate.",
)
_rule(
    "SOP303",
    "member-frequency",
    W,
    "Member would receive too many messages in a day",
    "Merge messages or raise `limits.member_messages_per_day`.",
)
_rule(
    "SOP304",
    "per-member-task-size-unknown",
    W,
    "Per-member task's group has no planned size, so its workload is unknown",
    "Give the tier or segment of `for_each` a `size:` (its expected members) so the workload"
    " check can count one task per member.",
)
_rule(
    "SOP305",
    "per-member-task-on-event",
    W,
    "Per-member tasks on a member event: one task per member of the group each time it fires",
    "Give the action a `cron:` (a periodic list, one task per member), or drop `for_each` and"
    " send the task about the event's member.",
)
# Issue 12: members, segments, channels, counted metrics, targets, exits, leaderboards, points,
# teams, admission (engine/lang/checks.py).
_rule(
    "SOP212",
    "unknown-attribute",
    E,
    "Unknown member attribute",
    "Use a built-in member attribute or declare it under `members.attributes`.",
)
_rule("SOP213", "unknown-segment", E, "Unknown segment", "Declare the segment under `segments:`.")
_rule(
    "SOP214",
    "unknown-channel",
    E,
    "Unknown acquisition channel",
    'Declare the channel under `channels:`; a member with none has source "organic".',
)
_rule(
    "SOP215",
    "unknown-value",
    E,
    "Value is not one of the attribute's values",
    "Use one of the enum's `values` (or a team of `teams.names`).",
)
_rule(
    "SOP216",
    "unknown-item",
    E,
    "Unknown redemption item",
    "Declare the item under `points.redeem`.",
)
_rule(
    "SOP217",
    "unknown-event-type",
    E,
    "Unknown member event type",
    "Use an event type members produce: joined, left, message, post, checkin, activity,"
    " violation, payment, invite, apply, approve, reject, update, redeem.",
)
_rule(
    "SOP218",
    "target-unknown-metric",
    E,
    "Target on a metric the playbook does not have",
    "Name a built-in metric or one declared under `metrics:`.",
)
_rule(
    "SOP219",
    "pii-to-group",
    W,
    "Personal data sent to a group",
    "Send it `to: member` (or to staff), or leave the `pii: true` attribute out of the text.",
)
_rule(
    "SOP236",
    "exit-hold-beyond-deadline",
    W,
    "Exit must hold longer than the stage can last",
    "Shorten `for:` or lengthen the stage's deadline or `duration.max`.",
)
_rule(
    "SOP237",
    "deadline-without-exits",
    E,
    "Stage `deadline:` on a stage with no exits",
    "A deadline is the policy for a late exit: add `exits:`, or bound the stage with"
    " `duration.max` alone.",
)
_rule(
    "SOP238",
    "goto-own-stage",
    W,
    "`goto` leads back to its own stage",
    "A stage that jumps to itself stays open for ever: go to another stage (a rescue stage).",
)
_rule(
    "SOP239",
    "escalation-out-of-order",
    W,
    "Incident step escalates sooner than an earlier step",
    "Step times count from the opening: give later escalations a longer `after`.",
)
_rule(
    "SOP244",
    "wrong-condition-vocabulary",
    E,
    "Member condition reads a metric, or community condition a member attribute",
    "Segments, `where:`, counts and `admission.approve` read member attributes; gates, exits,"
    " `if:` and `detect:` read metrics.",
)
_rule(
    "SOP271",
    "attribute-shadows-builtin",
    E,
    "A declared member attribute takes the name of a built-in attribute",
    "Built-in attributes need no declaration; give it another name.",
)
_rule(
    "SOP272",
    "metric-defined-twice",
    E,
    "Metric has both a `definition` and a `count`",
    "Keep one: an expression over metrics, or a count of members, joins or events.",
)
_rule(
    "SOP273",
    "target-twice",
    E,
    "Metric has a target in `targets:` and in `metrics.<id>.target`",
    "Keep one of them.",
)
_rule(
    "SOP274",
    "ratio-target-above-one",
    W,
    "Ratio target above 1",
    "Ratios are fractions: write 0.3 or 30%, not 30.",
)
_rule(
    "SOP275",
    "ratio-count-not-subset",
    W,
    "Ratio metric whose count is not a part of its `per`",
    "Count the same kind (members/members, ever/ever) so the ratio stays within 0..1, or use"
    " `unit: factor`.",
)
_rule(
    "SOP276",
    "channel-shares-over-total",
    E,
    "Channel shares add up to more than 100%",
    "Lower the `share` of some channels.",
)
_rule(
    "SOP277",
    "channels-opening-together",
    W,
    "More than 3 channels open in the same stage",
    "Open channels one or a few at a time (`opens:` a later stage): too many at once spreads the"
    " team thin.",
)
_rule(
    "SOP278",
    "two-referral-channels",
    E,
    "More than one channel is marked `referral: true`",
    "Joins by invitation land in one channel: mark only one.",
)
_rule(
    "SOP279",
    "teams-not-declared",
    E,
    "Teams are ranked but the playbook declares no `teams:`",
    "Declare `teams:` (names, assign, score) or drop `teams: true`.",
)
_rule(
    "SOP283",
    "attribute-not-numeric",
    E,
    "A number is needed, but the member attribute is not numeric",
    "Rank, count milestones and score teams by a numeric attribute (invites, points, checkins,"
    " or a declared number).",
)
_rule(
    "SOP284",
    "leaderboard-on-member-event",
    W,
    "Leaderboard on an action triggered by a member event",
    "Give a leaderboard action a cron (a periodic ranking), or send `to: member`.",
)
_rule(
    "SOP285",
    "unreachable-exit",
    E,
    "Exit comes after an exit that always holds",
    "Move the exit whose condition is `true` last, or give it a real condition.",
)
_rule(
    "SOP286",
    "exit-forms-mixed",
    E,
    "Both `exit:` and `exits:` (or two deadlines) on one stage",
    "Use `exits:` with the stage-level `deadline:`, or the single `exit:` with its own.",
)
_rule(
    "SOP296",
    "count-window-ignored",
    E,
    "`window` on a count of members or of everyone ever",
    "A window applies to `joins` and `events` only; remove it or count joins.",
)
_rule(
    "SOP297",
    "where-ignored",
    E,
    "`where:` on an action whose audience is staff",
    "`where:` filters members: use it on a member event or a message to members, or use"
    " `for_each:` for one task per member.",
)
_rule(
    "SOP298",
    "for-each-not-task",
    E,
    "`for_each:` on an action that is not a staff task",
    "`for_each:` makes one staff task per member: use it with `do: task`; send messages to a"
    " group with `to:`.",
)
_rule(
    "SOP299",
    "teams-option-ignored",
    E,
    "`teams` option that its `assign` does not read",
    "`names` are for round-robin and balanced, `by` for `assign: attribute`.",
)
del E, W


def rule(code: str) -> Rule:
    """The catalogue entry of a code."""
    return _RULES[code]


def all_rules() -> list[Rule]:
    """Every rule, ordered by code."""
    return [_RULES[c] for c in sorted(_RULES)]


@dataclass
class Collector:
    """Accumulates diagnostics while checks run."""

    items: list[Diagnostic] = field(default_factory=list)

    def add(
        self,
        code: str,
        span: Span | None,
        message: str,
        *,
        hint: str | None = None,
        json_path: str = "$",
        severity: Severity | None = None,
        file: str = "<unknown>",
    ) -> None:
        """Record one finding; severity and hint default to the rule's."""
        r = _RULES[code]
        if span is None:
            span = Span(file, 1, 1, 1, 1)
        self.items.append(
            Diagnostic(
                file=span.file,
                line=span.line,
                column=span.column,
                end_line=span.end_line,
                end_column=span.end_column,
                code=code,
                severity=severity or r.severity,
                message=message,
                hint=r.hint if hint is None else hint,
                json_path=json_path,
            )
        )


def sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    """Stable report order: file, position, code."""
    return (d.file, d.line, d.column, d.code)
