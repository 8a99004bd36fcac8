#!/usr/bin/env python3
"""The method comparison on Fashion-MNIST as one resumable queue of runs (docs/results/methods_fmnist.md).

    python scripts/compare_methods.py list                 # every run, and which are done
    python scripts/compare_methods.py run [--only REGEX]   # run what is not done yet, in order
    python scripts/compare_methods.py report               # the table, the bar chart and the per-run facts

Each run is one pretraining (``recipes/pretrain.py``, 1 process, 2 threads) followed, for the reported runs, by the
linear probe of its export (``recipes/linear_eval.py``, fast mode, no baselines). A run is done when its record
``docs/results/methods_fmnist/runs/<id>.json`` exists: the queue skips it. An interrupted pretraining resumes from
its newest checkpoint (``--resume``), so a cut session loses at most one epoch of one run.

Two kinds of run:
- ``val``: hyperparameter choice. ``data.holdout=10000`` pretrains on 50k train images and scores the kNN monitor
  on the 10k held-out train images (never the test set). One seed, 3 epochs (``PROBE_EPOCHS``).
- ``test``: the reported cells, 3 seeds each (the seed changes the initialisation and the views), trained on the
  full 60k train images for 6 epochs and scored on the 10k test images by kNN and the linear probe.

The queue grows as it runs: a tuned method's cell is added, at the setting of its best held-out probe, once all its
probes are done; AMCL's stage 2 (one setting at a time around the best form) once its forms are probed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from run_queue import Run, cmd_list, cmd_run, knn_curve  # noqa: E402,F401  (knn_curve: the tests')

# Where the records go: XMOCO_COMPARE_OUT lets a queue run from a second checkout (pinned at one commit, so that
# edits to the working tree do not change a running queue) while it writes the records into the working tree.
OUT = Path(os.environ.get("XMOCO_COMPARE_OUT", ROOT / "docs" / "results" / "methods_fmnist"))
RUNS_DIR = ROOT / "runs" / "compare"
SEEDS = (0, 1, 2)


# The cells at equal epochs: each method on the quickstart's budget and pipeline (recipes/configs/*_fmnist.yaml).
CELLS: dict[str, tuple[str, list[str]]] = {
    "mocov2": ("recipes/configs/mocov2_fmnist.yaml", []),
    "mocov2_sym": ("recipes/configs/mocov2_fmnist.yaml", ["method.symmetric=true"]),
}


# Hyperparameter choice on the held-out split (kind "val"): one seed, a 3-epoch probe budget (half the reported 6
# epochs, the same pipeline, a complete cosine schedule), pretrained on 50k train images and scored by the kNN
# monitor on the 10k held out of train. Each probe is (cell, setting, config, overrides); stages run in order.
PROBE_EPOCHS = 3
AMCL = "recipes/configs/amcl_fmnist.yaml"
CO2 = "recipes/configs/co2_fmnist.yaml"
XMOCO = "recipes/configs/xmoco_fmnist.yaml"
MOCOV2 = "recipes/configs/mocov2_fmnist.yaml"
MOCOV3 = "recipes/configs/mocov3_fmnist.yaml"


def _grid(cell: str, config: str, base: list[str], **axes: list) -> list[tuple[str, str, str, list[str]]]:
    """One probe per value of each axis, the others at their defaults (one-at-a-time)."""
    out = []
    for key, values in axes.items():
        for v in values:
            out.append((cell, f"{key}={v}", config, [*base, f"{key}={v}"]))
    return out


PROBES: list[tuple[str, str, str, list[str]]] = [
    # the bases at the probe budget
    ("mocov2", "defaults", MOCOV2, []),
    ("mocov2_sym", "method.symmetric=true", MOCOV2, ["method.symmetric=true"]),
    # AMCL: which form (each at its own defaults, FORM_DEFAULTS in xmoco_zoo/regularizers/amcl.py)
    ("amcl", "form=authors", AMCL, ["method.amcl.form=authors", "train.grad_clip=1.0"]),
    ("amcl", "form=posterior", AMCL, ["method.amcl.form=posterior"]),
    ("amcl", "form=likelihood", AMCL, ["method.amcl.form=likelihood"]),
    # MoCo v2's own temperature: AMCL's posterior form drives every τ to its lower bound (0.05), so a gain over
    # MoCo v2 at T = 0.2 may be the temperature's; the base at a lower T tells (a better one adds mocov2_tuned)
    ("mocov2", "T=0.1", MOCOV2, ["method.temperature=0.1"]),
    ("mocov2", "T=0.05", MOCOV2, ["method.temperature=0.05"]),
    # ... and its learning rate: AMCL sums its loss over 3 heads, which scales the backbone's gradient about 3x
    ("mocov2", "lr=0.18", MOCOV2, ["train.base_lr=0.18"]),
    # CO2: alpha x tau_con
    *[
        ("co2", f"alpha={a} tau_con={t}", CO2, [f"method.co2.weight={a}", f"method.co2.temperature={t}"])
        for t in (0.05, 0.2)
        for a in (0.1, 0.3, 1.0)
    ],
    # MoCo v3 on the same pipeline: the optimizer and temperature (its ImageNet recipe: LARS, lr 0.6, T 1.0)
    ("mocov3", "lars lr 0.6 T 1.0", MOCOV3, ["method.temperature=1.0", "train.warmup_epochs=0.5"]),
    ("mocov3", "lars lr 0.6 T 0.2", MOCOV3, ["method.temperature=0.2", "train.warmup_epochs=0.5"]),
    ("mocov3", "sgd lr 0.06 wd 5e-4 T 0.2", MOCOV3,
     ["method.temperature=0.2", "train.optimizer=sgd", "train.base_lr=0.06", "train.weight_decay=5.0e-4",
      "train.warmup_epochs=0.5"]),
    # XMoCo: lambda_x and lambda_u one at a time around (1, 0.1)
    ("xmoco", "defaults (cross 1.0, uniform 0.1)", XMOCO, []),
    *_grid("xmoco", XMOCO, [], **{"method.xmoco.cross_weight": [0.3, 3.0], "method.xmoco.uniform_weight": [0.0, 0.5]}),
    # ... and its temperatures τ_x = τ_u (0.2 by default) at λ_u = 0, its best of the grid above: at defaults every
    # XMoCo setting scored below its symmetric base (75.49 against 76.74 held out)
    *[("xmoco", f"tau {t} uniform 0", XMOCO,
       ["method.xmoco.uniform_weight=0.0", f"method.xmoco.cross_temperature={t}", f"method.xmoco.uniform_temperature={t}"])
      for t in (0.05, 0.5)],
]  # fmt: skip


# AMCL, stage 2: one setting at a time around the best form's defaults (FORM_DEFAULTS), once stage 1 is done.
AMCL_STAGE2: dict[str, dict[str, list]] = {
    "authors": {"beta": [1e-5, 1e-3, 1e-2], "topk": [20, 500], "tau_min": [1e-3, 0.05], "heads": [1, 5],
                "weight": [0.3, 3.0]},
    "posterior": {"beta": [1e-4, 1e-2], "posterior_topk": [100, 1000], "tau_min": [0.02, 0.1], "heads": [1, 5],
                  "weight": [0.3, 3.0]},
    "likelihood": {"beta": [0.03, 0.3], "negatives": ["batch"], "tau_min": [0.003], "heads": [1, 5],
                   "weight": [0.01, 0.1]},
}  # fmt: skip
# The cells whose settings the probes choose, and the reported test cells at equal epochs (3 seeds each).
TUNED = ("co2", "mocov3", "xmoco", "amcl")


def probe_id(cell: str, setting: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", setting.replace("method.", "")).strip("_")
    return f"val{PROBE_EPOCHS}-{cell}-{slug}"


def probe(cell: str, setting: str, config: str, overrides: list[str]) -> Run:
    return Run(probe_id(cell, setting), cell, config, [*overrides, f"train.epochs={PROBE_EPOCHS}"], 0, kind="val",
               setting=setting)  # fmt: skip


def load_record(run: Run) -> dict | None:
    p = record_path(run)
    return json.loads(p.read_text()) if p.is_file() else None


def best(runs: list[Run]) -> Run | None:
    """The probe with the best held-out kNN, once every one of ``runs`` is done (a diverged probe never wins)."""
    recs = [load_record(r) for r in runs]
    if not runs or any(r is None for r in recs):
        return None
    scored = [(rec["knn"], i) for i, rec in enumerate(recs) if "diverged" not in rec]
    return runs[max(scored)[1]] if scored else None


def amcl_stage2(form_runs: list[Run]) -> list[Run]:
    """Stage 2 of AMCL's choice: around the best form of stage 1 (nothing until stage 1 is done)."""
    winner = best(form_runs)
    if winner is None:
        return []
    form = winner.setting.split("=", 1)[1]
    base = [o for o in winner.overrides if not o.startswith("train.epochs=")]
    return [
        probe("amcl", f"form={form} {key}={v}", winner.config, [*base, f"method.amcl.{key}={v}"])
        for key, values in AMCL_STAGE2[form].items()
        for v in values
    ]


