"""The on-disk encoding of teacher-cache shards (zstd Parquet), both ways.

One row per utterance. Columns (DESIGN.md, "Teacher cache"):

* ``id``, ``language``: strings; ``prompt_ids``, ``label_ids``: ``list<uint16>``;
* ``topk_count``: ``list<uint16>``, one per label position: how many entries the position keeps
  (``top_k`` for all of them, unless the cache keeps only entries of probability ``min_prob`` or more);
* ``topk_ids``: ``list<uint16>`` of the kept entries, flat: position t owns the ``topk_count[t]``
  entries after those of the positions before it;
* ``topk_logprobs``: ``list<uint16>`` (``float16``) or ``list<uint8>`` (``q8``, ``sqrt64``), same layout;
* ``tail_logprob``: ``list<float16>`` (``float16`` values) or ``list<uint8>`` (steps of ``TAIL_STEP`` nats
  below 0): log of the mass outside the kept entries.

Why flat rather than ``list<list<...>>``: Parquet stores a repetition and a
definition level per nested value; for k=16 those levels cost about 12 bytes
per label position per column after zstd (measured on whisper-base), a third
of the whole budget. Numeric columns use byte-stream-split, which lets zstd
see the mostly-constant high bytes of ranks and float16 values.

Encodings (recorded in ``cache.json``; ``bench/cache_teacher.py`` measures each):

* ids ``raw``: token ids as they are, entries by descending log-prob. ids ``rank``: the same order,
  ids as ranks in the shard's own frequency-sorted id table (Parquet key-value metadata
  ``dw_pipe.id_table``: 4-byte length, then zstd of the uint16 little-endian ids). ids ``delta``:
  each position's entries sorted by token id, stored as differences from the previous entry's id
  (the first as it is): no table, and the gaps between a position's ids are smaller numbers than
  the ids. Readers get the entries back by descending log-prob (ties by id).
* Every value encoding maps a log-prob to an integer code that grows as the log-prob falls. In
  log-prob order (ids ``raw``/``rank``) a row stores each code's difference from the previous
  entry's code (the first from 0): small numbers, and rounding errors never add up; in id order
  (``delta``) it stores the codes themselves.
  ``float16``: the bit pattern of the negated float16 log-prob (a positive float16's bit pattern
  grows with its value), differences taken mod 2^16, so the very same float16 values come back.
  ``q8``: steps of ``Q8_STEP`` nats (differences over 255, 16 nats, are clipped: no mass there).
  ``sqrt64``: ``64 - round(64 * sqrt(p))``, at most 63: equal steps of sqrt(p) are finer in
  log-prob where the probability is, which is where an error costs divergence (the Jensen-Shannon
  cost of a relative error e on an entry of probability p grows as p e^2).

A cache with teacher-labelled rows (``cache_teacher.labels: teacher``) is format version 4: version 3 plus one
value a row (``ROW_COLUMNS``): where its labels came from, ``reference`` or ``teacher``, and for a teacher's
transcript the quality signals Whisper computes (``avg_logprob``, ``compression_ratio``, ``no_speech_prob``, null
on reference rows) and ``hit_cap``, true when the transcript reached the token cap before its end-of-text. A cache
of reference labels alone is still written as version 3, byte for byte as before.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# 3: a per-position entry count, ids "delta", values "sqrt64", uint8 tails for q8/sqrt64
# (version 2 stored float16 values as bit-pattern differences; version 1 stored them as they are).
FORMAT_VERSION = 3
LABELLED_FORMAT_VERSION = 4  # 3 plus ROW_COLUMNS: a cache with teacher-labelled rows
READABLE_VERSIONS = (FORMAT_VERSION, LABELLED_FORMAT_VERSION)
ROW_COLUMNS = {
    "label_source": pa.string(),
    "avg_logprob": pa.float32(),
    "compression_ratio": pa.float32(),
    "no_speech_prob": pa.float32(),
    "hit_cap": pa.bool_(),
}
ID_TABLE_KEY = b"dw_pipe.id_table"
Q8_STEP = 1.0 / 16.0
SQRT_LEVELS = 64
TAIL_STEP = 1.0 / 8.0
PAD_ID = 0  # id of the entries past a position's count in padded arrays (their log-prob is -inf)
ID_ENCODINGS = ("raw", "rank", "delta")
VALUE_ENCODINGS = ("float16", "q8", "sqrt64")


@dataclass
class ShardArrays:
    """A shard's content as flat arrays: row r owns positions ``offsets[r]:offsets[r+1]``.

    ``topk_ids`` / ``topk_logprobs`` are ``[P, k]``, by descending log-prob; position t keeps its first
    ``counts[t]`` entries (all k when ``counts`` is None), the rest are padding: id ``PAD_ID``, log-prob -inf."""

    ids: list[str]
    languages: list[str]
    prompts: list[list[int]]
    labels: np.ndarray  # [P] int64, flat over rows
    offsets: np.ndarray  # [R+1] int64
    topk_ids: np.ndarray  # [P, k] int64
    topk_logprobs: np.ndarray  # [P, k] float32
    tail_logprob: np.ndarray  # [P] float32
    counts: np.ndarray | None = None  # [P] int64, entries kept per position
    rows: dict[str, list] | None = None  # ROW_COLUMNS, one value a row (None on reference rows' signals); None: v3

    def kept(self) -> np.ndarray:
        """Entries kept per position, ``[P]``."""
        if self.counts is not None:
            return np.asarray(self.counts, dtype=np.int64)
        return np.full(len(self.labels), self.topk_ids.shape[1], dtype=np.int64)

    def mask(self) -> np.ndarray:
        """``[P, k]`` booleans: True for kept entries."""
        return np.arange(self.topk_ids.shape[1])[None, :] < self.kept()[:, None]


def _nested(flat: np.ndarray, offsets: np.ndarray, typ: pa.DataType) -> pa.Array:
    """A list column whose row r holds ``flat[offsets[r]:offsets[r+1]]``."""
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat.reshape(-1), type=typ))


def value_codes(logprobs: np.ndarray, encoding: str) -> np.ndarray:
    """Log-probs -> int64 codes, non-decreasing as the log-prob falls."""
    if encoding == "float16":
        return np.negative(logprobs.astype(np.float16)).view(np.uint16).astype(np.int64)
    if encoding == "q8":
        return np.clip(np.round(-logprobs.astype(np.float64) / Q8_STEP), 0, None).astype(np.int64)
    if encoding == "sqrt64":
        root = np.sqrt(np.exp(logprobs.astype(np.float64)))
        return np.clip(SQRT_LEVELS - np.round(SQRT_LEVELS * root), 0, SQRT_LEVELS - 1).astype(np.int64)
    raise ValueError(f"value encoding {encoding!r} not in {VALUE_ENCODINGS}")


def code_values(codes: np.ndarray, encoding: str) -> np.ndarray:
    """Inverse of :func:`value_codes` (float32 log-probs)."""
    codes = np.asarray(codes, dtype=np.int64)
    if encoding == "float16":
        return np.negative((codes & 0xFFFF).astype(np.uint16).view(np.float16)).astype(np.float32)
    if encoding == "q8":
        return (-codes * Q8_STEP).astype(np.float32)
    if encoding == "sqrt64":
        return (2.0 * np.log((SQRT_LEVELS - codes) / SQRT_LEVELS)).astype(np.float32)
    raise ValueError(f"value encoding {encoding!r} not in {VALUE_ENCODINGS}")


def _firsts(counts: np.ndarray) -> np.ndarray:
    """Index of each position's first entry in the flat entry arrays (``[P]``; positions keep >= 1)."""
    return np.cumsum(counts) - counts


