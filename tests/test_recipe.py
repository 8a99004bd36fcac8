"""The pretrain recipe end to end, in subprocesses as users run it."""

import json

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from xmoco_zoo.logging import read_metrics

from .conftest import ROOT, launch_two, run_pretrain


def _ckpt(out, epoch):
    return out / "checkpoints" / f"epoch_{epoch:04d}"


def test_pretrain_logs_checkpoints_and_exports_a_timm_model(tmp_path, tiny_args):
    out = tmp_path / "run"
    run_pretrain(
        *tiny_args,
        f"train.output_dir={out}",
        "train.epochs=3",
        "train.keep_checkpoints=2",
        "knn.at_start=true",
    )
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["epoch_0002", "epoch_0003"], (
        "last N kept"
    )
    assert (out / "config.yaml").is_file()
    series = read_metrics(out / "metrics.csv")
    for key in ("train/loss", "train/loss_nce", "train/acc1", "train/lr", "train/momentum", "eval/knn_top1"):
        assert key in series, key
    assert len(series["eval/knn_top1"]) == 4 and series["eval/knn_top1"][0][0] == 0  # random init + 3 epochs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_done"] == 3 and summary["knn_top1"] == series["eval/knn_top1"][-1][1]

    # The export is the online backbone of the last checkpoint, loadable by timm as users do.
    model = timm.create_model(f"local-dir:{out / 'backbone'}", pretrained=True).eval()
    state = load_file(str(_ckpt(out, 3) / "model.safetensors"))
    prefix = "encoder.online.backbone."
    ref = timm.create_model("test_resnet", num_classes=0)
    ref.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(model(x), ref.eval()(x), rtol=0, atol=0)
    cfg = json.loads((out / "backbone" / "config.json").read_text())
    assert cfg["num_classes"] == 0 and cfg["pretrained_cfg"]["num_classes"] == 0
    assert cfg["pretrained_cfg"]["tag"] == "mocov2_synthetic" and cfg["pretrained_cfg"]["input_size"] == [
        3,
        32,
        32,
    ]
    head = timm.create_model(f"local-dir:{out / 'backbone'}", pretrained=True, num_classes=10)
    assert head(x).shape == (4, 10)
    # the card's training minutes and machine: the epochs' wall-clock, logged and summed
    training = cfg["xmoco_zoo"]["training"]
    minutes = series["time/train_minutes"]
    assert [step for step, _ in minutes] == [8, 16, 24] and minutes[0][1] < minutes[-1][1]
    assert training["train_minutes"] == summary["train_minutes"] == round(minutes[-1][1], 2)
    assert "torch " in training["machine"]
    card = (out / "backbone" / "README.md").read_text()
    assert f"{training['train_minutes']:.0f} min on {training['machine']}" in card


