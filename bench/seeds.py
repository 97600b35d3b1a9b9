"""How much the target-language results move with the training seed, and whether KD helps beyond it.

    python bench/seeds.py [--seeds 0 1 2] [--params params.yaml] [--work data/seeds] [--out bench/results/seeds.json]
                          [--bootstrap N] [--all-exports]

For each seed: trains every mode of params.yaml train_student (distilwhisper
and clsr) with its settings but that seed, exports the students the quantize
stage converts (export_student settings; --all-exports: every mode and
language), converts those with CTranslate2 at each quantize compute type,
and benchmarks (benchmark settings) the exact-routing PyTorch students and
the CTranslate2 exports on the target languages of the test sets. The
teacher (its CTranslate2 conversions, and the transformers run when
benchmark.hf_teacher) and the untrained student do not depend on the seed
and are benchmarked once, in the same benchmark call as the seeds that
need one. They are not read from data/bench: its metrics.json does not
record what its hypotheses were made from.

Finished work is reused, never when stale: a trained folder whose
``trained_summary`` matches (settings and input contents; for the seed of
params.yaml the DAG's data/students/<mode> counts too) is not retrained; an
export or conversion is redone unless the record beside it names the same
source contents and settings; a seed's hypotheses are reused only when what
they were made from (benchmark settings, manifests and audio, pipeline code,
decoder versions, the student and CTranslate2 folders' contents) is
unchanged. Those records go into the output JSON.

Writes --out: per (dataset, language, model, compute type) each seed's
corpus error rate, the mean over seeds, min, max and std; the KD effect
(distilwhisper minus clsr-only, per engine) with a 95 % interval from a
two-level bootstrap over seeds and utterances (pipeline/evaluate/seeds.py says how;
with 3 seeds the seed level is coarse); and the issue's bars on the seed
means. Prints the same as tables (error rates in %).

Needs the DAG's data, teacher cache and models: `dvc repro cache_teacher`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import load_section  # noqa: E402
from pipeline.core.errors import INTERRUPTED, USER_ERRORS, DwPipeError  # noqa: E402
from pipeline.core.fsutil import atomic_write_text, sha256_tree  # noqa: E402
from pipeline.core.progress import set_progress  # noqa: E402
from pipeline.core.stage import configure_logging  # noqa: E402
from pipeline.evaluate.benchmark import BenchmarkConfig, load_datasets, run_benchmark  # noqa: E402
from pipeline.evaluate.quantize import QuantizeConfig, quantize  # noqa: E402
from pipeline.evaluate.runs import shared_inputs  # noqa: E402
from pipeline.evaluate.seeds import issue_bars, kd_effects, seed_table, utterance_counts  # noqa: E402
from pipeline.report.build import ReportConfig  # noqa: E402
from pipeline.student.export import ExportConfig, export_student  # noqa: E402
from pipeline.student.train import TrainStageConfig, train_student, trained_summary, training_inputs  # noqa: E402

log = logging.getLogger("bench.seeds")
FIXED = "fixed"  # the record of the models no seed changes


@dataclass(frozen=True)
class Settings:
    """The params.yaml sections this program follows."""

    train: TrainStageConfig
    export: ExportConfig
    quantize: QuantizeConfig
    bench: BenchmarkConfig
    teacher: str  # the model whose float32 rows stand for the teacher (report.teacher)

    @classmethod
    def load(cls, params: Path) -> Settings:
        return cls(
            load_section(TrainStageConfig, "train_student", params),
            load_section(ExportConfig, "export_student", params),
            load_section(QuantizeConfig, "quantize", params),
            load_section(BenchmarkConfig, "benchmark", params),
            load_section(ReportConfig, "report", params).teacher,
        )

    def exported(self, all_exports: bool) -> tuple[list[tuple[str, str]], dict[str, Path]]:
        """((mode, language) exports to convert per seed, {name: folder} of the seed-independent conversions)."""
        pairs = [(m, lang) for m in self.export.modes if m in self.train.modes for lang in self.export.languages]
        by_folder = {self.export.out_dir / f"{m}-{lang}": (m, lang) for m, lang in pairs}
        fixed = {name: Path(f) for name, f in self.quantize.models.items() if Path(f) not in by_folder}
        chosen = [by_folder[Path(f)] for f in self.quantize.models.values() if Path(f) in by_folder]
        return (pairs if all_exports else chosen), fixed


def up_to_date(folder: Path, made_from: dict) -> bool:
    record = folder.parent / f".{folder.name}.made_from.json"
    return folder.is_dir() and record.is_file() and json.loads(record.read_text()) == made_from


def stamp(folder: Path, made_from: dict) -> None:
    """Record beside ``folder`` (not in it: its content hash is part of later records) what it was made from."""
    atomic_write_text(folder.parent / f".{folder.name}.made_from.json", json.dumps(made_from, sort_keys=True))


def train_seed(settings: Settings, seed: int, work: Path) -> dict[str, dict]:
    """Each student's at ``seed``, by name (a mode, or a named student of one): {name: {"folder",
    "dev_error_rate", "trained"}}."""
    out = {}
    for cfg in settings.train.configs():
        inputs = training_inputs(cfg)
        name = cfg.out_dir.name
        mine = replace(cfg, seed=seed, out_dir=work / f"seed{seed}" / "students" / name)
        summary, folder, trained = None, cfg.out_dir, False
        if seed == cfg.seed:  # the DAG's own student serves the params' seed when it is up to date
            summary = trained_summary(cfg, inputs)
        if summary is None:
            folder, summary = mine.out_dir, trained_summary(mine, inputs)
            if summary is None:
                summary, trained = train_student(mine, inputs), True
        out[name] = {"folder": str(folder), "dev_error_rate": summary["dev_wer_best"], "trained": trained}
    return out


def convert(source: Path, out: Path, ctype: str, device: str) -> Path:
    import ctranslate2

    made_from = {"source_sha256": sha256_tree(source), "compute_type": ctype, "device": device}
    made_from["ctranslate2"] = ctranslate2.__version__
    if not up_to_date(out, made_from):
        quantize(source, out, ctype, device)
        stamp(out, made_from)
    return out


def convert_seed(settings: Settings, seed: int, students: dict, pairs, work: Path) -> dict[str, Path]:
    """Export and convert the seed's students: {benchmark folder name: CTranslate2 folder}."""
    folders = {}
    for mode, lang in pairs:
        export = work / f"seed{seed}" / "exports" / f"{mode}-{lang}"
        student = Path(students[mode]["folder"])
        made_from = {"student_sha256": sha256_tree(student), "language": lang, "threshold": settings.export.threshold}
        if not up_to_date(export, made_from):
            export_student(student, lang, export, settings.export.threshold)
            stamp(export, made_from)
        for ctype in settings.quantize.compute_types:
            out = work / f"seed{seed}" / "ct2" / f"{mode}-{lang}-{ctype}"
            folders[f"{mode}-seed{seed}-{lang}-{ctype}"] = convert(export, out, ctype, settings.quantize.device)
    return folders


