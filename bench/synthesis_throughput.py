"""Speech synthesis throughput of the embedded corpus (prepare_data, source synthetic).

    python bench/synthesis_throughput.py [--n 200] [--out bench/results/synthesis.json]

Plans the corpus from params.yaml (prepare_data), then synthesizes, checks
and writes the first N utterances with 1 worker and with 2 workers; prints
utterances per second, audio seconds per wall second, and the speed-up.
Needs espeak-ng, the fortunes packages and data/models/whisper-base.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import load_section, read_params  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.core.machine import machine  # noqa: E402
from pipeline.core.scoring import normalize  # noqa: E402
from pipeline.data.manifest import Checker  # noqa: E402
from pipeline.data.materialize import process  # noqa: E402
from pipeline.data.prepare import PrepareDataConfig, synthetic_candidates  # noqa: E402
from pipeline.report.docs import corpus_id, provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/synthesis.json"))
    args = parser.parse_args()
    from transformers import GenerationConfig, WhisperTokenizer

    cfg = load_section(PrepareDataConfig, "prepare_data")
    candidates, _ = synthetic_candidates(cfg)
    candidates = candidates[: args.n]
    tokenizer = WhisperTokenizer.from_pretrained(cfg.model)
    languages = frozenset(t.strip("<|>") for t in GenerationConfig.from_pretrained(cfg.model).lang_to_id)
    rows = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            kept, rejected = process(candidates, Checker(languages, tokenizer, normalize), Path(tmp), workers)
            wall = time.perf_counter() - start
        audio = sum(u.duration for u in kept)
        rows.append(
            {
                "workers": workers,
                "utterances": len(kept),
                "rejected": len(rejected),
                "wall_s": round(wall, 2),
                "utt_per_s": round(len(kept) / wall, 1),
                "audio_s_per_s": round(audio / wall, 1),
            }
        )
    speedup = rows[0]["wall_s"] / rows[1]["wall_s"]
    print(f"{'workers':>7} {'utts':>6} {'wall s':>8} {'utt/s':>8} {'audio s/s':>10}")
    for r in rows:
        print(f"{r['workers']:>7} {r['utterances']:>6} {r['wall_s']:>8} {r['utt_per_s']:>8} {r['audio_s_per_s']:>10}")
    print(f"speed-up with 2 workers: {speedup:.2f}x on {os.cpu_count()} cores")
    data = {"corpus": corpus_id(read_params()["prepare_data"]), "utterances": len(candidates)}
    record = {
        "provenance": provenance(ROOT, "python bench/synthesis_throughput.py " + shlex.join(sys.argv[1:]), data),
        "machine": machine(),
        "rows": rows,
        "speedup_2_workers": round(speedup, 2),
        "cpu_count": os.cpu_count(),
    }
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
