"""Quantization bias by model size: what int8 costs a student of each size, per language, next to the teacher.

    python bench/quant_sizes.py [--sizes 0,1,2,4,5 0,2,5] [--mode kd|distilwhisper] [--steps 120] [--all-languages]
                                [--compute-types float32 int8] [--params params.yaml]
                                [--work data/quant-sizes] [--out bench/results/quant_sizes.json]

The paper's second axis (DistilWhisper, ../shared/paper/paper-summary.md): small models lose the most under
quantization, on low-resource languages most of all. For each --sizes entry (the teacher's decoder layers the
student keeps) this trains a student of that shape from params.yaml train_student's distilwhisper settings,
in one of two ways (--mode):

* ``kd`` (default): the whole kept decoder learns (CE + the KD term from the teacher cache, no experts: the
  ``finetune`` mode with ``baseline_kd``), as distil-whisper trains its layer-cut students. One model serves
  every language. A cut decoder must re-learn to join its layers: with the frozen decoder of distilwhisper
  mode, students of 4 and 3 layers did not transcribe after the DAG's budget (README).
* ``distilwhisper``: experts on every kept layer, the rest frozen (the DAG's own student serves the size
  params.yaml names when it is up to date and --steps is 0); exported per target language.

--steps: training steps (0: params.yaml's epochs). Every student, export and conversion is converted with
CTranslate2 at each --compute-types, the teacher too (on a CPU, int8 runs as int8_float32:
`effective_compute_type` in the JSON). One benchmark (params.yaml benchmark settings, target languages only,
no longer loop caps, not the translate sets) decodes them all on the test sets.

--all-languages: every language of the test sets, not only the target languages (the resource axis the paper
pairs with size: Whisper's high-resource languages beside the low-resource ones).

Per (dataset, language, model): the float32 error rate, each quantized type's, and its cost (quantized minus
float32, error-rate points) with the benchmark's paired 95 % bootstrap interval over utterances. Writes --out,
a plot (the same name, .png: int8 cost against model size, one line per language, languages by Whisper's
training hours), and prints the table. Finished students, exports and conversions are reused only when made
from the same inputs (bench/seeds.py's records).

Needs the DAG's data, teacher cache and models: `dvc repro cache_teacher`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from seeds import Settings, benchmark_config, cli, convert, stamp, up_to_date  # noqa: E402

from pipeline.core.errors import DwPipeError  # noqa: E402
from pipeline.core.fsutil import atomic_write_text, sha256_tree  # noqa: E402
from pipeline.core.languages import by_resource_level, whisper_training_hours  # noqa: E402
from pipeline.evaluate.benchmark import run_benchmark  # noqa: E402
from pipeline.evaluate.ct2_tuning import machine  # noqa: E402
from pipeline.report.plots import family  # noqa: E402  (an export's name without its language)
from pipeline.student.export import export_student  # noqa: E402
from pipeline.student.train import train_student, trained_summary, training_inputs  # noqa: E402

log = logging.getLogger("bench.quant_sizes")


def layers_of(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: decoder layers as comma-separated indices, e.g. 0,2,5") from None
    if not layers or len(set(layers)) != len(layers):
        raise argparse.ArgumentTypeError(f"{text!r}: at least one layer, each once")
    return layers


def size_config(settings: Settings, layers: tuple[int, ...], mode: str, steps: int, work: Path):
    """The TrainConfig of the ``mode`` student keeping ``layers`` of the teacher's decoder."""
    cfg = next((c for c in settings.train.configs() if c.mode == "distilwhisper"), None)
    if cfg is None:
        raise DwPipeError(f"train_student.modes {list(settings.train.modes)} has no distilwhisper settings to follow")
    shape: dict = {"keep_decoder_layers": layers, "out_dir": work / f"{mode}-decoder{len(layers)}" / "student"}
    if mode == "kd":
        shape |= {"mode": "finetune", "baseline_kd": True, "clsr_decoder_layers": ()}
    else:
        shape["clsr_decoder_layers"] = tuple(range(len(layers)))
    if steps:
        shape["max_steps"] = steps
    return cfg, replace(cfg, **shape)


def train_size(settings: Settings, layers: tuple[int, ...], mode: str, steps: int, work: Path) -> dict:
    """The ``mode`` student keeping ``layers`` of the teacher's decoder: {"folder", "dev_error_rate", ...}."""
    dag, mine = size_config(settings, layers, mode, steps, work)
    inputs = training_inputs(mine)
    summary, folder, trained = None, mine.out_dir, False
    kept = dag.keep_decoder_layers
    if kept is None:  # every layer of the base
        base = Path(str(dag.base).partition("@")[0])
        kept = tuple(range(json.loads((base / "config.json").read_text())["decoder_layers"]))
    same = (tuple(kept), tuple(dag.clsr_decoder_layers)) == (layers, mine.clsr_decoder_layers)
    if mode == "distilwhisper" and not steps and same:
        summary, folder = trained_summary(dag, inputs), dag.out_dir  # the DAG's own student, when up to date
    if summary is None:
        folder, summary = mine.out_dir, trained_summary(mine, inputs)
        if summary is None:
            summary, trained = train_student(mine, inputs), True
    return {
        "name": f"{mode}-decoder{len(layers)}",
        "mode": mode,
        "layers": list(layers),
        "steps": summary["steps"],
        "folder": str(folder),
        "dev_error_rate": summary["dev_wer_best"],
        "trained": trained,
    }


