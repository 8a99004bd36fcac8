"""kornia's augmentation module against our batched two views (benchmarks/kornia_augment.py, docs/kornia.md): the
benchmark runs, kornia built from our config draws and produces the same distributions as torchvision's per-image
pipeline (as ours does), and kornia seeded per batch replays exactly without touching the training's RNG stream.

Skipped when kornia is not installed (it is the optional ``kornia`` extra: pip install 'xmoco-zoo[kornia]').
"""

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from xmoco_zoo.batch_augment import BatchTwoViews
from xmoco_zoo.data import synthetic
from xmoco_zoo.pretrain import view_seed

from .conftest import ROOT

kornia = pytest.importorskip("kornia", reason="the kornia extra: pip install 'xmoco-zoo[kornia]'")
K = pytest.importorskip("kornia.augmentation")

SCRIPT = ROOT / "benchmarks" / "kornia_augment.py"
_spec = importlib.util.spec_from_file_location("kornia_augment_benchmark", SCRIPT)
kb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kb)


@pytest.fixture
def one_thread():
    """kornia's many small ops on 2 threads wait on each other when the cores are busy (50x slower here)."""
    with kb.one_thread():
        yield


def test_timing_mode_runs_tiny(tmp_path):
    """The timing mode end to end on tiny batches (no time is asserted: the machine may be busy)."""
    out = tmp_path / "t.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--batch",
            "8",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--per-op",
        ]
        + ["--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    for name in ("fmnist", "rgb32"):
        assert set(r[name]["ms_per_batch"]) == {"ours", "kornia", "kornia_resample"}
        assert all(v > 0 for v in r[name]["ms_per_batch"].values())
        assert set(r[name]["kornia_over_ours"]) == {"kornia", "kornia_resample"}
        ops = {"crop only", "+jitter", "+flip"} | ({"+grayscale", "+blur"} if name == "rgb32" else set())
        assert set(r[name]["per_op_ms"]) == ops
    assert "kornia / ours" in proc.stdout


@pytest.mark.parametrize(
    ("name", "ops"),
    [
        # 1 channel: jitter is brightness and contrast only; grayscale kept (a no-op there); no blur, no solarize
        (
            "fmnist",
            ["RandomResizedCrop", "ColorJitter", "RandomGrayscale", "RandomHorizontalFlip", "Normalize"],
        ),
        (
            "rgb32",
            [
                "RandomResizedCrop",
                "ColorJitter",
                "RandomGrayscale",
                "RandomGaussianBlur",
                "RandomHorizontalFlip",
                "Normalize",
            ],
        ),
    ],
)
def test_kornia_pipeline_follows_the_config(name, ops, one_thread):
    cfg, channels = kb.setting(name)
    aug = kb.KorniaTwoViews(cfg, channels)
    for seq in aug.views:
        assert [type(op).__name__ for op in seq] == ops
        crop = seq[0]
        assert crop.flags["align_corners"] is False and crop.flags["cropping_mode"] == "slice"
        assert tuple(crop._param_generator.scale) == tuple(cfg.crop_scale)
        jitter = seq[1]
        assert jitter.p == cfg.jitter_p
        assert (jitter.saturation, jitter.hue) == ((0.0, 0.0) if channels == 1 else tuple(cfg.jitter[2:]))
    images = synthetic(size=4, image_size=cfg.image_size, channels=channels).images
    v1, v2 = aug(images, seed=0)
    ours = BatchTwoViews(cfg, channels)(images, torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == ours[0].shape and v1.dtype == ours[0].dtype == torch.float32
    gray = torch.rand(3, 1, 8, 8)
    assert torch.equal(K.RandomGrayscale(p=1.0)(gray), gray)  # why keeping it on 1 channel changes nothing


@pytest.mark.parametrize("name", ["fmnist", "rgb32"])
def test_distributions_match_torchvision(name):
    """ours and kornia (both crop modes) against torchvision's per-image pipeline on 256 images.

    Every statistic with a standard error (crop box area fraction and log aspect ratio: mean and std; relative
    position; jitter factors: mean and std; blur sigma; pixel mean and spreads of the views; application rate of
    each op) must be within 5 standard errors of the difference: for two samples of one distribution |z| > 5 has
    probability 6e-7 per statistic. The same source images feed every pipeline, which only makes the output
    statistics' z smaller. Per-pixel mean maps: for one distribution mean |z| is at most 0.80 (half-normal) and
    the max over <= 3072 pixels about 3.6; torchvision's uint8 rounding after each op (which ours, kornia and
    torchvision's own float path do not do) shifts the map a little (mean |z| ~1 at 2048 images, see
    docs/kornia.md), hence the bounds 1.5 and 6.
    """
    with kb.one_thread():  # the per-image reference dominates, and it runs on one thread anyway
        r = kb.main(["--check", "--settings", name, "--images", "256", "--batch", "256", "--threads", "1"])
    r = r[name]
    cfg, _ = kb.setting(name)
    others = ["torchvision (seed+1)", "torchvision (float)", "ours", "kornia", "kornia_resample"]
    assert set(r["z"]) == set(others)
    for pipeline in others:
        z = {s: v for s, v in r["z"][pipeline].items() if s != "pixel map"}
        assert len(z) >= 14
        bad = {s: round(v, 2) for s, v in z.items() if abs(v) >= 5}
        assert not bad, f"{pipeline}: {bad}"
        stats = r["stats"][pipeline]
        b, c = cfg.jitter[:2]
        lo_b, hi_b = stats["brightness factor range"]["value"]
        lo_c, hi_c = stats["contrast factor range"]["value"]
        assert 1 - b - 1e-6 <= lo_b < hi_b <= 1 + b + 1e-6 and 1 - c - 1e-6 <= lo_c < hi_c <= 1 + c + 1e-6
        if "blur sigma range" in stats:
            lo, hi = stats["blur sigma range"]["value"]
            assert cfg.blur_sigma[0] - 1e-6 <= lo < hi <= cfg.blur_sigma[1] + 1e-6
    for pipeline in ("ours", "kornia"):
        assert {"flip rate", "jitter rate"} <= set(r["z"][pipeline])  # the op rates were compared
    for pipeline in ("ours", "kornia", "kornia_resample"):
        m = r["z"][pipeline]["pixel map"]
        assert m["mean |z|"] < 1.5 and m["max |z|"] < 6, (pipeline, m)
    # the resampling alone, on the same boxes (upscaling: every crop is at most the image size)
    geo = r["crop_geometry"]
    assert geo["kornia"]["max |diff|"] < 1e-5  # slice mode: torchvision's resized_crop, to float rounding
    assert geo["ours"]["interior max |diff|"] < 1e-5 < 1e-3 < geo["ours"]["max |diff|"]  # roi_align's border
    assert geo["kornia_resample"]["interior max |diff|"] > 1e-2  # corner-aligned warp: another geometry
    assert all(r["replay"].values()), r["replay"]


def test_seeded_kornia_resumes_exactly_and_leaves_the_training_rng_alone(one_thread):
    """kornia has no generator argument (forward drops one silently); seeding torch's global RNG with
    view_seed(seed, epoch, batch, process) inside fork_rng gives exact resume, as our torch.Generator does."""
    cfg, channels = kb.setting("rgb32")
    images = synthetic(size=16, image_size=32, channels=3).images
    seeds = [view_seed(0, 1, b, 0) for b in range(4)]

    def training(with_views: bool) -> tuple[list, list]:
        """An epoch of 4 batches: the views, and the training's own global-RNG draws after each."""
        torch.manual_seed(123)
        aug = kb.KorniaTwoViews(cfg, channels)
        views, draws = [], []
        for s in seeds:
            if with_views:
                views.append(aug(images, seed=s))
            draws.append(torch.rand(3))
        return views, draws

    views, draws = training(with_views=True)
    _, draws_without = training(with_views=False)
    # the training's own random stream is the same with or without the augmentation calls
    assert all(torch.equal(a, b) for a, b in zip(draws, draws_without))
    assert not torch.equal(views[0][0], views[1][0])  # each batch its own views
    assert not torch.equal(views[0][0], views[0][1])  # and two different views

    # resumed at batch 2 in a new process: a fresh module and another global RNG state, same views
    torch.manual_seed(999)
    resumed = kb.KorniaTwoViews(cfg, channels)
    for b in (2, 3):
        again = resumed(images, seed=seeds[b])
        assert all(torch.equal(p, q) for p, q in zip(again, views[b]))

    # without the fork, kornia draws from (and advances) the global RNG: its views follow the training's
    # stream, so a resume would not reproduce them, and the training's stream would shift
    torch.manual_seed(5)
    plain = kb.KorniaTwoViews(cfg, channels)(images)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert not torch.equal(torch.rand(3), after)
    torch.manual_seed(6)
    assert not torch.equal(kb.KorniaTwoViews(cfg, channels)(images)[0], plain[0])

    # kornia 0.9 takes no generator (kornia issue #4427): an op accepts generator= and ignores it (two
    # generators, one draw), the container refuses it
    x = images.float() / 255
    jitter = K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)
    torch.manual_seed(7)
    a = jitter(x, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    b = jitter(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="generator"):
        kb.KorniaTwoViews(cfg, channels).views[0](x, generator=torch.Generator())

    # ours, for comparison: a torch.Generator, the global RNG untouched
    state = torch.get_rng_state()
    BatchTwoViews(cfg, channels)(images, torch.Generator().manual_seed(seeds[0]))
    assert torch.equal(state, torch.get_rng_state())
