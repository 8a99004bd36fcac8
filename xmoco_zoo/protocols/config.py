"""Typed configs of the evaluation recipes (kNN, linear probe, fine-tuning), in the style of ``xmoco_zoo.config``.

A config is the dataclass defaults, then the YAML file (``recipes/configs/eval/*.yaml``), then ``a.b=value``
overrides. Unknown keys and wrongly typed values are errors naming the key and the nearest valid one
(the same OmegaConf merging as the pretraining config: :func:`xmoco_zoo.config.read_layers` and ``merge_layer``).

Input size, mean, std and channels come from the evaluated model's own ``pretrained_cfg`` unless the
``aug`` section sets them; process count and mixed precision belong to ``accelerate launch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..config import ConfigError, DataConfig, merge_layer, read_layers, validate_data


@dataclass
class EvalModelConfig:
    """What is evaluated, loaded the way users load it."""

    # local-dir:PATH | hf-hub:ORG/NAME | checkpoint:PATH (runs/X for its newest checkpoint, or
    # runs/X/checkpoints/epoch_NNNN) | a timm model name (pretrained=true then downloads timm's weights).
    spec: str = "local-dir:runs/mocov2_fmnist/backbone"
    # false: the same architecture and constructor args at random init (seed run.seed): the from-scratch baseline.
    pretrained: bool = True
    # Extra constructor kwargs for timm.create_model (e.g. drop_path_rate for fine-tuning a ViT).
    kwargs: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = True


@dataclass
class EvalDataConfig(DataConfig):
    """The labelled data: ``fashion_mnist`` (train/test), ``imagefolder`` (root/train, root/val), ``synthetic``,
    ``hf`` (a Hugging Face dataset: its ``data.hf_train_split`` and ``data.hf_test_split``).

    ``subset`` caps the labelled train split and ``test_subset`` the test split (fixed random subsets seeded
    by ``run.seed``; for quick checks: the result's ``protocol_args`` then record the sizes used).
    """

    test_subset: int | None = None
    splits_dir: str = "splits"  # semi-supervised label splits (JSON), created on first use and verified after
    synthetic_seed: int = 0  # the synthetic set's class patterns (independent of run.seed)


@dataclass
class EvalAugConfig:
    """Pre-processing. ``None`` means: take it from the model's pretrained_cfg."""

    image_size: int | None = None
    # Evaluation: resize the short side to image_size / crop_pct, centre-crop image_size (ImageNet: 224/256).
    crop_pct: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    # Training augmentation (linear probe in full mode, fine-tuning): RandomResizedCrop + horizontal flip,
    # optionally RandAugment (torchvision's, on tensors) and random erasing.
    train_crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    flip_p: float = 0.5
    randaugment_ops: int = 0  # 0: off; MAE/BEiT fine-tuning: 2 ops, magnitude 9
    randaugment_magnitude: int = 9
    random_erasing: float = 0.0  # probability (MAE fine-tuning: 0.25)


@dataclass
class RunConfig:
    output_dir: str = "runs/eval/default"
    seed: int = 0
    log_every: int = 10  # steps
    max_steps: int | None = None  # hard cap on optimizer steps (smoke tests); the result then says so
    trackers: list[str] = field(
        default_factory=list
    )  # extra Accelerate trackers (metrics.csv is always written)
    save_results: bool = True  # results JSON (output_dir, and beside a local-dir: model or a checkpoint)
    update_card: bool = True  # re-render a local-dir: model's card after storing a result


@dataclass
class KnnSection:
    """Weighted kNN (InstDisc / MoCo monitor protocol) on L2-normalised frozen features."""

    k: int = 200
    temperature: float = 0.1
    batch_size: int = 512  # feature extraction, per process
    # Also measure the same architecture at random init and L2-normalised raw pixels (the floor).
    baselines: bool = False


@dataclass
class LinearSection:
    """Linear probe on a frozen backbone.

    ``full``: MoCo's protocol (backbone in eval mode, augmented images every epoch, SGD with step decay);
    the defaults are MoCo's ImageNet ones (lr 30 for batch 256, 100 epochs, x0.1 at 60 and 80, wd 0).
    ``fast``: extract features once (no augmentation) and train the head on them; ``auto`` is fast on
    fashion_mnist and synthetic data, full on imagefolder.
    """

    mode: str = "auto"  # auto | fast | full
    # Head optimizer: sgd (MoCo's; full or fast) or lbfgs (fast only: full-batch L-BFGS, the fast default).
    optimizer: str = "auto"  # auto: lbfgs in fast mode, sgd in full mode
    epochs: int = 100  # sgd
    batch_size: int = 256  # per process (full mode) / mini-batch on cached features (fast sgd)
    base_lr: float = 30.0  # sgd: lr = base_lr x total batch / 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: list[int] = field(default_factory=lambda: [60, 80])  # epochs at which lr x gamma
    gamma: float = 0.1
    lbfgs_max_iter: int = 300  # L-BFGS iterations (strong-Wolfe line search)
    # Standardise features before the head: BatchNorm1d without affine (MAE's linear probe). Fast mode:
    # statistics of the train features. Default: on in fast mode, off in full mode (MoCo's protocol has none).
    standardize: bool | None = None
    eval_batch_size: int = 512
    eval_every: int = 10  # epochs (full mode)
    # Also probe the same architecture at random init and (fast mode) the raw pixels, same protocol.
    baselines: bool = False


@dataclass
class FinetuneSection:
    """Full fine-tuning (or semi-supervised fine-tuning on a labelled fraction) of every layer."""

    epochs: int = 100
    batch_size: int = 256  # per process
    optimizer: str = "adamw"  # adamw | sgd (momentum) | nesterov
    base_lr: float = 1e-3  # lr = base_lr x total batch / 256
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd / nesterov
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    warmup_epochs: float = 5.0  # linear warmup, then cosine to min_lr_ratio x lr
    min_lr_ratio: float = 0.0
    # Layer-wise lr decay (timm's param_groups_layer_decay, through create_optimizer_v2): layer i of L gets
    # lr x layer_decay^(L - i). ViT-B: 0.65-0.75 (MAE, BEiT). null: off.
    layer_decay: float | None = None
    grad_clip: float | None = None
    label_smoothing: float = 0.0
    # timm.data.Mixup + SoftTargetCrossEntropy when mixup > 0 or cutmix > 0 (alphas of the Beta distributions).
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    # Semi-supervised: fine-tune on a fixed, seeded, class-balanced percent of the train labels (1 or 10:
    # protocol semisup_1pct / semisup_10pct); the split is a JSON list of indices in data.splits_dir.
    label_percent: float | None = None
    split_seed: int = 0
    eval_batch_size: int = 512
    eval_every: int = 1  # epochs
    # A results JSON of this same recipe run from scratch (model.pretrained=false): shown as the baseline.
    scratch_result: str | None = None


@dataclass
class KnnEvalConfig:
    model: EvalModelConfig = field(default_factory=EvalModelConfig)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    aug: EvalAugConfig = field(default_factory=EvalAugConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/eval/knn"))
    knn: KnnSection = field(default_factory=KnnSection)


@dataclass
class LinearEvalConfig:
    model: EvalModelConfig = field(default_factory=EvalModelConfig)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    aug: EvalAugConfig = field(default_factory=EvalAugConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/eval/linear"))
    linear: LinearSection = field(default_factory=LinearSection)


@dataclass
class FinetuneEvalConfig:
    model: EvalModelConfig = field(default_factory=EvalModelConfig)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    aug: EvalAugConfig = field(default_factory=EvalAugConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/eval/finetune"))
    finetune: FinetuneSection = field(default_factory=FinetuneSection)


SCHEMAS = {"knn": KnnEvalConfig, "linear": LinearEvalConfig, "finetune": FinetuneEvalConfig}

_CHOICES = {
    ("data", "dataset"): ("fashion_mnist", "imagefolder", "synthetic", "hf"),
    ("linear", "mode"): ("auto", "fast", "full"),
    ("linear", "optimizer"): ("auto", "sgd", "lbfgs"),
    ("finetune", "optimizer"): ("adamw", "sgd", "nesterov"),
}


def load_eval_config(protocol: str, path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Any:
    """The config of one evaluation recipe (``knn``, ``linear`` or ``finetune``): defaults, YAML, overrides."""
    if protocol not in SCHEMAS:
        raise ConfigError(f"unknown evaluation {protocol!r}: one of {sorted(SCHEMAS)}")
    file_layer, cli_layer = read_layers(path, overrides)
    cfg = merge_layer(OmegaConf.structured(SCHEMAS[protocol]), file_layer, str(path))
    cfg = merge_layer(cfg, cli_layer, "command line")
    out = OmegaConf.to_object(cfg)
    validate_eval(out)
    return out


def validate_eval(cfg: Any) -> None:
    for (section, key), allowed in _CHOICES.items():
        if hasattr(cfg, section) and getattr(getattr(cfg, section), key) not in allowed:
            raise ConfigError(
                f"{section}.{key}={getattr(getattr(cfg, section), key)!r} is not one of {list(allowed)}"
            )
    validate_data(cfg.data)
    a = cfg.aug
    if (a.mean is None) != (a.std is None) or (a.mean is not None and len(a.mean) != len(a.std)):
        raise ConfigError("aug.mean and aug.std go together, with one value per channel")
    if len(a.train_crop_scale) != 2 or not 0 < a.train_crop_scale[0] <= a.train_crop_scale[1] <= 1:
        raise ConfigError(f"aug.train_crop_scale={a.train_crop_scale}: need [lo, hi] with 0 < lo <= hi <= 1")
    if a.crop_pct is not None and not 0 < a.crop_pct <= 1:
        raise ConfigError(f"aug.crop_pct={a.crop_pct}: need 0 < crop_pct <= 1")
    if isinstance(cfg, LinearEvalConfig):
        li = cfg.linear
        if li.epochs < 1 or li.batch_size < 1:
            raise ConfigError("linear.epochs and linear.batch_size must be >= 1")
        if li.optimizer == "lbfgs" and li.mode == "full":
            raise ConfigError("linear.optimizer=lbfgs needs cached features: use linear.mode=fast (or auto)")
    if isinstance(cfg, FinetuneEvalConfig):
        ft = cfg.finetune
        if ft.epochs < 1 or ft.batch_size < 1:
            raise ConfigError("finetune.epochs and finetune.batch_size must be >= 1")
        if ft.label_percent is not None and not 0 < ft.label_percent < 100:
            raise ConfigError(
                f"finetune.label_percent={ft.label_percent}: a percent in (0, 100), e.g. 1 or 10"
            )
        if ft.layer_decay is not None and not 0 < ft.layer_decay <= 1:
            raise ConfigError(f"finetune.layer_decay={ft.layer_decay}: need 0 < layer_decay <= 1 (or null)")
        if (ft.mixup > 0 or ft.cutmix > 0) and ft.batch_size % 2:
            raise ConfigError("timm's Mixup needs an even finetune.batch_size")


def resolve_linear_mode(cfg: LinearEvalConfig) -> tuple[str, str, bool]:
    """(mode, optimizer, standardize) with the ``auto``/``None`` defaults resolved for the dataset."""
    li = cfg.linear
    mode = li.mode if li.mode != "auto" else ("full" if cfg.data.dataset == "imagefolder" else "fast")
    opt = li.optimizer if li.optimizer != "auto" else ("lbfgs" if mode == "fast" else "sgd")
    if opt == "lbfgs" and mode == "full":
        raise ConfigError("linear.optimizer=lbfgs needs cached features: use linear.mode=fast")
    std = li.standardize if li.standardize is not None else mode == "fast"
    return mode, opt, std


def eval_to_dict(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def eval_to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
