"""Tiny random Whisper checkpoints for tests and the CI profile (no download, fixed seed).

The real ``WhisperForConditionalGeneration`` at toy size (2 layers, d_model
64) with the real multilingual tokenizer shipped with the embedded weights,
so the cache, training and CTranslate2 paths run exactly as on real models.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.models.ct2_import import generation_config_for, read_vocabulary, save_tokenizer
from pipeline.models.specs import embedded_source

SEED = 1234


def tiny_whisper_config(layers: int = 2, d_model: int = 64, heads: int = 4, ffn: int = 128):
    """A multilingual Whisper config (vocabulary and special tokens as OpenAI's), toy-sized by default."""
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50257,
        decoder_start_token_id=50258,
        begin_suppress_tokens=[220, 50257],
        suppress_tokens=[1, 2, 7],
    )


def build_tiny_whisper(seed: int = SEED, layers: int = 2, eos_bias: float = 0.0):
    """A tiny random Whisper whose every parameter (biases and norms too) is non-trivial.

    ``eos_bias`` adds that multiple of a fixed random direction to the embedding of ``<|endoftext|>`` (tied to
    the output projection): around 0.25 the model ends some inputs within a few tokens and loops on others
    until any cap (the random model without it never ends), as the loop tests need."""
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(tiny_whisper_config(layers)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed_positions" not in name:
                param.add_(torch.randn_like(param) * 0.05)
        if eos_bias:
            eos = model.config.eos_token_id
            direction = torch.randn(model.config.d_model, generator=torch.Generator().manual_seed(0))
            model.get_decoder().embed_tokens.weight[eos] += eos_bias * direction
    return model


def save_tiny_whisper(out: Path, seed: int = SEED, layers: int = 2, eos_bias: float = 0.0) -> Path:
    """A complete HF checkpoint folder (weights, generation config, tokenizer, feature extractor)."""
    from transformers import WhisperFeatureExtractor

    source = embedded_source("whisper-base")
    tokenizer_json = source.file("tokenizer.json")
    model = build_tiny_whisper(seed, layers, eos_bias)
    ct2_config = json.loads(source.file("config.json").read_text())
    ct2_config["alignment_heads"] = [[layers - 1, 0], [layers - 1, 2]]
    model.generation_config = generation_config_for(model.config, ct2_config, read_vocabulary(tokenizer_json))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    save_tokenizer(tokenizer_json, out, 448)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out
