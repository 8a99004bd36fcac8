"""AMCL: adaptive multi-head contrast (Wang, Koniusz, Gedeon, Zheng, ECCV 2024, https://arxiv.org/abs/2310.05615).

Each pair gets its own temperature from a small network φ on the two embeddings; each pair is a Bernoulli
"is this the positive?" with logit 2·sim/τ, and a regularizer Ω keeps the temperatures from running away.
The softplus (likelihood) form is our reading of the paper and the authors' code; see docs/methods.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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
    the logit scale 1/τ is then within 1 % of its extreme)."""
    tau = tau.detach().float()
    at_bound = (tau <= tau_min * (1 + rel)) | (tau >= tau_max / (1 + rel))
    return {"mean": tau.mean(), "min": tau.min(), "max": tau.max(), "at_bound": at_bound.float().mean()}


def omega_minimum(m: float) -> float:
    """The τ minimising Ω alone: positives settle just below it (the softplus term only pushes τ⁺ down)."""
    return 2.0 / m if m > 0 else math.inf
