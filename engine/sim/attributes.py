"""The simulator's member attributes: channels, declared attributes drawn per channel, and the
member conditions (segments, `where:`, counted metrics, `admission.approve`) read over them.

Who matches a condition is `program/members.py`'s rule (`matches`, three-valued as gates). The
simulator only chooses the representation: text attributes (`source`, `tier`, `team`,
`referrer`, declared strings and enums) are integer codes into a vocabulary, and a condition
that compares such an attribute with string literals is read with the literals replaced by
their codes (a literal outside the vocabulary gets a code no member has), so a segment over
100,000 members costs an integer compare instead of a string compare. A condition that uses a
text attribute any other way reads the text itself (`members.labels`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import expr as ex
from ..core.catalog import ORGANIC
from ..lang.model import AttributeType, Expression, Playbook
from ..program import members as pm
from .scenario import Distribution, Scenario

NO_CODE = -1.0  # the code of a literal no member can have
REFERRED = "?"  # a referred member's `referrer` here: the simulator knows that, not by whom


@dataclass(frozen=True)
class Declared:
    """How a declared attribute is stored: `code` (text), `number` or `flag` (boolean)."""

    name: str
    kind: str
    vocab: tuple[str, ...] = ()  # codes of a text attribute (0 is its unset value)
    default: Any = None
    integer: bool = False  # a whole number: draws are rounded

    @property
    def column(self) -> str:
        """Its member array."""
        return "a:" + self.name

    @property
    def dtype(self) -> Any:
        """The array type: a text code, a float (NaN unset) or a boolean."""
        return {"code": np.int16, "number": np.float32, "flag": np.bool_}[self.kind]


class Condition:
    """A member condition prepared for the simulator's arrays (see the module docstring)."""

    def __init__(self, expression: Expression | None, vocabs: Mapping[str, tuple[str, ...]]):
        self.expression = expression
        node = expression.node if expression is not None else None
        self.names = {str(n.value) for n in ex.names(node)} if node is not None else set()
        encoded = _encode(node, vocabs) if node is not None else None
        self.coded = encoded is not None
        self.node = encoded if encoded is not None else node
        # the expression as members.matches reads it: the same text, literals as codes
        self.prepared = (
            dataclasses.replace(expression, node=encoded)
            if expression is not None and encoded is not None
            else expression
        )

    def mask(self, env: MemberEnv) -> Any:
        """Where it holds over the env's members (all of them without a condition); read
        once per env (the members as they stand at one step of a day)."""
        hit = env.masks.get(id(self))
        if hit is not None:
            return hit
        if self.node is None:
            hit = np.ones(env.shape, dtype=bool)
        else:
            view = env if self.coded else env.text()
            hit = np.asarray(pm.matches(self.prepared, view), dtype=bool)
        env.masks[id(self)] = hit
        return hit


def _encode(node: ex.Node, vocabs: Mapping[str, tuple[str, ...]]) -> ex.Node | None:
    """`node` with text literals compared to a coded attribute replaced by codes, or None
    when a coded attribute is used in a way codes cannot answer (the text is read then)."""

    def code(name: str, lit: ex.Node) -> ex.Node:
        vocab = vocabs[name]
        v = float(vocab.index(str(lit.value))) if lit.value in vocab else NO_CODE
        return ex.Node("num", lit.start, lit.end, value=v)

    def walk(n: ex.Node) -> ex.Node | None:
        if n.kind == "cmp" and n.op in ("==", "!=") and len(n.args) == 2:
            a, b = n.args
            if a.kind == "name" and a.value in vocabs and b.kind == "str":
                return ex.Node(n.kind, n.start, n.end, n.op, n.value, (a, code(str(a.value), b)))
            if b.kind == "name" and b.value in vocabs and a.kind == "str":
                return ex.Node(n.kind, n.start, n.end, n.op, n.value, (code(str(b.value), a), b))
        if n.kind == "in" and n.args[0].kind == "name" and n.args[0].value in vocabs:
            name = str(n.args[0].value)
            items = n.args[1]
            if all(x.kind == "str" for x in items.args):
                coded = tuple(code(name, x) for x in items.args)
                lst = ex.Node(items.kind, items.start, items.end, items.op, items.value, coded)
                return ex.Node(n.kind, n.start, n.end, n.op, n.value, (n.args[0], lst))
        if n.kind == "name":
            return None if n.value in vocabs else n
        args = []
        for a in n.args:
            w = walk(a)
            if w is None:
                return None
            args.append(w)
        return ex.Node(n.kind, n.start, n.end, n.op, n.value, tuple(args))

    return walk(node)


class MemberEnv(Mapping[str, Any]):
    """Every member attribute of the playbook over (runs, members) arrays, computed when read."""

    def __init__(
        self,
        columns: Mapping[str, Callable[[], Any]],
        vocabs: Mapping[str, tuple[str, ...]],
        shape: tuple[int, ...],
        text: bool = False,
    ) -> None:
        self._columns = columns
        self._vocabs = vocabs
        self.shape = shape
        self._text = text
        self._cache: dict[str, Any] = {}
        self.masks: dict[int, Any] = {}  # Condition -> where it holds (Condition.mask)

    def __getitem__(self, name: str) -> Any:
        hit = self._cache.get(name)
        if hit is None:
            hit = self._columns[name]()
            if self._text and name in self._vocabs:
                hit = pm.labels(hit, self._vocabs[name])
            self._cache[name] = hit
        return hit

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def text(self) -> MemberEnv:
        """The same members with text attributes as text (a condition codes cannot answer)."""
        return MemberEnv(self._columns, self._vocabs, self.shape, text=True)


