"""Teacher cache: size, fidelity, build overhead and read throughput on the embedded whisper-base.

    python bench/cache_teacher.py [--manifest data/prepared/dev.jsonl] [--n 72] [--out bench/results/cache_teacher.json]

1. Runs the teacher (data/models/whisper-base) teacher-forced over N utterances,
   keeping every position's full distribution.
2. For k in --ks (default 4, 8, 16, 17, 20, 32, 64) and each encoding (ids raw/rank x values
   float16/q8), encodes the shard as cache_teacher does and reports bytes per
   label token (shard + cache.json + README), mean top-k mass, and mean
   Jensen-Shannon divergence (nats) between the full distribution and its
   reconstruction: `renorm` (top-k renormalised, zero elsewhere) and `ghost`
   (top-k as stored, the stored tail mass spread evenly over the other tokens).
   The reference row is "plain": nested list<list<uint16>> ids and float16
   values, zstd, no other tricks. Also: the whole folder of the cache
   built at the defaults, and what ideal order-0 entropy coders would need
   for the k=16 columns (one model per column, or one per slot).
3. Build overhead: `build_cache` wall time over a bare loop (features +
   teacher forward) on the same batches.
4. Read throughput: label positions per second decoded from the shards into
   training tensors, on one thread.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cache import CacheTeacherConfig, build_cache  # noqa: E402
from pipeline.cache_format import ShardArrays, decode_table, f16_to_deltas, to_bytes  # noqa: E402
from pipeline.cache_reader import open_cache  # noqa: E402
from pipeline.manifest import load_manifest  # noqa: E402
from pipeline.teacher import encode, features_for, label_logits, length_batches  # noqa: E402

SIDE_FILES_BYTES = 3_300  # cache.json + README.md of a one-shard cache, measured


def full_logprobs(model, extractor, tokenizer, items, root: Path, batch_size: int) -> list[torch.Tensor]:
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    out: dict[int, torch.Tensor] = {}
    for idx in length_batches(items, batch_size):
        batch = [items[i] for i in idx]
        feats = features_for(extractor, [b.utt for b in batch], root)
        for i, logits in zip(idx, label_logits(model, feats, batch, pad, None)):
            out[i] = torch.log_softmax(logits, -1)
    return [out[i] for i in range(len(items))]


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)

    def kl(a, b):
        return torch.where(a > 0, a * (torch.log(a.clamp_min(1e-300)) - torch.log(b.clamp_min(1e-300))), 0.0).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def fidelity(full: torch.Tensor, arrays: ShardArrays, chunk: int = 512) -> dict:
    sums = {"topk_mass": 0.0, "js_renorm": 0.0, "js_ghost": 0.0}
    for start in range(0, len(full), chunk):  # dense float64 [chunk, V] tensors: bounded memory
        sl = slice(start, start + chunk)
        p = full[sl].double().exp()
        ids = torch.from_numpy(arrays.topk_ids[sl])
        vals = torch.from_numpy(arrays.topk_logprobs[sl]).double().exp()
        k, vocab = ids.shape[1], p.shape[1]
        renorm = torch.zeros_like(p).scatter_(1, ids, vals / vals.sum(1, keepdim=True))
        tail = torch.from_numpy(arrays.tail_logprob[sl]).double().exp().unsqueeze(1)
        ghost = (tail / (vocab - k)).expand_as(p).clone().scatter_(1, ids, vals)
        sums["topk_mass"] += float(p.gather(1, ids).sum(1).sum())
        sums["js_renorm"] += float(js_divergence(p, renorm).sum())
        sums["js_ghost"] += float(js_divergence(p, ghost).sum())
    return {key: value / len(full) for key, value in sums.items()}


def order0_bytes(symbols: np.ndarray) -> float:
    """Bytes an ideal order-0 entropy coder needs for ``symbols`` (its table not counted)."""
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum() / 8)


def entropy_bounds(arrays: ShardArrays) -> dict:
    """Bytes per label position for the top-k columns under ideal order-0 coders, one model
    for the whole column or one per slot (the j-th best entry), against what zstd achieves."""
    n, k = arrays.topk_ids.shape
    unique, counts = np.unique(arrays.topk_ids, return_counts=True)
    rank = np.zeros(int(unique.max()) + 1, dtype=np.int64)
    rank[unique[np.lexsort((unique, -counts))]] = np.arange(len(unique))
    ids = rank[arrays.topk_ids]
    values = f16_to_deltas(arrays.topk_logprobs).astype(np.int64)
    return {
        "ids_order0": order0_bytes(ids) / n,
        "ids_order0_per_slot": sum(order0_bytes(ids[:, j]) for j in range(k)) / n,
        "values_order0": order0_bytes(values) / n,
        "values_order0_per_slot": sum(order0_bytes(values[:, j]) for j in range(k)) / n,
        "labels_order0": order0_bytes(arrays.labels) / n,
        "tail_order0": order0_bytes(arrays.tail_logprob.astype(np.float16)) / n,
    }


def plain_bytes(arrays: ShardArrays) -> int:
    k = arrays.topk_ids.shape[1]
    n = len(arrays.labels)
    inner = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    outer = pa.array(arrays.offsets.astype(np.int32))

    def nested(values, typ):
        return pa.ListArray.from_arrays(outer, pa.ListArray.from_arrays(inner, pa.array(values.reshape(-1), typ)))

    table = pa.table(
        {
            "label_ids": pa.ListArray.from_arrays(outer, pa.array(arrays.labels.astype(np.uint16))),
            "topk_ids": nested(arrays.topk_ids.astype(np.uint16), pa.uint16()),
            "topk_logprobs": nested(arrays.topk_logprobs.astype(np.float16), pa.float16()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return len(buffer.getvalue())


def arrays_for(items, logprobs: list[torch.Tensor], k: int) -> ShardArrays:
    ids, vals, tails = [], [], []
    for lp in logprobs:
        v, i = lp.topk(k, -1)
        ids.append(i.numpy())
        vals.append(v.numpy())
        tails.append(torch.logsumexp(lp.scatter(-1, i, float("-inf")), -1).numpy())
    return ShardArrays(
        ids=[it.utt.id for it in items],
        languages=[it.utt.language for it in items],
        prompts=[it.prompt for it in items],
        labels=np.concatenate([np.asarray(it.labels) for it in items]),
        offsets=np.cumsum([0] + [len(it.labels) for it in items]),
        topk_ids=np.concatenate(ids),
        topk_logprobs=np.concatenate(vals),
        tail_logprob=np.concatenate(tails),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", type=Path, default=Path("data/models/whisper-base"))
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/dev.jsonl"))
    parser.add_argument("--n", type=int, default=72)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16, 17, 20, 32, 64])
    parser.add_argument("--out", type=Path, default=Path("bench/results/cache_teacher.json"))
    args = parser.parse_args()
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(args.teacher)
    extractor = WhisperFeatureExtractor.from_pretrained(args.teacher)
    model = WhisperForConditionalGeneration.from_pretrained(args.teacher).eval()
    utts = load_manifest(args.manifest)[: args.n]
    items = encode(utts, tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / args.manifest.name
        manifest.write_text("".join(u.to_json() + "\n" for u in utts))
        (Path(tmp) / "audio").symlink_to((args.manifest.parent / "audio").resolve())
        start = time.perf_counter()
        full = full_logprobs(model, extractor, tokenizer, items, manifest.parent, args.batch_size)
        bare = time.perf_counter() - start  # the bare forward loop (plus log-softmax)
        cfg = CacheTeacherConfig(
            teacher=args.teacher, manifest=manifest, out_dir=Path(tmp) / "cache", batch_size=args.batch_size
        )
        start = time.perf_counter()
        build_cache(cfg)
        build = time.perf_counter() - start
        folder_bytes = sum(f.stat().st_size for f in cfg.out_dir.iterdir() if f.is_file())
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        reps, positions = 5, 0
        open_cache(cfg.out_dir, verify=False)  # warm-up: imports, page cache
        start = time.perf_counter()
        for _ in range(reps):
            cache = open_cache(cfg.out_dir, verify=False)  # decode every shard
            for uid in cache.index:
                t = cache.targets(uid)
                torch.from_numpy(t.topk_ids), torch.from_numpy(t.topk_logprobs), torch.from_numpy(t.tail_logprob)
                positions += len(t.labels)
        read_s = time.perf_counter() - start
        torch.set_num_threads(threads)
    n_tokens = sum(len(it.labels) for it in items)
    full_cat = torch.cat(full)
    rows = []
    for k in args.ks:
        arrays = arrays_for(items, full, k)
        rows.append(
            {
                "k": k,
                "encoding": "plain",
                "bytes_per_token": round((plain_bytes(arrays) + SIDE_FILES_BYTES) / n_tokens, 2),
                **fidelity(full_cat, arrays),
            }
        )
        for ids in ("raw", "rank"):
            for values in ("float16", "q8"):
                data = to_bytes(arrays, ids, values)
                back = decode_table(
                    pq.read_table(io.BytesIO(data)), pq.read_metadata(io.BytesIO(data)).metadata, k, ids, values
                )
                rows.append(
                    {
                        "k": k,
                        "encoding": f"{ids}/{values}",
                        "bytes_per_token": round((len(data) + SIDE_FILES_BYTES) / n_tokens, 2),
                        **fidelity(full_cat, back),
                    }
                )
    bounds = {key: round(value, 2) for key, value in entropy_bounds(arrays_for(items, full, 16)).items()}
    report = {
        "teacher": str(args.teacher),
        "manifest": str(args.manifest),
        "utterances": len(items),
        "label_tokens": n_tokens,
        "rows": rows,
        "default_build_bytes_per_token": round(folder_bytes / n_tokens, 2),
        "order0_bytes_per_position_k16": bounds,
        "build_seconds": round(build, 2),
        "bare_forward_seconds": round(bare, 2),
        "build_overhead": round(build / bare, 3),
        "read_positions_per_second_1_thread": round(positions / read_s),
    }
    print(f"{'k':>3} {'encoding':<14} {'bytes/tok':>9} {'top-k mass':>10} {'JS renorm':>10} {'JS ghost':>10}")
    for r in rows:
        print(
            f"{r['k']:>3} {r['encoding']:<14} {r['bytes_per_token']:>9} {r['topk_mass']:>10.4f} {r['js_renorm']:>10.5f} {r['js_ghost']:>10.5f}"
        )
    print(
        f"whole cache folder at the defaults (k={cfg.top_k}, {cfg.id_encoding}, {cfg.value_encoding}): "
        f"{report['default_build_bytes_per_token']} bytes/token"
    )
    print(f"ideal order-0 coders at k=16, bytes per label position: {bounds}")
    print(
        f"build overhead: {report['build_overhead']}x ({build:.1f} s cache-teacher vs {bare:.1f} s bare forward loop)"
    )
    print(f"read throughput: {report['read_positions_per_second_1_thread']:,} label positions/s (1 thread)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
