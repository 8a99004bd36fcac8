"""Datasets: Fashion-MNIST from its IDX files, ImageFolder (ImageNet layout) and a synthetic set for tests.

Every dataset yields ``(uint8 image tensor (C, H, W), label)``. :class:`TwoViewDataset` wraps one for
pretraining and seeds each sample's augmentation from (seed, epoch, index), so the views do not depend
on the number of loader workers or processes and a resumed run sees the same views as an uninterrupted one.
A stream (a Hugging Face split read whole, xmoco_zoo.hf_data) is pretrained on through :class:`StreamRows`, a
sampler that reads it, and :class:`StreamImages`, which decodes its rows in the loader workers, seeded alike.
"""

from __future__ import annotations

import gzip
import itertools
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .errors import ConfigError, DatasetNotFoundError, UserError

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetError(UserError, ValueError):
    """A data file that cannot be read as what it should be (a truncated or foreign IDX file)."""


class BadImageError(UserError, RuntimeError):
    """An image file that cannot be decoded (``data.on_bad_image=error``), or a folder with no readable image."""


class BadImageWarning(UserWarning):
    """An unreadable image was skipped (``data.on_bad_image=skip``)."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(
            f"{path} is not an IDX file (bad magic number); replace it with the original download"
        )
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise DatasetError(
            f"{path}: IDX type 0x{dtype_code:02x} is not unsigned byte; replace it with the original download"
        )
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DatasetError(
            f"{path} is truncated: expected {int(np.prod(shape))} values, found {arr.size}; download it again"
        )
    return arr.reshape(shape)


def _fmnist_candidates(root: str | None) -> list[Path]:
    c: list[Path] = []
    if root:
        c += [Path(root), Path(root) / "fashion-mnist", Path(root) / "FashionMNIST" / "raw"]
    if os.environ.get("XMOCO_DATA"):
        d = Path(os.environ["XMOCO_DATA"])
        c += [d, d / "fashion-mnist", d / "FashionMNIST" / "raw"]
    c += [Path(DEBIAN_FASHION_MNIST), _download_dir() / "FashionMNIST" / "raw"]
    return c


def _download_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xmoco_zoo"


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(root: str | None = None, download: bool = False) -> Path:
    """The folder holding Fashion-MNIST's four IDX files."""
    looked = _fmnist_candidates(root)
    stems = [s for pair in _FMNIST_FILES.values() for s in pair]
    for folder in looked:
        if all(_find_file(folder, s) for s in stems):
            return folder
    if download:
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(_download_dir()), train=train, download=True)
        return _download_dir() / "FashionMNIST" / "raw"
    raise DatasetNotFoundError(
        "Fashion-MNIST not found (its four IDX files, train-images-idx3-ubyte(.gz) and the others) in "
        + ", ".join(str(p) for p in dict.fromkeys(looked))
        + " — install it (`sudo apt-get install dataset-fashion-mnist` on Debian/Ubuntu), set data.download=true "
        "(torchvision, needs internet), or point data.root or XMOCO_DATA at a folder with the four files"
    )


