"""torchrun support shared by cache_teacher and train_student: rank, world size, barrier, gradient sum."""

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
        if torch.cuda.is_available():
            # NCCL binds a rank to the current device: make it this rank's GPU on its node before the group forms
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def sum_gradients(params: list[torch.Tensor], world: int, bucket_elements: int = 1 << 24) -> None:
    """Sum each parameter's gradient over ranks, in place; a parameter that no rank touched keeps ``grad = None``.

    AdamW skips a parameter whose gradient is None. A zero gradient instead
    would let its momentum (and weight decay) move a language's experts on
    steps where no batch of that language ran, which one process never does.
    So the ranks first agree, in one collective on a presence mask, which
    parameters any rank touched; only those are reduced, a rank without one
    contributing zeros. Gradients travel in flat buckets of at most
    ``bucket_elements`` (one collective each, bounded extra memory).

    It is a sum, not a mean: the caller scales each batch's loss by the
    number of batches in the whole step, so a short last step, where some
    rank has fewer batches or none, weighs its batches as one process does.
    """
    if world == 1 or not params:
        return
    import torch.distributed as dist

    present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
    dist.all_reduce(present)
    touched = [p for p, count in zip(params, present.tolist()) if count]
    for p in touched:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets(touched, bucket_elements):
        flat = torch.cat([p.grad.reshape(-1) for p in bucket])
        dist.all_reduce(flat)
        for p, part in zip(bucket, flat.split([p.numel() for p in bucket])):
            p.grad.copy_(part.view_as(p.grad))


def _buckets(params: list[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    """Consecutive runs of parameters with one gradient dtype and device, at most ``limit`` elements each
    (a larger parameter travels alone). Every rank forms the same buckets because it sees the same list."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for p in params:
        last = buckets[-1][-1] if buckets else None
        same = last is not None and (last.grad.dtype, last.grad.device) == (p.grad.dtype, p.grad.device)
        if not same or size + p.numel() > limit:
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += p.numel()
    return buckets
