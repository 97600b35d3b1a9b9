"""cache_teacher on two torchrun nodes (one Gloo rank each, on this machine, meeting at a c10d rendezvous).

A rank killed part-way leaves nothing that a later run trusts: the shard it was writing is a temporary file or a
shard without its sidecar, both made again; the other rank's finished shards are kept as they are, and the card never
says ``complete``. Run again on two nodes, the build finishes to the shards one process writes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from pipeline.cache.build import build_cache
from pipeline.cache.reader import verify_cache
from tests.pipeline.cache.test_build import _config, _params, _shard_digests

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(params: Path, *kill: str) -> list[subprocess.CompletedProcess]:
    """``cache-teacher`` under two torchrun agents, as two machines would start it; with ``kill`` (NAME N), each
    rank runs under tests.pipeline.kill_at, so the one rank that renames onto NAME dies there."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    entry = ["tests.pipeline.kill_at", *kill] if kill else ["pipeline.cli"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{port}",
        "--rdzv_id",
        "test-nodes",
        "--max_restarts",
        "0",
        "-m",
        *entry,
        "--no-progress",
        "cache-teacher",
        "--params",
        str(params),
    ]
    nodes = [
        subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    done = []
    try:
        for node in nodes:
            out, err = node.communicate(timeout=300)
            done.append(subprocess.CompletedProcess(cmd, node.returncode, out, err))
    finally:
        for node in nodes:
            node.kill()
    return done


def _kept(folder: Path) -> dict[str, tuple[int, int]]:
    """Each finished shard's inode and mtime: equal afterwards only when the shard was left as it was."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("shard-*.parquet")}


def test_a_rank_killed_on_one_node_leaves_nothing_trusted_and_two_nodes_finish(tiny_hf_dir, tiny_manifest, tmp_path):
    """Killed with shard 1's bytes written but not renamed into place (the one-process tests in test_build.py cover
    the other moment, a shard in place without its sidecar)."""
    single = _config(tiny_hf_dir, tiny_manifest, tmp_path / "single")
    build_cache(single)
    expected = _shard_digests(single.out_dir)
    assert len(expected) >= 4  # rank 1 owns shards 1 and 3: it dies at its first

    out = tmp_path / "nodes"
    params = _params(_config(tiny_hf_dir, tiny_manifest, out), tmp_path)
    killed = _two_nodes(params, "shard-00001.parquet", "1")
    assert all(n.returncode != 0 for n in killed), [n.stderr[-1500:] for n in killed]
    assert json.loads((out / "cache.json").read_text())["status"] == "building"
    assert any(p.name.startswith(".shard-00001.parquet.tmp-") for p in out.iterdir())
    even = {f for f in expected if int(f[6:11]) % 2 == 0}
    finished = {f for f in expected if (out / f".{f}.sha256").is_file()}
    assert finished == even, finished  # rank 0's shards, all of them; none of rank 1's
    before = {f: v for f, v in _kept(out).items() if f in even}

    again = _two_nodes(params)
    assert all(n.returncode == 0 for n in again), [n.stderr[-1500:] for n in again]
    assert _shard_digests(out) == expected
    assert {f: v for f, v in _kept(out).items() if f in even} == before  # rank 0's work was not done again
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name] == [] and verify_cache(out) == []
