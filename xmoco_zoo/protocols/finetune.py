"""Fine-tuning (full, or semi-supervised on 1 % / 10 % of the labels) of a published or trained backbone.

    accelerate launch recipes/finetune.py --config recipes/configs/eval/finetune_fmnist.yaml model.spec=local-dir:PATH
    xmoco-zoo eval finetune --config recipes/configs/eval/finetune_fmnist.yaml --compare-scratch
    xmoco-zoo eval finetune --config recipes/configs/eval/finetune_fmnist.yaml finetune.label_percent=1   # semisup_1pct

Every layer is trained, with a classifier of ``num_classes`` outputs put on the loaded model
(``reset_classifier``). Schedule: linear warmup, then cosine (per step); optimizer from timm's
``create_optimizer_v2`` (no weight decay on biases and norm weights; layer-wise lr decay with
``finetune.layer_decay``, timm's ``param_groups_layer_decay``); mixup/cutmix with ``timm.data.Mixup`` and
``SoftTargetCrossEntropy`` when configured.

``model.pretrained=false`` trains the same architecture (same constructor args) from a random init with
everything else the same: the baseline a pretrained backbone has to beat. ``--compare-scratch`` runs that
first (into ``<output_dir>/scratch``) and stores its number as the pretrained result's baseline;
``finetune.scratch_result=PATH`` takes it from an earlier scratch run's results JSON (checked to be the same
protocol with the same arguments).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import PartialState
from accelerate.utils import set_seed
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..data import TransformDataset, split_name
from ..logging import flatten
from ..optim import set_lr
from ..results import RESULTS_DIR, EvalRecord, validate_record
from ..schedules import cosine_lr
from .common import (
    EvalError,
    architecture_id,
    dataset_labels,
    eval_transform,
    finish,
    input_spec,
    labelled_data,
    load_model,
    make_accelerator,
    train_transform,
)
from .config import FinetuneEvalConfig, eval_to_dict, eval_to_yaml, load_eval_config
from .linear_eval import loader_accuracy
from .splits import load_or_create_split

SCRATCH_BASELINE = "same architecture from scratch, same schedule"
_OPT = {"adamw": "adamw", "sgd": "momentum", "nesterov": "nesterov"}  # timm's names ("sgd" is Nesterov there)


def protocol_name(cfg: FinetuneEvalConfig) -> str:
    p = cfg.finetune.label_percent
    return "finetune" if p is None else f"semisup_{p:g}pct"


def read_scratch_result(path: str | Path, protocol: str, dataset: str, split: str, args: dict) -> float:
    """The value of a from-scratch results JSON, after checking it is this protocol with the same arguments."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(
            f"finetune.scratch_result={path}: no such file (a results/*.json of a model.pretrained=false run)"
        )
    d = json.loads(path.read_text())
    validate_record(d, str(path))
    r = EvalRecord(**d)
    if (r.protocol, r.dataset, r.split) != (protocol, dataset, split):
        raise EvalError(
            f"{path} is {r.protocol} on {r.dataset} {r.split}, this run is {protocol} on {dataset} {split}"
        )
    if r.protocol_args.get("init") != "scratch":
        raise EvalError(
            f"{path} is not a from-scratch result (protocol_args.init={r.protocol_args.get('init')!r})"
        )
    skip = {"init"}
    diff = {
        k: (r.protocol_args.get(k), args.get(k))
        for k in set(r.protocol_args) | set(args)
        if k not in skip and r.protocol_args.get(k) != args.get(k)
    }
    if diff:
        lines = ", ".join(f"{k}: scratch {a!r} vs this run {b!r}" for k, (a, b) in sorted(diff.items()))
        raise EvalError(
            f"{path} was not run with the same architecture and schedule ({lines}): point "
            "finetune.scratch_result (or --scratch-dir) at a scratch run of this architecture and schedule, or delete it"
        )
    return float(r.value)


