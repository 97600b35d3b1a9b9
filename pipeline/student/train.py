"""train_student: CLSR experts distilled from the teacher cache, and the paper's baselines.

Modes: ``distilwhisper`` (CLSR + KD: 0.25 (CE + L_g) + 0.5 JS), ``clsr``
(CE + L_g), ``finetune`` (all weights; KD optional), ``lora`` (PEFT, r=64 on
fc1/fc2; KD optional). One language per batch; AdamW with warm-up and
linear decay; gradient accumulation; CUDA autocast when present.

Exact resume: every random draw of batch j of step s comes from a generator
seeded by (seed, s, j), the batch order of epoch e from (seed, e), and the
learning rate is a function of the step; a checkpoint holds the trainable
weights, the optimizer state and the step, so a resumed run repeats the
uninterrupted one. Under torchrun a step holds grad_accum x world batches,
each rank runs every world-th of them, and gradients are summed across
ranks with each batch weighted 1 / (batches in the step): N ranks equal one
process with grad_accum x N, draws included, and parameters that no batch
of the step touched keep no gradient, so AdamW leaves them alone.

When the encoder is frozen and has no CLSR layer, its outputs are computed
once per utterance and reused every epoch (the embedded profile's main
saving on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pipeline.core.distributed import barrier, rank_and_world, sum_gradients
from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_dir, atomic_write_text, recover_dir, sha256_files
from pipeline.core.progress import progress
from pipeline.data.manifest import Utterance, load_manifest
from pipeline.models.clsr import GATE_INITS, CLSRConfig, add_clsr, gate_budget_loss
from pipeline.models.decode import EncoderStore, greedy_decode
from pipeline.models.forward import pick_device, targets_of
from pipeline.student.losses import KD_LOSSES, cross_entropy
from pipeline.student.model import (
    CLSR_MODES,
    MODES,
    StudentSpec,
    build_student,
    save_student,
    trainable_parameters,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    mode: str
    languages: tuple[str, ...]
    base: Path
    cache: Path
    train: Path
    dev: Path
    out_dir: Path
    keep_encoder_layers: tuple[int, ...] | None = None
    keep_decoder_layers: tuple[int, ...] | None = None
    clsr_encoder_layers: tuple[int, ...] = ()
    clsr_decoder_layers: tuple[int, ...] = ()
    freeze_encoder: bool = True
    epochs: int = 10
    max_steps: int = 0  # 0: epochs decide
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-4
    # The gates' learning rate is lr x this (paper: 1). A gate starts undecided (G = 0 at the hard threshold)
    # and Adam moves it ~lr per step, so in a short run it never leaves the threshold and the inference
    # routing, 1[G >= 0], follows noise (README, "Gate learning rate").
    gate_lr_scale: float = 1.0
    beta2: float = 0.98
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0  # clip the global gradient norm (the HF Trainer default the official runs use); 0: off
    ce_weight: float = 0.25
    gate_weight: float = 0.25
    kd_weight: float = 0.5
    kd_loss: str = "js"
    tail: str = "ghost"
    temperature: float = 1.0
    label_smoothing: float = 0.1
    gate_budget: float = 0.5
    skip_gate_prob: float = 0.2
    expert_dropout: float = 0.3  # output dropout of the language experts (paper: 0.3)
    gate_init: str = "official"  # pipeline.models.clsr: official (W1, w2 ~ N(0, 0.02), as the official runs start) | zero
    baseline_kd: bool = False  # finetune / lora: add the KD term too
    lora_r: int = 64
    max_new_tokens: int = 225
    eval_batch_size: int = 16
    checkpoint_every: int = 50
    seed: int = 0
    device: str = "auto"
    # Train on the manifest's timestamped windows too (train utterances joined, with segments:
    # prepare_data.windows); false: on the plain utterances only, as without windows
    timestamp_windows: bool = True
    # Where frozen-encoder outputs are kept between stages and runs (pipeline/core/encoder_memo.py); None: not kept.
    # Left out of settings_record: a stored output is what the encoder computes again.
    encoder_memo: Path | None = None

    def settings_record(self) -> dict:
        """The settings that decide what training makes, as JSON values (student.json "training")."""
        record = json.loads(json.dumps(asdict(self), default=str))
        record.pop("encoder_memo")
        return record

    def check(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} not in {MODES}")
        if self.kd_loss not in KD_LOSSES:
            problems.append(f"kd_loss {self.kd_loss!r} not in {tuple(KD_LOSSES)}")
        if self.tail not in ("ghost", "renorm"):
            problems.append(f"tail {self.tail!r} not in ('ghost', 'renorm')")
        if self.mode in CLSR_MODES and not (self.clsr_encoder_layers or self.clsr_decoder_layers):
            problems.append("CLSR modes need clsr_encoder_layers and/or clsr_decoder_layers")
        if not self.languages:
            problems.append("languages is empty")
        if self.gate_lr_scale <= 0:
            problems.append(f"gate_lr_scale must be positive, not {self.gate_lr_scale}")
        if self.gate_init not in GATE_INITS:
            problems.append(f"gate_init {self.gate_init!r} not in {GATE_INITS}")
        if self.max_grad_norm < 0:
            problems.append(f"max_grad_norm must be >= 0 (0: no clipping), not {self.max_grad_norm}")
        if self.temperature <= 0:
            problems.append(f"temperature must be positive, not {self.temperature}")
        if problems:
            raise DwPipeError("train_student: " + "; ".join(problems))

    @property
    def uses_kd(self) -> bool:
        return self.kd_weight > 0 and (
            self.mode == "distilwhisper" or (self.mode in ("finetune", "lora") and self.baseline_kd)
        )

    @property
    def weights(self) -> tuple[float, float, float]:
        """(CE, gate budget, KD) weights for this mode."""
        if self.mode == "clsr":
            return 1.0, 1.0, 0.0
        if self.mode == "distilwhisper":
            return self.ce_weight, self.gate_weight, self.kd_weight
        return (1.0, 0.0, 0.0) if not self.uses_kd else (self.ce_weight, 0.0, self.kd_weight)


@dataclass
class Example:
    utt: Utterance
    prompt: list[int]
    labels: list[int]
    targets: object | None = None  # SparseTargets from the cache


@dataclass
class TrainState:
    step: int = 0
    best_wer: float = math.inf
    best_step: int = -1
    history: list[dict] = field(default_factory=list)
    best_by_language: dict[str, int] = field(default_factory=dict)  # language -> chosen step (CLSR modes)


def language_of(name: str) -> str | None:
    """The language a CLSR parameter serves (``...experts.<lang>...`` or ``...gates.<lang>...``), else None."""
    parts = name.split(".")
    for key in ("experts", "gates"):
        if key in parts[:-1]:
            return parts[parts.index(key) + 1]
    return None


def keep_best(state: TrainState, result: dict, params: dict[str, torch.Tensor], best: dict | None) -> dict:
    """Record the dev result of ``state.step`` and keep the best parameters seen so far.

    When every trainable parameter serves one language (CLSR experts and
    gates: a language's outputs depend on its own parameters only, and dev
    batches hold one language), each language keeps its own best step;
    otherwise the whole model keeps its best step.
    """
    state.history.append({"step": state.step, **result})
    snapshot = {k: v.detach().cpu().clone() for k, v in params.items()}
    langs = {k: language_of(k) for k in params}
    per_language = bool(params) and None not in langs.values()
    if best is None:  # the first candidate (the untrained student) starts every language's choice
        state.best_wer, state.best_step = result["wer"], state.step
        state.best_by_language = dict.fromkeys(sorted(set(langs.values())), state.step) if per_language else {}
        return snapshot
    if not per_language:
        if result["wer"] < state.best_wer:
            state.best_wer, state.best_step = result["wer"], state.step
            return snapshot
        return best
    best = dict(best)
    for lang in sorted(set(langs.values())):
        rate = result["per_language"].get(lang, {}).get("wer")
        chosen = state.best_by_language.get(lang)
        earlier = next((h for h in state.history if h["step"] == chosen), None) if chosen is not None else None
        before = earlier["per_language"].get(lang, {}).get("wer") if earlier else None
        # A language without dev utterances keeps its latest parameters.
        if rate is None or before is None or rate < before:
            state.best_by_language[lang] = state.step
            best.update({k: v for k, v in snapshot.items() if langs[k] == lang})
    chosen = [
        next(h for h in state.history if h["step"] == step)["per_language"].get(lang)
        for lang, step in state.best_by_language.items()
    ]
    errors = sum(c["errors"] for c in chosen if c)
    units = sum(c["ref_units"] for c in chosen if c)
    state.best_wer = errors / units if units else math.nan
    state.best_step = max(state.best_by_language.values())
    return best


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


def _examples(utts: list[Utterance], tokenizer, cache) -> list[Example]:
    out = []
    for u in utts:
        if cache is not None:
            t = cache.targets(u.id)
            out.append(Example(u, list(t.prompt), t.labels.tolist(), t))
        else:
            out.append(Example(u, *targets_of(u, tokenizer)))
    return out


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
    parts = {"ce": cross_entropy(logits, labels, cfg.label_smoothing)}
    loss = w_ce * parts["ce"]
    if state is not None:
        parts["gate"] = gate_budget_loss(state, cfg.gate_budget)
        loss = loss + w_gate * parts["gate"]
    if w_kd:
        t = [e.targets for e in batch]
        topk_ids = torch.from_numpy(np.concatenate([x.topk_ids for x in t])).to(device)
        topk_lp = torch.from_numpy(np.concatenate([x.topk_logprobs for x in t])).to(device)
        tail = torch.from_numpy(np.concatenate([x.tail_logprob for x in t])).to(device)
        parts["kd"] = KD_LOSSES[cfg.kd_loss](
            logits,
            topk_ids,
            topk_lp,
            tail,
            tail=cfg.tail,
            temperature=cfg.temperature,
            teacher_temperature=t[0].temperature,
        )
        loss = loss + w_kd * parts["kd"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def dev_wer(model, utts, store, tokenizer, cfg) -> dict:
    """Corpus-level dev error rate (WER, or CER for character languages), insertions, rate per language, gate rates."""
    from pipeline.core.scoring import score

    hyps, rates = greedy_decode(model, utts, store, tokenizer, cfg)
    counts = score([(u.text, h, u.language) for u, h in zip(utts, hyps)])
    per_language = {}
    for lang in sorted({u.language for u in utts}):
        c = score([(u.text, h, u.language) for u, h in zip(utts, hyps) if u.language == lang])
        per_language[lang] = {"wer": c.rate, "errors": c.errors, "ref_units": c.ref_units, "insertions": c.insertions}
    return {
        "wer": counts.rate,
        "insertions": counts.insertions,
        "ref_units": counts.ref_units,
        "per_language": per_language,
        "gate_rates": rates,
    }


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


def training_utterances(cfg: TrainConfig) -> list[Utterance]:
    """The train manifest's utterances of ``cfg.languages``; its timestamped windows only with timestamp_windows."""
    return [
        u for u in load_manifest(cfg.train) if u.language in cfg.languages and (cfg.timestamp_windows or not u.segments)
    ]


