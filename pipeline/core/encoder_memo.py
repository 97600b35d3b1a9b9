"""Encoder outputs kept on disk between stages and runs: one ``.npy`` per audio file, keyed by what made it.

The encoder is most of the embedded run's compute: whisper-base encodes every
utterance as 30 s of log-mel, ~0.65 s an utterance on this 2-core machine
whatever the utterance's length, while greedy decoding one costs ~0.3 s
(``bench/encoder_memo.py``). The embedded student keeps the teacher's frozen
encoder, so ``cache_teacher`` and ``train_student`` would encode the same
training audio twice, and a second ``dvc repro`` after a change of training
settings would encode the test sets again.

A value is one utterance's encoder output, float32 ``[frames, d_model]``. Its
folder is named by a hash of all that decides it besides the audio: the
encoder's weights (:func:`encoder_identity`), the compute setting (device type
and dtype: a GPU run under bf16 autocast is another setting), the attention
implementation, the feature extractor's settings, and the machine and
libraries (:func:`pipeline.core.machine.compute_identity`: the CPU, on a GPU
also the GPU and CUDA, and the torch, transformers and numpy versions), so a
data/ folder shared by two machines, or kept across a torch upgrade, never
hands one's floats to the other; its file by a hash of the audio file's bytes
and, for an encoder with CLSR layers, the routing language. PyTorch's CPU
encoder gives bitwise the same output for an utterance in any batch (batch 1,
4, 8 and a permuted batch: measured equal), so a hit is what recomputing would
give.

A key's folder appears whole, with its ``memo.json`` (the key's record), by a
rename; a file is written under a temporary name and renamed; a file that does
not load as the expected float32 array is recomputed and replaced. The memo
grows with every (encoder, audio) pair: 3 MB an utterance for whisper-base;
``dw-pipe memo info`` says what it holds and ``dw-pipe memo prune`` deletes the
keys this machine would no longer hit (:mod:`pipeline.core.memo_cleanup`, which
no stage imports), whole folders at a time, safely while a stage reads the memo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.core.fsutil import project_path
from pipeline.core.machine import compute_identity

log = logging.getLogger(__name__)


def encoder_identity(model) -> str:
    """sha256 of the encoder's weights (names, dtypes, values): models with the same one may share stored outputs.

    The base checkpoint and kept layers do not name an encoder: encoder experts
    (or fine-tuning) change what it outputs, and a student whose stored outputs
    came from another encoder would be measured as that encoder's student.
    """
    import torch

    digest = hashlib.sha256()
    for name, value in sorted(model.get_encoder().state_dict().items()):
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _extractor_settings(extractor) -> dict:
    return {k: v for k, v in extractor.to_dict().items() if not isinstance(v, (list, np.ndarray))}


KEY_FIELDS = ("encoder_sha256", "setting", "attention", "feature_extractor", "machine")


def key_digest(record: dict) -> str:
    """The folder name of a key's record: the first 24 hex digits of its sha256."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:24]


class EncoderMemo:
    """The memo folder of one key (encoder, compute setting, attention, feature extractor, machine) under ``root``."""

    def __init__(
        self, root: Path, encoder: str, setting: str, extractor, machine: dict, attention: str | None = None
    ) -> None:
        record = {
            "encoder_sha256": encoder,
            "setting": setting,
            "attention": attention,
            "feature_extractor": _extractor_settings(extractor),
            "machine": machine,
        }
        record = json.loads(json.dumps(record, default=str))  # as memo.json will hold it
        self.root = project_path(Path(root))  # a DVC experiment's temporary copy shares the project's memo
        self.dir = self.root / key_digest(record)
        self.record = record
        self._audio_sha: dict[Path, str] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, audio: Path, language: str | None) -> Path:
        audio = Path(audio)
        if audio not in self._audio_sha:
            self._audio_sha[audio] = hashlib.sha256(audio.read_bytes()).hexdigest()
        name = self._audio_sha[audio] + (f"-{language}" if language else "")
        return self.dir / f"{name}.npy"

    def load(self, audio: Path, language: str | None = None) -> np.ndarray | None:
        """The stored output for ``audio`` (routed to ``language``), or None when there is none usable."""
        path = self._path(audio, language)
        try:
            value = np.load(path, allow_pickle=False)
        except FileNotFoundError:  # never stored, or its key's folder pruned meanwhile
            self.misses += 1
            return None
        except (OSError, ValueError) as exc:
            log.warning("encoder memo %s unreadable (%s): computing it again", path, exc)
            self.misses += 1
            return None
        if value.dtype != np.float32 or value.ndim != 2:
            log.warning(
                "encoder memo %s holds %s %s, not float32 [frames, d_model]: computing it again",
                path,
                value.dtype,
                value.shape,
            )
            self.misses += 1
            return None
        self.hits += 1
        return value

    def save(self, audio: Path, value: np.ndarray, language: str | None = None) -> None:
        """Store ``value`` (float32 ``[frames, d_model]``) for ``audio``: temporary file, then rename. A folder
        pruned while the file was written is made again once (this machine's key: a prune elsewhere took it)."""
        path = self._path(audio, language)
        for attempt in (1, 2):
            self._make_dir()
            try:
                _write_npy(path, value)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise

    def _make_dir(self) -> None:
        """The key's folder, made whole with its memo.json under a temporary name and renamed into place."""
        if self.dir.is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".tmp-{self.dir.name}-"))
        (tmp / "memo.json").write_text(json.dumps(self.record, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(tmp, self.dir)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)


def _write_npy(path: Path, value: np.ndarray) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(handle, "wb") as out:
            np.save(out, np.ascontiguousarray(value, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def memo_for(root: Path, model, extractor, autocast=None) -> EncoderMemo:
    """The memo folder of ``model``'s encoder as it runs now: on its parameters' device and dtype, or under
    ``autocast`` (a torch dtype) when given, on this machine. The one place a key's compute side is spelled."""
    param = next(model.parameters())
    return EncoderMemo(
        root,
        encoder_identity(model),
        f"{param.device.type}:{autocast or param.dtype}",
        extractor,
        compute_identity(param.device),
        getattr(model.config, "_attn_implementation", None),
    )


# Clean-up. A key's folder is removed by renaming it out of the way first (``.trash-*``), then deleting it: a
# reader finds a whole file or none (a plain miss), never a folder half emptied under its key's name.
