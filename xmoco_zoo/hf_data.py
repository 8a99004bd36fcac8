"""Hugging Face ``datasets`` as a data source: ``data.dataset=hf`` (docs/data.md).

``data.hf_path`` names the dataset the way ``datasets`` does:

- a Hub id (``ORG/NAME``, with ``data.hf_name`` / ``data.hf_revision``): ``datasets.load_dataset`` through the
  Hugging Face cache, so ``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1``) reads the cached copy;
- a ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` folder: ``datasets.load_from_disk`` (memory-mapped);
- a folder of data files (parquet, or an image folder) that ``load_dataset(folder)`` reads, splits named by the
  files (``train-00000-of-00001.parquet``, ``data/test-*.parquet``, ``train/``...);
- a parquet file or glob (``shards/*.parquet``): one split, ``train``.

The image column (``data.hf_image_column``) may be an ``Image`` feature or an array of pixels (H, W) / (H, W, C);
the label column (``data.hf_label_column``) a ``ClassLabel``, integers or strings (mapped to sorted class ids).
Images are decoded to uint8 tensors (C, H, W) with ``channels`` channels, like every other dataset here.

Streaming (``data.hf_streaming``) reads the splits as ``datasets.IterableDataset`` streams, never downloaded:

- ``data.hf_stream_rows=N``: the first N rows of each split are kept in memory (encoded, decoded when read), drawn
  through a seeded shuffle buffer if ``data.hf_stream_shuffle_buffer`` > 0. The evaluations need this: they index
  samples.
- ``data.hf_stream_rows=null``, pretraining only: the whole train split, epoch after epoch
  (:func:`open_train_stream`). Only the image column is read, through a shuffle buffer
  (``data.hf_stream_shuffle_buffer``, 10000 unless set) seeded by ``train.seed`` and the epoch, and split across
  processes with ``datasets.distributed.split_dataset_by_node`` (whole shards per process when their number
  divides evenly, else every process reads the stream and keeps every P-th row). An epoch is
  ``data.hf_stream_epoch_rows`` rows, or the split's ``num_examples`` from the dataset's info; each process trains
  on ``rows // (processes x batch)`` full batches of its shard and starts its shard again if it runs dry, so every
  process runs the same steps. The rows are read in the training process and decoded in the loader workers
  (:class:`xmoco_zoo.data.StreamRows`); a mid-epoch resume reads the epoch's first rows again (not decoded) to
  continue exactly. The kNN monitor keeps the first ``knn.max_train`` train rows and ``knn.max_test`` test rows
  (all of them when null) in memory, as with ``hf_stream_rows``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import ConfigError, DatasetNotFoundError

__all__ = ["HFDataError", "HFImages", "TrainStream", "hf_splits", "open_splits", "open_train_stream"]

WHOLE_STREAM_SHUFFLE_BUFFER = 10_000  # data.hf_stream_shuffle_buffer's default for a whole stream


class HFDataError(ValueError):
    """A split or column the config names is not in the dataset; the one-line message lists what is there."""


def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            "data.dataset=hf needs the Hugging Face datasets package: pip install 'xmoco-zoo[hf]'"
        ) from e
    return datasets


def _is_saved_folder(p: Path) -> bool:
    """A ``save_to_disk`` folder: a DatasetDict writes dataset_dict.json, a Dataset state.json."""
    return p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file())


def _is_parquet_files(src: str) -> bool:
    return src.endswith(".parquet") and (Path(src).is_file() or any(c in src for c in "*?["))


def open_splits(d: Any) -> Mapping[str, Any]:
    """Every split of ``data.hf_path``, by name: ``datasets.Dataset`` objects, or ``IterableDataset`` objects
    when ``d.hf_streaming``. Nothing is decoded here; for a Hub id (not streamed) the data is downloaded and
    prepared into the Hugging Face cache, or read from it."""
    datasets = _datasets()
    src = d.hf_path
    if not src:
        raise DatasetNotFoundError(
            "data.dataset=hf needs data.hf_path: a Hub dataset id (ORG/NAME), a save_to_disk folder, "
            "a folder of parquet files or a parquet file"
        )
    path = Path(src).expanduser()
    try:
        if _is_saved_folder(path):
            loaded = datasets.load_from_disk(str(path))
            if d.hf_streaming:
                loaded = {k: _stream_of(v, k) for k, v in _as_dict(loaded).items()}
        elif _is_parquet_files(src):
            loaded = datasets.load_dataset("parquet", data_files={"train": src}, streaming=d.hf_streaming)
        else:
            # A local folder of data files, or a Hub id (the cache, or offline mode, is datasets' business).
            loaded = datasets.load_dataset(
                str(path) if path.is_dir() else src,
                name=d.hf_name,
                revision=d.hf_revision,
                streaming=d.hf_streaming,
            )
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetNotFoundError(
            f"data.hf_path={src!r}: not a local save_to_disk folder, data folder or parquet file, and not a Hub "
            f"dataset that could be read ({first}). Offline (HF_HUB_OFFLINE=1), a Hub dataset must be in the "
            "Hugging Face cache from an earlier online load."
        ) from e
    return _as_dict(loaded)


def _stream_of(ds: Any, split: str) -> Any:
    """A saved split as a stream that still knows its length (``to_iterable_dataset`` leaves the info's splits
    empty), as a Hub dataset's stream knows it from the card: a whole stream's epoch is that long."""
    datasets = _datasets()
    stream = ds.to_iterable_dataset()
    stream.info.splits = datasets.SplitDict()
    stream.info.splits.add(datasets.SplitInfo(name=split, num_examples=len(ds)))
    return stream


def _as_dict(loaded: Any) -> dict[str, Any]:
    if isinstance(loaded, Mapping):
        return dict(loaded)
    return {"train": loaded}  # one saved Dataset without splits


def _columns(ds: Any) -> list[str]:
    if ds.column_names is not None:
        return list(ds.column_names)
    return list(next(iter(ds)).keys())  # a stream whose features are not declared


def _check(src: str, splits: Mapping[str, Any], split: str, columns: list[tuple[str, str]], key: str) -> None:
    """A one-line :class:`HFDataError` unless ``split`` exists with every (column, config key) of ``columns``."""
    if split not in splits:
        raise HFDataError(f"{src} has no split {split!r} (data.{key}); its splits are {sorted(splits)}")
    have = _columns(splits[split])
    for column, name in columns:
        if column not in have:
            raise HFDataError(
                f"{src} split {split!r} has no column {column!r} (data.{name}); its columns are {have}"
            )


def shuffle_buffer(d: Any) -> int:
    """The shuffle buffer of ``d``'s streams: data.hf_stream_shuffle_buffer, or its default (none for the first
    rows of a split, :data:`WHOLE_STREAM_SHUFFLE_BUFFER` for a whole stream)."""
    if d.hf_stream_shuffle_buffer is not None:
        return d.hf_stream_shuffle_buffer
    return WHOLE_STREAM_SHUFFLE_BUFFER if d.hf_stream_rows is None else 0


def _encoded(stream: Any, column: str) -> Any:
    """The stream with its ``Image`` column left encoded (``{"bytes", "path"}``): decoded only when a sample is
    read, in the loader workers."""
    datasets = _datasets()
    if isinstance((stream.features or {}).get(column), datasets.Image):
        stream = stream.cast_column(column, datasets.Image(decode=False))
    return stream


def _materialize(stream: Any, d: Any, seed: int, rows: int | None) -> Any:
    """The first ``rows`` rows of a stream (all of them if None; through a seeded shuffle buffer if
    :func:`shuffle_buffer`) as an in-memory ``datasets.Dataset``: encoded images, decoded only when read."""
    datasets = _datasets()
    stream = _encoded(stream, d.hf_image_column)
    if shuffle_buffer(d) > 0:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer(d))
    kept = list(stream if rows is None else stream.take(rows))
    if not kept:
        raise HFDataError(f"{d.hf_path}: the stream is empty")
    return datasets.Dataset.from_list(kept, features=stream.features)


class TrainStream(NamedTuple):
    """This process's share of the train split, streamed whole for pretraining (:func:`open_train_stream`)."""

    rows: Any  # datasets.IterableDataset: this process's shard, encoded, its order set by set_epoch(epoch)
    epoch_rows: int  # the rows of one epoch, all processes together
    decode: Callable[[Mapping[str, Any]], torch.Tensor]  # row -> uint8 (C, H, W), in the workers: picklable
    where: str  # the split, for messages: ``ORG/NAME split 'train'``


