"""corpus_hf: per-split selection (row lists, top by votes) and per-recording ids, on the hub's CV and FLEURS layouts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.core.errors import DwPipeError
from pipeline.data.hub import hf_candidates
from pipeline.data.manifest import load_manifest
from pipeline.data.prepare import HFSourceConfig, SplitSelection, prepare_data

LANGUAGES = frozenset({"pl", "de"})
# (up_votes, down_votes) of the stand-in train rows. By up-votes (desc) then down-votes (asc), rows with
# equal votes in row order: 2 (5,0), 1 (5,1), 4 (5,1), 0 (2,0), 5 (2,0), 3 (1,0).
TRAIN_VOTES = [(2, 0), (5, 1), (5, 0), (1, 0), (5, 1), (2, 0)]
BY_VOTES = ("-up_votes", "down_votes")


def cv_split(votes: list[tuple[int, int]], lang: str, tag: str, audio_bytes: bytes = b"") -> object:
    """A split with exactly the columns of mozilla-foundation/common_voice_13_0 on the hub."""
    import datasets

    n = len(votes)
    return datasets.Dataset.from_dict(
        {
            "client_id": [f"spk{i % 2}" for i in range(n)],
            "path": [f"{lang}_{tag}/clips/common_voice_{lang}_{tag}{i}.mp3" for i in range(n)],
            "audio": [{"bytes": audio_bytes or b"not decoded here", "path": None}] * n,
            "sentence": [f"Zdanie numer {i}." for i in range(n)],
            "up_votes": [u for u, _ in votes],
            "down_votes": [d for _, d in votes],
            "age": ["twenties"] * n,
            "gender": ["female_feminine", "male_masculine"] * (n // 2) + ["female_feminine"] * (n % 2),
            "accent": [""] * n,
            "locale": [lang] * n,
            "segment": [""] * n,
            "variant": [""] * n,
        }
    ).cast_column("audio", datasets.Audio(decode=False))


def cv_stand_in(folder: Path, lang: str = "pl", n_test: int = 5, audio_bytes: bytes = b"") -> Path:
    import datasets

    datasets.DatasetDict(
        {
            "train": cv_split(TRAIN_VOTES, lang, "train", audio_bytes),
            "validation": cv_split([(1, 0), (3, 0), (2, 0)], lang, "dev", audio_bytes),
            "test": cv_split([(0, 0)] * n_test, lang, "test", audio_bytes),
        }
    ).save_to_disk(str(folder))
    return folder


def _rows_file(path: Path, lists: dict) -> Path:
    path.write_text(json.dumps(lists), encoding="utf-8")
    return path


def _source(**select) -> HFSourceConfig:
    return HFSourceConfig(splits={"train": "train", "dev": "validation", "test": "test"}, name="pl", select=select)


def _ids(candidates, split: str) -> list[str]:
    return [c.record["id"] for c in candidates if c.record["split"] == split]


def test_row_list_picks_exactly_the_listed_rows_in_dataset_order(tmp_path):
    data = cv_stand_in(tmp_path / "cv")
    rows = _rows_file(tmp_path / "rows.json", {"pl": {"train": [4, 1, 3], "validation": [2]}})
    cfg = _source(train=SplitSelection(rows=rows), dev=SplitSelection(rows=rows))
    candidates, selection = hf_candidates(str(data), cfg, LANGUAGES)
    assert _ids(candidates, "train") == [f"pl-train-common_voice_pl_train{i}" for i in (1, 3, 4)]
    assert _ids(candidates, "dev") == ["pl-dev-common_voice_pl_dev2"]
    assert [c.line for c in candidates if c.record["split"] == "train"] == [1, 3, 4]
    train = selection[f"{data} [pl/train]"]
    assert (train["rows"], train["selected"], train["not_selected"]) == (6, 3, 3)
    assert train["by"] == f"rows listed in {rows} [pl/train]"


def test_a_row_list_that_does_not_fit_the_split_is_an_error(tmp_path):
    data = cv_stand_in(tmp_path / "cv")
    cases = {
        r"1 rows listed in .* are not in the split \(6 rows; e\.g\. row 6\)": {"pl": {"train": [0, 6]}},
        r"no list for dataset config 'pl' \(has cs\)": {"cs": {"train": [0]}},
        r"\[pl/train\]: a row is listed twice": {"pl": {"train": [3, 1, 3]}},
        r"\[pl/train\]: expected a list of row positions": {"pl": {"train": [0, "1"]}},
    }
    for message, lists in cases.items():
        rows = _rows_file(tmp_path / "rows.json", lists)
        with pytest.raises(DwPipeError, match=message):
            hf_candidates(str(data), _source(train=SplitSelection(rows=rows)), LANGUAGES)


def test_top_by_up_votes_breaks_ties_by_row_order(tmp_path):
    data = cv_stand_in(tmp_path / "cv")
    expected = {2: [1, 2], 4: [0, 1, 2, 4], 6: [0, 1, 2, 3, 4, 5], 9: [0, 1, 2, 3, 4, 5]}
    for n, rows in expected.items():
        candidates, _ = hf_candidates(str(data), _source(train=SplitSelection(top_by=BY_VOTES, n=n)), LANGUAGES)
        assert _ids(candidates, "train") == [f"pl-train-common_voice_pl_train{i}" for i in rows], n


def test_row_list_is_checked_against_the_rule_when_both_are_given(tmp_path):
    data = cv_stand_in(tmp_path / "cv")
    rows = _rows_file(tmp_path / "rows.json", {"pl": {"train": [2, 1, 4, 0]}})
    candidates, _ = hf_candidates(str(data), _source(train=SplitSelection(rows=rows, top_by=BY_VOTES)), LANGUAGES)
    assert len(_ids(candidates, "train")) == 4
    rows = _rows_file(tmp_path / "rows.json", {"pl": {"train": [2, 1, 4, 5]}})  # 5 ties with 0 but comes later
    with pytest.raises(DwPipeError, match=r"not the first 4 by -up_votes, down_votes .*2 rows differ, e\.g\. row 0"):
        hf_candidates(str(data), _source(train=SplitSelection(rows=rows, top_by=BY_VOTES)), LANGUAGES)


def test_unselected_splits_are_whole_and_max_per_split_caps_after_selection(tmp_path):
    data = cv_stand_in(tmp_path / "cv", n_test=7)
    candidates, selection = hf_candidates(str(data), _source(train=SplitSelection(top_by=BY_VOTES, n=4)), LANGUAGES)
    assert len(_ids(candidates, "test")) == 7 and selection[f"{data} [pl/test]"]["by"] == "all rows"
    cfg = replace(_source(train=SplitSelection(top_by=BY_VOTES, n=4)), max_per_split=2)
    candidates, _ = hf_candidates(str(data), cfg, LANGUAGES)
    assert _ids(candidates, "train") == ["pl-train-common_voice_pl_train0", "pl-train-common_voice_pl_train1"]
    assert len(_ids(candidates, "test")) == 2


def test_select_must_name_a_mapped_split_and_say_how(tmp_path):
    data = cv_stand_in(tmp_path / "cv")
    with pytest.raises(DwPipeError, match=r"select names splits \['test_ood'\]"):
        hf_candidates(str(data), _source(test_ood=SplitSelection(top_by=BY_VOTES, n=1)), LANGUAGES)
    with pytest.raises(DwPipeError, match="top_by needs n > 0"):
        hf_candidates(str(data), _source(train=SplitSelection(top_by=BY_VOTES)), LANGUAGES)
    with pytest.raises(DwPipeError, match="not columns of the split"):
        hf_candidates(str(data), _source(train=SplitSelection(top_by=("-likes",), n=1)), LANGUAGES)


def fleurs_split(sentence_ids: list[int], audio_bytes: bytes) -> object:
    """A split with exactly the columns of google/fleurs on the hub; ``id`` numbers the sentence."""
    import datasets

    n = len(sentence_ids)
    files = [f"/cache/extracted/abc123/test/{1000 + i}.wav" for i in range(n)]
    return (
        datasets.Dataset.from_dict(
            {
                "id": sentence_ids,
                "num_samples": [16_000] * n,
                "path": files,
                "audio": [{"bytes": audio_bytes, "path": Path(f).name} for f in files],
                "transcription": [f"zdanie numer {i}" for i in sentence_ids],
                "raw_transcription": [f"Zdanie numer {i}." for i in sentence_ids],
                "gender": [i % 2 for i in range(n)],
                "lang_id": [63] * n,
                "language": ["Polish"] * n,
                "lang_group_id": [0] * n,
            }
        )
        .cast_column("audio", datasets.Audio(decode=False))
        .cast_column("gender", datasets.ClassLabel(names=["male", "female", "other"]))
    )


def _prepared_from(tmp_path: Path, model: Path, splits, mapping: dict[str, str], name: str):
    """prepare_data from ``splits`` (a DatasetDict, saved to disk) mapped by ``mapping``: (config, summary)."""
    from tests.pipeline.data.test_prepare import _config  # noqa: PLC0415

    splits.save_to_disk(str(tmp_path / "saved"))
    source = HFSourceConfig(splits=mapping, name=name, input=str(tmp_path / "saved"))
    cfg = _config(tmp_path, model, source="hf", workers=1, hf_datasets=(source,))
    return cfg, prepare_data(cfg)


def test_fleurs_recordings_of_one_sentence_are_all_kept_with_their_own_ids(tmp_path, tiny_hf_dir):
    """FLEURS' id numbers the sentence, which several speakers read: each recording is its own utterance."""
    import datasets

    from tests.pipeline.data.test_prepare import _speech, _wav_bytes  # noqa: PLC0415

    split = fleurs_split([7, 7, 8, 7], _wav_bytes(_speech(1.0), 16_000))
    cfg, summary = _prepared_from(
        tmp_path, tiny_hf_dir, datasets.DatasetDict({"test": split}), {"test_ood": "test"}, "pl_pl"
    )
    assert (summary["read"], summary["kept"], summary["rejected"]) == (4, 4, 0)
    kept = load_manifest(cfg.out_dir / "test_ood.jsonl")
    assert [(u.id, u.text, u.gender) for u in kept] == [
        ("pl_pl-test_ood-1000", "zdanie numer 7", "male"),
        ("pl_pl-test_ood-1001", "zdanie numer 7", "female"),
        ("pl_pl-test_ood-1002", "zdanie numer 8", "male"),
        ("pl_pl-test_ood-1003", "zdanie numer 7", "female"),
    ]


