"""Checks that an imported checkpoint is the model it came from.

Two checks, used by the tests and by ``bench/import_parity.py``:

* variable parity: re-converting the HF checkpoint with CTranslate2's own
  converter at the source precision reproduces every variable of the source
  ``model.bin`` bit for bit;
* decoding parity: given identical log-mel features, greedy decoding with
  transformers (float32) and with CTranslate2 (float32) produces the same
  token ids (compared up to the shorter sequence, since repetition loops
  run into the length limit at slightly different points).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.models.ct2_format import CT2Checkpoint
from pipeline.models.decode import greedy_ctranslate2, strip_prompt
from pipeline.models.forward import prompt_ids

log = logging.getLogger(__name__)


@dataclass
class VariableParity:
    """How two CTranslate2 checkpoints differ, variable by variable."""

    compared: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.extra or self.different)


def compare_variables(reference: CT2Checkpoint, candidate: CT2Checkpoint) -> VariableParity:
    """Bitwise comparison of every variable (aliases resolved) and its dtype."""
    ref_names = set(reference.variables) | set(reference.aliases)
    cand_names = set(candidate.variables) | set(candidate.aliases)
    result = VariableParity(missing=sorted(ref_names - cand_names), extra=sorted(cand_names - ref_names))
    for name in sorted(ref_names & cand_names):
        result.compared += 1
        a, b = reference.get(name), candidate.get(name)
        dtype_a = reference.dtypes[reference.aliases.get(name, name)]
        dtype_b = candidate.dtypes[candidate.aliases.get(name, name)]
        if dtype_a != dtype_b or a.shape != b.shape or a.tobytes() != b.tobytes():
            result.different.append(name)
    return result


def convert_with_ctranslate2(hf_dir: Path, out: Path, quantization: str) -> Path:
    """Convert an HF Whisper folder with CTranslate2's converter (the outside reference)."""
    import ctranslate2.converters

    converter = ctranslate2.converters.TransformersConverter(str(hf_dir), copy_files=["tokenizer.json"])
    converter.convert(str(out), quantization=quantization, force=True)
    return out


def greedy_transformers(model, features: np.ndarray, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy token ids after the prompt (at most ``max_new_tokens``), without end-of-text, from a transformers Whisper."""
    eot = model.generation_config.eos_token_id
    out: list[list[int]] = []
    with torch.inference_mode():
        for feats, prompt in zip(features, prompts):
            sequences = model.generate(
                torch.from_numpy(feats[None]).to(model.dtype),
                decoder_input_ids=torch.tensor([prompt]),
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                return_timestamps=False,
            )
            out.append([i for i in strip_prompt(sequences[0].tolist(), prompt) if i != eot])
    return out


def agree_up_to_shorter(a: list[int], b: list[int]) -> bool:
    """Same tokens over the length of the shorter sequence (both empty counts as agreement)."""
    n = min(len(a), len(b))
    return a[:n] == b[:n] and (n > 0 or len(a) == len(b))


def synthesize_samples() -> list[tuple[str, str, np.ndarray]]:
    """(id, language, 16 kHz audio) for the fixed multilingual sample sentences."""
    from pipeline.data.audio import Voice, synthesize
    from pipeline.data.samples import ESPEAK_VOICE, SAMPLE_SENTENCES

    return [
        (f"{lang}-{i}", lang, synthesize(text, Voice(ESPEAK_VOICE[lang])))
        for lang, texts in SAMPLE_SENTENCES.items()
        for i, text in enumerate(texts)
    ]


def run_import_parity(work: Path, *, spec: str = "embedded:whisper-base", progress: bool = False) -> dict:
    """Import ``spec``, then run both parity checks against its original CTranslate2 files."""
    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from pipeline.models.ct2_format import read_ct2_model
    from pipeline.models.ct2_import import assemble_ct2_dir
    from pipeline.models.specs import ct2_source, materialize, parse_model_spec

    source = ct2_source(parse_model_spec(spec))
    hf_dir = materialize(spec, work / "hf", overwrite=True)
    reconverted = convert_with_ctranslate2(hf_dir, work / "ct2-float16", "float16")
    variables = compare_variables(read_ct2_model(source.model_parts()), read_ct2_model([reconverted / "model.bin"]))

    samples = synthesize_samples()
    extractor = WhisperFeatureExtractor.from_pretrained(hf_dir)
    features = extractor([audio for _, _, audio in samples], sampling_rate=16_000, return_tensors="np").input_features
    tokenizer = WhisperTokenizer.from_pretrained(hf_dir)
    prompts = [prompt_ids(tokenizer, lang) for _, lang, _ in samples]
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    # OpenAI's sample_len: half the text context, the most CTranslate2 generates.
    max_new = model.config.max_target_positions // 2
    hf_ids = greedy_transformers(model, features, prompts, max_new)
    original = ctranslate2.models.Whisper(
        str(assemble_ct2_dir(source, work / "ct2-original")), device="cpu", compute_type="float32"
    )
    ct2_ids = greedy_ctranslate2(original, features, prompts, max_new)

    rows = [
        {
            "id": uid,
            "language": lang,
            "agree": agree_up_to_shorter(a, b),
            "hf_len": len(a),
            "ct2_len": len(b),
            "hf_text": tokenizer.decode(a),
            "ct2_text": tokenizer.decode(b),
        }
        for (uid, lang, _), a, b in zip(samples, hf_ids, ct2_ids)
    ]
    return {
        "spec": spec,
        "variables_compared": variables.compared,
        "variables_missing": variables.missing,
        "variables_extra": variables.extra,
        "variables_different": variables.different,
        "utterances": len(rows),
        "agree": sum(r["agree"] for r in rows),
        "per_utterance": rows,
    }
