"""Export, model card, results files, offline hf-hub loads, push --dry-run and the published hub/ folders.

The HTTP side (pull through olah, push through huggingface_hub's client) is in test_hub_http.py.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from xmoco_zoo.card import write_model_card
from xmoco_zoo.export import ExportError, export_checkpoint
from xmoco_zoo.hub import HubError, check_folder, populate_hf_cache, push_folder
from xmoco_zoo.results import EvalRecord, ResultsError, read_results, validate_record, write_result

from .conftest import ROOT, TINY, run_cli, run_pretrain

PREFIX = "encoder.online.backbone."
TOKEN = "hf_SECRETtokenNEVERprinted0123456789"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny 2-epoch training run (synthetic data, grayscale, 28 px) with the kNN monitor on."""
    out = tmp_path_factory.mktemp("export") / "run"
    run_pretrain(
        *TINY,
        "model.kwargs.in_chans=1",
        "aug.image_size=28",
        "aug.mean=[0.3]",
        "aug.std=[0.35]",
        "knn.at_start=true",
        f"train.output_dir={out}",
    )
    return out


def _training(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())["xmoco_zoo"]["training"]


def _backbone_of(ckpt: Path, **kwargs) -> torch.nn.Module:
    state = load_file(str(ckpt / "model.safetensors"))
    ref = timm.create_model("test_resnet", num_classes=0, **kwargs)
    ref.load_state_dict({k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)})
    return ref.eval()


def test_export_folder_is_timm_hub_format_with_clean_config(run):
    folder = run / "backbone"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "results",
        "training_config.yaml",
    ]
    cfg = json.loads((folder / "config.json").read_text())
    pcfg = cfg["pretrained_cfg"]
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 0 and pcfg["num_classes"] == 0
    assert pcfg["tag"] == "mocov2_synthetic" and pcfg["input_size"] == [1, 28, 28]
    assert pcfg["mean"] == [0.3] and pcfg["std"] == [0.35] and cfg["model_args"]["in_chans"] == 1
    assert not {"hf_hub_id", "url", "test_input_size"} & set(pcfg), (
        "nothing inherited from timm's default weights"
    )
    assert pcfg["paper_ids"] == "arXiv:1911.05722,arXiv:2003.04297" and pcfg["license"] == "apache-2.0"
    meta = cfg["xmoco_zoo"]
    assert meta["method"] == "mocov2" and meta["dataset"] == "synthetic"
    assert meta["training"]["epochs"] == 2 and meta["training"]["steps"] == 16
    assert "recipes/pretrain.py" in meta["training"]["command"]
    check_folder(folder)


def test_round_trip_features_equal_the_trained_backbone_and_fine_tune_head_loads(run):
    model = timm.create_model(f"local-dir:{run / 'backbone'}", pretrained=True).eval()
    ref = _backbone_of(run / "checkpoints" / "epoch_0002", in_chans=1)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), ref(x))
    clf = timm.create_model(f"local-dir:{run / 'backbone'}", pretrained=True, num_classes=10).eval()
    assert clf(x).shape == (3, 10) and torch.equal(
        clf.forward_head(clf.forward_features(x), pre_logits=True), ref(x)
    )


def test_card_front_matter_parses_back_and_reports_only_stored_results(run):
    folder = run / "backbone"
    results = read_results(folder)
    assert [r.protocol for r in results] == ["knn"]
    knn = results[0]
    assert knn.notes == "the training run's kNN monitor after epoch 2" and len(knn.baselines) == 1
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "timm" and data["pipeline_tag"] == "image-feature-extraction"
    assert {"self-supervised", "mocov2", "image-feature-extraction", "timm"} <= set(data["tags"])
    assert data["license"] == "apache-2.0"
    [evr] = card.data.eval_results
    assert evr.metric_value == pytest.approx(knn.value) and evr.dataset_split == "test"
    assert f"**{knn.value:.2f}%**" in card.text and knn.command in card.text
    for section in ("## Model Details", "## Usage", "## Evaluation", "## Training", "## Citation"):
        assert section in card.text
    assert "Kaiming" in card.text and "features_only=True" in card.text and "num_classes=10" in card.text
    # Every percentage on the card is a stored result or one of its baselines, or (in Training) the kNN monitor
    # the training recorded in config.json: nothing else.
    stored = {f"{v:.2f}" for r in results for v in [r.value, *r.baselines.values()]}
    monitor = {f"{t:.2f}" for _, t in _training(folder)["knn_curve"]}
    evaluation, training = card.text.split("## Training", 1)
    assert set(re.findall(r"(\d+\.\d\d)%", evaluation)) <= stored
    assert set(re.findall(r"(\d+\.\d\d)%", training)) <= stored | monitor


