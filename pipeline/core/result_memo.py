"""Evaluation results kept between runs: one JSON file per fingerprint of everything that made them.

The benchmark decodes model after model and the longform stage transcribes
each export; together they are most of what one more student variant costs.
A model whose files, test data, decoding settings, evaluation code, decoder
versions and machine are all what they were gives the same hypotheses and
costs the same seconds, so a rerun (after a kill, after ``dvc repro`` for a
changed student, in a queued DVC experiment) takes them from here instead of
decoding again.

The caller builds ``made_from``, a JSON record of what decides the result; its
sha256 (:func:`fingerprint`) names the file, so results of other inputs sit
beside it (the students of two experiments each keep theirs) and a changed
input is a plain miss, never a stale hit. The record is stored in the file
too, and a file whose record differs from the one asked for (a hash clash, a
hand edit) is not used. Files are written under a temporary name and renamed.

``root`` None keeps the results only until the stage's outputs are written
(:meth:`ResultMemo.finish` removes them): a kill still costs only the model in
progress, and nothing outlives the run.

A relative memo folder is the project's: a DVC experiment run in a temporary
copy of the project (``dvc exp run --temp``, ``dvc queue start``) resolves it
against the project it was copied from (:func:`project_path`), so queued
experiments share one encoder memo and one result memo with the workspace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from pipeline.core.fsutil import atomic_write_text, project_path, remove_temp_files

log = logging.getLogger(__name__)

LEFTOVER_AGE_S = 3600  # a temporary older than this was left by a killed writer, not one still writing


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporaries (``.*.tmp-*``) in ``folder`` unchanged for :data:`LEFTOVER_AGE_S`: another process may
    be writing a younger one."""
    now = time.time()
    for path in folder.glob(".*.tmp-*"):
        try:
            if now - path.stat().st_mtime > LEFTOVER_AGE_S:
                path.unlink()
        except (FileNotFoundError, IsADirectoryError):
            continue


def fingerprint(made_from: dict) -> str:
    """sha256 of ``made_from`` as canonical JSON."""
    return hashlib.sha256(json.dumps(made_from, sort_keys=True, default=str).encode()).hexdigest()


class ResultMemo:
    """Results of one kind (``benchmark``, ``longform``) under ``root/kind/``, or under ``scratch`` for this run
    only when ``root`` is None."""

    def __init__(self, root: Path | None, kind: str, scratch: Path) -> None:
        self.persistent = root is not None
        self.folder = (project_path(root) / kind) if root is not None else scratch
        self.hits = 0
        self.misses = 0
        if self.folder.is_dir():
            if self.persistent:  # shared by concurrent experiments: only temporaries a killed writer left
                _remove_stale_temporaries(self.folder)
            else:
                remove_temp_files(self.folder)

    def _path(self, digest: str) -> Path:
        return self.folder / f"{digest[:32]}.json"

    def get(self, made_from: dict) -> tuple[dict, str] | None:
        """(the result made from exactly ``made_from``, when it was made), or None."""
        record = json.loads(json.dumps(made_from, sort_keys=True, default=str))  # as the file holds it
        path = self._path(fingerprint(made_from))
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, json.JSONDecodeError) as exc:  # written atomically, so damaged or edited: trust none of it
            log.warning("result memo %s unreadable (%s): computing it again", path, exc)
            self.misses += 1
            return None
        if saved.get("made_from") != record or "result" not in saved:
            log.warning("result memo %s holds another record than its name says: computing it again", path)
            self.misses += 1
            return None
        self.hits += 1
        return saved["result"], saved.get("made_at", "")

    def put(self, made_from: dict, result: dict) -> None:
        """Keep ``result``, made from ``made_from``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "made_from": made_from,
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pid": os.getpid(),
            "result": result,
        }
        text = json.dumps(record, ensure_ascii=False, default=str)  # key order kept: results are read back as written
        atomic_write_text(self._path(fingerprint(made_from)), text + "\n")

    def finish(self) -> None:
        """The stage's outputs are written: drop a scratch memo (a persistent one stays for the next run)."""
        if not self.persistent:
            shutil.rmtree(self.folder, ignore_errors=True)
        log.info("result memo %s: %d reused, %d computed", self.folder, self.hits, self.misses)
