"""Shared fixtures: a tiny random Whisper (HF) and its CTranslate2 conversions.

The tiny model is the real ``WhisperForConditionalGeneration`` class at toy
size (2 layers, d_model 64) with a fixed seed; its tokenizer is the real
multilingual Whisper tokenizer shipped with the embedded weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.ct2_import import generation_config_for, read_vocabulary, save_tokenizer
from pipeline.models import embedded_source
from pipeline.parity import convert_with_ctranslate2
from pipeline.progress import set_progress

SEED = 1234


@pytest.fixture(scope="session", autouse=True)
def _quiet() -> None:
    set_progress(False)


@pytest.fixture(scope="session")
def embedded_files() -> dict[str, Path]:
    """tokenizer.json and config.json of the embedded whisper-base (installed by scripts/setup.sh)."""
    source = embedded_source("whisper-base")
    return {"tokenizer": source.file("tokenizer.json"), "config": source.file("config.json")}


def tiny_whisper_config():
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50257,
        decoder_start_token_id=50258,
        begin_suppress_tokens=[220, 50257],
        suppress_tokens=[1, 2, 7],
    )


def build_tiny_whisper(seed: int = SEED):
    """A tiny random Whisper whose every parameter (biases and norms too) is non-trivial."""
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(tiny_whisper_config()).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed_positions" in name:
                continue
            param.add_(torch.randn_like(param) * 0.05)
    return model


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, embedded_files) -> Path:
    """A complete HF checkpoint folder of the tiny Whisper."""
    out = tmp_path_factory.mktemp("tiny-hf")
    model = build_tiny_whisper()
    ct2_config = json.loads(embedded_files["config"].read_text())
    ct2_config["alignment_heads"] = [[1, 0], [1, 2]]
    model.generation_config = generation_config_for(
        model.config, ct2_config, read_vocabulary(embedded_files["tokenizer"])
    )
    model.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    save_tokenizer(embedded_files["tokenizer"], out, 448)
    from transformers import WhisperFeatureExtractor

    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out


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
