#!/usr/bin/env python3
"""The zoo's trainings as one resumable queue: train each published model, publish it, deliver it to hub/.

    python scripts/zoo_queue.py list                 # every model, and which are published
    python scripts/zoo_queue.py run [--only REGEX]   # train and publish what is not published yet, in order
    python scripts/zoo_queue.py run --train-only     # train (or resume) them, publish nothing (the tree stays put)
    python scripts/zoo_queue.py published NAME       # exit 0 when hub/NAME is complete (queue.sh's commit loop)
    python scripts/zoo_queue.py retire               # remove and commit the models a newer one of their family dominates

A model is one pretraining on the 60k Fashion-MNIST train images (``recipes/pretrain.py``, 1 process, 2 threads,
``runs/zoo/<name>``; a cut run resumes from its newest checkpoint), each start of it preceded by a minute of
``benchmarks/machine_pace.py`` (the machine's speed, which the card reports beside the minutes), followed by ``scripts/publish_fmnist.sh``:
the export (float16 weights), kNN, linear probe, fine-tuning and 10 % labels, each beside its baselines, and the
card. A model is done when ``<hub>/<name>/`` holds all four results: the queue skips it.

``publish_fmnist.sh`` refuses a dirty tree (a card names the commit its numbers come from), so the queue runs from
a pinned clean checkout (``bash scripts/dev/queue.sh start zoo``) and delivers each published folder into
``XMOCO_HUB_OUT`` (the working tree's ``hub/``; ``queue.sh commit-records`` commits it there with the regenerated
index), then restores the checkout's own index files so that it stays clean for the next model. Run from the
working tree itself (no ``XMOCO_HUB_OUT``), it commits each published folder and the index itself.

The models: each method family's configuration at the choices of the method comparison
(docs/results/methods_fmnist.md) and the recipe of the recipe search (docs/results/recipe_search.md; a family whose
transfer probe there scored lower with the recipe than without takes its architecture alone), sized to
at most ~90 minutes of training on this machine (the ViT up to ~2 hours): before the first training, ``run`` times
each ResNet model's step against the MoCo v2 model's on the setting they train with
(``docs/results/recipe_search/zoo_cost.json``, from ``benchmarks/cell_cost.py --table``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from run_queue import LAUNCH, RunFailed, pace_command, sh  # noqa: E402

HUB_OUT = Path(os.environ.get("XMOCO_HUB_OUT", ROOT / "hub"))
RUNS_DIR = ROOT / "runs" / "zoo"
# The protocols every published card reports (results/<protocol>_*.json, written by publish_fmnist.sh).
PROTOCOLS = ("knn", "linear", "finetune", "semisup")
INDEX = ("README.md", "hub/results.csv", "docs/models.md")  # what `xmoco-zoo list --write` rewrites


@dataclass
class ZooModel:
    name: str  # hub/<name>, and the Hub repo's name
    family: str  # the method family (the index's column)
    config: str
    overrides: list[str] = field(default_factory=list)
    seed: int = 0
    # a record of the same setting timed on the reference machine (repo-relative): the card's speed is then the
    # run's own steps against it (xmoco_zoo.pace.own_run), not the ResNet step calibration's
    reference_run: str | None = None

    def pretrain_command(self) -> list[str]:
        out = (RUNS_DIR / self.name).relative_to(ROOT)
        return [
            *LAUNCH, "recipes/pretrain.py", "--config", self.config, *self.overrides,
            f"train.seed={self.seed}", f"train.output_dir={out}",
        ]  # fmt: skip

    def publish_command(self) -> list[str]:
        return ["bash", "scripts/publish_fmnist.sh", str((RUNS_DIR / self.name).relative_to(ROOT)), self.name]


# The zoo, derived from the records (nothing is typed in by hand): each method family on the recipe search's
# winning recipe and architecture at BUDGET minutes, at the setting its comparison cell chose, for as many epochs
# as fit BUDGET at its step cost; the ViT at its best held-out learning rate for VIT_BUDGET minutes.
BUDGET = 90  # minutes of training per ResNet model (issue 15: at most ~90)
VIT_BUDGET = 120  # the ViT's (issue 15: up to ~2 hours)
TRAIN_IMAGES, PROBE_IMAGES = 60000, 50000  # the zoo trains on all of train; the probes held 10k out
# family -> the comparison cell whose setting it takes (MoCo v2: the tuned base when there is one)
FAMILIES = {
    "mocov2": ("mocov2_tuned", "mocov2"),
    "mocov3": ("mocov3",),
    "co2": ("co2",),
    "xmoco": ("xmoco",),
    "amcl": ("amcl",),
}
# the recipe search's architectures -> the model names' backbone part
ARCH_NAMES = {
    "resnet10t-half-28": "resnet10t-half",
    "resnet10t-28": "resnet10t",
    "resnet18-28": "resnet18",
    "resnet10t-half-56": "resnet10t-half-56px",
}


def merge(first: list[str], then: list[str]) -> list[str]:
    """``key=value`` overrides: ``first``, with every key that ``then`` sets replaced by ``then``'s value."""
    keys = {o.split("=", 1)[0] for o in then}
    return [*(o for o in first if o.split("=", 1)[0] not in keys), *then]


