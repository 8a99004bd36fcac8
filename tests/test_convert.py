"""Converting the official MoCo checkpoints (v1/v2: facebookresearch/moco, v3: facebookresearch/moco-v3) to timm
Hub folders: checkpoints are built here in the official layouts from random weights, converted, reloaded with
``timm.create_model("local-dir:...")`` and compared with the original encoders' features."""

from __future__ import annotations

import argparse
import hashlib
import json
from functools import partial
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from xmoco_zoo import convert
from xmoco_zoo.convert import ConversionError, convert_moco_checkpoint, detect_layout

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def _randomize_norms(model: nn.Module) -> None:
    """Non-trivial affine parameters and running stats, so that a lost or swapped norm changes the output."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d | nn.LayerNorm):
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0.0, 0.1)
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.normal_(0.0, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
                    m.num_batches_tracked.fill_(1234)


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def _mlp(dims: list[int], last_bn: bool = True) -> nn.Sequential:
    """moco-v3's _build_mlp: Linear(no bias)-BN-ReLU ... Linear(no bias)-BN(affine=False)."""
    layers: list[nn.Module] = []
    for i, (d1, d2) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d1, d2, bias=False))
        if i < len(dims) - 2:
            layers += [nn.BatchNorm1d(d2), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d2, affine=False))
    return nn.Sequential(*layers)


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _assert_same(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Bit-identical: the timm model runs the same ops as the original encoder (timm's own VisionTransformer,
    or torchvision's ResNet whose layers timm's ResNet reproduces exactly)."""
    assert got.shape == expected.shape
    assert torch.equal(got, expected), f"max abs difference {(got - expected).abs().max().item()}"


def _config(out: str | Path) -> dict:
    return json.loads((Path(out) / "config.json").read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def resnet_x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def mocov2(tmp, resnet_x):
    """An official MoCo v2 checkpoint (DDP save: ``module.`` keys) and the features of its encoder_q."""
    torch.manual_seed(0)
    encoders = []
    for _ in range(2):
        net = torchvision.models.resnet50()
        net.fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 128))
        _randomize_norms(net)
        encoders.append(net)
    encoder_q, encoder_k = encoders
    state = {
        **_prefixed("module.encoder_q.", encoder_q.state_dict()),
        **_prefixed("module.encoder_k.", encoder_k.state_dict()),
        "module.queue": nn.functional.normalize(torch.randn(128, 4096), dim=0),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    path = tmp / "moco_v2_200ep_pretrain.pth.tar"
    torch.save(
        {
            "epoch": 200,
            "arch": "resnet50",
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": [0, 1]}]},
        },
        path,
    )
    backbone = {k: v for k, v in encoder_q.state_dict().items() if not k.startswith("fc.")}
    encoder_q.fc = nn.Identity()
    return {"path": path, "features": _features(encoder_q, resnet_x), "backbone": backbone}


@pytest.fixture(scope="module")
def mocov2_converted(tmp, mocov2):
    out = tmp / "mocov2_out"
    info = convert_moco_checkpoint(mocov2["path"], out)
    return out, info


@pytest.fixture(scope="module")
def vit_x() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def mocov3_vit(tmp, vit_x):
    """An official MoCo v3 ViT-S checkpoint, built like moco-v3's vits.vit_small + builder.MoCo (mlp_dim shrunk
    to 512 to save disk), and its base encoder's pre-head features."""
    torch.manual_seed(3)
    vit = VisionTransformer(
        patch_size=16,
        embed_dim=384,
        depth=12,
        num_heads=12,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_classes=4096,
    )
    vit.head = _mlp([384, 512, 512, 256])  # moco-v3 replaces the head by a 3-layer MLP
    _randomize_norms(vit)
    with torch.no_grad():
        vit.pos_embed.normal_()  # the fixed sin-cos table: a plain tensor in the state dict
        vit.cls_token.normal_()
    base = vit.state_dict()
    # The momentum encoder shares storage with the base encoder (a small file) except for two tensors: a
    # converter that took it would give other features.
    momentum = dict(base)
    momentum["patch_embed.proj.weight"] = base["patch_embed.proj.weight"] + 1.0
    momentum["norm.weight"] = base["norm.weight"] * 2.0
    predictor = _mlp([256, 512, 256])
    state = {
        **_prefixed("module.base_encoder.", base),
        **_prefixed("module.momentum_encoder.", momentum),
        **_prefixed("module.predictor.", predictor.state_dict()),
    }
    path = tmp / "vit-s-300ep.pth.tar"
    torch.save(
        {
            "epoch": 300,
            "arch": "vit_small",
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1.5e-4, "weight_decay": 0.1, "params": [0]}]},
            "scaler": {
                "scale": 65536.0,
                "growth_factor": 2.0,
                "backoff_factor": 0.5,
                "growth_interval": 2000,
            },
        },
        path,
    )
    with torch.no_grad():
        vit.eval()
        features = vit.forward_head(vit.forward_features(vit_x), pre_logits=True)
    return {"path": path, "features": features}


