"""The report's first table: each student against the main student and the teacher, with paired intervals and the
test set's power."""

from __future__ import annotations

from pipeline.report.comparison import comparison_section, label
from tests.pipeline.report.test_build import _row


def _vs(rate: float, delta: float, lo: float, hi: float, model: str) -> dict:
    return {"model": model, "error_rate": rate, "delta": delta, "delta_ci95": [lo, hi]}


def _rows(width: float) -> list[dict]:
    """cs and ca at float32 (PyTorch students) and int8 (exports); ``width``: half-width of the students' paired
    intervals against distilwhisper."""
    rows = []
    for lang in ("cs", "ca"):
        dw = _vs(0.30, 0.0, 0, 0, "student-distilwhisper|float32")
        teacher = {"teacher": _vs(0.20, 0.10, 0.05, 0.15, "ct2:teacher|float32")}
        rows += [
            _row("ct2:teacher", "float32", lang, 0.20, [0.15, 0.25], vs={"distilwhisper": _vs(0.30, -0.1, -0.15, -0.05, "x")}),
            _row("student-untrained", "float32", lang, 0.50, [0.40, 0.60], vs={"distilwhisper": dw, **teacher}),
            _row("student-distilwhisper", "float32", lang, 0.30, [0.25, 0.35], vs=teacher),
            _row("student-clsr", "float32", lang, 0.32, [0.27, 0.37],
                 vs={"distilwhisper": _vs(0.30, 0.02, 0.02 - width, 0.02 + width, "x"), **teacher}),  # fmt: skip
            _row("student-kd", "float32", lang, 0.25, [0.20, 0.30],
                 vs={"distilwhisper": _vs(0.30, -0.05, -0.05 - width, -0.05 + width, "x"), **teacher}),  # fmt: skip
            _row(f"ct2:distilwhisper-{lang}", "int8", lang, 0.31, [0.26, 0.36]),
            _row("ct2:teacher", "int8", lang, 0.21, [0.16, 0.26]),
            _row("ct2:distilwhisper-cs-ts", "int8", lang, 0.9, [0.8, 1.0]) if lang == "ca" else _row("x", "int8", "fi", 1, [1, 1]),
            _row("student-clsr", "float32", lang, 0.32, [0.2, 0.4], group="gender=female"),
        ]  # fmt: skip
    return rows


def test_each_method_has_its_rate_and_paired_intervals_against_the_main_student_and_the_teacher():
    lines, summary = comparison_section(_rows(0.08), ["cs", "ca"], "distilwhisper", "ct2:teacher")
    text = "\n".join(lines)
    assert "| cs | float32 | clsr | 5 | 32.0 [27.0, 37.0] | +2.0 [-6.0, +10.0] | +10.0 [+5.0, +15.0] |" in text
    assert "| cs | float32 | teacher | 5 | 20.0 [15.0, 25.0] | -10.0 [-15.0, -5.0] | - |" in text
    assert "| cs | int8 | distilwhisper | 5 | 31.0 [26.0, 36.0] | - | - |" in text
    # an export of another language, a non-target language and gender rows are not in it
    assert "cs-ts" not in text and "| fi |" not in text and text.count("| cs | float32 | clsr |") == 1
    assert summary["test/cs/float32"] == {
        "teacher": 0.2,
        "untrained": 0.5,
        "distilwhisper": 0.3,
        "clsr": 0.32,
        "kd": 0.25,
    }
    assert summary["test/ca/int8"] == {"distilwhisper": 0.31, "teacher": 0.21}
    # rows in a fixed order: teacher, untrained, then the methods by name
    cs = [line.split(" | ")[2] for line in lines if line.startswith("| cs | float32 |")]
    assert cs == ["teacher", "untrained", "clsr", "distilwhisper", "kd"]
    assert (
        "- cs: ±8.0 points over 5 utterances; **too few utterances for ±5 points**: a 1/sqrt(n) projection asks for about 13"
        in text
    )


def test_narrow_intervals_meet_the_goal_and_a_lone_student_says_it_has_no_second():
    text = "\n".join(comparison_section(_rows(0.04), ["cs"], "distilwhisper", "ct2:teacher")[0])
    assert "- cs: ±4.0 points over 5 utterances; within the ±5-point goal" in text
    lone = [_row("student-distilwhisper", "float32", "cs", 0.3, [0.2, 0.4])]
    assert "No second student on test" in "\n".join(comparison_section(lone, ["cs"], "distilwhisper", "ct2:teacher")[0])
    assert comparison_section([], ["cs"], "distilwhisper", "ct2:teacher")[0] == [
        "No student was benchmarked on a target language."
    ]


def test_labels_name_the_method_whatever_the_engine():
    assert [label(m, "ca") for m in ("student-clsr", "ct2:clsr-ca", "ct2:teacher", "teacher", "student-untrained")] == [
        "clsr", "clsr", "teacher", "teacher", "untrained"
    ]  # fmt: skip