def training_inputs(cfg: TrainConfig) -> dict[str, str]:
    """Content fingerprints of what a run reads: the base weights and tokenizer, both manifests, and the
    teacher cache when the mode distils. A student or checkpoint made from other contents is stale, whatever
    the paths say (a cache rebuilt with another top_k sits at the same path)."""
    from pipeline.cache.reader import cache_fingerprint

    for what, path in (("train manifest", cfg.train), ("dev manifest", cfg.dev)):
        if not path.is_file():
            raise DwPipeError(f"train_student: {what} {path} does not exist; run prepare_data first")
    weights = sorted(cfg.base.glob("*.safetensors"))
    if not weights:
        raise DwPipeError(f"train_student: base {cfg.base} holds no .safetensors weights; run import_models first")
    inputs = {
        "base_weights_sha256": sha256_files(weights),
        "base_tokenizer_sha256": sha256_files(sorted(cfg.base.glob("tokenizer*.json"))),
        "train_manifest_sha256": sha256_files([cfg.train]),
        "dev_manifest_sha256": sha256_files([cfg.dev]),
    }
    if cfg.uses_kd:
        inputs["cache_sha256"] = cache_fingerprint(cfg.cache)
    return inputs


def check_languages(cfg: TrainConfig, tokenizer, train_utts: list[Utterance], dev_utts: list[Utterance], cache) -> None:
    """Refuse, in one line, training languages the tokenizer has no token for, or that the manifests or the
    teacher cache hold no utterance of (such a language would get untrained experts, or no dev choice)."""
    unk = tokenizer.unk_token_id
    unknown = [lang for lang in cfg.languages if tokenizer.convert_tokens_to_ids(f"<|{lang}|>") in (None, unk)]
    if unknown:
        raise DwPipeError(f"train_student: languages {unknown} have no language token in the tokenizer of {cfg.base}")
    for what, path, utts in (("train", cfg.train, train_utts), ("dev", cfg.dev, dev_utts)):
        absent = [lang for lang in cfg.languages if not any(u.language == lang for u in utts)]
        if absent:
            raise DwPipeError(f"train_student: the {what} manifest {path} has no utterance in {absent}")
    if cache is not None:
        missing = [u for u in train_utts if u.id not in cache]
        if missing:
            langs = sorted({u.language for u in missing})
            raise DwPipeError(
                f"train_student: {len(missing)} training utterances ({langs}; first: {missing[0].id}) are not in the "
                f"teacher cache {cfg.cache}; rerun cache_teacher on {cfg.train}"
            )


