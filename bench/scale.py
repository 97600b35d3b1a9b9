"""Wall time and peak memory of prepare_data, cache_teacher and one epoch of training's data loading as the corpus grows.

    python bench/scale.py [--sizes 10000,30000,100000] [--steps prepare_local,prepare_hf,cache,train_load]
                          [--features mel|encoder|none] [--work /tmp/dw-pipe-scale] [--out bench/results/scale.json]

Untimed, per size N: N utterances under --work (0.5-1.0 s noisy tones, 16 kHz, fixed seed; 3-8 words of ca, cs or
fi; ~3 % dev) as WAVs + a manifest in our format and as a save_to_disk folder with Common Voice's columns; once, a
tiny random Whisper (pipeline/models/tiny.py) as tokenizer and teacher. Each step runs in a fresh process:
prepare_local / prepare_hf (``prepare_data``, params.yaml's section, workers 2, no windows or long-form recordings:
a few a language whatever N); cache (``build_cache`` on prepare_local's train.jsonl, params.yaml's cache_teacher
settings, no encoder memo); train_load (one epoch of what training reads, as pipeline/student/train.py, no model
steps: ``load_training_data``, whose ``open_cache`` decodes every shard; an ``EncoderStore`` filled as training
fills it, up to ``feature_memory_gb`` (past it a batch's are made when read), with log-mels (--features mel: encoder
experts, as profiles/paper.yaml), tiny-encoder outputs (encoder: frozen encoder, as params.yaml) or nothing (none);
then every batch of ``epoch_batches``).

A row per (step, N), written to --out as it finishes, beside the rows already there: seconds (imports and set-up
excluded), utterances a second, the process's peak RSS, the sampled peak PSS of its process tree (prepare's
workers too), bytes written (train_load: held). The summary fits seconds and peak RSS linearly in utterances and
projects them to 224,000 (the paper's 28k x 8 languages). Run it on an idle machine: rows record the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.fsutil import atomic_write_text  # noqa: E402

STEPS = ("prepare_local", "prepare_hf", "cache", "train_load")
PAPER_UTTERANCES = 224_000
SEED = 13
RATE = 16_000
WORDS = {
    "ca": "casa gat aigua llibre porta camí temps nit dia mar pa finestra carrer ciutat llum".split(),
    "cs": "dům voda kniha pes město cesta den noc okno strom chléb ulice světlo řeka hora".split(),
    "fi": "talo vesi kirja koira kaupunki tie päivä yö ikkuna puu leipä katu valo joki vuori".split(),
}
LANGS = tuple(WORDS)
MARK = "SCALE-ROW "
CV_COLUMNS = {"sentence": "text", "locale": "language", "client_id": "speaker", "gender": "gender"}


def tone(i: int) -> np.ndarray:
    """Utterance ``i``'s audio: 0.5-1.0 s of a harmonic tone with noise, faded in and out."""
    rng = np.random.default_rng([SEED, i])
    t = np.arange(int(rng.uniform(0.5, 1.0) * RATE)) / RATE
    f0 = rng.uniform(100, 300)
    wave = sum(rng.uniform(0.1, 0.4) / h * np.sin(2 * np.pi * h * f0 * t) for h in (1, 2, 3))
    wave = wave + rng.normal(0, 0.02, t.size)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (0.8 * wave * fade / np.abs(wave).max()).astype(np.float32)


def record(i: int) -> dict:
    rng = np.random.default_rng([SEED, i, 1])
    lang = LANGS[i % len(LANGS)]
    words = rng.choice(WORDS[lang], size=int(rng.integers(3, 9)))
    split = "dev" if i % 100 < 3 else "train"  # three in a row: every language has dev rows
    text = " ".join(words).capitalize() + "."
    return dict(id=f"utt{i:06d}", audio=f"audio/utt{i:06d}.wav", text=text, language=lang, split=split,
                speaker=f"spk{i % 200:03d}", gender=("female", "male")[i % 2])  # fmt: skip


