"""AMCL: adaptive multi-head contrast (Wang, Koniusz, Gedeon, Zheng, ECCV 2024, https://arxiv.org/abs/2310.05615).

H projection heads on the shared backbone, each pair of embeddings with its own temperature. Head 0 is the
base's own head; the others are fresh copies with their own momentum copy and queue. See docs/methods.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from ..distributed import gather_no_grad
from ..embeddings import Embeddings, Similarities
from ..losses import TemperatureNet, amcl_pair_loss, drop_positive, fp32_region, temperature_stats
from ..momentum import KeyQueue, MomentumEncoder
from ..registry import Facts, register_regularizer
from ._layer import Regularizer


@dataclass
class AMCLConfig:
    """AMCL adaptive multi-head contrast (arXiv 2310.05615): H heads, per-pair temperatures."""

    heads: int = 3  # H; head 0 is the base's projector, the others get their own momentum copy and queue
    # The loss scale: ℓ's gradients are ~2/τ per head, summed over H heads, about 30x InfoNCE's at the same lr.
    # 0.03 was the best of {1, 0.1, 0.03} in 120-step Fashion-MNIST probes; 1 fell below random init (docs/methods.md).
    weight: float = 0.03
    tau_min: float = 0.01
    tau_max: float = 2.0
    beta: float = 0.1  # weight of Ω(τ) = 1/τ + (m/2)·log τ
    m: float | None = None  # Ω's constant; None: the embedding dim D (positives then settle near τ = 2/D)
    hidden: int = 128  # φ's hidden width
    negatives: str = (
        "hardest"  # hardest (the most similar negative per anchor) | batch (every in-batch negative)
    )
    keep_base_loss: bool = False  # add the base's InfoNCE back (by default AMCL replaces it)
    # φ sees detached embeddings: the temperatures learn from the loss, but Ω's gradient does not move the
    # encoder through φ (docs/methods.md: with it, one step at the default lr collapsed the embeddings).
    detach_phi_input: bool = True


def _validate(m: MethodConfig) -> None:
    a = m.amcl
    if a.heads < 1:
        raise ConfigError(f"method.amcl.heads={a.heads}: need at least one head")
    if not 0 < a.tau_min < a.tau_max:
        raise ConfigError(f"method.amcl: need 0 < tau_min < tau_max, got {a.tau_min} and {a.tau_max}")
    if a.negatives not in ("hardest", "batch"):
        raise ConfigError(f"method.amcl.negatives={a.negatives!r} is not one of ['hardest', 'batch']")
    omega_min = 2.0 / (a.m if a.m is not None else m.dim)
    if omega_min <= a.tau_min * 1.2:
        raise ConfigError(
            f"method.amcl: positives settle near τ = 2/m = {omega_min:.4g}, at or below tau_min={a.tau_min}, "
            "so their temperatures would sit on the bound: lower method.amcl.tau_min or set method.amcl.m "
            "(default: method.dim)"
        )


@register_regularizer(
    "amcl",
    Facts("AMCL", ("arXiv:2310.05615",), "https://github.com/LeiWangR/cl"),
    AMCLConfig,
    _validate,
    description="H heads with adaptive per-pair temperatures",
)
class AMCL(Regularizer):
    """H heads with per-pair temperatures. Head 0 is the base's own head (its queries, keys and queue);
    heads 1..H−1 are fresh copies of the base's head, each with its momentum copy and queue."""

    needs_features = True

    def __init__(self, base: nn.Module | None, cfg: MethodConfig) -> None:
        super().__init__()
        c = cfg.amcl
        self.c = c
        self.replaces_base_loss = not c.keep_base_loss
        self.m = float(c.m if c.m is not None else cfg.dim)
        self.weights = {"loss_amcl": c.weight}
        heads, tails = [], []
        for _ in range(c.heads - 1):
            head, tail = base.new_query_head()
            heads.append(MomentumEncoder(head))
            tails.append(tail if tail is not None else nn.Identity())
        self.heads = nn.ModuleList(heads)
        self.tails = nn.ModuleList(tails)
        self.uses_queue = cfg.base == "mocov2"
        self.queues = (
            nn.ModuleList(KeyQueue(cfg.queue_size, cfg.dim) for _ in heads) if self.uses_queue else None
        )
        self.phi = nn.ModuleList(
            TemperatureNet(cfg.dim, c.hidden, c.tau_min, c.tau_max) for _ in range(c.heads)
        )
        self._extra_keys: list[torch.Tensor] | None = None

    def update_momentum(self, m: float) -> None:
        for h in self.heads:
            h.update(m)

    def _head_embeddings(self, emb: Embeddings, step: Similarities) -> list[dict]:
        """Per head: queries and keys per view, every process's keys, and the negatives' bank."""
        out = [dict(q=step.q, k=step.k, k_all=step.k_all, bank=step.queue, cross=step.cross)]
        if not self.heads:
            return out
        keys = []
        per_head = []
        for head, tail in zip(self.heads, self.tails):
            q = [None if f is None else F.normalize(tail(head(f)), dim=1) for f in emb.feats_q]
            with torch.no_grad():
                k = [None if f is None else F.normalize(head.forward_momentum(f), dim=1) for f in emb.feats_k]
            keys.append(torch.cat([v for v in k if v is not None]))
            per_head.append((q, k))
        # One collective for every extra head's keys: (N·V, (H−1)·D) per process.
        gathered = gather_no_grad(torch.cat(keys, dim=1)).float()
        self._extra_keys = []  # per head, what its queue gets: view by view, each in rank order (as the base's)
        views = [b for b in (0, 1) if step.k[b] is not None]
        n, d = step.k[views[0]].shape
        world = gathered.shape[0] // (n * len(views))
        g = gathered.view(world, len(views), n, len(self.heads), d)
        for c, (q, k) in enumerate(per_head):
            k_all = [None, None]
            for i, b in enumerate(views):
                k_all[b] = g[:, i, :, c].reshape(world * n, d)
            self._extra_keys.append(torch.cat([k_all[b] for b in views]))
            bank = None if self.queues is None else self.queues[c].queue
            out.append(
                dict(
                    q=[None if v is None else v.float() for v in q],
                    k=[None if v is None else v.float() for v in k],
                    k_all=k_all,
                    bank=bank,
                    cross=None,
                )
            )
        return out

    def forward(self, emb: Embeddings, step: Similarities) -> dict[str, torch.Tensor]:
        heads = self._head_embeddings(emb, step)
        losses, taus_pos, taus_neg, sims_pos, sims_neg = [], [], [], [], []
        with fp32_region(step.q[step.pairs[0]]):
            for c, h in enumerate(heads):
                for a in step.pairs:
                    z, kp = h["q"][a], h["k"][1 - a]
                    s_pos = (z * kp).sum(1)
                    zt = z.detach() if self.c.detach_phi_input else z
                    tau_pos = self.phi[c](zt, kp)
                    z_neg, s_neg = self._negatives(step, h, c, a, z)
                    tau_neg = self.phi[c](zt.unsqueeze(1).expand_as(z_neg) if z_neg.dim() == 3 else zt, z_neg)
                    losses.append(amcl_pair_loss(s_pos, s_neg, tau_pos, tau_neg, self.c.beta, self.m))
                    sims_pos.append(s_pos.detach().mean())
                    sims_neg.append(s_neg.detach().mean())
                    taus_pos.append(tau_pos.detach().flatten())
                    taus_neg.append(tau_neg.detach().flatten())
        out = {"loss_amcl": sum(losses) * (len(heads) / len(losses))}  # sum over heads, mean over pairs
        # Mean cosine of the positives and of the negatives used: a collapse shows as both going to 1.
        out["amcl_sim_pos"] = torch.stack(sims_pos).mean()
        out["amcl_sim_neg"] = torch.stack(sims_neg).mean()
        for side, taus in (("pos", taus_pos), ("neg", taus_neg)):
            for stat, v in temperature_stats(torch.cat(taus), self.c.tau_min, self.c.tau_max).items():
                out[f"amcl_tau_{side}_{stat}"] = v
        return out

    def _negatives(
        self, step: Similarities, h: dict, c: int, a: int, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The negative embeddings and their similarities: (N, D), (N,) for the hardest; (N, J, D), (N, J)
        for every in-batch negative."""
        k_all = h["k_all"][1 - a]
        if self.c.negatives == "batch" or h["bank"] is None:
            neg_bank = k_all
            with torch.no_grad():
                sims = drop_positive(
                    h["cross"](a) if h["cross"] is not None else z @ k_all.t(), step.offset
                ).detach()
            # Column j of the dropped matrix is key j (j < offset + i) or key j + 1.
            n = z.shape[0]
            idx_all = drop_positive(torch.arange(k_all.shape[0], device=z.device).expand(n, -1), step.offset)
            if self.c.negatives == "batch":
                z_neg = neg_bank[idx_all]  # (N, M−1, D)
                return z_neg, torch.einsum("nd,njd->nj", z, z_neg)
            idx = idx_all.gather(1, sims.argmax(1, keepdim=True)).squeeze(1)
        else:
            neg_bank = h["bank"]
            with torch.no_grad():
                sims = step.query_queue(a).detach() if c == 0 else z.detach() @ neg_bank.t()
            idx = sims.argmax(1)
        z_neg = neg_bank[idx]
        return z_neg, (z * z_neg).sum(1)

    def after_step(self, emb: Embeddings) -> None:
        if self.queues is None or self._extra_keys is None:
            self._extra_keys = None
            return
        for q, keys in zip(self.queues, self._extra_keys):
            q.enqueue(keys)
        self._extra_keys = None
