"""What every MoCo base shares: the step skeleton that adds any set of regularizers to the base loss."""

from __future__ import annotations

import torch
from torch import nn

from ..config import MethodConfig
from ._common import fp32_region
from .step import Step


class MoCoBase(nn.Module):
    """A base (MoCo v2 or v3) plus ``cfg.regularizers``.

    Subclasses define ``encoder`` (a MomentumEncoder over Encoder(backbone, head)), ``encode(x1, x2)`` →
    :class:`Step`, ``base_loss(step)`` → dict with ``loss_nce``, ``new_query_head()`` (a fresh head for
    AMCL's extra heads) and ``after_step(step)`` (enqueue). ``forward`` returns every term on its own
    (``loss_nce``, ``loss_co2``...), the statistics, and ``loss``, their weighted sum.
    """

    uses_sync_bn = False  # convert the heads' BN to SyncBatchNorm under several processes

    def __init__(self, cfg: MethodConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def _init_regularizers(self) -> None:
        from .regularizers import build_regularizer

        self.regularizers = nn.ModuleDict(
            {n: build_regularizer(n, self, self.cfg) for n in self.cfg.regularizers}
        )

    @property
    def backbone(self) -> nn.Module:
        """The online backbone (what gets evaluated and exported)."""
        return self.encoder.online.backbone

    @property
    def needs_features(self) -> bool:
        return any(r.needs_features for r in self.regularizers.values())

    @property
    def keeps_base_loss(self) -> bool:
        return not any(r.replaces_base_loss for r in self.regularizers.values())

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, momentum: float) -> dict[str, torch.Tensor]:
        self.encoder.update(momentum)
        for r in self.regularizers.values():
            r.update_momentum(momentum)
        step = self.encode(x1, x2)
        with fp32_region(x1):
            out = self.base_loss(step)
        total = out["loss_nce"] if self.keeps_base_loss else None
        for r in self.regularizers.values():
            terms = r(step)
            for name, weight in r.weights.items():
                total = terms[name] * weight if total is None else total + terms[name] * weight
            out.update(terms)
        if not self.keeps_base_loss:
            out["loss_nce"] = out["loss_nce"].detach()  # logged for comparison, not trained on
        self.after_step(step)
        for r in self.regularizers.values():
            r.after_step(step)
        out["loss"] = total
        self.last_step = step if getattr(self, "keep_last_step", False) else None
        return out

    def encode(self, x1: torch.Tensor, x2: torch.Tensor) -> Step:
        raise NotImplementedError

    def base_loss(self, step: Step) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def new_query_head(self) -> tuple[nn.Module, nn.Module | None]:
        raise NotImplementedError

    def after_step(self, step: Step) -> None:
        pass
