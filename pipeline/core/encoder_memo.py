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
keys this machine would no longer hit (:func:`memo_info`, :func:`prune_memo`),
whole folders at a time, safely while a stage reads the memo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
        self.root = Path(root)
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
LEFTOVER_AGE_S = 3600  # a temporary older than this was left by a killed writer, not one still writing


@dataclass(frozen=True)
class MemoEntry:
    """One key's folder under a memo root."""

    name: str
    record: dict | None  # its memo.json; None when missing or unreadable (a memo older than recorded keys)
    files: int  # stored outputs (.npy)
    bytes: int  # everything in the folder
    current: bool  # this machine would hit it: a record of today's key fields that names this machine


def current_machines() -> list[dict]:
    """The machine part of the keys this machine makes: its CPU's, and each visible GPU's."""
    import torch

    devices = [torch.device("cpu"), *(torch.device("cuda", i) for i in range(torch.cuda.device_count()))]
    return [json.loads(json.dumps(compute_identity(d), default=str)) for d in devices]


def identity_label(machine: dict | None) -> str:
    """A short name for a key's machine part: GPU, CPU, torch, and a hash that parts two whose names agree."""
    if machine is None:
        return "unknown: no machine recorded (a key from before keys named it)"
    digest = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:8]
    gpu = f"{machine['gpu']} CUDA {machine.get('cuda')}, " if machine.get("gpu") else ""
    return f"{gpu}{machine.get('cpu')} ({machine.get('cpu_id')}), torch {machine.get('torch')} [{digest}]"


def _sizes(path: Path) -> tuple[int, int]:
    """Stored outputs and bytes at ``path`` (a folder or a file); what vanishes meanwhile counts as gone."""
    files = size = 0
    for item in path.rglob("*") if path.is_dir() else [path]:
        try:
            size += item.stat().st_size if item.is_file() else 0
        except FileNotFoundError:
            continue
        files += item.suffix == ".npy" and not item.name.startswith(".")
    return files, size


def memo_entries(root: Path, machines: list[dict] | None = None) -> list[MemoEntry]:
    """The key folders under ``root`` in name order; ``machines``: the current ones (default: this machine's)."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    machines = current_machines() if machines is None and folders else machines or []
    entries = []
    for folder in folders:
        try:
            record = json.loads((folder / "memo.json").read_text())
        except (OSError, ValueError):
            record = None
        current = (
            isinstance(record, dict)
            and sorted(record) == sorted(KEY_FIELDS)
            and key_digest(record) == folder.name
            and record["machine"] in machines
        )
        entries.append(MemoEntry(folder.name, record if isinstance(record, dict) else None, *_sizes(folder), current))
    return entries


def _leftovers(root: Path) -> list[Path]:
    """Folders of unfinished prunes, and temporaries of writers killed more than LEFTOVER_AGE_S ago."""
    found = list(root.glob(".trash-*"))
    for path in [*root.glob(".tmp-*"), *root.glob("*/.tmp-*")]:
        try:
            if time.time() - path.stat().st_mtime > LEFTOVER_AGE_S:
                found.append(path)
        except FileNotFoundError:
            continue
    return sorted(found)


def memo_info(root: Path, machines: list[dict] | None = None) -> dict:
    """What the memo at ``root`` holds: each key, the totals per machine identity, and which is this machine's."""
    machines = current_machines() if machines is None else machines
    keys, identities = [], {}
    for e in memo_entries(root, machines):
        label = identity_label(e.record and e.record.get("machine"))
        about = {k: e.record and e.record.get(k) for k in ("setting", "encoder_sha256")}
        keys.append(
            {"key": e.name, **about, "identity": label, "files": e.files, "bytes": e.bytes, "current": e.current}
        )
        group = identities.setdefault(label, {"identity": label, "keys": 0, "files": 0, "bytes": 0, "current": False})
        group.update(keys=group["keys"] + 1, files=group["files"] + e.files, bytes=group["bytes"] + e.bytes)
        group["current"] |= e.current
    return {
        "root": str(root),
        "keys": keys,
        "identities": sorted(identities.values(), key=lambda g: (not g["current"], g["identity"])),
        "files": sum(k["files"] for k in keys),
        "bytes": sum(k["bytes"] for k in keys),
        "leftovers": len(_leftovers(Path(root))),
        "this_machine": [identity_label(m) for m in machines],
    }


def _remove(path: Path) -> None:
    """Delete ``path`` (a key's folder or a leftover); a key's folder is renamed away first, so it goes at once."""
    if path.is_dir() and not path.name.startswith(".trash-"):
        trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:  # another prune took it
            return
        path = trash
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def prune_memo(
    root: Path, *, keep_current: bool = True, dry_run: bool = False, machines: list[dict] | None = None
) -> dict:
    """Delete the keys under ``root`` this machine would not hit (every key unless ``keep_current``) and the
    leftovers of killed writers and prunes; ``dry_run``: only say what would go. Safe while stages use the
    memo: a reader misses what is gone, a writer makes its key's folder again."""
    root = Path(root)
    entries = memo_entries(root, machines)
    doomed = [e for e in entries if not (keep_current and e.current)]
    leftovers = _leftovers(root) if root.is_dir() else []
    freed = sum(e.bytes for e in doomed) + sum(_sizes(p)[1] for p in leftovers)
    if not dry_run:
        for path in [*(root / e.name for e in doomed), *leftovers]:
            _remove(path)
    return {
        "root": str(root),
        "removed": [e.name for e in doomed],
        "files": sum(e.files for e in doomed),
        "bytes": freed,
        "leftovers": len(leftovers),
        "kept": [e.name for e in entries if e not in doomed],
        "dry_run": dry_run,
    }
