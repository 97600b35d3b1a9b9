"""Every params profile is valid for every stage; the paper profile runs against local stand-ins."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pipeline.cache.build import CacheTeacherConfig
from pipeline.core.config import load_section
from pipeline.data.hub import load_rows
from pipeline.data.prepare import HFSourceConfig, PrepareDataConfig, prepare_data
from pipeline.evaluate.benchmark import BenchmarkConfig
from pipeline.evaluate.longform import LongformConfig
from pipeline.evaluate.quantize import QuantizeConfig
from pipeline.models.specs import ImportModelsConfig, parse_model_spec
from pipeline.report.build import ReportConfig
from pipeline.report.docs import overridden_params
from pipeline.student.export import ExportConfig
from pipeline.student.train import TrainStageConfig

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {
    "import_models": ImportModelsConfig,
    "prepare_data": PrepareDataConfig,
    "cache_teacher": CacheTeacherConfig,
    "train_student": TrainStageConfig,
    "export_student": ExportConfig,
    "quantize": QuantizeConfig,
    "benchmark": BenchmarkConfig,
    "longform": LongformConfig,
    "report": ReportConfig,
}
OFFICIAL_LISTS = {  # naver/multilingual-distilwhisper 6faf22a, data/generated_ids/
    "cv_3k.json": "37c5dd16d6adea4dde7242959d50dcef506a8577be581625a627fc71d7bdcb6f",
    "cv_10k.json": "9aee7a02506dfb79211a8bcc5804425b0addd7ea2cd807396b374c364ccea318",
    "cv_28k.json": "bece6f5d28df3031bb9316fb7c2f25daa8859ff25fa91095d29dcf2df2471d97",
}


EXPERIMENTS = sorted(p.name for p in (ROOT / "profiles").glob("*.overrides"))


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/tiny.yaml", "profiles/paper.yaml", *EXPERIMENTS])
def test_profile_sections_are_valid(profile, tmp_path):
    path = ROOT / profile
    if profile.endswith(".overrides"):  # a documented experiment: params.yaml with its changes (run_experiment.sh)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(overridden_params(ROOT / "params.yaml", ROOT / "profiles" / profile)))
    for section, cls in SECTIONS.items():
        config = load_section(cls, section, path)
        if section == "train_student":
            assert config.configs()  # every mode's TrainConfig validates too
            for c in config.configs():
                c.check()
        if section == "cache_teacher":
            config.check()


def test_paper_profile_names_hub_models_and_datasets():
    paper = load_section(ImportModelsConfig, "import_models", ROOT / "profiles/paper.yaml")
    assert {str(parse_model_spec(s)) for s in paper.models.values()} == {
        "openai/whisper-large-v2",
        "openai/whisper-small",
    }
    prep = load_section(PrepareDataConfig, "prepare_data", ROOT / "profiles/paper.yaml")
    assert {d.input for d in prep.hf_datasets} == {"mozilla-foundation/common_voice_13_0", "google/fleurs"}
    assert sorted({d.name for d in prep.hf_datasets if "common_voice" in d.input}) == [
        "ca",
        "cs",
        "gl",
        "hu",
        "pl",
        "ta",
        "th",
        "uk",
    ]


def test_paper_profile_selects_train_and_dev_by_the_official_lists_and_reads_test_whole():
    prep = load_section(PrepareDataConfig, "prepare_data", ROOT / "profiles/paper.yaml")
    for d in prep.hf_datasets:
        assert d.max_per_split == 0, d.name
        if "fleurs" in d.input:
            assert d.select == {} and d.splits == {"test_ood": "test"}, d.name
            continue
        assert d.splits == {"train": "train", "dev": "validation", "test": "test"}, d.name
        assert set(d.select) == {"train", "dev"}, d.name  # test: the whole split
        for split, sel in d.select.items():
            sel.check(d.name)
            assert sel.top_by == ("-up_votes", "down_votes")
            rows = load_rows(ROOT / sel.rows, d.name, d.splits[split])
            assert len(rows) == {"train": 3000, "dev": 500}[split], (d.name, split)
    readme = (ROOT / "profiles/cv13_subsets/README.md").read_text(encoding="utf-8")
    for name, digest in OFFICIAL_LISTS.items():  # unmodified copies of the official files
        assert hashlib.sha256((ROOT / "profiles/cv13_subsets" / name).read_bytes()).hexdigest() == digest
        assert digest in readme


def test_paper_prepare_data_with_local_stand_ins(tmp_path, tiny_hf_dir, monkeypatch):
    """The paper's hf_datasets list, each entry pointed at a local stand-in: Common Voice as a save_to_disk
    folder of the hub's columns, FLEURS as a copy of the hub's Parquet export (google/fleurs' layout,
    ``<config>/fleurs-test.parquet``), which is what a hub id is read from.

    The official row lists index the real splits, so each selection's list is swapped for one of the
    stand-in's top rows; the rule check (top_by) stays as the profile has it.
    """
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")

    from tests.pipeline.data.test_hub import cv_stand_in  # noqa: PLC0415
    from tests.pipeline.data.test_prepare import _speech, _wav_bytes  # noqa: PLC0415

    audio = datasets.Audio(decode=False)
    folders = {}
    for lang in ("pl", "cs"):
        cv = cv_stand_in(tmp_path / f"cv-{lang}", lang, n_test=3, audio_bytes=_wav_bytes(_speech(1.0, 48_000), 48_000))
        fl = (
            datasets.Dataset.from_dict(
                {
                    "id": [1],
                    "audio": [{"bytes": _wav_bytes(_speech(1.5), 16_000), "path": None}],
                    "transcription": ["dobrý den"],
                    "language": ["Czech"],
                    "gender": [0],
                }
            )
            .cast_column("audio", audio)
            .cast_column("gender", datasets.ClassLabel(names=["male", "female", "other"]))
        )
        config = {"pl": "pl_pl", "cs": "cs_cz"}[lang]
        (tmp_path / "fleurs" / config).mkdir(parents=True)
        fl.to_parquet(str(tmp_path / "fleurs" / config / "fleurs-test.parquet"))
        folders[lang] = (cv, tmp_path / "fleurs")
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({lang: {"train": [2, 1], "validation": [1]} for lang in folders}), encoding="utf-8")
    paper = load_section(PrepareDataConfig, "prepare_data", ROOT / "profiles/paper.yaml")
    stand_ins = []
    for d in paper.hf_datasets:
        lang = d.language or d.name
        if lang in folders:
            select = {split: replace(sel, rows=rows) for split, sel in d.select.items()}
            stand_ins.append(replace(d, input=str(folders[lang][0 if "common_voice" in d.input else 1]), select=select))
    cfg = replace(paper, out_dir=tmp_path / "prepared", model=tiny_hf_dir, workers=1, hf_datasets=tuple(stand_ins))
    summary = prepare_data(cfg)
    assert summary["kept"] == 2 * (2 + 1 + 3 + 1) and summary["rejected"] == 0
    assert {s: v["utterances"] for s, v in summary["by_split"].items()} == {
        "train": 4,
        "dev": 2,
        "test": 6,
        "test_ood": 2,
    }
    assert isinstance(cfg.hf, HFSourceConfig)
