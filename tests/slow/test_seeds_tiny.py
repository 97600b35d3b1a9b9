"""bench/seeds.py end to end on the tiny profile: two seeds, then a rerun that redoes nothing (slow: ~5 min on 2 cores).

The DAG is run up to train_student in a scratch copy (scripts/tiny_repro.py), so seed 0, the params' seed,
must take the DAG's students instead of training its own.
"""

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
TARGETS = {"pl", "cs"}
SEEDED = {"student-distilwhisper", "student-clsr", "ct2:distilwhisper", "ct2:clsr"}
FIXED = {"teacher", "student-untrained", "ct2:teacher"}


def seeds_run(work: Path) -> tuple[dict, str]:
    cmd = [sys.executable, "bench/seeds.py", "--seeds", "0", "1", "--out", "out/seeds.json"]
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((work / "out/seeds.json").read_text()), done.stderr


def test_two_seeds_then_a_rerun_that_reuses_everything(tmp_path):
    prepare(tmp_path)
    run(["dvc", "repro", "train_student"], tmp_path)
    report, log = seeds_run(tmp_path)

    students = report["students"]
    assert {m: s["folder"] for m, s in students["0"].items()} == {
        m: f"data/students/{m}" for m in ("distilwhisper", "clsr")
    }
    assert not any(s["trained"] for s in students["0"].values())
    assert all(s["trained"] for s in students["1"].values())
    assert "benchmarking seeds [0, 1] and the teacher and untrained student" in log

    rows = report["error_rates"]
    assert {r["language"] for r in rows} == TARGETS and {r["dataset"] for r in rows} == {"test", "test_ood"}
    assert {r["model"] for r in rows} == SEEDED | FIXED
    for r in rows:
        assert set(r["per_seed"]) == ({"0", "1"} if r["model"] in SEEDED else {"all"}), r
        assert r["min"] <= r["mean"] <= r["max"]
    kd = {(r["dataset"], r["language"], r["model"], r["compute_type"]) for r in report["kd_effect"]}
    engines = {("student-distilwhisper", "float32"), ("ct2:distilwhisper", "float32"), ("ct2:distilwhisper", "int8")}
    assert kd == {(d, lang, m, t) for d in ("test", "test_ood") for lang in TARGETS for m, t in engines}
    assert len(report["bars"]["cells"]) == 4 and report["bars"]["below_clsr_needed"] == 3
    assert set(report["made_from"]) == {"fixed", "seed0", "seed1"}

    again, log = seeds_run(tmp_path)
    assert "training utterances" not in log and "benchmarking" not in log and "exported" not in log, log[-3000:]
    for key in ("error_rates", "kd_effect", "bars", "made_from"):
        assert again[key] == report[key]
