"""The encoder memo: outputs kept on disk are what the encoder computes again, are found only by the same encoder,
are shared by cache_teacher and train_student, and let CTranslate2 float32 models decode from the transformers
outputs only when their own encoder reproduces them."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from pipeline.cache.build import CacheTeacherConfig, build_cache
from pipeline.core import machine
from pipeline.core.encoder_memo import key_digest
from pipeline.core.machine import compute_identity
from pipeline.data.manifest import Utterance, load_manifest
from pipeline.evaluate import shared_encodings
from pipeline.evaluate.benchmark import BenchmarkConfig, run_benchmark
from pipeline.evaluate.shared_encodings import SharedEncodings
from pipeline.models.decode import EncoderStore
from pipeline.models.forward import features_for
from pipeline.student.config import TrainConfig
from pipeline.student.model import StudentSpec, build_student
from tests.conftest import write_bench_inputs

CPU = torch.device("cpu")


def _store(hf_dir: Path, manifest: Path, memo: Path | None, model=None) -> EncoderStore:
    model = model if model is not None else build_student(StudentSpec(hf_dir, None, (0,)))
    extractor = WhisperFeatureExtractor.from_pretrained(hf_dir)
    return EncoderStore(model, extractor, manifest.parent, True, CPU, dtype=torch.float32, disk=memo)


def test_stored_outputs_are_what_the_encoder_computes_again(tiny_hf_dir, tiny_manifest, tmp_path):
    utts = load_manifest(tiny_manifest)
    first = _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo")
    first.fill(utts, batch_size=3)
    assert first.disk_memo().misses == len(utts) and len(list(first.disk_memo().dir.glob("*.npy"))) == len(utts)

    again = _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo")  # another process would start like this
    again.fill(utts, batch_size=3)
    assert again.disk_memo().hits == len(utts) and again.disk_memo().misses == 0
    extractor = WhisperFeatureExtractor.from_pretrained(tiny_hf_dir)
    with torch.no_grad():  # one at a time: the batch an output was computed in does not change it
        alone = [
            again.model.get_encoder()(features_for(extractor, [u], tiny_manifest.parent)).last_hidden_state[0]
            for u in utts
        ]
    for u, expected in zip(utts, alone):
        assert torch.equal(again.memo[u.id], first.memo[u.id]) and torch.equal(again.memo[u.id], expected), u.id


def test_another_encoder_finds_nothing(tiny_hf_dir, tiny_manifest, tmp_path):
    utts = load_manifest(tiny_manifest)
    _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo").fill(utts)
    changed = build_student(StudentSpec(tiny_hf_dir, None, (0,)))
    with torch.no_grad():
        changed.get_encoder().layers[0].fc1.weight[0, 0] += 0.5
    other = _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo", model=changed)
    other.fill(utts)
    assert other.disk_memo().hits == 0 and other.disk_memo().misses == len(utts)
    assert len(list((tmp_path / "memo").iterdir())) == 2  # one folder per encoder


def test_an_unreadable_entry_is_computed_again(tiny_hf_dir, tiny_manifest, tmp_path, caplog):
    utts = load_manifest(tiny_manifest)
    first = _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo")
    first.fill(utts)
    broken = sorted(first.disk_memo().dir.glob("*.npy"))[0]
    broken.write_bytes(broken.read_bytes()[:100])  # a file cut short
    again = _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo")
    with caplog.at_level(logging.WARNING, logger="pipeline.core.encoder_memo"):
        again.fill(utts)
    assert again.disk_memo().hits == len(utts) - 1 and "unreadable" in caplog.text
    for u in utts:
        assert torch.equal(again.memo[u.id], first.memo[u.id]), u.id
    assert np.load(broken).shape == tuple(first.memo[utts[0].id].shape)  # rewritten whole
    assert not list(first.disk_memo().dir.glob(".tmp-*"))


ZEN1 = """processor\t: 0
cpu family\t: 23
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 2
flags\t\t: fpu sse4_1 sse4_2 avx f16c avx2 fma
"""


def test_another_machine_or_torch_version_finds_nothing(tiny_hf_dir, tiny_manifest, tmp_path, monkeypatch):
    """A data/ folder shared by two machines, or kept across a torch upgrade: each finds only its own outputs."""
    utts = load_manifest(tiny_manifest)
    here = _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo")
    here.fill(utts)
    assert here.disk_memo().record["machine"] == json.loads(json.dumps(compute_identity(CPU)))
    with monkeypatch.context() as patch:
        patch.setattr(torch, "__version__", "9.9.9")  # the same machine after a torch upgrade
        upgraded = _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo")
        upgraded.fill(utts)
    assert upgraded.disk_memo().hits == 0 and upgraded.disk_memo().misses == len(utts)
    (tmp_path / "cpuinfo").write_text(ZEN1)
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "cpuinfo")  # another CPU, the same libraries
    other = _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo")
    other.fill(utts)
    assert other.disk_memo().hits == 0 and other.disk_memo().misses == len(utts)
    assert len({here.disk_memo().dir, upgraded.disk_memo().dir, other.disk_memo().dir}) == 3
    for u in utts:  # each computed its own, equal here: the key parts them, the floats are the same CPU's
        assert torch.equal(other.memo[u.id], here.memo[u.id]), u.id


def test_an_entry_from_before_the_machine_was_keyed_misses(tiny_hf_dir, tiny_manifest, tmp_path):
    """A memo written before keys named the machine and torch version: its folder is never found again."""
    utts = load_manifest(tiny_manifest)
    store = _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo")
    memo = store.disk_memo()
    old = {k: memo.record[k] for k in ("encoder_sha256", "setting", "feature_extractor")}
    folder = tmp_path / "memo" / key_digest(old)
    folder.mkdir(parents=True)
    (folder / "memo.json").write_text(json.dumps(old))
    for u in utts:  # another machine's (here: wrong) floats under the old key
        np.save(folder / f"{hashlib.sha256((tiny_manifest.parent / u.audio).read_bytes()).hexdigest()}.npy",
                np.zeros((4, 8), np.float32))  # fmt: skip
    store.fill(utts)
    assert memo.hits == 0 and memo.misses == len(utts) and memo.dir != folder
    assert all(store.memo[u.id].shape[0] > 4 for u in utts)


def test_the_teacher_cache_is_the_same_with_the_memo_and_training_reads_what_it_stored(
    tiny_hf_dir, tiny_manifest, tmp_path
):
    plain = CacheTeacherConfig(
        teacher=tiny_hf_dir, manifest=tiny_manifest, out_dir=tmp_path / "plain", top_k=8, value_encoding="float16"
    )
    build_cache(plain)
    memo = replace(plain, out_dir=tmp_path / "memo-cache", encoder_memo=tmp_path / "memo")
    build_cache(memo)
    shards = [json.loads((c.out_dir / "cache.json").read_text())["shards"] for c in (plain, memo)]
    assert [s["sha256"] for s in shards[0]] == [s["sha256"] for s in shards[1]]
    # The student keeps the teacher's encoder: its store finds every training utterance.
    student = _store(tiny_hf_dir, tiny_manifest, tmp_path / "memo")
    student.fill(load_manifest(tiny_manifest))
    assert student.disk_memo().misses == 0 and student.disk_memo().hits == len(load_manifest(tiny_manifest))


def test_the_memo_location_is_no_training_setting(tiny_hf_dir, tmp_path):
    cfg = TrainConfig("clsr", ("pl",), tiny_hf_dir, tmp_path, tmp_path / "t.jsonl", tmp_path / "d.jsonl", tmp_path)
    assert replace(cfg, encoder_memo=tmp_path / "memo").settings_record() == cfg.settings_record()
    assert "encoder_memo" not in cfg.settings_record() and cfg.settings_record()["lr"] == cfg.lr


@pytest.fixture(scope="module")
def bench_inputs(tmp_path_factory, tiny_hf_dir) -> dict[str, Path]:
    return write_bench_inputs(tmp_path_factory.mktemp("memo-bench"), tiny_hf_dir, seed=3)


def _bench(hf_dir: Path, inputs: dict[str, Path], out: Path, memo: Path | None) -> dict[tuple, dict]:
    cfg = BenchmarkConfig(
        datasets={"test": str(inputs["test"])},
        out_dir=out,
        teacher=str(hf_dir),
        untrained=f"{hf_dir}@0,1",
        ct2_dir=str(inputs["ct2"]),
        hf_teacher=False,
        max_new_tokens=6,
        bootstrap=20,
        encoder_memo=memo,
    )
    run_benchmark(cfg)
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    hyps = [json.loads(line) for line in (out / "hypotheses.jsonl").read_text().splitlines()]
    return {
        "rows": {(r["model"], r["compute_type"], r["language"]): r for r in rows if r["group"] == "all"},
        "hyps": {(h["model"], h["compute_type"], h["id"]): h["hyp"] for h in hyps},
    }


def test_ct2_float32_decodes_from_the_transformers_outputs_only_when_its_encoder_reproduces_them(
    tiny_hf_dir, bench_inputs, tmp_path, monkeypatch, caplog
):
    adopted = _bench(tiny_hf_dir, bench_inputs, tmp_path / "adopted", tmp_path / "memo")
    for (model, ctype, _), row in adopted["rows"].items():
        if model == "ct2:teacher" and ctype == "float32":
            assert row["encoder_source"].startswith("transformers float32 encoder"), row
            assert row["decode_seconds"] > 0  # charged the CTranslate2 encoder it did not run
        else:
            assert row["encoder_source"] is None, row  # int8 encodes for itself; PyTorch rows are transformers'

    monkeypatch.setattr(shared_encodings, "SAME_ENCODER_TOLERANCE", -1.0)  # no encoder reproduces anything
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate.shared_encodings"):
        own = _bench(tiny_hf_dir, bench_inputs, tmp_path / "own", tmp_path / "memo")
    assert "differs from the transformers one" in caplog.text
    for (model, ctype, _), row in own["rows"].items():
        if model.startswith("ct2:") and ctype == "int8":  # CTranslate2's own int8 outputs, kept by the first run
            assert row["encoder_source"].startswith("encoder memo"), row
        else:
            assert row["encoder_source"] is None, row
    # The teacher, first of its encoder, re-encoded one utterance (the check) and read every other one.
    teacher_int8 = [r for (m, c, _), r in own["rows"].items() if (m, c) == ("ct2:teacher", "int8")]
    assert sum(r["n_utterances"] - r["encoder_reused"] for r in teacher_int8) == 1
    # The hypotheses do not depend on which encoder computed the (matching) outputs.
    assert adopted["hyps"] == own["hyps"]


class _FakeCT2:
    def __init__(self, offset: float) -> None:
        self.offset = offset

    def encode(self, view) -> np.ndarray:
        time.sleep(0.06)  # 20 ms an utterance for the batches of 3 below
        return np.asarray(view)[:, :2, :3] + self.offset


def _utts(n: int) -> list[Utterance]:
    return [Utterance(f"u{i}", f"u{i}.wav", "x", "pl", 1.0, "test", "s") for i in range(n)]


def test_shared_encodings_charge_the_measured_encoder_for_adopted_outputs(tmp_path):
    rng = np.random.default_rng(0)
    features = {u.id: rng.standard_normal((4, 5)).astype(np.float32) for u in _utts(6)}
    reference = {i: f[:2, :3] for i, f in features.items()}
    fetched = []

    def outputs(utts, root):
        fetched.append([u.id for u in utts])
        return np.stack([reference[u.id] for u in utts])

    def feats(utts):
        return np.stack([features[u.id] for u in utts])

    shared = SharedEncodings()
    shared.use(("fp", "float32"), outputs)
    first, _, _ = shared.batch(_FakeCT2(1e-6), _utts(6)[:3], tmp_path, feats)
    assert shared.per_utterance is not None and shared.source.startswith("transformers float32 encoder")
    rest, charged, reused = shared.batch(_FakeCT2(1e-6), _utts(6)[3:], tmp_path, feats)
    np.testing.assert_array_equal(rest, np.stack([reference[f"u{i}"] for i in range(3, 6)]))
    assert reused == [] and charged == pytest.approx(3 * shared.per_utterance, abs=0.01) and charged > 0.03
    assert fetched == [["u0", "u1", "u2"], ["u3", "u4", "u5"]]

    other = SharedEncodings()
    other.use(("fp", "float32"), outputs)
    mine, _, _ = other.batch(_FakeCT2(0.5), _utts(6)[:3], tmp_path, feats)  # far from the reference
    assert other.per_utterance is None and other.reference is None and other.source == ""
    np.testing.assert_allclose(mine, first + 0.5, atol=1e-5)


class _CountingCT2(_FakeCT2):
    def __init__(self, offset: float) -> None:
        super().__init__(offset)
        self.encoded = 0

    def encode(self, view) -> np.ndarray:
        self.encoded += np.asarray(view).shape[0]
        return super().encode(view)


def _disk_memo(tmp_path: Path):
    from pipeline.evaluate.shared_encodings import ct2_encoder_memo

    extractor = WhisperFeatureExtractor(feature_size=80)
    return ct2_encoder_memo(tmp_path / "memo", ("fp", "int8_float32"), extractor, {"env": {}, "threads": 0})


def test_ctranslate2_outputs_kept_on_disk_serve_a_later_run_after_one_bitwise_check(tmp_path, caplog):
    rng = np.random.default_rng(0)
    utts = _utts(6)
    for u in utts:
        (tmp_path / u.audio).write_bytes(u.id.encode())  # the memo keys a file by its bytes
    features = {u.id: rng.standard_normal((4, 5)).astype(np.float32) for u in utts}

    def feats(chunk):
        return np.stack([features[u.id] for u in chunk])

    first_run, model = SharedEncodings(), _CountingCT2(0.0)
    first_run.use(("fp", "int8_float32"), None, _disk_memo(tmp_path))
    computed, _, reused = first_run.batch(model, utts[:3], tmp_path, feats)
    assert model.encoded == 3 and reused == [] and first_run.source == ""
    assert len(list(first_run.disk.dir.glob("*.npy"))) == 3

    # A later run (another process: nothing in memory) re-encodes one utterance, then reads the rest.
    later, model = SharedEncodings(), _CountingCT2(0.0)
    later.use(("fp", "int8_float32"), None, _disk_memo(tmp_path))
    again, charged, reused = later.batch(model, utts[:3], tmp_path, feats)
    np.testing.assert_array_equal(again, computed)
    assert model.encoded == 1 and reused == ["u1", "u2"] and later.source.startswith("encoder memo")
    assert charged == pytest.approx(2 * later.per_utterance, abs=0.01) and charged > 0.02
    # Utterances the memo lacks are encoded and kept.
    _, _, reused = later.batch(model, utts[3:], tmp_path, feats)
    assert model.encoded == 4 and reused == [] and len(list(later.disk.dir.glob("*.npy"))) == 6

    # Outputs that differ from the kept ones (another build of the encoder under the same key) turn the memo off.
    other, model = SharedEncodings(), _CountingCT2(0.25)
    other.use(("fp", "int8_float32"), None, _disk_memo(tmp_path))
    with caplog.at_level(logging.WARNING):
        mine, charged, reused = other.batch(model, utts[:3], tmp_path, feats)
    assert "differs from this run's" in caplog.text and other.disk is None
    assert model.encoded == 3 and reused == [] and charged == pytest.approx(0.0, abs=0.01)  # less the read
    np.testing.assert_allclose(mine, computed + 0.25, atol=1e-6)


def test_ctranslate2_memo_keys_name_the_version_setting_and_machine(tmp_path, monkeypatch):
    from pipeline.evaluate.shared_encodings import ct2_encoder_memo

    extractor = WhisperFeatureExtractor(feature_size=80)

    def key(setting, compute="int8_float32"):
        return ct2_encoder_memo(tmp_path, ("fp", compute), extractor, setting).dir.name

    plain = key({"env": {}, "threads": 0})
    assert plain != key({"env": {"CT2_FORCE_CPU_ISA": "AVX2"}, "threads": 0})
    assert plain != key({"env": {}, "threads": 2})
    assert plain != key({"env": {}, "threads": 0}, "float32")
    import ctranslate2

    monkeypatch.setattr(ctranslate2, "__version__", "0.0.1")
    assert plain != key({"env": {}, "threads": 0})
    monkeypatch.undo()
    monkeypatch.setattr(machine, "this_cpu", lambda: {"cpu": "another"})
    assert plain != key({"env": {}, "threads": 0})
