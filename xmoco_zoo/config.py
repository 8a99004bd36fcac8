"""Typed experiment configuration.

The dataclasses below are the schema. A run's config is built in layers: the dataclass defaults, then
the registered method's defaults (``xmoco_zoo.methods``), then the YAML file, then ``a.b=value``
overrides from the command line. Unknown keys and wrongly typed values are rejected with the full
key and the nearest valid name (OmegaConf does the merging and validation).

Process count and mixed precision are not here on purpose: they belong to ``accelerate launch``.
"""

from __future__ import annotations

import difflib
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
    # torch.compile the online and momentum backbones (in place: checkpoints and exports are unchanged).
    # Off by default: within noise of eager for resnet18 on the development CPU, after a minute of compiling
    # (README, Performance).
    compile: bool = False


@dataclass
class CO2Config:
    """CO2 consistency over negatives (arXiv 2010.02217): L += weight · L_con."""

    weight: float = 1.0  # α
    temperature: float = 0.05  # τ_con


@dataclass
class XMoCoConfig:
    """XMoCo (arXiv 2206.04676, our reading): L += cross_weight · L_x + uniform_weight · L_u."""

    cross_weight: float = 1.0  # λ_x
    uniform_weight: float = 0.1  # λ_u
    cross_temperature: float = 0.2  # τ_x
    uniform_temperature: float = 0.2  # τ_u
    cross_kind: str = "kl"  # kl (row-wise symmetric KL of softmax(S/τ_x)) | mse (raw cosines)


@dataclass
class AMCLConfig:
    """AMCL adaptive multi-head contrast (arXiv 2310.05615): H heads, per-pair temperatures."""

    heads: int = 3  # H; head 0 is the base's projector, the others get their own momentum copy and queue
    # The loss scale: ℓ's gradients are ~2/τ per head, summed over H heads, about 30x InfoNCE's at the same lr.
    # 0.03 was the best of {1, 0.1, 0.03} in 120-step Fashion-MNIST probes; 1 fell below random init (docs/methods.md).
    weight: float = 0.03
    tau_min: float = 0.01
    tau_max: float = 2.0
    beta: float = 0.1  # weight of Ω(τ) = 1/τ + (m/2)·log τ
    m: float | None = None  # Ω's constant; None: the embedding dim D (positives then settle near τ = 2/D)
    hidden: int = 128  # φ's hidden width
    negatives: str = (
        "hardest"  # hardest (the most similar negative per anchor) | batch (every in-batch negative)
    )
    keep_base_loss: bool = False  # add the base's InfoNCE back (by default AMCL replaces it)
    # φ sees detached embeddings: the temperatures learn from the loss, but Ω's gradient does not move the
    # encoder through φ (docs/methods.md: with it, one step at the default lr collapsed the embeddings).
    detach_phi_input: bool = True


REGULARIZERS = ("co2", "xmoco", "amcl")
BASES = ("mocov2", "mocov3")


@dataclass
class MethodConfig:
    """The self-supervised method: a base plus any set of regularizers, each with its own section.

    ``name`` is what the run is called (a registered preset such as ``co2``, or ``mocov3+co2+xmoco`` for a
    composition) and is derived from ``base`` and ``regularizers`` once a config is loaded.
    """

    name: str = "mocov2"
    base: str = "mocov2"  # mocov2 | mocov3
    regularizers: list[str] = field(default_factory=list)  # any of co2, xmoco, amcl
    dim: int = 128  # embedding dim D
    # Projector hidden width; None: the backbone's feature width (as MoCo v2's code).
    hidden_dim: int | None = None
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
    # Regularizer settings (used when the regularizer is in ``regularizers``)
    co2: CO2Config = field(default_factory=CO2Config)
    xmoco: XMoCoConfig = field(default_factory=XMoCoConfig)
    amcl: AMCLConfig = field(default_factory=AMCLConfig)


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
    # Augment whole batches on the training device (xmoco_zoo.batch_augment: the same ops and parameters,
    # vectorized) instead of image by image in the loader workers. Needs same-size images (fashion_mnist,
    # synthetic); imagefolder stays per image. On Fashion-MNIST it costs about 10x less CPU per image
    # (benchmarks/augment.py; the README's Performance section); the differences from the per-image pipeline
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
    # Stream the splits instead of downloading them whole, keeping the first hf_stream_rows rows of each (held
    # in memory, encoded): the training loop's seeded order and exact resume need random access.
    hf_streaming: bool = False
    hf_stream_rows: int | None = None
    hf_stream_shuffle_buffer: int = 0  # >0: read each stream through a shuffle buffer this large (seeded)


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
    # torch's fused SGD/AdamW kernel (CPU and CUDA): the SGD step 2.6x faster than torch's CPU default
    # (a for-loop; benchmarks/step_parts.py). Same update up to float rounding. LARS has none.
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
    ("method", "base"): BASES,
    ("method", "momentum_schedule"): ("constant", "cosine"),
    ("aug", "preset"): ("mocov2", "mocov3"),
    ("data", "dataset"): ("fashion_mnist", "imagefolder", "synthetic", "hf"),
    ("data", "on_bad_image"): ("skip", "error"),
    ("train", "optimizer"): ("sgd", "lars", "adamw"),
}


