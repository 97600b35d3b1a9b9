"""report: tables, bias analysis and plots from the benchmark's metrics.json.

``report.md`` holds: the per-language error rates of every model (with
insertions, so decoding loops stay visible); the checks the pipeline is
judged by on the target languages (DistilWhisper vs the untrained student,
the CLSR-only student and the teacher; in-domain and out-of-domain); the
quantization-induced change per language ordered by Whisper's training
hours; and female vs male error rates with their intervals.
``summary.json`` carries the key numbers for DVC metrics; three PNG plots
(:mod:`pipeline.report.plots`) go beside them, each with a caption in
report.md saying what to read from it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.fsutil import atomic_dir
from pipeline.core.languages import by_resource_level, whisper_training_hours

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportConfig:
    bench: Path
    out_dir: Path
    main_student: str = "student-distilwhisper"
    # The model whose float32 rows stand for the teacher: the transformers run, or "ct2:teacher"
    # (the same weights through CTranslate2; equal error rates in every language, tests/slow).
    teacher: str = "teacher"
    quantized: tuple[str, ...] = ("int8",)
    prepared: Path | None = None  # prepare_data's folder: its summary.json says which voices each split heard
    longform: Path | None = None  # the longform stage's folder (metrics.json); None: no long-form section


def _index(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["model"], r["compute_type"], r["dataset"], r["language"], r["group"]): r for r in rows}


def _rate(index, model, ctype, dataset, lang, group="all") -> dict | None:
    return index.get((model, ctype, dataset, lang, group))


def _fmt(row: dict | None) -> str:
    if row is None:
        return "-"
    return f"{100 * row['error_rate']:.1f} ({row['insertions']})"


def language_table(rows: list[dict], dataset: str) -> list[str]:
    index = _index(rows)
    runs = sorted({(r["model"], r["compute_type"]) for r in rows if r["dataset"] == dataset})
    langs = by_resource_level(sorted({r["language"] for r in rows if r["dataset"] == dataset}))
    head = "| model | type | " + " | ".join(langs) + " |"
    lines = [head, "|" + "---|" * (len(langs) + 2)]
    for model, ctype in runs:
        cells = [_fmt(_rate(index, model, ctype, dataset, lang)) for lang in langs]
        if all(c == "-" for c in cells):
            continue
        lines.append(f"| {model} | {ctype} | " + " | ".join(cells) + " |")
    return lines


TEACHER_MARGIN = 0.10  # issue 12: at most 10 points above the teacher


def target_checks(rows: list[dict], cfg: ReportConfig, targets: list[str]) -> tuple[list[str], dict]:
    """The bars from the end-to-end issue, per dataset and target language."""
    index = _index(rows)
    lines = [
        "| dataset | language | distilwhisper | untrained | rel. gain vs untrained | clsr | teacher | ≥25 % gain | < clsr | ≤ teacher + 10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        for lang in targets:
            main = _rate(index, cfg.main_student, "float32", dataset, lang)
            untrained = _rate(index, "student-untrained", "float32", dataset, lang)
            clsr = _rate(index, "student-clsr", "float32", dataset, lang)
            teacher = _rate(index, cfg.teacher, "float32", dataset, lang)
            if not (main and untrained):
                continue
            gain = 1 - main["error_rate"] / untrained["error_rate"] if untrained["error_rate"] else 0.0
            ok = [
                gain >= 0.25,
                clsr is not None and main["error_rate"] < clsr["error_rate"],
                teacher is not None and main["error_rate"] <= teacher["error_rate"] + TEACHER_MARGIN,
            ]
            lines.append(
                f"| {dataset} | {lang} | {_fmt(main)} | {_fmt(untrained)} | {100 * gain:.1f} % | {_fmt(clsr)} | {_fmt(teacher)} | "
                + " | ".join("yes" if x else "no" for x in ok)
                + " |"
            )
            summary[f"{dataset}/{lang}"] = {
                "distilwhisper": main["error_rate"],
                "untrained": untrained["error_rate"],
                "clsr": clsr and clsr["error_rate"],
                "teacher": teacher and teacher["error_rate"],
                "relative_gain": round(gain, 4),
                "bars_met": ok,
            }
    return lines, summary


def non_target_table(rows: list[dict], cfg: ReportConfig, targets: list[str]) -> list[str]:
    """Languages without experts: the trained student equals the untrained one there, decoded or by construction
    (the benchmark copies the untrained student's hypotheses where the student is, weight for weight, that model:
    ``copied_from_untrained`` utterances)."""
    index = _index(rows)
    lines = ["| dataset | language | distilwhisper | untrained | equal |", "|---|---|---|---|---|"]
    copied = False
    for r in rows:
        if r["model"] != "student-untrained" or r["group"] != "all" or r["language"] in targets:
            continue
        main = _rate(index, cfg.main_student, "float32", r["dataset"], r["language"])
        if main:
            if main.get("copied_from_untrained") == main["n_utterances"]:
                copied, same = True, "by construction"
            else:
                counts = ("substitutions", "deletions", "insertions")
                same = "yes" if all(main[k] == r[k] for k in counts) else "no"
            lines.append(f"| {r['dataset']} | {r['language']} | {_fmt(main)} | {_fmt(r)} | {same} |")
    if copied:
        lines += [
            "",
            "By construction: on a language without an expert, every CLSR layer of the student runs its frozen "
            "shared FFN, and the student's other weights are its base's, so it is the untrained student and the "
            "benchmark takes that model's hypotheses (tests/pipeline/evaluate/test_benchmark.py checks the identity by "
            "decoding both).",
        ]
    return lines


def quantization_table(rows: list[dict], cfg: ReportConfig) -> tuple[list[str], list[dict]]:
    hours = whisper_training_hours()
    deltas = [
        r
        for r in rows
        if r.get("delta") is not None
        and r["model"].startswith("ct2:")
        and r["group"] == "all"
        and r["compute_type"] in cfg.quantized
    ]
    deltas.sort(key=lambda r: (-hours.get(r["language"], -1), r["model"], r["dataset"]))
    lines = [
        "| language | Whisper hours | model | dataset | type | float32 | quantized | change (95 % CI) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in deltas:
        lines.append(
            f"| {r['language']} | {hours.get(r['language'], 'n/a')} | {r['model']} | {r['dataset']} | {r['compute_type']} | "
            f"{100 * r['reference_error_rate']:.1f} | {100 * r['error_rate']:.1f} | {100 * r['delta']:+.1f} "
            f"[{100 * r['delta_ci95'][0]:+.1f}, {100 * r['delta_ci95'][1]:+.1f}] |"
        )
    return lines, deltas


def _group_cell(row: dict | None) -> str:
    """``rate [95 % CI] (n=utterances)``; the interval only where the benchmark row carries one."""
    if row is None:
        return "-"
    ci = row.get("ci95")
    interval = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci and all(math.isfinite(x) for x in ci) else ""
    return f"{100 * row['error_rate']:.1f}{interval} (n={row['n_utterances']})"


def _gender_note(groups: dict[str, dict]) -> str:
    """Why a row has no gap, and the groups other than female and male (unknown, child, ...)."""
    female, male = "gender=female" in groups, "gender=male" in groups
    notes = []
    if not (female and male):
        notes.append("only female voices" if female else "only male voices" if male else "no female or male voices")
    notes += [f"{g}: {_group_cell(r)}" for g, r in sorted(groups.items()) if g not in ("gender=female", "gender=male")]
    return "; ".join(notes)


def gender_table(rows: list[dict]) -> list[str]:
    """Female vs male error rate per dataset, language and run; a language short of one gender says so."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["group"].startswith(("gender=", "age=")):
            groups.setdefault((r["model"], r["compute_type"], r["dataset"], r["language"]), {})[r["group"]] = r
    if not any(g in ("gender=female", "gender=male") for by_group in groups.values() for g in by_group):
        return ["No utterance is labelled female or male: no gaps to show."]
    rank = {lang: i for i, lang in enumerate(by_resource_level(sorted({r["language"] for r in rows})))}
    runs = sorted(
        {(r["dataset"], r["language"], r["model"], r["compute_type"]) for r in rows if r["group"] == "all"},
        key=lambda k: (k[0], rank[k[1]], k[2], k[3]),
    )
    lines = [
        "| dataset | language | model | type | female [95 % CI] | male [95 % CI] | gap (f - m) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset, lang, model, ctype in runs:
        by_group = groups.get((model, ctype, dataset, lang), {})
        female, male = by_group.get("gender=female"), by_group.get("gender=male")
        gap = f"{100 * (female['error_rate'] - male['error_rate']):+.1f}" if female and male else "-"
        lines.append(
            f"| {dataset} | {lang} | {model} | {ctype} | {_group_cell(female)} | {_group_cell(male)} | {gap} | "
            f"{_gender_note(by_group)} |"
        )
    return lines + [
        "",
        "Error rates in %, with the 95 % bootstrap interval over each group's utterances and their number. "
        "The gap is female minus male, in points; the benchmark gives no interval for it. The two groups are "
        "different utterances (voices and sentences), so intervals that do not overlap point to a real gap and "
        "overlapping ones do not settle it.",
    ]


def loop_cap_table(rows: list[dict]) -> list[str]:
    """Per target cell and model: the error rate at the benchmark's cap and at each longer cap (rows of group
    ``cap=<N>``, benchmark.loop_caps), each with the utterances that hit that cap: a loop, whose cost the cap
    bounds."""
    longer = [r for r in rows if r["group"].startswith("cap=")]
    caps = sorted({r["max_new_tokens"] for r in longer})
    if not caps:
        return ["No rows at longer caps (benchmark.loop_caps is empty)."]
    index = _index(rows)

    def cell(row: dict | None) -> str:
        if row is None:
            return "-"
        hit = "?" if row.get("capped") is None else row["capped"]
        return f"{100 * row['error_rate']:.1f} ({hit}/{row['n_utterances']})"

    base = sorted({r["max_new_tokens"] for r in rows if r["group"] == "all" and r.get("max_new_tokens")})
    head = [f"at {c}" for c in base[:1] + caps]
    lines = [
        "Error rate in %, and (utterances that hit the cap / utterances), at each cap in new tokens.",
        "",
        "| dataset | language | model | type | " + " | ".join(head) + " |",
        "|" + "---|" * (4 + len(head)),
    ]
    cells = sorted({(r["dataset"], r["language"], r["model"], r["compute_type"]) for r in longer})
    for dataset, lang, model, ctype in cells:
        values = [cell(_rate(index, model, ctype, dataset, lang))]
        values += [cell(_rate(index, model, ctype, dataset, lang, f"cap={c}")) for c in caps]
        lines.append(f"| {dataset} | {lang} | {model} | {ctype} | " + " | ".join(values) + " |")
    mismatched = sum(r.get("prefix_mismatches") or 0 for r in longer)
    if mismatched:
        lines += ["", f"{mismatched} row(s) whose longer decode did not begin with the capped one (prefix_mismatches)."]
    return lines


def _score_cell(row: dict | None, key: str = "score", ci: str = "ci95") -> str:
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


def translation_section(translation: list[dict], cfg: ReportConfig, targets: list[str]) -> tuple[list[str], dict]:
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
                key=lambda run: (run[0] != cfg.teacher, run[0].startswith("ct2:"), run[0], run[1] != "float32", run[1]),
            )
            teacher = index.get((cfg.teacher, "float32", dataset, lang, "chrf"))
            for model, ctype in runs:
                chrf = index[(model, ctype, dataset, lang, "chrf")]
                bleu = index.get((model, ctype, dataset, lang, "bleu"))
                keep = chrf["score"] / teacher["score"] if teacher and teacher["score"] else None
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


