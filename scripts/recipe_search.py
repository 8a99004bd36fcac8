#!/usr/bin/env python3
"""The zoo's recipe search on Fashion-MNIST as one resumable queue (docs/results/recipe_search.md).

    python scripts/recipe_search.py list                 # every run, and which are done
    python scripts/recipe_search.py run [--only REGEX]   # run what is not done yet, in order
    python scripts/recipe_search.py report               # the tables of docs/results/recipe_search.md

Every run is a held-out probe (``scripts/run_queue.py``, kind ``val``): pretrained on 50k train images, scored by
kNN and the linear probe on the 10k images held out of train, never the test set; one seed. Records go to
``docs/results/recipe_search/runs/<id>.json``; a run with a record is skipped.

Stage 1, the recipe at the quickstart's budget (6 epochs), one change at a time from ``BASE`` (MoCo v2's
Fashion-MNIST config at the temperature the method comparison chose): temperature, learning rate with warmup,
crop scale, blur, random affine, random erasing, queue size, batch size; and the
architectures (full-width resnet10t, resnet18, the half-width resnet10t on 56 px inputs), whose minutes per epoch
the budgets need.

Stage 2, once stage 1 is done: ``combined``, every change of stage 1 that beat the base by more than ``MARGIN``
(per axis, its best value), at 6 epochs; then the transfer of the better of base and combined (the chosen recipe)
to every family of the zoo (``transfer``: 3-epoch probes against the method comparison's); then each architecture
with the chosen recipe at ``BUDGETS[0]`` minutes of training (its epochs from its stage-1 minutes per epoch), with
``LONG_CHECK`` (the crop that longer trainings need) re-checked there on the base architecture, and the
architecture that wins there at every other budget (with the re-checked crop when it won; a run that used less than
``UNDERUSED`` of its budget first runs again at the epochs its measured minutes fit, and the longer budgets take
those measured minutes), and an architecture within ``TIE`` of it at the longest budget too (``budget_choice``: the
zoo's). The report's table is budget -> kNN / linear (held out), with each run's command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from run_queue import Run, cmd_list, cmd_run  # noqa: E402

from xmoco_zoo.pace import reference_minutes  # noqa: E402

OUT = Path(os.environ.get("XMOCO_RECIPE_OUT", ROOT / "docs" / "results" / "recipe_search"))
RUNS_DIR = ROOT / "runs" / "recipe"
CONFIG = "recipes/configs/mocov2_fmnist.yaml"
EPOCHS = 6  # stage 1's budget: the quickstart's
BUDGETS = (
    30,
    60,
    90,
)  # minutes of training (the runs' train_minutes) on the reference machine (xmoco_zoo.pace.reference_minutes)
MARGIN = 0.3  # a change joins the combination when it beats the base by more than this (held-out kNN points)

# The base: MoCo v2's Fashion-MNIST config at T 0.05, the temperature the method comparison's held-out probes
# chose (docs/results/methods_fmnist.md: 3 epochs, seed 0, held out: T 0.2 76.74, T 0.1 73.99, T 0.05 78.42; the
# symmetric loss 76.74 at twice the cost a step, so it is left to that page's equal-time cell). Every run below
# starts from it.
BASE: list[str] = ["method.temperature=0.05"]
# Stage 1: (axis, setting label, overrides); one change at a time from the base.
RECIPE_AXES: list[tuple[str, str, list[str]]] = [
    ("base", "T 0.05", []),
    ("temperature", "T 0.03", ["method.temperature=0.03"]),
    ("lr", "lr 0.12, warmup 1", ["train.base_lr=0.12", "train.warmup_epochs=1"]),
    # added after lr 0.12 won by 2.3 points: is the optimum higher still?
    ("lr", "lr 0.24, warmup 1", ["train.base_lr=0.24", "train.warmup_epochs=1"]),
    ("crop", "crop 0.5-1", ["aug.crop_scale=[0.5,1.0]"]),
    ("crop", "crop 0.08-1", ["aug.crop_scale=[0.08,1.0]"]),
    ("blur", "blur k3 p0.5", ["aug.blur_p=[0.5,0.5]"]),
    # shape-keeping warps and occlusion, the augmentations MNIST-like data is known to prefer (recipe_search.md)
    (
        "affine",
        "affine 15deg t0.1 s0.9-1.1 p0.5",
        [
            "aug.affine_p=0.5",
            "aug.affine_degrees=15",
            "aug.affine_translate=[0.1,0.1]",
            "aug.affine_scale=[0.9,1.1]",
        ],
    ),
    ("erase", "erase p0.5", ["aug.erase_p=0.5"]),
    ("queue", "queue 16384", ["method.queue_size=16384"]),
    # twice the steps an epoch (the lr scales with the batch: base_lr is per 256 images)
    ("batch", "batch 128", ["train.batch_size=128"]),
]
# A stronger crop pays off only in longer trainings (MoCo's and SimCLR's 0.08-1 are set for hundreds of epochs),
# so a 6-epoch probe can reject what a 90-minute run needs: the first budget re-checks it on the base architecture,
# and it joins the longer budgets' recipe when it beats that architecture's run there by MARGIN.
LONG_CHECK: tuple[str, list[str]] = ("crop 0.08-1", ["aug.crop_scale=[0.08,1.0]"])
# Stage 1's one-epoch runs estimate an architecture's minutes per epoch; a first-budget run measures them over its
# whole length. A run that trained less than UNDERUSED of its budget (the estimate was too high: the 56 px run took
# 19.5 of its 30 minutes) is run again at the epochs its own measured minutes fit (``-resized``), and it stands for
# its architecture there. Within this, the estimate is as good as the machine's run-to-run noise (~10 %). The longer
# budgets take each architecture's measured minutes per epoch.
UNDERUSED = 0.8
# An architecture within TIE of the first budget's winner (held-out kNN points) is not beaten beyond one seed's noise
# (the comparison's seeds spread by 0.2-0.45, so the difference of two one-seed runs by ~0.5): it also runs at the
# longest budget, the one the zoo trains at, where a wider network has the epochs to use its capacity. The zoo takes
# the best of them there.
TIE = 0.5
# The architectures: the base's half-width resnet10t at 28 px, and what costs more per epoch.
FULL = "model.kwargs.channels=[64,128,256,512]"
ARCHITECTURES: dict[str, list[str]] = {
    "resnet10t-half-28": [],
    "resnet10t-28": [FULL],
    "resnet18-28": ["model.backbone=resnet18", FULL],
    "resnet10t-half-56": ["aug.image_size=56"],
}


# The ViT (MoCo v3, recipes/configs/mocov3_vit_fmnist.yaml): its learning rate at 3 epochs with 1 warmup epoch
# (MoCo v3's ImageNet lr, 1.5e-4 x B/256, is set for 300 epochs of 1.28M images: a 3-epoch run needs more).
VIT_CONFIG = "recipes/configs/mocov3_vit_fmnist.yaml"
VIT_EPOCHS = 3
VIT_LRS = (5e-4, 1.5e-3)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def with_base(overrides: list[str]) -> list[str]:
    """``BASE`` with ``overrides`` on top (an override of a key of BASE replaces it)."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [*(o for o in BASE if o.split("=", 1)[0] not in keys), *overrides]