def test_prepare_data_reports_the_selection_in_its_summary(tmp_path, tiny_hf_dir):
    from tests.pipeline.data.test_prepare import _config, _speech, _wav_bytes  # noqa: PLC0415

    data = cv_stand_in(tmp_path / "cv", n_test=3, audio_bytes=_wav_bytes(_speech(1.0, 48_000), 48_000))
    rows = _rows_file(tmp_path / "rows.json", {"pl": {"train": [2, 1], "validation": [1]}})
    source = _source(train=SplitSelection(rows=rows, top_by=BY_VOTES), dev=SplitSelection(rows=rows))
    cfg = _config(tmp_path, tiny_hf_dir, source="hf", workers=1, hf_datasets=(replace(source, input=str(data)),))
    summary = prepare_data(cfg)
    assert (summary["read"], summary["kept"], summary["rejected"]) == (2 + 1 + 3, 6, 0)
    counts = {v["split"]: (v["selected"], v["not_selected"]) for v in summary["selection"].values()}
    assert counts == {"train": (2, 4), "dev": (1, 2), "test": (3, 0)}
    assert [u.id for u in load_manifest(cfg.out_dir / "test.jsonl")] == [
        f"pl-test-common_voice_pl_test{i}" for i in range(3)
    ]


# The hub's Parquet export (branch refs/convert/parquet): how hub ids are read, since datasets 4 dropped the
# loading scripts of Common Voice and FLEURS. A local copy of it reads through the same file selection.


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """load_dataset("parquet") writes Arrow files to the datasets cache: keep them in the test's folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def cv_export_stand_in(folder: Path, lang: str = "pl", audio_bytes: bytes = b"") -> Path:
    """The export's current layout, ``<config>/<split>/0000.parquet, 0001.parquet, ...``: train in six one-row
    files (the rows' order is the files' name order), audio as the plain ``{bytes, path}`` struct."""
    import pyarrow.parquet as pq

    splits = {
        "train": (TRAIN_VOTES, "train", 1),
        "validation": ([(1, 0), (3, 0), (2, 0)], "dev", 2),
        "test": ([(0, 0)] * 5, "test", 5),
    }
    for split, (votes, tag, rows_per_file) in splits.items():
        table = cv_split(votes, lang, tag, audio_bytes).data.table.replace_schema_metadata(None)
        (folder / lang / split).mkdir(parents=True)
        for number, start in enumerate(range(0, table.num_rows, rows_per_file)):
            pq.write_table(table.slice(start, rows_per_file), folder / lang / split / f"{number:04d}.parquet")
    (folder / lang / "validation" / "index.duckdb").write_bytes(b"not parquet")  # the export keeps these beside
    return folder


def fleurs_export_stand_in(folder: Path, audio_bytes: bytes = b"x") -> Path:
    """google/fleurs' export layout (the older one): ``<config>/fleurs-<split>[-0000N-of-0000M].parquet``."""
    import datasets

    def part(ids: list[int], first: int) -> datasets.Dataset:
        return (
            datasets.Dataset.from_dict(
                {
                    "id": ids,
                    "path": [f"/cache/extracted/test/{first + i}.wav" for i in range(len(ids))],
                    "audio": [{"bytes": audio_bytes, "path": f"test/{first + i}.wav"} for i in range(len(ids))],
                    "transcription": ["dzień dobry"] * len(ids),
                    "gender": [1, 0, 1][: len(ids)],
                }
            )
            .cast_column("audio", datasets.Audio(decode=False))
            .cast_column("gender", datasets.ClassLabel(names=["male", "female", "other"]))
        )

    (folder / "pl_pl" / "validation").mkdir(parents=True)
    (folder / "cs_cz").mkdir()
    part([7, 7], 1001).to_parquet(str(folder / "pl_pl" / "fleurs-test-00000-of-00002.parquet"))
    part([8], 1003).to_parquet(str(folder / "pl_pl" / "fleurs-test-00001-of-00002.parquet"))
    part([9], 2001).to_parquet(str(folder / "pl_pl" / "fleurs-train.parquet"))
    part([5], 3001).to_parquet(str(folder / "pl_pl" / "fleurs-validation.parquet"))
    part([6], 4001).to_parquet(str(folder / "cs_cz" / "fleurs-test.parquet"))
    (folder / "pl_pl" / "validation" / "index.duckdb").write_bytes(b"not parquet")
    return folder


