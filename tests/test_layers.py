"""The import contracts of docs/design.md ("Layers"), checked over the source's AST.

Every ``import`` counts, also those inside functions (they run, just later); only
``if TYPE_CHECKING:`` blocks are left out, since they never run. The contracts:

1. Layers, lowest first: ``model`` < ``export`` < ``service`` < ``resshift`` (the
   console script). A module imports only from its own layer or the ones below.
2. Inside ``model``, only ``model.training`` imports ``model.training`` (serving code
   never pulls in the training side).
3. No import cycle between modules, in any layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.paths import REPO as ROOT

LAYERS = ("model", "export", "service", "resshift")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of the project's modules."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that module ``name`` imports (a ``from pkg import sub`` counts
    as importing ``pkg.sub`` when that is a module, else ``pkg``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in LAYERS:
                known = _known(target, modules)
                if known and known != name:
                    found.add(known)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    bad = []
    for src, targets in graph.items():
        for dst in targets:
            if rank[dst.split(".")[0]] > rank[src.split(".")[0]]:
                bad.append(f"{src} -> {dst} (imports a higher layer)")
            if dst.startswith("model.training") and src.startswith("model") \
                    and not src.startswith("model.training"):
                bad.append(f"{src} -> {dst} (serving code imports the training side)")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_layer_is_scanned(graph):
    for layer in LAYERS:
        assert layer in graph, f"package {layer} not found under {ROOT}"
    assert len(graph) > 50


def test_layers_only_import_downward(graph):
    assert layer_violations(graph) == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_the_checks_catch_what_they_forbid():
    # the checker itself: an upward import, the training side from serving code, a cycle
    graph = {"model.a": {"export.b", "model.training.t"}, "export.b": {"model.a"},
             "model.training.t": set(), "service.c": {"service.d"},
             "service.d": {"service.c"}}
    assert layer_violations(graph) == [
        "model.a -> export.b (imports a higher layer)",
        "model.a -> model.training.t (serving code imports the training side)"]
    assert sorted(cycles(graph)) == [["export.b", "model.a"], ["service.c", "service.d"]]


def test_function_local_and_relative_imports_count(tmp_path):
    modules = {"model": tmp_path / "m.py", "model.x": tmp_path / "x.py",
               "service": tmp_path / "s.py", "service.y": tmp_path / "y.py"}
    src = tmp_path / "x.py"
    src.write_text("from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from service import z\n"
                   "def f():\n    from service.y import g\n    from . import helper\n")
    assert imports_of("model.x", src, modules) == {"service.y", "model"}
