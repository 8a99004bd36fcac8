"""Step time of each regularized method over MoCo v2, measured side by side in one run.

Interleaved repetitions (every method once per round, in a rotated order), medians, ratios to the
baseline. Synthetic inputs: this measures the training step (forward, backward, optimizer, momentum
update, enqueue), not data loading.

    python benchmarks/regularizer_overhead.py                       # resnet18, 32 px, batch 256, queue 4096
    python benchmarks/regularizer_overhead.py --rounds 15 --threads 2 --json out.json

XMoCo encodes both views as queries (its S12 and S21 need q1 and q2), so it is also compared with
symmetric MoCo v2, which does the same backbone work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from xmoco_zoo import create_method
from xmoco_zoo.config import TrainConfig
from xmoco_zoo.optim import create_optimizer
from xmoco_zoo.results import cpu_name

METHODS = {
    "mocov2": {},
    "mocov2_symmetric": {"symmetric": True},
    "co2": {},
    "xmoco": {},
    "amcl": {"amcl": {"heads": 3}},
}
RATIOS = [("co2", "mocov2"), ("xmoco", "mocov2_symmetric"), ("xmoco", "mocov2"), ("amcl", "mocov2")]


# Variants that change how the step runs rather than the method: the training config's levers.
TRAIN = {}  # name -> TrainConfig overrides (e.g. {"fused_optimizer": False})
NCHW = set()  # names run in the default (NCHW) memory format instead of channels_last


def build(name: str, args: argparse.Namespace):
    """The method as ``pretrain`` builds it: channels_last (unless in NCHW) and the library's optimizer."""
    kwargs = dict(METHODS[name])
    method = kwargs.pop("_method", "mocov2" if name.startswith("mocov2") else name)
    torch.manual_seed(0)
    model = create_method(method, args.backbone, queue_size=args.queue, **kwargs)
    if name not in NCHW:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    train = TrainConfig(optimizer="sgd", weight_decay=1e-4, **TRAIN.get(name, {}))
    return model, create_optimizer(model, train, lr=0.03)


def step(model, opt, x1, x2) -> float:
    t0 = time.perf_counter()
    out = model(x1, x2, 0.99)
    out["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Two fixed synthetic views, channels_last (as the methods run)."""
    g = torch.Generator().manual_seed(0)
    size = (args.batch, 3, args.image_size, args.image_size)
    return tuple(
        torch.randn(size, generator=g).contiguous(memory_format=torch.channels_last) for _ in range(2)
    )


def interleaved_medians(steps: dict, rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds of each ``steps[name]()`` (which returns its own time): ``warmup`` calls each, then
    ``rounds`` rounds calling every step once in a rotated order, so that machine noise hits all alike."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            times[n].append(steps[n]())
        print(
            f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names),
            file=sys.stderr,
        )
    return {n: statistics.median(v) for n, v in times.items()}


def setting_parser(
    doc: str | None, rounds: int = 10, warmup: int = 2, queue: bool = True
) -> argparse.ArgumentParser:
    """The arguments every step benchmark shares: the setting (backbone, image size, batch, queue), the rounds and
    warm-up steps of :func:`interleaved_medians`, the thread count and ``--json``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    if queue:
        p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", help="also write the results here")
    return p


def main(argv=None) -> dict:
    p = setting_parser(__doc__)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    x1, x2 = inputs(args)
    runs = {n: build(n, args) for n in args.methods}
    names = list(runs)
    med = interleaved_medians(
        {n: (lambda m=m, o=o: step(m, o, x1, x2)) for n, (m, o) in runs.items()}, args.rounds, args.warmup
    )
    result = {
        "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "setting": f"{args.backbone}, {args.image_size} px, batch {args.batch}, queue {args.queue}, rounds {args.rounds}",
        "median_step_s": med,
        "ratios": {f"{a}/{b}": med[a] / med[b] for a, b in RATIOS if a in med and b in med},
    }
    print(f"\n{result['setting']}; {result['machine']}")
    print(f"{'method':<18} {'median step (s)':>16}")
    for n in names:
        print(f"{n:<18} {med[n]:>16.3f}")
    print()
    for k, v in result["ratios"].items():
        print(f"{k:<28} {v:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
