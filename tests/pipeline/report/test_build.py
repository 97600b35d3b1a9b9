"""report and report_plots on hand-made benchmark rows: what the plots draw, the captions, the gender table."""

from __future__ import annotations

import json

import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_rgba
from matplotlib.markers import MarkerStyle
from matplotlib.patches import Rectangle

from pipeline.core.languages import whisper_training_hours
from pipeline.report.bias import gender_table
from pipeline.report.build import ReportConfig, make_report
from pipeline.report.plots import (
    INTERVAL,
    TARGET_SHADE,
    plot_style,
    quantization_vs_hours,
    speed_vs_wer,
    wer_per_language,
)

TARGETS = ["cs"]


def _row(model: str, ctype: str, lang: str, rate: float, ci: list[float], group: str = "all", **extra) -> dict:
    """A benchmark row over 100 reference words, 10 s of audio decoded in 1 s (RTFx 10) unless told."""
    row = {
        "model": model,
        "compute_type": ctype,
        "effective_compute_type": ctype,
        "language": lang,
        "dataset": "test",
        "group": group,
        "n_utterances": 5,
        "ref_units": 100,
        "metric": "wer",
        "error_rate": rate,
        "hits": 100 - round(100 * rate),
        "substitutions": round(100 * rate),
        "deletions": 0,
        "insertions": 0,
        "ci95": ci,
        "audio_seconds": 10.0,
        "decode_seconds": 1.0,
        "rtfx": 10.0,
        "peak_rss_mb": 100.0,
        "model_size_mb": 50.0,
    }
    return row | extra


def _quantized(model: str, lang: str, rate: float, ci: list[float], reference: float, delta_ci: list[float]) -> dict:
    """An int8 row paired with its float32 reference, as the benchmark writes it."""
    delta = round(rate - reference, 4)
    return _row(model, "int8", lang, rate, ci, reference_error_rate=reference, delta=delta, delta_ci95=delta_ci)


@pytest.fixture
def rows() -> list[dict]:
    """The teacher and an export (float32 and int8) and an untimed PyTorch student; the export on cs only."""
    untimed = {"decode_seconds": None, "rtfx": None}
    return [
        _row("ct2:teacher", "float32", "en", 0.10, [0.05, 0.15], substitutions=5, insertions=5),
        _row(
            "ct2:teacher",
            "float32",
            "cs",
            0.20,
            [0.10, 0.30],
            ref_units=300,
            substitutions=60,
            audio_seconds=30.0,
            decode_seconds=2.0,
            rtfx=15.0,
        ),  # fmt: skip
        _quantized("ct2:teacher", "en", 0.12, [0.06, 0.18], 0.10, [-0.01, 0.05]),
        _quantized("ct2:teacher", "cs", 0.25, [0.15, 0.35], 0.20, [0.01, 0.09]),
        _row("ct2:distilwhisper-cs", "float32", "cs", 0.15, [0.08, 0.22]),
        _quantized("ct2:distilwhisper-cs", "cs", 0.16, [0.09, 0.23], 0.15, [-0.02, 0.04]),
        _row("student-distilwhisper", "float32", "en", 0.11, [0.05, 0.17], **untimed),
        _row("student-distilwhisper", "float32", "cs", 0.14, [0.07, 0.21], **untimed),
    ]


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def _interval_segments(ax) -> list[list[tuple[float, float]]]:
    lines = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_gid() == INTERVAL]
    return [[tuple(round(float(v), 6) for v in point) for point in seg] for c in lines for seg in c.get_segments()]


def _bars(ax) -> dict[str, list]:
    return {c.get_label(): list(c) for c in ax.containers}


def _shaded(ax) -> list[tuple[float, float]]:
    return [
        (round(p.get_x(), 6), round(p.get_x() + p.get_width(), 6))
        for p in ax.patches
        if isinstance(p, Rectangle) and p.get_facecolor() == to_rgba(TARGET_SHADE)
    ]


