"""ConClu's predictor q (Sec. 3.2)."""

from __future__ import annotations

from torch import nn


class PredictionHead(nn.Sequential):
    """q: Linear(dim -> hidden) + BN + LeakyReLU(0.2), then Linear back to dim (with bias)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden),
                         nn.LeakyReLU(0.2, True), nn.Linear(hidden, dim))
