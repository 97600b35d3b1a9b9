"""DVC stage benchmark: error rates per language and gender, RTFx, memory and size of every model.

python stages/benchmark.py        # reads params.yaml: benchmark
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.stage import run_stage  # noqa: E402


def main() -> None:
    # Imported here, under run_stage: a Ctrl-C while torch loads also ends in one line.
    from pipeline.core.config import load_section
    from pipeline.evaluate.benchmark import BenchmarkConfig, run_benchmark

    run_benchmark(load_section(BenchmarkConfig, "benchmark"))


if __name__ == "__main__":
    run_stage("benchmark", main)
