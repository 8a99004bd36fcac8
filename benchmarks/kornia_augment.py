"""Our batched two-view augmentations (xmoco_zoo.batch_augment) against kornia's ``kornia.augmentation`` built
for the same config, side by side: CPU time per batch, and (``--check``) the distributions they draw and produce,
with torchvision's per-image pipeline (xmoco_zoo.augment) as the reference.

Two settings, each an AugConfig as the library resolves it:

* ``fmnist``: recipes/configs/mocov2_fmnist.yaml (28 px, 1 channel, crop_scale [0.3, 1], brightness/contrast 0.4
  with p 0.8, grayscale p 0.2 (a no-op on 1 channel, kept), no blur, flip p 0.5);
* ``rgb32``: MoCo v2's aug+ (the defaults) on 32 px RGB: crop_scale [0.2, 1], jitter (0.4, 0.4, 0.4, 0.1) p 0.8,
  grayscale p 0.2, Gaussian blur p 0.5 (kernel 3, sigma 0.1..2), flip p 0.5.

kornia is built two ways, differing only in how RandomResizedCrop resamples: ``kornia`` (``cropping_mode="slice"``:
slice the box, then ``F.interpolate`` each sample, the geometry of torchvision's resized_crop) and
``kornia_resample`` (``cropping_mode="resample"``: one batched warp). Both use ``align_corners=False`` as
torchvision does (kornia's default is True). kornia draws from torch's global RNG and takes no generator;
:meth:`KorniaTwoViews.forward` gets per-batch seeding (exact resume) by seeding the global RNG inside
``torch.random.fork_rng``, which restores the caller's RNG state afterwards.

    python benchmarks/kornia_augment.py --threads 2                  # timing: ms per batch of 256, both settings
    python benchmarks/kornia_augment.py --check                      # distributions: ours, kornia vs torchvision
    python benchmarks/kornia_augment.py --check --images 8192        # tighter standard errors (~2 minutes)

Timing: interleaved rounds (each pipeline once per round, rotated order) and medians, on the same uint8 batch,
at the same thread count; every call is seeded per batch, as training does (ours: a torch.Generator; kornia:
fork_rng + manual_seed). Results in docs/kornia.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kornia
import kornia.augmentation as K
import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularizer_overhead import cpu_name, interleaved_medians  # noqa: E402

from xmoco_zoo import batch_augment as ba  # noqa: E402
from xmoco_zoo.augment import TwoViews, match_channels, odd_kernel  # noqa: E402
from xmoco_zoo.batch_augment import RATIO, BatchTwoViews  # noqa: E402
from xmoco_zoo.config import AugConfig  # noqa: E402
from xmoco_zoo.data import DatasetNotFoundError, fashion_mnist, synthetic  # noqa: E402
from xmoco_zoo.experiment import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SETTINGS: dict[str, tuple[str | None, list[str]]] = {
    "fmnist": (str(ROOT / "recipes/configs/mocov2_fmnist.yaml"), []),
    "rgb32": (None, ["aug.image_size=32"]),
}
CROP_MODES = {"kornia": "slice", "kornia_resample": "resample"}
FMNIST_TRAIN = 60_000


# ---------------------------------------------------------------- kornia's pipeline


def kornia_view(
    cfg: AugConfig, view: int, channels: int, crop_mode: str = "slice"
) -> K.AugmentationSequential:
    """kornia's augmentation of one view (0 or 1), op for op as :func:`xmoco_zoo.augment.view_transform` (an op
    whose probability is 0 is left out, as there), on float images in [0, 1].

    Args:
        cfg: the augmentation config.
        view: 0 or 1 (blur and solarize probabilities are per view).
        channels: 1 or 3; on 1 channel jitter has brightness and contrast only, and RandomGrayscale is kept
            (a no-op there, as kornia's grayscale of one channel is the channel).
        crop_mode: RandomResizedCrop's ``cropping_mode``: ``"slice"`` or ``"resample"``.
    """
    size = int(cfg.image_size)
    b, c, s, h = (float(v) for v in cfg.jitter)
    if channels == 1:
        s, h = 0.0, 0.0
    ops: list[torch.nn.Module] = [
        K.RandomResizedCrop(
            (size, size),
            scale=(float(cfg.crop_scale[0]), float(cfg.crop_scale[1])),
            ratio=RATIO,
            resample="bilinear",
            align_corners=False,  # torchvision's half-pixel grid (kornia's default is True)
            cropping_mode=crop_mode,
        )
    ]
    if cfg.jitter_p > 0 and any((b, c, s, h)):
        # ColorJitter, not ColorJiggle: it is kornia's port of torchvision's formulas and factor ranges
        ops.append(K.ColorJitter(b, c, s, h, p=float(cfg.jitter_p)))
    if cfg.grayscale_p > 0:
        ops.append(K.RandomGrayscale(p=float(cfg.grayscale_p)))
    if cfg.blur_p[view] > 0:
        k = odd_kernel(cfg.blur_kernel_frac * cfg.image_size)
        sigma = (float(cfg.blur_sigma[0]), float(cfg.blur_sigma[1]))
        ops.append(K.RandomGaussianBlur((k, k), sigma, border_type="reflect", p=float(cfg.blur_p[view])))
    if cfg.solarize_p[view] > 0:
        # thresholds=0: exactly 0.5 (a half-width around 0.5); additions=0: none, as torchvision's threshold 128
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=float(cfg.solarize_p[view])))
    if cfg.flip_p > 0:
        ops.append(K.RandomHorizontalFlip(p=float(cfg.flip_p)))
    mean = torch.tensor(match_channels(cfg.mean, channels))
    std = torch.tensor(match_channels(cfg.std, channels))
    ops.append(K.Normalize(mean=mean, std=std))
    return K.AugmentationSequential(*ops, data_keys=["input"])


class KorniaTwoViews(torch.nn.Module):
    """The two views of a uint8 batch (N, C, H, W) made by kornia: the counterpart of
    :class:`xmoco_zoo.batch_augment.BatchTwoViews` (same call, same outputs' shape, dtype and normalisation).

    Args:
        cfg: the augmentation config.
        channels: 1 or 3.
        crop_mode: RandomResizedCrop's ``cropping_mode``: ``"slice"`` or ``"resample"``.
    """

    def __init__(self, cfg: AugConfig, channels: int, crop_mode: str = "slice") -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels
        self.views = torch.nn.ModuleList(kornia_view(cfg, v, channels, crop_mode) for v in (0, 1))

    def forward(self, images: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views. ``seed``: draw them from torch's global RNG seeded with it inside
        ``torch.random.fork_rng`` (the same seed gives the same views whatever the global RNG was, and the
        caller's RNG state is restored afterwards); ``None``: draw from the global RNG as it is (and advance it).
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(
                f"expected uint8 (N, {self.channels}, H, W) images, got {images.dtype} {tuple(images.shape)}"
            )
        x = images.to(torch.float32).mul_(1.0 / 255.0)
        if seed is None:
            return self.views[0](x), self.views[1](x)
        with seeded_global_rng(seed, x.device):
            return self.views[0](x), self.views[1](x)


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global CPU RNG (and ``device``'s, on CUDA) with ``seed`` for the block; restore their states
    afterwards. kornia samples its parameters from the CPU RNG unless the module was moved to the device, so both
    are forked and seeded."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        yield


# ---------------------------------------------------------------- settings and data


def setting(name: str) -> tuple[AugConfig, int]:
    """The AugConfig and channel count of a setting (``fmnist`` or ``rgb32``)."""
    path, overrides = SETTINGS[name]
    cfg = load_config(path, overrides)
    return cfg.aug, int(cfg.model.kwargs.get("in_chans", 3))


def images_for(name: str, n: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``n`` uint8 source images for a setting and where they come from: Fashion-MNIST train images (a seeded
    random subset) for ``fmnist`` when the dataset is found, else xmoco_zoo's synthetic class patterns."""
    cfg, channels = setting(name)
    if name == "fmnist":
        try:
            ds = fashion_mnist("train")
            idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
            return ds.images[idx], "Fashion-MNIST train"
        except DatasetNotFoundError:
            pass
    ds = synthetic(size=n, image_size=cfg.image_size, channels=channels, seed=seed)
    return ds.images, f"synthetic {cfg.image_size} px, {channels} channel(s)"


# ---------------------------------------------------------------- timing


def one_op_configs(cfg: AugConfig, channels: int, **base_overrides: object) -> dict[str, AugConfig]:
    """``cfg`` with every random op after the crop off (``"crop only"``), and with each op of ``cfg`` alone
    (``"+jitter"``, ``"+grayscale"`` (3 channels), ``"+blur"``, ``"+solarize"``, ``"+flip"``); ``base_overrides``
    change all of them (e.g. the crop scale)."""
    off = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=[0.0, 0.0], solarize_p=[0.0, 0.0], flip_p=0.0)
    base = dataclasses.replace(cfg, **{**off, **base_overrides})
    ops: dict[str, dict] = {"+jitter": dict(jitter_p=cfg.jitter_p)}
    if channels == 3:
        ops["+grayscale"] = dict(grayscale_p=cfg.grayscale_p)
    if any(p > 0 for p in cfg.blur_p):
        ops["+blur"] = dict(blur_p=list(cfg.blur_p))
    if any(p > 0 for p in cfg.solarize_p):
        ops["+solarize"] = dict(solarize_p=list(cfg.solarize_p))
    ops["+flip"] = dict(flip_p=cfg.flip_p)
    return {"crop only": base, **{k: dataclasses.replace(base, **kw) for k, kw in ops.items()}}


def timing(name: str, batch: int, rounds: int, warmup: int, threads: int, per_op: bool = False) -> dict:
    """Median ms per batch of each batched pipeline on one uint8 batch, seeded per call as training does.
    ``per_op``: also each op alone after the crop (ours and kornia with slice crops), to tell which op costs what
    (an op's cost: its row minus the ``crop only`` row)."""
    cfg, channels = setting(name)
    images, source = images_for(name, batch)
    g = torch.Generator()
    calls = {"n": 0}

    def run_ours(aug: BatchTwoViews) -> Callable[[], float]:
        def run() -> float:
            calls["n"] += 1
            t0 = time.perf_counter()
            aug(images, g.manual_seed(calls["n"]))
            return time.perf_counter() - t0

        return run

    def run_kornia(aug: KorniaTwoViews) -> Callable[[], float]:
        def run() -> float:
            calls["n"] += 1
            t0 = time.perf_counter()
            aug(images, seed=calls["n"])
            return time.perf_counter() - t0

        return run

    steps = {"ours": run_ours(BatchTwoViews(cfg, channels))}
    steps |= {k: run_kornia(KorniaTwoViews(cfg, channels, mode)) for k, mode in CROP_MODES.items()}
    variants = one_op_configs(cfg, channels) if per_op else {}
    for v, c in variants.items():
        steps[f"ours {v}"] = run_ours(BatchTwoViews(c, channels))
        steps[f"kornia {v}"] = run_kornia(KorniaTwoViews(c, channels))
    torch.set_num_threads(threads)
    med = interleaved_medians(steps, rounds, warmup)
    ms = {k: 1000 * v for k, v in med.items()}
    full = {k: ms[k] for k in ("ours", *CROP_MODES)}
    batches = math.ceil(FMNIST_TRAIN / batch)
    result = {
        "setting": f"{name}: {channels} channel(s), {cfg.image_size} px, batch {batch} ({source}), {threads} threads",
        "ms_per_batch": full,
        "kornia_over_ours": {k: ms[k] / ms["ours"] for k in CROP_MODES},
        "s_per_60k_epoch": {k: v * batches / 1000 for k, v in full.items()},
    }
    if per_op:
        result["per_op_ms"] = {
            v: {
                p: ms[f"{p} {v}"] - (0.0 if v == "crop only" else ms[f"{p} crop only"])
                for p in ("ours", "kornia")
            }
            for v in variants
        }
    return result


def print_timing(r: dict) -> None:
    print(f"\n{r['setting']}")
    for k, v in r["ms_per_batch"].items():
        print(
            f"{k:<16} {v:8.2f} ms per batch (two views)   {r['s_per_60k_epoch'][k]:6.2f} s per 60k-image epoch"
        )
    for k, v in r["kornia_over_ours"].items():
        print(f"{k} / ours: {v:.2f}x")
    if "per_op_ms" in r:
        print("each op alone (ms per batch; crop only: the whole call, +op: what the op adds to it):")
        for v, d in r["per_op_ms"].items():
            print(f"  {v:<12} ours {d['ours']:8.2f}   kornia {d['kornia']:8.2f}")


# ---------------------------------------------------------------- distributions


class Record:
    """What one pipeline drew and produced over the images: crop boxes (top, left, h, w), jitter factors, blur
    sigmas and the views in [0, 1] (the normalisation undone)."""

    def __init__(self) -> None:
        self.boxes: list[torch.Tensor] = []
        self.factors: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("brightness", "contrast", "saturation", "hue")
        }
        self.sigma: list[torch.Tensor] = []
        self.views: list[torch.Tensor] = []

    def cat(self, key: str) -> torch.Tensor:
        """One recorded quantity, concatenated (``factors.NAME`` for a jitter factor)."""
        if key.startswith("factors."):
            parts = self.factors[key.split(".", 1)[1]]
        else:
            parts = getattr(self, key)
        return torch.cat([p.reshape(-1) if key != "boxes" else p for p in parts]) if parts else torch.empty(0)