def test_a_copy_of_the_parquet_export_selects_the_same_rows_as_the_dataset(tmp_path, datasets_cache):
    saved, export = cv_stand_in(tmp_path / "saved"), cv_export_stand_in(tmp_path / "export")
    rows = _rows_file(tmp_path / "rows.json", {"pl": {"train": [2, 1, 4, 0], "validation": [1]}})
    cfg = _source(train=SplitSelection(rows=rows, top_by=BY_VOTES), dev=SplitSelection(rows=rows))
    from_saved, _ = hf_candidates(str(saved), cfg, LANGUAGES)
    from_export, selection = hf_candidates(str(export), cfg, LANGUAGES)
    assert _ids(from_export, "train") == [f"pl-train-common_voice_pl_train{i}" for i in (0, 1, 2, 4)]
    assert [c.record | {"source": ""} for c in from_export] == [c.record | {"source": ""} for c in from_saved]
    assert {c.record["source"] for c in from_export} == {"hf:export:train", "hf:export:validation", "hf:export:test"}
    assert [c.audio for c in from_export] == [b"not decoded here"] * (4 + 1 + 5)
    counts = {v["split"]: (v["rows"], v["selected"]) for v in selection.values()}
    assert counts == {"train": (6, 4), "dev": (3, 1), "test": (5, 5)}


