"""The machine's speed against the reference machine (xmoco_zoo/pace.py): its file, its measurement, its way into a
model's config.json, and the zoo's minutes on one scale."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from xmoco_zoo.errors import UserError
from xmoco_zoo.export import export_checkpoint
from xmoco_zoo.pace import (
    PACE_FILE,
    REFERENCE_STEP_S,
    PaceError,
    add_measurement,
    measurement,
    own_run,
    read_pace,
    reference_minutes,
    set_own_run,
    speed_of,
)
from xmoco_zoo.zoo import (
    AS_MEASURED,
    MEASURED_SCALE,
    REFERENCE_SCALE,
    ReferenceCurve,
    compare_with_reference,
    index_rows,
    on_one_scale,
    read_reference_curve,
    results_csv,
)

from .conftest import ROOT, TINY
from .test_export import run  # noqa: F401  (the tiny training run fixture)
from .test_zoo import make_model


def test_speed_is_the_reference_step_over_this_machines_step():
    fast = measurement(REFERENCE_STEP_S / 2, "CPU", "2026-12-06")
    assert fast["speed"] == 2.0 and fast["median_step_s"] == pytest.approx(REFERENCE_STEP_S / 2, abs=1e-5)
    assert measurement(REFERENCE_STEP_S * 4, "CPU", "d")["speed"] == 0.25
    with pytest.raises(PaceError, match="positive"):
        measurement(0.0, "CPU", "d")


def test_a_pace_file_appends_one_measurement_per_start_and_keeps_their_median(tmp_path):
    path = tmp_path / "run" / PACE_FILE
    assert read_pace(tmp_path / "run") is None, "no file: no pace"
    add_measurement(path, measurement(REFERENCE_STEP_S / 2, "fast", "d1"))
    add_measurement(path, measurement(REFERENCE_STEP_S, "reference-like", "d2"))
    pace = add_measurement(path, measurement(REFERENCE_STEP_S / 1.5, "mid", "d3"))
    assert [m["machine"] for m in pace["measurements"]] == ["fast", "reference-like", "mid"]
    assert pace["speed"] == 1.5 and read_pace(path.parent) == pace and not list(path.parent.glob("*.tmp"))


def test_a_fresh_start_drops_the_measurements_of_starts_that_left_no_checkpoint(tmp_path):
    path = tmp_path / "run" / PACE_FILE
    add_measurement(
        path, measurement(REFERENCE_STEP_S / 1.6, "busy", "d1")
    )  # a start cut before any checkpoint
    pace = add_measurement(path, measurement(REFERENCE_STEP_S / 2, "quiet", "d2"), fresh=True)
    assert [m["machine"] for m in pace["measurements"]] == ["quiet"] and pace["speed"] == 2.0
    pace = add_measurement(path, measurement(REFERENCE_STEP_S / 1.8, "resume", "d3"))
    assert [m["machine"] for m in pace["measurements"]] == ["quiet", "resume"] and pace["speed"] == 1.9


@pytest.mark.parametrize("bad", [{"speed": 0}, {"speed": "fast"}, {"speed": True}, [1.5], {}])
def test_a_malformed_pace_is_an_error_naming_the_file_and_the_fix(tmp_path, bad):
    assert isinstance(PaceError("x"), UserError)
    path = tmp_path / PACE_FILE
    path.write_text(json.dumps(bad))
    with pytest.raises(PaceError, match=rf"{PACE_FILE}.*positive 'speed'.*machine_pace.py"):
        read_pace(path)
    path.write_text("{not json")
    with pytest.raises(PaceError, match="not valid JSON.*machine_pace.py"):
        read_pace(path)
    assert speed_of(None) is None


def test_the_benchmark_times_the_comparisons_mocov2_step_and_appends_it(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cell_cost
    import machine_pace

    monkeypatch.setattr(
        cell_cost, "cells", lambda: {"mocov2": ("recipes/configs/mocov2_fmnist.yaml", list(TINY))}
    )
    out = tmp_path / PACE_FILE
    args = ["--threads", "1", "--rounds", "2", "--warmup", "0", "--steps", "1", "--json", str(out)]
    m = machine_pace.main(args)
    assert m["median_step_s"] > 0 and m["speed"] == pytest.approx(
        REFERENCE_STEP_S / m["median_step_s"], rel=1e-3
    )
    machine_pace.main(args)
    assert len(read_pace(out)["measurements"]) == 2
    machine_pace.main([*args, "--fresh"])
    assert len(read_pace(out)["measurements"]) == 1, "--fresh: a training from scratch keeps only its own"


def test_the_benchmark_restarts_without_the_queues_omp_wait_policy():
    """The reference step was timed with OpenMP's default wait policy; the queues' PASSIVE made it 1.6x slower."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import machine_pace

    calls = []
    machine_pace.restart_with_default_omp_policy(
        {"OMP_WAIT_POLICY": "PASSIVE", "A": "1"}, lambda *a: calls.append(a)
    )
    [(exe, argv, env)] = calls
    assert exe == sys.executable and argv[0] == sys.executable and env == {"A": "1"}
    machine_pace.restart_with_default_omp_policy({"A": "1"}, lambda *a: calls.append(a))
    assert len(calls) == 1, "without the variable it runs on"