FIRST_MARKS = (0.125, 0.25, 0.5)  # mid-epoch: the plot's first minutes, where the peer's first epoch lands


def _length(epochs: int) -> list[str]:
    """The run's length, and its kNN monitor at the random init, after 1/8, 1/4 and 1/2 of the first epoch,
    after epochs 1, 2, 4, 8, ... and at the end: a log-spaced accuracy-against-minutes curve (the card and the
    zoo's plot) for a few evaluations, that starts before the peer library's first point (one epoch of its
    resnet18: 12.0 training minutes here, symmetric loss at 32 px) however slow an epoch of ours is."""
    marks = [*FIRST_MARKS, *(2**i for i in range(epochs.bit_length()) if 2**i < epochs)]
    return [
        f"train.epochs={epochs}",
        f"knn.every={epochs}",
        f"knn.epochs=[{','.join(map(str, marks))}]",
        "knn.at_start=true",
    ]


SHARED_METHOD_KEYS = ("method.queue_size",)  # the recipe's method settings that every family takes


def recipe_for(family: str, recipe: list[str]) -> list[str]:
    """The recipe search's overrides as a family takes them: the architecture, augmentations and schedule for
    every family; its loss settings (the temperature) only for MoCo v2, whose loss it tuned: another family keeps
    the setting its own comparison cell measured (the queue size, where a family has one, is shared)."""
    if family == "mocov2":
        return list(recipe)
    return [o for o in recipe if not o.startswith("method.") or o.split("=", 1)[0] in SHARED_METHOD_KEYS]


@dataclass
class ResnetPlan:
    """The ResNet models before their length: MoCo v2's minutes per epoch on the chosen recipe and architecture
    (the 60k train images), each model's config and overrides, and its comparison cell's step-cost ratio."""

    minutes: float
    models: dict[str, tuple[str, str, list[str]]]  # name -> (family, config, overrides without the length)
    cell_ratio: dict[str, float]  # name -> its comparison cell's ratio (measured on the comparison's setting)

    def table(self) -> dict[str, list]:
        """``benchmarks/cell_cost.py --table``'s input: name -> [config, overrides]."""
        return {name: [config, overrides] for name, (_, config, overrides) in self.models.items()}

    @property
    def baseline(self) -> str:
        return next(name for name, (family, _, _) in self.models.items() if family == "mocov2")


def resnet_plan() -> ResnetPlan | None:
    """The ResNet models' plan, once the recipe search's BUDGET run, its transfer probes and the comparison's cells
    exist."""
    import compare_methods
    import recipe_search

    chosen = recipe_search.budget_choice(BUDGET)  # the best of the architectures run at BUDGET, once all are
    rec = recipe_search.load(chosen) if chosen else None
    if chosen is None or rec is None or not compare_methods.cost_path().is_file():
        return None
    arch = recipe_search.arch_of(chosen)
    minutes = recipe_search.per_epoch(rec, chosen.id) * TRAIN_IMAGES / PROBE_IMAGES  # MoCo v2, this recipe
    ratio = json.loads(compare_methods.cost_path().read_text())["ratio_to_mocov2"]
    recipe = [o for o in chosen.overrides if not o.startswith(("train.epochs=", "knn.every="))]
    reported = compare_methods.cells(compare_methods.probes())
    models, cell_ratio = {}, {}
    for family, candidates in FAMILIES.items():
        cell = next((c for c in candidates if c in reported), None)
        if cell is None or cell not in ratio:
            continue
        takes = recipe_search.takes_recipe(family)
        if takes is None:
            return None  # its transfer probe is not done: the zoo waits for it
        config, overrides = reported[cell]
        # a family the recipe did not suit (its transfer probe) trains on the architecture alone
        base = recipe_for(family, recipe) if takes else list(recipe_search.ARCHITECTURES[arch])
        name = f"{family}-{ARCH_NAMES.get(arch, arch)}-fmnist"
        models[name] = (family, config, merge(base, overrides))
        cell_ratio[name] = ratio[cell]
    if not any(family == "mocov2" for family, _, _ in models.values()):
        return None
    return ResnetPlan(minutes, models, cell_ratio)


