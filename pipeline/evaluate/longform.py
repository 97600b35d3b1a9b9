"""Long-form evaluation: what a faster-whisper user gets on minutes of audio.

The recordings come from prepare_data (:mod:`pipeline.data.recordings`).
Every CTranslate2 model under ``ct2_dir`` (an
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
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_dir, project_path, sha256_files, sha256_tree
from pipeline.core.machine import machine
from pipeline.core.result_memo import ResultMemo
from pipeline.core.scoring import Counts, count_errors, metric_for, normalize
from pipeline.data.audio import read_wav
from pipeline.data.recordings import WINDOW_SECONDS, read_recordings

log = logging.getLogger(__name__)

SETTINGS = ("default", "greedy")


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
    # Each model's rows kept between runs, keyed by all that made them (pipeline/core/result_memo.py): an unchanged
    # export is not transcribed again. None: kept only until this run's outputs are written
    run_memo: Path | None = None


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
    from pipeline.evaluate import ct2_tuning

    setting_env = ct2_tuning.applied(project_path(cfg.ct2_tuning))  # before CTranslate2 loads
    import ctranslate2

    # Each model's worker threads seed their generator from this when they first sample (the generator is
    # thread-local in CTranslate2), so a model's draws depend only on the seed and the order of its calls.
    ctranslate2.set_random_seed(cfg.seed)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    unknown = sorted(set(cfg.settings) - set(SETTINGS))
    if unknown:
        raise DwPipeError(f"longform.settings {unknown}: use {list(SETTINGS)}")
    recordings = read_recordings(cfg.manifest)
    if not recordings:
        log.warning("%s holds no recording (prepare_data.longform is not set): no long-form rows", cfg.manifest)
    audio = {r["id"]: read_wav(cfg.manifest.parent / r["audio"]) for r in recordings}
    memo = ResultMemo(cfg.run_memo, "longform", cfg.out_dir.parent / f".{cfg.out_dir.name}.partial")
    shared = _shared_inputs(cfg, recordings, setting_env)
    rows, hyps = [], []
    for folder, info, name, mine in _models(cfg, recordings):
        made_from = {"shared": shared, "model": name, "model_files_sha256": sha256_tree(folder),
                     "export": _export_record(info), "recordings": [r["id"] for r in mine]}  # fmt: skip
        kept = memo.get(made_from)  # the transcriptions and their seconds; they are scored again below
        if kept is not None:
            decoded, decoded_at = kept[0]["decoded"], kept[1]
            log.info("%s|%s: transcribed by an earlier run from the same inputs (%s); kept", name,
                     info["requested_compute_type"], decoded_at)  # fmt: skip
        else:
            decoded, decoded_at = _transcribe_all(cfg, folder, info, mine, audio, int(setting_env["threads"])), None
            memo.put(made_from, {"decoded": decoded})
        for setting in cfg.settings:
            for lang in sorted({r["language"] for r in mine}):
                recs = [r for r in mine if r["language"] == lang]
                row, lines = _language_row(name, info, setting, lang, recs, decoded[setting], cfg.loop_ratio)
                rows.append(row | ({"decoded_at": decoded_at} if decoded_at else {}))
                hyps += lines
    extra = {"settings": list(cfg.settings), "loop_ratio": cfg.loop_ratio, "ct2_setting": setting_env}
    _write_outputs(cfg.out_dir, rows, hyps, extra)
    memo.finish()
    return {"rows": len(rows), "kept": memo.hits}


def _shared_inputs(cfg: LongformConfig, recordings: list[dict], setting_env: dict) -> dict:
    """What every model's transcriptions depend on besides the model: the recordings, settings, code, machine (the
    rows are scored from them on every run)."""
    from pipeline.evaluate.runs import DECODERS, code_digest, version_of

    return {
        "manifest_sha256": sha256_files([cfg.manifest]),
        "audio_sha256": sha256_files([cfg.manifest.parent / r["audio"] for r in recordings]),
        "settings": list(cfg.settings),
        "seed": cfg.seed,
        "device": cfg.device,
        "ct2_setting": {k: setting_env[k] for k in ("setting", "env", "threads")},
        "code_sha256": code_digest(),
        "versions": {name: version_of(name) for name in DECODERS},
        "machine": machine(),
    }


def _export_record(info: dict) -> str:
    export = Path(info["source"]) / "export.json"
    return export.read_text() if export.is_file() else ""


def _models(cfg: LongformConfig, recordings: list[dict]):
    """(folder, quantize.json, model name, its recordings) for each CTranslate2 model of the configured types that
    has recordings of its language (an export serves only its own language)."""
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
        if mine:
            yield folder, info, name, mine


def _transcribe_all(cfg: LongformConfig, folder: Path, info: dict, mine: list[dict], audio: dict,
                    threads: int) -> dict[str, dict[str, dict]]:  # fmt: skip
    """Setting -> recording id -> its segments ``[start, end, text]`` and transcription seconds, in the order the
    sampling seed's draws assume (setting, then language, then recording)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(folder), device=cfg.device, compute_type=info["effective_compute_type"],
                         cpu_threads=threads)  # fmt: skip
    decoded: dict[str, dict[str, dict]] = {}
    for setting in cfg.settings:
        for lang in sorted({r["language"] for r in mine}):
            for r in (r for r in mine if r["language"] == lang):
                begin = time.perf_counter()
                segments = transcribe(model, audio[r["id"]], lang, setting)
                seconds = time.perf_counter() - begin
                decoded.setdefault(setting, {})[r["id"]] = {"segments": [list(s) for s in segments], "seconds": seconds}
    return decoded


