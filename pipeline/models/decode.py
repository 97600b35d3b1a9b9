"""Greedy decoding shared by training (dev WER), the benchmark and the parity checks.

:class:`EncoderStore` keeps log-mel features, or a frozen encoder's outputs,
per utterance, so several decoders that share one encoder run it once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pipeline.core.encoder_memo import EncoderMemo, memo_for
from pipeline.core.progress import progress
from pipeline.data.manifest import Utterance
from pipeline.models.clsr import clsr_layers, set_language
from pipeline.models.forward import features_for, prompt_ids

_SHARED_MEMOS: dict[tuple, dict[str, torch.Tensor]] = {}


def routes_encoder(model) -> bool:
    """Whether ``model``'s encoder has CLSR layers, so that its outputs depend on the routing language."""
    return any(not layer.decoder for layer in clsr_layers(model))


def language_batches(utts: list[Utterance], batch_size: int, by_language: bool) -> list[list[Utterance]]:
    """Batches of ``utts`` in order, or one language per batch when the encoder routes by language."""
    groups = [[u for u in utts if u.language == lang] for lang in sorted({u.language for u in utts})]
    return [g[i : i + batch_size] for g in (groups if by_language else [utts]) for i in range(0, len(g), batch_size)]


class EncoderStore:
    """Log-mel features, or the frozen encoder's outputs, computed once per utterance.

    Stores with the same key share one memo within a process, so training
    several modes encodes the audio once; the key must name the encoder when
    outputs are stored (the benchmark passes :func:`pipeline.core.encoder_memo.encoder_identity`). An
    encoder with CLSR layers is run with the routing language set to each
    utterance's own, never ``None``: its outputs are per language.
    """

    def __init__(
        self,
        model,
        extractor,
        root: Path,
        precompute: bool,
        device: torch.device,
        key: tuple = (),
        dtype=torch.float16,
        disk: Path | None = None,
        budget_bytes: int | None = None,
    ) -> None:
        self.model, self.extractor, self.root, self.precompute, self.device = model, extractor, root, precompute, device
        self.dtype = dtype  # of stored encoder outputs: float16 halves the memory of a training run
        self.memo: dict[str, torch.Tensor] = (
            _SHARED_MEMOS.setdefault((*key, precompute, str(root), str(dtype)), {}) if key else {}
        )
        self.disk_root = disk  # an EncoderMemo root: outputs kept between stages and runs (float32, before dtype)
        self._disk: EncoderMemo | None = None
        # What ``fill`` may hold (None: all). Past it, ``kwargs`` makes what a batch lacks each time it is asked,
        # the same way and to the same bits: a log-mel is 0.96 MB, so a paper-sized corpus (224k) cannot be held.
        self.budget_bytes = budget_bytes
        self.held_bytes = sum(t.nbytes for t in self.memo.values())

    def disk_memo(self) -> EncoderMemo | None:
        """The on-disk memo of this encoder and compute setting, when outputs are stored and a root is given."""
        if self._disk is None and self.precompute and self.disk_root is not None:
            self._disk = memo_for(self.disk_root, self.model, self.extractor)
        return self._disk

    def fill(self, utts: list[Utterance], batch_size: int | None = None) -> None:
        """Compute (or read from the disk memo) what ``utts`` lack, and hold it while the budget allows.
        ``batch_size`` None: one utterance at a time on the CPU, where whisper-base's encoder runs ~15 % faster so
        than in batches of 8 and gives bitwise the same outputs (bench/encoder_memo.py); 8 on an accelerator."""
        for uid, tensor in self._make([u for u in utts if u.id not in self.memo], batch_size):
            if self.budget_bytes is not None and self.held_bytes + tensor.nbytes > self.budget_bytes:
                if self.disk_memo() is None:
                    return  # nothing more is held; kwargs makes the rest when asked (disk-memo writes go on)
                continue
            self.memo[uid] = tensor
            self.held_bytes += tensor.nbytes

    def _make(self, todo: list[Utterance], batch_size: int | None) -> Iterator[tuple[str, torch.Tensor]]:
        """(id, what is stored for it) for ``todo``: read from the disk memo, or computed (and written there)."""
        batch_size = batch_size or (1 if self.device.type == "cpu" else 8)
        routed = self.precompute and routes_encoder(self.model)
        disk = self.disk_memo()
        if disk is not None:
            missing = []
            for u in todo:
                stored = disk.load(self.root / u.audio, u.language if routed else None)
                if stored is None:
                    missing.append(u)
                else:
                    yield u.id, torch.from_numpy(stored).to(self.dtype)
            todo = missing
        for chunk in progress(language_batches(todo, batch_size, routed), desc="encoder inputs", unit="batch"):
            feats = features_for(self.extractor, chunk, self.root)
            if self.precompute:
                feats = self._encode(feats, chunk[0].language if routed else None)
                if disk is not None:
                    for u, f in zip(chunk, feats):
                        disk.save(self.root / u.audio, f.float().numpy(), u.language if routed else None)
                feats = feats.to(self.dtype)
            yield from zip((u.id for u in chunk), feats)

    def _encode(self, feats: torch.Tensor, language: str | None) -> torch.Tensor:
        """Encoder outputs of ``feats`` on the CPU in the model's dtype, routed to ``language`` if given (the
        model's language restored after)."""
        state = getattr(self.model, "_clsr_state", None)
        before = state.language if state is not None else None
        if language is not None:
            set_language(self.model, language)
        try:
            with torch.no_grad():
                return self.model.get_encoder()(feats.to(self.device)).last_hidden_state.cpu()
        finally:
            set_language(self.model, before)

    def kwargs(self, utts: list[Utterance]) -> dict:
        missing = [u for u in utts if u.id not in self.memo]
        made = dict(self._make(missing, None)) if missing else {}  # past the budget: made again
        stacked = torch.stack([self.memo[u.id] if u.id in self.memo else made[u.id] for u in utts]).to(self.device)
        if self.precompute:
            from transformers.modeling_outputs import BaseModelOutput

            return {"encoder_outputs": BaseModelOutput(last_hidden_state=stacked.float())}
        return {"input_features": stacked}


