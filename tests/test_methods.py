import pytest
import torch

from xmoco_zoo import create_method, list_methods
from xmoco_zoo.config import TrainConfig
from xmoco_zoo.optim import create_optimizer
from xmoco_zoo.registry import method_defaults

BACKBONES = {
    "test_resnet": {},
    "test_vit": {"img_size": 32, "patch_size": 8},
}


def _views(n=8, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g), torch.randn(n, c, size, size, generator=g)


def _small(name):
    return (
        dict(queue_size=64, bn_splits=4)
        if method_defaults(name)["method"]["base"] == "mocov2"
        else dict(hidden_dim=64, pred_hidden_dim=64)
    )


def test_registry_lists_methods_with_defaults():
    assert {"mocov2", "mocov3"} <= set(list_methods())
    for name in list_methods():
        d = method_defaults(name)
        assert d["method"]["name"] == name and "aug" in d and "train" in d
    with pytest.raises(ValueError, match="did you mean 'mocov2'"):
        create_method("mocov22", "test_resnet")
    with pytest.raises(TypeError, match="did you mean 'queue_size'"):
        create_method("mocov2", "test_resnet", queue_sise=10)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("name", list_methods())
def test_every_method_runs_forward_backward(name, backbone):
    torch.manual_seed(0)
    model = create_method(name, backbone, BACKBONES[backbone], **_small(name))
    x1, x2 = _views()
    out = model(x1, x2, m=0.99)
    assert "loss" in out and out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert all(k == "loss" or not k.startswith("loss") or torch.isfinite(v) for k, v in out.items())
    out["loss"].backward()
    online = [p for n, p in model.named_parameters() if p.requires_grad]
    assert online and all(p.grad is not None for p in online if p.ndim > 0), (
        "every online parameter gets a gradient"
    )
    momentum = [p for n, p in model.named_parameters() if ".momentum." in f".{n}"]
    assert momentum and all(p.grad is None and not p.requires_grad for p in momentum)
    assert model.backbone(x1).shape[1] == model.backbone.num_features


@pytest.mark.parametrize("name", list_methods())
def test_optimizer_holds_no_momentum_parameter(name):
    model = create_method(name, "test_resnet", **_small(name))
    opt = create_optimizer(model, TrainConfig(**method_defaults(name)["train"]), lr=0.1)
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    momentum_ids = {id(p) for p in model.encoder.momentum.parameters()}
    assert held and not held & momentum_ids
    assert held == {id(p) for p in model.parameters() if p.requires_grad}


def _is_base_queue(key):
    """The base's queue buffers (``queue.*``, or ``base.queue.*`` under a regularizer)."""
    return key.removeprefix("base.").startswith("queue.")


def _fixed_queue_loss(model, x1, x2):
    """Loss on a fixed batch against a fixed queue (the queue is put back after the forward)."""
    saved = {k: v.clone() for k, v in model.state_dict().items() if _is_base_queue(k) or ".momentum." in k}
    torch.manual_seed(123)
    with torch.no_grad():
        loss = model(x1, x2, m=1.0)["loss"].item()
    model.load_state_dict({**model.state_dict(), **saved})
    return loss


@pytest.mark.parametrize("name", list_methods())
def test_twenty_steps_on_a_fixed_batch_lower_the_loss(name):
    torch.manual_seed(0)
    model = create_method(name, "test_resnet", **_small(name))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    x1, x2 = _views(16)
    before = _fixed_queue_loss(model, x1, x2)
    for _ in range(20):
        snap = {k: v.clone() for k, v in model.state_dict().items() if _is_base_queue(k)}
        loss = model(x1, x2, m=0.99)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.load_state_dict({**model.state_dict(), **snap})  # same negatives every step
    after = _fixed_queue_loss(model, x1, x2)
    assert after < before - 0.05, (before, after)


def test_symmetric_mocov2_enqueues_both_views():
    model = create_method("mocov2", "test_resnet", queue_size=64, bn_splits=4, symmetric=True)
    x1, x2 = _views(8)
    model(x1, x2, 0.99)
    assert int(model.queue.ptr) == 16


