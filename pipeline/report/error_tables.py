"""The error-rate tables of report.md: per language, the target-language checks, the languages without experts,
the change quantization brings by resource level, and the error at longer decoding caps.

Each table is a list of Markdown lines built from the benchmark's rows (``metrics.json``); rates in %, insertions
in parentheses, so decoding loops stay visible.
"""

from __future__ import annotations

from pipeline.core.languages import by_resource_level, whisper_training_hours


def _index(rows: list[dict]) -> dict[tuple, dict]:
    """Rows by (model, compute type, dataset, language, group)."""
    return {(r["model"], r["compute_type"], r["dataset"], r["language"], r["group"]): r for r in rows}


def _rate(index, model, ctype, dataset, lang, group="all") -> dict | None:
    return index.get((model, ctype, dataset, lang, group))


def _fmt(row: dict | None) -> str:
    """``rate (insertions)`` in %, or - for a run without the row."""
    if row is None:
        return "-"
    return f"{100 * row['error_rate']:.1f} ({row['insertions']})"


def language_table(rows: list[dict], dataset: str) -> list[str]:
    """Error rate (insertions) of every run on ``dataset``, per language from most to least Whisper hours."""
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


def target_checks(
    rows: list[dict], targets: list[str], main_student: str, teacher_model: str
) -> tuple[list[str], dict]:
    """The bars from the end-to-end issue, per dataset and target language: ``main_student`` against the
    untrained student, the CLSR-only student and ``teacher_model``."""
    index = _index(rows)
    lines = [
        "| dataset | language | distilwhisper | untrained | rel. gain vs untrained | clsr | teacher | ≥25 % gain | < clsr | ≤ teacher + 10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        for lang in targets:
            main = _rate(index, main_student, "float32", dataset, lang)
            untrained = _rate(index, "student-untrained", "float32", dataset, lang)
            clsr = _rate(index, "student-clsr", "float32", dataset, lang)
            teacher = _rate(index, teacher_model, "float32", dataset, lang)
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


def non_target_table(rows: list[dict], targets: list[str], main_student: str) -> list[str]:
    """Languages without experts: the trained student equals the untrained one there, decoded or by construction
    (the benchmark copies the untrained student's hypotheses where the student is, weight for weight, that model:
    ``copied_from_untrained`` utterances)."""
    index = _index(rows)
    lines = ["| dataset | language | distilwhisper | untrained | equal |", "|---|---|---|---|---|"]
    copied = False
    for r in rows:
        if r["model"] != "student-untrained" or r["group"] != "all" or r["language"] in targets:
            continue
        main = _rate(index, main_student, "float32", r["dataset"], r["language"])
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


def quantization_table(rows: list[dict], quantized: tuple[str, ...]) -> tuple[list[str], list[dict]]:
    """The CTranslate2 rows at the ``quantized`` compute types against their float32 reference, languages from
    most to least Whisper training hours; the table and those rows (the quantization plot draws them)."""
    hours = whisper_training_hours()
    deltas = [
        r
        for r in rows
        if r.get("delta") is not None
        and r["model"].startswith("ct2:")
        and r["group"] == "all"
        and r["compute_type"] in quantized
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
