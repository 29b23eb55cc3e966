"""Benchmark `sop` start-up and `sop validate` against check-jsonschema, whole process, paired.

    python bench/validate.py [--pairs 21] [--actions 1000] [--only reference,help]

Each comparison runs the two commands alternately (A B A B ..., after one untimed warm-up of
each), so a load spike from another process on the machine hits both sides alike; it prints the
median of each side, the ratio of the medians and the median of the per-pair ratios. Every run is
a fresh process, so in-process caches are cold exactly as in a real `sop validate`; the OS file
cache is warm for both sides. Goals (issue #8): the reference playbook at most 0.4x
check-jsonschema on the same schema and file, and `sop --help` at most 2x `python -c pass` (the
same interpreter sop runs on); the largest playbook the language allows (1,000 actions; issue #2
set its goal, at most 0.5x, on 5,000 before the size limits existed).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "playbook.schema.json"
REFERENCE = ROOT / "playbooks" / "community-lifecycle.yaml"


def generate(n_actions: int, per_stage: int = 100) -> str:
    """A schema-valid playbook with n actions of every schedule kind, spread over stages."""
    lines = [
        "playbook: big",
        "title: generated",
        "timezone: Asia/Shanghai",
        "community: {type: brand, platform: wecom, capacity: 500, start: 2027-01-04}",
        "roles:",
        "  ops: {title: ops, headcount: 40}",
        "  content: {title: content, headcount: 40}",
        "backends:",
        '  bot: {type: wecom-robot, key: "${env:KEY}", rate: 1000}',
        "  staff: {type: tasks}",
        'defaults: {backend: bot, staff_backend: staff, owner: ops, quiet_hours: "23:00-07:00"}',
        "metrics:",
        "  leads: {unit: count, description: leads}",
        "stages:",
    ]
    n_stages = max(1, n_actions // per_stage)
    k = 0
    for s in range(n_stages):
        lines.append(f"  s{s}:")
        lines.append(f"    title: stage {s}")
        if s:
            lines.append(f"    after: s{s - 1}")
        lines.append("    duration: {min: 30d, max: 60d}")
        lines.append("    actions:")
        for i in range(per_stage):
            aid = f"a{k}"
            kind = i % 5
            if kind == 0:
                sched = f'cron: "{i % 60} {8 + i % 12} * * {1 + i % 5}"'
            elif kind == 1:
                sched = f'day: {i % 28}, time: "{9 + i % 10:02d}:{i % 60:02d}"'
            elif kind == 2:
                sched = f"after: a{k - 1}, delay: {1 + i % 3}h"
            elif kind == 3:
                sched = "on: member.joined, within: 24h"
            else:
                sched = f"before: a{k - 3}, by: {1 + i % 5}h"
            extra = ", to: member" if kind == 3 else ""
            lines.append(
                f"      {aid}: {{{sched}, do: post, owner: content{extra},"
                f" template: t{i % 20}, effect: {{speak: 0.01}}}}"
            )
            k += 1
        lines.append("    exit:")
        lines.append("      when: members >= 100 and daily_speak_rate >= 20% and leads > 5")
        lines.append("      deadline: {after: 60d, then: {alert: ops}}")
    lines.append("templates:")
    for t in range(20):  # member data only in the texts of member-event actions (SOP291)
        member = "{{ member.name }}, " if t % 5 == 3 else ""
        lines.append(f'  t{t}: "Hello {member}message {t} for {{{{ stage.title }}}}"')
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Paired:
    """Wall times (seconds) of two commands run alternately, and their exit codes."""

    a: tuple[float, ...]
    b: tuple[float, ...]
    code_a: int
    code_b: int

    @property
    def ratio(self) -> float:
        """Median of A over median of B."""
        return statistics.median(self.a) / statistics.median(self.b)

    @property
    def pair_ratio(self) -> float:
        """Median of the per-pair ratios A/B (robust to drifts in load)."""
        return statistics.median(x / y for x, y in zip(self.a, self.b, strict=True))


# As on a user's machine, Python may cache the bytecode of a source file that changed after the
# compile below (this sandbox sets PYTHONDONTWRITEBYTECODE; without this, each run would compile
# such a file again).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _run(cmd: list[str]) -> tuple[float, int]:
    t = time.perf_counter()
    proc = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, check=False
    )
    return time.perf_counter() - t, proc.returncode


def paired(cmd_a: list[str], cmd_b: list[str], pairs: int) -> Paired:
    """Run A and B alternately `pairs` times each (after one untimed run of each)."""
    _run(cmd_a)
    _run(cmd_b)
    ta, tb = [], []
    code_a = code_b = 0
    for i in range(pairs):
        # alternate which goes first, so neither side always follows the other
        first, second = (cmd_a, cmd_b) if i % 2 == 0 else (cmd_b, cmd_a)
        t1, c1 = _run(first)
        t2, c2 = _run(second)
        (da, ca), (db, cb) = ((t1, c1), (t2, c2)) if i % 2 == 0 else ((t2, c2), (t1, c1))
        ta.append(da)
        tb.append(db)
        code_a, code_b = ca, cb
    return Paired(tuple(ta), tuple(tb), code_a, code_b)


def _ms(xs: tuple[float, ...]) -> str:
    q = statistics.quantiles(xs, n=4)
    return f"{statistics.median(xs) * 1000:6.1f} ms (IQR {q[0] * 1000:.1f}-{q[2] * 1000:.1f})"


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    """Run every comparison and print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=21)
    ap.add_argument("--actions", type=int, default=1000)
    ap.add_argument("--only", default="big,reference,help", help="comma-separated subset")
    args = ap.parse_args()
    if args.pairs < 3:
        ap.error("--pairs must be at least 3")
    only = set(args.only.split(","))
    # Installed packages ship compiled bytecode (pip compiles on install, as it did for
    # check-jsonschema); an editable checkout does not, and this sandbox sets
    # PYTHONDONTWRITEBYTECODE, so compile once here to measure what users run.
    compileall.compile_dir(str(ROOT / "engine"), quiet=1)
    compileall.compile_file(str(ROOT / "cli.py"), quiet=1)
    bindir = Path(sys.executable).parent
    sop = shutil.which("sop", path=str(bindir)) or shutil.which("sop") or "sop"
    cj = shutil.which("check-jsonschema", path=str(bindir)) or "check-jsonschema"
    print(f"{args.pairs} alternating pairs per comparison, whole process; {_load()}")
    print("ratios: median(A)/median(B), and the median of the per-pair ratios")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.yaml"
        big.write_text(generate(args.actions), encoding="utf-8")
        goals = {"big": 0.5, "reference": 0.4}
        for key, label, path in (
            ("big", f"{args.actions}-action playbook", big),
            ("reference", "reference playbook", REFERENCE),
        ):
            if key not in only:
                continue
            r = paired(
                [sop, "validate", str(path)],
                [cj, "--schemafile", str(SCHEMA), str(path)],
                args.pairs,
            )
            verdict = "met" if r.ratio <= goals[key] else "NOT met"
            print(
                f"{label:<22} sop validate {_ms(r.a)} exit {r.code_a} | check-jsonschema"
                f" {_ms(r.b)} exit {r.code_b} | ratio {r.ratio:.2f}x (pairs {r.pair_ratio:.2f}x)"
                f"  goal <= {goals[key]}x: {verdict}"
            )
        if "help" in only:
            r = paired([sop, "--help"], [sys.executable, "-c", "pass"], args.pairs)
            verdict = "met" if r.ratio <= 2.0 else "NOT met"
            print(
                f"{'sop --help':<22} {_ms(r.a)} | python -c pass {_ms(r.b)} | ratio"
                f" {r.ratio:.2f}x (pairs {r.pair_ratio:.2f}x)  goal <= 2x: {verdict}"
            )
    print(f"after: {_load()}")


if __name__ == "__main__":
    main()
