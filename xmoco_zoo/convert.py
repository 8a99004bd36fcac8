"""Convert the official MoCo checkpoints to timm Hub folders.

Supported layouts (``torch.save`` pickles, loaded with ``weights_only=True`` only, or safetensors files with the
same keys):

- **MoCo v1/v2** (`facebookresearch/moco <https://github.com/facebookresearch/moco>`_, ``main_moco.py``):
  ``{"epoch", "arch", "state_dict", "optimizer"}`` whose state dict holds ``module.encoder_q.*`` (a torchvision
  ResNet whose ``fc`` is the projection head: ``Linear(2048, 128)`` in v1, ``Linear-ReLU-Linear`` in v2),
  ``module.encoder_k.*`` (its momentum copy), ``module.queue`` and ``module.queue_ptr``.
- **MoCo v3** (`facebookresearch/moco-v3 <https://github.com/facebookresearch/moco-v3>`_, ``main_moco.py``):
  ``{"epoch", "arch", "state_dict", "optimizer", "scaler"}`` with ``module.base_encoder.*``,
  ``module.momentum_encoder.*`` and ``module.predictor.*``; the base encoder is a torchvision ResNet (``fc``
  replaced by an MLP) or moco-v3's ``vits.py`` ViT (a timm ``VisionTransformer`` whose ``head`` is an MLP and
  whose ``pos_embed`` is a fixed 2-D sin-cos table stored in the state dict).

The ``module.`` prefix (DistributedDataParallel) is optional, and the state dict may be bare (no wrapper dict).
Only the online encoder (``encoder_q`` / ``base_encoder``) is kept, without its projection head; it is loaded
with ``strict=True`` into the matching timm model (torchvision's ResNet key names are timm's; moco-v3's ViT key
names are current timm's) and written headless with :func:`xmoco_zoo.export.save_timm_folder`.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import shlex
from pathlib import Path
from typing import Any

import timm
import torch

from .card import META_KEY, write_model_card
from .errors import InputNotFoundError, UserError
from .export import save_timm_folder
from .registry import facts

__all__ = ["ConversionError", "LAYOUTS", "convert_moco_checkpoint", "detect_layout", "load_checkpoint"]


class ConversionError(UserError, ValueError):
    """The file is not a checkpoint this module can convert (unknown layout, unsafe pickle, wrong arch...)."""


LAYOUTS = ("mocov1", "mocov2", "mocov3")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The official MoCo weights (v1, v2, v3) are released under CC-BY-NC 4.0.
LICENSE = "cc-by-nc-4.0"

# The online encoder of each layout family (after stripping an optional "module."), and the other top-level
# entries of the state dict that are expected and dropped.
_V12_ENCODER = "encoder_q."
_V3_ENCODER = "base_encoder."
_EXPECTED = {
    "MoCo v1/v2 (facebookresearch/moco)": ["module.encoder_q.", "module.encoder_k.", "module.queue"],
    "MoCo v3 (facebookresearch/moco-v3)": [
        "module.base_encoder.",
        "module.momentum_encoder.",
        "module.predictor.",
    ],
}

# Source architecture (as MoCo's ``--arch`` names it) -> timm model name and the constructor kwargs that make the
# timm model match it. Torchvision's ResNets have exactly timm's key names (and layout: stride in the 3x3 conv).
# moco-v3's vit_small has 12 heads (timm's vit_small has 6); its ViTs are timm VisionTransformers with
# qkv_bias=True, LayerNorm eps 1e-6, a class token and global_pool "token": timm's defaults for these names.
# moco-v3's vit_huge is patch 16 (timm's vit_huge is patch 14).
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet18": ("resnet18", {}),
    "resnet34": ("resnet34", {}),
    "resnet50": ("resnet50", {}),
    "resnet101": ("resnet101", {}),
    "resnet152": ("resnet152", {}),
    "resnext50_32x4d": ("resnext50_32x4d", {}),
    "resnext101_32x8d": ("resnext101_32x8d", {}),
    "wide_resnet50_2": ("wide_resnet50_2", {}),
    "wide_resnet101_2": ("wide_resnet101_2", {}),
    "vit_small": ("vit_small_patch16_224", {"num_heads": 12}),
    "vit_base": ("vit_base_patch16_224", {}),
    "vit_large": ("vit_large_patch16_224", {}),
    "vit_huge": ("vit_huge_patch14_224", {"patch_size": 16}),
}
_VIT_BY_DIM = {384: "vit_small", 768: "vit_base", 1024: "vit_large", 1280: "vit_huge"}
# (blocks per stage, bottleneck?) -> torchvision ResNet name
_RESNET_BY_DEPTH = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}


# ----------------------------------------------------------------------------------------------- loading


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    # A safetensors file starts with an 8-byte little-endian header length, then the JSON header "{...".
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def load_checkpoint(src: str | Path) -> dict[str, Any]:
    """Load a checkpoint as plain data: ``torch.load(..., weights_only=True)``, or a safetensors file.

    A pickle holding anything but tensors and plain containers/numbers/strings (e.g. an ``argparse.Namespace``
    or a custom class) is refused with a :class:`ConversionError`: nothing in it is executed. A safetensors file
    comes back as its state dict, plus its string metadata (e.g. ``arch``, ``epoch``) under ``"__metadata__"``.
    """
    path = Path(src)
    if not path.is_file():
        raise InputNotFoundError(f"no checkpoint file at {path}; check the path")
    if _is_safetensors(path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        state: dict[str, Any] = dict(load_file(str(path), device="cpu"))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta:
            state["__metadata__"] = dict(meta)
        return state
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = (
            f"it contains a {found.group(1)} object"
            if found
            else f"torch.load said: {str(e).splitlines()[0]}"
        )
        raise ConversionError(
            f"{path}: refused to load: xmoco-zoo only loads plain weights (torch.load(weights_only=True): "
            f"tensors, dicts, lists, numbers, strings), so converting a checkpoint cannot run code from it; {what}. "
            "If you trust the file, re-save just its tensors in your own session, e.g. "
            "ckpt = torch.load(PATH, weights_only=False); "
            "torch.save({'epoch': ckpt.get('epoch'), 'arch': ckpt.get('arch'), 'state_dict': ckpt['state_dict']}, "
            "'plain.pth'), and convert plain.pth."
        ) from e
    if not isinstance(ckpt, dict):
        raise ConversionError(
            f"{path}: expected a dict (a checkpoint or a state dict), got {type(ckpt).__name__}"
        )
    return ckpt


# ----------------------------------------------------------------------------------------------- layouts


def _state_dict(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint's state dict (``ckpt["state_dict"]``, or ``ckpt`` itself if bare), each key
    without a leading ``module.``."""
    state = ckpt.get("state_dict") if isinstance(ckpt.get("state_dict"), dict) else ckpt
    return {
        (k[len("module.") :] if k.startswith("module.") else k): v
        for k, v in state.items()
        if isinstance(k, str) and isinstance(v, torch.Tensor)
    }


