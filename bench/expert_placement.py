"""What the embedded profile's expert placement costs in error rate.

    python bench/expert_placement.py [--params params.yaml] [--max-steps N] [--limit N] [--out JSON]

The embedded default (params.yaml: train_student) puts CLSR experts on the
decoder only and leaves the encoder frozen, so its outputs are computed once
and a step on 2 CPU cores stays cheap. The paper puts experts on every
encoder layer too. This program trains the distilwhisper student both ways,
with everything else equal (data, steps, seed, cache), and reports for each:
best dev error rate, test error rate per target language (greedy, the same
token cap), dev gate rates, and training seconds.

It builds the teacher cache for the training manifest itself (in --work).
--limit N keeps the first N utterances per language of each split (a quick
check of this program; the numbers then mean little). On 2 CPU cores the
encoder-expert run takes long; on a GPU both runs take minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cache.build import CacheTeacherConfig, build_cache  # noqa: E402
from pipeline.core.config import load_section  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.models.decode import EncoderStore  # noqa: E402
from pipeline.models.forward import pick_device  # noqa: E402
from pipeline.student.model import load_student  # noqa: E402
from pipeline.student.train import TrainStageConfig, dev_wer, train_student  # noqa: E402


def subset(manifest: Path, languages, limit: int, out: Path) -> Path:
    """``manifest`` restricted to ``languages`` (first ``limit`` per language when > 0), beside its audio."""
    rows = [u for u in load_manifest(manifest) if u.language in languages]
    if limit:
        rows = [u for lang in languages for u in [r for r in rows if r.language == lang][:limit]]
    out.mkdir(parents=True, exist_ok=True)
    audio = out / "audio"
    if not audio.exists():
        audio.symlink_to((manifest.parent / "audio").resolve())
    path = out / manifest.name
    path.write_text("".join(u.to_json() + "\n" for u in rows), encoding="utf-8")
    return path


def train_and_test(cfg, langs, test_utts, data: Path, tokenizer, extractor, device) -> dict:
    start = time.perf_counter()
    summary = train_student(cfg)
    seconds = time.perf_counter() - start
    model, _ = load_student(cfg.out_dir)
    model.to(device)
    store = EncoderStore(model, extractor, data, False, device)  # features: right for both placements
    store.fill(test_utts)
    test_rates = {}
    for lang in langs:
        result = dev_wer(model, [u for u in test_utts if u.language == lang], store, tokenizer, cfg)
        test_rates[lang] = {"error_rate": round(result["wer"], 4), "insertions": result["insertions"]}
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "steps": summary["steps"],
        "train_seconds": round(seconds, 1),
        "dev_error_rate_initial": round(summary["dev_wer_initial"], 4),
        "dev_error_rate_best": round(summary["dev_wer_best"], 4),
        "best_step": summary["best_step"],
        "dev_gate_rates": summary["gate_rates"],
        "test": test_rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--max-steps", type=int, default=0, help="0: the params' epochs decide")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (gate init, noise, order)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/expert-placement"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/expert_placement.json"))
    args = parser.parse_args()
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperTokenizer

    stage = load_section(TrainStageConfig, "train_student", args.params)
    base_cfg = next(c for c in stage.configs() if c.mode == "distilwhisper")
    langs = base_cfg.languages
    shutil.rmtree(args.work, ignore_errors=True)
    data = args.work / "prepared"
    train = subset(base_cfg.train, langs, args.limit, data)
    dev = subset(base_cfg.dev, langs, args.limit, data)
    test = subset(base_cfg.train.parent / "test.jsonl", langs, args.limit, data)
    cache_cfg = CacheTeacherConfig(teacher=base_cfg.base, manifest=train, out_dir=args.work / "cache")
    build_cache(cache_cfg)
    encoder_layers = WhisperConfig.from_pretrained(base_cfg.base).encoder_layers
    variants = {
        "decoder experts, encoder frozen (embedded default)": {},
        "encoder and decoder experts (paper)": {"clsr_encoder_layers": tuple(range(encoder_layers))},
    }
    device, _ = pick_device(base_cfg.device)
    tokenizer = WhisperTokenizer.from_pretrained(base_cfg.base)
    extractor = WhisperFeatureExtractor.from_pretrained(base_cfg.base)
    test_utts = load_manifest(test)
    report: dict = {"device": str(device), "languages": list(langs), "variants": {}}
    for i, (name, change) in enumerate(variants.items()):
        runs = {}
        for seed in args.seeds:
            cfg = replace(
                base_cfg,
                **change,
                cache=cache_cfg.out_dir,
                train=train,
                dev=dev,
                out_dir=args.work / f"student-{i}-{seed}",
                max_steps=args.max_steps,
                seed=seed,
            )
            runs[seed] = train_and_test(cfg, langs, test_utts, data, tokenizer, extractor, device)
            print(f"{name} (seed {seed}): {json.dumps(runs[seed])}", flush=True)
        report["variants"][name] = {
            "clsr_encoder_layers": list(cfg.clsr_encoder_layers),
            "clsr_decoder_layers": list(cfg.clsr_decoder_layers),
            "mean_dev_error_rate_best": round(sum(r["dev_error_rate_best"] for r in runs.values()) / len(runs), 4),
            "mean_test_error_rate": {
                lang: round(sum(r["test"][lang]["error_rate"] for r in runs.values()) / len(runs), 4) for lang in langs
            },
            "seeds": runs,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'variant':<52} {'dev best':>9} " + " ".join(f"{'test ' + lang:>9}" for lang in langs) + f" {'train s':>8}")
    for name, row in report["variants"].items():
        for seed, run in row["seeds"].items():
            cells = " ".join(f"{run['test'][lang]['error_rate']:>9.3f}" for lang in langs)
            print(
                f"{name + f' (seed {seed})':<52} {run['dev_error_rate_best']:>9.3f} {cells} {run['train_seconds']:>8}"
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
