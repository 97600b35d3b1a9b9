"""Run a dw-pipe command and die, as a killed process does, just before it renames something onto NAME.

    python -m tests.pipeline.kill_at NAME N dw-pipe-arguments...

The N-th ``os.replace`` whose destination is called NAME ends the process
with ``os._exit(137)`` before the rename happens: no ``except`` or
``finally`` clean-up runs, as after SIGKILL. Fault tests use it to stop a
writer exactly between two of its steps and then check what the next run
finds on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KILLED = 137


def die_before_rename(name: str, nth: int) -> None:
    """Patch ``os.replace`` (every module's: they share the one ``os``) to exit at the ``nth`` rename onto ``name``."""
    real, seen = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            seen[0] += 1
            if seen[0] == nth:
                sys.stderr.flush()
                os._exit(KILLED)
        return real(src, dst, *args, **kwargs)

    os.replace = replace


def run_killed(name: str, nth: int, *cli_args: str) -> subprocess.CompletedProcess:
    """``dw-pipe cli_args`` in a child process killed before its ``nth`` rename onto ``name``."""
    import torch

    # The child computes with this process's thread count: float sums split over other thread counts differ in
    # the last bits, and the fault tests compare the resumed run with an uninterrupted one in this process.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.pipeline.kill_at", name, str(nth), "--no-progress", *cli_args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


if __name__ == "__main__":
    die_before_rename(sys.argv[1], int(sys.argv[2]))
    from pipeline.cli import app

    app(sys.argv[3:])
