"""What every evaluation recipe shares: loading the model as users do, the data, the transforms, results.

Models are loaded with ``timm.create_model('local-dir:...' | 'hf-hub:...' | timm name, pretrained=...)``; a
training checkpoint (``checkpoint:runs/X`` or ``checkpoint:runs/X/checkpoints/epoch_NNNN``) is first
exported with :func:`xmoco_zoo.export.export_checkpoint` into a temporary folder and loaded from there the
same way, so every protocol measures exactly what a user of the export would get.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import timm
import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..data import labelled_splits, split_name, subset
from ..errors import UserError, hub_message
from ..results import EvalRecord, current_command, write_result

SCHEMES = ("local-dir:", "hf-hub:", "checkpoint:")


class EvalError(UserError, ValueError):
    """An evaluation input that cannot work (model spec, data, split file); the message says what to do."""


@dataclass
class LoadedModel:
    model: nn.Module
    spec: str
    kind: str  # local-dir | hf-hub | checkpoint | timm
    folder: Path | None = None  # local-dir: the model folder (results/ and card)
    checkpoint: Path | None = None  # checkpoint: the checkpoint folder (its results/)
    pretrained: bool = True

    @property
    def description(self) -> str:
        return self.spec if self.pretrained else f"{self.spec} (architecture only, random init: from scratch)"


def architecture_id(model: nn.Module) -> str:
    """The architecture as its weights' layout: class, parameter count and a digest of every state-dict entry's
    name and shape. Two models with the same id take each other's weights (a from-scratch baseline can be reused
    for every model with the same id)."""
    state = model.state_dict()
    layout = "\n".join(f"{k} {tuple(v.shape)}" for k, v in state.items())
    n = sum(p.numel() for p in model.parameters())
    digest = hashlib.sha256(layout.encode()).hexdigest()[:12]
    return f"{type(model).__name__}, {n:,} parameters, layout {digest}"


def _checkpoint_dir(path: Path) -> Path:
    from .. import checkpoint as ckpt

    if (path / "checkpoints").is_dir() and not (path / ckpt.META).is_file():
        return ckpt.find_checkpoint(path / "checkpoints")
    return ckpt.find_checkpoint(path.parent, str(path))


def resolve_spec(spec: str) -> tuple[str, str]:
    """(kind, target) of a model spec, or an :class:`EvalError` listing the accepted forms."""
    for scheme in SCHEMES:
        if spec.startswith(scheme):
            target = spec[len(scheme) :]
            if not target:
                raise EvalError(f"model.spec={spec!r}: nothing after {scheme!r}")
            return scheme[:-1], target
    if timm.is_model(spec):
        return "timm", spec
    close = difflib.get_close_matches(spec, timm.list_models(), n=3)
    hint = f" Close timm names: {', '.join(close)}." if close else ""
    raise EvalError(
        f"model.spec={spec!r} is not a model spec. Use local-dir:PATH (an exported folder), hf-hub:ORG/NAME, "
        f"checkpoint:PATH (runs/X or runs/X/checkpoints/epoch_NNNN) or a timm model name.{hint}"
    )


def load_model(spec: str, *, pretrained: bool = True, num_classes: int = 0, **kwargs: Any) -> LoadedModel:
    """Load ``spec`` as users do (``timm.create_model(spec, pretrained=...)``), headless unless ``num_classes``.

    ``pretrained=False`` builds the same architecture with the same constructor args (from the folder's
    config.json) at random init: the from-scratch baseline.
    """
    kind, target = resolve_spec(spec)
    kw = dict(kwargs, num_classes=num_classes)
    if kind == "local-dir":
        folder = Path(target)
        if not (folder / "config.json").is_file():
            raise EvalError(
                f"{spec}: {folder} is not a timm model folder (no config.json). Export a run with "
                "`xmoco-zoo export runs/X OUT`, or evaluate a checkpoint with model.spec=checkpoint:runs/X"
            )
        if pretrained and not any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
            raise EvalError(f"{spec}: {folder} has a config.json but no model.safetensors")
        model = timm.create_model(f"local-dir:{folder}", pretrained=pretrained, **kw)
        return LoadedModel(model, spec, kind, folder=folder, pretrained=pretrained)
    if kind == "checkpoint":
        from ..export import export_checkpoint

        path = Path(target)
        if not path.is_dir():
            raise EvalError(
                f"{spec}: {path} does not exist (a run folder runs/X or runs/X/checkpoints/epoch_NNNN)"
            )
        try:
            ckpt_dir = _checkpoint_dir(path)
        except Exception as e:
            raise EvalError(f"{spec}: {e}") from None
        tmp = Path(tempfile.mkdtemp(prefix="xmoco-eval-"))
        try:
            export_checkpoint(ckpt_dir, tmp / "backbone")
            model = timm.create_model(f"local-dir:{tmp / 'backbone'}", pretrained=pretrained, **kw)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return LoadedModel(model, spec, kind, checkpoint=ckpt_dir, pretrained=pretrained)
    try:
        model = timm.create_model(spec, pretrained=pretrained, **kw)
    except Exception as e:
        # hf-hub: specs and timm's pretrained weights come from the Hub: a wrong id, revision or token, or
        # offline without a cached copy, gets its own message and fix
        message = hub_message(e, spec)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise EvalError(
            message or f"could not load {spec} (pretrained={pretrained}): {type(e).__name__}: {first}"
        ) from e
    return LoadedModel(model, spec, kind, pretrained=pretrained)


@dataclass
class InputSpec:
    channels: int
    size: int
    crop_pct: float
    mean: list[float]
    std: list[float]
    interpolation: str


def input_spec(model: nn.Module, aug: Any) -> InputSpec:
    """Input size, crop, mean, std and channels: the ``aug`` section where set, else the model's pretrained_cfg."""
    pc = getattr(model, "pretrained_cfg", None) or {}
    chans, h, _ = pc.get("input_size", (3, 224, 224))
    mean = list(aug.mean if aug.mean is not None else pc.get("mean", (0.485, 0.456, 0.406)))
    std = list(aug.std if aug.std is not None else pc.get("std", (0.229, 0.224, 0.225)))
    if len(mean) == 1 and chans != 1:
        mean, std = mean * chans, std * chans
    if len(mean) != chans:
        raise EvalError(f"mean/std have {len(mean)} values but the model takes {chans}-channel input")
    return InputSpec(
        channels=int(chans),
        size=int(aug.image_size or h),
        crop_pct=float(aug.crop_pct or pc.get("crop_pct") or 1.0),
        mean=mean,
        std=std,
        interpolation=str(pc.get("interpolation", "bilinear")),
    )


