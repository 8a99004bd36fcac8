"""``data.dataset=hf``: Hugging Face datasets in pretraining and in the evaluation recipes.

Small datasets are built here (class-structured 32 px images from :func:`xmoco_zoo.data.synthetic`) in both
local kinds, a ``save_to_disk`` folder and a folder of parquet files, and as a Hub dataset served by olah
(tests/hub_servers.py) and then read offline from the Hugging Face cache. Nothing touches the network.
"""

from __future__ import annotations

import itertools
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

from .conftest import HOOKED_RECIPE, ROOT, TINY, launch_two, run_cli, run_pretrain
from .hub_servers import hub_env, make_mirror_repo, olah_server, requires_olah
from .test_faults import _assert_same_training_state

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


# ------------------------------------------------------------------------------------------- a whole stream

STREAM = ["data.hf_streaming=true", "knn.max_train=48", "knn.batch_size=32", "knn.k=10"]


@pytest.mark.parametrize("kind,batched", [("disk", False), ("parquet", True)])
def test_pretrain_two_steps_from_a_whole_stream(hf_data, tmp_path, kind, batched):
    """The train split streamed whole (data.hf_stream_rows null), per-image and batched views; the kNN monitor
    keeps the first knn.max_train train rows and the whole test split."""
    out = tmp_path / "run"
    run_pretrain(
        *TINY,
        "data.dataset=hf",
        f"data.hf_path={hf_data[kind]}",
        *(PARQUET_KEYS + ["data.hf_stream_epoch_rows=64"] if kind == "parquet" else []),
        *STREAM,
        f"aug.batched={str(batched).lower()}",
        "train.max_steps=2",
        f"train.output_dir={out}",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and 0 <= summary["knn_top1"] <= 100
    split = "validation" if kind == "parquet" else "test"
    record = json.loads((out / "backbone" / "results" / f"knn_hf_{split}.json").read_text())
    assert record["protocol_args"]["bank"] == 48 and record["protocol_args"]["queries"] == 32


def _stream_cfg(path: Path, *overrides: str) -> DataConfig:
    return _cfg(path, "data.hf_streaming=true", "knn.enabled=false", *overrides)


def _parquet_repo(root: Path, card: str | None = None) -> Path:
    """Fresh parquet files (train 64, validation 32) in a Hub repo's layout, with a dataset card if given: files
    never loaded before, so no info about them sits in the Hugging Face cache from an earlier test."""
    for split, data_split, n in (("train", "train", 64), ("validation", "test", 32)):
        _dataset(data_split, n, "img", "y").to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    if card is not None:
        (root / "README.md").write_text(card)
    return root


def test_the_epoch_length_comes_from_the_dataset_info_or_the_config(hf_data, tmp_path):
    from xmoco_zoo.hf_data import open_train_stream

    assert open_train_stream(_stream_cfg(hf_data["disk"]), 3, seed=0).epoch_rows == 64  # the saved length
    # A Hub dataset repo's card gives each split's num_examples.
    card = (
        "---\ndataset_info:\n  splits:\n  - name: train\n    num_bytes: 1\n    num_examples: 64\n"
        "  - name: validation\n    num_bytes: 1\n    num_examples: 32\n---\n"
    )
    repo = _parquet_repo(tmp_path / "repo", card)
    assert open_train_stream(_stream_cfg(repo, *PARQUET_KEYS), 3, seed=0).epoch_rows == 64
    # Local parquet files say nothing: the config must.
    bare = _parquet_repo(tmp_path / "bare")
    with pytest.raises(ConfigError) as e:
        open_train_stream(_stream_cfg(bare, *PARQUET_KEYS), 3, seed=0)
    assert "set data.hf_stream_epoch_rows=N" in str(e.value) and "\n" not in str(e.value)
    d = _stream_cfg(bare, *PARQUET_KEYS, "data.hf_stream_epoch_rows=50")
    assert open_train_stream(d, 3, seed=0).epoch_rows == 50


def test_stream_rows_epochs_differ_resume_skips_and_a_short_shard_starts_again(hf_data):
    from xmoco_zoo.data import StreamImages, StreamRows
    from xmoco_zoo.hf_data import open_train_stream

    stream = open_train_stream(_stream_cfg(hf_data["disk"]), 3, seed=0)
    images = StreamImages(stream.decode, stream.epoch_rows, stream.where)

    def epoch(sampler: StreamRows, e: int, skip: int = 0) -> list[bytes]:
        sampler.set_epoch(e, skip)
        return [r.row["image"]["bytes"] for r in sampler]

    rows = StreamRows(stream.rows, 64)
    e0, e1 = epoch(rows, 0), epoch(rows, 1)
    assert len(e0) == 64 and len(set(e0)) == 64 and set(e0) == set(e1)  # every row once per epoch
    assert e0 != e1 and epoch(rows, 0) == e0  # seeded by (train.seed, epoch)
    assert epoch(rows, 1, skip=40) == e1[40:] and len(rows) == 24  # a resumed epoch: the same rows after 40

    ref = synthetic("train", size=64, num_classes=4, image_size=32, seed=3).images
    rows.set_epoch(0)
    batch = images.__getitems__(list(itertools.islice(rows, 4)))
    assert all(label == 0 and any(torch.equal(img, r) for r in ref) for img, label in batch)

    longer = StreamRows(stream.rows, 100)  # more rows than the shard has: it starts again, in the same order
    assert epoch(longer, 0) == e0 + e0[:36]
    longer.set_epoch(0)
    assert [r.index for r in longer] == list(range(100))


def test_an_unreadable_streamed_image_is_replaced_within_its_batch_or_named(tmp_path):
    from xmoco_zoo.data import StreamImages, StreamRows
    from xmoco_zoo.hf_data import open_train_stream

    good = _dataset("train", 4).cast_column("image", datasets.Image(decode=False))
    rows = good.to_list()
    rows[1]["image"] = {"bytes": b"not an image", "path": None}
    datasets.Dataset.from_list(rows, features=good.features).save_to_disk(str(tmp_path / "bad"))
    stream = open_train_stream(_stream_cfg(tmp_path / "bad", "data.hf_stream_shuffle_buffer=0"), 3, seed=0)
    sampler = StreamRows(stream.rows, 4)
    batch = list(sampler)  # stored order: row 1 is the bad one
    images = StreamImages(stream.decode, 4, stream.where)
    with pytest.warns(BadImageWarning, match=r"split 'train' \(streamed\) epoch 1 row 1"):
        out = images.__getitems__(batch)
    assert [label for _, label in out] == [0, -1, 0, 0] and torch.equal(out[1][0], out[2][0])
    with pytest.raises(BadImageError, match="epoch 1 row 1: cannot be decoded"):
        StreamImages(stream.decode, 4, stream.where, on_bad="error").__getitems__(batch)


def test_two_processes_read_disjoint_shards_for_the_same_number_of_steps(hf_data, tmp_path):
    """4 parquet shards of 40, 8, 8 and 8 rows: each process gets two whole shards (16 or 48 rows), and both run
    32 rows (2 batches of 16) per epoch, the short one starting its shard again."""
    from xmoco_zoo.data import StreamRows
    from xmoco_zoo.hf_data import open_train_stream

    full = _dataset("train", 64)
    start = 0
    for i, n in enumerate((40, 8, 8, 8)):
        full.select(range(start, start + n)).to_parquet(str(tmp_path / "shards" / f"part-{i}.parquet"))
        start += n
    d = _stream_cfg(
        tmp_path / "shards" / "*.parquet", "data.hf_test_split=null", "data.hf_stream_epoch_rows=64"
    )
    seen = []
    for rank in range(2):
        stream = open_train_stream(d, 3, seed=0, rank=rank, processes=2)
        assert stream.rows.n_shards == 2
        sampler = StreamRows(stream.rows, stream.epoch_rows // (2 * 16) * 16, rank, processes=2)
        sampler.set_epoch(0)
        rows = list(sampler)
        assert len(rows) == len(sampler) == 32 and {r.index % 2 for r in rows} == {rank}
        seen.append({r.row["image"]["bytes"] for r in rows})
    assert not seen[0] & seen[1] and sorted(map(len, seen)) == [16, 32]  # the 16-row shard went round twice


def test_a_whole_stream_resumes_mid_epoch_bitwise(hf_data, tmp_path):
    """SIGTERM after step 6 (2 batches into epoch 2) with 2 loader workers, resumed without workers: the final
    weights, momentum encoder, queue and optimizer state equal an uninterrupted run's, bit for bit."""
    args = [*TINY, "data.dataset=hf", f"data.hf_path={hf_data['disk']}", *STREAM]
    ref, out = tmp_path / "ref", tmp_path / "run"
    run_pretrain(*args, f"train.output_dir={ref}")
    proc = subprocess.run(
        [sys.executable, str(HOOKED_RECIPE), *args, "data.num_workers=2", f"train.output_dir={out}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "XMOCO_TEST_SIGNAL_AT_STEP": "6:TERM"},
        timeout=300,
    )
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert (out / "checkpoints" / "epoch_0001_step_00000006").is_dir()
    resumed = run_pretrain(*args, f"train.output_dir={out}", "--resume")
    assert "batch 2 of epoch 2" in resumed.stdout
    _assert_same_training_state(ref / "checkpoints/epoch_0002", out / "checkpoints/epoch_0002")
    assert (
        json.loads((ref / "summary.json").read_text())["knn_top1"]
        == json.loads((out / "summary.json").read_text())["knn_top1"]
    )


@pytest.mark.slow
def test_two_gloo_processes_pretrain_on_uneven_stream_shards(tmp_path):
    """Under accelerate launch (2 CPU processes): the shards of 48 and 16 rows give both processes 2 steps per
    epoch (a process that ran dry early would hang the other in a collective)."""
    full = _dataset("train", 64)
    start = 0
    for i, n in enumerate((40, 8, 8, 8)):
        full.select(range(start, start + n)).to_parquet(str(tmp_path / "shards" / f"part-{i}.parquet"))
        start += n
    out = tmp_path / "run"
    proc = launch_two(
        *TINY,
        "data.dataset=hf",
        f"data.hf_path={tmp_path / 'shards' / '*.parquet'}",
        "data.hf_test_split=null",
        "data.hf_streaming=true",
        "data.hf_stream_epoch_rows=64",
        f"train.output_dir={out}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 process(es) x batch 16, 2 steps/epoch" in proc.stdout
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


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
    streaming = ["data.dataset=hf", "data.hf_path=x/y", "data.hf_streaming=true"]
    with pytest.raises(ConfigError, match="set knn.max_train=N"):  # a whole stream: the bank needs rows
        load_config(None, streaming)
    load_config(None, [*streaming, "knn.max_train=1000"])
    load_config(None, [*streaming, "data.hf_test_split=null"])  # no monitor
    with pytest.raises(ConfigError, match="data.subset draws random rows"):
        load_config(None, [*streaming, "knn.enabled=false", "data.subset=100"])
    with pytest.raises(ConfigError, match="data.hf_stream_epoch_rows=0"):
        load_config(None, [*streaming, "knn.enabled=false", "data.hf_stream_epoch_rows=0"])
    from xmoco_zoo.protocols.config import load_eval_config

    with pytest.raises(ConfigError, match="the evaluations index samples.*data.hf_stream_rows"):
        load_eval_config("knn", None, streaming)
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
