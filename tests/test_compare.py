"""The method comparison's queue and report (scripts/compare_methods.py): what it runs and how it summarises."""

import json
import statistics
import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import compare_methods  # noqa: E402
import compare_report  # noqa: E402


def test_queue_ids_are_unique_and_probes_never_touch_the_test_set():
    runs = compare_methods.queue()
    assert len({r.id for r in runs}) == len(runs)
    for r in runs:
        cmd = r.pretrain_command(compare_methods.RUNS_DIR / r.id)
        assert f"train.seed={r.seed}" in cmd
        assert ("data.holdout=10000" in cmd) == (r.kind == "val")
    tests = [r for r in runs if r.kind == "test"]
    assert {r.seed for r in tests} == set(compare_methods.SEEDS)


def test_table_reports_mean_and_sample_std_over_seeds_and_the_probes():
    records = [
        {"id": f"m-e6-s{s}", "cell": "m", "kind": "test", "seed": s, "knn": k, "linear": lin}
        for s, k, lin in [(0, 80.0, 83.0), (1, 79.0, 83.5), (2, 81.0, 84.0)]
    ] + [
        {"id": "val3-m-x1", "cell": "m", "kind": "val", "seed": 0, "knn": 77.5, "epochs": 3, "setting": "x=1",
         "knn_curve": [70.0, 75.25, 77.5]},
        {"id": "val3-m-x2", "cell": "m", "kind": "val", "seed": 0, "knn": 76.0, "epochs": 3, "setting": "x=2"},
        {"id": "val3-a-y", "cell": "a", "kind": "val", "seed": 0, "setting": "y", "diverged": "step 3: loss = nan"},
    ]  # fmt: skip
    md = compare_report.table(records, ["m", "a"])
    sd = statistics.stdev([80.0, 79.0, 81.0])
    assert f"| m | 0, 1, 2 | 80.00 ± {sd:.2f} | 83.50 ± 0.50 |" in md
    # the probes: each setting a row, the best of a cell in bold, its curve, a diverged run said so
    assert "| m | x=1 | 3 | **77.50** | 70.00, 75.25, 77.50 | `val3-m-x1` |" in md
    assert "| m | x=2 | 3 | 76.00 |" in md
    assert "| a | y |  | diverged |" in md


def _cell(cell: str, knn: list[float], linear: list[float]) -> list[dict]:
    return [{"id": f"{cell}-s{i}", "cell": cell, "kind": "test", "seed": i, "knn": k, "linear": lin}
            for i, (k, lin) in enumerate(zip(knn, linear))]  # fmt: skip


def test_verdicts_call_a_gap_beyond_the_seeds_spread_and_the_one_point_goal():
    records = (
        _cell("base", [79.0, 79.4, 79.2], [83.0, 83.2, 83.4])
        + _cell("co2", [80.6, 80.4, 80.5], [83.1, 83.3, 83.2])  # +1.3 kNN, spread 0.2; linear +0.0
        + _cell("xmoco", [79.8, 79.6, 79.7], [82.0, 82.1, 82.2])  # +0.5: beyond the spread, short of the goal
        + _cell("amcl", [78.0, 81.0, 79.5], [83.0, 83.0, 83.0])  # +0.3 with a spread of 1.5
        + _cell("amcl_authors", [80.0], [84.0])
        + _cell("mocov3", [80.6, 80.4, 80.5], [83.1, 83.3, 83.2])  # as co2, but not a regularizer: no goal
    )
    bases = {c: ["base"] for c in ("co2", "xmoco", "amcl", "amcl_authors", "mocov3", "x@3ep")}
    order = ["base", "co2", "xmoco", "amcl", "amcl_authors", "mocov3"]
    lines = compare_report.verdicts(records, bases, order).splitlines()
    reg, small, noisy, late, v3 = lines
    assert reg.startswith("- `co2` against `base` (its base): kNN +1.30 (80.50 ± 0.10 against 79.20 ± 0.20)")
    assert "better beyond the seeds' spread (0.20), reaching the 1-point goal; linear +0.00" in reg
    assert "linear +0.00 (83.20 ± 0.10 against 83.20 ± 0.20): within the seeds' spread (0.20)." in reg
    assert "short of the 1-point goal" in small and "linear -1.10" in small and "worse beyond" in small
    assert "within the seeds' spread (1.50)" in noisy
    assert "(1 and 3 seeds so far): too few seeds to tell" in late
    # the goal is a regularizer's (CO2, XMoCo, AMCL) against its own base: otherwise the gap is only called
    assert "better beyond the seeds' spread (0.20); linear" in v3 and "goal" not in v3
    cells = compare_report._cells(records, "test")
    assert compare_report.verdict("co2", "base", cells, goal=False).endswith(
        "better beyond the seeds' spread (0.20)"
    )


