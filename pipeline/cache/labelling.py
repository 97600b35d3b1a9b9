"""Teacher labels for speech without transcripts (``cache_teacher.labels: teacher``).

For each unlabelled utterance the teacher's encoder runs once. On its outputs the teacher decodes greedily (the
decoding Whisper's own fallback starts with: temperature 0, one beam), and its decoder then runs teacher-forced
along that transcript, as it does along a reference, which gives the distributions the cache keeps. The transcript
becomes the row's ``label_ids``: its text tokens, then ``<|endoftext|>`` unless the token cap cut it first.

Each row also gets the quality signals OpenAI's Whisper computes to decide whether to trust a decode
(``whisper/transcribe.py``: ``compression_ratio_threshold`` 2.4, ``logprob_threshold`` -1.0,
``no_speech_threshold`` 0.6), computed the same way:

* ``avg_logprob``: the mean log-probability of the label tokens, end-of-text included (Whisper's greedy decoder
  sums the log-probability of every token it emits, end-of-text too, and divides by the text tokens + 1);
* ``compression_ratio``: UTF-8 bytes of the text over the bytes zlib compresses them to (loops compress well);
* ``no_speech_prob``: the probability of ``<|nospeech|>`` at the first decoder position, after
  ``<|startoftranscript|>``;
* ``hit_cap``: the transcript reached ``max_new_tokens`` without its end-of-text.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.models.forward import Encoded, _autocast, decoder_inputs, encoder_outputs


@dataclass(frozen=True)
class TeacherLabelled:
    item: Encoded  # the utterance with the teacher's transcript as its labels
    logits: torch.Tensor  # [n_labels, V] float32, teacher-forced along those labels
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float | None  # None: the tokenizer has no <|nospeech|>
    hit_cap: bool


def compression_ratio(text: str) -> float:
    """Whisper's ``get_compression_ratio``: bytes over zlib-compressed bytes (0 for no text)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def teacher_labels(
    model, extractor, tokenizer, items: list[Encoded], root: Path, autocast, max_new_tokens: int, batch_size: int
) -> list[TeacherLabelled]:
    """The teacher's labels, distributions and signals for ``items`` (labels None), in their order; one language
    a batch (the prompt names it), ``batch_size`` utterances at most."""
    from transformers.modeling_outputs import BaseModelOutput

    from pipeline.models.decode import quiet_generate, strip_prompt, text_tokens

    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    no_speech = tokenizer.convert_tokens_to_ids("<|nospeech|>")
    no_speech = None if no_speech == tokenizer.unk_token_id else no_speech
    out: dict[int, TeacherLabelled] = {}
    for lang in sorted({it.utt.language for it in items}):
        group = [i for i, it in enumerate(items) if it.utt.language == lang]
        for start in range(0, len(group), batch_size):
            idx = group[start : start + batch_size]
            chunk = [items[i] for i in idx]
            prompt = chunk[0].prompt
            hidden = encoder_outputs(model, extractor, [c.utt for c in chunk], root, autocast)
            with torch.inference_mode(), quiet_generate(), _autocast(device, autocast):
                seqs = model.generate(
                    encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                    decoder_input_ids=torch.tensor([prompt] * len(chunk), device=device),
                    language=lang,
                    task="transcribe",
                    do_sample=False,
                    num_beams=1,
                    max_new_tokens=max_new_tokens,
                )
            # generate drops each row's end-of-text and pads the shorter rows with it (transformers' Whisper
            # generate_with_fallback), so the longest row of a batch that ended has none: a row reached the cap when
            # its text is max_new_tokens long, and every other row ended with end-of-text
            texts = [text_tokens(strip_prompt(s.tolist(), prompt), eos) for s in seqs]
            capped = [len(t) >= max_new_tokens for t in texts]
            labelled = [Encoded(c.utt, prompt, t + ([] if cap else [eos])) for c, t, cap in zip(chunk, texts, capped)]
            ids, lengths = decoder_inputs(labelled, eos)
            with torch.inference_mode(), _autocast(device, autocast):
                logits = model(
                    encoder_outputs=BaseModelOutput(last_hidden_state=hidden), decoder_input_ids=ids.to(device)
                ).logits.float()
            first = len(prompt) - 1  # the logits at position p predict token p + 1
            for row, (i, enc, n, cap) in enumerate(zip(idx, labelled, lengths, capped)):
                at_labels = logits[row, first : first + n]
                logprobs = torch.log_softmax(at_labels, dim=-1)
                label_logprobs = logprobs.gather(-1, torch.tensor(enc.labels, device=device)[:, None])
                start_probs = torch.softmax(logits[row, 0], dim=-1)
                out[i] = TeacherLabelled(
                    item=enc,
                    logits=at_labels,
                    avg_logprob=float(label_logprobs.mean()),
                    compression_ratio=compression_ratio(tokenizer.decode(texts[row], skip_special_tokens=True)),
                    no_speech_prob=None if no_speech is None else float(start_probs[no_speech]),
                    hit_cap=cap,
                )
    return [out[i] for i in range(len(items))]
