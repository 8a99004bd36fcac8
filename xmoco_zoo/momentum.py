"""The momentum (key) encoder, the key queue and MoCo's one-process shuffle-BN emulation."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class MomentumEncoder(nn.Module):
    """An online module and a frozen copy that follows it by exponential moving average.

    ``update(m)`` does θk ← m·θk + (1−m)·θq as one foreach lerp over the parameters. The copy keeps its
    own buffers (BatchNorm running statistics), as in MoCo.
    """

    def __init__(self, online: nn.Module) -> None:
        super().__init__()
        self.online = online
        self.momentum = copy.deepcopy(online).requires_grad_(False)

    @torch.no_grad()
    def update(self, m: float) -> None:
        online = [p.detach() for p in self.online.parameters()]
        target = list(self.momentum.parameters())
        torch._foreach_lerp_(target, online, 1.0 - m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.online(x)

    @torch.no_grad()
    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.momentum(x)


class KeyQueue(nn.Module):
    """A FIFO of L2-normalised keys, shape (K, D), saved with the model's state_dict.

    Keys are written at ``ptr`` and wrap around; the batch size need not divide K.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queue.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (B, D) after the newest entry. With B > K only the last K keys are kept."""
        keys = keys.detach()[-self.size :].to(self.queue.dtype)
        idx = (self.ptr + torch.arange(keys.shape[0], device=self.queue.device)) % self.size
        self.queue.index_copy_(0, idx, keys)
        self.ptr.add_(keys.shape[0]).remainder_(self.size)


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that normalises a batch in ``num_splits`` groups (MoCo's one-process shuffle-BN emulation).

    The groups are contiguous blocks of the batch (:func:`split_group_of`), each a free view in any memory format,
    so each goes through the fused kernel as is and one ``cat`` assembles the output (why this layout:
    docs/performance.md, split BN). In eval mode it is a plain BatchNorm2d; the running statistics are the mean
    over the groups.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c = x.shape[:2]
        s = self.num_splits
        if n % s:
            raise ValueError(
                f"split BN: batch {n} is not divisible by method.bn_splits={s}; use a batch size that is a "
                "multiple of bn_splits (MoCo v2 completes a short last batch itself: this is a direct call)"
            )
        momentum = self.momentum if self.momentum is not None else 0.1
        mean = self.running_mean.repeat(s).view(s, c)  # one row per group, updated in place by batch_norm
        var = self.running_var.repeat(s).view(s, c)
        out = torch.cat(
            [
                F.batch_norm(xg, mean[g], var[g], self.weight, self.bias, True, momentum, self.eps)
                for g, xg in enumerate(x.chunk(s))
            ]
        )
        with torch.no_grad():
            self.running_mean.copy_(mean.mean(0))
            self.running_var.copy_(var.mean(0))
            self.num_batches_tracked.add_(1)
        return out


def split_group_of(position: torch.Tensor, batch: int, num_splits: int) -> torch.Tensor:
    """The split-BN group of each position in a batch of ``batch`` samples (contiguous blocks)."""
    return position // (batch // num_splits)


def replace_batchnorm(module: nn.Module, kinds: tuple[type, ...], make) -> nn.Module:
    """Swap every BatchNorm of exactly the types ``kinds`` for ``make(old)``, keeping its state and trainability."""
    for name, child in module.named_children():
        if type(child) in kinds:
            new = make(child)
            new.load_state_dict(child.state_dict())
            if child.affine:  # a frozen (momentum-copy) BN stays frozen
                new.requires_grad_(child.weight.requires_grad)
            setattr(module, name, new)
        else:
            replace_batchnorm(child, kinds, make)
    return module


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a SplitBatchNorm2d, keeping parameters and buffers."""
    return replace_batchnorm(
        module,
        (nn.BatchNorm2d,),
        lambda bn: SplitBatchNorm2d(
            bn.num_features, num_splits, eps=bn.eps, momentum=bn.momentum, affine=bn.affine
        ),
    )


def split_bn_permutation(n: int, num_splits: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A key-batch order under which no key lands in its query's split-BN group.

    ``perm[j]`` is the sample placed at key position ``j``. Query group g (the block of positions
    g·N/S to (g+1)·N/S − 1) is dealt out over the S−1 other groups, in near-equal parts and in random order,
    so each key is normalised with samples that mostly did not share its query's statistics. With S=2 the
    two groups can only swap.
    """
    s = num_splits
    if s < 2:
        return torch.randperm(n, generator=generator)
    if n % s:
        raise ValueError(f"split BN: batch {n} is not divisible by method.bn_splits={s}")
    g = n // s
    members = [torch.arange(k * g, (k + 1) * g)[torch.randperm(g, generator=generator)] for k in range(s)]
    sizes = [g // (s - 1) + (1 if d < g % (s - 1) else 0) for d in range(s - 1)]
    key_groups: list[list[torch.Tensor]] = [[] for _ in range(s)]
    for k in range(s):
        parts = torch.split(members[k], sizes)
        for d, part in enumerate(parts, start=1):
            key_groups[(k + d) % s].append(part)
    slots = [torch.cat(parts)[torch.randperm(g, generator=generator)] for parts in key_groups]
    # key position j = slot j % g of group j // g
    return torch.cat(slots)
