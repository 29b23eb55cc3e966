"""Benchmark `sop validate` against check-jsonschema, whole process, in one run.

    python bench/validate.py [--repeat 7]

Prints median wall times and ratios for: a generated 5,000-action playbook, the reference
playbook, and `sop --help` against bare `python3 -c pass`. Goals (issue #2): 5,000 actions at most
0.5x check-jsonschema and under 1 s; the reference at most 1.0x; `--help` at most 4x bare Python.
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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
    for t in range(20):
        lines.append(
            f'  t{t}: "Hello {{{{ member.name }}}}, message {t} for {{{{ stage.title }}}}"'
        )
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], repeat: int) -> tuple[float, int]:
    """Median wall time of a whole process, and its exit code."""
    times = []
    code = 0
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t)
        code = proc.returncode
    return statistics.median(times), code


def main() -> None:
    """Run every measurement and print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--actions", type=int, default=5000)
    args = ap.parse_args()
    # Installed packages ship compiled bytecode (pip compiles on install, as it did for
    # check-jsonschema); an editable checkout does not, and this sandbox sets
    # PYTHONDONTWRITEBYTECODE, so compile once here to measure what users run.
    compileall.compile_dir(str(ROOT / "engine"), quiet=1)
    compileall.compile_file(str(ROOT / "cli.py"), quiet=1)
    sop = shutil.which("sop") or str(Path(sys.executable).parent / "sop")
    cj = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.yaml"
        big.write_text(generate(args.actions), encoding="utf-8")
        rows = []
        for label, path in (
            (f"{args.actions}-action playbook", big),
            ("reference playbook", REFERENCE),
        ):
            t_sop, c1 = timed([sop, "validate", str(path)], args.repeat)
            t_cj, c2 = timed([cj, "--schemafile", str(SCHEMA), str(path)], args.repeat)
            rows.append((label, t_sop, t_cj, c1, c2))
        t_help, _ = timed([sop, "--help"], args.repeat)
        t_py, _ = timed([sys.executable, "-c", "pass"], args.repeat)
    print(f"median of {args.repeat} runs, whole process")
    for label, t_sop, t_cj, c1, c2 in rows:
        print(
            f"{label:<24} sop validate {t_sop * 1000:7.1f} ms (exit {c1})   check-jsonschema"
            f" {t_cj * 1000:7.1f} ms (exit {c2})   ratio {t_sop / t_cj:.2f}x"
        )
    print(
        f"{'sop --help':<24} {t_help * 1000:7.1f} ms   python3 -c pass {t_py * 1000:6.1f} ms"
        f"   ratio {t_help / t_py:.2f}x"
    )


if __name__ == "__main__":
    main()
