"""XMoCo's two terms: cross-similarity consistency and uniform negatives.

Seyfi et al., arXiv 2206.04676. The paper's equations were not available; this is our reading of its
abstract (see docs/methods.md): for any pair of images (i, j), positive or negative, the similarity of view 1
of i to view 2 of j should equal that of view 2 of i to view 1 of j, and a query should be equally far from
all of its negatives.
"""

from __future__ import annotations

import math

import torch

from ._util import drop_positive, symmetric_kl_from_logits
from .infonce import at_least_fp32


def cross_consistency(
    s12: torch.Tensor, s21: torch.Tensor, temperature: float = 0.2, kind: str = "kl"
) -> torch.Tensor:
    """L_x between the cross-similarity matrices S12 = q1·k2ᵀ and S21 = q2·k1ᵀ (both carry gradient via q).

    Shape:
        s12, s21: (N, M) this process's N anchors against every process's M keys (diagonal included).
        output: scalar. ``kind="kl"``: row-wise symmetric KL of softmax(S/τ), mean over rows;
        ``kind="mse"``: mean squared difference of the raw cosines.
    """
    s12, s21 = at_least_fp32(s12), at_least_fp32(s21)
    if kind == "kl":
        return symmetric_kl_from_logits(s21 / temperature, s12 / temperature)
    if kind == "mse":
        return (s12 - s21).pow(2).mean()
    raise ValueError(f"unknown cross-consistency kind {kind!r}: use 'kl' or 'mse'")


def uniformity(s12: torch.Tensor, temperature: float = 0.2, offset: int = 0) -> torch.Tensor:
    """L_u = mean_i KL(p_i ‖ uniform) = log(M−1) − H(p_i), p_i = softmax over j ≠ i of S12[i, j]/τ.

    Shape:
        s12: (N, M) with row i's positive at column ``offset + i``. output: scalar, >= 0.
    """
    neg = drop_positive(at_least_fp32(s12), offset) / temperature
    logp = torch.log_softmax(neg, dim=1)
    return math.log(neg.shape[1]) + (logp.exp() * logp).sum(1).mean()
