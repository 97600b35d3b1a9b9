"""Shared fixtures: a tiny random Whisper (HF) and its CTranslate2 conversions.

The tiny model is the real ``WhisperForConditionalGeneration`` class at toy
size (2 layers, d_model 64) with a fixed seed; its tokenizer is the real
multilingual Whisper tokenizer shipped with the embedded weights.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pipeline.core.progress import set_progress
from pipeline.models.parity import convert_with_ctranslate2
from pipeline.models.specs import embedded_source
from pipeline.models.tiny import build_tiny_whisper, save_tiny_whisper

__all__ = ["build_tiny_whisper", "write_encoder_expert_student", "write_tiny_manifest"]

# Subprocesses (dvc, and the `python` of dvc.yaml's stages) come from the environment running the tests,
# also when it is a venv that was not activated (.venv/bin/python -m pytest).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


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

    from pipeline.data.audio import write_wav
    from pipeline.data.manifest import Utterance

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


def write_bench_inputs(root: Path, hf_dir: Path, seed: int) -> dict[str, Path]:
    """A test manifest and the tiny model's CTranslate2 float32 and int8 conversions, as quantize writes them."""
    from pipeline.evaluate.quantize import quantize

    test = write_tiny_manifest(root, "test.jsonl", seed=seed)
    for ctype in ("float32", "int8"):
        quantize(hf_dir, root / "ct2" / f"teacher-{ctype}", ctype)
    return {"test": test, "ct2": root / "ct2"}


@pytest.fixture()
def tiny_manifest(tmp_path) -> Path:
    return write_tiny_manifest(tmp_path / "prepared")


def write_encoder_expert_student(base: Path, out: Path, languages: tuple[str, ...] = ("pl", "cs")) -> Path:
    """A CLSR student folder of ``base`` with experts on both encoder layers (none on the decoder).

    The experts are the shared FFN plus N(0, 0.5) noise, so each language's encoder
    outputs clearly differ from the shared FFN's; the gates keep their initial
    G = 0, which hard routing (G >= 0) sends to the expert on every token.
    """
    import torch

    from pipeline.models.clsr import CLSRConfig, add_clsr, clsr_layers
    from pipeline.student.model import StudentSpec, build_student, save_student

    spec = StudentSpec(base)
    model = build_student(spec)
    clsr = CLSRConfig(languages, encoder_layers=(0, 1), gate_init="zero")
    add_clsr(model, clsr)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in clsr_layers(model):
            for expert in layer.experts.values():
                for param in expert.parameters():
                    param.add_(torch.randn(param.shape, generator=generator) * 0.5)
    out.mkdir(parents=True)
    save_student(out, model, "clsr", spec, languages, clsr, {})
    return out
