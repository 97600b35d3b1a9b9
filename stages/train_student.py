"""DVC stage train_student: CLSR students (and baselines) distilled from the teacher cache.

python stages/train_student.py                                  # reads params.yaml: train_student
torchrun --nproc_per_node 2 stages/train_student.py             # DDP over ranks
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.stage import run_stage  # noqa: E402


def main() -> None:
    # Imported here, under run_stage: a Ctrl-C while torch loads also ends in one line.
    from pipeline.core.config import load_section
    from pipeline.student.train import TrainStageConfig, train_modes

    train_modes(load_section(TrainStageConfig, "train_student"))


if __name__ == "__main__":
    run_stage("train_student", main)
