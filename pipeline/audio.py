"""Audio in and out: 16 kHz mono WAV files, resampling, and espeak-ng speech.

Everything downstream (features, manifests) assumes 16 kHz mono; this module
is the one place that produces it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from pipeline.errors import DwPipeError

SAMPLE_RATE = 16_000


class MissingToolError(DwPipeError, RuntimeError):
    """A system program the pipeline needs is not installed."""


def to_float_mono(data: np.ndarray) -> np.ndarray:
    """PCM or float samples of any channel count as float32 mono in [-1, 1]."""
    if data.ndim == 2:
        data = data.mean(axis=1)
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return data.astype(np.float32)


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
    import io

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
