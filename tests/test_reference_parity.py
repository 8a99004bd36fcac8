"""Parity with the reference code: our MoCo v2 and MoCo v3 against transcriptions of facebookresearch's.

The two reference classes below are written from the reference files, not from ours, and cut to one process
(``concat_all_gather`` is the identity, the rank is 0, no ``.cuda()``):

- MoCo v2: facebookresearch/moco ``moco/builder.py`` @ 7397dfe1 (``__init__`` L43-53,
  ``_momentum_update_key_encoder`` L55-63, ``_dequeue_and_enqueue`` L65-79, the shuffle L81-126, ``forward``
  L128-173), and ``main_moco.py`` ``train()`` @ 010242b7 (``criterion = nn.CrossEntropyLoss()`` on the logits,
  ``accuracy(output, target)``, SGD over ``model.parameters()``).
- MoCo v3: facebookresearch/moco-v3 ``moco/builder.py`` @ 337f3c96 (``_build_mlp`` L36-52,
  ``_update_momentum_encoder`` L57-61, ``contrastive_loss`` L63-73, ``forward`` L75-96, ``MoCo_ResNet`` /
  ``MoCo_ViT`` heads L99-122).

Both sides get the same initial weights, queue and inputs, run in float64, and take a few steps with SGD in
between; the losses, every online gradient, the momentum encoder (parameters and BN statistics) and the queue
must agree. Known differences of order, with no effect: we update the momentum encoder before the queries
(theirs after: the online forward changes no parameter), and our queue is stored (K, D) where theirs is (D, K).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xmoco_zoo import create_method

STEPS = 3  # MoCo v2: a queue of 2 batches, so the third step's enqueue wraps around
BATCH = 8
TOL = dict(rtol=1e-9, atol=1e-11)  # float64: only the summation order differs


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: these tensors are tiny, and on a busy machine a second thread's barriers cost 30x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ref_mocov2_head(dim_mlp: int, dim: int) -> nn.Sequential:
    """moco ``MoCo.__init__`` with ``mlp=True``: the fc (dim_mlp → dim) behind Linear(dim_mlp, dim_mlp)-ReLU."""
    return nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), nn.Linear(dim_mlp, dim))


def ref_build_mlp(
    num_layers: int, input_dim: int, mlp_dim: int, output_dim: int, last_bn: bool = True
) -> nn.Sequential:
    """moco-v3 ``MoCo._build_mlp``: (Linear no bias, BN, ReLU) per hidden layer; the last BN has no affine."""
    mlp: list[nn.Module] = []
    for layer in range(num_layers):
        dim1 = input_dim if layer == 0 else mlp_dim
        dim2 = output_dim if layer == num_layers - 1 else mlp_dim
        mlp.append(nn.Linear(dim1, dim2, bias=False))
        if layer < num_layers - 1:
            mlp += [nn.BatchNorm1d(dim2), nn.ReLU(inplace=True)]
        elif last_bn:
            mlp.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*mlp)


def _with_weights(theirs: nn.Module, ours: nn.Module) -> nn.Module:
    """``theirs`` in float64 holding ``ours``' weights; strict, so a layer or BN missing on either side fails."""
    theirs.double().load_state_dict(ours.state_dict(), strict=True)
    return theirs


