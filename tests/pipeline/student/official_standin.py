"""A tiny stand-in for a released DistilWhisper student, and an independent reference of its forward pass.

The names and shapes follow the official code (naver/multilingual-distilwhisper,
``model/DistilWhisper.py``: ``CLSRFFN`` holds ``gate_in``, ``gate_out`` and
``proj`` ModuleDicts keyed by the lower-case language name and ``shared``;
``DistilWhisperEncoderLayer`` / ``DecoderLayer`` keep Whisper's attention and
norm names and replace ``fc1``/``fc2`` by ``ffn_clsr``). The weights are random
with a fixed seed. The reference computes the official inference forward
(hard gates ``g = 1[G >= 0]``, ``g * FFN_L + (1 - g) * FFN_shared``) straight
from that state dict with torch.nn.functional, so it shares no code with the
importer or with transformers' Whisper.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

D, FFN_DIM, HEADS, LAYERS, MELS, VOCAB, GATE = 64, 128, 4, 2, 80, 51865, 16
SOURCE_POSITIONS, TARGET_POSITIONS = 1500, 448


def _attention_shapes(prefix: str) -> dict[str, tuple[int, ...]]:
    shapes = {f"{prefix}.k_proj.weight": (D, D)}  # WhisperAttention: k_proj has no bias
    for proj in ("v_proj", "q_proj", "out_proj"):
        shapes |= {f"{prefix}.{proj}.weight": (D, D), f"{prefix}.{proj}.bias": (D,)}
    return shapes


def _norm(prefix: str) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (D,), f"{prefix}.bias": (D,)}


def _ffn(prefix: str) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.fc1.weight": (FFN_DIM, D),
        f"{prefix}.fc1.bias": (FFN_DIM,),
        f"{prefix}.fc2.weight": (D, FFN_DIM),
        f"{prefix}.fc2.bias": (D,),
    }


def base_shapes() -> dict[str, tuple[int, ...]]:
    """The official base state dict's names and shapes (no language experts)."""
    shapes = {
        "model.encoder.conv1.weight": (D, MELS, 3),
        "model.encoder.conv1.bias": (D,),
        "model.encoder.conv2.weight": (D, D, 3),
        "model.encoder.conv2.bias": (D,),
        "model.encoder.embed_positions.weight": (SOURCE_POSITIONS, D),
        "model.decoder.embed_tokens.weight": (VOCAB, D),
        "model.decoder.embed_positions.weight": (TARGET_POSITIONS, D),
        **_norm("model.encoder.layer_norm"),
        **_norm("model.decoder.layer_norm"),
    }
    for side in ("encoder", "decoder"):
        for i in range(LAYERS):
            layer = f"model.{side}.layers.{i}"
            shapes |= _attention_shapes(f"{layer}.self_attn") | _norm(f"{layer}.self_attn_layer_norm")
            shapes |= _norm(f"{layer}.final_layer_norm") | _ffn(f"{layer}.ffn_clsr.proj.shared")
            if side == "decoder":
                shapes |= _attention_shapes(f"{layer}.encoder_attn") | _norm(f"{layer}.encoder_attn_layer_norm")
    return shapes


def expert_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Language ``name``'s expert and gate parameters in every layer (``CLSRFFN.add_language``)."""
    shapes = {}
    for side in ("encoder", "decoder"):
        for i in range(LAYERS):
            clsr = f"model.{side}.layers.{i}.ffn_clsr"
            shapes |= _ffn(f"{clsr}.proj.{name}")
            shapes |= {f"{clsr}.gate_in.{name}.weight": (GATE, D), f"{clsr}.gate_in.{name}.bias": (GATE,)}
            shapes |= {f"{clsr}.gate_out.{name}.weight": (1, GATE)}
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        if key.endswith("norm.weight"):
            state[key] = 1.0 + 0.1 * noise
        elif ".gate_" in key:
            state[key] = 0.3 * noise  # gates that open on some tokens and close on others
        else:
            state[key] = 0.05 * noise
    return state


