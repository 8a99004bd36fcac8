"""CPU cost of the two-view augmentation: per image (torchvision.transforms.v2, as the loader workers run it)
against batched (xmoco_zoo.batch_augment, on the whole batch; ``aug.batched=true``), side by side in one run.

Per image runs on one thread (one loader worker); batched runs on ``--threads`` threads, and its time is
also multiplied by that count, so the printed ratio compares CPU time (core-ms per image), not wall time.

    python benchmarks/augment.py --threads 2                              # the Fashion-MNIST quickstart config
    python benchmarks/augment.py --config none --image-size 32 --channels 3   # MoCo v2's aug+ on 32 px RGB
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularizer_overhead import cpu_name, interleaved_medians  # noqa: E402

from xmoco_zoo.augment import TwoViews  # noqa: E402
from xmoco_zoo.batch_augment import BatchTwoViews  # noqa: E402
from xmoco_zoo.experiment import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config", default=str(ROOT / "recipes/configs/mocov2_fmnist.yaml"), help="'none': defaults"
    )
    p.add_argument(
        "--image-size", type=int, default=None, help="source and output size (default: the config's)"
    )
    p.add_argument(
        "--channels", type=int, default=None, help="default: the config's model.kwargs.in_chans or 3"
    )
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    overrides = [f"aug.image_size={args.image_size}"] if args.image_size else []
    cfg = load_config(None if args.config == "none" else args.config, overrides)
    channels = args.channels or int(cfg.model.kwargs.get("in_chans", 3))
    size = cfg.aug.image_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, channels, size, size), generator=g, dtype=torch.uint8)
    per_image, batched = TwoViews(cfg.aug, channels), BatchTwoViews(cfg.aug, channels)

    def run_per_image() -> float:
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        for img in images:
            per_image(img)
        return time.perf_counter() - t0

    def run_batched() -> float:
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        batched(images, g)
        return (time.perf_counter() - t0) * args.threads  # CPU time: all threads busy

    med = interleaved_medians({"per_image": run_per_image, "batched": run_batched}, args.rounds, 1)
    ms = {k: 1000 * v / args.batch for k, v in med.items()}
    result = {
        "machine": f"{cpu_name()}, torch {torch.__version__}",
        "setting": f"{args.config if args.config != 'none' else 'default aug (MoCo v2 aug+)'}, {channels} channel(s), "
        f"{size} px, batch {args.batch}; batched on {args.threads} threads",
        "core_ms_per_image": ms,
        "per_image_over_batched": ms["per_image"] / ms["batched"],
    }
    print(f"\n{result['setting']}; {result['machine']}")
    for k, v in ms.items():
        print(f"{k:<10} {v:.3f} core-ms per image (two views)")
    print(f"batched costs {result['per_image_over_batched']:.1f}x less CPU")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
