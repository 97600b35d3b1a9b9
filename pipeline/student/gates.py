"""Measure a CLSR student's hard-gate rates on a dev set: the ``dev.json`` its export routes by.

Training writes ``dev.json`` at the step it chose. A student that was not
trained here (one imported by :mod:`pipeline.student.official`) gets its
gate rates the same way: greedy decoding of the dev set with hard gates,
one language per batch, counting real (non-padding) positions only
(:func:`pipeline.models.decode.greedy_token_ids`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_write_text, sha256_files
from pipeline.data.manifest import load_labelled
from pipeline.models.decode import EncoderStore
from pipeline.student.model import CLSR_MODES, load_student
from pipeline.student.selection import dev_wer


@dataclass(frozen=True)
class DecodeSettings:
    """What dev decoding needs of a training config."""

    eval_batch_size: int = 8
    max_new_tokens: int = 128


log = logging.getLogger(__name__)


def measure_gates(student_dir: Path, dev: Path, settings: DecodeSettings = DecodeSettings()) -> dict:
    """Decode ``dev`` (the student's languages only) with hard gates; write and return ``dev.json``."""
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    student_dir, dev = Path(student_dir), Path(dev)
    model, record = load_student(student_dir)
    if record["mode"] not in CLSR_MODES:
        raise DwPipeError(f"{student_dir}: a {record['mode']} student has no gates to measure")
    languages = record["languages"]
    utts = [u for u in load_labelled(dev, "the gates' dev set (scored)") if u.language in languages]
    if not utts:
        raise DwPipeError(f"{dev}: no utterance in the student's languages ({', '.join(languages)})")
    absent = sorted(set(languages) - {u.language for u in utts})
    if absent:
        log.warning("%s has no dev utterance of %s: their gates stay unmeasured (export uses shared FFNs)", dev, absent)
    base = Path(record["base"])
    tokenizer, extractor = WhisperTokenizer.from_pretrained(base), WhisperFeatureExtractor.from_pretrained(base)
    # Features only: the encoder then runs inside generate, after the per-language reset, so its CLSR layers'
    # gates are counted as the decoder's are.
    store = EncoderStore(model, extractor, dev.parent, False, torch.device("cpu"), dtype=torch.float32)
    store.fill(utts)
    result = dev_wer(model, utts, store, tokenizer, settings)
    summary = {
        "mode": record["mode"],
        "languages": languages,
        "measured_on": {"manifest": str(dev), "manifest_sha256": sha256_files([dev]), "utterances": len(utts)},
        "decoding": {"eval_batch_size": settings.eval_batch_size, "max_new_tokens": settings.max_new_tokens},
        "dev_wer_best": result["wer"],
        "per_language": result["per_language"],
        "gate_rates": result["gate_rates"],
    }
    atomic_write_text(student_dir / "dev.json", json.dumps(summary, indent=2) + "\n")
    return summary
