"""The regularizer layer: CO2, XMoCo and AMCL, each a loss term that wraps any base when configured.

Every module of this package is imported here, which registers its regularizer (``xmoco_zoo.registry``): a new
regularizer is one file like ``co2.py`` (its config dataclass, its :class:`Regularizer` module and its
``@register_regularizer``) beside its pure loss in ``xmoco_zoo/losses/``.
"""

import importlib
import pkgutil

from ._layer import Regularized, Regularizer

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Regularized", "Regularizer"]
