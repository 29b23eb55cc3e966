"""The built-in vocabulary of the language: metrics, member attributes, action kinds, events."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MetricUnit(StrEnum):
    """What a metric's number counts; `ratio` lies in 0..1 (SOP243 flags a threshold above 1)."""

    COUNT = "count"
    RATIO = "ratio"
    FACTOR = "factor"  # a multiple, 0 or more (a ratio that may exceed 1)
    DAYS = "days"
    CURRENCY = "currency"
    SCORE = "score"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """A built-in community metric a gate may read: its name, unit and one-line summary.

    The full definition (how it is measured, its range, when it is undefined) is in
    engine/program/metrics.py; this is the vocabulary the language checks against.
    """

    name: str
    unit: MetricUnit
    description: str


_C, _R, _F, _D = MetricUnit.COUNT, MetricUnit.RATIO, MetricUnit.FACTOR, MetricUnit.DAYS
BUILTIN_METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("members", _C, "current members across all groups"),
        MetricInfo("new_members", _C, "members who joined today"),
        MetricInfo("daily_speakers", _C, "members who spoke today"),
        MetricInfo("daily_speak_rate", _R, "daily speakers / members"),
        MetricInfo(
            "weekly_participation",
            _R,
            "members who took part in an activity in the last 7 days / members",
        ),
        *(
            MetricInfo(
                f"retention_d{k}",
                _R,
                f"share of the members who joined that were still members {k} day{'s' * (k > 1)}"
                " after joining (7-day cohorts)",
            )
            for k in (1, 7, 30, 90)
        ),
        MetricInfo("core_members", _C, "members in a tier above the lowest"),
        MetricInfo("vip_members", _C, "members in the highest tier"),
        MetricInfo("paying_members", _C, "members with at least one payment"),
        MetricInfo("conversion_rate", _R, "members who ever paid / members ever joined"),
        MetricInfo("fission_rate", _R, "joins by referral / all joins"),
        MetricInfo("fission_multiplier", _F, "joins by referral per join that was not (K-factor)"),
        MetricInfo(
            "churn_rate",
            _R,
            "members who left in the last 7 days / (members + those who left)",
        ),
        MetricInfo("ugc_posts", _C, "user-generated posts in the last 7 days"),
        MetricInfo("groups", _C, "chat groups in use (a full group opens a new one)"),
        MetricInfo("days_in_stage", _D, "days since the current stage started"),
        MetricInfo("community_age", _D, "days since the playbook started"),
    ]
}


def channel_metrics(channel: str) -> list[MetricInfo]:
    """The metrics each declared acquisition channel adds (`<id>_joins`, `<id>_share`)."""
    return [
        MetricInfo(f"{channel}_joins", _C, f"joins via channel `{channel}` in the last 7 days"),
        MetricInfo(
            f"{channel}_share",
            _R,
            f"joins via channel `{channel}` since the start / all joins (undefined before any)",
        ),
    ]


# Metrics that exist only when the playbook declares the construct (`points:`, `teams:`,
# `admission:`); `Playbook.builtin_metrics()` is the one vocabulary of a playbook.
POINTS_METRICS = [
    MetricInfo("points_issued", _C, "points earned since the start"),
    MetricInfo("points_redeemed", _C, "points spent on redemptions since the start"),
    MetricInfo("points_outstanding", _C, "the sum of every member's points balance"),
]
TEAM_METRICS = [
    MetricInfo("team_score_top", _C, "the highest team score"),
    MetricInfo("team_score_bottom", _C, "the lowest team score"),
    MetricInfo(
        "team_score_spread", _R, "(highest - lowest team score) / highest (undefined when 0)"
    ),
]
ADMISSION_METRICS = [
    MetricInfo("applications", _C, "applications in the last 7 days"),
    MetricInfo("approval_rate", _R, "approved / decided applications in the last 30 days"),
]


# Built-in per-member attributes, readable in member conditions (tier rules, segments,
# `where:`, counted metrics, `admission.approve`); `members.attributes` declares more.
MEMBER_ATTRIBUTES: dict[str, str] = {
    "tenure_days": "days since the member joined",
    "weekly_interactions": "messages, replies and reactions in the last 7 days",
    "ugc_posts": "user-generated posts ever",
    "payments": "payments ever made",
    "invites": "members this member referred",
    "checkin_streak": "consecutive daily check-ins",
    "violations": "rule violations recorded",
    "silent_days": "days since the member last spoke",
    "source": "the acquisition channel the member came by (a channel id; organic when none)",
    "referrer": "the id of the member who invited this member (empty when none)",
    "points": "the member's points balance (`points:`)",
    "checkins": "check-ins ever",
    "messages": "messages ever",
    "team": "the member's team (`teams:`; empty when none)",
    "tier": "the member's tier id",
    "approved": "whether the member's application was approved (`admission:`)",
}
# The unit of each built-in member attribute in a member condition: numbers are counts
# (tenure and silence are day counts), `string` compares with string literals only, `boolean`
# is a condition of its own.
MEMBER_ATTRIBUTE_UNITS: dict[str, str] = {
    **{name: "count" for name in MEMBER_ATTRIBUTES},
    "source": "string",
    "referrer": "string",
    "team": "string",
    "tier": "string",
    "approved": "boolean",
}
# The `source` of a member who came by no declared channel.
ORGANIC = "organic"

