"""AMCL's `authors` and `posterior` forms against float64 per-anchor loops written from docs/amcl_authors.md and
../shared/METHODS.md, their gradients, InfoNCE as the posterior's special case, and the temperature statistics."""

import math

import pytest
import torch
import torch.nn.functional as F

from xmoco_zoo.losses import (
    BilinearTemperatureNet,
    amcl_authors_loss,
    amcl_authors_objective,
    amcl_posterior_loss,
    info_nce,
    temperature_stats,
)

TOL = 1e-6


def _unit(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


def _net(dim: int, hidden: int = 6, tau_min: float = 1e-5, tau_max: float = 2.0) -> BilinearTemperatureNet:
    net = BilinearTemperatureNet(dim, hidden, tau_min, tau_max).double()
    with torch.no_grad():  # spread the scores so the temperatures span the range, not all near the middle
        net.phi[2].weight.mul_(4.0)
    return net


# ------------------------------------------------------------ the naive reference, in plain Python floats


def _vec(x: torch.Tensor) -> list[float]:
    return [float(v) for v in x]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _phi(net: BilinearTemperatureNet, x: list[float]) -> list[float]:
    w1, b1 = net.phi[0].weight.detach(), net.phi[0].bias.detach()
    w2, b2 = net.phi[2].weight.detach(), net.phi[2].bias.detach()
    h = [max(0.0, _dot(_vec(w1[r]), x) + float(b1[r])) for r in range(w1.shape[0])]
    return [_dot(_vec(w2[o]), h) + float(b2[o]) for o in range(w2.shape[0])]


def _tau(net: BilinearTemperatureNet, a: list[float], b: list[float]) -> float:
    r = _dot(_phi(net, a), _phi(net, b))
    return net.tau_min + (net.tau_max - net.tau_min) / (1.0 + math.exp(r))  # sigmoid(−r)


def _omega(t: float, d: float) -> float:
    return d / 2 * math.log(t) + 1 / t


def _hardest(a: list[float], negatives: list[list[float]], k: int | None) -> list[list[float]]:
    """The k negatives most similar to a, by an explicit sort."""
    ranked = sorted(negatives, key=lambda z: _dot(a, z), reverse=True)
    return ranked if k is None else ranked[:k]


def _negatives_of(bank: torch.Tensor, i: int) -> list[list[float]]:
    rows = bank if bank.dim() == 2 else bank[i]
    return [_vec(z) for z in rows]


def _authors_ref(anchor, positive, bank, net, k, beta, d):
    """Mean over anchors of −s⁺/τ⁺ + (1/k)Σ s_j/τ_j + β·Ω(τ⁺) − β·Σ (log τ_j + 1/τ_j), the k hardest."""
    total = 0.0
    for i in range(anchor.shape[0]):
        a, p = _vec(anchor[i]), _vec(positive[i])
        t_pos = _tau(net, a, p)
        negs = _hardest(a, _negatives_of(bank, i), k)
        neg = sum(_dot(a, z) / _tau(net, a, z) for z in negs) / len(negs)
        reg = sum(math.log(_tau(net, a, z)) + 1 / _tau(net, a, z) for z in negs)
        total += -_dot(a, p) / t_pos + neg + beta * _omega(t_pos, d) - beta * reg
    return total / anchor.shape[0]


def _posterior_ref(anchor, positive, bank, net, topk, beta, d):
    """Mean over anchors of −log softmax([s⁺/τ⁺, s_j/τ_j])₀ + β·[Ω(τ⁺) + mean_j Ω(τ_j)]."""
    total = 0.0
    for i in range(anchor.shape[0]):
        a, p = _vec(anchor[i]), _vec(positive[i])
        t_pos = _tau(net, a, p)
        negs = _hardest(a, _negatives_of(bank, i), topk)
        t_negs = [_tau(net, a, z) for z in negs]
        logits = [_dot(a, p) / t_pos] + [_dot(a, z) / t for z, t in zip(negs, t_negs)]
        nll = math.log(sum(math.exp(v) for v in logits)) - logits[0]
        total += nll + beta * (_omega(t_pos, d) + sum(_omega(t, d) for t in t_negs) / len(t_negs))
    return total / anchor.shape[0]


# ------------------------------------------------------------ values


@pytest.mark.parametrize("tau_min,tau_max", [(1e-5, 2.0), (0.05, 1.0)])
@pytest.mark.parametrize(
    "n_bank,k",
    [(20, 3), (12, 3), (12, 100)],  # φ on the picked rows only; φ on the whole bank; every negative kept
)
def test_authors_loss_matches_naive_loop(tau_min, tau_max, n_bank, k):
    torch.manual_seed(0)
    n, d, beta = 6, 5, 0.01
    net = _net(d, tau_min=tau_min, tau_max=tau_max)
    a, p, bank = _unit(n, d), _unit(n, d), _unit(n_bank, d)
    loss, stats = amcl_authors_loss(a, p, bank, net, k=k, beta=beta)
    assert loss.item() == pytest.approx(_authors_ref(a, p, bank, net, k, beta, d), abs=TOL)
    assert stats["tau_neg"].shape == (n, min(k, n_bank)) and stats["sim_pos"].shape == (n,)
    # The products handed in by another term give the same loss; so does Ω's D set by hand.
    again, _ = amcl_authors_loss(a, p, bank, net, k=k, beta=beta, bank_sims=a @ bank.t(), dim=d)
    assert again.item() == pytest.approx(loss.item(), abs=1e-12)


def test_authors_loss_with_per_anchor_negatives_matches_naive_loop():
    torch.manual_seed(1)
    n, d, j, k, beta = 5, 4, 7, 3, 0.05
    net = _net(d, tau_min=0.01)
    a, p, negs = _unit(n, d), _unit(n, d), _unit(n, j, d)  # the authors' SimCLR variant: negatives per anchor
    loss, _ = amcl_authors_loss(a, p, negs, net, k=k, beta=beta)
    assert loss.item() == pytest.approx(_authors_ref(a, p, negs, net, k, beta, d), abs=TOL)
    # One queue seen as a per-anchor bank gives the queue's loss.
    queue = _unit(j, d)
    shared, _ = amcl_authors_loss(a, p, queue, net, k=k, beta=beta)
    expanded, _ = amcl_authors_loss(a, p, queue.expand(n, j, d), net, k=k, beta=beta)
    assert expanded.item() == pytest.approx(shared.item(), abs=1e-12)


def test_authors_objective_sums_heads_and_halves_the_two_directions():
    torch.manual_seed(2)
    n, d, heads, k, beta = 4, 5, 2, 4, 0.01
    net = _net(d)
    qs, ks, banks = [_unit(n, d) for _ in range(heads)], [_unit(n, d) for _ in range(heads)], []
    banks = [_unit(9, d) for _ in range(heads)]
    loss, stats = amcl_authors_objective(qs, ks, banks, net, k=k, beta=beta)
    ref = sum(
        0.5 * (_authors_ref(q, key, z, net, k, beta, d) + _authors_ref(key, q, z, net, k, beta, d))
        for q, key, z in zip(qs, ks, banks)
    )
    assert loss.item() == pytest.approx(ref, abs=TOL)
    assert stats["tau_pos"].shape == (2 * heads * n,) and stats["tau_neg"].shape == (2 * heads * n, k)


@pytest.mark.parametrize("topk", [None, 4])
def test_posterior_loss_matches_naive_loop(topk):
    torch.manual_seed(3)
    n, d, beta = 6, 5, 0.02
    net = _net(d, tau_min=0.05, tau_max=1.0)
    a, p, bank = _unit(n, d), _unit(n, d), _unit(15, d)
    loss, stats = amcl_posterior_loss(a, p, bank, net, beta=beta, topk=topk)
    assert loss.item() == pytest.approx(_posterior_ref(a, p, bank, net, topk, beta, d), abs=TOL)
    assert stats["tau_neg"].shape == (n, 15 if topk is None else topk)


def test_posterior_reduces_to_info_nce_when_every_tau_is_t():
    torch.manual_seed(4)
    n, d, t = 8, 6, 0.2
    a0, p, queue = _unit(n, d), _unit(n, d), _unit(30, d)
    # A fixed temperature, β = 0: InfoNCE's value and gradient.
    qa, qb = a0.clone().requires_grad_(), a0.clone().requires_grad_()
    ref, _ = info_nce(qa, p, queue, t)
    ref.backward()
    loss, _ = amcl_posterior_loss(qb, p, queue, t, beta=0.0)
    loss.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-12)
    torch.testing.assert_close(qb.grad, qa.grad, rtol=1e-10, atol=1e-12)
    # A temperature network whose φ is constant gives every pair τ = T: InfoNCE again, gradient included.
    net = BilinearTemperatureNet(d, 4, tau_min=0.01, tau_max=2.0).double()
    u = (t - net.tau_min) / (net.tau_max - net.tau_min)
    with torch.no_grad():
        net.phi[2].weight.zero_()
        net.phi[2].bias.fill_(math.sqrt(math.log((1 - u) / u) / d))  # r = |b|² with sigmoid(−r) = u
    qc = a0.clone().requires_grad_()
    via_net, stats = amcl_posterior_loss(qc, p, queue, net, beta=0.0)
    via_net.backward()
    torch.testing.assert_close(stats["tau_neg"], torch.full_like(stats["tau_neg"], t), rtol=1e-12, atol=1e-12)
    assert via_net.item() == pytest.approx(ref.item(), abs=1e-10)
    torch.testing.assert_close(qc.grad, qa.grad, rtol=1e-8, atol=1e-10)
    # β > 0 with one fixed T adds the constant β·2·Ω(T).
    beta = 0.1
    with_omega, _ = amcl_posterior_loss(a0, p, queue, t, beta=beta)
    assert with_omega.item() == pytest.approx(ref.item() + beta * 2 * _omega(t, d), abs=1e-10)