def test_knn_curve_reads_the_last_line_of_each_epoch_from_a_resumed_log():
    log = (
        "epoch 1: kNN top-1 70.00% (k=200)\nepoch 2: kNN top-1 71.00%\n--resume\nepoch 2: kNN top-1 72.50%\n"
    )
    assert compare_methods.knn_curve(log) == [70.0, 72.5]


def test_probe_ids_are_readable_and_probes_use_the_probe_budget():
    probes = [r for r in compare_methods.queue() if r.kind == "val"]
    assert probes and all(r.id.startswith(f"val{compare_methods.PROBE_EPOCHS}-") for r in probes)
    assert all(f"train.epochs={compare_methods.PROBE_EPOCHS}" in r.overrides for r in probes)
    assert all(r.setting for r in probes)


def _fake(run, knn: float | None) -> None:
    p = compare_methods.record_path(run)
    p.parent.mkdir(parents=True, exist_ok=True)
    rec = {"id": run.id, "cell": run.cell, "kind": run.kind, "seed": run.seed}
    rec.update({"knn": knn} if knn is not None else {"diverged": "step 3: loss_amcl = nan"})
    p.write_text(json.dumps(rec))


def test_the_queue_grows_as_the_held_out_probes_choose(tmp_path, monkeypatch):
    """AMCL's stage 2 appears around the best form once stage 1 is done; a tuned method's 3-seed cell appears
    with the best probe's settings once all its probes are done; a diverged probe never wins."""
    monkeypatch.setattr(compare_methods, "OUT", tmp_path)
    ids = lambda: [r.id for r in compare_methods.queue()]  # noqa: E731
    assert not any(i.startswith(("co2-e6", "amcl-e6")) for i in ids())
    forms = [r for r in compare_methods.probes() if r.cell == "amcl"]
    assert [r.setting for r in forms] == ["form=authors", "form=posterior", "form=likelihood"]
    for r, knn in zip(forms, (None, 80.0, 79.0)):  # authors diverges, posterior is best
        _fake(r, knn)
    stage2 = [r for r in compare_methods.probes() if r.cell == "amcl"][3:]
    assert stage2 and all(r.setting.startswith("form=posterior ") for r in stage2)
    assert all("method.amcl.form=posterior" in r.overrides for r in stage2)
    assert "amcl-e6-s0" not in ids()  # stage 2 not done yet
    for i, r in enumerate(stage2):
        _fake(r, 81.0 if i == 1 else 70.0)
    cells = compare_methods.cells(compare_methods.probes())
    config, overrides = cells["amcl"]
    assert f"method.amcl.{stage2[1].setting.split()[1]}" in overrides
    assert not any(o.startswith(("train.epochs=", "train.warmup_epochs=")) for o in overrides)  # 6 epochs
    assert "amcl_likelihood" in cells and "amcl_authors" in cells and "amcl_posterior" not in cells
    co2 = [r for r in compare_methods.probes() if r.cell == "co2"]
    for i, r in enumerate(co2):
        _fake(r, 78.0 + i)
    assert {"co2-e6-s0", "co2-e6-s1", "co2-e6-s2"} <= set(ids())
    assert compare_methods.cells(compare_methods.probes())["co2"][1] == [
        o for o in co2[-1].overrides if not o.startswith("train.epochs=")
    ]


