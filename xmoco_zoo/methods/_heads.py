"""The heads of the MoCo bases: MoCo v2's projector, MoCo v3's MLPs, and the backbone + head pair."""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """A backbone followed by a projection head; ``backbone`` is what gets exported."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def mocov2_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """MoCo v2's MLP head: Linear-ReLU-Linear, no BN."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


def mocov3_mlp(
    num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool = True
) -> nn.Sequential:
    """MoCo v3's MLP: (Linear(no bias)-BN-ReLU) × (L−1), then Linear(no bias) and optionally BN(affine=False)."""
    widths = [in_dim] + [hidden_dim] * (num_layers - 1)  # the input of each layer
    layers: list[nn.Module] = []
    for d_in, d_hidden in zip(widths, widths[1:]):
        layers += [nn.Linear(d_in, d_hidden, bias=False), nn.BatchNorm1d(d_hidden), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(widths[-1], out_dim, bias=False))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
