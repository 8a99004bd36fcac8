"""The ``xmoco-zoo`` command.

xmoco-zoo pretrain --config recipes/configs/mocov2_fmnist.yaml [key=value ...] [--resume]
xmoco-zoo knn local-dir:runs/mocov2_fmnist/backbone --baselines
xmoco-zoo methods
"""

from __future__ import annotations

import argparse
import json
import sys


def _knn(args: argparse.Namespace) -> int:
    import timm
    import torch

    from .evaluate import knn_fashion_mnist, knn_raw_pixels_fashion_mnist

    torch.manual_seed(args.seed)
    model = timm.create_model(args.model, pretrained=True).eval()
    rows = {f"{args.model}": knn_fashion_mnist(model, args.k, args.t, root=args.data_root)}
    if args.baselines:
        # The same architecture and config, randomly initialised: what training has to beat.
        arch = model.pretrained_cfg.get("architecture", type(model).__name__)
        rand = timm.create_model(args.model, pretrained=False).eval()
        rows[f"{arch}, random init (seed {args.seed})"] = knn_fashion_mnist(
            rand, args.k, args.t, root=args.data_root
        )
        rows["raw pixels (the floor)"] = knn_raw_pixels_fashion_mnist(args.k, args.t, root=args.data_root)
    width = max(len(r) for r in rows)
    print(f"\nFashion-MNIST test, weighted kNN top-1 (k={args.k}, t={args.t}, bank = 60k train images):")
    for name, acc in rows.items():
        print(f"  {name:<{width}}  {acc:6.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"k": args.k, "t": args.t, "top1": rows}, f, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "pretrain":
        from .pretrain import main as pretrain

        pretrain(argv[1:])
        return 0
    p = argparse.ArgumentParser(prog="xmoco-zoo", description="MoCo-family pretraining for timm backbones")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pretrain", help="pretrain a method (same as recipes/pretrain.py)")
    k = sub.add_parser("knn", help="kNN top-1 of a timm model on Fashion-MNIST (as users load it)")
    k.add_argument("model", help="timm model spec: local-dir:PATH, hf-hub:ORG/NAME or a timm name")
    k.add_argument(
        "--baselines",
        action="store_true",
        help="also score the same architecture at random init and raw pixels",
    )
    k.add_argument("-k", type=int, default=200)
    k.add_argument("-t", type=float, default=0.1)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--data-root", default=None)
    k.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    sub.add_parser("methods", help="list the registered methods")
    args = p.parse_args(argv)
    if args.cmd == "knn":
        return _knn(args)
    if args.cmd == "methods":
        from .methods import get_method_entry, list_methods

        for name in list_methods():
            print(f"{name:10s} {get_method_entry(name).description}")
        print(
            "\nCompose any base (mocov2, mocov3) with any regularizers (co2, xmoco, amcl), e.g.\n"
            '  xmoco-zoo pretrain --config CONFIG method.base=mocov3 "method.regularizers=[co2,xmoco]"\n'
            "Equations, config keys and interpretive choices: docs/methods.md"
        )
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
