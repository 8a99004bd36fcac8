from __future__ import annotations

import torch


def drop_positive(sims: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Remove each row's positive column: row ``i`` loses column ``offset + i``.

    Shape:
        sims: (N, M) similarities of this process's N anchors to every process's M keys.
        output: (N, M − 1), the other columns in their original order.
    """
    n, m = sims.shape
    keep = torch.ones(n, m, dtype=torch.bool, device=sims.device)
    keep[torch.arange(n, device=sims.device), torch.arange(n, device=sims.device) + offset] = False
    return sims[keep].view(n, m - 1)


def symmetric_kl_from_logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """½ KL(softmax a ‖ softmax b) + ½ KL(softmax b ‖ softmax a), summed over the last dim, mean over rows.

    Gradient flows into whichever input carries it (detach one side to make it a target).
    """
    la, lb = torch.log_softmax(a, dim=-1), torch.log_softmax(b, dim=-1)
    # ½ Σ (pa − pb)(log pa − log pb) is the symmetric KL in one pass.
    return 0.5 * ((la.exp() - lb.exp()) * (la - lb)).sum(-1).mean()


def fp32_region(x: torch.Tensor) -> torch.autocast:
    """A region outside autocast, so a loss's products and its temperature network run in float32 (or float64
    when given float64) even under mixed precision: AMCL's 1/τ reaches 1e5, beyond what float16 holds."""
    return torch.autocast(device_type=x.device.type, enabled=False)
