"""Shard encodings round-trip: ids exactly, values within their precision, kept counts and padding intact."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cache.format import (
    ID_ENCODINGS,
    PAD_ID,
    Q8_STEP,
    SQRT_LEVELS,
    TAIL_STEP,
    VALUE_ENCODINGS,
    ShardArrays,
    code_values,
    decode_flat,
    decode_table,
    segment_cumsum,
    segment_deltas,
    to_bytes,
    value_codes,
)


def _arrays(rng, k=8, variable=False) -> ShardArrays:
    lengths = [3, 5, 1]
    n = sum(lengths)
    logits = rng.standard_normal((n, 500)) * 3
    logprobs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    order = np.argsort(-logprobs, axis=1)[:, :k]
    top = np.take_along_axis(logprobs, order, 1).astype(np.float32)
    ids = (order * 97) % 51865
    counts = rng.integers(1, k + 1, n) if variable else None
    if variable:
        counts[0], counts[1] = 1, k  # both ends
        pad = np.arange(k)[None, :] >= counts[:, None]
        ids[pad], top[pad] = PAD_ID, -np.inf
    kept = np.where(np.isfinite(top), np.exp(top.astype(np.float64)), 0).sum(1)
    return ShardArrays(
        ids=["a", "b", "c"],
        languages=["pl", "de", "cs"],
        prompts=[[50258, 50269, 50359, 50363]] * 3,
        labels=rng.integers(0, 500, n),
        offsets=np.cumsum([0, *lengths]),
        topk_ids=ids,
        topk_logprobs=top,
        tail_logprob=np.log1p(-kept).astype(np.float32),
        counts=counts,
    )


def _round_trip(arrays, id_encoding, value_encoding, k=8):
    data = to_bytes(arrays, id_encoding, value_encoding, {b"extra": b"1"})
    meta = pq.read_metadata(io.BytesIO(data)).metadata
    assert meta[b"extra"] == b"1"
    return decode_table(pq.read_table(io.BytesIO(data)), meta, k, id_encoding, value_encoding)


@pytest.mark.parametrize("variable", [False, True])
@pytest.mark.parametrize("id_encoding", ID_ENCODINGS)
@pytest.mark.parametrize("value_encoding", VALUE_ENCODINGS)
def test_round_trip(id_encoding, value_encoding, variable):
    arrays = _arrays(np.random.default_rng(0), variable=variable)
    back = _round_trip(arrays, id_encoding, value_encoding)
    assert back.ids == arrays.ids and back.prompts == arrays.prompts
    assert np.array_equal(back.labels, arrays.labels) and np.array_equal(back.offsets, arrays.offsets)
    assert np.array_equal(back.kept(), arrays.kept())
    mask = arrays.mask()
    assert np.array_equal(back.mask(), mask)
    assert np.all(back.topk_ids[~mask] == PAD_ID) and np.all(back.topk_logprobs[~mask] == -np.inf)
    got, want = back.topk_logprobs[mask], arrays.topk_logprobs[mask]
    if value_encoding == "float16":  # exactly the float16 values, the ids in the very same order
        assert np.array_equal(got, want.astype(np.float16).astype(np.float32))
        assert np.array_equal(back.topk_ids, arrays.topk_ids)
    else:
        if value_encoding == "q8":
            assert np.abs(got - want).max() <= Q8_STEP / 2 + 1e-6
        else:  # sqrt64: half a step of sqrt(p)
            assert np.abs(np.exp(got / 2) - np.exp(want / 2)).max() <= 0.5 / SQRT_LEVELS + 1e-6
        # each position holds the same ids (ties after rounding may swap places)
        for t in range(len(arrays.labels)):
            assert sorted(back.topk_ids[t][mask[t]]) == sorted(arrays.topk_ids[t][mask[t]])
        assert np.abs(back.tail_logprob - arrays.tail_logprob).max() <= TAIL_STEP / 2 + 1e-6
    assert np.all(np.diff(np.where(back.mask(), back.topk_logprobs, -1e30), axis=1) <= 0)  # best entry first
    if value_encoding == "float16":
        assert np.abs(back.tail_logprob - arrays.tail_logprob).max() < 1e-2


@pytest.mark.parametrize("encoding", VALUE_ENCODINGS)
def test_value_codes_grow_as_log_probs_fall(encoding):
    values = -np.sort(np.random.default_rng(2).exponential(3.0, 400))[::-1].astype(np.float32)
    values = values[np.exp(values) > 1 / SQRT_LEVELS**2]  # sqrt64 holds probabilities down to 1/64^2
    codes = value_codes(values[::-1][None, :], encoding)[0]
    assert np.all(np.diff(codes) >= 0)
    back = code_values(codes, encoding)
    assert np.all(np.isfinite(back))


def test_float16_codes_are_exact_for_any_value():
    odd = np.array([0.0, -0.0, 1e-8, -np.inf, -60000.0, 3.5, -1e-7, np.nan], dtype=np.float32)
    rows = np.concatenate([np.random.default_rng(3).standard_normal(40).astype(np.float32) * 20, odd])
    back = code_values(value_codes(rows, "float16"), "float16")
    assert np.array_equal(back.astype(np.float16).view(np.uint16), rows.astype(np.float16).view(np.uint16))


def test_segment_deltas_invert_position_by_position():
    counts = np.array([1, 4, 2, 3])
    values = np.array([7, 1, 5, 9, 20, 3, 3, 0, 11, 12])
    deltas = segment_deltas(values, counts)
    assert deltas[0] == 7 and deltas[1] == 1 and deltas[5] == 3 and deltas[7] == 0  # firsts as they are
    assert np.array_equal(segment_cumsum(deltas, counts), values)


def test_q8_errors_do_not_accumulate():
    arrays = _arrays(np.random.default_rng(4), k=64)
    arrays.topk_logprobs = (-np.cumsum(np.full((9, 64), 0.3 + Q8_STEP / 3), axis=1)).astype(np.float32)
    back = _round_trip(arrays, "raw", "q8", k=64)
    assert np.abs(back.topk_logprobs - arrays.topk_logprobs).max() <= Q8_STEP / 2 + 1e-6


def test_wrong_counts_are_detected():
    arrays = _arrays(np.random.default_rng(1))
    data = to_bytes(arrays, "raw", "float16")
    with pytest.raises(ValueError, match=r"outside 1\.\.4"):
        decode_table(pq.read_table(io.BytesIO(data)), None, 4, "raw", "float16")


@pytest.mark.parametrize("id_encoding", ID_ENCODINGS)
def test_flat_rows_are_the_padded_rows_in_fewer_bytes(id_encoding):
    """Training holds shards unpadded (FlatShard) and pads one utterance at a time: each row must be the padded
    decode's row, dtypes included, whatever the id order on disk; the unpadded arrays must be smaller."""
    arrays = _arrays(np.random.default_rng(1), variable=True)
    data = to_bytes(arrays, id_encoding, "float16")
    table, meta = pq.read_table(io.BytesIO(data)), pq.read_metadata(io.BytesIO(data)).metadata
    flat, padded = (
        decode_flat(table, meta, 8, id_encoding, "float16"),
        decode_table(table, meta, 8, id_encoding, "float16"),
    )
    for r in range(len(padded.ids)):
        lo, hi = padded.offsets[r], padded.offsets[r + 1]
        labels, ids, logprobs, tail = flat.row(r)
        assert labels.dtype == ids.dtype == np.int64 and logprobs.dtype == tail.dtype == np.float32
        assert np.array_equal(labels, padded.labels[lo:hi]) and np.array_equal(ids, padded.topk_ids[lo:hi])
        assert np.array_equal(logprobs, padded.topk_logprobs[lo:hi]) and np.array_equal(
            tail, padded.tail_logprob[lo:hi]
        )
    held = sum(a.nbytes for a in (padded.labels, padded.offsets, padded.topk_ids, padded.topk_logprobs))
    assert flat.nbytes < held + padded.tail_logprob.nbytes + padded.counts.nbytes
    assert flat.entry_ids.dtype == np.uint16 and flat.entry_ids.size == int(arrays.kept().sum())


def test_an_id_past_16_bits_is_refused():
    arrays = _arrays(np.random.default_rng(2))
    data = to_bytes(arrays, "delta", "float16")  # delta sums can leave 16 bits when a shard is corrupt
    table = pq.read_table(io.BytesIO(data))
    ids = table.column("topk_ids").combine_chunks()
    values = ids.flatten().to_numpy().copy()
    values[1] = 0xFFFF  # the second entry of the first position: its sum passes 65535
    bad = table.set_column(
        table.column_names.index("topk_ids"),
        "topk_ids",
        pa.ListArray.from_arrays(ids.offsets, pa.array(values, pa.uint16())),
    )
    with pytest.raises(ValueError, match="outside the format's 16 bits"):
        decode_flat(bad, None, 8, "delta", "float16")