def test_each_model_has_its_own_colour_and_each_type_its_own_hatch(rows):
    style = plot_style(rows, TARGETS)
    fig = wer_per_language(rows, style).figure
    texts = _legend_texts(fig)
    models = ["ct2:distilwhisper-cs", "ct2:teacher", "student-distilwhisper"]
    assert all(name in texts for name in models + ["float32", "int8", "target language"])
    assert len({style.colours[m] for m in models}) == 3
    assert style.hatches["float32"] != style.hatches["int8"]
    for label, patches in _bars(fig.axes[0]).items():
        model, ctype = label.split()
        assert all(p.get_facecolor() == to_rgba(style.colours[model]) for p in patches), label
        assert all((p.get_hatch() or "") == style.hatches[ctype] for p in patches), label


def test_bars_draw_each_rows_interval_and_skip_languages_not_decoded(rows):
    ax = wer_per_language(rows, plot_style(rows, TARGETS)).figure.axes[0]
    bars = _bars(ax)
    # en (most hours) at x = 0, cs at x = 1; cs has five runs side by side, 0.8 / 5 = 0.16 apart, and
    # ct2:teacher float32 is the third: x = 1.0, error bar 10 % to 30 %.
    (teacher_cs,) = [p for p in bars["ct2:teacher float32"] if p.get_x() > 0.5]
    assert teacher_cs.get_x() + teacher_cs.get_width() / 2 == pytest.approx(1.0)
    assert [(1.0, 10.0), (1.0, 30.0)] in _interval_segments(ax)
    assert len(bars["ct2:distilwhisper-cs float32"]) == 1  # not decoded on en: no bar there (not a zero bar)
    assert len(_interval_segments(ax)) == len(rows)
    assert _shaded(ax) == [(0.55, 1.45)]  # cs only


def test_quantization_plot_draws_paired_intervals_in_model_colours(rows):
    style = plot_style(rows, TARGETS)
    deltas = [r for r in rows if "delta" in r]
    plot = quantization_vs_hours(deltas, style)
    ax = plot.figure.axes[0]
    segments = _interval_segments(ax)
    assert len(segments) == 3
    assert sorted((seg[0][1], seg[1][1]) for seg in segments) == [(-2.0, 4.0), (-1.0, 5.0), (1.0, 9.0)]
    dots = {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}
    assert set(dots) == {"ct2:teacher int8", "ct2:distilwhisper-cs int8"}
    for label, dots_of_run in dots.items():
        assert tuple(dots_of_run.get_facecolor()[0]) == to_rgba(style.colours[label.split()[0]]), label
    assert {"ct2:teacher", "ct2:distilwhisper-cs", "int8"} <= set(_legend_texts(plot.figure))
    assert [(round(192 / 1.3, 4), round(192 * 1.3, 4))] == [(round(a, 4), round(b, 4)) for a, b in _shaded(ax)]
    assert "95 % paired bootstrap interval" in plot.caption


def test_speed_plot_pools_each_timed_run_in_the_same_colours_and_markers(rows):
    style = plot_style(rows, TARGETS)
    plot = speed_vs_wer(rows, style)
    dots = {c.get_label(): c for c in plot.figure.axes[0].collections if isinstance(c, PathCollection)}
    assert "student-distilwhisper float32" not in dots  # untimed
    # ct2:teacher float32: (5 + 5 + 60) errors / (100 + 300) words = 17.5 % (the mean of 10 % and 20 % would be
    # 15 %); (10 + 30) s of audio / (1 + 2) s of decoding = RTFx 13.33
    assert tuple(dots["ct2:teacher float32"].get_offsets()[0]) == pytest.approx((40 / 3, 17.5))
    for label, dot in dots.items():
        model, ctype = label.split()
        marker = MarkerStyle(style.markers[ctype])
        expected = marker.get_path().transformed(marker.get_transform()).vertices
        assert dot.get_paths()[0].vertices == pytest.approx(expected), label
        assert tuple(dot.get_facecolor()[0]) == to_rgba(style.colours[model]), label
    assert "No interval" in plot.caption


