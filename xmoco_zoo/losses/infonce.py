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


def hardest(l_neg: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's k largest similarities (all of them when k >= K), the hard negatives: the choice carries no
    gradient, the values chosen do.

    Shape:
        l_neg: (N, K) similarities to the negatives. output: (N, min(k, K)).
    """
    return l_neg if k >= l_neg.shape[1] else l_neg.topk(k, dim=1, sorted=False).values


class _InfoNCEQueue(torch.autograd.Function):
    """MoCo v2's InfoNCE over a queue with one (N, K) buffer, updated in place: 1/T folded into q before the
    product, the buffer turned into exp(logit − row max) in place, and in backward into the softmax gradient in
    place (the composed loss makes about five (N, K) tensors; docs/performance.md has the measured cost). Gradient
    for q only (keys and the queue carry none in MoCo). One backward per forward (the buffer is reused).
    """

    @staticmethod
    def forward(ctx, q, k, queue, temperature):  # noqa: ANN001, ANN205
        inv_t = 1.0 / temperature
        pos = (q * k).sum(1) * inv_t  # (N,) positive logits
        z = torch.mm(q * inv_t, queue.t())  # (N, K) negative logits: the one (N, K) buffer
        neg_max = z.amax(1)
        m = torch.maximum(neg_max, pos)
        z.sub_(m[:, None]).exp_()
        s = z.sum(1) + (pos - m).exp()
        loss = (m + s.log() - pos).mean()
        acc = (pos > neg_max).float().mean()  # the positive beats every negative
        ctx.save_for_backward(z, s, m, pos, k, queue)
        ctx.inv_t = inv_t
        ctx.mark_non_differentiable(acc)
        return loss, acc

    @staticmethod
    def backward(ctx, grad_loss, _grad_acc):  # noqa: ANN001, ANN205
        z, s, m, pos, k, queue = ctx.saved_tensors
        scale = grad_loss / z.shape[0]
        z.mul_((scale / s)[:, None])  # softmax over the negatives, times dL/dloss / N
        grad_q = torch.mm(z, queue)
        grad_q.addcmul_(k, (((pos - m).exp() / s - 1) * scale)[:, None])
        return grad_q.mul_(ctx.inv_t), None, None, None


def info_nce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo v2's InfoNCE over the queue and its top-1 accuracy, computed with one (N, K) buffer.

    The same value and q-gradient as :func:`info_nce_from_sims` on ``(q·k, q·queueᵀ)``, which serves when other
    terms read the products q·queueᵀ too (a regularized method computes them once, in
    :class:`xmoco_zoo.embeddings.Similarities`).

    Shape:
        q: (N, D) normalised queries (with grad). k: (N, D) normalised keys. queue: (K, D) negatives.
        output: (loss, accuracy) scalars; accuracy is the share of rows whose positive beats every negative.
    """
    q, k, queue = at_least_fp32(q), at_least_fp32(k).detach(), at_least_fp32(queue).detach()
    return _InfoNCEQueue.apply(q, k, queue, temperature)


def contrastive_loss(sims: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """MoCo v3's ctr(q, k) = CE(q·k_allᵀ / T, label i + offset) · 2T.

    Shape:
        sims: (N, M) q·k_allᵀ: this process's N normalised queries against every process's M normalised keys.
        offset: N · rank, the position of this process's keys in ``k_all`` (row i's positive is column offset + i).
        output: scalar.
    """
    logits = at_least_fp32(sims) / temperature
    labels = torch.arange(sims.shape[0], device=sims.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)
