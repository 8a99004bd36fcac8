"""A CSV tracker for Accelerate (long format: step, key, value) and config flattening for trackers."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker, on_main_process


class CSVTracker(GeneralTracker):
    """Appends every logged value to ``<dir>/metrics.csv`` as ``step,key,value`` rows."""

    name = "csv"
    requires_logging_directory = False
    main_process_only = True

    # No @on_main_process here: it would create Accelerate's process state before the Accelerator does
    # (without cpu=True), and a CPU multi-process launch would then run as independent single processes.
    def __init__(self, run_name: str, logging_dir: str | Path) -> None:
        super().__init__()
        self.run_name = run_name
        self.path = Path(logging_dir) / "metrics.csv"

    @property
    def tracker(self):
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        pass  # the resolved config is written as config.yaml beside the checkpoints

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "key", "value"])
            for k, v in values.items():
                w.writerow([step, k, float(v)])


def restart_metrics(path: str | Path, resumed_step: int | None) -> str | None:
    """Make ``metrics.csv`` hold what the run that starts now continues, before it logs (main process only).

    ``resumed_step``: the step of the checkpoint a resumed run loaded. Rows logged after it (by the attempt that
    was stopped or killed before its next checkpoint) are dropped: the resumed run logs those steps again, and a
    series with two values per step draws as a zigzag. ``None``: a start from scratch; an earlier attempt's file
    in the same folder is moved aside to ``metrics.previous.csv`` (replacing an older one), not appended to.
    The rewrite is atomic. Returns what was done, for the log, or None when nothing had to be."""
    path = Path(path)
    if not path.is_file():
        return None
    if resumed_step is None:
        aside = path.with_name("metrics.previous.csv")
        path.replace(aside)
        return f"{path}: an earlier start's metrics moved to {aside.name} (this run starts from scratch)"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[:1], rows[1:]
    kept = [r for r in body if r and int(r[0]) <= resumed_step]
    if len(kept) == len(body):
        return None
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows(header + kept)
    tmp.replace(path)
    return f"{path}: dropped {len(body) - len(kept)} rows logged after step {resumed_step} (they are logged again)"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → flat ``a.b`` keys with scalar values (lists and dicts as strings), for trackers."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and prefix.count(".") < 1 and k != "kwargs":
            out.update(flatten(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv → {key: [(step, value), ...]}."""
    series: dict[str, list[tuple[int, float]]] = {}
    with Path(path).open() as f:
        for row in csv.DictReader(f):
            series.setdefault(row["key"], []).append((int(row["step"]), float(row["value"])))
    return series
