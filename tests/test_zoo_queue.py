"""The zoo's training queue (scripts/zoo_queue.py): what counts as published, delivery from a pinned checkout, the
order of its commands. The trainings and evaluations themselves are the recipes' (tested in test_recipe.py and
test_protocols.py); here ``sh`` is replaced by a fake that writes what they would."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import zoo_queue  # noqa: E402

from xmoco_zoo.zoo import BEGIN, END, SECTIONS_BEGIN, SECTIONS_END  # noqa: E402


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A committed checkout with the index files, standing in for the pinned worktree."""
    repo = tmp_path / "wt"
    (repo / "hub").mkdir(parents=True)
    (repo / "README.md").write_text(f"models:\n{BEGIN}\n{END}\n")
    (repo / "hub" / "results.csv").write_text("model,knn\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "models.md").write_text(f"# models\n{SECTIONS_BEGIN}\n{SECTIONS_END}\n")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "t")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "t@t")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "t")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "t@t")
    monkeypatch.setattr(zoo_queue, "ROOT", repo)
    monkeypatch.setattr(zoo_queue, "RUNS_DIR", repo / "runs" / "zoo")
    return repo


def _publish_into(folder, protocols=zoo_queue.PROTOCOLS, knn=81.5, run_dir=None):
    (folder / "results").mkdir(parents=True, exist_ok=True)
    command = f"accelerate launch recipes/pretrain.py train.output_dir={run_dir or 'runs/zoo/' + folder.name}"
    (folder / "config.json").write_text(json.dumps({"xmoco_zoo": {"training": {"command": command}}}))
    for p in protocols:
        value = knn if p == "knn" else 85.0
        (folder / "results" / f"{p}_fashion_mnist_test.json").write_text(json.dumps({"value": value}))


def test_a_model_is_published_only_with_every_protocols_result(tmp_path):
    folder = tmp_path / "m"
    assert not zoo_queue.published(folder)
    _publish_into(folder, protocols=("knn", "linear", "finetune"))
    assert not zoo_queue.published(folder), "the 10 % labels result is missing"
    _publish_into(folder)
    assert zoo_queue.published(folder)
    # an older model of the same name, trained elsewhere, is not this queue's: it gets replaced
    _publish_into(folder, run_dir="runs/mocov2_fmnist")
    assert not zoo_queue.published(folder)


def test_delivery_from_a_pinned_checkout_moves_the_folder_and_leaves_the_checkout_clean(
    checkout, tmp_path, monkeypatch
):
    out = tmp_path / "main_hub"
    out.mkdir()
    monkeypatch.setattr(zoo_queue, "HUB_OUT", out)
    model = zoo_queue.ZooModel("mocov2-x", "MoCo v2", "recipes/configs/mocov2_fmnist.yaml")
    _publish_into(checkout / "hub" / model.name)
    (checkout / "README.md").write_text("models: mocov2-x\n")  # as `xmoco-zoo list --write` rewrites it
    dst = zoo_queue.deliver(model)
    assert dst == out / model.name and zoo_queue.published(dst)
    assert not (checkout / "hub" / model.name).exists()
    assert _git(checkout, "status", "--porcelain") == "", "the checkout is clean for the next publish"
    assert not list(out.glob(".tmp-*"))


def test_delivery_in_the_working_tree_commits_the_folder_and_the_index(checkout, monkeypatch):
    monkeypatch.setattr(zoo_queue, "HUB_OUT", checkout / "hub")
    model = zoo_queue.ZooModel("co2-x", "CO2", "recipes/configs/co2_fmnist.yaml")
    _publish_into(checkout / "hub" / model.name)
    (checkout / "hub" / "results.csv").write_text("model,knn\nco2-x,81.5\n")
    zoo_queue.deliver(model)
    assert _git(checkout, "status", "--porcelain") == ""
    assert _git(checkout, "log", "-1", "--format=%s").strip() == "Publish co2-x"
    assert "co2-x,81.5" in _git(checkout, "show", "HEAD:hub/results.csv")


def test_run_trains_resumes_publishes_and_skips_what_is_published(checkout, tmp_path, monkeypatch, capsys):
    out = tmp_path / "main_hub"
    out.mkdir()
    monkeypatch.setattr(zoo_queue, "HUB_OUT", out)
    done = zoo_queue.ZooModel("done", "MoCo v2", "recipes/configs/mocov2_fmnist.yaml")
    cut = zoo_queue.ZooModel("cut", "MoCo v3", "recipes/configs/mocov3_fmnist.yaml", ["train.epochs=9"])
    _publish_into(out / done.name)
    (zoo_queue.RUNS_DIR / cut.name / "checkpoints" / "epoch_0003").mkdir(parents=True)
    monkeypatch.setattr(zoo_queue, "ZOO", [done, cut])
    calls = []

    def fake_sh(cmd, log):
        calls.append(cmd)
        if "recipes/pretrain.py" in cmd:
            (zoo_queue.RUNS_DIR / cut.name / "summary.json").write_text("{}")
        elif "scripts/publish_fmnist.sh" in cmd:
            _publish_into(checkout / "hub" / cut.name, knn=82.25)
        return 1.0

    monkeypatch.setattr(zoo_queue, "sh", fake_sh)
    # --train-only (the end of a session whose tree has been checked): the training, no publishing
    assert zoo_queue.main(["run", "--train-only"]) == 0
    assert (
        len(calls) == 2 and calls[0][1] == "benchmarks/machine_pace.py" and "recipes/pretrain.py" in calls[1]
    )
    assert not (checkout / "hub" / cut.name).exists() and not zoo_queue.published(out / cut.name)
    assert "cut: trained, not published (--train-only)" in capsys.readouterr().out
    (zoo_queue.RUNS_DIR / cut.name / "summary.json").unlink()
    calls.clear()
    assert zoo_queue.main(["run"]) == 0
    pace, pretrain, publish = calls
    # the machine's speed is measured before the training starts (or resumes), into the run folder
    assert pace[1] == "benchmarks/machine_pace.py" and pace[-1].endswith("runs/zoo/cut/machine_pace.json")
    assert "--fresh" not in pace, "a resumed run keeps the measurements of its earlier starts"
    assert pretrain[-1] == "--resume" and "train.epochs=9" in pretrain
    assert "train.output_dir=runs/zoo/cut" in pretrain
    assert publish == ["bash", "scripts/publish_fmnist.sh", "runs/zoo/cut", "cut"]
    assert zoo_queue.published(out / cut.name)
    assert "cut: published, kNN 82.25" in capsys.readouterr().out
    calls.clear()
    assert zoo_queue.main(["run"]) == 0 and calls == [], "everything is published: nothing runs"


def test_a_model_with_a_reference_run_gets_its_own_pace_before_publishing(checkout, monkeypatch):
    """The ViT's speed comes from its own steps against its probe's record (timed on the reference machine), put
    into the run's pace file after training, where the export and the card read it."""
    ref = checkout / "docs" / "results" / "recipe_search" / "runs" / "v.json"
    ref.parent.mkdir(parents=True)
    ref.write_text(json.dumps({"train_minutes": 15.0, "steps": 600}))  # 1.5 s a step
    vit = zoo_queue.ZooModel(
        "vit-x",
        "mocov3",
        "recipes/configs/mocov3_vit_fmnist.yaml",
        reference_run=str(ref.relative_to(checkout)),
    )
    out_dir = zoo_queue.RUNS_DIR / vit.name
    out_dir.mkdir(parents=True)
    (out_dir / "summary.json").write_text(json.dumps({"train_minutes": 100.0, "steps": 5000}))  # 1.2 s a step
    calls = []
    monkeypatch.setattr(zoo_queue, "sh", lambda cmd, log: calls.append(cmd))
    assert zoo_queue.run_model(vit, train_only=True) is None and calls == [], "trained already: nothing runs"
    pace = json.loads((out_dir / "machine_pace.json").read_text())
    assert (
        pace["speed"] == 1.25 and pace["own_run"]["reference_run"] == "docs/results/recipe_search/runs/v.json"
    )
    assert pace["calibration_speed"] is None and pace["measurements"] == []


def _fake_recipe_search(
    transfer: dict[str, float] | None = None, knn: dict[str, float] | None = None
) -> None:
    """Records of the whole recipe search (into recipe_search.OUT, which the caller points at tmp_path): the
    full-width resnet10t wins the 30-minute stage, at 3.0 min an epoch of 50k images; the crop 0.5-1 and batch 128
    join; every family's transfer probe scores 90 (above its comparison probe: it takes the recipe) unless
    ``transfer`` says otherwise; ``knn`` sets other runs' scores by id."""
    import recipe_search

    minutes = {"resnet10t-28": 3.0, "resnet18-28": 6.0, "resnet10t-half-56": 4.0}

    def fake(run, knn):
        epochs = int(next(o for o in run.overrides if o.startswith("train.epochs=")).split("=")[1])
        arch = next((a for a in minutes if a in run.id), None)
        per_epoch = 2.5 if run.cell == "vit" else minutes.get(arch, 1.0)
        rec = {"id": run.id, "cell": run.cell, "kind": "val", "knn": knn, "linear": knn + 3, "epochs": epochs,
               "train_minutes": per_epoch * epochs}  # fmt: skip
        recipe_search.record_path(run).parent.mkdir(parents=True, exist_ok=True)
        recipe_search.record_path(run).write_text(json.dumps(rec))

    scores = {"r6-crop_0.5_1": 81.0, "r6-batch_128": 81.2, "r6-combined": 81.5, "b30-resnet10t-28": 84.0,
              "v3-vit-lr_0.0015": 70.0, "v3-vit-lr_0.0005": 65.0}  # fmt: skip
    scores.update({f"t3-{family}": 90.0 for family in zoo_queue.FAMILIES})
    scores.update({f"t3-{family}": v for family, v in (transfer or {}).items()})
    scores.update(knn or {})
    while todo := [r for r in recipe_search.queue() if not recipe_search.record_path(r).is_file()]:
        for r in todo:
            fake(r, scores.get(r.id, 80.0))


def test_the_zoo_is_derived_from_the_recipe_search_and_the_comparison(tmp_path, monkeypatch):
    """Every family on the recipe search's 90-minute recipe and architecture, at its comparison cell's setting,
    for the epochs that fit 90 minutes at its step cost; the ViT at its best probe's learning rate."""
    import compare_methods
    import recipe_search

    monkeypatch.setattr(recipe_search, "OUT", tmp_path)
    assert zoo_queue.zoo() == [], "no recipe yet"
    _fake_recipe_search()
    models = {m.name: m for m in zoo_queue.zoo()}
    ratio = json.loads(compare_methods.cost_path().read_text())["ratio_to_mocov2"]
    reported = compare_methods.cells(compare_methods.probes())
    assert set(models) == {
        "mocov2-resnet10t-fmnist", "mocov3-resnet10t-fmnist", "co2-resnet10t-fmnist", "xmoco-resnet10t-fmnist",
        "amcl-resnet10t-fmnist", "mocov3-vit-tiny-d6-p7-fmnist",
    }  # fmt: skip
    for family, cell in [("mocov2", "mocov2_tuned"), ("co2", "co2"), ("xmoco", "xmoco"), ("amcl", "amcl")]:
        m = models[f"{family}-resnet10t-fmnist"]
        config, cell_overrides = reported[cell]
        assert m.config == config and m.family == family
        assert "aug.crop_scale=[0.5,1.0]" in m.overrides, "the winning recipe change"
        assert "model.kwargs.channels=[64,128,256,512]" in m.overrides, "the winning architecture"
        assert all(o in m.overrides for o in cell_overrides), (
            "the comparison's setting wins over the recipe's"
        )
        # the recipe search's run is this MoCo v2 itself: its ratio is 1; the others' their cell's, until timed
        epochs = int(90 / (3.0 * 60 / 50 * (1.0 if family == "mocov2" else ratio[cell])))
        assert f"train.epochs={epochs}" in m.overrides and f"knn.every={epochs}" in m.overrides
        marks = [o for o in m.overrides if o.startswith("knn.epochs=")]
        powers = ["0.125", "0.25", "0.5", *(str(2**i) for i in range(epochs.bit_length()) if 2**i < epochs)]
        assert marks == [f"knn.epochs=[{','.join(powers)}]"] and "knn.at_start=true" in m.overrides
    # the recipe's loss settings are MoCo v2's: another family keeps its own cell's (AMCL has no temperature
    # override, so none comes from the recipe); the queue size is shared
    assert not any(o.startswith("method.temperature") for o in models["amcl-resnet10t-fmnist"].overrides)
    assert "method.temperature=0.05" in models["mocov2-resnet10t-fmnist"].overrides
    assert zoo_queue.recipe_for(
        "co2", ["method.temperature=0.03", "method.queue_size=16384", "aug.erase_p=0.5"]
    ) == [
        "method.queue_size=16384",
        "aug.erase_p=0.5",
    ]
    assert "method.temperature=0.2" in models["mocov3-resnet10t-fmnist"].overrides
    assert "method.temperature=0.05" not in models["mocov3-resnet10t-fmnist"].overrides
    vit = models["mocov3-vit-tiny-d6-p7-fmnist"]
    assert vit.config == recipe_search.VIT_CONFIG and "train.base_lr=0.0015" in vit.overrides
    assert f"train.epochs={int(120 / (2.5 * 60 / 50))}" in vit.overrides
    # its speed: its own steps against the chosen probe's record, which ran on the reference machine
    assert vit.reference_run and vit.reference_run.endswith("runs/v3-vit-lr_0.0015.json")
    assert all(m.reference_run is None for m in models.values() if m is not vit)


def test_a_family_the_recipe_did_not_suit_trains_at_its_comparison_setting_on_the_architecture(
    tmp_path, monkeypatch
):
    """AMCL's transfer probe scored below its comparison probe: its model leaves the recipe out (batch 256, its
    config's lr and crop) but keeps the architecture; its epochs count its steps at its own batch size."""
    import compare_methods
    import recipe_search

    monkeypatch.setattr(recipe_search, "OUT", tmp_path)
    monkeypatch.setattr(zoo_queue, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(zoo_queue, "HUB_OUT", tmp_path / "hub")
    without = compare_methods.load_record(compare_methods.chosen_probe("amcl"))["knn"]
    _fake_recipe_search(transfer={"amcl": without - 0.1})
    assert recipe_search.takes_recipe("amcl") is False and recipe_search.takes_recipe("co2") is True
    plan = zoo_queue.resnet_plan()
    amcl, co2 = plan.models["amcl-resnet10t-fmnist"][2], plan.models["co2-resnet10t-fmnist"][2]
    assert "model.kwargs.channels=[64,128,256,512]" in amcl, "the architecture stays"
    assert not any(o.startswith(("aug.crop_scale", "train.batch_size", "train.base_lr")) for o in amcl)
    assert "aug.crop_scale=[0.5,1.0]" in co2 and "train.batch_size=128" in co2
    assert zoo_queue.batch_size(*plan.models["amcl-resnet10t-fmnist"][1:]) == 256
    # timed: a step of AMCL at batch 256 costs 4x the MoCo v2 model's at 128, so an epoch (half the steps) 2x
    cost = {"ratio_to_mocov2": {plan.baseline: 1.0, "amcl-resnet10t-fmnist": 4.0}, "table": plan.table()}
    zoo_queue.zoo_cost_path().write_text(json.dumps(cost))
    models = {m.name: m for m in zoo_queue.resnet_models()}
    per_epoch = 3.0 * 60 / 50
    assert f"train.epochs={int(90 / (per_epoch * 2.0))}" in models["amcl-resnet10t-fmnist"].overrides
    # the zoo waits for every family's transfer probe
    recipe_search.record_path(recipe_search.transfer_run("xmoco")).unlink()
    assert zoo_queue.resnet_plan() is None and zoo_queue.resnet_models() == []


def test_the_zoo_takes_the_best_architecture_at_its_budget_among_those_tied_at_the_first(
    tmp_path, monkeypatch
):
    """The half width at 28 px ties with the 30-minute winner (within recipe_search.TIE): it runs at 90 minutes
    too, the zoo waits for it and trains on it when it wins there."""
    import recipe_search

    monkeypatch.setattr(recipe_search, "OUT", tmp_path)
    _fake_recipe_search(knn={"b30-resnet10t-half-28": 83.8, "b90-resnet10t-half-28": 88.0})
    at_90 = [r.id for r in recipe_search.queue() if r.cell == "budget 90"]
    assert at_90 == ["b90-resnet10t-28", "b90-resnet10t-half-28"]
    assert recipe_search.budget_choice(90).id == "b90-resnet10t-half-28"
    plan = zoo_queue.resnet_plan()
    assert set(plan.models) == {
        f"{f}-resnet10t-half-fmnist" for f in ("mocov2", "mocov3", "co2", "xmoco", "amcl")
    }
    assert not any(
        "model.kwargs.channels" in o for _, _, overrides in plan.models.values() for o in overrides
    )
    assert plan.minutes == 1.0 * 60 / 50, "MoCo v2's minutes per epoch from the chosen 90-minute run"
    recipe_search.record_path(
        next(r for r in recipe_search.queue() if r.id == "b90-resnet10t-half-28")
    ).unlink()
    assert zoo_queue.resnet_plan() is None, "the zoo waits for every run at its budget"


def test_the_epochs_come_from_each_models_step_timed_on_its_own_setting(tmp_path, monkeypatch):
    """Before training, `run` times every ResNet model's step against the MoCo v2 model's on the setting they
    train with, once (the file keeps the setting of each ratio), and sizes the epochs from those ratios; a model
    whose setting changed is timed again alone, the others keep theirs, a published model is not timed."""
    import recipe_search

    monkeypatch.setattr(recipe_search, "OUT", tmp_path)
    monkeypatch.setattr(zoo_queue, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(zoo_queue, "HUB_OUT", tmp_path / "hub")
    _fake_recipe_search()
    plan = zoo_queue.resnet_plan()
    baseline = "mocov2-resnet10t-fmnist"
    assert plan.baseline == baseline and zoo_queue.measured_ratios(plan) == {baseline: 1.0}
    timed = []

    def fake_sh(cmd, log):  # benchmarks/cell_cost.py --table T --baseline B --json OUT
        assert cmd[1] == "benchmarks/cell_cost.py" and cmd[cmd.index("--baseline") + 1] == baseline
        table = json.loads(Path(cmd[cmd.index("--table") + 1]).read_text())
        assert all(table[n] == plan.table()[n] for n in table) and next(iter(table)) == baseline
        timed.append(sorted(table))
        ratios = {n: 1.0 if n == baseline else 1.5 + len(timed) for n in table}
        Path(cmd[cmd.index("--json") + 1]).write_text(json.dumps({"machine": "m", "ratio_to_mocov2": ratios}))
        return 1.0

    monkeypatch.setattr(zoo_queue, "sh", fake_sh)
    assert zoo_queue.main(["run", "--only", "^no model matches$"]) == 0
    zoo_queue.time_steps(plan)
    assert timed == [sorted(plan.models)], "timed once, all together"
    assert "model.kwargs.channels=[64,128,256,512]" in plan.table()["co2-resnet10t-fmnist"][1]
    models = {m.name: m for m in zoo_queue.resnet_models()}
    per_epoch = 3.0 * 60 / 50  # the recipe's minutes per epoch, on 60k images
    assert f"train.epochs={int(90 / per_epoch)}" in models[baseline].overrides
    assert f"train.epochs={int(90 / (per_epoch * 2.5))}" in models["xmoco-resnet10t-fmnist"].overrides
    # one model's setting changed since: it alone is timed again, the others keep their ratios
    cost = json.loads(zoo_queue.zoo_cost_path().read_text())
    cost["table"]["co2-resnet10t-fmnist"][1].append("aug.erase_p=0.5")
    zoo_queue.zoo_cost_path().write_text(json.dumps(cost))
    assert "co2-resnet10t-fmnist" not in zoo_queue.measured_ratios(plan)
    zoo_queue.time_steps(plan)
    assert timed[1] == sorted([baseline, "co2-resnet10t-fmnist"])
    ratios = zoo_queue.measured_ratios(plan)
    assert ratios["co2-resnet10t-fmnist"] == 3.5 and ratios["xmoco-resnet10t-fmnist"] == 2.5
    # the MoCo v2 model's setting changed: every ratio was to it, so all are timed again, but not a published one
    cost = json.loads(zoo_queue.zoo_cost_path().read_text())
    cost["table"][baseline][1].append("aug.erase_p=0.5")
    zoo_queue.zoo_cost_path().write_text(json.dumps(cost))
    _publish_into(tmp_path / "hub" / "amcl-resnet10t-fmnist")
    zoo_queue.time_steps(plan)
    assert timed[2] == sorted(n for n in plan.models if n != "amcl-resnet10t-fmnist")


def _trained_by_queue(folder):
    """Mark an exported model folder as trained by the zoo's queue (into runs/zoo/<name>)."""
    cfg = json.loads((folder / "config.json").read_text())
    cfg["xmoco_zoo"]["training"]["command"] = f"pretrain train.output_dir=runs/zoo/{folder.name}"
    (folder / "config.json").write_text(json.dumps(cfg))


def test_a_model_the_usage_docs_load_by_name_is_not_retired(checkout, monkeypatch, capsys):
    from .test_zoo import make_model

    hub = checkout / "hub"
    monkeypatch.setattr(zoo_queue, "HUB_OUT", hub)
    make_model(hub / "old-mocov2", "mocov2", {"knn": 60.0, "linear": 70.0}, minutes=1.0)
    make_model(
        hub / "new-mocov2",
        "mocov2",
        {"knn": 66.0, "linear": 72.0, "finetune": 80.0, "semisup_10pct": 75.0},
        minutes=2.0,
    )
    _trained_by_queue(hub / "new-mocov2")
    (checkout / "docs" / "downstream.md").write_text('folder = "local-dir:hub/old-mocov2"\n')
    _git(checkout, "add", ".")
    _git(checkout, "commit", "-qm", "models")
    assert [d[0] for d in zoo_queue.dominated(hub)] == ["old-mocov2"]
    # the README's generated table names every model: that does not count
    assert zoo_queue.named_in_usage_docs(checkout, "old-mocov2") == ["docs/downstream.md"]
    assert zoo_queue.named_in_usage_docs(checkout, "old-mocov") == []
    assert zoo_queue.retire(hub) == [] and (hub / "old-mocov2").is_dir()
    assert "Not retiring old-mocov2" in capsys.readouterr().out


def test_merge_lets_the_later_overrides_win():
    assert zoo_queue.merge(["a=1", "b=2"], ["b=3", "c=4"]) == ["a=1", "b=3", "c=4"]


def test_a_dominated_model_is_retired_with_its_reason(checkout, monkeypatch):
    """A model the queue trained retires an older one of its family that it matches or beats on kNN and linear,
    and only that one; the index is rewritten in the same commit."""
    from .test_zoo import make_model

    hub = checkout / "hub"
    monkeypatch.setattr(zoo_queue, "HUB_OUT", hub)

    make_model(hub / "old-mocov2", "mocov2", {"knn": 60.0, "linear": 70.0}, minutes=1.0)
    make_model(hub / "old-mocov2-better-linear", "mocov2", {"knn": 61.0, "linear": 75.0}, minutes=1.0)
    make_model(hub / "old-co2", "co2", {"knn": 50.0, "linear": 60.0}, minutes=1.0)
    make_model(
        hub / "new-mocov2",
        "mocov2",
        {"knn": 66.0, "linear": 72.0, "finetune": 80.0, "semisup_10pct": 75.0},
        minutes=2.0,
    )
    _trained_by_queue(hub / "new-mocov2")
    _git(checkout, "add", ".")
    _git(checkout, "commit", "-qm", "models")
    assert zoo_queue.dominated(hub) == [
        ("old-mocov2", "new-mocov2", "kNN 66.00 against 60.00, linear 72.00 against 70.00")
    ]
    zoo_queue.retire(hub)
    assert not (hub / "old-mocov2").exists() and (hub / "old-mocov2-better-linear").is_dir()
    assert (hub / "old-co2").is_dir(), "another family's model is not compared"
    assert _git(checkout, "status", "--porcelain") == ""
    log = _git(checkout, "log", "-1", "--format=%s").strip()
    assert (
        log == "Retire old-mocov2: new-mocov2 of the same family dominates it (kNN 66.00 against 60.00, "
        "linear 72.00 against 70.00)"
    )
    assert "old-mocov2," not in (hub / "results.csv").read_text()


def test_a_zoo_that_cannot_fit_in_hub_is_refused_before_any_training(tmp_path, monkeypatch):
    """The size guard's estimate (float16 parameters, built on the meta device) refuses a plan over the limit and
    warns when older folders must be retired for it to fit."""
    import xmoco_zoo.zoo

    hub = tmp_path / "hub"
    (hub / "old").mkdir(parents=True)
    (hub / "old" / "model.safetensors").write_bytes(b"\0" * 3_000_000)
    model = zoo_queue.ZooModel("mocov2-x", "mocov2", "recipes/configs/mocov2_fmnist.yaml")
    mb = zoo_queue.export_mb(model)
    # the half-width resnet10t: 1.27M parameters, 2 bytes each, and the folder's other files
    assert mb == pytest.approx(1.27 * 2 + zoo_queue.FOLDER_MB, abs=0.05)
    wider = zoo_queue.ZooModel("w", "mocov2", model.config, ["model.kwargs.channels=[64,128,256,512]"])
    assert zoo_queue.export_mb(wider) > 3 * mb
    assert zoo_queue.check_hub_size([model], hub) is None
    monkeypatch.setattr(xmoco_zoo.zoo, "HUB_LIMIT_MB", mb + 1)
    warning = zoo_queue.check_hub_size([model], hub)
    assert "old" in warning and "retire" in warning
    monkeypatch.setattr(xmoco_zoo.zoo, "HUB_LIMIT_MB", 2 * mb - 1)
    with pytest.raises(
        SystemExit, match=r"would take \d+ MB of hub/ \(limit .*mocov2-x .*smaller architecture"
    ):
        zoo_queue.check_hub_size([model, zoo_queue.ZooModel("mocov2-y", "mocov2", model.config)], hub)
