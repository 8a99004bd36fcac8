"""Our MoCo v2 and MoCo v3 against naive references written from the published algorithms.

The references below are written from the methods as published: MoCo, He et al., arXiv 1911.05722 (Algorithm 1,
Eq. 1) with MoCo v2's MLP head (Chen et al., arXiv 2003.04297), MoCo v3, Chen, Xie, He, arXiv 2104.02057
(Algorithm 1), and the "Base 1: MoCo v2" / "Base 2: MoCo v3" sections of the project's METHODS.md. They check our
implementation against the method as published. No code of the official repositories (facebookresearch/moco and
facebookresearch/moco-v3, licensed CC-BY-NC 4.0) is copied here: the references are plain functions, slow on
purpose (a loop per anchor for each loss, a loop per key for the queue, an explicit moving average), and share
with our code only the timm backbone and the initial weights.

Both sides get the same initial weights, queue and inputs, run in float64, and take a few SGD steps; the losses,
the top-1 accuracy (MoCo v2), every online gradient, the momentum encoder (parameters and BN statistics) and the
queue must agree. Facts of the algorithms that the comparison relies on:

- Algorithm 1 moves the key encoder (θk ← m·θk + (1−m)·θq) right after the SGD step. Doing it at the start of the
  next step, before any key is computed, gives the same key encoder at every step: at the first step θk = θq, so
  the update changes nothing. Where it sits among the online forward passes does not matter either: a forward
  pass changes no parameter, and only parameters are averaged (the momentum copy keeps its own BN statistics).
- The negatives of a step are the queue as it was before that step's keys enter it; the keys then enter in batch
  order, the oldest entries leave first, and the write position wraps around (the third step here).
- Shuffle BN in one process is a permutation of the key batch before the key encoder and its inverse after: with
  plain BatchNorm over the whole batch it changes the keys only by the order of summation. The reference permutes,
  ours (``shuffle_bn=False``) does not.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import pytest
import torch
from torch import nn

from xmoco_zoo import create_method

STEPS = 3  # MoCo v2: a queue of 2 batches, so the third step's keys wrap around
BATCH = 8
TOL = dict(rtol=1e-9, atol=1e-11)  # float64: only the order of summation differs


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: these tensors are tiny, and on a busy machine a second thread's barriers cost 30x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- naive references, written from the papers and METHODS.md ----------------------------------------------


def naive_v2_projector(widths: tuple[int, int, int]) -> nn.Sequential:
    """METHODS.md, MoCo v2: features → hidden → embedding, Linear-ReLU-Linear, no BN."""
    d_in, d_hid, d_out = widths
    return nn.Sequential(nn.Linear(d_in, d_hid), nn.ReLU(), nn.Linear(d_hid, d_out))


def naive_v3_mlp(widths: list[int], bn_at_end: bool) -> nn.Sequential:
    """METHODS.md, MoCo v3: a block Linear(no bias)-BN-ReLU for each hidden width, then Linear(no bias) to the
    last width, then BN(affine=False) where marked. ``widths`` = [input, hidden..., output]."""
    *blocks, (d_in, d_out) = zip(widths, widths[1:])
    mods = [mod for a, b in blocks for mod in (nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU())]
    mods.append(nn.Linear(d_in, d_out, bias=False))
    if bn_at_end:
        mods.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*mods)


@torch.no_grad()
def naive_ema_(followers: Iterable[torch.Tensor], leaders: Iterable[torch.Tensor], m: float) -> None:
    """θk ← m·θk + (1−m)·θq, one parameter at a time."""
    followers, leaders = list(followers), list(leaders)
    assert len(followers) == len(leaders)
    for theta_k, theta_q in zip(followers, leaders):
        theta_k.copy_(m * theta_k + (1.0 - m) * theta_q)


def naive_unit(v: torch.Tensor) -> torch.Tensor:
    """Each row divided by its Euclidean length."""
    return v / v.pow(2).sum(dim=1, keepdim=True).sqrt()


def naive_info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, t: float
) -> tuple[torch.Tensor, float]:
    """MoCo's Eq. 1 averaged over the anchors, and the share of anchors whose positive beats every negative:
    for each i, −log(exp(q_i·k_i/t) / (exp(q_i·k_i/t) + Σ_j exp(q_i·z_j/t))) with z_j the rows of ``negatives``."""
    terms, hits = [], 0
    for i in range(q.shape[0]):
        pos = torch.dot(q[i], k[i]) / t
        negs = [torch.dot(q[i], z) / t for z in negatives]
        terms.append(-torch.log(torch.exp(pos) / (torch.exp(pos) + sum(torch.exp(s) for s in negs))))
        hits += all(bool(pos > s) for s in negs)
    return sum(terms) / len(terms), hits / len(terms)


def naive_ctr(q: torch.Tensor, k: torch.Tensor, t: float) -> torch.Tensor:
    """MoCo v3's ctr(q, k): for each i, the cross-entropy of row q_i·k_jᵀ/t with target i, averaged, times 2t."""
    n = q.shape[0]
    terms = []
    for i in range(n):
        s = [torch.dot(q[i], k[j]) / t for j in range(n)]
        terms.append(-torch.log(torch.exp(s[i]) / sum(torch.exp(v) for v in s)))
    return 2 * t * sum(terms) / n


