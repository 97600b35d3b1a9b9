"""The whole DVC pipeline on the tiny profile: runs, is then up to date, survives kills, shares its cache.

Each test works in a scratch copy of the repository (scripts/tiny_repro.py)
with a tiny random Whisper and a handful of espeak-ng utterances.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from tiny_repro import prepare, run  # noqa: E402

CACHE = Path("data/cache/tiny")
STUDENTS = Path("data/students")


def _digests(work: Path) -> dict[str, str]:
    """What must not depend on interruptions: cache shards and trained experts."""
    import hashlib

    out = {s["file"]: s["sha256"] for s in json.loads((work / CACHE / "cache.json").read_text())["shards"]}
    for f in sorted((work / STUDENTS).rglob("expert.*.safetensors")):
        out[str(f.relative_to(work))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("tiny-ref")
    prepare(work)
    run(["dvc", "repro"], work)
    return work


def test_full_pipeline_runs_then_is_up_to_date(reference):
    report = (reference / "data/report/report.md").read_text()
    assert "Target languages" in report and "Quantization-induced change" in report
    metrics = json.loads((reference / "data/bench/metrics.json").read_text())
    assert {r["model"] for r in metrics["rows"]} >= {
        "teacher",
        "student-distilwhisper",
        "ct2:teacher",
        "faster-whisper:teacher-int8",
    }
    stages = {json.loads(line)["stage"] for line in (reference / "logs/stage_times.jsonl").read_text().splitlines()}
    assert stages == {
        "import_models",
        "prepare_data",
        "cache_teacher",
        "train_student",
        "export_student",
        "quantize",
        "benchmark",
        "longform",
        "report",
    }
    longform = json.loads((reference / "data/longform/metrics.json").read_text())["rows"]
    assert {(r["model"], r["setting"], r["language"]) for r in longform} >= {("ct2:teacher", "greedy", "pl")}
    assert "Long-form transcription" in report and "| pl | greedy | ct2:teacher | int8 |" in report
    train = (reference / "data/prepared/train.jsonl").read_text()
    assert '"segments"' in train  # timestamped windows, cached and trained on
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], reference)
    # dvclive curves reach `dvc plots`: the dev error rate has one line per trained student
    shown = subprocess.run(["dvc", "plots", "show", "--json"], cwd=reference, capture_output=True, text=True)
    values = json.loads(shown.stdout)["data"]["dev error rate"][0]["content"]["data"]["values"]
    assert {v["filename"].split("/")[0] for v in values} == {"distilwhisper", "clsr"}, values
    assert min(int(v["step"]) for v in values) == 0


def _kill_when(work: Path, target: str, ready) -> None:
    """Start `dvc repro target`, SIGKILL its whole process group once ``ready()`` holds."""
    proc = subprocess.Popen(
        ["dvc", "repro", target], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 600
    while proc.poll() is None and not ready() and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the stage finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_repro_resumes_to_the_same_results(reference, tmp_path):
    work = tmp_path / "killed"
    work.mkdir()
    prepare(work)
    run(["dvc", "repro", "prepare_data"], work)
    _kill_when(work, "cache_teacher", lambda: any((work / CACHE).glob(".shard-*.sha256")))
    assert (
        not (work / CACHE / "cache.json").is_file()
        or json.loads((work / CACHE / "cache.json").read_text())["status"] == "building"
    )
    _kill_when(work, "train_student", lambda: (work / STUDENTS / ".distilwhisper.checkpoint").is_dir())
    run(["dvc", "repro", "train_student"], work)
    ref = {k: v for k, v in _digests(reference).items()}
    assert _digests(work) == ref


def _readme_push_commands() -> list[str]:
    """The README's shell lines that share a cache, from the remote to the push."""
    block = (ROOT / "README.md").read_text().split("## Sharing a teacher cache", 1)[1].split("```bash\n", 1)[1]
    lines = [line.split("  #")[0].strip() for line in block.split("```", 1)[0].splitlines()]
    return [line for line in lines if line and not line.startswith("dvc pull")]


def test_pushed_cache_is_reused_by_a_second_clone(reference, tmp_path):
    """The README's commands: a remote, DVC's cached index dropped (DVC 3.67.1's `dvc plots show`, run by the first
    test, can corrupt it so that `dvc push` leaves students' files out: README), push; then a clone pulls."""
    remote = tmp_path / "remote"
    commands = _readme_push_commands()
    assert commands[0].startswith("dvc remote add") and commands[-1] == "dvc push", commands
    run(["dvc", "remote", "add", "-f", "-d", "store", str(remote)], reference)
    run(["dvc", "plots", "show", "--json"], reference)  # what a user runs first; it fills (and can corrupt) the index
    assert list(reference.glob(".dvc/tmp/site/repo/*/index/data")), "no cached index to drop: DVC's layout changed?"
    for line in commands[1:-1]:
        run(["bash", "-c", line], reference)
    assert not list(reference.glob(".dvc/tmp/site/repo/*/index/data")), "the README's line left DVC's cached index"
    run(["dvc", "push"], reference)
    clone = tmp_path / "clone"
    clone.mkdir()
    prepare(clone)
    (clone / "dvc.lock").write_bytes((reference / "dvc.lock").read_bytes())
    run(["dvc", "remote", "add", "-f", "-d", "store", str(remote)], clone)
    run(["dvc", "pull"], clone)
    out = run(["dvc", "repro"], clone)
    assert "Running stage 'cache_teacher'" not in out, out[-2000:]
    assert (
        not (clone / "logs/stage_times.jsonl").exists()
        or "cache_teacher" not in (clone / "logs/stage_times.jsonl").read_text()
    )
    assert (clone / CACHE / "cache.json").is_file()


