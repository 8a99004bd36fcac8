"""What one training step of each comparison cell costs against MoCo v2's, measured side by side in one run.

The method comparison's second budget is equal training wall-clock (docs/results/methods_fmnist.md): a method
whose step costs r times MoCo v2's trains round(6 / r) epochs where MoCo v2 trains 6. This script measures r for
each cell exactly as ``recipes/pretrain.py`` trains it: each cell's run is built by the loop's own ``setup`` from
its config (Fashion-MNIST, resnet10t at half width, batch 256, the batched augmentations) and timed as the loop
takes a step: the next batch from the run's own loader, then the loop's own ``train_step`` (views, forward,
backward, grad clip, optimizer, momentum update, enqueue and the per-step reduction). Equal training time means
equal wall-clock, so the batch's loading, the same for every method, is in every cell's step (on Fashion-MNIST it
is small: MoCo v2's step measured 0.26 s with it and without). Each round times ``--steps`` consecutive steps of
every cell (rotated order), so a cell's steps follow its own, as in a run: timing one step of each of nine models
in turn had inflated AMCL's steps (docs/changelog.md, 2026-12-05). Medians per step, ratios to MoCo v2. The kNN
monitor (the same for every method) is not in the step.

    python benchmarks/cell_cost.py --threads 2                        # every cell, 15 rounds
    python benchmarks/cell_cost.py --threads 2 --json docs/results/methods_fmnist/cell_cost.json
    python benchmarks/cell_cost.py --threads 2 --cells amcl --merge --json docs/results/methods_fmnist/cell_cost.json

Run it on a quiet machine (no training, no test suite): the ratios decide the equal-time epochs. Written to
``docs/results/methods_fmnist/cell_cost.json``, it adds the equal-time cells (``<cell>@<E>ep``, 3 seeds each) to
the comparison's queue.

``--table FILE`` times other runs than the comparison's cells: a JSON object ``{name: [config, [overrides]]}``,
with ``--baseline NAME`` the run the ratios are to. The zoo's queue (``scripts/zoo_queue.py``) times its models
this way, on the architecture and recipe they train with, to size their epochs to its minutes budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).parent))

from regularizer_overhead import cpu_name, interleaved_medians  # noqa: E402

from xmoco_zoo.experiment import load_config  # noqa: E402
from xmoco_zoo.lifecycle import StopOnSigterm  # noqa: E402
from xmoco_zoo.pretrain import setup, train_step  # noqa: E402

REFERENCE_EPOCHS = 6
BASELINE = "mocov2"


def cells() -> dict[str, tuple[str, list[str]]]:
    """Every reported cell of the comparison (scripts/compare_methods.py) at the settings it is reported with; a
    tuned method whose probes have not chosen yet at its first probe's settings (its defaults), and each AMCL form
    as ``amcl_<form>`` (the step's cost hardly depends on the weights; AMCL's form, heads and top-k change it)."""
    import compare_methods

    probes = compare_methods.probes()
    out = compare_methods.cells(probes)
    for r in probes:
        if r.cell == "amcl":
            if not r.setting.startswith("form=") or " " in r.setting:
                continue  # stage 2
            name = f"amcl_{r.setting.split('=', 1)[1]}"
        else:
            name = r.cell
        out.setdefault(name, compare_methods.test_cell(r.cell, r))
    return out


def build(config: str, overrides: list[str], out: Path):
    cfg = load_config(str(ROOT / config), [*overrides, f"train.output_dir={out}", "train.trackers=[]"])
    stop = StopOnSigterm()
    run = setup(cfg, stop)
    return run, _batches(run.loader)


def _batches(loader):
    """The loader's batches, epoch after epoch (the sampler's epoch is not advanced: the order is irrelevant here)."""
    while True:
        yield from loader


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", help="cells to time (default: all)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="consecutive steps of a cell per round (default: 5)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", help="also write the results here")
    p.add_argument(
        "--merge",
        action="store_true",
        help="with --json and --cells: update only these cells' ratios and equal-time epochs in the existing JSON "
        "(each ratio is to MoCo v2 timed in the same run), keeping the other cells' and noting the update",
    )
    p.add_argument(
        "--table", help="a JSON file {name: [config, [overrides]]} of runs to time instead of the cells"
    )
    p.add_argument("--baseline", default=BASELINE, help="the run the ratios are to (default: mocov2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = (
        {k: (c, list(o)) for k, (c, o) in json.loads(Path(args.table).read_text()).items()}
        if args.table
        else cells()
    )
    baseline = args.baseline
    if baseline not in table:
        raise SystemExit(
            f"cell_cost: the baseline {baseline!r} is not among the runs to time ({', '.join(table)})"
        )
    names = args.cells or list(table)
    if baseline not in names:
        names = [baseline, *names]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {n: build(*table[n], Path(tmp) / n) for n in names}

        def timed(run, batches) -> float:
            """Seconds per step of ``--steps`` consecutive loop steps: load the next batch, train on it."""
            t0 = time.perf_counter()
            for _ in range(args.steps):
                images, labels = next(batches)
                train_step(run, images, labels)
            return (time.perf_counter() - t0) / args.steps

        med = interleaved_medians(
            {n: (lambda r=r: timed(*r)) for n, r in runs.items()}, args.rounds, args.warmup
        )
    ratios = {n: med[n] / med[baseline] for n in names}
    what = (
        f"the runs of {Path(args.table).name}"
        if args.table
        else "the comparison's cells (scripts/compare_methods.py)"
    )
    result = {
        "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
        "setting": f"{what}, rounds {args.rounds} of {args.steps} steps, the batch's loading included",
        "baseline": baseline,
        "median_step_s": med,
        "ratio_to_mocov2": ratios,
        "equal_time_epochs": {n: max(1, round(REFERENCE_EPOCHS / r)) for n, r in ratios.items()},
    }
    print(f"\n{result['setting']}; {result['machine']}")
    print(f"{'cell':<22} {'median step (s)':>16} {'/ ' + baseline:>9} {'epochs in 6 of ' + baseline:>22}")
    for n in names:
        print(f"{n:<22} {med[n]:>16.3f} {ratios[n]:>9.3f} {result['equal_time_epochs'][n]:>22d}")
    if args.json:
        path = Path(args.json)
        if args.merge:
            if not (args.cells and path.is_file()):
                raise SystemExit("--merge updates some cells (--cells) of an existing --json file")
            old = json.loads(path.read_text())
            for n in names:
                if n != baseline:
                    old["ratio_to_mocov2"][n] = ratios[n]
                    old["equal_time_epochs"][n] = result["equal_time_epochs"][n]
            old.setdefault("updates", []).append(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    **{k: result[k] for k in ("machine", "setting", "median_step_s")},
                }
            )
            result = old
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