@torch.no_grad()
def naive_push(bank: torch.Tensor, write_at: int, keys: torch.Tensor) -> int:
    """The FIFO: each key, in order, overwrites the oldest row of ``bank`` (K, D); returns the next position."""
    for key in keys:
        bank[write_at] = key
        write_at = (write_at + 1) % bank.shape[0]
    return write_at


@torch.no_grad()
def naive_keys(f_k: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Unit keys of ``x``, computed on the batch in a random order and put back in the order of ``x``."""
    order = torch.randperm(x.shape[0], generator=gen)
    shuffled = naive_unit(f_k(x[order]))
    keys = torch.empty_like(shuffled)
    keys[order] = shuffled
    return keys


# ---- the comparisons -------------------------------------------------------------------------------------------


def _loaded(module: nn.Module, ours: nn.Module) -> nn.Module:
    """``module`` in float64 holding ``ours``' weights; strict, so a layer or BN missing on either side fails."""
    module.double().load_state_dict(ours.state_dict(), strict=True)
    return module


def _views(step: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(2, BATCH, 3, size, size, generator=g, dtype=torch.float64)
    return x[0], x[1]


def _sgd(params: list[nn.Parameter]) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=1e-4)


def _assert_same_module(ours: nn.Module, ref: nn.Module, what: str) -> None:
    """Same parameters and buffers, in the same order (the moving average pairs parameters in order)."""
    a, b = ours.state_dict(), ref.state_dict()
    assert len(a) == len(b), what
    for (name_a, va), vb in zip(a.items(), b.values()):
        torch.testing.assert_close(va, vb, **TOL, msg=lambda s, n=name_a: f"{what} {n}: {s}")


def _assert_same_grads(ours: list[nn.Parameter], ref: list[nn.Parameter], what: str) -> None:
    """The gradients of corresponding parameters (in module order) agree."""
    assert len(ours) == len(ref) > 0, what
    for i, (pa, pb) in enumerate(zip(ours, ref)):
        assert pa.grad is not None and pb.grad is not None, f"{what}: parameter {i} got no gradient"
        torch.testing.assert_close(pa.grad, pb.grad, **TOL, msg=lambda s, i=i: f"{what} grad {i}: {s}")


def test_mocov2_matches_reference() -> None:
    torch.manual_seed(0)
    ours = create_method(
        "mocov2", "test_resnet", dim=16, queue_size=2 * BATCH, shuffle_bn=False, symmetric=False
    ).double()
    t, m = ours.cfg.temperature, 0.99
    online = ours.encoder.online
    widths = (online.backbone.num_features, online.head[0].out_features, ours.cfg.dim)
    f_q = nn.Sequential(copy.deepcopy(online.backbone), _loaded(naive_v2_projector(widths), online.head))
    f_k = copy.deepcopy(f_q).requires_grad_(False)  # Algorithm 1: f_k starts as f_q
    bank, write_at = ours.queue.queue.clone(), 0  # the same random unit rows, oldest first
    gen = torch.Generator().manual_seed(1)
    _assert_same_module(ours.encoder.momentum, f_k, "initial momentum encoder")

    opt_ours = _sgd([p for p in ours.parameters() if p.requires_grad])
    opt_ref = _sgd(list(f_q.parameters()))
    for step in range(STEPS):
        x1, x2 = _views(step)
        out = ours(x1, x2, m)

        naive_ema_(f_k.parameters(), f_q.parameters(), m)
        q = naive_unit(f_q(x1))
        k = naive_keys(f_k, x2, gen)
        loss, top1 = naive_info_nce(q, k, bank, t)
        torch.testing.assert_close(out["loss"], loss, **TOL)
        assert float(out["acc1"]) == pytest.approx(top1)

        for opt in (opt_ours, opt_ref):
            opt.zero_grad()
        out["loss"].backward()
        loss.backward()
        _assert_same_grads(list(online.parameters()), list(f_q.parameters()), f"step {step}")
        opt_ours.step()
        opt_ref.step()
        write_at = naive_push(bank, write_at, k)

        _assert_same_module(online, f_q, f"step {step} online encoder")
        _assert_same_module(ours.encoder.momentum, f_k, f"step {step} momentum encoder")
        torch.testing.assert_close(ours.queue.queue, bank, **TOL)
        assert int(ours.queue.ptr) == write_at
    assert write_at == BATCH  # 3 batches into a queue of 2: it wrapped around once


@pytest.mark.parametrize(
    "backbone, kwargs, proj_layers, pred_last_bn, temperature",
    [
        ("test_resnet", {}, 2, False, 1.0),  # MoCo v3's ResNet heads and T
        ("test_vit", {"img_size": 32, "patch_size": 8}, 3, True, 0.2),  # its ViT heads and T
    ],
)
def test_mocov3_matches_reference(
    backbone: str, kwargs: dict, proj_layers: int, pred_last_bn: bool, temperature: float
) -> None:
    torch.manual_seed(0)
    dim, hidden = 16, 32
    ours = create_method(
        "mocov3",
        backbone,
        kwargs,
        dim=dim,
        hidden_dim=hidden,
        pred_hidden_dim=hidden,
        proj_layers=proj_layers,
        pred_last_bn=pred_last_bn,
        temperature=temperature,
    ).double()
    t = ours.cfg.temperature
    online = ours.encoder.online
    proj_widths = [online.backbone.num_features, *[hidden] * (proj_layers - 1), dim]
    projector = _loaded(naive_v3_mlp(proj_widths, bn_at_end=True), online.head)
    predictor = _loaded(naive_v3_mlp([dim, hidden, dim], bn_at_end=pred_last_bn), ours.predictor)
    f_q = nn.Sequential(copy.deepcopy(online.backbone), projector)  # the predictor is on the query side only
    f_k = copy.deepcopy(f_q).requires_grad_(False)
    _assert_same_module(ours.encoder.momentum, f_k, "initial momentum encoder")

    ours_params = [*online.parameters(), *ours.predictor.parameters()]
    ref_params = [*f_q.parameters(), *predictor.parameters()]
    opt_ours = _sgd([p for p in ours.parameters() if p.requires_grad])
    opt_ref = _sgd([p for p in ref_params if p.requires_grad])
    for step, m in enumerate([0.99, 0.995, 0.999][:STEPS]):  # m changes per step, as MoCo v3's schedule does
        x1, x2 = _views(step)
        out = ours(x1, x2, m)

        q1, q2 = (naive_unit(predictor(f_q(x))) for x in (x1, x2))
        naive_ema_(f_k.parameters(), f_q.parameters(), m)
        with torch.no_grad():
            k1, k2 = (naive_unit(f_k(x)) for x in (x1, x2))
        loss = naive_ctr(q1, k2, t) + naive_ctr(q2, k1, t)
        torch.testing.assert_close(out["loss"], loss, **TOL)

        for opt in (opt_ours, opt_ref):
            opt.zero_grad()
        out["loss"].backward()
        loss.backward()
        _assert_same_grads(ours_params, ref_params, f"step {step}")
        opt_ours.step()
        opt_ref.step()

        _assert_same_module(online, f_q, f"step {step} online encoder")
        _assert_same_module(ours.predictor, predictor, f"step {step} predictor")
        _assert_same_module(ours.encoder.momentum, f_k, f"step {step} momentum encoder")
