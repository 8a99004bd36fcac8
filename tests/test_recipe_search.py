"""The recipe search's queue (scripts/recipe_search.py): held-out only, and the stages it adds as runs finish."""

import json
import sys

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import recipe_search  # noqa: E402


def _fake(run, knn: float, minutes_per_epoch: float = 1.0) -> None:
    epochs = int(next(o for o in run.overrides if o.startswith("train.epochs=")).split("=")[1])
    p = recipe_search.record_path(run)
    p.parent.mkdir(parents=True, exist_ok=True)
    rec = {"id": run.id, "cell": run.cell, "kind": run.kind, "seed": 0, "knn": knn, "linear": knn + 3,
           "epochs": epochs, "train_minutes": minutes_per_epoch * epochs}  # fmt: skip
    p.write_text(json.dumps(rec))


def _queue():
    """The queue without the recipe's transfer probes (their own test below): what the budget stages add."""
    return [r for r in recipe_search.queue() if r.cell != "transfer"]


def _fake_transfer() -> None:
    for r in recipe_search.queue():
        if r.cell == "transfer" and not recipe_search.record_path(r).is_file():
            _fake(r, 80.0)


def test_every_run_is_a_held_out_probe_with_a_linear_probe_on_the_held_out_images(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_search, "OUT", tmp_path)
    runs = recipe_search.queue()
    assert len({r.id for r in runs}) == len(runs)
    for r in runs:
        out = recipe_search.RUNS_DIR / r.id
        assert r.kind == "val" and "data.holdout=10000" in r.pretrain_command(out)
        assert "data.holdout=10000" in r.linear_command(out)
    assert [r.wants_linear for r in runs if r.cell == "arch"] == [False] * 3
    vit = [r for r in runs if r.cell == "vit"]
    assert vit and all(r.config == recipe_search.VIT_CONFIG and r.wants_linear for r in vit)


