"""scripts/run_experiment.sh hands dvc exp run each override of its file as one -S argument, in order."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.report.docs import read_overrides

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run_experiment.sh"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "dvc").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (fake / "dvc").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_each_override_is_one_argument_and_comments_are_left_out(tmp_path):
    path = tmp_path / "sweep.overrides"
    path.write_text("# a comment\n  train_student.common.lr=0.5  \n\n+prepare_data.x={fi: {test: 76}}\n~benchmark.y")
    done = _run(tmp_path, str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "exp", "run", "-n", "sweep",
        "-S", "train_student.common.lr=0.5",
        "-S", "+prepare_data.x={fi: {test: 76}}",
        "-S", "~benchmark.y",
    ]  # fmt: skip
    assert _run(tmp_path, str(path), "again").stdout.splitlines()[3] == "again"


def test_the_committed_comparison_passes_what_the_docs_claim(tmp_path):
    path = ROOT / "profiles" / "paper-comparison.overrides"
    args = _run(tmp_path, str(path)).stdout.splitlines()
    assert args[:4] == ["exp", "run", "-n", "paper-comparison"] and args[5::2] == read_overrides(path)


def test_a_missing_file_is_one_line_and_status_2(tmp_path):
    done = _run(tmp_path, str(tmp_path / "nope.overrides"))
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1