def longform_metrics(folder: Path | None) -> dict | None:
    """The longform stage's metrics.json, or None when report.longform is not set or the stage has not run."""
    path = folder / "metrics.json" if folder else None
    return json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else None


def longform_table(metrics: dict | None) -> list[str]:
    """faster-whisper long-form rows: error over whole recordings, segment-start error, loops and empties."""
    if metrics is None:
        return ["No long-form results (report.longform is not set or its stage has not run)."]
    rows = metrics["rows"]
    if not rows:
        return ["The long-form stage had no recording (prepare_data.longform is not set)."]
    hours = whisper_training_hours()
    rows = sorted(rows, key=lambda r: (-hours.get(r["language"], -1), r["language"], r["setting"], r["model"] != "ct2:teacher",
                                       r["model"], r["compute_type"] != "float32"))  # fmt: skip
    lines = [
        f"faster-whisper's long-form transcription (timestamps on) of recordings joined from held-out test utterances "
        f"with known boundaries; settings: `default` (what a user passing only the language gets: beam 5, temperature "
        f"fallback, previous-text conditioning) and `greedy` (the benchmark's fixed decoding). Error rate over each "
        f"whole recording (corpus level, insertions in parentheses); start error: seconds from each reference segment "
        f"start to the nearest hypothesis segment start (mean / median); a 30-s stretch loops when its text compresses "
        f"by more than {metrics.get('loop_ratio', 2.4)} (Whisper's threshold), and is empty when speech starts in it "
        f"but no hypothesis does.",
        "",
        "| language | setting | model | type | audio (s) | error rate | start error mean / median (s) | loops | empty | RTFx |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        start = (
            f"{r['start_error_mean_s']:.2f} / {r['start_error_median_s']:.2f}"
            if r["start_error_mean_s"] is not None
            else "-"
        )
        lines.append(
            f"| {r['language']} | {r['setting']} | {r['model']} | {r['compute_type']} | {r['audio_seconds']:.0f} | "
            f"{100 * r['error_rate']:.1f} ({r['insertions']}) | {start} | {r['loop_stretches']}/{r['stretches']} | "
            f"{r['empty_stretches']}/{r['stretches']} | {r['rtfx']} |"
        )
    if any("-ts-" in r["model"] for r in rows):
        lines += [
            "",
            "`-ts-` exports: the same student trained with the timestamped windows too (prepare_data.windows: train "
            "utterances joined with their segment times, a share of the training examples); the exports without it "
            "trained on the short utterances only, whose targets carry no timestamp.",
        ]
    return lines


