"""A run scored: metric rows with bootstrap intervals, and one hypothesis line per utterance.

Transcription runs give error-rate rows per language and per language x
gender (:func:`score_rows`), each with its paired difference from the run it
is compared with; translate runs give chrF and BLEU rows per language
(:func:`score_translation`). Every row also says what the run cost over its
utterances and how many of them hit the token cap.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.scoring import Counts, count_errors, metric_for, normalize
from pipeline.data.manifest import Utterance
from pipeline.evaluate import translation as translation_metrics
from pipeline.evaluate.runs import Run


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
        "decoded_at": run.decoded_at or None,  # kept from an earlier benchmark (its seconds are from then)
    }


def _error_counts(utts: list[Utterance], hyps: list[str]) -> list[Counts]:
    return [count_errors(normalize(u.text, u.language), normalize(h, u.language)) for u, h in zip(utts, hyps)]


def _total(counts: list[Counts], idx: list[int]) -> Counts:
    total = Counts()
    for i in idx:
        total += counts[i]
    return total


def _groups(utts: list[Utterance], label: str | None) -> dict[tuple[str, str], list[int]]:
    """(language, group) -> the utterances in it: ``label`` (default ``all``) per language, and per gender unless
    labelled."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, u in enumerate(utts):
        groups.setdefault((u.language, label or "all"), []).append(i)
        if label is None:
            groups.setdefault((u.language, f"gender={u.gender}"), []).append(i)
    return groups


def score_rows(
    run: Run,
    dataset: str,
    reference: Run | None,
    reps: int,
    seed: int,
    label: str | None = None,
    versus: dict[str, Run] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Metric rows (per language, and per language x gender) and hypothesis rows of a run; with ``label``, one row
    per language under that label (a longer cap's run: its rows must not take the place of the ``all`` rows).

    ``versus``: runs every ``all`` row is also compared with (name -> run; the main student, the teacher), where
    they decoded the same utterances: ``vs.<name>`` holds their error rate and the paired bootstrap interval of
    the difference (this run's rate minus theirs)."""
    per_utt = _error_counts(run.utts, run.hyps)
    ref_counts = None
    if reference is not None:
        by_id = {u.id: h for u, h in zip(reference.utts, reference.hyps)}
        ref_counts = _error_counts(run.utts, [by_id.get(u.id, "") for u in run.utts])
    rows = []
    rng = np.random.default_rng(seed)
    vs_rng = np.random.default_rng((seed, 1))  # its own draws: the other intervals stay what they were without it
    audio_total = sum(u.duration for u in run.utts)
    for (lang, group), idx in sorted(_groups(run.utts, label).items()):
        total = _total(per_utt, idx)
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
            ref_total = _total(ref_counts, idx)
            row["reference_error_rate"] = round(ref_total.rate, 4)
            row["delta"] = round(total.rate - ref_total.rate, 4)
            row["delta_ci95"] = bootstrap_ci([per_utt[i] for i in idx], reps, rng, [ref_counts[i] for i in idx])
        if group == "all" and label is None and versus:
            row["vs"] = _versus(run, [per_utt[i] for i in idx], [run.utts[i] for i in idx], versus, reps, vs_rng)
        rows.append(row)
    if label is not None:
        return rows, []  # its hypotheses go with the run's own lines (at_caps)
    return rows, hypothesis_lines(run, dataset)


def _versus(
    run: Run, mine: list[Counts], utts: list[Utterance], versus: dict[str, Run], reps: int, rng: np.random.Generator
) -> dict[str, dict]:
    """Per other run that decoded all of ``utts``: its error rate there and the paired difference from ``mine``."""
    out = {}
    for name, other in sorted(versus.items()):
        by_id = dict(zip((u.id for u in other.utts), other.hyps))
        if other is run or not all(u.id in by_id for u in utts):
            continue
        theirs = _error_counts(utts, [by_id[u.id] for u in utts])
        total_mine, total_theirs = _total(mine, range(len(mine))), _total(theirs, range(len(theirs)))
        out[name] = {
            "model": f"{other.model}|{other.compute_type}",
            "error_rate": round(total_theirs.rate, 4),
            "delta": round(total_mine.rate - total_theirs.rate, 4),
            "delta_ci95": bootstrap_ci(mine, reps, rng, theirs),
        }
    return out


def hypothesis_lines(run: Run, dataset: str) -> list[dict]:
    """One line per utterance of a transcription run: reference and hypothesis, raw and normalized, with the
    hypotheses at the longer caps (``at_caps``) where the run has them."""
    longer = {cap: dict(zip((u.id for u in r.utts), zip(r.hyps, r.capped or []))) for cap, r in run.at_caps.items()}
    hyps = []
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
    return hyps


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
                if other is not None and other is not run:
                    row |= _paired(name, other, utts, refs, metric, stats, row["score"], reps, rng)
            rows.append(row)
    return rows, translation_lines(run, dataset)


def _paired(
    name: str,
    other: Run,
    utts: list[Utterance],
    refs: list[str],
    metric: str,
    stats: np.ndarray,
    score: float,
    reps: int,
    rng: np.random.Generator,
) -> dict:
    """``other``'s score on ``utts`` and the paired difference from ``score``, as fields named after ``name``;
    none where ``other`` was not decoded on them."""
    by_id = dict(zip((u.id for u in other.utts), other.hyps))
    if not all(u.id in by_id for u in utts):
        return {}  # the other model was not decoded on this language
    stats_o = translation_metrics.sentence_stats(metric, [by_id[u.id] for u in utts], refs)
    score_o = translation_metrics.corpus_score(metric, stats_o)
    return {
        f"{name}_score": round(score_o, 2),
        f"{name}_delta": round(score - score_o, 2),
        f"{name}_delta_ci95": translation_metrics.bootstrap_interval(metric, stats, reps, rng, stats_o),
    }


def translation_lines(run: Run, dataset: str) -> list[dict]:
    """One line per utterance of a translate run: source text, English reference and hypothesis."""
    return [
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
