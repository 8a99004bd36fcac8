"""Headless timm backbones."""

from __future__ import annotations

import difflib
from typing import Any

import timm
import torch
from torch import nn

from .errors import ConfigError


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Any timm model, without pretrained weights, headless: ``forward`` returns pooled features.

    Args:
        name: a timm model name (``resnet50``, ``vit_small_patch16_224``, ``test_resnet``...).
        **kwargs: constructor arguments passed through (``in_chans``, ``img_size``, ``patch_size``,
            ``num_heads``...).
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown timm model {name!r}{hint} (see timm.list_models())")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("num_classes", "pretrained")}
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "patch_embed") and hasattr(backbone, "blocks")


def sincos_2d_pos_embed(
    grid_h: int, grid_w: int, dim: int, num_prefix: int, temperature: float = 10000.0
) -> torch.Tensor:
    """MoCo v3's fixed 2-D sin-cos position embedding, zeros for the prefix (class) tokens. Shape (1, P+HW, dim)."""
    if dim % 4:
        raise ConfigError(
            f"sin-cos position embedding needs an embed dim divisible by 4, got {dim}: "
            "change the ViT's embed_dim or set method.fixed_pos_embed=false"
        )
    gy, gx = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float32), torch.arange(grid_w, dtype=torch.float32), indexing="ij"
    )
    pos_dim = dim // 4
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim)
    out_w = gx.flatten()[:, None] * omega[None]
    out_h = gy.flatten()[:, None] * omega[None]
    emb = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return torch.cat([torch.zeros(num_prefix, dim), emb])[None]


def apply_mocov3_vit_options(backbone: nn.Module, freeze_patch_embed: bool, fixed_pos_embed: bool) -> None:
    """MoCo v3's ViT stabilisers: a frozen random patch projection and a fixed 2-D sin-cos position embedding."""
    if not (freeze_patch_embed or fixed_pos_embed):
        return
    if not is_vit(backbone):
        raise ConfigError(
            "method.freeze_patch_embed / method.fixed_pos_embed apply to ViT backbones only: "
            "set both to false for this backbone"
        )
    if freeze_patch_embed:
        backbone.patch_embed.proj.requires_grad_(False)
    if fixed_pos_embed:
        pe = backbone.pos_embed
        grid_h, grid_w = backbone.patch_embed.grid_size
        num_prefix = pe.shape[1] - grid_h * grid_w
        with torch.no_grad():
            pe.copy_(sincos_2d_pos_embed(grid_h, grid_w, pe.shape[2], num_prefix))
        pe.requires_grad_(False)
