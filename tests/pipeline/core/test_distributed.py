"""sum_gradients over 2 Gloo ranks: touched gradients are summed, untouched ones stay None, buckets split right."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.core.distributed import sum_gradients

# name -> (shape, dtype, {rank: value every element of its gradient holds}); a rank not listed has grad None
GRADIENTS = {
    "both": ((3,), torch.float32, {0: 1.0, 1: 2.0}),
    "rank1": ((2, 2), torch.float32, {1: 5.0}),
    "nobody": ((2,), torch.float32, {}),
    "rank0_double": ((1,), torch.float64, {0: 7.0}),
    "both_large": ((5,), torch.float32, {0: 0.5, 1: 10.0}),
    "rank0": ((3,), torch.float32, {0: 4.0}),
}


def _worker(rank: int, store: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        params = []
        for shape, dtype, values in GRADIENTS.values():
            p = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
            if rank in values:
                p.grad = torch.full(shape, values[rank], dtype=dtype)
            params.append(p)
        # 8 elements a bucket: "both" + "rank1" (7, "nobody" is not sent), the float64 one, "both_large" + "rank0"
        sum_gradients(params, 2, bucket_elements=8)
        for name, p in zip(GRADIENTS, params):
            shape, dtype, values = GRADIENTS[name]
            if not values:
                assert p.grad is None, f"{name}: no rank touched it, yet it has a gradient"
                continue
            expected = torch.full(shape, sum(values.values()), dtype=dtype)  # 3, 5, 7, 10.5, 4
            assert p.grad is not None and torch.equal(p.grad, expected), f"rank {rank} {name}: {p.grad}"
    finally:
        dist.destroy_process_group()


def test_sum_gradients_over_two_ranks(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"),), nprocs=2, join=True)


def test_one_process_leaves_gradients_alone() -> None:
    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    sum_gradients([p, q], 1)
    assert torch.equal(p.grad, torch.full((2,), 3.0)) and q.grad is None


def test_each_rank_on_a_node_takes_its_own_gpu(monkeypatch):
    """Under torchrun, ``auto`` and ``cuda`` mean the rank's GPU on its node (LOCAL_RANK); an explicit one stays."""
    from pipeline.models.forward import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert pick_device("auto") == (torch.device("cuda:3"), torch.bfloat16)
    assert pick_device("cuda")[0] == torch.device("cuda:3")
    assert pick_device("cuda:1")[0] == torch.device("cuda:1")
    assert pick_device("cpu") == (torch.device("cpu"), None)
    monkeypatch.delenv("LOCAL_RANK")
    assert pick_device("auto")[0] == torch.device("cuda")