def test_fleurs_export_reads_the_split_s_files_in_order_and_decodes_its_audio(tmp_path, tiny_hf_dir, datasets_cache):
    from tests.pipeline.data.test_prepare import _config, _speech, _wav_bytes  # noqa: PLC0415

    export = fleurs_export_stand_in(tmp_path / "fleurs", _wav_bytes(_speech(1.0), 16_000))
    source = HFSourceConfig(input=str(export), splits={"test_ood": "test"}, name="pl_pl", language="pl")
    candidates, _ = hf_candidates(str(export), source, LANGUAGES)
    assert [(c.record["id"], c.record["gender"]) for c in candidates] == [
        ("pl_pl-test_ood-1001", "female"),
        ("pl_pl-test_ood-1002", "male"),
        ("pl_pl-test_ood-1003", "female"),
    ]
    cfg = _config(tmp_path, tiny_hf_dir, source="hf", workers=1, hf_datasets=(source,))
    summary = prepare_data(cfg)
    assert (summary["read"], summary["kept"], summary["rejected"]) == (3, 3, 0)
    assert [u.duration for u in load_manifest(cfg.out_dir / "test_ood.jsonl")] == [1.0, 1.0, 1.0]


def test_hub_ids_read_the_export_branch(monkeypatch):
    """The listing of google/fleurs' export branch (its layout on the hub) becomes hf:// paths at that branch."""
    from huggingface_hub import HfApi

    from pipeline.data.hub import _hub_export_files

    listing = ["pl_pl/fleurs-test-00001-of-00002.parquet", "pl_pl/fleurs-test-00000-of-00002.parquet"]
    listing += [
        "pl_pl/fleurs-train-00000-of-00004.parquet",
        "pl_pl/validation/index.duckdb",
        "cs_cz/fleurs-test.parquet",
    ]
    asked = {}

    def list_repo_files(self, repo_id, repo_type=None, revision=None, **kwargs):
        asked.update(repo_id=repo_id, repo_type=repo_type, revision=revision)
        return listing

    monkeypatch.setattr(HfApi, "list_repo_files", list_repo_files)
    files = _hub_export_files("google/fleurs", "pl_pl", "test", "where")
    assert asked == {"repo_id": "google/fleurs", "repo_type": "dataset", "revision": "refs/convert/parquet"}
    root = "hf://datasets/google/fleurs@refs%2Fconvert%2Fparquet/pl_pl"
    assert files == [f"{root}/fleurs-test-00000-of-00002.parquet", f"{root}/fleurs-test-00001-of-00002.parquet"]