def open_train_stream(d: Any, channels: int, seed: int, rank: int = 0, processes: int = 1) -> TrainStream:
    """The train split as process ``rank``'s shard of a seeded, shuffled stream of its image column.

    Raises:
        ConfigError: the epoch's length is unknown (no num_examples in the dataset's info) and
            data.hf_stream_epoch_rows is not set.
    """
    _datasets()  # the extra's install hint, if need be
    from datasets.distributed import split_dataset_by_node

    if channels not in (1, 3):
        raise ValueError(
            f"Hugging Face images are decoded as grayscale or RGB: in_chans 1 or 3, got {channels}"
        )
    splits = open_splits(d)
    split, column = d.hf_train_split, d.hf_image_column
    _check(d.hf_path, splits, split, [(column, "hf_image_column")], "hf_train_split")
    stream = splits[split]
    epoch_rows = d.hf_stream_epoch_rows or _num_examples(stream, split)
    if not epoch_rows:
        raise ConfigError(
            f"{d.hf_path} split {split!r} streams without a length (no num_examples in the dataset's info): "
            "set data.hf_stream_epoch_rows=N, the rows of one epoch (e.g. the split's size)"
        )
    # Pretraining reads no labels: only the image column is streamed.
    stream = _encoded(stream.select_columns([column]), column)
    if shuffle_buffer(d) > 0:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer(d))
    stream = split_dataset_by_node(stream, rank=rank, world_size=processes)
    return TrainStream(
        stream, epoch_rows, partial(decode_row, column, channels), f"{d.hf_path} split {split!r}"
    )