def convert_size(settings: Settings, student: dict, ctypes: list[str], work: Path) -> dict[str, Path]:
    """The student's exports (one per target language for experts, else one), converted at each type:
    {benchmark folder name: CTranslate2 folder}."""
    folders = {}
    per_language = student["mode"] == "distilwhisper"
    for lang in settings.bench.target_languages if per_language else settings.bench.target_languages[:1]:
        name = f"{student['name']}-{lang}" if per_language else student["name"]
        export = work / student["name"] / "exports" / (lang if per_language else "all")
        made_from = {
            "student_sha256": sha256_tree(Path(student["folder"])),
            "language": lang,
            "threshold": settings.export.threshold,
        }
        if not up_to_date(export, made_from):
            export_student(Path(student["folder"]), lang, export, settings.export.threshold)
            stamp(export, made_from)
        for ctype in ctypes:
            out = work / student["name"] / "ct2" / f"{name}-{ctype}"
            folders[f"{name}-{ctype}"] = convert(export, out, ctype, settings.quantize.device)
    return folders


def cost_table(rows: list[dict], sizes: dict[str, int], targets: list[str]) -> list[dict]:
    """One entry per (dataset, language, model, quantized type): float32 and quantized error rates, the cost."""
    table = []
    rows = [
        {**r, "model": family(r["model"], r["language"])}
        for r in rows
        if r["group"] == "all" and r["language"] in targets
    ]
    rows = [r for r in rows if r["model"] in sizes]
    float32 = {(r["dataset"], r["language"], r["model"]): r for r in rows if r["compute_type"] == "float32"}
    for r in rows:
        if r["compute_type"] == "float32":
            continue
        base = float32.get((r["dataset"], r["language"], r["model"]))
        if base is None or r.get("delta") is None:
            continue
        table.append(
            {
                "dataset": r["dataset"],
                "language": r["language"],
                "model": r["model"],
                "decoder_layers": sizes[r["model"]],
                "model_size_mb_float32": base["model_size_mb"],
                "compute_type": r["compute_type"],
                "effective_compute_type": r["effective_compute_type"],
                "n_utterances": r["n_utterances"],
                "float32": base["error_rate"],
                "quantized": r["error_rate"],
                "cost": r["delta"],
                "cost_ci95": r["delta_ci95"],
            }
        )
    order = {lang: i for i, lang in enumerate(by_resource_level(targets))}
    table.sort(key=lambda t: (t["dataset"], order[t["language"]], -t["decoder_layers"], t["compute_type"]))
    return table


