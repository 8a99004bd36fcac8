"""CO2: consistency over negatives (Wei et al., ICLR 2021, https://arxiv.org/abs/2010.02217)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import MethodConfig
from ..embeddings import Embeddings, Similarities
from ..losses import co2_consistency, fp32_region
from ..registry import Facts, register_regularizer
from ._layer import Regularizer


@dataclass
class CO2Config:
    """CO2 consistency over negatives (arXiv 2010.02217): L += weight · L_con."""

    weight: float = 1.0  # α
    temperature: float = 0.05  # τ_con


@register_regularizer(
    "co2",
    Facts("CO2", ("arXiv:2010.02217",)),
    CO2Config,
    description="consistency of the query's and the key's distributions over the same negatives",
)
class CO2(Regularizer):
    """L_con per pair over that pair's negatives (the queue, or the other keys), averaged over pairs."""

    def __init__(self, base: torch.nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.temperature = cfg.co2.temperature
        self.weights = {"loss_co2": cfg.co2.weight}

    def forward(self, emb: Embeddings, sims: Similarities) -> dict[str, torch.Tensor]:
        with fp32_region(sims.q[sims.pairs[0]]):
            terms = [co2_consistency(*sims.negatives(a), self.temperature) for a in sims.pairs]
        return {"loss_co2": sum(terms) / len(terms)}
