"""prepare_data at scale: a repeated id is refused before any audio is written; a run killed part-way is resumed
without producing its finished audio again; what the journal holds is used only while its input is unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import pipeline.data.materialize as materialize
from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import partial_dir
from pipeline.data.audio import write_wav
from pipeline.data.prepare import prepare_data
from tests.pipeline.data.test_prepare import _config, _speech

ROOT = Path(__file__).resolve().parents[3]


class Killed(Exception):
    """Stands for the process being killed between two items."""


def _corpus(root: Path, n: int, seconds: float = 0.3) -> Path:
    """``n`` short WAVs (each its own pitch) and a local manifest of them, 1 in 10 a test row."""
    (root / "wav").mkdir(parents=True)
    rows = []
    for i in range(n):
        t = np.arange(int(seconds * 16_000)) / 16_000
        write_wav(root / "wav" / f"u{i}.wav", (0.2 * np.sin(2 * np.pi * (150 + 3 * i) * t)).astype(np.float32))
        split = "test" if i % 10 == 9 else "train"
        rows.append({"id": f"u{i}", "audio": f"wav/u{i}.wav", "text": f"zdanie {i}", "language": "pl", "split": split})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _local(tmp_path: Path, model: Path, manifest: Path, **overrides):
    return _config(tmp_path, model, source="local", input=str(manifest), **overrides)


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_repeated_id_is_refused_before_any_audio_is_written(tmp_path, tiny_hf_dir):
    manifest = _corpus(tmp_path / "corpus", 4)
    rows = manifest.read_text().splitlines()
    dup = json.loads(rows[1]) | {"split": "test"}  # the same id in another split
    manifest.write_text("\n".join([*rows, json.dumps(dup)]) + "\n")
    cfg = _local(tmp_path, tiny_hf_dir, manifest)
    with pytest.raises(DwPipeError) as err:
        prepare_data(cfg)
    assert str(err.value) == (
        "duplicate id 'u1': in local:manifest.jsonl line 2 and local:manifest.jsonl line 5; ids must be unique "
        "across splits and inputs (nothing was written)"
    )
    assert not cfg.out_dir.exists() and not list(partial_dir(cfg.out_dir).rglob("*.wav"))


def test_an_interrupted_run_is_resumed_and_ends_as_an_uninterrupted_one(tmp_path, tiny_hf_dir, monkeypatch):
    manifest = _corpus(tmp_path / "corpus", 30)
    fresh = _local(tmp_path, tiny_hf_dir, manifest, out_dir=tmp_path / "fresh", workers=1)
    prepare_data(fresh)
    cfg = replace(fresh, out_dir=tmp_path / "prepared")
    produced: list[str] = []
    real = materialize._produce

    def produce(job):
        if len(produced) == 18:
            raise Killed  # at 60 %
        produced.append(job[2].name)
        return real(job)

    monkeypatch.setattr(materialize, "_produce", produce)
    with pytest.raises(Killed):
        prepare_data(cfg)
    assert not cfg.out_dir.exists() and len(list(partial_dir(cfg.out_dir).rglob("*.wav"))) == 18
    produced.clear()
    prepare_data(cfg)
    assert len(produced) == 12  # only what the first run had not finished
    assert _outputs(cfg.out_dir).keys() == _outputs(fresh.out_dir).keys()
    fresh_files, files = _outputs(fresh.out_dir), _outputs(cfg.out_dir)
    assert all(files[k] == fresh_files[k] for k in files if k != "summary.json")
    assert not partial_dir(cfg.out_dir).exists() and not (cfg.out_dir / materialize.JOURNAL).exists()


def test_the_journal_is_used_only_while_its_input_is_unchanged(tmp_path, tiny_hf_dir, monkeypatch):
    manifest = _corpus(tmp_path / "corpus", 6)
    cfg = _local(tmp_path, tiny_hf_dir, manifest, workers=1)
    produced: list[str] = []
    real = materialize._produce

    def produce(job):
        if len(produced) == 5:
            raise Killed
        produced.append(job[2].name)
        return real(job)

    monkeypatch.setattr(materialize, "_produce", produce)
    with pytest.raises(Killed):
        prepare_data(cfg)
    write_wav(tmp_path / "corpus" / "wav" / "u2.wav", _speech(0.5))  # u2's audio changed
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join(r for r in rows if '"u3"' not in r) + "\n")  # u3 left the corpus
    produced.clear()
    prepare_data(cfg)
    assert sorted(produced) == ["u2.wav", "u5.wav"]
    train = [json.loads(line) for line in (cfg.out_dir / "train.jsonl").read_text().splitlines()]
    assert [u["id"] for u in train] == ["u0", "u1", "u2", "u4", "u5"] and train[2]["duration"] == 0.5
    assert not (cfg.out_dir / "audio" / "train" / "u3.wav").exists()


def test_an_unreadable_file_among_many_is_one_rejection(tmp_path, tiny_hf_dir):
    manifest = _corpus(tmp_path / "corpus", 40)
    (tmp_path / "corpus" / "wav" / "u17.wav").write_bytes(b"RIFF\x00\x00 cut short")
    summary = prepare_data(_local(tmp_path, tiny_hf_dir, manifest))
    assert (summary["read"], summary["kept"], summary["rejected"]) == (40, 39, 1)
    (reject,) = [json.loads(line) for line in (tmp_path / "prepared" / "rejects.jsonl").read_text().splitlines()]
    assert reject["id"] == "u17" and reject["reason"].startswith("unreadable audio")


def test_a_killed_process_leaves_work_the_next_run_takes(tmp_path, tiny_hf_dir):
    """A real SIGKILL of the stage at 60 %: the next run produces only the items the journal does not hold."""
    manifest = _corpus(tmp_path / "corpus", 120, seconds=1.0)
    out = tmp_path / "prepared"
    code = (
        "import logging, tempfile; from pathlib import Path\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from tests.pipeline.data.test_prepare import _config\n"
        "from pipeline.data.prepare import prepare_data\n"
        "import pipeline.data.materialize as m\n"
        "real = m._produce\n"
        "def slow(job):\n"
        "    import time; time.sleep(0.02); return real(job)\n"
        "m._produce = slow\n"
        f"cfg = _config(Path(tempfile.mkdtemp()), Path({str(tiny_hf_dir)!r}), source='local', "
        f"input={str(manifest)!r}, workers=1, out_dir=Path({str(out)!r}))\n"
        "prepare_data(cfg)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    journal = partial_dir(out) / materialize.JOURNAL
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) > 72:  # header + 72 of 120 items
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = sum(1 for line in journal.read_text().splitlines()[1:] if line.endswith("}") and '"key"' in line)
    assert 72 <= done < 120
    summary_log = subprocess.run(
        [sys.executable, "-c", code.replace("m._produce = slow\n", "")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads((out / "summary.json").read_text())["kept"] == 120
    assert f"{done} of 120 utterances' audio taken from the interrupted run" in summary_log.stderr
