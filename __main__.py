"""The `sop` command's entry point: `--help` without importing click, and a quick exit.

The console script and `python -m sop` land here. `sop --help`, the first command most people
type, is printed from the text click renders for it, stored below (tests/test_startup.py holds
it equal to click's own rendering, and rewrites it: `python -m tests.test_startup`), so it costs
little more than starting Python. Everything else goes to click in cli.py. A verb that only
writes to stdout, stderr or files it closes itself ends with `os._exit` once its output is
flushed: interpreter teardown (freeing every module's objects) would add about 20 ms to a
command that takes 100.
"""

from __future__ import annotations

import os
import sys

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
# Verbs that start no thread or process and write only through streams and files they close
# before returning: nothing is left for interpreter teardown to do.
QUICK_EXIT = frozenset({"validate", "schema", "rules", "graph"})


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


def main() -> None:
    """Run the `sop` command with sys.argv."""
    args = sys.argv[1:]
    if _stored_help_applies(args):
        try:
            sys.stdout.write(HELP)
        except BrokenPipeError:  # unbuffered output to a reader that went away
            os._exit(1)
        _quick_exit(0)
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