def test_stage_two_combines_the_winning_changes_and_sizes_the_budgets_by_measured_minutes(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(recipe_search, "OUT", tmp_path)
    stage1 = recipe_search.stage1()
    # every run starts from the base (T 0.05); a change of the base's own key replaces it
    assert all(
        "method.temperature=0.05" in r.overrides for r in stage1 if r.cell not in ("vit", "temperature")
    )
    [t003] = [r for r in stage1 if r.cell == "temperature"]
    assert [o for o in t003.overrides if o.startswith("method.temperature")] == ["method.temperature=0.03"]
    scores = {"T 0.05": 80.0, "T 0.03": 80.5, "crop 0.5-1": 80.2, "crop 0.08-1": 79.0, "queue 16384": 82.0}
    cost = {"resnet10t-28": 3.0, "resnet18-28": 6.0, "resnet10t-half-56": 4.0, "queue 16384": 2.0}
    queue = next(r for r in stage1 if r.setting == "queue 16384")
    for r in stage1:
        if r is not queue and r.cell != "vit":
            _fake(r, scores.get(r.setting, 79.0), cost.get(r.setting, 1.0))
    assert _queue() == stage1  # a recipe probe left: no combination yet (the ViT is not waited for)
    _fake(queue, scores["queue 16384"], cost["queue 16384"])
    combo = _queue()[len(stage1)]
    # T 0.03 and the queue beat the base by more than the margin; crop 0.5 is within it
    assert combo.overrides == ["method.temperature=0.03", "method.queue_size=16384", "train.epochs=6"]
    assert combo.setting == "T 0.03 + queue 16384"
    _fake(combo, 83.0, 2.0)
    _fake_transfer()
    first = _queue()[len(stage1) + 1 :]
    # the combination costs 2 min an epoch at half width; the others scale by their cost over the base's (1 min)
    assert {r.id: r.overrides[-1] for r in first[:-1]} == {
        "b30-resnet10t-half-28": "train.epochs=15",
        "b30-resnet10t-28": "train.epochs=5",
        "b30-resnet18-28": "train.epochs=2",
        "b30-resnet10t-half-56": "train.epochs=3",
    }
    first, check = first[:-1], first[-1]
    for r in first:
        assert "method.queue_size=16384" in r.overrides
        assert [o for o in r.overrides if o.startswith("method.temperature")] == ["method.temperature=0.03"]
    # ... and the base architecture with the chosen recipe's crop replaced by the long trainings' one
    assert check.id == "b30-resnet10t-half-28-crop_0.08_1" and check.overrides[-1] == "train.epochs=15"
    assert "aug.crop_scale=[0.08,1.0]" in check.overrides and "method.queue_size=16384" in check.overrides
    assert check.setting.endswith("T 0.03 + queue 16384 + crop 0.08-1, 15 epochs")
    # each took its 30 minutes (the estimate held), but the 56 px run only 15: 5 min an epoch, not the 8 estimated
    for r, knn, minutes in zip(first, (84.0, 85.0, 83.0, 84.0), (2.0, 6.0, 12.0, 5.0)):
        _fake(r, knn, minutes)
    assert _queue()[len(stage1) + 5 :] == [check]  # the longer budgets wait for the re-check
    _fake(
        check, 84.2, 2.0
    )  # not beyond the margin over its architecture's 84.0: the longer budgets keep the recipe
    # the under-used run again, at the epochs its own minutes fit; the longer budgets wait for it
    [resized] = _queue()[len(stage1) + 6 :]
    assert resized.id == "b30-resnet10t-half-56-resized" and resized.overrides[-1] == "train.epochs=6"
    assert "aug.image_size=56" in resized.overrides and resized.cell == "budget 30"
    _fake(resized, 84.6, 5.0)  # it stands for its architecture: now within TIE of the winner's 85.0
    rest = _queue()[len(stage1) + 7 :]
    # the winner at the longer budgets; the 56 px half width, within TIE of it, at the longest too
    assert [r.id for r in rest] == ["b60-resnet10t-28", "b90-resnet10t-28", "b90-resnet10t-half-56"]
    assert rest[1].overrides[-1] == "train.epochs=15" and recipe_search.FULL in rest[1].overrides
    # their epochs from the minutes per epoch the 30-minute runs measured (6 and 5)
    assert rest[0].overrides[-1] == "train.epochs=10"
    assert rest[2].overrides[-1] == "train.epochs=18" and "aug.image_size=56" in rest[2].overrides
    assert not any(o.startswith("aug.crop_scale") for o in rest[1].overrides)
    assert "| `b30-resnet10t-28` | budget 30 |" in recipe_search.report()
    _fake(check, 84.5)  # beyond it: the crop joins them, and their ids say so
    rest = _queue()[len(stage1) + 7 :]
    assert [r.id for r in rest] == [
        "b60-resnet10t-28-crop_0.08_1",
        "b90-resnet10t-28-crop_0.08_1",
        "b90-resnet10t-half-56-crop_0.08_1",
    ]
    assert "aug.crop_scale=[0.08,1.0]" in rest[1].overrides and rest[1].setting.endswith(
        "crop 0.08-1, 15 epochs"
    )
    assert "aug.crop_scale=[0.08,1.0]" in rest[2].overrides
    # the zoo's choice waits for every run of the longest budget, then takes the best
    _fake(rest[0], 86.0, 6.0)
    _fake(rest[1], 87.0, 6.0)
    assert recipe_search.budget_choice(60) == rest[0] and recipe_search.budget_choice(90) is None
    _fake(rest[2], 86.9, 4.0)
    assert recipe_search.budget_choice(90) == rest[1]
    # the page: the best run of each budget with its command, and the chart
    table = recipe_search.budget_table().splitlines()
    assert [line.split(" | ")[:2] for line in table[2:]] == [
        ["| 30", "`b30-resnet10t-28`"],
        ["| 60", "`b60-resnet10t-28-crop_0.08_1`"],
        ["| 90", "`b90-resnet10t-28-crop_0.08_1`"],
    ]
    assert "| 85.00 | 88.00 |" in table[2] and "recipes/pretrain.py --config" in table[4]
    assert "data.holdout=10000" in table[4] and "aug.crop_scale=[0.08,1.0]" in table[4]
    png = tmp_path / "chart.png"
    assert recipe_search.chart(png) and png.read_bytes()[:4] == b"\x89PNG"


def test_the_architecture_of_a_budget_run_is_read_from_its_id():
    run = recipe_search.Run("b90-resnet10t-half-28-crop_0.08_1", "budget 90", recipe_search.CONFIG)
    assert recipe_search.arch_of(run) == "resnet10t-half-28"
    assert recipe_search.arch_of(recipe_search.Run("b30-resnet10t-28", "budget 30", "")) == "resnet10t-28"


def test_the_page_has_nothing_to_show_before_the_first_record(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_search, "OUT", tmp_path)
    assert recipe_search.budget_table() == "No budget run is done yet."
    assert not recipe_search.chart(tmp_path / "chart.png") and not (tmp_path / "chart.png").exists()


def test_no_re_check_when_the_chosen_recipe_has_the_long_trainings_crop(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_search, "OUT", tmp_path)
    stage1 = recipe_search.stage1()
    for r in stage1:
        if r.cell != "vit":
            _fake(r, 82.0 if r.setting == "crop 0.08-1" else 80.0)
    combo = _queue()[len(stage1)]
    assert "aug.crop_scale=[0.08,1.0]" in combo.overrides
    _fake(combo, 83.0)
    first = _queue()[len(stage1) + 1 :]
    assert [r.id for r in first] == [f"b30-{a}" for a in recipe_search.ARCHITECTURES]


def test_a_stage_one_record_without_training_minutes_stops_the_budgets_with_the_fix(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setattr(recipe_search, "OUT", tmp_path)
    stage1 = recipe_search.stage1()
    for r in stage1:
        if r.cell != "vit":
            _fake(r, 80.0)
    base = recipe_search.record_path(stage1[0])
    rec = json.loads(base.read_text())
    del rec["train_minutes"]
    base.write_text(json.dumps(rec))
    _fake(recipe_search.combined(stage1), 81.0)
    with pytest.raises(SystemExit, match=f"{stage1[0].id} has no train_minutes.*delete"):
        recipe_search.queue()


def test_the_recipe_is_probed_on_every_family_before_the_zoo_takes_it(tmp_path, monkeypatch):
    """After the combination, each family's comparison probe again with the recipe on top (its own settings
    win), the same 3 epochs and split; the zoo takes the recipe for a family that scores higher with it."""
    import compare_methods

    monkeypatch.setattr(recipe_search, "OUT", tmp_path)
    stage1 = recipe_search.stage1()
    scores = {"lr 0.12, warmup 1": 82.0, "batch 128": 81.0}
    for r in stage1:
        if r.cell != "vit":
            _fake(r, scores.get(r.setting, 80.0))
    assert recipe_search.takes_recipe("amcl") is None, "no recipe chosen yet"
    combo = recipe_search.queue()[len(stage1)]
    _fake(combo, 83.0)
    transfer = [r for r in recipe_search.queue() if r.cell == "transfer"]
    assert [r.id for r in transfer] == [f"t3-{f}" for f in ("mocov2", "mocov3", "co2", "xmoco", "amcl")]
    assert recipe_search.queue().index(transfer[0]) == len(stage1) + 1, "before the budget runs"
    for r in transfer:
        family = r.id.split("-", 1)[1]
        ref = compare_methods.chosen_probe(family)
        assert r.config == ref.config and r.kind == "val" and not r.wants_linear
        assert "train.epochs=3" in r.overrides and "data.holdout=10000" in r.pretrain_command(
            recipe_search.RUNS_DIR / r.id
        )
        # the recipe's changes, the warmup scaled to 3 of 6 epochs, and the family's setting over them
        assert "train.batch_size=128" in r.overrides and "train.warmup_epochs=0.5" in r.overrides
        assert all(o in r.overrides for o in compare_methods.test_cell(family, ref)[1])
    mocov3 = next(r for r in transfer if r.id == "t3-mocov3")
    assert "train.base_lr=0.06" in mocov3.overrides and "train.base_lr=0.12" not in mocov3.overrides
    assert recipe_search.takes_recipe("xmoco") is None, "its probe is not done"
    without = {
        f: compare_methods.load_record(compare_methods.chosen_probe(f))["knn"] for f in ("xmoco", "amcl")
    }
    _fake(next(r for r in transfer if r.id == "t3-xmoco"), without["xmoco"] + 0.5)
    _fake(next(r for r in transfer if r.id == "t3-amcl"), without["amcl"] - 0.5)
    assert recipe_search.transfer_scores("xmoco") == (without["xmoco"], without["xmoco"] + 0.5)
    assert recipe_search.takes_recipe("xmoco") is True and recipe_search.takes_recipe("amcl") is False
    assert recipe_search.takes_recipe("mocov2") is True, "the recipe was chosen on it"
    # a diverged probe does not take it
    recipe_search.record_path(next(r for r in transfer if r.id == "t3-co2")).write_text(
        json.dumps({"id": "t3-co2", "diverged": "NonFiniteLossError at step 3"})
    )
    assert recipe_search.takes_recipe("co2") is False
    table = recipe_search.transfer_table()
    assert "| xmoco | `" in table and "| yes |" in table and "| amcl |" in table and "| no |" in table
    assert "| co2 |" in table and "diverged" in table and "mocov3" not in table
