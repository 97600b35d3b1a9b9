"""Does a longer greedy decode begin with the capped one, row for row, in batches where rows end at different steps?

    python bench/cap_prefix.py [--out bench/results/cap_prefix.json]

pipeline/evaluate/caps.py scores the target languages at Whisper's default
caps by cutting one long decode to each cap. This checks that premise on
tiny random Whispers (pipeline/models/tiny.py) whose end-of-text embedding is
pushed (``eos_bias``) so that, in one batch of 16, rows end after 1 to
hundreds of tokens and others loop to any cap. Inputs: random log-mel with
a different band raised per row and a different language per batch. Per
engine (transformers ``generate`` as the benchmark batches it; CTranslate2
float32 and int8 from encoder outputs, as the benchmark decodes them), each
batch is decoded at 64, 224 and 444 new tokens and the 444 decode is cut to
64 and 224; counts rows whose cut ids differ, and rows whose
hit-the-cap flag differs. For CTranslate2 it also decodes the rows that hit
64 as a batch of their own (another batch composition) at 444.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluate.quantize import quantize  # noqa: E402
from pipeline.models.decode import DEFAULT_CAPS, greedy_ctranslate2, quiet_generate, strip_prompt, text_tokens  # noqa: E402
from pipeline.models.forward import prompt_ids  # noqa: E402
from pipeline.models.tiny import save_tiny_whisper  # noqa: E402

CAPS = (64, DEFAULT_CAPS["ctranslate2"], DEFAULT_CAPS["transformers"])  # 64, 224, 444
LANGUAGES = ("pl", "cs", "bg", "de")


def features(seed: int, rows: int = 16) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, 80, 3000)).astype(np.float32)
    for r in range(rows):
        x[r, 5 * r : 5 * r + 5] += 4.0  # a per-row pattern the encoder's normalisation keeps
    return x


def hf_decode(model, feats: np.ndarray, prompt: list[int], language: str, cap: int, eos: int) -> list[list[int]]:
    with torch.inference_mode(), quiet_generate():
        out = model.generate(
            input_features=torch.from_numpy(feats),
            decoder_input_ids=torch.tensor([prompt] * len(feats)),
            language=language,
            task="transcribe",
            do_sample=False,
            num_beams=1,
            max_new_tokens=cap,
            return_timestamps=False,
        )
    return [text_tokens(strip_prompt(seq.tolist(), prompt), eos) for seq in out]


def compare(by_cap: dict[int, list[list[int]]]) -> dict:
    """Rows of the longest decode cut to each shorter cap vs that cap's own decode."""
    longest = by_cap[max(by_cap)]
    out = {"rows": len(longest), "lengths": [len(x) for x in longest]}
    for cap, ids in by_cap.items():
        out[f"cut_differs_at_{cap}"] = sum(a[:cap] != b for a, b in zip(longest, ids))
        out[f"hit_flag_differs_at_{cap}"] = sum((len(a) >= cap) != (len(b) >= cap) for a, b in zip(longest, ids))
    return out


def run(work: Path, biases: tuple[float, ...]) -> dict:
    import ctranslate2
    from transformers import WhisperForConditionalGeneration, WhisperTokenizer

    results = []
    for bias in biases:
        hf_dir = save_tiny_whisper(work / f"hf-{bias}", eos_bias=bias)
        tokenizer = WhisperTokenizer.from_pretrained(hf_dir)
        eos = tokenizer.eos_token_id
        hf = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
        engines = {}
        for ctype in ("float32", "int8"):
            quantize(hf_dir, work / f"ct2-{bias}-{ctype}", ctype)
            engines[ctype] = ctranslate2.models.Whisper(str(work / f"ct2-{bias}-{ctype}"), compute_type=ctype)
        for i, language in enumerate(LANGUAGES):
            feats, prompt = features(i), prompt_ids(tokenizer, language)
            by_cap = {cap: hf_decode(hf, feats, prompt, language, cap, eos) for cap in CAPS}
            results.append({"engine": "transformers", "eos_bias": bias, "language": language, **compare(by_cap)})
            for ctype, model in engines.items():
                encoded = np.array(model.encode(ctranslate2.StorageView.from_array(feats)))
                by_cap = {cap: greedy_ctranslate2(model, encoded, [prompt] * len(feats), cap) for cap in CAPS}
                row = {"engine": f"ctranslate2 {ctype}", "eos_bias": bias, "language": language, **compare(by_cap)}
                looped = [r for r, x in enumerate(by_cap[64]) if len(x) >= 64]
                if looped:  # the looping rows alone: another batch composition
                    alone = greedy_ctranslate2(model, encoded[looped], [prompt] * len(looped), max(CAPS))
                    row["own_batch_differs"] = sum(a != by_cap[max(CAPS)][r] for a, r in zip(alone, looped))
                results.append(row)
    return {"caps": list(CAPS), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/cap_prefix.json"))
    parser.add_argument("--biases", type=float, nargs="+", default=[0.24, 0.26, 0.28])
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        report = run(Path(scratch), tuple(args.biases))
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(
        f"{'engine':<22} {'bias':>5} {'lang':>4} {'<64':>4} {'64-443':>6} {'444':>4} {'cut differs':>12} {'own batch':>9}"
    )
    for r in report["results"]:
        lengths = r["lengths"]
        differs = sum(v for k, v in r.items() if k.startswith(("cut_differs", "hit_flag")))
        print(
            f"{r['engine']:<22} {r['eos_bias']:>5} {r['language']:>4} {sum(n < 64 for n in lengths):>4} "
            f"{sum(64 <= n < 444 for n in lengths):>6} {sum(n >= 444 for n in lengths):>4} {differs:>12} "
            f"{r.get('own_batch_differs', '-'):>9}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
