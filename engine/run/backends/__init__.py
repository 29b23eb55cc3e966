"""Backends: the registry of types, `--backend` routes over the playbook's declarations, building.

Every type, built-in or not, is found through the `sop.backends` entry-point group
(pyproject.toml), so a third party's backend is loaded exactly as `console` is. Routing has one
home here: `configs_for` merges the playbook's `backends:` with the command line's routes, and
`build_backends` turns the result into live backends. See docs/backends.md.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ...core import files
from ...core.suggest import did_you_mean
from ...core.textsafe import terminal
from ..ports import Backend, BackendConfig, BackendFactory, Capabilities
from ._common import BackendError, OperatorText, check_fits, check_kind, record, resolve_secret

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "GROUP",
    "BackendDeclaration",
    "BackendError",
    "Route",
    "available_types",
    "build_backends",
    "check_fits",
    "check_kind",
    "close_all",
    "configs_for",
    "load_factory",
    "parse_route",
    "record",
    "resolve_secret",
]

GROUP = "sop.backends"
EVERY = "*"  # a route's name for every backend of the playbook

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # a playbook backend id (the schema's pattern)
_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")  # an entry-point name
_OPTION = re.compile(r"[a-z][a-z0-9_]{0,63}")
_USAGE = "expected NAME=TYPE[:TARGET][;OPTION=VALUE...], e.g. group=jsonl:out.jsonl"


# -- the registry -------------------------------------------------------------------------------


def _entry_points() -> dict[str, list[EntryPoint]]:
    from importlib.metadata import entry_points

    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=GROUP):
        same = found.setdefault(ep.name, [])
        if all(other.value != ep.value for other in same):  # one package seen twice is one
            same.append(ep)
    return found


def available_types() -> list[str]:
    """The backend types this installation can build, sorted."""
    return sorted(_entry_points())


def load_factory(type_name: str, backend: str | None = None) -> BackendFactory:
    """The factory registered for `type_name`; `backend` (the playbook's id) improves the error."""
    eps = _entry_points()
    candidates = eps.get(type_name, [])
    if not candidates:
        available = ", ".join(sorted(eps)) or "none"
        if backend is None:
            raise BackendError(
                f'backend type "{terminal(type_name)}" is not installed (available: {available})'
            )
        name = terminal(backend)
        raise BackendError(
            f'backend "{name}" has type "{terminal(type_name)}", which this installation cannot'
            f" send to (available: {available}); route it with --backend {name}=jsonl:PATH or"
            " --backend '*=jsonl:PATH'"
        )
    if len(candidates) > 1:
        # two packages claim one name: sending through whichever loads first would be a guess
        sources = ", ".join(sorted(ep.value for ep in candidates))
        raise BackendError(
            f'backend type "{type_name}" is registered by more than one package ({sources});'
            " uninstall one"
        )
    try:
        factory = candidates[0].load()
    except Exception as e:  # a broken plug-in: say which, not a traceback
        raise BackendError(
            f'backend type "{type_name}" could not be loaded ({candidates[0].value}):'
            f" {type(e).__name__}: {e}"
        ) from None
    if not callable(factory):
        raise BackendError(
            f'backend type "{type_name}" ({candidates[0].value}) is not a factory function'
        )
    return factory


# -- routes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One `--backend NAME=TYPE[:TARGET][;OPTION=VALUE...]`: where a playbook backend goes."""

    name: str  # a playbook backend id, or "*" for every backend of the playbook
    type: str
    target: str | None = field(default=None, repr=False)  # a URL may carry a token
    options: Mapping[str, str] = field(default_factory=dict)
    rate_per_minute: int | None = None  # the `rate` option


def parse_route(text: str) -> Route:
    """The route a `--backend` value names; ValueError (BackendError) when it is malformed.

    Messages quote the name and type only: the target may be a URL holding a token.
    """
    name, eq, rest = text.strip().partition("=")
    name = name.strip()
    if not eq or not name:
        raise BackendError(f"--backend: {_USAGE}")
    if name != EVERY and not _NAME.fullmatch(name):
        raise BackendError(
            f'--backend: "{terminal(name)}" is not a backend name (lowercase letters, digits,'
            " - and _) nor *"
        )
    head, *parts = rest.split(";")
    type_name, colon, target = head.partition(":")
    type_name = type_name.strip()
    if not type_name:
        raise BackendError(f"--backend {name}=: the type is missing; {_USAGE}")
    if not _TYPE.fullmatch(type_name):
        raise BackendError(f'--backend {name}=: "{terminal(type_name)}" is not a backend type')
    if colon and not target:
        raise BackendError(f"--backend {name}={type_name}: give a target after ':' or drop the ':'")
    options: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not _OPTION.fullmatch(key) or not value:
            raise BackendError(
                f"--backend {name}={type_name}: options are ;NAME=VALUE (a ';' inside a URL is"
                " written %3B)"
            )
        if key in options:
            raise BackendError(f"--backend {name}={type_name}: option {key} is given twice")
        options[key] = value
    rate = options.pop("rate", None)
    return Route(name, type_name, target or None, options, _rate(name, rate))


def _rate(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,6}", text) or not 1 <= int(text) <= 100_000:
        raise BackendError(f"--backend {name}: rate must be messages a minute, 1 to 100000")
    return int(text)


class BackendDeclaration(Protocol):
    """A backend as the playbook declares it (engine/lang/model.py `BackendSpec`)."""

    @property
    def type(self) -> str: ...
    @property
    def rate_per_minute(self) -> int | None: ...
    @property
    def url(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def token(self) -> str | None: ...
    @property
    def notify(self) -> str | None: ...
    @property
    def path(self) -> str | None: ...
    @property
    def options(self) -> Mapping[str, str]: ...


def configs_for(
    playbook_backends: Mapping[str, BackendDeclaration],
    routes: Iterable[Route] = (),
    *,
    root: str | None = None,
) -> dict[str, BackendConfig]:
    """Each playbook backend's configuration, after the routes (a named route beats `*`).

    A route to the declared type keeps the declaration and overrides what it names (so
    `staff=tasks` keeps `notify`); a route to another type replaces it. Secrets stay
    `${env:NAME}` references here: factories resolve them (`resolve_secret`). A `path` written
    in the playbook is relative to `root` (default: the current folder) and may not leave it,
    since the playbook is untrusted; a route's target is the operator's and is taken as given,
    and its option values are marked as the operator's (`OperatorText`: a factory may accept
    from them what it refuses from the playbook, such as a `base_url` elsewhere).
    """
    every: Route | None = None
    named: dict[str, Route] = {}
    for r in routes:
        if r.name == EVERY:
            if every is not None:
                raise BackendError("--backend '*=…' is given twice")
            every = r
            continue
        if r.name in named:
            raise BackendError(f"--backend {r.name}=… is given twice")
        if r.name not in playbook_backends:
            hint = did_you_mean(r.name, playbook_backends)
            declared = ", ".join(sorted(playbook_backends)) or "none"
            raise BackendError(
                f'--backend {r.name}=…: the playbook has no backend "{r.name}"'
                + (f"; {hint}" if hint else f" (it declares: {declared})")
            )
        named[r.name] = r
    configs: dict[str, BackendConfig] = {}
    for bid, spec in playbook_backends.items():
        route = named.get(bid, every)
        configs[bid] = _config(bid, spec, route, root)
    return configs


def _config(
    bid: str, spec: BackendDeclaration, route: Route | None, root: str | None
) -> BackendConfig:
    declared: dict[str, object] = {
        **spec.options,  # platform settings (secrets still ${env:NAME} references)
        **{
            k: v
            for k, v in (("key", spec.key), ("token", spec.token), ("notify", spec.notify))
            if v
        },
    }
    path = spec.path if not spec.url else None
    target = spec.url or spec.path
    if route is None:
        type_name, rate, options = spec.type, spec.rate_per_minute, declared
    elif route.type == spec.type:
        type_name = spec.type
        rate = route.rate_per_minute or spec.rate_per_minute
        options = {**declared, **_operators(route.options)}
        target = route.target or target
    else:  # another type: nothing of the platform's declaration applies (nor its rate)
        type_name, rate, options = route.type, route.rate_per_minute, _operators(route.options)
        target = route.target
    if path is not None and target == path and (route is None or not route.target):
        target = _confined(bid, path, root or os.getcwd())
    return BackendConfig(bid, type_name, target, options, rate)


def _operators(options: Mapping[str, object]) -> dict[str, object]:
    """A route's options, their text marked as the operator's (`OperatorText`)."""
    return {k: OperatorText(v) if isinstance(v, str) else v for k, v in options.items()}


def _confined(bid: str, path: str, root: str) -> str:
    """The playbook's `path` made absolute under `root`, refused when it would leave it."""
    how = f"; choose any file with --backend {bid}=jsonl:PATH"
    if not path or "\x00" in path:
        raise BackendError(f'backend "{bid}": path is empty or holds a NUL character')
    if os.path.isabs(path) or path.startswith("~"):
        raise BackendError(
            f'backend "{bid}": a playbook path must be relative to {root!r}, not absolute{how}'
        )
    full = os.path.normpath(os.path.join(root, path))
    if not files.is_inside(full, root):
        why = "a symlink on the path leads" if files.is_inside_by_name(full, root) else "it goes"
        raise BackendError(f'backend "{bid}": {why} outside {root!r}{how}')
    return full


# -- building -----------------------------------------------------------------------------------


def build_backends(
    configs: Mapping[str, BackendConfig], env: Mapping[str, str]
) -> dict[str, Backend]:
    """Live backends for `configs`, secrets read from `env`; all or none (built ones are closed)."""
    built: dict[str, Backend] = {}
    try:
        for name, config in configs.items():
            factory = load_factory(config.type, name)
            try:
                backend = factory(config, env)
            except BackendError:
                raise
            except ValueError as e:  # the factory's message for the operator, with its name
                raise BackendError(f'backend "{name}": {e}') from None
            if not isinstance(backend, Backend):
                raise BackendError(
                    f'backend type "{config.type}" built something that is not a Backend'
                    " (it needs name, capabilities, send and close)"
                )
            built[name] = backend
        for name, backend in built.items():
            notify = getattr(backend, "notify", None)
            if notify is not None and notify not in built:
                raise BackendError(
                    f'backend "{name}" notifies "{terminal(str(notify))}", which is not a backend'
                    " of this playbook"
                )
    except BaseException:
        with contextlib.suppress(Exception):  # the error that stopped the build is reported
            close_all(built)
        raise
    return built


def close_all(backends: Mapping[str, Backend]) -> None:
    """Close every backend, even when one fails to close (the first error is raised after)."""
    first: BaseException | None = None
    for backend in backends.values():
        try:
            backend.close()
        except Exception as e:
            first = first or e
    if first is not None:
        raise first


# -- what is installed --------------------------------------------------------------------------


def describe_types() -> list[dict[str, object]]:
    """Every installed backend type: where it comes from and what it can do (`sop backends`).

    A backend module may declare `CAPABILITIES` (a `Capabilities`: its defaults before options;
    a mapping of type to `Capabilities` when one module serves several types);
    its docstring's first line is its summary.
    """
    import importlib

    out: list[dict[str, object]] = []
    for name, eps in sorted(_entry_points().items()):
        ep = eps[0]
        row: dict[str, object] = {"type": name, "entry_point": ep.value}
        try:
            module = importlib.import_module(ep.value.partition(":")[0])
        except Exception as e:  # a broken plug-in is listed, not fatal
            row["error"] = f"cannot be loaded: {type(e).__name__}"
            out.append(row)
            continue
        doc = (module.__doc__ or "").strip().splitlines()
        row["summary"] = doc[0] if doc else ""
        caps = getattr(module, "CAPABILITIES", None)
        if isinstance(caps, Mapping):  # one module, several types: keyed by type
            caps = caps.get(name)
        if isinstance(caps, Capabilities):
            row["capabilities"] = {
                "kinds": sorted(caps.kinds) if caps.kinds is not None else "all",
                "max_length": caps.max_length,
                "length_unit": caps.length_unit,
                "mentions": caps.mentions,
                "markdown": caps.markdown,
                "idempotent": caps.idempotent,
                "rate_per_minute": caps.rate_per_minute,
            }
        out.append(row)
    return out
