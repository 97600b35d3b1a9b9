"""Training-step cost of distillation from the cache, and WER before/after a short run per mode.

    python bench/train_step.py [--steps 8] [--short-steps 12] [--out bench/results/train_step.json]

On the embedded whisper-base (params.yaml: train_student, the student with
its frozen encoder's outputs computed once), one language per batch:

1. step time (median over --steps steps, after a warm-up) and peak RSS of
   a distilwhisper step with the KD term read from the teacher cache; of the
   same step without the KD term; and of a step that runs the teacher
   online (encoder + decoder, top-k on the fly) instead of reading the cache;
2. dev error rate before and after a short run (--short-steps) in each
   mode: distilwhisper, clsr, finetune, lora.

Needs `dvc repro cache_teacher` (data/cache, data/prepared, data/models).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.cache.format import FORMAT_VERSION  # noqa: E402
from pipeline.cache.reader import SparseTargets, open_cache  # noqa: E402
from pipeline.core.config import load_section, read_params  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.core.machine import machine  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.evaluate.measure import PeakRSS  # noqa: E402
from pipeline.models.decode import EncoderStore  # noqa: E402
from pipeline.models.forward import topk_of  # noqa: E402
from pipeline.report.docs import corpus_id, provenance  # noqa: E402
from pipeline.student.inputs import examples_of  # noqa: E402
from pipeline.student.loop import step_loss  # noqa: E402
from pipeline.student.train import TrainStageConfig, build_model, train_student  # noqa: E402


def time_steps(model, batch, store, cfg, steps: int, pad: int, teacher=None) -> tuple[float, float]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    times = []
    with PeakRSS() as rss:
        for step in range(steps + 1):
            start = time.perf_counter()
            if teacher is not None:  # the online alternative: run the teacher on this batch first
                batch = online_targets(teacher, batch, store, cfg, pad)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss, _ = step_loss(model, batch, store, cfg, step, steps, pad, torch.device("cpu"), None)
            loss.backward()
            optimizer.step()
            if step:  # the first step is a warm-up
                times.append(time.perf_counter() - start)
    return statistics.median(times), rss.peak_mb


def online_targets(teacher, batch, store, cfg, pad, autocast=None):
    """``batch`` with its sparse targets computed by ``teacher`` now, as a run without the cache would."""
    from pipeline.models.forward import Encoded, label_logits

    encoded = [Encoded(e.utt, e.prompt, e.labels) for e in batch]
    feats = store.raw_features([e.utt for e in batch])
    out = []
    for e, logits in zip(batch, label_logits(teacher, feats, encoded, pad, autocast)):
        ids, values, tail, _ = topk_of(logits, 16, cfg.temperature)
        out.append(replace(e, targets=SparseTargets(e.prompt, np.asarray(e.labels), ids, values, tail)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--short-steps", type=int, default=12, help="0: skip the short runs")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_step.json"))
    args = parser.parse_args()
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    stage = load_section(TrainStageConfig, "train_student")
    cfg = replace(stage.configs()[0], mode="distilwhisper")
    tokenizer = WhisperTokenizer.from_pretrained(cfg.base)
    extractor = WhisperFeatureExtractor.from_pretrained(cfg.base)
    cache = open_cache(cfg.cache, tokenizer_json=cfg.base / "tokenizer.json", manifest=cfg.train)
    utts = [u for u in load_manifest(cfg.train) if u.language == cfg.languages[0]][: cfg.batch_size]
    batch = examples_of(utts, tokenizer, cache)
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(0)
    model, _, _ = build_model(cfg)
    store = EncoderStore(model, extractor, cfg.train.parent, True, torch.device("cpu"))
    store.fill(utts)
    raw = EncoderStore(model, extractor, cfg.train.parent, False, torch.device("cpu"))
    raw.fill(utts)
    store.raw_features = lambda us: torch.stack([raw.memo[u.id] for u in us])
    teacher = WhisperForConditionalGeneration.from_pretrained(cfg.base).eval()
    rows = {}
    rows["distilwhisper_from_cache"] = time_steps(model, batch, store, cfg, args.steps, pad)
    rows["same_step_without_kd"] = time_steps(model, batch, store, replace(cfg, kd_weight=0.0), args.steps, pad)
    rows["distilwhisper_teacher_online"] = time_steps(model, batch, store, cfg, args.steps, pad, teacher=teacher)
    base = rows["same_step_without_kd"][0]
    data = {
        "student": f"{cfg.base}, decoder layers {list(cfg.keep_decoder_layers or [])}",
        "corpus": corpus_id(read_params()["prepare_data"]),
        "cache_format": FORMAT_VERSION,
        "language": cfg.languages[0],
    }
    report = {
        "provenance": provenance(ROOT, "python bench/train_step.py " + shlex.join(sys.argv[1:]), data),
        "machine": machine(),
        "batch_size": len(batch),
        "label_tokens": sum(len(e.labels) for e in batch),
        "steps": {
            k: {"seconds": round(t, 4), "ratio_to_no_kd": round(t / base, 3), "peak_rss_mb": m}
            for k, (t, m) in rows.items()
        },
    }
    print(f"{'step':<30} {'s/step':>8} {'x no-KD':>8} {'peak RSS MB':>12}")
    for k, v in report["steps"].items():
        print(f"{k:<30} {v['seconds']:>8} {v['ratio_to_no_kd']:>8} {v['peak_rss_mb']:>12}")

    short = {}
    for mode in ("distilwhisper", "clsr", "finetune", "lora") if args.short_steps else ():
        extra = {"lr": 1e-4} if mode in ("finetune", "lora") else {}
        run = replace(
            stage.configs()[0], mode=mode, max_steps=args.short_steps, out_dir=Path(tempfile.mkdtemp()) / mode, **extra
        )
        summary = train_student(run)
        short[mode] = {
            "dev_before": round(summary["dev_wer_initial"], 4),
            "dev_after_last": round(summary["history"][-1]["wer"], 4),
            "steps": summary["steps"],
        }
        print(
            f"{mode:<14} dev error rate {short[mode]['dev_before']} -> {short[mode]['dev_after_last']} after {summary['steps']} steps"
        )
    report["short_runs"] = short
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
