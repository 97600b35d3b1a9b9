"""cache_teacher: run the teacher once and keep its top-k distributions in verified shards.

Layout of a cache folder (DESIGN.md, "Teacher cache"): ``cache.json``,
``shard-NNNNN.parquet``, ``README.md``. Utterances go to shards in manifest
order, ``rows_per_shard`` at a time, so a shard's content depends only on
the inputs: a resumed run, or N ranks under ``torchrun`` each taking shards
``rank, rank+N, ...``, write the very same shards as one uninterrupted run.
A shard appears only complete (temporary name, fsync, rename) and carries
the identity hash and its index in its Parquet metadata, so a rerun keeps
finished shards and recomputes the rest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.cache.compute import compute_shard as _compute_shard
from pipeline.cache.compute import label_counts, unlabelled_items
from pipeline.cache.format import (
    FORMAT_VERSION,
    ID_ENCODINGS,
    LABELLED_FORMAT_VERSION,
    SQRT_LEVELS,
    VALUE_ENCODINGS,
    to_bytes,
)
from pipeline.core.distributed import barrier, rank_and_world
from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_write_text, remove_temp_files, sha256_files
from pipeline.core.progress import progress
from pipeline.data.manifest import load_labelled
from pipeline.models.forward import (
    PROMPT_TEMPLATE,
    encode,
    pick_device,
)

log = logging.getLogger(__name__)

IDENTITY_KEY = b"dw_pipe.identity"
SHARD_KEY = b"dw_pipe.shard"
SQRT64_SMALLEST = 1.0 / SQRT_LEVELS**2  # the smallest probability a sqrt64 code holds
# Rough bytes per label token, used only to turn shard_target_mb into a fixed row count.
EST_BYTES_PER_TOKEN = {"float16": 50.0, "q8": 36.0, "sqrt64": 30.0}


class CacheMismatchError(DwPipeError):
    """An existing cache was built from other inputs or settings."""


@dataclass(frozen=True)
class CacheTeacherConfig:
    teacher: Path  # HF Whisper folder (import_models output)
    manifest: Path
    out_dir: Path
    # At most 24 entries, those of probability >= 0.0012 (11.2 a position on whisper-base), ids "delta", values
    # "sqrt64": closer to the full distribution than top-16 float16 in both tail modes, in 0.6 of its bytes
    # (bench/cache_teacher.py). min_prob 0: every position keeps top_k; float16 keeps the exact float16 log-probs.
    top_k: int = 24
    min_prob: float = 0.0012
    temperature: float = 1.0
    id_encoding: str = "delta"
    value_encoding: str = "sqrt64"
    shard_target_mb: float = 256.0
    # At most this many utterances a shard (0: no cap). A shard is the unit of resume, of a rank's work and of what is
    # held before a write: the 256 MB target alone puts 224k short utterances in one shard, which a kill loses whole
    shard_max_rows: int = 0
    batch_size: int = 8
    device: str = "auto"
    # Where encoder outputs are kept between stages (pipeline/core/encoder_memo.py); None: not kept. Not part of
    # the cache's identity: a stored output is what the encoder computes again.
    encoder_memo: Path | None = None
    # hf://datasets/OWNER/NAME[@REVISION]: fetch this cache from the Hugging Face Hub into out_dir instead of running
    # the teacher, refused unless its identity is the one this config computes (pipeline/cache/hub.py). None: build.
    from_hub: str | None = None
    # reference: every row is teacher-forced on its reference text. teacher: the rows of `unlabelled` (a manifest of
    # the unlabelled split) are cached too, each teacher-forced along the teacher's own greedy transcript, capped at
    # label_max_new_tokens (pipeline/cache/labelling.py); such a cache is format version 4
    labels: str = "reference"
    unlabelled: Path | None = None
    label_max_new_tokens: int = 128

    def check(self) -> None:
        problems = []
        if self.labels not in ("reference", "teacher"):
            problems.append(f"labels {self.labels!r}: give reference or teacher")
        elif self.labels == "teacher" and self.unlabelled is None:
            problems.append("labels teacher needs unlabelled: the manifest of the rows the teacher labels")
        elif self.labels == "reference" and self.unlabelled is not None:
            problems.append("unlabelled is read only with labels: teacher")
        if not 1 <= self.label_max_new_tokens <= 444:
            problems.append(f"label_max_new_tokens {self.label_max_new_tokens} outside 1..444 (448 decoder positions)")
        if self.id_encoding not in ID_ENCODINGS:
            problems.append(f"id_encoding {self.id_encoding!r} not in {ID_ENCODINGS}")
        if self.value_encoding not in VALUE_ENCODINGS:
            problems.append(f"value_encoding {self.value_encoding!r} not in {VALUE_ENCODINGS}")
        if not 1 <= self.top_k <= 1024:
            problems.append(f"top_k {self.top_k} outside 1..1024")
        if not 0.0 <= self.min_prob < 1.0:
            problems.append(f"min_prob {self.min_prob} outside [0, 1)")
        elif self.value_encoding == "sqrt64" and self.min_prob < SQRT64_SMALLEST:
            problems.append(
                f"value_encoding sqrt64 holds probabilities down to {SQRT64_SMALLEST:.6f} (1/64^2), min_prob is "
                f"{self.min_prob}: raise min_prob to at least that, or use q8 or float16"
            )
        if self.temperature <= 0:
            problems.append("temperature must be positive")
        if self.shard_max_rows < 0:
            problems.append(f"shard_max_rows {self.shard_max_rows}: give 0 (no cap) or a positive count")
        if self.from_hub is not None:
            from pipeline.cache.hub import parse_hub_uri

            try:
                parse_hub_uri(self.from_hub)
            except DwPipeError as exc:
                problems.append(f"from_hub: {exc}")
        if problems:
            raise DwPipeError("cache_teacher: " + "; ".join(problems))


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def identity(cfg: CacheTeacherConfig, extractor, n_rows: int, mean_labels: float) -> dict:
    """Everything that determines the cache's content."""
    record = json.loads((cfg.teacher / "import.json").read_text()) if (cfg.teacher / "import.json").is_file() else {}
    rows_per_shard = max(
        1, int(cfg.shard_target_mb * 1e6 / (EST_BYTES_PER_TOKEN[cfg.value_encoding] * max(mean_labels, 1.0)))
    )
    if cfg.shard_max_rows:
        rows_per_shard = min(rows_per_shard, cfg.shard_max_rows)
    labelled = {}
    if cfg.labels == "teacher":  # a cache of reference labels keeps the identity (and bytes) it always had
        labelled = {
            "labels": "teacher",
            "unlabelled": cfg.unlabelled.name,
            "unlabelled_sha256": sha256_files([cfg.unlabelled]),
            "label_decoding": {"method": "greedy", "temperature": 0.0, "max_new_tokens": cfg.label_max_new_tokens},
        }
    return labelled | {
        "format_version": LABELLED_FORMAT_VERSION if labelled else FORMAT_VERSION,
        "teacher": record.get("source", str(cfg.teacher)),
        "teacher_weights_sha256": sha256_files(sorted(cfg.teacher.glob("*.safetensors"))),
        "tokenizer_sha256": sha256_files([cfg.teacher / "tokenizer.json"]),
        "feature_extractor": {k: v for k, v in extractor.to_dict().items() if not isinstance(v, (list, np.ndarray))},
        "prompt_template": PROMPT_TEMPLATE,
        "top_k": cfg.top_k,
        "min_prob": cfg.min_prob,
        "temperature": cfg.temperature,
        "id_encoding": cfg.id_encoding,
        "value_encoding": cfg.value_encoding,
        "manifest": cfg.manifest.name,
        "manifest_sha256": sha256_files([cfg.manifest]),
        "rows": n_rows,
        "rows_per_shard": rows_per_shard,
    }