def make_corpus(n: int, folder: Path) -> Path:
    """The local form (WAVs + manifest.jsonl) and the hub form (save_to_disk) of the first ``n`` utterances."""
    if (folder / "done.json").is_file():
        return folder
    import datasets

    from pipeline.data.audio import write_wav

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "local/audio").mkdir(parents=True)
    with open(folder / "local/manifest.jsonl", "w", encoding="utf-8") as handle:
        for i in range(n):
            r = record(i)
            write_wav(folder / "local" / r["audio"], tone(i))
            handle.write(json.dumps(r, ensure_ascii=False) + "\n")

    def rows(split: str):
        for r in filter(lambda r: r["split"] == split, map(record, range(n))):
            wav = {"bytes": (folder / "local" / r["audio"]).read_bytes(), "path": f"{r['id']}.wav"}
            yield {"path": f"{r['id']}.wav", "audio": wav} | {cv: r[ours] for cv, ours in CV_COLUMNS.items()}

    features = datasets.Features(
        {k: datasets.Value("string") for k in ("path", *CV_COLUMNS)}
        | {"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}}  # as the hub's export
    )
    cache = folder / "hf-build"
    splits = {
        name: datasets.Dataset.from_generator(rows, features=features, gen_kwargs={"split": ours}, cache_dir=str(cache))
        for name, ours in (("train", "train"), ("validation", "dev"))
    }
    datasets.DatasetDict(splits).save_to_disk(str(folder / "hf"))
    shutil.rmtree(cache, ignore_errors=True)
    (folder / "done.json").write_text(json.dumps({"utterances": n}) + "\n")
    return folder


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_pss_kib(pid: int) -> int:
    """PSS of ``pid`` and its descendants (a shared page counts once in all), from /proc."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        kids = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:  # ended meanwhile
        return 0
    own = sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return own + sum(tree_pss_kib(k) for k in kids)


def status_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:")))


def reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS. Not ru_maxrss: a process keeps in it the RSS its parent had when
    it forked (kernel's signal maxrss, set at exec), so a child of a 500 MB parent reports 500 MB at its start."""
    Path("/proc/self/clear_refs").write_text("5")


class TreePeak(threading.Thread):
    """Samples :func:`tree_pss_kib` of this process (prepare_data's forkserver workers are not its children) and
    its own anonymous RSS (its heap: RSS also counts the pages of memory-mapped files read, e.g. Arrow tables)."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.peak, self.anon, self.done = every, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, tree_pss_kib(os.getpid()))
            self.anon = max(self.anon, status_kib("RssAnon"))


def paths(work: Path, n: int) -> dict[str, Path]:
    names = {"corpus": "corpus", "prepare_local": "prepared-local", "prepare_hf": "prepared-hf", "cache": "cache"}
    return {"tiny": work / "tiny-whisper"} | {k: work / f"n{n}" / v for k, v in names.items()}


def setup_prepare(p: dict[str, Path], source: str):
    from pipeline.core.config import load_section
    from pipeline.data.prepare import HFSourceConfig, PrepareDataConfig, prepare_data

    step = f"prepare_{source}"
    where = p["corpus"] / ("local/manifest.jsonl" if source == "local" else "hf")
    cfg = load_section(
        PrepareDataConfig, "prepare_data", ROOT / "params.yaml", source=source, input=str(where),
        out_dir=str(p[step]), model=str(p["tiny"]), workers=2,
    )  # fmt: skip
    cfg = replace(cfg, windows=None, longform=None, hf=HFSourceConfig(splits={"train": "train", "dev": "validation"}))
    shutil.rmtree(p[step], ignore_errors=True)

    def body() -> dict:
        summary = prepare_data(cfg)
        return {"utterances": summary["read"], "kept": summary["kept"], "out_bytes": folder_bytes(p[step])}

    return body


def setup_cache(p: dict[str, Path]):
    from pipeline.cache.build import CacheTeacherConfig, build_cache
    from pipeline.core.config import load_section

    cfg = load_section(
        CacheTeacherConfig, "cache_teacher", ROOT / "params.yaml", teacher=str(p["tiny"]),
        manifest=str(p["prepare_local"] / "train.jsonl"), out_dir=str(p["cache"]), device="cpu",
    )  # fmt: skip
    cfg = replace(cfg, encoder_memo=None, from_hub=None)  # no encoder outputs written to the repository's data/
    shutil.rmtree(p["cache"], ignore_errors=True)

    def body() -> dict:
        content = build_cache(cfg)
        settings = {k: getattr(cfg, k) for k in ("top_k", "min_prob", "id_encoding", "value_encoding", "batch_size")}
        return {"utterances": content["rows"], "tokens": content["tokens"], "shards": len(content["shards"]),
                "out_bytes": folder_bytes(p["cache"]), "settings": settings}  # fmt: skip

    return body


def setup_train_load(p: dict[str, Path], features: str):
    import torch

    from pipeline.models.decode import EncoderStore
    from pipeline.student.config import TrainConfig
    from pipeline.student.inputs import load_training_data
    from pipeline.student.loop import _batch_tensors, epoch_batches

    prepared, cpu = p["prepare_local"], torch.device("cpu")
    cfg = TrainConfig(
        mode="distilwhisper", languages=LANGS, base=p["tiny"], cache=p["cache"], train=prepared / "train.jsonl",
        dev=prepared / "dev.jsonl", out_dir=p["cache"].parent / "students", clsr_decoder_layers=(0, 1),
        clsr_encoder_layers=(0, 1) if features == "mel" else (), device="cpu",
    )  # fmt: skip
    precompute = cfg.freeze_encoder and not cfg.clsr_encoder_layers  # as pipeline.student.train._encoder_stores

    def body() -> dict:
        from transformers import WhisperForConditionalGeneration

        parts, start = {}, time.perf_counter()
        data = load_training_data(cfg)
        parts["open_s"] = time.perf_counter() - start
        store = None
        if features != "none":
            model = WhisperForConditionalGeneration.from_pretrained(cfg.base).eval() if precompute else None
            budget = int(cfg.feature_memory_gb * 2**30)  # as pipeline.student.train._encoder_stores
            store = EncoderStore(model, data.extractor, cfg.train.parent, precompute, cpu, dtype=torch.float16,
                                 budget_bytes=budget)  # fmt: skip
            store.fill(data.train_utts)
        parts["features_s"] = time.perf_counter() - start - parts["open_s"]
        pad = data.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        utts = tokens = 0
        for batch_idx in epoch_batches(data.examples, cfg, 0):
            batch = [data.examples[i] for i in batch_idx]
            if store is not None:
                store.kwargs([e.utt for e in batch])
            _, _, labels = _batch_tensors(batch, pad, cpu)
            targets = [e.teacher() for e in batch]  # as the KD loss reads and stacks them
            for name in ("topk_ids", "topk_logprobs", "tail_logprob"):
                torch.from_numpy(np.concatenate([getattr(t, name) for t in targets]))
            utts, tokens = utts + len(batch), tokens + len(labels)
        parts["epoch_s"] = time.perf_counter() - start - parts["open_s"] - parts["features_s"]
        cache_arrays = sum(s.nbytes for s in data.cache.shards)
        held = sum(t.nbytes for t in store.memo.values()) if store is not None else 0
        return {"utterances": utts, "tokens": tokens, "features": features, "decoded_cache_bytes": int(cache_arrays),
                "feature_store_bytes": held, "feature_memory_gb": cfg.feature_memory_gb} | {
                    k: round(v, 3) for k, v in parts.items()}  # fmt: skip

    return body


def child(step: str, n: int, work: Path, features: str) -> None:
    """Run one step in this (fresh) process and print its row."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    p = paths(work, n)
    before = {"cache": "prepare_local", "train_load": "cache"}.get(step)
    if before and not p[before].is_dir():
        sys.exit(f"error: {p[before]} is missing: run step {before} at size {n} first (--steps {before},{step})")
    if step.startswith("prepare_"):
        body = setup_prepare(p, step.removeprefix("prepare_"))
    elif step == "cache":
        body = setup_cache(p)
    else:
        body = setup_train_load(p, features)
    reset_peak_rss()
    rss_start = status_kib("VmRSS")
    sampler = TreePeak()
    sampler.start()
    load, start = os.getloadavg()[0], time.perf_counter()
    row = body()
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    mib = {"peak_rss_mib": status_kib("VmHWM"), "rss_at_start_mib": rss_start, "anon_peak_mib": sampler.anon}
    mib["tree_pss_peak_mib"] = sampler.peak
    row |= {"step": step, "size": n, "seconds": round(seconds, 2), "utt_per_s": round(row["utterances"] / seconds, 2)}
    row |= {k: round(v / 1024, 1) for k, v in mib.items()} | {
        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]
    }
    print(MARK + json.dumps(row), flush=True)


