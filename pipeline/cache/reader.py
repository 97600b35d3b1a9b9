"""Reading a teacher cache: verification, summary, and sparse targets for training.

:func:`verify_cache` checks every shard against ``cache.json`` (sha256,
schema, rows, tokens, k). :func:`open_cache` validates the cache against
the student's tokenizer and the training manifest, verifies it, and decodes
every shard into flat arrays without padding; :meth:`TeacherCache.targets` then
pads one utterance's sparse teacher distribution to ``top_k``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.cache.format import READABLE_VERSIONS, ROW_COLUMNS, FlatShard, decode_flat
from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import sha256_files


class CacheError(DwPipeError):
    """A cache that is incomplete, corrupt, or built for other inputs."""


def read_cache_json(folder: Path) -> dict:
    path = Path(folder) / "cache.json"
    if not path.is_file():
        raise CacheError(f"{folder}: no cache.json; not a teacher cache (or its build never started)")
    content = json.loads(path.read_text(encoding="utf-8"))
    if content.get("status") != "complete":
        raise CacheError(f"{folder}: the cache build did not finish; run cache-teacher again to complete it")
    version = content.get("identity", {}).get("format_version")
    if version not in READABLE_VERSIONS:
        raise CacheError(
            f"{folder}: cache format version {version}, this dw-pipe reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; "
            "rebuild it with cache-teacher --force"
        )
    return content


def _decode_shard(folder: Path, shard: dict, ident: dict) -> FlatShard:
    path = folder / shard["file"]
    table = pq.read_table(path)
    meta = pq.read_schema(path).metadata
    return decode_flat(table, meta, ident["top_k"], ident["id_encoding"], ident["value_encoding"])


def verify_cache(folder: Path) -> list[str]:
    """Problems found, each naming its shard; empty when the cache is sound."""
    folder = Path(folder)
    content = read_cache_json(folder)
    ident = content["identity"]
    problems = []
    for shard in content["shards"]:
        path = folder / shard["file"]
        if not path.is_file():
            problems.append(f"{shard['file']}: missing")
            continue
        if sha256_files([path]) != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 mismatch (corrupt or modified)")
            continue
        try:
            arrays = _decode_shard(folder, shard, ident)
        except Exception as exc:  # schema or structure problems
            problems.append(f"{shard['file']}: unreadable ({exc})")
            continue
        if len(arrays.ids) != shard["rows"] or len(arrays.labels) != shard["tokens"]:
            problems.append(
                f"{shard['file']}: holds {len(arrays.ids)} rows / {len(arrays.labels)} tokens, "
                f"cache.json says {shard['rows']} / {shard['tokens']}"
            )
    if sum(s["rows"] for s in content["shards"]) != content["rows"]:
        problems.append("cache.json: shard rows do not add up to the total")
    return problems


def verification_error(what: str, problems: list[str], fix: str = "") -> CacheError:
    """One line for a cache that failed :func:`verify_cache`: its first problem, how many more, and the fix."""
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return CacheError(f"{what} failed verification: {problems[0]}{more}" + (f"; {fix}" if fix else ""))


def cache_fingerprint(folder: Path) -> str:
    """One sha256 naming a finished cache's contents: its identity (teacher and tokenizer hashes, manifest hash,
    top_k, temperature, encodings) and every shard's checksum. A trained student records it."""
    content = read_cache_json(Path(folder))
    digest = hashlib.sha256(content["identity_sha256"].encode())
    for shard in content["shards"]:
        digest.update(f"{shard['file']}:{shard['sha256']}".encode())
    return digest.hexdigest()


def cache_info(folder: Path) -> dict:
    """What a person wants to know about a cache, from ``cache.json`` and the folder."""
    folder = Path(folder)
    content = read_cache_json(folder)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return {
        "folder": str(folder),
        "teacher": content["identity"]["teacher"],
        "manifest": content["identity"]["manifest"],
        "top_k": content["identity"]["top_k"],
        "min_prob": content["identity"]["min_prob"],
        "temperature": content["identity"]["temperature"],
        "id_encoding": content["identity"]["id_encoding"],
        "value_encoding": content["identity"]["value_encoding"],
        "rows": content["rows"],
        "tokens": content["tokens"],
        "shards": len(content["shards"]),
        "folder_bytes": size,
        "bytes_per_label_token": round(size / max(content["tokens"], 1), 2),
        "labels": content.get("labels", {"reference": content["rows"]}),
    }


