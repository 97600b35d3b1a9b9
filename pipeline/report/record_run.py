"""The default run's results as one compact, committed file (``dw-pipe docs record-run``).

A finished ``dvc repro`` leaves its numbers under ``data/`` (git-ignored) and
its stage times in ``logs/stage_times.jsonl``. :func:`record_run` reads them
and writes the cells README.md and docs/results.md render: error rate per
model, language and test set (with utterances and reference units), the int8
change, the loops at Whisper's default caps, translation chrF, long-form rows,
the prepared data, the teacher cache, the stage times, and the machine. Its
``provenance`` names the corpus (:func:`pipeline.report.docs.corpus_id` of the
run's own params.yaml) and the cache format and identity its ``cache.json``
records, so a table that claims today's corpus or cache format goes stale
when either moves.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from pipeline.core.config import read_params
from pipeline.core.fsutil import atomic_write_text
from pipeline.core.machine import machine
from pipeline.report.docs import DocsError, code_revision, corpus_id, locked_outputs, overridden_params, params_id

ROW_KEYS = ("n_utterances", "ref_units", "metric", "error_rate", "insertions", "max_new_tokens", "capped", "ci95")
DELTA_KEYS = ("reference", "reference_error_rate", "delta", "delta_ci95", "copied_from_untrained", "vs")
TRANSLATION_KEYS = ("n_utterances", "metric", "score", "ci95", "teacher_delta", "teacher_delta_ci95")
TRANSLATION_KEYS += ("untrained_delta", "untrained_delta_ci95", "reference_delta", "reference_delta_ci95")
LONGFORM_KEYS = ("setting", "audio_seconds", "metric", "ref_units", "error_rate", "insertions", "segments")
LONGFORM_KEYS += ("start_error_mean_s", "start_error_median_s", "stretches", "loop_stretches", "empty_stretches")
LONGFORM_KEYS += ("rtfx",)
CAP_GROUP = re.compile(r"cap=(\d+)")


def _read_json(path: Path, made_by: str) -> dict:
    if not path.is_file():
        raise DocsError(f"{path} is missing; run {made_by} (dvc repro) to the end before recording the run")
    return json.loads(path.read_text(encoding="utf-8"))


def _cell(row: dict) -> dict:
    return {
        "model": row["model"],
        "compute_type": row["compute_type"],
        "dataset": row["dataset"],
        "language": row["language"],
    }


def _pick(row: dict, keys: tuple[str, ...]) -> dict:
    return {k: row[k] for k in keys if row.get(k) is not None}


def bench_cells(metrics: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """metrics.json's ``group: all`` rows, its longer-cap rows and its chrF rows, each cut to the cells the docs show."""
    rows, caps = [], []
    for r in metrics["rows"]:
        cap = CAP_GROUP.fullmatch(r["group"])
        if r["group"] == "all":
            rows.append(_cell(r) | _pick(r, ROW_KEYS + DELTA_KEYS))
        elif cap:
            caps.append(_cell(r) | {"max_new_tokens": int(cap[1])} | _pick(r, ("n_utterances", "error_rate", "capped")))
    chrf = [_cell(r) | _pick(r, TRANSLATION_KEYS) for r in metrics.get("translation", []) if r["metric"] == "chrf"]
    return rows, caps, chrf


def stage_times(log: Path) -> dict:
    """Each stage's latest time in ``logs/stage_times.jsonl`` (the run that made today's outputs), their sum, and
    the span from the first of those stages' start to the last one's end."""
    if not log.is_file():
        raise DocsError(f"{log} is missing; record the run from the folder dvc repro ran in (--logs)")
    latest: dict[str, dict] = {}
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                entry = json.loads(line)
                latest[entry["stage"]] = {
                    "seconds": float(entry["seconds"]),
                    "finished_at": float(entry["finished_at"]),
                }
            except (ValueError, KeyError, TypeError) as exc:
                raise DocsError(f"{log} line {number} is not a stage time ({exc}); remove the line") from None
    if not latest:
        raise DocsError(f"{log} holds no stage time; run dvc repro first")
    start = min(t["finished_at"] - t["seconds"] for t in latest.values())
    end = max(t["finished_at"] for t in latest.values())
    return {
        "stages": [{"stage": s, "seconds": t["seconds"]} for s, t in latest.items()],
        "total_seconds": round(sum(t["seconds"] for t in latest.values()), 2),
        "wall_seconds": round(end - start, 1),
        "finished": datetime.fromtimestamp(end, timezone.utc).strftime("%Y-%m-%d"),
    }


def _check_stages(times: dict, dvc_yaml: Path) -> None:
    """Every stage of dvc.yaml has a time: a run cut short would otherwise pass for a finished one."""
    if not dvc_yaml.is_file():
        return
    import yaml

    wanted = list((yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {}))
    missing = [s for s in wanted if s not in {t["stage"] for t in times["stages"]}]
    if missing:
        raise DocsError(f"no stage time for {', '.join(missing)}; run dvc repro to the end before recording the run")