# Overrides that size a probe to its 3 epochs, not part of the setting a cell inherits (its config's own values apply).
PROBE_ONLY = ("train.epochs=", "train.warmup_epochs=")


def test_cell(cell: str, chosen: Run) -> tuple[str, list[str]]:
    """The (config, overrides) of a 6-epoch cell at the setting of probe ``chosen``."""
    return chosen.config, [o for o in chosen.overrides if not o.startswith(PROBE_ONLY)]


def on_tuned_base(runs: list[Run]) -> list[Run]:
    """When MoCo v2's probes find a better temperature than its default, each regularizer on MoCo v2 (CO2, XMoCo)
    is probed once more: its best setting on that temperature, so that it is also compared with the tuned base."""
    base = best([r for r in runs if r.cell == "mocov2"])
    if base is None or base.setting == "defaults":
        return []
    extra = []
    for cell in ("co2", "xmoco"):
        winner = best([r for r in runs if r.cell == cell])
        if winner is not None:
            overrides = [o for o in winner.overrides if not o.startswith("train.epochs=")]
            extra.append(
                probe(
                    cell,
                    f"{winner.setting}, base {base.setting}",
                    winner.config,
                    [*overrides, *test_cell("mocov2", base)[1]],
                )
            )
    return extra


def probes() -> list[Run]:
    runs = [probe(*p) for p in PROBES]
    return runs + on_tuned_base(runs) + amcl_stage2([r for r in runs if r.cell == "amcl"])