def _language_row(name: str, info: dict, setting: str, lang: str, recs: list[dict], decoded: dict[str, dict],
                  loop_ratio: float) -> tuple[dict, list[dict]]:  # fmt: skip
    """One model's metrics row for one setting and language, scored from its transcriptions ``decoded`` (recording
    id -> segments and seconds), and its hypothesis lines."""
    total, start_errors, stretches, loops, empties, seconds, length = Counts(), [], 0, 0, 0, 0.0, 0.0
    hyps = []
    for r in recs:
        segments = [(float(s), float(e), t) for s, e, t in decoded[r["id"]]["segments"]]
        seconds += decoded[r["id"]]["seconds"]
        length += r["duration"]
        scored = score_recording(r, segments, loop_ratio)
        total += scored["counts"]
        start_errors += scored["start_errors"]
        stretches, loops, empties = (stretches + scored["stretches"], loops + scored["loops"],
                                     empties + scored["empties"])  # fmt: skip
        hyps.append({"model": name, "compute_type": info["requested_compute_type"], "setting": setting,
                     "id": r["id"], "language": lang,
                     "segments": [{"start": s, "end": e, "text": t} for s, e, t in segments]})  # fmt: skip
    found = [e for e in start_errors if math.isfinite(e)]
    row = {
        "model": name,
        "compute_type": info["requested_compute_type"],
        "effective_compute_type": info["effective_compute_type"],
        "dataset": "longform",
        "setting": setting,
        "language": lang,
        "recordings": len(recs),
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
    log.info("%s|%s %s on %s: %s %.1f %%, %d/%d stretches loop, %d empty, %.1f s", name,
             info["requested_compute_type"], setting, lang, row["metric"], 100 * total.rate, loops, stretches,
             empties, seconds)  # fmt: skip
    return row, hyps


def _write_outputs(out_dir: Path, rows: list[dict], hyps: list[dict], extra: dict) -> None:
    """metrics.json and hypotheses.jsonl, both or neither (atomic folder)."""
    with atomic_dir(out_dir, overwrite=True) as tmp:
        (tmp / "metrics.json").write_text(json.dumps({"rows": rows, **extra}, indent=1, ensure_ascii=False) + "\n")
        with open(tmp / "hypotheses.jsonl", "w", encoding="utf-8") as handle:
            for h in hyps:
                handle.write(json.dumps(h, ensure_ascii=False) + "\n")
