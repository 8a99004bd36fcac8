"""The regularizers that plug into any base: CO2, XMoCo and AMCL.

Each is a module with ``weights`` (term name → weight in the total loss), ``forward(step)`` → its terms
(and statistics) computed from the shared :class:`Step` products, ``update_momentum(m)`` and
``after_step(step)`` for the state it owns (AMCL's extra heads and queues).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig
from ..distributed import gather_no_grad
from ..losses import (
    TemperatureNet,
    amcl_pair_loss,
    co2_consistency,
    cross_consistency,
    drop_positive,
    temperature_stats,
    uniformity,
)
from ..momentum import KeyQueue, MomentumEncoder
from ._common import fp32_region
from .step import Step


class Regularizer(nn.Module):
    needs_features = False
    replaces_base_loss = False
    weights: dict[str, float]

    def update_momentum(self, m: float) -> None:
        pass

    def after_step(self, step: Step) -> None:
        pass


class CO2(Regularizer):
    """L_con per pair over that pair's negatives (queue, or the other keys), averaged over pairs."""

    def __init__(self, cfg: MethodConfig) -> None:
        super().__init__()
        self.temperature = cfg.co2.temperature
        self.weights = {"loss_co2": cfg.co2.weight}

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        with fp32_region(step.q[step.pairs[0]]):
            terms = [co2_consistency(*step.negatives(a), self.temperature) for a in step.pairs]
        return {"loss_co2": sum(terms) / len(terms)}


class XMoCo(Regularizer):
    """L_x between S12 and S21 and L_u over S12's negatives (both views must be queries)."""

    def __init__(self, cfg: MethodConfig) -> None:
        super().__init__()
        self.c = cfg.xmoco
        self.weights = {"loss_xcross": cfg.xmoco.cross_weight, "loss_uniform": cfg.xmoco.uniform_weight}

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        if step.pairs != [0, 1]:
            raise RuntimeError("xmoco needs both views as queries (method.symmetric=true on MoCo v2)")
        s12, s21 = step.cross(0), step.cross(1)
        with fp32_region(s12):
            lx = cross_consistency(s12, s21, self.c.cross_temperature, self.c.cross_kind)
            lu = uniformity(s12, self.c.uniform_temperature, step.offset)
        return {"loss_xcross": lx, "loss_uniform": lu}


class AMCL(Regularizer):
    """H heads with per-pair temperatures. Head 0 is the base's own head (its queries, keys and queue);
    heads 1..H−1 are fresh copies of the base's head, each with its momentum copy and queue."""

    needs_features = True

    def __init__(self, base: nn.Module, cfg: MethodConfig) -> None:
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

    def _head_embeddings(self, step: Step) -> list[dict]:
        """Per head: queries and keys per view, every process's keys, and the negatives' bank."""
        out = [dict(q=step.q, k=step.k, k_all=step.k_all, bank=step.queue, cross=step.cross)]
        if not self.heads:
            return out
        keys = []
        per_head = []
        for head, tail in zip(self.heads, self.tails):
            q = [None if f is None else F.normalize(tail(head(f)), dim=1) for f in step.feats_q]
            with torch.no_grad():
                k = [
                    None if f is None else F.normalize(head.forward_momentum(f), dim=1) for f in step.feats_k
                ]
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

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        heads = self._head_embeddings(step)
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
        self, step: Step, h: dict, c: int, a: int, z: torch.Tensor
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

    def after_step(self, step: Step) -> None:
        if self.queues is None or self._extra_keys is None:
            self._extra_keys = None
            return
        for q, keys in zip(self.queues, self._extra_keys):
            q.enqueue(keys)
        self._extra_keys = None


def build_regularizer(name: str, base: nn.Module, cfg: MethodConfig) -> Regularizer:
    if name == "co2":
        return CO2(cfg)
    if name == "xmoco":
        return XMoCo(cfg)
    if name == "amcl":
        return AMCL(base, cfg)
    raise ValueError(f"unknown regularizer {name!r}: use co2, xmoco or amcl")
