"""The methods: the bases (MoCo v2, MoCo v3), the presets, and building any base + regularizers by name.

``create_method("co2", "resnet18")`` builds MoCo v2 wrapped by the CO2 regularizer; ``"mocov3+co2+xmoco"`` any
composition. The facts and defaults of every method live in ``xmoco_zoo.registry``.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from .. import regularizers  # noqa: F401  (registers co2, xmoco, amcl before the presets name them)
from ..backbone import create_backbone
from ..config import Config, MethodConfig
from ..errors import OptionError
from ..registry import (
    get_method_spec,
    list_methods,
    method_config_class,
    method_layers,
    register_preset,
    validate_method,
)
from ..regularizers import Regularized
from .mocov2 import MoCoV2
from .mocov3 import MoCoV3

register_preset("co2", base="mocov2", regularizers=["co2"], description="CO2: MoCo v2 + consistency over the queue's negatives (arXiv 2010.02217)")  # fmt: skip
# Both views are queries: the cross-similarities S12 and S21 need q1 and q2.
register_preset("xmoco", base="mocov2", regularizers=["xmoco"], defaults={"method": {"symmetric": True}}, description="XMoCo: symmetric MoCo v2 + cross-similarity consistency + uniform negatives (arXiv 2206.04676)")  # fmt: skip
register_preset("amcl", base="mocov2", regularizers=["amcl"], description="AMCL: MoCo v2 with H heads and per-pair adaptive temperatures (arXiv 2310.05615)")  # fmt: skip


def resolve_method_config(name: str, overrides: dict[str, Any] | None = None) -> MethodConfig:
    """The MethodConfig of ``name`` with ``overrides`` (nested dicts merge), validated and named."""
    schema = OmegaConf.structured(method_config_class())
    layers = [layer.get("method", {}) for layer in method_layers(name, (overrides or {}).get("base"))]
    try:
        merged = OmegaConf.merge(schema, *layers, overrides or {})
    except OmegaConfBaseException as e:
        raise OptionError(f"method option: {str(e).splitlines()[0]}") from None
    cfg: MethodConfig = OmegaConf.to_object(merged)
    validate_method(cfg)
    return cfg


def create_method(
    name: str,
    backbone: str | nn.Module = "resnet50",
    backbone_kwargs: dict[str, Any] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered method (or a composition such as ``"mocov3+co2"``) around a timm backbone.

    Args:
        name: a name from :func:`list_methods`, or ``base+reg1+reg2``.
        backbone: a timm model name (created headless) or a headless module with ``num_features``.
        backbone_kwargs: timm constructor kwargs (``in_chans``, ``img_size``...).
        **overrides: MethodConfig fields (``queue_size=4096``, ``regularizers=["co2"]``, ``amcl={"heads": 2}``...).

    Example:
        >>> model = create_method("co2", "test_resnet", queue_size=1024)
        >>> out = model(x1, x2, m=0.99)  # {"loss_nce": ..., "acc1": ..., "loss_co2": ..., "loss": ...}
    """
    valid = {f.name for f in fields(method_config_class())}
    for k in overrides:
        if k not in valid:
            close = difflib.get_close_matches(k, valid, n=1)
            raise OptionError(
                f"unknown method option {k!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            )
    cfg = resolve_method_config(name, overrides)
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, **(backbone_kwargs or {}))
    return build_method(backbone, cfg)


def build_method(backbone: nn.Module, cfg: MethodConfig) -> nn.Module:
    """The base named by ``cfg.base``, wrapped by ``cfg.regularizers`` when there are any."""
    validate_method(cfg)
    base = get_method_spec(cfg.base).builder(backbone, cfg)
    return Regularized(base, cfg) if cfg.regularizers else base


def create_method_from_config(cfg: Config) -> nn.Module:
    """Build the method of a full experiment Config."""
    return build_method(create_backbone(cfg.model.backbone, **cfg.model.kwargs), cfg.method)


__all__ = [
    "MoCoV2",
    "MoCoV3",
    "build_method",
    "create_method",
    "create_method_from_config",
    "list_methods",
    "resolve_method_config",
]
