"""bench/quant_sizes.py end to end on the tiny profile: two kd student sizes and the teacher, float32 and int8,
then distilwhisper mode, where the size the params name is the DAG's own student (slow: minutes on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from tiny_repro import prepare, run  # noqa: E402

pytestmark = pytest.mark.slow


def _sizes(tmp_path, *args: str) -> dict:
    cmd = [sys.executable, "bench/quant_sizes.py", *args]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / args[args.index("--out") + 1]).read_text())
    # the by-size table: a row per (set, language), a column per model and quantized type, largest first
    rows = [line for line in done.stdout.splitlines() if line.startswith("| test")]
    pivot = [line for line in rows if line.count("|") == 3 + len({t["model"] for t in report["table"]})]
    assert len(pivot) == len({(t["dataset"], t["language"]) for t in report["table"]})
    return report


def test_two_sizes_and_the_teacher_at_float32_and_int8(tmp_path):
    prepare(tmp_path)
    run(["dvc", "repro", "train_student"], tmp_path)
    report = _sizes(tmp_path, "--sizes", "0,1", "1", "--steps", "4", "--out", "out/sizes.json")
    assert (tmp_path / "out/sizes.png").stat().st_size > 0
    students = {len(s["layers"]): s for s in report["students"]}
    assert report["mode"] == "kd" and all(s["trained"] and s["steps"] == 4 for s in students.values())
    assert students[2]["folder"] == "data/quant-sizes/kd-decoder2/student"
    table = report["table"]
    cells = {(t["dataset"], t["language"], t["model"], t["decoder_layers"]) for t in table}
    models = {("ct2:kd-decoder2", 2), ("ct2:kd-decoder1", 1), ("ct2:teacher", 2)}
    assert cells == {(d, lang, m, n) for d in ("test", "test_ood") for lang in ("pl", "cs") for m, n in models}
    for t in table:
        assert t["compute_type"] == "int8"
        assert t["cost"] == pytest.approx(t["quantized"] - t["float32"], abs=2e-4)
        assert t["cost_ci95"][0] <= t["cost"] <= t["cost_ci95"][1]
    sizes = {t["model"]: t["model_size_mb_float32"] for t in table}
    assert sizes["ct2:kd-decoder1"] < sizes["ct2:kd-decoder2"]

    # distilwhisper mode: the size the params name is the DAG's own student, exported per language; with
    # --all-languages the teacher is scored on de (no target) too, an export only on its own language
    again = _sizes(tmp_path, "--mode", "distilwhisper", "--sizes", "0,1", "--all-languages", "--out", "out/dw.json")
    assert again["students"][0]["folder"] == "data/students/distilwhisper" and not again["students"][0]["trained"]
    by_model = {}
    for t in again["table"]:
        if t["dataset"] == "test":
            by_model.setdefault(t["model"], set()).add(t["language"])
    assert by_model == {"ct2:distilwhisper-decoder2": {"pl", "cs"}, "ct2:teacher": {"pl", "cs", "de"}}
    assert again["languages_by_whisper_hours"] == ["de", "pl", "cs"]
