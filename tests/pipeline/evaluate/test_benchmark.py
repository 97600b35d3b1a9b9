"""benchmark: an interrupted run keeps its finished models, and only runs made from the same inputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from pipeline.evaluate.benchmark import BenchmarkConfig, run_benchmark
from pipeline.models import decode
from tests.conftest import write_bench_inputs

TIMING = ("decode_seconds", "rtfx", "peak_rss_mb", "decoded_at")  # measured again by each run; when kept


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


def test_with_a_run_memo_a_second_benchmark_decodes_only_the_model_that_changed(
    tiny_hf_dir, bench_inputs, tmp_path, monkeypatch
):
    """One cache, many students: a finished benchmark's runs stay in ``run_memo``; the next benchmark decodes only the
    models whose files changed, gives the same rows for the rest, and says when each kept run was decoded."""
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_hf_dir, teacher)
    cfg = replace(_config(teacher, bench_inputs, tmp_path / "bench"), run_memo=tmp_path / "memo")
    with monkeypatch.context() as patch:
        decodes = Decodes(patch)
        run_benchmark(cfg)
    assert len(decodes.models) == 4
    first = _outputs(cfg.out_dir)
    assert len(list((tmp_path / "memo" / "benchmark").glob("*.json"))) == 4  # kept after the outputs are written
    with monkeypatch.context() as patch:
        decodes = Decodes(patch)
        run_benchmark(cfg)
    assert decodes.models == []  # nothing changed: nothing decoded
    again = _outputs(cfg.out_dir)
    assert [{k: v for k, v in r.items() if k != "decoded_at"} for r in again[0]] == [
        {k: v for k, v in r.items() if k != "decoded_at"} for r in first[0]
    ]
    assert again[1] == first[1]
    kept_rows = json.loads((cfg.out_dir / "metrics.json").read_text())["rows"]
    assert all(r["decoded_at"] for r in kept_rows)

    weights = load_file(str(teacher / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.01  # the transformers teacher changes; the CTranslate2 models do not
    save_file(weights, str(teacher / "model.safetensors"), metadata={"format": "pt"})
    with monkeypatch.context() as patch:
        decodes = Decodes(patch)
        run_benchmark(cfg)
    # the teacher, and the untrained student, which is built from the same folder
    assert len(decodes.models) == 2
    rows = json.loads((cfg.out_dir / "metrics.json").read_text())["rows"]
    assert {r["model"] for r in rows if r["decoded_at"] is None} == {"teacher", "student-untrained"}


def test_rows_compare_each_model_with_the_teacher_pairwise(tiny_hf_dir, bench_inputs, tmp_path):
    """The paper's comparison: every row (group all) carries the teacher's rate on the same utterances and the paired
    interval of the difference; a model is not compared with itself."""
    cfg = _config(tiny_hf_dir, bench_inputs, tmp_path / "bench")
    run_benchmark(cfg)
    rows = json.loads((cfg.out_dir / "metrics.json").read_text())["rows"]
    at = {(r["model"], r["compute_type"], r["language"], r["group"]): r for r in rows}
    for lang in ("pl", "cs"):
        untrained, teacher = at[("student-untrained", "float32", lang, "all")], at[("teacher", "float32", lang, "all")]
        vs = untrained["vs"]["teacher"]
        assert vs["model"] == "teacher|float32" and vs["error_rate"] == teacher["error_rate"]
        assert vs["delta"] == pytest.approx(untrained["error_rate"] - teacher["error_rate"], abs=1e-4)
        assert vs["delta_ci95"][0] <= vs["delta"] <= vs["delta_ci95"][1]
        assert "teacher" not in teacher.get("vs", {})
        assert all("vs" not in r for r in rows if r["group"] != "all")
    assert at[("ct2:teacher", "int8", "pl", "all")]["vs"] == {}  # the CTranslate2 teacher at its own type is itself


def test_a_run_memo_of_another_machine_is_not_used(tiny_hf_dir, bench_inputs, tmp_path, monkeypatch):
    """The seconds and the float kernels are the CPU's: runs decoded on another CPU are decoded again."""
    from pipeline.evaluate import runs

    cfg = replace(_config(tiny_hf_dir, bench_inputs, tmp_path / "bench"), run_memo=tmp_path / "memo")
    run_benchmark(cfg)
    other = {**runs.machine(), "isa": ["sse4_2"]}
    monkeypatch.setattr(runs, "machine", lambda: other)
    with monkeypatch.context() as patch:
        decodes = Decodes(patch)
        run_benchmark(cfg)
    assert len(decodes.models) == 4


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

    from pipeline.evaluate import ct2_tuning

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


