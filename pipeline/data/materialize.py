"""Checking candidates and writing their audio: the core of prepare_data, streamed and resumable.

:func:`process` reads a source twice. The first pass checks each record
(id, text, language, split, token length) and refuses the whole input, in
one line, at the first id seen twice, before any audio is written. The
second pass produces, checks and writes the audio of the records that
passed, as 16 kHz mono WAV, in worker processes fed a window at a time. So
what is held grows only with the outputs' metadata (one small tuple and one
result per accepted record), never with the audio a source carries.

A :class:`Journal` in the output folder records each finished item: where
its WAV is, the key of the audio it came from, its duration or why it was
rejected. A run killed part-way leaves the folder (``atomic_dir(resume=
True)``); the next run takes from it every item whose key still matches and
produces only the rest.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.core.errors import DwPipeError
from pipeline.core.progress import progress
from pipeline.data.audio import (
    SAMPLE_RATE,
    AudioError,
    Voice,
    load_audio,
    resample,
    synthesize,
    to_float_mono,
    write_wav,
)
from pipeline.data.festival import FestivalVoice, synthesize_festival
from pipeline.data.manifest import (
    MAX_SECONDS,
    SILENCE_PEAK,
    SPLITS,
    Candidate,
    Checker,
    Rejection,
    Utterance,
    audio_problem,
)

log = logging.getLogger(__name__)

JOURNAL = ".journal.jsonl"
# What a journal entry's result depends on besides its audio: the WAV written and the audio checks. A journal
# written under other values is not used.
PRODUCER = {"wav": f"pcm16/{SAMPLE_RATE}/mono", "max_seconds": MAX_SECONDS, "silence_peak": SILENCE_PEAK, "v": 1}


def _audio_samples(ref: object) -> np.ndarray:
    if isinstance(ref, tuple) and len(ref) == 2 and isinstance(ref[0], Voice):
        return synthesize(ref[1], ref[0])
    if isinstance(ref, tuple) and len(ref) == 2 and isinstance(ref[0], FestivalVoice):
        return synthesize_festival(ref[1], ref[0])
    if isinstance(ref, tuple):
        samples, rate = ref
        return resample(to_float_mono(np.asarray(samples)), int(rate))
    return load_audio(ref)


def audio_key(ref: object) -> str:
    """What the audio of ``ref`` is made from: a file's path, size and modification time; a hash of bytes or
    samples; the voice and text of speech to synthesize."""
    if isinstance(ref, Path):
        try:
            st = ref.stat()
        except OSError:
            return f"file:{ref}:missing"
        return f"file:{ref}:{st.st_size}:{st.st_mtime_ns}"
    if isinstance(ref, bytes | bytearray | memoryview):
        return "bytes:" + hashlib.sha256(ref).hexdigest()
    if isinstance(ref, tuple) and len(ref) == 2 and isinstance(ref[0], Voice | FestivalVoice):
        return "speech:" + hashlib.sha256(repr(ref).encode()).hexdigest()
    if isinstance(ref, tuple):
        samples, rate = ref
        return f"samples:{int(rate)}:" + hashlib.sha256(np.ascontiguousarray(samples).tobytes()).hexdigest()
    return f"other:{ref!r}"


def _produce(job: tuple[int, object, Path]) -> tuple[int, float | None, str | None]:
    """Worker: decode or synthesize, check, write the WAV. Returns (index, duration, problem)."""
    index, ref, target = job
    try:
        samples = _audio_samples(ref)
    except DwPipeError:
        raise
    except AudioError as exc:
        return index, None, str(exc)
    except Exception as exc:  # any decoder failure is a property of this item
        return (
            index,
            None,
            f"unreadable audio: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}",
        )
    problem = audio_problem(samples)
    if problem:
        return index, None, problem
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    write_wav(partial, samples)
    os.replace(partial, target)  # a worker killed mid-write leaves no WAV a later run would take as finished
    return index, len(samples) / SAMPLE_RATE, None


def _audio_name(uid: str) -> str:
    safe = re.sub(r"[^\w.-]", "_", uid)
    return safe if safe == uid else f"{safe}-{hashlib.sha1(uid.encode()).hexdigest()[:8]}"


class Journal:
    """The finished items of an output folder: ``audio path -> (audio key, duration, problem)``, one JSON line
    each after a header line with :data:`PRODUCER`. A line cut by a kill is ignored."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNAL
        self.done: dict[str, tuple[str, float | None, str | None]] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as handle:
                lines = iter(handle)
                header = next(lines, "")
                if _json_or_none(header) == {"producer": PRODUCER}:
                    for line in lines:
                        entry = _json_or_none(line)
                        if isinstance(entry, dict) and {"audio", "key", "duration", "problem"} <= set(entry):
                            self.done[entry["audio"]] = (entry["key"], entry["duration"], entry["problem"])
        self.reused = 0
        self._handle = open(self.path, "w", encoding="utf-8")  # rewritten: only this run's items stay
        self._handle.write(json.dumps({"producer": PRODUCER}) + "\n")
        self._handle.flush()

    def lookup(self, folder: Path, audio: str, key: str) -> tuple[float | None, str | None] | None:
        """The finished result of ``audio`` if it was made from ``key`` (and its WAV is still there), else None."""
        found = self.done.get(audio)
        if found is None or found[0] != key or (found[2] is None and not (folder / audio).is_file()):
            return None
        self.reused += 1
        self.record(audio, key, found[1], found[2])
        return found[1], found[2]

    def record(self, audio: str, key: str, duration: float | None, problem: str | None) -> None:
        line = {"audio": audio, "key": key, "duration": duration, "problem": problem}
        self._handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self, remove: bool = False) -> None:
        self._handle.close()
        if remove:
            self.path.unlink(missing_ok=True)


