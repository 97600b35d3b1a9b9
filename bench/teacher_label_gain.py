"""Does a teacher-labelled pool of speech help the students, at equal updates? (issue 29), on the embedded corpus.

    python bench/teacher_label_gain.py [--pool 120] [--pool-by fi=36] [--steps 48] [--eval-every 8] [--work data/teacher-label-gain]
                                       [--out bench/results/teacher_label_gain.json]

The pipeline's own stages, run into a work folder beside the default run's outputs (git-ignored, reused by a rerun:
each stage skips what is up to date):

1. prepare_data with params.yaml's corpus plus an unlabelled pool: ``--pool`` in-domain sentences per target
   language that no split draws, spoken by the train voices, their texts withheld in ``unlabelled_texts.jsonl``.
   The labelled splits are checked to be the default run's, line for line, where ``data/prepared`` holds them.
2. cache_teacher with ``labels: teacher``: the reference rows as the default run caches them, and the pool labelled
   by the teacher's greedy transcript, in the same pass.
3. train_student, five students of params.yaml's settings, every one ``--steps`` updates (the default run's 2 epochs
   of the labelled set), dev decoded every ``--eval-every`` steps and at each epoch's end, the best dev step kept:
   ``ce`` (CLSR without KD: CE on the labelled set), ``kd`` (distilwhisper: the labelled set; it distils from the
   default run's cache, since a student of reference labels refuses a cache with teacher rows, and the program
   checks that the two caches' reference rows are the same, value for value), ``ce-pool`` (CE on the
   labelled set and the teacher's transcripts of the pool: hard pseudo-labels) and ``kd-pool`` (distilwhisper on the
   labelled set and the pool: CE on the teacher's transcripts plus KD along them) and ``kd-pool-soft`` (the same
   with no CE on the pool's rows: only the teacher's distributions along its transcripts teach there). The pool's
   rows are those train_student's default filters keep.
4. benchmark: the five students, the untrained student and the CTranslate2 float32 teacher of the default run on the
   target languages' test and test_ood sets (exact routing, float32); then the report stage's report.md, whose
   first table compares them with ``kd`` and the teacher (``<work>/report``).

It records the teacher's labels' error rate against the withheld texts before and after the filters, each
student's error rate, and paired bootstrap intervals of the differences that answer the question: the pool as hard
labels (ce-pool - ce), the pool with CE and KD (kd-pool - kd), the pool as soft targets alone (kd-pool-soft - kd),
and KD itself on the labelled set (kd - ce). Needs the default run's data/models and data/ct2/teacher-float32 (make repro).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.config import from_mapping, read_params  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.core.scoring import count_errors  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.evaluate.rows import bootstrap_ci  # noqa: E402
from pipeline.report.docs import bench_record, corpus_id, params_id  # noqa: E402

STUDENTS = {
    "ce": {"mode": "clsr"},
    "kd": {"mode": "distilwhisper"},
    "ce-pool": {"mode": "clsr", "teacher_labels": True},
    "kd-pool": {"mode": "distilwhisper", "teacher_labels": True},
    "kd-pool-soft": {"mode": "distilwhisper", "teacher_labels": True, "teacher_label_ce_weight": 0.0},
}
# (name, this student, minus that one): the differences the study is about
PAIRS = (
    ("pool, CE on its labels", "ce-pool", "ce"),
    ("pool, CE + KD", "kd-pool", "kd"),
    ("pool, KD alone", "kd-pool-soft", "kd"),
    ("KD, labelled set", "kd", "ce"),
)
SPLITS = ("train", "dev", "test", "test_ood")


def prepare(params: dict, work: Path, pool: int, pool_by: dict[str, int]) -> tuple[Path, bool | None]:
    """The corpus with the pool (made again only when its settings changed); whether its labelled splits are the
    default run's (None: no default run to compare with)."""
    from pipeline.data.prepare import PrepareDataConfig, _jsonable, prepare_data

    section = params["prepare_data"]
    synthetic = {**section["synthetic"]}
    synthetic["target_sizes"] = {**synthetic["target_sizes"], "unlabelled": pool}
    by_language = {**synthetic.get("sizes_by_language", {})}
    for lang, count in pool_by.items():
        by_language[lang] = {**by_language.get(lang, {}), "unlabelled": count}
    synthetic["sizes_by_language"] = by_language
    cfg = from_mapping(
        PrepareDataConfig, {**section, "synthetic": synthetic, "out_dir": str(work / "prepared")}, "prepare_data"
    )
    summary = cfg.out_dir / "summary.json"
    wanted = json.loads(json.dumps(_jsonable(cfg), ensure_ascii=False))
    if not summary.is_file() or json.loads(summary.read_text())["config"] != wanted:
        prepare_data(cfg)
    default = ROOT / section["out_dir"]
    if not all((default / f"{s}.jsonl").is_file() for s in SPLITS):
        return cfg.out_dir, None
    same = all((default / f"{s}.jsonl").read_text() == (cfg.out_dir / f"{s}.jsonl").read_text() for s in SPLITS)
    return cfg.out_dir, same


