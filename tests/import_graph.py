"""The import graph of ``pipeline/``, read with ``ast`` (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a dotted ``pipeline`` module (a package's ``__init__.py``), or None."""
    base = root / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """``pipeline`` modules that ``path`` imports: ``from pipeline.pkg import mod`` counts as ``pipeline.pkg.mod``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "pipeline"
        ):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if module_file(sub, root) is not None else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "pipeline")
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Every module under ``root/pipeline`` and the ``pipeline`` modules it imports."""
    out: dict[str, set[str]] = {}
    for path in sorted((root / "pipeline").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[module] = imports_of(path, root)
    return out


def closure(start: Path, root: Path = ROOT) -> set[Path]:
    """Files of every ``pipeline`` module that ``start`` imports, directly or through others."""
    todo, seen = [start], set()
    while todo:
        for module in imports_of(todo.pop(), root):
            file = module_file(module, root)
            if file is not None and file not in seen:
                seen.add(file)
                todo.append(file)
    return seen
