"""quantize: CTranslate2 conversion of HF Whisper checkpoints at each compute type.

The weights are converted once per requested type (``--quantization``);
the tokenizer and preprocessor config travel along. CTranslate2 falls back
silently when a type is not supported on a device (float16 on a CPU, say),
so the type it really uses is read back from the loaded model and recorded
next to the requested one in ``quantize.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_dir

log = logging.getLogger(__name__)

CPU_TYPES = ("float32", "int8", "int8_float32", "int16")
GPU_TYPES = ("float16", "int8_float16", "bfloat16")
COPY_FILES = ("tokenizer.json", "preprocessor_config.json")


@dataclass(frozen=True)
class QuantizeConfig:
    models: dict[str, str]  # name -> HF checkpoint folder
    compute_types: tuple[str, ...]
    out_dir: Path
    device: str = "cpu"


def folder_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 2)


def effective_compute_type(folder: Path, requested: str, device: str) -> str:
    import ctranslate2

    try:
        model = ctranslate2.models.Whisper(str(folder), device=device, compute_type=requested)
    except ValueError:  # e.g. float16 on a CPU without fast float16: "default" picks what the device can do
        model = ctranslate2.models.Whisper(str(folder), device=device, compute_type="default")
    return str(model.compute_type)


def quantize(model_dir: Path, out: Path, compute_type: str, device: str = "cpu") -> dict:
    import ctranslate2.converters

    if compute_type not in CPU_TYPES + GPU_TYPES:
        raise DwPipeError(f"compute type {compute_type!r} unknown; use one of {', '.join(CPU_TYPES + GPU_TYPES)}")
    if not (model_dir / "config.json").is_file():
        raise DwPipeError(f"{model_dir} is not an HF checkpoint folder")
    copy = [name for name in COPY_FILES if (model_dir / name).is_file()]
    with atomic_dir(out, overwrite=True) as tmp:
        converter = ctranslate2.converters.TransformersConverter(str(model_dir), copy_files=copy)
        converter.convert(str(tmp), quantization=compute_type, force=True)
        info = {
            "source": str(model_dir),
            "requested_compute_type": compute_type,
            "device": device,
            "effective_compute_type": effective_compute_type(tmp, compute_type, device),
            "model_size_mb": folder_mb(tmp),
        }
        (tmp / "quantize.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if info["effective_compute_type"] != compute_type:
        log.warning("%s: %s runs as %s on %s", out, compute_type, info["effective_compute_type"], device)
    return info


def quantize_all(cfg: QuantizeConfig) -> list[dict]:
    results = []
    for name, folder in cfg.models.items():
        for compute_type in cfg.compute_types:
            results.append(
                {
                    "model": name,
                    **quantize(Path(folder), cfg.out_dir / f"{name}-{compute_type}", compute_type, cfg.device),
                }
            )
    return results
