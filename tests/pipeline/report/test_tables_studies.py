"""Retired studies' tables: each renders from its committed result file, claims its old data literally, adds right."""

from __future__ import annotations

from pathlib import Path

from pipeline.report.docs import CURRENT, current_identity, load_result
from pipeline.report.tables_studies import TABLES, gate_lr, quant_sizes

ROOT = Path(__file__).resolve().parents[3]

PROVENANCE = {"command": "python bench/x.py", "code": "abc1234", "date": "2026-11-28"}


def test_every_study_table_renders_from_its_committed_file_with_its_source_line():
    current = current_identity(ROOT)
    for name, table in TABLES.items():
        result = load_result(ROOT, name, table, current)  # raises when the file's data is not what the table claims
        lines = table.render(result)
        assert lines[-1].startswith(f"Made by `{result['provenance']['command']}` at commit"), name


def test_a_study_claims_the_data_it_was_measured_on_never_todays():
    for name, table in TABLES.items():
        assert CURRENT not in table.claims.values(), name
        assert {"corpus", "cache_format"} <= set(table.claims), name


def test_gate_table_means_are_over_the_seeds():
    run = lambda best, cs, opened: {  # noqa: E731
        "dev_error_rate_best": best,
        "dev_error_rate": {"cs": cs},
        "open_layers": {"cs": opened},
    }
    result = {
        "provenance": {**PROVENANCE, "data": {"corpus": "espeak-ng cs/bg/pl", "cache_format": 2, "cache": "q8"}},
        "languages": ["cs"],
        "variants": {"x30": {"runs": {"0": run(1.0, 0.9, 0.4), "1": run(1.1, 1.2, 0.8)}}},
    }
    lines = gate_lr(result)
    # (1.0 + 1.1) / 2 = 1.05 -> 105.0 %; cs (0.9 + 1.2) / 2 = 105.0 %; open (0.4 + 0.8) / 2 = 60 %
    assert "| x30 | **mean** | **105.0** | 105.0 | cs 60% |" in lines
    assert "- x30: mean dev 105.0 % over 2 seeds (seeds 100.0-110.0)" in lines
    assert lines[-1] == (
        "Made by `python bench/x.py` at commit `abc1234` (2026-11-28): espeak-ng cs/bg/pl; teacher cache format 2 (q8)."
    )


def test_quant_cell_reads_float32_to_int8_cost_and_interval_in_points():
    row = {
        "dataset": "test",
        "language": "ca",
        "model": "ct2:teacher",
        "decoder_layers": 6,
        "model_size_mb_float32": 295.43,
        "float32": 0.339,
        "quantized": 0.3439,
        "cost": 0.0049,
        "cost_ci95": [-0.0282, 0.035],
    }
    result = {
        "provenance": {**PROVENANCE, "data": {"corpus": "Festival ca/cs/fi", "cache_format": 3, "cache": "sqrt64"}},
        "table": [row],
        "languages_by_whisper_hours": ["ca"],
        "students": [],
    }
    lines = quant_sizes(result)
    assert lines[0] == "| set | language (Whisper h) | teacher, 6 decoder layers, 295 MB |"
    assert lines[2].startswith("| test | ca (") and lines[2].endswith("| 33.9 -> 34.4: +0.5 [-2.8, +3.5] |")
