"""Batched two-view augmentations: the pipeline of :func:`xmoco_zoo.augment.view_transform`, applied to a
whole uint8 batch (N, C, H, W) at once on any device, with no Python loop over samples.

:class:`BatchTwoViews` reads the same :class:`~xmoco_zoo.config.AugConfig` fields as ``augment.py`` and runs
the same ops in the same order, each random parameter drawn per sample and per view from one
``torch.Generator`` (a seeded generator gives the same output twice):

1. RandomResizedCrop(image_size, scale=crop_scale, ratio=(3/4, 4/3)), then
2. RandomAffine(affine_degrees, affine_translate, affine_scale, bilinear, fill 0) with probability affine_p,
3. ColorJitter(b, c, s, h) with probability jitter_p (brightness and contrast only on 1 channel),
4. RandomGrayscale(grayscale_p) (3 channels only),
5. GaussianBlur(odd_kernel(blur_kernel_frac * image_size), blur_sigma) with probability blur_p[view],
6. RandomSolarize (threshold 128 of 255, i.e. 0.5 on floats) with probability solarize_p[view],
7. RandomHorizontalFlip(flip_p),
8. Normalize(mean, std) (a 1-value mean/std is repeated over the channels, as in augment.py),
9. RandomErasing(erase_p, erase_scale, erase_ratio, value 0) on the normalised views.

An op whose probability or strength is 0 is skipped (no compute and no random draws), as augment.py leaves
it out of the Compose.

What matches torchvision.transforms.v2 exactly (same distribution of parameters, same formulas):

* Crop boxes: torchvision's ``RandomResizedCrop.make_params`` vectorized: 10 tries of (area fraction
  uniform in crop_scale, log aspect ratio uniform in log(3/4)..log(4/3)), rounded with round-half-even
  like Python's ``round``; the first try that fits is kept (top/left uniform over the valid positions),
  else the same centre-crop fallback. Every sample draws all 10 tries (vectorized); only the first
  valid one is used, so the distribution of boxes is the same.
* Colour ops on float images, each followed by the clamp to [0, 1] of torchvision's float path:
  brightness (scale, i.e. blend with zeros), contrast (blend with the per-image mean of the
  ITU-R 601-2 luma image; of the image itself on 1 channel), saturation (blend with the luma image), hue
  (RGB -> HSV, hue shift modulo 1, HSV -> RGB; the HSV -> RGB step uses the closed-form
  ``v - v*s*clamp(min(k, 4-k), 0, 1)``, equal to torchvision's table lookup up to float rounding).
  Factors are uniform in [max(0, 1-b), 1+b], [max(0, 1-c), 1+c], [max(0, 1-s), 1+s], [-h, h].
* Grayscale: luma 0.2989 R + 0.587 G + 0.114 B, replicated to 3 channels.
* Blur: torchvision's kernel (``softmax(-(x/sigma)^2)`` on ``linspace(±(k-1)/(2*sqrt 2))``, i.e. a
  normalised Gaussian), sigma uniform in blur_sigma per sample, reflect padding of k//2; applied as two
  separable 1-D passes (equal to torchvision's 2-D kernel up to float rounding) with a grouped conv2d
  (groups = M*C, one kernel per selected sample), computed only on the selected samples.
* Solarize ``x >= 0.5 -> 1 - x``, flip, normalise ``(x - mean) / std``.
* Affine: torchvision's ``RandomAffine.make_params`` (angle uniform in ±degrees, translation uniform in
  ±translate x size rounded to whole pixels, scale uniform in the range) and its inverse matrix about the
  image centre, sampled with its own grid (``affine_grid`` of torchvision: pixel centres, align_corners=False)
  by one bilinear ``grid_sample`` per batch, with torchvision's fill rule (a sampled mask of ones blends the
  fill 0 in at the borders).
* Erasing: torchvision's ``RandomErasing.make_params`` vectorized (10 tries of area fraction and log aspect
  ratio, h = round(sqrt(area * ratio)), w = round(sqrt(area / ratio)), the first try with h < H and w < W,
  top/left uniform over the valid positions; none fits: the view is left as is), the box set to 0.
* Each random op is applied to a sample when a uniform draw is < p (torchvision's RandomApply rule).

Deliberate differences from the per-image pipeline (augment.py):

* Jitter order: torchvision draws a random order of the four jitter ops per image; here one random order
  is drawn per batch and per view (``randperm(4)``), shared by the batch's samples. Each sample's
  marginal distribution is the same as torchvision's; samples of one batch are correlated in their
  order only.
* Resize: crop + resize is one ``torchvision.ops.roi_align`` call (bilinear, ``aligned=True``,
  ``sampling_ratio=0``) instead of ``resized_crop(..., antialias=True)``. With sampling_ratio=0 roi_align
  uses ``ceil(box_size / image_size)`` sampling points per output pixel and axis, per box: when the
  box is upscaled (box side <= image_size) that is 1 point, exactly the bilinear interpolation
  (align_corners=False) that torchvision's antialiased bilinear resize reduces to when upscaling; when
  downscaling by a factor f, the output pixel is the mean of ceil(f)^2 bilinear samples spread evenly
  over its footprint in the box (a box filter of width f, e.g. the exact 2x2 mean at f = 2), while
  torchvision's antialias uses a triangle filter of half-width f: both are anti-aliased, roi_align's a
  little sharper. A fixed sampling_ratio would either alias (too few points for large boxes) or waste
  compute (many points for small, upscaled boxes), hence the adaptive one. Also, roi_align interpolates
  in the whole image, so output pixels on the crop's border take up to half a source pixel from just
  outside the box, where torchvision's crop-then-resize replicates the crop's edge pixel.
* No intermediate uint8 rounding: augment.py works on uint8 images and rounds (or truncates) to 0..255
  after the resize and after each colour op and the blur; here everything after the uint8 -> float
  conversion stays float32 in [0, 1]. The solarize threshold 0.5 is therefore applied to unrounded
  values (it is equivalent to 128 on uint8 values).
* RNG stream: the parameters are drawn vectorized, per op, from the given generator (or the global RNG
  of the input's device), so the values differ from torchvision's per-image draws with the same seed;
  the distributions are the same.
* Synchronisation: on CUDA, the jitter order (``.tolist()`` of 4 values) and the blur's selected samples
  (``nonzero``, needed to skip the blur's compute for unselected samples) each cost one host sync per
  view; all other ops are masked with ``torch.where``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .augment import match_channels, odd_kernel
from .config import AugConfig
from .errors import ConfigError

RATIO = (3.0 / 4.0, 4.0 / 3.0)
_TRIES = 10


def _rand(n: int, generator: torch.Generator | None, device: torch.device, lo: float = 0.0, hi: float = 1.0):
    return torch.empty(n, device=device).uniform_(lo, hi, generator=generator)


def _per_sample(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


# ---------------------------------------------------------------- crop


def _draw_tries(
    n: int,
    area: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device | str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's 10 tries per sample (RandomResizedCrop and RandomErasing draw alike): a target area
    (``area`` x a fraction uniform in ``scale``) and an aspect ratio (log-uniform in ``ratio``), (n, 10) each;
    float32 draws and exp, then float64 maths (Python's sqrt and round, half to even as torch.round)."""
    s = torch.empty(n, _TRIES, device=device).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n, _TRIES, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    return s.double() * area, torch.exp(log_r).double()


