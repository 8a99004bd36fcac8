"""Two-view augmentations with torchvision.transforms.v2, on uint8 image tensors (C, H, W).

The MoCo v2 (aug+) and MoCo v3 pipelines share one builder: they differ only in parameters (crop scale,
jitter strength, and per-view blur and solarize probabilities), which the method's registered defaults
and the YAML set. On 1-channel (grayscale) data, saturation, hue and RandomGrayscale do not apply and
are left out.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from .config import AugConfig
from .errors import ConfigError


def odd_kernel(n: float) -> int:
    """The Gaussian blur's kernel size: the odd integer nearest ``n``, at least 3."""
    k = max(3, int(round(n)))
    return k if k % 2 else k + 1


def view_transform(cfg: AugConfig, view: int, channels: int) -> v2.Compose:
    """The augmentation of one view (0 or 1) for images with ``channels`` channels."""
    b, c, s, h = cfg.jitter
    gray = channels == 1
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(cfg.image_size, scale=tuple(cfg.crop_scale), antialias=True),
    ]
    if cfg.affine_p > 0:
        affine = v2.RandomAffine(
            cfg.affine_degrees,
            translate=tuple(cfg.affine_translate),
            scale=tuple(cfg.affine_scale),
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=0,
        )
        ops.append(v2.RandomApply([affine], p=cfg.affine_p))
    jitter = v2.ColorJitter(b, c) if gray else v2.ColorJitter(b, c, s, h)
    if cfg.jitter_p > 0 and any(cfg.jitter):
        ops.append(v2.RandomApply([jitter], p=cfg.jitter_p))
    if cfg.grayscale_p > 0 and not gray:
        ops.append(v2.RandomGrayscale(p=cfg.grayscale_p))
    if cfg.blur_p[view] > 0:
        blur = v2.GaussianBlur(odd_kernel(cfg.blur_kernel_frac * cfg.image_size), sigma=tuple(cfg.blur_sigma))
        ops.append(v2.RandomApply([blur], p=cfg.blur_p[view]))
    if cfg.solarize_p[view] > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=cfg.solarize_p[view]))
    if cfg.flip_p > 0:
        ops.append(v2.RandomHorizontalFlip(p=cfg.flip_p))
    ops += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(match_channels(cfg.mean, channels), match_channels(cfg.std, channels)),
    ]
    if cfg.erase_p > 0:
        ops.append(v2.RandomErasing(cfg.erase_p, scale=tuple(cfg.erase_scale), ratio=tuple(cfg.erase_ratio)))
    return v2.Compose(ops)


def eval_transform(cfg: AugConfig, channels: int, resize_ratio: float = 1.0) -> v2.Compose:
    """Deterministic evaluation transform: resize (short side ``image_size / resize_ratio``), centre crop, normalise."""
    return v2.Compose(
        [
            v2.Resize(int(round(cfg.image_size / resize_ratio)), antialias=True),
            v2.CenterCrop(cfg.image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(match_channels(cfg.mean, channels), match_channels(cfg.std, channels)),
        ]
    )


def match_channels(values: list[float], channels: int) -> list[float]:
    """Per-channel mean or std for ``channels`` channels (one value is repeated)."""
    if len(values) == channels:
        return list(values)
    if len(values) == 1:
        return list(values) * channels
    raise ConfigError(
        f"aug.mean/aug.std have {len(values)} values for {channels}-channel images; give {channels} (or 1)"
    )


class TwoViews:
    """Callable producing the two augmented views of one image."""

    def __init__(self, cfg: AugConfig, channels: int) -> None:
        self.t1 = view_transform(cfg, 0, channels)
        self.t2 = view_transform(cfg, 1, channels)

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.t1(img), self.t2(img)