def _prefix(key: str, depth: int = 2) -> str:
    return ".".join(key.split(".")[:depth])


def _unknown_layout(ckpt: dict[str, Any], why: str = "") -> ConversionError:
    top = [str(k) for k in ckpt if k != "__metadata__"][:10]
    state = ckpt.get("state_dict") if isinstance(ckpt.get("state_dict"), dict) else ckpt
    prefixes = list(dict.fromkeys(_prefix(str(k)) for k in state if k != "__metadata__"))[:10]
    expected = "; ".join(f"{name}: {', '.join(repr(p) for p in ps)}" for name, ps in _EXPECTED.items())
    return ConversionError(
        f"{why or 'not an official MoCo checkpoint'}. Known layouts and the state-dict key prefixes they expect "
        f"(the 'module.' prefix is optional; the state dict may be bare or under 'state_dict'): {expected}. "
        f"Found top-level keys {top} and state-dict key prefixes {prefixes}. "
        "If this is a plain backbone (e.g. a linear-probe checkpoint or an already extracted encoder), rename its "
        "keys to 'encoder_q.<torchvision key>' (ResNet) or 'base_encoder.<timm ViT key>' and convert again with "
        "layout= and arch= set, or load it directly into timm with "
        "timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), num_classes=0)."
    )


def detect_layout(ckpt: dict[str, Any]) -> str:
    """Which official MoCo layout ``ckpt`` (a loaded checkpoint, or a bare state dict) is in.

    Returns ``"mocov1"`` (``encoder_q.fc`` is one Linear), ``"mocov2"`` (``encoder_q.fc`` is an MLP:
    ``fc.0``/``fc.2``) or ``"mocov3"`` (``base_encoder.*``); raises :class:`ConversionError` listing the expected
    key prefixes and the ones found otherwise.
    """
    state = _state_dict(ckpt)
    if any(k.startswith(_V3_ENCODER) for k in state):
        return "mocov3"
    if any(k.startswith(_V12_ENCODER) for k in state):
        if f"{_V12_ENCODER}fc.0.weight" in state:
            return "mocov2"
        if f"{_V12_ENCODER}fc.weight" in state:
            return "mocov1"
        raise _unknown_layout(
            ckpt,
            "MoCo v1/v2 checkpoint (encoder_q.*) without a recognizable projection head: expected "
            "'encoder_q.fc.weight' (v1, Linear) or 'encoder_q.fc.0.weight' (v2, MLP); pass layout='mocov1' or "
            "'mocov2' to convert it anyway",
        )
    raise _unknown_layout(ckpt)