def same_reference_rows(reference: Path, labelled: Path, train: Path) -> str:
    """How many of the train manifest's rows the reference-only cache and the teacher-labelled one hold with the
    same labels and teacher distributions, bit for bit: ``"N of M"``."""
    from pipeline.cache.reader import open_cache

    plain, mixed = open_cache(reference), open_cache(labelled, teacher_labels=True)
    utts = load_manifest(train)
    same = 0
    for u in utts:
        a, b = plain.targets(u.id), mixed.targets(u.id)
        fields = ("labels", "topk_ids", "topk_logprobs", "tail_logprob")
        same += all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields) and a.prompt == b.prompt
    return f"{same} of {len(utts)}"


def per_utterance(hypotheses: Path) -> dict[tuple[str, str], dict[str, tuple[str, object]]]:
    """(model, dataset) -> utterance id -> (language, its error counts), for the float32 runs."""
    out: dict[tuple[str, str], dict[str, tuple[str, object]]] = {}
    with open(hypotheses, encoding="utf-8") as handle:
        for h in map(json.loads, handle):
            if h["compute_type"] == "float32":
                counts = count_errors(h["ref_norm"], h["hyp_norm"])
                out.setdefault((h["model"], h["dataset"]), {})[h["id"]] = (h["language"], counts)
    return out


def comparison(hypotheses: Path, datasets: list[str], languages: list[str], reps: int) -> dict:
    """Per dataset and language: each model's error rate with its interval, and the paired differences of PAIRS
    over the same utterances (every model must have decoded exactly the ids ``kd`` did)."""
    runs = per_utterance(hypotheses)
    rng = np.random.default_rng(0)
    models = {"teacher": "ct2:teacher", "untrained": "student-untrained"} | {s: f"student-{s}" for s in STUDENTS}
    out: dict = {}
    for dataset in datasets:
        for lang in languages:
            ids = sorted(u for u, (code, _) in runs[("student-kd", dataset)].items() if code == lang)
            if not ids:
                continue
            per = {}
            for short, model in models.items():
                mine = {u for u, (code, _) in runs[(model, dataset)].items() if code == lang}
                if mine != set(ids):
                    raise SystemExit(f"error: {model} decoded other {dataset} {lang} utterances than student-kd")
                per[short] = [runs[(model, dataset)][u][1] for u in ids]
            cell: dict = {"utterances": len(ids), "models": {}, "differences": {}}
            rate = {short: _rate(counts) for short, counts in per.items()}
            for short, counts in per.items():
                ci = list(bootstrap_ci(counts, reps, rng))
                cell["models"][short] = {"error_rate": round(rate[short], 4), "ci95": ci}
            for name, a, b in PAIRS:
                lo, hi = bootstrap_ci(per[a], reps, rng, per[b])
                cell["differences"][name] = {"of": [a, b], "delta": round(rate[a] - rate[b], 4), "ci95": [lo, hi]}
            out[f"{dataset}/{lang}"] = cell
    return out


