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

# Per-member attributes readable in tier rules (`promote:`/`demote.when:`).
MEMBER_ATTRIBUTES: dict[str, str] = {
    "tenure_days": "days since the member joined",
    "weekly_interactions": "messages, replies and reactions in the last 7 days",
    "ugc_posts": "user-generated posts ever",
    "payments": "payments ever made",
    "invites": "members this member referred",
    "checkin_streak": "consecutive daily check-ins",
    "violations": "rule violations recorded",
    "silent_days": "days since the member last spoke",
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
