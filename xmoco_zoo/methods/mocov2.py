"""MoCo v2: a momentum encoder, a queue of negatives and shuffle BN.

He et al., https://arxiv.org/abs/1911.05722; Chen et al., https://arxiv.org/abs/2003.04297.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig
from ..distributed import (
    gather_no_grad,
    rank,
    shuffle_across_processes,
    unshuffle_across_processes,
    world_size,
)
from ..losses import info_nce_from_sims, info_nce_queue
from ..momentum import KeyQueue, MomentumEncoder, convert_split_bn, split_bn_permutation
from ._common import Encoder, mocov2_projector
from ._registry import register_method
from .base import MoCoBase
from .step import Step


class MoCoV2(MoCoBase):
    """MoCo v2 on any headless backbone, plus ``cfg.regularizers``.

    ``forward(x1, x2, momentum)`` returns a dict of loss terms (see :class:`MoCoBase`).
    """

    def __init__(self, backbone: nn.Module, cfg: MethodConfig) -> None:
        super().__init__(cfg)
        self.num_features = backbone.num_features
        online = Encoder(backbone, self.new_query_head()[0])
        # One process: emulate shuffle BN by normalising the batch in groups (queries and keys alike).
        # Several processes: each process's batch is one group and keys are shuffled across processes.
        self.split_bn = cfg.shuffle_bn and cfg.bn_splits > 1 and world_size() == 1
        if self.split_bn:
            convert_split_bn(online, cfg.bn_splits)
        self.encoder = MomentumEncoder(online)
        self.queue = KeyQueue(cfg.queue_size, cfg.dim)
        self._init_regularizers()

    def new_query_head(self) -> tuple[nn.Module, None]:
        hidden = self.cfg.hidden_dim or self.num_features
        return mocov2_projector(self.num_features, hidden, self.cfg.dim), None

    @torch.no_grad()
    def keys(self, x: torch.Tensor, features: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Momentum-encoder features (if asked) and normalised keys, computed on a shuffled batch and put
        back in order."""
        enc = self.encoder.momentum
        if self.cfg.shuffle_bn and world_size() > 1:
            x, unshuffle = shuffle_across_processes(x)
            h = enc.backbone(x)
            k = F.normalize(enc.head(h), dim=1)
            if not features:
                return None, unshuffle_across_processes(k, unshuffle)
            both = unshuffle_across_processes(torch.cat([k, h.to(k.dtype)], dim=1), unshuffle)
            return both[:, k.shape[1] :], both[:, : k.shape[1]]
        if self.split_bn:
            perm = split_bn_permutation(x.shape[0], self.cfg.bn_splits).to(x.device)
            inv = torch.argsort(perm)
            h = enc.backbone(x[perm])
            k = F.normalize(enc.head(h), dim=1)[inv]
            return (h[inv] if features else None), k
        h = enc.backbone(x)
        return (h if features else None), F.normalize(enc.head(h), dim=1)

    def encode(self, x1: torch.Tensor, x2: torch.Tensor) -> Step:
        # The queue is updated in place after the step, once autograd has saved it: read a copy.
        negatives = self.queue.queue.clone()
        n = x1.shape[0]
        s = self.cfg.bn_splits
        if self.split_bn and n % s:
            # A short last batch (train.drop_last=false) that split BN cannot cut into equal groups: complete it
            # with its first samples for the encoders, and keep the outputs of the n real samples only.
            fill = torch.arange(-(-n // s) * s, device=x1.device) % n
            x1, x2 = x1[fill], x2[fill]
        xs = (x1, x2)
        feats = self.needs_features
        q: list = [None, None]
        k: list = [None, None]
        hq: list = [None, None]
        hk: list = [None, None]
        for a in (0, 1) if self.cfg.symmetric else (0,):
            hq[a] = self.encoder.online.backbone(xs[a])
            q[a] = F.normalize(self.encoder.online.head(hq[a]), dim=1)
            hk[1 - a], k[1 - a] = self.keys(xs[1 - a], features=feats)
        if x1.shape[0] != n:
            q, k, hq, hk = ([None if v is None else v[:n] for v in vs] for vs in (q, k, hq, hk))
        views = [b for b in (0, 1) if k[b] is not None]
        # One gather for all keys: per process [k of view 0; k of view 1], in rank order. Every process must
        # have the same batch size (Accelerate's sharding and DistributedSampler ensure it).
        gathered = gather_no_grad(torch.cat([k[b] for b in views]))
        per_rank = gathered.view(-1, len(views), n, gathered.shape[1])
        k_all: list = [None, None]
        for i, b in enumerate(views):
            k_all[b] = per_rank[:, i].reshape(-1, per_rank.shape[-1])
        # Enqueue view by view, each in rank order: the queue is then the same as one process's with the
        # whole batch, whatever the number of processes.
        self._new_keys = torch.cat([k_all[b] for b in views])
        return Step(q, k, k_all, negatives, n * rank(), hq, hk)

    def base_loss(self, step: Step) -> dict[str, torch.Tensor]:
        losses, accs = [], []
        if not self.regularizers:  # nothing else reads q·queueᵀ: the one-buffer InfoNCE
            for a in step.pairs:
                loss, acc = info_nce_queue(step.q[a], step.k[1 - a], step.queue, self.cfg.temperature)
                losses.append(loss)
                accs.append(acc)
            return {"loss_nce": sum(losses) / len(losses), "acc1": sum(accs) / len(accs)}
        for a in step.pairs:
            l_pos, l_neg = step.positive(a), step.query_queue(a)
            losses.append(info_nce_from_sims(l_pos, l_neg, self.cfg.temperature))
            accs.append((l_pos.detach() > l_neg.detach().max(1).values).float().mean())
        return {"loss_nce": sum(losses) / len(losses), "acc1": sum(accs) / len(accs)}

    def after_step(self, step: Step) -> None:
        self.queue.enqueue(self._new_keys)
        self._new_keys = None


@register_method(
    "mocov2",
    defaults={
        "method": dict(
            dim=128,
            hidden_dim=None,  # the backbone's width, as MoCo v2's code (2048 for a ResNet-50)
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
