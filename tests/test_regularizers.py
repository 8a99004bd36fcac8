"""CO2, XMoCo and AMCL: each term against a naive loop (float64), its zero, its gradients, and its
behaviour with keys gathered from several processes."""

import math

import pytest
import torch
import torch.nn.functional as F

from xmoco_zoo import create_method
from xmoco_zoo.config import ConfigError
from xmoco_zoo.embeddings import Embeddings, Similarities
from xmoco_zoo.experiment import load_config
from xmoco_zoo.losses import (
    TemperatureNet,
    amcl_pair_loss,
    co2_consistency,
    cross_consistency,
    omega,
    temperature_stats,
    uniformity,
)
from xmoco_zoo.registry import method_config
from xmoco_zoo.regularizers.amcl import AMCL
from xmoco_zoo.regularizers.co2 import CO2
from xmoco_zoo.regularizers.xmoco import XMoCo

TOL = 1e-6


def _unit(*shape, dtype=torch.float64):
    return F.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def _kl(p, q):
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))


def _sym_kl(p, q):
    return 0.5 * _kl(p, q) + 0.5 * _kl(q, p)


# ---------------------------------------------------------------- CO2


def test_co2_matches_naive_loop():
    torch.manual_seed(0)
    q, k, z, t = _unit(6, 8), _unit(6, 8), _unit(30, 8), 0.05
    ref = 0.0
    for i in range(6):
        qd = _softmax([float(q[i] @ zj) / t for zj in z])
        pd = _softmax([float(k[i] @ zj) / t for zj in z])
        ref += 0.5 * _kl(pd, qd) + 0.5 * _kl(qd, pd)
    ref /= 6
    assert abs(co2_consistency(q @ z.t(), k @ z.t(), t).item() - ref) < TOL


def test_co2_is_zero_when_query_equals_key_and_positive_otherwise():
    torch.manual_seed(1)
    q, z = _unit(5, 8), _unit(20, 8)
    assert co2_consistency(q @ z.t(), q @ z.t(), 0.05).item() == pytest.approx(0.0, abs=1e-12)
    assert co2_consistency(q @ z.t(), _unit(5, 8) @ z.t(), 0.05).item() > 0


def test_co2_gradient_reaches_queries_only():
    q = _unit(5, 8, dtype=torch.float32).requires_grad_()
    k = _unit(5, 8, dtype=torch.float32).requires_grad_()
    z = _unit(20, 8, dtype=torch.float32)
    co2_consistency(q @ z.t(), k @ z.t(), 0.1).backward()
    assert q.grad.abs().sum() > 0 and k.grad is None


# ---------------------------------------------------------------- XMoCo


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_cross_consistency_matches_naive_loop(kind):
    torch.manual_seed(2)
    q1, q2, k1, k2, t = _unit(6, 8), _unit(6, 8), _unit(6, 8), _unit(6, 8), 0.2
    s12, s21 = q1 @ k2.t(), q2 @ k1.t()
    ref = 0.0
    for i in range(6):
        r12 = [float(q1[i] @ k2[j]) for j in range(6)]
        r21 = [float(q2[i] @ k1[j]) for j in range(6)]
        if kind == "kl":
            ref += _sym_kl(_softmax([v / t for v in r21]), _softmax([v / t for v in r12])) / 6
        else:
            ref += sum((a - b) ** 2 for a, b in zip(r12, r21)) / 36
    assert abs(cross_consistency(s12, s21, t, kind).item() - ref) < TOL
    assert cross_consistency(s12, s12.clone(), t, kind).item() == pytest.approx(0.0, abs=1e-12)


def test_uniformity_matches_naive_loop_and_is_zero_for_equal_negatives():
    torch.manual_seed(3)
    n, t = 6, 0.2
    s12 = _unit(n, 8) @ _unit(n, 8).t()
    ref = 0.0
    for i in range(n):
        p = _softmax([float(s12[i, j]) / t for j in range(n) if j != i])
        ref += (math.log(n - 1) - -sum(v * math.log(v) for v in p)) / n
    assert abs(uniformity(s12, t).item() - ref) < TOL
    equal = torch.full((n, n), 0.3, dtype=torch.float64)
    equal.diagonal().fill_(0.9)  # the positive does not count
    assert uniformity(equal, t).item() == pytest.approx(0.0, abs=1e-12)
    assert uniformity(s12, t).item() > 0