def _val(run_id: str, cell: str, overrides: list[str], setting: str, epochs: int, linear: bool = True) -> Run:
    return Run(run_id, cell, CONFIG, [*with_base(overrides), f"train.epochs={epochs}"], kind="val",
               setting=setting, linear=linear)  # fmt: skip


def stage1() -> list[Run]:
    runs = [_val(f"r{EPOCHS}-{slug(label)}", axis, o, label, EPOCHS) for axis, label, o in RECIPE_AXES]
    # the architectures' cost: one epoch each (their accuracy is compared at equal minutes, in stage 2)
    runs += [_val(f"r1-arch-{a}", "arch", o, a, 1, linear=False) for a, o in ARCHITECTURES.items() if o]
    runs += [
        Run(f"v{VIT_EPOCHS}-vit-lr_{lr:g}", "vit", VIT_CONFIG,
            [f"train.base_lr={lr}", "train.warmup_epochs=1", f"train.epochs={VIT_EPOCHS}"], kind="val",
            setting=f"ViT lr {lr:g}", linear=True)
        for lr in VIT_LRS
    ]  # fmt: skip
    return runs


def record_path(run: Run) -> Path:
    return OUT / "runs" / f"{run.id}.json"


def load(run: Run) -> dict | None:
    """The run's record; None when it is not done or diverged."""
    p = record_path(run)
    rec = json.loads(p.read_text()) if p.is_file() else None
    return None if rec is None or "diverged" in rec else rec


def done(runs: list[Run]) -> bool:
    return all(record_path(r).is_file() for r in runs)


def recipe(run: Run) -> list[str]:
    """A run's recipe: its overrides without its length."""
    return [o for o in run.overrides if not o.startswith("train.epochs=")]