def run(cfg: FinetuneEvalConfig, scratch_baseline: float | None = None) -> dict:
    ft, run_cfg = cfg.finetune, cfg.run
    accelerator = make_accelerator(run_cfg, "finetune")
    set_seed(run_cfg.seed)
    loaded = load_model(cfg.model.spec, pretrained=cfg.model.pretrained, **cfg.model.kwargs)
    model = loaded.model
    spec = input_spec(model, cfg.aug)
    train, test, num_classes = labelled_data(cfg.data, spec.channels, run_cfg.seed)
    protocol = protocol_name(cfg)
    split_file = None
    if ft.label_percent is not None:
        idx, split_file = load_or_create_split(
            cfg.data.splits_dir,
            cfg.data.dataset,
            dataset_labels(train),
            ft.label_percent,
            ft.split_seed,
            write=accelerator.is_main_process,
        )
        accelerator.wait_for_everyone()
        train = Subset(train, idx)
    model.reset_classifier(num_classes)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)

    mixup = None
    if ft.mixup > 0 or ft.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=ft.mixup,
            cutmix_alpha=ft.cutmix,
            prob=ft.mixup_prob,
            switch_prob=ft.mixup_switch_prob,
            label_smoothing=ft.label_smoothing,
            num_classes=num_classes,
        )
    loader = DataLoader(
        TransformDataset(train, train_transform(spec, cfg.aug)),
        batch_size=ft.batch_size,
        shuffle=True,
        num_workers=cfg.data.num_workers,
        drop_last=mixup is not None,  # timm's Mixup needs even batches
        pin_memory=torch.cuda.is_available(),
    )
    test_loader = DataLoader(
        TransformDataset(test, eval_transform(spec)),
        batch_size=ft.eval_batch_size,
        num_workers=cfg.data.num_workers,
    )
    total_batch = ft.batch_size * accelerator.num_processes
    peak_lr = ft.base_lr * total_batch / 256
    kw = {"betas": tuple(ft.betas)} if ft.optimizer == "adamw" else {"momentum": ft.momentum}
    optimizer = create_optimizer_v2(
        model,
        opt=_OPT[ft.optimizer],
        lr=peak_lr,
        weight_decay=ft.weight_decay,
        layer_decay=ft.layer_decay,
        **kw,
    )
    model, optimizer, loader, test_loader = accelerator.prepare(model, optimizer, loader, test_loader)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise EvalError(
            f"{len(train)} labelled images: fewer than one batch of {ft.batch_size}; lower finetune.batch_size"
        )
    total_steps = ft.epochs * steps_per_epoch
    warmup_steps = int(round(ft.warmup_epochs * steps_per_epoch))
    out_dir = Path(run_cfg.output_dir)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(eval_to_yaml(cfg))
    accelerator.init_trackers("finetune", config=flatten(eval_to_dict(cfg)))
    init = "pretrained" if cfg.model.pretrained else "scratch"
    accelerator.print(
        f"{protocol} of {loaded.description}: {len(train)} labelled / {len(test)} test images, {num_classes} classes, "
        f"{accelerator.num_processes} process(es) x batch {ft.batch_size}, {steps_per_epoch} steps/epoch, peak lr {peak_lr:.4g}"
    )

    soft_ce = SoftTargetCrossEntropy()
    step, top1, history, done = 0, float("nan"), [], False
    t0 = time.perf_counter()
    for epoch in range(ft.epochs):
        model.train()
        window, n_window, t_window = 0.0, 0, time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"{init} {epoch + 1}/{ft.epochs}",
            disable=not accelerator.is_local_main_process,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
        for x, y in bar:
            keep = y >= 0  # -1: an unreadable image (data.on_bad_image=skip)
            if not bool(keep.all()):
                x, y = x[keep], y[keep]
            lr = cosine_lr(step, total_steps, peak_lr, warmup_steps, ft.min_lr_ratio)
            set_lr(optimizer, lr)
            if cfg.model.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if mixup is not None and len(x) % 2 == 0 and len(x) > 0:
                x, soft = mixup(x, y)
                loss = soft_ce(model(x), soft)
            else:
                loss = F.cross_entropy(model(x), y, label_smoothing=ft.label_smoothing)
            accelerator.backward(loss)
            if ft.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), ft.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"fine-tuning: loss {value} at step {step} (epoch {epoch + 1}); lower finetune.base_lr or set finetune.grad_clip"
                )
            step += 1
            window += value
            n_window += 1
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.3g}", refresh=False)
            if step % run_cfg.log_every == 0 or step == total_steps:
                dt = time.perf_counter() - t_window
                accelerator.log(
                    {
                        "train/loss": window / n_window,
                        "train/lr": lr,
                        "train/epoch": epoch + 1,
                        "perf/images_per_s": n_window * total_batch / dt,
                    },
                    step=step,
                )
                window, n_window, t_window = 0.0, 0, time.perf_counter()
            if run_cfg.max_steps and step >= run_cfg.max_steps:
                done = True
                break
        if (epoch + 1) % ft.eval_every == 0 or epoch + 1 == ft.epochs or done:
            top1 = loader_accuracy(model, test_loader, accelerator, cfg.model.channels_last)
            history.append([epoch + 1, round(top1, 4)])
            accelerator.log({"eval/top1": top1}, step=step)
            accelerator.print(f"epoch {epoch + 1}: {init} fine-tuning top-1 {top1:.2f}%")
        if done:
            break
    minutes = (time.perf_counter() - t0) / 60

    args = {
        "init": init,
        "architecture": architecture_id(accelerator.unwrap_model(model)),
        "epochs": ft.epochs,
        "batch_size": total_batch,
        "optimizer": ft.optimizer,
        "lr": peak_lr,
        "weight_decay": ft.weight_decay,
        "warmup_epochs": ft.warmup_epochs,
        "schedule": "cosine",
        "min_lr_ratio": ft.min_lr_ratio,
        "layer_decay": ft.layer_decay,
        "label_smoothing": ft.label_smoothing,
        "mixup": ft.mixup,
        "cutmix": ft.cutmix,
        "train_aug": f"RandomResizedCrop({spec.size}, scale={tuple(cfg.aug.train_crop_scale)}) + flip"
        + (
            f" + RandAugment({cfg.aug.randaugment_ops}, {cfg.aug.randaugment_magnitude})"
            if cfg.aug.randaugment_ops
            else ""
        )
        + (f" + RandomErasing({cfg.aug.random_erasing})" if cfg.aug.random_erasing else ""),
        "eval": f"resize {int(round(spec.size / spec.crop_pct))}, centre crop {spec.size}",
        "labelled_images": len(train),
        "test_images": len(test),
        "seed": run_cfg.seed,
    }
    if ft.label_percent is not None:
        args.update(label_percent=ft.label_percent, split=split_file.name)
    notes = None
    if run_cfg.max_steps:
        args["max_steps"] = run_cfg.max_steps
        notes = (
            f"stopped after at most {run_cfg.max_steps} steps (run.max_steps): a smoke test, not the protocol"
        )
    baselines: dict[str, float] = {}
    if cfg.model.pretrained:
        if scratch_baseline is None and ft.scratch_result:
            scratch_baseline = read_scratch_result(
                ft.scratch_result, protocol, cfg.data.dataset, split_name(cfg.data), args
            )
        if scratch_baseline is not None:
            baselines[SCRATCH_BASELINE] = scratch_baseline
    accelerator.print(
        f"{loaded.description}: {protocol} top-1 {top1:.2f}% after {step} steps ({minutes:.1f} min)"
    )
    for name, v in baselines.items():
        accelerator.print(f"  baseline {name}: {v:.2f}%")
    summary = {
        "protocol": protocol,
        "init": init,
        "top1": top1,
        "history": history,
        "steps": step,
        "minutes": round(minutes, 2),
        "baselines": baselines,
        "model": loaded.description,
    }
    return finish(
        accelerator,
        cfg,
        loaded,
        summary,
        value=top1,
        protocol=protocol,
        protocol_args=args,
        baselines=baselines,
        notes=notes,
    )


