"""The regularizer layer: loss terms that wrap any base, reading its embeddings and one similarity cache."""

from __future__ import annotations

import torch
from torch import nn

from ..config import MethodConfig
from ..embeddings import Embeddings, Similarities
from ..registry import get_regularizer_spec


class Regularizer(nn.Module):
    """A loss term over a base's embeddings.

    ``weights`` maps each term it returns to its weight in the total loss; ``forward(emb, sims)`` returns those
    terms (and any statistics to log). ``update_momentum(m)`` and ``after_step(emb)`` serve a term that owns
    state of its own (AMCL's extra heads and queues).
    """

    needs_features = False  # set the base's keep_features: the term reads the backbone features
    replaces_base_loss = False  # the base's InfoNCE is logged but not trained on
    weights: dict[str, float]

    def update_momentum(self, m: float) -> None:
        pass

    def forward(self, emb: Embeddings, sims: Similarities) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, emb: Embeddings) -> None:
        pass


class Regularized(nn.Module):
    """A base plus ``cfg.regularizers``: the base's four steps, with every term computed between its loss and
    its enqueue. ``forward(x1, x2, m)`` returns each term on its own (``loss_nce``, ``loss_co2``...), the
    statistics, and ``loss``, their weighted sum."""

    def __init__(self, base: nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.base = base
        self.cfg = cfg
        self.regularizers = nn.ModuleDict(
            {n: get_regularizer_spec(n).module(base, cfg) for n in cfg.regularizers}
        )
        base.keep_features = any(r.needs_features for r in self.regularizers.values())
        self.keeps_base_loss = not any(r.replaces_base_loss for r in self.regularizers.values())
        # Checkpoints written before this layer existed hold the base's state at the top level.
        self._register_load_state_dict_pre_hook(
            _nest_base_keys, with_module=True
        )  # public only in newer torch

    @property
    def backbone(self) -> nn.Module:
        return self.base.backbone

    @property
    def encoder(self) -> nn.Module:
        """The base's momentum encoder (online and momentum backbone + head)."""
        return self.base.encoder

    @property
    def uses_sync_bn(self) -> bool:
        return self.base.uses_sync_bn

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, m: float) -> dict[str, torch.Tensor]:
        self.base.update_momentum(m)
        for r in self.regularizers.values():
            r.update_momentum(m)
        emb = self.base.embed(x1, x2)
        sims = Similarities(emb)
        out = self.base.loss(emb, sims)
        total = out["loss_nce"] if self.keeps_base_loss else None
        for r in self.regularizers.values():
            terms = r(emb, sims)
            for name, weight in r.weights.items():
                total = terms[name] * weight if total is None else total + terms[name] * weight
            out.update(terms)
        if not self.keeps_base_loss:
            out["loss_nce"] = out["loss_nce"].detach()  # logged for comparison, not trained on
        self.base.enqueue(emb)
        for r in self.regularizers.values():
            r.after_step(emb)
        out["loss"] = total
        return out


def _nest_base_keys(module, state_dict, prefix, *args) -> None:  # noqa: ANN001
    """Load a state dict of the earlier layout (``encoder.*``, ``queue.*``, ``predictor.*`` at the top) as
    ``base.*``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if rest.split(".", 1)[0] in ("encoder", "queue", "predictor"):
            state_dict[prefix + "base." + rest] = state_dict.pop(key)
