"""train_student on the tiny Whisper: every mode trains, resumes exactly, and writes a loadable student."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.cache.build import CacheTeacherConfig, build_cache
from pipeline.core.errors import DwPipeError
from pipeline.student import loop, selection
from pipeline.student import train as train_mod
from pipeline.student.checkpoint import checkpoint_dir, log_path
from pipeline.student.config import TrainConfig
from pipeline.student.model import load_student
from pipeline.student.train import TrainStageConfig, build_model, train_modes, train_student
from tests.conftest import write_tiny_manifest


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny_hf_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    train = write_tiny_manifest(root, "train.jsonl", seed=0)
    dev = write_tiny_manifest(root, "dev.jsonl", seed=1)
    cache = root / "cache"
    build_cache(CacheTeacherConfig(teacher=tiny_hf_dir, manifest=train, out_dir=cache, top_k=8))
    return {"train": train, "dev": dev, "cache": cache}


def _config(tiny_hf_dir, tiny_data, out: Path, **kw) -> TrainConfig:
    base = TrainConfig(
        mode="distilwhisper",
        languages=("pl", "cs"),
        base=tiny_hf_dir,
        cache=tiny_data["cache"],
        train=tiny_data["train"],
        dev=tiny_data["dev"],
        out_dir=out,
        clsr_decoder_layers=(0, 1),
        epochs=2,
        batch_size=2,
        lr=1e-3,
        max_new_tokens=6,
        checkpoint_every=1,
        seed=3,
    )
    return replace(base, **kw)


@pytest.mark.parametrize("mode", ["distilwhisper", "clsr", "finetune", "lora"])
def test_each_mode_trains_and_reloads(tiny_hf_dir, tiny_data, tmp_path, mode):
    cfg = _config(tiny_hf_dir, tiny_data, tmp_path / mode, mode=mode, eval_every=2 if mode == "finetune" else 0)
    summary = train_student(cfg)
    assert summary["steps"] == 2 * 3  # 2 epochs x (pl: 3 utterances in 2 batches, cs: 2 in 1)
    # dev decoded before training, at each epoch's end, and every eval_every steps where set
    assert [h["step"] for h in summary["history"]] == ([0, 2, 3, 4, 6] if mode == "finetune" else [0, 3, 6])
    folder = cfg.out_dir
    record = json.loads((folder / "student.json").read_text())
    assert record["mode"] == mode
    log_lines = (folder / "train_log.jsonl").read_text().splitlines()
    assert len(log_lines) == summary["steps"]
    first = json.loads(log_lines[0])
    assert ("kd" in first) == (mode == "distilwhisper") and ("gate" in first) == (mode in ("distilwhisper", "clsr"))
    # dvclive curves: one row per step of each logged part, one per dev decode, the chosen rate in metrics.json
    live = folder / "live"
    ce = (live / "plots/metrics/train/ce.tsv").read_text().splitlines()
    assert ce[0].split("\t") == ["step", "ce"] and [int(r.split("\t")[0]) for r in ce[1:]] == list(range(1, 7))
    assert (live / "plots/metrics/train/kd.tsv").is_file() == (mode == "distilwhisper")
    dev = [r.split("\t") for r in (live / "plots/metrics/dev/wer.tsv").read_text().splitlines()[1:]]
    assert [(int(s), float(w)) for s, w in dev] == [(h["step"], pytest.approx(h["wer"])) for h in summary["history"]]
    assert (live / "plots/metrics/dev/pl.tsv").is_file()
    assert json.loads((live / "metrics.json").read_text())["dev"]["best_wer"] == pytest.approx(summary["dev_wer_best"])
    if mode in ("distilwhisper", "clsr"):
        assert {p.name for p in folder.glob("expert.*")} == {"expert.pl.safetensors", "expert.cs.safetensors"}
        assert set(summary["best_step"]) == set(summary["gate_rates"]) == {"pl", "cs"}  # chosen per language
    else:
        assert isinstance(summary["best_step"], int)
    model, _ = load_student(folder)
    assert not model.training


def test_interrupted_training_resumes_to_the_same_result(tiny_hf_dir, tiny_data, tmp_path, monkeypatch):
    """Killed in step 5 with the last checkpoint at step 3 (the end of epoch 1): the resumed run repeats steps 4
    and 5 and its log holds each step once, as the uninterrupted run's does."""
    reference = _config(tiny_hf_dir, tiny_data, tmp_path / "ref", checkpoint_every=100)
    train_student(reference)
    cfg = _config(tiny_hf_dir, tiny_data, tmp_path / "resumed", checkpoint_every=100)
    real_step, calls = loop.step_loss, []

    def dies_in_fifth_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "step_loss", dies_in_fifth_step)
    with pytest.raises(KeyboardInterrupt):
        train_student(cfg)
    steps = log_path(cfg)
    assert steps == cfg.out_dir.parent / f".{cfg.out_dir.name}.log.jsonl"
    assert [json.loads(line)["step"] for line in steps.read_text().splitlines()] == [1, 2, 3, 4]
    with steps.open("a") as handle:
        handle.write('{"step": 5, "ce": 1.')  # a line the kill cut short
    monkeypatch.setattr(loop, "step_loss", real_step)
    train_student(cfg)
    for lang in ("pl", "cs"):
        a = load_file(str(reference.out_dir / f"expert.{lang}.safetensors"))
        b = load_file(str(cfg.out_dir / f"expert.{lang}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), lang
    assert (reference.out_dir / "train_log.jsonl").read_text() == (cfg.out_dir / "train_log.jsonl").read_text()
    for curve in ("train/ce.tsv", "train/kd.tsv", "dev/wer.tsv"):  # the resumed curves hold each step once
        path = f"live/plots/metrics/{curve}"
        assert (reference.out_dir / path).read_text() == (cfg.out_dir / path).read_text(), curve


def test_a_kill_while_a_checkpoint_replaces_the_last_one_loses_no_checkpoint(
    tiny_hf_dir, tiny_data, tmp_path, monkeypatch
):
    """Killed (``os._exit`` in a child) when the step-4 checkpoint is written and the step-3 one moved aside,
    just before the new one takes its name: no folder under that name. The next run still resumes from step 4,
    not from scratch, and ends as an uninterrupted run does."""
    from pipeline.core.config import load_section
    from tests.pipeline.kill_at import KILLED, run_killed

    params = tmp_path / "params.yaml"
    params.write_text(
        f"train_student:\n  modes: [distilwhisper]\n  out_dir: {tmp_path / 'students'}\n"
        "  common:\n    languages: [pl, cs]\n"
        f"    base: {tiny_hf_dir}\n    cache: {tiny_data['cache']}\n    train: {tiny_data['train']}\n"
        f"    dev: {tiny_data['dev']}\n    clsr_decoder_layers: [0, 1]\n    epochs: 2\n    batch_size: 2\n"
        "    lr: 0.001\n    max_new_tokens: 6\n    checkpoint_every: 1\n    seed: 3\n    device: cpu\n"
    )
    (cfg,) = load_section(TrainStageConfig, "train_student", params).configs()
    checkpoint = checkpoint_dir(cfg)
    child = run_killed(checkpoint.name, 4, "train-student", "--params", str(params))
    assert child.returncode == KILLED, child.stderr[-3000:]
    assert not checkpoint.exists()  # the moment at which a delete-then-rename leaves no checkpoint at all

    reference = replace(cfg, out_dir=tmp_path / "reference")
    train_student(reference)
    real_step, calls = loop.step_loss, []
    monkeypatch.setattr(loop, "step_loss", lambda *a, **k: calls.append(1) or real_step(*a, **k))
    train_student(cfg)
    assert len(calls) == 6 - 4  # resumed from the step-4 checkpoint
    for lang in ("pl", "cs"):
        a = load_file(str(reference.out_dir / f"expert.{lang}.safetensors"))
        b = load_file(str(cfg.out_dir / f"expert.{lang}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), lang
    assert (reference.out_dir / "train_log.jsonl").read_text() == (cfg.out_dir / "train_log.jsonl").read_text()
    for curve in ("train/ce.tsv", "train/kd.tsv", "dev/wer.tsv"):  # the resumed curves hold each step once
        path = f"live/plots/metrics/{curve}"
        assert (reference.out_dir / path).read_text() == (cfg.out_dir / path).read_text(), curve
    assert sorted(p.name for p in cfg.out_dir.parent.iterdir()) == ["distilwhisper"]  # nothing left beside it


def _torchrun(ranks: int, *args: str) -> None:
    """Run ``args`` under torchrun with Gloo ranks on this machine; ``--standalone`` binds a free port itself."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_ranks_under_torchrun_train(tiny_hf_dir, tiny_data, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "train_student:\n  modes: [distilwhisper]\n"
        f"  out_dir: {tmp_path / 'ddp'}\n"
        "  common:\n    languages: [pl, cs]\n"
        f"    base: {tiny_hf_dir}\n    cache: {tiny_data['cache']}\n    train: {tiny_data['train']}\n    dev: {tiny_data['dev']}\n"
        "    clsr_decoder_layers: [0, 1]\n    epochs: 2\n    batch_size: 1\n    max_new_tokens: 4\n    device: cpu\n"
    )
    _torchrun(2, "-m", "pipeline.cli", "--no-progress", "train-student", "--params", str(params))
    summary = json.loads((tmp_path / "ddp" / "distilwhisper" / "dev.json").read_text())
    # 5 single-utterance batches per epoch shared by 2 ranks: 3 optimizer steps per epoch
    assert summary["steps"] == 2 * 3
    assert (tmp_path / "ddp" / "distilwhisper" / "expert.pl.safetensors").is_file()


def _step_languages(cfg: TrainConfig, steps: int, per_step: int) -> list[set[str]]:
    """The languages of the batches of each step, worked out from the batch order alone."""
    from types import SimpleNamespace

    from pipeline.data.manifest import load_manifest

    examples = [SimpleNamespace(utt=u) for u in load_manifest(cfg.train) if u.language in cfg.languages]
    per_epoch = -(-len(loop.epoch_batches(examples, cfg, 0)) // per_step)
    out = []
    for step in range(steps):
        epoch, within = divmod(step, per_epoch)
        batches = loop.epoch_batches(examples, cfg, epoch)[within * per_step : (within + 1) * per_step]
        out.append({examples[b[0]].utt.language for b in batches})
    return out


def test_two_ranks_equal_one_process_and_leave_idle_experts_alone(tiny_hf_dir, tiny_data, tmp_path):
    from tests.pipeline.record_steps import train_recording

    # Default draws (gate noise, skipped gates, dropout) and weight decay; 5 single-utterance batches per epoch,
    # so each epoch ends with a one-batch step in which the second rank runs nothing.
    cfg = _config(tiny_hf_dir, tiny_data, tmp_path / "one", batch_size=1, weight_decay=0.1, device="cpu")
    one = replace(cfg, grad_accum=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank computes (_torchrun): other thread counts sum floats in other orders
    try:
        train_recording(one, tmp_path / "one.pt")
    finally:
        torch.set_num_threads(threads)
    two = replace(cfg, grad_accum=1, out_dir=tmp_path / "two")
    (tmp_path / "two.json").write_text(json.dumps(dataclasses.asdict(two), default=str))
    _torchrun(2, "-m", "tests.pipeline.record_steps", str(tmp_path / "two.json"), str(tmp_path / "two.pt"))
    by_one, by_two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")

    assert len(by_one) == len(by_two) == 2 * 3
    for step, (a, b) in enumerate(zip(by_one, by_two)):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-7), (step, name)
    for lang in ("pl", "cs"):
        a = load_file(str(one.out_dir / f"expert.{lang}.safetensors"))
        b = load_file(str(two.out_dir / f"expert.{lang}.safetensors"))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a), lang

    languages = _step_languages(cfg, len(by_two), per_step=2)
    for lang in cfg.languages:  # after its first step a language has Adam momentum and weight decay, no batch
        first = next(s for s, langs in enumerate(languages) if lang in langs)
        idle = [s for s in range(first + 1, len(languages)) if lang not in languages[s]]
        assert idle, f"seed {cfg.seed}: no step without {lang} after one with it ({languages}); pick another seed"
        names = [n for n in by_two[0] if selection.language_of(n) == lang]
        for step in idle:
            assert all(torch.equal(by_two[step][n], by_two[step - 1][n]) for n in names), (lang, step, languages)


def test_clsr_settings_reach_the_layers(tiny_hf_dir, tiny_data, tmp_path):
    from pipeline.models.clsr import clsr_layers

    cfg = _config(tiny_hf_dir, tiny_data, tmp_path / "x", expert_dropout=0.0, skip_gate_prob=0.5, gate_budget=0.3)
    model, _, clsr = build_model(cfg)
    layers = clsr_layers(model)
    assert len(layers) == 2
    assert all(layer.experts["pl"].dropout.p == 0.0 for layer in layers)
    assert clsr.skip_gate_prob == 0.5 and clsr.budget == 0.3


def test_gates_learn_at_their_own_rate(tiny_hf_dir, tiny_data, tmp_path):
    cfg = _config(tiny_hf_dir, tiny_data, tmp_path / "g", gate_lr_scale=30.0)
    model, _, _ = build_model(cfg)
    groups = loop.make_optimizer(model, cfg).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    gates, others = (next(g for g in groups if g["scale"] == s) for s in (30.0, 1.0))
    assert gates["params"] and all(".gates." in names[id(p)] for p in gates["params"])
    assert others["params"] and all(".experts." in names[id(p)] for p in others["params"])
    with pytest.raises(DwPipeError, match="gate_lr_scale"):
        replace(cfg, gate_lr_scale=0.0).check()


def test_temperature_must_match_the_cache_with_the_ghost_tail(tiny_hf_dir, tiny_data, tmp_path):
    cfg = _config(tiny_hf_dir, tiny_data, tmp_path / "t", temperature=2.0, tail="ghost")
    with pytest.raises(DwPipeError, match="temperature 2.0 differs from the cache's 1.0"):
        train_student(cfg)
    summary = train_student(replace(cfg, tail="renorm", max_steps=1))  # re-tempered exactly instead
    assert summary["steps"] == 1


@pytest.mark.parametrize(
    ("languages", "message"),
    [(("pl", "xx"), r"languages \['xx'\] have no language token"), (("pl", "de"), r"has no utterance in \['de'\]")],
)
def test_unusable_languages_are_refused(tiny_hf_dir, tiny_data, tmp_path, languages, message):
    """xx is no Whisper language; de is in the manifests but not a training language of the tiny cache."""
    cfg = _config(tiny_hf_dir, tiny_data, tmp_path / "l", languages=languages)
    if "de" in languages:
        dev = tmp_path / "dev.jsonl"
        dev.write_text("".join(line + "\n" for line in tiny_data["dev"].read_text().splitlines() if '"de"' not in line))
        (tmp_path / "audio").symlink_to(tiny_data["dev"].parent / "audio")
        cfg = replace(cfg, dev=dev)
    with pytest.raises(DwPipeError, match=message):
        train_student(cfg)


def test_a_student_from_other_inputs_is_retrained(tiny_hf_dir, tiny_data, tmp_path, monkeypatch):
    """train_modes skips a mode only when settings and input contents match: a cache rebuilt with another top_k
    at the same path retrains the distilling student, not the one that never reads the cache."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(tiny_data["cache"], cache)
    common = {
        "languages": ["pl", "cs"],
        "base": str(tiny_hf_dir),
        "cache": str(cache),
        "train": str(tiny_data["train"]),
        "dev": str(tiny_data["dev"]),
        "clsr_decoder_layers": [0, 1],
        "max_steps": 1,
        "batch_size": 2,
        "max_new_tokens": 4,
    }
    stage = TrainStageConfig(("distilwhisper", "clsr"), tmp_path / "students", common)
    train_modes(stage)
    trained = []
    real = train_mod.train_student
    monkeypatch.setattr(train_mod, "train_student", lambda cfg, inputs: trained.append(cfg.mode) or real(cfg, inputs))
    train_modes(stage)
    assert trained == []  # up to date
    build_cache(
        CacheTeacherConfig(teacher=tiny_hf_dir, manifest=tiny_data["train"], out_dir=cache, top_k=4), force=True
    )
    train_modes(stage)
    assert trained == ["distilwhisper"]
    record = json.loads((tmp_path / "students" / "distilwhisper" / "student.json").read_text())
    from pipeline.cache.reader import cache_fingerprint

    assert record["inputs"]["cache_sha256"] == cache_fingerprint(cache)


def test_dev_decoding_reads_float32_encoder_outputs(tiny_hf_dir, tiny_data, tmp_path, monkeypatch):
    """The benchmark decodes from float32 encoder outputs; the dev decoding that picks the best step and the
    export's gate rates must see the same numbers (the training store keeps float16)."""
    seen, real = [], train_mod.dev_wer

    def recording(model, utts, store, tokenizer, cfg):
        seen.append({store.memo[u.id].dtype for u in utts})
        return real(model, utts, store, tokenizer, cfg)

    monkeypatch.setattr(train_mod, "dev_wer", recording)
    train_student(_config(tiny_hf_dir, tiny_data, tmp_path / "f32", max_steps=1))
    assert seen and all(dtypes == {torch.float32} for dtypes in seen)


def test_a_named_student_takes_its_mode_and_settings_and_windows_only_when_asked(tmp_path):
    from pipeline.data.manifest import load_manifest
    from pipeline.data.recordings import TimestampWindows, build_windows
    from pipeline.student.inputs import training_utterances
    from tests.conftest import write_tiny_manifest

    manifest = write_tiny_manifest(tmp_path / "prepared")
    utts = load_manifest(manifest)
    windows = build_windows(utts, manifest.parent, TimestampWindows(("pl", "cs"), share=0.3), seed=0)
    manifest.write_text("".join(u.to_json() + "\n" for u in utts + windows), encoding="utf-8")
    common = {"languages": ["pl", "cs"], "base": "b", "cache": "c", "train": str(manifest), "dev": str(manifest)}
    stage = TrainStageConfig(
        modes=("distilwhisper", "distilwhisper-plain"),
        out_dir=tmp_path / "students",
        common=common,
        per_mode={"distilwhisper-plain": {"mode": "distilwhisper", "timestamp_windows": False}},
    )
    with_windows, plain = stage.configs()
    assert (with_windows.mode, plain.mode) == ("distilwhisper", "distilwhisper")
    assert plain.out_dir == tmp_path / "students" / "distilwhisper-plain"
    assert len(windows) >= 1 and all(w.segments for w in windows)
    assert {u.id for u in training_utterances(with_windows)} == {u.id for u in utts + windows if u.language != "de"}
    assert {u.id for u in training_utterances(plain)} == {u.id for u in utts if u.language != "de"}


@pytest.mark.parametrize("encoder_layers", [(), (1,)], ids=["frozen-encoder-outputs", "log-mels"])
def test_features_past_the_memory_budget_are_made_again_to_the_same_student(
    tiny_hf_dir, tiny_data, tmp_path, encoder_layers
):
    """feature_memory_gb 0 holds nothing: every batch's log-mels (encoder experts) or frozen-encoder outputs are
    made when read, and the student is the one trained with everything held (bench/scale.py: a paper-sized corpus
    of log-mels would hold over 200 GB)."""
    from pipeline.models import decode

    runs = {}
    for name, budget in (("held", 8.0), ("made", 0.0)):
        decode._SHARED_MEMOS.clear()  # stores of one encoder share a memo within a process
        cfg = _config(
            tiny_hf_dir, tiny_data, tmp_path / name, clsr_encoder_layers=encoder_layers, feature_memory_gb=budget
        )
        train_student(cfg)
        held = sum(len(memo) for memo in decode._SHARED_MEMOS.values())
        runs[name] = (cfg.out_dir, held)
    assert runs["held"][1] > 0 and runs["made"][1] == 0
    for lang in ("pl", "cs"):
        a = load_file(str(runs["held"][0] / f"expert.{lang}.safetensors"))
        b = load_file(str(runs["made"][0] / f"expert.{lang}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), lang
    assert (runs["held"][0] / "train_log.jsonl").read_text() == (runs["made"][0] / "train_log.jsonl").read_text()
