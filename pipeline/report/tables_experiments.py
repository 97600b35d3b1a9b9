"""Rendered tables of the documented experiments: questions about the method, answered on the embedded corpus by a
program that runs the pipeline's own stages (docs/experiments.md; see pipeline.report.docs).

Each table claims today's corpus and params.yaml and the cache format it was made with: an experiment made on other
data or settings, or on a cache of another format, is an error until it is run again, never a silently kept table.
"""

from __future__ import annotations

from pipeline.cache.format import LABELLED_FORMAT_VERSION
from pipeline.report.comparison import compared_rows, power_lines
from pipeline.report.docs import CURRENT, DocTable, experiment_params, markdown_table
from pipeline.report.pool_labels import LABEL_HEAD, label_rows
from pipeline.report.tables_results import interval, pct, stages, time_line, with_source

RESULTS = "bench/results"
# the pool experiment: today's corpus and settings, on a cache with teacher-labelled rows
POOL_CLAIMS = {"corpus": CURRENT, "params": CURRENT, "cache_format": LABELLED_FORMAT_VERSION}
# the paper's comparison: a run of today's params.yaml with the changes its overrides file lists (scripts/run_experiment.sh)
COMPARISON = "docs/results/paper-comparison.json"
COMPARISON_CLAIMS = {"params": experiment_params("profiles/paper-comparison.overrides"), "cache_format": CURRENT}


def pool_labels(result: dict) -> list[str]:
    """The teacher's labels of the unlabelled pool against its withheld texts, before and after the filters."""
    f = result["filters"]
    trained = {name: s["teacher_rows"] for name, s in result["students"].items() if s.get("teacher_rows") is not None}
    return markdown_table(LABEL_HEAD, label_rows(result["label_quality"])) + [
        "",
        f"Greedy labels of at most {result['label_max_new_tokens']} tokens; filters: compression ratio above "
        f"{f['max_compression_ratio']}, average log-probability below {f['min_avg_logprob']}, no-speech probability "
        f"above {f['max_no_speech_prob']}, the token cap, empty. Rows trained on: "
        + "; ".join(f"{name} {r['kept']} of {r['read']}" for name, r in trained.items())
        + ".",
    ]


def pool_rates(result: dict) -> list[str]:
    """Every student's error rate on the target test sets, with the teacher and the untrained student."""
    models = list(next(iter(result["comparison"].values()))["models"])
    rows = []
    for cell, c in result["comparison"].items():
        dataset, lang = cell.split("/")
        rates = [f"{pct(c['models'][m]['error_rate'])} {_ci(c['models'][m]['ci95'])}" for m in models]
        rows.append([dataset, lang, str(c["utterances"]), *rates])
    steps = {s["steps"] for s in result["students"].values()}
    return markdown_table(["test set", "language", "utts", *models], rows) + [
        "",
        f"Error rate in % with its 95 % bootstrap interval. Every student made {', '.join(map(str, sorted(steps)))} "
        f"updates and kept, per language, its best dev step (dev decoded every {result['eval_every']} steps and at "
        "each epoch's end). Pool per language: "
        + ", ".join(f"{lang} {n}" for lang, n in result["pool_per_language"].items())
        + f". The labelled splits are the default run's: {_yes(result['labelled_splits_are_the_default_runs'])}; "
        f"reference rows equal to the default run's cache (which kd distils from): "
        f"{result['reference_rows_equal_to_the_default_cache']}. "
        "Updates per language (one language a batch, so a larger pool of one language gives it more of them): "
        + "; ".join(
            f"{name} " + ", ".join(f"{lang} {n}" for lang, n in s["updates_by_language"].items())
            for name, s in result["students"].items()
        )
        + ".",
    ]


def pool_differences(result: dict) -> list[str]:
    """The paired differences the experiment asks about, in points, with their 95 % paired bootstrap intervals."""
    first = next(iter(result["comparison"].values()))
    names = list(first["differences"])
    rows = []
    for cell, c in result["comparison"].items():
        dataset, lang = cell.split("/")
        rows.append([dataset, lang, *(_delta(c["differences"][n]) for n in names)])
    head = [f"{n} ({' - '.join(first['differences'][n]['of'])})" for n in names]
    return markdown_table(["test set", "language", *head], rows) + [
        "",
        "Points of error rate, this student minus that one over the same utterances, with the 95 % paired bootstrap "
        "interval; **bold**: the interval leaves out 0.",
    ]


