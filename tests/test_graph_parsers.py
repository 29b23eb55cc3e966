"""`sop graph` read back by the real parsers: Graphviz's `dot`, and mermaid's own parser (node).

A hostile playbook (quotes, backslashes, newlines, brackets, HTML, entity codes, Chinese, ids that
are Mermaid or DOT keywords, ids that differ only in `-` and `_`) is drawn in both formats; each
parser must accept the text and read back every node, cluster and edge with exactly the text a
reader should see. Graphviz comes from Debian's graphviz package; mermaid and a small DOM from
the npm registry, pinned in tests/js/package-lock.json and installed into .venv/js by .ci/run
(`npm ci --prefix .venv/js`). Without them these tests are skipped, except in CI
(SOP_REQUIRE_GRAPH_PARSERS=1), where a missing parser fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from sop.engine.core.textsafe import terminal
from sop.engine.lang.model import Playbook
from sop.engine.plan.graph import dot, mermaid
from sop.engine.validate import load_playbook

ROOT = Path(__file__).resolve().parents[1]
JS = Path(os.environ.get("SOP_JS_DIR", ROOT / ".venv" / "js"))
REQUIRED = os.environ.get("SOP_REQUIRE_GRAPH_PARSERS") == "1"

HOSTILE = r"""
playbook: hostile-graph
timezone: Asia/Shanghai
roles: {ops: {headcount: 1}}
defaults: {owner: ops}
stages:
  a-b:
    title: "q \" b \\ s \\N \\G \\l ] [ { } < > & #quot; #35; <br/> <b>x</b> `t` | --> %% ; ::: end"
    exit: {when: "members >= 10 and members < 500"}
    actions:
      end: {cron: "0 9 * * *", do: task, text: x}
      subgraph: {after: end, delay: 1d, do: task, text: x}
  a_b:
    after: a-b
    title: "新的阶段\n第二行 \\\"escaped\\\" trailing backslash \\"
    duration: {max: 10d}
    actions:
      graph: {before: style, by: 2h, do: task, text: x}
      style: {day: 3, time: "10:00", do: task, text: x}
  end:
    after: a_b
    title: "end"
    duration: {max: 10d}
  flowchart:
    after: end
    title: "click callback \"x\" ]"
routines:
  click: {cron: "0 8 * * 1", do: task, text: x}