def benchmark_config(settings: Settings, work: Path, students: dict[str, str], ct2: dict[str, Path], teacher: bool):
    """The benchmark of params.yaml on ``students`` (name -> folder) and ``ct2`` (folder name -> folder), every
    model on the target languages only; ``teacher``: decode the transformers teacher too (benchmark.hf_teacher)."""
    links = work / "bench-ct2"
    shutil.rmtree(links, ignore_errors=True)
    links.mkdir(parents=True)
    for name, folder in ct2.items():
        (links / name).symlink_to(folder.resolve(), target_is_directory=True)
    names = ["teacher", "student-untrained"] + [f"student-{n}" for n in students]
    names += [f"ct2:{n.rsplit('-', 1)[0]}" for n in ct2]  # the benchmark names a conversion without its type
    return replace(
        settings.bench,
        out_dir=work / "bench",
        students=students,
        ct2_dir=str(links),
        faster_whisper=(),
        hf_teacher=teacher,
        targets_only=tuple(dict.fromkeys(names)),
    )


def made_from_records(settings: Settings, seeds: dict[int, dict], ct2: dict, fixed_ct2: dict) -> dict[str, dict]:
    """What each seed's hypotheses (and the seed-independent ones) depend on."""
    bench = settings.bench
    data = load_datasets(bench)
    settings_used = {"max_new_tokens": bench.max_new_tokens, "batch_size": bench.batch_size}
    shared = shared_inputs(bench.datasets, data, Path(bench.teacher), settings_used)
    shared["target_languages"] = list(bench.target_languages)
    base = Path(bench.untrained.partition("@")[0])
    records = {
        FIXED: {
            "shared": shared,
            "untrained": bench.untrained,
            "untrained_files_sha256": sha256_tree(base),
            "hf_teacher": bench.hf_teacher,
            "teacher_files_sha256": sha256_tree(Path(bench.teacher)) if bench.hf_teacher else None,
            "ct2": {name: sha256_tree(f) for name, f in fixed_ct2.items()},
        }
    }
    for seed, students in seeds.items():
        records[f"seed{seed}"] = {
            "shared": shared,
            "students": {mode: sha256_tree(Path(s["folder"])) for mode, s in students.items()},
            "ct2": {name: sha256_tree(f) for name, f in ct2[seed].items()},
        }
    return records


