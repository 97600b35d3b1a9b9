"""Where the embedded run's time goes: encoding vs decoding an utterance, per engine, and reading a kept output.

    python bench/encoder_memo.py [--n 40] [--language cs] [--batch 16] [--out bench/results/encoder_memo.json]

Needs the embedded DAG's data (``make repro``, or at least import_models,
prepare_data and quantize): whisper-base from data/models, its CTranslate2
conversions in data/ct2, the first ``--n`` utterances of ``--language`` in
data/prepared/test.jsonl (one language: the benchmark decodes one at a time).
Seconds per utterance, one run, on this machine:

- encoder: transformers float32 (as the PyTorch students and training run
  it; batch 1 and ``--batch``), CTranslate2 float32 and int8_float32;
- decode, greedy, 64-token cap, from the encoder outputs, in batches of
  ``--batch`` and twice that (one language at a time, as the benchmark
  does): transformers ``generate`` (the untrained student, five decoder
  layers) and CTranslate2 float32 (the teacher, six);
- memo: loading one stored output (pipeline/core/encoder_memo.py) from disk.

It also checks the memo's premise on real audio: the transformers encoder's
output for an utterance is bitwise the same in batch 1 and in a batch.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import read_params  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.core.machine import machine  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.models.forward import features_for, prompt_ids  # noqa: E402
from pipeline.report.docs import corpus_id, provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def per_utterance(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--language", default="cs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/encoder_memo.json")
    args = parser.parse_args()

    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    from pipeline.core.encoder_memo import memo_for
    from pipeline.models import decode
    from pipeline.models.decode import EncoderStore
    from pipeline.student.model import StudentSpec, build_student

    base, prepared, ct2 = ROOT / "data/models/whisper-base", ROOT / "data/prepared", ROOT / "data/ct2"
    for need in (base / "config.json", prepared / "test.jsonl", ct2 / "teacher-float32", ct2 / "teacher-int8"):
        if not need.exists():
            sys.exit(f"error: {need.relative_to(ROOT)} is missing; run make repro first")
    utts = [u for u in load_manifest(prepared / "test.jsonl") if u.language == args.language][: args.n]
    n, bs = len(utts), args.batch
    extractor = WhisperFeatureExtractor.from_pretrained(base)
    tokenizer = WhisperTokenizer.from_pretrained(base)
    feats = features_for(extractor, utts, prepared)
    student = build_student(StudentSpec(base, None, (0, 1, 2, 4, 5)))
    encoder = student.get_encoder()
    results: dict[str, float] = {}
    with torch.no_grad():
        alone = []
        results["encoder transformers float32, batch 1"] = per_utterance(
            lambda: alone.extend(encoder(feats[i : i + 1]).last_hidden_state[0] for i in range(n)), n
        )
        batched = []
        results[f"encoder transformers float32, batch {bs}"] = per_utterance(
            lambda: batched.extend(encoder(feats[i : i + bs]).last_hidden_state for i in range(0, n, bs)), n
        )
    same = bool(torch.equal(torch.stack(alone), torch.cat(batched)))
    hidden = torch.cat(batched).numpy()
    prompts = [prompt_ids(tokenizer, u.language) for u in utts]
    for name, folder, ctype in (("float32", "teacher-float32", "float32"), ("int8", "teacher-int8", "int8_float32")):
        model = ctranslate2.models.Whisper(str(ct2 / folder), device="cpu", compute_type=ctype)
        model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[:1].numpy())))  # warm-up
        for size in (1, bs):
            views = [
                ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[i : i + size].numpy()))
                for i in range(0, n, size)
            ]
            results[f"encoder CTranslate2 {name}, batch {size}"] = per_utterance(
                lambda model=model, views=views: [model.encode(v) for v in views], n
            )
        if name == "float32":
            for size in (bs, 2 * bs):
                results[f"decode CTranslate2 float32 (6 layers), batch {size}"] = per_utterance(
                    lambda model=model, size=size: [
                        decode.greedy_ctranslate2(model, hidden[i : i + size], prompts[i : i + size], 64)
                        for i in range(0, n, size)
                    ],
                    n,
                )
    store = EncoderStore(student, extractor, prepared, True, torch.device("cpu"), dtype=torch.float32)
    for u, h in zip(utts, torch.cat(batched)):
        store.memo[u.id] = h
    for size in (bs, 2 * bs):
        ns = SimpleNamespace(eval_batch_size=size, max_new_tokens=64)
        results[f"decode transformers float32 (5 layers), batch {size}"] = per_utterance(
            lambda ns=ns: decode.greedy_token_ids(student, utts, store, tokenizer, ns), n
        )
    with tempfile.TemporaryDirectory() as tmp:
        memo = memo_for(Path(tmp), student, extractor)  # the key the pipeline uses (machine and versions too)
        for u, h in zip(utts, hidden):
            memo.save(prepared / u.audio, h)
        memo = memo_for(Path(tmp), student, extractor)  # a cold lookup
        results["memo: load one kept output"] = per_utterance(lambda: [memo.load(prepared / u.audio) for u in utts], n)

    width = max(len(k) for k in results)
    print(f"{f'seconds per utterance ({n} {args.language} test utterances)':<{width}}  seconds")
    for k, v in results.items():
        print(f"{k:<{width}}  {v:7.3f}")
    print(f"transformers encoder output bitwise equal in batch 1 and batch {bs}: {same}")
    data = {
        "model": "data/models/whisper-base; data/ct2/teacher-float32, teacher-int8",
        "corpus": corpus_id(read_params(ROOT / "params.yaml")["prepare_data"]),
        "language": args.language,
        "utterances": n,
    }
    record = {
        "provenance": provenance(ROOT, "python bench/encoder_memo.py " + shlex.join(sys.argv[1:]), data),
        "machine": machine(),
        "utterances": n,
        "threads": torch.get_num_threads(),
        "seconds_per_utterance": {k: round(v, 4) for k, v in results.items()},
        "batch_invariant_encoder": same,
    }
    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
