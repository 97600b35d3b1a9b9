"""train_student: CLSR experts distilled from the teacher cache, and the paper's baselines.

Modes: ``distilwhisper`` (CLSR + KD: 0.25 (CE + L_g) + 0.5 JS), ``clsr``
(CE + L_g), ``finetune`` (all weights; KD optional), ``lora`` (PEFT, r=64 on
fc1/fc2; KD optional).

This module is the stage: :class:`TrainStageConfig` names the students,
:func:`train_modes` trains the stale ones, :func:`train_student` runs one
training. Its parts live beside it: the settings (``config``), what a run
reads (``inputs``), one optimizer step (``loop``), exact resume
(``checkpoint``) and the dev choice of the best step (``selection``).

When the encoder is frozen and has no CLSR layer, its outputs are computed
once per utterance and reused every epoch (the embedded profile's main
saving on CPU).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.core.distributed import rank_and_world
from pipeline.core.fsutil import atomic_dir
from pipeline.core.progress import progress
from pipeline.models.clsr import CLSRConfig, add_clsr
from pipeline.models.decode import EncoderStore
from pipeline.models.forward import pick_device
from pipeline.student.checkpoint import (
    load_checkpoint,
    log_path,
    remove_run_files,
    save_checkpoint,
    truncate_log,
)
from pipeline.student.config import TrainConfig
from pipeline.student.inputs import TrainingData, load_training_data, training_inputs
from pipeline.student.loop import Run, epoch_batches, make_optimizer, run_step
from pipeline.student.model import CLSR_MODES, StudentSpec, build_student, save_student, trainable_parameters
from pipeline.student.selection import TrainState, dev_summary, dev_wer, keep_best

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainStageConfig:
    """``params.yaml: train_student``: train each student into ``out_dir/<name>``.

    A name in ``modes`` is a training mode, or a student of its own whose ``per_mode`` entry names its mode
    (``{mode: distilwhisper, timestamp_windows: false}``): two students of one mode with other settings."""

    modes: tuple[str, ...]
    out_dir: Path
    common: dict[str, Any]  # TrainConfig fields shared by every mode
    per_mode: dict[str, dict[str, Any]] = field(default_factory=dict)

    def configs(self) -> list[TrainConfig]:
        from pipeline.core.config import from_mapping

        out = []
        for name in self.modes:
            own = self.per_mode.get(name, {})
            values = {**self.common, **own, "mode": own.get("mode", name), "out_dir": str(self.out_dir / name)}
            out.append(from_mapping(TrainConfig, values, f"train_student ({name})"))
        return out


def train_modes(stage: TrainStageConfig) -> dict[str, dict]:
    """Train every configured mode; a mode whose folder holds this exact training (settings and the contents
    of every input: :func:`training_inputs`) is skipped, any other is retrained."""
    results = {}
    for cfg in stage.configs():
        inputs = training_inputs(cfg)
        results[cfg.out_dir.name] = trained_summary(cfg, inputs) or train_student(cfg, inputs)
    return results


def trained_summary(cfg: TrainConfig, inputs: dict[str, str]) -> dict | None:
    """The dev summary of the student in ``cfg.out_dir`` when it holds exactly this training (settings and input
    contents), else None (nothing there, or a stale student to retrain)."""
    record = cfg.out_dir / "student.json"
    if not record.is_file():
        return None
    saved = json.loads(record.read_text())
    if saved.get("training") != cfg.settings_record() or saved.get("inputs") != inputs:
        log.info("%s was trained from other settings or inputs; retraining", cfg.out_dir)
        return None
    log.info("%s is up to date", cfg.out_dir)
    return json.loads((cfg.out_dir / "dev.json").read_text())


def train_student(cfg: TrainConfig, inputs: dict[str, str] | None = None) -> dict:
    """Train, keep the checkpoint with the best dev WER, and write the student folder.

    ``inputs``: :func:`training_inputs` of ``cfg`` when the caller has them already."""
    cfg.check()
    inputs = inputs or training_inputs(cfg)
    rank, world = rank_and_world()
    device, autocast = pick_device(cfg.device)
    data = load_training_data(cfg, inputs)
    torch.manual_seed(cfg.seed)  # gate initialisation and LoRA init
    model, spec, clsr = build_model(cfg)
    model.to(device)
    store, dev_store = _encoder_stores(cfg, model, data, device)
    params = list(trainable_parameters(model).values())
    optimizer = make_optimizer(model, cfg)
    per_epoch = math.ceil(len(epoch_batches(data.examples, cfg, 0)) / (cfg.grad_accum * world))
    total = cfg.max_steps or per_epoch * cfg.epochs
    resumed = load_checkpoint(cfg, inputs, model, optimizer)
    state, best = resumed if resumed else (TrainState(), None)
    pad = data.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    run = Run(cfg, model, optimizer, params, data.examples, store, pad, device, autocast, per_epoch, total, rank, world)
    steps = log_path(cfg)
    steps.parent.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        truncate_log(steps, state.step)

    log.info(
        "%s: %d training utterances, %d steps, %d dev utterances",
        cfg.mode,
        len(run.examples),
        total,
        len(data.dev_utts),
    )
    best = _train(run, state, best, inputs, data, dev_store)
    if rank != 0:
        return {}
    return _finish(cfg, inputs, model, spec, clsr, state, best, data.teacher_rows)


def build_model(cfg: TrainConfig):
    """The student to train: layer copy, then CLSR / LoRA / full fine-tuning set-up."""
    spec = StudentSpec(cfg.base, cfg.keep_encoder_layers, cfg.keep_decoder_layers)
    model = build_student(spec)
    clsr = None
    if cfg.mode in CLSR_MODES:
        clsr = CLSRConfig(
            cfg.languages,
            cfg.clsr_encoder_layers,
            cfg.clsr_decoder_layers,
            expert_dropout=cfg.expert_dropout,
            skip_gate_prob=cfg.skip_gate_prob,
            budget=cfg.gate_budget,
            gate_init=cfg.gate_init,
        )
        add_clsr(model, clsr)
    elif cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_r, lora_dropout=0.05, target_modules=["fc1", "fc2"])
        )
    if cfg.freeze_encoder:
        encoder = model.get_encoder()
        for name, p in encoder.named_parameters():
            if ".experts." not in name and ".gates." not in name:
                p.requires_grad_(False)
    return model, spec, clsr


def _encoder_stores(cfg: TrainConfig, model, data: TrainingData, device) -> tuple[EncoderStore, EncoderStore]:
    """Encoder outputs of the train and dev utterances (computed once when the encoder stays as it is)."""
    precompute = cfg.freeze_encoder and not cfg.clsr_encoder_layers
    key = (str(cfg.base), cfg.keep_encoder_layers)

    def store_for(manifest: Path, dtype: torch.dtype) -> EncoderStore:
        budget = int(cfg.feature_memory_gb * 2**30)
        return EncoderStore(
            model, data.extractor, manifest.parent, precompute, device, key, dtype, cfg.encoder_memo, budget
        )

    store = store_for(cfg.train, torch.float16)
    store.fill(data.train_utts)
    # Dev decoding reads float32 encoder outputs, as the benchmark does, so that the best step and the export's
    # gate rates are chosen on the numbers the benchmark will see (the training store keeps float16 to save memory).
    dev_store = store_for(cfg.dev, torch.float32)
    dev_store.fill(data.dev_utts)
    return store, dev_store


def _train(
    run: Run, state: TrainState, best: dict | None, inputs: dict[str, str], data: TrainingData, dev: EncoderStore
) -> dict | None:
    """Steps ``state.step`` to ``run.total``. Rank 0 logs each step, decodes the dev set at each epoch's end and
    every ``eval_every`` steps to keep the best parameters, and checkpoints there and every ``checkpoint_every``
    steps. Returns the best."""
    cfg, model = run.cfg, run.model
    if state.step == 0 and run.rank == 0 and not state.history:
        # The untrained student is the first candidate for "best": training must beat it on dev.
        best = keep_best(
            state, dev_wer(model, data.dev_utts, dev, data.tokenizer, cfg), trainable_parameters(model), None
        )
    bar = progress(range(state.step, run.total), desc=f"train {cfg.mode}", total=run.total - state.step, unit="step")
    for step in bar:
        record = run_step(run, step)
        state.step = step + 1
        if run.rank != 0:
            continue
        with log_path(cfg).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        end_of_epoch = state.step % run.per_epoch == 0 or state.step == run.total
        if end_of_epoch or (cfg.eval_every and state.step % cfg.eval_every == 0):
            result = dev_wer(model, data.dev_utts, dev, data.tokenizer, cfg)
            log.info("step %d: dev WER %.4f", state.step, result["wer"])
            best = keep_best(state, result, trainable_parameters(model), best)
        if end_of_epoch or state.step % cfg.checkpoint_every == 0:
            save_checkpoint(cfg, inputs, model, run.optimizer, state, best)
    return best


def _finish(
    cfg: TrainConfig, inputs: dict[str, str], model, spec, clsr, state: TrainState, best, teacher_rows: dict | None
) -> dict:
    """Load the best parameters, write the student folder with its log, dev summary and curves (and, trained on
    teacher labels, ``teacher_labels.json``: the rows read, kept and filtered out with their reasons), and remove
    the run's checkpoint and log."""
    params = trainable_parameters(model)
    with torch.no_grad():
        for name, value in (best or {}).items():
            params[name].copy_(value)
    summary = dev_summary(cfg, state)
    steps = log_path(cfg)
    with atomic_dir(cfg.out_dir, overwrite=True) as tmp:
        save_student(tmp, model, cfg.mode, spec, cfg.languages, clsr, cfg.settings_record(), inputs)
        (tmp / "train_log.jsonl").write_text(steps.read_text() if steps.is_file() else "", encoding="utf-8")
        (tmp / "dev.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        if teacher_rows is not None:
            text = json.dumps(teacher_rows, indent=1, ensure_ascii=False) + "\n"
            (tmp / "teacher_labels.json").write_text(text, encoding="utf-8")
        _write_live(tmp / LIVE_DIR, steps, summary)
    remove_run_files(cfg)
    return summary


LIVE_DIR = "live"  # a student's training curves (dvclive), read by dvc.yaml's plots
TRAIN_CURVES = ("ce", "kd", "gate", "gate_mean", "lr", "grad_norm")


def _write_live(out: Path, log_file: Path, summary: dict) -> None:
    """The run's curves in dvclive's layout under ``out``, from the step log (which resume keeps exact):
    ``plots/metrics/train/<part>.tsv`` per step (loss parts, mean gate, lr, gradient norm),
    ``plots/metrics/dev/wer.tsv`` (and ``dev/<lang>.tsv``) at each dev decode, and ``metrics.json`` with the
    last values and the chosen dev rate, so ``dvc plots diff`` and ``dvc metrics`` compare runs.

    Written once the run is done (from the log rather than live): a killed run resumes from its last checkpoint,
    and curves written as it went would hold the steps after that checkpoint twice. dvclive's metric writer is
    used without its ``Live`` session, which would look for a git commit, a DVC experiment and DVC Studio: a stage
    runs offline, and in a fresh repository with no commit yet."""
    from dvclive.plots import Metric

    curves: dict[str, Metric] = {}
    last: dict[str, dict[str, float]] = {}

    def log(name: str, step: int, value: float) -> None:
        curve = curves.setdefault(name, Metric(name, str(out / "plots")))
        curve.step = step
        curve.dump(value)
        group, key = name.split("/")
        last.setdefault(group, {})[key] = value

    rows = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.is_file() else []
    for row in rows:
        for part in TRAIN_CURVES:
            if isinstance(row.get(part), (int, float)):
                log(f"train/{part}", row["step"], row[part])
    for point in summary["history"]:
        log("dev/wer", point["step"], point["wer"])
        for lang, result in sorted(point.get("per_language", {}).items()):
            log(f"dev/{lang}", point["step"], result["wer"])
    last.setdefault("dev", {})["best_wer"] = summary["dev_wer_best"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({**last, "step": summary["steps"]}, indent=4) + "\n")
