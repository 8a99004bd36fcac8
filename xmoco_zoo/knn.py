"""Weighted kNN classification on L2-normalised features (Wu et al. 2018, https://arxiv.org/abs/1805.01978).

The same protocol as MoCo's and InstDisc's monitors: the top-k cosine neighbours vote with weight
exp(sim / t); k = 200, t = 0.1 by default.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: DataLoader,
    accelerator=None,
    desc: str = "features",
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features and labels of every sample in ``loader`` (gathered over processes)."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    show = accelerator is None or accelerator.is_local_main_process
    for x, y in tqdm(
        loader, desc=desc, leave=False, disable=not show, mininterval=1.0 if sys.stderr.isatty() else 30.0
    ):
        if accelerator is None:
            x, y = x.to(next(model.parameters()).device), y
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        f = F.normalize(model(x).float(), dim=1)
        if accelerator is not None:
            f, y = accelerator.gather_for_metrics((f, y))
        feats.append(f.cpu())
        labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Predicted labels of ``test_features`` by weighted kNN over a labelled memory bank.

    Shape:
        train_features: (M, D) normalised. train_labels: (M,). test_features: (N, D) normalised.
        output: (N,) predicted labels.
    """
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, train_features.shape[0])
    preds = []
    for start in range(0, test_features.shape[0], chunk):
        sims = test_features[start : start + chunk] @ train_features.t()
        top_sims, top_idx = sims.topk(k, dim=1)
        weights = (top_sims / temperature).exp()
        votes = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy (%) of weighted kNN."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes)
    return 100.0 * (pred == test_labels).float().mean().item()
