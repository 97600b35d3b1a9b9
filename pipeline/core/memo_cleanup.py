"""Cleaning the encoder memo (``dw-pipe memo info`` / ``dw-pipe memo prune``): what each key holds, and deleting
the keys this machine would no longer hit.

Kept apart from :mod:`pipeline.core.encoder_memo`, which the stages import, so that a change to the clean-up is
no change to the pipeline's inputs (dvc.yaml lists what the stages import). Only folders named like a key (24 hex
digits, :func:`pipeline.core.encoder_memo.key_digest`) are ever touched: a prune pointed at the wrong folder
deletes nothing else. A key goes by renaming its folder away first, so a reader sees the whole key or a plain miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.encoder_memo import KEY_FIELDS, key_digest
from pipeline.core.machine import compute_identity

KEY_NAME = re.compile(r"[0-9a-f]{24}")  # a key's folder name (key_digest); any other folder is not the memo's

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
    folders = sorted(p for p in root.iterdir() if p.is_dir() and KEY_NAME.fullmatch(p.name)) if root.is_dir() else []
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
    inside = {root / e.name for e in doomed}  # a doomed key's temporaries are counted with the key
    freed = sum(e.bytes for e in doomed) + sum(_sizes(p)[1] for p in leftovers if p.parent not in inside)
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