def check_temperature(cfg: TrainConfig, cache) -> None:
    """KD at the cache's temperature, or (renorm only) at another one by exact re-tempering of the stored top-k.

    With the ghost bucket the mass outside the top-k cannot be re-tempered (the teacher's other logits are
    unknown), so a mismatch there is refused."""
    if cache is None:
        return
    stored = float(cache.content["identity"]["temperature"])
    if stored != cfg.temperature and cfg.tail != "renorm":
        raise DwPipeError(
            f"train_student: temperature {cfg.temperature} differs from the cache's {stored} ({cfg.cache}); "
            "train at the cache's temperature, use tail: renorm (re-tempered exactly), or rebuild the cache"
        )


def _checkpoint_dir(cfg: TrainConfig) -> Path:
    return cfg.out_dir.parent / f".{cfg.out_dir.name}.checkpoint"


def _config_hash(cfg: TrainConfig, inputs: dict[str, str]) -> str:
    import hashlib

    record = {"training": cfg.settings_record(), "inputs": inputs}
    return hashlib.sha256(json.dumps(record, default=str, sort_keys=True).encode()).hexdigest()


def _save_checkpoint(
    cfg: TrainConfig, inputs: dict[str, str], model, optimizer, state: TrainState, best: dict[str, torch.Tensor] | None
) -> None:
    with atomic_dir(_checkpoint_dir(cfg), overwrite=True) as tmp:
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


