"""report_plots: the report's figures, each with the intervals it rests on and a caption.

One colour per model and one marker (points) or hatch (bars) per compute
type, the same in every figure (:func:`plot_style` is built once from all
rows); the target languages are shaded; one panel per dataset. Figures are
plain ``matplotlib.figure.Figure`` objects (no pyplot state), written as PNG
by the Agg renderer, so tests can inspect what was drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from pipeline.core.languages import by_resource_level, whisper_training_hours

REFERENCE_TYPE = "float32"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")
HATCHES = ("", "///", "...", "xxx", "\\\\\\", "---", "+++", "ooo", "|||")
TARGET_SHADE = "#fff0b3"
UNKNOWN_HOURS = 0.1  # where a language missing from the hours table is drawn on the log axis
INTERVAL = "interval"  # gid of the line collections that draw intervals


@dataclass(frozen=True)
class PlotStyle:
    colours: dict[str, tuple[float, ...]]  # model -> RGB(A)
    markers: dict[str, str]  # compute type -> marker
    hatches: dict[str, str]  # compute type -> hatch
    targets: tuple[str, ...]


@dataclass
class Plot:
    name: str  # file name of the PNG
    figure: Figure
    caption: str  # what to read from it (markdown)


def _palette(n: int) -> list[tuple[float, ...]]:
    """``n`` colours, distinct as far as the qualitative maps go."""
    if n <= 10:
        return list(matplotlib.colormaps["tab10"].colors[:n])
    if n <= 20:
        tab20 = matplotlib.colormaps["tab20"].colors
        return list(tab20[0::2] + tab20[1::2])[:n]  # the ten dark shades first, then their light pairs
    turbo = matplotlib.colormaps["turbo"]
    return [turbo(i / (n - 1)) for i in range(n)]


def _type_order(ctype: str) -> tuple[bool, str]:
    return ctype != REFERENCE_TYPE, ctype


def plot_style(rows: list[dict], targets: list[str] | tuple[str, ...]) -> PlotStyle:
    """Colours by model, markers and hatches by compute type, for every model and type in ``rows``."""
    models = sorted({r["model"] for r in rows})
    ctypes = sorted({r["compute_type"] for r in rows}, key=_type_order)
    if len(ctypes) > len(MARKERS):
        raise ValueError(
            f"{len(ctypes)} compute types ({', '.join(ctypes)}) but {len(MARKERS)} markers; "
            "add markers and hatches in pipeline/report/plots.py"
        )
    return PlotStyle(
        colours=dict(zip(models, _palette(len(models)))),
        markers=dict(zip(ctypes, MARKERS)),
        hatches=dict(zip(ctypes, HATCHES)),
        targets=tuple(targets),
    )


def _runs(rows: list[dict]) -> list[tuple[str, str]]:
    return sorted({(r["model"], r["compute_type"]) for r in rows}, key=lambda run: (run[0], _type_order(run[1])))


def _interval(ci: list[float] | None) -> tuple[float, float] | None:
    """A 95 % interval in points, or None where the benchmark gave none (or NaN: no reference units)."""
    if not ci or not all(math.isfinite(x) for x in ci):
        return None
    return 100 * ci[0], 100 * ci[1]


def _legend(fig: Figure, style: PlotStyle, runs: list[tuple[str, str]], bars: bool, extra: list) -> None:
    """Models by colour, compute types by hatch (bars) or marker (points), then ``extra`` handles."""
    models = sorted({m for m, _ in runs})
    ctypes = sorted({c for _, c in runs}, key=_type_order)
    handles: list = [Patch(facecolor=style.colours[m], label=m) for m in models]
    if bars:
        handles += [Patch(facecolor="white", edgecolor="black", hatch=style.hatches[c], label=c) for c in ctypes]
    else:
        handles += [Line2D([], [], color="grey", marker=style.markers[c], linestyle="", label=c) for c in ctypes]
    fig.legend(handles=handles + extra, loc="outside right upper", fontsize=7, frameon=False)


def _target_handle() -> Patch:
    return Patch(facecolor=TARGET_SHADE, label="target language")


def _interval_handle() -> Line2D:
    return Line2D([], [], color="black", label="95 % bootstrap interval")


def _targets_text(style: PlotStyle) -> str:
    return ", ".join(style.targets) if style.targets else "none named by the benchmark"


def _panels(datasets: list[str], width: float, height: float) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height * max(len(datasets), 1)), layout="constrained")
    axes = fig.subplots(max(len(datasets), 1), 1, squeeze=False)[:, 0]
    return fig, list(axes)


def _spread(groups: list[list[tuple[str, str]]], width: float) -> dict[tuple[int, tuple[str, str]], float]:
    """x of each (group index, run): the runs present in a group side by side, centred on the group's index."""
    return {
        (j, run): j + (i - (len(runs) - 1) / 2) * width for j, runs in enumerate(groups) for i, run in enumerate(runs)
    }


