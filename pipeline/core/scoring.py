"""WER / CER scoring as DESIGN.md says: Whisper's normalizers, corpus-level rates.

English uses Whisper's ``EnglishTextNormalizer`` with Whisper's British-to-American
spelling map (``resources/whisper_english_spelling.json``), other languages the
``BasicTextNormalizer`` (diacritics kept); zh, ja, ko, th, yue, lo and my
are scored on characters (spaces removed). Rates are corpus-level: the sum
of errors over the sum of reference units, never a mean of per-utterance
rates. Hits, substitutions, deletions and insertions are kept, so loops
(insertions) stay visible.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jiwer

from pipeline.core.errors import DwPipeError

CHAR_LANGUAGES = frozenset({"zh", "ja", "ko", "th", "yue", "lo", "my"})
SPELLING_MAP = Path(__file__).with_name("resources") / "whisper_english_spelling.json"


def _normalizers():
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    # An empty map would score "colour" against "color" as an error; Whisper's own scoring maps both.
    spelling = json.loads(SPELLING_MAP.read_text(encoding="utf-8"))
    return EnglishTextNormalizer(spelling), BasicTextNormalizer(remove_diacritics=False)


_ENGLISH, _BASIC = None, None


def normalize(text: str, language: str) -> str:
    global _ENGLISH, _BASIC
    if _ENGLISH is None:
        _ENGLISH, _BASIC = _normalizers()
    text = (_ENGLISH if language == "en" else _BASIC)(text)
    if language in CHAR_LANGUAGES:
        return " ".join(ch for ch in text if not ch.isspace())
    return " ".join(text.split())


def metric_for(language: str) -> str:
    return "cer" if language in CHAR_LANGUAGES else "wer"


@dataclass
class Counts:
    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def ref_units(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        return self.errors / self.ref_units if self.ref_units else float("nan")

    def __iadd__(self, other: Counts) -> Counts:
        self.hits += other.hits
        self.substitutions += other.substitutions
        self.deletions += other.deletions
        self.insertions += other.insertions
        return self


def count_errors(ref_norm: str, hyp_norm: str) -> Counts:
    """Edit-operation counts between two normalized strings (units are space-separated)."""
    if not ref_norm.split():
        return Counts(insertions=len(hyp_norm.split()))
    if not hyp_norm.split():
        return Counts(deletions=len(ref_norm.split()))
    out = jiwer.process_words(ref_norm, hyp_norm)
    return Counts(out.hits, out.substitutions, out.deletions, out.insertions)


def score(pairs: list[tuple[str, str, str]]) -> Counts:
    """Corpus-level counts over (reference, hypothesis, language) triples."""
    total = Counts()
    for ref, hyp, lang in pairs:
        total += count_errors(normalize(ref, lang), normalize(hyp, lang))
    return total


def score_labels(rows: Iterable[tuple[str, str, str, str | None]], withheld: dict[str, str]) -> dict[str, dict]:
    """Per language of ``rows`` (id, language, the teacher's label, why the filters left it out or None): the
    labels' error rate against ``withheld`` over every row and over the kept ones, and the filters' reasons."""
    pairs: dict[str, list] = {}
    kept: dict[str, list] = {}
    reasons: dict[str, Counter] = {}
    for uid, language, text, reason in rows:
        if uid not in withheld:
            raise DwPipeError(f"unlabelled row {uid} has no withheld text to score its teacher label against")
        pair = (withheld[uid], text, language)
        pairs.setdefault(language, []).append(pair)
        reasons.setdefault(language, Counter())
        if reason:
            reasons[language][reason.split(":")[0]] += 1
        else:
            kept.setdefault(language, []).append(pair)
    out = {}
    for lang in sorted(pairs):
        passed = kept.get(lang, [])
        out[lang] = {
            "utterances": len(pairs[lang]),
            "error_rate_all": round(score(pairs[lang]).rate, 4),
            "kept": len(passed),
            "error_rate_kept": round(score(passed).rate, 4) if passed else None,
            "filtered": dict(sorted(reasons[lang].items())),
        }
    return out
