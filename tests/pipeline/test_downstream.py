"""export_student -> quantize -> benchmark -> report on the tiny Whisper."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.cache.build import CacheTeacherConfig, build_cache
from pipeline.evaluate.benchmark import BenchmarkConfig, run_benchmark
from pipeline.evaluate.quantize import quantize
from pipeline.models.clsr import clsr_layers, set_language
from pipeline.report.build import ReportConfig, make_report
from pipeline.student.config import TrainConfig
from pipeline.student.export import export_student
from pipeline.student.model import load_student
from pipeline.student.train import train_student
from tests.conftest import write_encoder_expert_student, write_tiny_manifest


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_hf_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("downstream")
    train = write_tiny_manifest(root, "train.jsonl", seed=0)
    test = write_tiny_manifest(root, "test.jsonl", seed=2)
    build_cache(CacheTeacherConfig(teacher=tiny_hf_dir, manifest=train, out_dir=root / "cache", top_k=8))
    out = {"root": root, "train": train, "test": test}
    for mode in ("distilwhisper", "clsr"):
        cfg = TrainConfig(
            mode=mode,
            languages=("pl", "cs"),
            base=tiny_hf_dir,
            cache=root / "cache",
            train=train,
            dev=train,
            out_dir=root / "students" / mode,
            clsr_decoder_layers=(0, 1),
            epochs=1,
            batch_size=2,
            max_new_tokens=4,
        )
        train_student(cfg)
        out[mode] = cfg.out_dir
    return out


def _open_all_gates(model) -> None:
    for layer in clsr_layers(model):
        for gate in layer.gates.values():
            torch.nn.init.zeros_(gate.w2.weight)  # G = 0 >= 0: every token routed to the expert
        for expert in layer.experts.values():
            with torch.no_grad():
                expert.fc2.weight.mul_(1.5)


def test_export_matches_exact_routing_when_gates_agree(trained, tmp_path):
    model, _ = load_student(trained["distilwhisper"])
    _open_all_gates(model)
    from safetensors.torch import save_file

    from pipeline.models.clsr import expert_state_dict

    folder = tmp_path / "student"
    folder.mkdir()
    for f in trained["distilwhisper"].iterdir():
        if f.is_file():
            (folder / f.name).write_bytes(f.read_bytes())
    save_file(expert_state_dict(model, "pl"), str(folder / "expert.pl.safetensors"))
    info = export_student(folder, "pl", tmp_path / "export", threshold=0.0)
    assert all(r["branch"] == "expert" for r in info["routing"].values())
    from transformers import WhisperForConditionalGeneration

    plain = WhisperForConditionalGeneration.from_pretrained(tmp_path / "export").eval()
    set_language(model, "pl")
    feats = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[50258, 50269, 50359, 50363, 400]])
    with torch.no_grad():
        assert torch.allclose(
            model(input_features=feats, decoder_input_ids=ids).logits,
            plain(input_features=feats, decoder_input_ids=ids).logits,
            atol=1e-5,
        )
    shared = export_student(folder, "pl", tmp_path / "shared", threshold=1.1)
    assert all(r["branch"] == "shared" for r in shared["routing"].values())


def test_quantize_records_effective_type(trained, tiny_hf_dir, tmp_path):
    info = quantize(tiny_hf_dir, tmp_path / "q-int8", "int8")
    assert info["effective_compute_type"].startswith("int8") and info["model_size_mb"] > 0
    fp16 = quantize(tiny_hf_dir, tmp_path / "q-f16", "float16")
    assert fp16["effective_compute_type"] in ("float16", "float32")  # CPUs without fast float16 fall back
    assert (tmp_path / "q-int8" / "tokenizer.json").is_file() and (
        tmp_path / "q-int8" / "preprocessor_config.json"
    ).is_file()


def test_benchmark_and_report(trained, tiny_hf_dir, tmp_path):
    ct2 = tmp_path / "ct2"
    export = export_student(trained["distilwhisper"], "pl", tmp_path / "exports" / "distilwhisper-pl")
    assert export["language"] == "pl"
    for ctype in ("float32", "int8"):
        quantize(tiny_hf_dir, ct2 / f"teacher-{ctype}", ctype)
        quantize(tmp_path / "exports" / "distilwhisper-pl", ct2 / f"distilwhisper-pl-{ctype}", ctype)
    cfg = BenchmarkConfig(
        datasets={"test": str(trained["test"])},
        out_dir=tmp_path / "bench",
        teacher=str(tiny_hf_dir),
        untrained=f"{tiny_hf_dir}@0,1",
        students={"distilwhisper": str(trained["distilwhisper"]), "clsr": str(trained["clsr"])},
        ct2_dir=str(ct2),
        target_languages=("pl", "cs"),
        faster_whisper=("teacher-int8",),
        max_new_tokens=4,
        bootstrap=50,
    )
    run_benchmark(cfg)
    metrics = json.loads((cfg.out_dir / "metrics.json").read_text())
    rows = metrics["rows"]
    required = {
        "model",
        "compute_type",
        "effective_compute_type",
        "language",
        "dataset",
        "n_utterances",
        "ref_units",
        "metric",
        "error_rate",
        "hits",
        "substitutions",
        "deletions",
        "insertions",
        "audio_seconds",
        "decode_seconds",
        "rtfx",
        "peak_rss_mb",
        "model_size_mb",
    }
    assert all(required <= set(r) for r in rows)
    models = {r["model"] for r in rows}
    assert {
        "teacher",
        "student-untrained",
        "student-distilwhisper",
        "student-clsr",
        "ct2:teacher",
        "ct2:distilwhisper-pl",
        "faster-whisper:teacher-int8",
    } <= models
    export_rows = [r for r in rows if r["model"] == "ct2:distilwhisper-pl"]
    assert {r["language"] for r in export_rows} == {"pl"}
    int8 = next(r for r in rows if r["model"] == "ct2:teacher" and r["compute_type"] == "int8" and r["group"] == "all")
    assert int8["reference"] == "ct2:teacher|float32" and "delta_ci95" in int8
    assert any(r["group"] == "gender=female" for r in rows)
    teacher = next(r for r in rows if r["model"] == "teacher" and r["group"] == "all")
    assert teacher["rtfx"] and teacher["rtfx"] > 0
    hyps = (cfg.out_dir / "hypotheses.jsonl").read_text().splitlines()
    assert {"model", "compute_type", "id", "language", "ref", "hyp", "ref_norm", "hyp_norm"} <= set(json.loads(hyps[0]))
    _check_shared_encodings(ct2, trained["test"], rows, [json.loads(h) for h in hyps], tiny_hf_dir)

    report = ReportConfig(bench=cfg.out_dir, out_dir=tmp_path / "report")
    make_report(report)
    text = (report.out_dir / "report.md").read_text()
    for section in ("Target languages", "Per-language error rates: test", "Quantization-induced change", "Gender gaps"):
        assert section in text
    assert all((report.out_dir / name).stat().st_size > 1000 for name in ("wer_per_language.png", "speed_vs_wer.png"))

    # The embedded default's cheaper set-up: no transformers teacher run (ct2:teacher float32 stands for
    # it), the CLSR-only student on the target languages only, no faster-whisper.
    lean = replace(
        cfg, out_dir=tmp_path / "bench-lean", hf_teacher=False, targets_only=("student-clsr",), faster_whisper=()
    )
    run_benchmark(lean)
    lean_rows = json.loads((lean.out_dir / "metrics.json").read_text())["rows"]
    assert "teacher" not in {r["model"] for r in lean_rows}
    assert {r["language"] for r in lean_rows if r["model"] == "student-clsr"} == {"pl", "cs"} & {
        r["language"] for r in rows
    }
    same = {(r["model"], r["compute_type"], r["language"], r["group"]): r["error_rate"] for r in rows}
    assert all(same[(r["model"], r["compute_type"], r["language"], r["group"])] == r["error_rate"] for r in lean_rows)
    lean_report = ReportConfig(bench=lean.out_dir, out_dir=tmp_path / "report-lean", teacher="ct2:teacher")
    summary = make_report(lean_report)
    ct2_teacher = {
        f"{r['dataset']}/{r['language']}": r["error_rate"]
        for r in lean_rows
        if r["model"] == "ct2:teacher" and r["compute_type"] == "float32" and r["group"] == "all"
    }
    assert summary and all(row["teacher"] == ct2_teacher[key] for key, row in summary.items())


def test_benchmark_decodes_encoder_experts_per_language(tiny_hf_dir, tmp_path):
    """A student with encoder experts is benchmarked with its own encoder, routed to each utterance's language,
    not with the untrained model's stored outputs: its hypotheses are exact-routing decoding from the audio."""
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    from pipeline.data.manifest import load_manifest
    from pipeline.models.decode import strip_prompt
    from pipeline.models.forward import features_for, prompt_ids

    manifest = write_tiny_manifest(tmp_path / "data", "test.jsonl", seed=2)
    folder = write_encoder_expert_student(tiny_hf_dir, tmp_path / "student")
    cfg = BenchmarkConfig(
        datasets={"test": str(manifest)},
        out_dir=tmp_path / "bench",
        teacher=str(tiny_hf_dir),
        untrained=str(tiny_hf_dir),  # the same base and encoder layers: the key that used to share outputs
        students={"enc": str(folder)},
        ct2_dir=str(tmp_path / "no-ct2"),
        hf_teacher=False,
        max_new_tokens=6,
        bootstrap=10,
    )
    run_benchmark(cfg)
    benched: dict[str, dict[str, str]] = {}
    for line in (cfg.out_dir / "hypotheses.jsonl").read_text().splitlines():
        h = json.loads(line)
        benched.setdefault(h["model"], {})[h["id"]] = h["hyp"]

    model, _ = load_student(folder)
    extractor, tokenizer = (
        WhisperFeatureExtractor.from_pretrained(tiny_hf_dir),
        WhisperTokenizer.from_pretrained(tiny_hf_dir),
    )
    utts = load_manifest(manifest)
    exact = []
    for u in utts:  # one utterance at a time, the encoder run inside generate with the language set
        set_language(model, u.language)
        prompt = prompt_ids(tokenizer, u.language)
        with torch.no_grad():
            out = model.generate(
                input_features=features_for(extractor, [u], manifest.parent),
                decoder_input_ids=torch.tensor([prompt]),
                do_sample=False,
                num_beams=1,
                max_new_tokens=cfg.max_new_tokens,
                return_timestamps=False,
            )
        exact.append(tokenizer.decode(strip_prompt(out[0].tolist(), prompt), skip_special_tokens=True))
    # The experts change what the student says, so outputs of the expert-free encoder would be caught.
    assert any(benched["student-untrained"][u.id] != h for u, h in zip(utts, exact) if u.language in ("pl", "cs"))
    assert [benched["student-enc"][u.id] for u in utts] == exact