def _first_fit(
    ok: torch.Tensor, h: torch.Tensor, w: torch.Tensor, height: int, width: int, generator, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first try that fits (``ok``) of each sample, placed uniformly over the valid positions: boxes (n, 4)
    of (top, left, height, width), and whether any try fitted."""
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first try that fits
    h = h.gather(1, first).squeeze(1)
    w = w.gather(1, first).squeeze(1)
    u = torch.rand(h.shape[0], 2, dtype=torch.float64, device=device, generator=generator)
    top = torch.minimum((u[:, 0] * (height - h + 1)).floor().long(), height - h)
    left = torch.minimum((u[:, 1] * (width - w + 1)).floor().long(), width - w)
    return torch.stack([top, left, h, w], dim=1), ok.any(dim=1)


def _sample_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = RATIO,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``n`` RandomResizedCrop boxes as a long tensor (n, 4) of (top, left, height, width), drawn like
    torchvision's ``RandomResizedCrop.make_params`` (10 tries, then the centre-crop fallback)."""
    target, aspect = _draw_tries(n, height * width, scale, ratio, generator, device)
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    boxes, found = _first_fit(ok, h, w, height, width, generator, device)

    # fallback: the same centre crop for every sample (all images of the batch have the same size)
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], device=device)
    return torch.where(found[:, None], boxes, fallback)


