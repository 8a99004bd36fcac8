"""A resumable queue of pretraining runs, each ending in a JSON record: the machinery that the method comparison
(``scripts/compare_methods.py``) and the recipe search (``scripts/recipe_search.py``) share.

A run is one pretraining (``recipes/pretrain.py``, 1 process, 2 threads) followed, for a run that reports a
linear probe, by the linear probe of its export (``recipes/linear_eval.py``, fast mode, no baselines). A run is
done when its record exists: the queue skips it. An interrupted pretraining resumes from its newest checkpoint
(``--resume``), so a cut session loses at most one epoch of one run. The queue is rebuilt after every run, so
that finished runs can add the runs they choose.

Two kinds of run: ``val`` (hyperparameter choice: ``data.holdout=10000`` pretrains on 50k train images and scores
on the 10k held out of train, never the test set) and ``test`` (trained on the 60k train images, scored on the
10k test images).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xmoco_zoo.pace import PACE_FILE, read_pace
from xmoco_zoo.results import cpu_name, git_commit

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = [
    "accelerate", "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
    "--dynamo_backend", "no", "--num_cpu_threads_per_process", "2",
]  # fmt: skip
HOLDOUT = 10000
LINEAR_CONFIG = "recipes/configs/eval/linear_fmnist.yaml"


@dataclass
class Run:
    id: str
    cell: str  # the table row this run belongs to
    config: str
    overrides: list[str] = field(default_factory=list)
    seed: int = 0
    kind: str = "test"  # test | val
    budget: str = "epochs"  # what the run's length is matched on: epochs | time (equal training wall-clock)
    setting: str = ""  # what a held-out probe varies (the report's label)
    linear: bool | None = None  # run the linear probe after pretraining (None: for test runs only)

    def _holdout(self) -> list[str]:
        return [f"data.holdout={HOLDOUT}"] if self.kind == "val" else []

    def pretrain_command(self, out_dir: Path) -> list[str]:
        return [
            *LAUNCH, "recipes/pretrain.py", "--config", self.config, *self.overrides, *self._holdout(),
            f"train.seed={self.seed}", f"train.output_dir={out_dir.relative_to(ROOT)}",
        ]  # fmt: skip

    def linear_command(self, out_dir: Path) -> list[str]:
        return [
            *LAUNCH, "recipes/linear_eval.py", "--config", LINEAR_CONFIG,
            f"model.spec=local-dir:{(out_dir / 'backbone').relative_to(ROOT)}", "linear.baselines=false",
            *self._holdout(), f"run.output_dir={(out_dir / 'linear').relative_to(ROOT)}",
        ]  # fmt: skip

    @property
    def wants_linear(self) -> bool:
        return self.kind == "test" if self.linear is None else self.linear


class RunFailed(RuntimeError):
    """A command of a run failed: a NaN loss is a result (the run diverged), anything else stops the queue."""

    def __init__(self, message: str, rc: int) -> None:
        super().__init__(message)
        self.rc = rc


def sh(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` from the repo root, appending its output to ``log``; the wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # Passive OpenMP waits: with other work on the 2 cores, spinning threads wait for a descheduled peer at every
    # parallel region (20 s a step instead of 0.2 s measured here); the wait policy does not change any number.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    t0 = time.time()
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc:
        raise RunFailed(f"exit status {rc}, see {log.relative_to(ROOT)}: {' '.join(cmd)}", rc)
    return time.time() - t0


def machine() -> str:
    """The CPU's model name and core count (records of runs made on different machines say so)."""
    return f"{cpu_name()}, {os.cpu_count()} cores"


def knn_curve(log: str) -> list[float]:
    """The kNN monitor after each epoch, from the run's log (a resumed epoch's last line wins)."""
    curve: dict[int, float] = {}
    for m in re.finditer(r"epoch (\d+): kNN top-1 ([\d.]+)%", log):
        curve[int(m.group(1))] = float(m.group(2))
    return [curve[e] for e in sorted(curve)]


def pace_command(out_dir: Path, resumed: bool) -> list[str]:
    """benchmarks/machine_pace.py (about a minute), appending to the run folder's pace file; for a training that
    starts from scratch (not ``resumed``), replacing the measurements of earlier starts that left no checkpoint."""
    cmd = [sys.executable, "benchmarks/machine_pace.py", "--threads", "2", "--json", str(out_dir / PACE_FILE)]
    return cmd + ([] if resumed else ["--fresh"])


