"""Evaluation protocols: kNN, linear probe (fast and full), fine-tuning, semi-supervised splits, results files.

The recipes run as users run them (``recipes/*.py`` and ``xmoco-zoo eval`` in fresh processes), on a tiny
exported model and the synthetic dataset, capped at 2 optimizer steps where they train.
"""

import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from huggingface_hub import ModelCard

from xmoco_zoo.config import ConfigError
from xmoco_zoo.export import save_timm_folder
from xmoco_zoo.logging import read_metrics
from xmoco_zoo.protocols.config import load_eval_config
from xmoco_zoo.protocols.finetune import read_scratch_result
from xmoco_zoo.protocols.linear_eval import (
    FrozenBackboneClassifier,
    LinearHead,
    fit_linear_head,
    head_accuracy,
)
from xmoco_zoo.protocols.splits import SplitError, balanced_split, load_or_create_split
from xmoco_zoo.results import ResultsError, read_results, validate_record

from .conftest import ROOT, TINY, needs_fmnist, run_cli, run_pretrain

EVAL_CONFIGS = sorted(p.stem for p in (ROOT / "recipes/configs/eval").glob("*.yaml"))
SYNTH = [
    "data.dataset=synthetic",
    "data.synthetic_size=96",
    "data.synthetic_image_size=32",
    "data.num_workers=0",
    "run.log_every=1",
]


def _recipe(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "recipes" / script), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=os.environ.copy())
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A headless test_resnet exported in timm's Hub format (random weights: the recipes' plumbing is tested)."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=0)
    out = tmp_path_factory.mktemp("protocols") / "model"
    save_timm_folder(
        model, out, tag="test", input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    )
    return out


def _separable(n: int, dim: int, classes: int, seed: int, noise: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234)) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + noise * torch.randn(n, dim, generator=g), y


@pytest.mark.parametrize("optimizer", ["lbfgs", "sgd"])
def test_linear_probe_exceeds_95_percent_on_separable_features(optimizer):
    xtr, ytr = _separable(2000, 32, 10, seed=0)
    xte, yte = _separable(1000, 32, 10, seed=1)
    head = fit_linear_head(xtr, ytr, 10, optimizer=optimizer, epochs=20, lr=0.5, milestones=[12, 16])
    chance = head_accuracy(fit_linear_head(xtr, ytr[torch.randperm(len(ytr))], 10, max_iter=50), xte, yte)
    acc = head_accuracy(head, xte, yte)
    assert acc > 95.0, acc
    assert chance < 30.0, chance  # shuffled labels: the probe learns the labels, not something else


def test_full_mode_keeps_the_backbone_frozen_and_in_eval_mode():
    torch.manual_seed(0)
    backbone = timm.create_model("test_resnet", num_classes=0)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = FrozenBackboneClassifier(backbone, LinearHead(backbone.num_features, 3))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.train()
    assert not backbone.training and model.head.training
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 3, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running stats
    assert model.head.fc.weight.grad is not None


def test_fast_probe_is_deterministic():
    x, y = _separable(500, 16, 5, seed=0, noise=2.0)
    a = fit_linear_head(x, y, 5, optimizer="sgd", epochs=3, lr=0.1, seed=7)
    b = fit_linear_head(x, y, 5, optimizer="sgd", epochs=3, lr=0.1, seed=7)
    assert torch.equal(a.fc.weight, b.fc.weight)


def test_semi_supervised_splits_are_deterministic_class_balanced_and_verified(tmp_path):
    labels = torch.arange(10).repeat_interleave(300)[
        torch.randperm(3000, generator=torch.Generator().manual_seed(3))
    ]
    for percent in (1, 10):
        idx = balanced_split(labels, percent, seed=0)
        assert idx == balanced_split(labels, percent, seed=0)
        assert idx != balanced_split(labels, percent, seed=1)
        counts = torch.bincount(labels[idx], minlength=10)
        assert counts.tolist() == [round(percent / 100 * 300)] * 10
        assert len(set(idx)) == len(idx)
    idx, path = load_or_create_split(tmp_path, "toy", labels, 10, seed=0)
    d = json.loads(path.read_text())
    assert d["indices"] == idx and d["class_counts"] == [30] * 10 and d["per_class"] == 30
    again, _ = load_or_create_split(tmp_path, "toy", labels, 10, seed=0)  # read back, verified
    assert again == idx
    # The same file against other labels (another order of the data) is refused, naming the fix.
    with pytest.raises(SplitError, match="labels_sha256 differs.*Delete the file"):
        load_or_create_split(tmp_path, "toy", labels.flip(0), 10, seed=0)
    d["indices"][0] = d["indices"][1]
    path.write_text(json.dumps(d))
    with pytest.raises(SplitError, match="duplicates"):
        load_or_create_split(tmp_path, "toy", labels, 10, seed=0)
    with pytest.raises(SplitError, match="fewer than"):
        balanced_split(torch.tensor([0] * 50 + [1] * 2), 10)


