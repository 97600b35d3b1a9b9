"""Teacher cache: the size-fidelity curve of each encoding, build overhead and read throughput.

    python bench/cache_teacher.py [--manifest data/prepared/dev.jsonl] [--n 72] [--cap 24] [--out bench/results/cache_teacher.json]

1. Runs the teacher (data/models/whisper-base) teacher-forced over N utterances,
   keeping every position's full distribution.
2. Three ways to choose the entries a position keeps: a fixed top-k (--ks), every entry of
   probability >= min_prob (--min-probs), and the fewest best entries holding a share of the mass
   (--masses); the last two keep at least one entry and at most --cap. For each choice and each
   encoding (ids raw/rank/delta x values float16/q8/sqrt64, --encodings), encodes the shard as
   cache_teacher does and reports bytes per label token (shard + cache.json + README), entries kept
   per position, mean kept mass, and mean Jensen-Shannon divergence (nats) between the full
   distribution and its reconstruction: `renorm` (kept entries renormalised, zero elsewhere) and
   `ghost` (kept entries as stored, the stored tail mass spread evenly over the other tokens).
   Rows that are at least as close as top-16 float16 in both modes are marked; the smallest of them
   is the candidate default. The reference row "plain" is nested list<list<uint16>> ids and float16
   values, zstd, no other tricks. Also: the whole folder of the cache built at the defaults, and
   what ideal order-0 entropy coders would need for the k=16 columns.
3. Build overhead: `build_cache` wall time over a bare loop (features +
   teacher forward) on the same batches.
4. Read throughput: label positions per second decoded from the shards into
   training tensors, on one thread.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cache.build import CacheTeacherConfig, build_cache  # noqa: E402
from pipeline.cache.format import FORMAT_VERSION, ShardArrays, decode_table, to_bytes, value_codes  # noqa: E402
from pipeline.cache.reader import open_cache  # noqa: E402
from pipeline.core.config import read_params  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.core.machine import machine  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.models.forward import encode, features_for, label_logits, length_batches  # noqa: E402
from pipeline.report.docs import corpus_id, provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

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


def fidelity(full: torch.Tensor, arrays: ShardArrays, chunk: int = 256) -> dict:
    sums = {"entries": 0.0, "kept_mass": 0.0, "js_renorm": 0.0, "js_ghost": 0.0}
    mask_all = torch.from_numpy(arrays.mask())
    for start in range(0, len(full), chunk):  # dense float64 [chunk, V] tensors: bounded memory
        sl = slice(start, start + chunk)
        p = full[sl].double().exp()
        mask = mask_all[sl]
        # padding entries point at the position's best entry, with its value: writing it twice changes nothing
        ids = torch.from_numpy(arrays.topk_ids[sl])
        vals = torch.from_numpy(arrays.topk_logprobs[sl]).double().exp()
        ids, vals = torch.where(mask, ids, ids[:, :1]), torch.where(mask, vals, vals[:, :1])
        kept = (vals * mask).sum(1, keepdim=True)
        renorm = torch.zeros_like(p).scatter_(1, ids, vals / kept)
        tail = torch.from_numpy(arrays.tail_logprob[sl]).double().exp().unsqueeze(1)
        ghost = (tail / (p.shape[1] - mask.sum(1, keepdim=True))).expand_as(p).clone().scatter_(1, ids, vals)
        sums["entries"] += float(mask.sum())
        sums["kept_mass"] += float((p.gather(1, ids) * mask).sum())
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
    values = np.diff(value_codes(arrays.topk_logprobs, "float16"), axis=1, prepend=0) & 0xFFFF
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


def arrays_for(items, logprobs: list[torch.Tensor], k: int, min_prob: float = 0.0, mass: float = 0.0) -> ShardArrays:
    """The cache's own selection (``topk_of``); ``mass`` > 0 instead keeps the fewest best entries whose
    probabilities add up to ``mass`` (at least one, at most k), the rule the cache issue proposed."""
    from pipeline.models.forward import topk_of

    parts = []
    for lp in logprobs:
        ids, values, tail, counts = topk_of(lp, k, 1.0, min_prob)
        if mass > 0:
            cumulative = np.cumsum(np.exp(values.astype(np.float64)), axis=1)
            counts = np.clip((cumulative < mass).sum(1) + 1, 1, k)
            drop = np.arange(k)[None, :] >= counts[:, None]
            dropped = np.where(drop, np.exp(values.astype(np.float64)), 0).sum(1)
            tail = np.log(np.exp(tail.astype(np.float64)) + dropped).astype(np.float32)
            ids, values = np.where(drop, 0, ids), np.where(drop, -np.inf, values).astype(np.float32)
        parts.append((ids, values, tail, counts))
    return ShardArrays(
        ids=[it.utt.id for it in items],
        languages=[it.utt.language for it in items],
        prompts=[it.prompt for it in items],
        labels=np.concatenate([np.asarray(it.labels) for it in items]),
        offsets=np.cumsum([0] + [len(it.labels) for it in items]),
        topk_ids=np.concatenate([p[0] for p in parts]),
        topk_logprobs=np.concatenate([p[1] for p in parts]),
        tail_logprob=np.concatenate([p[2] for p in parts]),
        counts=np.concatenate([p[3] for p in parts]).astype(np.int64),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", type=Path, default=Path("data/models/whisper-base"))
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/dev.jsonl"))
    parser.add_argument("--n", type=int, default=72)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8, 12, 16, 17, 24, 32])
    parser.add_argument("--min-probs", type=float, nargs="+", default=[5e-3, 2e-3, 1.5e-3, 1.2e-3, 1e-3, 7e-4, 5e-4])
    parser.add_argument("--masses", type=float, nargs="+", default=[0.95, 0.97, 0.98, 0.99])
    parser.add_argument("--cap", type=int, default=24, help="most entries a position keeps with --min-probs/--masses")
    parser.add_argument(
        "--encodings",
        nargs="+",
        default=["raw/float16", "rank/float16", "rank/q8", "delta/float16", "delta/q8", "delta/sqrt64", "rank/sqrt64"],
    )
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
    selections = [(k, 0.0, 0.0) for k in args.ks] + [(args.cap, m, 0.0) for m in args.min_probs]
    selections += [(args.cap, 0.0, m) for m in args.masses]
    rows, fidelity_of = [], {}
    for k, min_prob, mass in selections:
        arrays = arrays_for(items, full, k, min_prob, mass)
        choice = {"k": k, "min_prob": min_prob, "mass": mass}
        if min_prob == 0.0 and mass == 0.0:
            plain = (plain_bytes(arrays) + SIDE_FILES_BYTES) / n_tokens
            rows.append(
                {**choice, "encoding": "plain", "bytes_per_token": round(plain, 2), **fidelity(full_cat, arrays)}
            )
        for encoding in args.encodings:
            ids, values = encoding.split("/")
            data = to_bytes(arrays, ids, values)
            if (k, min_prob, mass, values) not in fidelity_of:  # ids are lossless: the values decide fidelity
                back = decode_table(
                    pq.read_table(io.BytesIO(data)), pq.read_metadata(io.BytesIO(data)).metadata, k, ids, values
                )
                fidelity_of[k, min_prob, mass, values] = fidelity(full_cat, back)
            size = (len(data) + SIDE_FILES_BYTES) / n_tokens
            rows.append(
                {
                    **choice,
                    "encoding": encoding,
                    "bytes_per_token": round(size, 2),
                    **fidelity_of[k, min_prob, mass, values],
                }
            )
    bar = next(
        r for r in rows if r["k"] == 16 and not r["min_prob"] and not r["mass"] and r["encoding"].endswith("/float16")
    )
    for r in rows:
        r["at_least_top16_float16"] = r["js_renorm"] <= bar["js_renorm"] and r["js_ghost"] <= bar["js_ghost"]
    passing = [r for r in rows if r["at_least_top16_float16"] and r["encoding"] != "plain"]
    smallest = min(passing, key=lambda r: r["bytes_per_token"])
    bounds = {key: round(value, 2) for key, value in entropy_bounds(arrays_for(items, full, 16)).items()}
    report = {
        "provenance": provenance(
            ROOT,
            "python bench/cache_teacher.py " + shlex.join(sys.argv[1:]),
            {
                "teacher": str(args.teacher),
                "corpus": corpus_id(read_params()["prepare_data"]),
                "manifest": str(args.manifest),
                "utterances": len(items),
                "label_tokens": n_tokens,
                "cache_format": FORMAT_VERSION,
            },
        ),
        "machine": machine(),
        "teacher": str(args.teacher),
        "manifest": str(args.manifest),
        "utterances": len(items),
        "label_tokens": n_tokens,
        "rows": rows,
        "bar_top16_float16": {key: bar[key] for key in ("js_renorm", "js_ghost", "bytes_per_token")},
        "smallest_at_the_bar": smallest,
        "default_build_bytes_per_token": round(folder_bytes / n_tokens, 2),
        "order0_bytes_per_position_k16": bounds,
        "build_seconds": round(build, 2),
        "bare_forward_seconds": round(bare, 2),
        "build_overhead": round(build / bare, 3),
        "read_positions_per_second_1_thread": round(positions / read_s),
    }
    print(
        f"{'k':>3} {'min_prob':>8} {'encoding':<15} {'bytes/tok':>9} {'entries':>7} {'kept mass':>9} {'JS renorm':>10} {'JS ghost':>10}"
    )
    for r in rows:
        mark = "  <= top-16 float16 in both" if r["at_least_top16_float16"] else ""
        print(
            f"{r['k']:>3} {r['min_prob']:>8g} {r['mass']:>5g} {r['encoding']:<15} {r['bytes_per_token']:>9} {r['entries']:>7.2f} "
            f"{r['kept_mass']:>9.4f} {r['js_renorm']:>10.5f} {r['js_ghost']:>10.5f}{mark}"
        )
    print(
        f"smallest at top-16 float16 fidelity: k<={smallest['k']} min_prob {smallest['min_prob']:g} mass {smallest['mass']:g} "
        f"{smallest['encoding']}: {smallest['bytes_per_token']} bytes/token (top-16 float16: {bar['bytes_per_token']})"
    )
    print(
        f"whole cache folder at the defaults (k={cfg.top_k}, min_prob {cfg.min_prob:g}, {cfg.id_encoding}, "
        f"{cfg.value_encoding}): "
        f"{report['default_build_bytes_per_token']} bytes/token"
    )
    print(f"ideal order-0 coders at k=16, bytes per label position: {bounds}")
    print(
        f"build overhead: {report['build_overhead']}x ({build:.1f} s cache-teacher vs {bare:.1f} s bare forward loop)"
    )
    print(f"read throughput: {report['read_positions_per_second_1_thread']:,} label positions/s (1 thread)")
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
