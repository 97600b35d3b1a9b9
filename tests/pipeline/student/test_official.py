"""Importing the paper's released students: exact against an independent reference of the official forward."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.errors import DwPipeError
from pipeline.models.clsr import set_language
from pipeline.student import official
from pipeline.student.model import load_student
from tests.conftest import write_tiny_manifest
from tests.pipeline.student.official_standin import (
    copy_processor,
    official_state,
    reference_logits,
    write_standin,
)

NAMES = {"pl": "polish", "cs": "czech", "ca": "catalan"}


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return write_standin(tmp_path_factory.mktemp("released") / "multilingual-distilwhisper-tiny")


@pytest.fixture(scope="module")
def imported(standin, tiny_hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("students") / "released"
    official.import_official(f"distilwhisper:{standin}", out, processor=str(tiny_hf_dir))
    return out


def _inputs():
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(2, 80, 3000, generator=generator)
    ids = torch.tensor([[50258, 50261, 50359, 50363, 400, 1000, 77], [50258, 50283, 50359, 50363, 9, 31000, 5]])
    return features, ids


def _student_logits(folder, code):
    model, _ = load_student(folder)
    set_language(model, code)
    features, ids = _inputs()
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=ids).logits


@pytest.mark.parametrize("code", ["pl", "cs", "ca"])
def test_imported_student_matches_the_official_forward(standin, imported, code):
    features, ids = _inputs()
    with torch.no_grad():
        expected, routes = reference_logits(official_state(standin, NAMES[code]), features, ids, NAMES[code])
    assert any(0.0 < r < 1.0 for r in routes), routes  # the gates split tokens, so both branches are checked
    torch.testing.assert_close(_student_logits(imported, code), expected, atol=1e-4, rtol=1e-4)


def _swap(state, a, b):
    if a in state:
        state[a], state[b] = state[b], state[a]


def _replace(state, key, value):
    if value is not None:
        state[key] = value


# Mistakes a mapping could make, each on one file as split_state returns it: (base, {language name: experts}).
MISMAPPINGS = {
    "decoder norms swapped": lambda base, experts: _swap(
        base, "model.decoder.layers.1.self_attn_layer_norm.weight", "model.decoder.layers.1.final_layer_norm.weight"
    ),
    "shared FFN read from an expert": lambda base, experts: _replace(
        base, "model.encoder.layers.0.fc1.weight", experts.get("polish", {}).get("encoder.0.expert.fc1.weight")
    ),
    "expert layers off by one": lambda base, experts: _swap(
        experts.get("catalan", {}), "encoder.0.expert.fc2.weight", "encoder.1.expert.fc2.weight"
    ),
    "gates of the other side": lambda base, experts: _swap(
        experts.get("catalan", {}), "encoder.1.gate.w1.weight", "decoder.1.gate.w1.weight"
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISMAPPINGS))
def test_one_wrongly_mapped_tensor_breaks_the_match(standin, tiny_hf_dir, tmp_path, monkeypatch, mistake):
    """The exactness check above is sharp: mapping one tensor wrongly moves the logits past its tolerance."""
    split_state = official.split_state

    def wrong(state):
        base, experts = split_state(state)
        MISMAPPINGS[mistake](base, experts)
        return base, experts

    monkeypatch.setattr(official, "split_state", wrong)
    out = tmp_path / "student"
    official.import_official(f"distilwhisper:{standin}", out, processor=str(tiny_hf_dir))
    features, ids = _inputs()
    with torch.no_grad():
        expected, _ = reference_logits(official_state(standin, "catalan"), features, ids, "catalan")
    with pytest.raises(AssertionError):
        torch.testing.assert_close(_student_logits(out, "ca"), expected, atol=1e-4, rtol=1e-4)


def test_student_record_names_its_source_and_languages(imported):
    record = json.loads((imported / "student.json").read_text())
    assert record["mode"] == "distilwhisper" and record["languages"] == ["ca", "cs", "pl"]
    assert record["clsr"]["encoder_layers"] == [0, 1] and record["clsr"]["decoder_layers"] == [0, 1]
    assert record["clsr"]["gate_hidden"] == 16
    assert record["training"]["official_languages"] == {"ca": "catalan", "cs": "czech", "pl": "polish"}
    assert set(record["training"]["source_sha256"]) == {
        "pytorch_model.bin",
        "expert.czech.bin",
        "expert.catalan.safetensors",
    }
    assert record["base"] == str(imported / "base") and (imported / "base" / "model.safetensors").is_file()


def test_language_names_and_codes():
    assert official.language_code("catalan") == "ca" and official.language_code("Czech") == "cs"
    assert official.language_code("valencian") == "ca" and official.language_code("fi") == "fi"
    assert official.language_name("ca") == "catalan"
    with pytest.raises(DwPipeError, match="neither a Whisper language name nor a code"):
        official.language_code("klingon")


class Payload:
    """Any object a pickle could carry besides tensors."""


def test_a_pickle_with_objects_is_refused_in_one_line(standin, tiny_hf_dir, tmp_path):
    import shutil

    folder = tmp_path / "released"
    shutil.copytree(standin, folder)
    torch.save({"model.encoder.layers.0.ffn_clsr.gate_out.czech.weight": Payload()}, folder / "expert.czech.bin")
    with pytest.raises(DwPipeError, match="not a plain tensor state dict, refusing to unpickle it") as err:
        official.import_official(f"distilwhisper:{folder}", tmp_path / "out", processor=str(tiny_hf_dir))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_an_expert_file_with_base_weights_is_refused(standin, tiny_hf_dir, tmp_path):
    import shutil

    folder = tmp_path / "released"
    shutil.copytree(standin, folder)
    state = torch.load(folder / "expert.czech.bin", weights_only=True)
    state["model.decoder.layer_norm.weight"] = torch.ones(64)
    torch.save(state, folder / "expert.czech.bin")
    with pytest.raises(DwPipeError, match="holds more than czech's experts and gates"):
        official.import_official(f"distilwhisper:{folder}", tmp_path / "out", processor=str(tiny_hf_dir))


def test_a_missing_language_and_a_missing_tokenizer_are_one_line(standin, tiny_hf_dir, tmp_path):
    with pytest.raises(DwPipeError, match=r"no experts for fi; it has ca \(catalan\), cs \(czech\), pl \(polish\)"):
        official.import_official(
            f"distilwhisper:{standin}", tmp_path / "a", languages=("fi",), processor=str(tiny_hf_dir)
        )
    with pytest.raises(DwPipeError, match="give one with --processor"):
        official.import_official(f"distilwhisper:{standin}", tmp_path / "b")


def test_a_hub_spec_downloads_only_the_asked_languages(standin, tiny_hf_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, allow_patterns))
        folder = tmp_path / "hub"
        if not folder.exists():
            import shutil

            shutil.copytree(standin, folder)
            copy_processor(tiny_hf_dir, folder)  # a Hub folder with its own tokenizer
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    record = official.import_official(
        "distilwhisper:naver/multilingual-distilwhisper-28k", tmp_path / "s", languages=("cs",)
    )
    ((repo, patterns),) = calls
    assert repo == "naver/multilingual-distilwhisper-28k"
    assert "expert.czech.*" in patterns and not any("catalan" in p for p in patterns)
    assert record["languages"] == ["cs"] and record["training"]["processor"] == str(tmp_path / "hub")


def test_import_then_gates_then_export_from_the_command_line(standin, tiny_hf_dir, tmp_path):
    runner = CliRunner()
    student = tmp_path / "released"
    result = runner.invoke(
        app,
        [
            "--no-progress",
            "import-student",
            f"distilwhisper:{standin}",
            "--out",
            str(student),
            "--language",
            "pl",
            "--language",
            "cs",
            "--processor",
            str(tiny_hf_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pl, cs experts on 2 encoder and 2 decoder layers" in result.output or "cs, pl" in result.output
    export = runner.invoke(app, ["export-student", str(student), "--language", "pl", "--out", str(tmp_path / "x")])
    assert export.exit_code == 2 and "dw-pipe student-gates" in export.output
    dev = write_tiny_manifest(tmp_path / "prepared", "dev.jsonl")
    gates = runner.invoke(
        app, ["--no-progress", "student-gates", str(student), "--dev", str(dev), "--max-new-tokens", "4"]
    )
    assert gates.exit_code == 0, gates.output
    summary = json.loads((student / "dev.json").read_text())
    assert set(summary["gate_rates"]) == {"pl", "cs"} and summary["measured_on"]["utterances"] == 5
    assert set(summary["gate_rates"]["pl"]) == {"encoder.0", "encoder.1", "decoder.0", "decoder.1"}
    export = runner.invoke(app, ["export-student", str(student), "--language", "pl", "--out", str(tmp_path / "x")])
    assert export.exit_code == 0, export.output
    info = json.loads((tmp_path / "x" / "export.json").read_text())
    assert {r["branch"] for r in info["routing"].values()} <= {"expert", "shared"} and len(info["routing"]) == 4
    for layer, route in info["routing"].items():
        assert route["dev_gate_rate"] == round(summary["gate_rates"]["pl"][layer], 4)
    quantized = runner.invoke(
        app,
        [
            "quantize",
            str(tmp_path / "x"),
            "--out",
            str(tmp_path / "ct2" / "released-pl-int8"),
            "--compute-type",
            "int8",
        ],
    )
    assert quantized.exit_code == 0, quantized.output
    record = json.loads((tmp_path / "ct2" / "released-pl-int8" / "quantize.json").read_text())
    assert record["source"] == str(tmp_path / "x") and record["requested_compute_type"] == "int8"