def test_eval_configs_reject_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="Did you mean: 'epochs'"):
        load_eval_config("finetune", None, ["finetune.epoch=3"])
    with pytest.raises(ConfigError, match="linear.mode"):
        load_eval_config("linear", None, ["linear.mode=slow"])
    with pytest.raises(ConfigError, match="label_percent"):
        load_eval_config("finetune", None, ["finetune.label_percent=150"])


@pytest.mark.parametrize("name", EVAL_CONFIGS)
def test_every_shipped_eval_config_loads(name):
    protocol = "knn" if name.startswith("knn") else "linear" if name.startswith("linear") else "finetune"
    cfg = load_eval_config(protocol, ROOT / "recipes/configs/eval" / f"{name}.yaml")
    assert cfg.model.spec


def _stored(folder, protocol):
    [record] = [r for r in read_results(folder) if r.protocol == protocol]
    path = folder / "results" / f"{protocol}_{record.dataset}_{record.split}.json"
    validate_record(json.loads(path.read_text()), str(path))  # the file itself, schema-checked
    return record


def test_knn_recipe_with_baselines_stores_a_schema_checked_result_and_updates_nothing_else(
    model_dir, tmp_path
):
    out = tmp_path / "knn"
    proc = _recipe(
        "knn_eval.py",
        f"model.spec=local-dir:{model_dir}",
        *SYNTH,
        "knn.k=10",
        "knn.baselines=true",
        f"run.output_dir={out}",
    )
    assert "weighted kNN top-1" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    r = _stored(model_dir, "knn")
    assert r.value == pytest.approx(summary["top1"], abs=1e-4)
    assert r.protocol_args["k"] == 10 and r.dataset == "synthetic" and r.split == "test"
    assert any("raw pixels" in b for b in r.baselines) and any("random init" in b for b in r.baselines)
    assert "knn_eval.py" in r.command and r.config["knn"]["k"] == 10
    # The result is also in the run's own folder.
    assert read_results(out)[0].value == r.value


def test_linear_recipe_fast_and_full_modes_run(model_dir, tmp_path):
    fast = _recipe(
        "linear_eval.py",
        f"model.spec=local-dir:{model_dir}",
        *SYNTH,
        "linear.mode=fast",
        "linear.lbfgs_max_iter=20",
        "linear.baselines=true",
        "run.save_results=false",
        f"run.output_dir={tmp_path / 'fast'}",
    )
    s = json.loads((tmp_path / "fast" / "summary.json").read_text())
    assert 0 <= s["top1"] <= 100 and len(s["baselines"]) == 2, fast.stdout
    _recipe(
        "linear_eval.py",
        f"model.spec=local-dir:{model_dir}",
        *SYNTH,
        "linear.mode=full",
        "linear.batch_size=16",
        "run.max_steps=2",
        f"run.output_dir={tmp_path / 'full'}",
    )
    s = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert s["steps"] == 2
    r = _stored(model_dir, "linear")
    assert r.protocol_args["mode"] == "full" and "max_steps" in r.protocol_args and "smoke" in r.notes


