"""Decoding speed on CPU: faster-whisper and CTranslate2 against transformers float32, and CTranslate2's settings.

    python bench/rtfx.py [--n 24] [--repeats 3] [--batch 8] [--sweep-n 6] [--out bench/results/rtfx.json]

1. CTranslate2 settings (pipeline/evaluate/ct2_tuning.py, what `dw-pipe ct2-tune` runs): seconds per
   utterance for float32, int8_float32 and int8 under each setting (CT2_FORCE_CPU_ISA,
   CT2_USE_MKL; one process each), 1 thread and every core under the default, batch 1 and 8,
   median of --repeats, and whether the token ids equal the default's; the setting the
   pipeline picks (the fastest with identical ids everywhere, the default unless 5 % faster).
   This process then decodes under that setting.
2. Engines on the first --n utterances of data/prepared/test.jsonl (spread over the file),
   greedy, language given, no timestamps, at most 64 new tokens (every engine stops at the same
   count): transformers float32 (features + generate), CTranslate2 float32, int8_float32 and
   int8 (features + generate), faster-whisper int8 (its own features; the lazy segment
   generator consumed inside the timer). One utterance per call, and in batches of --batch
   (transformers and CTranslate2; faster-whisper's batched pipeline splits one long recording,
   it has no call for many short ones, so its engine - CTranslate2 int8 - stands for it).
   --repeats rounds, each timing every engine once in turn (so a slow spell of the shared
   machine hits every engine of that round); the ratio to transformers float32 is taken within
   each round, and the table gives medians.
3. Where the time goes: encoder seconds per utterance (transformers float32, CTranslate2 float32
   and int8), against the whole decode: the encoder runs on a 30-second window whatever the
   utterance's length, so it bounds what int8 can gain.

Needs the embedded DAG's data (make repro). Run it on an idle machine: RTFx = audio seconds / decode seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import read_params  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.core.machine import machine  # noqa: E402
from pipeline.data.audio import read_wav  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.evaluate import ct2_tuning  # noqa: E402
from pipeline.models.decode import faster_whisper_transcribe, greedy_ctranslate2, strip_prompt  # noqa: E402
from pipeline.models.forward import features_for, prompt_ids  # noqa: E402
from pipeline.report.docs import corpus_id, provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

MAX_NEW = 64
COMPUTE = {"float32": "teacher-float32", "int8_float32": "teacher-int8", "int8": "teacher-int8"}


def settings_table(args, utts, extractor, tokenizer) -> tuple[list[dict], dict]:
    sample = utts[: args.sweep_n]
    features = features_for(extractor, sample, Path("data/prepared")).numpy()
    prompts = [prompt_ids(tokenizer, u.language) for u in sample]
    rows = ct2_tuning.sweep(
        {k: args.ct2 / v for k, v in COMPUTE.items()}, features, prompts, repeats=args.repeats, max_new=MAX_NEW
    )
    choice = ct2_tuning.choose(rows)
    print(f"CTranslate2 settings: seconds per utterance, median of {args.repeats}, {len(sample)} utterances")
    print("\n".join(ct2_tuning.table_lines(rows)))
    print(f"the pipeline picks: {choice['reason']}")
    return rows, choice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sweep-n", type=int, default=6, help="utterances for the settings sweep")
    parser.add_argument("--teacher", type=Path, default=Path("data/models/whisper-base"))
    parser.add_argument("--ct2", type=Path, default=Path("data/ct2"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/rtfx.json"))
    args = parser.parse_args()
    for need in ("data/prepared/test.jsonl", args.ct2 / "teacher-float32", args.ct2 / "teacher-int8"):
        if not Path(need).exists():
            sys.exit(f"error: {need} is missing; run make repro first")
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # generate()'s notes on max_length and masks, once per call
    manifest = Path("data/prepared/test.jsonl")
    everything = load_manifest(manifest)
    utts = everything[:: max(1, len(everything) // args.n)][: args.n]
    audio = {u.id: read_wav(manifest.parent / u.audio) for u in utts}
    seconds = sum(len(a) for a in audio.values()) / 16_000
    extractor = WhisperFeatureExtractor.from_pretrained(args.teacher)
    tokenizer = WhisperTokenizer.from_pretrained(args.teacher)

    setting_rows, choice = settings_table(args, utts, extractor, tokenizer)  # before CTranslate2 loads here
    for key in ct2_tuning.ENV_KEYS:
        os.environ.pop(key, None)
    os.environ.update(choice["env"])
    import ctranslate2
    from faster_whisper import WhisperModel

    hf = WhisperForConditionalGeneration.from_pretrained(args.teacher).eval()
    prompts = {u.id: prompt_ids(tokenizer, u.language) for u in utts}
    batches = [utts[i : i + args.batch] for i in range(0, len(utts), args.batch)]

    def hf_decode(chunk):
        feats = extractor([audio[u.id] for u in chunk], sampling_rate=16_000, return_tensors="pt").input_features
        with torch.inference_mode():
            out = hf.generate(
                feats,
                decoder_input_ids=torch.tensor([prompts[u.id] for u in chunk]),
                do_sample=False,
                num_beams=1,
                max_new_tokens=MAX_NEW,
            )
        return [strip_prompt(row.tolist(), prompts[u.id]) for row, u in zip(out, chunk)]

    ct2_models = {
        ctype: ctranslate2.models.Whisper(
            str(args.ct2 / folder), device="cpu", compute_type=ctype, intra_threads=choice["threads"]
        )
        for ctype, folder in COMPUTE.items()
    }

    def ct2_decode(ctype):
        def run(chunk):
            feats = extractor([audio[u.id] for u in chunk], sampling_rate=16_000, return_tensors="np").input_features
            return greedy_ctranslate2(ct2_models[ctype], feats, [prompts[u.id] for u in chunk], MAX_NEW)

        return run

    fw = WhisperModel(str(args.ct2 / "teacher-int8"), device="cpu", compute_type="int8", cpu_threads=choice["threads"])

    def fw_decode(chunk):
        return [faster_whisper_transcribe(fw, audio[u.id], u.language, MAX_NEW) for u in chunk]

    engines = {  # name -> (decode a list of utterances, batched?)
        "transformers float32": (hf_decode, False),
        "ctranslate2 float32": (ct2_decode("float32"), False),
        "ctranslate2 int8_float32": (ct2_decode("int8_float32"), False),
        "ctranslate2 int8": (ct2_decode("int8"), False),
        "faster-whisper int8": (fw_decode, False),
        f"transformers float32, batch {args.batch}": (hf_decode, True),
        f"ctranslate2 float32, batch {args.batch}": (ct2_decode("float32"), True),
        f"ctranslate2 int8_float32, batch {args.batch}": (ct2_decode("int8_float32"), True),
        f"ctranslate2 int8, batch {args.batch}": (ct2_decode("int8"), True),
    }
    for run, _ in engines.values():
        run(utts[:1])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, (run, batched) in engines.items():
            start = time.perf_counter()
            for chunk in batches if batched else ([u] for u in utts):
                run(chunk)
            times[name].append(time.perf_counter() - start)

    def encoder_seconds(encode) -> float:
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for u in utts:
                encode(u)
            runs.append((time.perf_counter() - start) / len(utts))
        return statistics.median(runs)

    def hf_encode(u):
        feats = extractor([audio[u.id]], sampling_rate=16_000, return_tensors="pt").input_features
        with torch.inference_mode():
            hf.model.encoder(feats)

    def ct2_encode(ctype):
        def run(u):
            feats = extractor([audio[u.id]], sampling_rate=16_000, return_tensors="np").input_features
            ct2_models[ctype].encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)))

        return run

    encoders = {
        "transformers float32": encoder_seconds(hf_encode),
        "ctranslate2 float32": encoder_seconds(ct2_encode("float32")),
        "ctranslate2 int8": encoder_seconds(ct2_encode("int8")),
    }
    rows = {}
    base = "transformers float32"
    for name, runs in times.items():
        reference = times[f"{base}, batch {args.batch}" if name.endswith(f"batch {args.batch}") else base]
        ratios = [r / t for r, t in zip(reference, runs)]
        rows[name] = {
            "decode_seconds": round(statistics.median(runs), 2),
            "runs": [round(t, 2) for t in runs],
            "seconds_per_utterance": round(statistics.median(runs) / len(utts), 4),
            "rtfx": round(seconds / statistics.median(runs), 2),
            "ratio_to_transformers_float32": round(statistics.median(ratios), 2),
            "ratios": [round(r, 2) for r in ratios],
        }
    print(
        f"\n{len(utts)} utterances, {seconds:.1f} s of audio, {torch.get_num_threads()} torch threads, "
        f"CTranslate2: {choice['setting']}, {choice['threads'] or 'default'} threads; medians of {args.repeats} rounds"
    )
    print(f"{'engine':<34} {'decode s':>9} {'s/utt':>7} {'RTFx':>7} {'x transformers':>15}  per round")
    for name, r in rows.items():
        print(
            f"{name:<34} {r['decode_seconds']:>9} {r['seconds_per_utterance']:>7} {r['rtfx']:>7} "
            f"{r['ratio_to_transformers_float32']:>15}  {r['ratios']}"
        )
    print("encoder alone, s per utterance (median): " + ", ".join(f"{k} {v:.3f}" for k, v in encoders.items()))
    for name in ("transformers float32", "ctranslate2 float32", "ctranslate2 int8"):
        share = encoders[name] / rows[name]["seconds_per_utterance"]
        print(f"  {name}: the encoder is {share:.0%} of the one-at-a-time decode")
    data = {
        "model": f"{args.teacher} and its CTranslate2 conversions in {args.ct2}",
        "corpus": corpus_id(read_params()["prepare_data"]),
        "utterances": len(utts),
        "audio_seconds": round(seconds, 1),
    }
    record = {
        "provenance": provenance(ROOT, "python bench/rtfx.py " + shlex.join(sys.argv[1:]), data),
        "utterances": len(utts),
        "audio_seconds": round(seconds, 1),
        "repeats": args.repeats,
        "batch": args.batch,
        "machine": machine(),
        "ct2_settings": setting_rows,
        "ct2_choice": choice,
        "engines": rows,
        "encoder_seconds_per_utterance": {k: round(v, 4) for k, v in encoders.items()},
    }
    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
