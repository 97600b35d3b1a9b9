"""Translation scores: sacrebleu's corpus chrF and BLEU from summed sentence statistics, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu

from pipeline.evaluate.translation import bootstrap_interval, corpus_score, sentence_stats

REFS = [
    "Authentication is required to log into a local container.",
    "You have old mail.",
    "The file was not found on this disk.",
    "Do you accept this agreement?",
    "There are no updates available at this time.",
    "The key has expired.",
]
GOOD = [
    "Authentication is required to log in to a local container.",
    "You have old mail.",
    "The file was not found on the disk.",
    "Do you accept the agreement?",
    "No updates are available at this time.",
    "This key has expired.",
]
BAD = ["Good luck with this soap.", "", "The world is big.", "Accept the short coin.", "Hello there.", "Keys."]


@pytest.mark.parametrize("metric", ["chrf", "bleu"])
def test_corpus_score_is_sacrebleus(metric):
    stats = sentence_stats(metric, GOOD, REFS)
    expected = (sacrebleu.corpus_chrf if metric == "chrf" else sacrebleu.corpus_bleu)(GOOD, [REFS]).score
    assert corpus_score(metric, stats) == pytest.approx(expected, abs=1e-9)
    assert corpus_score(metric, stats[:2]) == pytest.approx(
        (sacrebleu.corpus_chrf if metric == "chrf" else sacrebleu.corpus_bleu)(GOOD[:2], [REFS[:2]]).score, abs=1e-9
    )


@pytest.mark.parametrize("metric", ["chrf", "bleu"])
def test_bootstrap_intervals_hold_the_score_and_pair_the_sentences(metric):
    good, bad = sentence_stats(metric, GOOD, REFS), sentence_stats(metric, BAD, REFS)
    low, high = bootstrap_interval(metric, good, 300, np.random.default_rng(0))
    assert low <= corpus_score(metric, good) <= high and low < high
    assert bootstrap_interval(metric, good, 300, np.random.default_rng(0), good) == (0.0, 0.0)
    d_low, d_high = bootstrap_interval(metric, bad, 300, np.random.default_rng(0), good)
    assert d_high < 0  # every resample: the bad system scores below the good one
    assert bootstrap_interval(metric, good, 300, np.random.default_rng(1)) != (low, high)  # resampled, seeded


def test_mismatched_lengths_and_unknown_metrics_are_refused():
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        sentence_stats("chrf", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unknown translation metric 'meteor'"):
        sentence_stats("meteor", ["a"], ["a"])
