"""The `sop` command's entry point: `--help` and plain `validate` without click, quick start-up.

The console script and `python -m sop` land here. `sop --help`, the first command most people
type, is printed from the text click renders for it, stored below (tests/test_startup.py holds
it equal to click's own rendering, and rewrites it: `python -m tests.test_startup`), so it costs
little more than starting Python. `sop validate PATH...` with only --format, --strict or
--no-plan-checks, the command CI and editors run on every change, is read here and runs what
cli.py's `validate` runs, without importing click and cli.py (7 % of its work);
tests/test_startup.py holds its output and exit code equal to click's on every kind of input.
Everything else goes to click in cli.py. Every verb compiles the methods @dataclass generates
only once per installation, like bytecode (below). A verb that only writes to stdout, stderr or
files it closes itself ends with `os._exit` once its output is flushed: interpreter teardown
(freeing every module's objects) would add about 20 ms to a command that takes 100, and 0.3 s
to a simulation.
"""

from __future__ import annotations

import codecs
import gc
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (2 ms of `sop --help`)
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any

# What `sop --help` prints, as click renders it for the program name `sop` in a terminal at least
# HELP_WIDTH columns wide (click never wraps help wider than that).
HELP = """\
Usage: sop [OPTIONS] COMMAND [ARGS]...

  Community-operations playbooks as code: validate, plan, simulate and run
  SOPs.

Options:
  --version   Show the version and exit.
  -h, --help  Show this message and exit.

Commands:
  applications  Applications to join (`admission:`): list them, or...
  backends      List the installed backend types and what each can do.
  backtest      Fit a community's history up to a cutoff, forecast the...
  calibrate     Fit a model to exported history and print a scenario...
  diff          Semantic diff of two playbook versions and its effect on...
  event         Record one member event (joined, left, message, post,...
  events        Member events in bulk.
  graph         The stage graph (gates, exits as labelled edges, goto...
  incident      Emergency plans: `open NAME`, `list`, `close ID|NAME`...
  init          Scaffold a playbook NAME.yaml with the editor schema...
  members       Members: import attributes from a CSV, show one (PII...
  metrics       List every built-in metric: meaning, unit, range and when...
  plan          The calendar of every action and staff task.
  resolve       Decide an uncertain or dead occurrence: --sent, --resend...
  rules         List every diagnostic code with its meaning and hint.
  run           Run a playbook: deliver its actions, durably, until...
  schema        Print the JSON Schema of playbooks (or fragments, or...
  send-test     Render one action and send it once, to check a backend...
  serve         The operator's dashboard and the events endpoint (events...
  simulate      Monte Carlo forecast of the metrics and of every gate's...
  status        Where the run stands: stage, gates, next occurrences,...
  tasks         Staff tasks: list them, or `done ID`, `postpone ID --to T`.
  tick          Process what is due now and exit (for cron, systemd...
  validate      Check playbooks (files, folders, or - for standard input)...
"""
HELP_WIDTH = 80
# Verbs that leave no thread or process running and write only through streams and files they
# close before returning: nothing is left for interpreter teardown to do. `simulate` joins its
# workers and closes its report, store and Dask client first; its teardown (freeing numba's
# compiled code and LLVM's objects) took about 0.3 s, a tenth of a default simulation.
QUICK_EXIT = frozenset({"validate", "schema", "rules", "graph", "simulate"})


