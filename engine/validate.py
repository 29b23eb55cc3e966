"""`validate`: load, schema, build, semantic checks — diagnostics out, never an exception.

Also the checks of a command's options against a playbook (`check_plan_options`): the CLI parses
and renders, the rules about what a valid input is live here.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

from .core.diagnostics import Collector, Diagnostic, Severity, sort_key
from .core.files import default_root
from .core.status import UNREADABLE, ExitCode, UsageError, validation_exit
from .lang.loader import Document, LoadError
from .lang.model import Playbook

STDIN = "-"  # the path that means standard input
STDIN_NAME = "<stdin>"  # how standard input is named in diagnostics


class DocumentKind(enum.StrEnum):
    """What a YAML document is to `sop`, decided by its top-level keys."""

    PLAYBOOK = "playbook"
    FRAGMENT = "fragment"
    SCENARIO = "scenario"


def document_kind(data: object) -> DocumentKind | None:
    """The kind of a loaded document, or None when it is none of ours (a CI workflow ...)."""
    if not isinstance(data, dict):
        return None
    if "playbook" in data:
        return DocumentKind.PLAYBOOK
    if "fragment" in data:
        return DocumentKind.FRAGMENT
    if "scenario" in data:
        return DocumentKind.SCENARIO
    return None


# A top-level key of ours at the start of a line: a file that does not parse is still reported
# when it says it is a playbook, fragment or scenario (and skipped when it does not).
_OURS = re.compile(r"^(playbook|fragment|scenario)[ \t]*:", re.M)


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

    @property
    def unreadable(self) -> bool:
        """True when the input could not be read at all (too large, not UTF-8, not a file)."""
        return any(d.code in UNREADABLE for d in self.diagnostics)

    def as_dict(self) -> dict[str, object]:
        """The file and its diagnostics as plain data."""
        return {
            "file": self.file,
            "errors": self.errors,
            "warnings": self.warnings,
            "diagnostics": [d.as_dict() for d in self.diagnostics],
        }


@dataclass(frozen=True)
class ValidateOptions:
    """How to validate: plan-based checks need a horizon and can be switched off.

    `root` is the folder every file read must stay inside (see `targets` for the default);
    `strict` makes warnings fail the verdict too.
    """

    plan_checks: bool = True
    plan_days: int = 90
    params: tuple[tuple[str, Any], ...] = ()
    root: str | None = None
    strict: bool = False


Options = ValidateOptions  # the earlier name, kept for callers of the public API


@dataclass(frozen=True)
class Target:
    """A file to validate, the folder its reads are confined to, and whether it was named."""

    file: str
    root: str
    named: bool


def targets(paths: Iterable[str]) -> list[Target]:
    """Files to validate: a folder means every .yaml/.yml file beneath it, rooted at the folder.

    A file named directly is rooted at its own folder (`-`, standard input, at the working
    directory). Dot folders (.git, .github ...) and symlinked folders are not walked into; a
    symlinked file that leads out of the root is refused when it is read, not here.
    """
    out: list[Target] = []
    for p in paths:
        if p == STDIN:
            out.append(Target(p, os.getcwd(), True))
        elif os.path.isdir(p):
            for where, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(
                    Target(os.path.join(where, f), p, False)
                    for f in sorted(files)
                    if f.endswith((".yaml", ".yml"))
                )
        else:
            out.append(Target(p, default_root(p), True))
    return out


def expand(paths: Iterable[str]) -> list[str]:
    """Files to validate: folders mean every .yaml/.yml file beneath them, sorted."""
    return [t.file for t in targets(paths)]


def validate_file(path: str, options: ValidateOptions = ValidateOptions()) -> FileResult:
    """Validate one playbook, fragment or scenario file (`-`: standard input)."""
    result = _validate(path, options, named=True)
    assert result is not None  # a named file is never skipped
    return result


def _load_head(path: str, root: str, stdin: BinaryIO | None) -> Document:
    from .lang.loader import load_file, load_stream

    if path != STDIN:
        return load_file(path, root=root)
    import sys

    return load_stream(stdin if stdin is not None else sys.stdin.buffer, STDIN_NAME)


def _skippable(e: LoadError) -> bool:
    """A file found in a folder that failed to load and does not claim to be one of ours."""
    code = e.diagnostic.code
    if code == "SOP005":  # empty, or a list (an Ansible playbook) or a scalar
        return True
    if code in ("SOP001", "SOP002", "SOP009") and e.document is not None:
        return _OURS.search(e.document.text) is None  # a Helm template, a multi-document file
    return False


def _validate(
    path: str, options: ValidateOptions, *, named: bool, stdin: BinaryIO | None = None
) -> FileResult | None:
    """Validate one file; None when a file found in a folder is not a playbook, fragment or
    scenario (a CI workflow, a compose file): folders hold other YAML too."""
    from .lang.build import build, load_sources, param_defaults, substitute
    from .lang.schema import validator

    out = Collector()
    shown = STDIN_NAME if path == STDIN else path
    result = FileResult(shown, out.items)
    root = options.root or (os.getcwd() if path == STDIN else default_root(path))
    try:
        sources = None
        head = _load_head(path, root, stdin)
        kind = document_kind(head.data)
        if kind is None and not named:
            return None
        if kind == DocumentKind.FRAGMENT:
            substitute(head, param_defaults(head.data), out)
            validator("fragment.schema.json").validate(head, out)
            result.documents[shown] = head
        elif kind == DocumentKind.SCENARIO:
            validator("scenario.schema.json").validate(head, out)
            result.documents[shown] = head
            if not out.items:  # each parameter fits its model (SOP287)
                from .sim.scenario import check_parameters

                check_parameters(head, out)
            if not out.items and path != STDIN:
                _check_scenario(path, head, options, out)
        else:
            sources = load_sources(shown, out, dict(options.params), main=head, root=root)
            docs = [*sources.documents(), *sources.unparsed]
            result.documents = {d.file: d for d in docs}
    except LoadError as e:
        if not named and _skippable(e):
            return None
        out.items.append(e.diagnostic)
        if e.document is not None:  # read within limits: its lines may be quoted
            result.documents[shown] = e.document
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


def _check_scenario(path: str, doc: Document, options: ValidateOptions, out: Collector) -> None:
    """A scenario beside its playbook (`<dir>/scenarios/<name>` for `<dir>/<name>`) is checked
    against it: the stage and metrics it names must exist there."""
    from .core.files import is_inside
    from .sim.scenario import check_scenario, playbook_beside

    pb_path = playbook_beside(path)
    if pb_path is None:
        return
    root = options.root or os.path.dirname(pb_path)
    if not is_inside(pb_path, root):
        return
    loaded = load_playbook(pb_path, dict(options.params), root=root)
    if loaded.playbook is not None:  # a broken playbook is reported when it is validated
        check_scenario(loaded.playbook, doc, out)


def _has_errors(items: list[Diagnostic]) -> bool:
    return any(d.severity == Severity.ERROR for d in items)


def _finish(result: FileResult) -> FileResult:
    result.diagnostics.sort(key=sort_key)
    return result


def validate_paths(
    paths: Iterable[str], options: ValidateOptions = ValidateOptions()
) -> list[FileResult]:
    """Validate every file named or found under the folders named (`options.root` wins).

    Files found in a folder that are not playbooks, fragments or scenarios are left out.
    """
    return validate_report(paths, options, require=False).results


@dataclass
class ValidationReport:
    """What `sop validate` found in every file, what it skipped, and its verdict."""

    results: list[FileResult]
    skipped: list[str] = field(default_factory=list)
    strict: bool = False

    @property
    def errors(self) -> int:
        """Errors in every file."""
        return sum(r.errors for r in self.results)

    @property
    def warnings(self) -> int:
        """Warnings in every file."""
        return sum(r.warnings for r in self.results)

    @property
    def exit_code(self) -> ExitCode:
        """2 when an input could not be read, 1 on errors (or warnings when strict), else 0."""
        return validation_exit(
            self.errors,
            self.warnings,
            strict=self.strict,
            unreadable=any(r.unreadable for r in self.results),
        )

    def skipped_note(self) -> str | None:
        """A one-line note on the YAML files skipped as none of ours, or None."""
        n = len(self.skipped)
        if not n:
            return None
        return (
            f"skipped {n} YAML file{'s' if n != 1 else ''} that"
            f" {'are' if n != 1 else 'is'} not a playbook, fragment or scenario"
        )

    def as_dict(self) -> dict[str, object]:
        """The JSON document of `sop validate --format json`."""
        return {**results_dict(self.results), "skipped": list(self.skipped)}


def results_dict(results: list[FileResult]) -> dict[str, object]:
    """Every diagnostic of `results`, and a summary: the JSON shape of validation (version 1)."""
    return {
        "version": 1,
        "files": [r.file for r in results],
        "diagnostics": [d.as_dict() for r in results for d in r.diagnostics],
        "summary": {
            "errors": sum(r.errors for r in results),
            "warnings": sum(r.warnings for r in results),
            "files": len(results),
        },
    }


def validate_report(
    paths: Iterable[str],
    options: ValidateOptions = ValidateOptions(),
    *,
    require: bool = True,
    stdin: BinaryIO | None = None,
) -> ValidationReport:
    """Validate what `paths` name (`-`: standard input) into one report with its exit code.

    With `require`, finding nothing to validate is a UsageError.
    """
    paths = list(paths)
    if paths.count(STDIN) > 1:
        raise UsageError("standard input (-) can be validated only once")
    report = ValidationReport([], strict=options.strict)
    for t in targets(paths):
        # a file found in a folder is confined to the folder; one named, to its own (default)
        root = options.root or (None if t.named else t.root)
        res = _validate(t.file, replace(options, root=root), named=t.named, stdin=stdin)
        if res is None:
            report.skipped.append(t.file)
        else:
            report.results.append(res)
    if require and not report.results:
        where = ", ".join(paths)
        if report.skipped:
            raise UsageError(
                f"no playbooks, fragments or scenarios in {where} ({report.skipped_note()})"
            )
        raise UsageError(f"no .yaml/.yml files found in {where}")
    return report


def load_playbook(
    path: str, params: dict[str, Any] | None = None, *, root: str | None = None
) -> FileResult:
    """Validate without plan checks; `.playbook` is set when the file has no errors."""
    opts = ValidateOptions(plan_checks=False, params=tuple((params or {}).items()), root=root)
    res = validate_file(path, opts)
    if res.errors:
        res.playbook = None
    return res


def check_plan_options(
    pb: Playbook,
    *,
    role: str | None = None,
    stage: str | None = None,
    failing: Iterable[str] = (),
    include_optional: Iterable[str] = (),
) -> None:
    """Options of `sop plan` that name roles or stages must name the playbook's; UsageError."""
    from .core.suggest import did_you_mean

    def unknown(option: str, value: str, known: Iterable[str]) -> UsageError:
        names = list(known)
        hint = did_you_mean(value, names)
        return UsageError(
            f"{option} {value!r} is not in the playbook"
            + (f"; {hint}" if hint else "")
            + f" (known: {', '.join(names) or 'none'})"
        )

    if role is not None and role not in pb.roles:
        raise unknown("--role", role, pb.roles)
    if stage is not None and stage not in pb.stages:
        raise unknown("--stage", stage, pb.stages)
    for sid in failing:
        if sid not in pb.stages:
            raise unknown("--fail", sid, pb.stages)
    optional = [s.id for s in pb.stages.values() if s.optional]
    for sid in include_optional:
        if sid not in pb.stages:
            raise unknown("--include-optional", sid, pb.stages)
        if sid not in optional:
            raise UsageError(
                f"--include-optional {sid!r}: stage {sid!r} is not optional, so it is entered"
                f" anyway (optional stages: {', '.join(optional) or 'none'})"
            )