def hypotheses(settings: Settings, work: Path, seeds: dict[int, dict], ct2: dict, fixed_ct2: dict) -> dict[str, list]:
    """Each record's hypothesis rows (tagged with their seed, models named without it), from its kept file
    when made from the same inputs, else from one benchmark of everything stale."""
    made_from = made_from_records(settings, seeds, ct2, fixed_ct2)
    kept = {}
    for key, record in made_from.items():
        path = work / f"{key}.hypotheses.json"
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if saved.get("made_from") == record:
            kept[key] = saved["rows"]
    stale = [s for s in seeds if f"seed{s}" not in kept]
    if stale or FIXED not in kept:
        # The untrained student is decoded by every benchmark; the teacher only when its kept rows are stale.
        teacher = FIXED not in kept
        log.info("benchmarking seeds %s%s", stale, " and the teacher and untrained student" if teacher else "")
        students = {f"{mode}-seed{s}": st["folder"] for s in stale for mode, st in seeds[s].items()}
        folders = {n: f for s in stale for n, f in ct2[s].items()}
        if teacher:
            folders |= fixed_ct2
        run_benchmark(benchmark_config(settings, work, students, folders, teacher and settings.bench.hf_teacher))
        rows = [json.loads(line) for line in (work / "bench" / "hypotheses.jsonl").read_text().splitlines()]
        renamed = {f"student-{mode}-seed{s}": (f"student-{mode}", s) for s in stale for mode in seeds[s]}
        renamed |= {f"ct2:{n.rsplit('-', 1)[0]}": (f"ct2:{n.split('-seed')[0]}", s) for s in stale for n in ct2[s]}
        fresh: dict[str, list] = {f"seed{s}": [] for s in stale} | ({FIXED: []} if teacher else {})
        for row in rows:
            model, seed = renamed.get(row["model"], (row["model"], None))
            key = FIXED if seed is None else f"seed{seed}"
            if key in fresh:
                fresh[key].append({**row, "model": model, "seed": seed})
        for key, rows_of in fresh.items():
            atomic_write_text(
                work / f"{key}.hypotheses.json",
                json.dumps({"made_from": made_from[key], "rows": rows_of}, ensure_ascii=False) + "\n",
            )
            kept[key] = rows_of
    return {"made_from": made_from, "rows": kept}


def summarize(settings: Settings, rows: dict[str, list], reps: int) -> dict:
    """Error rates over seeds, the KD effect and the bars (target cells, float32 rows of the named models)."""
    counts = utterance_counts(r for rows_of in rows.values() for r in rows_of)
    table = seed_table(counts)
    means: dict[tuple[str, str], dict[str, float]] = {}
    for r in table:
        if r["compute_type"] == "float32" and r["language"] in settings.bench.target_languages:
            means.setdefault((r["dataset"], r["language"]), {})[r["model"]] = r["mean"]
    bars = issue_bars(means, "student-distilwhisper", "student-untrained", "student-clsr", settings.teacher)
    return {"error_rates": table, "kd_effect": kd_effects(counts, reps, settings.bench.seed), "bars": bars}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_tables(result: dict, seeds: list[int]) -> None:
    print(
        "\n| dataset | language | model | type | mean | min-max | std | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " |"
    )
    print("|---|---|---|---|---|---|---|" + "---|" * len(seeds))
    for r in result["error_rates"]:
        per = [_pct(r["per_seed"].get(str(s), r["per_seed"].get("all"))) for s in seeds]
        print(
            f"| {r['dataset']} | {r['language']} | {r['model']} | {r['compute_type']} | {_pct(r['mean'])} | "
            f"{_pct(r['min'])}-{_pct(r['max'])} | {_pct(r['std'])} | " + " | ".join(per) + " |"
        )
    print(
        "\nKD effect: distilwhisper minus clsr-only, error-rate points (95 % interval: seeds and utterances resampled)"
    )
    print(
        "| dataset | language | model | type | mean | 95 % interval | min-max | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " |"
    )
    print("|---|---|---|---|---|---|---|" + "---|" * len(seeds))
    for r in result["kd_effect"]:
        low, high = r["ci95"]
        per = [f"{100 * r['per_seed'][str(s)]:+.1f}" for s in seeds]
        print(
            f"| {r['dataset']} | {r['language']} | {r['model']} - {r['minus']} | {r['compute_type']} | "
            f"{100 * r['mean']:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] | "
            f"{100 * r['min']:+.1f}..{100 * r['max']:+.1f} | " + " | ".join(per) + " |"
        )
    bars = result["bars"]
    print(f"\nBars on the {len(seeds)}-seed means (float32)")
    print("| cell | distilwhisper | untrained | rel. gain | clsr | teacher | >= 25 % gain | < clsr | <= teacher + 10 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cell, c in bars["cells"].items():
        values = [c["error_rate"][k] for k in ("main", "untrained", "clsr", "teacher")]
        flags = ["yes" if c[k] else "no" for k in ("gain_met", "below_clsr", "teacher_met")]
        print(
            f"| {cell} | {_pct(values[0])} | {_pct(values[1])} | {100 * c['relative_gain']:.1f} % | {_pct(values[2])} | "
            f"{_pct(values[3])} | " + " | ".join(flags) + " |"
        )
    print(
        f"gain >= 25 % in every cell: {'yes' if bars['gain_every_cell'] else 'no'}; below clsr in "
        f"{bars['below_clsr_cells']} of {len(bars['cells'])} cells (needs {bars['below_clsr_needed']}): "
        f"{'yes' if bars['below_clsr_met'] else 'no'}; within 10 points of the teacher in every cell: "
        f"{'yes' if bars['teacher_every_cell'] else 'no'}; all bars: {'met' if bars['all_met'] else 'NOT met'}"
    )


def _rounded(value, places: int = 4):
    if isinstance(value, float):
        return round(value, places)
    if isinstance(value, dict):
        return {k: _rounded(v, places) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v, places) for v in value]
    return value


