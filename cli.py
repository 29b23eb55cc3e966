"""The `sop` command line: parse options, call the engine, render. Nothing else lives here."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

FORMATS_VALIDATE = ["text", "json", "github", "sarif", "junit"]
# Diagnostics that mean "could not read the input" rather than "the playbook is wrong".
UNREADABLE = {"SOP003", "SOP004", "SOP006"}


def _color(stream: Any) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def _fail(message: str) -> None:
    click.echo(f"sop: error: {message}", err=True)
    raise SystemExit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="sop")
def main() -> None:
    """Community-operations playbooks as code: validate, plan, simulate and run SOPs."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS_VALIDATE),
    help="Output format (default: text, or github when GITHUB_ACTIONS=true).",
)
@click.option("--strict", is_flag=True, help="Warnings fail too.")
@click.option("--no-plan-checks", is_flag=True, help="Skip workload/rate/frequency checks.")
@click.option("--days", default=90, show_default=True, help="Horizon of the plan-based checks.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file.")
def validate(
    paths: tuple[str, ...],
    fmt: str | None,
    strict: bool,
    no_plan_checks: bool,
    days: int,
    output: str | None,
) -> None:
    """Check playbooks (files or folders) and report located diagnostics."""
    import gc

    gc.set_threshold(200_000, 20, 20)  # a short-lived process building acyclic trees
    from engine.report import RENDERERS
    from engine.status import validation_exit
    from engine.validate import Options, validate_paths

    if fmt is None:
        fmt = "github" if os.environ.get("GITHUB_ACTIONS") == "true" else "text"
    results = validate_paths(paths, Options(plan_checks=not no_plan_checks, plan_days=days))
    if not results:
        _fail("no .yaml/.yml files found in " + ", ".join(paths))
    stream = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        RENDERERS[fmt](results, stream, fmt == "text" and _color(stream))
    finally:
        if output:
            stream.close()
    diags = [d for r in results for d in r.diagnostics]
    code = validation_exit(
        sum(r.errors for r in results),
        sum(r.warnings for r in results),
        strict=strict,
        unreadable=any(d.code in UNREADABLE for d in diags),
    )
    raise SystemExit(int(code))


@main.command()
@click.option(
    "--kind", type=click.Choice(["playbook", "fragment"]), default="playbook", show_default=True
)
def schema(kind: str) -> None:
    """Print the JSON Schema of playbooks (or fragments)."""
    from engine.schema import schema_text

    click.echo(schema_text(f"{kind}.schema.json"), nl=False)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def rules(fmt: str) -> None:
    """List every diagnostic code with its meaning and hint."""
    import json

    from engine.diagnostics import all_rules

    rs = all_rules()
    if fmt == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "code": r.code,
                        "name": r.name,
                        "severity": str(r.severity),
                        "summary": r.summary,
                        "hint": r.hint,
                    }
                    for r in rs
                ],
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    for r in rs:
        click.echo(f"{r.code}  {r.severity:<7}  {r.name:<22}  {r.summary}")


@main.command()
@click.argument("name")
@click.option(
    "--template",
    "template",
    default="lifecycle",
    show_default=True,
    help="Starting point: lifecycle, brand, paid, developer or minimal.",
)
@click.option(
    "--dir",
    "directory",
    default=".",
    type=click.Path(file_okay=False),
    help="Where to write NAME.yaml.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def init(name: str, template: str, directory: str, force: bool, fmt: str) -> None:
    """Scaffold a playbook NAME.yaml with the editor schema modeline."""
    import json

    from engine.scaffold import ScaffoldError, scaffold

    try:
        path = scaffold(name, template, directory, force=force)
    except ScaffoldError as e:
        _fail(str(e))
    if fmt == "json":
        click.echo(json.dumps({"path": path, "template": template}))
    else:
        click.echo(f"wrote {path}; next: sop validate {path}")


def _load(path: str, params: dict[str, Any] | None = None) -> Any:
    """A valid Playbook, or its diagnostics on stderr and exit 2."""
    from engine.report import render_text
    from engine.validate import load_playbook

    res = load_playbook(path, params)
    if res.playbook is None:
        render_text([res], sys.stderr, _color(sys.stderr))
        click.echo(
            f"sop: error: {path} is not a valid playbook (run `sop validate {path}`)", err=True
        )
        raise SystemExit(2)
    return res.playbook


def _date(value: str | None) -> Any:
    from datetime import date

    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"--start must be a date such as 2026-12-01, not {value!r}")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


