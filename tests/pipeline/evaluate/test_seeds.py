"""Results over seeds, pinned by hand: corpus rates and their spread, the two-level bootstrap, the KD rows, the bars.

Every expected interval below is worked out from the possible resamples
(how likely each is against the 2.5 % tails), not by the call under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import DwPipeError
from pipeline.core.scoring import Counts
from pipeline.evaluate.rows import bootstrap_ci
from pipeline.evaluate.seeds import (
    CountMatrix,
    count_matrix,
    hierarchical_bootstrap,
    issue_bars,
    kd_effects,
    seed_table,
    utterance_counts,
)

REPS = 4000


def matrix(errors: list[list[int]], refs: list[list[int]]) -> CountMatrix:
    """One row per seed, one column per utterance."""
    return CountMatrix(
        tuple(range(len(errors))),
        tuple(f"u{i}" for i in range(len(errors[0]))),
        np.array(errors, dtype=float),
        np.array(refs, dtype=float),
    )


def test_identical_seeds_give_the_one_seed_utterance_interval():
    # Two utterances: A makes 1 error in 2 units on u0 and none in 4 on u1; B makes none.
    # Resamples: (u0, u0) 1/4 -> 2/4 - 0 = 0.5; (u1, u1) 1/4 -> 0; mixed 1/2 -> 1/6.
    # Both tails hold 25 % > 2.5 %: the interval is [0, 0.5].
    one = hierarchical_bootstrap(matrix([[1, 0]], [[2, 4]]), matrix([[0, 0]], [[2, 4]]), REPS, np.random.default_rng(0))
    assert one == pytest.approx((0.0, 0.5))
    # Three identical seeds share each replicate's utterance draw, so the seed mean is that one value: the same
    # interval. (Separate draws per seed would average three: all three (u0, u0) has 1/64 < 2.5 %, upper < 0.5.)
    three = hierarchical_bootstrap(
        matrix([[1, 0]] * 3, [[2, 4]] * 3), matrix([[0, 0]] * 3, [[2, 4]] * 3), REPS, np.random.default_rng(0)
    )
    assert three == pytest.approx((0.0, 0.5))


def test_identical_seeds_repeat_the_benchmarks_paired_bootstrap_draw_for_draw():
    rng = np.random.default_rng(7)
    errs_a, errs_b = rng.integers(0, 4, 12), rng.integers(0, 4, 12)
    refs = rng.integers(1, 9, 12)
    a = matrix([errs_a.tolist()] * 3, [refs.tolist()] * 3)
    b = matrix([errs_b.tolist()] * 3, [refs.tolist()] * 3)
    ours = hierarchical_bootstrap(a, b, 500, np.random.default_rng(3))
    per_utt = [Counts(substitutions=int(e), hits=int(r - e)) for e, r in zip(errs_a, refs)]
    other = [Counts(substitutions=int(e), hits=int(r - e)) for e, r in zip(errs_b, refs)]
    assert ours == pytest.approx(bootstrap_ci(per_utt, 500, np.random.default_rng(3), other), abs=1e-4)


def test_without_utterance_variance_only_the_seed_mean_varies():
    # Every utterance of seed s: A 1, 2, 3 errors in 10 units, B none; any utterance draw gives the same rates.
    a = matrix([[1] * 4, [2] * 4, [3] * 4], [[10] * 4] * 3)
    b = matrix([[0] * 4] * 3, [[10] * 4] * 3)
    # The seed mean of 3 draws from {0.1, 0.2, 0.3}: all draws 0.1 (or 0.3) has 1/27 = 3.7 % > 2.5 %, so with
    # 3 seeds the interval is their whole range (the seed level is coarse).
    assert hierarchical_bootstrap(a, b, REPS, np.random.default_rng(1)) == pytest.approx((0.1, 0.3))
    # 5 seeds, differences 0, 0, 0, 0, 1: the mean is K / 5 with K ~ Binomial(5, 1/5).
    # P(K = 0) = 0.328 holds the lower tail; P(K >= 3) = 0.058 > 2.5 % > P(K >= 4) = 0.0067: upper K = 3.
    a5 = matrix([[0] * 3] * 4 + [[2] * 3], [[2] * 3] * 5)
    b5 = matrix([[0] * 3] * 5, [[2] * 3] * 5)
    assert hierarchical_bootstrap(a5, b5, REPS, np.random.default_rng(2)) == pytest.approx((0.0, 0.6))


def test_the_two_models_are_scored_on_the_same_utterances():
    # A and B are the same model: on any shared draw their rates are equal, so every difference is 0.
    same = matrix([[3, 0, 1, 0, 5], [0, 2, 0, 4, 1]], [[4, 3, 2, 5, 6]] * 2)
    assert hierarchical_bootstrap(same, same, 500, np.random.default_rng(0)) == (0.0, 0.0)


def test_unpaired_inputs_are_refused():
    with pytest.raises(DwPipeError, match="paired"):
        hierarchical_bootstrap(
            matrix([[1, 0]], [[2, 2]]), matrix([[1, 0, 0]], [[2, 2, 2]]), 10, np.random.default_rng(0)
        )


def hyp(model: str, seed: int | None, uid: str, ref: str, hyp_text: str, dataset: str = "test", lang: str = "pl"):
    return {
        "model": model,
        "compute_type": "float32",
        "dataset": dataset,
        "language": lang,
        "id": uid,
        "ref_norm": ref,
        "hyp_norm": hyp_text,
        "seed": seed,
    }


def test_seed_rates_are_corpus_level_with_their_mean_range_and_std():
    rows = [
        # seed 0: u1 4 of 4 right, u2 "x" -> "y" 1 substitution: 1 / 5 = 0.2 (a mean of utterance rates: 0.5)
        hyp("student-distilwhisper", 0, "u1", "a b c d", "a b c d"),
        hyp("student-distilwhisper", 0, "u2", "x", "y"),
        # seed 1: u1 two substitutions, u2 right: 2 / 5 = 0.4
        hyp("student-distilwhisper", 1, "u1", "a b c d", "a q c r"),
        hyp("student-distilwhisper", 1, "u2", "x", "x"),
        # seed 2: all right: 0
        hyp("student-distilwhisper", 2, "u1", "a b c d", "a b c d"),
        hyp("student-distilwhisper", 2, "u2", "x", "x"),
        # the untrained student, seed-independent: u1 one deletion, u2 one insertion: 2 / 5
        hyp("student-untrained", None, "u1", "a b c d", "a b c"),
        hyp("student-untrained", None, "u2", "x", "x z"),
    ]
    table = {r["model"]: r for r in seed_table(utterance_counts(rows))}
    main = table["student-distilwhisper"]
    assert main["per_seed"] == pytest.approx({"0": 0.2, "1": 0.4, "2": 0.0})
    assert (main["mean"], main["min"], main["max"]) == pytest.approx((0.2, 0.0, 0.4))
    # sample std: deviations -0, +0.2, -0.2 -> sqrt(0.08 / 2) = 0.2
    assert main["std"] == pytest.approx(0.2)
    assert (main["n_utterances"], main["ref_units"], main["metric"]) == (2, 5, "wer")
    untrained = table["student-untrained"]
    assert untrained["per_seed"] == pytest.approx({"all": 0.4}) and untrained["std"] is None


def test_a_seed_scored_on_other_utterances_is_refused():
    rows = [hyp("m", 0, "u1", "a", "a"), hyp("m", 1, "u2", "a", "a")]
    with pytest.raises(DwPipeError, match="test/pl/m/float32: seed 1 was scored on other utterances"):
        seed_table(utterance_counts(rows))


def test_kd_effect_is_the_seed_mean_of_distilwhisper_minus_its_clsr_twin():
    rows = []
    # u1: 2 units, u2: 2 units. distilwhisper: seed 0 1 error, seed 1 0 errors; clsr: seed 0 2, seed 1 3 errors.
    for model, seed, hyps in (
        ("ct2:distilwhisper", 0, ("a q", "c d")),
        ("ct2:distilwhisper", 1, ("a b", "c d")),
        ("ct2:clsr", 0, ("q b", "c r")),
        ("ct2:clsr", 1, ("q r", "c s")),
        ("ct2:teacher", None, ("a b", "c d")),  # no twin: no KD row
    ):
        rows += [hyp(model, seed, "u1", "a b", hyps[0]), hyp(model, seed, "u2", "c d", hyps[1])]
    effects = kd_effects(utterance_counts(rows), REPS, seed=0)
    assert len(effects) == 1
    kd = effects[0]
    assert (kd["model"], kd["minus"], kd["compute_type"]) == ("ct2:distilwhisper", "ct2:clsr", "float32")
    # seed 0: 1/4 - 2/4 = -0.25; seed 1: 0 - 3/4 = -0.75; mean -0.5
    assert kd["per_seed"] == pytest.approx({"0": -0.25, "1": -0.75})
    assert kd["mean"] == pytest.approx(-0.5)
    # Extremes: seeds (1, 1) on (u1, u1): 0 - 4/4 = -1; seeds (0, 0) on (u1, u1): 2/4 - 2/4 = 0. Each has
    # probability 1/4 x 1/4 = 6.25 % > 2.5 %, so the interval is [-1, 0].
    assert kd["ci95"] == pytest.approx([-1.0, 0.0])


def bar_means(main: list[float], untrained: list[float], clsr: list[float], teacher: list[float]) -> dict:
    cells = [(d, lang) for d in ("test", "test_ood") for lang in ("bg", "cs", "pl")]
    return {
        cell: {"dw": main[i], "base": untrained[i], "clsr": clsr[i], "teacher": teacher[i]}
        for i, cell in enumerate(cells)
    }


def test_bars_hold_on_their_edges():
    # Every cell exactly 25 % below the untrained (0.3 vs 0.4; 0.27 vs 0.36, which float division puts at
    # 0.2499999999999999) and exactly 10 points above the teacher (0.2; 0.45 - 0.35 is 0.10000000000000003):
    # both bars are met; below clsr (0.46) in 4 cells, above (0.26) in 2: 4 of 6 is enough.
    main = [0.3, 0.27, 0.45, 0.3, 0.3, 0.27]
    means = bar_means(main, [0.4, 0.36, 0.6, 0.4, 0.4, 0.36], [0.46] * 4 + [0.26] * 2, [0.2, 0.17, 0.35, 0.2, 0.2, 0.2])
    bars = issue_bars(means, "dw", "base", "clsr", "teacher")
    assert [c["gain_met"] for c in bars["cells"].values()] == [True] * 6
    assert [c["teacher_met"] for c in bars["cells"].values()] == [True] * 6
    assert bars["gain_every_cell"] and bars["teacher_every_cell"]
    assert (bars["below_clsr_cells"], bars["below_clsr_needed"], bars["below_clsr_met"]) == (4, 4, True)
    assert bars["all_met"]
    assert bars["cells"]["test/bg"]["relative_gain"] == pytest.approx(0.25)


def test_bars_fail_one_cell_past_their_edges():
    # test_ood/pl: 0.31 vs 0.4 is a 22.5 % gain and 11 points above 0.2; only 3 cells below clsr.
    means = bar_means([0.3] * 5 + [0.31], [0.4] * 6, [0.31] * 3 + [0.29] * 3, [0.2] * 6)
    bars = issue_bars(means, "dw", "base", "clsr", "teacher")
    assert not bars["gain_every_cell"] and not bars["teacher_every_cell"]
    assert [c for c, v in bars["cells"].items() if not v["gain_met"]] == ["test_ood/pl"]
    assert [c for c, v in bars["cells"].items() if not v["teacher_met"]] == ["test_ood/pl"]
    assert (bars["below_clsr_cells"], bars["below_clsr_met"]) == (3, False)
    assert not bars["all_met"]


def test_a_cell_without_a_model_is_named():
    means = bar_means([0.3] * 6, [0.4] * 6, [0.31] * 6, [0.2] * 6)
    del means[("test", "cs")]["teacher"]
    with pytest.raises(DwPipeError, match="test/cs has no mean error rate for \\['teacher'\\]"):
        issue_bars(means, "dw", "base", "clsr", "teacher")


def test_count_matrix_orders_seeds_and_utterances():
    per_seed = {
        1: {"b": Counts(substitutions=1, hits=1), "a": Counts(hits=3)},
        0: {"a": Counts(deletions=3), "b": Counts(hits=2)},
    }
    m = count_matrix(per_seed, "cell")
    assert m.seeds == (0, 1) and m.ids == ("a", "b")
    assert m.errors.tolist() == [[3, 0], [0, 1]] and m.ref_units.tolist() == [[3, 2], [3, 2]]
    assert m.rates() == pytest.approx([3 / 5, 1 / 5])
