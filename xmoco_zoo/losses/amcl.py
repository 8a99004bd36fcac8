"""AMCL: adaptive multi-head contrast (Wang, Koniusz, Gedeon, Zheng, ECCV 2024, https://arxiv.org/abs/2310.05615).

Each pair gets its own temperature from a small network φ on the two embeddings, and a regularizer Ω keeps the
temperatures from running away. Three forms of the per-anchor loss live here:

- ``likelihood`` (:class:`TemperatureNet`, :func:`amcl_pair_loss`): each pair a Bernoulli "is this the
  positive?" with logit 2·sim/τ; our first reading of the paper (docs/methods.md).
- ``authors`` (:class:`BilinearTemperatureNet`, :func:`amcl_authors_loss`, :func:`amcl_authors_objective`):
  the MoCo loss as the authors' code (GitHub ``LeiWangR/cl``, ``amcl/losses.py``, ``AMCLMoCoLoss``) computes
  it; the facts, with file and line references, are in docs/amcl_authors.md.
- ``posterior`` (:func:`amcl_posterior_loss`): InfoNCE with per-pair temperatures plus Ω; InfoNCE itself when
  every τ equals T and β = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._util import fp32_region
from .infonce import at_least_fp32


class TemperatureNet(nn.Module):
    """φ: τ = τ_min + (τ_max − τ_min)·sigmoid(φ([z_a; z_b])), φ = Linear(2D, hidden)-ReLU-Linear(hidden, 1)."""

    def __init__(self, dim: int, hidden: int = 128, tau_min: float = 0.01, tau_max: float = 2.0) -> None:
        super().__init__()
        if not 0 < tau_min < tau_max:
            raise ValueError(f"AMCL needs 0 < tau_min < tau_max, got {tau_min}, {tau_max}")
        self.tau_min, self.tau_max = tau_min, tau_max
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        """(…, D), (…, D) → (…) temperatures; runs in float32 (float64 inputs stay float64)."""
        x = at_least_fp32(torch.cat([za, zb], dim=-1))
        u = self.net(
            x.to(self.net[0].weight.dtype) if self.net[0].weight.dtype == torch.float64 else x
        ).squeeze(-1)
        return temperature_from_logit(u, self.tau_min, self.tau_max)


def temperature_from_logit(u: torch.Tensor, tau_min: float, tau_max: float) -> torch.Tensor:
    return tau_min + (tau_max - tau_min) * torch.sigmoid(u)


def omega(tau: torch.Tensor, m: float) -> torch.Tensor:
    """Ω(τ) = 1/τ + (m/2)·log τ, minimal at τ = 2/m."""
    return 1.0 / tau + 0.5 * m * torch.log(tau)


def omega_shifted(tau: torch.Tensor, m: float) -> torch.Tensor:
    """Ω(τ) − Ω(2/m) ≥ 0: the same gradients as Ω, and a loss whose every term is non-negative."""
    return omega(tau, m) - (0.5 * m + 0.5 * m * math.log(2.0 / m))


def amcl_pair_loss(
    s_pos: torch.Tensor,
    s_neg: torch.Tensor,
    tau_pos: torch.Tensor,
    tau_neg: torch.Tensor,
    beta: float,
    m: float,
) -> torch.Tensor:
    """ℓ = softplus(−2s⁺/τ⁺) + softplus(2s⁻/τ⁻) + β·[Ω̃(τ⁺) + Ω̃(τ⁻)], mean over anchors (Ω̃ = Ω − min Ω).

    Shape:
        s_pos, tau_pos: (N,) the positive pair of each anchor.
        s_neg, tau_neg: (N,) the hardest negative, or (N, J) several negatives (averaged over J).
        output: scalar.
    """
    s_pos, s_neg, tau_pos, tau_neg = (
        t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
        for t in (s_pos, s_neg, tau_pos, tau_neg)
    )
    pos = F.softplus(-2.0 * s_pos / tau_pos) + beta * omega_shifted(tau_pos, m)
    neg = F.softplus(2.0 * s_neg / tau_neg) + beta * omega_shifted(tau_neg, m)
    if neg.dim() == 2:
        neg = neg.mean(1)
    return (pos + neg).mean()


def temperature_stats(
    tau: torch.Tensor, tau_min: float, tau_max: float, rel: float = 0.01
) -> dict[str, torch.Tensor]:
    """mean, min, max and the share of temperatures at a bound (within ``rel`` of it, multiplicatively:
    the logit scale 1/τ is then within 1 % of its extreme): ``at_min`` and ``at_max`` separately, and
    ``at_bound`` their union.

    Shape:
        tau: any shape, detached here.
        output: scalars.
    """
    tau = tau.detach().float()
    at_min, at_max = tau <= tau_min * (1 + rel), tau >= tau_max / (1 + rel)
    return {
        "mean": tau.mean(),
        "min": tau.min(),
        "max": tau.max(),
        "at_bound": (at_min | at_max).float().mean(),
        "at_min": at_min.float().mean(),
        "at_max": at_max.float().mean(),
    }


def omega_minimum(m: float) -> float:
    """The τ minimising Ω alone: positives settle just below it (the softplus term only pushes τ⁺ down)."""
    return 2.0 / m if m > 0 else math.inf


# ---------------------------------------------------------------- the authors' form and the posterior form


class BilinearTemperatureNet(nn.Module):
    """The authors' temperature network, one for every head: τ(a, b) = τ_min + (τ_max − τ_min)·sigmoid(−r),
    r = φ(a)·φ(b), φ = Linear(D, hidden)-ReLU-Linear(hidden, D) with PyTorch's default init.

    A high score means a low temperature. φ runs outside autocast, in float32 (float64 when the module is
    float64). From https://arxiv.org/abs/2310.05615 as computed in the authors' code (GitHub ``LeiWangR/cl``,
    ``amcl/losses.py``, ``TemperatureHead``).

    Args:
        dim: D, the embedding dim.
        hidden: φ's hidden width; None: D (the loss class's default; the authors' training script passes 128).
        tau_min: the lowest temperature (authors: 1e-5).
        tau_max: the highest temperature (authors: 2).
    """

    def __init__(
        self, dim: int, hidden: int | None = None, tau_min: float = 1e-5, tau_max: float = 2.0
    ) -> None:
        super().__init__()
        hidden = dim if hidden is None else hidden
        if dim < 1 or hidden < 1:
            raise ValueError(
                f"AMCL's temperature network needs dim >= 1 and hidden >= 1, got {dim}, {hidden}"
            )
        if not 0 < tau_min < tau_max:
            raise ValueError(
                f"AMCL needs 0 < tau_min < tau_max, got {tau_min}, {tau_max}: set method.amcl.tau_min below tau_max"
            )
        self.dim, self.tau_min, self.tau_max = dim, float(tau_min), float(tau_max)
        self.phi = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """φ(z).

        Shape:
            z: (..., D). output: (..., D), float32 (float64 if the module is float64).
        """
        if z.shape[-1] != self.dim:
            raise ValueError(
                f"the temperature network takes {self.dim}-dim embeddings, got shape {tuple(z.shape)}"
            )
        weight = self.phi[0].weight
        with fp32_region(z):
            return self.phi(z.to(torch.float64 if weight.dtype == torch.float64 else torch.float32))

    def temperature(self, score: torch.Tensor) -> torch.Tensor:
        """τ = τ_min + (τ_max − τ_min)·sigmoid(−r), elementwise."""
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(-score)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """τ of row pairs.

        Shape:
            a, b: (..., D), broadcastable. output: (...).
        """
        with fp32_region(a):
            return self.temperature((self.embed(a) * self.embed(b)).sum(-1))

    def bank(self, a: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """τ(a_i, z_j) for every anchor and bank entry, or only the entries ``idx`` picks per anchor.

        φ runs once on the bank (a shared bank makes r a matrix product), or, when ``idx`` picks fewer rows than
        the bank holds, only on the picked rows: the same values and gradients at less cost.

        Shape:
            a: (N, D) anchors.
            bank: (K, D) shared by every anchor (a queue), or (N, K, D) per anchor.
            idx: None, or (N, k) indices into the bank's K.
            output: (N, K), or (N, k) with ``idx``.
        """
        with fp32_region(a):
            pa = self.embed(a)
            if bank.dim() == 2 and idx is None:
                return self.temperature(pa @ self.embed(bank).t())
            if idx is None:
                return self.temperature(torch.einsum("nd,nkd->nk", pa, self.embed(bank)))
            if bank.dim() == 2:
                pb = self.embed(bank[idx]) if idx.numel() < bank.shape[0] else self.embed(bank)[idx]
            else:
                pb = self.embed(bank[torch.arange(bank.shape[0], device=idx.device)[:, None], idx])
            return self.temperature(torch.einsum("nd,nkd->nk", pa, pb))


def amcl_authors_from_sims(
    s_pos: torch.Tensor,
    s_neg: torch.Tensor,
    tau_pos: torch.Tensor,
    tau_neg: torch.Tensor,
    *,
    beta: float = 0.01,
    dim: float,
) -> torch.Tensor:
    """The authors' per-anchor ℓ, averaged over anchors:
    ℓ = −s⁺/τ⁺ + (1/k)·Σ_j s_j/τ_j + β·Ω(τ⁺) − β·Σ_j (log τ_j + 1/τ_j), Ω(τ) = (D/2)·log τ + 1/τ.

    The j run over the negatives kept (the authors' top-k); the negatives' similarity term is a mean, their
    regularizer a sum, subtracted, with weight 1 on log τ (docs/amcl_authors.md). From
    https://arxiv.org/abs/2310.05615 as computed in the authors' code (GitHub ``LeiWangR/cl``).

    Shape:
        s_pos, tau_pos: (N,) each anchor's positive.
        s_neg, tau_neg: (N, k) its negatives.
        output: scalar.
    """
    s_pos, s_neg, tau_pos, tau_neg = (at_least_fp32(t) for t in (s_pos, s_neg, tau_pos, tau_neg))
    reg_neg = (torch.log(tau_neg) + 1.0 / tau_neg).sum(1)
    ell = -s_pos / tau_pos + (s_neg / tau_neg).mean(1) + beta * (omega(tau_pos, dim) - reg_neg)
    return ell.mean()


def _check_pair(anchor: torch.Tensor, positive: torch.Tensor, bank: torch.Tensor, k: int | None) -> None:
    if anchor.dim() != 2 or anchor.shape != positive.shape:
        raise ValueError(
            f"AMCL takes anchors and positives of one shape (N, D), got {tuple(anchor.shape)} and "
            f"{tuple(positive.shape)}"
        )
    n, d = anchor.shape
    if not (bank.dim() == 2 and bank.shape[1] == d) and not (bank.dim() == 3 and bank.shape[::2] == (n, d)):
        raise ValueError(
            f"AMCL's negatives must be (K, {d}) (a queue) or ({n}, K, {d}) (per anchor), got {tuple(bank.shape)}"
        )
    if bank.shape[-2] < 1:
        raise ValueError("AMCL needs at least one negative: the queue or the negatives' bank is empty")
    if k is not None and k < 1:
        raise ValueError(
            f"AMCL's top-k needs k >= 1, got {k} (use None for every negative in the posterior form)"
        )


def _bank_sims(a: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(N, K) similarities a_i·z_j of a shared (K, D) or per-anchor (N, K, D) bank."""
    return a @ bank.t() if bank.dim() == 2 else torch.einsum("nd,nkd->nk", a, bank)


def _negatives(
    a: torch.Tensor, bank: torch.Tensor, k: int | None, bank_sims: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The similarities of the negatives kept, and their indices into the bank (None: every negative)."""
    sims = _bank_sims(a, bank) if bank_sims is None else at_least_fp32(bank_sims)
    if sims.shape != (a.shape[0], bank.shape[-2]):
        raise ValueError(
            f"bank_sims must be anchor·bankᵀ of shape {(a.shape[0], bank.shape[-2])}, got {tuple(sims.shape)}"
        )
    if k is None or k >= sims.shape[1]:
        return sims, None
    # The hardest negatives by raw similarity; the choice carries no gradient, the values chosen do.
    return sims.topk(k, dim=1)


def _stats(
    s_pos: torch.Tensor, s_neg: torch.Tensor, tau_pos: torch.Tensor, tau_neg: torch.Tensor
) -> dict[str, torch.Tensor]:
    return {
        "sim_pos": s_pos.detach(),
        "sim_neg": s_neg.detach(),
        "tau_pos": tau_pos.detach(),
        "tau_neg": tau_neg.detach(),
    }


def amcl_authors_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    bank: torch.Tensor,
    phi: BilinearTemperatureNet,
    *,
    k: int = 100,
    beta: float = 0.01,
    dim: float | None = None,
    bank_sims: torch.Tensor | None = None,
    detach_phi_input: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One direction of AMCL's MoCo loss as the authors compute it (``AMCLMoCoLoss._direction``).

    Per anchor: the positive's similarity s⁺ and temperature τ⁺ = τ(a, p); the k most similar bank entries
    (the hardest negatives, k = min(k, K)) with their τ_j = τ(a, z_j); then :func:`amcl_authors_from_sims`,
    averaged over anchors. The bank is detached here (a queue carries no gradient); the positive is not, because
    the authors' second direction takes the key as the anchor and the query as its positive. Runs outside
    autocast in float32 (float64 inputs and a float64 ``phi`` stay float64). Paper:
    https://arxiv.org/abs/2310.05615; code: GitHub ``LeiWangR/cl``, ``amcl/losses.py``.

    Args:
        anchor: the anchors, L2-normalised (the authors normalise inside the loss; for unit vectors that is
            the identity, in value and gradient).
        positive: each anchor's positive, L2-normalised.
        bank: the negatives, L2-normalised: a queue, or per-anchor negatives (the authors' SimCLR variant).
        phi: the temperature network shared by every head and direction.
        k: how many of the hardest negatives to keep (authors: 100).
        beta: Ω's weight (the authors' loss class: 0.01; their MoCo training script: 1e-4).
        dim: D in Ω(τ) = (D/2)·log τ + 1/τ; None: the embedding dim (as the authors).
        bank_sims: the products anchor·bankᵀ if another term already computed them (with the anchor's gradient).
        detach_phi_input: feed φ detached embeddings (the authors do not).

    Shape:
        anchor, positive: (N, D).
        bank: (K, D) shared, or (N, K, D) per anchor.
        bank_sims: (N, K) or None.
        output: (loss, stats); loss a scalar; stats, detached: ``sim_pos`` (N,), ``sim_neg`` (N, k),
        ``tau_pos`` (N,), ``tau_neg`` (N, k).
    """
    _check_pair(anchor, positive, bank, k)
    with fp32_region(anchor):
        a, p, z = at_least_fp32(anchor), at_least_fp32(positive), at_least_fp32(bank).detach()
        s_pos = (a * p).sum(1)
        s_neg, idx = _negatives(a, z, k, bank_sims)
        a_phi, p_phi = (a.detach(), p.detach()) if detach_phi_input else (a, p)
        tau_pos = phi(a_phi, p_phi)
        tau_neg = phi.bank(a_phi, z, idx)
        loss = amcl_authors_from_sims(
            s_pos, s_neg, tau_pos, tau_neg, beta=beta, dim=a.shape[1] if dim is None else dim
        )
    return loss, _stats(s_pos, s_neg, tau_pos, tau_neg)


def amcl_authors_objective(
    queries: Sequence[torch.Tensor],
    keys: Sequence[torch.Tensor],
    banks: Sequence[torch.Tensor],
    phi: BilinearTemperatureNet,
    *,
    k: int = 100,
    beta: float = 0.01,
    dim: float | None = None,
    detach_phi_input: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The authors' whole MoCo objective: Σ_heads ½[ℓ(q_h, k_h, Z_h) + ℓ(k_h, q_h, Z_h)] with one shared φ.

    The two directions swap the roles of the same pair (query of view 1, key of view 2), both against the
    head's own queue; the heads are summed, not averaged (``AMCLMoCoLoss.forward``). Keys are detached here
    (momentum outputs); in the second direction the query, as the positive, keeps its gradient. Paper:
    https://arxiv.org/abs/2310.05615; code: GitHub ``LeiWangR/cl``, ``amcl/losses.py``.

    Args:
        queries: per head, the L2-normalised queries.
        keys: per head, the L2-normalised keys of the other view.
        banks: per head, its own queue.
        phi, k, beta, dim, detach_phi_input: as in :func:`amcl_authors_loss`.

    Shape:
        queries[h], keys[h]: (N, D). banks[h]: (K, D).
        output: (loss, stats); loss a scalar; stats, detached, every head and direction concatenated:
        ``sim_pos`` (2HN,), ``sim_neg`` (2HN, k), ``tau_pos`` (2HN,), ``tau_neg`` (2HN, k).
    """
    if not len(queries) == len(keys) == len(banks) >= 1:
        raise ValueError(
            f"AMCL needs one query, key and queue per head, got {len(queries)}, {len(keys)}, {len(banks)}"
        )
    total, parts = 0.0, []
    for q, key, bank in zip(queries, keys, banks):
        key = key.detach()
        l_qk, s_qk = amcl_authors_loss(
            q, key, bank, phi, k=k, beta=beta, dim=dim, detach_phi_input=detach_phi_input
        )
        l_kq, s_kq = amcl_authors_loss(
            key, q, bank, phi, k=k, beta=beta, dim=dim, detach_phi_input=detach_phi_input
        )
        total = total + 0.5 * (l_qk + l_kq)
        parts += [s_qk, s_kq]
    return total, {name: torch.cat([s[name] for s in parts]) for name in parts[0]}


def amcl_posterior_from_sims(
    s_pos: torch.Tensor,
    s_neg: torch.Tensor,
    tau_pos: torch.Tensor | float,
    tau_neg: torch.Tensor | float,
    *,
    beta: float,
    dim: float,
) -> torch.Tensor:
    """The posterior form's ℓ, averaged over anchors:
    ℓ = −log(e^{s⁺/τ⁺} / (e^{s⁺/τ⁺} + Σ_j e^{s_j/τ_j})) + β·[Ω(τ⁺) + mean_j Ω(τ_j)], Ω(τ) = (D/2)·log τ + 1/τ.

    InfoNCE over [positive, negatives] with per-pair temperatures (the positive at index 0), plus Ω; with
    every τ = T and β = 0 it is InfoNCE with temperature T. Our reading of https://arxiv.org/abs/2310.05615
    (``../shared/METHODS.md``, the ``posterior`` form).

    Shape:
        s_pos: (N,). s_neg: (N, J).
        tau_pos: (N,) or a float. tau_neg: (N, J) or a float.
        output: scalar.
    """
    s_pos, s_neg = at_least_fp32(s_pos), at_least_fp32(s_neg)
    tau_pos, tau_neg = (
        at_least_fp32(t)
        if torch.is_tensor(t)
        else torch.tensor(float(t), dtype=s_pos.dtype, device=s_pos.device)
        for t in (tau_pos, tau_neg)
    )
    logits = torch.cat([(s_pos / tau_pos).unsqueeze(1), s_neg / tau_neg], dim=1)
    ell = torch.logsumexp(logits, dim=1) - logits[:, 0]
    if beta:
        ell = ell + beta * (omega(tau_pos, dim) + omega(tau_neg.expand_as(s_neg), dim).mean(1))
    return ell.mean()


def amcl_posterior_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    bank: torch.Tensor,
    temperature: BilinearTemperatureNet | float,
    *,
    beta: float = 0.01,
    dim: float | None = None,
    topk: int | None = None,
    bank_sims: torch.Tensor | None = None,
    detach_phi_input: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """AMCL's posterior form for one direction: InfoNCE over the bank with per-pair temperatures, plus Ω.

    τ⁺ = τ(a, p) and τ_j = τ(a, z_j) from the shared :class:`BilinearTemperatureNet` (or one fixed T for every
    pair), over the whole bank or its ``topk`` hardest entries; then :func:`amcl_posterior_from_sims`. The bank
    is detached here. Runs outside autocast in float32 (float64 stays float64). Our reading of
    https://arxiv.org/abs/2310.05615 (the authors' code, GitHub ``LeiWangR/cl``, has the ``authors`` form only).

    Args:
        anchor: the anchors (queries), L2-normalised.
        positive: each anchor's positive (its key), L2-normalised.
        bank: the negatives (the head's queue), L2-normalised.
        temperature: the temperature network, or a float T for every pair (then it is InfoNCE plus a constant).
        beta: Ω's weight.
        dim: D in Ω; None: the embedding dim.
        topk: keep only the k most similar negatives per anchor; None: every negative.
        bank_sims: the products anchor·bankᵀ if another term (InfoNCE, CO2) already computed them.
        detach_phi_input: feed φ detached embeddings.

    Shape:
        anchor, positive: (N, D).
        bank: (K, D) shared, or (N, K, D) per anchor.
        bank_sims: (N, K) or None.
        output: (loss, stats); loss a scalar; stats, detached: ``sim_pos`` (N,), ``sim_neg`` (N, J),
        ``tau_pos`` (N,), ``tau_neg`` (N, J), J = K or topk.
    """
    _check_pair(anchor, positive, bank, topk)
    with fp32_region(anchor):
        a, p, z = at_least_fp32(anchor), at_least_fp32(positive), at_least_fp32(bank).detach()
        s_pos = (a * p).sum(1)
        s_neg, idx = _negatives(a, z, topk, bank_sims)
        if isinstance(temperature, BilinearTemperatureNet):
            a_phi, p_phi = (a.detach(), p.detach()) if detach_phi_input else (a, p)
            tau_pos, tau_neg = temperature(a_phi, p_phi), temperature.bank(a_phi, z, idx)
        else:
            if not temperature > 0:
                raise ValueError(f"a fixed temperature must be > 0, got {temperature}")
            tau_pos, tau_neg = torch.full_like(s_pos, temperature), torch.full_like(s_neg, temperature)
        loss = amcl_posterior_from_sims(
            s_pos, s_neg, tau_pos, tau_neg, beta=beta, dim=a.shape[1] if dim is None else dim
        )
    return loss, _stats(s_pos, s_neg, tau_pos, tau_neg)