def test_report_md_has_a_caption_under_each_plot(rows, tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "metrics.json").write_text(json.dumps({"rows": rows, "target_languages": TARGETS}))
    headline = tmp_path / "metrics" / "compare.json"
    make_report(
        ReportConfig(bench=tmp_path / "bench", out_dir=tmp_path / "report", teacher="ct2:teacher", headline=headline)
    )
    cells = json.loads(headline.read_text())  # the comparison's cells, for dvc exp show
    assert cells == json.loads((tmp_path / "report" / "summary.json").read_text())["compare"] and cells
    lines = (tmp_path / "report" / "report.md").read_text().splitlines()
    for name in (
        "students_compared.png",
        "wer_per_language.png",
        "quantization_delta_vs_hours.png",
        "speed_vs_wer.png",
    ):
        at = lines.index(f"![{name}]({name})")
        assert lines[at + 2].startswith("*") and len(lines[at + 2]) > 80, name
        assert (tmp_path / "report" / name).stat().st_size > 1000
    caption = lines[lines.index("![wer_per_language.png](wer_per_language.png)") + 2]
    assert "95 % bootstrap interval over utterances" in caption and "target languages (cs)" in caption


def test_gender_table_compares_female_and_male_and_says_when_one_is_missing():
    rows = [
        _row("ct2:teacher", "float32", "cs", 0.20, [0.10, 0.30]),
        _row("ct2:teacher", "float32", "cs", 0.25, [0.15, 0.35], group="gender=female"),
        _row("ct2:teacher", "float32", "cs", 0.15, [0.05, 0.25], group="gender=male"),
        _row("ct2:teacher", "float32", "cs", 0.40, [0.20, 0.60], group="age=child"),
        _row("ct2:teacher", "float32", "fi", 0.30, [0.20, 0.40]),
        _row("ct2:teacher", "float32", "fi", 0.30, [0.20, 0.40], group="gender=female"),
    ]
    lines = gender_table(rows)
    (cs,) = [line for line in lines if "| cs |" in line]
    assert "| 25.0 [15.0, 35.0] (n=5) | 15.0 [5.0, 25.0] (n=5) | +10.0 |" in cs
    assert "age=child: 40.0 [20.0, 60.0] (n=5)" in cs
    (fi,) = [line for line in lines if "| fi |" in line]
    assert "| 30.0 [20.0, 40.0] (n=5) | - | - | only female voices |" in fi


def test_gender_table_without_gender_labels_says_so():
    rows = [
        _row("ct2:teacher", "float32", "cs", 0.2, [0.1, 0.3]),
        _row("ct2:teacher", "float32", "cs", 0.2, [0.1, 0.3], group="gender=unknown"),
    ]
    assert gender_table(rows) == ["No utterance is labelled female or male: no gaps to show."]


def test_voice_table_says_which_tests_hold_unseen_voices_and_both_genders(tmp_path):
    from pipeline.report.bias import voice_table

    design = {
        "cs": {
            "voices": {"train": ["festival:a", "festival:b"], "test": ["festival:b", "festival:c"]},
            "genders": ["female", "male"],
            "tests": {"test": {"genders": ["female", "male"], "unseen_voices": ["festival:c"]}},
        },
        "ca": {
            "voices": {"train": ["festival:o"], "test": ["festival:o"]},
            "genders": ["female"],
            "tests": {"test": {"genders": ["female"], "unseen_voices": []}},
        },
    }
    (tmp_path / "summary.json").write_text(json.dumps({"voices": design}))
    lines = voice_table(tmp_path, ["ca", "cs"])
    assert lines[2] == "| ca | festival:o | festival:o | none | female (female) |"
    assert (
        lines[3]
        == "| cs | festival:a, festival:b | festival:b, festival:c | festival:c | female, male (female, male) |"
    )
    assert voice_table(None, ["cs"]) == ["No prepare_data summary given (report.prepared): voices not listed."]


def _translated(model: str, ctype: str, lang: str, chrf: float, bleu: float, **deltas) -> list[dict]:
    """A translate run's chrF and BLEU rows as the benchmark writes them (intervals +-5 around each score)."""
    base = {"model": model, "compute_type": ctype, "language": lang, "dataset": "translate", "group": "all"}
    return [
        base | {"task": "translate", "metric": "chrf", "score": chrf, "ci95": [chrf - 5, chrf + 5]} | deltas,
        base | {"task": "translate", "metric": "bleu", "score": bleu, "ci95": [bleu - 5, bleu + 5]},
    ]


