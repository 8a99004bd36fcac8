"""Typed experiment configuration.

The dataclasses below are the schema. A run's config is built in layers (:func:`xmoco_zoo.experiment.load_config`):
the dataclass defaults, then the registered method's defaults (``xmoco_zoo.registry``), then the YAML file, then
``a.b=value`` overrides from the command line. Unknown keys and wrongly typed values are rejected with the full
key and the nearest valid name (OmegaConf does the merging and validation). This module imports nothing of the
package: everything else reads it.

Process count and mixed precision are not here on purpose: they belong to ``accelerate launch``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError  # defined at the bottom of the package so every module can raise it


@dataclass
class ModelConfig:
    """The backbone: any timm model name, created headless (``num_classes=0``)."""

    backbone: str = "resnet50"
    # Constructor kwargs passed through to timm.create_model: in_chans, img_size, patch_size, num_heads...
    kwargs: dict[str, Any] = field(default_factory=dict)
    # channels_last memory format for conv nets (faster on most CPUs and GPUs).
    channels_last: bool = True
    # torch.compile the online and momentum backbones (in place: checkpoints and exports are unchanged).
    # Off by default: within noise of eager for resnet18 on the development CPU, after a minute of compiling
    # (docs/performance.md).
    compile: bool = False


@dataclass
class MethodConfig:
    """The self-supervised method: a base plus any set of regularizers.

    ``name`` is what the run is called (a registered preset such as ``co2``, or ``mocov3+co2+xmoco`` for a
    composition) and is derived from ``base`` and ``regularizers`` once a config is loaded. Each registered
    regularizer adds its own section (``method.co2``...): :func:`xmoco_zoo.registry.method_config_class` is the
    full schema.
    """

    name: str = "mocov2"
    base: str = "mocov2"  # a registered base: mocov2 | mocov3
    regularizers: list[str] = field(default_factory=list)  # any registered regularizers: co2, xmoco, amcl
    dim: int = 128  # embedding dim D
    # Projector hidden width; None: the backbone's feature width (as MoCo v2's code).
    hidden_dim: int | None = None
    temperature: float = 0.2
    momentum: float = 0.999  # m, or m0 for the cosine schedule
    momentum_schedule: str = "constant"  # constant | cosine
    # MoCo v2
    queue_size: int = 65536
    symmetric: bool = False
    # InfoNCE over only the k queue entries most similar to each query (hard negatives; the selection carries no
    # gradient, the similarities chosen do); None: the whole queue. The ablation of AMCL's top-100 restriction
    # without its heads (docs/results/methods_fmnist.md).
    negatives_topk: int | None = None
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
    # RandomAffine after the crop, with probability affine_p (off by default: MoCo's pipelines have none):
    # rotation uniform in ±affine_degrees, translation up to affine_translate (fractions of width and height,
    # rounded to pixels), scale uniform in affine_scale; bilinear, the border filled with 0 (black). Small,
    # shape-keeping warps suit centred objects on a blank background, such as Fashion-MNIST's.
    affine_p: float = 0.0
    affine_degrees: float = 0.0
    affine_translate: list[float] = field(default_factory=lambda: [0.0, 0.0])
    affine_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # RandomErasing of the normalised view (the box set to 0, i.e. the mean colour) with probability erase_p:
    # area fraction uniform in erase_scale, aspect ratio log-uniform in erase_ratio (torchvision's defaults).
    erase_p: float = 0.0
    erase_scale: list[float] = field(default_factory=lambda: [0.02, 0.33])
    erase_ratio: list[float] = field(default_factory=lambda: [0.3, 3.3])
    # Augment whole batches on the training device (xmoco_zoo.batch_augment: the same ops and parameters,
    # vectorized) instead of image by image in the loader workers. Needs same-size images (fashion_mnist,
    # synthetic); imagefolder stays per image. On Fashion-MNIST it costs about 10x less CPU per image
    # (benchmarks/augment.py; docs/performance.md); the differences from the per-image pipeline
    # are listed in batch_augment's docstring.
    batched: bool = False


@dataclass
class DataConfig:
    """Where the images come from."""

    dataset: str = "fashion_mnist"  # fashion_mnist | imagefolder | synthetic | hf
    # fashion_mnist: folder with the IDX .gz files (also looked up in $XMOCO_DATA and Debian's path);
    # imagefolder: folder with train/ (and val/ for the kNN monitor) in ImageNet layout.
    root: str | None = None
    download: bool = False  # fashion_mnist only: fetch through torchvision when nothing is found locally
    num_workers: int = 2
    subset: int | None = None  # pretrain on a fixed random subset of this many images (quick experiments)
    # Hold this many images of the train split out as a validation split, for choosing hyperparameters without
    # touching the test set: pretraining and the kNN bank use the rest, the kNN monitor and the evaluations score
    # the held-out images (recorded as split "heldout"). The draw is fixed by holdout_seed, not by train.seed, so
    # every run of a comparison holds out the same images.
    holdout: int = 0
    holdout_seed: int = 0
    # Grayscale data on an RGB backbone: the channel is replicated when model.kwargs.in_chans is 3.
    synthetic_size: int = 512
    synthetic_classes: int = 10
    synthetic_image_size: int = 32
    # imagefolder: a file that cannot be decoded is replaced by the next readable image, with a warning, and
    # counted (logged as data/bad_images) -- skip; or stops the run naming the file -- error.
    on_bad_image: str = "skip"
    # hf: a Hugging Face datasets dataset (xmoco_zoo.hf_data, docs/data.md). hf_path: a Hub id ORG/NAME (read
    # through the Hugging Face cache; HF_HUB_OFFLINE=1 uses the cached copy), a save_to_disk folder, a folder of
    # data files (parquet, split names in the file names) or a parquet file or glob (one split: train).
    hf_path: str | None = None
    hf_name: str | None = None  # the Hub dataset's configuration (load_dataset's name)
    hf_revision: str | None = None  # a Hub branch, tag or commit; pin one for a reproducible run
    hf_image_column: str = "image"  # an Image feature, or uint8 pixels (H, W) / (H, W, C)
    hf_label_column: str | None = (
        "label"  # ClassLabel, integers or strings; null: unlabelled (no kNN monitor)
    )
    hf_train_split: str = "train"
    hf_test_split: str | None = "test"  # the kNN monitor's queries and the evaluations' test set; null: none
    # Stream the splits instead of downloading them (docs/data.md). hf_stream_rows=N keeps the first N rows of
    # each split in memory, encoded (the evaluations index samples, so they need it); null: pretraining reads the
    # whole train split, epoch after epoch, each process its shard, and the kNN monitor keeps knn.max_train rows.
    hf_streaming: bool = False
    hf_stream_rows: int | None = None
    # A whole stream's epoch, in rows over all processes; null: the split's num_examples from the dataset's info
    # (a Hub dataset's card usually has it; local parquet files do not).
    hf_stream_epoch_rows: int | None = None
    # Read each stream through a shuffle buffer this large, seeded by train.seed and the epoch (0: stored order);
    # null: 10000 for a whole stream, 0 for the first hf_stream_rows rows.
    hf_stream_shuffle_buffer: int | None = None


@dataclass
class KnnConfig:
    """The kNN monitor run after each epoch (weighted kNN, InstDisc protocol)."""

    enabled: bool = True
    every: int = 1  # epochs
    # ... and also after these epochs (e.g. [1, 2, 4, 8, 16]: a log-spaced curve of a long run for a few
    # evaluations; the zoo's models record it, and the zoo's plot draws it against training minutes). A fraction
    # (0.25) evaluates mid-epoch, after step round(0.25 x steps per epoch): the first minutes of a slow epoch.
    epochs: list[float] = field(default_factory=list)
    at_start: bool = False  # also evaluate the random initialisation before training (the baseline)
    k: int = 200
    temperature: float = 0.1
    # Cap the memory bank (None: the whole labelled train split); needed for a whole stream (data.hf_streaming).
    max_train: int | None = None
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
    # torch's fused SGD/AdamW kernel (CPU and CUDA): faster than torch's CPU default, a for-loop
    # (docs/performance.md, benchmarks/step_parts.py). Same update up to float rounding. LARS has none.
    fused_optimizer: bool = True
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None
    # Stop this run after this many epochs while the schedules still span `epochs` (resume later).
    stop_after_epoch: int | None = None
    max_steps: int | None = None  # hard cap on optimizer steps (smoke tests)
    # Drop the last short batch of each epoch (MoCo's convention). false: several processes get the short
    # batch completed to full batches by Accelerate (with the epoch's first samples); one process trains on it.
    drop_last: bool = True
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
    ("data", "dataset"): ("fashion_mnist", "imagefolder", "synthetic", "hf"),
    ("data", "on_bad_image"): ("skip", "error"),
    ("train", "optimizer"): ("sgd", "lars", "adamw"),
}


def merge_layer(base: Any, layer: Any, where: str) -> Any:
    """``OmegaConf.merge(base, layer)``; a key or type the schema refuses becomes a ConfigError naming ``where``,
    the full key and the nearest valid one."""
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as e:
        msg = str(e).split("\n")[0]
        full_key = getattr(e, "full_key", None)
        if full_key and "not in" in msg and "did you mean" not in msg.lower():
            # OmegaConf 2.4 suggests the nearest valid key itself; 2.3 (which hydra pins) does not.
            parent, _, name = full_key.rpartition(".")
            node = OmegaConf.select(base, parent) if parent else base
            if OmegaConf.is_dict(node):
                close = difflib.get_close_matches(name, [str(k) for k in node.keys()], n=1)
                if close:
                    msg += f". Did you mean: '{close[0]}'?"
        raise ConfigError(f"{where}: {msg}" + (f" (key: {full_key})" if full_key else "")) from None


def read_layers(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Any, Any]:
    """The YAML file's layer (empty without a file) and the ``a.b=value`` overrides' layer, unmerged."""
    file_layer = OmegaConf.create({}) if path is None else read_config_file(Path(path))
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value (e.g. train.epochs=10)")
        try:  # each value is parsed as YAML: an unclosed bracket or quote fails here
            OmegaConf.from_dotlist([o])
        except yaml.YAMLError as e:
            raise ConfigError(
                f"override {o!r}: the value is not valid YAML ({getattr(e, 'problem', None) or e}); close its "
                "brackets and quotes, e.g. 'method.regularizers=[co2,xmoco]'"
            ) from None
    return file_layer, OmegaConf.from_dotlist(list(overrides))


EXTENDS = "extends"


def read_config_file(path: Path, chain: tuple[Path, ...] = ()) -> Any:
    """A YAML config file as one layer. ``extends: OTHER.yaml`` (a path relative to the file) puts the file on top
    of OTHER's layer, read the same way: a method's config states only what differs from the one it builds on
    (keys merge; a list or a value replaces the other's)."""
    if not path.is_file():
        where = f" (extended by {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{where}")
    try:
        layer = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(e)}); fix the file") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(
            f"{path}: a config file is a mapping of sections (model:, method:, ...), not a list"
        )
    if EXTENDS not in layer:
        return layer
    parent = layer.pop(EXTENDS)
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: `{EXTENDS}:` takes the path of one YAML file (relative to {path.parent})")
    parent_path = (path.parent / parent).resolve()
    if parent_path in {p.resolve() for p in (*chain, path)}:
        cycle = " -> ".join(str(p) for p in (*chain, path, parent_path))
        raise ConfigError(f"{path}: `{EXTENDS}:` makes a cycle ({cycle}); remove one of them")
    return OmegaConf.merge(read_config_file(parent_path, (*chain, path)), layer)


