"""Shard encodings round-trip: rank ids exactly, float16 and q8 values within their precision."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.cache_format import (
    Q8_STEP,
    ShardArrays,
    decode_table,
    deltas_to_f16,
    dequantize_q8,
    f16_to_deltas,
    quantize_q8,
    to_bytes,
)


def _arrays(rng, k=8) -> ShardArrays:
    lengths = [3, 5, 1]
    n = sum(lengths)
    logits = rng.standard_normal((n, 500)) * 3
    logprobs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    order = np.argsort(-logprobs, axis=1)[:, :k]
    top = np.take_along_axis(logprobs, order, 1)
    return ShardArrays(
        ids=["a", "b", "c"],
        languages=["pl", "de", "cs"],
        prompts=[[50258, 50269, 50359, 50363]] * 3,
        labels=rng.integers(0, 500, n),
        offsets=np.cumsum([0, *lengths]),
        topk_ids=(order * 97) % 51865,
        topk_logprobs=top.astype(np.float32),
        tail_logprob=np.log1p(-np.exp(top).sum(1)).astype(np.float32),
    )


@pytest.mark.parametrize("id_encoding", ["raw", "rank"])
@pytest.mark.parametrize("value_encoding", ["float16", "q8"])
def test_round_trip(id_encoding, value_encoding):
    arrays = _arrays(np.random.default_rng(0))
    data = to_bytes(arrays, id_encoding, value_encoding, {b"extra": b"1"})
    meta = pq.read_metadata(io.BytesIO(data)).metadata
    assert meta[b"extra"] == b"1"
    back = decode_table(pq.read_table(io.BytesIO(data)), meta, 8, id_encoding, value_encoding)
    assert back.ids == arrays.ids and back.prompts == arrays.prompts
    assert np.array_equal(back.labels, arrays.labels) and np.array_equal(back.offsets, arrays.offsets)
    assert np.array_equal(back.topk_ids, arrays.topk_ids)
    if value_encoding == "q8":
        assert np.abs(back.topk_logprobs - arrays.topk_logprobs).max() <= Q8_STEP / 2 + 1e-6
    else:  # exactly the float16 values
        assert np.array_equal(back.topk_logprobs, arrays.topk_logprobs.astype(np.float16).astype(np.float32))
    assert np.all(np.diff(back.topk_logprobs, axis=1) <= 0)
    assert np.abs(back.tail_logprob - arrays.tail_logprob).max() < 1e-2


def test_float16_deltas_are_exact_for_any_row():
    """Sorted rows give small differences; unsorted rows and odd values still come back bit for bit."""
    rng = np.random.default_rng(2)
    sorted_rows = -np.sort(rng.exponential(3.0, (50, 16)), axis=1).astype(np.float32)
    codes = f16_to_deltas(sorted_rows)
    assert codes[:, 1:].max() < 2**15  # non-negative steps, no wrap-around
    odd = np.array([[0.0, -0.0, 1e-8, -np.inf, -60000.0, 3.5, -1e-7, np.nan]], dtype=np.float32)
    for rows in (sorted_rows, rng.standard_normal((7, 16)).astype(np.float32) * 20, odd):
        back = deltas_to_f16(f16_to_deltas(rows))
        assert np.array_equal(back.astype(np.float16).view(np.uint16), rows.astype(np.float16).view(np.uint16))


def test_q8_errors_do_not_accumulate():
    values = -np.cumsum(np.full((1, 64), 0.3 + Q8_STEP / 3), axis=1)
    assert np.abs(dequantize_q8(quantize_q8(values)) - values).max() <= Q8_STEP / 2 + 1e-9


def test_wrong_k_is_detected():
    arrays = _arrays(np.random.default_rng(1))
    data = to_bytes(arrays, "raw", "float16")
    with pytest.raises(ValueError, match="do not hold 4 entries"):
        decode_table(pq.read_table(io.BytesIO(data)), None, 4, "raw", "float16")
