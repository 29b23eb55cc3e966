"""`validate`: load, schema, build, semantic checks — diagnostics out, never an exception."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .core.diagnostics import Collector, Diagnostic, Severity, sort_key
from .core.files import default_root
from .lang.loader import Document, LoadError
from .lang.model import Playbook


@dataclass
class FileResult:
    """What validating one file found."""

    file: str
    diagnostics: list[Diagnostic]
    playbook: Playbook | None = None
    documents: dict[str, Document] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Number of errors."""
        return sum(d.severity == Severity.ERROR for d in self.diagnostics)

    @property
    def warnings(self) -> int:
        """Number of warnings."""
        return sum(d.severity == Severity.WARNING for d in self.diagnostics)


@dataclass(frozen=True)
class Options:
    """How to validate: plan-based checks need a horizon and can be switched off.

    `root` is the folder every file read must stay inside (see `targets` for the default).
    """

    plan_checks: bool = True
    plan_days: int = 90
    params: tuple[tuple[str, Any], ...] = ()
    root: str | None = None


def targets(paths: Iterable[str]) -> list[tuple[str, str]]:
    """(file, root) pairs: a folder means every .yaml/.yml file beneath it, rooted at the folder.

    A file named directly is rooted at its own folder. Symlinked folders are not walked into, and
    a symlinked file that leads out of the root is refused when it is read, not here.
    """
    out: list[tuple[str, str]] = []
    for p in paths:
        if os.path.isdir(p):
            for where, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(
                    (os.path.join(where, f), p)
                    for f in sorted(files)
                    if f.endswith((".yaml", ".yml"))
                )
        else:
            out.append((p, default_root(p)))
    return out


def expand(paths: Iterable[str]) -> list[str]:
    """Files to validate: folders mean every .yaml/.yml file beneath them, sorted."""
    return [f for f, _ in targets(paths)]


def validate_file(path: str, options: Options = Options()) -> FileResult:
    """Validate one playbook (or fragment) file."""
    from .lang.build import build, load_sources, param_defaults, substitute
    from .lang.loader import load_file
    from .lang.schema import validator

    out = Collector()
    result = FileResult(path, out.items)
    root = options.root or default_root(path)
    try:
        sources = None
        head = load_file(path, root=root)
        if "fragment" in head.data and "playbook" not in head.data:
            substitute(head, param_defaults(head.data), out)
            validator("fragment.schema.json").validate(head, out)
            result.documents[path] = head
        elif "scenario" in head.data and "playbook" not in head.data:
            validator("scenario.schema.json").validate(head, out)
            result.documents[path] = head
        else:
            sources = load_sources(path, out, dict(options.params), main=head, root=root)
            docs = [*sources.documents(), *sources.unparsed]
            result.documents = {d.file: d for d in docs}
    except LoadError as e:
        out.items.append(e.diagnostic)
        if e.document is not None:  # read within limits: its lines may be quoted
            result.documents[path] = e.document
        return _finish(result)
    if sources is not None and not _has_errors(out.items):
        from .lang.checks import run_checks

        pb = build(sources, out)
        result.playbook = pb
        if not _has_errors(out.items):
            run_checks(pb, out)
        if options.plan_checks and not _has_errors(out.items):
            from .plan.checks import run_plan_checks

            run_plan_checks(pb, out, days=options.plan_days)
    return _finish(result)


def _has_errors(items: list[Diagnostic]) -> bool:
    return any(d.severity == Severity.ERROR for d in items)


def _finish(result: FileResult) -> FileResult:
    result.diagnostics.sort(key=sort_key)
    return result


def validate_paths(paths: Iterable[str], options: Options = Options()) -> list[FileResult]:
    """Validate every file named or found under the folders named (`options.root` wins)."""
    return [
        validate_file(p, replace(options, root=options.root or root)) for p, root in targets(paths)
    ]


def load_playbook(
    path: str, params: dict[str, Any] | None = None, *, root: str | None = None
) -> FileResult:
    """Validate without plan checks; `.playbook` is set when the file has no errors."""
    opts = Options(plan_checks=False, params=tuple((params or {}).items()), root=root)
    res = validate_file(path, opts)
    if res.errors:
        res.playbook = None
    return res
