"""Train a student and save its trainable parameters after every optimizer step: the DDP test's witness.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m tests.pipeline.record_steps CONFIG.json OUT.pt

CONFIG.json holds TrainConfig's fields; rank 0 writes OUT.pt, a list with
one {parameter name: tensor} per step. The test calls ``train_recording``
in-process for the single-process run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from pipeline.core.config import from_mapping
from pipeline.student import train as train_mod
from pipeline.student.config import TrainConfig
from pipeline.student.model import trainable_parameters


def train_recording(cfg: TrainConfig, out: Path) -> None:
    """``train_student(cfg)``, with a post-step hook on its optimizer that snapshots the trainable parameters."""
    snapshots: list[dict[str, torch.Tensor]] = []
    real = train_mod.make_optimizer

    def recording(model, config: TrainConfig) -> torch.optim.AdamW:
        optimizer = real(model, config)
        named = trainable_parameters(model)
        optimizer.register_step_post_hook(
            lambda *_: snapshots.append({k: v.detach().clone() for k, v in named.items()})
        )
        return optimizer

    train_mod.make_optimizer = recording
    try:
        train_mod.train_student(cfg)
    finally:
        train_mod.make_optimizer = real
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(snapshots, out)


if __name__ == "__main__":
    values = json.loads(Path(sys.argv[1]).read_text())
    train_recording(from_mapping(TrainConfig, values, sys.argv[1]), Path(sys.argv[2]))