def _raw(v: torch.Tensor, cfg: AugConfig, channels: int) -> torch.Tensor:
    mean = torch.tensor(match_channels(cfg.mean, channels)).view(1, channels, 1, 1)
    std = torch.tensor(match_channels(cfg.std, channels)).view(1, channels, 1, 1)
    return v * std + mean


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Per-image work on one thread, as a loader worker runs it: intra-op threads on 1-image ops only add
    synchronisation (10x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _patched(module: object, name: str, wrapper: Callable) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, wrapper(original))
    try:
        yield
    finally:
        setattr(module, name, original)


def record_ours(cfg: AugConfig, channels: int, images: torch.Tensor, batch: int, seed: int) -> Record:
    """Run :class:`BatchTwoViews` batch by batch (a generator seeded per batch), recording what its ops receive."""
    rec = Record()
    aug = BatchTwoViews(cfg, channels)

    def crop(f):
        def wrapped(x, boxes, size):
            rec.boxes.append(boxes.clone())
            return f(x, boxes, size)

        return wrapped

    def factor(key):
        def wrap(f):
            def wrapped(x, fac):
                rec.factors[key].append(fac.clone())
                return f(x, fac)

            return wrapped

        return wrap

    def blur(f):
        def wrapped(x, sigma, k):
            rec.sigma.append(sigma.clone())
            return f(x, sigma, k)

        return wrapped

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(ba, "_resized_crop", crop))
        stack.enter_context(_patched(ba, "_blur", blur))
        for key in rec.factors:
            stack.enter_context(_patched(ba, f"_{key}", factor(key)))
        g = torch.Generator()
        for i, start in enumerate(range(0, len(images), batch)):
            v1, v2_ = aug(images[start : start + batch], g.manual_seed(seed * 100_003 + i))
            rec.views += [_raw(v1, cfg, channels), _raw(v2_, cfg, channels)]
    return rec


