"""Rendered tables of the default run (README.md, docs/results.md, docs/performance.md; see pipeline.report.docs).

Every table here is made from ``docs/results/default-run.json``, which ``dw-pipe docs record-run`` writes from a
finished ``make repro`` (:mod:`pipeline.report.record_run`), and claims today's corpus and cache format: change
either and ``dw-pipe docs`` fails until the run is recorded again. Error rates are shown in %, with the
insertions in brackets where a loop would hide behind a plain rate. Tables of the bench programs are in
:mod:`pipeline.report.tables_results_bench`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from pipeline.core.languages import by_resource_level
from pipeline.report.docs import CURRENT, DocTable, markdown_table

RUN = "docs/results/default-run.json"
TODAY = {"corpus": CURRENT, "cache_format": CURRENT, "params": CURRENT, "outputs": CURRENT}


def pct(rate: float) -> str:
    return f"{100 * rate:.1f}"


def interval(ci: list[float] | None, scale: float = 100) -> str:
    return f"[{scale * ci[0]:+.1f}, {scale * ci[1]:+.1f}]" if ci else ""


def _describe(data: dict) -> str:
    """A result file's ``provenance.data`` in words: the corpus (its name, if recorded, and digest), the cache, the rest."""
    parts = []
    for key, value in data.items():
        if key == "corpus_name":
            continue
        if key == "corpus":
            parts.append(f"{data['corpus_name']} (`{value}`)" if data.get("corpus_name") else f"corpus `{value}`")
        elif key == "cache_format":
            parts.append(f"teacher cache format {value}")
        elif key == "params":
            parts.append(f"params.yaml `{value}`")
        elif isinstance(value, dict):
            parts.append(f"{key.replace('_', ' ')} " + ", ".join(f"{k} `{v}`" for k, v in value.items()))
        else:
            parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)


def source_line(path: str, result: dict) -> str:
    """Where a table's numbers come from: the command, the commit and the data that made them, and the file."""
    made = result["provenance"]
    return (
        f"Made by `{made['command']}` at commit `{made.get('code', '?')}` ({made.get('date', '?')}), "
        f"`{path}`: {_describe(made['data'])}."
    )


def with_source(path: str, render: Callable[[dict], list[str]], claims: dict | None = None) -> DocTable:
    """A table that ends with its :func:`source_line` (after a blank line: a Markdown table would take the line in)."""
    return DocTable(path, lambda result: [*render(result), "", source_line(path, result)], claims or {})


def _index(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["model"], r["compute_type"], r["dataset"], r["language"]): r for r in rows}


def _rate(row: dict | None) -> str:
    return "-" if row is None else f"{pct(row['error_rate'])} ({row['insertions']})"


def _datasets(run: dict) -> list[str]:
    return sorted({r["dataset"] for r in run["rows"]})


def _teacher(run: dict) -> tuple[str, str]:
    return run["roles"]["teacher"], "float32"


def _label(model: str, language: str) -> str:
    """A per-language export (``ct2:distilwhisper-ca``) under one row label for every language."""
    return re.sub(rf"-{re.escape(language)}$", "-*", model)


def headline(run: dict) -> list[str]:
    """README: the target languages' error rates of the students the run compares, and the teacher."""
    index, roles = _index(run["rows"]), run["roles"]
    rows = []
    for dataset in _datasets(run):
        for lang in run["targets"]:
            cells = [index.get((model, "float32", dataset, lang)) for model in roles.values()]
            if not any(cells):
                continue
            first = next(c for c in cells if c)
            rows.append([dataset, f"{lang} ({first['metric'].upper()})", first["n_utterances"]])
            rows[-1] += [_rate(c) for c in cells]
    return markdown_table(["test set", "language", "utterances", *roles], rows, "llr" + "r" * len(roles))


