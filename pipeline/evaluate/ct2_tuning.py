"""Which CTranslate2 setting decodes fastest on this machine with the very same hypotheses.

CTranslate2 picks its CPU code path and GEMM backend itself (``CT2_VERBOSE=1``
prints the choice): on a 2-core AMD EPYC (Zen 4) it takes AVX2 and oneDNN
although the CPU has AVX-512 and VNNI, because it prefers MKL and AVX-512 only on Intel
CPUs. ``CT2_FORCE_CPU_ISA`` and ``CT2_USE_MKL`` override that; CTranslate2
reads them once, when it loads, so each setting runs in a fresh process
(``python -m pipeline.evaluate.ct2_tuning --worker``). :func:`sweep` times every setting,
compute type, thread count and batch size on the same log-mel features
(median of ``repeats``), and records whether the token ids equal the default
setting's; :func:`choose` keeps the fastest setting whose ids are identical for
every compute type, and leaves the default unless it is at least
``MIN_GAIN`` faster (a smaller difference is within this machine's noise).

``dw-pipe ct2-tune`` writes the record; the benchmark applies it when the
record was made on this machine (CPU model, family/model/stepping and SIMD
flags, cores, CTranslate2 version: :func:`pipeline.core.machine.machine`) and
says so in ``metrics.json`` (``ct2_setting``). The hypotheses cannot change,
only the seconds: so the record is no DVC input, like the encoder memo.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.core.errors import DwPipeError
from pipeline.core.machine import machine

log = logging.getLogger(__name__)

SETTINGS: dict[str, dict[str, str]] = {  # name -> environment
    "default": {},
    "AVX512": {"CT2_FORCE_CPU_ISA": "AVX512"},
    "AVX2": {"CT2_FORCE_CPU_ISA": "AVX2"},
    "MKL": {"CT2_USE_MKL": "1"},
    "no-MKL": {"CT2_USE_MKL": "0"},
}
ENV_KEYS = ("CT2_FORCE_CPU_ISA", "CT2_USE_MKL")
MIN_GAIN = 0.05  # leave the default unless another setting is at least 5 % faster


def _measure(
    models: dict[str, str],
    features: np.ndarray,
    prompts: list[list[int]],
    threads: list[int],
    batches: list[int],
    repeats: int,
    max_new: int,
) -> dict:
    """Under this process's environment: {"compute/threads/batch": {seconds, runs, ids}}."""
    import ctranslate2

    from pipeline.models.decode import greedy_ctranslate2

    out = {}
    for (ctype, folder), n_threads, batch in itertools.product(models.items(), threads, batches):
        model = ctranslate2.models.Whisper(folder, device="cpu", compute_type=ctype, intra_threads=n_threads)
        greedy_ctranslate2(model, features[:1], prompts[:1], max_new)  # warm-up
        runs, ids = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            ids = []
            for i in range(0, len(features), batch):
                ids += greedy_ctranslate2(model, features[i : i + batch], prompts[i : i + batch], max_new)
            runs.append((time.perf_counter() - start) / len(features))
        out[f"{ctype}/{n_threads}/{batch}"] = {"seconds": statistics.median(runs), "runs": runs, "ids": ids}
        del model
    return out