def test_translation_section_shows_scores_paired_differences_retention_and_its_plot(rows, tmp_path):
    translation = (
        _translated("ct2:teacher", "float32", "cs", 40.0, 10.0)
        + _translated("ct2:teacher", "float32", "it", 60.0, 25.0)
        + _translated("student-untrained", "float32", "cs", 38.0, 9.0, teacher_delta=-2.0, teacher_delta_ci95=[-4, 0])
        + _translated(
            "student-distilwhisper", "float32", "cs", 30.0, 5.0, teacher_delta=-10.0, teacher_delta_ci95=[-14, -6],
            untrained_delta=-8.0, untrained_delta_ci95=[-12, -4],
        )
    )  # fmt: skip
    (tmp_path / "bench").mkdir()
    metrics = {"rows": rows, "target_languages": TARGETS, "translation": translation}
    (tmp_path / "bench" / "metrics.json").write_text(json.dumps(metrics))
    make_report(ReportConfig(bench=tmp_path / "bench", out_dir=tmp_path / "report", teacher="ct2:teacher"))
    text = (tmp_path / "report" / "report.md").read_text()
    section = text[text.index("## Translation retention") :]
    lines = [x for x in section.splitlines() if x.startswith("| translate |")]
    assert [x.split(" | ")[1:4] for x in lines[:4]] == [
        ["it", "n/a" if "it" not in whisper_training_hours() else str(whisper_training_hours()["it"]), "ct2:teacher"],
        ["cs (target)", str(whisper_training_hours()["cs"]), "ct2:teacher"],
        ["cs (target)", str(whisper_training_hours()["cs"]), "student-distilwhisper"],
        ["cs (target)", str(whisper_training_hours()["cs"]), "student-untrained"],
    ]
    distil = lines[2]
    assert "30.0 [25.0, 35.0]" in distil and "-10.0 [-14.0, -6.0]" in distil and "-8.0 [-12.0, -4.0]" in distil
    assert distil.endswith("| 75 % |")  # 30 / 40
    assert "set_language_task" in section  # how students route the translate task, with the official code's
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["translation"]["translate/cs/student-distilwhisper/float32"]["retention"] == 0.75
    lines = text.splitlines()
    at = lines.index("![translation_per_language.png](translation_per_language.png)")
    assert "chrF" in lines[at + 2] and (tmp_path / "report" / "translation_per_language.png").stat().st_size > 1000


def test_longform_table_lists_error_start_error_loops_and_empties(tmp_path):
    from pipeline.report.longform import longform_metrics, longform_table

    assert "not set" in longform_table(longform_metrics(None))[0]
    row = {"model": "ct2:teacher", "compute_type": "int8", "language": "cs", "setting": "default", "audio_seconds": 118.4,
           "error_rate": 0.5, "insertions": 7, "start_error_mean_s": 1.234, "start_error_median_s": 0.5,
           "stretches": 4, "loop_stretches": 1, "empty_stretches": 2, "rtfx": 9.5}  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps({"rows": [row], "loop_ratio": 2.4}))
    lines = longform_table(longform_metrics(tmp_path))
    assert lines[-1] == "| cs | default | ct2:teacher | int8 | 118 | 50.0 (7) | 1.23 / 0.50 | 1/4 | 2/4 | 9.5 |"
    assert "2.4" in lines[0]


def test_longform_plot_draws_each_students_bars_in_one_colour_with_loops_and_empties():
    from pipeline.report.plots import longform_per_language

    def row(model, lang, setting, rate, loops):
        return {"model": model, "compute_type": "int8", "language": lang, "setting": setting, "error_rate": rate,
                "loop_stretches": loops, "empty_stretches": 0, "stretches": 3}  # fmt: skip

    rows = [row("ct2:teacher", lang, s, 0.3, 0) for lang in ("cs", "fi") for s in ("default", "greedy")]
    rows += [
        row(f"ct2:distilwhisper-ts-{lang}", lang, s, 0.5, 1) for lang in ("cs", "fi") for s in ("default", "greedy")
    ]
    plot = longform_per_language(rows)
    ax = plot.figure.axes[0]
    assert [t.get_text() for t in ax.texts] == ["1L 0E", "1L 0E", "0L 0E", "0L 0E"]  # runs sorted: students, teacher
    assert sorted(_legend_texts(plot.figure))[:2] == ["ct2:distilwhisper-ts", "ct2:teacher"]
    assert len(plot.figure.axes) == 2 and "-ts" in plot.caption
