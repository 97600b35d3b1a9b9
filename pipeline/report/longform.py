"""The long-form section of report.md: faster-whisper's transcription of whole recordings (the longform stage's
metrics.json): error over each recording, segment-start error, loops and empty stretches."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.languages import whisper_training_hours


def longform_metrics(folder: Path | None) -> dict | None:
    """The longform stage's metrics.json, or None when report.longform is not set or the stage has not run."""
    path = folder / "metrics.json" if folder else None
    return json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else None


def longform_table(metrics: dict | None) -> list[str]:
    """faster-whisper long-form rows: error over whole recordings, segment-start error, loops and empties."""
    if metrics is None:
        return ["No long-form results (report.longform is not set or its stage has not run)."]
    rows = metrics["rows"]
    if not rows:
        return ["The long-form stage had no recording (prepare_data.longform is not set)."]
    hours = whisper_training_hours()
    rows = sorted(rows, key=lambda r: (-hours.get(r["language"], -1), r["language"], r["setting"], r["model"] != "ct2:teacher",
                                       r["model"], r["compute_type"] != "float32"))  # fmt: skip
    lines = [
        f"faster-whisper's long-form transcription (timestamps on) of recordings joined from held-out test utterances "
        f"with known boundaries; settings: `default` (what a user passing only the language gets: beam 5, temperature "
        f"fallback, previous-text conditioning) and `greedy` (the benchmark's fixed decoding). Error rate over each "
        f"whole recording (corpus level, insertions in parentheses); start error: seconds from each reference segment "
        f"start to the nearest hypothesis segment start (mean / median); a 30-s stretch loops when its text compresses "
        f"by more than {metrics.get('loop_ratio', 2.4)} (Whisper's threshold), and is empty when speech starts in it "
        f"but no hypothesis does.",
        "",
        "| language | setting | model | type | audio (s) | error rate | start error mean / median (s) | loops | empty | RTFx |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        start = (
            f"{r['start_error_mean_s']:.2f} / {r['start_error_median_s']:.2f}"
            if r["start_error_mean_s"] is not None
            else "-"
        )
        lines.append(
            f"| {r['language']} | {r['setting']} | {r['model']} | {r['compute_type']} | {r['audio_seconds']:.0f} | "
            f"{100 * r['error_rate']:.1f} ({r['insertions']}) | {start} | {r['loop_stretches']}/{r['stretches']} | "
            f"{r['empty_stretches']}/{r['stretches']} | {r['rtfx']} |"
        )
    if any("-ts-" in r["model"] for r in rows):
        lines += [
            "",
            "`-ts-` exports: the same student trained with the timestamped windows too (prepare_data.windows: train "
            "utterances joined with their segment times, a share of the training examples); the exports without it "
            "trained on the short utterances only, whose targets carry no timestamp.",
        ]
    return lines
