"""The embedded corpus: real sentences spoken by Festival and espeak-ng voices.

Per language, sentences come from fortune files (Debian ``fortunes-*``) or
from translated program messages (``gettext:NAME`` entries: the compiled
catalogues ``<locale_root>/<lang>/LC_MESSAGES/NAME.mo`` that Debian packages
install); in-domain sources feed train/dev/test, the others ``test_ood``.
Splits are disjoint in sentences (deduplicated across all splits).

A language listed under ``festival`` is spoken by the Festival voices named
per split (pipeline.data.festival); a language has only a few, so splits may
share them, and ``stretch`` and ``shift`` vary each utterance. Every other
language is spoken by espeak-ng variants, each split its own, with rate and
pitch varied per utterance. Every choice is drawn from one seeded generator,
so the corpus is the same for the same seed and inputs.
"""

from __future__ import annotations

import logging
import random
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import DwPipeError
from pipeline.data.audio import Voice, espeak_binary
from pipeline.data.festival import VOICES as FESTIVAL_VOICES
from pipeline.data.festival import FestivalVoice, check_voices
from pipeline.data.manifest import UNLABELLED
from pipeline.data.text import fortune_entries, mo_messages, normalize_for_dedup, sentence_problem, split_sentences

log = logging.getLogger(__name__)

# espeak-ng voice for each Whisper language code, where the names differ.
ESPEAK_LANGUAGE_VOICE = {"zh": "cmn", "pt": "pt-br"}


@dataclass(frozen=True)
class LanguageTexts:
    in_domain: tuple[str, ...]  # globs under the fortunes root, or gettext:NAME_GLOB (catalogues)
    ood: tuple[str, ...] = ()


@dataclass(frozen=True)
class TranslateSet:
    """The X->English test set: the same English messages spoken in every language (Festival voices).

    Each entry of ``texts`` (``gettext:NAME``) names a catalogue that pairs
    English messages (msgid) with their translation; a message enters when it
    is one clean sentence in English and in every language of ``languages``,
    and its translation is no sentence of that language's other splits. The
    same ``size`` messages are drawn for every language, so languages differ in
    language, not in content.
    """

    languages: tuple[str, ...]
    size: int
    texts: tuple[str, ...]  # gettext:NAME entries
    voices: dict[str, tuple[str, ...]]  # language -> Festival voices
    min_words: int = 4  # of the English message
    max_words: int = 16


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
    locale_root: Path = Path("/usr/share/locale")
    festival: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)  # language -> split -> voices
    stretch: tuple[float, ...] = (1.0, 1.0)  # Festival: duration stretch range (> 1 slower)
    shift: tuple[float, ...] = (1.0, 1.0)  # Festival: playback-rate range (pitch and formants x shift)
    translate: TranslateSet | None = None  # the X->English test set (split "translate"); None: none
    # A size for split "unlabelled" (in target_sizes, other_sizes or sizes_by_language) makes an unlabelled pool:
    # in-domain sentences no other split draws, spoken by the train voices unless the split names its own; its rows
    # carry no text (the texts are withheld: prepare_data writes them apart, to score the teacher's labels)
    # language -> split -> count, over target_sizes / other_sizes for that language (a language whose texts give
    # fewer clean sentences than the others need)
    sizes_by_language: dict[str, dict[str, int]] = field(default_factory=dict)

    def sizes(self, lang: str) -> dict[str, int]:
        """Utterances per split of ``lang``."""
        base = self.target_sizes if lang in self.targets else self.other_sizes
        return {**base, **self.sizes_by_language.get(lang, {})}


@dataclass(frozen=True)
class SyntheticItem:
    id: str
    language: str
    split: str
    text: str
    voice: Voice | FestivalVoice
    gender: str
    source: str  # the engine: espeak-ng | festival
    age: str = "adult"
    translation: str = ""  # the English reference (split translate)

    @property
    def speaker(self) -> str:
        if isinstance(self.voice, FestivalVoice):
            return self.voice.name
        return f"espeak-ng:{self.voice.language_voice}+{self.voice.variant}"


def variant_genders() -> dict[str, str]:
    """espeak-ng variant file name -> gender, from ``espeak-ng --voices=variant``."""
    listing = subprocess.run([espeak_binary(), "--voices=variant"], capture_output=True, text=True, check=True)
    genders = {}
    for line in listing.stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("!v/"):
            genders[cols[4][3:]] = {"M": "male", "F": "female"}.get(cols[2].split("/")[-1], "unknown")
    return genders


GETTEXT = "gettext:"


def _text_files(globs: tuple[str, ...], language: str, cfg: SyntheticConfig) -> list[Path]:
    catalogues = cfg.locale_root / language / "LC_MESSAGES"
    files: set[Path] = set()
    for g in globs:
        if g.startswith(GETTEXT):
            matched = {p for p in catalogues.glob(g[len(GETTEXT) :] + ".mo") if p.is_file()}
        else:
            matched = {p for p in cfg.fortunes_root.glob(g) if p.is_file() and p.suffix not in (".dat", ".u8")}
        files |= matched
        if not matched:
            where = catalogues if g.startswith(GETTEXT) else cfg.fortunes_root
            raise DwPipeError(
                f"language {language}: no text files match {g!r} under {where}; install the Debian fortunes "
                "packages and the packages whose catalogues are named (scripts/setup.sh does) "
                "or fix prepare_data.synthetic.texts"
            )
    return sorted(files)


