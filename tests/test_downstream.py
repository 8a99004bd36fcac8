"""``xmoco-zoo export --to torchvision|detectron2|onnx``: a backbone in the layouts downstream code reads.

- torchvision: every architecture claimed has torchvision's keys and shapes; the exported state dict loads
  into torchvision's ResNet and into ``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)``'s
  ``backbone.body`` with strict key checking, the pooled features equal timm's, the detector runs.
- detectron2: the key mapping checked against detectron2's ResNet-50 parameter names and shapes, written into
  ``tests/data/detectron2_R50_backbone_params.txt`` from detectron2's source, and the way detectron2 matches
  names (``matching_heuristics``: the longest dotted suffix, ``align_and_update_state_dicts``) reimplemented
  here. Not run against detectron2 itself, which is not installable here.
- ONNX: every model in ``hub/`` and a converted official-layout ResNet-50, checked with onnxruntime
  (max abs difference <= 1e-4 at a batch size other than the exported one).
- The chain: official MoCo v2 and v3 ResNet-50 checkpoints (built here from random weights in the official
  layouts) -> ``xmoco-zoo convert`` -> each target, compared with the original encoder.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

from xmoco_zoo.downstream import (
    TORCHVISION_RESNETS,
    DownstreamError,
    detectron2_state_dict,
    export_downstream,
    torchvision_resnet,
    torchvision_state_dict,
)

from .conftest import ROOT, run_cli
from .test_convert import _prefixed, _randomize_norms

HUB_MODELS = sorted(p.parent for p in (ROOT / "hub").glob("*/config.json"))
D2_PARAMS = Path(__file__).parent / "data" / "detectron2_R50_backbone_params.txt"


def _trained_like_norms(net: nn.Module) -> None:
    """BN as a trained ResNet has it: random affine parameters, the last BN of each residual branch scaled
    down (trained ResNet-50s have small last-BN scales; timm and Goyal et al. start them at zero), and running
    statistics of one batch. Without that, an untrained ResNet-50's features reach ~200 and amplify float32
    rounding so much that torch in float32 differs from float64 by ~1e-4 (measured: with these norms ~2e-6,
    and onnxruntime's error is of the same size as torch's own)."""
    _randomize_norms(net)
    with torch.no_grad():
        for block in net.modules():
            if isinstance(block, torchvision.models.resnet.Bottleneck):
                block.bn3.weight.uniform_(0.1, 0.3)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # the cumulative average: this batch's statistics
        net.train()(torch.randn(8, 3, 96, 96, generator=torch.Generator().manual_seed(7)))
        for m in bns:
            m.momentum = 0.1
    net.eval()


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# ------------------------------------------------------------------------------------------ torchvision


@pytest.mark.parametrize("arch", TORCHVISION_RESNETS)
def test_every_claimed_architecture_has_torchvisions_keys_and_shapes(arch):
    with torch.device("meta"):
        ours = timm.create_model(arch, num_classes=0).state_dict()
        theirs = getattr(torchvision.models, arch)().state_dict()
    theirs = {k: v.shape for k, v in theirs.items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == theirs


@pytest.mark.parametrize("arch", ["resnet18", "resnext50_32x4d"])
def test_torchvision_features_equal_timms(arch):
    """Basic blocks and grouped bottlenecks (resnet50 is in the chain test below; the wide ResNets differ from
    it in widths only, which the keys-and-shapes test covers)."""
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=0)
    _randomize_norms(model)
    tv = torchvision_resnet(model)  # raises unless strict keys and features within 1e-4
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(_features(tv, x), _features(model, x), rtol=0, atol=1e-5)


def test_a_backbone_without_a_counterpart_is_refused_naming_the_ones_that_work(tmp_path):
    hub_model = timm.create_model(f"local-dir:{HUB_MODELS[0]}", pretrained=True)
    with pytest.raises(DownstreamError) as e:
        export_downstream(hub_model, tmp_path / "x.pth", "torchvision")
    msg = str(e.value)
    assert msg.startswith("resnet10t has no torchvision counterpart") and all(
        a in msg for a in TORCHVISION_RESNETS
    )
    assert not (tmp_path / "x.pth").exists()
    # Same name, not the same network: one input channel, or another pooling with the very same keys.
    with pytest.raises(DownstreamError, match="do not fit torchvision's resnet18"):
        torchvision_resnet(timm.create_model("resnet18", num_classes=0, in_chans=1))
    with pytest.raises(DownstreamError, match="computes other features"):
        torchvision_resnet(timm.create_model("resnet18", num_classes=0, global_pool="max"))


def test_the_cli_refuses_resnet10t_with_the_list(tmp_path):
    proc = run_cli("export", "--to", "detectron2", str(HUB_MODELS[0]), str(tmp_path / "x.pkl"), check=False)
    assert proc.returncode != 0
    assert "resnet10t has no torchvision counterpart" in proc.stderr and "wide_resnet50_2" in proc.stderr


# ------------------------------------------------------------------------------------------ detectron2


def _detectron2_params(norm: str = "FrozenBN") -> dict[str, tuple[int, ...]]:
    out = {}
    for line in D2_PARAMS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split()
            out[name] = tuple(int(s) for s in shape.split("x"))
            if norm != "FrozenBN" and name.endswith(".norm.running_var"):
                out[name.replace("running_var", "num_batches_tracked")] = ()
    return out


def _align(model_keys: dict[str, tuple], ckpt: dict[str, np.ndarray]) -> tuple[dict[str, str], list[str]]:
    """detectron2's ``align_and_update_state_dicts`` (checkpoint/c2_model_loading.py) without the Caffe2
    renames: each model key takes the longest checkpoint key that equals it or is a dotted suffix of it; a
    checkpoint key matching two model keys is an error there, and here. Returns (model key -> checkpoint key,
    unused checkpoint keys)."""
    matched: dict[str, str] = {}
    for mk, shape in model_keys.items():
        hits = [ck for ck in ckpt if mk == ck or mk.endswith("." + ck)]
        if not hits:
            continue
        ck = max(hits, key=len)
        assert tuple(ckpt[ck].shape) == shape, f"{ck}: {ckpt[ck].shape} vs {mk}: {shape}"
        assert ck not in matched.values(), f"{ck} matches two model keys"
        matched[mk] = ck
    return matched, sorted(set(ckpt) - set(matched.values()))


@pytest.fixture(scope="module")
def r50_detectron2() -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    torch.manual_seed(0)
    tv = torchvision_state_dict(timm.create_model("resnet50", num_classes=0))
    return tv, detectron2_state_dict(tv)


@pytest.mark.parametrize("norm", ["FrozenBN", "SyncBN"])
@pytest.mark.parametrize("head", ["FPN", "C4"])
def test_detectron2_names_match_every_resnet50_parameter(r50_detectron2, norm, head):
    """R-50-FPN keeps the ResNet under backbone.bottom_up; R-50-C4 has stem..res4 under backbone and res5 in
    roi_heads. Every parameter finds its tensor; only FrozenBN (which has none) leaves num_batches_tracked."""
    tv, d2 = r50_detectron2
    params = _detectron2_params(norm)

    def prefix(name: str) -> str:
        if head == "FPN":
            return "backbone.bottom_up." + name
        return ("roi_heads." if name.startswith("res5.") else "backbone.") + name

    model = {prefix(k): v for k, v in params.items()}
    model.update(
        {"backbone.fpn_lateral2.weight": (256, 256, 1, 1), "roi_heads.box_head.fc1.weight": (1024, 12544)}
    )
    matched, unused = _align(model, d2)
    assert set(matched) == {prefix(k) for k in params}
    assert unused == sorted(k for k in d2 if k.endswith("num_batches_tracked") and norm == "FrozenBN")
    if norm == "SyncBN":
        assert set(d2) == set(params)  # name for name, nothing more
    # The tensors land where torchvision had them (spot checks across the renames).
    for tv_key, d2_key in [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_var", "stem.conv1.norm.running_var"),
        ("layer1.0.downsample.0.weight", "res2.0.shortcut.weight"),
        ("layer1.0.downsample.1.bias", "res2.0.shortcut.norm.bias"),
        ("layer3.5.bn2.weight", "res4.5.conv2.norm.weight"),
        ("layer4.2.conv3.weight", "res5.2.conv3.weight"),
    ]:
        assert np.array_equal(d2[d2_key], tv[tv_key].numpy())


def test_detectron2_pickle_is_plain_data_any_numpy_reads(r50_detectron2, tmp_path):
    from xmoco_zoo.downstream import write_detectron2_pickle

    _, d2 = r50_detectron2
    path = write_detectron2_pickle(d2, tmp_path / "r50.pkl")
    raw = path.read_bytes()
    assert b"numpy._core" not in raw and b"numpy.core" not in raw and b"torch" not in raw

    class OnlyNumpy(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            assert (module, name) in {("numpy", "ndarray"), ("numpy", "array"), ("numpy", "dtype")}, (
                module,
                name,
            )
            return super().find_class(module, name)

    with path.open("rb") as f:
        loaded = OnlyNumpy(f, encoding="latin1").load()  # as detectron2 reads a .pkl
    assert loaded["__author__"] == "xmoco-zoo" and loaded["matching_heuristics"] is True
    assert loaded["model"].keys() == d2.keys()
    assert all(
        np.array_equal(loaded["model"][k], v) and loaded["model"][k].dtype == v.dtype for k, v in d2.items()
    )
    assert loaded["model"]["stem.conv1.weight"].flags.writeable  # torch.from_numpy without a warning


# ------------------------------------------------------------------------------------------ ONNX


@pytest.mark.parametrize("folder", HUB_MODELS, ids=[p.name for p in HUB_MODELS])
def test_every_hub_model_exports_to_onnx_and_matches_torch(folder, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'xmoco-zoo[onnx]'")
    import onnx
    import onnxruntime

    out = tmp_path / "model.onnx"
    proc = run_cli("export", "--to", "onnx", str(folder), str(out))
    info = json.loads(proc.stdout)
    assert info["max_abs_diff"] <= 1e-4 and info["source"] == f"local-dir:{folder}"
    config = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert meta["mean"] == config["mean"] and meta["input_size"] == config["input_size"]
    # Our own check at batch 1 and 5 (the export ran with 2, its check with 3): the batch axis is dynamic.
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = torch.randn(batch, *config["input_size"])
        got = session.run(None, {"pixels": x.numpy()})[0]
        assert got.shape == (batch, model.num_features)
        assert np.abs(got - _features(model, x).numpy()).max() <= 1e-4


# ------------------------------------------------------------------------------------------ the chain


def _official_r50(path: Path) -> nn.Module:
    """An official MoCo v2 ResNet-50 checkpoint (``module.encoder_q.*``, fc an MLP) at ``path``; returns the online
    encoder without its head. (MoCo v3's layout is built in tests/test_convert.py.)"""
    torch.manual_seed(0)
    net = torchvision.models.resnet50()
    _trained_like_norms(net)
    net.fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 128))
    state = {
        **_prefixed("module.encoder_q.", net.state_dict()),
        **_prefixed("module.encoder_k.", net.state_dict()),
        "module.queue": torch.randn(128, 256),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    torch.save({"epoch": 100, "arch": "resnet50", "state_dict": state}, path)
    net.fc = nn.Identity()
    return net.eval()


@pytest.mark.slow
def test_official_resnet50_checkpoint_to_torchvision_detectron2_and_onnx(tmp_path):
    """The chain from an official MoCo v2 ResNet-50 checkpoint. (MoCo v3's ResNet-50 layout converts to the same
    timm folder, bitwise-checked in tests/test_convert.py; from that folder on the chain is the same code.)"""
    pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'xmoco-zoo[onnx]'")
    encoder = _official_r50(tmp_path / "official.pth.tar")
    folder = tmp_path / "timm"
    run_cli("convert", str(tmp_path / "official.pth.tar"), str(folder))
    x = torch.randn(2, 3, 128, 128)
    reference = _features(encoder, x)

    # torchvision: the ResNet itself, then the detector's backbone, strict, and a forward of the detector.
    run_cli("export", "--to", "torchvision", str(folder), str(tmp_path / "r50.pth"))
    state = torch.load(tmp_path / "r50.pth", weights_only=True)
    tv = torchvision.models.resnet50(weights=None)
    tv.fc = nn.Identity()
    tv.load_state_dict(state, strict=True)
    assert torch.equal(_features(tv, x), reference)
    detector = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    detector.backbone.body.load_state_dict(state, strict=True)
    assert torch.equal(detector.backbone.body.layer4[2].conv3.weight, encoder.layer4[2].conv3.weight)
    with torch.no_grad():
        (detections,) = detector.eval()([torch.rand(3, 160, 200)])
    assert set(detections) == {"boxes", "labels", "scores"} and detections["boxes"].shape[1] == 4

    # detectron2: every R-50 parameter found by detectron2's name matching, with the encoder's tensors.
    info = json.loads(run_cli("export", "--to", "detectron2", str(folder), str(tmp_path / "r50.pkl")).stdout)
    assert info["detectron2_config"]["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    assert info["detectron2_config"]["MODEL.PIXEL_MEAN"] == [123.675, 116.28, 103.53]
    with (tmp_path / "r50.pkl").open("rb") as f:
        d2 = pickle.load(f)["model"]
    matched, unused = _align({"backbone.bottom_up." + k: v for k, v in _detectron2_params().items()}, d2)
    assert len(matched) == 265 and all(k.endswith("num_batches_tracked") for k in unused)
    assert np.array_equal(d2["res4.5.conv2.norm.running_mean"], encoder.layer3[5].bn2.running_mean.numpy())

    # ONNX at the converted folder's input size (3x224x224), dynamic batch.
    info = json.loads(run_cli("export", "--to", "onnx", str(folder), str(tmp_path / "r50.onnx")).stdout)
    assert info["input"] == ["batch", 3, 224, 224] and info["output"] == [2048]
    assert info["max_abs_diff"] <= 1e-4 and info["max_abs_feature"] > 0.1
