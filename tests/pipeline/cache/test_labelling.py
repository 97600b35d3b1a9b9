"""cache_teacher with labels: teacher: rows without a reference are labelled by the teacher's greedy transcript,
cached teacher-forced along it with Whisper's quality signals; training refuses such a cache in one line."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cache.build import build_cache
from pipeline.cache.reader import CacheError, cache_info, decoded_table, open_cache, verify_cache
from pipeline.cli import app
from pipeline.core.errors import DwPipeError
from pipeline.data.manifest import load_manifest
from tests.pipeline.cache.test_build import _config

CAP = 6


def _pool(manifest: Path, rows: tuple[int, ...] = (0, 3, 5)) -> Path:
    """An unlabelled manifest beside ``manifest``: the audio of ``rows``, new ids, no text."""
    utts = load_manifest(manifest)
    lines = []
    for i in rows:
        record = json.loads(utts[i].to_json()) | {"id": f"pool-{i}", "text": "", "split": "unlabelled"}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    path = manifest.with_name("unlabelled.jsonl")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _teacher_cfg(hf_dir: Path, manifest: Path, out: Path, **kw):
    cfg = _config(hf_dir, manifest, out, labels="teacher", unlabelled=_pool(manifest), label_max_new_tokens=CAP)
    return replace(cfg, **kw)


def _independent(hf_dir: Path, utt, root: Path) -> dict:
    """What the teacher gives ``utt`` computed apart from the cache code: generate from the log-mels, then a forward
    pass along prompt + transcript."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from pipeline.data.audio import read_wav

    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    tokenizer = WhisperTokenizer.from_pretrained(hf_dir)
    extractor = WhisperFeatureExtractor.from_pretrained(hf_dir)
    feats = extractor([read_wav(root / utt.audio)], sampling_rate=16_000, return_tensors="pt").input_features
    prompt = tokenizer.convert_tokens_to_ids(
        ["<|startoftranscript|>", f"<|{utt.language}|>", "<|transcribe|>", "<|notimestamps|>"]
    )
    with torch.no_grad():
        seq = model.generate(
            feats, decoder_input_ids=torch.tensor([prompt]), language=utt.language, task="transcribe",
            do_sample=False, num_beams=1, max_new_tokens=CAP,
        )[0].tolist()  # fmt: skip
        seq = seq[len(prompt) :] if seq[: len(prompt)] == prompt else seq  # with or without the prompt
        eos = tokenizer.eos_token_id
        text = seq[: seq.index(eos)] if eos in seq else seq  # generate drops the end-of-text of the longest row
        labels = text + ([eos] if len(text) < CAP else [])
        logits = model(input_features=feats, decoder_input_ids=torch.tensor([prompt + labels[:-1]])).logits[0]
    logprobs = torch.log_softmax(logits.float(), -1)
    at = logprobs[len(prompt) - 1 :]
    decoded = tokenizer.decode(text, skip_special_tokens=True).encode()
    return {
        "labels": labels,
        "top1": at.argmax(-1).tolist(),
        "avg_logprob": float(at.gather(-1, torch.tensor(labels)[:, None]).mean()),
        "compression_ratio": len(decoded) / len(zlib.compress(decoded)) if decoded else 0.0,
        "no_speech_prob": float(logprobs[0].exp()[tokenizer.convert_tokens_to_ids("<|nospeech|>")]),
        "hit_cap": len(text) >= CAP,
    }


def test_unlabelled_rows_get_the_teacher_s_transcript_its_distributions_and_signals(
    tiny_hf_dir, tiny_manifest, tmp_path
):
    reference = _config(tiny_hf_dir, tiny_manifest, tmp_path / "reference")
    build_cache(reference)
    cfg = _teacher_cfg(tiny_hf_dir, tiny_manifest, tmp_path / "cache", value_encoding="float16", min_prob=0.0)
    content = build_cache(cfg)
    assert verify_cache(cfg.out_dir) == []
    ident = content["identity"]
    assert (ident["format_version"], ident["labels"], ident["unlabelled"]) == (4, "teacher", "unlabelled.jsonl")
    assert ident["label_decoding"] == {"method": "greedy", "temperature": 0.0, "max_new_tokens": CAP}
    assert content["labels"]["reference"] == 7 and content["labels"]["teacher"] == 3
    assert cache_info(cfg.out_dir)["labels"] == content["labels"]
    shown = CliRunner().invoke(app, ["cache", "info", str(cfg.out_dir)]).output.splitlines()
    counts = content["labels"]
    assert (
        f"labels                 reference 7, teacher 3, teacher_hit_cap {counts['teacher_hit_cap']}, "
        f"teacher_empty {counts['teacher_empty']}" in shown
    )
    assert "3 by the teacher" in (cfg.out_dir / "README.md").read_text()

    decoded = {r["id"]: r for r in decoded_table(cfg.out_dir).to_pylist()}
    assert decoded["pool-3"]["label_source"] == "teacher" and decoded["utt-3"]["label_source"] == "reference"
    assert decoded["utt-3"]["avg_logprob"] is None and decoded["pool-3"]["avg_logprob"] < 0

    cache = open_cache(cfg.out_dir, teacher_labels=True)
    rows = {r["id"]: r for f in sorted(cfg.out_dir.glob("shard-*.parquet")) for r in pq.read_table(f).to_pylist()}
    pool = load_manifest(cfg.unlabelled)
    for utt in pool:
        want = _independent(tiny_hf_dir, utt, cfg.unlabelled.parent)
        got = cache.targets(utt.id)
        assert got.labels.tolist() == want["labels"], utt.id
        assert got.topk_ids[:, 0].tolist() == want["top1"], utt.id
        row = rows[utt.id]
        assert row["label_source"] == "teacher" and row["hit_cap"] == want["hit_cap"]
        for key in ("avg_logprob", "compression_ratio", "no_speech_prob"):
            assert row[key] == pytest.approx(want[key], abs=1e-4), (utt.id, key)
    assert content["labels"]["teacher_hit_cap"] == sum(
        _independent(tiny_hf_dir, u, cfg.unlabelled.parent)["hit_cap"] for u in pool
    )

    # the reference rows are what a cache of reference labels alone holds for them
    plain = open_cache(reference.out_dir)
    for utt in load_manifest(tiny_manifest):
        a, b = plain.targets(utt.id), open_cache(cfg.out_dir, teacher_labels=True).targets(utt.id)
        assert a.labels.tolist() == b.labels.tolist() and np.array_equal(a.topk_ids, b.topk_ids), utt.id
    assert {r["label_source"] for uid, r in rows.items() if uid.startswith("utt-")} == {"reference"}
    assert "label_source" not in pq.read_schema(sorted(reference.out_dir.glob("shard-*.parquet"))[0]).names
    assert json.loads((reference.out_dir / "cache.json").read_text())["identity"]["format_version"] == 3


