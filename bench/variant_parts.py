"""Where one more student variant's training minutes go, per mode, on the embedded data.

    python bench/variant_parts.py [--steps 4] [--out bench/results/variant_parts.json]

On the embedded whisper-base with params.yaml's train_student settings, one
run on this machine (after `dvc repro cache_teacher`, whose encoder memo the
student reads):

1. one optimizer step (a batch of one language, as training runs it), median
   over --steps after a warm-up, for each mode: distilwhisper, clsr,
   finetune, lora, and kd (finetune + KD: distil-whisper's recipe); for the
   modes that keep the cross-attention frozen, the part of it spent on the
   keys and values of the (frozen) encoder outputs, timed alone on the same
   batch: what computing them once per utterance would save;
2. one dev decode (the selection's greedy decode of the whole dev set) with
   the untrained student;
3. a CTranslate2 int8 encoder pass of one utterance against reading its
   kept output from the encoder memo (pipeline/evaluate/shared_encodings.py):
   what each int8 export saves per test utterance once the memo holds it;
4. the training cost these give for the default run's length (its steps and
   dev decodes), and with ``eval_every`` = 8.
"""

from __future__ import annotations

import argparse
import json
import math
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
from pipeline.core.config import load_section, read_params  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.core.machine import machine  # noqa: E402
from pipeline.report.docs import corpus_id, provenance  # noqa: E402
from pipeline.student.inputs import load_training_data  # noqa: E402
from pipeline.student.loop import epoch_batches, step_loss  # noqa: E402
from pipeline.student.selection import dev_wer  # noqa: E402
from pipeline.student.train import TrainStageConfig, _encoder_stores, build_model  # noqa: E402

MODES = {
    "distilwhisper": {},
    "clsr": {},
    "finetune": {},
    "lora": {},
    "kd": {"mode": "finetune", "baseline_kd": True},
}
CPU = torch.device("cpu")