def _num_examples(stream: Any, split: str) -> int | None:
    """The split's length as the dataset's info gives it (a Hub dataset's card), or None."""
    splits = getattr(stream.info, "splits", None) or {}
    info = splits.get(split)
    return info.num_examples if info is not None and info.num_examples else None


def decode_row(column: str, channels: int, row: Mapping[str, Any]) -> torch.Tensor:
    """The image of a stream's row (see :func:`decode`)."""
    return decode(row[column], channels)


class RowRef(NamedTuple):
    """Where a sample is, for messages about an unreadable image: ``ORG/NAME split 'train' row 17``."""

    where: str
    index: int

    def __str__(self) -> str:
        return f"{self.where} row {self.index}"


class _RowRefs:
    """``HFImages.samples``: ``(RowRef, label)`` per row, made on access (ImageFolder keeps a list)."""

    def __init__(self, where: str, targets: torch.Tensor) -> None:
        self.where, self.targets = where, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[RowRef, int]:
        return RowRef(self.where, i), int(self.targets[i])


class HFImages(Dataset):
    """One split of a ``datasets.Dataset`` as ``(uint8 image (C, H, W), label)``.

    It is shaped like torchvision's ImageFolder (``samples``, ``loader``, ``classes``, ``targets``, ``root``) so
    that :class:`xmoco_zoo.data.ReadableImages` handles unreadable images (``data.on_bad_image``) unchanged.
    """

    def __init__(
        self,
        ds: Any,
        image_column: str,
        targets: torch.Tensor,
        classes: tuple[str, ...],
        channels: int,
        where: str,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(
                f"Hugging Face images are decoded as grayscale or RGB: in_chans 1 or 3, got {channels}"
            )
        self.ds, self.image_column, self.channels = ds, image_column, channels
        self.targets, self.classes, self.root = targets, classes, where
        self.samples = _RowRefs(where, targets)

    def __len__(self) -> int:
        return len(self.targets)

    def loader(self, ref: RowRef) -> torch.Tensor:
        return decode(self.ds[ref.index][self.image_column], self.channels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.loader(RowRef(self.root, i)), int(self.targets[i])


def decode(value: Any, channels: int) -> torch.Tensor:
    """An image cell as a uint8 tensor (C, H, W): a PIL image, an encoded image ``{"bytes", "path"}`` (decoded
    by datasets' own ``Image`` feature, with PIL, which also opens a path-only or remote image) or pixels."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    if isinstance(value, dict):
        if value.get("bytes") is None and not value.get("path"):
            raise ValueError("the image cell is empty")
        value = _datasets().Image().decode_example(value)
    if isinstance(value, Image.Image):
        return pil_to_tensor(value.convert("RGB" if channels == 3 else "L"))
    arr = np.asarray(value)  # a row comes back as nested lists: the uint8 dtype is lost, the values are not
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
            raise ValueError(f"pixel arrays must hold 8-bit values 0..255, got {arr.dtype}")
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"pixel arrays must be (H, W) or (H, W, 1|3), got shape {arr.shape}")
    img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if img.shape[0] == channels:
        return img.contiguous()
    if channels == 3:
        return img.expand(3, -1, -1).contiguous()
    from torchvision.transforms.v2.functional import rgb_to_grayscale

    return rgb_to_grayscale(img)


def _labels(
    ds: Any, column: str, where: str, classes: tuple[str, ...] | None
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """(labels, class names) of a split: ClassLabel names, ``0..max`` for integers, or sorted strings (the
    train split's ``classes`` are reused for the test split)."""
    datasets = _datasets()
    feature = ds.features[column]
    values = ds.with_format("numpy")[column]
    values = np.asarray(values)
    if isinstance(feature, datasets.ClassLabel):
        names = tuple(feature.names)
        labels = values.astype(np.int64)
    elif values.dtype.kind in "iu":
        labels = values.astype(np.int64)
        names = classes or tuple(str(i) for i in range(int(labels.max()) + 1 if labels.size else 0))
    elif values.dtype.kind in "UO" and all(isinstance(v, str) for v in values[:100]):
        names = classes or tuple(sorted(set(values.tolist())))
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted(set(values.tolist()) - set(index))
        if unknown:
            raise HFDataError(f"{where}: labels {unknown[:5]} are not in the train split's classes")
        labels = np.array([index[v] for v in values.tolist()], dtype=np.int64)
    else:
        raise HFDataError(
            f"{where}: label column {column!r} holds {feature}: use class labels, integers or strings"
        )
    if labels.size and labels.max() >= len(names):
        raise HFDataError(
            f"{where}: label {int(labels.max())} but only {len(names)} classes ({names[:5]}...)"
        )
    if (labels < 0).any():
        raise HFDataError(
            f"{where}: {int((labels < 0).sum())} of {len(labels)} rows have no label (-1): use a labelled split, "
            "or data.hf_label_column=null to pretrain without labels (no kNN monitor)"
        )
    return torch.from_numpy(labels), names


def hf_splits(
    d: Any, channels: int, seed: int = 0, rows: tuple[int | None, int | None] | None = None
) -> tuple[Dataset, Dataset | None]:
    """(train, test) of ``data.dataset=hf`` (``d`` is a :class:`xmoco_zoo.config.DataConfig`); test is None
    when ``d.hf_test_split`` is null or the data is unlabelled (``d.hf_label_column`` null).

    Streamed, each split is its first ``d.hf_stream_rows`` rows, or ``rows`` (train, test) when given (the kNN
    monitor of a whole stream: knn.max_train, knn.max_test; None keeps a split whole)."""
    splits = open_splits(d)
    label = d.hf_label_column
    wanted = [("hf_train_split", d.hf_train_split)]
    if d.hf_test_split and label:
        wanted.append(("hf_test_split", d.hf_test_split))
    columns = [(d.hf_image_column, "hf_image_column")] + ([(label, "hf_label_column")] if label else [])
    for key, split in wanted:
        _check(d.hf_path, splits, split, columns, key)
    out: list[Dataset] = []
    classes: tuple[str, ...] | None = None
    kept = rows or (d.hf_stream_rows, d.hf_stream_rows)
    for n, (_, split) in enumerate(wanted):
        ds = splits[split].select_columns([c for c, _ in columns])
        if d.hf_streaming:
            ds = _materialize(ds, d, seed, kept[n])
        where = f"{d.hf_path} split {split!r}"
        if label:
            targets, classes = _labels(ds, label, where, classes)
        else:
            targets, classes = torch.zeros(len(ds), dtype=torch.long), ("unlabelled",)
        images = HFImages(ds, d.hf_image_column, targets, classes, channels, where)
        out.append(images)  # data.labelled_splits wraps them in ReadableImages (data.on_bad_image)
    return out[0], (out[1] if len(out) > 1 else None)
