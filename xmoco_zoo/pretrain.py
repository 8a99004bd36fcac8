"""Self-supervised pretraining with Hugging Face Accelerate.

    accelerate launch recipes/pretrain.py --config recipes/configs/mocov2_fmnist.yaml train.epochs=5
    python recipes/pretrain.py --config ... --resume            # continue from the newest checkpoint
    python recipes/pretrain.py --config ... --resume-from runs/x/checkpoints/epoch_0003

Reads top to bottom: config, accelerator, data, method, optimizer, ``prepare``, resume, loop (step:
schedules → forward → backward → log; epoch: kNN monitor → atomic checkpoint), export.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .augment import TwoViews, eval_transform
from .config import Config, load_config, to_dict, to_yaml
from .data import EpochSampler, TransformDataset, TwoViewDataset, labelled_splits, subset
from .distributed import convert_sync_batchnorm
from .export import export_model
from .knn import extract_features, knn_accuracy
from .logging import CSVTracker, flatten
from .methods import create_method_from_config
from .optim import create_optimizer, set_lr
from .results import EvalRecord, current_command, git_commit, read_results
from .schedules import cosine_lr, momentum_at


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; training stops and the last good checkpoint is kept."""


class TrainState:
    """The loop counters, saved in each checkpoint (Accelerate ``register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.knn_top1: float | None = None
        self.knn_init: float | None = None  # kNN of the random initialisation (knn.at_start)

    def state_dict(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "knn_top1": self.knn_top1, "knn_init": self.knn_init}

    def load_state_dict(self, d: dict) -> None:
        self.step, self.epoch = int(d["step"]), int(d["epoch"])
        self.knn_top1, self.knn_init = d.get("knn_top1"), d.get("knn_init")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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


def build_loaders(
    cfg: Config, channels: int
) -> tuple[DataLoader, EpochSampler, TwoViewDataset, tuple | None]:
    train_split, test_split = labelled_splits(cfg, channels)
    pretrain_images = subset(train_split, cfg.data.subset, cfg.train.seed)
    pretrain_ds = TwoViewDataset(pretrain_images, TwoViews(cfg.aug, channels), seed=cfg.train.seed)
    sampler = EpochSampler(len(pretrain_ds), seed=cfg.train.seed)
    workers = cfg.data.num_workers
    loader = DataLoader(
        pretrain_ds,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    knn_loaders = None
    if cfg.knn.enabled and test_split is not None:
        tf = eval_transform(
            cfg.aug, channels, resize_ratio=1.0 if cfg.data.dataset != "imagefolder" else 0.875
        )
        bank = TransformDataset(subset(train_split, cfg.knn.max_train, cfg.train.seed), tf)
        query = TransformDataset(subset(test_split, cfg.knn.max_test, cfg.train.seed), tf)
        knn_loaders = tuple(
            DataLoader(d, batch_size=cfg.knn.batch_size, num_workers=workers) for d in (bank, query)
        )
    return loader, sampler, pretrain_ds, knn_loaders


def knn_monitor(accelerator: Accelerator, backbone: torch.nn.Module, loaders: tuple, cfg: Config) -> float:
    cl = cfg.model.channels_last
    train_f, train_y = extract_features(backbone, loaders[0], accelerator, "kNN bank", channels_last=cl)
    test_f, test_y = extract_features(backbone, loaders[1], accelerator, "kNN queries", channels_last=cl)
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
        split="val" if cfg.data.dataset == "imagefolder" else "test",
        command=current_command(),
        baselines={"same architecture, random init (this run's initialisation)": round(init, 4)}
        if init is not None
        else {},
        notes=f"the training run's kNN monitor after epoch {epoch}",
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    out_dir = Path(cfg.train.output_dir)
    # torch 2.14 deprecates DDP's broadcast_buffers in favour of forward_sync_buffers, which Accelerate's
    # DistributedDataParallelKwargs does not expose yet; broadcast_buffers=False is what we mean (see below).
    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        log_with=[t for t in cfg.train.trackers if t != "csv"] + [CSVTracker("pretrain", out_dir)],
        project_dir=str(out_dir),
        # The queue is a buffer that every rank updates identically: no need to broadcast it each step.
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    set_seed(cfg.train.seed)
    channels = int(cfg.model.kwargs.get("in_chans", 3))

    loader, sampler, pretrain_ds, knn_loaders = build_loaders(cfg, channels)
    model = create_method_from_config(cfg)
    if accelerator.num_processes > 1 and cfg.method.sync_bn and model.uses_sync_bn:
        model = convert_sync_batchnorm(model, accelerator.device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    total_batch = cfg.train.batch_size * accelerator.num_processes
    peak_lr = cfg.train.base_lr * total_batch / 256
    optimizer = create_optimizer(model, cfg.train, peak_lr)

    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if knn_loaders is not None:
        knn_loaders = accelerator.prepare(*knn_loaders)
    method = accelerator.unwrap_model(model)
    state = TrainState()
    accelerator.register_for_checkpointing(state)

    ckpt_root = out_dir / "checkpoints"
    if args.resume or args.resume_from:
        path = ckpt.find_checkpoint(ckpt_root, args.resume_from or "auto")
        ckpt.check_compatible(path, cfg)
        accelerator.load_state(str(path))
        accelerator.print(f"resumed from {path} (epoch {state.epoch}, step {state.step})")

    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the dataset has {len(pretrain_ds)} images, fewer than one batch of {cfg.train.batch_size} per process: "
            "lower train.batch_size"
        )
    total_steps = cfg.train.epochs * steps_per_epoch
    warmup_steps = int(round(cfg.train.warmup_epochs * steps_per_epoch))
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(to_yaml(cfg))
    accelerator.init_trackers("pretrain", config=flatten(to_dict(cfg)))
    accelerator.print(
        f"{cfg.method.name} on {cfg.model.backbone}: {len(pretrain_ds)} images, {accelerator.num_processes} process(es) x "
        f"batch {cfg.train.batch_size}, {steps_per_epoch} steps/epoch, peak lr {peak_lr:.4g}, output {out_dir}"
    )

    if knn_loaders is not None and cfg.knn.at_start and state.step == 0:
        top1 = knn_monitor(accelerator, method.backbone, knn_loaders, cfg)
        accelerator.log({"eval/knn_top1": top1}, step=0)
        accelerator.print(f"random init: kNN top-1 {top1:.2f}%")
        state.knn_init = top1

    stop_epoch = min(cfg.train.epochs, cfg.train.stop_after_epoch or cfg.train.epochs)
    done = state.step >= (cfg.train.max_steps or math.inf)
    commit = git_commit()
    command = current_command()
    # The results of the checkpoint resumed from carry over until a new kNN measurement replaces them.
    results: list[EvalRecord] = read_results(path) if (args.resume or args.resume_from) else []
    training = {
        "epochs": state.epoch,
        "steps": state.step,
        "batch_size": total_batch,
        "processes": accelerator.num_processes,
        "command": command,
        "commit": commit,
    }
    model.train()
    while state.epoch < stop_epoch and not done:
        epoch = state.epoch
        # The prepared loader re-applies its own epoch counter at every __iter__ (it restarts at 0 in a
        # resumed process): set it, and it passes the epoch on to the sampler. The dataset's epoch seeds the views.
        loader.set_epoch(epoch)
        sampler.set_epoch(epoch)
        pretrain_ds.set_epoch(epoch)
        window: dict[str, float] = {}
        n_window, t_window = 0, time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            disable=not accelerator.is_local_main_process,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
        for (x1, x2), _ in bar:
            lr = cosine_lr(state.step, total_steps, peak_lr, warmup_steps, cfg.train.min_lr_ratio)
            m = momentum_at(state.step, total_steps, cfg.method.momentum, cfg.method.momentum_schedule)
            set_lr(optimizer, lr)
            if cfg.model.channels_last:
                x1 = x1.contiguous(memory_format=torch.channels_last)
                x2 = x2.contiguous(memory_format=torch.channels_last)
            out = model(x1, x2, m)
            accelerator.backward(out["loss"])
            if cfg.train.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            # One host sync per step: the values to log and the finiteness check together.
            names = list(out)
            values = torch.stack([out[n].detach().float() for n in names]).tolist()
            for n, v in zip(names, values):
                if not math.isfinite(v):
                    raise NonFiniteLossError(
                        f"step {state.step} (epoch {epoch + 1}): {n} = {v}. Training stopped; the last good "
                        f"checkpoint in {ckpt_root} is kept. Lower train.base_lr or set train.grad_clip."
                    )
                window[n] = window.get(n, 0.0) + v
            state.step += 1
            n_window += 1
            bar.set_postfix(loss=f"{values[names.index('loss')]:.4f}", lr=f"{lr:.3g}", refresh=False)
            if state.step % cfg.train.log_every == 0 or state.step == total_steps:
                dt = time.perf_counter() - t_window
                logs = {f"train/{n}": v / n_window for n, v in window.items()}
                logs.update(
                    {
                        "train/lr": lr,
                        "train/momentum": m,
                        "train/epoch": epoch + 1,
                        "perf/images_per_s": n_window * total_batch / dt,
                    }
                )
                accelerator.log(logs, step=state.step)
                window, n_window, t_window = {}, 0, time.perf_counter()
            if cfg.train.max_steps and state.step >= cfg.train.max_steps:
                done = True
                break

        state.epoch = epoch + 1
        if knn_loaders is not None and (
            state.epoch % cfg.knn.every == 0 or state.epoch == stop_epoch or done
        ):
            state.knn_top1 = knn_monitor(accelerator, method.backbone, knn_loaders, cfg)
            accelerator.log({"eval/knn_top1": state.knn_top1}, step=state.step)
            accelerator.print(
                f"epoch {state.epoch}: kNN top-1 {state.knn_top1:.2f}% (k={cfg.knn.k}, t={cfg.knn.temperature})"
            )
            results = [knn_record(cfg, state.knn_top1, state.knn_init, state.epoch, knn_loaders)]
        training = {
            "epochs": state.epoch,
            "steps": state.step,
            "batch_size": total_batch,
            "processes": accelerator.num_processes,
            "command": command,
            "commit": commit,
        }
        ckpt.save_checkpoint(
            accelerator,
            ckpt_root,
            state.epoch,
            cfg,
            keep=cfg.train.keep_checkpoints,
            training=training,
            results=results,
        )

    summary = {
        "epochs_done": state.epoch,
        "steps": state.step,
        "knn_top1": state.knn_top1,
        "knn_init": state.knn_init,
    }
    if accelerator.is_main_process:
        if cfg.train.export:
            export_model(method.backbone, out_dir / "backbone", cfg, training=training, results=results)
            summary["export"] = str(out_dir / "backbone")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
