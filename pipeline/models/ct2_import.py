"""Turn a CTranslate2 Whisper checkpoint into a complete Hugging Face checkpoint.

The inverse of ``ctranslate2.converters.TransformersConverter`` for Whisper:
fused q/k/v (self-attention ``linear_0``) and k/v (cross-attention
``linear_1``) projections are split again, layer norms renamed, and the
tokenizer, generation config and feature-extractor config are rebuilt from
the CTranslate2 ``config.json`` and ``tokenizer.json``. Weights are written
as float32 safetensors: float16 and bfloat16 widen to float32 exactly, so a
re-conversion at the source precision reproduces the source bit for bit.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_dir, sha256_files
from pipeline.models.ct2_format import CT2Checkpoint, CT2FormatError, model_bin_parts, read_ct2_model

log = logging.getLogger(__name__)

FLOAT_DTYPES = frozenset({"float32", "float16", "bfloat16"})
# Scalars the Whisper spec stores besides weights, with the values a standard
# Whisper has (ctranslate2.specs: pre-norm, GELU (=3), no ALiBi, unscaled embeddings).
EXPECTED_FLAGS = {
    "decoder/pre_norm": 1,
    "decoder/activation": 3,
    "decoder/alibi": 0,
    "decoder/scale_embeddings": 0,
}
IGNORED_SCALARS = frozenset(
    {
        "encoder/num_heads",
        "decoder/num_heads",
        "decoder/alibi_use_positive_positions",
        "decoder/scale_alibi",
        "decoder/start_from_zero_embedding",
        "decoder/alignment_heads",
        "decoder/alignment_layer",
    }
)
IMPORT_RECORD = "import.json"


class CT2ImportError(DwPipeError, ValueError):
    """The source cannot be imported as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class CT2Source:
    """Where a CTranslate2 Whisper model's files lie (one or several folders)."""

    name: str
    dirs: tuple[Path, ...]

    def file(self, filename: str) -> Path:
        found = [d / filename for d in self.dirs if (d / filename).is_file()]
        if not found:
            raise CT2ImportError(f"{self.name}: {filename} not found in {', '.join(map(str, self.dirs))}")
        return found[0]

    def model_parts(self) -> list[Path]:
        return model_bin_parts(list(self.dirs))


@dataclass(frozen=True)
class ImportResult:
    out: Path
    source_sha256: str
    skipped: bool


def import_ct2(source: CT2Source, out: Path, *, overwrite: bool = False) -> ImportResult:
    """Write the HF checkpoint of ``source`` to ``out`` (atomically).

    An ``out`` that already holds the import of the same source is left as it
    is; one that holds anything else is refused unless ``overwrite``.
    """
    parts = source.model_parts()
    config_path, tokenizer_path = source.file("config.json"), source.file("tokenizer.json")
    digest = sha256_files([*parts, config_path, tokenizer_path])
    if _already_imported(out, digest, overwrite):
        log.info("%s already holds the import of %s; nothing to do", out, source.name)
        return ImportResult(out, digest, skipped=True)

    ckpt = read_ct2_model(parts)
    if ckpt.spec_name != "WhisperSpec":
        raise CT2ImportError(f"{source.name}: model.bin holds a {ckpt.spec_name or 'pre-v2'} model, not WhisperSpec")
    ct2_config = json.loads(config_path.read_text(encoding="utf-8"))
    vocab = read_vocabulary(tokenizer_path)
    state = whisper_state_dict(ckpt)
    config = whisper_config(ckpt, ct2_config, vocab)

    with atomic_dir(out, overwrite=overwrite) as tmp:
        _save_model(config, state, tmp)
        generation_config_for(config, ct2_config, vocab).save_pretrained(tmp)
        save_tokenizer(tokenizer_path, tmp, config.max_target_positions)
        from transformers import WhisperFeatureExtractor

        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        record = {
            "source": source.name,
            "source_sha256": digest,
            "source_files": [p.name for p in [*parts, config_path, tokenizer_path]],
            "spec": f"{ckpt.spec_name} revision {ckpt.spec_revision}, binary version {ckpt.binary_version}",
            "source_dtypes": sorted({ckpt.dtypes[k] for k in ckpt.variables if ckpt.variables[k].ndim}),
            "weights_dtype": "float32",
            "weights_sha256": sha256_files(sorted(tmp.glob("*.safetensors"))),
        }
        (tmp / IMPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("imported %s into %s", source.name, out)
    return ImportResult(out, digest, skipped=False)


def _already_imported(out: Path, digest: str, overwrite: bool) -> bool:
    if not out.exists():
        return False
    if not out.is_dir():
        raise CT2ImportError(f"output {out} exists and is not a folder; choose another output path")
    if not any(out.iterdir()):
        return False
    record = out / IMPORT_RECORD
    if not overwrite and record.is_file():
        try:
            if json.loads(record.read_text(encoding="utf-8")).get("source_sha256") == digest:
                return True
        except json.JSONDecodeError:
            pass
    if overwrite:
        return False
    raise CT2ImportError(
        f"output folder {out} already holds something else; choose an empty folder or pass --overwrite to replace it"
    )


def _as_float32(ckpt: CT2Checkpoint, name: str) -> torch.Tensor:
    target = ckpt.aliases.get(name, name)
    dtype = ckpt.dtypes.get(target)
    if dtype not in FLOAT_DTYPES:
        raise CT2ImportError(
            f"variable {name} is stored as {dtype}; only float32/float16/bfloat16 checkpoints can be imported "
            "(a quantized model loses precision: convert the original with --quantization float16)"
        )
    array = ckpt.get(name)
    if dtype == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16).float()
    return torch.from_numpy(array.astype(np.float32))


