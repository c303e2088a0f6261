"""The contract between a pretext method and the trainer, and the method registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from pointssl.backbones.base import Backbone
from pointssl.errors import PointSSLError
from pointssl.structures import PointBatch
from pointssl.utils import Registry

__all__ = ["METHODS", "Method", "OptimConfig", "collate_point_batches", "method_spec"]

METHODS = Registry("method", "pointssl.methods")


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

    - ``make_views(sample, rng)`` runs per sample in the data loader and returns a dict of
      numpy arrays. All randomness comes from ``rng`` so runs are reproducible and resumable.
    - ``collate(samples)`` turns a list of those dicts into the batch ``forward`` gets; the
      default stacks fixed-size arrays (``default_collate``); a recipe whose clouds differ in
      size packs them with :func:`collate_point_batches`.
    - ``forward(batch)`` returns a dict with ``"loss"`` (scalar tensor to minimise), other
      scalars to log, and optionally ``"embedding"`` (B, D) for the collapse monitor.
    - ``exports()`` names the networks a run exports (``<name>.pt`` each); ``"backbone"`` is
      the point encoder.
    - ``config_class``: the config dataclass; every field a paper states is its default.
    """

    name: str = "method"
    config_class: type = OptimConfig

    def __init__(self, backbone: Backbone, cfg=None):
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg if cfg is not None else self.config_class()

    @classmethod
    def test_config(cls) -> dict:
        """Small config overrides that keep the contract tests fast."""
        return {}

    def make_views(self, sample: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def collate(self, samples: list[dict]) -> dict:
        return default_collate(samples)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def bind_data(self, num_shapes: int) -> None:
        """Hook before training: the training set holds ``num_shapes`` shapes (indices
        0..num_shapes-1), e.g. to size per-instance state once. Default: nothing."""

    def on_after_step(self) -> None:
        """Hook after each optimiser step (e.g. momentum updates). Default: nothing."""

    def exports(self) -> dict[str, Backbone]:
        return {"backbone": self.backbone}


def collate_point_batches(samples: list[dict], keys: Iterable[str]) -> dict:
    """``default_collate`` for every entry except ``keys``, whose (N_i, 3 + C) arrays (sizes
    may differ between samples) are packed into one :class:`PointBatch` each."""
    keys = set(keys)
    missing = keys - set(samples[0])
    if missing:
        raise PointSSLError(f"collate: the views have no {sorted(missing)}")
    rest = default_collate([{k: v for k, v in s.items() if k not in keys} for s in samples])
    for k in keys:
        rest[k] = PointBatch.from_list([s[k] for s in samples])
    return rest


def _config_dict(cfg) -> dict:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return dict(cfg)


def method_spec(method: Method) -> dict:
    """What rebuilds ``method`` apart from its weights: method and backbone names and configs
    (plain data, so a checkpoint holding it loads with ``weights_only=True``)."""
    return {"method": {"name": method.name, "config": _config_dict(method.cfg)},
            "backbone": {"name": method.backbone.name,
                         "config": dict(method.backbone.config)}}