def _infer_arch(backbone: dict[str, torch.Tensor]) -> str:
    """The MoCo arch name of an encoder's backbone state dict (head removed), from its keys and shapes."""
    if "patch_embed.proj.weight" in backbone:
        dim = backbone["patch_embed.proj.weight"].shape[0]
        if dim in _VIT_BY_DIM:
            return _VIT_BY_DIM[dim]
        raise ConversionError(
            f"ViT with embed dim {dim}: not one of moco-v3's ViTs ({_VIT_BY_DIM}); pass arch="
        )
    if "conv1.weight" in backbone and "layer1.0.conv1.weight" in backbone:
        blocks = tuple(
            len({k.split(".")[1] for k in backbone if k.startswith(f"layer{i}.")}) for i in range(1, 5)
        )
        bottleneck = "layer1.0.conv3.weight" in backbone
        standard_width = backbone["layer1.0.conv1.weight"].shape[0] == 64  # wide/resnext ResNets have more
        name = _RESNET_BY_DEPTH.get((blocks, bottleneck))
        if name and standard_width:
            return name
        raise ConversionError(
            f"ResNet with {list(blocks)} blocks per stage (bottleneck={bottleneck}) and a non-standard width or "
            "groups: cannot tell which torchvision ResNet it is; pass arch= (e.g. 'resnext50_32x4d')"
        )
    raise ConversionError(
        f"cannot infer the architecture from the encoder's keys {list(backbone)[:10]}: pass arch= "
        f"(one of {sorted(ARCHITECTURES)} or a timm model name)"
    )