def _yaml_problem(e: Exception) -> str:
    """PyYAML's problem and line as one phrase ("did not find expected node content, line 3")."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem}, line {mark.line + 1}" if mark is not None else problem


def validate_data(d: DataConfig, whole_stream: bool = False) -> None:
    """Checks of the data section shared by the pretraining and evaluation configs; ``whole_stream``: the
    consumer reads a whole stream (pretraining), so ``data.hf_stream_rows`` may be null."""
    if d.dataset == "hf" and not d.hf_path:
        raise ConfigError(
            "data.dataset=hf needs data.hf_path: a Hub dataset id (ORG/NAME), a save_to_disk folder, "
            "a folder of parquet files or a parquet file (docs/data.md)"
        )
    for key in ("hf_stream_rows", "hf_stream_epoch_rows"):
        if getattr(d, key) is not None and getattr(d, key) < 1:
            raise ConfigError(f"data.{key}={getattr(d, key)}: a number of rows, >= 1 (or null)")
    if d.hf_stream_shuffle_buffer is not None and d.hf_stream_shuffle_buffer < 0:
        raise ConfigError(f"data.hf_stream_shuffle_buffer={d.hf_stream_shuffle_buffer}: >= 0 (0: no shuffle)")
    if streams_whole(d) and not whole_stream:
        raise ConfigError(
            "data.hf_streaming=true: the evaluations index samples, so they read the first data.hf_stream_rows "
            "rows of each split: set it (e.g. data.hf_stream_rows=100000)"
        )


def streams_whole(d: DataConfig) -> bool:
    """Pretraining reads the whole train split as a stream (data.hf_streaming, no data.hf_stream_rows)."""
    return d.dataset == "hf" and d.hf_streaming and d.hf_stream_rows is None


def validate_whole_stream(cfg: Config) -> None:
    """What needs random access over the train split cannot read a whole stream: say which key to set."""
    d = cfg.data
    if d.subset or d.holdout:
        key = "data.subset" if d.subset else "data.holdout"
        raise ConfigError(
            f"{key} draws random rows of the train split, which a whole stream (data.hf_streaming=true, "
            f"data.hf_stream_rows=null) cannot: set {key}=null, or data.hf_stream_rows=N to use its first N rows"
        )
    if cfg.knn.enabled and d.hf_label_column and d.hf_test_split and cfg.knn.max_train is None:
        raise ConfigError(
            "data.hf_streaming=true streams the whole train split, and the kNN monitor's bank needs random "
            "access: set knn.max_train=N (the split's first N rows, held in memory), or knn.enabled=false"
        )


def validate(cfg: Config) -> None:
    """Check the sections other than ``method`` (:func:`xmoco_zoo.registry.validate_method` checks that one)."""
    validate_data(cfg.data, whole_stream=True)
    if streams_whole(cfg.data):
        validate_whole_stream(cfg)
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key}={value!r} is not one of {list(allowed)}")
    if any(not 0 < e <= cfg.train.epochs for e in cfg.knn.epochs):
        raise ConfigError(
            f"knn.epochs={list(cfg.knn.epochs)}: each mark is an epoch count in (0, train.epochs="
            f"{cfg.train.epochs}] (a fraction such as 0.25 evaluates mid-epoch)"
        )
    a = cfg.aug
    if len(a.mean) != len(a.std):
        raise ConfigError(f"aug.mean has {len(a.mean)} values but aug.std has {len(a.std)}")
    if len(a.blur_p) != 2 or len(a.solarize_p) != 2:
        raise ConfigError("aug.blur_p and aug.solarize_p take one probability per view: [p1, p2]")
    for key in ("affine_scale", "erase_scale", "erase_ratio"):
        lo_hi = getattr(a, key)
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1] or lo_hi[0] < 0:
            raise ConfigError(f"aug.{key}={list(lo_hi)} must be a range [low, high] with 0 <= low <= high")
    translate_ok = len(a.affine_translate) == 2 and all(0 <= t <= 1 for t in a.affine_translate)
    if a.affine_scale[0] <= 0 or not translate_ok or a.affine_degrees < 0:
        raise ConfigError(
            f"aug.affine_*: scale {list(a.affine_scale)} must be > 0, translate {list(a.affine_translate)} two "
            f"fractions of width and height in [0, 1], degrees {a.affine_degrees} >= 0 (a rotation in ±degrees)"
        )
    if a.erase_scale[1] > 1 or a.erase_ratio[0] <= 0:
        raise ConfigError(
            f"aug.erase_scale {list(a.erase_scale)} is a fraction of the area (<= 1) and aug.erase_ratio "
            f"{list(a.erase_ratio)} an aspect ratio (> 0)"
        )
    if a.batched and cfg.data.dataset == "imagefolder":
        raise ConfigError(
            "aug.batched=true needs images of one size, and an image folder's differ: set aug.batched=false "
            "(per-image augmentation in the loader workers) for data.dataset=imagefolder"
        )
    if cfg.train.batch_size < 1 or cfg.train.epochs < 1:
        raise ConfigError("train.batch_size and train.epochs must be >= 1")


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
