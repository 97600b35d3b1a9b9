"""Benchmark runs, and the finished ones kept across an interruption.

A :class:`Run` is one model's hypotheses on one dataset with what they
cost (:func:`with_copies` completes a student's with the untrained
student's, where the two are the same model). The benchmark decodes model
after model for many minutes; each finished (model, compute type) is
written at once to ``.NAME.partial/`` beside the benchmark folder, with the
fingerprint of everything that decided its hypotheses: the model's files,
the manifests and their audio, the decoding settings, the teacher's
tokenizer and feature-extractor files, the code of this package and the
decoders' versions. A rerun takes a run from there only under the very same
fingerprint, so a kill or Ctrl-C costs only the model in progress, and a
stale run is decoded again, never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from pipeline.core.fsutil import atomic_write_text, remove_temp_files, sha256_files, sha256_tree
from pipeline.data.manifest import Utterance

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (model, compute type)
DECODERS = ("torch", "transformers", "ctranslate2", "faster-whisper", "numpy")


@dataclass
class Run:
    """One model's hypotheses on one set of utterances, with its cost."""

    model: str
    compute_type: str
    effective_compute_type: str
    utts: list[Utterance]
    hyps: list[str]
    decode_seconds: float | None
    peak_rss_mb: float
    model_size_mb: float
    reference: str | None = None  # "model|compute_type" of the run this one is compared with
    reused_ids: frozenset[str] = frozenset()  # decoded from another model's identical encoder outputs (time charged)
    max_new_tokens: int | None = None  # the cap the hypotheses were decoded at
    capped: list[bool] | None = None  # per utterance: the decode hit the cap (no end-of-text); None: not known
    # The target-language utterances again at longer caps (benchmark.loop_caps), derived from one longer decode.
    at_caps: dict[int, Run] = field(default_factory=dict)
    mismatched_ids: frozenset[str] = frozenset()  # the longer decode's first max_new_tokens ids differ from the run's
    encoder_source: str = ""  # where a CTranslate2 run's encoder outputs came from, when not its own encoder
    # Hypotheses taken from the run ``copied_from`` ("model|compute_type"), which is the same model on them
    # (a CLSR student on languages without experts is its untrained base: pipeline.evaluate.matrix.stand_in_languages).
    copied_ids: frozenset[str] = frozenset()
    copied_from: str = ""


def with_copies(run: Run, utts: list[Utterance], source: Run | None, source_key: str) -> Run:
    """``run`` (decoded on part of ``utts``) completed with ``source``'s hypotheses on the rest, in ``utts``' order."""
    if source is None or len(run.utts) == len(utts):
        return run
    mine = {u.id: (h, c) for u, h, c in zip(run.utts, run.hyps, run.capped or [None] * len(run.utts))}
    theirs = {u.id: (h, c) for u, h, c in zip(source.utts, source.hyps, source.capped or [None] * len(source.utts))}
    pairs = [mine[u.id] if u.id in mine else theirs[u.id] for u in utts]
    run.copied_ids = frozenset(u.id for u in utts if u.id not in mine)
    run.copied_from = source_key
    run.utts, run.hyps = list(utts), [h for h, _ in pairs]
    run.capped = [bool(c) for _, c in pairs] if all(c is not None for _, c in pairs) else None
    return run


def run_record(run: Run) -> dict:
    """``run`` as JSON (its utterances by id), for :func:`run_from_record`."""
    return {
        "ids": [u.id for u in run.utts],
        "hyps": run.hyps,
        "effective_compute_type": run.effective_compute_type,
        "decode_seconds": run.decode_seconds,
        "peak_rss_mb": run.peak_rss_mb,
        "model_size_mb": run.model_size_mb,
        "reference": run.reference,
        "reused_ids": sorted(run.reused_ids),
        "max_new_tokens": run.max_new_tokens,
        "capped": run.capped,
        "at_caps": {str(cap): run_record(r) for cap, r in run.at_caps.items()},
        "mismatched_ids": sorted(run.mismatched_ids),
        "encoder_source": run.encoder_source,
        "copied_ids": sorted(run.copied_ids),
        "copied_from": run.copied_from,
    }