def combined(runs: list[Run]) -> Run | None:
    """Every recipe change that beat the base by more than MARGIN (each axis at its best value), together; None
    until every recipe probe is done."""
    probes = [r for r in runs if r.cell not in ("arch", "vit")]
    base = load(probes[0])
    if not done(probes) or base is None:
        return None
    best: dict[str, tuple[float, Run]] = {}
    for r in probes[1:]:
        rec = load(r)
        if (
            rec is not None
            and rec["knn"] > base["knn"] + MARGIN
            and rec["knn"] > best.get(r.cell, (-1.0,))[0]
        ):
            best[r.cell] = (rec["knn"], r)
    chosen = [r for r in probes if any(r is b for _, b in best.values())]
    overrides = [o for r in chosen for o in recipe(r) if o not in BASE]
    label = " + ".join(r.setting for r in chosen) or "defaults"
    return _val(f"r{EPOCHS}-combined", "combined", overrides, label, EPOCHS)


def minutes_text(rec: dict) -> str:
    """A record's training minutes as the tables show them: as measured, and on the reference machine's scale
    where its machine was another (``49.8 (x1.81: 90.1)``)."""
    if not rec.get("train_minutes"):
        return ""
    text = f"{rec['train_minutes']:.1f}"
    if rec.get("machine_pace"):
        text += f" (x{rec['machine_pace']['speed']:.2f}: {reference_minutes(rec):.1f})"
    return text


def per_epoch(rec: dict | None, run_id: str = "") -> float:
    """Training minutes per epoch of a stage-1 record (the epochs alone, ``train_minutes``), on the reference
    machine's scale (xmoco_zoo.pace.reference_minutes: a record made on a faster machine counts its minutes there)."""
    if not rec or not rec.get("train_minutes"):
        raise SystemExit(
            f"recipe_search: the record of {run_id or 'a stage-1 run'} has no train_minutes, so the budgets' epochs "
            f"cannot be computed; delete {OUT / 'runs' / (run_id + '.json')} and run it again with the current "
            f"scripts/run_queue.py (which records the epochs' minutes)"
        )
    return reference_minutes(rec) / rec["epochs"]


def with_change(overrides: list[str], change: list[str]) -> list[str]:
    """``overrides`` with ``change`` on top (a key of ``change`` replaces the same key in ``overrides``)."""
    keys = {o.split("=", 1)[0] for o in change}
    return [*(o for o in overrides if o.split("=", 1)[0] not in keys), *change]


def budget_runs(
    runs: list[Run],
    chosen: Run,
    archs: list[str],
    budgets: tuple[int, ...],
    change: tuple[str, list[str]] | None = None,
    suffix: str = "",
    measured: dict[str, float] | None = None,
) -> list[Run]:
    """Each architecture with the chosen recipe (and ``change``: a label and overrides that do not change a
    step's cost) at each budget: its epochs from its minutes per epoch, ``measured[arch]`` (a first-budget run's
    own) when given, else estimated from stage 1 (the chosen recipe's, scaled by the architecture's one-epoch cost
    over the base's)."""
    base = per_epoch(load(runs[0]), runs[0].id)
    overrides, setting = recipe(chosen), chosen.setting
    if change is not None:
        keys = {o.split("=", 1)[0] for o in change[1]}
        replaced = any(o.split("=", 1)[0] in keys for o in overrides)
        overrides = with_change(overrides, change[1])
        setting = f"{setting} + {change[0]}" + (" (in its place)" if replaced else "")
    out = []
    for arch in archs:
        arch_run = next((r for r in runs if r.cell == "arch" and r.setting == arch), runs[0])
        minutes = per_epoch(load(chosen), chosen.id) * per_epoch(load(arch_run), arch_run.id) / base
        minutes = (measured or {}).get(arch, minutes)
        for b in budgets:
            epochs = max(1, math.floor(b / minutes))
            # the kNN monitor about 5 times a run (and at its end): the minutes count the epochs alone, but
            # after every epoch it would add ~20 % of the wall clock at 28 px
            monitor = [f"knn.every={max(1, epochs // 5)}"]
            out.append(_val(f"b{b}-{arch}{suffix}", f"budget {b}", [*overrides, *ARCHITECTURES[arch], *monitor],
                            f"{arch}, {setting}, {epochs} epochs", epochs))  # fmt: skip
    return out


def arch_of(run: Run) -> str:
    """The architecture of a budget run (``b<minutes>-<arch>[-<change>]``)."""
    rest = run.id.split("-", 1)[1]
    return max((a for a in ARCHITECTURES if rest == a or rest.startswith(a + "-")), key=len)


