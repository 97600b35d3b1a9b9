"""Dev selection: decode the dev set at each epoch's end, keep the best parameters, and summarise the choice.

The untrained student is the first candidate, so training must beat it on
dev. When every trainable parameter serves one language (CLSR experts and
gates), each language keeps the parameters of its own best step; otherwise
the whole model keeps one best step. The summary (dev.json) names the chosen
step(s) and the gate rates measured there, which the export routes by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from pipeline.models.decode import greedy_decode
from pipeline.student.config import TrainConfig


@dataclass
class TrainState:
    """Where a run stands: its step, every dev result so far, and the best choice (saved in each checkpoint)."""

    step: int = 0
    best_wer: float = math.inf
    best_step: int = -1
    history: list[dict] = field(default_factory=list)
    best_by_language: dict[str, int] = field(default_factory=dict)  # language -> chosen step (CLSR modes)


def dev_wer(model, utts, store, tokenizer, cfg) -> dict:
    """Corpus-level dev error rate (WER, or CER for character languages), insertions, rate per language, gate rates."""
    from pipeline.core.scoring import score

    hyps, rates = greedy_decode(model, utts, store, tokenizer, cfg)
    counts = score([(u.text, h, u.language) for u, h in zip(utts, hyps)])
    per_language = {}
    for lang in sorted({u.language for u in utts}):
        c = score([(u.text, h, u.language) for u, h in zip(utts, hyps) if u.language == lang])
        per_language[lang] = {"wer": c.rate, "errors": c.errors, "ref_units": c.ref_units, "insertions": c.insertions}
    return {
        "wer": counts.rate,
        "insertions": counts.insertions,
        "ref_units": counts.ref_units,
        "per_language": per_language,
        "gate_rates": rates,
    }


def language_of(name: str) -> str | None:
    """The language a CLSR parameter serves (``...experts.<lang>...`` or ``...gates.<lang>...``), else None."""
    parts = name.split(".")
    for key in ("experts", "gates"):
        if key in parts[:-1]:
            return parts[parts.index(key) + 1]
    return None


def keep_best(state: TrainState, result: dict, params: dict[str, torch.Tensor], best: dict | None) -> dict:
    """Record the dev result of ``state.step`` and keep the best parameters seen so far.

    When every trainable parameter serves one language (CLSR experts and
    gates: a language's outputs depend on its own parameters only, and dev
    batches hold one language), each language keeps its own best step;
    otherwise the whole model keeps its best step.
    """
    state.history.append({"step": state.step, **result})
    snapshot = {k: v.detach().cpu().clone() for k, v in params.items()}
    langs = {k: language_of(k) for k in params}
    per_language = bool(params) and None not in langs.values()
    if best is None:  # the first candidate (the untrained student) starts every language's choice
        state.best_wer, state.best_step = result["wer"], state.step
        state.best_by_language = dict.fromkeys(sorted(set(langs.values())), state.step) if per_language else {}
        return snapshot
    if not per_language:
        if result["wer"] < state.best_wer:
            state.best_wer, state.best_step = result["wer"], state.step
            return snapshot
        return best
    return _keep_best_per_language(state, result, snapshot, langs, best)


def _keep_best_per_language(
    state: TrainState, result: dict, snapshot: dict, langs: dict[str, str | None], best: dict
) -> dict:
    """Each language takes this step's parameters of its own when its dev rate improved; the state's best rate
    becomes the corpus rate of the student so assembled, its best step the latest chosen one."""
    best = dict(best)
    for lang in sorted(set(langs.values())):
        rate = result["per_language"].get(lang, {}).get("wer")
        chosen = state.best_by_language.get(lang)
        earlier = next((h for h in state.history if h["step"] == chosen), None) if chosen is not None else None
        before = earlier["per_language"].get(lang, {}).get("wer") if earlier else None
        # A language without dev utterances keeps its latest parameters.
        if rate is None or before is None or rate < before:
            state.best_by_language[lang] = state.step
            best.update({k: v for k, v in snapshot.items() if langs[k] == lang})
    chosen = [
        next(h for h in state.history if h["step"] == step)["per_language"].get(lang)
        for lang, step in state.best_by_language.items()
    ]
    errors = sum(c["errors"] for c in chosen if c)
    units = sum(c["ref_units"] for c in chosen if c)
    state.best_wer = errors / units if units else math.nan
    state.best_step = max(state.best_by_language.values())
    return best


def dev_summary(cfg: TrainConfig, state: TrainState) -> dict:
    """dev.json: the chosen step (per language when each language chose its own), the dev gate rates there,
    the first and the best dev rate, and the whole dev history."""
    at = {h["step"]: h for h in state.history}
    if state.best_by_language:  # each language's parameters come from its own best step
        best_step: int | dict[str, int] = dict(sorted(state.best_by_language.items()))
        gate_rates = {lang: at[step].get("gate_rates", {}).get(lang, {}) for lang, step in best_step.items()}
    else:
        best_step, gate_rates = state.best_step, at[state.best_step].get("gate_rates", {})
    return {
        "mode": cfg.mode,
        "languages": list(cfg.languages),
        "steps": state.step,
        "best_step": best_step,
        "dev_wer_initial": state.history[0]["wer"],
        "dev_wer_best": state.best_wer,
        "gate_rates": gate_rates,
        "history": state.history,
    }
