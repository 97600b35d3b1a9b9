"""How the gates' start and learning rate decide whether CLSR gates open in a short run.

    python bench/gate_lr.py [--params params.yaml] [--seeds 0 1 2] [--variants NAME ...] [--max-steps N] [--out JSON]

Trains the distilwhisper student of params.yaml (train_student, the DAG's
data and teacher cache, which must exist: run `dvc repro train_student`
first) under each setting of VARIANTS, everything else equal:

* lr 1e-4 (the paper's), gates at the same rate, started as the official
  runs started them (``gate_init: official``: W1, w2 ~ N(0, 0.02));
* the same with the gates at 30x the lr (gate_lr_scale 30);
* lr 1e-4, gates at 30x, started at exactly G = 0 (``gate_init: zero``:
  w2 = 0; the official constructor's values, which post_init overwrote);
* lr 1e-4, gates at the same rate, started at G = 0 (the set-up in which
  the gates never left the threshold).

For each run: the dev error rate of the chosen student (each language at its
best dev step), each language's dev error rate and best step, and the share
of each language's CLSR layers whose gates route at least half the dev
tokens to the expert.

Why it matters: a gate starts at G = 0, the hard threshold of inference
routing 1[G >= 0]. Adam moves its parameters about lr per step, so at 1e-4
and ~16 steps per language G stays within ~1e-3 of 0 and the routing of a
whole language can flip on noise; at 1e-3 the experts (copies of pretrained
FFNs) drift so far that gates learn to close them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import load_section  # noqa: E402
from pipeline.student.train import TrainStageConfig, train_student, trained_summary, training_inputs  # noqa: E402

VARIANTS = {
    "official init, gates x1": {"lr": 1e-4, "gate_lr_scale": 1.0, "gate_init": "official"},
    "official init, gates x30": {"lr": 1e-4, "gate_lr_scale": 30.0, "gate_init": "official"},
    "zero init, gates x30": {"lr": 1e-4, "gate_lr_scale": 30.0, "gate_init": "zero"},
    "zero init, gates x1": {"lr": 1e-4, "gate_lr_scale": 1.0, "gate_init": "zero"},
}


def summarize(summary: dict, seconds: float | None) -> dict:
    at = {h["step"]: h for h in summary["history"]}
    best = summary["best_step"]
    steps = best if isinstance(best, dict) else dict.fromkeys(summary["languages"], best)
    return {
        "train_seconds": round(seconds, 1) if seconds is not None else None,  # None: an earlier run's folder
        "dev_error_rate_initial": round(summary["dev_wer_initial"], 4),
        "dev_error_rate_best": round(summary["dev_wer_best"], 4),
        "best_step": steps,
        "dev_error_rate": {lang: round(at[s]["per_language"][lang]["wer"], 4) for lang, s in steps.items()},
        "open_layers": {
            lang: round(sum(r >= 0.5 for r in rates.values()) / max(len(rates), 1), 2)
            for lang, rates in summary["gate_rates"].items()
        },
    }


def seed_mean(runs: list[dict], langs: list[str]) -> dict:
    """The mean over seeds of the chosen dev error rate, each language's, and each language's open layers."""
    n = len(runs)
    return {
        "dev_error_rate_best": round(sum(r["dev_error_rate_best"] for r in runs) / n, 4),
        "dev_error_rate": {lang: round(sum(r["dev_error_rate"][lang] for r in runs) / n, 4) for lang in langs},
        "open_layers": {lang: round(sum(r["open_layers"][lang] for r in runs) / n, 2) for lang in langs},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--max-steps", type=int, default=0, help="0: the params' epochs decide")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gate-lr"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/gate_lr.json"))
    args = parser.parse_args()

    stage = load_section(TrainStageConfig, "train_student", args.params)
    base = next(c for c in stage.configs() if c.mode == "distilwhisper")
    if not (base.cache / "card.json").is_file() and not any(base.cache.glob("*.parquet")):
        sys.exit(f"gate_lr: no teacher cache in {base.cache}; run `dvc repro train_student` first")
    report: dict = {"languages": list(base.languages), "variants": {}}
    rows = []
    for name in args.variants:
        change = VARIANTS[name]
        runs = {}
        for seed in args.seeds:
            cfg = replace(
                base,
                **change,
                seed=seed,
                max_steps=args.max_steps,
                out_dir=args.work / f"{name.replace(' ', '').replace(',', '_')}-seed{seed}",
            )
            start = time.perf_counter()
            kept = trained_summary(cfg, training_inputs(cfg))  # a finished run of these settings is not redone
            summary = kept or train_student(cfg)
            runs[str(seed)] = summarize(summary, None if kept else time.perf_counter() - start)
            r = runs[str(seed)]
            rows.append((name, seed, r))
            print(
                f"{name} seed {seed}: dev {r['dev_error_rate_best']:.4f} {r['dev_error_rate']} open {r['open_layers']}"
            )
        report["variants"][name] = {"settings": change, "runs": runs}
    langs = list(base.languages)
    print()
    print("| setting | seed | dev (chosen) | " + " | ".join(f"dev {lang}" for lang in langs) + " | open layers |")
    print("|---|---|---|" + "---|" * len(langs) + "---|")
    for name, seed, r in rows:
        per = " | ".join(f"{100 * r['dev_error_rate'][lang]:.1f}" for lang in langs)
        opened = ", ".join(f"{lang} {r['open_layers'][lang]:.0%}" for lang in langs)
        print(f"| {name} | {seed} | {100 * r['dev_error_rate_best']:.1f} | {per} | {opened} |")
    for name in args.variants:
        runs = list(report["variants"][name]["runs"].values())
        report["variants"][name]["mean"] = mean = seed_mean(runs, langs)
        per = " | ".join(f"{100 * mean['dev_error_rate'][lang]:.1f}" for lang in langs)
        opened = ", ".join(f"{lang} {mean['open_layers'][lang]:.0%}" for lang in langs)
        print(f"| {name} | mean | {100 * mean['dev_error_rate_best']:.1f} | {per} | {opened} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