def sweep(
    models: dict[str, Path],
    features: np.ndarray,
    prompts: list[list[int]],
    *,
    settings: dict[str, dict[str, str]] | None = None,
    threads: list[int] | None = None,
    batches: tuple[int, ...] = (1, 8),
    repeats: int = 3,
    max_new: int = 64,
) -> list[dict]:
    """Rows: setting, compute_type, threads, batch, seconds_per_utterance (median), runs, same_ids, error.

    ``threads``: the intra-op thread counts tried under the default setting (default: 1 and every core); the
    other settings run with every core."""
    import tempfile

    settings = SETTINGS if settings is None else settings
    cores = os.cpu_count() or 1
    threads = threads or sorted({1, cores})
    most = max(threads)
    rows: list[dict] = []
    measured: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "features.npy", np.ascontiguousarray(features, dtype=np.float32))
        for name, env in settings.items():
            job = Path(tmp) / f"job-{name}.json"
            job.write_text(
                json.dumps(
                    {
                        "models": {k: str(Path(v).resolve()) for k, v in models.items()},
                        "features": str(Path(tmp) / "features.npy"),
                        "prompts": prompts,
                        "threads": threads if name == "default" else [most],
                        "batches": list(batches),
                        "repeats": repeats,
                        "max_new": max_new,
                    }
                )
            )
            clean = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
            done = subprocess.run(
                [sys.executable, "-m", "pipeline.evaluate.ct2_tuning", "--worker", str(job)],
                env={**clean, **env},
                capture_output=True,
                text=True,
                check=False,
                cwd=Path(__file__).resolve().parents[1],
            )
            if done.returncode != 0:
                lines = done.stderr.strip().splitlines()
                rows.append({"setting": name, "error": lines[-1] if lines else f"exit {done.returncode}"})
                continue
            measured[name] = json.loads(done.stdout.strip().splitlines()[-1])
    if "default" not in measured:
        raise DwPipeError("ct2-tune: CTranslate2 failed under its default setting: " + json.dumps(rows))
    reference = measured["default"]
    for name, results in measured.items():
        for key, m in results.items():
            ctype, n_threads, batch = key.split("/")
            rows.append(
                {
                    "setting": name,
                    "env": settings[name],
                    "compute_type": ctype,
                    "threads": int(n_threads),
                    "batch": int(batch),
                    "seconds_per_utterance": round(m["seconds"], 4),
                    "runs": [round(t, 4) for t in m["runs"]],
                    "ratio_to_default": round(m["seconds"] / reference[key]["seconds"], 3),
                    # against the default setting's one-at-a-time ids with as many threads
                    "same_ids": m["ids"] == reference[f"{ctype}/{n_threads}/1"]["ids"],
                }
            )
    return rows


def choose(rows: list[dict]) -> dict:
    """The setting (environment and threads) to decode with: the fastest one-at-a-time total over the compute
    types among those with identical ids for every compute type, thread count and batch; the default unless
    that is at least MIN_GAIN faster."""
    ok = [r for r in rows if "error" not in r]
    types = {r["compute_type"] for r in ok}
    candidates = {}
    for (name, n_threads), group in itertools.groupby(
        sorted(ok, key=lambda r: (r["setting"], r["threads"])), key=lambda r: (r["setting"], r["threads"])
    ):
        group = list(group)
        singles = {r["compute_type"]: r["seconds_per_utterance"] for r in group if r["batch"] == 1}
        if all(r["same_ids"] for r in group) and set(singles) == types:  # comparable totals only
            candidates[name, n_threads] = (sum(singles.values()), group[0]["env"])
    most = max(r["threads"] for r in ok)
    default = candidates.get(("default", most))
    best_key = min(candidates, key=lambda k: candidates[k][0])
    total, env = candidates[best_key]
    if default is not None and (best_key[0] == "default" or total > (1 - MIN_GAIN) * default[0]):
        best_key, (total, env) = ("default", most), default
    reason = f"{best_key[0]} with {best_key[1]} threads: {total:.3f} s per utterance over the compute types"
    if best_key == ("default", most):
        reason += f"; no other setting with the same ids was {MIN_GAIN:.0%} faster"
    elif default is not None:
        reason += f" (default with {most} threads: {default[0]:.3f} s)"
    return {"setting": best_key[0], "env": env, "threads": best_key[1], "reason": reason}


def table_lines(rows: list[dict]) -> list[str]:
    """The sweep as a printed table."""
    lines = [f"{'setting':<8} {'compute':<13} {'threads':>7} {'batch':>5} {'s/utt':>7} {'vs default':>10} same ids"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['setting']:<8} failed: {r['error']}")
            continue
        lines.append(
            f"{r['setting']:<8} {r['compute_type']:<13} {r['threads']:>7} {r['batch']:>5} "
            f"{r['seconds_per_utterance']:>7.3f} {r['ratio_to_default']:>10.3f} {r['same_ids']}"
        )
    return lines


