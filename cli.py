"""The `sop` command line: parse options, call the engine, render. Nothing else lives here."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click
from sop.engine.core.formats import GraphFormat, PlanFormat, TextOrJson, ValidateFormat, choices
from sop.engine.core.timeutil import MAX_HORIZON_DAYS

# click's parameter types hold no state, and each `click.Path()` looks its name up in gettext's
# catalogues on disk (0.1 ms): one instance of each kind serves every option.
_PATH = click.Path()
_FILE = click.Path(dir_okay=False)


def _color(stream: Any) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def _fail(message: str) -> NoReturn:
    from sop.engine.core.status import ExitCode

    click.echo(f"sop: error: {message}", err=True)
    raise SystemExit(ExitCode.USAGE)


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """An engine UsageError (an option or input it cannot use) ends as `sop: error:`, exit 2."""
    from sop.engine.core.status import UsageError

    try:
        yield
    except UsageError as e:
        _fail(e.message)


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from sop.engine.core.version import version

    click.echo(f"sop, version {version()}")
    ctx.exit()


_ROOT_HELP = (
    "Folder that every file read (includes, scenario) must stay inside"
    " (default: the playbook's folder; for a folder argument of validate, that folder)."
)


def _root_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--root", "root", metavar="DIR", help=_ROOT_HELP)(fn)


_STATE_HELP = "State store URL (default: $SOP_STATE, else sqlite:///.sop/state.db)."
_PLAYBOOK_HELP = "The playbook of the run (default: $SOP_PLAYBOOK)."


def _state_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--state", "state", metavar="URL", help=_STATE_HELP)(fn)


def _playbook_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-p", "--playbook", "playbook", envvar="SOP_PLAYBOOK", required=True,
        type=click.Path(dir_okay=False), help=_PLAYBOOK_HELP,
    )(fn)  # fmt: skip


def _check_root(root: str | None, paths: tuple[str, ...]) -> str | None:
    """`--root` must be a folder, and the paths named on the command line must lie in it."""
    if root is None:
        return None
    if not os.path.isdir(root):
        _fail(f"--root {root!r} is not a folder")
    from sop.engine.core.files import is_inside_by_name

    for p in paths:
        if not is_inside_by_name(p, root):
            _fail(f"{p!r} is outside --root {root!r}")
    return root


def _check_output(path: str | None, option: str) -> None:
    """An output path must be writable as a file: checked before any work starts."""
    if path is None:
        return
    from sop.engine.core.files import output_problem

    problem = output_problem(path)
    if problem:
        _fail(f"{option} {path!r}: {problem}")


def _write_file(path: str, data: str | bytes, option: str) -> None:
    try:
        with _open_output(path, isinstance(data, bytes)) as f:
            f.write(data)
    except OSError as e:
        _fail(f"{option} {path!r}: {e.strerror or e}")


class _Group(click.Group):
    """The `sop` group: an output that fails (full disk, closed pipe) ends any verb cleanly."""

    def invoke(self, ctx: click.Context) -> Any:
        with _stdout_errors():
            return super().invoke(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
def main() -> None:
    """Community-operations playbooks as code: validate, plan, simulate and run SOPs."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(choices(ValidateFormat)),
    help="Output format (default: text, or github when GITHUB_ACTIONS=true).",
)
@click.option("--strict", is_flag=True, help="Warnings fail too.")
@click.option("--no-plan-checks", is_flag=True, help="Skip workload/rate/frequency checks.")
@click.option(
    "--days",
    default=90,
    show_default=True,
    type=click.IntRange(1, MAX_HORIZON_DAYS),
    help=f"Horizon of the plan-based checks, 1 to {MAX_HORIZON_DAYS} days.",
)
@click.option("-o", "--output", type=_PATH, help="Write to a file.")
@_root_option
def validate(
    paths: tuple[str, ...],
    fmt: str | None,
    strict: bool,
    no_plan_checks: bool,
    days: int,
    output: str | None,
    root: str | None,
) -> None:
    """Check playbooks (files, folders, or - for standard input) and report located diagnostics.

    In a folder, YAML files that are not playbooks, fragments or scenarios are skipped.
    """
    # __main__.py runs plain `sop validate PATH...` lines without click (`_validate` there): a
    # change here goes there too; tests/test_startup.py compares the two on every kind of input.
    import gc

    gc.set_threshold(200_000, 20, 20)  # a short-lived process building acyclic trees
    from sop.engine.core.formats import default_validate_format
    from sop.engine.report import RENDERERS
    from sop.engine.validate import ValidateOptions, validate_report

    _check_output(output, "--output")
    root = _check_root(root, tuple(p for p in paths if p != "-"))
    fmt = fmt or default_validate_format(os.environ)
    opts = ValidateOptions(plan_checks=not no_plan_checks, plan_days=days, root=root, strict=strict)
    with _usage_errors():
        report = validate_report(paths, opts)
    if output:
        try:
            with _open_output(output, False) as stream:
                RENDERERS[fmt](report.results, stream, False)
        except OSError as e:
            _fail(f"--output {output!r}: {e.strerror or e}")
    else:
        with _stdout_errors():
            RENDERERS[fmt](report.results, sys.stdout, fmt == "text" and _color(sys.stdout))
    note = report.skipped_note()
    if note:
        click.echo(f"sop: note: {note}", err=True)
    raise SystemExit(report.exit_code)


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
    from sop.engine.lang.schema import schema_text

    click.echo(schema_text(f"{kind}.schema.json"), nl=False)


@main.command()
@click.option("--format", "fmt", type=click.Choice(choices(TextOrJson)), default="text")
def rules(fmt: str) -> None:
    """List every diagnostic code with its meaning and hint."""
    from sop.engine.core.diagnostics import all_rules
    from sop.engine.core.textsafe import dumps

    rs = all_rules()
    if fmt == "json":
        click.echo(dumps([r.as_dict() for r in rs]))
        return
    for r in rs:
        click.echo(f"{r.code}  {r.severity:<7}  {r.name:<22}  {r.summary}")


@main.command()
@click.option("--format", "fmt", type=click.Choice(choices(TextOrJson)), default="text")
def metrics(fmt: str) -> None:
    """List every built-in metric: meaning, unit, range and when it is undefined."""
    from sop.engine.core.textsafe import dumps
    from sop.engine.program import metrics as defs

    click.echo(dumps(defs.table()) if fmt == "json" else defs.text_table(), nl=fmt == "json")


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
    type=_PATH,
    help="Existing folder where NAME.yaml (and fragments/ it includes) is written.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--format", "fmt", type=click.Choice(choices(TextOrJson)), default="text")
def init(name: str, template: str, directory: str, force: bool, fmt: str) -> None:
    """Scaffold a playbook NAME.yaml with the editor schema modeline."""
    from sop.engine.core.textsafe import dumps
    from sop.engine.lang.scaffold import ScaffoldError, scaffold

    try:
        path = scaffold(name, template, directory, force=force)
    except ScaffoldError as e:
        _fail(str(e))
    if fmt == "json":
        click.echo(dumps({"path": path, "template": template}, indent=None))
    else:
        click.echo(f"wrote {path}; next: sop validate {path}")


def _load(path: str, params: dict[str, Any] | None = None, root: str | None = None) -> Any:
    """A valid Playbook (files read inside `root`), or its diagnostics on stderr and exit 2."""
    from sop.engine.core.status import ExitCode
    from sop.engine.report import render_text
    from sop.engine.validate import load_playbook

    res = load_playbook(path, params, root=root)
    if res.playbook is None:
        render_text([res], sys.stderr, _color(sys.stderr))
        click.echo(
            f"sop: error: {path} is not a valid playbook (run `sop validate {path}`)", err=True
        )
        raise SystemExit(ExitCode.USAGE)
    return res.playbook


def _date(value: str | None) -> Any:
    from datetime import date

    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"--start must be a date such as 2026-12-01, not {value!r}")


def _joins(value: float | None) -> float | None:
    import math

    if value is not None and not (math.isfinite(value) and 0 <= value <= 1_000_000):
        _fail(f"--joins-per-day must be a number from 0 to 1,000,000, not {value}")
    return value


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


