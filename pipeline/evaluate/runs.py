"""Benchmark runs, and finished ones kept for the next benchmark.

A :class:`Run` is one model's hypotheses on one dataset with what they
cost (:func:`with_copies` completes a student's with the untrained
student's, where the two are the same model). The benchmark decodes model
after model for many minutes; each finished (model, compute type) is kept at
once in the result memo (:mod:`pipeline.core.result_memo`; ``benchmark.run_memo``,
or only until the outputs are written when that is null) under the
fingerprint of everything that decided its hypotheses and seconds: the
model's files, the manifests and their audio, the decoding settings, the
teacher's tokenizer and feature-extractor files and the untrained student's
base, the code that decodes (:data:`DECODING_CODE`), the decoders' versions and
the machine. A rerun takes a run from there only under the very same
fingerprint: a kill or Ctrl-C costs only the model in progress, one more
student variant costs only its own models, and a stale run is decoded again,
never reused. A kept run's rows say when it was decoded (``decoded_at``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from pipeline.core.fsutil import sha256_files, sha256_tree
from pipeline.core.machine import machine
from pipeline.core.result_memo import ResultMemo, fingerprint
from pipeline.data.manifest import Utterance

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (model, compute type)
DECODERS = ("torch", "transformers", "ctranslate2", "faster-whisper", "numpy", "peft")  # peft: a LoRA student loads
# The code that decides a run's hypotheses, beside the model files and settings (relative to pipeline/): the
# evaluation package, the models package (decoding, CLSR routing, features, CTranslate2 layout), how a student is
# built, and how manifests and audio are read.
DECODING_CODE = ("evaluate/*.py", "models/*.py", "student/model.py", "data/audio.py", "data/manifest.py",
                 "core/encoder_memo.py")  # fmt: skip


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
    decoded_at: str = ""  # when a run kept from an earlier benchmark was decoded (its seconds are from then)


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
        "decoded_at": run.decoded_at,
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
        record.get("decoded_at", ""),
    )


def version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def code_digest() -> str:
    """sha256 of the files of :data:`DECODING_CODE`, by path relative to pipeline/."""
    root = Path(__file__).resolve().parents[1]
    files = sorted({p for pattern in DECODING_CODE for p in root.glob(pattern)})
    return hashlib.sha256(
        b"".join(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() for p in files)
    ).hexdigest()


def shared_inputs(datasets: dict[str, str], data: dict[str, list[Utterance]], teacher: Path, settings: dict) -> dict:
    """What every run's hypotheses and seconds depend on besides its own model (hashed once per benchmark)."""
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
        "code_sha256": code_digest(),
        "versions": {name: version_of(name) for name in DECODERS},
        "machine": machine(),  # the seconds, and the float kernels, are this CPU's
    }


class KeptRuns:
    """Finished runs, one memo entry per (model, compute type) and everything that made it."""

    def __init__(self, out_dir: Path, shared: dict, memo_root: Path | None = None) -> None:
        self.memo = ResultMemo(memo_root, "benchmark", out_dir.parent / f".{out_dir.name}.partial")
        self.shared = shared
        self.made_from: dict[Key, dict] = {}  # of each run looked up so far

    def fingerprint_of(self, key: Key) -> str:
        """The fingerprint of what run ``key`` (looked up before) is made from: a run that copies hypotheses from
        it names it among its own inputs."""
        return fingerprint(self.made_from[key])

    def lookup(
        self, key: Key, folders: list[Path], scope: dict[str, list[Utterance]], **extra: str
    ) -> tuple[dict, dict[str, Run] | None]:
        """(what run ``key`` is made from, its runs if a benchmark before this one decoded it from just that).

        ``folders``: what the model is made of; ``scope``: the utterances it decodes per dataset; ``extra``: its
        spec beyond its files (kept decoder layers, the export record of a CTranslate2 model)."""
        made_from = {
            "shared": self.shared,
            "key": list(key),
            "model_files_sha256": [sha256_tree(Path(f)) for f in folders],
            "utterances": {name: [u.id for u in utts] for name, utts in sorted(scope.items())},
            "extra": extra,
        }
        self.made_from[key] = made_from
        found = self.memo.get(made_from)
        if found is None:
            return made_from, None
        saved, made_at = found
        runs = {
            dataset: run_from_record(key, run, {u.id: u for u in scope.get(dataset, [])})
            for dataset, run in saved["runs"].items()
        }
        for run in runs.values():
            run.decoded_at = run.decoded_at or made_at
        log.info("%s|%s: decoded by an earlier benchmark from the same inputs (%s); kept", *key, made_at)
        return made_from, runs

    def save(self, key: Key, made_from: dict, runs: dict[str, Run]) -> None:
        """Keep the finished runs of ``key`` (every dataset)."""
        self.memo.put(made_from, {"runs": {dataset: run_record(run) for dataset, run in runs.items()}})

    def finish(self) -> None:
        """The benchmark's outputs hold the runs now: a scratch memo goes, a persistent one stays."""
        self.memo.finish()
