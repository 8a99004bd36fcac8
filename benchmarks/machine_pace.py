"""This machine's speed against the reference machine this project counts minutes on (xmoco_zoo/pace.py).

Times the MoCo v2 training step of the method comparison's setting exactly as ``benchmarks/cell_cost.py`` does
(its mocov2 cell: half-width resnet10t, 28 px, batch 256, the batch's loading included; 12 rounds of 5 steps,
medians), the measurement whose value on the reference machine is ``xmoco_zoo.pace.REFERENCE_STEP_S``, and prints

    speed = reference step / this machine's step      (> 1: this machine is faster)

About a minute on 2 cores, with OpenMP's default wait policy whatever the caller's environment says (the
reference's). Run it on a quiet machine (no training, no test suite), just before the training it
describes: the zoo's queue (scripts/zoo_queue.py) does so before every start or resume of a model's training,
``scripts/dev/lightly_curve.sh`` before the peer library's curve.

    python benchmarks/machine_pace.py --threads 2
    python benchmarks/machine_pace.py --threads 2 --json runs/zoo/NAME/machine_pace.json   # appends
    python benchmarks/machine_pace.py --threads 2 --json runs/zoo/NAME/machine_pace.json --fresh   # a new run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from xmoco_zoo.pace import REFERENCE_MACHINE, add_measurement, measurement  # noqa: E402

CELL = "mocov2"


def restart_with_default_omp_policy(environ=os.environ, execve=os.execve) -> None:
    """Start this script again without ``OMP_WAIT_POLICY`` when it is set. The reference was measured with OpenMP's
    default wait policy; the run queues set PASSIVE for their trainings (scripts/run_queue.py), which made this step
    0.218 s instead of 0.138 s on one machine within three minutes (2026-12-06). OpenMP reads the variable once,
    when torch loads, so it cannot be unset in a running process."""
    if "OMP_WAIT_POLICY" in environ:
        env = {k: v for k, v in environ.items() if k != "OMP_WAIT_POLICY"}
        execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> dict:
    import cell_cost
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=12, help="rounds of --steps steps (the reference's: 12)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--json", help="append the measurement to this pace file (a run folder's machine_pace.json)"
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="with --json: the training starts from scratch (no checkpoint); drop the file's earlier measurements, "
        "which belong to starts cut before their first checkpoint",
    )
    args = p.parse_args(argv)
    cost = ["--cells", CELL, "--threads", str(args.threads), "--rounds", str(args.rounds)]
    cost += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    timing = cell_cost.main(cost)  # returns the timing; its own --json would write a file nobody reads
    step = timing["median_step_s"][CELL]
    m = measurement(step, timing["machine"], time.strftime("%Y-%m-%d %H:%M"))
    print(
        f"machine pace: MoCo v2 step {step:.4f} s here, {m['reference_step_s']:.4f} s on {REFERENCE_MACHINE}: "
        f"speed {m['speed']:.3f}"
    )
    if args.json:
        pace = add_measurement(args.json, m, fresh=args.fresh)
        print(f"{args.json}: {len(pace['measurements'])} measurement(s), speed {pace['speed']:.3f}")
    return m


if __name__ == "__main__":
    restart_with_default_omp_policy()
    main()
