"""Long-form recordings and their evaluation: what a faster-whisper user gets on minutes of audio.

Recordings (prepare_data, ``longform``): per language, held-out utterances of
one split (test) joined in manifest order with a silence of ``gap`` seconds
drawn between them, each recording at most ``max_seconds`` long and kept when
at least ``min_seconds``; every utterance's start and end in the recording
are known exactly. ``longform.jsonl`` holds one record per recording (id,
audio, language, duration, text, segments); its WAVs go under
``audio/longform/``.

Evaluation (stage longform): every CTranslate2 model under ``ct2_dir`` (an
export on its own language only) transcribes each recording through
faster-whisper's long-form loop (30-s windows, moved on by the last
timestamp), timestamps on, under two settings: ``default``, the arguments a
user who passes only the language gets (beam 5, temperature fallback,
conditioning on the previous window's text), and ``greedy``, the benchmark's
fixed decoding (beam 1, temperature 0 without fallback, no conditioning).
Per model, setting and language: the error rate over the whole recording
(corpus level, as the benchmark scores), the start error of each reference
segment (seconds to the nearest hypothesis segment start), and per 30-s
stretch of the recording whether it loops (the text of the segments starting
in it compresses by more than ``loop_ratio``: Whisper's own
``compression_ratio_threshold``, 2.4) or comes back empty (the reference has
speech starting in it, the hypothesis none).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.audio import SAMPLE_RATE, read_wav, write_wav
from pipeline.errors import DwPipeError
from pipeline.manifest import Utterance
from pipeline.scoring import Counts, count_errors, metric_for, normalize

log = logging.getLogger(__name__)

WINDOW_SECONDS = 30.0
SETTINGS = ("default", "greedy")


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


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` over bytes of its zlib compression (Whisper's loop measure)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def score_recording(record: dict, segments: list[tuple[float, float, str]], loop_ratio: float) -> dict:
    """Error counts over the whole recording, reference-segment start errors, and its 30-s stretches' loops and
    empties, for hypothesis ``segments`` (start, end, text)."""
    lang = record["language"]
    hyp = " ".join(text.strip() for _, _, text in segments)
    counts = count_errors(normalize(record["text"], lang), normalize(hyp, lang))
    starts = [s for s, _, _ in segments]
    start_errors = [min(abs(s - r["start"]) for s in starts) if starts else math.nan for r in record["segments"]]
    stretches = max(1, math.ceil(record["duration"] / WINDOW_SECONDS))
    loops = empties = 0
    for k in range(stretches):
        lo, hi = k * WINDOW_SECONDS, (k + 1) * WINDOW_SECONDS
        text = " ".join(t.strip() for s, _, t in segments if lo <= s < hi)
        spoken = any(lo <= r["start"] < hi for r in record["segments"])
        loops += compression_ratio(text) > loop_ratio
        empties += spoken and not normalize(text, lang).split()
    return {"counts": counts, "start_errors": start_errors, "stretches": stretches, "loops": loops, "empties": empties}


@dataclass(frozen=True)
class LongformConfig:
    """Stage longform (params.yaml: longform)."""

    manifest: Path
    ct2_dir: Path
    out_dir: Path
    settings: tuple[str, ...] = SETTINGS
    compute_types: tuple[str, ...] = ("int8",)  # of the CTranslate2 models (int8: what a CPU deployment runs)
    loop_ratio: float = 2.4
    ct2_tuning: Path | None = None
    device: str = "cpu"  # cuda on a GPU (compute types float16 / int8_float16 there)
    # CTranslate2's sampling seed: faster-whisper's default setting samples when its temperature fallback starts
    # (unseeded, a re-run's hypotheses can differ)
    seed: int = 0


def transcribe(model, audio: np.ndarray, language: str, setting: str) -> list[tuple[float, float, str]]:
    """faster-whisper's long-form transcription under ``setting``; its segments (start, end, text)."""
    if setting == "default":
        kwargs: dict = {}
    elif setting == "greedy":
        kwargs = {"beam_size": 1, "best_of": 1, "temperature": 0.0, "condition_on_previous_text": False}
    else:
        raise DwPipeError(f"longform setting {setting!r}: use one of {SETTINGS}")
    segments, _ = model.transcribe(audio, language=language, task="transcribe", vad_filter=False, **kwargs)
    return [(float(s.start), float(s.end), s.text) for s in segments]


