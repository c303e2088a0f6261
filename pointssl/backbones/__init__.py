"""Backbone registry and the exported-backbone file format (``backbone.pt``)."""

from __future__ import annotations

from pathlib import Path

import torch

from pointssl.backbones.base import Backbone, BackboneOutput
from pointssl.errors import PointSSLError

__all__ = ["Backbone", "BackboneOutput", "build_backbone", "save_backbone", "load_backbone",
           "BACKBONES"]


def _registry() -> dict[str, type[Backbone]]:
    from pointssl.backbones.dgcnn import DGCNN
    from pointssl.backbones.pointnet import PointNet

    return {"pointnet": PointNet, "dgcnn": DGCNN}


BACKBONES = ("pointnet", "dgcnn")


def build_backbone(name: str, **config) -> Backbone:
    reg = _registry()
    if name not in reg:
        raise PointSSLError(f"unknown backbone {name!r}; choose one of {sorted(reg)}")
    return reg[name](**config)


def random_backbone(name: str, seed: int, **config) -> Backbone:
    """A seeded random-init backbone: the baseline twin every protocol reports beside a
    pre-trained one (the same ``seed`` gives the same weights in every protocol)."""
    torch.manual_seed(int(seed))
    return build_backbone(name, **config)


def atomic_torch_save(obj, path) -> None:
    """torch.save to a temp file in the same folder, then rename: never a half-written file."""
    from pointssl.engine.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_backbone(path, backbone: Backbone, **meta) -> None:
    """Write weights + what is needed to rebuild the backbone (name, config, version)."""
    from pointssl import __version__

    atomic_torch_save(
        {
            "format": "pointssl-backbone/1",
            "backbone": backbone.name,
            "config": dict(backbone.config),
            "state_dict": {k: v.detach().cpu() for k, v in backbone.state_dict().items()},
            "pointssl_version": __version__,
            "meta": meta,
        },
        path,
    )


def load_backbone(path, map_location="cpu") -> tuple[Backbone, dict]:
    """Rebuild a backbone from ``backbone.pt``; returns (backbone, meta)."""
    path = Path(path)
    if not path.is_file():
        raise PointSSLError(f"{path}: checkpoint not found")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise PointSSLError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != "pointssl-backbone/1":
        raise PointSSLError(f"{path}: not a pointssl backbone export (missing format tag)")
    bb = build_backbone(blob["backbone"], **blob["config"])
    bb.load_state_dict(blob["state_dict"])
    return bb, dict(blob.get("meta", {}), pointssl_version=blob.get("pointssl_version"))
