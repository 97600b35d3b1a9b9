"""The documented experiments' rendered tables, from a small hand-made result file."""

from __future__ import annotations

from pipeline.report import tables_experiments as x


def _model(rate: float) -> dict:
    return {"error_rate": rate, "ci95": [rate - 0.05, rate + 0.05]}


def _result(same: bool | None = True) -> dict:
    models = {"teacher": 0.3, "untrained": 0.5, "ce": 0.45, "kd": 0.4, "ce-pool": 0.42, "kd-pool": 0.35}
    return {
        "filters": {"max_compression_ratio": 2.4, "min_avg_logprob": -1.0, "max_no_speech_prob": 0.6},
        "label_max_new_tokens": 128,
        "eval_every": 8,
        "pool_per_language": {"ca": 120},
        "labelled_splits_are_the_default_runs": same,
        "reference_rows_equal_to_the_default_cache": "450 of 450",
        "label_quality": {
            "ca": {
                "utterances": 4,
                "error_rate_all": 0.25,
                "kept": 3,
                "error_rate_kept": 0.2,
                "filtered": {"token cap": 1},
            },
        },  # fmt: skip
        "students": {
            "ce": {"steps": 48, "teacher_rows": None, "updates_by_language": {"ca": 48}},
            "kd-pool": {
                "steps": 48,
                "teacher_rows": {"read": 4, "kept": 3, "filtered": 1},
                "updates_by_language": {"ca": 48},
            },  # fmt: skip
        },
        "comparison": {
            "test/ca": {
                "utterances": 40,
                "models": {m: _model(r) for m, r in models.items()},
                "differences": {
                    "pool with KD": {"of": ["kd-pool", "kd"], "delta": -0.05, "ci95": [-0.09, -0.01]},
                    "pool with CE": {"of": ["ce-pool", "ce"], "delta": -0.03, "ci95": [-0.08, 0.02]},
                },
            }
        },
    }


def test_labels_table_scores_every_label_and_the_kept_ones_and_names_the_rows_trained_on():
    lines = x.pool_labels(_result())
    assert lines[2] == "| ca | 4 | 25.0 | 3 of 4 | 20.0 | token cap 1 |"
    assert lines[-1].endswith("Rows trained on: kd-pool 3 of 4.")


def test_rates_table_gives_every_model_with_its_interval_and_says_whether_the_splits_are_the_default_runs():
    lines = x.pool_rates(_result())
    assert lines[0] == "| test set | language | utts | teacher | untrained | ce | kd | ce-pool | kd-pool |"
    assert lines[2] == (
        "| test | ca | 40 | 30.0 [25.0, 35.0] | 50.0 [45.0, 55.0] | 45.0 [40.0, 50.0] | 40.0 [35.0, 45.0] | "
        "42.0 [37.0, 47.0] | 35.0 [30.0, 40.0] |"
    )
    assert "Every student made 48 updates" in lines[-1] and "default run's: yes, line for line;" in lines[-1]
    assert lines[-1].endswith("Updates per language (one language a batch, so a larger pool of one language gives "
                              "it more of them): ce ca 48; kd-pool ca 48.")  # fmt: skip
    assert "default run's: **no**;" in x.pool_rates(_result(same=False))[-1]
    assert "reference rows equal to the default run's cache (which kd distils from): 450 of 450." in lines[-1]


def test_differences_are_bold_only_where_the_interval_leaves_out_zero():
    lines = x.pool_differences(_result())
    assert lines[0] == "| test set | language | pool with KD (kd-pool - kd) | pool with CE (ce-pool - ce) |"
    assert lines[2] == "| test | ca | **-5.0 [-9.0, -1.0]** | -3.0 [-8.0, +2.0] |"


def _cell(model: str, ctype: str, dataset: str, lang: str, rate: float, vs: dict | None = None) -> dict:
    row = {"model": model, "compute_type": ctype, "dataset": dataset, "language": lang, "n_utterances": 120}
    return row | {"error_rate": rate, "ci95": [rate - 0.1, rate + 0.1], "vs": vs or {}}


def _vs(delta: float, lo: float, hi: float) -> dict:
    return {"model": "x", "error_rate": 0.0, "delta": delta, "delta_ci95": [lo, hi]}


def _comparison() -> dict:
    rows = []
    for ctype, student, teacher in (("float32", "student-{}", "ct2:teacher"), ("int8", "ct2:{}", "ct2:teacher")):
        dw = "student-distilwhisper" if ctype == "float32" else "ct2:distilwhisper-ca"
        rows += [
            _cell(teacher, ctype, "test", "ca", 0.30, {"distilwhisper": _vs(-0.1, -0.15, -0.05)}),
            _cell(dw, ctype, "test", "ca", 0.40, {"teacher": _vs(0.1, 0.05, 0.15)}),
            # a student without experts: at int8 one export serves every language (no language in its name)
            _cell(student.format("kd"), ctype, "test", "ca", 0.38, {"distilwhisper": _vs(-0.02, -0.06, 0.02)}),
        ]
    rows += [
        _cell("ct2:distilwhisper-cs", "int8", "test", "ca", 0.9),  # another language's export: not a ca row
        _cell("student-distilwhisper", "float32", "test_ood", "ca", 0.5),
    ]
    return {
        "targets": ["ca"],
        "roles": {"distilwhisper": "student-distilwhisper", "teacher": "ct2:teacher"},
        "rows": rows,
    }


def test_the_comparison_shows_each_method_at_float32_and_int8_with_both_paired_differences():
    lines = x.comparison("test")(_comparison())
    table = [line for line in lines if line.startswith("| ca |")]
    assert table == [
        "| ca | teacher | 120 | 30.0 | **-10.0 [-15.0, -5.0]** | - | 30.0 | **-10.0 [-15.0, -5.0]** | - |",
        "| ca | distilwhisper | 120 | 40.0 | - | **+10.0 [+5.0, +15.0]** | 40.0 | - | **+10.0 [+5.0, +15.0]** |",
        "| ca | kd | 120 | 38.0 | -2.0 [-6.0, +2.0] | - | 38.0 | -2.0 [-6.0, +2.0] | - |",
    ]
    # the half-width of a student's interval on its difference from the main student, against the +-5-point goal
    assert "- ca: ±4.0 points over 120 utterances; within the ±5-point goal" in lines
    assert x.comparison("test_ood")(_comparison())[2] == "| ca | distilwhisper | 120 | 50.0 | - | - | - | - | - |"


def test_the_training_table_states_each_student_s_updates_and_the_dev_rule_s_choice():
    students = {
        "distilwhisper": {"mode": "distilwhisper", "steps": 4, "updates_by_language": {"ca": 2, "cs": 2},
                          "dev_steps": [0, 2, 4], "best_step": {"ca": 2, "cs": 4}},
        "kd": {"mode": "finetune", "steps": 4, "updates_by_language": {"ca": 2, "cs": 2}, "dev_steps": [0, 2, 4],
               "best_step": 0},
    }  # fmt: skip
    lines = x.training({"students": students})
    assert lines[2] == "| distilwhisper | distilwhisper | 4 | ca 2, cs 2 | 0, 2, 4 | ca 2, cs 4 |"
    assert lines[3] == "| kd | finetune | 4 | ca 2, cs 2 | 0, 2, 4 | 0 |"
