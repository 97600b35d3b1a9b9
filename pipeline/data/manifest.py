"""The manifest contract (DESIGN.md, "Manifest"): typed records, validation, JSONL I/O.

Every input item ends as either an :class:`Utterance` or a rejection with
its reason; nothing is dropped silently (kept + rejected = read).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import DwPipeError

# translate: speech in a language with an English reference (``translation``), decoded X->en (benchmark)
# unlabelled: speech without a reference text (its ``text`` is ""), or with a weak one such as a subtitle; never
# scored, and refused by whatever needs references (:func:`load_labelled`)
SPLITS = ("train", "dev", "test", "test_ood", "translate", "unlabelled")
UNLABELLED = "unlabelled"
# Beside the manifests: the withheld texts of an embedded unlabelled pool (prepare_data.write_withheld)
WITHHELD_TEXTS = "unlabelled_texts.jsonl"
GENDERS = frozenset({"female", "male", "other", "unknown"})
MAX_SECONDS = 30.0
MAX_DECODER_TOKENS = 448  # Whisper's decoder context
PROMPT_TOKENS = 4  # <|startoftranscript|><|lang|><|transcribe|><|notimestamps|>
SILENCE_PEAK = 1e-3


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: str
    text: str
    language: str
    duration: float
    split: str
    source: str
    speaker: str = ""
    gender: str = "unknown"
    age: str = ""  # child | adult | "" (not known)
    translation: str = ""  # the English reference of a translate-split utterance; "" elsewhere
    # A window of several utterances: each one's {"start", "end", "text"} (seconds in this audio), so it trains
    # with timestamp tokens (pipeline.models.forward.timestamp_labels); empty for a plain utterance
    segments: tuple = ()

    def to_json(self) -> str:
        record = asdict(self)
        for key in ("translation", "segments"):
            if not record[key]:
                del record[key]  # manifests without these stay as they were
        return json.dumps(record, ensure_ascii=False)


@dataclass(frozen=True)
class Candidate:
    """One input item: its manifest fields, where it came from, and how to get its audio."""

    source: str
    record: dict
    audio: object  # Voice+text (speech), Path, bytes, or (array, rate)
    line: int | None = None


class Candidates:
    """A source's candidates, read again on each pass: ``iter()`` gives them with their audio, ``records()``
    without it where the source can leave it unread (a hub dataset's audio bytes), so a pass over the records
    of a large corpus holds one record at a time. ``read(records_only)`` makes the iterator."""

    def __init__(self, read: Callable[[bool], Iterator[Candidate]]) -> None:
        self._read = read

    def __iter__(self) -> Iterator[Candidate]:
        return self._read(False)

    def records(self) -> Iterator[Candidate]:
        return self._read(True)

    @staticmethod
    def chain(parts: list[Candidates]) -> Candidates:
        return Candidates(lambda records_only: (c for p in parts for c in p._read(records_only)))


@dataclass(frozen=True)
class Rejection:
    source: str
    reason: str
    id: str | None = None
    line: int | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, ensure_ascii=False)


@dataclass
class Checker:
    """Checks that do not depend on the audio: ids, text, language, token length."""

    languages: frozenset[str]
    tokenizer: Any  # a transformers Whisper tokenizer
    normalize: Callable[[str, str], str]  # (text, language) -> what scoring compares (scoring.normalize)

    def text_problem(self, text: object, language: str) -> str | None:
        if not isinstance(text, str) or not text.strip():
            return "empty or whitespace-only text"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "text is not valid UTF-8"
        if not self.normalize(text, language).split():  # a WER over zero reference words is undefined
            return f"no words to score: {text.strip()[:60]!r} normalises to nothing (punctuation or symbols only)"
        # The decoder reads prompt + labels[:-1] (teacher.decoder_inputs): the prompt and the n text
        # tokens; the end token is predicted at the last of them, never read.
        n_tokens = len(self.tokenizer(text.strip(), add_special_tokens=False).input_ids)
        if PROMPT_TOKENS + n_tokens > MAX_DECODER_TOKENS:
            return (
                f"text too long for the decoder: {n_tokens} tokens + {PROMPT_TOKENS} prompt tokens = "
                f"{PROMPT_TOKENS + n_tokens} positions > {MAX_DECODER_TOKENS}; split the utterance or drop it"
            )
        return None

    def record_problem(
        self, uid: object, text: object, language: object, split: object, translation: object = ""
    ) -> str | None:
        if not isinstance(uid, str) or not uid:
            return "missing id"
        if language not in self.languages:
            return f"language unknown to Whisper: {language!r}"
        if split not in SPLITS:
            return f"unknown split: {split!r} (use one of {', '.join(SPLITS)})"
        if text is None or (isinstance(text, str) and not text.strip()):
            if split == UNLABELLED:
                return None  # no reference: the audio is all there is (checked like any other)
            if text is None:
                return (
                    f"no reference text: split {split} needs one (dev and test are scored, train is trained on); "
                    f"put untranscribed audio in the {UNLABELLED} split"
                )
        problem = self.text_problem(text, language)  # a weak reference of an unlabelled row is checked as any
        if problem is None and split == "translate" and not (isinstance(translation, str) and translation.strip()):
            problem = "translate utterance without an English reference: give it a non-empty 'translation'"
        return problem


def audio_problem(samples: np.ndarray | None, rate: int = 16_000) -> str | None:
    """Why decoded audio is unusable (empty, silent, too long), or None."""
    if samples is None or samples.size == 0:
        return "empty audio"
    if not np.all(np.isfinite(samples)):
        return "corrupt audio: NaN or infinite samples"
    duration = samples.size / rate
    if duration > MAX_SECONDS:
        return f"duration over {MAX_SECONDS:.0f} s: {duration:.1f} s exceeds Whisper's window; split it or drop it"
    if float(np.abs(samples).max()) < SILENCE_PEAK:
        return "silent audio"
    return None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record, problem) for each non-blank line; bad lines carry a problem."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield number, None, "line is not valid UTF-8"
                continue
            except json.JSONDecodeError as exc:
                yield number, None, f"line is not valid JSON: {exc.msg}"
                continue
            if not isinstance(record, dict):
                yield number, None, "line is not a JSON object"
                continue
            bad = _lone_surrogate_field(record)
            if bad is not None:
                yield number, None, f"line is not valid UTF-8: field {bad} holds an escaped lone surrogate"
                continue
            yield number, record, None


def _lone_surrogate_field(record: dict) -> str | None:
    """The first field (as ``ascii()``) whose key or value cannot be written as UTF-8, or None.

    Valid UTF-8 bytes can still spell an invalid string: JSON's ``\\udc80``
    escape (what a tool writes for an undecodable file name) decodes to a lone
    surrogate, which no UTF-8 output can hold.
    """
    for key, value in record.items():
        try:
            json.dumps({key: value}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return ascii(key)
    return None


def load_manifest(path: Path) -> list[Utterance]:
    """A manifest written by prepare_data (trusted: structural errors raise)."""
    items = []
    for number, record, problem in read_jsonl(path):
        if problem:
            raise ValueError(f"{path}:{number}: {problem}")
        items.append(Utterance(**record))
    return items


def load_labelled(path: Path, needs: str) -> list[Utterance]:
    """:func:`load_manifest` for a use that needs every row's reference text (``needs``: what, for the message):
    a row of the unlabelled split, with no text or a weak one (a subtitle), is refused in one line rather than
    scored or trained on as a reference."""
    utts = load_manifest(path)
    missing = [u for u in utts if not u.text or u.split == UNLABELLED]
    if missing:
        first = missing[0]
        raise DwPipeError(
            f"{path}: {len(missing)} row(s) without a reference text (first: {first.id}, split {first.split}); "
            f"{needs} needs references"
        )
    return utts


def write_jsonl(path: Path, rows: Iterable[Utterance | Rejection]) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(row.to_json() + "\n")
            count += 1
    return count


def summarize(kept: list[Utterance], rejected: list[Rejection], read: int) -> dict:
    """Utterances and hours per split, language and gender, plus rejection reasons."""

    def table(key) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for u in kept:
            slot = out.setdefault(key(u), {"utterances": 0, "hours": 0.0})
            slot["utterances"] += 1
            slot["hours"] += u.duration / 3600
        return {k: {"utterances": v["utterances"], "hours": round(v["hours"], 4)} for k, v in sorted(out.items())}

    reasons: dict[str, int] = {}
    for r in rejected:
        kind = r.reason.split(":")[0]  # reasons read "<kind>: <details>"
        reasons[kind] = reasons.get(kind, 0) + 1
    assert read == len(kept) + len(rejected), "every item is kept or rejected"
    return {
        "read": read,
        "kept": len(kept),
        "rejected": len(rejected),
        "hours": round(math.fsum(u.duration for u in kept) / 3600, 4),
        "by_split": table(lambda u: u.split),
        "by_language_split": table(lambda u: f"{u.language}/{u.split}"),
        "by_gender_split": table(lambda u: f"{u.gender}/{u.split}"),
        "rejection_reasons": dict(sorted(reasons.items())),
    }
