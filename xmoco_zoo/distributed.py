"""Collective helpers that are no-ops in one process.

Losses and methods call these instead of ``torch.distributed`` directly, so the same code runs in a
single CPU process, under ``accelerate launch`` and under ``torchrun``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process along dim 0, in rank order. No gradient flows back."""
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather that carries gradients back to each process's own slice (for queries)."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))


@torch.no_grad()
def shuffle_across_processes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's shuffle BN: permute the global batch across processes.

    Returns this process's slice of the shuffled global batch and the index that undoes the shuffle
    (to be used with :func:`unshuffle_across_processes`). The permutation is drawn on rank 0 and
    broadcast, so every process agrees on it.
    """
    local = x.shape[0]
    x_all = gather_no_grad(x)
    perm = torch.randperm(x_all.shape[0], device=x.device)
    dist.broadcast(perm, src=0)
    unshuffle = torch.argsort(perm)
    mine = perm.view(world_size(), local)[rank()]
    return x_all[mine], unshuffle


@torch.no_grad()
def unshuffle_across_processes(y: torch.Tensor, unshuffle: torch.Tensor) -> torch.Tensor:
    local = y.shape[0]
    y_all = gather_no_grad(y)
    return y_all[unshuffle.view(world_size(), local)[rank()]]