def _translate_manifest(test: Path, translations: bool = True) -> Path:
    """The test manifest's utterances as a translate set (split translate, an English reference each)."""
    lines = []
    for line in test.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record["id"], record["split"] = f"tr-{record['id']}", "translate"
        if translations:
            record["translation"] = f"This is the English meaning of {record['id']}."
        lines.append(json.dumps(record, ensure_ascii=False))
    path = test.with_name("translate.jsonl" if translations else "untranslated.jsonl")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_translate_dataset_is_decoded_to_english_and_scored_with_chrf_and_bleu(
    tiny_hf_dir, bench_inputs, tmp_path, monkeypatch
):
    from transformers import WhisperTokenizer

    from pipeline.core.errors import DwPipeError
    from pipeline.models.forward import prompt_ids

    tokenizer = WhisperTokenizer.from_pretrained(tiny_hf_dir)
    task_ids = {t: tokenizer.convert_tokens_to_ids(f"<|{t}|>") for t in ("transcribe", "translate")}
    translate = _translate_manifest(bench_inputs["test"])
    base = _config(tiny_hf_dir, bench_inputs, tmp_path / "bench")
    cfg = replace(base, datasets={**base.datasets, "translate": str(translate)}, translate=("translate",))
    seen_tasks: dict[str, set[str]] = {"ctranslate2": set(), "transformers": set()}
    real_ct2, real_hf = decode.greedy_ctranslate2, decode.greedy_token_ids

    def ct2(model, features, prompts, max_new_tokens):
        seen_tasks["ctranslate2"] |= {t for t, i in task_ids.items() for p in prompts if p[2] == i}
        return real_ct2(model, features, prompts, max_new_tokens)

    def hf(model, utts, store, tok, ns, task="transcribe", timestamps=False):
        seen_tasks["transformers"].add(f"{utts[0].id.startswith('tr-')}:{task}")
        return real_hf(model, utts, store, tok, ns, task, timestamps)

    monkeypatch.setattr(decode, "greedy_ctranslate2", ct2)
    monkeypatch.setattr(decode, "greedy_token_ids", hf)
    run_benchmark(cfg)
    assert seen_tasks == {
        "ctranslate2": {"transcribe", "translate"},
        "transformers": {"False:transcribe", "True:translate"},
    }
    assert prompt_ids(tokenizer, "pl", "translate")[2] == task_ids["translate"]
    metrics = json.loads((cfg.out_dir / "metrics.json").read_text())
    assert {r["dataset"] for r in metrics["rows"]} == {"test"}  # error-rate rows: transcription only
    rows = metrics["translation"]
    runs = {
        ("teacher", "float32"),
        ("student-untrained", "float32"),
        ("ct2:teacher", "float32"),
        ("ct2:teacher", "int8"),
    }
    assert {(r["model"], r["compute_type"]) for r in rows} == runs
    assert {(r["language"], r["metric"]) for r in rows} == {
        (lang, m) for lang in ("pl", "de", "cs") for m in ("chrf", "bleu")
    }
    for r in rows:
        assert r["task"] == "translate" and 0 <= r["score"] <= 100 and r["ci95"][0] <= r["score"] <= r["ci95"][1]
        if r["model"] != "teacher":
            assert r["teacher_delta"] == pytest.approx(r["score"] - r["teacher_score"], abs=0.011)
        if r["compute_type"] == "int8":
            assert r["reference_delta"] == pytest.approx(r["score"] - r["reference_score"], abs=0.011)
    hyps = [json.loads(x) for x in (cfg.out_dir / "hypotheses.jsonl").read_text().splitlines()]
    lines = [h for h in hyps if h["dataset"] == "translate"]
    assert len(lines) == 4 * 7 and all(
        h["task"] == "translate" and h["ref"].startswith("This is the English") for h in lines
    )
    untranslated = _translate_manifest(bench_inputs["test"], translations=False)
    with pytest.raises(DwPipeError, match="7 utterance\\(s\\) without an English translation"):
        run_benchmark(replace(cfg, datasets={**base.datasets, "translate": str(untranslated)}))


def _decoder_expert_student(base: Path, out: Path, keep: tuple[int, ...] = (0, 1)) -> Path:
    """A distilwhisper-mode student of ``base`` (decoder layers ``keep``) with noisy decoder experts for pl only."""
    import torch

    from pipeline.models.clsr import CLSRConfig, add_clsr, clsr_layers
    from pipeline.student.model import StudentSpec, build_student, save_student

    spec = StudentSpec(base, None, keep)
    model = build_student(spec)
    clsr = CLSRConfig(("pl",), decoder_layers=tuple(range(len(keep))), gate_init="zero")
    add_clsr(model, clsr)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in clsr_layers(model):
            for param in layer.experts["pl"].parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.5)
    out.mkdir(parents=True)
    save_student(out, model, "distilwhisper", spec, ("pl",), clsr, {})
    return out


