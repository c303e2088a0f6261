"""Backbones (filled by ``@BACKBONES.register`` in each file of this package) and the
exported-backbone file format (``backbone.pt``)."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from pointssl.backbones.base import BACKBONES, Backbone, BackboneOutput
from pointssl.errors import PointSSLError
from pointssl.utils import atomic_torch_save, load_checkpoint
from pointssl.utils.overrides import parse_overrides

__all__ = ["Backbone", "BackboneOutput", "BACKBONES", "build_backbone", "rebuild_backbone",
           "random_backbone", "save_backbone", "load_backbone", "backbone_fields",
           "parse_backbone_overrides", "FORMAT"]

FORMAT = "pointssl-backbone/1"


def build_backbone(name: str, **config) -> Backbone:
    return BACKBONES.get(name)(**config)


def backbone_fields(name: str) -> dict[str, object]:
    """Constructor kwargs of a registered backbone -> their defaults (what ``--set`` may
    change, e.g. ``tnet`` of PointNet, ``k`` of DGCNN)."""
    sig = inspect.signature(BACKBONES.get(name).__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def parse_backbone_overrides(name: str, overrides: dict[str, str]) -> dict:
    """Typed ``--set key=value`` constructor kwargs for backbone ``name`` (``tnet=false``,
    ``k=40``, ``channels=64,64,64,128``); unknown keys are one error listing the known."""
    return parse_overrides(backbone_fields(name), overrides, f"a {name} backbone option")


def rebuild_backbone(name: str, config: dict) -> Backbone:
    """The backbone a file's recorded name and config describe (fresh weights): old configs
    pass through the class's ``upgrade_config`` first, so a file keeps its network when a
    default changes (a PointNet saved before the feature transform existed stays without)."""
    cls = BACKBONES.get(name)
    return cls(**cls.upgrade_config(dict(config)))


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
        bb = rebuild_backbone(blob["backbone"], blob["config"])
        bb.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, PointSSLError) as e:
        msg = " ".join(str(e).split())[:300]
        raise PointSSLError(f"{path}: cannot rebuild the backbone ({msg})") from None
    return bb, dict(blob.get("meta", {}), pointssl_version=blob.get("pointssl_version"))