class TensorImageDataset(Dataset):
    """Images held in memory as a uint8 tensor (N, C, H, W), with integer labels."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...] | None = None
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images, labels.long()
        self.classes = classes or tuple(str(i) for i in range(int(labels.max()) + 1))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def fashion_mnist(
    split: str = "train", root: str | None = None, download: bool = False, channels: int = 1
) -> TensorImageDataset:
    """Fashion-MNIST (60k train / 10k test, 28×28 grayscale). ``channels=3`` replicates the channel."""
    if split not in _FMNIST_FILES:
        raise ValueError(f"Fashion-MNIST split {split!r}: use 'train' or 'test'")
    folder = find_fashion_mnist(root, download)
    img_stem, lbl_stem = _FMNIST_FILES[split]
    images = torch.from_numpy(read_idx(_find_file(folder, img_stem)).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(_find_file(folder, lbl_stem)).astype(np.int64))
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels in {folder}; "
            "download the four files again"
        )
    if channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    elif channels != 1:
        raise ConfigError(f"Fashion-MNIST is grayscale: set model.kwargs.in_chans to 1 or 3, not {channels}")
    return TensorImageDataset(images, labels, FASHION_MNIST_CLASSES)


def synthetic(
    split: str = "train",
    size: int = 512,
    num_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
    seed: int = 0,
) -> TensorImageDataset:
    """Class-structured random images for tests: each class has its own smooth pattern plus noise.

    The train and test splits draw different samples of the same class patterns.
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, channels, 4, 4, generator=g)
    protos = torch.nn.functional.interpolate(
        protos, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    g_split = torch.Generator().manual_seed(seed * 2 + (1 if split == "test" else 0) + 1000)
    labels = torch.arange(size) % num_classes
    labels = labels[torch.randperm(size, generator=g_split)]
    noise = torch.rand(size, channels, image_size, image_size, generator=g_split)
    images = (0.7 * protos[labels] + 0.3 * noise).mul(255).round().clamp(0, 255).to(torch.uint8)
    return TensorImageDataset(images, labels)


def decode_rgb(path: str) -> torch.Tensor:
    """An image file as a uint8 RGB tensor (C, H, W)."""
    from torchvision.io import ImageReadMode, decode_image

    return decode_image(path, mode=ImageReadMode.RGB)


class ReadableImages(Dataset):
    """An ImageFolder whose unreadable files (corrupt, truncated, not an image) do not stop an epoch.

    ``on_bad="skip"``: sample ``i`` that cannot be decoded is replaced by the next readable one (``i+1``, ...,
    deterministic, so a resumed run sees the same data) with label ``-1``, which marks it for the training
    loop to count and for the kNN monitor to leave out; a :class:`BadImageWarning` names the file.
    ``on_bad="error"``: a :class:`BadImageError` naming the file.
    """

    def __init__(self, folder: Dataset, on_bad: str = "skip") -> None:
        if on_bad not in ("skip", "error"):
            raise ConfigError(f"on_bad_image={on_bad!r}: use 'skip' or 'error'")
        self.folder, self.on_bad = folder, on_bad
        self.classes = folder.classes

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self.folder)
        for attempt in range(n):
            path, target = self.folder.samples[(i + attempt) % n]
            try:
                image = self.folder.loader(path)
            except (RuntimeError, OSError, ValueError) as e:
                bad_image(path, e, self.on_bad)
                continue
            return image, (target if attempt == 0 else -1)
        raise BadImageError(f"no readable image in {self.folder.root}; check data.root")


def bad_image(where: object, e: Exception, on_bad: str) -> None:
    """An image at ``where`` could not be decoded: a :class:`BadImageWarning` (``on_bad="skip"``, the caller
    replaces it) or a :class:`BadImageError` naming it."""
    # torchvision's messages start with the C++ function and source line: keep the reason only.
    reason = re.sub(r"^\w+, \S+:\d+, ", "", str(e).strip().splitlines()[0] if str(e).strip() else "")
    if on_bad == "error":
        raise BadImageError(
            f"{where}: cannot be decoded ({reason or type(e).__name__}); remove or replace the file, "
            "or set data.on_bad_image=skip to skip such files with a warning"
        ) from e
    warnings.warn(
        f"unreadable image skipped: {where} ({reason or type(e).__name__})", BadImageWarning, stacklevel=3
    )


def image_folder(root: str | Path, on_bad_image: str = "skip") -> ReadableImages:
    """An ImageNet-layout folder (``root/<class>/<image>``), decoded to uint8 RGB tensors.

    Unreadable files are skipped (label -1, a warning) or an error, see :class:`ReadableImages`.
    """
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"image folder {root} does not exist: point data.root at a folder with train/ (and val/) in "
            "ImageNet layout: <split>/<class>/<image>.jpg"
        )
    return ReadableImages(ImageFolder(str(root), loader=decode_rgb), on_bad_image)


