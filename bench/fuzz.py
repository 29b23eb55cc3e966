"""The long fuzz campaign: generated hostile inputs through every `sop` verb, under resource limits.

    python bench/fuzz.py --cases 100000 --workers 2 [--seed N] [--out DIR]
    python bench/fuzz.py --replay DIR          # run recorded cases again (a case or a tree)

Prints cases run per verb and per input kind, tracebacks, hangs over the timeout, crashes,
disclosures, the exit-code distribution, peak RSS overall and for inputs under 1 MB, and cases per
second. Failing cases go to DIR (default fuzz-out/), one folder per failure class, with a minimised
copy (`minimal/`) of the first case of each class. Exits 1 if any case failed.
The strategies are tests/strategies.py and the runner tests/fuzz_harness.py, shared with the short
CI run in tests/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz_harness import (  # noqa: E402
    Campaign,
    Limits,
    Outcome,
    Summary,
    case_markdown,
    describe,
    generate,
    load_recorded,
    minimise,
    record,
)
from tests.strategies import Case  # noqa: E402


def _progress(every: int, total: int) -> Callable[[Outcome, Summary], None]:
    start = time.perf_counter()

    def report(o: Outcome, s: Summary) -> None:
        if s.cases % every == 0:
            rate = s.cases / max(time.perf_counter() - start, 1e-9)
            print(
                f"  {s.cases}/{total} cases, {rate:.0f}/s, {s.failed} failing"
                f" ({len(s.failures)} classes), peak RSS {s.peak_rss_mb:.0f} MB",
                file=sys.stderr,
                flush=True,
            )

    return report


def replay(where: Path, limits: Limits) -> int:
    """Run recorded cases again; print what each does now."""
    cases = load_recorded(where)
    if not cases:
        print(f"no case.json under {where}", file=sys.stderr)
        return 2
    camp = Campaign(workers=1, limits=limits)
    bad = 0
    for c in cases:
        o = camp.rerun(c)
        bad += o.failed
        status = o.signature if o.failed else f"ok (exit {o.exit_code})"
        print(f"{status}: sop {' '.join(c.args)}")
        if o.traceback:
            print("    " + "\n    ".join(o.traceback.strip().splitlines()[-6:]))
    print(f"{len(cases)} case(s), {bad} failing")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    """Run a campaign (or a replay) and print its summary."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="fuzz-out", help="where failing cases are written")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per case before a hang")
    ap.add_argument("--mem-mb", type=int, default=1024, help="address-space limit per worker")
    ap.add_argument("--minimise", type=int, default=20, help="failure classes to minimise")
    ap.add_argument("--replay", type=Path, help="run the case(s) recorded under this folder")
    ap.add_argument("--markdown", type=Path, help="also write the findings as markdown here")
    args = ap.parse_args(argv)
    limits = Limits(mem_mb=args.mem_mb, timeout=args.timeout)
    if args.replay:
        return replay(args.replay, limits)

    out = Path(args.out)
    camp = Campaign(workers=args.workers, limits=limits, out_dir=str(out))
    print(
        f"fuzzing {args.cases} cases, seed {args.seed}, {args.workers} workers,"
        f" {limits.mem_mb} MB address space, {limits.timeout:.0f} s per case; failures -> {out}/",
        file=sys.stderr,
    )
    summary = camp.run(
        generate(args.cases, args.seed), _progress(max(args.cases // 20, 100), args.cases)
    )
    print(describe(summary, camp))
    findings: list[tuple[str, int, Case, Outcome]] = []
    for sig, outs in sorted(summary.failures.items(), key=lambda kv: -len(kv[1])):
        first = outs[0]
        case = camp.cases.get(first.index)
        if case is None:
            continue
        if len(findings) < args.minimise:
            small = minimise(camp, case, sig)
            again = camp.rerun(small)
            record(out / _slug(sig) / "minimal", small, again)
            case, first = small, again
        findings.append((sig, len(outs), case, first))
    if args.markdown:
        lines = [
            "# Fuzz findings",
            "",
            f"`python bench/fuzz.py --cases {args.cases} --workers {args.workers}"
            f" --seed {args.seed}`",
            "",
            "```",
            describe(summary, camp),
            "```",
            "",
        ]
        for sig, n, case, o in findings:
            lines += [f"## {sig} ({n} cases)", "", case_markdown(case, o), ""]
        args.markdown.write_text("\n".join(lines), encoding="utf-8", errors="backslashreplace")
    return 1 if summary.failed else 0


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)[:120]


if __name__ == "__main__":
    sys.exit(main())
