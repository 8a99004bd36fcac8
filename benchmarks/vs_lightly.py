"""xmoco-zoo against lightly (the peer library), side by side in one run.

The peer is the MoCo v2 pattern from lightly's own example (``examples/pytorch/moco.py``): a backbone, a
``MoCoProjectionHead``, a deep-copied momentum backbone and head with ``deactivate_requires_grad``, ``update_momentum``
on both, and ``NTXentLoss`` with a memory bank of negatives. Both sides get the same timm backbone, batch,
resolution, queue (memory bank) size, projector widths, temperature and SGD (momentum 0.9, weight decay; lightly's
example uses plain SGD, which would flatter it). lightly is a benchmark-only dependency:
``pip install -e ".[bench]"``.

Two modes:

``--mode step`` (default): training steps on synthetic inputs (no data loading), interleaved rounds with a
rotated order, medians. ``ours`` is MoCo v2 as ``pretrain`` runs it (channels_last, split BN as the one-process
shuffle-BN emulation, the library's fused SGD). ``lightly`` is their example's pattern as written;
``lightly_channels_last`` is the same with the model and inputs in channels_last (what a lightly user could add
by hand), to separate that lever from the rest. lightly's pattern has no shuffle BN (nor its one-process emulation):
``ours_plain_bn`` (``bn_splits=1``) is ours doing the same work.

    python benchmarks/vs_lightly.py --threads 2                        # resnet18, 32 px, batch 256, queue 4096

``--mode epoch``: one Fashion-MNIST epoch end to end, real augmentations and data loading, each side in its own
process (one after the other, never at once): ours is ``recipes/pretrain.py`` with the quickstart config
(kNN monitor and export off; its loader has no workers: with batched augmentations they only add copies), lightly's
is the same backbone, head, queue, batch, optimizer and augmentation parameters built from lightly's pieces, with 2
loader workers for its per-image augmentations (``--lightly-workers``) (``MoCoV2Transform`` on PIL images, their model pattern and
loss). Wall time of each process, start-up included.

    python benchmarks/vs_lightly.py --mode epoch
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularizer_overhead import METHODS, build, cpu_name, interleaved_medians, setting_parser  # noqa: E402
from regularizer_overhead import step as our_step  # noqa: E402

from xmoco_zoo.backbone import create_backbone  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FMNIST_CONFIG = ROOT / "recipes" / "configs" / "mocov2_fmnist.yaml"


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
    """One training step of lightly's example: momentum updates, query, key, NTXent with a memory bank."""

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

    def __call__(self, x_query: torch.Tensor, x_key: torch.Tensor) -> torch.Tensor:
        from lightly.models.utils import update_momentum

        model = self.model
        update_momentum(model.backbone, model.backbone_momentum, m=self.m)
        update_momentum(model.projection_head, model.projection_head_momentum, m=self.m)
        query = model(x_query)
        key = model.forward_momentum(x_key)
        loss = self.criterion(query, key)
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


def _fmnist_pil(root: str | None):
    """Fashion-MNIST train images as (PIL 'L' image, label), as a torchvision-style dataset gives them."""
    from PIL import Image

    from xmoco_zoo.data import find_fashion_mnist, read_idx

    folder = find_fashion_mnist(root)
    images = read_idx(folder / "train-images-idx3-ubyte.gz")
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz")

    class FMNIST(torch.utils.data.Dataset):
        def __init__(self, transform):
            self.transform = transform

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(images[i], mode="L")), int(labels[i])

    return FMNIST


def lightly_epoch_worker(args: argparse.Namespace) -> None:
    """One epoch of lightly's pattern on Fashion-MNIST with the quickstart's settings (run in its own process)."""
    from lightly.transforms.moco_transform import MoCoV2Transform

    from xmoco_zoo.experiment import load_config

    t_start = time.perf_counter()
    cfg = load_config(FMNIST_CONFIG)
    a, m = cfg.aug, cfg.method
    torch.set_num_threads(args.threads)
    transform = MoCoV2Transform(
        input_size=a.image_size,
        cj_prob=a.jitter_p,
        cj_bright=a.jitter[0],
        cj_contrast=a.jitter[1],
        cj_sat=a.jitter[2],
        cj_hue=a.jitter[3],
        min_scale=a.crop_scale[0],
        random_gray_scale=0.0,
        gaussian_blur=a.blur_p[0],
        hf_prob=a.flip_p,
        normalize={"mean": a.mean, "std": a.std},
    )
    dataset = _fmnist_pil(cfg.data.root)(transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.lightly_workers,  # per-image PIL augmentations need workers (their example: 8)
    )
    torch.manual_seed(0)
    backbone = create_backbone(cfg.model.backbone, **cfg.model.kwargs)
    hidden = m.hidden_dim or backbone.num_features
    lr = cfg.train.base_lr * cfg.train.batch_size / 256
    step = LightlyStep(
        backbone,
        hidden,
        m.dim,
        m.queue_size,
        m.temperature,
        lr,
        cfg.train.weight_decay,
        m.momentum,
        channels_last=False,
    )
    t_loop = time.perf_counter()
    n = 0
    for (x_query, x_key), _ in loader:
        loss = step(x_query, x_key)
        n += 1
        if n % 50 == 0:
            print(f"lightly step {n}/{len(loader)} loss {loss.item():.3f}", file=sys.stderr, flush=True)
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


def main(argv=None) -> dict | None:
    p = setting_parser(__doc__)
    p.add_argument("--mode", choices=["step", "epoch"], default="step")
    p.add_argument("--lightly-workers", type=int, default=2, help="epoch mode: lightly's loader workers")
    p.add_argument("--sides", nargs="+", default=["ours", "lightly"], choices=["ours", "lightly"])
    p.add_argument("--repeats", type=int, default=1, help="epoch mode: runs per side (alternating order)")
    p.add_argument("--work-dir", default="runs/bench_vs_lightly", help="epoch mode: our run's output folder")
    p.add_argument(
        "--ours-overrides", nargs="*", default=[], help="epoch mode: extra config overrides for ours"
    )
    p.add_argument("--lightly-epoch-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.lightly_epoch_worker:
        lightly_epoch_worker(args)
        return None
    result = step_mode(args) if args.mode == "step" else epoch_mode(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
