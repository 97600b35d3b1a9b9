"""The training loop's step: batch order, random draws, learning rate, loss, and the optimizer step.

One language per batch; AdamW with warm-up and linear decay; gradient
accumulation; CUDA autocast when present. Every random draw of batch j of
step s comes from a generator seeded by (seed, s, j), the batch order of
epoch e from (seed, e), and the learning rate is a function of the step, so
a step depends on the step number and the weights alone: what makes resume
exact (pipeline.student.checkpoint).

Under torchrun a step holds grad_accum x world batches, each rank runs every
world-th of them, and gradients are summed across ranks with each batch
weighted 1 / (batches in the step): N ranks equal one process with
grad_accum x N, draws included, and parameters that no batch of the step
touched keep no gradient, so AdamW leaves them alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.core.distributed import sum_gradients
from pipeline.models.clsr import gate_budget_loss
from pipeline.models.decode import EncoderStore
from pipeline.student.config import TrainConfig
from pipeline.student.inputs import Example
from pipeline.student.losses import KD_LOSSES, cross_entropy, weighted_cross_entropy
from pipeline.student.model import trainable_parameters


@dataclass
class Run:
    """What every step of one run reads: the model and its optimizer, the examples and their encoder outputs,
    where it runs, and the run's length."""

    cfg: TrainConfig
    model: Any
    optimizer: torch.optim.Optimizer
    params: list[torch.Tensor]  # the trainable ones
    examples: list[Example]
    store: EncoderStore
    pad_id: int
    device: torch.device
    autocast: torch.dtype | None
    per_epoch: int  # optimizer steps
    total: int
    rank: int
    world: int


def run_step(run: Run, step: int) -> dict:
    """Optimizer step ``step`` (0-based): this rank's batches of it, forward and backward, then the step over
    all ranks. Returns its log row: loss parts averaged over this rank's batches, lr, gradient norm."""
    cfg, world = run.cfg, run.world
    epoch, within = divmod(step, run.per_epoch)
    batches = epoch_batches(run.examples, cfg, epoch)
    in_step = batches[within * cfg.grad_accum * world : (within + 1) * cfg.grad_accum * world]
    group = in_step[run.rank :: world]
    run.model.train()
    for g in run.optimizer.param_groups:
        g["lr"] = lr_at(step, run.total, cfg) * g["scale"]
    run.optimizer.zero_grad(set_to_none=True)  # untouched parameters keep grad None: AdamW skips them
    logged: dict[str, float] = {}
    for j in range(run.rank, len(in_step), world):
        torch.manual_seed(batch_seed(cfg.seed, step, j))
        batch = [run.examples[i] for i in in_step[j]]
        loss, parts = step_loss(run.model, batch, run.store, cfg, step, run.total, run.pad_id, run.device, run.autocast)
        (loss / len(in_step)).backward()
        for k, v in parts.items():
            logged[k] = logged.get(k, 0.0) + v / len(group)
    grad_norm = optimizer_step(run.optimizer, run.params, cfg.max_grad_norm, world)
    record = {
        "step": step + 1,
        "epoch": epoch,
        "lr": lr_at(step, run.total, cfg),
        "language": run.examples[group[0][0]].utt.language if group else None,
        **logged,
        "grad_norm": grad_norm,
    }
    clsr_state = getattr(run.model, "_clsr_state", None)
    if clsr_state is not None:
        rates = clsr_state.rates()
        record["gate_mean"] = sum(rates.values()) / max(len(rates), 1)
    return record


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; the CLSR gates' group runs at ``lr x gate_lr_scale``
    (each group's ``scale`` multiplies the scheduled lr)."""
    named = trainable_parameters(model)
    gates = [p for n, p in named.items() if ".gates." in n]
    others = [p for n, p in named.items() if ".gates." not in n]
    groups = [{"params": others, "scale": 1.0}] + ([{"params": gates, "scale": cfg.gate_lr_scale}] if gates else [])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)


