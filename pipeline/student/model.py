"""Student models: layer-copied Whispers, CLSR wrapping, and the student folder.

A student spec names a base HF checkpoint and, optionally, which encoder
and decoder layers to keep (copied, as distil-whisper initialises its
students), so a student can be smaller than its teacher while sharing its
tokenizer, and so its teacher cache.

Student folder (DESIGN.md): ``student.json`` (base and its sha256, layers
kept, languages, CLSR config, training params), ``expert.<lang>.safetensors``
per language for CLSR modes (a language can be added later by training only
its expert), ``model.safetensors`` for full fine-tuning, ``adapter/`` for
LoRA; plus the training log. :func:`load_student` rebuilds the model from
the folder alone (and the base checkpoint it names).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import sha256_files
from pipeline.models.clsr import CLSRConfig, add_clsr, expert_state_dict, load_expert_state_dict

log = logging.getLogger(__name__)
CLSR_MODES = ("distilwhisper", "clsr")
MODES = ("distilwhisper", "clsr", "finetune", "lora")


@dataclass(frozen=True)
class StudentSpec:
    base: Path
    keep_encoder_layers: tuple[int, ...] | None = None  # None: all
    keep_decoder_layers: tuple[int, ...] | None = None


def _keep(layers: nn.ModuleList, keep: tuple[int, ...] | None, side: str) -> nn.ModuleList:
    if keep is None:
        return layers
    bad = [i for i in keep if not 0 <= i < len(layers)]
    if bad or len(set(keep)) != len(keep) or list(keep) != sorted(keep):
        raise DwPipeError(f"keep_{side}_layers {list(keep)}: need increasing indices in 0..{len(layers) - 1}")
    return nn.ModuleList([layers[i] for i in keep])


def build_student(spec: StudentSpec):
    """The base model with only the kept layers (weights copied from the base)."""
    from transformers import WhisperForConditionalGeneration

    if not (spec.base / "config.json").is_file():
        raise DwPipeError(f"student base {spec.base} is not an HF checkpoint folder; run import_models first")
    model = WhisperForConditionalGeneration.from_pretrained(spec.base)
    model.model.encoder.layers = _keep(model.model.encoder.layers, spec.keep_encoder_layers, "encoder")
    model.model.decoder.layers = _keep(model.model.decoder.layers, spec.keep_decoder_layers, "decoder")
    model.config.encoder_layers = len(model.model.encoder.layers)
    model.config.decoder_layers = len(model.model.decoder.layers)
    for i, layer in enumerate(model.model.decoder.layers):
        layer.self_attn.layer_idx = i  # the KV cache is indexed by position in the kept stack
        if hasattr(layer, "encoder_attn"):
            layer.encoder_attn.layer_idx = i
    if spec.keep_decoder_layers is not None:
        heads = model.generation_config.alignment_heads or []
        remap = {old: new for new, old in enumerate(spec.keep_decoder_layers)}
        model.generation_config.alignment_heads = [[remap[layer], h] for layer, h in heads if layer in remap] or None
    return model.eval()


def save_student(
    out: Path,
    model,
    mode: str,
    spec: StudentSpec,
    languages: tuple[str, ...],
    clsr: CLSRConfig | None,
    params: dict,
    inputs: dict[str, str] | None = None,
) -> None:
    """Write the student folder's model files (call inside an atomic folder).

    ``inputs``: content fingerprints of what training read (``pipeline.student.inputs.training_inputs``)."""
    record = {
        "mode": mode,
        "base": str(spec.base),
        "base_weights_sha256": sha256_files(sorted(spec.base.glob("*.safetensors"))),
        "keep_encoder_layers": spec.keep_encoder_layers,
        "keep_decoder_layers": spec.keep_decoder_layers,
        "languages": list(languages),
        "clsr": asdict(clsr) if clsr else None,
        "training": params,
        "inputs": inputs or {},
    }
    if mode in CLSR_MODES:
        for lang in languages:
            save_file(expert_state_dict(model, lang), str(out / f"expert.{lang}.safetensors"))
    elif mode == "finetune":
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "proj_out.weight"},
            str(out / "model.safetensors"),
        )
    else:
        model.save_pretrained(out / "adapter")
    (out / "student.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def load_student(folder: Path):
    """Rebuild a trained student from its folder: ``(model, record)``; CLSR models come in eval mode with hard gates."""
    folder = Path(folder)
    path = folder / "student.json"
    if not path.is_file():
        raise DwPipeError(f"{folder}: no student.json; not a student folder")
    record = json.loads(path.read_text(encoding="utf-8"))
    spec = StudentSpec(
        Path(record["base"]),
        tuple(record["keep_encoder_layers"]) if record["keep_encoder_layers"] is not None else None,
        tuple(record["keep_decoder_layers"]) if record["keep_decoder_layers"] is not None else None,
    )
    if sha256_files(sorted(spec.base.glob("*.safetensors"))) != record["base_weights_sha256"]:
        raise DwPipeError(f"{folder}: base {spec.base} has other weights than the student was trained on")
    model = build_student(spec)
    mode = record["mode"]
    if mode in CLSR_MODES:
        cfg = record["clsr"]
        clsr = CLSRConfig(**{**cfg, **{k: tuple(v) for k, v in cfg.items() if isinstance(v, list)}})
        add_clsr(model, clsr)
        for expert in sorted(folder.glob("expert.*.safetensors")):
            load_expert_state_dict(model, expert.name.split(".")[1], load_file(str(expert)))
    elif mode == "finetune":
        missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
        if unexpected or [k for k in missing if k != "proj_out.weight"]:
            raise DwPipeError(f"{folder}/model.safetensors does not fit the student architecture")
        model.tie_weights()
    elif mode == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, folder / "adapter").merge_and_unload()
    return model.eval(), record


def trainable_parameters(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