def _check_shared_encodings(ct2: Path, manifest: Path, rows: list[dict], hyps: list[dict], hf_dir: Path) -> None:
    """The export's encoder is the teacher's (frozen): CT2 encodes pl once for both, and decoding from the
    shared outputs gives what decoding from log-mel gives; each row is charged encoder time."""
    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    from pipeline.data.manifest import load_manifest
    from pipeline.models.ct2_format import encoder_fingerprint
    from pipeline.models.decode import greedy_ctranslate2
    from pipeline.models.forward import features_for, prompt_ids

    prints = {p.name: encoder_fingerprint(p) for p in ct2.iterdir()}
    assert prints["teacher-float32"] == prints["distilwhisper-pl-float32"] != prints["teacher-int8"]
    assert prints["teacher-int8"] == prints["distilwhisper-pl-int8"]  # the same weights quantize the same
    teacher = {
        r["language"]: r
        for r in rows
        if r["model"] == "ct2:teacher" and r["compute_type"] == "float32" and r["group"] == "all"
    }
    # distilwhisper-pl sorts first in its encoder group: it encodes pl, and the teacher reuses those outputs.
    assert teacher["pl"]["encoder_reused"] == teacher["pl"]["n_utterances"] and teacher["cs"]["encoder_reused"] == 0
    assert all(r["decode_seconds"] > 0 for r in rows if r["model"].startswith("ct2:"))
    utts = [u for u in load_manifest(manifest) if u.language == "pl"]
    tokenizer = WhisperTokenizer.from_pretrained(hf_dir)
    feats = features_for(WhisperFeatureExtractor.from_pretrained(hf_dir), utts, manifest.parent).numpy()
    model = ctranslate2.models.Whisper(str(ct2 / "teacher-float32"), device="cpu", compute_type="float32")
    direct = greedy_ctranslate2(model, feats, [prompt_ids(tokenizer, "pl")] * len(utts), 4)
    benched = {h["id"]: h["hyp"] for h in hyps if h["model"] == "ct2:teacher" and h["compute_type"] == "float32"}
    assert [benched[u.id] for u in utts] == [tokenizer.decode(x, skip_special_tokens=True) for x in direct]


