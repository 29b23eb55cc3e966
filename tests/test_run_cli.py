"""The runtime commands as a user runs them: processes, a SQLite file, JSON-lines output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PLAYBOOKS

REFERENCE = str(PLAYBOOKS / "community-lifecycle.yaml")


def sop(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "sop.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def state(tmp_path: Path) -> dict[str, str]:
    return {"SOP_STATE": f"sqlite:///{tmp_path}/state.db", "SOP_PLAYBOOK": REFERENCE}


def test_run_status_event_tasks_resolve_from_the_command_line(
    tmp_path: Path, state: dict[str, str]
) -> None:
    out = tmp_path / "out.jsonl"
    r = sop("run", REFERENCE, "--clock", "virtual", "--until", "2026-12-05",
            "--backend", f"*=jsonl:{out}", env=state)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert lines and {"key", "action", "stage", "member", "scheduled_at", "sent_at", "backend",
                      "text"} <= set(lines[0])  # fmt: skip
    assert len({x["key"] for x in lines}) == len(lines)
    # a member joins; the next run delivers the welcome chain to them
    r = sop("event", "joined", "--member", "u1", "--at", "2026-12-05T10:00", "--data",
            "name=小李", env=state)  # fmt: skip
    assert r.returncode == 0 and "1 new event" in r.stdout, r.stderr
    r = sop("event", "joined", "--member", "u1", "--at", "2026-12-05T10:00", env=state)
    assert "0 new events, 1 already recorded" in r.stdout  # the same command twice: one event
    r = sop("run", REFERENCE, "--clock", "virtual", "--until", "2026-12-06",
            "--backend", f"*=jsonl:{out}", env=state)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert any(x["member"] == "u1" and "小李" in x["text"] for x in lines)
    # status as JSON
    r = sop("status", "--format", "json", env=state)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["run"] == "community-lifecycle" and st["occurrences"]["sent"] == len(lines)
    assert st["gates"][0]["stage"] == "prep"
    # tasks (the playbook routes `do: task` to a task list)
    r = sop("tasks", "--format", "json", env=state)
    assert r.returncode == 0, r.stderr
    tasks = json.loads(r.stdout)
    r = sop("run", REFERENCE, "--clock", "virtual", "--until", "2026-12-07", env=state)
    assert r.returncode == 2 and "WECOM_GROUP_KEY is not set" in r.stderr  # the secret: said
    # resolve refuses what is not uncertain or dead
    r = sop("resolve", lines[0]["key"], "--sent", env=state)
    assert r.returncode == 2 and "it is sent" in r.stderr
    r = sop("resolve", "nope", "--drop", env=state)
    assert r.returncode == 2 and "no such occurrence" in r.stderr
    assert isinstance(tasks, list)


def test_tasks_done_and_postpone(tmp_path: Path, state: dict[str, str]) -> None:
    r = sop("run", REFERENCE, "--clock", "virtual", "--until", "2026-12-03",
            "--backend", "group=null", "--backend", "console=null", env=state)  # fmt: skip
    assert r.returncode == 0, r.stderr
    tasks = json.loads(sop("tasks", "--format", "json", env=state).stdout)
    assert tasks, "the reference playbook's stand-ups are staff tasks"
    first, second = tasks[0]["id"], tasks[1]["id"]
    r = sop("tasks", "done", first, env=state)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr
    r = sop("tasks", "done", first, env=state)
    assert r.returncode == 2 and "no open task" in r.stderr
    r = sop("tasks", "postpone", second, "--to", "2026-12-04T15:00", env=state)
    assert r.returncode == 0, r.stderr
    left = json.loads(sop("tasks", "--format", "json", env=state).stdout)
    assert first not in {t["id"] for t in left}
    assert next(t for t in left if t["id"] == second)["due_at"].startswith("2026-12-04T15:00")
    r = sop("tasks", "--role", "nobody", env=state)
    assert r.returncode == 2 and "no such role" in r.stderr


def test_events_import_is_all_or_nothing_with_located_errors(
    tmp_path: Path, state: dict[str, str]
) -> None:
    r = sop("tick", REFERENCE, "--at", "2026-12-01T09:30", "--backend", "*=null", env=state)
    assert r.returncode == 0, r.stderr
    good = tmp_path / "good.jsonl"
    good.write_text(
        "\n".join(
            json.dumps({"id": f"e{i}", "type": "joined", "member": f"m{i}",
                        "at": "2026-12-01T10:00:00+08:00"})
            for i in range(50)
        ) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "x1", "type": "joined", "member": "a"}\n{"id": "x2", "type": "joind",'
        ' "member": "b"}\nnot json\n',
        encoding="utf-8",
    )
    r = sop("events", "import", str(bad), env=state)
    assert r.returncode == 2
    assert f"{bad}:2: type: unknown event type 'joind'" in r.stderr
    assert f"{bad}:3:1: not JSON" in r.stderr and "nothing was imported" in r.stderr
    r = sop("events", "import", str(good), "--format", "json", env=state)
    assert r.returncode == 0 and json.loads(r.stdout) == {"accepted": 50, "duplicates": 0}
    r = sop("events", "import", str(good), "--format", "json", env=state)
    assert json.loads(r.stdout) == {"accepted": 0, "duplicates": 50}


def test_runtime_errors_are_said_not_raised(tmp_path: Path, state: dict[str, str]) -> None:
    r = sop("status", env=state)
    assert r.returncode == 2 and "has no run" in r.stderr and "Traceback" not in r.stderr
    r = sop("status", env={**state, "SOP_STATE": "mysql://x"})
    assert r.returncode == 2 and "not a state store URL" in r.stderr
    r = sop("run", REFERENCE, "--clock", "virtual", env=state)
    assert r.returncode == 2 and "needs --until" in r.stderr
    r = sop("run", REFERENCE, "--clock", "virtual", "--until", "soon", env=state)
    assert r.returncode == 2 and "--until" in r.stderr
    r = sop("run", REFERENCE, "--clock", "virtual", "--until", "2026-12-02",
            "--backend", "nope=null", env=state)  # fmt: skip
    assert r.returncode == 2 and "no backend" in r.stderr
    r = sop("event", "joined", "--member", "m", "--at", "yesterday", env=state)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_two_runner_processes_on_one_sqlite_file_never_send_one_occurrence_twice(
    tmp_path: Path, state: dict[str, str]
) -> None:
    """Both run the same 60 days at once, each into its own file: the union has no repeat."""
    procs = []
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for out in outs:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sop.cli",
                    "run",
                    REFERENCE,
                    "--clock",
                    "virtual",
                    "--until",
                    "2027-01-30",
                    "--backend",
                    f"*=jsonl:{out}",
                    "--batch",
                    "1",
                ],
                env={**os.environ, **state},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    keys: list[str] = []
    for out in outs:
        if out.exists():
            keys += [json.loads(x)["key"] for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(keys) == len(set(keys))
    st = json.loads(sop("status", "--format", "json", env=state).stdout)
    assert st["occurrences"] == {"sent": len(keys)}


def test_backends_lists_what_is_installed(tmp_path: Path) -> None:
    r = sop("backends", "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = {x["type"]: x for x in json.loads(r.stdout)}
    assert {"console", "jsonl", "webhook", "tasks", "null"} <= set(rows)
    assert rows["null"]["capabilities"]["idempotent"] is True
    assert rows["webhook"]["entry_point"] == "sop.engine.run.backends.webhook:create"


def test_send_test_renders_and_sends_one_action(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    r = sop("send-test", REFERENCE, "welcome", "--member", "u7", "--data", "name=小周",
            "--backend", f"group=jsonl:{out}", "--format", "json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    assert (
        sent["status"] == "ok" and "小周" in sent["text"] and sent["key"].startswith("send-test/")
    )
    [line] = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert line["text"] == sent["text"] and line["member"] == "u7"
    r = sop("send-test", REFERENCE, "welcom")
    assert r.returncode == 2 and "did you mean" in r.stderr