def chosen_probe(cell: str) -> Run | None:
    """The held-out probe whose setting the reported ``cell`` takes: its best probe, once all its probes are done
    (MoCo v2's: the best of its temperatures and learning rate, the setting of ``mocov2_tuned``)."""
    return best([r for r in probes() if r.cell == cell])


def cells(probe_runs: list[Run]) -> dict[str, tuple[str, list[str]]]:
    """The reported cells: the fixed ones, each tuned method at its chosen setting once its probes are done, and
    AMCL's other forms at their own defaults (``amcl`` is the best form, tuned)."""
    out = dict(CELLS)
    by_cell: dict[str, list[Run]] = {}
    for r in probe_runs:
        by_cell.setdefault(r.cell, []).append(r)
    for cell in TUNED:
        chosen = best(by_cell.get(cell, []))
        if chosen is not None:  # amcl: best() waits for stage 2, which exists once stage 1 is done
            out[cell] = test_cell(cell, chosen)
    base = best(by_cell.get("mocov2", []))
    if base is not None and base.setting != "defaults":
        out["mocov2_tuned"] = test_cell("mocov2", base)
        # XMoCo's own base is the symmetric loss: at the tuned temperature too, so that XMoCo (probed on it) is
        # compared with the same base at the same temperature
        out["mocov2_sym_tuned"] = (MOCOV2, ["method.symmetric=true", *test_cell("mocov2", base)[1]])
    topk = _amcl_topk(out.get("amcl"))
    if "mocov2_tuned" in out and topk:
        # the ablation of AMCL's gain: the tuned MoCo v2 over AMCL's hardest negatives, without AMCL's heads and
        # temperatures (every τ of the AMCL cell sits at τ_min = the tuned temperature from step 30 on)
        config, overrides = out["mocov2_tuned"]
        out[ablation_cell(topk)] = (config, [*overrides, f"method.negatives_topk={topk}"])
    form_runs = [r for r in by_cell.get("amcl", []) if r.setting.startswith("form=") and " " not in r.setting]
    winner = best(form_runs)
    if winner is not None and "amcl" in out:
        for r in form_runs:
            if r is not winner:
                out[f"amcl_{r.setting.split('=', 1)[1]}"] = test_cell("amcl", r)
    return out