def scratch_config(cfg: FinetuneEvalConfig, scratch_dir: str | None = None) -> FinetuneEvalConfig:
    """The same recipe from a random init of the same architecture, written to ``scratch_dir`` (default
    ``<output_dir>/scratch``)."""
    s = copy.deepcopy(cfg)
    s.model.pretrained = False
    s.run.output_dir = scratch_dir or str(Path(cfg.run.output_dir) / "scratch")
    s.finetune.scratch_result = None
    return s


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (recipes/configs/eval/*.yaml)")
    p.add_argument(
        "--compare-scratch",
        action="store_true",
        help="first train the same architecture from scratch with the same schedule (into OUTPUT_DIR/scratch), "
        "then fine-tune the pretrained model and record the scratch number as its baseline",
    )
    p.add_argument(
        "--scratch-dir",
        metavar="DIR",
        help="with --compare-scratch: the scratch run's folder instead of OUTPUT_DIR/scratch. When DIR already holds "
        "this protocol's scratch result, it is reused (after checking the same architecture and schedule) instead "
        "of training again: one scratch run serves every model of the same architecture",
    )
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. finetune.epochs=10)")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_eval_config("finetune", args.config, args.overrides)
    if args.scratch_dir and not args.compare_scratch:
        raise EvalError(
            "--scratch-dir is the folder of --compare-scratch's scratch run: add --compare-scratch"
        )
    if not args.compare_scratch:
        return run(cfg)
    if not cfg.model.pretrained:
        raise EvalError(
            "--compare-scratch compares a pretrained model with scratch: drop model.pretrained=false"
        )
    scratch_cfg = scratch_config(cfg, args.scratch_dir)
    if args.scratch_dir:
        done = (
            Path(args.scratch_dir)
            / RESULTS_DIR
            / f"{protocol_name(cfg)}_{cfg.data.dataset}_{split_name(cfg.data)}.json"
        )
        if done.is_file():  # run() checks it is the same architecture and schedule, and says what differs
            PartialState().print(f"from-scratch baseline: reusing {done}")
            cfg.finetune.scratch_result = str(done)
            return run(cfg)
    scratch = run(scratch_cfg)
    summary = run(cfg, scratch_baseline=scratch["top1"])
    summary["scratch"] = scratch
    if PartialState().is_main_process:  # the pretrained run's summary.json also gets the scratch run's
        (Path(cfg.run.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
