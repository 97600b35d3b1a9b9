"""Rendered tables of retired studies, each claiming the corpus and code it was measured on (see pipeline.report.docs).

The study programs left ``bench/`` (issue 27); their results stay as
``docs/studies/*.json``, each with a ``provenance`` block written after the
fact from git history: the program's command line, the commit that wrote
the result, and the corpus (name and the digest of that commit's
``prepare_data`` section, as :func:`pipeline.report.docs.corpus_id` makes
it) and teacher-cache format it was measured on. The claims below are those
literal values, never ``CURRENT``: a study describes the data it ran on,
whatever today's default is. ``docs/studies.md`` shows every table.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.core.languages import whisper_training_hours
from pipeline.report.docs import DocTable, markdown_table

STUDIES = "docs/studies"

ESPEAK = {"corpus": "espeak-ng cs/bg/pl", "corpus_params": "params:3995f19fe70f", "cache_format": 2}
FESTIVAL_Q8 = {"corpus": "Festival ca/cs/fi", "corpus_params": "params:75e193e9bbdd", "cache_format": 2}
FESTIVAL_SPARSE = {"corpus": "Festival ca/cs/fi", "corpus_params": "params:c46bd834e4a0", "cache_format": 3}
NO_CORPUS = {"corpus": "none: random log-mel on tiny random Whispers", "cache_format": None}


def pct(rate: float) -> str:
    return f"{100 * rate:.1f}"


def points(delta: float) -> str:
    return f"{100 * delta:+.1f}"


def interval(ci: list[float]) -> str:
    return f"[{points(ci[0])}, {points(ci[1])}]"


def span(values: list[float]) -> str:
    """``min-max`` of rates, in %."""
    return f"{pct(min(values))}-{pct(max(values))}"


def source(result: dict) -> list[str]:
    """The line under every study table: what made it, from the result file's provenance."""
    made, data = result["provenance"], result["provenance"]["data"]
    corpus = data["corpus"] + (f" (`{data['corpus_params']}`)" if data.get("corpus_params") else "")
    cache = f"teacher cache format {data['cache_format']} ({data['cache']})" if data.get("cache_format") else "no cache"
    device = f"; {data['device']}" if data.get("device") else ""
    return ["", f"Made by `{made['command']}` at commit `{made['code']}` ({made['date']}): {corpus}; {cache}{device}."]


# --- seeds ---------------------------------------------------------------------------------------------------------


def _seed_rates(result: dict) -> dict[tuple[str, str, str, str], dict]:
    return {(r["dataset"], r["language"], r["model"], r["compute_type"]): r for r in result["error_rates"]}


def _mean_span(row: dict) -> str:
    per_seed = list(row["per_seed"].values())
    return pct(row["mean"]) if len(per_seed) == 1 else f"{pct(row['mean'])} [{span(per_seed)}]"


def seeds(result: dict) -> list[str]:
    rates = _seed_rates(result)
    rows = []
    for kd in result["kd_effect"]:
        cell = (kd["dataset"], kd["language"])
        models = ("student-distilwhisper", "student-clsr", "student-untrained", "ct2:teacher")
        rows.append(
            [f"{cell[0]} {cell[1]}", *(_mean_span(rates[(*cell, m, "float32")]) for m in models)]
            + [f"{points(kd['mean'])} {interval(kd['ci95'])}"]
        )
    header = ["cell", "distilwhisper", "clsr-only", "untrained", "teacher", "KD effect (dw - clsr) [95 % interval]"]
    return markdown_table(header, rows) + source(result)


def seeds_exports(result: dict) -> list[str]:
    rates = _seed_rates(result)
    cells = [(kd["dataset"], kd["language"]) for kd in result["kd_effect"]]
    columns = [(m, t) for m in ("ct2:distilwhisper", "ct2:teacher") for t in ("float32", "int8")]
    rows = [[f"{d} {lang}", *(_mean_span(rates[(d, lang, *c)]) for c in columns)] for d, lang in cells]
    header = ["cell", *(f"{m.removeprefix('ct2:')} export {t}" for m, t in columns)]
    return markdown_table(header, rows) + source(result)