def _resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop the (top, left, height, width) ``boxes`` of the float images ``x`` and resize them to
    ``size`` x ``size`` with one bilinear roi_align (adaptive sampling ratio: see the module docstring)."""
    top, left, h, w = boxes.to(x.dtype).unbind(1)
    idx = torch.arange(x.shape[0], device=x.device, dtype=x.dtype)
    rois = torch.stack([idx, left, top, left + w, top + h], dim=1)
    out = roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return out.clamp_(0.0, 1.0)


# ---------------------------------------------------------------- affine and erasing


def _affine_thetas(
    n: int,
    height: int,
    width: int,
    degrees: float,
    translate: tuple[float, float],
    scale: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """``n`` RandomAffine draws (no shear) as torchvision's inverse matrices about the image centre, (n, 2, 3)
    float32 in pixel units (``_get_inverse_affine_matrix`` with centre 0 and shear 0)."""
    angle = _rand(n, generator, device, -degrees, degrees)
    max_dx, max_dy = float(translate[0] * width), float(translate[1] * height)
    tx = torch.round(_rand(n, generator, device, -max_dx, max_dx))  # half to even, as Python's round
    ty = torch.round(_rand(n, generator, device, -max_dy, max_dy))
    return _inverse_affine(angle, tx, ty, _rand(n, generator, device, *scale))


def _inverse_affine(
    angle: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """torchvision's ``_get_inverse_affine_matrix`` (centre 0, shear 0) for each sample, (n, 2, 3) float32."""
    angle, tx, ty, s = (t.double() for t in (angle, tx, ty, scale))
    rot = torch.deg2rad(angle)
    cos, sin = torch.cos(rot) / s, torch.sin(rot) / s
    # [d, -b, 0, -c, a, 0] / scale with a = d = cos, b = -sin, c = sin; then the translation folded in
    m0, m1, m3, m4 = cos, sin, -sin, cos
    m2 = m0 * -tx + m1 * -ty
    m5 = m3 * -tx + m4 * -ty
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3).float()


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp each image ``x[i]`` (N, C, H, W) by its inverse matrix ``theta[i]`` like torchvision's
    ``affine_image`` (bilinear, fill 0): its pixel-centre grid, one grid_sample with a mask channel."""
    n, c, h, w = x.shape
    dev, dtype = x.device, x.dtype
    base = torch.empty(1, h, w, 3, dtype=dtype, device=dev)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=dev))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=dev).unsqueeze_(-1))
    base[..., 2].fill_(1)
    rescaled = theta.to(dtype).transpose(1, 2).div(torch.tensor([0.5 * w, 0.5 * h], dtype=dtype, device=dev))
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(rescaled).view(n, h, w, 2)
    ones = torch.ones(n, 1, h, w, dtype=dtype, device=dev)
    out = F.grid_sample(
        torch.cat((x, ones), 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    img, mask = out[:, :c], out[:, c:]
    return img.mul(mask)  # torchvision: mask * (img - fill) + fill, with fill 0


def _sample_erase_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` RandomErasing boxes (top, left, height, width), drawn like torchvision's
    ``RandomErasing.make_params`` (its h takes the aspect ratio where the crop's w does), and whether a try
    fitted (else the image is left as is)."""
    target, aspect = _draw_tries(n, height * width, scale, ratio, generator, device)
    h = torch.round(torch.sqrt(target * aspect)).long()
    w = torch.round(torch.sqrt(target / aspect)).long()
    return _first_fit((h < height) & (w < width), h, w, height, width, generator, device)


