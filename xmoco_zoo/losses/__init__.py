"""Losses as small pure functions over L2-normalised embeddings and their similarity products."""

from .infonce import at_least_fp32, contrastive_loss, info_nce, info_nce_from_sims

__all__ = ["at_least_fp32", "info_nce", "info_nce_from_sims", "contrastive_loss"]