# The comparison's step costs were measured on its own setting (half-width resnet10t, 28 px); a model on another
# architecture or recipe can cost another multiple of MoCo v2's step. Before training, the queue times every
# ResNet model's step against the MoCo v2 model's on the setting it trains with (benchmarks/cell_cost.py --table:
# the loop's own train_step, interleaved rounds, medians) and sizes its epochs from that ratio.
def zoo_cost_path() -> Path:
    import recipe_search

    return recipe_search.OUT / "zoo_cost.json"


def _stored_cost() -> dict:
    path = zoo_cost_path()
    return json.loads(path.read_text()) if path.is_file() else {}


def _untimed(plan: ResnetPlan, cost: dict) -> list[str]:
    """The models whose setting the stored timing does not cover (all of them when the MoCo v2 model's changed:
    every ratio is to it)."""
    table, stored = plan.table(), cost.get("table") or {}
    if (
        stored.get(plan.baseline) != table[plan.baseline]
        or cost.get("baseline", plan.baseline) != plan.baseline
    ):
        return list(table)
    return [n for n in table if stored.get(n) != table[n] or n not in cost.get("ratio_to_mocov2", {})]


def measured_ratios(plan: ResnetPlan) -> dict[str, float]:
    """The step-cost ratios to the MoCo v2 model of the models timed on exactly their setting (the file keeps
    the setting each ratio was timed on); the MoCo v2 model's is 1 by definition."""
    cost = _stored_cost()
    untimed = set(_untimed(plan, cost)) if cost else set(plan.models)
    out = {n: cost["ratio_to_mocov2"][n] for n in plan.models if n not in untimed}
    return {**out, plan.baseline: 1.0}