def run(args: argparse.Namespace) -> dict:
    settings = Settings.load(args.params)
    if len(set(args.seeds)) != len(args.seeds):
        raise DwPipeError(f"--seeds {args.seeds}: a seed is named twice")
    if not {"distilwhisper", "clsr"} <= set(settings.train.modes):
        raise DwPipeError(
            f"{args.params}: train_student.modes {list(settings.train.modes)} needs distilwhisper and clsr"
        )
    pairs, fixed = settings.exported(args.all_exports)
    students, ct2 = {}, {}
    for seed in args.seeds:
        students[seed] = train_seed(settings, seed, args.work)
        ct2[seed] = convert_seed(settings, seed, students[seed], pairs, args.work)
    q = settings.quantize
    fixed_ct2 = {
        f"{name}-{ctype}": convert(folder, args.work / "ct2" / f"{name}-{ctype}", ctype, q.device)
        for name, folder in fixed.items()
        for ctype in q.compute_types
    }
    hyps = hypotheses(settings, args.work, students, ct2, fixed_ct2)
    reps = args.bootstrap or settings.bench.bootstrap
    result = summarize(settings, hyps["rows"], reps)
    report = {
        "seeds": args.seeds,
        "params": str(args.params),
        "target_languages": list(settings.bench.target_languages),
        "datasets": sorted(settings.bench.datasets),
        "units": "error rates and differences as fractions (0.123 = 12.3 %)",
        "kd_interval": f"95 %, two-level bootstrap ({reps} replicates): seeds with replacement, then the utterances "
        "with replacement, shared by the drawn seeds and both models; with 3 seeds the seed level is coarse",
        "students": {str(s): st for s, st in students.items()},
        **_rounded(result),
        "made_from": hyps["made_from"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print_tables(report, args.seeds)
    print(f"\nwrote {args.out}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("data/seeds"), help="students, exports, conversions")
    parser.add_argument("--out", type=Path, default=Path("bench/results/seeds.json"))
    parser.add_argument("--bootstrap", type=int, default=0, help="replicates; 0: benchmark.bootstrap of params")
    parser.add_argument("--all-exports", action="store_true", help="convert every mode's export, clsr's too")
    cli(run, parser.parse_args(), "bench/seeds.py")


def cli(run_it, args: argparse.Namespace, name: str) -> None:
    """A bench program's run under the CLI's conventions: logging, one line for a user error or Ctrl-C."""
    configure_logging()
    set_progress(sys.stderr.isatty())
    try:
        run_it(args)
    except USER_ERRORS as exc:
        sys.exit(f"error: {name}: {exc}")
    except KeyboardInterrupt:
        sys.exit(f"{name} {INTERRUPTED}")


if __name__ == "__main__":
    main()
