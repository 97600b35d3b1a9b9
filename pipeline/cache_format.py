"""The on-disk encoding of teacher-cache shards (zstd Parquet), both ways.

One row per utterance. Columns (DESIGN.md, "Teacher cache"):

* ``id``, ``language``: strings; ``prompt_ids``, ``label_ids``: ``list<uint16>``;
* ``topk_ids``: ``list<uint16>`` of n*k values, row-major: label position t owns
  entries ``t*k .. t*k+k-1``, by descending log-prob;
* ``topk_logprobs``: ``list<uint16>`` (``float16``) or ``list<uint8>`` (``q8``), same layout;
* ``tail_logprob``: ``list<float16>``, log of the mass outside the top-k.

Why flat rather than ``list<list<...>>``: Parquet stores a repetition and a
definition level per nested value; for k=16 those levels cost about 12 bytes
per label position per column after zstd (measured on whisper-base), a third
of the whole budget. Numeric columns use byte-stream-split, which lets zstd
see the mostly-constant high bytes of ranks and float16 values.

Encodings (recorded in ``cache.json``):

* ids ``raw``: token ids as they are. ids ``rank``: each shard stores ids as
  ranks in its own frequency-sorted id table (Parquet key-value metadata
  ``dw_pipe.id_table``: 4-byte length, then zstd of the uint16 little-endian ids); frequent ids get small ranks,
  and with byte-stream-split the high bytes compress to almost nothing.
* values ``float16``: log-probs rounded to float16, stored losslessly as
  differences (mod 2^16) between the bit patterns of consecutive negated
  values in the row, the first from 0. The negated values of a row are
  ascending, and a positive float16's bit pattern grows with its value, so
  the differences are small: 18 instead of 20.5 bytes per label position
  at k=16 on whisper-base (``bench/cache_teacher.py``), with the very same
  float16 values coming back. Modular arithmetic keeps any row exact,
  sorted or not. values ``q8``: log-probs
  quantized to steps of ``Q8_STEP`` nats, stored as uint8 differences from
  the previous (larger) value in the row, the first from 0; rounding is done
  on the cumulative values, so errors never add up (at most half a step).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# 2: float16 values stored as bit-pattern differences (version 1 stored them as they are).
FORMAT_VERSION = 2
ID_TABLE_KEY = b"dw_pipe.id_table"
Q8_STEP = 1.0 / 16.0
ID_ENCODINGS = ("raw", "rank")
VALUE_ENCODINGS = ("float16", "q8")


@dataclass
class ShardArrays:
    """A shard's content as flat arrays: row r owns positions ``offsets[r]:offsets[r+1]``."""

    ids: list[str]
    languages: list[str]
    prompts: list[list[int]]
    labels: np.ndarray  # [P] int64, flat over rows
    offsets: np.ndarray  # [R+1] int64
    topk_ids: np.ndarray  # [P, k] int64
    topk_logprobs: np.ndarray  # [P, k] float32
    tail_logprob: np.ndarray  # [P] float32


def _nested(flat: np.ndarray, offsets: np.ndarray, k: int | None, typ: pa.DataType) -> pa.Array:
    """A list column whose row r holds ``flat[offsets[r]:offsets[r+1]]`` (times k values per position)."""
    values = pa.array(flat.reshape(-1), type=typ)
    return pa.ListArray.from_arrays(pa.array((offsets * (k or 1)).astype(np.int32)), values)


def quantize_q8(logprobs: np.ndarray) -> np.ndarray:
    steps = np.round(-logprobs.astype(np.float64) / Q8_STEP)
    steps = np.maximum.accumulate(np.clip(steps, 0, None), axis=1)  # non-decreasing along the row
    deltas = np.diff(steps, axis=1, prepend=0)
    # A delta over 255 (a value 16 nats below its neighbour) is clipped: such tokens carry no mass.
    return np.clip(deltas, 0, 255).astype(np.uint8)


def dequantize_q8(codes: np.ndarray) -> np.ndarray:
    return -(np.cumsum(codes.astype(np.float32), axis=1) * Q8_STEP)


def f16_to_deltas(logprobs: np.ndarray) -> np.ndarray:
    """``[n, k]`` log-probs -> uint16 row-wise differences of the bit patterns of their negated float16 values."""
    bits = np.negative(logprobs.astype(np.float16)).view(np.uint16).astype(np.int64)
    return (np.diff(bits, axis=1, prepend=0) & 0xFFFF).astype(np.uint16)