# --------------------------------------------------------------------------------------------- MoCo v2


def test_mocov2_features_equal_encoder_q(mocov2, mocov2_converted, resnet_x):
    out, _ = mocov2_converted
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.num_classes == 0
    got = _features(model, resnet_x)
    assert got.shape == (2, 2048)
    _assert_same(got, mocov2["features"])
    # the weights are encoder_q's, bit for bit (not encoder_k's)
    for k, v in model.state_dict().items():
        assert torch.equal(v, mocov2["backbone"][k]), k


def test_mocov2_config_and_info(mocov2, mocov2_converted):
    out, info = mocov2_converted
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "cc-by-nc-4.0" and card.data.library_name == "timm"
    assert "Not evaluated" in card.text and "Not trained by xmoco-zoo" in card.text
    assert info["source_sha256"] in card.text and "chen2020mocov2" in card.text
    assert card.data.datasets == ["ILSVRC/imagenet-1k"]
    text = (out / "config.json").read_text()
    assert "a1_in1k" not in text  # timm's default resnet50 tag must not leak in
    cfg = _config(out)
    assert cfg["architecture"] == "resnet50"
    assert cfg["num_classes"] == 0
    pcfg = cfg["pretrained_cfg"]
    assert pcfg["tag"] == "mocov2_in1k"
    assert pcfg["num_classes"] == 0
    assert list(pcfg["mean"]) == MEAN and list(pcfg["std"]) == STD
    assert list(pcfg["input_size"]) == [3, 224, 224]
    assert pcfg["interpolation"] == "bilinear" and pcfg["crop_pct"] == 0.875
    assert pcfg["license"] == "cc-by-nc-4.0"
    assert pcfg["paper_ids"] == "arXiv:1911.05722,arXiv:2003.04297"
    assert pcfg["origin_url"] == "https://github.com/facebookresearch/moco"
    assert "MoCo v2" in pcfg["description"]
    assert cfg["converted_from"]["source_sha256"] == info["source_sha256"]

    assert info["method"] == "mocov2"
    assert info["architecture"] == "resnet50"
    assert info["epoch"] == 200
    assert info["source"] == str(mocov2["path"])
    assert info["source_sha256"] == _sha256(mocov2["path"])
    assert info["kept_keys"] == len(mocov2["backbone"])
    assert info["dropped"] == ["fc (projection head)", "encoder_k", "queue", "queue_ptr"]
    assert info["out_dir"] == str(out)


def test_mocov2_loads_for_finetuning(mocov2, mocov2_converted):
    out, _ = mocov2_converted
    model = timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=10)
    assert model.num_classes == 10 and model.fc.out_features == 10
    assert torch.equal(model.conv1.weight, mocov2["backbone"]["conv1.weight"])
    assert torch.equal(model.layer4[2].bn3.running_var, mocov2["backbone"]["layer4.2.bn3.running_var"])


def test_explicit_layout_must_match_the_keys(mocov2, tmp):
    with pytest.raises(ConversionError, match="base_encoder|encoder_q"):
        convert_moco_checkpoint(mocov2["path"], tmp / "wrong", layout="mocov3")
    with pytest.raises(ConversionError, match="unknown layout"):
        convert_moco_checkpoint(mocov2["path"], tmp / "wrong", layout="simclr")
    assert not (tmp / "wrong").exists()


# --------------------------------------------------------------------------------------------- MoCo v1