def test_students_are_retrained_when_the_cache_changes(reference, tmp_path):
    """Another cache_teacher.top_k rebuilds the cache at the same path: DVC reruns train_student, and the distilling
    student must be trained again from the new cache, not kept because its settings (paths) still match."""
    import shutil

    work = tmp_path / "topk"
    shutil.copytree(reference, work, symlinks=True)
    params = work / "params.yaml"
    text = params.read_text()
    assert "  top_k: 8\n" in text
    params.write_text(text.replace("  top_k: 8\n", "  top_k: 5\n"))
    out = run(["dvc", "repro", "train_student"], work)
    assert "Running stage 'train_student'" in out, out[-2000:]
    record = json.loads((work / STUDENTS / "distilwhisper" / "student.json").read_text())
    before = json.loads((reference / STUDENTS / "distilwhisper" / "student.json").read_text())
    assert record["inputs"]["cache_sha256"] != before["inputs"]["cache_sha256"]
    assert json.loads((work / CACHE / "cache.json").read_text())["identity"]["top_k"] == 5
    log = {w: (w / STUDENTS / "distilwhisper" / "train_log.jsonl").read_text() for w in (work, reference)}
    assert log[work] != log[reference]  # its KD terms come from the new top-5 targets
    for name in ("student.json", "train_log.jsonl", "expert.pl.safetensors"):  # reads no cache: up to date
        assert (work / STUDENTS / "clsr" / name).read_bytes() == (reference / STUDENTS / "clsr" / name).read_bytes()


def _wait_for_queue(work: Path, timeout: float = 900) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], work)
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(2)
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


@pytest.mark.slow  # minutes: two queued experiments through DVC's queue worker (make test-slow; CI runs it)
def test_a_queued_two_point_sweep_trains_from_one_cache_and_reuses_unchanged_runs(reference, tmp_path):
    """`dvc exp run --queue -S ...` twice, then `dvc queue start`: both experiments succeed in their temporary copies
    (.dvc/tmp/exps/...), neither rebuilds the teacher cache, both find the project's result memo (the unchanged
    teacher's runs are reused, not decoded), and `dvc exp show` compares their headline cells. A value the stage does
    not accept fails in one line naming the key and the accepted values."""
    import shutil

    work = tmp_path / "sweep"
    shutil.copytree(reference, work, symlinks=True)
    run(["git", "config", "user.name", "dw-pipe test"], work)
    run(["git", "config", "user.email", "test@dw-pipe.invalid"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "baseline"], work)
    memo = work / "data" / "run-memo" / "benchmark"
    before = set(memo.glob("*.json"))
    assert before, "the reference run keeps its runs in the result memo"
    for lr in ("0.002", "0.0005"):
        run(["dvc", "exp", "run", "--queue", "-S", f"train_student.common.lr={lr}"], work)
    run(["dvc", "queue", "start", "--jobs", "1"], work)
    status = _wait_for_queue(work)
    assert status.count("Success") == 2, status
    logs = {name: run(["dvc", "queue", "logs", name], work) for name in re.findall(r"^(\w+)\s.*Success", status, re.M)}
    assert len(logs) == 2, status
    for log in logs.values():
        assert "Running stage 'cache_teacher'" not in log, log[-3000:]
        assert "Running stage 'train_student'" in log, log[-3000:]
        assert re.search(r"result memo \S+/run-memo/benchmark: [1-9]\d* reused", log), log[-3000:]
    # each experiment's students were decoded in its copy and kept in the project's memo
    assert len(set(memo.glob("*.json")) - before) >= 2
    # metrics/compare.json is tracked by git, so each experiment's commit holds its own headline cells
    import csv
    import io

    table = list(csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], work))))
    runs = [row for row in table if row.get("State") == "Success"]
    assert len(runs) == 2, table
    cells = [float(row["test/pl/float32.distilwhisper"]) for row in runs]
    assert sorted(row["train_student.common.lr"] for row in runs) == ["0.0005", "0.002"]
    assert all(0 <= c for c in cells), cells
    bad = subprocess.run(
        ["dvc", "exp", "run", "--temp", "-S", "+train_student.common.kd_loss=hinge"], cwd=work, capture_output=True,
        text=True,
    )  # fmt: skip
    assert bad.returncode != 0
    assert re.search(r"kd_loss 'hinge' not in \('js', ", bad.stdout + bad.stderr), (bad.stdout + bad.stderr)[-3000:]