def test_finetune_and_semisup_through_the_cli_compare_with_scratch(model_dir, tmp_path):
    out = tmp_path / "ft"
    run_cli(
        "eval",
        "finetune",
        "--config",
        str(ROOT / "recipes/configs/eval/semisup_fmnist.yaml"),
        "--compare-scratch",
        f"model.spec=local-dir:{model_dir}",
        *SYNTH,
        "data.synthetic_size=400",
        f"data.splits_dir={tmp_path / 'splits'}",
        "finetune.batch_size=8",
        "finetune.epochs=1",
        "run.max_steps=2",
        f"run.output_dir={out}",
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["protocol"] == "semisup_10pct" and s["steps"] == 2 and s["init"] == "pretrained"
    assert s["scratch"]["init"] == "scratch" and s["scratch"]["steps"] == 2
    r = _stored(model_dir, "semisup_10pct")
    assert r.baselines == {
        "same architecture from scratch, same schedule": pytest.approx(s["scratch"]["top1"], abs=1e-4)
    }
    assert r.protocol_args["labelled_images"] == 40 and r.protocol_args["split"].endswith(".json")
    [split] = (tmp_path / "splits").glob("*.json")
    assert json.loads(split.read_text())["class_counts"] == [4] * 10
    # The scratch run is not a result of the pretrained model: only in its own output folder.
    scratch_file = next((out / "scratch" / "results").glob("*.json"))
    assert (
        read_scratch_result(scratch_file, "semisup_10pct", "synthetic", "test", r.protocol_args)
        == r.baselines["same architecture from scratch, same schedule"]
    )
    with pytest.raises(Exception, match="same architecture and schedule"):
        read_scratch_result(
            scratch_file, "semisup_10pct", "synthetic", "test", {**r.protocol_args, "epochs": 9}
        )


def _exported(folder, seed: int, **kwargs):
    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", num_classes=0, **kwargs)
    save_timm_folder(model, folder, tag="test", input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3,
                     model_args=kwargs or None)  # fmt: skip
    return folder


def test_one_scratch_run_serves_every_model_of_its_architecture_and_refuses_another(tmp_path):
    scratch = tmp_path / "scratch"

    def finetune(folder, out):
        return run_cli(
            "eval", "finetune", "--config", str(ROOT / "recipes/configs/eval/finetune_fmnist.yaml"),
            "--compare-scratch", "--scratch-dir", str(scratch), f"model.spec=local-dir:{folder}", *SYNTH,
            "finetune.batch_size=8", "finetune.epochs=1", "run.max_steps=2", f"run.output_dir={tmp_path / out}",
            check=False,
        )  # fmt: skip

    first, second = _exported(tmp_path / "a", seed=0), _exported(tmp_path / "b", seed=1)
    proc = finetune(first, "ft_a")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [scratch_file] = (scratch / "results").glob("finetune_*.json")
    trained = json.loads(scratch_file.read_text())
    assert trained["protocol_args"]["init"] == "scratch"
    assert trained["protocol_args"]["architecture"].startswith("ResNet, ")
    proc = finetune(
        second, "ft_b"
    )  # same architecture, other weights: the scratch run is reused, not retrained
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reusing" in proc.stdout + proc.stderr
    assert json.loads(scratch_file.read_text()) == trained
    a, b = _stored(first, "finetune"), _stored(second, "finetune")
    assert a.baselines == b.baselines == {"same architecture from scratch, same schedule": trained["value"]}
    assert not (tmp_path / "ft_b" / "scratch").exists()
    # another architecture (other widths): a clear error that names the difference, not a wrong baseline
    other = _exported(tmp_path / "c", seed=0, channels=(16, 32, 64, 128))
    proc = finetune(other, "ft_c")
    assert proc.returncode != 0
    assert "same architecture and schedule (architecture: scratch 'ResNet" in proc.stderr
    assert "--scratch-dir" in proc.stderr


def test_vit_finetune_config_with_layer_decay_mixup_randaugment_runs_two_steps(tmp_path):
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", num_classes=0, img_size=32, patch_size=8)
    folder = tmp_path / "vit"
    save_timm_folder(
        vit,
        folder,
        tag="test",
        input_size=(3, 32, 32),
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        model_args={"img_size": 32, "patch_size": 8},
    )
    _recipe(
        "finetune.py",
        "--config",
        str(ROOT / "recipes/configs/eval/finetune_vit_small_in1k.yaml"),
        f"model.spec=local-dir:{folder}",
        *SYNTH,
        "aug.image_size=32",
        "finetune.batch_size=8",
        "run.max_steps=2",
        f"run.output_dir={tmp_path / 'out'}",
    )
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["steps"] == 2
    r = _stored(folder, "finetune")
    assert r.protocol_args["layer_decay"] == 0.75 and r.protocol_args["mixup"] == 0.8
    assert "RandAugment(2, 9)" in r.protocol_args["train_aug"]


def test_a_training_checkpoint_is_evaluated_as_its_export_and_the_result_lands_in_the_card(tmp_path):
    run = tmp_path / "run"
    run_pretrain(
        *TINY, "train.epochs=1", "knn.enabled=false", "train.export=false", f"train.output_dir={run}"
    )
    stale = tmp_path / "knn" / "metrics.csv"  # an earlier evaluation's log: set aside, not appended to
    stale.parent.mkdir()
    stale.write_text("step,key,value\n0,eval/knn_top1,1.0\n")
    _recipe(
        "knn_eval.py",
        f"model.spec=checkpoint:{run}",
        *SYNTH,
        "knn.k=10",
        f"run.output_dir={tmp_path / 'knn'}",
    )
    assert (tmp_path / "knn" / "metrics.previous.csv").read_text() == "step,key,value\n0,eval/knn_top1,1.0\n"
    [ckpt] = (run / "checkpoints").iterdir()
    r = _stored(ckpt, "knn")
    [(step, top1)] = read_metrics(stale)["eval/knn_top1"]  # this run's value alone
    assert step == 0 and top1 == pytest.approx(r.value)
    # An export of that checkpoint carries the result into its model card.
    run_cli("export", str(run), str(tmp_path / "export"))
    card = ModelCard.load(tmp_path / "export" / "README.md")
    assert f"**{r.value:.2f}%**" in card.text
    assert len(card.data.eval_results) == 1


def test_bad_model_specs_are_clear_errors(tmp_path):
    proc = _recipe(
        "knn_eval.py", "model.spec=resnet_fifty", *SYNTH, f"run.output_dir={tmp_path}", check=False
    )
    assert proc.returncode != 0 and "is not a model spec" in proc.stderr and "local-dir:PATH" in proc.stderr
    proc = _recipe(
        "knn_eval.py", f"model.spec=local-dir:{tmp_path}", *SYNTH, f"run.output_dir={tmp_path}", check=False
    )
    assert proc.returncode != 0 and "no config.json" in proc.stderr


def test_results_schema_rejects_malformed_records():
    good = {
        "schema_version": 1,
        "metric": "top1",
        "value": 80.0,
        "unit": "%",
        "protocol": "knn",
        "protocol_args": {},
        "dataset": "fashion_mnist",
        "split": "test",
        "command": "x",
        "date": "2026-01-01T00:00:00+00:00",
    }
    try:
        validate_record(good, "good")
    except ResultsError as e:  # the schema's required fields may differ: the error then names them
        pytest.fail(f"the minimal record was refused: {e}")
    for broken, match in (
        ({k: v for k, v in good.items() if k != "value"}, "missing field 'value'"),
        ({**good, "value": "80"}, "'value' has type str"),
        ({**good, "surprise": 1}, "unknown field"),
        ({**good, "baselines": {"floor": "x"}}, "not a number"),
    ):
        with pytest.raises(ResultsError, match=match):
            validate_record(broken, "broken.json")


def test_plots_draw_every_logged_term_and_a_comparison_of_stored_results(model_dir, tmp_path):
    from PIL import Image

    run = tmp_path / "run"
    run_pretrain(*TINY, "method.name=co2", "train.epochs=1", "knn.at_start=true", f"train.output_dir={run}")
    proc = run_cli("plot", "curves", str(run))
    png = run / "training_curves.png"
    assert Image.open(png).size[0] > 300
    logged = set(read_metrics(run / "metrics.csv"))
    assert {"train/loss", "train/loss_nce", "train/loss_co2", "train/acc1", "eval/knn_top1"} <= logged
    assert all(k in proc.stdout for k in logged - {"train/epoch"}), (logged, proc.stdout)
    # Comparison: the export of that run (kNN stored by the monitor) beside the tiny model's stored results.
    proc = run_cli("plot", "compare", str(run / "backbone"), str(model_dir), "--out", str(tmp_path / "c.png"))
    assert Image.open(tmp_path / "c.png").size[0] > 300 and "from 2 model(s)" in proc.stdout


@needs_fmnist
def test_knn_cli_on_fashion_mnist_reports_the_floor_and_random_init_beside_the_model(tmp_path):
    """`xmoco-zoo knn` (the quickstart's last command) is the kNN recipe; its raw-pixel baseline is the 78.85 %
    floor exactly (the same features as tests/test_knn.py's, recovered from the normalised input)."""
    torch.manual_seed(0)
    folder = tmp_path / "gray"
    save_timm_folder(
        timm.create_model("test_resnet", num_classes=0, in_chans=1),
        folder,
        tag="test",
        input_size=(1, 28, 28),
        mean=(0.286,),
        std=(0.353,),
        model_args={"in_chans": 1},
    )
    out = tmp_path / "knn.json"
    proc = run_cli(
        "knn", f"local-dir:{folder}", "--baselines", "--json", str(out), "--output-dir", str(tmp_path / "run")
    )
    rows = json.loads(out.read_text())["top1"]
    assert rows["raw pixels, L2-normalised (the floor)"] == pytest.approx(
        78.85, abs=1e-4
    )  # 7885 of 10000 test images
    assert len(rows) == 3 and "raw pixels, L2-normalised (the floor)" in proc.stdout
    assert _stored(folder, "knn").value == pytest.approx(rows[f"local-dir:{folder}"], abs=1e-4)
