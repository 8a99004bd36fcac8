from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from ..backbone import create_backbone
from ..config import Config, MethodConfig, validate_method
from ..errors import ConfigError, OptionError


@dataclass
class MethodEntry:
    """A registered method.

    A *base* (``mocov2``, ``mocov3``) has a builder ``(backbone, MethodConfig) -> nn.Module`` and full
    defaults. A *preset* (``co2``, ``xmoco``, ``amcl``) names a base plus regularizers and carries only what
    it changes; it is built by its base's builder. ``defaults`` is a nested dict over the Config sections
    (``method``, ``aug``, ``train``...).
    """

    name: str
    builder: Callable[[nn.Module, MethodConfig], nn.Module] | None
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""

    @property
    def is_base(self) -> bool:
        return self.builder is not None

    @property
    def base(self) -> str:
        return self.name if self.is_base else self.defaults["method"]["base"]


_REGISTRY: dict[str, MethodEntry] = {}


def register_method(name: str, defaults: dict[str, dict[str, Any]], description: str = "") -> Callable:
    """Decorator registering a base method's builder under ``name``."""

    def wrap(builder: Callable[[nn.Module, MethodConfig], nn.Module]) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        merged = {**defaults, "method": {**defaults.get("method", {}), "name": name, "base": name}}
        _REGISTRY[name] = MethodEntry(name, builder, merged, description)
        return builder

    return wrap


def register_preset(
    name: str, base: str, regularizers: list[str], defaults: dict | None = None, description: str = ""
) -> None:
    """Register ``name`` as ``base`` + ``regularizers`` (+ any other defaults it changes)."""
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered")
    defaults = copy.deepcopy(defaults or {})
    defaults["method"] = {
        **defaults.get("method", {}),
        "name": name,
        "base": base,
        "regularizers": list(regularizers),
    }
    _REGISTRY[name] = MethodEntry(name, None, defaults, description)


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method_entry(name: str) -> MethodEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        names = ", ".join(list_methods())
        fix = f"did you mean {close[0]!r}? (registered: {names})" if close else f"use one of {names}"
        raise ConfigError(f"unknown method {name!r} — {fix}")
    return _REGISTRY[name]


def method_defaults(name: str) -> dict[str, dict[str, Any]]:
    """A method's full defaults: its base's, then (for a preset) what the preset changes."""
    out: dict[str, dict[str, Any]] = {}
    for layer in method_layers(name):
        for section, values in layer.items():
            out.setdefault(section, {}).update(copy.deepcopy(values))
    return out


def method_layers(name: str, base: str | None = None) -> list[dict[str, dict[str, Any]]]:
    """The default layers of method ``name``, with an optional explicit ``base`` (``method.base=mocov3``).

    The base's defaults come first; a preset's changes follow (but not its base when another is set).
    A composed name (``mocov3+co2``) resolves to its base and regularizers. A base name with another
    explicit base (a MoCo v2 config run with ``method.base=mocov3``) gives way to that base.
    """
    if "+" in name:
        first, *regs = name.split("+")
        layers = method_layers(first, base)
        layers.append({"method": {"regularizers": regs}})
        return layers
    entry = get_method_entry(name)
    base = base or entry.base
    layers = [copy.deepcopy(get_method_entry(base).defaults)]
    if not entry.is_base:
        preset = copy.deepcopy(entry.defaults)
        preset["method"].pop("base")
        layers.append(preset)
    return layers


def preset_for(base: str, regularizers: list[str]) -> str | None:
    """The registered preset that is exactly ``base`` + ``regularizers``, if any."""
    if not regularizers:
        return base
    for e in _REGISTRY.values():
        if (
            not e.is_base
            and e.base == base
            and sorted(e.defaults["method"]["regularizers"]) == sorted(regularizers)
        ):
            return e.name
    return None


def resolve_method_config(name: str, overrides: dict[str, Any] | None = None) -> MethodConfig:
    """The MethodConfig of ``name`` with ``overrides`` (nested dicts merge), validated and named."""
    schema = OmegaConf.structured(MethodConfig)
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
        **overrides: MethodConfig fields (``queue_size=4096``, ``regularizers=["co2"]``,
            ``amcl={"heads": 2}``...).

    Example:
        >>> model = create_method("co2", "test_resnet", queue_size=1024)
        >>> out = model(x1, x2, momentum=0.99)  # {"loss": ..., "loss_nce": ..., "loss_co2": ...}
    """
    valid = {f.name for f in fields(MethodConfig)}
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
    """Build the base named by ``cfg.base`` (it adds ``cfg.regularizers`` itself)."""
    validate_method(cfg)
    builder = get_method_entry(cfg.base).builder
    assert builder is not None
    return builder(backbone, cfg)


def create_method_from_config(cfg: Config) -> nn.Module:
    """Build the method of a full experiment Config."""
    return build_method(create_backbone(cfg.model.backbone, **cfg.model.kwargs), cfg.method)