def record_kornia(
    cfg: AugConfig, channels: int, images: torch.Tensor, batch: int, seed: int, crop_mode: str = "slice"
) -> Record:
    """Run :class:`KorniaTwoViews` batch by batch (seeded per batch), reading the drawn parameters from each op's
    ``_params`` (kornia keeps the last call's draw there)."""
    rec = Record()
    aug = KorniaTwoViews(cfg, channels, crop_mode)
    for i, start in enumerate(range(0, len(images), batch)):
        views = aug(images[start : start + batch], seed=seed * 100_003 + i)
        for seq, v in zip(aug.views, views):
            rec.views.append(_raw(v, cfg, channels))
            for op in seq:
                p = op._params
                if isinstance(op, K.RandomResizedCrop):
                    src = p["src"]  # (N, 4, 2) corners (x, y): top-left, top-right, bottom-right, bottom-left
                    left, top = src[:, 0, 0], src[:, 0, 1]
                    w, h = src[:, 1, 0] - left + 1, src[:, 3, 1] - top + 1
                    rec.boxes.append(torch.stack([top, left, h, w], 1).round().long())
                elif isinstance(op, K.ColorJitter):
                    for key in rec.factors:
                        if key in ("brightness", "contrast") or channels == 3:
                            rec.factors[key].append(p[f"{key}_factor"])
                elif isinstance(op, K.RandomGaussianBlur):
                    rec.sigma.append(p["sigma"])
    return rec