def _merge(base: Any, layer: Any, where: str) -> Any:
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
    file_layer = OmegaConf.create({})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        file_layer = OmegaConf.load(path)
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value (e.g. train.epochs=10)")
    return file_layer, OmegaConf.from_dotlist(list(overrides))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a Config from the defaults, the method's registered defaults, a YAML file and overrides.

    Args:
        path: YAML file (optional).
        overrides: ``a.b=value`` strings; values are parsed as YAML (``model.kwargs={in_chans: 1}``).
    """
    from .methods import method_layers  # late: methods import this module

    file_layer, cli_layer = read_layers(path, overrides)
    schema = OmegaConf.structured(Config)
    # Find the method (preset name, and a base set explicitly) first so its defaults slot in under the
    # file and the command line.
    probe = _merge(_merge(schema, file_layer, str(path)), cli_layer, "command line")
    base = OmegaConf.select(cli_layer, "method.base", default=None) or OmegaConf.select(
        file_layer, "method.base", default=None
    )
    cfg = schema
    try:
        layers = method_layers(probe.method.name, base)
    except ValueError as e:
        raise ConfigError(f"method.name: {e}") from None
    for layer in layers:
        cfg = _merge(cfg, OmegaConf.create(layer), "method defaults")
    cfg = _merge(cfg, file_layer, str(path))
    cfg = _merge(cfg, cli_layer, "command line")
    out: Config = OmegaConf.to_object(cfg)
    validate(out)
    return out


def canonical_method_name(base: str, regularizers: list[str]) -> str:
    """``mocov2``; a preset's name when (base, regularizers) is one (``co2``); else ``mocov3+co2+xmoco``."""
    from .methods import preset_for  # late: methods import this module

    regs = sorted(regularizers)
    return preset_for(base, regs) or "+".join([base, *regs])


def validate_method(m: MethodConfig) -> None:
    """Check a method config and set its canonical ``name``; every way of building a method calls this."""
    if m.base not in BASES:
        raise ConfigError(f"method.base={m.base!r} is not one of {list(BASES)}")
    for r in m.regularizers:
        if r not in REGULARIZERS:
            close = difflib.get_close_matches(r, REGULARIZERS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"method.regularizers: unknown regularizer {r!r}{hint} Available: {list(REGULARIZERS)}"
            )
    if len(set(m.regularizers)) != len(m.regularizers):
        raise ConfigError(f"method.regularizers lists a regularizer twice: {m.regularizers}")
    if "xmoco" in m.regularizers and m.base == "mocov2" and not m.symmetric:
        raise ConfigError(
            "xmoco compares both views' cross-similarities, so MoCo v2 must encode both views as queries: "
            "set method.symmetric=true"
        )
    if m.xmoco.cross_kind not in ("kl", "mse"):
        raise ConfigError(f"method.xmoco.cross_kind={m.xmoco.cross_kind!r} is not one of ['kl', 'mse']")
    a = m.amcl
    if "amcl" in m.regularizers:
        if a.heads < 1:
            raise ConfigError(f"method.amcl.heads={a.heads}: need at least one head")
        if not 0 < a.tau_min < a.tau_max:
            raise ConfigError(f"method.amcl: need 0 < tau_min < tau_max, got {a.tau_min} and {a.tau_max}")
        if a.negatives not in ("hardest", "batch"):
            raise ConfigError(f"method.amcl.negatives={a.negatives!r} is not one of ['hardest', 'batch']")
        omega_min = 2.0 / (a.m if a.m is not None else m.dim)
        if omega_min <= a.tau_min * 1.2:
            raise ConfigError(
                f"method.amcl: positives settle near τ = 2/m = {omega_min:.4g}, at or below tau_min={a.tau_min}, "
                "so their temperatures would sit on the bound: lower method.amcl.tau_min or set method.amcl.m "
                "(default: method.dim)"
            )
    m.name = canonical_method_name(m.base, m.regularizers)


def validate_data(d: DataConfig) -> None:
    """Checks of the data section shared by the pretraining and evaluation configs."""
    if d.dataset == "hf" and not d.hf_path:
        raise ConfigError(
            "data.dataset=hf needs data.hf_path: a Hub dataset id (ORG/NAME), a save_to_disk folder, "
            "a folder of parquet files or a parquet file (docs/data.md)"
        )
    if d.hf_streaming and (d.hf_stream_rows is None or d.hf_stream_rows < 1):
        raise ConfigError(
            "data.hf_streaming=true reads the first data.hf_stream_rows rows of each split: set it "
            "(e.g. data.hf_stream_rows=100000)"
        )


def validate(cfg: Config) -> None:
    validate_method(cfg.method)
    validate_data(cfg.data)
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key}={value!r} is not one of {list(allowed)}")
    a = cfg.aug
    if len(a.mean) != len(a.std):
        raise ConfigError(f"aug.mean has {len(a.mean)} values but aug.std has {len(a.std)}")
    if len(a.blur_p) != 2 or len(a.solarize_p) != 2:
        raise ConfigError("aug.blur_p and aug.solarize_p take one probability per view: [p1, p2]")
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
