"""A timm Hub folder's file names and its ``config.json``, without torch or timm (``xmoco-zoo list`` reads only these)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UserError

META_KEY = "xmoco_zoo"  # config.json's key for what xmoco-zoo records (method, training, results' sources)
CARD = "README.md"
TRAINING_CONFIG = "training_config.yaml"
# optional: the training run's curves (`xmoco-zoo plot curves`), shown on the card
TRAINING_CURVES = "training_curves.png"


class CardError(UserError, ValueError):
    """A model folder whose card cannot be rendered (missing or inconsistent files)."""


def read_folder_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CardError(
            f"{folder} has no config.json: not a timm Hub folder (export one with `xmoco-zoo export`)"
        )
    return json.loads(path.read_text())
