"""Self-supervised pretraining with Hugging Face Accelerate.

    accelerate launch recipes/pretrain.py --config recipes/configs/mocov2_fmnist.yaml train.epochs=5
    python recipes/pretrain.py --config ... --resume            # continue from the newest checkpoint
    python recipes/pretrain.py --config ... --resume-from runs/x/checkpoints/epoch_0003

Reads top to bottom: ``main`` runs ``setup`` (accelerator, data, method, optimizer, ``prepare``), ``resume``,
``start`` (config file, trackers, kNN of the random init), then per epoch ``train_epoch`` (each batch one
``train_step``: views → schedules → forward → backward → optimizer step → one collective) and ``end_of_epoch``
(kNN monitor → atomic checkpoint), and ``finish`` (export, summary).

Faults (xmoco_zoo/lifecycle.py): a NaN/inf loss stops the run naming the step and the term (the last checkpoint
is kept); SIGTERM finishes the current step, writes a checkpoint (mid-epoch if need be: ``--resume`` then
continues from that exact batch) and exits with status 143; after a ``kill -9``, ``--resume`` continues from
the last complete checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, send_to_device, set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .augment import TwoViews, eval_transform
from .batch_augment import BatchTwoViews
from .config import Config, ConfigError, streams_whole, to_dict, to_yaml
from .data import (
    EpochSampler,
    StreamImages,
    StreamRows,
    TransformDataset,
    TwoViewDataset,
    labelled_splits,
    split_name,
    subset,
)
from .distributed import broadcast_norm_buffers, convert_sync_batchnorm
from .errors import run_main
from .experiment import load_config
from .export import export_model
from .hf_data import open_train_stream
from .knn import extract_features, knn_accuracy
from .lifecycle import NonFiniteLossError, StopOnSigterm, TrainingInterrupted, any_process, ignore_sigterm
from .logging import CSVTracker, flatten, restart_metrics
from .methods import create_method_from_config
from .optim import create_optimizer, set_lr
from .results import EvalRecord, current_command, git_commit, machine, read_results, training_command
from .schedules import cosine_lr, momentum_at

StepHook = Callable[[int, int], None]
"""``hook(step, process_index)``, called after each optimizer step (see :func:`main`)."""


class TrainState:
    """The loop counters, saved in each checkpoint (Accelerate ``register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0  # complete epochs
        self.epoch_step = 0  # batches done in the current epoch (non-zero only in a mid-epoch checkpoint)
        self.total_batch: int | None = (
            None  # processes x batch: a resume with another total rescales the step
        )
        self.processes: int | None = None  # to check a mid-epoch resume (shuffle BN depends on it)
        self.knn_top1: float | None = None
        self.knn_init: float | None = None  # kNN of the random initialisation (knn.at_start)
        # Wall-clock seconds in the training epochs (loading and steps; not the kNN monitor, not checkpointing),
        # summed over resumes: the model card's training minutes.
        self.train_seconds = 0.0
        # The kNN monitor's curve: [training minutes, top-1] at each evaluation (0 minutes: the random init), for
        # the card and the zoo's accuracy-against-minutes plot.
        self.knn_curve: list[list[float]] = []

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "total_batch": self.total_batch,
            "processes": self.processes,
            "knn_top1": self.knn_top1,
            "knn_init": self.knn_init,
            "train_seconds": self.train_seconds,
            "knn_curve": [list(p) for p in self.knn_curve],
        }

    def load_state_dict(self, d: dict) -> None:
        self.step, self.epoch = int(d["step"]), int(d["epoch"])
        self.epoch_step, self.total_batch = int(d.get("epoch_step", 0)), d.get("total_batch")
        self.processes = d.get("processes")
        self.knn_top1, self.knn_init = d.get("knn_top1"), d.get("knn_init")
        self.train_seconds = float(d.get("train_seconds", 0.0))  # absent from checkpoints before 2026-12-02
        self.knn_curve = [list(map(float, p)) for p in d.get("knn_curve", [])]  # absent before 2026-12-05