def optimizer_step(optimizer, params: list[torch.Tensor], max_grad_norm: float, world: int) -> float:
    """Sum the gradients over ranks (each batch's loss is already divided by the step's batch count), clip their
    global norm to ``max_grad_norm`` (0: no clipping), step.

    Returns the global norm before clipping. Parameters without a gradient stay out of the norm and the step."""
    sum_gradients(params, world)
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        norm = 0.0
    elif max_grad_norm > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(with_grad, max_grad_norm))
    else:
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in with_grad])))
    optimizer.step()
    return norm


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to 0 at ``total``."""
    warmup = max(1, int(cfg.warmup_ratio * total))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cfg.lr * max(0.0, (total - step) / max(1, total - warmup))


def batch_seed(seed: int, step: int, index: int) -> int:
    """Seed of the random draws (CLSR gate noise, skipped gates, dropout) of batch ``index`` of ``step``.

    It depends on the batch's place in the step, not on the rank that runs it,
    so N ranks and one process with grad_accum x N draw alike."""
    return int(np.random.SeedSequence([seed, step, index]).generate_state(1)[0])


def epoch_batches(examples: list[Example], cfg: TrainConfig, epoch: int) -> list[list[int]]:
    """One language per batch; order fixed by (seed, epoch)."""
    rng = random.Random(cfg.seed * 1_000_003 + epoch)
    batches = []
    for lang in sorted({e.utt.language for e in examples}):
        idx = [i for i, e in enumerate(examples) if e.utt.language == lang]
        rng.shuffle(idx)
        batches += [idx[i : i + cfg.batch_size] for i in range(0, len(idx), cfg.batch_size)]
    rng.shuffle(batches)
    return batches


def _batch_tensors(batch: list[Example], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """decoder inputs [B, L], label-position mask [B, L], labels (flat, label positions only)."""
    rows = [e.prompt + e.labels[:-1] for e in batch]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    at_label = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, e) in enumerate(zip(rows, batch)):
        ids[i, : len(r)] = torch.tensor(r)
        at_label[i, len(e.prompt) - 1 : len(e.prompt) - 1 + len(e.labels)] = True
    labels = torch.tensor([t for e in batch for t in e.labels])
    return ids.to(device), at_label.to(device), labels.to(device)


def step_loss(
    model,
    batch: list[Example],
    store: EncoderStore,
    cfg: TrainConfig,
    step: int,
    total: int,
    pad_id: int,
    device,
    autocast,
) -> tuple[torch.Tensor, dict]:
    """The weighted loss of one batch (CE, CLSR gate budget, KD as the mode asks) and its parts as floats."""
    ids, at_label, labels = _batch_tensors(batch, pad_id, device)
    state = getattr(model, "_clsr_state", None)
    if state is not None:
        state.reset()
        state.language, state.step, state.max_steps = batch[0].utt.language, step, total
        state.decoder_mask = (
            torch.arange(ids.shape[1], device=device)[None]
            < torch.tensor([len(e.prompt) + len(e.labels) - 1 for e in batch], device=device)[:, None]
        )
    ctx = torch.autocast(device.type, dtype=autocast) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        logits = model(decoder_input_ids=ids, **store.kwargs([e.utt for e in batch])).logits
    logits = logits[at_label].float()
    w_ce, w_gate, w_kd = cfg.weights
    if any(e.by_teacher for e in batch):  # each token's CE weighs 1, or teacher_label_ce_weight on a teacher's row
        weight = torch.tensor(
            [cfg.teacher_label_ce_weight if e.by_teacher else 1.0 for e in batch for _ in e.labels], device=device
        )
        parts = {"ce": weighted_cross_entropy(logits, labels, weight, cfg.label_smoothing)}
    else:  # as it always was, to the bit
        parts = {"ce": cross_entropy(logits, labels, cfg.label_smoothing)}
    loss = w_ce * parts["ce"]
    if state is not None:
        parts["gate"] = gate_budget_loss(state, cfg.gate_budget)
        loss = loss + w_gate * parts["gate"]
    if w_kd:
        parts["kd"] = _kd_loss(logits, batch, cfg, device)
        loss = loss + w_kd * parts["kd"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def _kd_loss(logits: torch.Tensor, batch: list[Example], cfg: TrainConfig, device) -> torch.Tensor:
    """The divergence between the student's label-position ``logits`` and the teacher's cached top-k."""
    t = [e.teacher() for e in batch]
    topk_ids = torch.from_numpy(np.concatenate([x.topk_ids for x in t])).to(device)
    topk_lp = torch.from_numpy(np.concatenate([x.topk_logprobs for x in t])).to(device)
    tail = torch.from_numpy(np.concatenate([x.tail_logprob for x in t])).to(device)
    return KD_LOSSES[cfg.kd_loss](
        logits,
        topk_ids,
        topk_lp,
        tail,
        tail=cfg.tail,
        temperature=cfg.temperature,
        teacher_temperature=t[0].temperature,
    )
