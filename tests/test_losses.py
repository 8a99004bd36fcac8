import math

import pytest
import torch

from xmoco_zoo.losses import contrastive_loss, hardest, info_nce, info_nce_from_sims


def _composed(q, k, queue, t):
    return info_nce_from_sims((q * k).sum(1), q @ queue.t(), t)


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
    assert abs(_composed(q, k, queue, t).item() - ref) < 1e-9
    assert abs(info_nce(q, k, queue, t)[0].item() - ref) < 1e-9


def test_one_buffer_info_nce_matches_the_composed_one_in_value_gradient_and_accuracy():
    torch.manual_seed(2)
    q0, k, queue = _unit(32, 16), _unit(32, 16), _unit(300, 16)
    k[:5] = q0[:5]  # some rows whose positive beats every negative
    for t in (0.07, 0.2, 1.0):
        qa, qb = q0.clone().requires_grad_(), q0.clone().requires_grad_()
        ref = _composed(qa, k, queue, t)
        (ref * 3).backward()  # an upstream gradient other than 1
        loss, acc = info_nce(qb, k, queue, t)
        (loss * 3).backward()
        torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(qb.grad, qa.grad, rtol=1e-10, atol=1e-12)
        l_pos, l_neg = (q0 * k).sum(1), q0 @ queue.t()
        assert acc.item() == (l_pos > l_neg.max(1).values).double().mean().item() and acc.item() >= 5 / 32


def test_one_buffer_info_nce_refuses_a_second_backward():
    q = _unit(4, 8).requires_grad_()
    loss, _ = info_nce(q, _unit(4, 8), _unit(10, 8), 0.2)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


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
        assert abs(contrastive_loss(q @ k_all.t(), t, offset=rank * n).item() - ref) < 1e-9


def test_losses_carry_gradient_to_queries_only():
    q = _unit(6, 8, dtype=torch.float32).requires_grad_()
    k, queue = _unit(6, 8, dtype=torch.float32), _unit(20, 8, dtype=torch.float32)
    _composed(q, k, queue, 0.2).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    q1 = q.detach().clone().requires_grad_()
    k1, queue1 = k.clone().requires_grad_(), queue.clone().requires_grad_()
    info_nce(q1, k1, queue1, 0.2)[0].backward()
    assert q1.grad.abs().sum() > 0 and k1.grad is None and queue1.grad is None
    q2 = _unit(6, 8, dtype=torch.float32).requires_grad_()
    contrastive_loss(q2 @ k.t(), 1.0).backward()
    assert q2.grad.abs().sum() > 0


def test_info_nce_over_the_hardest_negatives_matches_a_naive_loop_and_carries_gradient():
    """MoCo v2's ``method.negatives_topk``: each query's k most similar queue entries, by a per-row sort."""
    torch.manual_seed(3)
    q, k, queue, t, top = _unit(6, 16), _unit(6, 16), _unit(40, 16), 0.05, 7
    ref = 0.0
    for i in range(6):
        negs = sorted((float(q[i] @ z) for z in queue), reverse=True)[:top]
        pos = float(q[i] @ k[i]) / t
        ref += -(pos - math.log(math.exp(pos) + sum(math.exp(s / t) for s in negs)))
    ref /= 6
    qg = q.clone().requires_grad_()
    loss = info_nce_from_sims((qg * k).sum(1), hardest(qg @ queue.t(), top), t)
    assert abs(loss.item() - ref) < 1e-9
    loss.backward()
    assert qg.grad.abs().sum() > 0
    # k >= K keeps the whole queue: the plain InfoNCE
    whole = info_nce_from_sims((q * k).sum(1), hardest(q @ queue.t(), 40), t)
    assert abs(whole.item() - info_nce(q, k, queue, t)[0].item()) < 1e-12