@dataclass
class Run:
    """One training run: what :func:`setup` built, the counters, and what the checkpoints carry."""

    cfg: Config
    accelerator: Accelerator
    model: torch.nn.Module  # as prepared (DDP under several processes): what a step calls
    method: torch.nn.Module  # the same, unwrapped: its ``backbone`` is evaluated and exported
    optimizer: torch.optim.Optimizer
    loader: DataLoader  # prepared, except a stream's (each process reads its own shard)
    sampler: EpochSampler | StreamRows
    dataset: Dataset
    knn_loaders: tuple[DataLoader, DataLoader] | None
    batch_views: BatchTwoViews | None  # aug.batched: the views are made per batch on the device
    view_generator: torch.Generator | None
    total_batch: int  # processes x train.batch_size
    peak_lr: float
    steps_per_epoch: int
    state: TrainState
    stop: StopOnSigterm
    after_step: Sequence[StepHook] = ()
    results: list[EvalRecord] = field(default_factory=list)  # kNN records, saved with checkpoints and export
    resume_rng: torch.Tensor | None = None  # mid-epoch resume: the RNG state to restore at the first batch
    resumed_step: int | None = None  # the loaded checkpoint's step, as it was written (None: a fresh start)
    command: str = field(default_factory=lambda: training_command(current_command()))  # without --resume
    commit: str | None = field(default_factory=git_commit)

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.train.output_dir)

    @property
    def checkpoints(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def total_steps(self) -> int:
        return self.cfg.train.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return int(round(self.cfg.train.warmup_epochs * self.steps_per_epoch))

    @property
    def stop_epoch(self) -> int:
        """The epoch this process trains up to (train.stop_after_epoch ends a run early, to resume later)."""
        return min(self.cfg.train.epochs, self.cfg.train.stop_after_epoch or self.cfg.train.epochs)

    @property
    def knn_marks(self) -> set[tuple[int, int]]:
        """knn.epochs as (epoch, batches into it) after which the kNN monitor runs: (n, 0) is the end of epoch n,
        (0, 117) half of the first epoch of 234 batches. A mark is rounded to the nearest batch."""
        if self.knn_loaders is None:
            return set()
        return {divmod(round(e * self.steps_per_epoch), self.steps_per_epoch) for e in self.cfg.knn.epochs}

    @property
    def max_steps_reached(self) -> bool:
        return self.state.step >= (self.cfg.train.max_steps or math.inf)

    def training_facts(self) -> dict:
        """What the checkpoint and the model card record about how the weights were made."""
        return {
            "epochs": self.state.epoch,
            "steps": self.state.step,
            "batch_size": self.total_batch,
            "processes": self.accelerator.num_processes,
            "command": self.command,
            "commit": self.commit,
            "train_minutes": round(self.state.train_seconds / 60, 2),
            "knn_curve": [[round(m, 3), round(t, 4)] for m, t in self.state.knn_curve],
            "machine": machine(self.accelerator.device)
            + (
                f" x {self.accelerator.num_processes} processes" if self.accelerator.num_processes > 1 else ""
            ),
        }

    def save(self, step: int | None = None) -> Path:
        """An atomic checkpoint after ``state.epoch`` epochs, or mid-epoch after global step ``step``."""
        broadcast_norm_buffers(self.method)  # every rank saves (and later resumes) rank 0's BN statistics
        return ckpt.save_checkpoint(
            self.accelerator,
            self.checkpoints,
            self.state.epoch,
            self.cfg,
            keep=self.cfg.train.keep_checkpoints,
            training=self.training_facts(),
            results=self.results,
            step=step,
        )


class StepResult(NamedTuple):
    """What one training step reports, every number already reduced over processes."""

    values: dict[str, float]  # each term the method returned ("loss", ...), mean over processes
    lr: float
    momentum: float
    bad_images: float  # unreadable images in the batch (data.on_bad_image=skip), summed over processes
    stop: bool  # SIGTERM reached at least one process


class LogWindow:
    """The logged values summed over the steps since the last log line (train.log_every)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, values: dict[str, float]) -> None:
        for n, v in values.items():
            self.sums[n] = self.sums.get(n, 0.0) + v
        self.steps += 1

    def logs(self, last: StepResult, epoch: int, total_batch: int) -> dict[str, float]:
        """The window's means, the last step's lr and momentum, the epoch (from 1) and the throughput."""
        seconds = time.perf_counter() - self.start
        logs = {f"train/{n}": v / self.steps for n, v in self.sums.items()}
        logs.update(
            {
                "train/lr": last.lr,
                "train/momentum": last.momentum,
                "train/epoch": epoch + 1,
                "perf/images_per_s": self.steps * total_batch / seconds,
            }
        )
        return logs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The recipe's command line: ``--config``, ``--resume`` / ``--resume-from`` and ``key=value`` overrides."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML experiment config (recipes/configs/*.yaml)")
    p.add_argument(
        "--resume", action="store_true", help="resume from the newest complete checkpoint in train.output_dir"
    )
    p.add_argument(
        "--resume-from", metavar="DIR", help="resume from this checkpoint folder (checkpoints/epoch_NNNN)"
    )
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. train.epochs=10)")
    return p.parse_intermixed_args(argv)  # overrides may come before and after the flags


def main(argv: list[str] | None = None, after_step: Sequence[StepHook] = ()) -> dict:
    """Pretrain as the command line ``argv`` says (the recipe's arguments); returns the run's summary.

    Args:
        argv: ``--config``, ``--resume`` / ``--resume-from`` and ``key=value`` overrides; None reads sys.argv.
        after_step: each called as ``hook(step, process_index)`` on every process right after optimizer step
            ``step`` (the global count, from 1), before the step's collective reads the stop flag: a hook that
            sends SIGTERM stops the run after that very step. tests/hooked_pretrain.py injects faults with it.

    Raises:
        TrainingInterrupted: SIGTERM; the checkpoint is written (exit status 143).
        NonFiniteLossError: a loss term became NaN or inf; the last checkpoint is kept.
    """
    with StopOnSigterm() as stop:
        args = parse_args(argv)
        run = setup(load_config(args.config, args.overrides), stop, after_step)
        if args.resume or args.resume_from:
            resume(run, args.resume_from or "auto")
        start(run)
        while run.state.epoch < run.stop_epoch and not run.max_steps_reached:
            stopped = train_epoch(run)
            end_of_epoch(run, stopped)
        return finish(run)


# ---------------------------------------------------------------- set-up


def setup(cfg: Config, stop: StopOnSigterm, after_step: Sequence[StepHook] = ()) -> Run:
    """Accelerator, data, method and optimizer, through ``accelerator.prepare``: a run at step 0."""
    accelerator = create_accelerator(cfg)
    set_seed(cfg.train.seed)
    channels = int(cfg.model.kwargs.get("in_chans", 3))
    loader, sampler, dataset, knn_loaders = build_loaders(
        cfg, channels, accelerator.process_index, accelerator.num_processes
    )
    model = create_model(cfg, accelerator)
    total_batch = cfg.train.batch_size * accelerator.num_processes
    peak_lr = cfg.train.base_lr * total_batch / 256
    optimizer = create_optimizer(model, cfg.train, peak_lr)

    if isinstance(sampler, StreamRows):  # already this process's shard: Accelerate must not shard it again
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if knn_loaders is not None:
        knn_loaders = accelerator.prepare(*knn_loaders)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if len(loader) == 0:
        raise ConfigError(
            f"the dataset has {len(dataset)} images, fewer than one batch of {cfg.train.batch_size} per process: "
            "lower train.batch_size"
        )
    batched = cfg.aug.batched  # the loader yields raw uint8 images; BatchTwoViews makes the views
    return Run(
        cfg=cfg,
        accelerator=accelerator,
        model=model,
        method=accelerator.unwrap_model(model),
        optimizer=optimizer,
        loader=loader,
        sampler=sampler,
        dataset=dataset,
        knn_loaders=knn_loaders,
        batch_views=BatchTwoViews(cfg.aug, channels).to(accelerator.device) if batched else None,
        view_generator=torch.Generator(device=accelerator.device) if batched else None,
        total_batch=total_batch,
        peak_lr=peak_lr,
        steps_per_epoch=len(loader),
        state=state,
        stop=stop,
        after_step=tuple(after_step),
    )


def create_accelerator(cfg: Config) -> Accelerator:
    """The CPU when there is no GPU; the CSV tracker (metrics.csv) beside the configured trackers."""
    out_dir = Path(cfg.train.output_dir)
    # torch 2.14 deprecates DDP's broadcast_buffers in favour of forward_sync_buffers, which Accelerate's
    # DistributedDataParallelKwargs does not expose yet; broadcast_buffers=False is what we mean (see below).
    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        log_with=[t for t in cfg.train.trackers if t != "csv"] + [CSVTracker("pretrain", out_dir)],
        project_dir=str(out_dir),
        # The queue is a buffer that every rank updates identically: no need to broadcast it each step.
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )


def build_loaders(
    cfg: Config, channels: int, rank: int = 0, processes: int = 1
) -> tuple[DataLoader, EpochSampler | StreamRows, Dataset, tuple | None]:
    """The pretraining loader, its sampler and dataset, and the kNN monitor's (bank, queries) loaders or None."""
    if streams_whole(cfg.data):
        loader, sampler, images = build_stream_loader(cfg, channels, rank, processes)
        # The monitor indexes its bank and queries: the first knn.max_train / knn.max_test rows, held in memory.
        monitored = cfg.knn.enabled and cfg.data.hf_label_column and cfg.data.hf_test_split
        rows = (cfg.knn.max_train, cfg.knn.max_test)
        train_split, test_split = labelled_splits(cfg, channels, rows) if monitored else (None, None)
        return loader, sampler, images, monitor_loaders(cfg, channels, train_split, test_split)
    train_split, test_split = labelled_splits(cfg, channels)
    pretrain_images = subset(train_split, cfg.data.subset, cfg.train.seed)
    if cfg.aug.batched:  # the loader yields the raw uint8 images; BatchTwoViews makes the views on the device
        pretrain_ds = pretrain_images
    else:
        pretrain_ds = TwoViewDataset(pretrain_images, TwoViews(cfg.aug, channels), seed=cfg.train.seed)
    sampler = EpochSampler(len(pretrain_ds), seed=cfg.train.seed)
    loader = DataLoader(
        pretrain_ds,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        # MoCo's convention; with drop_last=false a short last batch is padded by Accelerate to a full batch
        # per process under several processes, and reaches the method as is in one process.
        drop_last=cfg.train.drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        worker_init_fn=ignore_sigterm,
    )
    return loader, sampler, pretrain_ds, monitor_loaders(cfg, channels, train_split, test_split)


def build_stream_loader(
    cfg: Config, channels: int, rank: int, processes: int
) -> tuple[DataLoader, StreamRows, StreamImages]:
    """The loader of a whole streamed train split (data.hf_streaming, data.hf_stream_rows null): this process's
    shard, ``rows // (processes x batch)`` full batches per epoch, yielding what the map-style loader yields."""
    stream = open_train_stream(cfg.data, channels, cfg.train.seed, rank, processes)
    batch = cfg.train.batch_size
    rows = stream.epoch_rows // (processes * batch) * batch
    if rows == 0:
        raise ConfigError(
            f"an epoch of {stream.where} is {stream.epoch_rows} rows, fewer than one batch of {batch} per process "
            f"({processes} process(es)): lower train.batch_size, or raise data.hf_stream_epoch_rows"
        )
    sampler = StreamRows(stream.rows, rows, rank, processes)
    views = None if cfg.aug.batched else TwoViews(cfg.aug, channels)
    images = StreamImages(
        stream.decode, stream.epoch_rows, stream.where, cfg.data.on_bad_image, views, seed=cfg.train.seed
    )
    loader = DataLoader(
        images,
        batch_size=batch,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        worker_init_fn=ignore_sigterm,
    )
    return loader, sampler, images


def monitor_loaders(
    cfg: Config, channels: int, train_split: Dataset | None, test_split: Dataset | None
) -> tuple[DataLoader, DataLoader] | None:
    """The kNN monitor's (bank, queries) loaders, or None when it is off or there is no test split."""
    if not cfg.knn.enabled or train_split is None or test_split is None:
        return None
    tf = eval_transform(cfg.aug, channels, resize_ratio=1.0 if cfg.data.dataset != "imagefolder" else 0.875)
    bank = TransformDataset(subset(train_split, cfg.knn.max_train, cfg.train.seed), tf)
    query = TransformDataset(subset(test_split, cfg.knn.max_test, cfg.train.seed), tf)
    return tuple(
        DataLoader(
            d, batch_size=cfg.knn.batch_size, num_workers=cfg.data.num_workers, worker_init_fn=ignore_sigterm
        )
        for d in (bank, query)
    )


def create_model(cfg: Config, accelerator: Accelerator) -> torch.nn.Module:
    """The configured method, before ``prepare``: SyncBatchNorm under several processes (method.sync_bn),
    channels_last and compiled backbones as configured."""
    model = create_method_from_config(cfg)
    if accelerator.num_processes > 1 and cfg.method.sync_bn and model.uses_sync_bn:
        model = convert_sync_batchnorm(model, accelerator.device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.model.compile:
        compile_backbones(model)
    return model


def compile_backbones(model: torch.nn.Module) -> None:
    """``torch.compile`` the online and momentum backbones in place (``nn.Module.compile``: the state_dict keys,
    hence checkpoints and exports, are unchanged)."""
    model.encoder.online.backbone.compile()
    model.encoder.momentum.backbone.compile()


# ---------------------------------------------------------------- resume and start


def resume(run: Run, which: str) -> None:
    """Load a checkpoint into ``run``: ``which`` is its folder, or ``auto`` for the newest complete one.

    A mid-epoch checkpoint continues at its next batch, and only with the same processes, total batch and
    data. An end-of-epoch checkpoint written with another total batch continues the schedules from the same
    epoch. The checkpoint's results carry over until a new kNN measurement replaces them.

    Raises:
        CheckpointError: no checkpoint, another method or backbone, a pickle that is not plain data, a
            damaged file, or a mid-epoch checkpoint this run cannot continue.
    """
    accelerator, state = run.accelerator, run.state
    path = ckpt.find_checkpoint(run.checkpoints, which)
    ckpt.check_compatible(path, run.cfg)
    ckpt.verify_plain_data(path)
    accelerator.load_state(str(path))
    processes, total_batch, steps_per_epoch = accelerator.num_processes, run.total_batch, run.steps_per_epoch
    run.resumed_step = state.step  # before a change of total batch moves it
    if state.epoch_step:
        if (
            state.total_batch != total_batch
            or state.processes not in (None, processes)
            or state.epoch_step >= steps_per_epoch
        ):
            raise ckpt.CheckpointError(
                f"{path} was written mid-epoch (after batch {state.epoch_step} in epoch {state.epoch + 1}) by "
                f"{state.processes} process(es) with a total batch of {state.total_batch}; this run has "
                f"{processes} process(es), a total batch of {total_batch} and {steps_per_epoch} batches per epoch. "
                "Resume it with the same processes, batch size and data, or resume from an end-of-epoch "
                "checkpoint (--resume-from)"
            )
        # Iterating the loader draws one number from torch's RNG (the DataLoader's base seed), which an
        # uninterrupted run drew at the start of this epoch: put the checkpoint's RNG state back after it.
        run.resume_rng = torch.get_rng_state()
    elif state.total_batch is not None and state.total_batch != total_batch:
        # The schedules are functions of the global step over epochs x steps_per_epoch: with another total
        # batch the same step is another point of the run. Continue at the same epoch instead.
        accelerator.print(
            f"the checkpoint was trained with a total batch of {state.total_batch}, this run has {total_batch}: "
            f"the lr and momentum schedules continue from epoch {state.epoch} (step {state.step} -> "
            f"{state.epoch * steps_per_epoch}); the peak lr is now {run.peak_lr:.4g}"
        )
        state.step = state.epoch * steps_per_epoch
    accelerator.print(
        f"resumed from {path} (epoch {state.epoch}, step {state.step}"
        + (f", batch {state.epoch_step} of epoch {state.epoch + 1})" if state.epoch_step else ")")
    )
    run.results = read_results(path)


def start(run: Run) -> None:
    """Record this run's processes and total batch, write config.yaml, start the trackers and say what runs;
    at step 0, measure the random initialisation's kNN (knn.at_start)."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    state.total_batch, state.processes = run.total_batch, accelerator.num_processes
    if accelerator.is_main_process:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        (run.out_dir / "config.yaml").write_text(to_yaml(cfg))
        # a resumed run continues the file from its checkpoint's step; a fresh one starts its own
        done = restart_metrics(run.out_dir / "metrics.csv", run.resumed_step)
        if done:
            accelerator.print(done)
    accelerator.init_trackers("pretrain", config=flatten(to_dict(cfg)))
    accelerator.print(
        f"{cfg.method.name} on {cfg.model.backbone}: {len(run.dataset)} images, {accelerator.num_processes} process(es) x "
        f"batch {cfg.train.batch_size}, {run.steps_per_epoch} steps/epoch, peak lr {run.peak_lr:.4g}, output {run.out_dir}"
    )
    if run.knn_loaders is not None and cfg.knn.at_start and state.step == 0:
        top1 = knn_monitor(accelerator, run.method.backbone, run.knn_loaders, cfg)
        accelerator.log({"eval/knn_top1": top1}, step=0)
        accelerator.print(f"random init: kNN top-1 {top1:.2f}%")
        state.knn_init = top1
        state.knn_curve.append([0.0, top1])
    run.model.train()


# ---------------------------------------------------------------- training


def view_seed(seed: int, epoch: int, batch: int, process: int) -> int:
    """The seed of one batch's views (aug.batched): a function of where the batch is, so resume is exact."""
    return (((seed * 1_000_003 + epoch) * 1_000_033 + batch) * 1_009 + process) % (2**63 - 1)


def two_views(run: Run, images: torch.Tensor | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's two views: as the loader made them, or (aug.batched) made now from the uint8 batch."""
    if run.batch_views is None:
        x1, x2 = images
        return x1, x2
    # Seeded by where the batch is (seed, epoch, batch, process), not by a running stream: exact on resume.
    state = run.state
    seed = view_seed(run.cfg.train.seed, state.epoch, state.epoch_step, run.accelerator.process_index)
    run.view_generator.manual_seed(seed)
    return run.batch_views(images, run.view_generator)


def train_step(run: Run, images: torch.Tensor | list[torch.Tensor], labels: torch.Tensor) -> StepResult:
    """One optimizer step on one batch (the two views, or the uint8 batch with aug.batched); advances
    ``state.step`` and ``state.epoch_step``.

    Raises:
        NonFiniteLossError: a loss term's mean over processes is NaN or inf (nothing is saved).
    """
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    x1, x2 = two_views(run, images)
    lr = cosine_lr(state.step, run.total_steps, run.peak_lr, run.warmup_steps, cfg.train.min_lr_ratio)
    m = momentum_at(state.step, run.total_steps, cfg.method.momentum, cfg.method.momentum_schedule)
    set_lr(run.optimizer, lr)
    if cfg.model.channels_last:
        x1 = x1.contiguous(memory_format=torch.channels_last)
        x2 = x2.contiguous(memory_format=torch.channels_last)
    out = run.model(x1, x2, m)
    accelerator.backward(out["loss"])
    if cfg.train.grad_clip:
        accelerator.clip_grad_norm_(run.model.parameters(), cfg.train.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    for hook in run.after_step:
        hook(state.step + 1, accelerator.process_index)

    # One collective and one host sync per step: the values to log (mean over processes), the finiteness
    # check, the unreadable images and SIGTERM, so that every process stops at the same step.
    world, dev = accelerator.num_processes, out["loss"].device
    flags = [(labels < 0).sum().float().to(dev), torch.tensor(float(run.stop.requested), device=dev)]
    reduced = torch.stack([*(term.detach().float() for term in out.values()), *flags])
    if world > 1:
        reduced = accelerator.reduce(reduced, reduction="sum")
    *sums, bad_images, stop = reduced.tolist()
    values = {name: v / world for name, v in zip(out, sums)}
    for name, v in values.items():
        if not math.isfinite(v):
            raise NonFiniteLossError(
                f"step {state.step} (epoch {state.epoch + 1}): {name} = {v}. Training stopped; the last good "
                f"checkpoint in {run.checkpoints} is kept. Lower train.base_lr or set train.grad_clip."
            )
    state.step += 1
    state.epoch_step += 1
    return StepResult(values, lr, m, bad_images, stop > 0)


def train_epoch(run: Run) -> bool:
    """Epoch ``state.epoch`` (its remaining batches, resuming mid-epoch), logging every train.log_every steps.

    Returns:
        True if SIGTERM stopped it before its end (it also ends early, returning False, at train.max_steps).
    """
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    epoch = state.epoch
    window, bad_images, stopped = LogWindow(), 0.0, False
    marks = run.knn_marks
    if state.epoch_step and (epoch, state.epoch_step) in marks:
        # resumed from the checkpoint SIGTERM wrote at a mark's step, where the monitor was skipped
        mid_epoch_knn(run)
    started = time.perf_counter()
    bar = tqdm(
        epoch_batches(run),
        desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
        initial=state.epoch_step,
        total=run.steps_per_epoch,
        disable=not accelerator.is_local_main_process,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
    for images, labels in bar:
        if run.resume_rng is not None:  # after the loader's draw (see resume)
            torch.set_rng_state(run.resume_rng)
            run.resume_rng = None
        step = train_step(run, images, labels)
        window.add(step.values)
        bad_images += step.bad_images
        bar.set_postfix(loss=f"{step.values['loss']:.4f}", lr=f"{step.lr:.3g}", refresh=False)
        if state.step % cfg.train.log_every == 0 or state.step == run.total_steps:
            accelerator.log(window.logs(step, epoch, run.total_batch), step=state.step)
            window = LogWindow()
        if (epoch, state.epoch_step) in marks and not (step.stop or run.max_steps_reached):
            # the monitor's time is not training time: restart the epoch's clock (and the throughput's) after it
            paused = time.perf_counter()
            state.train_seconds += paused - started
            mid_epoch_knn(run)
            started = time.perf_counter()
            window.start += started - paused
        if run.max_steps_reached:
            break
        if step.stop:
            stopped = True
            break
    state.train_seconds += time.perf_counter() - started
    accelerator.log({"time/train_minutes": state.train_seconds / 60}, step=state.step)
    if bad_images:
        accelerator.log({"data/bad_images": bad_images}, step=state.step)
        accelerator.print(
            f"epoch {epoch + 1}: {int(bad_images)} sample(s) were unreadable images, each replaced by the next "
            "readable image of the folder (data.on_bad_image=skip); the warnings name the files"
        )
    return stopped


def epoch_batches(run: Run) -> Iterable:
    """Epoch ``state.epoch``'s batches from batch ``state.epoch_step`` on (non-zero when resuming a mid-epoch
    checkpoint): the same order and views as an uninterrupted run."""
    state, epoch = run.state, run.state.epoch
    if isinstance(run.sampler, StreamRows):  # not prepared: its skipped rows are read again but not decoded
        run.sampler.set_epoch(epoch, skip=state.epoch_step * run.cfg.train.batch_size)
        return on_device(run.loader, run.accelerator.device)
    # The prepared loader re-applies its own epoch counter at every __iter__ (it restarts at 0 in a
    # resumed process): set it, and it passes the epoch on to the sampler. The dataset's epoch seeds the views.
    run.loader.set_epoch(epoch)
    run.sampler.set_epoch(epoch)
    if isinstance(run.dataset, TwoViewDataset):  # per-image views are seeded by the epoch
        run.dataset.set_epoch(epoch)
    if not state.epoch_step:
        return run.loader
    batches = run.accelerator.skip_first_batches(run.loader, state.epoch_step)
    batches.set_epoch(epoch)
    return batches


def on_device(loader: DataLoader, device: torch.device) -> Iterator:
    """The batches of a loader Accelerate did not prepare, on the training device as a prepared one's are."""
    for batch in loader:
        yield send_to_device(batch, device, non_blocking=loader.pin_memory)


# ---------------------------------------------------------------- end of epoch, end of run


def end_of_epoch(run: Run, stopped: bool) -> None:
    """After an epoch: the kNN monitor (every knn.every epochs, at knn.epochs and at the end), then an atomic
    checkpoint.

    Stopped by SIGTERM mid-epoch, it writes a mid-epoch checkpoint instead, with no kNN.

    Raises:
        TrainingInterrupted: SIGTERM reached a process during the epoch, the kNN or the save.
    """
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    if stopped and state.epoch_step < run.steps_per_epoch and not run.max_steps_reached:
        raise interrupted(run, run.save(step=state.step))
    state.epoch += 1
    state.epoch_step = 0
    if run.knn_loaders is not None and (
        state.epoch % cfg.knn.every == 0
        or (state.epoch, 0) in run.knn_marks
        or state.epoch == run.stop_epoch
        or run.max_steps_reached
    ):
        state.knn_top1 = curve_point(run, f"epoch {state.epoch}")
        run.results = [knn_record(cfg, state.knn_top1, state.knn_init, state.epoch, run.knn_loaders)]
    path = run.save()
    if stopped or any_process(accelerator, run.stop.requested):  # SIGTERM during the kNN or the save
        raise interrupted(run, path)


def mid_epoch_knn(run: Run) -> None:
    """The kNN monitor after a fractional knn.epochs mark: a curve point (training minutes, top-1), logged.

    It leaves training as it found it: torch's RNG (iterating the monitor's loaders draws from it) is restored
    after it, so a run with mid-epoch marks trains the same steps as one without, and a resumed run the same as an
    uninterrupted one. The step's result does not replace the kNN record of the last whole epoch."""
    state, device = run.state, run.accelerator.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        curve_point(
            run, f"epoch {state.epoch + state.epoch_step / run.steps_per_epoch:.2f} (step {state.step})"
        )


def curve_point(run: Run, when: str) -> float:
    """The kNN monitor now: logged, printed, and appended to the curve at the training minutes so far."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    broadcast_norm_buffers(run.method)  # rank 0's BN statistics on every rank: one model is evaluated
    top1 = knn_monitor(accelerator, run.method.backbone, run.knn_loaders, cfg)
    accelerator.log({"eval/knn_top1": top1}, step=state.step)
    state.knn_curve.append([state.train_seconds / 60, top1])
    accelerator.print(f"{when}: kNN top-1 {top1:.2f}% (k={cfg.knn.k}, t={cfg.knn.temperature})")
    return top1


def interrupted(run: Run, path: Path) -> TrainingInterrupted:
    """Say where the run stopped and how to continue, close the trackers; the exception exits with 143."""
    run.accelerator.print(
        f"SIGTERM: stopped after step {run.state.step}; checkpoint {path}. Continue with --resume.",
        flush=True,
    )
    run.accelerator.end_training()
    return TrainingInterrupted()


def finish(run: Run) -> dict:
    """Export the online backbone (train.export) and write summary.json; returns the summary."""
    accelerator, state = run.accelerator, run.state
    summary = {
        "epochs_done": state.epoch,
        "steps": state.step,
        "knn_top1": state.knn_top1,
        "knn_init": state.knn_init,
        "train_minutes": round(state.train_seconds / 60, 2),
        "mixed_precision": accelerator.mixed_precision,
    }
    if accelerator.is_main_process:
        if run.cfg.train.export:
            export_model(
                run.method.backbone,
                run.out_dir / "backbone",
                run.cfg,
                training=run.training_facts(),
                results=run.results,
            )
            summary["export"] = str(run.out_dir / "backbone")
        (run.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


# ---------------------------------------------------------------- the kNN monitor


def knn_monitor(accelerator: Accelerator, backbone: torch.nn.Module, loaders: tuple, cfg: Config) -> float:
    """Weighted kNN top-1 (%) of ``backbone``'s features: the queries of ``loaders[1]`` against the bank of
    ``loaders[0]`` (knn.k, knn.temperature)."""
    cl = cfg.model.channels_last
    train_f, train_y = extract_features(backbone, loaders[0], accelerator, "kNN bank", channels_last=cl)
    test_f, test_y = extract_features(backbone, loaders[1], accelerator, "kNN queries", channels_last=cl)
    # Unreadable images (data.on_bad_image=skip) come back with label -1: leave them out of the bank and queries.
    train_f, train_y = train_f[train_y >= 0], train_y[train_y >= 0]
    test_f, test_y = test_f[test_y >= 0], test_y[test_y >= 0]
    return knn_accuracy(train_f, train_y, test_f, test_y, cfg.knn.k, cfg.knn.temperature)


def knn_record(cfg: Config, top1: float, init: float | None, epoch: int, loaders: tuple) -> EvalRecord:
    """The kNN monitor's result, stored with the checkpoint and the export (and shown on the model card)."""
    return EvalRecord(
        metric="top1",
        value=round(float(top1), 4),
        protocol="knn",
        protocol_args={
            "k": cfg.knn.k,
            "t": cfg.knn.temperature,
            "bank": len(loaders[0].dataset),
            "queries": len(loaders[1].dataset),
        },
        dataset=cfg.data.dataset,
        split=split_name(cfg.data),
        command=training_command(current_command()),
        baselines={"same architecture, random init (this run's initialisation)": round(init, 4)}
        if init is not None
        else {},
        notes=f"the training run's kNN monitor after epoch {epoch}",
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
