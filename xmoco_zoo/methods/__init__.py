"""The method registry: ``create_method``, ``list_methods`` and each method's default config."""

from ._registry import (
    MethodEntry,
    create_method,
    create_method_from_config,
    get_method_entry,
    list_methods,
    method_defaults,
    register_method,
)
from .mocov2 import MoCoV2
from .mocov3 import MoCoV3

__all__ = [
    "MethodEntry",
    "MoCoV2",
    "MoCoV3",
    "create_method",
    "create_method_from_config",
    "get_method_entry",
    "list_methods",
    "method_defaults",
    "register_method",
]
