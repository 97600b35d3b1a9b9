"""The bench programs' rendered tables, from small hand-made result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.report import tables_results_bench as b
from pipeline.report.docs import CURRENT

ROOT = Path(__file__).resolve().parents[3]


def setting(name: str, ctype: str, threads: int, batch: int, seconds: float, same: bool = True) -> dict:
    return {"setting": name, "compute_type": ctype, "threads": threads, "batch": batch,
            "seconds_per_utterance": seconds, "same_ids": same}  # fmt: skip


def test_settings_table_gives_ratios_to_the_default_on_every_core():
    rows = [setting("default", c, 2, 1, s) for c, s in (("float32", 1.0), ("int8_float32", 0.5), ("int8", 0.4))]
    rows += [setting("default", c, 1, 1, s) for c, s in (("float32", 1.8), ("int8_float32", 0.75), ("int8", 0.6))]
    rows += [setting("AVX512", c, 2, 1, s) for c, s in (("float32", 1.1), ("int8_float32", 0.45), ("int8", 0.38))]
    rows += [setting("AVX512", "int8", 2, 8, 0.37, same=False)]  # a batch of 8 changed an id: the setting changes ids
    result = {"ct2_settings": rows, "ct2_choice": {"reason": "default with 2 threads"}}
    assert b.rtfx_settings(result) == [
        "| setting | float32 | int8_float32 | int8 | ids as the default |",
        "| --- | ---: | ---: | ---: | --- |",
        "| default, 2 threads | 1.000 | 0.500 | 0.400 | - |",
        "| default, 1 thread | 1.800 (1.80) | 0.750 (1.50) | 0.600 (1.50) | yes |",
        "| AVX512, 2 threads | 1.100 (1.10) | 0.450 (0.90) | 0.380 (0.95) | changed: int8 |",
        "",
        "The pipeline picks: default with 2 threads.",
    ]


def test_encoder_share_is_the_encoder_over_the_whole_decode():
    engines = {
        "transformers float32": {"seconds_per_utterance": 2.0},
        "ctranslate2 int8": {"seconds_per_utterance": 0.8},
    }
    result = {
        "engines": engines,
        "encoder_seconds_per_utterance": {"transformers float32": 0.5, "ctranslate2 int8": 0.6},
    }
    assert b.rtfx_encoder(result)[2:] == [
        "| transformers float32 | 0.500 | 2.000 | 25 % |",
        "| ctranslate2 int8 | 0.600 | 0.800 | 75 % |",
    ]


def cache_row(k: int, min_prob: float, mass: float, encoding: str, size: float, close: bool) -> dict:
    return {"k": k, "min_prob": min_prob, "mass": mass, "encoding": encoding, "bytes_per_token": size,
            "entries": 11.25, "js_renorm": 0.016805, "js_ghost": 0.01886, "at_least_top16_float16": close}  # fmt: skip


def test_cache_size_marks_the_smallest_row_at_top16_float16_fidelity():
    best = cache_row(24, 0.0012, 0.0, "delta/sqrt64", 32.62, True)
    result = {
        "rows": [
            cache_row(16, 0.0, 0.0, "raw/float16", 54.08, True),
            best,
            cache_row(4, 0.0, 0.0, "rank/q8", 9, False),
        ],
        "smallest_at_the_bar": best,
        "utterances": 48,
        "label_tokens": 1221,
        "default_build_bytes_per_token": 33.59,
    }
    assert b.cache_size(result)[2:] == [
        "| top-16 | raw/float16 | 54.1 | 11.2 | 0.01681 | 0.01886 | yes |",  # top-4 is not one of the picked rows
        "| **p >= 0.0012 (at most 24)** | **delta/sqrt64** | **32.6** | 11.2 | 0.01681 | 0.01886 | yes |",
        "",
        "48 dev utterances, 1221 label tokens; bytes include cache.json and the card. The whole folder built at the "
        "defaults: 33.59 bytes per label token.",
    ]


def test_gpu_paths_leaves_out_a_section_that_failed():
    result = {
        "gpu": "NVIDIA H200",
        "cache_agreement": {"error": "RuntimeError: CUDA out of memory"},
        "train_student": {"steps": 12, "seconds": 27.37, "dev_history": [2.5, 1.0, 1.0], "reloaded_parameters": 585e6},
    }
    assert b.gpu_paths(result) == [
        "| what | NVIDIA H200 |",
        "| --- | --- |",
        "| `train_student`, 12 steps and 3 dev evaluations | 27.4 s; the student (585 M parameters) loads back |",
    ]


def test_train_step():
    steps = {
        "distilwhisper_from_cache": {"seconds": 2.363, "ratio_to_no_kd": 1.088, "peak_rss_mb": 2272.9},
        "same_step_without_kd": {"seconds": 2.172, "ratio_to_no_kd": 1.0, "peak_rss_mb": 2217.9},
    }
    assert b.train_step({"steps": steps, "batch_size": 16, "label_tokens": 451}) == [
        "| step | s per step | x no KD | peak RSS MB |",
        "| --- | ---: | ---: | ---: |",
        "| distilwhisper from cache | 2.363 | 1.09 | 2273 |",
        "| same step without kd | 2.172 | 1.00 | 2218 |",
        "",
        "Batch of 16 utterances, 451 label tokens.",
    ]


@pytest.mark.parametrize("name", sorted(b.TABLES))
def test_every_bench_table_renders_from_its_committed_file(name):
    """The committed bench/results files carry provenance and fit their renderer (``dw-pipe docs`` would fail)."""
    table = b.TABLES[name]
    result = json.loads((ROOT / table.result).read_text(encoding="utf-8"))
    assert {"command", "code", "date", "data"} <= set(result["provenance"])
    lines = table.render(result)
    assert lines[-1].startswith(f"Made by `{result['provenance']['command']}` at commit ")


def test_only_the_cache_size_claims_a_cache_format():
    assert {name: dict(t.claims) for name, t in b.TABLES.items() if t.claims} == {
        "bench-cache-size": {"cache_format": CURRENT}
    }
