"""Ctrl-C (a real SIGINT) in a DVC stage or a dw-pipe command: one line on stderr, exit status 130."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import INTERRUPTED

ROOT = Path(__file__).resolve().parents[3]

# The benchmark's work replaced by a SIGINT to this very process, as Ctrl-C sends it; then the entry point runs.
CTRL_C_IN_THE_BENCHMARK = """
import os, runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a launcher's background job inherits SIGINT ignored
from pipeline.evaluate import benchmark
benchmark.run_benchmark = lambda config: os.kill(os.getpid(), signal.SIGINT)
if sys.argv[1] == "stage":
    sys.argv = ["stages/benchmark.py"]
    runpy.run_path("stages/benchmark.py", run_name="__main__")
else:
    from pipeline.cli import app
    app(["--log-level", "WARNING", "benchmark", "--params", "params.yaml"])
"""


@pytest.mark.parametrize(("entry", "line"), [("stage", f"stage benchmark {INTERRUPTED}"), ("cli", INTERRUPTED)])
def test_ctrl_c_prints_one_line_and_exits_130(entry, line):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", CTRL_C_IN_THE_BENCHMARK, entry],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,  # the repository's params.yaml: only read into the config here
        timeout=120,
    )
    assert child.returncode == 130, child.stderr[-2000:]
    assert [x for x in child.stderr.splitlines() if "INFO" not in x] == [line]


def test_stage_files_load_the_library_inside_run_stage():
    """Top-level imports of a stage file run before run_stage can catch a Ctrl-C; torch takes seconds to load."""
    for path in sorted((ROOT / "stages").glob("*.py")):
        top = [node for node in ast.parse(path.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))]
        modules = {n.module if isinstance(n, ast.ImportFrom) else n.names[0].name for n in top}
        assert modules <= {"__future__", "sys", "pathlib", "pipeline.core.stage"}, path.name