class RefMoCoV2(nn.Module):
    """facebookresearch/moco ``MoCo``, one process; ``encoder_q`` is the backbone with the MLP head on top."""

    def __init__(self, encoder_q: nn.Module, queue_dk: torch.Tensor, m: float, T: float) -> None:
        super().__init__()
        self.m, self.T, self.K = m, T, queue_dk.shape[1]
        self.encoder_q = encoder_q
        self.encoder_k = copy.deepcopy(encoder_q)  # param_k.data.copy_(param_q.data)
        self.encoder_k.requires_grad_(False)
        self.register_buffer("queue", queue_dk.clone())  # (dim, K), columns normalised
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data = param_k.data * self.m + param_q.data * (1.0 - self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        batch_size = keys.shape[0]
        ptr = int(self.queue_ptr)
        assert self.K % batch_size == 0
        self.queue[:, ptr : ptr + batch_size] = keys.T
        self.queue_ptr[0] = (ptr + batch_size) % self.K

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = F.normalize(self.encoder_q(im_q), dim=1)
        with torch.no_grad():
            self._momentum_update_key_encoder()
            # _batch_shuffle_ddp / _batch_unshuffle_ddp in one process: a permutation of the batch and its inverse
            idx_shuffle = torch.randperm(im_k.shape[0])
            k = F.normalize(self.encoder_k(im_k[idx_shuffle]), dim=1)[torch.argsort(idx_shuffle)]
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long)
        self._dequeue_and_enqueue(k)
        return logits, labels


class RefMoCoV3(nn.Module):
    """facebookresearch/moco-v3 ``MoCo``, one process; ``base_encoder`` is the backbone with the projector on top."""

    def __init__(self, base_encoder: nn.Module, predictor: nn.Module, T: float) -> None:
        super().__init__()
        self.T = T
        self.base_encoder = base_encoder
        self.predictor = predictor
        self.momentum_encoder = copy.deepcopy(base_encoder).requires_grad_(False)

    @torch.no_grad()
    def _update_momentum_encoder(self, m: float) -> None:
        for param_b, param_m in zip(self.base_encoder.parameters(), self.momentum_encoder.parameters()):
            param_m.data = param_m.data * m + param_b.data * (1.0 - m)

    def contrastive_loss(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.einsum("nc,mc->nm", q, k) / self.T
        labels = torch.arange(logits.shape[0], dtype=torch.long)  # + N * rank, rank 0
        return nn.CrossEntropyLoss()(logits, labels) * (2 * self.T)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, m: float) -> torch.Tensor:
        q1 = self.predictor(self.base_encoder(x1))
        q2 = self.predictor(self.base_encoder(x2))
        with torch.no_grad():
            self._update_momentum_encoder(m)
            k1 = self.momentum_encoder(x1)
            k2 = self.momentum_encoder(x2)
        return self.contrastive_loss(q1, k2) + self.contrastive_loss(q2, k1)


def _views(step: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(2, BATCH, 3, size, size, generator=g, dtype=torch.float64)
    return x[0], x[1]


def _sgd(params: list[nn.Parameter]) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=1e-4)


def _assert_same_module(ours: nn.Module, theirs: nn.Module, what: str) -> None:
    """Same parameters and buffers, in the same order (the momentum update zips parameters in order)."""
    a, b = ours.state_dict(), theirs.state_dict()
    assert len(a) == len(b), what
    for (name_a, va), vb in zip(a.items(), b.values()):
        torch.testing.assert_close(va, vb, **TOL, msg=lambda s, n=name_a: f"{what} {n}: {s}")


def _assert_same_grads(ours: list[nn.Parameter], theirs: list[nn.Parameter], what: str) -> None:
    """The gradients of corresponding parameters (in module order) agree."""
    assert len(ours) == len(theirs) > 0, what
    for i, (pa, pb) in enumerate(zip(ours, theirs)):
        assert pa.grad is not None and pb.grad is not None, f"{what}: parameter {i} got no gradient"
        torch.testing.assert_close(pa.grad, pb.grad, **TOL, msg=lambda s, i=i: f"{what} grad {i}: {s}")