def plot(table: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({t["dataset"] for t in table})
    hours = whisper_training_hours()
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.5 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        mine = [t for t in table if t["dataset"] == dataset and t["compute_type"] != "float32"]
        languages = list(dict.fromkeys(t["language"] for t in mine))  # already by training hours
        for i, lang in enumerate(languages):
            points = sorted((t for t in mine if t["language"] == lang), key=lambda t: t["model_size_mb_float32"])
            nudge = 0.02 * (i - (len(languages) - 1) / 2) / len(languages)  # intervals side by side
            x = [t["model_size_mb_float32"] * (1 + nudge) for t in points]
            y = [100 * t["cost"] for t in points]
            low = [100 * (t["cost"] - t["cost_ci95"][0]) for t in points]
            high = [100 * (t["cost_ci95"][1] - t["cost"]) for t in points]
            label = f"{lang} ({hours.get(lang, float('nan')):g} h)"
            color = plt.get_cmap("tab20" if len(languages) > 10 else "tab10")(i)
            ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=label, color=color)
        for t in {t["model"]: t for t in mine}.values():
            ax.annotate(
                f"{t['decoder_layers']} dec. layers",
                (t["model_size_mb_float32"], 0),
                textcoords="offset points",
                xytext=(0, -14),
                ha="center",
                fontsize=7,
            )
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("model size, float32 (MB)")
        ax.set_ylabel("int8 cost: WER int8 - float32 (points)")
        ax.set_title(f"{dataset}: quantization cost by model size")
        ax.legend(title="language (Whisper hours)", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    settings = Settings.load(args.params)
    if len({tuple(s) for s in args.sizes}) != len(args.sizes):
        raise DwPipeError(f"--sizes {args.sizes}: a size is named twice")
    if args.steps < 0:
        raise DwPipeError(f"--steps {args.steps}: 0 (params.yaml's epochs) or more")
    if len({len(s) for s in args.sizes}) != len(args.sizes):
        raise DwPipeError("--sizes: give each size a different number of layers (the folders are named by it)")
    students = [train_size(settings, tuple(layers), args.mode, args.steps, args.work) for layers in args.sizes]
    folders: dict[str, Path] = {}
    for student in students:
        folders |= convert_size(settings, student, args.compute_types, args.work)
    _, fixed = settings.exported(False)
    teacher = fixed.get("teacher")
    if teacher is None:
        raise DwPipeError("quantize.models has no teacher to compare with")
    for ctype in args.compute_types:
        folders[f"teacher-{ctype}"] = convert(teacher, args.work / "ct2" / f"teacher-{ctype}", ctype, "cpu")
    bench = benchmark_config(settings, args.work, {}, folders, False)
    transcribed = {name: path for name, path in bench.datasets.items() if name not in bench.translate}
    cfg = replace(bench, datasets=transcribed, translate=(), loop_caps=(), out_dir=args.work / "bench")
    if args.all_languages:  # the models on every language; the untrained student (no row here) on the targets
        cfg = replace(cfg, targets_only=("student-untrained",))
    run_benchmark(cfg)
    rows = json.loads((cfg.out_dir / "metrics.json").read_text())["rows"]
    teacher_layers = json.loads((Path(settings.bench.teacher) / "config.json").read_text())["decoder_layers"]
    sizes = {f"ct2:{s['name']}": len(s["layers"]) for s in students}
    sizes["ct2:teacher"] = teacher_layers
    languages = sorted({r["language"] for r in rows}) if args.all_languages else list(settings.bench.target_languages)
    table = cost_table(rows, sizes, languages)
    report = {
        "command": "python bench/quant_sizes.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "units": "error rates and costs as fractions (0.123 = 12.3 %); cost = quantized minus float32, paired "
        "95 % bootstrap over utterances",
        "mode": args.mode,
        "students": students,
        "compute_types": args.compute_types,
        "languages_by_whisper_hours": by_resource_level(languages),
        "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    plot(table, args.out.with_suffix(".png"))
    print("| dataset | language | model | decoder layers | size MB | type | float32 | quantized | cost [95 % CI] |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in table:
        low, high = t["cost_ci95"]
        print(
            f"| {t['dataset']} | {t['language']} | {t['model']} | {t['decoder_layers']} | "
            f"{t['model_size_mb_float32']:.0f} | {t['compute_type']} ({t['effective_compute_type']}) | "
            f"{100 * t['float32']:.1f} | {100 * t['quantized']:.1f} | "
            f"{100 * t['cost']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] |"
        )
    print()
    print("\n".join(by_size(table)))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return report


def by_size(table: list[dict]) -> list[str]:
    """The table as one Markdown row per (dataset, language), one column per (model, quantized type), largest
    model first: "float32 -> quantized: cost [95 % CI]" in error-rate points (the README's table)."""
    hours = whisper_training_hours()
    columns = sorted(
        {(t["model"], t["decoder_layers"], t["model_size_mb_float32"], t["compute_type"]) for t in table},
        key=lambda c: (-c[2], c[0], c[3]),
    )
    cells = {(t["dataset"], t["language"], t["model"], t["compute_type"]): t for t in table}
    names = [f"{m.removeprefix('ct2:')}, {n} layers, {mb:.0f} MB, {ct}" for m, n, mb, ct in columns]
    lines = ["| set | language (Whisper h) | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(columns)]
    for dataset, lang in dict.fromkeys((t["dataset"], t["language"]) for t in table):
        row = []
        for model, _, _, ctype in columns:
            t = cells.get((dataset, lang, model, ctype))
            if t is None:
                row.append("")
                continue
            low, high = t["cost_ci95"]
            row.append(
                f"{100 * t['float32']:.1f} -> {100 * t['quantized']:.1f}: "
                f"{100 * t['cost']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
            )
        lines.append(f"| {dataset} | {lang} ({hours.get(lang, float('nan')):g}) | " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--sizes", type=layers_of, nargs="+", default=[(0, 1, 2, 4, 5), (0, 2, 5)])
    parser.add_argument("--mode", choices=("kd", "distilwhisper"), default="kd", help="how students are trained")
    parser.add_argument("--steps", type=int, default=0, help="training steps (0: params.yaml's epochs)")
    parser.add_argument(
        "--all-languages",
        action="store_true",
        help="decode every language of the test sets, not only the target languages (a kd student and the "
        "teacher serve them all; a distilwhisper export only its own)",
    )
    parser.add_argument("--compute-types", nargs="+", default=["float32", "int8"])
    parser.add_argument("--work", type=Path, default=Path("data/quant-sizes"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/quant_sizes.json"))
    args = parser.parse_args()
    if "float32" not in args.compute_types:
        parser.error("--compute-types needs float32: the costs are measured against it")
    cli(run, args, "bench/quant_sizes.py")


if __name__ == "__main__":
    main()
