"""A finished run's folder, written by hand: the few outputs ``dw-pipe docs record-run`` reads, with numbers small
enough to check the rendered tables against by hand. One target language (ca) on two test sets, one language
without an expert (de), a longer cap, a translate set and a long-form recording."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

PARAMS = {
    "prepare_data": {"source": "synthetic", "seed": 13, "synthetic": {"targets": ["ca"]}},
    "benchmark": {"target_languages": ["ca"]},
    "longform": {"manifest": "data/prepared/longform.jsonl"},
    "report": {"teacher": "ct2:teacher", "main_student": "student-distilwhisper"},
}


def row(model: str, ctype: str, dataset: str, language: str, rate: float, insertions: int, **extra) -> dict:
    """A metrics.json row of 2 utterances and 10 reference words, scored at a 64-token cap."""
    return {
        "model": model,
        "compute_type": ctype,
        "dataset": dataset,
        "language": language,
        "group": "all",
        "n_utterances": 2,
        "ref_units": 10,
        "metric": "wer",
        "error_rate": rate,
        "insertions": insertions,
        "max_new_tokens": 64,
        "capped": 0,
        "decode_seconds": 1.0,
        **extra,
    }


ROWS = [
    row("student-distilwhisper", "float32", "test", "ca", 0.3, 1),
    row("student-untrained", "float32", "test", "ca", 0.5, 3),
    row("student-clsr", "float32", "test", "ca", 0.4, 2),
    row("ct2:teacher", "float32", "test", "ca", 0.25, 1),
    row("ct2:teacher", "int8", "test", "ca", 0.3, 1, reference_error_rate=0.25, delta=0.05, delta_ci95=[-0.01, 0.1]),
    row("ct2:distilwhisper-ca", "int8", "test", "ca", 0.35, 2),
    row("student-distilwhisper", "float32", "test_ood", "ca", 0.6, 0),
    row("student-untrained", "float32", "test_ood", "ca", 0.7, 4),
    row("student-clsr", "float32", "test_ood", "ca", 0.5, 0),
    row("ct2:teacher", "float32", "test_ood", "ca", 0.45, 2),
    row("student-untrained", "float32", "test", "de", 1.0, 5),
    row("student-distilwhisper", "float32", "test", "de", 1.0, 5, copied_from_untrained=2),
    row("ct2:teacher", "float32", "test", "de", 0.9, 0),
    row("ct2:teacher", "float32", "test", "ca", 0.2, 0) | {"group": "gender=female", "n_utterances": 1},
    row("ct2:teacher", "float32", "test", "ca", 0.6, 4) | {"group": "cap=224", "capped": 1},
]
TRANSLATION = [
    {"model": "ct2:teacher", "compute_type": "float32", "dataset": "translate", "language": "ca", "group": "all",
     "n_utterances": 3, "task": "translate", "metric": "chrf", "score": 40.0, "ci95": [35.0, 45.0]},
    {"model": "ct2:teacher", "compute_type": "float32", "dataset": "translate", "language": "ca", "group": "all",
     "n_utterances": 3, "task": "translate", "metric": "bleu", "score": 7.0, "ci95": [5.0, 9.0]},
    {"model": "student-distilwhisper", "compute_type": "float32", "dataset": "translate", "language": "ca",
     "group": "all", "n_utterances": 3, "task": "translate", "metric": "chrf", "score": 30.5, "ci95": [25.0, 36.0],
     "teacher_delta": -9.5, "teacher_delta_ci95": [-12.0, -7.25], "untrained_delta": 12.0,
     "untrained_delta_ci95": [8.0, 16.0]},
]  # fmt: skip
LONGFORM = {
    "model": "ct2:teacher", "compute_type": "int8", "dataset": "longform", "setting": "greedy", "language": "ca",
    "recordings": 1, "audio_seconds": 85.0, "metric": "wer", "ref_units": 150, "error_rate": 0.3071, "insertions": 12,
    "segments": 15, "start_error_mean_s": 0.42, "start_error_median_s": 0.466, "stretches": 3, "loop_stretches": 0,
    "empty_stretches": 1, "decode_seconds": 5.6, "rtfx": 15.1,
}  # fmt: skip
CACHE = {
    "status": "complete",
    "identity": {"format_version": 3, "teacher": "data/models/whisper-base", "top_k": 24, "min_prob": 0.0012,
                 "id_encoding": "delta", "value_encoding": "sqrt64"},
    "identity_sha256": "0123456789abcdef0123456789abcdef",
    "rows": 360,
    "tokens": 8000,
    "shards": [{"file": "shard-00000.parquet", "rows": 360, "tokens": 8000, "bytes": 200000, "sha256": "x"}],
}  # fmt: skip
# import_models twice (the later entry is the run's), then prepare_data: 600 + 1200 s, from t=1000 to t=2900.
STAGE_TIMES = [
    {"stage": "import_models", "seconds": 50.0, "finished_at": 500.0},
    {"stage": "import_models", "seconds": 600.0, "finished_at": 1600.0},
    {"stage": "prepare_data", "seconds": 1200.0, "finished_at": 2900.0},
]


def write_run(root: Path) -> Path:
    """The run folder under ``root``; returns its data folder."""
    data = root / "data"
    for folder in ("bench", "longform", "prepared", "cache/whisper-base"):
        (data / folder).mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"import_models": {}, "prepare_data": {}}}))
    metrics = {"rows": ROWS, "translation": TRANSLATION, "target_languages": ["ca"]}
    (data / "bench" / "metrics.json").write_text(json.dumps(metrics))
    (data / "longform" / "metrics.json").write_text(json.dumps({"rows": [LONGFORM]}))
    summary = {
        "read": 10,
        "kept": 9,
        "rejected": 1,
        "hours": 0.5,
        "by_split": {"train": {"utterances": 9, "hours": 0.5}},
    }
    (data / "prepared" / "summary.json").write_text(json.dumps(summary))
    (data / "cache" / "whisper-base" / "cache.json").write_text(json.dumps(CACHE))
    student = data / "students" / "distilwhisper"  # 4 updates, dev at 0 (untrained), 2 and 4; ca keeps step 2
    student.mkdir(parents=True)
    history = [{"step": step, "wer": 0.5} for step in (0, 2, 4)]
    dev = {"mode": "distilwhisper", "languages": ["ca"], "steps": 4, "best_step": {"ca": 2}, "history": history}
    (student / "dev.json").write_text(json.dumps(dev))
    (student / "train_log.jsonl").write_text(
        "".join(json.dumps({"step": i, "language": "ca"}) + "\n" for i in range(4))
    )
    (root / "logs").mkdir()
    (root / "logs" / "stage_times.jsonl").write_text("".join(json.dumps(t) + "\n" for t in STAGE_TIMES))
    return data
