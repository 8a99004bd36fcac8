"""Optimizers over the online parameters only (the momentum copy and the queue are never optimized)."""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from torch import nn

from .config import TrainConfig


def create_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum (MoCo v2), LARS (MoCo v3 ResNet) or AdamW (MoCo v3 ViT).

    Biases and norm parameters get no weight decay (and no LARS adaptation), as in MoCo v3; parameters
    with ``requires_grad=False`` (momentum encoder, frozen patch projection) are left out.
    """
    # timm's "sgd" is Nesterov; MoCo uses plain momentum SGD, which timm calls "momentum".
    opt = {"sgd": "momentum", "lars": "lars", "adamw": "adamw"}[cfg.optimizer]
    kwargs: dict = {}
    if cfg.optimizer in ("sgd", "lars"):
        kwargs["momentum"] = cfg.sgd_momentum
    else:
        kwargs["betas"] = tuple(cfg.betas)
    if cfg.fused_optimizer and cfg.optimizer in ("sgd", "adamw"):
        kwargs["fused"] = True
    optimizer = create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=cfg.weight_decay, **kwargs)
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    held = [p for g in optimizer.param_groups for p in g["params"]]
    assert not any(id(p) in frozen for p in held), "the optimizer must not hold frozen/momentum parameters"
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the lr of every group, keeping per-group scales (``lr_scale``, e.g. layer-wise decay)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
