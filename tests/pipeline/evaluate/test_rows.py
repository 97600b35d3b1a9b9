"""Scoring a run into rows: the paired comparison with other runs (the paper's comparison) has its sign and scope."""

from __future__ import annotations

from dataclasses import replace

from pipeline.data.manifest import Utterance
from pipeline.evaluate.rows import score_rows
from pipeline.evaluate.runs import Run

TEXTS = ["one two three four", "five six seven eight", "nine ten eleven twelve", "a b c d"]


def _utts() -> list[Utterance]:
    return [Utterance(f"u{i}", f"u{i}.wav", t, "pl", 2.0, "test", "s", gender="f") for i, t in enumerate(TEXTS)]


def _run(model: str, hyps: list[str], utts: list[Utterance] | None = None) -> Run:
    return Run(model, "float32", "float32", utts or _utts(), hyps, 1.0, 10.0, 1.0)


def test_vs_holds_the_other_runs_rate_and_this_run_minus_it():
    perfect = _run("teacher", list(TEXTS))
    worse = _run("student-kd", ["one two", "five six seven eight", "nine", "a b c d"])  # 5 of 16 words lost
    rows, _ = score_rows(worse, "test", None, 200, 0, versus={"teacher": perfect})
    row = next(r for r in rows if r["group"] == "all")
    vs = row["vs"]["teacher"]
    assert vs["model"] == "teacher|float32" and vs["error_rate"] == 0.0
    assert row["error_rate"] == 0.3125 and vs["delta"] == 0.3125  # this run's rate minus the other's: worse is > 0
    assert 0 <= vs["delta_ci95"][0] < vs["delta"] < vs["delta_ci95"][1]
    rows, _ = score_rows(perfect, "test", None, 200, 0, versus={"student-kd": worse})
    back = next(r for r in rows if r["group"] == "all")["vs"]["student-kd"]
    assert back["delta"] == -0.3125 and back["delta_ci95"][0] < back["delta"] < back["delta_ci95"][1] <= 0


def test_a_run_that_did_not_decode_every_utterance_is_not_compared():
    partial = _run("teacher", list(TEXTS[:3]), _utts()[:3])
    rows, _ = score_rows(_run("student-kd", list(TEXTS)), "test", None, 50, 0, versus={"teacher": partial})
    assert next(r for r in rows if r["group"] == "all")["vs"] == {}


def test_an_export_for_every_language_meets_the_main_student_s_export_of_each_language():
    """finetune / lora / kd have one export for every language; the main student has one per language: the
    benchmark pairs the first, language by language, with the second (its rows' vs.distilwhisper)."""
    from types import SimpleNamespace

    from pipeline.evaluate.benchmark import _versus

    utts = [replace(u, language=lang) for u, lang in zip(_utts(), ["pl", "pl", "cs", "cs"])]
    by_lang = {lang: [u for u in utts if u.language == lang] for lang in ("pl", "cs")}
    runs = {
        ("ct2:distilwhisper-pl", "int8"): {"test": _ct2("ct2:distilwhisper-pl", ["x", "x"], by_lang["pl"])},
        ("ct2:distilwhisper-cs", "int8"): {"test": _ct2("ct2:distilwhisper-cs", list(TEXTS[2:]), by_lang["cs"])},
        ("ct2:teacher", "int8"): {"test": _ct2("ct2:teacher", list(TEXTS), utts)},
    }
    kd = _ct2("ct2:kd", list(TEXTS), utts)
    versus = _versus(SimpleNamespace(hf_teacher=False, compare_student="distilwhisper"), runs, kd, "test")
    assert set(versus) == {"distilwhisper", "teacher"}
    rows, _ = score_rows(kd, "test", None, 100, 0, versus=versus)
    by = {r["language"]: r["vs"] for r in rows if r["group"] == "all"}
    assert by["pl"]["distilwhisper"]["delta"] == -1.0 and by["cs"]["distilwhisper"]["delta"] == 0.0
    assert by["pl"]["teacher"]["delta"] == 0.0
    # one language's export missing: no pairing with a part of the main student
    del runs[("ct2:distilwhisper-cs", "int8")]
    assert set(_versus(SimpleNamespace(hf_teacher=False, compare_student="distilwhisper"), runs, kd, "test")) == {
        "teacher"
    }


def _ct2(model: str, hyps: list[str], utts: list[Utterance]) -> Run:
    return Run(model, "int8", "int8", utts, hyps, 1.0, 10.0, 1.0)
