"""Teacher-forced forward passes and their top-k next-token distributions.

For an utterance with reference tokens ``y_1..y_n`` (text tokens, then
``<|endoftext|>``), the decoder reads the prompt
``<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>`` followed by
``y_1..y_{n-1}``; the logits at the last prompt position and after predict
``y_1..y_n``. One forward pass per batch, no generation.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.data.audio import read_wav
from pipeline.data.manifest import Utterance
from pipeline.models.features import log_mel

log = logging.getLogger(__name__)

PROMPT_TEMPLATE = "<|startoftranscript|><|{language}|><|transcribe|><|notimestamps|>"


TASKS = ("transcribe", "translate")


def prompt_ids(tokenizer, language: str, task: str = "transcribe", timestamps: bool = False) -> list[int]:
    """The prompt token ids for ``language`` and ``task`` (transcribe, or translate: X->English); without
    ``timestamps`` it ends in ``<|notimestamps|>``, with them the model's next token is a timestamp."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: use one of {TASKS}")
    tokens = ["<|startoftranscript|>", f"<|{language}|>", f"<|{task}|>"] + ([] if timestamps else ["<|notimestamps|>"])
    ids = tokenizer.convert_tokens_to_ids(tokens)
    unknown = [t for t, i in zip(tokens, ids) if i is None or i == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"tokenizer has no token(s) {unknown}")
    return ids


def label_ids(tokenizer, text: str) -> list[int]:
    """Reference tokens the model must predict: the text, then end-of-text."""
    return tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.convert_tokens_to_ids("<|endoftext|>")]


TIMESTAMP_STEP = 0.02  # seconds per timestamp token (<|0.00|> ... <|30.00|>)
TIMESTAMP_TOKENS = 1501


def timestamp_id(tokenizer, seconds: float) -> int:
    """The id of the timestamp token nearest ``seconds`` (0 to 30 s, in 0.02-s steps)."""
    step = round(seconds / TIMESTAMP_STEP)
    if not 0 <= step < TIMESTAMP_TOKENS:
        raise ValueError(f"timestamp {seconds} s is outside one Whisper window (0-30 s)")
    return tokenizer.convert_tokens_to_ids("<|0.00|>") + step


def timestamp_labels(tokenizer, segments) -> list[int]:
    """Whisper's timestamped target: per segment ``<|start|>`` its text ``<|end|>``, then end-of-text (the text
    with a leading space, as Whisper writes a segment)."""
    out = []
    for seg in segments:
        text = tokenizer(" " + seg["text"].strip(), add_special_tokens=False).input_ids
        out += [timestamp_id(tokenizer, seg["start"]), *text, timestamp_id(tokenizer, seg["end"])]
    return out + [tokenizer.convert_tokens_to_ids("<|endoftext|>")]


def targets_of(u: Utterance, tokenizer) -> tuple[list[int], list[int]]:
    """(prompt, labels) an utterance trains and is cached with: timestamped when it is a window with segments."""
    if u.segments:
        return prompt_ids(tokenizer, u.language, timestamps=True), timestamp_labels(tokenizer, u.segments)
    return prompt_ids(tokenizer, u.language), label_ids(tokenizer, u.text)


@dataclass(frozen=True)
class Encoded:
    """One utterance ready for a teacher-forced pass."""

    utt: Utterance
    prompt: list[int]
    labels: list[int]


def encode(utts: list[Utterance], tokenizer) -> list[Encoded]:
    return [Encoded(u, *targets_of(u, tokenizer)) for u in utts]


def length_batches(items: list[Encoded], batch_size: int) -> list[list[int]]:
    """Indices grouped by label length (longest first), so padding stays small; deterministic. Timestamped
    windows come after every plain utterance, so adding windows to a manifest leaves the plain rows' batches,
    and so their teacher outputs to the last bit, as they were."""
    batches = []
    for timed in (False, True):
        group = [i for i in range(len(items)) if bool(items[i].utt.segments) == timed]
        order = sorted(group, key=lambda i: (-len(items[i].labels), i))
        batches += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return batches


