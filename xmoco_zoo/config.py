"""Typed experiment configuration.

The dataclasses below are the schema. A run's config is built in layers: the dataclass defaults, then
the registered method's defaults (``xmoco_zoo.methods``), then the YAML file, then ``a.b=value``
overrides from the command line. Unknown keys and wrongly typed values are rejected with the full
key and the nearest valid name (OmegaConf does the merging and validation).

Process count and mixed precision are not here on purpose: they belong to ``accelerate launch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass
class ModelConfig:
    """The backbone: any timm model name, created headless (``num_classes=0``)."""

    backbone: str = "resnet50"
    # Constructor kwargs passed through to timm.create_model: in_chans, img_size, patch_size, num_heads...
    kwargs: dict[str, Any] = field(default_factory=dict)
    # channels_last memory format for conv nets (faster on most CPUs and GPUs).
    channels_last: bool = True


@dataclass
class MethodConfig:
    """The self-supervised method. Fields not used by a method's base are ignored by it."""

    name: str = "mocov2"
    dim: int = 128  # embedding dim D
    hidden_dim: int = 2048  # projector hidden width
    temperature: float = 0.2
    momentum: float = 0.999  # m, or m0 for the cosine schedule
    momentum_schedule: str = "constant"  # constant | cosine
    # MoCo v2
    queue_size: int = 65536
    symmetric: bool = False
    # Shuffle BN: across processes when there are several; in one process, split BN with this many groups
    # (1 disables the emulation). MoCo's ImageNet runs used 8 GPUs, hence 8.
    bn_splits: int = 8
    shuffle_bn: bool = True
    # MoCo v3
    pred_hidden_dim: int = 4096
    proj_layers: int = 2  # 2 for ResNet, 3 for ViT
    pred_layers: int = 2
    pred_last_bn: bool = False  # ResNet: False; ViT: True (as in MoCo v3's code)
    sync_bn: bool = True  # SyncBatchNorm in the heads under several processes
    freeze_patch_embed: bool = False  # ViT: frozen random patch projection
    fixed_pos_embed: bool = False  # ViT: fixed 2-D sin-cos position embedding


@dataclass
class AugConfig:
    """Two-view augmentations (torchvision.transforms.v2). ``preset`` picks MoCo v2's aug+ or v3's pair."""

    preset: str = "mocov2"  # mocov2 | mocov3
    image_size: int = 224
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # Color jitter (brightness, contrast, saturation, hue), applied with probability jitter_p.
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    # Gaussian blur probability per view (v2: both 0.5; v3: 1.0 and 0.1); sigma range; kernel as a
    # fraction of the image size (MoCo uses 23 px at 224, about 0.1).
    blur_p: list[float] = field(default_factory=lambda: [0.5, 0.5])
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    blur_kernel_frac: float = 0.1
    solarize_p: list[float] = field(default_factory=lambda: [0.0, 0.0])
    flip_p: float = 0.5


@dataclass
class DataConfig:
    """Where the images come from."""

    dataset: str = "fashion_mnist"  # fashion_mnist | imagefolder | synthetic
    # fashion_mnist: folder with the IDX .gz files (also looked up in $XMOCO_DATA and Debian's path);
    # imagefolder: folder with train/ (and val/ for the kNN monitor) in ImageNet layout.
    root: str | None = None
    download: bool = False  # fashion_mnist only: fetch through torchvision when nothing is found locally
    num_workers: int = 2
    subset: int | None = None  # pretrain on a fixed random subset of this many images (quick experiments)
    # Grayscale data on an RGB backbone: the channel is replicated when model.kwargs.in_chans is 3.
    synthetic_size: int = 512
    synthetic_classes: int = 10
    synthetic_image_size: int = 32


@dataclass
class KnnConfig:
    """The kNN monitor run after each epoch (weighted kNN, InstDisc protocol)."""

    enabled: bool = True
    every: int = 1  # epochs
    at_start: bool = False  # also evaluate the random initialisation before training (the baseline)
    k: int = 200
    temperature: float = 0.1
    max_train: int | None = None  # cap the memory bank (None: the whole labelled train split)
    max_test: int | None = None
    batch_size: int = 512


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    epochs: int = 200
    batch_size: int = 256  # per process
    # Base lr for a total batch of 256 (lr = base_lr * batch_size * processes / 256).
    base_lr: float = 0.03
    optimizer: str = "sgd"  # sgd | lars | adamw
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # adamw
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None
    # Stop this run after this many epochs while the schedules still span `epochs` (resume later).
    stop_after_epoch: int | None = None
    max_steps: int | None = None  # hard cap on optimizer steps (smoke tests)
    keep_checkpoints: int = 2
    log_every: int = 10  # steps
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    export: bool = True  # save the online backbone in timm's format at the end


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)


_CHOICES = {
    ("method", "momentum_schedule"): ("constant", "cosine"),
    ("aug", "preset"): ("mocov2", "mocov3"),
    ("data", "dataset"): ("fashion_mnist", "imagefolder", "synthetic"),
    ("train", "optimizer"): ("sgd", "lars", "adamw"),
}


def _merge(base: Any, layer: Any, where: str) -> Any:
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as e:
        # OmegaConf's message already names the full key and suggests the nearest valid one.
        msg = str(e).split("\n")[0]
        full_key = getattr(e, "full_key", None)
        raise ConfigError(f"{where}: {msg}" + (f" (key: {full_key})" if full_key else "")) from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a Config from the defaults, the method's registered defaults, a YAML file and overrides.

    Args:
        path: YAML file (optional).
        overrides: ``a.b=value`` strings; values are parsed as YAML (``model.kwargs={in_chans: 1}``).
    """
    from .methods import method_defaults  # late: methods import this module

    file_layer = OmegaConf.create({})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        file_layer = OmegaConf.load(path)
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value (e.g. train.epochs=10)")
    cli_layer = OmegaConf.from_dotlist(list(overrides))

    schema = OmegaConf.structured(Config)
    # Find the method name first so its defaults slot in under the file and the command line.
    probe = _merge(_merge(schema, file_layer, str(path)), cli_layer, "command line")
    cfg = _merge(schema, OmegaConf.create(method_defaults(probe.method.name)), "method defaults")
    cfg = _merge(cfg, file_layer, str(path))
    cfg = _merge(cfg, cli_layer, "command line")
    out: Config = OmegaConf.to_object(cfg)
    validate(out)
    return out


def validate(cfg: Config) -> None:
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key}={value!r} is not one of {list(allowed)}")
    a = cfg.aug
    if len(a.mean) != len(a.std):
        raise ConfigError(f"aug.mean has {len(a.mean)} values but aug.std has {len(a.std)}")
    if len(a.blur_p) != 2 or len(a.solarize_p) != 2:
        raise ConfigError("aug.blur_p and aug.solarize_p take one probability per view: [p1, p2]")
    if cfg.train.batch_size < 1 or cfg.train.epochs < 1:
        raise ConfigError("train.batch_size and train.epochs must be >= 1")


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