def test_xmoco_terms_carry_gradient_through_both_queries():
    q1, q2 = (_unit(5, 8, dtype=torch.float32).requires_grad_() for _ in range(2))
    k1, k2 = _unit(5, 8, dtype=torch.float32), _unit(5, 8, dtype=torch.float32)
    (cross_consistency(q1 @ k2.t(), q2 @ k1.t()) + uniformity(q1 @ k2.t())).backward()
    assert q1.grad.abs().sum() > 0 and q2.grad.abs().sum() > 0


# ---------------------------------------------------------------- AMCL


def test_amcl_pair_loss_matches_naive_loop():
    torch.manual_seed(4)
    n, beta, m = 7, 0.1, 16.0
    s_pos, s_neg = torch.rand(n, dtype=torch.float64) * 2 - 1, torch.rand(n, dtype=torch.float64) * 2 - 1
    t_pos, t_neg = torch.rand(n, dtype=torch.float64) + 0.05, torch.rand(n, dtype=torch.float64) + 0.05

    def softplus(x):
        return math.log1p(math.exp(x))

    def om(t):  # Ω shifted by its minimum Ω(2/m)
        return 1 / t + m / 2 * math.log(t) - (m / 2 + m / 2 * math.log(2 / m))

    ref = (
        sum(
            softplus(-2 * float(s_pos[i]) / float(t_pos[i]))
            + softplus(2 * float(s_neg[i]) / float(t_neg[i]))
            + beta * (om(float(t_pos[i])) + om(float(t_neg[i])))
            for i in range(n)
        )
        / n
    )
    assert abs(amcl_pair_loss(s_pos, s_neg, t_pos, t_neg, beta, m).item() - ref) < TOL
    # Several negatives per anchor: the mean over them.
    s_negs, t_negs = s_neg.view(n, 1).repeat(1, 3), t_neg.view(n, 1).repeat(1, 3)
    assert abs(amcl_pair_loss(s_pos, s_negs, t_pos, t_negs, beta, m).item() - ref) < TOL


def test_amcl_is_minimal_where_it_should_be():
    m = 64.0
    taus = torch.linspace(0.005, 1.0, 20000, dtype=torch.float64)
    assert taus[omega(taus, m).argmin()].item() == pytest.approx(2 / m, rel=1e-2)  # Ω's minimum at 2/m
    # Bounded below and ordered: an aligned positive and an opposed negative cost less than the reverse.
    one, t = torch.ones(4, dtype=torch.float64), torch.full((4,), 0.2, dtype=torch.float64)
    good = amcl_pair_loss(one, -one, t, t, 0.1, m)
    bad = amcl_pair_loss(-one, one, t, t, 0.1, m)
    assert 0 < good < bad  # every term of ℓ is >= 0


def test_temperature_net_stays_in_bounds_and_stats():
    net = TemperatureNet(8, 16, tau_min=0.05, tau_max=0.5)
    torch.nn.init.constant_(net.net[2].bias, 50.0)  # saturate: every τ at tau_max
    tau = net(_unit(10, 8, dtype=torch.float32), _unit(10, 8, dtype=torch.float32))
    assert torch.all(tau <= 0.5) and torch.all(tau >= 0.05)
    stats = temperature_stats(tau, 0.05, 0.5)
    assert stats["at_bound"].item() == 1.0 and stats["max"].item() == pytest.approx(0.5)


def _step_for_rank(q1, q2, k1, k2, queue, rank, n):
    sl = slice(rank * n, (rank + 1) * n)
    return Embeddings([q1[sl], q2[sl]], [k1[sl], k2[sl]], [k1, k2], queue, rank * n)


def _apply(reg, emb):
    """A regularizer's terms on one step's embeddings (with a fresh similarity cache)."""
    return reg(emb, Similarities(emb))