def voice_table(prepared: Path | None, targets: list[str]) -> list[str]:
    """Which voices each target language's splits heard, whether the tests hold unseen voices and both genders."""
    summary = prepared / "summary.json" if prepared else None
    if summary is None or not summary.is_file():
        return ["No prepare_data summary given (report.prepared): voices not listed."]
    design = json.loads(summary.read_text(encoding="utf-8")).get("voices") or {}
    if not design:
        return ["The corpus records no voices (not the synthetic source)."]
    lines = [
        "| language | train voices | test voices | unseen in training | genders in test (of the voices') |",
        "|---|---|---|---|---|",
    ]
    for lang in [t for t in targets if t in design] or sorted(design):
        d = design[lang]
        test = d["tests"].get("test", {"genders": [], "unseen_voices": []})
        lines.append(
            f"| {lang} | {', '.join(d['voices'].get('train', [])) or '-'} | {', '.join(d['voices'].get('test', []))} | "
            f"{', '.join(test['unseen_voices']) or 'none'} | {', '.join(test['genders'])} ({', '.join(d['genders'])}) |"
        )
    return lines + [
        "",
        "A test voice heard in training measures new sentences, not a new speaker. A language with fewer than "
        "three voices keeps them all for training, so its tests have no unseen voice.",
    ]


