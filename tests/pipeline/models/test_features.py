"""log_mel gives transformers' Whisper features while transforming only the audio, not the 30-s padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from pipeline.models.features import log_mel

LENGTHS = [0, 1, 399, 400, 401, 8_000, 16_000, 16_161, 48_000, 479_600, 479_999, 480_000]


def _clips(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in lengths]


def _reference(extractor, audio):
    return extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features


@pytest.mark.parametrize("mels", [80, 128])
def test_each_clip_alone_and_a_batch_match_the_extractor(mels):
    extractor = WhisperFeatureExtractor(feature_size=mels)
    audio = _clips(LENGTHS) + [np.zeros(16_000, np.float32), np.full(3_000, 0.5, np.float32)]
    for clip in audio:
        got, want = log_mel(extractor, [clip]), _reference(extractor, [clip])
        assert got.shape == want.shape == (1, mels, 3000) and got.dtype == torch.float32
        if len(clip) >= 8_000:  # a real clip: the same floats
            assert torch.equal(got, want), len(clip)
        assert float((got - want).abs().max()) <= 2e-7, len(clip)
    # one batch: each clip's own peak, its own floor, whatever the longest clip in it
    assert float((log_mel(extractor, audio) - _reference(extractor, audio)).abs().max()) <= 2e-7


def test_clips_past_30_s_and_other_settings_go_through_the_extractor(monkeypatch):
    extractor = WhisperFeatureExtractor()
    long = _clips([500_000])
    assert torch.equal(log_mel(extractor, long), _reference(extractor, long))  # truncated as transformers does
    dithered = WhisperFeatureExtractor(dither=0.5)
    calls = []
    monkeypatch.setattr(torch, "stft", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    with pytest.raises(AssertionError):  # the extractor's own torch path runs torch.stft, ours never gets there
        log_mel(dithered, _clips([16_000]))
    assert calls
