"""An experiment's config: the schema (``xmoco_zoo.config``) filled in layers, with the method's registered defaults.

The layers, each overriding the one before: the dataclass defaults, the method's defaults (its base's, then a
preset's changes), the YAML file, the ``a.b=value`` overrides of the command line.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from . import methods  # noqa: F401  (registers the bases, presets and regularizers)
from .config import Config, ConfigError, merge_layer, read_layers, validate
from .registry import method_config_class, method_layers, validate_method


def schema() -> OmegaConf:
    """The Config schema with every registered regularizer's section under ``method``."""
    cfg = OmegaConf.structured(Config)
    cfg.method = OmegaConf.structured(method_config_class())
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a Config from the defaults, the method's registered defaults, a YAML file and overrides.

    Args:
        path: YAML file (optional).
        overrides: ``a.b=value`` strings; values are parsed as YAML (``model.kwargs={in_chans: 1}``).
    """
    file_layer, cli_layer = read_layers(path, overrides)
    base_schema = schema()
    # Find the method (preset name, and a base set explicitly) first so its defaults slot in under the file and
    # the command line.
    probe = merge_layer(merge_layer(base_schema, file_layer, str(path)), cli_layer, "command line")
    base = OmegaConf.select(cli_layer, "method.base", default=None) or OmegaConf.select(
        file_layer, "method.base", default=None
    )
    try:
        layers = method_layers(probe.method.name, base)
    except ValueError as e:
        raise ConfigError(f"method.name: {e}") from None
    cfg = base_schema
    for layer in layers:
        cfg = merge_layer(cfg, OmegaConf.create(layer), "method defaults")
    cfg = merge_layer(cfg, file_layer, str(path))
    cfg = merge_layer(cfg, cli_layer, "command line")
    out: Config = OmegaConf.to_object(cfg)
    validate_method(out.method)
    validate(out)
    return out
