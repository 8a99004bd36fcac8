"""InfoNCE for MoCo v2 (queue negatives) and MoCo v3's in-batch contrastive loss.

MoCo v2: He et al., https://arxiv.org/abs/1911.05722 and Chen et al., https://arxiv.org/abs/2003.04297.
MoCo v3: Chen, Xie, He, https://arxiv.org/abs/2104.02057.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half/bfloat16 to float32 (losses run in fp32 under autocast); float64 stays float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def info_nce_from_sims(l_pos: torch.Tensor, l_neg: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE from precomputed similarities: CE over [pos, negs] / T with the positive at index 0.

    Shape:
        l_pos: (N,) sim(q_i, k_i).
        l_neg: (N, K) sim(q_i, z_j) over the queue.
        output: scalar, mean over N.
    """
    logits = at_least_fp32(torch.cat([l_pos.unsqueeze(1), l_neg], dim=1)) / temperature
    return torch.logsumexp(logits, dim=1).mean() - logits[:, 0].mean()


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo v2's InfoNCE.

    Shape:
        q: (N, D) normalised queries (with grad). k: (N, D) normalised keys. queue: (K, D) negatives.
    """
    return info_nce_from_sims((q * k).sum(1), q @ queue.t(), temperature)


def contrastive_loss(
    q: torch.Tensor, k_all: torch.Tensor, temperature: float, offset: int = 0
) -> torch.Tensor:
    """MoCo v3's ctr(q, k): CE(q·k_allᵀ / T, label i + offset) · 2T.

    Shape:
        q: (N, D) normalised queries of this process. k_all: (M, D) normalised keys of every process.
        offset: N · rank, the position of this process's keys in ``k_all``.
    """
    return contrastive_loss_from_sims(q @ k_all.t(), temperature, offset)


def contrastive_loss_from_sims(sims: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """MoCo v3's ctr from the precomputed (N, M) product q·k_allᵀ (positive of row i at ``offset + i``)."""
    logits = at_least_fp32(sims) / temperature
    labels = torch.arange(sims.shape[0], device=sims.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)