@contextmanager
def quiet_generate():
    """Silence ``generate``'s per-call warnings about our fixed set-up (the imported generation config's
    max_length 448 beside max_new_tokens; no attention mask for unpadded encoder outputs; Whisper passing
    suppress_tokens itself): one line per batch, nothing to act on."""
    logger = logging.getLogger("transformers.generation.utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def count_real_positions(model, eos_id: int):
    """While one batched ``generate`` runs, let CLSR layers count only the decoder positions that teacher forcing
    has too: the prompt and each row's generated tokens before its first end-of-text.

    Batched generation keeps feeding rows that have finished (their end-of-text, then padding); without this
    their positions would enter the dev gate rates that decide an export's static routing."""
    state = getattr(model, "_clsr_state", None)
    if state is None:
        yield
        return
    finished: torch.Tensor | None = None

    def mark(module, args, kwargs):
        nonlocal finished
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            state.decoder_mask = None
            return
        is_eos = ids == eos_id
        before = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device) if finished is None else finished
        seen = before[:, None] | (is_eos.cumsum(dim=1) > 0)
        state.decoder_mask = ~seen
        finished = before | is_eos.any(dim=1)

    handle = model.get_decoder().register_forward_pre_hook(mark, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        state.decoder_mask = None


def decode_batches(utts: list[Utterance], batch_size: int) -> list[list[Utterance]]:
    """The batches :func:`greedy_token_ids` decodes: one language at a time (sorted), in order within it.

    A language's batches depend on its own utterances only, so a later pass over
    some languages can rebuild exactly the batches the first pass decoded."""
    return language_batches(utts, batch_size, by_language=True)


def text_tokens(ids: list[int], eos_id: int) -> list[int]:
    """The generated ids before the first end-of-text (``generate`` pads finished rows with it after)."""
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def generate_batch(
    model,
    chunk: list[Utterance],
    store: EncoderStore,
    tokenizer,
    max_new_tokens: int,
    task: str = "transcribe",
    timestamps: bool = False,
) -> list[list[int]]:
    """Greedy ids of one single-language batch, before end-of-text: ``max_new_tokens`` ids when a row hit the cap.
    With ``timestamps`` the prompt asks for timestamp tokens, which stay among the ids (text decoding drops them).

    The caller sets the routing language (:func:`pipeline.models.clsr.set_language`)."""
    lang = chunk[0].language
    prompt = prompt_ids(tokenizer, lang, task, timestamps)
    with torch.inference_mode(), quiet_generate(), count_real_positions(model, tokenizer.eos_token_id):
        out = model.generate(
            **store.kwargs(chunk),
            decoder_input_ids=torch.tensor([prompt] * len(chunk), device=store.device),
            language=lang,
            task=task,
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            return_timestamps=timestamps,
        )
    return [text_tokens(strip_prompt(seq.tolist(), prompt), tokenizer.eos_token_id) for seq in out]


def greedy_token_ids(
    model,
    utts: list[Utterance],
    store: EncoderStore,
    tokenizer,
    cfg,
    task: str = "transcribe",
    timestamps: bool = False,
) -> tuple[list[list[int]], dict[str, dict[str, float]]]:
    """Greedy ids per utterance (before end-of-text) with hard gates, one language per batch, and each
    language's gate rates.

    ``generate`` is given the language and task, so it runs no language-detection forward of its own (which
    would route and count one more position per row); gate rates count real positions only
    (:func:`count_real_positions`)."""
    model.eval()
    ids: dict[str, list[int]] = {}
    rates: dict[str, dict[str, float]] = {}
    state = getattr(model, "_clsr_state", None)
    batches = decode_batches(utts, cfg.eval_batch_size)
    for lang in sorted({u.language for u in utts}):
        set_language(model, lang)
        if state is not None:
            state.reset()
            state.decoder_mask = None
        for chunk in (b for b in batches if b[0].language == lang):
            ids.update(
                zip(
                    (u.id for u in chunk),
                    generate_batch(model, chunk, store, tokenizer, cfg.max_new_tokens, task, timestamps),
                )
            )
        if state is not None:
            rates[lang] = state.rates()
    return [ids[u.id] for u in utts], rates


def greedy_decode(
    model, utts: list[Utterance], store: EncoderStore, tokenizer, cfg
) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Greedy hypotheses of :func:`greedy_token_ids`, and each language's gate rates."""
    ids, rates = greedy_token_ids(model, utts, store, tokenizer, cfg)
    return [tokenizer.decode(x, skip_special_tokens=True) for x in ids], rates


# Whisper's decoder has 448 positions; our prompt takes 4 (<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>).
DECODER_POSITIONS = 448
PROMPT_TOKENS = 4
# What a user's decode is capped at by default, in new tokens: transformers' generate fills the decoder
# (generation_config.max_length 448 counts the prompt: 448 - 4); CTranslate2's generate (max_length 448,
# halved: see ct2_max_length), faster-whisper (passes 448) and OpenAI's whisper (sample_len = n_text_ctx // 2)
# stop at 224.
DEFAULT_CAPS = {"transformers": DECODER_POSITIONS - PROMPT_TOKENS, "ctranslate2": DECODER_POSITIONS // 2}


def ct2_max_length(max_new_tokens: int) -> int:
    """The ``max_length`` that makes CTranslate2's Whisper generate at most ``max_new_tokens`` tokens.

    CTranslate2 halves the ``max_length`` it is given before decoding from
    the end of the prompt (src/models/whisper.cc: ``decoding_options.max_length =
    options.max_length / 2``, after OpenAI's ``sample_len = n_text_ctx // 2``),
    so passing the transformers-style value gives half the tokens.
    """
    return 2 * max_new_tokens


def greedy_ctranslate2(model, features: np.ndarray, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy token ids after the prompt (at most ``max_new_tokens``) from ``ctranslate2.models.Whisper.generate``.

    ``features`` is log-mel ``[B, n_mels, frames]`` or what ``model.encode``
    returned for it, ``[B, frames // 2, d_model]`` (CTranslate2 tells them by shape).
    """
    import ctranslate2

    view = ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))
    results = model.generate(view, prompts, beam_size=1, max_length=ct2_max_length(max_new_tokens), return_scores=False)
    return [list(r.sequences_ids[0]) for r in results]


# Our prompt as faster-whisper builds it without timestamps or previous text:
# <|startoftranscript|><|lang|><|transcribe|><|notimestamps|>.
FASTER_WHISPER_PROMPT_TOKENS = 4


def faster_whisper_segments(
    model, audio: np.ndarray, language: str, max_new_tokens: int, task: str = "transcribe", timestamps: bool = False
):
    """faster-whisper's lazy segments under the benchmark's fixed decoding, at most ``max_new_tokens`` tokens.

    faster-whisper passes ``len(prompt) + max_new_tokens`` to CTranslate2 as
    ``max_length``, which CTranslate2 halves (see :func:`ct2_max_length`); the
    value given here undoes that, so every engine stops at the same count.
    """
    segments, _ = model.transcribe(
        audio,
        language=language,
        task=task,
        beam_size=1,
        temperature=0.0,
        condition_on_previous_text=False,
        without_timestamps=not timestamps,
        vad_filter=False,
        max_new_tokens=ct2_max_length(max_new_tokens) - FASTER_WHISPER_PROMPT_TOKENS + timestamps,
    )
    return segments


def faster_whisper_transcribe(
    model, audio: np.ndarray, language: str, max_new_tokens: int, task: str = "transcribe", timestamps: bool = False
) -> str:
    """The text of :func:`faster_whisper_segments` (the generator runs here, inside any timer around the call)."""
    segments = faster_whisper_segments(model, audio, language, max_new_tokens, task, timestamps)
    return "".join(s.text for s in segments).strip()


def strip_prompt(ids: list[int], prompt: list[int]) -> list[int]:
    """Generated ids without the prompt (transformers 5 returns only new tokens; older versions the prompt too)."""
    return ids[len(prompt) :] if ids[: len(prompt)] == prompt else ids
