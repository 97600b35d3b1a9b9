"""dw-pipe docs record-run: a finished run's outputs become one compact result file with provenance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.report.docs import DocsError, corpus_id
from pipeline.report.record_run import record_run
from tests.pipeline.report.run_fixture import PARAMS, write_run


@pytest.fixture()
def run(tmp_path) -> Path:
    return write_run(tmp_path / "run")


def _record(data: Path, out: Path) -> dict:
    return record_run(data, data.parent / "logs", data.parent / "params.yaml", out)


def test_the_record_keeps_the_cells_the_docs_show(run, tmp_path):
    lock = "stages:\n  benchmark:\n    outs:\n    - path: data/bench/metrics.json\n      md5: 00112233445566778899\n"
    (run.parent / "dvc.lock").write_text(lock)
    record = _record(run, tmp_path / "out" / "default-run.json")
    assert json.loads((tmp_path / "out" / "default-run.json").read_text()) == record
    assert record["provenance"]["command"] == "make repro"
    assert record["provenance"]["data"] == {
        "corpus": corpus_id(PARAMS["prepare_data"]),
        "params": corpus_id(PARAMS),
        "outputs": {"bench": "001122334455", "longform": None},  # as the run's dvc.lock records them
        "cache_format": 3,
        "cache": {"whisper-base": "0123456789abcdef"},
    }
    # 15 rows: the gender row and the cap=224 row are not "all" rows
    assert len(record["rows"]) == 13
    assert {(r["model"], r["dataset"]) for r in record["rows"] if r["language"] == "ca"} >= {("ct2:teacher", "test")}
    int8 = next(r for r in record["rows"] if r["compute_type"] == "int8" and r["model"] == "ct2:teacher")
    assert int8 == {
        "model": "ct2:teacher", "compute_type": "int8", "dataset": "test", "language": "ca", "n_utterances": 2,
        "ref_units": 10, "metric": "wer", "error_rate": 0.3, "insertions": 1, "max_new_tokens": 64, "capped": 0,
        "reference_error_rate": 0.25, "delta": 0.05, "delta_ci95": [-0.01, 0.1],
    }  # fmt: skip
    assert record["caps"] == [
        {"model": "ct2:teacher", "compute_type": "float32", "dataset": "test", "language": "ca",
         "max_new_tokens": 224, "n_utterances": 2, "error_rate": 0.6, "capped": 1}
    ]  # fmt: skip
    assert [(r["model"], r["score"]) for r in record["translation"]] == [
        ("ct2:teacher", 40.0),
        ("student-distilwhisper", 30.5),
    ]
    assert record["longform"][0]["start_error_median_s"] == 0.466
    assert record["roles"]["teacher"] == "ct2:teacher"
    assert record["caches"]["whisper-base"]["bytes"] == 200000
    assert record["students"] == {
        "distilwhisper": {
            "mode": "distilwhisper",
            "steps": 4,
            "updates_by_language": {"ca": 4},
            "dev_steps": [0, 2, 4],
            "best_step": {"ca": 2},
        }
    }


def test_stage_times_are_each_stage_s_latest(run, tmp_path):
    times = _record(run, tmp_path / "r.json")["times"]
    # import_models ran twice: the later run (600 s, from t=1000) made today's output; prepare_data 1200 s to t=2900
    assert times == {
        "stages": [{"stage": "import_models", "seconds": 600.0}, {"stage": "prepare_data", "seconds": 1200.0}],
        "total_seconds": 1800.0,
        "wall_seconds": 1900.0,
    }


def test_a_run_cut_short_is_refused(run, tmp_path):
    (run.parent / "dvc.yaml").write_text("stages: {import_models: {}, prepare_data: {}, report: {}}\n")
    with pytest.raises(DocsError, match="no stage time for report; run dvc repro to the end"):
        _record(run, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("data/bench/metrics.json", "metrics.json is missing; run the benchmark stage"),
        ("data/longform/metrics.json", "metrics.json is missing; run the longform stage"),
        ("data/cache/whisper-base/cache.json", "no teacher cache"),
        ("logs/stage_times.jsonl", "stage_times.jsonl is missing"),
    ],
)
def test_a_missing_output_is_a_one_line_error(run, tmp_path, broken, message):
    (run.parent / broken).unlink()
    with pytest.raises(DocsError, match=message):
        _record(run, tmp_path / "r.json")


def test_a_garbled_stage_time_names_its_line(run, tmp_path):
    with (run.parent / "logs" / "stage_times.jsonl").open("a") as log:
        log.write('{"stage": "report"\n')
    with pytest.raises(DocsError, match="stage_times.jsonl line 4 is not a stage time"):
        _record(run, tmp_path / "r.json")


def test_a_failed_write_leaves_the_recorded_file_as_it_was(run, tmp_path, monkeypatch):
    out = tmp_path / "default-run.json"
    out.write_text('{"old": true}\n')

    def no_rename(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", no_rename)  # the rename that would put the new file in place
    with pytest.raises(OSError, match="disk gone"):
        _record(run, out)
    assert out.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["default-run.json"]


def test_cli_records_from_the_run_folder_and_docs_still_renders(run, tmp_path):
    out = tmp_path / "docs" / "results" / "default-run.json"
    args = ["docs", "record-run", "--data", str(run), "--out", str(out), "--note", "Tests ran beside it."]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "13 rows, 1800 s of stages" in result.output
    assert json.loads(out.read_text())["times"]["total_seconds"] == 1800.0
    assert json.loads(out.read_text())["note"] == "Tests ran beside it."
    (tmp_path / "README.md").write_text("# nothing rendered\n")
    (tmp_path / "params.yaml").write_text((run.parent / "params.yaml").read_text())
    checked = CliRunner().invoke(app, ["docs", "--check", "--root", str(tmp_path)])
    assert checked.exit_code == 0, checked.output


def test_cli_missing_run_is_one_line_and_status_2(tmp_path):
    result = CliRunner().invoke(app, ["docs", "record-run", "--data", str(tmp_path / "data"), "--out", "x.json"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "params.yaml is missing" in result.output


def _git(root: Path, *args: str) -> str:
    import subprocess

    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_the_run_s_own_dvc_lock_does_not_make_its_code_dirty(run, tmp_path, monkeypatch):
    root = run.parent
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    _git(root, "init", "-q")
    _git(root, "add", "params.yaml", "dvc.yaml", "dvc.lock")
    _git(root, "commit", "-q", "-m", "run")
    head = _git(root, "rev-parse", "--short=12", "HEAD")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # what dvc repro does to it
    assert _record(run, tmp_path / "r.json")["provenance"]["code"] == head
    # an experiment's params.yaml (dvc exp run -S wrote it): its own when recorded as one, else a change
    base = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(base + "extra: 1\n")
    assert _record(run, tmp_path / "r.json")["provenance"]["code"] == head + "+dirty"
    here = tmp_path / "checkout"
    here.mkdir()
    (here / "params.yaml").write_text(base)
    (here / "exp.overrides").write_text("+extra=1\n")
    monkeypatch.chdir(here)
    made = record_run(run, root / "logs", root / "params.yaml", tmp_path / "r.json", "", Path("exp.overrides"))
    assert made["provenance"]["code"] == head
    (root / "dvc.yaml").write_text((root / "dvc.yaml").read_text() + "# edited\n")  # code changed after the commit
    assert _record(run, tmp_path / "r.json")["provenance"]["code"] == head + "+dirty"


def test_an_experiment_is_recorded_as_today_s_params_with_its_overrides(run, tmp_path, monkeypatch):
    """--overrides: the run must be this checkout's params.yaml with the file's changes; the command names it."""
    here = tmp_path / "checkout"
    here.mkdir()
    monkeypatch.chdir(here)
    (here / "params.yaml").write_text(yaml.safe_dump(PARAMS | {"benchmark": {"target_languages": ["cs"]}}))
    (here / "exp.overrides").write_text("# targets\nbenchmark.target_languages=[ca]\n")
    record = record_run(
        run, run.parent / "logs", run.parent / "params.yaml", tmp_path / "x.json", "", Path("exp.overrides")
    )
    assert record["provenance"]["command"] == "scripts/run_experiment.sh exp.overrides"
    assert record["provenance"]["data"]["params"] == corpus_id(PARAMS)
    (here / "exp.overrides").write_text("benchmark.target_languages=[fi]\n")
    with pytest.raises(DocsError, match=r"params.yaml \(params:\w+\) is not params.yaml with the changes of exp"):
        record_run(run, run.parent / "logs", run.parent / "params.yaml", tmp_path / "y.json", "", Path("exp.overrides"))
    assert not (tmp_path / "y.json").exists()