@dataclass(frozen=True)
class SparseTargets:
    """One utterance's teacher distribution at each label position, padded to ``top_k`` (made when asked)."""

    prompt: list[int]
    labels: np.ndarray  # [n]
    topk_ids: np.ndarray  # [n, k]; past a position's kept entries: padding (id 0, log-prob -inf)
    topk_logprobs: np.ndarray  # [n, k] float32, descending
    tail_logprob: np.ndarray  # [n] float32
    temperature: float = 1.0  # the teacher's softmax temperature when the cache was built


class TeacherCache:
    """A verified cache, decoded into memory without padding (:class:`FlatShard`: about 6 bytes a kept entry and
    10 a label position), indexed by utterance id; :meth:`targets` pads one utterance's entries to ``top_k``."""

    def __init__(self, folder: Path, content: dict, shards: list[FlatShard]) -> None:
        self.folder = folder
        self.content = content
        self.shards = shards
        self.index = {uid: (s, r) for s, arrays in enumerate(shards) for r, uid in enumerate(arrays.ids)}

    @property
    def top_k(self) -> int:
        return int(self.content["identity"]["top_k"])

    def __contains__(self, uid: str) -> bool:
        return uid in self.index

    def __len__(self) -> int:
        return len(self.index)

    def row_info(self, uid: str) -> dict | None:
        """A row's ``label_source`` and quality signals (``ROW_COLUMNS``); None in a cache of reference labels."""
        s, r = self.index[uid]
        rows = self.shards[s].rows
        return None if rows is None else {c: rows[c][r] for c in ROW_COLUMNS}

    def labels_of(self, uid: str) -> tuple[list[int], list[int]]:
        """An utterance's prompt and label ids, without padding its teacher entries."""
        if uid not in self.index:
            raise CacheError(f"utterance {uid} is not in the teacher cache {self.folder}")
        s, r = self.index[uid]
        shard = self.shards[s]
        return list(shard.prompts[r]), shard.labels[shard.offsets[r] : shard.offsets[r + 1]].tolist()

    def targets(self, uid: str) -> SparseTargets:
        if uid not in self.index:
            raise CacheError(f"utterance {uid} is not in the teacher cache {self.folder}")
        s, r = self.index[uid]
        labels, topk_ids, topk_logprobs, tail = self.shards[s].row(r)
        temperature = float(self.content["identity"]["temperature"])
        return SparseTargets(self.shards[s].prompts[r], labels, topk_ids, topk_logprobs, tail, temperature)


def open_cache(
    folder: Path,
    *,
    tokenizer_json: Path | None = None,
    manifest: Path | None = None,
    verify: bool = True,
    teacher_labels: bool = False,
) -> TeacherCache:
    """Open ``folder`` for training, refusing a cache made for another tokenizer or manifest, and one with
    teacher-labelled rows unless ``teacher_labels`` (a reader that knows which rows' labels are the teacher's)."""
    folder = Path(folder)
    content = read_cache_json(folder)
    ident = content["identity"]
    if ident.get("labels", "reference") != "reference" and not teacher_labels:
        teacher = content.get("labels", {}).get("teacher", "some")
        raise CacheError(
            f"cache {folder} holds {teacher} rows labelled by the teacher (cache_teacher.labels: "
            f"{ident['labels']}); set train_student teacher_labels (with unlabelled) to train on them, or build "
            "the cache with labels: reference"
        )
    if tokenizer_json is not None and sha256_files([tokenizer_json]) != ident["tokenizer_sha256"]:
        raise CacheError(
            f"cache {folder} was built with another tokenizer than {tokenizer_json}; "
            "a student must share its teacher's tokenizer (rebuild the cache with a matching teacher)"
        )
    if manifest is not None and sha256_files([manifest]) != ident["manifest_sha256"]:
        raise CacheError(
            f"cache {folder} was built from another manifest than {manifest} "
            f"(cache: {ident['manifest']}); rerun cache-teacher on this manifest"
        )
    if verify:
        problems = verify_cache(folder)
        if problems:
            raise verification_error(f"cache {folder}", problems)
    shards = [_decode_shard(folder, s, ident) for s in content["shards"]]
    return TeacherCache(folder, content, shards)


