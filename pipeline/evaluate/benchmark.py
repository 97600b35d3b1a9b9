"""benchmark: per-language / per-gender error rates, speed, memory and size of every model.

Decoding is held fixed: explicit language, greedy, temperature 0, no
fallback, no timestamps, no previous-text conditioning, no VAD. Every model
under test gets the same log-mel features (transformers'
``WhisperFeatureExtractor``): transformers references and PyTorch CLSR
students (exact token routing) through ``generate``, CTranslate2 models
through ``ctranslate2.models.Whisper.generate``. faster-whisper's own
end-to-end path (its extractor pads differently) is run beside them and
labelled as the deployment figure.

Speed: RTFx = audio seconds / decode seconds, after one warm-up utterance,
with faster-whisper's lazy segment generator consumed inside the timer. The
transformers teacher and every CTranslate2 model are timed end to end;
PyTorch students decode from encoder outputs computed outside the timer and
so report no RTFx. Those outputs are shared only among models whose encoder
weights are identical (the untrained student and decoder-only students);
a student with encoder experts gets its own, routed to each utterance's
language, as exact routing decodes it.
CTranslate2 models with the same encoder weights (a decoder-only student
and its teacher) encode each utterance once: the others decode from the
stored output and are charged the encoder seconds measured for it (rows
count these utterances in ``encoder_reused``). A float32 conversion whose
encoder reproduces the transformers float32 one it was converted from
(checked on its first batch) decodes from the outputs the PyTorch students
computed and is charged CTranslate2's encoder seconds measured on that batch
(rows say so in ``encoder_source``; :class:`SharedEncodings`). Encoders run
one utterance at a time on the CPU (faster there; ``bench/encoder_memo.py``),
and ``encoder_memo`` keeps the transformers outputs on disk between stages
and runs (:mod:`pipeline.core.encoder_memo`).
Memory: the peak resident set size sampled while a model decodes (process
wide: it includes the shared log-mel features and encoder outputs).
Loops: with ``loop_caps``, the target languages are also scored at those longer caps (rows of group
``cap=<N>``), from one untimed longer decode of the batches where a row hit the cap
(:mod:`pipeline.evaluate.caps`); every row records its cap (``max_new_tokens``) and how many utterances hit it
(``capped``).
Interruption: each finished model is kept (:mod:`pipeline.evaluate.runs`), so a
rerun decodes only the models a kill or Ctrl-C left unfinished; its timings
are those measured when it ran, and a model that now encodes for itself what
it would have shared is charged its own encoder time.
"""

from __future__ import annotations

import fnmatch
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline.core.scoring import Counts, count_errors, metric_for, normalize
from pipeline.data.manifest import Utterance, load_manifest
from pipeline.evaluate import translation as translation_metrics
from pipeline.evaluate.caps import Caps, with_caps
from pipeline.evaluate.runs import PartialRuns, Run, shared_inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkConfig:
    datasets: dict[str, str]  # name -> manifest
    out_dir: Path
    teacher: str  # HF folder of the teacher (tokenizer, features; the transformers float32 run)
    untrained: str  # student spec without training: "<base>" or "<base>@<decoder layers>"
    students: dict[str, str] = field(default_factory=dict)  # mode -> student folder (exact routing)
    ct2_dir: str = "data/ct2"  # quantize output: <model>-<compute type>/
    target_languages: tuple[str, ...] = ()
    faster_whisper: tuple[str, ...] = ()  # CT2 model folders (under ct2_dir) to also run end to end
    # Decode the teacher with transformers too. Off: its CTranslate2 float32 conversion (ct2:teacher)
    # stands for it; with the same token cap both give the same error rate in every language.
    hf_teacher: bool = True
    targets_only: tuple[str, ...] = ()  # models decoded on the target languages only (e.g. student-clsr)
    # Datasets decoded X->English (task translate) and scored with chrF and BLEU against each utterance's
    # ``translation`` (pipeline/evaluate/translation.py); the others are transcribed and scored by error rate.
    translate: tuple[str, ...] = ()
    # Decode with timestamps (prompt without <|notimestamps|>; the text leaves the timestamp tokens out), as a
    # user asking for segments does; false: the fixed no-timestamp decoding the error rates are compared under
    timestamps: bool = False
    # CTranslate2 models under ct2_dir the benchmark leaves out (fnmatch patterns on their names, e.g.
    # "distilwhisper-ts-*": students the longform stage measures)
    exclude: tuple[str, ...] = ()
    max_new_tokens: int = 128
    # Longer caps (new tokens) the target languages are scored at too, as a user's default decode runs
    # (decode.DEFAULT_CAPS): their rows are group "cap=<N>"; non-target languages stay at max_new_tokens.
    loop_caps: tuple[int, ...] = ()
    # Which engines decode those longer caps: ctranslate2 (the exports users deploy with faster-whisper)
    # and/or transformers (the exact-routing students: on CPU their loops cost minutes per model).
    loop_cap_engines: tuple[str, ...] = ("ctranslate2", "transformers")
    batch_size: int = 16
    bootstrap: int = 1000
    seed: int = 0
    # Where float32 encoder outputs are kept between stages and runs (pipeline/core/encoder_memo.py); None: not kept
    encoder_memo: Path | None = None
    # The CTranslate2 setting `dw-pipe ct2-tune` measured fastest with identical hypotheses on this machine
    # (pipeline/evaluate/ct2_tuning.py); applied when the record is this machine's. None, or no record: CTranslate2's own.
    ct2_tuning: Path | None = None

    def __post_init__(self) -> None:
        from pipeline.core.config import ConfigError
        from pipeline.models.decode import DECODER_POSITIONS, PROMPT_TOKENS

        missing = sorted(set(self.translate) - set(self.datasets))
        if missing:
            raise ConfigError(f"benchmark.translate {missing}: not among benchmark.datasets {sorted(self.datasets)}")
        unknown = sorted(set(self.loop_cap_engines) - {"ctranslate2", "transformers"})
        if unknown:
            raise ConfigError(f"benchmark.loop_cap_engines {unknown}: use ctranslate2 and/or transformers")
        limit = DECODER_POSITIONS - PROMPT_TOKENS
        wrong = [c for c in self.loop_caps if not self.max_new_tokens < c <= limit]
        if wrong:
            raise ConfigError(
                f"benchmark.loop_caps {wrong}: each cap must exceed max_new_tokens ({self.max_new_tokens}) and be at "
                f"most {limit} (Whisper's {DECODER_POSITIONS} decoder positions minus the {PROMPT_TOKENS}-token prompt)"
            )