def bars(run: dict) -> list[str]:
    """Issue 12's three bars on the target cells, counted: the line docs/results.md states them with."""
    index, roles = _index(run["rows"]), run["roles"]
    met, cells = [0, 0, 0], 0
    for dataset in _datasets(run):
        for lang in run["targets"]:
            main, untrained, clsr, teacher = (index.get((m, "float32", dataset, lang)) for m in roles.values())
            if not (main and untrained):
                continue
            cells += 1
            rate = main["error_rate"]
            met[0] += untrained["error_rate"] > 0 and 1 - rate / untrained["error_rate"] >= 0.25
            met[1] += clsr is not None and rate < clsr["error_rate"]
            met[2] += teacher is not None and rate <= teacher["error_rate"] + 0.10
    return [
        f"On this run the distilled student is at least 25 % below the untrained student in {met[0]} of {cells} "
        f"target cells, below the CLSR-only student in {met[1]} of {cells}, and at most 10 points above the "
        f"teacher in {met[2]} of {cells}."
    ]


def _runs_on(run: dict, languages: set[str], datasets: list[str]) -> list[tuple[str, str]]:
    """Row labels (model, compute type) with a row on ``languages``: the compared roles first, then the rest."""
    found = {
        (_label(r["model"], r["language"]), r["compute_type"])
        for r in run["rows"]
        if r["language"] in languages and r["dataset"] in datasets
    }
    return sorted(found, key=lambda f: _order(run, f))


def targets(run: dict) -> list[str]:
    """docs/results.md: every model's error rate (insertions) on every target cell."""
    datasets = _datasets(run)
    columns = [(d, lang) for d in datasets for lang in run["targets"]]
    by_label = {
        (_label(r["model"], r["language"]), r["compute_type"], r["dataset"], r["language"]): r for r in run["rows"]
    }
    rows = []
    for label, ctype in _runs_on(run, set(run["targets"]), datasets):
        cells = [by_label.get((label, ctype, d, lang)) for d, lang in columns]
        if any(cells):
            rows.append([label, ctype, *(_rate(c) for c in cells)])
    return markdown_table(["model", "type", *(f"{d} {lang}" for d, lang in columns)], rows, "ll" + "r" * len(columns))


def units(run: dict) -> list[str]:
    """The size of every test cell: utterances and reference units (words; characters for CER languages)."""
    seen: dict[tuple, dict] = {}
    for r in run["rows"]:
        seen.setdefault((r["dataset"], r["language"]), r)
    order = {lang: i for i, lang in enumerate(by_resource_level(sorted({lang for _, lang in seen})))}
    rows = [
        [
            d,
            f"{lang}{' (target)' if lang in run['targets'] else ''}",
            r["metric"].upper(),
            r["n_utterances"],
            r["ref_units"],
        ]
        for (d, lang), r in sorted(seen.items(), key=lambda kv: (kv[0][0], order[kv[0][1]]))
    ]
    return markdown_table(["test set", "language", "metric", "utterances", "reference units"], rows, "lllrr")


def others(run: dict) -> list[str]:
    """Languages without experts: each model's error rate (insertions); hypotheses copied from the untrained student
    are marked."""
    rest = by_resource_level(sorted({r["language"] for r in run["rows"]} - set(run["targets"])))
    datasets = sorted({r["dataset"] for r in run["rows"] if r["language"] in rest})
    runs = _runs_on(run, set(rest), datasets)
    index = _index(run["rows"])
    rows = []
    for d in datasets:
        for lang in rest:
            cells = [index.get((model, ctype, d, lang)) for model, ctype in runs]
            if any(cells):
                marks = [
                    _rate(c) + (" =" if c and c.get("copied_from_untrained") == c["n_utterances"] else "")
                    for c in cells
                ]
                rows.append([d, lang, *marks])
    return markdown_table(["test set", "language", *(f"{m} {t}" for m, t in runs)], rows, "ll" + "r" * len(runs))