def test_card_without_results_says_not_evaluated(run, tmp_path):
    folder = tmp_path / "bare"
    export_checkpoint(run, folder)
    for p in (folder / "results").glob("*.json"):
        p.unlink()
    card = ModelCard.load(write_model_card(folder))
    assert "Not evaluated" in card.text and card.data.eval_results is None
    evaluation, training = card.text.split("## Training", 1)
    assert not re.search(r"\d+\.\d\d%", evaluation)
    # the Training section's percentages are the monitor the training recorded, nothing else
    monitor = {f"{t:.2f}" for _, t in _training(folder)["knn_curve"]}
    assert monitor and set(re.findall(r"(\d+\.\d\d)%", training)) <= monitor


def test_card_usage_code_runs_as_written(run):
    text = (run / "backbone" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    namespace = {"img": Image.new("L", (40, 40), 128), "x": torch.randn(2, 1, 28, 28)}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own generated card
    assert namespace["embeddings"].shape == (1, 96)
    assert isinstance(namespace["feature_maps"], list) and namespace["model"](namespace["x"]).shape == (2, 10)


def test_export_from_a_checkpoint_equals_that_checkpoints_backbone(run, tmp_path):
    out = tmp_path / "from_ckpt"
    proc = run_cli("export", str(run / "checkpoints" / "epoch_0001"), str(out), "--repo-id", "xmoco-zoo/tiny")
    assert "exported to" in proc.stdout
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    ref = _backbone_of(run / "checkpoints" / "epoch_0001", in_chans=1)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), ref(x))
    meta = json.loads((out / "config.json").read_text())["xmoco_zoo"]
    assert meta["training"]["epochs"] == 1 and meta["repo_id"] == "xmoco-zoo/tiny"
    assert read_results(out)[0].notes.endswith("after epoch 1"), "the results stored with that checkpoint"
    assert 'timm.create_model("hf-hub:xmoco-zoo/tiny", pretrained=True)' in (out / "README.md").read_text()
    # A run folder exports its newest checkpoint; re-exporting replaces the folder.
    export_checkpoint(run, out)
    newest = _backbone_of(run / "checkpoints" / "epoch_0002", in_chans=1)
    assert torch.equal(timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x), newest(x))
    assert json.loads((out / "config.json").read_text())["xmoco_zoo"]["repo_id"] is None


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_export_halves_the_file_and_loads_into_a_float32_model(run, tmp_path, dtype):
    full = export_checkpoint(run, tmp_path / "fp32")
    half = export_checkpoint(run, tmp_path / dtype, dtype=dtype)
    stored = load_file(str(half / "model.safetensors"))
    for key, value in stored.items():
        if key.endswith(("running_mean", "running_var")):
            assert value.dtype == torch.float32, key
        elif value.is_floating_point():
            assert value.dtype == getattr(torch, dtype), key
        else:
            assert not value.is_floating_point(), key  # num_batches_tracked stays an integer
    assert (half / "model.safetensors").stat().st_mode == (full / "model.safetensors").stat().st_mode
    ratio = (half / "model.safetensors").stat().st_size / (full / "model.safetensors").stat().st_size
    assert ratio < 0.6, ratio
    model = timm.create_model(f"local-dir:{half}", pretrained=True).eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ref = timm.create_model(f"local-dir:{full}", pretrained=True).eval()
    x = torch.randn(4, 1, 28, 28)
    a, b = model(x), ref(x)
    # half precision rounds each weight by at most 2^-11 (float16) or 2^-8 (bfloat16) of itself
    tol = {"float16": 5e-3, "bfloat16": 4e-2}[dtype]
    assert (a - b).norm() / b.norm() < tol
    assert json.loads((half / "config.json").read_text())["xmoco_zoo"]["weights_dtype"] == dtype
    assert f"`model.safetensors`, {dtype} (BatchNorm statistics float32" in (half / "README.md").read_text()
    assert "`model.safetensors`, float32," in (full / "README.md").read_text()
    check_folder(half)


def test_export_dtype_is_checked(run, tmp_path):
    with pytest.raises(ExportError, match="unknown weights dtype 'int8'"):
        export_checkpoint(run, tmp_path / "out", dtype="int8")


def test_card_shows_the_knn_monitor_curve_and_the_training_curves_image(run, tmp_path):
    out = export_checkpoint(run, tmp_path / "with_curves")
    curve = json.loads((out / "config.json").read_text())["xmoco_zoo"]["training"]["knn_curve"]
    assert len(curve) == 3 and curve[0][0] == 0.0, "random init, then after each of the 2 epochs"
    card = (out / "README.md").read_text()
    assert "kNN top-1 during training" in card and f"0.0 min {curve[0][1]:.2f}%" in card
    assert "training_curves.png" not in card
    run_cli("plot", "curves", str(run), "--out", str(out / "training_curves.png"))
    write_model_card(out)
    card = (out / "README.md").read_text()
    assert "![training curves](training_curves.png)" in card
    check_folder(out)


