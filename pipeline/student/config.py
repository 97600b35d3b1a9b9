"""TrainConfig: one student's training settings, checked together before anything loads.

``pipeline.student.train.TrainStageConfig`` builds one per student from
``params.yaml: train_student``; every other module of the stage reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.cache.hub import is_hub_uri, parse_hub_uri
from pipeline.core.errors import DwPipeError
from pipeline.models.clsr import GATE_INITS
from pipeline.student.losses import KD_LOSSES
from pipeline.student.model import CLSR_MODES, MODES

TEACHER_LABEL_SETTINGS = (
    "unlabelled",
    "teacher_label_ce_weight",
    "max_compression_ratio",
    "min_avg_logprob",
    "max_no_speech_prob",
    "max_weak_wer",
)


@dataclass(frozen=True)
class TrainConfig:
    """One student's training: its mode, inputs, output folder, optimiser, loss weights and dev decoding."""

    mode: str
    languages: tuple[str, ...]
    base: Path
    # A cache folder, or a cache on the Hugging Face Hub: hf://datasets/OWNER/NAME[@REVISION] (pipeline/cache/hub.py)
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
    kd_loss: str = "js"  # js | kl (forward) | rkl (reverse): pipeline.student.losses.KD_LOSSES
    tail: str = "ghost"
    temperature: float = 1.0
    label_smoothing: float = 0.1
    gate_budget: float = 0.5
    skip_gate_prob: float = 0.2
    expert_dropout: float = 0.3  # output dropout of the language experts (paper: 0.3)
    gate_init: str = (
        "official"  # pipeline.models.clsr: official (W1, w2 ~ N(0, 0.02), as the official runs start) | zero
    )
    baseline_kd: bool = False  # finetune / lora: add the KD term too
    lora_r: int = 64
    max_new_tokens: int = 225
    eval_batch_size: int = 16
    # Decode the dev set every this many steps too (beside each epoch's end and step 0), so the best step is chosen
    # among more than the epoch ends; 0: at the epoch ends only
    eval_every: int = 0
    checkpoint_every: int = 50
    seed: int = 0
    device: str = "auto"
    # Train on the manifest's timestamped windows too (train utterances joined, with segments:
    # prepare_data.windows); false: on the plain utterances only, as without windows
    timestamp_windows: bool = True
    # Where frozen-encoder outputs are kept between stages and runs (pipeline/core/encoder_memo.py); None: not kept.
    # Left out of settings_record: a stored output is what the encoder computes again.
    encoder_memo: Path | None = None
    # GiB of log-mels or encoder outputs training holds (0.96 MB a log-mel, 0.77 MB a whisper-base output in
    # float16); past it each batch's are made again when it is read, to the same bits (bench/scale.py: a paper-sized
    # corpus of log-mels would hold over 200 GB). Left out of settings_record: it changes memory, not the student.
    feature_memory_gb: float = 8.0
    # Train on the cache's teacher-labelled rows too (cache_teacher.labels: teacher): the rows of `unlabelled` that
    # pass the filters below, their labels the teacher's transcripts. CE on them weighs teacher_label_ce_weight
    # (0: KD alone there). The filters are Whisper's own thresholds for distrusting a decode (whisper/transcribe.py),
    # and, for a row with a weak reference (a subtitle), distil-whisper's WER threshold on pseudo-labels (10 %).
    teacher_labels: bool = False
    unlabelled: Path | None = None
    teacher_label_ce_weight: float = 1.0
    max_compression_ratio: float = 2.4
    min_avg_logprob: float = -1.0
    max_no_speech_prob: float = 0.6
    max_weak_wer: float = 0.1

    def settings_record(self) -> dict:
        """The settings that decide what training makes, as JSON values (student.json "training"); the teacher-label
        settings only when they are used, so the students of reference labels keep the record they had."""
        record = json.loads(json.dumps(asdict(self), default=str))
        record.pop("encoder_memo")
        record.pop("feature_memory_gb")
        if not self.teacher_labels:
            for key in ("teacher_labels", *TEACHER_LABEL_SETTINGS):
                record.pop(key)
        if is_hub_uri(self.cache):  # as written: Path() turned hf://datasets/... into hf:/datasets/...
            record["cache"] = parse_hub_uri(self.cache).uri
        return record

    def check(self) -> None:
        """Refuse impossible settings, every problem in one error."""
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
        if self.feature_memory_gb < 0:
            problems.append(f"feature_memory_gb {self.feature_memory_gb}: give a size in GiB (0: hold none)")
        if self.gate_lr_scale <= 0:
            problems.append(f"gate_lr_scale must be positive, not {self.gate_lr_scale}")
        if self.gate_init not in GATE_INITS:
            problems.append(f"gate_init {self.gate_init!r} not in {GATE_INITS}")
        if self.max_grad_norm < 0:
            problems.append(f"max_grad_norm must be >= 0 (0: no clipping), not {self.max_grad_norm}")
        if self.eval_every < 0:
            problems.append(f"eval_every must be >= 0 (0: at each epoch's end only), not {self.eval_every}")
        if self.temperature <= 0:
            problems.append(f"temperature must be positive, not {self.temperature}")
        if self.teacher_labels:
            problems += self._teacher_label_problems()
        if problems:
            raise DwPipeError("train_student: " + "; ".join(problems))

    def _teacher_label_problems(self) -> list[str]:
        problems = []
        if self.unlabelled is None:
            problems.append("teacher_labels needs unlabelled: the manifest cache_teacher labelled")
        if self.teacher_label_ce_weight < 0:
            problems.append(f"teacher_label_ce_weight must be >= 0, not {self.teacher_label_ce_weight}")
        elif self.teacher_label_ce_weight == 0 and not self.uses_kd:
            problems.append(
                f"teacher_label_ce_weight 0 in mode {self.mode}, which has no KD: the teacher's rows would teach nothing"
            )
        if not 0 <= self.max_no_speech_prob <= 1:
            problems.append(f"max_no_speech_prob {self.max_no_speech_prob} outside [0, 1]")
        if self.max_compression_ratio <= 0 or self.max_weak_wer < 0:
            problems.append("max_compression_ratio must be positive and max_weak_wer >= 0")
        return problems

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