def _amcl_reg(negatives, heads=1, dim=8):
    cfg = method_config(base="mocov3", dim=dim, regularizers=["amcl"])
    cfg.amcl.form, cfg.amcl.heads, cfg.amcl.negatives, cfg.amcl.m = "likelihood", heads, negatives, 8.0
    reg = AMCL(None, cfg).double()
    return reg, cfg


@pytest.mark.parametrize("negatives", ["hardest", "batch"])
def test_amcl_regularizer_matches_naive_loop(negatives):
    """Head 0 on MoCo v3's in-batch negatives: choose the hardest negative by a loop, evaluate φ per pair."""
    torch.manual_seed(5)
    n, d = 6, 8
    q1, q2, k1, k2 = (_unit(n, d) for _ in range(4))
    reg, cfg = _amcl_reg(negatives, dim=d)
    out = _apply(reg, Embeddings([q1, q2], [k1, k2], [k1, k2], None, 0))
    phi, beta, m = reg.phi[0], cfg.amcl.beta, 8.0

    def sp(x):
        return math.log1p(math.exp(x))

    def om(t):
        return 1 / t + m / 2 * math.log(t) - (m / 2 + m / 2 * math.log(2 / m))

    def tau(a, b):
        return float(phi(a.unsqueeze(0), b.unsqueeze(0)).detach())

    ref = 0.0
    for q, k in ((q1, k2), (q2, k1)):
        for i in range(n):
            ref += (sp(-2 * float(q[i] @ k[i]) / tau(q[i], k[i])) + beta * om(tau(q[i], k[i]))) / n / 2
            others = [j for j in range(n) if j != i]
            if negatives == "hardest":
                others = [max(others, key=lambda j: float(q[i] @ k[j]))]
            for j in others:
                t = tau(q[i], k[j])
                ref += (sp(2 * float(q[i] @ k[j]) / t) + beta * om(t)) / len(others) / n / 2
    assert abs(out["loss_amcl"].item() - ref) < TOL


# ------------------------------------------------ keys gathered from several processes


@pytest.mark.parametrize("with_queue", [True, False])
def test_terms_with_keys_gathered_from_several_processes_equal_one_process(with_queue):
    """Each rank holds its own queries and every rank's keys; the mean of the ranks' terms (what DDP
    trains on) equals the one-process term over the whole batch."""
    torch.manual_seed(6)
    world, n, d = 3, 4, 8
    q1, q2, k1, k2 = (_unit(world * n, d) for _ in range(4))
    queue = _unit(40, d) if with_queue else None
    cfg = method_config(regularizers=["co2", "xmoco", "amcl"], symmetric=True, dim=d)
    cfg.amcl.form, cfg.amcl.heads, cfg.amcl.m = "likelihood", 1, 8.0
    regs = [CO2(None, cfg), XMoCo(None, cfg), AMCL(None, cfg).double()]

    def terms(emb):
        out = {}
        for r in regs:
            out.update({k: v for k, v in _apply(r, emb).items() if k.startswith("loss")})
        return out

    full = terms(Embeddings([q1, q2], [k1, k2], [k1, k2], queue, 0))
    ranks = [terms(_step_for_rank(q1, q2, k1, k2, queue, r, n)) for r in range(world)]
    for name, v in full.items():
        mean = sum(r[name] for r in ranks) / world
        assert abs(mean.item() - v.item()) < TOL, name


# ------------------------------------------------------------ inside the methods

COMPOSITIONS = [
    ("co2", {}),
    ("xmoco", {}),
    ("amcl", {}),  # the posterior form
    ("mocov3", {"regularizers": ["co2", "xmoco"]}),
    ("mocov3", {"regularizers": ["amcl"], "amcl": {"form": "likelihood", "m": 32}}),
    ("amcl", {"amcl": {"form": "authors", "topk": 8}}),
    ("amcl", {"amcl": {"form": "likelihood"}}),
    ("mocov3", {"regularizers": ["amcl"], "amcl": {"form": "authors", "topk": 4}}),
    ("mocov3", {"regularizers": ["amcl"], "amcl": {"form": "posterior"}}),
]
TERMS = {"co2": ["loss_co2"], "xmoco": ["loss_xcross", "loss_uniform"], "amcl": ["loss_amcl"]}


