"""This machine's speed against the reference machine this project counts minutes on (xmoco_zoo/pace.py).

Times the MoCo v2 training step of the method comparison's setting exactly as ``benchmarks/cell_cost.py`` does
(its mocov2 cell: half-width resnet10t, 28 px, batch 256, the batch's loading included; 12 rounds of 5 steps,
medians), the measurement whose value on the reference machine is ``xmoco_zoo.pace.REFERENCE_STEP_S``, and prints

    speed = reference step / this machine's step      (> 1: this machine is faster)

About a minute on 2 cores. Run it on a quiet machine (no training, no test suite), just before the training it
describes: the zoo's queue (scripts/zoo_queue.py) does so before every start or resume of a model's training,
``scripts/dev/lightly_curve.sh`` before the peer library's curve.

    python benchmarks/machine_pace.py --threads 2
    python benchmarks/machine_pace.py --threads 2 --json runs/zoo/NAME/machine_pace.json   # appends
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import cell_cost  # noqa: E402

from xmoco_zoo.pace import REFERENCE_MACHINE, add_measurement, measurement  # noqa: E402

CELL = "mocov2"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=12, help="rounds of --steps steps (the reference's: 12)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--json", help="append the measurement to this pace file (a run folder's machine_pace.json)"
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        timing = cell_cost.main(
            [
                "--cells",
                CELL,
                "--threads",
                str(args.threads),
                "--rounds",
                str(args.rounds),
                "--warmup",
                str(args.warmup),
                "--steps",
                str(args.steps),
                "--json",
                str(Path(tmp) / "cost.json"),
            ]  # fmt: skip
        )
    step = timing["median_step_s"][CELL]
    m = measurement(step, timing["machine"], time.strftime("%Y-%m-%d %H:%M"))
    print(
        f"machine pace: MoCo v2 step {step:.4f} s here, {m['reference_step_s']:.4f} s on {REFERENCE_MACHINE}: "
        f"speed {m['speed']:.3f}"
    )
    if args.json:
        pace = add_measurement(args.json, m)
        print(f"{args.json}: {len(pace['measurements'])} measurement(s), speed {pace['speed']:.3f}")
    return m


if __name__ == "__main__":
    main()