"""


@pytest.fixture(scope="module")
def playbook(tmp_path_factory: pytest.TempPathFactory) -> Playbook:
    path = tmp_path_factory.mktemp("g") / "hostile.yaml"
    path.write_text(textwrap.dedent(HOSTILE), encoding="utf-8")
    res = load_playbook(str(path))
    assert res.playbook is not None, [(d.code, d.message) for d in res.diagnostics]
    return res.playbook


def _need(available: bool, what: str) -> None:
    if available:
        return
    if REQUIRED:
        pytest.fail(f"{what} is required here (SOP_REQUIRE_GRAPH_PARSERS=1) but missing")
    pytest.skip(f"{what} is not installed (see this module's docstring)")


def label(pb: Playbook, sid: str) -> str:
    """The text a reader should see on a stage: its title, then its gate on a second line."""
    s = pb.stages[sid]
    text = terminal(s.title) + (f"\ngate: {terminal(s.gate.text)}" if s.gate else "")
    return text + (" (optional)" if s.optional else " (rescue)" if s.rescue else "")


# -- Graphviz ------------------------------------------------------------------------------


def graphviz(text: str) -> dict[str, object]:
    """`dot -Tjson`: Graphviz's reading of the graph, with each label as it draws it."""
    _need(shutil.which("dot") is not None, "Graphviz (`dot`)")
    proc = subprocess.run(
        ["dot", "-Tjson"], input=text.encode(), capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and b"rror" not in proc.stderr, proc.stderr.decode()
    return json.loads(proc.stdout)


def drawn(obj: dict[str, object]) -> str:
    """The lines of text Graphviz draws for a node, cluster or edge label, joined by newlines."""
    ops = obj.get("_ldraw_", [])
    assert isinstance(ops, list)
    return "\n".join(op["text"] for op in ops if op["op"] == "T")


def test_graphviz_draws_every_title_exactly_as_written(playbook):
    doc = graphviz(dot(playbook))
    objects = doc["objects"]
    assert isinstance(objects, list)
    by_name = {o["name"]: o for o in objects}
    clusters = {n: drawn(o) for n, o in by_name.items() if n.startswith("cluster_")}
    assert clusters == {
        "cluster_s_a_2d_b": label(playbook, "a-b"),
        "cluster_s_a__b": label(playbook, "a_b"),
        "cluster_routines": "routines",
    }
    assert drawn(by_name["s_end"]) == "end" and drawn(by_name["s_flowchart"]) == label(
        playbook, "flowchart"
    )
    # every action is one node of its own, labelled with its id (keywords included)
    actions = {drawn(o) for n, o in by_name.items() if n.startswith("a_")}
    assert actions == {"end", "subgraph", "graph", "style", "click"}


def test_graphviz_reads_each_edge_between_the_right_nodes(playbook):
    doc = graphviz(dot(playbook))
    names = [o["name"] for o in doc["objects"]]  # type: ignore[union-attr]
    edges = {
        (names[e["tail"]], names[e["head"]], drawn(e))
        for e in doc["edges"]  # type: ignore[union-attr]
    }
    assert edges == {
        ("s_a_2d_b", "s_a__b", ""),
        ("s_a__b", "s_end", ""),
        ("s_end", "s_flowchart", ""),
        ("a_end", "a_subgraph", "+1d"),
        ("a_style", "a_graph", "-2h"),
    }


def test_graphviz_accepts_the_stages_only_drawing(playbook):
    doc = graphviz(dot(playbook, actions=False))
    stages = {o["name"]: drawn(o) for o in doc["objects"]}  # type: ignore[union-attr]
    assert stages == {f"s_{k}": label(playbook, s) for k, s in _STAGE_IDS.items()}


_STAGE_IDS = {"a_2d_b": "a-b", "a__b": "a_b", "end": "end", "flowchart": "flowchart"}

# -- Mermaid -------------------------------------------------------------------------------


def mermaid_read(*texts: str) -> list[dict[str, object]]:
    """Mermaid's reading of each diagram (tests/js/mermaid_parse.mjs), in one node process."""
    _need(shutil.which("node") is not None, "node")
    _need((JS / "node_modules" / "mermaid").is_dir(), f"mermaid under {JS}")
    script = (ROOT / "tests" / "js" / "mermaid_parse.mjs").read_text(encoding="utf-8")
    # evaluated in JS's folder, so that `import "mermaid"` resolves to its node_modules
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=json.dumps(texts).encode(),
        cwd=JS,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert isinstance(out, list) and len(out) == len(texts)
    return out


@pytest.fixture(scope="module")
def mermaid_docs(playbook: Playbook) -> list[dict[str, object]]:
    """Mermaid's reading of: the drawing, the stages-only drawing, and a label left unescaped."""
    return mermaid_read(
        mermaid(playbook), mermaid(playbook, actions=False), 'flowchart LR\n  a["x " y"]\n'
    )


def test_mermaid_reads_every_title_exactly_as_written(playbook, mermaid_docs):
    doc = mermaid_docs[0]
    assert "error" not in doc, doc
    subgraphs = {sid: (title, nodes) for sid, title, nodes in doc["subgraphs"]}  # type: ignore[attr-defined]
    assert subgraphs == {
        "s_a_2d_b": (label(playbook, "a-b"), ["a_end", "a_subgraph"]),
        "s_a__b": (label(playbook, "a_b"), ["a_graph", "a_style"]),
        "routines": ("routines", ["a_click"]),
    }
    vertices = doc["vertices"]
    assert isinstance(vertices, dict)
    assert vertices["s_end"] == "end" and vertices["s_flowchart"] == label(playbook, "flowchart")
    actions = {v for k, v in vertices.items() if k.startswith("a_")}
    assert actions == {"end", "subgraph", "graph", "style", "click"}


def test_mermaid_reads_each_edge_between_the_right_nodes(mermaid_docs):
    doc = mermaid_docs[0]
    assert {tuple(e) for e in doc["edges"]} == {  # type: ignore[attr-defined]
        ("s_a_2d_b", "s_a__b", ""),
        ("s_a__b", "s_end", ""),
        ("s_end", "s_flowchart", ""),
        ("a_end", "a_subgraph", "+1d"),
        ("a_style", "a_graph", "-2h"),
    }


def test_mermaid_accepts_the_stages_only_drawing_and_rejects_a_broken_label(playbook, mermaid_docs):
    _, good, broken = mermaid_docs
    assert "error" in broken  # the parser is strict: an unescaped quote would be caught
    assert good["vertices"] == {f"s_{k}": label(playbook, s) for k, s in _STAGE_IDS.items()}


# -- Branching exits (issue 12): one labelled edge per exit and target ---------------------

BRANCHING = r"""
playbook: branching-graph
timezone: Asia/Shanghai
roles: {ops: {headcount: 1}}
defaults: {owner: ops}
stages:
  grow:
    title: "成长 \"q\" | <b>x</b> #35; ;"
    duration: {max: 120d}
    exits:
      - {id: success, when: "core_members >= 500 and avg(daily_speak_rate, 7d) >= 20%", for: 7d}
      - {id: stall, when: "days_in_stage > 60 and members <= 100"}
      - {id: decline, when: "avg(daily_speak_rate, 14d) < 5% or members < 10", goto: end}
  deep:
    after: grow
    title: deep
    exit: {when: "members >= 1000", for: 14d}
  end:
    rescue: true
    title: end
    duration: {max: 30d}
    exits:
      - {id: done, when: "members < 5"}
"""

SUCCESS = "success: core_members >= 500 and avg(daily_speak_rate, 7d) >= 20% for 7d"
STALL = "stall: days_in_stage > 60 and members <= 100"
DECLINE = "decline: avg(daily_speak_rate, 14d) < 5% or members < 10"
# every exit is an edge to where it leads; `done` leads nowhere, so it ends at `finish`
EXIT_EDGES = {
    ("s_grow", "s_deep", SUCCESS),
    ("s_grow", "s_deep", STALL),
    ("s_grow", "s_end", DECLINE),
    ("s_end", "finish", "done: members < 5"),
}


@pytest.fixture(scope="module")
def branching(tmp_path_factory: pytest.TempPathFactory) -> Playbook:
    path = tmp_path_factory.mktemp("g") / "branching.yaml"
    path.write_text(textwrap.dedent(BRANCHING), encoding="utf-8")
    res = load_playbook(str(path))
    assert res.playbook is not None, [(d.code, d.message) for d in res.diagnostics]
    return res.playbook


def test_graphviz_draws_each_exit_as_a_labelled_edge(branching):
    doc = graphviz(dot(branching, actions=False))
    objects = doc["objects"]
    assert isinstance(objects, list)
    names = [o["name"] for o in objects]
    edges = {(names[e["tail"]], names[e["head"]], drawn(e)) for e in doc["edges"]}  # type: ignore[union-attr]
    assert edges == EXIT_EDGES
    nodes = {o["name"]: drawn(o) for o in objects}
    # a single `exit:` keeps its gate (with its hold) on the stage; a branching stage does not
    assert nodes["s_deep"] == "deep\ngate: members >= 1000 for 14d"
    assert nodes["s_grow"] == terminal(branching.stages["grow"].title)
    assert nodes["finish"] == "end of the playbook"
    # the goto exit is dashed, the exits to the `after:` successor solid
    styles = {(names[e["tail"]], names[e["head"]], e.get("style")) for e in doc["edges"]}  # type: ignore[union-attr]
    assert ("s_grow", "s_end", "dashed") in styles and ("s_grow", "s_deep", "solid") in styles


def test_mermaid_reads_each_exit_edge_with_its_label(branching):
    doc, with_actions = mermaid_read(mermaid(branching, actions=False), mermaid(branching))
    assert "error" not in doc and "error" not in with_actions, (doc, with_actions)
    assert {tuple(e) for e in doc["edges"]} == EXIT_EDGES  # type: ignore[attr-defined]
    assert {tuple(e) for e in with_actions["edges"]} == EXIT_EDGES  # type: ignore[attr-defined]
    vertices = doc["vertices"]
    assert isinstance(vertices, dict)
    assert vertices["s_grow"] == terminal(branching.stages["grow"].title)
    assert vertices["s_deep"] == "deep\ngate: members >= 1000 for 14d"
