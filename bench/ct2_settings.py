"""CTranslate2 on this CPU: speed of each compute type under each setting, and whether the hypotheses stay the same.

    python bench/ct2_settings.py [--n 10] [--repeats 3] [--out bench/results/ct2_settings.json]

CTranslate2 reads ``CT2_FORCE_CPU_ISA`` and ``CT2_USE_MKL`` once, when the
library loads, so every environment setting runs in a fresh process (this
program with ``--worker``). Settings: the default (on this AMD EPYC
CTranslate2 picks the AVX2 path and oneDNN, not MKL), ``CT2_FORCE_CPU_ISA=AVX512``
and ``CT2_USE_MKL=1``. Per setting, compute type (float32, int8_float32,
int8), intra-op threads (2; and 1 under the default) and batch size (1, 16): the
median over ``--repeats`` of the seconds per utterance to encode and greedily
decode (64-token cap, language given) the first ``--n`` cs test utterances
of the embedded DAG (data/prepared/test.jsonl, data/ct2/teacher-*), from
log-mel features computed once. "same ids" compares each run's token ids
with the default setting's at the same compute type, batch 1, 2 threads.
Needs the embedded DAG's data (make repro). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # name -> environment
    "default": {},
    "AVX512": {"CT2_FORCE_CPU_ISA": "AVX512"},
    "MKL": {"CT2_USE_MKL": "1"},
}
COMPUTE = {"float32": "teacher-float32", "int8_float32": "teacher-int8", "int8": "teacher-int8"}


def worker(n: int, repeats: int, all_threads: bool) -> dict:
    """Measurements under this process's environment: {compute/threads/batch: {seconds, ids}}."""
    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    from pipeline.decode import greedy_ctranslate2
    from pipeline.manifest import load_manifest
    from pipeline.teacher import features_for, prompt_ids

    prepared = ROOT / "data/prepared"
    utts = [u for u in load_manifest(prepared / "test.jsonl") if u.language == "cs"][:n]
    base = ROOT / "data/models/whisper-base"
    feats = features_for(WhisperFeatureExtractor.from_pretrained(base), utts, prepared).numpy()
    prompt = prompt_ids(WhisperTokenizer.from_pretrained(base), "cs")
    out = {}
    for ctype, threads, batch in itertools.product(COMPUTE, (1, 2) if all_threads else (2,), (1, 16)):
        model = ctranslate2.models.Whisper(
            str(ROOT / "data/ct2" / COMPUTE[ctype]), device="cpu", compute_type=ctype, intra_threads=threads
        )
        greedy_ctranslate2(model, feats[:1], [prompt], 64)  # warm-up
        times, ids = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            ids = []
            for i in range(0, len(utts), batch):
                chunk = feats[i : i + batch]
                ids += greedy_ctranslate2(model, chunk, [prompt] * len(chunk), 64)
            times.append((time.perf_counter() - start) / len(utts))
        out[f"{ctype}/{threads}/{batch}"] = {"seconds": statistics.median(times), "runs": times, "ids": ids}
        del model
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ct2_settings.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.n, args.repeats, os.environ.get("DW_ALL_THREADS") == "1")))
        return
    for need in ("data/prepared/test.jsonl", "data/ct2/teacher-float32", "data/ct2/teacher-int8"):
        if not (ROOT / need).exists():
            sys.exit(f"error: {need} is missing; run make repro first")
    results = {}
    for name, env in SETTINGS.items():
        done = subprocess.run(
            [sys.executable, __file__, "--worker", "--n", str(args.n), "--repeats", str(args.repeats)],
            env={**os.environ, **env, "DW_ALL_THREADS": "1" if name == "default" else "0"},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            results[name] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
            print(f"{name}: {results[name]['error']}")
            continue
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    reference = results["default"]
    print(f"seconds per utterance (median of {args.repeats}; {args.n} cs test utterances), same ids as default")
    header = (
        f"{'setting':<9} {'compute':<13} {'threads':>7} {'batch':>5} {'s/utt':>7} {'vs default':>10} {'same ids':>8}"
    )
    print(header)
    table = []
    for name, measured in results.items():
        if "error" in measured:
            continue
        for key, m in measured.items():
            ctype, threads, batch = key.split("/")
            ref = reference[key]
            row = {
                "setting": name,
                "compute_type": ctype,
                "threads": int(threads),
                "batch": int(batch),
                "seconds_per_utterance": round(m["seconds"], 4),
                "runs": [round(t, 4) for t in m["runs"]],
                "ratio_to_default": round(m["seconds"] / ref["seconds"], 3),
                "same_ids": m["ids"] == reference[f"{ctype}/2/1"]["ids"],
            }
            table.append(row)
            print(
                f"{name:<9} {ctype:<13} {threads:>7} {batch:>5} {row['seconds_per_utterance']:>7.3f} "
                f"{row['ratio_to_default']:>10.3f} {str(row['same_ids']):>8}"
            )
    same = [r for r in table if r["same_ids"]]
    best = {
        ctype: min((r for r in same if r["compute_type"] == ctype), key=lambda r: r["seconds_per_utterance"])
        for ctype in COMPUTE
        if any(r["compute_type"] == ctype for r in same)
    }
    for ctype, r in best.items():
        print(f"fastest with the default's ids, {ctype}: {r['setting']}, {r['threads']} threads, batch {r['batch']}")
    record = {
        "command": f"python bench/ct2_settings.py --n {args.n} --repeats {args.repeats}",
        "utterances": args.n,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "settings": SETTINGS,
        "errors": {k: v["error"] for k, v in results.items() if "error" in v},
        "rows": table,
        "fastest_same_ids": best,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
