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
from ..losses import (
    BilinearTemperatureNet,
    TemperatureNet,
    amcl_authors_loss,
    amcl_pair_loss,
    amcl_posterior_loss,
    at_least_fp32,
    drop_positive,
    fp32_region,
    temperature_stats,
)
from ..momentum import KeyQueue, MomentumEncoder
from ..registry import Facts, register_regularizer
from ._layer import Regularizer

FORMS = ("likelihood", "authors", "posterior")
# Per-form defaults of the settings left at None (docs/methods.md, docs/amcl_authors.md): the authors' form takes
# their MoCo training script's values; likelihood keeps the values measured with it; posterior starts from
# InfoNCE's range of temperatures.
FORM_DEFAULTS: dict[str, dict] = {
    "likelihood": dict(weight=0.03, tau_min=0.01, beta=0.1, detach_phi_input=True),
    "authors": dict(weight=1.0, tau_min=1e-5, beta=1e-4, detach_phi_input=False),
    "posterior": dict(weight=1.0, tau_min=0.05, beta=1e-3, detach_phi_input=False),
}


@dataclass
class AMCLConfig:
    """AMCL adaptive multi-head contrast (arXiv 2310.05615): H heads, per-pair temperatures.

    ``form`` picks what is computed (docs/methods.md):
    - ``likelihood``: each pair a Bernoulli "is this the positive?" with logit 2·sim/τ, hardest negative, one φ
      per head (our first reading);
    - ``authors``: exactly the authors' MoCo loss (GitHub LeiWangR/cl): top-k hardest queue negatives, one φ shared
      by the heads with the bilinear score and sigmoid(−r), both directions per head, summed over heads;
    - ``posterior``: InfoNCE over the queue with per-pair temperatures from the shared φ, plus Ω.
    Settings left at None take the form's default (FORM_DEFAULTS); the resolved values are written to the run's
    config.yaml and the model card.
    """

    form: str = "posterior"  # the form that trains best on Fashion-MNIST (docs/results/methods_fmnist.md)
    heads: int = 3  # H; head 0 is the base's projector, the others get their own momentum copy and queue
    # The loss scale. likelihood: ℓ's gradients are ~2/τ per head, summed over H heads, about 30x InfoNCE's at the
    # same lr; 0.03 was the best of {1, 0.1, 0.03} in 120-step Fashion-MNIST probes (docs/methods.md).
    weight: float | None = None
    tau_min: float | None = None
    tau_max: float = 2.0
    beta: float | None = None  # weight of Ω(τ)
    m: float | None = (
        None  # likelihood: Ω's constant; None: the embedding dim D (positives settle near τ = 2/D)
    )
    hidden: int = 128  # φ's hidden width (the authors' training script: 128)
    negatives: str = (
        "hardest"  # likelihood: hardest (most similar negative per anchor) | batch (every in-batch one)
    )
    topk: int = 100  # authors: the k hardest queue negatives per anchor
    posterior_topk: int | None = None  # posterior: None for the whole queue, or the k hardest
    keep_base_loss: bool = False  # add the base's InfoNCE back (by default AMCL replaces it)
    # φ sees detached embeddings: the temperatures learn from the loss, but Ω's gradient does not move the encoder
    # through φ. likelihood: True (with it, one step at the default lr collapsed the embeddings); the authors: False.
    detach_phi_input: bool | None = None


def fill_form_defaults(a: AMCLConfig) -> AMCLConfig:
    """Set the settings left at None to the form's defaults (in place; idempotent)."""
    for key, value in FORM_DEFAULTS[a.form].items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    return a