def test_amcl_curves_draw_each_form_from_its_metrics(tmp_path):
    runs = [r for r in compare_methods.probes() if r.cell == "amcl"][:2]
    for i, r in enumerate(runs):
        rows = ["step,key,value", f"0,eval/knn_top1,{60 + i}", f"10,train/amcl_tau_pos_mean,{0.1 + i}"]
        rows += [f"10,train/amcl_tau_neg_at_min,{0.5}", f"200,eval/knn_top1,{70 + i}"]
        (tmp_path / r.id).mkdir()
        (tmp_path / r.id / "metrics.csv").write_text("\n".join(rows) + "\n")
    m = compare_report.read_metrics(tmp_path / runs[1].id / "metrics.csv")
    assert m["eval/knn_top1"] == ([0, 200], [61.0, 71.0])
    out = tmp_path / "amcl.png"
    assert compare_report.amcl_curves(runs, tmp_path, out) and out.stat().st_size > 1000
    assert not compare_report.amcl_curves(runs, tmp_path / "missing", tmp_path / "none.png")


def test_a_cell_does_not_inherit_the_probe_budget():
    probe = next(r for r in compare_methods.probes() if r.cell == "mocov3")
    assert "train.warmup_epochs=0.5" in probe.overrides and "train.epochs=3" in probe.overrides
    config, overrides = compare_methods.test_cell("mocov3", probe)
    assert config == probe.config and "method.temperature=1.0" in overrides
    assert not any(o.startswith(("train.epochs=", "train.warmup_epochs=")) for o in overrides)


def test_a_better_base_temperature_adds_a_tuned_base_cell(tmp_path, monkeypatch):
    monkeypatch.setattr(compare_methods, "OUT", tmp_path)
    base = [r for r in compare_methods.probes() if r.cell == "mocov2"]
    assert [r.setting for r in base][:3] == ["defaults", "T=0.1", "T=0.05"]
    for r, knn in zip(base, (76.0, 78.0, 77.0, 75.0)):
        _fake(r, knn)
    cells = compare_methods.cells(compare_methods.probes())
    assert cells["mocov2_tuned"][1] == ["method.temperature=0.1"] and cells["mocov2"][1] == []
    assert cells["mocov2_sym_tuned"][1] == ["method.symmetric=true", "method.temperature=0.1"]
    _fake(base[0], 79.0)
    assert not {"mocov2_tuned", "mocov2_sym_tuned"} & set(compare_methods.cells(compare_methods.probes()))


def test_regularizers_are_probed_again_on_a_tuned_base(tmp_path, monkeypatch):
    monkeypatch.setattr(compare_methods, "OUT", tmp_path)
    probes = compare_methods.probes()
    for r in probes:
        if r.cell in ("mocov2", "co2"):
            _fake(r, {"T=0.05": 79.0, "alpha=0.3 tau_con=0.2": 78.5}.get(r.setting, 75.0))
    extra = [r for r in compare_methods.probes() if r.setting.endswith("base T=0.05")]
    assert [r.cell for r in extra] == ["co2"]  # xmoco's grid is not done yet
    assert extra[0].setting == "alpha=0.3 tau_con=0.2, base T=0.05"
    assert extra[0].overrides == [
        "method.co2.weight=0.3", "method.co2.temperature=0.2", "method.temperature=0.05", "train.epochs=3"
    ]  # fmt: skip
    assert "co2-e6-s0" not in [r.id for r in compare_methods.queue()]  # its choice waits for the extra probe
    _fake(extra[0], 80.0)
    assert "method.temperature=0.05" in compare_methods.cells(compare_methods.probes())["co2"][1]


def test_the_measured_step_costs_add_the_equal_time_cells(tmp_path, monkeypatch):
    """benchmarks/cell_cost.py's JSON sets round(6 / r) epochs for each cell whose step costs r x MoCo v2's; a
    cell at 6 equal-time epochs is not run twice."""
    monkeypatch.setattr(compare_methods, "OUT", tmp_path)
    assert not [r for r in compare_methods.queue() if r.budget == "time"]
    (tmp_path / "cell_cost.json").write_text(
        json.dumps({"equal_time_epochs": {"mocov2": 6, "mocov2_sym": 3, "unknown": 2}})
    )
    timed = [r for r in compare_methods.queue() if r.budget == "time"]
    assert [r.id for r in timed] == [f"mocov2_sym@3ep-s{s}" for s in compare_methods.SEEDS]
    assert timed[0].overrides == ["method.symmetric=true", "train.epochs=3"] and timed[0].kind == "test"
    assert timed[0].wants_linear
    # a cell that learned nothing at equal epochs (3 seeds below raw pixels) gets no equal-time cell
    for seed, knn in zip(compare_methods.SEEDS, (75.0, 80.0, 78.0)):
        run = next(r for r in compare_methods.queue() if r.id == f"mocov2_sym-e6-s{seed}")
        _fake(run, knn)
        timed = [r for r in compare_methods.queue() if r.budget == "time"]
        assert len(timed) == (0 if seed == compare_methods.SEEDS[-1] else 3)


