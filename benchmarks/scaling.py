"""Step time and peak memory of MoCo v2 (and AMCL) against batch size, queue size and AMCL heads.

Three sweeps around the reference setting (resnet18, 32 px, batch 256, queue 4096):
batch 64 to 512, queue 4096 to 65536, and AMCL with 1 to 4 heads (beside MoCo v2). Within a sweep every
setting is timed in the same process, interleaved (rotated order), medians; time per image is what to compare
across batch sizes. Peak memory is measured for each setting in a fresh process: the peak resident memory
(VmHWM, reset once the model, optimizer and inputs are built) reached during ``--mem-steps`` steps, minus the
resident memory at that point (so: activations, gradients, optimizer state, logits and queue copies). On CUDA it is
``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/scaling.py --threads 2                     # all three sweeps
    python benchmarks/scaling.py --sweeps batch --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularizer_overhead import METHODS, build, cpu_name, inputs, interleaved_medians, setting_parser, step  # noqa: E402

SWEEPS = {
    "batch": [("mocov2", {"batch": b}) for b in (64, 128, 256, 512)],
    "queue": [("mocov2", {"queue": q}) for q in (4096, 16384, 65536)],
    "amcl_heads": [("mocov2", {})] + [(f"amcl_h{h}", {}) for h in (1, 2, 3, 4)],
}
for h in (1, 2, 3, 4):
    METHODS[f"amcl_h{h}"] = {"_method": "amcl", "amcl": {"heads": h}}


def label(name: str, over: dict) -> str:
    return name + "".join(f" {k}={v}" for k, v in over.items())


def settings(args: argparse.Namespace, over: dict) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **over})


def status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in MB (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status: CPU peak memory needs Linux")


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS, so building the model does not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_worker(args: argparse.Namespace) -> None:
    """Build one setting, run a few steps, print the step's peak memory in MB (a fresh process per setting)."""
    torch.set_num_threads(args.threads)
    name, over = args.memory_worker, json.loads(args.over)
    s = settings(args, over)
    model, opt = build(name, s)
    x1, x2 = inputs(s)
    cuda = torch.cuda.is_available() and args.device == "cuda"
    if cuda:
        model, x1, x2 = model.cuda(), x1.cuda(), x2.cuda()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        base = status_mb("VmRSS")
    for _ in range(args.mem_steps):
        step(model, opt, x1, x2)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = status_mb("VmHWM") - base
    print(json.dumps({"peak_mb": peak}))


def main(argv=None) -> dict:
    p = setting_parser(__doc__, rounds=5, warmup=1)
    p.add_argument("--sweeps", nargs="+", default=list(SWEEPS), choices=list(SWEEPS))
    p.add_argument("--mem-steps", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where peak memory is measured")
    p.add_argument("--memory-worker", help=argparse.SUPPRESS)
    p.add_argument("--over", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_worker:
        memory_worker(args)
        return {}
    torch.set_num_threads(args.threads)
    result: dict = {
        "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "reference": f"{args.backbone}, {args.image_size} px, batch {args.batch}, queue {args.queue}",
        "sweeps": {},
    }
    for sweep in args.sweeps:
        built = {}
        for name, over in SWEEPS[sweep]:
            s = settings(args, over)
            built[label(name, over)] = (build(name, s), inputs(s), s.batch)
        med = interleaved_medians(
            {k: (lambda m=m, x=x: step(m[0], m[1], *x)) for k, (m, x, _) in built.items()},
            args.rounds,
            args.warmup,
        )
        rows = []
        for (name, over), (k, (_, _, batch)) in zip(SWEEPS[sweep], built.items()):
            cmd = [
                sys.executable,
                __file__,
                "--memory-worker",
                name,
                "--over",
                json.dumps(over),
                "--threads",
                str(args.threads),
                "--mem-steps",
                str(args.mem_steps),
                "--device",
                args.device,
                "--backbone",
                args.backbone,
                "--image-size",
                str(args.image_size),
                "--batch",
                str(args.batch),
                "--queue",
                str(args.queue),
            ]
            out = (
                subprocess.run(cmd, check=True, capture_output=True, text=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            rows.append(
                {
                    "setting": k,
                    "step_s": med[k],
                    "ms_per_image": 1000 * med[k] / batch,
                    "peak_mb": json.loads(out)["peak_mb"],
                }
            )
        del built
        result["sweeps"][sweep] = rows
        print(f"\n{sweep} sweep ({result['reference']} unless set); {result['machine']}")
        print(f"{'setting':<26} {'step (s)':>9} {'ms/image':>9} {'x first':>8} {'peak MB':>9}")
        for r in rows:
            print(
                f"{r['setting']:<26} {r['step_s']:>9.3f} {r['ms_per_image']:>9.2f} "
                f"{r['step_s'] / rows[0]['step_s']:>8.3f} {r['peak_mb']:>9.0f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
