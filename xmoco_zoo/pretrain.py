"""Self-supervised pretraining with Hugging Face Accelerate.

    accelerate launch recipes/pretrain.py --config recipes/configs/mocov2_fmnist.yaml train.epochs=5
    python recipes/pretrain.py --config ... --resume            # continue from the newest checkpoint
    python recipes/pretrain.py --config ... --resume-from runs/x/checkpoints/epoch_0003

Reads top to bottom: config, accelerator, data, method, optimizer, ``prepare``, resume, loop (step:
schedules → forward → backward → log; epoch: kNN monitor → atomic checkpoint), export.

Faults: a NaN/inf loss stops the run naming the step and the term (the last checkpoint is kept); SIGTERM
finishes the current step, writes a checkpoint (mid-epoch if need be: ``--resume`` then continues from that
exact batch) and exits with status 143; after a ``kill -9``, ``--resume`` continues from the last complete
checkpoint. Test hook (tests/test_faults.py, not an option): ``XMOCO_TEST_SIGNAL_AT_STEP=N:KILL|TERM|TERMGROUP|TERMSLURM[:RANK]``
makes the process send itself that signal right after optimizer step N (on every rank, or on RANK only);
TERMSLURM signals the launcher and all its workers, as Slurm stops a job step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .augment import TwoViews, eval_transform
from .batch_augment import BatchTwoViews
from .config import Config, to_dict, to_yaml
from .experiment import load_config
from .data import EpochSampler, TransformDataset, TwoViewDataset, labelled_splits, split_name, subset
from .distributed import broadcast_norm_buffers, convert_sync_batchnorm
from .export import export_model
from .knn import extract_features, knn_accuracy
from .logging import CSVTracker, flatten
from .methods import create_method_from_config
from .optim import create_optimizer, set_lr
from .results import EvalRecord, current_command, git_commit, read_results
from .schedules import cosine_lr, momentum_at


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; training stops and the last good checkpoint is kept."""


