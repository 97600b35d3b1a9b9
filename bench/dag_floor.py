"""The least time the embedded `dvc repro` can take on this machine while every output stays as it is today.

    python bench/dag_floor.py [--n 12] [--steps 6] [--budget-min 15] [--out bench/results/dag_floor.json]

Needs the DAG's data (``make repro``): the manifests the stages read
(params.yaml), the students' base model (train_student.common.base), its
int8 conversion (<quantize.out_dir>/teacher-int8), the teacher cache, and
each student's dev.json.

A result that must stay identical fixes some work that no speed-up can
skip; this program counts it from the DAG's own inputs and prices it at
costs measured here, one run, this machine:

- float32 encoder passes: each distinct audio the float32 encoder of
  whisper-base sees (the teacher cache's manifest, the dev set the students
  are selected on, every benchmark dataset). Whisper's encoder reads a
  30-s window whatever the utterance's length, so an output is one pass;
  the students share the frozen encoder, so each audio counts once
  (pipeline/core/encoder_memo.py already keeps them). Priced at transformers'
  float32 encoder, one utterance at a time (the fastest float32 encoder
  here: bench/encoder_memo.py).
- int8 encoder passes: each distinct audio an int8 model decodes (the
  int8 teacher decodes every benchmark utterance; the students' int8
  encoders are the teacher's and are shared), and each 30-s window of the
  long-form recordings once. Priced at CTranslate2's int8 encoder.
- training steps: the steps each trained student took (its dev.json),
  priced at a distilwhisper step on a batch of short training utterances
  read from the teacher cache (the windows' longer labels cost more).

Everything else (synthesis, the teacher's decoder, decoding, dev
evaluation, scoring, loading) is left out, so the sum is a lower bound:
a run that keeps every output cannot be faster than it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.evaluate.ct2_tuning import machine  # noqa: E402
from pipeline.models.forward import features_for  # noqa: E402


def median_seconds(fn, items) -> float:
    """Median seconds of ``fn(item)`` over ``items`` after one untimed warm-up call."""
    fn(items[0])
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def distinct_audio(manifests: list[Path]) -> dict[str, list[Path]]:
    """Audio files (resolved) -> the manifests that name them."""
    seen: dict[str, list[Path]] = {}
    for manifest in manifests:
        for u in load_manifest(manifest):
            seen.setdefault(str((manifest.parent / u.audio).resolve()), []).append(manifest)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12, help="utterances each encoder is timed on")
    parser.add_argument("--steps", type=int, default=6, help="training steps timed")
    parser.add_argument("--budget-min", type=float, default=15.0, help="the run time asked for (issue 16)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/dag_floor.json")
    args = parser.parse_args()

    import ctranslate2
    from train_step import time_steps
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    from pipeline.cache.reader import open_cache
    from pipeline.core.config import load_section
    from pipeline.data.recordings import read_recordings
    from pipeline.models.decode import EncoderStore
    from pipeline.student.train import TrainStageConfig, _examples, build_model

    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    path = lambda p: ROOT / p  # noqa: E731
    stage = load_section(TrainStageConfig, "train_student")
    students = Path(params["train_student"]["out_dir"])
    float32_inputs = [path(params["cache_teacher"]["manifest"]), path(params["train_student"]["common"]["dev"])]
    bench_inputs = [path(p) for p in params["benchmark"]["datasets"].values()]
    longform = path(params["longform"]["manifest"])
    base = path(params["train_student"]["common"]["base"])  # the teacher the students are cut from
    int8 = path(params["quantize"]["out_dir"]) / "teacher-int8"
    needs = [*float32_inputs, *bench_inputs, longform, base / "config.json", int8 / "quantize.json"]
    needs += [path(students) / mode / "dev.json" for mode in params["train_student"]["modes"]]
    for need in needs:
        if not need.exists():
            sys.exit(f"error: {need.relative_to(ROOT)} is missing; run make repro first")

    float32_audio = distinct_audio(float32_inputs + bench_inputs)
    int8_audio = distinct_audio(bench_inputs)
    windows = sum(math.ceil(r["duration"] / 30.0) for r in read_recordings(longform))
    steps = {
        mode: json.loads((path(students) / mode / "dev.json").read_text(encoding="utf-8"))["steps"]
        for mode in params["train_student"]["modes"]
    }

    extractor = WhisperFeatureExtractor.from_pretrained(base)
    tokenizer = WhisperTokenizer.from_pretrained(base)
    test = bench_inputs[0]
    utts = load_manifest(test)[: args.n]
    feats = features_for(extractor, utts, test.parent)
    cfg = replace(stage.configs()[0], mode="distilwhisper")
    torch.manual_seed(0)
    model, _, _ = build_model(cfg)
    encoder = model.get_encoder().eval()
    info = json.loads((int8 / "quantize.json").read_text(encoding="utf-8"))
    views = [
        ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[i : i + 1].numpy())) for i in range(len(utts))
    ]
    cache = open_cache(cfg.cache, tokenizer_json=cfg.base / "tokenizer.json", manifest=cfg.train)
    train_utts = [u for u in load_manifest(cfg.train) if u.language == cfg.languages[0] and not u.segments][
        : cfg.batch_size
    ]
    store = EncoderStore(model, extractor, cfg.train.parent, True, torch.device("cpu"), disk=cfg.encoder_memo)
    store.fill(train_utts)
    batch = _examples(train_utts, tokenizer, cache)
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    cores = os.cpu_count() or 1
    costs: dict[str, dict[int, float]] = {"float32": {}, "int8": {}, "step": {}}
    for threads in sorted({cores, 1}, reverse=True):  # all cores in one process, and one thread (cores processes)
        torch.set_num_threads(threads)
        with torch.no_grad():
            costs["float32"][threads] = median_seconds(lambda i: encoder(feats[i : i + 1]), list(range(len(utts))))
        ct2 = ctranslate2.models.Whisper(
            str(int8), device="cpu", compute_type=info["effective_compute_type"], intra_threads=threads
        )
        costs["int8"][threads] = median_seconds(ct2.encode, views)
        del ct2
        costs["step"][threads] = time_steps(model, batch, store, cfg, args.steps, pad)[0]
    torch.set_num_threads(cores)
    # The machine's cost of one unit: one process on every core, or ``cores`` one-thread processes side by side
    # (independent units: utterances, and the students, which train apart), whichever is cheaper.
    unit = {k: min(v[cores], v[1] / cores) for k, v in costs.items()}

    rows = [
        ("float32 encoder passes (distinct audio: cache, dev, benchmark)", len(float32_audio), "float32"),
        ("int8 encoder passes (distinct benchmark audio)", len(int8_audio), "int8"),
        ("int8 encoder passes (long-form 30-s windows, once)", windows, "int8"),
        (f"training steps ({', '.join(f'{m} {s}' for m, s in steps.items())})", sum(steps.values()), "step"),
    ]
    floor = sum(n * unit[k] for _, n, k in rows)
    budget = args.budget_min * 60
    width = max(len(r[0]) for r in rows)
    print(
        f"{'work no identical-output run can skip':<{width}} {'count':>6} {f'{cores} thr':>7} {'1 thr':>7} {'seconds':>8}"
    )
    for name, n, k in rows:
        print(f"{name:<{width}} {n:>6} {costs[k][cores]:>7.3f} {costs[k][1]:>7.3f} {n * unit[k]:>8.1f}")
    print(
        f"{'floor (lower bound: decoding, synthesis, loading left out)':<{width}} {'':>6} {'':>7} {'':>7} {floor:>8.1f}"
    )
    print(f"{'asked for':<{width}} {'':>6} {'':>7} {'':>7} {budget:>8.1f}")
    print(
        f"floor / asked: {floor / budget:.2f} ({cores} cores; seconds: each unit at the cheaper of {cores} threads "
        f"and 1 thread / {cores})"
    )
    record = {
        "command": " ".join(["python bench/dag_floor.py", *sys.argv[1:]]),
        "cores": cores,
        "machine": machine(),  # unit costs hold for this CPU only (two "AMD EPYC"s here differed 4.9x)
        "timed_utterances": len(utts),
        "timed_steps": args.steps,
        "seconds_each": {k: {f"{t} threads": round(x, 4) for t, x in v.items()} for k, v in costs.items()},
        "rows": [
            {"work": name, "count": n, "unit": k, "seconds_each": round(unit[k], 4), "seconds": round(n * unit[k], 1)}
            for name, n, k in rows
        ],
        "floor_seconds": round(floor, 1),
        "asked_seconds": budget,
    }
    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