def _json_or_none(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def normalize_gender(value: object) -> str:
    text = str(value or "").strip().lower()
    if text.startswith(("female", "woman", "f")) and text not in ("", "false"):
        return "female"
    if text.startswith(("male", "man", "m")):
        return "male"
    return "other" if text in ("other", "non-binary", "nonbinary") else "unknown"


ADULT_AGES = frozenset(
    {"adult", "twenties", "thirties", "fourties", "forties", "fifties", "sixties", "seventies", "eighties", "nineties"}
)  # Common Voice's age bands from twenties on


def normalize_age(value: object) -> str:
    """``child``, ``adult``, or ``""`` where not known (a teenager is neither)."""
    text = str(value or "").strip().lower()
    if text in ("child", "children", "kid"):
        return "child"
    return "adult" if text in ADULT_AGES else ""


def _where(c: Candidate) -> str:
    return f"{c.source}" + (f" line {c.line}" if c.line is not None else "")


FIELDS = ("id", "text", "language", "split", "source", "speaker", "gender", "age", "translation")


def _check_records(candidates: Iterable[Candidate], checker: Checker) -> tuple[dict[int, tuple], list[Rejection], int]:
    """First pass: (accepted index -> its fields and audio path, rejected, read). Refuses a repeated id."""
    source = candidates.records() if hasattr(candidates, "records") else iter(candidates)
    accepted: dict[int, tuple] = {}
    rejected: list[Rejection] = []
    first_seen: dict[str, str] = {}
    read = 0
    for i, c in enumerate(progress(source, desc="records", unit="utt")):
        read += 1
        r = c.record
        uid = r.get("id")
        if isinstance(uid, str) and uid:
            if uid in first_seen:
                raise DwPipeError(
                    f"duplicate id {uid!r}: in {first_seen[uid]} and {_where(c)}; ids must be unique across "
                    "splits and inputs (nothing was written)"
                )
            first_seen[uid] = _where(c)
        problem = r.get("_problem") or checker.record_problem(
            uid, r.get("text"), r.get("language"), r.get("split"), r.get("translation")
        )
        if problem:
            rejected.append(Rejection(c.source, problem, uid if isinstance(uid, str) else None, c.line))
            continue
        fields = (
            uid,
            (r.get("text") or "").strip(),  # "": an unlabelled row without a reference
            r["language"],
            r["split"],
            r.get("source") or c.source,
            str(r.get("speaker") or ""),
            normalize_gender(r.get("gender")),
            normalize_age(r.get("age")),
            str(r.get("translation") or "").strip(),
        )
        accepted[i] = (fields, f"audio/{r['split']}/{_audio_name(uid)}.wav", c.line, c.source)
    return accepted, rejected, read


def process(
    candidates: Iterable[Candidate], checker: Checker, out: Path, workers: int, window: int = 256
) -> tuple[list[Utterance], list[Rejection]]:
    """Check and materialize every candidate into ``out``; returns (kept in input order, rejected).

    ``candidates`` is read twice (records, then audio): a :class:`~pipeline.data.manifest.Candidates` or a
    list. At most ``window`` audio items are in flight at a time. Items the journal in ``out`` holds with the
    same audio key are not produced again; WAVs under ``out/audio`` that this run did not keep are deleted.
    """
    accepted, rejected, read = _check_records(candidates, checker)
    journal = Journal(out)
    results: dict[int, tuple[float | None, str | None]] = {}
    late: dict[int, str] = {}  # records whose audio turned out missing on the second pass
    keys: dict[int, str] = {}  # audio keys of the items in flight, journaled with their results

    def jobs() -> Iterator[tuple[int, object, Path]]:
        for i, c in enumerate(candidates):
            if i not in accepted:
                continue
            fields, audio_rel = accepted[i][:2]
            if c.record.get("id") != fields[0]:
                raise DwPipeError(f"{_where(c)}: the source changed while it was read (id {c.record.get('id')!r})")
            if c.record.get("_problem"):
                late[i] = c.record["_problem"]
                continue
            key = audio_key(c.audio)
            found = journal.lookup(out, audio_rel, key)
            if found is not None:
                results[i] = found
                continue
            keys[i] = key
            yield i, c.audio, out / audio_rel

    def produced(pool) -> Iterator[tuple[int, float | None, str | None]]:
        pending = jobs()
        while chunk := list(itertools.islice(pending, window)):
            yield from (pool.imap_unordered(_produce, chunk, chunksize=4) if pool else map(_produce, chunk))

    ctx = multiprocessing.get_context("forkserver")
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        for index, duration, problem in progress(produced(pool), desc="audio", unit="utt"):
            results[index] = (duration, problem)
            journal.record(accepted[index][1], keys.pop(index), duration, problem)
    finally:
        journal.close()
        if pool:
            pool.close()
            pool.join()
    if journal.reused:
        log.info("prepare_data: %d of %d utterances' audio taken from the interrupted run", journal.reused, read)
    kept = []
    for i, (fields, audio_rel, line, source) in accepted.items():
        duration, problem = results[i] if i in results else (None, late[i])
        if problem:
            rejected.append(Rejection(source, problem, fields[0], line))
            continue
        values = dict(zip(FIELDS, fields, strict=True))
        kept.append(Utterance(audio=audio_rel, duration=round(duration, 4), **values))
    _prune(out, {u.audio for u in kept})
    assert read == len(kept) + len(rejected), "every item is kept or rejected"
    return kept, rejected


def _prune(out: Path, keep: set[str]) -> None:
    """Delete what an earlier run left under ``out/audio`` that this one did not keep (rejected or gone from the
    source), and the folders the stage rebuilds each run (windows, long-form recordings)."""
    audio = out / "audio"
    if not audio.is_dir():
        return
    for folder in audio.iterdir():
        if folder.name not in SPLITS:
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
            continue
        for path in folder.iterdir():
            if f"audio/{folder.name}/{path.name}" not in keep:
                path.unlink()