def _language_panel(ax, rows: list[dict], style: PlotStyle, runs: list[tuple[str, str]]) -> None:
    """Grouped bars, one group per language (most Whisper hours first), with each row's interval."""
    langs = by_resource_level(sorted({r["language"] for r in rows}))
    at = {(r["model"], r["compute_type"], r["language"]): r for r in rows}
    present = [[run for run in runs if (*run, lang) in at] for lang in langs]  # not decoded there: no bar
    width = 0.8 / max(len(p) for p in present) if rows else 0.8
    xs = _spread(present, width)
    for j, lang in enumerate(langs):
        if lang in style.targets:
            ax.axvspan(j - 0.45, j + 0.45, color=TARGET_SHADE, zorder=0)
    for model, ctype in runs:
        found = [(xs[(j, (model, ctype))], at[(model, ctype, lang)]) for j, lang in enumerate(langs)
                 if (model, ctype, lang) in at]  # fmt: skip
        if not found:
            continue
        ax.bar([x for x, _ in found], [100 * r["error_rate"] for _, r in found], width, color=style.colours[model],
               hatch=style.hatches[ctype], edgecolor="black", linewidth=0.3, label=f"{model} {ctype}")  # fmt: skip
        _draw_intervals(ax, [(x, _interval(r.get("ci95"))) for x, r in found], "black")
    ax.set_xticks(range(len(langs)), langs)
    for tick in ax.get_xticklabels():
        tick.set_fontweight("bold" if tick.get_text() in style.targets else "normal")
    ax.set_ylabel("error rate (%)")


def _draw_intervals(ax, spans: list[tuple[float, tuple[float, float] | None]], colour) -> None:
    """Vertical lines from low to high at each x that has an interval."""
    spans = [(x, ci) for x, ci in spans if ci]
    if spans:
        ax.vlines([x for x, _ in spans], [lo for _, (lo, _) in spans], [hi for _, (_, hi) in spans],
                  colors=colour, linewidth=0.8, gid=INTERVAL)  # fmt: skip


def wer_per_language(rows: list[dict], style: PlotStyle) -> Plot:
    """Error rate per language and model, one panel per dataset."""
    rows = [r for r in rows if r["group"] == "all"]
    datasets = sorted({r["dataset"] for r in rows})
    langs = {r["language"] for r in rows}
    runs = _runs(rows)
    fig, axes = _panels(datasets, max(8.0, 1.3 * len(langs)), 3.5)
    for ax, dataset in zip(axes, datasets):
        _language_panel(ax, [r for r in rows if r["dataset"] == dataset], style, runs)
        ax.set_title(f"dataset: {dataset}", fontsize=9)
    _legend(fig, style, runs, bars=True, extra=[_target_handle(), _interval_handle()])
    caption = (
        "Corpus-level error rate (WER; CER for character languages) per language, one panel per dataset, "
        "languages from most to least Whisper training hours. One colour per model, one hatch per compute type; "
        f"shaded, bold: target languages ({_targets_text(style)}). Black lines: 95 % bootstrap interval over "
        "utterances. No bar: the model was not decoded on that language."
    )
    return Plot("wer_per_language.png", fig, caption)


