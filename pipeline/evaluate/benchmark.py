"""benchmark: per-language / per-gender error rates, speed, memory and size of every model.

Decoding is held fixed: explicit language, greedy, temperature 0, no
fallback, no timestamps, no previous-text conditioning, no VAD. Every model
under test gets the same log-mel features (transformers'
``WhisperFeatureExtractor``): transformers references and PyTorch CLSR
students (exact token routing) through ``generate``
(:mod:`pipeline.evaluate.hf_runs`), CTranslate2 models through
``ctranslate2.models.Whisper.generate``; faster-whisper's own end-to-end
path runs beside them as the deployment figure
(:mod:`pipeline.evaluate.ct2_runs`, encoders shared as
:mod:`pipeline.evaluate.shared_encodings` says). What runs on which
utterances is the run matrix of :mod:`pipeline.evaluate.matrix`; speed and
memory are measured as :mod:`pipeline.evaluate.measure` says, and each run
is scored into rows by :mod:`pipeline.evaluate.rows`.
Loops: with ``loop_caps``, the target languages are also scored at those longer caps (rows of group
``cap=<N>``), from one untimed longer decode of the batches where a row hit the cap
(:mod:`pipeline.evaluate.caps`); every row records its cap (``max_new_tokens``) and how many utterances hit it
(``capped``).
Reuse: each finished model is kept (:mod:`pipeline.evaluate.runs`; ``run_memo``), so a
rerun decodes only the models a kill or Ctrl-C left unfinished and the models
whose files, data, settings, code or machine changed: one more student
variant decodes only that student. A kept run's timings are those measured
when it ran (its rows say when: ``decoded_at``), and a model that now encodes
for itself what it would have shared is charged its own encoder time.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from pipeline.core.fsutil import project_path
from pipeline.evaluate import translation as translation_metrics
from pipeline.evaluate.claims import model_claims
from pipeline.evaluate.ct2_runs import ct2_runs, faster_whisper_runs
from pipeline.evaluate.hf_runs import UNTRAINED, hf_runs
from pipeline.evaluate.matrix import BenchmarkConfig, load_datasets
from pipeline.evaluate.rows import score_rows, score_translation
from pipeline.evaluate.runs import KeptRuns, Key, Run, shared_inputs


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    """Decode every model on its datasets, score each run and write ``metrics.json`` and ``hypotheses.jsonl`` to
    ``cfg.out_dir``; runs an interrupted benchmark finished from the same inputs are taken as they are."""
    from pipeline.evaluate import ct2_tuning

    setting = ct2_tuning.applied(project_path(cfg.ct2_tuning))  # before CTranslate2 loads
    threads = int(setting["threads"])  # CTranslate2 intra-op threads; 0: its default
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    extractor = WhisperFeatureExtractor.from_pretrained(cfg.teacher)
    tokenizer = WhisperTokenizer.from_pretrained(cfg.teacher)
    data = load_datasets(cfg)
    shared = shared_inputs(cfg.datasets, data, Path(cfg.teacher), _settings(cfg, setting))
    kept = KeptRuns(Path(cfg.out_dir), shared, cfg.run_memo)
    runs = hf_runs(cfg, data, extractor, tokenizer, kept)
    runs |= ct2_runs(cfg, data, extractor, tokenizer, kept, setting)
    runs |= faster_whisper_runs(cfg, data, kept, threads)
    rows, hyps, translation = _score(cfg, runs)
    extra = {
        # X->English rows (task translate, metric chrf | bleu): their own list, since they carry scores, not the
        # error counts every entry of "rows" has
        "translation": translation,
        "translation_signatures": {m: translation_metrics.signature(m) for m in translation_metrics.METRICS}
        if translation
        else {},
        "config": json.loads(json.dumps(cfg.__dict__, default=str)),
        "target_languages": list(cfg.target_languages),
        "ct2_setting": setting,
        # what the trained models and the test sets were made from (pipeline/evaluate/claims.py; the report checks it)
        "made_from": {"datasets": shared["datasets"], "models": model_claims(cfg.students, cfg.ct2_dir)},
    }
    write_outputs(cfg.out_dir, rows, hyps, extra)
    kept.finish()
    return {"rows": len(rows), "runs": len(runs), "kept": kept.memo.hits}


def _settings(cfg: BenchmarkConfig, setting: dict) -> dict:
    """The decoding settings every run's hypotheses (and seconds) depend on, for the kept runs' fingerprint."""
    return {
        "max_new_tokens": cfg.max_new_tokens,
        "timestamps": cfg.timestamps,
        "batch_size": cfg.batch_size,
        "loop_caps": sorted(cfg.loop_caps),  # which utterances get the longer decodes, and how long
        "loop_cap_engines": sorted(cfg.loop_cap_engines),
        "translate": sorted(cfg.translate),  # which datasets are decoded X->English (task, and caps)
        "target_languages": sorted(cfg.target_languages) if cfg.loop_caps else None,
        "ct2_setting": {k: setting[k] for k in ("setting", "env", "threads")},  # the seconds depend on it
    }


def _score(cfg: BenchmarkConfig, runs: dict[Key, dict[str, Run]]) -> tuple[list[dict], list[dict], list[dict]]:
    """(error-rate rows, hypothesis lines, translation rows) of every run, each compared with its reference run
    (and a translate run with the teacher and the untrained student too)."""
    rows, hyps, translation = [], [], []
    teacher_key = ("teacher" if cfg.hf_teacher else "ct2:teacher", "float32")
    for per_dataset in runs.values():
        for dataset, run in per_dataset.items():
            ref = _reference(runs, run, dataset)
            if dataset in cfg.translate:
                others = {
                    "reference": ref,
                    "teacher": runs.get(teacher_key, {}).get(dataset),
                    "untrained": runs.get(UNTRAINED, {}).get(dataset),
                }
                r, h = score_translation(run, dataset, others, cfg.bootstrap, cfg.seed)
                translation += r
                hyps += h
                continue
            versus = _versus(cfg, runs, run, dataset) if not run.model.startswith("faster-whisper:") else {}
            r, h = score_rows(run, dataset, ref, cfg.bootstrap, cfg.seed, versus=versus)
            rows += r
            hyps += h
            for cap, longer in run.at_caps.items():
                ref_longer = ref.at_caps.get(cap) if ref is not None else None
                rows += score_rows(longer, dataset, ref_longer, cfg.bootstrap, cfg.seed, label=f"cap={cap}")[0]
    return rows, hyps, translation


def _versus(cfg: BenchmarkConfig, runs: dict[Key, dict[str, Run]], run: Run, dataset: str) -> dict[str, Run]:
    """The runs ``run`` is compared with beside its reference (the paper's comparison): the main student and the
    teacher at its compute type. A PyTorch student (float32) meets ``student-<compare_student>`` and the teacher's
    float32 run; a CTranslate2 export of one language meets the main student's export of that language and the
    CTranslate2 teacher, each at the run's compute type. An export that serves every language (a student without
    experts: finetune, lora, kd) meets, on each language, the main student's export of that language."""
    teacher = ("teacher", "float32") if cfg.hf_teacher else ("ct2:teacher", "float32")
    found = {}
    if run.model.startswith("ct2:"):
        teacher = ("ct2:teacher", run.compute_type)
        languages = sorted({u.language for u in run.utts})
        mains = [
            runs.get((f"ct2:{cfg.compare_student}-{lang}", run.compute_type), {}).get(dataset) for lang in languages
        ]
        if mains and all(m is not None for m in mains):
            found[cfg.compare_student] = _joined(mains)
    else:
        found[cfg.compare_student] = runs.get((f"student-{cfg.compare_student}", "float32"), {}).get(dataset)
    found["teacher"] = runs.get(teacher, {}).get(dataset)
    return {name: other for name, other in found.items() if other is not None}


def _joined(parts: list[Run]) -> Run:
    """One run made of several runs' utterances and hypotheses (the main student's exports, one per language)."""
    if len(parts) == 1:
        return parts[0]
    return replace(
        parts[0],
        model="+".join(p.model for p in parts),
        utts=[u for p in parts for u in p.utts],
        hyps=[h for p in parts for h in p.hyps],
    )


def _reference(runs: dict[Key, dict[str, Run]], run: Run, dataset: str) -> Run | None:
    """The run ``run`` is compared with on ``dataset`` (its ``reference``), if that was decoded."""
    if not run.reference:
        return None
    ref_model, ref_type = run.reference.split("|")
    return runs.get((ref_model, ref_type), {}).get(dataset)


def write_outputs(out: Path, rows: list[dict], hyps: list[dict], extra: dict) -> None:
    from pipeline.core.fsutil import atomic_dir

    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "metrics.json").write_text(
            json.dumps({"rows": rows, **extra}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        with open(tmp / "hypotheses.jsonl", "w", encoding="utf-8") as handle:
            for h in hyps:
                handle.write(json.dumps(h, ensure_ascii=False) + "\n")
