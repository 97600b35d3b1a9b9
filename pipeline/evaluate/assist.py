"""The student as the teacher's assistant: speculative (assisted) greedy decoding, measured beside plain greedy.

With ``generate(assistant_model=...)`` the assistant drafts a few tokens, the
teacher scores them in one forward pass and keeps them up to its first
disagreement, plus its own next token: the output is the teacher's greedy
output whenever the assistant shares its tokenizer, only the cost moves.
:func:`assisted_decode` decodes each utterance both ways in one process, in
alternating order, and records whether the ids agree and what each took.

An assistant whose encoder weights are the teacher's (the students here keep
the teacher's frozen encoder) is loaded as ``WhisperForCausalLM``, its decoder
alone, and reads the teacher's encoder outputs, as distil-whisper's assistants
do; any other assistant is a whole Whisper that runs its own encoder on every
utterance.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import sha256_files
from pipeline.data.manifest import Utterance

log = logging.getLogger(__name__)

# The files that define the token space: the same ids must mean the same tokens for a draft to be checkable.
TOKEN_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json")


class AssistError(DwPipeError):
    """An assistant that cannot draft for this teacher, or nothing to decode."""


@dataclass(frozen=True)
class UtteranceTiming:
    id: str
    tokens: int  # ids before end-of-text of the plain greedy decode
    identical: bool  # the assisted decode gave exactly the plain decode's ids
    plain_seconds: float
    assisted_seconds: float
    plain_passes: int  # decoder passes of the teacher in plain greedy: one per generated token, end-of-text too
    teacher_passes: int  # those of the assisted decode: one per draft checked
    drafted: int  # tokens the assistant proposed (one assistant decoder pass each)
    accepted: int  # drafts kept, as transformers counts them: passes saved, plain_passes - teacher_passes


@dataclass(frozen=True)
class AssistResult:
    teacher: str
    assistant: str
    language: str
    max_new_tokens: int
    shared_encoder: bool  # the assistant read the teacher's encoder outputs (identical encoder weights)
    draft: dict  # transformers' draft settings the assistant ran with
    decoder_weights: dict  # {"teacher", "assistant"}: weights a decoder pass multiplies (output projection too)
    utterances: list[UtteranceTiming]

    def summary(self) -> dict:
        total = {f: sum(getattr(u, f) for u in self.utterances) for f in SUMMED}
        return {
            "utterances": len(self.utterances),
            # the per-utterance seconds carry 4 decimals; the totals keep them, so the ratio below is the ratio of the
            # stored totals (a reader dividing them gets it back) and not of numbers rounded once more
            **{f: round(v, 4) if isinstance(v, float) else v for f, v in total.items()},
            "speed_ratio": round(total["plain_seconds"] / total["assisted_seconds"], 3),
            "acceptance": round(total["accepted"] / total["drafted"], 3) if total["drafted"] else None,
        }

    def to_json(self) -> dict:
        record = {k: v for k, v in asdict(self).items() if k != "utterances"}
        return {**record, **self.summary(), "per_utterance": [asdict(u) for u in self.utterances]}


SUMMED = (
    "identical",
    "tokens",
    "plain_seconds",
    "assisted_seconds",
    "plain_passes",
    "teacher_passes",
    "drafted",
    "accepted",
)


def check_assistant(teacher_dir: Path, assistant_dir: Path, language: str) -> None:
    """Refuse, in one line, an assistant that cannot draft for ``teacher_dir`` on ``language``: another vocabulary
    or tokenizer, a CLSR student folder (not a plain checkpoint), or an export made for another language."""
    if (assistant_dir / "student.json").is_file():
        raise AssistError(
            f"assistant {assistant_dir} is a CLSR student folder; pass a per-language export of it "
            "(dw-pipe export-students writes data/exports/<student>-<lang>)"
        )
    sizes = [_config(folder).get("vocab_size") for folder in (teacher_dir, assistant_dir)]
    if sizes[0] != sizes[1]:
        raise AssistError(
            f"assistant {assistant_dir} has a vocabulary of {sizes[1]} tokens, teacher {teacher_dir} {sizes[0]}; "
            "an assistant must share the teacher's tokenizer: use a student made from this teacher"
        )
    present = [name for name in TOKEN_FILES if (teacher_dir / name).is_file() or (assistant_dir / name).is_file()]
    if not present:
        raise AssistError(f"{teacher_dir}: no tokenizer files ({', '.join(TOKEN_FILES)}); pass a full checkpoint")
    for name in present:
        digests = [sha256_files([f / name]) if (f / name).is_file() else None for f in (teacher_dir, assistant_dir)]
        if digests[0] != digests[1]:
            raise AssistError(
                f"assistant {assistant_dir}: {name} differs from the teacher's ({teacher_dir}); an assistant must "
                "share the teacher's tokenizer: use a student made from this teacher"
            )
    made_for = _export_language(assistant_dir)
    if made_for is not None and made_for != language:
        raise AssistError(
            f"assistant {assistant_dir} was exported for {made_for}, not {language}; pass the {language} export"
        )


def _config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise AssistError(f"{path} is missing; pass a Hugging Face Whisper checkpoint folder")
    return json.loads(path.read_text(encoding="utf-8"))


def _export_language(folder: Path) -> str | None:
    record = folder / "export.json"
    return json.loads(record.read_text(encoding="utf-8")).get("language") if record.is_file() else None


def load_assistant(assistant_dir: Path, teacher) -> tuple[object, bool]:
    """The assistant, and whether it shares the teacher's encoder: its decoder alone (``WhisperForCausalLM``, made
    over the loaded model's own tensors) when its encoder weights are the teacher's, else the whole model."""
    from transformers import WhisperForCausalLM, WhisperForConditionalGeneration

    from pipeline.core.encoder_memo import encoder_identity

    whole = WhisperForConditionalGeneration.from_pretrained(assistant_dir).eval()
    if encoder_identity(whole) != encoder_identity(teacher):
        return whole, False
    with torch.device("meta"):  # no weights made here: they are the loaded decoder's, assigned below
        decoder = WhisperForCausalLM(copy.deepcopy(whole.config))
    weights = {k: v for k, v in whole.state_dict().items() if not k.startswith("model.encoder.")}
    decoder.load_state_dict(weights, strict=True, assign=True)
    decoder.tie_weights()  # the output projection is the token embedding again, one tensor as in the teacher
    decoder.generation_config = copy.deepcopy(whole.generation_config)
    return decoder.eval(), True


@contextmanager
def count_calls(*modules):
    """How many times each of ``modules`` runs its forward while the block runs (a list, filled in place)."""
    counts = [0] * len(modules)

    def counter(i: int):
        def hook(module, args):
            counts[i] += 1

        return hook

    handles = [m.register_forward_pre_hook(counter(i)) for i, m in enumerate(modules)]
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def assisted_ids(teacher, assistant, kwargs: dict, tokenizer, language: str, max_new_tokens: int) -> list[int]:
    """The teacher's greedy ids with ``assistant`` drafting, before end-of-text: one utterance (``kwargs`` from
    :meth:`pipeline.models.decode.EncoderStore.kwargs`).

    transformers refuses ``decoder_input_ids`` beside an assistant, so the prompt comes from ``language`` and
    ``task`` (the same four tokens); and it drops Whisper's suppression of blank and end-of-text at the first
    step, which plain greedy applies, so that rule is passed back in as a processor of its own."""
    from transformers import LogitsProcessorList, SuppressTokensAtBeginLogitsProcessor

    from pipeline.models.decode import quiet_generate, strip_prompt, text_tokens
    from pipeline.models.forward import prompt_ids

    prompt = prompt_ids(tokenizer, language)
    begin = teacher.generation_config.begin_suppress_tokens
    processors = LogitsProcessorList(
        [SuppressTokensAtBeginLogitsProcessor(begin, begin_index=len(prompt))] if begin else []
    )
    with torch.inference_mode(), quiet_generate():
        out = teacher.generate(
            **kwargs,
            assistant_model=assistant,
            language=language,
            task="transcribe",
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            logits_processor=processors,
        )
    return text_tokens(strip_prompt(out[0].tolist(), prompt), tokenizer.eos_token_id)


def draft_settings(assistant) -> dict:
    """The settings transformers drafts with (the assistant's generation config over transformers' defaults)."""
    config = assistant.generation_config
    defaults = config._get_default_generation_params()
    names = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
    return {
        name: getattr(config, name, None) if getattr(config, name, None) is not None else defaults.get(name)
        for name in names
    }


def assisted_decode(
    teacher_dir: Path, assistant_dir: Path, utts: list[Utterance], root: Path, language: str, max_new_tokens: int = 64
) -> AssistResult:
    """Decode each of ``utts`` (audio under ``root``, all in ``language``) greedily with the teacher, plain and with
    the assistant drafting, and time both.

    Log-mel features are computed once, outside the timers; each timed decode runs the teacher's encoder (and an
    assistant's own, where it has one) and the whole ``generate``. The two decodes of an utterance run back to
    back, in turn plain first and assisted first, so that load on the machine falls on both alike; one utterance
    is decoded both ways untimed first."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from pipeline.core.progress import progress
    from pipeline.models.decode import EncoderStore, generate_batch

    check_assistant(teacher_dir, assistant_dir, language)
    if not utts:
        raise AssistError(f"no utterances in {language} to decode; check --language and the manifest")
    other = next((u for u in utts if u.language != language), None)
    if other is not None:
        raise AssistError(f"utterance {other.id} is in {other.language}, not {language}; pass one language's rows")
    teacher = WhisperForConditionalGeneration.from_pretrained(teacher_dir).eval()
    assistant, shared = load_assistant(assistant_dir, teacher)
    extractor = WhisperFeatureExtractor.from_pretrained(teacher_dir)
    tokenizer = WhisperTokenizer.from_pretrained(teacher_dir)
    store = EncoderStore(teacher, extractor, root, False, torch.device("cpu"))
    store.fill(utts)

    def plain(u: Utterance) -> list[int]:
        return generate_batch(teacher, [u], store, tokenizer, max_new_tokens)[0]

    def assisted(u: Utterance) -> tuple[list[int], list[int]]:
        with count_calls(teacher, assistant) as calls:
            ids = assisted_ids(teacher, assistant, store.kwargs([u]), tokenizer, language, max_new_tokens)
        return ids, calls

    plain(utts[0]), assisted(utts[0])  # warm-up: first calls allocate and pick kernels
    rows = []
    for i, u in enumerate(progress(utts, desc=f"assist {language}", unit="utt")):
        if i % 2:
            ((fast, (passes, drafted)), fast_s), (ids, plain_s) = _timed(assisted, u), _timed(plain, u)
        else:
            (ids, plain_s), ((fast, (passes, drafted)), fast_s) = _timed(plain, u), _timed(assisted, u)
        generated = generated_count(ids, max_new_tokens)
        rows.append(
            UtteranceTiming(
                u.id, len(ids), fast == ids, plain_s, fast_s, generated, passes, drafted, generated - passes
            )
        )
        log.debug(
            "%s: plain %.2f s, assisted %.2f s, %d of %d drafts kept", u.id, plain_s, fast_s, rows[-1].accepted, drafted
        )
    weights = {"teacher": decoder_weights(teacher), "assistant": decoder_weights(assistant)}
    return AssistResult(
        str(teacher_dir), str(assistant_dir), language, max_new_tokens, shared, draft_settings(assistant), weights, rows
    )


