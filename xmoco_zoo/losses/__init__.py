"""Losses as small pure functions over L2-normalised embeddings and their similarity products."""

from ._util import drop_positive, fp32_region, symmetric_kl_from_logits
from .amcl import (
    BilinearTemperatureNet,
    TemperatureNet,
    amcl_authors_from_sims,
    amcl_authors_loss,
    amcl_authors_objective,
    amcl_pair_loss,
    amcl_posterior_from_sims,
    amcl_posterior_loss,
    omega,
    omega_minimum,
    omega_shifted,
    temperature_from_logit,
    temperature_stats,
)
from .co2 import co2_consistency
from .infonce import at_least_fp32, contrastive_loss, hardest, info_nce, info_nce_from_sims
from .xmoco import cross_consistency, uniformity

__all__ = [
    "BilinearTemperatureNet",
    "TemperatureNet",
    "amcl_authors_from_sims",
    "amcl_authors_loss",
    "amcl_authors_objective",
    "amcl_pair_loss",
    "amcl_posterior_from_sims",
    "amcl_posterior_loss",
    "at_least_fp32",
    "co2_consistency",
    "contrastive_loss",
    "cross_consistency",
    "drop_positive",
    "fp32_region",
    "hardest",
    "info_nce",
    "info_nce_from_sims",
    "omega",
    "omega_minimum",
    "omega_shifted",
    "symmetric_kl_from_logits",
    "temperature_from_logit",
    "temperature_stats",
    "uniformity",
]