def int8(run: dict) -> list[str]:
    """The change int8 makes against the same model's float32 conversion, per cell, with its paired 95 % interval."""
    cells = [r for r in run["rows"] if r.get("delta") is not None and r["model"].startswith("ct2:")]
    cells = [r for r in cells if r["compute_type"] != "float32"]
    order = {lang: i for i, lang in enumerate(by_resource_level(sorted({r["language"] for r in cells})))}
    cells.sort(key=lambda r: (order[r["language"]], r["dataset"], r["model"]))
    rows = [
        [
            r["language"],
            r["dataset"],
            r["model"],
            r["compute_type"],
            pct(r["reference_error_rate"]),
            pct(r["error_rate"]),
            f"{100 * r['delta']:+.1f} {interval(r.get('delta_ci95'))}",
        ]
        for r in cells
    ]
    return markdown_table(
        ["language", "test set", "model", "type", "float32", "quantized", "change [95 % CI]"], rows, "llllrrr"
    )


def caps(run: dict) -> list[str]:
    """Target cells at the benchmark's token cap and at Whisper's default caps: error rate (utterances that hit the
    cap without end-of-text)."""
    longer = sorted({c["max_new_tokens"] for c in run["caps"]})
    at = {(c["model"], c["compute_type"], c["dataset"], c["language"], c["max_new_tokens"]): c for c in run["caps"]}
    rows, cap = [], None
    for c in sorted({(c["dataset"], c["language"], c["model"], c["compute_type"]) for c in run["caps"]}):
        base = _index(run["rows"]).get((c[2], c[3], c[0], c[1]))
        cap = cap or (base or {}).get("max_new_tokens")
        cells = [base] + [at.get((c[2], c[3], c[0], c[1], n)) for n in longer]
        rows.append([*c, *("-" if x is None else f"{pct(x['error_rate'])} ({x.get('capped', '-')})" for x in cells)])
    head = ["test set", "language", "model", "type", f"at {cap or 'the benchmark cap'}", *(f"at {n}" for n in longer)]
    return markdown_table(head, rows, "llll" + "r" * (1 + len(longer)))


def translation(run: dict) -> list[str]:
    """chrF of each model translating to English, per language, and the distilled student's paired differences."""
    chrf = run["translation"]
    if not chrf:
        return ["This run has no translate set (benchmark.translate is empty)."]
    langs = by_resource_level(sorted({r["language"] for r in chrf}))
    by = {(_label(r["model"], r["language"]), r["compute_type"], r["language"]): r for r in chrf}
    runs = sorted({(label, t) for label, t, _ in by}, key=lambda f: _order(run, f))
    main = run["roles"]["distilwhisper"]
    rows = []
    for lang in langs:
        cells = [by.get((m, t, lang)) for m, t in runs]
        mine = by.get((main, "float32", lang)) or {}
        deltas = [
            f"{mine[k]:+.1f} {interval(mine.get(k + '_ci95'), 1)}" if k in mine else "-"
            for k in ("teacher_delta", "untrained_delta")
        ]
        target = "" if lang in run["targets"] else " (no expert)"
        rows.append([lang + target, *("-" if c is None else f"{c['score']:.1f}" for c in cells), *deltas])
    head = ["language", *(f"{m} {t}" for m, t in runs), "distilwhisper vs teacher", "vs untrained"]
    return markdown_table(head, rows, "l" + "r" * (len(runs) + 2))


def _order(run: dict, label: tuple[str, str]) -> tuple:
    """The compared models (float32) in the order of ``roles``, then every other model and type by name."""
    compared = [(model, "float32") for model in run["roles"].values()]
    return (label not in compared, compared.index(label) if label in compared else 0, label)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"  # no start error where the model wrote no segment