@main.command()
@click.argument("playbook", type=click.Path(dir_okay=False))
@click.option("--start", help="First day (YYYY-MM-DD; default community.start).")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3660))
@click.option("--role", help="Only this role's actions.")
@click.option("--stage", help="Only this stage's actions.")
@click.option(
    "--assume-gates",
    type=click.Choice(["pass", "fail"]),
    default="pass",
    show_default=True,
    help="Gates open as soon as allowed, or never (deadlines apply).",
)
@click.option("--fail", "failing", multiple=True, help="Gate of this stage fails (repeatable).")
@click.option("--joins-per-day", type=float, help="Expected joins a day, for event-rule counts.")
@click.option("--include-optional", multiple=True, help="Enter this optional stage.")
@click.option(
    "--format",
    "fmt",
    default="table",
    show_default=True,
    type=click.Choice(["table", "json", "csv", "ics", "markdown"]),
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file.")
def plan(
    playbook: str,
    start: str | None,
    days: int,
    role: str | None,
    stage: str | None,
    assume_gates: str,
    failing: tuple[str, ...],
    joins_per_day: float | None,
    include_optional: tuple[str, ...],
    fmt: str,
    output: str | None,
) -> None:
    """The calendar of every action and staff task."""
    from engine import render_plan
    from engine.plan import PlanOptions, make_plan
    from engine.program import Program

    pb = _load(playbook)
    for name, value, known in (("--role", role, pb.roles), ("--stage", stage, pb.stages)):
        if value is not None and value not in known:
            _fail(f"{name} {value!r} is not in the playbook (known: {', '.join(known)})")
    for sid in (*failing, *include_optional):
        if sid not in pb.stages:
            _fail(f"unknown stage {sid!r} (known: {', '.join(pb.stages)})")
    opts = PlanOptions(
        start=_date(start),
        days=days,
        assume_gates=assume_gates,
        role=role,
        stage=stage,
        joins_per_day=joins_per_day,
        include_optional=include_optional,
        failing=failing,
    )
    tl = make_plan(Program(pb), opts)
    if fmt == "table" and not output:
        render_plan.to_table(tl, _console())
        return
    renderers: dict[str, Callable[[], str | bytes]] = {
        "table": lambda: _table_text(tl),
        "json": lambda: render_plan.to_json(tl),
        "csv": lambda: render_plan.to_csv(tl),
        "ics": lambda: render_plan.to_ics(tl),
        "markdown": lambda: render_plan.to_markdown(tl),
    }
    _emit(renderers[fmt](), output)


def _table_text(tl: Any) -> str:
    from rich.console import Console

    from engine import render_plan

    console = Console(record=True, width=120, file=open(os.devnull, "w"))  # noqa: SIM115
    render_plan.to_table(tl, console)
    return console.export_text()


def _emit(data: str | bytes, output: str | None) -> None:
    if output:
        if isinstance(data, bytes):
            with open(output, "wb") as fb:
                fb.write(data)
        else:
            with open(output, "w", encoding="utf-8") as ft:
                ft.write(data)
        click.echo(f"wrote {output}", err=True)
    elif isinstance(data, bytes):
        sys.stdout.buffer.write(data)
    else:
        click.echo(data, nl=False)


@main.command()
@click.argument("playbook", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    default="mermaid",
    show_default=True,
    type=click.Choice(["mermaid", "dot", "json"]),
)
@click.option("--no-actions", is_flag=True, help="Stages only.")
def graph(playbook: str, fmt: str, no_actions: bool) -> None:
    """The stage graph (gates, goto edges) and action dependencies."""
    import json

    from engine import graph as g

    pb = _load(playbook)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "stages": [
                        {
                            "id": s.id,
                            "title": s.title,
                            "after": list(s.after),
                            "gate": s.gate.text if s.gate else None,
                            "goto": s.goto,
                            "deadline_goto": s.deadline.goto if s.deadline else None,
                            "actions": list(s.actions),
                        }
                        for s in pb.stages.values()
                    ],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    click.echo((g.mermaid if fmt == "mermaid" else g.dot)(pb, not no_actions), nl=False)


@main.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--start", help="First day of the compared plans (default community.start).")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3660))
@click.option("--format", "fmt", default="text", type=click.Choice(["text", "json"]))
def diff(old: str, new: str, start: str | None, days: int, fmt: str) -> None:
    """Semantic diff of two playbook versions and its effect on the calendar (exit 1 if any)."""
    import json

    from engine.diff import diff as make_diff
    from engine.diff import diff_dict, diff_text

    d = make_diff(_load(old), _load(new), _date(start), days)
    if fmt == "json":
        click.echo(json.dumps(diff_dict(d), ensure_ascii=False, indent=2))
    else:
        click.echo(diff_text(d), nl=False)
    raise SystemExit(0 if d.empty else 1)


if __name__ == "__main__":
    main()
