"""The CTranslate2 -> HF importer is exact, complete, and refuses what it cannot import."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.models.ct2_format import read_ct2_model
from pipeline.models.ct2_import import CT2ImportError, CT2Source, import_ct2
from pipeline.models.decode import faster_whisper_segments, faster_whisper_transcribe
from pipeline.models.parity import (
    agree_up_to_shorter,
    compare_variables,
    convert_with_ctranslate2,
    greedy_ctranslate2,
    greedy_transformers,
    prompt_ids,
)
from tests.ct2_writer import serialize, write_model_dir


def _source(folder) -> CT2Source:
    return CT2Source(str(folder), (folder,))


def _reference_state(tiny_hf_dir) -> dict[str, torch.Tensor]:
    state = load_file(str(tiny_hf_dir / "model.safetensors"))
    return {k: v for k, v in state.items() if k != "proj_out.weight"}


@pytest.fixture(scope="module")
def imported(tiny_ct2, tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    return {q: import_ct2(_source(tiny_ct2[q]), root / q).out for q in ("float32", "float16")}


def test_float32_import_reproduces_every_tensor(imported, tiny_hf_dir):
    reference = _reference_state(tiny_hf_dir)
    got = load_file(str(imported["float32"] / "model.safetensors"))
    got.pop("proj_out.weight", None)
    assert got.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(got[name], tensor), name


def test_float16_import_is_the_float16_rounding(imported, tiny_hf_dir):
    reference = _reference_state(tiny_hf_dir)
    got = load_file(str(imported["float16"] / "model.safetensors"))
    for name, tensor in reference.items():
        assert got[name].dtype == torch.float32
        assert torch.equal(got[name], tensor.half().float()), name


@pytest.mark.parametrize("quantization", ["float16", "float32"])
def test_reconversion_reproduces_model_bin(imported, tiny_ct2, tmp_path, quantization):
    again = convert_with_ctranslate2(imported[quantization], tmp_path / "again", quantization)
    diff = compare_variables(
        read_ct2_model([tiny_ct2[quantization] / "model.bin"]), read_ct2_model([again / "model.bin"])
    )
    assert diff.exact, diff
    assert diff.compared > 50


def test_checkpoint_is_complete(imported):
    from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperTokenizer

    folder = imported["float16"]
    gen = GenerationConfig.from_pretrained(folder)
    assert gen.lang_to_id["<|de|>"] == 50261 and len(gen.lang_to_id) == 99
    assert gen.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert gen.alignment_heads == [[1, 0], [1, 2]]
    assert gen.no_timestamps_token_id == 50363
    assert gen.suppress_tokens and gen.begin_suppress_tokens == [220, 50257]
    tokenizer = WhisperTokenizer.from_pretrained(folder)
    assert prompt_ids(tokenizer, "pl") == [50258, 50269, 50359, 50363]
    assert tokenizer.decode(tokenizer("Dzień dobry", add_special_tokens=False).input_ids) == "Dzień dobry"
    assert WhisperFeatureExtractor.from_pretrained(folder).feature_size == 80
    record = json.loads((folder / "import.json").read_text())
    assert record["source_dtypes"] == ["float16"] and len(record["weights_sha256"]) == 64
    for name in ("vocab.json", "merges.txt", "preprocessor_config.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), name


def test_generate_with_language_runs(imported):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(imported["float32"]).eval()
    features = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32))
    out = model.generate(features, language="de", task="transcribe", max_new_tokens=5)
    assert out.shape[1] >= 1


def test_transformers_and_ctranslate2_decode_alike(imported, tiny_ct2):
    import ctranslate2
    from transformers import WhisperForConditionalGeneration, WhisperTokenizer

    model = WhisperForConditionalGeneration.from_pretrained(imported["float32"]).eval()
    tokenizer = WhisperTokenizer.from_pretrained(imported["float32"])
    features = np.random.default_rng(1).standard_normal((3, 80, 3000)).astype(np.float32)
    prompts = [prompt_ids(tokenizer, lang) for lang in ("de", "pl", "zh")]
    hf = greedy_transformers(model, features, prompts, max_new_tokens=24)
    ct2 = greedy_ctranslate2(ctranslate2.models.Whisper(str(tiny_ct2["float32"])), features, prompts, max_new_tokens=24)
    assert all(len(seq) > 0 for seq in hf)
    assert [agree_up_to_shorter(a, b) for a, b in zip(hf, ct2)] == [True, True, True]
    # The same cap gives the same length (CTranslate2 halves max_length; decode.ct2_max_length undoes it).
    assert [len(a) for a in hf] == [len(b) for b in ct2]
    assert max(len(a) for a in hf) == 24  # the random model runs to the cap at least once


def test_faster_whisper_stops_at_the_same_cap(tiny_ct2):
    from faster_whisper import WhisperModel

    audio = np.random.default_rng(3).standard_normal(16_000 * 3).astype(np.float32) * 0.1
    model = WhisperModel(str(tiny_ct2["float32"]), device="cpu", compute_type="float32")
    for cap in (5, 24):
        segments = faster_whisper_segments(model, audio, "de", cap)
        assert sum(len(s.tokens) for s in segments) == cap
    assert faster_whisper_transcribe(model, audio, "de", 5)


def test_same_source_twice_is_a_no_op(tiny_ct2, tmp_path):
    first = import_ct2(_source(tiny_ct2["float16"]), tmp_path / "m")
    second = import_ct2(_source(tiny_ct2["float16"]), tmp_path / "m")
    assert not first.skipped and second.skipped


def test_output_holding_something_else_is_refused(tiny_ct2, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CT2ImportError, match="already holds something else"):
        import_ct2(_source(tiny_ct2["float16"]), out)
    assert (out / "notes.txt").read_text() == "mine"
    import_ct2(_source(tiny_ct2["float16"]), out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").is_file()


def test_other_model_over_an_import_is_refused(tiny_ct2, tmp_path):
    import_ct2(_source(tiny_ct2["float16"]), tmp_path / "m")
    with pytest.raises(CT2ImportError, match="already holds something else"):
        import_ct2(_source(tiny_ct2["float32"]), tmp_path / "m")


def test_quantized_model_is_refused(tiny_ct2, tmp_path):
    with pytest.raises(CT2ImportError, match="int8"):
        import_ct2(_source(tiny_ct2["int8"]), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_non_whisper_spec_is_refused(tiny_ct2, tmp_path):
    ckpt = read_ct2_model([tiny_ct2["float16"] / "model.bin"])
    folder = write_model_dir(tiny_ct2["float16"], tmp_path / "t5", serialize(ckpt, spec_name="TransformerSpec"))
    with pytest.raises(CT2ImportError, match="TransformerSpec model, not WhisperSpec"):
        import_ct2(_source(folder), tmp_path / "m")


@pytest.mark.parametrize("missing", ["config.json", "tokenizer.json"])
def test_missing_side_file_is_named(tiny_ct2, tmp_path, missing):
    folder = tmp_path / "src"
    shutil.copytree(tiny_ct2["float16"], folder)
    (folder / missing).unlink()
    with pytest.raises(CT2ImportError, match=f"{missing} not found"):
        import_ct2(_source(folder), tmp_path / "m")
