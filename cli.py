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
    "--kind",
    type=click.Choice(["playbook", "fragment", "scenario"]),
    default="playbook",
    show_default=True,
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json"]),
    default="json",
    help="The schema is JSON (the option exists for symmetry with the other commands).",
)
def schema(kind: str, fmt: str) -> None:
    """Print the JSON Schema of playbooks (or fragments, or simulation scenarios)."""
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
    import io

    from rich.console import Console

    from engine import render_plan

    console = Console(record=True, width=120, file=io.StringIO())
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


def _scenario(path: str | None, sets: tuple[str, ...]) -> Any:
    from engine.report import render_text
    from engine.sim.scenario import ScenarioError, load_scenario
    from engine.validate import FileResult

    try:
        return load_scenario(path, list(sets))
    except ScenarioError as e:
        render_text([FileResult(path or "--set", e.diagnostics)], sys.stderr, _color(sys.stderr))
        raise SystemExit(2) from None


def _sweep_values(specs: tuple[str, ...]) -> list[dict[str, str]]:
    import itertools

    if len(specs) > 2:
        _fail("--sweep takes one or two parameters")
    axes = []
    for spec in specs:
        name, _, values = spec.partition("=")
        if not name or not values:
            _fail(f"--sweep {spec!r}: expected name=v1,v2,...")
        axes.append([(name, v) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


@main.command()
@click.argument("playbook", type=click.Path(dir_okay=False))
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(dir_okay=False),
    help="Scenario file (default: scenarios/<playbook file> beside the playbook if present,"
    " else the built-in seed-document figures).",
)
@click.option("--runs", default=200, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--days", default=180, show_default=True, type=click.IntRange(1, 3650))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Local worker processes (default: one per CPU; results do not depend on it).",
)
@click.option("--set", "sets", multiple=True, help="Override a scenario value: section.key=value.")
@click.option("--sweep", "sweeps", multiple=True, help="name=v1,v2,... (one or two).")
@click.option(
    "--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True
)
@click.option("--address", help="Dask scheduler, tcp://HOST:PORT (with --executor dask).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write an HTML report here.")
@click.option(
    "--min-probability",
    type=click.FloatRange(0, 1),
    help="Exit 1 if any gate's P(pass) is below this.",
)
@click.option("--format", "fmt", default="text", type=click.Choice(["text", "json"]))
def simulate(
    playbook: str,
    scenario_path: str | None,
    runs: int,
    days: int,
    seed: int,
    workers: int | None,
    sets: tuple[str, ...],
    sweeps: tuple[str, ...],
    executor: str,
    address: str | None,
    report: str | None,
    min_probability: float | None,
    fmt: str,
) -> None:
    """Monte Carlo forecast of the metrics and of every gate's pass probability."""
    import json

    from engine.sim.montecarlo import SimOptions
    from engine.sim.montecarlo import simulate as run_sim

    pb = _load(playbook)
    if executor == "dask" and not address:
        _fail("--executor dask needs --address tcp://HOST:PORT")
    if scenario_path is None:
        # convention: scenarios/<playbook file name> beside the playbook
        beside = os.path.join(os.path.dirname(playbook), "scenarios", os.path.basename(playbook))
        if os.path.isfile(beside):
            scenario_path = beside
            click.echo(f"using scenario {beside}", err=True)
    opts = SimOptions(
        runs=runs,
        days=days,
        seed=seed,
        workers=workers or os.cpu_count() or 1,
        executor=executor,
        address=address,
    )
    if sweeps:
        rows = []
        for values in _sweep_values(sweeps):
            sc = _scenario(scenario_path, (*sets, *(f"{k}={v}" for k, v in values.items())))
            rows.append((values, _run_sim(run_sim, pb, sc, opts, fmt)))
        if fmt == "json":
            click.echo(
                json.dumps(
                    [{"values": v, **{"gates": r.to_dict()["gates"]}} for v, r in rows],
                    ensure_ascii=False,
                    indent=2,
                )
            )
        else:
            from engine.sim.render import sweep_table

            sweep_table(rows, _console())
        return
    res = _run_sim(run_sim, pb, _scenario(scenario_path, sets), opts, fmt)
    if report:
        from engine.sim.render import to_html

        with open(report, "w", encoding="utf-8") as fh:
            fh.write(to_html(res, pb))
        click.echo(f"wrote {report}", err=True)
    if fmt == "json":
        click.echo(json.dumps(res.to_dict(), ensure_ascii=False))
    else:
        from engine.sim.render import to_text

        to_text(res, _console())
    low = min_probability is not None and any(g.probability < min_probability for g in res.gates)
    raise SystemExit(1 if res.expect_failures or low else 0)


def _run_sim(run_sim: Any, pb: Any, sc: Any, opts: Any, fmt: str) -> Any:
    show = fmt == "text" and sys.stderr.isatty() and opts.runs * opts.days >= 20_000
    try:
        if not show:
            return run_sim(pb, sc, opts)
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"simulating {opts.runs} runs", total=opts.runs)
            return run_sim(pb, sc, opts, progress=lambda n: bar.advance(task, n))
    except RuntimeError as e:  # executor problems: missing extra, unreachable scheduler
        _fail(str(e))
    except OSError as e:
        _fail(f"cannot reach the Dask scheduler at {opts.address}: {e}")


@main.command()
@click.argument("model", type=click.Choice(["retention", "acquisition", "activity"]))
@click.argument("csv_file", type=click.Path(dir_okay=False))
@click.option(
    "--period-days",
    type=float,
    help="Length of one period in the CSV, in days (default: 30 for retention, 1 otherwise).",
)
@click.option("--format", "fmt", default="yaml", type=click.Choice(["yaml", "json"]))
def calibrate(model: str, csv_file: str, period_days: float | None, fmt: str) -> None:
    """Fit a model to exported history and print a scenario fragment."""
    import json

    from engine.sim.calibrate import CALIBRATORS, CalibrationError

    period = period_days or (30.0 if model == "retention" else 1.0)
    try:
        fit = CALIBRATORS[model](csv_file, period)
    except CalibrationError as e:
        _fail(str(e))
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "model": fit.model,
                    "params": fit.params,
                    "n": fit.n,
                    "log_likelihood": fit.log_likelihood,
                    "rmse": fit.rmse,
                    "scenario": fit.fragment,
                },
                indent=2,
            )
        )
        return
    import yaml

    quality = (
        f"log-likelihood {fit.log_likelihood:.2f}"
        if fit.log_likelihood is not None
        else f"RMSE {fit.rmse:.3g}"
    )
    params = ", ".join(f"{k}={v:.4g}" for k, v in fit.params.items())
    click.echo(f"# {fit.model} fit on {fit.n} rows of {csv_file}: {params}; {quality}")
    click.echo(yaml.safe_dump(fit.fragment, sort_keys=False, allow_unicode=True), nl=False)


if __name__ == "__main__":
    main()