def _interp(name: str) -> v2.InterpolationMode:
    return {"bicubic": v2.InterpolationMode.BICUBIC, "nearest": v2.InterpolationMode.NEAREST}.get(
        name, v2.InterpolationMode.BILINEAR
    )


def eval_transform(spec: InputSpec) -> v2.Compose:
    """Resize the short side to size / crop_pct, centre crop, normalise (ImageNet: 256 → 224)."""
    return v2.Compose(
        [
            v2.Resize(
                int(round(spec.size / spec.crop_pct)),
                interpolation=_interp(spec.interpolation),
                antialias=True,
            ),
            v2.CenterCrop(spec.size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(spec.mean, spec.std),
        ]
    )


def train_transform(spec: InputSpec, aug: Any) -> v2.Compose:
    """RandomResizedCrop + flip (MoCo's linear probe), optionally RandAugment and random erasing (fine-tuning)."""
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(
            spec.size,
            scale=tuple(aug.train_crop_scale),
            interpolation=_interp(spec.interpolation),
            antialias=True,
        )
    ]
    if aug.flip_p > 0:
        ops.append(v2.RandomHorizontalFlip(aug.flip_p))
    if aug.randaugment_ops > 0:
        ops.append(v2.RandAugment(num_ops=aug.randaugment_ops, magnitude=aug.randaugment_magnitude))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)]
    if aug.random_erasing > 0:
        ops.append(v2.RandomErasing(p=aug.random_erasing, value=0))
    return v2.Compose(ops)


def dataset_labels(ds: Dataset) -> torch.Tensor:
    """The labels of a labelled dataset without decoding its images where possible."""
    if isinstance(ds, torch.utils.data.Subset):
        return dataset_labels(ds.dataset)[torch.as_tensor(ds.indices, dtype=torch.long)]
    for inner in (ds, getattr(ds, "folder", None)):  # folder: data.ReadableImages wraps an ImageFolder
        for attr in ("labels", "targets"):
            if inner is not None and hasattr(inner, attr):
                return torch.as_tensor(getattr(inner, attr), dtype=torch.long)
    return torch.tensor([int(ds[i][1]) for i in range(len(ds))])