def identity_hash(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k) and k != "feature_extractor"
    ] or (["feature_extractor settings"] if old.get("feature_extractor") != new.get("feature_extractor") else [])


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def shard_is_done(path: Path, ident_hash: str, index: int) -> bool:
    """A finished shard of this cache: right identity and index, and the checksum it was written with."""
    sidecar = _sidecar(path)
    if not path.is_file() or not sidecar.is_file():
        return False
    try:
        meta = pq.read_metadata(path).metadata or {}
    except Exception:  # unreadable: recompute it
        log.warning("%s is unreadable; recomputing it", path.name)
        return False
    if meta.get(IDENTITY_KEY) != ident_hash.encode() or meta.get(SHARD_KEY) != str(index).encode():
        return False
    if sha256_files([path]) != sidecar.read_text().strip():
        log.warning("%s fails its checksum (corrupt or modified); recomputing it", path.name)
        return False
    return True


def _write_shard(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)  # half a shard must not stay behind, least of all on a full disk
        raise


@contextlib.contextmanager
def _full_disk_explained(path: Path) -> Iterator[None]:
    """A full disk (or quota) while writing ``path`` becomes one line naming the shard and the fix."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DwPipeError(
            f"{path.name}: no space left on the device of {path.parent}; free some and run again "
            "(finished shards are kept)"
        ) from exc


def _write_sidecar(path: Path, data: bytes) -> None:
    """The shard's sha256, written after the shard itself: a shard without it counts as unfinished."""
    atomic_write_text(_sidecar(path), hashlib.sha256(data).hexdigest() + "\n")