def record_torchvision(
    cfg: AugConfig, channels: int, images: torch.Tensor, seed: int, float_input: bool = False
) -> Record:
    """Run augment.py's per-image TwoViews image by image (global RNG seeded once), recording each transform's
    ``make_params``. ``float_input``: feed float images in [0, 1] instead of uint8 (torchvision's float path: no
    rounding after each op, as in the batched pipelines; the solarize threshold becomes 0.5)."""
    rec = Record()
    aug = TwoViews(cfg, channels)
    if float_input:
        images = images.float() / 255

    def watch(t: v2.Transform, on: Callable[[dict], None]) -> None:
        make = t.make_params

        def wrapped(flat_inputs):
            params = make(flat_inputs)
            on(params)
            return params

        t.make_params = wrapped

    def on_crop(p):
        rec.boxes.append(torch.tensor([[p["top"], p["left"], p["height"], p["width"]]]))

    def on_jitter(p):
        for key in rec.factors:
            if p.get(f"{key}_factor") is not None:
                rec.factors[key].append(torch.tensor([p[f"{key}_factor"]]))

    def on_blur(p):
        rec.sigma.append(torch.tensor([p["sigma"][0]]))

    for t in (aug.t1, aug.t2):
        for op in t.transforms:
            inner = op.transforms if isinstance(op, v2.RandomApply) else [op]
            for o in inner:
                if isinstance(o, v2.RandomResizedCrop):
                    watch(o, on_crop)
                elif isinstance(o, v2.ColorJitter):
                    watch(o, on_jitter)
                elif isinstance(o, v2.GaussianBlur):
                    watch(o, on_blur)
                elif isinstance(o, v2.RandomSolarize) and float_input:
                    o.threshold = 0.5
    torch.manual_seed(seed)
    v1s, v2s = [], []
    with one_thread():
        for img in images:
            a, b = aug(img)
            v1s.append(a)
            v2s.append(b)
    rec.views = [_raw(torch.stack(v1s), cfg, channels), _raw(torch.stack(v2s), cfg, channels)]
    return rec