def seeds_bars(result: dict) -> list[str]:
    bars, cells = result["bars"], result["bars"]["cells"]
    gain = [f"{name} {100 * c['relative_gain']:.1f} %" for name, c in cells.items()]
    gap = [f"{name} {points(c['teacher_gap'])}" for name, c in cells.items()]
    dev = {
        mode: ", ".join(
            f"seed {s} {pct(students[mode]['dev_error_rate'])}" for s, students in result["students"].items()
        )
        for mode in ("distilwhisper", "clsr")
    }
    return [
        f"- below the untrained student (relative): {', '.join(gain)}; "
        f"the bar met in {sum(c['gain_met'] for c in cells.values())} of {len(cells)} cells",
        f"- below clsr-only in {bars['below_clsr_cells']} of {len(cells)} cells ({bars['below_clsr_needed']} needed)",
        f"- points above the teacher: {', '.join(gap)}; the bar met in "
        f"{sum(c['teacher_met'] for c in cells.values())} of {len(cells)} cells",
        f"- dev error rate of the chosen students, %: distilwhisper {dev['distilwhisper']}; clsr-only {dev['clsr']}",
    ] + source(result)


# --- gate start and learning rate ---------------------------------------------------------------------------------


def _mean(runs: dict[str, dict], value: Callable[[dict], float]) -> float:
    return sum(value(run) for run in runs.values()) / len(runs)


def gate_lr(result: dict) -> list[str]:
    languages = result["languages"]
    rows, summary = [], []
    for name, variant in result["variants"].items():
        runs = variant["runs"]
        for seed, run in runs.items():
            opened = ", ".join(f"{lang} {run['open_layers'][lang]:.0%}" for lang in languages)
            rows.append(
                [name, seed, pct(run["dev_error_rate_best"]), *(pct(run["dev_error_rate"][lang]) for lang in languages)]
                + [opened]
            )
        chosen = _mean(runs, lambda r: r["dev_error_rate_best"])
        per_language = [_mean(runs, lambda r, x=lang: r["dev_error_rate"][x]) for lang in languages]
        opened = ", ".join(f"{lang} {_mean(runs, lambda r, x=lang: r['open_layers'][x]):.0%}" for lang in languages)
        rows.append([name, "**mean**", f"**{pct(chosen)}**", *(pct(x) for x in per_language), opened])
        best = [run["dev_error_rate_best"] for run in runs.values()]
        summary.append(f"- {name}: mean dev {pct(chosen)} % over {len(runs)} seeds (seeds {span(best)})")
    header = ["setting", "seed", "dev (chosen)", *(f"dev {lang}" for lang in languages), "open layers"]
    return markdown_table(header, rows, "llr" + "r" * len(languages) + "l") + [""] + summary + source(result)


# --- expert placement ----------------------------------------------------------------------------------------------


def expert_placement(result: dict) -> list[str]:
    languages = result["languages"]
    rows = []
    for name, variant in result["variants"].items():
        seeds_ = variant["seeds"]
        rows.append(
            [
                name,
                pct(variant["mean_dev_error_rate_best"]),
                ", ".join(pct(s["dev_error_rate_best"]) for s in seeds_.values()),
                *(pct(variant["mean_test_error_rate"][lang]) for lang in languages),
                ", ".join(sorted({str(s["steps"]) for s in seeds_.values()})),
            ]
        )
    header = ["experts on", "dev (best), mean", "dev (best) per seed", *(f"test {lang}" for lang in languages), "steps"]
    return markdown_table(header, rows, "lrl" + "r" * (len(languages) + 1)) + source(result)


# --- quantization cost by student size -----------------------------------------------------------------------------


def quant_sizes(result: dict) -> list[str]:
    hours = whisper_training_hours()
    models: dict[str, dict] = {}
    for row in result["table"]:
        models.setdefault(row["model"], row)
    order = sorted(models, key=lambda m: -models[m]["decoder_layers"])
    cells = {(r["dataset"], r["language"], r["model"]): r for r in result["table"]}
    header = ["set", "language (Whisper h)"] + [
        f"{m.removeprefix('ct2:')}, {models[m]['decoder_layers']} decoder layers, "
        f"{models[m]['model_size_mb_float32']:.0f} MB"
        for m in order
    ]
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in result["table"]):
        for lang in result["languages_by_whisper_hours"]:
            if (dataset, lang, order[0]) not in cells:
                continue
            label = f"{lang} ({hours[lang]:.0f})" if lang in hours else lang
            rows.append([dataset, label] + [_cost(cells[(dataset, lang, m)]) for m in order])
    dev = ", ".join(f"{s['name']} {pct(s['dev_error_rate'])} % ({s['steps']} steps)" for s in result["students"])
    return (
        markdown_table(header, rows, "ll" + "r" * len(order))
        + ["", f"Dev error rate at the best step: {dev}."]
        + source(result)
    )


