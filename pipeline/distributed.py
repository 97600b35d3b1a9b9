"""torchrun support shared by cache_teacher and train_student: rank, world size, barrier, gradient mean."""

from __future__ import annotations

import os

import torch


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed (NCCL on GPUs, Gloo on CPU) under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def average_gradients(params: list[torch.Tensor], world: int) -> None:
    """Mean of each parameter's gradient over ranks (a rank that did not touch it counts zero)."""
    if world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world
