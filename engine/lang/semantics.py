"""The static rules every reader of a playbook shares: validate, plan, simulate and run.

Each rule has exactly one home here, below the Program, because validate's checks (this layer)
and the interpreters (the layers above) must read it the same way:

- which actions are member messages, and so which obey quiet hours (`quiet_window`);
- where an `after:`/`before:` chain leads: its root, offset and length (`resolve_anchors`);
- where a playbook starts (`starting_stages`) and which stages can hand over to the stages
  after them (`hands_over`), hence which stages can ever run (`reachable_stages`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from ..core import expr as ex
from ..core.catalog import MESSAGE_KINDS
from ..core.timeutil import Window
from .model import Action, Exit, OnEvent, Playbook, Relative, Stage

# -- member messages ---------------------------------------------------------------------------


def is_member_message(a: Action) -> bool:
    """Whether `a` puts a message in front of members (a post, a poll, …; not a task or a mute)."""
    return a.kind in MESSAGE_KINDS


def quiet_window(a: Action) -> Window | None:
    """The quiet hours `a` obeys: its own or the default ones, for member messages only."""
    return a.quiet_hours if is_member_message(a) else None


# -- anchors -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Anchored:
    """Where an action's `after:`/`before:` chain leads: its root and the offset from it.

    `complete` is False when the chain runs into a cycle or an unknown anchor (validate reports
    both); `root` is then the last action reached and nothing of the chain is ever due.
    """

    root: Action
    offset: timedelta  # from the root's instant to this action's
    depth: int  # links from this action to its root (0: the action is its own root)
    complete: bool = True

    @property
    def event(self) -> OnEvent | None:
        """The member event the chain hangs off, if its root is triggered by one."""
        s = self.root.schedule
        return s if self.complete and isinstance(s, OnEvent) else None


def resolve_anchors(actions: Mapping[str, Action]) -> dict[str, Anchored]:
    """Every action's root and offset, each chain walked once (long chains stay linear).

    Iterative with a path guard: neither a chain longer than the recursion limit nor a cycle
    (which validate reports as SOP221) can exhaust the stack or loop.
    """
    memo: dict[str, Anchored] = {}
    for start in actions.values():
        path: list[Action] = []
        on_path: set[str] = set()
        cur = start
        while True:
            if cur.id in memo:
                below = memo[cur.id]
                break
            s = cur.schedule
            if not isinstance(s, Relative):
                below = memo[cur.id] = Anchored(cur, timedelta(0), 0)
                break
            if cur.id in on_path or s.anchor not in actions:
                # a cycle or a dangling anchor: measured as if the chain ended here
                below = Anchored(cur, timedelta(0), 0, complete=False)
                if cur.id not in on_path:
                    memo[cur.id] = below
                break
            on_path.add(cur.id)
            path.append(cur)
            cur = actions[s.anchor]
        for node in reversed(path):
            assert isinstance(node.schedule, Relative)
            below = Anchored(
                below.root, below.offset + node.schedule.offset, below.depth + 1, below.complete
            )
            memo[node.id] = below
    return memo


def anchor_path(actions: Mapping[str, Action], a: Action) -> list[Action]:
    """`a`, its anchor, that one's anchor, … up to the root (stopping at a cycle or a gap)."""
    out: list[Action] = []
    seen: set[str] = set()
    x: Action | None = a
    while x is not None and x.id not in seen:
        seen.add(x.id)
        out.append(x)
        x = actions.get(x.schedule.anchor) if isinstance(x.schedule, Relative) else None
    return out


def guard_chain(actions: Mapping[str, Action], a: Action) -> tuple[Action, ...]:
    """The actions whose `if:` must hold for `a` to fire: `a` and the anchors it is chained
    after (a chained action does not fire when its anchor did not) — simulate and run alike."""
    path = anchor_path(actions, a)
    return tuple(x for x in path if x.guard is not None and x.guard.node is not None)


# -- stages ------------------------------------------------------------------------------------


def starting_stages(pb: Playbook, include_optional: Iterable[str] = ()) -> list[str]:
    """Stages entered when the playbook starts: no `after`, not rescue, optional only if asked.

    An optional stage with no `after` starts with the playbook when it is included
    (`--include-optional`), and never otherwise.
    """
    wanted = set(include_optional)
    return [
        s.id
        for s in pb.stages.values()
        if not s.after and not s.rescue and (not s.optional or s.id in wanted)
    ]