def test_an_export_without_the_whole_split_is_an_error(tmp_path, datasets_cache):
    export = cv_export_stand_in(tmp_path / "export")
    (export / "pl" / "train").rename(export / "pl" / "partial-train")
    with pytest.raises(
        DwPipeError, match=r"\[pl/train\]: the Parquet export holds only the first rows .*partial-train"
    ):
        hf_candidates(str(export), _source(), LANGUAGES)
    with pytest.raises(
        DwPipeError, match=r"\[de/train\]: no Parquet files of split 'train' under de/ .*found: nothing"
    ):
        hf_candidates(str(export), replace(_source(), name="de"), LANGUAGES)
    source = replace(_source(), splits={"test": "other"})
    with pytest.raises(
        DwPipeError, match=r"no Parquet files of split 'other' under pl/ .*found: partial-train, test, validation"
    ):
        hf_candidates(str(export), source, LANGUAGES)
    with pytest.raises(DwPipeError, match="not a folder and not a hub dataset id"):
        hf_candidates(str(tmp_path / "missing"), _source(), LANGUAGES)


def test_a_dataset_without_transcripts_feeds_the_unlabelled_split_alone(tmp_path, tiny_hf_dir):
    """Untranscribed speech (no text column) is kept in the unlabelled split; mapped to a scored or trained split it
    is refused in one line naming the fix."""
    from tests.pipeline.data.test_prepare import _speech, _wav_bytes  # noqa: PLC0415

    data = cv_stand_in(tmp_path / "cv", n_test=2, audio_bytes=_wav_bytes(_speech(1.0), 16_000))
    import datasets

    bare = datasets.DatasetDict({"train": datasets.load_from_disk(str(data))["test"].remove_columns(["sentence"])})
    cfg, summary = _prepared_from(tmp_path, tiny_hf_dir, bare, {"unlabelled": "train"}, "pl")
    assert (summary["read"], summary["kept"], summary["rejected"]) == (2, 2, 0)
    kept = load_manifest(cfg.out_dir / "unlabelled.jsonl")
    assert [(u.split, u.text, u.language) for u in kept] == [("unlabelled", "", "pl")] * 2
    assert summary["by_split"] == {"unlabelled": {"utterances": 2, "hours": pytest.approx(2 / 3600, abs=1e-4)}}

    with pytest.raises(DwPipeError, match=r"no transcript column .*; map a dataset without transcripts to our unlabel"):
        hf_candidates(str(tmp_path / "saved"), HFSourceConfig(splits={"train": "train"}, name="pl"), LANGUAGES)


