"""Fixed, seeded, class-balanced labelled subsets for semi-supervised fine-tuning (1 %, 10 % of the labels).

A split is a JSON file ``<splits_dir>/<dataset>_n<size>_<percent>pct_seed<seed>.json``::

    {"dataset": "fashion_mnist", "size": 60000, "percent": 1, "seed": 0, "num_classes": 10,
     "per_class": 60, "class_counts": [60, ...], "labels_sha256": "...", "indices": [...]}

It is created on first use and reused afterwards; a file that is present is verified against the dataset
(name, size, percent, seed, the sha256 of the dataset's labels, indices in range and the class counts they
select), so a split never silently applies to other data. Every class contributes the same number of
images, ``round(percent / 100 x size / num_classes)`` (at least 1), drawn per class with a generator seeded
by ``seed``: the result depends only on (labels, percent, seed).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import UserError


class SplitError(UserError, ValueError):
    """A split file that does not match the dataset it is applied to."""


def labels_sha256(labels: torch.Tensor) -> str:
    return hashlib.sha256(labels.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


def balanced_split(labels: torch.Tensor, percent: float, seed: int = 0) -> list[int]:
    """Sorted indices of a class-balanced ``percent`` % subset: the same count from every class."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    classes = torch.unique(labels)
    per_class = max(1, round(percent / 100 * len(labels) / len(classes)))
    g = torch.Generator().manual_seed(seed)
    chosen: list[int] = []
    for c in classes.tolist():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < per_class:
            raise SplitError(
                f"class {c} has {len(members)} images, fewer than the {per_class} a balanced {percent}% split needs"
            )
        chosen += members[torch.randperm(len(members), generator=g)[:per_class]].tolist()
    return sorted(chosen)


def split_path(splits_dir: str | Path, dataset: str, size: int, percent: float, seed: int) -> Path:
    return Path(splits_dir) / f"{dataset}_n{size}_{percent:g}pct_seed{seed}.json"


def verify_split(
    d: dict, labels: torch.Tensor, dataset: str, percent: float, seed: int, where: str
) -> list[int]:
    """The indices of split ``d`` after checking it against ``labels``; a :class:`SplitError` says what differs."""
    expect = {"dataset": dataset, "size": len(labels), "percent": percent, "seed": seed}
    for key, value in expect.items():
        if d.get(key) != value:
            raise SplitError(
                f"{where} does not match the data: {key} is {d.get(key)!r} in the file, {value!r} here. "
                "Delete the file to regenerate it, or set data.splits_dir to another folder."
            )
    if d.get("labels_sha256") != labels_sha256(labels):
        raise SplitError(
            f"{where} was made for other labels (labels_sha256 differs: another version or order of {dataset}). "
            "Delete the file to regenerate it, or set data.splits_dir to another folder."
        )
    idx = d.get("indices")
    if (
        not isinstance(idx, list)
        or not idx
        or not all(isinstance(i, int) and 0 <= i < len(labels) for i in idx)
    ):
        raise SplitError(f"{where}: 'indices' must be a non-empty list of ints in [0, {len(labels)})")
    if len(set(idx)) != len(idx):
        raise SplitError(f"{where}: 'indices' has duplicates")
    counts = torch.bincount(labels[torch.tensor(idx)], minlength=int(labels.max()) + 1).tolist()
    if counts != d.get("class_counts"):
        raise SplitError(
            f"{where}: the indices select class counts {counts}, the file records {d.get('class_counts')}"
        )
    return idx


def load_or_create_split(
    splits_dir: str | Path,
    dataset: str,
    labels: torch.Tensor,
    percent: float,
    seed: int = 0,
    write: bool = True,
) -> tuple[list[int], Path]:
    """The split's indices, read and verified if its file exists, else computed (and written when ``write``)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    path = split_path(splits_dir, dataset, len(labels), percent, seed)
    if path.is_file():
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SplitError(f"{path} is not valid JSON ({e}); delete it to regenerate") from None
        return verify_split(d, labels, dataset, percent, seed, str(path)), path
    idx = balanced_split(labels, percent, seed)
    if write:
        counts = torch.bincount(labels[torch.tensor(idx)], minlength=int(labels.max()) + 1).tolist()
        d = {
            "dataset": dataset,
            "size": len(labels),
            "percent": percent,
            "seed": seed,
            "num_classes": len(counts),
            "per_class": max(counts),
            "class_counts": counts,
            "labels_sha256": labels_sha256(labels),
            "indices": idx,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(d) + "\n")
        os.replace(tmp, path)
    return idx, path
