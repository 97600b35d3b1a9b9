"""Rendered tables: the committed README.md and docs/ equal what `dw-pipe docs` renders, and stale tables fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.core.config import read_params
from pipeline.report.doc_tables import all_tables
from pipeline.report.docs import (
    CURRENT,
    DocsError,
    DocTable,
    current_identity,
    experiment_params,
    markdown_table,
    overridden_params,
    read_overrides,
    render_docs,
)

ROOT = Path(__file__).resolve().parents[3]


def test_committed_docs_equal_their_rendering():
    """Every marked table in README.md and docs/ is what its committed result file renders (run `dw-pipe docs`)."""
    assert [str(p.relative_to(ROOT)) for p in render_docs(ROOT, all_tables(), check=True)] == []


def test_every_registered_table_is_shown_somewhere():
    shown = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
    assert [name for name in all_tables() if f"<!-- table: {name} -->" not in shown] == []


def _rates(result: dict) -> list[str]:
    return markdown_table(["language", "WER %"], [[k, v] for k, v in sorted(result["wer"].items())])


@pytest.fixture()
def repo(tmp_path) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "docs").mkdir()
    current = current_identity(tmp_path)
    result = {
        "provenance": {"command": "python bench/x.py", "code": "abc", "data": current},
        "wer": {"cs": 41.5, "ca": 30},
    }
    (tmp_path / "results.json").write_text(json.dumps(result))
    (tmp_path / "README.md").write_text("# x\n\n<!-- table: rates -->\nold line\n<!-- /table -->\ntail\n")
    return tmp_path


TABLES = {
    "rates": DocTable(
        "results.json", _rates, {"corpus": CURRENT, "cache_format": CURRENT, "params": CURRENT, "outputs": CURRENT}
    )
}


def test_render_writes_the_table_and_check_then_passes(repo):
    assert render_docs(repo, TABLES, check=True) == [repo / "README.md"]  # stale: "old line"
    assert render_docs(repo, TABLES) == [repo / "README.md"]
    assert (repo / "README.md").read_text() == (
        "# x\n\n<!-- table: rates -->\n| language | WER % |\n| --- | ---: |\n| ca | 30 |\n| cs | 41.5 |\n"
        "<!-- /table -->\ntail\n"
    )
    assert render_docs(repo, TABLES, check=True) == []
    assert not list(repo.glob("*.tmp"))


def test_a_changed_result_makes_the_table_stale(repo):
    render_docs(repo, TABLES)
    result = json.loads((repo / "results.json").read_text())
    result["wer"]["cs"] = 40.0
    (repo / "results.json").write_text(json.dumps(result))
    assert render_docs(repo, TABLES, check=True) == [repo / "README.md"]


def test_a_result_of_another_corpus_than_today_is_an_error(repo):
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("prepare_data:", "prepare_data:\n  seed_note_for_test: 1", 1))
    with pytest.raises(DocsError, match="table rates: results.json was made from corpus"):
        render_docs(repo, TABLES, check=True)


def test_another_setting_than_today_is_an_error(repo):
    """Not only the corpus: a result made under another lr (any params.yaml value) no longer describes today."""
    params = (repo / "params.yaml").read_text()
    assert "  lr: " in params
    (repo / "params.yaml").write_text(params.replace("  lr: ", "  lr: 0.5 #", 1))
    with pytest.raises(DocsError, match="table rates: results.json was made from params"):
        render_docs(repo, TABLES, check=True)


def test_outputs_other_than_the_committed_dvc_lock_records_are_an_error(repo):
    """A re-run (after a code change, say) records new outputs in dvc.lock: tables made from the old ones go stale."""
    lock = "stages:\n  benchmark:\n    outs:\n    - path: data/bench/metrics.json\n      md5: {}\n"
    (repo / "dvc.lock").write_text(lock.format("0123456789abcdef"))
    result = json.loads((repo / "results.json").read_text())
    result["provenance"]["data"] = current_identity(repo)
    assert result["provenance"]["data"]["outputs"] == {"bench": "0123456789ab", "longform": None}
    (repo / "results.json").write_text(json.dumps(result))
    render_docs(repo, TABLES)
    (repo / "dvc.lock").write_text(lock.format("fedcba9876543210"))
    with pytest.raises(DocsError, match="was made from outputs"):
        render_docs(repo, TABLES, check=True)


def test_a_literal_claim_must_match_the_result(repo):
    tables = {"rates": DocTable("results.json", _rates, {"corpus": "espeak-ng cs/bg/pl"})}
    with pytest.raises(DocsError, match="claims 'espeak-ng cs/bg/pl'"):
        render_docs(repo, tables)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: (r / "results.json").unlink(), "result file results.json is missing"),
        (lambda r: (r / "results.json").write_text('{"wer": {}}'), "has no provenance"),
        (lambda r: (r / "README.md").write_text("<!-- table: nope -->\n<!-- /table -->\n"), "unknown table 'nope'"),
        (lambda r: (r / "README.md").write_text("<!-- table: rates -->\n| a |\n"), "has no closing"),
    ],
)
def test_broken_inputs_are_one_line_errors(repo, change, message):
    change(repo)
    with pytest.raises(DocsError, match=message):
        render_docs(repo, TABLES)
    assert not list(repo.glob("*.tmp"))


def _experiment(repo: Path, overrides: str) -> dict[str, DocTable]:
    """A table of an experiment run with ``overrides`` on today's params.yaml, its result file made to match."""
    (repo / "exp.overrides").write_text(overrides)
    claims = {"params": experiment_params("exp.overrides"), "cache_format": CURRENT}
    result = json.loads((repo / "results.json").read_text())
    result["provenance"]["data"]["params"] = claims["params"](repo)
    (repo / "results.json").write_text(json.dumps(result))
    return {"rates": DocTable("results.json", _rates, claims)}


