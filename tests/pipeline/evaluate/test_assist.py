"""Speculative decoding with a student as the teacher's assistant: the teacher's greedy ids exactly, whatever the
assistant drafts; assistants with another token space refused in one line; the command's JSON."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from transformers import WhisperForConditionalGeneration
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.manifest import load_manifest
from pipeline.evaluate.assist import AssistError, UtteranceTiming, assisted_decode, check_assistant
from pipeline.models.tiny import save_tiny_whisper
from tests.conftest import write_tiny_manifest

CAP = 6  # new tokens: the tiny random models never end, so each decode stops here
EOS = 50257


def _variant(base: Path, out: Path, change) -> Path:
    """A copy of the checkpoint ``base`` whose model ``change`` edited in place (tokenizer files as they were)."""
    shutil.copytree(base, out)
    model = WhisperForConditionalGeneration.from_pretrained(out)
    with torch.no_grad():
        change(model)
    model.save_pretrained(out)
    return out


def _other_decoder(model) -> None:
    """New decoder weights over the same encoder: a student that keeps the teacher's frozen encoder."""
    generator = torch.Generator().manual_seed(7)
    for param in model.get_decoder().parameters():
        param.add_(torch.randn(param.shape, generator=generator) * 0.05)


@pytest.fixture(scope="module")
def polish(tmp_path_factory) -> tuple[list, Path]:
    manifest = write_tiny_manifest(tmp_path_factory.mktemp("prepared"), "test.jsonl")
    return [u for u in load_manifest(manifest) if u.language == "pl"][:2], manifest.parent


@pytest.mark.parametrize("assistant", ["itself", "other decoder", "other model"])
def test_assisted_ids_are_the_teachers_greedy_ids(assistant, tiny_hf_dir, tmp_path, polish):
    """The teacher as its own assistant keeps every draft; an assistant with other weights (its own encoder, or
    the teacher's) keeps few; the ids are the teacher's plain greedy ids every time."""
    folder = {
        "itself": lambda: tiny_hf_dir,
        "other decoder": lambda: _variant(tiny_hf_dir, tmp_path / "student", _other_decoder),
        "other model": lambda: save_tiny_whisper(tmp_path / "other", seed=99),
    }[assistant]()
    utts, root = polish
    result = assisted_decode(tiny_hf_dir, folder, utts, root, "pl", CAP)
    summary = result.summary()
    assert summary["utterances"] == len(utts) == 2
    assert summary["identical"] == 2
    assert summary["tokens"] == summary["plain_passes"] == 2 * CAP  # no end-of-text: every decode hits the cap
    assert result.shared_encoder == (assistant != "other model")
    assert summary["accepted"] == summary["plain_passes"] - summary["teacher_passes"]
    if assistant == "itself":
        assert summary["accepted"] == summary["drafted"] > 0
    else:
        assert summary["accepted"] < summary["drafted"]


def _ends_at_once(model) -> None:
    """A decoder that always prefers end-of-text: its last layer norm points every state at that token."""
    eos = model.get_decoder().embed_tokens.weight[EOS]
    model.get_decoder().layer_norm.bias.add_(50 * eos / eos.norm())


def test_first_step_suppression_kept(tiny_hf_dir, tmp_path, polish):
    """Plain greedy never ends on its first step (Whisper suppresses blank and end-of-text there); transformers
    drops that rule beside an assistant, and assisted decoding passes it back: one token, then the end."""
    teacher = _variant(tiny_hf_dir, tmp_path / "teacher", _ends_at_once)
    utts, root = polish
    result = assisted_decode(teacher, teacher, utts, root, "pl", CAP)
    assert [u.tokens for u in result.utterances] == [1, 1]
    assert all(u.identical for u in result.utterances)


def test_a_differing_decode_is_reported(tiny_hf_dir, polish, monkeypatch):
    """An assisted decode that lost its last token is counted as not identical (the fault put in its ids)."""
    import pipeline.evaluate.assist as assist

    real = assist.assisted_ids
    monkeypatch.setattr(assist, "assisted_ids", lambda *args: real(*args)[:-1])
    utts, root = polish
    result = assisted_decode(tiny_hf_dir, tiny_hf_dir, utts[:1], root, "pl", CAP)
    assert [u.identical for u in result.utterances] == [False]
    assert result.summary()["identical"] == 0


def _config_edit(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: _config_edit(f, vocab_size=51864), "has a vocabulary of 51864 tokens, teacher"),
        (lambda f: (f / "vocab.json").write_text("{}"), "vocab.json differs from the teacher's"),
        (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json differs from the teacher's"),
        (lambda f: (f / "export.json").write_text('{"language": "cs"}'), "was exported for cs, not pl"),
        (lambda f: (f / "student.json").write_text("{}"), "is a CLSR student folder"),
    ],
)
def test_other_token_space_refused_in_one_line(edit, message, tiny_hf_dir, tmp_path):
    assistant = shutil.copytree(tiny_hf_dir, tmp_path / "assistant")
    check_assistant(tiny_hf_dir, assistant, "pl")  # the copy itself is fine
    edit(assistant)
    with pytest.raises(AssistError, match=message):
        check_assistant(tiny_hf_dir, assistant, "pl")
    manifest = write_tiny_manifest(tmp_path / "prepared", "test.jsonl")
    args = ["assist", str(tiny_hf_dir), str(assistant), "--language", "pl", "--manifest", str(manifest)]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "4"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_command_writes_the_json(tiny_hf_dir, tmp_path):
    """`dw-pipe assist` decodes --limit rows of --language and writes per-utterance and total fields."""
    manifest = write_tiny_manifest(tmp_path / "prepared", "test.jsonl")
    student = _variant(tiny_hf_dir, tmp_path / "student", _other_decoder)
    out = tmp_path / "out" / "assist.json"
    args = ["assist", str(tiny_hf_dir), str(student), "--language", "pl", "--manifest", str(manifest)]
    result = CliRunner().invoke(app, [*args, "--limit", "2", "--max-new-tokens", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split()[:3] == ["language", "utts", "identical"]
    record = json.loads(out.read_text())
    assert [u["id"] for u in record["per_utterance"]] == ["utt-0", "utt-2"]  # the first two Polish rows
    assert {k: record[k] for k in ("language", "max_new_tokens", "utterances", "identical", "shared_encoder")} == {
        "language": "pl",
        "max_new_tokens": 4,
        "utterances": 2,
        "identical": 2,
        "shared_encoder": True,
    }
    rows = record["per_utterance"]
    # the totals are the sums of the stored per-utterance seconds, and the ratio is theirs to its 3 decimals: on a
    # tiny model each pass takes milliseconds, where rounding the totals once more would move the ratio by 0.3 %
    for f in ("plain_seconds", "assisted_seconds"):
        assert record[f] == pytest.approx(sum(u[f] for u in rows), abs=1e-9)
    assert record["speed_ratio"] == pytest.approx(record["plain_seconds"] / record["assisted_seconds"], abs=5.1e-4)
    assert record["acceptance"] == pytest.approx(record["accepted"] / record["drafted"], abs=1e-3)
    assert set(rows[0]) == {f.name for f in fields(UtteranceTiming)}
    assert {"identical", "plain_seconds", "assisted_seconds", "teacher_passes", "drafted", "accepted"} <= set(rows[0])
    assert record["decoder_weights"]["assistant"] == record["decoder_weights"]["teacher"] > 0
    assert record["draft"]["num_assistant_tokens"] > 0 and "cpu" in record["machine"]
    assert not [p for p in out.parent.iterdir() if p.name != "assist.json"]  # no temporary file left