def pick_device(requested: str = "auto") -> tuple[torch.device, torch.dtype | None]:
    """``(device, autocast dtype)``: CUDA with bf16 (or fp16) autocast when present, else CPU in float32.

    Under ``torchrun`` with several GPUs on a node, ``auto`` and ``cuda`` mean this rank's own GPU, ``LOCAL_RANK``
    (every rank on ``cuda:0`` would queue all the node's work on one card)."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu"), None
    device = torch.device(local_cuda() if requested in ("auto", "cuda") else requested)
    return device, (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def local_cuda() -> str:
    """``cuda:LOCAL_RANK`` under torchrun (the rank's index on its node), ``cuda`` alone otherwise."""
    local = os.environ.get("LOCAL_RANK")
    return f"cuda:{int(local) % max(torch.cuda.device_count(), 1)}" if local is not None else "cuda"


def features_for(extractor, utts: list[Utterance], root: Path) -> torch.Tensor:
    """Log-mel features of audio padded to 30 s, as OpenAI and transformers' extractor make them, without the
    transform of the padding (:func:`pipeline.models.features.log_mel`)."""
    return log_mel(extractor, [read_wav(root / u.audio) for u in utts])


def decoder_inputs(batch: list[Encoded], pad_id: int) -> tuple[torch.Tensor, list[int]]:
    """Right-padded ``prompt + labels[:-1]`` and each row's number of label positions."""
    rows = [b.prompt + b.labels[:-1] for b in batch]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, [len(b.labels) for b in batch]


def _autocast(device: torch.device, autocast: torch.dtype | None):
    return torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()


def encoder_outputs(model, extractor, utts: list[Utterance], root: Path, autocast: torch.dtype | None, memo=None):
    """The encoder's last hidden states of ``utts`` (float32 ``[B, frames, d_model]`` on the model's device),
    read from an :class:`pipeline.core.encoder_memo.EncoderMemo` where it has them and stored there otherwise."""
    device = next(model.parameters()).device
    found = {u.id: memo.load(root / u.audio) for u in utts} if memo is not None else {}
    todo = [u for u in utts if found.get(u.id) is None]
    step = 1 if device.type == "cpu" else len(todo) or 1  # one at a time on the CPU: faster (EncoderStore.fill)
    for i in range(0, len(todo), step):
        chunk = todo[i : i + step]
        with torch.inference_mode(), _autocast(device, autocast):
            hidden = model.get_encoder()(features_for(extractor, chunk, root).to(device)).last_hidden_state.float()
        for u, h in zip(chunk, hidden):
            found[u.id] = h
            if memo is not None:
                memo.save(root / u.audio, h.cpu().numpy())
    return torch.stack([torch.as_tensor(found[u.id]).to(device) for u in utts])


def label_logits(
    model,
    features: torch.Tensor | None,
    batch: list[Encoded],
    pad_id: int,
    autocast: torch.dtype | None,
    encoder_hidden: torch.Tensor | None = None,
):
    """Logits at the label positions: a list of ``[n_i, V]`` float32 tensors, from log-mel ``features`` or from
    the encoder's outputs (:func:`encoder_outputs`; the same logits, without running the encoder)."""
    from transformers.modeling_outputs import BaseModelOutput

    device = next(model.parameters()).device
    ids, lengths = decoder_inputs(batch, pad_id)
    with torch.inference_mode(), _autocast(device, autocast):
        if encoder_hidden is not None:
            inputs = {"encoder_outputs": BaseModelOutput(last_hidden_state=encoder_hidden.to(device))}
        else:
            inputs = {"input_features": features.to(device)}
        logits = model(**inputs, decoder_input_ids=ids.to(device)).logits
    starts = [len(b.prompt) - 1 for b in batch]  # a timestamped row's prompt is one token shorter
    return [logits[i, start : start + n].float() for i, (start, n) in enumerate(zip(starts, lengths))]


def topk_of(
    logits: torch.Tensor, k: int, temperature: float, min_prob: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-k ids and log-probs at temperature ``temperature``, the log of the mass outside the kept
    entries, and how many entries each position keeps.

    With ``min_prob`` > 0 a position keeps only its entries of probability ``min_prob`` or more (at
    least one, at most k); the others become padding (id 0, log-prob -inf) and their mass joins the
    tail. The tail is a log-sum-exp over the tokens not kept (not ``log(1 - sum)``), so it stays
    accurate when the kept entries hold almost all the mass.
    """
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    values, ids = logprobs.topk(k, dim=-1)
    counts = torch.full(values.shape[:-1], k, dtype=torch.long, device=values.device)
    if min_prob > 0:
        counts = (values >= math.log(min_prob)).sum(-1).clamp(1, k)
    kept = torch.arange(k, device=values.device) < counts.unsqueeze(-1)
    rest = logprobs.scatter(-1, ids, float("-inf"))
    tail = torch.logaddexp(torch.logsumexp(rest, dim=-1), torch.logsumexp(values.masked_fill(kept, float("-inf")), -1))
    values = values.masked_fill(~kept, float("-inf"))
    ids = ids.masked_fill(~kept, 0)
    return ids.cpu().numpy(), values.cpu().numpy(), tail.cpu().numpy(), counts.cpu().numpy()
