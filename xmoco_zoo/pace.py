"""How fast the machine that timed a result was, against the reference machine this project counts minutes on.

This project's minutes (the recipe search's budgets, the zoo's training minutes, the peer library's reference
curve) are measured on 2-core development machines that are not all alike: two machines that both call
themselves "AMD EPYC, 2 cores" trained the same full-width resnet10t epoch in 2.27 and 1.25 minutes. A minute
means something only beside its machine's speed, and two results' minutes compare only on one scale.

The speed is measured by ``benchmarks/machine_pace.py``, in about a minute: the median seconds of one MoCo v2
training step on the method comparison's setting (half-width resnet10t, 28 px, batch 256, 2 threads, the batch's
loading included: ``benchmarks/cell_cost.py``'s mocov2 cell), against the same measurement on the reference
machine (:data:`REFERENCE_STEP_S`)::

    speed = reference step / this machine's step        (> 1: faster than the reference machine)
    reference minutes = measured minutes x speed        (about what the run would have taken there)

A run folder's ``machine_pace.json`` holds one measurement per start of its training (a run cut and resumed on
another machine has one for each; a start from scratch drops the measurements of earlier starts cut before their
first checkpoint, ``--fresh``); ``xmoco-zoo export`` copies it into ``config.json``
(``xmoco_zoo.training.machine_pace``), and the zoo's index, plot and time-to-accuracy comparison put minutes on
the reference machine's scale with its ``speed``, the median of the measurements. A reference curve (another
library's, :func:`xmoco_zoo.zoo.read_reference_curve`) carries the same ``machine_pace`` object.

One step of one model is a calibration, not a law: a machine can be faster on one network than on another. The
pace file keeps each median step and its machine, so that the scale can be checked against a run's own pace. And
where a run of the same setting was made on the reference machine (a queue record with its epochs' minutes and
steps), the run's own pace replaces the calibration: ``own_run`` in the pace object, the run's seconds per
training step against that record's, whose ``speed`` is then the pace's. It matters: the MoCo v3 ViT of
2026-12-06 ran its steps near the reference machine's pace (1.30 s against 1.51 over its whole run, a speed of
1.16) on a machine whose ResNet calibration read 1.87 to 2.15.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from .errors import UserError

PACE_FILE = "machine_pace.json"  # in a run folder: benchmarks/machine_pace.py --json RUN/machine_pace.json
# The reference machine's MoCo v2 step on the comparison's setting: benchmarks/cell_cost.py's mocov2 median,
# 12 rounds of 5 steps with the batch's loading, on the development machine of 2026-12-02..05 ("AMD EPYC",
# 2 threads, torch 2.14.1), where the method comparison and the recipe search ran
# (docs/results/methods_fmnist/cell_cost.json).
REFERENCE_STEP_S = 0.2658
REFERENCE_MACHINE = "the development machine of 2026-12-02 to 2026-12-05 (AMD EPYC, 2 threads, torch 2.14.1)"


class PaceError(UserError):
    """A machine-pace file that cannot be read."""


def measurement(step_s: float, machine: str, date: str) -> dict[str, Any]:
    """One measurement: this machine's median MoCo v2 step and its speed against the reference machine."""
    if not step_s > 0:
        raise PaceError(f"a measured step must take a positive time, got {step_s!r}")
    return {
        "date": date,
        "machine": machine,
        "median_step_s": round(step_s, 5),
        "reference_step_s": REFERENCE_STEP_S,
        "speed": round(REFERENCE_STEP_S / step_s, 4),
    }


