"""What a backend receives for one occurrence: the action's text rendered for its member.

One home for the rendering context at run time (the runner and `sop send-test` both compose
deliveries here), on top of `lang.templates` (the sandbox plan and validate render with).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..lang.model import Action, Playbook
from ..lang.templates import action_context, action_text, render
from .ports import Delivery


def member_context(member_id: str | None, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The `member` a template reads: its id, its name (else the id) and its attributes."""
    if member_id is None:
        return {}
    return {"member": {"id": member_id, "name": attributes.get("name", member_id), **attributes}}


def compose(
    pb: Playbook,
    a: Action,
    *,
    key: str,
    run: str,
    stage: str | None,
    kind: str,
    audience: str,
    member: str | None,
    owner: str | None,
    scheduled_at: datetime,
    due_at: datetime,
    attempt: int,
    attributes: Mapping[str, Any],
) -> Delivery:
    """The delivery of action `a` (RenderError when its text cannot be rendered)."""
    text = action_text(pb, a) or a.title
    body = render(text, action_context(pb, a, **member_context(member, attributes)))
    return Delivery(
        key=key, run=run, playbook=pb.id, action=a.id, stage=stage, kind=kind,
        audience=audience, member=member, owner=owner, scheduled_at=scheduled_at,
        due_at=due_at, title=a.title, text=body, attempt=attempt,
        attributes=dict(attributes) if member else {},
    )  # fmt: skip