class PeakRSS:
    """Samples this process's resident set size in the background; ``peak_mb`` after ``stop``."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 1e6, 1)


def bootstrap_ci(
    per_utt: list[Counts], reps: int, rng: np.random.Generator, other: list[Counts] | None = None
) -> tuple[float, float]:
    """95 % interval of the corpus rate (or of the paired difference with ``other``) over resampled utterances."""
    errs = np.array([c.errors for c in per_utt], dtype=float)
    refs = np.array([c.ref_units for c in per_utt], dtype=float)
    if len(errs) == 0 or refs.sum() == 0:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(errs), size=(reps, len(errs)))
    stat = errs[idx].sum(1) / np.maximum(refs[idx].sum(1), 1)
    if other is not None:
        errs_o = np.array([c.errors for c in other], dtype=float)
        refs_o = np.array([c.ref_units for c in other], dtype=float)
        stat = stat - errs_o[idx].sum(1) / np.maximum(refs_o[idx].sum(1), 1)
    low, high = np.percentile(stat, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def _run_fields(run: Run, dataset: str, lang: str, group: str, idx: list[int], audio_total: float) -> dict:
    """What a metric row says about the run behind it, over its utterances ``idx``: model, data, cost, caps."""
    audio = sum(run.utts[i].duration for i in idx)
    decode = run.decode_seconds * audio / audio_total if run.decode_seconds else None
    return {
        "model": run.model,
        "compute_type": run.compute_type,
        "effective_compute_type": run.effective_compute_type,
        "language": lang,
        "dataset": dataset,
        "group": group,
        "n_utterances": len(idx),
        "audio_seconds": round(audio, 2),
        "decode_seconds": round(decode, 3) if decode else None,
        "rtfx": round(audio / decode, 2) if decode else None,
        "peak_rss_mb": run.peak_rss_mb,
        "model_size_mb": run.model_size_mb,
        "reference": run.reference,
        "encoder_reused": sum(1 for i in idx if run.utts[i].id in run.reused_ids),
        "encoder_source": run.encoder_source or None,
        "max_new_tokens": run.max_new_tokens,
        "capped": sum(run.capped[i] for i in idx) if run.capped is not None else None,
        "copied_from_untrained": sum(1 for i in idx if run.utts[i].id in run.copied_ids),
    }


def score_rows(
    run: Run, dataset: str, reference: Run | None, reps: int, seed: int, label: str | None = None
) -> tuple[list[dict], list[dict]]:
    """Metric rows (per language, and per language x gender) and hypothesis rows of a run; with ``label``, one row
    per language under that label (a longer cap's run: its rows must not take the place of the ``all`` rows)."""
    per_utt = [
        count_errors(normalize(u.text, u.language), normalize(h, u.language)) for u, h in zip(run.utts, run.hyps)
    ]
    ref_counts = None
    if reference is not None:
        by_id = {u.id: h for u, h in zip(reference.utts, reference.hyps)}
        ref_counts = [
            count_errors(normalize(u.text, u.language), normalize(by_id.get(u.id, ""), u.language)) for u in run.utts
        ]
    rows, hyps = [], []
    rng = np.random.default_rng(seed)
    audio_total = sum(u.duration for u in run.utts)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, u in enumerate(run.utts):
        groups.setdefault((u.language, label or "all"), []).append(i)
        if label is None:
            groups.setdefault((u.language, f"gender={u.gender}"), []).append(i)
    for (lang, group), idx in sorted(groups.items()):
        total = Counts()
        for i in idx:
            total += per_utt[i]
        row = _run_fields(run, dataset, lang, group, idx, audio_total) | {
            "ref_units": total.ref_units,
            "metric": metric_for(lang),
            "error_rate": round(total.rate, 4),
            "hits": total.hits,
            "substitutions": total.substitutions,
            "deletions": total.deletions,
            "insertions": total.insertions,
            "ci95": bootstrap_ci([per_utt[i] for i in idx], reps, rng),
        }
        if label is not None:
            row["prefix_mismatches"] = sum(1 for i in idx if run.utts[i].id in run.mismatched_ids)
        if ref_counts is not None:
            ref_total = Counts()
            for i in idx:
                ref_total += ref_counts[i]
            row["reference_error_rate"] = round(ref_total.rate, 4)
            row["delta"] = round(total.rate - ref_total.rate, 4)
            row["delta_ci95"] = bootstrap_ci([per_utt[i] for i in idx], reps, rng, [ref_counts[i] for i in idx])
        rows.append(row)
    if label is not None:
        return rows, []  # its hypotheses go with the run's own lines (at_caps)
    longer = {cap: dict(zip((u.id for u in r.utts), zip(r.hyps, r.capped or []))) for cap, r in run.at_caps.items()}
    for i, (u, h) in enumerate(zip(run.utts, run.hyps)):
        line = {
            "model": run.model,
            "compute_type": run.compute_type,
            "dataset": dataset,
            "id": u.id,
            "language": u.language,
            "ref": u.text,
            "hyp": h,
            "ref_norm": normalize(u.text, u.language),
            "hyp_norm": normalize(h, u.language),
            "max_new_tokens": run.max_new_tokens,
            "capped": run.capped[i] if run.capped is not None else None,
        }
        caps = {str(cap): by_id[u.id] for cap, by_id in longer.items() if u.id in by_id}
        if caps:
            line["at_caps"] = {
                cap: {"hyp": hyp, "hyp_norm": normalize(hyp, u.language), "capped": hit}
                for cap, (hyp, hit) in caps.items()
            }
        hyps.append(line)
    return rows, hyps


def score_translation(
    run: Run, dataset: str, others: dict[str, Run | None], reps: int, seed: int
) -> tuple[list[dict], list[dict]]:
    """chrF and BLEU rows of a translate run, per language (95 % bootstrap intervals), each with its paired
    difference from the runs in ``others`` on the same utterances (``reference``: the run's own, e.g. float32 for
    int8; ``teacher``; ``untrained``: the student before training), and its hypothesis lines."""
    rows = []
    rng = np.random.default_rng(seed)
    audio_total = sum(u.duration for u in run.utts)
    for lang in sorted({u.language for u in run.utts}):
        idx = [i for i, u in enumerate(run.utts) if u.language == lang]
        utts = [run.utts[i] for i in idx]
        refs = [u.translation for u in utts]
        for metric in translation_metrics.METRICS:
            stats = translation_metrics.sentence_stats(metric, [run.hyps[i] for i in idx], refs)
            row = _run_fields(run, dataset, lang, "all", idx, audio_total) | {
                "task": "translate",
                "metric": metric,
                "score": round(translation_metrics.corpus_score(metric, stats), 2),
                "ci95": translation_metrics.bootstrap_interval(metric, stats, reps, rng),
            }
            for name, other in others.items():
                if other is None or other is run:
                    continue
                by_id = dict(zip((u.id for u in other.utts), other.hyps))
                if not all(u.id in by_id for u in utts):
                    continue  # the other model was not decoded on this language
                stats_o = translation_metrics.sentence_stats(metric, [by_id[u.id] for u in utts], refs)
                score_o = translation_metrics.corpus_score(metric, stats_o)
                row[f"{name}_score"] = round(score_o, 2)
                row[f"{name}_delta"] = round(row["score"] - score_o, 2)
                row[f"{name}_delta_ci95"] = translation_metrics.bootstrap_interval(metric, stats, reps, rng, stats_o)
            rows.append(row)
    hyps = [
        {
            "model": run.model,
            "compute_type": run.compute_type,
            "dataset": dataset,
            "task": "translate",
            "id": u.id,
            "language": u.language,
            "source_text": u.text,
            "ref": u.translation,
            "hyp": h,
            "max_new_tokens": run.max_new_tokens,
            "capped": run.capped[i] if run.capped is not None else None,
        }
        for i, (u, h) in enumerate(zip(run.utts, run.hyps))
    ]
    return rows, hyps


def timed(fn: Callable[[], list[str]]) -> tuple[list[str], float, float]:
    """Run ``fn`` under the RSS sampler; (result, seconds, peak MB)."""
    gc.collect()
    with PeakRSS() as rss:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, rss.peak_mb


def _loop_caps(cfg: BenchmarkConfig, engine: str) -> tuple[int, ...]:
    return cfg.loop_caps if engine in cfg.loop_cap_engines else ()


def _log_run(run: Run, dataset: str, seconds: float, longer_seconds: float) -> None:
    """One line per decoded (model, dataset): where the benchmark's time goes."""
    log.info(
        "%s|%s on %s: %d utterances in %.1f s (%d hit the cap; longer caps re-decoded in %.1f s)",
        run.model,
        run.compute_type,
        dataset,
        len(run.utts),
        seconds,
        sum(run.capped),
        longer_seconds,
    )


def eval_namespace(cfg: BenchmarkConfig) -> SimpleNamespace:
    return SimpleNamespace(eval_batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens)


def scoped(cfg: BenchmarkConfig, model: str, data: dict[str, list[Utterance]]) -> dict[str, list[Utterance]]:
    """The utterances ``model`` is decoded on: all, or the target languages' for models in ``targets_only``."""
    if model not in cfg.targets_only:
        return data
    kept = {name: [u for u in utts if u.language in cfg.target_languages] for name, utts in data.items()}
    return {name: utts for name, utts in kept.items() if utts}


def load_datasets(cfg: BenchmarkConfig) -> dict[str, list[Utterance]]:
    from pipeline.core.errors import DwPipeError

    data = {name: load_manifest(Path(path)) for name, path in cfg.datasets.items()}
    for name in cfg.translate:
        lacking = [u.id for u in data[name] if not u.translation.strip()]
        if lacking:
            raise DwPipeError(
                f"benchmark.translate: dataset {name} ({cfg.datasets[name]}) has {len(lacking)} utterance(s) without an "
                f"English translation (first: {lacking[0]}); a translate dataset needs one on every utterance"
            )
    return data


def task_of(cfg: BenchmarkConfig, dataset: str) -> str:
    return "translate" if dataset in cfg.translate else "transcribe"


def caps_of(cfg: BenchmarkConfig, engine: str, dataset: str) -> Caps:
    """The caps ``dataset`` is decoded at: translations stop at max_new_tokens (loops are a transcription bar)."""
    if dataset in cfg.translate:
        return Caps(cfg.max_new_tokens, (), ())
    return Caps(cfg.max_new_tokens, _loop_caps(cfg, engine), cfg.target_languages)


def stand_in_languages(cfg: BenchmarkConfig, folder: Path, languages: set[str]) -> frozenset[str]:
    """The languages of ``languages`` on which the student in ``folder`` is, weight for weight, the untrained
    student, so that the untrained student's hypotheses stand for its own.

    That holds for a CLSR student (only experts and gates train; :func:`pipeline.student.model.load_student` builds it
    from its base and adds them) built from the untrained student's base and kept layers, on a language with no
    expert: every CLSR layer then runs its frozen shared FFN (:class:`pipeline.models.clsr.CLSRLayer`), which is the
    base's FFN. Languages that transformers decodes again at longer caps are left out (those are decoded)."""
    from pipeline.student.model import CLSR_MODES

    record = json.loads((folder / "student.json").read_text(encoding="utf-8"))
    base, _, layers = cfg.untrained.partition("@")
    keep = [int(x) for x in layers.split(",")] if layers else None
    if (
        record["mode"] not in CLSR_MODES
        or Path(record["base"]).resolve() != Path(base).resolve()
        or record["keep_encoder_layers"] is not None
        or record["keep_decoder_layers"] != keep
    ):
        return frozenset()
    experts = set(record["languages"]) | {p.name.split(".")[1] for p in folder.glob("expert.*.safetensors")}
    recapped = set(cfg.target_languages) if cfg.loop_caps and "transformers" in cfg.loop_cap_engines else set()
    return frozenset(languages - experts - recapped)


def _with_copies(run: Run, utts: list[Utterance], source: Run | None, source_key: str) -> Run:
    """``run`` (decoded on part of ``utts``) completed with ``source``'s hypotheses on the rest, in ``utts``' order."""
    if source is None or len(run.utts) == len(utts):
        return run
    mine = {u.id: (h, c) for u, h, c in zip(run.utts, run.hyps, run.capped or [None] * len(run.utts))}
    theirs = {u.id: (h, c) for u, h, c in zip(source.utts, source.hyps, source.capped or [None] * len(source.utts))}
    pairs = [mine[u.id] if u.id in mine else theirs[u.id] for u in utts]
    run.copied_ids = frozenset(u.id for u in utts if u.id not in mine)
    run.copied_from = source_key
    run.utts, run.hyps = list(utts), [h for h, _ in pairs]
    run.capped = [bool(c) for _, c in pairs] if all(c is not None for _, c in pairs) else None
    return run


def write_outputs(out: Path, rows: list[dict], hyps: list[dict], extra: dict) -> None:
    from pipeline.core.fsutil import atomic_dir

    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "metrics.json").write_text(
            json.dumps({"rows": rows, **extra}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        with open(tmp / "hypotheses.jsonl", "w", encoding="utf-8") as handle:
            for h in hyps:
                handle.write(json.dumps(h, ensure_ascii=False) + "\n")


def _hf_runs(
    cfg: BenchmarkConfig, data: dict[str, list[Utterance]], extractor, tokenizer, partial: PartialRuns
) -> dict[tuple[str, str], dict[str, Run]]:
    """transformers teacher (timed end to end), untrained student, and the PyTorch students (exact routing)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from pipeline.core.encoder_memo import encoder_identity
    from pipeline.models.clsr import set_language
    from pipeline.models.decode import EncoderStore
    from pipeline.models import decode
    from pipeline.student.model import StudentSpec, build_student, load_student

    runs: dict[tuple[str, str], dict[str, Run]] = {}
    ns = eval_namespace(cfg)
    device = torch.device("cpu")
    teacher_dir = Path(cfg.teacher)
    base, _, layers = cfg.untrained.partition("@")
    keep = tuple(int(x) for x in layers.split(",")) if layers else None

    # (name, how to build it, the folders it is made from, its spec beyond them)
    models: list[tuple[str, Callable, Path, str]] = [
        ("teacher", lambda: WhisperForConditionalGeneration.from_pretrained(teacher_dir).eval(), teacher_dir, "")
    ][: int(cfg.hf_teacher)]
    models.append(("student-untrained", lambda: build_student(StudentSpec(Path(base), None, keep)), Path(base), layers))
    models += [
        (f"student-{mode}", (lambda folder=folder: load_student(Path(folder))[0]), Path(folder), "")
        for mode, folder in cfg.students.items()
    ]
    untrained_key = ("student-untrained", "float32")
    for name, make, source, spec in models:
        made_from, kept = partial.lookup((name, "float32"), [source], scoped(cfg, name, data), spec=spec)
        if kept:
            runs[(name, "float32")] = kept
            continue
        model = make()
        key = (encoder_identity(model),)  # models with the same encoder weights share its stored outputs
        end_to_end = name == "teacher"
        languages = {u.language for utts in data.values() for u in utts}
        student = name != "student-untrained" and (source / "student.json").is_file()
        stand_in = stand_in_languages(cfg, source, languages) if student else frozenset()
        for dataset, all_utts in scoped(cfg, name, data).items():
            root = Path(cfg.datasets[dataset]).parent
            caps, task = caps_of(cfg, "transformers", dataset), task_of(cfg, dataset)
            untrained = runs.get(untrained_key, {}).get(dataset) if stand_in else None
            utts = [u for u in all_utts if u.language not in stand_in] if untrained else all_utts
            # The teacher is timed end to end (encoder included); students whose encoder is the teacher's
            # reuse the encoder outputs it leaves in the shared store.
            # The timed teacher encodes for itself: no outputs from the memo.
            memo = None if end_to_end else cfg.encoder_memo
            store = EncoderStore(model, extractor, root, True, device, key=key, dtype=torch.float32, disk=memo)
            if end_to_end:
                store.fill(utts[:1])
                decode.greedy_token_ids(model, utts[:1], store, tokenizer, ns, task, cfg.timestamps)  # warm-up
                store.memo.pop(utts[0].id)
            else:
                store.fill(utts)

            def work(store=store, utts=utts, model=model, task=task):
                store.fill(utts)
                return decode.greedy_token_ids(model, utts, store, tokenizer, ns, task, cfg.timestamps)[0]

            def redecode(chunk, store=store, model=model, caps=caps):
                set_language(model, chunk[0].language)
                return decode.generate_batch(
                    model, chunk, store, tokenizer, max(caps.loop_caps), timestamps=cfg.timestamps
                )

            ids, seconds, peak = timed(work)
            size = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
            run = Run(
                name,
                "float32",
                "float32",
                utts,
                [tokenizer.decode(x, skip_special_tokens=True) for x in ids],
                seconds if end_to_end else None,
                peak,
                round(size, 1),
                reference=None if name == "student-untrained" else "student-untrained|float32",
            )
            batches = decode.decode_batches(utts, cfg.batch_size)
            start = time.perf_counter()
            run = with_caps(run, ids, caps, tokenizer, redecode, batches)
            _log_run(run, dataset, seconds, time.perf_counter() - start)
            runs.setdefault((name, "float32"), {})[dataset] = _with_copies(
                run, all_utts, untrained, "|".join(untrained_key)
            )
        partial.save((name, "float32"), made_from, runs.get((name, "float32"), {}))
        del model
    return runs


# A CTranslate2 float32 encoder "reproduces" transformers' outputs when the largest difference on the checked batch is
# at most this fraction of the largest output value (whisper-base: 1.5e-3 of 24.6, 6e-5; int8: 0.8 of it).
SAME_ENCODER_TOLERANCE = 1e-3


class SharedEncodings:
    """CTranslate2 encoder outputs per utterance, for the models whose encoder is the same (see
    :func:`pipeline.models.ct2_format.encoder_fingerprint`), with the seconds each one took to compute.

    A model that finds an utterance here decodes from the stored output and is
    charged the encoder seconds measured when it was computed, so its decode
    time still counts the encoder it would have run.

    With a ``reference`` (the float32 transformers encoder of the checkpoint the CTranslate2 model was converted
    from, outputs kept by :class:`pipeline.models.decode.EncoderStore`), the first batch is encoded by CTranslate2, timed,
    and compared with the reference; when it reproduces them (:data:`SAME_ENCODER_TOLERANCE`), every utterance
    decodes from the reference's outputs, which the PyTorch students computed already, and is charged the
    CTranslate2 encoder's measured seconds per utterance: the encoder's cost does not depend on the utterance
    (every input is 30 s of log-mel). Otherwise CTranslate2 encodes every utterance itself.
    """

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.outputs: dict[str, np.ndarray] = {}
        self.seconds: dict[str, float] = {}
        self.reference: Callable[[list[Utterance], Path], np.ndarray] | None = None
        self.per_utterance: float | None = None  # CTranslate2's measured encoder seconds, once the reference holds
        self.source = ""

    def use(self, key: tuple[str, str], reference: Callable[[list[Utterance], Path], np.ndarray] | None = None) -> None:
        """Switch to the encoder ``key`` (fingerprint, compute type); the previous one's outputs are dropped."""
        if key != self.key:
            self.key, self.outputs, self.seconds = key, {}, {}
            self.reference, self.per_utterance, self.source = reference, None, ""

    def _fetch(self, todo: list[Utterance], root: Path) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        return self.reference(todo, root), time.perf_counter() - start

    def _encode(self, model, todo: list[Utterance], root: Path, features) -> tuple[np.ndarray, float, float]:
        """(outputs of ``todo``, encoder seconds per utterance, seconds spent fetching the reference's outputs:
        inside the caller's timer, but no part of what the CTranslate2 model costs)."""
        import ctranslate2

        if self.per_utterance is not None:
            expected, fetch = self._fetch(todo, root)
            return expected, self.per_utterance, fetch
        start = time.perf_counter()
        feats = np.ascontiguousarray(features(todo), dtype=np.float32)
        # One utterance at a time on the CPU: int8_float32 encodes ~20 % faster so than in a batch of 16 on this
        # 2-core machine (bench/encoder_memo.py); decoding stays batched.
        step = 1 if getattr(model, "device", "cpu") == "cpu" else len(feats)
        encoded = np.concatenate(
            [
                np.array(model.encode(ctranslate2.StorageView.from_array(feats[i : i + step])))
                for i in range(0, len(feats), step)
            ]
        )
        share = (time.perf_counter() - start) / len(todo)
        if self.reference is None:
            return encoded, share, 0.0
        expected, fetch = self._fetch(todo, root)
        diff = float(np.abs(encoded - expected).max())
        scale = float(np.abs(expected).max())
        if diff <= SAME_ENCODER_TOLERANCE * scale:
            self.per_utterance = share
            self.source = (
                f"transformers float32 encoder (CTranslate2's matched it on {len(todo)} utterances: max |diff| "
                f"{diff:.2g} of {scale:.3g})"
            )
            log.info(
                "%s|%s: decoding from the %s; charged CTranslate2's %.3f s per utterance",
                self.key[0][:12],
                self.key[1],
                self.source,
                share,
            )
            return expected, share, fetch
        log.warning(
            "CTranslate2 encoder %s differs from the transformers one it was converted from (max |diff| %.3g of "
            "%.3g): it encodes every utterance itself",
            self.key[0][:12],
            diff,
            scale,
        )
        self.reference = None
        return encoded, share, fetch

    def batch(self, model, chunk: list[Utterance], root: Path, features: Callable[[list[Utterance]], np.ndarray]):
        """(encoder outputs of ``chunk``, seconds to add to the timed ones, ids of the reused ones).

        The seconds added: the encoder seconds charged for outputs an earlier model computed, and for outputs
        taken from the reference, less the time spent fetching those."""
        todo = [u for u in chunk if u.id not in self.outputs]
        adjust = 0.0
        if todo:
            adopted = self.per_utterance is not None
            encoded, share, fetch = self._encode(model, todo, root, features)
            adjust -= fetch
            if adopted:
                adjust += share * len(todo)
            for u, out in zip(todo, encoded):
                self.outputs[u.id], self.seconds[u.id] = out, share
        reused = [u for u in chunk if u not in todo]
        adjust += sum(self.seconds[u.id] for u in reused)
        return np.stack([self.outputs[u.id] for u in chunk]), adjust, [u.id for u in reused]


def _transformers_encoder(
    cfg: BenchmarkConfig, extractor, source: Path
) -> Callable[[list[Utterance], Path], np.ndarray]:
    """Float32 transformers encoder outputs of the checkpoint ``source`` (loaded at the first call), kept by
    :class:`pipeline.models.decode.EncoderStore` under the key the PyTorch runs use: a student with the same encoder
    weights left them in memory or in the encoder memo."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from pipeline.core.encoder_memo import encoder_identity
    from pipeline.models.decode import EncoderStore

    stores: dict[Path, EncoderStore] = {}
    loaded = []

    def outputs(utts: list[Utterance], root: Path) -> np.ndarray:
        if not loaded:
            model = WhisperForConditionalGeneration.from_pretrained(source).eval()
            loaded.append((model, (encoder_identity(model),)))
        model, key = loaded[0]
        if root not in stores:
            stores[root] = EncoderStore(
                model, extractor, root, True, torch.device("cpu"), key=key, dtype=torch.float32, disk=cfg.encoder_memo
            )
        stores[root].fill(utts)
        return torch.stack([stores[root].memo[u.id] for u in utts]).numpy()

    return outputs


def _ct2_runs(
    cfg: BenchmarkConfig, data, extractor, tokenizer, partial: PartialRuns, threads: int = 0
) -> dict[tuple[str, str], dict[str, Run]]:
    """Every CTranslate2 model under ct2_dir, on its language(s), with the shared features.

    Models whose encoders are identical (same fingerprint and compute type:
    a decoder-only student and its teacher) run one after the other and
    share the encoder outputs; each is charged the encoder's measured time.
    """
    import ctranslate2

    from pipeline.models.ct2_format import encoder_fingerprint
    from pipeline.models.forward import features_for, prompt_ids
    from pipeline.models import decode

    runs: dict[tuple[str, str], dict[str, Run]] = {}
    features: dict[str, np.ndarray] = {}  # log-mel per utterance, computed once for every model

    def features_of(chunk: list[Utterance], root: Path) -> np.ndarray:
        todo = [u for u in chunk if u.id not in features]
        if todo:
            features.update(zip((u.id for u in todo), features_for(extractor, todo, root).numpy()))
        return np.stack([features[u.id] for u in chunk])

    for dataset, utts in data.items():  # outside the timers: CT2 rows time decoding from log-mel features
        for i in range(0, len(utts), cfg.batch_size):
            features_of(utts[i : i + cfg.batch_size], Path(cfg.datasets[dataset]).parent)
    folders = []
    for folder in sorted(p for p in Path(cfg.ct2_dir).glob("*") if (p / "quantize.json").is_file()):
        info = json.loads((folder / "quantize.json").read_text())
        folders.append(((encoder_fingerprint(folder), info["effective_compute_type"]), folder, info))
    shared = SharedEncodings()
    for key, folder, info in sorted(folders, key=lambda f: (f[0], f[1].name)):
        float32 = key[1] == "float32" and (Path(info["source"]) / "config.json").is_file()
        shared.use(key, _transformers_encoder(cfg, extractor, Path(info["source"])) if float32 else None)
        export = Path(info["source"]) / "export.json"
        language = json.loads(export.read_text())["language"] if export.is_file() else None
        name = folder.name[: -len(info["requested_compute_type"]) - 1]
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in cfg.exclude):
            continue
        run_key = (f"ct2:{name}", info["requested_compute_type"])
        export_record = export.read_text() if export.is_file() else ""
        made_from, kept = partial.lookup(run_key, [folder], scoped(cfg, run_key[0], data), export=export_record)
        if kept:
            runs[run_key] = kept
            continue
        model = ctranslate2.models.Whisper(
            str(folder), device="cpu", compute_type=info["effective_compute_type"], intra_threads=threads
        )
        for dataset, all_utts in scoped(cfg, f"ct2:{name}", data).items():
            utts = [u for u in all_utts if language is None or u.language == language]
            if not utts:
                continue
            root = Path(cfg.datasets[dataset]).parent
            caps = caps_of(cfg, "ctranslate2", dataset)
            prompts = {u.id: prompt_ids(tokenizer, u.language, task_of(cfg, dataset), cfg.timestamps) for u in utts}
            warm_up = features_of(utts[:1], root)
            decode.greedy_ctranslate2(model, warm_up, [prompts[utts[0].id]], cfg.max_new_tokens)
            charged = {"seconds": 0.0, "reused": []}

            batches = [utts[i : i + cfg.batch_size] for i in range(0, len(utts), cfg.batch_size)]

            def work(batches=batches, root=root, model=model, prompts=prompts, charged=charged):
                ids = []
                for chunk in batches:
                    encoded, seconds, reused = shared.batch(model, chunk, root, lambda c: features_of(c, root))
                    charged["seconds"] += seconds
                    charged["reused"] += reused
                    ids += decode.greedy_ctranslate2(model, encoded, [prompts[u.id] for u in chunk], cfg.max_new_tokens)
                return ids

            def redecode(
                chunk, model=model, prompts=prompts, caps=caps
            ):  # the same batch from the same encoder outputs
                encoded = np.stack([shared.outputs[u.id] for u in chunk])
                return decode.greedy_ctranslate2(model, encoded, [prompts[u.id] for u in chunk], max(caps.loop_caps))

            ids, seconds, peak = timed(work)
            ref_type = "float32"
            run = Run(
                f"ct2:{name}",
                info["requested_compute_type"],
                info["effective_compute_type"],
                utts,
                [tokenizer.decode(x, skip_special_tokens=True) for x in ids],
                seconds + charged["seconds"],
                peak,
                info["model_size_mb"],
                reference=None if info["requested_compute_type"] == ref_type else f"ct2:{name}|{ref_type}",
                reused_ids=frozenset(charged["reused"]),
                encoder_source=shared.source,
            )
            start = time.perf_counter()
            runs.setdefault(run_key, {})[dataset] = with_caps(run, ids, caps, tokenizer, redecode, batches)
            _log_run(run, dataset, seconds, time.perf_counter() - start)
        partial.save(run_key, made_from, runs.get(run_key, {}))
        del model
    return runs


def _faster_whisper_runs(
    cfg: BenchmarkConfig, data, partial: PartialRuns, threads: int = 0
) -> dict[tuple[str, str], dict[str, Run]]:
    """faster-whisper end to end (its own features): what a deployment gets."""
    from faster_whisper import WhisperModel

    from pipeline.data.audio import read_wav
    from pipeline.models.decode import faster_whisper_transcribe

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per utterance otherwise
    runs: dict[tuple[str, str], dict[str, Run]] = {}
    for name in cfg.faster_whisper:
        folder = Path(cfg.ct2_dir) / name
        info = json.loads((folder / "quantize.json").read_text())
        run_key = (f"faster-whisper:{name}", info["requested_compute_type"])
        made_from, kept = partial.lookup(run_key, [folder], scoped(cfg, run_key[0], data))
        if kept:
            runs[run_key] = kept
            continue
        model = WhisperModel(
            str(folder), device="cpu", compute_type=info["effective_compute_type"], cpu_threads=threads
        )
        for dataset, utts in scoped(cfg, f"faster-whisper:{name}", data).items():
            root = Path(cfg.datasets[dataset]).parent
            audio = {u.id: read_wav(root / u.audio) for u in utts}
            task = task_of(cfg, dataset)

            def work(utts=utts, audio=audio, model=model, task=task):
                return [
                    faster_whisper_transcribe(model, audio[u.id], u.language, cfg.max_new_tokens, task, cfg.timestamps)
                    for u in utts
                ]

            work(utts[:1])
            hyps, seconds, peak = timed(work)
            runs.setdefault((f"faster-whisper:{name}", info["requested_compute_type"]), {})[dataset] = Run(
                f"faster-whisper:{name}",
                info["requested_compute_type"],
                info["effective_compute_type"],
                utts,
                hyps,
                seconds,
                peak,
                info["model_size_mb"],
                max_new_tokens=cfg.max_new_tokens,  # which utterances hit it is not known: faster-whisper gives text
            )
        partial.save(run_key, made_from, runs.get(run_key, {}))
        del model
    return runs


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    from pipeline.evaluate import ct2_tuning

    setting = ct2_tuning.applied(cfg.ct2_tuning)  # before CTranslate2 loads
    threads = int(setting["threads"])  # CTranslate2 intra-op threads; 0: its default
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    extractor = WhisperFeatureExtractor.from_pretrained(cfg.teacher)
    tokenizer = WhisperTokenizer.from_pretrained(cfg.teacher)
    data = load_datasets(cfg)
    settings = {
        "max_new_tokens": cfg.max_new_tokens,
        "timestamps": cfg.timestamps,
        "batch_size": cfg.batch_size,
        "loop_caps": sorted(cfg.loop_caps),  # which utterances get the longer decodes, and how long
        "loop_cap_engines": sorted(cfg.loop_cap_engines),
        "target_languages": sorted(cfg.target_languages) if cfg.loop_caps else None,
        "ct2_setting": {k: setting[k] for k in ("setting", "env", "threads")},  # the seconds depend on it
    }
    partial = PartialRuns(Path(cfg.out_dir), shared_inputs(cfg.datasets, data, Path(cfg.teacher), settings))
    runs = _hf_runs(cfg, data, extractor, tokenizer, partial)
    runs |= _ct2_runs(cfg, data, extractor, tokenizer, partial, threads)
    runs |= _faster_whisper_runs(cfg, data, partial, threads)
    rows, hyps, translation = [], [], []
    teacher_key = ("teacher" if cfg.hf_teacher else "ct2:teacher", "float32")
    for per_dataset in runs.values():
        for dataset, run in per_dataset.items():
            ref = None
            if run.reference:
                ref_model, ref_type = run.reference.split("|")
                ref = runs.get((ref_model, ref_type), {}).get(dataset)
            if dataset in cfg.translate:
                others = {
                    "reference": ref,
                    "teacher": runs.get(teacher_key, {}).get(dataset),
                    "untrained": runs.get(("student-untrained", "float32"), {}).get(dataset),
                }
                r, h = score_translation(run, dataset, others, cfg.bootstrap, cfg.seed)
                translation += r
                hyps += h
                continue
            r, h = score_rows(run, dataset, ref, cfg.bootstrap, cfg.seed)
            rows += r
            hyps += h
            for cap, longer in run.at_caps.items():
                ref_longer = ref.at_caps.get(cap) if ref is not None else None
                rows += score_rows(longer, dataset, ref_longer, cfg.bootstrap, cfg.seed, label=f"cap={cap}")[0]
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
    }
    write_outputs(cfg.out_dir, rows, hyps, extra)
    partial.clear()
    return {"rows": len(rows), "runs": len(runs)}
