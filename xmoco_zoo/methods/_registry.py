from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from ..backbone import create_backbone
from ..config import Config, MethodConfig


@dataclass
class MethodEntry:
    """A registered method: a builder ``(backbone, MethodConfig) -> nn.Module`` and its default config.

    ``defaults`` is a nested dict over the Config sections (``method``, ``aug``, ``train``...).
    """

    name: str
    builder: Callable[[nn.Module, MethodConfig], nn.Module]
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, MethodEntry] = {}


def register_method(name: str, defaults: dict[str, dict[str, Any]], description: str = "") -> Callable:
    """Decorator registering a builder under ``name``."""

    def wrap(builder: Callable[[nn.Module, MethodConfig], nn.Module]) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        merged = {**defaults, "method": {**defaults.get("method", {}), "name": name}}
        _REGISTRY[name] = MethodEntry(name, builder, merged, description)
        return builder

    return wrap


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method_entry(name: str) -> MethodEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown method {name!r}{hint} Registered: {', '.join(list_methods())}")
    return _REGISTRY[name]


def method_defaults(name: str) -> dict[str, dict[str, Any]]:
    return copy.deepcopy(get_method_entry(name).defaults)


def create_method(
    name: str,
    backbone: str | nn.Module = "resnet50",
    backbone_kwargs: dict[str, Any] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered method around a timm backbone.

    Args:
        name: a name from :func:`list_methods`.
        backbone: a timm model name (created headless) or a headless module with ``num_features``.
        backbone_kwargs: timm constructor kwargs (``in_chans``, ``img_size``...).
        **overrides: MethodConfig fields (``queue_size=4096``, ``temperature=0.1``...).

    Example:
        >>> model = create_method("mocov2", "test_resnet", queue_size=1024)
        >>> out = model(x1, x2, momentum=0.99)  # {"loss": ..., "loss_nce": ...}
    """
    entry = get_method_entry(name)
    valid = {f.name for f in fields(MethodConfig)}
    for k in overrides:
        if k not in valid:
            close = difflib.get_close_matches(k, valid, n=1)
            raise TypeError(
                f"unknown method option {k!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            )
    cfg = MethodConfig(**{**entry.defaults.get("method", {}), **overrides})
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, **(backbone_kwargs or {}))
    return entry.builder(backbone, cfg)


def create_method_from_config(cfg: Config) -> nn.Module:
    """Build the method of a full experiment Config."""
    backbone = create_backbone(cfg.model.backbone, **cfg.model.kwargs)
    return get_method_entry(cfg.method.name).builder(backbone, cfg.method)
