"""Import the students the DistilWhisper authors released into dw-pipe student folders.

The paper's students (``naver/multilingual-distilwhisper-3k``, ``-10k``,
``-28k`` on the Hugging Face Hub) are whisper-small with CLSR in every
encoder and decoder layer. They load only in the official code
(naver/multilingual-distilwhisper, ``model/DistilWhisper.py``:
``DistilWhisperForConditionalGeneration.from_pretrained`` then
``load_experts("catalan")``), which pins transformers 4.30. The layout
that code reads, and this module reads too:

* ``config.json``: a ``WhisperConfig`` with ``model_type: distilwhisper`` and
  the CLSR fields ``clsr_langs``, ``clsr_gate_dim``, ``skip_gate_prob``,
  ``clsr_max_steps``, ``clsr_residual``, ``use_gate_budget``, ``gate_budget``;
* the base weights, ``pytorch_model.bin`` (a pickled state dict) or ``model.safetensors``;
* per language, ``expert.<name>.bin`` (or ``.safetensors``), where ``<name>``
  is Whisper's lower-case language name (``catalan``), holding that
  language's expert FFNs and gates under the full model's names.

State-dict names, official -> ours (``{s}`` encoder or decoder, ``{i}`` the layer, ``{L}`` the language name):

====================================================================  ======================================
``model.{s}.layers.{i}.ffn_clsr.proj.shared.fc1|fc2.weight|bias``     base ``model.{s}.layers.{i}.fc1|fc2.*``
``model.{s}.layers.{i}.ffn_clsr.proj.{L}.fc1|fc2.weight|bias``        expert file ``{s}.{i}.expert.fc1|fc2.*``
``model.{s}.layers.{i}.ffn_clsr.gate_in.{L}.weight|bias``             expert file ``{s}.{i}.gate.w1.*``
``model.{s}.layers.{i}.ffn_clsr.gate_out.{L}.weight``                 expert file ``{s}.{i}.gate.w2.weight``
``proj_out.weight``                                                   dropped: tied to ``model.decoder.embed_tokens``
every other ``model.*`` name                                          base, the same name
====================================================================  ======================================

The official forward with a language set (``CLSRFFN.forward``, not training) is
``g * FFN_L(z) + (1 - g) * FFN_shared(z)`` with ``g = 1[G >= 0]`` and
``G = gate_out(relu(gate_in(z)))``: the hard routing of :mod:`pipeline.models.clsr`.
Pickled files are read with ``torch.load(..., weights_only=True)`` and anything
that is not a plain tensor state dict is refused.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_dir, sha256_files
from pipeline.models.clsr import CLSRConfig, add_clsr, load_expert_state_dict
from pipeline.models.specs import HUB_ID
from pipeline.student.model import StudentSpec, build_student, load_student, save_student

log = logging.getLogger(__name__)

OFFICIAL_PREFIX = "distilwhisper:"
CLSR_FIELDS = (
    "clsr_langs",
    "clsr_gate_dim",
    "skip_gate_prob",
    "clsr_max_steps",
    "clsr_residual",
    "use_gate_budget",
    "gate_budget",
)
BASE_FILES = ("model.safetensors", "pytorch_model.bin")
PROCESSOR_FILES = (
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "normalizer.json",
)
_SHARED = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.ffn_clsr\.proj\.shared\.(fc[12]\.(?:weight|bias))$")
_LANGUAGE = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.ffn_clsr\.(proj|gate_in|gate_out)\.([^.]+)\.(.+)$")
# (official module, parameter) -> ours, inside a layer's expert file
_EXPERT_NAMES = {
    ("proj", "fc1.weight"): "expert.fc1.weight",
    ("proj", "fc1.bias"): "expert.fc1.bias",
    ("proj", "fc2.weight"): "expert.fc2.weight",
    ("proj", "fc2.bias"): "expert.fc2.bias",
    ("gate_in", "weight"): "gate.w1.weight",
    ("gate_in", "bias"): "gate.w1.bias",
    ("gate_out", "weight"): "gate.w2.weight",
}


@dataclass(frozen=True)
class OfficialSource:
    folder: Path
    spec: str  # as the user gave it


def language_code(name: str) -> str:
    """Whisper's code for an official language name (``catalan`` -> ``ca``); a code is taken as it is."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    name = name.lower()
    if name in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[name]
    if name in LANGUAGES:
        return name
    raise DwPipeError(f"expert language {name!r} is neither a Whisper language name nor a code")