def test_a_clsr_student_takes_the_untrained_hypotheses_where_it_has_no_expert(tiny_hf_dir, bench_inputs, tmp_path):
    import torch
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    from pipeline.data.manifest import load_manifest
    from pipeline.evaluate.matrix import eval_namespace, stand_in_languages
    from pipeline.student.model import StudentSpec, build_student, load_student

    student = _decoder_expert_student(tiny_hf_dir, tmp_path / "student")
    cfg = replace(_config(tiny_hf_dir, bench_inputs, tmp_path / "bench"), students={"distilwhisper": str(student)})
    assert stand_in_languages(cfg, student, {"pl", "de", "cs"}) == {"de", "cs"}
    other_layers = _decoder_expert_student(tiny_hf_dir, tmp_path / "one-layer", keep=(1,))
    assert stand_in_languages(cfg, other_layers, {"pl", "de", "cs"}) == frozenset()  # another model than untrained
    # the identity the copy rests on: decoded, the student equals the untrained student where it has no expert
    utts = [u for u in load_manifest(bench_inputs["test"]) if u.language != "pl"]
    extractor, tokenizer = (
        WhisperFeatureExtractor.from_pretrained(tiny_hf_dir),
        WhisperTokenizer.from_pretrained(tiny_hf_dir),
    )
    ids = []
    for model in (load_student(student)[0], build_student(StudentSpec(tiny_hf_dir, None, (0, 1)))):
        store = decode.EncoderStore(model, extractor, bench_inputs["test"].parent, True, torch.device("cpu"))
        store.fill(utts)
        ids.append(decode.greedy_token_ids(model, utts, store, tokenizer, eval_namespace(cfg))[0])
    assert ids[0] == ids[1]

    run_benchmark(cfg)
    rows = json.loads((cfg.out_dir / "metrics.json").read_text())["rows"]
    copied = {
        r["language"]: r["copied_from_untrained"]
        for r in rows
        if r["model"] == "student-distilwhisper" and r["group"] == "all"
    }
    assert copied == {"pl": 0, "de": 2, "cs": 2}
    hyps = [json.loads(x) for x in (cfg.out_dir / "hypotheses.jsonl").read_text().splitlines()]
    by_model = {(h["model"], h["id"]): h["hyp"] for h in hyps}
    for u in utts:
        assert by_model[("student-distilwhisper", u.id)] == by_model[("student-untrained", u.id)]
    pl = [u.id for u in load_manifest(bench_inputs["test"]) if u.language == "pl"]
    assert any(by_model[("student-distilwhisper", i)] != by_model[("student-untrained", i)] for i in pl)


def test_the_benchmark_decodes_with_timestamps_on_request(tiny_hf_dir, bench_inputs, tmp_path, monkeypatch):
    """timestamps: every engine gets the prompt without <|notimestamps|>; the texts leave timestamp tokens out."""
    from transformers import WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(tiny_hf_dir)
    no_ts = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    prompts: dict[str, list] = {"ctranslate2": [], "transformers": []}
    real_ct2, real_hf = decode.greedy_ctranslate2, decode.generate_batch

    def ct2(model, features, batch_prompts, max_new_tokens):
        prompts["ctranslate2"] += batch_prompts
        return real_ct2(model, features, batch_prompts, max_new_tokens)

    def hf(model, chunk, store, tok, max_new_tokens, task="transcribe", timestamps=False):
        prompts["transformers"].append(timestamps)
        return real_hf(model, chunk, store, tok, max_new_tokens, task, timestamps)

    monkeypatch.setattr(decode, "greedy_ctranslate2", ct2)
    monkeypatch.setattr(decode, "generate_batch", hf)
    cfg = replace(_config(tiny_hf_dir, bench_inputs, tmp_path / "bench"), timestamps=True)
    run_benchmark(cfg)
    assert prompts["ctranslate2"] and all(len(p) == 3 and no_ts not in p for p in prompts["ctranslate2"])
    assert prompts["transformers"] and all(prompts["transformers"])
    hyps = [json.loads(x) for x in (cfg.out_dir / "hypotheses.jsonl").read_text().splitlines()]
    assert hyps and not any("<|" in h["hyp"] for h in hyps)