def longform(run: dict) -> list[str]:
    """Long-form recordings through faster-whisper: whole-recording error rate, segment start errors, loops."""
    if not run["longform"]:
        return ["This run has no long-form recordings (no longform stage)."]
    rows = [
        [
            r["language"],
            r["setting"],
            r["model"],
            f"{pct(r['error_rate'])} ({r['insertions']})",
            " / ".join(_seconds(r.get(k)) for k in ("start_error_mean_s", "start_error_median_s")),
            f"{r['loop_stretches']}/{r['stretches']}",
            f"{r['empty_stretches']}/{r['stretches']}",
            r["rtfx"],
        ]
        for r in sorted(run["longform"], key=lambda r: (r["language"], r["setting"], r["model"]))
    ]
    head = ["language", "setting", "model", "error rate", "start error mean / median (s)", "loops", "empty", "RTFx"]
    return markdown_table(head, rows, "lllrrrrr")


def data(run: dict) -> list[str]:
    """The prepared data and the teacher cache the run trained from."""
    prepared = run["prepared"]
    rows = [[s, v["utterances"], f"{v['hours']:.2f}"] for s, v in sorted(prepared.get("by_split", {}).items())]
    lines = markdown_table(["split", "utterances", "hours"], rows, "lrr")
    lines += [
        "",
        f"prepare_data read {prepared['read']} items, kept {prepared['kept']}, rejected {prepared['rejected']}.",
    ]
    for name, c in run["caches"].items():
        lines += [
            "",
            f"Teacher cache `{name}`: {c['rows']} rows, {c['tokens']} label tokens, {c['bytes']} bytes of shards "
            f"({c['bytes'] / max(c['tokens'], 1):.1f} per label token); format {c['format_version']}, at most "
            f"{c['top_k']} entries of probability >= {c['min_prob']}, {c['encoding']}.",
        ]
    return lines


def stages(run: dict) -> list[str]:
    """docs/performance.md: each stage's seconds, their sum and the run's span."""
    times = run["times"]
    rows = [[t["stage"], f"{t['seconds']:.1f}"] for t in times["stages"]]
    rows.append(["**sum**", f"**{times['total_seconds']:.1f}** ({times['total_seconds'] / 60:.1f} min)"])
    return markdown_table(["stage", "seconds"], rows) + ["", _span(run)]


def _span(run: dict) -> str:
    m, times = run["machine"], run["times"]
    return (
        f"From the first stage's start to the last one's end: {times['wall_seconds']:.0f} s "
        f"({times['wall_seconds'] / 60:.1f} min); {m.get('cpu', '?')} ({m.get('cpu_id', '?')}), {m.get('cores', '?')} cores."
    )


def time_line(run: dict, stages_at: str = "docs/performance.md") -> list[str]:
    """README: a recorded run's measured time, one line (``stages_at``: where its stage table is)."""
    times, m = run["times"], run["machine"]
    return [
        f"Measured: the stages of `{run['provenance']['command']}` took **{times['total_seconds'] / 60:.0f} min** in "
        f"all ({times['total_seconds']:.0f} s, the sum of the stage times) on {m.get('cores', '?')} cores of an "
        f"{m.get('cpu', '?')}, {run['provenance']['date']} (stages: [{Path(stages_at.split('#')[0]).name}]"
        f"({stages_at}))." + (f" {run['note']}" if run.get("note") else "")
    ]


TABLES: dict[str, DocTable] = {
    "run-time": DocTable(RUN, time_line, TODAY),
    "run-headline": with_source(RUN, headline, TODAY),
    "run-bars": DocTable(RUN, bars, TODAY),
    "run-targets": with_source(RUN, targets, TODAY),
    "run-units": with_source(RUN, units, TODAY),
    "run-others": with_source(RUN, others, TODAY),
    "run-int8": with_source(RUN, int8, TODAY),
    "run-caps": with_source(RUN, caps, TODAY),
    "run-translation": with_source(RUN, translation, TODAY),
    "run-longform": with_source(RUN, longform, TODAY),
    "run-data": with_source(RUN, data, TODAY),
    "run-stages": with_source(RUN, stages, TODAY),
}