def test_mocov2_matches_reference() -> None:
    torch.manual_seed(0)
    ours = create_method(
        "mocov2", "test_resnet", dim=16, queue_size=2 * BATCH, shuffle_bn=False, symmetric=False
    ).double()
    T, m = ours.cfg.temperature, 0.99
    online = ours.encoder.online
    head = _with_weights(ref_mocov2_head(online.backbone.num_features, ours.cfg.dim), online.head)
    encoder_q = nn.Sequential(copy.deepcopy(online.backbone), head)
    ref = RefMoCoV2(encoder_q, ours.queue.queue.T, m=m, T=T)
    _assert_same_module(ours.encoder.momentum, ref.encoder_k, "initial momentum encoder")

    opt_ours = _sgd([p for p in ours.parameters() if p.requires_grad])
    opt_ref = _sgd(list(ref.parameters()))  # as their main_moco.py: SGD skips encoder_k (no grad)
    for step in range(STEPS):
        x1, x2 = _views(step)
        out = ours(x1, x2, m)
        logits, labels = ref(im_q=x1, im_k=x2)
        loss = nn.CrossEntropyLoss()(logits, labels)
        torch.testing.assert_close(out["loss"], loss, **TOL)
        acc1 = (logits.argmax(1) == labels).double().mean()  # their accuracy() top-1, as a fraction
        torch.testing.assert_close(out["acc1"].double(), acc1)

        for opt in (opt_ours, opt_ref):
            opt.zero_grad()
        out["loss"].backward()
        loss.backward()
        _assert_same_grads(list(online.parameters()), list(ref.encoder_q.parameters()), f"step {step}")
        opt_ours.step()
        opt_ref.step()

        _assert_same_module(online, ref.encoder_q, f"step {step} online encoder")
        _assert_same_module(ours.encoder.momentum, ref.encoder_k, f"step {step} momentum encoder")
        torch.testing.assert_close(ours.queue.queue, ref.queue.T, **TOL)
        assert int(ours.queue.ptr) == int(ref.queue_ptr)
    assert int(ref.queue_ptr) == BATCH  # the queue wrapped around once


@pytest.mark.parametrize(
    "backbone, kwargs, proj_layers, pred_last_bn",
    [
        ("test_resnet", {}, 2, False),  # MoCo_ResNet
        ("test_vit", {"img_size": 32, "patch_size": 8}, 3, True),  # MoCo_ViT
    ],
)
def test_mocov3_matches_reference(backbone: str, kwargs: dict, proj_layers: int, pred_last_bn: bool) -> None:
    torch.manual_seed(0)
    dim, mlp_dim = 16, 32
    ours = create_method(
        "mocov3",
        backbone,
        kwargs,
        dim=dim,
        hidden_dim=mlp_dim,
        pred_hidden_dim=mlp_dim,
        proj_layers=proj_layers,
        pred_last_bn=pred_last_bn,
    ).double()
    T = ours.cfg.temperature
    online = ours.encoder.online
    width = online.backbone.num_features
    projector = _with_weights(ref_build_mlp(proj_layers, width, mlp_dim, dim), online.head)
    predictor = _with_weights(ref_build_mlp(2, dim, mlp_dim, dim, pred_last_bn), ours.predictor)
    ref = RefMoCoV3(nn.Sequential(copy.deepcopy(online.backbone), projector), predictor, T=T)
    _assert_same_module(ours.encoder.momentum, ref.momentum_encoder, "initial momentum encoder")

    ours_params = [*online.parameters(), *ours.predictor.parameters()]
    ref_params = [*ref.base_encoder.parameters(), *ref.predictor.parameters()]
    opt_ours = _sgd([p for p in ours.parameters() if p.requires_grad])
    opt_ref = _sgd([p for p in ref.parameters() if p.requires_grad])
    for step, m in enumerate([0.99, 0.995, 0.999][:STEPS]):
        x1, x2 = _views(step)
        out = ours(x1, x2, m)
        loss = ref(x1, x2, m)
        torch.testing.assert_close(out["loss"], loss, **TOL)

        for opt in (opt_ours, opt_ref):
            opt.zero_grad()
        out["loss"].backward()
        loss.backward()
        _assert_same_grads(ours_params, ref_params, f"step {step}")
        opt_ours.step()
        opt_ref.step()

        _assert_same_module(online, ref.base_encoder, f"step {step} online encoder")
        _assert_same_module(ours.predictor, ref.predictor, f"step {step} predictor")
        _assert_same_module(ours.encoder.momentum, ref.momentum_encoder, f"step {step} momentum encoder")
