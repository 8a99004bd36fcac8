"""The zoo's training queue (scripts/zoo_queue.py): what counts as published, delivery from a pinned checkout, the
order of its commands. The trainings and evaluations themselves are the recipes' (tested in test_recipe.py and
test_protocols.py); here ``sh`` is replaced by a fake that writes what they would."""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import zoo_queue  # noqa: E402


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A committed checkout with the index files, standing in for the pinned worktree."""
    repo = tmp_path / "wt"
    (repo / "hub").mkdir(parents=True)
    (repo / "README.md").write_text("models: none\n")
    (repo / "hub" / "results.csv").write_text("model,knn\n")
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


def _publish_into(folder, protocols=zoo_queue.PROTOCOLS, knn=81.5):
    (folder / "results").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
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


def test_delivery_from_a_pinned_checkout_moves_the_folder_and_leaves_the_checkout_clean(
    checkout, tmp_path, monkeypatch
):
    out = tmp_path / "main_hub"
    out.mkdir()
    monkeypatch.setattr(zoo_queue, "HUB_OUT", out)
    model = zoo_queue.ZooModel("mocov2-x", "MoCo v2", "recipes/configs/mocov2_fmnist.yaml")
    _publish_into(checkout / "hub" / model.name)
    (checkout / "README.md").write_text("models: mocov2-x\n")  # what `xmoco-zoo list --write` does
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
        else:
            _publish_into(checkout / "hub" / cut.name, knn=82.25)
        return 1.0

    monkeypatch.setattr(zoo_queue, "sh", fake_sh)
    assert zoo_queue.main(["run"]) == 0
    pretrain, publish = calls
    assert pretrain[-1] == "--resume" and "train.epochs=9" in pretrain
    assert "train.output_dir=runs/zoo/cut" in pretrain
    assert publish == ["bash", "scripts/publish_fmnist.sh", "runs/zoo/cut", "cut"]
    assert zoo_queue.published(out / cut.name)
    assert "cut: published, kNN 82.25" in capsys.readouterr().out
    calls.clear()
    assert zoo_queue.main(["run"]) == 0 and calls == [], "everything is published: nothing runs"
