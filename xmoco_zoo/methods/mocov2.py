"""MoCo v2: a momentum encoder, a queue of negatives and shuffle BN.

He et al., https://arxiv.org/abs/1911.05722; Chen et al., https://arxiv.org/abs/2003.04297. ``forward`` is the
steps of the paper's Algorithm 1: the momentum update (the paper's update after the previous step's SGD), queries
and keys, InfoNCE over the queue, the enqueue.
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
from ..embeddings import Embeddings, Similarities
from ..losses import fp32_region, hardest, info_nce, info_nce_from_sims
from ..momentum import KeyQueue, MomentumEncoder, convert_split_bn, split_bn_permutation
from ..registry import Facts, register_method
from ._heads import Encoder, mocov2_projector


class MoCoV2(nn.Module):
    """MoCo v2 on any headless backbone: ``forward(x1, x2, m)`` returns ``{"loss_nce", "acc1", "loss"}``.
    ``cfg.symmetric``: both views are queries, ½[L(q1, k2) + L(q2, k1)]. Regularizers wrap this module
    (:class:`xmoco_zoo.regularizers.Regularized`) and call the same four steps."""

    uses_sync_bn = False  # no BN in MoCo v2's head

    def __init__(self, backbone: nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_features = backbone.num_features
        online = Encoder(backbone, self.new_query_head()[0])
        # One process: emulate shuffle BN by normalising the batch in groups (queries and keys alike).
        # Several processes: each process's batch is one group and keys are shuffled across processes.
        self.split_bn = cfg.shuffle_bn and cfg.bn_splits > 1 and world_size() == 1
        if self.split_bn:
            convert_split_bn(online, cfg.bn_splits)
        self.encoder = MomentumEncoder(online)
        self.queue = KeyQueue(cfg.queue_size, cfg.dim)
        self.keep_features = False  # a regularizer that reads the backbone features (AMCL) sets it

    @property
    def backbone(self) -> nn.Module:
        """The online backbone: what gets evaluated and exported."""
        return self.encoder.online.backbone

    def new_query_head(self) -> tuple[nn.Module, None]:
        """A fresh projector (and no predictor): the online head, and AMCL's extra heads."""
        hidden = self.cfg.hidden_dim or self.num_features
        return mocov2_projector(self.num_features, hidden, self.cfg.dim), None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, m: float) -> dict[str, torch.Tensor]:
        self.update_momentum(m)
        emb = self.embed(x1, x2)
        out = self.loss(emb)
        self.enqueue(emb)
        out["loss"] = out["loss_nce"]
        return out

    def update_momentum(self, m: float) -> None:
        self.encoder.update(m)

    def embed(self, x1: torch.Tensor, x2: torch.Tensor) -> Embeddings:
        """Queries (one view, or both when symmetric), the other view's keys, every process's keys, and a copy of
        the queue as it is before this step's enqueue (autograd keeps it for the backward)."""
        negatives = self.queue.queue.clone()
        n, s = x1.shape[0], self.cfg.bn_splits
        if self.split_bn and n % s:
            # A short last batch (train.drop_last=false) that split BN cannot cut into equal groups: complete it
            # with its first samples for the encoders, and keep the outputs of the n real samples only.
            fill = torch.arange(-(-n // s) * s, device=x1.device) % n
            x1, x2 = x1[fill], x2[fill]
        xs = (x1, x2)
        q, k, hq, hk = [None, None], [None, None], [None, None], [None, None]
        online = self.encoder.online
        for a in (0, 1) if self.cfg.symmetric else (0,):
            hq[a] = online.backbone(xs[a])
            q[a] = F.normalize(online.head(hq[a]), dim=1)
            hk[1 - a], k[1 - a] = self.keys(xs[1 - a])
        if x1.shape[0] != n:
            q, k, hq, hk = ([None if v is None else v[:n] for v in vs] for vs in (q, k, hq, hk))
        views = [b for b in (0, 1) if k[b] is not None]
        # One gather for all keys: per process [k of view 0; k of view 1], in rank order. Every process must have
        # the same batch size (Accelerate's sharding and DistributedSampler ensure it).
        gathered = gather_no_grad(torch.cat([k[b] for b in views]))
        per_rank = gathered.view(-1, len(views), n, gathered.shape[1])
        k_all: list = [None, None]
        for i, b in enumerate(views):
            k_all[b] = per_rank[:, i].reshape(-1, per_rank.shape[-1])
        # Enqueued view by view, each in rank order: the queue is then the same as one process's with the whole
        # batch, whatever the number of processes.
        new_keys = torch.cat([k_all[b] for b in views])
        feats = self.keep_features
        return Embeddings(q, k, k_all, negatives, n * rank(), hq if feats else [None, None], hk, new_keys)

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The momentum backbone's features (when kept) and the normalised keys of ``x``, computed on a shuffled
        batch (shuffle BN across processes, or split BN's permutation in one process) and put back in order."""
        enc, feats = self.encoder.momentum, self.keep_features
        if self.cfg.shuffle_bn and world_size() > 1:
            x, unshuffle = shuffle_across_processes(x)
            h = enc.backbone(x)
            k = F.normalize(enc.head(h), dim=1)
            if not feats:
                return None, unshuffle_across_processes(k, unshuffle)
            both = unshuffle_across_processes(torch.cat([k, h.to(k.dtype)], dim=1), unshuffle)
            return both[:, k.shape[1] :], both[:, : k.shape[1]]
        if self.split_bn:
            perm = split_bn_permutation(x.shape[0], self.cfg.bn_splits).to(x.device)
            inv = torch.argsort(perm)
            h = enc.backbone(x[perm])
            k = F.normalize(enc.head(h), dim=1)[inv]
            return (h[inv] if feats else None), k
        h = enc.backbone(x)
        return (h if feats else None), F.normalize(enc.head(h), dim=1)

    def loss(self, emb: Embeddings, sims: Similarities | None = None) -> dict[str, torch.Tensor]:
        """InfoNCE over the queue (or each query's ``negatives_topk`` hardest entries of it), averaged over the
        pairs; from ``sims`` when other terms share its products."""
        losses, accs = [], []
        topk = self.cfg.negatives_topk
        if topk is not None and sims is None:
            sims = Similarities(emb)  # the hard negatives are a selection from q·queueᵀ
        with fp32_region(emb.q[emb.pairs[0]]):
            for a in emb.pairs:
                if sims is None:  # nothing else reads q·queueᵀ: the one-buffer InfoNCE
                    loss, acc = info_nce(emb.q[a], emb.k[1 - a], emb.negatives, self.cfg.temperature)
                else:
                    l_pos, l_neg = sims.positive(a), sims.query_queue(a)
                    if topk is not None:
                        l_neg = hardest(l_neg, topk)
                    loss = info_nce_from_sims(l_pos, l_neg, self.cfg.temperature)
                    acc = (l_pos.detach() > l_neg.detach().max(1).values).float().mean()
                losses.append(loss)
                accs.append(acc)
        return {"loss_nce": sum(losses) / len(losses), "acc1": sum(accs) / len(accs)}

    def enqueue(self, emb: Embeddings) -> None:
        self.queue.enqueue(emb.new_keys)


@register_method(
    "mocov2",
    facts=Facts(
        "MoCo v2", ("arXiv:1911.05722", "arXiv:2003.04297"), "https://github.com/facebookresearch/moco"
    ),
    defaults={
        "method": dict(
            dim=128,
            hidden_dim=None,  # the backbone's width, as MoCo v2's code (2048 for a ResNet-50)
            temperature=0.2,
            momentum=0.999,
            momentum_schedule="constant",
            queue_size=65536,
            symmetric=False,
            negatives_topk=None,
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