def long_check(runs: list[Run], chosen: Run) -> Run | None:
    """The first budget's re-check of ``LONG_CHECK`` on the base architecture; None when the chosen recipe has
    it already."""
    label, change = LONG_CHECK
    if set(change) <= set(recipe(chosen)):
        return None
    arch = next(iter(ARCHITECTURES))
    return budget_runs(runs, chosen, [arch], BUDGETS[:1], LONG_CHECK, f"-{slug(label)}")[0]


# The recipe is searched on MoCo v2, and the zoo trains every family on it. Whether it suits another family is
# probed once, before the budget runs: the family's comparison setting (its chosen held-out probe, 3 epochs, base
# architecture; docs/results/methods_fmnist.md) again with the recipe's changes, the same split, seed and length,
# the warmup scaled to the shorter run. A family takes the recipe in the zoo when it scores higher with it than its
# probe did without (``takes_recipe``). MoCo v2's own is the calibration (the recipe was chosen on it at 6 epochs):
# it shows whether the recipe's gain shows at 3.
TRANSFER_EPOCHS = 3  # the comparison's probes' length (compare_methods.PROBE_EPOCHS)


def chosen_recipe(runs: list[Run]) -> Run | None:
    """The combination when it beat the base, else the base; None until the combination is done."""
    runs = [r for r in runs if r.cell != "vit"]
    combo = combined(runs)
    if combo is None or not done([*runs, combo]):
        return None
    base, combo_rec = load(runs[0]), load(combo)
    return combo if combo_rec is not None and combo_rec["knn"] > base["knn"] else runs[0]


def _scaled_warmup(overrides: list[str], factor: float) -> list[str]:
    key = "train.warmup_epochs="
    return [f"{key}{float(o[len(key) :]) * factor:g}" if o.startswith(key) else o for o in overrides]


def transfer(chosen: Run) -> list[Run]:
    """Each family's comparison probe with ``chosen``'s recipe on top, as the zoo would train it (its cell's own
    settings win over the recipe's, ``zoo_queue.recipe_for``); a family whose probes are not done is left out."""
    import compare_methods
    import zoo_queue

    out = []
    for family in zoo_queue.FAMILIES:
        ref = compare_methods.chosen_probe(family)
        if ref is None:
            continue
        overrides = zoo_queue.merge(
            zoo_queue.recipe_for(family, recipe(chosen)), compare_methods.test_cell(family, ref)[1]
        )
        overrides = _scaled_warmup(overrides, TRANSFER_EPOCHS / EPOCHS)
        out.append(Run(f"t{TRANSFER_EPOCHS}-{family}", "transfer", ref.config,
                       [*overrides, f"train.epochs={TRANSFER_EPOCHS}"], kind="val",
                       setting=f"{family}, {chosen.setting}", linear=False))  # fmt: skip
    return out


def transfer_run(family: str) -> Run | None:
    """``family``'s transfer probe; None before the recipe is chosen or the family's comparison probes are done."""
    chosen = chosen_recipe(stage1())
    return (
        next((r for r in transfer(chosen) if r.id == f"t{TRANSFER_EPOCHS}-{family}"), None)
        if chosen
        else None
    )


def transfer_scores(family: str) -> tuple[float, float] | None:
    """(held-out kNN of ``family``'s comparison probe without the recipe, with it); None until both exist (or when
    either diverged)."""
    import compare_methods

    ref, run = compare_methods.chosen_probe(family), transfer_run(family)
    without = compare_methods.load_record(ref) if ref else None
    with_it = load(run) if run else None
    if without is None or with_it is None or "diverged" in without:
        return None
    return without["knn"], with_it["knn"]


def takes_recipe(family: str) -> bool | None:
    """Whether the zoo trains ``family`` on the recipe: MoCo v2 always (the recipe was chosen on it), another
    family when its transfer probe beat its comparison probe (not when it diverged); None until it is done."""
    if family == "mocov2":
        return True
    run = transfer_run(family)
    if run is not None and record_path(run).is_file() and load(run) is None:
        return False  # diverged with the recipe
    scores = transfer_scores(family)
    return None if scores is None else scores[1] > scores[0]


