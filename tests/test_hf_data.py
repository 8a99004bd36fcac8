"""``data.dataset=hf``: Hugging Face datasets in pretraining and in the evaluation recipes.

Small datasets are built here (class-structured 32 px images from :func:`xmoco_zoo.data.synthetic`) in both
local kinds, a ``save_to_disk`` folder and a folder of parquet files, and as a Hub dataset served by olah
(tests/hub_servers.py) and then read offline from the Hugging Face cache. Nothing touches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xmoco_zoo.config import ConfigError, DataConfig
from xmoco_zoo.data import BadImageError, BadImageWarning, labelled_splits, synthetic
from xmoco_zoo.experiment import load_config
from xmoco_zoo.protocols.common import labelled_data

from .conftest import ROOT, TINY, run_cli, run_pretrain
from .hub_servers import hub_env, make_mirror_repo, olah_server, requires_olah

datasets = pytest.importorskip("datasets", reason="the hf extra: pip install 'xmoco-zoo[hf]'")
CLASSES = ["circle", "square", "star", "cross"]


def _dataset(split: str, size: int, image_column: str = "image", label_column: str = "label"):
    """``size`` RGB 32x32 images of 4 class patterns as PIL images, with ClassLabel labels."""
    from PIL import Image

    ds = synthetic(split, size=size, num_classes=len(CLASSES), image_size=32, seed=3)
    images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in ds.images]
    features = datasets.Features(
        {image_column: datasets.Image(), label_column: datasets.ClassLabel(names=CLASSES)}
    )
    return datasets.Dataset.from_dict(
        {image_column: images, label_column: ds.labels.tolist()}, features=features
    )


@pytest.fixture(scope="module")
def hf_data(tmp_path_factory) -> dict[str, Path]:
    """The same 64 + 32 images as a save_to_disk folder (train/test, default column names) and as a folder of
    parquet files (train/validation, columns img/y), the layout of a Hub dataset repo."""
    root = tmp_path_factory.mktemp("hf")
    datasets.DatasetDict(train=_dataset("train", 64), test=_dataset("test", 32)).save_to_disk(
        str(root / "disk")
    )
    for split, data_split, n in (("train", "train", 64), ("validation", "test", 32)):
        _dataset(data_split, n, "img", "y").to_parquet(
            str(root / "parquet" / "data" / f"{split}-00000-of-00001.parquet")
        )
    return {"disk": root / "disk", "parquet": root / "parquet"}


PARQUET_KEYS = [
    "data.hf_image_column=img",
    "data.hf_label_column=y",
    "data.hf_test_split=validation",
]


def _cfg(path: Path, *overrides: str) -> DataConfig:
    return load_config(None, ["data.dataset=hf", f"data.hf_path={path}", *overrides]).data


def hf_splits_of(path: Path, *overrides: str, channels: int = 3):
    """The splits as every recipe reads them (data.labelled_splits: hf_splits wrapped for unreadable rows)."""
    cfg = load_config(None, ["data.dataset=hf", f"data.hf_path={path}", *overrides])
    return labelled_splits(cfg, channels)


# ------------------------------------------------------------------------------------------- pretraining


@pytest.mark.parametrize("kind", ["disk", "parquet"])
def test_pretrain_two_steps_with_the_knn_monitor(hf_data, tmp_path, kind):
    out = tmp_path / "run"
    run_pretrain(
        *TINY,
        "data.dataset=hf",
        f"data.hf_path={hf_data[kind]}",
        *(PARQUET_KEYS if kind == "parquet" else []),
        "train.max_steps=2",
        "knn.batch_size=32",
        "knn.k=10",
        f"train.output_dir={out}",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and 0 <= summary["knn_top1"] <= 100
    split = "validation" if kind == "parquet" else "test"  # the record names the split it scored
    record = json.loads((out / "backbone" / "results" / f"knn_hf_{split}.json").read_text())
    assert (
        record["split"] == split
        and record["protocol_args"]["bank"] == 64
        and record["protocol_args"]["queries"] == 32
    )


def test_both_kinds_give_the_same_images_labels_and_classes(hf_data):
    tr_disk, te_disk = labelled_splits(
        load_config(None, ["data.dataset=hf", f"data.hf_path={hf_data['disk']}"]), 3
    )
    tr_pq, te_pq = labelled_splits(
        load_config(None, ["data.dataset=hf", f"data.hf_path={hf_data['parquet']}", *PARQUET_KEYS]), 3
    )
    ref = synthetic("train", size=64, num_classes=4, image_size=32, seed=3)
    assert len(tr_disk) == len(tr_pq) == 64 and len(te_disk) == len(te_pq) == 32
    assert tr_disk.classes == tr_pq.classes == tuple(CLASSES)
    for i in (0, 17, 63):
        (a, ya), (b, yb) = tr_disk[i], tr_pq[i]
        assert a.dtype == torch.uint8 and a.shape == (3, 32, 32)
        assert torch.equal(a, ref.images[i]) and torch.equal(b, ref.images[i])  # PNG in parquet: lossless
        assert ya == yb == int(ref.labels[i])


def test_grayscale_backbone_gets_one_channel(hf_data):
    train, _ = hf_splits_of(hf_data["disk"], channels=1)
    img, _ = train[5]
    assert img.shape == (1, 32, 32) and img.dtype == torch.uint8


def test_streaming_keeps_the_first_rows_of_each_split(hf_data):
    train, test = hf_splits_of(
        hf_data["parquet"], *PARQUET_KEYS, "data.hf_streaming=true", "data.hf_stream_rows=40"
    )
    full, _ = hf_splits_of(hf_data["parquet"], *PARQUET_KEYS)
    assert len(train) == 40 and len(test) == 32  # the test split has 32 rows only
    assert all(torch.equal(train[i][0], full[i][0]) and train[i][1] == full[i][1] for i in (0, 39))
    shuffled, _ = hf_splits_of(
        hf_data["parquet"],
        *PARQUET_KEYS,
        "data.hf_streaming=true",
        "data.hf_stream_rows=40",
        "data.hf_stream_shuffle_buffer=64",
    )
    labels = [shuffled[i][1] for i in range(40)]
    assert labels != [full[i][1] for i in range(40)] and len(shuffled) == 40


def test_unlabelled_data_pretrains_without_a_test_split(hf_data):
    train, test = hf_splits_of(hf_data["disk"], "data.hf_label_column=null")
    assert test is None and len(train) == 64 and train[3][1] == 0


# ------------------------------------------------------------------------------------------- mistakes


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["data.hf_test_split=validation"],
            "has no split 'validation' (data.hf_test_split); its splits are ['test', 'train']",
        ),
        (
            ["data.hf_train_split=training"],
            "has no split 'training' (data.hf_train_split); its splits are ['test', 'train']",
        ),
        (
            ["data.hf_image_column=img"],
            "has no column 'img' (data.hf_image_column); its columns are ['image', 'label']",
        ),
        (
            ["data.hf_label_column=y"],
            "has no column 'y' (data.hf_label_column); its columns are ['image', 'label']",
        ),
    ],
)
def test_a_missing_split_or_column_is_a_one_line_error_listing_what_exists(hf_data, overrides, expected):
    from xmoco_zoo.hf_data import HFDataError

    with pytest.raises(HFDataError) as e:
        hf_splits_of(hf_data["disk"], *overrides)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_the_pretrain_command_ends_on_that_line(hf_data, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "recipes" / "pretrain.py"),
            *TINY,
            "data.dataset=hf",
            f"data.hf_path={hf_data['parquet']}",
            "data.hf_image_column=img",
            "data.hf_label_column=y",
            f"train.output_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "has no split 'test' (data.hf_test_split); its splits are ['train', 'validation']" in last, (
        proc.stderr[-2000:]
    )


def test_config_mistakes(tmp_path):
    with pytest.raises(ConfigError, match="needs data.hf_path"):
        load_config(None, ["data.dataset=hf"])
    with pytest.raises(ConfigError, match="data.hf_stream_rows"):
        load_config(None, ["data.dataset=hf", "data.hf_path=x/y", "data.hf_streaming=true"])
    from xmoco_zoo.data import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="not a local save_to_disk folder"):
        hf_splits_of(tmp_path / "nothing" / "here.parquet")


def test_pixel_arrays_string_labels_and_unreadable_images(tmp_path):
    """An image column of raw pixels, string labels (sorted into class ids); an encoded image that cannot be
    decoded is replaced by the next row (label -1, a warning naming the row) or stops with the row named."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (6, 16, 16), dtype=np.uint8)
    datasets.Dataset.from_dict(
        {"pixels": list(pixels), "label": ["dog", "cat", "dog", "bird", "cat", "dog"]},
        features=datasets.Features(
            {"pixels": datasets.Array2D((16, 16), "uint8"), "label": datasets.Value("string")}
        ),
    ).save_to_disk(str(tmp_path / "arrays"))
    train, _ = hf_splits_of(tmp_path / "arrays", "data.hf_image_column=pixels", "data.hf_test_split=null")
    assert train.classes == ("bird", "cat", "dog") and [train[i][1] for i in range(6)] == [2, 1, 2, 0, 1, 2]
    img, _ = train[3]
    assert img.shape == (3, 16, 16) and torch.equal(img[1], torch.from_numpy(pixels[3]))

    good = _dataset("train", 4).cast_column("image", datasets.Image(decode=False))
    rows = good.to_list()
    rows[1]["image"] = {"bytes": b"not an image", "path": None}
    datasets.Dataset.from_list(rows, features=good.features).save_to_disk(str(tmp_path / "bad"))
    train, _ = hf_splits_of(tmp_path / "bad", "data.hf_test_split=null")
    with pytest.warns(BadImageWarning, match="split 'train' row 1"):
        img, label = train[1]
    assert label == -1 and torch.equal(img, train[2][0])
    train, _ = hf_splits_of(tmp_path / "bad", "data.hf_test_split=null", "data.on_bad_image=error")
    with pytest.raises(BadImageError, match="row 1: cannot be decoded"):
        train[1]


