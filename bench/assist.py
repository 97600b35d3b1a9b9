"""The student as the teacher's assistant (speculative decoding): same ids as plain greedy or not, and the speed.

    python bench/assist.py [--n 16] [--languages ca cs fi] [--out bench/results/assist.json]

For each language, the teacher data/models/whisper-base decodes the first --n test utterances of that language
(data/prepared/test.jsonl) greedily, alone and with data/exports/distilwhisper-<lang> drafting for it
(``generate(assistant_model=...)``), one utterance at a time, the two decodes back to back in alternating order
(pipeline/evaluate/assist.py, what ``dw-pipe assist`` runs). Both stop at benchmark.max_new_tokens. The student
keeps the teacher's encoder, so it runs as a decoder alone on the teacher's encoder outputs. Records per language:
identical ids, seconds of each, their ratio, teacher decoder passes, drafts made and kept, and the weights a
decoder pass of each model multiplies.

Needs the embedded run's outputs (make repro: import_models, prepare_data, export_student). The default --n keeps
the run near 10 minutes on 2 cores; run it on an idle machine (the load average before and after is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import read_params  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.report.docs import bench_record, corpus_id  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="test utterances per language")
    parser.add_argument("--languages", nargs="+", default=["ca", "cs", "fi"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/assist.json")
    args = parser.parse_args()

    import torch

    from pipeline.evaluate.assist import AssistResult, assisted_decode, table_lines

    os.chdir(ROOT)  # the result names its folders as the repository does, wherever it ran
    params = read_params(Path("params.yaml"))
    teacher, prepared = Path("data/models/whisper-base"), Path("data/prepared")
    assistants = {lang: Path(f"data/exports/distilwhisper-{lang}") for lang in args.languages}
    for need in (teacher / "config.json", prepared / "test.jsonl", *(a / "config.json" for a in assistants.values())):
        if not need.exists():
            sys.exit(f"error: {need} is missing; run make repro first")
    cap = params["benchmark"]["max_new_tokens"]
    test = load_manifest(prepared / "test.jsonl")
    load_before, start = os.getloadavg(), time.perf_counter()
    results: list[AssistResult] = []
    for lang, assistant in assistants.items():
        utts = [u for u in test if u.language == lang][: args.n]
        results.append(assisted_decode(teacher, assistant, utts, prepared, lang, cap))
        print("\n".join(table_lines(results[-1:])[1 if len(results) > 1 else 0 :]), flush=True)
    seconds, load_after = time.perf_counter() - start, os.getloadavg()

    data = {
        "model": "data/models/whisper-base, assisted by data/exports/distilwhisper-<language>",
        "corpus": corpus_id(params["prepare_data"]),
        "corpus_name": "Festival ca/cs/fi",
        "utterances": {r.language: len(r.utterances) for r in results},
    }
    record = {
        **bench_record(
            ROOT,
            "python bench/assist.py " + shlex.join(sys.argv[1:]),
            data,
            load_before,
            load_after,
            torch.get_num_threads(),
        ),
        "seconds": round(seconds, 1),
        "languages": {r.language: r.to_json() for r in results},
    }
    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"{seconds:.0f} s in all; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
