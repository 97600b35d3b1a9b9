"""The dw-pipe CLI: help everywhere, real work, one-line errors with exit status 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
COMMANDS = [name for name in (c.name for c in app.registered_commands)]


def test_every_registered_command_has_help():
    assert {"import-ct2", "import-models", "prepare-data"} <= set(COMMANDS)
    for name in COMMANDS:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


@pytest.mark.parametrize("columns", [None, "60"])
def test_help_in_a_pipe_shows_whole_option_names(columns):
    command = typer.main.get_command(app).commands["prepare-data"]
    names = [name for p in command.params for name in (*p.opts, *p.secondary_opts)]
    assert "--allow-outside-paths" in names and "--no-allow-outside-paths" in names
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "TERMINAL_WIDTH", "FORCE_COLOR"}}
    env["PYTHONPATH"] = str(ROOT)
    if columns:
        env["COLUMNS"] = columns
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "prepare-data", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,  # stdout is a pipe, as in `dw-pipe ... --help | cat`
        text=True,
        check=True,
    ).stdout
    for name in names:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", out), f"{name} not whole in:\n{out}"


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