def test_export_without_experts_serves_every_language(trained, tiny_hf_dir, tmp_path):
    """A student without experts (finetune, here with the KD term and a cut decoder: bench/quant_sizes.py's kd
    students) has one export for every language: export.json names no language and the benchmark decodes
    its conversion on each target language, not only on the one the export was asked for."""
    cfg = TrainConfig(
        mode="finetune",
        baseline_kd=True,
        languages=("pl", "cs"),
        base=tiny_hf_dir,
        cache=trained["root"] / "cache",
        train=trained["train"],
        dev=trained["train"],
        out_dir=tmp_path / "students" / "kd",
        keep_decoder_layers=(1,),
        epochs=1,
        batch_size=2,
        max_new_tokens=4,
    )
    train_student(cfg)
    info = export_student(cfg.out_dir, "pl", tmp_path / "export")
    assert info["language"] is None and info["routing"] == {}
    assert json.loads((tmp_path / "export" / "export.json").read_text())["language"] is None
    quantize(tmp_path / "export", tmp_path / "ct2" / "kd-decoder1-float32", "float32")
    bench = BenchmarkConfig(
        datasets={"test": str(trained["test"])},
        out_dir=tmp_path / "bench",
        teacher=str(tiny_hf_dir),
        untrained=f"{tiny_hf_dir}@0,1",
        ct2_dir=str(tmp_path / "ct2"),
        target_languages=("pl", "cs"),
        hf_teacher=False,
        targets_only=("ct2:kd-decoder1",),
        max_new_tokens=4,
        bootstrap=20,
    )
    run_benchmark(bench)
    rows = json.loads((bench.out_dir / "metrics.json").read_text())["rows"]
    tested = {u["language"] for u in map(json.loads, trained["test"].read_text().splitlines())}
    assert {r["language"] for r in rows if r["model"] == "ct2:kd-decoder1"} == {"pl", "cs"} & tested