def test_the_export_carries_the_run_folders_pace_into_config_json(run, tmp_path):  # noqa: F811
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    plain = export_checkpoint(copy, tmp_path / "plain")
    assert "machine_pace" not in json.loads((plain / "config.json").read_text())["xmoco_zoo"]["training"]
    pace = add_measurement(copy / PACE_FILE, measurement(REFERENCE_STEP_S / 1.8, "CPU", "d"))
    out = export_checkpoint(copy, tmp_path / "paced")
    training = json.loads((out / "config.json").read_text())["xmoco_zoo"]["training"]
    assert training["machine_pace"] == pace
    card = (out / "README.md").read_text()
    minutes = training["train_minutes"]
    assert f"machine speed 1.80: about {minutes * 1.8:.0f} min on the reference machine" in card


def test_a_runs_own_steps_against_a_reference_run_of_its_setting_replace_the_calibration(run, tmp_path):  # noqa: F811
    """The ResNet step calibration does not carry to every network (the ViT of 2026-12-06 ran at the reference
    machine's pace where the calibration read 2.15): where a run of the same setting was timed on the reference
    machine, the run's own seconds per step against it are the speed the export and the card use."""
    # the reference record: 585 steps in 14.72 minutes on the reference machine (no machine_pace), 1.5097 s a step
    ref = {"train_minutes": 14.72, "steps": 585}
    own = own_run(110.0, 4680, ref, "docs/results/recipe_search/runs/v.json", "CPU", "d")
    assert own["reference_step_s"] == pytest.approx(1.5097, abs=1e-4)
    assert own["step_s"] == pytest.approx(110.0 * 60 / 4680, abs=1e-4)
    assert own["speed"] == pytest.approx(1.5097 / (110.0 * 60 / 4680), abs=1e-3)
    # a reference record made on another machine counts its minutes on the reference machine's scale
    faster = own_run(110.0, 4680, {**ref, "machine_pace": {"speed": 2.0}}, "r.json", "CPU", "d")
    assert faster["speed"] == pytest.approx(2 * own["speed"], abs=1e-3)
    for bad in ({"steps": 585}, {"train_minutes": 14.72, "steps": 0}):
        with pytest.raises(PaceError, match="train_minutes, steps"):
            own_run(110.0, 4680, bad, "r.json", "CPU", "d")

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    add_measurement(copy / PACE_FILE, measurement(REFERENCE_STEP_S / 2.15, "CPU", "d"))
    pace = set_own_run(copy / PACE_FILE, own)
    assert pace["speed"] == own["speed"] and pace["calibration_speed"] == 2.15
    assert len(pace["measurements"]) == 1 and read_pace(copy) == pace
    # a resumed start adds a calibration and keeps the own pace; a start from scratch drops both
    again = add_measurement(copy / PACE_FILE, measurement(REFERENCE_STEP_S / 2.0, "CPU", "d"))
    assert again["speed"] == own["speed"] and again["calibration_speed"] == pytest.approx(2.075)
    out = export_checkpoint(copy, tmp_path / "paced")
    training = json.loads((out / "config.json").read_text())["xmoco_zoo"]["training"]
    assert training["machine_pace"]["own_run"] == own
    card = (out / "README.md").read_text()
    minutes = training["train_minutes"]
    assert f"speed {own['speed']:.2f} against the reference machine, from its own steps" in card
    assert f"about {minutes * own['speed']:.0f} min on the reference machine" in card
    fresh = add_measurement(copy / PACE_FILE, measurement(REFERENCE_STEP_S / 2.0, "CPU", "d"), fresh=True)
    assert "own_run" not in fresh and fresh["speed"] == 2.0


def _paced(folder: Path, speed: float) -> None:
    """Add a machine pace to an exported model's config.json."""
    cfg = json.loads((folder / "config.json").read_text())
    cfg["xmoco_zoo"]["training"]["machine_pace"] = {"speed": speed, "measurements": []}
    (folder / "config.json").write_text(json.dumps(cfg))