def _inputs(cfg: CacheTeacherConfig):
    """The teacher's tokenizer and feature extractor, the manifest's items, and the identity they give the cache."""
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    if not (cfg.teacher / "config.json").is_file():
        raise DwPipeError(f"teacher {cfg.teacher} is not an HF checkpoint folder; run import_models first")
    tokenizer = WhisperTokenizer.from_pretrained(cfg.teacher)
    extractor = WhisperFeatureExtractor.from_pretrained(cfg.teacher)
    utts = load_labelled(cfg.manifest, "cache_teacher (teacher-forced on the reference labels)")
    if not utts:
        raise DwPipeError(f"manifest {cfg.manifest} is empty")
    items = encode(utts, tokenizer)
    mean_labels = float(np.mean([len(i.labels) for i in items]))
    if cfg.labels == "teacher":
        items += unlabelled_items(cfg, tokenizer, {u.id for u in utts})
    return tokenizer, extractor, items, identity(cfg, extractor, len(items), mean_labels)


def build_cache(cfg: CacheTeacherConfig, *, force: bool = False) -> dict:
    """Build (or finish) the cache in ``cfg.out_dir``, or with ``from_hub`` fetch it; returns its ``cache.json``."""
    from transformers import WhisperForConditionalGeneration

    cfg.check()
    rank, world = rank_and_world()
    tokenizer, extractor, items, ident = _inputs(cfg)
    if cfg.from_hub is not None:
        content = _fetch_from_hub(cfg, ident, force) if rank == 0 else {}
        barrier(world)
        return content
    ident_hash = identity_hash(ident)
    out = cfg.out_dir
    if rank == 0:
        _prepare_folder(out, ident, force)
    barrier(world)

    per = ident["rows_per_shard"]
    n_shards = math.ceil(len(items) / per)
    device, autocast = pick_device(cfg.device)
    model = None
    mine = range(rank, n_shards, world)
    for index in progress(mine, desc=f"teacher shards (rank {rank})", total=len(mine), unit="shard"):
        path = out / _shard_name(index)
        if path.exists() and shard_is_done(path, ident_hash, index):
            log.info("shard %d already done", index)
            continue
        if model is None:
            model = WhisperForConditionalGeneration.from_pretrained(cfg.teacher).to(device).eval()
        arrays = _compute_shard(model, extractor, items[index * per : (index + 1) * per], cfg, autocast, tokenizer)
        data = to_bytes(
            arrays,
            cfg.id_encoding,
            cfg.value_encoding,
            {IDENTITY_KEY: ident_hash.encode(), SHARD_KEY: str(index).encode()},
        )
        with _full_disk_explained(path):
            _write_shard(path, data)
            _write_sidecar(path, data)
        log.info("wrote %s (%d rows, %d label tokens)", path.name, len(arrays.ids), len(arrays.labels))
    barrier(world)
    if rank != 0:
        return {}
    return _finish(out, ident, ident_hash, n_shards)


