"""Our scorer against jiwer used directly: same counts, corpus-level rates, character languages."""

from __future__ import annotations

import jiwer

from pipeline.scoring import count_errors, normalize, score

PAIRS = [
    ("Dzień dobry, jak się masz?", "dzień dobry jak sie masz", "pl"),
    ("Der Zug fährt um acht Uhr ab.", "der zug fährt um acht uhr ab ab ab", "de"),
    ("Hello there, General Kenobi!", "hello their general", "en"),
    ("Dobré ráno.", "", "cs"),
]


def test_counts_equal_jiwer_on_normalized_text():
    refs = [normalize(r, lang) for r, _, lang in PAIRS]
    hyps = [normalize(h, lang) for _, h, lang in PAIRS]
    ours = score(PAIRS)
    nonempty = [(r, h) for r, h in zip(refs, hyps) if h]
    direct = jiwer.process_words([r for r, _ in nonempty], [h for _, h in nonempty])
    empty_dels = sum(len(r.split()) for r, h in zip(refs, hyps) if not h)
    assert (ours.hits, ours.substitutions, ours.insertions) == (direct.hits, direct.substitutions, direct.insertions)
    assert ours.deletions == direct.deletions + empty_dels
    assert abs(ours.rate - ours.errors / ours.ref_units) < 1e-12
    per_utt_mean = sum(count_errors(r, h).rate for r, h in zip(refs, hyps)) / len(refs)
    assert abs(ours.rate - per_utt_mean) > 1e-3  # corpus-level, not a mean of per-utterance rates


def test_character_languages_score_characters():
    counts = score([("今天天气很好。", "今天天汽很好", "zh")])
    direct = jiwer.process_characters("今天天气很好", "今天天汽很好")
    assert (counts.hits, counts.substitutions, counts.deletions, counts.insertions) == (
        direct.hits,
        direct.substitutions,
        direct.deletions,
        direct.insertions,
    )