def time_steps(plan: ResnetPlan) -> None:
    """Time the steps of the models not timed yet on their setting (``benchmarks/cell_cost.py --table``, a few
    minutes, against the MoCo v2 model's) into ``zoo_cost_path()``. A model timed before keeps its ratio (a cut
    run resumes with the epochs it started with); a published model is not timed."""
    cost = _stored_cost()
    untimed = _untimed(plan, cost) if cost else list(plan.models)
    todo = [n for n in untimed if n != plan.baseline and not published(HUB_OUT / n)]
    if not todo:
        return
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    table, out = RUNS_DIR / "cost_table.json", RUNS_DIR / "cost.json"
    full = plan.table()
    table.write_text(json.dumps({n: full[n] for n in [plan.baseline, *todo]}, indent=2))
    cmd = [sys.executable, "benchmarks/cell_cost.py", "--threads", "2", "--table", str(table),
           "--baseline", plan.baseline, "--json", str(out)]  # fmt: skip
    print(f"[{time.strftime('%H:%M:%S')}] timing the steps of {', '.join(todo)} on their setting", flush=True)
    sh(cmd, RUNS_DIR / "cost.log")
    new = json.loads(out.read_text())
    # the ratios timed before stay when they are to the same MoCo v2 setting
    keep = cost if plan.baseline not in untimed else {}
    merged = {
        **{k: v for k, v in new.items() if k not in ("ratio_to_mocov2", "equal_time_epochs")},
        "ratio_to_mocov2": {**keep.get("ratio_to_mocov2", {}), **new["ratio_to_mocov2"]},
        "table": {**keep.get("table", {}), **{n: full[n] for n in new["ratio_to_mocov2"]}},
        "timings": [*keep.get("timings", []), {"date": time.strftime("%Y-%m-%d"), "models": todo,
                                                "median_step_s": new.get("median_step_s")}],
    }  # fmt: skip
    tmp = zoo_cost_path().with_suffix(".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    os.replace(tmp, zoo_cost_path())


def model_config(config: str, overrides: list[str]):
    """A model's resolved config, from this code's configs (ROOT may be another checkout)."""
    from xmoco_zoo.experiment import load_config

    return load_config(Path(__file__).resolve().parent.parent / config, overrides)


def batch_size(config: str, overrides: list[str]) -> int:
    """The batch size a model trains with (all processes together: the queue trains on one)."""
    return model_config(config, overrides).train.batch_size


def resnet_models() -> list[ZooModel]:
    """One model per family, for as many epochs as fit BUDGET: MoCo v2's minutes per epoch on the recipe search's
    run times the model's step-cost ratio, timed on its own setting (``time_steps``; until then, its comparison
    cell's ratio, an estimate)."""
    plan = resnet_plan()
    if plan is None:
        return []
    # a timed ratio is per step, and a step is one batch: a model on another batch size than the MoCo v2 model's
    # takes another number of steps an epoch (the comparison cells' ratios are at one batch size: per image)
    batch = {name: batch_size(config, overrides) for name, (_, config, overrides) in plan.models.items()}
    timed = {n: r * batch[plan.baseline] / batch[n] for n, r in measured_ratios(plan).items()}
    ratios = {**plan.cell_ratio, **timed}
    out = []
    for name, (family, config, overrides) in plan.models.items():
        epochs = max(1, int(BUDGET / (plan.minutes * ratios[name])))
        out.append(ZooModel(name, family, config, [*overrides, *_length(epochs)]))
    return out


def vit_model() -> list[ZooModel]:
    """MoCo v3 on the small ViT at its best held-out learning rate, once both ViT probes are done."""
    import recipe_search

    probes = [r for r in recipe_search.stage1() if r.cell == "vit"]
    recs = [recipe_search.load(r) for r in probes]
    if not probes or any(rec is None for rec in recs):
        return []
    best, rec = max(zip(probes, recs), key=lambda t: t[1]["knn"])
    minutes = recipe_search.per_epoch(rec, best.id) * TRAIN_IMAGES / PROBE_IMAGES
    lr = next(o for o in best.overrides if o.startswith("train.base_lr="))
    epochs = max(1, int(VIT_BUDGET / minutes))
    # the calibration step is a ResNet's; the ViT's own probe, timed on the reference machine, gives its speed
    ref = recipe_search.record_path(best)
    ref = str(ref.relative_to(ROOT)) if ref.is_relative_to(ROOT) else str(ref)
    return [
        ZooModel(
            "mocov3-vit-tiny-d6-p7-fmnist", "mocov3", best.config, [lr, *_length(epochs)], reference_run=ref
        )
    ]


# hub/'s size before the first training: a plan that cannot fit is refused before hours of training.
EXPORT_BYTES_PER_PARAM = 2  # publish_fmnist.sh exports float16 weights
FOLDER_MB = 0.5  # a folder's other files: the card, config.json, results/ and training_curves.png (~0.2 MB)


def export_mb(model: ZooModel) -> float:
    """The estimated size of ``model``'s published folder: its backbone's parameters (built on the meta device,
    no memory) in float16, and the other files."""
    import torch

    from xmoco_zoo.backbone import create_backbone

    cfg = model_config(model.config, model.overrides)
    with torch.device("meta"):
        backbone = create_backbone(cfg.model.backbone, **cfg.model.kwargs)
    return sum(p.numel() for p in backbone.parameters()) * EXPORT_BYTES_PER_PARAM / 1e6 + FOLDER_MB


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def check_hub_size(models: list[ZooModel], hub: Path) -> str | None:
    """Refuse (SystemExit) a zoo whose models alone would take hub/ past ``HUB_LIMIT_MB``; a warning when they fit
    only once older models are retired (None when everything fits)."""
    from xmoco_zoo.zoo import HUB_LIMIT_MB

    planned = {m.name: folder_mb(hub / m.name) if published(hub / m.name) else export_mb(m) for m in models}
    folders = sorted(hub.iterdir()) if hub.is_dir() else []
    others = {f.name: folder_mb(f) for f in folders if f.is_dir() and f.name not in planned}
    total = sum(planned.values())
    sizes = ", ".join(f"{n} {mb:.1f}" for n, mb in planned.items())
    if total > HUB_LIMIT_MB:
        raise SystemExit(
            f"zoo_queue: the zoo's models would take {total:.0f} MB of hub/ (limit {HUB_LIMIT_MB} MB; MB each: "
            f"{sizes}): train a smaller architecture (scripts/recipe_search.py's ARCHITECTURES) or fewer models"
        )
    if total + sum(others.values()) > HUB_LIMIT_MB:
        return (
            f"zoo_queue: the zoo's models take {total:.0f} MB; with {', '.join(others)} "
            f"({sum(others.values()):.0f} MB) hub/ would pass {HUB_LIMIT_MB} MB: retire them "
            "(`python scripts/zoo_queue.py retire`) once their successors are published"
        )
    return None


def zoo() -> list[ZooModel]:
    return resnet_models() + vit_model()


ZOO: list[ZooModel] | None = None  # tests set a fixed list; None: derived from the records (zoo())


def published(folder: Path) -> bool:
    """``folder`` is a complete published model: an export with every protocol's result, trained by this queue
    (into ``runs/zoo/<name>``): an older model of the same name is replaced, not taken for this one."""
    results = folder / "results"
    if not (folder / "config.json").is_file() or not all(any(results.glob(f"{p}_*.json")) for p in PROTOCOLS):
        return False
    meta = json.loads((folder / "config.json").read_text()).get("xmoco_zoo") or {}
    command = (meta.get("training") or {}).get("command") or ""
    return f"train.output_dir=runs/zoo/{folder.name}" in command


def deliver(model: ZooModel) -> Path:
    """Move the freshly published ``hub/<name>`` into ``HUB_OUT`` (atomically: a copy beside the target, then a
    rename) and leave this checkout clean; from the working tree itself, commit the folder and the index."""
    src = ROOT / "hub" / model.name
    dst = HUB_OUT / model.name
    if src.resolve() == dst.resolve():
        paths = [str(src.relative_to(ROOT)), *INDEX]
        subprocess.run(["git", "add", "--", *paths], cwd=ROOT, check=True)
        subprocess.run(
            ["git", "commit", "-q", "-m", f"Publish {model.name}", "--", *paths], cwd=ROOT, check=True
        )
        return dst
    tmp = HUB_OUT / f".tmp-{model.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    shutil.rmtree(src)
    subprocess.run(["git", "checkout", "-q", "--", *INDEX], cwd=ROOT, check=True)
    return dst


# The pages whose code loads a published model by name (docs/downstream.md's code runs in tests/test_docs.py): a
# model they name is not retired by the queue (the log says so); point them at its successor first, by hand.
USAGE_DOCS = ("README.md", "docs/downstream.md", "docs/data.md")


def named_in_usage_docs(repo: Path, name: str) -> list[str]:
    """The usage pages (outside the README's generated model table) that load ``name`` (``hub/NAME``,
    ``ORG/NAME``)."""
    from xmoco_zoo.zoo import BEGIN, END

    pattern = re.compile(rf"(?:hub|xmoco-zoo)/{re.escape(name)}(?![\w.-])")
    out = []
    for page in USAGE_DOCS:
        path = repo / page
        if not path.is_file():
            continue
        text = path.read_text()
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + text[text.index(END) :]
        if pattern.search(text):
            out.append(page)
    return out


def dominated(hub: Path) -> list[tuple[str, str, str]]:
    """The models in ``hub`` that a model this queue trained, of the same family, dominates (at least as good on
    both kNN and the linear probe): (retired, by, the numbers)."""
    from xmoco_zoo.zoo import index_rows

    rows = index_rows(hub)
    ours = [r for r in rows if published(hub / r.model)]
    out = []
    for old in rows:
        if old in ours or "knn" not in old.top1 or "linear" not in old.top1:
            continue
        for new in ours:
            if new.family == old.family and all(
                new.top1.get(p, -1.0) >= old.top1[p] for p in ("knn", "linear")
            ):
                numbers = (
                    f"kNN {new.top1['knn']:.2f} against {old.top1['knn']:.2f}, "
                    f"linear {new.top1['linear']:.2f} against {old.top1['linear']:.2f}"
                )
                out.append((old.model, new.model, numbers))
                break
    return out


def retire(hub: Path) -> list[tuple[str, str, str]]:
    """Remove from ``hub`` (a git working tree's) every dominated model, regenerate the index and commit each
    removal with its reason; the index stays honest."""
    repo = hub.parent
    done = []
    for old, new, numbers in dominated(hub):
        pages = named_in_usage_docs(repo, old)
        if pages:
            print(
                f"Not retiring {old} ({new} dominates it: {numbers}): {', '.join(pages)} load it by name; point "
                f"them at {new}, then run `python scripts/zoo_queue.py retire`",
                flush=True,
            )
            continue
        done.append((old, new, numbers))
        subprocess.run(["git", "rm", "-r", "-q", "--", f"hub/{old}"], cwd=repo, check=True)
        subprocess.run(["xmoco-zoo", "list", "--write"], cwd=repo, check=True, stdout=subprocess.DEVNULL)
        paths = [f"hub/{old}", *INDEX]
        subprocess.run(["git", "add", "--", *INDEX], cwd=repo, check=True)
        message = f"Retire {old}: {new} of the same family dominates it ({numbers})"
        subprocess.run(["git", "commit", "-q", "-m", message, "--", *paths], cwd=repo, check=True)
        print(message, flush=True)
    return done


def own_pace(model: ZooModel, out_dir: Path) -> dict:
    """Put the trained run's own speed into its pace file: its seconds per step against ``model.reference_run``'s
    (a run of the same setting on the reference machine); the export and the card take it from there."""
    from xmoco_zoo.pace import PACE_FILE, own_run, set_own_run
    from xmoco_zoo.results import machine

    summary = json.loads((out_dir / "summary.json").read_text())
    reference = json.loads((ROOT / model.reference_run).read_text())
    own = own_run(
        summary["train_minutes"],
        summary["steps"],
        reference,
        model.reference_run,
        machine(),
        time.strftime("%Y-%m-%d %H:%M"),
    )
    return set_own_run(out_dir / PACE_FILE, own)


def run_model(model: ZooModel, train_only: bool = False) -> Path | None:
    """Train (resuming a cut run), publish and deliver ``model``; with ``train_only``, only train it (None)."""
    out_dir = RUNS_DIR / model.name
    log = RUNS_DIR / f"{model.name}.log"
    if not (out_dir / "summary.json").is_file():
        resumed = any((out_dir / "checkpoints").glob("epoch_*"))
        # this machine's speed, at every start: the card puts the minutes on the reference machine's scale
        sh(pace_command(out_dir, resumed), log)
        sh(model.pretrain_command() + (["--resume"] if resumed else []), log)
    if model.reference_run:
        own_pace(model, out_dir)
    if train_only:
        return None
    if not published(ROOT / "hub" / model.name):
        sh(model.publish_command(), log)
    return deliver(model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["list", "run", "published", "retire"])
    ap.add_argument("name", nargs="?", help="published: the model folder's name")
    ap.add_argument("--only", default=None, help="a regular expression on model names")
    ap.add_argument(
        "--train-only",
        action="store_true",
        help="run: train (or resume) the models but publish none, leaving the tree as it is (e.g. at the end of a "
        "session whose commit has been checked); a later `run` publishes the trained ones",
    )
    args = ap.parse_args(argv)
    if args.command == "published":
        if not args.name:
            ap.error("published needs a model name")
        return 0 if published(HUB_OUT / args.name) else 1
    if args.command == "retire":
        retire(HUB_OUT)
        return 0
    if args.command == "run" and ZOO is None and (plan := resnet_plan()) is not None:
        try:
            time_steps(plan)
        except RunFailed as e:
            raise SystemExit(f"zoo_queue: timing the models' steps: {e}") from None
    every = zoo() if ZOO is None else ZOO
    if args.command == "run" and every and (warning := check_hub_size(every, HUB_OUT)):
        print(warning, flush=True)
    models = [m for m in every if not args.only or re.search(args.only, m.name)]
    if not models and args.command != "published":
        print(
            "zoo_queue: no model yet: the zoo is derived from the recipe search's records (its ResNet models"
            f" from the {BUDGET}-minute run, the ViT from its probes) and the method comparison's cells"
        )
    if args.command == "list":
        for m in models:
            print(f"{'done' if published(HUB_OUT / m.name) else 'todo':5s} {m.name:40s} {m.family}")
        return 0
    for m in models:
        if published(HUB_OUT / m.name):
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {m.name}: start", flush=True)
        try:
            dst = run_model(m, train_only=args.train_only)
        except RunFailed as e:
            raise SystemExit(f"zoo_queue: {m.name}: {e}") from None
        if dst is None:
            print(
                f"[{time.strftime('%H:%M:%S')}] {m.name}: trained, not published (--train-only)", flush=True
            )
            continue
        knn = json.loads(next((dst / "results").glob("knn_*.json")).read_text())["value"]
        print(f"[{time.strftime('%H:%M:%S')}] {m.name}: published, kNN {knn:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