def test_mocov2_over_its_hardest_negatives_and_the_option_elsewhere():
    """``negatives_topk``: the loss over each query's k hardest queue entries (a regularized MoCo v2's too), the
    whole queue's InfoNCE when k covers it, and a clear error on a base without a queue."""
    from xmoco_zoo.config import MethodConfig  # noqa: PLC0415
    from xmoco_zoo.errors import ConfigError  # noqa: PLC0415
    from xmoco_zoo.losses import hardest, info_nce_from_sims  # noqa: PLC0415
    from xmoco_zoo.registry import validate_method  # noqa: PLC0415

    x1, x2 = _views(8)
    losses = {}
    for topk in (None, 5, 64):
        torch.manual_seed(0)
        model = create_method("mocov2", "test_resnet", queue_size=64, bn_splits=4, negatives_topk=topk)
        model.update_momentum(0.99)
        emb = model.embed(x1, x2)
        losses[topk] = model.loss(emb)["loss_nce"]
        if topk == 5:
            q, k = emb.q[0].double(), emb.k[1].double()
            ref = info_nce_from_sims((q * k).sum(1), hardest(q @ emb.negatives.double().t(), 5), 0.2)
            torch.testing.assert_close(losses[topk].double(), ref, rtol=1e-5, atol=1e-6)
            losses[topk].backward()
            assert all(p.grad is not None for p in model.encoder.online.parameters() if p.ndim > 0)
    torch.testing.assert_close(losses[64], losses[None])
    assert losses[5] < losses[None], "fewer negatives, a smaller partition function"
    torch.manual_seed(0)
    co2 = create_method("co2", "test_resnet", queue_size=64, bn_splits=4, negatives_topk=5)
    assert torch.isfinite(co2(x1, x2, 0.99)["loss_nce"])
    with pytest.raises(ConfigError, match="negatives_topk=100 .*MoCo v3 has no queue"):
        validate_method(MethodConfig(base="mocov3", negatives_topk=100))
    with pytest.raises(ConfigError, match="negatives_topk=0"):
        validate_method(MethodConfig(negatives_topk=0))


def test_mocov3_vit_options_freeze_patch_projection_and_fix_position_embedding():
    model = create_method(
        "mocov3",
        "test_vit",
        dict(img_size=32, patch_size=8),
        hidden_dim=64,
        pred_hidden_dim=64,
        freeze_patch_embed=True,
        fixed_pos_embed=True,
        proj_layers=3,
        pred_last_bn=True,
    )
    b = model.backbone
    assert not b.patch_embed.proj.weight.requires_grad and not b.pos_embed.requires_grad
    assert torch.all(b.pos_embed[0, 0] == 0), "class token position is zero"
    opt = create_optimizer(model, TrainConfig(optimizer="adamw"), lr=1e-3)
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(b.patch_embed.proj.weight) not in held and id(b.pos_embed) not in held
    x1, x2 = _views(8)
    model(x1, x2, 0.99)["loss"].backward()
    assert b.patch_embed.proj.weight.grad is None


def test_split_bn_is_used_in_one_process_and_keys_come_back_in_order():
    from xmoco_zoo.momentum import SplitBatchNorm2d

    model = create_method("mocov2", "test_resnet", queue_size=64, bn_splits=4)
    assert any(isinstance(m, SplitBatchNorm2d) for m in model.modules())
    model.eval()  # eval BN: keys must not depend on the batch order
    x, _ = _views(8)
    with torch.no_grad():
        k = model.keys(x)[1]
        ref = torch.nn.functional.normalize(model.encoder.momentum(x), dim=1)
    torch.testing.assert_close(k, ref)


@pytest.mark.parametrize("name", list_methods())
def test_losses_run_in_float32_under_autocast(name):
    model = create_method(name, "test_resnet", **_small(name))
    x1, x2 = _views(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x1, x2, m=0.99)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()


def test_sync_bn_conversion_keeps_the_momentum_copy_frozen():
    from xmoco_zoo.distributed import AllReduceBatchNorm, convert_sync_batchnorm

    model = create_method("mocov3", "test_resnet", hidden_dim=32, pred_hidden_dim=32)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    convert_sync_batchnorm(model, torch.device("cpu"))
    assert any(isinstance(m, AllReduceBatchNorm) for m in model.encoder.momentum.modules())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable


def test_sincos_position_embedding_against_a_per_element_loop():
    """Each patch (row r, column c) gets [sin(c·f_i)…, cos(c·f_i)…, sin(r·f_i)…, cos(r·f_i)…], f_i =
    10000^(−i/(dim/4)); the class token gets zeros. Written element by element from that definition."""
    import math

    from xmoco_zoo.backbone import sincos_2d_pos_embed

    h, w, dim = 3, 5, 16
    got = sincos_2d_pos_embed(h, w, dim, num_prefix=1)
    assert got.shape == (1, 1 + h * w, dim) and not got[0, 0].any()
    q = dim // 4
    for r in range(h):
        for c in range(w):
            row = got[0, 1 + r * w + c]
            for i in range(q):
                f = 1.0 / 10000.0 ** (i / q)
                want = [math.sin(c * f), math.cos(c * f), math.sin(r * f), math.cos(r * f)]
                for part, v in enumerate(want):
                    assert abs(row[part * q + i].item() - v) < 1e-6
