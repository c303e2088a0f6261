"""The contract between a pretext method and the trainer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pointssl.backbones.base import Backbone


@dataclass
class OptimConfig:
    """Optimiser and schedule fields every method config carries (trainer reads them)."""

    optimizer: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-2
    momentum: float = 0.9  # sgd only
    lr_step_epochs: int = 20  # StepLR step, in epochs
    lr_gamma: float = 0.7
    batch_size: int = 32
    epochs: int = 200


class Method(nn.Module):
    """A pretext task wrapped around a backbone it does not know the type of.

    - ``make_views(sample, rng)`` runs per sample in the data loader and returns fixed-size
      numpy arrays (they are collated into tensors of shape (B, ...)). All randomness comes
      from ``rng`` so runs are reproducible and resumable.
    - ``forward(batch)`` returns a dict with ``"loss"`` (scalar tensor to minimise), other
      scalars to log, and optionally ``"embedding"`` (B, D) for the collapse monitor.
    - ``self.backbone`` is the module that gets exported.
    """

    name: str = "method"

    def __init__(self, backbone: Backbone, cfg):
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg

    def make_views(self, sample: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_after_step(self) -> None:
        """Hook after each optimiser step (e.g. momentum updates). Default: nothing."""
