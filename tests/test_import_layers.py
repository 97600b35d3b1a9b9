"""pipeline/ reads as the pipeline: one subpackage per stage over core/, imports only downward, no circle.

The layers, lowest first: core, data, models, cache, student, evaluate,
report; the command line (``pipeline.cli``, a package) sits on top of all of them. A module may import its
own package and the packages below it. Function-level imports count: a lazy
import is still a dependency.
"""

from __future__ import annotations

import ast

import pytest

from tests.import_graph import ROOT, graph

LAYERS = ("core", "data", "models", "cache", "student", "evaluate", "report")
TOP = "cli"  # the package above every layer


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _on_top(module: str) -> bool:
    return module == "pipeline" or _package(module) == TOP


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a package at or above the importer's layer that is not its own."""
    bad = []
    for module, targets in edges.items():
        if _on_top(module):
            continue
        if _package(module) not in LAYERS:
            bad.append(f"{module}: not in a layer package {LAYERS}")
            continue
        rank = LAYERS.index(_package(module))
        for target in sorted(targets):
            if _on_top(target) or _package(target) not in LAYERS:
                bad.append(f"{module} -> {target}")
            elif _package(target) != _package(module) and LAYERS.index(_package(target)) > rank:
                bad.append(f"{module} -> {target}")
    return bad


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected set of modules (Tarjan), each as the modules in it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                part.append(top)
                if top == node:
                    break
            if len(part) > 1 or node in edges.get(node, ()):
                found.append(sorted(part))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_imports_only_go_downward():
    assert upward_imports(graph()) == []


def test_there_is_no_import_circle():
    assert circles(graph()) == []


def test_the_checks_catch_what_they_guard():
    """An upward import and a circle, planted in a copy of the graph, are reported."""
    edges = {k: set(v) for k, v in graph().items()}
    edges["pipeline.data.prepare"].add("pipeline.evaluate.longform")
    edges["pipeline.student.train"].add("pipeline.evaluate.benchmark")
    assert upward_imports(edges) == [
        "pipeline.data.prepare -> pipeline.evaluate.longform",
        "pipeline.student.train -> pipeline.evaluate.benchmark",
    ]
    edges["pipeline.core.errors"].add("pipeline.core.fsutil")
    edges["pipeline.core.fsutil"].add("pipeline.core.errors")
    assert circles(edges) == [["pipeline.core.errors", "pipeline.core.fsutil"]]


@pytest.mark.parametrize("package", LAYERS)
def test_package_inits_hold_only_a_docstring(package):
    """Importing ``pipeline.X.y`` runs ``pipeline/X/__init__.py``: keeping it code-free keeps dvc.yaml's deps honest
    without listing it."""
    tree = ast.parse((ROOT / "pipeline" / package / "__init__.py").read_text(encoding="utf-8"))
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant)


def test_every_module_sits_in_a_layer():
    loose = sorted(p.name for p in (ROOT / "pipeline").glob("*.py") if p.stem != "__init__")
    assert loose == [], "modules directly under pipeline/ belong in one of " + ", ".join(LAYERS)
    folders = {p.name for p in (ROOT / "pipeline").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == {*LAYERS, TOP}


def test_modules_fit_in_a_head():
    """No module over 400 lines (issue 27: split along concerns, not at line numbers)."""
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "pipeline").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}
