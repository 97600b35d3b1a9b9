"""Scoring pinned by hand: normalised units and edit counts worked out on paper, not by jiwer.

Each expected ``(hits, substitutions, deletions, insertions)`` tuple below is
counted from the normalised words (or characters) written out in the test.
"""

from __future__ import annotations

import json
import math

import pytest
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from pipeline.core.scoring import SPELLING_MAP, Counts, count_errors, metric_for, normalize, score


def hsdi(counts: Counts) -> tuple[int, int, int, int]:
    return counts.hits, counts.substitutions, counts.deletions, counts.insertions


def test_polish_keeps_diacritics_so_each_dropped_one_is_a_substitution():
    ref, hyp = "Dzień dobry, jak się masz?", "dzien dobry jak sie masz"
    assert normalize(ref, "pl").split() == ["dzień", "dobry", "jak", "się", "masz"]
    assert normalize(hyp, "pl").split() == ["dzien", "dobry", "jak", "sie", "masz"]
    # dzień/dzien and się/sie differ; dobry, jak, masz match.
    counts = score([(ref, hyp, "pl")])
    assert hsdi(counts) == (3, 2, 0, 0)
    assert counts.ref_units == 5 and counts.rate == pytest.approx(2 / 5)


def test_sie_against_się_alone_is_one_substitution():
    assert hsdi(score([("się", "sie", "pl")])) == (0, 1, 0, 0)
    assert hsdi(score([("Się.", "się", "pl")])) == (1, 0, 0, 0)  # case and punctuation are not errors


def test_english_spelling_variants_are_not_errors():
    ref, hyp = "The colour of the centre.", "the color of the center"
    assert normalize(ref, "en") == normalize(hyp, "en") == "the color of the center"
    assert hsdi(score([(ref, hyp, "en")])) == (5, 0, 0, 0)
    # Without Whisper's spelling map colour/color and centre/center would be two substitutions.
    bare = EnglishTextNormalizer({})
    assert hsdi(count_errors(bare(ref), bare(hyp))) == (3, 2, 0, 0)


def test_spelling_map_is_whispers_whole_map():
    spelling = json.loads(SPELLING_MAP.read_text(encoding="utf-8"))
    assert len(spelling) == 1739  # entries in openai-whisper's whisper/normalizers/english.json
    assert spelling["colour"] == "color" and spelling["programme"] == "program"


def test_english_contractions_numbers_and_fillers_as_whisper_normalizes_them():
    # won't -> will not, "twenty dollars" -> $20, "Mr." -> mister, "um" dropped.
    ref = "Um, Mr. Smith won't pay twenty dollars."
    assert normalize(ref, "en").split() == ["mister", "smith", "will", "not", "pay", "$20"]
    assert hsdi(score([(ref, "mister smith will not pay $20", "en")])) == (6, 0, 0, 0)
    # "wont" is not a contraction: one substitution (wont/will) and one deletion (not).
    assert hsdi(score([(ref, "mister smith wont pay $20", "en")])) == (4, 1, 1, 0)


def test_english_only_spelling_map_stays_out_of_other_languages():
    assert normalize("colour", "de") == "colour"


def test_insertions_are_counted_beyond_the_reference():
    # der zug fährt ab | der zug fährt ab ab ab: four hits, two inserted "ab".
    counts = score([("Der Zug fährt ab.", "der zug fährt ab ab ab", "de")])
    assert hsdi(counts) == (4, 0, 0, 2)
    assert counts.rate == pytest.approx(2 / 4)


def test_deletions_are_counted():
    # der zug fährt um acht uhr ab | der zug fährt ab: "um acht uhr" missing.
    counts = score([("Der Zug fährt um acht Uhr ab.", "der zug fährt ab", "de")])
    assert hsdi(counts) == (4, 0, 3, 0)
    assert counts.rate == pytest.approx(3 / 7)


def test_empty_hypothesis_deletes_every_word_and_empty_reference_inserts():
    assert hsdi(score([("Dobré ráno.", "", "cs")])) == (0, 0, 2, 0)
    counts = score([("", "hello there", "en")])
    assert hsdi(counts) == (0, 0, 0, 2) and math.isnan(counts.rate)


def test_substitution_and_deletion_in_one_english_utterance():
    # hello there general kenobi | hello their general: there/their substituted, kenobi deleted.
    assert hsdi(score([("Hello there, General Kenobi!", "hello their general", "en")])) == (2, 1, 1, 0)


def test_chinese_is_scored_on_characters():
    assert metric_for("zh") == "cer" and metric_for("pl") == "wer"
    # 今 天 天 气 很 好 | 今 天 天 汽 很 好: the full stop and the space are not units; 气/汽 differ.
    assert normalize("今天天气很好。", "zh").split() == ["今", "天", "天", "气", "很", "好"]
    counts = score([("今天天气很好。", "今天 天汽很好", "zh")])
    assert hsdi(counts) == (5, 1, 0, 0)
    assert counts.rate == pytest.approx(1 / 6)
    # 今天天气很好 | 今天气很好啊: one 天 missing, 啊 added (two substitutions could not line up the rest).
    assert hsdi(score([("今天天气很好", "今天气很好啊", "zh")])) == (5, 0, 1, 1)


def test_rate_is_corpus_level_not_a_mean_of_utterance_rates():
    pairs = [
        ("Dobré ráno.", "dobré rano", "cs"),  # 2 words, 1 substitution: 1/2 alone
        ("Der Zug fährt um acht Uhr heute ab.", "der zug fährt um acht uhr heute ab", "de"),  # 8 words, 0 errors
    ]
    counts = score(pairs)
    assert hsdi(counts) == (9, 1, 0, 0)
    assert (counts.errors, counts.ref_units) == (1, 10)
    assert counts.rate == pytest.approx(1 / 10)  # the mean of the two rates would be (1/2 + 0) / 2 = 1/4