def _entries(path: Path) -> list[str]:
    if path.suffix == ".mo":
        return [_one_line(translated) for _, translated in mo_messages(path)]
    return list(fortune_entries(path))


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _sentences(globs: tuple[str, ...], language: str, cfg: SyntheticConfig, stats: Counter) -> list[str]:
    cjk = language in ("zh", "ja", "ko", "yue")
    lo, hi = (cfg.min_chars_cjk, cfg.max_chars_cjk) if cjk else (cfg.min_words, cfg.max_words)
    out = []
    for path in _text_files(globs, language, cfg):
        try:
            entries = _entries(path)
        except UnicodeDecodeError:
            stats["file not valid UTF-8"] += 1
            continue
        except ValueError:
            stats["file not a gettext catalogue"] += 1
            continue
        for entry in entries:
            for sentence in split_sentences(entry, language):
                problem = sentence_problem(sentence, language, lo, hi)
                stats[problem or "kept"] += 1
                if problem is None:
                    out.append(sentence)
    return out


def plan_corpus(cfg: SyntheticConfig, seed: int) -> tuple[list[SyntheticItem], dict]:
    """Choose sentences, voices and voice settings for every utterance (no audio yet)."""
    espeak_languages = [lang for lang in cfg.languages if lang not in cfg.festival]
    genders = variant_genders() if espeak_languages else {}
    unknown = sorted({v for vs in cfg.voices.values() for v in vs} - set(genders)) if espeak_languages else []
    if unknown:
        raise DwPipeError(f"espeak-ng has no voice variant(s) {unknown}; see `espeak-ng --voices=variant`")
    check_festival(cfg)
    rng = random.Random(seed)
    items: list[SyntheticItem] = []
    text_stats: dict[str, dict[str, int]] = {}
    used: dict[str, set[str]] = {}  # per language: every sentence its other splits may draw (dedup keys)
    left: dict[str, list[str]] = {}  # per language: the in-domain sentences no split drew
    for lang in cfg.languages:
        if lang not in cfg.texts:
            raise DwPipeError(f"prepare_data.synthetic.texts has no entry for language {lang}")
        sizes = cfg.sizes(lang)
        stats: Counter = Counter()
        pools = _disjoint_pools(cfg, lang, stats, rng)
        used[lang] = {normalize_for_dedup(x) for pool in pools.values() for x in pool}
        text_stats[lang] = dict(stats)
        for split, count in sizes.items():
            if count == 0 or split == UNLABELLED:
                continue
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
            for n, text in enumerate(chosen):
                items.append(_speak(cfg, lang, split, f"{lang}-{split}-{n:05d}", text, rng, genders))
        left[lang] = pools["in_domain"]
    if cfg.translate is not None:  # after the others: their draws stay what they were without it
        translated, text_stats["translate"] = _translate_items(cfg, used, rng)
        items += translated
    for lang in cfg.languages:  # last: the pool changes no other split's sentences or voices
        count = cfg.sizes(lang).get(UNLABELLED, 0)
        if len(left[lang]) < count:
            raise DwPipeError(
                f"language {lang}: only {len(left[lang])} in-domain sentences no other split uses for {count} "
                f"{UNLABELLED} utterances; lower the size or add text files"
            )
        for n, text in enumerate(left[lang][:count]):
            items.append(_speak(cfg, lang, UNLABELLED, f"{lang}-{UNLABELLED}-{n:05d}", text, rng, genders))
    return items, text_stats


def split_voices(voices: dict[str, tuple[str, ...]], split: str) -> tuple[str, ...]:
    """The voices of ``split``: its own, or for an unlabelled pool that names none, the train voices (speech like
    the labelled set's, without its transcripts)."""
    if split == UNLABELLED and not voices.get(split):
        return voices.get("train", ())
    return voices.get(split, ())