def cache_identities(caches: Path) -> dict[str, dict]:
    """Per teacher cache folder: what its cache.json says made it (format, identity hash, teacher, entries kept)."""
    found = {}
    for path in sorted(caches.glob("*/cache.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        ident = record["identity"]
        found[path.parent.name] = {
            "format_version": ident["format_version"],
            "identity_sha256": record["identity_sha256"],
            "teacher": ident["teacher"],
            "top_k": ident["top_k"],
            "min_prob": ident.get("min_prob"),
            "encoding": f"{ident.get('id_encoding')}/{ident.get('value_encoding')}",
            "rows": record["rows"],
            "tokens": record["tokens"],
            "bytes": sum(s.get("bytes", 0) for s in record["shards"]),
        }
    if not found:
        raise DocsError(f"no teacher cache (cache.json) under {caches}; run dvc repro to the end first")
    return found


def student_training(students: Path) -> dict[str, dict]:
    """Per trained student (``data/students/<name>/dev.json`` and ``train_log.jsonl``): its mode, its updates in
    all and per language, the steps dev was decoded at, and the step(s) the dev rule chose."""
    found = {}
    for path in sorted(students.glob("*/dev.json")):
        dev = json.loads(path.read_text(encoding="utf-8"))
        log = path.parent / "train_log.jsonl"
        lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
        updates = Counter(json.loads(line).get("language") for line in lines if line.strip())
        found[path.parent.name] = {
            "mode": dev["mode"],
            "steps": dev["steps"],
            "updates_by_language": {lang: updates[lang] for lang in sorted(updates, key=str)},
            "dev_steps": [h["step"] for h in dev.get("history", [])],
            "best_step": dev["best_step"],
        }
    return found


def run_revision(root: Path, own: tuple[str, ...] = ("dvc.lock",)) -> str:
    """:func:`code_revision` of the run's checkout, where a changed ``dvc.lock`` (the run's own record of its
    outputs) does not make the code dirty, nor ``params.yaml`` where ``own`` names it (an experiment's, checked
    against its overrides)."""
    revision = code_revision(root)
    if revision.endswith("+dirty"):
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.splitlines()
        if all(Path(line[3:]).name in own for line in status):
            return revision.removesuffix("+dirty")
    return revision


def run_record(data: Path, logs: Path, params_path: Path, note: str = "", overrides: Path | None = None) -> dict:
    """The compact record of the finished run whose outputs are under ``data`` (see the module docstring).

    ``overrides``: the run is a documented experiment, params.yaml (this folder's) with that file's changes
    (``scripts/run_experiment.sh``); a run made with other settings is refused."""
    if not params_path.is_file():
        raise DocsError(f"{params_path} is missing; record the run from the folder dvc repro ran in (--params)")
    params = read_params(params_path)
    command = "make repro"
    if overrides is not None:
        wanted = params_id(overridden_params(Path("params.yaml"), overrides))
        if params_id(params) != wanted:
            raise DocsError(
                f"{params_path} ({params_id(params)}) is not params.yaml with the changes of {overrides} ({wanted}); "
                f"run scripts/run_experiment.sh {overrides} from this checkout"
            )
        command = f"scripts/run_experiment.sh {overrides.as_posix()}"
    metrics = _read_json(data / "bench" / "metrics.json", "the benchmark stage")
    longform = _read_json(data / "longform" / "metrics.json", "the longform stage") if "longform" in params else None
    prepared = _read_json(data / "prepared" / "summary.json", "the prepare_data stage")
    caches = cache_identities(data / "cache")
    times = stage_times(logs / "stage_times.jsonl")
    _check_stages(times, params_path.parent / "dvc.yaml")
    formats = sorted({c["format_version"] for c in caches.values()})
    rows, caps, chrf = bench_cells(metrics)
    report = params.get("report", {})
    return {
        "provenance": {
            "command": command,
            "code": run_revision(params_path.parent, ("dvc.lock", "params.yaml") if overrides else ("dvc.lock",)),
            "date": times["finished"],
            "data": {
                "corpus": corpus_id(params["prepare_data"]),
                "params": params_id(params),
                "outputs": locked_outputs(params_path.parent / "dvc.lock"),
                "cache_format": formats[0] if len(formats) == 1 else formats,
                "cache": {name: c["identity_sha256"][:16] for name, c in caches.items()},
            },
        },
        "machine": machine(),  # where record-run ran: the run's own machine when recorded right after it
        "note": note,  # the run's conditions a reader of its times should know (another load on the machine, ...)
        "targets": metrics.get("target_languages") or params.get("benchmark", {}).get("target_languages", []),
        "roles": {
            "distilwhisper": report.get("main_student", "student-distilwhisper"),
            "untrained student": "student-untrained",
            "clsr-only": "student-clsr",
            "teacher": report.get("teacher", "teacher"),
        },
        "rows": rows,
        "caps": caps,
        "translation": chrf,
        "longform": [_cell(r) | _pick(r, LONGFORM_KEYS) for r in (longform or {}).get("rows", [])],
        "prepared": {k: prepared[k] for k in ("read", "kept", "rejected", "hours", "by_split") if k in prepared},
        "caches": caches,
        "students": student_training(data / "students"),
        "times": {k: v for k, v in times.items() if k != "finished"},
    }


def record_run(data: Path, logs: Path, params: Path, out: Path, note: str = "", overrides: Path | None = None) -> dict:
    """Write :func:`run_record` to ``out`` (a temporary name, then renamed into place); returns the record."""
    record = run_record(data, logs, params, note, overrides)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return record