def segment_deltas(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each entry minus the previous entry of its position; a position's first entry as it is."""
    out = values.astype(np.int64).copy()
    out[1:] -= values[:-1]
    out[_firsts(counts)] = values[_firsts(counts)]
    return out


def segment_cumsum(deltas: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inverse of :func:`segment_deltas`."""
    total = np.cumsum(deltas.astype(np.int64))
    firsts = _firsts(counts)
    base = total[firsts] - deltas[firsts]
    return total - np.repeat(base, counts)


def _pack_table(table: np.ndarray) -> bytes:
    """The id table as ``<u4 length`` + zstd(uint16 little-endian)."""
    raw = table.astype("<u2").tobytes()
    return len(raw).to_bytes(4, "little") + pa.Codec("zstd", 19).compress(raw, asbytes=True)


def _unpack_table(blob: bytes) -> np.ndarray:
    size = int.from_bytes(blob[:4], "little")
    raw = pa.Codec("zstd").decompress(blob[4:], decompressed_size=size, asbytes=True)
    return np.frombuffer(raw, dtype="<u2").astype(np.int64)


def encode_shard(arrays: ShardArrays, id_encoding: str, value_encoding: str) -> tuple[pa.Table, dict[bytes, bytes]]:
    if id_encoding not in ID_ENCODINGS or value_encoding not in VALUE_ENCODINGS:
        raise ValueError(f"encodings {id_encoding!r}/{value_encoding!r}: ids {ID_ENCODINGS}, values {VALUE_ENCODINGS}")
    counts = arrays.kept()
    mask = arrays.mask()
    ids = arrays.topk_ids[mask].astype(np.int64)  # flat, position by position
    codes = value_codes(arrays.topk_logprobs[mask], value_encoding)
    metadata: dict[bytes, bytes] = {}
    if id_encoding == "delta":
        order = np.lexsort((ids, np.repeat(np.arange(len(counts)), counts)))  # by id within each position
        ids = segment_deltas(ids[order], counts)
        codes = codes[order]
    else:
        if id_encoding == "rank" and ids.size:
            unique, frequency = np.unique(ids, return_counts=True)
            table = unique[np.lexsort((unique, -frequency))]  # by frequency, ties by id: deterministic
            rank = np.zeros(int(table.max()) + 1, dtype=np.int64)
            rank[table] = np.arange(len(table))
            ids = rank[ids]
            metadata[ID_TABLE_KEY] = _pack_table(table)
        codes = segment_deltas(codes, counts)
    if value_encoding == "float16":
        values, vtype = (codes & 0xFFFF).astype(np.uint16), pa.uint16()  # differences mod 2^16
        tail, ttype = arrays.tail_logprob.astype(np.float16), pa.float16()
    else:
        values, vtype = np.clip(codes, 0, 255).astype(np.uint8), pa.uint8()
        tail = np.clip(np.round(-arrays.tail_logprob.astype(np.float64) / TAIL_STEP), 0, 255).astype(np.uint8)
        ttype = pa.uint8()
    label_offsets = arrays.offsets
    entry_offsets = np.concatenate([[0], np.cumsum(counts)])[label_offsets]
    prompt_offsets = np.cumsum([0] + [len(p) for p in arrays.prompts])
    table = pa.table(
        {
            "id": pa.array(arrays.ids, pa.string()),
            "language": pa.array(arrays.languages, pa.string()),
            "prompt_ids": _nested(np.concatenate(arrays.prompts).astype(np.uint16), prompt_offsets, pa.uint16()),
            "label_ids": _nested(arrays.labels.astype(np.uint16), label_offsets, pa.uint16()),
            "topk_count": _nested(counts.astype(np.uint16), label_offsets, pa.uint16()),
            "topk_ids": _nested(ids.astype(np.uint16), entry_offsets, pa.uint16()),
            "topk_logprobs": _nested(values, entry_offsets, vtype),
            "tail_logprob": _nested(tail, label_offsets, ttype),
        }
        | {name: pa.array(arrays.rows[name], typ) for name, typ in ROW_COLUMNS.items() if arrays.rows is not None}
    )
    return table, metadata


def write_parquet(table: pa.Table, metadata: dict[bytes, bytes], sink) -> None:
    # Byte-stream-split only where a value has more than one byte to split.
    numeric = [f.name for f in table.schema if pa.types.is_list(f.type) and f.type.value_type.bit_width > 8]
    options = {
        "compression": "zstd",
        "compression_level": 19,
        "use_dictionary": [c for c in ("id", "language", "label_source") if c in table.column_names],
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


EXPECTED_COLUMNS = (
    "id",
    "language",
    "prompt_ids",
    "label_ids",
    "topk_count",
    "topk_ids",
    "topk_logprobs",
    "tail_logprob",
)


@dataclass
class FlatShard:
    """A decoded shard without padding, as training holds it: row r owns label positions
    ``offsets[r]:offsets[r+1]`` and entries ``entry_offsets[r]:entry_offsets[r+1]``; position t keeps
    ``counts[t]`` entries, by descending log-prob (ties by id). Token ids fit 16 bits (the columns are uint16), so
    an entry costs 6 bytes and a position 10 more, where the ``[P, k]`` padded arrays of :class:`ShardArrays` cost
    12 a slot, kept or not, and 20 a position."""

    ids: list[str]
    languages: list[str]
    prompts: list[list[int]]
    labels: np.ndarray  # [P] int32
    offsets: np.ndarray  # [R+1] int64
    counts: np.ndarray  # [P] uint16
    entry_offsets: np.ndarray  # [R+1] int64
    entry_ids: np.ndarray  # [E] uint16
    entry_logprobs: np.ndarray  # [E] float32
    tail_logprob: np.ndarray  # [P] float32
    k: int
    rows: dict[str, list] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the per-position and per-entry arrays (ids, prompts and row values aside)."""
        arrays = (self.labels, self.offsets, self.counts, self.entry_offsets, self.entry_ids, self.entry_logprobs)
        return sum(a.nbytes for a in arrays) + self.tail_logprob.nbytes

    def _pad(self, counts: np.ndarray, ids: np.ndarray, logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = counts.astype(np.int64)
        position = np.repeat(np.arange(len(counts)), counts)
        slot = np.arange(len(ids)) - np.repeat(np.cumsum(counts) - counts, counts)
        topk_ids = np.full((len(counts), self.k), PAD_ID, dtype=np.int64)
        topk_logprobs = np.full((len(counts), self.k), -np.inf, dtype=np.float32)
        topk_ids[position, slot] = ids
        topk_logprobs[position, slot] = logprobs
        return topk_ids, topk_logprobs

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Row r's labels (int64), ``[n, k]`` ids (int64) and log-probs (float32, padded), and tails."""
        lo, hi = self.offsets[r], self.offsets[r + 1]
        a, b = self.entry_offsets[r], self.entry_offsets[r + 1]
        ids, logprobs = self._pad(self.counts[lo:hi], self.entry_ids[a:b], self.entry_logprobs[a:b])
        return self.labels[lo:hi].astype(np.int64), ids, logprobs, self.tail_logprob[lo:hi]

    def padded(self) -> ShardArrays:
        ids, logprobs = self._pad(self.counts, self.entry_ids, self.entry_logprobs)
        return ShardArrays(
            ids=self.ids,
            languages=self.languages,
            prompts=self.prompts,
            labels=self.labels.astype(np.int64),
            offsets=self.offsets,
            topk_ids=ids,
            topk_logprobs=logprobs,
            tail_logprob=self.tail_logprob,
            counts=self.counts.astype(np.int64),
            rows=self.rows,
        )


def decode_table(
    table: pa.Table, metadata: dict[bytes, bytes] | None, k: int, id_encoding: str, value_encoding: str
) -> ShardArrays:
    """Inverse of :func:`encode_shard`: ``[P, k]`` arrays by descending log-prob, padded past each position's
    count (values come back as float32, ids as int64)."""
    return decode_flat(table, metadata, k, id_encoding, value_encoding).padded()


def decode_flat(
    table: pa.Table, metadata: dict[bytes, bytes] | None, k: int, id_encoding: str, value_encoding: str
) -> FlatShard:
    """Inverse of :func:`encode_shard`, unpadded (:class:`FlatShard`)."""
    missing = [c for c in EXPECTED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"missing column(s) {missing}")
    labels, offsets = _flat(table.column("label_ids"), 1)
    counts, _ = _flat(table.column("topk_count"), 1)
    ids, _ = _flat(table.column("topk_ids"), 1)
    values, _ = _flat(table.column("topk_logprobs"), 1)
    tail, _ = _flat(table.column("tail_logprob"), 1)
    n = len(labels)
    counts = counts.astype(np.int64)
    if counts.size != n or tail.size != n:
        raise ValueError(f"topk_count / tail_logprob do not hold one value for each of the {n} label positions")
    if n and (counts.min() < 1 or counts.max() > k):
        raise ValueError(f"a label position keeps {counts.min()}..{counts.max()} entries, outside 1..{k}")
    if ids.size != counts.sum() or values.size != counts.sum():
        raise ValueError(
            f"top-k columns do not hold the {counts.sum()} entries topk_count gives ({n} positions, k={k})"
        )
    ids, codes = ids.astype(np.int64), values.astype(np.int64)
    position = np.repeat(np.arange(n), counts)  # for the delta order
    if id_encoding == "delta":
        ids = segment_cumsum(ids, counts)
        logprobs = code_values(codes, value_encoding)
        order = np.lexsort((ids, -logprobs, position))  # descending log-prob within each position, ties by id
        ids, logprobs = ids[order], logprobs[order]
    else:
        if id_encoding == "rank" and ids.size:
            if not metadata or ID_TABLE_KEY not in metadata:
                raise ValueError("rank-encoded ids but no id table in the shard metadata")
            id_table = _unpack_table(metadata[ID_TABLE_KEY])
            if ids.max() >= len(id_table):
                raise ValueError("id rank outside the shard's id table")
            ids = id_table[ids]
        logprobs = code_values(segment_cumsum(codes, counts), value_encoding)
    if ids.size and (ids.min() < 0 or ids.max() > 0xFFFF):
        raise ValueError(f"token ids {ids.min()}..{ids.max()} outside the format's 16 bits")
    if value_encoding == "float16":
        tail_logprob = tail.astype(np.float32)
    else:
        tail_logprob = (-tail.astype(np.float64) * TAIL_STEP).astype(np.float32)
    prompts, prompt_offsets = _flat(table.column("prompt_ids"), 1)
    return FlatShard(
        ids=table.column("id").to_pylist(),
        languages=table.column("language").to_pylist(),
        prompts=[prompts[a:b].astype(np.int64).tolist() for a, b in zip(prompt_offsets[:-1], prompt_offsets[1:])],
        labels=labels.astype(np.int32),
        offsets=offsets,
        counts=counts.astype(np.uint16),
        entry_offsets=np.concatenate([[0], np.cumsum(counts)])[offsets],
        entry_ids=ids.astype(np.uint16),
        entry_logprobs=logprobs.astype(np.float32),
        tail_logprob=tail_logprob,
        k=k,
        rows={c: table.column(c).to_pylist() for c in ROW_COLUMNS} if "label_source" in table.column_names else None,
    )