def decoder_weights(model) -> int:
    """Weights one decoder pass multiplies per token: the decoder layers and the output projection (tied to the
    token embedding), not the encoder, and not cross-attention's keys and values (computed once per utterance)."""
    skip = (".encoder.", "embed_positions", "encoder_attn.k_proj", "encoder_attn.v_proj")
    return sum(p.numel() for name, p in model.named_parameters() if not any(s in f".{name}" for s in skip))


def generated_count(ids: list[int], max_new_tokens: int) -> int:
    """Tokens ``generate`` produced for ``ids`` (text before end-of-text): the end-of-text too, unless the cap
    stopped it first. Each assisted round yields the drafts it kept plus one token of the teacher's own, so
    kept drafts = this count - rounds."""
    return len(ids) + (len(ids) < max_new_tokens)


def _timed(fn, u: Utterance):
    start = time.perf_counter()
    out = fn(u)
    return out, round(time.perf_counter() - start, 4)


def table_lines(results: list[AssistResult]) -> list[str]:
    """Each result's totals as a printed table, one language a line."""
    head = f"{'language':<8} {'utts':>4} {'identical':>9} {'plain s':>8} {'assisted s':>10} {'ratio':>6} {'kept/drafted':>13}"
    lines = [head]
    for r in results:
        s = r.summary()
        kept = f"{s['accepted']}/{s['drafted']}"
        lines.append(
            f"{r.language:<8} {s['utterances']:>4} {s['identical']:>9} {s['plain_seconds']:>8.1f} "
            f"{s['assisted_seconds']:>10.1f} {s['speed_ratio']:>6.2f} {kept:>13}"
        )
    return lines
