"""cache_teacher: correct top-k, crash-safe resume, refusal on changed inputs, verification, loader checks."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cache import build as cache_mod
from pipeline.cache.build import CacheMismatchError, CacheTeacherConfig, build_cache
from pipeline.cache.reader import CacheError, cache_info, open_cache, verify_cache
from pipeline.cli import app
from pipeline.core.errors import DwPipeError
from pipeline.data.manifest import load_manifest
from pipeline.models.forward import label_ids, targets_of, topk_of

ROOT = Path(__file__).resolve().parents[3]


def _config(teacher: Path, manifest: Path, out: Path, **kw) -> CacheTeacherConfig:
    # ~2 utterances per shard for the tiny manifest, so resume has several shards to work with.
    return replace(
        CacheTeacherConfig(
            teacher=teacher,
            manifest=manifest,
            out_dir=out,
            top_k=8,
            min_prob=0.0,  # every position keeps its top-8 (the min_prob test sets its own)
            id_encoding="rank",
            value_encoding="float16",
            shard_target_mb=0.0012,
            batch_size=2,
        ),
        **kw,
    )


def _shard_digests(folder: Path) -> dict[str, str]:
    return {s["file"]: s["sha256"] for s in json.loads((folder / "cache.json").read_text())["shards"]}


def _teacher_logits(hf_dir: Path, manifest: Path, index: int):
    """The tiny teacher's label-position logits for utterance ``index``, teacher-forced as the cache does:
    (utterance, prompt ids, label ids, logits [n_labels, vocab])."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from pipeline.data.audio import read_wav

    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    tokenizer = WhisperTokenizer.from_pretrained(hf_dir)
    extractor = WhisperFeatureExtractor.from_pretrained(hf_dir)
    utt = load_manifest(manifest)[index]
    feats = extractor([read_wav(manifest.parent / utt.audio)], sampling_rate=16_000, return_tensors="pt").input_features
    prompt, labels = targets_of(utt, tokenizer)
    with torch.no_grad():
        logits = model(input_features=feats, decoder_input_ids=torch.tensor([prompt + labels[:-1]])).logits[0]
    return utt, prompt, labels, logits[len(prompt) - 1 :]


def test_cache_holds_the_teacher_top_k(tiny_hf_dir, tiny_manifest, tmp_path):
    from transformers import WhisperTokenizer

    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    content = build_cache(cfg)
    utts = load_manifest(tiny_manifest)
    assert content["rows"] == len(utts) and len(content["shards"]) >= 3
    assert verify_cache(cfg.out_dir) == []
    cache = open_cache(cfg.out_dir, tokenizer_json=tiny_hf_dir / "tokenizer.json", manifest=tiny_manifest)

    tokenizer = WhisperTokenizer.from_pretrained(tiny_hf_dir)
    utt, prompt, labels, logits = _teacher_logits(tiny_hf_dir, tiny_manifest, 3)
    logprobs = torch.log_softmax(logits, -1)
    want_vals, want_ids = logprobs.topk(8, -1)
    got = cache.targets(utt.id)
    assert got.prompt == prompt and got.labels.tolist() == labels
    assert np.array_equal(got.topk_ids, want_ids.numpy())
    assert np.allclose(got.topk_logprobs, want_vals.numpy(), atol=2e-2)
    tail = torch.log1p(-want_vals.exp().sum(-1))
    assert np.allclose(got.tail_logprob, tail.numpy(), atol=2e-2)
    info = cache_info(cfg.out_dir)
    assert info["tokens"] == sum(len(label_ids(tokenizer, u.text)) for u in utts)
    assert (cfg.out_dir / "README.md").read_text().startswith("---")