def test_the_audio_pass_reads_each_block_through_a_fresh_map_and_keeps_rows_in_step(tmp_path, monkeypatch):
    """With blocks of 2 rows, the audio pass opens the split again for each block and every candidate still gets
    its own row's audio, in the order of the records pass."""
    import datasets

    from pipeline.data import hub

    split = cv_split(TRAIN_VOTES, "pl", "train")
    split = split.cast_column("audio", datasets.Audio(decode=False)).map(
        lambda row, i: {"audio": {"bytes": f"row-{i}".encode(), "path": None}}, with_indices=True
    )
    datasets.DatasetDict({"train": split}).save_to_disk(str(tmp_path / "cv"))
    loads = []
    real_load = hub._load

    def counting_load(*args):
        load = real_load(*args)
        return lambda: loads.append(1) or load()

    monkeypatch.setattr(hub, "AUDIO_BLOCK", 2)
    monkeypatch.setattr(hub, "_load", counting_load)
    rows = _rows_file(tmp_path / "rows.json", {"pl": {"train": [0, 2, 3, 4, 5]}})
    cfg = HFSourceConfig(splits={"train": "train"}, name="pl", select={"train": SplitSelection(rows=rows)})
    candidates, _ = hf_candidates(str(tmp_path / "cv"), cfg, LANGUAGES)
    assert len(loads) == 1
    with_audio = [(c.line, c.record["id"], c.audio) for c in candidates]
    assert len(loads) == 1 + 3  # blocks [0, 2], [3, 4], [5]
    assert with_audio == [(i, f"pl-train-common_voice_pl_train{i}", f"row-{i}".encode()) for i in (0, 2, 3, 4, 5)]
    assert [c.record["id"] for c in candidates.records()] == [r[1] for r in with_audio]