def _check_fits(
    model: torch.nn.Module, backbone: dict[str, torch.Tensor], name: str, model_args: dict
) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in backbone]
    unexpected = [k for k in backbone if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in backbone.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        raise ConversionError(
            f"the encoder's weights do not fit timm {name} {model_args}: missing {missing[:10]} "
            f"({len(missing)} in all), unexpected {unexpected[:10]} ({len(unexpected)} in all), "
            f"shape mismatches {shapes[:5]} ({len(shapes)} in all); pass the right arch= / model_args="
        )


# ----------------------------------------------------------------------------------------------- convert


def convert_moco_checkpoint(
    src: str | Path,
    out_dir: str | Path,
    *,
    layout: str = "auto",
    arch: str | None = None,
    model_args: dict[str, Any] | None = None,
    card: bool = True,
) -> dict[str, Any]:
    """Convert an official MoCo v1/v2/v3 checkpoint to a headless timm Hub folder (model.safetensors +
    config.json, and with ``card`` its model card README.md) at ``out_dir``.

    ``layout``: ``"auto"`` (:func:`detect_layout`) or one of ``"mocov1"``, ``"mocov2"``, ``"mocov3"`` (v1 and v2
    may be swapped, e.g. for a v2 ablation without the MLP head; v1/v2 vs v3 must match the keys). ``arch``: the
    source architecture as MoCo names it (``resnet50``, ``vit_small``, ``vit_base``, ...; default: the
    checkpoint's ``arch``, else inferred from the weights' shapes) or a timm model name. ``model_args`` are
    added to (and override) the timm constructor kwargs for that arch (e.g. ``{"num_heads": 12}`` for
    ``vit_small``) and are recorded in config.json.

    Only the online encoder (``encoder_q`` / ``base_encoder``) is kept, without its projection head; it must
    fit the timm model exactly (``strict=True``). Returns what was done: ``method``, ``architecture`` (timm
    name), ``source_arch``, ``model_args``, ``source``, ``source_sha256``, ``epoch``, ``kept_keys``,
    ``dropped`` (the dropped prefixes), ``out_dir``.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise ConversionError(f"unknown layout {layout!r}: use 'auto' or one of {list(LAYOUTS)}")
    src = Path(src)
    ckpt = load_checkpoint(src)
    state = _state_dict(ckpt)
    if layout == "auto":
        layout = detect_layout(ckpt)
    else:  # trusted for v1 vs v2 (e.g. a v2 ablation without the MLP head), but the keys must be that family's
        want = _V3_ENCODER if layout == "mocov3" else _V12_ENCODER
        if not any(k.startswith(want) for k in state):
            raise _unknown_layout(ckpt, f"{src}: layout={layout!r} expects 'module.{want}*' keys, found none")
    encoder = _V3_ENCODER if layout == "mocov3" else _V12_ENCODER
    enc = {k[len(encoder) :]: v for k, v in state.items() if k.startswith(encoder)}
    head = "head" if "patch_embed.proj.weight" in enc or "cls_token" in enc else "fc"
    backbone = {k: v for k, v in enc.items() if not (k == head or k.startswith(head + "."))}

    dropped = []
    if len(backbone) < len(enc):
        dropped.append(f"{head} (projection head)")
    dropped += sorted({key.split(".")[0] for key in state if not key.startswith(encoder)})

    if "patch_embed.proj.weight" not in backbone and any(k.startswith("patch_embed.proj.") for k in backbone):
        raise ConversionError(
            f"{src}: this ViT has a convolutional stem (moco-v3's vit_conv_small/vit_conv_base: patch_embed.proj "
            "is a Sequential of convs and BatchNorms): timm has no matching architecture, so it cannot be converted"
        )
    meta = ckpt.get("__metadata__", {}) if isinstance(ckpt.get("__metadata__"), dict) else {}
    source_arch = arch or ckpt.get("arch") or meta.get("arch") or _infer_arch(backbone)
    if not isinstance(source_arch, str):
        raise ConversionError(f"{src}: the checkpoint's arch {source_arch!r} is not a name; pass arch=")
    if source_arch in ARCHITECTURES:
        timm_name, args = ARCHITECTURES[source_arch]
        args = dict(args)
    elif timm.is_model(source_arch):
        timm_name, args = source_arch, {}
    else:
        raise ConversionError(
            f"{src}: unknown arch {source_arch!r}: pass arch= as one of MoCo's {sorted(ARCHITECTURES)} "
            "or a timm model name (with model_args= if its defaults differ)"
        )
    args.update(model_args or {})
    epoch = ckpt.get("epoch", meta.get("epoch"))
    if isinstance(epoch, str) and epoch.isdigit():
        epoch = int(epoch)
    if not isinstance(epoch, int | None):
        epoch = None

    model = timm.create_model(timm_name, pretrained=False, num_classes=0, **args)
    _check_fits(model, backbone, timm_name, args)
    model.load_state_dict(backbone, strict=True)
    model.eval()

    is_vit = hasattr(model, "patch_embed")
    sha = _sha256(src)
    info: dict[str, Any] = {
        "method": layout,
        "architecture": timm_name,
        "source_arch": source_arch,
        "model_args": dict(args),
        "source": str(src),
        "source_sha256": sha,
        "epoch": epoch,
        "kept_keys": len(backbone),
        "dropped": dropped,
        "out_dir": str(Path(out_dir)),
    }
    epochs = f", {epoch} epochs" if epoch is not None else ""
    save_timm_folder(
        model,
        out_dir,
        tag=f"{layout}_in1k",
        input_size=(3, 224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        model_args=args,
        interpolation="bicubic" if is_vit else "bilinear",
        crop_pct=0.875,
        license=LICENSE,
        paper_ids=list(facts(layout).papers),
        description=(
            f"{source_arch} pretrained with {facts(layout).title} on ImageNet-1k{epochs} (official weights from "
            f"{facts(layout).code}), online encoder without projection head, converted by xmoco-zoo"
        ),
        origin_url=facts(layout).code,
        extra={
            "converted_from": {
                k: info[k]
                for k in ("method", "source_arch", "source_sha256", "epoch", "kept_keys", "dropped")
            }
            | {"source_file": src.name},
            # What the model card reads (xmoco_zoo.card): the method, the data, and where the weights came from.
            META_KEY: {
                "method": layout,
                "base": layout,
                "regularizers": [],
                "dataset": "imagenet",
                "training": {"epochs": epoch} if epoch is not None else {},
                "source": {
                    "path": src.name,
                    "sha256": sha,
                    "dropped": dropped,
                    "description": f"the official {facts(layout).title} checkpoint of {facts(layout).code}",
                    "command": shlex.join(["xmoco-zoo", "convert", src.name, Path(out_dir).name]),
                },
                "repo_id": None,
            },
        },
    )
    if card:
        write_model_card(out_dir)
    return info