def _translate_items(
    cfg: SyntheticConfig, used: dict[str, set[str]], rng: random.Random
) -> tuple[list[SyntheticItem], dict[str, int]]:
    """The translate split: ``size`` English messages, each spoken in every language of the set."""
    ts = cfg.translate
    assert ts is not None
    outside = sorted(set(ts.languages) - set(cfg.languages))
    if outside:
        raise DwPipeError(
            f"prepare_data.synthetic.translate.languages {outside} are not in prepare_data.synthetic.languages"
        )
    missing = sorted(set(ts.languages) - set(ts.voices))
    if missing:
        raise DwPipeError(f"prepare_data.synthetic.translate.voices names no Festival voice for {missing}")
    bad = [t for t in ts.texts if not t.startswith(GETTEXT)]
    if bad:
        raise DwPipeError(
            f"prepare_data.synthetic.translate.texts {bad}: only gettext:NAME catalogues pair English with a translation"
        )
    for lang in ts.languages:
        check_voices(set(ts.voices[lang]))
        wrong = sorted(v for v in ts.voices[lang] if FESTIVAL_VOICES[v].language != lang)
        if wrong:
            raise DwPipeError(
                f"prepare_data.synthetic.translate.voices.{lang}: voice(s) {wrong} speak another language"
            )
    stats: Counter = Counter()
    pairs: dict[str, dict[str, str]] = {}  # language -> English message -> its translation
    for lang in ts.languages:
        found: dict[str, str] = {}
        for path in _text_files(ts.texts, lang, cfg):
            for english, translated in mo_messages(path):
                english, translated = _one_line(english), _one_line(translated)
                if english in found:
                    continue
                problem = _pair_problem(english, translated, lang, ts, cfg) or (
                    f"sentence of another split ({lang})" if normalize_for_dedup(translated) in used[lang] else None
                )
                stats[problem or f"kept ({lang})"] += 1
                if problem is None:
                    found[english] = translated
        pairs[lang] = found
    common = sorted(set.intersection(*(set(p) for p in pairs.values())))
    if len(common) < ts.size:
        raise DwPipeError(
            f"prepare_data.synthetic.translate: {len(common)} messages are clean sentences in English and in every one of "
            f"{list(ts.languages)}, fewer than size {ts.size}; lower the size or add catalogues"
        )
    chosen = rng.sample(common, ts.size)
    items = []
    for lang in ts.languages:
        voices = ts.voices[lang]
        for n, english in enumerate(chosen):
            name = voices[rng.randrange(len(voices))]
            voice = FestivalVoice(name, round(rng.uniform(*cfg.stretch), 3), round(rng.uniform(*cfg.shift), 3))
            info = FESTIVAL_VOICES[name]
            items.append(
                SyntheticItem(
                    f"{lang}-translate-{n:05d}",
                    lang,
                    "translate",
                    pairs[lang][english],
                    voice,
                    info.gender,
                    "festival",
                    info.age,
                    translation=english,
                )
            )
    return items, dict(stats)


def _pair_problem(english: str, translated: str, lang: str, ts: TranslateSet, cfg: SyntheticConfig) -> str | None:
    """Why a catalogue entry is no translate-set pair: each side must be one clean sentence."""
    if len(split_sentences(english, "en")) != 1 or len(split_sentences(translated, lang)) != 1:
        return "not one sentence"
    problem = sentence_problem(english, "en", ts.min_words, ts.max_words)
    if problem:
        return f"English: {problem}"
    problem = sentence_problem(translated, lang, cfg.min_words, cfg.max_words + ts.max_words // 4)
    return f"translation: {problem}" if problem else None


def _speak(
    cfg: SyntheticConfig, lang: str, split: str, uid: str, text: str, rng: random.Random, genders: dict[str, str]
) -> SyntheticItem:
    """The voice and settings of one utterance."""
    if lang in cfg.festival:
        names = split_voices(cfg.festival[lang], split)
        name = names[rng.randrange(len(names))]
        voice = FestivalVoice(name, round(rng.uniform(*cfg.stretch), 3), round(rng.uniform(*cfg.shift), 3))
        info = FESTIVAL_VOICES[name]
        return SyntheticItem(uid, lang, split, text, voice, info.gender, "festival", info.age)
    variants = split_voices(cfg.voices, split)
    variant = variants[rng.randrange(len(variants))]
    voice = Voice(ESPEAK_LANGUAGE_VOICE.get(lang, lang), variant, rng.randint(*cfg.rate), rng.randint(*cfg.pitch))
    return SyntheticItem(uid, lang, split, text, voice, genders[variant], "espeak-ng")


def check_festival(cfg: SyntheticConfig) -> None:
    """Festival languages name voices of their own language for every split they fill."""
    for lang, splits in cfg.festival.items():
        for split, count in cfg.sizes(lang).items():
            if count and not split_voices(splits, split):
                raise DwPipeError(f"prepare_data.synthetic.festival.{lang} names no voice for split {split}")
        names = {v for vs in splits.values() for v in vs}
        check_voices(names)
        wrong = sorted(v for v in names if FESTIVAL_VOICES[v].language != lang)
        if wrong:
            raise DwPipeError(f"prepare_data.synthetic.festival.{lang}: voice(s) {wrong} speak another language")


def _disjoint_pools(cfg: SyntheticConfig, lang: str, stats: Counter, rng: random.Random) -> dict[str, list[str]]:
    """Shuffled in-domain and OOD sentence pools, no sentence (up to case and punctuation) twice."""
    seen: set[str] = set()
    pools: dict[str, list[str]] = {}
    for kind, globs in (("in_domain", cfg.texts[lang].in_domain), ("ood", cfg.texts[lang].ood)):
        unique = []
        for sentence in _sentences(globs, lang, cfg, stats) if globs else []:
            key = normalize_for_dedup(sentence)
            if key in seen:
                stats["duplicate"] += 1
                continue
            seen.add(key)
            unique.append(sentence)
        rng.shuffle(unique)
        pools[kind] = unique
    return pools


SAFE = re.compile(r"[^\w.-]")
