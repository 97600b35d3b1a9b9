"""Translation scores: sacrebleu's chrF and BLEU at corpus level, with bootstrap intervals.

A corpus score is a function of per-sentence statistics summed over the
corpus (chrF: character and word n-gram matches and counts; BLEU: n-gram
matches, totals and lengths), which is how sacrebleu computes it and how its
own ``n_bootstrap`` resamples. Here the sentences are resampled with a
seeded generator, and a paired interval compares two systems on the same
resampled sentences (the same resampling scheme as the error-rate intervals
of :func:`pipeline.evaluate.rows.bootstrap_ci`). Default settings: chrF (char
order 6, word order 0, beta 2), BLEU with the 13a tokeniser and exponential
smoothing, case kept; the signatures are recorded with the scores.
"""

from __future__ import annotations

from functools import cache

import numpy as np

METRICS = ("chrf", "bleu")


@cache
def _metric(name: str):
    from sacrebleu.metrics import BLEU, CHRF

    if name == "chrf":
        return CHRF()
    if name == "bleu":
        return BLEU()
    raise ValueError(f"unknown translation metric {name!r}: use one of {METRICS}")


def signature(name: str) -> str:
    return str(_metric(name).get_signature())


def sentence_stats(name: str, hyps: list[str], refs: list[str]) -> np.ndarray:
    """Per-sentence sufficient statistics ``[sentences, k]`` of metric ``name``."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    if not hyps:
        return np.zeros((0, 0))
    return np.asarray(_metric(name)._extract_corpus_statistics(hyps, [refs]), dtype=np.float64)


def corpus_score(name: str, stats: np.ndarray) -> float:
    """The corpus score (0-100) of the summed statistics of ``stats``' rows."""
    if len(stats) == 0:
        return float("nan")
    return float(_metric(name)._compute_score_from_stats(list(stats.sum(0))).score)


def bootstrap_interval(
    name: str, stats: np.ndarray, reps: int, rng: np.random.Generator, other: np.ndarray | None = None
) -> tuple[float, float]:
    """95 % interval of the corpus score over resampled sentences, or of its difference from ``other``'s
    (the same sentences, another system) on the same resamples."""
    n = len(stats)
    if n == 0 or reps <= 0:
        return float("nan"), float("nan")
    metric = _metric(name)
    idx = rng.integers(0, n, size=(reps, n))
    sums = stats[idx].sum(1)
    values = np.array([metric._compute_score_from_stats(list(s)).score for s in sums])
    if other is not None:
        sums_o = other[idx].sum(1)
        values = values - np.array([metric._compute_score_from_stats(list(s)).score for s in sums_o])
    low, high = np.percentile(values, [2.5, 97.5])
    return round(float(low), 2), round(float(high), 2)