def _mean_se(x: torch.Tensor) -> dict:
    x = x.double()
    return {"value": x.mean().item(), "se": (x.std() / math.sqrt(x.numel())).item()}


def _std_se(x: torch.Tensor) -> dict:
    # standard error of a sample standard deviation without assuming normality: sqrt(Var((x - mean)^2) / (4 s^2 n))
    x = x.double()
    s = x.std()
    return {"value": s.item(), "se": ((x - x.mean()).pow(2).std() / (2 * s * math.sqrt(x.numel()))).item()}


def param_stats(rec: Record, height: int, width: int) -> dict[str, dict]:
    """Statistics of the drawn parameters, each ``{"value", "se"}`` (standard error), and ranges."""
    top, left, h, w = rec.cat("boxes").double().unbind(1)
    frac = h * w / (height * width)
    log_ratio = (w / h).log()
    stats = {
        "crop area fraction mean": _mean_se(frac),
        "crop area fraction std": _std_se(frac),
        "crop log aspect ratio mean": _mean_se(log_ratio),
        "crop log aspect ratio std": _std_se(log_ratio),
        # where the box sits in its valid range (0: top/left edge, 1: bottom/right edge); uniform: mean 1/2
        "crop relative top mean": _mean_se((top / (height - h))[h < height]),
        "crop relative left mean": _mean_se((left / (width - w))[w < width]),
        "crop whole image rate": _mean_se(((h == height) & (w == width)).double()),
    }
    for key in rec.factors:
        f = rec.cat(f"factors.{key}")
        if f.numel():
            stats[f"{key} factor mean"] = _mean_se(f)
            stats[f"{key} factor std"] = _std_se(f)
            stats[f"{key} factor range"] = {"value": [f.min().item(), f.max().item()]}
    s = rec.cat("sigma")
    if s.numel():
        stats["blur sigma mean"] = _mean_se(s)
        stats["blur sigma range"] = {"value": [s.min().item(), s.max().item()]}
    return stats


