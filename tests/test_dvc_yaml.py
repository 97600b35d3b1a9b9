"""dvc.yaml is honest: one name in four places, and deps list every pipeline module a stage imports."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.cli import app
from pipeline.core.config import read_params
from tests.import_graph import closure

ROOT = Path(__file__).resolve().parents[1]


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
        imported = {str(f.relative_to(ROOT)) for f in closure(ROOT / stage_file) if f.name != "__init__.py"}
        missing = imported - deps
        assert not missing, f"stage {name}: deps miss {sorted(missing)}"
        assert name in stage.get("params", []), f"stage {name} does not list its params section"
