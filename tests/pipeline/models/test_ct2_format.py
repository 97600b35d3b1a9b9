"""The CTranslate2 model.bin reader: parses what CTranslate2 writes, refuses what is broken."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.models.ct2_format import CT2FormatError, encoder_fingerprint, model_bin_parts, read_ct2_model
from tests.ct2_writer import serialize, write_model_dir


def test_reads_ctranslate2_output(tiny_ct2):
    ckpt = read_ct2_model([tiny_ct2["float16"] / "model.bin"])
    assert ckpt.binary_version == 6
    assert ckpt.spec_name == "WhisperSpec"
    assert ckpt.scalar("encoder/num_heads") == 4
    assert ckpt.get("encoder/conv1/weight").shape == (64, 80, 3)
    assert ckpt.dtypes["decoder/embeddings/weight"] == "float16"
    assert ckpt.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"


def test_writer_round_trip_is_byte_exact(tiny_ct2):
    raw = (tiny_ct2["float32"] / "model.bin").read_bytes()
    assert serialize(read_ct2_model([tiny_ct2["float32"] / "model.bin"])) == raw


def test_encoder_fingerprint_sees_the_encoder_only(tiny_ct2, tmp_path):
    src = tiny_ct2["float32"]
    ckpt = read_ct2_model([src / "model.bin"])
    original = encoder_fingerprint(src)

    def variant(name: str, change) -> str:
        variables = dict(ckpt.variables)
        variables[name] = change(variables[name].copy())
        folder = write_model_dir(src, tmp_path / name.replace("/", "_"), serialize(replace(ckpt, variables=variables)))
        return encoder_fingerprint(folder)

    def bump(a):
        a.reshape(-1)[0] += 1
        return a

    assert variant("decoder/layer_0/ffn/linear_0/weight", bump) == original  # a decoder-only student
    assert variant("encoder/layer_0/ffn/linear_0/weight", bump) != original
    assert encoder_fingerprint(tiny_ct2["float16"]) != original


def test_split_parts_read_as_one_stream(tiny_ct2, tmp_path):
    src = tiny_ct2["float16"]
    whole = read_ct2_model([src / "model.bin"])
    folder = write_model_dir(src, tmp_path / "split", (src / "model.bin").read_bytes(), parts=3)
    parts = model_bin_parts([folder])
    assert [p.name for p in parts] == ["model.bin.part1", "model.bin.part2", "model.bin.part3"]
    split = read_ct2_model(parts)
    assert split.variables.keys() == whole.variables.keys()
    assert all(np.array_equal(split.variables[k], whole.variables[k]) for k in whole.variables)


def test_parts_may_lie_in_several_folders(tiny_ct2, tmp_path):
    src = tiny_ct2["float16"]
    folder = write_model_dir(src, tmp_path / "split", (src / "model.bin").read_bytes(), parts=2)
    other = tmp_path / "other"
    other.mkdir()
    (folder / "model.bin.part2").rename(other / "model.bin.part2")
    assert [p.parent for p in model_bin_parts([folder, other])] == [folder, other]


def test_missing_part_is_named(tiny_ct2, tmp_path):
    src = tiny_ct2["float16"]
    folder = write_model_dir(src, tmp_path / "split", (src / "model.bin").read_bytes(), parts=3)
    (folder / "model.bin.part2").unlink()
    with pytest.raises(CT2FormatError, match=r"part\(s\) \[2\] missing"):
        model_bin_parts([folder])


def test_truncated_file_is_refused(tiny_ct2, tmp_path):
    src = tiny_ct2["float16"]
    data = (src / "model.bin").read_bytes()
    folder = write_model_dir(src, tmp_path / "short", data[: len(data) - 1000], parts=2)
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_model(model_bin_parts([folder]))


def test_trailing_bytes_are_refused(tiny_ct2, tmp_path):
    src = tiny_ct2["float16"]
    folder = write_model_dir(src, tmp_path / "long", (src / "model.bin").read_bytes() + b"\0\0")
    with pytest.raises(CT2FormatError, match="unexpected bytes"):
        read_ct2_model([folder / "model.bin"])


def test_unknown_dtype_id_is_refused(tiny_ct2, tmp_path):
    ckpt = read_ct2_model([tiny_ct2["float16"] / "model.bin"])
    data = serialize(ckpt, dtype_ids={"encoder/conv1/bias": 9})
    folder = write_model_dir(tiny_ct2["float16"], tmp_path / "bad", data)
    with pytest.raises(CT2FormatError, match="unknown dtype id 9"):
        read_ct2_model([folder / "model.bin"])


def test_no_model_file(tmp_path):
    with pytest.raises(CT2FormatError, match="no model.bin"):
        model_bin_parts([tmp_path])
