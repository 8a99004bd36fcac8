"""Our MoCo v2 training step against the backbone limit, measured side by side in one run.

The limit is the work no MoCo implementation can avoid on the same backbone, batch and resolution: the plain
timm backbone's (query) forward and backward, plus its (key) forward under no_grad, channels_last. Our step adds
the projector heads, the loss, the optimizer step, the momentum update, the enqueue and, in one process, split
BatchNorm (the emulation of shuffle BN). ``limit_with_updates`` adds to the limit the two parameter-sized
passes every momentum method makes (the fused SGD step and the EMA update of the key encoder). ``--levers`` also runs MoCo v2 with each of its speed levers switched off
on its own (plain BN instead of split BN, torch's default SGD instead of the fused one, NCHW instead of
channels_last, and the NCHW backbone limit), so each lever's worth is read off the same run. Interleaved rounds
(rotated order), medians, the ratio printed; synthetic inputs (the training step only, not data loading).

    python benchmarks/step_overhead.py --threads 2                  # resnet18, 32 px, batch 256, queue 4096
    python benchmarks/step_overhead.py --threads 2 --levers --rounds 10
    python benchmarks/step_overhead.py --methods mocov2 co2 amcl --rounds 15 --json out.json
"""

from __future__ import annotations

import copy
import json
import time

import torch
from regularizer_overhead import (  # same folder: run as a script
    METHODS,
    NCHW,
    TRAIN,
    build,
    cpu_name,
    inputs,
    interleaved_medians,
    setting_parser,
    step,
)

from xmoco_zoo.backbone import create_backbone
from xmoco_zoo.config import TrainConfig
from xmoco_zoo.optim import create_optimizer
from xmoco_zoo.pretrain import compile_backbones

# Levers, each switched off on its own beside the default (the same MoCo v2 otherwise):
METHODS["mocov2_plain_bn"] = {"bn_splits": 1}  # no split BN (the one-process shuffle-BN emulation)
METHODS["mocov2_unfused_opt"] = {}
TRAIN["mocov2_unfused_opt"] = {"fused_optimizer": False}  # torch's default (for-loop) SGD step on CPU
METHODS["mocov2_nchw"] = {}
NCHW.add("mocov2_nchw")  # default memory format instead of channels_last
LEVERS = ["mocov2_plain_bn", "mocov2_unfused_opt", "mocov2_nchw"]
METHODS["mocov2_compiled"] = {}  # with --compile: model.compile=true (torch.compile of both backbones)


class BackboneLimit:
    """Query backbone forward + backward, key backbone forward under no_grad: nothing else.

    ``with_updates``: also the two passes over the parameters that any momentum-encoder method makes each step,
    the (fused) SGD step of the query backbone and the EMA update of the key backbone. They are memory-bound
    and do not shrink with the batch, so they weigh most on small images.
    """

    def __init__(self, backbone: torch.nn.Module, with_updates: bool = False) -> None:
        self.q = backbone.train()
        self.k = copy.deepcopy(backbone).requires_grad_(False).train()
        self.opt = None
        if with_updates:
            train = TrainConfig(optimizer="sgd", weight_decay=1e-4)
            self.opt = create_optimizer(self.q, train, lr=1e-9)  # a tiny lr: the backbone stays as built
            self.k_params = list(self.k.parameters())
            self.q_params = [p.detach() for p in self.q.parameters()]

    def step(self, x1: torch.Tensor, x2: torch.Tensor) -> float:
        t0 = time.perf_counter()
        if self.opt is not None:
            torch._foreach_lerp_(self.k_params, self.q_params, 0.01)
        self.q(x1).sum().backward()
        with torch.no_grad():
            self.k(x2)
        if self.opt is not None:
            self.opt.step()
        for p in self.q.parameters():
            p.grad = None
        return time.perf_counter() - t0


def main(argv=None) -> dict:
    p = setting_parser(__doc__)
    p.add_argument("--methods", nargs="+", default=["mocov2"], choices=list(METHODS))
    p.add_argument(
        "--compile", action="store_true", help="also run mocov2 with model.compile=true (torch.compile)"
    )
    p.add_argument(
        "--levers",
        action="store_true",
        help="also run mocov2 with each lever switched off: " + ", ".join(LEVERS),
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.levers:
        args.methods += [n for n in LEVERS if n not in args.methods]
    if args.compile and "mocov2_compiled" not in args.methods:
        args.methods.append("mocov2_compiled")
    x1, x2 = inputs(args)  # channels_last
    c1, c2 = x1.contiguous(), x2.contiguous()  # NCHW
    runs = {n: build(n, args) for n in args.methods}
    if "mocov2_compiled" in runs:
        compile_backbones(runs["mocov2_compiled"][0])  # compiled during the warm-up steps
    # The limit: the plain timm backbone (ordinary BatchNorm), channels_last as our methods run.
    torch.manual_seed(0)
    limit = BackboneLimit(create_backbone(args.backbone).to(memory_format=torch.channels_last))
    steps = {"backbone_limit": lambda: limit.step(x1, x2)}
    torch.manual_seed(0)
    limit_upd = BackboneLimit(create_backbone(args.backbone).to(memory_format=torch.channels_last), True)
    steps["limit_with_updates"] = lambda: limit_upd.step(x1, x2)
    if args.levers:
        torch.manual_seed(0)
        limit_nchw = BackboneLimit(create_backbone(args.backbone))
        steps["backbone_limit_nchw"] = lambda: limit_nchw.step(c1, c2)
    for n, (model, opt) in runs.items():
        a, b = (c1, c2) if n in NCHW else (x1, x2)
        steps[n] = lambda model=model, opt=opt, a=a, b=b: step(model, opt, a, b)
    names = list(steps)
    med = interleaved_medians(steps, args.rounds, args.warmup)
    result = {
        "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "setting": f"{args.backbone}, {args.image_size} px, batch {args.batch}, queue {args.queue}, rounds {args.rounds}",
        "median_step_s": med,
        "ratio_to_backbone_limit": {
            n: med[n] / med["backbone_limit"] for n in names if n != "backbone_limit"
        },
        "ratio_to_limit_with_updates": {n: med[n] / med["limit_with_updates"] for n in args.methods},
    }
    print(f"\n{result['setting']}; {result['machine']}")
    for n in names:
        extra = f"   {med[n] / med['backbone_limit']:.3f} x the limit" if n != "backbone_limit" else ""
        if n in args.methods:
            extra += f",  {med[n] / med['limit_with_updates']:.3f} x limit_with_updates"
        print(f"{n:<20} median step {med[n]:.3f} s{extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
