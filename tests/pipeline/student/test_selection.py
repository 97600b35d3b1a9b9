"""Dev selection: each language keeps its own best step when its parameters are its own, else one step for all."""

from __future__ import annotations

import torch

from pipeline.student.selection import TrainState, keep_best


def _params(**values: float) -> dict[str, torch.Tensor]:
    return {name: torch.tensor([v]) for name, v in values.items()}


def _dev(step: int, **rates: tuple[int, int]) -> dict:
    per = {lang: {"wer": e / n, "errors": e, "ref_units": n, "insertions": 0} for lang, (e, n) in rates.items()}
    errors, units = sum(e for e, _ in rates.values()), sum(n for _, n in rates.values())
    return {"wer": errors / units, "per_language": per}


def test_each_language_keeps_its_best_step():
    state = TrainState()
    names = ("d.fc2.experts.cs.fc1.weight", "d.fc2.gates.cs.w2.weight", "d.fc2.experts.pl.fc1.weight")
    at = lambda v: _params(**dict.fromkeys(names, v))  # noqa: E731  every parameter holds the step number
    best = keep_best(state, _dev(0, cs=(10, 10), pl=(10, 10)), at(0.0), None)
    state.step = 1
    best = keep_best(state, _dev(1, cs=(5, 10), pl=(12, 10)), at(1.0), best)  # cs better, pl worse
    state.step = 2
    best = keep_best(state, _dev(2, cs=(7, 10), pl=(9, 10)), at(2.0), best)  # cs worse, pl better
    assert state.best_by_language == {"cs": 1, "pl": 2}
    assert [float(best[n]) for n in names] == [1.0, 1.0, 2.0]
    assert state.best_wer == (5 + 9) / 20  # the dev rate of the assembled student


def test_shared_parameters_keep_one_best_step():
    state = TrainState()
    best = keep_best(state, _dev(0, cs=(10, 10), pl=(10, 10)), _params(**{"fc1.weight": 0.0}), None)
    state.step = 1
    best = keep_best(state, _dev(1, cs=(5, 10), pl=(12, 10)), _params(**{"fc1.weight": 1.0}), best)
    assert state.best_step == 1 and float(best["fc1.weight"]) == 1.0 and not state.best_by_language
