"""Evaluate a backbone as users load it: ``timm.create_model('local-dir:...' | 'hf-hub:...', pretrained=True)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from .data import TransformDataset, fashion_mnist
from .knn import extract_features, knn_accuracy


def model_transform(model: torch.nn.Module) -> v2.Compose:
    """The evaluation transform a model's pretrained_cfg asks for (input size, mean, std)."""
    pc = model.pretrained_cfg
    _, h, w = pc["input_size"]
    return v2.Compose(
        [
            v2.Resize((h, w), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(pc["mean"]), list(pc["std"])),
        ]
    )


def knn_fashion_mnist(
    model: torch.nn.Module,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 512,
    num_workers: int = 2,
    root: str | None = None,
) -> float:
    """kNN top-1 (%) of ``model``'s pooled features on Fashion-MNIST: train split as the bank, test split queried."""
    chans = model.pretrained_cfg["input_size"][0]
    tf = model_transform(model)
    feats = []
    for split in ("train", "test"):
        ds = TransformDataset(fashion_mnist(split, root, channels=chans), tf)
        feats.append(
            extract_features(
                model, DataLoader(ds, batch_size=batch_size, num_workers=num_workers), desc=split
            )
        )
    (tr_f, tr_y), (te_f, te_y) = feats
    return knn_accuracy(tr_f, tr_y, te_f, te_y, k, temperature)


def knn_raw_pixels_fashion_mnist(k: int = 200, temperature: float = 0.1, root: str | None = None) -> float:
    """The floor: kNN on L2-normalised raw pixels (78.9% at k=200, t=0.1)."""
    tr, te = fashion_mnist("train", root), fashion_mnist("test", root)
    f = lambda d: F.normalize(d.images.flatten(1).float(), dim=1)  # noqa: E731
    return knn_accuracy(f(tr), tr.labels, f(te), te.labels, k, temperature)