# ------------------------------------------------------------ gradients


@pytest.mark.parametrize("form", ["authors", "posterior"])
def test_gradients_reach_the_anchor_and_phi_and_never_the_bank(form):
    torch.manual_seed(5)
    n, d = 6, 8
    net = BilinearTemperatureNet(d, 16, tau_min=0.01)
    raw = torch.randn(n, d, requires_grad=True)
    key = torch.randn(n, d, requires_grad=True)  # a key with a graph of its own: the objective must detach it
    bank = _unit(40, d, dtype=torch.float32).requires_grad_()
    q, k = F.normalize(raw, dim=1), F.normalize(key, dim=1)
    if form == "authors":
        loss, _ = amcl_authors_objective([q], [k], [bank], net, k=5)
    else:
        loss, _ = amcl_posterior_loss(q, k.detach(), bank, net, topk=10)
    loss.backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0
    for name, param in net.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert key.grad is None and bank.grad is None


def test_authors_second_direction_trains_the_query_through_the_positive():
    torch.manual_seed(6)
    n, d = 5, 8
    net = BilinearTemperatureNet(d, 16)
    q = _unit(n, d, dtype=torch.float32).requires_grad_()
    key = _unit(n, d, dtype=torch.float32)
    loss, _ = amcl_authors_loss(key, q, _unit(30, d, dtype=torch.float32), net, k=5)  # the key as anchor
    loss.backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_detached_phi_input_keeps_phi_training_but_changes_the_anchor_gradient():
    torch.manual_seed(7)
    n, d = 5, 6
    net = _net(d, tau_min=0.01)
    a0, p, bank = _unit(n, d), _unit(n, d), _unit(20, d)
    grads = []
    for detach in (False, True):
        net.zero_grad()
        a = a0.clone().requires_grad_()
        amcl_authors_loss(a, p, bank, net, k=4, detach_phi_input=detach)[0].backward()
        assert net.phi[0].weight.grad.abs().sum() > 0
        grads.append(a.grad)
    assert not torch.allclose(grads[0], grads[1])


