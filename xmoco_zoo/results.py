"""Evaluation results stored beside a model: one JSON file per (protocol, dataset, split).

A model folder (an export, a published ``hub/`` repo, or a training checkpoint) keeps its measured
results in ``results/<protocol>_<dataset>_<split>.json``. The model card reads only these files: a number
that is not in one of them is never shown, and a model without any is "not evaluated".

Schema (``SCHEMA_VERSION`` 1), every field required unless marked optional:

- ``metric`` (str, e.g. ``top1``), ``value`` (float, percent for accuracies), ``unit`` (``%``)
- ``protocol`` (``knn`` | ``linear`` | ``finetune`` | ``semisup_1pct`` | ...), ``protocol_args`` (dict,
  e.g. ``{"k": 200, "t": 0.1, "bank": 60000, "queries": 10000}``)
- ``dataset`` (e.g. ``fashion_mnist``), ``split`` (e.g. ``test``)
- ``command`` (the command that produced it), ``commit`` (git commit of xmoco-zoo, or null),
  ``date`` (ISO 8601, UTC)
- optional: ``config`` (the evaluation config), ``baselines`` (name → value, same protocol, e.g. the
  raw-pixel floor and the random-init architecture), ``model`` (what was evaluated), ``notes``
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import UserError

SCHEMA_VERSION = 1
RESULTS_DIR = "results"

# Hugging Face dataset ids, for the model card's front matter.
HF_DATASET_IDS = {
    "fashion_mnist": "zalando-datasets/fashion_mnist",
    "imagenet": "ILSVRC/imagenet-1k",
    "imagefolder": None,
    "synthetic": None,
}
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "imagenet": "ImageNet-1k", "synthetic": "synthetic"}
PROTOCOL_NAMES = {
    "knn": "weighted kNN on frozen features",
    "linear": "linear probe on frozen features",
    "finetune": "full fine-tuning",
    "semisup_1pct": "fine-tuning on 1 % of the labels",
    "semisup_10pct": "fine-tuning on 10 % of the labels",
}


class ResultsError(UserError, ValueError):
    """A results file that does not follow the schema (hand-edited, or from another version)."""


@dataclass
class EvalRecord:
    metric: str
    value: float
    protocol: str
    dataset: str
    split: str
    command: str
    protocol_args: dict[str, Any] = field(default_factory=dict)
    unit: str = "%"
    commit: str | None = None
    date: str = ""
    config: dict[str, Any] | None = None
    baselines: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    notes: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.date:
            self.date = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        if self.commit is None:
            self.commit = git_commit()
        validate_record(asdict(self), "EvalRecord")

    @property
    def filename(self) -> str:
        return f"{self.protocol}_{self.dataset}_{self.split}.json"

    def protocol_text(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.protocol_args.items())
        name = PROTOCOL_NAMES.get(self.protocol, self.protocol)
        return f"{name} ({args})" if args else name


_REQUIRED = {
    "metric": str,
    "value": (int, float),
    "protocol": str,
    "dataset": str,
    "split": str,
    "command": str,
    "protocol_args": dict,
    "unit": str,
    "date": str,
    "schema_version": int,
}
_OPTIONAL = {
    "commit": (str, type(None)),
    "config": (dict, type(None)),
    "baselines": dict,
    "model": (str, type(None)),
    "notes": (str, type(None)),
}


def validate_record(d: dict[str, Any], where: str) -> None:
    """Check a results dict against the schema; the error names the file and the field."""
    if not isinstance(d, dict):
        raise ResultsError(f"{where}: a result must be a JSON object, got {type(d).__name__}")
    for key, typ in _REQUIRED.items():
        if key not in d:
            raise ResultsError(f"{where}: missing field {key!r} (required: {sorted(_REQUIRED)})")
        if not isinstance(d[key], typ) or isinstance(d[key], bool):
            raise ResultsError(f"{where}: field {key!r} has type {type(d[key]).__name__}")
    unknown = set(d) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise ResultsError(
            f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted({**_REQUIRED, **_OPTIONAL})}"
        )
    for key, typ in _OPTIONAL.items():
        if key in d and not isinstance(d[key], typ):
            raise ResultsError(f"{where}: field {key!r} has type {type(d[key]).__name__}")
    if d["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(
            f"{where}: schema_version {d['schema_version']}, this xmoco-zoo reads {SCHEMA_VERSION}"
        )
    for name, v in d.get("baselines", {}).items():
        if not isinstance(v, (int, float)):
            raise ResultsError(f"{where}: baseline {name!r} is not a number")


def write_result(folder: str | Path, record: EvalRecord) -> Path:
    """Write ``record`` to ``folder/results/<protocol>_<dataset>_<split>.json`` atomically (replacing)."""
    out = Path(folder) / RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / record.filename
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_results(folder: str | Path) -> list[EvalRecord]:
    """Every result stored in ``folder/results/``, validated, sorted by protocol, dataset, split."""
    found = []
    for path in sorted((Path(folder) / RESULTS_DIR).glob("*.json")):
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path}: not valid JSON ({e}); fix or delete the file") from e
        validate_record(d, str(path))
        found.append(EvalRecord(**d))
    return sorted(found, key=lambda r: (r.protocol, r.dataset, r.split))


def git_commit(root: str | Path | None = None) -> str | None:
    """The xmoco-zoo source commit (with ``+dirty`` when the tree has changes outside ``hub/``), or None outside a
    git checkout. ``root``: the checkout to read, by default the one this package is imported from."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        # hub/ holds published models (weights and results, outputs): a model re-published under its name
        # rewrites its tracked files there, which leaves the code as committed
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)hub",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows, e.g. ``AMD EPYC``."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str | None = None) -> str:
    """What trained or measured: the GPU's name (with the process count added by the caller) or the CPU's, its
    threads, and torch's version, e.g. ``AMD EPYC, 2 threads, torch 2.14.1``."""
    import torch

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        what = torch.cuda.get_device_name(torch.device(device))
    else:
        what = f"{cpu_name()}, {torch.get_num_threads()} threads"
    return f"{what}, torch {torch.__version__.split('+')[0]}"


def training_command(command: str | None) -> str | None:
    """A pretraining command as a user would type it to train the same model: without ``--resume`` or
    ``--resume-from DIR`` (a resumed run trains exactly what an uninterrupted one does, and the flag fails in a
    folder without a checkpoint)."""
    if not command:
        return command
    try:
        words = shlex.split(command)
    except ValueError:  # not a shell command line: leave it as recorded
        return command
    kept, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w == "--resume" or w.startswith("--resume-from="):
            continue
        elif w == "--resume-from":
            skip = True
        else:
            kept.append(w)
    return shlex.join(kept) if len(kept) < len(words) else command


def current_command() -> str:
    """The command line of this process, as a user would type it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("/xmoco-zoo", "xmoco_zoo/cli.py")):
        return shlex.join(["xmoco-zoo", *argv[1:]])
    if argv and argv[0].endswith(".py"):
        if "ACCELERATE_MIXED_PRECISION" in os.environ:  # started by `accelerate launch`
            n = os.environ.get("WORLD_SIZE", "1")
            return shlex.join(["accelerate", "launch", "--num_processes", n, *argv])
        return shlex.join(["python", *argv])
    return shlex.join(argv)