def stage2(runs: list[Run]) -> list[Run]:
    """The combination, the recipe's transfer to every family, then every architecture at the first budget, then
    the winner at the others (the ViT's probes are its own)."""
    runs = [r for r in runs if r.cell != "vit"]
    combo = combined(runs)
    if combo is None:
        return []
    chosen = chosen_recipe(runs)
    if chosen is None:
        return [combo]
    first = budget_runs(runs, chosen, list(ARCHITECTURES), BUDGETS[:1])
    check = long_check(runs, chosen)
    out = [combo, *transfer(chosen), *first, *([check] if check else [])]
    if not done(out):
        return out
    recs = {r.id: rec for r in first if (rec := load(r)) is not None}
    measured = {arch_of(r): per_epoch(recs[r.id], r.id) for r in first if r.id in recs}
    resized = {
        r.id: budget_runs(runs, chosen, [arch_of(r)], BUDGETS[:1], suffix="-resized", measured=measured)[0]
        for r in first
        if r.id in recs
        and reference_minutes(recs[r.id]) < UNDERUSED * BUDGETS[0]
        and math.floor(BUDGETS[0] / measured[arch_of(r)]) > recs[r.id]["epochs"]
    }
    out += resized.values()
    first = [resized.get(r.id, r) for r in first]
    scored = [(rec["knn"], r) for r in first if (rec := load(r)) is not None]
    if done(out) and scored:
        best, winner = max(scored, key=lambda t: t[0])
        # the re-checked change joins the longer budgets when it beat its architecture's run by the margin
        plain, checked = load(first[0]), load(check) if check else None
        change = LONG_CHECK if checked and plain and checked["knn"] > plain["knn"] + MARGIN else None
        # the id says when the re-checked change joined, so that a record never stands for another recipe
        suffix = f"-{slug(LONG_CHECK[0])}" if change else ""
        out += budget_runs(runs, chosen, [arch_of(winner)], BUDGETS[1:], change, suffix, measured)
        tied = [
            arch_of(r)
            for knn, r in sorted(scored, key=lambda t: -t[0])
            if r is not winner and knn >= best - TIE
        ]
        out += budget_runs(runs, chosen, tied, BUDGETS[-1:], change, suffix, measured)
    return out


def _best_at(budget: int) -> tuple[list[Run], tuple[dict, Run] | None]:
    """The runs of ``budget``, and the best of those done (held-out kNN) with its record."""
    runs = [r for r in queue() if r.cell == f"budget {budget}"]
    scored = [(rec, r) for r in runs if (rec := load(r)) is not None]
    return runs, max(scored, key=lambda t: t[0]["knn"], default=None)


def budget_choice(budget: int) -> Run | None:
    """The best run (held-out kNN) at ``budget`` minutes (at the longest, the zoo's recipe and architecture); None
    until every run of that budget is done (at the longest: the first budget's winner and the architectures tied
    with it)."""
    runs, best = _best_at(budget)
    return best[1] if runs and done(runs) and best else None


def queue() -> list[Run]:
    runs = stage1()
    return runs + stage2(runs)