def _rate(counts: list) -> float:
    return sum(c.errors for c in counts) / max(sum(c.ref_units for c in counts), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=120, help="unlabelled utterances per target language")
    parser.add_argument(
        "--pool-by", nargs="*", default=["fi=36"], metavar="LANG=N",
        help="another pool size for a language (fi: its in-domain catalogues leave 36 sentences no split uses)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=48, help="updates of every student")
    parser.add_argument("--eval-every", type=int, default=8, help="dev decoded every this many steps")
    parser.add_argument("--work", type=Path, default=ROOT / "data/teacher-label-gain")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/teacher_label_gain.json")
    args = parser.parse_args()
    os.chdir(ROOT)  # params.yaml's paths are the project's
    from transformers import WhisperTokenizer

    from pipeline.cache.build import CacheTeacherConfig, build_cache
    from pipeline.cache.reader import open_cache
    from pipeline.core.stage import configure_logging
    from pipeline.evaluate.benchmark import run_benchmark
    from pipeline.evaluate.matrix import BenchmarkConfig
    from pipeline.report.build import ReportConfig, make_report
    from pipeline.student.pseudo import label_quality
    from pipeline.student.train import TrainStageConfig, train_modes

    configure_logging("INFO")
    params = read_params(ROOT / "params.yaml")
    teacher_ct2 = ROOT / params["benchmark"]["ct2_dir"] / "teacher-float32"
    if not (teacher_ct2 / "quantize.json").is_file():
        sys.exit(f"error: {teacher_ct2} is missing; run make repro first")
    work = args.work.resolve()
    pool_by = {lang: int(n) for lang, n in (item.split("=", 1) for item in args.pool_by)}
    targets = params["prepare_data"]["synthetic"]["targets"]
    if set(pool_by) - set(targets):
        sys.exit(f"error: --pool-by {sorted(set(pool_by) - set(targets))}: not target languages {targets}")
    prepared = work / "prepared"
    unlabelled = prepared / "unlabelled.jsonl"
    # every setting checked before anything runs
    cache_cfg = from_mapping(
        CacheTeacherConfig,
        {
            **params["cache_teacher"],
            "manifest": str(prepared / "train.jsonl"),
            "out_dir": str(work / "cache"),
            "labels": "teacher",
            "unlabelled": str(unlabelled),
        },
        "cache_teacher",
    )
    section = params["train_student"]
    common = {
        **section["common"],
        "train": str(prepared / "train.jsonl"),
        "dev": str(prepared / "dev.jsonl"),
        "cache": str(cache_cfg.out_dir),
        "unlabelled": str(unlabelled),
        "max_steps": args.steps,
        "eval_every": args.eval_every,
    }
    # A student of reference labels refuses a cache with teacher rows: kd distils from the default run's cache,
    # whose reference rows are checked below to be this cache's, value for value
    reference_cache = params["cache_teacher"]["out_dir"]
    per_mode = {**STUDENTS, "kd": {**STUDENTS["kd"], "cache": reference_cache}}
    stage = from_mapping(
        TrainStageConfig,
        {"modes": list(STUDENTS), "out_dir": str(work / "students"), "common": common, "per_mode": per_mode},
        "train_student",
    )
    configs = {c.out_dir.name: c for c in stage.configs()}
    for c in configs.values():
        c.check()
    names = {name: str(work / "students" / name) for name in STUDENTS}
    bench_cfg = from_mapping(
        BenchmarkConfig,
        {
            **params["benchmark"],
            "datasets": {"test": str(prepared / "test.jsonl"), "test_ood": str(prepared / "test_ood.jsonl")},
            "translate": [],
            "out_dir": str(work / "bench"),
            "students": names,
            "ct2_dir": str(work / "ct2"),
            "exclude": [],
            "targets_only": ["student-untrained", "ct2:teacher", *(f"student-{n}" for n in names)],
            "compare_student": "kd",
            "loop_caps": [],
            "faster_whisper": [],
            "run_memo": str(work / "run-memo"),
        },
        "benchmark",
    )
    report_cfg = ReportConfig(
        bench=work / "bench",
        out_dir=work / "report",
        main_student="student-kd",
        teacher="ct2:teacher",
        prepared=prepared,
        cache=None,  # two caches: kd's is the default run's (checked equal on the reference rows above)
        train=prepared / "train.jsonl",
        base=Path(section["common"]["base"]),
    )
    (work / "ct2").mkdir(parents=True, exist_ok=True)
    link = work / "ct2" / teacher_ct2.name
    if not link.exists():
        link.symlink_to(teacher_ct2)

    # Each stage skips what is up to date (a rerun reuses the work), so no stage time is recorded here: what
    # labelling costs is bench/teacher_labels.py's measurement
    load_before = os.getloadavg()
    _, same_splits = prepare(params, work, args.pool, pool_by)
    build_cache(cache_cfg, force=True)  # unchanged inputs: kept as built
    same_rows = same_reference_rows(Path(reference_cache), cache_cfg.out_dir, prepared / "train.jsonl")
    train_modes(stage)
    run_benchmark(bench_cfg)
    make_report(report_cfg)  # the paper's comparison of the five students, as the report stage writes it
    load_after = os.getloadavg()

    languages = [lang for lang in section["common"]["languages"] if lang in bench_cfg.target_languages]
    pool_sizes = Counter(u.language for u in load_manifest(unlabelled))
    tokenizer = WhisperTokenizer.from_pretrained(cache_cfg.teacher)
    withheld = {
        row["id"]: row["text"]
        for row in map(json.loads, (prepared / "unlabelled_texts.jsonl").read_text(encoding="utf-8").splitlines())
    }
    quality = label_quality(configs["kd-pool"], open_cache(cache_cfg.out_dir, teacher_labels=True), tokenizer, withheld)
    students = {}
    for name in STUDENTS:
        dev = json.loads((work / "students" / name / "dev.json").read_text())
        rows = work / "students" / name / "teacher_labels.json"
        kept = json.loads(rows.read_text()) if rows.is_file() else None
        updates = Counter(
            step["language"]
            for step in map(json.loads, (work / "students" / name / "train_log.jsonl").read_text().splitlines())
            if "ce" in step
        )
        students[name] = {
            **per_mode[name],
            "updates_by_language": dict(sorted(updates.items())),
            **{k: dev[k] for k in ("steps", "best_step", "dev_wer_initial", "dev_wer_best")},
            "teacher_rows": {k: v for k, v in kept.items() if k != "rows"} if kept else None,
        }
    data = {
        "corpus": corpus_id(params["prepare_data"]),
        "corpus_name": "Festival ca/cs/fi",
        "params": params_id(params),
        "cache_format": json.loads((cache_cfg.out_dir / "cache.json").read_text())["identity"]["format_version"],
        "pool": f"{args.pool} unlabelled utterances per target language ({', '.join(args.pool_by)}), in-domain "
        "sentences no split uses",
        "teacher": str(cache_cfg.teacher),
    }
    record = {
        **bench_record(
            ROOT,
            "python bench/teacher_label_gain.py " + shlex.join(sys.argv[1:]),
            data,
            load_before,
            load_after,
            torch.get_num_threads(),
        ),
        "pool_per_language": {lang: pool_sizes[lang] for lang in languages},  # the rows prepare_data kept
        "steps": args.steps,
        "eval_every": args.eval_every,
        "labelled_splits_are_the_default_runs": same_splits,
        "reference_rows_equal_to_the_default_cache": same_rows,
        "filters": {
            k: getattr(configs["kd-pool"], k)
            for k in ("max_compression_ratio", "min_avg_logprob", "max_no_speech_prob")
        },
        "label_max_new_tokens": cache_cfg.label_max_new_tokens,
        "label_quality": quality,
        "students": students,
        "comparison": comparison(
            work / "bench" / "hypotheses.jsonl", ["test", "test_ood"], languages, bench_cfg.bootstrap
        ),
    }
    atomic_write_text(args.out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: record[k] for k in ("label_quality", "comparison")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