def deadline_of(stage: Stage) -> timedelta | None:
    """When the gate is late: the deadline, else the maximum duration."""
    if stage.deadline:
        return stage.deadline.after
    return stage.max_duration


def exits_of(stage: Stage) -> tuple[Exit, ...]:
    """A stage's exits in order (a model built without `exits` but with a gate: one, `pass`)."""
    if stage.exits:
        return stage.exits
    if stage.gate is None:
        return ()
    return (Exit("pass", stage.gate, None, stage.goto),)


def hold_days(hold: timedelta | None) -> int:
    """The days an exit's `for:` asks its condition to hold on (1 without one: today's check)."""
    if hold is None:
        return 1
    return max(1, math.ceil(hold.total_seconds() / 86400))


def stage_open_bound(stage: Stage) -> timedelta | None:
    """The longest a stage can stay open (None: no bound), as the lifecycle runs it.

    Without a stage `deadline:` (or without exits) it is timeboxed at its deadline or maximum;
    a deadline whose policy ends in `goto` or `abort` ends it after any `extend`; a policy that
    only extends or alerts lets it run on until an exit fires.
    """
    dl = stage.deadline
    if dl is None or not exits_of(stage):
        return deadline_of(stage)
    if dl.goto or dl.abort:
        return dl.after + (dl.extend or timedelta(0))
    return None


def earliest_exit_day(exit: Exit, days_before: int = 0) -> int:
    """The first stage day (1 = the stage's first closed day) an exit can fire on.

    A `for:` hold counts only the stage's own days (program/history.py `daily_truth`), but a
    window function (`avg(x, 14d)`) reads the community's history, which began `days_before`
    closed days before the stage did: the condition is defined once the longest window has its
    days, and then must hold `for:` days in a row.
    """
    node = exit.when.node if exit.when is not None else None
    window = max((d for _, _, d in ex.windows(node)), default=1) if node is not None else 1
    return max(1, window - days_before) + hold_days(exit.hold) - 1


def exit_targets(stage: Stage) -> list[str | None]:
    """Where each exit of a stage leads, in order (None: the stages `after` it)."""
    return [e.goto for e in exits_of(stage)]


def hands_over(stage: Stage) -> bool:
    """Whether a stage can end in a way that starts the stages `after` it.

    It does when one of its exits has no `goto` (a plain pass), or when it is timeboxed: it
    has a maximum duration and no exit, or exits but no deadline policy.
    """
    targets = exit_targets(stage)
    if any(t is None for t in targets):
        return True
    return deadline_of(stage) is not None and (not targets or stage.deadline is None)


def reachable_stages(pb: Playbook) -> set[str]:
    """Stages that can ever run: from the start (optional ones included), by `after` and `goto`.

    A stage comes after the stages it names only once all of them have handed over, exactly
    as `Lifecycle` starts it.
    """
    stages = pb.stages
    seen = set(starting_stages(pb, stages))
    todo = list(seen)
    while todo:
        sid = todo.pop()
        s = stages[sid]
        gotos = [*exit_targets(s), s.deadline.goto if s.deadline else None]
        nxt = [t for t in gotos if t and t in stages]
        if hands_over(s):
            nxt += [
                t.id
                for t in stages.values()
                if sid in t.after
                and not t.rescue
                and all(p in seen and hands_over(stages[p]) for p in t.after if p in stages)
            ]
        for t in nxt:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def blocked_by(pb: Playbook, stage: Stage, reachable: set[str]) -> str | None:
    """A stage `stage` comes after that runs but never hands over (why it never starts), or None."""
    for p in stage.after:
        if p in reachable and p in pb.stages and not hands_over(pb.stages[p]):
            return p
    return None


def why_no_hand_over(stage: Stage) -> str:
    """In words, why a stage never starts the stages after it."""
    targets = exit_targets(stage)
    if len(targets) > 1:
        return "each of its exits goes to another stage (`goto`)"
    if targets:
        return f"when its gate passes it always goes to `{targets[0]}` (`exit.then.goto`)"
    if stage.gate is None:
        return "it has no gate and no maximum duration, so it runs until the playbook ends"
    return "its deadline policy never lets it end without a `goto` or an abort"
