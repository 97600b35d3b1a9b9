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


@pytest.mark.parametrize("columns", [None, "60"])
def test_help_in_a_pipe_lists_each_commands_first_line_whole(columns):
    """`dw-pipe --help | cat` listed "Convert a CTranslate2 Whisper checkpoint into a...": Click cut each summary to
    one 80-column line. Every group's list (dw-pipe, dw-pipe cache, ...) shows each command's first docstring line."""
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "TERMINAL_WIDTH", "FORCE_COLOR"}}
    env["PYTHONPATH"] = str(ROOT)
    if columns:
        env["COLUMNS"] = columns
    groups = [((), typer.main.get_command(app))]
    while groups:
        path, group = groups.pop()
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *path, "--help"],
            cwd=ROOT,
            env=env,
            capture_output=True,  # stdout is a pipe
            text=True,
            check=True,
        ).stdout
        words = " ".join(re.sub(r"-\n\s+", "-", out).split())  # the list wraps a summary, at hyphens too
        for name, command in group.commands.items():
            first = " ".join(command.help.splitlines()[0].split())
            assert f" {name} {first}" in words, f"dw-pipe {' '.join(path)} --help cuts {name}'s summary:\n{out}"
            if hasattr(command, "commands"):  # a group: its own list too (typer.Typer(cls=FullSummaries))
                groups.append(((*path, name), command))


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


def test_memo_info_and_prune_read_the_folder_from_params_and_free_other_machines_keys(tmp_path):
    import numpy as np
    import torch
    from transformers import WhisperFeatureExtractor

    from pipeline.core.encoder_memo import EncoderMemo
    from pipeline.core.machine import compute_identity

    root, audio = tmp_path / "memo", tmp_path / "a.wav"
    audio.write_bytes(b"audio")
    here = compute_identity(torch.device("cpu"))
    memos = [
        EncoderMemo(root, "enc", "cpu:torch.float32", WhisperFeatureExtractor(), machine, "sdpa")
        for machine in (here, {**here, "torch": "1.0.0"})  # this machine, and it before a torch upgrade
    ]
    for memo in memos:
        memo.save(audio, np.zeros((3, 4), np.float32))
    params = tmp_path / "params.yaml"
    params.write_text(f"cache_teacher:\n  encoder_memo: &memo {root}\nbenchmark:\n  encoder_memo: *memo\n")

    info = runner.invoke(app, ["memo", "info", "--params", str(params)])
    assert info.exit_code == 0, info.output
    assert info.output.startswith(f"{root}: 2 key(s), 2 outputs") and "torch 1.0.0" in info.output
    dry = runner.invoke(app, ["memo", "prune", "--params", str(params), "--dry-run"])
    assert dry.exit_code == 0 and f"would remove {memos[1].dir.name}" in dry.output and memos[1].dir.is_dir()
    done = runner.invoke(app, ["memo", "prune", str(root), "--keep-current"])
    assert done.exit_code == 0 and f"removed {memos[1].dir.name}" in done.output and "freed" in done.output
    assert sorted(root.iterdir()) == [memos[0].dir]

    params.write_text(f"cache_teacher:\n  encoder_memo: {root}\nbenchmark:\n  encoder_memo: {tmp_path / 'b'}\n")
    two = runner.invoke(app, ["memo", "info", "--params", str(params)])
    assert two.exit_code == 2 and "give the folder" in two.output