class TwoViewDataset(Dataset):
    """Pretraining view of a labelled dataset: ``((view1, view2), label)`` with per-sample seeded augmentation."""

    def __init__(
        self, base: Dataset, views: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], seed: int = 0
    ) -> None:
        self.base, self.views, self.seed, self.epoch = base, views, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        img, label = self.base[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, i))
            return self.views(img), label


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's views: a function of where the sample is (not of a running RNG), so any number
    of loader workers, and a resumed run, draw the same views."""
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


class TransformDataset(Dataset):
    """Apply a deterministic transform to a labelled dataset (evaluation)."""

    def __init__(self, base: Dataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.base[i]
        return self.transform(img), label


class EpochSampler(Sampler[int]):
    """A shuffled order that depends only on (seed, epoch): resuming at an epoch boundary replays it exactly."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class StreamRow(NamedTuple):
    """One row of a stream, as :class:`StreamRows` hands it to a loader worker."""

    epoch: int
    index: int  # unique among the epoch's rows of every process: position in this process's share x P + rank
    row: Any  # what the stream yields (for a Hugging Face stream, a dict with the encoded image)


class StreamRows(Sampler[StreamRow]):
    """A stream's rows as a DataLoader's sampler: ``rows`` rows per epoch of this process's shard.

    A DataLoader hands whatever its sampler yields to the workers, so the stream is read once per process, here,
    and only the decoding and the views (the costly part) run in the workers: the batches do not depend on the
    number of workers. ``stream`` is re-iterable, with ``set_epoch(epoch)`` choosing the epoch's order (a
    ``datasets.IterableDataset``). A shard that runs dry before ``rows`` starts again, so every process runs
    the same number of steps (a process that stopped early would leave the others waiting in a collective).
    """

    def __init__(self, stream: Any, rows: int, rank: int = 0, processes: int = 1) -> None:
        self.stream, self.rows, self.rank, self.processes = stream, rows, rank, processes
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Iterate epoch ``epoch`` from its row ``skip`` on (the rows a resumed mid-epoch checkpoint trained on
        are read again, in the same order, but not handed on)."""
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.rows - self.skip

    def __iter__(self) -> Iterator[StreamRow]:
        epoch, skip = self.epoch, self.skip
        rows = itertools.islice(self._cycle(epoch), skip, self.rows)
        for position, row in enumerate(rows, start=skip):
            yield StreamRow(epoch, position * self.processes + self.rank, row)

    def _cycle(self, epoch: int) -> Iterator[Any]:
        """Epoch ``epoch``'s order of the shard, again and again."""
        while True:
            self.stream.set_epoch(epoch)
            empty = True
            for row in self.stream:
                empty = False
                yield row
            if empty:
                raise DatasetError(
                    f"process {self.rank} of {self.processes} got no rows: the stream is empty"
                )


class StreamImages(Dataset):
    """The images of :class:`StreamRow` batches (the loader of a stream, :class:`StreamRows`): each
    ``(uint8 image (C, H, W), 0)``, or with ``views``, ``((view1, view2), 0)`` seeded by (seed, epoch, row index)
    as :class:`TwoViewDataset` does.

    Labels are not read (pretraining uses none); an image that cannot be decoded is replaced by the next
    readable one of its batch with label -1 and a :class:`BadImageWarning` (``on_bad="skip"``; deterministic,
    so a resumed run sees the same data), or stops with a :class:`BadImageError` naming the row.
    """

    def __init__(
        self,
        decode: Callable[[Any], torch.Tensor],
        rows: int,
        where: str,
        on_bad: str = "skip",
        views: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        seed: int = 0,
    ) -> None:
        if on_bad not in ("skip", "error"):
            raise ConfigError(f"on_bad_image={on_bad!r}: use 'skip' or 'error'")
        self.decode, self.rows, self.where, self.on_bad = decode, rows, where, on_bad
        self.views, self.seed = views, seed

    def __len__(self) -> int:
        return self.rows  # one epoch, every process

    def __getitem__(self, row: StreamRow) -> tuple[Any, int]:
        return self.__getitems__([row])[0]

    def __getitems__(self, batch: list[StreamRow]) -> list[tuple[Any, int]]:
        images = [self._read(r) for r in batch]
        readable = [k for k, img in enumerate(images) if img is not None]
        if not readable:
            raise BadImageError(f"{self.where}: no readable image in a batch of {len(batch)} streamed rows")
        out = []
        for k, r in enumerate(batch):
            j = next((j for j in readable if j >= k), readable[0])  # the next readable image, wrapping around
            img = images[j]
            if self.views is not None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(sample_seed(self.seed, r.epoch, r.index))
                    img = self.views(img)
            out.append((img, 0 if j == k else -1))
        return out

    def _read(self, r: StreamRow) -> torch.Tensor | None:
        try:
            return self.decode(r.row)
        except (RuntimeError, OSError, ValueError) as e:
            bad_image(f"{self.where} (streamed) epoch {r.epoch + 1} row {r.index}", e, self.on_bad)
            return None