def output_stats(rec: Record) -> dict[str, dict]:
    """Statistics of the views in [0, 1] (view 0 and view 1 pooled): per-image mean and spread, and the per-pixel
    mean and std maps (kept as tensors for :func:`pixel_map_z`)."""
    x = torch.cat(rec.views).double()
    img_mean = x.mean(dim=(1, 2, 3))
    img_std = x.std(dim=(2, 3)).mean(1)
    return {
        "pixel mean": _mean_se(img_mean),
        "image mean std (across images)": _std_se(img_mean),
        "within-image std mean": _mean_se(img_std),
        "_map_mean": x.mean(0),
        "_map_std": x.std(0),
        "_n": x.shape[0],
    }


def pixel_map_z(a: dict, b: dict) -> dict[str, float]:
    """The per-pixel mean maps of two outputs compared pixel by pixel in standard errors of the difference:
    mean and max of |z| (for two samples of the same distribution |z| is half-normal: mean 0.80, and the max over
    P pixels about the |z| exceeded with probability 1/P: 3.6 for P = 3072), and the max absolute difference in
    [0, 1] units."""
    se = (a["_map_std"].pow(2) / a["_n"] + b["_map_std"].pow(2) / b["_n"]).sqrt().clamp_min(1e-6)
    diff = a["_map_mean"] - b["_map_mean"]
    z = diff.abs() / se
    return {"mean |z|": z.mean().item(), "max |z|": z.max().item(), "max |diff|": diff.abs().max().item()}


