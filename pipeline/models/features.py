"""Whisper's log-mel features without the STFT of the padding.

Whisper pads every clip with zeros to 30 s (480,000 samples) before its log-mel. transformers' extractor computes
the short-time Fourier transform over all of it, 3,000 frames, so a 2-s clip costs as much as a 30-s one. Past a
clip's last sample the signal is zero, so every frame whose 400-sample window lies in the padding has zero power,
and its log-mel is ``log10(1e-10)``, the floor the extractor clamps to. :func:`log_mel` transforms each batch only
up to its longest clip plus one window, and fills the frames after with that floor; the frames it does transform
see the very samples the extractor's frames see (zeros after the clip on both sides of the cut, the same reflected
edge at the start), so the features are the extractor's to float rounding (``tests/pipeline/models/
test_features.py``; equal to the bit for clips of half a second or more on the machines tested), while the work
shrinks with the audio.

An extractor with other settings than Whisper's (window, hop, 30-s length, dither) or a clip longer than 30 s goes
through transformers' own code.
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 16_000
FLOOR = 1e-10  # the extractor's clamp before log10


def _standard(extractor) -> bool:
    return (
        getattr(extractor, "sampling_rate", None) == SAMPLE_RATE
        and getattr(extractor, "n_fft", None) == 400
        and getattr(extractor, "hop_length", None) == 160
        and getattr(extractor, "n_samples", None) == 480_000
        and getattr(extractor, "nb_max_frames", None) == 3_000
        and float(getattr(extractor, "dither", 0.0)) == 0.0
        and float(getattr(extractor, "padding_value", 0.0)) == 0.0
    )


def log_mel(extractor, audio: list[np.ndarray]) -> torch.Tensor:
    """``[B, n_mels, 3000]`` float32 log-mels of ``audio`` (16 kHz mono float arrays), as
    ``extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features`` gives them."""
    if isinstance(audio, np.ndarray) and audio.ndim == 1:  # one clip, as the extractor takes it
        audio = [audio]
    if not len(audio) or not _standard(extractor) or max(len(a) for a in audio) > extractor.n_samples:
        return extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    n_fft, hop, frames = extractor.n_fft, extractor.hop_length, extractor.nb_max_frames
    longest = max(len(a) for a in audio)
    # frame t covers samples [t*hop - n_fft/2, t*hop + n_fft/2): transform up to one window past the longest clip,
    # so every frame that touches a sample of any clip is whole (and the reflected end is zeros)
    length = min(extractor.n_samples, -(-(longest + n_fft) // hop) * hop)
    batch = np.zeros((len(audio), length), dtype=np.float32)
    for row, clip in zip(batch, audio):
        row[: len(clip)] = clip
    stft = torch.stft(
        torch.from_numpy(batch), n_fft, hop, window=torch.hann_window(n_fft), return_complex=True, center=True
    )
    # frames whose window ends inside the transformed span (all of them when that span is the whole 30 s)
    whole = frames if length == extractor.n_samples else min(frames, (length - n_fft // 2) // hop + 1)
    power = (stft[..., :whole].abs() ** 2).contiguous()  # squared as the extractor squares it, to the bit
    mel = torch.from_numpy(extractor.mel_filters).to(torch.float32).T @ power
    log_spec = torch.clamp(mel, min=FLOOR).log10()
    floor = torch.tensor(FLOOR, dtype=torch.float32).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # the padding's frames hold the floor, which no frame is under
    out = torch.empty(len(audio), mel.shape[1], frames, dtype=torch.float32)
    out[..., :whole] = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
    out[..., whole:] = (torch.maximum(floor, peak - 8.0) + 4.0) / 4.0
    return out
