"""params.yaml sections become frozen dataclasses; every problem is reported at once."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from pipeline.core.config import ConfigError, load_section
from pipeline.models.specs import ImportModelsConfig


def _params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_section_loads_typed_and_frozen(tmp_path):
    path = _params(tmp_path, "import_models:\n  out_dir: data/models\n  models: {base: 'embedded:whisper-base'}\n")
    config = load_section(ImportModelsConfig, "import_models", path)
    assert config.out_dir == Path("data/models") and config.models == {"base": "embedded:whisper-base"}
    with pytest.raises(FrozenInstanceError):
        config.out_dir = Path("x")  # type: ignore[misc]


def test_all_errors_are_reported_together(tmp_path):
    path = _params(tmp_path, "import_models:\n  models: [1, 2]\n  colour: blue\n")
    with pytest.raises(ConfigError) as info:
        load_section(ImportModelsConfig, "import_models", path)
    message = str(info.value)
    assert "unknown key 'colour'" in message
    assert "missing key 'out_dir'" in message
    assert "key 'models': expected a mapping" in message


def test_override_wins_and_missing_section_is_named(tmp_path):
    path = _params(tmp_path, "import_models:\n  out_dir: a\n  models: {}\n")
    assert load_section(ImportModelsConfig, "import_models", path, out_dir="b").out_dir == Path("b")
    with pytest.raises(ConfigError, match="no 'prepare_data' section"):
        load_section(ImportModelsConfig, "prepare_data", path)


def test_repository_params_file_is_valid():
    root = Path(__file__).resolve().parents[3]
    load_section(ImportModelsConfig, "import_models", root / "params.yaml")
