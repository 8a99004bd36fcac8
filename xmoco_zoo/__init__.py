"""xmoco-zoo: MoCo-family self-supervised pretraining for any timm backbone."""

from .backbone import create_backbone
from .config import Config, ConfigError
from .errors import UserError
from .experiment import load_config
from .export import export_backbone
from .knn import knn_accuracy
from .losses import contrastive_loss, info_nce
from .methods import create_method, list_methods
from .momentum import KeyQueue, MomentumEncoder

__version__ = "0.1.0"

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