def labelled_data(data: Any, channels: int, seed: int) -> tuple[Dataset, Dataset, int]:
    """(train, test, num_classes) of the configured dataset (``data`` is an EvalDataConfig)."""
    shim = SimpleNamespace(data=data, train=SimpleNamespace(seed=data.synthetic_seed))
    train, test = labelled_splits(shim, channels)
    if test is None and data.dataset == "hf":
        raise EvalError(
            f"{data.hf_path}: no test split to evaluate on: set data.hf_test_split (and data.hf_label_column: "
            "evaluations need labels)"
        )
    if test is None:
        raise EvalError(
            f"{data.dataset} at {data.root}: no test split to evaluate on (imagefolder needs a val/ folder beside train/)"
        )
    if len(train) == 0 or len(test) == 0:
        raise EvalError(f"{data.dataset}: empty split (train {len(train)}, test {len(test)} images)")
    num_classes = len(getattr(train, "classes", ())) or int(dataset_labels(train).max()) + 1
    return subset(train, data.subset, seed), subset(test, data.test_subset, seed), num_classes


def labelled_only(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop samples labelled -1 (unreadable images replaced by ``data.on_bad_image=skip``)."""
    keep = labels >= 0
    return features[keep], labels[keep]


def make_record(
    *,
    value: float,
    protocol: str,
    protocol_args: dict[str, Any],
    cfg: Any,
    loaded: LoadedModel,
    baselines: dict[str, float] | None = None,
    notes: str | None = None,
) -> EvalRecord:
    """One result of evaluation config ``cfg`` (its data section and the whole resolved config are recorded)."""
    from .config import eval_to_dict

    return EvalRecord(
        metric="top1",
        value=round(float(value), 4),
        protocol=protocol,
        protocol_args=protocol_args,
        dataset=cfg.data.dataset,
        split=split_name(cfg.data),
        command=current_command(),
        config=eval_to_dict(cfg),
        baselines={k: round(float(v), 4) for k, v in (baselines or {}).items()},
        model=loaded.description,
        notes=notes,
    )


def finish(accelerator: Any, cfg: Any, loaded: LoadedModel, summary: dict, **record: Any) -> dict:
    """End of every recipe: on the main process store the result (``record``: :func:`make_record`'s
    arguments) unless ``run.save_results`` is off, write ``summary.json``; then close the trackers."""
    if accelerator.is_main_process:
        if cfg.run.save_results:
            rec = make_record(cfg=cfg, loaded=loaded, **record)
            summary["results"] = [str(p) for p in save_record(rec, loaded, cfg.run, accelerator.print)]
        (Path(cfg.run.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def save_record(record: EvalRecord, loaded: LoadedModel, run: Any, print_fn=print) -> list[Path]:
    """Write ``record`` under ``run.output_dir/results/``, and beside the model for a pretrained local-dir:
    folder (re-rendering its card when it is an xmoco-zoo export) or a training checkpoint. A from-scratch
    run is not a result of that model: it stays in output_dir only. Call on the main process only."""
    paths = [write_result(run.output_dir, record)]
    if loaded.pretrained and loaded.folder is not None:
        paths.append(write_result(loaded.folder, record))
        if run.update_card:
            from ..card import META_KEY, read_folder_config, write_model_card

            if read_folder_config(loaded.folder).get(META_KEY):
                print_fn(f"model card updated: {write_model_card(loaded.folder)}")
    if loaded.pretrained and loaded.checkpoint is not None:
        paths.append(write_result(loaded.checkpoint, record))
    for p in paths:
        print_fn(f"stored {p}")
    return paths


def make_accelerator(run: Any, project: str):
    """``Accelerator(cpu=not cuda)`` logging to ``run.output_dir/metrics.csv`` (plus any configured trackers); an
    earlier run's file there is moved aside to ``metrics.previous.csv`` (an evaluation does not resume)."""
    from accelerate import Accelerator

    from ..logging import CSVTracker, restart_metrics

    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        log_with=[t for t in run.trackers if t != "csv"] + [CSVTracker(project, run.output_dir)],
        project_dir=str(run.output_dir),
    )
    if accelerator.is_main_process and (done := restart_metrics(Path(run.output_dir) / "metrics.csv", None)):
        accelerator.print(done)
    return accelerator


class RawPixels(nn.Module):
    """The floor as a "backbone": the un-normalised input pixels, flattened (L2-normalised downstream)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.dummy = nn.Parameter(torch.zeros(()), requires_grad=False)  # extract_features reads a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Back to the 8-bit pixel values (rounding undoes the float error of normalising and un-normalising):
        # on unresized images exactly the floor's features, L2-normalised downstream.
        return ((x * self.std + self.mean) * 255).round().flatten(1)
