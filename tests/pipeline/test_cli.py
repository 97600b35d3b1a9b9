"""The dw-pipe CLI: help everywhere, real work, one-line errors with exit status 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
COMMANDS = [name for name in (c.name for c in app.registered_commands)]


def test_every_registered_command_has_help():
    assert {"import-ct2", "import-models", "prepare-data"} <= set(COMMANDS)
    for name in COMMANDS:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_import_ct2_writes_checkpoint(tiny_ct2, tmp_path):
    result = runner.invoke(app, ["--no-progress", "import-ct2", str(tiny_ct2["float16"]), str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "model.safetensors").is_file()
    again = runner.invoke(app, ["import-ct2", str(tiny_ct2["float16"]), str(tmp_path / "m")])
    assert again.exit_code == 0 and "already up to date" in again.output


@pytest.mark.parametrize("src", ["./missing-folder", "embedded:whisper-huge"])
def test_bad_source_is_one_line_and_status_2(src, tmp_path):
    result = runner.invoke(app, ["import-ct2", src, str(tmp_path / "m")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_import_models_reads_params(tiny_ct2, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"import_models:\n  out_dir: {tmp_path / 'models'}\n  models:\n    tiny: {tiny_ct2['float16']}\n")
    result = runner.invoke(app, ["import-models", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models" / "tiny" / "config.json").is_file()
    assert (tmp_path / "models" / "models.json").is_file()