def test_the_encoder_runs_once_an_utterance_and_training_refuses_the_cache_in_one_line(
    tiny_hf_dir, tiny_manifest, tmp_path, monkeypatch
):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    encoded, real_forward = [], WhisperEncoder.forward

    def counting(self, input_features=None, *args, **kwargs):
        encoded.append(input_features.shape[0])
        return real_forward(self, input_features, *args, **kwargs)

    monkeypatch.setattr(WhisperEncoder, "forward", counting)
    cfg = _teacher_cfg(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    build_cache(cfg)
    assert sum(encoded) == 7 + 3  # each reference row once, each unlabelled row once for its decode and forced pass
    with pytest.raises(CacheError) as refused:
        open_cache(cfg.out_dir)
    assert str(refused.value) == (
        f"cache {cfg.out_dir} holds 3 rows labelled by the teacher (cache_teacher.labels: teacher); set "
        "train_student teacher_labels (with unlabelled) to train on them, or build the cache with labels: reference"
    )


def test_teacher_labels_settings_and_inputs_are_checked(tiny_hf_dir, tiny_manifest, tmp_path):
    base = _config(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    pool = _pool(tiny_manifest)
    cases = {
        "labels teacher needs unlabelled": replace(base, labels="teacher"),
        "unlabelled is read only with labels: teacher": replace(base, unlabelled=pool),
        "labels 'mixed': give reference or teacher": replace(base, labels="mixed"),
        r"label_max_new_tokens 445 outside 1\.\.444": replace(
            base, labels="teacher", unlabelled=pool, label_max_new_tokens=445
        ),
    }
    for message, cfg in cases.items():
        with pytest.raises(DwPipeError, match=message):
            build_cache(cfg)
    text = pool.read_text()
    pool.write_text(text.replace('"pool-0"', '"utt-1"'))
    with pytest.raises(DwPipeError, match=r"row utt-1 is also in .*train.jsonl; ids must be unique"):
        build_cache(replace(base, labels="teacher", unlabelled=pool))
    pool.write_text(text.replace('"split": "unlabelled"', '"split": "train"', 1))
    with pytest.raises(DwPipeError, match=r"row pool-0 is in split train; the teacher labels unlabelled rows"):
        build_cache(replace(base, labels="teacher", unlabelled=pool))


def test_a_transcript_that_ends_keeps_its_end_of_text_and_an_empty_one_is_counted(
    tiny_hf_dir, tiny_manifest, tmp_path, monkeypatch
):
    """The tiny random teacher never stops before the cap; here its transcripts end after one token, as
    transformers' Whisper generate returns them: without their end-of-text, the shorter rows padded with it. In a
    batch of two the first row is empty. The longest row (and a batch of one) holds no end-of-text at all, yet
    ended: its labels get one, and the card counts no cap."""
    from transformers import WhisperForConditionalGeneration

    real_generate = WhisperForConditionalGeneration.generate

    def ending_early(self, *args, **kwargs):
        out = real_generate(self, *args, **kwargs)
        prompt = kwargs["decoder_input_ids"][0].tolist()
        skip = len(prompt) if out[0, : len(prompt)].tolist() == prompt else 0
        out = out[:, : skip + 1].clone()  # one token a row, no end-of-text
        if out.shape[0] > 1:
            out[0, skip:] = self.generation_config.eos_token_id  # padding only: an empty transcript
        return out

    monkeypatch.setattr(WhisperForConditionalGeneration, "generate", ending_early)
    cfg = _teacher_cfg(tiny_hf_dir, tiny_manifest, tmp_path / "cache")
    content = build_cache(cfg)
    assert content["labels"] | {} == {"reference": 7, "teacher": 3, "teacher_hit_cap": 0, "teacher_empty": 1}
    cache = open_cache(cfg.out_dir, teacher_labels=True)
    eos = 50257
    # batches by language: cs [pool-3, pool-5], pl [pool-0]
    assert [len(cache.targets(u).labels) for u in ("pool-3", "pool-5", "pool-0")] == [1, 2, 2]
    assert {int(cache.targets(u).labels[-1]) for u in ("pool-3", "pool-5", "pool-0")} == {eos}