def test_export_errors_name_the_problem(run, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty and not a previous export"):
        export_checkpoint(run, tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    fake = tmp_path / "fake" / "epoch_0001"
    fake.mkdir(parents=True)
    with pytest.raises(Exception, match="not a complete xmoco-zoo checkpoint"):
        export_checkpoint(fake, tmp_path / "out")


def test_hf_hub_loads_from_a_populated_offline_cache(run, tmp_path):
    cache = tmp_path / "hf_cache"
    populate_hf_cache(run / "backbone", "xmoco-zoo/tiny", cache)
    x = torch.randn(2, 1, 28, 28)
    expected = timm.create_model(f"local-dir:{run / 'backbone'}", pretrained=True).eval()(x)
    torch.save({"x": x, "y": expected}, tmp_path / "io.pt")
    code = (
        "import torch, timm, sys\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"  # bitwise equal needs the same reduction order
        f"d = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)\n"
        "m = timm.create_model('hf-hub:xmoco-zoo/tiny', pretrained=True).eval()\n"
        "assert torch.equal(m(d['x']), d['y']), 'features differ'\n"
        "m10 = timm.create_model('hf-hub:xmoco-zoo/tiny', pretrained=True, num_classes=10)\n"
        "assert m10(d['x']).shape == (2, 10)\n"
        "print('ok', m.pretrained_cfg['tag'])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    env.pop("HF_ENDPOINT", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok mocov2_synthetic" in proc.stdout


def test_push_dry_run_lists_files_and_never_prints_the_token(run, tmp_path, monkeypatch):
    env = {"HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    folder = tmp_path / "pushme"
    export_checkpoint(run, folder)
    proc = run_cli("push", str(folder), "xmoco-zoo/tiny", "--dry-run", env=env)
    assert "would upload 5 files" in proc.stdout
    for name in ("README.md", "config.json", "model.safetensors", "results/knn_synthetic_test.json"):
        assert name in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr
    # The dry run re-rendered the card for the repo id.
    assert "hf-hub:xmoco-zoo/tiny" in (folder / "README.md").read_text()
    # Without a token (none in HF_TOKEN, none in the login cache): a clear error, nothing uploaded.
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HubError, match="no Hugging Face token"):
        push_folder(folder, "xmoco-zoo/tiny", endpoint="http://127.0.0.1:9")
    with pytest.raises(HubError, match="org/name"):
        push_folder(folder, "tiny", dry_run=True)


def test_check_folder_refuses_a_stale_config(run, tmp_path):
    folder = tmp_path / "stale"
    export_checkpoint(run, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_classes"] = 1000
    cfg["pretrained_cfg"]["hf_hub_id"] = "timm/resnet50.a1_in1k"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HubError, match="num_classes must be 0.*hf_hub_id"):
        check_folder(folder)
    (folder / "README.md").unlink()
    with pytest.raises(HubError, match="lacks"):
        check_folder(folder)


def test_results_schema(tmp_path):
    rec = EvalRecord(
        metric="top1", value=81.5, protocol="knn", dataset="fashion_mnist", split="test", command="x"
    )
    path = write_result(tmp_path, rec)
    assert path.name == "knn_fashion_mnist_test.json"
    d = json.loads(path.read_text())
    assert d["date"] and d["schema_version"] == 1 and read_results(tmp_path)[0] == rec
    for broken, message in [
        ({k: v for k, v in d.items() if k != "command"}, "missing field 'command'"),
        ({**d, "value": "81.5"}, "'value' has type str"),
        ({**d, "accuracy": 1}, "unknown field"),
        ({**d, "baselines": {"raw": "x"}}, "baseline 'raw' is not a number"),
        ({**d, "schema_version": 9}, "schema_version 9"),
    ]:
        with pytest.raises(ResultsError, match=message):
            validate_record(broken, "f.json")
    path.write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        read_results(tmp_path)


PUBLISHED = sorted(p for p in (ROOT / "hub").iterdir() if p.is_dir()) if (ROOT / "hub").is_dir() else []


@pytest.mark.parametrize("folder", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_published_models_are_complete_and_load(folder):
    cfg = check_folder(folder)
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    chans, h, w = cfg["pretrained_cfg"]["input_size"]
    assert model(torch.zeros(1, chans, h, w)).shape == (1, cfg["num_features"])
    results = read_results(folder)
    card = ModelCard.load(folder / "README.md")
    assert card.data.eval_results and len(card.data.eval_results) == len(results)
    for r in results:
        assert f"**{r.value:.2f}%**" in card.text
    assert f"hf-hub:{cfg['xmoco_zoo']['repo_id']}" in card.text