# sqrt64 is refused below 1/64^2 (the tiny model's probabilities are ~1e-4); its codes: test_cache_format.py
@pytest.mark.parametrize(("id_encoding", "value_encoding"), [("raw", "float16"), ("delta", "q8")])
def test_min_prob_keeps_the_entries_above_it_and_moves_the_rest_to_the_tail(
    tiny_hf_dir, tiny_manifest, tmp_path, id_encoding, value_encoding
):
    utt, _, _, logits = _teacher_logits(tiny_hf_dir, tiny_manifest, 2)
    logprobs = torch.log_softmax(logits.double(), -1)
    top = logprobs.topk(8, -1).values
    # A threshold that cuts positions at different places: between the median 4th probability and the next larger
    # one of all top-8 entries, so that no entry sits within float32 rounding of it (the cache computes in float32,
    # this test in float64; a threshold equal to an entry flipped that entry on one CPU).
    probs = top.exp().flatten().sort().values
    median = top[:, 3].exp().median()
    above = probs[probs > median][0]
    min_prob = float((median * above).sqrt())
    assert min(abs(probs.log() - torch.tensor(min_prob).log())) > 1e-4
    cfg = _config(
        tiny_hf_dir,
        tiny_manifest,
        tmp_path / "cache",
        min_prob=min_prob,
        id_encoding=id_encoding,
        value_encoding=value_encoding,
    )
    build_cache(cfg)
    got = open_cache(cfg.out_dir).targets(utt.id)
    want_counts = (top.exp() >= min_prob).sum(-1).clamp(1, 8).numpy()
    assert len(set(want_counts.tolist())) > 1
    kept = np.arange(8)[None, :] < want_counts[:, None]
    assert np.array_equal(kept, np.isfinite(got.topk_logprobs))
    want_ids = logprobs.topk(8, -1).indices.numpy()
    for t, c in enumerate(want_counts):  # the same ids (after rounding, near-ties may swap places)
        assert sorted(got.topk_ids[t, :c].tolist()) == sorted(want_ids[t, :c].tolist())
    outside = torch.logsumexp(logprobs.scatter(-1, torch.from_numpy(want_ids), float("-inf")), -1)
    dropped = torch.logsumexp(top.masked_fill(torch.from_numpy(kept), float("-inf")), -1)
    tolerance = 1e-4 if value_encoding == "float16" else 0.07  # q8 tails: steps of 1/8 nat
    assert np.allclose(got.tail_logprob, torch.logaddexp(outside, dropped).numpy(), atol=tolerance, rtol=0)
    assert cache_info(cfg.out_dir)["min_prob"] == min_prob
    assert "probability >=" in (cfg.out_dir / "README.md").read_text()


def test_topk_of_min_prob_on_known_probabilities():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.04, 0.01], [0.97, 0.01, 0.01, 0.005, 0.005], [0.2] * 5])
    ids, values, tail, counts = topk_of(probs.log(), 4, 1.0, min_prob=0.1)
    assert counts.tolist() == [3, 1, 4]  # >= 0.1; at least one; at most k
    assert ids[0].tolist()[:3] == [0, 1, 2] and ids[0, 3] == 0 and values[0, 3] == -np.inf
    assert np.allclose(np.exp(tail), [0.05, 0.03, 0.2], atol=1e-6)


def test_sqrt64_is_refused_where_it_cannot_hold_the_entries(tmp_path):
    from pipeline.core.errors import DwPipeError

    cfg = _config(tmp_path, tmp_path / "m.jsonl", tmp_path / "cache", value_encoding="sqrt64", min_prob=0.0)
    with pytest.raises(DwPipeError, match="sqrt64 holds probabilities down to"):
        cfg.check()
    replace(cfg, min_prob=0.0012).check()