def test_minutes_of_machines_of_different_speeds_compare_on_the_reference_machines_scale(tmp_path):
    hub = tmp_path / "hub"
    fast = make_model(hub / "fast", "mocov2", {"knn": 70.0, "linear": 75.0}, minutes=10.0,
                      knn_curve=[[0.0, 40.0], [5.0, 60.0]])  # fmt: skip
    slow = make_model(hub / "slow", "co2", {"knn": 66.0, "linear": 70.0}, minutes=10.0)
    make_model(hub / "old", "co2", {"knn": 50.0}, minutes=None)  # no minutes: nothing to scale
    _paced(fast, 2.0)
    rows = index_rows(hub)
    # one run without a speed: the minutes stay as measured, and the comparison says so
    _, _, scale = on_one_scale(rows)
    assert scale == MEASURED_SCALE
    _paced(slow, 0.5)
    rows = index_rows(hub)
    assert "machine_speed" in results_csv(rows).splitlines()[0] and ",2.000," in results_csv(rows)
    scaled, _, scale = on_one_scale(rows)
    assert scale == REFERENCE_SCALE
    by_name = {r.model: r for r in scaled}
    assert by_name["fast"].train_minutes == 20.0 and by_name["fast"].knn_curve == [[0.0, 40.0], [10.0, 60.0]]
    assert by_name["slow"].train_minutes == 5.0 and by_name["old"].train_minutes is None
    assert {r.model: r.train_minutes for r in rows}["fast"] == 10.0, "the rows themselves are not changed"

    # the peer's curve, measured on a machine 1.5x the reference: 12 measured minutes are 18 reference minutes
    ref = ReferenceCurve("peer", [{"minutes": 12.0, "knn": 65.0}], speed=1.5)
    lines = compare_with_reference(rows, ref)
    assert lines[0] == f"minutes: {REFERENCE_SCALE}"
    assert lines[1] == "   18.0 min: peer 65.00, ours 66.00 (slow): +1.00"
    # the same runs as measured (runs of one machine): 12 minutes, where "fast" had reached 70 in 10
    measured = compare_with_reference(rows, ref, measured=True)
    assert measured[0] == f"minutes: {AS_MEASURED}" and AS_MEASURED != MEASURED_SCALE
    assert measured[1] == "   12.0 min: peer 65.00, ours 70.00 (fast): +5.00"
    unpaced = ReferenceCurve("peer", [{"minutes": 12.0, "knn": 65.0}])
    assert compare_with_reference(rows, unpaced)[0] == f"minutes: {MEASURED_SCALE}"

    curve = tmp_path / "peer.json"
    curve.write_text(json.dumps({"label": "peer", "points": [], "machine_pace": {"speed": 1.25}}))
    assert read_reference_curve(curve).speed == 1.25
    curve.write_text(json.dumps({"label": "peer", "points": [], "machine_pace": {"speed": -1}}))
    with pytest.raises(PaceError, match="peer.json: machine_pace"):
        read_reference_curve(curve)


def test_a_queued_run_measures_the_pace_before_training_and_its_record_counts_reference_minutes(
    tmp_path, monkeypatch
):
    """scripts/run_queue.py (the comparison's and the recipe search's runs): the pace first, into the run folder,
    then the pretraining; the record carries the pace, and the budgets count its minutes on the reference scale."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import recipe_search
    import run_queue

    monkeypatch.setattr(run_queue, "ROOT", tmp_path)
    queued = run_queue.Run("r1", "cell", "recipes/configs/mocov2_fmnist.yaml", kind="val", linear=False)
    calls = []

    def fake_sh(cmd, log):
        calls.append(cmd)
        out = tmp_path / "runs" / "r1"
        if "benchmarks/machine_pace.py" in cmd:
            add_measurement(cmd[cmd.index("--json") + 1], measurement(REFERENCE_STEP_S / 2, "fast CPU", "d"))
        else:
            (out / "summary.json").write_text(json.dumps({"epochs_done": 4, "steps": 40, "knn_top1": 80.0,
                                                          "knn_init": 70.0, "train_minutes": 10.0}))  # fmt: skip
            log.write_text("epoch 4: kNN top-1 80.00%\n")
        return 60.0

    monkeypatch.setattr(run_queue, "sh", fake_sh)
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    rec = run_queue.execute(queued, tmp_path / "runs")
    assert calls[0][1] == "benchmarks/machine_pace.py" and calls[0][-2:] == [
        str(tmp_path / "runs/r1" / PACE_FILE),
        "--fresh",
    ], "a run without a checkpoint starts from scratch: only its own measurement describes it"
    assert "--fresh" not in run_queue.pace_command(tmp_path / "runs/r1", resumed=True)
    assert "recipes/pretrain.py" in calls[1] and rec["machine_pace"]["speed"] == 2.0
    assert reference_minutes(rec) == 20.0 and recipe_search.per_epoch(rec) == 5.0
    assert recipe_search.minutes_text(rec) == "10.0 (x2.00: 20.0)"
    old = {k: v for k, v in rec.items() if k != "machine_pace"}  # made on the reference machine itself
    assert reference_minutes(old) == 10.0 and recipe_search.minutes_text(old) == "10.0"