def deltas_to_f16(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`f16_to_deltas`, as float32 (exactly the float16 values)."""
    bits = (np.cumsum(codes.astype(np.int64), axis=1) & 0xFFFF).astype(np.uint16)
    return np.negative(bits.view(np.float16)).astype(np.float32)


def _pack_table(table: np.ndarray) -> bytes:
    """The id table as ``<u4 length`` + zstd(uint16 little-endian)."""
    raw = table.astype("<u2").tobytes()
    return len(raw).to_bytes(4, "little") + pa.Codec("zstd", 19).compress(raw, asbytes=True)


def _unpack_table(blob: bytes) -> np.ndarray:
    size = int.from_bytes(blob[:4], "little")
    raw = pa.Codec("zstd").decompress(blob[4:], decompressed_size=size, asbytes=True)
    return np.frombuffer(raw, dtype="<u2").astype(np.int64)


def encode_shard(arrays: ShardArrays, id_encoding: str, value_encoding: str) -> tuple[pa.Table, dict[bytes, bytes]]:
    k = arrays.topk_ids.shape[1]
    metadata: dict[bytes, bytes] = {}
    ids = arrays.topk_ids
    if id_encoding == "rank":
        unique, counts = np.unique(ids, return_counts=True)
        table = unique[np.lexsort((unique, -counts))]  # by frequency, ties by id: deterministic
        rank = np.zeros(int(table.max()) + 1, dtype=np.int64)
        rank[table] = np.arange(len(table))
        ids = rank[ids]
        metadata[ID_TABLE_KEY] = _pack_table(table)
    if value_encoding == "float16":
        values, vtype = f16_to_deltas(arrays.topk_logprobs), pa.uint16()
    else:
        values, vtype = quantize_q8(arrays.topk_logprobs), pa.uint8()
    label_offsets = arrays.offsets
    prompt_offsets = np.cumsum([0] + [len(p) for p in arrays.prompts])
    table = pa.table(
        {
            "id": pa.array(arrays.ids, pa.string()),
            "language": pa.array(arrays.languages, pa.string()),
            "prompt_ids": _nested(np.concatenate(arrays.prompts).astype(np.uint16), prompt_offsets, None, pa.uint16()),
            "label_ids": _nested(arrays.labels.astype(np.uint16), label_offsets, None, pa.uint16()),
            "topk_ids": _nested(ids.astype(np.uint16), label_offsets, k, pa.uint16()),
            "topk_logprobs": _nested(values, label_offsets, k, vtype),
            "tail_logprob": _nested(arrays.tail_logprob.astype(np.float16), label_offsets, None, pa.float16()),
        }
    )
    return table, metadata


def write_parquet(table: pa.Table, metadata: dict[bytes, bytes], sink) -> None:
    numeric = ["prompt_ids", "label_ids", "topk_ids", "topk_logprobs", "tail_logprob"]
    options = {
        "compression": "zstd",
        "compression_level": 19,
        "use_dictionary": ["id", "language"],
        "column_encoding": {f"{c}.list.element": "BYTE_STREAM_SPLIT" for c in numeric},
        # The Arrow schema would repeat our key-value metadata (the id table), base64-encoded.
        "store_schema": False,
    }
    with pq.ParquetWriter(sink, table.schema, **options) as writer:
        writer.write_table(table, row_group_size=1 << 20)
        writer.add_key_value_metadata(metadata)


def to_bytes(
    arrays: ShardArrays, id_encoding: str, value_encoding: str, extra: dict[bytes, bytes] | None = None
) -> bytes:
    buffer = io.BytesIO()
    table, metadata = encode_shard(arrays, id_encoding, value_encoding)
    write_parquet(table, {**metadata, **(extra or {})}, buffer)
    return buffer.getvalue()


def _flat(column: pa.ChunkedArray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    array = column.combine_chunks()
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.flatten()
    for _ in range(depth - 1):
        values = values.flatten()
    return values.to_numpy(zero_copy_only=False), offsets


EXPECTED_COLUMNS = ("id", "language", "prompt_ids", "label_ids", "topk_ids", "topk_logprobs", "tail_logprob")


def decode_table(
    table: pa.Table, metadata: dict[bytes, bytes] | None, k: int, id_encoding: str, value_encoding: str
) -> ShardArrays:
    """Inverse of :func:`encode_shard` (values come back as float32, ids as int64)."""
    missing = [c for c in EXPECTED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"missing column(s) {missing}")
    labels, offsets = _flat(table.column("label_ids"), 1)
    ids, _ = _flat(table.column("topk_ids"), 1)
    values, _ = _flat(table.column("topk_logprobs"), 1)
    tail, _ = _flat(table.column("tail_logprob"), 1)
    n = len(labels)
    if ids.size != n * k or values.size != n * k or tail.size != n:
        raise ValueError(f"top-k columns do not hold {k} entries for each of the {n} label positions")
    ids = ids.astype(np.int64).reshape(n, k)
    if id_encoding == "rank":
        if not metadata or ID_TABLE_KEY not in metadata:
            raise ValueError("rank-encoded ids but no id table in the shard metadata")
        id_table = _unpack_table(metadata[ID_TABLE_KEY])
        if ids.size and ids.max() >= len(id_table):
            raise ValueError("id rank outside the shard's id table")
        ids = id_table[ids]
    values = values.reshape(n, k)
    logprobs = dequantize_q8(values) if value_encoding == "q8" else deltas_to_f16(values)
    prompts, prompt_offsets = _flat(table.column("prompt_ids"), 1)
    return ShardArrays(
        ids=table.column("id").to_pylist(),
        languages=table.column("language").to_pylist(),
        prompts=[prompts[a:b].astype(np.int64).tolist() for a, b in zip(prompt_offsets[:-1], prompt_offsets[1:])],
        labels=labels.astype(np.int64),
        offsets=offsets,
        topk_ids=ids,
        topk_logprobs=logprobs,
        tail_logprob=tail.astype(np.float32),
    )