# ------------------------------------------------------------------------------------------- evaluations


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    import timm

    from xmoco_zoo.export import save_timm_folder

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("hf_model") / "model"
    save_timm_folder(
        timm.create_model("test_resnet", num_classes=0),
        out,
        tag="test",
        input_size=(3, 32, 32),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    return out


def test_evaluation_data_reads_the_configured_splits(hf_data):
    from xmoco_zoo.protocols.config import load_eval_config

    cfg = load_eval_config(
        "linear", None, ["data.dataset=hf", f"data.hf_path={hf_data['parquet']}", *PARQUET_KEYS]
    )
    train, test, num_classes = labelled_data(cfg.data, 3, seed=0)
    assert (len(train), len(test), num_classes) == (64, 32, 4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "protocol,args",
    [
        ("knn", ["knn.k=10"]),
        ("linear", ["linear.mode=fast", "linear.lbfgs_max_iter=5"]),
        ("finetune", ["finetune.batch_size=16", "finetune.epochs=1", "run.max_steps=2"]),
    ],
)
def test_every_evaluation_recipe_runs_on_a_hf_dataset(hf_data, model_dir, tmp_path, protocol, args):
    out = tmp_path / protocol
    run_cli(
        "eval",
        protocol,
        f"model.spec=local-dir:{model_dir}",
        "data.dataset=hf",
        f"data.hf_path={hf_data['parquet']}",
        *PARQUET_KEYS,
        "data.num_workers=0",
        "run.save_results=true",
        "run.update_card=false",
        f"run.output_dir={out}",
        *args,
    )
    record = json.loads(next((out / "results").glob("*.json")).read_text())
    assert record["dataset"] == "hf" and record["split"] == "validation"
    assert record["config"]["data"]["hf_path"] == str(hf_data["parquet"]) and 0 <= record["value"] <= 100


# ------------------------------------------------------------------------------------------- the Hub


@pytest.mark.slow
@requires_olah
def test_a_hub_dataset_id_is_read_through_the_cache_and_then_offline(hf_data, tmp_path):
    """``data.hf_path=ORG/NAME``: downloaded through a local Hub server (olah) into a fresh Hugging Face cache,
    then read from that cache with HF_HUB_OFFLINE=1 and the server gone."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(hf_data["parquet"], repo)
    # A dataset card, as Hub datasets have: olah answers a missing README.md with 401 where the Hub says 404,
    # and datasets takes a 401 for a dataset it may not read.
    (repo / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# shapes\n")
    mirrors = tmp_path / "mirrors"
    make_mirror_repo(mirrors, "xmoco-zoo/shapes", repo, repo_type="dataset")
    code = (
        "import sys; from xmoco_zoo.experiment import load_config; from xmoco_zoo.data import labelled_splits\n"
        "cfg = load_config(None, ['data.dataset=hf', 'data.hf_path=xmoco-zoo/shapes', *sys.argv[1:]])\n"
        "train, test = labelled_splits(cfg, 3)\n"
        "print(len(train), len(test), train.classes, tuple(train[5][0].shape))\n"
    )

    def read(env: dict[str, str]) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", code, *PARQUET_KEYS],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**env, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])},
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip().splitlines()[-1]

    expected = f"64 32 {tuple(CLASSES)} (3, 32, 32)"
    with olah_server(mirrors) as url:
        assert read(hub_env(url, tmp_path / "hf")) == expected
    offline = {**hub_env("http://127.0.0.1:9", tmp_path / "hf", offline=True), "HF_DATASETS_OFFLINE": "1"}
    assert read(offline) == expected
