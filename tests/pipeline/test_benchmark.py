"""benchmark: an interrupted run keeps its finished models, and only runs made from the same inputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from pipeline import decode
from pipeline.benchmark import BenchmarkConfig, run_benchmark
from tests.conftest import write_bench_inputs

TIMING = ("decode_seconds", "rtfx", "peak_rss_mb")  # measured again by each run


@pytest.fixture(scope="module")
def bench_inputs(tmp_path_factory, tiny_hf_dir) -> dict[str, Path]:
    return write_bench_inputs(tmp_path_factory.mktemp("bench-inputs"), tiny_hf_dir, seed=2)


def _config(teacher: Path, bench_inputs: dict[str, Path], out: Path) -> BenchmarkConfig:
    """Four models in this order: teacher, student-untrained (transformers), ct2:teacher float32, int8."""
    return BenchmarkConfig(
        datasets={"test": str(bench_inputs["test"])},
        out_dir=out,
        teacher=str(teacher),
        untrained=f"{teacher}@0,1",
        ct2_dir=str(bench_inputs["ct2"]),
        target_languages=("pl", "cs"),
        max_new_tokens=4,
        bootstrap=50,
    )


class Decodes:
    """The distinct models that reach a decoder (transformers or CTranslate2); a Ctrl-C as the ``stop_at``-th starts."""

    def __init__(self, monkeypatch, stop_at: int | None = None) -> None:
        self.models: list[object] = []  # the models themselves: an id could be reused once one is freed
        self.stop_at = stop_at
        for name in ("greedy_token_ids", "generate_batch", "greedy_ctranslate2"):
            monkeypatch.setattr(decode, name, self._counting(getattr(decode, name)))

    def _counting(self, real):
        def decode_counted(model, *args, **kwargs):
            if not any(model is seen for seen in self.models):
                self.models.append(model)
                if len(self.models) == self.stop_at:
                    raise KeyboardInterrupt
            return real(model, *args, **kwargs)

        return decode_counted


def _outputs(out: Path) -> tuple[list[dict], str]:
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows], (out / "hypotheses.jsonl").read_text()


def _interrupted(cfg: BenchmarkConfig, monkeypatch, stop_at: int) -> list[object]:
    with monkeypatch.context() as patch:
        decodes = Decodes(patch, stop_at)
        with pytest.raises(KeyboardInterrupt):
            run_benchmark(cfg)
    assert not (cfg.out_dir / "metrics.json").exists()
    return decodes.models


def test_an_interrupted_benchmark_decodes_only_the_models_it_had_not_finished(
    tiny_hf_dir, bench_inputs, tmp_path, monkeypatch
):
    reference = _config(tiny_hf_dir, bench_inputs, tmp_path / "reference")
    with monkeypatch.context() as patch:
        decodes = Decodes(patch)
        run_benchmark(reference)
    assert len(decodes.models) == 4

    cfg = _config(tiny_hf_dir, bench_inputs, tmp_path / "bench")
    partial = tmp_path / ".bench.partial"
    _interrupted(cfg, monkeypatch, stop_at=2)  # Ctrl-C as student-untrained starts: the teacher is finished
    assert len(list(partial.glob("*.json"))) == 1
    _interrupted(cfg, monkeypatch, stop_at=2)  # as ct2:teacher float32 starts: student-untrained is finished too
    assert len(list(partial.glob("*.json"))) == 2
    with monkeypatch.context() as patch:
        decodes = Decodes(patch)
        run_benchmark(cfg)
    assert len(decodes.models) == 2  # the two CTranslate2 models; the transformers ones were kept
    assert _outputs(cfg.out_dir) == _outputs(reference.out_dir)
    assert not partial.exists()  # metrics.json holds the kept runs now


def test_a_kept_run_from_other_inputs_is_decoded_again(tiny_hf_dir, bench_inputs, tmp_path, monkeypatch):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_hf_dir, teacher)
    cfg = _config(teacher, bench_inputs, tmp_path / "bench")
    _interrupted(cfg, monkeypatch, stop_at=2)  # the teacher's run is kept
    weights = load_file(str(teacher / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.01  # new teacher weights, same everything else
    save_file(weights, str(teacher / "model.safetensors"), metadata={"format": "pt"})
    with monkeypatch.context() as patch:
        decodes = Decodes(patch)
        run_benchmark(cfg)
    assert len(decodes.models) == 4  # the teacher among them


def test_a_kept_run_at_other_loop_caps_is_decoded_again(tiny_hf_dir, bench_inputs, tmp_path, monkeypatch):
    """The longer caps decide the kept hypotheses at those caps: a run kept under one is not reused under another."""
    cfg = replace(_config(tiny_hf_dir, bench_inputs, tmp_path / "bench"), loop_caps=(6,))
    _interrupted(cfg, monkeypatch, stop_at=2)  # the teacher's run (with its cap-6 hypotheses) is kept
    with monkeypatch.context() as patch:
        decodes = Decodes(patch)
        run_benchmark(replace(cfg, loop_caps=(6, 9)))
    assert len(decodes.models) == 4  # the teacher among them
    rows = json.loads((cfg.out_dir / "metrics.json").read_text())["rows"]
    assert {r["group"] for r in rows if r["model"] == "teacher"} >= {"cap=6", "cap=9"}


def test_the_benchmark_decodes_with_this_machines_ct2_tuning_record(tiny_hf_dir, bench_inputs, tmp_path, monkeypatch):
    """A record made here applies (CTranslate2 threads) and metrics.json says which setting the seconds came from;
    a record from another machine does not."""
    import ctranslate2

    from pipeline import ct2_tuning

    made = []
    real = ctranslate2.models.Whisper

    def counting(*args, **kwargs):
        made.append(kwargs.get("intra_threads"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ctranslate2.models, "Whisper", counting)
    record = tmp_path / "ct2-tuning.json"
    choice = {"setting": "default", "env": {}, "threads": 1, "reason": "test"}
    record.write_text(json.dumps({"machine": ct2_tuning.machine(), "choice": choice}))
    cfg = replace(_config(tiny_hf_dir, bench_inputs, tmp_path / "bench"), ct2_tuning=record)
    run_benchmark(cfg)
    metrics = json.loads((cfg.out_dir / "metrics.json").read_text())
    assert metrics["ct2_setting"]["threads"] == 1 and metrics["ct2_setting"]["source"] == str(record)
    assert made and set(made) == {1}
    record.write_text(json.dumps({"machine": {**ct2_tuning.machine(), "cores": 999}, "choice": choice}))
    made.clear()
    run_benchmark(replace(cfg, out_dir=tmp_path / "other"))
    assert json.loads((tmp_path / "other" / "metrics.json").read_text())["ct2_setting"]["threads"] == 0
    assert made and set(made) == {0}