def _erase(x: torch.Tensor, boxes: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Set the box ``boxes[i]`` of each image ``x[i]`` with ``apply[i]`` to 0 (a mask, no loop)."""
    h, w = x.shape[-2:]
    top, left, bh, bw = (b.view(-1, 1) for b in boxes.unbind(1))
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top) & (rows < top + bh)  # (N, H)
    in_cols = (cols >= left) & (cols < left + bw)  # (N, W)
    inside = (in_rows[:, :, None] & in_cols[:, None, :]) & apply.view(-1, 1, 1)
    return x.masked_fill(inside[:, None], 0.0)


# ---------------------------------------------------------------- colour ops (per-sample factors, shape (N,))


def _luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of RGB images (N, 3, H, W) -> (N, 1, H, W), as torchvision's rgb_to_grayscale."""
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _per_sample(f)
    return (x * f).add_(other * (1.0 - f)).clamp_(0.0, 1.0)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(f)).clamp_(0.0, 1.0)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    gray = _luma(x) if x.shape[1] == 3 else x
    return _blend(x, gray.mean(dim=(1, 2, 3), keepdim=True), f)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return _blend(x, _luma(x), f)


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)
    eqc = maxc == minc
    ones = torch.ones_like(maxc)
    crange = maxc - minc
    s = crange / torch.where(eqc, ones, maxc)
    div = torch.where(eqc, ones, crange)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = h.mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return h, s, maxc


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    h, s, v = _rgb_to_hsv(x)
    h6 = (h + f.view(-1, 1, 1)).remainder_(1.0).mul_(6.0)
    vs = v * s
    chans = []
    for n in (5.0, 3.0, 1.0):  # R, G, B
        k = (h6 + n).remainder_(6.0)
        chans.append(v - vs * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(chans, dim=1).clamp_(0.0, 1.0)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    return _luma(x).expand_as(x)


def _solarize(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0.5, 1.0 - x, x)


def _blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gaussian blur of each image ``x[i]`` (M, C, H, W) with its own ``sigma[i]``, torchvision's kernel and
    reflect padding, as two separable passes of one grouped conv2d each (groups = M*C)."""
    m, c, hh, ww = x.shape
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    t = torch.linspace(-lim, lim, steps=kernel_size, dtype=x.dtype, device=x.device)
    kernel = torch.softmax(t.div(sigma.to(x.dtype)[:, None]).pow(2).neg(), dim=1)  # (M, k)
    kernel = kernel.repeat_interleave(c, dim=0)  # (M*C, k): one kernel per (sample, channel) group
    p = kernel_size // 2
    y = F.pad(x.reshape(1, m * c, hh, ww), (p, p, p, p), mode="reflect")
    y = F.conv2d(y, kernel.view(m * c, 1, 1, kernel_size), groups=m * c)
    y = F.conv2d(y, kernel.view(m * c, 1, kernel_size, 1), groups=m * c)
    return y.view(m, c, hh, ww)


# ---------------------------------------------------------------- the module


class BatchTwoViews(torch.nn.Module):
    """The two augmented views of a uint8 batch (N, C, H, W), as float32 (N, C, S, S) normalised tensors.

    Same augmentations, parameters and op order as :class:`xmoco_zoo.augment.TwoViews` (see the module
    docstring for the exact correspondence and the deliberate differences).
    """

    def __init__(self, cfg: AugConfig, channels: int) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3 (model.kwargs.in_chans), got {channels}")
        self.channels = channels
        self.size = int(cfg.image_size)
        self.scale = (float(cfg.crop_scale[0]), float(cfg.crop_scale[1]))
        gray = channels == 1
        b, c, s, h = (float(v) for v in cfg.jitter)
        if not 0.0 <= h <= 0.5:
            raise ConfigError(f"aug.jitter hue (its 4th value) must be in [0, 0.5], got {h}")
        # (lo, hi) per jitter op in torchvision's order (brightness, contrast, saturation, hue); None: skipped
        ranges: list[tuple[float, float] | None] = [
            (max(0.0, 1.0 - b), 1.0 + b) if b > 0 else None,
            (max(0.0, 1.0 - c), 1.0 + c) if c > 0 else None,
            (max(0.0, 1.0 - s), 1.0 + s) if s > 0 and not gray else None,
            (-h, h) if h > 0 and not gray else None,
        ]
        self.jitter_p = float(cfg.jitter_p) if any(r is not None for r in ranges) else 0.0
        self.jitter_ranges = ranges
        self.grayscale_p = 0.0 if gray else float(cfg.grayscale_p)
        self.blur_p = [float(p) for p in cfg.blur_p]
        self.blur_sigma = (float(cfg.blur_sigma[0]), float(cfg.blur_sigma[1]))
        self.blur_kernel = odd_kernel(cfg.blur_kernel_frac * cfg.image_size)
        self.solarize_p = [float(p) for p in cfg.solarize_p]
        self.flip_p = float(cfg.flip_p)
        self.affine_p = float(cfg.affine_p)
        self.affine_degrees = float(cfg.affine_degrees)
        self.affine_translate = (float(cfg.affine_translate[0]), float(cfg.affine_translate[1]))
        self.affine_scale = (float(cfg.affine_scale[0]), float(cfg.affine_scale[1]))
        self.erase_p = float(cfg.erase_p)
        self.erase_scale = (float(cfg.erase_scale[0]), float(cfg.erase_scale[1]))
        self.erase_ratio = (float(cfg.erase_ratio[0]), float(cfg.erase_ratio[1]))
        mean = torch.tensor(match_channels(cfg.mean, channels), dtype=torch.float32).view(1, channels, 1, 1)
        std = torch.tensor(match_channels(cfg.std, channels), dtype=torch.float32).view(1, channels, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError(f"BatchTwoViews expects uint8 images, got {images.dtype}")
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(
                f"BatchTwoViews expects (N, {self.channels}, H, W) images, got shape {tuple(images.shape)}"
            )
        x = images.to(torch.float32).mul_(1.0 / 255.0)  # torchvision's ToDtype(float32, scale=True)
        return self._view(x, 0, generator), self._view(x, 1, generator)

    def _view(self, x: torch.Tensor, view: int, g: torch.Generator | None) -> torch.Tensor:
        n, _, height, width = x.shape
        dev = x.device
        boxes = _sample_boxes(n, height, width, self.scale, RATIO, g, dev)
        v = _resized_crop(x, boxes, self.size)
        if self.affine_p > 0:
            mask = _rand(n, g, dev) < self.affine_p
            theta = _affine_thetas(
                n, self.size, self.size, self.affine_degrees, self.affine_translate, self.affine_scale, g, dev
            )
            v = torch.where(_per_sample(mask), _affine(v, theta), v)
        if self.jitter_p > 0:
            v = self._jitter(v, g)
        if self.grayscale_p > 0:
            mask = _rand(n, g, dev) < self.grayscale_p
            v = torch.where(_per_sample(mask), _grayscale(v), v)
        if self.blur_p[view] > 0:
            mask = _rand(n, g, dev) < self.blur_p[view]
            sigma = _rand(n, g, dev, *self.blur_sigma)
            idx = mask.nonzero().squeeze(1)
            if idx.numel():
                v[idx] = _blur(v[idx], sigma[idx], self.blur_kernel)
        if self.solarize_p[view] > 0:
            mask = _rand(n, g, dev) < self.solarize_p[view]
            v = torch.where(_per_sample(mask), _solarize(v), v)
        if self.flip_p > 0:
            mask = _rand(n, g, dev) < self.flip_p
            v = torch.where(_per_sample(mask), v.flip(-1), v)
        mean, std = self.mean.to(dev), self.std.to(dev)
        v = v.sub(mean).div_(std)
        if self.erase_p > 0:
            apply = _rand(n, g, dev) < self.erase_p
            boxes, found = _sample_erase_boxes(
                n, self.size, self.size, self.erase_scale, self.erase_ratio, g, dev
            )
            v = _erase(v, boxes, apply & found)
        return v.contiguous()

    def _jitter(self, v: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        n, dev = v.shape[0], v.device
        apply = _rand(n, g, dev) < self.jitter_p
        factors = [None if r is None else _rand(n, g, dev, *r) for r in self.jitter_ranges]
        order = torch.randperm(4, generator=g, device=dev).tolist()  # one order per batch (module docstring)
        out = v
        for op in order:
            if factors[op] is not None:
                out = (_brightness, _contrast, _saturation, _hue)[op](out, factors[op])
        return torch.where(_per_sample(apply), out, v)