@main.command()
@click.argument("playbook", type=_FILE)
@click.option("--start", help="First day (YYYY-MM-DD, 1970 to 2199; default community.start).")
@click.option(
    "--days",
    default=30,
    show_default=True,
    type=click.IntRange(1, MAX_HORIZON_DAYS),
    help=f"Days to plan, 1 to {MAX_HORIZON_DAYS} (a plan holds at most 100,000 occurrences).",
)
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
@click.option(
    "--assume-exit",
    "assume_exit",
    multiple=True,
    metavar="STAGE=EXIT",
    help="The exit this stage takes, e.g. growth=decline (repeatable; default its first exit).",
)
@click.option(
    "--joins-per-day",
    type=float,
    callback=lambda ctx, param, value: _joins(value),
    help="Expected joins a day, for event-rule counts (0 to 1,000,000).",
)
@click.option("--include-optional", multiple=True, help="Enter this optional stage.")
@click.option(
    "--format",
    "fmt",
    default="table",
    show_default=True,
    type=click.Choice(choices(PlanFormat)),
)
@click.option("-o", "--output", type=_PATH, help="Write to a file.")
@_root_option
def plan(
    playbook: str,
    start: str | None,
    days: int,
    role: str | None,
    stage: str | None,
    assume_gates: str,
    failing: tuple[str, ...],
    assume_exit: tuple[str, ...],
    joins_per_day: float | None,
    include_optional: tuple[str, ...],
    fmt: str,
    output: str | None,
    root: str | None,
) -> None:
    """The calendar of every action and staff task."""
    from sop.engine.plan import render as render_plan
    from sop.engine.plan.timeline import PlanError, PlanOptions, make_plan, parse_assumed_exits
    from sop.engine.program import Program

    _check_output(output, "--output")
    from sop.engine.validate import check_plan_options

    pb = _load(playbook, root=_check_root(root, (playbook,)))
    with _usage_errors():
        check_plan_options(
            pb, role=role, stage=stage, failing=failing, include_optional=include_optional
        )
        exits = parse_assumed_exits(pb, assume_exit, assume_gates=assume_gates, failing=failing)
    opts = PlanOptions(
        start=_date(start),
        days=days,
        assume_gates=assume_gates,
        role=role,
        stage=stage,
        joins_per_day=joins_per_day,
        include_optional=include_optional,
        failing=failing,
        exits=exits,
    )
    try:
        tl = make_plan(Program(pb), opts)
    except PlanError as e:
        _fail(str(e))
    problem = render_plan.too_large(tl, fmt)
    if problem:
        _fail(problem)
    if fmt == "table" and not output:
        with _stdout_errors():
            render_plan.to_table(tl, _console())
    else:
        _write_plan(tl, fmt, output)
    from sop.engine.core.textsafe import terminal

    for action, why in sorted(tl.message_errors.items()):
        click.echo(terminal(f"sop: warning: {action}: text not rendered: {why}"), err=True)


def _write_plan(tl: Any, fmt: str, output: str | None) -> None:
    """Write the plan to the file or stdout as it is rendered (never one string of it all)."""
    from sop.engine.plan import render as render_plan

    def render(stream: Any) -> None:
        if fmt == "table":
            from rich.console import Console

            # not a terminal: plain text, as wide as a page
            render_plan.to_table(tl, Console(file=stream, width=120, color_system=None))
        else:
            writers: dict[str, Callable[[Any, Any], None]] = {
                "json": render_plan.write_json,
                "csv": render_plan.write_csv,
                "ics": render_plan.write_ics,
                "markdown": render_plan.write_markdown,
            }
            writers[fmt](tl, stream)

    binary = fmt == "ics"
    if output:
        try:
            with _open_output(output, binary) as f:
                render(f)
        except OSError as e:
            _fail(f"--output {output!r}: {e.strerror or e}")
        click.echo(f"wrote {output}", err=True)
        return
    with _stdout_errors():
        render(sys.stdout.buffer if binary else sys.stdout)


def _open_output(path: str, binary: bool) -> Any:
    from sop.engine.core.files import open_output

    return open_output(path, binary=binary)


@contextlib.contextmanager
def _stdout_errors() -> Iterator[None]:
    """A stdout that fails (a closed pipe, a full disk) ends the command cleanly, no traceback."""
    try:
        yield
        sys.stdout.flush()
    except OSError as e:
        if e.filename is not None:  # a named file, not the output stream
            _fail(f"{e.filename}: {e.strerror or e}")
        # nothing more can go there, not even when Python flushes it again at exit
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(e, BrokenPipeError):
            from sop.engine.core.status import ExitCode

            # the reader went away (`sop plan | head`): the output is incomplete, not an error
            raise SystemExit(ExitCode.FINDINGS) from None
        _fail(f"cannot write to stdout: {e.strerror or e}")


@main.command()
@click.argument("playbook", type=_FILE)
@click.option(
    "--format",
    "fmt",
    default="mermaid",
    show_default=True,
    type=click.Choice(choices(GraphFormat)),
)
@click.option("--no-actions", is_flag=True, help="Stages only.")
@_root_option
def graph(playbook: str, fmt: str, no_actions: bool, root: str | None) -> None:
    """The stage graph (gates, exits as labelled edges, goto edges) and action dependencies."""
    from sop.engine.core.textsafe import dumps
    from sop.engine.plan import graph as g

    pb = _load(playbook, root=_check_root(root, (playbook,)))
    with _stdout_errors():
        if fmt == "json":
            click.echo(dumps(g.graph_dict(pb)))
        else:
            click.echo((g.mermaid if fmt == "mermaid" else g.dot)(pb, not no_actions), nl=False)


@main.command()
@click.argument("old", type=_FILE)
@click.argument("new", type=_FILE)
@click.option(
    "--start", help="First day of the compared plans (1970 to 2199; default community.start)."
)
@click.option(
    "--days",
    default=30,
    show_default=True,
    type=click.IntRange(1, MAX_HORIZON_DAYS),
    help=f"Days of each plan compared, 1 to {MAX_HORIZON_DAYS}.",
)
@click.option("--format", "fmt", default="text", type=click.Choice(choices(TextOrJson)))
@_root_option
def diff(old: str, new: str, start: str | None, days: int, fmt: str, root: str | None) -> None:
    """Semantic diff of two playbook versions and its effect on the calendar (exit 1 if any)."""
    from sop.engine.core.textsafe import dumps
    from sop.engine.plan.diff import diff as make_diff
    from sop.engine.plan.diff import diff_text
    from sop.engine.plan.timeline import PlanError

    root = _check_root(root, (old, new))
    try:
        d = make_diff(_load(old, root=root), _load(new, root=root), _date(start), days)
    except PlanError as e:
        _fail(str(e))
    with _stdout_errors():
        if fmt == "json":
            click.echo(dumps(d.as_dict()))
        else:
            click.echo(diff_text(d), nl=False)
    raise SystemExit(d.exit_code)


def _scenario(pb: Any, path: str | None, sets: tuple[str, ...], root: str | None = None) -> Any:
    """The scenario, checked against the playbook: its diagnostics on stderr and exit 2."""
    from sop.engine.core.diagnostics import Diagnostic
    from sop.engine.core.status import ExitCode
    from sop.engine.report import render_text
    from sop.engine.sim.scenario import ScenarioError, load_scenario
    from sop.engine.validate import FileResult

    warnings: list[Diagnostic] = []
    try:
        sc = load_scenario(path, list(sets), root=root, playbook=pb, warnings=warnings)
    except ScenarioError as e:
        res = FileResult(path or "--set", e.diagnostics)
        if e.document is not None:
            res.documents[e.document.file] = e.document
        render_text([res], sys.stderr, _color(sys.stderr))
        raise SystemExit(ExitCode.USAGE) from None
    if warnings:
        render_text([FileResult(path or "--set", warnings)], sys.stderr, _color(sys.stderr))
    return sc