def kind(row: dict) -> str:
    return row["step"] + (f":{row['features']}" if "features" in row else "")


def fit(rows: list[dict]) -> dict:
    """Seconds and peak RSS as lines in N, the throughput at the largest N over that at the smallest, and both
    projected to :data:`PAPER_UTTERANCES`."""
    rows = sorted(rows, key=lambda r: r["utterances"])
    last = rows[-1]
    out = {"sizes": [r["size"] for r in rows], "ms_per_utt": round(1000 * last["seconds"] / last["utterances"], 2)}
    if len(rows) < 2:
        return out
    n = np.array([r["utterances"] for r in rows], dtype=float)
    b_t, a_t = np.polyfit(n, [r["seconds"] for r in rows], 1)
    b_m, a_m = np.polyfit(n, [r["peak_rss_mib"] for r in rows], 1)
    b_anon = np.polyfit(n, [r.get("anon_peak_mib", np.nan) for r in rows], 1)[0]
    return out | {
        "slope_ms_per_utt": round(1000 * b_t, 2),
        "throughput_ratio": round(rows[-1]["utt_per_s"] / rows[0]["utt_per_s"], 3),
        "rss_mib_per_10k": round(b_m * 10_000, 1),
        "anon_mib_per_10k": round(b_anon * 10_000, 1),
        "projected_hours": round((a_t + b_t * PAPER_UTTERANCES) / 3600, 2),
        "projected_rss_gib": round((a_m + b_m * PAPER_UTTERANCES) / 1024, 2),
    }