def write_standin(out: Path, seed: int = 0) -> Path:
    """A released-student folder: config.json, pytorch_model.bin (polish's experts inside, as ``clsr_langs``
    puts them), expert.czech.bin, expert.catalan.safetensors; no tokenizer (``copy_processor`` adds one)."""
    from safetensors.torch import save_file

    from pipeline.models.tiny import tiny_whisper_config

    generator = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True)
    config = tiny_whisper_config().to_dict()
    config |= {
        "model_type": "distilwhisper",
        "architectures": ["DistilWhisperForConditionalGeneration"],
        "clsr_langs": ["polish"],
        "clsr_gate_dim": GATE,
        "skip_gate_prob": 0.2,
        "clsr_max_steps": 10000,
        "clsr_residual": False,
        "use_gate_budget": False,
        "gate_budget": 0.0,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    base = random_state(base_shapes(), generator)
    for name in ("polish", "czech", "catalan"):
        experts = random_state(expert_shapes(name), generator)
        for key in [k for k in experts if ".proj." in k]:  # experts start from the shared FFN, then move away
            experts[key] = base[key.replace(f".proj.{name}.", ".proj.shared.")] + 0.5 * experts[key]
        if name == "polish":
            base |= experts
        elif name == "czech":
            torch.save(experts, out / "expert.czech.bin")
        else:
            save_file(experts, str(out / "expert.catalan.safetensors"))
    base["proj_out.weight"] = base["model.decoder.embed_tokens.weight"]
    torch.save(base, out / "pytorch_model.bin")
    return out


def official_state(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """The state dict the official ``load_experts(name)`` would leave: the base plus that language's file."""
    from safetensors.torch import load_file

    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    for path in folder.glob(f"expert.{name}.*"):
        state |= load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
    return state


def _attention(w, prefix: str, x: torch.Tensor, kv: torch.Tensor, causal: bool) -> torch.Tensor:
    b, t, _ = x.shape
    head = D // HEADS
    q = F.linear(x, w[f"{prefix}.q_proj.weight"], w[f"{prefix}.q_proj.bias"]) * head**-0.5
    k = F.linear(kv, w[f"{prefix}.k_proj.weight"])
    v = F.linear(kv, w[f"{prefix}.v_proj.weight"], w[f"{prefix}.v_proj.bias"])
    q, k, v = (m.view(b, -1, HEADS, head).transpose(1, 2) for m in (q, k, v))
    scores = q @ k.transpose(-1, -2)
    if causal:
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), -math.inf)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, D)
    return F.linear(out, w[f"{prefix}.out_proj.weight"], w[f"{prefix}.out_proj.bias"])


def _ffn_apply(w, prefix: str, z: torch.Tensor) -> torch.Tensor:
    return F.linear(
        F.gelu(F.linear(z, w[f"{prefix}.fc1.weight"], w[f"{prefix}.fc1.bias"])),
        w[f"{prefix}.fc2.weight"],
        w[f"{prefix}.fc2.bias"],
    )


def _clsr(w, prefix: str, z: torch.Tensor, name: str, routes: list[float]) -> torch.Tensor:
    gate = F.linear(
        F.relu(F.linear(z, w[f"{prefix}.gate_in.{name}.weight"], w[f"{prefix}.gate_in.{name}.bias"])),
        w[f"{prefix}.gate_out.{name}.weight"],
    )
    g = (gate >= 0.0).to(z.dtype)
    routes.append(float(g.mean()))
    return g * _ffn_apply(w, f"{prefix}.proj.{name}", z) + (1 - g) * _ffn_apply(w, f"{prefix}.proj.shared", z)


def _norm_apply(w, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (D,), w[f"{prefix}.weight"], w[f"{prefix}.bias"], eps=1e-5)


def reference_logits(
    w: dict[str, torch.Tensor], features: torch.Tensor, ids: torch.Tensor, name: str
) -> tuple[torch.Tensor, list[float]]:
    """Teacher-forced logits of the official model with ``name``'s experts and hard gates, and each CLSR layer's
    share of tokens routed to the expert."""
    routes: list[float] = []
    x = F.gelu(F.conv1d(features, w["model.encoder.conv1.weight"], w["model.encoder.conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, w["model.encoder.conv2.weight"], w["model.encoder.conv2.bias"], stride=2, padding=1))
    x = x.permute(0, 2, 1) + w["model.encoder.embed_positions.weight"]
    for i in range(LAYERS):
        layer = f"model.encoder.layers.{i}"
        h = _norm_apply(w, f"{layer}.self_attn_layer_norm", x)
        x = x + _attention(w, f"{layer}.self_attn", h, h, causal=False)
        x = x + _clsr(w, f"{layer}.ffn_clsr", _norm_apply(w, f"{layer}.final_layer_norm", x), name, routes)
    memory = _norm_apply(w, "model.encoder.layer_norm", x)
    y = (
        F.embedding(ids, w["model.decoder.embed_tokens.weight"])
        + w["model.decoder.embed_positions.weight"][: ids.shape[1]]
    )
    for i in range(LAYERS):
        layer = f"model.decoder.layers.{i}"
        h = _norm_apply(w, f"{layer}.self_attn_layer_norm", y)
        y = y + _attention(w, f"{layer}.self_attn", h, h, causal=True)
        h = _norm_apply(w, f"{layer}.encoder_attn_layer_norm", y)
        y = y + _attention(w, f"{layer}.encoder_attn", h, memory, causal=False)
        y = y + _clsr(w, f"{layer}.ffn_clsr", _norm_apply(w, f"{layer}.final_layer_norm", y), name, routes)
    y = _norm_apply(w, "model.decoder.layer_norm", y)
    return F.linear(y, w["model.decoder.embed_tokens.weight"]), routes


def copy_processor(src: Path, out: Path) -> None:
    """Put an HF folder's tokenizer, feature extractor and generation config beside a stand-in."""
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "preprocessor_config.json",
        "generation_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "normalizer.json",
    ):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
