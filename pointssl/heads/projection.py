"""ConClu's projector g (Sec. 3.2)."""

from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """g: three FC layers each followed by BN, LeakyReLU(0.2) after all but the last.

    A Sequential so state_dict keys ("0.weight", ...) and the seeded init match the old
    ``conclu.projector``.
    """

    def __init__(self, c_in: int, hidden: int, out: int):
        super().__init__(
            nn.Linear(c_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2, True),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden),
            nn.LeakyReLU(0.2, True),
            nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out),
        )