def _load_checkpoint(
    cfg: TrainConfig, inputs: dict[str, str], model, optimizer
) -> tuple[TrainState, dict[str, torch.Tensor] | None] | None:
    folder = _checkpoint_dir(cfg)
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


def train_student(cfg: TrainConfig, inputs: dict[str, str] | None = None) -> dict:
    """Train, keep the checkpoint with the best dev WER, and write the student folder.

    ``inputs``: :func:`training_inputs` of ``cfg`` when the caller has them already."""
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    cfg.check()
    inputs = inputs or training_inputs(cfg)
    rank, world = rank_and_world()
    device, autocast = pick_device(cfg.device)
    tokenizer = WhisperTokenizer.from_pretrained(cfg.base)
    extractor = WhisperFeatureExtractor.from_pretrained(cfg.base)
    cache = None
    if cfg.uses_kd:
        from pipeline.cache.reader import open_cache

        cache = open_cache(cfg.cache, tokenizer_json=cfg.base / "tokenizer.json", manifest=cfg.train)
    train_utts = training_utterances(cfg)
    dev_utts = [u for u in load_manifest(cfg.dev) if u.language in cfg.languages]
    check_languages(cfg, tokenizer, train_utts, dev_utts, cache)
    check_temperature(cfg, cache)
    examples = _examples(train_utts, tokenizer, cache)

    torch.manual_seed(cfg.seed)  # gate initialisation and LoRA init
    model, spec, clsr = build_model(cfg)
    model.to(device)
    precompute = cfg.freeze_encoder and not cfg.clsr_encoder_layers
    key = (str(cfg.base), cfg.keep_encoder_layers)

    def store_for(manifest: Path, dtype: torch.dtype) -> EncoderStore:
        return EncoderStore(model, extractor, manifest.parent, precompute, device, key, dtype, disk=cfg.encoder_memo)

    store = store_for(cfg.train, torch.float16)
    store.fill(train_utts)
    # Dev decoding reads float32 encoder outputs, as the benchmark does, so that the best step and the export's
    # gate rates are chosen on the numbers the benchmark will see (the training store keeps float16 to save memory).
    dev_store = store_for(cfg.dev, torch.float32)
    dev_store.fill(dev_utts)
    params = list(trainable_parameters(model).values())
    optimizer = make_optimizer(model, cfg)
    per_epoch = math.ceil(len(epoch_batches(examples, cfg, 0)) / (cfg.grad_accum * world))
    total = cfg.max_steps or per_epoch * cfg.epochs
    resumed = _load_checkpoint(cfg, inputs, model, optimizer)
    state, best = resumed if resumed else (TrainState(), None)
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    log_path = cfg.out_dir.parent / f".{cfg.out_dir.name}.log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _truncate_log(log_path, state.step)

    log.info("%s: %d training utterances, %d steps, %d dev utterances", cfg.mode, len(examples), total, len(dev_utts))
    if state.step == 0 and rank == 0 and not state.history:
        # The untrained student is the first candidate for "best": training must beat it on dev.
        best = keep_best(state, dev_wer(model, dev_utts, dev_store, tokenizer, cfg), trainable_parameters(model), None)
    bar = progress(range(state.step, total), desc=f"train {cfg.mode}", total=total - state.step, unit="step")
    for step in bar:
        epoch, within = divmod(step, per_epoch)
        batches = epoch_batches(examples, cfg, epoch)
        in_step = batches[within * cfg.grad_accum * world : (within + 1) * cfg.grad_accum * world]
        group = in_step[rank::world]
        model.train()
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, total, cfg) * g["scale"]
        optimizer.zero_grad(set_to_none=True)  # untouched parameters keep grad None: AdamW skips them
        logged: dict[str, float] = {}
        for j in range(rank, len(in_step), world):
            torch.manual_seed(batch_seed(cfg.seed, step, j))
            loss, parts = step_loss(
                model, [examples[i] for i in in_step[j]], store, cfg, step, total, pad, device, autocast
            )
            (loss / len(in_step)).backward()
            for k, v in parts.items():
                logged[k] = logged.get(k, 0.0) + v / len(group)
        grad_norm = optimizer_step(optimizer, params, cfg.max_grad_norm, world)
        state.step = step + 1
        clsr_state = getattr(model, "_clsr_state", None)
        if rank == 0:
            record = {
                "step": state.step,
                "epoch": epoch,
                "lr": lr_at(step, total, cfg),
                "language": examples[group[0][0]].utt.language if group else None,
                **logged,
                "grad_norm": grad_norm,
            }
            if clsr_state is not None:
                rates = clsr_state.rates()
                record["gate_mean"] = sum(rates.values()) / max(len(rates), 1)
            with log_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        end_of_epoch = state.step % per_epoch == 0 or state.step == total
        if end_of_epoch and rank == 0:
            result = dev_wer(model, dev_utts, dev_store, tokenizer, cfg)
            log.info("step %d: dev WER %.4f", state.step, result["wer"])
            best = keep_best(state, result, trainable_parameters(model), best)
        if rank == 0 and (end_of_epoch or state.step % cfg.checkpoint_every == 0):
            _save_checkpoint(cfg, inputs, model, optimizer, state, best)
    if rank != 0:
        return {}
    return _finish(cfg, inputs, model, spec, clsr, state, best, log_path)


