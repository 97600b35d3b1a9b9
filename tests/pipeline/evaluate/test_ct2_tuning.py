"""ct2-tune: settings timed in their own processes, the choice keeps identical hypotheses, a record applies only
on the machine it was made on."""

from __future__ import annotations

import json
import sys

import numpy as np

from pipeline.evaluate import ct2_tuning


def _row(setting, ctype, seconds, same=True, threads=2, batch=1, env=None):
    return {
        "setting": setting,
        "env": env if env is not None else ({} if setting == "default" else {"CT2_FORCE_CPU_ISA": setting}),
        "compute_type": ctype,
        "threads": threads,
        "batch": batch,
        "seconds_per_utterance": seconds,
        "same_ids": same,
    }


def test_choose_takes_a_faster_setting_only_with_identical_ids_and_a_real_gain():
    base = [_row("default", "float32", 1.0), _row("default", "int8", 0.8), _row("default", "int8", 0.9, threads=1)]
    base.append(_row("default", "float32", 1.6, threads=1))
    faster = [_row("AVX512", "float32", 0.8), _row("AVX512", "int8", 0.6)]
    assert ct2_tuning.choose(base + faster)["setting"] == "AVX512"
    assert ct2_tuning.choose(base + faster)["env"] == {"CT2_FORCE_CPU_ISA": "AVX512"}
    # another compute type's (or batch's) ids changed: not a candidate, however fast
    changed = [*faster, _row("AVX512", "int8", 0.5, same=False, batch=16)]
    assert ct2_tuning.choose(base + changed)["setting"] == "default"
    # 2 % faster: within the noise, the default stays
    marginal = [_row("AVX512", "float32", 0.98), _row("AVX512", "int8", 0.79)]
    assert ct2_tuning.choose(base + marginal)["setting"] == "default"
    # a failed setting is ignored
    assert ct2_tuning.choose([*base, {"setting": "MKL", "error": "boom"}])["threads"] == 2


def test_a_record_applies_only_on_its_machine(tmp_path, monkeypatch):
    record = tmp_path / "ct2-tuning.json"
    choice = {"setting": "AVX2", "env": {"CT2_FORCE_CPU_ISA": "AVX2"}, "threads": 1, "reason": "test"}
    monkeypatch.delenv("CT2_FORCE_CPU_ISA", raising=False)
    monkeypatch.delenv("CT2_USE_MKL", raising=False)
    monkeypatch.delitem(sys.modules, "ctranslate2", raising=False)
    assert ct2_tuning.applied(tmp_path / "missing.json")["setting"] == "default"
    record.write_text(json.dumps({"machine": {**ct2_tuning.machine(), "cpu": "another CPU"}, "choice": choice}))
    assert ct2_tuning.applied(record)["setting"] == "default"
    assert "CT2_FORCE_CPU_ISA" not in __import__("os").environ
    record.write_text(json.dumps({"machine": ct2_tuning.machine(), "choice": choice}))
    got = ct2_tuning.applied(record)
    assert got["setting"] == "AVX2" and got["threads"] == 1
    assert __import__("os").environ["CT2_FORCE_CPU_ISA"] == "AVX2"


def test_a_record_from_a_cpu_of_the_same_name_does_not_apply(tmp_path, monkeypatch):
    monkeypatch.delenv("CT2_FORCE_CPU_ISA", raising=False)
    monkeypatch.delitem(sys.modules, "ctranslate2", raising=False)
    here = ct2_tuning.machine()
    other = {**here, "isa": sorted(set(here["isa"]) ^ {"avx512f"})}  # this CPU with AVX-512 toggled
    choice = {"setting": "AVX512", "env": {"CT2_FORCE_CPU_ISA": "AVX512"}, "threads": 1, "reason": "test"}
    record = tmp_path / "ct2-tuning.json"
    record.write_text(json.dumps({"machine": other, "choice": choice}))
    got = ct2_tuning.applied(record)
    assert got["setting"] == "default" and "another machine" in got["source"]
    assert "CT2_FORCE_CPU_ISA" not in __import__("os").environ


