"""Every params profile is valid for every stage; the paper profile runs against local stand-ins."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.benchmark import BenchmarkConfig
from pipeline.cache import CacheTeacherConfig
from pipeline.config import load_section
from pipeline.export import ExportConfig
from pipeline.models import ImportModelsConfig, parse_model_spec
from pipeline.prepare import HFSourceConfig, PrepareDataConfig, prepare_data
from pipeline.quantize import QuantizeConfig
from pipeline.report import ReportConfig
from pipeline.train import TrainStageConfig

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {
    "import_models": ImportModelsConfig,
    "prepare_data": PrepareDataConfig,
    "cache_teacher": CacheTeacherConfig,
    "train_student": TrainStageConfig,
    "export_student": ExportConfig,
    "quantize": QuantizeConfig,
    "benchmark": BenchmarkConfig,
    "report": ReportConfig,
}


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/tiny.yaml", "profiles/paper.yaml"])
def test_profile_sections_are_valid(profile):
    for section, cls in SECTIONS.items():
        config = load_section(cls, section, ROOT / profile)
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


def test_paper_prepare_data_with_local_stand_ins(tmp_path, tiny_hf_dir):
    """The paper's hf_datasets list, each entry pointed at a local save_to_disk stand-in."""
    import datasets

    from tests.pipeline.test_prepare import _speech, _wav_bytes  # noqa: PLC0415

    audio = datasets.Audio(decode=False)
    folders = {}
    for lang in ("pl", "cs"):
        cv = datasets.Dataset.from_dict(
            {
                "client_id": ["a", "b"],
                "path": [f"{lang}1.mp3", f"{lang}2.mp3"],
                "locale": [lang, lang],
                "gender": ["male", "female"],
                "audio": [{"bytes": _wav_bytes(_speech(1.0, 48_000), 48_000), "path": None}] * 2,
                "sentence": ["Ahoj.", "Dobrý den."],
            }
        ).cast_column("audio", audio)
        datasets.DatasetDict({"train": cv, "validation": cv.select([0]), "test": cv.select([1])}).save_to_disk(
            str(tmp_path / f"cv-{lang}")
        )
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
        datasets.DatasetDict({"test": fl}).save_to_disk(str(tmp_path / f"fleurs-{lang}"))
        folders[lang] = (tmp_path / f"cv-{lang}", tmp_path / f"fleurs-{lang}")
    paper = load_section(PrepareDataConfig, "prepare_data", ROOT / "profiles/paper.yaml")
    stand_ins = []
    for d in paper.hf_datasets:
        lang = d.language or d.name
        if lang in folders:
            stand_ins.append(replace(d, input=str(folders[lang][0 if "common_voice" in d.input else 1])))
    cfg = replace(paper, out_dir=tmp_path / "prepared", model=tiny_hf_dir, workers=1, hf_datasets=tuple(stand_ins))
    summary = prepare_data(cfg)
    assert summary["kept"] == 2 * (2 + 1 + 1 + 1) and summary["rejected"] == 0
    assert set(summary["by_split"]) == {"train", "dev", "test", "test_ood"}
    assert isinstance(cfg.hf, HFSourceConfig)