def language_name(code: str) -> str:
    """The official code's name for a language code (``ca`` -> ``catalan``: its ``lang_to_whisper[...].lower()``)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    if code not in LANGUAGES:
        raise DwPipeError(f"language {code!r} is not a Whisper language code")
    return LANGUAGES[code]


def resolve_source(spec: str, languages: tuple[str, ...] | None = None) -> OfficialSource:
    """``distilwhisper:OWNER/NAME`` (downloaded from the Hub) or ``distilwhisper:FOLDER`` -> the local folder."""
    if not spec.startswith(OFFICIAL_PREFIX):
        raise DwPipeError(f"{spec!r}: a released student is named distilwhisper:OWNER/NAME or distilwhisper:FOLDER")
    target = spec[len(OFFICIAL_PREFIX) :]
    path = Path(target).expanduser()
    if path.is_dir():
        return OfficialSource(path, spec)
    if target.startswith((".", "/", "~")) or not HUB_ID.match(target):
        raise DwPipeError(f"{spec!r}: no such folder, and not a hub id of the form owner/name")
    from huggingface_hub import snapshot_download

    experts = [f"expert.{language_name(c)}.*" for c in languages] if languages else ["expert.*"]
    patterns = ["config.json", *BASE_FILES, *PROCESSOR_FILES, *experts]
    log.info("downloading %s (%s)", target, ", ".join(patterns))
    return OfficialSource(Path(snapshot_download(target, allow_patterns=patterns)), spec)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a pickle that holds nothing but tensors (refused otherwise)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, or the RuntimeError torch raises for a forbidden global
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DwPipeError(f"{path}: not a plain tensor state dict, refusing to unpickle it ({first[:160]})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise DwPipeError(f"{path}: holds {type(state).__name__}, not a state dict of tensors")
    return state


def whisper_config(config: dict):
    """The plain ``WhisperConfig`` under an official ``config.json`` (its CLSR fields removed)."""
    from transformers import WhisperConfig

    if config.get("model_type") != "distilwhisper":
        raise DwPipeError(
            f"config.json: model_type {config.get('model_type')!r}, not 'distilwhisper' (a plain Whisper is imported "
            "with import_models)"
        )
    plain = {k: v for k, v in config.items() if k not in CLSR_FIELDS and k not in ("model_type", "architectures")}
    return WhisperConfig(**{**plain, "architectures": ["WhisperForConditionalGeneration"]})


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Official names -> (the plain Whisper's state dict, ``{official language name: expert file in our names}``)."""
    base: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "proj_out.weight":
            continue  # tied to the token embedding; checked against it by the strict load
        if shared := _SHARED.match(key):
            side, index, param = shared.groups()
            base[f"model.{side}.layers.{index}.{param}"] = value
        elif lang := _LANGUAGE.match(key):
            side, index, module, name, param = lang.groups()
            ours = _EXPERT_NAMES.get((module, param))
            if ours is None:
                raise DwPipeError(f"{key}: a CLSR parameter this importer does not know; refusing to guess its role")
            experts.setdefault(name, {})[f"{side}.{index}.{ours}"] = value
        elif ".ffn_clsr." in key:
            raise DwPipeError(f"{key}: a CLSR parameter this importer does not know; refusing to guess its role")
        else:
            base[key] = value
    return base, experts


def read_expert_file(path: Path, name: str) -> dict[str, torch.Tensor]:
    """One ``expert.<name>.*`` file in our names; a key of another language or of the base is refused."""
    base, experts = split_state(read_tensors(path))
    others = sorted(set(experts) - {name})
    if base or others:
        stray = next(iter(base), None) or f"language {others[0]}"
        raise DwPipeError(f"{path}: holds more than {name}'s experts and gates ({stray}); refusing to merge it")
    if name not in experts:
        raise DwPipeError(f"{path}: holds no expert of {name}")
    return experts[name]


def _expert_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("expert.*")):
        name = path.name.split(".")[1]
        if path.suffix in (".bin", ".safetensors") and (name not in found or path.suffix == ".safetensors"):
            found[name] = path
    return found


def _base_file(folder: Path) -> Path:
    for name in BASE_FILES:
        if (folder / name).is_file():
            return folder / name
    raise DwPipeError(f"{folder}: no base weights ({' or '.join(BASE_FILES)})")


