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
from ..losses import at_least_fp32, contrastive_loss
from ..momentum import MomentumEncoder
from ._common import Encoder, fp32_region, mocov3_mlp
from ._registry import register_method


class MoCoV3(nn.Module):
    """MoCo v3 on any headless backbone. ``forward(x1, x2, momentum)`` returns a dict of loss terms."""

    def __init__(self, backbone: nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.cfg = cfg
        apply_mocov3_vit_options(backbone, cfg.freeze_patch_embed, cfg.fixed_pos_embed)
        projector = mocov3_mlp(cfg.proj_layers, backbone.num_features, cfg.hidden_dim, cfg.dim, last_bn=True)
        self.encoder = MomentumEncoder(Encoder(backbone, projector))
        self.predictor = mocov3_mlp(
            cfg.pred_layers, cfg.dim, cfg.pred_hidden_dim, cfg.dim, last_bn=cfg.pred_last_bn
        )

    @property
    def backbone(self) -> nn.Module:
        return self.encoder.online.backbone

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, momentum: float) -> dict[str, torch.Tensor]:
        self.encoder.update(momentum)
        q1 = F.normalize(self.predictor(self.encoder(x1)), dim=1)
        q2 = F.normalize(self.predictor(self.encoder(x2)), dim=1)
        k1 = gather_no_grad(F.normalize(self.encoder.forward_momentum(x1), dim=1))
        k2 = gather_no_grad(F.normalize(self.encoder.forward_momentum(x2), dim=1))
        offset = q1.shape[0] * rank()
        t = self.cfg.temperature
        q1, q2, k1, k2 = (at_least_fp32(v) for v in (q1, q2, k1, k2))
        with fp32_region(q1):
            loss = contrastive_loss(q1, k2, t, offset) + contrastive_loss(q2, k1, t, offset)
        return {"loss": loss, "loss_nce": loss}


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
