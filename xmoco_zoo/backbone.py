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


def default_num_features(arch: str) -> int | None:
    """The feature dimension of timm's ``arch`` with its default arguments, built on the meta device (no memory,
    no weights); None when timm cannot build it there."""
    try:
        with torch.device("meta"):
            return int(timm.create_model(arch, num_classes=0).num_features)
    except Exception:  # an unknown name, or a model that cannot be built on the meta device: no width note
        return None


def is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "patch_embed") and hasattr(backbone, "blocks")


def sincos_2d_pos_embed(
    grid_h: int, grid_w: int, dim: int, num_prefix: int, temperature: float = 10000.0
) -> torch.Tensor:
    """A fixed 2-D sin-cos position embedding (the MoCo v3 paper's ViT stabiliser), zeros for the prefix (class)
    tokens. Shape (1, P+HW, dim)."""
    if dim % 4:
        raise ConfigError(
            f"sin-cos position embedding needs an embed dim divisible by 4, got {dim}: "
            "change the ViT's embed_dim or set method.fixed_pos_embed=false"
        )
    # Each patch (row r, column c), in row-major order, gets [sin(c·f), cos(c·f), sin(r·f), cos(r·f)] over the
    # dim/4 frequencies f_i = temperature^(−i/(dim/4)) (the Transformer's sinusoids, one half per axis).
    freqs = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    rows = torch.arange(grid_h, dtype=torch.float32).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, dtype=torch.float32).repeat(grid_h)
    angles = [torch.outer(axis, freqs) for axis in (cols, rows)]
    emb = torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1)
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
