"""The layer contract: imports inside the engine flow one way (docs/architecture.md), no cycles.

Every import counts, the lazy ones inside functions too: a lazy upward import is still a rule
living in the wrong layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ENGINE = Path(__file__).resolve().parents[1] / "engine"
# Lower layers first; a module may import its own layer and the layers before it. `plan` and
# `sim` share a rank but may not import each other: both interpret the Program, independently.
LAYERS = {"core": 0, "lang": 1, "program": 2, "plan": 3, "sim": 3, "run": 4, "web": 5}
TOP = 6  # engine/__init__.py, validate.py, report.py: the facade over every layer


def _module(path: Path) -> str:
    parts = path.relative_to(ENGINE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("engine", *parts))


def _imports(path: Path) -> set[str]:
    """Engine modules imported by `path` (relative imports resolved)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = (node.module or "").removeprefix("sop.")
            if not target.startswith("engine"):
                continue
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from . import expr`
        elif isinstance(node, ast.Import):
            for a in node.names:
                name = a.name.removeprefix("sop.")
                if name.startswith("engine"):
                    found.add(name)
    return found


def _graph() -> nx.DiGraph:
    files = {_module(p): p for p in ENGINE.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    for mod, path in files.items():
        for target in _imports(path):
            if target in files and target != mod:
                g.add_edge(mod, target)
    return g


def _rank(module: str) -> tuple[int, str]:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS:
        return LAYERS[parts[1]], parts[1]
    return TOP, "top"


def test_every_engine_module_lives_in_a_layer_package_or_is_the_facade() -> None:
    loose = {m for m in _graph() if _rank(m)[1] == "top"}
    assert loose <= {"engine", "engine.validate", "engine.report"}, sorted(loose)


def test_imports_flow_down_the_layers_only() -> None:
    upward = []
    for a, b in _graph().edges:
        (ra, la), (rb, lb) = _rank(a), _rank(b)
        if rb > ra or (rb == ra and la != lb and la != "top"):
            upward.append(f"{a} -> {b}")
    assert upward == []


def test_there_is_no_import_cycle() -> None:
    packages = {m for m in _graph() if (ENGINE / m.replace("engine", "", 1).strip(".")).is_dir()}
    modules = _graph().subgraph(set(_graph()) - packages)  # a package's __init__ re-exports
    assert list(nx.simple_cycles(modules)) == []


def test_the_contract_catches_an_upward_import(tmp_path, monkeypatch) -> None:
    # the fence itself must be able to fail
    fake = ENGINE / "core" / "_layer_probe.py"
    fake.write_text("from ..plan import timeline\n", encoding="utf-8")
    try:
        g = _graph()
        assert ("engine.core._layer_probe", "engine.plan.timeline") in g.edges
        assert _rank("engine.plan.timeline")[0] > _rank("engine.core._layer_probe")[0]
    finally:
        fake.unlink()


def test_every_name_of_the_public_api_resolves() -> None:
    import sop.engine as api

    missing = [name for name in api.__all__ if getattr(api, name, None) is None]
    assert missing == []
