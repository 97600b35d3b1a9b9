"""Loops at their real cost: the target languages scored again at the longer caps a user's decode runs to.

The benchmark caps every decode at ``max_new_tokens`` (64), which bounds
what a loop (output that repeats until the cap) can cost; transformers'
``generate`` lets it run to 444 new tokens by default, CTranslate2 and
faster-whisper to 224 (:data:`pipeline.models.decode.DEFAULT_CAPS`).

Greedy decoding is deterministic and a batch's finished rows do not change
the others' (transformers pads them, CTranslate2 drops them), so a longer
decode of the same batch begins with the capped one: a row that ended before
the cap has the same ids at every longer cap, and one longer decode, cut to
each cap, gives every cap's hypotheses. The timed decode stays the capped one
(speed rows are unchanged); only the batches where a target-language row hit
the cap are decoded again, untimed, at the longest cap, from the encoder
outputs the timed decode left; each such row is checked to begin with its
capped ids (``mismatched_ids``; tests/pipeline/evaluate/test_caps.py and
the retired cap study, docs/studies.md "Loop caps", measured none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.data.manifest import Utterance
from pipeline.evaluate.runs import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caps:
    """The timed decode's cap, the longer caps, and the languages scored at them."""

    max_new_tokens: int
    loop_caps: tuple[int, ...]
    target_languages: tuple[str, ...]


def longer_ids(
    caps: Caps,
    utts: list[Utterance],
    ids: list[list[int]],
    batches: list[list[Utterance]],
    redecode: Callable[[list[Utterance]], list[list[int]]],
) -> tuple[dict[str, list[int]], frozenset[str]]:
    """Ids (before end-of-text) of the target-language utterances at ``max(caps.loop_caps)`` new tokens, and the
    utterances whose longer decode does not begin with their capped one.

    ``ids`` are the timed decode's, at ``caps.max_new_tokens``; ``batches`` the batches it ran, in which
    ``redecode`` decodes a batch again at the longest cap."""
    first = {u.id: x for u, x in zip(utts, ids)}
    longer = {u.id: first[u.id] for u in utts if u.language in caps.target_languages}
    mismatched = set()
    for chunk in batches:
        if not any(u.id in longer and len(first[u.id]) >= caps.max_new_tokens for u in chunk):
            continue  # every target row in it ended before the cap: its ids hold at any longer cap
        for u, x in zip(chunk, redecode(chunk)):
            if u.id in longer:
                longer[u.id] = x
                if x[: caps.max_new_tokens] != first[u.id]:
                    mismatched.add(u.id)
    if mismatched:
        log.warning(
            "%d utterance(s) decoded at %d new tokens do not begin with their %d-token decode (%s): "
            "their rows at the longer caps count them in prefix_mismatches",
            len(mismatched),
            max(caps.loop_caps),
            caps.max_new_tokens,
            ", ".join(sorted(mismatched)[:5]),
        )
    return longer, frozenset(mismatched)


def with_caps(
    run: Run,
    ids: list[list[int]],
    caps: Caps,
    tokenizer,
    redecode: Callable[[list[Utterance]], list[list[int]]],
    batches: list[list[Utterance]],
) -> Run:
    """``run``, whose hypotheses are ``ids`` decoded, with the utterances that hit ``caps.max_new_tokens`` and, per
    longer cap, its target-language utterances at that cap (``run.at_caps``): the longest decode cut to the cap.

    A row hit a cap when it has that many ids: neither engine counts an end-of-text among them, and one that
    came at the last step leaves one id fewer."""
    run.max_new_tokens = caps.max_new_tokens
    run.capped = [len(x) >= caps.max_new_tokens for x in ids]
    if not caps.loop_caps or not any(u.language in caps.target_languages for u in run.utts):
        return run
    longer, mismatched = longer_ids(caps, run.utts, ids, batches, redecode)
    utts = [u for u in run.utts if u.id in longer]
    for cap in sorted(caps.loop_caps):
        run.at_caps[cap] = Run(
            run.model,
            run.compute_type,
            run.effective_compute_type,
            utts,
            [tokenizer.decode(longer[u.id][:cap], skip_special_tokens=True) for u in utts],
            None,  # untimed: the timed decode is the capped one
            run.peak_rss_mb,
            run.model_size_mb,
            reference=run.reference,
            reused_ids=run.reused_ids,
            max_new_tokens=cap,
            capped=[len(longer[u.id]) >= cap for u in utts],
            mismatched_ids=mismatched,
            encoder_source=run.encoder_source,
        )
    return run
