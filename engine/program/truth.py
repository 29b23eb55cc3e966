"""Whether a condition holds, read three-valued, over scalars or NumPy arrays alike.

The one reading of a condition that gates, exits, `if:` guards, incident `detect:`, segments,
`where:` and counted metrics share: a comparison with an undefined side (NaN) is unknown, and
`and`, `or` and `not` follow Kleene's logic, so `members >= 10 or retention_d30 >= 0.6` holds on
a day of 12 members while `not (retention_d30 < 0.6)` does not hold before day 29. A condition
holds only where it is known to be true. The runtime passes one community's (or one member's)
scalars, the simulator arrays of runs (or members): the same function answers both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..core import expr as ex

Truth = tuple[Any, Any]  # (known true, known false): bools, or bool arrays of one shape


def _is_array(x: object) -> bool:
    return hasattr(x, "shape") and getattr(x, "ndim", 0) > 0


def defined(x: Any) -> Any:
    """Where a value is defined (not NaN); text, integers and booleans always are (a plain True
    then, even for an array: `and` with it costs nothing)."""
    if _is_array(x) or hasattr(x, "dtype"):
        import numpy as np

        arr = np.asarray(x)
        if arr.dtype.kind in "fc":
            return ~np.isnan(arr) if arr.ndim else not bool(np.isnan(arr))
        return True
    return not (isinstance(x, float) and math.isnan(x))


def _and(a: Any, b: Any) -> Any:
    # plain bools (one community, one member) answer at once; True and an array is the array
    # (every array here is made by this module's operations, so none is shared with the env)
    if a.__class__ is bool:
        return (a and b) if b.__class__ is bool else (b if a else False)
    if b.__class__ is bool:
        return a if b else False
    import numpy as np

    return np.logical_and(a, b)


def _or(a: Any, b: Any) -> Any:
    if a.__class__ is bool:
        return (a or b) if b.__class__ is bool else (True if a else b)
    if b.__class__ is bool:
        return True if b else a
    import numpy as np

    return np.logical_or(a, b)


def _not(a: Any) -> Any:
    if a.__class__ is bool:
        return not a
    import numpy as np

    return np.logical_not(a)


def _bool(x: Any) -> Any:
    if _is_array(x):
        import numpy as np

        return np.asarray(x, dtype=bool)
    return bool(x)


_SCALARS = (float, int, str, bool)  # NumPy's float64 is a float


def truth(node: ex.Node, env: Mapping[str, Any]) -> Truth:
    """(known true, known false) of condition `node` on `env` (name -> scalar or array).

    Where neither is set the condition is unknown: it read an undefined value. A window
    function reads `env[expr.window_key(...)]` (engine/program/history.py fills it).
    """
    k = node.kind
    if k == "bool":
        return bool(node.value), not bool(node.value)
    if k == "not":
        t, f = truth(node.args[0], env)
        return f, t
    if k == "and":
        t, f = True, False
        for a in node.args:
            at, af = truth(a, env)
            if af is True:  # known false everywhere: the `and` is (scalars short-circuit)
                return False, True
            t, f = _and(t, at), _or(f, af)
        return t, f
    if k == "or":
        t, f = False, True
        for a in node.args:
            at, af = truth(a, env)
            if at is True:
                return True, False
            t, f = _or(t, at), _and(f, af)
        return t, f
    if k == "cmp":
        left, right = _value(node.args[0], env), _value(node.args[1], env)
        if isinstance(left, _SCALARS) and isinstance(right, _SCALARS):
            if _nan(left) or _nan(right):
                return False, False
            hit = bool(_compare(node.op, left, right))
            return hit, not hit
        known = _and(defined(left), defined(right))
        result = _bool(_compare(node.op, left, right))
        return _and(known, result), _and(known, _not(result))
    if k == "in":
        left = ex.evaluate(node.args[0], env)
        known = defined(left)
        result = _bool(ex.evaluate(node, env))
        return _and(known, result), _and(known, _not(result))
    # a bare value (a boolean attribute; the type check refuses a bare number in a gate)
    value = ex.evaluate(node, env)
    known = defined(value)
    result = _bool(_nonzero(value, known))
    return _and(known, result), _and(known, _not(result))


def _value(node: ex.Node, env: Mapping[str, Any]) -> Any:
    k = node.kind  # the common sides read directly: a gate is checked per run per day
    if k == "name":
        return env[node.value]  # type: ignore[index]
    if k == "num":
        return node.value
    return ex.evaluate(node, env)


def _compare(op: str, a: Any, b: Any) -> Any:
    if not (_is_array(a) or _is_array(b)) and (_nan(a) or _nan(b)):
        return False  # unknown anyway: `known` is False
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "==":
        return a == b
    return a != b


def _nan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _nonzero(value: Any, known: Any) -> Any:
    if _is_array(value):
        import numpy as np

        arr = np.asarray(value)
        if arr.dtype.kind in "fc":
            return np.where(known, arr, 0) != 0
        if arr.dtype.kind in "biu":
            return arr != 0
        return np.asarray([bool(x) for x in arr.ravel()], dtype=bool).reshape(arr.shape)
    return bool(value) if known else False


def holds(node: ex.Node, env: Mapping[str, Any]) -> Any:
    """Where condition `node` is known to hold on `env` (scalars: a bool; arrays: a mask)."""
    return truth(node, env)[0]
