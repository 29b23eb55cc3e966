"""The first `sop simulate` after an install tells a person at a terminal that it is compiling
(numba's cache is empty); a pipe gets nothing extra (scripts parse what it prints)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTE = "compiling the simulator's day"


def _simulate(cache: Path, terminal: bool) -> tuple[int, str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "sop", "simulate", "playbooks/community-lifecycle.yaml"]
    args = ["--runs", "4", "--days", "3", "--workers", "1", "--format", "json"]
    if not terminal:
        done = subprocess.run(cmd + args, cwd=ROOT, env=env, capture_output=True, text=True)
        return done.returncode, done.stderr
    main, side = pty.openpty()  # stderr a terminal, as for a person
    try:
        proc = subprocess.run(
            cmd + args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=side, timeout=300
        )
        os.close(side)
        chunks = []
        while True:
            try:
                data = os.read(main, 4096)
            except OSError:  # the terminal's other end closed: all read
                break
            if not data:
                break
            chunks.append(data)
        return proc.returncode, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(main)


def test_the_first_simulate_says_it_compiles_and_the_next_does_not(tmp_path: Path) -> None:
    code, err = _simulate(tmp_path / "piped", terminal=False)
    assert code in (0, 1) and NOTE not in err, err  # a pipe: nothing extra, even compiling
    code, err = _simulate(tmp_path / "tty", terminal=True)
    assert code in (0, 1) and NOTE in err, err
    code, err = _simulate(tmp_path / "tty", terminal=True)
    assert code in (0, 1) and NOTE not in err, err  # compiled once: said once