def test_an_experiment_claims_today_s_params_with_its_overrides(repo):
    tables = _experiment(repo, "# the overrides of a sweep point\ntrain_student.common.lr=0.5\n\n+benchmark.new=1\n")
    made = json.loads((repo / "results.json").read_text())["provenance"]["data"]["params"]
    assert made != current_identity(repo)["params"]  # not the default run's settings ...
    render_docs(repo, tables)  # ... but today's with the overrides
    assert render_docs(repo, tables, check=True) == []
    # a setting the overrides leave alone changes: the experiment no longer describes today's pipeline
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("  bootstrap: ", "  bootstrap: 7 #", 1))
    with pytest.raises(DocsError, match="table rates: results.json was made from params"):
        render_docs(repo, tables, check=True)
    (repo / "params.yaml").write_text(params)
    # the overrides file changes: the same
    (repo / "exp.overrides").write_text("train_student.common.lr=0.25\n+benchmark.new=1\n")
    with pytest.raises(DocsError, match="was made from params"):
        render_docs(repo, tables, check=True)


def test_an_override_that_does_not_apply_is_one_line(repo):
    tables = _experiment(repo, "train_student.common.lr=0.5\n")
    (repo / "exp.overrides").write_text("train_student.common.no_such_key=1\n")
    with pytest.raises(DocsError, match=r"exp.overrides does not apply to .*params.yaml: ") as err:
        render_docs(repo, tables, check=True)
    assert "\n" not in str(err.value)
    (repo / "exp.overrides").unlink()
    with pytest.raises(DocsError, match="overrides file .*exp.overrides is missing"):
        render_docs(repo, tables, check=True)


def test_every_committed_overrides_file_applies_to_today_s_params():
    """scripts/run_experiment.sh runs these with dvc exp run -S: each applies to params.yaml as it is today (the
    sections it makes are checked by tests/test_profiles.py)."""
    files = sorted((ROOT / "profiles").glob("*.overrides"))
    assert files
    for path in files:
        assert read_overrides(path)
        assert overridden_params(ROOT / "params.yaml", path) != read_params(ROOT / "params.yaml")
