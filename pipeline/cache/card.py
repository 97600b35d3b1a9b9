"""The dataset card (``README.md``) written into every teacher cache folder."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.fsutil import atomic_write_text


def write_card(out: Path, content: dict) -> None:
    ident = content["identity"]
    size = sum(s["bytes"] for s in content["shards"])
    files = ", ".join(f"`{s['file']}`" for s in content["shards"][:4]) + (" ..." if len(content["shards"]) > 4 else "")
    kept = f"Top-{ident['top_k']}"
    if ident.get("min_prob"):
        kept = f"Sparse (entries of probability >= {ident['min_prob']:g}, at most {ident['top_k']} a position)"
    labels = content.get("labels")
    teacher_rows = ""
    if labels:
        decoding = ident["label_decoding"]
        teacher_rows = (
            f"| labels | {labels['reference']} reference, {labels['teacher']} by the teacher "
            f"({labels['teacher_hit_cap']} reached the {decoding['max_new_tokens']}-token cap, "
            f"{labels['teacher_empty']} empty) |\n"
            f"| teacher's labels | {decoding['method']} decoding of `{ident['unlabelled']}` (sha256 "
            f"`{ident['unlabelled_sha256']}`), then teacher-forced along that transcript |\n"
        )
    text = f"""---
configs:
- config_name: default
  data_files: "shard-*.parquet"
---

# Teacher cache: {ident["teacher"]}

{kept} next-token distributions of the Whisper teacher `{ident["teacher"]}`,
teacher-forced on the reference transcripts of `{ident["manifest"]}`, made by
`dw-pipe cache-teacher` (dw-pipe, DistilWhisper pipeline).

| | |
|---|---|
| utterances | {content["rows"]} |
{teacher_rows}| label tokens | {content["tokens"]} |
| shards | {len(content["shards"])} ({files}) |
| size | {size / 1e6:.2f} MB ({size / max(content["tokens"], 1):.1f} bytes per label token) |
| top-k | {ident["top_k"]} |
| min_prob | {ident.get("min_prob", 0.0):g} (0: every position keeps top-k) |
| temperature | {ident["temperature"]} |
| id encoding | {ident["id_encoding"]} |
| value encoding | {ident["value_encoding"]} |
| prompt | `{ident["prompt_template"]}` |
| teacher weights sha256 | `{ident["teacher_weights_sha256"]}` |
| tokenizer sha256 | `{ident["tokenizer_sha256"]}` |
| manifest sha256 | `{ident["manifest_sha256"]}` |

One row per utterance: `id`, `language`, `prompt_ids`, `label_ids` (text tokens,
then `<|endoftext|>`; a timestamped window, an utterance with segments, has a prompt without
`<|notimestamps|>` and labels `<|start|> text <|end|>` per segment), and per label position `topk_count` (entries kept), `topk_ids`, `topk_logprobs`
and `tail_logprob` (log of the probability mass outside the kept entries); the entry columns are flat,
position after position. Row `label_ids[t]` is predicted from `prompt_ids + label_ids[:t]`. A cache with teacher-labelled rows (format
version 4) adds `label_source` (`reference` or `teacher`) and, for the teacher's rows, Whisper's quality signals
`avg_logprob`, `compression_ratio`, `no_speech_prob`, and `hit_cap` (the transcript reached the token cap).

Encodings (`pipeline/cache/format.py` has the whole definition): ids `raw` are token ids, entries by
descending log-prob; `rank`, the same order, holds ranks into the shard's id table (Parquet metadata key
`dw_pipe.id_table`: 4-byte length + zstd of uint16 ids); `delta` sorts each position's entries by id and
stores differences from the previous id. A value encoding maps a log-prob to an integer code: `float16`
the bit pattern of the negated float16 log-prob, `q8` steps of 1/16 nat, `sqrt64` `64 - round(64 *
sqrt(p))`; with ids `raw`/`rank` each code is stored as its difference from the previous entry's (the
first from 0; float16 mod 2^16), with `delta` as it is. Tails are float16 with `float16` values, else
uint8 steps of 1/8 nat below 0.
Decoded columns in one call (token ids, and float32 log-probs per label position, as lists of k-lists):

```python
from pipeline.cache.reader import load_decoded   # with dw-pipe installed
ds = load_decoded("{out.name}")                   # a datasets.Dataset; ds[0]["topk_ids"][t] = the ids kept at position t
```

or, with no dw-pipe code at the reader's end, `dw-pipe cache decode {out.name} DECODED` writes
`DECODED/decoded.parquet` with those columns, which loads with
`datasets.load_dataset("parquet", data_files="DECODED/decoded.parquet")`. The raw (encoded) columns load with

```python
datasets.load_dataset("parquet", data_files="{out.name}/shard-*.parquet")
```

Check integrity with `dw-pipe cache verify {out.name}` (sha256 per shard in `cache.json`).
"""
    atomic_write_text(out / "README.md", text)
