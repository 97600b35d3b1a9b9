"""The translation section of report.md: chrF and BLEU of each model translating to English, the paired
differences from the teacher and the untrained student, and retention (the model's chrF / the teacher's)."""

from __future__ import annotations

import math

from pipeline.core.languages import whisper_training_hours


def _score_cell(row: dict | None, key: str = "score", ci: str = "ci95") -> str:
    """A score (or a signed difference) with its 95 % interval where the row has a finite one."""
    if row is None or row.get(key) is None:
        return "-"
    interval = row.get(ci)
    sign = "+" if key != "score" else ""
    text = f"{row[key]:{sign}.1f}"
    if interval and all(math.isfinite(x) for x in interval):
        text += f" [{interval[0]:{sign}.1f}, {interval[1]:{sign}.1f}]"
    return text


TRANSLATION_NOTE = (
    "How a student routes the translate task. The official DistilWhisper code turns the decoder's experts off "
    "for translation (`set_language_task`: task translate sets the decoder layers' language to None, so they run "
    "the shared FFN; the encoder keeps its expert; naver/multilingual-distilwhisper, model/DistilWhisper.py). "
    "Our students have experts in the decoder only and train nothing else, so that routing makes them, weight for "
    "weight, the untrained student: retention would hold by construction and measure nothing. A static "
    "CTranslate2 export cannot switch its experts off per task either (each layer holds one FFN). So the "
    "exact-routing students here translate through their language's experts, as their exports do; what the "
    "official routing would give is the untrained student's row. Before vs after training: the `vs untrained` "
    "column; student vs teacher: `vs teacher` and retention."
)


def translation_section(translation: list[dict], targets: list[str], teacher: str) -> tuple[list[str], dict]:
    """chrF and BLEU per language and model on the translate set(s), with the paired differences from the teacher
    and from the untrained student; retention = the model's chrF / the teacher's."""
    if not translation:
        return ["No translate set in this benchmark (benchmark.translate is empty)."], {}
    hours = whisper_training_hours()
    index = {(r["model"], r["compute_type"], r["dataset"], r["language"], r["metric"]): r for r in translation}
    lines = [
        "chrF and BLEU (sacrebleu, corpus level, 0-100; higher is better) of each model translating to English, "
        "with 95 % bootstrap intervals over sentences; differences (in chrF points) are paired: both models on the "
        "same resampled sentences. Retention: the model's chrF / the teacher's.",
        "",
        "| dataset | language | Whisper hours | model | type | chrF [95 % CI] | BLEU [95 % CI] | vs teacher (chrF) | "
        "vs untrained (chrF) | retention |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict = {}
    for dataset in sorted({r["dataset"] for r in translation}):
        langs = sorted({r["language"] for r in translation if r["dataset"] == dataset},
                       key=lambda lang: -hours.get(lang, -1))  # fmt: skip
        for lang in langs:
            runs = sorted(
                {
                    (r["model"], r["compute_type"])
                    for r in translation
                    if (r["dataset"], r["language"]) == (dataset, lang)
                },
                key=lambda run: (run[0] != teacher, run[0].startswith("ct2:"), run[0], run[1] != "float32", run[1]),
            )
            reference = index.get((teacher, "float32", dataset, lang, "chrf"))
            for model, ctype in runs:
                chrf = index[(model, ctype, dataset, lang, "chrf")]
                bleu = index.get((model, ctype, dataset, lang, "bleu"))
                keep = chrf["score"] / reference["score"] if reference and reference["score"] else None
                lines.append(
                    f"| {dataset} | {lang}{' (target)' if lang in targets else ''} | {hours.get(lang, 'n/a')} | {model} | "
                    f"{ctype} | {_score_cell(chrf)} | {_score_cell(bleu)} | "
                    f"{_score_cell(chrf, 'teacher_delta', 'teacher_delta_ci95')} | "
                    f"{_score_cell(chrf, 'untrained_delta', 'untrained_delta_ci95')} | "
                    f"{f'{100 * keep:.0f} %' if keep is not None else '-'} |"
                )
                summary[f"{dataset}/{lang}/{model}/{ctype}"] = {
                    "chrf": chrf["score"],
                    "bleu": bleu and bleu["score"],
                    "retention": round(keep, 4) if keep is not None else None,
                }
    return lines + ["", TRANSLATION_NOTE], summary
