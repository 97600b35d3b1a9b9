"""The CUDA paths of cache_teacher and train_student, with models of the paper's sizes.

    python bench/gpu_paths.py --data DIR --like DIR [--out bench/results/gpu_paths.json]

Needs a CUDA GPU. DIR (--data) holds ``train.jsonl`` and ``dev.jsonl`` with
their audio (such as the embedded data/prepared: timestamped windows in
train.jsonl are cached and trained on too); --like is an HF Whisper folder whose
tokenizer, feature extractor and generation config the models reuse. The
models are random-weight Whisper models of the real shapes (whisper-base,
-small, -large-v2): their outputs mean nothing, their cost is real.

1. ``cache_agreement``: the same base-sized teacher cached on CUDA (bf16
   autocast, as ``device: auto`` picks) and on the CPU (float32): both
   verify; top-1 agreement, top-k overlap and tail log-mass difference.
2. ``cache_throughput``: ``build_cache`` with a large-v2-sized teacher on
   CUDA: label tokens and utterances per second.
3. ``train_step``: one distilwhisper step of a small-sized student (CLSR
   experts on every encoder and decoder layer, as profiles/paper.yaml), batch
   16, the most frequent training language: KD from the cache vs the same step without KD vs the
   large-v2-sized teacher run online; median seconds and peak GPU memory.
4. ``train_student``: a short end-to-end ``train_student`` run on CUDA from
   the large-v2 cache; the student folder loads back.

Each section records its error instead of stopping the others.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import time
import traceback
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_step import online_targets  # noqa: E402  (bench/ is on sys.path when run)

from pipeline.cache.build import CacheTeacherConfig, build_cache  # noqa: E402
from pipeline.cache.format import FORMAT_VERSION  # noqa: E402
from pipeline.cache.reader import open_cache, verify_cache  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.models.decode import EncoderStore  # noqa: E402
from pipeline.models.forward import pick_device  # noqa: E402
from pipeline.models.tiny import tiny_whisper_config  # noqa: E402
from pipeline.report.docs import provenance  # noqa: E402
from pipeline.student.config import TrainConfig  # noqa: E402
from pipeline.student.inputs import examples_of  # noqa: E402
from pipeline.student.loop import step_loss  # noqa: E402
from pipeline.student.train import build_model, train_student  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # (d_model, layers, heads, ffn) of the OpenAI checkpoints
    "base": (512, 6, 8, 2048),
    "small": (768, 12, 12, 3072),
    "large-v2": (1280, 32, 20, 5120),
}
DEVICE = "cuda"  # --smoke: "cpu" with toy shapes, to check this program without a GPU


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def reset_peak() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gpu_mb() -> int | None:
    return round(torch.cuda.max_memory_allocated() / 2**20) if DEVICE == "cuda" else None


COPIED = (
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
)


def random_whisper(shape: str, like: Path, out: Path) -> Path:
    from transformers import WhisperForConditionalGeneration

    d, layers, heads, ffn = SHAPES[shape]
    config = tiny_whisper_config(layers, d, heads, ffn)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = WhisperForConditionalGeneration(config)
    model.save_pretrained(out)
    for name in COPIED:
        if (like / name).is_file():
            shutil.copy(like / name, out / name)
    return out


def cache_agreement(base: Path, data: Path, work: Path) -> dict:
    folders = {}
    for device in (DEVICE, "cpu"):
        cfg = CacheTeacherConfig(
            teacher=base, manifest=data / "dev.jsonl", out_dir=work / f"cache-{device}", device=device
        )
        start = time.perf_counter()
        build_cache(cfg)
        folders[device] = (cfg.out_dir, time.perf_counter() - start)
    problems = {d: verify_cache(f) for d, (f, _) in folders.items()}
    gpu, cpu = (open_cache(folders[d][0]) for d in (DEVICE, "cpu"))
    top1, overlap, tail_diff, positions = 0, 0.0, 0.0, 0
    for uid in cpu.index:
        a, b = gpu.targets(uid), cpu.targets(uid)
        top1 += int((a.topk_ids[:, 0] == b.topk_ids[:, 0]).sum())
        for ids_a, lp_a, ids_b, lp_b in zip(a.topk_ids, a.topk_logprobs, b.topk_ids, b.topk_logprobs):
            kept_a, kept_b = set(ids_a[np.isfinite(lp_a)].tolist()), set(ids_b[np.isfinite(lp_b)].tolist())
            overlap += len(kept_a & kept_b) / max(len(kept_a), len(kept_b))  # of the entries kept (min_prob: <= k)
        tail_diff += float(np.abs(a.tail_logprob - b.tail_logprob).sum())
        positions += len(a.labels)
    return {
        "verify_problems": problems,
        "label_positions": positions,
        "top1_agreement": round(top1 / positions, 4),
        "topk_overlap": round(overlap / positions, 4),
        "mean_abs_tail_logprob_diff": round(tail_diff / positions, 5),
        "seconds": {d: round(s, 2) for d, (_, s) in folders.items()},
    }


def cache_throughput(teacher: Path, data: Path, work: Path, batch_size: int) -> dict:
    cfg = CacheTeacherConfig(
        teacher=teacher,
        manifest=data / "train.jsonl",
        out_dir=work / "cache-large",
        batch_size=batch_size,
        device=DEVICE,
    )
    reset_peak()
    start = time.perf_counter()
    build_cache(cfg)
    seconds = time.perf_counter() - start
    content = json.loads((cfg.out_dir / "cache.json").read_text())
    return {
        "batch_size": batch_size,
        "utterances": content["rows"],
        "label_tokens": content["tokens"],
        "seconds_with_model_load": round(seconds, 2),
        "label_tokens_per_second": round(content["tokens"] / seconds, 1),
        "utterances_per_second": round(content["rows"] / seconds, 2),
        "peak_gpu_mb": peak_gpu_mb(),
        "bytes_per_label_token": round(
            sum(f.stat().st_size for f in cfg.out_dir.iterdir() if f.is_file()) / content["tokens"], 2
        ),
    }


def train_steps(student: Path, teacher: Path, cache: Path, data: Path, steps: int) -> dict:
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    layers = tuple(range(SHAPES["small"][1]))
    language = Counter(u.language for u in load_manifest(data / "train.jsonl")).most_common(1)[0][0]
    cfg = TrainConfig(
        device=DEVICE,
        mode="distilwhisper",
        languages=(language,),
        base=student,
        cache=cache,
        train=data / "train.jsonl",
        dev=data / "dev.jsonl",
        out_dir=data / "unused",
        clsr_encoder_layers=layers,
        clsr_decoder_layers=layers,
        batch_size=16,
    )
    device, autocast = pick_device(DEVICE)
    tokenizer = WhisperTokenizer.from_pretrained(student)
    extractor = WhisperFeatureExtractor.from_pretrained(student)
    utts = [u for u in load_manifest(cfg.train) if u.language == language][: cfg.batch_size]
    batch = examples_of(
        utts, tokenizer, open_cache(cache, tokenizer_json=student / "tokenizer.json", manifest=cfg.train)
    )
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model, _, _ = build_model(cfg)
    model.to(device)
    store = EncoderStore(model, extractor, cfg.train.parent, False, device)  # encoder experts: features, not outputs
    store.fill(utts)
    store.raw_features = lambda us: torch.stack([store.memo[u.id] for u in us]).to(device)
    teacher_model = WhisperForConditionalGeneration.from_pretrained(teacher).to(device).eval()
    params = [p for p in model.parameters() if p.requires_grad]

    def timed(run_cfg, online: bool) -> dict:
        optimizer = torch.optim.AdamW(params, lr=run_cfg.lr)
        sync()
        reset_peak()
        times = []
        for step in range(steps + 2):
            start = time.perf_counter()
            b = online_targets(teacher_model, batch, store, run_cfg, pad, autocast) if online else batch
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss, _ = step_loss(model, b, store, run_cfg, step, steps, pad, device, autocast)
            loss.backward()
            optimizer.step()
            sync()
            if step >= 2:  # two warm-up steps
                times.append(time.perf_counter() - start)
        return {"seconds": statistics.median(times), "peak_gpu_mb": peak_gpu_mb()}

    rows = {
        "distilwhisper_from_cache": timed(cfg, False),
        "same_step_without_kd": timed(replace(cfg, kd_weight=0.0), False),
        "distilwhisper_teacher_online": timed(cfg, True),
    }
    base = rows["same_step_without_kd"]["seconds"]
    for row in rows.values():
        row["ratio_to_no_kd"] = round(row["seconds"] / base, 3)
        row["seconds"] = round(row["seconds"], 4)
    return {
        "autocast": str(autocast),
        "language": language,
        "batch_size": len(batch),
        "label_tokens": sum(len(e.labels) for e in batch),
        "steps": rows,
    }


def short_training(student: Path, cache: Path, data: Path, work: Path) -> dict:
    from pipeline.student.model import load_student

    layers = tuple(range(SHAPES["small"][1]))
    cfg = TrainConfig(
        device=DEVICE,
        mode="distilwhisper",
        languages=tuple(sorted({u.language for u in load_manifest(data / "train.jsonl")})),
        base=student,
        cache=cache,
        train=data / "train.jsonl",
        dev=data / "dev.jsonl",
        out_dir=work / "students" / "distilwhisper",
        clsr_encoder_layers=layers,
        clsr_decoder_layers=layers,
        max_steps=12,
        checkpoint_every=6,
        max_new_tokens=24,
        batch_size=16,
    )
    start = time.perf_counter()
    summary = train_student(cfg)
    seconds = time.perf_counter() - start
    model, record = load_student(cfg.out_dir)
    return {
        "steps": summary["steps"],
        "seconds": round(seconds, 2),
        "dev_history": [round(h["wer"], 4) for h in summary["history"]],
        "reloaded_parameters": sum(p.numel() for p in model.parameters()),
        "mode": record["mode"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--like", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-paths"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_paths.json"))
    parser.add_argument(
        "--smoke", action="store_true", help="toy shapes on the CPU: checks this program, measures nothing"
    )
    args = parser.parse_args()
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
        SHAPES.update({name: (64, 2, 4, 128) for name in SHAPES})
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_paths: no CUDA device")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else "none (--smoke)"
    data = {
        "models": "toy shapes (--smoke)"
        if args.smoke
        else "random weights of the whisper-base, -small, -large-v2 shapes",
        "data": str(args.data),
        "cache_format": FORMAT_VERSION,
        "gpu": gpu,
    }
    report: dict = {
        "provenance": provenance(ROOT, "python bench/gpu_paths.py " + shlex.join(sys.argv[1:]), data),
        "gpu": gpu,
        "torch": torch.__version__,
        "bf16": DEVICE == "cuda" and torch.cuda.is_bf16_supported(),
    }

    def section(name, fn, *a):
        start = time.perf_counter()
        try:
            report[name] = fn(*a)
        except Exception as exc:  # keep the other sections' numbers
            report[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        print(f"[{time.perf_counter() - start:7.1f} s] {name}: {json.dumps(report[name])[:1500]}", flush=True)
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")

    models = {}
    for shape in ("base", "small", "large-v2"):
        section(f"model_{shape}", lambda s=shape: str(random_whisper(s, args.like, args.work / f"whisper-{s}")))
        models[shape] = args.work / f"whisper-{shape}"
    section("cache_agreement", cache_agreement, models["base"], args.data, args.work)
    section("cache_throughput", cache_throughput, models["large-v2"], args.data, args.work, 16)
    large_cache = args.work / "cache-large"
    section("train_step", train_steps, models["small"], models["large-v2"], large_cache, args.data, args.steps)
    section("train_student", short_training, models["small"], large_cache, args.data, args.work)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