def run_from_record(key: Key, record: dict, by_id: dict[str, Utterance]) -> Run:
    return Run(
        key[0],
        key[1],
        record["effective_compute_type"],
        [by_id[i] for i in record["ids"]],
        record["hyps"],
        record["decode_seconds"],
        record["peak_rss_mb"],
        record["model_size_mb"],
        record["reference"],
        frozenset(record["reused_ids"]),
        record["max_new_tokens"],
        record["capped"],
        {int(cap): run_from_record(key, r, by_id) for cap, r in record["at_caps"].items()},
        frozenset(record["mismatched_ids"]),
        record.get("encoder_source", ""),
        frozenset(record.get("copied_ids", [])),
        record.get("copied_from", ""),
    )


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def shared_inputs(datasets: dict[str, str], data: dict[str, list[Utterance]], teacher: Path, settings: dict) -> dict:
    """What every run's hypotheses depend on besides its own model (hashed once per benchmark)."""
    code = sorted(Path(__file__).parent.glob("*.py"))
    return {
        "settings": settings,
        "datasets": {
            name: {
                "manifest_sha256": sha256_files([Path(path)]),
                "audio_sha256": sha256_files([Path(path).parent / u.audio for u in data[name]]),
            }
            for name, path in sorted(datasets.items())
        },
        "teacher_files_sha256": sha256_files(
            sorted(p for p in Path(teacher).glob("*") if p.suffix in (".json", ".txt"))
        ),
        "code_sha256": hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in code)).hexdigest(),
        "versions": {name: _version(name) for name in DECODERS},
    }


def _fingerprint(made_from: dict) -> str:
    return hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()


class PartialRuns:
    """Finished runs of an interrupted benchmark, one JSON per (model, compute type), each with its fingerprint."""

    def __init__(self, out_dir: Path, shared: dict) -> None:
        self.folder = out_dir.parent / f".{out_dir.name}.partial"
        self.shared = shared
        if self.folder.is_dir():
            remove_temp_files(self.folder)

    def lookup(
        self, key: Key, folders: list[Path], scope: dict[str, list[Utterance]], **extra: str
    ) -> tuple[dict, dict[str, Run] | None]:
        """(what run ``key`` is made from, its runs if an earlier interrupted benchmark finished it from just that).

        ``folders``: what the model is made of; ``scope``: the utterances it decodes per dataset; ``extra``: its
        spec beyond its files (kept decoder layers, the export record of a CTranslate2 model)."""
        made_from = {
            "shared": self.shared,
            "key": list(key),
            "model_files_sha256": [sha256_tree(Path(f)) for f in folders],
            "utterances": {name: [u.id for u in utts] for name, utts in sorted(scope.items())},
            "extra": extra,
        }
        return made_from, self._load(key, _fingerprint(made_from), scope)

    def _path(self, key: Key) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(key)) + ".json")

    def _load(self, key: Key, fingerprint: str, scope: dict[str, list[Utterance]]) -> dict[str, Run] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:  # written atomically, so edited by hand: trust none of it
            log.warning("%s is not valid JSON; decoding %s|%s again", path, *key)
            return None
        if saved.get("key") != list(key) or saved.get("fingerprint") != fingerprint:
            log.info("%s|%s: kept run is from other inputs or settings; decoding it again", *key)
            return None
        runs = {
            dataset: run_from_record(key, run, {u.id: u for u in scope.get(dataset, [])})
            for dataset, run in saved["runs"].items()
        }
        log.info("%s|%s: finished by an earlier, interrupted benchmark; kept", *key)
        return runs

    def save(self, key: Key, made_from: dict, runs: dict[str, Run]) -> None:
        """Keep the finished runs of ``key`` (every dataset) until the benchmark's outputs are written."""
        record = {
            "key": list(key),
            "fingerprint": _fingerprint(made_from),
            "made_from": made_from,  # for a reader; the fingerprint alone decides
            "runs": {dataset: run_record(run) for dataset, run in runs.items()},
        }
        atomic_write_text(self._path(key), json.dumps(record, ensure_ascii=False) + "\n")

    def clear(self) -> None:
        """Drop the kept runs: the benchmark's outputs now hold them."""
        shutil.rmtree(self.folder, ignore_errors=True)