def _cost(row: dict) -> str:
    return f"{pct(row['float32'])} -> {pct(row['quantized'])}: {points(row['cost'])} {interval(row['cost_ci95'])}"


# --- loop caps: a longer greedy decode begins with the capped one --------------------------------------------------


def cap_prefix(result: dict) -> list[str]:
    caps = result["caps"]
    engines: dict[str, list[dict]] = {}
    for batch in result["results"]:
        engines.setdefault(batch["engine"], []).append(batch)
    rows = []
    for engine, batches in engines.items():
        lengths = [n for b in batches for n in b["lengths"]]
        own = [b["own_batch_differs"] for b in batches if "own_batch_differs" in b]
        rows.append(
            [engine, len(batches), len(lengths), f"{min(lengths)}-{max(lengths)}", sum(n >= caps[-1] for n in lengths)]
            + [sum(b[f"cut_differs_at_{c}"] for b in batches) for c in caps]
            + [sum(b[f"hit_flag_differs_at_{c}"] for b in batches for c in caps), sum(own) if own else "-"]
        )
    header = ["engine", "batches", "rows", "tokens per row", f"rows reaching {caps[-1]}"]
    header += [f"ids differ at {c}" for c in caps] + ["cap flag differs", "differ in their own batch"]
    return markdown_table(header, rows) + source(result)


# --- the DAG floor -------------------------------------------------------------------------------------------------


def dag_floor(result: dict) -> list[str]:
    cores = result["cores"]
    rows = []
    for row in result["rows"]:
        each = result["seconds_each"][row["unit"]]
        rows.append(
            [row["work"], row["count"], f"{each[f'{cores} threads']:.3f}", f"{each['1 threads']:.3f}"]
            + [f"{row['seconds_each']:.3f}", f"{row['seconds']:.1f}"]
        )
    floor, asked = result["floor_seconds"], result["asked_seconds"]
    rows.append(["**floor**", "", "", "", "", f"**{floor:.1f}** ({floor / 60:.1f} min)"])
    header = ["work no identical-output run can skip", "count", f"s ({cores} threads)", "s (1 thread)"]
    header += [f"s each (cheaper: {cores} threads, or 1 thread on each of {cores} cores)", "seconds"]
    ratio = f"The floor is {floor / asked:.2f} times the {asked / 60:.0f} minutes asked for."
    return markdown_table(header, rows) + ["", ratio] + source(result)


TABLES: dict[str, DocTable] = {
    "study-seeds": DocTable(f"{STUDIES}/seeds.json", seeds, FESTIVAL_Q8),
    "study-seeds-exports": DocTable(f"{STUDIES}/seeds.json", seeds_exports, FESTIVAL_Q8),
    "study-seeds-bars": DocTable(f"{STUDIES}/seeds.json", seeds_bars, FESTIVAL_Q8),
    "study-gate-lr": DocTable(f"{STUDIES}/gate_lr.json", gate_lr, ESPEAK),
    "study-gate-lr-first": DocTable(f"{STUDIES}/gate_lr_first.json", gate_lr, ESPEAK),
    "study-expert-placement": DocTable(f"{STUDIES}/expert_placement.json", expert_placement, ESPEAK),
    "study-quant-sizes": DocTable(f"{STUDIES}/quant_sizes.json", quant_sizes, FESTIVAL_SPARSE),
    "study-quant-sizes-all": DocTable(f"{STUDIES}/quant_sizes_all.json", quant_sizes, FESTIVAL_SPARSE),
    "study-cap-prefix": DocTable(f"{STUDIES}/cap_prefix.json", cap_prefix, NO_CORPUS),
    "study-dag-floor": DocTable(f"{STUDIES}/dag_floor.json", dag_floor, FESTIVAL_SPARSE),
}
