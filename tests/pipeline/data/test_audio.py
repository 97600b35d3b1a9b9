"""Audio helpers: espeak-ng speech at 16 kHz, WAV round trip, resampling, missing tool message;
decoding of the inputs real corpora hold (8-, 24-bit and float WAV, stereo, FLAC, MP3)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from scipy.io import wavfile

from pipeline.data import audio
from pipeline.data.audio import (
    SAMPLE_RATE,
    AudioError,
    MissingToolError,
    Voice,
    load_audio,
    read_wav,
    resample,
    synthesize,
    write_wav,
)
from pipeline.data.manifest import audio_problem


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


def wav_bytes(frames: np.ndarray, rate: int = SAMPLE_RATE, bits: int = 0) -> bytes:
    """A WAV file of ``frames`` ([n] or [n, channels]); ``bits=24`` packs int32 values into 3 bytes by hand."""
    if bits != 24:
        buffer = io.BytesIO()
        wavfile.write(buffer, rate, frames)
        return buffer.getvalue()
    channels = 1 if frames.ndim == 1 else frames.shape[1]
    data = b"".join(int(v).to_bytes(3, "little", signed=True) for v in frames.reshape(-1))
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 3 * channels, 3 * channels, 24)
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(chunks)) + chunks


def encoded(frames: np.ndarray, container: str, codec: str, sample_format: str, rate: int = SAMPLE_RATE) -> bytes:
    """``frames`` ([n] or [n, channels]) encoded by PyAV (FFmpeg), e.g. ("flac", "flac", "s16")."""
    import av

    frames = frames.reshape(len(frames), -1)
    layout = {1: "mono", 2: "stereo"}[frames.shape[1]]
    planar = frames.T if sample_format.endswith("p") else frames.reshape(1, -1)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        stream.format = sample_format
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar), format=sample_format, layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def _both_readers(tmp_path, data: bytes, name: str = "x.wav") -> list[np.ndarray]:
    """The samples as a WAV path reads them (scipy) and as dataset bytes read them (PyAV)."""
    (tmp_path / name).write_bytes(data)
    return [load_audio(tmp_path / name), load_audio(data)]


def test_8bit_pcm_is_unsigned_and_centred_at_128(tmp_path):
    """8-bit WAV PCM is unsigned: x -> (x - 128) / 128, so [128, 255, 0, 64] -> [0, 127/128, -1, -1/2]."""
    data = wav_bytes(np.array([128, 255, 0, 64], dtype=np.uint8))
    for samples in _both_readers(tmp_path, data):
        assert samples.tolist() == [0.0, 127 / 128, -1.0, -0.5]
    silence = wav_bytes(np.full(SAMPLE_RATE, 128, dtype=np.uint8))
    for samples in _both_readers(tmp_path, silence):
        assert audio_problem(samples) == "silent audio"


def test_24bit_and_float_wav_read_at_full_scale(tmp_path):
    """24-bit x -> x / 2**23: [0, 2**23 - 1, -2**23, 2**22] -> [0, 1 - 2**-23, -1, 1/2]; float WAV as stored."""
    s24 = wav_bytes(np.array([0, 2**23 - 1, -(2**23), 2**22]), bits=24)
    for samples in _both_readers(tmp_path, s24):
        assert samples.tolist() == [0.0, np.float32(1 - 2**-23), -1.0, 0.5]
    for dtype in (np.float32, np.float64):
        data = wav_bytes(np.array([0.0, 0.25, -1.0, 0.5], dtype=dtype))
        for samples in _both_readers(tmp_path, data):
            assert samples.dtype == np.float32 and samples.tolist() == [0.0, 0.25, -1.0, 0.5]


def test_stereo_is_the_mean_of_its_channels_and_opposite_phase_is_refused(tmp_path):
    """Left [2**14, 2**13, 0], right [0, 2**13, -2**14] (int16, /2**15) -> mean [1/4, 1/4, -1/4]."""
    frames = np.array([[2**14, 0], [2**13, 2**13], [0, -(2**14)]], dtype=np.int16)
    readings = _both_readers(tmp_path, wav_bytes(frames))
    readings += _both_readers(tmp_path, encoded(frames, "flac", "flac", "s16"), "x.flac")
    for samples in readings:
        assert samples.tolist() == [0.25, 0.25, -0.25]
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = np.round(8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    for data, name in (
        (wav_bytes(np.stack([tone, -tone], 1)), "x.wav"),
        (encoded(np.stack([tone, -tone], 1), "flac", "flac", "s16"), "x.flac"),
    ):
        (tmp_path / name).write_bytes(data)
        for source in (tmp_path / name, data):
            with pytest.raises(AudioError, match=r"^silent audio: its 2 channels cancel out when averaged"):
                load_audio(source)


def test_flac_is_lossless_and_mp3_close_through_pyav(tmp_path):
    """FLAC holds int16 exactly (x / 2**15); MP3 is lossy: same length and timing, error well under the 0.5 peak."""
    pcm = np.array([0, 2**14, -(2**15), 2**15 - 1, 1] * 800, dtype=np.int16)
    for samples in _both_readers(tmp_path, encoded(pcm, "flac", "flac", "s16"), "x.flac"):
        assert np.array_equal(samples, pcm / 2**15)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    for samples in _both_readers(tmp_path, encoded(tone, "mp3", "libmp3lame", "fltp"), "x.mp3"):
        assert len(samples) == SAMPLE_RATE and np.abs(samples - tone).max() < 0.1
    with pytest.raises(AudioError, match="^unreadable audio: not a format FFmpeg .* reads"):
        load_audio(b"OggS but not really an Ogg file")
