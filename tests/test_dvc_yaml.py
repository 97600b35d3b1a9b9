"""dvc.yaml is honest: one name in four places, and deps list every pipeline module a stage imports."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from pipeline.cli import app
from pipeline.config import read_params

ROOT = Path(__file__).resolve().parents[1]


def _pipeline_imports(path: Path) -> set[str]:
    """``pipeline.*`` modules imported anywhere in ``path`` (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipeline"))
    return found


def _closure(stage_file: Path) -> set[str]:
    todo, seen = [stage_file], set()
    while todo:
        for module in _pipeline_imports(todo.pop()):
            file = ROOT / (module.replace(".", "/") + ".py")
            if module not in seen and file.is_file():
                seen.add(module)
                todo.append(file)
    return {m.replace(".", "/") + ".py" for m in seen}


def test_stages_are_named_alike_and_list_their_modules():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = read_params(ROOT / "params.yaml")
    commands = {c.name for c in app.registered_commands}
    for name, stage in stages.items():
        stage_file = f"stages/{name}.py"
        assert stage["cmd"] == f"python {stage_file}", name
        assert (ROOT / stage_file).is_file(), name
        assert name in params, f"params.yaml has no section {name}"
        assert name.replace("_", "-") in commands, f"no CLI command for stage {name}"
        deps = set(stage["deps"])
        assert stage_file in deps
        missing = _closure(ROOT / stage_file) - deps
        assert not missing, f"stage {name}: deps miss {sorted(missing)}"
        assert name in stage.get("params", []), f"stage {name} does not list its params section"