def comparison(dataset: str):
    """The paper's comparison on one test set: each method's error rate per target language at float32 (PyTorch,
    exact routing) and int8 (the CTranslate2 exports), each with its paired difference from the main student and
    from the teacher; below it, whether the test set can tell two students apart."""

    def render(result: dict) -> list[str]:
        main = result["roles"]["distilwhisper"].removeprefix("student-")
        targets = result["targets"]
        rows = compared_rows([r | {"group": "all"} for r in result["rows"]], targets, result["roles"]["teacher"])
        mine = [r for r in rows if r["dataset"] == dataset]
        by = {(r["language"], r["model"], r["compute_type"]): r for r in mine}
        types = ("float32", "int8")
        methods = sorted({r["model"] for r in mine}, key=lambda m: ({"teacher": 0, "untrained": 1}.get(m, 2), m))
        table = []
        for lang in targets:
            for method in methods:
                cells = [lang, method, str(max(r["n_utterances"] for r in mine if r["language"] == lang))]
                for ctype in types:
                    r = by.get((lang, method, ctype))
                    vs = (r or {}).get("vs", {})
                    cells += (
                        ["-"] * 3 if r is None else [pct(r["error_rate"]), _vs(vs.get(main)), _vs(vs.get("teacher"))]
                    )
                table.append(cells)
        head = ["language", "method", "utts"] + [f"{t} {c}" for t in types for c in ("%", f"vs {main}", "vs teacher")]
        widths = {}
        for r in mine:
            other = r.get("vs", {}).get(main)
            if other and r["model"] not in ("teacher", "untrained", main):
                widths.setdefault(r["language"], []).append((other["delta_ci95"][1] - other["delta_ci95"][0]) / 2)
        engine = "CTranslate2" if result["roles"]["teacher"].startswith("ct2:") else "PyTorch"
        return markdown_table(head, table) + [
            "",
            "Error rate in %; beside it, in points, this row minus the main student and minus the teacher over the "
            "same utterances, with the 95 % paired bootstrap interval (**bold**: it leaves out 0). float32: the "
            f"PyTorch students (exact routing) and the {engine} teacher; int8: the CTranslate2 exports, one per "
            "language for a student with experts, one for every language otherwise.",
            "",
            *power_lines(dataset, widths, mine),
        ]

    return render


def training(result: dict) -> list[str]:
    """How each student of a recorded run was trained and chosen: its updates (in all and per language), the
    steps dev was decoded at, and the step the dev rule kept (per language where each language chose its own)."""
    rows = []
    for name, s in result.get("students", {}).items():
        best = s["best_step"]
        chosen = ", ".join(f"{lang} {step}" for lang, step in best.items()) if isinstance(best, dict) else str(best)
        per_language = ", ".join(f"{lang} {n}" for lang, n in s["updates_by_language"].items())
        rows.append([name, s["mode"], str(s["steps"]), per_language, ", ".join(map(str, s["dev_steps"])), chosen])
    head = ["student", "mode", "updates", "updates per language", "dev decoded at step", "kept step"]
    return markdown_table(head, rows, "llrlll") + [
        "",
        "One language a batch, in the same order for every student (the training seed). Step 0 is the untrained "
        "student, the first candidate: a student that never beats it on dev keeps it. A student with experts keeps "
        "each language's experts and gates from that language's best dev step; the others keep one step.",
    ]


def _vs(other: dict | None) -> str:
    return "-" if not other else _delta({"delta": other["delta"], "ci95": other["delta_ci95"]})


def _ci(ci: list[float]) -> str:
    return f"[{pct(ci[0])}, {pct(ci[1])}]"


def _delta(d: dict) -> str:
    text = f"{100 * d['delta']:+.1f} {interval(d['ci95'])}"
    lo, hi = d["ci95"]
    return f"**{text}**" if lo > 0 or hi < 0 else text


def _yes(flag: bool | None) -> str:
    return {True: "yes, line for line", False: "**no**", None: "not checked (no default run)"}[flag]


TABLES: dict[str, DocTable] = {
    "experiment-pool-labels": with_source(f"{RESULTS}/teacher_label_gain.json", pool_labels, POOL_CLAIMS),
    "experiment-pool-rates": with_source(f"{RESULTS}/teacher_label_gain.json", pool_rates, POOL_CLAIMS),
    "experiment-pool-differences": with_source(f"{RESULTS}/teacher_label_gain.json", pool_differences, POOL_CLAIMS),
    "experiment-comparison-test": with_source(COMPARISON, comparison("test"), COMPARISON_CLAIMS),
    "experiment-comparison-test_ood": with_source(COMPARISON, comparison("test_ood"), COMPARISON_CLAIMS),
    "experiment-comparison-training": with_source(COMPARISON, training, COMPARISON_CLAIMS),
    "experiment-comparison-stages": with_source(COMPARISON, stages, COMPARISON_CLAIMS),
    "experiment-comparison-time": DocTable(
        COMPARISON, lambda run: time_line(run, "docs/experiments.md#the-papers-comparison"), COMPARISON_CLAIMS
    ),
}