def _clsr_layers(experts: dict[str, dict[str, torch.Tensor]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    layer_sets = {
        name: sorted({k.rsplit(".expert.", 1)[0].rsplit(".gate.", 1)[0] for k in t}) for name, t in experts.items()
    }
    first, *rest = layer_sets.items()
    for name, layers in rest:
        if layers != first[1]:
            raise DwPipeError(f"experts of {name} sit on other layers than those of {first[0]}; cannot share one CLSR")
    layers = first[1]
    return (
        tuple(sorted(int(x.split(".")[1]) for x in layers if x.startswith("encoder."))),
        tuple(sorted(int(x.split(".")[1]) for x in layers if x.startswith("decoder."))),
    )


def _write_processor(folder: Path, processor: str | None, out: Path) -> str:
    """Tokenizer, feature extractor and generation config: the released folder's own, else ``processor``'s."""
    from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperTokenizer

    own = [name for name in PROCESSOR_FILES if (folder / name).is_file()]
    has_tokenizer = any(name in own for name in ("tokenizer.json", "vocab.json"))
    complete = has_tokenizer and "preprocessor_config.json" in own and "generation_config.json" in own
    if complete:
        for name in own:
            shutil.copyfile(folder / name, out / name)
        return str(folder)
    if processor is None:
        raise DwPipeError(
            f"{folder} has no complete tokenizer, feature extractor and generation config; give one with --processor "
            "(the paper's students are whisper-small: openai/whisper-small)"
        )
    local = {"local_files_only": Path(processor).expanduser().is_dir()}
    WhisperTokenizer.from_pretrained(processor, **local).save_pretrained(out)
    WhisperFeatureExtractor.from_pretrained(processor, **local).save_pretrained(out)
    GenerationConfig.from_pretrained(processor, **local).save_pretrained(out)
    return processor


def _base_model(config: dict, state: dict[str, torch.Tensor]):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(whisper_config(config))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise DwPipeError(f"base weights do not fit config.json: {str(exc).splitlines()[1].strip()}") from None
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise DwPipeError(
            f"base weights do not fit a Whisper of config.json ({what}, {len(missing) + len(unexpected)} in all)"
        )
    model.tie_weights()
    return model.eval()


def import_official(
    spec: str,
    out: Path,
    *,
    languages: tuple[str, ...] | None = None,
    processor: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the released student ``spec`` as a dw-pipe student folder ``out`` (its base in ``out/base``).

    ``languages``: the codes to import (default: every expert the source holds). Returns ``student.json``'s
    record. The gates the export routes by are measured on a dev set afterwards (:mod:`pipeline.student.gates`)."""
    source = resolve_source(spec, languages)
    folder = source.folder
    if not (folder / "config.json").is_file():
        raise DwPipeError(f"{folder}: no config.json; not a released DistilWhisper student")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    whisper_config(config)  # refuse another model type before reading gigabytes
    base_path = _base_file(folder)
    base_state, experts = split_state(read_tensors(base_path))
    files = _expert_files(folder)
    for name, path in files.items():
        experts[name] = read_expert_file(path, name)
    by_code = {language_code(name): name for name in experts}
    wanted = tuple(languages) if languages else tuple(sorted(by_code))
    absent = [c for c in wanted if c not in by_code]
    if not wanted or absent:
        have = ", ".join(f"{c} ({n})" for c, n in sorted(by_code.items())) or "none"
        raise DwPipeError(f"{spec}: no experts for {', '.join(absent) or 'any language'}; it has {have}")
    chosen = {code: experts[by_code[code]] for code in wanted}
    encoder_layers, decoder_layers = _clsr_layers(chosen)
    clsr = CLSRConfig(
        languages=wanted,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        gate_hidden=int(config.get("clsr_gate_dim", 64)),
        skip_gate_prob=float(config.get("skip_gate_prob", 0.2)),
        budget=float(config.get("gate_budget", 0.5)),
    )
    read = [base_path, *(files[by_code[c]] for c in wanted if by_code[c] in files)]
    record_params = {
        "imported_from": spec,
        "official_languages": {code: by_code[code] for code in wanted},
        "source_sha256": {p.name: sha256_files([p]) for p in read},
        "official_config": {k: config[k] for k in CLSR_FIELDS if k in config},
    }
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        base_dir = tmp / "base"
        base_dir.mkdir()
        _base_model(config, base_state).save_pretrained(base_dir)
        record_params["processor"] = _write_processor(folder, processor, base_dir)
        spec_tmp = StudentSpec(base_dir)
        model = build_student(spec_tmp)
        add_clsr(model, clsr)
        for code, tensors in chosen.items():
            try:
                load_expert_state_dict(model, code, tensors)
            except RuntimeError as exc:
                raise DwPipeError(
                    f"experts of {by_code[code]} do not fit: {str(exc).splitlines()[-1].strip()}"
                ) from None
        save_student(tmp, model, "distilwhisper", spec_tmp, wanted, clsr, record_params)
        record = json.loads((tmp / "student.json").read_text(encoding="utf-8"))
        record["base"] = str(out / "base")  # where the base lies once the folder is in place
        (tmp / "student.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    load_student(out)  # the folder rebuilds as written
    log.info("imported %s (%s) into %s", spec, ", ".join(wanted), out)
    return record