@pytest.fixture(scope="module")
def mocov1_safetensors(tmp, mocov2):
    """A MoCo v1 encoder (Linear fc head) saved single-GPU style (no ``module.``), as safetensors, no arch."""
    torch.manual_seed(4)
    fc = nn.Linear(2048, 128)
    state = {
        **_prefixed("encoder_q.", mocov2["backbone"]),
        "encoder_q.fc.weight": fc.weight.detach(),
        "encoder_q.fc.bias": fc.bias.detach(),
        "queue": torch.randn(128, 256),
        "queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    path = tmp / "moco_v1.safetensors"
    save_file(state, str(path))
    return path


def test_mocov1_safetensors_without_prefix_nor_arch(mocov1_safetensors, mocov2, tmp, resnet_x):
    out = tmp / "mocov1_out"
    info = convert_moco_checkpoint(mocov1_safetensors, out)
    assert info["method"] == "mocov1" and info["architecture"] == "resnet50"  # arch inferred from the shapes
    assert info["epoch"] is None
    assert info["dropped"] == ["fc (projection head)", "queue", "queue_ptr"]
    pcfg = _config(out)["pretrained_cfg"]
    assert pcfg["tag"] == "mocov1_in1k" and pcfg["paper_ids"] == "arXiv:1911.05722"
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    _assert_same(_features(model, resnet_x), mocov2["features"])


def test_wrong_arch_names_missing_and_unexpected_keys(mocov1_safetensors, tmp):
    pattern = (
        r"resnet18.*missing .*unexpected \['layer1\.0\.bn3.*shape mismatches \['layer1\.0\.conv1\.weight"
    )
    with pytest.raises(ConversionError, match=pattern):
        convert_moco_checkpoint(mocov1_safetensors, tmp / "r18", arch="resnet18")
    assert not (tmp / "r18").exists()


def test_headless_encoder_q_needs_explicit_layout(tmp):
    """encoder_q without fc: detection refuses (v1 or v2?), an explicit layout converts it; arch from shapes."""
    torch.manual_seed(6)
    net = torchvision.models.resnet18()
    _randomize_norms(net)
    state = {"encoder_q." + k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    path = tmp / "headless.pth"
    torch.save(state, path)
    with pytest.raises(ConversionError, match="projection head"):
        convert_moco_checkpoint(path, tmp / "headless_out")
    info = convert_moco_checkpoint(path, tmp / "headless_out", layout="mocov2")
    assert (info["method"], info["architecture"], info["dropped"]) == ("mocov2", "resnet18", [])
    model = timm.create_model(f"local-dir:{tmp / 'headless_out'}", pretrained=True)
    net.fc = nn.Identity()
    x = torch.randn(1, 3, 32, 32)
    _assert_same(_features(model, x), _features(net, x))


# --------------------------------------------------------------------------------------------- MoCo v3


def test_mocov3_vit_small(mocov3_vit, tmp, vit_x):
    out = tmp / "mocov3_vit_out"
    info = convert_moco_checkpoint(mocov3_vit["path"], out)
    assert info["method"] == "mocov3"
    assert info["architecture"] == "vit_small_patch16_224"
    assert info["model_args"] == {"num_heads": 12}
    assert info["epoch"] == 300
    assert info["dropped"] == ["head (projection head)", "momentum_encoder", "predictor"]

    cfg = _config(out)
    assert cfg["architecture"] == "vit_small_patch16_224"
    assert cfg["model_args"]["num_heads"] == 12
    pcfg = cfg["pretrained_cfg"]
    assert pcfg["tag"] == "mocov3_in1k"
    assert pcfg["interpolation"] == "bicubic" and pcfg["crop_pct"] == 0.875
    assert list(pcfg["mean"]) == MEAN and list(pcfg["std"]) == STD
    assert pcfg["paper_ids"] == "arXiv:2104.02057"
    assert pcfg["license"] == "cc-by-nc-4.0"
    assert "augreg" not in json.dumps(cfg)  # timm's default vit_small tag must not leak in

    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.blocks[0].attn.num_heads == 12 and model.global_pool == "token"
    _assert_same(_features(model, vit_x), mocov3_vit["features"])


def test_mocov3_resnet50(mocov2, tmp, resnet_x):
    """moco-v3's ResNet: torchvision resnet50 whose fc is a 2-layer MLP; momentum encoder + predictor dropped."""
    torch.manual_seed(5)
    backbone = mocov2["backbone"]
    head = _mlp([2048, 512, 256]).state_dict()
    base = {**backbone, **_prefixed("fc.", head)}
    momentum = {**base, "conv1.weight": backbone["conv1.weight"] + 1.0}  # shares all other storage
    path = tmp / "r-50-100ep.pth.tar"
    torch.save(
        {
            "epoch": 100,
            "arch": "resnet50",
            "state_dict": {
                **_prefixed("module.base_encoder.", base),
                **_prefixed("module.momentum_encoder.", momentum),
                **_prefixed("module.predictor.", _mlp([256, 512, 256]).state_dict()),
            },
            "optimizer": {"state": {}, "param_groups": []},
            "scaler": {"scale": 65536.0},
        },
        path,
    )
    out = tmp / "mocov3_r50_out"
    info = convert_moco_checkpoint(path, out)
    assert (info["method"], info["architecture"], info["epoch"]) == ("mocov3", "resnet50", 100)
    assert info["dropped"] == ["fc (projection head)", "momentum_encoder", "predictor"]
    pcfg = _config(out)["pretrained_cfg"]
    assert pcfg["tag"] == "mocov3_in1k" and pcfg["interpolation"] == "bilinear"
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    _assert_same(_features(model, resnet_x), mocov2["features"])


# --------------------------------------------------------------------------------------------- detection


T = torch.zeros(1)


@pytest.mark.parametrize(
    ("ckpt", "layout"),
    [
        (
            {"epoch": 1, "state_dict": {"module.encoder_q.fc.weight": T, "module.encoder_k.fc.weight": T}},
            "mocov1",
        ),
        ({"encoder_q.conv1.weight": T, "encoder_q.fc.weight": T, "queue": T}, "mocov1"),  # bare, single GPU
        ({"state_dict": {"module.encoder_q.fc.0.weight": T, "module.encoder_q.fc.2.weight": T}}, "mocov2"),
        ({"encoder_q.fc.0.weight": T, "encoder_q.fc.2.weight": T}, "mocov2"),
        ({"arch": "vit_base", "state_dict": {"module.base_encoder.cls_token": T}}, "mocov3"),
        ({"base_encoder.conv1.weight": T, "predictor.0.weight": T}, "mocov3"),
    ],
)
def test_detect_layout(ckpt, layout):
    assert detect_layout(ckpt) == layout


def test_infer_arch_from_shapes():
    vit = {"patch_embed.proj.weight": torch.empty(384, 3, 16, 16), "cls_token": T}
    assert convert._infer_arch(vit) == "vit_small"
    vit["patch_embed.proj.weight"] = torch.empty(768, 3, 16, 16)
    assert convert._infer_arch(vit) == "vit_base"
    r18 = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    assert convert._infer_arch(r18) == "resnet18"


@pytest.mark.parametrize(
    ("ckpt", "found"),
    [
        # a DeiT/MAE-style checkpoint: the weights under "model"
        ({"epoch": 3, "model": {"blocks.0.norm1.weight": T}, "optimizer": {}}, ["'epoch'", "'model'"]),
        # a MoCo linear-probe checkpoint: a plain ResNet under module.
        (
            {"state_dict": {"module.conv1.weight": T, "module.fc.weight": T}},
            ["'state_dict'", "'module.conv1'"],
        ),
    ],
)
def test_unknown_layout_lists_expected_and_found_keys(ckpt, found):
    with pytest.raises(ConversionError) as e:
        detect_layout(ckpt)
    msg = str(e.value)
    for expected in ("module.encoder_q.", "module.base_encoder.", *found):
        assert expected in msg
    assert "timm.create_model" in msg  # says how to proceed


def test_unknown_layout_file(tmp):
    path = tmp / "dino.pth"
    torch.save({"teacher": {"backbone.cls_token": T}, "student": {}, "epoch": 100}, path)
    with pytest.raises(ConversionError, match=r"module\.encoder_q\..*'teacher'"):
        convert_moco_checkpoint(path, tmp / "dino_out")
    assert not (tmp / "dino_out").exists()


def test_v12_without_head_is_refused():
    with pytest.raises(ConversionError, match="projection head"):
        detect_layout({"encoder_q.conv1.weight": T})


# --------------------------------------------------------------------------------------------- unsafe pickles


def _mark(path: str) -> None:  # what a malicious pickle would run on load
    Path(path).write_text("executed")


class _Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (_mark, (self.path,))


def test_pickle_with_code_is_refused_not_executed(tmp):
    marker = tmp / "marker"
    path = tmp / "evil.pth.tar"
    torch.save(
        {"epoch": 1, "state_dict": {"module.encoder_q.fc.weight": T}, "x": _Payload(str(marker))}, path
    )
    with pytest.raises(ConversionError, match="only loads plain weights"):
        convert_moco_checkpoint(path, tmp / "evil_out")
    assert not marker.exists()
    assert not (tmp / "evil_out").exists()


def test_pickle_with_namespace_is_refused(tmp):
    path = tmp / "with_args.pth.tar"
    torch.save({"state_dict": {"module.encoder_q.fc.weight": T}, "args": argparse.Namespace(lr=0.03)}, path)
    with pytest.raises(ConversionError, match=r"only loads plain weights.*argparse\.Namespace"):
        convert_moco_checkpoint(path, tmp / "ns_out")