def _truncate_log(log_path: Path, step: int) -> None:
    """Keep the log rows of steps up to ``step`` (the checkpoint resumed from; 0: a fresh run keeps none).

    A kill between checkpoints leaves rows of steps the resumed run does again, and perhaps a torn last line."""
    if not log_path.is_file():
        return
    kept = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a kill cut short
        if row.get("step", math.inf) <= step:
            kept.append(line)
    atomic_write_text(log_path, "".join(f"{line}\n" for line in kept))


def _finish(cfg, inputs: dict[str, str], model, spec, clsr, state: TrainState, best, log_path: Path) -> dict:
    params = trainable_parameters(model)
    with torch.no_grad():
        for name, value in (best or {}).items():
            params[name].copy_(value)
    at = {h["step"]: h for h in state.history}
    if state.best_by_language:  # each language's parameters come from its own best step
        best_step: int | dict[str, int] = dict(sorted(state.best_by_language.items()))
        gate_rates = {lang: at[step].get("gate_rates", {}).get(lang, {}) for lang, step in best_step.items()}
    else:
        best_step, gate_rates = state.best_step, at[state.best_step].get("gate_rates", {})
    summary = {
        "mode": cfg.mode,
        "languages": list(cfg.languages),
        "steps": state.step,
        "best_step": best_step,
        "dev_wer_initial": state.history[0]["wer"],
        "dev_wer_best": state.best_wer,
        "gate_rates": gate_rates,
        "history": state.history,
    }
    with atomic_dir(cfg.out_dir, overwrite=True) as tmp:
        save_student(tmp, model, cfg.mode, spec, cfg.languages, clsr, cfg.settings_record(), inputs)
        (tmp / "train_log.jsonl").write_text(log_path.read_text() if log_path.is_file() else "", encoding="utf-8")
        (tmp / "dev.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        _write_plots(tmp, log_path)
    import shutil

    shutil.rmtree(_checkpoint_dir(cfg), ignore_errors=True)
    log_path.unlink(missing_ok=True)
    return summary


def _write_plots(out: Path, log_path: Path) -> None:
    """CSV curves for DVC plots: loss parts and mean gate value per step."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    keys = ["step", "ce", "kd", "gate", "gate_mean", "lr"]
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    (out / "curves.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


__all__ = ["TrainConfig", "train_student", "build_model", "lr_at", "epoch_batches", "batch_seed"]


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