def execute(run: Run, runs_dir: Path) -> dict:
    """Pretrain (resuming a cut run) and, if the run wants it, linear-probe ``run``; its record."""
    out_dir = runs_dir / run.id
    log = out_dir.parent / f"{run.id}.log"
    pre = run.pretrain_command(out_dir)
    resumed = (out_dir / "checkpoints").is_dir() and any((out_dir / "checkpoints").glob("epoch_*"))
    if not (out_dir / "summary.json").is_file():
        # this machine's speed at every start (xmoco_zoo/pace.py): the record's minutes on the reference scale
        sh(pace_command(out_dir, resumed), log)
        seconds = sh(pre + (["--resume"] if resumed else []), log)
    else:
        seconds = None
    summary = json.loads((out_dir / "summary.json").read_text())
    rec = {
        "id": run.id,
        "cell": run.cell,
        "kind": run.kind,
        "budget": run.budget,
        "seed": run.seed,
        "epochs": summary["epochs_done"],
        "steps": summary["steps"],
        "knn": summary["knn_top1"],
        "knn_split": "val (10k held out of train)" if run.kind == "val" else "test",
        "knn_init": summary["knn_init"],
        "pretrain_seconds": seconds,
        "train_minutes": summary.get("train_minutes"),  # the epochs alone (no start-up, kNN or checkpoints)
        "resumed": resumed,
        "pretrain_command": " ".join(pre),
        "commit": git_commit(ROOT),
        "machine": machine(),
        "knn_curve": knn_curve(log.read_text()),
    }
    if (pace := read_pace(out_dir)) is not None:
        rec["machine_pace"] = pace
    if run.setting:
        rec["setting"] = run.setting
    if run.wants_linear:
        sh(run.linear_command(out_dir), log)
        lin = json.loads((out_dir / "linear" / "summary.json").read_text())
        rec["linear"] = lin["top1"]
        rec["linear_command"] = " ".join(run.linear_command(out_dir))
    return rec


def cmd_list(runs: list[Run], record_path: Callable[[Run], Path]) -> None:
    for r in runs:
        p = record_path(r)
        state = "done" if p.is_file() else "todo"
        extra = ""
        if p.is_file():
            d = json.loads(p.read_text())
            extra = "diverged" if "diverged" in d else f"kNN {d['knn']:.2f}"
            extra += f"  linear {d['linear']:.2f}" if "linear" in d else ""
        print(f"{state:5s} {r.id:32s} {extra}")


def cmd_run(
    queue: Callable[[], list[Run]], record_path: Callable[[Run], Path], runs_dir: Path, only: str | None
) -> None:
    """Run every run of ``queue()`` without a record, in order, rebuilding the queue after each one."""
    done: set[str] = set()
    while True:  # the queue is rebuilt after every run: finished probes add the runs they choose
        todo = [
            r for r in queue()
            if (not only or re.search(only, r.id)) and not record_path(r).is_file() and r.id not in done
        ]  # fmt: skip
        if not todo:
            return
        r = todo[0]
        done.add(r.id)
        p = record_path(r)
        print(f"[{time.strftime('%H:%M:%S')}] {r.id}: start", flush=True)
        try:
            rec = execute(r, runs_dir)
        except RunFailed as e:
            log = (runs_dir / f"{r.id}.log").read_text()
            if "NonFiniteLossError" not in log:
                raise SystemExit(str(e)) from None
            line = next(x for x in reversed(log.splitlines()) if "NonFiniteLossError" in x)
            rec = {
                "id": r.id,
                "cell": r.cell,
                "kind": r.kind,
                "seed": r.seed,
                "diverged": line.strip(),
                "pretrain_command": " ".join(r.pretrain_command(runs_dir / r.id)),
                "commit": git_commit(ROOT),
            }
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=2) + "\n")
        os.replace(tmp, p)
        result = f"diverged: {rec['diverged']}" if "diverged" in rec else f"kNN {rec['knn']:.2f}"
        print(
            f"[{time.strftime('%H:%M:%S')}] {r.id}: {result}"
            + (f", linear {rec['linear']:.2f}" if "linear" in rec else ""),
            flush=True,
        )
