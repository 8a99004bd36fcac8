"""MoCo v2: a momentum encoder, a queue of negatives and shuffle BN.

He et al., https://arxiv.org/abs/1911.05722; Chen et al., https://arxiv.org/abs/2003.04297.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig
from ..distributed import gather_no_grad, shuffle_across_processes, unshuffle_across_processes, world_size
from ..losses import at_least_fp32, info_nce_from_sims
from ..momentum import KeyQueue, MomentumEncoder, convert_split_bn, split_bn_permutation
from ._common import Encoder, fp32_region, mocov2_projector
from ._registry import register_method


class MoCoV2(nn.Module):
    """MoCo v2 on any headless backbone. ``forward(x1, x2, momentum)`` returns a dict of loss terms."""

    def __init__(self, backbone: nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.cfg = cfg
        online = Encoder(backbone, mocov2_projector(backbone.num_features, cfg.hidden_dim, cfg.dim))
        # One process: emulate shuffle BN by normalising the batch in groups (queries and keys alike).
        # Several processes: each process's batch is one group and keys are shuffled across processes.
        self.split_bn = cfg.shuffle_bn and cfg.bn_splits > 1 and world_size() == 1
        if self.split_bn:
            convert_split_bn(online, cfg.bn_splits)
        self.encoder = MomentumEncoder(online)
        self.queue = KeyQueue(cfg.queue_size, cfg.dim)

    @property
    def backbone(self) -> nn.Module:
        """The online backbone (what gets evaluated and exported)."""
        return self.encoder.online.backbone

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised momentum-encoder embeddings, computed on a shuffled batch and put back in order."""
        if self.cfg.shuffle_bn and world_size() > 1:
            x, unshuffle = shuffle_across_processes(x)
            return unshuffle_across_processes(F.normalize(self.encoder.forward_momentum(x), dim=1), unshuffle)
        if self.split_bn:
            perm = split_bn_permutation(x.shape[0], self.cfg.bn_splits).to(x.device)
            k = F.normalize(self.encoder.forward_momentum(x[perm]), dim=1)
            return k[torch.argsort(perm)]
        return F.normalize(self.encoder.forward_momentum(x), dim=1)

    def contrast(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> dict[str, torch.Tensor]:
        with fp32_region(q):
            return self._contrast(at_least_fp32(q), at_least_fp32(k), at_least_fp32(negatives))

    def _contrast(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> dict[str, torch.Tensor]:
        l_pos = (q * k).sum(1)
        l_neg = q @ negatives.t()
        loss = info_nce_from_sims(l_pos, l_neg, self.cfg.temperature)
        acc1 = (l_pos.detach() > l_neg.detach().max(1).values).float().mean()
        return {"loss_nce": loss, "acc1": acc1}

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, momentum: float) -> dict[str, torch.Tensor]:
        self.encoder.update(momentum)
        # The queue is updated in place below, after autograd has saved it: read a copy.
        negatives = self.queue.queue.clone()
        q1 = F.normalize(self.encoder(x1), dim=1)
        k2 = self.keys(x2)
        out = self.contrast(q1, k2, negatives)
        new_keys = [k2]
        if self.cfg.symmetric:
            q2 = F.normalize(self.encoder(x2), dim=1)
            k1 = self.keys(x1)
            out2 = self.contrast(q2, k1, negatives)
            out = {n: 0.5 * (out[n] + out2[n]) for n in out}
            new_keys.insert(0, k1)
        self.queue.enqueue(gather_no_grad(torch.cat(new_keys)))
        out["loss"] = out["loss_nce"]
        return out


@register_method(
    "mocov2",
    defaults={
        "method": dict(
            dim=128,
            hidden_dim=2048,
            temperature=0.2,
            momentum=0.999,
            momentum_schedule="constant",
            queue_size=65536,
            symmetric=False,
            bn_splits=8,
            shuffle_bn=True,
        ),
        "aug": dict(
            preset="mocov2",
            crop_scale=[0.2, 1.0],
            jitter=[0.4, 0.4, 0.4, 0.1],
            jitter_p=0.8,
            grayscale_p=0.2,
            blur_p=[0.5, 0.5],
            solarize_p=[0.0, 0.0],
        ),
        "train": dict(optimizer="sgd", base_lr=0.03, weight_decay=1e-4, sgd_momentum=0.9, warmup_epochs=0.0),
    },
    description="MoCo v2: queue of negatives, momentum encoder, MLP head, shuffle BN (arXiv 2003.04297)",
)
def _build_mocov2(backbone: nn.Module, cfg: MethodConfig) -> nn.Module:
    return MoCoV2(backbone, cfg)
