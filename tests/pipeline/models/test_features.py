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
        # the same floats to rounding (to the bit here for clips of 8,000 samples and more; a BLAS or FFT build
        # that blocks frames otherwise may differ in the last place)
        assert float((got - want).abs().max()) <= 1e-6, len(clip)
    # one batch: each clip's own peak, its own floor, whatever the longest clip in it
    assert float((log_mel(extractor, audio) - _reference(extractor, audio)).abs().max()) <= 2e-7


def test_clips_past_30_s_and_other_settings_go_through_the_extractor():
    extractor = WhisperFeatureExtractor()
    long = _clips([500_000])
    assert torch.equal(log_mel(extractor, long), _reference(extractor, long))  # truncated as transformers does
    dithered, clip = WhisperFeatureExtractor(dither=1.0), _clips([16_000])
    torch.manual_seed(0)
    want = _reference(dithered, clip)
    torch.manual_seed(0)
    got = log_mel(dithered, clip)  # the extractor's own dithering, from the same seed; undithered would differ
    assert torch.equal(got, want) and not torch.equal(got, log_mel(WhisperFeatureExtractor(), clip))
    slow = WhisperFeatureExtractor(sampling_rate=8_000)  # not Whisper's rate: the extractor answers, and refuses
    with pytest.raises(ValueError, match="sampling rate of 8000"):
        log_mel(slow, clip)
    assert torch.equal(log_mel(extractor, clip[0]), log_mel(extractor, clip))  # one bare clip is a batch of one