class MemberModel:
    """A playbook's member vocabulary for the kernel: channels, tiers, teams, declared
    attributes with their codes, and each declared attribute's distribution per channel."""

    def __init__(self, pb: Playbook, sc: Scenario) -> None:
        self.pb = pb
        self.sc = sc
        self.channels: tuple[str, ...] = (ORGANIC, *(c for c in pb.channels if c != ORGANIC))
        code = {c: i for i, c in enumerate(self.channels)}
        default = sc.acquisition.default_channel
        self.default_channel = code.get(default, 0) if default else 0
        referral = next((c.id for c in pb.channels.values() if c.referral), None)
        self.referral_channel = code[referral] if referral else self.default_channel
        self.channel_code = code
        tiers = tuple(t.id for t in pb.tiers.levels) if pb.tiers else ("",)
        teams = tuple(pb.teams.names) if pb.teams else ()
        self.vocabs: dict[str, tuple[str, ...]] = {
            "source": self.channels,
            "referrer": ("", REFERRED),
            "tier": tiers,
            "team": ("", *teams),
        }
        self.declared: dict[str, Declared] = {}
        for a in pb.attributes.values():
            d = _declared(a, sc)
            self.declared[a.id] = d
            if d.kind == "code":
                self.vocabs[a.id] = d.vocab
        self._conditions: dict[int, Condition] = {}

    def condition(self, expression: Expression | None) -> Condition:
        """The prepared form of a member condition (cached per expression)."""
        key = id(expression)
        hit = self._conditions.get(key)
        if hit is None or hit.expression is not expression:
            hit = self._conditions[key] = Condition(expression, self.vocabs)
        return hit

    def columns(self) -> dict[str, Any]:
        """The member arrays the declared attributes need (name -> dtype)."""
        return {d.column: d.dtype for d in self.declared.values()}

    def unmodelled(self) -> list[str]:
        """Declared attributes a member condition reads (a segment, a `where:`, a count,
        `admission.approve`) that the scenario gives no distribution: every member has them
        unset."""
        pb = self.pb
        conds: list[Expression | None] = [s.when for s in pb.segments.values()]
        conds += [a.where for a in pb.actions.values()]
        conds += [c.where for m in pb.metrics.values() for c in (m.count, m.per) if c]
        conds += [pb.admission.approve] if pb.admission is not None else []
        read = {str(n.value) for c in conds if c and c.node for n in ex.names(c.node)}
        return [a for a in pb.attributes if a not in self.sc.attributes and a in read]

    def draw(self, source: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Declared attribute values of joiners who came by channels `source` (codes)."""
        out: dict[str, np.ndarray] = {}
        for name, d in self.declared.items():
            model = self.sc.attributes.get(name)
            values = np.full(len(source), _stored_default(d), dtype=d.dtype)
            if model is not None and len(source):
                groups: list[tuple[np.ndarray | None, Distribution]] = [(None, model.base)]
                for c, dist in model.by_channel.items():
                    if c in self.channel_code:
                        groups.append((source == self.channel_code[c], dist))
                rest = np.ones(len(source), dtype=bool)
                for mask, dist in reversed(groups):  # a channel's own first, the base last
                    sel = rest if mask is None else (mask & rest)
                    n = int(sel.sum())
                    if n:
                        values[sel] = _sample(d, dist, n, rng)
                    rest &= ~sel
            out[d.column] = values
        return out


def _declared(a: Any, sc: Scenario) -> Declared:
    default = pm.declared_default(a)
    if a.type in (AttributeType.NUMBER, AttributeType.INTEGER):
        return Declared(a.id, "number", default=default, integer=a.type == AttributeType.INTEGER)
    if a.type == AttributeType.BOOLEAN:
        return Declared(a.id, "flag", default=bool(default))
    vocab: list[str] = [""]
    model = sc.attributes.get(a.id)
    seen = [*a.values]
    if model is not None:
        seen += [*model.base.values, *(v for dd in model.by_channel.values() for v in dd.values)]
    if isinstance(default, str):
        seen.append(default)
    for v in seen:
        if v not in vocab:
            vocab.append(v)
    return Declared(a.id, "code", tuple(vocab), default)


def _stored_default(d: Declared) -> Any:
    if d.kind == "code":
        return d.vocab.index(d.default) if d.default in d.vocab else 0
    if d.kind == "number":
        return np.nan if d.default is None else d.default
    return bool(d.default)


def _sample(d: Declared, dist: Distribution, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` draws of a declared attribute from `dist` (the unset value where it gives none)."""
    if d.kind == "code":
        if not dist.values:
            return np.full(n, _stored_default(d), dtype=d.dtype)
        codes = np.array([d.vocab.index(v) for v in dist.values], dtype=d.dtype)
        cum = np.cumsum([float(p) for p in dist.values.values()])
        pick = np.searchsorted(cum, rng.random(n), side="right")
        # past the last probability: unset (the remainder of a distribution adding up below 1)
        return np.where(pick < len(codes), codes[np.minimum(pick, len(codes) - 1)], 0).astype(
            d.dtype
        )
    if d.kind == "number":
        if dist.mean is None:
            return np.full(n, _stored_default(d), dtype=d.dtype)
        x = rng.normal(dist.mean, dist.sd, n) if dist.sd > 0 else np.full(n, dist.mean)
        lo = -np.inf if dist.low is None else dist.low
        hi = np.inf if dist.high is None else dist.high
        x = np.clip(x, lo, hi)
        return (np.round(x) if d.integer else x).astype(d.dtype)
    if dist.p is None:
        return np.full(n, _stored_default(d), dtype=d.dtype)
    return rng.random(n) < dist.p
