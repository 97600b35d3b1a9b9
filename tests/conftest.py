"""Shared fixtures: a tiny random Whisper (HF) and its CTranslate2 conversions.

The tiny model is the real ``WhisperForConditionalGeneration`` class at toy
size (2 layers, d_model 64) with a fixed seed; its tokenizer is the real
multilingual Whisper tokenizer shipped with the embedded weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.models import embedded_source
from pipeline.parity import convert_with_ctranslate2
from pipeline.progress import set_progress
from pipeline.tiny import build_tiny_whisper, save_tiny_whisper

__all__ = ["build_tiny_whisper", "write_tiny_manifest"]


@pytest.fixture(scope="session", autouse=True)
def _quiet() -> None:
    set_progress(False)


@pytest.fixture(scope="session")
def embedded_files() -> dict[str, Path]:
    """tokenizer.json and config.json of the embedded whisper-base (installed by scripts/setup.sh)."""
    source = embedded_source("whisper-base")
    return {"tokenizer": source.file("tokenizer.json"), "config": source.file("config.json")}


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, embedded_files) -> Path:
    """A complete HF checkpoint folder of the tiny Whisper."""
    return save_tiny_whisper(tmp_path_factory.mktemp("tiny-hf"))


@pytest.fixture(scope="session")
def tiny_ct2(tmp_path_factory, tiny_hf_dir) -> dict[str, Path]:
    """The tiny model converted by CTranslate2's own converter at float32, float16 and int8."""
    root = tmp_path_factory.mktemp("tiny-ct2")
    return {q: convert_with_ctranslate2(tiny_hf_dir, root / q, q) for q in ("float32", "float16", "int8")}


TINY_TEXTS = [
    ("pl", "Dzień dobry, jak się masz?"),
    ("de", "Guten Morgen."),
    ("pl", "To jest test."),
    ("cs", "Dobré ráno, jak se máš dnes?"),
    ("de", "Der Zug fährt um acht Uhr ab."),
    ("cs", "Ahoj."),
    ("pl", "Pociąg odjeżdża o ósmej rano, jak zawsze."),
]


def write_tiny_manifest(folder: Path, name: str = "train.jsonl", seed: int = 0) -> Path:
    """A small manifest in our format with synthetic (chirp + noise) 16 kHz audio."""
    import numpy as np

    from pipeline.audio import write_wav
    from pipeline.manifest import Utterance

    rng = np.random.default_rng(seed)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (lang, text) in enumerate(TINY_TEXTS):
        seconds = 0.8 + 0.2 * i
        t = np.arange(int(16_000 * seconds)) / 16_000
        samples = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t * (1 + t)) + 0.02 * rng.standard_normal(t.size)
        write_wav(folder / "audio" / f"u{i}.wav", samples.astype(np.float32))
        rows.append(
            Utterance(
                f"utt-{i}",
                f"audio/u{i}.wav",
                text,
                lang,
                seconds,
                "train",
                "test",
                f"spk{i % 3}",
                ("male", "female")[i % 2],
            )
        )
    path = folder / name
    path.write_text("".join(r.to_json() + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def tiny_manifest(tmp_path) -> Path:
    return write_tiny_manifest(tmp_path / "prepared")
