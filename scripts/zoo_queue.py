#!/usr/bin/env python3
"""The zoo's trainings as one resumable queue: train each published model, publish it, deliver it to hub/.

    python scripts/zoo_queue.py list                 # every model, and which are published
    python scripts/zoo_queue.py run [--only REGEX]   # train and publish what is not published yet, in order
    python scripts/zoo_queue.py published NAME       # exit 0 when hub/NAME is complete (queue.sh's commit loop)

A model is one pretraining on the 60k Fashion-MNIST train images (``recipes/pretrain.py``, 1 process, 2 threads,
``runs/zoo/<name>``; a cut run resumes from its newest checkpoint) followed by ``scripts/publish_fmnist.sh``:
the export (float16 weights), kNN, linear probe, fine-tuning and 10 % labels, each beside its baselines, and the
card. A model is done when ``<hub>/<name>/`` holds all four results: the queue skips it.

``publish_fmnist.sh`` refuses a dirty tree (a card names the commit its numbers come from), so the queue runs from
a pinned clean checkout (``bash scripts/dev/queue.sh start zoo``) and delivers each published folder into
``XMOCO_HUB_OUT`` (the working tree's ``hub/``; ``queue.sh commit-records`` commits it there with the regenerated
index), then restores the checkout's own index files so that it stays clean for the next model. Run from the
working tree itself (no ``XMOCO_HUB_OUT``), it commits each published folder and the index itself.

The models: each method family's configuration at the choices of the method comparison
(docs/results/methods_fmnist.md) and the recipe of the recipe search (docs/results/recipe_search.md), sized to
at most ~90 minutes of training on this machine (the ViT up to ~2 hours).
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
from run_queue import LAUNCH, RunFailed, sh  # noqa: E402

HUB_OUT = Path(os.environ.get("XMOCO_HUB_OUT", ROOT / "hub"))
RUNS_DIR = ROOT / "runs" / "zoo"
# The protocols every published card reports (results/<protocol>_*.json, written by publish_fmnist.sh).
PROTOCOLS = ("knn", "linear", "finetune", "semisup")
INDEX = ("README.md", "hub/results.csv")  # what `xmoco-zoo list --write` rewrites


@dataclass
class ZooModel:
    name: str  # hub/<name>, and the Hub repo's name
    family: str  # the method family (the index's column)
    config: str
    overrides: list[str] = field(default_factory=list)
    seed: int = 0

    def pretrain_command(self) -> list[str]:
        out = (RUNS_DIR / self.name).relative_to(ROOT)
        return [
            *LAUNCH, "recipes/pretrain.py", "--config", self.config, *self.overrides,
            f"train.seed={self.seed}", f"train.output_dir={out}",
        ]  # fmt: skip

    def publish_command(self) -> list[str]:
        return ["bash", "scripts/publish_fmnist.sh", str((RUNS_DIR / self.name).relative_to(ROOT)), self.name]


# Filled in from the recipe search's budget table and the method comparison's choices (issue 15): one entry per
# published model, in training order.
ZOO: list[ZooModel] = []


def published(folder: Path) -> bool:
    """``folder`` is a complete published model: an export with every protocol's result."""
    results = folder / "results"
    return (folder / "config.json").is_file() and all(any(results.glob(f"{p}_*.json")) for p in PROTOCOLS)


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


def run_model(model: ZooModel) -> Path:
    """Train (resuming a cut run), publish and deliver ``model``."""
    out_dir = RUNS_DIR / model.name
    log = RUNS_DIR / f"{model.name}.log"
    if not (out_dir / "summary.json").is_file():
        resumed = any((out_dir / "checkpoints").glob("epoch_*"))
        sh(model.pretrain_command() + (["--resume"] if resumed else []), log)
    if not published(ROOT / "hub" / model.name):
        sh(model.publish_command(), log)
    return deliver(model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["list", "run", "published"])
    ap.add_argument("name", nargs="?", help="published: the model folder's name")
    ap.add_argument("--only", default=None, help="a regular expression on model names")
    args = ap.parse_args(argv)
    if args.command == "published":
        if not args.name:
            ap.error("published needs a model name")
        return 0 if published(HUB_OUT / args.name) else 1
    models = [m for m in ZOO if not args.only or re.search(args.only, m.name)]
    if args.command == "list":
        for m in models:
            print(f"{'done' if published(HUB_OUT / m.name) else 'todo':5s} {m.name:40s} {m.family}")
        return 0
    for m in models:
        if published(HUB_OUT / m.name):
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {m.name}: start", flush=True)
        try:
            dst = run_model(m)
        except RunFailed as e:
            raise SystemExit(f"zoo_queue: {m.name}: {e}") from None
        knn = json.loads(next((dst / "results").glob("knn_*.json")).read_text())["value"]
        print(f"[{time.strftime('%H:%M:%S')}] {m.name}: published, kNN {knn:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