def test_the_symmetric_loss_is_timed_at_the_tuned_temperature_once_that_cell_exists(tmp_path, monkeypatch):
    """mocov2_sym_tuned costs what mocov2_sym costs (only T differs) and takes its equal-time cell."""
    monkeypatch.setattr(compare_methods, "OUT", tmp_path)
    (tmp_path / "cell_cost.json").write_text(
        json.dumps({"equal_time_epochs": {"mocov2": 6, "mocov2_sym": 3}})
    )
    reported = {
        "mocov2_sym": ("MOCOV2", ["method.symmetric=true"]),
        "mocov2_sym_tuned": ("MOCOV2", ["method.symmetric=true", "method.temperature=0.05"]),
    }
    cells = compare_methods.time_cells(reported)
    assert list(cells) == ["mocov2_sym_tuned@3ep"]
    assert cells["mocov2_sym_tuned@3ep"][1] == [
        "method.symmetric=true",
        "method.temperature=0.05",
        "train.epochs=3",
    ]
    assert list(compare_methods.time_cells({"mocov2_sym": reported["mocov2_sym"]})) == ["mocov2_sym@3ep"]


def test_one_sentence_per_method_from_the_records():
    records = (
        _cell("mocov2_tuned", [79.0, 79.4, 79.2], [83.0, 83.2, 83.4])
        + _cell("co2", [80.6, 80.4, 80.5], [83.1, 83.3, 83.2])
        + _cell("xmoco", [79.0, 79.4, 79.1], [82.0, 82.1, 82.2])
        + _cell("mocov3", [80.6, 80.4], [83.1, 83.3])
        + _cell("co2@5ep", [78.0, 78.2, 78.1], [83.0, 83.1, 83.2])
        + _cell("amcl_likelihood", [60.0, 61.0, 62.0], [70.0, 70.5, 71.0])
    )
    records += _cell("mocov2", [78.0, 78.1, 78.2], [82.0, 82.1, 82.2])
    bases = {"co2": ["mocov2_tuned", "mocov2"], "xmoco": ["mocov2", "mocov2_tuned"], "mocov3": ["mocov2_tuned"],
             "co2@5ep": ["mocov2_tuned"], "amcl_likelihood": ["mocov2"]}  # fmt: skip
    cost = {"ratio_to_mocov2": {"xmoco": 1.07, "co2": 1.2}, "equal_time_epochs": {"xmoco": 6, "co2": 5}}
    co2, xmoco, likelihood, v3 = compare_report.sentences(records, bases, cost).splitlines()
    assert likelihood.endswith(
        "; below raw pixels (61.00 against 78.85 kNN), it learned nothing, so it gets no equal-time cell."
    ) and likelihood.startswith("- **AMCL, likelihood form** loses to its base (`mocov2`)")
    assert co2 == (
        "- **CO2** beats its base (`mocov2_tuned`) at equal epochs: kNN +1.30 points (beyond the seeds' spread of "
        "0.20), linear probe +0.00 (within 0.20); it reaches the papers' 1-point goal; in the same training "
        "minutes (5ep against `mocov2_tuned`'s 6 epochs) it loses to it by 1.10 kNN points."
    )
    assert (
        xmoco.startswith("- **XMoCo** beats its base (`mocov2`)")
        and "it reaches the papers' 1-point goal" in xmoco
    )
    assert xmoco.endswith(
        "; against the best MoCo v2 (`mocov2_tuned`) it ties with it (-0.03 kNN points); its step costs 1.07x "
        "MoCo v2's, so its 6 epochs also take MoCo v2's minutes: the same verdict per minute."
    ), "its 6 epochs are its equal-time budget: it has no time cell"
    assert v3 == "- **MoCo v3**: not measured yet (2 of 3 seeds; its base `mocov2_tuned`: 3)."
    # a newer cost measurement moved CO2's equal-time cell to 4 epochs: the sentence follows the queue's cell,
    # not the superseded one whose records remain
    bases["co2@4ep"] = bases.pop("co2@5ep")
    co2 = compare_report.sentences(records, bases, cost).splitlines()[0]
    assert co2.endswith("; in the same training minutes (4ep): not measured yet.")
    md = compare_report.table(records, ["mocov2", "mocov2_tuned", "co2", "co2@4ep"])
    assert "| co2@5ep (superseded) | 0, 1, 2 |" in md and "| co2 | 0, 1, 2 |" in md


