"""Who the benchmark heard: the voices of the target languages' splits, and female vs male error rates.

A gap between two groups is read with its intervals: the groups are different utterances, so intervals that do
not overlap point to a real gap and overlapping ones do not settle it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline.core.languages import by_resource_level


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