def _columns() -> int:
    """The terminal width click's help formatter sees (shutil.get_terminal_size's rule)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _stored_help_applies(args: list[str]) -> bool:
    return (
        args in (["--help"], ["-h"])
        and os.path.basename(sys.argv[0]) == "sop"
        and _columns() >= HELP_WIDTH
    )


def _quick_exit(code: object) -> None:
    """Exit with `code` as SystemExit would, without interpreter teardown."""
    _write_methods()  # atexit does not run on os._exit
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:  # as Python does for `sys.exit("message")`
        sys.stderr.write(f"{code}\n")
        status = 1
    for stream in (sys.stderr, sys.stdout):
        try:
            stream.flush()
        except ValueError:  # closed: nothing left to write
            pass
        except BrokenPipeError:  # the reader went away (`sop --help | head -1`), as in cli.py
            status = 1
        except OSError as e:  # a full disk: said on stderr, as cli.py says it
            os.write(2, f"sop: error: cannot write output: {e.strerror or e}\n".encode())
            status = 2
    os._exit(status)


# -- dataclass methods compiled once ---------------------------------------------------------
# @dataclass writes every method it adds (__init__, __repr__, __eq__, __hash__, and a frozen
# class's __setattr__ and __delattr__) as source text and compiles it with exec() each time the
# class is defined: 360 compilations when `sop validate` imports the engine, a quarter of its work
# (200 M of 740 M instructions). The code depends only on that text and the interpreter, so, like
# a module's bytecode, it is compiled once and kept beside the package's .pyc files, keyed by the
# text itself, and only where and when Python would write bytecode; every `sop` command reads it
# (the first command after an install compiles as before). dataclasses.py sees a module-level
# `exec` that runs the same code, compiled as its exec would compile it.
_METHODS: dict[str, CodeType] = {}
_FRESH: list[str] = []  # texts compiled in this process, not yet written


def _methods_file() -> str | None:
    """Where the compiled methods live: beside this module's bytecode, as importlib puts it."""
    tag = sys.implementation.cache_tag
    if tag is None:
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    name = f"dataclass-methods.{tag}.marshal"
    if sys.pycache_prefix:
        return os.path.join(sys.pycache_prefix, here.lstrip(os.sep), name)
    return os.path.join(here, "__pycache__", name)


