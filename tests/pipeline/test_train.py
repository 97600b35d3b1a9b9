"""train_student on the tiny Whisper: every mode trains, resumes exactly, and writes a loadable student."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline import train as train_mod
from pipeline.cache import CacheTeacherConfig, build_cache
from pipeline.student import load_student
from pipeline.train import TrainConfig, train_student
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
    cfg = _config(tiny_hf_dir, tiny_data, tmp_path / mode, mode=mode)
    summary = train_student(cfg)
    assert summary["steps"] == 2 * 3  # 2 epochs x (pl: 3 utterances in 2 batches, cs: 2 in 1)
    folder = cfg.out_dir
    record = json.loads((folder / "student.json").read_text())
    assert record["mode"] == mode
    log_lines = (folder / "train_log.jsonl").read_text().splitlines()
    assert len(log_lines) == summary["steps"]
    first = json.loads(log_lines[0])
    assert ("kd" in first) == (mode == "distilwhisper") and ("gate" in first) == (mode in ("distilwhisper", "clsr"))
    if mode in ("distilwhisper", "clsr"):
        assert {p.name for p in folder.glob("expert.*")} == {"expert.pl.safetensors", "expert.cs.safetensors"}
    model, _ = load_student(folder)
    assert not model.training


def test_interrupted_training_resumes_to_the_same_result(tiny_hf_dir, tiny_data, tmp_path, monkeypatch):
    reference = _config(tiny_hf_dir, tiny_data, tmp_path / "ref")
    train_student(reference)
    cfg = _config(tiny_hf_dir, tiny_data, tmp_path / "resumed")
    real_step, calls = train_mod.step_loss, []

    def dies_at_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "step_loss", dies_at_third_step)
    with pytest.raises(KeyboardInterrupt):
        train_student(cfg)
    monkeypatch.setattr(train_mod, "step_loss", real_step)
    train_student(cfg)
    for lang in ("pl", "cs"):
        a = load_file(str(reference.out_dir / f"expert.{lang}.safetensors"))
        b = load_file(str(cfg.out_dir / f"expert.{lang}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), lang
    assert (reference.out_dir / "train_log.jsonl").read_text() == (cfg.out_dir / "train_log.jsonl").read_text()


def test_two_ranks_under_torchrun_train(tiny_hf_dir, tiny_data, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    params = tmp_path / "params.yaml"
    params.write_text(
        "train_student:\n  modes: [distilwhisper]\n"
        f"  out_dir: {tmp_path / 'ddp'}\n"
        "  common:\n    languages: [pl, cs]\n"
        f"    base: {tiny_hf_dir}\n    cache: {tiny_data['cache']}\n    train: {tiny_data['train']}\n    dev: {tiny_data['dev']}\n"
        "    clsr_decoder_layers: [0, 1]\n    epochs: 2\n    batch_size: 1\n    max_new_tokens: 4\n    device: cpu\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29544",
           "-m", "pipeline.cli", "--no-progress", "train-student", "--params", str(params)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "distilwhisper" / "dev.json").read_text())
    # 5 single-utterance batches per epoch shared by 2 ranks: 3 optimizer steps per epoch
    assert summary["steps"] == 2 * 3
    assert (tmp_path / "ddp" / "distilwhisper" / "expert.pl.safetensors").is_file()


def test_clsr_settings_reach_the_layers(tiny_hf_dir, tiny_data, tmp_path):
    from pipeline.clsr import clsr_layers
    from pipeline.train import build_model

    cfg = _config(tiny_hf_dir, tiny_data, tmp_path / "x", expert_dropout=0.0, skip_gate_prob=0.5, gate_budget=0.3)
    model, _, clsr = build_model(cfg)
    layers = clsr_layers(model)
    assert len(layers) == 2
    assert all(layer.experts["pl"].dropout.p == 0.0 for layer in layers)
    assert clsr.skip_gate_prob == 0.5 and clsr.budget == 0.3