@pytest.mark.parametrize("method,batched", [("mocov2", False), ("mocov3", False), ("mocov2", True)])
def test_resume_after_epoch_one_matches_an_uninterrupted_run_bitwise(tmp_path, tiny_args, method, batched):
    """Same seeds on CPU: model, momentum encoder, queue and optimizer state are bitwise equal.

    The resumed half also runs with 2 loader workers instead of 0: views are seeded per sample (per batch
    with aug.batched), so the worker count does not change the data.
    """
    args = [*tiny_args, f"method.name={method}", "method.hidden_dim=32", "method.pred_hidden_dim=32"]
    args.append(f"aug.batched={str(batched).lower()}")
    full, split = tmp_path / "full", tmp_path / "split"
    run_pretrain(*args, f"train.output_dir={full}")
    run_pretrain(*args, f"train.output_dir={split}", "train.stop_after_epoch=1")
    assert (
        not _ckpt(split, 2).exists() and json.loads((split / "summary.json").read_text())["epochs_done"] == 1
    )
    run_pretrain(*args, f"train.output_dir={split}", "data.num_workers=2", "--resume")
    a, b = (
        load_file(str(_ckpt(full, 2) / "model.safetensors")),
        load_file(str(_ckpt(split, 2) / "model.safetensors")),
    )
    assert a.keys() == b.keys()
    if method == "mocov2":
        assert "queue.queue" in a and "queue.ptr" in a
    assert any(".momentum." in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    oa = torch.load(_ckpt(full, 2) / "optimizer.bin", weights_only=True)
    ob = torch.load(_ckpt(split, 2) / "optimizer.bin", weights_only=True)
    for i, st in oa["state"].items():
        for name, t in st.items():
            assert torch.equal(t, ob["state"][i][name]), f"optimizer state {i}/{name} differs"
    sa = json.loads((full / "summary.json").read_text())
    sb = json.loads((split / "summary.json").read_text())
    assert sa["steps"] == sb["steps"] and sa["knn_top1"] == sb["knn_top1"]


def test_metrics_csv_has_one_value_per_step_after_a_resume_and_a_fresh_start_sets_the_old_file_aside(
    tmp_path, tiny_args
):
    """metrics.csv is appended to: a resumed run first drops the rows an attempt logged after the checkpoint it
    resumes from (a kill -9 leaves them; the run logs those steps again), and a start from scratch into the same
    folder moves an earlier attempt's file to metrics.previous.csv instead of appending to it. Either way every
    series has one value per step, as the training-curves plot and the card's curve need."""
    out = tmp_path / "run"
    common = [*tiny_args, f"train.output_dir={out}", "knn.enabled=false"]
    run_pretrain(*common, "train.stop_after_epoch=1")
    metrics = out / "metrics.csv"
    first = read_metrics(metrics)["train/loss"]
    assert [s for s, _ in first] == [2, 4, 6, 8]  # 8 steps an epoch, logged every 2
    with metrics.open("a") as f:  # what an attempt killed after the epoch-1 checkpoint had logged
        f.write("10,train/loss,99.0\n12,train/loss,99.0\n")
    proc = run_pretrain(*common, "--resume")
    assert "dropped 2 rows logged after step 8" in proc.stdout + proc.stderr
    loss = read_metrics(metrics)["train/loss"]
    assert [s for s, _ in loss] == [2, 4, 6, 8, 10, 12, 14, 16] and 99.0 not in [v for _, v in loss]
    assert loss[:4] == first

    before = metrics.read_text()
    proc = run_pretrain(*common)  # from scratch again, into the same folder
    assert "moved to metrics.previous.csv" in proc.stdout + proc.stderr
    assert (out / "metrics.previous.csv").read_text() == before
    assert [s for s, _ in read_metrics(metrics)["train/loss"]] == [2, 4, 6, 8, 10, 12, 14, 16]


def test_resume_refuses_a_checkpoint_of_another_backbone(tmp_path, tiny_args):
    out = tmp_path / "run"
    run_pretrain(*tiny_args, f"train.output_dir={out}", "train.epochs=1", "knn.enabled=false")
    with pytest.raises(
        AssertionError, match="different setup.*backbone: checkpoint 'test_resnet' vs config 'resnet18'"
    ):
        run_pretrain(*tiny_args, f"train.output_dir={out}", "model.backbone=resnet18", "--resume")
    with pytest.raises(AssertionError, match="no complete checkpoint"):
        run_pretrain(*tiny_args, f"train.output_dir={tmp_path / 'empty'}", "--resume")


def _image_folder(root, classes=2, per_class=8, size=224):
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.jpg")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(p.stem for p in (ROOT / "recipes/configs").glob("*_in1k.yaml")))
def test_imagenet_configs_run_two_steps_on_224px_image_folder(tmp_path, config):
    data = _image_folder(tmp_path / "imagenet")
    out = tmp_path / "run"
    run_pretrain(
        "--config",
        str(ROOT / "recipes/configs" / f"{config}.yaml"),
        f"data.root={data}",
        f"train.output_dir={out}",
        "train.batch_size=8",
        "train.max_steps=2",
        "data.num_workers=0",
        "knn.batch_size=8",
        "train.trackers=[]",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["knn_top1"] is not None
    cfg = json.loads((out / "backbone" / "config.json").read_text())
    assert cfg["pretrained_cfg"]["input_size"] == [3, 224, 224] and cfg["num_classes"] == 0


def run_two_processes(*args: str, timeout: int = 600):
    proc = launch_two(*args, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"2-process run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mocov2", "mocov3"])
def test_two_gloo_processes_train_and_checkpoint(tmp_path, tiny_args, method):
    """2 CPU processes (gloo): shuffle BN across processes (v2), all-reduce BN in the heads (v3)."""
    out = tmp_path / "run"
    proc = run_two_processes(
        *tiny_args,
        f"method.name={method}",
        "method.hidden_dim=32",
        "method.pred_hidden_dim=32",
        f"train.output_dir={out}",
        "train.epochs=1",
        "train.batch_size=8",
    )
    assert "2 process(es) x batch 8" in proc.stdout + proc.stderr
    state = load_file(str(_ckpt(out, 1) / "model.safetensors"))
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert steps == 128 // 16
    if method == "mocov2":  # every step enqueues both processes' keys: 16 per step into a queue of 100
        assert int(state["queue.ptr"]) == (steps * 16) % 100
    else:
        assert any("running_mean" in k and "predictor" in k for k in state)


def test_non_finite_loss_stops_with_step_and_term_and_keeps_the_last_good_checkpoint(tmp_path, tiny_args):
    out = tmp_path / "run"
    run_pretrain(*tiny_args, f"train.output_dir={out}", "train.stop_after_epoch=1", "knn.enabled=false")
    good = load_file(str(_ckpt(out, 1) / "model.safetensors"))
    with pytest.raises(
        AssertionError, match=r"NonFiniteLossError: step \d+ \(epoch 2\): loss\w* = (nan|inf)"
    ) as e:
        run_pretrain(
            *tiny_args, f"train.output_dir={out}", "train.base_lr=1e30", "knn.enabled=false", "--resume"
        )
    assert "last good checkpoint" in str(e.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001"]
    kept = load_file(str(_ckpt(out, 1) / "model.safetensors"))
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_resume_with_another_total_batch_continues_the_schedules_from_the_same_epoch(tmp_path, tiny_args):
    out = tmp_path / "run"
    run_pretrain(*tiny_args, f"train.output_dir={out}", "train.stop_after_epoch=1", "knn.enabled=false")
    # 128 images: 8 steps of 16 per epoch; resumed with batch 8 there are 16 steps per epoch.
    proc = run_pretrain(
        *tiny_args, f"train.output_dir={out}", "train.batch_size=8", "knn.enabled=false", "--resume"
    )
    assert "total batch of 16, this run has 8" in proc.stdout and "(step 8 -> 16)" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_done"] == 2 and summary["steps"] == 32
    lrs = dict(read_metrics(out / "metrics.csv")["train/lr"])
    # Epoch 2 runs steps 17..32 of the new 32-step schedule, its lr falling along the cosine to its end (read
    # as step 8 of the new schedule, epoch 2 would have run steps 9..24 and stopped half-way down).
    late = sorted(k for k in lrs if k > 16)
    assert late and late[-1] == 32 and lrs[late[0]] > lrs[late[-1]] > 0


@pytest.mark.parametrize("method", ["mocov2", "mocov3", "co2", "xmoco", "amcl"])
def test_every_method_trains_two_steps_under_bf16_autocast(tmp_path, tiny_args, method):
    """The GPU users' AMP path: ``accelerate launch --mixed_precision bf16`` (CPU autocast here) runs every
    method for two steps with finite losses (the losses themselves run in float32 outside autocast). The
    launcher's whole effect on one process is ACCELERATE_MIXED_PRECISION=bf16 in the recipe's environment, set
    here directly (a launcher process per method cost 3 s of start-up)."""
    out = tmp_path / "run"
    run_pretrain(
        *tiny_args, f"method.name={method}", "method.hidden_dim=32", "method.pred_hidden_dim=32",
        f"train.output_dir={out}", "train.max_steps=2", "train.log_every=1", "knn.enabled=false",
        "train.export=false", env={"ACCELERATE_MIXED_PRECISION": "bf16"},
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mixed_precision"] == "bf16" and summary["steps"] == 2
    series = read_metrics(out / "metrics.csv")
    losses = {k: v for k, v in series.items() if k.startswith("train/loss")}
    assert "train/loss" in losses and len(losses["train/loss"]) == 2
    assert all(torch.isfinite(torch.tensor([v for _, v in vs])).all() for vs in losses.values())


def test_knn_at_fractional_epochs_evaluates_mid_epoch_without_changing_training(tmp_path, tiny_args):
    """A fractional knn.epochs mark (0.5) runs the monitor after that share of the epoch's steps: one more curve
    point at its training minutes, while the weights stay those of a run without it (the monitor's RNG draws are
    undone)."""
    marked, plain = tmp_path / "marked", tmp_path / "plain"
    proc = run_pretrain(
        *tiny_args,
        f"train.output_dir={marked}",
        "knn.at_start=true",
        "knn.epochs=[0.5,1.25]",
        "train.log_every=1",
    )
    run_pretrain(*tiny_args, f"train.output_dir={plain}", "knn.at_start=true", "train.log_every=1")
    log = proc.stdout + proc.stderr
    assert "epoch 0.50 (step 4): kNN" in log and "epoch 1.25 (step 10): kNN" in log, "8 steps per epoch"
    curve = json.loads((marked / "backbone" / "config.json").read_text())["xmoco_zoo"]["training"][
        "knn_curve"
    ]
    minutes = [m for m, _ in curve]
    assert len(curve) == 5 and minutes == sorted(minutes), "init, 0.5, 1, 1.25, 2"
    logged = [step for step, _ in read_metrics(marked / "metrics.csv")["eval/knn_top1"]]
    assert logged == [0, 4, 8, 10, 16]
    a, b = (
        load_file(str(_ckpt(marked, 2) / "model.safetensors")),
        load_file(str(_ckpt(plain, 2) / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (
        "the mid-epoch monitor changed training"
    )


def test_knn_curve_at_chosen_epochs_is_recorded_and_survives_a_resume(tmp_path, tiny_args):
    """knn.epochs adds monitor evaluations to knn.every's; every evaluation's (training minutes, top-1) is kept
    in the checkpoints' train state (so a resumed run keeps the earlier points) and in the export's training
    facts, which the zoo's plot draws."""
    out = tmp_path / "run"
    common = [*tiny_args, f"train.output_dir={out}", "train.epochs=4", "knn.every=100", "knn.epochs=[1,2]"]
    run_pretrain(*common, "knn.at_start=true", "train.stop_after_epoch=2")
    proc = run_pretrain(*common, "--resume")
    log = proc.stdout + proc.stderr
    assert "epoch 3: kNN" not in log and "epoch 4: kNN" in log
    training = json.loads((out / "backbone" / "config.json").read_text())["xmoco_zoo"]["training"]
    curve = training["knn_curve"]
    assert [len(p) for p in curve] == [2, 2, 2, 2], (
        "random init, epochs 1 and 2 (first run), epoch 4 (resumed)"
    )
    minutes = [m for m, _ in curve]
    assert (
        minutes[0] == 0.0
        and minutes == sorted(minutes)
        and minutes[-1] == pytest.approx(training["train_minutes"], abs=0.01)
    )
    summary = json.loads((out / "summary.json").read_text())
    assert curve[0][1] == pytest.approx(summary["knn_init"], abs=1e-3)
    assert curve[-1][1] == pytest.approx(summary["knn_top1"], abs=1e-3)
    # the card's command trains the same model in an empty folder: the resumed start's --resume is not in it
    assert "recipes/pretrain.py" in training["command"] and "--resume" not in training["command"]
    assert "train.epochs=4" in training["command"]
