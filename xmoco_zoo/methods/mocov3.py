"""MoCo v3: symmetric in-batch contrast with a predictor and a cosine momentum schedule.

Chen, Xie, He, https://arxiv.org/abs/2104.02057.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import apply_mocov3_vit_options
from ..config import MethodConfig
from ..distributed import gather_no_grad, rank
from ..losses import contrastive_loss_from_sims
from ..momentum import MomentumEncoder
from ._common import Encoder, mocov3_mlp
from ._registry import register_method
from .base import MoCoBase
from .step import Step


class MoCoV3(MoCoBase):
    """MoCo v3 on any headless backbone, plus ``cfg.regularizers``.

    ``forward(x1, x2, momentum)`` returns a dict of loss terms (see :class:`MoCoBase`).
    """

    uses_sync_bn = True

    def __init__(self, backbone: nn.Module, cfg: MethodConfig) -> None:
        super().__init__(cfg)
        apply_mocov3_vit_options(backbone, cfg.freeze_patch_embed, cfg.fixed_pos_embed)
        self.num_features = backbone.num_features
        projector, self.predictor = self.new_query_head()
        self.encoder = MomentumEncoder(Encoder(backbone, projector))
        self._init_regularizers()

    def new_query_head(self) -> tuple[nn.Module, nn.Module]:
        """A projector (shared with the momentum side) and a predictor (queries only)."""
        c = self.cfg
        hidden = c.hidden_dim or self.num_features
        projector = mocov3_mlp(c.proj_layers, self.num_features, hidden, c.dim, last_bn=True)
        predictor = mocov3_mlp(c.pred_layers, c.dim, c.pred_hidden_dim, c.dim, last_bn=c.pred_last_bn)
        return projector, predictor

    def encode(self, x1: torch.Tensor, x2: torch.Tensor) -> Step:
        online, mom = self.encoder.online, self.encoder.momentum
        feats = self.needs_features
        hq = [online.backbone(x) for x in (x1, x2)]
        q = [F.normalize(self.predictor(online.head(h)), dim=1) for h in hq]
        with torch.no_grad():
            hk = [mom.backbone(x) for x in (x1, x2)]
            k = [F.normalize(mom.head(h), dim=1) for h in hk]
        k_all = [gather_no_grad(v) for v in k]
        return Step(q, k, k_all, None, q[0].shape[0] * rank(), hq, hk if feats else None)

    def base_loss(self, step: Step) -> dict[str, torch.Tensor]:
        t = self.cfg.temperature
        loss = sum(contrastive_loss_from_sims(step.cross(a), t, step.offset) for a in step.pairs)
        return {"loss_nce": loss}


@register_method(
    "mocov3",
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
