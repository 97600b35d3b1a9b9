"""Results over training seeds: per-seed corpus error rates, their spread, the KD effect and the issue's bars.

Input: benchmark hypothesis rows (``hypotheses.jsonl``: model, compute_type,
dataset, id, language, ref_norm, hyp_norm) each tagged with the training
``seed`` of its model, or None for a model that no seed changes (the
teacher, the untrained student). Every number is corpus-level
(:mod:`pipeline.core.scoring`: sum of errors / sum of reference units).

KD effect: the distilwhisper model minus its clsr-only twin (the same
engine and compute type), seed by seed, averaged over seeds. Its 95 %
interval comes from a two-level (hierarchical) bootstrap: each replicate
draws the seeds with replacement and, once, the utterances with
replacement; every drawn seed is scored on that same utterance draw, and
both models on it too (paired). The utterances are shared because every
seed is tested on the same test set: its sampling error is common to the
seeds and does not average out over them. The replicate's statistic is the
mean over the drawn seeds of the difference of corpus error rates. With
identical seeds this is the one-seed paired utterance bootstrap (same
draws, same interval); with no utterance variance it is the bootstrap of
the seed mean alone. With 3 seeds the seed level is coarse: on one
utterance draw the seed mean takes only the ten values of 3 draws from 3
runs, never outside their range, and each extreme (the same run drawn 3
times) has probability 1/27 = 3.7 % > 2.5 %, so the seed level alone gives
the interval [smallest, largest] seed difference: a spread, not a
well-resolved 95 % interval. More seeds sharpen it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import DwPipeError
from pipeline.core.scoring import Counts, count_errors, metric_for

GAIN_BAR = 0.25  # distilwhisper at least 25 % (relative) below the untrained student, every cell
BELOW_CLSR_SHARE = 4 / 6  # below clsr-only in at least 4 of the 6 target cells (2 test sets x 3 languages)
TEACHER_GAP_BAR = 0.10  # at most 10 error-rate points above the teacher, every cell
TOLERANCE = 1e-12  # a rate exactly on a bar meets it (float division can land an ulp either side)

Group = tuple[str, str, str, str]  # (dataset, language, model, compute type)


@dataclass(frozen=True)
class CountMatrix:
    """Per-utterance error and reference-unit counts of one model in one cell, one row per seed."""

    seeds: tuple[int | None, ...]
    ids: tuple[str, ...]
    errors: np.ndarray  # [seeds, utterances]
    ref_units: np.ndarray  # [seeds, utterances]

    def rates(self) -> np.ndarray:
        """Each seed's corpus error rate."""
        return self.errors.sum(1) / np.maximum(self.ref_units.sum(1), 1)


def utterance_counts(rows: Iterable[dict]) -> dict[Group, dict[int | None, dict[str, Counts]]]:
    """(dataset, language, model, compute type) -> seed -> utterance id -> edit counts, from hypothesis rows."""
    out: dict[Group, dict[int | None, dict[str, Counts]]] = {}
    for row in rows:
        group = (row["dataset"], row["language"], row["model"], row["compute_type"])
        per_id = out.setdefault(group, {}).setdefault(row["seed"], {})
        if row["id"] in per_id:
            raise DwPipeError(f"{'/'.join(group)} seed {row['seed']}: utterance {row['id']} appears twice")
        per_id[row["id"]] = count_errors(row["ref_norm"], row["hyp_norm"])
    return out


def count_matrix(per_seed: dict[int | None, dict[str, Counts]], where: str) -> CountMatrix:
    """Stack the seeds (sorted) of one model in one cell; every seed must hold the same utterances."""
    seeds = tuple(sorted(per_seed, key=lambda s: -1 if s is None else s))
    ids = tuple(sorted(per_seed[seeds[0]]))
    for seed in seeds[1:]:
        if tuple(sorted(per_seed[seed])) != ids:
            raise DwPipeError(f"{where}: seed {seed} was scored on other utterances than seed {seeds[0]}")
    errors = np.array([[per_seed[s][i].errors for i in ids] for s in seeds], dtype=float)
    refs = np.array([[per_seed[s][i].ref_units for i in ids] for s in seeds], dtype=float)
    return CountMatrix(seeds, ids, errors, refs)