def save(args: argparse.Namespace, rows: list[dict]) -> dict:
    from pipeline.core.machine import machine
    from pipeline.report.docs import provenance

    here = machine()
    data = {
        "corpus": f"synthetic: 0.5-1.0 s tones, 3-8 words of ca/cs/fi, ~3 % dev, seed {SEED} (bench/scale.py)",
        "teacher": "tiny random Whisper, 2 layers, d_model 64 (pipeline/models/tiny.py)",
        "machine": f"{here['cpu']} ({here['cpu_id']}), {here['cores']} cores",
    }
    rows = sorted(rows, key=lambda r: (STEPS.index(r["step"]), kind(r), r["size"]))
    report = {
        "provenance": provenance(ROOT, "python bench/scale.py " + shlex.join(sys.argv[1:]), data),
        "machine": here,
        "rows": rows,
        "summary": {k: fit([r for r in rows if kind(r) == k]) for k in dict.fromkeys(map(kind, rows))},
    }
    atomic_write_text(args.out, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return report


def print_table(report: dict) -> None:
    print(
        f"\n{'step':<18} {'N':>7} {'s':>8} {'utt/s':>7} {'ms/utt':>7} {'RSS MiB':>8} {'anon MiB':>8} {'tree MiB':>8} {'out MiB':>8}"
    )
    for r in report["rows"]:
        out = r.get("out_bytes", r.get("feature_store_bytes", 0)) / 2**20  # train_load: the features it holds
        cells = (r["seconds"], r["utt_per_s"], 1000 * r["seconds"] / r["utterances"], r["peak_rss_mib"])
        print(f"{kind(r):<18} {r['size']:>7} {cells[0]:>8} {cells[1]:>7} {cells[2]:>7.1f} {cells[3]:>8} "
              f"{r.get('anon_peak_mib', '-'):>8} {r['tree_pss_peak_mib']:>8} {out:>8.1f}")  # fmt: skip
    keys = "ms_per_utt slope_ms_per_utt throughput_ratio rss_mib_per_10k anon_mib_per_10k projected_hours projected_rss_gib"
    keys = keys.split()
    print(f"\n{'step':<18} {'ms/utt':>7} {'slope':>7} {'utt/s big/small':>15} {'RSS MiB/10k':>11} {'anon /10k':>9} {'224k h':>7} {'224k GiB':>8}")  # fmt: skip
    for name, s in report["summary"].items():
        print(f"{name:<18} " + " ".join(f"{s.get(k, '-'):>{w}}" for k, w in zip(keys, (7, 7, 15, 11, 9, 7, 8))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="corpus sizes, comma-separated")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"a subset of {','.join(STEPS)}, in that order")
    parser.add_argument("--features", choices=("mel", "encoder", "none"), default="mel", help="train_load's store")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dw-pipe-scale")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scale.json")
    parser.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.size, args.work, args.features)

    sizes, steps = [int(s) for s in args.sizes.split(",")], [s for s in STEPS if s in args.steps.split(",")]
    if set(args.steps.split(",")) - set(STEPS):
        sys.exit(f"error: --steps {args.steps}: choose among {','.join(STEPS)}")
    from pipeline.report.docs import provenance

    run = provenance(ROOT, "python bench/scale.py " + shlex.join(sys.argv[1:]), {})
    made_by = {
        "command": run["command"],
        "code": run["code"],
        "date": run["date"],
    }  # rows of several runs: each its own
    old = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    rows = {(kind(r), r["size"]): r for r in old}
    tiny = paths(args.work, 0)["tiny"]
    if not (tiny / "config.json").is_file():
        from pipeline.models.tiny import save_tiny_whisper

        save_tiny_whisper(tiny)
    for n in sizes:
        start = time.perf_counter()
        make_corpus(n, paths(args.work, n)["corpus"])
        print(f"corpus of {n}: {time.perf_counter() - start:.1f} s (not timed)", flush=True)
        for step in steps:
            command = [sys.executable, __file__, "--child", step, "--size", str(n), "--work", str(args.work)]
            start = time.perf_counter()
            done = subprocess.run([*command, "--features", args.features], stdout=subprocess.PIPE, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
            if done.returncode or not lines:
                sys.exit(f"error: step {step} at {n} failed (exit {done.returncode}); its output is above")
            row = json.loads(lines[-1].removeprefix(MARK)) | {"process_s": round(time.perf_counter() - start, 1)}
            row["made_by"] = made_by
            rows[(kind(row), n)] = row
            save(args, list(rows.values()))
            print(f"{step} {n}: {row['seconds']} s, peak RSS {row['peak_rss_mib']} MiB", flush=True)
    print_table(save(args, list(rows.values())))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