def write_record(out: Path, rows: list[dict], extra: dict) -> dict:
    from pipeline.core.fsutil import atomic_write_text

    record = {"machine": machine(), **extra, "rows": rows, "choice": choose(rows)}
    atomic_write_text(out, json.dumps(record, indent=1) + "\n")
    return record


def applied(path: Path | None) -> dict:
    """Apply the record at ``path`` to this process (before CTranslate2 loads) when it was made on this machine.
    Returns what the benchmark decodes with: ``{"setting", "env", "threads", "source"}``."""
    none = {"setting": "default", "env": {}, "threads": 0, "source": "CTranslate2's own choice"}
    if path is None:
        return none
    path = Path(path)
    if not path.is_file():
        log.info("no CTranslate2 tuning record at %s: CTranslate2's own setting (dw-pipe ct2-tune measures them)", path)
        return {**none, "source": f"no record at {path}"}
    record = json.loads(path.read_text())
    here = machine()
    if record.get("machine") != here:
        log.warning(
            "%s was measured on %s, not on this machine (%s): CTranslate2's own setting (dw-pipe ct2-tune measures "
            "this one)",
            path,
            record.get("machine"),
            here,
        )
        return {**none, "source": f"{path} is for another machine"}
    choice = record["choice"]
    current = {k: os.environ.get(k) for k in ENV_KEYS}
    wanted = {k: choice["env"].get(k) for k in ENV_KEYS}
    if current != wanted and "ctranslate2" in sys.modules:
        log.warning("CTranslate2 is already loaded in this process: %s cannot be applied", choice["setting"])
        return {**none, "source": f"{path}: CTranslate2 was already loaded"}
    for key, value in wanted.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    log.info("CTranslate2 setting from %s: %s", path, choice["reason"])
    return {**choice, "source": str(path)}


def tune(
    cfg,
    *,
    model: str = "teacher",
    n: int = 6,
    repeats: int = 3,
    out: Path | None = None,
    settings: list[str] | None = None,
) -> dict:
    """Sweep the settings on the benchmark's ``<model>-float32`` / ``<model>-int8`` exports and its first ``n``
    test utterances (target languages first), and write the record to ``out`` (default: ``cfg.ct2_tuning``)."""
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    from pipeline.data.manifest import load_labelled
    from pipeline.models.forward import features_for, prompt_ids

    out = Path(out or cfg.ct2_tuning or "data/ct2-tuning.json")
    folders = {ctype: Path(cfg.ct2_dir) / f"{model}-{ctype}" for ctype in ("float32", "int8")}
    missing = [str(f) for f in folders.values() if not (f / "quantize.json").is_file()]
    if missing:
        raise DwPipeError(f"ct2-tune: no CTranslate2 export at {', '.join(missing)}; run the quantize stage first")
    models = {"float32": folders["float32"], "int8_float32": folders["int8"], "int8": folders["int8"]}
    manifest = Path(next(iter(cfg.datasets.values())))
    utts = load_labelled(manifest, "scoring")
    utts = sorted(utts, key=lambda u: u.language not in cfg.target_languages)[:n]  # stable: manifest order
    features = features_for(WhisperFeatureExtractor.from_pretrained(cfg.teacher), utts, manifest.parent).numpy()
    tokenizer = WhisperTokenizer.from_pretrained(cfg.teacher)
    prompts = [prompt_ids(tokenizer, u.language) for u in utts]
    chosen = {name: SETTINGS[name] for name in (settings or SETTINGS)}
    rows = sweep(models, features, prompts, settings=chosen, repeats=repeats, max_new=cfg.max_new_tokens)
    extra = {
        "models": {k: str(v) for k, v in models.items()},
        "utterances": [u.id for u in utts],
        "repeats": repeats,
        "max_new_tokens": cfg.max_new_tokens,
    }
    return {**write_record(out, rows, extra), "path": str(out)}


def _worker(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    features = np.load(job["features"])
    result = _measure(
        job["models"], features, job["prompts"], job["threads"], job["batches"], job["repeats"], job["max_new"]
    )
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
    else:
        sys.exit("usage: dw-pipe ct2-tune (this module's --worker mode is internal)")
