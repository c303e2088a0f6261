"""The seam between backbones and methods: one output type every method consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BackboneOutput:
    """What every backbone returns.

    global_feat: (B, C) shape descriptor after max-pool (the feature downstream protocols use).
    point_feat:  (B, N, Cp) per-point features, aligned with the input points.
    """

    global_feat: torch.Tensor
    point_feat: torch.Tensor


class Backbone(nn.Module):
    """Base class: ``forward(points (B, N, 3)) -> BackboneOutput``.

    Subclasses set ``global_dim`` and ``point_dim`` and keep their constructor kwargs in
    ``self.config`` so an exported checkpoint can rebuild them.
    """

    name: str = "backbone"
    global_dim: int
    point_dim: int

    def __init__(self, **config):
        super().__init__()
        self.config = dict(config)

    def forward(self, points: torch.Tensor) -> BackboneOutput:  # pragma: no cover - abstract
        raise NotImplementedError
