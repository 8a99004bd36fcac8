"""MoCo v3: symmetric in-batch contrast with a predictor and a cosine momentum schedule.

Chen, Xie, He, https://arxiv.org/abs/2104.02057. ``forward`` is the steps of the paper's Algorithm 1: the
momentum update (the paper's update after the previous step's SGD), queries and keys of both views, the
symmetrized ctr(q1, k2) + ctr(q2, k1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import apply_mocov3_vit_options
from ..config import MethodConfig
from ..distributed import gather_no_grad, rank
from ..embeddings import Embeddings, Similarities
from ..losses import contrastive_loss, fp32_region
from ..momentum import MomentumEncoder
from ..registry import Facts, register_method
from ._heads import Encoder, mocov3_mlp


class MoCoV3(nn.Module):
    """MoCo v3 on any headless backbone: ``forward(x1, x2, m)`` returns ``{"loss_nce", "loss"}``."""

    uses_sync_bn = True  # the heads' BN becomes SyncBatchNorm under several processes

    def __init__(self, backbone: nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.cfg = cfg
        apply_mocov3_vit_options(backbone, cfg.freeze_patch_embed, cfg.fixed_pos_embed)
        self.num_features = backbone.num_features
        projector, self.predictor = self.new_query_head()
        self.encoder = MomentumEncoder(Encoder(backbone, projector))
        self.keep_features = False  # a regularizer that reads the backbone features (AMCL) sets it

    @property
    def backbone(self) -> nn.Module:
        """The online backbone: what gets evaluated and exported."""
        return self.encoder.online.backbone

    def new_query_head(self) -> tuple[nn.Module, nn.Module]:
        """A projector (followed by the momentum side too) and a predictor (queries only)."""
        c = self.cfg
        hidden = c.hidden_dim or self.num_features
        projector = mocov3_mlp(c.proj_layers, self.num_features, hidden, c.dim, last_bn=True)
        predictor = mocov3_mlp(c.pred_layers, c.dim, c.pred_hidden_dim, c.dim, last_bn=c.pred_last_bn)
        return projector, predictor

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, m: float) -> dict[str, torch.Tensor]:
        self.update_momentum(m)
        emb = self.embed(x1, x2)
        out = self.loss(emb)
        out["loss"] = out["loss_nce"]
        return out

    def update_momentum(self, m: float) -> None:
        self.encoder.update(m)

    def embed(self, x1: torch.Tensor, x2: torch.Tensor) -> Embeddings:
        """Both views as queries and as keys; every process's keys (no queue)."""
        online, mom = self.encoder.online, self.encoder.momentum
        hq = [online.backbone(x) for x in (x1, x2)]
        q = [F.normalize(self.predictor(online.head(h)), dim=1) for h in hq]
        with torch.no_grad():
            hk = [mom.backbone(x) for x in (x1, x2)]
            k = [F.normalize(mom.head(h), dim=1) for h in hk]
        k_all = [gather_no_grad(v) for v in k]
        feats = self.keep_features
        return Embeddings(q, k, k_all, None, q[0].shape[0] * rank(), hq, hk if feats else [None, None])

    def loss(self, emb: Embeddings, sims: Similarities | None = None) -> dict[str, torch.Tensor]:
        """ctr(q1, k2) + ctr(q2, k1) over every process's keys."""
        if sims is None:
            sims = Similarities(emb)
        t = self.cfg.temperature
        with fp32_region(emb.q[0]):
            loss = sum(contrastive_loss(sims.cross(a), t, sims.offset) for a in sims.pairs)
        return {"loss_nce": loss}

    def enqueue(self, emb: Embeddings) -> None:
        """No queue in MoCo v3."""


@register_method(
    "mocov3",
    facts=Facts("MoCo v3", ("arXiv:2104.02057",), "https://github.com/facebookresearch/moco-v3"),
    defaults={
        "method": dict(
            dim=256,
            hidden_dim=4096,
            pred_hidden_dim=4096,
            temperature=1.0,
            momentum=0.99,
            momentum_schedule="cosine",
            proj_layers=2,
            pred_layers=2,
            pred_last_bn=False,
        ),
        "aug": dict(
            preset="mocov3",
            crop_scale=[0.08, 1.0],
            jitter=[0.4, 0.4, 0.2, 0.1],
            jitter_p=0.8,
            grayscale_p=0.2,
            blur_p=[1.0, 0.1],
            solarize_p=[0.0, 0.2],
        ),
        "train": dict(optimizer="lars", base_lr=0.6, weight_decay=1e-6, warmup_epochs=10.0),
    },
    description="MoCo v3: symmetric in-batch contrast, projector + predictor, cosine momentum (arXiv 2104.02057)",
)
def _build_mocov3(backbone: nn.Module, cfg: MethodConfig) -> nn.Module:
    return MoCoV3(backbone, cfg)