class TrainingInterrupted(SystemExit):
    """SIGTERM: the checkpoint is written and the process exits with 128 + SIGTERM = 143."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


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

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "total_batch": self.total_batch,
            "processes": self.processes,
            "knn_top1": self.knn_top1,
            "knn_init": self.knn_init,
        }

    def load_state_dict(self, d: dict) -> None:
        self.step, self.epoch = int(d["step"]), int(d["epoch"])
        self.epoch_step, self.total_batch = int(d.get("epoch_step", 0)), d.get("total_batch")
        self.processes = d.get("processes")
        self.knn_top1, self.knn_init = d.get("knn_top1"), d.get("knn_init")


class StopOnSigterm:
    """While active, SIGTERM only sets ``requested``: the loop finishes its step, checkpoints and exits.

    Further SIGTERMs are absorbed, not taken as "exit now": under Slurm every process of the job step gets
    SIGTERM and the launcher (torch's elastic agent, behind ``accelerate launch --multi_gpu`` and torchrun)
    forwards its own copy to its workers, so each worker receives two within milliseconds. To exit at once,
    send SIGINT (Ctrl-C) or SIGKILL; the launchers and Slurm send SIGKILL after their grace period anyway.
    Outside the main thread it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._told_repeat = False
        self._previous = None

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            if not self._told_repeat:
                self._told_repeat = True
                print(
                    "SIGTERM again: already stopping after this step (Ctrl-C or kill -9 to exit at once)",
                    file=sys.stderr,
                    flush=True,
                )
            return
        self.requested = True
        print("SIGTERM: finishing this step, then writing a checkpoint", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _test_signal_hook(step: int, rank: int) -> None:
    """``XMOCO_TEST_SIGNAL_AT_STEP=N:KILL|TERM|TERMGROUP|TERMSLURM[:RANK]``: after step N, send this process
    (TERMGROUP: its whole process group, loader workers included; TERMSLURM: its launcher and every process the
    launcher started, as Slurm does) the signal. A test hook."""
    spec = os.environ.get("XMOCO_TEST_SIGNAL_AT_STEP")
    if not spec:
        return
    n, sig, *only = spec.split(":")
    if int(n) == step and (not only or int(only[0]) == rank):
        if sig == "TERMGROUP":
            os.killpg(os.getpgid(0), signal.SIGTERM)
        elif sig == "TERMSLURM":  # as Slurm stops a job step: every worker, and the launcher, which forwards
            launcher, me = os.getppid(), os.getpid()  # a second copy to each worker
            os.kill(me, signal.SIGTERM)  # handled before the next line runs: this process has its first copy
            for pid in _children(launcher):
                if pid != me:
                    os.kill(pid, signal.SIGTERM)
            time.sleep(0.2)
            os.kill(launcher, signal.SIGTERM)
        else:
            os.kill(os.getpid(), {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}[sig])


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc). For the test hook."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _worker_ignores_sigterm(worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM: sent to the whole process group (Slurm, ``kill -TERM -PGID``), it
    would kill them and the next batch would raise before the main process could write its checkpoint. They
    exit with the main process."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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


def compile_backbones(model: torch.nn.Module) -> None:
    """``torch.compile`` the online and momentum backbones in place (``nn.Module.compile``: the state_dict keys,
    hence checkpoints and exports, are unchanged)."""
    model.encoder.online.backbone.compile()
    model.encoder.momentum.backbone.compile()


def build_loaders(cfg: Config, channels: int) -> tuple[DataLoader, EpochSampler, Dataset, tuple | None]:
    train_split, test_split = labelled_splits(cfg, channels)
    pretrain_images = subset(train_split, cfg.data.subset, cfg.train.seed)
    if cfg.aug.batched:  # the loader yields the raw uint8 images; BatchTwoViews makes the views on the device
        pretrain_ds = pretrain_images
    else:
        pretrain_ds = TwoViewDataset(pretrain_images, TwoViews(cfg.aug, channels), seed=cfg.train.seed)
    sampler = EpochSampler(len(pretrain_ds), seed=cfg.train.seed)
    workers = cfg.data.num_workers
    loader = DataLoader(
        pretrain_ds,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=workers,
        # MoCo's convention; with drop_last=false a short last batch is padded by Accelerate to a full batch
        # per process under several processes, and reaches the method as is in one process.
        drop_last=cfg.train.drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        worker_init_fn=_worker_ignores_sigterm,
    )
    knn_loaders = None
    if cfg.knn.enabled and test_split is not None:
        tf = eval_transform(
            cfg.aug, channels, resize_ratio=1.0 if cfg.data.dataset != "imagefolder" else 0.875
        )
        bank = TransformDataset(subset(train_split, cfg.knn.max_train, cfg.train.seed), tf)
        query = TransformDataset(subset(test_split, cfg.knn.max_test, cfg.train.seed), tf)
        knn_loaders = tuple(
            DataLoader(
                d, batch_size=cfg.knn.batch_size, num_workers=workers, worker_init_fn=_worker_ignores_sigterm
            )
            for d in (bank, query)
        )
    return loader, sampler, pretrain_ds, knn_loaders


def knn_monitor(accelerator: Accelerator, backbone: torch.nn.Module, loaders: tuple, cfg: Config) -> float:
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
        command=current_command(),
        baselines={"same architecture, random init (this run's initialisation)": round(init, 4)}
        if init is not None
        else {},
        notes=f"the training run's kNN monitor after epoch {epoch}",
    )


def _any_process(accelerator: Accelerator, flag: bool) -> bool:
    t = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0) if accelerator.num_processes > 1 else flag


def main(argv: list[str] | None = None) -> dict:
    with StopOnSigterm() as stop:
        return _main(argv, stop)