def students_compared(rows: list[dict], targets: list[str], teacher: str) -> Plot:
    """The paper's comparison at float32: each method's error rate on each target language, one panel per dataset."""
    from pipeline.report.comparison import compared_rows

    rows = [r for r in compared_rows(rows, targets, teacher) if r["compute_type"] == "float32"]
    style = plot_style(rows, targets)
    datasets = sorted({r["dataset"] for r in rows})
    runs = _runs(rows)
    fig, axes = _panels(datasets or ["none"], max(6.0, 2.0 * len(targets)), 3.2)
    for ax, dataset in zip(axes, datasets):
        _language_panel(ax, [r for r in rows if r["dataset"] == dataset], style, runs)
        ax.set_title(f"dataset: {dataset}", fontsize=9)
    _legend(fig, style, runs, bars=True, extra=[_interval_handle()])
    caption = (
        "The students compared (float32; PyTorch students with exact routing) on the target languages, one panel "
        "per dataset: error rate per method with its 95 % bootstrap interval over utterances. Whether two methods "
        "differ is read from the paired intervals in the table above, not from overlapping bars."
    )
    return Plot("students_compared.png", fig, caption)


def _hours_x(lang: str) -> float:
    return whisper_training_hours().get(lang, UNKNOWN_HOURS)


