"""kNN evaluation of a published or trained backbone (weighted kNN, k=200, t=0.1: MoCo's monitor protocol).

    accelerate launch recipes/knn_eval.py --config recipes/configs/eval/knn_fmnist.yaml model.spec=local-dir:PATH
    xmoco-zoo eval knn --config recipes/configs/eval/knn_fmnist.yaml model.spec=hf-hub:ORG/NAME knn.baselines=true

The train split is the memory bank, the test (val) split is queried; features are the model's pooled,
L2-normalised output, extracted across processes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from ..data import TransformDataset
from ..knn import extract_features, knn_accuracy
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
)
from .config import KnnEvalConfig, eval_to_dict, eval_to_yaml, load_eval_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (recipes/configs/eval/*.yaml)")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. knn.k=20)")
    return p.parse_intermixed_args(argv)


def _features(model, loaders, accelerator, channels_last: bool):
    """Normalised features of the bank and the queries, without unreadable images (label -1)."""
    model = model.to(accelerator.device)
    return [
        labelled_only(*extract_features(model, ld, accelerator, desc, channels_last=channels_last))
        for ld, desc in zip(loaders, ("bank", "queries"))
    ]


def run(cfg: KnnEvalConfig) -> dict:
    accelerator = make_accelerator(cfg.run, "knn_eval")
    set_seed(cfg.run.seed)
    loaded = load_model(cfg.model.spec, pretrained=cfg.model.pretrained, **cfg.model.kwargs)
    spec = input_spec(loaded.model, cfg.aug)
    train, test, _ = labelled_data(cfg.data, spec.channels, cfg.run.seed)
    tf = eval_transform(spec)
    loaders = [
        DataLoader(TransformDataset(d, tf), batch_size=cfg.knn.batch_size, num_workers=cfg.data.num_workers)
        for d in (train, test)
    ]
    loaders = list(accelerator.prepare(*loaders))
    out_dir = Path(cfg.run.output_dir)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(eval_to_yaml(cfg))
    accelerator.init_trackers("knn_eval", config=flatten(eval_to_dict(cfg)))
    k, t, cl = cfg.knn.k, cfg.knn.temperature, cfg.model.channels_last

    def score(model) -> float:
        (tr_f, tr_y), (te_f, te_y) = _features(model, loaders, accelerator, cl)
        return knn_accuracy(tr_f, tr_y, te_f, te_y, k, t)

    top1 = score(loaded.model)
    baselines: dict[str, float] = {}
    if cfg.knn.baselines:
        torch.manual_seed(cfg.run.seed)
        rand = load_model(cfg.model.spec, pretrained=False, **cfg.model.kwargs).model
        arch = loaded.model.pretrained_cfg.get("architecture", type(loaded.model).__name__)
        baselines[f"same architecture ({arch}), random init (seed {cfg.run.seed})"] = score(rand)
        baselines["raw pixels, L2-normalised (the floor)"] = score(RawPixels(spec.mean, spec.std))
    accelerator.log(
        {"eval/knn_top1": top1, **{f"eval/baseline/{n}": v for n, v in baselines.items()}}, step=0
    )
    accelerator.print(
        f"{loaded.description}: weighted kNN top-1 {top1:.2f}% (k={k}, t={t}, bank {len(train)}, queries {len(test)})"
    )
    for name, v in baselines.items():
        accelerator.print(f"  baseline {name}: {v:.2f}%")
    summary = {"protocol": "knn", "top1": top1, "baselines": baselines, "model": loaded.description}
    return finish(
        accelerator,
        cfg,
        loaded,
        summary,
        value=top1,
        protocol="knn",
        protocol_args={"k": k, "t": t, "bank": len(train), "queries": len(test)},
        baselines=baselines,
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run(load_eval_config("knn", args.config, args.overrides))
