"""The embedded corpus: real sentences spoken by espeak-ng voices.

Per language, sentences come from fortune files (Debian ``fortunes-*``);
in-domain files feed train/dev/test, other files feed ``test_ood``. Splits
are disjoint in sentences (deduplicated across all splits) and in voices
(each split has its own espeak-ng variants). Rate and pitch vary per
utterance. Every choice is drawn from one seeded generator, so the corpus
is the same for the same seed and inputs.
"""

from __future__ import annotations

import logging
import random
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pipeline.audio import Voice, espeak_binary
from pipeline.errors import DwPipeError
from pipeline.text import fortune_entries, normalize_for_dedup, sentence_problem, split_sentences

log = logging.getLogger(__name__)

# espeak-ng voice for each Whisper language code, where the names differ.
ESPEAK_LANGUAGE_VOICE = {"zh": "cmn", "pt": "pt-br"}


@dataclass(frozen=True)
class LanguageTexts:
    in_domain: tuple[str, ...]  # globs under the fortunes root
    ood: tuple[str, ...] = ()


@dataclass(frozen=True)
class SyntheticConfig:
    fortunes_root: Path
    languages: tuple[str, ...]
    targets: tuple[str, ...]
    target_sizes: dict[str, int]
    other_sizes: dict[str, int]
    texts: dict[str, LanguageTexts]
    voices: dict[str, tuple[str, ...]]  # split -> espeak-ng variants
    rate: tuple[int, ...] = (130, 190)
    pitch: tuple[int, ...] = (30, 70)
    min_words: int = 3
    max_words: int = 16
    min_chars_cjk: int = 4
    max_chars_cjk: int = 24


@dataclass(frozen=True)
class SyntheticItem:
    id: str
    language: str
    split: str
    text: str
    voice: Voice
    gender: str
    source: str


def variant_genders() -> dict[str, str]:
    """espeak-ng variant file name -> gender, from ``espeak-ng --voices=variant``."""
    listing = subprocess.run([espeak_binary(), "--voices=variant"], capture_output=True, text=True, check=True)
    genders = {}
    for line in listing.stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("!v/"):
            genders[cols[4][3:]] = {"M": "male", "F": "female"}.get(cols[2].split("/")[-1], "unknown")
    return genders


def _sentences(root: Path, globs: tuple[str, ...], language: str, cfg: SyntheticConfig, stats: Counter) -> list[str]:
    files = sorted({p for g in globs for p in root.glob(g) if p.is_file() and p.suffix not in (".dat", ".u8")})
    if not files:
        raise DwPipeError(
            f"language {language}: no text files match {list(globs)} under {root}; "
            "install the Debian fortunes packages (scripts/setup.sh does) or fix prepare_data.synthetic.texts"
        )
    cjk = language in ("zh", "ja", "ko", "yue")
    lo, hi = (cfg.min_chars_cjk, cfg.max_chars_cjk) if cjk else (cfg.min_words, cfg.max_words)
    out = []
    for path in files:
        try:
            entries = list(fortune_entries(path))
        except UnicodeDecodeError:
            stats["file not valid UTF-8"] += 1
            continue
        for entry in entries:
            for sentence in split_sentences(entry, language):
                problem = sentence_problem(sentence, language, lo, hi)
                stats[problem or "kept"] += 1
                if problem is None:
                    out.append(sentence)
    return out


def plan_corpus(cfg: SyntheticConfig, seed: int) -> tuple[list[SyntheticItem], dict]:
    """Choose sentences, voices, rates and pitches for every utterance (no audio yet)."""
    genders = variant_genders()
    unknown = sorted({v for vs in cfg.voices.values() for v in vs} - set(genders))
    if unknown:
        raise DwPipeError(f"espeak-ng has no voice variant(s) {unknown}; see `espeak-ng --voices=variant`")
    rng = random.Random(seed)
    items: list[SyntheticItem] = []
    text_stats: dict[str, dict[str, int]] = {}
    for lang in cfg.languages:
        if lang not in cfg.texts:
            raise DwPipeError(f"prepare_data.synthetic.texts has no entry for language {lang}")
        sizes = cfg.target_sizes if lang in cfg.targets else cfg.other_sizes
        stats: Counter = Counter()
        pools = _disjoint_pools(cfg, lang, stats, rng)
        text_stats[lang] = dict(stats)
        for split, count in sizes.items():
            if split == "test_ood" and not cfg.texts[lang].ood:
                log.info("language %s has no out-of-domain texts configured: no test_ood utterances", lang)
                continue
            pool = pools["ood" if split == "test_ood" else "in_domain"]
            if len(pool) < count:
                raise DwPipeError(
                    f"language {lang}: only {len(pool)} unused clean sentences left for {count} {split} utterances; "
                    "lower the sizes or add text files"
                )
            chosen, pools["ood" if split == "test_ood" else "in_domain"] = pool[:count], pool[count:]
            voices = cfg.voices[split]
            for n, text in enumerate(chosen):
                variant = voices[rng.randrange(len(voices))]
                voice = Voice(
                    ESPEAK_LANGUAGE_VOICE.get(lang, lang), variant, rng.randint(*cfg.rate), rng.randint(*cfg.pitch)
                )
                items.append(
                    SyntheticItem(f"{lang}-{split}-{n:05d}", lang, split, text, voice, genders[variant], "espeak-ng")
                )
    return items, text_stats


def _disjoint_pools(cfg: SyntheticConfig, lang: str, stats: Counter, rng: random.Random) -> dict[str, list[str]]:
    """Shuffled in-domain and OOD sentence pools, no sentence (up to case and punctuation) twice."""
    seen: set[str] = set()
    pools: dict[str, list[str]] = {}
    for kind, globs in (("in_domain", cfg.texts[lang].in_domain), ("ood", cfg.texts[lang].ood)):
        unique = []
        for sentence in _sentences(cfg.fortunes_root, globs, lang, cfg, stats) if globs else []:
            key = normalize_for_dedup(sentence)
            if key in seen:
                stats["duplicate"] += 1
                continue
            seen.add(key)
            unique.append(sentence)
        rng.shuffle(unique)
        pools[kind] = unique
    return pools


def check_split_voices(voices: dict[str, tuple[str, ...]]) -> None:
    """Each split needs voices, and no voice may serve two splits."""
    owner: dict[str, str] = {}
    for split, names in voices.items():
        if not names:
            raise DwPipeError(f"prepare_data.synthetic.voices.{split} is empty")
        for name in names:
            if name in owner:
                raise DwPipeError(
                    f"voice variant {name} is in both {owner[name]} and {split}; splits must not share voices"
                )
            owner[name] = split


SAFE = re.compile(r"[^\w.-]")
