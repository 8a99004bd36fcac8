import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from xmoco_zoo import batch_augment as ba
from xmoco_zoo.augment import TwoViews, odd_kernel
from xmoco_zoo.batch_augment import BatchTwoViews
from xmoco_zoo.config import AugConfig


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=_gen(seed), dtype=torch.uint8)


def _float_images(n: int, c: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Random float images with some edge cases: exact 0/1 pixels, gray pixels (r = g = b), ties of max."""
    x = torch.rand(n, c, size, size, generator=_gen(seed))
    x[:, :, 0, :4] = 0.0
    x[:, :, 0, 4:8] = 1.0
    x[:, :, 1, :] = x[:, :1, 1, :]  # gray row
    if c == 3:
        x[:, 1, 2, :] = x[:, 0, 2, :]  # max tie between R and G
    return x


def _off(**kw) -> AugConfig:
    """A config with every random op off and the crop fixed to the whole (square) image."""
    base = dict(
        image_size=32,
        crop_scale=[1.0, 1.0],
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=[0.0, 0.0],
        solarize_p=[0.0, 0.0],
        flip_p=0.0,
    )
    return AugConfig(**{**base, **kw})


def _normalise(x: torch.Tensor, cfg: AugConfig) -> torch.Tensor:
    c = x.shape[1]
    mean = torch.tensor(cfg.mean if len(cfg.mean) == c else cfg.mean * c).view(1, c, 1, 1)
    std = torch.tensor(cfg.std if len(cfg.std) == c else cfg.std * c).view(1, c, 1, 1)
    return (x - mean) / std


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    x = images.float() / 255
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- the module


def test_rgb_default_shapes_dtype_determinism():
    cfg = AugConfig(image_size=32)  # MoCo v2 aug+ defaults
    aug = BatchTwoViews(cfg, 3)
    images = _images(6, 3, 40, 48)
    a1, a2 = aug(images, _gen(1))
    b1, b2 = aug(images, _gen(1))
    c1, c2 = aug(images, _gen(2))
    for t in (a1, a2):
        assert t.shape == (6, 3, 32, 32)
        assert t.dtype == torch.float32
        assert t.device == images.device
        assert t.is_contiguous()
        assert torch.isfinite(t).all()
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1) and not torch.equal(a2, c2)
    assert not torch.allclose(a1, a2)
    # every output is a normalised [0, 1] image
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    raw = a1 * std + mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_gray_fmnist_like_config():
    cfg = AugConfig(
        image_size=28,
        crop_scale=[0.3, 1.0],
        mean=[0.2860],
        std=[0.3530],
        jitter=[0.4, 0.4, 0.0, 0.0],
        blur_p=[0.0, 0.0],
    )
    aug = BatchTwoViews(cfg, 1)
    assert aug.grayscale_p == 0.0
    assert aug.jitter_ranges[2] is None and aug.jitter_ranges[3] is None
    images = _images(8, 1, 28, 28)
    v1, v2_ = aug(images, _gen(0))
    assert v1.shape == v2_.shape == (8, 1, 28, 28)
    assert v1.dtype == torch.float32
    w1, _ = aug(images, _gen(0))
    assert torch.equal(v1, w1)
    assert not torch.equal(v1, v2_)
    # the global RNG works too
    g1, g2 = aug(images)
    assert g1.shape == (8, 1, 28, 28) and g2.shape == (8, 1, 28, 28)


def test_bad_input_rejected():
    aug = BatchTwoViews(AugConfig(image_size=16), 3)
    with pytest.raises(TypeError):
        aug(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError):
        aug(_images(2, 1, 16, 16))
    with pytest.raises(ValueError):
        BatchTwoViews(AugConfig(), 2)


def test_flip_only_equals_flipped_resized_image():
    cfg = _off(flip_p=1.0)
    images = _images(5, 3, 24, 24)
    v1, v2_ = BatchTwoViews(cfg, 3)(images, _gen(0))
    expected = _normalise(_resized(images, 32).flip(-1), cfg)
    torch.testing.assert_close(v1, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(v2_, expected, atol=1e-5, rtol=0)


def test_per_view_probabilities():
    """blur_p and solarize_p are per view: view 0 always blurred and never solarized, view 1 the opposite."""
    cfg = _off(blur_p=[1.0, 0.0], solarize_p=[0.0, 1.0])
    images = _images(4, 3, 32, 32)
    v1, v2_ = BatchTwoViews(cfg, 3)(images, _gen(0))
    plain = _resized(images, 32)
    torch.testing.assert_close(v2_, _normalise(TF.solarize(plain, 0.5), cfg), atol=1e-5, rtol=0)
    # blurred: smoother than the plain image, each sample
    blurred = v1 * torch.tensor(cfg.std).view(1, 3, 1, 1) + torch.tensor(cfg.mean).view(1, 3, 1, 1)

    def tv(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))

    assert (tv(blurred) < 0.9 * tv(plain)).all()


def test_disabled_ops_do_no_compute(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("op should have been skipped")

    for name in ("_blur", "_solarize", "_grayscale", "_brightness", "_contrast", "_saturation", "_hue"):
        monkeypatch.setattr(ba, name, boom)
    images = _images(4, 3, 20, 20)
    BatchTwoViews(_off(flip_p=0.5, jitter=[0.0, 0.0, 0.0, 0.0], jitter_p=1.0), 3)(images, _gen(0))
    # blur enabled but no sample selected: no blur compute
    BatchTwoViews(_off(blur_p=[1e-12, 1e-12]), 3)(images, _gen(0))


def test_jitter_applies_to_selected_samples_only():
    cfg = _off(jitter=[0.4, 0.4, 0.4, 0.1], jitter_p=0.5)
    images = _images(200, 3, 16, 16)
    v1, _ = BatchTwoViews(cfg, 3)(images, _gen(3))
    plain = _normalise(_resized(images, 32), cfg)
    same = (v1 - plain).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert 0.35 < same.float().mean() < 0.65
    assert ((v1 - plain).abs().amax(dim=(1, 2, 3))[~same] > 1e-3).all()


def test_distribution_close_to_per_image_pipeline():
    """Gross check of the whole pipeline against augment.py's per-image TwoViews on one smooth image (raw
    [0, 1] units): per-channel mean, within-image spread and across-sample spread of the views. The
    tolerances are ~2.5x the largest difference seen over 5 seeds at n = 400 (it catches e.g. a missing
    solarize, grayscale or jitter); the per-op tests are the precise checks."""
    cfg = AugConfig(image_size=32, solarize_p=[0.2, 0.2], mean=[0.0], std=[1.0])
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    img = (torch.stack([xx, yy, (xx - 0.5) ** 2 + (yy - 0.5) ** 2]) * 255).to(torch.uint8)
    n = 400
    torch.manual_seed(0)
    per_image = TwoViews(cfg, 3)
    ref = torch.stack([per_image(img)[0] for _ in range(n)])
    ours, _ = BatchTwoViews(cfg, 3)(img.expand(n, -1, -1, -1).contiguous(), _gen(0))
    torch.testing.assert_close(ours.mean(dim=(0, 2, 3)), ref.mean(dim=(0, 2, 3)), atol=0.03, rtol=0)
    torch.testing.assert_close(ours.std(dim=(2, 3)).mean(0), ref.std(dim=(2, 3)).mean(0), atol=0.015, rtol=0)
    torch.testing.assert_close(ours.mean(dim=(2, 3)).std(0), ref.mean(dim=(2, 3)).std(0), atol=0.025, rtol=0)


@pytest.mark.parametrize(
    ("kw", "op"),
    [
        (dict(grayscale_p=0.3), ba._grayscale),
        (dict(solarize_p=[0.3, 0.3]), ba._solarize),
        (dict(flip_p=0.3), lambda x: x.flip(-1)),
    ],
)
def test_random_op_applied_with_its_probability(kw, op):
    """Each sample is either unchanged or exactly op(sample), op applied to ~p of the samples."""
    cfg = _off(**kw)
    images = _images(400, 3, 16, 16)
    v1, v2_ = BatchTwoViews(cfg, 3)(images, _gen(5))
    plain = _resized(images, 32)
    done = _normalise(op(plain), cfg)
    plain = _normalise(plain, cfg)
    for v in (v1, v2_):
        unchanged = (v - plain).abs().amax(dim=(1, 2, 3)) < 1e-5
        applied = (v - done).abs().amax(dim=(1, 2, 3)) < 1e-5
        assert (unchanged | applied).all()
        assert 0.22 < applied.float().mean() < 0.38
    assert not torch.equal(v1, v2_)  # independent draws per view


# ---------------------------------------------------------------- ops against torchvision, per sample


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("op", "ref", "factors"),
    [
        (ba._brightness, TF.adjust_brightness, [0.0, 0.6, 1.0, 1.4]),
        (ba._contrast, TF.adjust_contrast, [0.0, 0.6, 1.0, 1.4]),
        (ba._saturation, TF.adjust_saturation, [0.0, 0.6, 1.0, 1.4]),
        (ba._hue, TF.adjust_hue, [-0.5, -0.1, 0.0, 0.07, 0.33, 0.5]),
    ],
)
def test_colour_op_matches_torchvision(channels, op, ref, factors):
    x = _float_images(len(factors), channels)
    f = torch.tensor(factors)
    out = op(x, f)
    expected = torch.stack([ref(x[i], float(f[i])) for i in range(len(factors))])
    atol = 1e-4 if op is ba._hue else 1e-5
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)


def test_grayscale_and_solarize_match_torchvision():
    x = _float_images(3, 3)
    torch.testing.assert_close(
        ba._grayscale(x), TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-6, rtol=0
    )
    x[0, 0, 0, 0] = 0.5  # on the threshold: solarized (>=)
    torch.testing.assert_close(ba._solarize(x), TF.solarize(x, 0.5), atol=0, rtol=0)


@pytest.mark.parametrize(("size", "frac"), [(32, 0.1), (32, 0.7), (224, 0.1)])
@pytest.mark.parametrize("channels", [1, 3])
def test_blur_matches_torchvision(size, frac, channels):
    k = odd_kernel(frac * size)
    sigmas = torch.tensor([0.1, 0.7, 2.0])
    x = _float_images(3, channels, size)
    out = ba._blur(x, sigmas, k)
    expected = torch.stack(
        [TF.gaussian_blur(x[i], [k, k], [float(s), float(s)]) for i, s in enumerate(sigmas)]
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_blur_kernel_size_rule():
    cfg = AugConfig(image_size=224)
    assert BatchTwoViews(cfg, 3).blur_kernel == odd_kernel(0.1 * 224) == 23


# ---------------------------------------------------------------- crop


def test_whole_image_upscale_is_bilinear_resize():
    x = _float_images(3, 3, 20)
    boxes = torch.tensor([[0, 0, 20, 20]] * 3)
    out = ba._resized_crop(x, boxes, 32)
    expected = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    # torchvision's antialiased resize reduces to the same bilinear when upscaling
    tv = TF.resize(x, [32, 32], antialias=True)
    torch.testing.assert_close(out, tv, atol=1e-5, rtol=0)


def test_whole_image_downscale_is_antialiased():
    x = _float_images(2, 3, 64)
    out = ba._resized_crop(x, torch.tensor([[0, 0, 64, 64]] * 2), 32)
    # factor 2: the mean of each 2x2 block (adaptive sampling ratio 2)
    torch.testing.assert_close(out, F.avg_pool2d(x, 2), atol=1e-5, rtol=0)
    # factor 64/27: fine stripes (period 2 px) are averaged out to grey, not aliased as without antialiasing
    stripes = torch.zeros(1, 3, 64, 64)
    stripes[..., ::2] = 1.0
    box = torch.tensor([[0, 0, 64, 64]])
    out = ba._resized_crop(stripes, box, 27)
    no_aa = F.interpolate(stripes, size=(27, 27), mode="bilinear", align_corners=False)
    assert out.std() < 0.1 < 0.25 < no_aa.std()
    assert (out.mean() - 0.5).abs() < 0.02
    # on a smooth image, close to torchvision's antialiased bilinear resize (triangle filter instead of box)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    smooth = torch.stack([xx, yy, torch.sin(6 * xx) * 0.5 + 0.5])[None]
    out = ba._resized_crop(smooth, box, 27)
    torch.testing.assert_close(out, TF.resize(smooth, [27, 27], antialias=True), atol=0.01, rtol=0)


def test_interior_crop_matches_torchvision_resized_crop_inside_border():
    x = _float_images(2, 3, 48)
    boxes = torch.tensor([[5, 9, 16, 20], [0, 30, 24, 18]])  # (top, left, height, width)
    out = ba._resized_crop(x, boxes, 32)
    expected = torch.stack(
        [TF.resized_crop(x[i], *boxes[i].tolist(), size=[32, 32], antialias=True) for i in range(2)]
    )
    # roi_align reads pixels just outside the box for the outermost output pixels only
    torch.testing.assert_close(out[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("height", "width", "scale"), [(64, 64, (0.2, 1.0)), (50, 80, (0.08, 1.0))])
def test_box_sampler_statistics(height, width, scale):
    n = 4000
    boxes = ba._sample_boxes(n, height, width, scale, generator=_gen(0))
    top, left, h, w = boxes.unbind(1)
    assert (h > 0).all() and (w > 0).all()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    frac = (h * w).double() / (height * width)
    ratio = w.double() / h.double()
    # within the sampled ranges, up to the rounding of w and h to whole pixels
    slack = 1.0 / min(h.min(), w.min()).item() + 1e-9
    assert (frac >= scale[0] * (1 - slack) ** 2).all() and (frac <= scale[1]).all()
    assert (ratio >= 0.75 * (1 - slack) / (1 + slack)).all() and (
        ratio <= 4 / 3 * (1 + slack) / (1 - slack)
    ).all()
    # same distribution as torchvision's RandomResizedCrop.make_params
    torch.manual_seed(0)
    rrc = v2.RandomResizedCrop(32, scale=scale)
    img = torch.zeros(1, height, width)
    ref = torch.tensor(
        [list(rrc.make_params([img]).values()) for _ in range(2000)]
    )  # top, left, height, width
    ref_frac = (ref[:, 2] * ref[:, 3]).double() / (height * width)
    ref_ratio = (ref[:, 3] / ref[:, 2]).double()
    assert abs(frac.mean() - ref_frac.mean()) < 0.02
    assert abs(frac.std() - ref_frac.std()) < 0.02
    assert abs(ratio.log().mean() - ref_ratio.log().mean()) < 0.02
    # positions: uniform over the valid range
    rel_top = top.double() / (height - h).clamp(min=1)
    assert abs(rel_top[h < height].mean() - 0.5) < 0.03


def test_box_sampler_fallback_is_centre_crop():
    # no try fits a 10 x 100 image at area >= 0.9: torchvision's fallback, a centre crop of ratio 4/3
    boxes = ba._sample_boxes(50, 10, 100, (0.9, 1.0), generator=_gen(0))
    w = int(round(10 * 4 / 3))
    assert (boxes == torch.tensor([0, (100 - w) // 2, 10, w])).all()
    # square image, scale (1, 1): always the whole image
    boxes = ba._sample_boxes(200, 24, 24, (1.0, 1.0), generator=_gen(0))
    assert (boxes == torch.tensor([0, 0, 24, 24])).all()


# ---------------------------------------------------------------- affine and erasing (off by default)


@pytest.mark.parametrize("channels", [1, 3])
def test_affine_matches_torchvision_per_sample(channels):
    """Our batched warp equals torchvision's affine (bilinear, fill 0) for each sample's own parameters."""
    x = _float_images(4, channels, size=20)
    params = [(0.0, 0, 0, 1.0), (17.0, 2, -3, 1.1), (-30.0, -1, 4, 0.85), (90.0, 0, 1, 1.0)]
    angle, tx, ty, scale = (torch.tensor(v, dtype=torch.float32) for v in zip(*params))
    out = ba._affine(x, ba._inverse_affine(angle, tx, ty, scale))
    expected = torch.stack(
        [
            TF.affine(x[i], a, [t, u], s, [0.0, 0.0], v2.InterpolationMode.BILINEAR, fill=0)
            for i, (a, t, u, s) in enumerate(params)
        ]
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0], x[0], atol=1e-6, rtol=0)  # the identity leaves the image as is


def test_affine_parameters_are_drawn_like_random_affine():
    n, size = 4000, 28
    theta = ba._affine_thetas(n, size, size, 20.0, (0.1, 0.05), (0.8, 1.2), _gen(0), torch.device("cpu"))
    m = theta.double()
    scale = 1.0 / torch.sqrt(m[:, 0, 0] ** 2 + m[:, 0, 1] ** 2)
    angle = torch.rad2deg(torch.atan2(m[:, 0, 1], m[:, 0, 0]))
    # undo the rotation/scale part to recover the translation: m[:, :, 2] = -R/s @ (tx, ty)
    rs = m[:, :, :2]
    t = -torch.linalg.solve(rs, m[:, :, 2:]).squeeze(-1)
    assert angle.abs().max() <= 20.0 + 1e-4 and abs(angle.mean()) < 1.0 and angle.std() > 10.0
    assert scale.min() >= 0.8 - 1e-5 and scale.max() <= 1.2 + 1e-5 and abs(scale.mean() - 1.0) < 0.01
    # whole pixels, |tx| <= round(0.1 * 28) = 3 and |ty| <= round(0.05 * 28) = 1, every value reached
    torch.testing.assert_close(t, t.round(), atol=1e-4, rtol=0)
    assert set(t[:, 0].round().long().tolist()) == {-3, -2, -1, 0, 1, 2, 3}
    assert set(t[:, 1].round().long().tolist()) == {-1, 0, 1}


def test_affine_and_erasing_in_both_pipelines_with_their_probabilities():
    cfg = _off(image_size=28, affine_p=0.5, affine_degrees=15.0, affine_translate=[0.1, 0.1], erase_p=0.4)
    cfg.mean, cfg.std = [0.3], [0.35]
    images = _images(600, 1, 28, 28)
    v1, v2_ = BatchTwoViews(cfg, 1)(images, _gen(3))
    plain = _normalise(_resized(images, 28), cfg)
    for v in (v1, v2_):
        changed = (v - plain).abs().amax(dim=(1, 2, 3)) > 1e-4
        # changed unless neither op applied: 1 - 0.5 * 0.6 = 0.7 (an affine draw can be the identity, rarely)
        assert 0.62 < changed.float().mean() < 0.78
    # the per-image pipeline has the same ops at the same places
    ops = [type(t).__name__ for t in TwoViews(cfg, 1).t1.transforms]
    assert ops.index("RandomApply") == 1 and ops[-1] == "RandomErasing"
    assert type(TwoViews(cfg, 1).t1.transforms[1].transforms[0]).__name__ == "RandomAffine"
    out = TwoViews(cfg, 1)(images[0])
    assert out[0].shape == (1, 28, 28)


def test_erase_boxes_are_drawn_like_random_erasing():
    n, height, width = 4000, 28, 28
    scale, ratio = (0.02, 0.33), (0.3, 3.3)
    boxes, found = ba._sample_erase_boxes(n, height, width, scale, ratio, _gen(0), torch.device("cpu"))
    top, left, h, w = boxes[found].unbind(1)
    assert (
        (h < height).all() and (w < width).all() and (top + h <= height).all() and (left + w <= width).all()
    )
    torch.manual_seed(0)
    re = v2.RandomErasing(p=1.0, scale=scale, ratio=ratio)
    img = torch.zeros(1, height, width)
    ref = [re.make_params([img]) for _ in range(2000)]
    ref_found = torch.tensor([r["v"] is not None for r in ref])
    ref_hw = torch.tensor([[r["h"], r["w"]] for r in ref if r["v"] is not None], dtype=torch.float64)
    frac, ref_frac = (h * w).double() / (height * width), ref_hw.prod(1) / (height * width)
    assert abs(found.double().mean() - ref_found.double().mean()) < 0.02
    assert abs(frac.mean() - ref_frac.mean()) < 0.01 and abs(frac.std() - ref_frac.std()) < 0.01
    log_hw = (h.double() / w.double()).log()
    assert abs(log_hw.mean() - (ref_hw[:, 0] / ref_hw[:, 1]).log().mean()) < 0.05
    # the box of each selected image, and nothing else, is set to 0
    x = torch.ones(3, 2, height, width)
    boxes = torch.tensor([[2, 3, 5, 7], [0, 0, 27, 27], [1, 1, 4, 4]])
    out = ba._erase(x, boxes, torch.tensor([True, True, False]))
    assert out[0, :, 2:7, 3:10].eq(0).all() and out[0].eq(0).sum() == 2 * 5 * 7
    assert out[1].eq(0).sum() == 2 * 27 * 27 and out[2].eq(1).all()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("aug.affine_scale=[1.2,0.8]", "aug.affine_scale"),
        ("aug.affine_translate=[0.1,1.5]", "translate"),
        ("aug.erase_scale=[0.02,1.5]", "aug.erase_scale"),
    ],
)
def test_affine_and_erasing_settings_are_checked(override, match):
    from xmoco_zoo.config import ConfigError
    from xmoco_zoo.experiment import load_config

    with pytest.raises(ConfigError, match=match):
        load_config("recipes/configs/mocov2_fmnist.yaml", [override])