def report() -> str:
    lines = [
        "| run | stage | setting | epochs | train minutes | kNN, held out | linear, held out | kNN after each epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in queue():
        p = record_path(r)
        if not p.is_file():
            continue
        rec = json.loads(p.read_text())
        if "diverged" in rec:
            lines.append(f"| `{r.id}` | {r.cell} | {r.setting} | | | diverged | | |")
            continue
        curve = ", ".join(f"{v:.2f}" for v in rec.get("knn_curve", []))
        minutes = minutes_text(rec)
        linear = f"{rec['linear']:.2f}" if "linear" in rec else ""
        lines.append(
            f"| `{r.id}` | {r.cell} | {r.setting} | {rec['epochs']} | {minutes} | {rec['knn']:.2f} | "
            f"{linear} | {curve} |"
        )
    return "\n".join(lines)


def budget_table() -> str:
    """Budget -> the best held-out run within it (by kNN), with its recipe and its exact command."""
    rows = []
    for b in BUDGETS:
        _, best = _best_at(b)
        if best is None:
            continue
        rec, r = best
        command = " ".join(r.pretrain_command(RUNS_DIR / r.id))
        minutes = minutes_text(rec)
        rows.append(
            f"| {b} | `{r.id}` | {r.setting} | {minutes} | {rec['knn']:.2f} | "
            f"{rec.get('linear', float('nan')):.2f} | `{command}` |"
        )
    if not rows:
        return "No budget run is done yet."
    return "\n".join(
        [
            "| budget (min) | best run | recipe | train minutes | kNN, held out | linear, held out | command |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def transfer_table() -> str:
    """Each family: its comparison probe without the recipe, with it (3 epochs, held out), and whether the zoo
    trains it on the recipe."""
    import compare_methods
    import zoo_queue

    rows = []
    for family in zoo_queue.FAMILIES:
        ref, run = compare_methods.chosen_probe(family), transfer_run(family)
        if ref is None or run is None or not record_path(run).is_file():
            continue
        scores, takes = transfer_scores(family), takes_recipe(family)
        without, with_it = (f"{v:.2f}" for v in scores) if scores else ("", "diverged")
        verdict = "yes (the recipe was chosen on it)" if family == "mocov2" else ("yes" if takes else "no")
        rows.append(f"| {family} | `{ref.id}` | {without} | `{run.id}` | {with_it} | {verdict} |")
    if not rows:
        return "No transfer probe is done yet."
    return "\n".join(
        [
            "| family | its comparison probe | kNN without the recipe | with the recipe | kNN | the zoo takes it |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )


def chart(out: Path) -> bool:
    """Stage 1's changes against the base (held-out kNN), and every budget run's kNN against its training
    minutes, by architecture; False when nothing is done yet."""
    runs = queue()
    recs = {r.id: rec for r in runs if (rec := load(r)) is not None}
    base = recs.get(runs[0].id)
    if base is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    probes = [
        r
        for r in runs[1:]
        if r.id in recs and r.cell not in ("arch", "vit") and not r.cell.startswith("budget")
    ]
    deltas = [recs[r.id]["knn"] - base["knn"] for r in probes]
    left.barh(
        [r.setting for r in probes], deltas, color=["tab:green" if d > MARGIN else "tab:gray" for d in deltas]
    )
    left.axvline(0, color="black", lw=0.8)
    left.axvline(MARGIN, color="tab:green", ls="--", lw=0.8, label=f"margin ({MARGIN:g})")
    left.set_title(f"{EPOCHS} epochs: held-out kNN minus the base's ({base['knn']:.2f})", fontsize=9)
    left.tick_params(labelsize=7)
    left.legend(fontsize=7)
    budget = [r for r in runs if r.cell.startswith("budget") and r.id in recs]
    by_arch: dict[str, list[tuple[float, float]]] = {}
    for r in budget:
        arch = r.setting.split(",", 1)[0] + (" (crop re-check)" if r.id.endswith(slug(LONG_CHECK[0])) else "")
        by_arch.setdefault(arch, []).append((reference_minutes(recs[r.id]) or 0.0, recs[r.id]["knn"]))
    for arch, points in sorted(by_arch.items()):
        points.sort()
        right.plot([m for m, _ in points], [k for _, k in points], marker="o", label=arch)
    right.axhline(base["knn"], color="tab:gray", ls=":", lw=1, label=f"base, {EPOCHS} epochs")
    right.set_xlabel("training minutes (on the reference machine's scale)", fontsize=8)
    right.set_title("budget runs: held-out kNN", fontsize=9)
    right.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")  # the long probe labels stay whole
    plt.close(fig)
    return True


BEGIN, END = "<!-- recipe table: begin -->", "<!-- recipe table: end -->"
BUDGET_BEGIN, BUDGET_END = "<!-- budget table: begin -->", "<!-- budget table: end -->"
TRANSFER_BEGIN, TRANSFER_END = "<!-- transfer table: begin -->", "<!-- transfer table: end -->"
CHART = "recipe_search.png"  # in docs/images/


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["list", "run", "report"])
    p.add_argument("--only", help="a regular expression on run ids")
    a = p.parse_args(argv)
    if a.what == "list":
        cmd_list(queue(), record_path)
    elif a.what == "run":
        cmd_run(queue, record_path, RUNS_DIR, a.only)
    else:
        md, budgets, transfers = report(), budget_table(), transfer_table()
        if chart(OUT.parent.parent / "images" / CHART):
            print(f"wrote docs/images/{CHART}")
            budgets += f"\n\n![the recipe search: stage 1's changes, and held-out kNN against minutes](../images/{CHART})"
        print(budgets + "\n\n" + transfers + "\n\n" + md)
        page = OUT.parent / "recipe_search.md"
        text = page.read_text()
        bodies = (
            ((BEGIN, END), md),
            ((BUDGET_BEGIN, BUDGET_END), budgets),
            ((TRANSFER_BEGIN, TRANSFER_END), transfers),
        )
        for (begin, end), body in bodies:
            if begin in text:
                head, rest = text.split(begin, 1)
                text = head + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1]
        page.write_text(text)


if __name__ == "__main__":
    main()