def _small_method(name, extra):
    base = "mocov3" if name == "mocov3" else "mocov2"
    small = dict(queue_size=64, bn_splits=2) if base == "mocov2" else dict(hidden_dim=32, pred_hidden_dim=32)
    return create_method(name, "test_resnet", dim=32, **small, **extra)


def _views(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randn(n, 3, 32, 32, generator=g)


@pytest.mark.parametrize("name,extra", COMPOSITIONS, ids=lambda v: v if isinstance(v, str) else "")
def test_each_term_reaches_the_online_encoder_and_never_the_momentum_encoder(name, extra):
    torch.manual_seed(0)
    model = _small_method(name, extra)
    terms = [t for r in model.cfg.regularizers for t in TERMS[r]]
    x1, x2 = _views()
    for term in terms:
        model.zero_grad(set_to_none=True)
        out = model(x1, x2, m=0.99)
        assert term in out and torch.isfinite(out[term])
        out[term].backward()
        grads = [p.grad for p in model.backbone.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{term}: no gradient in the backbone"
        for n_, p in model.named_parameters():
            if ".momentum." in f".{n_}":
                assert p.grad is None and not p.requires_grad, n_


@pytest.mark.parametrize("name,extra", COMPOSITIONS, ids=lambda v: v if isinstance(v, str) else "")
def test_twenty_steps_on_a_fixed_batch_lower_each_term(name, extra):
    """The queues are frozen: on a fixed batch they would fill with the batch's own keys (each anchor's
    hardest negative would become an earlier key of its own image) and the objective would keep moving. AMCL's
    authors' form trains with the gradient norm clipped at 1 (their training loop): its temperatures reach 1e-5."""
    x1, x2 = _views(16)
    clip = extra.get("amcl", {}).get("form") == "authors"
    model = _small_method(name, extra)
    for term in [t for r in model.cfg.regularizers for t in TERMS[r]]:
        torch.manual_seed(0)
        model = _small_method(name, extra)
        model.base.enqueue = lambda emb: None
        for r in model.regularizers.values():
            r.after_step = lambda emb: None
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
        values = []
        for _ in range(21):
            out = model(x1, x2, m=0.99)
            values.append(out[term].item())
            opt.zero_grad()
            out[term].backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        assert values[-1] < values[0], f"{term}: {values[0]:.4f} -> {values[-1]:.4f}"


def test_similarity_products_are_computed_once_and_shared(monkeypatch):
    import xmoco_zoo.regularizers._layer as layer

    made = []

    class Recorded(Similarities):
        def __init__(self, emb):
            super().__init__(emb)
            made.append(self)

    monkeypatch.setattr(layer, "Similarities", Recorded)
    torch.manual_seed(0)
    model = _small_method(
        "mocov3", {"regularizers": ["co2", "xmoco", "amcl"], "amcl": {"form": "likelihood", "m": 32}}
    )
    model(*_views(), m=0.99)
    assert len(made) == 1
    step = made[0]
    # q·k_allᵀ serves MoCo v3's InfoNCE, XMoCo's S12/S21, CO2's negatives and AMCL's hardest negative.
    assert step.computed["cross"] == 2 and max(step.computed.values()) == 2


def test_amcl_logs_temperatures_and_replaces_the_base_loss_by_default():
    torch.manual_seed(0)
    model = _small_method("amcl", {})
    out = model(*_views(), m=0.99)
    for side in ("pos", "neg"):
        for stat in ("mean", "min", "max", "at_bound"):
            assert f"amcl_tau_{side}_{stat}" in out
    weight = model.cfg.amcl.weight
    assert not out["loss_nce"].requires_grad
    assert torch.allclose(out["loss"], weight * out["loss_amcl"])
    kept = _small_method("amcl", {"amcl": {"keep_base_loss": True}})(*_views(), m=0.99)
    assert kept["loss_nce"].requires_grad
    assert torch.allclose(kept["loss"], kept["loss_nce"] + weight * kept["loss_amcl"])
    assert len(model.regularizers["amcl"].heads) == 2 and len(model.regularizers["amcl"].queues) == 2


def test_amcl_loss_is_float32_under_autocast():
    torch.manual_seed(0)
    model = _small_method("amcl", {})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*_views(), m=0.99)
    assert out["loss_amcl"].dtype == torch.float32 and torch.isfinite(out["loss_amcl"])


def test_composition_from_the_config():
    cfg = load_config(
        "recipes/configs/mocov2_fmnist.yaml", ["method.base=mocov3", "method.regularizers=[xmoco,co2]"]
    )
    assert cfg.method.name == "mocov3+co2+xmoco" and cfg.method.base == "mocov3"
    assert cfg.method.proj_layers == 2 and cfg.method.momentum == 0.99  # v3 defaults, then the file's values
    assert load_config(None, ["method.name=co2"]).method.regularizers == ["co2"]
    assert load_config(None, ["method.name=xmoco"]).method.symmetric
    assert load_config(None, ["method.regularizers=[co2]"]).method.name == "co2"
    with pytest.raises(ConfigError, match="did you mean 'co2'"):
        load_config(None, ["method.regularizers=[c02]"])
    with pytest.raises(ConfigError, match="method.symmetric=true"):
        load_config(None, ["method.regularizers=[xmoco]"])
    with pytest.raises(ConfigError, match="tau_min"):
        load_config(None, ["method.name=amcl", "method.amcl.form=likelihood", "method.amcl.tau_min=0.05"])
    with pytest.raises(ConfigError, match="tau_min"):
        load_config(None, ["method.name=amcl", "method.amcl.tau_min=3.0"])  # above tau_max
    with pytest.raises(ConfigError, match="Did you mean"):
        load_config(None, ["method.amcl.head=2"])


@pytest.mark.parametrize("form", ["authors", "posterior"])
def test_amcl_shared_phi_forms_inside_the_method_equal_the_pure_losses_over_heads(form):
    """The regularizer sums the pure loss over its heads (the base's head on the base's queue, each extra head on
    its own queue) with one φ; recomputed here from the heads' own embeddings, before any queue moves."""
    from xmoco_zoo.losses import amcl_authors_objective, amcl_posterior_loss

    torch.manual_seed(0)
    model = _small_method("amcl", {"amcl": {"form": form, "heads": 2, "topk": 5}})
    reg = model.regularizers["amcl"]
    x1, x2 = _views()
    queues = [model.base.queue.queue.clone(), reg.queues[0].queue.clone()]
    seen = {}
    real = reg._head_embeddings

    def spy(emb, sims):
        heads = real(emb, sims)
        seen["heads"] = heads
        return heads

    reg._head_embeddings = spy
    out = model(x1, x2, m=0.99)
    heads = seen["heads"]
    q = [h["q"][0] for h in heads]
    k = [h["k"][1] for h in heads]
    c = model.cfg.amcl
    assert (
        c.beta == {"authors": 1e-4, "posterior": 1e-3}[form]
        and c.tau_min == {"authors": 1e-5, "posterior": 0.05}[form]
    )
    if form == "authors":
        ref, _ = amcl_authors_objective(q, k, queues, reg.phi, k=5, beta=c.beta)
    else:
        ref = sum(
            amcl_posterior_loss(qh, kh, zh, reg.phi, beta=c.beta)[0] for qh, kh, zh in zip(q, k, queues)
        )
    torch.testing.assert_close(out["loss_amcl"], ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out["loss"], out["loss_amcl"])  # weight 1, replaces InfoNCE
    for side in ("pos", "neg"):
        for stat in ("mean", "at_min", "at_max"):
            assert f"amcl_tau_{side}_{stat}" in out


def test_a_state_dict_of_the_earlier_layout_loads_into_the_regularizer_layer():
    """Checkpoints written before the regularizer layer held the base's state at the top level (``encoder.*``,
    ``queue.*``); they load into ``base.*`` unchanged."""
    torch.manual_seed(0)
    model = _small_method("co2", {})
    old = {k.removeprefix("base."): v.clone() for k, v in model.state_dict().items()}
    assert any(k.startswith("encoder.online.backbone.") for k in old) and "queue.queue" in old
    fresh = _small_method("co2", {})
    fresh.load_state_dict(old)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