def labelled_splits(
    cfg, channels: int, rows: tuple[int | None, int | None] | None = None
) -> tuple[Dataset, Dataset | None]:
    """The (train, test) labelled splits of the configured dataset; test is None when there is none.

    ``cfg`` is a :class:`xmoco_zoo.config.Config`. Pretraining uses the train split's images only. With
    ``data.holdout=N`` the test split is N images held out of the train split (:func:`holdout_split`).
    ``rows``: the (train, test) rows to keep of a streamed Hugging Face dataset, instead of data.hf_stream_rows.
    """
    train, test = _dataset_splits(cfg, channels, rows)
    if cfg.data.holdout:
        return holdout_split(train, cfg.data.holdout, cfg.data.holdout_seed)
    return train, test


def holdout_split(train: Dataset, n: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(the rest, ``n`` held-out images) of ``train``: a fixed random draw that depends on ``seed`` only."""
    if not 0 < n < len(train):
        raise ValueError(
            f"data.holdout={n}: the train split has {len(train)} images; hold out between 1 and {len(train) - 1}"
        )
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(10_007 + seed)).tolist()
    held = sorted(perm[:n])
    rest = sorted(perm[n:])
    return torch.utils.data.Subset(train, rest), torch.utils.data.Subset(train, held)


def split_name(data) -> str:
    """What the evaluated split is called in results: ``heldout`` (of train), ``val`` (an image folder's) or ``test``."""
    if getattr(data, "holdout", 0):
        return "heldout"
    if data.dataset == "hf":
        return data.hf_test_split or "test"
    return "val" if data.dataset == "imagefolder" else "test"


def _dataset_splits(
    cfg, channels: int, rows: tuple[int | None, int | None] | None = None
) -> tuple[Dataset, Dataset | None]:
    d = cfg.data
    if d.dataset == "fashion_mnist":
        return (
            fashion_mnist("train", d.root, d.download, channels),
            fashion_mnist("test", d.root, d.download, channels),
        )
    if d.dataset == "synthetic":
        kw = dict(
            size=d.synthetic_size,
            num_classes=d.synthetic_classes,
            image_size=d.synthetic_image_size,
            channels=channels,
            seed=cfg.train.seed,
        )
        return synthetic("train", **kw), synthetic(
            "test",
            size=max(d.synthetic_size // 4, d.synthetic_classes),
            **{k: v for k, v in kw.items() if k != "size"},
        )
    if d.dataset == "imagefolder":
        if not d.root:
            raise DatasetNotFoundError(
                "data.dataset=imagefolder needs data.root=/path/with/train (and val) folders"
            )
        root = Path(d.root)
        train_dir = root / "train" if (root / "train").is_dir() else root
        val_dir = root / "val"
        if channels != 3:
            raise ConfigError("imagefolder data is decoded as RGB: use model.kwargs.in_chans=3")
        bad = d.on_bad_image
        return image_folder(train_dir, bad), (image_folder(val_dir, bad) if val_dir.is_dir() else None)
    if d.dataset == "hf":
        from .hf_data import hf_splits  # late: datasets is an optional dependency

        train, test = hf_splits(d, channels, seed=cfg.train.seed, rows=rows)
        return ReadableImages(train, d.on_bad_image), (
            None if test is None else ReadableImages(test, d.on_bad_image)
        )
    raise ConfigError(f"unknown data.dataset {d.dataset!r}: use fashion_mnist, imagefolder or synthetic")


def subset(ds: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A fixed random subset of ``n`` samples (the whole set when n is None or >= len)."""
    if n is None or n >= len(ds):
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return torch.utils.data.Subset(ds, idx)
