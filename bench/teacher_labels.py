"""What labelling speech with the teacher costs, and how good its labels are, on the embedded corpus.

    python bench/teacher_labels.py [--n 8] [--out bench/results/teacher_labels.json]

For the first N dev utterances of each target language (data/prepared/dev.jsonl, Festival speech with real
transcripts), with the teacher of the default run (data/models/whisper-base), model load excluded:

1. the reference pass: the teacher teacher-forced on the reference transcripts, as cache_teacher does;
2. the labelling pass: the same audio as unlabelled rows, which the teacher decodes greedily (capped at
   cache_teacher's label_max_new_tokens) and is then teacher-forced along (pipeline/cache/labelling.py).

Reports the seconds an utterance of each, and the error rate of the teacher's transcripts against the real texts,
over every row and over the rows train_student's default filters keep (pipeline/student/pseudo.py), with the
filters' reasons. The texts are known here only so that the pseudo-labels can be scored.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cache.build import CacheTeacherConfig  # noqa: E402
from pipeline.cache.compute import compute_shard  # noqa: E402
from pipeline.core.config import read_params  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.core.scoring import score_labels  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.models.forward import Encoded, encode, prompt_ids  # noqa: E402
from pipeline.report.docs import bench_record, corpus_id  # noqa: E402
from pipeline.student.config import TrainConfig  # noqa: E402
from pipeline.student.pseudo import filter_reason  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(model, extractor, items, cfg, tokenizer):
    start = time.perf_counter()
    arrays = compute_shard(model, extractor, items, cfg, None, tokenizer)
    return arrays, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8, help="dev utterances a language")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/teacher_labels.json")
    args = parser.parse_args()
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    params = read_params(ROOT / "params.yaml")
    teacher, dev = ROOT / "data/models/whisper-base", ROOT / "data/prepared/dev.jsonl"
    for need in (teacher, dev):
        if not need.exists():
            sys.exit(f"error: {need} is missing; run make repro first")
    languages = params["train_student"]["common"]["languages"]
    utts = [u for lang in languages for u in [u for u in load_manifest(dev) if u.language == lang][: args.n]]
    tokenizer = WhisperTokenizer.from_pretrained(teacher)
    extractor = WhisperFeatureExtractor.from_pretrained(teacher)
    model = WhisperForConditionalGeneration.from_pretrained(teacher).eval()
    cfg = CacheTeacherConfig(teacher=teacher, manifest=dev, out_dir=ROOT / "unused", labels="teacher", unlabelled=dev)
    compute_shard(model, extractor, encode(utts[:2], tokenizer), cfg, None, tokenizer)  # warm-up, untimed
    load_before = os.getloadavg()
    reference, reference_s = timed(model, extractor, encode(utts, tokenizer), cfg, tokenizer)
    pending = [Encoded(replace(u, text=""), prompt_ids(tokenizer, u.language), None) for u in utts]
    labelled, labelled_s = timed(model, extractor, pending, cfg, tokenizer)
    load_after = os.getloadavg()

    filters = TrainConfig(mode="distilwhisper", languages=tuple(languages), base=teacher, cache=teacher, train=dev,
                          dev=dev, out_dir=teacher)  # fmt: skip  # its defaults: the filters a student applies
    judged = []  # (id, language, the teacher's label, why the filters leave it out)
    for i, u in enumerate(utts):
        ids = labelled.labels[labelled.offsets[i] : labelled.offsets[i + 1]].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=True)
        info = {k: labelled.rows[k][i] for k in labelled.rows}
        judged.append((u.id, u.language, text, filter_reason(info, text, "", u.language, filters)))
    per_language = score_labels(judged, {u.id: u.text for u in utts})
    for lang, entry in per_language.items():
        rows = [i for i, u in enumerate(utts) if u.language == lang]
        tokens = {
            "label_tokens_reference": int(sum(reference.offsets[i + 1] - reference.offsets[i] for i in rows)),
            "label_tokens_teacher": int(sum(labelled.offsets[i + 1] - labelled.offsets[i] for i in rows)),
        }
        per_language[lang] = {"utterances": entry.pop("utterances"), **tokens, **entry}
    data = {
        "model": "data/models/whisper-base (teacher)",
        "corpus": corpus_id(params["prepare_data"]),
        "corpus_name": "Festival ca/cs/fi",
        "utterances": f"the first {args.n} dev utterances of each of {', '.join(languages)}",
    }
    record = {
        **bench_record(
            ROOT,
            "python bench/teacher_labels.py " + shlex.join(sys.argv[1:]),
            data,
            load_before,
            load_after,
            torch.get_num_threads(),
        ),
        "label_max_new_tokens": cfg.label_max_new_tokens,
        "filters": {k: getattr(filters, k) for k in ("max_compression_ratio", "min_avg_logprob", "max_no_speech_prob")},
        "reference_s_per_utt": round(reference_s / len(utts), 3),
        "labelling_s_per_utt": round(labelled_s / len(utts), 3),
        "languages": per_language,
    }
    atomic_write_text(args.out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("provenance", "machine")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