def _per_image(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    with one_thread():
        return torch.stack([transform(img) for img in images])


def op_rates(cfg: AugConfig, channels: int, images: torch.Tensor, seed: int) -> dict[str, dict[str, dict]]:
    """How often each random op is applied, read from the outputs: one config per op with every other op off and
    the crop the whole (square) image; a view counts as changed when a pixel moves by more than 1e-4 from the
    all-off output. Blur uses sigma 1..2 here so that every blurred view is visibly changed (at sigma 0.1 a
    3-tap kernel is the identity to 1e-21). View 0 only (blur and solarize probabilities are per view)."""
    configs = one_op_configs(cfg, channels, crop_scale=[1.0, 1.0], blur_sigma=[1.0, 2.0])
    runs = {
        "torchvision": lambda c: _per_image(TwoViews(c, channels).t1, images),
        "ours": lambda c: BatchTwoViews(c, channels)(images, torch.Generator().manual_seed(seed))[0],
        "kornia": lambda c: KorniaTwoViews(c, channels)(images, seed=seed)[0],
    }
    base = configs.pop("crop only")
    out: dict[str, dict[str, dict]] = {name: {} for name in runs}
    torch.manual_seed(seed)
    for name, run in runs.items():
        plain = run(base)
        for op, c in configs.items():
            changed = (run(c) - plain).abs().amax(dim=(1, 2, 3)) > 1e-4
            out[name][f"{op[1:]} rate"] = _mean_se(changed.double())
    return out


def crop_geometry(
    cfg: AugConfig, channels: int, images: torch.Tensor, seed: int
) -> dict[str, dict[str, float]]:
    """The resampling alone: the same boxes (drawn by torchvision's sampler) cropped and resized by each pipeline,
    against torchvision's ``resized_crop`` (antialias) on float images: max and mean absolute difference over
    whole outputs and over the interior (the outermost pixels dropped)."""
    size = int(cfg.image_size)
    x = images.float() / 255
    n, _, height, width = x.shape
    torch.manual_seed(seed)
    rrc = v2.RandomResizedCrop(size, scale=tuple(cfg.crop_scale), antialias=True)
    boxes = torch.tensor([list(rrc.make_params([x[0]]).values()) for _ in range(n)])  # top, left, h, w
    with one_thread():
        ref = torch.stack(
            [
                v2.functional.resized_crop(x[i], *boxes[i].tolist(), size=[size, size], antialias=True)
                for i in range(n)
            ]
        )
    outs = {"ours": ba._resized_crop(x, boxes, size)}
    for name, mode in CROP_MODES.items():
        k = KorniaTwoViews(cfg, channels, mode).views[0][0]
        params = k.forward_parameters(x.shape)
        top, left, h, w = boxes.float().unbind(1)
        params["src"] = torch.stack(
            [
                torch.stack([left, top], 1),
                torch.stack([left + w - 1, top], 1),
                torch.stack([left + w - 1, top + h - 1], 1),
                torch.stack([left, top + h - 1], 1),
            ],
            1,
        )
        outs[name] = k(x, params=params)
    result = {}
    for name, out in outs.items():
        d = (out - ref).abs()
        inner = d[..., 1:-1, 1:-1]
        result[name] = {
            "max |diff|": d.max().item(),
            "mean |diff|": d.mean().item(),
            "interior max |diff|": inner.max().item(),
        }
    return result


def replay(cfg: AugConfig, channels: int, images: torch.Tensor) -> dict[str, bool]:
    """kornia seeded per batch: the same seed gives the same views (on a fresh module too, as after a restart),
    another seed other views, and the caller's global RNG state is left as it was."""
    a, b = KorniaTwoViews(cfg, channels), KorniaTwoViews(cfg, channels)
    before = torch.get_rng_state()
    v1 = a(images, seed=7)
    restored = torch.equal(before, torch.get_rng_state())
    torch.rand(5)  # the training's own draws in between
    v2_ = b(images, seed=7)
    v3 = a(images, seed=8)
    return {
        "same seed, same views": all(torch.equal(p, q) for p, q in zip(v1, v2_)),
        "other seed, other views": not torch.equal(v1[0], v3[0]),
        "global RNG state restored": restored,
    }


def check(name: str, n_images: int, batch: int, seed: int = 0) -> dict:
    """Every distribution comparison for a setting; z = (x - torchvision) / se of the difference."""
    cfg, channels = setting(name)
    images, source = images_for(name, n_images, seed)
    height, width = images.shape[-2:]
    records = {
        "torchvision": record_torchvision(cfg, channels, images, seed),
        # torchvision again with another seed: how far two runs of the reference are apart (the noise floor)
        "torchvision (seed+1)": record_torchvision(cfg, channels, images, seed + 1),
        # torchvision on float images: what is left of the differences once its uint8 rounding is gone
        "torchvision (float)": record_torchvision(cfg, channels, images, seed + 2, float_input=True),
        "ours": record_ours(cfg, channels, images, batch, seed),
        **{k: record_kornia(cfg, channels, images, batch, seed, mode) for k, mode in CROP_MODES.items()},
    }
    stats = {k: {**param_stats(r, height, width), **output_stats(r)} for k, r in records.items()}
    rates = op_rates(cfg, channels, images[: min(len(images), 2048)], seed)
    for k, r in rates.items():
        stats[k].update(r)
    ref = stats["torchvision"]
    z = {}
    for k, st in stats.items():
        if k == "torchvision":
            continue
        z[k] = {
            s: (v["value"] - ref[s]["value"]) / math.sqrt(v["se"] ** 2 + ref[s]["se"] ** 2 + 1e-30)
            for s, v in st.items()
            if isinstance(v, dict) and "se" in v and s in ref
        }
        z[k]["pixel map"] = pixel_map_z(st, ref)
    return {
        "setting": f"{name}: {channels} channel(s), {cfg.image_size} px, {n_images} images ({source}), seed {seed}",
        "stats": {k: {s: v for s, v in st.items() if not s.startswith("_")} for k, st in stats.items()},
        "z": z,
        "crop_geometry": crop_geometry(cfg, channels, images[:256], seed),
        "replay": replay(cfg, channels, images[:batch]),
    }


def print_check(result: dict) -> None:
    print(f"\n== {result['setting']}")
    stats, z = result["stats"], result["z"]
    cols = list(stats)
    print(f"{'statistic':<34}" + "".join(f"{c:>24}" for c in cols))
    for s in stats["torchvision"]:
        cells = []
        for c in cols:
            v = stats[c].get(s)
            if v is None:
                cells.append(f"{'-':>24}")
            elif isinstance(v["value"], list):
                cells.append(f"{'[' + ', '.join(f'{x:.3f}' for x in v['value']) + ']':>24}")
            else:
                zz = z.get(c, {}).get(s)
                cells.append(f"{v['value']:>13.4f}" + (f" (z {zz:+5.1f})" if zz is not None else " " * 11))
        print(f"{s:<34}" + "".join(cells))
    print("per-pixel mean map against torchvision (|z| per pixel; same distribution: mean 0.80, max ~3.6):")
    for c, zz in z.items():
        m = zz["pixel map"]
        print(
            f"  {c:<22} mean |z| {m['mean |z|']:.2f}, max |z| {m['max |z|']:.1f}, max |diff| {m['max |diff|']:.4f}"
        )
    print("crop + resize alone, same boxes, against torchvision's resized_crop (antialias) on float images:")
    for c, m in result["crop_geometry"].items():
        print(
            f"  {c:<22} max |diff| {m['max |diff|']:.2e}, mean {m['mean |diff|']:.2e}, "
            f"interior max {m['interior max |diff|']:.2e}"
        )
    print(
        "kornia seeded per batch (fork_rng + manual_seed): "
        + ", ".join(f"{k}: {v}" for k, v in result["replay"].items())
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--check", action="store_true", help="compare distributions instead of timing")
    p.add_argument("--per-op", action="store_true", help="timing: also each op alone after the crop")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--images", type=int, default=2048, help="--check: source images per setting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    result: dict = {"machine": f"{cpu_name()}, torch {torch.__version__}, kornia {kornia.__version__}"}
    print(result["machine"])
    for name in args.settings:
        if args.check:
            torch.set_num_threads(args.threads)
            r = check(name, args.images, args.batch, args.seed)
            print_check(r)
        else:
            r = timing(name, args.batch, args.rounds, args.warmup, args.threads, args.per_op)
            print_timing(r)
        result[name] = r
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
