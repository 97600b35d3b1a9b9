"""export_student: a plain Whisper checkpoint per language, for transformers and CTranslate2.

CTranslate2 has one FFN per layer, so for language L each CLSR layer keeps
the branch its hard gates chose most often on the dev set at the best
checkpoint (``dev.json``: gate rates per language and layer): the expert
when the rate is at least ``threshold``, the shared FFN otherwise. The
benchmark reports exact (token-level) routing next to this static export.
Fully fine-tuned and LoRA students export their (merged) weights as they are.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_dir
from pipeline.models.clsr import clsr_layers
from pipeline.student.model import CLSR_MODES, StudentSpec, build_student, load_student

log = logging.getLogger(__name__)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "preprocessor_config.json")


@dataclass(frozen=True)
class ExportConfig:
    students: Path
    modes: tuple[str, ...]
    languages: tuple[str, ...]
    out_dir: Path
    threshold: float = 0.5


def export_student(student_dir: Path, language: str, out: Path, threshold: float = 0.5) -> dict:
    """Write ``out`` (HF checkpoint) for ``language``; returns the routing record."""
    model, record = load_student(student_dir)
    spec = StudentSpec(
        Path(record["base"]), _tuple(record["keep_encoder_layers"]), _tuple(record["keep_decoder_layers"])
    )
    routing: dict[str, dict] = {}
    if record["mode"] in CLSR_MODES:
        if language not in record["languages"]:
            raise DwPipeError(f"{student_dir} has no expert for {language} (it has {', '.join(record['languages'])})")
        dev = student_dir / "dev.json"
        if not dev.is_file():
            raise DwPipeError(
                f"{student_dir}: no dev.json (gate rates) to route by; measure them with "
                f"`dw-pipe student-gates {student_dir} --dev DEV_MANIFEST`"
            )
        rates = json.loads(dev.read_text()).get("gate_rates", {}).get(language, {})
        plain = build_student(spec)
        for layer in clsr_layers(model):
            side, index = layer.name.split(".")
            rate = rates.get(layer.name, 0.0)
            use_expert = rate >= threshold
            branch = layer.experts[language] if use_expert else layer.shared
            target = (plain.model.encoder if side == "encoder" else plain.model.decoder).layers[int(index)]
            target.fc1.load_state_dict(branch.fc1.state_dict())
            target.fc2.load_state_dict(branch.fc2.state_dict())
            routing[layer.name] = {"dev_gate_rate": round(rate, 4), "branch": "expert" if use_expert else "shared"}
        model = plain
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (spec.base / name).is_file():
                shutil.copyfile(spec.base / name, tmp / name)
        info = {
            "student": str(student_dir),
            "mode": record["mode"],
            # the language whose routing the export holds; null: a student without experts serves every language
            "language": language if record["mode"] in CLSR_MODES else None,
            "threshold": threshold,
            "routing": routing,
            # what the student's training read (student.json "inputs"): the report checks the benchmark's claims
            "trained_from": record.get("inputs", {}),
        }
        (tmp / "export.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log.info("exported %s for %s into %s", student_dir, language, out)
    return info


def export_all(cfg: ExportConfig) -> list[dict]:
    out = []
    for mode in cfg.modes:
        for lang in cfg.languages:
            out.append(export_student(cfg.students / mode, lang, cfg.out_dir / f"{mode}-{lang}", cfg.threshold))
    return out


def _tuple(value) -> tuple[int, ...] | None:
    return tuple(value) if value is not None else None
