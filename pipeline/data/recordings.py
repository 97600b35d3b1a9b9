"""Long-form recordings and timestamped training windows, joined from prepared utterances (prepare_data).

Recordings (``prepare_data.longform``): per language, held-out utterances of
one split (test) joined in manifest order with a silence of ``gap`` seconds
drawn between them, each recording at most ``max_seconds`` long and kept when
at least ``min_seconds``; every utterance's start and end in the recording
are known exactly. ``longform.jsonl`` holds one record per recording (id,
audio, language, duration, text, segments); its WAVs go under
``audio/longform/``. The longform stage (:mod:`pipeline.evaluate.longform`)
transcribes them.

Windows (``prepare_data.windows``): train utterances joined into clips of at
most 30 s with their segment times, so the cache and the students see
Whisper's timestamp targets.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import DwPipeError
from pipeline.data.audio import SAMPLE_RATE, read_wav, write_wav
from pipeline.data.manifest import Utterance

log = logging.getLogger(__name__)

WINDOW_SECONDS = 30.0  # Whisper's input window


@dataclass(frozen=True)
class LongformRecordings:
    """prepare_data.longform: which held-out utterances make the recordings, and how long these are."""

    languages: tuple[str, ...]
    split: str = "test"
    min_seconds: float = 60.0
    max_seconds: float = 120.0
    gap: tuple[float, ...] = (0.3, 1.0)  # silence between utterances, seconds (uniform)
    recordings: int = 1  # per language, at most


def build_recordings(utts: list[Utterance], root: Path, cfg: LongformRecordings, seed: int) -> list[dict]:
    """Write the recordings' WAVs under ``root/audio/longform`` and return their records."""
    if cfg.min_seconds > cfg.max_seconds:
        raise DwPipeError(f"prepare_data.longform: min_seconds {cfg.min_seconds} > max_seconds {cfg.max_seconds}")
    rng = random.Random(seed)
    records = []
    for lang in cfg.languages:
        pool = [u for u in utts if u.language == lang and u.split == cfg.split]
        made = 0
        while pool and made < cfg.recordings:
            chosen, total = [], 0.0
            while pool:
                gap = round(rng.uniform(*cfg.gap), 3) if chosen else 0.0
                if total + gap + pool[0].duration > cfg.max_seconds:
                    break
                chosen.append((gap, pool.pop(0)))
                total += gap + chosen[-1][1].duration
            if total < cfg.min_seconds:
                break
            records.append(_write_recording(f"{lang}-longform-{made:03d}", lang, chosen, root, "longform"))
            made += 1
        if made == 0:  # recorded in summary.json (no recording of the language); the other languages go on
            log.warning(
                "prepare_data.longform: the %s utterances of %s fill no recording of %.0f-%.0f s; add utterances "
                "or lower min_seconds",
                cfg.split,
                lang,
                cfg.min_seconds,
                cfg.max_seconds,
            )
    return records


@dataclass(frozen=True)
class TimestampWindows:
    """prepare_data.windows: training examples with timestamps, made of train utterances joined into one window.

    Per language of ``languages``, windows of 2 to ``max_utterances`` train utterances (shuffled, each in one
    window at most) joined with ``gap`` seconds of silence, at most ``max_seconds`` long, are added to
    train.jsonl beside the utterances (which stay as they are), as many as make them ``share`` of the
    language's training examples (distil-whisper trains with timestamps on 0.2 of its examples); every window
    records its segments, so its labels carry the timestamp tokens of each utterance's start and end."""

    languages: tuple[str, ...]
    share: float = 0.2
    max_seconds: float = 28.0
    max_utterances: int = 4
    gap: tuple[float, ...] = (0.2, 0.8)


def build_windows(utts: list[Utterance], root: Path, cfg: TimestampWindows, seed: int) -> list[Utterance]:
    """Write the windows' WAVs under ``root/audio/windows`` and return them as train utterances."""
    if not 0 <= cfg.share < 1 or cfg.max_utterances < 2 or cfg.max_seconds > WINDOW_SECONDS:
        raise DwPipeError(
            f"prepare_data.windows: share {cfg.share} must be in [0, 1), max_utterances {cfg.max_utterances} at least "
            f"2, max_seconds {cfg.max_seconds} at most {WINDOW_SECONDS:.0f} (one Whisper window)"
        )
    rng = random.Random(seed)
    out = []
    for lang in cfg.languages:
        pool = [u for u in utts if u.language == lang and u.split == "train" and not u.segments]
        wanted = round(cfg.share / (1 - cfg.share) * len(pool))
        rng.shuffle(pool)
        made = 0
        while made < wanted and len(pool) >= 2:
            chosen, total = [], 0.0
            while pool and len(chosen) < cfg.max_utterances:
                gap = round(rng.uniform(*cfg.gap), 3) if chosen else round(rng.uniform(0.0, cfg.gap[0]), 3)
                if total + gap + pool[0].duration > cfg.max_seconds:
                    break
                chosen.append((gap, pool.pop(0)))
                total += gap + chosen[-1][1].duration
            if len(chosen) < 2:
                pool = pool[1:] if not chosen else pool  # an utterance too long to pair: leave it alone
                continue
            record = _write_recording(f"{lang}-window-{made:05d}", lang, chosen, root, "windows")
            speakers = {u.speaker for _, u in chosen}
            genders = {u.gender for _, u in chosen}
            out.append(
                Utterance(
                    id=record["id"],
                    audio=record["audio"],
                    text=record["text"],
                    language=lang,
                    duration=record["duration"],
                    split="train",
                    source="window:" + ",".join(u.id for _, u in chosen),
                    speaker=speakers.pop() if len(speakers) == 1 else "several",
                    gender=genders.pop() if len(genders) == 1 else "unknown",
                    segments=tuple({k: s[k] for k in ("start", "end", "text")} for s in record["segments"]),
                )
            )
            made += 1
        if made < wanted:
            log.warning(
                "prepare_data.windows: %s has %d windows of the %d asked (too few train utterances)", lang, made, wanted
            )
    return out


def _write_recording(rid: str, lang: str, parts: list[tuple[float, Utterance]], root: Path, folder: str) -> dict:
    pieces, segments, at = [], [], 0
    for gap, u in parts:
        pieces.append(np.zeros(round(gap * SAMPLE_RATE), dtype=np.float32))
        at += len(pieces[-1])
        samples = read_wav(root / u.audio)
        segments.append({"id": u.id, "start": round(at / SAMPLE_RATE, 3), "end": round((at + len(samples)) / SAMPLE_RATE, 3), "text": u.text})  # fmt: skip
        pieces.append(samples)
        at += len(samples)
    audio = f"audio/{folder}/{rid}.wav"
    (root / audio).parent.mkdir(parents=True, exist_ok=True)
    write_wav(root / audio, np.concatenate(pieces))
    return {
        "id": rid,
        "audio": audio,
        "language": lang,
        "duration": round(at / SAMPLE_RATE, 3),
        "text": " ".join(s["text"] for s in segments),
        "segments": segments,
    }


def read_recordings(path: Path) -> list[dict]:
    if not path.is_file():
        raise DwPipeError(f"{path}: no long-form manifest; run prepare_data (prepare_data.longform makes recordings)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