@main.command()
@click.argument("playbook", type=_FILE)
@click.option(
    "--scenario",
    "scenario_path",
    type=_FILE,
    help="Scenario file (default: scenarios/<playbook file> beside the playbook if present,"
    " else the built-in seed-document figures).",
)
@click.option("--runs", default=200, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--days", default=180, show_default=True, type=click.IntRange(1, 3650))
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2**63 - 1),
    help="Root seed of the runs (0 to 2^63-1); the same seed gives the same result.",
)
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
@click.option(
    "--address",
    callback=lambda _c, _p, v: _dask_address(v),
    help="Dask scheduler, tcp://HOST:PORT (with --executor dask).",
)
@click.option(
    "--max-memory-mib",
    type=click.IntRange(64, 1 << 20),
    default=1536,
    show_default=True,
    envvar="SOP_MAX_MEMORY_MIB",
    help="Memory budget of each worker and of the collected results, in MiB (env"
    " SOP_MAX_MEMORY_MIB); a simulation estimated to need more stops before it starts.",
)
@click.option("--report", type=_PATH, help="Write an HTML report here.")
@click.option(
    "--save-forecast", is_flag=True,
    help="Keep this forecast in the state store (--state) for the dashboard's forecast vs actual.",
)  # fmt: skip
@_state_option
@click.option(
    "--min-probability",
    type=click.FloatRange(0, 1),
    help="Exit 1 if any gate's P(pass by its deadline) is below this (runs left undecided by"
    " the horizon count as not passing).",
)
@click.option(
    "--expect-tolerance",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Exit 1 only if expect: invariants break in more than this share of runs, at 95%"
    " confidence (0: any break).",
)
@click.option(
    "--sensitivity",
    is_flag=True,
    help="Also print which drawn scenario parameter moves each gate most (parameters given as"
    " distributions; JSON always has `sensitivity`).",
)
@click.option("--format", "fmt", default="text", type=click.Choice(choices(TextOrJson)))
@_root_option
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
    expect_tolerance: float,
    fmt: str,
    root: str | None,
    max_memory_mib: int,
    save_forecast: bool,
    state: str | None,
    sensitivity: bool,
) -> None:
    """Monte Carlo forecast of the metrics and of every gate's pass probability.

    \b
    Exit codes:
      0  the forecast ran and neither reason for 1 holds
      1  an expect: invariant broke in more than --expect-tolerance of the runs (at 95%
         confidence), or a gate's P(pass by its deadline) is below --min-probability
      2  usage or input error: a bad option, playbook or scenario, or over the memory budget
    """
    from sop.engine.core.textsafe import dumps
    from sop.engine.sim.montecarlo import SimOptions
    from sop.engine.sim.montecarlo import simulate as run_sim

    _check_output(report, "--report")
    root = _check_root(root, (playbook,) + ((scenario_path,) if scenario_path else ()))
    pb = _load(playbook, root=root)
    if executor == "dask" and not address:
        _fail("--executor dask needs --address tcp://HOST:PORT")
    scenario_root = root  # a --scenario named on the command line: its own folder by default
    if scenario_path is None:
        from sop.engine.core.files import default_root
        from sop.engine.sim.scenario import scenario_beside

        scenario_path = scenario_beside(playbook)
        if scenario_path is not None:  # read inside the playbook's root, as the playbook is
            scenario_root = root or default_root(playbook)
            click.echo(f"using scenario {scenario_path}", err=True)
    opts = SimOptions(
        runs=runs,
        days=days,
        seed=seed,
        workers=workers or os.cpu_count() or 1,
        executor=executor,
        address=address,
        memory_budget_mib=max_memory_mib,
    )
    if sweeps:
        from sop.engine.sim.montecarlo import Sweep
        from sop.engine.sim.scenario import sweep_values

        # every swept scenario is read and its memory estimated before the first run starts
        swept = []
        with _usage_errors():
            combos = sweep_values(sweeps)
        for values in combos:
            more = (*sets, *(f"{k}={v}" for k, v in values.items()))
            swept.append((values, _sim_scenario(pb, scenario_path, more, scenario_root, opts)))
        sweep = Sweep([(values, _run_sim(run_sim, pb, sc, opts, fmt)) for values, sc in swept])
        if fmt == "json":
            click.echo(dumps(sweep.as_dict()))
        else:
            from sop.engine.sim.render import sweep_table

            sweep_table(sweep.rows, _console())
        raise SystemExit(sweep.exit_code(min_probability, expect_tolerance))
    sc = _sim_scenario(pb, scenario_path, sets, scenario_root, opts)
    res = _run_sim(run_sim, pb, sc, opts, fmt)
    if save_forecast:
        from datetime import UTC, datetime

        store = _store(state)
        with _runtime_errors():
            store.save_forecast(pb.id, datetime.now(UTC), res.forecast(pb))
        store.close()
        click.echo(f"saved the forecast in {store.url}", err=True)
    if report:
        from sop.engine.sim.render import to_html

        html = to_html(res, pb, min_probability=min_probability, expect_tolerance=expect_tolerance)
        _write_file(report, html, "--report")
        click.echo(f"wrote {report}", err=True)
    if fmt == "json":
        doc = res.as_dict(min_probability=min_probability, expect_tolerance=expect_tolerance)
        click.echo(dumps(doc, indent=None))
    else:
        from sop.engine.sim.render import to_text

        to_text(res, _console(), min_probability=min_probability, expect_tolerance=expect_tolerance)
        if sensitivity:
            from sop.engine.sim.uncertainty import sensitivity_table

            click.echo(sensitivity_table(res.sensitivity), nl=False)
    raise SystemExit(res.exit_code(min_probability, expect_tolerance))


def _dask_address(value: str | None) -> str | None:
    """A Dask scheduler address `tcp://HOST:PORT` (or tls://), checked before anything runs."""
    import re

    if value is None:
        return None
    m = re.fullmatch(r"(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})", value)
    if m is None or not 1 <= int(m.group(3)) <= 65535:
        raise click.BadParameter(f"{value!r} is not tcp://HOST:PORT (a port from 1 to 65535)")
    return value


def _sim_scenario(
    pb: Any, path: str | None, sets: tuple[str, ...], root: str | None, opts: Any
) -> Any:
    """The scenario, checked against the memory budget before any simulation starts."""
    from sop.engine.sim.kernel import SimulationTooLarge
    from sop.engine.sim.montecarlo import check_memory

    sc = _scenario(pb, path, sets, root)
    try:
        check_memory(pb, sc, opts)
    except SimulationTooLarge as e:
        _fail(str(e))
    return sc


def _run_sim(run_sim: Any, pb: Any, sc: Any, opts: Any, fmt: str) -> Any:
    from sop.engine.sim.kernel import SimulationTooLarge

    show = fmt == "text" and sys.stderr.isatty() and opts.runs * opts.days >= 20_000
    from sop.engine.sim import fused

    if sys.stderr.isatty() and not fused.compiled_before():  # a person waits: say why
        print(
            "sop: compiling the simulator's day (once per installation, about 10 s)",
            file=sys.stderr,
        )
    try:
        if not show:
            return run_sim(pb, sc, opts)
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"simulating {opts.runs} runs", total=opts.runs)
            return run_sim(pb, sc, opts, progress=lambda n: bar.advance(task, n))
    except SimulationTooLarge as e:  # a run outgrew the budget the estimate foresaw
        _fail(str(e))
    except MemoryError:  # a budget raised past what the machine (or its ulimit) can give
        _fail(
            "out of memory while simulating; lower --runs, --days or the scenario's sizes, or"
            f" --max-memory-mib (now {opts.memory_budget_mib:,}) to what this machine has"
        )
    except RuntimeError as e:  # executor problems: missing extra, unreachable scheduler
        _fail(str(e))
    except OSError as e:
        _fail(f"cannot reach the Dask scheduler at {opts.address}: {e}")


_PERIOD_HELP = (
    "Length of one period of the export in days (more than 0, at most 3650): required, no"
    " default; retention and acquisition infer it from a `date` column instead of `period`."
)
_COMMUNITY_ONLY = (
    "as_of", "activity_file", "holdout", "bootstrap", "already_running", "output", "market",
)  # fmt: skip


def _day(value: str | None, option: str) -> int | None:
    """A date option (YYYY-MM-DD or YYYY/MM/DD) as an ordinal day."""
    if value is None:
        return None
    from sop.engine.sim.community_data import parse_date

    day = parse_date(value)
    if day is None:
        _fail(f"{option} must be a date such as 2025-02-28, not {value!r}")
    return day


