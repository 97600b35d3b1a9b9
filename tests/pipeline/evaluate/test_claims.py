"""A benchmark's claims about what its students were trained from, and the report's refusal when they differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cache.format import FORMAT_VERSION
from pipeline.cache.reader import cache_fingerprint
from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import sha256_files
from pipeline.evaluate.claims import Inputs, check_claims, model_claims


def _cache(folder: Path, identity: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    content = {
        "status": "complete",
        "identity": {"format_version": FORMAT_VERSION},
        "identity_sha256": identity,
        "shards": [{"file": "shard-00000.parquet", "sha256": "00"}],
    }
    (folder / "cache.json").write_text(json.dumps(content))
    return folder


@pytest.fixture
def world(tmp_path) -> dict:
    """A cache, a training manifest, a base, a test manifest, and a student trained from them (with its export)."""
    cache = _cache(tmp_path / "cache", "a" * 64)
    train = tmp_path / "train.jsonl"
    train.write_text('{"id": "t1"}\n')
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    test = tmp_path / "test.jsonl"
    test.write_text('{"id": "x1"}\n')
    inputs = {
        "base_weights_sha256": sha256_files([base / "model.safetensors"]),
        "train_manifest_sha256": sha256_files([train]),
        "dev_manifest_sha256": "d" * 64,
        "cache_sha256": cache_fingerprint(cache),
    }
    student = tmp_path / "students/distilwhisper"
    student.mkdir(parents=True)
    (student / "student.json").write_text(json.dumps({"inputs": inputs}))
    export = tmp_path / "exports/distilwhisper-ca"
    export.mkdir(parents=True)
    (export / "export.json").write_text(json.dumps({"trained_from": inputs}))
    converted = tmp_path / "ct2/distilwhisper-ca-int8"
    converted.mkdir(parents=True)
    (converted / "quantize.json").write_text(json.dumps({"source": str(export), "requested_compute_type": "int8"}))
    claims = model_claims({"distilwhisper": str(student)}, tmp_path / "ct2")
    metrics = {
        "config": {"datasets": {"test": str(test)}},
        "made_from": {"datasets": {"test": {"manifest_sha256": sha256_files([test])}}, "models": claims},
    }
    return {"cache": cache, "train": train, "base": base, "test": test, "metrics": metrics, "tmp": tmp_path}


def test_students_and_their_exports_claim_what_training_read(world):
    claims = world["metrics"]["made_from"]["models"]
    assert set(claims) == {"student-distilwhisper", "ct2:distilwhisper-ca"}
    assert claims["ct2:distilwhisper-ca"] == claims["student-distilwhisper"]
    made_from = check_claims(world["metrics"], Inputs(world["cache"], world["train"], world["base"]))
    assert made_from["cache"] == cache_fingerprint(world["cache"])[:12]
    assert set(made_from) == {"cache", "train", "base", "test_test"}


def test_a_benchmark_of_students_from_another_cache_is_refused(world):
    other = _cache(world["tmp"] / "other-cache", "b" * 64)
    with pytest.raises(DwPipeError) as err:
        check_claims(world["metrics"], Inputs(other, world["train"], world["base"]))
    message = str(err.value)
    assert "\n" not in message and "was trained from another teacher cache" in message and "(and 1 more)" in message
    assert message.startswith("report: ct2:distilwhisper-ca")


def test_another_corpus_or_base_or_test_set_is_refused(world):
    world["train"].write_text('{"id": "t2"}\n')
    with pytest.raises(DwPipeError, match="another training manifest"):
        check_claims(world["metrics"], Inputs(world["cache"], world["train"], world["base"]))
    with pytest.raises(DwPipeError, match="another base model weights"):
        (world["base"] / "model.safetensors").write_bytes(b"other weights")
        check_claims(world["metrics"], Inputs(None, None, world["base"]))
    world["test"].write_text('{"id": "x2"}\n')
    with pytest.raises(DwPipeError, match="test set test was decoded from another manifest"):
        check_claims(world["metrics"], Inputs(world["cache"]))


def test_a_benchmark_that_claims_nothing_is_refused(world):
    world["metrics"].pop("made_from")
    with pytest.raises(DwPipeError, match="says nothing of what its models were trained from"):
        check_claims(world["metrics"], Inputs(world["cache"]))


def test_the_report_stage_checks_the_pipelines_own_inputs(world):
    """The report takes its inputs from the pipeline's sections when its own leave them unset, and refuses there."""
    from pipeline.report.build import ReportConfig, make_report, with_pipeline_inputs

    bench, out = world["tmp"] / "bench", world["tmp"] / "report"
    bench.mkdir()
    (bench / "metrics.json").write_text(json.dumps({**world["metrics"], "rows": []}))
    other = _cache(world["tmp"] / "other-cache", "b" * 64)
    params = {
        "cache_teacher": {"out_dir": str(other)},
        "train_student": {"common": {"train": str(world["train"]), "base": str(world["base"])}},
    }
    cfg = with_pipeline_inputs(ReportConfig(bench=bench, out_dir=out), params)
    assert (cfg.cache, cfg.train, cfg.base) == (other, world["train"], world["base"])
    with pytest.raises(DwPipeError, match="another teacher cache"):
        make_report(cfg)
    assert not out.exists()