def make_report(cfg: ReportConfig) -> dict:
    from pipeline.report.plots import draw_plots, save_plots  # matplotlib loads only when a report is made

    metrics = json.loads((cfg.bench / "metrics.json").read_text())
    rows = metrics["rows"]
    targets = metrics.get("target_languages") or []
    checks, summary = target_checks(rows, cfg, targets)
    qlines, deltas = quantization_table(rows, cfg)
    text = [
        "# dw-pipe report",
        "",
        "Error rates in % (WER; CER for zh and other character languages), corpus level;",
        "insertions in parentheses (greedy decoding without fallback loops on synthetic speech).",
        "",
    ]
    text += ["## Target languages: does distillation help?", ""] + checks + [""]
    text += ["## Non-target languages: experts unused", ""] + non_target_table(rows, cfg, targets) + [""]
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
    tlines, tsummary = translation_section(translation, cfg, targets)
    text += ["## Translation retention (X->English)", ""] + tlines + [""]
    longform = longform_metrics(cfg.longform)
    text += ["## Long-form transcription (faster-whisper)", ""] + longform_table(longform) + [""]
    with atomic_dir(cfg.out_dir, overwrite=True) as tmp:
        figures = draw_plots(rows, deltas, targets, translation, longform["rows"] if longform else [])
        save_plots(figures, tmp)
        text += ["## Plots", ""]
        for plot in figures:
            text += [f"![{plot.name}]({plot.name})", "", f"*{plot.caption}*", ""]
        (tmp / "report.md").write_text("\n".join(text), encoding="utf-8")
        (tmp / "summary.json").write_text(
            json.dumps({"targets": summary, "translation": tsummary}, indent=2) + "\n", encoding="utf-8"
        )
    return summary