def _exec_once(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    """`exec` as dataclasses.py calls it; a source text is compiled once per interpreter."""
    if globals is None:  # exec's own default: the caller's namespaces
        frame = sys._getframe(1)
        globals, locals = frame.f_globals, frame.f_locals if locals is None else locals
    if isinstance(source, str):
        code = _METHODS.get(source)
        if code is None:
            # as exec compiles it there: no __future__ flags (dataclasses.py sets none)
            code = compile(source, "<string>", "exec", dont_inherit=True)
            _METHODS[source] = code
            _FRESH.append(source)
        source = code
    exec(source, globals, locals)


def _read_methods() -> None:
    """Use the methods compiled by earlier runs, and compile through `_exec_once` from now on."""
    import atexit
    import dataclasses
    import marshal
    from types import CodeType

    path = _methods_file()
    magic = getattr(sys.modules.get("_frozen_importlib_external"), "MAGIC_NUMBER", None)
    if path is None or magic is None:
        return
    try:
        with open(path, "rb") as f:
            stamp, methods = marshal.loads(f.read())
        if stamp == magic and isinstance(methods, dict):
            _METHODS.update(
                (k, v) for k, v in methods.items() if isinstance(k, str) and isinstance(v, CodeType)
            )
    except Exception:  # none yet, or unreadable (marshal says so in several ways): compile
        pass
    dataclasses.exec = _exec_once  # type: ignore[attr-defined]
    atexit.register(_write_methods)


def _write_methods() -> None:
    """Keep what this process compiled, where Python would keep bytecode (never on failure)."""
    path = _methods_file()
    magic = getattr(sys.modules.get("_frozen_importlib_external"), "MAGIC_NUMBER", None)
    if not _FRESH or sys.dont_write_bytecode or path is None or magic is None:
        return
    _FRESH.clear()
    import marshal

    methods = _METHODS if len(_METHODS) <= 8192 else {}  # a bound: start over past it
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(marshal.dumps((magic, methods)))
        os.replace(tmp, path)  # whole or not at all, also with another `sop` writing
    except Exception:  # a read-only or full disk: the next run compiles again
        import contextlib

        with contextlib.suppress(OSError):
            os.remove(tmp)


class _Validate:
    """The options of a `sop validate` command line simple enough to parse without click."""

    __slots__ = ("fmt", "no_plan_checks", "paths", "strict")

    def __init__(self, paths: list[str], fmt: str | None, strict: bool, no_plan_checks: bool):
        self.paths, self.fmt, self.strict, self.no_plan_checks = paths, fmt, strict, no_plan_checks


def _simple_validate(args: list[str]) -> _Validate | None:
    """`sop validate PATH... [--format F] [--strict] [--no-plan-checks]`, or None for click.

    Strict on purpose: any other option, `--`, a repeated `--format`, an unknown format, a path
    click would refuse (an unreadable one) or one whose error message click would re-encode
    (escape sequences, non-ASCII on a stderr that is not UTF-8) is left to click, which says
    what is wrong with it exactly as it always has.
    """
    if not args or args[0] != "validate" or os.name == "nt":  # click expands globs on Windows
        return None
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return None  # a shell asking click for completions
    from sop.engine.core.formats import ValidateFormat, choices

    paths: list[str] = []
    fmt: str | None = None
    flags = {"--strict": False, "--no-plan-checks": False}
    rest = iter(args[1:])
    for arg in rest:
        if arg in flags:
            flags[arg] = True
        elif arg == "--format" or arg.startswith("--format="):
            value = arg[9:] if arg.startswith("--format=") else next(rest, None)
            if fmt is not None or value not in choices(ValidateFormat):
                return None
            fmt = value
        elif (arg.startswith("-") and arg != "-") or not _plain_path(arg):
            return None
        else:
            paths.append(arg)
    if not paths:
        return None
    return _Validate(paths, fmt, flags["--strict"], flags["--no-plan-checks"])


def _plain_path(path: str) -> bool:
    """A path click's `Path()` accepts as it is, and that reads the same in any message."""
    if not path.isprintable():  # escape sequences: click.echo strips them off a non-terminal
        return False
    if not path.isascii() and codecs.lookup(sys.stderr.encoding or "ascii").name != "utf-8":
        return False  # click.echo writes UTF-8 to a stream it thinks misconfigured
    try:
        os.stat(path)
    except OSError:
        return True  # click leaves missing paths to the command
    return path == "-" or os.access(path, os.R_OK)


def _validate(v: _Validate) -> int:
    """What `validate` in cli.py does for these options, without importing click."""
    gc.set_threshold(200_000, 20, 20)  # as in cli.py: a short-lived process, acyclic trees
    from sop.engine.core.formats import default_validate_format
    from sop.engine.core.status import ExitCode, UsageError
    from sop.engine.report import RENDERERS
    from sop.engine.validate import ValidateOptions, validate_report

    fmt = v.fmt or default_validate_format(os.environ)
    opts = ValidateOptions(plan_checks=not v.no_plan_checks, strict=v.strict)
    try:  # every step inside, as cli.py's group runs every verb inside _stdout_errors
        try:
            report = validate_report(v.paths, opts)
        except UsageError as e:
            sys.stderr.write(f"sop: error: {e.message}\n")
            return ExitCode.USAGE
        color = fmt == "text" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        RENDERERS[fmt](report.results, sys.stdout, color)
        sys.stdout.flush()
        note = report.skipped_note()
        if note:
            sys.stderr.write(f"sop: note: {note}\n")
    except OSError as e:  # what cli.py's _stdout_errors says and does
        if e.filename is not None:
            sys.stderr.write(f"sop: error: {e.filename}: {e.strerror or e}\n")
            return ExitCode.USAGE
        import contextlib

        with contextlib.suppress(OSError, ValueError):  # nothing more goes there, not at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(e, BrokenPipeError):
            return ExitCode.FINDINGS
        sys.stderr.write(f"sop: error: cannot write to stdout: {e.strerror or e}\n")
        return ExitCode.USAGE
    return report.exit_code


def main() -> None:
    """Run the `sop` command with sys.argv."""
    args = sys.argv[1:]
    if _stored_help_applies(args):
        try:
            sys.stdout.write(HELP)
        except BrokenPipeError:  # unbuffered output to a reader that went away
            os._exit(1)
        _quick_exit(0)
    if args and args[0] == "simulate":
        # the collector would walk the imports' objects (numba's, SciPy's: 0.05-0.1 s before the
        # workers start) and finds nothing: a simulation leaves no cyclic garbage (none after
        # 200 runs of the reference playbook); the workers it forks inherit this
        gc.disable()
    if args and not args[0].startswith("-"):  # a verb: it imports the engine's dataclasses
        _read_methods()
    simple = _simple_validate(args)
    if simple is not None:
        try:
            code = _validate(simple)
        except (EOFError, KeyboardInterrupt):  # as click ends an interrupted command
            sys.stderr.write("\nAborted!\n")
            code = 1
        _quick_exit(code)
    from sop.cli import main as cli

    if not args or args[0] not in QUICK_EXIT:
        cli()
        return
    try:
        cli()
    except SystemExit as e:
        _quick_exit(e.code)
    _quick_exit(0)


if __name__ == "__main__":
    main()
