"""Cleaning the encoder memo: `memo info` counts what each key and machine holds, `memo prune` deletes the keys this
machine would not hit, and neither a killed prune nor one racing a reader or writer leaves a key half there."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from pipeline.core import encoder_memo, memo_cleanup
from pipeline.core.encoder_memo import EncoderMemo, key_digest
from pipeline.core.machine import compute_identity
from pipeline.core.memo_cleanup import memo_entries, memo_info, prune_memo

HERE = json.loads(json.dumps(compute_identity(torch.device("cpu"))))
OTHER = {**HERE, "cpu_id": "23/1/2", "isa": ["avx", "avx2"]}  # an AVX2-only CPU of the same name
VALUE = np.arange(12, dtype=np.float32).reshape(3, 4)


@pytest.fixture()
def audio(tmp_path) -> list[Path]:
    files = []
    for i in range(3):
        files.append(tmp_path / f"a{i}.wav")
        files[-1].write_bytes(f"audio {i}".encode())
    return files


def _memo(root: Path, encoder: str, machine: dict) -> EncoderMemo:
    return EncoderMemo(root, encoder, "cpu:torch.float32", WhisperFeatureExtractor(), machine, "sdpa")


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture()
def filled(tmp_path, audio) -> dict[str, Path]:
    """Keys of this machine (two encoders), of another CPU, and one from before keys named the machine."""
    root = tmp_path / "memo"
    made = {}
    for name, encoder, machine, n in [("a", "enc-a", HERE, 2), ("b", "enc-b", HERE, 1), ("other", "enc-a", OTHER, 3)]:
        memo = _memo(root, encoder, machine)
        for path in audio[:n]:
            memo.save(path, VALUE)
        made[name] = memo.dir
    old = {k: v for k, v in _memo(root, "enc-a", HERE).record.items() if k not in ("machine", "attention")}
    made["old"] = root / key_digest(old)
    made["old"].mkdir()
    (made["old"] / "memo.json").write_text(json.dumps(old))
    np.save(made["old"] / "x.npy", VALUE)
    return made


def test_info_counts_each_key_and_machine_and_marks_this_machines(filled):
    root = filled["a"].parent
    info = memo_info(root)
    assert [k["key"] for k in info["keys"]] == sorted(p.name for p in filled.values())
    assert info["files"] == 2 + 1 + 3 + 1
    assert info["bytes"] == sum(_bytes(p) for p in filled.values())
    groups = {g["identity"]: g for g in info["identities"]}
    current = [g for g in groups.values() if g["current"]]
    assert len(current) == 1 and current[0]["keys"] == 2 and current[0]["files"] == 3
    assert current[0]["bytes"] == _bytes(filled["a"]) + _bytes(filled["b"])
    assert info["identities"][0]["current"]  # this machine's first
    assert current[0]["identity"] in info["this_machine"]
    assert {g["files"] for g in groups.values() if not g["current"]} == {3, 1}
    assert any(label.startswith("unknown") for label in groups)  # the old key records no machine


def test_prune_keeps_this_machines_keys_and_a_dry_run_deletes_nothing(filled, audio):
    root = filled["a"].parent
    before = sorted(p.name for p in root.iterdir())
    dry = prune_memo(root, dry_run=True)
    assert sorted(p.name for p in root.iterdir()) == before
    assert sorted(dry["removed"]) == sorted([filled["other"].name, filled["old"].name])
    freed = _bytes(filled["other"]) + _bytes(filled["old"])
    assert dry["bytes"] == freed and dry["files"] == 4
    done = prune_memo(root)
    assert done["bytes"] == freed and sorted(done["kept"]) == sorted([filled["a"].name, filled["b"].name])
    assert sorted(p.name for p in root.iterdir()) == sorted([filled["a"].name, filled["b"].name])
    again = _memo(root, "enc-a", HERE)  # this machine still finds what it stored
    assert all(np.array_equal(again.load(p), VALUE) for p in audio[:2]) and again.hits == 2
    assert prune_memo(root, keep_current=False)["removed"] == sorted([filled["a"].name, filled["b"].name])
    assert list(root.iterdir()) == []


def test_prune_touches_only_key_folders(filled, tmp_path):
    """Pointed at the wrong folder (data/ instead of data/encoder-memo), prune deletes nothing that is not a key."""
    root = filled["a"].parent
    (root / "models" / "whisper-base").mkdir(parents=True)
    (root / "models" / "whisper-base" / "config.json").write_text("{}")
    (root / "0123456789abcdef0123456").mkdir()  # 23 hex digits: not a key's name either
    assert prune_memo(root, keep_current=False)["removed"] == sorted(p.name for p in filled.values())
    assert sorted(p.name for p in root.iterdir()) == ["0123456789abcdef0123456", "models"]
    assert (root / "models" / "whisper-base" / "config.json").is_file()


def test_a_doomed_keys_leftovers_are_counted_once(filled):
    root = filled["a"].parent
    stale = filled["other"] / ".tmp-stale.npy"
    stale.write_bytes(b"x" * 100)
    hours_ago = time.time() - 2 * memo_cleanup.LEFTOVER_AGE_S
    os.utime(stale, (hours_ago, hours_ago))
    assert prune_memo(root, dry_run=True)["bytes"] == _bytes(filled["other"]) + _bytes(filled["old"])


def test_prune_removes_leftovers_of_killed_writers_but_not_a_running_ones(filled):
    root = filled["a"].parent
    stale, fresh = filled["a"] / ".tmp-stale.npy", filled["a"] / ".tmp-fresh.npy"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 10)
    hours_ago = time.time() - 2 * memo_cleanup.LEFTOVER_AGE_S
    os.utime(stale, (hours_ago, hours_ago))
    assert memo_info(root)["leftovers"] == 1
    freed = 100 + _bytes(filled["other"]) + _bytes(filled["old"])
    done = prune_memo(root)
    assert done["leftovers"] == 1 and not stale.exists() and fresh.exists() and done["bytes"] == freed


def test_a_prune_killed_midway_leaves_no_key_half_there(filled, audio, monkeypatch):
    """The kill lands in the deletion itself: after one file of the other machine's key is gone."""
    root = filled["a"].parent
    real_rmtree = shutil.rmtree

    def killed(path, *args, **kwargs):
        if filled["other"].name not in Path(path).name:
            return real_rmtree(path, *args, **kwargs)
        next(Path(path).glob("*.npy")).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(memo_cleanup.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        prune_memo(root)
    monkeypatch.setattr(memo_cleanup.shutil, "rmtree", real_rmtree)
    assert not filled["other"].exists()  # the key went whole, at once, before any file did
    assert filled["other"].name not in [e.name for e in memo_entries(root, [HERE])]
    reader = _memo(root, "enc-a", OTHER)  # the other machine reading now: misses, never a part of its key
    assert [reader.load(p) for p in audio] == [None, None, None] and reader.misses == 3
    assert memo_info(root)["leftovers"] == 1
    prune_memo(root)  # the next prune finishes the job
    assert not list(root.glob(".trash-*"))


def test_a_writer_whose_key_is_pruned_while_it_writes_makes_the_key_again(tmp_path, audio, monkeypatch):
    root = tmp_path / "memo"
    memo = _memo(root, "enc-a", HERE)
    memo.save(audio[0], VALUE)
    real_mkstemp = tempfile.mkstemp
    calls = []

    def pruned_first(*args, **kwargs):  # another machine prunes this key as the file is about to be written
        calls.append(1)
        if len(calls) == 1:
            prune_memo(root, machines=[OTHER])
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(encoder_memo.tempfile, "mkstemp", pruned_first)
    memo.save(audio[1], VALUE)
    assert len(calls) == 2 and json.loads((memo.dir / "memo.json").read_text()) == memo.record
    assert np.array_equal(np.load(memo.dir / memo._path(audio[1], None).name), VALUE)
    assert memo.load(audio[0]) is None  # pruned with its key: a plain miss