def _layer_count(ckpt: CT2Checkpoint, side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in ckpt.variables:
        n += 1
    if n == 0:
        raise CT2ImportError(f"no {side} layers found: not a Whisper checkpoint")
    return n


def whisper_state_dict(ckpt: CT2Checkpoint) -> dict[str, torch.Tensor]:
    """Map every CTranslate2 variable to its HF Whisper parameter (float32)."""
    for name, want in EXPECTED_FLAGS.items():
        if name in ckpt.variables and ckpt.scalar(name) != want:
            raise CT2ImportError(f"{name} = {ckpt.scalar(name)} (standard Whisper has {want}); cannot import")
    used: set[str] = set()
    state: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        used.add(ckpt.aliases.get(name, name))
        return _as_float32(ckpt, name)

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        state[f"{hf}.weight"] = take(f"{ct2}/weight")
        if bias:
            state[f"{hf}.bias"] = take(f"{ct2}/bias")

    def norm(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"] = take(f"{ct2}/gamma")
        state[f"{hf}.bias"] = take(f"{ct2}/beta")

    def fused(hf_names: list[str], ct2: str) -> None:
        weights = take(f"{ct2}/weight").chunk(len(hf_names), dim=0)
        biases = take(f"{ct2}/bias").chunk(len(hf_names), dim=0)
        for hf, w, b in zip(hf_names, weights, biases):
            state[f"{hf}.weight"] = w.clone()
            if hf.endswith("k_proj"):
                if torch.count_nonzero(b):
                    raise CT2ImportError(f"{ct2}/bias has a non-zero key bias; Whisper's k_proj has none")
            else:
                state[f"{hf}.bias"] = b.clone()

    for side in ("encoder", "decoder"):
        base = f"model.{side}"
        for i in range(_layer_count(ckpt, side)):
            hf, ct2 = f"{base}.layers.{i}", f"{side}/layer_{i}"
            attn = f"{hf}.self_attn"
            fused([f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], f"{ct2}/self_attention/linear_0")
            linear(f"{attn}.out_proj", f"{ct2}/self_attention/linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
            if side == "decoder":
                cross = f"{hf}.encoder_attn"
                linear(f"{cross}.q_proj", f"{ct2}/attention/linear_0")
                fused([f"{cross}.k_proj", f"{cross}.v_proj"], f"{ct2}/attention/linear_1")
                linear(f"{cross}.out_proj", f"{ct2}/attention/linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
            norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
            linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        norm(f"{base}.layer_norm", f"{side}/layer_norm")
        state[f"{base}.embed_positions.weight"] = take(f"{side}/position_encodings/encodings")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    state["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    projection = take("decoder/projection/weight")
    if not torch.equal(projection, state["model.decoder.embed_tokens.weight"]):
        raise CT2ImportError("decoder/projection/weight differs from the token embeddings; HF Whisper ties them")
    unused = set(ckpt.variables) - used - IGNORED_SCALARS - set(EXPECTED_FLAGS)
    if unused:
        raise CT2ImportError(f"variables with no HF Whisper counterpart: {sorted(unused)[:5]}; not a standard Whisper")
    return state


def read_vocabulary(tokenizer_path: Path) -> dict[str, int]:
    data = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    vocab = dict(data["model"]["vocab"])
    vocab.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
    return vocab


def _token_id(vocab: dict[str, int], token: str) -> int:
    if token not in vocab:
        raise CT2ImportError(f"tokenizer.json has no {token} token: not a Whisper tokenizer")
    return vocab[token]


def whisper_config(ckpt: CT2Checkpoint, ct2_config: dict, vocab: dict[str, int]):
    """The HF ``WhisperConfig`` implied by the tensor shapes, head counts and tokenizer."""
    from transformers import WhisperConfig

    conv1 = ckpt.get("encoder/conv1/weight")
    eot = _token_id(vocab, "<|endoftext|>")
    return WhisperConfig(
        vocab_size=ckpt.get("decoder/embeddings/weight").shape[0],
        num_mel_bins=conv1.shape[1],
        d_model=conv1.shape[0],
        encoder_layers=_layer_count(ckpt, "encoder"),
        decoder_layers=_layer_count(ckpt, "decoder"),
        encoder_attention_heads=ckpt.scalar("encoder/num_heads"),
        decoder_attention_heads=ckpt.scalar("decoder/num_heads"),
        encoder_ffn_dim=ckpt.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=ckpt.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=ckpt.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=ckpt.get("decoder/position_encodings/encodings").shape[0],
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=_token_id(vocab, "<|startoftranscript|>"),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eot])),
        architectures=["WhisperForConditionalGeneration"],
        tie_word_embeddings=True,
    )


def generation_config_for(config, ct2_config: dict, vocab: dict[str, int]):
    from transformers import GenerationConfig

    id_to_token = {i: t for t, i in vocab.items()}
    lang_ids = list(ct2_config.get("lang_ids", []))
    missing = [i for i in lang_ids if i not in id_to_token]
    if missing:
        raise CT2ImportError(f"config.json lang_ids {missing[:3]} are not in tokenizer.json")
    return GenerationConfig(
        alignment_heads=[list(map(int, h)) for h in ct2_config.get("alignment_heads", [])],
        begin_suppress_tokens=config.begin_suppress_tokens,
        suppress_tokens=config.suppress_tokens,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        is_multilingual=bool(lang_ids),
        lang_to_id={id_to_token[i]: i for i in lang_ids},
        task_to_id={t: _token_id(vocab, f"<|{t}|>") for t in ("transcribe", "translate")} if lang_ids else {},
        no_timestamps_token_id=_token_id(vocab, "<|notimestamps|>"),
        prev_sot_token_id=_token_id(vocab, "<|startofprev|>"),
        max_initial_timestamp_index=50,
        max_length=config.max_target_positions,
        return_timestamps=False,
    )


def _save_model(config, state: dict[str, torch.Tensor], out: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise CT2ImportError(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.save_pretrained(out)


def save_tokenizer(tokenizer_path: Path, out: Path, max_length: int) -> None:
    """Save a transformers WhisperTokenizer plus the BPE ``vocab.json``/``merges.txt`` other tools read."""
    from tokenizers import Tokenizer
    from transformers import WhisperTokenizer

    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizer(
        tokenizer_object=Tokenizer.from_file(str(tokenizer_path)),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(out)
    shutil.copyfile(tokenizer_path, out / "tokenizer.json")  # keep the source file byte for byte
    model = json.loads(tokenizer_path.read_text(encoding="utf-8"))["model"]
    (out / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def assemble_ct2_dir(source: CT2Source, out: Path) -> Path:
    """A plain CTranslate2 folder (one ``model.bin``) that CTranslate2 and faster-whisper load."""
    with atomic_dir(out, overwrite=True) as tmp:
        with open(tmp / "model.bin", "wb") as sink:
            for part in source.model_parts():
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, sink, 1 << 20)
        for name in ("config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt"):
            found = [d / name for d in source.dirs if (d / name).is_file()]
            if found:
                shutil.copyfile(found[0], tmp / name)
    return out


__all__ = ["CT2FormatError", "CT2ImportError", "CT2Source", "ImportResult", "assemble_ct2_dir", "import_ct2"]