def test_killed_build_resumes_to_the_same_content(tiny_hf_dir, tiny_manifest, tmp_path, monkeypatch):
    reference = _config(tiny_hf_dir, tiny_manifest, tmp_path / "reference")
    build_cache(reference)

    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    real_write, calls = cache_mod._write_shard, []

    def crash_after_two(path, data):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(path.name)
        real_write(path, data)

    monkeypatch.setattr(cache_mod, "_write_shard", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_cache(cfg)
    assert sorted(p.name for p in cfg.out_dir.glob("shard-*")) == sorted(calls)
    computed = []
    real_compute = cache_mod._compute_shard
    monkeypatch.setattr(cache_mod, "_write_shard", real_write)
    monkeypatch.setattr(cache_mod, "_compute_shard", lambda *a, **k: computed.append(1) or real_compute(*a, **k))
    build_cache(cfg)
    assert len(computed) == len(_shard_digests(reference.out_dir)) - 2  # finished shards were kept
    assert _shard_digests(cfg.out_dir) == _shard_digests(reference.out_dir)


def _params(cfg: CacheTeacherConfig, folder: Path) -> Path:
    """params.yaml whose cache_teacher section is ``cfg`` (for the CLI)."""
    params = folder / "params.yaml"
    params.write_text(
        "cache_teacher:\n"
        f"  teacher: {cfg.teacher}\n  manifest: {cfg.manifest}\n  out_dir: {cfg.out_dir}\n"
        f"  top_k: {cfg.top_k}\n  min_prob: {cfg.min_prob}\n  id_encoding: {cfg.id_encoding}\n"
        f"  value_encoding: {cfg.value_encoding}\n  shard_target_mb: {cfg.shard_target_mb}\n"
        f"  batch_size: {cfg.batch_size}\n  device: cpu\n"
    )
    return params


def _recording_writes(monkeypatch) -> list[str]:
    """The names of the shards the build writes from now on."""
    real_write, written = cache_mod._write_shard, []
    monkeypatch.setattr(
        cache_mod, "_write_shard", lambda path, data: written.append(path.name) or real_write(path, data)
    )
    return written


class _DiskFillsHalfWay:
    """A shard's temporary file on a disk that fills up half way through the shard's bytes."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


def test_full_disk_in_a_shard_write_leaves_no_partial_shard_and_one_line(
    tiny_hf_dir, tiny_manifest, tmp_path, monkeypatch
):
    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    opened = []

    def open_on_a_filling_disk(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        if Path(path).name.startswith(".shard-00001.parquet.tmp-"):  # the second shard's bytes, nothing else
            opened.append(Path(path).name)
            return _DiskFillsHalfWay(handle)
        return handle

    monkeypatch.setattr(cache_mod, "open", open_on_a_filling_disk, raising=False)
    result = CliRunner().invoke(
        app, ["--log-level", "WARNING", "cache-teacher", "--params", str(_params(cfg, tmp_path))]
    )
    assert opened, "the fault never reached the shard write"
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"error: shard-00001.parquet: no space left on the device of {cfg.out_dir}; free some and run again "
        "(finished shards are kept)"
    ]
    assert json.loads((cfg.out_dir / "cache.json").read_text())["status"] == "building"  # written before the fault
    assert sorted(p.name for p in cfg.out_dir.iterdir() if "shard" in p.name) == [
        ".shard-00000.parquet.sha256",
        "shard-00000.parquet",
    ]  # the finished shard, and nothing of the one the disk cut short

    monkeypatch.undo()
    written = _recording_writes(monkeypatch)
    content = build_cache(cfg)
    assert content["status"] == "complete" and "shard-00000.parquet" not in written
    assert written[0] == "shard-00001.parquet"


def test_a_shard_without_its_sidecar_is_recomputed_alone(tiny_hf_dir, tiny_manifest, tmp_path, monkeypatch):
    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    build_cache(cfg)
    before = _shard_digests(cfg.out_dir)
    (cfg.out_dir / ".shard-00001.parquet.sha256").unlink()
    written = _recording_writes(monkeypatch)
    build_cache(cfg)
    assert written == ["shard-00001.parquet"]
    assert _shard_digests(cfg.out_dir) == before and verify_cache(cfg.out_dir) == []


@pytest.mark.parametrize(
    ("name", "left"),
    [
        ("shard-00001.parquet", ".shard-00001.parquet.tmp-"),  # the shard's bytes written, not renamed
        (".shard-00001.parquet.sha256", "..shard-00001.parquet.sha256.tmp-"),  # the shard in place, no sidecar
    ],
)
def test_a_killed_build_leaves_temp_files_the_next_run_removes(
    tiny_hf_dir, tiny_manifest, tmp_path, monkeypatch, name, left
):
    from tests.pipeline.kill_at import KILLED, run_killed

    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    child = run_killed(name, 1, "cache-teacher", "--params", str(_params(cfg, tmp_path)))
    assert child.returncode == KILLED, child.stderr[-2000:]
    assert any(p.name.startswith(left) for p in cfg.out_dir.iterdir())

    written = _recording_writes(monkeypatch)
    build_cache(cfg)
    assert written == sorted(_shard_digests(cfg.out_dir))[1:]  # shard 0 kept, shard 1 on computed again
    assert [p.name for p in cfg.out_dir.iterdir() if ".tmp-" in p.name] == []
    assert verify_cache(cfg.out_dir) == []


def test_a_manifest_with_unlabelled_rows_is_refused_in_one_line(tiny_hf_dir, tiny_manifest, tmp_path):
    """The cache teacher-forces the reference labels: a row without them is named, before the teacher loads."""
    row = json.loads(tiny_manifest.read_text().splitlines()[0]) | {"id": "pool-1", "text": "", "split": "unlabelled"}
    with tiny_manifest.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    result = CliRunner().invoke(
        app, ["--log-level", "WARNING", "cache-teacher", "--params", str(_params(cfg, tmp_path))]
    )
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"error: {tiny_manifest}: 1 row(s) without a reference text (first: pool-1, split unlabelled); "
        "cache_teacher (teacher-forced on the reference labels) needs references"
    ]
    assert not cfg.out_dir.exists()


def test_changed_inputs_are_refused_unless_forced(tiny_hf_dir, tiny_manifest, tmp_path):
    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    build_cache(cfg)
    with pytest.raises(CacheMismatchError, match="top_k: 8 -> 4"):
        build_cache(replace(cfg, top_k=4))
    with tiny_manifest.open("a") as handle:
        handle.write(tiny_manifest.read_text().splitlines()[0].replace("utt-0", "utt-extra") + "\n")
    with pytest.raises(CacheMismatchError, match="manifest_sha256"):
        build_cache(cfg)
    assert build_cache(replace(cfg, top_k=4), force=True)["identity"]["top_k"] == 4


def test_corrupt_shard_is_named_and_refused(tiny_hf_dir, tiny_manifest, tmp_path):
    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    build_cache(cfg)
    victim = sorted(cfg.out_dir.glob("shard-*.parquet"))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert verify_cache(cfg.out_dir)[0].startswith(f"{victim.name}: sha256 mismatch")
    result = CliRunner().invoke(app, ["cache", "verify", str(cfg.out_dir)])
    assert result.exit_code == 1 and victim.name in result.output
    with pytest.raises(CacheError, match=victim.name):
        open_cache(cfg.out_dir)


def test_older_format_version_is_refused(tiny_hf_dir, tiny_manifest, tmp_path):
    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    build_cache(cfg)
    path = cfg.out_dir / "cache.json"
    content = json.loads(path.read_text())
    content["identity"]["format_version"] = 1
    path.write_text(json.dumps(content))
    with pytest.raises(CacheError, match="format version 1.*--force"):
        open_cache(cfg.out_dir)


def test_loader_refuses_other_manifest_or_tokenizer(tiny_hf_dir, tiny_manifest, tmp_path, embedded_files):
    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    build_cache(cfg)
    other = tmp_path / "other.jsonl"
    other.write_text(tiny_manifest.read_text().splitlines()[0] + "\n")
    with pytest.raises(CacheError, match="another manifest"):
        open_cache(cfg.out_dir, manifest=other)
    bad_tokenizer = tmp_path / "tokenizer.json"
    bad_tokenizer.write_text(embedded_files["tokenizer"].read_text().replace('"<|de|>"', '"<|xx|>"'))
    with pytest.raises(CacheError, match="another tokenizer"):
        open_cache(cfg.out_dir, tokenizer_json=bad_tokenizer)


def test_shards_load_with_datasets_and_cli_info(tiny_hf_dir, tiny_manifest, tmp_path):
    import datasets

    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache", value_encoding="q8")
    build_cache(cfg)
    ds = datasets.load_dataset("parquet", data_files=str(cfg.out_dir / "shard-*.parquet"), split="train")
    assert len(ds) == 7 and len(ds[0]["topk_ids"]) == 8 * len(ds[0]["label_ids"])
    result = CliRunner().invoke(app, ["cache", "info", str(cfg.out_dir), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["value_encoding"] == "q8"


@pytest.mark.parametrize(
    "ids, values, sparse", [("rank", "q8", False), ("raw", "float16", False), ("delta", "q8", True)]
)
def test_decoded_columns_are_the_token_ids_and_log_probs_training_reads(
    tiny_hf_dir, tiny_manifest, tmp_path, ids, values, sparse
):
    """One call gives plain columns, whatever the encodings; the Parquet export reads the same with datasets alone.
    With min_prob, each position's list holds the entries it kept (no padding)."""
    import datasets

    from pipeline.cache.reader import load_decoded

    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache", id_encoding=ids, value_encoding=values)
    if sparse:  # a threshold that cuts positions at different places
        build_cache(replace(cfg, out_dir=tmp_path / "full", id_encoding="rank", value_encoding="float16"))
        fourth = np.concatenate([s.padded().topk_logprobs[:, 3] for s in open_cache(tmp_path / "full").shards])
        cfg = replace(cfg, min_prob=float(np.exp(np.median(fourth))))
    build_cache(cfg)
    cache = open_cache(cfg.out_dir)
    ds = load_decoded(cfg.out_dir)
    assert len(ds) == len(cache) == 7
    lengths = set()
    for row in ds:
        t = cache.targets(row["id"])
        kept = np.isfinite(t.topk_logprobs)
        assert row["prompt_ids"] == t.prompt and row["label_ids"] == t.labels.tolist()
        assert row["topk_ids"] == [i[m].tolist() for i, m in zip(t.topk_ids, kept)]  # token ids, not ranks
        got = [np.asarray(v, dtype=np.float32) for v in row["topk_logprobs"]]
        assert all(np.array_equal(g, v[m]) for g, v, m in zip(got, t.topk_logprobs, kept))
        assert np.array_equal(np.asarray(row["tail_logprob"], dtype=np.float32), t.tail_logprob)
        lengths |= {len(position) for position in row["topk_ids"]}
        assert row["topk_ids"][0][0] < 51865 and row["topk_logprobs"][0][0] <= 0  # the best entry comes first
    if sparse:
        assert len(lengths) > 1 and max(lengths) <= 8
    else:
        assert lengths == {8}

    out = tmp_path / "decoded"
    result = CliRunner().invoke(app, ["cache", "decode", str(cfg.out_dir), str(out)])
    assert result.exit_code == 0, result.output
    plain = datasets.load_dataset("parquet", data_files=str(out / "decoded.parquet"), split="train")
    assert plain.to_list() == ds.to_list()
    card = (cfg.out_dir / "README.md").read_text()
    assert "load_decoded" in card and "dw-pipe cache decode" in card


def test_two_ranks_under_torchrun_equal_one_process(tiny_hf_dir, tiny_manifest, tmp_path):
    single = _config(tiny_hf_dir, tiny_manifest, tmp_path / "single")
    build_cache(single)
    params = _params(replace(single, out_dir=tmp_path / "ranks"), tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # rendezvous on a free port
        "--nproc_per_node",
        "2",
        "-m",
        "pipeline.cli",
        "--no-progress",
        "cache-teacher",
        "--params",
        str(params),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _shard_digests(tmp_path / "ranks") == _shard_digests(single.out_dir)


def test_rerun_recomputes_a_corrupted_shard(tiny_hf_dir, tiny_manifest, tmp_path, caplog):
    cfg = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    build_cache(cfg)
    before = _shard_digests(cfg.out_dir)
    victim = sorted(cfg.out_dir.glob("shard-*.parquet"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0xFF
    victim.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        build_cache(cfg)
    assert f"{victim.name} fails its checksum" in caplog.text
    assert _shard_digests(cfg.out_dir) == before and verify_cache(cfg.out_dir) == []


def test_a_timestamped_window_is_cached_with_its_timestamp_tokens_beside_plain_rows(tiny_hf_dir, tmp_path):
    """A window (an utterance with segments) is teacher-forced on Whisper's timestamped target, its prompt without
    <|notimestamps|>; each row keeps its own label positions."""
    from transformers import WhisperTokenizer

    from pipeline.data.recordings import TimestampWindows, build_windows
    from tests.conftest import write_tiny_manifest

    manifest = write_tiny_manifest(tmp_path / "prepared")
    utts = load_manifest(manifest)
    windows = build_windows(utts, manifest.parent, TimestampWindows(("pl",), share=0.25, gap=(0.3, 0.3)), seed=1)
    assert len(windows) == 1 and len(windows[0].segments) >= 2
    manifest.write_text("".join(u.to_json() + "\n" for u in [windows[0], *utts]), encoding="utf-8")
    tokenizer = WhisperTokenizer.from_pretrained(tiny_hf_dir)
    cfg = _config(tiny_hf_dir, manifest, tmp_path / "cache", shard_target_mb=1.0, batch_size=8)
    build_cache(cfg)
    cache = open_cache(cfg.out_dir)
    window = windows[0]
    got = cache.targets(window.id)
    assert tokenizer.convert_tokens_to_ids("<|notimestamps|>") not in got.prompt and len(got.prompt) == 3
    first = window.segments[0]
    assert got.labels[0] == tokenizer.convert_tokens_to_ids(f"<|{round(first['start'] / 0.02) * 0.02:.2f}|>")
    text = tokenizer.decode(got.labels.tolist(), decode_with_timestamps=True)
    assert text.count("<|") == 2 * len(window.segments) + 1  # a start and an end per segment, then end-of-text
    for index in (0, 3):  # the window and a plain row
        utt, prompt, labels, logits = _teacher_logits(tiny_hf_dir, manifest, index)
        want_ids = torch.log_softmax(logits, -1).topk(8, -1)[1]
        row = cache.targets(utt.id)
        assert row.prompt == prompt and row.labels.tolist() == labels
        assert np.array_equal(row.topk_ids, want_ids.numpy()), utt.id


def test_windows_are_batched_after_the_plain_rows_whose_batches_stay_as_they_were(tiny_manifest):
    """Adding timestamped windows must not move a plain utterance to another teacher batch (its padding, and so its
    teacher outputs to the last bit, would change, and with them every student trained on the cache)."""
    from types import SimpleNamespace

    from pipeline.models.forward import Encoded, length_batches

    utts = load_manifest(tiny_manifest)
    plain = [Encoded(u, [1, 2, 3, 4], list(range(3 + i % 4))) for i, u in enumerate(utts)]
    window = SimpleNamespace(id="w", segments=({"start": 0.0, "end": 1.0, "text": "x"},))
    mixed = [Encoded(window, [1, 2, 3], list(range(40))), *plain]
    alone = [[plain[i].utt.id for i in b] for b in length_batches(plain, 2)]
    together = [[mixed[i].utt.id for i in b] for b in length_batches(mixed, 2)]
    assert together[: len(alone)] == alone and together[-1] == ["w"]


def test_shard_max_rows_caps_a_shard_whatever_the_size_target(tiny_hf_dir, tiny_manifest, tmp_path):
    """At the paper's scale the size target alone made one shard of 224k utterances (the unit a kill loses)."""
    n = len(load_manifest(tiny_manifest))
    whole = _config(tiny_hf_dir, tiny_manifest, tmp_path / "whole", shard_target_mb=1.0)
    capped = replace(whole, out_dir=tmp_path / "capped", shard_max_rows=2)
    assert len(build_cache(whole)["shards"]) == 1
    content = build_cache(capped)
    assert [s["rows"] for s in content["shards"]] == [2] * (n // 2) + [n % 2] * (n % 2)
    assert content["identity"]["rows_per_shard"] == 2
    a, b = open_cache(whole.out_dir), open_cache(capped.out_dir)
    u = load_manifest(tiny_manifest)[-1].id
    assert np.array_equal(a.targets(u).topk_ids, b.targets(u).topk_ids)
    with pytest.raises(DwPipeError, match="shard_max_rows -1"):
        replace(whole, shard_max_rows=-1).check()
