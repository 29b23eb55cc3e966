"""The `sop` command line: parse options, call the engine, render. Nothing else lives here."""

from __future__ import annotations

import os
import sys
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
@click.option("--format", "fmt", type=click.Choice(FORMATS_VALIDATE),
              help="Output format (default: text, or github when GITHUB_ACTIONS=true).")
@click.option("--strict", is_flag=True, help="Warnings fail too.")
@click.option("--no-plan-checks", is_flag=True, help="Skip workload/rate/frequency checks.")
@click.option("--days", default=90, show_default=True, help="Horizon of the plan-based checks.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file.")
def validate(paths: tuple[str, ...], fmt: str | None, strict: bool, no_plan_checks: bool,
             days: int, output: str | None) -> None:
    """Check playbooks (files or folders) and report located diagnostics."""
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
        sum(r.errors for r in results), sum(r.warnings for r in results), strict=strict,
        unreadable=any(d.code in UNREADABLE for d in diags),
    )
    raise SystemExit(int(code))


@main.command()
@click.option("--kind", type=click.Choice(["playbook", "fragment"]), default="playbook",
              show_default=True)
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
        click.echo(json.dumps([{"code": r.code, "name": r.name, "severity": str(r.severity),
                                "summary": r.summary, "hint": r.hint} for r in rs],
                              ensure_ascii=False, indent=2))
        return
    for r in rs:
        click.echo(f"{r.code}  {r.severity:<7}  {r.name:<22}  {r.summary}")


@main.command()
@click.argument("name")
@click.option("--template", "template", default="lifecycle", show_default=True,
              help="Starting point: lifecycle, brand, paid, developer or minimal.")
@click.option("--dir", "directory", default=".", type=click.Path(file_okay=False),
              help="Where to write NAME.yaml.")
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


if __name__ == "__main__":
    main()
