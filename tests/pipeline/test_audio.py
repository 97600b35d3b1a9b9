"""Audio helpers: espeak-ng speech at 16 kHz, WAV round trip, resampling, missing tool message."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import audio
from pipeline.audio import SAMPLE_RATE, MissingToolError, Voice, read_wav, resample, synthesize, write_wav


def test_synthesize_gives_16khz_speech():
    samples = synthesize("Dzień dobry.", Voice("pl", variant="f2", rate=150, pitch=60))
    assert samples.dtype == np.float32
    assert 0.3 * SAMPLE_RATE < len(samples) < 5 * SAMPLE_RATE
    assert 0.05 < np.abs(samples).max() <= 1.0


def test_wav_round_trip_and_resampling(tmp_path):
    tone = np.sin(2 * np.pi * 440 * np.arange(22_050) / 22_050).astype(np.float32) * 0.5
    write_wav(tmp_path / "t.wav", tone, rate=22_050)
    back = read_wav(tmp_path / "t.wav")
    assert len(back) == SAMPLE_RATE
    assert np.allclose(resample(tone, 22_050), back, atol=2e-4)


def test_missing_espeak_says_what_to_install(monkeypatch):
    monkeypatch.setattr(audio.shutil, "which", lambda _: None)
    with pytest.raises(MissingToolError, match="apt-get install espeak-ng"):
        synthesize("hello", Voice("en"))


def test_unknown_voice_is_an_error():
    with pytest.raises(RuntimeError, match="espeak-ng failed"):
        synthesize("hello", Voice("xx-no-such-voice"))