def test_a_record_cannot_change_a_loaded_ctranslate2(tmp_path, monkeypatch):
    import ctranslate2  # noqa: F401  (loaded: its setting is fixed)

    monkeypatch.delenv("CT2_FORCE_CPU_ISA", raising=False)
    record = tmp_path / "ct2-tuning.json"
    choice = {"setting": "AVX2", "env": {"CT2_FORCE_CPU_ISA": "AVX2"}, "threads": 1, "reason": "test"}
    record.write_text(json.dumps({"machine": ct2_tuning.machine(), "choice": choice}))
    got = ct2_tuning.applied(record)
    assert got["setting"] == "default" and "already loaded" in got["source"]


def test_sweep_times_each_setting_in_its_own_process(tiny_ct2, tiny_hf_dir):
    from transformers import WhisperTokenizer

    from pipeline.models.forward import prompt_ids

    features = np.random.default_rng(0).standard_normal((3, 80, 3000)).astype(np.float32)
    prompt = prompt_ids(WhisperTokenizer.from_pretrained(tiny_hf_dir), "pl")
    settings = {"default": {}, "AVX2": {"CT2_FORCE_CPU_ISA": "AVX2"}, "bad": {"CT2_FORCE_CPU_ISA": "NOSUCHISA"}}
    rows = ct2_tuning.sweep(
        {"float32": tiny_ct2["float32"], "int8": tiny_ct2["int8"]},
        features,
        [prompt] * 3,
        settings=settings,
        threads=[1],
        batches=(1, 2),
        repeats=1,
        max_new=4,
    )
    measured = [r for r in rows if "error" not in r]
    assert {(r["setting"], r["compute_type"], r["batch"]) for r in measured} == {
        (s, c, b) for s in ("default", "AVX2") for c in ("float32", "int8") for b in (1, 2)
    }
    assert all(r["same_ids"] for r in measured if r["setting"] == "default")
    assert all(r["seconds_per_utterance"] > 0 for r in measured)
    failed = [r for r in rows if "error" in r]
    assert [r["setting"] for r in failed] == ["bad"] and failed[0]["error"]
    assert ct2_tuning.choose(rows)["setting"] in ("default", "AVX2")


def test_tune_writes_a_record_the_benchmark_reads(tiny_hf_dir, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.evaluate.benchmark import BenchmarkConfig
    from tests.conftest import write_bench_inputs

    inputs = write_bench_inputs(tmp_path / "inputs", tiny_hf_dir, seed=3)
    cfg = BenchmarkConfig(
        datasets={"test": str(inputs["test"])},
        out_dir=tmp_path / "bench",
        teacher=str(tiny_hf_dir),
        untrained=str(tiny_hf_dir),
        ct2_dir=str(inputs["ct2"]),
        target_languages=("cs",),
        max_new_tokens=4,
        ct2_tuning=tmp_path / "ct2-tuning.json",
    )
    record = ct2_tuning.tune(cfg, n=2, repeats=1, settings=["default", "AVX2"])
    saved = json.loads(cfg.ct2_tuning.read_text())
    assert saved["machine"] == ct2_tuning.machine() and saved["choice"] == record["choice"]
    assert {r["compute_type"] for r in saved["rows"]} == {"float32", "int8_float32", "int8"}
    from pipeline.data.manifest import load_manifest

    language = {u.id: u.language for u in load_manifest(inputs["test"])}
    assert [language[uid] for uid in saved["utterances"]] == ["cs", "cs"]  # target languages first
    assert saved["choice"]["setting"] in ("default", "AVX2")
    result = CliRunner().invoke(app, ["ct2-tune", "--setting", "NOSUCH"])
    assert result.exit_code != 0 and "unknown setting" in result.output
