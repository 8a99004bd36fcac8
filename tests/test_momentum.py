import torch
from torch import nn

from xmoco_zoo.momentum import (
    KeyQueue,
    MomentumEncoder,
    SplitBatchNorm2d,
    convert_split_bn,
    split_bn_permutation,
    split_group_of,
)


def test_queue_wraps_around_without_divisibility():
    q = KeyQueue(size=10, dim=4)
    keys = [torch.full((3, 4), float(i)) for i in range(5)]  # 15 keys into 10 slots, 3 does not divide 10
    for k in keys:
        q.enqueue(k)
    assert int(q.ptr) == 15 % 10
    # slots 0..4 hold batches 3 (slots 9,0,1) and 4 (slots 2,3,4); slots 5..8 still hold batches 1 and 2
    expected = torch.tensor([3, 3, 4, 4, 4, 1, 2, 2, 2, 3], dtype=torch.float32)
    assert torch.equal(q.queue[:, 0], expected)


def test_queue_keeps_only_last_k_when_batch_exceeds_size():
    q = KeyQueue(size=4, dim=2)
    q.enqueue(torch.arange(12, dtype=torch.float32).view(6, 2))
    assert sorted(q.queue[:, 0].tolist()) == [4.0, 6.0, 8.0, 10.0]


def test_queue_round_trips_through_state_dict():
    q = KeyQueue(size=16, dim=8)
    q.enqueue(torch.randn(5, 8))
    sd = q.state_dict()
    assert set(sd) == {"queue", "ptr"}, "queue and ptr must be persistent buffers"
    q2 = KeyQueue(size=16, dim=8)
    q2.load_state_dict(sd)
    assert torch.equal(q2.queue, q.queue) and int(q2.ptr) == 5
    q.enqueue(torch.ones(3, 8))
    q2.enqueue(torch.ones(3, 8))
    assert torch.equal(q2.queue, q.queue)


def _enc():
    torch.manual_seed(0)
    return MomentumEncoder(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)))


def test_momentum_update_m1_keeps_copy_and_m0_copies_online():
    enc = _enc()
    with torch.no_grad():
        for p in enc.online.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in enc.momentum.parameters()]
    enc.update(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, enc.momentum.parameters()))
    enc.update(0.0)
    assert all(torch.equal(a, b) for a, b in zip(enc.online.parameters(), enc.momentum.parameters()))


def test_momentum_update_is_ema_and_keeps_own_buffers():
    enc = _enc()
    with torch.no_grad():
        for p in enc.online.parameters():
            p.add_(1.0)
    old = [p.clone() for p in enc.momentum.parameters()]
    enc.update(0.9)
    for o, q, k in zip(old, enc.online.parameters(), enc.momentum.parameters()):
        torch.testing.assert_close(k, 0.9 * o + 0.1 * q)
    assert not any(p.requires_grad for p in enc.momentum.parameters())
    enc.online(torch.randn(6, 4))  # moves the online BN running stats only
    assert not torch.equal(enc.online[1].running_mean, enc.momentum[1].running_mean)


def test_split_bn_permutation_puts_every_key_in_another_group():
    for n, s in [(32, 8), (24, 4), (16, 2), (40, 8)]:
        g = torch.Generator().manual_seed(n + s)
        perm = split_bn_permutation(n, s, g)
        assert sorted(perm.tolist()) == list(range(n)), "must be a permutation"
        key_pos = torch.argsort(perm)  # where each sample sits in the key batch
        q_group = split_group_of(torch.arange(n), n, s)
        k_group = split_group_of(key_pos, n, s)
        assert (q_group != k_group).all()
        if s > 2:  # groups are mixed: each key group draws from several query groups
            for j in range(s):
                in_key_group_j = perm[split_group_of(torch.arange(n), n, s) == j]
                assert len(set(q_group[in_key_group_j].tolist())) >= min(s - 1, 2)


def test_split_bn_matches_per_group_batchnorm():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    split = convert_split_bn(nn.Sequential(bn), 4)[0]
    assert isinstance(split, SplitBatchNorm2d)
    x = torch.randn(16, 3, 5, 5)
    out = split(x)
    groups = split_group_of(torch.arange(16), 16, 4)
    for gi in range(4):
        xs = x[groups == gi]
        mean = xs.mean((0, 2, 3), keepdim=True)
        var = xs.var((0, 2, 3), unbiased=False, keepdim=True)
        ref = (xs - mean) / torch.sqrt(var + split.eps) * split.weight.view(1, -1, 1, 1) + split.bias.view(
            1, -1, 1, 1
        )
        torch.testing.assert_close(out[groups == gi], ref, atol=1e-5, rtol=1e-5)
    split.eval()
    torch.testing.assert_close(
        split(x),
        nn.functional.batch_norm(
            x, split.running_mean, split.running_var, split.weight, split.bias, False, 0.0, split.eps
        ),
    )


def test_split_bn_channels_last_grads_and_running_stats_match_per_group_batchnorm():
    """Outputs, input/weight/bias gradients and running statistics equal S separate BatchNorms on the S
    groups, for a channels_last batch (the layout our methods train in)."""
    torch.manual_seed(0)
    n, s = 24, 3
    split = SplitBatchNorm2d(5, s).train()
    refs = [nn.BatchNorm2d(5).train() for _ in range(s)]
    with torch.no_grad():
        split.weight.uniform_(0.5, 1.5)
        split.bias.uniform_(-1, 1)
        split.running_mean.uniform_(-1, 1)
        for r in refs:
            r.load_state_dict(split.state_dict(), strict=False)
    x = torch.randn(n, 5, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    w = torch.randn(n, 5, 4, 4)
    (split(x) * w).sum().backward()
    groups = split_group_of(torch.arange(n), n, s)
    ref_out = torch.empty(n, 5, 4, 4)
    for g, r in enumerate(refs):
        ref_out[groups == g] = r(xr[groups == g])
    (ref_out * w).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(split.weight.grad, sum(r.weight.grad for r in refs), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(split.bias.grad, sum(r.bias.grad for r in refs), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(split.running_mean, torch.stack([r.running_mean for r in refs]).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack([r.running_var for r in refs]).mean(0))
