import gzip
import struct

import numpy as np
import pytest
import torch

from xmoco_zoo.augment import TwoViews, eval_transform
from xmoco_zoo.config import AugConfig
from xmoco_zoo.data import (
    DatasetNotFoundError,
    EpochSampler,
    TwoViewDataset,
    fashion_mnist,
    find_fashion_mnist,
    read_idx,
    synthetic,
)

from .conftest import needs_fmnist


def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_read_idx_round_trip_and_truncation(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_from_a_configured_folder(tmp_path):
    for split, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", np.random.randint(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    ds = fashion_mnist("test", root=str(tmp_path))
    img, label = ds[3]
    assert img.shape == (1, 28, 28) and img.dtype == torch.uint8 and label == 3
    assert fashion_mnist("train", root=str(tmp_path), channels=3)[0][0].shape == (3, 28, 28)


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr("xmoco_zoo.data.DEBIAN_FASHION_MNIST", str(tmp_path / "nowhere"))
    monkeypatch.setenv("XMOCO_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as e:
        find_fashion_mnist(str(tmp_path / "given"))
    msg = str(e.value)
    assert str(tmp_path / "given") in msg and str(tmp_path / "env") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "data.download=true" in msg


@needs_fmnist
def test_real_fashion_mnist_shapes():
    tr, te = fashion_mnist("train"), fashion_mnist("test")
    assert len(tr) == 60000 and len(te) == 10000
    assert tr.images.shape[1:] == (1, 28, 28) and set(tr.labels.unique().tolist()) == set(range(10))


def test_views_are_seeded_per_sample_and_epoch():
    ds = TwoViewDataset(synthetic(size=8), TwoViews(AugConfig(image_size=32), 3), seed=1)
    a1, a2 = ds[3][0]
    b1, b2 = ds[3][0]
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, a2)
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0][0], a1)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    ds[0]
    assert torch.equal(torch.get_rng_state(), state), "augmenting must not consume the global RNG"


def test_grayscale_views_and_eval_transform():
    cfg = AugConfig(image_size=32, mean=[0.5], std=[0.25], solarize_p=[0.0, 1.0], blur_p=[1.0, 0.0])
    img = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    v1, v2 = TwoViews(cfg, 1)(img)
    assert v1.shape == v2.shape == (1, 32, 32) and v1.dtype == torch.float32
    e = eval_transform(cfg, 1)(img)
    torch.testing.assert_close(
        e.mean(),
        (
            (
                torch.nn.functional.interpolate(
                    img[None].float() / 255, size=32, mode="bilinear", antialias=True
                )
                - 0.5
            )
            / 0.25
        ).mean(),
        atol=0.05,
        rtol=0,
    )
    with pytest.raises(ValueError, match="3-channel"):
        TwoViews(AugConfig(mean=[0.1, 0.2]), 3)


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    s = EpochSampler(50, seed=3)
    e0 = list(s)
    assert sorted(e0) == list(range(50)) and list(s) == e0
    s.set_epoch(1)
    assert list(s) != e0
    s2 = EpochSampler(50, seed=3)
    s2.set_epoch(1)
    assert list(s2) == list(s)


def test_holdout_is_a_fixed_disjoint_split_of_train_independent_of_the_training_seed(tmp_path, tiny_args):
    """data.holdout: the held-out images come from the train split, never overlap the rest, are the same for
    every training seed, and pretraining then scores its kNN monitor on them (recorded as split 'heldout')."""
    import json

    from xmoco_zoo.data import holdout_split, labelled_splits
    from xmoco_zoo.experiment import load_config

    from .conftest import run_pretrain

    splits = []
    for seed in (0, 1):
        cfg = load_config(None, [*tiny_args, "data.holdout=32", f"train.seed={seed}"])
        rest, held = labelled_splits(cfg, 3)
        splits.append((rest.indices, held.indices))
    (rest, held), (rest1, held1) = splits
    assert len(held) == 32 and len(rest) == 128 - 32 and not set(rest) & set(held)
    assert held == held1 and rest == rest1
    with pytest.raises(ValueError, match="data.holdout=128"):
        holdout_split(list(range(128)), 128)

    out = tmp_path / "run"
    run_pretrain(*tiny_args, "data.holdout=32", "train.epochs=1", f"train.output_dir={out}")
    record = json.loads(next((out / "backbone" / "results").glob("knn_*.json")).read_text())
    assert record["split"] == "heldout" and record["protocol_args"]["queries"] == 32
    assert record["protocol_args"]["bank"] == 128 - 32
