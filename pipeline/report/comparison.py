"""The paper's comparison, the report's first table: every student against the main student and the teacher, on
each target language, in and out of domain, per compute type, with paired bootstrap intervals.

The benchmark compares each run with the main student and the teacher, pairwise over the same utterances (rows'
``vs``: :func:`pipeline.evaluate.rows.score_rows`). Float32 rows are the PyTorch students (exact routing) and the
teacher; quantized rows are what is deployed: the CTranslate2 exports of each language and the CTranslate2 teacher.
Below each table: the half-width of the 95 % interval on a difference between two students, the figure that says
whether the test set can tell two methods apart, and, where it is wider than :data:`TARGET_HALF_WIDTH`, how many
utterances a 1/sqrt(n) projection says it would take.
"""

from __future__ import annotations

import functools
import math
import statistics

from pipeline.core.languages import whisper_training_hours

TARGET_HALF_WIDTH = 0.05  # issue 28: a 95 % interval of about +-5 points on a difference between two students


@functools.cache
def _whisper_languages() -> frozenset[str]:
    return frozenset(whisper_training_hours())


def label(model: str, language: str) -> str:
    """The method a run stands for: ``student-clsr`` and ``ct2:clsr-ca`` are both ``clsr``."""
    if model in ("teacher", "ct2:teacher"):
        return "teacher"
    if model == "student-untrained":
        return "untrained"
    if model.startswith("student-"):
        return model[len("student-") :]
    name = model.removeprefix("ct2:")
    return name.removesuffix(f"-{language}")


def _entries(rows: list[dict], targets: list[str], teacher: str) -> list[dict]:
    """The rows of the comparison: group ``all`` on target languages; float32: PyTorch students, the untrained
    student and ``teacher``; other types: CTranslate2 exports of the row's own language, exports that serve every
    language (no language code in the name: a student without experts, and the CTranslate2 teacher)."""
    out = []
    for r in rows:
        if r["group"] != "all" or r["language"] not in targets or "error_rate" not in r:
            continue
        model, lang = r["model"], r["language"]
        if r["compute_type"] == "float32":
            keep = model == teacher or model.startswith("student-")
        else:
            own = model.endswith(f"-{lang}") or not set(model.split("-")[1:]) & (set(targets) | _whisper_languages())
            keep = model.startswith("ct2:") and own
        if keep:
            out.append(r)
    return out


def compared_rows(rows: list[dict], targets: list[str], teacher: str) -> list[dict]:
    """The comparison's rows, each with ``model`` replaced by the method it stands for (:func:`label`)."""
    return [r | {"model": label(r["model"], r["language"])} for r in _entries(rows, targets, teacher)]


def _pts(value: float) -> str:
    return f"{100 * value:+.1f}"


def _interval(vs: dict | None) -> str:
    if not vs:
        return "-"
    lo, hi = vs["delta_ci95"]
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return _pts(vs["delta"])
    return f"{_pts(vs['delta'])} [{_pts(lo)}, {_pts(hi)}]"


ORDER = {"teacher": 0, "untrained": 1}


def comparison_section(
    rows: list[dict], targets: list[str], main: str, teacher: str, types: tuple[str, ...] | None = None
) -> tuple[list[str], dict]:
    """(Markdown lines, summary cells ``{dataset/language/type: {method: error rate}}`` for DVC metrics); ``types``:
    only these compute types (default: all)."""
    entries = [r for r in _entries(rows, targets, teacher) if types is None or r["compute_type"] in types]
    if not entries:
        return ["No student was benchmarked on a target language."], {}
    lines = [
        f"Error rate in % with its 95 % bootstrap interval; beside it the paired difference (this row minus the "
        f"other, in points) from **{main}** and from the **teacher** over the same utterances, with its 95 % paired "
        "bootstrap interval: an interval that holds 0 cannot tell the two apart. float32: the PyTorch students "
        f"(exact routing) and the teacher as `{teacher}`; other types: the CTranslate2 exports users deploy and "
        "the CTranslate2 teacher.",
        "",
    ]
    summary: dict = {}
    datasets = sorted({r["dataset"] for r in entries})
    types = sorted({r["compute_type"] for r in entries}, key=lambda t: (t != "float32", t))
    for dataset in datasets:
        lines += [f"### {dataset}", "", f"| language | type | method | n | error rate | vs {main} | vs teacher |"]
        lines.append("|---|---|---|---|---|---|---|")
        widths: dict[str, list[float]] = {}
        for lang in targets:
            for ctype in types:
                mine = [
                    r for r in entries if (r["dataset"], r["language"], r["compute_type"]) == (dataset, lang, ctype)
                ]
                mine.sort(key=lambda r: (ORDER.get(label(r["model"], lang), 2), label(r["model"], lang)))
                for r in mine:
                    vs = r.get("vs", {})
                    lo, hi = r["ci95"]
                    lines.append(
                        f"| {lang} | {ctype} | {label(r['model'], lang)} | {r['n_utterances']} | "
                        f"{100 * r['error_rate']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | {_interval(vs.get(main))} | "
                        f"{_interval(vs.get('teacher'))} |"
                    )
                    summary.setdefault(f"{dataset}/{lang}/{ctype}", {})[label(r["model"], lang)] = r["error_rate"]
                    other = vs.get(main)
                    if other and label(r["model"], lang) not in ("teacher", "untrained"):
                        widths.setdefault(lang, []).append((other["delta_ci95"][1] - other["delta_ci95"][0]) / 2)
        lines += [""] + power_lines(dataset, widths, entries) + [""]
    return lines, summary


def power_lines(dataset: str, widths: dict[str, list[float]], entries: list[dict]) -> list[str]:
    """Per language: the median half-width of the intervals on a student's difference from the main student."""
    if not widths:
        return [f"No second student on {dataset}: no interval on a difference between two students."]
    out = [f"Half-width of the 95 % interval on a difference between two students on {dataset} (median over students):"]
    for lang, hws in sorted(widths.items()):
        hws = [h for h in hws if math.isfinite(h)]
        if not hws:
            out.append(f"- {lang}: no interval (no reference words)")
            continue
        hw = statistics.median(hws)
        n = max(r["n_utterances"] for r in entries if r["dataset"] == dataset and r["language"] == lang)
        if hw <= TARGET_HALF_WIDTH:
            verdict = f"within the ±{100 * TARGET_HALF_WIDTH:.0f}-point goal"
        else:
            need = math.ceil(n * (hw / TARGET_HALF_WIDTH) ** 2)
            verdict = (
                f"**too few utterances for ±{100 * TARGET_HALF_WIDTH:.0f} points**: a 1/sqrt(n) projection asks for "
                f"about {need}"
            )
        out.append(f"- {lang}: ±{100 * hw:.1f} points over {n} utterances; {verdict}")
    return out