def decoded_table(folder: Path, *, verify: bool = True):
    """The whole cache as one ``pyarrow.Table`` of plain columns, one row per utterance: ``id``, ``language``,
    ``prompt_ids`` and ``label_ids`` (int32 lists), and per label position ``topk_ids`` (int32 token ids) and
    ``topk_logprobs`` (float32, descending) as lists of per-position lists (the entries the position kept: k,
    or fewer with ``min_prob``; no padding), and ``tail_logprob`` (float32, log of the mass outside them). A cache
    with teacher labels adds its per-row ``label_source`` and quality signals (``ROW_COLUMNS``).

    Whatever the id and value encodings, a reader gets token ids and log-probs, as :func:`open_cache` does."""
    import pyarrow as pa

    folder = Path(folder)
    content = read_cache_json(folder)
    if verify:
        problems = verify_cache(folder)
        if problems:
            raise verification_error(f"cache {folder}", problems)
    tables = []
    for shard in content["shards"]:
        a = _decode_shard(folder, shard, content["identity"])
        offsets = pa.array(a.offsets.astype(np.int32))
        per_position = pa.array(np.concatenate([[0], np.cumsum(a.counts, dtype=np.int64)]).astype(np.int32))

        def nested(values: np.ndarray, typ, per_position=per_position, offsets=offsets) -> pa.Array:
            positions = pa.ListArray.from_arrays(per_position, pa.array(values, type=typ))
            return pa.ListArray.from_arrays(offsets, positions)

        prompt_lens = np.cumsum([0] + [len(p) for p in a.prompts]).astype(np.int32)
        tables.append(
            pa.table(
                {
                    "id": pa.array(a.ids, type=pa.string()),
                    "language": pa.array(a.languages, type=pa.string()),
                    "prompt_ids": pa.ListArray.from_arrays(
                        pa.array(prompt_lens), pa.array([t for p in a.prompts for t in p], type=pa.int32())
                    ),
                    "label_ids": pa.ListArray.from_arrays(offsets, pa.array(a.labels, type=pa.int32())),
                    "topk_ids": nested(a.entry_ids.astype(np.int32), pa.int32()),
                    "topk_logprobs": nested(a.entry_logprobs, pa.float32()),
                    "tail_logprob": pa.ListArray.from_arrays(offsets, pa.array(a.tail_logprob, type=pa.float32())),
                }
                | {c: pa.array(a.rows[c], type=typ) for c, typ in ROW_COLUMNS.items() if a.rows is not None}
            )
        )
    return pa.concat_tables(tables)


def load_decoded(folder: Path, *, verify: bool = True):
    """:func:`decoded_table` as a ``datasets.Dataset`` (needs the ``datasets`` package)."""
    import datasets

    return datasets.Dataset(decoded_table(folder, verify=verify))


def write_decoded(folder: Path, out: Path) -> dict:
    """Write :func:`decoded_table` to ``out/decoded.parquet`` (zstd), readable by any Parquet reader with no
    dw-pipe code: ``datasets.load_dataset("parquet", data_files="OUT/decoded.parquet")``. Returns a summary."""
    from pipeline.core.fsutil import atomic_dir

    table = decoded_table(folder)
    with atomic_dir(Path(out), overwrite=True) as tmp:
        pq.write_table(table, tmp / "decoded.parquet", compression="zstd")
    size = (Path(out) / "decoded.parquet").stat().st_size
    return {"rows": table.num_rows, "file": str(Path(out) / "decoded.parquet"), "bytes": size}
