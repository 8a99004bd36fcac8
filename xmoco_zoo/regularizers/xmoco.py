"""XMoCo: cross-similarity consistency and uniform negatives (our reading of https://arxiv.org/abs/2206.04676)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ConfigError, MethodConfig
from ..embeddings import Embeddings, Similarities
from ..losses import cross_consistency, fp32_region, uniformity
from ..registry import Facts, register_regularizer
from ._layer import Regularizer


@dataclass
class XMoCoConfig:
    """XMoCo (arXiv 2206.04676, our reading): L += cross_weight · L_x + uniform_weight · L_u."""

    cross_weight: float = 1.0  # λ_x
    uniform_weight: float = 0.1  # λ_u
    cross_temperature: float = 0.2  # τ_x
    uniform_temperature: float = 0.2  # τ_u
    cross_kind: str = "kl"  # kl (row-wise symmetric KL of softmax(S/τ_x)) | mse (raw cosines)


def _validate(m: MethodConfig) -> None:
    if m.base == "mocov2" and not m.symmetric:
        raise ConfigError(
            "xmoco compares both views' cross-similarities, so MoCo v2 must encode both views as queries: "
            "set method.symmetric=true"
        )
    if m.xmoco.cross_kind not in ("kl", "mse"):
        raise ConfigError(f"method.xmoco.cross_kind={m.xmoco.cross_kind!r} is not one of ['kl', 'mse']")


@register_regularizer(
    "xmoco",
    Facts("XMoCo", ("arXiv:2206.04676",)),
    XMoCoConfig,
    _validate,
    description="cross-similarity consistency between the views + uniform negatives",
)
class XMoCo(Regularizer):
    """L_x between S12 and S21 and L_u over S12's negatives (both views must be queries)."""

    def __init__(self, base: torch.nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.c = cfg.xmoco
        self.weights = {"loss_xcross": cfg.xmoco.cross_weight, "loss_uniform": cfg.xmoco.uniform_weight}

    def forward(self, emb: Embeddings, sims: Similarities) -> dict[str, torch.Tensor]:
        if sims.pairs != [0, 1]:
            raise RuntimeError("xmoco needs both views as queries (method.symmetric=true on MoCo v2)")
        s12, s21 = sims.cross(0), sims.cross(1)
        with fp32_region(s12):
            lx = cross_consistency(s12, s21, self.c.cross_temperature, self.c.cross_kind)
            lu = uniformity(s12, self.c.uniform_temperature, sims.offset)
        return {"loss_xcross": lx, "loss_uniform": lu}