def _amcl_topk(cell: tuple[str, list[str]] | None) -> int | None:
    """The k of the AMCL cell's hardest negatives (``method.amcl.posterior_topk``); None over the whole queue."""
    key = "method.amcl.posterior_topk="
    value = next((o[len(key) :] for o in (cell or ("", []))[1] if o.startswith(key)), None)
    return int(value) if value and value.isdigit() else None


def ablation_cell(topk: int) -> str:
    return f"mocov2_tuned_top{topk}"


def ablates(cell: str) -> str | None:
    """The method an ablation cell takes apart (its second base on the page), else None."""
    return "amcl" if re.fullmatch(r"mocov2_tuned_top\d+", cell) else None


REFERENCE_EPOCHS = 6  # the equal-epochs budget (the quickstart's)


def cost_path() -> Path:
    """benchmarks/cell_cost.py's measurement (``--json``), run on a quiet machine: it sets the equal-time epochs."""
    return OUT / "cell_cost.json"


# A cell that costs what another measured cell costs: only the temperature differs, and it does not change a step.
COST_TWIN = {"mocov2_sym_tuned": "mocov2_sym"}
# The symmetric loss's equal-time cell is run at the tuned temperature once that cell exists (XMoCo's own base,
# and the symmetric MoCo v2 worth timing: at T 0.2 it ties with MoCo v2 even at equal epochs).
SUPERSEDED = {"mocov2_sym": "mocov2_sym_tuned"}


def time_cells(reported: dict[str, tuple[str, list[str]]]) -> dict[str, tuple[str, list[str]]]:
    """The second budget, equal training wall-clock: each cell whose step costs r times MoCo v2's, retrained for
    round(6 / r) epochs (cell ``<cell>@<E>ep``), once ``cost_path()`` exists. A cell whose equal-time epochs are
    the reference's needs no second run: its equal-epochs cell is also its equal-time cell, and a cell that
    learned nothing at equal epochs (``learned_nothing``) gets none."""
    if not cost_path().is_file():
        return {}
    epochs = json.loads(cost_path().read_text())["equal_time_epochs"]
    out = {}
    for cell, (config, overrides) in reported.items():
        if SUPERSEDED.get(cell) in reported:
            continue
        e = epochs.get(cell, epochs.get(COST_TWIN.get(cell, "")))
        if e is not None and e != REFERENCE_EPOCHS and not learned_nothing(cell):
            out[f"{cell}@{e}ep"] = (config, [*overrides, f"train.epochs={e}"])
    return out


def learned_nothing(cell: str) -> bool:
    """The cell's equal-epochs runs are all done and their mean kNN is below raw pixels' (the floor): a collapsed
    method, whose equal-time cell (fewer epochs of the same collapse) is not run."""
    from compare_report import FLOOR  # noqa: PLC0415

    recs = [load_record(Run(f"{cell}-e{REFERENCE_EPOCHS}-s{seed}", cell, "", [], seed)) for seed in SEEDS]
    if any(r is None for r in recs):
        return False
    knn = [r.get("knn", 0.0) if "diverged" not in r else 0.0 for r in recs]
    return sum(knn) / len(knn) < FLOOR["knn"]


