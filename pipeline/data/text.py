"""Sentences from raw text: fortune-file parsing, sentence splitting and cleaning.

The embedded corpus speaks real sentences (Debian's ``fortunes-*``
packages). Those files mix quotes with signatures, IRC logs and ASCII art,
so every candidate sentence passes a few checks: a plausible length, only
characters of the language's script plus common punctuation, no markup.
Each rule that drops a sentence says which, so the summary can count them.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from collections.abc import Iterator
from pathlib import Path

# Letters each language's sentences may use (besides digits-free punctuation below).
LATIN = "a-zA-Z"
SCRIPT_LETTERS: dict[str, str] = {
    "en": LATIN,
    "de": LATIN + "äöüÄÖÜß",
    "es": LATIN + "áéíóúüñÁÉÍÓÚÜÑ",
    "it": LATIN + "àèéìíîòóùúÀÈÉÌÍÎÒÓÙÚ",
    "pt": LATIN + "áâãàçéêíóôõúüÁÂÃÀÇÉÊÍÓÔÕÚÜ",
    "pl": LATIN + "ąćęłńóśźżĄĆĘŁŃÓŚŹŻ",
    "cs": LATIN + "áčďéěíňóřšťúůýžÁČĎÉĚÍŇÓŘŠŤÚŮÝŽ",
    "ru": "а-яА-ЯёЁ",
    "bg": "а-яА-Я",
    "uk": "а-щА-ЩьюяЬЮЯєіїґЄІЇҐ'",
    "ca": LATIN + "àèéíïòóúüçÀÈÉÍÏÒÓÚÜÇ·",
    "fi": LATIN + "äöåÄÖÅšžŠŽ",
}
CJK = "\u4e00-\u9fff"
PUNCT = " ,.;:!?¡¿'\"«»„“”‘’()–—-"
CJK_PUNCT = "，。；：！？、「」『』《》（）"
SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")
CHAR_LANGUAGES = frozenset({"zh", "ja", "ko", "th", "yue", "lo", "my"})
# Languages whose sentences of a few words almost always carry a diacritic: a longer sentence
# without any is most likely transliterated to ASCII (common in the fortunes-pl files), and
# Whisper, writing the real spelling, would be scored wrong against it.
DIACRITICS = {"pl": "ąćęłńóśźżĄĆĘŁŃÓŚŹŻ", "cs": "áčďéěíňóřšťúůýžÁČĎÉĚÍŇÓŘŠŤÚŮÝŽ"}
MIN_WORDS_FOR_DIACRITIC_CHECK = 4


def fortune_entries(path: Path) -> Iterator[str]:
    """Entries of a fortune(6) file (separated by ``%`` lines), attribution lines dropped."""
    text = path.read_bytes().decode("utf-8", errors="strict")
    for entry in re.split(r"^%\s*$", text, flags=re.MULTILINE):
        lines = [ln for ln in entry.splitlines() if not re.match(r"^\s*(--|―|—)\s", ln)]
        body = " ".join(ln.strip() for ln in lines if ln.strip())
        if body:
            yield body


def mo_messages(path: Path) -> Iterator[tuple[str, str]]:
    """(English message, translation) pairs of a compiled gettext catalogue (``.mo``).

    The header entry, untranslated and plural entries (their forms carry
    counts) are left out; a message context (``ctx\\x04msgid``) is dropped.
    Raises ValueError for a file that is not a catalogue.
    """
    data = path.read_bytes()
    if len(data) < 20 or data[:4] not in (b"\xde\x12\x04\x95", b"\x95\x04\x12\xde"):
        raise ValueError(f"{path} is not a gettext .mo catalogue")
    order = "<" if data[:4] == b"\xde\x12\x04\x95" else ">"
    count, ids_at, strs_at = struct.unpack(order + "3I", data[8:20])

    def entry(table: int, n: int) -> bytes:
        length, offset = struct.unpack(order + "2I", data[table + 8 * n : table + 8 * n + 8])
        return data[offset : offset + length]

    charset = "utf-8"
    for n in range(count):
        msgid, msgstr = entry(ids_at, n), entry(strs_at, n)
        if not msgid:
            found = re.search(rb"charset=([\w.-]+)", msgstr)
            charset = found.group(1).decode("ascii") if found and found.group(1) != b"CHARSET" else charset
            continue
        if b"\x00" in msgid or not msgstr:
            continue
        yield msgid.split(b"\x04")[-1].decode(charset, errors="replace"), msgstr.decode(charset, errors="replace")


def split_sentences(text: str, language: str) -> list[str]:
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()
    sentences = (s.strip().lstrip("-–— ").strip() for s in SENTENCE_END.split(text))
    return [s for s in sentences if s]


def sentence_problem(sentence: str, language: str, min_units: int, max_units: int) -> str | None:
    """Why ``sentence`` is unfit for the corpus, or None when it is fine."""
    if re.search(r"[0-9@#<>\[\]{}|\\/_=*+~^$%&]|https?:|www\.", sentence):
        return "digits, markup or symbols"
    if language in CHAR_LANGUAGES:
        allowed = CJK + re.escape(CJK_PUNCT) + re.escape(PUNCT)
        units = len(re.findall(f"[{CJK}]", sentence))
    else:
        if language not in SCRIPT_LETTERS:
            return f"no character set known for language {language}"
        allowed = SCRIPT_LETTERS[language] + re.escape(PUNCT)
        units = len(sentence.split())
    if re.search(f"[^{allowed}]", sentence):
        return "characters implausible for the language"
    if not re.search(r"[.!?。！？]$", sentence):
        return "not a complete sentence"
    if any(any(c.isupper() for c in word[1:]) for word in re.findall(r"\w+", sentence)):
        return "acronym or mixed-case name"  # GIF, GStreamer, POSIX, НЕТ: a voice spells or garbles them
    marks = DIACRITICS.get(language)
    if marks and units >= MIN_WORDS_FOR_DIACRITIC_CHECK and not re.search(f"[{marks}]", sentence):
        return "no diacritics (likely ASCII-transliterated)"
    if units < min_units:
        return "too short"
    if units > max_units:
        return "too long"
    return None


def normalize_for_dedup(sentence: str) -> str:
    return re.sub(r"[^\w]", "", sentence.casefold())
