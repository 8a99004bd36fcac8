"""Schedules as pure functions of the global step, so a resumed run needs only the step."""

from __future__ import annotations

import math

from .errors import ConfigError


def cosine_lr(
    step: int, total_steps: int, base_lr: float, warmup_steps: int = 0, min_ratio: float = 0.0
) -> float:
    """Linear warmup from 0, then half-cosine decay to ``min_ratio * base_lr`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def momentum_at(step: int, total_steps: int, m0: float, schedule: str = "constant") -> float:
    """MoCo v2: constant m. MoCo v3: m(t) = 1 − ½(1 + cos(π t / T))(1 − m0), rising from m0 to 1."""
    if schedule == "constant":
        return m0
    if schedule == "cosine":
        return 1.0 - 0.5 * (1.0 + math.cos(math.pi * step / max(1, total_steps))) * (1.0 - m0)
    raise ConfigError(f"unknown momentum schedule {schedule!r}: use 'constant' or 'cosine'")