# What members do, as events reported by the platform (`sop event`, imports) or drawn by the
# simulator: what `points.earn` and a counted metric's `events:` may name.
EVENT_TYPES: dict[str, str] = {
    "joined": "joined the community",
    "left": "left the community",
    "message": "spoke in the group",
    "post": "wrote a user-generated post",
    "checkin": "checked in",
    "activity": "took part in an activity (a live, a poll, a contest)",
    "violation": "broke a rule",
    "payment": "paid",
    "invite": "invited someone",
    "apply": "applied to join (`admission:`), with the required attributes",
    "approve": "staff approved an application",
    "reject": "staff rejected an application",
    "update": "declared attributes changed",
    "redeem": "spent points on an item of `points.redeem`",
}

ACTION_KINDS: dict[str, str] = {
    "post": "a message to the whole group",
    "message": "a private message to one member",
    "poll": "a poll or quiz in the group",
    "checkin": "a daily check-in prompt",
    "live": "a live session",
    "reward": "a reward or gift",
    "task": "a task for a staff member (a reminder, not a post)",
    "survey": "a questionnaire",
    "contest": "a contest or challenge",
    "meetup": "an offline meetup",
    "digest": "a digest or summary",
    "announce": "an announcement",
    "tag": "tag members (CRM)",
    "remove": "remove a member",
    "mute": "mute the group",
    "redeem": "hand an item of `points.redeem` to the member (its stock decreases)",
}
# Kinds that put a message in front of members (counted for frequency caps and rate budgets).
MESSAGE_KINDS = frozenset(
    {
        "post",
        "message",
        "poll",
        "checkin",
        "live",
        "reward",
        "survey",
        "contest",
        "meetup",
        "digest",
        "announce",
    }
)

MEMBER_EVENTS: dict[str, str] = {
    "member.joined": "a member joined",
    "member.silent": "a member has been silent `for` a duration",
    "member.violation": "a member's `count`-th rule violation",
    "member.anniversary": "a member's membership anniversary (`at` durations)",
    "member.tier_changed": "a member was promoted or demoted (optionally to `tier`)",
    "member.checkin_streak": "a member reached a check-in streak of `streak` days",
    "member.invited": "a member's invitee joined",
    "member.left": "a member left",
    "member.milestone": "a member's `counter` attribute first reached `reaches`",
    "member.redeemed": "a member redeemed points for an item (optionally `item`)",
    "member.applied": "someone applied to join (`admission:`)",
    "member.approved": "an application was approved",
    "member.rejected": "an application was rejected",
}

PLATFORMS = [
    "wechat-group",
    "wecom-group",
    "wecom",
    "qq-group",
    "knowledge-planet",
    "mini-program",
    "feishu",
    "dingtalk",
    "slack",
    "discord",
    "telegram",
    "other",
]
COMMUNITY_TYPES = ["user-value", "brand", "conversion", "interest", "other"]
BACKEND_TYPES = [
    "console",
    "jsonl",
    "webhook",
    "wecom-robot",
    "feishu-bot",
    "dingtalk-bot",
    "slack-webhook",
    "discord-webhook",
    "telegram-bot",
    "wecom-app",
    "email",
    "sms",
    "tasks",
]
# Messages a minute the platform accepts, when the backend does not declare `rate`.
DEFAULT_RATES = {
    "wecom-robot": 20,
    "feishu-bot": 100,
    "dingtalk-bot": 20,
    "slack-webhook": 60,
    "discord-webhook": 30,
    "telegram-bot": 20,
    "wecom-app": 20,
    "email": 30,
    "sms": 30,
}
AUDIENCES_FIXED = ["everyone", "member", "staff", "referrer"]

# Names a template may read; attributes of `member` are checked too.
TEMPLATE_GLOBALS = frozenset(
    {
        "member",
        "community",
        "playbook",
        "stage",
        "action",
        "event",
        "params",
        "metrics",
        "now",
        "reward",
    }
)
TEMPLATE_MEMBER_ATTRS = frozenset(
    {"id", "name", "tier", "joined_at", "invited_by", *MEMBER_ATTRIBUTES}
)
