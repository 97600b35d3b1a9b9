"""Which of a cache's teacher-labelled rows a student trains on (``train_student.teacher_labels``).

The cache keeps every row the teacher labelled, with the signals Whisper computes (pipeline/cache/labelling.py);
the filters are training settings, so students with other filters share one cache. A row is left out, with its
reason, when its transcript is empty, reached the token cap (a loop, or cut short), compresses too well (a loop),
is too unsure (average log-probability), is likely silence (no-speech probability), or, where the row has a weak
reference such as a subtitle, differs from it by more than ``max_weak_wer``. Kept + filtered = read.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import sha256_files
from pipeline.core.scoring import count_errors, normalize, score_labels
from pipeline.data.manifest import Utterance, load_manifest
from pipeline.student.config import TrainConfig


def filter_reason(info: dict, text: str, weak_reference: str, language: str, cfg: TrainConfig) -> str | None:
    """Why a teacher-labelled row is not trained on, as ``kind: details``, or None. ``text``: the teacher's
    transcript."""
    if info["hit_cap"]:
        return "token cap: the transcript reached it before its end (a loop, or cut short)"
    if not text.strip():
        return "empty transcript: no words"
    if info["compression_ratio"] > cfg.max_compression_ratio:
        return f"compression ratio: {info['compression_ratio']:.2f} > {cfg.max_compression_ratio} (a loop)"
    if info["avg_logprob"] < cfg.min_avg_logprob:
        return f"average log-probability: {info['avg_logprob']:.2f} < {cfg.min_avg_logprob}"
    if info["no_speech_prob"] is not None and info["no_speech_prob"] > cfg.max_no_speech_prob:
        return f"no-speech probability: {info['no_speech_prob']:.2f} > {cfg.max_no_speech_prob}"
    if weak_reference.strip():
        counts = count_errors(normalize(weak_reference, language), normalize(text, language))
        if counts.rate > cfg.max_weak_wer:
            return f"weak reference: error rate {counts.rate:.2f} > {cfg.max_weak_wer}"
    return None


def _checked(cfg: TrainConfig, cache) -> None:
    ident = cache.content["identity"]
    if ident.get("labels") != "teacher":
        raise DwPipeError(
            f"train_student: teacher_labels needs a cache built with cache_teacher.labels: teacher; {cfg.cache} has "
            "reference labels only"
        )
    if not cfg.unlabelled.is_file():
        raise DwPipeError(f"train_student: unlabelled manifest {cfg.unlabelled} does not exist")
    if sha256_files([cfg.unlabelled]) != ident["unlabelled_sha256"]:
        raise DwPipeError(
            f"train_student: {cfg.unlabelled} is not the manifest the cache {cfg.cache} labelled "
            f"({ident['unlabelled']}); rerun cache_teacher on it"
        )


def _judged(cfg: TrainConfig, cache, tokenizer) -> Iterator[tuple[Utterance, str, str | None]]:
    """Each unlabelled row of ``cfg.languages`` with the teacher's transcript and why the filters leave it out."""
    _checked(cfg, cache)
    for u in load_manifest(cfg.unlabelled):
        if u.language in cfg.languages:
            text = tokenizer.decode(cache.labels_of(u.id)[1], skip_special_tokens=True)
            yield u, text, filter_reason(cache.row_info(u.id), text, u.text, u.language, cfg)


def teacher_rows(cfg: TrainConfig, cache, tokenizer) -> tuple[list[Utterance], dict]:
    """The unlabelled rows of ``cfg.languages`` the cache labelled and the filters keep (audio paths made relative
    to the train manifest's folder, which training reads audio from), and the record of what was left out."""
    kept, filtered = [], []
    labels = []
    for u, text, reason in _judged(cfg, cache, tokenizer):
        labels.append({"id": u.id, "language": u.language, "text": text})
        if reason:
            filtered.append({"id": u.id, "language": u.language, "reason": reason})
            continue
        # the folders resolved, not the file: DVC may link a WAV into its cache, and the path names the audio
        audio = os.path.relpath(os.path.normpath(cfg.unlabelled.parent.resolve() / u.audio), cfg.train.parent.resolve())
        kept.append(replace(u, audio=Path(audio).as_posix()))
    record = {
        "read": len(labels),
        "kept": len(kept),
        "filtered": len(filtered),
        "by_reason": dict(sorted(Counter(f["reason"].split(":")[0] for f in filtered).items())),
        "rows": filtered,
        "labels": labels,  # every row's label (the teacher's transcript), kept or not: what a report scores
    }
    return kept, record


def label_quality(cfg: TrainConfig, cache, tokenizer, withheld: dict[str, str]) -> dict[str, dict]:
    """Per language: the error rate of the teacher's labels against the withheld texts (``id -> text``: an
    embedded pool's, prepare_data's ``unlabelled_texts.jsonl``), over every row and over the rows ``cfg``'s filters
    keep, with the filters' reasons. Only a report reads the texts; no student trains or selects on them."""
    return score_labels(
        ((u.id, u.language, text, reason) for u, text, reason in _judged(cfg, cache, tokenizer)), withheld
    )