def _validate(m: MethodConfig) -> None:
    a = m.amcl
    if a.form not in FORMS:
        raise ConfigError(f"method.amcl.form={a.form!r} is not one of {list(FORMS)}")
    fill_form_defaults(a)
    if a.heads < 1:
        raise ConfigError(f"method.amcl.heads={a.heads}: need at least one head")
    if not 0 < a.tau_min < a.tau_max:
        raise ConfigError(f"method.amcl: need 0 < tau_min < tau_max, got {a.tau_min} and {a.tau_max}")
    if a.negatives not in ("hardest", "batch"):
        raise ConfigError(f"method.amcl.negatives={a.negatives!r} is not one of ['hardest', 'batch']")
    if a.topk < 1 or (a.posterior_topk is not None and a.posterior_topk < 1):
        raise ConfigError(
            "method.amcl.topk and posterior_topk must be >= 1 (posterior_topk: null for the whole queue)"
        )
    omega_min = 2.0 / (a.m if a.m is not None else m.dim)
    if a.form == "likelihood" and omega_min <= a.tau_min * 1.2:
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
        c = fill_form_defaults(cfg.amcl)
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
        if c.form == "likelihood":  # one φ per head
            self.phi = nn.ModuleList(
                TemperatureNet(cfg.dim, c.hidden, c.tau_min, c.tau_max) for _ in range(c.heads)
            )
        else:  # one φ shared by every head and direction
            self.phi = BilinearTemperatureNet(cfg.dim, c.hidden, c.tau_min, c.tau_max)
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
        gathered = at_least_fp32(gather_no_grad(torch.cat(keys, dim=1)))
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
            # A copy: the queue is updated in place after the loss, before autograd's backward reads it.
            bank = None if self.queues is None else self.queues[c].queue.clone()
            out.append(
                dict(
                    q=[None if v is None else at_least_fp32(v) for v in q],
                    k=[None if v is None else at_least_fp32(v) for v in k],
                    k_all=k_all,
                    bank=bank,
                    cross=None,
                )
            )
        return out

    def forward(self, emb: Embeddings, step: Similarities) -> dict[str, torch.Tensor]:
        heads = self._head_embeddings(emb, step)
        if self.c.form != "likelihood":
            return self._forward_shared_phi(heads, step)
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
        loss = sum(losses) * (len(heads) / len(losses))  # sum over heads, mean over pairs
        return self._terms(loss, sims_pos, sims_neg, taus_pos, taus_neg)

    def _terms(self, loss, sims_pos, sims_neg, taus_pos, taus_neg) -> dict[str, torch.Tensor]:  # noqa: ANN001
        out = {"loss_amcl": loss}
        # Mean cosine of the positives and of the negatives used: a collapse shows as both going to 1.
        out["amcl_sim_pos"] = torch.stack(sims_pos).mean()
        out["amcl_sim_neg"] = torch.stack(sims_neg).mean()
        for side, taus in (("pos", taus_pos), ("neg", taus_neg)):
            for stat, v in temperature_stats(torch.cat(taus), self.c.tau_min, self.c.tau_max).items():
                out[f"amcl_tau_{side}_{stat}"] = v
        return out

    def _forward_shared_phi(self, heads: list[dict], step: Similarities) -> dict[str, torch.Tensor]:
        """The ``authors`` and ``posterior`` forms: one φ for every head; per head and pair, the head's queue (or,
        without a queue, the other keys of the batch) as negatives; summed over heads, averaged over pairs."""
        c = self.c
        losses, taus_pos, taus_neg, sims_pos, sims_neg = [], [], [], [], []
        with fp32_region(step.q[step.pairs[0]]):
            for h_i, h in enumerate(heads):
                for a in step.pairs:
                    q, k = h["q"][a], h["k"][1 - a].detach()
                    bank, q_sims, k_sims = self._bank(step, h, h_i, a, q, k)
                    if (
                        c.form == "authors"
                    ):  # ½[ℓ(q, k, Z) + ℓ(k, q, Z)]: the key is the second direction's anchor
                        kw = dict(k=c.topk, beta=c.beta, detach_phi_input=c.detach_phi_input)
                        l_qk, s_qk = amcl_authors_loss(q, k, bank, self.phi, bank_sims=q_sims, **kw)
                        l_kq, s_kq = amcl_authors_loss(k, q, bank, self.phi, bank_sims=k_sims, **kw)
                        loss, parts = 0.5 * (l_qk + l_kq), [s_qk, s_kq]
                    else:
                        loss, stats = amcl_posterior_loss(
                            q, k, bank, self.phi, beta=c.beta, topk=c.posterior_topk, bank_sims=q_sims,
                            detach_phi_input=c.detach_phi_input,
                        )  # fmt: skip
                        parts = [stats]
                    losses.append(loss)
                    for st in parts:
                        sims_pos.append(st["sim_pos"].mean())
                        sims_neg.append(st["sim_neg"].mean())
                        taus_pos.append(st["tau_pos"].flatten())
                        taus_neg.append(st["tau_neg"].flatten())
        loss = sum(losses) * (len(heads) / len(losses))  # sum over heads, mean over pairs
        return self._terms(loss, sims_pos, sims_neg, taus_pos, taus_neg)

    def _bank(
        self, step: Similarities, h: dict, h_i: int, a: int, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Pair a's negatives for head ``h_i``: its queue (K, D), with the products q·Zᵀ and k·Zᵀ when the shared
        cache has them (head 0); without a queue, every process's other keys per anchor (N, M − 1, D)."""
        if h["bank"] is not None:
            if h_i == 0:
                return h["bank"], step.query_queue(a), step.key_queue(a)
            return h["bank"], None, None
        k_all = h["k_all"][1 - a]
        n = q.shape[0]
        idx = drop_positive(torch.arange(k_all.shape[0], device=q.device).expand(n, -1), step.offset)
        return k_all[idx], None, None

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
