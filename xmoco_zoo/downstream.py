"""A backbone out to the layouts downstream code reads: torchvision, detectron2 and ONNX (docs/downstream.md).

- **torchvision**: timm's ResNets that torchvision also defines have torchvision's parameter names and layout
  (stride in the 3x3 conv, same stem, same blocks), so the state dict is the same tensors under the same keys.
  What makes the mapping exact is checked, not assumed: the architecture is one of :data:`TORCHVISION_RESNETS`,
  the torchvision model takes the weights with strict key checking, and its pooled features equal timm's on a
  random input (a timm variant with the same keys but another forward, e.g. ``resnetblur50`` or ``in_chans=1``,
  is refused).
- **detectron2**: the pickle detectron2's ``DetectionCheckpointer`` reads, written as the MoCo reference code's
  ``detection/convert-pretrain-to-detectron2.py`` writes it: ``{"model": {name: numpy array}, "__author__",
  "matching_heuristics": True}`` with torchvision's names renamed to detectron2's ResNet (``stem.conv1``,
  ``res2``..``res5``, ``bnN`` -> ``convN.norm``, ``downsample.0/1`` -> ``shortcut`` / ``shortcut.norm``). Its
  ``matching_heuristics`` flag makes detectron2 match each of its parameters to the checkpoint key that is its
  longest dotted suffix. Tested against detectron2's parameter names written into the tests, not against
  detectron2 itself (it is not installable from PyPI).
- **ONNX**: ``torch.onnx.export`` with a dynamic batch axis, checked with onnxruntime against torch.
"""

from __future__ import annotations

import copyreg
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DownstreamError",
    "TARGETS",
    "TORCHVISION_RESNETS",
    "detectron2_config",
    "detectron2_state_dict",
    "export_downstream",
    "export_onnx",
    "torchvision_resnet",
    "torchvision_state_dict",
    "write_detectron2_pickle",
]

TARGETS = ("torchvision", "detectron2", "onnx")

# timm architectures whose torchvision model of the same name has the same keys, shapes and forward (keys and
# shapes tested for all ten, features for resnet18, resnet50 and resnext50_32x4d; every export checks its own).
# Other timm ResNets differ in the stem (resnet50d, resnet10t), the downsampling (resnetaa50, resnetblur50:
# same keys, another forward) or the blocks (seresnet50).
TORCHVISION_RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)
# detectron2's MODEL.RESNETS settings for each: depth, groups, width per group (bottleneck width of res2 is
# groups x width), res2 output channels (64 for the basic-block ResNets, 256 for the bottleneck ones).
_DETECTRON2_RESNETS = {
    "resnet18": (18, 1, 64, 64),
    "resnet34": (34, 1, 64, 64),
    "resnet50": (50, 1, 64, 256),
    "resnet101": (101, 1, 64, 256),
    "resnet152": (152, 1, 64, 256),
    "resnext50_32x4d": (50, 32, 4, 256),
    "resnext101_32x8d": (101, 32, 8, 256),
    "resnext101_64x4d": (101, 64, 4, 256),
    "wide_resnet50_2": (50, 1, 128, 256),
    "wide_resnet101_2": (101, 1, 128, 256),
}
FEATURES_ATOL = 1e-4  # torchvision vs timm pooled features, and onnxruntime vs torch


class DownstreamError(ValueError):
    """A backbone that has no counterpart in the target layout, or a conversion that did not check out."""


