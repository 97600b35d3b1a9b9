"""The result memo: a hit only for the very record asked for; DVC experiments' copies share the project's memo."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.fsutil import project_path
from pipeline.core.result_memo import ResultMemo, fingerprint


def test_a_result_is_found_only_under_the_record_it_was_made_from(tmp_path):
    memo = ResultMemo(tmp_path / "memo", "bench", tmp_path / "scratch")
    made_from = {"model": "a", "files": "1234", "settings": {"cap": 64}}
    assert memo.get(made_from) is None
    memo.put(made_from, {"hyps": ["x", "y"]})
    assert memo.get({"settings": {"cap": 64}, "files": "1234", "model": "a"})[0] == {"hyps": ["x", "y"]}
    assert memo.get({**made_from, "settings": {"cap": 128}}) is None
    # a file whose stored record is not the one its name says (a clash, a hand edit) is not used
    path = next((tmp_path / "memo" / "bench").glob("*.json"))
    saved = json.loads(path.read_text())
    saved["made_from"]["files"] = "5678"
    path.write_text(json.dumps(saved))
    assert memo.get(made_from) is None
    path.write_text("{")
    assert memo.get(made_from) is None
    assert (memo.hits, memo.misses) == (1, 4)
    memo.finish()
    assert path.exists()  # persistent


def test_without_a_root_results_last_until_the_stage_finishes(tmp_path):
    memo = ResultMemo(None, "bench", tmp_path / ".bench.partial")
    memo.put({"a": 1}, {"b": 2})
    assert ResultMemo(None, "bench", tmp_path / ".bench.partial").get({"a": 1})[0] == {"b": 2}  # a kill's resume
    memo.finish()
    assert not (tmp_path / ".bench.partial").exists()
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})


def test_a_dvc_experiments_temporary_copy_resolves_memo_folders_against_the_project(tmp_path):
    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "standalone" / "tmp3k2j"
    copy.mkdir(parents=True)
    assert project_path(Path("data/encoder-memo"), cwd=copy) == project.resolve() / "data/encoder-memo"
    assert project_path(Path("data/encoder-memo"), cwd=project) == Path("data/encoder-memo")
    assert project_path(Path("/abs/memo"), cwd=copy) == Path("/abs/memo")
    assert project_path(None, cwd=copy) is None
