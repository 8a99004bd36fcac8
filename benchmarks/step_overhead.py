"""Our MoCo v2 training step against the backbone limit, measured side by side in one run.

The limit is the work no MoCo implementation can avoid on the same backbone, batch and resolution: the plain
timm backbone's (query) forward and backward, plus its (key) forward under no_grad. Our step adds the projector
heads, the loss, the optimizer step, the momentum update, the enqueue and, in one process, split BatchNorm (the
emulation of shuffle BN); ``mocov2_plain_bn`` (``bn_splits=1``: no shuffle-BN emulation) shows what split BN costs. Interleaved rounds (rotated order), medians,
the ratio printed; synthetic inputs (the training step only, not data loading).

    python benchmarks/step_overhead.py --threads 2                  # resnet18, 32 px, batch 256, queue 4096
    python benchmarks/step_overhead.py --methods mocov2 co2 amcl --rounds 15 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from regularizer_overhead import (  # same folder: run as a script
    METHODS,
    build,
    cpu_name,
    inputs,
    interleaved_medians,
    step,
)

from xmoco_zoo.backbone import create_backbone

METHODS["mocov2_plain_bn"] = {"bn_splits": 1}  # one BN group: what the step costs without split BN


class BackboneLimit:
    """Query backbone forward + backward, key backbone forward under no_grad: nothing else."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        self.q = backbone.train()
        self.k = copy.deepcopy(backbone).requires_grad_(False).train()

    def step(self, x1: torch.Tensor, x2: torch.Tensor) -> float:
        t0 = time.perf_counter()
        self.q(x1).sum().backward()
        with torch.no_grad():
            self.k(x2)
        for p in self.q.parameters():
            p.grad = None
        return time.perf_counter() - t0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--methods", nargs="+", default=["mocov2", "mocov2_plain_bn"], choices=list(METHODS))
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    x1, x2 = inputs(args)
    runs = {n: build(n, args) for n in args.methods}
    # The limit: the plain timm backbone (ordinary BatchNorm), channels_last as our methods run.
    torch.manual_seed(0)
    limit = BackboneLimit(create_backbone(args.backbone).to(memory_format=torch.channels_last))
    steps = {"backbone_limit": lambda: limit.step(x1, x2)}
    for n, (model, opt) in runs.items():
        steps[n] = lambda model=model, opt=opt: step(model, opt, x1, x2)
    names = list(steps)
    med = interleaved_medians(steps, args.rounds, args.warmup)
    result = {
        "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "setting": f"{args.backbone}, {args.image_size} px, batch {args.batch}, queue {args.queue}, rounds {args.rounds}",
        "median_step_s": med,
        "ratio_to_backbone_limit": {n: med[n] / med["backbone_limit"] for n in args.methods},
    }
    print(f"\n{result['setting']}; {result['machine']}")
    for n in names:
        extra = f"   {med[n] / med['backbone_limit']:.3f} x the limit" if n != "backbone_limit" else ""
        print(f"{n:<16} median step {med[n]:.3f} s{extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
