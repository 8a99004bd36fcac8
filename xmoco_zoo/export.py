"""Export the online backbone in timm's Hub format: ``model.safetensors`` + ``config.json``.

The folder loads with ``timm.create_model('local-dir:PATH', pretrained=True)`` (or ``hf-hub:`` once pushed).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .config import Config, MethodConfig

PAPER_IDS = {
    "mocov2": ["arXiv:1911.05722", "arXiv:2003.04297"],
    "mocov3": ["arXiv:2104.02057"],
    "co2": ["arXiv:2010.02217"],
    "xmoco": ["arXiv:2206.04676"],
    "amcl": ["arXiv:2310.05615"],
}


def paper_ids(method: MethodConfig) -> list[str]:
    """The papers behind a method: its base's, then each regularizer's."""
    return [p for n in [method.base, *sorted(method.regularizers)] for p in PAPER_IDS.get(n, [])]


def export_backbone(
    backbone: nn.Module, out_dir: str | Path, cfg: Config, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``backbone`` (headless, ``num_classes=0``) with a config.json describing how it was trained.

    The pretrained_cfg is rewritten, not inherited from timm's default for the architecture: our tag,
    ``num_classes=0``, the training mean/std and input size (timm's ``save_for_hf`` would otherwise copy
    e.g. ``tag: a1_in1k`` and ``num_classes: 1000``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chans = int(cfg.model.kwargs.get("in_chans", 3))
    size = cfg.aug.image_size
    mean = cfg.aug.mean if len(cfg.aug.mean) == chans else cfg.aug.mean * chans
    std = cfg.aug.std if len(cfg.aug.std) == chans else cfg.aug.std * chans
    pretrained_cfg = {
        "tag": f"{cfg.method.name}_{cfg.data.dataset.replace('_', '')}",
        "num_classes": 0,
        "input_size": [chans, size, size],
        "mean": list(mean),
        "std": list(std),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "license": "apache-2.0",
        "paper_ids": ",".join(paper_ids(cfg.method)),
        "description": f"{cfg.model.backbone} pretrained with {cfg.method.name} by xmoco-zoo on {cfg.data.dataset}",
        "origin_url": "https://github.com/xmoco-zoo/xmoco-zoo",
    }
    # A CPU copy in the default memory format: channels_last weights are not contiguous for safetensors.
    backbone = copy.deepcopy(backbone).cpu().to(memory_format=torch.contiguous_format).eval()
    timm.models.save_for_hf(
        backbone,
        str(out_dir),
        model_config={"pretrained_cfg": pretrained_cfg, **(extra or {})},
        model_args=dict(cfg.model.kwargs),
        safe_serialization=True,
    )
    # save_for_hf also writes pytorch_model.bin only when asked for "both"; make sure no stale one lingers.
    stale = out_dir / "pytorch_model.bin"
    if stale.exists():
        stale.unlink()
    return out_dir
