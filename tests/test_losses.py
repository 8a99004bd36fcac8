import math

import torch

from xmoco_zoo.losses import contrastive_loss, info_nce


def _unit(*shape, dtype=torch.float64):
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


def test_info_nce_matches_naive_loop():
    torch.manual_seed(0)
    q, k, queue, t = _unit(8, 16), _unit(8, 16), _unit(50, 16), 0.2
    ref = 0.0
    for i in range(8):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ z) / t) for z in queue)
        ref += -math.log(pos / (pos + neg))
    ref /= 8
    assert abs(info_nce(q, k, queue, t).item() - ref) < 1e-9


def test_contrastive_loss_matches_naive_loop_with_rank_offset():
    torch.manual_seed(1)
    n, world, t = 4, 3, 1.0
    k_all = _unit(n * world, 8)
    for rank in range(world):
        q = _unit(n, 8)
        ref = 0.0
        for i in range(n):
            logits = [float(q[i] @ k) / t for k in k_all]
            ref += -(logits[i + rank * n] - math.log(sum(math.exp(v) for v in logits)))
        ref = ref / n * 2 * t
        assert abs(contrastive_loss(q, k_all, t, offset=rank * n).item() - ref) < 1e-9


def test_losses_carry_gradient_to_queries_only():
    q = _unit(6, 8, dtype=torch.float32).requires_grad_()
    k, queue = _unit(6, 8, dtype=torch.float32), _unit(20, 8, dtype=torch.float32)
    info_nce(q, k, queue, 0.2).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    q2 = _unit(6, 8, dtype=torch.float32).requires_grad_()
    contrastive_loss(q2, k, 1.0).backward()
    assert q2.grad.abs().sum() > 0
