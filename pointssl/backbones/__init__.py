"""Backbones (filled by ``@BACKBONES.register`` in each file of this package) and the
exported-backbone file format (``backbone.pt``)."""

from __future__ import annotations

import torch
from torch import nn

from pointssl.backbones.base import BACKBONES, Backbone, BackboneOutput
from pointssl.errors import PointSSLError
from pointssl.utils import atomic_torch_save, load_checkpoint

__all__ = ["Backbone", "BackboneOutput", "BACKBONES", "build_backbone", "random_backbone",
           "save_backbone", "load_backbone", "FORMAT"]

FORMAT = "pointssl-backbone/1"


def build_backbone(name: str, **config) -> Backbone:
    return BACKBONES.get(name)(**config)


def random_backbone(name: str, seed: int, **config) -> Backbone:
    """A seeded random-init backbone: the baseline twin every protocol reports beside a
    pre-trained one (the same ``seed`` gives the same weights in every protocol)."""
    torch.manual_seed(int(seed))
    return build_backbone(name, **config)


def save_backbone(path, module: nn.Module, **meta) -> None:
    """Write weights + what rebuilds the network (its registered name and config). Works for
    any module with ``name`` and ``config`` (a registered Backbone), so a method's second
    network exports the same way."""
    from pointssl import __version__

    atomic_torch_save(
        {
            "format": FORMAT,
            "backbone": module.name,
            "config": dict(module.config),
            "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "pointssl_version": __version__,
            "meta": meta,
        },
        path,
    )


def load_backbone(path, map_location="cpu") -> tuple[Backbone, dict]:
    """Rebuild a backbone from ``backbone.pt`` (never executing code from the file);
    returns (backbone, meta)."""
    blob = load_checkpoint(path, fmt=FORMAT, map_location=map_location)
    try:
        bb = build_backbone(blob["backbone"], **blob["config"])
        bb.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError, PointSSLError) as e:
        msg = " ".join(str(e).split())[:300]
        raise PointSSLError(f"{path}: cannot rebuild the backbone ({msg})") from None
    return bb, dict(blob.get("meta", {}), pointssl_version=blob.get("pointssl_version"))

