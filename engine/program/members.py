"""Member attributes and member conditions: the vocabulary, each attribute's value when unset,
and who matches a segment, a `where:`, a counted metric's condition or `admission.approve`.

An *env* maps every attribute name of the playbook to a value: one member's scalars (the
runtime: `member_values`) or arrays over members, with any leading axes (the simulator's runs by
members: `member_arrays`). `matches` reads a condition on either with the same three-valued
logic as gates (engine/program/truth.py): an unset number is undefined (NaN), so a condition on
it does not hold; an unset text is "" and an unset boolean is false. The vocabulary itself is
the playbook's (`Playbook.attribute_units`: the built-ins of `catalog.MEMBER_ATTRIBUTE_UNITS`
and the declared `members.attributes`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..core.catalog import MEMBER_ATTRIBUTE_UNITS, ORGANIC
from ..lang.model import Attribute, AttributeType, Audience, Expression, Playbook
from .truth import holds

# Built-in attributes whose unset value is not 0: text and booleans (counts start at 0).
_BUILTIN_DEFAULTS: dict[str, Any] = {
    "source": ORGANIC,
    "referrer": "",
    "team": "",
    "tier": "",  # a playbook with tiers: its lowest tier (`defaults`)
    "approved": False,
}


def attribute_units(pb: Playbook) -> dict[str, str]:
    """Every attribute a member condition may read, with its unit (`count`, `string`, `boolean`)."""
    return pb.attribute_units()


def declared_default(a: Attribute) -> Any:
    """A declared attribute's value for a member it was never set for."""
    if a.default is not None:
        return coerce(a, a.default)
    if a.type in (AttributeType.NUMBER, AttributeType.INTEGER):
        return math.nan  # undefined, never 0: a condition on it does not hold
    if a.type == AttributeType.BOOLEAN:
        return False
    return ""


def defaults(pb: Playbook) -> dict[str, Any]:
    """Every attribute's value for a member it was never set for (counts 0, text "", ...)."""
    out: dict[str, Any] = {
        n: _BUILTIN_DEFAULTS.get(n, "" if u == "string" else 0.0)
        for n, u in MEMBER_ATTRIBUTE_UNITS.items()
    }
    if pb.tiers is not None and pb.tiers.levels:
        out["tier"] = pb.tiers.levels[0].id
    for a in pb.attributes.values():
        if a.id not in MEMBER_ATTRIBUTE_UNITS:
            out[a.id] = declared_default(a)
    return out


def coerce(a: Attribute, raw: Any) -> Any:
    """A declared attribute's value from an event or an import; ValueError says what is wrong."""
    # The rule lives with the model so `validate` checks a declared `default` with it too.
    return a.coerce(raw)


def member_values(pb: Playbook, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """One member's env: every attribute, `attrs` over the defaults (unknown names dropped)."""
    env = defaults(pb)
    for k, v in attrs.items():
        if k not in env:
            continue
        declared = pb.attributes.get(k)
        if declared is not None and k not in MEMBER_ATTRIBUTE_UNITS:
            env[k] = declared_default(declared) if v is None else coerce(declared, v)
        elif isinstance(env[k], str):
            env[k] = "" if v is None else str(v)
        elif isinstance(env[k], bool):
            env[k] = bool(v)
        else:
            env[k] = math.nan if v is None else float(v)
    return env


def member_arrays(
    pb: Playbook, columns: Mapping[str, Any], shape: tuple[int, ...]
) -> dict[str, Any]:
    """An env over many members: `columns` (arrays of `shape`), the rest filled with defaults.

    Text fills as an object array (so it compares with string literals), numbers as floats.
    """
    import numpy as np

    env: dict[str, Any] = {}
    for name, default in defaults(pb).items():
        col = columns.get(name)
        if col is not None:
            env[name] = np.asarray(col)
        elif isinstance(default, str):
            env[name] = np.full(shape, default, dtype=object)
        elif isinstance(default, bool):
            env[name] = np.full(shape, default, dtype=bool)
        else:
            env[name] = np.full(shape, default, dtype=float)
    return env


def labels(codes: Any, names: Any) -> Any:
    """Text values from integer codes (the simulator's channels, teams, tiers): names[codes]."""
    import numpy as np

    return np.asarray(list(names), dtype=object)[np.asarray(codes, dtype=np.intp)]


def matches(condition: Expression | None, env: Mapping[str, Any]) -> Any:
    """Whether a member condition holds: a bool for one member, a mask for arrays (None: all)."""
    if condition is None or condition.node is None:
        return _everyone(env)
    hit = holds(condition.node, env)
    shape = _members_shape(env)
    if shape is None:
        return bool(hit)
    import numpy as np

    if isinstance(hit, np.ndarray) and hit.shape == shape and hit.dtype == np.bool_:
        return hit  # a mask truth() made for this call: nobody else holds it
    return np.broadcast_to(hit, shape).copy()  # `true and ...` stays a mask


def _members_shape(env: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The members' shape of an env over arrays (None: one member's scalars)."""
    shape = getattr(env, "shape", None)  # an env that knows it (the simulator's)
    if isinstance(shape, tuple):
        return shape or None
    for v in env.values():
        shape = getattr(v, "shape", ())
        if shape:
            return tuple(shape)
    return None


def _everyone(env: Mapping[str, Any]) -> Any:
    shape = _members_shape(env)
    if shape is None:
        return True
    import numpy as np

    return np.ones(shape, dtype=bool)


def segment_mask(pb: Playbook, segment: str, env: Mapping[str, Any]) -> Any:
    """Whether members are in segment `segment` (its `when` over their attributes)."""
    return matches(pb.segments[segment].when, env)


def audience_mask(pb: Playbook, audience: str, env: Mapping[str, Any]) -> Any:
    """Whether members belong to a group audience: `everyone`, `tier:<id>`, `segment:<id>`.

    `tier:<id>` reads the `tier` attribute (the member's tier id).
    """
    tier = Audience.tier_of(audience)
    if tier is not None:
        import numpy as np

        t = env["tier"]
        return (np.asarray(t) == tier) if np.ndim(t) else t == tier
    seg = Audience.segment_of(audience)
    if seg is not None:
        return segment_mask(pb, seg, env)
    return _everyone(env)