def run_longform(cfg: LongformConfig) -> dict:
    """metrics.json (one row per model, compute type, setting and language) and hypotheses.jsonl."""
    from pipeline import ct2_tuning

    setting_env = ct2_tuning.applied(cfg.ct2_tuning)  # before CTranslate2 loads
    import ctranslate2
    from faster_whisper import WhisperModel

    # Each model's worker threads seed their generator from this when they first sample (the generator is
    # thread-local in CTranslate2), so a model's draws depend only on the seed and the order of its calls.
    ctranslate2.set_random_seed(cfg.seed)

    from pipeline.fsutil import atomic_dir

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    unknown = sorted(set(cfg.settings) - set(SETTINGS))
    if unknown:
        raise DwPipeError(f"longform.settings {unknown}: use {list(SETTINGS)}")
    recordings = read_recordings(cfg.manifest)
    if not recordings:
        log.warning("%s holds no recording (prepare_data.longform is not set): no long-form rows", cfg.manifest)
    root = cfg.manifest.parent
    audio = {r["id"]: read_wav(root / r["audio"]) for r in recordings}
    rows, hyps = [], []
    folders = sorted(p for p in cfg.ct2_dir.glob("*") if (p / "quantize.json").is_file())
    if not folders:
        raise DwPipeError(f"{cfg.ct2_dir}: no CTranslate2 models (run quantize first)")
    for folder in folders:
        info = json.loads((folder / "quantize.json").read_text())
        if info["requested_compute_type"] not in cfg.compute_types:
            continue
        export = Path(info["source"]) / "export.json"
        only = json.loads(export.read_text())["language"] if export.is_file() else None
        name = "ct2:" + folder.name[: -len(info["requested_compute_type"]) - 1]
        mine = [r for r in recordings if only is None or r["language"] == only]
        if not mine:
            continue
        model = WhisperModel(str(folder), device=cfg.device, compute_type=info["effective_compute_type"],
                             cpu_threads=int(setting_env["threads"]))  # fmt: skip
        for setting in cfg.settings:
            for lang in sorted({r["language"] for r in mine}):
                total, start_errors, stretches, loops, empties, seconds, length = Counts(), [], 0, 0, 0, 0.0, 0.0
                for r in (r for r in mine if r["language"] == lang):
                    begin = time.perf_counter()
                    segments = transcribe(model, audio[r["id"]], lang, setting)
                    seconds += time.perf_counter() - begin
                    length += r["duration"]
                    scored = score_recording(r, segments, cfg.loop_ratio)
                    total += scored["counts"]
                    start_errors += scored["start_errors"]
                    stretches, loops, empties = (stretches + scored["stretches"], loops + scored["loops"],
                                                 empties + scored["empties"])  # fmt: skip
                    hyps.append({"model": name, "compute_type": info["requested_compute_type"], "setting": setting,
                                 "id": r["id"], "language": lang,
                                 "segments": [{"start": s, "end": e, "text": t} for s, e, t in segments]})  # fmt: skip
                found = [e for e in start_errors if math.isfinite(e)]
                rows.append(
                    {
                        "model": name,
                        "compute_type": info["requested_compute_type"],
                        "effective_compute_type": info["effective_compute_type"],
                        "dataset": "longform",
                        "setting": setting,
                        "language": lang,
                        "recordings": sum(1 for r in mine if r["language"] == lang),
                        "audio_seconds": round(length, 2),
                        "metric": metric_for(lang),
                        "ref_units": total.ref_units,
                        "error_rate": round(total.rate, 4),
                        "insertions": total.insertions,
                        "deletions": total.deletions,
                        "substitutions": total.substitutions,
                        "segments": len(start_errors),
                        "start_error_mean_s": round(float(np.mean(found)), 3) if found else None,
                        "start_error_median_s": round(float(np.median(found)), 3) if found else None,
                        "stretches": stretches,
                        "loop_stretches": loops,
                        "empty_stretches": empties,
                        "decode_seconds": round(seconds, 2),
                        "rtfx": round(length / seconds, 2) if seconds else None,
                    }
                )
                log.info("%s|%s %s on %s: %s %.1f %%, %d/%d stretches loop, %d empty, %.1f s", name,
                         info["requested_compute_type"], setting, lang, rows[-1]["metric"], 100 * total.rate, loops,
                         stretches, empties, seconds)  # fmt: skip
        del model
    with atomic_dir(cfg.out_dir, overwrite=True) as tmp:
        extra = {"settings": list(cfg.settings), "loop_ratio": cfg.loop_ratio, "ct2_setting": setting_env}
        (tmp / "metrics.json").write_text(json.dumps({"rows": rows, **extra}, indent=1, ensure_ascii=False) + "\n")
        with open(tmp / "hypotheses.jsonl", "w", encoding="utf-8") as handle:
            for h in hyps:
                handle.write(json.dumps(h, ensure_ascii=False) + "\n")
    return {"rows": len(rows)}