def test_each_cell_is_listed_with_its_command_as_a_user_types_it():
    launch = "accelerate launch --num_processes 1 --num_cpu_threads_per_process 2 recipes/pretrain.py"
    records = [
        {"id": f"c-e6-s{s}", "cell": "c", "kind": "test", "seed": s, "knn": 80.0, "linear": 83.0,
         "train_minutes": m,
         "pretrain_command": f"{launch} --config recipes/configs/co2_fmnist.yaml method.co2.weight=0.1 "
                             f"train.seed={s} train.output_dir=runs/compare/c-e6-s{s}"}
        for s, m in [(0, 7.0), (1, 8.0)]
    ] + [{"id": "old-e6-s0", "cell": "old", "kind": "test", "seed": 0, "knn": 79.0, "linear": 83.0}]  # fmt: skip
    md = compare_report.commands(records, ["c", "old"])
    # the launcher's flags, the seed and the output directory are not the cell's settings; minutes are the mean
    assert (
        "| c | `recipes/pretrain.py --config recipes/configs/co2_fmnist.yaml method.co2.weight=0.1` | 7.5 |"
        in md
    )
    assert "| old |" not in md  # a record without its command is not guessed at
    # seeds of one cell trained with different settings are an error, not a silent pick
    records[1]["pretrain_command"] = records[1]["pretrain_command"].replace("weight=0.1", "weight=0.3")
    with pytest.raises(ValueError, match="cell c: its seeds were trained with different settings"):
        compare_report.commands(records, ["c"])


def test_the_ablation_of_amcls_hardest_negatives_is_a_tuned_mocov2_cell_judged_against_both():
    """Once the tuned MoCo v2 and AMCL's cell (over its top-k negatives) exist, a MoCo v2 cell over the same k
    hardest negatives, without AMCL's heads, is reported against the tuned MoCo v2 and against AMCL."""
    reported = {
        "mocov2_tuned": ("MOCOV2", ["method.temperature=0.05"]),
        "amcl": ("AMCL", ["method.amcl.form=posterior", "method.amcl.posterior_topk=100"]),
    }
    cell = compare_methods.ablation_cell(compare_methods._amcl_topk(reported["amcl"]))
    assert cell == "mocov2_tuned_top100" and compare_methods.ablates(cell) == "amcl"
    assert compare_methods._amcl_topk(("AMCL", ["method.amcl.posterior_topk=null"])) is None
    reported[cell] = ("MOCOV2", ["method.temperature=0.05", "method.negatives_topk=100"])
    assert compare_methods.bases(reported)[cell] == ["mocov2_tuned", "amcl", "mocov2"]
    records = (
        _cell("mocov2_tuned", [81.0, 81.4, 80.6], [84.0, 84.2, 84.4])
        + _cell("amcl", [82.6, 82.8, 82.4], [85.0, 85.2, 85.4])
        + _cell(cell, [82.5, 82.9, 82.3], [85.0, 85.1, 85.2])
    )
    line = compare_report.sentences(records, {cell: ["mocov2_tuned", "amcl", "mocov2"]}).splitlines()[0]
    assert line.startswith(f"- **{compare_report.TITLES[cell]}** beats its base (`mocov2_tuned`)")
    assert line.endswith(
        "; against AMCL (posterior form, tuned) (`amcl`) it ties with it (-0.03 kNN points)."
    )
    verdicts = compare_report.verdicts(records, {cell: ["mocov2_tuned", "amcl", "mocov2"]}, [cell])
    assert f"`{cell}` against `amcl` (the method it takes apart)" in verdicts
