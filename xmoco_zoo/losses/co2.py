"""CO2: consistency regularization over negatives (Wei et al., ICLR 2021, https://arxiv.org/abs/2010.02217).

The query's and the key's similarity distributions over the *same* negatives should agree. The positive is
not part of either distribution.
"""

from __future__ import annotations

import torch

from ._util import symmetric_kl_from_logits
from .infonce import at_least_fp32


def co2_consistency(
    query_neg: torch.Tensor, key_neg: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    """L_con = ½ KL(P‖Q) + ½ KL(Q‖P), Q = softmax(q·Zᵀ/τ) (with grad), P = softmax(k·Zᵀ/τ) (a target).

    Shape:
        query_neg: (N, K) q_i · z_j over the negatives (MoCo v2: the queue; MoCo v3: keys j ≠ i).
        key_neg: (N, K) k_i · z_j over the same negatives; detached here.
        output: scalar, summed over K, mean over N.
    """
    q = at_least_fp32(query_neg) / temperature
    p = at_least_fp32(key_neg).detach() / temperature
    return symmetric_kl_from_logits(p, q)
