"""train_student.teacher_labels: a student trains on reference rows and on the teacher-labelled rows the filters
keep, each filtered row recorded with its reason; the mix is part of what the student records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cache.build import CacheTeacherConfig, build_cache
from pipeline.core.errors import DwPipeError
from pipeline.data.manifest import load_manifest
from pipeline.student.config import TrainConfig
from pipeline.student.inputs import load_training_data, training_inputs
from pipeline.student.losses import cross_entropy, weighted_cross_entropy
from pipeline.student.train import train_student
from tests.conftest import TINY_TEXTS, write_tiny_manifest

POOL = (0, 2, 3, 5, 6)  # the pl and cs rows of the tiny texts: pl 0, 2, 6; cs 3, 5
RELAXED = {"min_avg_logprob": -100.0, "max_compression_ratio": 100.0}  # a random teacher is never sure


def _ending_early(real_generate):
    """The tiny random teacher never stops before the cap: here row r of each batch stops after r tokens, except
    the third, which runs to the cap."""

    def generate(self, *args, **kwargs):
        out = real_generate(self, *args, **kwargs).clone()
        prompt = kwargs["decoder_input_ids"][0].tolist()
        skip = len(prompt) if out[0, : len(prompt)].tolist() == prompt else 0
        for row in range(min(out.shape[0], 2)):
            out[row, skip + row :] = self.generation_config.eos_token_id
        return out

    return generate


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_hf_dir) -> dict[str, Path]:
    """Train and dev manifests, an unlabelled pool in a folder of its own (pool-5 has a weak reference), and a
    cache of both: batches pl [0, 2, 6] and cs [3, 5] give pool-0 and pool-3 empty transcripts, pool-2 and pool-5
    one token, pool-6 the token cap."""
    from transformers import WhisperForConditionalGeneration

    root = tmp_path_factory.mktemp("labelled")
    train = write_tiny_manifest(root, "train.jsonl", seed=0)
    dev = write_tiny_manifest(root, "dev.jsonl", seed=1)
    source = load_manifest(write_tiny_manifest(root / "pool", "source.jsonl", seed=2))
    rows = []
    for i in POOL:
        weak = TINY_TEXTS[i][1] if i == 5 else ""
        rows.append(replace(source[i], id=f"pool-{i}", text=weak, split="unlabelled").to_json() + "\n")
    pool = root / "pool" / "unlabelled.jsonl"
    pool.write_text("".join(rows), encoding="utf-8")
    cache = root / "cache"
    cfg = CacheTeacherConfig(
        teacher=tiny_hf_dir, manifest=train, out_dir=cache, top_k=8, batch_size=4, labels="teacher",
        unlabelled=pool, label_max_new_tokens=6,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            WhisperForConditionalGeneration, "generate", _ending_early(WhisperForConditionalGeneration.generate)
        )
        build_cache(cfg)
    return {"train": train, "dev": dev, "cache": cache, "pool": pool}


def _config(tiny_hf_dir, data, out: Path, **kw) -> TrainConfig:
    base = TrainConfig(
        mode="distilwhisper", languages=("pl", "cs"), base=tiny_hf_dir, cache=data["cache"], train=data["train"],
        dev=data["dev"], out_dir=out, clsr_decoder_layers=(0, 1), epochs=1, batch_size=2, max_new_tokens=4,
        device="cpu", teacher_labels=True, unlabelled=data["pool"],
    )  # fmt: skip
    return replace(base, **kw)


def test_the_filters_keep_what_passes_and_record_every_other_row_with_its_reason(tiny_hf_dir, labelled, tmp_path):
    data = load_training_data(_config(tiny_hf_dir, labelled, tmp_path, **RELAXED))
    record = data.teacher_rows
    assert (record["read"], record["kept"], record["filtered"]) == (5, 1, 4)
    assert record["by_reason"] == {"empty transcript": 2, "token cap": 1, "weak reference": 1}
    reasons = {r["id"]: r["reason"] for r in record["rows"]}
    assert reasons["pool-5"] == "weak reference: error rate 1.00 > 0.1"
    teacher = [e for e in data.examples if e.by_teacher]
    assert [e.utt.id for e in teacher] == ["pool-2"] and len(teacher[0].labels) == 2  # one token, end-of-text
    assert teacher[0].utt.audio == "pool/audio/u2.wav"  # relative to the train manifest's folder
    assert sum(not e.by_teacher for e in data.examples) == 5  # the reference rows in pl and cs
    # an example keeps the cache, not a padded copy of its targets; it reads them when the loss asks
    assert all(e.targets is None and e.cache is data.cache for e in data.examples)
    got, want = data.examples[0].teacher(), data.cache.targets(data.examples[0].utt.id)
    assert np.array_equal(got.topk_ids, want.topk_ids) and np.array_equal(got.topk_logprobs, want.topk_logprobs)

    strict = load_training_data(_config(tiny_hf_dir, labelled, tmp_path)).teacher_rows  # Whisper's thresholds
    assert strict["kept"] == 0 and strict["by_reason"]["average log-probability"] == 2  # pool-2, pool-5


def test_label_quality_scores_every_teacher_label_and_the_kept_ones_against_the_withheld_texts(
    tiny_hf_dir, labelled, tmp_path
):
    from transformers import WhisperTokenizer

    from pipeline.cache.reader import open_cache
    from pipeline.core.scoring import score
    from pipeline.student.pseudo import label_quality

    cfg = _config(tiny_hf_dir, labelled, tmp_path, **RELAXED)
    cache, tokenizer = open_cache(labelled["cache"], teacher_labels=True), WhisperTokenizer.from_pretrained(tiny_hf_dir)
    withheld = {f"pool-{i}": TINY_TEXTS[i][1] for i in POOL}
    label = {i: tokenizer.decode(cache.targets(f"pool-{i}").labels.tolist(), skip_special_tokens=True) for i in POOL}
    quality = label_quality(cfg, cache, tokenizer, withheld)
    pl = [(TINY_TEXTS[i][1], label[i], "pl") for i in (0, 2, 6)]
    assert quality["pl"] == {
        "utterances": 3,
        "error_rate_all": round(score(pl).rate, 4),
        "kept": 1,
        "error_rate_kept": round(score(pl[1:2]).rate, 4),  # pool-2: the others are empty and capped
        "filtered": {"empty transcript": 1, "token cap": 1},
    }
    assert quality["cs"]["kept"] == 0 and quality["cs"]["error_rate_kept"] is None
    assert quality["cs"]["filtered"] == {"empty transcript": 1, "weak reference": 1}
    with pytest.raises(DwPipeError, match="unlabelled row pool-0 has no withheld text"):
        label_quality(cfg, cache, tokenizer, {})


def test_a_student_trains_on_the_mix_and_records_it(tiny_hf_dir, labelled, tmp_path):
    cfg = _config(tiny_hf_dir, labelled, tmp_path / "student", teacher_label_ce_weight=0.5, **RELAXED)
    summary = train_student(cfg)
    assert summary["steps"] == 3  # 5 reference rows and 1 teacher's, 2 a batch
    saved = json.loads((cfg.out_dir / "teacher_labels.json").read_text())
    assert (saved["read"], saved["kept"], saved["filtered"]) == (5, 1, 4)
    student = json.loads((cfg.out_dir / "student.json").read_text())
    assert student["training"]["teacher_label_ce_weight"] == 0.5 and student["training"]["teacher_labels"] is True
    assert student["inputs"] == training_inputs(cfg) and "unlabelled_manifest_sha256" in student["inputs"]
    # the teacher's rows weigh their own CE: at 0 the run's CE curve is another
    pure_kd = train_student(replace(cfg, out_dir=tmp_path / "pure-kd", teacher_label_ce_weight=0.0))
    curves = [
        [json.loads(line)["ce"] for line in (folder / "train_log.jsonl").read_text().splitlines()]
        for folder in (cfg.out_dir, tmp_path / "pure-kd")
    ]
    assert pure_kd["steps"] == 3 and curves[0] != curves[1]
    # a student of reference labels records none of it, as students did before teacher labels existed
    plain = replace(cfg, teacher_labels=False, unlabelled=None).settings_record()
    assert not {"teacher_labels", "unlabelled", "teacher_label_ce_weight", "max_weak_wer"} & set(plain)


def test_teacher_rows_weigh_their_own_ce():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 11), torch.tensor([1, 2, 3, 4, 5])
    ones = torch.ones(5)
    assert torch.allclose(weighted_cross_entropy(logits, labels, ones), cross_entropy(logits, labels))
    half = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])  # the last two tokens a teacher's row at weight 0
    expected = cross_entropy(logits[:3], labels[:3]) * 3 / 5
    assert torch.allclose(weighted_cross_entropy(logits, labels, half), expected)


def test_teacher_labels_are_refused_where_they_cannot_be_used(tiny_hf_dir, labelled, tmp_path):
    reference_cache = tmp_path / "reference-cache"
    build_cache(CacheTeacherConfig(teacher=tiny_hf_dir, manifest=labelled["train"], out_dir=reference_cache, top_k=8))
    with pytest.raises(DwPipeError, match=r"teacher_labels needs a cache built with cache_teacher.labels: teacher"):
        load_training_data(_config(tiny_hf_dir, labelled, tmp_path, cache=reference_cache))
    other = labelled["pool"].with_name("other.jsonl")
    other.write_text(labelled["pool"].read_text().replace('"pool-6"', '"pool-7"'), encoding="utf-8")
    with pytest.raises(
        DwPipeError, match=r"other.jsonl is not the manifest the cache .* labelled \(unlabelled.jsonl\)"
    ):
        load_training_data(_config(tiny_hf_dir, labelled, tmp_path, unlabelled=other))
    with pytest.raises(DwPipeError, match=r"teacher_label_ce_weight 0 in mode finetune, which has no KD"):
        _config(tiny_hf_dir, labelled, tmp_path, mode="finetune", teacher_label_ce_weight=0.0).check()
    with pytest.raises(DwPipeError, match=r"teacher_labels needs unlabelled"):
        _config(tiny_hf_dir, labelled, tmp_path, unlabelled=None).check()