def step_seconds(model, batch, store, cfg, steps: int, pad: int) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = step_loss(model, batch, store, cfg, step, steps + 1, pad, CPU, None)
        loss.backward()
        optimizer.step()
        if step:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def cross_kv_seconds(model, batch, store, repeats: int = 3) -> float | None:
    """Seconds to project the batch's encoder outputs to every decoder layer's cross-attention keys and values,
    when those projections are frozen (None otherwise: they train, and must be computed each step)."""
    layers = [m for n, m in model.named_modules() if n.endswith("encoder_attn")]
    if any(p.requires_grad for layer in layers for p in (*layer.k_proj.parameters(), *layer.v_proj.parameters())):
        return None
    hidden = store.kwargs([e.utt for e in batch])["encoder_outputs"].last_hidden_state
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            for layer in layers:
                layer.k_proj(hidden)
                layer.v_proj(hidden)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def int8_encoder(cfg, data, memo_root: Path) -> dict:
    """CTranslate2 int8 encoder seconds for one utterance vs reading its output from an encoder memo."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    from pipeline.core.encoder_memo import EncoderMemo
    from pipeline.core.machine import compute_identity
    from pipeline.models.forward import features_for

    out = Path(tempfile.mkdtemp()) / "int8"
    TransformersConverter(str(cfg.base)).convert(str(out), quantization="int8")
    model = ctranslate2.models.Whisper(str(out), device="cpu", compute_type="int8")
    utt = data.dev_utts[0]
    feats = features_for(data.extractor, [utt], cfg.dev.parent).numpy()
    view = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32))
    model.encode(view)  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        encoded = np.array(model.encode(view))[0]
        times.append(time.perf_counter() - start)
    memo = EncoderMemo(memo_root, "bench", "ctranslate2:int8", data.extractor, compute_identity("cpu"))
    memo.save(cfg.dev.parent / utt.audio, encoded)
    reads = []
    for _ in range(3):
        start = time.perf_counter()
        kept = memo.load(cfg.dev.parent / utt.audio)
        reads.append(time.perf_counter() - start)
    assert kept is not None and np.array_equal(kept, encoded)
    return {"encode_s": round(statistics.median(times), 4), "memo_read_s": round(statistics.median(reads), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/variant_parts.json")
    args = parser.parse_args()

    stage = load_section(TrainStageConfig, "train_student")
    common = stage.configs()[0]
    rows = {}
    dev_seconds = None
    for name, own in MODES.items():
        cfg = replace(common, mode=own.get("mode", name), baseline_kd=own.get("baseline_kd", False))
        data = load_training_data(cfg)
        torch.manual_seed(0)
        model, _, _ = build_model(cfg)
        store, dev_store = _encoder_stores(cfg, model, data, CPU)
        pad = data.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        first = epoch_batches(data.examples, cfg, 0)[0]
        batch = [data.examples[i] for i in first]
        if dev_seconds is None:  # the untrained student's dev decode (the same for every mode before training)
            first_data = data
            start = time.perf_counter()
            dev_wer(model, data.dev_utts, dev_store, data.tokenizer, cfg)
            dev_seconds = time.perf_counter() - start
            n_dev = len(data.dev_utts)
            per_epoch = math.ceil(len(epoch_batches(data.examples, cfg, 0)) / cfg.grad_accum)
        step = step_seconds(model, batch, store, cfg, args.steps, pad)
        kv = cross_kv_seconds(model, batch, store)
        rows[name] = {
            "step_s": round(step, 3),
            "cross_kv_s": round(kv, 3) if kv is not None else None,
            "cross_kv_share": round(kv / step, 3) if kv is not None else None,
            "batch": len(batch),
            "label_tokens": sum(len(e.labels) for e in batch),
        }
        print(f"{name:<14} {step:7.2f} s/step  cross K/V {'-' if kv is None else f'{kv:.2f} s ({kv / step:.0%})'}")
        del model, store

    total = per_epoch * common.epochs
    evals_default = common.epochs + 1  # step 0 and each epoch's end
    every = 8
    evals_every = len({0, *range(every, total + 1, every), *range(per_epoch, total + 1, per_epoch)})
    for row in rows.values():
        row["train_s_default"] = round(total * row["step_s"] + evals_default * dev_seconds, 1)
        row["train_s_eval_every_8"] = round(total * row["step_s"] + evals_every * dev_seconds, 1)
        saved = total * (row["cross_kv_s"] or 0.0) * (common.epochs - 1) / common.epochs
        row["kv_once_per_utterance_saves_s"] = round(saved, 1)
    int8 = int8_encoder(common, first_data, Path(tempfile.mkdtemp()))

    here = machine()
    report = {
        "provenance": provenance(
            ROOT,
            "python bench/variant_parts.py " + shlex.join(sys.argv[1:]),
            {
                "student": f"{common.base}, decoder layers {list(common.keep_decoder_layers or [])}",
                "corpus": corpus_id(read_params()["prepare_data"]),
                "corpus_name": "Festival ca/cs/fi",
                "cache_format": FORMAT_VERSION,
                "machine": f"{here['cpu']} ({here['cpu_id']}), {here['cores']} cores",
            },
        ),
        "machine": here,
        "steps_per_run": total,
        "dev_decodes": {"default": evals_default, "eval_every_8": evals_every},
        "dev_utterances": n_dev,
        "dev_decode_s": round(dev_seconds, 1),
        "modes": rows,
        "ctranslate2_int8_encoder": int8,
    }
    print(f"\n{total} steps a run; dev decode of {n_dev} utterances: {dev_seconds:.1f} s")
    print(
        f"{'mode':<14} {'s/step':>7} {'K/V s':>6} {'train s (3 dev)':>15} {'train s (8 steps)':>17} {'K/V once saves':>15}"
    )
    for name, r in rows.items():
        kv = "-" if r["cross_kv_s"] is None else f"{r['cross_kv_s']:.2f}"
        print(
            f"{name:<14} {r['step_s']:>7} {kv:>6} {r['train_s_default']:>15} {r['train_s_eval_every_8']:>17} "
            f"{r['kv_once_per_utterance_saves_s']:>15}"
        )
    print(f"CTranslate2 int8 encoder: {int8['encode_s']} s an utterance; memo read {int8['memo_read_s']} s")
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
