"""Checkpoint and resume: what a run keeps beside its output folder, and how a killed run picks it up.

Beside ``out_dir`` a run keeps ``.<name>.checkpoint/`` (the trainable
weights, the best ones so far, the optimizer state, and the TrainState with
a hash of the settings and input contents) and ``.<name>.log.jsonl`` (one row
per step). A step depends on its number and the weights alone
(pipeline.student.loop), so a run resumed from a checkpoint repeats the
uninterrupted one, log included. A checkpoint from other settings or inputs
is ignored; both files go once the student folder is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.core.distributed import barrier, rank_and_world
from pipeline.core.fsutil import atomic_dir, atomic_write_text, recover_dir
from pipeline.student.config import TrainConfig
from pipeline.student.model import trainable_parameters
from pipeline.student.selection import TrainState

log = logging.getLogger(__name__)


def checkpoint_dir(cfg: TrainConfig) -> Path:
    """The run's checkpoint folder, beside its output folder."""
    return cfg.out_dir.parent / f".{cfg.out_dir.name}.checkpoint"


def log_path(cfg: TrainConfig) -> Path:
    """The run's step log (JSON lines), copied into the student folder as train_log.jsonl at the end."""
    return cfg.out_dir.parent / f".{cfg.out_dir.name}.log.jsonl"


def _config_hash(cfg: TrainConfig, inputs: dict[str, str]) -> str:
    record = {"training": cfg.settings_record(), "inputs": inputs}
    return hashlib.sha256(json.dumps(record, default=str, sort_keys=True).encode()).hexdigest()


def save_checkpoint(
    cfg: TrainConfig, inputs: dict[str, str], model, optimizer, state: TrainState, best: dict[str, torch.Tensor] | None
) -> None:
    """Replace the run's checkpoint with one at ``state.step`` (a kill meanwhile leaves the last one recoverable)."""
    with atomic_dir(checkpoint_dir(cfg), overwrite=True) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in trainable_parameters(model).items()},
            str(tmp / "trainable.safetensors"),
        )
        if best is not None:
            save_file(best, str(tmp / "best.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(
            json.dumps({"config_sha256": _config_hash(cfg, inputs), **asdict(state)}, default=str)
        )


def load_checkpoint(
    cfg: TrainConfig, inputs: dict[str, str], model, optimizer
) -> tuple[TrainState, dict[str, torch.Tensor] | None] | None:
    """Load the run's checkpoint into ``model`` and ``optimizer``: its TrainState and best parameters, or None
    when there is none of these settings and inputs."""
    folder = checkpoint_dir(cfg)
    rank, world = rank_and_world()
    if rank == 0:  # a kill while a checkpoint replaced the last one leaves it beside its usual name
        recover_dir(folder)
    barrier(world)  # every rank reads the recovered folder
    if not (folder / "state.json").is_file():
        return None
    saved = json.loads((folder / "state.json").read_text())
    if saved.pop("config_sha256") != _config_hash(cfg, inputs):
        log.warning("checkpoint %s is from other settings or inputs; starting over", folder)
        return None
    params = trainable_parameters(model)
    with torch.no_grad():
        for name, value in load_file(str(folder / "trainable.safetensors")).items():
            params[name].copy_(value)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").is_file() else None
    log.info("resuming %s from step %d", cfg.out_dir, saved["step"])
    return TrainState(**saved), best


def truncate_log(path: Path, step: int) -> None:
    """Keep the log rows of steps up to ``step`` (the checkpoint resumed from; 0: a fresh run keeps none).

    A kill between checkpoints leaves rows of steps the resumed run does again, and perhaps a torn last line."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a kill cut short
        if row.get("step", math.inf) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def remove_run_files(cfg: TrainConfig) -> None:
    """Remove the checkpoint and the step log once the student folder holds the run."""
    shutil.rmtree(checkpoint_dir(cfg), ignore_errors=True)
    log_path(cfg).unlink(missing_ok=True)