def _main(argv: list[str] | None, stop: StopOnSigterm) -> dict:
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
    if cfg.model.compile:
        compile_backbones(model)
    total_batch = cfg.train.batch_size * accelerator.num_processes
    peak_lr = cfg.train.base_lr * total_batch / 256
    optimizer = create_optimizer(model, cfg.train, peak_lr)

    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if knn_loaders is not None:
        knn_loaders = accelerator.prepare(*knn_loaders)
    method = accelerator.unwrap_model(model)
    state = TrainState()
    accelerator.register_for_checkpointing(state)

    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the dataset has {len(pretrain_ds)} images, fewer than one batch of {cfg.train.batch_size} per process: "
            "lower train.batch_size"
        )
    ckpt_root = out_dir / "checkpoints"
    resume_rng = None
    if args.resume or args.resume_from:
        path = ckpt.find_checkpoint(ckpt_root, args.resume_from or "auto")
        ckpt.check_compatible(path, cfg)
        ckpt.verify_plain_data(path)
        accelerator.load_state(str(path))
        if state.epoch_step:
            if (
                state.total_batch != total_batch
                or state.processes not in (None, accelerator.num_processes)
                or state.epoch_step >= steps_per_epoch
            ):
                raise ckpt.CheckpointError(
                    f"{path} was written mid-epoch (after batch {state.epoch_step} in epoch {state.epoch + 1}) by "
                    f"{state.processes} process(es) with a total batch of {state.total_batch}; this run has "
                    f"{accelerator.num_processes} process(es), a total batch of {total_batch} and {steps_per_epoch} batches per epoch. "
                    "Resume it with the same processes, batch size and data, or resume from an end-of-epoch "
                    "checkpoint (--resume-from)"
                )
            # Iterating the loader draws one number from torch's RNG (the DataLoader's base seed), which an
            # uninterrupted run drew at the start of this epoch: put the checkpoint's RNG state back after it.
            resume_rng = torch.get_rng_state()
        elif state.total_batch is not None and state.total_batch != total_batch:
            # The schedules are functions of the global step over epochs x steps_per_epoch: with another total
            # batch the same step is another point of the run. Continue at the same epoch instead.
            accelerator.print(
                f"the checkpoint was trained with a total batch of {state.total_batch}, this run has {total_batch}: "
                f"the lr and momentum schedules continue from epoch {state.epoch} (step {state.step} -> "
                f"{state.epoch * steps_per_epoch}); the peak lr is now {peak_lr:.4g}"
            )
            state.step = state.epoch * steps_per_epoch
        accelerator.print(
            f"resumed from {path} (epoch {state.epoch}, step {state.step}"
            + (f", batch {state.epoch_step} of epoch {state.epoch + 1})" if state.epoch_step else ")")
        )
    state.total_batch, state.processes = total_batch, accelerator.num_processes
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

    def training_facts() -> dict:
        """What the checkpoint and the model card record about how the weights were made."""
        return {
            "epochs": state.epoch,
            "steps": state.step,
            "batch_size": total_batch,
            "processes": accelerator.num_processes,
            "command": command,
            "commit": commit,
        }

    def save(step: int | None = None) -> Path:
        broadcast_norm_buffers(method)  # every rank saves (and later resumes) rank 0's BN statistics
        return ckpt.save_checkpoint(
            accelerator,
            ckpt_root,
            state.epoch,
            cfg,
            keep=cfg.train.keep_checkpoints,
            training=training_facts(),
            results=results,
            step=step,
        )

    def interrupted(path: Path) -> TrainingInterrupted:
        accelerator.print(
            f"SIGTERM: stopped after step {state.step}; checkpoint {path}. Continue with --resume.",
            flush=True,
        )
        accelerator.end_training()
        return TrainingInterrupted()

    world = accelerator.num_processes
    batch_views, aug_gen = None, None
    if cfg.aug.batched:
        batch_views = BatchTwoViews(cfg.aug, channels).to(accelerator.device)
        aug_gen = torch.Generator(device=accelerator.device)
    model.train()
    while state.epoch < stop_epoch and not done:
        epoch = state.epoch
        # The prepared loader re-applies its own epoch counter at every __iter__ (it restarts at 0 in a
        # resumed process): set it, and it passes the epoch on to the sampler. The dataset's epoch seeds the views.
        loader.set_epoch(epoch)
        sampler.set_epoch(epoch)
        if isinstance(pretrain_ds, TwoViewDataset):  # per-image views are seeded by the epoch
            pretrain_ds.set_epoch(epoch)
        epoch_loader = loader
        if state.epoch_step:  # resuming a mid-epoch checkpoint: the same order, from the next batch
            epoch_loader = accelerator.skip_first_batches(loader, state.epoch_step)
            epoch_loader.set_epoch(epoch)
        window: dict[str, float] = {}
        n_window, t_window = 0, time.perf_counter()
        bad_images = 0.0
        stopping = False
        bar = tqdm(
            epoch_loader,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            initial=state.epoch_step,
            total=steps_per_epoch,
            disable=not accelerator.is_local_main_process,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
        for views, labels in bar:
            if resume_rng is not None:
                torch.set_rng_state(resume_rng)
                resume_rng = None
            if batch_views is not None:  # views, seeded by (seed, epoch, batch, process): exact on resume
                aug_gen.manual_seed(
                    (
                        ((cfg.train.seed * 1_000_003 + epoch) * 1_000_033 + state.epoch_step) * 1_009
                        + accelerator.process_index
                    )
                    % (2**63 - 1)
                )
                x1, x2 = batch_views(views, aug_gen)
            else:
                x1, x2 = views
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
            _test_signal_hook(state.step + 1, accelerator.process_index)

            # One collective and one host sync per step: the values to log (mean over processes), the
            # finiteness check, the unreadable images and SIGTERM, so that every process stops at the same step.
            names = list(out)
            dev = out["loss"].device
            flags = [(labels < 0).sum().float().to(dev), torch.tensor(float(stop.requested), device=dev)]
            reduced = torch.stack([*(out[n].detach().float() for n in names), *flags])
            if world > 1:
                reduced = accelerator.reduce(reduced, reduction="sum")
            *values, n_bad, n_stop = reduced.tolist()
            values = [v / world for v in values]
            for n, v in zip(names, values):
                if not math.isfinite(v):
                    raise NonFiniteLossError(
                        f"step {state.step} (epoch {epoch + 1}): {n} = {v}. Training stopped; the last good "
                        f"checkpoint in {ckpt_root} is kept. Lower train.base_lr or set train.grad_clip."
                    )
                window[n] = window.get(n, 0.0) + v
            bad_images += n_bad
            state.step += 1
            state.epoch_step += 1
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
            if n_stop > 0:
                stopping = True
                break

        if bad_images:
            accelerator.log({"data/bad_images": bad_images}, step=state.step)
            accelerator.print(
                f"epoch {epoch + 1}: {int(bad_images)} sample(s) were unreadable images, each replaced by the next "
                "readable image of the folder (data.on_bad_image=skip); the warnings name the files"
            )
        if stopping and state.epoch_step < steps_per_epoch and not done:
            raise interrupted(save(step=state.step))
        state.epoch = epoch + 1
        state.epoch_step = 0
        if knn_loaders is not None and (
            state.epoch % cfg.knn.every == 0 or state.epoch == stop_epoch or done
        ):
            broadcast_norm_buffers(method)  # rank 0's BN statistics on every rank: one model is evaluated
            state.knn_top1 = knn_monitor(accelerator, method.backbone, knn_loaders, cfg)
            accelerator.log({"eval/knn_top1": state.knn_top1}, step=state.step)
            accelerator.print(
                f"epoch {state.epoch}: kNN top-1 {state.knn_top1:.2f}% (k={cfg.knn.k}, t={cfg.knn.temperature})"
            )
            results = [knn_record(cfg, state.knn_top1, state.knn_init, state.epoch, knn_loaders)]
        path = save()
        if stopping or _any_process(accelerator, stop.requested):  # SIGTERM during the kNN or the save
            raise interrupted(path)

    summary = {
        "epochs_done": state.epoch,
        "steps": state.step,
        "knn_top1": state.knn_top1,
        "knn_init": state.knn_init,
        "mixed_precision": accelerator.mixed_precision,
    }
    if accelerator.is_main_process:
        if cfg.train.export:
            export_model(
                method.backbone, out_dir / "backbone", cfg, training=training_facts(), results=results
            )
            summary["export"] = str(out_dir / "backbone")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