def _period_days(value: float | None, what: str) -> float:
    """--period-days, which calibrate community and backtest need: a wrong default would skew
    every fitted rate, so there is none."""
    if value is None:
        _fail(
            f"--period-days is required: the length in days of {what} (e.g. 30 for months,"
            " 7 for weeks); it has no default"
        )
    return value


def _action_ids(value: str | None) -> tuple[str, ...]:
    import re

    ids = tuple(x.strip() for x in (value or "").split(",") if x.strip())
    for i in ids:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", i):
            _fail(f"--already-running: {i!r} is not an action id (a-z, 0-9, - and _)")
    return ids


@main.command()
@click.argument("model", type=click.Choice(["retention", "acquisition", "activity", "community"]))
@click.argument("csv_file", type=_FILE)
@click.option("--period-days", type=click.FloatRange(0, 3650, min_open=True), help=_PERIOD_HELP)
@click.option("--as-of", "as_of", help="community: the day the history is read at (required).")
@click.option(
    "--activity",
    "activity_file",
    type=_FILE,
    help="community: activity export (member_id, date or period, count).",
)
@click.option(
    "--holdout",
    type=click.IntRange(1, 100_000),
    help="community: periods held out to choose the retention model (default: last 20 %, >= 2).",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(0, 1000),
    help="community: bootstrap draws of the retention forecast mixture for the scenario"
    " (retention.draws, as `sop backtest` forecasts); without, the single best model.",
)
@click.option(
    "--already-running",
    "already_running",
    metavar="IDS",
    help="community: ids of the playbook's actions the history already ran (comma-separated).",
)
@click.option(
    "--market",
    type=click.FloatRange(1, 1e12),
    help="community: the market size m, if known (Bass p and q are fitted with it).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="community: bootstrap seed.")
@click.option("-o", "--output", type=_PATH, help="community: write the scenario to this file.")
@click.option("--format", "fmt", default="yaml", type=click.Choice(["yaml", "json"]))
def calibrate(
    model: str,
    csv_file: str,
    period_days: float | None,
    as_of: str | None,
    activity_file: str | None,
    holdout: int | None,
    bootstrap: int | None,
    already_running: str | None,
    market: float | None,
    seed: int,
    output: str | None,
    fmt: str,
) -> None:
    """Fit a model to exported history and print a scenario fragment (or, for `community`, a
    whole scenario from a members export)."""
    if model != "community":
        given = dict(
            as_of=as_of, activity_file=activity_file, holdout=holdout, bootstrap=bootstrap,
            already_running=already_running, output=output, market=market,
        )  # fmt: skip
        for name in _COMMUNITY_ONLY:
            if given[name] is not None:
                flag = name.replace("_", "-").replace("-file", "")
                _fail(f"--{flag} applies to `calibrate community`")
        _print_fit(model, csv_file, period_days, fmt)
        return
    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.sim.calibrate import CalibrationError
    from sop.engine.sim.community_fit import CommunityOptions, calibrate_community

    period = _period_days(period_days, "one period of retention")
    day = _day(as_of, "--as-of")
    if day is None:
        _fail("--as-of is required: the day the history is read at, e.g. the export's date")
    _check_output(output, "--output")
    opts = CommunityOptions(
        period_days=period,
        as_of=day,
        holdout=holdout,
        bootstrap=bootstrap or 0,
        already_running=_action_ids(already_running),
        seed=seed,
        market=market,
    )
    try:
        res = calibrate_community(csv_file, opts, activity_path=activity_file)
    except CalibrationError as e:
        _fail(str(e))
    text = res.yaml_text()
    if output:
        _write_file(output, text, "--output")
    if fmt == "json":
        click.echo(dumps(res.as_dict(), indent=2))
    elif output:
        r = res.retention
        click.echo(
            terminal(
                f"wrote {output}: retention "
                + (
                    f"{r.mixture.label()} ({len(r.mixture.models)} draws, as `sop backtest`"
                    " forecasts)"
                    if r.mixture is not None
                    else f"{r.chosen} (chosen on the last {r.holdout_periods} periods; give"
                    " --bootstrap N for the forecast mixture)"
                )
                + f", {len(res.warnings)} warning(s)"
            )
        )
    else:
        click.echo(text, nl=False)
    if fmt != "json":  # JSON carries them
        for w in res.warnings:
            click.echo(terminal(f"sop: warning: {w}"), err=True)
    raise SystemExit(res.exit_code)


def _print_fit(model: str, csv_file: str, period_days: float | None, fmt: str) -> None:
    """One model's fit (`calibrate retention|acquisition|activity`) as a scenario fragment."""
    from sop.engine.core.textsafe import dumps
    from sop.engine.sim.calibrate import CALIBRATORS, CalibrationError

    try:
        fit = CALIBRATORS[model](csv_file, period_days)
    except CalibrationError as e:
        _fail(str(e))
    if fmt == "json":
        click.echo(
            dumps(
                {
                    "model": fit.model,
                    "params": fit.params,
                    "n": fit.n,
                    "log_likelihood": fit.log_likelihood,
                    "rmse": fit.rmse,
                    "scenario": fit.fragment,
                    "notes": list(fit.notes),
                    "warnings": list(fit.warnings),
                    **(fit.extra or {}),
                },
                indent=2,
            )
        )
        return
    import yaml
    from sop.engine.core.textsafe import terminal

    quality = (
        f"log-likelihood {fit.log_likelihood:.2f}"
        if fit.log_likelihood is not None
        else f"RMSE {fit.rmse:.3g}"
    )
    params = ", ".join(f"{k}={v:.4g}" for k, v in fit.params.items())
    click.echo(terminal(f"# {fit.model} fit on {fit.n} rows of {csv_file}: {params}; {quality}"))
    for w in fit.warnings:  # comments, so the output stays a valid scenario fragment
        click.echo(terminal(f"# WARNING: {w}"))
    for n in fit.notes:
        click.echo(terminal(f"# {n}"))
    click.echo(yaml.safe_dump(fit.fragment, sort_keys=False, allow_unicode=True), nl=False)


@main.command()
@click.argument("members_file", type=_FILE)
@click.option("--cutoff", help="Fit on the history up to this day (YYYY-MM-DD; required).")
@click.option("--period-days", type=click.FloatRange(0, 3650, min_open=True), help=_PERIOD_HELP)
@click.option(
    "--activity",
    "activity_file",
    type=_FILE,
    help="Activity export (member_id, date or period, count).",
)
@click.option("--as-of", "as_of", help="Last day of the export (default: its latest date).")
@click.option("--runs", type=click.IntRange(1, 10_000), default=200, show_default=True)
@click.option(
    "--holdout",
    type=click.IntRange(1, 100_000),
    help="Periods before the cutoff held out to weigh the retention models (default: 20 %).",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(1, 1000),
    default=200,
    show_default=True,
    help="Bootstrap draws of the retention forecast mixture, shared among the models by their"
    " forecast weights (what `calibrate community --bootstrap` writes); runs use them in turn.",
)
@click.option(
    "--bucket",
    type=click.IntRange(1, 1000),
    default=12,
    show_default=True,
    help="Periods per horizon bucket of the scores.",
)
@click.option(
    "--market",
    type=click.FloatRange(1, 1e12),
    help="The market size m, if known: Bass p and q are fitted with it (default: m from its"
    " profile likelihood).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(choices(TextOrJson)), default="text")
def backtest(
    members_file: str,
    cutoff: str | None,
    period_days: float | None,
    activity_file: str | None,
    as_of: str | None,
    runs: int,
    holdout: int | None,
    bootstrap: int,
    bucket: int,
    market: float | None,
    seed: int,
    fmt: str,
) -> None:
    """Fit a community's history up to a cutoff, forecast the rest, score it (MAPE, coverage)."""
    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.sim.backtest import BacktestOptions
    from sop.engine.sim.backtest import backtest as run
    from sop.engine.sim.calibrate import CalibrationError

    period = _period_days(period_days, "one period")
    cut = _day(cutoff, "--cutoff")
    if cut is None:
        _fail("--cutoff is required: the last day of the history to fit")
    opts = BacktestOptions(
        period_days=period,
        cutoff=cut,
        end=_day(as_of, "--as-of"),
        runs=runs,
        seed=seed,
        holdout=holdout,
        bucket=bucket,
        draws=bootstrap,
        market=market,
    )
    try:
        res = run(members_file, opts, activity_path=activity_file)
    except CalibrationError as e:
        _fail(str(e))
    if fmt == "json":
        click.echo(dumps(res.as_dict(), indent=2))
    else:
        click.echo("\n".join(terminal(line) for line in res.text().split("\n")))
    raise SystemExit(res.exit_code)


# -- the runtime: run, tick, event(s), tasks, status, resolve, serve -----------------------------


def _actor() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return os.environ.get("SOP_ACTOR") or f"{user}@{socket.gethostname()}"


@contextlib.contextmanager
def _runtime_errors() -> Iterator[None]:
    """What the runtime cannot do as asked ends as `sop: error:`, exit 2 — never a traceback."""
    from sop.engine.run.members import EventError
    from sop.engine.run.runner import RunError
    from sop.engine.run.store import StoreError

    try:
        yield
    except (RunError, StoreError, EventError) as e:
        _fail(str(e))
    except ValueError as e:  # backends, metric sources, times: messages for the operator
        _fail(str(e))


def _store(url: str | None) -> Any:
    from sop.engine.run.store import default_url, open_store

    with _runtime_errors():
        return open_store(url or default_url())


def _program(path: str, root: str | None = None) -> Any:
    from sop.engine.program import Program

    return Program(_load(path, root=root))


def _instant(value: str | None, tz: Any, option: str) -> Any:
    from sop.engine.run.members import parse_instant

    if value is None:
        return None
    try:
        return parse_instant(value, tz)
    except ValueError as e:
        _fail(f"{option}: {e}")


def _run_options(run_id: str | None, start: Any, grace: str, coalesce: str, batch: int) -> Any:
    from sop.engine.core.timeutil import parse_duration
    from sop.engine.run.runner import Coalesce, RunOptions

    try:
        grace_td = parse_duration(grace)
    except ValueError:
        _fail(f"--grace must be a duration such as 6h or 30m, not {grace!r}")
    return RunOptions(
        run_id=run_id,
        start=start,
        grace=grace_td,
        coalesce=Coalesce(coalesce),
        batch=batch,
    )


def _report_line(report: Any) -> str:
    parts = [
        f"{n} {label}"
        for n, label in (
            (report.sent, "sent"), (report.retried, "retrying"), (report.dead, "dead"),
            (report.uncertain, "uncertain"), (report.skipped, "skipped"),
            (report.deferred, "deferred"), (report.escalated, "tasks overdue"),
            (report.expanded, "fanned out to members"),
        )
        if n
    ]  # fmt: skip
    for t in report.transitions:
        parts.append(f"{t.stage} {t.event}" + (f" (exit {t.exit})" if t.exit else ""))
    for i in report.incidents:
        parts.append(f"incident {i} opened (detected)")
    for e in report.source_errors:
        parts.append(f"metric source failed: {e}")
    return ", ".join(parts)


def _report_dict(report: Any) -> dict[str, Any]:
    return {
        "at": report.at.isoformat(),
        "sent": report.sent,
        "retrying": report.retried,
        "dead": report.dead,
        "uncertain": report.uncertain,
        "resent": report.resent,
        "skipped": report.skipped,
        "deferred": report.deferred,
        "stale": report.stale,
        "tasks_overdue": report.escalated,
        "expanded": report.expanded,
        "incidents_opened": report.incidents,
        "transitions": [
            {
                "at": t.at.isoformat(),
                "stage": t.stage,
                "event": t.event,
                "exit": t.exit,
                "evidence": t.evidence,
            }
            for t in report.transitions
        ],
        "metric_source_errors": report.source_errors,
        "next_wake": report.next_wake.isoformat() if report.next_wake else None,
    }


def _runner_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        _state_option,
        click.option("--run", "run_id", help="Run id (default: the playbook id)."),
        click.option(
            "--backend", "routes", multiple=True, metavar="NAME=TYPE[:TARGET]",
            help="Route a backend (or * for all), e.g. '*=jsonl:out.jsonl' (repeatable).",
        ),
        click.option(
            "--metrics", "sources", multiple=True, metavar="TYPE:SPEC",
            help="A metric source: csv:FILE, json:FILE, sql:URL;QUERY, http(s)://URL (repeatable).",
        ),
        click.option("--grace", default="6h", show_default=True,
                     help="A scheduled firing later than this is missed (see --coalesce)."),
        click.option("--coalesce", default="latest", show_default=True,
                     type=click.Choice(["latest", "all", "skip"]),
                     help="Missed firings: send the latest of each action, all, or none."),
        click.option("--batch", default=200, show_default=True, type=click.IntRange(1, 10_000),
                     help="Occurrences claimed and recorded per transaction."),
        click.option("--format", "fmt", default="text", type=click.Choice(choices(TextOrJson))),
        _root_option,
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _open_runner(
    program: Any, state: str | None, clock: Any, routes: tuple[str, ...],
    sources: tuple[str, ...], options: Any, root: str | None,
) -> Any:  # fmt: skip
    """The runner of `run` and `tick`: the state store, the routed backends and metric sources."""
    from sop.engine.run.service import open_runner

    store = _store(state)
    with _runtime_errors():
        return open_runner(
            program, store, clock, routes=routes, metric_sources=sources, options=options,
            root=root or os.getcwd(),
        )  # fmt: skip


@main.command()
@click.argument("playbook", type=click.Path(dir_okay=False))
@click.option(
    "--clock", "clock_kind", default="real", show_default=True,
    type=click.Choice(["real", "virtual"]),
    help="virtual: jump from one due instant to the next (dry runs, tests).",
)  # fmt: skip
@click.option(
    "--from", "start", help="Start: a date or ISO date-time (playbook zone unless offset)."
)
@click.option("--until", help="Stop when the clock reaches this instant (exclusive).")
@_runner_options
def run(
    playbook: str, clock_kind: str, start: str | None, until: str | None, state: str | None,
    run_id: str | None, routes: tuple[str, ...], sources: tuple[str, ...], grace: str,
    coalesce: str, batch: int, fmt: str, root: str | None,
) -> None:  # fmt: skip
    """Run a playbook: deliver its actions, durably, until --until (or Ctrl-C)."""
    import signal

    from sop.engine.core.textsafe import dumps
    from sop.engine.run.clock import RealClock, VirtualClock
    from sop.engine.run.service import close_runner

    program = _program(playbook, root)
    t0 = _instant(start, program.tz, "--from")
    t1 = _instant(until, program.tz, "--until")
    if clock_kind == "virtual" and t1 is None:
        _fail("--clock virtual needs --until (a virtual clock would run on forever)")
    clock: Any = RealClock()
    if clock_kind == "virtual":
        from sop.engine.core.schedule import local_midnight
        from sop.engine.program import start_date

        clock = VirtualClock(t0 or local_midnight(start_date(program.playbook), program.tz))
    options = _run_options(run_id, t0.astimezone(program.tz).date() if t0 else None, grace,
                           coalesce, batch)  # fmt: skip
    runner = _open_runner(program, state, clock, routes, sources, options, root)
    stopping = []

    def stop(_sig: int, _frame: Any) -> None:
        stopping.append(True)
        if hasattr(clock, "wake"):
            clock.wake()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def show(report: Any) -> None:
        line = _report_line(report)
        if line and fmt == "text":
            click.echo(f"{report.at.astimezone(program.tz).isoformat()}  {line}")

    try:
        with _runtime_errors():
            total = runner.run(t1, on_tick=show, should_stop=lambda: bool(stopping))
    finally:
        close_runner(runner)
    if fmt == "json":
        click.echo(dumps(_report_dict(total), indent=2))
    else:
        click.echo(
            f"run {runner.run_id}: stopped at {clock.now().astimezone(program.tz).isoformat()}"
            f"; {_report_line(total) or 'nothing to do'}",
            err=True,
        )


@main.command()
@click.argument("playbook", type=click.Path(dir_okay=False))
@click.option("--at", "at", help="Process as of this instant (default: now).")
@_runner_options
def tick(
    playbook: str, at: str | None, state: str | None, run_id: str | None,
    routes: tuple[str, ...], sources: tuple[str, ...], grace: str, coalesce: str, batch: int,
    fmt: str, root: str | None,
) -> None:  # fmt: skip
    """Process what is due now and exit (for cron, systemd timers, CronJobs)."""
    from sop.engine.core.textsafe import dumps
    from sop.engine.run.clock import RealClock, VirtualClock
    from sop.engine.run.service import close_runner

    program = _program(playbook, root)
    t = _instant(at, program.tz, "--at")
    clock: Any = VirtualClock(t) if t is not None else RealClock()
    options = _run_options(run_id, None, grace, coalesce, batch)
    runner = _open_runner(program, state, clock, routes, sources, options, root)
    try:
        with _runtime_errors():
            report = runner.tick()
    finally:
        close_runner(runner)
    if fmt == "json":
        click.echo(dumps(_report_dict(report), indent=2))
    else:
        click.echo(_report_line(report) or "nothing was due")


def _data(items: tuple[str, ...], option: str = "--data") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            _fail(f"{option} must be NAME=VALUE, not {item!r}")
        out[key] = value
    return out


def _ingest(
    program: Any, store: Any, run_id: str | None, events: list[Any], fmt: str,
    where: dict[str, str] | None = None,
) -> None:  # fmt: skip
    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.run.service import record_events

    with _runtime_errors():
        done = record_events(program, store, run_id or program.playbook.id, events, _actor(),
                             where)  # fmt: skip
    if fmt == "json":
        click.echo(dumps(done.as_dict()))
    else:
        new = done.accepted
        click.echo(f"{new} new event{'s' * (new != 1)}, {done.duplicates} already recorded")
        for event_id, why in done.refused.items():
            at = done.where.get(event_id) or f"event {event_id}"
            click.echo(f"{terminal(at)}: refused: {terminal(why)}", err=True)
    raise SystemExit(done.exit_code)


@main.command()
@click.argument("event_type", metavar="TYPE")
@click.option("--member", required=True, help="The member's id on the platform.")
@click.option("--at", "at", help="When it happened (default: now).")
@click.option("--id", "event_id", help="The event's id (default: derived from what it says).")
@click.option(
    "--data", "data", multiple=True, metavar="NAME=VALUE", help="Event data (repeatable)."
)
@click.option(
    "--attr", "attrs", multiple=True, metavar="NAME=VALUE",
    help="A member attribute (joined, apply, update; repeatable), read as its declared type.",
)  # fmt: skip
@_playbook_option
@_state_option
@click.option("--run", "run_id", help="Run id (default: the playbook id).")
@click.option("--format", "fmt", default="text", type=click.Choice(choices(TextOrJson)))
def event(
    event_type: str, member: str, at: str | None, event_id: str | None, data: tuple[str, ...],
    attrs: tuple[str, ...], playbook: str, state: str | None, run_id: str | None, fmt: str,
) -> None:  # fmt: skip
    """Record one member event (joined, left, message, post, checkin, activity, apply, update,
    redeem, ...); exit 1 when it is refused (a redemption the balance cannot cover)."""
    from datetime import UTC, datetime

    from sop.engine.run.service import parse_events

    program = _program(playbook)
    obj: dict[str, Any] = {"type": event_type, "member": member, "data": _data(data)}
    if attrs:
        obj["attributes"] = _data(attrs, "--attr")
    if at is not None:
        obj["at"] = at
    if event_id is not None:
        obj["id"] = event_id
    with _runtime_errors():
        events = parse_events(program, [obj], datetime.now(UTC), require_id=False)
    _ingest(program, _store(state), run_id, events, fmt)


@main.group()
def events() -> None:
    """Member events in bulk."""


@events.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@_playbook_option
@_state_option
@click.option("--run", "run_id", help="Run id (default: the playbook id).")
@click.option("--format", "fmt", default="text", type=click.Choice(choices(TextOrJson)))
def events_import(
    file: str, playbook: str, state: str | None, run_id: str | None, fmt: str
) -> None:
    """Import events from a JSON-lines file (one event object a line; all or nothing)."""
    import json
    from datetime import UTC, datetime

    from sop.engine.run.members import EventError, parse_event

    program = _program(playbook)
    received = datetime.now(UTC)
    parsed, problems, where = [], [], {}
    try:
        stream = sys.stdin if file == "-" else open(file, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        _fail(f"{file}: {e.strerror or e}")
    with stream:
        try:
            for n, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    e_ = parse_event(json.loads(line), program.tz, received, pb=program.playbook)
                    parsed.append(e_)
                    where[e_.id] = f"{file}:{n}"
                except json.JSONDecodeError as e:
                    problems.append(f"{file}:{n}:{e.colno}: not JSON: {e.msg}")
                except EventError as e:
                    problems.append(f"{file}:{n}: {e}")
        except UnicodeDecodeError:
            _fail(f"{file} is not UTF-8 text")
    if problems:
        for p in problems[:20]:
            click.echo(p, err=True)
        more = len(problems) - 20
        _fail(f"{len(problems)} bad line(s){f' ({more} more not shown)' if more > 0 else ''};"
              " nothing was imported")  # fmt: skip
    _ingest(program, _store(state), run_id, parsed, fmt, where)


def _run_context(
    fn: Callable[..., Any],
) -> Callable[..., Any]:
    """--playbook, --state, --run and --format of a group; its subcommands read them through
    `_context` (the group itself ignores them: `**_options`)."""
    for option in reversed([
        _playbook_option,
        _state_option,
        click.option("--run", "run_id", help="Run id (default: the playbook id)."),
        click.option("--format", "fmt", default="text", type=click.Choice(choices(TextOrJson))),
    ]):  # fmt: skip
        fn = option(fn)
    return fn


def _group_options(ctx: click.Context) -> dict[str, Any]:
    """The options of the `_run_context` group a command runs in (the group's own when it runs
    without a subcommand)."""
    return ctx.params if "playbook" in ctx.params or ctx.parent is None else ctx.parent.params


def _context(ctx: click.Context) -> tuple[Any, Any, str, str]:
    """(program, store, run id, format) from a `_run_context` group's options."""
    o = _group_options(ctx)
    program = _program(o["playbook"])
    return program, _store(o["state"]), o["run_id"] or program.playbook.id, o["fmt"]


@main.group(invoke_without_command=True)
@click.option("--role", help="Only this role's tasks.")
@click.option("--all", "show_all", is_flag=True, help="Done tasks too.")
@_run_context
@click.pass_context
def tasks(
    ctx: click.Context, role: str | None, show_all: bool, playbook: str, state: str | None,
    run_id: str | None, fmt: str,
) -> None:  # fmt: skip
    """Staff tasks: list them, or `done ID`, `postpone ID --to T`."""
    if ctx.invoked_subcommand is not None:
        return
    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.run.service import require_run, task_dict
    from sop.engine.run.store.base import TaskState

    program = _program(playbook)
    if role is not None and role not in program.playbook.roles:
        _fail(f"--role {role!r}: the playbook has no such role (roles: "
              f"{', '.join(program.playbook.roles)})")  # fmt: skip
    store = _store(state)
    rid = run_id or program.playbook.id
    with _runtime_errors():
        require_run(store, rid)
        rows = store.tasks(rid, role, None if show_all else [TaskState.OPEN])
    if fmt == "json":
        click.echo(dumps([task_dict(t, program.tz) for t in rows], indent=2))
        return
    if not rows:
        click.echo("no open tasks")
        return
    for t in rows:
        flag = "OVERDUE " if t.escalated_at and t.state == TaskState.OPEN else ""
        due = t.due_at.astimezone(program.tz).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{flag}{due}  [{t.role or '-'}]  {terminal(t.title)}  ({t.state})")
        click.echo(f"    id: {terminal(t.id)}")
        for line in terminal(t.text).splitlines()[:10]:
            click.echo(f"    | {line}")


def _task_change(ctx: click.Context, task_id: str, change: Callable[[Any, str, Any], bool]) -> None:
    from datetime import UTC, datetime

    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.run.service import require_run

    _, store, rid, fmt = _context(ctx)
    with _runtime_errors():
        require_run(store, rid)
        ok = change(store, rid, datetime.now(UTC))
    if not ok:
        _fail(f"no open task {terminal(task_id)!r} in run {rid!r} (see `sop tasks`)")
    if fmt == "json":
        click.echo(dumps({"task": task_id, "ok": True}))
    else:
        click.echo(f"task {terminal(task_id)}: done" if ctx.command.name == "done"
                   else f"task {terminal(task_id)}: postponed")  # fmt: skip


@tasks.command("done")
@click.argument("task_id", metavar="ID")
@click.pass_context
def tasks_done(ctx: click.Context, task_id: str) -> None:
    """Mark a task done."""
    _task_change(ctx, task_id, lambda s, rid, now: s.complete_task(rid, task_id, now, _actor()))


@tasks.command("postpone")
@click.argument("task_id", metavar="ID")
@click.option("--to", "to", required=True, help="The new due time (date or ISO date-time).")
@click.pass_context
def tasks_postpone(ctx: click.Context, task_id: str, to: str) -> None:
    """Move a task to a later time."""
    from zoneinfo import ZoneInfo

    program_tz = ZoneInfo(_load(_group_options(ctx)["playbook"]).timezone)
    when = _instant(to, program_tz, "--to")
    _task_change(ctx, task_id, lambda s, rid, now: s.postpone_task(rid, task_id, when, _actor()))


@main.command()
@_playbook_option
@_state_option
@click.option("--run", "run_id", help="Run id (default: the playbook id).")
@click.option("--format", "fmt", default="text", type=click.Choice(choices(TextOrJson)))
def status(playbook: str, state: str | None, run_id: str | None, fmt: str) -> None:
    """Where the run stands: stage, gates, next occurrences, failures, open tasks."""
    from datetime import UTC, datetime

    from sop.engine.core.status import ExitCode
    from sop.engine.core.textsafe import dumps
    from sop.engine.run import render

    program = _program(playbook)
    store = _store(state)
    with _runtime_errors():
        st = __import__("sop.engine.run.service", fromlist=["status"]).status(
            program, store, run_id or program.playbook.id, datetime.now(UTC)
        )
    if fmt == "json":
        click.echo(dumps(st.as_dict(), indent=2))
    else:
        click.echo(render.status_text(st), nl=False)
    raise SystemExit(ExitCode.FINDINGS if st.attention else ExitCode.OK)


@main.command()
@click.argument("key")
@click.option("--sent", "decision", flag_value="sent", help="It did go out: record it as sent.")
@click.option("--resend", "decision", flag_value="resend", help="Send it again.")
@click.option("--drop", "decision", flag_value="drop", help="Never send it.")
@_playbook_option
@_state_option
@click.option("--run", "run_id", help="Run id (default: the playbook id).")
@click.option("--format", "fmt", default="text", type=click.Choice(choices(TextOrJson)))
def resolve(
    key: str, decision: str | None, playbook: str, state: str | None, run_id: str | None, fmt: str
) -> None:
    """Decide an uncertain or dead occurrence: --sent, --resend or --drop."""
    from datetime import UTC, datetime

    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.run.service import occurrence_dict, require_run
    from sop.engine.run.store.base import Resolution

    if decision is None:
        _fail("say what happened: --sent, --resend or --drop")
    program = _program(playbook)
    store = _store(state)
    rid = run_id or program.playbook.id
    with _runtime_errors():
        require_run(store, rid)
        done = store.resolve(rid, key, Resolution(decision), datetime.now(UTC), _actor())
    if done is None:
        current = store.get_occurrence(rid, key)
        why = "no such occurrence" if current is None else f"it is {current.state}"
        _fail(f"cannot resolve {terminal(key)!r}: {why} (only uncertain or dead ones can be)")
    if fmt == "json":
        click.echo(dumps(occurrence_dict(done, program.tz), indent=2))
    else:
        click.echo(f"{terminal(key)}: {done.state}")


@main.group("members")
@_run_context
def members_cmd(**_options: Any) -> None:
    """Members: import attributes from a CSV, show one (PII attributes masked)."""


@members_cmd.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.pass_context
def members_import(ctx: click.Context, file: str) -> None:
    """Set members' attributes from a CSV: a member_id column and attribute columns (all or
    nothing; every bad cell is reported as FILE:LINE:COLUMN)."""
    import hashlib
    from datetime import UTC, datetime

    from sop.engine.run.service import read_members_csv, require_run

    program, store, rid, fmt = _context(ctx)
    try:
        raw = sys.stdin.buffer.read() if file == "-" else open(file, "rb").read()  # noqa: SIM115
    except OSError as e:
        _fail(f"{file}: {e.strerror or e}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _fail(f"{file} is not UTF-8 text")
    with _runtime_errors():
        require_run(store, rid)
    digest = hashlib.sha256(raw).hexdigest()[:12]
    events, problems = read_members_csv(program, text, datetime.now(UTC), digest)
    if problems:
        for p in problems[:20]:
            click.echo(p.text(file), err=True)
        more = len(problems) - 20
        _fail(f"{len(problems)} problem(s){f' ({more} more not shown)' if more > 0 else ''};"
              " nothing was imported")  # fmt: skip
    where = {e.id: f"{file}:{e.id.rpartition(':')[2]}" for e in events}
    _ingest(program, store, rid, events, fmt, where)


@members_cmd.command("show")
@click.argument("member")
@click.pass_context
def members_show(ctx: click.Context, member: str) -> None:
    """One member: join, source, team, points, application, attributes (PII masked)."""
    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.run.service import member_view

    program, store, rid, fmt = _context(ctx)
    with _runtime_errors():
        view = member_view(program, store, rid, member)
    if fmt == "json":
        click.echo(dumps(view, indent=2))
        return
    for k, v in view.items():
        if k == "attributes":
            for name, value in v.items():
                click.echo(f"  {terminal(name)}: {terminal(str(value))}")
        elif v not in (None, [], ""):
            click.echo(f"{k}: {terminal(str(v))}")


@main.group("applications", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Decided applications too.")
@_run_context
@click.pass_context
def applications_cmd(ctx: click.Context, show_all: bool, **_options: Any) -> None:
    """Applications to join (`admission:`): list them, or `approve|reject MEMBER [--note]`."""
    if ctx.invoked_subcommand is not None:
        return
    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.run.service import application_dict, require_run
    from sop.engine.run.store.base import ApplicationState

    program, store, rid, fmt = _context(ctx)
    with _runtime_errors():
        require_run(store, rid)
        rows = store.applications(rid, None if show_all else [ApplicationState.PENDING])
    if fmt == "json":
        click.echo(dumps([application_dict(a, program.tz) for a in rows], indent=2))
        return
    if not rows:
        click.echo("no applications waiting" if not show_all else "no applications")
        return
    for a in rows:
        when = a.applied_at.astimezone(program.tz).strftime("%Y-%m-%d %H:%M")
        by = f" by {terminal(a.decided_by)}" if a.decided_by else ""
        click.echo(f"{when}  {terminal(a.member)}  {a.state}{by}")


def _decide(ctx: click.Context, member: str, approve: bool, note: str | None) -> None:
    from datetime import UTC, datetime

    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.run.service import decide_application

    program, store, rid, fmt = _context(ctx)
    with _runtime_errors():
        done = decide_application(program, store, rid, member, approve, datetime.now(UTC),
                                  _actor(), note or "")  # fmt: skip
    verdict = "approved" if approve else "rejected"
    if fmt == "json":
        click.echo(dumps({"member": member, "decision": verdict, **done.as_dict()}))
    elif done.refused:
        for why in done.refused.values():
            click.echo(f"{terminal(member)}: refused: {terminal(why)}", err=True)
    else:
        click.echo(f"{terminal(member)}: {verdict}")
    raise SystemExit(done.exit_code)


@applications_cmd.command("approve")
@click.argument("member")
@click.option("--note", help="Why (kept with the decision).")
@click.pass_context
def applications_approve(ctx: click.Context, member: str, note: str | None) -> None:
    """Approve a pending application: member.approved, then the member joins."""
    _decide(ctx, member, True, note)


@applications_cmd.command("reject")
@click.argument("member")
@click.option("--note", help="Why (kept with the decision).")
@click.pass_context
def applications_reject(ctx: click.Context, member: str, note: str | None) -> None:
    """Reject a pending application: member.rejected."""
    _decide(ctx, member, False, note)


@main.group("incident")
@_run_context
def incident_cmd(**_options: Any) -> None:
    """Emergency plans: `open NAME`, `list`, `close ID|NAME` (steps become tasks and sends)."""


@incident_cmd.command("open")
@click.argument("name")
@click.option("--note", help="What happened (shown with its tasks).")
@click.pass_context
def incident_open(ctx: click.Context, name: str, note: str | None) -> None:
    """Start an incident: its steps become tasks and sends with deadlines."""
    from datetime import UTC, datetime

    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.run import incidents
    from sop.engine.run.service import require_run

    program, store, rid, fmt = _context(ctx)
    with _runtime_errors():
        require_run(store, rid)
        rec = incidents.open_incident(program, store, rid, name, datetime.now(UTC), _actor(),
                                      note or "")  # fmt: skip
    if fmt == "json":
        click.echo(dumps(incidents.as_dict(rec, program.tz), indent=2))
        return
    click.echo(f"incident {terminal(rec.id)} opened; its steps run with `sop run` / `sop tick`")
    inc = program.playbook.incidents[name]
    from sop.engine.program.incidents import schedule

    for st in schedule(inc):
        at = (rec.opened_at + st.at).astimezone(program.tz).strftime("%H:%M")
        due = f", due {(rec.opened_at + st.due).astimezone(program.tz):%H:%M}" if st.due else ""
        cond = " (if still open)" if st.only_if_open else ""
        click.echo(f"  {at}  {st.step.kind} {terminal(st.step.target)} [{terminal(st.role)}]"
                   f"{due}{cond}")  # fmt: skip


@incident_cmd.command("list")
@click.option("--all", "show_all", is_flag=True, help="Closed incidents too.")
@click.pass_context
def incident_list(ctx: click.Context, show_all: bool) -> None:
    """Open incidents (all with --all), the latest first."""
    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.run import incidents
    from sop.engine.run.service import require_run
    from sop.engine.run.store.base import IncidentState

    program, store, rid, fmt = _context(ctx)
    with _runtime_errors():
        require_run(store, rid)
        rows = store.incidents(rid, None if show_all else [IncidentState.OPEN])
    if fmt == "json":
        click.echo(dumps([incidents.as_dict(i, program.tz) for i in rows], indent=2))
        return
    if not rows:
        click.echo("no open incidents" if not show_all else "no incidents")
    for i in rows:
        when = i.opened_at.astimezone(program.tz).strftime("%Y-%m-%d %H:%M")
        by = "detected" if i.detected else terminal(i.opened_by)
        click.echo(f"{when}  {terminal(i.id)}  {i.state}  ({by})")


@incident_cmd.command("close")
@click.argument("ref", metavar="ID|NAME")
@click.option("--note", help="How it ended.")
@click.pass_context
def incident_close(ctx: click.Context, ref: str, note: str | None) -> None:
    """Close an open incident (its open tasks are completed; steps not yet due are skipped)."""
    from datetime import UTC, datetime

    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.run import incidents

    program, store, rid, fmt = _context(ctx)
    with _runtime_errors():
        rec = incidents.close_incident(program, store, rid, ref, datetime.now(UTC), _actor(),
                                       note or "")  # fmt: skip
    if fmt == "json":
        click.echo(dumps(incidents.as_dict(rec, program.tz), indent=2))
    else:
        click.echo(f"incident {terminal(rec.id)}: closed")


@main.command()
@click.argument("playbook", type=click.Path(dir_okay=False))
@_state_option
@click.option("--run", "run_id", help="Run id (default: the playbook id).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8750, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--insecure-no-signature", "allow_unsigned", is_flag=True,
    help="Accept unsigned events (loopback only; without SOP_EVENTS_SECRET).",
)  # fmt: skip
def serve(
    playbook: str, state: str | None, run_id: str | None, host: str, port: int,
    allow_unsigned: bool,
) -> None:  # fmt: skip
    """The operator's dashboard and the events endpoint (events HMAC-signed with
    $SOP_EVENTS_SECRET; the dashboard behind $SOP_TOKEN beyond localhost)."""
    from sop.engine import web
    from sop.engine.run import serve as server

    program = _program(playbook)
    secret = os.environ.get("SOP_EVENTS_SECRET")
    token = os.environ.get("SOP_TOKEN") or None
    store = _store(state)
    rid = run_id or program.playbook.id
    try:
        web.check_access(host, token)
    except web.AccessError as e:
        _fail(str(e))
    dashboard = web.dashboard_routes(program, store, rid, web.DashboardSettings.from_env())
    with _runtime_errors():
        server.serve(
            program, store, rid, host, port, secret.encode() if secret else None,
            allow_unsigned, extra_routes=dashboard,
            announce=lambda line: click.echo(line, err=True),
        )  # fmt: skip


@main.command("backends")
@click.option("--format", "fmt", default="text", type=click.Choice(choices(TextOrJson)))
def backends_cmd(fmt: str) -> None:
    """List the installed backend types and what each can do."""
    from sop.engine.core.textsafe import dumps
    from sop.engine.run.backends import describe_types

    rows = describe_types()
    if fmt == "json":
        click.echo(dumps(rows, indent=2))
        return
    for r in rows:
        caps: Any = r.get("capabilities") or {}
        bits = []
        if caps:
            if caps["max_length"]:
                bits.append(f"max {caps['max_length']} {caps['length_unit']}")
            if caps["markdown"]:
                bits.append(f"markdown: {caps['markdown']}")
            if caps["mentions"]:
                bits.append("mentions")
            if caps["rate_per_minute"]:
                bits.append(f"{caps['rate_per_minute']}/min")
            bits.append("idempotent" if caps["idempotent"] else "not idempotent")
        summary = r.get("summary") or r.get("error") or ""
        click.echo(f"{r['type']:<16} {summary}")
        if bits:
            click.echo(f"{'':<16} {', '.join(bits)}")


@main.command("send-test")
@click.argument("playbook", type=click.Path(dir_okay=False))
@click.argument("action")
@click.option(
    "--backend", "backend", metavar="NAME|NAME=TYPE[:TARGET]",
    help="Send through this backend of the playbook (default: the action's), or route it first.",
)  # fmt: skip
@click.option("--member", help="Render for this member id (member messages).")
@click.option("--data", "data", multiple=True, metavar="NAME=VALUE", help="Member attributes.")
@click.option("--format", "fmt", default="text", type=click.Choice(choices(TextOrJson)))
@_root_option
def send_test(
    playbook: str, action: str, backend: str | None, member: str | None, data: tuple[str, ...],
    fmt: str, root: str | None,
) -> None:  # fmt: skip
    """Render one action and send it once, to check a backend (nothing is stored)."""
    from datetime import UTC, datetime

    from sop.engine.core.status import ExitCode
    from sop.engine.core.textsafe import dumps, terminal
    from sop.engine.lang.templates import RenderError
    from sop.engine.run.backends import build_backends, close_all, configs_for, parse_route
    from sop.engine.run.service import send_test as run_send_test

    program = _program(playbook, root)
    routes = []
    name = backend
    if backend and "=" in backend:
        name = backend.partition("=")[0]
        routes.append(backend)
    with _runtime_errors():
        configs = configs_for(program.playbook.backends, [parse_route(r) for r in routes],
                              root=root or os.getcwd())  # fmt: skip
        wanted = name or (program.playbook.actions[action].backend
                          if action in program.playbook.actions else None)  # fmt: skip
        built = build_backends({k: v for k, v in configs.items() if k == wanted}, os.environ)
    try:
        with _runtime_errors():
            try:
                sent = run_send_test(
                    program, action, built, backend=name, member=member,
                    attributes=_data(data), now=datetime.now(UTC),
                )  # fmt: skip
            except RenderError as e:
                _fail(f"the text of {action!r} cannot be rendered: {e}")
    finally:
        close_all(built)
    if fmt == "json":
        click.echo(dumps(sent.as_dict(), indent=2))
    else:
        detail = f" ({terminal(sent.result.detail)})" if sent.result.detail else ""
        click.echo(f"{sent.backend}: {sent.result.status}{detail}")
        click.echo(terminal(sent.delivery.text))
    raise SystemExit(ExitCode.OK if sent.ok else ExitCode.FINDINGS)


if __name__ == "__main__":
    main()
