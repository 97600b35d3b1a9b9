"""The default run's rendered tables, checked line by line against numbers worked out from the fixture run."""

from __future__ import annotations

import pytest

from pipeline.report import tables_results as t
from pipeline.report.record_run import run_record
from tests.pipeline.report.run_fixture import write_run


@pytest.fixture()
def run(tmp_path) -> dict:
    data = write_run(tmp_path / "run")
    record = run_record(data, data.parent / "logs", data.parent / "params.yaml")
    record["machine"] = {"cpu": "AMD EPYC", "cpu_id": "25/17/1", "cores": 2}  # not this test machine's
    return record


def test_headline(run):
    assert t.headline(run) == [
        "| test set | language | utterances | distilwhisper | untrained student | clsr-only | teacher |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        "| test | ca (WER) | 2 | 30.0 (1) | 50.0 (3) | 40.0 (2) | 25.0 (1) |",
        "| test_ood | ca (WER) | 2 | 60.0 (0) | 70.0 (4) | 50.0 (0) | 45.0 (2) |",
    ]


def test_bars(run):
    # test: 1 - 30/50 = 40 % >= 25 %, 30 < 40, 30 <= 25 + 10; test_ood: 1 - 60/70 = 14 %, 60 > 50, 60 > 45 + 10
    assert t.bars(run) == [
        "On this run the distilled student is at least 25 % below the untrained student in 1 of 2 target cells, "
        "below the CLSR-only student in 1 of 2, and at most 10 points above the teacher in 1 of 2."
    ]


def test_targets_puts_the_compared_models_first_and_one_row_per_export(run):
    assert t.targets(run) == [
        "| model | type | test ca | test_ood ca |",
        "| --- | --- | ---: | ---: |",
        "| student-distilwhisper | float32 | 30.0 (1) | 60.0 (0) |",
        "| student-untrained | float32 | 50.0 (3) | 70.0 (4) |",
        "| student-clsr | float32 | 40.0 (2) | 50.0 (0) |",
        "| ct2:teacher | float32 | 25.0 (1) | 45.0 (2) |",
        "| ct2:distilwhisper-* | int8 | 35.0 (2) | - |",
        "| ct2:teacher | int8 | 30.0 (1) | - |",
    ]


def test_others_marks_hypotheses_copied_from_the_untrained_student(run):
    assert t.others(run) == [
        "| test set | language | student-distilwhisper float32 | student-untrained float32 | ct2:teacher float32 |",
        "| --- | --- | ---: | ---: | ---: |",
        "| test | de | 100.0 (5) = | 100.0 (5) | 90.0 (0) |",
    ]


def test_units_orders_by_whisper_hours(run):
    assert t.units(run)[2:] == [
        "| test | de | WER | 2 | 10 |",  # German has more Whisper hours than Catalan
        "| test | ca (target) | WER | 2 | 10 |",
        "| test_ood | ca (target) | WER | 2 | 10 |",
    ]


def test_int8(run):
    assert t.int8(run)[2:] == ["| ca | test | ct2:teacher | int8 | 25.0 | 30.0 | +5.0 [-1.0, +10.0] |"]


def test_caps(run):
    assert t.caps(run) == [
        "| test set | language | model | type | at 64 | at 224 |",
        "| --- | --- | --- | --- | ---: | ---: |",
        "| test | ca | ct2:teacher | float32 | 25.0 (0) | 60.0 (1) |",
    ]


def test_translation(run):
    assert t.translation(run) == [
        "| language | student-distilwhisper float32 | ct2:teacher float32 | distilwhisper vs teacher | vs untrained |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| ca | 30.5 | 40.0 | -9.5 [-12.0, -7.2] | +12.0 [+8.0, +16.0] |",
    ]


def test_longform(run):
    assert t.longform(run)[2:] == ["| ca | greedy | ct2:teacher | 30.7 (12) | 0.42 / 0.47 | 0/3 | 1/3 | 15.1 |"]


def test_data(run):
    assert t.data(run) == [
        "| split | utterances | hours |",
        "| --- | ---: | ---: |",
        "| train | 9 | 0.50 |",
        "",
        "prepare_data read 10 items, kept 9, rejected 1.",
        "",
        "Teacher cache `whisper-base`: 360 rows, 8000 label tokens, 200000 bytes of shards (25.0 per label token); "
        "format 3, at most 24 entries of probability >= 0.0012, delta/sqrt64.",
    ]


def test_stages_and_the_readme_time_line(run):
    assert t.stages(run) == [
        "| stage | seconds |",
        "| --- | ---: |",
        "| import_models | 600.0 |",
        "| prepare_data | 1200.0 |",
        "| **sum** | **1800.0** (30.0 min) |",
        "",
        "From the first stage's start to the last one's end: 1900 s (31.7 min); AMD EPYC (25/17/1), 2 cores.",
    ]
    assert t.time_line(run) == [
        "Measured: the stages of `make repro` took **30 min** in all (1800 s, the sum of the stage times) on 2 cores of an AMD EPYC, "
        "1970-01-01 (stages: [performance.md](docs/performance.md))."
    ]
    run["note"] = "Other work shared the machine."
    assert t.time_line(run)[0].endswith(
        "(stages: [performance.md](docs/performance.md)). Other work shared the machine."
    )


def test_every_table_ends_with_where_it_came_from(run):
    run["provenance"] |= {"code": "abc1234", "date": "2026-12-06"}
    lines = t.TABLES["run-int8"].render(run)
    assert lines[-2:] == [
        "",
        f"Made by `make repro` at commit `abc1234` (2026-12-06), `docs/results/default-run.json`: corpus "
        f"`{run['provenance']['data']['corpus']}`; params.yaml `{run['provenance']['data']['params']}`; outputs bench "
        "`None`, longform `None`; teacher cache format 3; cache whisper-base `0123456789abcdef`.",
    ]


def test_a_named_corpus_is_shown_with_its_digest():
    data = {"corpus": "params:75e193e9bbdd", "corpus_name": "Festival ca/cs/fi", "cache_format": 1, "language": "cs"}
    assert t._describe(data) == "Festival ca/cs/fi (`params:75e193e9bbdd`); teacher cache format 1; language: cs"


def test_a_run_without_translate_set_or_longform_says_so(run):
    run["translation"], run["longform"] = [], []
    assert t.translation(run) == ["This run has no translate set (benchmark.translate is empty)."]
    assert t.longform(run) == ["This run has no long-form recordings (no longform stage)."]


def test_the_default_run_tables_claim_today_s_corpus_cache_format_settings_and_outputs():
    assert {name: table.claims for name, table in t.TABLES.items()} == {
        name: {"corpus": t.CURRENT, "cache_format": t.CURRENT, "params": t.CURRENT, "outputs": t.CURRENT}
        for name in t.TABLES
    }
    assert {table.result for table in t.TABLES.values()} == {"docs/results/default-run.json"}


def test_a_recording_without_segments_has_no_start_error(run):
    run["longform"][0] |= {"start_error_mean_s": None}
    del run["longform"][0]["start_error_median_s"]  # record-run leaves out what the stage wrote as null
    assert t.longform(run)[2:] == ["| ca | greedy | ct2:teacher | 30.7 (12) | - / - | 0/3 | 1/3 | 15.1 |"]
