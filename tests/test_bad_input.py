"""Bad input: unreadable files in an ImageFolder are skipped with a warning and counted (data.on_bad_image=skip,
the default) or stop the run naming the file (error); never a crash in the middle of an epoch.
(Checkpoints of another method, unsafe pickles and interrupted checkpoint writes: tests/test_faults.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmoco_zoo.data import BadImageError, BadImageWarning, image_folder
from xmoco_zoo.logging import read_metrics

from .conftest import run_pretrain

BAD = {  # file name -> what is wrong with it
    "bad_random.jpg": "random bytes",
    "bad_text.png": "a text file with an image extension",
    "bad_truncated.jpg": "a JPEG cut in the middle",
    "bad_empty.jpg": "an empty file",
}


def _folder(root, per_class: int, bad: dict[str, list[str]], size: int = 32):
    """root/class_c/{i}.jpg good images, plus the named bad files per class."""
    rng = np.random.default_rng(0)
    for c in range(2):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.jpg")
        for name in bad.get(f"class_{c}", []):
            if name == "bad_random.jpg":
                (d / name).write_bytes(rng.bytes(700))
            elif name == "bad_text.png":
                (d / name).write_text("not an image\n")
            elif name == "bad_truncated.jpg":
                data = (d / "0.jpg").read_bytes()
                (d / name).write_bytes(data[: len(data) // 2])
            else:
                (d / name).write_bytes(b"")
    return root


def test_unreadable_images_are_replaced_by_the_next_readable_one_and_marked(tmp_path):
    root = _folder(
        tmp_path / "f", 3, {"class_0": ["bad_random.jpg", "bad_text.png"], "class_1": list(BAD)[2:]}
    )
    ds = image_folder(root)
    paths = [p for p, _ in ds.folder.samples]
    bad_idx = [i for i, p in enumerate(paths) if Path(p).name.startswith("bad_")]
    assert len(bad_idx) == 4 and len(ds) == 10
    with pytest.warns(BadImageWarning) as caught:
        items = [ds[i] for i in range(len(ds))]
    for i, (img, label) in enumerate(items):
        assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)
        if i in bad_idx:
            assert label == -1, paths[i]
        else:
            assert label == ds.folder.samples[i][1]
    messages = " ".join(str(w.message) for w in caught)
    for i in bad_idx:
        assert f"unreadable image skipped: {paths[i]}" in messages
    # The substitute is the next readable image: deterministic, so a resumed run sees the same data.
    first_bad = bad_idx[0]
    nxt = next(j for j in range(first_bad + 1, len(ds)) if j not in bad_idx)
    assert torch.equal(items[first_bad][0], items[nxt][0])


def test_on_bad_image_error_names_the_file(tmp_path):
    root = _folder(tmp_path / "f", 2, {"class_1": ["bad_truncated.jpg"]})
    ds = image_folder(root, on_bad_image="error")
    bad = next(i for i, (p, _) in enumerate(ds.folder.samples) if Path(p).name.startswith("bad_"))
    ds[0]  # a readable one is fine
    with pytest.raises(
        BadImageError, match=r"bad_truncated\.jpg: cannot be decoded .*data\.on_bad_image=skip"
    ):
        ds[bad]
    with pytest.raises(ValueError, match="use 'skip' or 'error'"):
        image_folder(root, on_bad_image="ignore")


def test_a_folder_without_any_readable_image_is_an_error(tmp_path):
    root = _folder(tmp_path / "f", 0, {"class_0": ["bad_random.jpg"], "class_1": ["bad_empty.jpg"]})
    ds = image_folder(root)
    with pytest.warns(BadImageWarning), pytest.raises(BadImageError, match="no readable image"):
        ds[0]


def test_pretraining_on_an_image_folder_with_unreadable_files_skips_and_counts_them(tmp_path):
    """3 unreadable files among 21 in train/ and 1 among 9 in val/: the run completes, each unreadable file
    is warned about and counted every epoch (data/bad_images), and the kNN leaves them out. drop_last is off
    here: 21 images in batches of 8 give a last batch of 5, which split BN (4 groups) handles too."""
    data = tmp_path / "data"
    _folder(
        data / "train", 9, {"class_0": ["bad_random.jpg", "bad_text.png"], "class_1": ["bad_truncated.jpg"]}
    )
    _folder(data / "val", 4, {"class_1": ["bad_empty.jpg"]})
    out = tmp_path / "run"
    proc = run_pretrain(
        "model.backbone=test_resnet",
        "data.dataset=imagefolder",
        f"data.root={data}",
        "data.num_workers=0",
        "aug.image_size=32",
        "train.batch_size=8",
        "train.drop_last=false",
        "train.epochs=2",
        "train.log_every=1",
        "train.trackers=[]",
        "method.queue_size=64",
        "method.bn_splits=4",
        "knn.batch_size=8",
        f"train.output_dir={out}",
        env={"OMP_NUM_THREADS": "1"},
    )
    for name in ("bad_random.jpg", "bad_text.png", "bad_truncated.jpg", "bad_empty.jpg"):
        assert f"unreadable image skipped: {data}" in proc.stderr and name in proc.stderr, name
    assert "3 sample(s) were unreadable images" in proc.stdout
    series = read_metrics(out / "metrics.csv")
    assert [v for _, v in series["data/bad_images"]] == [3.0, 3.0]  # once per epoch each
    assert [s for s, _ in series["train/loss"]] == list(range(1, 7)), (
        "3 steps per epoch: the short batch trains"
    )
    assert len(series["eval/knn_top1"]) == 2
