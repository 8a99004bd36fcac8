"""xmoco-zoo: MoCo-family self-supervised pretraining for any timm backbone.

The public names below are imported on first use (PEP 562), so that ``import xmoco_zoo`` and the light commands
(``xmoco-zoo list``, ``--help``) do not pay for torch and timm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "config",
    "ConfigError": "config",
    "KeyQueue": "momentum",
    "MomentumEncoder": "momentum",
    "UserError": "errors",
    "contrastive_loss": "losses",
    "create_backbone": "backbone",
    "create_method": "methods",
    "export_backbone": "export",
    "info_nce": "losses",
    "knn_accuracy": "knn",
    "list_methods": "methods",
    "load_config": "experiment",
}
__all__ = [
    "Config",
    "ConfigError",
    "KeyQueue",
    "MomentumEncoder",
    "UserError",
    "contrastive_loss",
    "create_backbone",
    "create_method",
    "export_backbone",
    "info_nce",
    "knn_accuracy",
    "list_methods",
    "load_config",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from .backbone import create_backbone
    from .config import Config, ConfigError
    from .errors import UserError
    from .experiment import load_config
    from .export import export_backbone
    from .knn import knn_accuracy
    from .losses import contrastive_loss, info_nce
    from .methods import create_method, list_methods
    from .momentum import KeyQueue, MomentumEncoder
