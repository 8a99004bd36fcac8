"""Export the online backbone in timm's Hub format.

An export folder is exactly what gets pushed to the Hub:

- ``model.safetensors`` + ``config.json``: the headless backbone, loadable with
  ``timm.create_model('local-dir:PATH', pretrained=True)`` (or ``hf-hub:ORG/NAME`` once pushed); config.json's
  ``xmoco_zoo`` section records how the weights were made;
- ``training_config.yaml``: the resolved training config;
- ``results/*.json``: the measured evaluation results (:mod:`xmoco_zoo.results`);
- ``README.md``: the model card (:mod:`xmoco_zoo.card`), rendered from the files above.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .backbone import default_num_features
from .card import META_KEY, TRAINING_CONFIG, write_model_card
from .config import Config, to_yaml
from .errors import UserError
from .experiment import load_config
from .registry import paper_ids
from .results import EvalRecord, read_results, write_result

ORIGIN_URL = "https://github.com/xmoco-zoo/xmoco-zoo"

# The dtypes an export can store its weights in. timm builds the model in float32 and copies the stored tensors
# into it, so a float16 file loads into the same float32 model: half the download, and the card's results are
# measured on the loaded weights (an export is evaluated the way users load it). BatchNorm's running statistics
# stay float32 (a variance below float16's normal range, 6e-5, would lose its digits; they are a few kB).
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_KEEP_FLOAT32 = ("running_mean", "running_var")

# Keys of timm's default pretrained_cfg that describe the weights timm would have downloaded (their tag,
# source, test-time sizes, labels, paper): none of them is true of our weights, so none is carried over.
_KEEP_FROM_DEFAULT = ("architecture", "fixed_input_size", "first_conv", "classifier", "crop_mode")


def save_timm_folder(
    model: nn.Module,
    out_dir: str | Path,
    *,
    tag: str,
    input_size: tuple[int, int, int] | list[int],
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
    model_args: dict[str, Any] | None = None,
    interpolation: str = "bilinear",
    crop_pct: float = 1.0,
    license: str = "apache-2.0",
    paper_ids: list[str] | None = None,
    description: str = "",
    origin_url: str = ORIGIN_URL,
    extra: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a headless timm model as ``model.safetensors`` + ``config.json`` (timm's Hub format).

    The pretrained_cfg is rebuilt rather than inherited from timm's default for the architecture
    (``save_for_hf`` would otherwise copy e.g. ``tag: a1_in1k``, ``num_classes: 1000`` and that checkpoint's
    test-time sizes): our tag, ``num_classes: 0``, the given input size and mean/std. ``model_args`` are the
    constructor kwargs a user needs to rebuild the architecture (e.g. ``{"num_heads": 12}``). ``dtype``: the
    stored weights' dtype (``WEIGHT_DTYPES``).
    """
    if dtype not in WEIGHT_DTYPES:
        raise ExportError(f"unknown weights dtype '{dtype}'; choose one of {sorted(WEIGHT_DTYPES)}")
    if getattr(model, "num_classes", 0) != 0:
        raise ExportError(
            f"export a headless backbone (num_classes=0), got num_classes={model.num_classes}; "
            "call model.reset_classifier(0) first"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A CPU copy in the default memory format: channels_last weights are not contiguous for safetensors.
    model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()
    default = dict(getattr(model, "pretrained_cfg", {}) or {})
    if "architecture" not in default:
        raise ExportError(
            f"{type(model).__name__} was not created by timm.create_model: no architecture to record; "
            "build it with timm.create_model"
        )
    chans = int(input_size[0])
    if len(mean) != chans or len(std) != chans:
        raise ExportError(
            f"mean/std need {chans} values (input_size {list(input_size)}), got {mean} / {std}; "
            "give one per input channel"
        )
    ours = {k: default[k] for k in _KEEP_FROM_DEFAULT if k in default}
    ours.update(
        tag=tag,
        custom_load=False,
        num_classes=0,
        input_size=tuple(int(v) for v in input_size),
        interpolation=interpolation,
        crop_pct=float(crop_pct),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        license=license,
        origin_url=origin_url,
    )
    if tuple(input_size) == tuple(default.get("input_size", ())) and default.get("pool_size"):
        ours["pool_size"] = default["pool_size"]
    if paper_ids:
        ours["paper_ids"] = ",".join(paper_ids)
    if description:
        ours["description"] = description
    model.pretrained_cfg = ours
    timm.models.save_for_hf(
        model,
        str(out_dir),
        model_config={"pretrained_cfg": dict(ours), **(extra or {})},
        model_args=dict(model_args or {}),
        safe_serialization=True,
    )
    # save_for_hf writes pytorch_model.bin only when asked for "both"; make sure no stale one lingers.
    stale = out_dir / "pytorch_model.bin"
    if stale.exists():
        stale.unlink()
    if dtype != "float32":
        cast_weights(out_dir / "model.safetensors", WEIGHT_DTYPES[dtype])
    return out_dir


def cast_weights(path: Path, dtype: torch.dtype) -> None:
    """Rewrite a safetensors file with its floating-point tensors in ``dtype`` (BatchNorm's running statistics
    kept in float32), atomically."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    state = {
        k: v.to(dtype) if v.is_floating_point() and not k.endswith(_KEEP_FLOAT32) else v
        for k, v in load_file(str(path)).items()
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.chmod(tmp, path.stat().st_mode)  # safetensors creates it owner-only; keep the export's mode
    os.replace(tmp, path)


def export_backbone(
    backbone: nn.Module,
    out_dir: str | Path,
    cfg: Config,
    extra: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a trained online ``backbone`` (headless) with a config.json describing how it was trained."""
    chans = int(cfg.model.kwargs.get("in_chans", 3))
    size = cfg.aug.image_size
    mean = cfg.aug.mean if len(cfg.aug.mean) == chans else cfg.aug.mean * chans
    std = cfg.aug.std if len(cfg.aug.std) == chans else cfg.aug.std * chans
    return save_timm_folder(
        backbone,
        out_dir,
        tag=model_tag(cfg),
        input_size=(chans, size, size),
        mean=mean,
        std=std,
        model_args=dict(cfg.model.kwargs),
        paper_ids=paper_ids(cfg.method),
        description=f"{cfg.model.backbone} pretrained with {cfg.method.name} by xmoco-zoo on {cfg.data.dataset}",
        extra=extra,
        dtype=dtype,
    )


def model_tag(cfg: Config) -> str:
    """``<method>_<dataset>``, e.g. ``mocov2_fashionmnist``; a composition's ``+`` becomes ``_``."""
    return f"{cfg.method.name.replace('+', '_')}_{cfg.data.dataset.replace('_', '')}"


class ExportError(UserError, ValueError):
    """A run, checkpoint or output folder that cannot be exported; the message says why and what to do."""


BACKBONE_PREFIX = "encoder.online.backbone."  # the online backbone inside every method's state dict


def export_model(
    backbone: nn.Module,
    out_dir: str | Path,
    cfg: Config,
    *,
    training: dict[str, Any] | None = None,
    results: list[EvalRecord] | tuple = (),
    repo_id: str | None = None,
    card: bool = True,
    dtype: str = "float32",
) -> Path:
    """Export a trained backbone with its training config, its measured results and its model card.

    ``training``: facts for the card (``epochs``, ``steps``, ``batch_size``, ``processes``, ``command``,
    ``commit``). ``repo_id`` (``org/name``) makes the card's usage code load ``hf-hub:org/name``. ``dtype``: the stored
    weights' dtype (``WEIGHT_DTYPES``; the card says it).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise ExportError(
            f"refusing to export into {out_dir}: it is not empty and not a previous export (no config.json); "
            "choose a new folder"
        )
    meta = {
        "method": cfg.method.name,
        "base": cfg.method.base,
        "regularizers": sorted(cfg.method.regularizers),
        # Each regularizer's resolved section (AMCL's form among them): the card states it.
        "regularizer_settings": {
            r: dataclasses.asdict(getattr(cfg.method, r)) for r in sorted(cfg.method.regularizers)
        },
        "dataset": cfg.data.dataset,
        "backbone": cfg.model.backbone,
        "training": dict(training or {}),
        "repo_id": repo_id,
        "weights_dtype": dtype,
        # timm's feature dimension for the architecture at its default arguments: the index's width note
        # (xmoco_zoo.zoo.backbone_text) without building the model
        "default_num_features": default_num_features(cfg.model.backbone),
    }
    # Written next to the target, then swapped in: a failed export leaves the previous one intact, and
    # the results and card of whatever was in the folder before never survive into a new export.
    tmp = out_dir.parent / f".tmp-{out_dir.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        export_backbone(backbone, tmp, cfg, extra={META_KEY: meta}, dtype=dtype)
        (tmp / TRAINING_CONFIG).write_text(to_yaml(cfg))
        for record in results:
            write_result(tmp, record)
        if card:
            write_model_card(tmp, repo_id, local_path=out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def backbone_state_from_checkpoint(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """The online backbone's weights from an Accelerate checkpoint folder (safetensors, or a weights-only pickle)."""
    from safetensors.torch import load_file

    path = ckpt_dir / "model.safetensors"
    if path.is_file():
        state = load_file(str(path))
    elif (ckpt_dir / "pytorch_model.bin").is_file():
        state = torch.load(ckpt_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ExportError(
            f"{ckpt_dir} has no model.safetensors (or pytorch_model.bin): not an xmoco-zoo training checkpoint; "
            f"it contains {sorted(p.name for p in ckpt_dir.iterdir())}"
        )
    # A regularized method holds its base as ``base.``: the same backbone one level down.
    for prefix in (BACKBONE_PREFIX, "base." + BACKBONE_PREFIX):
        found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            break
    if not found:
        prefixes = sorted({".".join(k.split(".")[:3]) for k in state})[:10]
        raise ExportError(
            f"{path}: no '{BACKBONE_PREFIX}*' keys (the online backbone of an xmoco-zoo method); found prefixes "
            f"{prefixes}. For the official MoCo checkpoints use `xmoco-zoo convert`."
        )
    return found


def export_checkpoint(
    ckpt_dir: str | Path, out_dir: str | Path, *, repo_id: str | None = None, dtype: str = "float32"
) -> Path:
    """Export the online backbone of a training checkpoint (``runs/X/checkpoints/epoch_NNNN``, or a run
    folder ``runs/X`` for its newest complete checkpoint), with the results stored in that checkpoint, its
    weights stored in ``dtype``, and the run folder's ``machine_pace.json`` (xmoco_zoo/pace.py) where there is one."""
    from . import checkpoint as ckpt
    from .backbone import create_backbone
    from .pace import read_pace

    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / "checkpoints").is_dir() and not (ckpt_dir / ckpt.META).is_file():
        ckpt_dir = ckpt.find_checkpoint(ckpt_dir / "checkpoints")
    ckpt_dir = ckpt.find_checkpoint(ckpt_dir.parent, str(ckpt_dir))  # validates: a complete checkpoint
    meta = json.loads((ckpt_dir / ckpt.META).read_text())
    config_path = ckpt_dir / ckpt.CONFIG
    if not config_path.is_file():  # checkpoints written before the config was stored in them
        config_path = ckpt_dir.parent.parent / "config.yaml"
    if not config_path.is_file():
        raise ExportError(
            f"{ckpt_dir}: no {ckpt.CONFIG} in the checkpoint nor in its run folder {config_path.parent}"
        )
    cfg = load_config(config_path)
    ckpt.check_compatible(ckpt_dir, cfg)
    backbone = create_backbone(cfg.model.backbone, **cfg.model.kwargs)
    missing, unexpected = backbone.load_state_dict(backbone_state_from_checkpoint(ckpt_dir), strict=False)
    if missing or unexpected:
        raise ExportError(
            f"{ckpt_dir}: the checkpoint's backbone does not fit {cfg.model.backbone} {dict(cfg.model.kwargs)}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    training = {"epochs": meta.get("epoch"), **(meta.get("training") or {})}
    # how fast the machine was against the reference machine (xmoco_zoo/pace.py), where the run measured it
    if (pace := read_pace(ckpt_dir.parent.parent)) is not None:
        training["machine_pace"] = pace
    return export_model(
        backbone,
        out_dir,
        cfg,
        training=training,
        results=read_results(ckpt_dir),
        repo_id=repo_id,
        dtype=dtype,
    )