# ------------------------------------------------------------ training, precision, errors


@pytest.mark.parametrize("form", ["authors", "posterior"])
def test_twenty_steps_lower_the_loss_on_a_fixed_batch(form):
    torch.manual_seed(8)
    encoder, net = torch.nn.Linear(16, 8), BilinearTemperatureNet(8, 16)
    x = torch.randn(32, 16)
    x2 = x + 0.1 * torch.randn(32, 16)
    bank = _unit(64, 8, dtype=torch.float32)
    opt = torch.optim.Adam([*encoder.parameters(), *net.parameters()], lr=1e-2)
    losses = []
    for _ in range(20):
        q = F.normalize(encoder(x), dim=1)
        k = F.normalize(encoder(x2), dim=1).detach()
        if form == "authors":
            loss, _ = amcl_authors_objective([q], [k], [bank], net, k=10)
        else:
            loss, _ = amcl_posterior_loss(q, k, bank, net, topk=None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


@pytest.mark.parametrize("form", ["authors", "posterior"])
def test_losses_run_in_float32_under_autocast(form):
    torch.manual_seed(9)
    net = BilinearTemperatureNet(8, 16)
    q, k, bank = (_unit(*s, dtype=torch.float32) for s in ((4, 8), (4, 8), (20, 8)))
    fn = amcl_authors_loss if form == "authors" else amcl_posterior_loss
    plain, _ = fn(q, k, bank, net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, stats = fn(q.bfloat16(), k.bfloat16(), bank.bfloat16(), net)
        assert net.bank(q, bank).dtype == torch.float32 and net(q, k).dtype == torch.float32
    assert mixed.dtype == torch.float32 and stats["tau_neg"].dtype == torch.float32
    assert torch.isfinite(mixed) and mixed.item() == pytest.approx(plain.item(), rel=0.05)


def test_clear_errors_for_wrong_shapes_and_bounds():
    net = BilinearTemperatureNet(4)
    q = _unit(3, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match="one shape"):
        amcl_authors_loss(q, _unit(2, 4, dtype=torch.float32), _unit(5, 4, dtype=torch.float32), net)
    with pytest.raises(ValueError, match="negatives must be"):
        amcl_posterior_loss(q, q, _unit(5, 3, dtype=torch.float32), net)
    with pytest.raises(ValueError, match="k >= 1"):
        amcl_authors_loss(q, q, _unit(5, 4, dtype=torch.float32), net, k=0)
    with pytest.raises(ValueError, match="takes 4-dim"):
        net(_unit(3, 5, dtype=torch.float32), _unit(3, 5, dtype=torch.float32))
    with pytest.raises(ValueError, match="tau_min < tau_max"):
        BilinearTemperatureNet(4, tau_min=2.0, tau_max=1.0)


# ------------------------------------------------------------ temperature statistics


def test_temperature_stats_count_each_bound_separately():
    tau_min, tau_max, rel = 1e-5, 2.0, 0.01
    tau = torch.tensor([1e-5, 1.005e-5, 1.02e-5, 0.5, 1.0, 1.99, 2.0, 1.97])
    stats = temperature_stats(tau, tau_min, tau_max, rel)
    values = tau.tolist()
    at_min = sum(v <= tau_min * (1 + rel) for v in values) / len(values)
    at_max = sum(v >= tau_max / (1 + rel) for v in values) / len(values)
    assert 0 < at_min < 1 and 0 < at_max < 1  # the example has both, and values at neither
    assert stats["at_min"].item() == pytest.approx(at_min)
    assert stats["at_max"].item() == pytest.approx(at_max)
    assert stats["at_bound"].item() == pytest.approx(at_min + at_max)
    assert stats["mean"].item() == pytest.approx(sum(values) / len(values), rel=1e-6)


def test_a_saturated_network_puts_every_temperature_at_tau_min():
    net = BilinearTemperatureNet(8, 16)
    with torch.no_grad():
        net.phi[2].weight.zero_()
        net.phi[2].bias.fill_(5.0)  # r = 8·25 for every pair: sigmoid(−r) underflows, τ = τ_min
    q, k, bank = (_unit(*s, dtype=torch.float32) for s in ((4, 8), (4, 8), (20, 8)))
    _, stats = amcl_authors_loss(q, k, bank, net, k=5)
    for side in ("tau_pos", "tau_neg"):
        s = temperature_stats(stats[side], net.tau_min, net.tau_max)
        assert s["at_min"].item() == 1.0 and s["at_max"].item() == 0.0
