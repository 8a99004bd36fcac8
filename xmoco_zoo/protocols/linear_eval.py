"""Linear probe of a frozen backbone: MoCo's protocol (``full``) and a cached-feature ``fast`` mode.

    accelerate launch recipes/linear_eval.py --config recipes/configs/eval/linear_fmnist.yaml model.spec=local-dir:PATH
    accelerate launch --multi_gpu --num_processes 8 recipes/linear_eval.py --config recipes/configs/eval/linear_in1k.yaml \\
        model.spec=hf-hub:ORG/NAME data.root=/data/imagenet
    xmoco-zoo eval linear --config ... key=value ...

``full`` (MoCo v1/v2's ``main_lincls.py``): the backbone stays in eval mode (BatchNorm statistics frozen, no
gradients), a linear layer (init N(0, 0.01), bias 0) on its pooled features is trained with SGD (momentum
0.9, wd 0, lr 30 x batch/256, x0.1 at epochs 60 and 80 of 100) on RandomResizedCrop + flip views; the test
images are resized to size/crop_pct (256) and centre-cropped (224).

``fast`` (the default on Fashion-MNIST and synthetic data): the pooled features of the train and test
images (no augmentation, L2-normalised, as for kNN) are extracted once, standardised with the train
features' mean and variance (a BatchNorm1d without affine, as in MAE's linear probe), and the head is
trained on them: full-batch L-BFGS on the cross-entropy (+ weight_decay/2 ||W||^2) by default, which
converges in a few hundred iterations and seconds, or MoCo's SGD schedule on mini-batches of cached features.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import TransformDataset
from ..errors import ConfigError
from ..knn import extract_features
from ..logging import flatten
from .common import (
    RawPixels,
    eval_transform,
    finish,
    input_spec,
    labelled_data,
    labelled_only,
    load_model,
    make_accelerator,
    train_transform,
)
from .config import LinearEvalConfig, eval_to_dict, eval_to_yaml, load_eval_config, resolve_linear_mode


class LinearHead(nn.Module):
    """Optional standardisation (BatchNorm1d without affine) followed by a linear layer (MoCo's init)."""

    def __init__(self, dim: int, num_classes: int, standardize: bool = False) -> None:
        super().__init__()
        self.norm: nn.Module = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if standardize else nn.Identity()
        self.fc = nn.Linear(dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


@torch.no_grad()
def head_accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, chunk: int = 8192) -> float:
    was = head.training
    head.eval()
    correct = sum(
        (head(features[i : i + chunk]).argmax(1) == labels[i : i + chunk]).sum().item()
        for i in range(0, len(features), chunk)
    )
    head.train(was)
    return 100.0 * correct / len(features)


def fit_linear_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    optimizer: str = "lbfgs",
    standardize: bool = True,
    weight_decay: float = 0.0,
    max_iter: int = 300,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 30.0,
    momentum: float = 0.9,
    milestones: tuple[int, ...] | list[int] = (60, 80),
    gamma: float = 0.1,
    seed: int = 0,
    max_steps: int | None = None,
    log=None,
) -> LinearHead:
    """Train a linear classifier on fixed features (the fast linear probe); deterministic given ``seed``.

    ``optimizer="lbfgs"``: full-batch L-BFGS (strong-Wolfe line search) for ``max_iter`` iterations, from a
    zero init (the problem is convex). ``"sgd"``: ``epochs`` of shuffled mini-batches with momentum, lr
    x ``gamma`` at each milestone epoch. ``standardize`` fixes the BatchNorm's statistics to the features'
    mean and variance. ``log(values: dict, step: int)`` receives ``train/loss`` and ``train/lr``.
    """
    features = features.float()
    labels = labels.long()
    head = LinearHead(features.shape[1], num_classes, standardize)
    if standardize:
        head.norm.running_mean.copy_(features.mean(0))
        head.norm.running_var.copy_(features.var(0, unbiased=False))
    head.eval()  # the standardisation is fixed; the linear layer has no train/eval behaviour
    params = list(head.fc.parameters())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # MoCo's init, drawn from the seeded generator: the result depends on ``seed`` only
        nn.init.normal_(head.fc.weight, std=0.01, generator=g)
    if optimizer == "lbfgs":
        nn.init.zeros_(head.fc.weight)
        iters = min(max_iter, max_steps) if max_steps else max_iter
        opt = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=iters,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
        )
        x = head.norm(features).detach()
        calls = [0]

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(head.fc(x), labels)
            total = loss + 0.5 * weight_decay * head.fc.weight.pow(2).sum()
            total.backward()
            calls[0] += 1
            if log is not None:
                log({"train/loss": loss.item(), "train/lr": 1.0}, calls[0])
            return total

        opt.step(closure)
        return head
    if optimizer != "sgd":
        raise ConfigError(f"linear.optimizer={optimizer!r}: use 'lbfgs' or 'sgd'")
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    step = 0
    for epoch in range(epochs):
        cur_lr = lr * gamma ** sum(epoch >= m for m in milestones)
        for group in opt.param_groups:
            group["lr"] = cur_lr
        perm = torch.randperm(len(features), generator=g)
        for i in range(0, len(features), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if log is not None and step % 50 == 0:
                log({"train/loss": loss.item(), "train/lr": cur_lr, "train/epoch": epoch + 1}, step)
            if max_steps and step >= max_steps:
                return head
    return head


class FrozenBackboneClassifier(nn.Module):
    """A frozen backbone that stays in eval mode (MoCo's linear protocol) under a trainable head."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone.requires_grad_(False).eval(), head

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.backbone(x)
        return self.head(f.float())


@torch.no_grad()
def loader_accuracy(
    model: nn.Module, loader, accelerator, channels_last: bool = False, desc: str = "eval"
) -> float:
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        pred = model(x).argmax(1)
        pred, y = accelerator.gather_for_metrics((pred, y))
        keep = y >= 0  # unreadable images (label -1) are not scored
        correct += (pred[keep] == y[keep]).sum().item()
        total += keep.sum().item()
    model.train(was)
    return 100.0 * correct / max(1, total)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (recipes/configs/eval/*.yaml)")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. linear.mode=full)")
    return p.parse_intermixed_args(argv)


def _fast_probe(
    cfg, accelerator, backbone, train_loader, test_loader, num_classes, opt_name, standardize, log_prefix=""
):
    cl = cfg.model.channels_last
    backbone = backbone.to(accelerator.device)
    tr_f, tr_y = labelled_only(
        *extract_features(backbone, train_loader, accelerator, "train features", channels_last=cl)
    )
    te_f, te_y = labelled_only(
        *extract_features(backbone, test_loader, accelerator, "test features", channels_last=cl)
    )
    li = cfg.linear
    total_batch = li.batch_size  # mini-batches of cached features: one process's view of all features

    def log(values, step):
        accelerator.log({f"{log_prefix}{k}": v for k, v in values.items()}, step=step)

    head = fit_linear_head(
        tr_f,
        tr_y,
        num_classes,
        optimizer=opt_name,
        standardize=standardize,
        weight_decay=li.weight_decay,
        max_iter=li.lbfgs_max_iter,
        epochs=li.epochs,
        batch_size=total_batch,
        lr=li.base_lr * total_batch / 256,
        momentum=li.momentum,
        milestones=li.milestones,
        gamma=li.gamma,
        seed=cfg.run.seed,
        max_steps=cfg.run.max_steps,
        log=log,
    )
    return head_accuracy(head, te_f, te_y), head_accuracy(head, tr_f, tr_y), head


def _full_probe(cfg, accelerator, backbone, train_ds, test_loader, num_classes, standardize, spec):
    li, run_cfg = cfg.linear, cfg.run
    cl = cfg.model.channels_last
    if cl:
        backbone = backbone.to(memory_format=torch.channels_last)
    head = LinearHead(backbone.num_features, num_classes, standardize)
    model = FrozenBackboneClassifier(backbone, head)
    total_batch = li.batch_size * accelerator.num_processes
    lr = li.base_lr * total_batch / 256
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=li.momentum, weight_decay=li.weight_decay)
    loader = DataLoader(
        TransformDataset(train_ds, train_transform(spec, cfg.aug)),
        batch_size=li.batch_size,
        shuffle=True,
        num_workers=cfg.data.num_workers,
        drop_last=False,
        pin_memory=torch.cuda.is_available(),
    )
    model, opt, loader = accelerator.prepare(model, opt, loader)
    step, top1, history = 0, float("nan"), []
    done = False
    for epoch in range(li.epochs):
        cur_lr = lr * li.gamma ** sum(epoch >= m for m in li.milestones)
        for group in opt.param_groups:
            group["lr"] = cur_lr
        model.train()
        bar = tqdm(
            loader,
            desc=f"linear {epoch + 1}/{li.epochs}",
            disable=not accelerator.is_local_main_process,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
        for x, y in bar:
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), y, ignore_index=-1)  # -1: an unreadable image
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            step += 1
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"linear probe: loss {loss.item()} at step {step}; lower linear.base_lr"
                )
            if step % run_cfg.log_every == 0:
                accelerator.log(
                    {"train/loss": loss.item(), "train/lr": cur_lr, "train/epoch": epoch + 1}, step=step
                )
            if run_cfg.max_steps and step >= run_cfg.max_steps:
                done = True
                break
        last = epoch + 1 == li.epochs or done
        if (epoch + 1) % li.eval_every == 0 or last:
            top1 = loader_accuracy(model, test_loader, accelerator, cl)
            history.append((epoch + 1, top1))
            accelerator.log({"eval/top1": top1}, step=step)
            accelerator.print(f"epoch {epoch + 1}: linear top-1 {top1:.2f}%")
        if done:
            break
    return top1, {"steps": step, "epochs_done": epoch + 1, "lr": lr, "total_batch": total_batch}


def run(cfg: LinearEvalConfig) -> dict:
    mode, opt_name, standardize = resolve_linear_mode(cfg)
    accelerator = make_accelerator(cfg.run, "linear_eval")
    set_seed(cfg.run.seed)
    loaded = load_model(cfg.model.spec, pretrained=cfg.model.pretrained, **cfg.model.kwargs)
    spec = input_spec(loaded.model, cfg.aug)
    train, test, num_classes = labelled_data(cfg.data, spec.channels, cfg.run.seed)
    tf = eval_transform(spec)
    li = cfg.linear
    out_dir = Path(cfg.run.output_dir)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(eval_to_yaml(cfg))
    accelerator.init_trackers("linear_eval", config=flatten(eval_to_dict(cfg)))
    test_loader = accelerator.prepare(
        DataLoader(
            TransformDataset(test, tf), batch_size=li.eval_batch_size, num_workers=cfg.data.num_workers
        )
    )
    accelerator.print(
        f"linear probe ({mode}, {opt_name}, standardize={standardize}) of {loaded.description}: "
        f"{len(train)} train / {len(test)} test images, {num_classes} classes"
    )
    args: dict = {
        "mode": mode,
        "optimizer": opt_name,
        "standardize": standardize,
        "weight_decay": li.weight_decay,
    }
    baselines: dict[str, float] = {}
    if mode == "fast":
        train_loader = accelerator.prepare(
            DataLoader(
                TransformDataset(train, tf), batch_size=li.eval_batch_size, num_workers=cfg.data.num_workers
            )
        )
        top1, train_top1, head = _fast_probe(
            cfg, accelerator, loaded.model, train_loader, test_loader, num_classes, opt_name, standardize
        )
        args.update(features="pooled, L2-normalised, extracted once without augmentation")
        if opt_name == "lbfgs":
            args["max_iter"] = min(li.lbfgs_max_iter, cfg.run.max_steps or li.lbfgs_max_iter)
        else:
            args.update(
                epochs=li.epochs,
                batch_size=li.batch_size,
                lr=li.base_lr * li.batch_size / 256,
                momentum=li.momentum,
                milestones=list(li.milestones),
                gamma=li.gamma,
            )
        accelerator.log({"eval/top1": top1, "eval/train_top1": train_top1}, step=0)
        if li.baselines:
            torch.manual_seed(cfg.run.seed)
            rand = load_model(cfg.model.spec, pretrained=False, **cfg.model.kwargs).model
            arch = loaded.model.pretrained_cfg.get("architecture", type(loaded.model).__name__)
            baselines[f"same architecture ({arch}), random init (seed {cfg.run.seed})"] = _fast_probe(
                cfg,
                accelerator,
                rand,
                train_loader,
                test_loader,
                num_classes,
                opt_name,
                standardize,
                "baseline_random/",
            )[0]
            baselines["raw pixels"] = _fast_probe(
                cfg,
                accelerator,
                RawPixels(spec.mean, spec.std),
                train_loader,
                test_loader,
                num_classes,
                opt_name,
                standardize,
                "baseline_pixels/",
            )[0]
        extra = {"train_top1": train_top1}
    else:
        top1, extra = _full_probe(
            cfg, accelerator, loaded.model, train, test_loader, num_classes, standardize, spec
        )
        args.update(
            epochs=li.epochs,
            batch_size=extra["total_batch"],
            lr=extra["lr"],
            momentum=li.momentum,
            milestones=list(li.milestones),
            gamma=li.gamma,
            train_aug=f"RandomResizedCrop({spec.size}, scale={tuple(cfg.aug.train_crop_scale)}) + flip",
        )
        if li.baselines:
            torch.manual_seed(cfg.run.seed)
            rand = load_model(cfg.model.spec, pretrained=False, **cfg.model.kwargs).model
            baselines["same architecture, random init"] = _full_probe(
                cfg, accelerator, rand, train, test_loader, num_classes, standardize, spec
            )[0]
    args.update(
        eval=f"resize {int(round(spec.size / spec.crop_pct))}, centre crop {spec.size}",
        train_images=len(train),
        test_images=len(test),
    )
    notes = None
    if cfg.run.max_steps:
        args["max_steps"] = cfg.run.max_steps
        notes = f"stopped after at most {cfg.run.max_steps} optimizer steps (run.max_steps): a smoke test, not the protocol"
    accelerator.print(f"{loaded.description}: linear probe top-1 {top1:.2f}% ({mode}, {opt_name})")
    for name, v in baselines.items():
        accelerator.print(f"  baseline {name}: {v:.2f}%")
    summary = {
        "protocol": "linear",
        "top1": top1,
        "baselines": baselines,
        "model": loaded.description,
        **extra,
    }
    return finish(
        accelerator,
        cfg,
        loaded,
        summary,
        value=top1,
        protocol="linear",
        protocol_args=args,
        baselines=baselines,
        notes=notes,
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run(load_eval_config("linear", args.config, args.overrides))
