"""Chains of `after:`/`before:` actions, walked down from an anchor (the walk up is in lang).

Following an action up to its root is `lang.semantics.resolve_anchors` (validate needs it too);
this module walks the other way, from an anchor to every action chained behind it, as member
events and the simulator need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from ..lang.model import Action, Relative
from ..lang.semantics import Anchored, anchor_path, resolve_anchors

__all__ = ["Anchored", "ChainLink", "anchor_path", "chain_below", "children_of", "resolve_anchors"]


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One action chained behind an anchor: its offset from the chain's head and its anchor."""

    action: Action
    offset: timedelta
    anchor: str  # the action it is `after`/`before`: skipping that one skips this one


def children_of(actions: Mapping[str, Action]) -> dict[str, tuple[Action, ...]]:
    """The actions anchored directly on each action, in declaration order."""
    out: dict[str, list[Action]] = {}
    for a in actions.values():
        if isinstance(a.schedule, Relative):
            out.setdefault(a.schedule.anchor, []).append(a)
    return {k: tuple(v) for k, v in out.items()}


def chain_below(children: Mapping[str, Sequence[Action]], head: str) -> tuple[ChainLink, ...]:
    """Every action chained behind `head`, depth first in declaration order (anchors first).

    Iterative with a path guard: a long (or, unvalidated, cyclic) chain can neither exhaust the
    recursion limit nor loop.
    """
    out: list[ChainLink] = []
    path = [head]
    stack = [(iter(children.get(head, ())), timedelta(0))]
    while stack:
        it, base = stack[-1]
        a = next(it, None)
        if a is None:
            stack.pop()
            path.pop()
            continue
        if a.id in path:
            continue
        assert isinstance(a.schedule, Relative)
        off = base + a.schedule.offset
        out.append(ChainLink(a, off, path[-1]))
        path.append(a.id)
        stack.append((iter(children.get(a.id, ())), off))
    return tuple(out)