def bases(reported: dict[str, tuple[str, list[str]]]) -> dict[str, list[str]]:
    """What each reported cell is compared with, its own base first: a regularizer on MoCo v2 against MoCo v2 at
    the same temperature (the tuned base when its probe ran on it), XMoCo against the symmetric base at its
    temperature, MoCo v3 and every cell also against the tuned MoCo v2 (the best base) and MoCo v2 at its
    defaults; an equal-time cell
    against the best MoCo v2 in the same minutes (6 epochs, tuned when there is a tuned cell)."""
    tuned = reported.get("mocov2_tuned")
    tuned_overrides = set(tuned[1]) if tuned else set()
    best_base = "mocov2_tuned" if tuned else "mocov2"
    own = {"mocov2_sym": "mocov2", "mocov2_tuned": "mocov2", "mocov2_sym_tuned": "mocov2_tuned"}
    out: dict[str, list[str]] = {}
    for cell, (_, overrides) in reported.items():
        if cell == "mocov2":
            continue
        on_tuned = bool(tuned_overrides) and tuned_overrides <= set(overrides)
        if cell in own:
            first = own[cell]
        elif cell == "xmoco":
            first = "mocov2_sym_tuned" if on_tuned else "mocov2_sym"
        else:
            first = "mocov2_tuned" if on_tuned else "mocov2"
        out[cell] = list(dict.fromkeys([first, *filter(None, [ablates(cell)]), best_base, "mocov2"]))
        out[cell] = [b for b in out[cell] if b != cell]
    for cell in time_cells(reported):
        out[cell] = [best_base]
    return out


def queue() -> list[Run]:
    """Every run, in order: the held-out probes first, then the reported cells (3 seeds each), then the equal-time
    cells. The queue grows as probes finish: the test cells of a tuned method appear once its choice is made."""
    probe_runs = probes()
    runs = []
    reported = cells(probe_runs)
    for cell, (config, overrides) in reported.items():
        for seed in SEEDS:
            runs.append(Run(f"{cell}-e{REFERENCE_EPOCHS}-s{seed}", cell, config, list(overrides), seed))
    fixed = [r for r in runs if r.cell in CELLS]
    timed = [
        Run(f"{cell}-s{seed}", cell, config, list(overrides), seed, budget="time")
        for cell, (config, overrides) in time_cells(reported).items()
        for seed in SEEDS
    ]
    rest = sorted((r for r in runs if r.cell not in CELLS), key=lambda r: PRIORITY.get(r.cell, len(PRIORITY)))
    return fixed + probe_runs + rest + timed


# The order of the tuned cells' seeds: the bases that judge the regularizers first (the tuned MoCo v2 is CO2's and
# AMCL's own base, its symmetric twin XMoCo's), then the regularizers, AMCL's collapsed forms last. Python's sort
# is stable: cells not named here keep their order, after these.
ORDER = [
    "co2",
    "mocov3",
    "mocov2_tuned",
    "xmoco",
    "mocov2_sym_tuned",
    "amcl",
    "amcl_authors",
    "amcl_likelihood",
    "mocov2_tuned_top100",
]
PRIORITY = {c: i for i, c in enumerate(ORDER)}


def record_path(run: Run) -> Path:
    return OUT / "runs" / f"{run.id}.json"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["list", "run", "report"])
    p.add_argument("--only", help="a regular expression on run ids")
    a = p.parse_args(argv)
    runs = queue()
    if a.what == "list":
        cmd_list(runs, record_path)
    elif a.what == "run":
        cmd_run(queue, record_path, RUNS_DIR, a.only)
    else:
        from compare_report import report  # noqa: PLC0415  (scripts/compare_report.py)

        report(OUT, runs, bases(cells(probes())))


if __name__ == "__main__":
    main()