def _delta_panel(ax, deltas: list[dict], style: PlotStyle) -> None:
    """One point per quantized run and language, with its paired interval; the runs of a language side by side."""
    runs = _runs(deltas)
    langs = sorted({r["language"] for r in deltas})
    at = {(r["model"], r["compute_type"], r["language"]): r for r in deltas}
    steps = _spread([[run for run in runs if (*run, lang) in at] for lang in langs], 1.0)
    ax.axhline(0, color="grey", linestyle="--", linewidth=0.8)
    for j, lang in enumerate(langs):
        hours = _hours_x(lang)
        if lang in style.targets:
            ax.axvspan(hours / 1.3, hours * 1.3, color=TARGET_SHADE, zorder=0)
        tops = []
        for run in runs:
            if (r := at.get((*run, lang))) is None:
                continue
            x, y, ci = hours * 1.08 ** (steps[(j, run)] - j), 100 * r["delta"], _interval(r.get("delta_ci95"))
            _draw_intervals(ax, [(x, ci)], [style.colours[run[0]]])
            ax.scatter([x], [y], color=style.colours[run[0]], marker=style.markers[run[1]],
                       edgecolors="black", linewidths=0.4, zorder=3, label=f"{run[0]} {run[1]}")  # fmt: skip
            tops.append(ci[1] if ci else y)
        ax.annotate(lang, (hours, max(tops)), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_ylabel("quantized - float32 (points)")


def quantization_vs_hours(deltas: list[dict], style: PlotStyle) -> Plot:
    """The quantization-induced change per language against Whisper's training hours of the language."""
    datasets = sorted({r["dataset"] for r in deltas})
    fig, axes = _panels(datasets, 7.5, 3.5)
    for ax, dataset in zip(axes, datasets):
        _delta_panel(ax, [r for r in deltas if r["dataset"] == dataset], style)
        ax.set_title(f"dataset: {dataset}", fontsize=9)
    if not deltas:
        axes[0].text(0.5, 0.5, "no quantized CTranslate2 run with a float32 reference", ha="center",
                     transform=axes[0].transAxes)  # fmt: skip
    axes[-1].set_xlabel("Whisper training hours of the language (log)")
    interval = Line2D([], [], color="black", label="95 % paired bootstrap interval")
    _legend(fig, style, _runs(deltas), bars=False, extra=[_target_handle(), interval])
    unknown = sorted({r["language"] for r in deltas} - set(whisper_training_hours()))
    caption = (
        "Quantized minus float32 error rate of each CTranslate2 model, in points, against Whisper's training "
        "hours of the language; below the dashed line quantization lowered the error rate. Vertical lines: 95 % "
        "paired bootstrap interval (the same utterances resampled for both compute types); an interval that "
        "crosses zero is no evidence of a change. One colour per model, one marker per compute type; shaded: "
        f"target languages ({_targets_text(style)}). Points of one language are spread sideways so none hides another."
    )
    if unknown:
        caption += f" Hours unknown, drawn at {UNKNOWN_HOURS} h: {', '.join(unknown)}."
    return Plot("quantization_delta_vs_hours.png", fig, caption)


def _pooled(rows: list[dict]) -> dict[tuple[str, str], tuple[float, float, list[str]]]:
    """Per timed run: (RTFx, error rate pooled over its languages in %, those languages)."""
    sums: dict[tuple[str, str], list] = {}
    for r in rows:
        if r["rtfx"]:
            s = sums.setdefault((r["model"], r["compute_type"]), [0.0, 0.0, 0, 0, []])
            s[0] += r["audio_seconds"]
            s[1] += r["decode_seconds"]
            s[2] += r["substitutions"] + r["deletions"] + r["insertions"]
            s[3] += r["ref_units"]
            s[4].append(r["language"])
    return {run: (a / d, 100 * e / max(u, 1), by_resource_level(langs)) for run, (a, d, e, u, langs) in sums.items()}


def _speed_panel(ax, rows: list[dict], style: PlotStyle) -> list[tuple[str, str]]:
    """One point per timed run; a run decoded on fewer languages than the dataset has names them."""
    langs = {r["language"] for r in rows}
    pooled = _pooled(rows)
    for (model, ctype), (rtfx, rate, covered) in sorted(pooled.items()):
        ax.scatter([rtfx], [rate], color=style.colours[model], marker=style.markers[ctype],
                   edgecolors="black", linewidths=0.4, zorder=3, label=f"{model} {ctype}")  # fmt: skip
        if set(covered) != langs:
            ax.annotate(", ".join(covered), (rtfx, rate), xytext=(3, 3), textcoords="offset points", fontsize=7)
    if not pooled:
        ax.text(0.5, 0.5, "no timed run", ha="center", transform=ax.transAxes)
    ax.set_ylabel("error rate (%), pooled")
    return sorted(pooled)


def speed_vs_wer(rows: list[dict], style: PlotStyle) -> Plot:
    """RTFx against the pooled error rate of every timed run, one panel per dataset."""
    rows = [r for r in rows if r["group"] == "all"]
    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = _panels(datasets, 7.5, 3.5)
    runs: set[tuple[str, str]] = set()
    for ax, dataset in zip(axes, datasets):
        runs |= set(_speed_panel(ax, [r for r in rows if r["dataset"] == dataset], style))
        ax.set_title(f"dataset: {dataset}", fontsize=9)
    axes[-1].set_xlabel("RTFx (audio seconds / decode seconds)")
    _legend(fig, style, sorted(runs), bars=False, extra=[])
    caption = (
        "Speed against accuracy of every timed run (PyTorch students are not timed). The error rate is pooled "
        "over the languages the model was decoded on (sum of errors / sum of reference units); a label names "
        "them where they are fewer than the dataset's, and that rate is not comparable with the others'. "
        "No interval: the benchmark gives intervals per language only (see wer_per_language.png). "
        "Colours and markers as in the other plots."
    )
    return Plot("speed_vs_wer.png", fig, caption)


def translation_per_language(translation: list[dict], style: PlotStyle) -> Plot:
    """chrF per language and model on the translate set(s), one panel per dataset."""
    rows = [
        {**r, "error_rate": r["score"] / 100, "ci95": [x / 100 for x in r["ci95"]]}
        for r in translation
        if r["metric"] == "chrf"
    ]
    datasets = sorted({r["dataset"] for r in rows})
    runs = _runs(rows)
    fig, axes = _panels(datasets, max(8.0, 1.3 * len({r["language"] for r in rows})), 3.5)
    for ax, dataset in zip(axes, datasets):
        _language_panel(ax, [r for r in rows if r["dataset"] == dataset], style, runs)
        ax.set_ylabel("chrF (X->English)")
        ax.set_title(f"dataset: {dataset} (task translate)", fontsize=9)
    _legend(fig, style, runs, bars=True, extra=[_target_handle(), _interval_handle()])
    caption = (
        "chrF (sacrebleu, corpus level; higher is better) of each model translating the translate set to English, "
        "per language from most to least Whisper training hours; the same English messages in every language. "
        f"Shaded, bold: target languages ({_targets_text(style)}); the others are controls without experts. "
        "Black lines: 95 % bootstrap interval over sentences. Colours and hatches as in the other plots."
    )
    return Plot("translation_per_language.png", fig, caption)


def family(model: str, language: str) -> str:
    """An export's name without its language (``ct2:distilwhisper-ts-ca`` -> ``ct2:distilwhisper-ts``), so one
    student's exports share a colour across languages."""
    suffix = f"-{language}"
    return model[: -len(suffix)] if model.endswith(suffix) else model


def longform_per_language(longform: list[dict]) -> Plot:
    """Whole-recording error rate per language and model, one panel per setting; loops and empty stretches
    written over each bar."""
    rows = [{**r, "model": family(r["model"], r["language"]), "ci95": None} for r in longform]
    style = plot_style(rows, [])
    settings = sorted({r["setting"] for r in rows})
    runs = _runs(rows)
    fig, axes = _panels(settings, max(7.0, 1.6 * len({r["language"] for r in rows})), 3.2)
    for ax, setting in zip(axes, settings):
        mine = [r for r in rows if r["setting"] == setting]
        _language_panel(ax, mine, style, runs)
        for bar, r in zip(_bars_in_order(ax), _rows_in_bar_order(mine, runs)):
            ax.annotate(f"{r['loop_stretches']}L {r['empty_stretches']}E", (bar.get_x() + bar.get_width() / 2,
                        bar.get_height()), ha="center", va="bottom", fontsize=6)  # fmt: skip
        ax.set_title(f"long-form, faster-whisper setting: {setting}", fontsize=9)
    _legend(fig, style, runs, bars=True, extra=[])
    caption = (
        "Error rate over each whole long-form recording (faster-whisper, timestamps on) per language and model, "
        "one panel per setting (default: a user's defaults; greedy: the benchmark's decoding). Over each bar: "
        "30-s stretches that loop (L) and that come back empty (E). `-ts`: the student trained with timestamped "
        "windows too. No interval: one recording per language."
    )
    return Plot("longform_per_language.png", fig, caption)


def _bars_in_order(ax) -> list:
    return [p for container in ax.containers for p in container]


def _rows_in_bar_order(rows: list[dict], runs: list[tuple[str, str]]) -> list[dict]:
    """The rows in the order :func:`_language_panel` draws their bars: run by run, languages by resource level."""
    langs = by_resource_level(sorted({r["language"] for r in rows}))
    at = {(r["model"], r["compute_type"], r["language"]): r for r in rows}
    return [at[(*run, lang)] for run in runs for lang in langs if (*run, lang) in at]


def draw_plots(
    rows: list[dict],
    deltas: list[dict],
    targets: list[str],
    translation: list[dict] | None = None,
    longform: list[dict] | None = None,
) -> list[Plot]:
    """The report's figures, in the order report.md shows them."""
    style = plot_style(rows + list(translation or []), targets)
    plots = [wer_per_language(rows, style), quantization_vs_hours(deltas, style), speed_vs_wer(rows, style)]
    plots += [translation_per_language(translation, style)] if translation else []
    return plots + ([longform_per_language(longform)] if longform else [])


def save_plots(plots: list[Plot], out: Path) -> None:
    for plot in plots:
        plot.figure.savefig(out / plot.name, dpi=120)
