"""The method registry: ``create_method``, ``list_methods`` and each method's default config."""

from . import presets  # noqa: F401  (registers co2, xmoco, amcl)
from ._registry import (
    MethodEntry,
    create_method,
    create_method_from_config,
    get_method_entry,
    list_methods,
    method_defaults,
    method_layers,
    preset_for,
    register_method,
    register_preset,
    resolve_method_config,
)
from .base import MoCoBase
from .mocov2 import MoCoV2
from .mocov3 import MoCoV3
from .step import Step

__all__ = [
    "MethodEntry",
    "MoCoBase",
    "Step",
    "MoCoV2",
    "MoCoV3",
    "create_method",
    "create_method_from_config",
    "get_method_entry",
    "list_methods",
    "method_defaults",
    "method_layers",
    "preset_for",
    "register_method",
    "register_preset",
    "resolve_method_config",
]