def own_run(
    minutes: float, steps: int, reference: dict[str, Any], reference_path: str, machine: str, date: str
) -> dict[str, Any]:
    """A run's own pace: its seconds per training step (``minutes`` of training epochs over ``steps``) against a
    run of the same setting timed the same way (``reference``: a queue record with ``train_minutes`` and
    ``steps``, made on the reference machine, or carrying its own machine's ``machine_pace``)."""
    ref_minutes, ref_steps = reference.get("train_minutes"), reference.get("steps")
    if not (ref_minutes and ref_steps and minutes > 0 and steps > 0):
        raise PaceError(
            f"{reference_path}: a reference run needs its epochs' minutes and steps (train_minutes, steps), and "
            f"the run its own (got {minutes!r} minutes over {steps!r} steps)"
        )
    ref_step_s = reference_minutes(reference, reference_path) * 60 / ref_steps  # on the reference machine
    step_s = minutes * 60 / steps
    return {
        "date": date,
        "machine": machine,
        "step_s": round(step_s, 4),
        "reference_step_s": round(ref_step_s, 4),
        "reference_run": reference_path,
        "speed": round(ref_step_s / step_s, 4),
    }


def summarize(measurements: list[dict[str, Any]], own: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pace object stored in a run folder and in ``config.json``: the calibration measurements and their median
    speed, or, with ``own`` (:func:`own_run`), the run's own speed (the calibration's median kept beside it)."""
    if not measurements and own is None:
        raise PaceError("a machine pace needs at least one measurement")
    calibrated = (
        round(statistics.median(float(m["speed"]) for m in measurements), 4) if measurements else None
    )
    pace: dict[str, Any] = {
        "speed": float(own["speed"]) if own is not None else calibrated,
        "reference": REFERENCE_MACHINE,
        "measurements": measurements,
    }
    if own is not None:
        pace["own_run"] = own
        pace["calibration_speed"] = calibrated
    return pace


def _write(path: Path, pace: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(pace, indent=2) + "\n")
    os.replace(tmp, path)


def set_own_run(path: str | Path, own: dict[str, Any]) -> dict[str, Any]:
    """Put a run's own pace (:func:`own_run`) into its pace file (created if missing), atomically, keeping the
    calibration measurements; the updated pace."""
    path = Path(path)
    old = read_pace(path)
    pace = summarize(old["measurements"] if old else [], own)
    _write(path, pace)
    return pace


def reference_minutes(rec: dict[str, Any], where: str | None = None) -> float | None:
    """A queue record's training minutes on the reference machine's scale: ``train_minutes`` times its machine's
    speed (None without ``train_minutes``). A record without a ``machine_pace`` was made on the reference machine
    itself (every run before 2026-12-06)."""
    minutes = rec.get("train_minutes")
    if minutes is None:
        return None
    where = where or f"record {rec.get('id')}"
    return minutes * (speed_of(rec.get("machine_pace"), f"{where}: machine_pace") or 1.0)


def speed_of(pace: Any, where: str = "machine_pace") -> float | None:
    """The speed of a pace object (None when there is none); a malformed one is a PaceError naming ``where``."""
    if pace is None:
        return None
    speed = pace.get("speed") if isinstance(pace, dict) else None
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed > 0:
        raise PaceError(
            f"{where}: a machine pace is an object with a positive 'speed' (benchmarks/machine_pace.py writes "
            f"it), got {pace!r}"
        )
    return float(speed)


def read_pace(path: str | Path) -> dict[str, Any] | None:
    """A run folder's pace file (``RUN/machine_pace.json``, or the file itself); None when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / PACE_FILE
    if not path.is_file():
        return None
    try:
        pace = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PaceError(f"{path}: not valid JSON ({e}); measure again with benchmarks/machine_pace.py") from e
    speed_of(pace, str(path))
    return pace


def add_measurement(path: str | Path, m: dict[str, Any], fresh: bool = False) -> dict[str, Any]:
    """Append one measurement to a pace file (created if missing), atomically; the updated pace. ``fresh``: the
    training it precedes starts from scratch, so earlier measurements (of starts cut before their first
    checkpoint) describe none of it and are dropped."""
    path = Path(path)
    old = None if fresh else read_pace(path)
    pace = summarize([*(old["measurements"] if old else []), m], old.get("own_run") if old else None)
    _write(path, pace)
    return pace
