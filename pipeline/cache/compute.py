"""What a shard holds: the teacher's top-k at every label position of its rows, reference- or teacher-labelled.

``cfg`` is a :class:`pipeline.cache.build.CacheTeacherConfig` (not imported: build imports this module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.cache.format import ROW_COLUMNS, ShardArrays
from pipeline.core.errors import DwPipeError
from pipeline.data.manifest import UNLABELLED, load_manifest
from pipeline.models.forward import (
    Encoded,
    encoder_outputs,
    features_for,
    label_logits,
    length_batches,
    prompt_ids,
    topk_of,
)


def unlabelled_items(cfg, tokenizer, reference_ids: set[str]) -> list[Encoded]:
    """The rows the teacher labels, after the reference rows: labels None until it has."""
    if not cfg.unlabelled.is_file():
        raise DwPipeError(f"cache_teacher.unlabelled {cfg.unlabelled} does not exist; run prepare_data first")
    pool = load_manifest(cfg.unlabelled)
    for u in pool:
        if u.split != UNLABELLED:
            raise DwPipeError(
                f"{cfg.unlabelled}: row {u.id} is in split {u.split}; the teacher labels {UNLABELLED} rows"
            )
        if u.id in reference_ids:
            raise DwPipeError(f"{cfg.unlabelled}: row {u.id} is also in {cfg.manifest}; ids must be unique")
    return [Encoded(u, prompt_ids(tokenizer, u.language), None) for u in pool]


def compute_shard(model, extractor, items, cfg, autocast, tokenizer) -> ShardArrays:
    """Top-k for every label position of ``items`` (reference rows batched by length; rows kept in input order);
    rows without labels get the teacher's (:func:`pipeline.cache.labelling.teacher_labels`)."""
    root = cfg.manifest.parent
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    results: dict[int, tuple] = {}
    signals: dict[int, dict] = {}
    items = list(items)
    reference = [i for i, it in enumerate(items) if it.labels is not None]
    memo = None
    if cfg.encoder_memo is not None:
        from pipeline.core.encoder_memo import memo_for

        memo = memo_for(cfg.encoder_memo, model, extractor, autocast)
    for batch_idx in length_batches([items[i] for i in reference], cfg.batch_size):
        batch = [items[reference[j]] for j in batch_idx]
        if memo is None:
            logits_of = label_logits(model, features_for(extractor, [b.utt for b in batch], root), batch, pad, autocast)
        else:
            hidden = encoder_outputs(model, extractor, [b.utt for b in batch], root, autocast, memo)
            logits_of = label_logits(model, None, batch, pad, autocast, encoder_hidden=hidden)
        for j, logits in zip(batch_idx, logits_of):
            results[reference[j]] = topk_of(logits, cfg.top_k, cfg.temperature, cfg.min_prob)
    pending = [i for i, it in enumerate(items) if it.labels is None]
    if pending:
        from pipeline.cache.labelling import teacher_labels

        found = teacher_labels(
            model, extractor, tokenizer, [items[i] for i in pending], cfg.unlabelled.parent, autocast,
            cfg.label_max_new_tokens, cfg.batch_size,
        )  # fmt: skip
        for i, t in zip(pending, found):
            items[i] = t.item
            results[i] = topk_of(t.logits, cfg.top_k, cfg.temperature, cfg.min_prob)
            signals[i] = {
                "label_source": "teacher",
                **{k: getattr(t, k) for k in ("avg_logprob", "compression_ratio", "no_speech_prob", "hit_cap")},
            }
    ordered = [results[i] for i in range(len(items))]
    rows = None
    if cfg.labels == "teacher":
        blank = dict.fromkeys(ROW_COLUMNS) | {"label_source": "reference"}  # a reference row: no signals
        per_row = [signals.get(i, blank) for i in range(len(items))]
        rows = {k: [r[k] for r in per_row] for k in blank}
    return ShardArrays(
        ids=[it.utt.id for it in items],
        languages=[it.utt.language for it in items],
        prompts=[it.prompt for it in items],
        labels=np.concatenate([np.asarray(it.labels, dtype=np.int64) for it in items]),
        offsets=np.cumsum([0] + [len(it.labels) for it in items]),
        topk_ids=np.concatenate([r[0] for r in ordered]),
        topk_logprobs=np.concatenate([r[1] for r in ordered]),
        tail_logprob=np.concatenate([r[2] for r in ordered]),
        counts=np.concatenate([r[3] for r in ordered]).astype(np.int64),
        rows=rows,
    )


def label_counts(out: Path, shards: list[dict]) -> dict:
    """How many rows have reference labels and how many the teacher's; of these, how many reached the token cap,
    and how many are empty (end-of-text alone)."""
    columns = ["label_source", "hit_cap", "label_ids"]
    table = pa.concat_tables(pq.read_table(out / s["file"], columns=columns) for s in shards)
    source = np.asarray(table.column("label_source").to_pylist())
    teacher = source == "teacher"
    lengths = np.asarray(pc.list_value_length(table.column("label_ids")).to_pylist())
    capped = np.asarray(table.column("hit_cap").fill_null(False).to_pylist(), dtype=bool)
    return {
        "reference": int((~teacher).sum()),
        "teacher": int(teacher.sum()),
        "teacher_hit_cap": int((capped & teacher).sum()),
        "teacher_empty": int(((lengths == 1) & teacher & ~capped).sum()),
    }