def spread(rates: Sequence[float]) -> dict:
    """Mean, min, max and standard deviation (n - 1 in the denominator; None for one value) of seed rates."""
    values = np.asarray(rates, dtype=float)
    return {
        "mean": float(values.mean()),
        "min": float(values.min()),
        "max": float(values.max()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else None,
    }


def hierarchical_bootstrap(
    a: CountMatrix, b: CountMatrix, reps: int, rng: np.random.Generator, level: float = 0.95
) -> tuple[float, float]:
    """Interval of mean over seeds of (rate of ``a`` - rate of ``b``): seeds, then utterances, resampled.

    Each replicate draws the utterances once (the draw a one-seed paired
    bootstrap makes, ``rng.integers(0, n, size=(reps, n))``, first) and then
    the seeds; each drawn seed's two corpus rates are computed on the same
    drawn utterances (module docstring)."""
    if a.ids != b.ids or a.seeds != b.seeds:
        raise DwPipeError("hierarchical_bootstrap: the two models must share their seeds and utterances (paired)")
    n_seeds, n_utts = a.errors.shape
    draws = rng.integers(0, n_utts, size=(reps, n_utts))
    seeds = rng.integers(0, n_seeds, size=(reps, n_seeds))
    weights = np.zeros((reps, n_utts))
    np.add.at(weights, (np.arange(reps)[:, None], draws), 1.0)  # how often each utterance is drawn

    def rates(m: CountMatrix) -> np.ndarray:  # [reps, seeds]: every seed scored on every replicate's draw
        return (weights @ m.errors.T) / np.maximum(weights @ m.ref_units.T, 1)

    diff = rates(a) - rates(b)
    stat = np.take_along_axis(diff, seeds, axis=1).mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(stat, [tail, 100 - tail])
    return float(low), float(high)


def cell_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator per cell, so that a cell's interval does not depend on which other cells were computed."""
    return np.random.default_rng([seed, zlib.crc32("/".join(names).encode())])


def seed_table(counts: dict[Group, dict[int | None, dict[str, Counts]]]) -> list[dict]:
    """One row per (dataset, language, model, compute type): per-seed rates, their mean and spread."""
    rows = []
    for group in sorted(counts):
        dataset, language, model, ctype = group
        m = count_matrix(counts[group], "/".join(group))
        rates = m.rates()
        rows.append(
            {
                "dataset": dataset,
                "language": language,
                "model": model,
                "compute_type": ctype,
                "metric": metric_for(language),
                "n_utterances": len(m.ids),
                "ref_units": int(m.ref_units[0].sum()),
                "per_seed": {("all" if s is None else str(s)): float(r) for s, r in zip(m.seeds, rates)},
                **spread(rates),
            }
        )
    return rows


def kd_effects(
    counts: dict[Group, dict[int | None, dict[str, Counts]]],
    reps: int,
    seed: int,
    kd: str = "distilwhisper",
    plain: str = "clsr",
) -> list[dict]:
    """Per cell and engine, the ``kd`` model minus its ``plain`` twin (same name with ``plain`` for ``kd``):
    per-seed differences, their mean and spread, and the hierarchical bootstrap interval."""
    rows = []
    for group in sorted(counts):
        dataset, language, model, ctype = group
        twin = (dataset, language, model.replace(kd, plain), ctype)
        if kd not in model or twin not in counts:
            continue
        where = "/".join(group)
        a, b = count_matrix(counts[group], where), count_matrix(counts[twin], "/".join(twin))
        diffs = a.rates() - b.rates()
        low, high = hierarchical_bootstrap(a, b, reps, cell_rng(seed, *group))
        rows.append(
            {
                "dataset": dataset,
                "language": language,
                "model": model,
                "minus": twin[2],
                "compute_type": ctype,
                "n_seeds": len(a.seeds),
                "n_utterances": len(a.ids),
                "per_seed": {str(s): float(d) for s, d in zip(a.seeds, diffs)},
                **spread(diffs),
                "ci95": [low, high],
                "bootstrap_reps": reps,
            }
        )
    return rows


def issue_bars(
    means: dict[tuple[str, str], dict[str, float]], main: str, untrained: str, clsr: str, teacher: str
) -> dict:
    """The issue's bars on (dataset, language) -> model -> mean error rate (target cells only).

    Every cell: ``main`` at least 25 % (relative) below ``untrained`` and at
    most 10 points above ``teacher``; in at least 4 of 6 cells (2/3 of them,
    rounded up) below ``clsr``."""
    cells = {}
    for (dataset, language), m in sorted(means.items()):
        missing = [name for name in (main, untrained, clsr, teacher) if name not in m]
        if missing:
            raise DwPipeError(f"bars: cell {dataset}/{language} has no mean error rate for {missing}")
        gain = 1 - m[main] / m[untrained] if m[untrained] > 0 else -math.inf  # nothing to improve on: no gain
        gap = m[main] - m[teacher]
        cells[f"{dataset}/{language}"] = {
            "error_rate": {"main": m[main], "untrained": m[untrained], "clsr": m[clsr], "teacher": m[teacher]},
            "relative_gain": gain,
            "gain_met": gain >= GAIN_BAR - TOLERANCE,
            "below_clsr": m[main] < m[clsr],
            "teacher_gap": gap,
            "teacher_met": gap <= TEACHER_GAP_BAR + TOLERANCE,
        }
    below = sum(c["below_clsr"] for c in cells.values())
    needed = math.ceil(BELOW_CLSR_SHARE * len(cells) - TOLERANCE)
    bars = {
        "gain_every_cell": bool(cells) and all(c["gain_met"] for c in cells.values()),
        "below_clsr_cells": below,
        "below_clsr_needed": needed,
        "below_clsr_met": bool(cells) and below >= needed,
        "teacher_every_cell": bool(cells) and all(c["teacher_met"] for c in cells.values()),
    }
    bars["all_met"] = bars["gain_every_cell"] and bars["below_clsr_met"] and bars["teacher_every_cell"]
    return {"models": {"main": main, "untrained": untrained, "clsr": clsr, "teacher": teacher}, "cells": cells, **bars}


__all__ = [
    "CountMatrix",
    "count_matrix",
    "hierarchical_bootstrap",
    "issue_bars",
    "kd_effects",
    "seed_table",
    "spread",
    "utterance_counts",
]
