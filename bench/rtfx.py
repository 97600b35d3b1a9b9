"""Decoding speed on CPU: faster-whisper int8 and CTranslate2 vs transformers float32, one utterance at a time.

    python bench/rtfx.py [--n 48] [--out bench/results/rtfx.json]

The first N utterances of data/prepared/test.jsonl, decoded greedily with an
explicit language, no timestamps, at most 64 new tokens (the benchmark's cap; every engine
stops at the same count), one utterance per
call for every engine (so batching does not decide the ratio), after one
warm-up utterance: transformers float32 (features + generate), CTranslate2
float32 and int8 (features + generate), faster-whisper int8 (its own
features; the lazy segment generator consumed inside the timer). Run it on
an idle machine: RTFx = audio seconds / decode seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.audio import read_wav  # noqa: E402
from pipeline.decode import faster_whisper_transcribe, greedy_ctranslate2, strip_prompt  # noqa: E402
from pipeline.manifest import load_manifest  # noqa: E402
from pipeline.teacher import prompt_ids  # noqa: E402

MAX_NEW = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--teacher", type=Path, default=Path("data/models/whisper-base"))
    parser.add_argument("--ct2", type=Path, default=Path("data/ct2"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/rtfx.json"))
    args = parser.parse_args()
    import ctranslate2
    from faster_whisper import WhisperModel
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    manifest = Path("data/prepared/test.jsonl")
    utts = load_manifest(manifest)[:: max(1, len(load_manifest(manifest)) // args.n)][: args.n]
    audio = {u.id: read_wav(manifest.parent / u.audio) for u in utts}
    seconds = sum(len(a) for a in audio.values()) / 16_000
    extractor = WhisperFeatureExtractor.from_pretrained(args.teacher)
    tokenizer = WhisperTokenizer.from_pretrained(args.teacher)
    hf = WhisperForConditionalGeneration.from_pretrained(args.teacher).eval()

    def run_hf(u):
        feats = extractor([audio[u.id]], sampling_rate=16_000, return_tensors="pt").input_features
        prompt = prompt_ids(tokenizer, u.language)
        with torch.inference_mode():
            out = hf.generate(
                feats, decoder_input_ids=torch.tensor([prompt]), do_sample=False, num_beams=1, max_new_tokens=MAX_NEW
            )
        return strip_prompt(out[0].tolist(), prompt)

    def ct2_runner(ctype):
        model = ctranslate2.models.Whisper(
            str(args.ct2 / f"teacher-{ctype}"), device="cpu", compute_type="default" if ctype == "float32" else "int8"
        )

        def run(u):
            feats = extractor([audio[u.id]], sampling_rate=16_000, return_tensors="np").input_features
            return greedy_ctranslate2(model, feats, [prompt_ids(tokenizer, u.language)], MAX_NEW)[0]

        return run

    fw = WhisperModel(str(args.ct2 / "teacher-int8"), device="cpu", compute_type="int8")

    def run_fw(u):
        return faster_whisper_transcribe(fw, audio[u.id], u.language, MAX_NEW)

    engines = {
        "transformers float32": run_hf,
        "ctranslate2 float32": ct2_runner("float32"),
        "ctranslate2 int8": ct2_runner("int8"),
        "faster-whisper int8": run_fw,
    }
    rows = {}
    for name, run in engines.items():
        run(utts[0])  # warm-up
        start = time.perf_counter()
        for u in utts:
            run(u)
        wall = time.perf_counter() - start
        rows[name] = {"decode_seconds": round(wall, 2), "rtfx": round(seconds / wall, 2)}
    base = rows["transformers float32"]["rtfx"]
    print(f"{len(utts)} utterances, {seconds:.1f} s of audio, {torch.get_num_threads()} threads")
    print(f"{'engine':<22} {'decode s':>9} {'RTFx':>7} {'x transformers':>15}")
    for name, r in rows.items():
        r["ratio_to_transformers_float32"] = round(r["rtfx"] / base, 2)
        print(f"{name:<22} {r['decode_seconds']:>9} {r['rtfx']:>7} {r['ratio_to_transformers_float32']:>15}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"utterances": len(utts), "audio_seconds": round(seconds, 1), "engines": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