def _architecture(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture") or type(model).__name__)


def torchvision_resnet(model: nn.Module) -> nn.Module:
    """The torchvision ResNet with ``model``'s weights (``fc`` replaced by ``Identity``), checked: strict keys
    and the same pooled features as ``model`` on a random input, else a :class:`DownstreamError`."""
    return _checked_torchvision(model)[0]


def _checked_torchvision(model: nn.Module) -> tuple[nn.Module, float]:
    """:func:`torchvision_resnet` and the max abs difference of its features from ``model``'s."""
    import torchvision

    arch = _architecture(model)
    if arch not in TORCHVISION_RESNETS:
        raise DownstreamError(
            f"{arch} has no torchvision counterpart: torchvision and detectron2 layouts exist for "
            f"{', '.join(TORCHVISION_RESNETS)}. Any timm backbone can be exported with --to onnx, or used "
            "through timm (features_only=True, docs/downstream.md)"
        )
    tv = getattr(torchvision.models, arch)(weights=None)
    tv.fc = nn.Identity()
    try:
        tv.load_state_dict(torchvision_state_dict(model), strict=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise DownstreamError(
            f"this {arch} is not torchvision's (other constructor arguments, e.g. in_chans): its weights do not "
            f"fit torchvision's {arch} ({lines[1].strip() if len(lines) > 1 else e})"
        ) from None
    diff = _max_feature_diff(model, tv)
    if diff > FEATURES_ATOL:
        raise DownstreamError(
            f"this {arch} is not torchvision's: torchvision's {arch} computes other features from the same "
            f"weights (max abs difference {diff:.3g}; other constructor arguments, e.g. global_pool)"
        )
    return tv.eval(), diff


@torch.no_grad()
def _max_feature_diff(a: nn.Module, b: nn.Module, size: int = 64) -> float:
    a, b = a.eval(), b.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    return float((a(x) - b(x)).abs().max())


def torchvision_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The headless backbone's tensors under torchvision's ResNet names (timm uses the same names for the
    architectures in :data:`TORCHVISION_RESNETS`): contiguous CPU copies, BN's ``num_batches_tracked`` kept
    (``nn.BatchNorm2d`` has it; torchvision's ``FrozenBatchNorm2d`` drops it when loading)."""
    return {
        k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
        for k, v in model.state_dict().items()
        if not (k == "fc" or k.startswith("fc."))
    }


def _detectron2_name(key: str) -> str:
    """A torchvision ResNet key as detectron2's ResNet names it (the MoCo converter's renames, by component:
    ``layer1.0.bn2.weight`` -> ``res2.0.conv2.norm.weight``, ``bn1.weight`` -> ``stem.conv1.norm.weight``)."""
    parts = key.split(".")
    if parts[0].startswith("layer"):
        parts[0] = f"res{int(parts[0][len('layer') :]) + 1}"
    else:
        parts.insert(0, "stem")
    out: list[str] = []
    i = 0
    while i < len(parts):
        p = parts[i]
        if p.startswith("bn") and p[2:].isdigit():
            out += [f"conv{p[2:]}", "norm"]
        elif p == "downsample" and i + 1 < len(parts):
            out += ["shortcut"] if parts[i + 1] == "0" else ["shortcut", "norm"]
            i += 1
        else:
            out.append(p)
        i += 1
    return ".".join(out)


def detectron2_state_dict(torchvision_state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """torchvision ResNet tensors renamed to detectron2's ResNet names, as float numpy arrays (the model zoo's
    convention). ``num_batches_tracked`` is kept, as MoCo's converter keeps it: detectron2's BN and SyncBN
    have it, FrozenBN leaves it unused."""
    out = {_detectron2_name(k): v.numpy() for k, v in torchvision_state.items()}
    if len(out) != len(torchvision_state):
        raise DownstreamError("two torchvision keys map to one detectron2 name")  # a bug, never a user error
    return out


class _Pixels:
    """An array pickled as ``numpy.array(numpy.ndarray(shape, dtype, buffer))``: names every NumPy version has
    (NumPy 2 would otherwise write ``numpy._core...``, which NumPy 1 cannot unpickle)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = np.array(arr, order="C", copy=None)  # ascontiguousarray would make a 0-d array 1-d

    def __reduce__(self) -> tuple:
        return np.ndarray, (self.arr.shape, self.arr.dtype.str, self.arr.tobytes())


class _PortablePickler(pickle.Pickler):
    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[np.ndarray] = lambda a: (np.array, (_Pixels(a),))


def write_detectron2_pickle(state: dict[str, np.ndarray], out: str | Path, author: str = "xmoco-zoo") -> Path:
    """``{"model": state, "__author__": author, "matching_heuristics": True}`` pickled to ``out`` (.pkl:
    detectron2 reads a .pkl file in this format; any other ``__author__`` than "Caffe2" skips its Caffe2
    renames)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    _PortablePickler(buf, protocol=4).dump(
        {"model": state, "__author__": author, "matching_heuristics": True}
    )
    out.write_bytes(buf.getvalue())
    return out


def detectron2_config(model: nn.Module) -> dict[str, Any]:
    """The detectron2 config keys that make its ResNet the same network as ``model`` (and feed it as trained)."""
    arch = _architecture(model)
    depth, groups, width, res2 = _DETECTRON2_RESNETS[arch]
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = [round(255 * m, 3) for m in cfg.get("mean", (0.485, 0.456, 0.406))]
    std = [round(255 * s, 3) for s in cfg.get("std", (0.229, 0.224, 0.225))]
    return {
        "MODEL.RESNETS.DEPTH": depth,
        "MODEL.RESNETS.NUM_GROUPS": groups,
        "MODEL.RESNETS.WIDTH_PER_GROUP": width,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": res2,
        # torchvision (and timm) put the stride in the 3x3 conv; detectron2's default is the MSRA 1x1.
        "MODEL.RESNETS.STRIDE_IN_1X1": False,
        "MODEL.PIXEL_MEAN": mean,
        "MODEL.PIXEL_STD": std,
        "INPUT.FORMAT": "RGB",
    }


def export_onnx(
    model: nn.Module,
    out: str | Path,
    input_size: tuple[int, int, int] | list[int],
    *,
    metadata: dict[str, Any] | None = None,
    opset: int | None = None,
    atol: float = FEATURES_ATOL,
) -> dict[str, Any]:
    """``model`` (features out) as an ONNX file with a dynamic batch axis (input ``pixels``, output
    ``features``), checked with onnxruntime on random input of another batch size than the exported one.

    The check: ``max_abs_diff`` from torch at most ``atol`` for features of magnitude up to 1, relative beyond
    (``atol * max|features|``: float32 carries ~7 digits, and an untrained ResNet-50's features reach ~200).
    ``metadata`` (e.g. the preprocessing) is stored in the model's ``metadata_props`` as JSON strings. Weights
    are stored in the file itself, ONNX's 2 GB limit permitting (else in ``OUT.data`` beside it).
    """
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "--to onnx needs onnx, onnxscript and onnxruntime: pip install 'xmoco-zoo[onnx]'"
        ) from e
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to("cpu", memory_format=torch.contiguous_format)
    c, h, w = (int(v) for v in input_size)
    g = torch.Generator().manual_seed(0)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    torch.onnx.export(
        model,
        (torch.randn(2, c, h, w, generator=g),),
        str(out),
        input_names=["pixels"],
        output_names=["features"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset,
        external_data=params > 1.8e9,
        verbose=False,
    )
    proto = onnx.load(str(out), load_external_data=False)
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(proto, str(out))
    onnx.checker.check_model(str(out))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(3, c, h, w, generator=g)
    with torch.no_grad():
        ref = model(x).numpy()
    got = session.run(["features"], {"pixels": x.numpy()})[0]
    diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
    scale = max(1.0, float(np.abs(ref).max()))
    if not diff <= atol * scale:
        raise DownstreamError(
            f"{out}: onnxruntime's features differ from torch's (shape {got.shape} vs {ref.shape}, max abs "
            f"difference {diff:.3g} > {atol:g} x {scale:.3g})"
        )
    return {
        "input": ["batch", c, h, w],
        "output": list(ref.shape[1:]),
        "max_abs_diff": diff,
        "max_abs_feature": float(np.abs(ref).max()),
    }


def export_downstream(model: nn.Module, out: str | Path, to: str) -> dict[str, Any]:
    """Write headless timm ``model`` (loaded from an export folder, with its pretrained_cfg) in layout ``to``
    (one of :data:`TARGETS`) at ``out``; returns what was written and checked."""
    if to not in TARGETS:
        raise DownstreamError(f"unknown target {to!r}: one of {list(TARGETS)}")
    model = model.eval()
    out = Path(out)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    info: dict[str, Any] = {"to": to, "architecture": _architecture(model), "out": str(out)}
    if to == "onnx":
        keys = ("architecture", "input_size", "mean", "std", "interpolation", "crop_pct")
        meta = {k: cfg[k] for k in keys if k in cfg}
        info.update(export_onnx(model, out, cfg.get("input_size", (3, 224, 224)), metadata=meta))
        info["metadata"] = meta
        return info
    _, diff = _checked_torchvision(model)
    state = torchvision_state_dict(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    if to == "torchvision":
        if out.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(out))
        else:
            torch.save(state, out)
        info.update(keys=len(state), max_abs_diff_vs_timm=diff)
        return info
    d2 = detectron2_state_dict(state)
    write_detectron2_pickle(d2, out)
    info.update(keys=len(d2), detectron2_config=detectron2_config(model))
    return info
