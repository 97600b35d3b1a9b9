"""report: report.md, summary.json and the plots, from the benchmark's metrics.json.

``report.md`` holds, in this order: the paper's comparison of every student with the main student and the
teacher (:mod:`pipeline.report.comparison`), the checks the pipeline is judged by on
the target languages (DistilWhisper vs the untrained student, the CLSR-only
student and the teacher; in-domain and out-of-domain), the languages without
experts, the per-language error rates of every model, the quantization-induced
change per language ordered by Whisper's training hours and the error at
longer caps (:mod:`pipeline.report.error_tables`); the voices and female vs
male error rates (:mod:`pipeline.report.bias`); translation retention
(:mod:`pipeline.report.translation`); long-form transcription
(:mod:`pipeline.report.longform`). ``summary.json`` carries the key numbers
for DVC metrics; the PNG plots (:mod:`pipeline.report.plots`) go beside them,
each with a caption in report.md saying what to read from it. This module
puts the sections together.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.fsutil import atomic_dir
from pipeline.evaluate.claims import Inputs, check_claims
from pipeline.report.bias import gender_table, voice_table
from pipeline.report.comparison import comparison_section
from pipeline.report.error_tables import (
    language_table,
    loop_cap_table,
    non_target_table,
    quantization_table,
    target_checks,
)
from pipeline.report.longform import longform_metrics, longform_table
from pipeline.report.pool_labels import pool_label_section
from pipeline.report.translation import translation_section

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportConfig:
    """The report stage's settings (params.yaml: report)."""

    bench: Path
    out_dir: Path
    main_student: str = "student-distilwhisper"
    # The model whose float32 rows stand for the teacher: the transformers run, or "ct2:teacher"
    # (the same weights through CTranslate2; equal error rates in every language, tests/slow).
    teacher: str = "teacher"
    quantized: tuple[str, ...] = ("int8",)
    prepared: Path | None = None  # prepare_data's folder: its summary.json says which voices each split heard
    longform: Path | None = None  # the longform stage's folder (metrics.json); None: no long-form section
    # The headline cells (the comparison's error rates: "<set>/<lang>/<type>": {method: rate}) as a small JSON file
    # for DVC metrics. Git tracks it (it lives outside data/), so each DVC experiment's commit holds its own and
    # `dvc exp show` compares them; None: not written
    headline: Path | None = None
    # What the compared students must have been trained from (pipeline/evaluate/claims.py): a benchmark whose
    # students name another cache, training manifest or base model is refused. None: that input is not checked
    cache: Path | None = None
    train: Path | None = None
    base: Path | None = None

    @property
    def checks_inputs(self) -> bool:
        """Whether the benchmark's claims are checked: when the report names any input."""
        return any(p is not None for p in (self.cache, self.train, self.base))


def with_pipeline_inputs(cfg: ReportConfig, params: dict) -> ReportConfig:
    """``cfg`` with the inputs it leaves unset taken from the pipeline's own sections of ``params``: the teacher
    cache (cache_teacher.out_dir), training manifest and base (train_student.common), which the compared students
    must have been trained from (dvc.yaml lists these params among the report's)."""
    from dataclasses import replace

    common = params.get("train_student", {}).get("common", {})
    out_dir = params.get("cache_teacher", {}).get("out_dir")
    return replace(
        cfg,
        cache=cfg.cache or (Path(out_dir) if out_dir else None),
        train=cfg.train or (Path(common["train"]) if common.get("train") else None),
        base=cfg.base or (Path(common["base"]) if common.get("base") else None),
    )


def make_report(cfg: ReportConfig) -> dict:
    """Write report.md, summary.json and the plots for ``cfg.bench``'s metrics.json into ``cfg.out_dir``, replaced
    whole; the target-language checks (summary.json's ``targets``)."""
    from pipeline.report.plots import draw_plots, save_plots, students_compared  # matplotlib loads only here

    metrics = json.loads((cfg.bench / "metrics.json").read_text())
    made_from = check_claims(metrics, Inputs(cfg.cache, cfg.train, cfg.base)) if cfg.checks_inputs else {}
    rows = metrics["rows"]
    targets = metrics.get("target_languages") or []
    checks, summary = target_checks(rows, targets, cfg.main_student, cfg.teacher)
    qlines, deltas = quantization_table(rows, cfg.quantized)
    text = [
        "# dw-pipe report",
        "",
        "Error rates in % (WER; CER for zh and other character languages), corpus level;",
        "insertions in parentheses (greedy decoding without fallback loops on synthetic speech).",
        "",
    ]
    # the student the benchmark compared every row with (its rows' "vs"); the report's main student otherwise
    main = (metrics.get("config") or {}).get("compare_student") or cfg.main_student.removeprefix("student-")
    compared, compare_summary = comparison_section(rows, targets, main, cfg.teacher)
    text += ["## Students compared on the target languages", ""] + compared + [""]
    compare_plot = students_compared(rows, targets, cfg.teacher)
    text += [f"![{compare_plot.name}]({compare_plot.name})", "", f"*{compare_plot.caption}*", ""]
    text += pool_label_section((metrics.get("config") or {}).get("students") or {}, cfg.prepared)
    text += ["## Target languages: does distillation help?", ""] + checks + [""]
    text += ["## Non-target languages: experts unused", ""] + non_target_table(rows, targets, cfg.main_student) + [""]
    for dataset in sorted({r["dataset"] for r in rows}):
        text += [
            f"## Per-language error rates: {dataset}",
            "",
            "Languages from most to least Whisper training hours.",
            "",
        ]
        text += language_table(rows, dataset) + [""]
    text += ["## Quantization-induced change, by resource level", ""] + qlines + [""]
    text += ["## Voices of the target languages", ""] + voice_table(cfg.prepared, targets) + [""]
    text += ["## Gender gaps", ""] + gender_table(rows) + [""]
    text += ["## Loops at Whisper's default cap", ""] + loop_cap_table(rows) + [""]
    translation = metrics.get("translation") or []
    tlines, tsummary = translation_section(translation, targets, cfg.teacher)
    text += ["## Translation retention (X->English)", ""] + tlines + [""]
    longform = longform_metrics(cfg.longform)
    text += ["## Long-form transcription (faster-whisper)", ""] + longform_table(longform) + [""]
    with atomic_dir(cfg.out_dir, overwrite=True) as tmp:
        figures = draw_plots(rows, deltas, targets, translation, longform["rows"] if longform else [])
        save_plots([compare_plot, *figures], tmp)
        text += ["## Plots", ""]
        for plot in figures:
            text += [f"![{plot.name}]({plot.name})", "", f"*{plot.caption}*", ""]
        (tmp / "report.md").write_text("\n".join(text), encoding="utf-8")
        (tmp / "summary.json").write_text(
            json.dumps(
                {"compare": compare_summary, "made_from": made_from, "targets": summary, "translation": tsummary},
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    if cfg.headline is not None:
        from pipeline.core.fsutil import atomic_write_text

        cfg.headline.parent.mkdir(parents=True, exist_ok=True)
        headline = compare_summary | ({"made_from": made_from} if made_from else {})
        atomic_write_text(cfg.headline, json.dumps(headline, indent=1, sort_keys=True) + "\n")
    return summary
