"""Audio in and out: decoding input files, 16 kHz mono WAV files, resampling, espeak-ng speech.

Everything downstream (features, manifests) assumes 16 kHz mono; this module
is the one place that produces it. Input files are decoded by one rule
(:func:`to_float_mono`): WAV by scipy, every other format (FLAC, MP3, Ogg,
WAV bytes from a dataset) by PyAV, which bundles FFmpeg's decoders.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from pipeline.core.errors import DwPipeError
from pipeline.data.manifest import SILENCE_PEAK

SAMPLE_RATE = 16_000


class MissingToolError(DwPipeError, RuntimeError):
    """A system program the pipeline needs is not installed."""


class AudioError(ValueError):
    """Audio that cannot be used; the message is the rejection reason (``<kind>: <details>``)."""


def _peak(samples: np.ndarray) -> float:
    return float(np.abs(samples).max()) if samples.size else 0.0


def to_float_mono(data: np.ndarray) -> np.ndarray:
    """Samples ``[n]`` or ``[n, channels]`` of any PCM or float type as float32 mono in [-1, 1].

    Integer PCM of b bits is centred and divided by half its range, 2**(b-1):
    signed samples are centred at 0 already; unsigned ones (WAV's 8-bit PCM)
    at 2**(b-1), so 8-bit silence (128) reads 0.0 and bytes [128, 255, 0] read
    [0.0, 127/128, -1.0]. 24-bit PCM arrives left-justified in int32 (scipy
    and FFmpeg both), so the same rule scales it. Float samples pass as they are.

    Channels are averaged: a mono recording copied to two channels reads as
    itself (a sum would double it), and it is the down-mix of librosa and of
    FFmpeg's stereo-to-mono up to a gain. Channels that cancel out when
    averaged (one the other inverted: a wiring fault) would read as silence;
    they raise :class:`AudioError` saying so instead.
    """
    if np.issubdtype(data.dtype, np.integer):
        half = 2.0 ** (8 * data.itemsize - 1)
        centre = half if np.issubdtype(data.dtype, np.unsignedinteger) else 0.0
        samples = (data.astype(np.float64) - centre) / half
    elif np.issubdtype(data.dtype, np.floating):
        samples = data
    else:
        raise AudioError(f"unreadable audio: samples of type {data.dtype} are neither PCM nor float")
    if samples.ndim == 2:
        mono = samples.mean(axis=1)
        if _peak(mono) < SILENCE_PEAK <= _peak(samples):
            raise AudioError(
                f"silent audio: its {samples.shape[1]} channels cancel out when averaged to mono "
                "(opposite phase: one channel is the other inverted); keep one channel or fix the wiring"
            )
        samples = mono
    return samples.astype(np.float32)


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling from ``rate`` to ``target`` Hz."""
    if rate == target:
        return samples.astype(np.float32)
    ratio = Fraction(target, rate)
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


def read_wav(path: Path) -> np.ndarray:
    """A WAV file as float32 mono at 16 kHz."""
    rate, data = wavfile.read(path)
    return resample(to_float_mono(data), rate)


def decode(source: Path | bytes) -> tuple[np.ndarray, int]:
    """The first audio stream of a file or its bytes, any format FFmpeg reads: ``([n, channels], rate)``.

    Samples keep the stream's own type (``to_float_mono`` scales them).
    Frames FFmpeg reports invalid are skipped, as faster-whisper's
    ``decode_audio`` (which this replaces) does.
    """
    import av

    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise AudioError(f"unreadable audio: not a format FFmpeg {av.ffmpeg_version_info} reads ({exc})") from exc
    with container:
        if not container.streams.audio:
            raise AudioError("unreadable audio: the file holds no audio stream")
        stream = container.streams.audio[0]
        chunks, shapes = [], set()
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.InvalidDataError:
                continue
            array = frame.to_ndarray()  # planar: [channels, n]; packed: [1, n * channels]
            channels = len(frame.layout.channels)
            chunks.append(array.T if frame.format.is_planar else array.reshape(-1, channels))
            shapes.add((frame.sample_rate, channels, frame.format.name))
        if not chunks:
            return np.zeros((0, stream.codec_context.channels or 1), dtype=np.float32), stream.rate
    if len(shapes) > 1:
        raise AudioError(
            f"unreadable audio: rate, channels or sample format change within the stream: {sorted(shapes)}"
        )
    return np.concatenate(chunks), shapes.pop()[0]


def load_audio(source: Path | bytes) -> np.ndarray:
    """An input recording (a path or a file's bytes) as float32 mono at 16 kHz."""
    if isinstance(source, Path) and source.suffix.lower() == ".wav":
        return read_wav(source)
    data, rate = decode(source)
    return resample(to_float_mono(data), rate)


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write float samples as 16-bit PCM."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
    wavfile.write(path, rate, pcm)


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: language voice name plus optional variant, rate and pitch."""

    language_voice: str
    variant: str | None = None
    rate: int = 160
    pitch: int = 50

    @property
    def name(self) -> str:
        return self.language_voice + (f"+{self.variant}" if self.variant else "")


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise MissingToolError("espeak-ng is not installed: run `apt-get install espeak-ng` (scripts/setup.sh does)")
    return path


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return 16 kHz float32 mono samples."""
    cmd = [espeak_binary(), "-v", voice.name, "-s", str(voice.rate), "-p", str(voice.pitch), "--stdout"]
    # Text goes through stdin: a sentence starting with "-" would otherwise read as an option.
    result = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
    if result.returncode != 0 or len(result.stdout) <= 44:
        err = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"espeak-ng failed for voice {voice.name!r}: {err or 'no audio produced'}")
    rate, data = wavfile.read(io.BytesIO(_fix_stream_header(result.stdout)))
    return resample(to_float_mono(data), rate)


def _fix_stream_header(wav: bytes) -> bytes:
    """espeak-ng writes a streaming WAV header with unknown sizes; fill them in."""
    if wav[:4] != b"RIFF":
        raise RuntimeError("espeak-ng did not produce a WAV stream")
    header = bytearray(wav[:44])
    header[4:8] = (len(wav) - 8).to_bytes(4, "little")
    header[40:44] = (len(wav) - 44).to_bytes(4, "little")
    return bytes(header) + wav[44:]
