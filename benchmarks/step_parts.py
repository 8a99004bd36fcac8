"""Where a MoCo v2 step's time goes beyond the backbone limit: each part timed inside real steps, interleaved
with the limit's own parts, medians; plus the optimizer step alone in torch's three SGD implementations, and the
copy of the queue that each step reads, alone.

    python benchmarks/step_parts.py --threads 2            # resnet18, 32 px, batch 256, queue 4096
"""

from __future__ import annotations

import collections
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularizer_overhead import METHODS, build, cpu_name, inputs, setting_parser  # noqa: E402
from step_overhead import BackboneLimit  # noqa: E402

from xmoco_zoo.backbone import create_backbone  # noqa: E402


def main(argv=None) -> dict:
    p = setting_parser(__doc__, rounds=12, warmup=2)
    p.add_argument("--bn-splits", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    METHODS["mocov2_parts"] = {"bn_splits": args.bn_splits}
    x1, x2 = inputs(args)
    model, opt = build("mocov2_parts", args)
    torch.manual_seed(0)
    limit = BackboneLimit(create_backbone(args.backbone).to(memory_format=torch.channels_last))
    t: dict[str, list[float]] = collections.defaultdict(list)

    def lap(marks: list[float], names: list[str], prefix: str) -> None:
        for n, a, b in zip(names, marks, marks[1:]):
            t[f"{prefix}{n}"].append(b - a)
        t[f"{prefix}total"].append(marks[-1] - marks[0])

    def limit_step() -> None:
        m = [time.perf_counter()]
        out = limit.q(x1)
        m.append(time.perf_counter())
        out.sum().backward()
        m.append(time.perf_counter())
        with torch.no_grad():
            limit.k(x2)
        m.append(time.perf_counter())
        for q in limit.q.parameters():
            q.grad = None
        lap(m, ["query forward", "query backward", "key forward"], "limit: ")

    def our_step() -> None:
        m = [time.perf_counter()]
        model.update_momentum(0.99)
        m.append(time.perf_counter())
        emb = model.embed(x1, x2)  # query backbone+head, key backbone+head (split BN, shuffle)
        m.append(time.perf_counter())
        out = model.loss(emb)
        model.enqueue(emb)
        m.append(time.perf_counter())
        out["loss_nce"].backward()
        m.append(time.perf_counter())
        opt.step()
        opt.zero_grad(set_to_none=True)
        m.append(time.perf_counter())
        lap(
            m,
            ["EMA update", "embed (q fwd, k fwd)", "loss + enqueue", "backward", "optimizer step"],
            "mocov2: ",
        )

    for r in range(args.rounds + 2):
        (limit_step, our_step)[r % 2]()
        (limit_step, our_step)[1 - r % 2]()
    med = {k: statistics.median(v[2:]) for k, v in t.items()}

    # The optimizer step alone, on the backbone's parameters with random gradients: torch's three SGD kernels.
    params = list(create_backbone(args.backbone).parameters())
    for q in params:
        q.grad = torch.randn_like(q)
    kinds = {
        "for-loop (torch's CPU default)": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }
    opts = {
        k: torch.optim.SGD(params, lr=1e-9, momentum=0.9, weight_decay=1e-4, **kw) for k, kw in kinds.items()
    }
    ot: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(args.rounds + 2):
        for k, o in opts.items():
            a = time.perf_counter()
            o.step()
            ot[k].append(time.perf_counter() - a)
    opt_med = {k: statistics.median(v[2:]) for k, v in ot.items()}

    # The one copy of the queue each step reads (MoCoV2.embed), alone, at this queue size and at MoCo v2's 65536.
    clone_med = {}
    for size in sorted({args.queue, 65536}):
        buf = torch.randn(size, model.cfg.dim)
        ct = []
        for _ in range(args.rounds + 2):
            a = time.perf_counter()
            buf.clone()
            ct.append(time.perf_counter() - a)
        clone_med[f"queue {size} x {model.cfg.dim}"] = statistics.median(ct[2:])

    result = {
        "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "setting": f"{args.backbone}, {args.image_size} px, batch {args.batch}, queue {args.queue}, "
        f"bn_splits {args.bn_splits}, rounds {args.rounds}",
        "median_ms": {k: 1000 * v for k, v in med.items()},
        "sgd_step_ms": {k: 1000 * v for k, v in opt_med.items()},
        "queue_copy_ms": {k: 1000 * v for k, v in clone_med.items()},
    }
    print(f"\n{result['setting']}; {result['machine']}")
    for k, v in result["median_ms"].items():
        print(f"{k:<36} {v:8.1f} ms")
    print("\nSGD step alone (momentum, weight decay) on the backbone's parameters:")
    for k, v in result["sgd_step_ms"].items():
        print(f"{k:<36} {v:8.1f} ms")
    print("\nThe queue copy a step reads, alone:")
    for k, v in result["queue_copy_ms"].items():
        print(f"{k:<36} {v:8.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
