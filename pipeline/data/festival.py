"""Festival speech: the natural-sounding voices of the embedded corpus.

Debian packages diphone and HTS voices for a few languages (``festvox-*``).
Whisper transcribes them far better than espeak-ng's formant speech
(issue 12's measurements: Czech 57-69 % vs 97 % word error, Catalan 27 % vs
107-271 %), so a teacher run on them has something to distil.

Festival reads its input in the voice's 8-bit encoding (Czech ISO-8859-2,
Catalan and Finnish Latin-1; UTF-8 input is spelled out byte by byte).
Typographic quotes and dashes, which carry no sound, are written as their
ASCII forms first; a letter the encoding cannot hold makes the utterance a
rejection with that reason.

Variety beyond a language's few voices comes from two settings per
utterance: ``stretch`` slows (> 1) or speeds up speech (Festival's
``Duration_Stretch`` for diphone voices; the HTS engine's ``-r`` rate for
HTS voices, which ignore ``Duration_Stretch``), and ``shift`` plays the
result back at ``shift`` times its rate, raising pitch and formants together
(a smaller or larger vocal tract) and shortening it by the same factor.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from pipeline.core.errors import DwPipeError
from pipeline.data.audio import AudioError, MissingToolError, resample, to_float_mono


@dataclass(frozen=True)
class FestivalVoiceInfo:
    language: str  # Whisper language code
    encoding: str  # the text encoding the voice reads
    gender: str
    age: str  # adult | child
    package: str  # the Debian package that installs it


# Facts from the Debian package descriptions (`apt-cache show festvox-...`).
VOICES: dict[str, FestivalVoiceInfo] = {
    "czech_machac": FestivalVoiceInfo("cs", "iso-8859-2", "male", "adult", "festvox-czech-machac"),
    "czech_dita": FestivalVoiceInfo("cs", "iso-8859-2", "female", "adult", "festvox-czech-dita"),
    "czech_ph": FestivalVoiceInfo("cs", "iso-8859-2", "male", "adult", "festvox-czech-ph"),
    "czech_krb": FestivalVoiceInfo("cs", "iso-8859-2", "male", "child", "festvox-czech-krb"),
    "upc_ca_ona_hts": FestivalVoiceInfo("ca", "latin-1", "female", "adult", "festvox-ca-ona-hts"),
    "suo_fi_lj_diphone": FestivalVoiceInfo("fi", "latin-1", "female", "adult", "festvox-suopuhe-lj"),
    "hy_fi_mv_diphone": FestivalVoiceInfo("fi", "latin-1", "male", "adult", "festvox-suopuhe-mv"),
    # Italian: the translation control (a high-resource language without experts)
    "pc_diphone": FestivalVoiceInfo("it", "latin-1", "male", "adult", "festvox-itapc16k"),
    "lp_diphone": FestivalVoiceInfo("it", "latin-1", "female", "adult", "festvox-italp16k"),
}

# Marks without sound that the 8-bit encodings lack, as the ASCII marks Festival reads as punctuation.
ASCII_MARKS = str.maketrans(
    {"„": '"', "“": '"', "”": '"', "‘": "'", "’": "'", "‚": "'", "–": "-", "—": "-", "…": "..."}
)


@dataclass(frozen=True)
class FestivalVoice:
    """One Festival voice and the per-utterance settings it speaks with."""

    voice: str
    stretch: float = 1.0
    shift: float = 1.0

    @property
    def info(self) -> FestivalVoiceInfo:
        return VOICES[self.voice]

    @property
    def name(self) -> str:
        return f"festival:{self.voice}"


def text2wave_binary() -> str:
    path = shutil.which("text2wave")
    if path is None:
        raise MissingToolError("Festival is not installed: run `apt-get install festival` (scripts/setup.sh does)")
    return path


@cache
def installed_voices() -> frozenset[str]:
    """The voices Festival can load (``voice.list``)."""
    text2wave_binary()
    out = subprocess.run(["festival", "-b", "(print (voice.list))"], capture_output=True, text=True, check=False)
    return frozenset(out.stdout.strip().strip("()").split())


def check_voices(names: set[str]) -> None:
    """One line naming the package to install for the first voice that is missing or unknown."""
    for name in sorted(names):
        if name not in VOICES:
            raise DwPipeError(f"unknown Festival voice {name!r}; known: {', '.join(sorted(VOICES))}")
        if name not in installed_voices():
            raise MissingToolError(
                f"Festival voice {name} is not installed: run `apt-get install {VOICES[name].package}` "
                "(scripts/setup.sh does)"
            )


def encode_for(text: str, voice: str) -> bytes:
    """``text`` in the voice's encoding; :class:`AudioError` when a letter does not fit."""
    info = VOICES[voice]
    plain = text.translate(ASCII_MARKS)
    try:
        return plain.encode(info.encoding)
    except UnicodeEncodeError as exc:
        raise AudioError(
            f"text not speakable: Festival voice {voice} reads {info.encoding}, which has no "
            f"{plain[exc.start]!r} (U+{ord(plain[exc.start]):04X})"
        ) from None


def synthesize_festival(text: str, voice: FestivalVoice) -> np.ndarray:
    """Speak ``text`` with a Festival voice; 16 kHz float32 mono samples."""
    data = encode_for(text, voice.voice)
    evals = [f"(voice_{voice.voice})"]
    if voice.stretch != 1.0:
        if voice.voice.endswith("_hts"):
            rate = 1.0 / voice.stretch
            evals.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.4f}))))')
        else:
            evals.append(f"(Parameter.set 'Duration_Stretch {voice.stretch:.4f})")
    with tempfile.TemporaryDirectory(prefix="dw-festival-") as tmp:
        src, wav = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
        src.write_bytes(data)
        cmd = [text2wave_binary(), *(a for e in evals for a in ("-eval", e)), str(src), "-o", str(wav)]
        result = subprocess.run(cmd, capture_output=True, check=False)
        if result.returncode != 0 or not wav.is_file() or wav.stat().st_size <= 44:
            err = result.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"Festival failed for voice {voice.voice}: {err[-1] if err else 'no audio produced'}")
        rate, samples = wavfile.read(wav)
    # Read as if recorded at rate * shift (to 100 Hz, which keeps the resampling ratio small):
    # pitch and formants x shift, duration / shift.
    out = resample(to_float_mono(samples), round(rate * voice.shift / 100) * 100)
    peak = float(np.abs(out).max()) if out.size else 0.0
    # Festival speaks at full scale and resampling overshoots it: scale down rather than clip.
    return out / (peak / 0.99) if peak > 0.99 else out