def _other_inputs(out: Path, ident: dict, force: bool) -> list[str]:
    """How the cache in ``out`` differs from ``ident``; a cache of other inputs is refused without ``force``."""
    manifest = out / "cache.json"
    if not manifest.is_file():
        if any(out.glob("shard-*.parquet")) and not force:
            raise CacheMismatchError(f"{out} holds shards but no cache.json; pass --force to rebuild it")
        return []
    diffs = _differences(json.loads(manifest.read_text()).get("identity", {}), ident)
    if diffs and not force:
        raise CacheMismatchError(
            f"cache {out} was built from other inputs ({'; '.join(diffs[:4])}); pass --force to rebuild it, "
            "or choose another --out"
        )
    return diffs


def _prepare_folder(out: Path, ident: dict, force: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    remove_temp_files(out)  # shards, sidecars and cache.json a killed run was writing
    diffs = _other_inputs(out, ident, force)
    if diffs:
        log.warning("rebuilding %s: %s", out, "; ".join(diffs))
        for shard in [*out.glob("shard-*.parquet"), *out.glob(".shard-*.sha256")]:
            shard.unlink()
    atomic_write_text(out / "cache.json", json.dumps({"status": "building", "identity": ident}, indent=2) + "\n")


def _fetch_from_hub(cfg: CacheTeacherConfig, ident: dict, force: bool) -> dict:
    """``cfg.out_dir`` becomes the Hub cache ``cfg.from_hub`` (fetched once, verified), refused in one line unless
    its identity is ``ident``: this teacher's weights and tokenizer, this manifest, these settings."""
    from pipeline.cache.hub import copy_cache, fetch_cache

    fetched = fetch_cache(cfg.from_hub)
    content = json.loads((fetched.folder / "cache.json").read_text())
    diffs = _differences(content["identity"], ident)
    if diffs:
        raise CacheMismatchError(
            f"cache_teacher: the Hub cache {fetched.uri} (commit {fetched.commit[:12]}) was built from other inputs "
            f"than this stage's (Hub -> here: {'; '.join(diffs[:4])}); point from_hub at a cache of this teacher, "
            "manifest and settings, or set from_hub: null to run the teacher"
        )
    _other_inputs(cfg.out_dir, ident, force)
    copy_cache(fetched.folder, cfg.out_dir)
    for shard in content["shards"]:  # as a build leaves them: a later build of this identity keeps every shard
        atomic_write_text(_sidecar(cfg.out_dir / shard["file"]), shard["sha256"] + "\n")
    log.info("%s: the Hub cache %s (commit %s)", cfg.out_dir, fetched.uri, fetched.commit)
    return content


def _finish(out: Path, ident: dict, ident_hash: str, n_shards: int) -> dict:
    shards = []
    for index in range(n_shards):
        path = out / _shard_name(index)
        if not shard_is_done(path, ident_hash, index):
            raise DwPipeError(f"shard {path.name} is missing or incomplete after the build; run the command again")
        meta = pq.read_metadata(path)
        tokens = pq.read_table(path, columns=["label_ids"]).column("label_ids").combine_chunks().flatten()
        shards.append(
            {
                "file": path.name,
                "rows": meta.num_rows,
                "tokens": len(tokens),
                "bytes": path.stat().st_size,
                "sha256": _sidecar(path).read_text().strip(),  # just checked against the file by shard_is_done
            }
        )
    extra = sorted(p.name for p in out.glob("shard-*.parquet") if p.name not in {s["file"] for s in shards})
    for name in extra:
        (out / name).unlink()
        _sidecar(out / name).unlink(missing_ok=True)
    content = {
        "status": "complete",
        "identity": ident,
        "identity_sha256": ident_hash,
        "rows": sum(s["rows"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "shards": shards,
    } | ({"labels": label_counts(out, shards)} if ident.get("labels") == "teacher" else {})
    from pipeline.cache.card import write_card

    write_card(out, content)
    atomic_write_text(out / "cache.json", json.dumps(content, indent=2) + "\n")
    return content
