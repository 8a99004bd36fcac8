"""Collective helpers that are no-ops in one process.

Losses and methods call these instead of ``torch.distributed`` directly, so the same code runs in a
single CPU process, under ``accelerate launch`` and under ``torchrun``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .losses.infonce import at_least_fp32


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
@torch.no_grad()
def broadcast_norm_buffers(module: nn.Module, src: int = 0) -> None:
    """Give every process rank ``src``'s BatchNorm running statistics.

    The recipe runs DDP with ``broadcast_buffers=False`` (the queue is identical on every rank by construction),
    so the running statistics of per-process BatchNorm (MoCo v2's shuffle BN) drift apart between ranks. Calling
    this before the kNN monitor and before a checkpoint makes every rank evaluate, save and resume with the same
    statistics, those of rank ``src`` (what a checkpoint and an export hold). A no-op in one process.
    """
    if world_size() == 1:
        return
    bufs = [
        b
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        for b in (m.running_mean, m.running_var, m.num_batches_tracked)
        if b is not None
    ]
    for b in bufs:
        dist.broadcast(b, src)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process along dim 0, in rank order. No gradient flows back."""
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum over processes; the gradient is summed back likewise."""
    return x if world_size() == 1 else _AllReduceSum.apply(x)


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


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with statistics over every process's batch, on any device (torch's SyncBatchNorm is GPU-only).

    Sums and sums of squares are all-reduced with autograd, so gradients see the global statistics too.
    In one process, or in eval mode, it is a plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = at_least_fp32(x)  # the statistics in float32 under autocast (float64 stays float64)
        count = torch.full((1,), x.numel() // c, dtype=xf.dtype, device=x.device)
        stats = all_reduce_sum_with_grad(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                mom = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), mom)
                self.running_var.lerp_((var.detach() * n / (n - 1)).to(self.running_var.dtype), mom)
                self.num_batches_tracked.add_(1)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm → synchronised BatchNorm: torch's SyncBatchNorm on GPU, :class:`AllReduceBatchNorm` elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    from .momentum import replace_batchnorm

    return replace_batchnorm(
        module,
        (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
        lambda bn: AllReduceBatchNorm(
            bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats
        ),
    )
