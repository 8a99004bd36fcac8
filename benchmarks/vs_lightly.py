"""xmoco-zoo against lightly (the peer library), side by side in one run, and lightly's accuracy-vs-minutes curve.

The peer is the MoCo v2 pattern from lightly's own example (``examples/pytorch/moco.py``): a backbone, a
``MoCoProjectionHead``, a deep-copied momentum backbone and head with ``deactivate_requires_grad``, ``update_momentum``
on both, and ``NTXentLoss`` with a memory bank of negatives. Both sides get the same timm backbone, batch,
resolution, queue (memory bank) size, projector widths, temperature and SGD (momentum 0.9, weight decay; lightly's
example uses plain SGD, which would flatter it). lightly is a benchmark-only dependency:
``pip install -e ".[bench]"``.

Three modes:

``--mode step`` (default): training steps on synthetic inputs (no data loading), interleaved rounds with a
rotated order, medians. ``ours`` is MoCo v2 as ``pretrain`` runs it (channels_last, split BN as the one-process
shuffle-BN emulation, the library's fused SGD). ``lightly`` is their example's pattern as written;
``lightly_channels_last`` is the same with the model and inputs in channels_last (what a lightly user could add
by hand), to separate that lever from the rest. lightly's pattern has no shuffle BN (nor its one-process emulation):
``ours_plain_bn`` (``bn_splits=1``) is ours doing the same work. Defaults: ``--backbone resnet18 --image-size 32
--batch 256 --queue 4096``.

    python benchmarks/vs_lightly.py --threads 2                        # resnet18, 32 px, batch 256, queue 4096

``--mode epoch``: one Fashion-MNIST epoch end to end, real augmentations and data loading, each side in its own
process (one after the other, never at once): ours is ``recipes/pretrain.py`` with the quickstart config
(kNN monitor and export off; its loader has no workers: with batched augmentations they only add copies), lightly's
is the same backbone, head, queue, batch, optimizer and augmentation parameters built from lightly's pieces (the
``quickstart`` recipe below, at the base learning rate throughout), with 2 loader workers for its per-image
augmentations (``--lightly-workers``) (``MoCoV2Transform`` on PIL images, their model pattern and loss). Wall time
of each process, start-up included.

    python benchmarks/vs_lightly.py --mode epoch

``--mode curve``: lightly's MoCo v2 trained for ``--epochs N`` on Fashion-MNIST with a cosine learning-rate
schedule over the N epochs: the reference curve that ``xmoco-zoo plot zoo --reference`` draws beside the zoo's
models (docs/models.md). The same code as epoch mode's lightly side (``lightly_setting``, ``build_lightly_step``,
``train_lightly_epoch``: their model pattern and loss, their transforms on PIL images in ``--lightly-workers``
loader processes). After each epoch, outside the timed minutes:

- the kNN top-1 (``xmoco_zoo.knn``: weighted, k=200, t=0.1) of the online backbone's pooled features,
  L2-normalised, with the 60k train images as the bank and the 10k test images as the queries, resized to the
  training size and normalised as the training normalises them;
- a checkpoint ``<out stem>.checkpoint.pt`` beside ``--out`` (model, memory bank, optimizer, schedule, the torch,
  Python and NumPy RNG states, the points so far; written to a temporary file, then renamed), read back with
  ``torch.load(..., weights_only=True)``. A run stopped (``--stop-after-epoch``) or killed resumes at the next
  epoch when the same command runs again (automatically when the checkpoint exists; ``--resume`` insists on
  one), with the same weights as an uninterrupted run on the same machine and thread count;
- the curve ``--out`` (rewritten atomically): ``{"label", "machine", "command", "setting", "points": [{"epochs",
  "minutes", "knn", "linear": null, "loss"}, ...]}``, ``minutes`` being the cumulative wall clock of the training
  epochs only (data loading and steps; not start-up, kNN or checkpoints), ``command`` the command line without
  ``--resume`` and ``--stop-after-epoch``.

    python benchmarks/vs_lightly.py --mode curve --recipe lightly_cifar10 --backbone resnet18 --image-size 32 \\
        --epochs 10 --threads 2 --out runs/lightly_curve/lightly_mocov2_resnet18_32px.json

``--recipe`` picks the settings; ``--backbone``, ``--image-size``, ``--batch`` and ``--queue`` override them (a
timm ``--backbone`` other than the recipe's is built with ``in_chans=1`` and timm's defaults otherwise;
``lightly:NAME`` is lightly's ``ResNetGenerator(NAME, num_splits=8)`` as their CIFAR-10 benchmark builds it: its
children but the classifier, then ``AdaptiveAvgPool2d(1)``, with a 1-channel first convolution). Both keep
Fashion-MNIST's one channel and its mean and std (0.2860, 0.3530) for the normalisation:

- ``quickstart`` (default; epoch mode's): ``recipes/configs/mocov2_fmnist.yaml`` as our quickstart trains it. timm
  resnet10t at half width (channels 32-64-128-256) on 1 channel, 28 px, batch 256, memory bank 4096, projector
  ``MoCoProjectionHead(256, 2048, 128)``, T 0.2, key-encoder momentum 0.99 (constant), one loss per step
  (query view 1, key view 2: their example's), keys not shuffled, SGD (momentum 0.9, weight decay 5e-4, on every
  parameter as their example), lr 0.06 x batch / 256 on a cosine per step to 0 without warm-up (``pretrain``'s
  schedule for that config), ``MoCoV2Transform`` with the config's augmentation: crop scale [0.3, 1], flip 0.5,
  brightness and contrast jitter 0.4 with probability 0.8, no grayscale, no blur.
- ``lightly_cifar10``: the ``MocoModel`` of lightly's CIFAR-10 benchmark
  (``docs/source/getting_started/benchmarks/cifar10_benchmark.py`` in github.com/lightly-ai/lightly; results in
  ``docs/source/getting_started/benchmarks.rst``). Batch 128, memory bank 4096 (they raise it to 8192 for batch
  512), projector ``MoCoProjectionHead(width, width, 128)`` (512-512-128 for a resnet-18), T 0.1, momentum 0.99
  (constant), symmetric loss ``0.5 (L(x0, x1) + L(x1, x0))`` (so the bank takes both calls' keys, 2 x batch a
  step) with each key batch shuffled before the momentum encoder and unshuffled after (``batch_shuffle``), SGD
  (momentum 0.9, weight decay 5e-4), lr 0.06 x batch / 128 on ``CosineAnnealingLR`` over the epochs stepped once
  an epoch (Lightning's default interval), ``SimCLRTransform(input_size, cj_strength=0.5, gaussian_blur=0.0)``:
  crop scale [0.08, 1], flip 0.5, jitter brightness/contrast/saturation 0.4 and hue 0.1 with probability 0.8,
  grayscale 0.2 (saturation, hue and grayscale do nothing to one channel), no blur. Default backbone: timm
  resnet18 on 1 channel at 32 px (the issue's setting). What differs from their benchmark: Fashion-MNIST instead
  of CIFAR-10, its mean and std instead of ImageNet's, a plain loop instead of Lightning, the kNN of
  ``xmoco_zoo.knn`` instead of their ``BenchmarkModule``'s (the same k=200, t=0.1, train set as the bank, test set
  as the queries, every epoch; they report the best epoch, the curve has them all), and the backbone: theirs is
  the CIFAR variant of resnet-18 (3x3 stem, no max-pool, split BN in 8 groups), ``--backbone lightly:resnet-18``:
  the same 11.2M parameters but 16 times the forward FLOPs of timm's resnet18 at 32 px (1.11 G against 0.071 G an
  image, ``torch.utils.flop_counter``).

``--max-images N`` trains on the first N train images and scores the kNN with them as the bank and the first N
test images as the queries: smoke tests only.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularizer_overhead import METHODS, build, cpu_name, interleaved_medians, setting_parser  # noqa: E402
from regularizer_overhead import step as our_step  # noqa: E402

from xmoco_zoo.backbone import create_backbone  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FMNIST_CONFIG = ROOT / "recipes" / "configs" / "mocov2_fmnist.yaml"
RECIPES = ("quickstart", "lightly_cifar10")
STEP_DEFAULTS = {"backbone": "resnet18", "image_size": 32, "batch": 256, "queue": 4096}


class LightlyMoCo(nn.Module):
    """lightly's examples/pytorch/moco.py model, with the backbone and head widths as arguments."""

    def __init__(self, backbone: nn.Module, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(in_dim, hidden_dim, out_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


class LightlyStep:
    """One training step of lightly's pattern: momentum updates, query, key, NTXent with a memory bank.

    As their example by default; ``symmetric`` and ``shuffle_keys`` are their CIFAR-10 benchmark's
    ``0.5 (L(x0, x1) + L(x1, x0))`` and ``batch_shuffle`` / ``batch_unshuffle`` around the momentum encoder.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_dim: int,
        dim: int,
        queue: int,
        temperature: float,
        lr: float,
        weight_decay: float,
        momentum: float,
        channels_last: bool,
        symmetric: bool = False,
        shuffle_keys: bool = False,
    ) -> None:
        from lightly.loss import NTXentLoss

        self.model = LightlyMoCo(backbone, backbone.num_features, hidden_dim, dim)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue, dim))
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay
        )
        self.m = momentum
        self.symmetric = symmetric
        self.shuffle_keys = shuffle_keys

    def _query_key(self, x_query: torch.Tensor, x_key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from lightly.models.utils import batch_shuffle, batch_unshuffle

        if not self.shuffle_keys:
            return self.model(x_query), self.model.forward_momentum(x_key)
        x_key, shuffle = batch_shuffle(x_key)
        query = self.model(x_query)
        return query, batch_unshuffle(self.model.forward_momentum(x_key), shuffle)

    def __call__(self, x_query: torch.Tensor, x_key: torch.Tensor) -> torch.Tensor:
        from lightly.models.utils import update_momentum

        model = self.model
        update_momentum(model.backbone, model.backbone_momentum, m=self.m)
        update_momentum(model.projection_head, model.projection_head_momentum, m=self.m)
        loss = self.criterion(*self._query_key(x_query, x_key))
        if self.symmetric:
            loss = 0.5 * (loss + self.criterion(*self._query_key(x_key, x_query)))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


def step_mode(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    size = (args.batch, 3, args.image_size, args.image_size)
    x1, x2 = (torch.randn(size, generator=g) for _ in range(2))
    c1, c2 = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x2))
    ours_model, ours_opt = build("mocov2", args)
    METHODS["mocov2_plain_bn"] = {"bn_splits": 1}
    plain_model, plain_opt = build("mocov2_plain_bn", args)
    hidden = ours_model.encoder.online.head[0].out_features  # the same projector widths on both sides
    sides = {}
    for name, cl in (("lightly", False), ("lightly_channels_last", True)):
        torch.manual_seed(0)
        sides[name] = LightlyStep(
            create_backbone(args.backbone),
            hidden,
            ours_model.cfg.dim,
            args.queue,
            ours_model.cfg.temperature,
            0.03,
            1e-4,
            0.99,
            cl,
        )

    def timed(fn, a, b):
        def run() -> float:
            t0 = time.perf_counter()
            fn(a, b)
            return time.perf_counter() - t0

        return run

    steps = {
        "ours": lambda: our_step(ours_model, ours_opt, c1, c2),
        "ours_plain_bn": lambda: our_step(plain_model, plain_opt, c1, c2),
        "lightly": timed(sides["lightly"], x1, x2),
        "lightly_channels_last": timed(sides["lightly_channels_last"], c1, c2),
    }
    med = interleaved_medians(steps, args.rounds, args.warmup)
    result = {
        "mode": "step",
        "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "setting": f"{args.backbone}, {args.image_size} px, batch {args.batch}, queue {args.queue}, "
        f"projector {ours_model.num_features}-{hidden}-{ours_model.cfg.dim}, rounds {args.rounds}",
        "median_step_s": med,
        "ours_steps_per_s_over": {n: med[n] / med["ours"] for n in steps if n.startswith("lightly")},
        "ours_plain_bn_steps_per_s_over": {
            n: med[n] / med["ours_plain_bn"] for n in steps if n.startswith("lightly")
        },
    }
    print(f"\n{result['setting']}; {result['machine']}")
    for n in steps:
        extra = ""
        if n.startswith("lightly"):
            extra = f"   ours: {med[n] / med['ours']:.3f}x its steps/s, ours_plain_bn: {med[n] / med['ours_plain_bn']:.3f}x"
        print(f"{n:<24} median step {med[n]:.3f} s{extra}")
    return result


@dataclass
class LightlySetting:
    """What a lightly run trains: a ``--recipe`` with its overrides (the module's docstring describes each)."""

    recipe: str
    backbone: str  # a timm name, or lightly:NAME for lightly's ResNetGenerator(NAME)
    backbone_kwargs: dict
    image_size: int
    batch: int
    queue: int
    dim: int
    hidden_dim: int | None  # None: the backbone's width
    temperature: float
    momentum: float
    lr: float
    weight_decay: float
    symmetric: bool
    shuffle_keys: bool
    # step: a cosine per step (pretrain's); epoch: a cosine per epoch (CosineAnnealingLR under Lightning)
    lr_schedule: str
    transform: str  # mocov2 | simclr: lightly's MoCoV2Transform | SimCLRTransform
    transform_kwargs: dict
    mean: list[float]
    std: list[float]
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    lightly_num_splits: int = 8  # lightly:NAME backbones: split BN groups, as their benchmark


def lightly_setting(
    recipe: str = "quickstart",
    backbone: str | None = None,
    image_size: int | None = None,
    batch: int | None = None,
    queue: int | None = None,
) -> LightlySetting:
    """The settings of ``recipe`` (``quickstart`` | ``lightly_cifar10``) with the given overrides."""
    from xmoco_zoo.experiment import load_config

    cfg = load_config(FMNIST_CONFIG)
    a, m, t = cfg.aug, cfg.method, cfg.train
    if recipe == "quickstart":
        s = dict(
            backbone=cfg.model.backbone,
            backbone_kwargs=dict(cfg.model.kwargs),
            image_size=a.image_size,
            batch=t.batch_size,
            queue=m.queue_size,
            dim=m.dim,
            hidden_dim=m.hidden_dim,
            temperature=m.temperature,
            momentum=m.momentum,
            weight_decay=t.weight_decay,
            symmetric=m.symmetric,
            shuffle_keys=False,
            lr_schedule="step",
            transform="mocov2",
            transform_kwargs=dict(
                cj_prob=a.jitter_p,
                cj_bright=a.jitter[0],
                cj_contrast=a.jitter[1],
                cj_sat=a.jitter[2],
                cj_hue=a.jitter[3],
                min_scale=a.crop_scale[0],
                random_gray_scale=0.0,
                gaussian_blur=a.blur_p[0],
                hf_prob=a.flip_p,
            ),
            warmup_epochs=t.warmup_epochs,
            min_lr_ratio=t.min_lr_ratio,
        )
        base_lr, lr_batch = t.base_lr, 256
    elif recipe == "lightly_cifar10":
        s = dict(
            backbone="resnet18",
            backbone_kwargs={"in_chans": 1},
            image_size=32,
            batch=128,
            queue=4096,
            dim=128,
            hidden_dim=None,
            temperature=0.1,
            momentum=0.99,
            weight_decay=5e-4,
            symmetric=True,
            shuffle_keys=True,
            lr_schedule="epoch",
            transform="simclr",
            transform_kwargs=dict(cj_strength=0.5, gaussian_blur=0.0),
        )
        base_lr, lr_batch = 0.06, 128
    else:
        raise ValueError(f"unknown recipe {recipe!r}: use one of {', '.join(RECIPES)}")
    if backbone is not None and backbone != s["backbone"]:
        s["backbone"] = backbone
        s["backbone_kwargs"] = {} if backbone.startswith("lightly:") else {"in_chans": 1}
    for key, value in (("image_size", image_size), ("batch", batch), ("queue", queue)):
        if value is not None:
            s[key] = value
    return LightlySetting(
        recipe=recipe, lr=base_lr * s["batch"] / lr_batch, mean=list(a.mean), std=list(a.std), **s
    )


class LightlyResNet(nn.Module):
    """lightly's ``ResNetGenerator`` network as their CIFAR-10 benchmark's ``MocoModel`` uses it: its children but
    the classifier, then ``AdaptiveAvgPool2d(1)`` (their stem's ReLU is a function call in ``ResNet.forward``, so it
    is not among the children and not applied here either), with a first convolution taking ``in_chans``
    channels. ``forward`` returns pooled (N, C) features."""

    def __init__(self, name: str, in_chans: int = 1, num_splits: int = 8) -> None:
        from lightly.models import ResNetGenerator

        super().__init__()
        resnet = ResNetGenerator(name, num_splits=num_splits)
        c = resnet.conv1
        resnet.conv1 = nn.Conv2d(in_chans, c.out_channels, c.kernel_size, c.stride, c.padding, bias=False)
        self.num_features = resnet.linear.in_features
        self.net = nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(start_dim=1)


def build_lightly_backbone(setting: LightlySetting) -> nn.Module:
    if setting.backbone.startswith("lightly:"):
        return LightlyResNet(setting.backbone.split(":", 1)[1], 1, setting.lightly_num_splits)
    return create_backbone(setting.backbone, **setting.backbone_kwargs)


def build_lightly_transform(setting: LightlySetting):
    """lightly's two-view transform of the setting, on PIL images, normalising with the setting's mean and std."""
    from lightly.transforms import MoCoV2Transform, SimCLRTransform

    cls = {"mocov2": MoCoV2Transform, "simclr": SimCLRTransform}[setting.transform]
    return cls(
        input_size=setting.image_size,
        normalize={"mean": setting.mean, "std": setting.std},
        **setting.transform_kwargs,
    )


def build_lightly_step(setting: LightlySetting) -> LightlyStep:
    backbone = build_lightly_backbone(setting)
    return LightlyStep(
        backbone,
        setting.hidden_dim or backbone.num_features,
        setting.dim,
        setting.queue,
        setting.temperature,
        setting.lr,
        setting.weight_decay,
        setting.momentum,
        channels_last=False,
        symmetric=setting.symmetric,
        shuffle_keys=setting.shuffle_keys,
    )


def lr_factor(setting: LightlySetting, steps_per_epoch: int, epochs: int):
    """The learning rate at optimizer step ``i`` over the base rate (for ``LambdaLR``, stepped after each step)."""
    from xmoco_zoo.schedules import cosine_lr

    total = steps_per_epoch * epochs
    if setting.lr_schedule == "step":
        warmup = int(round(setting.warmup_epochs * steps_per_epoch))
        return lambda i: cosine_lr(i, total, 1.0, warmup, setting.min_lr_ratio)
    if setting.lr_schedule == "epoch":  # CosineAnnealingLR(T_max=epochs), eta_min 0, stepped once an epoch
        return lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i // steps_per_epoch, epochs) / epochs))
    raise ValueError(f"unknown lr schedule {setting.lr_schedule!r}")


class PILImages(torch.utils.data.Dataset):
    """uint8 images (N, 1, H, W) as (transform(PIL 'L' image), label), as a torchvision-style dataset gives them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i, 0].numpy())), int(self.labels[i])


def fmnist_split(split: str, root: str | None, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's ``split`` as uint8 images (N, 1, 28, 28) and labels, the first ``limit`` only if given."""
    from xmoco_zoo.data import fashion_mnist

    data = fashion_mnist(split, root)
    return data.images[:limit], data.labels[:limit]


def lightly_loader(
    dataset: torch.utils.data.Dataset, batch: int, workers: int, generator: torch.Generator | None = None
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,  # per-image PIL augmentations need workers (their example: 8)
        generator=generator,
    )


def train_lightly_epoch(
    step: LightlyStep, loader, after_step=None, name: str = "lightly"
) -> tuple[int, float]:
    """One pass over ``loader`` with lightly's step; ``after_step()`` after each (the lr schedule). Returns the
    number of steps and the mean loss."""
    n, total = 0, 0.0
    for (x_query, x_key), _ in loader:
        loss = step(x_query, x_key)
        if after_step is not None:
            after_step()
        n += 1
        total += loss.item()
        if n % 50 == 0:
            print(f"{name} step {n}/{len(loader)} loss {loss.item():.3f}", file=sys.stderr, flush=True)
    return n, total / max(n, 1)


def lightly_epoch_worker(args: argparse.Namespace) -> None:
    """One epoch of lightly's pattern on Fashion-MNIST with the quickstart's settings (run in its own process)."""
    t_start = time.perf_counter()
    setting = lightly_setting("quickstart")
    torch.set_num_threads(args.threads)
    from xmoco_zoo.experiment import load_config

    images, labels = fmnist_split("train", load_config(FMNIST_CONFIG).data.root)
    loader = lightly_loader(
        PILImages(images, labels, build_lightly_transform(setting)), setting.batch, args.lightly_workers
    )
    torch.manual_seed(0)
    step = build_lightly_step(setting)
    t_loop = time.perf_counter()
    n, _ = train_lightly_epoch(step, loader)
    t_end = time.perf_counter()
    print(json.dumps({"steps": n, "loop_s": t_end - t_loop, "setup_s": t_loop - t_start}))


def epoch_mode(args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out_dir = Path(args.work_dir)
    runs = {}
    for r in range(args.repeats):
        order = [s for s in (["ours", "lightly"] if r % 2 == 0 else ["lightly", "ours"]) if s in args.sides]
        for side in order:
            if side == "ours":
                cmd = [
                    sys.executable,
                    str(ROOT / "recipes" / "pretrain.py"),
                    "--config",
                    str(FMNIST_CONFIG),
                    f"train.output_dir={out_dir / f'ours_{r}'}",
                    "train.epochs=1",
                    "knn.enabled=false",
                    "train.export=false",
                    "train.trackers=[]",
                    *args.ours_overrides,
                ]
            else:
                cmd = [
                    sys.executable,
                    __file__,
                    "--lightly-epoch-worker",
                    "--threads",
                    str(args.threads),
                    "--lightly-workers",
                    str(args.lightly_workers),
                ]
            print(f"[{side}] {' '.join(cmd)}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, cwd=ROOT)
            runs.setdefault(side, []).append(time.perf_counter() - t0)
    import statistics

    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "mode": "epoch",
        "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "setting": f"Fashion-MNIST, one epoch, {FMNIST_CONFIG.name} (batch, backbone, queue, aug), "
        f"{args.repeats} run(s) each",
        "wall_s": runs,
        "ours_overrides": args.ours_overrides,
        "ours_speedup": med["lightly"] / med["ours"] if len(med) == 2 else None,
    }
    print(f"\n{result['setting']}; {result['machine']}")
    for k, v in med.items():
        print(f"{k:<10} epoch wall time {v:.1f} s")
    if result["ours_speedup"] is not None:
        print(f"ours is {result['ours_speedup']:.3f}x faster end to end")
    return result


class EvalBatches:
    """uint8 images (N, 1, H, W) and labels as evaluation batches: resized to ``size`` (bilinear) and normalised
    with ``mean`` and ``std``, as lightly's training transforms leave the views."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, size: int, mean, std, batch: int = 512
    ) -> None:
        self.images, self.labels, self.size, self.batch = images, labels, size, batch
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return -(-self.images.shape[0] // self.batch)

    def __iter__(self):
        from torchvision.transforms.v2 import functional as TF

        for i in range(0, self.images.shape[0], self.batch):
            x = self.images[i : i + self.batch].float().div_(255)
            if tuple(x.shape[-2:]) != (self.size, self.size):
                x = TF.resize(x, [self.size, self.size], antialias=True)
            yield (x - self.mean) / self.std, self.labels[i : i + self.batch]


def knn_top1(backbone: nn.Module, bank: EvalBatches, queries: EvalBatches) -> float:
    """The library's weighted kNN (k=200, t=0.1) on the backbone's L2-normalised pooled features."""
    from xmoco_zoo.knn import extract_features, knn_accuracy

    train_f, train_y = extract_features(backbone, bank, desc="kNN bank")
    test_f, test_y = extract_features(backbone, queries, desc="kNN queries")
    return knn_accuracy(train_f, train_y, test_f, test_y, k=200, temperature=0.1)


def rng_state() -> dict:
    """torch's, Python's and NumPy's global RNG states as tensors and plain containers (``weights_only`` loads them)."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )


def memory_bank(criterion: nn.Module) -> dict:
    """The negatives of lightly's ``NTXentLoss`` and the write position: buffers left out of its ``state_dict``
    (``persistent=False`` in lightly 1.6.0's ``MemoryBankModule``), so a checkpoint must take them itself."""
    bank = criterion.memory_bank
    return {"bank": bank.bank.clone(), "bank_ptr": bank.bank_ptr.clone()}


def set_memory_bank(criterion: nn.Module, state: dict) -> None:
    with torch.no_grad():
        criterion.memory_bank.bank.copy_(state["bank"])
        criterion.memory_bank.bank_ptr.copy_(state["bank_ptr"])


def write_atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` over ``path``: a reader (or a killed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def curve_command(argv: list[str]) -> str:
    """The command line that produces the curve: ``argv`` without ``--resume`` and ``--stop-after-epoch N``."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--stop-after-epoch":
            skip = True
        elif a != "--resume" and not a.startswith("--stop-after-epoch="):
            kept.append(a)
    return shlex.join(["python", "benchmarks/vs_lightly.py", *kept])


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.stem + ".checkpoint.pt")


def curve_mode(args: argparse.Namespace, argv: list[str]) -> dict:
    import lightly

    from xmoco_zoo.experiment import load_config

    setting = lightly_setting(args.recipe, args.backbone, args.image_size, args.batch, args.queue)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    ckpt_path = checkpoint_path(out)
    root = load_config(FMNIST_CONFIG).data.root
    train_images, train_labels = fmnist_split("train", root, args.max_images)
    test_images, test_labels = fmnist_split("test", root, args.max_images)
    dataset = PILImages(train_images, train_labels, build_lightly_transform(setting))
    bank = EvalBatches(train_images, train_labels, setting.image_size, setting.mean, setting.std)
    queries = EvalBatches(test_images, test_labels, setting.image_size, setting.mean, setting.std)
    steps_per_epoch = len(dataset) // setting.batch
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(dataset)} training images make no batch of {setting.batch}")

    torch.manual_seed(args.seed)
    step = build_lightly_step(setting)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        step.optimizer, lr_factor(setting, steps_per_epoch, args.epochs)
    )
    machine = f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}"
    run = {  # what a checkpoint must match to be resumed
        "setting": asdict(setting),
        "epochs": args.epochs,
        "max_images": args.max_images,
        "seed": args.seed,
        "lightly": lightly.__version__,
    }
    state = {"epoch": 0, "train_seconds": 0.0, "points": [], "machine": machine}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        if ckpt["run"] != run:
            diff = {k: (ckpt["run"].get(k), v) for k, v in run.items() if ckpt["run"].get(k) != v}
            raise SystemExit(
                f"{ckpt_path} is a checkpoint of another run (checkpoint, now: {diff}): "
                "give another --out or delete it"
            )
        step.model.load_state_dict(ckpt["model"])
        set_memory_bank(step.criterion, ckpt["memory_bank"])
        step.optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        state = {k: ckpt[k] for k in state}
        if state["machine"] != machine:
            print(f"warning: the checkpoint was trained on {state['machine']}", file=sys.stderr)
            state["machine"] = f"{state['machine']}; resumed on {machine}"
        print(f"resuming from {ckpt_path} after epoch {state['epoch']}/{args.epochs}", file=sys.stderr)
    elif args.resume:
        raise SystemExit(f"--resume: no checkpoint {ckpt_path}")

    backbone_name = setting.backbone + (" (half width)" if setting.backbone_kwargs.get("channels") else "")
    curve = {
        "label": args.label
        or f"lightly {lightly.__version__} MoCo v2 ({setting.recipe}), {backbone_name} {setting.image_size} px",
        "machine": state["machine"],
        "command": curve_command(argv),
        "setting": asdict(setting)
        | {"epochs": args.epochs, "max_images": args.max_images, "seed": args.seed},
        "points": state["points"],
    }

    def save_curve() -> None:
        write_atomic(out, lambda p: p.write_text(json.dumps(curve, indent=2) + "\n"))

    print(
        f"lightly {lightly.__version__}, {args.recipe}: {setting}; {len(dataset)} images, {steps_per_epoch} steps "
        f"an epoch; {machine}",
        file=sys.stderr,
        flush=True,
    )
    last = args.epochs if args.stop_after_epoch is None else min(args.epochs, args.stop_after_epoch)
    for epoch in range(state["epoch"] + 1, last + 1):
        # The epoch's shuffle and loader-worker seeds come from (seed, epoch); main-process draws (the key shuffle,
        # augmentations without workers) from the global RNG, whose state the checkpoint keeps.
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
        loader = lightly_loader(dataset, setting.batch, args.lightly_workers, generator)
        t0 = time.perf_counter()
        n, loss = train_lightly_epoch(
            step, loader, scheduler.step, name=f"lightly epoch {epoch}/{args.epochs}"
        )
        seconds = time.perf_counter() - t0
        state["train_seconds"] += seconds
        t1 = time.perf_counter()
        knn = knn_top1(step.model.backbone, bank, queries)
        knn_seconds = time.perf_counter() - t1
        state["epoch"] = epoch
        state["points"].append(
            {
                "epochs": epoch,
                "minutes": round(state["train_seconds"] / 60, 4),
                "knn": round(knn, 2),
                "linear": None,
                "loss": round(loss, 4),
            }
        )
        ckpt = {
            "run": run,
            **state,
            "model": step.model.state_dict(),
            "memory_bank": memory_bank(step.criterion),
            "optimizer": step.optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
        }
        write_atomic(ckpt_path, lambda p, c=ckpt: torch.save(c, p))
        save_curve()
        print(
            f"lightly epoch {epoch}/{args.epochs}: {n} steps, loss {loss:.4f}, {seconds:.1f} s "
            f"({state['train_seconds'] / 60:.2f} training min in all), kNN top-1 {knn:.2f} % ({knn_seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    if state["epoch"] < args.epochs:
        print(
            f"stopped after epoch {state['epoch']}/{args.epochs}: the command without --stop-after-epoch resumes "
            f"from {ckpt_path}",
            file=sys.stderr,
        )
        return curve
    save_curve()
    print(f"\n{curve['label']}; {curve['machine']}\nwritten: {out}")
    for p in curve["points"]:
        print(f"epoch {p['epochs']:>3}  {p['minutes']:8.2f} min  kNN {p['knn']:.2f} %")
    return curve


def main(argv=None) -> dict | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = setting_parser(__doc__)
    # None: the mode's default (step mode: STEP_DEFAULTS; curve mode: the recipe's)
    p.set_defaults(**dict.fromkeys(STEP_DEFAULTS))
    p.add_argument("--mode", choices=["step", "epoch", "curve"], default="step")
    p.add_argument(
        "--lightly-workers", type=int, default=2, help="epoch and curve modes: lightly's loader workers"
    )
    p.add_argument("--sides", nargs="+", default=["ours", "lightly"], choices=["ours", "lightly"])
    p.add_argument("--repeats", type=int, default=1, help="epoch mode: runs per side (alternating order)")
    p.add_argument("--work-dir", default="runs/bench_vs_lightly", help="epoch mode: our run's output folder")
    p.add_argument(
        "--ours-overrides", nargs="*", default=[], help="epoch mode: extra config overrides for ours"
    )
    p.add_argument("--recipe", choices=RECIPES, default="quickstart", help="curve mode: lightly's settings")
    p.add_argument("--epochs", type=int, default=10, help="curve mode: epochs (the lr schedule spans them)")
    p.add_argument(
        "--out",
        default="runs/lightly_curve/curve.json",
        help="curve mode: the reference curve (JSON); its checkpoint goes beside it",
    )
    p.add_argument("--resume", action="store_true", help="curve mode: fail unless there is a checkpoint")
    p.add_argument(
        "--stop-after-epoch",
        type=int,
        help="curve mode: stop after this epoch (the schedule still spans --epochs)",
    )
    p.add_argument("--max-images", type=int, help="curve mode: first N train/test images only (smoke tests)")
    p.add_argument("--seed", type=int, default=0, help="curve mode: model initialisation and data order")
    p.add_argument(
        "--label", help="curve mode: the curve's label (default: lightly version, recipe, backbone)"
    )
    p.add_argument("--lightly-epoch-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.lightly_epoch_worker:
        lightly_epoch_worker(args)
        return None
    if args.mode == "step":
        for key, value in STEP_DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        result = step_mode(args)
    elif args.mode == "epoch":
        given = [f"--{k.replace('_', '-')}" for k in STEP_DEFAULTS if getattr(args, k) is not None]
        if given:
            p.error(
                f"epoch mode runs the quickstart config: {', '.join(given)} only apply to step and curve modes"
            )
        result = epoch_mode(args)
    else:
        result = curve_mode(args, argv)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
